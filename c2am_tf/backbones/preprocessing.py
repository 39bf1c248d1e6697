"""Every backbone's own input convention, inside the model: images in 0..255 (any dtype) in, so a saved model
needs no outside normalization."""

import keras
from keras import ops

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
