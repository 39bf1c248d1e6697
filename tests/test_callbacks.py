"""Callbacks: evaluation arithmetic on a model whose map is the object, polarity decisions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from c2am_tf.backbones import build_backbone
from c2am_tf.callbacks import PolarityCallback, evaluate_localization, upsample_normalized
from c2am_tf.model import C2AM


def _oracle():
    """images -> their red channel / 255, average-pooled by 4: a perfect foreground map."""
    inputs = keras.Input((32, 32, 3))
    red = keras.layers.Rescaling(1 / 255.0)(inputs[..., :1])
    return keras.Model(inputs, keras.layers.AveragePooling2D(4)(red))


def _batch():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[0, 8:24, 4:20, 0] = 255
    images[1, 0:12, 16:32, 0] = 255
    boxes = np.array([[[4, 8, 20, 24]], [[16, 0, 32, 12]]], np.float32)
    masks = (images[..., 0] > 0).astype(np.uint8)
    return images, boxes, masks


def test_a_perfect_map_scores_100_on_boxes_and_masks():
    images, boxes, masks = _batch()
    ds = tf.data.Dataset.from_tensor_slices((images, boxes, masks)).batch(2)
    result, examples = evaluate_localization(_oracle(), ds, thresholds=[0.5], keep=1)
    assert result["best"] == 100.0 and result["best_threshold"] == 0.5
    assert result["pxap"] == pytest.approx(100.0) and result["mask_iou"] == pytest.approx(100.0)
    assert len(examples) == 1 and examples[0][1].shape == (8, 8)
    shifted = tf.data.Dataset.from_tensor_slices((images, boxes[::-1].copy())).batch(2)
    assert evaluate_localization(_oracle(), shifted, thresholds=[0.5])[0]["best"] == 0.0


def test_upsample_normalized():
    maps = np.array([[[0.2, 0.6], [0.2, 0.2]], [[0.5, 0.5], [0.5, 0.5]]], np.float32)
    up = upsample_normalized(maps, 4)
    assert up.shape == (2, 4, 4)
    assert up[0].min() == 0.0 and up[0].max() == pytest.approx(1.0)
    assert np.all(up[1] == 0)  # a constant map carries no information


@pytest.mark.parametrize("statistic,polarity", [(0.1, -1.0), (-0.1, 1.0)])
def test_polarity_callback(statistic, polarity):
    model = C2AM(build_backbone("tiny", weights=None))
    cb = PolarityCallback()
    cb.set_model(model)
    logs = {"border_minus_center": statistic}
    cb.on_epoch_end(0, logs)
    assert float(model.polarity.numpy()) == polarity and logs["polarity"] == polarity


def test_max_box_acc_of_a_perfect_map():
    from c2am_tf.callbacks import evaluate_max_box_acc

    images, boxes, _ = _batch()
    # +1-pixel areas: the exclusive GT corner becomes inclusive
    ds = tf.data.Dataset.from_tensor_slices((images, boxes - np.array([0, 0, 1, 1], np.float32))).batch(2)
    result = evaluate_max_box_acc(_oracle(), ds, multi_contour=True, step=0.05)
    assert result["max_box_acc"][70] == 100.0 and result["max_box_acc_v2"] == 100.0
