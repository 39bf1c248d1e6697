"""Mask model (c2am_tf.models.masks.mask_model): taps, pseudo-masks, the masked loss, self-training, serialization."""

import os

import keras
import numpy as np
import pytest

from c2am_tf.backbones import build_backbone
from c2am_tf.maps.foreground import foreground_mask
from c2am_tf.models.masks.mask_model import (
    IGNORE,
    MaskModel,
    cached_features,
    masked_binary_crossentropy,
    mirrored_average,
    predict_features,
    prototype_maps,
    pseudo_masks,
    self_train,
)
from c2am_tf.presets import load_model


def _scenes(n=16, size=64, seed=0):
    """Dark images with one bright rectangle each, and its mask."""
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 40, (n, size, size, 3)).astype(np.uint8)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        h, w = rng.randint(16, 40, 2)
        y, x = rng.randint(0, size - h), rng.randint(0, size - w)
        images[i, y:y + h, x:x + w] = rng.randint(180, 256, (h, w, 3))
        masks[i, y:y + h, x:x + w] = True
    return images, masks


def _cut(score_map):
    return foreground_mask(np.clip(score_map, 0, 1), 0.5)  # the stored policy: half the peak


def _iou(a, b):
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_pseudo_masks_band_is_on_the_normalized_map():
    first = np.array([[0.0, 0.1, 0.2, 0.3, 0.5, 0.6]])
    # normalized: 0, .17, .33, .5, .83, 1 -> at or below 0.2 background, above 0.5 foreground
    expected = [[0, 0, IGNORE, IGNORE, 1, 1]]
    maps = np.stack([first, 0.5 * first + 0.2, np.full_like(first, 0.4)])
    out = pseudo_masks(maps)
    np.testing.assert_array_equal(out[:2], [expected, expected])  # any affine rescaling: the same targets
    assert (out[2] == IGNORE).all()  # a flat map decides nothing


def test_masked_loss_ignores_the_band():
    probs = np.array([[0.9, 0.2, 0.5]], np.float32)
    targets = np.array([[1, 0, IGNORE]], np.uint8)
    expected = -(np.log(0.9) + np.log(0.8)) / 2
    assert float(masked_binary_crossentropy(targets, probs)) == pytest.approx(expected, rel=1e-5)
    # Any prediction on an ignored pixel leaves the loss unchanged.
    probs[0, 2] = 0.01
    assert float(masked_binary_crossentropy(targets, probs)) == pytest.approx(expected, rel=1e-5)
    assert float(masked_binary_crossentropy(np.full((1, 3), IGNORE, np.uint8), probs)) == 0.0


def test_prototypes_spread_a_peak_over_the_object_it_belongs_to():
    rng = np.random.RandomState(0)
    obj = np.zeros((8, 8), bool)
    obj[2:6, 1:5] = True
    features = np.where(obj[..., None], [1.0, 0.2, 0.0], [0.0, 0.2, 1.0]) + 0.05 * rng.randn(8, 8, 3)
    teacher = np.zeros((8, 8), np.float32)
    teacher[3, 2] = 1.0          # a peak on one part of the object
    teacher[obj] += 0.3           # the rest of it is in the ignored band
    spread = np.asarray(prototype_maps(features[None], teacher[None]))[0, ..., 0]
    assert spread.shape == (8, 8) and spread.min() == 0.0 and spread.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(spread > 0.5, obj)
    # A second image whose map is flat pools nothing: its (normalized, all-zero) map comes back as it is.
    both = np.asarray(prototype_maps(np.stack([features, features]), np.stack([teacher, np.full((8, 8), 0.5)])))
    np.testing.assert_allclose(both[0, ..., 0], spread, atol=1e-6)
    assert (both[1] == 0).all()


def test_mirrored_average():
    a = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    np.testing.assert_allclose(mirrored_average(a, a[:, :, ::-1]), a)


def _teacher():
    from c2am_tf.models.c2am.model import C2AM

    return C2AM(build_backbone("tiny", weights=None))


def test_an_untrained_decoder_returns_its_prior_upsampled():
    keras.utils.set_random_seed(0)
    images, _ = _scenes(2)
    model = MaskModel(_teacher(), width=8, fine_width=8)
    features = model.features(images.astype(np.float32))
    assert [tuple(f.shape) for f in features] == [(2, 16, 16, 16), (2, 8, 8, 16), (2, 4, 4, 16), (2, 4, 4, 1)]
    out = np.asarray(model(images.astype(np.float32)))
    prior = np.asarray(keras.ops.image.resize(features[3], (16, 16)))
    np.testing.assert_allclose(out, np.clip(prior, 1e-4, 1 - 1e-4), atol=1e-5)


def test_self_training_beats_its_coarse_prior_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    images, masks = _scenes()
    model = MaskModel(_teacher(), width=16, fine_width=16, refinement="guided")
    features = cached_features(model, images)
    assert [f.shape[:3] for f in features] == [(32, 16, 16), (32, 8, 8), (32, 4, 4), (32, 4, 4)]
    # The prior is the truth at stride 16 (each cell its foreground fraction), for images and mirrors.
    coarse = masks.reshape(len(masks), 4, 16, 4, 16).mean(axis=(2, 4)).astype(np.float32)
    features[3] = np.concatenate([coarse, coarse[:, :, ::-1]])[..., None].astype(np.float16)
    losses = self_train(model, images, rounds=2, epochs=15, batch_size=8, lr=1e-2, features=features)
    assert len(losses) == 2
    maps = predict_features(model, [f[:len(images)] for f in features])
    assert maps.shape == (16, 16, 16)
    up = keras.ops.convert_to_numpy(keras.ops.image.resize(maps[..., None], (64, 64)))[..., 0]
    coarse_up = keras.ops.convert_to_numpy(keras.ops.image.resize(coarse[..., None], (64, 64)))[..., 0]
    learned = np.mean([_iou(_cut(u), m) for u, m in zip(up, masks)])
    before = np.mean([_iou(_cut(u), m) for u, m in zip(coarse_up, masks)])
    refined = np.mean([_iou(_cut(model.edge_refine(im, u)), m) for im, u, m in zip(images, maps, masks)])
    # The decoder learns the refined pseudo-masks from random tiny features: close to the prior on its
    # own, better than it once refined along the image's edges (its stored refinement).
    assert learned > 0.6 and refined > before + 0.03, (before, learned, refined)

    model.threshold.assign(0.4)
    path = os.path.join(tmp_path, "masks.keras")
    model.save(path)
    loaded = load_model(path)
    assert isinstance(loaded, MaskModel)
    assert (loaded.refinement, loaded.width, loaded.taps) == ("guided", 16, model.taps)
    assert float(loaded.threshold) == pytest.approx(0.4)
    x = images[:2].astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_bad_refinement_and_targets_are_refused():
    model = MaskModel(_teacher())
    with pytest.raises(ValueError, match="refinement must be one of"):
        MaskModel(_teacher(), refinement="crf")
    with pytest.raises(ValueError, match="targets must be one of"):
        self_train(model, np.zeros((1, 64, 64, 3), np.uint8), targets="fuzzy")


def test_fit_masks_cli_trains_saves_and_keeps_an_existing_model(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    from PIL import Image

    from c2am_tf.models.c2am.model import C2AM

    keras.utils.set_random_seed(0)
    C2AM(build_backbone("tiny", weights=None)).save(tmp_path / "c2am.keras")
    (tmp_path / "images").mkdir()
    images, _ = _scenes(5, 48)
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "images" / f"im{i}.png")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image")
    command = [sys.executable, os.path.join(ROOT, "train", "fit_masks.py"), "--model", str(tmp_path / "c2am.keras"),
               "--images", str(tmp_path / "images"), "--size", "64", "--epochs", "2", "--rounds", "2",
               "--batch-size", "4", "--targets", "hard", "--out", str(tmp_path / "run")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "5 images at 64" in proc.stdout and "skipping 1 unreadable" in proc.stderr
    assert "round 2: loss" in proc.stdout
    model = load_model(str(tmp_path / "run" / "masks.keras"))
    assert isinstance(model, MaskModel) and model(np.zeros((1, 64, 64, 3))).shape == (1, 16, 16, 1)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0] == "round,epoch,loss" and len(log) == 1 + 2 * 2
    # A second run must not replace the trained model without --overwrite.
    before = (tmp_path / "run" / "masks.keras").read_bytes()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "pass --overwrite" in proc.stderr
    assert (tmp_path / "run" / "masks.keras").read_bytes() == before
