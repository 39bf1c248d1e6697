"""Export a trained C2AM model (or a mask model) to ONNX, through Keras's own export.

    c2am-tf export-onnx --preset general_routed_lite0 --out c2am.onnx [--size 448]
    c2am-tf detect photos/ --model c2am.onnx      # onnxruntime, no TensorFlow

The model takes uint8 RGB images (B, H, W, 3) of any size (input ``images``) and returns the foreground-high
map (B, H/16, W/16, 1) (output ``map``); the box threshold, the box rule's band and --size (what ``detect``
resizes images to) are in its metadata (``c2am_tf``, JSON). Exporting needs the ``onnx`` extra
(``pip install 'c2am-tf[onnx]'``: onnx, tf2onnx, onnxruntime); running it, onnxruntime alone.
"""

import time

from c2am_tf.cli.common import add_model_flags, claim_output, command_inputs, command_parser, output_file
from c2am_tf.deploy.onnx_export import export_onnx
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.presets import load


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    add_model_flags(p)
    p.add_argument("--out", required=True, type=output_file, help="output .onnx file")
    p.add_argument("--size", type=int, default=EVAL_CROP,
                   help="the square a detector resizes images to (the graph takes any size; multiple of 16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def main(argv=None, prog=None):
    """Entry point."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.size % 16:  # at least 32 and under the pixel limit: checked with the flags (CommandParser)
        p.error(f"--size must be a positive multiple of 16, got {args.size}")
    claim_output(p, args.out, args.overwrite, inputs=command_inputs(args))
    start = time.time()
    size = export_onnx(load(args.model, args.preset), args.out, args.size)
    print(f"{args.out}: input uint8 (B, H, W, 3), detector size {args.size}, {size / 2**20:.2f} MiB, "
          f"exported in {time.time() - start:.1f} s")
