"""Edge-aware refinement of a coarse foreground map with the image as guide (OpenCV contrib ``ximgproc``).

A map at stride 4-16, resized to the image, is blurry across object edges. Two maintained filters
snap it to the image's edges (nothing here is hand-written):

- ``"guided"``: He et al.'s guided filter (``cv2.ximgproc.guidedFilter``), a local linear model of
  the map in the image's colours; fast (a few ms per image).
- ``"global_smoother"``: Min et al.'s fast global smoother (``cv2.ximgproc.fastGlobalSmootherFilter``),
  a global edge-aware least-squares fit like the bilateral solver TokenCut uses. (OpenCV's
  ``fastBilateralSolverFilter`` itself needs Eigen, which the PyPI wheels are built without.)

The spatial scale follows the map's own resolution, a rule fixed in advance: the guided filter's
radius is the map's stride in image pixels (the blur that upsampling a stride-s map creates); the
smoother's lambda is that stride squared (its smoothing area) and its colour sigma is 8 of 255.
"""

import numpy as np

from c2am_tf.maps.foreground import foreground_mask

REFINEMENTS = ("none", "guided", "global_smoother")
# eps of the guided filter in (0..255 intensity)^2: edges weaker than ~0.1 x 255 are smoothed over.
GUIDED_EPS = (0.1 * 255) ** 2
GLOBAL_SIGMA_COLOR = 8.0


def _ximgproc():
    import cv2  # defers OpenCV's contrib module: the device side imports this file without it

    if not hasattr(cv2, "ximgproc"):
        raise ImportError("edge-aware refinement needs OpenCV contrib: pip install opencv-contrib-python-headless "
                          "(it replaces opencv-python-headless)")
    return cv2.ximgproc


def check_refinement(method):
    """``method`` if it is one of ``REFINEMENTS``, else a ValueError naming the choices."""
    if method not in REFINEMENTS:
        raise ValueError(f"refinement must be one of {REFINEMENTS}, got {method!r}")
    return method


def edge_refined_map(image, score_map, method="guided", stride=None):
    """The map (h, w) in [0, 1] resized to ``image`` (H, W, 3) uint8 and refined along its edges.

    Args:
        image: the guide, uint8 RGB (H, W, 3).
        score_map: foreground map (h, w) in [0, 1], any resolution.
        method: one of ``REFINEMENTS`` (``"none"`` only resizes).
        stride: image pixels per map pixel (default: H / h), the filters' spatial scale.

    Returns float32 (H, W) in [0, 1].

    Example (a blocky map snaps to the square in the image):
    >>> image = np.zeros((64, 64, 3), np.uint8); image[16:48, 16:48] = 255
    >>> coarse = np.zeros((4, 4), np.float32); coarse[1:3, 1:3] = 1
    >>> fine = edge_refined_map(image, coarse, "guided")
    >>> fine.shape, bool(fine[20, 20] > 0.5), bool(fine[8, 8] < 0.5)
    ((64, 64), True, True)
    """
    import cv2  # defers OpenCV: the device side imports this file without it

    check_refinement(method)
    image = np.ascontiguousarray(np.asarray(image, np.uint8))
    score_map = np.clip(np.asarray(score_map, np.float32), 0.0, 1.0)
    height, width = image.shape[:2]
    up = cv2.resize(score_map, (width, height), interpolation=cv2.INTER_LINEAR)
    if method == "none":
        return up
    stride = float(stride or height / score_map.shape[0])
    ximgproc = _ximgproc()
    if method == "guided":
        out = ximgproc.guidedFilter(image, up, max(1, int(round(stride))), GUIDED_EPS)
    else:
        out = ximgproc.fastGlobalSmootherFilter(image, up, max(1.0, stride) ** 2, GLOBAL_SIGMA_COLOR)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def edge_refined_mask(image, score_map, method, threshold):
    """Boolean (H, W) foreground of ``image``: the map refined along its edges (``edge_refined_map``), then the
    box rule's foreground test at ``threshold`` (``c2am_tf.maps.foreground.foreground_mask``). The one rule
    behind a mask model's masks in Keras (``map_to_mask``), on the device (``ForegroundDetector``) and in
    the benchmarks."""

    return foreground_mask(edge_refined_map(image, score_map, method), threshold)
