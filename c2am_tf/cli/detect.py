"""On-device style foreground detection with a C2AM ``.tflite`` or ``.onnx`` model (no TensorFlow needed).

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

import sys

from c2am_tf.cli.common import add_box_band_flag, command_parser, output_folder
from c2am_tf.deploy.detect import detect_images, timing_line


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("inputs", help="an image file or a folder of images (searched recursively)")
    p.add_argument("--model", required=True, help="a .tflite model written by c2am-tf export-tflite, or an .onnx "
                                                  "one by c2am-tf export-onnx (needs onnxruntime)")
    p.add_argument("--out", default="detections", type=output_folder, help="output folder")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads")
    p.add_argument("--threshold", type=float, help="override the threshold stored in the model")
    add_box_band_flag(p)
    p.add_argument("--no-overlays", action="store_true", help="write no heatmap overlays")
    p.add_argument("--masks", action="store_true", help="also write each image's foreground mask (.mask.png)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of other settings in --out")
    return p


def main(argv=None, prog=None):
    """Entry point; returns the exit status (1 when no image could be read)."""
    args = build_parser(prog).parse_args(argv)
    report = detect_images(args.inputs, args.model, args.out, args.threads, args.threshold, args.box_band,
                           overlays=not args.no_overlays, masks=args.masks, overwrite=args.overwrite)
    skipped = report["skipped"]
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"warning: skipped {len(skipped)} unreadable images of {report['images']}: {shown}", file=sys.stderr)
    print(timing_line(report, args.out, args.threads))
    return 0 if report["records"] else 1
