"""C2AM layers: the activation head and the foreground/background disentangler (paper eq. 1)."""

import keras
from keras import ops


def _sync_sum(values):
    """Sums tensors over replicas when running under a distribution strategy.

    TensorFlow is imported here, not at the top, so that the layers (and a preset's map network) also run
    on Keras's JAX and PyTorch backends, where there is no TensorFlow replica context.
    """
    if keras.backend.backend() != "tensorflow":
        return values
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


@keras.saving.register_keras_serializable(package="c2am_tf")
class ActivationHead(keras.layers.Layer):
    """3x3 conv (no bias) -> BatchNorm -> sigmoid: features Z to one map P in [0, 1].

    The BatchNorm is written out (one channel) so that it follows PyTorch's
    semantics exactly (biased variance to normalize, unbiased variance for the
    running estimate) and so that its batch statistics are synchronized across
    replicas: two replicas then compute what one device computes.

    Args:
        epsilon: BatchNorm epsilon (PyTorch's default 1e-5).
        momentum: Keras-style momentum of the moving statistics (PyTorch 0.1 == 0.9).
        kernel_initializer: initializer of the 3x3 kernel.

    Example:
    >>> head = ActivationHead()
    >>> head(keras.random.normal((2, 7, 7, 16))).shape
    TensorShape([2, 7, 7, 1])
    """

    def __init__(self, epsilon=1e-5, momentum=0.9, kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(3, 3, channels, 1), initializer=self.kernel_initializer
        )
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(1,), initializer="zeros")
        # "mean" aggregation: every replica assigns the same synchronized value.
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=(1,), initializer="zeros", trainable=False,
            aggregation="mean", autocast=False,
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(1,), initializer="ones", trainable=False,
            aggregation="mean", autocast=False,
        )

    def logits(self, z, training=False):
        """The pre-sigmoid map (B, H, W, 1)."""
        x = ops.conv(z, ops.cast(self.kernel, z.dtype), strides=1, padding="same")
        x = ops.cast(x, "float32")
        if training:
            count = ops.cast(ops.size(x), "float32")
            s, s2, n = _sync_sum([ops.sum(x), ops.sum(ops.square(x)), count])
            mean = s / n
            var = ops.maximum(s2 / n - ops.square(mean), 0.0)
            unbiased = var * n / ops.maximum(n - 1.0, 1.0)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + ops.reshape(mean, (1,)) * (1 - m))
            self.moving_variance.assign(
                self.moving_variance * m + ops.reshape(unbiased, (1,)) * (1 - m)
            )
        else:
            mean, var = self.moving_mean, self.moving_variance
        return (x - mean) * ops.rsqrt(var + self.epsilon) * self.gamma + self.beta

    def call(self, z, training=False):
        return ops.sigmoid(self.logits(z, training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update(
            epsilon=self.epsilon,
            momentum=self.momentum,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def pool_foreground_background(z, p):
    """Eq. 1: v_f = sum(P * Z) / (H * W), v_b = sum((1 - P) * Z) / (H * W).

    Divides by H * W (not by the map's mass), as the reference code does.
    """
    z = ops.cast(z, "float32")
    p = ops.cast(p, "float32")
    hw = ops.cast(ops.shape(z)[1] * ops.shape(z)[2], "float32")
    v_f = ops.sum(p * z, axis=(1, 2)) / hw
    v_b = ops.sum((1.0 - p) * z, axis=(1, 2)) / hw
    return v_f, v_b


@keras.saving.register_keras_serializable(package="c2am_tf")
class Disentangler(keras.layers.Layer):
    """Activation head plus eq. 1: features Z (B, H, W, C) -> (v_f, v_b, P).

    v_f and v_b are (B, C) foreground and background representations; P is the
    class-agnostic activation map (B, H, W, 1) as the head produces it (its
    polarity, foreground-high or not, is only known after training).

    Example:
    >>> v_f, v_b, p = Disentangler()(keras.random.normal((2, 7, 7, 16)))
    >>> v_f.shape, p.shape
    (TensorShape([2, 16]), TensorShape([2, 7, 7, 1]))
    """

    def __init__(self, head=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(head, dict):
            head = keras.saving.deserialize_keras_object(head)
        self.head = head if head is not None else ActivationHead(name="activation_head")

    def build(self, input_shape):
        if not self.head.built:
            self.head.build(input_shape)

    def call(self, z, training=False):
        p = self.head(z, training=training)
        v_f, v_b = pool_foreground_background(z, p)
        return v_f, v_b, p

    def compute_output_shape(self, input_shape):
        b, c = input_shape[0], input_shape[-1]
        return (b, c), (b, c), tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        config = super().get_config()
        config["head"] = keras.saving.serialize_keras_object(self.head)
        return config
