"""Does TensorFlow's CPU path leave speed on the table? Training and inference under each setting.

    python benchmarks/cpu_speed.py [--steps 6] [--batch 16]
    python benchmarks/cpu_speed.py --profile   # tf.profiler: the frozen step's time by phase and op type
                                               # (C2AM_NO_FOLD=1: without the folded-BN twin)

Each setting runs in a fresh process (oneDNN and thread pools are fixed when
TensorFlow starts): oneDNN on/off, intra-op threads 1/2/auto, mixed_bfloat16, XLA. For each it times
the EfficientNet-Lite0 C2AM training step of the trainer's model (frozen backbone, the default
recipe; and fine-tuned) at 224, the frozen step's backbone forward alone, and the eval forward pass
at 448, and gives images/s and the share of the float32 matmul rate measured in the same process
(benchmarks/machine.py).
A depthwise-only model shows what EfficientNet's depthwise convolutions cost.
TensorFlow on CPU is channels-last (NHWC) already, which is what our models use.
"""

import argparse
import json
import os
import subprocess
import sys

SETTINGS = [  # (name, environment)
    ("oneDNN on, threads auto", {"TF_ENABLE_ONEDNN_OPTS": "1"}),
    ("oneDNN off, threads auto", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    ("oneDNN on, 1 intra-op thread", {"TF_ENABLE_ONEDNN_OPTS": "1", "C2AM_INTRA_THREADS": "1"}),
    ("oneDNN on, 2 intra + 1 inter-op", {"TF_ENABLE_ONEDNN_OPTS": "1", "C2AM_INTRA_THREADS": "2",
                                         "C2AM_INTER_THREADS": "1"}),
    # bf16 matmuls where the CPU has them (avx512_bf16, AMX); float32 variables, as Keras's policy keeps them
    ("oneDNN on, mixed_bfloat16", {"TF_ENABLE_ONEDNN_OPTS": "1", "C2AM_POLICY": "mixed_bfloat16"}),
    ("oneDNN on, XLA (jit_compile)", {"TF_ENABLE_ONEDNN_OPTS": "1", "C2AM_JIT": "1"}),
]


def _rate(step, images, steps):
    from machine import median_seconds

    return images / median_seconds(step, steps)


def measure(steps, batch):
    """One setting, in this process: {workload: (images/s, GFLOP per image)} and the matmul rate."""
    import tensorflow as tf

    if os.environ.get("C2AM_INTRA_THREADS"):
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["C2AM_INTRA_THREADS"]))
    if os.environ.get("C2AM_INTER_THREADS"):
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["C2AM_INTER_THREADS"]))
    import keras
    import numpy as np

    if os.environ.get("C2AM_POLICY"):
        keras.mixed_precision.set_global_policy(os.environ["C2AM_POLICY"])
    jit = bool(os.environ.get("C2AM_JIT"))

    from machine import forward_gflops, matmul_gflops

    from c2am_tf.training.trainer import TrainConfig, build_model

    peak = matmul_gflops()
    rng = np.random.RandomState(0)
    train_x = tf.constant(rng.randint(0, 255, (batch, 224, 224, 3)), tf.uint8)
    eval_x = tf.constant(rng.randint(0, 255, (batch, 448, 448, 3)), tf.uint8)
    out = {}
    for frozen in (True, False):
        keras.utils.set_random_seed(0)
        # the trainer's model, default recipe (a frozen backbone trains through its BN-folded twin)
        model = build_model(TrainConfig(freeze_backbone=frozen, jit_compile="true" if jit else "false"), 1000)
        backbone = model.backbone
        forward = forward_gflops(backbone, 224)
        # frozen: a forward pass; fine-tuned: forward + backward, about 3 forward passes
        out[f"train 224, {'frozen' if frozen else 'fine-tuned'} backbone"] = (
            _rate(lambda: model.train_on_batch(train_x), batch, steps), forward * (1 if frozen else 3))
        if frozen:
            # the frozen step's forward pass alone: what the head, loss, backward and optimizer add is the rest
            backbone_forward = tf.function(lambda x: backbone(x, training=False), jit_compile=jit)
            out["frozen backbone forward 224"] = (_rate(lambda: backbone_forward(train_x).numpy(), batch, steps),
                                                  forward)
            predict = tf.function(lambda x: model(x, training=False), jit_compile=jit)
            out["eval forward 448"] = (_rate(lambda: predict(eval_x).numpy(), batch, steps),
                                       forward_gflops(backbone, 448))
    inputs = keras.Input((224, 224, 32))
    x = inputs
    for _ in range(8):
        x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    depthwise = keras.Model(inputs, x)
    dw_x = tf.constant(rng.rand(batch, 224, 224, 32), tf.float32)
    run = tf.function(lambda v: depthwise(v))
    out["8 depthwise 3x3, 32 ch at 224"] = (_rate(lambda: run(dw_x).numpy(), batch, steps),
                                           8 * 2 * 9 * 224 * 224 * 32 / 1e9)
    return {"peak": peak, "results": out}


def profile(steps, batch):
    """Where the recommended recipe's training step spends its time: TensorFlow's profiler over ``steps``
    steps (after 3 untraced ones), self time by op type and by phase (idle host time left out)."""
    import collections
    import glob
    import tempfile

    import numpy as np
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    from c2am_tf.training.trainer import TrainConfig, build_model

    model = build_model(TrainConfig(jit_compile="false"), 1000)
    if os.environ.get("C2AM_NO_FOLD"):  # the step as it was before the BN fold (docs/results/speed.md)
        model._folded.value = None
    x = tf.constant(np.random.RandomState(0).randint(0, 255, (batch, 224, 224, 3)), tf.uint8)
    for _ in range(3):
        model.train_on_batch(x)
    logdir = tempfile.mkdtemp()
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        model.train_on_batch(x)
    tf.profiler.experimental.stop()
    xspace = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[-1]
    table = json.loads(plugin.xspace_to_tools_data([xspace], "framework_op_stats", {})[0])[0]
    names = [c["id"] for c in table["cols"]]
    rows = [{k: (c or {}).get("v") for k, c in zip(names, r["c"])} for r in table["rows"]]
    rows = [r for r in rows if r["type"] != "IDLE"]
    total = sum(r["total_self_time"] for r in rows)
    by_type, by_phase = collections.Counter(), collections.Counter()
    for r in rows:
        name = (r["operation"] or "").lower()
        by_type[r["type"]] += r["total_self_time"]
        phase = ("backward" if "grad" in name else "optimizer" if any(k in name for k in ("sgd", "resourceapply",
                 "assign")) else "batch norm (inference: unfused mul + add)" if "bn" in name and r["type"] in
                 ("Mul", "AddV2") else "forward (backbone, head, disentangler, loss)")
        by_phase[phase] += r["total_self_time"]
    print(f"profile of {steps} frozen Lite0 steps (batch {batch}, 224): {total / 1e3:.0f} ms busy")
    for title, counter in (("phase", by_phase), ("op type", by_type)):
        print(f"  by {title}: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in counter.most_common(8)))


def main(argv=None):
    """Runs every setting in a child process and prints one table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="timed steps per workload (median)")
    p.add_argument("--batch", type=int, default=16, help="images per step")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help="only profile the recommended recipe's step")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.profile:
        return profile(args.steps, args.batch)
    if args.child:
        print("RESULT " + json.dumps(measure(args.steps, args.batch)))
        return
    from machine import header

    print(header(measure=False)[0])
    rows = []
    for name, env in SETTINGS:
        proc = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps), "--batch",
                               str(args.batch)], env={**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2"},
                              capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-1500:]}")
            continue
        result = json.loads(line[7:])
        rows.append((name, result))
        print(f"\n{name}: float32 matmul {result['peak']:.1f} GFLOP/s")
        for workload, (rate, gflop) in result["results"].items():
            print(f"  {workload:<36} {rate:7.1f} images/s   {gflop:6.3f} GFLOP/image   "
                  f"{100 * rate * gflop / result['peak']:5.1f}% of matmul")


if __name__ == "__main__":
    main()
