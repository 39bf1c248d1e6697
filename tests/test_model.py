"""C2AM model: a train step, parameter groups, replicas, polarity, saving."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from c2am_tf.backbones import build_backbone
from c2am_tf.models.c2am.model import C2AM, border_minus_center
from c2am_tf.models.c2am.optim import parameter_groups

HERE = os.path.dirname(os.path.abspath(__file__))


def _model(recipe="reference", backbone="tiny", **kw):
    keras.utils.set_random_seed(0)
    model = C2AM(build_backbone(backbone, weights=None), recipe=recipe, **kw)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def _images(n=8, size=64, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_one_train_step_updates_weights_and_reports_the_loss():
    model = _model()
    before = [v.numpy() for v in model.trainable_variables]
    logs = model.train_on_batch(_images(), return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0
    assert logs["loss"] == pytest.approx(logs["sim_max_bg"] + logs["sim_min"] + logs["sim_max_fg"], rel=1e-5)
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert all(changed)


def test_reference_recipe_freezes_batchnorm_affine_and_paper_trains_it():
    bn_backbone = build_backbone("mobilenet_v2", weights=None)
    ref = dict((v.path, m) for v, m, _ in parameter_groups(bn_backbone, _model().head, "reference"))
    assert not any("gamma" in p or "beta" in p for p in ref)
    assert any(p.startswith("block_1_depthwise/") for p in ref)
    model = _model("reference")
    gamma = model.head.gamma.numpy()
    model.train_on_batch(_images())
    np.testing.assert_array_equal(model.head.gamma.numpy(), gamma)
    model = _model("paper")
    gamma = model.head.gamma.numpy()
    model.train_on_batch(_images())
    assert not np.array_equal(model.head.gamma.numpy(), gamma)


def test_paper_recipe_multiplies_the_head_learning_rate():
    """With plain SGD, a group's step is lr * multiplier * (grad + decay * w)."""
    model = _model("paper", weight_decay=0.0)
    images = _images()
    with tf.GradientTape() as tape:
        v_f, v_b, _, _ = model.features(images, training=True)
        loss = model.contrastive_loss(v_f, v_b)
    kernel, beta = model.head.kernel, model.head.beta
    # the moving statistics moved in that call; restore them so the step sees the same state
    model.head.moving_mean.assign([0.0])
    model.head.moving_variance.assign([1.0])
    g_kernel, g_beta = tape.gradient(loss, [kernel, beta])
    k0, b0 = kernel.numpy(), beta.numpy()
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    model.train_on_batch(images)
    want = 1e-3 * 10 * g_kernel.numpy()
    np.testing.assert_allclose(k0 - kernel.numpy(), want, atol=1e-3 * np.abs(want).max())
    np.testing.assert_allclose(b0 - beta.numpy(), 1e-3 * 20 * g_beta.numpy(), rtol=1e-3)


@pytest.mark.parametrize("variant", ["reference", "paper"])  # own rows per replica / the whole loss on each
def test_two_replicas_equal_one_device(tmp_path, variant):
    results = []
    for n in (1, 2):
        out = tmp_path / f"r{n}.npz"
        subprocess.run([sys.executable, os.path.join(HERE, "replica_step.py"), str(n), str(out), variant],
                       check=True, capture_output=True, timeout=300)
        results.append(np.load(out))
    one, two = results
    assert float(one["loss"]) == pytest.approx(float(two["loss"]), abs=1e-4)
    np.testing.assert_allclose(one["moving_variance"], two["moving_variance"], atol=1e-4)
    moved = 0.0
    for key in one.files:
        if key.startswith("after_"):
            np.testing.assert_allclose(one[key], two[key], atol=1e-4, err_msg=key)
            moved = max(moved, float(np.max(np.abs(one[key] - one["before_" + key[6:]]))))
    assert moved > 1e-3  # the step really changed the weights


def test_polarity_orients_the_map_and_is_saved(tmp_path):
    model = _model()
    images = _images(2)
    raw = model.features(images)[2].numpy()
    np.testing.assert_allclose(model.predict(images, verbose=0), raw, atol=1e-6)
    model.set_polarity_from_statistic(0.2)  # border brighter than the inside: inverted
    np.testing.assert_allclose(model.predict(images, verbose=0), 1 - raw, atol=1e-6)
    model.threshold.assign(0.35)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert float(loaded.polarity.numpy()) == -1.0
    assert float(loaded.threshold.numpy()) == pytest.approx(0.35)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    assert loaded.get_config()["recipe"] == "reference"


def test_border_statistic_sign():
    p = np.zeros((2, 6, 6, 1), np.float32)
    p[:, 2:4, 2:4] = 1.0  # a centred object
    assert float(border_minus_center(p)) < 0
    assert float(border_minus_center(1 - p)) > 0


def test_bad_backbone_bn_mode():
    with pytest.raises(ValueError, match="backbone_bn"):
        _model(backbone_bn="sometimes")


def test_box_band_is_a_setting_that_round_trips_and_is_checked(tmp_path):
    model = _model(box_band=0.1)
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert keras.saving.load_model(path).box_band == pytest.approx(0.1)
    assert _model().box_band == 0.0  # files saved before the setting existed load with it off
    with pytest.raises(ValueError, match="box_band"):
        _model(box_band=-0.1)


def test_a_frozen_backbone_trains_through_its_folded_twin_and_saves_without_it(tmp_path):
    import keras

    from c2am_tf.training.trainer import TrainConfig, build_model

    keras.utils.set_random_seed(0)
    folded = build_model(TrainConfig(weights=None), 10)
    keras.utils.set_random_seed(0)
    plain = build_model(TrainConfig(weights=None), 10)
    plain._folded.value = None  # the same model, trained through its backbone
    assert folded._folded.value is not None
    x = np.random.RandomState(0).randint(0, 255, (4, 64, 64, 3)).astype(np.uint8)
    for _ in range(2):
        a, b = folded.train_on_batch(x, return_dict=True), plain.train_on_batch(x, return_dict=True)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for u, v in zip(folded.head.get_weights(), plain.head.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-3, atol=1e-5)
    folded.save(tmp_path / "m.keras")
    plain.save(tmp_path / "p.keras")
    import zipfile

    sizes = [zipfile.ZipFile(tmp_path / n).getinfo("model.weights.h5").file_size for n in ("m.keras", "p.keras")]
    assert abs(sizes[0] - sizes[1]) < 1024  # the twin's weights are not saved
    # a trained backbone, or BN in training mode, is not folded
    assert not build_model(TrainConfig(weights=None, freeze_backbone=False, recipe="reference"), 10).fold_frozen_backbone()
