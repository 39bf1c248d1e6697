"""CAMs from a GAP classifier against a hand-computed case; CAM files in both layouts."""

import os

import keras
import numpy as np
import pytest

from c2am_tf.backbones import build_backbone
from c2am_tf.models.classifier import build_classifier, class_activation_maps
from c2am_tf.wsss.cam import cam_files, read_cams, write_cams


def _identity_backbone():
    images = keras.Input((None, None, 3))
    return keras.Model(images, keras.layers.Identity()(images), name="identity")


def test_cams_hand_computed():
    classifier = build_classifier(_identity_backbone(), 2)
    kernel = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)  # class 0: r - b, class 1: g
    classifier.get_layer("logits").set_weights([kernel, np.array([5.0, -5.0], np.float32)])  # bias unused
    image = np.array([[[4, 1, 0], [1, 2, 3]], [[2, 0, 1], [0, 0, 0]]], np.float32)[None]
    cams = class_activation_maps(classifier, image)
    raw0 = np.array([[4, 0], [1, 0]], np.float32)  # ReLU(r - b)
    raw1 = np.array([[1, 2], [0, 0]], np.float32)  # ReLU(g)
    np.testing.assert_allclose(cams[0, 0], raw0 / (4 + 1e-5), rtol=1e-6)
    np.testing.assert_allclose(cams[0, 1], raw1 / (2 + 1e-5), rtol=1e-6)
    up = class_activation_maps(classifier, image, size=(4, 6))
    assert up.shape == (1, 2, 4, 6) and up.max() <= 1.0 and up.min() >= 0.0


def test_classifier_with_a_factory_backbone_saves_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    classifier = build_classifier(build_backbone("tiny", weights=None), 3)
    images = np.random.RandomState(0).randint(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    before = class_activation_maps(classifier, images)
    classifier.save(tmp_path / "c.keras")
    again = keras.saving.load_model(tmp_path / "c.keras")
    np.testing.assert_allclose(class_activation_maps(again, images), before, atol=1e-6)
    assert before.shape == (2, 3, 4, 4)


def test_cam_files_in_our_format_and_the_common_npy_layout(tmp_path):
    cams = np.random.RandomState(0).rand(2, 5, 7).astype(np.float32)
    write_cams(str(tmp_path / "a.npz"), [3, 11], cams)
    keys, got = read_cams(str(tmp_path / "a.npz"))
    assert keys.tolist() == [3, 11]
    np.testing.assert_allclose(got, cams, atol=1e-3)  # stored as float16
    np.save(tmp_path / "b.npy", {"keys": np.array([14]), "cam": np.zeros((1, 2, 2)), "hr_cam": cams[:1]})
    keys, got = read_cams(str(tmp_path / "b.npy"))
    assert keys.tolist() == [14] and np.array_equal(got, cams[:1])
    np.save(tmp_path / "c.npy", {"keys": np.array([1, 2]), "high_res": cams})  # IRN's name
    assert read_cams(str(tmp_path / "c.npy"))[1].shape == (2, 5, 7)
    assert sorted(cam_files(str(tmp_path))) == ["a", "b", "c"]


def test_bad_cam_files_name_the_file(tmp_path):
    np.save(tmp_path / "x.npy", {"keys": np.array([1, 2]), "hr_cam": np.zeros((3, 4, 4))})
    with pytest.raises(ValueError, match=r"x\.npy: 2 keys but 3 maps"):
        read_cams(str(tmp_path / "x.npy"))
    np.save(tmp_path / "y.npy", {"keys": np.array([1])})
    with pytest.raises(ValueError, match=r"y\.npy: not a CAM file.*hr_cam"):
        read_cams(str(tmp_path / "y.npy"))
    (tmp_path / "z.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"z\.npz: not a CAM file"):
        read_cams(str(tmp_path / "z.npz"))
    with pytest.raises(ValueError, match="len\\(keys\\)"):
        write_cams(str(tmp_path / "w.npz"), [1, 2], np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match=r"none: CAM folder not found \(--cams\)"):  # an InputError: one line
        cam_files(str(tmp_path / "none"))


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("where", ["top", "value", "key"])
def test_a_cam_npy_that_would_run_code_is_refused_with_how_to_convert(tmp_path, where):
    from c2am_tf.utils.safe_pickle import UnsafePickleError

    marker = tmp_path / "pwned"
    payload = {"top": _Evil(marker), "value": {"keys": np.array([1]), "hr_cam": _Evil(marker)},
               "key": {_Evil(marker): 1, "keys": np.array([1])}}[where]
    np.save(tmp_path / "evil.npy", np.array(payload, dtype=object) if where != "top" else
            np.array([payload], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=r"evil\.npy: refusing to load 'posix.mkdir'.*write_cams"):
        read_cams(str(tmp_path / "evil.npy"))
    assert not marker.exists()


def test_a_cam_npy_of_a_numpy_subclass_is_refused(tmp_path):
    from c2am_tf.utils.safe_pickle import UnsafePickleError

    np.save(tmp_path / "m.npy", {"keys": np.array([1]), "hr_cam": np.ma.masked_array(np.zeros((1, 2, 2)))})
    with pytest.raises(UnsafePickleError, match=r"m\.npy: refusing to load 'numpy\.ma\.core"):
        read_cams(str(tmp_path / "m.npy"))


def test_fit_classifier_cli_writes_cams_of_the_labelled_class_at_image_size(tmp_path, capsys):
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from PIL import Image

    root = tmp_path / "pets"
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    names = ["Abyssinian_1", "Abyssinian_2", "Bengal_1", "Bengal_2"]
    (root / "annotations" / "trainval.txt").write_text("".join(
        f"{n} {1 if n.startswith('A') else 6} 1 1\n" for n in names))
    rng = np.random.RandomState(0)
    for n in names:
        Image.fromarray(rng.randint(0, 256, (40, 56, 3)).astype(np.uint8)).save(root / "images" / f"{n}.jpg")
        Image.fromarray(np.full((40, 56), 2, np.uint8)).save(root / "annotations" / "trimaps" / f"{n}.png")
    flags = ["--dataset", "pets", "--data-dir", str(root), "--backbone", "tiny", "--size", "64", "--epochs", "1",
             "--batch-size", "2", "--out", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train", "fit_classifier.py")] + flags
                          + ["--cams-out", str(tmp_path / "cams")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trained = (tmp_path / "run" / "classifier.keras").read_bytes()
    # a second run must not replace the trained classifier: refused with the flags, before any training
    from c2am_tf.cli import run_command

    with pytest.raises(SystemExit) as err:
        run_command("fit-classifier", flags)
    assert err.value.code == 2 and "classifier.keras exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "run" / "classifier.keras").read_bytes() == trained
    keys, cams = read_cams(str(tmp_path / "cams" / "Bengal_2.npz"))
    assert keys.tolist() == [1] and cams.shape == (1, 40, 56)
    assert sorted(cam_files(str(tmp_path / "cams"))) == sorted(names)
