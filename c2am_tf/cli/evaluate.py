"""Score a model, a shipped preset or a boxes file on an annotated dataset: every WSOL number in one pass.

    c2am-tf evaluate --preset general_lite0 --dataset imagenet --data-dir path/to/ILSVRC \\
        --classifier efficientnet_lite0 --json scores.json
    c2am-tf evaluate --model runs/cub/final.keras --dataset cub --data-dir path/to/CUB_200_2011 \\
        --classifier runs/cub_classifier/classifier.keras
    c2am-tf evaluate --boxes boxes.json --dataset imagenet --data-dir path/to/ILSVRC
    c2am-tf evaluate --model runs/mine/final.keras --dataset folder --data-dir photos --annotations labels.json

Prints GT-known Loc per threshold, at the model's stored threshold and the best; Top-1/Top-5 Loc with
a classifier (a ``.keras`` classifier from ``fit-classifier``, or ``efficientnet_lite0/1/2``: the
ImageNet classifiers, offline), and with ``--cam-weight`` the map fused with that classifier's CAM;
MaxBoxAccV2 (IoU 30/50/70); PxAP and the best mask IoU when the dataset has masks. Frames: ``crop448``
is the authors' CUB test transform (resize 480, center crop 448); ``whole224`` resizes the whole image
to 224 (wsolevaluation; the default for imagenet and folder); ``whole448``.

Your own photos: ``--dataset folder --data-dir IMAGES --annotations FILE`` reads boxes as COCO JSON, a
Pascal VOC XML folder, a YOLO txt folder or a CSV ``path,x0,y0,x1,y1`` (``c2am_tf.data.box_files``), with
``--model``, ``--preset`` or ``--boxes``.
"""

import os
import sys

from c2am_tf.cli import common
from c2am_tf.data import ANNOTATED_DATASETS
from c2am_tf.evaluation.evaluate import evaluate_dataset, format_result, write_result
from c2am_tf.maps.foreground import DEFAULT_THRESHOLDS
from c2am_tf.maps.geometry import EVAL_FRAMES
from c2am_tf.presets import load


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = common.command_parser(__doc__, prog)
    common.add_model_flags(p, required=False)
    p.add_argument("--boxes", help="score this boxes JSON (c2am_tf.boxes/v1, original pixels), or the --out prefix of "
                                   "extract-boxes --runner parts, instead of a model")
    p.add_argument("--dataset", required=True, choices=ANNOTATED_DATASETS, help="annotated dataset")
    p.add_argument("--data-dir", help="its folder (CUB_200_2011, wsolevaluation metadata or raw ILSVRC, masks, "
                                      "your images)")
    p.add_argument("--annotations", help="dataset folder: the images' boxes, as COCO JSON (.json), Pascal VOC XML "
                                         "(a folder of .xml), YOLO (a folder of .txt) or CSV (path,x0,y0,x1,y1)")
    p.add_argument("--split", default="test", help="cub: train|test; imagenet, masks, folder: test|half1|half2")
    p.add_argument("--frame", choices=sorted(EVAL_FRAMES), help="default: whole224 for imagenet and folder, crop448 otherwise")
    common.add_classifier_flags(p, "each image's true class (needs labelled images)")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS),
                   help="map thresholds for GT-known / Top-k Loc")
    p.add_argument("--flip", action="store_true", help="average each map with its mirrored image's map")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0],
                   help="average the maps of the image resized by these factors (e.g. 0.86 1 1.14; the first "
                        "sets the map's grid)")
    p.add_argument("--threshold", type=float,
                   help="report at this map threshold instead of the model's stored one (chosen for the map alone)")
    common.add_box_band_flag(p)
    p.add_argument("--no-max-box-acc", dest="max_box_acc", action="store_false", help="skip MaxBoxAccV2")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--json", type=common.output_file, help="also write the numbers here (never an input of this command)")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file already there")
    p.add_argument("--strict", action="store_true",
                   help="an unusable box annotation (non-numeric, NaN, empty, outside its image, a size that is "
                        "not positive) is an error; by default its image is skipped with a warning")
    return p


def main(argv=None, prog=None):
    """Entry point."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    _check_flags(p, args)
    if args.json:  # claimed before any work: never one of the files scored, never a file there already
        common.claim_output(p, args.json, args.overwrite, "--json", inputs=common.command_inputs(args))
    model = None if args.boxes else load(args.model, args.preset)
    result = evaluate_dataset(args.dataset, args.split, args.data_dir, model, args.boxes, args.annotations, args.frame,
                              args.batch_size, args.strict, args.classifier, args.classifier_size, args.threshold,
                              thresholds=args.thresholds, max_box_acc=args.max_box_acc, flip=args.flip,
                              cam_weight=args.cam_weight, scales=tuple(args.scales), box_band=args.box_band)
    print(format_result(result))
    print(f"{result['total']} images in {result['seconds']:.1f} s ({result['total'] / result['seconds']:.1f} img/s)")
    if args.json:
        write_result(args.json, result)
        print(f"-> {os.path.abspath(args.json)}")
    return 0


def _check_flags(p, args):
    """Flag errors (exit 2) for flags that do not go together."""
    if (args.boxes is None) == (args.model is None and args.preset is None):
        p.error("give one of --model, --preset or --boxes")
    if args.cam_weight and args.boxes:
        p.error("--cam-weight needs a model, not --boxes")
    if args.box_band is not None and args.boxes:
        p.error("--box-band needs a model, not --boxes (a boxes file holds one box per image)")
    common.check_classifier_flags(p, args, threshold_needed=False)
    if args.dataset != "synthetic" and not args.data_dir and not (args.dataset == "cub" and not args.boxes):
        p.error(f"--data-dir is needed for dataset {args.dataset}")
    if (args.dataset == "folder") != (args.annotations is not None):
        p.error("--annotations goes with --dataset folder (the boxes of the images in --data-dir)"
                if args.annotations else "--dataset folder needs --annotations (the images' boxes)")


if __name__ == "__main__":
    sys.exit(main())
