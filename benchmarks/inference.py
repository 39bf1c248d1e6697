"""Inference latency per image (batch 1) and model sizes: Keras, SavedModel, TFLite fp32/fp16/int8.

    python benchmarks/inference.py --model runs/cub_dev/final.keras \\
        [--sizes 224 448] [--threads 1 2] [--repeats 30] \\
        [--calibration-dir ../shared/data/CUB_200_2011_dev/images]

Exports the model once (SavedModel, any input size) and per size (TFLite fp32, fp16 and
int8, int8 calibrated on 100 real images), then times each runtime in a fresh process per
thread count (TensorFlow fixes its thread pools at start-up):
- Keras: ``model(x)`` inside a ``tf.function`` (the fastest Keras path);
- SavedModel ``cam`` (maps only) and ``serving_default`` (maps upsampled to the
  input, boxes in the graph), called through ``tf.saved_model.load``;
- TFLite: the LiteRT interpreter's ``invoke`` (map only); the device-side box
  (``c2am_tf.deploy.on_device.box_from_map``) is timed separately.
Each figure is the median over ``--repeats`` calls after 3 warm-up calls.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _median_ms(fn, inputs, repeats):
    for x in inputs[:3]:
        fn(x)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(inputs[i % len(inputs)])
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def time_all(work, sizes, threads, repeats):
    """{name@size: ms} for every runtime, in this process with ``threads`` threads."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from c2am_tf.deploy.on_device import ForegroundDetector, box_from_map
    from c2am_tf.presets import load_model

    model = load_model(os.path.join(work, "model.keras"))
    loaded = tf.saved_model.load(os.path.join(work, "saved_model", "1"))
    keras_call = tf.function(lambda x: model(x, training=False))
    rng = np.random.RandomState(0)
    out = {}
    for size in sizes:
        images = [rng.randint(0, 256, (1, size, size, 3)).astype(np.uint8) for _ in range(8)]
        out[f"keras@{size}"] = _median_ms(lambda x: keras_call(tf.constant(x, tf.float32)).numpy(), images, repeats)

        for signature in ("cam", "serving_default"):
            fn = loaded.signatures[signature]
            out[f"saved_model:{signature}@{size}"] = _median_ms(
                lambda x: {k: v.numpy() for k, v in fn(images=tf.constant(x)).items()}, images, repeats)
        for quantize in ("none", "float16", "int8"):
            detector = ForegroundDetector(os.path.join(work, f"{quantize}_{size}.tflite"), num_threads=threads)
            out[f"tflite:{quantize}@{size}"] = _median_ms(lambda x: detector.map(x[0]), images, repeats)
        score_map = detector.map(images[0][0])
        out[f"device box@{size}"] = _median_ms(lambda m: box_from_map(m, detector.threshold), [score_map], repeats)
    return out


def export_all(model_path, work, sizes, calibration_dir):
    """SavedModel and the three TFLite models per size under ``work``; returns {name: MiB}."""
    import shutil

    from c2am_tf.deploy import tflite_export as tflite
    from c2am_tf.deploy.saved_model import export_saved_model
    from c2am_tf.presets import load_model
    from c2am_tf.utils.files import list_images

    model = load_model(model_path)
    shutil.copy(model_path, os.path.join(work, "model.keras"))
    paths = list_images(calibration_dir)
    sizes_mib = {".keras file": os.path.getsize(model_path) / 2**20}
    path = export_saved_model(model, os.path.join(work, "saved_model"))  # any input size
    sizes_mib["SavedModel"] = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path)
                                  for f in fs) / 2**20
    for size in sizes:
        for quantize in tflite.QUANTIZATIONS:
            images = tflite.calibration_images(paths, size, 100) if quantize == "int8" else None
            content = tflite.convert(model, size, quantize, images)
            with open(os.path.join(work, f"{quantize}_{size}.tflite"), "wb") as f:
                f.write(content)
            sizes_mib[f"TFLite {quantize}"] = len(content) / 2**20
    return sizes_mib


from machine import header


def main(argv=None):
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--calibration-dir", default=os.path.join(ROOT, "..", "shared", "data", "CUB_200_2011_dev", "images"))
    p.add_argument("--work", help=argparse.SUPPRESS)  # set by the parent for the timing children
    args = p.parse_args(argv)
    if args.work:  # a timing child: one thread count, results as JSON on the last line
        print(json.dumps(time_all(args.work, args.sizes, args.threads[0], args.repeats)))
        return
    print(header()[0], flush=True)
    with tempfile.TemporaryDirectory() as work:
        start = time.time()
        sizes_mib = export_all(args.model, work, args.sizes, args.calibration_dir)
        print(f"exported in {time.time() - start:.0f} s; sizes (MiB): "
              + ", ".join(f"{k} {v:.2f}" for k, v in sizes_mib.items()))
        results = {}
        for threads in args.threads:
            proc = subprocess.run([sys.executable, __file__, "--model", args.model, "--work", work,
                                   "--threads", str(threads), "--repeats", str(args.repeats), "--sizes",
                                   *map(str, args.sizes)], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"timing with {threads} threads failed:\n{proc.stderr[-3000:]}")
            results[threads] = json.loads(proc.stdout.strip().splitlines()[-1])
    names = list(results[args.threads[0]])
    print(f"\nms per image (batch 1, median of {args.repeats}); CPU: {os.cpu_count()} cores")
    print(f"{'runtime':34s}" + "".join(f"{f'{t} thread' + ('s' if t > 1 else ''):>12s}" for t in args.threads))
    for name in names:
        print(f"{name:34s}" + "".join(f"{results[t][name]:12.2f}" for t in args.threads))


if __name__ == "__main__":
    main()
