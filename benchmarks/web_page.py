"""The web page (c2am-tf export-web) in headless Chromium against detect on the same .tflite: boxes and time.

    python benchmarks/web_page.py [--preset general_routed_lite0] [--size 448] [--images 60]
        [--litert-js .ci/web/node_modules]

Exports the site twice (fp32 and int8, calibrated on 100 ImageNet dev half-1 images), runs the first N images of
DUTS-TE dev (and of ImageNet dev half 2) through the page (LiteRT.js, wasm, threads where the page is cross-origin
isolated) and through ``ForegroundDetector`` (ai-edge-litert, 2 threads and 1), and prints: the share of identical
boxes and the largest box difference in pixels, the map's median ms per image after the first (the model call:
the page's ``model.run`` + copy, the interpreter's ``invoke``), and the site's size.
"""

import argparse
import glob
import os
import statistics
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
from machine import header  # noqa: E402
from test_web import LITERT_JS, _browser_or_skip, _serve, _wait  # noqa: E402

from c2am_tf.cli import run_command  # noqa: E402
from c2am_tf.deploy.on_device import ForegroundDetector  # noqa: E402
from c2am_tf.utils.image_io import load_image  # noqa: E402

SHARED = os.path.realpath(os.path.join(HERE, "..", "..", "shared", "data"))  # Chromium takes canonical paths


def page_run(driver, site, paths):
    """(records by file name, ms per image) of the page on ``paths``."""
    from selenium.webdriver.common.by import By

    server = _serve(site)
    try:
        driver.get(f"http://127.0.0.1:{server.server_port}/index.html")
        _wait(driver, "return window.c2am && (window.c2am.ready || window.c2am.errors.length)", 120)
        threads = driver.execute_script("return self.crossOriginIsolated")
        driver.find_element(By.ID, "files").send_keys("\n".join(paths))
        _wait(driver, f"return window.c2am.done === {len(paths)}", 1800)
        records, ms = driver.execute_script("return [window.c2am.records, window.c2am.ms]")
    finally:
        server.shutdown()
    return {r["path"]: r for r in records}, ms, threads


def main(argv=None):
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="general_routed_lite0")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--litert-js", default=LITERT_JS)
    args = p.parse_args(argv)
    print(header()[0], flush=True)
    paths = sorted(glob.glob(os.path.join(SHARED, "DUTS-TE_dev500", "DUTS-TE-Image", "*.jpg")))[: args.images // 2]
    ids = open(os.path.join(SHARED, "ILSVRC_val_dev", "metadata", "image_ids.txt")).read().split()
    inet = [os.path.join(SHARED, "ILSVRC_val_dev", i) for i in ids]
    paths += inet[len(inet) // 2:][: args.images - len(paths)]
    calibration = tempfile.mkdtemp()
    for path in inet[:100]:
        os.symlink(os.path.abspath(path), os.path.join(calibration, os.path.basename(path)))
    driver = _browser_or_skip()
    try:
        print(f"{len(paths)} images (DUTS-TE dev, ImageNet dev half 2), {args.preset} at {args.size}")
        print("| export | identical boxes | largest box difference (px) | page ms (threads) | detect ms, 2 threads | "
              "detect ms, 1 thread | site MiB (model) |")
        print("|---|---|---|---|---|---|---|")
        for quantize in ("none", "int8"):
            site = tempfile.mkdtemp()
            flags = ["--preset", args.preset, "--out", site, "--size", str(args.size), "--quantize", quantize,
                     "--litert-js", args.litert_js, "--overwrite"]
            if quantize == "int8":
                flags += ["--calibration-dir", calibration]
            assert run_command("export-web", flags) == 0
            got, page_ms, threads = page_run(driver, site, paths)
            size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(site, "**"), recursive=True)
                       if os.path.isfile(f))
            row, differences = [], []
            for threads_used in (2, 1):
                detector = ForegroundDetector(os.path.join(site, "model.tflite"), num_threads=threads_used)
                ms = []
                for path in paths:
                    result = detector.detect(load_image(path))
                    ms.append(detector.last_invoke_ms)
                    if threads_used == 2:
                        page_box = np.asarray(got[os.path.basename(path)]["box"])
                        differences.append(np.abs(page_box - np.round(result["box"], 2)))
                row.append(statistics.median(ms[1:]))
            diffs = np.stack(differences)
            same = 100.0 * np.mean(np.all(diffs < 0.011, axis=1))
            print(f"| {quantize} | {same:.1f}% | {diffs.max():.2f} | {statistics.median(page_ms[1:]):.1f} "
                  f"({'yes' if threads else 'no'}) | {row[0]:.1f} | {row[1]:.1f} | {size / 2**20:.1f} "
                  f"({os.path.getsize(os.path.join(site, 'model.tflite')) / 2**20:.1f}) |", flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
