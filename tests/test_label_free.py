"""The label-free report fit prints at its end: each signal moves when the maps do, and warns when it should."""

import numpy as np

from c2am_tf.evaluation.label_free import label_free_report, map_boxes


def _maps(count, box, size=16):
    maps = np.zeros((count, size, size), np.float32)
    y0, x0, y1, x1 = box
    maps[:, y0:y1, x0:x1] = 1.0
    return maps


def test_a_map_that_keeps_its_starts_boxes_is_no_sign_of_worse():
    start = _maps(6, (4, 4, 10, 10))
    report = label_free_report(start.copy(), 0.5, margin=-0.2, start_maps=start, start_threshold=0.5,
                               start_name="general_lite0")
    assert report["median_iou_with_start"] == 1.0 and report["degenerate"] == 0.0
    assert report["warnings"] == [] and report["verdict"].startswith("no sign of a worse result")
    assert "median box IoU 1.00 with general_lite0" in report["verdict"]


def test_moved_boxes_degenerate_maps_and_a_near_zero_margin_each_warn():
    start = _maps(10, (4, 4, 10, 10))
    moved = _maps(10, (9, 9, 15, 15))  # every box elsewhere
    report = label_free_report(moved, 0.5, margin=-0.2, start_maps=start, start_threshold=0.5)
    assert report["median_iou_with_start"] < 0.1 and len(report["warnings"]) == 1
    assert report["verdict"].startswith("may be worse than its start: the median box IoU")
    whole = start.copy()
    whole[:4] = 1.0  # four maps foreground everywhere (flat): degenerate
    whole[4:6] = 0.5
    whole[4:6, 0:16, 0:15] = 1.0  # two boxes over 90% of the image
    boxes, degenerate = map_boxes(whole, 0.5)
    assert degenerate.tolist() == [True] * 6 + [False] * 4
    report = label_free_report(whole, 0.5, start_maps=start, start_threshold=0.5)
    assert report["degenerate"] == 0.6 and report["start_degenerate"] == 0.0
    assert any("60% of the maps are degenerate" in w for w in report["warnings"])
    report = label_free_report(start, 0.5, margin=0.004)
    assert "median_iou_with_start" not in report and "polarity margin +0.004 is near zero" in report["warnings"][0]
