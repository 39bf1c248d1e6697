"""The background-cue model: a factory backbone and a light stride-8 decoder, trained on C2AM's 1 - P.

Paper section 3.5: C2AM's background map is the pseudo label of a network that predicts background cues,
which then refine multi-class CAMs (``c2am_tf.wsss.labels``). The decoder fuses the backbone's last stride-8
features with its stride-16 output (DeepLabv3+-style, without ASPP) and predicts one sigmoid background map
at stride 8. ``fit-bgcues`` trains it (``c2am_tf.training.cue_model``).
"""

import keras
import numpy as np  # noqa: F401 (the docstring's example)

from c2am_tf.backbones import build_backbone, layers_at_strides


def build_cue_model(backbone_name="efficientnet_lite0", weights="imagenet", features="head",
                    train_backbone=False, width=128):
    """images (B, H, W, 3) in 0..255 -> background probability (B, H/8, W/8, 1).

    Example:
    >>> m = build_cue_model("tiny", weights=None, features="concat")
    >>> m(np.zeros((1, 64, 64, 3))).shape
    TensorShape([1, 8, 8, 1])
    """
    backbone = build_backbone(backbone_name, weights, features=features)
    low_name = layers_at_strides(backbone, (8,))[0]
    backbone.trainable = train_backbone
    pyramid = keras.Model(backbone.input, [backbone.get_layer(low_name).output, backbone.output],
                          name="backbone_pyramid")
    images = keras.Input((None, None, 3), name="images")
    low, high = pyramid(images)

    def conv_bn_relu(x, filters, kernel, name):
        x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=name + "_conv")(x)
        x = keras.layers.BatchNormalization(name=name + "_bn")(x)
        return keras.layers.ReLU(name=name + "_relu")(x)

    low = conv_bn_relu(low, 48, 1, "low")
    high = conv_bn_relu(high, width, 1, "high")
    high = keras.layers.UpSampling2D(2, interpolation="bilinear", name="up")(high)
    x = keras.layers.Concatenate(name="fuse")([low, high])
    x = conv_bn_relu(x, width, 3, "decode")
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", name="background")(x)
    return keras.Model(images, out, name="background_cues")
