"""SavedModel export for TensorFlow Serving: the weights stored once, loadable by the TF1
session loader that TF Serving uses (checked with ``saved_model_cli run``).

Why a hand-made ``tf.Module``: Keras 3 variables are saved through an object-based path
that the MetaGraph's TF1 restore op does not initialize, so ``model.export()`` also saves
the raw ``tf.Variable`` s, storing every weight twice; tracking the Keras model in a plain
``tf.Module`` stores them once but fails in the session loader. Here the module tracks
only the raw ``tf.Variable`` s and keeps the Keras model out of the object graph.

Signatures (images: uint8 RGB (B, H, W, 3), any size):
- ``serving_default``: ``cam`` (B, H, W) float32 foreground-high map upsampled to the
  input, ``boxes`` (B, 4) x0, y0, x1, y1 in input pixels at the model's threshold (averaged over
  its ``box_band``, as ``c2am_tf.maps.boxes.best_box_per_threshold``),
  ``scores`` (B,) mean map value inside the box.
- ``cam``: ``cam`` (B, h, w) at feature resolution.
- ``masks``: ``masks`` (B, H, W) uint8, 1 on the foreground: the map resized to the input and
  cut by the box rule (``c2am_tf.inference.postprocess.map_to_mask``) at the model's threshold.
- ``refine``: images + initial multi-class CAMs (B, h', w', K) -> ``labels`` (B, h', w')
  int32: the background cue 1 - P (resized to the CAMs) is put in front of the CAMs
  as channel 0 and the argmax taken (paper section 3.5); label k > 0 is CAM channel k - 1.
"""

import os
import shutil
import tempfile

import tensorflow as tf

from c2am_tf.deploy.graph_boxes import boxes_from_maps_tf
from c2am_tf.models.settings import model_box_band
from c2am_tf.utils.files import make_folder
from c2am_tf.wsss.labels import refine_with_background

# Unknown rank on purpose: the signature wrapper does not check ranks, and a rank-3
# tensor declared rank 4 reaches the convolutions and aborts the process. With an
# unknown static shape, ``tf.ensure_shape`` checks at run time and cannot be pruned.
_IMAGES = tf.TensorSpec(None, tf.uint8, name="images")
_CAMS = tf.TensorSpec(None, tf.float32, name="cams")


def _validated(images):
    """Images checked at run time: rank 4, 3 channels, non-zero height and width."""
    images = tf.ensure_shape(images, [None, None, None, 3])
    positive = tf.debugging.assert_positive(
        tf.shape(images)[1:3], message="images must have non-zero height and width")
    with tf.control_dependencies([positive]):
        return tf.identity(images)


class WeightsOnlyModule(tf.Module):
    """A ``tf.Module`` that tracks a Keras model's raw ``tf.Variable`` s but not the model.

    Saved, it stores each weight once and restores in the TF1 session loader; converted
    to TFLite, its variables are frozen into constants (see the module docstring).
    """

    def __init__(self, model):
        super().__init__()
        object.__setattr__(self, "_model", model)  # not tracked: see the module docstring
        self.weights_list = [v.value for v in model.weights]  # tracked once, TF1-restorable
        self.threshold = float(model.threshold.numpy())
        self.box_band = model_box_band(model)


class ServingModule(WeightsOnlyModule):
    """The signatures above around a C2AM model (see the module docstring)."""

    def _maps(self, images):
        """Maps of images already checked by ``_validated``."""
        return self._model(images, training=False)[..., 0]

    @tf.function(input_signature=[_IMAGES])
    def cam(self, images):
        """Maps at feature resolution."""
        return {"cam": self._maps(_validated(images))}

    @tf.function(input_signature=[_IMAGES])
    def serving_default(self, images):
        """Upsampled maps, boxes in input pixels and box scores."""
        images = _validated(images)
        maps = self._maps(images)
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        h, w = tf.shape(maps)[1], tf.shape(maps)[2]
        grid_boxes = boxes_from_maps_tf(maps, self.threshold, band=self.box_band)
        scale = tf.cast(tf.stack([width / w, height / h, width / w, height / h]), tf.float32)
        rows = tf.range(h, dtype=tf.float32)[None, :, None]
        cols = tf.range(w, dtype=tf.float32)[None, None, :]
        inside = ((rows >= grid_boxes[:, 1, None, None]) & (rows <= grid_boxes[:, 3, None, None])
                  & (cols >= grid_boxes[:, 0, None, None]) & (cols <= grid_boxes[:, 2, None, None]))
        inside = tf.cast(inside, tf.float32)
        scores = tf.reduce_sum(maps * inside, [1, 2]) / tf.maximum(tf.reduce_sum(inside, [1, 2]), 1.0)
        up = tf.image.resize(maps[..., None], tf.stack([height, width]), method="bilinear")[..., 0]
        return {"cam": up, "boxes": grid_boxes * scale, "scores": scores}

    @tf.function(input_signature=[_IMAGES])
    def masks(self, images):
        """Foreground masks at the input's size, by the box rule at the model's threshold."""
        images = _validated(images)
        maps = self._maps(images)
        up = tf.image.resize(maps[..., None], tf.shape(images)[1:3], method="bilinear")[..., 0]
        levels = tf.cast(tf.clip_by_value(up, 0.0, 1.0) * 255.0, tf.uint8)  # truncates, as numpy's astype
        peak = tf.cast(tf.reduce_max(levels, axis=[1, 2], keepdims=True), tf.float64)
        cutoff = tf.floor(tf.constant(self.threshold, tf.float64) * peak)
        return {"masks": tf.cast(tf.cast(levels, tf.float64) > cutoff, tf.uint8)}

    @tf.function(input_signature=[_IMAGES, _CAMS])
    def refine(self, images, cams):
        """Refined label map from initial CAMs and C2AM's background cue 1 - P."""
        cams = tf.ensure_shape(cams, [None, None, None, None])
        return {"labels": refine_with_background(1.0 - self._maps(_validated(images)), cams)}


def next_version(out_dir):
    """1 + the highest numbered version folder in ``out_dir`` (1 when there is none): TF Serving serves the
    highest version, so a new export goes live without touching the ones before it."""
    found = [int(n) for n in tf.io.gfile.listdir(out_dir) if n.strip("/").isdigit()] \
        if tf.io.gfile.isdir(out_dir) else []
    return max(found, default=0) + 1


def export_saved_model(model, out_dir, version=None, overwrite=False):
    """Writes ``out_dir/<version>/`` (the layout TF Serving watches); returns that path.

    ``version`` None takes ``next_version(out_dir)``. An existing version folder (perhaps the one being
    served) is a ``FileExistsError`` unless ``overwrite``. A local export is written beside it under a
    name Serving ignores and renamed into place, so Serving never loads a half-written version.
    """
    version = next_version(out_dir) if version is None else int(version)
    path = os.path.join(out_dir, str(version))
    if tf.io.gfile.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists (TF Serving may be serving it); choose another version, "
                              "or overwrite it explicitly")
    module = ServingModule(model)
    local = "://" not in out_dir
    if local:  # a private folder of an unpredictable name: nothing planted in out_dir is followed
        make_folder(out_dir)
        staging = tempfile.mkdtemp(prefix=f".{version}.", suffix=".partial", dir=out_dir)
    else:
        staging = path
    try:
        tf.saved_model.save(module, staging, signatures={
            "serving_default": module.serving_default,
            "cam": module.cam,
            "masks": module.masks,
            "refine": module.refine,
        })
        if local:
            os.chmod(staging, 0o755)
            if os.path.exists(path):  # overwrite: the old version moves aside before the new one moves in
                retired = tempfile.mkdtemp(prefix=f".{version}.", suffix=".replaced", dir=out_dir)
                os.rename(path, os.path.join(retired, "old"))
                os.rename(staging, path)
                shutil.rmtree(retired)
            else:
                os.rename(staging, path)
    finally:
        if local and os.path.exists(staging):  # a failed export leaves nothing behind
            shutil.rmtree(staging, ignore_errors=True)
    return path
