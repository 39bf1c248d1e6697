"""Export a trained C2AM model for TensorFlow Serving.

    c2am-tf export-saved-model --model runs/cub/final.keras --out models/c2am [--version N]

Writes models/c2am/1/ (the next free version when models/c2am holds some: TF Serving then serves the new
one; an existing version is replaced only with --overwrite) with the signatures serving_default, cam and
refine (see c2am_tf/deploy/saved_model.py). Check it with the loader TF Serving uses:

    saved_model_cli run --dir models/c2am/1 --tag_set serve --signature_def serving_default \\
        --inputs images=batch.npy        # uint8 (B, H, W, 3)
"""

import os

from c2am_tf.cli.common import add_model_flags, claim_output, command_inputs, command_parser, output_folder
from c2am_tf.deploy.saved_model import export_saved_model
from c2am_tf.presets import load


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    add_model_flags(p)
    p.add_argument("--out", required=True, type=output_folder, help="model base folder; the export goes to OUT/VERSION")
    p.add_argument("--version", type=int,
                   help="the version folder TF Serving loads (default: one above the highest in OUT, 1 in an empty OUT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/VERSION")
    return p


def main(argv=None, prog=None):
    """Entry point."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.version is not None:  # refused before the model loads, not after
        claim_output(p, os.path.join(args.out, str(args.version)), args.overwrite, inputs=command_inputs(args))
    path = export_saved_model(load(args.model, args.preset), args.out, args.version, overwrite=args.overwrite)
    print(f"SavedModel written to {path}")

