"""Device side of the TFLite and ONNX exports: numpy and the LiteRT interpreter (or onnxruntime), no TensorFlow.

A device runs the ``.tflite`` model written by ``c2am-tf export-tflite`` (uint8 image of a
fixed size in, foreground map out), or the ``.onnx`` one of ``c2am-tf export-onnx`` (with onnxruntime, the
``onnx`` extra), and turns the map into a box with ``box_from_map``,
a numpy port of the reference rule (largest contour of the thresholded map, see
``c2am_tf.maps.boxes``) that needs neither OpenCV nor TensorFlow.

Example (with a model exported by ``c2am-tf export-tflite``):

    detector = ForegroundDetector("c2am.tflite", num_threads=2)
    result = detector.detect(rgb_uint8_array)    # any size
    result["box"], result["score"], result["map"]
"""

import json
import os
import time
import warnings

import numpy as np
from PIL import Image

from c2am_tf.maps.edges import _ximgproc, check_refinement, edge_refined_mask
from c2am_tf.maps.foreground import foreground_mask as _foreground_mask
from c2am_tf.maps.geometry import band_thresholds, check_band, check_threshold, scale_box
from c2am_tf.utils.errors import ConfigError, InputError, reason
from c2am_tf.utils.limits import check_regular_file


def _neighbourhood_max(labels, connectivity):
    """Max over each pixel's 3x3 (8) or cross (4) neighbourhood, the pixel included."""
    h, w = labels.shape
    padded = np.pad(labels, 1)
    shifts = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        shifts += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    return np.max([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in shifts], axis=0)


def _components(mask):
    """8-connected components of a boolean mask, as boolean masks in raster order of first pixel."""
    h, w = mask.shape
    # Each pixel starts with a label that is larger the earlier it comes in raster
    # order; spreading the maximum labels every component with its first pixel.
    labels = np.where(mask, np.arange(h * w, 0, -1).reshape(h, w), 0)
    while True:
        spread = np.where(mask, _neighbourhood_max(labels, 8), 0)
        if np.array_equal(spread, labels):
            break
        labels = spread
    return [labels == value for value in sorted(set(labels[mask].tolist()), reverse=True)]


def _filled(component):
    """The component with its holes: everything the 4-connected outside cannot reach."""
    outside = np.zeros_like(component)
    outside[[0, -1], :] = True
    outside[:, [0, -1]] = True
    outside &= ~component
    while True:
        grown = (_neighbourhood_max(outside.astype(np.uint8), 4) > 0) & ~component
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


def _contour_area(filled):
    """Area of the polygon through the outer boundary pixels' centres (Pick's theorem)."""
    inner = filled.copy()
    padded = np.pad(filled, 1)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        inner &= padded[1 + dy:1 + dy + filled.shape[0], 1 + dx:1 + dx + filled.shape[1]]
    boundary = int(filled.sum() - inner.sum())
    return max(float(filled.sum()) - boundary / 2.0 - 1.0, 0.0)


def foreground_mask(score_map, threshold):
    """``c2am_tf.maps.foreground.foreground_mask`` of the map clipped to [0, 1] (a dequantized int8
    map can step slightly outside)."""
    return _foreground_mask(np.clip(np.asarray(score_map, np.float32), 0.0, 1.0), threshold)


def box_from_map(score_map, threshold, band=0.0):
    """Box [x0, y0, x1, y1] in map pixels (float32) of the largest foreground region.

    The rule of ``c2am_tf.maps.boxes.boxes_from_map`` (the authors' OpenCV code): the map
    in [0, 1] is truncated to uint8, pixels strictly above ``int(threshold * peak)``
    are foreground, and the 8-connected region whose outer contour encloses the
    largest area wins (ties: the region that starts last in raster order, as
    OpenCV). The box is ``x, y, x + w, y + h`` clipped to ``W - 1, H - 1``; an empty
    map gives zeros. Scale it by (image width / W, image height / H) for image pixels.
    With ``band`` > 0, the mean of the boxes at ``band_thresholds(threshold, band)``, as
    ``c2am_tf.maps.boxes.best_box_per_threshold``.

    Example:
    >>> m = np.zeros((14, 14), np.float32); m[3:8, 4:10] = 1.0
    >>> box_from_map(m, 0.5).tolist()
    [4.0, 3.0, 10.0, 8.0]
    """
    score_map = np.asarray(score_map, np.float32)
    if score_map.ndim != 2:
        raise ValueError(f"score_map must be 2-D (H, W), got shape {score_map.shape}")
    if band:
        return np.mean([box_from_map(score_map, t) for t in band_thresholds(threshold, band)], axis=0,
                       dtype=np.float32)
    h, w = score_map.shape
    mask = foreground_mask(score_map, threshold)
    if not mask.any():
        return np.zeros(4, np.float32)
    components = _components(mask)
    best, best_area = None, -1.0
    # Largest first: a region's contour area is below its pixel count, so once the
    # count is no larger than the best area, no later region can win.
    counts = [int(c.sum()) for c in components]
    for index in sorted(range(len(components)), key=lambda i: -counts[i]):
        if counts[index] <= best_area:
            break
        area = _contour_area(_filled(components[index]))
        if area > best_area or (area == best_area and index > best):  # ties: the later region
            best, best_area = index, area
    rows, cols = np.nonzero(components[best])
    return np.array([cols.min(), rows.min(), min(cols.max() + 1, w - 1), min(rows.max() + 1, h - 1)],
                    np.float32)


def litert_interpreter():
    """LiteRT's ``Interpreter`` class (ai-edge-litert), imported when a model runs; an ImportError saying how to
    install it where it is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # the LiteRT runtime, only when a model runs
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("the LiteRT interpreter is missing: pip install ai-edge-litert") from err
    return Interpreter


def check_threads(threads, name="threads"):
    """``threads`` as an int, or ConfigError: the interpreter's thread count, at least 1.

    >>> check_threads(0)
    Traceback (most recent call last):
    ...
    c2am_tf.utils.errors.ConfigError: threads must be an integer >= 1; got 0
    """
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ConfigError(name, f"must be an integer >= 1; got {threads!r}")
    return int(threads)


class ForegroundDetector:
    """Runs a C2AM ``.tflite`` model (fp32, fp16 or int8), or an ``.onnx`` one, and extracts boxes on the device side.

    Args:
        model: path to the ``.tflite`` or ``.onnx`` file, or its bytes.
        num_threads: interpreter threads.
        threshold: box threshold (fraction of the map's peak); default the one stored
            in the model's metadata by ``c2am-tf export-tflite``, else 0.5.
        box_band: the box rule's band (``box_from_map``); default the metadata's, else 0.
        refinement: the mask's edge-aware refinement (``c2am_tf.maps.edges``, OpenCV contrib); default
            the one in the metadata (a mask model's), else ``"none"``. Without OpenCV contrib on the
            device the mask stays unrefined, with one warning.
    """

    def __init__(self, model, num_threads=1, threshold=None, refinement=None, box_band=None):
        num_threads = check_threads(num_threads)
        name = "model" if isinstance(model, (bytes, bytearray)) else os.fspath(model)
        if isinstance(model, (bytes, bytearray)):
            content = bytes(model)
        else:
            check_regular_file(model, "model")  # a FIFO would block the read for ever
            with open(model, "rb") as f:
                content = f.read()
        self.session = None  # onnxruntime's, for an .onnx model (c2am-tf export-onnx)
        if is_onnx(content, name):
            self._open_onnx(content, num_threads, name)
        else:
            self._open_tflite(content, num_threads, name)
        self.last_invoke_ms = None  # duration of the latest interpreter call
        if not isinstance(self.metadata, dict):
            raise InputError(f"{name}: its {METADATA_NAME} metadata is a JSON {type(self.metadata).__name__}, not an "
                             "object; export the model again")
        # a setting given here is the caller's (a flag: ConfigError); one read from the file is the file's fault
        self.threshold = check_threshold(threshold) if threshold is not None else \
            self._stored("threshold", 0.5, check_threshold, name)
        self.box_band = check_band(box_band) if box_band is not None else \
            self._stored("box_band", 0.0, check_band, name)

        self.refinement = check_refinement(refinement) if refinement else \
            self._stored("refinement", "none", check_refinement, name)
        if self.refinement != "none":
            try:

                _ximgproc()
            except ImportError as err:
                warnings.warn(f"masks are not refined ({self.refinement!r}): {err}")
                self.refinement = "none"

    def _open_tflite(self, content, num_threads, name):
        try:  # a truncated, random or foreign file: one line naming it, not the flatbuffer reader's words
            self.interpreter = litert_interpreter()(model_content=content, num_threads=num_threads)
            self.interpreter.allocate_tensors()
            self.metadata = read_metadata(content)
        except (ValueError, RuntimeError, IndexError, TypeError, UnicodeDecodeError) as err:
            raise InputError(f"{name}: not a readable TFLite model ({reason(err)})") from None
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        shape = [int(d) for d in self._input["shape"]]
        if len(shape) != 4 or shape[3] != 3:
            raise InputError(f"{name}: not a C2AM TFLite model: it takes input of shape {shape}, "
                             "not one RGB image (1, H, W, 3)")
        _, self.height, self.width, _ = shape

    def _open_onnx(self, content, num_threads, name):
        try:
            import onnxruntime  # the optional onnx extra, only for an .onnx model
        except ImportError:
            raise InputError(f"{name}: an ONNX model needs onnxruntime: pip install onnxruntime") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
        try:
            self.session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
            stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_NAME)
            self.metadata = json.loads(stored) if stored else {}
        except Exception as err:  # onnxruntime's own (InvalidProtobuf, Fail, ...) derive from Exception alone
            raise InputError(f"{name}: not a readable ONNX model ({reason(err)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].type != "tensor(uint8)":
            raise InputError(f"{name}: not a C2AM ONNX model: it takes {[(i.name, i.type) for i in inputs]}, not "
                             "uint8 RGB images (B, H, W, 3)")
        self._input_name = inputs[0].name
        size = self.metadata.get("input_size", [448, 448]) if isinstance(self.metadata, dict) else [448, 448]
        self.height, self.width = (int(v) for v in size)

    def _stored(self, key, default, check, name):
        """The metadata's ``key`` through ``check``; a value no run can use is an ``InputError`` naming the file."""
        value = self.metadata.get(key, default)
        try:
            return check(value)
        except ValueError as err:
            hint = "" if key == "refinement" else f", or pass --{key.replace('_', '-')}"
            raise InputError(f"{name}: its {METADATA_NAME} metadata holds {key} {value!r}, which cannot be used "
                             f"({getattr(err, 'message', err)}); export the model again{hint}") from None

    @property
    def size(self):
        """(height, width) of the model's input."""
        return self.height, self.width

    def map(self, image):
        """Foreground map (h, w) float32 in [0, 1] of a uint8 RGB image already at ``size``."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.shape != (self.height, self.width, 3):
            raise ValueError(f"image must be uint8 ({self.height}, {self.width}, 3), "
                             f"got {image.dtype} {image.shape}")
        x = image[None]
        if self.session is not None:
            start = time.perf_counter()
            out = self.session.run(None, {self._input_name: x})[0][0, ..., 0]
            self.last_invoke_ms = (time.perf_counter() - start) * 1e3
            return np.clip(out.astype(np.float32), 0.0, 1.0)
        scale, zero = self._input["quantization"]
        if self._input["dtype"] != np.uint8:
            x = x.astype(self._input["dtype"])
        elif scale and (scale != 1.0 or zero != 0):  # int8 model whose input range is not 0..255
            x = np.clip(np.round(x / scale + zero), 0, 255).astype(np.uint8)
        self.interpreter.set_tensor(self._input["index"], x)
        start = time.perf_counter()
        self.interpreter.invoke()
        self.last_invoke_ms = (time.perf_counter() - start) * 1e3
        out = self.interpreter.get_tensor(self._output["index"])[0]
        scale, zero = self._output["quantization"]
        if np.issubdtype(out.dtype, np.integer):
            out = (out.astype(np.float32) - zero) * scale
        return np.clip(out.astype(np.float32), 0.0, 1.0)

    def detect(self, image):
        """{'map', 'box' (x0, y0, x1, y1 in image pixels), 'score' (mean map value in the box),
        'foreground_fraction', 'mask' (bool (H, W), the image's foreground: ``mask_from_map``)}
        for a uint8 RGB image of any size."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) == 0:
            raise ValueError(f"image must be a non-empty uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        resized = resize_rgb(image, self.width, self.height)
        score_map = self.map(resized)
        h, w = score_map.shape
        box = box_from_map(score_map, self.threshold, self.box_band)
        x0, y0, x1, y1 = box.astype(int)
        score = float(score_map[y0:y1 + 1, x0:x1 + 1].mean()) if box.any() else 0.0
        box = scale_box(box, (w, h), (width, height))
        fraction = float(np.mean(foreground_mask(score_map, self.threshold)))
        if self.refinement == "none":
            mask = mask_from_map(score_map, self.threshold, width, height)
        else:

            mask = edge_refined_mask(image, score_map, self.refinement, self.threshold)
        return {"map": score_map, "box": box, "score": score, "foreground_fraction": fraction, "mask": mask}


def mask_from_map(score_map, threshold, width, height):
    """Bool (height, width) foreground mask of a map, without TensorFlow or OpenCV: the map resized
    bilinearly with Pillow, then the box rule's foreground test (as ``c2am_tf.inference.postprocess.map_to_mask``,
    which resizes with OpenCV; the two differ only in a few pixels at the image's edges).

    >>> m = np.zeros((4, 4), np.float32); m[1:3, 0:2] = 1.0
    >>> mask = mask_from_map(m, 0.5, width=8, height=4)
    >>> mask.shape, bool(mask[2, 1]), bool(mask[2, 7])
    ((4, 8), True, False)
    """

    score_map = np.clip(np.asarray(score_map, np.float32), 0, 1)
    up = np.asarray(Image.fromarray(score_map).resize((int(width), int(height)), Image.BILINEAR))  # mode F
    return foreground_mask(np.clip(up, 0, 1), threshold)


def _triangle_taps(size_in, size_out):
    """(indices, weights), each (size_out, taps), of TensorFlow's antialiased bilinear resize along one axis: a
    triangle kernel at half-pixel centres, widened by in / out when shrinking, each row normalized."""
    scale = size_out / size_in
    kernel_scale = min(scale, 1.0)
    centres = (np.arange(size_out) + 0.5) / scale
    first = np.clip(np.floor(centres - 1.0 / kernel_scale + 0.5).astype(int), 0, size_in - 1)
    indices = first[:, None] + np.arange(int(np.ceil(2.0 / kernel_scale)) + 1)[None, :]
    weights = np.maximum(0.0, 1.0 - np.abs((indices + 0.5 - centres[:, None]) * kernel_scale))
    weights[indices >= size_in] = 0.0
    return np.minimum(indices, size_in - 1), (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _resample_rows(array, size_out):
    """``array`` (H, ...) resized along its first axis (whole rows are gathered: the fast way in numpy)."""
    indices, weights = _triangle_taps(array.shape[0], size_out)
    out = array[indices[:, 0]] * weights[:, 0, None, None]
    for k in range(1, indices.shape[1]):
        out += array[indices[:, k]] * weights[:, k, None, None]
    return out


def resize_rgb(image, width, height):
    """Resize of a uint8 RGB array to (height, width, 3) with numpy alone, the same filter as the TensorFlow
    pipeline's (``c2am_tf.data.transforms.resize_square``: bilinear, antialiased, rounded): the device sees
    the pixels ``predict`` sees, within one level in a few pixels (Pillow's bilinear differs in many, and moves
    boxes: ``benchmarks/detect_vs_predict.py``, docs/results/deploy.md).

    >>> resize_rgb(np.full((3, 5, 3), 7, np.uint8), 4, 2).shape
    (2, 4, 3)
    """
    image = np.asarray(image)
    if image.shape[:2] == (height, width):
        return image
    rows = _resample_rows(image.astype(np.float32), height)
    out = _resample_rows(np.ascontiguousarray(rows.transpose(1, 0, 2)), width).transpose(1, 0, 2)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


METADATA_NAME = "c2am_tf"


def is_onnx(content, name=""):
    """Whether ``content`` (a model file's bytes) is an ONNX model rather than a TFLite flatbuffer, whose bytes
    4..8 are ``TFL3``: by its name's ending, else by its first byte (a protobuf that opens with ``ir_version``).

    >>> is_onnx(b"abcdTFL3"), is_onnx(b"xy", "m.onnx"), is_onnx(b"xy", "m.tflite")
    (False, True, False)
    """
    name = str(name).lower()
    if content[4:8] == b"TFL3" or name.endswith(".tflite"):
        return False
    return name.endswith(".onnx") or content[:1] == b"\x08"


def read_metadata(content):
    """The JSON dict that ``c2am-tf export-tflite`` stores in the model's ``c2am_tf`` metadata, or {}.

    Read with the flatbuffer schema that ships with ai-edge-litert (no TensorFlow).
    """

    from ai_edge_litert import schema_py_generated as schema  # the LiteRT runtime, only to read a model's metadata

    model = schema.Model.GetRootAsModel(bytearray(content), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode())
    return {}
