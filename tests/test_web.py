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


# ---- the exported page in a real browser: headless Chromium, LiteRT.js from npm (installed by .ci/run)
LITERT_JS = os.environ.get("C2AM_LITERT_JS", os.path.join(ROOT, ".ci", "web", "node_modules"))
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _browser_or_skip():
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (pip install -r requirements-dev.txt)")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run does)")
    if not os.path.isdir(os.path.join(LITERT_JS, "@litertjs", "core")):
        pytest.skip(f"no LiteRT.js in {LITERT_JS} (npm install --prefix .ci/web @litertjs/core@2.5.3; .ci/run does)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)


def _serve(folder):
    """A static server on 127.0.0.1 with the headers that let LiteRT.js use threads (cross-origin isolation)."""
    import functools
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                          ".js": "text/javascript"}

        def end_headers(self):
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            super().end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _wait(driver, script, deadline_s):
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"the page did not get there in {deadline_s} s ({script}): "
                f"{driver.execute_script('return window.c2am && window.c2am.errors')}")


def test_the_pinned_litert_js_hashes_are_npms():
    import base64
    import hashlib

    from c2am_tf.deploy.web_export import INTEGRITY, LITERT_VERSION

    root = os.path.join(LITERT_JS, "@litertjs")
    if not os.path.isdir(os.path.join(root, "core")):
        pytest.skip(f"no LiteRT.js in {LITERT_JS} (npm install --prefix .ci/web @litertjs/core@2.5.3; .ci/run does)")
    assert json.load(open(os.path.join(root, "core", "package.json")))["version"] == LITERT_VERSION
    for name, pinned in INTEGRITY.items():
        digest = base64.b64encode(hashlib.sha384(open(os.path.join(root, name), "rb").read()).digest()).decode()
        assert pinned == f"sha384-{digest}", name


def test_the_page_boxes_photos_in_chromium_as_detect_does(tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    from c2am_tf.cli import run_command

    driver = _browser_or_skip()
    try:
        photos = tmp_path / "photos"
        photos.mkdir()
        rng = np.random.RandomState(0)
        for i in range(22):  # photos of several sizes and shapes: a bright object on a textured ground
            h, w = rng.randint(60, 400), rng.randint(60, 400)
            image = (rng.rand(h, w, 3) * 90).astype(np.uint8)
            y0, x0 = rng.randint(0, h // 2), rng.randint(0, w // 2)
            image[y0:y0 + h // 3, x0:x0 + w // 3] = rng.randint(150, 255, 3)
            Image.fromarray(image).save(photos / (f"p{i:02d}.png" if i % 2 else f"p{i:02d}.jpg"))
        (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
        site = tmp_path / "site"
        assert run_command("export-web", ["--preset", "cub_lite0", "--out", str(site), "--size", "224",
                                          "--litert-js", LITERT_JS]) == 0
        assert run_command("detect", [str(photos), "--model", str(site / "model.tflite"), "--out",
                                      str(tmp_path / "detect"), "--no-overlays"]) == 0
        want = {os.path.basename(r["path"]): r for r in
                json.loads((tmp_path / "detect" / "boxes.json").read_text())["images"]}
        server = _serve(site)
        driver.get(f"http://127.0.0.1:{server.server_port}/index.html")
        _wait(driver, "return window.c2am && (window.c2am.ready || window.c2am.errors.length)", 120)
        assert driver.execute_script("return window.c2am.ready"), driver.execute_script("return window.c2am.errors")
        files = sorted(str(p) for p in photos.iterdir()) + [str(tmp_path / "broken.jpg")]
        driver.find_element(By.ID, "files").send_keys("\n".join(files))
        _wait(driver, f"return window.c2am.done === {len(files)}", 300)
        records = driver.execute_script("return window.c2am.records")
        got = {r["path"]: r for r in records}
        assert sorted(got) == sorted(want) and len(got) == 22
        for name, record in want.items():  # the page's box is detect's, to a pixel
            assert (got[name]["width"], got[name]["height"]) == (record["width"], record["height"])
            np.testing.assert_allclose(got[name]["box"], record["box"], atol=1.0, err_msg=name)
        # a file that is no image: a message on the page, not a blank one
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .error")]
        assert len(errors) == 1 and errors[0].startswith("broken.jpg: not an image")
        assert "could not be read" in driver.find_element(By.ID, "status").text
        # LiteRT.js that is not the pinned file (a changed CDN, a bad copy): refused, and said on the page
        page = (site / "index.html").read_text()
        (site / "index.html").write_text(page.replace('": "sha384-', '": "sha384-X', 1))
        driver.get(f"http://127.0.0.1:{server.server_port}/index.html")
        _wait(driver, "return document.getElementById('status').className === 'error'", 60)
        assert driver.find_element(By.ID, "status").text.startswith("The page could not load its code")
        server.shutdown()
    finally:
        driver.quit()
