"""Refine multi-class CAMs with background cues (paper section 3.5) and measure mIoU.

    c2am-tf refine --cams DIR --bg-cues MODEL_OR_DIR --images DIR --out DIR \\
        [--masks DIR] [--c2am C2AM.keras] [--num-classes 20]
    c2am-tf refine --cams DIR --bg-cues MODEL_OR_DIR --dataset pets --data-dir ROOT --out DIR

``--cams``: one CAM file per image (c2am_tf.wsss.cam: PSA/SEAM/PuzzleCAM/AdvCAM ``.npy`` dicts
with ``keys`` and ``hr_cam``, or our ``.npz``). ``--bg-cues``: a background-cue model
(train/fit_bgcues.py), a C2AM model (its raw 1 - P is the cue), or a folder of ``NAME.npy``
background maps in [0, 1]; or a mask model (train/fit_masks.py), whose cue is one minus its
refined mask at the image's size. Writes ``OUT/NAME.png``: palette PNGs with VOC colours
(0 background, k = class k - 1). With ground truth (``--masks`` index PNGs with 255 =
ignore, or ``--dataset``), prints per-class IoU and mIoU of the initial CAMs with the
best constant background threshold (swept on the ground truth), of the refinement with C2AM's raw 1 - P
(``--c2am``, or when ``--bg-cues`` is a C2AM model) and of the refinement with ``--bg-cues``.

``--bg-mask`` replaces the soft cue by the model's own binary mask at its stored threshold (the
model's one threshold policy, no knob): foreground pixels take the CAMs' class, the rest is
background. ``--bg-power G`` raises the cue to the power G before the argmax (default 1, the paper's
rule); ``--bg-power auto`` chooses G from the images without labels (``c2am_tf.wsss.labels.PowerCalibration``:
at the cue's own boundary its score equals the median CAM score of the pixels it calls foreground), in
a first pass over every image that keeps the cues in memory (uint8, the cue model's size). A soft cue such as 1 - P is on another scale than max-normalized CAMs, which
are often low on most of the object (the best constant background is typically
0.1-0.3): the evaluation therefore also sweeps G, as it sweeps the constant
background of the initial CAMs, and reports the best of both. The workflow is ``c2am_tf.wsss.pipeline``.
"""

import argparse
import sys

from c2am_tf.cli.common import command_parser, output_folder
from c2am_tf.data.segmentation import SEGMENTATION_DATASETS
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.wsss.pipeline import refine_folder


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--cams", required=True, help="folder of CAM files")
    p.add_argument("--bg-cues", required=True,
                   help="mask model .keras (fit-masks), background-cue .keras, C2AM .keras, or folder of NAME.npy")
    p.add_argument("--out", required=True, type=output_folder, help="folder for the refined label PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace PNGs in --out that no c2am_tf run wrote")
    p.add_argument("--images", help="folder of images (searched recursively)")
    p.add_argument("--masks", help="ground-truth index PNGs NAME.png (255 = ignore) for --images")
    p.add_argument("--dataset", choices=SEGMENTATION_DATASETS, help="images and ground truth from a dataset")
    p.add_argument("--data-dir", help="the dataset's root folder")
    p.add_argument("--split", help="dataset split (default: train for voc, trainval for pets)")
    p.add_argument("--c2am", help="a C2AM model: also report the refinement with its raw 1 - P")
    p.add_argument("--num-classes", type=int, help="foreground classes (default: from the dataset, else 20)")
    p.add_argument("--size", type=int, default=EVAL_CROP, help="input size of the cue models")
    p.add_argument("--bg-power", type=_power, default=1.0,
                   help="cue ** G before the argmax (written PNGs); 'auto': G from the images, without labels")
    p.add_argument("--bg-mask", action="store_true",
                   help="cue = the model's own binary mask at its stored threshold (1 background, 0 foreground): "
                        "foreground pixels take the CAMs' class, the rest is background; no power")
    return p


def _power(text):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'auto': {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def parse_args(argv=None, prog=None):
    """Command-line flags."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    if bool(args.images) == bool(args.dataset):
        p.error("give either --images DIR or --dataset with --data-dir")
    if args.dataset and not args.data_dir:
        p.error("--dataset needs --data-dir")
    if args.bg_power == "auto" and args.bg_mask:
        p.error("--bg-power auto calibrates a soft cue; --bg-mask has no power")
    return args


def main(argv=None, prog=None):
    """Entry point."""
    args = parse_args(argv, prog)
    done = refine_folder(args.cams, args.bg_cues, args.out, args.images, args.masks, args.dataset, args.data_dir,
                         args.split, args.c2am, args.num_classes, args.size, args.bg_power, args.bg_mask,
                         args.overwrite)
    scores = done["scores"]
    if done["calibration"]:
        print(done["calibration"])
    if scores.missing:
        print(f"warning: {scores.missing} images have no CAM file in {args.cams}", file=sys.stderr)
    if scores.resized:
        print(f"warning: {len(scores.resized)} CAM files were not at their image's size and were resized "
              f"(e.g. {scores.resized[0]}); CAMs of other images?", file=sys.stderr)
    print(f"{scores.written} label maps -> {args.out}")
    if scores.with_gt:
        print("\n".join(scores.lines(done["names"], args.bg_cues + (" (its mask)" if args.bg_mask else ""),
                                      done["power"], done["how"])))
