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

import json
import urllib.request

import numpy as np

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


def parse_rest_response(answer):
    """{output name: numpy array with the batch first} from a REST predict answer (dict or JSON text)."""
    if isinstance(answer, (str, bytes)):
        answer = json.loads(answer)
    if "error" in answer:
        raise RuntimeError(f"TF Serving refused the request: {answer['error']}")
    if "outputs" in answer:  # columnar
        outputs = answer["outputs"]
        return {k: np.asarray(v) for k, v in outputs.items()} if isinstance(outputs, dict) else {
            "output": np.asarray(outputs)}
    rows = answer["predictions"]
    if rows and isinstance(rows[0], dict):
        return {k: np.asarray([row[k] for row in rows]) for k in rows[0]}
    return {"output": np.asarray(rows)}


def post_rest(url, body, timeout=60.0):
    """POSTs ``body`` as JSON; returns the parsed answer (numpy arrays). Errors name the URL."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return parse_rest_response(reply.read())
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"{url}: HTTP {err.code}: {err.read().decode(errors='replace')[:500]}") from err
    except urllib.error.URLError as err:
        raise ConnectionError(f"{url}: cannot connect ({err.reason}); is TF Serving running?") from err


def grpc_request(images, model, signature="serving_default", version=None, output_filter=()):
    """A ``PredictRequest`` for a uint8 (B, H, W, 3) batch (needs ``tensorflow-serving-api``)."""
    import tensorflow as tf
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
    import tensorflow as tf

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
    import grpc
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
