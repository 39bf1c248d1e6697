"""How a run on unlabeled images went, told without labels: what ``fit`` prints at its end.

Three signals, each one a user can act on:

- **agreement with the start**: the median IoU between the trained model's box and its starting head's box on
  the same training images. Adapting a good head should move its boxes a little; a median far below 0.5 means
  the map changed its mind about most images, which is where a run goes wrong.
- **degenerate maps**: the share of images whose box covers over 90% of the image, or whose map is flat (no
  foreground to box). A collapsing head shows here first.
- **polarity margin**: the border-minus-centre statistic (``C2AMModel``'s ``border_minus_center``) the polarity
  is chosen from; near zero, foreground and background were told apart by chance.

None of them is a score: they say whether a result looks worse than its start, never that it is better. A few
labelled images (``fit --val-annotations``) measure it.
"""

import numpy as np

from c2am_tf.maps.boxes import best_box_per_threshold, box_iou

DEGENERATE_AREA = 0.9  # a box over this share of the image says nothing about where the object is
FLAT_RANGE = 1e-3  # a map whose values span less than this has no foreground
POLARITY_NEAR_ZERO = 0.02  # |border - centre| of the head's sigmoid map below this: polarity by chance
AGREEMENT_LOW = 0.5  # median box IoU with the start below this: most boxes moved
DEGENERATE_RISE = 0.05  # degenerate share this much above the start's


def map_boxes(maps, threshold):
    """(N, 4) boxes in map cells, one per map at ``threshold`` (the largest contour), and (N,) bool: degenerate."""
    boxes, degenerate = [], []
    for m in np.asarray(maps, np.float32):
        flat = not np.isfinite(m).all() or float(m.max() - m.min()) < FLAT_RANGE
        box = np.zeros(4, np.float32) if flat else best_box_per_threshold(m, [threshold])[0]
        area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
        boxes.append(box)
        # a box spans corner cells (x1 = the last cell's index): the whole map is (w - 1) x (h - 1)
        whole = max(m.shape[0] - 1, 1) * max(m.shape[1] - 1, 1)
        degenerate.append(flat or area <= 0 or area > DEGENERATE_AREA * whole)
    return np.asarray(boxes, np.float32), np.asarray(degenerate, bool)


def label_free_report(maps, threshold, margin=None, start_maps=None, start_threshold=None, start_name="its start"):
    """The signals of this module as a dict: ``images``, ``degenerate``, ``polarity_margin`` and, given the start's
    maps of the same images, ``start_degenerate`` and ``median_iou_with_start``; plus ``warnings`` (a list of
    sentences) and ``verdict`` (one line).

    >>> m = np.zeros((4, 8, 8), np.float32); m[:, 2:6, 2:6] = 1.0
    >>> report = label_free_report(m, 0.5, margin=-0.3, start_maps=m, start_threshold=0.5)
    >>> report["median_iou_with_start"], report["degenerate"], report["warnings"]
    (1.0, 0.0, [])
    """
    boxes, degenerate = map_boxes(maps, threshold)
    report = {"images": len(boxes), "degenerate": float(degenerate.mean()) if len(boxes) else 0.0}
    warnings = []
    if margin is not None:
        report["polarity_margin"] = float(margin)
        if abs(margin) < POLARITY_NEAR_ZERO:
            warnings.append(f"the polarity margin {margin:+.3f} is near zero: the map barely tells border from "
                            "centre, so which side is foreground may be wrong")
    if start_maps is not None:
        start_boxes, start_degenerate = map_boxes(start_maps, start_threshold)
        report["start_degenerate"] = float(start_degenerate.mean()) if len(start_boxes) else 0.0
        both = ~(degenerate | start_degenerate)
        ious = [box_iou(a, b) for a, b in zip(boxes[both], start_boxes[both])]
        report["median_iou_with_start"] = float(np.median(ious)) if ious else 0.0
        if report["median_iou_with_start"] < AGREEMENT_LOW:
            warnings.append(f"the median box IoU with {start_name} is {report['median_iou_with_start']:.2f}: most "
                            "boxes moved; look at the pictures, or measure with --val-annotations")
        if report["degenerate"] > report["start_degenerate"] + DEGENERATE_RISE:
            warnings.append(f"{report['degenerate']:.0%} of the maps are degenerate (box over "
                            f"{DEGENERATE_AREA:.0%} of the image, or flat), against {report['start_degenerate']:.0%} "
                            f"for {start_name}")
    elif report["degenerate"] > 2 * DEGENERATE_RISE:
        warnings.append(f"{report['degenerate']:.0%} of the maps are degenerate (box over {DEGENERATE_AREA:.0%} "
                        "of the image, or flat)")
    report["warnings"] = warnings
    facts = [f"{report['degenerate']:.0%} degenerate maps"]
    if "start_degenerate" in report:
        facts = [f"median box IoU {report['median_iou_with_start']:.2f} with {start_name}",
                 f"{report['degenerate']:.0%} degenerate maps ({report['start_degenerate']:.0%} for it)"]
    if margin is not None:
        facts.append(f"polarity margin {margin:+.3f}")
    if warnings:
        report["verdict"] = f"may be worse than {start_name}: {'; '.join(warnings)}"
    else:
        report["verdict"] = (f"no sign of a worse result ({', '.join(facts)}); without labels this cannot say it is "
                             "better")
    return report
