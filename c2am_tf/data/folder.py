"""Any folder of unlabeled images (recursive)."""

import tensorflow as tf

from c2am_tf.data.images import drop_unreadable, list_images, read_rgb


def folder_source(directory, num_parallel_calls=tf.data.AUTOTUNE):
    """Dataset of {'image', 'boxes' (0, 4), 'path'}; unreadable files are skipped with a warning."""
    paths, _ = drop_unreadable(list_images(directory), what=f"images in {directory}", exif=True, downscale=True)
    if not paths:
        raise ValueError(f"{directory}: no readable images")
    ds = tf.data.Dataset.from_tensor_slices(paths)
    # no annotations to keep aligned: EXIF orientation applied, huge JPEGs decoded at reduced scale
    ds = ds.map(lambda p: {"image": read_rgb(p, exif=True, downscale=True), "boxes": tf.zeros((0, 4)), "path": p},
                num_parallel_calls=num_parallel_calls)
    return ds.ignore_errors(log_warning=True)
