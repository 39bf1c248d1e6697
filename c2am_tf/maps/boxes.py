"""Map -> box extraction and GT-known localization accuracy (CorLoc).

Reference semantics (CVI-SZU/CCAM ``compute_bboxes_from_scoremaps`` and its
``test()`` loop, pinned down by ``C_boxes.npz`` and ``D_corloc.npz``):

- the map is truncated to uint8 (``(map * 255).astype(uint8)``, in float32, or in
  float64 for float64 maps as wsolevaluation does);
- the cut-off is ``int(t * max(uint8 map))`` computed in float64, and pixels
  strictly above it are foreground;
- contours are found with ``RETR_TREE`` (multi-contour boxes include holes);
  single-contour mode keeps the first contour of largest polygon area;
- a box is ``x, y, x + w, y + h`` with ``x1, y1`` clipped to ``W - 1, H - 1``,
  then scaled by ``factor``; an empty map gives ``[0, 0, 0, 0]``.
"""

import cv2
import numpy as np

from c2am_tf.maps.foreground import DEFAULT_THRESHOLDS, check_map, uint8_and_peak
from c2am_tf.maps.geometry import band_thresholds

_CONTOUR_INDEX = 1 if cv2.__version__.split(".")[0] == "3" else 0


def boxes_from_map(score_map, thresholds=DEFAULT_THRESHOLDS, multi_contour=False, factor=1.0):
    """Boxes (x0, y0, x1, y1) from one map at each threshold.

    Args:
        score_map: (H, W) array in [0, 1], foreground-high.
        thresholds: fractions of the map's maximum.
        multi_contour: one box per contour instead of the largest contour's box.
        factor: scale from map pixels to image pixels (e.g. 448 / 28).

    Returns:
        A list with one float64 array (k, 4) per threshold (k = 1 unless
        ``multi_contour``).

    Example:
    >>> m = np.zeros((14, 14), np.float32); m[3:8, 4:10] = 1.0
    >>> boxes_from_map(m, [0.5])[0].tolist()
    [[4.0, 3.0, 10.0, 8.0]]
    """
    score_map = check_map(score_map)
    height, width = score_map.shape
    image, peak = uint8_and_peak(score_map)
    out = []
    cutoffs = [int(float(t) * peak) for t in thresholds]
    # The foreground's bounding window at every cut-off at once: contours are found only inside it (the
    # same contours, offset: OpenCV treats everything outside the image as background), and high
    # thresholds cost a fraction of the map.
    y0s, y1s = _extents(image.max(axis=1), cutoffs)
    x0s, x1s = _extents(image.max(axis=0), cutoffs)
    for cutoff, y0, y1, x0, x1 in zip(cutoffs, y0s, y1s, x0s, x1s):
        if y1 < y0:
            out.append(np.zeros((1, 4), np.float64))
            continue
        # cv2.threshold keeps pixels strictly above the cut-off, as the reference's comparison does
        window = cv2.threshold(np.ascontiguousarray(image[y0:y1 + 1, x0:x1 + 1]), cutoff, 255, cv2.THRESH_BINARY)[1]
        contours = cv2.findContours(window, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[_CONTOUR_INDEX]
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            x, y = x + x0, y + y0
            boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        out.append(np.asarray(boxes, np.float64) * factor)
    return out


def _extents(line_peak, cutoffs):
    """(first, last) index where ``line_peak`` (a row's or column's maximum) exceeds each cut-off; last <
    first where none does."""
    above = line_peak[None, :] > np.asarray(cutoffs)[:, None]
    first = above.argmax(axis=1)
    last = len(line_peak) - 1 - above[:, ::-1].argmax(axis=1)
    none = ~above.any(axis=1)
    return np.where(none, 1, first).tolist(), np.where(none, 0, last).tolist()


def best_box_per_threshold(score_map, thresholds=DEFAULT_THRESHOLDS, factor=1.0, band=0.0):
    """(T, 4) array: the single largest-contour box at each threshold.

    With ``band`` > 0, each box is the mean of the boxes at ``band_thresholds(t, band)``. One threshold's
    box jumps when a contour merges with a neighbour or splits off; the mean over a band of thresholds
    moves smoothly (measured in docs/results/cub.md).

    >>> m = np.zeros((8, 8)); m[2:6, 2:6] = 0.5; m[3:5, 3:5] = 1.0
    >>> best_box_per_threshold(m, [0.4, 0.6]).tolist()
    [[2.0, 2.0, 6.0, 6.0], [3.0, 3.0, 5.0, 5.0]]
    >>> best_box_per_threshold(m, [0.5], band=0.2).tolist()  # the boxes at 0.4, 0.45, 0.5, 0.55, 0.6
    [[2.6, 2.6, 5.4, 5.4]]
    """
    if not band:
        return np.stack([b[0] for b in boxes_from_map(score_map, thresholds, False, factor)])
    per = [band_thresholds(t, band) for t in thresholds]
    grid = sorted({t for ts in per for t in ts})
    boxes = dict(zip(grid, (b[0] for b in boxes_from_map(score_map, grid, False, factor))))
    return np.stack([np.mean([boxes[t] for t in ts], axis=0) for ts in per])


def box_iou(pred, gt):
    """IoU of boxes (..., 4) with the reference arithmetic (float32, no +1).

    0/0 gives NaN, as in the reference (the CorLoc loop counts it correct).
    """
    pred = np.asarray(pred, np.float32)
    gt = np.asarray(gt, np.float32)
    lo = np.maximum(pred[..., :2], gt[..., :2])
    hi = np.minimum(pred[..., 2:], gt[..., 2:])
    wh = np.clip(hi - lo, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_p = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_g = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_p + area_g - inter)


class GTKnownLoc:
    """Streaming GT-known localization accuracy over several map thresholds.

    An image is correct at threshold t when its box at t overlaps one of its GT
    boxes with IoU > ``iou_threshold`` (``inclusive=True`` for >=). As in the
    reference, an undefined IoU (0/0) counts as correct.

    Example:
    >>> acc = GTKnownLoc(thresholds=[0.5])
    >>> acc.update(np.array([[[0, 0, 10, 10]]]), np.array([[0, 0, 10, 9]]))
    >>> acc.result()["best"]
    100.0
    """

    def __init__(self, thresholds=DEFAULT_THRESHOLDS, iou_threshold=0.5, inclusive=False):
        self.thresholds = tuple(float(t) for t in thresholds)
        self.iou_threshold = float(iou_threshold)
        self.inclusive = bool(inclusive)
        self.reset()

    def reset(self):
        """Forget everything seen so far."""
        self.correct = np.zeros(len(self.thresholds), np.int64)
        self.total = 0

    def per_image_correct(self, pred_boxes, gt_boxes):
        """(B, T) booleans. pred_boxes (B, T, 4); gt_boxes (B, 4) or (B, G, 4)."""
        pred = np.asarray(pred_boxes, np.float32)
        gt = np.asarray(gt_boxes, np.float32)
        if gt.ndim == 2:
            gt = gt[:, None, :]
        if pred.ndim != 3 or pred.shape[1] != len(self.thresholds):
            raise ValueError(
                f"pred_boxes must be (B, {len(self.thresholds)}, 4), got {pred.shape}"
            )
        iou = box_iou(pred[:, :, None, :], gt[:, None, :, :])  # (B, T, G)
        with np.errstate(invalid="ignore"):
            hit = iou >= self.iou_threshold if self.inclusive else iou > self.iou_threshold
        return np.any(hit | np.isnan(iou), axis=2)

    def update(self, pred_boxes, gt_boxes):
        """Adds a batch: pred_boxes (B, T, 4), gt_boxes (B, 4) or (B, G, 4)."""
        self.add(self.per_image_correct(pred_boxes, gt_boxes))

    def add(self, correct):
        """Adds a batch's verdicts ``per_image_correct`` gave: (B, T) booleans."""
        self.correct += correct.sum(axis=0)
        self.total += correct.shape[0]

    def result(self):
        """{'per_threshold': percent per threshold, 'best', 'best_threshold', 'total'}.

        Ties keep the first best threshold; 0 when every value is 0 (reference).
        """
        per = self.correct / max(self.total, 1) * 100.0
        best, best_t = 0.0, 0.0
        for t, value in zip(self.thresholds, per):
            if value > best:
                best, best_t = float(value), t
        return {
            "per_threshold": per,
            "best": best,
            "best_threshold": best_t,
            "total": self.total,
        }
