"""Train a mask model: a stride-4 decoder self-trained on a C2AM model's pseudo-masks (no labels).

    c2am-tf fit-masks --preset cub_lite0 --images DIR --out runs/masks \\
        [--model C2AM.keras] [--rounds 2] [--epochs 20] [--size 448] [--refinement guided]

The C2AM model (``--model`` or ``--preset``) is the teacher. Its map of each image, spread over the
objects by its own feature prototypes and refined along the image's edges (``--refinement``), is
the target of a light FPN decoder on the teacher's frozen backbone (c2am_tf.models.masks.mask_model): as it is
(``--targets soft``, the default), or cut into foreground (above 0.5 of the map's range), background
(at or below 0.2) and an ignored band between (``hard``). Each further round retrains the decoder
on its own refined, flip-averaged masks. Writes OUT/masks.keras (atomically; an existing
one is kept unless --overwrite), OUT/log.csv (the loss per round and epoch) and
OUT/summary.json; after each round a checkpoint (OUT/last.keras, OUT/resume.json), so a killed
run started again with the same flags goes on from the last round it finished. The model stores
its threshold (0.5 of the peak) and refinement: ``predict --model OUT/masks.keras --masks``,
``export-saved-model``, ``export-tflite`` and ``refine --bg-cues`` take it like a C2AM model.
"""

from c2am_tf.cli.common import add_model_flags, claim_training_output, command_parser, output_folder, training_settings
from c2am_tf.maps.edges import REFINEMENTS
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.models.masks.mask_model import TARGETS
from c2am_tf.presets import load, model_label
from c2am_tf.training.masks import fit_masks


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    add_model_flags(p, heads_only=True)
    p.add_argument("--images", required=True, help="folder of training images (searched recursively) or a .txt list")
    p.add_argument("--out", default="runs/masks", type=output_folder, help="output folder (masks.keras, log.csv, summary.json)")
    p.add_argument("--rounds", type=int, default=2, help="self-training rounds (1: the teacher's masks only)")
    p.add_argument("--epochs", type=int, default=20, help="decoder epochs per round")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--size", type=int, default=EVAL_CROP, help="images are resized whole to this square")
    p.add_argument("--refinement", choices=REFINEMENTS, default="guided", help="edge-aware refinement")
    p.add_argument("--targets", choices=TARGETS, default="soft",
                   help="decoder targets: the refined maps (soft) or pseudo-masks with an ignored band (hard)")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/masks.keras")
    return p


def parse_args(argv=None, prog=None):
    """Command-line flags."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.epochs < 1:
        p.error("--rounds and --epochs must be at least 1")
    if args.size % 16:
        p.error(f"--size must be a multiple of 16, got {args.size}")
    claim_training_output(p, "masks.keras", args)
    return args


def main(argv=None, prog=None):
    """Entry point."""
    args = parse_args(argv, prog)
    fit_masks(load(args.model, args.preset), model_label(args.model, args.preset), args.images, args.target,
              training_settings(args), args.size, args.refinement, args.rounds, args.epochs, args.batch_size, args.lr,
              args.seed, args.targets, args.overwrite, say=lambda line: print(line, flush=True))
    print(f"mask model -> {args.target}")
