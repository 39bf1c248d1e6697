"""ActivationHead / Disentangler: parity with the authors' PyTorch modules (B_disentangler.npz)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import golden

from c2am_tf.models.c2am.layers import ActivationHead, Disentangler, RoutedHead
from c2am_tf.models.c2am.losses import C2AMLoss

CASES = ["b0", "b1", "b2"]


def _setup(d, p):
    z = tf.constant(d[p + "_Z_nchw"].transpose(0, 2, 3, 1))
    dis = Disentangler()
    dis.build(z.shape)
    head = dis.head
    head.kernel.assign(d[p + "_conv_weight_keras"])
    head.gamma.assign(d[p + "_bn_gamma"])
    head.beta.assign(d[p + "_bn_beta"])
    head.moving_mean.assign(d[p + "_bn_running_mean"])
    head.moving_variance.assign(d[p + "_bn_running_var"])
    assert head.epsilon == pytest.approx(float(d[p + "_bn_eps"]))
    assert head.momentum == pytest.approx(1 - float(d[p + "_bn_momentum_torch"]))
    return z, dis


def _close(got, want, tol=1e-5, scale=None):
    got, want = np.asarray(got), np.asarray(want)
    scale = scale or max(float(np.max(np.abs(want))), 1e-6)
    assert np.max(np.abs(got - want)) <= tol * scale, np.max(np.abs(got - want)) / scale


@pytest.mark.parametrize("case", CASES)
def test_eval_mode_matches_reference(case):
    d = golden("B_disentangler")
    z, dis = _setup(d, case)
    v_f, v_b, p = dis(z, training=False)
    _close(p, d[case + "_eval_ccam_nhwc"])
    _close(v_f, d[case + "_eval_fg_feats"])
    _close(v_b, d[case + "_eval_bg_feats"])


@pytest.mark.parametrize("case", CASES)
def test_train_mode_outputs_stats_and_gradients_match_reference(case):
    d = golden("B_disentangler")
    z, dis = _setup(d, case)
    head = dis.head
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        v_f, v_b, p = dis(z, training=True)
        parts = C2AMLoss(alpha=0.05).components(v_f, v_b)
        total = parts[0] + parts[1] + parts[2]
    _close(p[..., 0], d[case + "_train_ccam_nchw"][:, 0])
    _close(v_f, d[case + "_train_fg_feats"])
    _close(v_b, d[case + "_train_bg_feats"])
    _close(head.moving_mean.numpy(), d[case + "_train_running_mean_after"])
    _close(head.moving_variance.numpy(), d[case + "_train_running_var_after"])
    _close([float(x) for x in parts] + [float(total)], d[case + "_train_losses_alpha005"])
    # Outputs match to 1e-5. Gradients go through BatchNorm's batch-statistics
    # backward, a cancelling float32 sum over N*H*W*9*C terms whose order differs
    # from PyTorch's: 1.8e-4 of the max for C = 3072 (also with oneDNN off).
    grads = tape.gradient(total, [head.kernel, head.gamma, head.beta])
    _close(grads[0], d[case + "_train_grad_conv_weight_keras"], 5e-4)
    _close(grads[1], d[case + "_train_grad_bn_gamma"], 5e-4)
    # beta's gradient is a sum that nearly cancels: compare on gamma's scale.
    _close(grads[2], d[case + "_train_grad_bn_beta"], 5e-4, scale=abs(float(d[case + "_train_grad_bn_gamma"][0])))
    if case + "_train_grad_Z_nchw" in d:
        _close(tape.gradient(total, z), d[case + "_train_grad_Z_nchw"].transpose(0, 2, 3, 1), 5e-4)


def test_pooling_divides_by_spatial_size_not_map_mass():
    z = tf.ones((1, 2, 2, 3))
    dis = Disentangler()
    dis.build(z.shape)
    dis.head.kernel.assign(np.zeros((3, 3, 3, 1), np.float32))  # P = sigmoid(0) = 0.5 everywhere
    v_f, v_b, p = dis(z, training=False)
    np.testing.assert_allclose(p.numpy(), 0.5 * np.ones((1, 2, 2, 1)), atol=1e-3)
    np.testing.assert_allclose(v_f.numpy(), v_b.numpy(), atol=1e-3)
    np.testing.assert_allclose(v_f.numpy(), 0.5 * np.ones((1, 3)), atol=1e-3)


def test_head_config_and_keras_round_trip(tmp_path):
    head = ActivationHead(epsilon=1e-4, momentum=0.8, name="h")
    assert ActivationHead.from_config(head.get_config()).momentum == 0.8
    inputs = keras.Input((5, 6, 4))
    v_f, v_b, p = Disentangler(head=head)(inputs)
    model = keras.Model(inputs, [v_f, v_b, p])
    x = np.random.RandomState(0).randn(2, 5, 6, 4).astype("float32")
    path = str(tmp_path / "d.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)
    assert loaded.layers[1].head.epsilon == 1e-4


def _constant_head(name, beta):
    """An activation head whose map is sigmoid(beta) everywhere (zero kernel)."""
    head = ActivationHead(name=name, kernel_initializer="zeros")
    head.build((None, None, None, 4))
    head.beta.assign([beta])
    return head


def _routed(routes, polarities):
    heads = [_constant_head("head_0", -2.0), _constant_head("head_1", 2.0)]
    return RoutedHead(heads, routes, polarities, centres=np.eye(2, 4, dtype="float32"))


def _features_near(clusters):
    """(B, 3, 3, 4) features whose average points at centre 0 or 1 (channel 0 or 1)."""
    z = np.full((len(clusters), 3, 3, 4), 0.1, np.float32)
    for i, c in enumerate(clusters):
        z[i, ..., c] = 5.0
    return z


def test_routed_head_maps_each_image_with_its_clusters_head():
    low, high = 1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(-2.0))
    z = _features_near([0, 1, 1, 0])
    maps = np.asarray(_routed([0, 1], [1, 1])(z))[:, 0, 0, 0]
    np.testing.assert_allclose(maps, [low, high, high, low], rtol=1e-5)
    swapped = np.asarray(_routed([1, 0], [1, 1])(z))[:, 0, 0, 0]
    np.testing.assert_allclose(swapped, [high, low, low, high], rtol=1e-5)
    flipped = np.asarray(_routed([0, 1], [1, -1])(z))[:, 0, 0, 0]  # head 1 learned the background
    np.testing.assert_allclose(flipped, [low, 1 - high, 1 - high, low], rtol=1e-5)


def test_routed_head_round_trips_and_refuses_bad_routes(tmp_path):
    from c2am_tf.backbones import tiny
    from c2am_tf.models.c2am.model import C2AM

    backbone = tiny(channels=4)
    model = C2AM(backbone, Disentangler(_routed([1, 0], [1, -1]), name="disentangler"))
    images = np.random.RandomState(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    model.save(tmp_path / "routed.keras")
    loaded = keras.saving.load_model(tmp_path / "routed.keras")
    assert isinstance(loaded.head, RoutedHead) and loaded.head.routes == [1, 0]
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(model(images)), atol=1e-6)
    assert not model.head.trainable_weights  # assembled from trained heads: nothing trains
    with pytest.raises(ValueError, match="routes"):
        RoutedHead([_constant_head("a", 0.0)], routes=[0, 1], polarities=[1])
    with pytest.raises(ValueError, match="polarities"):
        RoutedHead([_constant_head("a", 0.0)], routes=[0], polarities=[1, 1])
