"""Helper run in a subprocess by test_model.py: one C2AM step on N logical CPU replicas.

Usage: python tests/replica_step.py N OUT.npz [LOSS_VARIANT]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

replicas, out = int(sys.argv[1]), sys.argv[2]
variant = sys.argv[3] if len(sys.argv) > 3 else "reference"
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from c2am_tf.backbones import build_backbone  # noqa: E402
from c2am_tf.models.c2am.model import C2AM  # noqa: E402

devices = [f"/cpu:{i}" for i in range(replicas)]
strategy = tf.distribute.MirroredStrategy(devices)
assert strategy.num_replicas_in_sync == replicas
keras.utils.set_random_seed(0)
with strategy.scope():
    model = C2AM(build_backbone("tiny", weights=None), recipe="paper", weight_decay=1e-2, loss_variant=variant)
    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
images = np.random.RandomState(1).randint(0, 256, (8, 64, 64, 3)).astype(np.uint8)
before = [v.numpy() for v in model.trainable_variables]
history = model.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=1, verbose=0)
np.savez(out, loss=history.history["loss"][0],
         moving_mean=model.head.moving_mean.numpy(), moving_variance=model.head.moving_variance.numpy(),
         **{f"before_{i}": b for i, b in enumerate(before)},
         **{f"after_{i}": v.numpy() for i, v in enumerate(model.trainable_variables)})
