"""Writes the shipped presets (c2am_tf/models/c2am/presets/) from trained runs, each threshold chosen on held-out boxes.

    python benchmarks/imagenet_dev.py --lists-only    # the general head's training list
    python train/fit.py --dataset folder --data-dir runs/lists/general_half1.txt --out runs/general_half1 --eval-every 0 --init-preset none
    python train/fit.py --dataset cub --data-dir ../shared/data/CUB_200_2011_dev --out runs/cub_lite0
    python -m c2am_tf fit-routed --preset general_lite0 --dataset folder --data-dir runs/lists/general_half1.txt \
        --clusters 3 --own 1 --class-votes 5 --out runs/general_routed_votes
    python benchmarks/make_presets.py --masks-list runs/lists/general_masks.txt   # the mask preset's images
    c2am-tf fit-masks --preset general_routed_lite0 --images runs/lists/general_masks.txt --rounds 2 --epochs 6 \
        --out runs/general_masks
    python benchmarks/make_presets.py [NAME ...]    # all presets, or the named ones
    python benchmarks/make_presets.py --from-shipped [NAME ...]   # the shipped heads, only the box rule re-chosen

- ``general_lite0``: EfficientNet-Lite0 head features, frozen; trained on every unlabeled image of
  ../shared/data except CUB test and ImageNet dev half2 (CUB train, DUTS-TE_dev500, Oxford pets, ImageNet dev
  half1: 1,875 images); threshold chosen on ImageNet dev half1's boxes.
- ``general_routed_lite0``: ``general_lite0``'s head for most images and, for the images nearest the
  bird cluster of 3 k-means clusters of the same 1,875 images (712 images, ``--own 1``) or whose 5 best
  ImageNet classes include one of that cluster's (``--class-votes 5``), a head trained on that cluster
  (``c2am_tf.training.routing``); each head's threshold chosen (``calibrate_heads``, smoothed) on the boxes of the
  ImageNet dev half1 and CUB train images routed to it.
- ``cub_lite0``: the CUB dev recipe (CUB train, 750 images); threshold chosen on CUB train's boxes.
- ``general_masks_lite0``: a mask model (``fit-masks``) with ``general_routed_lite0`` as its teacher, self-trained
  on 975 unlabeled images: DUTS-TE_dev500 half1, oxford_pets_dev half1, ImageNet dev half1 and the first 250 of CUB
  train (``--masks-list``), so DUTS half2 and pets half2 stay unseen by the decoder; its threshold is the best
  per-image IoU on DUTS half1's masks.

Every preset boxes its map with ``BOX_BAND`` (``fit``'s default: each box the mean of the boxes from
threshold - 0.1 to + 0.1), and its threshold is chosen with that rule. ``--from-shipped`` takes the heads
from the shipped presets instead of the runs (the runs are not kept), for a change of the box rule alone.
"""

import itertools
import os
import sys

from own_photos import domains  # a sibling benchmark (run from benchmarks/, as few_labels.py): the dev halves

from c2am_tf import data
from c2am_tf.evaluation.evaluate import choose_threshold, evaluate
from c2am_tf.models.c2am.layers import RoutedHead
from c2am_tf.models.masks.mask_model import save_mask_preset
from c2am_tf.presets import from_preset, load_model, save_preset
from c2am_tf.training.routing import calibrate_heads
from c2am_tf.training.trainer import TrainConfig

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
CUB = os.path.join(SHARED, "CUB_200_2011_dev")
REAL = "CUB_200_2011_dev/images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg"
BOX_BAND = TrainConfig.box_band


def held_out(dataset, data_dir, split):
    """Eval batches of a held-out annotated split in the dataset's frame."""
    return data.eval_dataset(dataset, split, data_dir)


def masks_list(path):
    """Writes the mask preset's training list (see above) to ``path``."""
    found = domains(os.path.dirname(os.path.abspath(path)))
    paths = (found["duts"][3]["half1"] + found["pets"][3]["half1"] + found["imagenet"][3]["half1"]
             + found["cub"][3]["train"][:250])
    with open(path, "w") as f:
        f.write("".join(os.path.abspath(p) + "\n" for p in paths))
    print(f"{len(paths)} images -> {path}")


def mask_preset(path="runs/general_masks/masks.keras"):
    """Writes ``general_masks_lite0`` from its fit-masks run, its threshold the best per-image IoU on DUTS half1's
    masks (held out from scoring: half2)."""
    model = load_model(path)
    result, _ = evaluate(model, held_out("masks", os.path.join(SHARED, "DUTS-TE_dev500"), "half1"),
                         max_box_acc=False, stored_threshold=None)
    model.threshold.assign(result["per_image_iou_threshold"])
    real = (REAL, os.path.join(SHARED, REAL)) if os.path.exists(os.path.join(SHARED, REAL)) else None
    out = save_mask_preset(
        model, "general_masks_lite0", "general_routed_lite0", real_image=real,
        trained_on="a fit-masks decoder on general_routed_lite0, self-trained on 975 unlabeled images: "
                   "DUTS-TE_dev500 half1 250, oxford_pets_dev half1 150, ILSVRC_val_dev half1 325, CUB train 250",
        command="python benchmarks/make_presets.py --masks-list runs/lists/general_masks.txt; c2am-tf fit-masks "
                "--preset general_routed_lite0 --images runs/lists/general_masks.txt --rounds 2 --epochs 6 --out "
                "runs/general_masks; python benchmarks/make_presets.py general_masks_lite0",
        threshold_from="DUTS-TE_dev500 half1 masks, the best per-image IoU (held out from scoring: half2)")
    print(f"general_masks_lite0: threshold {float(model.threshold.numpy()):.2f}, refinement {model.refinement} "
          f"-> {out} ({os.path.getsize(out)} bytes)")


def main(names=(), from_shipped=False):
    """Writes the presets (all, or those in ``names``) and prints their thresholds; ``from_shipped``: each head
    from the shipped preset of that name instead of its run."""
    plans = [
        ("general_lite0", "runs/general_half1/final.keras", [("imagenet", os.path.join(SHARED, "ILSVRC_val_dev"), "half1")],
         "every unlabeled image of the development data except the CUB test split and ImageNet val half2 "
         "(CUB train 750, DUTS-TE_dev500 500, oxford_pets_dev 300, ILSVRC_val_dev half1 325)",
         "python train/fit.py --dataset folder --data-dir runs/lists/general_half1.txt --out runs/general_half1 "
         "--eval-every 0 --init-preset none (list: python benchmarks/imagenet_dev.py --lists-only); python benchmarks/make_presets.py"),
        ("cub_lite0", "runs/cub_lite0/final.keras", [("cub", CUB, "train")],
         "CUB_200_2011_dev train (750 images, classes 001-025)",
         "c2am-tf fit --dataset cub --data-dir CUB_200_2011 --out runs/cub_lite0 (classes 001-025 only); "
         "python benchmarks/make_presets.py"),
        ("general_routed_lite0", "runs/general_routed_votes/routed.keras",
         [("imagenet", os.path.join(SHARED, "ILSVRC_val_dev"), "half1"), ("cub", CUB, "train")],
         "general_lite0 (its head for most images) + a head trained on the bird cluster (712 images) of 3 k-means "
         "clusters of general_lite0's 1,875 training images, for the images nearest that cluster or whose 5 best "
         "ImageNet classes include one of its training images' top classes",
         "python -m c2am_tf fit-routed --preset general_lite0 --dataset folder --data-dir runs/lists/general_half1.txt "
         "--clusters 3 --own 1 --class-votes 5 --out runs/general_routed_votes; "
         "python benchmarks/make_presets.py general_routed_lite0"),
    ]
    unknown = set(names) - {plan[0] for plan in plans} - {"general_masks_lite0"}
    if unknown:
        sys.exit(f"unknown preset(s) {sorted(unknown)}")
    if "general_masks_lite0" in names or not names:
        mask_preset()
    for name, path, sets, trained_on, command in plans:
        if names and name not in names:
            continue
        model = from_preset(name) if from_shipped else load_model(path)
        model.box_band = BOX_BAND
        batches = itertools.chain(*(held_out(*s) for s in sets))
        if isinstance(model.head, RoutedHead):
            model, found = calibrate_heads(model, batches)
            print(f"{name}: head thresholds {found}")
        else:
            model.threshold.assign(choose_threshold(model, batches))
        where = " + ".join(f"{dataset} {split}" for dataset, _, split in sets)
        real = (REAL, os.path.join(SHARED, REAL)) if os.path.exists(os.path.join(SHARED, REAL)) else None
        out = save_preset(model, name, "efficientnet_lite0", "head", real_image=real, trained_on=trained_on,
                          command=command, threshold_from=f"{where} boxes (held out from scoring)")
        print(f"{name}: threshold {float(model.threshold.numpy()):.2f}, box band {BOX_BAND}, polarity {float(model.polarity.numpy()):+.0f} "
              f"-> {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--masks-list"]:
        sys.exit(masks_list(args[1]))
    main([a for a in args if a != "--from-shipped"], "--from-shipped" in args)
