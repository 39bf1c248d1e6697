"""Inference: map -> box in image pixels, train/extract_boxes.py and python -m c2am_tf predict."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from c2am_tf.__main__ import main as cli
from c2am_tf.inference.postprocess import map_to_box, map_to_mask
from c2am_tf.maps.geometry import eval_box_to_original
from c2am_tf.presets import load_model
from c2am_tf.training.trainer import TrainConfig, run_training

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


def test_map_to_mask_is_the_box_rule_at_image_size():
    m = np.zeros((4, 4), np.float32)
    m[1:3, 0:2] = 1.0
    mask = map_to_mask(m, 0.5, width=400, height=200)
    assert mask.shape == (200, 400)
    ys, xs = np.nonzero(mask)
    box, fraction = map_to_box(m, 0.5, width=400, height=200)
    # the mask lies around the box, blurred by at most one map cell (100 x 50 px here)
    assert xs.min() >= box[0] and xs.max() <= box[2] + 100 and ys.min() >= box[1] - 50 and ys.max() <= box[3] + 50
    assert abs(mask.mean() - fraction) < 0.1
    np.testing.assert_array_equal(map_to_mask(m, 1.0, 8, 4), np.zeros((4, 8), bool))  # nothing above the peak


def test_eval_box_to_original_inverts_the_eval_transform():
    # W=200, H=100: the crop frame box [32, 32, 272, 272] came from [20, 10, 120, 60]
    np.testing.assert_allclose(eval_box_to_original([32, 32, 272, 272], 200, 100), [20, 10, 120, 60], atol=1e-4)


def test_predict_cli_on_odd_images(tmp_path, saved_model):
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (37, 91, 3), np.uint8)).save(images / "rgb.jpg")
    Image.fromarray(rng.randint(0, 255, (50, 20), np.uint8), "L").save(images / "gray.png")
    Image.fromarray(rng.randint(0, 255, (64, 64, 4), np.uint8), "RGBA").save(images / "rgba.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert cli(["predict", str(images), "--model", saved_model, "--out", str(out), "--masks"]) == 0
    for name, (w, h) in {"rgb.jpg": (91, 37), "gray.png": (20, 50), "rgba.png": (64, 64)}.items():
        record = json.loads((out / f"{name}.json").read_text())
        assert (record["width"], record["height"]) == (w, h)
        x0, y0, x1, y1 = record["box"]
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
        assert 0 <= record["foreground_fraction"] <= 1
        assert Image.open(out / f"{name}.png").size == (w, h)
        mask = np.asarray(Image.open(out / f"{name}.mask.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        # the box is the largest foreground component's: it holds mask pixels, and the mask's share of
        # the image follows the map's foreground fraction (bilinear edges aside)
        assert mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))].any()
        assert abs((mask > 0).mean() - record["foreground_fraction"]) < 0.25
    assert not (out / "broken.jpg.json").exists() and not (out / "broken.jpg.mask.png").exists()


def test_predict_never_overwrites_an_input_and_keeps_names_apart(tmp_path, saved_model):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    rng = np.random.RandomState(1)
    for rel in ("x.jpg", "x.png", "sub/x.jpg", "keepme.png"):
        Image.fromarray(rng.randint(0, 255, (40, 30, 3), np.uint8)).save(photos / rel)
    # an output folder inside the input folder: a second run does not read the first one's pictures
    out = photos / "results"
    assert cli(["predict", str(photos), "--model", saved_model, "--out", str(out)]) == 0
    assert cli(["predict", str(photos), "--model", saved_model, "--out", str(out)]) == 0
    assert sorted(os.path.relpath(p, out) for p in out.rglob("*.json")) == [
        "boxes.json", "keepme.png.json", os.path.join("sub", "x.jpg.json"), "x.jpg.json", "x.png.json"]
    boxes = json.loads((out / "boxes.json").read_text())
    assert boxes["format"] == "c2am_tf.boxes/v1" and len(boxes["images"]) == 4
    kept = (photos / "keepme.png").read_bytes()
    assert cli(["predict", str(photos), "--model", saved_model, "--out", str(photos)]) == 0
    assert (photos / "keepme.png").read_bytes() == kept
    boxes = {rel: json.loads((photos / f"{rel}.json").read_text())["path"]
             for rel in ("x.jpg", "x.png", "sub/x.jpg", "keepme.png")}
    assert sorted(boxes.values()) == sorted(str(photos / rel) for rel in boxes)  # one result each


def test_predict_refuses_a_name_that_is_an_input(tmp_path, saved_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("x.jpg", "x.jpg.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photos / name)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    assert cli(["predict", str(photos), "--model", saved_model, "--out", str(photos)]) != 0
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_extract_boxes_writes_both_formats_and_resumes(tmp_path, saved_model, capsys):
    out = tmp_path / "new_folder" / "boxes.json"  # a folder that does not exist yet is created
    cmd = [sys.executable, os.path.join(ROOT, "train", "extract_boxes.py"), "--model", saved_model,
           "--dataset", "synthetic", "--split", "test", "--out", str(out), "--psol-out", str(tmp_path / "psol.json"),
           "--size", "64", "--overlays", str(tmp_path / "pics")]
    # a partial log from an earlier run, killed mid-write: its complete line is kept, the torn one redone
    header = {"model": os.path.abspath(saved_model), "model_sha256": hashlib.sha256(open(saved_model, "rb").read()).hexdigest(),
              "threshold": float(load_model(saved_model).threshold.numpy()), "size": 64,
              "dataset": "synthetic", "split": "test", "box_band": load_model(saved_model).box_band}
    assert header["box_band"] == 0.1  # fit's default, stored with the model: boxes averaged over that band
    done = {"path": "synthetic/test/00000", "width": 160, "height": 160, "box": [1, 2, 3, 4],
            "foreground_fraction": 0.5}
    partial = tmp_path / "new_folder" / "boxes.json.partial.jsonl"
    partial.parent.mkdir()
    partial.write_text(json.dumps({"header": header}) + "\n" + json.dumps(done) + "\n"
                       + '{"path": "synthetic/test/00001", "wid')
    # another threshold would mix two runs' boxes: refused, and the partial file is left as it was
    proc = subprocess.run(cmd + ["--threshold", "0.9"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "written by another run (threshold" in proc.stderr
    assert partial.read_text().endswith('"wid')
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dropping a torn last line" in proc.stderr
    result = json.loads(out.read_text())
    assert result["format"] == "c2am_tf.boxes/v1" and len(result["images"]) == 128
    entries = {e["path"]: e for e in result["images"]}
    assert entries["synthetic/test/00000"]["box"] == [1, 2, 3, 4]
    assert all(0 <= e["box"][0] <= e["box"][2] <= e["width"] for e in result["images"])
    psol = json.loads((tmp_path / "psol.json").read_text())
    x, y, w, h = psol["synthetic/test/00001"]
    e = entries["synthetic/test/00001"]
    assert x == pytest.approx(e["box"][0] / 160) and w == pytest.approx((e["box"][2] - e["box"][0]) / 160)
    assert len(list((tmp_path / "pics").rglob("*.png"))) == 127
    assert not partial.exists()
    # a second run does not replace a finished run's files unless it is told to
    finished, again = out.read_bytes(), ["extract-boxes"] + cmd[2:]
    with pytest.raises(SystemExit) as err:
        cli(again)
    assert err.value.code == 2 and "--out: " in capsys.readouterr().err and out.read_bytes() == finished
    out.rename(tmp_path / "moved.json")  # the PSOL file alone is still in the way
    with pytest.raises(SystemExit) as err:
        cli(again)
    assert err.value.code == 2 and "--psol-out: " in capsys.readouterr().err and not out.exists()
    assert cli(again + ["--overwrite"]) in (0, None)
    redone = {e["path"]: e for e in json.loads(out.read_text())["images"]}
    assert len(redone) == 128 and redone["synthetic/test/00000"]["box"] != [1, 2, 3, 4]  # extracted afresh


def test_predict_and_extract_boxes_with_a_classifier_box_its_top_class_cam(tmp_path, saved_model, capsys):
    from conftest import green_classifier, two_object_batch

    images, gt = two_object_batch()
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(images[0]).save(photos / "two.png")
    classifier = tmp_path / "green.keras"
    green_classifier().save(classifier)
    base = ["--model", saved_model, "--size", "128", "--classifier", str(classifier)]
    # the model's stored threshold was chosen for its map alone: a fused map needs its own
    with pytest.raises(SystemExit):
        cli(["predict", str(photos), "--out", str(tmp_path / "o"), *base, "--cam-weight", "1"])
    assert "--cam-weight needs --threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["predict", str(photos), "--out", str(tmp_path / "o"), "--model", saved_model, "--cam-weight", "0.5",
             "--threshold", "0.5"])
    assert "--cam-weight needs --classifier" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # weight 1: the box is cut from the CAM of the classifier's top class (green), not from the red distractor
    out = tmp_path / "out"
    assert cli(["predict", str(photos), "--out", str(out), *base, "--cam-weight", "1", "--threshold", "0.5"]) == 0
    result = json.loads((out / "boxes.json").read_text())
    record = result["images"][0]
    assert record["top5"][0] == 1 and sorted(record["top5"]) == [0, 1, 2] and result["cam_weight"] == 1.0
    np.testing.assert_allclose(record["box"], gt[0, 0], atol=2)
    # the same from extract-boxes; with the classifier alone (no fusion) records still carry the classes
    boxes = tmp_path / "boxes.json"
    assert cli(["extract-boxes", "--dataset", "folder", "--data-dir", str(photos), "--out", str(boxes), *base,
                "--cam-weight", "1", "--threshold", "0.5"]) in (0, None)
    extracted = json.loads(boxes.read_text())
    assert extracted["images"][0]["top5"] == record["top5"] and extracted["cam_weight"] == 1.0
    np.testing.assert_allclose(extracted["images"][0]["box"], record["box"], atol=0.01)
    plain = tmp_path / "plain.json"
    assert cli(["extract-boxes", "--dataset", "folder", "--data-dir", str(photos), "--out", str(plain),
                *base]) in (0, None)
    assert json.loads(plain.read_text())["images"][0]["top5"] == record["top5"]
    with pytest.raises(SystemExit):
        cli(["extract-boxes", "--dataset", "folder", "--data-dir", str(photos), "--out", str(tmp_path / "b"), *base,
             "--runner", "DirectRunner"])
    assert "only in the local extractor" in capsys.readouterr().err


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.keras"):
        load_model(str(tmp_path / "nothing.keras"))


def test_predict_skips_a_decompression_bomb_and_reports_16_bit_images_in_their_pixels(tmp_path, saved_model,
                                                                                     capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("L", (20000, 20000)).save(photos / "bomb.png", optimize=True)
    Image.fromarray((np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)).save(photos / "deep.png")
    assert cli(["predict", str(photos), "--model", saved_model, "--out", str(tmp_path / "out")]) == 0
    assert "bomb.png: 20000x20000 is 400 megapixels, over the limit of 64 " in capsys.readouterr().err
    records = json.loads((tmp_path / "out" / "boxes.json").read_text())["images"]
    assert [(os.path.basename(r["path"]), r["width"], r["height"]) for r in records] == [("deep.png", 40, 30)]


@pytest.mark.parametrize("flags, message", [(("--size", "7"), "--size must be an integer >= 32"),
                                            (("--threshold", "5"), "--threshold must be a fraction"),
                                            (("--box-band", "0.8"), "--box-band must be a fraction")])
def test_predict_refuses_settings_that_give_nonsense(tmp_path, saved_model, capsys, flags, message):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit):
        cli(["predict", str(tmp_path / "a.png"), "--model", saved_model, "--out", str(tmp_path / "o"), *flags])
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_predict_keeps_an_earlier_runs_results_and_reads_its_own_folder_again(tmp_path, saved_model, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.RandomState(2)
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.randint(0, 255, (40, 30, 3), np.uint8)).save(photos / name)
    out = tmp_path / "out"
    assert cli(["predict", str(photos), "--model", saved_model, "--out", str(out), "--threshold", "0.3"]) == 0
    printed = capsys.readouterr()
    assert "predict: 100%" in printed.err and "2/2" in printed.err  # a progress bar while it runs, then a summary
    assert f"2 of 2 images -> {out}/boxes.json (0 unreadable skipped;" in printed.out
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    # other settings: refused by name (the --out flag's error), nothing replaced
    assert cli(["predict", str(photos), "--model", saved_model, "--out", str(out), "--threshold", "0.6"]) == 2
    assert "error: --out " in (err := capsys.readouterr().err) and "threshold 0.3 -> 0.6" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert cli(["predict", str(photos), "--model", saved_model, "--out", str(out), "--threshold", "0.6",
                "--overwrite"]) == 0
    assert json.loads((out / "boxes.json").read_text())["threshold"] == 0.6
    # into the input folder, twice: the second run knows the first one's pictures as its own outputs
    for _ in range(2):
        assert cli(["predict", str(photos), "--model", saved_model, "--out", str(photos), "--masks"]) == 0
    records = json.loads((photos / "boxes.json").read_text())["images"]
    assert sorted(os.path.basename(r["path"]) for r in records) == ["a.jpg", "b.png"]


def test_the_library_workflows_agree_with_the_map_and_box_rule(tmp_path, saved_model):
    """``inference.predict`` and ``inference.extract`` are callable without the CLI, and both cut the box
    of ``localization_maps`` by ``map_to_box`` (the same box for the same image)."""
    from c2am_tf import data
    from c2am_tf.data.transforms import resize_square
    from c2am_tf.inference.extract import extract_boxes, extraction_header
    from c2am_tf.inference.maps import localization_maps
    from c2am_tf.inference.predict import predict
    from c2am_tf.maps.boxes_json import input_images
    from c2am_tf.utils.image_io import load_image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.RandomState(3)
    for k in range(2):
        image = np.zeros((48, 80, 3), np.uint8)
        image[10:30, 20 + 10 * k:60, :] = rng.randint(150, 255, (20, 40 - 10 * k, 3))
        Image.fromarray(image).save(photos / f"p{k}.png")
    out = tmp_path / "out"
    paths = input_images(str(photos), str(out))
    records = predict(paths, saved_model, str(out), size=64, threshold=0.5)
    model = load_model(saved_model)
    for record in records:
        image = load_image(record["path"])
        maps, _ = localization_maps(model, resize_square(image, 64)[None])
        box, fraction = map_to_box(maps[0], 0.5, record["width"], record["height"])
        np.testing.assert_allclose(record["box"], box, atol=1e-4)
        assert record["foreground_fraction"] == pytest.approx(fraction)
    assert input_images(str(photos), str(photos)) == paths  # its own pictures are not read again
    predict(paths, saved_model, str(photos), size=64, threshold=0.5)
    assert input_images(str(photos), str(photos)) == paths

    header = extraction_header(saved_model, None, 0.5, 64, "folder", "train")
    extracted = extract_boxes(model, data.make_source("folder", "train", str(photos)), str(tmp_path / "b.json"),
                              header, 0.5, 64)
    by_path = {r["path"]: r for r in extracted}
    for record in records:
        np.testing.assert_allclose(by_path[record["path"]]["box"], record["box"], atol=1.0)
    assert json.loads((tmp_path / "b.json").read_text())["model_sha256"] == hashlib.sha256(
        open(saved_model, "rb").read()).hexdigest()
