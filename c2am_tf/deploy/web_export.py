"""A static web page that boxes and masks a user's photos in the browser, with the TFLite export and LiteRT.js.

``export_web`` writes a folder any static server can host: ``index.html``, ``c2am.js`` (the page),
``c2am_rules.js`` (the device side's resize and box rule in JavaScript, checked against numpy), ``model.tflite``
(``tflite_export.convert``), ``config.json`` (threshold, the box band's thresholds, sizes, the output's
quantization, where LiteRT.js's wasm is) and a README. LiteRT.js (``@litertjs/core``) is either vendored from a
folder of its npm package (``litert_js``: ``node_modules/@litertjs``), or loaded from the jsDelivr CDN at the
pinned version ``LITERT_VERSION``. Photos never leave the page; it downloads the ``c2am_tf.boxes/v1`` records of
what it processed.
"""

import json
import os
import shutil

from c2am_tf.deploy import tflite_export
from c2am_tf.deploy.on_device import litert_interpreter
from c2am_tf.maps.geometry import EVAL_CROP, band_thresholds
from c2am_tf.utils.errors import ConfigError
from c2am_tf.utils.files import make_folder, write_atomically

LITERT_VERSION = "2.5.3"
CDN = "https://cdn.jsdelivr.net/npm/@litertjs/{package}@" + LITERT_VERSION
# the sha384 of the two ES modules of that version (npm's files, which jsDelivr serves): the page's import map
# pins them, so a changed file on the CDN is refused by the browser (tests/test_web.py checks them against npm's)
INTEGRITY = {"core/dist/index.js": "sha384-MapSVJ/DPwvaWpp7q+Bid9O3uY1oB0KOU1QRMP+Mm5zdz5oMme/BUyX6dVAMWnPg",
             "wasm-utils/dist/index.js": "sha384-HIPwlWsctS5BRqrnvJKDVJ8SvqKB0QmiImdr6+hpP7+8UqeMJX/qrBkdfKQV2WZ/"}
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
PAGE_FILES = ("index.html", "c2am.js", "c2am_rules.js")
# what the page needs of the npm packages: the ES modules and the two wasm builds it may pick (threads or not)
LITERT_FILES = ("core/dist/index.js", "core/wasm/litert_wasm_internal.js", "core/wasm/litert_wasm_internal.wasm",
                "core/wasm/litert_wasm_threaded_internal.js", "core/wasm/litert_wasm_threaded_internal.wasm",
                "wasm-utils/dist/index.js")

README = """# C2AM in the browser

Open `index.html` through a web server (a page opened from disk cannot fetch its model):

    python -m http.server 8000        # then http://localhost:8000/

A plain server runs the model on one thread. LiteRT.js uses threads only where the page is cross-origin isolated:
serve it with the headers `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy:
require-corp`. Photos never leave the page; "Download boxes.json" saves the boxes (`c2am_tf.boxes/v1`, the
format of `c2am-tf predict` and `detect`). Model: {model}, {quantize}, {size} x {size} input. LiteRT.js
{litert}.
"""


def _litert_root(folder):
    """The folder holding ``core/`` and ``wasm-utils/`` of the npm packages, from ``node_modules``,
    ``node_modules/@litertjs`` or the latter itself; a ``ConfigError`` of ``litert_js`` when it is none of them."""
    for root in (folder, os.path.join(folder, "@litertjs"), os.path.join(folder, "node_modules", "@litertjs")):
        if all(os.path.isfile(os.path.join(root, name)) for name in LITERT_FILES):
            return root
    raise ConfigError("litert_js", f"{folder} holds no LiteRT.js {LITERT_VERSION} (npm install "
                                   f"@litertjs/core@{LITERT_VERSION}, then give node_modules)")


def tflite_output(content):
    """(map shape (h, w), (scale, zero point) or (0, 0)) of a ``.tflite`` model's output."""
    interpreter = litert_interpreter()(model_content=content)
    detail = interpreter.get_output_details()[0]
    scale, zero = detail["quantization"]
    return [int(v) for v in detail["shape"][1:3]], [float(scale), int(zero)]


def export_web(model, out, label, size=EVAL_CROP, quantize="none", calibration=None, litert_js=None):
    """Writes the site of ``model`` (named ``label`` on the page) into the folder ``out``; ``quantize`` and
    ``calibration`` as ``tflite_export.convert``; ``litert_js``: a folder of the npm packages to vendor (else the
    CDN). Returns {file name: bytes written}."""
    root = _litert_root(litert_js) if litert_js else None
    content = tflite_export.convert(model, size, quantize, calibration)
    map_size, quantization = tflite_output(content)
    metadata = tflite_export.export_metadata(model, size, quantize)
    if root is None:
        core, utils, litert = CDN.format(package="core"), CDN.format(package="wasm-utils"), "from jsDelivr"
        wasm = core + "/wasm/"
    else:
        core, utils, wasm, litert = "./litert/core", "./litert/wasm-utils", "./litert/core/wasm/", "vendored in litert/"
    config = {"model": label, "size": int(size), "map_size": map_size, "quantize": quantize,
              "threshold": metadata["threshold"], "box_band": metadata["box_band"],
              "thresholds": band_thresholds(metadata["threshold"], metadata["box_band"]),
              "output_quantization": quantization, "wasm": wasm, "litert_version": LITERT_VERSION}
    make_folder(out)
    written = {"model.tflite": content, "config.json": (json.dumps(config, indent=1) + "\n").encode(),
               "README.md": README.format(model=label, quantize=quantize, size=size,
                                          litert=f"{LITERT_VERSION}, {litert}").encode()}
    for name in PAGE_FILES:
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            text = f.read()
        if name == "index.html":
            urls = {f"{core}/dist/index.js": INTEGRITY["core/dist/index.js"],
                    f"{utils}/dist/index.js": INTEGRITY["wasm-utils/dist/index.js"]}
            text = text.replace("__LITERT__/core", core).replace("__LITERT__/wasm-utils", utils)
            text = text.replace('"__INTEGRITY__"', json.dumps(urls)).replace("__VERSION__", LITERT_VERSION)
        written[name] = text.encode()
    for name, data in written.items():
        write_atomically(os.path.join(out, name), data)
    if root is not None:
        for name in LITERT_FILES:
            target = os.path.join(out, "litert", name)
            make_folder(os.path.dirname(target))
            shutil.copyfile(os.path.join(root, name), target)
            written[os.path.join("litert", name)] = os.path.getsize(target)
    return {name: (len(data) if isinstance(data, bytes) else data) for name, data in written.items()}
