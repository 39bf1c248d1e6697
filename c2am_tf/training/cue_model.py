"""Training a background-cue model (``fit-bgcues``, paper section 3.5) on a C2AM model's background maps:
the cue model (``c2am_tf.wsss.bgcues.build_cue_model``) learns 1 - P (``soft``), or it thresholded (``hard``), at stride 8,
with binary cross-entropy and random flips.
"""

import keras
import tensorflow as tf

from c2am_tf.models.c2am.optim import poly_sgd
from c2am_tf.wsss.bgcues import pseudo_labels


def cue_targets(c2am, images, kind="soft", threshold=0.3):
    """Background targets (N, S/8, S/8, 1) of square ``images`` (N, S, S, 3): ``pseudo_labels`` resized to the
    cue model's stride-8 grid."""
    targets = pseudo_labels(c2am, images, kind, threshold)[..., None]
    grid = images.shape[1] // 8
    return tf.image.resize(targets, (grid, grid), method="bilinear").numpy()


def cue_training_set(images, targets, batch_size, seed):
    """(batches of (image, target) shuffled, each pair mirrored at random, steps per epoch)."""
    def flip(image, target):
        flip_it = tf.random.uniform(()) < 0.5
        return (tf.where(flip_it, tf.reverse(image, [1]), image), tf.where(flip_it, tf.reverse(target, [1]), target))

    train = (tf.data.Dataset.from_tensor_slices((images, targets)).shuffle(len(images), seed=seed)
             .map(flip, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return train, -(-len(images) // batch_size)


def compile_cue_model(model, lr, total_steps):
    """Compiles a cue model (``build_cue_model``) with poly-decay SGD over ``total_steps``, binary
    cross-entropy and the mean absolute error."""
    model.compile(optimizer=poly_sgd(lr, total_steps), loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.MeanAbsoluteError(name="mae")])
    return model
