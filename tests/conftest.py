"""Shared fixtures: paths to ../shared (golden vectors, dev data), skipped cleanly when absent."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.environ.get("C2AM_SHARED", os.path.join(ROOT, "..", "shared"))
GOLDEN = os.path.join(SHARED, "golden")
DATA = os.path.join(SHARED, "data")


def golden(name):
    """Loads ../shared/golden/<name>.npz or skips the test."""
    path = os.path.join(GOLDEN, name + ".npz")
    if not os.path.exists(path):
        pytest.skip(f"golden file {path} not available")
    return np.load(path)


def data_dir(name):
    """../shared/data/<name> or skips the test."""
    path = os.path.join(DATA, name)
    if not os.path.isdir(path):
        pytest.skip(f"dev data {path} not available")
    return path


def two_object_batch():
    """(images (1, 32, 32, 3) uint8, gt boxes): a red square that is the labelled object (green too) and a
    larger red-only distractor. A map of red finds both; a CAM of 'green' only the labelled one."""
    images = np.zeros((1, 32, 32, 3), np.uint8)
    images[0, 4:12, 4:12, :2] = 255  # the labelled object: red and green
    images[0, 16:32, 12:32, 0] = 255  # the distractor: red only, larger
    return images, np.array([[[4, 4, 12, 12]]], np.float32)


def green_classifier():
    """A global-average-pooling classifier (``c2am_tf.cam.build_classifier``'s layout) of 3 classes whose
    class 1 reads green and class 2 blue; class 0 reads nothing."""
    import keras

    from c2am_tf.cam import build_classifier

    inputs = keras.Input((None, None, 3))
    backbone = keras.Model(inputs, keras.layers.AveragePooling2D(4)(keras.layers.Rescaling(1 / 255.0)(inputs)))
    classifier = build_classifier(backbone, 3)
    kernel = np.zeros((3, 3), np.float32)
    kernel[1, 1] = 4.0  # class 1 reads green
    kernel[2, 2] = 1.0
    classifier.get_layer("logits").set_weights([kernel, np.zeros(3, np.float32)])
    return classifier
