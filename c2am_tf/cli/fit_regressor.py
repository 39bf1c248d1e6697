"""Train a PSOL box regressor on C2AM's pseudo boxes, and score its boxes beside the ones it learned from.

    c2am-tf extract-boxes --preset general_lite0 --dataset imagenet --data-dir ILSVRC --split train \\
        --out runs/psol/pseudo.json
    c2am-tf fit-regressor --boxes runs/psol/pseudo.json --out runs/psol \\
        [--eval-dataset imagenet --eval-data-dir path/to/ILSVRC --classifier efficientnet_lite0]

Writes OUT/regressor.keras (atomically) and OUT/log.csv. With --eval-dataset it prints GT-known and
Top-1/Top-5 Loc of the regressor's boxes on that split (in the dataset's eval frame).
"""

import sys

import keras

from c2am_tf.training.run_folder import fit_and_save
from c2am_tf.cli.common import (add_training_flags, claim_training_output, command_parser, output_folder,
                                training_settings)
from c2am_tf.presets import load_classifier
from c2am_tf.models.psol.regressor import REGRESSOR_SIZE


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--boxes", required=True, help="pseudo boxes (c2am_tf.boxes/v1) from extract-boxes (a JSON, or the prefix of --runner parts)")
    add_training_flags(p, epochs=10, batch_size=32, lr=1e-3)
    p.add_argument("--size", type=int, default=REGRESSOR_SIZE, help="images are resized whole to this square")
    p.add_argument("--out", default="runs/regressor", type=output_folder, help="output folder (regressor.keras, log.csv)")
    p.add_argument("--eval-dataset", choices=["cub", "imagenet"], help="score the regressor on this dataset")
    p.add_argument("--eval-data-dir", help="its folder")
    p.add_argument("--eval-split", default="test", help="its split")
    p.add_argument("--classifier", help="for Top-k Loc: a .keras classifier or efficientnet_lite0/1/2")
    return p


def main(argv=None, prog=None):
    """Entry point."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    claim_training_output(p, "regressor.keras", args)
    from c2am_tf.backbones import build_backbone, default_features
    from c2am_tf.maps.boxes_json import read_boxes
    from c2am_tf.models.psol.regressor import build_regressor, pseudo_box_dataset

    try:
        records = read_boxes(args.boxes)["images"]
        train = pseudo_box_dataset(records, args.batch_size, args.size, args.seed)
    except (OSError, ValueError) as err:
        sys.exit(f"error: --boxes: {err}")
    keras.utils.set_random_seed(args.seed)
    backbone = build_backbone(args.backbone, args.weights, features=default_features(args.backbone))
    backbone.trainable = False
    regressor = build_regressor(backbone, args.size)
    regressor.compile(optimizer=keras.optimizers.Adam(args.lr), loss="mse")
    regressor, path = fit_and_save(regressor, train, args.target, args.epochs, training_settings(args), args.overwrite)
    print(f"{len(records)} pseudo boxes; regressor -> {path}")
    if args.eval_dataset:
        from c2am_tf import data
        from c2am_tf.evaluation.evaluate import evaluate_regressor, format_result

        batches = data.eval_dataset(args.eval_dataset, args.eval_split, args.eval_data_dir, cache=False)
        classifier, size = load_classifier(args.classifier)
        result = evaluate_regressor(regressor, batches, classifier, size)
        print(format_result(result))
    return 0
