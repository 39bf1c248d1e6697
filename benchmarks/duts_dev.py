"""C2AM on salient-object images: train on DUTS-TE_dev500 images (masks unused), report PxAP
and the best-threshold mask IoU before and after training.

    python benchmarks/duts_dev.py [--epochs 5]   (the default recipe: head features, frozen backbone)
"""

import argparse
import os
import sys

import keras

from c2am_tf import data
from c2am_tf.backbones import build_backbone
from c2am_tf.evaluation.evaluate import evaluate
from c2am_tf.models.c2am.model import C2AM
from c2am_tf.training.trainer import TrainConfig, run_training

DEFAULT_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "DUTS-TE_dev500")


def line(name, r):
    """One result line: PxAP, mask IoU, GT-known Loc."""
    return (f"{name:34s} PxAP {r['pxap']:5.2f}  best mask IoU {r['mask_iou']:5.2f}  "
            f"GT-known Loc (mask boxes) {r['best']:5.2f} @ {r['best_threshold']:.2f}")


from machine import header


def main():
    """Before/after numbers on DUTS."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default=DEFAULT_DIR)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--recipe", default="paper")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default="runs/duts_dev")
    args = p.parse_args()
    print(header()[0], flush=True)
    if not os.path.isdir(args.data_dir):
        sys.exit(f"DUTS dev data not found at {args.data_dir}")
    eval_ds = data.eval_pipeline(data.make_source("masks", "test", args.data_dir), 16)
    keras.utils.set_random_seed(1)
    untrained = C2AM(build_backbone("efficientnet_lite0", weights="imagenet"))
    for polarity, name in ((1.0, "untrained (map as is)"), (-1.0, "untrained (map inverted)")):
        untrained.polarity.assign(polarity)
        print(line(name, evaluate(untrained, eval_ds, max_box_acc=False, stored_threshold=None)[0]), flush=True)
    cfg = TrainConfig(dataset="masks", data_dir=args.data_dir, epochs=args.epochs, recipe=args.recipe,
                      lr=args.lr, eval_every=max(args.epochs // 2, 1), out=args.out, verbose=2)
    _, _, summary = run_training(cfg)
    result = {"pxap": summary["pxap"], "mask_iou": summary["mask_iou"], "best": summary["gt_known_loc"],
              "best_threshold": summary["threshold"]}
    print(line(f"trained ({args.epochs} epochs, {args.recipe})", result))
    print(f"training images/s: {summary['images_per_s']:.1f}, wall {summary['wall_s']:.0f} s, "
          f"polarity {summary['polarity']:+.0f}")


if __name__ == "__main__":
    main()
