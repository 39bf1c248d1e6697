"""Your own photos: which start and learning rate adapt a head to a folder of unlabeled images best (issue 36).

    python benchmarks/own_photos.py [--out runs/own_photos] [--epochs 5] [--configs scratch warm-1e-4 warm-1e-3]
    python benchmarks/own_photos.py --out runs/own_photos80 --images 80 --configs default --starts

Protocol, 2-fold on every dev domain of ../shared/data: ``fit --dataset folder`` trains on the images of one half
(their annotations unused) and is scored on the other half, then the halves swap.
- DUTS-TE_dev500 and oxford_pets_dev: half1 / half2 (even / odd images; pets' trimaps as masks, pet = 1);
- CUB_200_2011_dev: its train (750) and test (652) images;
- ILSVRC_val_dev: half1 / half2 of its 650 images.
Each half is scored with GT-known Loc at the threshold the run ends with, chosen without boxes (the label-free
rule under test: a warm start's threshold is matched to its preset's foreground, a scratch run has 0.5), and at the best
threshold for reference (an oracle: it looks at the boxes). The shipped general presets are scored on the same
halves. **They saw images of these domains**: ``general_lite0`` (and the routed preset built on it) trained on
every DUTS and pets image, CUB train and ImageNet half1 (unlabeled), so on DUTS, pets, CUB train and ImageNet half1
the presets are scored on images they trained on; only CUB test and ImageNet half2 are unseen by them.

Prints one table row per (domain, scored half, model) and writes every number to OUT/results.json.
"""

import argparse
import json
import os
import time

import keras
import numpy as np
from machine import header

from c2am_tf import data
from c2am_tf.data.cub import cub_records
from c2am_tf.data.masks import mask_pairs
from c2am_tf.data.wsol import select_split, wsol_records
from c2am_tf.evaluation.evaluate import evaluate
from c2am_tf.presets import load_named
from c2am_tf.training.trainer import TrainConfig, build_model, choose_start, reference_images, run_training

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
CONFIGS = {  # name -> TrainConfig fields
    "default": dict(init_preset="auto", lr=None),  # what fit --dataset folder does with no flags
    "scratch": dict(init_preset="none", lr=1e-3),
    "warm-1e-4": dict(init_preset="general_lite0", lr=1e-4),
    "warm-1e-3": dict(init_preset="general_lite0", lr=1e-3),
    "warm-3e-4": dict(init_preset="general_lite0", lr=3e-4),
}
PRESETS = ("general_lite0", "general_routed_lite0")


def pets_as_masks(root, out):
    """oxford_pets_dev as an image/mask folder pair (``images/``, ``masks/``: 255 where the trimap says pet)."""
    from PIL import Image

    images, masks = os.path.join(out, "images"), os.path.join(out, "masks")
    if os.path.isdir(masks):
        return out
    os.makedirs(images)
    os.makedirs(masks + ".tmp")
    for name in sorted(os.listdir(os.path.join(root, "images"))):
        stem, ext = os.path.splitext(name)
        trimap = os.path.join(root, "annotations", "trimaps", stem + ".png")
        if ext.lower() != ".jpg" or not os.path.exists(trimap):
            continue
        os.symlink(os.path.abspath(os.path.join(root, "images", name)), os.path.join(images, name))
        pet = (np.asarray(Image.open(trimap)) == 1).astype(np.uint8) * 255
        Image.fromarray(pet).save(os.path.join(masks + ".tmp", stem + ".png"))
    os.rename(masks + ".tmp", masks)
    return out


def domains(work):
    """name -> (evaluate's dataset, its folder, the two halves, {half: image paths})."""
    duts = os.path.join(SHARED, "DUTS-TE_dev500")
    pets = pets_as_masks(os.path.join(SHARED, "oxford_pets_dev"), os.path.join(work, "pets_masks"))
    cub = os.path.join(SHARED, "CUB_200_2011_dev")
    imagenet = os.path.join(SHARED, "ILSVRC_val_dev")
    out = {}
    for name, root in (("duts", duts), ("pets", pets)):
        pairs = [p for p, _ in mask_pairs(root)]
        out[name] = ("masks", root, ("half1", "half2"), {h: select_split(pairs, h) for h in ("half1", "half2")})
    out["cub"] = ("cub", cub, ("train", "test"), {h: [r[0] for r in cub_records(cub, h)] for h in ("train", "test")})
    out["imagenet"] = ("imagenet", imagenet, ("half1", "half2"),
                       {h: [r[0] for r in wsol_records(imagenet, h)] for h in ("half1", "half2")})
    return out


def score(model, dataset, root, half, threshold="model"):
    """(GT-known at the model's stored threshold (or ``threshold``), the best GT-known, the best threshold)."""
    result, _ = evaluate(model, data.eval_dataset(dataset, half, root, cache=False), max_box_acc=False,
                         stored_threshold=threshold)
    return result["at_stored"], result["best"], result["best_threshold"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/own_photos")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--configs", nargs="+", default=["scratch", "warm-1e-4", "warm-1e-3"], choices=sorted(CONFIGS))
    p.add_argument("--domains", nargs="+", default=["duts", "pets", "cub", "imagenet"])
    p.add_argument("--images", type=int, help="train on the first N images of each half only (a small folder)")
    p.add_argument("--starts", action="store_true", help="also score each warm run's start, before training")
    args = p.parse_args()
    print(header())
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    print("| domain | scored half | model | GT-known at its threshold | best (threshold) | train s |")
    print("|---|---|---|---|---|---|")
    for name, (dataset, root, halves, paths) in domains(args.out).items():
        if name not in args.domains:
            continue
        for train_half, scored in (halves, halves[::-1]):
            for preset in PRESETS:
                key = f"{name}/{scored}/{preset}"
                if key not in results:
                    keras.backend.clear_session()
                    results[key] = dict(zip(("at_stored", "best", "best_threshold"),
                                            score(load_named(preset), dataset, root, scored)))
                r = results[key]
                print(f"| {name} | {scored} | {preset} | {r['at_stored']:.1f} | {r['best']:.1f} "
                      f"({r['best_threshold']:.2f}) | |", flush=True)
            if args.images:
                paths = {**paths, train_half: paths[train_half][:args.images]}
            listing = os.path.join(args.out, f"{name}_{train_half}.txt")
            with open(listing, "w") as f:
                f.write("".join(os.path.abspath(x) + "\n" for x in paths[train_half]))
            for config in args.configs:
                key = f"{name}/{scored}/{config}"
                if key not in results:
                    keras.backend.clear_session()
                    cfg = TrainConfig(dataset="folder", data_dir=listing, epochs=args.epochs, verbose=0,
                                      out=os.path.join(args.out, f"{name}_{train_half}_{config}"), **CONFIGS[config])
                    start = time.perf_counter()
                    model, _, summary = run_training(cfg, overwrite=True)
                    seconds = time.perf_counter() - start
                    results[key] = dict(zip(("at_stored", "best", "best_threshold"),
                                            score(model, dataset, root, scored)),
                                        train_s=seconds, steps=summary["steps_per_epoch"] * args.epochs,
                                        images=len(paths[train_half]), threshold=summary["threshold"],
                                        polarity=summary["polarity"])
                    json.dump(results, open(results_path, "w"), indent=1)
                r = results[key]
                print(f"| {name} | {scored} | {config} | {r['at_stored']:.1f} | {r['best']:.1f} "
                      f"({r['best_threshold']:.2f}) | {r['train_s']:.0f} |", flush=True)
                start_key = f"{key}-start"
                if args.starts and CONFIGS[config]["init_preset"] != "none" and start_key not in results:
                    keras.backend.clear_session()  # the run's start, before training: what it must not end below
                    cfg = TrainConfig(dataset="folder", data_dir=listing, **CONFIGS[config]).validate()
                    arrays, start_name, _ = choose_start(cfg, reference_images(cfg))
                    results[start_key] = dict(zip(("at_stored", "best", "best_threshold"),
                                                  score(build_model(cfg, 1, arrays), dataset, root, scored)),
                                              start=start_name)
                    json.dump(results, open(results_path, "w"), indent=1)
                if start_key in results:
                    r = results[start_key]
                    print(f"| {name} | {scored} | its start, {r['start']} | {r['at_stored']:.1f} | {r['best']:.1f} "
                          f"({r['best_threshold']:.2f}) | |", flush=True)
        json.dump(results, open(results_path, "w"), indent=1)
    print("\nmean over domains and halves:")
    models = list(PRESETS) + args.configs + [f"{c}-start" for c in args.configs]
    for model in models:
        values = [v for k, v in results.items() if k.split("/")[2] == model and k.split("/")[0] in args.domains]
        if values:
            print(f"  {model}: {np.mean([v['at_stored'] for v in values]):.2f} at its threshold, "
                  f"{np.mean([v['best'] for v in values]):.2f} at the best ({len(values)} halves)")


if __name__ == "__main__":
    main()
