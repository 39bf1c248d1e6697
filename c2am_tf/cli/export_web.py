"""Export a static web page that boxes and masks photos in the browser (LiteRT.js; photos never leave the page).

    npm install @litertjs/core@2.5.3                 # once: to vendor LiteRT.js (else the page loads it from a CDN)
    c2am-tf export-web --preset general_routed_lite0 --out site --quantize int8 --calibration-dir photos/ \\
        --litert-js node_modules
    cd site && python -m http.server 8000           # http://localhost:8000/ (one thread; see site/README.md)

Writes OUT/index.html, c2am.js, c2am_rules.js (the device side's resize and box rule), model.tflite, config.json
and README.md (and OUT/litert/ with --litert-js). The page downloads a c2am_tf.boxes/v1 file of its photos.
"""

import time

from c2am_tf.cli.common import add_model_flags, claim_output, command_inputs, command_parser, output_folder
from c2am_tf.cli.export_tflite import add_quantize_flags, calibration, calibration_paths
from c2am_tf.deploy.web_export import LITERT_VERSION, export_web
from c2am_tf.presets import load, model_label


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    add_model_flags(p)
    p.add_argument("--out", required=True, type=output_folder, help="the site's folder")
    add_quantize_flags(p)
    p.add_argument("--litert-js", help=f"a node_modules folder with @litertjs/core {LITERT_VERSION} to vendor "
                                       "(default: the page loads it from jsDelivr)")
    p.add_argument("--overwrite", action="store_true", help="replace the site already in --out")
    return p


def main(argv=None, prog=None):
    """Entry point."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    paths = calibration_paths(p, args)
    claim_output(p, args.out, args.overwrite, inputs=command_inputs(args) + paths)
    start = time.time()
    written = export_web(load(args.model, args.preset), args.out, model_label(args.model, args.preset), args.size,
                         args.quantize, calibration(args, paths), args.litert_js)
    print(f"{args.out}: {len(written)} files, {sum(written.values()) / 2**20:.1f} MiB (model "
          f"{written['model.tflite'] / 2**20:.2f} MiB, {args.quantize}) in {time.time() - start:.1f} s; "
          f"serve it: cd {args.out} && python -m http.server")
