"""A routed model: a general model's head for most images, and heads of their own for chosen look-alike clusters.

    c2am-tf fit-routed --preset general_lite0 --dataset folder --data-dir images.txt --clusters 3 --out runs/routed
        # prints the k-means clusters of the images (size, commonest folders) and asks for --own
    c2am-tf fit-routed --preset general_lite0 --dataset folder --data-dir images.txt --clusters 3 --own 1 \\
        --out runs/routed   # trains cluster 1's head (the fit flags are its recipe), writes OUT/routed.keras

``--model`` / ``--preset`` is the general model: trained on every image (its backbone is used for all heads,
so --backbone must match it). Each --own cluster trains under OUT/cluster<J> and resumes like ``fit``. With an
EfficientNet-Lite backbone its ImageNet classes vote too (--class-votes, 5 by default). The routed model keeps the general
model's threshold unless --calibrate names held-out annotated images: each head's threshold is then chosen on
the images routed to it, e.g. ``--calibrate imagenet path/to/ILSVRC half1``.
See ``c2am_tf/training/routing.py`` for why and docs/results/imagenet.md for what it measured.
"""

import logging
import os

from c2am_tf.cli import fit
from c2am_tf.cli.common import add_model_flags, claim_output, command_inputs
from c2am_tf.data import ANNOTATED_DATASETS
from c2am_tf.presets import load
from c2am_tf.training.routing import run_routed
from c2am_tf.training.run_folder import save_atomically
from c2am_tf.training.trainer import TrainConfig
from c2am_tf.utils.errors import ConfigError


def build_parser(prog=None):
    """``fit``'s flags (the cluster heads' recipe) plus the general model, --clusters and --own."""
    p = fit.build_parser(prog)
    p.set_defaults(init_preset="none", lr=1e-3)  # each cluster's head is trained from scratch, as the routed preset
    p.description = __doc__
    add_model_flags(p, heads_only=True)
    p.add_argument("--clusters", type=int, default=3, help="k-means clusters of the training images")
    p.add_argument("--cluster-seed", type=int, default=0,
                   help="k-means seed (k-means can split a collection differently from seed to seed)")
    p.add_argument("--own", type=int, nargs="+", default=None,
                   help="clusters that get a head of their own (the others keep the general head); "
                        "without it the clusters are printed and nothing is trained")
    p.add_argument("--class-votes", type=int, default=None,
                   help="how many of an image's best ImageNet classes vote for a head (the backbone's own "
                        "classifier, EfficientNet-Lite only; 0: the nearest centre alone; default: 5 where the "
                        "backbone has one, else 0)")
    p.add_argument("--calibrate", nargs=3, action="append", default=None, metavar=("DATASET", "DIR", "SPLIT"),
                   help="annotated images held out from scoring (e.g. imagenet DIR half1; repeat it to pool several "
                        "sets): each head's threshold chosen on those routed to it")
    return p


def main(argv=None, prog=None):
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = build_parser(prog)
    args = p.parse_args(argv)
    values = vars(args)
    options = {key: values.pop(key) for key in ROUTED_FLAGS}
    cfg = TrainConfig(**values).validate()
    _check_flags(p, options)
    args.model, args.preset = options["model"], options["preset"]
    path = claim_output(p, os.path.join(cfg.out, "routed.keras"), options["overwrite"] or options["own"] is None,
                        inputs=command_inputs(args) + [directory for _, directory, _ in options["calibrate"]])
    try:
        routed, lines = run_routed(load(args.model, args.preset), cfg, options["clusters"], options["own"],
                                   options["cluster_seed"], options["overwrite"], options["class_votes"],
                                   options["calibrate"])
    except ConfigError:
        raise  # a flag's error (exit 2), by c2am_tf.cli.run_command
    except (ValueError, OSError) as err:  # a cluster's images: one line
        p.exit(1, f"{p.prog}: error: {err}\n")
    print("\n".join(lines))
    if routed is None:
        p.exit(2, f"{p.prog}: choose the clusters that get their own head with --own J [J ...]\n")
    save_atomically(routed, path)
    print(f"saved: {path} (heads of their own: clusters {', '.join(map(str, options['own']))})")
    return 0


# the flags that are fit-routed's own, not the cluster heads' recipe (TrainConfig's)
ROUTED_FLAGS = ("overwrite", "clusters", "own", "cluster_seed", "class_votes", "calibrate", "model", "preset")


def _check_flags(p, options):
    """Flag errors (exit 2) for a cluster count, --own, --class-votes or --calibrate no run can use."""
    k, own = options["clusters"], options["own"]
    if k < 1:
        p.error("--clusters must be at least 1")
    if own is not None and any(not 0 <= j < k for j in own):
        p.error(f"--own {own}: there are {k} clusters (0..{k - 1})")
    if options["class_votes"] is not None and options["class_votes"] < 0:
        p.error("--class-votes must be 0 (off) or more")
    options["calibrate"] = options["calibrate"] or []
    for dataset, directory, _ in options["calibrate"]:
        if dataset not in ANNOTATED_DATASETS:
            p.error(f"--calibrate {dataset}: the annotated datasets are {', '.join(ANNOTATED_DATASETS)}")
        if dataset != "synthetic" and not os.path.exists(directory):
            p.error(f"--calibrate: {directory} does not exist")
