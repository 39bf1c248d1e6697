"""Background cues from C2AM's maps: the pseudo labels the cue model (``c2am_tf.models.cue_model``) trains on, a
model's background map of an image, and the cue files the refine step reads.
"""

import io

import numpy as np
import tensorflow as tf

from c2am_tf.data.transforms import resize_square
from c2am_tf.maps.foreground import foreground_mask
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.utils.files import write_atomically

PSEUDO_LABELS = ("soft", "hard")


def pseudo_labels(c2am_model, images, kind="soft", threshold=0.3):
    """Background targets (B, h, w) from a C2AM model: 1 - P (``soft``), or 1 on the pixels
    at or below ``threshold`` x the map's peak and 0 elsewhere (``hard``: the box rule's
    cut-off; 0.3 is the authors' background-cue threshold)."""
    if kind not in PSEUDO_LABELS:
        raise ValueError(f"pseudo labels must be one of {PSEUDO_LABELS}, got {kind!r}")
    maps = np.asarray(c2am_model.predict(images, verbose=0))[..., 0]
    if kind == "soft":
        return 1.0 - maps
    return np.stack([~foreground_mask(m, threshold) for m in maps]).astype(np.float32)


def is_c2am(model):
    """True for a C2AM model (maps P), False for a background-cue model."""
    return hasattr(model, "threshold") and hasattr(model, "orient")


def background_map(model, image, size=EVAL_CROP):
    """Background cue (h, w) in [0, 1] of one uint8 image (H, W, 3): 1 - P for a C2AM model, the
    prediction of a background-cue model (both at the model's resolution), and one minus the refined
    mask of a mask model (``c2am_tf.models.masks.mask_model``, at ``size`` x ``size``)."""
    square = resize_square(image, size)
    out = np.asarray(model(tf.cast(square, tf.float32)[None], training=False))[0, ..., 0]
    if hasattr(model, "edge_refine"):
        return 1.0 - model.edge_refine(np.asarray(square, np.uint8), out)
    return 1.0 - out if is_c2am(model) else out


def write_cue_files(model, images, paths, outputs, batch_size=16):
    """The background cue of each of ``images`` (a cue model's, stride 8, in [0, 1]) as ``NAME.npy`` at
    ``outputs(path)`` (an ``OutputNames`` of layout "stem", what ``refine --bg-cues DIR`` reads); returns
    the count."""

    cues = model.predict(images, batch_size=batch_size, verbose=0)[..., 0]
    for path, cue in zip(paths, cues):
        buffer = io.BytesIO()
        np.save(buffer, cue)
        write_atomically(outputs(path), buffer.getvalue())
    return len(cues)
