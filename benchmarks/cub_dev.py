"""The CUB dev benchmark (protocol: ../shared/BENCHMARK.md beside the repository, summarized in docs/results/cub.md): baselines, untrained model, training, GT-known Loc.

    python benchmarks/cub_dev.py          # the recommended recipe (head features, frozen backbone, 5 epochs)
    python benchmarks/cub_dev.py --backbone-features concat --train-backbone --lr 1e-4 \
        --recipe reference --epochs 20    # the protocol's model with the authors' recipe

Prints GT-known Loc per threshold and best for: the whole-crop box, the
central-80% box, the untrained model (ImageNet backbone, random head; both
orientations), and the trained model; plus training images/s (median of the
steps after the first five), wall time and peak resident memory.
"""

import argparse
import dataclasses
import os
import resource
import sys
import time

import numpy as np
import tensorflow as tf

from c2am_tf import data
from c2am_tf.backbones import build_backbone
from c2am_tf.evaluation.ddt import DDT
from c2am_tf.evaluation.evaluate import evaluate
from c2am_tf.maps.boxes import DEFAULT_THRESHOLDS, GTKnownLoc
from c2am_tf.models.c2am.model import C2AM
from c2am_tf.training.trainer import TrainConfig, run_training

DEFAULT_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "CUB_200_2011_dev")


def fmt(result):
    """One line: best value and threshold, then every threshold's value."""
    per = " ".join(f"{v:5.1f}" for v in result["per_threshold"])
    return f"best {result['best']:5.2f} @ {result['best_threshold']:.2f} | per threshold: {per}"


def center_box_baselines(eval_ds, crop):
    """GT-known Loc of fixed boxes: the whole crop and its central 80%."""
    out = {}
    for name, margin in (("whole crop", 0.0), ("central 80%", 0.1)):
        acc = GTKnownLoc(thresholds=[0.5])
        m = margin * crop
        for batch in eval_ds:
            gt = batch["boxes"].numpy()
            box = np.tile([[[m, m, crop - m, crop - m]]], (gt.shape[0], 1, 1))
            acc.update(box, gt)
        out[name] = acc.result()["best"]
    return out


def ddt_baseline(backbone, train_ds, eval_ds, crop):
    """GT-known Loc of DDT fit on the train images' features (eval transform)."""
    ddt = DDT()
    for batch in train_ds:
        ddt.update(backbone.predict_on_batch(batch["image"]))
    ddt.fit()
    feats, gts = [], []
    for batch in eval_ds:
        feats.append(backbone.predict_on_batch(batch["image"]))
        gts.append(batch["boxes"].numpy())
    maps = np.concatenate([ddt.project(f) for f in feats])
    ddt.orient(maps)
    maps = np.concatenate([ddt.project(f) for f in feats])
    acc = GTKnownLoc(thresholds=[0.5])
    boxes = np.stack([DDT.box(m, crop) for m in maps])[:, None, :]
    acc.update(boxes, np.concatenate(gts))
    return acc.result()["best"]


def peak_rss_gib():
    """Peak resident memory of this process in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


from machine import forward_gflops, fraction_of_peak, header


def main():
    """Runs the protocol and prints its numbers."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=DEFAULT_DIR)
    p.add_argument("--epochs", type=int, default=5, help="0: baselines only (the authors run 20)")
    p.add_argument("--recipe", default="paper")
    p.add_argument("--loss-variant", default="reference")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--backbone-bn", default="frozen")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true", default=True)
    p.add_argument("--train-backbone", dest="freeze_backbone", action="store_false", default=argparse.SUPPRESS)
    p.add_argument("--backbone-features", default="head", choices=["concat", "head", "stage"],
                   help="the protocol's model is 'concat'; 'head' measured best")
    p.add_argument("--resize", type=int, default=256, help="train resize (the protocol's: 256)")
    p.add_argument("--crop", type=int, default=224, help="train crop (the protocol's: 224)")
    p.add_argument("--box-band", type=float, default=TrainConfig.box_band,
                   help="boxes averaged over this band of thresholds (0: the protocol's single threshold)")
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="runs/cub_dev")
    args = p.parse_args()
    if not os.path.isdir(args.data_dir):
        sys.exit(f"CUB dev data not found at {args.data_dir} (pass --data-dir)")

    cfg = TrainConfig(dataset="cub", data_dir=args.data_dir, backbone="efficientnet_lite0",
                      weights="imagenet", epochs=args.epochs, batch_size=16, lr=args.lr,
                      momentum=args.momentum, alpha=args.alpha, loss_variant=args.loss_variant,
                      recipe=args.recipe, backbone_bn=args.backbone_bn, out=args.out, seed=args.seed,
                      freeze_backbone=args.freeze_backbone, resize=args.resize, crop=args.crop,
                      backbone_features=args.backbone_features, box_band=args.box_band,
                      eval_every=args.eval_every, verbose=2)
    machine, peak = header()
    print(machine, flush=True)
    print("config:", dataclasses.asdict(cfg), flush=True)
    eval_src = data.make_source("cub", "test", args.data_dir)
    eval_ds = data.eval_pipeline(eval_src, 16, cfg.eval_resize, cfg.eval_crop)

    if not args.skip_baselines:
        for name, value in center_box_baselines(eval_ds, cfg.eval_crop).items():
            print(f"baseline box = {name:12s}: GT-known Loc {value:5.2f}", flush=True)
        tf.keras.utils.set_random_seed(cfg.seed)
        untrained = C2AM(build_backbone("efficientnet_lite0", weights="imagenet", features=cfg.backbone_features))
        result, _ = evaluate(untrained, eval_ds, DEFAULT_THRESHOLDS, max_box_acc=False, stored_threshold=None)
        print("untrained model (map as is):   ", fmt(result), flush=True)
        untrained.polarity.assign(-1.0)
        result, _ = evaluate(untrained, eval_ds, DEFAULT_THRESHOLDS, max_box_acc=False, stored_threshold=None)
        print("untrained model (map inverted):", fmt(result), flush=True)
        train_eval_ds = data.eval_pipeline(data.make_source("cub", "train", args.data_dir), 16,
                                           cfg.eval_resize, cfg.eval_crop, cache=False)
        ddt = ddt_baseline(untrained.backbone, train_eval_ds, eval_ds, cfg.eval_crop)
        print(f"DDT (untrained Lite0 stride-16 '{cfg.backbone_features}' features, fit on train): "
              f"GT-known Loc {ddt:5.2f}", flush=True)
        del untrained
    if args.epochs == 0:
        print(f"peak resident memory: {peak_rss_gib():.2f} GiB")
        return

    start = time.perf_counter()
    model, history, summary = run_training(cfg)
    wall = time.perf_counter() - start
    # the last epoch is always evaluated by run_training's callback
    result = {"best": summary["gt_known_loc"], "best_threshold": summary["threshold"],
              "per_threshold": summary["per_threshold"]}
    print(f"trained ({cfg.epochs} epochs, recipe {cfg.recipe}, loss {cfg.loss_variant}, "
          f"polarity {summary['polarity']:+.0f}):", fmt(result))
    v2, _ = evaluate(model, eval_ds)
    acc = ", ".join(f"IoU {k}: {v:.2f}" for k, v in v2["max_box_acc"].items())
    print(f"MaxBoxAccV2 (multi contour, thresholds 0:1:0.01, maps upsampled to 224): "
          f"{v2['max_box_acc_v2']:.2f} ({acc})")
    gflop = forward_gflops(model.backbone, cfg.crop) * (1 if cfg.freeze_backbone else 3)
    print(f"training images/s (median after 5 steps): {summary['images_per_s']:.1f} "
          f"({100 * fraction_of_peak(summary['images_per_s'], gflop, peak):.1f}% of the float32 matmul rate, "
          f"{gflop:.2f} GFLOP/image)")
    print(f"wall time (training + per-epoch eval): {wall:.0f} s")
    print(f"peak resident memory: {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
