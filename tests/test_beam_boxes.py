"""c2am_tf.inference.beam_boxes: the Apache Beam DirectRunner writes the single-process extractor's boxes."""

import glob
import json
import os
import shutil

import pytest
from conftest import data_dir

from c2am_tf.cli import extract_boxes
from c2am_tf.maps.boxes_json import read_boxes

pytest.importorskip("apache_beam", reason="Apache Beam is the optional extra 'beam' (requirements-beam.txt)")


def _twenty_images_and_a_broken_one(tmp_path):
    cub = data_dir("CUB_200_2011_dev")
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted(glob.glob(os.path.join(cub, "images", "*", "*.jpg")))[:20]:
        shutil.copy(path, folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_direct_runner_writes_the_local_extractors_boxes_and_resumes(tmp_path, caplog):
    folder = _twenty_images_and_a_broken_one(tmp_path)
    common = ["--preset", "cub_lite0", "--dataset", "folder", "--data-dir", str(folder)]
    extract_boxes.main(common + ["--out", str(tmp_path / "local.json")])
    prefix = str(tmp_path / "beam" / "boxes")
    beam = common + ["--runner", "DirectRunner", "--num-shards", "3", "--out", prefix]
    assert extract_boxes.main(beam) == 0
    local = read_boxes(str(tmp_path / "local.json"))
    sharded = read_boxes(prefix)
    assert sharded["threshold"] == pytest.approx(local["threshold"]) and sharded["model"] == local["model"]
    ours = {r["path"]: r for r in sharded["images"]}
    theirs = {r["path"]: r for r in local["images"]}
    assert len(ours) == 20 and set(ours) == set(theirs)  # the broken file is left out by both
    for path, record in theirs.items():
        assert ours[path] == record, path  # same box, size and foreground fraction
    assert "unreadable image" in caplog.text and "broken.jpg" in caplog.text
    # a lost part is recomputed alone; the others are left as they are
    parts = sorted(glob.glob(prefix + "-*-of-00003.jsonl"))
    assert len(parts) == 3
    kept = os.path.getmtime(parts[0]), open(parts[0]).read()
    os.remove(parts[1])
    with pytest.raises(ValueError, match="1 of 3 parts are missing"):
        read_boxes(prefix)
    extract_boxes.main(beam)
    assert (os.path.getmtime(parts[0]), open(parts[0]).read()) == kept
    assert {r["path"]: r for r in read_boxes(prefix)["images"]} == ours
    with open(parts[1]) as f:
        assert json.loads(f.readline())["header"]["shard"] == 1
    # another shard count on the same prefix would split the images differently: refused
    from c2am_tf.utils.errors import InputError

    with pytest.raises(InputError, match="another number of shards"):  # run_command prints it as one line
        extract_boxes.main(common + ["--runner", "DirectRunner", "--num-shards", "4", "--out", prefix])


def test_beam_flags_need_a_runner_and_a_saved_model_needs_a_threshold(capsys):
    with pytest.raises(SystemExit):
        extract_boxes.main(["--preset", "cub_lite0", "--out", "x.json", "--direct_num_workers", "2"])
    assert "Beam options need --runner" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        extract_boxes.main(["--saved-model", "export/1", "--runner", "DirectRunner", "--out", "x"])
    assert "--saved-model needs --threshold" in capsys.readouterr().err


def test_keras_model_and_saved_model_handlers_match_the_local_extractor(tmp_path):
    """Runs everywhere (no ../shared): a tiny C2AM, its .keras file and its SavedModel."""
    import cv2
    import keras
    import numpy as np

    from c2am_tf.backbones import build_backbone
    from c2am_tf.deploy.saved_model import export_saved_model
    from c2am_tf.models.c2am.model import C2AM

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        y, x = np.mgrid[0:60 + 10 * i, 0:80]
        blob = ((x - 20 - 5 * i) ** 2 + (y - 30) ** 2 < 300).astype(float)
        image = np.stack([blob * 200 + x, y * 2 + 20 * rng.random(), blob * 90 + 30], -1)
        cv2.imwrite(str(folder / f"{i}.png"), image.clip(0, 255).astype(np.uint8))
    (folder / "broken.png").write_bytes(b"nope")
    keras.utils.set_random_seed(4)
    model = C2AM(build_backbone("tiny", weights=None))
    kernel = model.head.weights[0]
    kernel.assign(keras.random.normal(kernel.shape, stddev=2.0))  # maps that vary across each image
    model.threshold.assign(0.5)
    model.save(str(tmp_path / "m.keras"))
    saved = export_saved_model(model, str(tmp_path / "export"))
    common = ["--dataset", "folder", "--data-dir", str(folder), "--size", "128"]
    extract_boxes.main(["--model", str(tmp_path / "m.keras"), "--out", str(tmp_path / "local.json")] + common)
    beam = ["--runner", "DirectRunner", "--num-shards", "2"] + common
    extract_boxes.main(["--model", str(tmp_path / "m.keras"), "--out", str(tmp_path / "k" / "b")] + beam)
    extract_boxes.main(["--saved-model", saved, "--threshold", "0.5", "--out", str(tmp_path / "s" / "b")] + beam)
    local = {r["path"]: r for r in read_boxes(str(tmp_path / "local.json"))["images"]}
    assert len(local) == 6
    fractions = [r["foreground_fraction"] for r in local.values()]
    assert 0.05 < min(fractions) and max(fractions) < 0.95  # real boxes, not the whole image
    for prefix in ("k", "s"):
        ours = {r["path"]: r for r in read_boxes(str(tmp_path / prefix / "b"))["images"]}
        assert ours == local, prefix
