"""Foreground masks, step by step: the C2AM map upsampled, the self-trained stride-4 decoder, the
edge-aware refinement, and the self-training rounds, on salient objects and on pets.

    python benchmarks/masks_dev.py [--teacher cub_lite0] [--rounds 2] [--epochs 20] [--out runs/masks_dev]

Protocol (no model is scored on an image it saw, and no knob is chosen on a mask):
- DUTS-TE_dev500, 2-fold: the mask model self-trains on the images of one half (masks unused) and is
  scored on the other half, then the halves swap; the table gives the mean of the two folds.
- oxford_pets_dev: the same 2-fold protocol; pet vs background, the trimap border left out.
- The teacher is a C2AM model that saw neither set (default: the ``cub_lite0`` preset, CUB birds).
- Every image is resized whole to --size (448); masks are scored at that size (nearest-neighbour).
- Metrics (c2am_tf.evaluation.metrics, PySODMetrics semantics): max F-beta, MAE, per-image IoU at the best single
  threshold and at the model's stored one, and PxAP.

Speed: decoder training images/s (features cached once, both mirrors), masks/s of the whole model in
Keras (forward + refinement).
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf
from machine import header

from c2am_tf import data
from c2am_tf.data.segmentation import segmentation_dataset
from c2am_tf.data.transforms import resize_square
from c2am_tf.data.wsol import select_split
from c2am_tf.evaluation.evaluate import upsample_normalized
from c2am_tf.evaluation.metrics import PxAP, SaliencyMetrics
from c2am_tf.models.masks.mask_model import (
    DECODER_STRIDE,
    MaskModel,
    cached_features,
    predict_features,
    refined_maps,
    self_train,
)
from c2am_tf.presets import load_named

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def duts_arrays(root, split, size):
    """(images uint8 (N, size, size, 3), masks {0, 1} (N, size, size)) of a DUTS half."""
    batches = data.eval_dataset("masks", split, root, batch_size=32, frame=f"whole{size}", cache=False)
    images, masks = [], []
    for b in batches:
        images.append(b["image"].numpy().astype(np.uint8))
        masks.append(b["mask"].numpy().astype(np.uint8))
    return np.concatenate(images), np.concatenate(masks)


def pets_arrays(root, split, size):
    """(images, masks with 1 pet / 0 background / 255 border) of a pets half, resized whole to size."""
    source, _ = segmentation_dataset("pets", root)
    examples = select_split(list(source.as_numpy_iterator()), split)
    images = np.stack([resize_square(ex["image"], size).numpy().astype(np.uint8) for ex in examples])
    masks = []
    for ex in examples:
        labels = tf.image.resize(ex["mask"][..., None], (size, size), method="nearest").numpy()[..., 0]
        masks.append(np.where(labels == 255, 255, labels > 0).astype(np.uint8))
    return images, np.stack(masks)


def score(maps, masks, stored=None):
    """Every saliency number of maps (N, h, w) against masks (N, S, S)."""
    side = masks.shape[1]
    sal, pxap = SaliencyMetrics(), PxAP()
    for start in range(0, len(maps), 32):
        up = upsample_normalized(maps[start:start + 32], side)  # min-max normalized, as the metrics see maps
        sal.update(up, masks[start:start + 32])
        pxap.update(up, masks[start:start + 32])
    r = sal.result(stored)
    return {"max_f_beta": r["max_f_beta"], "mae": r["mae"], "per_image_iou": r["per_image_iou"],
            "per_image_iou_at_stored": r.get("per_image_iou_at"), "pxap": pxap.result()["pxap"]}


def teacher_maps(teacher, images, batch_size=16):
    """The teacher's foreground maps (N, h, w)."""
    return np.concatenate([np.asarray(teacher(tf.constant(images[i:i + batch_size], tf.float32)))[..., 0]
                           for i in range(0, len(images), batch_size)])


def run_fold(name, train, test, teacher, args, rows, speed):
    """Self-trains on ``train`` images and scores every step on ``test`` (images, masks)."""
    train_images, _ = train
    test_images, test_masks = test
    model = MaskModel(teacher, refinement=args.refinement)
    stored = float(np.asarray(model.threshold))
    test_features = cached_features(model, test_images, flip=False)

    def add(step, maps, threshold=stored):
        rows.setdefault(name, {}).setdefault(step, []).append(score(maps, test_masks, threshold))
        print(f"  {step:48s} " + format_row(rows[name][step][-1]), flush=True)

    teacher_test = teacher_maps(teacher, test_images)
    t_stored = float(np.asarray(teacher.threshold))
    add("C2AM map, upsampled", teacher_test, t_stored)
    add("C2AM map + guided filter", refined_maps(test_images, teacher_test, "guided", args.size), t_stored)
    prior = test_features[3][..., 0].astype(np.float32)
    add("prior (C2AM map -> prototypes)", prior)
    add("prior + guided filter", refined_maps(test_images, prior, "guided", args.size))
    start = time.perf_counter()
    features = cached_features(model, train_images, progress=True)
    speed.setdefault("feature_cache_img_s", []).append(2 * len(train_images) / (time.perf_counter() - start))
    tag, round_start = [""], [0.0]

    def after_round(r, m, targets):
        elapsed = time.perf_counter() - round_start[0]
        speed.setdefault("decoder_train_img_s", []).append(args.epochs * 2 * len(train_images) / elapsed)
        maps = predict_features(m, test_features)
        add(f"{tag[0]}round {r + 1}: decoder (stride {DECODER_STRIDE})", maps)
        for method in ("guided", "global_smoother"):
            add(f"{tag[0]}round {r + 1}: decoder + {method}", refined_maps(test_images, maps, method, args.size))
        round_start[0] = time.perf_counter()

    for kind in args.targets.split(","):
        tag[0] = f"{kind} targets, "
        round_start[0] = time.perf_counter()
        self_train(model, train_images, args.rounds, args.epochs, args.batch_size, args.lr, args.seed,
                   features=features, after_round=after_round, targets=kind)
    return model


def format_row(r):
    """maxF / MAE / per-image IoU (best, stored) / PxAP."""
    at = r["per_image_iou_at_stored"]
    return (f"maxF {r['max_f_beta']:.3f}  MAE {r['mae']:.3f}  IoU {r['per_image_iou']:5.2f} "
            f"(stored {at:5.2f})  PxAP {r['pxap']:5.2f}" if at is not None else "")


def mean_rows(rows):
    """Each step's numbers averaged over folds."""
    return {step: {k: float(np.mean([f[k] for f in folds])) for k in folds[0]} for step, folds in rows.items()}


def masks_per_second(model, images, repeats=3):
    """(forward masks/s, forward + refinement masks/s) of the whole model on ``images``."""
    x = tf.constant(images[:8], tf.float32)
    model.predict_on_batch(x)
    best_f = best_r = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        maps = np.asarray(model.predict_on_batch(x))[..., 0]
        forward = time.perf_counter() - start
        for image, m in zip(images[:8], maps):
            model.edge_refine(image, m)
        total = time.perf_counter() - start
        best_f, best_r = max(best_f, len(x) / forward), max(best_r, len(x) / total)
    return best_f, best_r


def main(argv=None):
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duts", default=os.path.join(SHARED, "DUTS-TE_dev500"))
    p.add_argument("--pets", default=os.path.join(SHARED, "oxford_pets_dev"))
    p.add_argument("--teacher", default="cub_lite0", help="C2AM preset name or .keras")
    p.add_argument("--refinement", default="guided")
    p.add_argument("--targets", default="soft", help="decoder targets (soft, hard, or both comma-separated)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sets", default="duts,pets")
    p.add_argument("--folds", default="half1,half2", help="the training halves")
    p.add_argument("--out", default="runs/masks_dev")
    args = p.parse_args(argv)
    print(header()[0], flush=True)
    teacher = load_named(args.teacher)
    rows, speed, model = {}, {}, None
    readers = {"duts": (duts_arrays, args.duts), "pets": (pets_arrays, args.pets)}
    for name in args.sets.split(","):
        reader, root = readers[name]
        halves = {h: reader(root, h, args.size) for h in ("half1", "half2")}
        for fold in args.folds.split(","):
            other = "half2" if fold == "half1" else "half1"
            print(f"{name}: train on {fold} ({len(halves[fold][0])} images), score {other}", flush=True)
            model = run_fold(name, halves[fold], halves[other], teacher, args, rows, speed)
    if model is not None:
        forward, refined = masks_per_second(model, halves[other][0])
        speed.update(keras_masks_s=forward, keras_masks_refined_s=refined)
    table = {name: mean_rows(r) for name, r in rows.items()}
    speed = {k: float(np.mean(v)) if isinstance(v, list) else v for k, v in speed.items()}
    print("\nmean over folds")
    for name, steps in table.items():
        print(f"{name}:")
        for step, r in steps.items():
            print(f"  {step:48s} {format_row(r)}")
    print("speed: " + ", ".join(f"{k} {v:.1f}" for k, v in speed.items()))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "masks_dev.json"), "w") as f:
        json.dump({"table": table, "speed": speed, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
