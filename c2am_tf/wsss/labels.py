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

from c2am_tf.maps.foreground import foreground_mask

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


# A cue without a stored threshold (a background-cue model, a folder of maps) is a background
# probability: its foreground is where it is below 0.5.
DEFAULT_CUE_THRESHOLD = 0.5
POWER_RANGE = (0.25, 16.0)


class PowerCalibration:
    """The background cue's power G (labels = argmax over [cue ** G, CAMs]) from data, without labels.

    A soft cue (one minus a foreground map) and max-normalized CAMs are on different scales: inside
    objects the CAMs are often around 0.1-0.2 while the cue is 0.2-0.5, so at power 1 the background
    wins there. The rule, fixed before looking at any ground truth: at the cue's own decision boundary
    (its foreground is ``foreground_mask(1 - cue, threshold)``, the model's mask at its stored threshold),
    the background score ``cue ** G`` equals the median CAM score (the max over classes) of the pixels
    the cue calls foreground::

        G = ln(median CAM in the cue's foreground) / ln(median boundary value of the cue)

    Pixels the cue cannot decide thus go to the CAMs where the CAMs score them like typical
    foreground, and confident cue pixels (near 0 or 1) stay the cue's. G is clipped to ``POWER_RANGE``.

    Example: CAMs at 0.25 on the cue's foreground and a cue whose boundary is 0.5 give G = 2
    (0.5 ** 2 = 0.25):
    >>> cue = np.array([[0.0, 1.0]], np.float32)                # left foreground, peak 1 -> boundary 0.5
    >>> cams = np.array([[[0.25, 0.0]]], np.float32)            # (K=1, 1, 2)
    >>> calibration = PowerCalibration(threshold=0.5)
    >>> calibration.update(cue, cams)
    >>> round(calibration.power(), 2)
    2.0
    """

    def __init__(self, threshold=DEFAULT_CUE_THRESHOLD, bins=1024):
        self.threshold = float(threshold)
        self.counts = np.zeros(int(bins), np.int64)
        self.boundaries = []

    def update(self, cue, cams):
        """Adds one image: its cue (h, w) in [0, 1] at any size, and its CAMs (K, H, W)."""

        cams = np.asarray(cams, np.float32)
        cue = np.clip(np.asarray(cue, np.float32), 0.0, 1.0)
        if cue.shape != cams.shape[1:]:  # the size the argmax sees (refine_with_background's resize)
            cue = tf.image.resize(cue[..., None], cams.shape[1:], method="bilinear").numpy()[..., 0]
        foreground = 1.0 - cue
        if cams.shape[0] == 0 or foreground.max() <= 0:
            return
        inside = foreground_mask(foreground, self.threshold)
        scores = np.clip(cams.max(axis=0)[inside], 0.0, 1.0)
        self.counts += np.histogram(scores, bins=len(self.counts), range=(0.0, 1.0))[0]
        self.boundaries.append(1.0 - self.threshold * float(foreground.max()))

    @property
    def images(self):
        """How many images had a foreground to measure."""
        return len(self.boundaries)

    def median_cam(self):
        """The median CAM score of the cue's foreground pixels (histogram bin centre)."""
        total = self.counts.sum()
        if not total:
            raise ValueError("no image had both CAMs and a cue foreground: the cue power cannot be calibrated")
        index = int(np.searchsorted(np.cumsum(self.counts), total / 2.0))
        return (index + 0.5) / len(self.counts)

    def power(self):
        """G, clipped to ``POWER_RANGE``."""
        cam = self.median_cam()
        boundary = float(np.median(self.boundaries))
        if not 0.0 < boundary < 1.0:
            return POWER_RANGE[1] if boundary >= 1.0 else POWER_RANGE[0]
        return float(np.clip(np.log(cam) / np.log(boundary), *POWER_RANGE))
