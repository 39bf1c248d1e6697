"""TFLite conversion of a C2AM model for on-device foreground detection.

The ``.tflite`` model takes one uint8 RGB image of a fixed size (1, S, S, 3) and
returns the foreground-high map (1, S/16, S/16) of a C2AM model, or (1, S/4, S/4) of a mask
model (``c2am_tf.models.masks.mask_model``) (float32, or uint8 with its quantization parameters for ``int8``).
A mask model's edge-aware refinement is OpenCV, outside the graph: its name travels in the
metadata and ``ForegroundDetector`` applies it. Boxes are computed on the device by
``c2am_tf.deploy.on_device.box_from_map``; the model's box threshold, input size and
quantization travel in the model file's ``c2am_tf`` metadata (JSON).

Quantizations: ``none`` (fp32), ``float16`` (fp16 weights, fp32 compute) and
``int8`` (full integer: int8 weights and activations, uint8 input and output,
calibrated on real images).
"""

import json
import logging

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils
from tqdm import tqdm

from c2am_tf.data.transforms import resize_square
from c2am_tf.deploy.on_device import METADATA_NAME
from c2am_tf.deploy.saved_model import WeightsOnlyModule
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.models.settings import model_box_band
from c2am_tf.utils.image_io import read_image

log = logging.getLogger("c2am_tf")

QUANTIZATIONS = ("none", "float16", "int8")


class _FixedSizeModule(WeightsOnlyModule):
    """map(images) at a fixed input size; the input dtype is what the converter needs."""

    def __init__(self, model, size, dtype):
        super().__init__(model)
        spec = tf.TensorSpec([1, size, size, 3], dtype, name="images")
        self.map = tf.function(self._map, input_signature=[spec])

    def _map(self, images):
        return {"cam": self._model(tf.cast(images, tf.float32), training=False)[..., 0]}


def convert(model, size=EVAL_CROP, quantize="none", representative_images=None, calibration_steps=100):
    """Bytes of a ``.tflite`` model for ``model`` at input ``size`` x ``size``.

    Args:
        model: a C2AM model (its polarity is baked in: the output is foreground-high).
        size: input height and width; a multiple of 16 keeps the map grid exact.
        quantize: one of ``QUANTIZATIONS``.
        representative_images: for ``int8``: an iterable of uint8 (size, size, 3)
            arrays (real images, as the device will see them).
        calibration_steps: at most this many representative images are used.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if quantize == "int8" and representative_images is None:
        raise ValueError("int8 quantization needs representative_images (real images for calibration)")
    # int8: a float input graph, so that the converter can quantize the input itself.
    module = _FixedSizeModule(model, int(size), tf.float32 if quantize == "int8" else tf.uint8)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.map.get_concrete_function()], module)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative_images, size, calibration_steps)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    content = converter.convert()
    return add_metadata(content, export_metadata(model, size, quantize))


def export_metadata(model, size, quantize="none", fmt="c2am_tf.tflite/v1"):
    """What an export stores beside its graph for the device side (``ForegroundDetector``): the box threshold,
    the box rule's band, the input size, the quantization and a mask model's refinement."""
    return {"format": fmt, "threshold": float(np.asarray(model.threshold)), "box_band": model_box_band(model),
            "input_size": [int(size), int(size)], "quantize": quantize,
            "refinement": getattr(model, "refinement", "none")}


def _representative(images, size, steps):
    def generate():

        count = 0
        # the converter runs every calibration image through the float model: seconds each on a CPU
        with tqdm(total=steps, desc="int8 calibration", unit="img") as bar:
            for image in images:
                image = np.asarray(image)
                if image.shape != (size, size, 3):
                    raise ValueError(f"representative images must be ({size}, {size}, 3), got {image.shape}")
                yield [image[None].astype(np.float32)]
                count += 1
                bar.update(1)
                if count >= steps:
                    break
        if count == 0:
            raise ValueError("representative_images is empty: int8 calibration needs real images")
        log.info("int8 calibration used %d images", count)
    return generate


def add_metadata(content, metadata):
    """``content`` (a .tflite flatbuffer) with ``metadata`` stored as JSON under ``c2am_tf``."""

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def calibration_images(paths, size, count=None):
    """Yields uint8 (size, size, 3) arrays (resized whole) of the readable images among ``paths``;
    with ``count``, of about that many paths spread evenly over the list (folders of
    images are often sorted by class)."""

    paths = list(paths)
    if count:
        paths = paths[::max(len(paths) // int(count), 1)]
    for path in paths:
        image = read_image(path)
        if image is None:
            continue  # an unreadable calibration image is not worth stopping for
        yield resize_square(image, size).numpy()
