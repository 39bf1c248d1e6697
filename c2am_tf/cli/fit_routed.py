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

import itertools
import logging
import os

from c2am_tf.cli import fit
from c2am_tf.cli.common import add_model_flags, claim_output, command_inputs
from c2am_tf.presets import load
from c2am_tf.training.run_folder import RunConflictError
from c2am_tf.training.trainer import ConfigError, DataError, NonFiniteLossError, TrainConfig


def build_parser(prog=None):
    """``fit``'s flags (the cluster heads' recipe) plus the general model, --clusters and --own."""
    p = fit.build_parser(prog)
    p.set_defaults(init_preset="none", lr=1e-3)  # each cluster's head is trained from scratch, as the routed preset
    p.description = __doc__
    add_model_flags(p)
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
    from c2am_tf.training.routing import cluster_images, describe_clusters, fit_routed

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = build_parser(prog)
    args = p.parse_args(argv)
    values = vars(args)
    overwrite = values.pop("overwrite")
    k, own, seed = values.pop("clusters"), values.pop("own"), values.pop("cluster_seed")
    votes, calibrate = values.pop("class_votes"), values.pop("calibrate")
    model_args = {key: values.pop(key) for key in ("model", "preset")}
    cfg = TrainConfig(**values)
    try:
        cfg.validate()
    except ConfigError as err:
        p.error(err.as_flag())
    if k < 1:
        p.error("--clusters must be at least 1")
    if own is not None and any(not 0 <= j < k for j in own):
        p.error(f"--own {own}: there are {k} clusters (0..{k - 1})")
    if votes is not None and votes < 0:
        p.error("--class-votes must be 0 (off) or more")
    from c2am_tf.data import ANNOTATED_DATASETS as ANNOTATED

    for dataset, directory, _ in calibrate or ():
        if dataset not in ANNOTATED:
            p.error(f"--calibrate {dataset}: the annotated datasets are {', '.join(ANNOTATED)}")
        if dataset != "synthetic" and not os.path.exists(directory):
            p.error(f"--calibrate: {directory} does not exist")
    args.model, args.preset = model_args["model"], model_args["preset"]
    path = claim_output(p, os.path.join(cfg.out, "routed.keras"), overwrite or own is None,
                        inputs=command_inputs(args) + [directory for _, directory, _ in calibrate or ()])
    general = load(args.model, args.preset)
    if general.backbone.name != cfg.backbone:
        p.error(f"--backbone {cfg.backbone}: the general model's backbone is {general.backbone.name}, "
                "and every head reads its features")
    try:
        if own is None:
            paths, ids, _, _ = cluster_images(general, cfg, k, seed)
            print("\n".join(describe_clusters(paths, ids, k)))
            p.exit(2, f"{p.prog}: choose the clusters that get their own head with --own J [J ...]\n")
        from c2am_tf import data
        from c2am_tf.training.routing import calibrate_heads, imagenet_class_weights

        # read before any training, so that a wrong split fails first
        held_out = [data.eval_dataset(dataset, split, directory) for dataset, directory, split in calibrate or ()]
        weights = imagenet_class_weights(general.backbone) if votes != 0 else None
        if votes and weights is None:
            p.error(f"--class-votes: the {general.backbone.name} backbone has no ImageNet classifier "
                    "(EfficientNet-Lite has)")
        if votes is None:
            votes = 5 if weights is not None else 0
            logging.info("class votes: %s", f"the {votes} best ImageNet classes" if votes else
                         f"off (the {general.backbone.name} backbone has no ImageNet classifier)")
        routed, lines = fit_routed(general, cfg, k, own, seed, overwrite=overwrite, class_votes=votes,
                                   class_weights=weights)
        if held_out:
            routed, found = calibrate_heads(routed, itertools.chain(*held_out))
            sets = " + ".join(f"{dataset} {split}" for dataset, _, split in calibrate)
            lines += [f"head {j}: threshold {'-' if t is None else t} from {n} images of {sets}"
                      for j, (t, n) in found.items()]
    except RunConflictError as err:
        p.error(f"--out: {err}; pass --overwrite to replace it, or choose another --out")
    except ConfigError as err:
        p.exit(1, f"{p.prog}: error: a cluster's run: {err.as_flag()}\n")
    except (DataError, NonFiniteLossError, ValueError, OSError) as err:
        p.exit(1, f"{p.prog}: error: {err}\n")
    print("\n".join(lines))
    from c2am_tf.training.callbacks import save_atomically

    save_atomically(routed, path)
    print(f"saved: {path} (heads of their own: clusters {', '.join(map(str, own))})")
    return 0
