"""The web page's JavaScript port of the device side's rules (c2am_tf/deploy/web/c2am_rules.js) against numpy:
the resize every image gets, and the box rule, on hundreds of maps with ties, plateaus and empty ones."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT

from c2am_tf.deploy.on_device import box_from_map, resize_rgb
from c2am_tf.maps.geometry import band_thresholds, scale_box

RULES = os.path.join(ROOT, "c2am_tf", "deploy", "web", "c2am_rules.js")
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (the port runs in Node.js here)")


def _node(script, payload):
    """Runs an ES module ``script`` (it imports the rules as ``rules``) on ``payload`` (JSON on stdin)."""
    code = (f"import * as rules from {json.dumps('file://' + RULES)};\n"
            "let input = ''; process.stdin.on('data', (d) => input += d);\n"
            "process.stdin.on('end', () => { const data = JSON.parse(input); " + script + " });\n")
    proc = subprocess.run([NODE, "--input-type=module", "-e", code], input=json.dumps(payload), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _maps(count, rng):
    """Maps as a device sees them: smooth blobs, several blobs, plateaus (ties), noise, empty and flat ones."""
    maps = []
    for i in range(count):
        h, w = rng.randint(3, 30), rng.randint(3, 30)
        kind = i % 6
        if kind == 0:
            m = np.zeros((h, w), np.float32)
        elif kind == 1:
            m = np.full((h, w), rng.rand(), np.float32)
        elif kind == 2:  # two equal plateaus: a tie between regions
            m = np.zeros((h, w), np.float32)
            m[: h // 3 + 1, : w // 3 + 1] = 0.8
            m[-(h // 3 + 1):, -(w // 3 + 1):] = 0.8
        elif kind == 3:
            m = rng.rand(h, w).astype(np.float32)
        else:
            yy, xx = np.mgrid[:h, :w]
            m = np.zeros((h, w), np.float32)
            for _ in range(rng.randint(1, 4)):
                cy, cx, s = rng.rand() * h, rng.rand() * w, 1 + rng.rand() * max(h, w) / 3
                m += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)).astype(np.float32)
            m = (m / max(m.max(), 1e-6)).astype(np.float32)
            if kind == 5:  # a quantized map, as an int8 model's: many equal values
                m = (np.round(m * 255) / 255).astype(np.float32)
        maps.append(m)
    return maps


@needs_node
def test_the_box_rule_is_numpys_on_hundreds_of_maps():
    rng = np.random.RandomState(0)
    maps = _maps(300, rng)
    cases = []
    for i, m in enumerate(maps):
        threshold, band = [0.2, 0.35, 0.5, 0.75][i % 4], [0.0, 0.1][i % 2]
        cases.append({"map": m.ravel().tolist(), "h": m.shape[0], "w": m.shape[1],
                      "thresholds": band_thresholds(threshold, band), "threshold": threshold, "band": band})
    got = _node("console.log(JSON.stringify(data.map((c) => rules.boxFromMap(Float32Array.from(c.map), c.h, c.w, "
                "c.thresholds))));", cases)
    for case, m, box in zip(cases, maps, got):
        want = box_from_map(m, case["threshold"], case["band"])
        assert np.array_equal(np.asarray(box, np.float32), want), (case["h"], case["w"], box, want.tolist())
    width, height = 333, 250
    got = _node("console.log(JSON.stringify(data.map((b) => rules.scaleBox(b, 14, 14, 333, 250))));",
                [box_from_map(m, 0.5).tolist() for m in maps[:50]])
    for m, box in zip(maps[:50], got):
        assert np.array_equal(np.asarray(box, np.float32), scale_box(box_from_map(m, 0.5), (14, 14), (width, height)))


@needs_node
def test_the_resize_is_numpys_to_the_level():
    rng = np.random.RandomState(1)
    cases = []
    for size_in, size_out in [((40, 56), (64, 64)), ((300, 200), (64, 64)), ((17, 9), (32, 48)), ((64, 64), (64, 64)),
                              ((123, 457), (448, 448)), ((5, 700), (32, 32))]:
        image = rng.randint(0, 256, size_in + (3,)).astype(np.uint8)
        image[: size_in[0] // 2] //= 3  # edges, not only noise
        cases.append((image, size_out))
    payload = [{"rgb": im.ravel().tolist(), "h": im.shape[0], "w": im.shape[1], "oh": o[0], "ow": o[1]} for im, o in cases]
    got = _node("console.log(JSON.stringify(data.map((c) => Array.from(rules.resizeRgb(Uint8Array.from(c.rgb), c.h, "
                "c.w, c.oh, c.ow)))));", payload)
    for (image, (oh, ow)), pixels in zip(cases, got):
        want = resize_rgb(image, ow, oh)
        np.testing.assert_array_equal(np.asarray(pixels, np.uint8).reshape(oh, ow, 3), want)
