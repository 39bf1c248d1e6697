"""The one image reader (Pillow and numpy, no TensorFlow): every path decodes images here.

Training and prediction (through ``c2am_tf.data.images.read_rgb``), the TFLite
device side, calibration and the serving client all read a file the same way:

- **formats**: whatever Pillow opens (JPEG, PNG, BMP, GIF, WebP, TIFF, ...); palette,
  grayscale, CMYK and alpha images become RGB (alpha dropped);
- **bit depth**: 16-bit and 32-bit integer images are scaled to 8 bits (65535 -> 255),
  not clipped (Pillow's own ``convert("RGB")`` turns a 16-bit PNG white);
- **EXIF orientation** is applied (``exif=True``, the default). Readers of annotated
  datasets pass ``exif=False``: boxes and masks are drawn on the stored pixels, as the
  benchmarks' own evaluation code reads them;
- **size limit**: an image of more than ``max_pixels`` (default ``MAX_PIXELS``, or the
  environment variable ``C2AM_MAX_PIXELS``) is decoded at 1/2, 1/4 or 1/8 scale when the
  format allows it (JPEG) and ``downscale`` is on; otherwise it is refused before it is
  decoded, so a small file that expands to gigabytes never reaches memory.

``load_image`` raises ``UnreadableImageError`` naming the file and the reason;
``read_image`` returns None instead, for callers that skip and count.
"""

import os
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from c2am_tf.utils.limits import LIMITS, limit, regular_file_problem

MAX_PIXELS = LIMITS["C2AM_MAX_PIXELS"][0]  # 8000 x 8000; RGB uint8 at that size is 192 MB


class UnreadableImageError(ValueError):
    """An image file that cannot be read under the reader's policy (the message says why)."""


def max_pixels():
    """The pixel limit in force: ``C2AM_MAX_PIXELS`` from the environment, else ``MAX_PIXELS``; a value that is
    not a positive integer is an ``InputError`` naming it (``c2am_tf.utils.limits``)."""
    return limit("C2AM_MAX_PIXELS")


# the deepest JPEG draft scale: 1/8 on each side, so a JPEG of up to 64x the limit can be decoded under it
MAX_DRAFT_FACTOR = 8


def _megapixels(pixels):
    """Pixels as megapixels for a message: '400', '0.09'."""
    return f"{pixels / 1e6:.3g}"


def _pillow_limit(limit):
    """Sets Pillow's own bomb check from ``limit`` and returns it. Pillow's fires at open, before ours could
    draft a JPEG down (at 179 MP by default, whatever C2AM_MAX_PIXELS says): it now refuses only what no draft
    scale brings under the limit (Pillow errs above twice its setting)."""

    Image.MAX_IMAGE_PIXELS = limit * MAX_DRAFT_FACTOR ** 2 // 2
    return limit


def image_size(path):
    """(width, height) from the file's header (Pillow, no decoding), or None when it cannot be read; a bomb's
    too (its boxes are still checked against it; ``load_image`` refuses its pixels)."""

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None  # nothing is decoded here
            with Image.open(path) as image:
                return image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    finally:
        _pillow_limit(max_pixels())


def _to_rgb8(image):
    """Pillow image of any mode -> (H, W, 3) uint8, high bit depths scaled rather than clipped."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(image).astype(np.float64)
        # 16-bit data (PNG, TIFF) fills 0..65535; Pillow widens it to mode "I" without rescaling
        scale = 257.0 if array.max(initial=0) <= 65535 else 16843009.0
        gray = np.clip(np.round(array / scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, np.float64)
        top = 1.0 if array.size and np.nanmax(array) <= 1.0 else 255.0
        gray = np.clip(np.round(np.nan_to_num(array) * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, np.uint8)


def load_image(path, exif=True, downscale=True, limit=None, return_size=False):
    """(H, W, 3) uint8 RGB of an image file under the module's policy.

    Args:
        path: the file.
        exif: apply the EXIF orientation.
        downscale: decode an over-limit JPEG at a reduced scale instead of refusing it.
        limit: the pixel limit (default ``max_pixels()``).
        return_size: also return the original (width, height), after orientation, for
            mapping results back to the file's pixels when it was downscaled.

    Raises:
        UnreadableImageError: missing, unreadable, empty, or over the limit.
    """

    path = os.fspath(path)
    cap = _pillow_limit(limit or max_pixels())
    problem = regular_file_problem(path)  # a FIFO would block the decoder for ever
    if problem is not None:
        raise UnreadableImageError(f"{path}: {problem}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as image:
                width, height = image.size
                if width * height == 0:
                    raise UnreadableImageError(f"{path}: empty image ({width}x{height})")
                if width * height > cap:
                    if not (downscale and image.format == "JPEG"):
                            raise UnreadableImageError(
                            f"{path}: {width}x{height} is {_megapixels(width * height)} megapixels, over the limit "
                            f"of {_megapixels(cap)} (set C2AM_MAX_PIXELS to read it)")
                    factor = 1
                    while factor < MAX_DRAFT_FACTOR and width * height / (factor * factor) > cap:
                        factor *= 2
                    image.draft("RGB", (-(-width // factor), -(-height // factor)))
                    if image.size[0] * image.size[1] > cap:
                        raise UnreadableImageError(
                            f"{path}: {width}x{height} is {_megapixels(width * height)} megapixels, over the limit "
                            f"of {_megapixels(cap)} even at 1/{MAX_DRAFT_FACTOR} scale "
                            "(set C2AM_MAX_PIXELS to read it)")
                size = (width, height)
                if exif:
                    orientation = image.getexif().get(0x0112, 1)
                    if orientation in (5, 6, 7, 8):
                        size = (height, width)
                    image = ImageOps.exif_transpose(image)
                array = _to_rgb8(image)
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own check, at open, for the hugest files
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{_megapixels(int(pixels.group(1)))} megapixels, " if pixels else ""
        raise UnreadableImageError(f"{path}: {count}over the limit of {_megapixels(cap)} "
                                   "(a decompression bomb, or set C2AM_MAX_PIXELS to read it)") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError,
            MemoryError, EOFError) as err:
        raise UnreadableImageError(f"{path}: cannot read or decode it ({type(err).__name__}: {err})") from None
    return (array, size) if return_size else array


def read_image(path, **kwargs):
    """``load_image(path, **kwargs)``, or None when the file cannot be read (callers skip and count)."""
    try:
        return load_image(path, **kwargs)
    except UnreadableImageError:
        return None
