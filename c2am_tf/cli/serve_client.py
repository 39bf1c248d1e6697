"""Ask a C2AM model served by TensorFlow Serving for boxes, over REST or gRPC.

    c2am-tf serve-client IMAGE_OR_DIR [...] [--host localhost] [--model c2am] \\
        [--protocol rest|grpc] [--rest-format instances|inputs] [--version V] \\
        [--resize N] [--signature serving_default] [--dry-run]

Serve the export (``c2am-tf export-saved-model --out models/c2am``) with the official
container (REST on 8501, gRPC on 8500):

    docker run --rm -p 8501:8501 -p 8500:8500 \\
        --mount type=bind,source="$PWD/models/c2am",target=/models/c2am \\
        -e MODEL_NAME=c2am tensorflow/serving

Each image is one request (uint8 RGB, its own size; ``--resize N`` sends N x N instead
and maps the box back). Prints one line per image: path, box x0 y0 x1 y1 in original
pixels, score. ``--dry-run`` prints the request instead of sending it: each image's REST JSON body on
standard output, one a line, and the URL on standard error, so that
``c2am-tf serve-client x.jpg --dry-run > body.json`` then ``curl -d @body.json URL`` sends the same;
or the gRPC request with its tensor summarized.
"""

import re

from c2am_tf.cli.common import command_parser
from c2am_tf.deploy import serving_client as client
from c2am_tf.utils.files import image_paths


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--host", default="localhost", help="TF Serving host")
    p.add_argument("--port", type=int, help="default 8501 for REST, 8500 for gRPC")
    p.add_argument("--model", default="c2am", help="the model name TF Serving serves (MODEL_NAME)")
    p.add_argument("--version", type=int, help="a model version (default: the latest)")
    p.add_argument("--protocol", choices=["rest", "grpc"], default="rest", help="REST (port 8501) or gRPC (port 8500)")
    p.add_argument("--rest-format", choices=client.REST_FORMATS, default="instances",
                   help="row (instances) or columnar (inputs) JSON")
    p.add_argument("--signature", default="serving_default", help="the SavedModel signature to call")
    p.add_argument("--resize", type=int, help="send images resized to N x N (smaller requests)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds one request may take in all, connection to last byte")
    p.add_argument("--dry-run", action="store_true", help="print the requests, send nothing")
    return p


def parse_args(argv=None, prog=None):
    """Command-line flags."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.port is None:
        args.port = 8501 if args.protocol == "rest" else 8500
    if not re.fullmatch(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]", args.host):
        p.error(f"--host must be a host name or address (e.g. localhost, 10.0.0.5, [::1]); got {args.host!r}")
    if not 0 < args.port < 65536:
        p.error(f"--port must be in 1..65535; got {args.port}")
    try:
        args.paths = image_paths(args.inputs)
    except (FileNotFoundError, ValueError) as err:
        p.error(str(err))
    return args


def main(argv=None, prog=None):
    """Entry point; returns the exit status."""
    args = parse_args(argv, prog)
    return client.send_images(args.paths, args.host, args.port, args.model, args.version, args.protocol,
                              args.rest_format, args.signature, args.resize, args.timeout, args.dry_run)
