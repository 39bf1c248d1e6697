"""One training run, from a plain config: datasets, model, callbacks, ``model.fit``.

``c2am-tf fit`` (``c2am_tf.cli.fit``) turns command-line flags into a ``TrainConfig``; benchmarks
build one directly. Always under a ``tf.distribute`` strategy (``c2am_tf.runtime.distribute``):
``MirroredStrategy`` on one host (all local GPUs, or the CPU), or
``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several workers; then every
worker reads its own files, and only the chief writes the run's files.
"""

import dataclasses
import json
import logging
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from c2am_tf import data
from c2am_tf.backbones import LITE_FEATURES, backbone_entry, build_backbone, default_features, weights_choice
from c2am_tf.data.grouping import feature_clusters
from c2am_tf.data.tfds_source import TfdsNotPreparedError
from c2am_tf.data.transforms import resize_square
from c2am_tf.evaluation.evaluate import evaluate, logged_values
from c2am_tf.evaluation.label_free import label_free_report
from c2am_tf.inference.maps import predict_maps
from c2am_tf.maps.foreground import label_free_threshold
from c2am_tf.maps.geometry import EVAL_CROP, EVAL_FRAMES, EVAL_RESIZE, MIN_IMAGE_SIZE, STRIDE, check_band, default_frame
from c2am_tf.maps.normalize import min_max_normalized
from c2am_tf.models.c2am import c2am_presets
from c2am_tf.models.c2am.layers import ActivationHead
from c2am_tf.models.c2am.losses import VARIANTS
from c2am_tf.models.c2am.model import BACKBONE_BN_MODES, C2AM
from c2am_tf.models.c2am.optim import RECIPES, poly_sgd
from c2am_tf.presets import load_model
from c2am_tf.runtime.distribute import (
    CLUSTER_TIMEOUT,
    STRATEGIES,
    is_chief,
    make_strategy,
    num_workers,
    remove_worker_dir,
    sum_over_workers,
    worker_dir,
    worker_index,
)
from c2am_tf.training import run_folder
from c2am_tf.training.callbacks import (
    AtomicCheckpoint,
    LabelFreeThreshold,
    LocalizationCallback,
    NonFiniteLossGuard,
    PolarityCallback,
)
from c2am_tf.training.run_folder import save_atomically
from c2am_tf.utils.errors import ConfigError, InputError, RunError, reason
from c2am_tf.utils.files import atomic_path, write_json_atomically
from c2am_tf.utils.limits import check_timeout

log = logging.getLogger("c2am_tf")


@dataclasses.dataclass
class TrainConfig:
    """Everything one run needs.

    Defaults are the recipe measured best on the CUB dev benchmark (docs/results/cub.md):
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
    batch_groups: int = None  # > 0: each batch from one of this many k-means clusters; None: batch_groups_for
    box_band: float = 0.1  # the box rule's band (c2am_tf.maps.boxes.best_box_per_threshold), stored with the model
    eval_every: int = 1
    resize: int = 256
    crop: int = 224
    eval_resize: int = EVAL_RESIZE
    eval_crop: int = EVAL_CROP
    eval_batch_size: int = 16
    jit_compile: str = "auto"
    strategy: str = "auto"
    cluster_timeout: float = CLUSTER_TIMEOUT
    cache: bool = True
    synthetic_size: int = 160
    synthetic_count: int = None
    tfds_download: bool = False
    verbose: int = 1
    num_pictures: int = 8
    strict: bool = False  # an unusable box annotation is an error, not a skipped image
    init_preset: str = "none"  # a shipped head to start from (its head, polarity and threshold), "none" or "auto"
    val_annotations: str = None  # boxes of a few images (c2am_tf.data.box_files): they choose threshold and epoch
    val_images: str = None  # the folder their paths are relative to (default: data_dir of a folder dataset)

    def validate(self):
        """Raises ``ConfigError`` (naming the field) for a value no run can use."""
        _choice(self, "dataset", data.DATASETS)
        backbone_entry(self.backbone)  # a ConfigError naming the registry's names
        _choice(self, "loss_variant", VARIANTS)
        _choice(self, "recipe", RECIPES)
        _choice(self, "backbone_bn", BACKBONE_BN_MODES)
        _choice(self, "jit_compile", JIT_CHOICES)
        _choice(self, "strategy", STRATEGIES)
        if self.backbone_features is not None:
            _choice(self, "backbone_features", LITE_FEATURES)
        for name in ("epochs", "eval_batch_size", "num_pictures"):
            _integer(self, name, 1)
        _integer(self, "batch_size", 2, "the contrastive loss needs at least 2 images a batch")
        _integer(self, "eval_every", 0, "0 means never")
        if self.batch_groups is not None:
            _integer(self, "batch_groups", 0, "0 means random batches; leave it unset for the default")
        for name in ("steps_per_epoch", "synthetic_count"):
            if getattr(self, name) is not None:
                _integer(self, name, 1, "leave it unset for the default")
        for name in ("resize", "crop", "eval_resize", "eval_crop", "synthetic_size"):
            _integer(self, name, MIN_IMAGE_SIZE, f"the backbone has stride {STRIDE}")
        try:
            self.weights = weights_choice(self.weights)
        except FileNotFoundError:
            raise ConfigError("weights", f"file not found: {self.weights} (or use 'imagenet' or 'none')") from None
        for crop, resize in (("crop", "resize"), ("eval_crop", "eval_resize")):
            if getattr(self, crop) > getattr(self, resize):
                raise ConfigError(crop, f"{getattr(self, crop)} is larger than {resize} {getattr(self, resize)}: "
                                        "the crop is cut from the resized image")
        if self.init_preset == "auto":
            self.init_preset = auto_start(self)
        if self.lr is None:
            self.lr = WARM_LR if self.init_preset != "none" else COLD_LR
        _number(self, "lr", low=0.0, low_open=True)
        _number(self, "alpha", low=0.0, low_open=True)
        _number(self, "weight_decay", low=0.0)
        _number(self, "momentum", low=0.0, high=1.0)
        self.box_band = check_band(self.box_band)
        self.cluster_timeout = check_timeout(self.cluster_timeout, "cluster_timeout")
        if self.init_preset != "none":
            check_start(self.init_preset, self.backbone, self.backbone_features or default_features(self.backbone))
        if self.dataset == "folder" and not self.data_dir:
            raise ConfigError("data_dir", "is needed for dataset 'folder' (a folder of images)")
        if self.val_annotations is not None:
            self._check_val()
        elif self.val_images is not None:
            raise ConfigError("val_images", "goes with val_annotations (the folder their image paths are in)")
        return self

    def _check_val(self):
        if self.dataset not in UNLABELED_DATASETS:
            raise ConfigError("val_annotations", f"are for images without boxes ({', '.join(UNLABELED_DATASETS)}); "
                                                 f"dataset {self.dataset} is scored on its own test split")
        if self.val_images is None:
            if self.dataset != "folder" or not os.path.isdir(self.data_dir or ""):
                raise ConfigError("val_images", "is needed: the folder the annotated images are in (by default "
                                                "the data_dir of a folder dataset)")
            self.val_images = self.data_dir
        try:
            data.annotation_format(self.val_annotations)
        except (OSError, ValueError) as err:
            raise ConfigError("val_annotations", str(err)) from None


JIT_CHOICES = ("auto", "true", "false")
# init_preset "auto": a run on images without boxes adapts this shipped head at WARM_LR, any other run trains
# from scratch at COLD_LR (measured in docs/results/own_photos.md)
UNLABELED_DATASETS = ("folder", "masks", "tfrecord")
DEFAULT_START = "general_routed_lite0"
# a routed start gives a run its specialised head (the birds') when at least this share of the training images
# route there, else its general head: a folder that is mostly birds adapts the bird head
SPECIALIST_SHARE = 0.75
WARM_LR, COLD_LR = 1e-4, 1e-3
# a warm start's batches come from at most this many k-means clusters of look-alike images (batch_groups_for)
AUTO_GROUPS = 8
# Fields that do not change what a run computes: a resumed run may differ in these.
NOT_FINGERPRINTED = ("out", "verbose", "num_pictures", "strict", "strategy", "cluster_timeout")
# What a run writes under ``out`` (--overwrite removes these, and nothing else).
RUN_FILES = ("backup", "config.json", "resume.json", "summary.json", "best.keras", "best.json", "last.keras",
             "final.keras", "start.keras", "log.csv", "per_threshold.csv", "tb")


def _choice(cfg, name, choices):
    if getattr(cfg, name) not in choices:
        raise ConfigError(name, f"must be one of {', '.join(map(str, choices))}; got {getattr(cfg, name)!r}")


def _integer(cfg, name, low, hint=""):
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(name, f"must be an integer >= {low}; got {value!r}" + (f" ({hint})" if hint else ""))


def _number(cfg, name, low=None, high=None, low_open=False):
    value = getattr(cfg, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low)) and (high is None or value < high)
    if not ok:
        bounds = " and ".join(b for b in ((f"{'>' if low_open else '>='} {low:g}" if low is not None else ""),
                                          (f"< {high:g}" if high is not None else "")) if b)
        raise ConfigError(name, f"must be a finite number {bounds}; got {value!r}")


class DataError(InputError):
    """The run's data cannot be read: a missing or empty folder, a malformed annotation file."""


def fingerprint(cfg):
    """The config fields that define a run (what must match to resume it), as JSON reads them back."""
    return run_folder.fingerprint(dataclasses.asdict(cfg), NOT_FINGERPRINTED)


def claim_out_dir(cfg, overwrite=False, reuse=False):
    """Makes ``cfg.out`` this run's (``run_folder.claim``): the same settings resume, others raise
    ``RunConflictError``, as does a finished run unless ``reuse``; ``overwrite`` removes ``RUN_FILES`` only."""
    theirs = run_folder.stored_settings(cfg.out, fingerprint(TrainConfig()), NOT_FINGERPRINTED,
                                        markers=("backup", "final.keras", "last.keras"))
    run_folder.claim(cfg.out, theirs, fingerprint(cfg), RUN_FILES, overwrite, reuse)


def check_start(name, backbone, features):
    """``name`` when the shipped preset ``name`` can start a run on ``backbone`` with ``features`` (a routed preset
    starts it from one of its heads: ``choose_start``), or when ``name`` is a ``.keras`` file (an earlier run's
    model; ``choose_start`` loads and checks it). Else a ``ConfigError`` naming ``init_preset``."""
    if name.endswith(".keras"):
        if not os.path.isfile(name):
            raise ConfigError("init_preset", f"{name}: no such model file")
        return name
    presets = c2am_presets.head_presets()
    if name not in presets:
        raise ConfigError("init_preset", f"must be 'none', a shipped head preset ({', '.join(sorted(presets))}) or "
                                         f"a model file (.keras) of an earlier run; got {name!r}")
    entry = presets[name]
    if (entry["backbone"], entry["backbone_features"]) != (backbone, features):
        raise ConfigError("init_preset", f"{name} is a head on {entry['backbone']} ({entry['backbone_features']} "
                                         f"features); this run trains on {backbone} ({features})")
    return name


def auto_start(cfg):
    """``DEFAULT_START`` for a run on images without boxes whose backbone (with ImageNet weights) and features the
    preset's head fits (``check_start``); else "none"."""
    if cfg.dataset not in UNLABELED_DATASETS or cfg.weights != "imagenet":
        return "none"
    try:
        return check_start(DEFAULT_START, cfg.backbone, cfg.backbone_features or default_features(cfg.backbone))
    except ConfigError:
        return "none"


def training_maps(model, images):
    """Min-max normalized maps (N, h, w) of ``model`` for ``images`` (N, S, S, 3), in batches of 32."""
    return min_max_normalized(np.concatenate([predict_maps(model, images[i:i + 32])
                                              for i in range(0, len(images), 32)]))


def reference_images(cfg, count=256):
    """Up to ``count`` training images resized whole to the crop (N, S, S, 3): what the start is chosen on
    (``choose_start``) and the trained maps are compared with the start's on (``label_free_threshold``, the
    label-free report of ``c2am_tf.evaluation.label_free``)."""
    source = data.make_source(cfg.dataset, "train", cfg.data_dir, cfg.synthetic_size, cfg.synthetic_count, cfg.seed,
                              cfg.tfds_download, cfg.strict)
    return np.stack([resize_square(ex["image"], cfg.crop).numpy() for ex in source.take(count)])


def pick_head(shares, default, specialist_share=SPECIALIST_SHARE):
    """The routed head a run starts from: the head most images route to when it takes at least ``specialist_share``
    of them, else ``default`` (the general head).

    >>> pick_head([0.02, 0.98], default=0), pick_head([0.47, 0.53], default=0)
    (1, 0)
    """
    best = int(np.argmax(shares))
    return best if best != default and shares[best] >= specialist_share else default


def choose_start(cfg, images, backbone=None):
    """(preset arrays for ``assign_preset``, its name, why) of the head ``cfg.init_preset`` starts the run from.
    A routed preset gives the head its router sends the training ``images`` to (``pick_head``), on the features
    of ``backbone`` (the run's own, which ``check_start`` made the preset's backbone; with other weights than
    ImageNet's, or none given, the preset's own backbone is built for it)."""
    name = cfg.init_preset
    if name.endswith(".keras"):
        return single_start(cfg), name, "the model named"
    if "head_config" not in c2am_presets.list_presets()[name]:
        return single_start(cfg), name, "the preset named"
    stored = c2am_presets.head_file(name)  # read and checked once: it routes the images and gives the sub-head
    entry, arrays = stored
    if backbone is None or cfg.weights != "imagenet":
        backbone = build_backbone(entry["backbone"], weights="imagenet", features=entry["backbone_features"])
    features = np.concatenate([backbone(images[i:i + 32].astype(np.float32), training=False).numpy()
                               for i in range(0, len(images), 32)])
    head = c2am_presets.build_head(entry)
    if not head.built:  # a routed head's stored config builds it
        head.build(features.shape)
    c2am_presets.assign_head(head, arrays, name)
    heads = np.asarray(head.routed_heads(features))
    shares = np.bincount(heads, minlength=len(head.heads)) / max(len(heads), 1)
    index = pick_head(shares, c2am_presets.routed_default_head(name))
    return (c2am_presets.routed_sub_head(name, index, stored=stored), f"{name} head {index}",
            f"{shares[index]:.0%} of {len(images)} training images route to it")


def single_start(cfg):
    """The preset arrays of a start that needs no routing: an earlier run's model file (``model_start``) or a
    single-head preset. ``choose_start`` and ``build_model``'s default both take it from here."""
    name = cfg.init_preset
    return model_start(name, cfg) if name.endswith(".keras") else c2am_presets.head_file(name)[1]


def model_start(path, cfg):
    """The preset arrays (``assign_preset``) of an earlier run's single-head C2AM model ``path``: its head, polarity
    and threshold, so that a run goes on from it (on new photos, say). ``ConfigError`` naming ``init_preset`` for a
    file that is no such model on ``cfg``'s backbone."""
    try:
        model = load_model(path)
    except (OSError, ValueError) as err:
        raise ConfigError("init_preset", str(err)) from None
    if not isinstance(model, C2AM) or not isinstance(model.head, ActivationHead):
        raise ConfigError("init_preset", f"{path}: not a single-head C2AM model (what fit writes); a routed model "
                                         "starts a run through its preset name")
    if model.backbone.name != cfg.backbone:  # the features' channels are checked as the head takes the weights
        raise ConfigError("init_preset", f"{path} is a head on {model.backbone.name}; this run trains on "
                                         f"{cfg.backbone}")
    return c2am_presets.head_arrays(model)


def _jit(flag):
    if flag == "auto":
        # XLA wins on GPUs; on CPUs its depthwise convolutions are several times slower (docs/results/speed.md)
        return bool(tf.config.list_physical_devices("GPU"))
    return flag == "true"


def batch_groups_for(cfg, n):
    """How many k-means clusters of look-alike images a run of ``cfg`` on ``n`` images draws each batch from
    (``c2am_tf.data.grouping``; 0: random batches). ``cfg.batch_groups`` when set. By default a run that adapts a
    start takes ``min(AUTO_GROUPS, n // batch_size)``: a batch or more of images per cluster on average, so that a
    batch seldom holds an image twice; a run from scratch takes random batches, its measured recipe.

    Why: the contrastive loss pulls a batch's foregrounds together. In a diverse folder (ImageNet's 325 images of
    as many classes) a random batch pairs unrelated objects, and adapting the general head lost 1.4 GT-known
    points; batches of look-alike images gained instead (docs/results/own_photos.md).

    >>> warm = TrainConfig(init_preset="general_lite0")
    >>> batch_groups_for(warm, 325), batch_groups_for(warm, 80), batch_groups_for(warm, 20)
    (8, 5, 0)
    >>> batch_groups_for(TrainConfig(), 325), batch_groups_for(TrainConfig(batch_groups=3), 325)
    (0, 3)
    """
    if cfg.batch_groups is not None:
        return cfg.batch_groups
    if cfg.init_preset == "none":
        return 0
    k = min(AUTO_GROUPS, n // cfg.batch_size)
    return k if k > 1 else 0


def build_datasets(cfg, strategy, backbone):
    """(distributed train batches (as many as the run takes), steps per epoch, eval batches or None, the number
    of clusters the batches come from: ``batch_groups_for``). ``backbone``: the run's (``run_backbone``), whose
    features cluster the images.

    Each worker reads its own part of the training files (``c2am_tf.data.sharding``),
    batched per replica; the global batch is ``cfg.batch_size`` images.
    """
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise ConfigError("batch_size", f"{cfg.batch_size} does not split evenly over {replicas} replicas")
    if cfg.batch_size // replicas < 2 and replicas > 1:
        log.warning("%d images per replica: the batch statistics of the head's BatchNorm are synchronized, "
                    "the loss sees the whole global batch", cfg.batch_size // replicas)
    shard = data.Shard(num_workers(strategy), worker_index(strategy)) if num_workers(strategy) > 1 else None
    train_src = data.make_source(cfg.dataset, "train", cfg.data_dir, cfg.synthetic_size, cfg.synthetic_count,
                                 cfg.seed, cfg.tfds_download, cfg.strict, shard=shard)
    local = data.count_examples(train_src)
    n = sum_over_workers(strategy, local)
    if n < cfg.batch_size:
        raise ConfigError("batch_size", f"{cfg.batch_size} is more than the {n} readable training images "
                                        "(incomplete batches are dropped)")
    if n < 2 * cfg.batch_size and cfg.steps_per_epoch is None:
        log.warning("only %d training images for batch size %d", n, cfg.batch_size)
    steps = cfg.steps_per_epoch or max(n // cfg.batch_size, 1)

    # passes over this worker's files that the run consumes (+1: the batch Keras takes to build the model)
    per_worker = cfg.batch_size // num_workers(strategy)
    passes = -(-(steps * cfg.epochs + 1) * per_worker // local) + 1
    # a resumed run goes on with the images the killed one would have seen next
    done = resumed_epochs(cfg) * steps * per_worker
    groups, k = None, batch_groups_for(cfg, n)
    if k:
        groups = feature_clusters(train_src, backbone, k, cfg.crop, cfg.seed)
        log.info("batches from %d k-means clusters of %d images", k, len(groups))
        passes += -(-k * (per_worker - 1) // local)  # each cluster's last incomplete batch of the stream is dropped

    def train_fn(context):
        batches = data.train_pipeline(train_src, context.get_per_replica_batch_size(cfg.batch_size), cfg.resize,
                                      cfg.crop, cfg.cache, seed=cfg.seed, epochs=passes - done // local,
                                      start=done, groups=groups)
        # float32 (exact for 0..255): Keras all-reduces a first batch to build the model, and
        # collective ops of MultiWorkerMirroredStrategy take no uint8
        return batches.map(lambda images: tf.cast(images, tf.float32))

    train = strategy.distribute_datasets_from_function(train_fn)
    evaluation = None
    if cfg.val_annotations is not None:  # a user's few labelled images, scored whole as evaluate scores a folder
        eval_src = data.records_source(data.read_annotations(cfg.val_annotations, cfg.val_images, cfg.strict),
                                       f"images of {cfg.val_annotations}")
        evaluation = data.eval_pipeline(eval_src, cfg.eval_batch_size, *EVAL_FRAMES[default_frame("folder")],
                                        cfg.cache)
    elif cfg.dataset != "folder" and cfg.eval_every > 0:
        eval_src = data.make_source(cfg.dataset, "test", cfg.data_dir, cfg.synthetic_size,
                                    cfg.synthetic_count, cfg.seed, cfg.tfds_download, cfg.strict)
        evaluation = data.eval_pipeline(eval_src, cfg.eval_batch_size, cfg.eval_resize,
                                        cfg.eval_crop, cfg.cache)
    return train, steps, evaluation, k


def resumed_epochs(cfg):
    """Epochs a killed run of ``cfg`` finished in ``cfg.out``: its ``resume.json`` (``run_folder.EpochCount``); a
    folder written before that file existed counts its ``log.csv`` rows; 0 when nothing is there to resume."""
    target = os.path.join(cfg.out, "final.keras")
    if os.path.exists(run_folder.resume_files(target)[1]):
        return run_folder.epochs_done(target, fingerprint(cfg), epochs=cfg.epochs)
    return run_folder.legacy_epochs(cfg.out) if os.path.isdir(os.path.join(cfg.out, "backup")) else 0


def _features(cfg):
    return cfg.backbone_features or default_features(cfg.backbone)


def build_model(cfg, total_steps, start=None, backbone=None):
    """A compiled C2AM (call inside the strategy scope); ``start``: the preset arrays it starts from
    (``choose_start``; default: those of ``cfg.init_preset``, a single head); ``backbone``: the run's backbone
    when it was built already (``run_backbone``), else it is built here."""
    backbone = backbone if backbone is not None else run_backbone(cfg)
    if cfg.freeze_backbone:
        backbone.trainable = False  # only the head trains (parameter groups skip frozen layers)
    model = C2AM(backbone, alpha=cfg.alpha,
                 loss_variant=cfg.loss_variant, recipe=cfg.recipe,
                 weight_decay=cfg.weight_decay, backbone_bn=cfg.backbone_bn, box_band=cfg.box_band)
    if cfg.init_preset != "none":  # a shipped head's weights, polarity and calibrated threshold to start from
        model(np.zeros((1, cfg.crop, cfg.crop, 3), np.float32))  # builds the head, so it can take the weights
        arrays = start if start is not None else single_start(cfg)
        try:
            c2am_presets.assign_preset(model, arrays, cfg.init_preset)
        except ValueError as err:  # another head structure, or features of another width
            raise ConfigError("init_preset", f"{cfg.init_preset}: its head does not fit this run's model "
                                             f"({reason(err)})") from None
    model.fold_frozen_backbone()
    model.compile(optimizer=poly_sgd(cfg.lr, total_steps, cfg.momentum), jit_compile=_jit(cfg.jit_compile))
    return model


def run_backbone(cfg):
    """The backbone a run of ``cfg`` trains on (call inside the strategy scope)."""
    return build_backbone(cfg.backbone, weights=cfg.weights, features=_features(cfg))


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training step (for images/s)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t)


class NonFiniteLossError(RunError):
    """The loss became NaN or infinite; the checkpoints hold the last good epoch."""


def run_training(cfg, extra_callbacks=(), overwrite=False):
    """Trains, evaluates and saves; returns (model, history, summary dict).

    ``extra_callbacks`` run after the built-in ones (polarity, evaluation,
    checkpoints, logs, backup). The config is validated and the data read before
    anything is written; ``cfg.out`` holding a run with other settings raises
    ``RunConflictError`` unless ``overwrite``. A loss that turns non-finite stops
    the run with ``NonFiniteLossError``, keeping the last good checkpoints.

    Writes under ``cfg.out``: ``last.keras``, ``best.keras`` (by GT-known Loc),
    ``final.keras``, ``log.csv``, ``per_threshold.csv``, ``tb/`` (TensorBoard),
    ``config.json``, ``summary.json``, and ``backup/`` while a run is under
    way, from which a killed run resumes.
    """
    cfg.validate()
    # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow work.
    strategy = make_strategy(cfg.strategy, cfg.cluster_timeout)
    chief = is_chief(strategy)
    # the chief holds the run folder while it writes there: a second run into it is one line naming this one
    held = run_folder.lock(cfg.out).acquire() if chief else None
    try:
        if chief:
            claim_out_dir(cfg, overwrite)
        out = worker_dir(cfg.out, strategy)  # cfg.out on the chief, a temporary folder on the others
        if not chief:
            shutil.rmtree(out, ignore_errors=True)
        keras.utils.set_random_seed(cfg.seed)
        with strategy.scope():
            backbone = run_backbone(cfg)  # one per run: it clusters the images, routes the start and trains
        try:
            train, steps, evaluation, groups = build_datasets(cfg, strategy, backbone)
        except ConfigError:
            raise
        except (FileNotFoundError, ValueError) as err:
            hint = (" Use --data-dir for a raw folder, or --tfds-download (online)."
                    if isinstance(err, TfdsNotPreparedError) else "")
            raise DataError(f"{err}{hint}") from err
        try:
            return _fit(cfg, strategy, out, train, steps, evaluation, groups, backbone, extra_callbacks)
        finally:
            remove_worker_dir(cfg.out, strategy)
    finally:
        if held is not None:
            held.release()


def _fit(cfg, strategy, out, train, steps, evaluation, groups, backbone, extra_callbacks):
    images = reference_images(cfg)
    # a routed start routes the images on the run's own backbone: one Lite0 built per run, not two
    start, start_name, why = choose_start(cfg, images, backbone) if cfg.init_preset != "none" else \
        (None, "its start", "")
    with strategy.scope():
        model = build_model(cfg, steps * cfg.epochs, start, backbone)
    # only now: a run that fails to build its model (a bad --weights file) leaves nothing to block its retry
    write_json_atomically(os.path.join(out, "config.json"), dataclasses.asdict(cfg), indent=1)
    # the model is its start until fit restores a backup: what the trained model is compared with
    start_maps = training_maps(model, images) if cfg.init_preset != "none" else None
    start_threshold = float(model.threshold.numpy())
    timer, guard = StepTimer(), NonFiniteLossGuard()
    callbacks = [guard, PolarityCallback(), timer]
    # a few labelled images choose the epoch (the start included), each at its label-free threshold: choosing
    # among 19 thresholds, 5 to 50 of them lost to the label-free rule (docs/results/own_photos.md)
    label_free = bool(cfg.val_annotations) and start_maps is not None
    if label_free:
        callbacks.append(LabelFreeThreshold(
            lambda m: label_free_threshold(start_maps, start_threshold, training_maps(m, images))))
    loc = None
    if evaluation is not None:
        loc = LocalizationCallback(evaluation, every=max(cfg.eval_every, 1), out_dir=out,
                                   num_pictures=cfg.num_pictures, at_stored=label_free)
        callbacks.append(loc)
    callbacks += [
        AtomicCheckpoint(out, monitor="gt_known_loc" if loc else "loss", mode="max" if loc else "min",
                         ties_to_later=label_free),
        keras.callbacks.CSVLogger(os.path.join(out, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(out, "tb"), write_graph=False),
        # weights and optimizer: every worker restores the chief's backup (``cluster_backup``)
        keras.callbacks.BackupAndRestore(cluster_backup(cfg.out, out), double_checkpoint=True),
        run_folder.EpochCount(os.path.join(cfg.out, "final.keras"), fingerprint(cfg), write=out == cfg.out),
        *extra_callbacks,
    ]
    start_score = _score_start(start_name, model, evaluation, out) \
        if cfg.val_annotations and cfg.init_preset != "none" else None
    start = time.perf_counter()
    history = model.fit(train, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks, shuffle=False,
                        verbose=cfg.verbose)
    wall = time.perf_counter() - start
    if guard.failed_at is not None:
        # The backup holds the diverged weights: resuming from it would only repeat them.
        if out == cfg.out:
            shutil.rmtree(os.path.join(cfg.out, "backup"), ignore_errors=True)
            run_folder.finish(None, os.path.join(cfg.out, "final.keras"), keep_checkpoint=True)
        epoch, step, value = guard.failed_at
        raise NonFiniteLossError(f"the loss became {value} at epoch {epoch + 1}, step {step + 1}; training stopped. "
                                 f"{os.path.join(cfg.out, 'last.keras')} and best.keras hold the last good epoch, "
                                 "if any; try a lower learning rate")
    # the trained model's maps of the reference images, which the matched threshold and the label-free report read
    # (with labelled images, of the model they keep: below)
    trained_maps = None if cfg.val_annotations else training_maps(model, images)
    if cfg.init_preset != "none" and evaluation is None:
        # no boxes to choose a threshold on: the start's calibrated one, carried over by the foreground it keeps
        model.threshold.assign(label_free_threshold(start_maps, start_threshold, trained_maps))
        rule = (f"matched to {start_name}'s foreground at its threshold {start_threshold:.2f} on "
                f"{len(images)} training images, never above it")
    elif label_free:
        rule = (f"matched to {start_name}'s foreground at its threshold {start_threshold:.2f} on {len(images)} "
                f"training images, never above it, after each epoch; the labelled images of {cfg.val_annotations} "
                "chose the epoch")
    elif cfg.val_annotations:
        rule = f"the best GT-known Loc on the labelled images of {cfg.val_annotations}"
    elif loc is not None:
        rule = "the best GT-known Loc on the eval split's boxes"
    else:
        rule = "none: the default 0.5 (no boxes, no start to carry a threshold from)"
    summary = {
        "dataset": cfg.dataset,
        "replicas": strategy.num_replicas_in_sync,
        "workers": num_workers(strategy),
        "steps_per_epoch": steps,
        "epochs": cfg.epochs,
        "wall_s": wall,
        "polarity": float(model.polarity.numpy()),
        "threshold": float(model.threshold.numpy()),
        "threshold_rule": rule,
        "start": f"{start_name} ({why})" if cfg.init_preset != "none" else "none (from scratch)",
        "batches": f"each from one of {groups} k-means clusters of look-alike images" if groups else "random",
    }
    later = timer.times[5:] or timer.times  # the first steps trace the graph and fill the cache
    summary["images_per_s"] = cfg.batch_size / float(np.median(later)) if later else None
    summary["timed_steps"] = len(later)  # this process's steps: a resumed run times only the epochs it ran
    summary["epochs_run"] = len(history.history.get("loss", []))  # wall_s and images_per_s are of these
    margins = history.history.get("border_minus_center")
    if margins:  # how clearly the map tells border from centre: the polarity's evidence
        summary["polarity_margin"] = float(margins[-1])
    if cfg.val_annotations:  # the labelled images choose the epoch, and whether training beat its start
        model = _keep_best(cfg, out, loc, start_name, start_score, summary)
        trained_maps = training_maps(model, images)  # the kept model: the start or the best epoch
    else:
        save_atomically(model, os.path.join(out, "final.keras"))
    if out == cfg.out:
        run_folder.finish(None, os.path.join(out, "final.keras"), keep_checkpoint=True)  # last.keras stays
    if loc is not None and loc.last is not None:
        values = dict((key, value) for key, value, _ in logged_values(loc.last))
        summary["gt_known_loc"] = values.pop("gt_known_loc")
        summary["per_threshold"] = [float(v) for v in loc.last["per_threshold"]]
        summary.update((key, value) for key, value in values.items() if key != "best_threshold")
    report = label_free_report(trained_maps, float(model.threshold.numpy()),
                               summary.get("polarity_margin"), start_maps, start_threshold, start_name)
    summary["label_free"] = {k: v for k, v in report.items() if k != "verdict"}
    summary["verdict"] = report["verdict"]
    for warning in report["warnings"]:
        log.warning("%s: %s", cfg.out, warning)
    write_json_atomically(os.path.join(out, "summary.json"), summary, indent=1)
    return model, history, summary


def cluster_backup(run_out, out):
    """The ``BackupAndRestore`` folder of a worker writing in ``out``: the run's own (``run_out/backup``) on the
    chief; on another worker a copy of it in its temporary folder, so that every worker restores the chief's
    backup while only the chief's is written and kept."""
    backup = os.path.join(out, "backup")
    if out != run_out:
        shutil.rmtree(backup, ignore_errors=True)
        if os.path.isdir(os.path.join(run_out, "backup")):
            shutil.copytree(os.path.join(run_out, "backup"), backup)
    return backup


def _score_start(start_name, model, evaluation, out):
    """The starting head's GT-known Loc on the labelled images at its own calibrated threshold; the start is saved
    as ``start.keras``, the model ``final.keras`` becomes if no epoch beats it there."""
    result, _ = evaluate(model, evaluation, max_box_acc=False, stored_threshold="model")
    save_atomically(model, os.path.join(out, "start.keras"))
    log.info("%s on the %d labelled images: GT-known Loc %.2f at its threshold %.2f", start_name, result["total"],
             result["at_stored"], result["stored_threshold"])
    return result


def _keep_best(cfg, out, loc, start_name, start_score, summary):
    """``final.keras``: the best epoch on the labelled images (``best.keras``), or the start (``start.keras``) when
    training did not beat it there. Returns that model; ``summary`` says which, and both scores."""
    with open(os.path.join(out, "best.json")) as f:
        best = json.load(f)
    summary["val_images"] = int(loc.last["total"]) if loc is not None and loc.last else None
    summary["val_gt_known_loc"] = {"trained": float(best["value"]), "trained_epoch": int(best["epoch"])}
    chosen = "best.keras"
    if start_score is not None:
        summary["val_gt_known_loc"]["start"] = float(start_score["at_stored"])
        if start_score["at_stored"] > best["value"]:  # a tie keeps the trained model: the label-free default
            chosen = "start.keras"
    summary["kept"] = (f"the start, {start_name}: training did not beat it on the labelled images"
                       if chosen == "start.keras" else f"epoch {best['epoch']}, the best on the labelled images")
    if chosen == "start.keras":
        log.warning("%s: the trained model scored %.2f on the %s labelled images, its start %s %.2f: final.keras is "
                    "the start", cfg.out, best["value"], summary["val_images"], start_name, start_score["at_stored"])
    with atomic_path(os.path.join(out, "final.keras")) as tmp:
        shutil.copyfile(os.path.join(out, chosen), tmp)
    kept = load_model(os.path.join(out, "final.keras"))
    summary["threshold"] = float(kept.threshold.numpy())
    summary["polarity"] = float(kept.polarity.numpy())
    return kept
