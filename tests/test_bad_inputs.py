"""Bad input is one line naming the file (and line), and a silent drop is a counted warning, an error under
strict (issue 35, items 10-12)."""

import json
import logging

import keras
import numpy as np
import pytest

from c2am_tf.utils.errors import InputError


@pytest.mark.parametrize("record, message", [
    ({"box": [1, 2, 3, 4]}, "images[1]: no 'path'"),
    ("a.jpg", "images[1]: not a box record (a JSON str, not an object)"),
    ({"path": "b.jpg", "box": [1, 2, 3]}, "images[1]: 'box' must be four numbers"),
    ({"path": "b.jpg", "box": [1, 2, 3, 4], "top5": "7"}, "images[1]: 'top5' must be a list of class indices"),
    ({"path": "b.jpg", "box": [1, 2, 3, 4], "width": -3}, "images[1]: 'width' must be a positive integer"),
])
def test_a_hand_edited_boxes_file_is_one_line_naming_its_record(tmp_path, record, message):
    from c2am_tf.maps.boxes_json import read_boxes

    path = tmp_path / "b.json"
    good = {"path": "a.jpg", "width": 4, "height": 4, "box": [0, 0, 2, 2], "foreground_fraction": 0.2}
    path.write_text(json.dumps({"format": "c2am_tf.boxes/v1", "images": [good, record]}))
    with pytest.raises(InputError) as err:
        read_boxes(str(path))
    assert str(err.value).startswith(f"{path}: {message}"), err.value


@pytest.mark.parametrize("line", ["[]", "null", '{"path": 3}'])
def test_a_hand_edited_partial_log_is_one_line_naming_its_line(tmp_path, line):
    from c2am_tf.maps.boxes_json import BoxesWriter

    out = tmp_path / "boxes.json"
    (tmp_path / "boxes.json.partial.jsonl").write_text(json.dumps({"header": {"m": 1}}) + "\n" + line + "\n"
                                                       + json.dumps({"path": "x", "box": [0, 0, 1, 1]}) + "\n")
    with pytest.raises(InputError, match=r"boxes\.json\.partial\.jsonl:2: "):
        BoxesWriter(str(out), {"m": 1})
    assert not (tmp_path / ".boxes.json.lock").exists()  # the refused writer let go of its lock


def _cub(tmp_path):
    from test_evaluate import _cub_folder

    return _cub_folder(tmp_path / "cub")


def test_cub_tables_with_a_bom_repeated_ids_or_a_missing_box(tmp_path, caplog):
    from c2am_tf.data.cub import cub_records

    cub = _cub(tmp_path)
    before = len(cub_records(str(cub), "train"))
    for name in ("images.txt", "train_test_split.txt"):
        (cub / name).write_bytes(b"\xef\xbb\xbf" + (cub / name).read_bytes())  # saved by a Windows editor
    assert len(cub_records(str(cub), "train")) == before  # the first image is no longer dropped
    lines = (cub / "images.txt").read_text(encoding="utf-8-sig").splitlines()
    (cub / "images.txt").write_text("\n".join(lines + [lines[1].split()[0] + " 002.Bird/other.jpg"]) + "\n")
    with caplog.at_level(logging.WARNING, logger="c2am_tf.data"):
        assert len(cub_records(str(cub), "train")) == before
    assert "1 repeated id in" in caplog.text and f"images.txt:{len(lines) + 1}: id 2 again (first at line 2)" \
        in caplog.text
    with pytest.raises(InputError, match=r"images\.txt:9: id 2 again \(first at line 2\); each id once"):
        cub_records(str(cub), "train", strict=True)
    boxes = (cub / "bounding_boxes.txt").read_text().splitlines()
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes[:1] + boxes[2:]) + "\n")
    with pytest.raises(InputError, match=r"bounding_boxes\.txt: no box for image id 2 \(images\.txt:2\)"):
        cub_records(str(cub), "train")


def test_wsol_metadata_with_repeated_ids_or_ids_without_boxes(tmp_path, caplog):
    from PIL import Image

    from c2am_tf.data.annotations import AnnotationError
    from c2am_tf.data.wsol import wsol_metadata_records

    meta = tmp_path / "metadata"
    meta.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / f"{name}.jpg")
    (meta / "image_ids.txt").write_text("a.jpg\nb.jpg\na.jpg\nc.jpg\n")
    (meta / "image_sizes.txt").write_text("a.jpg,10,10\nb.jpg,10,10\nc.jpg,10,10\n")
    (meta / "localization.txt").write_text("a.jpg,1,1,5,5\nb.jpg,2,2,6,6\n")
    with caplog.at_level(logging.WARNING, logger="c2am_tf.data"):
        records = wsol_metadata_records(str(tmp_path))
    assert [r[0].rsplit("/", 1)[1] for r in records] == ["a.jpg", "b.jpg"]  # a.jpg once, c.jpg counted
    assert "skipped 2 images" in caplog.text and "image_ids.txt:3: a.jpg again (first at line 1)" in caplog.text
    with pytest.raises(AnnotationError, match=r"image_ids\.txt:3: a\.jpg again"):
        wsol_metadata_records(str(tmp_path), strict=True)
    (meta / "image_ids.txt").write_text("a.jpg\nb.jpg\nc.jpg\n")
    with pytest.raises(AnnotationError, match=r"localization\.txt: no box for c\.jpg \(.*image_ids\.txt:3\)"):
        wsol_metadata_records(str(tmp_path), strict=True)


def test_an_edited_or_broken_resume_state_is_one_line(tmp_path):
    from c2am_tf.training import run_folder

    target = str(tmp_path / "model.keras")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    data = (np.zeros((4, 2)), np.zeros((4, 1)))
    run_folder.save_progress(model, target, {"a": 1}, epochs_done=7)
    with pytest.raises(InputError, match=r"resume\.json: epochs_done 7 is not a count of 0\.\.3"):
        run_folder.fit_and_save(model, data, target, 3, {"a": 1})
    state = json.loads((tmp_path / "resume.json").read_text())
    for edited in ("[]", "{", json.dumps({**state, "epochs_done": "2"})):
        (tmp_path / "resume.json").write_text(edited)
        with pytest.raises(InputError, match=r"resume\.json: "):
            run_folder.fit_and_save(model, data, target, 3, {"a": 1})
    run_folder.save_progress(model, target, {"a": 1}, epochs_done=1)
    (tmp_path / "last.keras").write_bytes((tmp_path / "last.keras").read_bytes()[:500])  # killed mid-copy
    with pytest.raises(InputError, match=r"last\.keras: not a readable \.keras model \(not a zip archive"):
        run_folder.fit_and_save(model, data, target, 3, {"a": 1})


def test_tflite_metadata_that_cannot_be_used_names_the_file_not_a_flag(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from c2am_tf.backbones import build_backbone
    from c2am_tf.deploy import tflite_export
    from c2am_tf.deploy.on_device import ForegroundDetector
    from c2am_tf.models.c2am.model import C2AM

    content = tflite_export.convert(C2AM(build_backbone("tiny", weights=None)), 64, "none")
    cases = [(["a", "list"], "its c2am_tf metadata is a JSON list, not an object"),
             ({"refinement": "sharpen"}, "metadata holds refinement 'sharpen', which cannot be used"),
             ({"threshold": 7}, "metadata holds threshold 7, which cannot be used"),
             ({"box_band": "wide"}, "metadata holds box_band 'wide', which cannot be used")]
    for metadata, message in cases:
        path = tmp_path / "m.tflite"
        path.write_bytes(tflite_export.add_metadata(content, metadata))
        with pytest.raises(InputError) as err:
            ForegroundDetector(str(path))
        assert str(err.value).startswith(f"{path}: ") and message in str(err.value), err.value
        assert "--threshold must" not in str(err.value)
    assert ForegroundDetector(str(path), box_band=0.1).box_band == 0.1  # the caller's setting stands


def test_a_c2am_model_given_as_classifier_is_one_line(tmp_path, capsys):
    from test_outputs import _photos

    from c2am_tf.backbones import build_backbone
    from c2am_tf.cli import run_command
    from c2am_tf.models.c2am.model import C2AM

    C2AM(build_backbone("tiny", weights=None)).save(tmp_path / "m.keras")
    photos = _photos(tmp_path / "in", 1)
    status = run_command("predict", [str(photos), "--model", str(tmp_path / "m.keras"), "--classifier",
                                     str(tmp_path / "m.keras"), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and "m.keras: a C2AM model, not a classifier" in lines[-1], lines
    assert "Traceback" not in "\n".join(lines)


def _refine_folder(tmp_path):
    """One 4x4 image with its CAM file, cue and ground truth (3 classes): the pieces refine reads."""
    from PIL import Image

    from c2am_tf.wsss.cam import write_cams

    folders = [tmp_path / d for d in ("images", "cams", "cues", "masks")]
    for d in folders:
        d.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "a.png")
    write_cams(str(tmp_path / "cams" / "a.npz"), [1], np.full((1, 4, 4), 0.5, np.float32))
    np.save(tmp_path / "cues" / "a.npy", np.zeros((4, 4), np.float32))
    return ["--cams", str(tmp_path / "cams"), "--bg-cues", str(tmp_path / "cues"), "--images",
            str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--num-classes", "3", "--out",
            str(tmp_path / "out")]


def _refine_line(argv, capsys):
    from c2am_tf.cli import run_command

    status = run_command("refine", argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and lines and "Traceback" not in "\n".join(lines), lines
    return lines[-1]


def test_refine_names_the_file_of_every_bad_input(tmp_path, capsys):
    from PIL import Image

    from c2am_tf.cli import run_command

    argv = _refine_folder(tmp_path)
    assert run_command("refine", argv) == 0
    capsys.readouterr()
    cam = tmp_path / "cams" / "a.npz"
    cases = [
        (lambda: np.savez(cam, keys=np.array([7]), cams=np.ones((1, 4, 4), np.float16)),
         "a.npz: CAM keys [7] fall outside the 3 classes (0..2)"),
        (lambda: np.savez(cam, keys=np.array([], np.int32), cams=np.ones((0, 4, 4), np.float16)),
         "a.npz: CAMs must be (classes, H, W) with at least one class and pixel; got shape (0, 4, 4)"),
        (lambda: np.savez(cam, keys=np.array([1]), cams=np.ones((1, 1, 4, 4), np.float16)),
         "a.npz: CAMs must be (classes, H, W)"),
        (lambda: np.savez(cam, keys=np.array([1]), cams=np.full((1, 4, 4), np.nan, np.float16)),
         "a.npz: 16 of 16 CAM values are NaN or infinite"),
    ]
    for make, message in cases:
        make()
        line = _refine_line(argv + ["--overwrite"], capsys)
        assert message in line, line
    (tmp_path / "c").mkdir()
    argv = _refine_folder(tmp_path / "c")
    masks = tmp_path / "c" / "masks" / "a.png"
    for picture, message in ((np.zeros((4, 4, 3), np.uint8), "its label mask is RGB, not class indices"),
                             (np.zeros((5, 4), np.uint8), "its ground-truth mask is 4x5, the image 4x4"),
                             (np.full((4, 4), 9, np.uint8), "its ground-truth mask holds labels [9]")):
        Image.fromarray(picture).save(masks)
        line = _refine_line(argv + ["--overwrite"], capsys)
        assert message in line, line
    line = _refine_line(argv[:1] + [str(tmp_path / "nowhere")] + argv[2:] + ["--overwrite"], capsys)
    assert line.endswith("nowhere: CAM folder not found (--cams)"), line


def test_an_unreadable_image_in_a_pipeline_is_skipped_without_a_tensorflow_traceback(tmp_path, capfd):
    from PIL import Image

    from c2am_tf.data.images import find_unreadable

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert find_unreadable([str(tmp_path / "ok.png"), str(tmp_path / "bad.png")]) == [1]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "UnreadableImageError" not in err, err[-2000:]


def test_a_lambda_layer_deep_in_a_model_is_refused_in_words_that_say_so(tmp_path):
    from c2am_tf.backbones import build_backbone
    from c2am_tf.models.c2am.model import C2AM
    from c2am_tf.presets import load_model

    inputs = keras.Input((None, None, 3))
    doubled = keras.layers.Lambda(lambda x: x * 2)(inputs)  # nested in the backbone, as a crafted file would
    C2AM(keras.Model(inputs, build_backbone("tiny", weights=None)(doubled))).save(tmp_path / "lam.keras")
    with pytest.raises(InputError, match=r"lam\.keras: refusing its Lambda layer, whose Python code would run on "
                                         r"loading \(Keras's safe mode\)"):
        load_model(str(tmp_path / "lam.keras"))


def test_extract_boxes_on_a_cub_folder_with_a_missing_box_line_or_table_is_one_line(tmp_path, capsys):
    from c2am_tf.cli import run_command

    cub = _cub(tmp_path)
    boxes = (cub / "bounding_boxes.txt").read_text().splitlines()
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes[1:]) + "\n")
    argv = ["--preset", "cub_lite0", "--dataset", "cub", "--data-dir", str(cub), "--split", "test",
            "--out", str(tmp_path / "b.json")]
    for broken in (lambda: None, lambda: (cub / "images.txt").unlink()):
        broken()
        assert run_command("extract-boxes", argv) == 1
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("c2am-tf extract-boxes: error: ") and \
            ("no box for image id 1" in line or "images.txt not found" in line), line
    assert not (tmp_path / "b.json").exists()


def test_a_cam_of_another_size_is_resized_and_counted(tmp_path, capsys):
    from c2am_tf.cli import run_command
    from c2am_tf.wsss.cam import write_cams

    argv = _refine_folder(tmp_path)
    write_cams(str(tmp_path / "cams" / "a.npz"), [1], np.full((1, 8, 6), 0.5, np.float32))
    assert run_command("refine", argv) == 0
    err = capsys.readouterr().err
    assert "warning: 1 CAM files were not at their image's size and were resized (e.g. " in err
    assert "a.npz 6x8 for " in err and "a.png 4x4)" in err
