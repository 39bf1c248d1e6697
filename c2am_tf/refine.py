"""CAM refinement with background cues (paper section 3.5) and its evaluation.

The background cue (C2AM's 1 - P, or a background-cue model's prediction) is put in
front of the multi-class CAMs as channel 0 and the argmax over channels is the label
map: 0 background, k = CAM channel k - 1. The usual baseline puts a constant
background score instead (``threshold_labels``). ``refine_with_background`` is the
one implementation, used by ``train/refine.py`` and by the SavedModel ``refine``
signature.
"""

import numpy as np
import tensorflow as tf

DEFAULT_BG_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def refine_with_background(background, cams):
    """Labels (B, h, w) int32 = argmax over [background (B, h0, w0) resized, cams (B, h, w, K)].

    Example:
    >>> bg = np.array([[[0.9, 0.1]]], np.float32)            # (1, 1, 2)
    >>> cams = np.array([[[[0.5, 0.2], [0.3, 0.6]]]], np.float32)  # (1, 1, 2, 2)
    >>> refine_with_background(bg, cams).numpy().tolist()
    [[[0, 2]]]
    """
    cams = tf.convert_to_tensor(cams, tf.float32)
    size = tf.shape(cams)[1:3]
    bg = tf.image.resize(tf.convert_to_tensor(background, tf.float32)[..., None], size, method="bilinear")
    return tf.argmax(tf.concat([bg, cams], axis=-1), axis=-1, output_type=tf.int32)


def dense_cams(keys, cams, num_classes):
    """(H, W, num_classes) with the CAMs of ``keys`` (0-based classes) in place and zeros elsewhere."""
    keys = np.asarray(keys, np.int64).reshape(-1)
    cams = np.asarray(cams, np.float32)
    if keys.size and (keys.min() < 0 or keys.max() >= num_classes):
        raise ValueError(f"CAM keys {keys.tolist()} outside [0, {num_classes})")
    out = np.zeros(cams.shape[1:] + (num_classes,), np.float32)
    out[..., keys] = np.moveaxis(cams, 0, -1)
    return out


def refined_labels(background, keys, cams, num_classes):
    """(H, W) uint8 labels of one image from a background map (any size) and its CAMs."""
    return refined_labels_batch(np.asarray(background)[None], keys, cams, num_classes)[0]


def refined_labels_batch(backgrounds, keys, cams, num_classes):
    """(N, H, W) uint8: the labels of one image for N background maps (N, h0, w0) in one call."""
    backgrounds = np.asarray(backgrounds, np.float32)
    dense = np.broadcast_to(dense_cams(keys, cams, num_classes), (len(backgrounds),) + cams.shape[1:] + (num_classes,))
    return refine_with_background(backgrounds, dense).numpy().astype(np.uint8)


def threshold_labels(threshold, keys, cams, num_classes):
    """(H, W) uint8 labels with a constant background score ``threshold`` (the usual baseline)."""
    return refined_labels(np.full((1, 1), threshold, np.float32), keys, cams, num_classes)
