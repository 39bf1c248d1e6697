"""Scaling on paper, from measurements on this machine: what one ImageNet-1K epoch and one full
pseudo-box extraction would take on 1, 8 and 64 workers, and where that projection breaks.

    python benchmarks/scaling.py [--data-dir ../shared/data/CUB_200_2011_dev] [--json scaling.json]
        [--quick] [--network-gbit 10]

Measured here (each printed as it is measured):
1. the training step per image at global batch 16 / 32 / 64, for the tiny backbone and
   EfficientNet-Lite0, frozen and fine-tuned (224 px crops, one replica);
2. the contrastive loss (forward + backward) as the global batch n grows, n = 16 ... 4096:
   the whole n x n similarities (O(n^2), what each replica computes for the ``paper`` variant)
   and one replica's own 32 rows against all n columns (O(n), the ``reference`` variant);
3. the all-gather of the fg/bg vectors (2 x n x C float32) between 2 replicas of this host;
4. the input pipeline alone (no model): JPEG files streamed (--no-cache) and TFRecord shards,
   against what a training step consumes;
5. box extraction images/s, the local extractor and Beam's DirectRunner.

The projection: a worker is this machine's CPU (2 cores) running batch 32; N workers run
global batch 32 N. Step time = the measured step at 32 - the loss at 32 + the loss at 32 N
(a replica's own 32 rows against the 32 N columns, the default ``reference`` variant; the
``paper`` variant computes all n x n on every replica and is shown apart)
+ the measured all-gather at 32 N + the bytes that cross the network (all-gathered vectors,
and the gradient all-reduce of the trained weights) at --network-gbit. An epoch is
1,281,167 images; when the measured pipeline is slower than a worker's demand, it bounds
the step. Box extraction has no communication: N times one worker's rate until storage
bandwidth binds (not measured here).
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

# Two logical CPU devices for the all-gather between replicas: set before TensorFlow starts.
_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from machine import header, median_seconds  # noqa: E402

IMAGENET_TRAIN = 1_281_167
PER_WORKER_BATCH = 32
WORKERS = (1, 8, 64)
FEATURES = {"tiny": None, "efficientnet_lite0": 1280}


def step_times(batches, repeats, backbones):
    """{(backbone, frozen, batch): seconds per training step} on one replica, 224 px."""
    from c2am_tf.backbones import build_backbone
    from c2am_tf.models.c2am.model import C2AM
    from c2am_tf.models.c2am.optim import poly_sgd

    out = {}
    for name in backbones:
        for frozen in (True, False):
            backbone = build_backbone(name, weights="imagenet" if name != "tiny" else None,
                                      features="head" if name.startswith("efficientnet") else "concat")
            backbone.trainable = not frozen
            model = C2AM(backbone, recipe="paper")
            model.compile(optimizer=poly_sgd(1e-3, 1000))
            for batch in batches:
                images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3)), tf.float32)
                seconds = median_seconds(lambda: model.train_on_batch(images), repeats)
                out[(name, frozen, batch)] = seconds
                print(f"  step {name:<18} {'frozen' if frozen else 'fine-tuned':<10} batch {batch:>3}: "
                      f"{seconds:7.3f} s, {1000 * seconds / batch:7.1f} ms/image", flush=True)
            if name != "tiny":
                out[(name, frozen, "trained_params")] = int(sum(np.prod(v.shape) for v in model.trainable_variables))
            keras.backend.clear_session()
    return out


def loss_times(sizes, channels, repeats, rows=None):
    """{n: seconds} of the contrastive loss's forward + backward on n gathered fg/bg vectors: the
    whole n x n loss (what the ``paper`` variant computes on every replica), or with ``rows`` only
    that many rows against all n columns (a replica's own share, the ``reference`` variant)."""
    from c2am_tf.models.c2am.losses import C2AMLoss

    loss = C2AMLoss(0.05)

    @tf.function
    def step(fg, bg):
        with tf.GradientTape() as tape:
            tape.watch([fg, bg])
            own = None if rows is None else (fg[:rows], bg[:rows])
            value = tf.add_n(loss.components(fg, bg, rows=own))
        return tape.gradient(value, [fg, bg])

    out = {}
    for n in sizes:
        fg = tf.random.normal((n, channels))
        bg = tf.random.normal((n, channels))
        out[n] = median_seconds(lambda: [g.numpy() for g in step(fg, bg)], repeats if n <= 1024 else 2, warmup=1)
        what = "n x n" if rows is None else f"{min(rows, n)} x n"
        print(f"  loss {what:>7}, n = {n:>5}: {1000 * out[n]:9.1f} ms", flush=True)
    return out


def allgather_times(sizes, channels, repeats):
    """{n: seconds} to all-gather fg and bg (n / 2 rows each per replica) between 2 local replicas."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {}
    for n in sizes:
        local = strategy.experimental_distribute_values_from_function(
            lambda ctx: (tf.random.normal((n // 2, channels)), tf.random.normal((n // 2, channels))))

        @tf.function
        def gather(values):
            def fn(fg, bg):
                ctx = tf.distribute.get_replica_context()
                return tf.reduce_sum(ctx.all_gather(fg, 0)) + tf.reduce_sum(ctx.all_gather(bg, 0))
            return strategy.run(fn, args=values)

        out[n] = median_seconds(lambda: strategy.experimental_local_results(gather(local))[0].numpy(), repeats)
        print(f"  all-gather n = {n:>5} ({2 * n * channels * 4 / 1e6:7.1f} MB gathered): "
              f"{1000 * out[n]:8.2f} ms", flush=True)
    return out


def pipeline_rates(data_dir):
    """{name: images/s} of the training input pipeline alone (256 resize, 224 crops, batch 16), streamed:
    one whole pass over the CUB train split, the shuffle buffer's filling included."""
    from c2am_tf import data

    out = {}
    if not data_dir or not os.path.isdir(data_dir):
        print("  (no --data-dir: the pipeline is not measured)")
        return out
    shards = tempfile.mkdtemp(prefix="c2am_scaling_")
    data.write_shards(data.make_source("cub", "train", data_dir), shards, images_per_shard=256)
    sources = {"JPEG files, streamed (--no-cache)": lambda: data.make_source("cub", "train", data_dir),
               "TFRecord shards, streamed": lambda: data.tfrecord_source(shards)}
    for name, make in sources.items():
        source = make()  # listing and the unreadable-file check are not part of the streaming rate
        t = time.perf_counter()
        count = sum(int(b.shape[0]) for b in data.train_pipeline(source, 16, 256, 224, cache=False, seed=1))
        out[name] = count / (time.perf_counter() - t)
        print(f"  pipeline {name}: {out[name]:7.1f} images/s ({count} images)", flush=True)
    return out


def _extract(folder, out_path, beam_args):
    """Pseudo boxes of ``folder``'s images with preset cub_lite0 at 448, as ``extract-boxes`` makes them: the
    local extractor, or with ``beam_args`` (Beam's options) the Beam pipeline in 4 parts."""
    from c2am_tf import data
    from c2am_tf.inference.beam_boxes import extract_boxes_beam
    from c2am_tf.inference.extract import extract_boxes, extraction_header
    from c2am_tf.maps.boxes_json import FORMAT
    from c2am_tf.models.settings import model_box_band
    from c2am_tf.presets import load

    model = load(None, "cub_lite0")
    threshold, band = float(model.threshold.numpy()), model_box_band(model, None)
    header = extraction_header(None, "cub_lite0", threshold, 448, "folder", "train", band)
    if beam_args is None:
        extract_boxes(model, data.make_source("folder", "train", folder), out_path, header, threshold, 448, band)
        return
    paths, unannotated = data.source_files("folder", "train", folder)
    extract_boxes_beam(paths, out_path, {"format": FORMAT, **header}, threshold, 448, unannotated, 4,
                       preset="cub_lite0", pipeline_args=beam_args, band=band)


def extraction_rates(data_dir, count, warm=8):
    """{name: images/s} of pseudo-box extraction (preset cub_lite0, 448 px): the marginal rate
    (count - warm) / (t(count) - t(warm)), so model loading and job start-up cancel out."""
    out = {}
    if not data_dir or not os.path.isdir(data_dir):
        print("  (no --data-dir: extraction is not measured)")
        return out
    images = sorted(glob.glob(os.path.join(data_dir, "images", "*", "*.jpg")))[:count]
    runs = {
        "local extractor (one process)": None,
        "Beam DirectRunner, 1 worker": ["--runner", "DirectRunner"],
        "Beam DirectRunner, 2 worker processes": ["--runner", "DirectRunner", "--direct_num_workers", "2",
                                                  "--direct_running_mode", "multi_processing"],
    }
    for name, beam_args in runs.items():
        seconds = {}
        for n in (warm, count):
            folder = tempfile.mkdtemp(prefix="c2am_extract_")
            for path in images[:n]:
                os.symlink(os.path.abspath(path), os.path.join(folder, os.path.basename(path)))
            out_path = os.path.join(folder, "out", "boxes.json" if beam_args is None else "boxes")
            os.makedirs(os.path.dirname(out_path), exist_ok=True)
            t = time.perf_counter()
            _extract(folder, out_path, beam_args)
            seconds[n] = time.perf_counter() - t
        out[name] = (count - warm) / (seconds[count] - seconds[warm])
        print(f"  extraction {name}: {out[name]:6.2f} images/s marginal; start-up {seconds[warm] - warm / out[name]:.1f} s",
              flush=True)
    return out


def project(steps, losses, gathers, pipeline, extraction, network_gbit, channels):
    """Rows of the projection table (see the module docstring)."""
    def at(table, n):  # log-log interpolation between measured sizes
        keys = sorted(table)
        if n <= keys[0]:
            return table[keys[0]] * n / keys[0]
        for lo, hi in zip(keys, keys[1:]):
            if lo <= n <= hi:
                w = (np.log(n) - np.log(lo)) / (np.log(hi) - np.log(lo))
                return float(np.exp((1 - w) * np.log(table[lo]) + w * np.log(table[hi])))
        return table[keys[-1]] * (n / keys[-1]) ** 2

    bandwidth = network_gbit * 1e9 / 8
    stream = min(pipeline.values()) if pipeline else None
    rows = []
    for frozen in (True, False):
        key = ("efficientnet_lite0", frozen, PER_WORKER_BATCH)
        if key not in steps:
            continue
        params = steps[("efficientnet_lite0", frozen, "trained_params")]
        for n_workers in WORKERS:
            b = PER_WORKER_BATCH * n_workers
            compute = steps[key] - at(losses, PER_WORKER_BATCH) + at(losses, b)
            gather = at(gathers, b) if n_workers > 1 else 0.0
            wire = 0.0
            if n_workers > 1:
                share = (n_workers - 1) / n_workers
                wire = share * 2 * b * channels * 4 / bandwidth + 2 * share * params * 4 / bandwidth
            step = compute + gather + wire
            demand = PER_WORKER_BATCH / step
            bound = "compute"
            if stream is not None and stream < demand:
                step, bound = PER_WORKER_BATCH / stream, "input pipeline"
            if at(losses, b) > 0.5 * step:
                bound = "O(n^2) loss"
            steps_per_epoch = -(-IMAGENET_TRAIN // b)
            rows.append({"frozen": frozen, "workers": n_workers, "global_batch": b,
                         "loss_s": at(losses, b), "allgather_s": gather, "network_s": wire, "step_s": step,
                         "epoch_h": steps_per_epoch * step / 3600, "bound": bound})
    # a cluster worker runs the Beam pipeline: its one-worker rate, start-up excluded
    extract = extraction.get("Beam DirectRunner, 1 worker") or (max(extraction.values()) if extraction else None)
    boxes = [{"workers": n, "hours": IMAGENET_TRAIN / (n * extract) / 3600} for n in WORKERS] if extract else []
    return rows, boxes


def main():
    """Runs every measurement and prints the projection."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data", "CUB_200_2011_dev"),
                   help="CUB-layout folder for the pipeline and extraction measurements")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--quick", action="store_true", help="tiny backbone only, fewer sizes (a check that it runs)")
    p.add_argument("--network-gbit", type=float, default=10.0, help="assumed network bandwidth per worker")
    p.add_argument("--extract-images", type=int, default=128, help="images for the extraction rates")
    args = p.parse_args()
    import logging

    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    text, gflops = header()
    print(text, flush=True)
    channels = FEATURES["efficientnet_lite0"]
    sizes = (16, 64, 256) if args.quick else (16, 64, 256, 1024, 2048, 4096)
    print("training step (one replica):")
    steps = step_times((16,) if args.quick else (16, 32, 64), 2 if args.quick else 3,
                       ("tiny",) if args.quick else ("tiny", "efficientnet_lite0"))
    print(f"contrastive loss, forward + backward, C = {channels}:")
    whole = loss_times(sizes, channels, 3)
    losses = loss_times(sizes, channels, 3, rows=PER_WORKER_BATCH)
    print("all-gather of fg and bg between 2 replicas of this host:")
    gathers = allgather_times(sizes, channels, 5)
    print("input pipeline alone (no model):")
    pipeline = pipeline_rates(args.data_dir)
    print("box extraction:")
    extraction = extraction_rates(args.data_dir, 24 if args.quick else args.extract_images)
    rows, boxes = project(steps, losses, gathers, pipeline, extraction, args.network_gbit, channels)
    paper_rows, _ = project(steps, whole, gathers, pipeline, extraction, args.network_gbit, channels)
    if rows:
        print(f"\nprojection, ImageNet-1K ({IMAGENET_TRAIN:,} images), {PER_WORKER_BATCH} images per worker, "
              f"this CPU per worker, {args.network_gbit:g} Gbit/s network:")
        print("| Lite0 | workers | global batch | loss | all-gather | network | step | 1 epoch | bound by |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {'frozen' if r['frozen'] else 'fine-tuned'} | {r['workers']} | {r['global_batch']} | "
                  f"{r['loss_s']:.3f} s | {r['allgather_s']:.3f} s | {r['network_s']:.3f} s | {r['step_s']:.2f} s | "
                  f"{r['epoch_h']:.1f} h | {r['bound']} |")
    if paper_rows:
        print("the same with the 'paper' loss variant, whose global pair ranking makes every replica "
              "compute the whole n x n loss:")
        for r in paper_rows:
            if r["workers"] > 1:
                print(f"| {'frozen' if r['frozen'] else 'fine-tuned'} | {r['workers']} | {r['global_batch']} | "
                      f"{r['loss_s']:.3f} s | {r['allgather_s']:.3f} s | {r['network_s']:.3f} s | "
                      f"{r['step_s']:.2f} s | {r['epoch_h']:.1f} h | {r['bound']} |")
    for b in boxes:
        print(f"pseudo boxes for ImageNet-1K train on {b['workers']} workers: {b['hours']:.1f} h")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": text, "gflops": gflops,
                       "steps": {"/".join(map(str, k)): v for k, v in steps.items()},
                       "loss_own_rows_s": losses, "loss_whole_s": whole, "allgather_s": gathers,
                       "pipeline_images_per_s": pipeline, "paper_variant_projection": paper_rows,
                       "extraction_images_per_s": extraction, "projection": rows, "extraction_projection": boxes},
                      f, indent=1)


if __name__ == "__main__":
    main()
