"""Any folder of unlabeled images (recursive), or a text file listing images."""

import os

import tensorflow as tf

from c2am_tf.data.images import drop_unreadable, list_images, read_rgb
from c2am_tf.data.sharding import take_shard


def read_image_list(path):
    """Image paths listed in a text file, one per line (relative ones are relative to the file's folder;
    blank lines and ``#`` comments are ignored). FileNotFoundError names the first missing file."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        paths = [os.path.join(base, line.strip()) for line in f if line.strip() and not line.startswith("#")]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} listed images do not exist, e.g. {missing[0]}")
    if not paths:
        raise ValueError(f"{path}: lists no images")
    return paths


def folder_source(directory, num_parallel_calls=tf.data.AUTOTUNE, shard=None):
    """Dataset of {'image', 'boxes' (0, 4), 'path'} from a folder (recursive) or a ``.txt`` list of images;
    unreadable files are skipped with a warning. ``shard`` (``c2am_tf.data.sharding.Shard``): only
    this pipeline's files are checked and read."""
    listed = os.path.isfile(directory) and directory.endswith(".txt")
    paths = read_image_list(directory) if listed else list_images(directory)
    paths = take_shard(paths, shard, f"images in {directory}")
    paths, _ = drop_unreadable(paths, what=f"images in {directory}", exif=True, downscale=True)
    if not paths:
        raise ValueError(f"{directory}: no readable images")
    ds = tf.data.Dataset.from_tensor_slices(paths)
    # no annotations to keep aligned: EXIF orientation applied, huge JPEGs decoded at reduced scale
    ds = ds.map(lambda p: {"image": read_rgb(p, exif=True, downscale=True), "boxes": tf.zeros((0, 4)), "path": p},
                num_parallel_calls=num_parallel_calls)
    return ds.ignore_errors(log_warning=True)
