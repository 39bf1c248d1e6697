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
    if isinstance(status, str):  # sys.exit(message): Python prints it and exits 1
        lines, status = lines + [status], 1
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


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A saved C2AM model on the tiny backbone (untrained: these tests are about files, not maps)."""
    import keras

    from c2am_tf.backbones import build_backbone
    from c2am_tf.models.c2am.model import C2AM

    path = tmp_path_factory.mktemp("model") / "m.keras"
    C2AM(build_backbone("tiny", weights=None)).save(path)
    keras.backend.clear_session()
    return path


def _photos(folder, n=2):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray(rng.randint(0, 255, (40, 48, 3)).astype(np.uint8)).save(folder / f"img{i}.jpg")
    return folder


def test_a_link_planted_at_a_temporary_name_is_never_followed(tmp_path, tiny_model):
    from c2am_tf.training.callbacks import save_atomically
    from c2am_tf.utils.files import write_atomically

    photos = _photos(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    out = tmp_path / "out"
    out.mkdir()
    # the names the writers used before: .NAME.tmp beside each output, and .NAME.tmp.keras for models
    for name in ("img0.jpg.png", "img0.jpg.json", "img1.jpg.png", "img1.jpg.json", "boxes.json"):
        os.symlink(photos / "img0.jpg", out / f".{name}.tmp")
    assert run_command("predict", [str(photos), "--model", str(tiny_model), "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before
    assert json.loads((out / "boxes.json").read_text())["images"][0]["path"].endswith("img0.jpg")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    os.symlink(victim, tmp_path / ".a.txt.tmp")
    write_atomically(tmp_path / "a.txt", "written")
    os.symlink(victim, out / ".last.keras.tmp.keras")
    import keras

    save_atomically(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), str(out / "last.keras"))
    assert victim.read_text() == "mine" and (tmp_path / "a.txt").read_text() == "written"
    assert (out / "last.keras").stat().st_size > 1000
    assert oct(os.stat(tmp_path / "a.txt").st_mode & 0o777) == oct(0o666 & ~_umask())  # as open() would make it


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from c2am_tf.utils import files
    from c2am_tf.utils.files import OutputError, atomic_path, write_atomically

    with pytest.raises(OutputError, match=r"cannot write it \(File name too long\)"):
        write_atomically(tmp_path / ("x" * 300), b"data")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fd, mode):
            self.f = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        write = staticmethod(full)

    monkeypatch.setattr(files.os, "fdopen", Full)
    with pytest.raises(OutputError, match=r"b\.json: cannot write it \(No space left on device\)"):
        write_atomically(tmp_path / "b.json", b"{}")
    monkeypatch.undo()
    with pytest.raises(OutputError, match="No space left"):
        with atomic_path(tmp_path / "c.keras"):
            full()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command, argv, message", [
    ("extract-boxes", ["--preset", "cub_lite0", "--dataset", "synthetic", "--out", "x.json", "--psol-out", "x.json"],
     "--psol-out: x.json is also --out"),
    ("extract-boxes", ["--preset", "cub_lite0", "--dataset", "synthetic", "--out", "x.json", "--psol-out",
                       "./sub/../x.json"], "is also --out"),
    ("fit-classifier", ["--dataset", "cub", "--data-dir", "sub", "--out", "run", "--cams-out", "run"],
     "--cams-out: run is also --out"),
])
def test_two_outputs_of_one_command_never_share_a_path(tmp_path, capsys, monkeypatch, command, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    line = _one_line_error(capsys, lambda: run_command(command, argv))
    assert message in line, line
    assert os.listdir(tmp_path) == ["sub"] and os.listdir(tmp_path / "sub") == []  # nothing written


def test_a_second_run_into_a_locked_output_is_one_line_and_a_dead_runs_lock_is_taken_over(tmp_path, capsys,
                                                                                           tiny_model):
    import signal
    import subprocess
    import sys

    photos, out = _photos(tmp_path / "in"), tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from c2am_tf.maps.boxes_json import BoxesWriter\n"
        f"w = BoxesWriter({str(out / 'boxes.json')!r}, {{'model': 'other'}})\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        line = _one_line_error(capsys, lambda: run_command(
            "predict", [str(photos), "--model", str(tiny_model), "--out", str(out)]), code=1)
        assert "boxes.json is being written by another run (pid " + str(holder.pid) in line, line
        assert not (out / "img0.jpg.png").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert (out / ".boxes.json.lock").exists()  # a killed run's lock file stays; the kernel released its lock
    (out / "boxes.json.partial.jsonl").unlink()  # the killed run's records (of another model)
    assert run_command("predict", [str(photos), "--model", str(tiny_model), "--out", str(out)]) == 0
    assert len(json.loads((out / "boxes.json").read_text())["images"]) == 2
    assert not (out / ".boxes.json.lock").exists()


def test_a_trainer_refuses_a_run_folder_another_run_is_writing(tmp_path, capsys):
    from c2am_tf.training import run_folder

    out = tmp_path / "run"
    with run_folder.lock(str(out)):
        line = _one_line_error(capsys, lambda: run_command("fit", [
            "--dataset", "synthetic", "--backbone", "tiny", "--weights", "none", "--out", str(out)]), code=1)
    assert f"{out}{os.sep} is being written by another run (pid {os.getpid()}" in line, line
    assert not out.exists()  # nothing of the refused run; the folder the holder's lock made went with it


def test_a_file_of_the_users_in_out_is_never_replaced_unasked(tmp_path, capsys, tiny_model):
    photos = _photos(tmp_path / "in")
    labels = (photos / "img0.jpg.json")
    labels.write_text('{"label": "a labelling tool\'s"}')
    argv = [str(photos), "--model", str(tiny_model), "--out", str(photos)]  # --out is the input folder
    line = _one_line_error(capsys, lambda: run_command("predict", argv), code=1)
    assert "img0.jpg.json: a file there was not written by c2am_tf" in line and "--overwrite" in line, line
    assert labels.read_text() == '{"label": "a labelling tool\'s"}'
    assert sorted(p.name for p in photos.iterdir() if not p.name.startswith(".")) == ["img0.jpg", "img0.jpg.json",
                                                                                       "img1.jpg"]
    out = tmp_path / "out"
    assert run_command("predict", argv[:-1] + [str(out)]) == 0
    assert run_command("predict", argv[:-1] + [str(out), "--threshold", "0.3", "--overwrite"]) == 0  # its own files
    assert run_command("predict", argv + ["--overwrite"]) == 0  # asked
    assert json.loads(labels.read_text())["path"].endswith("img0.jpg")


def test_a_cam_file_of_the_users_stops_fit_classifier_before_training(tmp_path, capsys):
    from test_evaluate import _cub_folder

    cub = _cub_folder(tmp_path / "cub")
    cams = tmp_path / "cams"
    cams.mkdir()
    np.savez(cams / "im001.npz", mine=np.ones(3))
    before = (cams / "im001.npz").read_bytes()
    argv = ["--dataset", "cub", "--data-dir", str(cub), "--backbone", "tiny", "--weights", "none", "--size", "32",
            "--epochs", "1", "--batch-size", "2", "--out", str(tmp_path / "clf"), "--cams-out", str(cams)]
    line = _one_line_error(capsys, lambda: run_command("fit-classifier", argv), code=1)
    assert "im001.npz: a file there was not written by c2am_tf" in line, line
    assert (cams / "im001.npz").read_bytes() == before and not (tmp_path / "clf" / "classifier.keras").exists()


@pytest.mark.parametrize("command, argv", [
    ("predict", ["a.png", "--preset", "cub_lite0", "--out", "x" * 300]),
    ("extract-boxes", ["--preset", "cub_lite0", "--dataset", "synthetic", "--out", "x" * 300 + "/b.json"]),
    ("export-tflite", ["--preset", "cub_lite0", "--out", "x" * 300 + ".tflite"]),
])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch, command, argv):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save("a.png")
    line = _one_line_error(capsys, lambda: run_command(command, argv), code=1)
    assert "File name too long" in line, line
    assert sorted(os.listdir(tmp_path)) == ["a.png"]
