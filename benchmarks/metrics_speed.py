"""Time the metrics: 19 thresholds on 1,000 maps of 28x28 (and PxAP on upsampled masks).

    python benchmarks/metrics_speed.py
"""

import time

import cv2
import numpy as np

from c2am_tf.evaluation.metrics import MaxBoxAcc, PxAP
from c2am_tf.maps.boxes import DEFAULT_THRESHOLDS, GTKnownLoc, best_box_per_threshold


def timed(label, fn, repeats=3):
    """Prints the best of ``repeats`` wall times of ``fn()``."""
    best = min(_once(fn) for _ in range(repeats))
    print(f"{label:55s} {best:7.3f} s")


def _once(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


from machine import header


def main():
    """Times every metric on the same maps."""
    rng = np.random.RandomState(0)
    maps = np.stack([cv2.GaussianBlur(m, (7, 7), 3) for m in rng.rand(1000, 28, 28).astype(np.float32)])
    maps /= maps.max(axis=(1, 2), keepdims=True)
    gt = rng.randint(0, 200, (1000, 1, 4)).astype(np.float32)
    gt[..., 2:] += 200

    def gt_known():
        acc = GTKnownLoc(DEFAULT_THRESHOLDS)
        acc.update(np.stack([best_box_per_threshold(m, DEFAULT_THRESHOLDS, 16) for m in maps]), gt)
        acc.result()

    def max_box(multi):
        def run():
            acc = MaxBoxAcc(DEFAULT_THRESHOLDS, multi_contour=multi)
            for m, g in zip(maps, gt / 16):
                acc.update(m, g)
            acc.result()
        return run

    masks = (rng.rand(1000, 28, 28) > 0.5).astype(np.uint8)

    def pxap():
        acc = PxAP()
        acc.update(maps, masks)
        acc.result()

    print(header(measure=False)[0])
    print("1,000 maps of 28x28, 19 thresholds (best of 3):")
    timed("GT-known Loc (single contour)", gt_known)
    timed("MaxBoxAcc (single contour, IoU 30/50/70)", max_box(False))
    timed("MaxBoxAccV2 (multi contour, IoU 30/50/70)", max_box(True))
    timed("PxAP (100 thresholds, 784k pixels)", pxap)


if __name__ == "__main__":
    main()
