"""Batches of look-alike images, found without labels: k-means on pooled backbone features.

C2AM's contrastive loss pulls the foregrounds of a batch together and pushes them from the
backgrounds (paper section 3.2: "foreground objects with similar appearance ... have similar
representations"). In a mixed collection (birds, pets, street scenes) a random batch pairs
unrelated foregrounds. ``train_pipeline(groups=...)`` draws each batch from one cluster instead;
``feature_clusters`` makes the clusters (``c2am-tf fit --batch-groups K``). On a mixed collection it helps the
domain that forms its own clusters (birds) and leaves a diverse one unchanged (docs/results/imagenet.md).
"""

import numpy as np
import tensorflow as tf

from c2am_tf.data.transforms import resize_square


def unit_rows(x):
    """``x`` with each row scaled to unit L2 norm (a zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spherical_kmeans(x, k, seed=0, iterations=50):
    """Cluster ids (N,) of the rows of ``x`` by cosine similarity (rows L2-normalized), k-means with
    ``k`` centres seeded from ``k`` distinct random rows.

    >>> x = np.array([[1, 0.1], [1, 0], [0, 1], [0.1, 1]], np.float32)
    >>> ids = spherical_kmeans(x, 2); bool(ids[0] == ids[1] != ids[2] == ids[3])
    True
    """
    x = unit_rows(np.asarray(x, np.float64))
    k = int(min(k, len(x)))
    if k < 1:
        raise ValueError("k-means needs at least one row and one cluster")
    centres = x[np.random.RandomState(seed).choice(len(x), k, replace=False)]
    ids = np.zeros(len(x), np.int64)
    for _ in range(int(iterations)):
        new = np.argmax(x @ centres.T, axis=1)
        if _ and np.array_equal(new, ids):
            break
        ids = new
        filled = np.bincount(ids, minlength=k) > 0  # an emptied cluster keeps its centre
        centres[filled] = cluster_centres(x, ids, k)[filled]
    return ids


def pooled_features(source, backbone, size=224, batch_size=32, normalize=True):
    """(paths, (N, C) features) of a training source ({'image', 'path'} elements): each image resized whole
    to ``size``, its ``backbone`` features average-pooled (each row unit-norm when ``normalize``)."""

    batches = source.map(lambda ex: (tf.cast(resize_square(ex["image"], size), tf.float32), ex["path"]),
                         num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    features, paths = [], []
    for images, names in batches:
        features.append(np.asarray(backbone(images, training=False)).mean(axis=(1, 2)))
        paths.extend(p.decode() for p in names.numpy())
    if not paths:
        raise ValueError("no training image to cluster")
    x = np.concatenate(features).astype(np.float32)
    return paths, unit_rows(x) if normalize else x


def cluster_centres(x, ids, k):
    """(k, C) unit-norm centres (``x``'s dtype) of the clusters ``ids`` of the rows of ``x`` (a zero row for an
    empty one): ``spherical_kmeans``'s update step, and a router's centres."""
    centres = np.zeros((k, x.shape[1]), x.dtype)
    for j in range(k):
        if (ids == j).any():
            c = x[ids == j].sum(axis=0)
            centres[j] = c / max(np.linalg.norm(c), 1e-12)
    return centres


def feature_clusters(source, backbone, k, size=224, seed=0, batch_size=32):
    """{path: cluster id}: ``spherical_kmeans`` on the ``pooled_features`` of a training source."""
    paths, x = pooled_features(source, backbone, size, batch_size)
    return dict(zip(paths, spherical_kmeans(x, k, seed).tolist()))
