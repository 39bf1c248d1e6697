"""Inference: map -> box in image pixels, train/extract_boxes.py and python -m c2am_tf predict."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from c2am_tf.__main__ import main as cli
from c2am_tf.inference import crop_box_to_original, load_model, map_to_box
from c2am_tf.training import TrainConfig, run_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(dataset="synthetic", backbone="tiny", weights=None, epochs=1, steps_per_epoch=2,
                      batch_size=8, synthetic_count=16, synthetic_size=64, resize=64, crop=56,
                      eval_resize=64, eval_crop=64, out=str(out), verbose=0)
    run_training(cfg)
    return str(out / "final.keras")


def test_map_to_box_scales_each_axis():
    m = np.zeros((4, 4), np.float32)
    m[1:3, 0:2] = 1.0
    box, fraction = map_to_box(m, 0.5, width=400, height=200)
    np.testing.assert_allclose(box, [0, 50, 200, 150])
    assert fraction == pytest.approx(4 / 16)


def test_crop_box_to_original_inverts_the_eval_transform():
    # W=200, H=100: the crop frame box [32, 32, 272, 272] came from [20, 10, 120, 60]
    np.testing.assert_allclose(crop_box_to_original([32, 32, 272, 272], 200, 100), [20, 10, 120, 60], atol=1e-4)


def test_predict_cli_on_odd_images(tmp_path, saved_model):
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (37, 91, 3), np.uint8)).save(images / "rgb.jpg")
    Image.fromarray(rng.randint(0, 255, (50, 20), np.uint8), "L").save(images / "gray.png")
    Image.fromarray(rng.randint(0, 255, (64, 64, 4), np.uint8), "RGBA").save(images / "rgba.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert cli(["predict", str(images), "--model", saved_model, "--out", str(out)]) == 0
    for name, (w, h) in {"rgb": (91, 37), "gray": (20, 50), "rgba": (64, 64)}.items():
        record = json.loads((out / f"{name}.json").read_text())
        assert (record["width"], record["height"]) == (w, h)
        x0, y0, x1, y1 = record["box"]
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
        assert 0 <= record["foreground_fraction"] <= 1
        assert Image.open(out / f"{name}.png").size == (w, h)
    assert not (out / "broken.json").exists()


def test_extract_boxes_writes_both_formats_and_resumes(tmp_path, saved_model):
    out = tmp_path / "boxes.json"
    cmd = [sys.executable, os.path.join(ROOT, "train", "extract_boxes.py"), "--model", saved_model,
           "--dataset", "synthetic", "--split", "test", "--out", str(out), "--psol-out", str(tmp_path / "psol.json"),
           "--resize", "64", "--crop", "64", "--overlays", str(tmp_path / "pics")]
    # a partial log from an earlier, killed run: that image must be kept, not redone
    done = {"path": "synthetic/test/00000", "width": 160, "height": 160, "box": [1, 2, 3, 4],
            "foreground_fraction": 0.5}
    (tmp_path / "boxes.json.partial.jsonl").write_text(json.dumps(done) + "\n")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["format"] == "c2am_tf.boxes/v1" and len(result["images"]) == 128
    entries = {e["path"]: e for e in result["images"]}
    assert entries["synthetic/test/00000"]["box"] == [1, 2, 3, 4]
    assert all(0 <= e["box"][0] <= e["box"][2] <= e["width"] for e in result["images"])
    psol = json.loads((tmp_path / "psol.json").read_text())
    x, y, w, h = psol["synthetic/test/00001"]
    e = entries["synthetic/test/00001"]
    assert x == pytest.approx(e["box"][0] / 160) and w == pytest.approx((e["box"][2] - e["box"][0]) / 160)
    assert len(os.listdir(tmp_path / "pics")) == 127
    assert not (tmp_path / "boxes.json.partial.jsonl").exists()


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.keras"):
        load_model(str(tmp_path / "nothing.keras"))
