"""Metrics: parity with wsolevaluation (D_box_metric.npz, D_mask_pxap.npz) and hand-computed mIoU."""

import numpy as np
import pytest
from conftest import golden

from c2am_tf.evaluation.metrics import ConfusionMatrix, MaxBoxAcc, PxAP, multiple_iou


@pytest.mark.parametrize("run", ["interval_0.01", "ccam19"])
@pytest.mark.parametrize("mode", ["single", "multi"])
def test_max_box_acc_matches_wsolevaluation(run, mode):
    d = golden("D_box_metric")
    metric = MaxBoxAcc(list(d["thr_" + run]), multi_contour=mode == "multi")
    for i, score_map in enumerate(d["scoremaps_f32"]):
        metric.update(score_map.astype(np.float64), d["gt_boxes_resized224"][i][: d["gt_counts"][i]])
    key = f"{run}_{mode}_"
    np.testing.assert_array_equal(metric.num_correct, d[key + "num_correct"])
    result = metric.result()
    np.testing.assert_allclose(list(result["max_box_acc"].values()), d[key + "max_box_acc"])
    assert result["max_box_acc_v2"] == pytest.approx(float(d[key + "mean_over_iou"]))
    np.testing.assert_allclose(list(result["best_threshold"].values()), d[key + "best_thr"])
    assert result["count"] == int(d[key + "cnt"])


@pytest.mark.parametrize("kind", ["continuous", "quantized"])
@pytest.mark.parametrize("step", ["0.01", "0.001"])
def test_pxap_matches_wsolevaluation(kind, step):
    d = golden("D_mask_pxap")
    run = f"{kind}_interval_{step}_"
    metric = PxAP(list(np.arange(0, 1, float(step))))
    maps = d["scoremaps_f32"].astype(np.float64) if kind == "continuous" else d["quantized_scoremaps_k"] / 100.0
    for i in range(0, len(maps), 7):  # batches of any size
        metric.update(maps[i:i + 7], d["gt_mask"][i:i + 7])
    np.testing.assert_array_equal(metric.true_hist, d[run + "gt_true_score_hist"])
    np.testing.assert_array_equal(metric.false_hist, d[run + "gt_false_score_hist"])
    assert metric.result()["pxap"] == pytest.approx(float(d[run + "pxap"]), rel=1e-12)


def test_pxap_ignores_255_and_finds_the_best_mask_iou():
    score = np.array([[0.9, 0.8, 0.3, 0.2]])
    mask = np.array([[1, 255, 1, 0]])  # the 0.8 pixel is ignored
    metric = PxAP()
    metric.update(score, mask)
    result = metric.result()
    # thresholds: >= 0.9 gives tp 1 fp 0 fn 1 (IoU 1/2); >= 0.3 gives tp 2 fp 0 fn 0 (IoU 1)
    assert result["best_iou"] == pytest.approx(100.0)
    assert 0.2 < result["best_threshold"] <= 0.3
    assert result["pxap"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="shape"):
        metric.update(score, mask[:, :2])
    empty = PxAP()
    empty.update(score, np.zeros_like(mask))
    with pytest.raises(RuntimeError, match="no foreground"):
        empty.result()


def test_multiple_iou_uses_plus_one_areas():
    assert multiple_iou([[0, 0, 9, 9]], [[0, 0, 4, 9]])[0, 0] == pytest.approx(50 / 100)


def test_miou_hand_computed_with_ignore():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    # class 0: tp 1, fp 1 (pixel 5), fn 1 -> 1/3; class 1: tp 2, fp 1, fn 0 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    np.testing.assert_allclose(cm.result()["iou"], [100 / 3, 200 / 3, 50])
    assert cm.result()["miou"] == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    with pytest.raises(ValueError, match="target labels"):
        cm.update(np.array([0]), np.array([7]))
    absent = ConfusionMatrix(4)
    absent.update(np.array([0, 1]), np.array([0, 1]))
    assert np.isnan(absent.result()["iou"][3]) and absent.result()["miou"] == 100.0


def test_saliency_metrics_match_hand_computed_curves_averaged_over_images():
    from c2am_tf.evaluation.metrics import SaliencyMetrics

    m = SaliencyMetrics()
    # image A: levels 255, 128, 64, 0 on fg, bg, fg, bg. Thresholds above 128 keep {255}: P 1, R 1/2,
    # F 1.3 * 0.5 / 0.8 = 0.8125, IoU 1/2; above 64 keep {255, 128}: F 0.5, IoU 1/3; above 0 keep three:
    # P 2/3, R 1, F 0.8667 / 1.2 = 0.7222, IoU 2/3; at 0 all: P 1/2, F 0.65 / 1.15 = 0.5652, IoU 1/2
    m.update(np.array([1.0, 0.5, 0.25, 0.0]).reshape(1, 4), np.array([[1, 0, 1, 0]]))
    a = m.result()
    assert a["max_f_beta"] == pytest.approx(0.8125) and a["per_image_iou"] == pytest.approx(200 / 3)
    assert a["mae"] == pytest.approx((128 / 255 + 1 - 64 / 255) / 4)  # (0 + 0.502 + 0.749 + 0) / 4
    # image B, inverted: F and IoU 0 above level 0, 0.5652 and 1/2 at level 0; MAE 1
    m.update(np.array([[0.0, 1.0]]), np.array([[1, 0]]))
    r = m.result()
    # the curves are averaged, then maximized (not the mean of each image's maximum, 0.689)
    assert r["max_f_beta"] == pytest.approx((0.65 / 1.15 + 0.65 / 1.15) / 2)
    assert r["per_image_iou"] == pytest.approx(50.0) and r["per_image_iou_threshold"] == 0.0
    assert r["mae"] == pytest.approx((a["mae"] + 1.0) / 2) and r["images"] == 2
    # at a given threshold: 0.3 is level 77, which keeps {255, 128} of A (1/3) and {255} of B (0)
    assert m.result(0.3)["per_image_iou_at"] == pytest.approx(100 / 6)


def test_saliency_metrics_ignore_trimap_borders_and_keep_a_constant_map():
    from c2am_tf.evaluation.metrics import SaliencyMetrics

    plain, bordered = SaliencyMetrics(), SaliencyMetrics()
    plain.update(np.array([[0.9, 0.2, 0.6]]), np.array([[1, 0, 1]]))
    bordered.update(np.array([[0.9, 0.2, 0.6, 0.0, 1.0]]), np.array([[1, 0, 1, 255, 255]]))
    assert bordered.result() == plain.result()
    flat = SaliencyMetrics()
    flat.update(np.full((2, 2), 0.4), np.array([[1, 1], [0, 0]]))  # not stretched: stays 102 / 255
    assert flat.result()["mae"] == pytest.approx((2 * (1 - 102 / 255) + 2 * 102 / 255) / 4)
    with pytest.raises(ValueError, match="shape"):
        flat.update(np.zeros((2, 2)), np.zeros((2, 3)))
