"""ONNX export of a C2AM model (or a mask model) through Keras's own ``model.export(format="onnx")``.

The ``.onnx`` model takes uint8 RGB images (B, H, W, 3) of any size and returns the foreground-high map
(B, H/16, W/16, 1) (a mask model's: H/4): the polarity is baked in, as in every export. The box threshold, the
box rule's band, the refinement and the input size the detector resizes to travel in the model's
``metadata_props`` under ``c2am_tf`` (JSON, the TFLite export's keys), so ``ForegroundDetector`` runs it with
``onnxruntime`` as it runs a ``.tflite`` (``c2am-tf detect --model m.onnx``). Keras converts through tf2onnx;
``onnx`` and ``tf2onnx`` are needed at export time only, ``onnxruntime`` to run it (the ``onnx`` extra).
"""

import json
import os
import tempfile
import warnings

import keras
import numpy as np

from c2am_tf.deploy.on_device import METADATA_NAME
from c2am_tf.deploy.tflite_export import export_metadata
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.utils.files import write_atomically

INPUT_NAME, OUTPUT_NAME = "images", "map"


def _import_onnx():
    try:
        import onnx  # the optional onnx extra: export only
        import tf2onnx  # noqa: F401 (Keras's ONNX export imports it; a clear message when it is missing)
    except ImportError as err:
        raise ImportError(f"ONNX export needs onnx and tf2onnx ({err}): pip install 'c2am-tf[onnx]'") from None
    return onnx


def _renamed(graph, old, new):
    """Renames the value ``old`` to ``new`` everywhere in ``graph`` (its inputs, outputs and nodes)."""
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def convert(model, size=EVAL_CROP):
    """Bytes of an ``.onnx`` model of ``model``'s map (uint8 images in, named ``images``; the map out, ``map``),
    with ``export_metadata`` at input ``size`` (what a detector resizes images to; the graph takes any size)."""
    onnx = _import_onnx()
    size = int(size)
    model(np.zeros((1, size, size, 3), np.float32))  # Keras exports only a model that has been called
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        with warnings.catch_warnings():  # Keras's tf2onnx shim asks numpy for np.object, which numpy 2 warns of
            warnings.simplefilter("ignore", FutureWarning)
            model.export(path, format="onnx", verbose=False,
                         input_signature=[keras.InputSpec(shape=(None, None, None, 3), dtype="uint8")])
        proto = onnx.load(path)
    _renamed(proto.graph, proto.graph.input[0].name, INPUT_NAME)
    _renamed(proto.graph, proto.graph.output[0].name, OUTPUT_NAME)
    entry = proto.metadata_props.add()
    entry.key = METADATA_NAME
    entry.value = json.dumps(export_metadata(model, size, "none", "c2am_tf.onnx/v1"), sort_keys=True)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(model, out, size=EVAL_CROP):
    """Writes ``convert(model, size)`` to ``out`` atomically; returns its size in bytes."""
    content = convert(model, size)
    write_atomically(out, content)
    return len(content)
