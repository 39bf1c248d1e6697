"""tf.data pipelines: sources (CUB, tfds CUB, image folders, synthetic) and the authors' transforms.

A *source* yields dicts ``{'image': uint8 (H, W, 3), 'boxes': (G, 4) float32
x0, y0, x1, y1 in original pixels, 'path': str}``. ``train_pipeline`` turns a
source into batches of augmented images; ``eval_pipeline`` into
``(images, boxes)`` batches in the eval frame.
"""

import os

import tensorflow as tf

from c2am_tf.data.box_files import FORMATS as ANNOTATION_FORMATS
from c2am_tf.data.box_files import annotation_format, read_annotations
from c2am_tf.data.cub import cub_records, cub_source, tfds_cub_source
from c2am_tf.data.folder import folder_source, read_image_list
from c2am_tf.data.images import find_unreadable, list_images, read_rgb
from c2am_tf.data.masks import mask_pairs, masks_source, tfds_cub_masks_source
from c2am_tf.data.records import records_source
from c2am_tf.data.sharding import Shard, take_shard
from c2am_tf.data.synthetic import synthetic_arrays, synthetic_example, synthetic_source
from c2am_tf.data.tfrecord import tfrecord_source, write_shards
from c2am_tf.data.transforms import eval_image, eval_mask_transform, eval_transform, random_flip_crop, resize_square
from c2am_tf.data.wsol import imagenet_source, select_split, tfds_imagenet_source, unlabeled_train_dir, wsol_records
from c2am_tf.maps.geometry import EVAL_CROP, EVAL_FRAMES, EVAL_RESIZE, default_frame

DATASETS = ("synthetic", "cub", "imagenet", "folder", "masks", "tfrecord")
# the datasets with ground truth (boxes, or masks): what evaluate and threshold calibration read; "folder" has
# boxes when annotations (c2am_tf.data.box_files) come with it
ANNOTATED_DATASETS = ("cub", "imagenet", "masks", "synthetic", "folder")
AUTOTUNE = tf.data.AUTOTUNE


def train_pipeline(source, batch_size, resize=256, crop=224, cache=True, shuffle_buffer=2048, seed=0, epochs=1,
                   start=0, groups=None):
    """Batches (B, crop, crop, 3) uint8 of resized, flipped, randomly cropped images.

    ``epochs`` passes over the source, one after the other, each in its own order.
    Decoding and resizing happen once when ``cache``; without it every pass streams the
    files again (parallel reads, nothing kept in memory). Everything is a function of
    ``seed``: pass e is shuffled with seed (seed, e), and an image's flip and crop in pass e
    depend only on (seed, e, its path), so they are the same whichever worker of a cluster
    reads it, and however many iterators Keras opens on the dataset (a reshuffling
    ``shuffle().repeat()`` shares one seed generator among them, so their orders race).
    Incomplete batches are dropped: the contrastive loss needs several images per batch,
    and fixed shapes avoid retracing.

    ``start``: images of the stream already consumed (a resumed run continues where the
    killed one stopped, in the same pass and order). The passes are counted from there.

    ``groups`` ({path: cluster id}, ``c2am_tf.data.grouping.feature_clusters``): each batch holds images
    of one cluster (the shuffled stream, grouped as it goes; an unlisted path is cluster 0).
    """
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    count = None
    if start:
        count = count_examples(source)
        first_pass, start = divmod(int(start), max(count, 1))
    else:
        first_pass = 0
    ds = source.map(lambda ex: {"image": resize_square(ex["image"], resize), "path": ex["path"]},
                    num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    seed = int(seed or 0)

    def one_pass(epoch):
        pass_seed = (seed * 1_000_003 + epoch) % (2**31 - 1)  # a Python int: no shared seed generator

        def augment(ex):
            image_key = tf.strings.to_hash_bucket_fast(ex["path"], 2**62)
            image = random_flip_crop(ex["image"], crop, seed=tf.stack([image_key, tf.constant(pass_seed, tf.int64)]))
            return {"image": image, "path": ex["path"]}

        shuffled = ds.shuffle(shuffle_buffer, seed=pass_seed, reshuffle_each_iteration=False)
        return shuffled.map(augment, num_parallel_calls=AUTOTUNE)

    passes = one_pass(first_pass)
    for epoch in range(first_pass + 1, first_pass + int(epochs)):
        passes = passes.concatenate(one_pass(epoch))
    if start:
        passes = passes.skip(start)
    if groups:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(groups)), tf.constant(list(groups.values()), tf.int64)),
            default_value=0)
        return passes.group_by_window(
            key_func=lambda ex: table.lookup(ex["path"]),
            reduce_func=lambda _, window: window.map(lambda ex: ex["image"]).batch(batch_size, drop_remainder=True),
            window_size=batch_size).prefetch(AUTOTUNE)
    return passes.map(lambda ex: ex["image"]).batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def count_examples(source):
    """Number of elements of a finite source (cheap where its length is known; else one pass)."""
    n = int(source.cardinality())
    if n >= 0:
        return n
    return int(source.map(lambda ex: 0).reduce(0, lambda a, _: a + 1))


def eval_pipeline(source, batch_size, resize=EVAL_RESIZE, crop=EVAL_CROP, cache=True):
    """Batches of dicts in the eval frame: 'image' (B, crop, crop, 3) uint8, 'boxes' (B, G, 4), 'path',
    plus 'mask' (B, crop, crop) uint8 and 'label' (B,) when the source has them.

    ``resize == crop`` is the whole image resized (wsolevaluation's frame); ``resize > crop`` the
    authors' resize-then-center-crop.
    """
    def transform(ex):
        image, boxes = eval_transform(ex["image"], ex["boxes"], resize, crop)
        out = {"image": image, "boxes": boxes, "path": ex["path"]}
        if "mask" in ex:
            out["mask"] = eval_mask_transform(ex["mask"], resize, crop)
        if "label" in ex:
            out["label"] = ex["label"]
        return out

    ds = source.map(transform, num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def eval_dataset(name, split, data_dir=None, batch_size=16, frame=None, cache=True, strict=False, annotations=None):
    """Eval batches (see ``eval_pipeline``) of a dataset's split in an eval frame of
    ``c2am_tf.maps.geometry.EVAL_FRAMES`` (default: the dataset's own, ``default_frame``); ``strict``: an unusable
    box annotation is an error instead of a skipped image (``make_source``); ``annotations``: a folder's boxes."""
    resize, crop = EVAL_FRAMES[frame or default_frame(name)]
    return eval_pipeline(make_source(name, split, data_dir, strict=strict, annotations=annotations), batch_size,
                         resize, crop, cache)


def make_source(name, split="train", data_dir=None, synthetic_size=160, synthetic_count=None,
                seed=0, tfds_download=False, strict=False, shard=None, annotations=None):
    """A source by dataset name: ``synthetic``, ``cub`` (raw folder, else tfds), ``imagenet``,
    ``folder``, ``masks`` or ``tfrecord`` (shards written by ``write_shards``, in ``data_dir/split``).

    ``strict`` makes an unusable box annotation an error instead of a skipped image. ``shard``
    (``c2am_tf.data.sharding.Shard``) reads only one input pipeline's files. ``annotations`` (a ``folder``'s
    boxes in any of ``ANNOTATION_FORMATS``) makes it an annotated source: its annotated images, with their
    boxes (splits ``half1`` / ``half2``: every other image in path order).
    """
    if annotations is not None:
        if name != "folder":
            raise ValueError(f"annotations come with dataset 'folder' (a folder of images), not {name!r}")
        return records_source(box_records(name, data_dir, split, strict, annotations),
                              f"annotated images of {data_dir}", shard=shard)
    if name == "synthetic":
        count = synthetic_count or (512 if split == "train" else 128)
        return synthetic_source(count, synthetic_size, seed, split, shard=shard)
    if name == "cub":
        if data_dir:
            return cub_source(data_dir, split, strict=strict, shard=shard)
        return tfds_cub_source(split, download=tfds_download, shard=shard)
    if name == "imagenet":
        if data_dir:
            return imagenet_source(data_dir, split, strict=strict, shard=shard)
        if split != "train":
            raise ValueError("tfds imagenet2012 has no boxes: pass --data-dir with a raw ILSVRC folder or "
                             "wsolevaluation metadata to evaluate")
        return tfds_imagenet_source(split, download=tfds_download, shard=shard)
    if name == "masks":
        if not data_dir:  # tfds CUB with its segmentation masks
            return tfds_cub_masks_source(split, download=tfds_download, shard=shard)
        return masks_source(data_dir, shard=shard, split=split)  # train/test: all images, masks unused in training
    if name == "folder":
        if not data_dir:
            raise ValueError("dataset 'folder' needs data_dir, a folder of images")
        if split != "train":
            raise ValueError("an image folder has no boxes: give its annotations (COCO JSON, Pascal VOC XML, "
                             "YOLO txt or CSV) to evaluate it")
        return folder_source(data_dir, shard=shard)
    if name == "tfrecord":
        if not data_dir:
            raise ValueError("dataset 'tfrecord' needs data_dir, the folder given to write-tfrecords --out")
        return tfrecord_source(os.path.join(data_dir, split), shard=shard)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


def source_files(name, split="train", data_dir=None):
    """(image paths, unannotated) of a dataset split, listed without decoding anything: what a
    distributed job (``c2am_tf.inference.beam_boxes``) hands out. ``unannotated`` images are read with their
    EXIF orientation and large JPEGs downscaled, exactly as ``make_source`` reads them."""

    if name == "folder" and data_dir:
        listed = os.path.isfile(data_dir) and data_dir.endswith(".txt")
        return (read_image_list(data_dir) if listed else list_images(data_dir)), True
    if name == "cub" and data_dir:
        return [r[0] for r in cub_records(data_dir, split)], False
    if name == "imagenet" and data_dir:
        train = unlabeled_train_dir(data_dir, split)
        if train:
            return list_images(train), True
        return [r[0] for r in wsol_records(data_dir, split)], False
    if name == "masks" and data_dir:
        return [p[0] for p in select_split(mask_pairs(data_dir), split)], False
    raise ValueError(f"dataset {name!r}{'' if data_dir else ' without data_dir'} has no image files to hand out; "
                     "use folder, cub, imagenet or masks with a folder")


def box_records(name, data_dir, split, strict=False, annotations=None):
    """[(image path, [[x0, y0, x1, y1]], class index or -1)] of a dataset annotated with boxes in original pixels (cub,
    imagenet, or a folder with its ``annotations``): what a boxes file made elsewhere is scored against.
    ``strict``: an unusable box is an error."""
    if name == "folder":
        if annotations is None:
            raise ValueError("dataset 'folder' needs its annotations (COCO JSON, Pascal VOC XML, YOLO txt or CSV)")
        return select_split(read_annotations(annotations, data_dir, strict), split)
    if name == "cub":
        return cub_records(data_dir, split, strict)
    if name == "imagenet":
        return wsol_records(data_dir, split, strict)
    raise ValueError(f"--boxes needs box annotations in original pixels: dataset cub, imagenet, or folder with "
                     f"--annotations; not {name}")


__all__ = [
    "ANNOTATED_DATASETS", "ANNOTATION_FORMATS", "DATASETS", "annotation_format", "read_annotations", "records_source", "box_records", "train_pipeline", "eval_pipeline", "eval_dataset", "make_source", "cub_records", "cub_source",
    "tfds_cub_source", "folder_source", "masks_source", "mask_pairs", "tfds_cub_masks_source",
    "eval_mask_transform", "eval_image", "synthetic_source", "synthetic_arrays", "synthetic_example",
    "imagenet_source", "tfds_imagenet_source", "wsol_records", "read_rgb", "find_unreadable", "list_images", "eval_transform",
    "random_flip_crop", "resize_square", "Shard", "take_shard", "tfrecord_source", "write_shards",
    "source_files", "count_examples",
]
