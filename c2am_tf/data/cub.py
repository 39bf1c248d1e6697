"""CUB-200-2011: the raw ``CUB_200_2011`` folder layout, or tfds ``caltech_birds2011``."""

import os

import tensorflow as tf

from c2am_tf.data.annotations import AnnotationError, BoxAudit, image_size, parse_box
from c2am_tf.data.images import drop_unreadable, read_rgb

SPLITS = ("train", "test")


class TfdsNotPreparedError(FileNotFoundError):
    """A tfds dataset that has not been downloaded and prepared (nothing is downloaded here)."""


def _read_table(path, columns):
    """{id: (fields, line number)} of a whitespace-separated CUB table."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: a CUB_200_2011 folder holds images/, images.txt, "
            "train_test_split.txt and bounding_boxes.txt"
        )
    rows = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != columns:
                raise ValueError(f"{path}:{line_no}: expected {columns} fields, got {line.strip()!r}")
            rows[parts[0]] = (parts[1:], line_no)
    return rows


def cub_records(data_dir, split, strict=False):
    """[(image path, [x0, y0, x1, y1])] for a split of a raw CUB folder.

    Boxes are checked against their image (``c2am_tf.data.annotations``): unusable ones
    skip their image and boxes partly outside are clamped, with one warning; ``strict``
    makes either an ``AnnotationError`` naming the file and line.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images = _read_table(os.path.join(data_dir, "images.txt"), 2)
    is_train = _read_table(os.path.join(data_dir, "train_test_split.txt"), 2)
    box_file = os.path.join(data_dir, "bounding_boxes.txt")
    boxes = _read_table(box_file, 5)
    want = "1" if split == "train" else "0"
    audit = BoxAudit(f"{box_file} ({split})", strict)
    records = []
    for image_id, ((rel,), _) in images.items():
        if is_train.get(image_id, ([None], 0))[0][0] != want:
            continue
        if image_id not in boxes:
            raise ValueError(f"{box_file}: no box for image id {image_id}")
        fields, line_no = boxes[image_id]
        path = os.path.join(data_dir, "images", rel)
        where = f"{box_file}:{line_no}"
        try:
            x, y, w, h = parse_box(fields, where)
        except AnnotationError as err:
            if strict:
                raise
            audit.skipped.append(str(err))
            continue
        box = audit.check([x, y, x + w, y + h], image_size(path), where)
        if box is not None:
            records.append((path, box))
    audit.report()
    if not records:
        raise ValueError(f"{data_dir}: no usable images in split {split!r}")
    return records


def cub_source(data_dir, split="train", num_parallel_calls=tf.data.AUTOTUNE, strict=False):
    """Dataset of {'image': uint8 (H, W, 3), 'boxes': (1, 4) float32, 'path'} from a raw folder.

    Unreadable images are skipped with a warning (see ``drop_unreadable``); so are images
    whose box cannot be used, unless ``strict`` (see ``cub_records``).
    """
    records = cub_records(data_dir, split, strict)
    paths, boxes, _ = drop_unreadable([r[0] for r in records], [[r[1]] for r in records],
                                      what=f"CUB {split} images")
    if not paths:
        raise ValueError(f"{data_dir}: no readable images in split {split!r}")
    ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(boxes, tf.float32)))
    ds = ds.map(lambda p, b: {"image": read_rgb(p), "boxes": b, "path": p},
                num_parallel_calls=num_parallel_calls)
    return ds.ignore_errors(log_warning=True)


def tfds_cub_source(split="train", data_dir=None, download=False, with_masks=False):
    """The same elements from tfds ``caltech_birds2011`` (already prepared, or ``download``).

    ``with_masks`` adds its ``segmentation_mask`` as 'mask' (H, W) uint8 in {0, 1}.

    Offline and not prepared: raises at once with a message pointing at
    ``--data-dir`` (the raw folder), instead of retrying downloads for minutes.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder("caltech_birds2011", data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    try:
        ds = builder.as_dataset(split=split)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as e:
        raise TfdsNotPreparedError(
            "tfds 'caltech_birds2011' is not prepared"
            f"{' in ' + str(data_dir) if data_dir else ''} ({e}). Either read a raw CUB_200_2011 "
            "folder instead, or let tfds download and prepare it once, online."
        ) from None

    def convert(ex):
        image = ex["image"]
        shape = tf.cast(tf.shape(image), tf.float32)
        ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(ex["bbox"], [4]))
        box = tf.stack([xmin * shape[1], ymin * shape[0], xmax * shape[1], ymax * shape[0]])
        out = {"image": image, "boxes": box[None, :], "path": ex["image/filename"]}
        if with_masks:
            mask = ex["segmentation_mask"]
            mask = mask[..., 0] if mask.shape.rank == 3 else mask
            out["mask"] = tf.cast(mask > 0, tf.uint8)
        return out

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
