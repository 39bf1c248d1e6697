"""Helper run in subprocesses by test_distribute.py: a few training steps of the tiny backbone,
as one process or as worker INDEX of COUNT on localhost.

Usage: python tests/multiworker_run.py INDEX COUNT PORTS OUT RESULT.npz [CRASH_EPOCH]
(PORTS: comma-separated, one per worker; COUNT 1 runs one process without TF_CONFIG; with CRASH_EPOCH
every worker stops at the start of that epoch, as a killed cluster does, and exits with status 3)
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

index, count, ports, out, result = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4], sys.argv[5]
crash_epoch = int(sys.argv[6]) if len(sys.argv) > 6 else None
if count > 1:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports[:count]]},
                                          "task": {"type": "worker", "index": index}})

import keras  # noqa: E402
import numpy as np  # noqa: E402

from c2am_tf.training.trainer import TrainConfig, run_training  # noqa: E402

cfg = TrainConfig(dataset="synthetic", synthetic_count=8, synthetic_size=64, backbone="tiny", weights="none",
                  batch_size=8, epochs=3, steps_per_epoch=1, lr=0.05, resize=64, crop=48, eval_resize=64,
                  eval_crop=64, eval_every=1, num_pictures=2, out=out, seed=3, verbose=0,
                  strategy="multiworker" if count > 1 else "mirrored")


class Crash(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == crash_epoch:
            raise RuntimeError("simulated crash")


try:
    model, history, summary = run_training(cfg, extra_callbacks=[Crash()])
except RuntimeError as err:
    if "simulated crash" not in str(err):
        raise
    sys.exit(3)
np.savez(result, loss=np.asarray(history.history["loss"]), polarity=float(model.polarity.numpy()),
         threshold=float(model.threshold.numpy()), workers=summary["workers"],
         **{f"w{i}": v.numpy() for i, v in enumerate(model.weights)})
