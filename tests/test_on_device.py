"""Device-side helpers: the numpy box rule against OpenCV's, the detector's input checks."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, golden

from c2am_tf.deploy.on_device import box_from_map, read_metadata
from c2am_tf.maps.boxes import boxes_from_map

# Maps built to break contour heuristics (see test_boxes.py).
_ADVERSARIAL = {"diagonal_chain", "uniform_random", "uint8_exact_values", "just_below_k_over_255"}


@pytest.mark.parametrize("size", [14, 28])
def test_numpy_boxes_agree_with_opencv_on_golden_maps(size):
    d = golden("C_boxes")
    maps, names = d[f"s{size}_maps"], [str(n) for n in d[f"s{size}_names"]]
    agree = total = 0
    for t in d[f"s{size}_thresholds"]:
        for name, m in zip(names, maps):
            ref, got = boxes_from_map(m, [t])[0][0], box_from_map(m, t)
            same = np.array_equal(ref, got)
            if name not in _ADVERSARIAL:
                assert same, (name, t, ref, got)
            agree += same
            total += 1
    assert agree / total > 0.9


def _same_as_opencv(m, t=0.5):
    got = box_from_map(m, t)
    np.testing.assert_array_equal(got, boxes_from_map(m, [t])[0][0])
    return got.tolist()


def test_hand_made_cases():
    m = np.zeros((20, 20), np.float32)
    assert _same_as_opencv(m) == [0, 0, 0, 0]
    m[2:6, 2:6] = m[12:16, 12:16] = 1.0  # equal squares: OpenCV keeps the later one
    assert _same_as_opencv(m) == [12, 12, 16, 16]
    ring = np.zeros((20, 20), np.float32)
    ring[1:10, 1:10] = 1.0
    ring[2:9, 2:9] = 0.0  # 32 pixels enclosing an area of 64
    ring[12:18, 12:18] = 1.0  # more pixels (36) but a smaller contour (area 25): the ring wins
    assert _same_as_opencv(ring) == [1, 1, 10, 10]
    edge = np.zeros((10, 12), np.float32)
    edge[5:, 7:] = 0.9  # touching the border: x1, y1 clipped to W - 1, H - 1
    assert _same_as_opencv(edge) == [7, 5, 11, 9]
    with pytest.raises(ValueError, match="2-D"):
        box_from_map(np.zeros((1, 4, 4)), 0.5)


def test_device_module_imports_without_tensorflow():
    code = ("import sys; import c2am_tf.deploy.on_device; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
            "assert 'keras' not in sys.modules, 'keras imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-1000:]


def test_read_metadata_of_a_model_without_it_is_empty():
    pytest.importorskip("ai_edge_litert")
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    builder = flatbuffers.Builder(64)
    schema.ModelStart(builder)
    schema.ModelAddVersion(builder, 3)
    builder.Finish(schema.ModelEnd(builder))
    assert read_metadata(bytes(builder.Output())) == {}


@pytest.mark.parametrize("shape, size", [((357, 500), (448, 448)), ((40, 13), (64, 96)), ((1000, 37), (448, 448)),
                                         ((448, 448), (400, 448))])
def test_the_device_resize_is_the_tensorflow_pipelines(shape, size):
    import tensorflow as tf

    from c2am_tf.deploy.on_device import resize_rgb

    rng = np.random.RandomState(0)
    smooth = np.cumsum(rng.randint(-3, 4, (*shape, 3)), axis=1) % 256  # edges and gradients, as photos have
    image = np.where(rng.rand(*shape, 1) < 0.1, rng.randint(0, 256, (*shape, 3)), smooth).astype(np.uint8)
    height, width = size
    want = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, size, antialias=True)), 0, 255), tf.uint8).numpy()
    got = resize_rgb(image, width, height)
    assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1
    assert np.mean(got != want) < 0.01  # rounding ties only (Pillow's bilinear: about 16% of the pixels)


def test_detect_writes_each_images_mask_at_its_size(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from PIL import Image

    from c2am_tf.backbones import build_backbone
    from c2am_tf.cli import run_command
    from c2am_tf.deploy import tflite_export
    from c2am_tf.deploy.on_device import ForegroundDetector
    from c2am_tf.models.c2am.model import C2AM

    (tmp_path / "m.tflite").write_bytes(tflite_export.convert(C2AM(build_backbone("tiny", weights=None)), 64, "none"))
    photos = tmp_path / "in"
    photos.mkdir()
    rng = np.random.RandomState(0)
    for i, shape in enumerate(((40, 56, 3), (33, 21, 3))):
        image = rng.randint(0, 60, shape).astype(np.uint8)
        image[5:20, 5:15] = 230
        Image.fromarray(image).save(photos / f"im{i}.png")
    out = tmp_path / "out"
    assert run_command("detect", [str(photos), "--model", str(tmp_path / "m.tflite"), "--out", str(out), "--masks",
                                  "--no-overlays"]) == 0
    detector = ForegroundDetector(str(tmp_path / "m.tflite"))
    for i in range(2):
        image = np.asarray(Image.open(photos / f"im{i}.png"))
        mask = np.asarray(Image.open(out / f"im{i}.png.mask.png"))
        assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, detector.detect(image)["mask"])
    assert not (out / "im0.png.png").exists()  # --no-overlays
    # a second run reads the input folder without the masks it wrote when --out is inside it
    assert run_command("detect", [str(photos), "--model", str(tmp_path / "m.tflite"), "--out", str(photos),
                                  "--masks"]) == 0
    assert run_command("detect", [str(photos), "--model", str(tmp_path / "m.tflite"), "--out", str(photos),
                                  "--masks"]) == 0
    assert not list(photos.glob("*.mask.png.mask.png")) and not list(photos.glob("*.mask.png.png"))
