"""keras.applications backbones (ResNet50, MobileNetV2) restrided to 16, their features two layers concatenated.
Their ImageNet weights download (users online); nothing here needs them offline."""

import keras
from keras import layers

from c2am_tf.backbones.preprocessing import ImagePreprocessing
from c2am_tf.backbones.registry import Backbone


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


RESNET50 = Backbone(build=lambda weights, input_shape, features: resnet50(weights, input_shape),
                    weights_from="keras.applications (downloads, online)")
MOBILENET_V2 = Backbone(build=lambda weights, input_shape, features: mobilenet_v2(weights, input_shape),
                        weights_from="keras.applications (downloads, online)")
