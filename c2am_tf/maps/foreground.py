"""The foreground rule of the map -> box extraction, numpy only (the device side imports it too).

The map in [0, 1] is truncated to uint8 (``(map * 255).astype(uint8)``, in float32,
or in float64 for float64 maps as wsolevaluation does); the cut-off is
``int(t * max(uint8 map))`` computed in float64; pixels strictly above it are
foreground. ``c2am_tf.maps.boxes`` (OpenCV contours) and ``c2am_tf.deploy.on_device`` (numpy
components) both build their boxes on ``foreground_mask``.
"""

import numpy as np

DEFAULT_THRESHOLDS = tuple((i + 1) / 20 for i in range(19))


def check_map(score_map):
    score_map = np.asarray(score_map)
    if score_map.ndim != 2:
        raise ValueError(f"score_map must be 2-D (H, W), got shape {score_map.shape}")
    # float64 stays float64: (map * 255) truncates differently in float32 and
    # float64 (wsolevaluation works in float64, the CCAM code in float32).
    if score_map.dtype != np.float64:
        score_map = score_map.astype(np.float32)
    if np.isnan(score_map).any():
        raise ValueError("score_map contains NaN")
    if score_map.size and (score_map.min() < 0 or score_map.max() > 1):
        raise ValueError(
            f"score_map must lie in [0, 1], got [{score_map.min()}, {score_map.max()}]"
        )
    return score_map


def uint8_and_peak(score_map):
    image = (score_map * 255).astype(np.uint8)
    return image, (float(np.max(image)) if image.size else 0.0)


def foreground_mask(score_map, threshold):
    """Boolean (H, W): pixels strictly above the reference cut-off ``int(t * max(uint8 map))``.

    >>> foreground_mask(np.array([[0.0, 0.5], [0.9, 1.0]]), 0.5).astype(int).tolist()
    [[0, 0], [1, 1]]
    """
    image, peak = uint8_and_peak(check_map(score_map))
    return image > int(float(threshold) * peak)


def foreground_fraction(maps, threshold):
    """The mean share of pixels that ``foreground_mask`` keeps at ``threshold`` over ``maps`` (each in [0, 1])."""
    return float(np.mean([foreground_mask(m, threshold).mean() for m in maps])) if len(maps) else 0.0


def matched_threshold(start_maps, start_threshold, maps, thresholds=DEFAULT_THRESHOLDS):
    """A threshold chosen without boxes: the one of ``thresholds`` at which ``maps`` (a trained model's, on the
    training images) keep the share of foreground that ``start_maps`` (its start's, same images) kept at
    ``start_threshold``. Training moves a map's scale, so the start's calibrated threshold alone would cut
    the new maps elsewhere; matching the foreground it kept carries its calibration over.

    >>> start = [np.linspace(0, 1, 100).reshape(10, 10)]
    >>> matched_threshold(start, 0.5, [np.linspace(0, 1, 100).reshape(10, 10) ** 2])  # the same region at 0.25
    0.25
    """
    target = foreground_fraction(start_maps, start_threshold)
    return min(thresholds, key=lambda t: (abs(foreground_fraction(maps, t) - target), abs(t - start_threshold)))


def label_free_threshold(start_maps, start_threshold, maps, thresholds=DEFAULT_THRESHOLDS):
    """The threshold a warm run keeps without boxes: ``matched_threshold``, never above ``start_threshold``.

    When training narrows the map, matching lowers the cut so that the object keeps its extent (pets:
    0.40 -> 0.25). When training widens it, the wider map is C2AM's loss covering more of the object, and
    raising the cut to the start's share undid that: on birds the start never saw, matching lost 7 points (80
    photos: 15), while the start's own threshold was the best. Measured in docs/results/own_photos.md.

    >>> start = [np.linspace(0, 1, 100).reshape(10, 10)]
    >>> label_free_threshold(start, 0.5, [np.linspace(0, 1, 100).reshape(10, 10) ** 2])  # narrower: matched
    0.25
    >>> label_free_threshold(start, 0.5, [np.sqrt(np.linspace(0, 1, 100)).reshape(10, 10)])  # wider: kept
    0.5
    """
    return min(matched_threshold(start_maps, start_threshold, maps, thresholds), float(start_threshold))
