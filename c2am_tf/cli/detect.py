"""On-device style foreground detection with a C2AM ``.tflite`` model (no TensorFlow needed).

    c2am-tf detect IMAGE_OR_DIR --model c2am.tflite [--out detections] \\
        [--threads 2] [--threshold T] [--no-overlays]

Runs the LiteRT interpreter (ai-edge-litert) on each image resized whole to the
model's input size, computes the box on the device side (``c2am_tf.deploy.on_device``) and
writes ``OUT/boxes.json`` (boxes in original image pixels, the same
``c2am_tf.boxes/v1`` format as ``train/extract_boxes.py``) and heatmap overlays
named like ``predict``'s (``photos/sub/x.jpg`` -> ``OUT/sub/x.jpg.png``; never an input); with ``--masks``
also each image's foreground mask (``OUT/sub/x.jpg.mask.png``, 0 / 255, at the size the image was decoded at,
the model's stored refinement applied), written with Pillow: no OpenCV needed for it.
Prints the time per image: the whole detection (resize, model,
box) and the interpreter call alone. Unreadable images are skipped and counted.
"""

import os
import sys
import time

import numpy as np
from tqdm import tqdm

from c2am_tf.maps.boxes_json import PICTURE_SUFFIXES, BoxesWriter, box_record, drop_own_outputs
from c2am_tf.utils.errors import ConfigError, InputError
from c2am_tf.utils.files import OutputNames, image_paths, write_atomically
from c2am_tf.maps.geometry import scale_box
from c2am_tf.utils.image_io import UnreadableImageError, load_image
from c2am_tf.deploy.on_device import ForegroundDetector
from c2am_tf.cli.common import add_box_band_flag, command_parser, output_folder



def mask_png(mask):
    """PNG bytes of a bool (H, W) mask as 0 / 255 gray, by Pillow (the device side has no OpenCV to need)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("inputs", help="an image file or a folder of images (searched recursively)")
    p.add_argument("--model", required=True, help="a .tflite model written by c2am-tf export-tflite")
    p.add_argument("--out", default="detections", type=output_folder, help="output folder")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads")
    p.add_argument("--threshold", type=float, help="override the threshold stored in the model")
    add_box_band_flag(p)
    p.add_argument("--no-overlays", action="store_true", help="write no heatmap overlays")
    p.add_argument("--masks", action="store_true", help="also write each image's foreground mask (.mask.png)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of other settings in --out")
    return p


def main(argv=None, prog=None):
    """Entry point; returns the exit status."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    if not os.path.isfile(args.model):
        p.error(f"--model: no such file: {args.model}")
    try:
        paths = drop_own_outputs(image_paths(args.inputs, exclude=args.out), os.path.join(args.out, "boxes.json"),
                                 PICTURE_SUFFIXES)
        pictures = OutputNames(paths, args.out, ".png", overwrite=args.overwrite)
        mask_names = OutputNames(paths, args.out, ".mask.png", overwrite=args.overwrite) if args.masks else None
    except InputError:  # a file of the user's where an output goes: one line of its own (run_command)
        raise
    except (FileNotFoundError, ValueError) as err:
        p.error(str(err))
    try:
        detector = ForegroundDetector(args.model, num_threads=args.threads, threshold=args.threshold,
                                      box_band=args.box_band)
    except ConfigError as err:
        p.error(err.as_flag())
    if not args.no_overlays:
        from c2am_tf.maps.viz import overlay, write_png  # OpenCV, only for the pictures
    header = {"model": os.path.abspath(args.model), "threshold": detector.threshold,
              "quantize": detector.metadata.get("quantize")}
    if detector.box_band:
        header["box_band"] = detector.box_band
    try:
        writer = BoxesWriter(os.path.join(args.out, "boxes.json"), header, replace=args.overwrite)
    except InputError:  # a locked or unwritable --out: one line of its own (run_command)
        raise
    except ValueError as err:
        p.error(f"--out: {err}")
    skipped, total_ms, model_ms = [], [], []
    todo = [path for path in paths if path not in writer.done]
    # each result reaches the disk as it comes: a crash keeps what was done
    with writer, tqdm(todo, desc="detect", unit="img", initial=len(paths) - len(todo), total=len(paths)) as bar:
        for path in bar:
            try:
                image, (width, height) = load_image(path, return_size=True)
            except UnreadableImageError as err:
                skipped.append(str(err))
                continue
            start = time.perf_counter()
            result = detector.detect(image)
            total_ms.append((time.perf_counter() - start) * 1e3)
            model_ms.append(detector.last_invoke_ms)
            box = scale_box(result["box"], image.shape[1::-1], (width, height))  # original pixels
            writer.add(box_record(path, width, height, box, result["foreground_fraction"], result["score"]))
            if not args.no_overlays:
                write_png(pictures(path), overlay(image, result["map"], [result["box"]]))
            if mask_names is not None:
                write_atomically(mask_names(path), mask_png(result["mask"]))
    records = list(writer.done.values())
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"warning: skipped {len(skipped)} unreadable images of {len(paths)}: {shown}", file=sys.stderr)
    if total_ms:
        # The first call includes the interpreter's one-off setup: leave it out of the median.
        steady = slice(1, None) if len(total_ms) > 1 else slice(None)
        print(f"{len(records)} images -> {os.path.join(args.out, 'boxes.json')}; ms/image (median after the first): "
              f"detection {np.median(total_ms[steady]):.1f}, model alone {np.median(model_ms[steady]):.1f} "
              f"({args.threads} threads, input {detector.height}x{detector.width})")
    else:
        print(f"{len(records)} images -> {os.path.join(args.out, 'boxes.json')} (none left to detect)")
    return 0 if records else 1

