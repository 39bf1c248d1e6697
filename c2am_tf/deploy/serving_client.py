"""Requests to a C2AM model served by TensorFlow Serving, and their answers, as numpy.

REST (``POST http://HOST:8501/v1/models/NAME[/versions/V]:predict``) takes the row
format ``{"signature_name", "instances": [{"images": image}, ...]}`` or the columnar
format ``{"signature_name", "inputs": {"images": batch}}``; gRPC (port 8500) takes a
``tensorflow.serving.PredictRequest``. The export's inputs are uint8 RGB images
(see ``c2am_tf.deploy.saved_model``); one request carries images of one size.

Example:
>>> import numpy as np
>>> body = rest_body(np.zeros((1, 2, 2, 3), np.uint8), "serving_default", "inputs")
>>> sorted(body), body["inputs"]["images"][0][0][0]
(['inputs', 'signature_name'], [0, 0, 0])
"""

import http.client
import json
import re
import socket
import sys
import threading
import time
import urllib.parse

import numpy as np

from c2am_tf.deploy.on_device import resize_rgb
from c2am_tf.maps.geometry import scale_box
from c2am_tf.utils.errors import reason
from c2am_tf.utils.image_io import UnreadableImageError, load_image
from c2am_tf.utils.limits import limit

REST_FORMATS = ("instances", "inputs")


def _batch(images):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be a uint8 (B, H, W, 3) batch, got {images.dtype} {images.shape}")
    return images


def rest_url(host, model, version=None, port=8501):
    """The predict endpoint of TF Serving's REST API."""
    version_part = f"/versions/{int(version)}" if version is not None else ""
    return f"http://{host}:{port}/v1/models/{model}{version_part}:predict"


def rest_body(images, signature="serving_default", fmt="instances"):
    """JSON-ready request body for a uint8 (B, H, W, 3) batch, row (``instances``) or columnar (``inputs``)."""
    images = _batch(images)
    if fmt == "instances":
        return {"signature_name": signature, "instances": [{"images": image.tolist()} for image in images]}
    if fmt == "inputs":
        return {"signature_name": signature, "inputs": {"images": images.tolist()}}
    raise ValueError(f"REST format must be one of {REST_FORMATS}, got {fmt!r}")


class ServingError(RuntimeError):
    """TF Serving's answer cannot be used: an error status, a reply that is no predict answer, one over
    ``C2AM_MAX_RESPONSE_BYTES``, or none complete within the request's deadline. One line naming the URL."""


def parse_rest_response(answer):
    """{output name: numpy array with the batch first} from a REST predict answer (dict or JSON text); a reply
    that is not one is a ``ServingError`` saying what it is."""
    try:
        if isinstance(answer, (str, bytes)):
            answer = json.loads(answer)
        if not isinstance(answer, dict):
            raise ValueError(f"a JSON {type(answer).__name__}, not an object")
        if "error" in answer:
            raise ServingError(f"TF Serving refused the request: {short_text(str(answer['error']))}")
        if "outputs" in answer:  # columnar
            outputs = answer["outputs"]
            return {k: np.asarray(v) for k, v in outputs.items()} if isinstance(outputs, dict) else {
                "output": np.asarray(outputs)}
        rows = answer["predictions"]
        if rows and isinstance(rows[0], dict):
            return {k: np.asarray([row[k] for row in rows]) for k in rows[0]}
        return {"output": np.asarray(rows)}
    except ServingError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise ServingError(f"not a TF Serving predict answer ({type(err).__name__}: {short_text(reason(err))})") \
            from None


def short_text(text, width=200):
    """One line of at most ``width`` characters from a reply: an HTML page's title, or its text without tags.

    >>> short_text("<html><head><title>502 Bad Gateway</title></head><body><h1>Bad</h1></body></html>")
    '502 Bad Gateway'
    """
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _cut(sock):
    """The deadline passed: shut the socket, so a read that waits (a server dripping bytes) returns at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def post_rest(url, body, timeout=60.0):
    """POSTs ``body`` as JSON; returns the parsed answer (numpy arrays). Errors name the URL.

    ``timeout`` bounds the whole request, connection to last byte (a watchdog shuts the socket at the deadline,
    so a server dripping one byte at a time cannot hold it), and the answer is read up to
    ``C2AM_MAX_RESPONSE_BYTES`` (``c2am_tf.utils.limits``); either is a ``ServingError``."""
    cap = limit("C2AM_MAX_RESPONSE_BYTES")
    parts = urllib.parse.urlsplit(url)
    data = json.dumps(body).encode()
    deadline = time.monotonic() + timeout
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    watchdog = None
    try:
        try:
            connection.connect()
        except OSError as err:
            raise ConnectionError(f"{url}: cannot connect ({reason(err)}); is TF Serving running?") from None
        # the socket itself: an HTTP/1.0 reply detaches it from the connection, not from the response reading it
        watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), _cut, (connection.sock,))
        watchdog.daemon = True
        watchdog.start()
        try:
            connection.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=data,
                               headers={"Content-Type": "application/json"})
            reply = connection.getresponse()
            declared = reply.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > cap:
                raise ServingError(f"{url}: the answer declares {int(declared):,} bytes, over the limit of {cap:,} "
                                   "(C2AM_MAX_RESPONSE_BYTES)")
            chunks, size = [], 0
            while chunk := reply.read1(1 << 16):
                size += len(chunk)
                if size > cap:
                    raise ServingError(f"{url}: the answer is over the limit of {cap:,} bytes "
                                       "(C2AM_MAX_RESPONSE_BYTES)")
                chunks.append(chunk)
        except (OSError, http.client.HTTPException) as err:
            if time.monotonic() >= deadline - 0.05:
                raise ServingError(f"{url}: no complete answer within {timeout:g} s (--timeout)") from None
            raise ServingError(f"{url}: the connection failed ({type(err).__name__}: {reason(err)})") from None
        if time.monotonic() >= deadline:
            raise ServingError(f"{url}: no complete answer within {timeout:g} s (--timeout)")
        answer = b"".join(chunks)
        if reply.status != 200:
            raise ServingError(f"{url}: HTTP {reply.status}: {short_text(answer.decode(errors='replace'))}")
        try:
            return parse_rest_response(answer)
        except ServingError as err:
            raise ServingError(f"{url}: {err}") from None
    finally:
        if watchdog is not None:
            watchdog.cancel()
        connection.close()


def grpc_request(images, model, signature="serving_default", version=None, output_filter=()):
    """A ``PredictRequest`` for a uint8 (B, H, W, 3) batch (needs ``tensorflow-serving-api``)."""
    import tensorflow as tf  # defers TensorFlow and the tensorflow-serving-api extra: REST needs neither
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(_batch(images)))
    request.output_filter.extend(output_filter)
    return request


def describe_grpc_request(request):
    """The request as text with each tensor summarized (dtype, shape) instead of its bytes."""
    import tensorflow as tf  # defers TensorFlow: REST needs none

    lines = [f"model_spec {{ name: {request.model_spec.name!r} signature_name: "
             f"{request.model_spec.signature_name!r}"
             + (f" version: {request.model_spec.version.value}" if request.model_spec.HasField("version") else "")
             + " }"]
    for name, proto in request.inputs.items():
        shape = [d.size for d in proto.tensor_shape.dim]
        lines.append(f"inputs {{ key: {name!r} value: {tf.dtypes.as_dtype(proto.dtype).name} {shape} "
                     f"({len(proto.tensor_content)} bytes) }}")
    lines += [f"output_filter: {name!r}" for name in request.output_filter]
    return "\n".join(lines)


def call_grpc(target, request, timeout=60.0):
    """Sends ``request`` to ``target`` (host:port); returns {output name: numpy array}."""
    import grpc  # defers TensorFlow and the grpc extra: REST needs neither
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            reply = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as err:
            raise RuntimeError(f"{target}: gRPC {err.code().name}: {err.details()}") from err
    return {name: tf.make_ndarray(proto) for name, proto in reply.outputs.items()}


# gRPC's default message limit (TF Serving keeps it unless started with a larger one); REST
# bodies of this size already take seconds to encode and parse.
LARGE_REQUEST_BYTES = 4 * 2 ** 20


def request_bytes(images, protocol):
    """About how many bytes a request carrying uint8 ``images`` takes: JSON digits and separators
    for REST, the raw tensor for gRPC (whose header is negligible).

    >>> request_bytes(np.array([[7, 42, 255]], np.uint8), "rest")  # len('[[7, 42, 255]]')
    14
    """
    images = np.asarray(images)
    if protocol == "grpc":
        return int(images.size)
    digits = images.size + int((images >= 10).sum()) + int((images >= 100).sum())
    # ", " after each value and "[]" around each pixel's channels
    return int(digits + 2 * images.size + 2 * (images.size // images.shape[-1]))


def large_request_warning(path, images, protocol, limit=LARGE_REQUEST_BYTES):
    """A warning line for a request over ``limit`` bytes that suggests ``--resize``, or None."""
    size = request_bytes(images, protocol)
    if size <= limit:
        return None
    side = max(np.asarray(images).shape[1:3])
    return (f"warning: {path}: the {protocol} request is about {size / 2 ** 20:.1f} MB "
            f"(image side {side}); pass --resize 448 to send a smaller one")


def send_images(paths, host="localhost", port=8501, model="c2am", version=None, protocol="rest", rest_format="instances",
                signature="serving_default", resize=None, timeout=60.0, dry_run=False, out=None, err=None):
    """``serve-client``'s workflow: each image of ``paths`` (resized to ``resize`` x ``resize`` when given) sent to
    the served ``model``, one line per image on ``out`` (its path, its box in original pixels, its score), the
    skipped and failed ones on ``err``. ``dry_run``: REST writes each request's JSON body on ``out`` (what
    ``curl -d @FILE`` sends) and its URL on ``err``; gRPC describes each request. Returns the exit status: 1 when
    the server fails (the rest is not sent) or no image could be read."""
    out, err = out or sys.stdout, err or sys.stderr
    url, target, failures = rest_url(host, model, version, port), f"{host}:{port}", 0
    for path in paths:
        try:
            image, (width, height) = load_image(path, return_size=True)
        except UnreadableImageError as error:
            print(f"skipping {error}", file=err)
            failures += 1
            continue
        sent = resize_rgb(image, resize, resize) if resize else image
        warning = large_request_warning(path, sent[None], protocol)
        if warning:
            print(warning, file=err)
        if protocol == "rest":
            body = rest_body(sent[None], signature, rest_format)
            if dry_run:  # the body alone on stdout: what curl -d @FILE sends
                print(f"POST {url}", file=err)
                print(json.dumps(body), file=out)
                continue
            send = lambda: post_rest(url, body, timeout)  # noqa: E731
        else:
            # The upsampled map is as large as the image: ask only for what is printed.
            wanted = ["boxes", "scores"] if signature == "serving_default" else []
            request = grpc_request(sent[None], model, signature, version, wanted)
            if dry_run:
                print(f"gRPC {target} PredictionService.Predict\n{describe_grpc_request(request)}", file=out)
                continue
            send = lambda: call_grpc(target, request, timeout)  # noqa: E731
        try:
            outputs = send()
        except (RuntimeError, ConnectionError) as error:
            print(f"{path}: {error}", file=err)
            return 1  # the server is the problem, not this image: stop
        if "boxes" not in outputs:
            print(f"{path}: outputs {sorted(outputs)}", file=out)
            continue
        box = scale_box(outputs["boxes"][0], (sent.shape[1], sent.shape[0]), (width, height))
        score = float(np.asarray(outputs["scores"])[0])
        print(f"{path}\t{' '.join(f'{v:.1f}' for v in box)}\t{score:.4f}", file=out)
    return 1 if failures == len(paths) else 0
