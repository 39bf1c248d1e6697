"""What machine a benchmark ran on, and how fast it is, measured in the same run.

Every benchmark prints ``header()`` first: the CPU model, its cores and vector
extensions (AVX2, FMA, AVX-512, ...), TensorFlow's version and whether oneDNN is on,
and the float32 matmul rate this process reaches (GFLOP/s). Speed figures are then
also given as a fraction of that rate (``fraction_of_peak``), which compares across
machines where images/s alone does not (an AVX-512 machine ran several times faster
than an AVX2 one here).
"""

import os
import platform
import time

VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_info():
    """{'model', 'cores', 'flags' (the VECTOR_FLAGS present)} from /proc/cpuinfo (Linux), else platform."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in VECTOR_FLAGS if f in flags]}


def matmul_gflops(size=1024, seconds=1.5):
    """float32 GFLOP/s of a (size x size) @ (size x size) TensorFlow matmul, median of ~10 timed runs."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    step = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    step().numpy()  # trace and warm up
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - t)
    times.sort()
    return 2 * size ** 3 / times[len(times) // 2] / 1e9


def call_seconds(fn, repeats, warmup=2):
    """Wall time of each of ``repeats`` calls of ``fn()``, after ``warmup`` untimed calls (tracing)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median_seconds(fn, repeats, warmup=2):
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls (tracing)."""
    return sorted(call_seconds(fn, repeats, warmup))[repeats // 2]


def onednn_enabled():
    """Whether TensorFlow's oneDNN CPU kernels are on (TF_ENABLE_ONEDNN_OPTS, default on for x86)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "False")


def header(measure=True):
    """One block of text naming the machine (and its measured matmul rate): print it first.

    Returns (text, GFLOP/s or None).
    """
    import tensorflow as tf

    info = cpu_info()
    gflops = matmul_gflops() if measure else None
    vector = ", ".join(info["flags"]) or "none found"
    lines = [f"machine: {info['model']}, {info['cores']} cores; vector: {vector}",
             f"TensorFlow {tf.__version__}, oneDNN {'on' if onednn_enabled() else 'off'}, "
             f"intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}"]
    if gflops is not None:
        lines.append(f"float32 matmul (1024^3, TensorFlow): {gflops:.1f} GFLOP/s")
    return "\n".join(lines), gflops


def forward_gflops(model, size):
    """GFLOPs of one (1, size, size, 3) forward pass of a Keras model (TensorFlow's graph profiler)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return profile(graph=frozen.graph, options=options).total_float_ops / 1e9


def fraction_of_peak(images_per_s, gflop_per_image, peak_gflops):
    """Share of the measured matmul rate that a workload reaches (1.0 = matmul speed)."""
    return images_per_s * gflop_per_image / peak_gflops
