"""Refinement arithmetic on hand-made cases, and train/refine.py end to end on a tiny folder."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from c2am_tf.wsss.cam import write_cams
from c2am_tf.wsss.labels import (
    POWER_RANGE,
    PowerCalibration,
    dense_cams,
    refine_with_background,
    refined_labels,
    threshold_labels,
)


def test_background_channel_in_front_then_argmax():
    bg = np.array([[0.9, 0.1], [0.2, 0.2]], np.float32)
    cams = np.zeros((2, 2, 3), np.float32)
    cams[0, 0] = [0.5, 0.0, 0.0]  # background 0.9 wins
    cams[0, 1] = [0.3, 0.0, 0.6]  # class 2 -> label 3
    cams[1, 0] = [0.2, 0.0, 0.0]  # tie with the background: the background (channel 0) wins
    cams[1, 1] = [0.0, 0.7, 0.7]  # tie between classes: the first
    assert refine_with_background(bg[None], cams[None]).numpy()[0].tolist() == [[0, 3], [0, 2]]


def test_low_resolution_background_is_resized_to_the_cams():
    bg = np.array([[1.0, 0.0]], np.float32)  # (1, 2): left background, right foreground
    cams = np.full((4, 8, 1), 0.5, np.float32)
    labels = refine_with_background(bg[None], cams[None]).numpy()[0]
    assert labels.shape == (4, 8)
    assert (labels[:, :3] == 0).all() and (labels[:, -3:] == 1).all()


def test_dense_cams_and_constant_background():
    cams = np.array([[[0.2, 0.8]], [[0.6, 0.1]]], np.float32)  # keys 2 and 0, (2, 1, 2)
    dense = dense_cams([2, 0], cams, 4)
    assert dense.shape == (1, 2, 4)
    assert dense[0, 0].tolist() == pytest.approx([0.6, 0, 0.2, 0])
    assert threshold_labels(0.5, [2, 0], cams, 4).tolist() == [[1, 3]]
    assert threshold_labels(0.9, [2, 0], cams, 4).tolist() == [[0, 0]]
    assert refined_labels(np.array([[0.7, 0.0]]), [2, 0], cams, 4).tolist() == [[0, 3]]
    with pytest.raises(ValueError, match="outside"):
        dense_cams([4], cams[:1], 4)


def test_power_calibration_matches_the_median_cam_to_the_cue_boundary():
    rng = np.random.RandomState(0)
    calibration = PowerCalibration(threshold=0.4)
    cam_inside = []
    for _ in range(3):
        cue = np.ones((8, 8), np.float32)
        cue[2:6, 2:6] = 0.1  # foreground 0.9 peak -> boundary cue 1 - 0.4 * 0.9 = 0.64
        cams = rng.uniform(0, 0.05, (2, 8, 8)).astype(np.float32)
        cams[1, 2:6, 2:6] = rng.uniform(0.1, 0.3, (4, 4))
        cam_inside.append(cams.max(axis=0)[2:6, 2:6].ravel())
        calibration.update(cue[::2, ::2], cams)  # a coarse cue is resized to the CAMs first
    want_cam = np.median(np.concatenate(cam_inside))
    assert calibration.images == 3
    assert calibration.median_cam() == pytest.approx(want_cam, abs=1.0 / 1024)
    assert calibration.power() == pytest.approx(np.log(want_cam) / np.log(0.64), rel=0.01)
    # the boundary's score cue ** G is the median CAM: ambiguous pixels go to CAMs that look like foreground
    assert 0.64 ** calibration.power() == pytest.approx(want_cam, rel=0.01)


def test_power_calibration_clips_and_refuses_an_empty_foreground():
    calibration = PowerCalibration()
    calibration.update(np.ones((4, 4), np.float32), np.ones((1, 4, 4), np.float32))  # the cue sees no foreground
    with pytest.raises(ValueError, match="cannot be calibrated"):
        calibration.power()
    cue = np.ones((4, 4), np.float32)
    cue[1:3, 1:3] = 0.99  # a faint foreground: boundary 0.995, so ln(0.25) / ln(0.995) = 276
    calibration.update(cue, np.full((1, 4, 4), 0.25, np.float32))
    assert calibration.power() == POWER_RANGE[1]
    strong = PowerCalibration()
    cue[1:3, 1:3] = 0.0
    strong.update(cue, np.ones((1, 4, 4), np.float32))  # CAMs at 1 inside: G = 0 -> the bottom of the range
    assert strong.power() == POWER_RANGE[0]


def test_refine_cli_writes_palette_pngs_and_reports_miou(tmp_path):
    images, cams, cues, masks = (tmp_path / d for d in ("images", "cams", "cues", "masks"))
    for d in (images, cams, cues, masks):
        d.mkdir()
    # One 4x4 image; class 1 (key 1 -> label 2) on the left half in the ground truth.
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "a.png")
    gt = np.zeros((4, 4), np.uint8)
    gt[:, :2] = 2
    gt[0, 0] = 255  # ignored
    Image.fromarray(gt).save(masks / "a.png")
    cam = np.zeros((1, 4, 4), np.float32)
    cam[0, :, :3] = 0.4  # spills one column into the background
    write_cams(str(cams / "a.npz"), [1], cam)
    bg = np.zeros((4, 4), np.float32)
    bg[:, 2:] = 1.0  # the cue removes the spill
    np.save(cues / "a.npy", bg)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train", "refine.py"), "--cams", str(cams),
                           "--bg-cues", str(cues), "--images", str(images), "--masks", str(masks),
                           "--out", str(tmp_path / "out"), "--num-classes", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = Image.open(tmp_path / "out" / "a.png")
    assert out.mode == "P" and out.getpalette()[6:9] == [0, 128, 0]  # VOC colour of label 2
    labels = np.asarray(out)
    assert (labels[:, :2] == 2).all() and (labels[:, 2:] == 0).all()
    lines = proc.stdout.splitlines()
    # Constant background: best below 0.4 gives 3 columns of class (IoU 7/11), background 4/4 -> mIoU over 2 classes.
    initial = next(line for line in lines if line.startswith("initial CAMs"))
    assert float(initial.split("mIoU")[1].split()[0]) == pytest.approx((100 * 7 / 11 + 100 * 4 / 8) / 2, abs=0.01)
    assert initial.endswith(f"(foreground IoU {100 * 7 / 11:.1f})")  # class-agnostic: 3 columns for 2
    refined = next(line for line in lines if line.startswith("refined with") and "(power 1)" in line)
    assert float(refined.split("mIoU")[1].split()[0]) == pytest.approx(100.0, abs=0.01)
    assert refined.endswith("(foreground IoU 100.0)")


def test_refine_cli_bg_power_auto_calibrates_the_soft_cue_without_labels(tmp_path):
    images, cams, cues = (tmp_path / d for d in ("images", "cams", "cues"))
    for d in (images, cams, cues):
        d.mkdir()
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(images / "a.png")
    cam = np.zeros((1, 4, 8), np.float32)
    cam[0, :, :4] = 0.2  # low CAMs on the object (left half)
    cam[0, :, 4:6] = 0.05  # a weak spill into the background
    write_cams(str(cams / "a.npz"), [0], cam)
    bg = np.full((4, 8), 0.9, np.float32)
    bg[:, :4] = 0.3  # a soft cue: at power 1 it beats the CAMs everywhere
    np.save(cues / "a.npy", bg)
    # foreground = 1 - cue > 0.5 * 0.7 -> the left half; median CAM there 0.2; boundary 1 - 0.5 * 0.7 = 0.65
    want = np.log(0.2) / np.log(0.65)
    run = [sys.executable, os.path.join(ROOT, "train", "refine.py"), "--cams", str(cams), "--bg-cues", str(cues),
           "--images", str(images), "--num-classes", "1"]
    proc = subprocess.run(run + ["--out", str(tmp_path / "auto"), "--bg-power", "auto"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("cue power"))
    assert float(line.split()[2]) == pytest.approx(want, abs=0.02)
    labels = np.asarray(Image.open(tmp_path / "auto" / "a.png"))
    assert (labels[:, :4] == 1).all() and (labels[:, 4:] == 0).all()  # 0.3 ** 3.7 < 0.2 and 0.9 ** 3.7 > 0.05
    plain = subprocess.run(run + ["--out", str(tmp_path / "one")], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert (np.asarray(Image.open(tmp_path / "one" / "a.png")) == 0).all()  # power 1: the cue wins everywhere
    refused = subprocess.run(run + ["--out", str(tmp_path / "x"), "--bg-power", "auto", "--bg-mask"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--bg-mask has no power" in refused.stderr


def test_bg_mask_cue_is_the_models_own_mask_at_its_threshold(tmp_path):
    import keras

    from c2am_tf.backbones import build_backbone
    from c2am_tf.maps.foreground import foreground_mask
    from c2am_tf.models.c2am.model import C2AM
    from c2am_tf.wsss.pipeline import CueSource

    keras.utils.set_random_seed(0)
    model = C2AM(build_backbone("tiny", weights=None))
    kernel = model.head.weights[0]
    kernel.assign(np.random.RandomState(0).normal(0, 2.0, kernel.shape))  # maps that vary
    model.threshold.assign(0.6)
    model.save(tmp_path / "c2am.keras")
    image = np.random.RandomState(1).randint(0, 256, (64, 64, 3)).astype(np.uint8)
    p = np.asarray(model(image[None].astype(np.float32)))[0, ..., 0]
    cue = CueSource(str(tmp_path / "c2am.keras"), 64, binary=True)("x", image)
    want = (~foreground_mask(p, 0.6)).astype(np.float32)
    assert 0 < want.mean() < 1
    np.testing.assert_array_equal(cue, want)
    with pytest.raises(ValueError, match="--bg-mask needs"):
        CueSource(str(tmp_path), 64, binary=True)


def test_refine_cli_needs_images_or_a_dataset(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train", "refine.py"), "--cams", str(tmp_path),
                           "--bg-cues", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--images" in proc.stderr
