"""Per-map min-max normalization, numpy only: the one rule every metric, pseudo label and CAM fusion uses.

Each map is scaled by its own minimum and maximum, so maps of different models (or C2AM's map and a
classifier's CAM) are compared on one [0, 1] scale. The graph twin is ``c2am_tf.models.masks.mask_model``'s
``normalized_tf`` (the mask model's prototype layer), checked against this one in the tests.
"""

import numpy as np


def min_max_normalized(maps, axis=(1, 2), keep_flat=False):
    """``maps`` scaled to [0, 1] by the minimum and maximum over ``axis`` (per map of a (B, h, w) batch by
    default; ``axis=None``: the whole array as one map). A flat map (maximum == minimum) becomes zeros, or
    stays as it is with ``keep_flat`` (the salient-object metrics' rule).

    >>> min_max_normalized(np.array([[[1.0, 3.0]], [[2.0, 2.0]]])).tolist()
    [[[0.0, 1.0]], [[0.0, 0.0]]]
    >>> min_max_normalized(np.array([0.5, 0.5]), axis=None, keep_flat=True).tolist()
    [0.5, 0.5]
    """
    maps = np.asarray(maps)
    lo = maps.min(axis=axis, keepdims=True)
    span = maps.max(axis=axis, keepdims=True) - lo
    scaled = (maps - lo) / np.where(span > 0, span, 1)
    return np.where(span > 0, scaled, maps if keep_flat else 0.0)


def flat_maps(maps, axis=(1, 2)):
    """Boolean, ``maps``' shape: True on every pixel of a map whose maximum equals its minimum (it says nothing)."""
    maps = np.asarray(maps)
    return np.broadcast_to(maps.max(axis=axis, keepdims=True) - maps.min(axis=axis, keepdims=True) <= 0, maps.shape)
