"""TFLite export: fp32 parity with Keras, fp16, int8 box agreement on real images, metadata, CLI."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import ROOT, data_dir

from c2am_tf.backbones import build_backbone
from c2am_tf.deploy import tflite_export as tflite
from c2am_tf.inference.postprocess import map_to_box, map_to_mask
from c2am_tf.maps.boxes import box_iou, boxes_from_map
from c2am_tf.models.c2am.model import C2AM

pytest.importorskip("ai_edge_litert")
from c2am_tf.deploy.on_device import ForegroundDetector, box_from_map, read_metadata, resize_rgb  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    model = C2AM(build_backbone("tiny", weights=None), box_band=0.1)  # the detector must keep the band
    model.polarity.assign(-1.0)  # the export must keep the orientation
    model.threshold.assign(0.4)
    images = np.random.RandomState(0).randint(0, 256, (4, SIZE, SIZE, 3)).astype(np.uint8)
    return model, images


def _keras_maps(model, images):
    return model.predict(images.astype(np.float32), verbose=0)[..., 0]


def test_fp32_matches_keras_and_carries_its_metadata(tiny):
    model, images = tiny
    content = tflite.convert(model, SIZE, "none")
    assert read_metadata(content) == {"format": "c2am_tf.tflite/v1", "threshold": pytest.approx(0.4),
                                      "box_band": pytest.approx(0.1), "input_size": [SIZE, SIZE],
                                      "quantize": "none", "refinement": "none"}
    detector = ForegroundDetector(content)
    assert detector.size == (SIZE, SIZE) and detector.threshold == pytest.approx(0.4)
    assert detector.box_band == pytest.approx(0.1) and ForegroundDetector(content, box_band=0).box_band == 0
    maps = np.stack([detector.map(im) for im in images])
    want = _keras_maps(model, images)
    assert maps.shape == want.shape == (4, SIZE // 16, SIZE // 16)
    np.testing.assert_allclose(maps, want, atol=1e-4)


def test_detect_returns_the_keras_box_in_image_pixels(tiny):
    model, images = tiny
    detector = ForegroundDetector(tflite.convert(model, SIZE, "none"))
    wide = np.repeat(images[0], 2, axis=1)  # 64 x 128: resized to 64 x 64 on the device side
    result = detector.detect(wide)
    keras_map = _keras_maps(model, resize_rgb(wide, SIZE, SIZE)[None])[0]
    box, _ = map_to_box(keras_map, 0.4, width=128, height=64, band=0.1)
    np.testing.assert_allclose(result["box"], box, atol=1e-4)
    assert 0.0 <= result["score"] <= 1.0
    # the mask beside the box, at the image's size: the Keras-side mask (OpenCV resize) but for edge
    # pixels. This head's map is nearly flat, so a high threshold makes the mask partial.
    strict = ForegroundDetector(tflite.convert(model, SIZE, "none"), threshold=0.97)
    mask = strict.detect(wide)["mask"]
    want = map_to_mask(keras_map, 0.97, width=128, height=64)
    assert mask.shape == (64, 128) and mask.dtype == bool and 0.05 < want.mean() < 0.95
    assert (mask & want).sum() / max((mask | want).sum(), 1) > 0.95


def test_mask_model_exports_with_its_refinement_fp32_and_int8(caplog, capsys):
    from c2am_tf.models.masks.mask_model import MaskModel

    keras.utils.set_random_seed(0)
    model = MaskModel(C2AM(build_backbone("tiny", weights=None)), width=8, fine_width=8, refinement="guided")
    kernel = model.decoder.get_layer("correction").weights[0]
    kernel.assign(np.random.RandomState(0).normal(0, 1.0, kernel.shape))  # not the prior alone
    model.threshold.assign(0.45)
    images = np.random.RandomState(1).randint(0, 256, (8, SIZE, SIZE, 3)).astype(np.uint8)
    content = tflite.convert(model, SIZE, "none")
    assert read_metadata(content)["refinement"] == "guided"
    detector = ForegroundDetector(content)
    assert detector.refinement == "guided" and detector.threshold == pytest.approx(0.45)
    want = _keras_maps(model, images)
    maps = np.stack([detector.map(im) for im in images])
    assert maps.shape == want.shape == (8, SIZE // 4, SIZE // 4)
    np.testing.assert_allclose(maps, want, atol=1e-4)
    # The device mask is the Keras-side mask: the same map, the same refinement against the image.
    wide = np.repeat(images[0], 2, axis=1)
    keras_map = _keras_maps(model, resize_rgb(wide, SIZE, SIZE)[None])[0]
    mask = detector.detect(wide)["mask"]
    np.testing.assert_array_equal(mask, map_to_mask(keras_map, 0.45, 128, 64, wide, "guided"))
    unrefined = ForegroundDetector(content, refinement="none").detect(wide)["mask"]
    np.testing.assert_array_equal(unrefined, map_to_mask(keras_map, 0.45, 128, 64))
    import logging

    with caplog.at_level(logging.INFO, "c2am_tf"):
        int8 = ForegroundDetector(tflite.convert(model, SIZE, "int8", representative_images=images))
    assert "int8 calibration used 8 images" in caplog.text  # it ran 30 s silently and never said how many
    assert "int8 calibration" in capsys.readouterr().err  # the progress bar
    q = np.stack([int8.map(im) for im in images])
    assert q.shape == maps.shape and np.abs(q - maps).mean() < 0.1  # a random model, 8 calibration images


def test_float16_is_close_and_half_the_size(tiny):
    model, images = tiny
    fp32, fp16 = tflite.convert(model, SIZE, "none"), tflite.convert(model, SIZE, "float16")
    assert len(fp16) < 0.75 * len(fp32)
    maps = np.stack([ForegroundDetector(fp16).map(im) for im in images])
    np.testing.assert_allclose(maps, _keras_maps(model, images), atol=2e-2)


def test_bad_arguments_and_inputs_are_refused(tiny):
    model, images = tiny
    with pytest.raises(ValueError, match="quantize"):
        tflite.convert(model, SIZE, "int4")
    with pytest.raises(ValueError, match="representative"):
        tflite.convert(model, SIZE, "int8")
    with pytest.raises(ValueError, match="empty"):
        tflite.convert(model, SIZE, "int8", representative_images=[])
    detector = ForegroundDetector(tflite.convert(model, SIZE, "none"))
    with pytest.raises(ValueError, match="uint8"):
        detector.map(images[0].astype(np.float32))
    with pytest.raises(ValueError, match=r"\(64, 64, 3\)"):
        detector.map(images[0, :32])
    with pytest.raises(ValueError, match="non-empty"):
        detector.detect(np.zeros((0, 10, 3), np.uint8))


def test_int8_boxes_agree_with_keras_on_real_images():
    """Lite0 (ImageNet) trained briefly on CUB dev images; int8 boxes vs Keras boxes on test images."""
    from c2am_tf import data
    from c2am_tf.training.callbacks import PolarityCallback

    root = data_dir("CUB_200_2011_dev")
    keras.utils.set_random_seed(0)
    backbone = build_backbone("efficientnet_lite0", "imagenet", features="head")
    backbone.trainable = False
    model = C2AM(backbone, recipe="paper")
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
    size = 224

    def load(records):
        return np.stack(list(tflite.calibration_images([r[0] for r in records], size)))

    train = load(data.cub_records(root, "train")[::8][:96])
    test = load(data.cub_records(root, "test")[::20][:32])
    model.fit(train, epochs=4, batch_size=16, verbose=0, callbacks=[PolarityCallback()])
    t = float(model.threshold.numpy())
    keras_boxes = np.stack([boxes_from_map(m, [t])[0][0] for m in _keras_maps(model, test)])
    content = tflite.convert(model, size, "int8", train[:16], calibration_steps=16)
    detector = ForegroundDetector(content)
    assert detector._input["dtype"] == np.uint8 and detector._output["dtype"] == np.uint8
    boxes = np.stack([box_from_map(detector.map(im), t) for im in test])
    iou = box_iou(boxes, keras_boxes)
    assert np.mean(iou >= 0.5) >= 0.9, iou.round(2)


def test_cli_writes_a_model_and_refuses_int8_without_images(tiny, tmp_path):
    model, images = tiny
    model.save(tmp_path / "m.keras")
    script = os.path.join(ROOT, "export", "tflite.py")
    out = tmp_path / "m.tflite"
    proc = subprocess.run([sys.executable, script, "--model", str(tmp_path / "m.keras"), "--out", str(out),
                           "--size", str(SIZE), "--quantize", "float16"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_metadata(out.read_bytes())["quantize"] == "float16"
    proc = subprocess.run([sys.executable, script, "--model", str(tmp_path / "m.keras"), "--out", str(out),
                           "--quantize", "int8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--calibration-dir" in proc.stderr


def test_detect_cli_writes_boxes_and_overlays_and_skips_bad_files(tiny, tmp_path):
    import json

    from PIL import Image

    model, images = tiny
    (tmp_path / "m.tflite").write_bytes(tflite.convert(model, SIZE, "none"))
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.repeat(images[0], 2, axis=1)).save(folder / "a.png")
    Image.fromarray(images[1]).save(folder / "b.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "det"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "export", "tflite_detect.py"), str(folder),
                           "--model", str(tmp_path / "m.tflite"), "--out", str(out), "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped 1 unreadable images of 3" in proc.stderr and "ms/image" in proc.stdout
    assert "detect: 100%" in proc.stderr and "3/3" in proc.stderr  # a progress bar while it runs
    result = json.loads((out / "boxes.json").read_text())
    assert result["threshold"] == pytest.approx(0.4) and len(result["images"]) == 2
    first = result["images"][0]
    assert (first["width"], first["height"]) == (128, 64)
    keras_map = _keras_maps(model, resize_rgb(np.repeat(images[0], 2, axis=1), SIZE, SIZE)[None])[0]
    box, _ = map_to_box(keras_map, 0.4, width=128, height=64, band=0.1)
    np.testing.assert_allclose(first["box"], box, atol=0.01)
    assert (out / "a.png.png").exists() and (out / "b.png.png").exists()


def test_export_tflite_keeps_an_existing_file(tmp_path, capsys):
    from c2am_tf.cli import run_command

    mine = tmp_path / "c2am.tflite"
    mine.write_bytes(b"an earlier export")
    with pytest.raises(SystemExit) as err:  # refused before the preset loads or anything converts
        run_command("export-tflite", ["--preset", "cub_lite0", "--out", str(mine)])
    assert err.value.code == 2 and "c2am.tflite exists; pass --overwrite" in capsys.readouterr().err
    assert mine.read_bytes() == b"an earlier export"


def test_export_tflite_never_replaces_its_own_inputs_even_with_overwrite(tiny, tmp_path, capsys):
    from PIL import Image

    from c2am_tf.cli import run_command

    model, images = tiny
    model.save(tmp_path / "m.keras")
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(calibration / f"{i}.png")
    kept = {p: p.read_bytes() for p in [*calibration.iterdir(), tmp_path / "m.keras"]}
    for out in (calibration / "2.png", tmp_path / "m.keras"):
        with pytest.raises(SystemExit) as err:
            run_command("export-tflite", ["--model", str(tmp_path / "m.keras"), "--out", str(out), "--overwrite",
                                          "--quantize", "int8", "--calibration-dir", str(calibration),
                                          "--size", str(SIZE)])
        message = capsys.readouterr().err
        assert err.value.code == 2 and f"--out: {out} is an input of this command" in message, message
    assert {p: p.read_bytes() for p in kept} == kept
