"""TF Serving client: REST and gRPC requests answered by stand-in servers that run the real
SavedModel signatures, the printed boxes against Keras, request formats and errors."""

import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from c2am_tf.backbones import build_backbone
from c2am_tf.deploy import serving_client as client
from c2am_tf.deploy.saved_model import export_saved_model
from c2am_tf.inference.postprocess import map_to_box
from c2am_tf.models.c2am.model import C2AM


def _cli():
    from c2am_tf.cli import serve_client

    return serve_client


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    keras.utils.set_random_seed(0)
    model = C2AM(build_backbone("tiny", weights=None))
    model.threshold.assign(0.4)
    path = export_saved_model(model, str(root / "models"), version=1)
    signatures = tf.saved_model.load(path).signatures
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 256, (48, 80, 3)).astype(np.uint8), rng.randint(0, 256, (64, 64, 3)).astype(np.uint8)]
    paths = []
    for i, image in enumerate(images):
        paths.append(str(root / f"im{i}.png"))
        Image.fromarray(image).save(paths[-1])
    return model, signatures, images, paths


def _run(signatures, name, batch, output_filter=()):
    outputs = signatures[name](images=tf.constant(batch, tf.uint8))
    return {k: v.numpy() for k, v in outputs.items() if not output_filter or k in output_filter}


class _RestHandler(BaseHTTPRequestHandler):
    """Answers POST /v1/models/c2am:predict as TF Serving does (row and columnar formats)."""

    signatures = None
    seen = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, body))
        if self.path != "/v1/models/c2am:predict":
            return self._reply(404, {"error": f"Servable not found for request: {self.path}"})
        name = body.get("signature_name", "serving_default")
        if "instances" in body:
            batch = np.asarray([row["images"] for row in body["instances"]], np.uint8)
            out = _run(self.signatures, name, batch)
            rows = [{k: v[i].tolist() for k, v in out.items()} for i in range(len(batch))]
            return self._reply(200, {"predictions": rows})
        out = _run(self.signatures, name, np.asarray(body["inputs"]["images"], np.uint8))
        return self._reply(200, {"outputs": {k: v.tolist() for k, v in out.items()}})

    def _reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _expected_lines(model, images, paths):
    lines = []
    for path, image in zip(paths, images):
        score_map = model.predict(image[None].astype(np.float32), verbose=0)[0, ..., 0]
        box, _ = map_to_box(score_map, 0.4, image.shape[1], image.shape[0])
        lines.append((path, box))
    return lines


def _check_printed(out, expected):
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert [line[0] for line in lines] == [path for path, _ in expected]
    for line, (_, box) in zip(lines, expected):
        np.testing.assert_allclose([float(v) for v in line[1].split()], box, atol=0.051)
        assert 0.0 <= float(line[2]) <= 1.0


@pytest.mark.parametrize("fmt", client.REST_FORMATS)
def test_rest_client_prints_the_keras_boxes(served, fmt, capsys):
    model, signatures, images, paths = served
    handler = type("Handler", (_RestHandler,), {"signatures": signatures, "seen": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status = _cli().main(paths + ["--port", str(server.server_port), "--host", "127.0.0.1",
                                      "--rest-format", fmt])
    finally:
        server.shutdown()
    assert status == 0
    _check_printed(capsys.readouterr().out, _expected_lines(model, images, paths))
    assert [body["signature_name"] for _, body in handler.seen] == ["serving_default"] * 2
    assert all(fmt in body for _, body in handler.seen)


def test_grpc_client_prints_the_keras_boxes(served, capsys):
    grpc = pytest.importorskip("grpc")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    model, signatures, images, paths = served
    requests = []

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (the service's name)
            requests.append(request)
            batch = tf.make_ndarray(request.inputs["images"])
            out = _run(signatures, request.model_spec.signature_name, batch, list(request.output_filter))
            reply = predict_pb2.PredictResponse()
            for k, v in out.items():
                reply.outputs[k].CopyFrom(tf.make_tensor_proto(v))
            return reply

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        status = _cli().main(paths + ["--protocol", "grpc", "--host", "127.0.0.1", "--port", str(port),
                                      "--version", "1"])
    finally:
        server.stop(None)
    assert status == 0
    _check_printed(capsys.readouterr().out, _expected_lines(model, images, paths))
    assert [list(r.output_filter) for r in requests] == [["boxes", "scores"]] * 2
    assert requests[0].model_spec.name == "c2am" and requests[0].model_spec.version.value == 1
    assert tf.make_ndarray(requests[0].inputs["images"]).dtype == np.uint8


def test_dry_run_prints_a_request_that_decodes_to_the_image(served, capsys):
    _, _, images, paths = served
    assert _cli().main([paths[0], "--dry-run", "--rest-format", "inputs", "--version", "3"]) == 0
    printed = capsys.readouterr()
    body = printed.out  # the body alone: `> body.json` then `curl -d @body.json URL` sends it
    assert "POST http://localhost:8501/v1/models/c2am/versions/3:predict" in printed.err.splitlines()
    np.testing.assert_array_equal(np.asarray(json.loads(body)["inputs"]["images"], np.uint8), images[0][None])
    assert _cli().main([paths[1], "--dry-run", "--protocol", "grpc", "--resize", "32"]) == 0
    assert "uint8 [1, 32, 32, 3]" in capsys.readouterr().out


def test_errors_are_clear(served, tmp_path, capsys):
    _, _, images, paths = served
    with pytest.raises(ValueError, match="uint8"):
        client.rest_body(images[0].astype(np.float32)[None])
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        client.rest_body(images[0])
    with pytest.raises(ValueError, match="format"):
        client.rest_body(images[0][None], fmt="rows")
    with pytest.raises(RuntimeError, match="Servable not found"):
        client.parse_rest_response({"error": "Servable not found for request: x"})
    with pytest.raises(SystemExit):
        _cli().main([str(tmp_path / "missing.jpg")])
    assert "no such file or folder" in capsys.readouterr().err
    # Nothing listens on this port: the client names the URL and stops.
    assert _cli().main([paths[0], "--host", "127.0.0.1", "--port", "9"]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_a_large_request_is_warned_about_with_the_resize_hint(tmp_path, capsys):
    from PIL import Image

    from c2am_tf.deploy.serving_client import LARGE_REQUEST_BYTES, request_bytes

    rng = np.random.RandomState(0)
    big = rng.randint(0, 255, (1100, 1100, 3), np.uint8)  # ~14 MB of JSON, 3.6 MB raw
    Image.fromarray(big).save(tmp_path / "big.png")
    small = big[:40, :50]
    exact = len(json.dumps(small[None].tolist()))
    assert abs(request_bytes(small[None], "rest") - exact) < 0.01 * exact
    assert request_bytes(big[None], "grpc") < LARGE_REQUEST_BYTES < request_bytes(big[None], "rest")
    assert _cli().main([str(tmp_path / "big.png"), "--dry-run", "--protocol", "grpc"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert _cli().main([str(tmp_path / "big.png"), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "big.png: the rest request is about 1" in err and "pass --resize 448" in err
    assert _cli().main([str(tmp_path / "big.png"), "--dry-run", "--resize", "448"]) == 0
    assert "warning" not in capsys.readouterr().err
