"""Background-cue model: stride-8 output, pseudo labels from a C2AM model, training, saving."""

import keras
import numpy as np
import pytest

from c2am_tf.backbones import build_backbone
from c2am_tf.models.c2am.model import C2AM
from c2am_tf.models.cue_model import build_cue_model
from c2am_tf.wsss.bgcues import background_map, is_c2am, pseudo_labels


@pytest.fixture(scope="module")
def c2am():
    keras.utils.set_random_seed(0)
    return C2AM(build_backbone("tiny", weights=None))


def _images(n=8, size=64):
    return np.random.RandomState(0).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_pseudo_labels_soft_and_hard(c2am):
    images = _images(4)
    maps = np.asarray(c2am.predict(images, verbose=0))[..., 0]
    soft = pseudo_labels(c2am, images, "soft")
    np.testing.assert_allclose(soft, 1.0 - maps, atol=1e-6)
    hard = pseudo_labels(c2am, images, "hard", threshold=0.5)
    u8 = (maps * 255).astype(np.uint8)
    expected = u8 <= np.floor(0.5 * u8.max(axis=(1, 2), keepdims=True))
    np.testing.assert_array_equal(hard, expected.astype(np.float32))
    with pytest.raises(ValueError, match="pseudo labels"):
        pseudo_labels(c2am, images, "fuzzy")


def test_cue_model_learns_its_targets_and_round_trips(c2am, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_cue_model("tiny", weights=None, features="concat")
    # Each 8x8 block is dark (background) or bright (foreground): a target the features can see.
    rng = np.random.RandomState(1)
    dark = rng.rand(8, 8, 8) < 0.5
    blocks = np.where(dark, rng.randint(0, 60, dark.shape), rng.randint(190, 256, dark.shape))
    images = np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)[..., None].repeat(3, axis=-1).astype(np.uint8)
    out = model(images.astype(np.float32))
    assert out.shape == (8, 8, 8, 1)
    targets = dark[..., None].astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    first = model.evaluate(images, targets, verbose=0)
    model.fit(images, targets, epochs=30, batch_size=8, verbose=0)
    assert model.evaluate(images, targets, verbose=0) < 0.5 * first
    model.save(tmp_path / "cues.keras")
    again = keras.saving.load_model(tmp_path / "cues.keras")
    assert not is_c2am(again) and is_c2am(c2am)
    np.testing.assert_allclose(background_map(again, images[0], 64), np.asarray(model(images[:1]))[0, ..., 0],
                               atol=1e-5)


def test_background_map_of_c2am_is_one_minus_p(c2am):
    image = _images(1)[0]
    p = np.asarray(c2am(image[None].astype(np.float32)))[0, ..., 0]
    np.testing.assert_allclose(background_map(c2am, image, 64), 1.0 - p, atol=1e-6)


def test_background_map_of_a_mask_model_is_one_minus_its_refined_mask():
    from c2am_tf.models.masks.mask_model import MaskModel

    keras.utils.set_random_seed(0)
    model = MaskModel(C2AM(build_backbone("tiny", weights=None)), width=8, fine_width=8)
    image = _images(1)[0]
    p = np.asarray(model(image[None].astype(np.float32)))[0, ..., 0]
    cue = background_map(model, image, 64)
    assert cue.shape == (64, 64)  # the mask's refinement works at image size
    np.testing.assert_allclose(cue, 1.0 - model.edge_refine(image, p), atol=1e-6)
    assert not is_c2am(model)


def test_fit_bgcues_cli_writes_the_model_and_the_cues(c2am, tmp_path, capsys):
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from PIL import Image

    c2am.save(tmp_path / "c2am.keras")
    (tmp_path / "images").mkdir()
    for i, image in enumerate(_images(5, 48)):
        Image.fromarray(image).save(tmp_path / "images" / f"im{i}.png")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train", "fit_bgcues.py"), "--c2am",
                           str(tmp_path / "c2am.keras"), "--images", str(tmp_path / "images"), "--backbone", "tiny",
                           "--size", "64", "--epochs", "1", "--batch-size", "2", "--pseudo", "hard",
                           "--out", str(tmp_path / "run"), "--cues-out", str(tmp_path / "cues")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "5 images; hard pseudo labels" in proc.stdout and "skipping 1 unreadable" in proc.stderr
    trained = (tmp_path / "run" / "bgcues.keras").read_bytes()
    from c2am_tf.cli import run_command

    with pytest.raises(SystemExit) as err:  # a second run keeps the first one's model
        run_command("fit-bgcues", ["--c2am", str(tmp_path / "c2am.keras"), "--images", str(tmp_path / "images"),
                                   "--out", str(tmp_path / "run")])
    assert err.value.code == 2 and "bgcues.keras exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "run" / "bgcues.keras").read_bytes() == trained
    cues = sorted(os.listdir(tmp_path / "cues"))
    assert cues == [".c2am_tf-written"] + [f"im{i}.npy" for i in range(5)]  # and the record of what runs wrote
    cue = np.load(tmp_path / "cues" / "im0.npy")
    assert cue.shape == (8, 8) and 0.0 <= cue.min() and cue.max() <= 1.0
