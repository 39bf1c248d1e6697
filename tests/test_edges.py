"""Edge-aware refinement (c2am_tf.maps.edges): a blocky map snaps to the image's edges, and bad choices fail clearly."""

import numpy as np
import pytest

from c2am_tf.maps.edges import REFINEMENTS, edge_refined_map


def _square_scene(size=96, lo=24, hi=72):
    image = np.full((size, size, 3), 30, np.uint8)
    image[lo:hi, lo:hi] = 220
    truth = np.zeros((size, size), bool)
    truth[lo:hi, lo:hi] = True
    return image, truth


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _coarse(truth, stride):
    """The truth averaged over stride x stride cells: what a stride-s map can at best say."""
    h = truth.shape[0] // stride
    return truth.reshape(h, stride, h, stride).mean(axis=(1, 3)).astype(np.float32)


@pytest.mark.parametrize("method", ["guided", "global_smoother"])
def test_refinement_sharpens_a_coarse_map_along_the_image_edges(method):
    image, truth = _square_scene(lo=20, hi=76)  # edges inside the 16-pixel cells
    coarse = _coarse(truth, 16)
    plain = edge_refined_map(image, coarse, "none")
    fine = edge_refined_map(image, coarse, method)
    assert fine.shape == truth.shape and fine.dtype == np.float32
    assert 0.0 <= fine.min() and fine.max() <= 1.0
    # Resized only, the ramp crosses the edges at 16-pixel cells; refined, the step sits on the edges
    # (the values inside and outside get flatter, so compare masks, not errors).
    plain_iou, fine_iou = _iou(plain > 0.5, truth), _iou(fine > 0.5, truth)
    assert fine_iou > 0.97 and fine_iou > plain_iou + 0.05, (plain_iou, fine_iou)


def test_none_is_a_bilinear_resize_and_unknown_methods_are_refused():
    image, truth = _square_scene()
    coarse = _coarse(truth, 16)
    out = edge_refined_map(image, coarse, "none")
    assert out.shape == (96, 96)
    assert out[48, 48] == pytest.approx(1.0) and out[2, 2] == pytest.approx(0.0)
    assert "guided" in REFINEMENTS
    with pytest.raises(ValueError, match="refinement must be one of"):
        edge_refined_map(image, coarse, "bilateral")


def test_non_square_image_keeps_its_shape():
    image = np.zeros((40, 100, 3), np.uint8)
    image[:, 50:] = 255
    coarse = np.zeros((4, 10), np.float32)
    coarse[:, 5:] = 1.0
    out = edge_refined_map(image, coarse, "guided")
    assert out.shape == (40, 100)
    assert out[:, 60:].min() > 0.5 and out[:, :40].max() < 0.5
