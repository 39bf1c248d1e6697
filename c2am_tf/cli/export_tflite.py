"""Export a trained C2AM model to TFLite for on-device foreground detection.

    c2am-tf export-tflite --model runs/cub/final.keras --out c2am.tflite \\
        [--quantize none|float16|int8] [--calibration-dir DIR] [--size 448]

The model takes one uint8 RGB image (1, SIZE, SIZE, 3) and returns the
foreground map (1, SIZE/16, SIZE/16); ``c2am_tf.deploy.on_device.ForegroundDetector`` (numpy +
ai-edge-litert, no TensorFlow) runs it and computes the box on the device side.
``int8`` is full-integer quantization calibrated on the images of
``--calibration-dir`` (searched recursively; use real images like those the device sees).
"""

import time

from c2am_tf.cli.common import add_model_flags, claim_output, command_inputs, command_parser, output_file
from c2am_tf.deploy import tflite_export as tflite
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.presets import load
from c2am_tf.utils.files import list_images, write_atomically


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    add_model_flags(p)
    p.add_argument("--out", required=True, type=output_file, help="output .tflite file")
    add_quantize_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def add_quantize_flags(p):
    """--quantize, --calibration-dir, --calibration-steps and --size: what a TFLite export is made with."""
    p.add_argument("--quantize", choices=tflite.QUANTIZATIONS, default="none",
                   help="weights and activations: float32, float16, or full int8")
    p.add_argument("--calibration-dir", help="folder of real images for int8 calibration")
    p.add_argument("--calibration-steps", type=int, default=100, help="images used for calibration")
    p.add_argument("--size", type=int, default=EVAL_CROP, help="input height and width (multiple of 16)")


def calibration_paths(p, args):
    """The images of --calibration-dir for an int8 export ([] otherwise); flag errors for a size or folder no
    export can use, before any work."""
    if args.size % 16:  # at least 32 and under the pixel limit: checked with the flags (CommandParser)
        p.error(f"--size must be a positive multiple of 16, got {args.size}")
    if args.quantize != "int8":
        return []
    if not args.calibration_dir:
        p.error("--quantize int8 needs --calibration-dir (real images for calibration)")
    try:
        return list_images(args.calibration_dir)
    except (FileNotFoundError, ValueError) as err:
        p.error(f"--calibration-dir: {err}")


def calibration(args, paths):
    """The calibration images of ``paths`` (None for no int8), saying how many are used."""
    if not paths:
        return None
    print(f"int8 calibration: up to {args.calibration_steps} of the {len(paths)} images in {args.calibration_dir}")
    return tflite.calibration_images(paths, args.size, args.calibration_steps)


def main(argv=None, prog=None):
    """Entry point."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    paths = calibration_paths(p, args)
    claim_output(p, args.out, args.overwrite, inputs=command_inputs(args) + paths)
    images = calibration(args, paths)
    start = time.time()
    content = tflite.convert(load(args.model, args.preset), args.size, args.quantize, images, args.calibration_steps)
    write_atomically(args.out, content)
    print(f"{args.out}: {args.quantize}, input (1, {args.size}, {args.size}, 3) uint8, "
          f"{len(content) / 2**20:.2f} MiB, converted in {time.time() - start:.1f} s")

