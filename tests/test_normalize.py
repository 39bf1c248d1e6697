import numpy as np
import pytest

from c2am_tf.maps.normalize import flat_maps, min_max_normalized


def _maps():
    rng = np.random.default_rng(0)
    maps = rng.uniform(-2, 5, (4, 6, 7))
    maps[2] = 0.25  # a flat map
    return maps


def test_each_map_spans_zero_to_one_and_a_flat_map_is_zeros():
    u = min_max_normalized(_maps())
    for k in (0, 1, 3):
        assert u[k].min() == 0.0 and u[k].max() == 1.0
    assert np.all(u[2] == 0.0)
    assert flat_maps(_maps()).tolist() == np.broadcast_to(np.array([0, 0, 1, 0], bool)[:, None, None], (4, 6, 7)).tolist()


def test_the_order_of_the_pixels_is_kept_and_float32_stays_float32():
    maps = _maps().astype(np.float32)
    u = min_max_normalized(maps)
    assert u.dtype == np.float32
    np.testing.assert_array_equal(np.argsort(u[0], axis=None), np.argsort(maps[0], axis=None))


def test_keep_flat_is_the_saliency_metrics_rule_on_one_array():
    assert min_max_normalized(np.array([0.3, 0.3]), axis=None, keep_flat=True).tolist() == [0.3, 0.3]
    assert min_max_normalized(np.array([0.3, 0.3]), axis=None).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(min_max_normalized(np.array([1.0, 2.0, 5.0]), axis=None), [0.0, 0.25, 1.0])


def test_the_graph_twin_agrees():
    tf = pytest.importorskip("tensorflow")
    from c2am_tf.models.masks.mask_model import normalized_tf

    maps = _maps().astype(np.float32)
    got = normalized_tf(tf.constant(maps[..., None])).numpy()[..., 0]
    np.testing.assert_allclose(got, min_max_normalized(maps), atol=1e-6)
