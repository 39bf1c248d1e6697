"""The backbone registry: one ``Backbone`` entry per name, and ``build_backbone``, the one way every command,
trainer and loader builds one. The entries are registered by ``c2am_tf.backbones`` (its ``__init__``)."""

import dataclasses
import os
import pickle
from typing import Callable, Optional

import keras
import numpy as np

from c2am_tf.utils.errors import ConfigError, reason


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One registry entry: everything the rest of the package needs to know about a backbone.

    Attributes:
        build: ``(weights, input_shape, features) -> keras.Model``, images (B, H, W, 3) in 0..255 -> Z at
            stride 16; ``weights`` is ``"imagenet"``, a weights file, or None (random init).
        features: the feature choices (``build``'s ``features=``); the first is what ``"concat"`` names.
        default_features: what a trainer takes unless told (the measured recipe).
        classifier: ``() -> keras.Model``, the backbone's own ImageNet classifier (images 0..255 -> 1000
            logits), or None; commands name it by the backbone's name (``--classifier efficientnet_lite0``).
        classifier_size: that classifier's input size.
        class_weights: ``(channels) -> (kernel (channels, 1000), bias (1000,))`` of that classifier on the
            average-pooled Z (the routed heads' class votes), or None.
        weights_from: where ``"imagenet"`` weights come from (the converter), for the docs and errors.
    """

    build: Callable
    features: tuple = ("concat",)
    default_features: str = "concat"
    classifier: Optional[Callable] = None
    classifier_size: Optional[int] = None
    class_weights: Optional[Callable] = None
    weights_from: str = ""


REGISTRY = {}
FAMILIES = {}  # prefix -> resolver(spec) -> Backbone: names like keras_hub:dinov2_small, not listed one by one


def register_family(prefix, resolver):
    """Makes every ``prefix:SPEC`` a backbone, its entry ``resolver(SPEC)`` (e.g. ``keras_hub:dinov2_small``)."""
    FAMILIES[prefix] = resolver
    return resolver


def register_backbone(name, entry):
    """Adds ``entry`` (a ``Backbone``) as ``name``: every command, trainer and loader then offers it."""
    if not isinstance(entry, Backbone):
        raise TypeError(f"register_backbone needs a Backbone entry, got {type(entry).__name__}")
    REGISTRY[name] = entry
    return entry


def backbone_names():
    """The registered names, then each family as ``PREFIX:...`` (what ``--backbone`` accepts)."""
    return tuple(REGISTRY) + tuple(f"{prefix}:..." for prefix in FAMILIES)


def backbone_entry(name):
    """The registry entry of ``name``, a registered name or ``PREFIX:SPEC`` of a family (a ``ConfigError`` of
    the field ``backbone``, naming the choices, for an unknown one)."""
    if name in REGISTRY:
        return REGISTRY[name]
    prefix, colon, spec = str(name).partition(":")
    if colon and prefix in FAMILIES:
        return FAMILIES[prefix](spec)
    raise ConfigError("backbone", f"must be one of {', '.join(backbone_names())}; got {name!r} (an unknown backbone)")


def has_feature_choice(name):
    """Whether backbone ``name`` offers a choice of features (``features=``: EfficientNet-Lite); the others
    give ``"concat"`` alone.

    >>> has_feature_choice("efficientnet_lite1"), has_feature_choice("resnet50")
    (True, False)
    """
    return len(backbone_entry(name).features) > 1


def default_features(name):
    """The features a backbone gives by default: ``"head"`` where it has a choice (the measured recipe),
    else ``"concat"``.

    >>> default_features("efficientnet_lite0"), default_features("tiny")
    ('head', 'concat')
    """
    return backbone_entry(name).default_features


def classifier_backbones():
    """The backbones that come with an ImageNet classifier (what ``--classifier NAME`` accepts).

    >>> classifier_backbones()
    ('efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2')
    """
    return tuple(name for name, entry in REGISTRY.items() if entry.classifier is not None)


def weights_choice(weights):
    """``"imagenet"``, None (random init: also ``"none"`` or ``""``) or an existing weights file.

    >>> weights_choice("none") is None
    True
    """
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if weights == "imagenet":
        return weights
    if not os.path.isfile(str(weights)):
        raise FileNotFoundError(f"weights file not found: {weights} (or use 'imagenet' or 'none')")
    return str(weights)


def build_backbone(name, weights="imagenet", input_shape=(None, None, 3), features="concat"):
    """Returns a Keras model: images (B, H, W, 3) in 0..255 -> Z (B, H/16, W/16, C).

    Args:
        name: a registered backbone (``REGISTRY``, or a registered family's name).
        weights: ``"imagenet"``, a weights file, or None / ``"none"`` (random init).
        features: the backbone's feature choice (``Backbone.features``; EfficientNet-Lite's, see
            ``efficientnet_lite``).

    Example:
    >>> z = build_backbone("tiny", weights=None)(np.zeros((1, 64, 64, 3)))
    >>> z.shape
    TensorShape([1, 4, 4, 16])
    """
    weights = weights_choice(weights)
    entry = backbone_entry(name)
    if features != "concat" and len(entry.features) == 1:
        raise ValueError(f"features={features!r} is only available for EfficientNet-Lite (the backbones with a "
                         f"feature choice: {', '.join(n for n in REGISTRY if has_feature_choice(n))})")
    if weights in (None, "imagenet"):
        return entry.build(weights, input_shape, features)
    try:
        return entry.build(weights, input_shape, features)
    except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as err:
        # a file the user named: one line naming it, not a loader's traceback
        detail = reason(err).removeprefix(f"{weights}: ")
        raise ConfigError("weights", f"{weights}: cannot be loaded as {name} weights ({detail})") from err


def layers_at_strides(backbone, strides):
    """Names of the backbone's last layers whose outputs are at each of ``strides`` (one 64 x 64 probe): the
    taps of the decoders that need finer features than Z (the mask model, the background-cue model).

    >>> layers_at_strides(build_backbone("tiny", weights=None), (4, 8))
    ['conv1', 'conv2']
    """
    # a nested model with several outputs (keras.applications inside a backbone) is no tap itself
    candidates = [layer for layer in backbone.layers[1:]
                  if hasattr(getattr(layer, "output", None), "shape") and len(layer.output.shape) == 4]
    probe = keras.Model(backbone.input, [layer.output for layer in candidates])
    sizes = [int(o.shape[1]) for o in probe(np.zeros((1, 64, 64, 3), np.float32))]
    names = []
    for stride in strides:
        found = [layer.name for layer, size in zip(candidates, sizes) if size == 64 // stride]
        if not found:
            raise ValueError(f"backbone {backbone.name!r} has no stride-{stride} features")
        names.append(found[-1])
    return names
