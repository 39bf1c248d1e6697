"""c2am_tf: Contrastive learning of Class-agnostic Activation Maps (C2AM) in Keras 3 / TensorFlow."""

from c2am_tf.backbones import build_backbone
from c2am_tf.boxes import GTKnownLoc, boxes_from_map
from c2am_tf.layers import ActivationHead, Disentangler
from c2am_tf.losses import C2AMLoss
from c2am_tf.model import C2AM

__version__ = "0.1.0"
__all__ = ["ActivationHead", "Disentangler", "C2AMLoss", "C2AM", "build_backbone",
           "boxes_from_map", "GTKnownLoc"]
