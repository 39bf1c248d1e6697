"""Your own photos, measured per epoch: quality against steps, and how few labelled images choose well (issue 36).

    python benchmarks/few_labels.py [--out runs/few_labels] [--epochs 5] [--draws 50]

Protocol, 2-fold on every dev domain (the halves of ``benchmarks/own_photos.py``): ``fit --dataset folder`` with
its defaults (a warm start from ``general_routed_lite0``'s head for the folder, at lr 1e-4) trains on one half's images. After every epoch (and
for the start, epoch 0) a callback records, for each image of both halves and each of the 19 thresholds, whether
its box is right (GT-known), plus the label-free matched threshold on the first 256 training images.

- **Step curve**: the scored half's GT-known per epoch, at the matched threshold (what ``fit`` keeps without
  labels) and at the best threshold (an oracle).
- **Few labels**: N labelled images drawn from the training half (the user's own folder) choose the epoch (the
  start included), each at its label-free threshold, as ``fit --val-annotations`` does; the choice is scored on
  the other half. Mean and spread over ``--draws``. For comparison, the same images choosing the threshold too
  (among 19), which fit did first.

The presets saw DUTS, pets, CUB train and ImageNet half1 (unlabeled) in their own training (own_photos.py says
where), so on these domains a run adapts a head to images its start has already seen. ``--leave-out`` measures
adaptation to a kind of image the start never saw: for each domain a general head is trained as
``general_lite0`` was (from scratch, lr 1e-3, 5 epochs) on the presets' training images of the *other* domains,
its threshold chosen on held-out boxes of another domain (ImageNet half1; DUTS half1 when ImageNet is left out),
and each fold starts from it (``fit --init-preset OUT/without_<domain>/start.keras``).

    python benchmarks/few_labels.py --leave-out --out runs/few_labels_lodo [--lr 1e-4] [--scored-only]
    python benchmarks/few_labels.py --leave-out --out runs/few_labels_lodo --blend 0 0.5 1   # after the runs
    python benchmarks/few_labels.py --leave-out --out runs/lodo80 --images 80 --scored-only   # small folders
    python benchmarks/few_labels.py --out runs/few_labels --paired [--against general_routed_lite0 | OTHER_OUT]

Prints tables; writes OUT/per_image.npz and OUT/results.json.
"""

import argparse
import json
import math
import os
import time

import keras
import numpy as np
from machine import header
from own_photos import domains

from c2am_tf import data
from c2am_tf.evaluation.evaluate import Evaluation, choose_threshold
from c2am_tf.inference.maps import localization_maps
from c2am_tf.maps.foreground import DEFAULT_THRESHOLDS, foreground_mask, label_free_threshold, matched_threshold
from c2am_tf.maps.normalize import min_max_normalized
from c2am_tf.models.settings import model_box_band
from c2am_tf.presets import load_model, load_named
from c2am_tf.training.run_folder import save_atomically
from c2am_tf.training.trainer import (
    TrainConfig,
    build_model,
    choose_start,
    reference_images,
    run_training,
    training_maps,
)

COUNTS = (5, 10, 25, 50)


def grid_index(threshold):
    """The index in ``DEFAULT_THRESHOLDS`` (the thresholds every verdict is stored at) nearest ``threshold``."""
    return int(np.argmin(abs(np.asarray(DEFAULT_THRESHOLDS) - float(threshold))))


def per_image_correct(model, batches):
    """(N, T) bool: each image's GT-known verdict at each of ``DEFAULT_THRESHOLDS`` (the library's own boxing)."""
    ev = Evaluation(DEFAULT_THRESHOLDS, None, max_box_acc=False, band=model_box_band(model))
    rows = []
    for batch in batches:
        maps, _ = localization_maps(model, batch["image"])
        host = {"image": batch["image"].numpy(), "boxes": batch["boxes"].numpy().astype(np.float32)}
        boxes = ev.update(maps, host)
        rows.append(ev.gt_known.per_image_correct(boxes, host["boxes"]))
    return np.concatenate(rows)


class EpochRecorder(keras.callbacks.Callback):
    """Per-image verdicts on both halves and the matched threshold, for the start and after every epoch."""

    def __init__(self, halves, reference):
        super().__init__()
        self.halves, self.reference = halves, reference
        self.correct = {h: [] for h in halves}
        self.matched = []

    def record(self):
        images, start_maps, start_threshold = self.reference
        # fit's label-free threshold (runs recorded before it capped the match at the start's hold the match alone)
        self.matched.append(label_free_threshold(start_maps, start_threshold, training_maps(self.model, images)))
        for half, batches in self.halves.items():
            self.correct[half].append(per_image_correct(self.model, batches))

    def on_train_begin(self, logs=None):
        self.record()

    def on_epoch_end(self, epoch, logs=None):
        self.record()


def choose(train_correct, idx, thresholds):
    """(epoch, threshold index) ``fit --val-annotations`` keeps on images ``idx``: the start (epoch 0, at its own
    threshold) or an epoch (at its label-free threshold), whichever gets most images right; a tie goes to the
    later epoch. ``thresholds``: the threshold index of each epoch."""
    counts = [train_correct[e][idx][:, thresholds[e]].sum() for e in range(len(thresholds))]
    epoch = max(range(len(counts)), key=lambda e: (counts[e], e))
    return epoch, thresholds[epoch]


def choose_any_threshold(train_correct, idx):
    """(epoch, threshold index) with the most images right among every epoch and all 19 thresholds (the start on a
    tie, then the earliest epoch, then the lowest threshold): the rule fit used first, kept for comparison."""
    scores = train_correct[:, idx, :].mean(axis=1)  # (E + 1, T)
    best_per_epoch = scores.max(axis=1)
    trained = 1 + int(np.argmax(best_per_epoch[1:]))
    epoch = trained if best_per_epoch[trained] > best_per_epoch[0] else 0
    return epoch, int(np.argmax(scores[epoch]))


class HeadAverage(keras.callbacks.Callback):
    """An exponential moving average of the head's weights (BatchNorm statistics included) over the run's steps,
    its horizon ``fraction`` of them, put in place of the head's own weights at the end of the last epoch (before
    the recorder scores it): averaging the last steps' iterates smooths the noise of small batches (Polyak)."""

    def __init__(self, fraction):
        super().__init__()
        self.fraction = fraction

    def on_train_begin(self, logs=None):
        self.epochs = self.params["epochs"]
        self.momentum = 1.0 - 1.0 / max(self.fraction * self.params["steps"] * self.epochs, 1.0)
        self.average = [v.numpy().astype(np.float64) for v in self.model.head.weights]

    def on_train_batch_end(self, batch, logs=None):
        m = self.momentum
        for a, v in zip(self.average, self.model.head.weights):
            a *= m
            a += (1 - m) * v.numpy()

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            for a, v in zip(self.average, self.model.head.weights):
                v.assign(a.astype(v.dtype))


PRESET_HALVES = {"duts": ("half1", "half2"), "pets": ("half1", "half2"), "cub": ("train",), "imagenet": ("half1",)}


def start_without(name, all_domains, out):
    """A general head that never saw domain ``name``: trained as ``general_lite0`` was, on the presets' training
    images (``PRESET_HALVES``) of the other domains, its threshold chosen on another domain's held-out boxes.
    Returns the path of the calibrated model (kept: a second call reads it)."""
    path = os.path.join(out, f"without_{name}", "start.keras")
    if os.path.exists(path):
        return path
    listing = os.path.join(out, f"without_{name}.txt")
    with open(listing, "w") as f:
        for other, (_, _, _, paths) in all_domains.items():
            if other != name:
                f.write("".join(os.path.abspath(x) + "\n" for h in PRESET_HALVES[other] for x in paths[h]))
    keras.backend.clear_session()
    cfg = TrainConfig(dataset="folder", data_dir=listing, init_preset="none", lr=1e-3, eval_every=0, verbose=0,
                      out=os.path.join(out, f"without_{name}"))
    t0 = time.perf_counter()
    model, _, summary = run_training(cfg, overwrite=True)
    held = "duts" if name == "imagenet" else "imagenet"
    dataset, root, _, _ = all_domains[held]
    model.threshold.assign(choose_threshold(model, data.eval_dataset(dataset, "half1", root)))
    save_atomically(model, path)
    print(f"start without {name}: {summary['epochs']} x {summary['steps_per_epoch']} steps, threshold "
          f"{float(model.threshold.numpy()):.2f} from {held} half1's boxes, {time.perf_counter() - t0:.0f} s",
          flush=True)
    return path


def finished_folds(args, all_domains, store=None):
    """Each finished fold of ``args.out`` (its run's ``final.keras`` there; with ``store``, its per-image verdicts
    recorded too): (domain, its dataset and folder, the half trained on, the half scored, the reference images,
    the start as a model, its maps of them, its threshold, the trained model). What ``--blend`` and ``--rules``
    read, without training again."""
    for name, (dataset, root, halves, _) in all_domains.items():
        if name not in args.domains:
            continue
        start = os.path.join(args.out, f"without_{name}", "start.keras") if args.leave_out else "auto"
        for train_half, scored in (halves, halves[::-1]):
            run = os.path.join(args.out, f"{name}_{train_half}")
            recorded = store is None or f"{name}/{train_half}/{scored}" in store
            if not recorded or not os.path.exists(os.path.join(run, "final.keras")):
                continue
            keras.backend.clear_session()
            cfg = TrainConfig(dataset="folder", data_dir=os.path.join(args.out, f"{name}_{train_half}.txt"),
                              init_preset=start, lr=args.lr, out=run, **dict(args.set)).validate()
            images = reference_images(cfg)
            model = build_model(cfg, 1, choose_start(cfg, images)[0])
            yield (name, dataset, root, train_half, scored, images, model, training_maps(model, images),
                   float(model.threshold.numpy()), load_model(os.path.join(run, "final.keras")))


def blend_scores(args, all_domains, alphas):
    """Each finished fold's trained head blended with its start, ``alpha * trained + (1 - alpha) * start`` (weight
    averaging, as WiSE-FT does for fine-tuned networks), scored on the other half at fit's label-free threshold
    and at the best (oracle). Prints one row per fold."""
    print("\n## Blends of the trained head with its start: GT-known on the other half at the label-free threshold / "
          "the best (oracle)")
    print("| domain | trained on | " + " | ".join(f"alpha {a:g}" for a in alphas) + " |")
    print("|---|---|" + "---|" * len(alphas))
    rows = []
    for name, dataset, root, train_half, scored, images, model, start_maps, start_threshold, trained in \
            finished_folds(args, all_domains):
        begin = [v.numpy() for v in model.head.weights]
        end = [v.numpy() for v in trained.head.weights]
        batches = data.eval_dataset(dataset, scored, root)
        row = []
        for a in alphas:
            for v, b, e in zip(model.head.weights, begin, end):
                v.assign((1 - a) * b + a * e)
            chosen = label_free_threshold(start_maps, start_threshold, training_maps(model, images))
            correct = per_image_correct(model, batches).mean(axis=0) * 100
            row.append((correct[grid_index(chosen)], correct.max()))
        rows.append(row)
        print(f"| {name} | {train_half} | " + " | ".join(f"{m:.1f} / {o:.1f}" for m, o in row) + " |", flush=True)
    print("| mean | | " + " | ".join(f"{np.mean([r[k][0] for r in rows]):.1f} / {np.mean([r[k][1] for r in rows]):.1f}"
                                    for k in range(len(alphas))) + " |")


def otsu(maps, bins=64):
    """Otsu's threshold of every pixel of ``maps`` (normalized to [0, 1]): the cut that best splits them in two."""
    hist, edges = np.histogram(np.concatenate([np.ravel(m) for m in maps]), bins=bins, range=(0, 1))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0, mu = np.cumsum(p), np.cumsum(p * centres)
    between = (mu[-1] * w0 - mu) ** 2 / np.maximum(w0 * (1 - w0), 1e-12)
    return float(edges[1:][int(np.argmax(between))])


def feature_split_threshold(model, images, thresholds=DEFAULT_THRESHOLDS):
    """The threshold whose cut of each map best splits the image's own backbone features in two (Otsu's criterion
    in feature space): the share of the features' variance between the region above the cut and the rest, averaged
    over ``images``. Needs no boxes, and no start: what the map's region means is read from the features."""
    scores = np.zeros(len(thresholds))
    for i in range(0, len(images), 32):
        _, _, _, z = model.features(images[i:i + 32])
        z = np.asarray(z, np.float64)  # (B, h, w, C)
        maps = min_max_normalized(np.asarray(model(images[i:i + 32]))[..., 0])
        for feats, m in zip(z, maps):
            f = feats.reshape(-1, feats.shape[-1])
            # unit length: on raw features a few cells of large norm decided the split
            f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
            total = ((f - f.mean(0)) ** 2).sum()
            for k, t in enumerate(thresholds):
                inside = foreground_mask(m, t).reshape(-1)
                n = inside.sum()
                if 0 < n < inside.size and total > 0:
                    diff = f[inside].mean(0) - f[~inside].mean(0)
                    scores[k] += n * (inside.size - n) / inside.size * (diff ** 2).sum() / total
    return float(thresholds[int(np.argmax(scores))])


def rule_scores(args, all_domains):
    """Label-free threshold rules after the last epoch of each finished fold, scored from the stored per-image
    verdicts: the start's threshold kept, the matched one, the matched one never above the start's (fit's),
    Otsu's on the trained maps of the training images, the mean of matched and Otsu's, and the feature split
    (``feature_split_threshold``); the oracle beside them."""
    store = dict(np.load(os.path.join(args.out, "per_image.npz")))
    names = ("kept", "matched", "matched, never above kept (fit's)", "otsu", "matched+otsu", "feature split")
    print("\n## Label-free threshold rules after the last epoch (GT-known on the other half; threshold in brackets)")
    print("| fold | " + " | ".join(names) + " | oracle |")
    print("|---|" + "---|" * (len(names) + 1))
    rows = []
    for name, _, _, train_half, scored, images, _, start_maps, kept, trained in finished_folds(args, all_domains,
                                                                                            store):
        maps = training_maps(trained, images)
        matched = matched_threshold(start_maps, kept, maps)
        cut = otsu(maps)
        chosen = (kept, matched, label_free_threshold(start_maps, kept, maps), cut, (matched + cut) / 2,
                  feature_split_threshold(trained, images))
        last = store[f"{name}/{train_half}/{scored}"][-1].mean(axis=0) * 100
        row = [(last[grid_index(t)], t) for t in chosen] + [(last.max(), 0)]
        rows.append(row)
        print(f"| {name}/{train_half} | " + " | ".join(f"{v:.1f} ({t:.2f})" for v, t in row[:-1])
              + f" | {row[-1][0]:.1f} |", flush=True)
    print("| mean | " + " | ".join(f"{np.mean([r[k][0] for r in rows]):.1f}" for k in range(len(names) + 1)) + " |")


def sign_test(gained, lost):
    """Two-sided exact sign test: the chance of a split at least this uneven among ``gained + lost`` images that
    changed, were each change a fair coin (training no better or worse than its start).

    >>> round(sign_test(3, 5), 3), sign_test(0, 0)
    (0.727, 1.0)
    """
    n, k = gained + lost, min(gained, lost)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


def verdicts_at(store, key, epoch):
    """(N,) bool: fold ``key``'s verdicts on its scored half after ``epoch`` (0: the start) at fit's label-free
    threshold, the match never above the start's (runs recorded before that cap hold the match alone)."""
    cut = min(float(store[f"{key}/matched"][epoch]), float(store[f"{key}/start_threshold"]))
    return store[f"{key}/{store[f'{key}/scored']}"][epoch, :, grid_index(cut)]


def paired_changes(args, all_domains):
    """The last epoch against its start on the same scored images, each at its label-free threshold, both folds of
    a domain pooled: images turned right, turned wrong, the net change in points and the sign test's p. A net
    change of a point or two is a handful of images: this says whether it could be chance (no training).
    ``args.against`` compares with something else: a shipped preset's name (at its own threshold), or the OUT
    folder of another run of this script (its last epoch, at its label-free threshold)."""
    store = dict(np.load(os.path.join(args.out, "per_image.npz")))
    other = preset = None
    if args.against and os.path.isdir(args.against):
        other = dict(np.load(os.path.join(args.against, "per_image.npz")))
    elif args.against:
        preset = load_named(args.against)
    print(f"\n## The last epoch against {args.against or 'its start'}, image by image (both folds of a domain "
          "pooled; each at its own threshold)")
    print("| domain | images | turned right | turned wrong | net (points) | sign test p |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for name in args.domains:
        gained = lost = total = 0
        for key in sorted(k[:-len("/matched")] for k in store if k.startswith(name + "/") and k.endswith("/matched")):
            now = verdicts_at(store, key, len(store[f"{key}/matched"]) - 1)
            if other is not None:
                if f"{key}/matched" not in other:
                    continue  # a fold the other run did not finish
                before = verdicts_at(other, key, len(other[f"{key}/matched"]) - 1)
            elif preset is not None:
                dataset, root, _, _ = all_domains[name]
                correct = per_image_correct(preset, data.eval_dataset(dataset, str(store[f"{key}/scored"]), root))
                before = correct[:, grid_index(preset.threshold.numpy())]
            else:
                before = verdicts_at(store, key, 0)
            gained += int((~before & now).sum())
            lost += int((before & ~now).sum())
            total += now.size
        if total:
            rows[name] = (total, gained, lost)
            print(f"| {name} | {total} | {gained} | {lost} | {100 * (gained - lost) / total:+.1f} | "
                  f"{sign_test(gained, lost):.2f} |")
    total, gained, lost = (sum(r[i] for r in rows.values()) for i in range(3))
    if total:
        print(f"| all | {total} | {gained} | {lost} | {100 * (gained - lost) / total:+.1f} | "
              f"{sign_test(gained, lost):.2f} |")
    return rows


def setting(text):
    """``FIELD=VALUE`` of ``--set``: a TrainConfig field and its value, of the field's declared type."""
    field, sep, value = text.partition("=")
    if not sep or field not in TrainConfig.__dataclass_fields__:
        raise argparse.ArgumentTypeError(f"{text!r}: want FIELD=VALUE with a TrainConfig field")
    kind = TrainConfig.__dataclass_fields__[field].type
    return field, (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/few_labels")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--draws", type=int, default=50)
    p.add_argument("--domains", nargs="+", default=["duts", "pets", "cub", "imagenet"])
    p.add_argument("--leave-out", action="store_true",
                   help="start each domain's runs from a general head that never saw the domain (see above)")
    p.add_argument("--lr", type=float, help="the runs' learning rate (default: fit's)")
    p.add_argument("--images", type=int, help="train on the first N images of each half only (a small folder)")
    p.add_argument("--scored-only", action="store_true",
                   help="score only the other half after each epoch (no few-label tables; faster)")
    p.add_argument("--blend", type=float, nargs="+", metavar="ALPHA",
                   help="score the finished runs' heads blended with their starts at these weights (no training)")
    p.add_argument("--rules", action="store_true",
                   help="compare label-free threshold rules on the finished runs (no training)")
    p.add_argument("--paired", action="store_true",
                   help="the last epoch against its start, image by image, with a sign test (no training)")
    p.add_argument("--against", metavar="PRESET_OR_OUT",
                   help="with --paired: against a shipped preset, or another run's OUT folder, instead")
    p.add_argument("--average", type=float, metavar="FRACTION",
                   help="score the last epoch with a moving average of the head's weights over this share of the "
                        "run's steps (HeadAverage; a variant to measure)")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", type=setting,
                   help="TrainConfig fields of every run, e.g. batch_groups=8 (a variant to measure)")
    args = p.parse_args()
    if args.against and not args.paired:
        p.error("--against goes with --paired")
    print(header())
    if args.blend:
        return blend_scores(args, domains(args.out), args.blend)
    if args.rules:
        return rule_scores(args, domains(args.out))
    if args.paired:
        return paired_changes(args, domains(args.out))
    os.makedirs(args.out, exist_ok=True)
    store_path = os.path.join(args.out, "per_image.npz")
    store = dict(np.load(store_path)) if os.path.exists(store_path) else {}
    all_domains = domains(args.out)
    for name, (dataset, root, halves, paths) in all_domains.items():
        if name not in args.domains:
            continue
        start = start_without(name, all_domains, args.out) if args.leave_out else "auto"
        for train_half, scored in (halves, halves[::-1]):
            key = f"{name}/{train_half}"
            if f"{key}/matched" in store:
                continue
            keras.backend.clear_session()
            listing = os.path.join(args.out, f"{name}_{train_half}.txt")
            with open(listing, "w") as f:
                f.write("".join(os.path.abspath(x) + "\n" for x in paths[train_half][:args.images]))
            cfg = TrainConfig(dataset="folder", data_dir=listing, epochs=args.epochs, verbose=0, init_preset=start,
                              lr=args.lr, out=os.path.join(args.out, f"{name}_{train_half}"),
                              **dict(args.set)).validate()
            recorded = (scored,) if args.scored_only else (train_half, scored)
            halves_batches = {h: data.eval_dataset(dataset, h, root) for h in recorded}
            images = reference_images(cfg)
            start_model = build_model(cfg, 1, choose_start(cfg, images)[0])  # the run's start
            reference = (images, training_maps(start_model, images), float(start_model.threshold.numpy()))
            recorder = EpochRecorder(halves_batches, reference)
            t0 = time.perf_counter()
            callbacks = [recorder]
            if args.average:  # before the recorder: the last epoch is scored with the averaged head
                callbacks.insert(0, HeadAverage(args.average))
            _, _, summary = run_training(cfg, extra_callbacks=callbacks, overwrite=True)
            print(f"{key}: trained {summary['epochs']} x {summary['steps_per_epoch']} steps in "
                  f"{time.perf_counter() - t0:.0f} s (with per-epoch scoring)", flush=True)
            for h in recorded:
                store[f"{key}/{h}"] = np.stack(recorder.correct[h])  # (E + 1, N, T)
            store[f"{key}/matched"] = np.asarray(recorder.matched)
            store[f"{key}/start_threshold"] = np.asarray(reference[2])
            store[f"{key}/scored"] = np.asarray(scored)
            np.savez(store_path, **store)

    rng = np.random.default_rng(0)
    results = {"step_curve": {}, "few_labels": {}}
    print(f"\n## Step curve: GT-known on the scored half after each epoch (0 = the start, {args.epochs} = the "
          "default run); at the matched threshold / at the best (oracle)")
    print("| domain | trained on | " + " | ".join(f"epoch {e}" for e in range(args.epochs + 1)) + " |")
    print("|---|---|" + "---|" * (args.epochs + 1))
    curves, few = [], {n: [] for n in COUNTS}
    for name in args.domains:
        for key in sorted(k[:-len("/matched")] for k in store if k.startswith(name + "/") and k.endswith("/matched")):
            scored = str(store[f"{key}/scored"])
            train_half = key.split("/")[1]
            test = store[f"{key}/{scored}"].mean(axis=1) * 100  # (E + 1, T)
            matched = store[f"{key}/matched"]
            at_matched = [test[e, grid_index(matched[e])] for e in range(len(matched))]
            curves.append(at_matched)
            results["step_curve"][key] = {"at_matched": at_matched, "best": test.max(axis=1).tolist()}
            print(f"| {name} | {train_half} | " + " | ".join(f"{a:.1f} / {b:.1f}" for a, b in
                                                           zip(at_matched, test.max(axis=1))) + " |")
            if f"{key}/{train_half}" not in store:  # --scored-only
                continue
            train = store[f"{key}/{train_half}"]
            start_threshold = float(store[f"{key}/start_threshold"])
            per_epoch = [grid_index(t) for t in [start_threshold] + list(matched[1:])]
            results["few_labels"][key] = {}
            for n in COUNTS:
                draws = [rng.choice(train.shape[1], n, replace=False) for _ in range(args.draws)]
                picks = [choose(train, idx, per_epoch) for idx in draws]
                values = [test[e, t] for e, t in picks]
                few[n].append(values)
                anywhere = [test[choose_any_threshold(train, idx)] for idx in draws]
                results["few_labels"][key][n] = {"mean": float(np.mean(values)), "sd": float(np.std(values)),
                                                 "kept_start": float(np.mean([e == 0 for e, _ in picks])),
                                                 "any_threshold": float(np.mean(anywhere))}
            results["few_labels"][key]["label_free"] = at_matched[-1]
            results["few_labels"][key]["oracle"] = float(test.max())
    mean_curve = np.mean(curves, axis=0)
    print("| mean | | " + " | ".join(f"{v:.1f}" for v in mean_curve) + " |")
    print("\n## Label-free threshold rules after the last epoch: the start's threshold kept, the matched one, their "
          "mean; the best (oracle)")
    print("| domain / trained on | kept | matched | mean of the two | oracle |")
    print("|---|---|---|---|---|")
    rules = []
    for key in results["step_curve"]:
        scored = str(store[f"{key}/scored"])
        last = store[f"{key}/{scored}"][-1].mean(axis=0) * 100  # (T,)
        kept, matched = float(store[f"{key}/start_threshold"]), float(store[f"{key}/matched"][-1])
        row = [last[grid_index(t)] for t in (kept, matched, (kept + matched) / 2)]
        rules.append(row + [last.max()])
        print(f"| {key} | " + " | ".join(f"{v:.1f}" for v in rules[-1]) + " |")
    print("| mean | " + " | ".join(f"{v:.1f}" for v in np.mean(rules, axis=0)) + " |")
    results["threshold_rules"] = dict(zip(results["step_curve"], rules))
    print(f"\n## Few labels: GT-known on the scored half when N labelled training images choose the epoch (the start "
          f"included), each at its label-free threshold, as fit --val-annotations does (mean ± sd of {args.draws} "
          "draws; label-free = the default run at the matched threshold)")
    print("| domain / trained on | label-free | " + " | ".join(f"N={n}" for n in COUNTS) + " | oracle |")
    print("|---|---|" + "---|" * len(COUNTS) + "---|")
    rows = list(results["few_labels"].values())
    if not rows:
        return _save(args.out, results)
    for key, row in results["few_labels"].items():
        print(f"| {key} | {row['label_free']:.1f} | " + " | ".join(
            f"{row[n]['mean']:.1f} ± {row[n]['sd']:.1f}" for n in COUNTS) + f" | {row['oracle']:.1f} |")
    print(f"| mean | {np.mean([r['label_free'] for r in rows]):.1f} | " + " | ".join(
        f"{np.mean([r[n]['mean'] for r in rows]):.1f}" for n in COUNTS) + f" | {np.mean([r['oracle'] for r in rows]):.1f} |")
    print("| mean, when they also choose the threshold among 19 | | " + " | ".join(
        f"{np.mean([r[n]['any_threshold'] for r in rows]):.1f}" for n in COUNTS) + " | |")
    _save(args.out, results)


def _save(out, results):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
