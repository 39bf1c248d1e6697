"""c2am_tf.cli: every command checks its settings alike, before any work, as one-line flag errors."""

import pytest

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
