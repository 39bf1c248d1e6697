"""Train a classifier on image-level labels: for Top-1/Top-5 Loc (CUB), or its CAMs for WSSS.

    c2am-tf fit-classifier --dataset pets --data-dir path/to/oxford_pets \\
        --out runs/classifier [--cams-out runs/classifier/cams] [--train-backbone]
    c2am-tf fit-classifier --dataset cub --data-dir path/to/CUB_200_2011 --out runs/cub_classifier

The classifier is a factory backbone + global average pooling + dense (c2am_tf.models.classifier):
softmax cross-entropy for single-label CUB, binary cross-entropy per class for the
multi-label segmentation datasets. Images are resized to --size square with a random
flip. After training, ``--cams-out`` receives one CAM file per image of the split
(``NAME.npz``, c2am_tf.wsss.cam format: maps of the image's labelled classes at image
resolution). Writes OUT/classifier.keras (atomically) and OUT/log.csv.
"""

from c2am_tf.backbones import LITE_FEATURES
from c2am_tf.cli.common import (
    add_training_flags,
    claim_training_output,
    command_parser,
    output_folder,
    training_settings,
)
from c2am_tf.data.segmentation import SEGMENTATION_DATASETS
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.training.classifier import train_classifier


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--dataset", choices=SEGMENTATION_DATASETS + ("cub",), required=True,
                   help="dataset with image-level labels")
    p.add_argument("--data-dir", required=True, help="its root folder")
    p.add_argument("--split", help="default: train (voc, cub), trainval (pets)")
    add_training_flags(p, epochs=10, batch_size=16, lr=0.1)
    p.add_argument("--backbone-features", default="head", choices=LITE_FEATURES, help="EfficientNet-Lite features")
    p.add_argument("--train-backbone", action="store_true", help="fine-tune the backbone (default: frozen)")
    p.add_argument("--size", type=int, default=EVAL_CROP, help="images are resized whole to this square")
    p.add_argument("--out", default="runs/classifier", type=output_folder, help="output folder (classifier.keras, log.csv)")
    p.add_argument("--cams-out", type=output_folder, help="write the CAMs of the split here")
    return p


def parse_args(argv=None, prog=None):
    """Command-line flags."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    claim_training_output(p, "classifier.keras", args)
    return args


def main(argv=None, prog=None):
    """Entry point."""
    args = parse_args(argv, prog)
    done = train_classifier(args.target, training_settings(args), args.dataset, args.data_dir, args.split, args.backbone,
                            args.weights, args.backbone_features, args.train_backbone, args.size, args.batch_size,
                            args.lr, args.epochs, args.seed, args.overwrite, args.cams_out)
    print(f"classes: {done['classes']}; model -> {done['path']}")
    if args.cams_out:
        print(f"{done['cams']} CAM files -> {args.cams_out}")
