"""Images with foreground masks: salient-object folders (DUTS, ECSSD, any image/mask pair of
folders) and tfds ``caltech_birds2011``'s ``segmentation_mask``.

Masks are binarized at 128 (DUTS masks have soft 0..255 edges): 1 = foreground,
0 = background. Each element also carries the box around the foreground, so
box metrics work on mask datasets too.
"""

import os

import tensorflow as tf

from c2am_tf.data.cub import tfds_cub_source
from c2am_tf.data.images import IMAGE_EXTENSIONS, drop_unreadable, read_rgb
from c2am_tf.data.sharding import take_shard
from c2am_tf.data.wsol import select_split

# (image folder, mask folder) names of the common layouts, tried in order.
LAYOUTS = (
    ("DUTS-TE-Image", "DUTS-TE-Mask"),
    ("DUTS-TR-Image", "DUTS-TR-Mask"),
    ("images", "ground_truth_mask"),
    ("images", "masks"),
    ("Image", "Mask"),
    ("img", "gt"),
)


def _stems(folder, extensions):
    out = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in extensions:
            out[stem] = os.path.join(folder, name)
    return out


def mask_pairs(data_dir):
    """[(image path, mask path)] matched by file stem, for a folder in one of ``LAYOUTS``."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"masks dataset folder not found: {data_dir}")
    for image_dir, mask_dir in LAYOUTS:
        images, masks = os.path.join(data_dir, image_dir), os.path.join(data_dir, mask_dir)
        if os.path.isdir(images) and os.path.isdir(masks):
            break
    else:
        raise ValueError(
            f"{data_dir}: no image/mask folder pair found; expected one of "
            + ", ".join(f"{a}/ + {b}/" for a, b in LAYOUTS)
        )
    image_files = _stems(images, IMAGE_EXTENSIONS)
    mask_files = _stems(masks, (".png", ".bmp", ".jpg", ".gif"))
    pairs = [(image_files[s], mask_files[s]) for s in image_files if s in mask_files]
    if not pairs:
        raise ValueError(f"{data_dir}: no image in {image_dir}/ has a same-named mask in {mask_dir}/")
    return pairs


def _mask_box(mask):
    """(1, 4) box x0, y0, x1, y1 around the mask's foreground (zeros if empty)."""
    ys = tf.where(tf.reduce_any(mask == 1, axis=1))[:, 0]
    xs = tf.where(tf.reduce_any(mask == 1, axis=0))[:, 0]
    box = tf.cond(
        tf.size(ys) > 0,
        lambda: tf.cast(tf.stack([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]), tf.float32),
        lambda: tf.zeros(4),
    )
    return box[None, :]


def binarize(mask, threshold=128):
    """(H, W[, C]) uint8 mask -> (H, W) uint8 in {0, 1}."""
    if len(mask.shape) == 3:
        mask = mask[..., 0]
    return tf.cast(mask >= threshold, tf.uint8)


def masks_source(data_dir, num_parallel_calls=tf.data.AUTOTUNE, shard=None, split="train"):
    """Dataset of {'image', 'mask' (H, W) {0, 1}, 'boxes' (1, 4), 'path'} from a masks folder.

    ``split``: ``train``/``test`` are all pairs (training uses no masks); ``half1``/``half2`` the
    even/odd pairs in name order, for 2-fold runs (``c2am_tf.data.wsol.select_split``).

    Unreadable images or masks are skipped with a warning; a mask whose size
    differs from its image is an error naming both files.
    """

    pairs = take_shard(select_split(mask_pairs(data_dir), split), shard, f"images in {data_dir}")
    images, masks, _ = drop_unreadable([p[0] for p in pairs], [p[1] for p in pairs], what="images")
    masks, images, _ = drop_unreadable(masks, images, what="masks")

    def load(image_path, mask_path):
        image = read_rgb(image_path)
        mask = binarize(read_rgb(mask_path)[..., 0])
        tf.debugging.assert_equal(
            tf.shape(image)[:2], tf.shape(mask)[:2],
            message=tf.strings.join(["mask size differs from image: ", mask_path]))
        return {"image": image, "mask": mask, "boxes": _mask_box(mask), "path": image_path}

    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    return ds.map(load, num_parallel_calls=num_parallel_calls)


def tfds_cub_masks_source(split="test", data_dir=None, download=False, shard=None):
    """tfds ``caltech_birds2011`` with its ``segmentation_mask`` (prepared, or ``download``)."""

    return tfds_cub_source(split, data_dir, download, with_masks=True, shard=shard)
