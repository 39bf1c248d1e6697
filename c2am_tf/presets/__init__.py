"""Loading a model, once for every caller: a ``.keras`` file by path, or a shipped preset by name.

The shipped heads' registry (files, sha256 checks, reference maps, saving) is
``c2am_tf.models.c2am.c2am_presets``, beside the model it builds; its public names are re-exported here.

Example:
>>> sorted(list_presets())
['cub_lite0', 'general_lite0', 'general_masks_lite0', 'general_routed_lite0']
>>> model = from_preset("general_lite0")  # doctest: +SKIP
"""

import os
import re
import zipfile

import keras

import c2am_tf
from c2am_tf.backbones import REGISTRY
from c2am_tf.backbones.keras_hub import MISSING, import_keras_hub
from c2am_tf.models.c2am.c2am_presets import (
    HERE,
    INDEX,
    PresetError,
    head_arrays,
    head_presets,
    list_presets,
    map_network,
    preset_kind,
    preset_sha256,
    reference_image,
    reference_map,
    save_preset,
)
from c2am_tf.utils.errors import InputError, reason
from c2am_tf.utils.files import sha256_of
from c2am_tf.utils.limits import check_keras_archive

__all__ = ["HERE", "INDEX", "PresetError", "from_preset", "head_arrays", "head_presets", "preset_kind",
           "list_presets", "load", "load_classifier", "load_model", "load_named", "map_network", "model_label", "model_sha256",
           "preset_sha256", "reference_image", "reference_map", "save_preset"]


def from_preset(name, weights="imagenet"):
    """The shipped preset ``name`` (offline): ``C2AM.from_preset(name, weights)`` for a head, or
    ``MaskModel.from_preset`` for a mask model (``general_masks_lite0``)."""
    if preset_kind(list_presets().get(name, {})) == "masks":
        from c2am_tf.models.masks.mask_model import MaskModel  # TensorFlow and OpenCV, for mask presets only

        return MaskModel.from_preset(name, weights)
    from c2am_tf.models.c2am.model import C2AM  # TensorFlow: map_network's callers on other backends lack it

    return C2AM.from_preset(name, weights)


def model_label(model=None, preset=None):
    """What a run's header records as the model: ``preset:NAME``, or the model file's absolute path."""
    return f"preset:{preset}" if preset is not None else os.path.abspath(model)


def model_sha256(model=None, preset=None):
    """What a run's header records as the model's identity: the sha256 of the ``.keras`` file, or the
    preset's head file's."""

    return preset_sha256(preset) if preset is not None else sha256_of(model)


def load_model(path, require_c2am=True):
    """Loads a saved ``.keras`` model with c2am_tf's classes registered; by default it must be C2AM."""

    c2am_tf.register_serializables()
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    # a regular file, a zip archive, no member inflating past the limits: checked before Keras reads it
    check_keras_archive(path)
    _import_keras_hub_if_used(path)
    try:
        model = keras.saving.load_model(path)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, MemoryError) as err:
        if _mentions(err, "Lambda"):  # Keras's safe mode, however deep the layer sits ("Functional could not...")
            raise InputError(f"{path}: refusing its Lambda layer, whose Python code would run on loading (Keras's "
                             "safe mode); a C2AM model has none: use a model saved by c2am_tf") from None
        # keras says "File not found" for a truncated archive: name the file and what it is not
        raise InputError(f"{path}: not a readable .keras model ({type(err).__name__}: {reason(err)[:300]})") from None
    except Exception as err:  # TensorFlow's ResourceExhaustedError: a config declaring layers no memory holds
        if type(err).__name__ != "ResourceExhaustedError":
            raise

        shape = re.search(r"tensor with (shape\[[^\]]*\])", str(err))
        raise InputError(f"{path}: its layers need more memory than there is (a weight of "
                         f"{shape.group(1) if shape else 'its config'}); not a model this machine can load") from None
    if require_c2am and not hasattr(model, "threshold"):
        raise ValueError(f"{path}: not a C2AM model (no stored threshold)")
    return model


def _mentions(err, word):
    """Whether ``word`` is in the message of ``err`` or of any exception it was raised from."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if word in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _import_keras_hub_if_used(path):
    """keras-hub registers its classes when imported: a ``.keras`` file on a keras-hub backbone needs it
    (and only such a file pays for the import)."""

    if not os.path.isfile(path):  # load_model has checked that a file is a zip archive
        return
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist() or b'"keras_hub' not in archive.read("config.json"):
            return
    if import_keras_hub() is None:
        raise InputError(f"{path}: its backbone is a keras-hub model, which {MISSING}")


def load(model=None, preset=None):
    """The model a command asked for: a ``.keras`` file (``model``) or a shipped ``preset`` (exactly one)."""
    if (model is None) == (preset is None):
        raise PresetError("give either a model file or a preset name")
    if preset is not None:
        return from_preset(preset)
    return load_model(model)


def load_named(name):
    """One name for either: the model of a ``.keras`` file when ``name`` ends in ``.keras``, else the
    shipped preset ``name`` (benchmarks take their models this way)."""
    return load(name, None) if name.endswith(".keras") else load(None, name)


def load_classifier(name, size=None):
    """(classifier, its input size) for a command's ``--classifier`` / ``--classifier-size``: a registered
    backbone's own ImageNet classifier by the backbone's name (``c2am_tf.backbones.classifier_backbones()``,
    at its ``classifier_size`` unless ``size``), or a ``.keras`` classifier (at ``size``; None: the frame);
    (None, None) when ``name`` is None."""

    if not name:
        return None, None
    entry = REGISTRY.get(name)
    if entry is not None and entry.classifier is not None:
        return entry.classifier(), size or entry.classifier_size
    model = load_model(name, require_c2am=False)
    outputs = getattr(model, "outputs", None) or []
    if hasattr(model, "threshold") or (len(outputs) == 1 and len(outputs[0].shape) != 2):

        what = "a C2AM model" if hasattr(model, "threshold") else f"a model with output shape {outputs[0].shape}"
        raise InputError(f"{name}: {what}, not a classifier (images -> class scores (B, classes)); --classifier "
                         "takes one made by fit-classifier, or an ImageNet backbone's name")
    return model, size
