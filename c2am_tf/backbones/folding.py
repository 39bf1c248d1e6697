"""A frozen backbone with each BatchNormalization folded into the convolution before it: the same features
(to float rounding) for less work. Keras runs a BN in inference mode as separate elementwise ops, a quarter
of a frozen EfficientNet-Lite0 training step's time on a CPU (docs/results/speed.md), which the fold removes.

Only for training a frozen backbone: the twin is never saved, and maps and exports keep the backbone itself.
"""

import keras
import numpy as np


class Passthrough(keras.layers.Layer):
    """Where a folded BatchNormalization stood: its input, unchanged."""

    def call(self, inputs, training=None, mask=None):
        return inputs


def _folded_conv(conv, bn):
    """(a copy of ``conv`` with a bias, its weights with ``bn``'s inference-mode affine map folded in)."""
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in (bn.gamma, bn.beta, bn.moving_mean,
                                                                    bn.moving_variance))
    scale = gamma / np.sqrt(var + bn.epsilon)
    kernel = np.asarray(conv.kernel, np.float64)
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros_like(mean)
    if isinstance(conv, keras.layers.DepthwiseConv2D):  # (kh, kw, channels, multiplier)
        kernel = kernel * scale.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    twin = conv.__class__.from_config({**conv.get_config(), "use_bias": True})
    return twin, [kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]


def fold_batch_norm(model):
    """A frozen twin of the functional ``model`` in which every BatchNormalization that follows a convolution
    used by it alone is folded into that convolution; ``None`` when a BN cannot be folded (it follows another
    layer, has no scale or offset, or the model nests models or reuses a layer), so callers keep ``model``.

    >>> from c2am_tf.backbones import build_backbone
    >>> twin = fold_batch_norm(build_backbone("efficientnet_lite0", weights=None, features="head"))
    >>> sum(isinstance(layer, keras.layers.BatchNormalization) for layer in twin.layers)
    0
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_run_through_graph"):
        return None
    consumers, replace = {}, {}
    for op in model.operations:
        if isinstance(op, keras.Model) or len(op._inbound_nodes) != 1:
            return None
        for tensor in op._inbound_nodes[0].input_tensors:
            consumers.setdefault(id(tensor._keras_history.operation), []).append(op)
    for op in model.operations:
        if not isinstance(op, keras.layers.BatchNormalization):
            continue
        sources = [t._keras_history.operation for t in op._inbound_nodes[0].input_tensors]
        conv = sources[0] if len(sources) == 1 else None
        if (not isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) or len(consumers[id(conv)]) != 1
                or not (op.scale and op.center) or op.axis not in (-1, 3)):
            return None
        replace[id(conv)] = _folded_conv(conv, op)
        replace[id(op)] = (Passthrough(name=op.name), None)
    if not replace:
        return None
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in model.inputs]
    outputs = model._run_through_graph(inputs if len(inputs) > 1 else inputs[0],
                                       operation_fn=lambda op: replace[id(op)][0] if id(op) in replace else op)
    twin = keras.Model(inputs, outputs, name=f"{model.name}_folded")
    for layer, weights in replace.values():
        if weights is not None:
            layer.set_weights(weights)
    twin.trainable = False
    return twin
