"""A preset's map on any Keras 3 backend (TensorFlow, JAX, PyTorch), on a CPU or a GPU: images/s.

    KERAS_BACKEND=jax python benchmarks/backend_speed.py [--preset cub_lite0] [--sizes 224 448] \\
        [--batches 1 16 64] [--dtypes float32 mixed_bfloat16] [--maps-out maps.npz] [--compare tf.npz]

Builds ``c2am_tf.presets.map_network`` (Keras alone: no TensorFlow needed, so it runs on a GPU machine
that has only JAX or PyTorch) and times ``predict_on_batch`` on host batches, so the copy to the device
and back is counted, as a server would pay it. Each figure is the median of timed calls after warm-up
calls (which trace and compile each shape). The backend, its device and the CPU are printed first.
``--maps-out`` keeps the maps of a fixed seeded batch; ``--compare`` prints how far they are from
another run's (e.g. JAX on a GPU against TensorFlow on a CPU).
"""

import argparse
import os
import time

import numpy as np
from machine import cpu_info, median_seconds

PARITY_SHAPE = (4, 224, 224, 3)


def device_name(backend):
    """The device the backend computes on, in words."""
    if backend == "jax":
        import jax

        d = jax.devices()[0]
        return f"jax {jax.__version__}: {d.platform} {getattr(d, 'device_kind', '')}"
    if backend == "torch":
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        return f"torch {torch.__version__}: {gpu}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"tensorflow {tf.__version__}: {'GPU ' + gpus[0].name if gpus else 'CPU'}"


def peak_memory_mib(backend):
    """Peak accelerator memory of this process so far (MiB), or None on a CPU / unknown."""
    try:
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use", 0) / 2 ** 20 or None
        if backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 (memory stats are optional extras of each runtime)
        return None
    return None


def images_per_s(net, batch, size, repeats, warmup=3):
    """Median images/s of ``net.predict_on_batch`` on a (batch, size, size, 3) host array."""
    x = np.random.RandomState(batch).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    return batch / median_seconds(lambda: np.asarray(net.predict_on_batch(x)), repeats, warmup)


def main():
    """Entry point."""
    import keras

    from c2am_tf.presets import map_network

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cub_lite0")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--dtypes", nargs="+", default=["float32"], help="Keras dtype policies, e.g. mixed_bfloat16")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--maps-out", help="write the float32 maps of a fixed seeded batch here (.npz)")
    p.add_argument("--compare", help="a --maps-out file of another run: print the largest difference")
    args = p.parse_args()

    backend = keras.backend.backend()
    cpu = cpu_info()
    print(f"backend: {device_name(backend)}; keras {keras.__version__}")
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, {' '.join(cpu['flags'])}")
    for dtype in args.dtypes:
        keras.config.set_dtype_policy(dtype)
        start = time.perf_counter()
        net = map_network(args.preset)
        print(f"\n{args.preset} map network, {dtype}: built in {time.perf_counter() - start:.1f} s")
        if dtype == "float32" and (args.maps_out or args.compare):
            x = np.random.RandomState(0).uniform(0, 255, PARITY_SHAPE).astype("float32")
            maps = np.asarray(net.predict_on_batch(x), dtype="float32")
            if args.maps_out:
                np.savez(args.maps_out, maps=maps, backend=backend)
            if args.compare:
                with np.load(args.compare, allow_pickle=False) as other:
                    diff = np.abs(maps - other["maps"]).max()
                    print(f"maps against {other['backend']} ({args.compare}): largest difference {diff:.2e}")
        print("size  batch  images/s")
        for size in args.sizes:
            for batch in args.batches:
                rate = images_per_s(net, batch, size, args.repeats)
                print(f"{size:4d}  {batch:5d}  {rate:8.1f}", flush=True)
        peak = peak_memory_mib(backend)
        if peak:
            print(f"peak accelerator memory: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
