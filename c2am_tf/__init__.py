"""c2am_tf: Contrastive learning of Class-agnostic Activation Maps (C2AM) in Keras 3 / TensorFlow.

The public names are imported on first use, so that the device-side module
``c2am_tf.deploy.on_device`` (numpy and the LiteRT interpreter only) imports without TensorFlow.
"""

import importlib

__version__ = "0.1.0"
_PUBLIC = {
    "ActivationHead": "c2am_tf.models.c2am.layers",
    "Disentangler": "c2am_tf.models.c2am.layers",
    "RoutedHead": "c2am_tf.models.c2am.layers",
    "C2AMLoss": "c2am_tf.models.c2am.losses",
    "C2AM": "c2am_tf.models.c2am.model",
    "MaskModel": "c2am_tf.models.masks.mask_model",
    "build_backbone": "c2am_tf.backbones",
    "boxes_from_map": "c2am_tf.maps.boxes",
    "GTKnownLoc": "c2am_tf.maps.boxes",
    "load_model": "c2am_tf.presets",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'c2am_tf' has no attribute {name!r}")


def register_serializables():
    """Imports the modules whose Keras classes ``.keras`` files refer to (registers them)."""
    for module in ("c2am_tf.backbones", "c2am_tf.models.c2am.layers", "c2am_tf.models.c2am.losses", "c2am_tf.models.c2am.model", "c2am_tf.models.psol.regressor",
                   "c2am_tf.models.masks.mask_model"):
        importlib.import_module(module)
