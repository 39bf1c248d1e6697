"""The classifier on a backbone, and its class activation maps (Zhou et al. 2016).

The classifier is feature maps, global average pooling and a dense layer: ``build_classifier``'s
(a factory backbone), or the ImageNet EfficientNet-Lite classifiers (``include_top=True``). The CAM
of class k is ``ReLU(sum_c w_ck F_c)`` over the feature maps F before the pooling (no bias),
divided by its maximum and upsampled. ``fit-classifier`` trains one (``c2am_tf.training.classifier``);
``evaluate`` scores Top-k Loc with it; the WSSS steps write its CAMs (``c2am_tf.wsss.cam``).
"""

import weakref

import keras
import numpy as np
import tensorflow as tf


def build_classifier(backbone, num_classes, name="classifier"):
    """images (B, H, W, 3) in 0..255 -> multi-label logits (B, num_classes).

    Example:
    >>> from c2am_tf.backbones import build_backbone
    >>> clf = build_classifier(build_backbone("tiny", weights=None), 3)
    >>> clf(np.zeros((1, 64, 64, 3))).shape
    TensorShape([1, 3])
    """
    images = keras.Input((None, None, 3), name="images")
    features = backbone(images)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    logits = keras.layers.Dense(num_classes, name="logits")(pooled)
    return keras.Model(images, logits, name=name)


_CAM_MODELS = weakref.WeakKeyDictionary()


def cam_model(classifier):
    """(model: images -> (logits, the feature maps before pooling), the class weights' dense layer) of a
    classifier with one global average pooling followed by a dense layer. One forward pass gives both
    the classes and the maps; built once per classifier."""
    if classifier not in _CAM_MODELS:
        pools = [layer for layer in classifier.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
        dense = [layer for layer in classifier.layers if isinstance(layer, keras.layers.Dense)]
        if len(pools) != 1 or not dense:
            raise ValueError(f"classifier {classifier.name!r}: class activation maps need one global average "
                             "pooling followed by a dense layer")
        both = keras.Model(classifier.inputs, [classifier.outputs[0], pools[0].input], name=f"{classifier.name}_cam")
        _CAM_MODELS[classifier] = (both, dense[-1])
    return _CAM_MODELS[classifier]


def maps_of_classes(features, dense, classes):
    """(B, h, w) float32: each image's CAM of one class, ReLU(features @ kernel[:, class]), not normalized."""
    kernel = np.asarray(dense.kernel, np.float32)[:, np.asarray(classes)]  # (C, B)
    return np.maximum(np.einsum("bhwc,cb->bhw", np.asarray(features, np.float32), kernel), 0.0)


def class_activation_maps(classifier, images, size=None):
    """CAMs (B, K, h, w) float32 in [0, 1]: ReLU(features @ dense kernel), max-normalized per class.

    ``size`` (H, W) upsamples them bilinearly (after the normalization, as is usual).
    """
    both, dense = cam_model(classifier)
    _, features = both(tf.cast(images, tf.float32), training=False)
    cams = tf.nn.relu(tf.einsum("bhwc,ck->bhwk", features, dense.kernel))
    cams = cams / (tf.reduce_max(cams, axis=[1, 2], keepdims=True) + 1e-5)
    if size is not None:
        cams = tf.image.resize(cams, size, method="bilinear")
    return tf.transpose(cams, [0, 3, 1, 2]).numpy()
