"""Streaming accumulators for every reported number: feed batches, read ``result()``.

- ``GTKnownLoc`` (from ``c2am_tf.maps.boxes``): the authors' CorLoc over map thresholds.
- ``MaxBoxAcc``: wsolevaluation's MaxBoxAcc / MaxBoxAccV2 (IoU 30/50/70, +1-pixel
  box areas, IoU >= threshold, thresholds ``np.arange(0, 1, step)``).
- ``PxAP``: pixel average precision and best-threshold mask IoU from score
  histograms (pixels marked 255 in the mask are ignored).
- ``ConfusionMatrix``: multi-class segmentation IoU per class and mIoU.
"""

import numpy as np

from c2am_tf.maps.boxes import GTKnownLoc, boxes_from_map
from c2am_tf.maps.normalize import min_max_normalized

__all__ = ["GTKnownLoc", "MaxBoxAcc", "PxAP", "ConfusionMatrix", "multiple_iou", "wsol_thresholds"]


def wsol_thresholds(step=0.01):
    """Map thresholds ``list(np.arange(0, 1, step))`` exactly as wsolevaluation builds them."""
    return list(np.arange(0, 1, step))


def multiple_iou(boxes_a, boxes_b):
    """(A, B) IoU matrix with +1-pixel areas (wsolevaluation's ``calculate_multiple_iou``)."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    lo_x = np.maximum(a[:, None, 0], b[None, :, 0])
    lo_y = np.maximum(a[:, None, 1], b[None, :, 1])
    hi_x = np.minimum(a[:, None, 2], b[None, :, 2])
    hi_y = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(0, hi_x - lo_x + 1) * np.maximum(0, hi_y - lo_y + 1)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


class MaxBoxAcc:
    """MaxBoxAcc (single contour, IoU 50) and MaxBoxAccV2 (multi contour, mean over 30/50/70).

    Args:
        thresholds: map thresholds (default ``np.arange(0, 1, 0.01)``).
        iou_thresholds: in percent.
        multi_contour: one box per contour, the best one counts (V2 setting).

    Example (boxes in wsolevaluation's convention: the map's box of pixels 2..5 is
    [2, 2, 6, 6], and areas count +1 pixel):
    >>> m = MaxBoxAcc(multi_contour=True)
    >>> score = np.zeros((8, 8)); score[2:6, 2:6] = 1
    >>> m.update(score, [[2, 2, 6, 6]])
    >>> m.result()["max_box_acc_v2"]
    100.0
    >>> m.update(score, [[2, 2, 5, 5]])  # IoU 16/25 = 0.64: right at 30 and 50, wrong at 70
    >>> round(m.result()["max_box_acc_v2"], 2)  # (100 + 100 + 50) / 3
    83.33
    """

    def __init__(self, thresholds=None, iou_thresholds=(30, 50, 70), multi_contour=False):
        self.thresholds = list(wsol_thresholds() if thresholds is None else thresholds)
        self.iou_thresholds = tuple(iou_thresholds)
        self.multi_contour = multi_contour
        self.reset()

    def reset(self):
        """Forget everything seen so far."""
        self.num_correct = np.zeros((len(self.iou_thresholds), len(self.thresholds)))
        self.count = 0

    def best_iou_per_threshold(self, score_map, gt_boxes):
        """(T,) best IoU between any predicted box and any GT box at each threshold."""
        per_threshold = boxes_from_map(np.asarray(score_map, np.float64), self.thresholds, self.multi_contour)
        # one IoU matrix for every threshold's boxes (numpy's per-call overhead dominated 101 small ones)
        counts = [len(b) for b in per_threshold]
        iou = multiple_iou(np.concatenate(per_threshold), gt_boxes).max(axis=1)
        return np.maximum.reduceat(iou, np.cumsum([0] + counts[:-1]))

    def update(self, score_map, gt_boxes):
        """Adds one image: a (H, W) map in [0, 1] and its GT boxes (G, 4) in map pixels."""
        best = self.best_iou_per_threshold(score_map, gt_boxes)
        for i, t in enumerate(self.iou_thresholds):
            self.num_correct[i] += best >= t / 100
        self.count += 1

    def update_batch(self, score_maps, gt_boxes):
        """Adds a batch: maps (B, H, W) and GT boxes (B, G, 4) (rows of zeros are padding)."""
        for m, g in zip(score_maps, gt_boxes):
            g = np.asarray(g).reshape(-1, 4)
            self.update(m, g[np.any(g != 0, axis=1)] if np.any(g != 0) else g[:1])

    def result(self):
        """Per IoU threshold: best accuracy (percent) and its threshold; their mean (V2 when multi)."""
        acc = self.num_correct.max(axis=1) / max(self.count, 1) * 100
        best = self.num_correct.argmax(axis=1)
        return {
            "max_box_acc": dict(zip(self.iou_thresholds, acc.tolist())),
            "best_threshold": dict(zip(self.iou_thresholds, [self.thresholds[i] for i in best])),
            "max_box_acc_v2": float(np.mean(acc)),
            "count": self.count,
        }


class PxAP:
    """Pixel average precision (wsolevaluation's MaskEvaluator) and the best mask IoU.

    Scores are histogrammed with right edges ``thresholds + [1, 2, 3]``; mask
    value 1 is foreground, 0 background, any other value (255) ignored.

    Example:
    >>> m = PxAP()
    >>> m.update(np.array([[0.9, 0.1]]), np.array([[1, 0]]))
    >>> m.result()["pxap"]
    100.0
    """

    def __init__(self, thresholds=None):
        self.thresholds = np.asarray(wsol_thresholds() if thresholds is None else thresholds, np.float64)
        self.edges = np.append(self.thresholds, [1.0, 2.0, 3.0])
        self.reset()

    def reset(self):
        """Forget everything seen so far."""
        self.true_hist = np.zeros(len(self.edges) - 1)
        self.false_hist = np.zeros(len(self.edges) - 1)

    def update(self, score_map, mask):
        """Adds maps (H, W) or (B, H, W) in [0, 1] with masks of the same shape."""
        score_map = np.asarray(score_map, np.float64)
        mask = np.asarray(mask)
        if score_map.shape != mask.shape:
            raise ValueError(f"score map shape {score_map.shape} != mask shape {mask.shape}")
        self.true_hist += np.histogram(score_map[mask == 1], bins=self.edges)[0]
        self.false_hist += np.histogram(score_map[mask == 0], bins=self.edges)[0]

    def result(self):
        """{'pxap' (percent), 'best_iou' (percent), 'best_threshold'}."""
        tp = self.true_hist[::-1].cumsum()
        fp = self.false_hist[::-1].cumsum()
        fn = self.true_hist.sum() - tp
        if (tp + fn <= 0).all():
            raise RuntimeError("PxAP: no foreground pixel in the evaluated masks")
        nonzero = tp + fp != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
            iou = tp / (tp + fp + fn)
        pxap = float((precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100)
        # reversed cumulative bins: entry k counts scores >= edges[-2 - k]
        right = self.edges[:-1][::-1]
        best = int(np.nanargmax(iou))
        return {"pxap": pxap, "best_iou": float(iou[best] * 100), "best_threshold": float(right[best])}


class SaliencyMetrics:
    """Salient-object metrics as that literature reports them: max F-beta (beta^2 = 0.3), MAE, and
    the per-image IoU of the binarized map, each averaged over images.

    The definitions are those of PySODMetrics 1.6.2 (lartpang/PySODMetrics, MIT;
    ``py_sod_metrics/sod_metrics.py``: ``Fmeasure.cal_pr``, ``MAE``; ``fmeasurev2.py``: ``IOUHandler``),
    the evaluation code that SelfMask, TokenCut and most salient-object papers report with:

    - a map is first the 8-bit image it would be saved as, round(255 s); then, as MATLAB's
      ``mapminmax(im2double(.))``, divided by 255 and min-max normalized (a constant map is
      left as it is); the ground truth is the mask's foreground;
    - F-beta and IoU are computed per image for the 256 thresholds k = 0..255 on trunc(255 s)
      (precision of an empty prediction and IoU of an empty union count as 0); the per-image
      curves are averaged over images and their maximum is reported (max F-beta; IoU at the
      best single threshold), and the IoU also at a given threshold;
    - MAE is the mean absolute difference between the normalized map and the mask, per image.

    Unlike that code, mask pixels other than 0 and 1 (a trimap's border, 255) are left out of
    every count, as ``PxAP`` does.

    Example:
    >>> m = SaliencyMetrics()
    >>> m.update(np.array([[1.0, 0.5, 0.25, 0.0]]), np.array([[1, 0, 1, 0]]))
    >>> r = m.result(); round(r["max_f_beta"], 4), round(r["mae"], 4), round(r["per_image_iou"], 2)
    (0.8125, 0.3127, 66.67)
    """

    def __init__(self, beta2=0.3):
        self.beta2 = float(beta2)
        self.reset()

    def reset(self):
        """Forget everything seen so far."""
        self.f_curves, self.iou_curves, self.maes = [], [], []

    def update(self, saliency, mask):
        """Adds maps (H, W) or (B, H, W), floats in [0, 1], with masks of the same shape."""
        saliency = np.asarray(saliency, np.float64)
        mask = np.asarray(mask)
        if saliency.shape != mask.shape:
            raise ValueError(f"saliency map shape {saliency.shape} != mask shape {mask.shape}")
        if saliency.ndim == 2:
            saliency, mask = saliency[None], mask[None]
        for s, m in zip(saliency, mask):
            self._update_one(s, m)

    def _update_one(self, saliency, mask):
        valid = (mask == 0) | (mask == 1)
        gt = mask[valid] == 1
        pred = np.round(np.clip(saliency[valid], 0.0, 1.0) * 255).astype(np.uint8) / 255
        if pred.size:
            pred = min_max_normalized(pred, axis=None, keep_flat=True)
        self.maes.append(float(np.mean(np.abs(pred - gt))) if pred.size else 0.0)
        levels = (pred * 255).astype(np.uint8)
        bins = np.linspace(0, 256, 257)
        tps = np.cumsum(np.flip(np.histogram(levels[gt], bins=bins)[0]))  # index i: levels >= 255 - i
        fps = np.cumsum(np.flip(np.histogram(levels[~gt], bins=bins)[0]))
        positives = tps + fps
        truth = max(int(np.count_nonzero(gt)), 1)
        precision = tps / np.where(positives == 0, 1, positives)
        recall = tps / truth
        numerator = (1 + self.beta2) * precision * recall
        self.f_curves.append(numerator / np.where(numerator == 0, 1, self.beta2 * precision + recall))
        union = np.count_nonzero(gt) + fps
        self.iou_curves.append(np.divide(tps, union, out=np.zeros(len(union)), where=union != 0))

    def result(self, threshold=None):
        """{'max_f_beta', 'mae' (in [0, 1], as the literature prints them), 'per_image_iou' (percent, at
        the best single threshold), 'per_image_iou_threshold', 'images'}; with ``threshold`` (on the
        normalized map) also 'per_image_iou_at' there (at level ceil(255 t))."""
        if not self.maes:
            raise RuntimeError("SaliencyMetrics: no image evaluated")
        f_curve = np.mean(self.f_curves, axis=0)
        iou_curve = np.mean(self.iou_curves, axis=0)
        best = int(np.argmax(iou_curve))
        out = {"max_f_beta": float(f_curve.max()), "mae": float(np.mean(self.maes)),
               "per_image_iou": float(iou_curve[best] * 100), "per_image_iou_threshold": (255 - best) / 255,
               "images": len(self.maes)}
        if threshold is not None:
            level = int(np.clip(np.ceil(float(threshold) * 255 - 1e-9), 0, 255))
            out["per_image_iou_at"] = float(iou_curve[255 - level] * 100)
        return out


class ConfusionMatrix:
    """Multi-class segmentation: IoU per class and mIoU from a confusion matrix.

    Example:
    >>> cm = ConfusionMatrix(2)
    >>> cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    >>> cm.result()["miou"]
    50.0
    """

    def __init__(self, num_classes, ignore_index=255):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, prediction, target):
        """Adds label maps of the same shape (any shape); target pixels == ignore_index are skipped."""
        prediction = np.asarray(prediction).ravel().astype(np.int64)
        target = np.asarray(target).ravel().astype(np.int64)
        if prediction.shape != target.shape:
            raise ValueError(f"prediction has {prediction.size} pixels, target {target.size}")
        keep = target != self.ignore_index
        prediction, target = prediction[keep], target[keep]
        if target.size and (target.max() >= self.num_classes or target.min() < 0):
            raise ValueError(f"target labels must be in [0, {self.num_classes}) or {self.ignore_index}")
        if prediction.size and (prediction.max() >= self.num_classes or prediction.min() < 0):
            raise ValueError(f"predicted labels must be in [0, {self.num_classes})")
        self.matrix += np.bincount(target * self.num_classes + prediction,
                                   minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    def result(self):
        """{'iou': per-class percent (NaN for classes absent from both), 'miou': mean over the rest}."""
        diag = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - diag
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, diag / union, np.nan) * 100
        return {"iou": iou, "miou": float(np.nanmean(iou)) if np.any(union > 0) else 0.0}
