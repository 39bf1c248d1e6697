"""Background-cue model: a factory backbone and a light stride-8 decoder trained on C2AM's 1 - P.

Paper section 3.5: C2AM's background map is used as pseudo labels for a network that
predicts background cues, which then refine multi-class CAMs (``c2am_tf.wsss.labels``).
The decoder fuses the backbone's last stride-8 features with its stride-16 output
(DeepLabv3+-style, without ASPP) and predicts one sigmoid background map at stride 8.
"""

import keras
import numpy as np
import tensorflow as tf

from c2am_tf.backbones import build_backbone, layers_at_strides
from c2am_tf.maps.foreground import foreground_mask
from c2am_tf.data.transforms import resize_square
from c2am_tf.maps.geometry import EVAL_CROP

PSEUDO_LABELS = ("soft", "hard")


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


def pseudo_labels(c2am_model, images, kind="soft", threshold=0.3):
    """Background targets (B, h, w) from a C2AM model: 1 - P (``soft``), or 1 on the pixels
    at or below ``threshold`` x the map's peak and 0 elsewhere (``hard``: the box rule's
    cut-off; 0.3 is the authors' background-cue threshold)."""
    if kind not in PSEUDO_LABELS:
        raise ValueError(f"pseudo labels must be one of {PSEUDO_LABELS}, got {kind!r}")
    maps = np.asarray(c2am_model.predict(images, verbose=0))[..., 0]
    if kind == "soft":
        return 1.0 - maps
    return np.stack([~foreground_mask(m, threshold) for m in maps]).astype(np.float32)


def is_c2am(model):
    """True for a C2AM model (maps P), False for a background-cue model."""
    return hasattr(model, "threshold") and hasattr(model, "orient")


def background_map(model, image, size=EVAL_CROP):
    """Background cue (h, w) in [0, 1] of one uint8 image (H, W, 3): 1 - P for a C2AM model, the
    prediction of a background-cue model (both at the model's resolution), and one minus the refined
    mask of a mask model (``c2am_tf.models.masks.mask_model``, at ``size`` x ``size``)."""
    square = resize_square(image, size)
    out = np.asarray(model(tf.cast(square, tf.float32)[None], training=False))[0, ..., 0]
    if hasattr(model, "edge_refine"):
        return 1.0 - model.edge_refine(np.asarray(square, np.uint8), out)
    return 1.0 - out if is_c2am(model) else out


def write_cue_files(model, images, paths, outputs, batch_size=16):
    """The background cue of each of ``images`` (a cue model's, stride 8, in [0, 1]) as ``NAME.npy`` at
    ``outputs(path)`` (an ``OutputNames`` of layout "stem", what ``refine --bg-cues DIR`` reads); returns
    the count."""
    import io

    from c2am_tf.utils.files import write_atomically

    cues = model.predict(images, batch_size=batch_size, verbose=0)[..., 0]
    for path, cue in zip(paths, cues):
        buffer = io.BytesIO()
        np.save(buffer, cue)
        write_atomically(outputs(path), buffer.getvalue())
    return len(cues)
