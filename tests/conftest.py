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


SUBSET = os.path.join(ROOT, "tests", "golden")  # shipped: a part of each file, the same arrays (README there)


class _Subset:
    """The shipped part of a golden file: an array it left out skips the test that asks for it."""

    def __init__(self, path):
        self._data, self.path = np.load(path, allow_pickle=False), path

    def keys(self):
        return self._data.files

    def __contains__(self, key):
        return key in self._data.files

    def __getitem__(self, key):
        if key not in self._data.files:
            pytest.skip(f"{key}: in the full golden set ({GOLDEN}) only, not in the shipped subset")
        return self._data[key]


def golden(name):
    """The arrays of ../shared/golden/<name>.npz, else of the subset shipped in tests/golden/, else a skip."""
    path = os.path.join(GOLDEN, name + ".npz")
    if os.path.exists(path):
        return np.load(path)
    if os.path.exists(os.path.join(SUBSET, name + ".npz")):
        return _Subset(os.path.join(SUBSET, name + ".npz"))
    pytest.skip(f"golden file {path} not available, and {name} is not in the shipped subset")


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
    """A global-average-pooling classifier (``c2am_tf.wsss.cam.build_classifier``'s layout) of 3 classes whose
    class 1 reads green and class 2 blue; class 0 reads nothing."""
    import keras

    from c2am_tf.models.classifier import build_classifier

    inputs = keras.Input((None, None, 3))
    backbone = keras.Model(inputs, keras.layers.AveragePooling2D(4)(keras.layers.Rescaling(1 / 255.0)(inputs)))
    classifier = build_classifier(backbone, 3)
    kernel = np.zeros((3, 3), np.float32)
    kernel[1, 1] = 4.0  # class 1 reads green
    kernel[2, 2] = 1.0
    classifier.get_layer("logits").set_weights([kernel, np.zeros(3, np.float32)])
    return classifier


def oracle_model():
    """images -> their red channel / 255, average-pooled by 4: a perfect foreground map."""
    import keras

    inputs = keras.Input((32, 32, 3))
    red = keras.layers.Rescaling(1 / 255.0)(inputs[..., :1])
    return keras.Model(inputs, keras.layers.AveragePooling2D(4)(red))
