"""Training callbacks: polarity, per-epoch localization accuracy (by ``c2am_tf.evaluation.evaluate``), atomic checkpoints."""

import csv
import json
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from c2am_tf.evaluation.evaluate import evaluate, logged_values
from c2am_tf.maps.foreground import DEFAULT_THRESHOLDS
from c2am_tf.maps.viz import grid, overlay
from c2am_tf.runtime.distribute import broadcast_from_chief
from c2am_tf.training.run_folder import save_atomically
from c2am_tf.utils.files import make_folder, open_for_append, write_json_atomically

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
        self.model.set_polarity_from_statistic(broadcast_from_chief(self.model.distribute_strategy, value))
        after = float(self.model.polarity.numpy())
        logs["polarity"] = after
        if after != before:
            meaning = ("the head's map is high inside the image: it is the foreground" if after > 0 else
                       "the head's map is high on the border: it found the background, so 1 - map is the foreground")
            log.info("epoch %d: polarity %+d (border - centre = %.4f): %s", epoch + 1, after, value, meaning)


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


class LabelFreeThreshold(keras.callbacks.Callback):
    """Stores a threshold chosen without boxes in the model at the end of every epoch: ``choose(model)`` (the
    trainer's matched threshold, ``c2am_tf.maps.foreground.matched_threshold``). Runs before the
    ``LocalizationCallback`` of a run scored at that threshold (``fit --val-annotations``)."""

    def __init__(self, choose):
        super().__init__()
        self.choose = choose

    def on_epoch_end(self, epoch, logs=None):
        if np.isfinite(float((logs or {}).get("loss", 0.0))):
            # as LocalizationCallback's choice: the chief's, so the workers' models stay identical
            self.model.threshold.assign(broadcast_from_chief(self.model.distribute_strategy,
                                                             float(self.choose(self.model))))


class LocalizationCallback(keras.callbacks.Callback):
    """GT-known Loc on an eval split after each ``every`` epochs.

    Adds every metric's logged keys (``gt_known_loc``, ``best_threshold``, and ``pxap``, ``mask_iou`` where
    the eval split has masks; ``c2am_tf.evaluation.evaluate.METRICS``) to the epoch logs, stores the
    best threshold in the model, appends every threshold's value to
    ``per_threshold.csv`` and writes heatmap overlays to TensorBoard.

    ``at_stored``: score the model at the threshold it stores (set by a ``LabelFreeThreshold`` before it) and
    leave it there; ``gt_known_loc`` is then the value at that threshold. A few labelled images choose an
    epoch this way better than they choose a threshold among 19 (docs/results/own_photos.md).
    """

    def __init__(self, dataset, thresholds=DEFAULT_THRESHOLDS, every=1, out_dir=None, num_pictures=8,
                 at_stored=False):
        super().__init__()
        self.dataset = dataset
        self.thresholds = tuple(thresholds)
        self.every = max(int(every), 1)
        self.out_dir = out_dir
        self.num_pictures = num_pictures
        self.at_stored = bool(at_stored)
        self._writer = None
        self.last = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        last_epoch = epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every and not last_epoch or not np.isfinite(float(logs.get("loss", 0.0))):
            return
        result, examples = evaluate(self.model, self.dataset, self.thresholds, max_box_acc=False,
                                    keep=self.num_pictures, stored_threshold="model" if self.at_stored else None)
        self.last = result
        values = logged_values(result)  # every metric's logged keys (c2am_tf.evaluation.evaluate.METRICS)
        logs.update((key, value) for key, value, _ in values)
        more = "".join(f", {label} {value:.2f}" for _, value, label in values if label)
        if self.at_stored:
            logs["gt_known_loc"] = result["at_stored"]
            print(f"\nepoch {epoch + 1}: GT-known Loc {result['at_stored']:.2f} at its label-free threshold "
                  f"{result['stored_threshold']:.2f} (best {result['best']:.2f} at {result['best_threshold']:.2f})"
                  f"{more} ({result['total']} labelled images)", flush=True)
        else:
            # every worker evaluates the same images; the chief's choice makes the workers' models identical
            self.model.threshold.assign(broadcast_from_chief(self.model.distribute_strategy,
                                                             result["best_threshold"] or 0.5))
            print(f"\nepoch {epoch + 1}: GT-known Loc {result['best']:.2f} at threshold "
                  f"{result['best_threshold']:.2f}{more} ({result['total']} images)", flush=True)
        if self.out_dir:
            self._write(epoch, result, examples)

    def _write(self, epoch, result, examples):
        make_folder(self.out_dir)
        path = os.path.join(self.out_dir, "per_threshold.csv")
        new = not os.path.exists(path)
        with open_for_append(path) as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch"] + [f"{t:.2f}" for t in self.thresholds])
            w.writerow([epoch + 1] + [f"{v:.2f}" for v in result["per_threshold"]])
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.out_dir, "tb", "eval"))
        t_index = self.thresholds.index(result["best_threshold"]) if result["best_threshold"] in self.thresholds else len(self.thresholds) // 2
        with self._writer.as_default(step=epoch + 1):
            for key, value, _ in logged_values(result):
                tf.summary.scalar(key, value)
            if examples:
                pics = [overlay(im, m, [b[t_index]], g) for im, m, b, g in examples]
                tf.summary.image("heatmaps", grid(pics)[None], max_outputs=1)
        self._writer.flush()


class AtomicCheckpoint(keras.callbacks.Callback):
    """Writes ``last.keras`` every epoch and ``best.keras`` when ``monitor`` improves (or ties, with
    ``ties_to_later``).

    Files are written to a temporary name and renamed, so a run killed while
    saving never leaves a truncated model. The best value survives restarts in
    ``best.json``.
    """

    def __init__(self, out_dir, monitor="gt_known_loc", mode="max", ties_to_later=False):
        super().__init__()
        self.out_dir = out_dir
        self.monitor = monitor
        self.sign = 1 if mode == "max" else -1
        self.ties_to_later = bool(ties_to_later)  # an equal value replaces best.keras (the later epoch wins)
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
        if best is None or self.sign * value > self.sign * best or (self.ties_to_later and value == best):
            save_atomically(self.model, os.path.join(self.out_dir, "best.keras"))
            write_json_atomically(self._state_path, {"value": float(value), "epoch": epoch + 1})
