"""Map -> box and GT-known Loc: exact parity with the reference (C_boxes.npz, D_corloc.npz)."""

import numpy as np
import pytest
from conftest import golden

from c2am_tf.maps.boxes import DEFAULT_THRESHOLDS, GTKnownLoc, best_box_per_threshold, box_iou, boxes_from_map


@pytest.mark.parametrize("size", [14, 28, 224])
def test_single_and_multi_contour_boxes_match_reference(size):
    d = golden("C_boxes")
    p = f"s{size}_"
    thresholds, factor = d[p + "thresholds"], float(d[p + "factor"])
    flat, counts = d[p + "ccam_multi_boxes_flat"], d[p + "ccam_multi_counts"]
    offsets = np.concatenate([[0], np.cumsum(counts.ravel())])
    for i, score_map in enumerate(d[p + "maps"]):
        single = boxes_from_map(score_map, thresholds, False, factor)
        multi = boxes_from_map(score_map, thresholds, True, factor)
        for j in range(len(thresholds)):
            np.testing.assert_array_equal(single[j], d[p + "ccam_single_boxes"][i, j])
            k = i * len(thresholds) + j
            want = flat[offsets[k]:offsets[k + 1]]
            # contour order is OpenCV's business: compare as multisets
            assert sorted(map(tuple, multi[j])) == sorted(map(tuple, want)), (size, i, j)
        wsol = boxes_from_map(score_map.astype(np.float64), thresholds, False, 1.0)
        np.testing.assert_array_equal(np.stack([b[0] for b in wsol]), d[p + "wsol_single_boxes_f64input"][i, :, 0])


def test_integer_cutoff_is_computed_in_float64():
    d = golden("C_boxes")
    table = d["thresh_int_table"]
    for j, t in enumerate(d["s14_thresholds"]):
        for peak in range(256):
            m = np.zeros((3, 3), np.float32)
            m[1, 1] = peak / 255.0
            peak_u8 = int((m * 255).astype(np.uint8).max())
            assert int(float(t) * peak_u8) == table[j, peak_u8]


@pytest.mark.parametrize("subset", ["main", "edge"])
@pytest.mark.parametrize("flag", [0, 1])
def test_corloc_matches_reference_loop(subset, flag):
    d = golden("D_corloc")
    maps = d[f"{subset}_ccam_28x28_f32"]
    if flag:
        maps = (1 - maps).astype(np.float32)
    acc = GTKnownLoc(d["thresholds"])
    for start in range(0, len(maps), 16):  # the reference's batches of 16
        boxes = np.stack([best_box_per_threshold(m, d["thresholds"], 16.0) for m in maps[start:start + 16]])
        acc.update(boxes, d[f"{subset}_gt_boxes_448"][start:start + 16])
    result = acc.result()
    key = f"{subset}_flag{flag}_"
    np.testing.assert_array_equal(acc.correct, d[key + "corcorrect"].astype(np.int64))
    np.testing.assert_allclose(result["per_threshold"], d[key + "corloc_percent"])
    assert result["best"] == pytest.approx(float(d[key + "best_corloc"]))
    assert result["best_threshold"] == pytest.approx(float(d[key + "best_threshold"]))
    assert result["total"] == int(d[key + "total"])


def test_inclusive_option_counts_iou_exactly_half():
    pred = np.array([[[0, 0, 10, 10]]], np.float32)  # IoU with gt = 50 / 100
    gt = np.array([[0, 0, 10, 5]], np.float32)
    assert box_iou(pred[0, 0], gt[0]) == pytest.approx(0.5)
    strict, inclusive = GTKnownLoc([0.5]), GTKnownLoc([0.5], inclusive=True)
    strict.update(pred, gt)
    inclusive.update(pred, gt)
    assert strict.result()["best"] == 0.0
    assert inclusive.result()["best"] == 100.0


def test_multiple_gt_boxes_take_the_best_match():
    acc = GTKnownLoc([0.5])
    pred = np.array([[[0, 0, 10, 10]], [[50, 50, 60, 60]]], np.float32)
    gt = np.array([[[20, 20, 30, 30], [0, 0, 10, 10]], [[0, 0, 5, 5], [0, 0, 6, 6]]], np.float32)
    acc.update(pred, gt)
    assert acc.correct.tolist() == [1]
    assert acc.result()["best"] == 50.0


def test_empty_map_gives_zero_box_and_bad_maps_raise():
    assert boxes_from_map(np.zeros((5, 5), np.float32), [0.5])[0].tolist() == [[0, 0, 0, 0]]
    with pytest.raises(ValueError, match="2-D"):
        boxes_from_map(np.zeros((1, 5, 5)), [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        boxes_from_map(np.full((5, 5), 2.0), [0.5])
    with pytest.raises(ValueError, match="NaN"):
        boxes_from_map(np.full((5, 5), np.nan), [0.5])
    with pytest.raises(ValueError, match="pred_boxes"):
        GTKnownLoc().update(np.zeros((2, 3, 4)), np.zeros((2, 4)))
    assert len(DEFAULT_THRESHOLDS) == 19


# Maps built to break contour heuristics: 1-px diagonal chains, noise, exact uint8 edges.
_ADVERSARIAL = {"diagonal_chain", "uniform_random", "uint8_exact_values", "just_below_k_over_255"}


@pytest.mark.parametrize("size", [14, 28])
def test_graph_boxes_agree_with_opencv(size):
    import tensorflow as tf

    from c2am_tf.deploy.graph_boxes import boxes_from_maps_tf

    d = golden("C_boxes")
    maps, names = d[f"s{size}_maps"], [str(n) for n in d[f"s{size}_names"]]
    fn = tf.function(boxes_from_maps_tf, input_signature=[
        tf.TensorSpec([None, None, None], tf.float32), tf.TensorSpec([], tf.float64)])
    agree = total = 0
    for t in d[f"s{size}_thresholds"]:
        graph = fn(maps, t).numpy()
        for i, m in enumerate(maps):
            ref = boxes_from_map(m, [t])[0][0]
            same = np.array_equal(ref, graph[i])
            if names[i] not in _ADVERSARIAL:
                assert same, (names[i], t, ref, graph[i])
            agree += same
            total += 1
    assert agree / total > 0.9  # adversarial maps included


def test_graph_boxes_pick_opencvs_largest_contour_on_multi_blob_maps():
    """Blurred noise thresholded gives many blobs with spurs, one-pixel necks and thick holes; the
    in-graph rule (SavedModel, TFLite) must pick the contour OpenCV picks (it once missed 5 in 600)."""
    import cv2

    from c2am_tf.deploy.graph_boxes import boxes_from_maps_tf

    rng = np.random.RandomState(0)
    maps = []
    for i in range(600):
        m = cv2.GaussianBlur(rng.rand(28, 28).astype(np.float32), (0, 0), 1.0 + (i % 3) * 0.5)
        maps.append((m - m.min()) / (m.max() - m.min()))
    maps = np.stack(maps)
    for t in (0.5, 0.7):
        want = np.stack([boxes_from_map(m, [t])[0][0] for m in maps])
        got = np.concatenate([np.asarray(boxes_from_maps_tf(maps[i:i + 100], t)) for i in range(0, 600, 100)])
        np.testing.assert_array_equal(got, want)


def _blob_maps(n, size=28, seed=0):
    import cv2

    rng = np.random.RandomState(seed)
    maps = []
    for i in range(n):
        m = cv2.GaussianBlur(rng.rand(size, size).astype(np.float32), (0, 0), 1.0 + (i % 3) * 0.5)
        maps.append((m - m.min()) / (m.max() - m.min()))
    return np.stack(maps)


def test_banded_box_is_the_mean_of_the_boxes_across_the_band():
    from c2am_tf.maps.geometry import band_thresholds

    assert band_thresholds(0.35, 0.1) == [0.25, 0.3, 0.35, 0.4, 0.45]
    assert band_thresholds(0.9, 0.2) == [0.7, 0.8, 0.9]  # 1.0 would be an empty box: left out
    for m in _blob_maps(20):
        for t, band in ((0.35, 0.1), (0.5, 0.2), (0.1, 0.15)):
            want = np.mean([boxes_from_map(m, [u], factor=16)[0][0] for u in band_thresholds(t, band)], axis=0)
            np.testing.assert_array_equal(best_box_per_threshold(m, [t], 16, band)[0], want)
        # no band: the box at the threshold itself, the reference rule
        np.testing.assert_array_equal(best_box_per_threshold(m, DEFAULT_THRESHOLDS, 16, 0.0),
                                      best_box_per_threshold(m, DEFAULT_THRESHOLDS, 16))


def test_a_band_steadies_a_box_that_jumps_when_two_blobs_merge():
    """Two blobs joined by a ridge at 0.45 of the peak: at 0.4 the box holds both, at 0.5 one. The
    banded box at 0.45 lies between them, while the box at 0.45 alone is one or the other."""
    m = np.zeros((20, 20))
    m[4:16, 2:8] = 1.0
    m[5:15, 12:18] = 0.9
    m[9:11, 8:12] = 0.45 + 1e-3
    alone = [best_box_per_threshold(m, [t])[0] for t in (0.4, 0.5)]
    assert alone[0].tolist() == [2, 4, 18, 16] and alone[1].tolist() == [2, 4, 8, 16]
    banded = best_box_per_threshold(m, [0.45], band=0.1)[0]
    assert alone[1][2] < banded[2] < alone[0][2]


def test_graph_banded_boxes_agree_with_numpy():
    from c2am_tf.deploy.graph_boxes import boxes_from_maps_tf

    maps = _blob_maps(100, seed=1)
    for t, band in ((0.35, 0.1), (0.6, 0.3)):
        want = np.stack([best_box_per_threshold(m, [t], band=band)[0] for m in maps])
        np.testing.assert_allclose(np.asarray(boxes_from_maps_tf(maps, t, band=band)), want, atol=1e-5)
