"""keras-hub's self-supervised ViTs (DINOv2, DINOv3) as a backbone family: ``--backbone keras_hub:PRESET``.

The best unsupervised localizers and saliency methods (LOST, TokenCut, SelfMask, FOUND) run on
self-supervised ViT features, and keras-hub ships them with weights (the optional extra ``keras-hub``:
``pip install -e .[keras-hub]``). Here a ViT's patch tokens become C2AM's feature map Z: the image (any size,
0..255) is resized to the ViT's square input, normalized as the ViT was trained (ImageNet mean and std), and
the tokens after the class and register tokens are laid out on their grid, so Z's stride is the patch size
(14 for DINOv2: 224 -> 16 x 16, ``keras_hub:dinov2_small@448`` -> 32 x 32).

``keras_hub:NAME`` with ``weights="imagenet"`` loads the preset's pretrained weights, which keras-hub
downloads (users online); ``weights=None`` builds the preset's architecture at random (its config still
downloads). Nothing about these backbones' quality was measured here: no weights can be had offline.
``hub_backbone`` wraps a keras-hub backbone built by hand (a small random-init config: the tests).

Example:
>>> from c2am_tf.backbones import build_backbone
>>> z = build_backbone("keras_hub:dinov2_small", weights="imagenet")  # doctest: +SKIP
"""

import keras
from keras import layers, ops

from c2am_tf.backbones.preprocessing import ImagePreprocessing
from c2am_tf.backbones.registry import Backbone
from c2am_tf.utils.errors import ConfigError

FAMILY = "keras_hub"
DEFAULT_SIZE = 224


@keras.saving.register_keras_serializable(package="c2am_tf")
class PatchGrid(keras.layers.Layer):
    """Tokens (B, skip + g * g, C) -> the patch tokens laid out as (B, g, g, C): the class and register
    tokens in front (``skip``) are left out."""

    def __init__(self, grid, skip=1, **kwargs):
        super().__init__(**kwargs)
        self.grid, self.skip = int(grid), int(skip)

    def call(self, tokens):
        patches = tokens[:, self.skip:, :]
        return ops.reshape(patches, (-1, self.grid, self.grid, ops.shape(tokens)[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.grid, self.grid, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(grid=self.grid, skip=self.skip)
        return config


def hub_backbone(hub, size, name="keras_hub"):
    """``hub`` (a keras-hub ViT backbone: ``patch_size``, ``num_register_tokens``, square ``image_shape`` of
    ``size``) as a c2am_tf backbone: images (B, H, W, 3) in 0..255, any size -> Z (B, size/patch, size/patch, C)."""
    patch = int(hub.patch_size)
    if size % patch:
        raise ConfigError("backbone", f"{name}: the input size {size} is not a multiple of the patch size {patch}")
    skip = 1 + int(getattr(hub, "num_register_tokens", 0))
    images = keras.Input((None, None, 3), name="images")
    x = layers.Resizing(size, size, interpolation="bilinear", name="to_vit_size")(images)
    x = ImagePreprocessing("torch", name="preprocess")(x)
    tokens = hub({"images": x})
    return keras.Model(images, PatchGrid(size // patch, skip, name="patch_grid")(tokens), name=name)


def parse_spec(spec):
    """``PRESET[@SIZE]`` -> (preset, size).

    >>> parse_spec("dinov2_small"), parse_spec("dinov2_small@448")
    (('dinov2_small', 224), ('dinov2_small', 448))
    """
    preset, _, size = spec.partition("@")
    if not preset or (size and not size.isdigit()):
        raise ConfigError("backbone", f"{FAMILY}:{spec}: give keras_hub:PRESET or keras_hub:PRESET@SIZE")
    return preset, int(size) if size else DEFAULT_SIZE


MISSING = "needs keras-hub, the optional extra: pip install -e .[keras-hub]"


def import_keras_hub():
    """The ``keras_hub`` module, or None when the optional extra is not installed (callers say ``MISSING``)."""
    try:
        import keras_hub  # the optional keras-hub extra, only when such a backbone is built
    except ImportError:
        return None
    return keras_hub


def entry(spec):
    """The registry entry of ``keras_hub:spec`` (``register_family``'s resolver)."""
    preset, size = parse_spec(spec)
    name = f"{FAMILY}:{spec}"

    def build(weights, input_shape, features):
        keras_hub = import_keras_hub()
        if keras_hub is None:
            raise ConfigError("backbone", f"{name} {MISSING}")
        hub = keras_hub.models.Backbone.from_preset(preset, load_weights=weights == "imagenet",
                                                    image_shape=(size, size, 3))
        model = hub_backbone(hub, size, name=f"keras_hub_{preset}")
        if weights not in (None, "imagenet"):
            model.load_weights(weights)
        return model

    return Backbone(build=build, weights_from="keras-hub's preset (downloads, online)")

