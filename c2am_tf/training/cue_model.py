"""Training a background-cue model (``fit-bgcues``, paper section 3.5) on a C2AM model's background maps:
the cue model (``c2am_tf.models.cue_model.build_cue_model``) learns 1 - P (``soft``), or it thresholded (``hard``), at stride 8,
with binary cross-entropy and random flips.
"""

import keras
import tensorflow as tf

from c2am_tf.backbones import default_features
from c2am_tf.data.images import load_square_images
from c2am_tf.models.c2am.optim import poly_sgd
from c2am_tf.models.cue_model import build_cue_model
from c2am_tf.presets import load_model
from c2am_tf.training.run_folder import fit_and_save
from c2am_tf.utils.files import OutputNames, list_images
from c2am_tf.wsss.bgcues import pseudo_labels, write_cue_files


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


def train_cue_model(target, settings, images_dir, c2am_path, backbone="efficientnet_lite0", weights="imagenet",
                    pseudo="soft", cue_threshold=0.3, size=448, batch_size=16, lr=0.01, epochs=10, seed=1,
                    overwrite=False, cues_out=None):
    """``fit-bgcues``' workflow: a cue model trained on the background maps of the C2AM model ``c2am_path`` for
    the images of ``images_dir`` (resized whole to ``size``), saved at ``target`` (resumable, as
    ``run_folder.fit_and_save``); with ``cues_out`` every image's predicted cue there (names checked before
    training). Returns {"images", "mean_background", "path", "model", "cues"}."""
    keras.utils.set_random_seed(seed)
    images, paths = load_square_images(list_images(images_dir), size)
    # Cue files are keyed by image name: clashing names are refused before training, not after.
    outputs = OutputNames(paths, cues_out, ".npy", layout="stem", overwrite=overwrite) if cues_out else None
    targets = cue_targets(load_model(c2am_path), images, pseudo, cue_threshold)
    model = build_cue_model(backbone, weights, default_features(backbone))
    train, steps = cue_training_set(images, targets, batch_size, seed)
    compile_cue_model(model, lr, steps * epochs)
    model, path = fit_and_save(model, train, target, epochs, settings, overwrite)
    count = write_cue_files(model, images, paths, outputs, batch_size) if outputs is not None else None
    return {"images": len(images), "mean_background": float(targets.mean()), "path": path, "model": model,
            "cues": count}
