"""One training run, from a plain config: datasets, model, callbacks, ``model.fit``.

``train/fit.py`` turns command-line flags into a ``TrainConfig``; benchmarks
build one directly. Always under ``tf.distribute.MirroredStrategy`` (all local
GPUs, or the CPU).
"""

import dataclasses
import json
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from c2am_tf import data
from c2am_tf.backbones import build_backbone
from c2am_tf.callbacks import AtomicCheckpoint, LocalizationCallback, PolarityCallback, save_atomically
from c2am_tf.model import C2AM
from c2am_tf.optim import poly_sgd

log = logging.getLogger("c2am_tf")


@dataclasses.dataclass
class TrainConfig:
    """Everything one run needs.

    Defaults are the recipe measured best on the CUB dev benchmark (README):
    EfficientNet-Lite0 head features (1280 ch), frozen backbone, the paper's
    parameter groups (head x10 / x20) at lr 1e-3, 5 epochs, on the offline
    synthetic data. For the authors' setup use ``backbone_features="concat"``,
    ``freeze_backbone=False``, ``lr=1e-4``, ``recipe="reference"``, 20 epochs.
    """

    dataset: str = "synthetic"
    data_dir: str = None
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    alpha: float = 0.05
    loss_variant: str = "reference"
    recipe: str = "paper"
    backbone_bn: str = "frozen"
    freeze_backbone: bool = True
    backbone_features: str = None  # None: "head" for EfficientNet-Lite (measured best), else the only choice
    out: str = "runs/c2am"
    seed: int = 1
    steps_per_epoch: int = None
    eval_every: int = 1
    resize: int = 256
    crop: int = 224
    eval_resize: int = 480
    eval_crop: int = 448
    eval_batch_size: int = 16
    jit_compile: str = "auto"
    cache: bool = True
    synthetic_size: int = 160
    synthetic_count: int = None
    tfds_download: bool = False
    verbose: int = 1
    num_pictures: int = 8


def _jit(flag):
    if flag == "auto":
        # XLA wins on GPUs; on CPUs it runs EfficientNet's depthwise convs ~14x slower.
        return bool(tf.config.list_physical_devices("GPU"))
    return flag in (True, "true", "1", "yes", "on")


def count_examples(source):
    """Number of elements of a finite source (cheap: counts without decoding where possible)."""
    n = int(source.cardinality())
    if n >= 0:
        return n
    return int(source.map(lambda ex: 0).reduce(0, lambda a, _: a + 1))


def build_datasets(cfg):
    """(train batches (repeated), steps per epoch, eval batches or None)."""
    train_src = data.make_source(cfg.dataset, "train", cfg.data_dir, cfg.synthetic_size,
                                 cfg.synthetic_count, cfg.seed, cfg.tfds_download)
    n = count_examples(train_src)
    if n < 2 * cfg.batch_size and cfg.steps_per_epoch is None:
        log.warning("only %d training images for batch size %d", n, cfg.batch_size)
    steps = cfg.steps_per_epoch or max(n // cfg.batch_size, 1)
    train = data.train_pipeline(train_src, cfg.batch_size, cfg.resize, cfg.crop, cfg.cache,
                                seed=cfg.seed).repeat()
    evaluation = None
    if cfg.dataset != "folder" and cfg.eval_every > 0:
        eval_src = data.make_source(cfg.dataset, "test", cfg.data_dir, cfg.synthetic_size,
                                    cfg.synthetic_count, cfg.seed, cfg.tfds_download)
        evaluation = data.eval_pipeline(eval_src, cfg.eval_batch_size, cfg.eval_resize,
                                        cfg.eval_crop, cfg.cache)
    return train, steps, evaluation


def build_model(cfg, total_steps):
    """A compiled C2AM (call inside the strategy scope)."""
    features = cfg.backbone_features or ("head" if cfg.backbone.startswith("efficientnet_lite") else "concat")
    backbone = build_backbone(cfg.backbone, weights=cfg.weights, features=features)
    if cfg.freeze_backbone:
        backbone.trainable = False  # only the head trains (parameter groups skip frozen layers)
    model = C2AM(backbone, alpha=cfg.alpha,
                 loss_variant=cfg.loss_variant, recipe=cfg.recipe,
                 weight_decay=cfg.weight_decay, backbone_bn=cfg.backbone_bn)
    model.compile(optimizer=poly_sgd(cfg.lr, total_steps, cfg.momentum), jit_compile=_jit(cfg.jit_compile))
    return model


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training step (for images/s)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def run_training(cfg, extra_callbacks=()):
    """Trains, evaluates and saves; returns (model, history, summary dict).

    ``extra_callbacks`` run after the built-in ones (polarity, evaluation,
    checkpoints, logs, backup).

    Writes under ``cfg.out``: ``last.keras``, ``best.keras`` (by GT-known Loc),
    ``final.keras``, ``log.csv``, ``per_threshold.csv``, ``tb/`` (TensorBoard),
    ``config.json``, ``summary.json``, and ``backup/`` while a run is under
    way, from which a killed run resumes.
    """
    keras.utils.set_random_seed(cfg.seed)
    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=1)
    strategy = tf.distribute.MirroredStrategy()
    train, steps, evaluation = build_datasets(cfg)
    with strategy.scope():
        model = build_model(cfg, steps * cfg.epochs)
    timer = StepTimer()
    callbacks = [PolarityCallback(), timer]
    loc = None
    if evaluation is not None:
        loc = LocalizationCallback(evaluation, every=cfg.eval_every, out_dir=cfg.out,
                                   num_pictures=cfg.num_pictures)
        callbacks.append(loc)
    callbacks += [
        AtomicCheckpoint(cfg.out, monitor="gt_known_loc" if loc else "loss",
                         mode="max" if loc else "min"),
        keras.callbacks.CSVLogger(os.path.join(cfg.out, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(cfg.out, "tb"), write_graph=False),
        keras.callbacks.BackupAndRestore(os.path.join(cfg.out, "backup"), double_checkpoint=True),
        *extra_callbacks,
    ]
    start = time.perf_counter()
    history = model.fit(train, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks, shuffle=False,
                        verbose=cfg.verbose)
    wall = time.perf_counter() - start
    save_atomically(model, os.path.join(cfg.out, "final.keras"))
    later = timer.times[5:] or timer.times
    summary = {
        "dataset": cfg.dataset,
        "replicas": strategy.num_replicas_in_sync,
        "steps_per_epoch": steps,
        "epochs": cfg.epochs,
        "wall_s": wall,
        "images_per_s": cfg.batch_size / float(np.median(later)) if later else None,
        "polarity": float(model.polarity.numpy()),
        "threshold": float(model.threshold.numpy()),
    }
    if loc is not None and loc.last is not None:
        summary["gt_known_loc"] = loc.last["best"]
        summary["per_threshold"] = [float(v) for v in loc.last["per_threshold"]]
        for key in ("pxap", "mask_iou"):
            if key in loc.last:
                summary[key] = loc.last[key]
    with open(os.path.join(cfg.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return model, history, summary
