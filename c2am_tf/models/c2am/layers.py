"""C2AM layers: the activation head, the foreground/background disentangler (paper eq. 1), and the routed head."""

import keras
import numpy as np
from keras import ops


def _sync_sum(values):
    """Sums tensors over replicas when running under a distribution strategy.

    TensorFlow is imported here, not at the top, so that the layers (and a preset's map network) also run
    on Keras's JAX and PyTorch backends, where there is no TensorFlow replica context.
    """
    if keras.backend.backend() != "tensorflow":
        return values
    import tensorflow as tf  # defers TensorFlow: the layers also run on Keras's JAX and PyTorch backends

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


@keras.saving.register_keras_serializable(package="c2am_tf")
class RoutedHead(keras.layers.Layer):
    """Several trained activation heads and a router: each image's map comes from the head of the
    cluster whose centre is nearest (cosine) to its average-pooled features, unless its classes vote.

    C2AM's contrast pulls the foregrounds of a batch together, so a head trained on a mixed collection
    (birds, pets, street scenes) learns a compromise; a head trained on one look-alike cluster (the birds)
    is sharper there. ``c2am_tf.training.routing`` builds one from a head trained on every image and heads trained
    on chosen k-means clusters; clusters without a head of their own use the general head. The output
    is foreground-high (each head's polarity is applied here), so the model around it has polarity +1.
    The heads are trained already: the router does not train.

    Class votes (``class_routes``): the nearest centre misses the images of a cluster that sit in another
    cluster's scene (a bird on water nearest the scenes' centre). With an ImageNet classifier on the same
    pooled features (``class_kernel``, ``class_bias``: for EfficientNet-Lite, its own ImageNet classifier),
    an image whose ``class_votes`` best classes include one routed to a head goes to that head (the head of
    its best-scoring such class); other images keep their nearest centre's head.

    Calibration (``exponents``): each head's map is raised to its exponent, so that one stored threshold
    t boxes head j's map at its own best threshold t_j (``exponent = ln t / ln t_j``; 1: unchanged).

    Args:
        heads: ``ActivationHead`` layers (or their serialized configs).
        routes: one head index per cluster.
        polarities: one +1 / -1 per head (-1: that head's map is background-high).
        centres: (clusters, channels) unit-norm cluster centres, or None (zeros until weights load).
        class_routes: None, or one head index per classifier class (-1: the class does not vote).
        class_votes: how many of an image's best classes vote.
        class_weights: None, or (kernel (channels, classes), bias (classes,)) of that classifier.
        exponents: one per head (default 1).

    Example:
    >>> heads = [ActivationHead(name="head_0"), ActivationHead(name="head_1")]
    >>> centres = np.eye(2, 16, dtype="float32")
    >>> routed = RoutedHead(heads, routes=[0, 1], polarities=[1, -1], centres=centres)
    >>> routed(keras.random.normal((3, 7, 7, 16))).shape
    TensorShape([3, 7, 7, 1])
    """

    def __init__(self, heads, routes, polarities, centres=None, class_routes=None, class_votes=5,
                 class_weights=None, exponents=None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.heads = [keras.saving.deserialize_keras_object(h) if isinstance(h, dict) else h for h in heads]
        self.routes = [int(r) for r in routes]
        self.polarities = [float(p) for p in polarities]
        if len(self.polarities) != len(self.heads):
            raise ValueError(f"{len(self.heads)} heads need {len(self.heads)} polarities, got {len(self.polarities)}")
        if not self.routes or any(not 0 <= r < len(self.heads) for r in self.routes):
            raise ValueError(f"routes {self.routes} must each name one of the {len(self.heads)} heads")
        self._initial_centres = None if centres is None else np.asarray(centres, "float32")
        if self._initial_centres is not None and self._initial_centres.shape[0] != len(self.routes):
            raise ValueError(f"{self._initial_centres.shape[0]} centres for {len(self.routes)} routes")
        self.class_routes = None if class_routes is None else [int(r) for r in class_routes]
        if self.class_routes is not None and any(not -1 <= r < len(self.heads) for r in self.class_routes):
            raise ValueError(f"class routes must each be -1 or one of the {len(self.heads)} heads")
        self.class_votes = int(class_votes)
        if self.class_routes is not None and not 1 <= self.class_votes <= len(self.class_routes):
            raise ValueError(f"class_votes must be 1..{len(self.class_routes)}, got {self.class_votes}")
        self._initial_class_weights = class_weights
        self.exponents = [1.0] * len(self.heads) if exponents is None else [float(e) for e in exponents]
        if len(self.exponents) != len(self.heads) or any(not e > 0 for e in self.exponents):
            raise ValueError(f"{len(self.heads)} heads need {len(self.heads)} positive exponents, got {self.exponents}")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        initial = self._initial_centres
        if initial is not None and initial.shape[1] != channels:
            raise ValueError(f"centres have {initial.shape[1]} channels, the features {channels}")
        self.centres = self.add_weight(
            name="centres", shape=(len(self.routes), channels), trainable=False,
            initializer=keras.initializers.Constant(initial) if initial is not None else "zeros",
        )
        if self.class_routes is not None:
            kernel, bias = (None, None) if self._initial_class_weights is None else self._initial_class_weights
            classes = len(self.class_routes)
            if kernel is not None and np.shape(kernel) != (channels, classes):
                raise ValueError(f"the class kernel is {np.shape(kernel)}, the features need ({channels}, {classes})")
            self.class_kernel = self.add_weight(
                name="class_kernel", shape=(channels, classes), trainable=False,
                initializer=keras.initializers.Constant(kernel) if kernel is not None else "zeros")
            self.class_bias = self.add_weight(
                name="class_bias", shape=(classes,), trainable=False,
                initializer=keras.initializers.Constant(bias) if bias is not None else "zeros")
        for head in self.heads:
            if not head.built:
                head.build(input_shape)

    def _pooled(self, z):
        return ops.mean(ops.cast(z, "float32"), axis=(1, 2))

    def similarities(self, z):
        """(B, clusters) cosine of each image's average-pooled features with each centre."""
        v = self._pooled(z)
        v = v / ops.maximum(ops.norm(v, axis=-1, keepdims=True), 1e-12)
        return ops.matmul(v, ops.transpose(self.centres))

    def clusters(self, z):
        """(B,) index of each image's nearest centre."""
        return ops.argmax(self.similarities(z), axis=-1)

    def class_logits(self, z):
        """(B, classes) the class-vote classifier's logits of each image's average-pooled features."""
        return ops.matmul(self._pooled(z), self.class_kernel) + self.class_bias

    def head_weights(self, z):
        """(B, heads) each image's head as a one-hot row (a tie shares the row)."""
        # one-hot rows and 0/1 matrices instead of argmax and gathers, which do not convert to TFLite
        routes = np.eye(len(self.heads), dtype="float32")[self.routes]
        s = self.similarities(z)
        nearest = ops.cast(s >= ops.max(s, axis=-1, keepdims=True), "float32")
        weights = ops.matmul(nearest / ops.sum(nearest, axis=-1, keepdims=True), routes)
        if self.class_routes is None:
            return weights
        member = np.zeros((len(self.class_routes), len(self.heads)), bool)
        for c, h in enumerate(self.class_routes):
            if h >= 0:
                member[c, h] = True
        logits = self.class_logits(z)
        kth = ops.top_k(logits, self.class_votes, sorted=True)[0][:, -1:]
        voting = ops.logical_and(ops.expand_dims(logits >= kth, -1), member[None])
        score = ops.max(ops.where(voting, ops.expand_dims(logits, -1), -1e9), axis=1)  # (B, heads)
        hit = ops.max(score, axis=-1, keepdims=True) > -1e8
        best = ops.cast(score >= ops.max(score, axis=-1, keepdims=True), "float32")
        return ops.where(hit, best / ops.sum(best, axis=-1, keepdims=True), weights)

    def routed_heads(self, z):
        """(B,) index of each image's head."""
        return ops.argmax(self.head_weights(z), axis=-1)

    def head_maps(self, z, calibrated=True):
        """(B, H, W, heads) every head's foreground-high map (raised to its exponent when ``calibrated``)."""
        maps = []
        for head, polarity, exponent in zip(self.heads, self.polarities, self.exponents):
            p = ops.cast(head(z, training=False), "float32")
            p = p if polarity > 0 else 1.0 - p
            if calibrated and exponent != 1.0:
                p = ops.power(ops.maximum(p, 1e-12), exponent)
            maps.append(p)
        return ops.concatenate(maps, axis=-1)

    def call(self, z, training=False):
        weights = self.head_weights(z)[:, None, None, :]
        return ops.sum(self.head_maps(z) * weights, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update(heads=[keras.saving.serialize_keras_object(h) for h in self.heads], routes=self.routes,
                      polarities=self.polarities)
        if self.class_routes is not None:
            config.update(class_routes=self.class_routes, class_votes=self.class_votes)
        if any(e != 1.0 for e in self.exponents):
            config["exponents"] = self.exponents
        return config
