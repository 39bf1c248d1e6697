"""The PSOL route (Zhang et al., CVPR 2020): a box regressor trained on C2AM's pseudo boxes.

The regressor sees the whole image resized to ``REGRESSOR_SIZE`` square and predicts one box as four
normalized coordinates (x0, y0, x1, y1) in [0, 1], as PSOL predicts normalized boxes; it is trained with
the mean squared error on the pseudo boxes that ``extract-boxes`` writes. The backbone is frozen
(offline ImageNet weights) and a small head keeps the spatial layout (1x1 conv, then a dense layer over
the whole grid: global pooling would throw away where the object is).
"""

import keras
import numpy as np
import tensorflow as tf

from c2am_tf.data.images import read_rgb
from c2am_tf.data.transforms import resize_square

REGRESSOR_SIZE = 224


def build_regressor(backbone, size=REGRESSOR_SIZE, channels=64, name="box_regressor"):
    """images (B, size, size, 3) in 0..255 -> boxes (B, 4), normalized x0, y0, x1, y1 (x0 <= x1, y0 <= y1).

    Example:
    >>> from c2am_tf.backbones import build_backbone
    >>> reg = build_regressor(build_backbone("tiny", weights=None), size=64)
    >>> box = reg(np.zeros((1, 64, 64, 3))).numpy()[0]
    >>> bool(box[0] <= box[2] and box[1] <= box[3] and 0 <= box.min() and box.max() <= 1)
    True
    """
    images = keras.Input((size, size, 3), name="images")
    x = backbone(images)
    x = keras.layers.Conv2D(channels, 1, activation="relu", name="reduce")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    # centre and size, then corners: the box is valid by construction
    raw = keras.layers.Dense(4, activation="sigmoid", name="center_size")(x)
    boxes = CenterSizeToCorners(name="boxes")(raw)
    return keras.Model(images, boxes, name=name)


@keras.saving.register_keras_serializable(package="c2am_tf")
class CenterSizeToCorners(keras.layers.Layer):
    """(cx, cy, w, h) in [0, 1] -> (x0, y0, x1, y1) clipped to [0, 1]: a valid box by construction.

    >>> np.round(CenterSizeToCorners()(np.array([[0.5, 0.5, 0.2, 0.4]])).numpy().astype(float), 2).tolist()
    [[0.4, 0.3, 0.6, 0.7]]
    """

    def call(self, raw):
        cx, cy, w, h = keras.ops.unstack(raw, 4, axis=-1)
        return keras.ops.clip(keras.ops.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1), 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def pseudo_box_dataset(records, batch_size, size=REGRESSOR_SIZE, seed=0):
    """Batches of (images (B, size, size, 3) uint8, normalized boxes (B, 4)) from boxes-file records
    (``c2am_tf.boxes/v1`` ``images`` entries), with random horizontal flips; images whose pseudo box is
    empty are left out (no object was found there)."""
    kept = [r for r in records if r["box"][2] > r["box"][0] and r["box"][3] > r["box"][1]]
    if not kept:
        raise ValueError("no record with a non-empty pseudo box")
    paths = [r["path"] for r in kept]
    boxes = np.array([[r["box"][0] / r["width"], r["box"][1] / r["height"],
                       r["box"][2] / r["width"], r["box"][3] / r["height"]] for r in kept], np.float32)

    def load(path, box):
        return resize_square(read_rgb(path), size), box

    def flip(example, draw):
        image, box = example
        mirrored = draw % 2 == 0
        image = tf.where(mirrored, tf.reverse(image, axis=[1]), image)
        box = tf.where(mirrored, tf.stack([1 - box[2], box[1], 1 - box[0], box[3]]), box)
        return image, box

    ds = tf.data.Dataset.from_tensor_slices((paths, boxes)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.ignore_errors(log_warning=True).cache().shuffle(len(kept), seed=seed)
    # Fresh draws every epoch: a random op inside map() repeats its draws each epoch under a global seed,
    # so with few images some would never be mirrored.
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, draws)).map(flip, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def predict_boxes(regressor, images, frame_size):
    """(B, 4) boxes in a ``frame_size`` square frame for a batch of frame images."""
    size = int(regressor.input_shape[1])
    x = tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear", antialias=True)
    return np.asarray(regressor.predict_on_batch(x)) * frame_size
