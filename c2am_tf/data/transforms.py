"""The authors' transforms, with boxes following the image.

Train: resize to ``resize`` x ``resize``, random horizontal flip, random crop
``crop`` x ``crop``. Eval: resize to ``resize`` x ``resize``, center crop
``crop`` x ``crop``; boxes (x0, y0, x1, y1 in original pixels) are scaled by
resize / W and resize / H, shifted by -(resize - crop) / 2 and clipped to the crop.
"""

import tensorflow as tf

from c2am_tf.maps.geometry import EVAL_CROP, EVAL_RESIZE


def _resize(image, size):
    image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def resize_square(image, size):
    """Resizes an (H, W, 3) uint8 image to (size, size, 3) uint8 (bilinear, antialiased)."""
    return _resize(image, size)


def random_flip_crop(image, crop, seed=None):
    """Random horizontal flip then a random crop x crop window (uint8 in, uint8 out).

    ``seed``: None draws from TensorFlow's random state; a (2,) int tensor makes both draws
    stateless, a function of the seed alone.
    """
    if seed is None:
        image = tf.image.random_flip_left_right(image)
        return tf.image.random_crop(image, (crop, crop, 3))
    flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return tf.image.stateless_random_crop(image, (crop, crop, 3), crop_seed)


def map_boxes_to_eval_frame(boxes, height, width, resize, crop):
    """Boxes (G, 4) in original pixels -> the resize-then-center-crop frame."""
    boxes = tf.cast(boxes, tf.float32)
    sx = resize / tf.cast(width, tf.float32)
    sy = resize / tf.cast(height, tf.float32)
    shift = (resize - crop) / 2.0
    scaled = boxes * tf.stack([sx, sy, sx, sy]) - shift
    return tf.clip_by_value(scaled, 0.0, float(crop))


def eval_mask_transform(mask, resize=EVAL_RESIZE, crop=EVAL_CROP):
    """(H, W) uint8 mask -> (crop, crop) by nearest-neighbour resize then center crop."""
    mask = tf.image.resize(mask[..., None], (resize, resize), method="nearest")
    return tf.image.resize_with_crop_or_pad(mask, crop, crop)[..., 0]


def eval_image(image, resize=EVAL_RESIZE, crop=EVAL_CROP):
    """(H, W, 3) uint8 -> (crop, crop, 3) uint8: resize to resize x resize, center crop."""
    return tf.image.resize_with_crop_or_pad(_resize(image, resize), crop, crop)


def eval_transform(image, boxes, resize=EVAL_RESIZE, crop=EVAL_CROP):
    """(image uint8 (H, W, 3), boxes (G, 4)) -> (crop x crop image, boxes in that frame)."""
    shape = tf.shape(image)
    return eval_image(image, resize, crop), map_boxes_to_eval_frame(boxes, shape[0], shape[1], resize, crop)
