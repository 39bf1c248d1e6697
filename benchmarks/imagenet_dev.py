"""The ImageNet dev benchmark: ILSVRC_val_dev (650 real ImageNet validation images, wsolevaluation layout),
each whole image resized to 224 x 224 (wsolevaluation's frame; one row also at 448); correct = IoU > 0.5
with ANY GT box.

    python benchmarks/imagenet_dev.py               # trains what runs/ lacks, then prints every number
    python benchmarks/imagenet_dev.py --lists-only  # writes the general heads' training lists and stops
    python benchmarks/imagenet_dev.py --presets-only  # the shipped presets on ImageNet half2 and CUB dev test
    python benchmarks/imagenet_dev.py --routed half1 general_routed_lite0 runs/r1s2/routed.keras ...
        # routed models trained with half1's images (e.g. training seeds), alone and averaged, scored on half2
    python benchmarks/imagenet_dev.py --why half1 general_routed_lite0  # where the recipe fails on half2

Rows: fixed boxes (whole image, central 80%), DDT on the Lite0 head features, the untrained model, the
CUB-trained model as is, then the general heads (2-fold: each is trained on the unlabeled images of
../shared/data except CUB test and one ImageNet half, and scored on the other half; its threshold is chosen
on the boxes of the half it trained on, never on the scored half), Top-1/Top-5 Loc with the Lite0 ImageNet
classifier, MaxBoxAccV2, multi-scale maps, that classifier's own CAM and C2AM's map fused with it
(``evaluate(cam_weight=)``, weight and threshold chosen on the training half), and the PSOL route (a
regressor trained on the general head's pseudo boxes).
Also: evaluate's images/s against the bare forward pass.
"""

import argparse
import glob
import hashlib
import os
import sys
import time

import numpy as np
from machine import header

from c2am_tf import data
from c2am_tf.backbones import build_backbone, efficientnet_lite
from c2am_tf.evaluation.ddt import DDT
from c2am_tf.evaluation.evaluate import Evaluation, choose_threshold, evaluate, evaluate_regressor
from c2am_tf.inference.maps import localization_maps, predict_maps, top_k_classes
from c2am_tf.maps.boxes import box_iou
from c2am_tf.maps.geometry import EVAL_FRAMES
from c2am_tf.models.c2am.model import C2AM
from c2am_tf.presets import load_model, load_named
from c2am_tf.training.trainer import TrainConfig, run_training

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
HALVES = ("half1", "half2")
OTHER = {"half1": "half2", "half2": "half1"}


def training_list(half, out_dir):
    """Writes the general head's training list for ImageNet ``half``: CUB train, DUTS-TE_dev500, pets, that half."""
    cub = [r[0] for r in data.cub_records(os.path.join(SHARED, "CUB_200_2011_dev"), "train")]
    duts = sorted(glob.glob(os.path.join(SHARED, "DUTS-TE_dev500", "**", "*.jpg"), recursive=True))
    pets = sorted(glob.glob(os.path.join(SHARED, "oxford_pets_dev", "images", "*.jpg")))
    inet = [r[0] for r in data.wsol_records(os.path.join(SHARED, "ILSVRC_val_dev"), half)]
    path = os.path.join(out_dir, "lists", f"general_{half}.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(os.path.abspath(p) for p in cub + duts + pets + inet) + "\n")
    return path, len(cub + duts + pets + inet)


def general_head(half, runs):
    """The general head trained with ImageNet ``half`` (trained here when runs/ lacks it)."""
    path = os.path.join(runs, f"general_{half}", "final.keras")
    if not os.path.exists(path):
        images, count = training_list(half, runs)
        print(f"training general_{half} on {count} images ({images})", flush=True)
        run_training(TrainConfig(dataset="folder", data_dir=images, out=os.path.dirname(path), eval_every=0,
                                 verbose=2))
    return load_model(path)


def eval_batches(split, batch_size=16, frame="whole224", cache=True):
    return data.eval_dataset("imagenet", split, os.path.join(SHARED, "ILSVRC_val_dev"), batch_size, frame, cache)


def fixed_and_ddt(batches, classifier, backbone):
    """Rows for the fixed boxes and DDT (fit on these images, as a transductive baseline)."""
    crop = EVAL_FRAMES["whole224"][1]
    fixed = {"whole image": Evaluation([0.5], max_box_acc=False), "central 80%": Evaluation([0.5], max_box_acc=False)}
    ddt, feats, cached = DDT(), [], []
    for batch in batches:
        images = batch["image"]
        host = {"boxes": batch["boxes"].numpy()}
        top = top_k_classes(classifier, images, 224)
        labels = batch["label"].numpy()
        n = len(labels)
        for name, m in (("whole image", 0.0), ("central 80%", 0.1 * crop)):
            fixed[name].update_boxes(np.tile([[[m, m, crop - m, crop - m]]], (n, 1, 1)), host, top, labels)
        f = backbone.predict_on_batch(images)
        ddt.update(f)
        feats.append(f)
        cached.append((host, top, labels))
    ddt.fit()
    maps = [ddt.project(f) for f in feats]
    ddt.orient(np.concatenate(maps))
    ev = Evaluation([0.5], max_box_acc=False)
    for f, (host, top, labels) in zip(feats, cached):
        boxes = np.stack([DDT.box(m, crop) for m in ddt.project(f)])[:, None, :]
        ev.update_boxes(boxes, host, top, labels)
    return {**{k: v.result() for k, v in fixed.items()}, "DDT (Lite0 head features, fit on these images)": ev.result()}


CAM_WEIGHTS = (0.25, 0.5, 0.75)
SCALES = (1.0, 192 / 224, 256 / 224)  # multi-scale maps: 224, 192 and 256 px, on the 224 map's grid


def held_out(model, half, classifier, cam_weight=0.0, scales=(1.0,)):
    """Scores ``model`` on the other half at the threshold chosen on ``half``: (train-half best, result)."""
    kw = dict(classifier=classifier, classifier_size=224, cam_weight=cam_weight, scales=scales)
    train, _ = evaluate(model, eval_batches(half), max_box_acc=False, stored_threshold=None, **kw)
    r, _ = evaluate(model, eval_batches(OTHER[half]), stored_threshold=train["best_threshold"], **kw)
    return train["best"], at_stored(r)


def at_stored(r):
    """A result whose best / Top-k figures are those at its stored (held-out) threshold, for ``row``."""
    return {**r, "best": r["at_stored"], "top1_loc": r["top1_loc_at_stored"], "top5_loc": r["top5_loc_at_stored"]}


def lever_rows(heads, classifier):
    """Multi-scale maps, the classifier's own CAM of the true class, and C2AM's map fused with it
    (``evaluate(cam_weight=)``): the weight and every threshold chosen on the half the head trained on."""
    multi = [held_out(heads[h], h, classifier, scales=SCALES)[1] for h in HALVES]
    print(row("general heads, multi-scale maps (224, 192, 256 px), 2-fold (held-out thresholds)", mean_rows(multi)))
    cam = [held_out(heads[h], h, classifier, 1.0)[1] for h in HALVES]
    print(row("CAM of the Lite0 classifier alone (true class, 7 x 7), 2-fold (held-out thresholds)",
              mean_rows(cam)), flush=True)
    for scales, name in (((1.0,), ""), (SCALES, ", multi-scale maps")):
        fused, chosen = [], []
        for h in HALVES:
            tried = {w: held_out(heads[h], h, classifier, w, scales) for w in CAM_WEIGHTS}
            w = max(tried, key=lambda k: tried[k][0])
            fused.append(tried[w][1])
            chosen.append(w)
        print(row(f"general heads fused with the CAM{name} (weights {chosen[0]} / {chosen[1]} and thresholds from "
                  "the training half), 2-fold", mean_rows(fused)), flush=True)


def row(name, r, key="best"):
    """One table row: GT-known (at ``key``), Top-1 / Top-5 Loc, MaxBoxAccV2."""
    gt = r[key]
    top1 = r.get("top1_loc_at_stored" if key == "at_stored" else "top1_loc", float("nan"))
    top5 = r.get("top5_loc_at_stored" if key == "at_stored" else "top5_loc", float("nan"))
    v2 = r.get("max_box_acc_v2", float("nan"))
    return f"| {name} | {gt:.1f} | {top1:.1f} | {top5:.1f} | {v2:.1f} |"


def mean_rows(results):
    """Averages the two folds' results (equal halves)."""
    keys = set.intersection(*(set(k for k, v in r.items() if isinstance(v, float)) for r in results))
    return {k: float(np.mean([r[k] for r in results])) for k in keys}


def preset_rows(names=("general_lite0", "general_routed_lite0", "cub_lite0")):
    """The shipped presets, none of which saw ImageNet half2 or CUB test: ImageNet half2 at each stored
    threshold (Top-k with the Lite0 classifier), CUB dev test at it, at its best and at CUB train's best."""
    from c2am_tf.presets import from_preset

    classifier = efficientnet_lite("efficientnet_lite0", include_top=True)
    cub_dir = os.path.join(SHARED, "CUB_200_2011_dev")
    print("| preset | ImageNet half2: GT-known / Top-1 / Top-5 Loc / MaxBoxAccV2 | CUB test at the stored threshold / "
          "best | CUB test, threshold from CUB train |\n|---|---|---|---|")
    for name in names:
        model = from_preset(name)
        r, _ = evaluate(model, eval_batches("half2"), classifier=classifier, classifier_size=224)
        cub, _ = evaluate(model, data.eval_dataset("cub", "test", cub_dir), max_box_acc=False)
        train = choose_threshold(model, data.eval_dataset("cub", "train", cub_dir))
        at_train = cub["per_threshold"][int(np.argmin(np.abs(np.asarray(cub["thresholds"]) - train)))]
        print(f"| {name} (threshold {r['stored_threshold']:.2f}) | {r['at_stored']:.1f} / "
              f"{r['top1_loc_at_stored']:.1f} / {r['top5_loc_at_stored']:.1f} / {r['max_box_acc_v2']:.1f} | "
              f"{cub['at_stored']:.1f} / {cub['best']:.1f} | {at_train:.1f} ({train:.2f}) |", flush=True)


class CachedMaps:
    """A model whose maps are kept per input batch, so that scoring it alone and in ``AveragedMaps`` runs
    its forward passes once."""

    def __init__(self, model):
        self.model, self.maps = model, {}
        self.box_band = getattr(model, "box_band", 0.0)

    def predict_on_batch(self, images):
        x = np.asarray(images)
        key = (x.shape, hashlib.sha1(x.tobytes()).hexdigest())
        if key not in self.maps:
            self.maps[key] = np.asarray(self.model.predict_on_batch(images))
        return self.maps[key]


class AveragedMaps:
    """Several models' maps averaged (an ensemble of training runs), for ``evaluate``."""

    def __init__(self, models):
        self.models = models
        self.box_band = getattr(models[0], "box_band", 0.0)

    def predict_on_batch(self, images):
        return np.mean([m.predict_on_batch(images) for m in self.models], axis=0)


def routed_rows(half, names, weights=(0.5, 0.75)):
    """The shipped ImageNet recipe (multi-scale maps fused with the Lite0 CAM; the weight among ``weights``
    and the threshold chosen on ``half``) for each of ``names`` (presets or .keras files, trained with
    ``half``'s images) and for their maps averaged, scored on the other half."""
    classifier = efficientnet_lite("efficientnet_lite0", include_top=True)
    models = [CachedMaps(load_named(n)) for n in names]
    candidates = [(n, m) for n, m in zip(names, models)]
    if len(models) > 1:
        candidates.append((f"the {len(models)} maps averaged", AveragedMaps(models)))
    print(f"| trained with {half}, scored on {OTHER[half]} | weight (train-half GT-known per weight) | GT-known Loc | "
          "Top-1 Loc | Top-5 Loc | MaxBoxAccV2 |\n|---|---|---|---|---|---|")
    for name, model in candidates:
        tried = {w: held_out(model, half, classifier, w, SCALES) for w in weights}
        w = max(tried, key=lambda k: tried[k][0])
        r = tried[w][1]
        print(f"| {name} | {w} ({' / '.join(f'{tried[k][0]:.2f}' for k in weights)}) | {r['best']:.2f} | "
              f"{r['top1_loc']:.2f} | {r['top5_loc']:.2f} | {r['max_box_acc_v2']:.2f} |", flush=True)


def per_image(model, split, classifier, cam_weight, scales=SCALES):
    """(correct (N, T) per image and threshold, GT boxes, predicted boxes (N, T, 4)) of the recipe's boxes:
    ``model``'s maps at ``scales`` fused with the classifier's CAM of the true class."""
    ev = Evaluation(max_box_acc=False, band=getattr(model, "box_band", 0.0))
    ok, gts, preds = [], [], []
    for batch in eval_batches(split):
        labels = batch["label"].numpy()
        maps, top = localization_maps(model, batch["image"], classifier, 224, cam_weight, labels, False, scales)
        host = {"image": batch["image"].numpy(), "boxes": batch["boxes"].numpy()}
        boxes = ev.update(maps, host, top, labels)
        ok.extend(ev.gt_known.per_image_correct(boxes, host["boxes"]))
        gts.extend(np.unique(g, axis=0) for g in host["boxes"])  # padding repeats a real box
        preds.extend(boxes)
    return np.array(ok), gts, np.array(preds), np.asarray(ev.thresholds)


def failure_rows(half, name, cam_weight=0.5):
    """Where the recipe fails: ``name`` (trained with ``half``'s images) scored on the other half at the
    threshold chosen on ``half``, by the number of GT boxes and by the largest GT box's share of the image,
    with what a threshold chosen per image (an oracle) would reach."""
    classifier = efficientnet_lite("efficientnet_lite0", include_top=True)
    model = load_named(name)
    train, _, _, thresholds = per_image(model, half, classifier, cam_weight)
    t = int(np.argmax(train.mean(axis=0)))
    ok, gts, preds, _ = per_image(model, OTHER[half], classifier, cam_weight)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    hit, oracle = ok[:, t], ok.any(axis=1)
    count = np.array([len(g) for g in gts])
    largest = np.array([area(g).max() for g in gts])
    share = largest / 224 ** 2
    print(f"{name}, weight {cam_weight}, threshold {thresholds[t]:.2f} from {half}: {OTHER[half]} GT-known "
          f"{hit.mean() * 100:.1f}, a threshold chosen per image (oracle) {oracle.mean() * 100:.1f}")
    print(f"| {OTHER[half]} images | count | GT-known Loc | oracle threshold |\n|---|---|---|---|")
    groups = [("one GT box", count == 1), ("2-3 GT boxes", (count >= 2) & (count <= 3)), ("4+ GT boxes", count >= 4)]
    groups += [(f"largest GT box {lo:.0%}-{min(hi, 1):.0%} of the image", (share >= lo) & (share < hi))
               for lo, hi in ((0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.01))]
    for label, sel in groups:
        print(f"| {label} | {sel.sum()} | {hit[sel].mean() * 100:.1f} | {oracle[sel].mean() * 100:.1f} |")
    box = area(preds[:, t])
    miss = ~hit
    print(f"misses {miss.sum()}: box over 1.2x the largest GT box {(miss & (box > 1.2 * largest)).sum()} "
          f"({(miss & (box > 1.2 * largest) & (count > 1)).sum()} of them with several GT boxes), under 1/1.2x "
          f"{(miss & (box < largest / 1.2)).sum()}")
    union = np.array([[g[:, 0].min(), g[:, 1].min(), g[:, 2].max(), g[:, 3].max()] for g in gts])
    group = miss & (count > 1) & (box_iou(preds[:, t], union) > 0.5)
    print(f"misses with several GT boxes whose box matches the box around all of them (IoU > 0.5): {group.sum()}")


def main():
    """Prints the benchmark's table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs", help="where the trained heads are (or will be) kept")
    p.add_argument("--cub-model", default="runs/cub_lite0/final.keras", help="the CUB-trained model (as is)")
    p.add_argument("--lists-only", action="store_true")
    p.add_argument("--speed-only", action="store_true", help="only evaluate's speed against the forward pass")
    p.add_argument("--presets-only", action="store_true", help="only the shipped presets (ImageNet half2, CUB test)")
    p.add_argument("--routed", nargs="+", metavar=("HALF", "MODEL"),
                   help="only routed models trained with HALF's images, alone and averaged (see routed_rows)")
    p.add_argument("--why", nargs=2, metavar=("HALF", "MODEL"),
                   help="only where MODEL (trained with HALF's images) fails on the other half (see failure_rows)")
    p.add_argument("--skip-psol", action="store_true")
    p.add_argument("--psol-epochs", type=int, default=6)
    p.add_argument("--levers", nargs="*", default=[],
                   help="other heads trained with half1 (e.g. another backbone), scored on half2 beside general_half1")
    args = p.parse_args()
    if not os.path.isdir(os.path.join(SHARED, "ILSVRC_val_dev")):
        sys.exit(f"ILSVRC_val_dev not found under {SHARED}")
    if args.lists_only:
        for half in HALVES:
            print(*training_list(half, args.runs))
        return
    print(header()[0], flush=True)
    if args.speed_only:
        speed(general_head("half1", args.runs))
        return
    if args.presets_only:
        preset_rows()
        return
    if args.routed:
        if args.routed[0] not in HALVES or len(args.routed) < 2:
            p.error(f"--routed HALF MODEL [MODEL ...]: HALF is one of {', '.join(HALVES)}")
        routed_rows(args.routed[0], args.routed[1:])
        return
    if args.why:
        if args.why[0] not in HALVES:
            p.error(f"--why HALF MODEL: HALF is one of {', '.join(HALVES)}")
        failure_rows(*args.why)
        return
    classifier = efficientnet_lite("efficientnet_lite0", include_top=True)
    print("| method | GT-known Loc | Top-1 Loc | Top-5 Loc | MaxBoxAccV2 |\n|---|---|---|---|---|")
    backbone = build_backbone("efficientnet_lite0", features="head")
    for name, r in fixed_and_ddt(eval_batches("test"), classifier, backbone).items():
        print(row(name, r), flush=True)
    classified = r
    r = None
    for polarity, name in ((1.0, "as is"), (-1.0, "inverted")):
        untrained = C2AM(backbone)
        untrained.polarity.assign(polarity)
        r, _ = evaluate(untrained, eval_batches("test"), classifier=classifier, classifier_size=224,
                        stored_threshold=None)
        print(row(f"untrained model (random head, map {name}), best threshold", r), flush=True)
    if os.path.exists(args.cub_model):
        cub = load_model(args.cub_model)
        r, _ = evaluate(cub, eval_batches("test"), classifier=classifier, classifier_size=224)
        print(row(f"CUB dev model as is, stored threshold {r['stored_threshold']:.2f}", r, "at_stored"))
        print(row("CUB dev model as is, best threshold", r), flush=True)
    folds, oracle, heads = [], [], {}
    for half in HALVES:
        model = general_head(half, args.runs)
        # the boxes of the half the head trained on: never the scored half's
        model.threshold.assign(choose_threshold(model, eval_batches(half)))
        r, _ = evaluate(model, eval_batches(OTHER[half]), classifier=classifier, classifier_size=224)
        print(row(f"general head trained with {half}, scored on {OTHER[half]}, threshold "
                  f"{r['stored_threshold']:.2f} from {half}", r, "at_stored"), flush=True)
        folds.append(at_stored(r))
        oracle.append(r)
        heads[half] = model
    print(row("general heads, 2-fold mean (held-out thresholds)", mean_rows(folds)))
    print(row("general heads, 2-fold mean (best threshold on the scored half)", mean_rows(oracle)))
    lever_rows(heads, classifier)
    at448 = [evaluate(heads[h], eval_batches(OTHER[h], frame="whole448"), classifier=classifier,
                      classifier_size=224, max_box_acc=False)[0] for h in HALVES]
    print(row("general heads scored at 448 (frame whole448), 2-fold mean (best threshold)", mean_rows(at448)))
    flip = [evaluate(heads[h], eval_batches(OTHER[h]), classifier=classifier, classifier_size=224, flip=True,
                     max_box_acc=False)[0] for h in HALVES]
    print(row("general heads + flip-averaged maps, 2-fold mean (held-out thresholds)",
              mean_rows([at_stored(r) for r in flip])), flush=True)
    print(f"classifier alone (Lite0 ImageNet, 224, all {classified['total']} images): top-1 "
          f"{classified['top1']:.1f}, top-5 {classified['top5']:.1f}")
    for path in args.levers:
        model = load_model(path)
        model.threshold.assign(choose_threshold(model, eval_batches("half1")))
        r, _ = evaluate(model, eval_batches("half2"), classifier=classifier, classifier_size=224)
        print(row(f"{path}, scored on half2, threshold {r['stored_threshold']:.2f} from half1", r, "at_stored"))
        print(row(f"{path}, scored on half2, best threshold", r), flush=True)
    speed(heads["half1"])
    if not args.skip_psol:
        psol(heads["half1"], args, classifier)


def speed(model, repeats=3):
    """evaluate's images/s (decoding, metrics, MaxBoxAccV2 included) against the bare forward pass.

    Every batch shape is traced before the clock starts (the last, partial batch retraces), and each
    figure is the best of ``repeats`` runs, taken in turns, so that neither side pays the warm-up.
    """
    batches = [b["image"] for b in eval_batches("half2")]
    n = sum(int(b.shape[0]) for b in batches)
    for images in batches:
        predict_maps(model, images)
    best = {"forward": 0.0, True: 0.0, False: 0.0}
    for _ in range(repeats):
        start = time.perf_counter()
        for images in batches:
            predict_maps(model, images)
        best["forward"] = max(best["forward"], n / (time.perf_counter() - start))
        for with_v2 in (True, False):
            data_batches = eval_batches("half2", cache=False)  # the file list is checked once, before the clock
            start = time.perf_counter()
            evaluate(model, data_batches, max_box_acc=with_v2)  # decoding included
            best[with_v2] = max(best[with_v2], n / (time.perf_counter() - start))
    for with_v2, what in ((True, "GT-known (19 thresholds) + MaxBoxAccV2 (101 thresholds)"),
                          (False, "GT-known (19 thresholds) only")):
        print(f"speed: bare forward {best['forward']:.1f} img/s; evaluate with {what}, JPEG decoding included: "
              f"{best[with_v2]:.1f} img/s = {100 * best[with_v2] / best['forward']:.0f}% of the forward pass "
              f"(best of {repeats})", flush=True)


def psol(model, args, classifier):
    """Pseudo boxes of general_half1's training images -> regressor -> scored on half2 beside the head's own boxes."""
    import keras

    from c2am_tf.inference.extract import extract_boxes, extraction_header
    from c2am_tf.maps.boxes_json import read_boxes
    from c2am_tf.models.psol.regressor import build_regressor, pseudo_box_dataset
    from c2am_tf.models.settings import model_box_band

    out = os.path.join(args.runs, "psol_half1")
    boxes = os.path.join(out, "pseudo.json")
    if not os.path.exists(boxes):
        os.makedirs(out, exist_ok=True)
        head = os.path.join(out, "head.keras")
        model.save(head)
        threshold, band = float(model.threshold.numpy()), model_box_band(model, None)
        images = data.make_source("folder", "train", os.path.join(args.runs, "lists", "general_half1.txt"))
        extract_boxes(model, images, boxes, extraction_header(head, None, threshold, 224, "folder", "train", band),
                      threshold, 224, band)
    keras.utils.set_random_seed(1)
    backbone = build_backbone("efficientnet_lite0", features="head")
    backbone.trainable = False
    regressor = build_regressor(backbone)
    regressor.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    start = time.perf_counter()
    regressor.fit(pseudo_box_dataset(read_boxes(boxes)["images"], 32), epochs=args.psol_epochs, verbose=2)
    r = evaluate_regressor(regressor, eval_batches("half2"), classifier, 224)
    print(f"PSOL regressor ({args.psol_epochs} epochs, {time.perf_counter() - start:.0f} s) on general_half1's "
          f"pseudo boxes, scored on half2:")
    print(row("PSOL regressor (one box per image)", r))


if __name__ == "__main__":
    main()
