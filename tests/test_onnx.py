"""ONNX export (Keras's own, through tf2onnx): the map against Keras's, the metadata, the boxes against
predict's rule, onnxruntime on the device side (ForegroundDetector), the command."""

import json

import keras
import numpy as np
import pytest

from c2am_tf.backbones import build_backbone
from c2am_tf.inference.postprocess import map_to_box
from c2am_tf.models.c2am.model import C2AM

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install -e .[onnx])")
pytest.importorskip("tf2onnx", reason="the onnx extra is not installed (pip install -e .[onnx])")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install -e .[onnx])")
from c2am_tf.deploy import onnx_export  # noqa: E402
from c2am_tf.deploy.on_device import METADATA_NAME, ForegroundDetector, resize_rgb  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    model = C2AM(build_backbone("tiny", weights=None), box_band=0.1)
    model.polarity.assign(-1.0)  # the export must keep the orientation
    model.threshold.assign(0.4)
    images = np.random.RandomState(0).randint(0, 256, (6, SIZE, SIZE, 3)).astype(np.uint8)
    return model, images, onnx_export.convert(model, SIZE)


def test_the_onnx_map_is_keras_map_at_any_size_and_carries_the_metadata(tiny):
    model, images, content = tiny
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    (inputs,), (outputs,) = session.get_inputs(), session.get_outputs()
    assert (inputs.name, inputs.type, outputs.name) == ("images", "tensor(uint8)", "map")
    for batch in (images, np.random.RandomState(1).randint(0, 256, (2, 96, 48, 3)).astype(np.uint8)):
        got = session.run(None, {"images": batch})[0]
        want = model.predict(batch.astype(np.float32), verbose=0)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-3)
    stored = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_NAME])
    assert stored == {"format": "c2am_tf.onnx/v1", "threshold": pytest.approx(0.4), "box_band": pytest.approx(0.1),
                      "input_size": [SIZE, SIZE], "quantize": "none", "refinement": "none"}


def test_the_detector_runs_onnx_and_boxes_as_predict_does(tiny):
    model, images, content = tiny
    detector = ForegroundDetector(content, num_threads=2)
    assert detector.size == (SIZE, SIZE) and detector.threshold == pytest.approx(0.4)
    assert detector.box_band == pytest.approx(0.1)
    for image in images:
        wide = np.repeat(image, 2, axis=1)  # 64 x 128: resized to 64 x 64 on the device side
        result = detector.detect(wide)
        keras_map = model.predict(resize_rgb(wide, SIZE, SIZE)[None].astype(np.float32), verbose=0)[0, ..., 0]
        np.testing.assert_allclose(result["map"], keras_map, atol=1e-3)
        box, _ = map_to_box(keras_map, 0.4, width=128, height=64, band=0.1)  # predict's rule (OpenCV)
        np.testing.assert_allclose(result["box"], box, atol=1e-3)


def test_the_command_exports_and_detect_reads_it(tiny, tmp_path, capsys):
    from PIL import Image

    from c2am_tf.cli import run_command

    model, images, _ = tiny
    model.save(tmp_path / "m.keras")
    out = tmp_path / "m.onnx"
    assert run_command("export-onnx", ["--model", str(tmp_path / "m.keras"), "--out", str(out), "--size",
                                       str(SIZE)]) == 0
    assert "detector size 64" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # an existing file is kept: a flag error before any work
        run_command("export-onnx", ["--model", str(tmp_path / "m.keras"), "--out", str(out)])
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(images[:3]):
        Image.fromarray(image).save(photos / f"{i}.png")
    assert run_command("detect", [str(photos), "--model", str(out), "--out", str(tmp_path / "det"),
                                  "--no-overlays"]) == 0
    boxes = json.loads((tmp_path / "det" / "boxes.json").read_text())
    detector = ForegroundDetector(str(out))
    for record in boxes["images"]:
        image = np.asarray(Image.open(record["path"]).convert("RGB"))
        np.testing.assert_allclose(record["box"], detector.detect(image)["box"], atol=0.05)
    (tmp_path / "bad.onnx").write_bytes(b"\x08" + bytes(range(200)))
    assert run_command("detect", [str(photos), "--model", str(tmp_path / "bad.onnx"), "--out",
                                  str(tmp_path / "det2")]) == 1
    assert "bad.onnx: not a readable ONNX model" in capsys.readouterr().err
