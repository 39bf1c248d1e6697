"""Train a background-cue model on a C2AM model's background maps (paper section 3.5).

    c2am-tf fit-bgcues --c2am runs/c2am/final.keras --images DIR --out runs/bgcues \\
        [--pseudo soft|hard] [--epochs 10] [--size 448]

Pseudo labels: ``soft`` is 1 - P itself, ``hard`` the pixels at or below
--cue-threshold x the map's peak (0.3, the authors' value; they train a saliency
network on such thresholded cues). The model (c2am_tf.models.cue_model) is a frozen factory
backbone with a stride-8 decoder, trained with binary cross-entropy and random flips.
Writes OUT/bgcues.keras (atomically) and OUT/log.csv; ``train/refine.py --bg-cues``
takes that file. ``--cues-out DIR`` also writes the trained model's background cue of
every training image (``NAME.npy``, stride 8, in [0, 1]), which ``--bg-cues DIR`` reads.
"""

from c2am_tf.cli.common import (
    add_training_flags,
    claim_training_output,
    command_parser,
    output_folder,
    training_settings,
)
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.training.cue_model import train_cue_model
from c2am_tf.wsss.bgcues import PSEUDO_LABELS


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--c2am", required=True, help="a trained C2AM .keras model")
    p.add_argument("--images", required=True, help="folder of training images (searched recursively)")
    p.add_argument("--out", default="runs/bgcues", type=output_folder, help="output folder (bgcues.keras, log.csv)")
    p.add_argument("--pseudo", choices=PSEUDO_LABELS, default="soft",
                   help="targets: C2AM's 1 - P (soft) or it thresholded (hard)")
    p.add_argument("--cue-threshold", type=float, default=0.3, help="hard labels: fraction of the map's peak")
    p.add_argument("--size", type=int, default=EVAL_CROP, help="images are resized whole to this square")
    add_training_flags(p, epochs=10, batch_size=16, lr=0.01)
    p.add_argument("--cues-out", type=output_folder, help="write the predicted background cues (NAME.npy) here")
    return p


def parse_args(argv=None, prog=None):
    """Command-line flags."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    claim_training_output(p, "bgcues.keras", args)
    return args


def main(argv=None, prog=None):
    """Entry point."""
    args = parse_args(argv, prog)
    done = train_cue_model(args.target, training_settings(args), args.images, args.c2am, args.backbone, args.weights,
                           args.pseudo, args.cue_threshold, args.size, args.batch_size, args.lr, args.epochs, args.seed,
                           args.overwrite, args.cues_out)
    print(f"{done['images']} images; {args.pseudo} pseudo labels, mean background {done['mean_background']:.3f}")
    print(f"background-cue model -> {done['path']}")
    if args.cues_out:
        print(f"{done['cues']} background cues -> {args.cues_out}")
