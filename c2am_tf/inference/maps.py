"""Maps for a batch of images, as every command cuts boxes and masks from them: C2AM's map with test-time
augmentation (flips, scales), a classifier's top classes, and the map fused with that classifier's CAM.

``predict``, ``extract-boxes`` (local and Beam), ``evaluate``, the training callbacks and the benchmarks all
call ``localization_maps`` (or ``predict_maps`` for the map alone), so a box is cut from the same map
everywhere.
"""

import numpy as np
import tensorflow as tf

from c2am_tf.maps.normalize import min_max_normalized
from c2am_tf.models.classifier import cam_model, maps_of_classes
from c2am_tf.runtime.distribute import num_workers

TOP_K = 5


def predict_maps(model, images, flip=False, scales=(1.0,)):
    """Foreground-high maps (B, h, w) as numpy for a batch of images.

    Test-time augmentation: ``flip`` averages the map with the mirrored map of the mirrored images;
    ``scales`` averages the maps of the images resized by each factor (bilinear, antialiased), each map
    resized to the grid of the first scale's.
    """
    maps = None
    for scale in scales:
        x = images
        if scale != 1:
            x = _resized_images(images, [max(16, int(round(int(n) * scale))) for n in images.shape[1:3]])
        m = _forward(model, x)
        if flip:
            m = (m + _forward(model, tf.reverse(x, axis=[2]))[:, :, ::-1]) / 2.0
        if maps is None:
            maps = m
        else:
            if m.shape[1:] != maps.shape[1:]:
                m = resize_maps(m, maps.shape[1:])
            maps = maps + m
    return maps / len(scales)


def _forward(model, images):
    # Under MultiWorkerMirroredStrategy Keras's predict concatenates every worker's outputs;
    # each worker evaluates the whole batch itself instead.
    if num_workers(getattr(model, "distribute_strategy", None)) > 1:
        return np.asarray(model(images, training=False))[..., 0]
    return np.asarray(model.predict_on_batch(images))[..., 0]


def resize_maps(maps, shape):
    """Maps (B, h, w) -> (B, *shape) float32, bilinear."""
    return tf.image.resize(np.asarray(maps, np.float32)[..., None], tuple(shape), method="bilinear").numpy()[..., 0]


def _resized_images(images, shape):
    """Images as float32, resized to ``shape`` (h, w) (bilinear, antialiased) unless they have it."""
    x = tf.cast(images, tf.float32)
    if tuple(int(n) for n in x.shape[1:3]) != tuple(shape):
        x = tf.image.resize(x, tuple(shape), method="bilinear", antialias=True)
    return x


def _classifier_input(images, size):
    return _resized_images(images, (size, size)) if size else tf.cast(images, tf.float32)


def top_k_classes(classifier, images, size=None, k=TOP_K):
    """(B, k) class indices, best first, of ``classifier`` (images 0..255 -> logits) on ``images``,
    resized to ``size`` x ``size`` first when given (the classifier's own input size)."""
    logits = np.asarray(classifier.predict_on_batch(_classifier_input(images, size)))
    return np.argsort(-logits, axis=1)[:, :k]


def classify_with_cams(classifier, images, labels=None, size=None, k=TOP_K):
    """((B, k) top classes, (B, h, w) one CAM per image) in one forward pass of a global-average-pooling
    classifier (``c2am_tf.models.classifier.cam_model``). The CAM is that of each image's ``labels`` class (evaluation:
    the true class) or, with ``labels=None``, of the classifier's own top-1 class (unlabelled images)."""
    both, dense = cam_model(classifier)
    logits, features = both.predict_on_batch(_classifier_input(images, size))
    top = np.argsort(-np.asarray(logits), axis=1)[:, :k]
    if labels is None:
        return top, maps_of_classes(features, dense, top[:, 0])
    labels = np.asarray(labels)
    if (labels < 0).any():
        raise ValueError("CAMs of the true class need every image's class label: some images have none")
    return top, maps_of_classes(features, dense, labels)


def check_cam_weight(cam_weight, classifier):
    """ValueError unless a ``cam_weight`` > 0 comes with a classifier and lies in (0, 1]."""
    if cam_weight and (classifier is None or not 0 < cam_weight <= 1):
        raise ValueError(f"cam_weight {cam_weight} needs a classifier and a weight in (0, 1]")


def localization_maps(model, images, classifier=None, classifier_size=None, cam_weight=0.0, labels=None,
                      flip=False, scales=(1.0,)):
    """(maps (B, h, w), top classes (B, k) or None): what boxes are cut from, for every command.

    The map is ``predict_maps(model, images, flip, scales)``; with a ``classifier`` the classes come with it
    and ``cam_weight`` > 0 fuses the map with a CAM (``fuse_cams``): of each image's ``labels`` class when
    given (evaluation), else of the classifier's top-1 class (``predict``, ``extract-boxes``).

    Example:
    >>> maps, top = localization_maps(model, images, classifier, 224, cam_weight=0.25)  # doctest: +SKIP
    """
    check_cam_weight(cam_weight, classifier)
    maps = predict_maps(model, images, flip, scales)
    if cam_weight:
        top_k, cams = classify_with_cams(classifier, images, labels, classifier_size)
        return fuse_cams(maps, cams, cam_weight), top_k
    if classifier is not None:
        return maps, top_k_classes(classifier, images, classifier_size)
    return maps, None


def fuse_cams(maps, cams, weight):
    """(1 - weight) * C2AM's map + weight * the class's CAM, each min-max normalized per image, on the
    map's grid (the CAMs are resized to it bilinearly): C2AM finds the object's extent without
    classes, the classifier's CAM which object the label names."""
    maps = np.asarray(maps, np.float32)
    cams = np.asarray(cams, np.float32)
    if cams.shape[1:] != maps.shape[1:]:
        cams = resize_maps(cams, maps.shape[1:])
    return (1.0 - weight) * min_max_normalized(maps) + weight * min_max_normalized(cams)
