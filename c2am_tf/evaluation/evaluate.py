"""The one evaluation driver: a model (or a boxes file) and an annotated dataset -> every reported number.

Callbacks, benchmarks and ``c2am-tf evaluate`` all call ``evaluate`` (or ``evaluate_boxes`` for a boxes
JSON made elsewhere). One pass over the data gives:

- GT-known Loc at every map threshold, at the model's stored threshold, and the best (IoU > 0.5 with
  ANY GT box of the image: the paper's definition);
- Top-1 / Top-5 Loc when a classifier is given (class right AND box right), beside the classifier's
  own top-1 / top-5 accuracy;
- MaxBoxAccV2 (wsolevaluation: IoU 30/50/70, 101 thresholds, every contour's box);
- PxAP and the best mask IoU when the batches carry masks, and the salient-object metrics
  (max F-beta, MAE, per-image IoU; ``c2am_tf.evaluation.metrics.SaliencyMetrics``). A mask model
  (``c2am_tf.models.masks.mask_model``) is scored on its masks as it makes them: refined at the image's size.

Batches are dicts from ``c2am_tf.data.eval_pipeline``: 'image' (B, S, S, 3), 'boxes' (B, G, 4) in that
frame, and optionally 'mask' (B, S, S) and 'label' (B,). The metric work of one batch runs in a
helper thread while the model predicts the next one (OpenCV and numpy release the GIL), so the
model's forward pass stays the bottleneck.
"""

import concurrent.futures
import dataclasses
import os
import time
from typing import Optional

import numpy as np
from tqdm import tqdm

from c2am_tf import data
from c2am_tf.evaluation.metrics import MaxBoxAcc, PxAP, SaliencyMetrics, wsol_thresholds
from c2am_tf.inference.maps import check_cam_weight, localization_maps, resize_maps, top_k_classes
from c2am_tf.maps.boxes import GTKnownLoc, best_box_per_threshold
from c2am_tf.maps.boxes_json import read_boxes
from c2am_tf.maps.foreground import DEFAULT_THRESHOLDS
from c2am_tf.maps.geometry import check_band, default_frame
from c2am_tf.maps.normalize import min_max_normalized
from c2am_tf.models.psol.regressor import predict_boxes
from c2am_tf.models.settings import model_box_band
from c2am_tf.presets import load_classifier
from c2am_tf.utils.errors import as_input_error
from c2am_tf.utils.files import write_json_atomically

# wsolevaluation scores CAMs at 224 x 224; MaxBoxAcc's 101 thresholds x contours cost 4x more at 448.
MAX_BOX_ACC_SIZE = 224


def upsample_normalized(maps, size):
    """Maps (B, h, w) -> (B, size, size) bilinear, each min-max normalized (constant -> 0)."""
    return min_max_normalized(resize_maps(maps, (size, size)).astype(np.float64))


@dataclasses.dataclass
class Batch:
    """What one batch gives every accumulator: ``boxes`` (B, T, 4) at the driver's thresholds and
    ``correct`` (B, T), GT-known's verdict per image and threshold; ``maps`` (B, h, w) and the batch dict
    ``batch`` ('image', 'boxes', optionally 'mask'); the classifier's ``top_k`` (B, k) and ``labels`` (B,);
    ``fine_maps``, a mask model's maps at the image's size. A boxes-only batch (a boxes file, a regressor)
    has no maps: the map metrics skip it."""

    boxes: np.ndarray
    correct: np.ndarray
    batch: dict
    maps: Optional[np.ndarray] = None
    top_k: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    fine_maps: Optional[np.ndarray] = None


class Accumulator:
    """One metric of the evaluation driver. Adding a metric is one subclass listed in ``METRICS``: ``evaluate``,
    ``evaluate_boxes`` and the training callback (``LocalizationCallback``) run it, its ``result`` keys go into
    the result dict (``c2am-tf evaluate --json``), its ``lines`` into what the command prints, and its
    ``logged`` keys into the trainer's epoch logs, TensorBoard and ``summary.json``.

    ``option``: the ``Evaluation`` flag that switches it on (None: always on).
    ``logged``: ((epoch-log key, result key, label of the epoch line or None), ...).
    """

    option = None
    logged = ()

    def __init__(self, evaluation):
        self.evaluation = evaluation

    def update(self, step):
        """Adds one ``Batch``."""
        raise NotImplementedError

    def result(self, out):
        """The keys this metric adds to the result (``out``: those of the metrics before it)."""
        raise NotImplementedError

    @staticmethod
    def lines(result):
        """This metric's printed lines, from a result dict (none when its keys are absent)."""
        return []


class GTKnown(Accumulator):
    """GT-known Loc at every threshold (and at the stored one): the image's box at t overlaps ANY of its GT
    boxes with IoU > 0.5 (the paper's definition). The driver's verdicts (``Batch.correct``) are its own."""

    logged = (("gt_known_loc", "best", None), ("best_threshold", "best_threshold", None))

    def update(self, step):
        self.evaluation.gt_known.add(step.correct)

    def result(self, out):
        ev = self.evaluation
        out = ev.gt_known.result()
        out["thresholds"] = list(ev.thresholds)
        out["box_band"] = ev.band
        if ev.stored_threshold is not None:
            out["stored_threshold"] = float(ev.stored_threshold)
            out["at_stored"] = float(out["per_threshold"][ev.stored_index()])
        return out

    @staticmethod
    def lines(result):
        per = " ".join(f"{t:.2f}:{v:.1f}" for t, v in zip(result.get("thresholds", []), result["per_threshold"]))
        lines = [f"images: {result['total']}",
                 f"GT-known Loc: best {result['best']:.2f} at threshold {result['best_threshold']:.2f}"
                 + (f"; at the stored threshold {result['stored_threshold']:.2f}: {result['at_stored']:.2f}"
                    if "at_stored" in result else "")
                 + (f" (boxes averaged over a band of {result['box_band']:.2f})" if result.get("box_band") else "")]
        if per:
            lines.append(f"  per threshold: {per}")
        return lines


class TopKLoc(Accumulator):
    """Top-1 / Top-5 Loc (class right AND box right) and the classifier's own top-1 / top-5, for batches that
    carry the classifier's top classes and the true labels (a label < 0: not classified)."""

    def __init__(self, evaluation):
        super().__init__(evaluation)
        self.top1_loc = np.zeros(len(evaluation.thresholds), np.int64)
        self.top5_loc = np.zeros(len(evaluation.thresholds), np.int64)
        self.top1 = self.top5 = self.classified = 0

    def update(self, step):
        if step.top_k is None or step.labels is None:
            return
        labels = np.asarray(step.labels)
        known = labels >= 0
        hit1 = (step.top_k[:, 0] == labels) & known
        hit5 = np.any(step.top_k == labels[:, None], axis=1) & known
        self.top1_loc += (step.correct & hit1[:, None]).sum(axis=0)
        self.top5_loc += (step.correct & hit5[:, None]).sum(axis=0)
        self.top1 += int(hit1.sum())
        self.top5 += int(hit5.sum())
        self.classified += int(known.sum())

    def result(self, out):
        if not self.classified:
            return {}
        ev, total = self.evaluation, max(out["total"], 1)
        best_i = {t: i for i, t in enumerate(ev.thresholds)}.get(out["best_threshold"], 0)
        added = {"top1_loc": float(self.top1_loc[best_i] / total * 100),
                 "top5_loc": float(self.top5_loc[best_i] / total * 100),
                 "top1": self.top1 / self.classified * 100, "top5": self.top5 / self.classified * 100}
        if ev.stored_threshold is not None:
            added["top1_loc_at_stored"] = float(self.top1_loc[ev.stored_index()] / total * 100)
            added["top5_loc_at_stored"] = float(self.top5_loc[ev.stored_index()] / total * 100)
        return added

    @staticmethod
    def lines(result):
        if "top1_loc" not in result:
            return []
        return [f"Top-1 Loc {result['top1_loc']:.2f}, Top-5 Loc {result['top5_loc']:.2f} (best threshold)"
                + (f"; at the stored threshold {result['top1_loc_at_stored']:.2f} / "
                   f"{result['top5_loc_at_stored']:.2f}" if "top1_loc_at_stored" in result else ""),
                f"classifier: top-1 {result['top1']:.2f}, top-5 {result['top5']:.2f}"]


class MaxBoxAccV2(Accumulator):
    """MaxBoxAccV2 (wsolevaluation: IoU 30/50/70, 101 thresholds, every contour's box), on maps upsampled to
    at most ``MAX_BOX_ACC_SIZE``."""

    option = "max_box_acc"

    def __init__(self, evaluation):
        super().__init__(evaluation)
        self.metric = MaxBoxAcc(wsol_thresholds(), multi_contour=True)

    def update(self, step):
        if step.maps is None:
            return
        size = int(np.shape(step.batch["image"])[1])
        side = min(size, MAX_BOX_ACC_SIZE)
        gt = np.asarray(step.batch["boxes"], np.float32)
        self.metric.update_batch(upsample_normalized(step.maps, side), gt * (side / size))

    def result(self, out):
        if not self.metric.count:
            return {}
        r = self.metric.result()
        return {"max_box_acc_v2": r["max_box_acc_v2"],
                "max_box_acc": {int(k): float(v) for k, v in r["max_box_acc"].items()}}

    @staticmethod
    def lines(result):
        if "max_box_acc_v2" not in result:
            return []
        per_iou = ", ".join(f"IoU {k}: {v:.2f}" for k, v in result["max_box_acc"].items())
        return [f"MaxBoxAccV2 {result['max_box_acc_v2']:.2f} ({per_iou})"]


class MaskMetrics(Accumulator):
    """PxAP and the best mask IoU, and the salient-object metrics (max F-beta, MAE, per-image IoU), for
    batches that carry masks; a mask model's ``fine_maps`` are scored in place of its maps."""

    logged = (("pxap", "pxap", "PxAP"), ("mask_iou", "mask_iou", "best mask IoU"))

    def __init__(self, evaluation):
        super().__init__(evaluation)
        self.pxap = self.saliency = None

    def update(self, step):
        if step.maps is None or "mask" not in step.batch:
            return
        self.pxap = self.pxap or PxAP()
        self.saliency = self.saliency or SaliencyMetrics()
        size = int(np.shape(step.batch["image"])[1])
        upsampled = upsample_normalized(step.maps if step.fine_maps is None else step.fine_maps, size)
        masks = np.asarray(step.batch["mask"])
        self.pxap.update(upsampled, masks)
        self.saliency.update(upsampled, masks)

    def result(self, out):
        if self.pxap is None:
            return {}
        masks = self.pxap.result()
        added = dict(pxap=masks["pxap"], mask_iou=masks["best_iou"], mask_threshold=masks["best_threshold"])
        sal = self.saliency.result(self.evaluation.stored_threshold)
        added.update(max_f_beta=sal["max_f_beta"], mae=sal["mae"], per_image_iou=sal["per_image_iou"],
                     per_image_iou_threshold=sal["per_image_iou_threshold"])
        if "per_image_iou_at" in sal:
            added["per_image_iou_at_stored"] = sal["per_image_iou_at"]
        return added

    @staticmethod
    def lines(result):
        lines = []
        if "pxap" in result:
            lines.append(f"PxAP {result['pxap']:.2f}, best mask IoU {result['mask_iou']:.2f} "
                         f"at {result['mask_threshold']:.2f}")
        if "max_f_beta" in result:
            lines.append(f"salient objects: max F-beta {result['max_f_beta']:.3f}, MAE {result['mae']:.3f}, "
                         f"per-image IoU {result['per_image_iou']:.2f} at {result['per_image_iou_threshold']:.2f}"
                         + (f" ({result['per_image_iou_at_stored']:.2f} at the stored threshold)"
                            if "per_image_iou_at_stored" in result else ""))
        return lines


# The driver's metrics, in the order of the result's keys and the printed lines.
METRICS = (GTKnown, TopKLoc, MaxBoxAccV2, MaskMetrics)


def logged_values(result):
    """[(epoch-log key, value, label)] of every metric's ``logged`` keys present in ``result``: what the
    training callback logs, writes to TensorBoard and the trainer to ``summary.json``."""
    return [(key, result[name], label) for metric in METRICS for key, name, label in metric.logged
            if name in result]


class Evaluation:
    """Streaming accumulators (``METRICS``) for every number ``evaluate`` reports.

    Args:
        thresholds: map thresholds of GT-known / Top-k Loc (fractions of the map's maximum).
        stored_threshold: the model's own threshold, reported separately (added to ``thresholds``).
        max_box_acc: also compute MaxBoxAccV2 (101 thresholds, multi contour).
        iou_threshold: GT-known's IoU bar (correct when IoU > it).
        band: the box rule's band (``c2am_tf.maps.boxes.best_box_per_threshold``); MaxBoxAccV2 keeps
            wsolevaluation's rule (every contour's box at each threshold).

    Example (one image whose map is exactly its box):
    >>> ev = Evaluation(thresholds=[0.5], max_box_acc=False)
    >>> m = np.zeros((1, 4, 4)); m[0, 1:3, 1:3] = 1
    >>> boxes = ev.update(m, {"boxes": np.array([[[16., 16., 48., 48.]]]), "image": np.zeros((1, 64, 64, 3))},
    ...                   top_k=np.array([[3, 1, 2, 0, 4]]), labels=np.array([1]))
    >>> boxes.tolist()  # (B, T, 4): the box at each threshold, in the image frame
    [[[16.0, 16.0, 48.0, 48.0]]]
    >>> r = ev.result(); (r["best"], r["top1_loc"], r["top5_loc"], r["top5"])
    (100.0, 0.0, 100.0, 100.0)
    """

    def __init__(self, thresholds=DEFAULT_THRESHOLDS, stored_threshold=None, max_box_acc=True, iou_threshold=0.5,
                 band=0.0):
        thresholds = [float(t) for t in thresholds]
        if stored_threshold is not None:
            # a threshold stored as float32 (0.3499999940) is the listed 0.35
            stored_threshold = round(float(stored_threshold), 6)
            if not any(abs(t - stored_threshold) < 1e-6 for t in thresholds):
                thresholds = sorted(thresholds + [stored_threshold])
        self.stored_threshold = stored_threshold
        self.band = check_band(band)
        self.gt_known = GTKnownLoc(thresholds, iou_threshold)
        self.thresholds = self.gt_known.thresholds
        options = {"max_box_acc": max_box_acc}
        self.metrics = [metric(self) for metric in METRICS if metric.option is None or options[metric.option]]

    def stored_index(self):
        """The index of the stored threshold among ``thresholds``."""
        return min(range(len(self.thresholds)), key=lambda i: abs(self.thresholds[i] - self.stored_threshold))

    def update(self, maps, batch, top_k=None, labels=None, fine_maps=None):
        """Adds a batch: maps (B, h, w) foreground-high, the batch dict, and optionally the classifier's
        (B, k) top classes with the true ``labels`` (B,). ``fine_maps`` (B, S, S), a mask model's maps
        refined at the image's size, replace the maps for the mask metrics. Returns the boxes (B, T, 4)
        in the batch's frame."""
        size = int(np.shape(batch["image"])[1])
        boxes = np.stack([best_box_per_threshold(m, self.thresholds, size / m.shape[0], self.band) for m in maps])
        self._add(boxes, batch, maps, top_k, labels, fine_maps)
        return boxes

    def update_boxes(self, boxes, batch, top_k=None, labels=None):
        """Adds a batch of predicted boxes (B, T, 4), one per threshold, in the batch's frame."""
        self._add(boxes, batch, None, top_k, labels, None)

    def _add(self, boxes, batch, maps, top_k, labels, fine_maps):
        correct = self.gt_known.per_image_correct(boxes, np.asarray(batch["boxes"], np.float32))
        step = Batch(boxes, correct, batch, maps, top_k, labels, fine_maps)
        for metric in self.metrics:
            metric.update(step)

    def result(self):
        """A flat dict: 'per_threshold', 'best', 'best_threshold', 'total', 'at_stored' (when a threshold
        is stored), 'top1_loc'/'top5_loc' at the best threshold (plus '_at_stored'), 'top1'/'top5',
        'max_box_acc_v2' with 'max_box_acc' per IoU, 'pxap', 'mask_iou', 'mask_threshold', and the
        salient-object metrics 'max_f_beta', 'mae', 'per_image_iou' (+ '_threshold', '_at_stored')."""
        out = {}
        for metric in self.metrics:
            out.update(metric.result(out))
        return out


def evaluate(model, dataset, thresholds=DEFAULT_THRESHOLDS, classifier=None, classifier_size=None,
             max_box_acc=True, flip=False, keep=0, stored_threshold="model", progress=False, cam_weight=0.0,
             scales=(1.0,), box_band="model"):
    """Every metric of ``model`` on ``dataset`` (dict batches, see the module docstring) in one pass.

    Returns ``(result, examples)``: ``Evaluation.result()`` and up to ``keep`` (image, map, boxes per
    threshold, gt boxes) tuples for pictures. ``stored_threshold``: "model" (the model's own, when it
    stores one), a number, or None (report the ``thresholds`` only). ``flip`` and ``scales``: see
    ``predict_maps``. ``cam_weight`` > 0 scores ``fuse_cams`` of the map and the classifier's CAM of
    each image's true class (the batches need labels): as CAM is scored, GT-known uses the true class, and Top-1 / Top-5 Loc count an image only
    when that class is the classifier's first / among its five, so they use the same map. ``box_band``:
    "model" (the model's own ``box_band``, 0 when it has none) or a number (``Evaluation``'s ``band``).
    """
    check_cam_weight(cam_weight, classifier)  # before any batch is read
    if isinstance(stored_threshold, str):
        stored_threshold = float(np.asarray(model.threshold)) if hasattr(model, "threshold") else None
    if isinstance(box_band, str):
        box_band = model_box_band(model)
    ev = Evaluation(thresholds, stored_threshold, max_box_acc, band=box_band)
    refines = getattr(model, "refinement", "none") != "none"

    def update(maps, host, top_k, labels):
        # A mask model's refinement is per-image OpenCV work: it runs in the metric thread, not the model's.
        fine = (np.stack([model.edge_refine(im.astype(np.uint8), m) for im, m in zip(host["image"], maps)])
                if refines and "mask" in host else None)
        ev.update(maps, host, top_k, labels, fine)

    examples = []
    bar = None
    if progress:
        bar = tqdm(desc="evaluate", unit="img")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = None
        for batch in dataset:
            images = batch["image"]
            if cam_weight and "label" not in batch:
                raise ValueError("cam_weight needs each image's class label: this dataset has none")
            maps, top_k = localization_maps(model, images, classifier, classifier_size, cam_weight,
                                            batch["label"].numpy() if cam_weight else None, flip, scales)
            host = {k: v.numpy() for k, v in batch.items() if k in ("image", "boxes", "mask")}
            if pending is not None:
                pending.result()
            pending = pool.submit(update, maps, host, top_k, batch["label"].numpy() if "label" in batch else None)
            if len(examples) < keep:
                for i in range(min(keep - len(examples), len(maps))):
                    examples.append((host["image"][i], maps[i], None, host["boxes"][i]))
            if bar is not None:
                bar.update(len(maps))
        if pending is not None:
            pending.result()
    if bar is not None:
        bar.close()
    if examples:
        size = examples[0][0].shape[0]
        examples = [(im, m, best_box_per_threshold(m, ev.thresholds, size / m.shape[0], ev.band), g)
                    for im, m, _, g in examples]
    return ev.result(), examples


def choose_threshold(model, dataset, thresholds=DEFAULT_THRESHOLDS, flip=False, classifier=None,
                     classifier_size=None, cam_weight=0.0, scales=(1.0,), box_band="model"):
    """The map threshold with the best GT-known Loc on ``dataset``: a held-out annotated set (never the
    images the numbers are reported on), as wsolevaluation tunes on its separate full-supervision split."""
    result, _ = evaluate(model, dataset, thresholds, classifier, classifier_size, max_box_acc=False, flip=flip,
                         stored_threshold=None, cam_weight=cam_weight, scales=scales, box_band=box_band)
    return result["best_threshold"]


def evaluate_regressor(regressor, dataset, classifier=None, classifier_size=None):
    """GT-known and Top-1/Top-5 Loc of a box regressor (``c2am_tf.models.psol.regressor``): one box per image."""
    ev = Evaluation(thresholds=[0.5], max_box_acc=False)
    for batch in dataset:
        images = batch["image"]
        boxes = predict_boxes(regressor, images, int(images.shape[1]))[:, None, :]
        top_k = top_k_classes(classifier, images, classifier_size) if classifier is not None else None
        ev.update_boxes(boxes, {"boxes": batch["boxes"].numpy()}, top_k,
                        batch["label"].numpy() if "label" in batch else None)
    return ev.result()


def _key(path):
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def evaluate_boxes(boxes, records, iou_threshold=0.5):
    """GT-known Loc (and Top-1/Top-5 Loc where records carry 'top5' class lists) of a boxes file's boxes.

    Args:
        boxes: a ``c2am_tf.boxes/v1`` dict (``boxes_json.read_boxes``) with boxes in original pixels.
        records: ``[(path, gt boxes in the same pixels, class)]`` (``c2am_tf.data.wsol_records`` and friends).

    Images are matched by path (absolute), then by unique file name. Returns the result dict with
    'total' (matched), 'missing' (records without a box).
    """
    by_path = {_key(r["path"]): r for r in boxes["images"]}
    by_name = {}
    for r in boxes["images"]:
        by_name.setdefault(os.path.basename(r["path"]), []).append(r)
    ev = Evaluation(thresholds=[float(boxes.get("threshold") or 0.5)], max_box_acc=False, iou_threshold=iou_threshold)
    missing = 0
    for path, gt, label in records:
        record = by_path.get(_key(path))
        if record is None:
            same = by_name.get(os.path.basename(path), [])
            record = same[0] if len(same) == 1 else None
        if record is None:
            missing += 1
            continue
        top_k = np.asarray([record["top5"]]) if "top5" in record else None
        ev.update_boxes(np.asarray([[record["box"]]], np.float32), {"boxes": np.asarray([gt], np.float32)},
                        top_k, np.asarray([label]) if top_k is not None else None)
    out = ev.result()
    out["missing"] = missing
    return out


def evaluate_dataset(dataset, split="test", data_dir=None, model=None, boxes_file=None, annotations=None, frame=None,
                     batch_size=16, strict=False, classifier=None, classifier_size=None, threshold=None, **options):
    """``c2am-tf evaluate``'s workflow: the result of ``model`` (or of the boxes file ``boxes_file``) on a
    dataset's annotated ``split`` (``c2am_tf.data.eval_dataset``; a folder's boxes in ``annotations``), with
    'seconds' and, for a model, 'frame' (default: the dataset's, ``default_frame``). ``classifier``: a name or file
    (``c2am_tf.presets.load_classifier``). ``threshold``: report there instead of at the model's stored threshold,
    which was chosen for the map alone (so a map fused with a CAM, ``cam_weight``, has none). ``options``:
    ``evaluate``'s (thresholds, flip, scales, cam_weight, box_band, max_box_acc). A dataset that cannot be read is
    an ``InputError``."""
    start = time.perf_counter()
    with as_input_error():  # a dataset, annotation or boxes file that cannot be used: one line
        if boxes_file is not None:
            result = evaluate_boxes(read_boxes(boxes_file), data.box_records(dataset, data_dir, split, strict,
                                                                             annotations))
        else:
            frame = frame or default_frame(dataset)
            batches = data.eval_dataset(dataset, split, data_dir, batch_size, frame, cache=False, strict=strict,
                                        annotations=annotations)
            classifier, classifier_size = load_classifier(classifier, classifier_size)
            stored = threshold if threshold is not None else (None if options.get("cam_weight") else "model")
            options["box_band"] = model_box_band(model, options.get("box_band"))
            result, _ = evaluate(model, batches, classifier=classifier, classifier_size=classifier_size,
                                 progress=True, stored_threshold=stored, **options)
            result["frame"] = frame
    result["seconds"] = time.perf_counter() - start
    return result


def write_result(path, result):
    """Writes ``result`` (``evaluate_dataset``'s) as JSON at ``path``, atomically; arrays become lists."""
    write_json_atomically(path, {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in result.items()}, indent=1)


def format_result(result):
    """The result as a few readable lines (what ``c2am-tf evaluate`` prints): each metric's ``lines``."""
    lines = [line for metric in METRICS for line in metric.lines(result)]
    if result.get("missing"):
        lines.append(f"images without a box in the file: {result['missing']}")
    return "\n".join(lines)
