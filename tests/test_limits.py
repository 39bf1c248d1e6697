"""Nothing hangs and memory is bounded by limits (issue 35): only regular files are opened, every file that
declares a size is checked against its limit before anything is allocated, and every wait has a deadline."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

from c2am_tf.cli import run_command
from c2am_tf.utils.errors import InputError


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cluster_that_never_starts_ends_the_run_in_one_line_naming_the_silent_worker(tmp_path):
    me, missing = _free_port(), _free_port()
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": [f"127.0.0.1:{me}", f"127.0.0.1:{missing}"]},
                                                  "task": {"type": "worker", "index": 0}})}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "c2am_tf", "fit", "--dataset", "synthetic", "--backbone", "tiny",
                           "--weights", "none", "--out", str(tmp_path / "run"), "--cluster-timeout", "4"],
                          env=env, capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stderr.splitlines() if "error" in line and "TF_CONFIG" in line]
    assert proc.returncode == 1 and lines, proc.stderr[-3000:]
    assert f"did not start within 4 s (--cluster-timeout); not answering: 127.0.0.1:{missing}" in lines[-1]
    assert "Traceback" not in proc.stderr and time.monotonic() - start < 200


def test_the_wait_for_a_cluster_says_whom_it_waits_for_and_ends_at_its_deadline(tmp_path):
    port = _free_port()
    script = ("import os, json, time\n"
              f"os.environ['TF_CONFIG'] = json.dumps({{'cluster': {{'worker': ['127.0.0.1:1', '127.0.0.1:{port}']}}, "
              "'task': {'type': 'worker', 'index': 0}})\n"
              "from c2am_tf.runtime.distribute import wait_for_cluster\n"
              "print(wait_for_cluster(lambda: 'quick', timeout=5), flush=True)\n"
              "wait_for_cluster(lambda: time.sleep(60), timeout=1.5, report_every=0.5)\n"
              "print('never here')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout.split() == ["quick"], (proc.stdout, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert any(line.startswith("waiting for the cluster: ") and f"not answering: 127.0.0.1:{port}" in line
               for line in lines), lines
    assert lines[-1].startswith("error: TF_CONFIG: the cluster did not start within 1.5 s (--cluster-timeout)"), lines
    with pytest.raises(Exception, match="cluster_timeout must be a finite number of seconds > 0"):
        from c2am_tf.runtime.distribute import wait_for_cluster

        wait_for_cluster(lambda: None, timeout=float("nan"))


def test_nothing_blocks_on_a_fifo_named_like_an_image_or_a_model(tmp_path):
    """Each case in a child process with a deadline: before the fix, each blocked for ever on open()."""
    photos = tmp_path / "in"
    photos.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(photos / "a.jpg")
    os.mkfifo(photos / "x.jpg")
    os.mkfifo(tmp_path / "m.keras")
    os.mkfifo(tmp_path / "m.tflite")
    script = f"""
import sys
from c2am_tf.utils.files import image_paths
from c2am_tf.utils.errors import InputError
print(len(image_paths({str(photos)!r})))
for call in ("image_paths({str(photos / 'x.jpg')!r})", "load_model({str(tmp_path / 'm.keras')!r})",
             "ForegroundDetector({str(tmp_path / 'm.tflite')!r})", "load_image({str(photos / 'x.jpg')!r})"):
    from c2am_tf.presets import load_model
    from c2am_tf.deploy.on_device import ForegroundDetector
    from c2am_tf.utils.image_io import load_image
    try:
        eval(call)
    except (InputError, ValueError) as err:
        print(err)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines[0] == "1", (proc.stdout, proc.stderr[-2000:])
    assert "skipping 1 image name that is not a regular file" in proc.stderr and "x.jpg: a FIFO" in proc.stderr
    assert lines[1:] == [f"{photos / 'x.jpg'}: a FIFO, not a regular file",
                         f"{tmp_path / 'm.keras'}: a FIFO, not a regular file (the model)",
                         f"{tmp_path / 'm.tflite'}: a FIFO, not a regular file (the model)",
                         f"{photos / 'x.jpg'}: a FIFO, not a regular file"], lines


def test_an_over_long_path_is_named_as_such(tmp_path):
    from c2am_tf.utils.files import image_paths

    with pytest.raises(InputError, match="File name too long"):
        image_paths(str(tmp_path / ("x" * 300 + ".jpg")))


def _png_header(width, height):
    """A PNG that declares width x height 8-bit gray pixels and holds one row of them: 1.5 MB that would
    decode to gigabytes."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + chunk(b"IEND", b""))


def test_small_files_that_declare_huge_arrays_are_refused_before_allocating(tmp_path, monkeypatch):
    from c2am_tf.data.segmentation import read_label_png
    from c2am_tf.utils.safe_pickle import load_npy
    from c2am_tf.wsss.cam import read_cams, write_cams

    # a .npy header asking for 37 GB, with no data behind it
    header = {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)}
    with open(tmp_path / "big.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(InputError, match=r"big\.npy: its array \(100000, 100000\) float32 declares 40 GB, over the "
                                         r"limit of 1.07 GB \(set C2AM_MAX_ARRAY_BYTES to read it\)"):
        load_npy(str(tmp_path / "big.npy"))
    # an .npz whose CAM inflates past the limit (lowered here, so the crafted file stays small)
    write_cams(str(tmp_path / "cam.npz"), [1], np.zeros((1, 512, 512), np.float32))
    assert read_cams(str(tmp_path / "cam.npz"))[1].shape == (1, 512, 512)
    monkeypatch.setenv("C2AM_MAX_ARRAY_BYTES", "100000")
    with pytest.raises(InputError, match=r"cam\.npz: its (member 'cams\.npy'|array 'cams' \(1, 512, 512\) float16) "
                                         r"declares 524 KB, over the limit of 100 KB"):
        read_cams(str(tmp_path / "cam.npz"))
    # a ground-truth mask PNG declaring 40000^2 pixels
    (tmp_path / "mask.png").write_bytes(_png_header(40000, 40000))
    with pytest.raises(InputError, match=r"mask\.png: its 40000x40000 label mask declares 1.6e\+03 megapixels, over "
                                         r"the limit of 64 megapixels \(set C2AM_MAX_PIXELS"):
        read_label_png(str(tmp_path / "mask.png"))


@pytest.mark.parametrize("value", ["abc", "-5", "0"])
def test_a_bad_limit_in_the_environment_is_one_line(tmp_path, monkeypatch, capsys, value):
    monkeypatch.setenv("C2AM_MAX_PIXELS", value)
    status = run_command("predict", [str(tmp_path), "--preset", "cub_lite0", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err[-1] == (f"c2am-tf predict: error: C2AM_MAX_PIXELS must be a positive integer (pixels "
                                       f"of one decoded image); got {value!r}"), err
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "o").exists()


def _keras_file(tmp_path):
    import keras

    from c2am_tf.backbones import build_backbone
    from c2am_tf.models.c2am.model import C2AM

    path = tmp_path / "m.keras"
    C2AM(build_backbone("tiny", weights=None)).save(path)
    keras.backend.clear_session()
    return path


def test_a_keras_archive_that_inflates_past_its_limits_is_refused_before_keras_reads_it(tmp_path, monkeypatch):
    from c2am_tf.presets import load_model

    good = _keras_file(tmp_path)
    assert load_model(str(good)).threshold is not None
    # a zip bomb in the weights: 64 MB of zeros stored in ~64 KB
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info) if info.filename != "model.weights.h5" else bytes(64 << 20))
    with pytest.raises(InputError, match=r"bomb\.keras: its model\.weights\.h5 inflates \d+ times .*a zip bomb"):
        load_model(str(bomb))
    monkeypatch.setenv("C2AM_MAX_CONFIG_BYTES", "1000")
    with pytest.raises(InputError, match=r"m\.keras: its config\.json declares [\d.]+ KB, over the limit of 1 KB "
                                         r"\(set C2AM_MAX_CONFIG_BYTES"):
        load_model(str(good))
    monkeypatch.setenv("C2AM_MAX_CONFIG_BYTES", str(64 << 20))
    monkeypatch.setenv("C2AM_MAX_MODEL_BYTES", "10000")
    with pytest.raises(InputError, match=r"its archive declares .*over the limit of 10 KB"):
        load_model(str(good))


class _Server:
    """A TF Serving stand-in on 127.0.0.1 answering every POST with ``reply(handler)``."""

    def __init__(self, reply):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    reply(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/models/c2am:predict"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _drip(handler):
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(100):  # one byte every 0.3 s: each read is quick, the answer never complete in time
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.3)


def _html_error(handler):
    page = b"<html><head><title>502 Bad Gateway</title></head><body>" + b"<p>x</p>" * 2000 + b"</body></html>"
    handler.send_response(502)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", str(len(page)))
    handler.end_headers()
    handler.wfile.write(page)


def _big(handler):
    body = json.dumps({"predictions": [[0.0] * 5000]}).encode()
    handler.send_response(200)
    handler.end_headers()  # no Content-Length: the client must count as it reads
    handler.wfile.write(body)


def _odd(handler):
    handler.send_response(200)
    handler.send_header("Content-Length", "2")
    handler.end_headers()
    handler.wfile.write(b"[]")


def test_serving_requests_are_bounded_in_time_and_size_and_errors_are_one_line(monkeypatch):
    from c2am_tf.deploy.serving_client import ServingError, post_rest

    with _Server(_drip) as server:
        start = time.monotonic()
        with pytest.raises(ServingError, match=r"no complete answer within 1.5 s \(--timeout\)"):
            post_rest(server.url, {"instances": []}, timeout=1.5)
        assert time.monotonic() - start < 5
    with _Server(_html_error) as server:
        with pytest.raises(ServingError) as err:
            post_rest(server.url, {"instances": []}, timeout=10)
        assert str(err.value) == f"{server.url}: HTTP 502: 502 Bad Gateway"
    monkeypatch.setenv("C2AM_MAX_RESPONSE_BYTES", "4096")
    with _Server(_big) as server:
        with pytest.raises(ServingError, match=r"over the limit of 4,096 bytes \(C2AM_MAX_RESPONSE_BYTES\)"):
            post_rest(server.url, {"instances": []}, timeout=10)
    with _Server(_odd) as server:
        with pytest.raises(ServingError, match=r"not a TF Serving predict answer \(ValueError: a JSON list"):
            post_rest(server.url, {"instances": []}, timeout=10)


@pytest.mark.parametrize("flags, message", [(["--timeout", "-1"], "--timeout must be a finite number of seconds"),
                                            (["--timeout", "nan"], "--timeout must be a finite number of seconds"),
                                            (["--timeout", "inf"], "--timeout must be a finite number of seconds"),
                                            (["--host", "a b"], "--host must be a host name or address")])
def test_serve_client_refuses_settings_without_a_deadline_or_a_host(tmp_path, capsys, flags, message):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as err:
        run_command("serve-client", [str(tmp_path / "a.png"), *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and message in lines[-1], lines


def test_a_keras_config_declaring_layers_no_memory_holds_is_one_line(tmp_path):
    """In a child process with its address space capped at 20 GB, so the refused allocation can never succeed."""
    script = f"""
import json, os, resource, zipfile
resource.setrlimit(resource.RLIMIT_AS, (20 << 30, 20 << 30))
import keras
os.chdir({str(tmp_path)!r})
keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(8, 3)]).save("small.keras")
with zipfile.ZipFile("small.keras") as z:
    files = {{i.filename: z.read(i) for i in z.infolist()}}
config = json.loads(files["config.json"])
config["config"]["layers"][-1]["config"].update(filters=1 << 20, kernel_size=[64, 64])  # 51 GB of weights
files["config.json"] = json.dumps(config).encode()
with zipfile.ZipFile("big.keras", "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
from c2am_tf.cli import run_command
raise SystemExit(run_command("predict", ["small.keras", "--model", "big.keras", "--out", "o"]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].endswith("big.keras: its layers need more memory than there is (a weight of "
                              "shape[64,64,3,1048576]); not a model this machine can load"), lines[-1]
