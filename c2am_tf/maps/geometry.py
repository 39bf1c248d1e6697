"""Box geometry shared by every path (numpy only): scaling between frames, the eval frame and its inverse.

The eval frame is the authors' test transform: resize the image to
``EVAL_RESIZE`` x ``EVAL_RESIZE``, then center-crop ``EVAL_CROP`` x ``EVAL_CROP``.
``c2am_tf.data.transforms`` applies it in TensorFlow; ``eval_box_to_original``
is its inverse for boxes.
"""

import math

import numpy as np

from c2am_tf.utils.errors import ConfigError
from c2am_tf.utils.image_io import max_pixels

EVAL_RESIZE = 480
EVAL_CROP = 448
# name -> (resize, crop). "crop448" is the authors' CUB test transform; "whole224" resizes the whole
# image to 224 as wsolevaluation scores ImageNet (no crop: nothing outside a crop is lost), and at the
# scale the heads train at (224 crops): on ImageNet dev it scored 4.6 points above "whole448".
EVAL_FRAMES = {"crop448": (EVAL_RESIZE, EVAL_CROP), "whole224": (224, 224), "whole448": (EVAL_CROP, EVAL_CROP)}


def default_frame(dataset):
    """The eval frame a dataset is scored in: "whole224" (wsolevaluation's) for ImageNet and a user's folder, whose
    objects may reach the image's edge, where a centre crop would cut them; "crop448" (the authors') otherwise.

    >>> default_frame("imagenet"), default_frame("cub"), default_frame("folder")
    ('whole224', 'crop448', 'whole224')
    """
    return "whole224" if dataset in ("imagenet", "folder") else "crop448"


def scale_box(box, from_size, to_size):
    """A box (x0, y0, x1, y1) in a ``from_size`` = (width, height) frame -> the ``to_size`` frame.

    >>> scale_box([1, 2, 3, 4], (10, 10), (20, 5)).tolist()
    [2.0, 1.0, 6.0, 2.0]
    """
    (fw, fh), (tw, th) = from_size, to_size
    return (np.asarray(box, np.float64) * np.array([tw / fw, th / fh, tw / fw, th / fh])).astype(np.float32)


def eval_box_to_original(box, width, height, resize=EVAL_RESIZE, crop=EVAL_CROP):
    """Inverse of the eval transform for one box: crop frame -> a (width x height) image's pixels.

    >>> eval_box_to_original([32, 32, 272, 272], 200, 100).tolist()
    [20.0, 10.0, 120.0, 60.0]
    """
    shift = (resize - crop) / 2.0
    out = scale_box(np.asarray(box, np.float64) + shift, (resize, resize), (width, height))
    return np.clip(out, 0, [width, height, width, height]).astype(np.float32)


STRIDE = 16  # every backbone's output stride
MIN_IMAGE_SIZE = 2 * STRIDE  # a 2 x 2 map at least: a box and the polarity need a border and an interior


def check_image_size(size, name="size"):
    """``size`` as an int, or ConfigError: a square input side of at least MIN_IMAGE_SIZE pixels.

    >>> check_image_size(7)
    Traceback (most recent call last):
    ...
    c2am_tf.utils.errors.ConfigError: size must be an integer >= 32 (the backbone has stride 16); got 7
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_IMAGE_SIZE:
        raise ConfigError(name, f"must be an integer >= {MIN_IMAGE_SIZE} (the backbone has stride {STRIDE}); "
                                f"got {size!r}")

    limit = max_pixels()
    if size * size > limit:  # the image, its map and pictures at that size would not fit in memory
        raise ConfigError(name, f"must be at most {math.isqrt(limit)}: {size} x {size} is over the pixel limit of "
                                f"{limit / 1e6:g} megapixels (C2AM_MAX_PIXELS); got {size!r}")
    return int(size)


def _fraction(value, name, high):
    """``value`` as a float in [0, ``high``], or ConfigError naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number <= high:
        raise ConfigError(name, f"must be a fraction of the map's maximum in [0, {high:g}]; got {value!r}")
    return number


def check_threshold(threshold, name="threshold"):
    """``threshold`` as a float, or ConfigError: the box rule's cut-off, a fraction of the map's maximum in [0, 1]."""
    return _fraction(threshold, name, 1.0)


def check_band(band, name="box_band"):
    """``band`` as a float, or ConfigError: the box rule's band (``band_thresholds``) in [0, 0.5]."""
    return _fraction(band, name, 0.5)


def check_weight(weight, name="cam_weight"):
    """``weight`` as a float, or ConfigError: a blend weight in [0, 1] (0: off, 1: the other map alone)."""
    try:
        number = float(weight)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise ConfigError(name, f"must be a weight in [0, 1]; got {weight!r}")
    return number


MIN_SCALE, MAX_SCALE = 0.1, 4.0


def check_scale(scale, name="scales"):
    """``scale`` as a float, or ConfigError: a test-time resize factor in [0.1, 4].

    >>> check_scale(float("nan"))
    Traceback (most recent call last):
    ...
    c2am_tf.utils.errors.ConfigError: scales must be a resize factor in [0.1, 4]; got nan
    """
    try:
        number = float(scale)
    except (TypeError, ValueError):
        number = float("nan")
    if not MIN_SCALE <= number <= MAX_SCALE:
        raise ConfigError(name, f"must be a resize factor in [{MIN_SCALE:g}, {MAX_SCALE:g}]; got {scale!r}")
    return number


# A banded box averages the boxes at threshold + band * k / BAND_STEPS for k = -BAND_STEPS..BAND_STEPS.
BAND_STEPS = 2


def band_thresholds(threshold, band=0.0):
    """The thresholds whose boxes the banded box at ``threshold`` averages: ``threshold`` itself and
    ``threshold + band * k / 2`` for k = -2, -1, 1, 2, those strictly between 0 and 1 (rounded to 1e-6,
    so that 0.35 + 0.05 is the listed 0.4).

    >>> band_thresholds(0.35, 0.1)
    [0.25, 0.3, 0.35, 0.4, 0.45]
    >>> band_thresholds(0.05, 0.1), band_thresholds(0.5)
    ([0.05, 0.1, 0.15], [0.5])
    """
    threshold = float(threshold)
    if not band:
        return [threshold]
    out = []
    for k in range(-BAND_STEPS, BAND_STEPS + 1):
        t = round(threshold + float(band) * k / BAND_STEPS, 6)
        if k == 0 or 0.0 < t < 1.0:
            out.append(threshold if k == 0 else t)
    return out
