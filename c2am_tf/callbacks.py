"""Training callbacks: polarity, per-epoch localization accuracy, atomic checkpoints."""

import csv
import json
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from c2am_tf.boxes import DEFAULT_THRESHOLDS, GTKnownLoc, best_box_per_threshold
from c2am_tf.files import write_json_atomically
from c2am_tf.metrics import MaxBoxAcc, PxAP, wsol_thresholds
from c2am_tf.viz import grid, overlay

log = logging.getLogger("c2am_tf")


class PolarityCallback(keras.callbacks.Callback):
    """Stores the map's polarity in the model at the end of every epoch.

    The statistic is the epoch-wide mean of (border mean - interior mean) of the
    head's map over every training batch (``border_minus_center`` in the logs),
    instead of the authors' border check on one sample of one batch, which can
    flip a good map.
    """

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("border_minus_center")
        if value is None:
            return
        before = float(self.model.polarity.numpy())
        self.model.set_polarity_from_statistic(value)
        after = float(self.model.polarity.numpy())
        logs["polarity"] = after
        if after != before:
            log.info("epoch %d: polarity %+d (border - center = %.4f)", epoch + 1, after, value)


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite batch loss and remembers where
    (``failed_at`` = (epoch, step, value)); ``AtomicCheckpoint`` then writes nothing more."""

    failed_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("loss")
        if value is not None and not np.isfinite(float(value)) and self.failed_at is None:
            self.failed_at = (getattr(self, "_epoch", 0), batch, float(value))
            self.model.stop_training = True


def predict_maps(model, images):
    """Foreground-high maps (B, h, w) as numpy for a batch of images."""
    return np.asarray(model.predict_on_batch(images))[..., 0]


def upsample_normalized(maps, size):
    """Maps (B, h, w) -> (B, size, size) bilinear, each min-max normalized (constant -> 0)."""
    up = tf.image.resize(np.asarray(maps, np.float32)[..., None], (size, size), method="bilinear")
    up = up.numpy()[..., 0].astype(np.float64)
    lo = up.min(axis=(1, 2), keepdims=True)
    span = up.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (up - lo) / np.where(span > 0, span, 1), 0.0)


def evaluate_localization(model, dataset, thresholds=DEFAULT_THRESHOLDS, iou_threshold=0.5,
                          inclusive=False, keep=0):
    """GT-known Loc (and PxAP / mask IoU when the batches carry masks) of ``model``.

    ``dataset`` yields (images, boxes) or (images, boxes, masks) in the eval
    frame. Returns ``(result, examples)``: the GTKnownLoc result dict (plus
    'pxap', 'mask_iou', 'mask_threshold' with masks) and up to ``keep``
    (image, map, boxes per threshold, gt boxes) tuples for pictures.
    """
    acc = GTKnownLoc(thresholds, iou_threshold, inclusive)
    pxap = None
    examples = []
    for batch in dataset:
        images, gt = batch[0], batch[1]
        maps = predict_maps(model, images)
        factor = images.shape[2] / maps.shape[2]
        boxes = np.stack([best_box_per_threshold(m, thresholds, factor) for m in maps])
        acc.update(boxes, gt.numpy())
        if len(batch) > 2:
            pxap = pxap or PxAP()
            pxap.update(upsample_normalized(maps, images.shape[1]), batch[2].numpy())
        for i in range(min(keep - len(examples), len(maps))):
            examples.append((images[i].numpy(), maps[i], boxes[i], gt[i].numpy()))
    result = acc.result()
    if pxap is not None:
        masks = pxap.result()
        result.update(pxap=masks["pxap"], mask_iou=masks["best_iou"], mask_threshold=masks["best_threshold"])
    return result, examples


def evaluate_max_box_acc(model, dataset, multi_contour=True, step=0.01):
    """wsolevaluation's MaxBoxAcc (V2 when ``multi_contour``) of ``model`` over ``dataset``.

    Maps are upsampled to the image size (bilinear) and min-max normalized, as
    wsolevaluation does with CAMs; boxes are those of the eval frame.
    """
    metric = MaxBoxAcc(wsol_thresholds(step), multi_contour=multi_contour)
    for batch in dataset:
        images, gt = batch[0], batch[1].numpy()
        maps = upsample_normalized(predict_maps(model, images), images.shape[1])
        metric.update_batch(maps, gt)
    return metric.result()


class LocalizationCallback(keras.callbacks.Callback):
    """GT-known Loc on an eval split after each ``every`` epochs.

    Adds ``gt_known_loc`` and ``best_threshold`` to the epoch logs, stores the
    best threshold in the model, appends every threshold's value to
    ``per_threshold.csv`` and writes heatmap overlays to TensorBoard.
    """

    def __init__(self, dataset, thresholds=DEFAULT_THRESHOLDS, every=1, out_dir=None, num_pictures=8):
        super().__init__()
        self.dataset = dataset
        self.thresholds = tuple(thresholds)
        self.every = max(int(every), 1)
        self.out_dir = out_dir
        self.num_pictures = num_pictures
        self._writer = None
        self.last = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        last_epoch = epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every and not last_epoch or not np.isfinite(float(logs.get("loss", 0.0))):
            return
        result, examples = evaluate_localization(self.model, self.dataset, self.thresholds,
                                                 keep=self.num_pictures)
        self.last = result
        self.model.threshold.assign(result["best_threshold"] or 0.5)
        logs["gt_known_loc"] = result["best"]
        logs["best_threshold"] = result["best_threshold"]
        masks = ""
        if "pxap" in result:
            logs["pxap"], logs["mask_iou"] = result["pxap"], result["mask_iou"]
            masks = f", PxAP {result['pxap']:.2f}, best mask IoU {result['mask_iou']:.2f}"
        print(f"\nepoch {epoch + 1}: GT-known Loc {result['best']:.2f} at threshold "
              f"{result['best_threshold']:.2f}{masks} ({result['total']} images)", flush=True)
        if self.out_dir:
            self._write(epoch, result, examples)

    def _write(self, epoch, result, examples):
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "per_threshold.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch"] + [f"{t:.2f}" for t in self.thresholds])
            w.writerow([epoch + 1] + [f"{v:.2f}" for v in result["per_threshold"]])
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.out_dir, "tb", "eval"))
        t_index = self.thresholds.index(result["best_threshold"]) if result["best_threshold"] in self.thresholds else len(self.thresholds) // 2
        with self._writer.as_default(step=epoch + 1):
            tf.summary.scalar("gt_known_loc", result["best"])
            tf.summary.scalar("best_threshold", result["best_threshold"])
            for key in ("pxap", "mask_iou"):
                if key in result:
                    tf.summary.scalar(key, result[key])
            if examples:
                pics = [overlay(im, m, [b[t_index]], g) for im, m, b, g in examples]
                tf.summary.image("heatmaps", grid(pics)[None], max_outputs=1)
        self._writer.flush()


def save_atomically(model, path):
    """Saves ``model`` to ``path`` (.keras) through a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Writes ``last.keras`` every epoch and ``best.keras`` when ``monitor`` improves.

    Files are written to a temporary name and renamed, so a run killed while
    saving never leaves a truncated model. The best value survives restarts in
    ``best.json``.
    """

    def __init__(self, out_dir, monitor="gt_known_loc", mode="max"):
        super().__init__()
        self.out_dir = out_dir
        self.monitor = monitor
        self.sign = 1 if mode == "max" else -1
        self._state_path = os.path.join(out_dir, "best.json")

    def _best(self):
        if os.path.exists(self._state_path):
            with open(self._state_path) as f:
                return json.load(f)["value"]
        return None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not np.isfinite(float(logs.get("loss", 0.0))):
            log.warning("epoch %d: non-finite loss, %s/last.keras keeps the previous epoch", epoch + 1, self.out_dir)
            return
        save_atomically(self.model, os.path.join(self.out_dir, "last.keras"))
        value = logs.get(self.monitor)
        if value is None:
            return
        best = self._best()
        if best is None or self.sign * value > self.sign * best:
            save_atomically(self.model, os.path.join(self.out_dir, "best.keras"))
            write_json_atomically(self._state_path, {"value": float(value), "epoch": epoch + 1})
