"""c2am_tf.cli: every command checks its settings alike, before any work, as one-line flag errors."""

import collections
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from c2am_tf.cli import run_command

# each refused before a model is loaded: the model named here does not exist
NONSENSE = [
    ("evaluate", ["--model", "m.keras", "--dataset", "synthetic", "--threshold", "5"], "--threshold must be a fraction"),
    ("evaluate", ["--model", "m.keras", "--dataset", "synthetic", "--threshold", "-1"], "--threshold must be a fraction"),
    ("evaluate", ["--model", "m.keras", "--dataset", "synthetic", "--thresholds", "0.5", "nan"],
     "--thresholds must be a fraction"),
    ("evaluate", ["--model", "m.keras", "--dataset", "synthetic", "--scales", "1", "nan"],
     "--scales must be a resize factor"),
    ("extract-boxes", ["--model", "m.keras", "--dataset", "synthetic", "--out", "b.json", "--threshold", "5"],
     "--threshold must be a fraction"),
    ("extract-boxes", ["--model", "m.keras", "--dataset", "synthetic", "--out", "b.json", "--threshold", "nan"],
     "--threshold must be a fraction"),
    ("extract-boxes", ["--model", "m.keras", "--dataset", "synthetic", "--out", "b.json", "--box-band", "0.9"],
     "--box-band must be a fraction"),
    ("predict", ["x.jpg", "--model", "m.keras", "--out", "o", "--threshold", "inf"], "--threshold must be a fraction"),
    ("predict", ["x.jpg", "--model", "m.keras", "--out", "o", "--size", "100000"], "--size must be at most 8000"),
    ("predict", ["x.jpg", "--model", "m.keras", "--out", "o", "--cam-weight", "2"], "--cam-weight must be a weight"),
    ("detect", ["x.jpg", "--model", "m.tflite", "--threads", "0"], "--threads must be an integer >= 1"),
    ("detect", ["x.jpg", "--model", "m.tflite", "--threshold", "1.5"], "--threshold must be a fraction"),
    ("fit-bgcues", ["--c2am", "m.keras", "--images", "photos", "--cue-threshold", "3"], "--cue-threshold must be"),
]


@pytest.mark.parametrize("command, argv, message", NONSENSE, ids=[f"{c}{a[-2]}{a[-1]}" for c, a, _ in NONSENSE])
def test_a_setting_no_run_can_use_is_one_line_in_every_command(tmp_path, monkeypatch, capsys, command, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as err:
        run_command(command, argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and message in lines[-1], lines
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_help_does_not_print_a_switchs_default(capsys):
    with pytest.raises(SystemExit):
        run_command("evaluate", ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "skip MaxBoxAccV2" in text and "skip MaxBoxAccV2 (default: True)" not in text


class _Evil:
    """Unpickling this creates the folder ``marker``: the test sees whether code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _one_line(capsys, status, code):
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == code and "Traceback" not in "\n".join(lines), lines
    return lines[-1]


@pytest.mark.parametrize("value, message", [("", "TF_CONFIG is set but empty"),
                                            ("{", "TF_CONFIG is not valid JSON"),
                                            ('{"task": {"type": "worker", "index": 0}}', "with its cluster")])
def test_a_malformed_tf_config_is_one_line(tmp_path, monkeypatch, capsys, value, message):
    monkeypatch.setenv("TF_CONFIG", value)
    status = run_command("fit", ["--backbone", "tiny", "--weights", "none", "--out", str(tmp_path / "run")])
    assert message in _one_line(capsys, status, 1) and not (tmp_path / "run").exists()


def test_a_bad_tflite_file_is_one_line(tmp_path, capsys):
    pytest.importorskip("ai_edge_litert")
    import keras

    from c2am_tf.backbones import build_backbone
    from c2am_tf.deploy import tflite_export as tflite
    from c2am_tf.models.c2am.model import C2AM

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    content = tflite.convert(C2AM(build_backbone("tiny", weights=None)), 64, "none")
    inputs = keras.Input((10,), batch_size=1)
    foreign = tflite_from_keras(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    for name, data in (("truncated", content[: len(content) // 2]), ("random", os.urandom(4096)),
                       ("foreign", foreign)):
        (tmp_path / f"{name}.tflite").write_bytes(data)
        status = run_command("detect", [str(tmp_path / "a.png"), "--model", str(tmp_path / f"{name}.tflite"),
                                        "--out", str(tmp_path / "out")])
        line = _one_line(capsys, status, 1)
        assert f"{name}.tflite: not a" in line and "TFLite model" in line, line


def tflite_from_keras(model):
    """A TFLite flatbuffer of any Keras model (here: one that is no C2AM model)."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def test_a_truncated_keras_file_and_an_out_that_is_a_file_are_one_line(tmp_path, capsys):
    import keras

    from c2am_tf.backbones import build_backbone
    from c2am_tf.models.c2am.model import C2AM

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    C2AM(build_backbone("tiny", weights=None)).save(tmp_path / "m.keras")
    (tmp_path / "cut.keras").write_bytes((tmp_path / "m.keras").read_bytes()[:2000])
    status = run_command("predict", [str(tmp_path / "a.png"), "--model", str(tmp_path / "cut.keras"),
                                     "--out", str(tmp_path / "out")])
    line = _one_line(capsys, status, 1)  # an InputError, worded by run_command as in every command
    assert "cut.keras: not a readable .keras model" in line and "not found" not in line, line
    (tmp_path / "taken").write_text("a file of mine")
    for command, argv in (("predict", [str(tmp_path / "a.png"), "--model", str(tmp_path / "m.keras")]),
                          ("fit", ["--backbone", "tiny"])):
        with pytest.raises(SystemExit) as err:
            run_command(command, argv + ["--out", str(tmp_path / "taken")])
        line = _one_line(capsys, err.value.code, 2)
        assert "--out: " in line and "taken is a file, not a folder" in line, line
    assert (tmp_path / "taken").read_text() == "a file of mine"
    keras.backend.clear_session()


def test_refused_pickles_are_one_line_and_run_nothing(tmp_path, capsys):
    import zipfile

    from c2am_tf.wsss.cam import write_cams

    marker = tmp_path / "pwned"
    with zipfile.ZipFile(tmp_path / "evil.pth", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(collections.OrderedDict(x=_Evil(marker)), protocol=2))
    status = run_command("fit", ["--dataset", "synthetic", "--weights", str(tmp_path / "evil.pth"),
                                 "--synthetic-count", "16", "--batch-size", "8", "--out", str(tmp_path / "run")])
    line = _one_line(capsys, status, 2)  # run_command's one line, as for every command's ConfigError
    assert "--weights" in line and "evil.pth: cannot be loaded" in line and "refusing to load 'posix.mkdir'" in line
    # a CAM file (PSA-style .npy dict) with code in it, given to refine
    for d in ("images", "cams", "cues"):
        (tmp_path / d).mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    np.save(tmp_path / "cams" / "a.npy", np.array({"keys": np.array([1]), "hr_cam": _Evil(marker)}, dtype=object),
            allow_pickle=True)
    np.save(tmp_path / "cues" / "a.npy", np.zeros((4, 4), np.float32))
    assert write_cams  # the safe format the message points to
    status = run_command("refine", ["--cams", str(tmp_path / "cams"), "--bg-cues", str(tmp_path / "cues"),
                                    "--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                                    "--num-classes", "3"])
    line = _one_line(capsys, status, 1)
    assert "a.npy: refusing to load 'posix.mkdir'" in line, line
    assert not marker.exists()


def test_fits_progress_is_a_line_an_epoch_in_a_log_file_and_a_bar_on_a_terminal(monkeypatch):
    """Keras's bar redraws itself: in a log file that was hundreds of lines an epoch."""
    import sys

    from c2am_tf.cli.fit import parse_args

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert parse_args(["--backbone", "tiny", "--weights", "none"])[0].verbose == 2
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert parse_args(["--backbone", "tiny", "--weights", "none"])[0].verbose == 1
    assert parse_args(["--backbone", "tiny", "--weights", "none", "--verbose", "0"])[0].verbose == 0


@pytest.mark.parametrize("name", sorted(__import__("c2am_tf.cli", fromlist=["COMMANDS"]).COMMANDS))
def test_help_texts_name_commands_and_no_development_paths(name):
    """A user reads --help: it named the repository's scripts (python export/tflite.py) and our dev data."""
    import importlib

    from c2am_tf.cli import COMMANDS

    text = importlib.import_module(f"c2am_tf.cli.{COMMANDS[name][0]}").build_parser(f"c2am-tf {name}").format_help()
    for needle in ("../shared", "python train/", "python export/", "export/tflite.py"):
        assert needle not in text, (name, needle)


def test_no_shipped_file_carries_a_development_path():
    """What the wheel ships (the package's code, presets.json, docstrings) names no folder of our machines."""
    from conftest import ROOT

    root = os.path.join(ROOT, "c2am_tf")
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith((".py", ".json", ".md", ".txt")):
                path = os.path.join(folder, name)
                if "../shared" in open(path, encoding="utf-8").read():
                    found.append(os.path.relpath(path, ROOT))
    assert not found, found
