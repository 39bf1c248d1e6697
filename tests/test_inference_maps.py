import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import green_classifier, two_object_batch
from conftest import oracle_model as _oracle

from c2am_tf.inference.maps import fuse_cams, localization_maps, predict_maps


def _batch():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[0, 8:24, 4:20, 0] = 255
    images[1, 0:12, 16:32, 0] = 255
    return images


def test_flip_averaging_of_a_symmetric_model_is_the_map():
    images = _batch()
    model = _oracle()
    np.testing.assert_allclose(predict_maps(model, images, flip=True),
                               (predict_maps(model, images) + predict_maps(model, images[:, :, ::-1])[:, :, ::-1]) / 2,
                               atol=1e-6)



def test_fuse_cams_normalizes_each_map_and_weighs_them():
    maps = np.array([[[0.2, 0.6], [0.4, 0.2]]], np.float32)  # min-max: [[0, 1], [0.5, 0]]
    cams = np.full((1, 4, 4), 3.0, np.float32)
    cams[0, :2, :2] = 7.0  # resized to 2 x 2: [[7, 3], [3, 3]] -> [[1, 0], [0, 0]]
    np.testing.assert_allclose(fuse_cams(maps, cams, 1.0), [[[1, 0], [0, 0]]], atol=1e-6)
    np.testing.assert_allclose(fuse_cams(maps, cams, 0.25), [[[0.25, 0.75], [0.375, 0]]], atol=1e-6)
    assert fuse_cams(maps, np.zeros((1, 2, 2)), 0.5).max() == pytest.approx(0.5)  # a flat CAM adds nothing



def test_without_labels_the_cam_is_of_the_classifiers_top_class():
    images, _ = two_object_batch()
    classifier = green_classifier()
    predicted, top = localization_maps(_oracle(), images, classifier, cam_weight=0.5)
    assert top[0, 0] == 1  # the green object's class
    np.testing.assert_allclose(predicted, localization_maps(_oracle(), images, classifier, cam_weight=0.5,
                                                            labels=[1])[0], atol=1e-6)
    other = localization_maps(_oracle(), images, classifier, cam_weight=0.5, labels=[0])[0]
    assert np.abs(other - predicted).max() > 0.2  # another class's (flat) CAM gives another map
    alone, top_alone = localization_maps(_oracle(), images, classifier)
    np.testing.assert_array_equal(top_alone, top)
    np.testing.assert_allclose(alone, predict_maps(_oracle(), images))
    with pytest.raises(ValueError, match="needs a classifier"):
        localization_maps(_oracle(), images, cam_weight=0.5)



def test_cams_of_the_imagenet_lite_classifier_come_with_its_logits():
    from c2am_tf.backbones import efficientnet_lite
    from c2am_tf.models.classifier import cam_model, maps_of_classes

    classifier = efficientnet_lite("efficientnet_lite0", weights=None, include_top=True)
    both, dense = cam_model(classifier)
    assert cam_model(classifier)[0] is both  # built once per classifier
    x = np.random.RandomState(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    logits, features = both.predict_on_batch(x)
    assert features.shape == (2, 7, 7, 1280)
    np.testing.assert_allclose(logits, classifier.predict_on_batch(x), rtol=1e-4, atol=1e-4)
    # the CAM's mean (before ReLU) plus the bias is the class's logit: CAM = the logit spread over the map
    kernel, bias = (np.asarray(w) for w in dense.weights)
    raw = np.einsum("bhwc,cb->bhw", features, kernel[:, [5, 9]])
    np.testing.assert_allclose(raw.mean(axis=(1, 2)) + bias[[5, 9]], logits[[0, 1], [5, 9]], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps_of_classes(features, dense, [5, 9]), np.maximum(raw, 0), rtol=1e-5, atol=1e-5)



def test_multi_scale_maps_are_the_mean_over_scales_on_the_first_scales_grid():
    inputs = keras.Input((None, None, 3))
    # a map of stride 4 whose every value is the input's height / 100: each scale is told apart
    height = keras.layers.Lambda(
        lambda x: keras.ops.ones_like(x[:, ::4, ::4, :1]) * keras.ops.cast(keras.ops.shape(x)[1], "float32") / 100)
    model = keras.Model(inputs, height(inputs))
    images = tf.zeros((2, 32, 48, 3))
    np.testing.assert_allclose(predict_maps(model, images), 0.32, atol=1e-6)
    both = predict_maps(model, images, scales=(1.0, 2.0))
    assert both.shape == (2, 8, 12)
    np.testing.assert_allclose(both, (0.32 + 0.64) / 2, atol=1e-6)
    np.testing.assert_allclose(predict_maps(model, images, flip=True, scales=(0.5, 1.0)), (0.16 + 0.32) / 2,
                               atol=1e-6)
    assert predict_maps(model, images, scales=(0.5, 1.0)).shape == (2, 4, 6)
