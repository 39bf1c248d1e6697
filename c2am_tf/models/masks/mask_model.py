"""Foreground masks at stride 4 from a C2AM model, self-trained on its own pseudo-masks (no labels anywhere).

C2AM's map is at stride 16 (28 x 28 at 448) and peaks on an object's most distinctive parts.
``MaskModel`` wraps a trained C2AM model (the teacher) and adds, in one graph:

1. a prior: the teacher's map spread over the objects by its own feature prototypes
   (``prototype_maps``: eq. 1's foreground and background vectors re-classify every feature vector);
2. a light FPN decoder on the frozen backbone's stride-4, 8 and 16 features and that prior, which
   predicts a correction of the prior's logit at stride 4. It starts as the prior upsampled and
   learns from the prior refined along the image's edges: as soft targets (the default; measured
   better on DUTS) or as pseudo-masks cut with an ignored band (``pseudo_masks``), as SelfMask
   (Shin et al., 2022) learns from its own pseudo-masks; further rounds learn from the decoder's own
   refined, flip-averaged masks (``self_train``).

``c2am-tf fit-masks`` (``train/fit_masks.py``) trains it. A mask model is a foreground-high map model
like ``C2AM``: ``model(images)`` is (B, H/4, W/4, 1) in [0, 1]; it stores its threshold (0.5 of the
peak, the box rule's form, fixed in advance) and its edge-aware refinement (``c2am_tf.maps.edges``, applied
at the image's size outside the graph), and everything that takes a C2AM map (boxes, ``map_to_mask``,
``predict``, the SavedModel ``masks`` signature, TFLite, the background cue of ``refine``) takes its map.
"""

import cv2
import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tqdm import tqdm

from c2am_tf.backbones import layers_at_strides
from c2am_tf.maps.edges import REFINEMENTS, check_refinement, edge_refined_map
from c2am_tf.maps.normalize import flat_maps, min_max_normalized
from c2am_tf.models.c2am import c2am_presets
from c2am_tf.models.c2am.model import C2AM

DECODER_STRIDE = 4
# Pseudo-mask band, as fractions of the teacher map's range (min-max normalized): above HIGH is
# foreground, at or below LOW background, between is ignored. Fixed in advance, not tuned on masks:
# LOW/HIGH are the ends of the box rule's usual cut-offs (0.2-0.5 of the peak).
PSEUDO_LOW, PSEUDO_HIGH = 0.2, 0.5
IGNORE = 255


def _conv_bn_relu(x, filters, kernel, name):
    x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=name + "_conv")(x)
    x = keras.layers.BatchNormalization(name=name + "_bn")(x)
    return keras.layers.ReLU(name=name + "_relu")(x)


@keras.saving.register_keras_serializable(package="c2am_tf")
class ResizeLike(keras.layers.Layer):
    """[x, reference] -> x resized bilinearly to the reference's height and width (shapes known only at
    run time: any input size, in eager, ``tf.function``, SavedModel and TFLite graphs alike)."""

    def call(self, inputs):

        x, reference = inputs
        return tf.image.resize(x, tf.shape(reference)[1:3], method="bilinear")

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return tuple(reference[:3]) + (x[-1],)


def prototype_maps(features, score_maps, low=None, high=None):
    """(B, h, w, 1) maps in [0, 1] that re-classify every feature vector by its cosine similarity to the
    image's foreground and background prototypes, as eq. 1 pools them from C2AM's map: the mean
    L2-normalized feature of the pixels ``pseudo_masks`` calls foreground (above ``high`` of the map's
    range) and of those it calls background (at or below ``low``). C2AM's map peaks on the most
    distinctive parts; the prototypes spread it over the object's extent. TensorFlow ops: the same
    function runs eagerly on arrays and inside the mask model's graph (SavedModel, TFLite).

    Args:
        features: (B, h, w, C), on the maps' grid.
        score_maps: (B, h, w) or (B, h, w, 1) foreground maps.

    Each output is min-max normalized; an image whose map has no foreground or no background pixel
    (a flat map) keeps its normalized map.

    >>> f = np.zeros((1, 2, 2, 2), np.float32); f[0, :, 0] = [1, 0]; f[0, :, 1] = [0, 1]
    >>> m = np.array([[[1.0, 0.0], [0.3, 0.0]]], np.float32)   # one peak pixel, one low column
    >>> np.asarray(prototype_maps(f, m))[..., 0].round(2).tolist()   # the whole first column is foreground
    [[[1.0, 0.0], [1.0, 0.0]]]
    """

    low = PSEUDO_LOW if low is None else low
    high = PSEUDO_HIGH if high is None else high
    z = tf.convert_to_tensor(features, tf.float32)
    m = tf.convert_to_tensor(score_maps, tf.float32)
    if m.shape.rank == 3:
        m = m[..., None]
    u = normalized_tf(m)
    fg = tf.cast(u > high, tf.float32)
    bg = tf.cast(u <= low, tf.float32)
    zn = tf.math.l2_normalize(z, axis=-1, epsilon=1e-12)

    def prototype(weights):
        v = tf.reduce_sum(zn * weights, axis=[1, 2]) / tf.maximum(tf.reduce_sum(weights, axis=[1, 2]), 1.0)
        return tf.math.l2_normalize(v, axis=-1, epsilon=1e-12)[:, None, None, :]

    s = tf.reduce_sum(zn * (prototype(fg) - prototype(bg)), axis=-1, keepdims=True)
    usable = (tf.reduce_sum(fg, axis=[1, 2, 3]) > 0) & (tf.reduce_sum(bg, axis=[1, 2, 3]) > 0)
    return tf.where(usable[:, None, None, None], normalized_tf(s), u)


def normalized_tf(maps):
    """Each map of (B, h, w, 1) min-max normalized to [0, 1] (a flat map: zeros): the graph twin of
    ``c2am_tf.maps.normalize.min_max_normalized``."""

    lo = tf.reduce_min(maps, axis=[1, 2, 3], keepdims=True)
    span = tf.reduce_max(maps, axis=[1, 2, 3], keepdims=True) - lo
    return tf.math.divide_no_nan(maps - lo, span)


@keras.saving.register_keras_serializable(package="c2am_tf")
class Prototypes(keras.layers.Layer):
    """[features (B, h, w, C), map (B, h, w, 1)] -> the prototype map (``prototype_maps``)."""

    def call(self, inputs):
        features, score_map = inputs
        return prototype_maps(features, score_map)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[1])


@keras.saving.register_keras_serializable(package="c2am_tf")
class Logit(keras.layers.Layer):
    """log(p / (1 - p)) with p clipped to [1e-4, 1 - 1e-4]: the prior's logit, to which the decoder adds."""

    def call(self, p):

        p = ops.clip(p, 1e-4, 1.0 - 1e-4)
        return ops.log(p) - ops.log(1.0 - p)


def build_decoder(channels, width=64, fine_width=32):
    """FPN decoder: [stride-4, stride-8, stride-16 features (channel counts ``channels``), the prior
    (B, h16, w16, 1)] -> foreground probability (B, h4, w4, 1) = sigmoid(logit(prior upsampled) + a
    correction). The prior enters every level; the correction's last layer starts at zero, so an
    untrained decoder returns the prior upsampled."""
    s4, s8, s16 = (keras.Input((None, None, c), name=f"stride{s}") for c, s in zip(channels, (4, 8, 16)))
    prior = keras.Input((None, None, 1), name="prior")
    x = _conv_bn_relu(keras.layers.Concatenate(name="with_prior16")([s16, prior]), width, 1, "lat16")
    lateral = _conv_bn_relu(s8, width, 1, "lat8")
    x = keras.layers.Add(name="merge8")([ResizeLike(name="up8")([x, lateral]), lateral])
    x = keras.layers.Concatenate(name="with_prior8")([x, ResizeLike(name="prior8")([prior, lateral])])
    x = _conv_bn_relu(x, width, 3, "smooth8")
    x = _conv_bn_relu(x, fine_width, 1, "narrow8")
    lateral = _conv_bn_relu(s4, fine_width, 1, "lat4")
    prior4 = ResizeLike(name="prior4")([prior, lateral])
    x = keras.layers.Add(name="merge4")([ResizeLike(name="up4")([x, lateral]), lateral])
    x = keras.layers.Concatenate(name="with_prior4")([x, prior4])
    x = _conv_bn_relu(x, fine_width, 3, "smooth4")
    correction = keras.layers.Conv2D(1, 1, kernel_initializer="zeros", name="correction")(x)
    logit = keras.layers.Add(name="logit")([Logit(name="prior_logit")(prior4), correction])
    out = keras.layers.Activation("sigmoid", name="foreground")(logit)
    return keras.Model([s4, s8, s16, prior], out, name="mask_decoder")


@keras.saving.register_keras_serializable(package="c2am_tf")
class MaskModel(keras.Model):
    """Images (B, H, W, 3) in 0..255 -> foreground probability (B, H/4, W/4, 1), from a C2AM model.

    Args:
        teacher: a ``C2AM`` model; its backbone (frozen) is shared, its map is the prior's seed.
        width: decoder channels at strides 16-8; ``fine_width`` at stride 4.
        refinement: the edge-aware refinement masks get at image size (``c2am_tf.maps.edges.REFINEMENTS``).
        taps: the stride-4 and stride-8 layer names (default: found on a probe).

    The threshold (``model.threshold``, 0.5 unless set) is the box rule's fraction of the map's peak,
    the same policy as ``C2AM``'s; it is a weight and travels with the saved model.

    Example:
    >>> from c2am_tf.backbones import build_backbone
    >>> from c2am_tf.models.c2am.model import C2AM
    >>> model = MaskModel(C2AM(build_backbone("tiny", weights=None)))
    >>> model(np.zeros((1, 64, 64, 3))).shape
    TensorShape([1, 16, 16, 1])
    """

    def __init__(self, teacher, width=64, fine_width=32, refinement="guided", taps=None, **kwargs):
        super().__init__(**kwargs)
        self.width, self.fine_width = int(width), int(fine_width)
        self.refinement = check_refinement(refinement)
        self.teacher = teacher
        backbone = teacher.backbone
        self.taps = list(taps or layers_at_strides(backbone, (4, 8)))
        outputs = [backbone.get_layer(n).output for n in self.taps] + [backbone.output]
        self.pyramid = keras.Model(backbone.input, outputs, name="pyramid")
        self.prototypes = Prototypes(name="prototypes")
        self.decoder = build_decoder([int(o.shape[-1]) for o in outputs], self.width, self.fine_width)
        self.threshold = self.add_weight(name="threshold", shape=(), initializer=keras.initializers.Constant(0.5),
                                         trainable=False)
        self.build(tuple(backbone.input_shape))

    def build(self, input_shape):
        self.built = True

    def features(self, images):
        """[stride-4, stride-8, stride-16 features, the prior (B, h16, w16, 1)] of a batch: what the decoder
        reads. The backbone and the teacher are frozen (inference mode)."""
        s4, s8, s16 = self.pyramid(images, training=False)
        _, _, p = self.teacher.disentangler(s16, training=False)
        return [s4, s8, s16, self.prototypes([s16, self.teacher.orient(p)])]

    def call(self, images, training=False):
        """Foreground probability (B, H/4, W/4, 1) of images (B, H, W, 3) in 0..255."""
        return self.decoder(self.features(images), training=training)

    def edge_refine(self, image, score_map):
        """The stored refinement of one map against its image: float32 (H, W) in [0, 1]."""
        return edge_refined_map(image, score_map, self.refinement)

    def get_config(self):
        config = super().get_config()
        config.update(teacher=keras.saving.serialize_keras_object(self.teacher), width=self.width,
                      fine_width=self.fine_width, refinement=self.refinement, taps=self.taps)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)

    @classmethod
    def from_preset(cls, name, weights="imagenet", directory=None):
        """A mask model shipped with the package (offline, no training): its teacher, a shipped C2AM preset, and
        the decoder and threshold of its preset file (``save_mask_preset``; in ``directory`` if given);
        ``weights`` goes to the teacher's backbone. ``PresetError`` for an unknown name, a head preset or a
        changed file.

        >>> model = MaskModel.from_preset("general_masks_lite0")  # doctest: +SKIP
        >>> model(np.zeros((1, 448, 448, 3))).shape  # doctest: +SKIP
        TensorShape([1, 112, 112, 1])
        """
        entry, arrays = c2am_presets.head_file(name, directory)
        if c2am_presets.preset_kind(entry) != "masks":
            raise c2am_presets.PresetError(f"preset {name} is a C2AM head, not a mask model: load it with "
                                           "C2AM.from_preset")
        model = cls(C2AM.from_preset(entry["teacher"], weights), entry["width"], entry["fine_width"],
                    entry["refinement"], entry["taps"], name=f"masks_{name}")
        c2am_presets.assign_variables({f"decoder/{v.path}": v for v in model.decoder.weights}, arrays, name,
                                      "decoder")
        model.threshold.assign(float(arrays["threshold"]))
        return model


def save_mask_preset(model, name, teacher, directory=c2am_presets.HERE, real_image=None, **metadata):
    """Writes a mask model (``model``, whose teacher is the shipped preset ``teacher``) as the preset ``name``:
    the decoder's weights in float16 (half the bytes; ``model`` takes the rounded values first, so the reference
    maps are the preset's own) and the threshold, and its entry (``c2am_presets.register_preset``)."""
    entry = c2am_presets.list_presets().get(teacher)
    if entry is None or c2am_presets.preset_kind(entry) != "head":
        raise c2am_presets.PresetError(f"teacher {teacher!r} is not a shipped C2AM head preset")
    stored, own = c2am_presets.head_file(teacher)[1], c2am_presets.head_arrays(model.teacher)
    if set(stored) != set(own) or any(not np.array_equal(stored[k], own[k]) for k in stored):
        raise c2am_presets.PresetError(f"the mask model's teacher is not the preset {teacher}: a mask preset loads "
                                       "its decoder onto that preset")
    arrays = {}
    for v in model.decoder.weights:
        arrays[f"decoder/{v.path}"] = np.asarray(v).astype(np.float16)
        v.assign(arrays[f"decoder/{v.path}"].astype(np.float32))
    arrays["threshold"] = np.asarray(model.threshold, np.float32)
    fields = {"kind": "masks", "teacher": teacher, "backbone": entry["backbone"],
              "backbone_features": entry["backbone_features"], "width": model.width, "fine_width": model.fine_width,
              "refinement": model.refinement, "taps": list(model.taps), **metadata}
    return c2am_presets.register_preset(model, name, arrays, fields, directory, real_image)


def pseudo_masks(score_maps, low=PSEUDO_LOW, high=PSEUDO_HIGH):
    """uint8 targets from foreground maps (B, h, w): each map min-max normalized (as the saliency metrics
    see maps), then 1 above ``high``, 0 at or below ``low``, ``IGNORE`` (255) between.

    >>> pseudo_masks(np.array([[[0.1, 0.3, 0.9, 1.0]]])).tolist()
    [[[0, 255, 1, 1]]]
    """
    maps = np.asarray(score_maps, np.float32)
    u, flat = min_max_normalized(maps), flat_maps(maps)
    target = np.full(u.shape, IGNORE, np.uint8)
    target[u <= low] = 0
    target[u > high] = 1
    target[flat] = IGNORE  # a flat map says nothing
    return target


def refined_maps(images, score_maps, method, size):
    """(B, size, size) float32: each map refined against its image (uint8 (B, H, W, 3)), then resized."""

    out = []
    for image, m in zip(np.asarray(images), np.asarray(score_maps)):
        fine = edge_refined_map(image, m, method)
        out.append(cv2.resize(fine, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def masked_binary_crossentropy(targets, probs):
    """Mean binary cross-entropy over the pixels whose target is not ``IGNORE`` (255)."""

    targets = ops.cast(targets, "float32")
    keep = ops.cast(ops.not_equal(targets, float(IGNORE)), "float32")
    probs = ops.clip(probs, 1e-6, 1.0 - 1e-6)
    t = ops.where(keep > 0, targets, 0.0)
    bce = -(t * ops.log(probs) + (1.0 - t) * ops.log(1.0 - probs))
    return ops.sum(bce * keep) / ops.maximum(ops.sum(keep), 1.0)


def cached_features(model, images, batch_size=8, flip=True, progress=False):
    """What the decoder reads (``MaskModel.features``: three feature levels and the prior) for ``images``
    (N, S, S, 3) uint8, and for their mirrors when ``flip``: four float16 arrays (2N or N, ...), the
    images first. The backbone and the teacher are frozen, so one forward pass serves every epoch and
    every self-training round."""

    views = [images, images[:, :, ::-1]] if flip else [images]
    total = sum(len(v) for v in views)
    out, row = None, 0  # filled in place: a concatenation at the end would need the cache twice
    with tqdm(total=total, desc="features", unit="img", disable=not progress) as bar:
        for view in views:
            for start in range(0, len(view), batch_size):
                batch = tf.constant(view[start:start + batch_size], tf.float32)
                levels = [np.asarray(f, np.float16) for f in model.features(batch)]
                if out is None:
                    out = [np.empty((total,) + f.shape[1:], np.float16) for f in levels]
                for level, f in zip(out, levels):
                    level[row:row + len(f)] = f
                row += len(batch)
                bar.update(len(batch))
    return out


class _CachedBatches(keras.utils.PyDataset):
    """Shuffled batches of cached features and targets, indexed in place (no copy of the cache)."""

    def __init__(self, features, targets, batch_size, seed):
        super().__init__()
        self.features, self.targets, self.batch_size = features, targets, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(targets))

    def __len__(self):
        return -(-len(self.targets) // self.batch_size)

    def __getitem__(self, index):
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        return (tuple(f[rows].astype(np.float32) for f in self.features), self.targets[rows][..., None])

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.targets))


def fit_decoder(model, features, targets, epochs=20, batch_size=8, lr=1e-3, seed=0, callbacks=(), verbose=0):
    """Trains ``model.decoder`` (re-initialized) on cached features and targets at stride 4 (uint8 0/1 or
    float in [0, 1]; ``IGNORE`` = no loss) with Adam and a cosine schedule; returns the Keras history."""
    keras.utils.set_random_seed(seed)
    fresh = build_decoder([int(f.shape[-1]) for f in features[:3]], model.width, model.fine_width)
    model.decoder.set_weights(fresh.get_weights())
    data = _CachedBatches(features, targets, batch_size, seed)
    schedule = keras.optimizers.schedules.CosineDecay(lr, epochs * len(data))
    model.decoder.compile(optimizer=keras.optimizers.Adam(schedule), loss=masked_binary_crossentropy)
    history = model.decoder.fit(data, epochs=epochs, callbacks=list(callbacks), verbose=verbose)
    model.decoder.compile()  # the saved model carries no training state
    return history


def predict_features(model, features, batch_size=16):
    """Decoder maps (N, h, w) float32 from cached features (the first N of each level)."""
    out = []
    for start in range(0, len(features[0]), batch_size):
        batch = [np.asarray(f[start:start + batch_size], np.float32) for f in features]
        out.append(np.asarray(model.decoder(batch, training=False))[..., 0])
    return np.concatenate(out)


def mirrored_average(maps, mirrored):
    """(maps + mirror(mirrored maps)) / 2: the flip-averaged map of each image."""
    return (np.asarray(maps) + np.asarray(mirrored)[:, :, ::-1]) / 2.0


TARGETS = ("hard", "soft")


def soft_targets(score_maps):
    """float32 targets (B, h, w): each map min-max normalized (a flat map: all ``IGNORE``)."""
    maps = np.asarray(score_maps, np.float32)
    u, flat = min_max_normalized(maps), flat_maps(maps)
    return np.where(flat, float(IGNORE), u).astype(np.float32)


def self_train(model, images, rounds=2, epochs=20, batch_size=8, lr=1e-3, seed=0, features=None,
               after_round=None, progress=False, callbacks=(), targets="soft", start_round=0):
    """Self-trains ``model``'s decoder on ``images`` (N, S, S, 3) uint8, starting from its prior (the
    teacher's map spread by the prototypes). Each round: refine the current maps against their images
    (``model.refinement``), cut them into pseudo-masks (``pseudo_masks``; or, with ``targets="soft"``,
    keep them as normalized soft targets, ``soft_targets``), train the decoder from scratch on the
    images and their mirrors; the next round starts from the new decoder's flip-averaged maps.
    ``after_round(r, model, targets)`` is called after each round. ``start_round`` > 0 goes on from a run
    whose decoder (in ``model``) finished round ``start_round - 1``. Returns the final loss of each round run."""
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    features = features if features is not None else cached_features(model, images, progress=progress)
    n, side = len(images), int(features[0].shape[1])
    prior = np.asarray(features[3][..., 0], np.float32)
    maps, losses = mirrored_average(prior[:n], prior[n:]) if len(prior) == 2 * n else prior, []
    if 0 < start_round < rounds:  # the next round starts from the maps of the decoder the last one trained
        predicted = predict_features(model, features)
        maps = mirrored_average(predicted[:n], predicted[n:])
    for r in range(start_round, rounds):
        refined = refined_maps(images, maps, model.refinement, side)
        wanted = pseudo_masks(refined) if targets == "hard" else soft_targets(refined)
        wanted = np.concatenate([wanted, wanted[:, :, ::-1]])
        history = fit_decoder(model, features, wanted, epochs, batch_size, lr, seed + r, callbacks,
                              verbose=2 if progress else 0)
        losses.append(float(history.history["loss"][-1]))
        if after_round is not None:
            after_round(r, model, wanted[:n])
        if r + 1 < rounds:
            predicted = predict_features(model, features)
            maps = mirrored_average(predicted[:n], predicted[n:])
    return losses


__all__ = ["TARGETS", "soft_targets", "ResizeLike", "Prototypes", "Logit", "prototype_maps", "mirrored_average",
           "self_train", "masked_binary_crossentropy", "cached_features", "fit_decoder", "predict_features",
           "MaskModel", "build_decoder", "pseudo_masks", "refined_maps", "REFINEMENTS",
           "DECODER_STRIDE", "IGNORE"]
