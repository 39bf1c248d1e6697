"""Export a trained C2AM model for TensorFlow Serving.

    python export/saved_model.py --model runs/cub/final.keras --out models/c2am [--version 1]

Writes models/c2am/1/ with the signatures serving_default, cam and refine (see
c2am_tf/export.py). Check it with the loader TF Serving uses:

    saved_model_cli run --dir models/c2am/1 --tag_set serve --signature_def serving_default \\
        --inputs images=batch.npy        # uint8 (B, H, W, 3)
"""



from c2am_tf.export import export_saved_model
from c2am_tf.cli.common import add_model_flags, command_parser, load_chosen_model



def build_parser(prog=None):
    """This command's flags (the README's commands are checked against it)."""
    p = command_parser(__doc__, prog)
    add_model_flags(p)
    p.add_argument("--out", required=True, help="model base folder; the export goes to OUT/VERSION")
    p.add_argument("--version", type=int, default=1, help="the version folder TF Serving loads")
    return p


def main(argv=None, prog=None):
    """Entry point."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    path = export_saved_model(load_chosen_model(args), args.out, args.version)
    print(f"SavedModel written to {path}")

