"""A backbone of four strided convs: fast to trace and to train, for tests and quick experiments."""

import keras
from keras import layers

from c2am_tf.backbones.preprocessing import ImagePreprocessing
from c2am_tf.backbones.registry import Backbone


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


TINY = Backbone(build=lambda weights, input_shape, features: tiny(None if weights == "imagenet" else weights,
                                                                   input_shape),
                weights_from="none: random init (tests and quick experiments)")
