"""Train a PSOL box regressor on C2AM's pseudo boxes, and score its boxes beside the ones it learned from.

    c2am-tf extract-boxes --preset general_lite0 --dataset imagenet --data-dir ILSVRC --split train \\
        --out runs/psol/pseudo.json
    c2am-tf fit-regressor --boxes runs/psol/pseudo.json --out runs/psol \\
        [--eval-dataset imagenet --eval-data-dir path/to/ILSVRC --classifier efficientnet_lite0]

Writes OUT/regressor.keras (atomically) and OUT/log.csv. With --eval-dataset it prints GT-known and
Top-1/Top-5 Loc of the regressor's boxes on that split (in the dataset's eval frame).
"""

from c2am_tf.cli.common import (
    add_training_flags,
    claim_training_output,
    command_parser,
    output_folder,
    training_settings,
)
from c2am_tf.evaluation.evaluate import format_result
from c2am_tf.models.psol.regressor import REGRESSOR_SIZE
from c2am_tf.training.regressor import train_regressor


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
    done = train_regressor(args.target, training_settings(args), args.boxes, args.backbone, args.weights, args.size,
                           args.batch_size, args.lr, args.epochs, args.seed, args.overwrite, args.eval_dataset,
                           args.eval_data_dir, args.eval_split, args.classifier)
    print(f"{done['boxes']} pseudo boxes; regressor -> {done['path']}")
    if done["result"] is not None:
        print(format_result(done["result"]))
    return 0
