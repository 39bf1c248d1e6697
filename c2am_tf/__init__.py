"""c2am_tf: Contrastive learning of Class-agnostic Activation Maps (C2AM) in Keras 3 / TensorFlow.

The public names are imported on first use, so that the device-side module
``c2am_tf.litert`` (numpy and the LiteRT interpreter only) imports without TensorFlow.
"""

import importlib

__version__ = "0.1.0"
_PUBLIC = {
    "ActivationHead": "c2am_tf.layers",
    "Disentangler": "c2am_tf.layers",
    "RoutedHead": "c2am_tf.layers",
    "C2AMLoss": "c2am_tf.losses",
    "C2AM": "c2am_tf.model",
    "MaskModel": "c2am_tf.mask_model",
    "build_backbone": "c2am_tf.backbones",
    "boxes_from_map": "c2am_tf.boxes",
    "GTKnownLoc": "c2am_tf.boxes",
    "load_model": "c2am_tf.inference",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'c2am_tf' has no attribute {name!r}")


def register_serializables():
    """Imports the modules whose Keras classes ``.keras`` files refer to (registers them)."""
    for module in ("c2am_tf.backbones", "c2am_tf.layers", "c2am_tf.losses", "c2am_tf.model", "c2am_tf.regressor",
                   "c2am_tf.mask_model"):
        importlib.import_module(module)
