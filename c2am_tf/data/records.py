"""Annotated records -> a tf.data source: what every box-annotated dataset (CUB, ImageNet) reads through.

A record is (image path, boxes [[x0, y0, x1, y1], ...] in the file's pixels, class label or -1).
"""

import numpy as np
import tensorflow as tf

from c2am_tf.data.images import drop_unreadable, read_rgb
from c2am_tf.data.sharding import take_shard


def pad_boxes(box_lists):
    """(N, G, 4) float32: each image's boxes, padded to the largest count by repeating its first box.

    >>> pad_boxes([[[0, 0, 2, 2]], [[1, 1, 3, 3], [0, 0, 1, 1]]])[0].tolist()
    [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]]
    """
    g = max(len(b) for b in box_lists)
    return np.stack([np.asarray(list(b) + [b[0]] * (g - len(b)), np.float32) for b in box_lists])


def records_source(records, what, num_parallel_calls=tf.data.AUTOTUNE, shard=None):
    """Dataset of {'image', 'boxes' (G, 4), 'label' int32, 'path'} from records; unreadable images are skipped.
    ``shard``: only this input pipeline's records (see ``c2am_tf.data.sharding``)."""
    records = take_shard(records, shard, what)
    paths, boxes, labels, _ = drop_unreadable([r[0] for r in records], [r[1] for r in records],
                                              [r[2] for r in records], what=what)
    if not paths:
        raise ValueError(f"no readable images in {what}")
    ds = tf.data.Dataset.from_tensor_slices((paths, pad_boxes(boxes), np.asarray(labels, np.int32)))
    ds = ds.map(lambda p, b, y: {"image": read_rgb(p), "boxes": b, "label": y, "path": p},
                num_parallel_calls=num_parallel_calls)
    return ds.ignore_errors(log_warning=True)
