"""DDT baseline: recovers a planted object from its features."""

import numpy as np
import pytest

from c2am_tf.evaluation.ddt import DDT


def _planted(n=20, size=8, channels=6, seed=0):
    rng = np.random.RandomState(seed)
    feats = rng.normal(0, 0.1, (n, size, size, channels))
    boxes = []
    for i in range(n):
        y0, x0 = rng.randint(1, 4, 2)
        h, w = rng.randint(2, 4, 2)
        feats[i, y0:y0 + h, x0:x0 + w] += np.array([3, 2, 0, 0, 0, 0])  # the common object
        boxes.append((x0, y0, x0 + w, y0 + h))
    return feats, boxes


def test_ddt_finds_the_common_object():
    feats, boxes = _planted()
    ddt = DDT()
    for i in range(0, len(feats), 5):
        ddt.update(feats[i:i + 5])
    ddt.fit()
    ddt.orient(ddt.project(feats))
    maps = ddt.project(feats)
    for m, (x0, y0, x1, y1) in zip(maps, boxes):
        assert m[y0:y1, x0:x1].min() > 0 > np.delete(m.ravel(), [r * 8 + c for r in range(y0, y1) for c in range(x0, x1)]).max()
        np.testing.assert_allclose(DDT.box(m, 8), [x0, y0, x1, y1], atol=1)


def test_orientation_flips_an_inverted_direction():
    feats, _ = _planted()
    ddt = DDT()
    ddt.update(feats)
    ddt.fit()
    ddt.direction = -np.abs(ddt.direction) * np.sign(ddt.direction[0])  # force the wrong sign
    if ddt.project(feats)[:, 0].mean() < 0:
        ddt.direction = -ddt.direction
    ddt.orient(ddt.project(feats))
    assert ddt.project(feats)[:, 0, 0].mean() < 0


def test_errors_before_fit():
    with pytest.raises(ValueError, match="update"):
        DDT().fit()
    with pytest.raises(ValueError, match="fit"):
        DDT().project(np.zeros((1, 2, 2, 3)))
    assert DDT.box(np.full((3, 3), -1.0), 6).tolist() == [0, 0, 0, 0]
