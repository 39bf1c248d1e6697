"""The PSOL regressor: valid boxes by construction, flips that move the box, and the command end to end."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from c2am_tf.backbones import build_backbone
from c2am_tf.models.psol.regressor import build_regressor, predict_boxes, pseudo_box_dataset


def _records(tmp_path, n=4):
    records = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.zeros((50, 100, 3), np.uint8)).save(path)
        records.append({"path": str(path), "width": 100, "height": 50, "box": [10, 5, 40, 45]})
    records.append({"path": str(tmp_path / "0.png"), "width": 100, "height": 50, "box": [0, 0, 0, 0]})  # no object
    return records


def test_pseudo_boxes_are_normalized_flipped_with_the_image_and_empty_ones_left_out(tmp_path):
    batches = list(pseudo_box_dataset(_records(tmp_path), 8, size=32, seed=0))
    boxes = batches[0][1].numpy()
    assert boxes.shape == (4, 4)  # the empty pseudo box is not a target
    plain, mirrored = np.array([0.1, 0.1, 0.4, 0.9]), np.array([0.6, 0.1, 0.9, 0.9])
    assert all(np.allclose(b, plain) or np.allclose(b, mirrored) for b in boxes)


def test_regressor_boxes_are_valid_and_scaled_to_the_frame():
    reg = build_regressor(build_backbone("tiny", weights=None), size=64)
    boxes = predict_boxes(reg, np.random.RandomState(0).randint(0, 255, (3, 128, 128, 3)).astype(np.uint8), 128)
    assert boxes.shape == (3, 4)
    assert np.all(boxes[:, 0] <= boxes[:, 2]) and np.all(boxes[:, 1] <= boxes[:, 3])
    assert boxes.min() >= 0 and boxes.max() <= 128


def test_fit_regressor_learns_a_fixed_box_and_saves(tmp_path, capsys):
    from c2am_tf.cli import run_command
    from c2am_tf.presets import load_model

    records = _records(tmp_path)[:4]
    (tmp_path / "boxes.json").write_text(json.dumps({"format": "c2am_tf.boxes/v1", "images": records}))
    flags = ["--boxes", str(tmp_path / "boxes.json"), "--backbone", "tiny", "--weights", "none", "--size", "32",
             "--batch-size", "4", "--lr", "0.01", "--out", str(tmp_path / "reg")]
    assert run_command("fit-regressor", flags + ["--epochs", "60"]) == 0
    path = tmp_path / "reg" / "regressor.keras"
    reg = load_model(str(path), require_c2am=False)
    box = predict_boxes(reg, np.zeros((1, 32, 32, 3), np.uint8), 1.0)[0]
    # every image is the same black picture: the target is the mean of the box and its mirror
    np.testing.assert_allclose(box, [0.35, 0.1, 0.65, 0.9], atol=0.12)
    # a second run keeps the first one's regressor unless told to replace it
    trained = path.read_bytes()
    with pytest.raises(SystemExit) as err:
        run_command("fit-regressor", flags + ["--epochs", "1"])
    assert err.value.code == 2 and "regressor.keras exists; pass --overwrite" in capsys.readouterr().err
    assert path.read_bytes() == trained
    assert run_command("fit-regressor", flags + ["--epochs", "1", "--overwrite"]) == 0
    assert path.read_bytes() != trained


def test_a_boxes_file_without_objects_is_a_clear_error(tmp_path, capsys):
    from c2am_tf.cli import run_command

    (tmp_path / "boxes.json").write_text(json.dumps({"format": "c2am_tf.boxes/v1", "images": _records(tmp_path)[4:]}))
    assert run_command("fit-regressor", ["--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "r")]) == 2
    assert re.search(r"error: --boxes .*no record with a non-empty pseudo box", capsys.readouterr().err)


def test_a_killed_fit_resumes_from_its_last_epoch_and_other_flags_are_refused(tmp_path, monkeypatch, capsys):
    import csv

    import keras

    from c2am_tf.cli import run_command
    from c2am_tf.presets import load_model

    (tmp_path / "boxes.json").write_text(json.dumps({"format": "c2am_tf.boxes/v1", "images": _records(tmp_path)[:4]}))
    out = tmp_path / "reg"
    flags = ["--boxes", str(tmp_path / "boxes.json"), "--backbone", "tiny", "--weights", "none", "--size", "32",
             "--batch-size", "4", "--lr", "0.01", "--epochs", "4", "--out", str(out)]
    real = keras.callbacks.CSVLogger.on_epoch_end

    def killed_after_two(self, epoch, logs=None):
        if epoch == 2:  # the third epoch trains, then the process dies before its checkpoint
            raise KeyboardInterrupt
        real(self, epoch, logs)

    monkeypatch.setattr(keras.callbacks.CSVLogger, "on_epoch_end", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_command("fit-regressor", flags)
    monkeypatch.undo()
    assert json.loads((out / "resume.json").read_text())["epochs_done"] == 2 and not (out / "regressor.keras").exists()
    # other flags are refused before the boxes are read: an unreadable boxes file does not mask the refusal
    boxes = (tmp_path / "boxes.json").read_text()
    (tmp_path / "boxes.json").write_text("not json")
    capsys.readouterr()
    assert run_command("fit-regressor", flags[:-6] + ["--lr", "0.02", "--epochs", "4", "--out", str(out)]) == 2
    assert re.search(r"error: --out .*other settings \(lr 0.01 -> 0.02\)", capsys.readouterr().err)
    (tmp_path / "boxes.json").write_text(boxes)
    assert run_command("fit-regressor", flags) == 0
    assert "resuming from" in capsys.readouterr().out
    epochs = [row["epoch"] for row in csv.DictReader(open(out / "log.csv"))]
    assert epochs == ["0", "1", "2", "3"]  # each epoch logged once, across both processes
    # the optimizer went on where it stopped: as many steps as a run that was never killed
    assert run_command("fit-regressor", flags[:-1] + [str(tmp_path / "whole")]) == 0
    steps = [int(load_model(str(d / "regressor.keras"), require_c2am=False).optimizer.iterations.numpy())
             for d in (out, tmp_path / "whole")]
    assert steps[0] == steps[1] > 0
    assert sorted(p.name for p in out.iterdir()) == ["log.csv", "regressor.keras"]
