"""Outputs never replace what the user made (issue 35): every output is claimed against the command's inputs and
its other outputs, temporary files are created exclusively, an output folder is locked while a run writes it, and a
file a run did not write is never replaced without --overwrite."""

import json
import os

import numpy as np
import pytest

from c2am_tf.cli import run_command


def _one_line_error(capsys, call, code=2):
    """Runs ``call`` (a command), which must fail with ``code`` and one line on stderr; returns that line."""
    try:
        status = call()
    except SystemExit as err:
        status = err.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == code and lines and "Traceback" not in "\n".join(lines), lines
    return lines[-1]


def _boxes_file(path, cub):
    """A c2am_tf.boxes/v1 file with one box per image of the CUB folder ``cub``."""
    records = []
    for line in (cub / "images.txt").read_text().split("\n"):
        if line.strip():
            records.append({"path": line.split()[1], "width": 80, "height": 64, "box": [8, 10, 38, 40],
                            "foreground_fraction": 0.2})
    path.write_text(json.dumps({"format": "c2am_tf.boxes/v1", "model": "m", "threshold": 0.5, "images": records}))
    return path


def test_evaluate_json_never_replaces_an_input(tmp_path, capsys, monkeypatch):
    from test_evaluate import _cub_folder

    monkeypatch.chdir(tmp_path)
    cub = _cub_folder(tmp_path / "cub")
    boxes = _boxes_file(tmp_path / "b.json", cub)
    before = {p: p.read_bytes() for p in (boxes, cub / "images.txt")}
    common = ["--boxes", "b.json", "--dataset", "cub", "--data-dir", "cub", "--split", "test"]
    line = _one_line_error(capsys, lambda: run_command("evaluate", common + ["--json", "b.json"]))
    assert "--json: b.json is an input of this command" in line, line
    for extra in ([], ["--overwrite"]):
        line = _one_line_error(capsys, lambda: run_command("evaluate", common + ["--json", "cub/images.txt"] + extra))
        assert "--json: cub/images.txt" in line and ("input folder cub" in line or "exists" in line), line
    assert {p: p.read_bytes() for p in before} == before
    # a new file is written, and a second run does not replace it unasked
    assert run_command("evaluate", common + ["--json", "scores.json"]) == 0
    assert json.loads((tmp_path / "scores.json").read_text())["total"] == 2
    line = _one_line_error(capsys, lambda: run_command("evaluate", common + ["--json", "scores.json"]))
    assert "scores.json exists; pass --overwrite" in line
    assert run_command("evaluate", common + ["--json", "scores.json", "--overwrite"]) == 0
