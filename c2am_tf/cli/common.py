"""What the commands' parsers share: the help format, the flags several commands take (backbone, model or preset,
classifier, box band, a trainer's flags), the library's checks of every threshold, size and band they parse,
and the claims on output paths (never an input, never something there already unless --overwrite)."""

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every flag's default (where it has one) in its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or action.default in (None, argparse.SUPPRESS, False) or not action.option_strings \
                or action.nargs == 0:  # a switch: "(default: True)" on --no-x would read as "x is skipped"
            return text
        return f"{text} (default: %(default)s)"


def _checks():
    """flag dest -> the library's check of that setting: every command that takes one validates it alike."""
    from c2am_tf.deploy.on_device import check_threads
    from c2am_tf.maps.geometry import check_band, check_image_size, check_scale, check_threshold, check_weight
    from c2am_tf.utils.limits import check_timeout

    return {"threshold": check_threshold, "thresholds": check_threshold, "cue_threshold": check_threshold,
            "box_band": check_band, "size": check_image_size, "classifier_size": check_image_size,
            "cam_weight": check_weight, "scales": check_scale, "threads": check_threads,
            "timeout": check_timeout, "cluster_timeout": check_timeout}


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that checks every threshold, band, size, scale, weight and thread count it parses
    with the library's own check (``_checks``): a value no run can use is a one-line flag error (exit 2)
    before any work, in every command alike."""

    def parse_known_args(self, args=None, namespace=None):
        """``argparse``'s, then the checks; returns (namespace, the arguments not parsed)."""
        from c2am_tf.utils.errors import ConfigError

        parsed, rest = super().parse_known_args(args, namespace)
        for name, check in _checks().items():
            value = getattr(parsed, name, None)
            if value is None:
                continue
            try:
                checked = [check(v, name) for v in value] if isinstance(value, list) else check(value, name)
            except ConfigError as err:
                self.error(err.as_flag())
            setattr(parsed, name, checked)
        self._check_outputs_apart(parsed)
        return parsed, rest

    def _check_outputs_apart(self, parsed):
        """Two output flags naming one path would write one output over the other (``extract-boxes --out X
        --psol-out X`` left only the PSOL file), and an output naming an input file would replace it: both are flag
        errors in every command, before any work. An input folder may be an output folder (``predict photos --out
        photos`` writes beside the images), where ``OutputNames`` keeps each input and each file of the user's."""
        import os

        outputs = [(name, value) for name in OUTPUT_FLAGS if isinstance(value := getattr(parsed, name, None), str)]
        inputs = {os.path.realpath(item): item for item in command_inputs(parsed)}
        for k, (name, value) in enumerate(outputs):
            for other, taken in outputs[:k]:
                if os.path.realpath(value) == os.path.realpath(taken):
                    self.error(f"{_flag(name)}: {value} is also {_flag(other)}; give each output its own path")
            if os.path.realpath(value) in inputs and not os.path.isdir(value):  # a folder may take outputs beside
                self.error(f"{_flag(name)}: {value} is an input of this command ({inputs[os.path.realpath(value)]}); "
                           f"outputs never replace inputs, choose another {_flag(name)}")


def _flag(dest):
    """``psol_out`` -> ``--psol-out``."""
    return "--" + dest.replace("_", "-")


def output_folder(text):
    """``type=`` of a flag naming a folder a command writes into: an existing file there is refused at once
    (argparse's one-line error), not found out by the first write after the work."""
    import os

    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return text


def output_file(text):
    """``type=`` of a flag naming a file a command writes: an existing folder there is refused at once."""
    import os

    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    return text


def command_parser(doc, prog=None):
    """An ``ArgumentParser`` for one command (a ``CommandParser``): ``doc`` is its description, ``prog`` its
    name (``c2am-tf fit`` from the entry point; the script's name when run as a script)."""
    return CommandParser(prog=prog, description=doc, formatter_class=HelpFormatter)


def backbone_name(text):
    """``type=`` of ``--backbone``: a registered backbone, or a family's ``PREFIX:SPEC`` (``keras_hub:dinov2_small``)."""
    from c2am_tf.backbones import backbone_entry
    from c2am_tf.utils.errors import ConfigError

    try:
        backbone_entry(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.message) from None
    return text


def add_backbone_flag(parser, default="efficientnet_lite0", help="feature extractor"):
    """``--backbone``: a name of the backbone registry (``c2am_tf.backbones``), listed in the help."""
    from c2am_tf.backbones import backbone_names

    parser.add_argument("--backbone", type=backbone_name, default=default, metavar="NAME",
                        help=f"{help}: {', '.join(backbone_names())} (keras_hub:PRESET[@SIZE], e.g. "
                             "keras_hub:dinov2_small, needs the keras-hub extra)")


def add_training_flags(parser, epochs, batch_size, lr, seed=1):
    """The flags every trainer shares: backbone, weights, epochs, batch size, learning rate, seed."""
    add_backbone_flag(parser)
    parser.add_argument("--weights", default="imagenet", help="'imagenet', 'none' or a weights file")
    parser.add_argument("--epochs", type=int, default=epochs, help="passes over the images")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="images per batch")
    parser.add_argument("--lr", type=float, default=lr, help="base learning rate (poly decay)")
    parser.add_argument("--seed", type=int, default=seed, help="random seed")
    parser.add_argument("--overwrite", action="store_true", help="replace the model already trained in --out")


# the flags through which commands write; every other flag naming an existing file or folder is an input
OUTPUT_FLAGS = ("out", "psol_out", "coco", "overlays", "cues_out", "cams_out", "json", "target")


def command_inputs(args):
    """The files and folders a command reads: every flag of ``args`` (outputs aside) naming an existing path."""
    import os

    found = []
    for name, value in vars(args).items():
        if name in OUTPUT_FLAGS:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item and os.path.exists(item):
                found.append(item)
    return found


def claim_output(parser, path, overwrite=False, flag="--out", inputs=()):
    """``path``, where a command will write what it makes (a trained model, an export, a boxes file): a flag
    error (exit 2, before any work) when something is there already and not ``overwrite``, so a second run
    never replaces what an earlier one made; and always when writing ``path`` would replace one of ``inputs``
    (the files and folders the command reads, e.g. ``command_inputs(args)``), ``overwrite`` or not."""
    import os

    from c2am_tf.utils.files import inside, replaced_input

    clash = replaced_input(path, inputs)
    if clash is not None:
        if os.path.realpath(clash) == os.path.realpath(path):
            what = f"is an input of this command ({clash})"
        elif inside(clash, path):
            what = f"holds an input of this command ({clash})"
        else:
            what = f"is a file in the input folder {clash}, which this command reads"
        parser.error(f"{flag}: {path} {what}; outputs never replace inputs, choose another {flag}")
    if os.path.exists(path) and not overwrite:
        parser.error(f"{flag}: {path} exists; pass --overwrite to replace it, or choose another {flag}")
    return path


def training_settings(args):
    """The flags that define a trainer's run (all but ``--overwrite``): what must match to resume it."""
    return {k: v for k, v in vars(args).items() if k != "overwrite"}


def claim_training_output(parser, name, args):
    """``claim_output`` for a trainer that checkpoints in a ``c2am_tf.training.run_folder`` (``fit-classifier``,
    ``fit-regressor``, ``fit-bgcues``, ``fit-masks``): ``args.target`` becomes ``args.out/name`` (returned), and
    a killed run's checkpoint there that other flags made ends the command now (a ``RunConflictError`` naming
    them: the flag error of ``--out``), before any data is read or model built, unless ``--overwrite``."""
    import os

    from c2am_tf.training.run_folder import claim_target

    args.target = claim_output(parser, os.path.join(args.out, name), args.overwrite, inputs=command_inputs(args))
    return claim_target(args.out, name, training_settings(args), args.overwrite)  # settings include the target


def add_model_flags(parser, required=True, heads_only=False):
    """``--model M.keras`` or ``--preset NAME`` (a trained model shipped with the package), one of them;
    ``heads_only``: the C2AM head presets alone (a command that builds on a head, not on a mask model)."""
    from c2am_tf.presets import head_presets, list_presets

    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--model", help="a C2AM .keras model")
    group.add_argument("--preset", choices=sorted(head_presets() if heads_only else list_presets()),
                       help="a trained model shipped with c2am_tf (offline, no training)")


def add_classifier_flags(parser, cam_class):
    """``--classifier``, ``--classifier-size`` and ``--cam-weight``; ``cam_class`` says whose class the CAM is
    of in this command (each image's true class, or the classifier's top-1)."""
    from c2am_tf.backbones import REGISTRY, classifier_backbones

    names = classifier_backbones()
    parser.add_argument("--classifier", help=f"a .keras classifier (fit-classifier), or {', '.join(names)} "
                                             "(the backbones' ImageNet classifiers)")
    sizes = sorted({REGISTRY[n].classifier_size for n in names})
    parser.add_argument("--classifier-size", type=int, help="resize images to this square for the classifier "
                        f"(default: {'/'.join(map(str, sizes))} for the ImageNet classifiers, else the frame)")
    parser.add_argument("--cam-weight", type=float, default=0.0,
                        help=f"boxes from (1 - W) * the map + W * the classifier's CAM of {cam_class}, both "
                             "min-max normalized (needs --classifier; 1: the CAM alone)")


def check_classifier_flags(parser, args, threshold_needed):
    """Errors (through ``parser``) for a ``--cam-weight`` that cannot be used. A threshold stored with a
    model was chosen for its map alone, so a command that cuts boxes at one threshold needs ``--threshold``."""
    if not args.cam_weight:
        return
    if args.classifier is None or not 0 < args.cam_weight <= 1:
        parser.error("--cam-weight needs --classifier and a weight in (0, 1]")
    if threshold_needed and args.threshold is None:
        parser.error("--cam-weight needs --threshold: the model's stored threshold was chosen for its map alone "
                     "(choose one for the fused map on annotated images, e.g. with evaluate --cam-weight)")


def add_box_band_flag(parser):
    """``--box-band``: the box rule's band (``c2am_tf.maps.boxes.best_box_per_threshold``)."""
    parser.add_argument("--box-band", type=float,
                        help="each box the mean of the boxes at thresholds within this band of the threshold "
                             "(default: the model's own; 0: the box at the threshold alone)")
