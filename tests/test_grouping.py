"""Batches from k-means clusters: the clustering, the grouped pipeline and a training run that uses them."""

import numpy as np
import tensorflow as tf

from c2am_tf import data
from c2am_tf.backbones import build_backbone
from c2am_tf.data.grouping import feature_clusters, spherical_kmeans
from c2am_tf.training.trainer import TrainConfig, run_training


def _source(values):
    """{'image', 'path'} elements: image i is flat at values[i], path 'img{i}'."""
    images = np.stack([np.full((40, 40, 3), v, np.uint8) for v in values])
    paths = [f"img{i}" for i in range(len(values))]
    return tf.data.Dataset.from_tensor_slices({"image": images, "path": paths})


def test_spherical_kmeans_finds_separated_directions_whatever_the_seed():
    rng = np.random.RandomState(0)
    axes = np.eye(3)[[0, 1, 2] * 10] * 5 + rng.normal(0, 0.3, (30, 3))  # 3 directions, scaled: cosine ignores norm
    axes[::2] *= 10
    for seed in range(4):
        ids = spherical_kmeans(axes, 3, seed=seed)
        truth = np.array([0, 1, 2] * 10)
        # the same partition up to the cluster numbering
        assert len({(t, i) for t, i in zip(truth, ids)}) == 3 and len(set(ids)) == 3
    assert np.array_equal(spherical_kmeans(axes, 3, seed=1), spherical_kmeans(axes, 3, seed=1))


def test_grouped_pipeline_batches_hold_one_cluster_each():
    values = [100 * (i % 2) + i for i in range(40)]  # brightness tells the image; clusters: even / odd index
    groups = {f"img{i}": i % 2 for i in range(40)}
    batches = list(data.train_pipeline(_source(values), 4, 40, 32, seed=3, epochs=3, groups=groups)
                   .as_numpy_iterator())
    assert len(batches) >= 3 * 40 // 4 - 2  # windows run across passes: at most one short batch per cluster lost
    for batch in batches:
        parity = {int(v) // 100 for v in batch.reshape(4, -1).max(axis=1)}
        assert len(parity) == 1, "a batch mixed two clusters"
    plain = list(data.train_pipeline(_source(values), 4, 40, 32, seed=3, epochs=3).as_numpy_iterator())
    mixed = sum(len({int(v) // 100 for v in b.reshape(4, -1).max(axis=1)}) > 1 for b in plain)
    assert mixed > 0  # without groups, random batches do mix them


def test_feature_clusters_split_dark_from_bright_images():
    backbone = build_backbone("tiny", weights=None)
    values = [5, 250, 8, 245, 3, 252, 6, 240]
    clusters = feature_clusters(_source(values), backbone, 2, size=32)
    dark = {clusters[f"img{i}"] for i, v in enumerate(values) if v < 128}
    bright = {clusters[f"img{i}"] for i, v in enumerate(values) if v >= 128}
    assert len(dark) == 1 and len(bright) == 1 and dark != bright


def test_a_run_with_batch_groups_trains_and_records_them(tmp_path):
    cfg = TrainConfig(dataset="synthetic", backbone="tiny", weights=None, batch_size=4, synthetic_count=24,
                      synthetic_size=64, resize=64, crop=56, eval_every=0, epochs=2, verbose=0,
                      batch_groups=2, out=str(tmp_path / "g"))
    model, history, summary = run_training(cfg)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert int(model.optimizer.iterations.numpy()) == 2 * (24 // 4)
    import json

    with open(tmp_path / "g" / "config.json") as f:
        assert json.load(f)["batch_groups"] == 2
