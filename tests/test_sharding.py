"""c2am_tf.data.sharding and the training pipeline's determinism across workers and passes."""

import numpy as np
import pytest

from c2am_tf import data
from c2am_tf.data.sharding import Shard, take_shard


def test_shards_cover_every_file_once():
    items = [f"f{i}" for i in range(11)]
    parts = [take_shard(items, Shard(3, i)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(items)
    assert [len(p) for p in parts] == [4, 4, 3]
    assert take_shard(items, None) == items
    with pytest.raises(ValueError, match="cannot be split among 12 input pipelines"):
        take_shard(items, Shard(12, 11))


def test_sharded_sources_read_only_their_files():
    full = [ex["path"].decode() for ex in data.make_source("synthetic", synthetic_count=6, synthetic_size=32)
            .as_numpy_iterator()]
    part = [ex["path"].decode() for ex in data.make_source("synthetic", synthetic_count=6, synthetic_size=32,
                                                             shard=Shard(2, 1)).as_numpy_iterator()]
    assert part == full[1::2]


def _passes(source, epochs, batch_size):
    batches = list(data.train_pipeline(source, batch_size, 32, 24, seed=5, epochs=epochs).as_numpy_iterator())
    images = np.concatenate(batches)
    per_pass = len(images) // epochs
    return [{im.tobytes() for im in images[e * per_pass:(e + 1) * per_pass]} for e in range(epochs)]


def test_an_images_flip_and_crop_depend_on_seed_pass_and_image_only():
    source = data.make_source("synthetic", synthetic_count=8, synthetic_size=40)
    full = _passes(source, 2, 8)
    assert full == _passes(source, 2, 8)  # deterministic given the seed
    assert full[0] != full[1]  # each pass draws new crops
    for index in range(2):  # a worker's images are augmented exactly as in the one-process run
        shard = _passes(data.make_source("synthetic", synthetic_count=8, synthetic_size=40,
                                         shard=Shard(2, index)), 2, 4)
        assert all(s <= f and len(s) == 4 for s, f in zip(shard, full))


def test_each_pass_has_its_own_order():
    source = data.make_source("synthetic", synthetic_count=16, synthetic_size=32)
    batches = list(data.train_pipeline(source, 16, 32, 32, seed=1, epochs=3).as_numpy_iterator())
    assert len(batches) == 3
    # crop == resize: only the flip changes an image, so the order of each pass is visible
    orders = [[im.mean(axis=2).sum() for im in b] for b in batches]
    assert orders[0] != orders[1] and orders[1] != orders[2]


def test_two_live_iterators_see_the_same_batches():
    """Keras may open a second iterator while the first still prefetches: their orders must not race."""
    source = data.make_source("synthetic", synthetic_count=16, synthetic_size=32)
    ds = data.train_pipeline(source, 8, 32, 24, seed=3, epochs=4)
    reference = [b.tobytes() for b in ds.as_numpy_iterator()]
    for _ in range(4):
        first = iter(ds)
        next(first)  # alive and prefetching
        assert [b.numpy().tobytes() for b in iter(ds)] == reference


def test_a_resumed_stream_goes_on_where_the_killed_one_stopped():
    source = data.make_source("synthetic", synthetic_count=12, synthetic_size=32)
    whole = np.concatenate(list(data.train_pipeline(source, 4, 32, 24, seed=9, epochs=3).as_numpy_iterator()))
    for done in (8, 12, 20):  # inside the first pass, at a pass boundary, inside the second
        rest = np.concatenate(list(data.train_pipeline(source, 4, 32, 24, seed=9, epochs=3 - done // 12,
                                                       start=done).as_numpy_iterator()))
        np.testing.assert_array_equal(rest, whole[done:done + len(rest)])
        assert len(rest) == 36 - done
