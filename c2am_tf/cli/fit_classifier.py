"""Train a classifier on image-level labels: for Top-1/Top-5 Loc (CUB), or its CAMs for WSSS.

    c2am-tf fit-classifier --dataset pets --data-dir path/to/oxford_pets \\
        --out runs/classifier [--cams-out runs/classifier/cams] [--train-backbone]
    c2am-tf fit-classifier --dataset cub --data-dir path/to/CUB_200_2011 --out runs/cub_classifier

The classifier is a factory backbone + global average pooling + dense (c2am_tf.wsss.cam):
softmax cross-entropy for single-label CUB, binary cross-entropy per class for the
multi-label segmentation datasets. Images are resized to --size square with a random
flip. After training, ``--cams-out`` receives one CAM file per image of the split
(``NAME.npz``, c2am_tf.wsss.cam format: maps of the image's labelled classes at image
resolution). Writes OUT/classifier.keras (atomically) and OUT/log.csv.
"""

import sys

import keras

from c2am_tf.backbones import LITE_FEATURES
from c2am_tf.data.segmentation import SEGMENTATION_DATASETS
from c2am_tf.training.classifier import (backbone_classifier, classifier_training_set, compile_classifier,
                                         labelled_source)
from c2am_tf.training.run_folder import fit_and_save
from c2am_tf.utils.files import OutputNames
from c2am_tf.wsss.cam import write_split_cams
from c2am_tf.cli.common import add_training_flags, claim_training_output, command_parser, training_settings, output_folder
from c2am_tf.maps.geometry import EVAL_CROP



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
    try:  # checked before training, not after
        cam_names = OutputNames(None, args.cams_out, ".npz", layout="stem", root=args.data_dir,
                                overwrite=args.overwrite) if args.cams_out else None
    except ValueError as err:
        sys.exit(f"error: --cams-out: {err}")
    keras.utils.set_random_seed(args.seed)
    source, classes, single_label = labelled_source(args.dataset, args.data_dir, args.split)
    classifier = backbone_classifier(args.backbone, args.weights, args.backbone_features, args.train_backbone,
                                     len(classes))
    train, steps = classifier_training_set(source, args.size, args.batch_size, args.seed)
    compile_classifier(classifier, single_label, args.lr, steps * args.epochs)
    classifier, path = fit_and_save(classifier, train, args.target, args.epochs, training_settings(args), args.overwrite)
    print(f"classes: {classes}; model -> {path}")
    if args.cams_out:
        count = write_split_cams(classifier, source, cam_names, args.size)
        print(f"{count} CAM files -> {args.cams_out}")

