"""Images in tf.data: ``c2am_tf.utils.image_io``'s one reader inside the pipeline, and finding unreadable files."""

import logging

import numpy as np
import tensorflow as tf

from c2am_tf.data.transforms import resize_square
from c2am_tf.utils.files import IMAGE_EXTENSIONS, list_images  # noqa: F401  (re-exported)
from c2am_tf.utils.image_io import UnreadableImageError, load_image

log = logging.getLogger("c2am_tf.data")


def read_rgb(path, exif=False, downscale=False):
    """Reads one image file (a scalar string tensor) -> (H, W, 3) uint8, by ``image_io.load_image``.

    The defaults suit annotated datasets (stored pixels, never resized: boxes and masks
    stay aligned); unannotated folders pass ``exif=True, downscale=True``. An unreadable
    file raises a tf error, which the sources' ``ignore_errors`` skip: an empty image out of the Python function
    and an assertion on its size, since an exception raised inside ``py_function`` makes TensorFlow print its
    whole traceback beside the skip counts the sources give.
    """
    def load(p):
        try:
            return load_image(p.numpy().decode(), exif=bool(exif), downscale=bool(downscale))
        except UnreadableImageError:
            return np.zeros((0, 0, 3), np.uint8)

    image = tf.py_function(load, [path], tf.uint8)
    image.set_shape([None, None, 3])
    with tf.control_dependencies([tf.debugging.assert_positive(tf.size(image), message="unreadable image")]):
        return tf.identity(image)


def find_unreadable(paths, num_parallel_calls=tf.data.AUTOTUNE, exif=False, downscale=False):
    """Indices of the files in ``paths`` that cannot be read or decoded, or are empty.

    Decodes every file once, in parallel, inside tf.data (no Python per image).
    """
    paths = [str(p) for p in paths]
    if not paths:
        return []

    def check(i, path):
        image = read_rgb(path, exif, downscale)
        tf.debugging.assert_positive(tf.size(image), message="empty image")
        return i

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    ds = ds.map(check, num_parallel_calls=num_parallel_calls, deterministic=False)
    ds = ds.ignore_errors()
    good = set(int(i) for i in ds.as_numpy_iterator())
    return [i for i in range(len(paths)) if i not in good]


def drop_unreadable(paths, *columns, what="images", exif=False, downscale=False):
    """Removes unreadable files (and the matching entries of other columns).

    Logs one warning with the count and the first file names; returns the
    filtered ``(paths, *columns)`` and the list of skipped paths.
    """
    bad = set(find_unreadable(paths, exif=exif, downscale=downscale))
    if bad:
        names = [str(paths[i]) for i in sorted(bad)]
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        log.warning("skipping %d unreadable %s of %d: %s", len(bad), what, len(paths), shown)
    keep = [i for i in range(len(paths)) if i not in bad]
    out = [[paths[i] for i in keep]] + [[c[i] for i in keep] for c in columns]
    return (*out, [str(paths[i]) for i in sorted(bad)])


def load_square_images(paths, size):
    """((N, size, size, 3) uint8 of the readable images, resized whole; their paths). Unreadable images
    are skipped with a count and a warning (``drop_unreadable``)."""

    paths, _ = drop_unreadable(paths)
    if not paths:
        raise ValueError("no readable image to load")
    ds = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: tf.cast(resize_square(read_rgb(p), size), tf.uint8),
                                                       num_parallel_calls=tf.data.AUTOTUNE)
    return np.stack(list(ds.as_numpy_iterator())), paths
