"""The ``detect`` command's workflow: images through a ``ForegroundDetector`` (LiteRT), each result written as it
comes, so a crash keeps what was done: ``boxes.json`` (``c2am_tf.boxes/v1``), heatmap overlays and foreground masks.
No TensorFlow, as the device side: OpenCV only for the overlays, Pillow for the masks."""

import io
import os
import time

import numpy as np
from PIL import Image
from tqdm import tqdm

from c2am_tf.deploy.on_device import ForegroundDetector
from c2am_tf.maps.boxes_json import BoxesWriter, box_record, input_images
from c2am_tf.maps.geometry import scale_box
from c2am_tf.utils.errors import ConfigError, InputError
from c2am_tf.utils.files import OutputNames, write_atomically
from c2am_tf.utils.image_io import UnreadableImageError, load_image


def mask_png(mask):
    """PNG bytes of a bool (H, W) mask as 0 / 255 gray, by Pillow (the device side has no OpenCV to need)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


def detect_images(inputs, model, out, threads=2, threshold=None, box_band=None, overlays=True, masks=False,
                  overwrite=False):
    """Detects the foreground box of every image of ``inputs`` (a file or a folder, searched recursively) with the
    ``.tflite`` ``model``; writes ``out/boxes.json``, with ``overlays`` each image's heatmap overlay and with
    ``masks`` its mask (``OutputNames``: never over an input or a file of the user's), and goes on from a
    ``boxes.json`` a killed run left. Returns a report: ``records`` (every image's record, earlier runs' included),
    ``images``, ``skipped`` (unreadable images' messages), ``total_ms`` and ``model_ms`` (each image's whole
    detection and interpreter call) and the ``detector``."""
    if not os.path.isfile(model):
        raise ConfigError("model", f"no such file: {model}")
    boxes_path = os.path.join(out, "boxes.json")
    paths = input_images(inputs, out)
    pictures = OutputNames(paths, out, ".png", overwrite=overwrite)
    mask_names = OutputNames(paths, out, ".mask.png", overwrite=overwrite) if masks else None
    detector = ForegroundDetector(model, num_threads=threads, threshold=threshold, box_band=box_band)
    if overlays:
        from c2am_tf.maps.viz import overlay, write_png  # defers OpenCV: only the pictures need it
    header = {"model": os.path.abspath(model), "threshold": detector.threshold,
              "quantize": detector.metadata.get("quantize")}
    if detector.box_band:
        header["box_band"] = detector.box_band
    try:
        writer = BoxesWriter(boxes_path, header, replace=overwrite)
    except InputError:  # a locked or unwritable folder
        raise
    except ValueError as err:  # a boxes.json of other settings
        raise ConfigError("out", str(err)) from None
    report = {"images": len(paths), "skipped": [], "total_ms": [], "model_ms": [], "detector": detector}
    todo = [path for path in paths if path not in writer.done]
    with writer, tqdm(todo, desc="detect", unit="img", initial=len(paths) - len(todo), total=len(paths)) as bar:
        for path in bar:
            try:
                image, (width, height) = load_image(path, return_size=True)
            except UnreadableImageError as err:
                report["skipped"].append(str(err))
                continue
            start = time.perf_counter()
            result = detector.detect(image)
            report["total_ms"].append((time.perf_counter() - start) * 1e3)
            report["model_ms"].append(detector.last_invoke_ms)
            box = scale_box(result["box"], image.shape[1::-1], (width, height))  # original pixels
            writer.add(box_record(path, width, height, box, result["foreground_fraction"], result["score"]))
            if overlays:
                write_png(pictures(path), overlay(image, result["map"], [result["box"]]))
            if mask_names is not None:
                write_atomically(mask_names(path), mask_png(result["mask"]))
    report["records"] = list(writer.done.values())
    return report


def timing_line(report, out, threads):
    """What ``detect`` prints at the end: the images written, and the median ms per image after the first call (which
    includes the interpreter's one-off setup) of the whole detection and of the model alone."""
    total, model = report["total_ms"], report["model_ms"]
    where = f"{len(report['records'])} images -> {os.path.join(out, 'boxes.json')}"
    if not total:
        return f"{where} (none left to detect)"
    steady = slice(1, None) if len(total) > 1 else slice(None)
    detector = report["detector"]
    return (f"{where}; ms/image (median after the first): detection {np.median(total[steady]):.1f}, model alone "
            f"{np.median(model[steady]):.1f} ({threads} threads, input {detector.height}x{detector.width})")
