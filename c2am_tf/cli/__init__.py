"""``c2am-tf <command>`` (also ``python -m c2am_tf <command>``): one entry point for every command.

Each command is a module of this package with ``main(argv, prog)``; it is imported
only when run, so ``c2am-tf detect`` (LiteRT) does not load TensorFlow. The scripts
under ``train/`` and ``export/`` call the same modules.
"""

import importlib
import os
import sys

from c2am_tf.utils.native_logs import SHOW_ENV, quiet_native_logs

# command -> (module, one-line summary)
COMMANDS = {
    "fit": ("fit", "train C2AM on unlabeled images"),
    "predict": ("predict", "heatmap overlays, box JSON and a boxes file for images"),
    "evaluate": ("evaluate", "GT-known / Top-1 / Top-5 Loc, MaxBoxAccV2, PxAP of a model, preset or boxes file"),
    "extract-boxes": ("extract_boxes", "pseudo boxes for a whole dataset (JSON, PSOL format), resumable"),
    "write-tfrecords": ("write_tfrecords", "TFRecord shards of a dataset split (for clusters)"),
    "export-saved-model": ("export_saved_model", "SavedModel for TensorFlow Serving"),
    "export-tflite": ("export_tflite", "TFLite model (fp32, fp16, int8) for on-device foreground detection"),
    "export-onnx": ("export_onnx", "ONNX model (Keras's own export) for onnxruntime"),
    "export-web": ("export_web", "a static web page that boxes photos in the browser (LiteRT.js)"),
    "detect": ("detect", "foreground boxes with a .tflite model (no TensorFlow needed)"),
    "serve-client": ("serve_client", "send images to a TensorFlow Serving model (REST or gRPC)"),
    "fit-routed": ("fit_routed", "heads of their own for look-alike clusters, the general model's for the rest"),
    "fit-classifier": ("fit_classifier", "classifier for Top-k Loc (CUB), or its CAMs (WSSS step 1)"),
    "fit-regressor": ("fit_regressor", "PSOL box regressor trained on pseudo boxes"),
    "fit-bgcues": ("fit_bgcues", "background-cue model on C2AM's maps (WSSS step 3)"),
    "fit-masks": ("fit_masks", "image-resolution foreground masks self-trained on C2AM's pseudo-masks"),
    "refine": ("refine", "refine CAMs with C2AM's background cues, mIoU with ground truth (WSSS step 4)"),
}


def usage():
    """The top-level help text."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return ("usage: c2am-tf [--verbose] <command> [flags]   (c2am-tf <command> --help for its flags)\n\n"
            "--verbose: also show TensorFlow's C++ log lines (left out by default)\n\ncommands:\n"
            + "\n".join(lines) + "\n")


def run_command(name, argv=None, prog=None):
    """Runs one command by name; returns its exit status (0 where it returns nothing).

    The library's plain errors become one line here, for every command alike: a ``ConfigError`` names its
    flag (exit 2), an ``InputError`` the file or setting that cannot be used, a ``RunError`` why work that
    started could not finish (exit 1)."""
    from c2am_tf.utils.errors import ConfigError, InputError, RunError

    if argv is None:  # a process of its own (c2am-tf, the scripts): TensorFlow's C++ logs stay out of its output
        quiet_native_logs()
    prog = prog or f"c2am-tf {name}"
    module = importlib.import_module(f"c2am_tf.cli.{COMMANDS[name][0]}")
    try:
        status = module.main(argv, prog)
    except ConfigError as err:
        sys.stderr.write(f"{prog}: error: {err.as_flag()}\n")
        return 2
    except (InputError, RunError) as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return 1
    return status if isinstance(status, int) else 0


def main(argv=None):
    """Entry point of ``c2am-tf`` and ``python -m c2am_tf``; returns the exit status. ``--verbose`` before the
    command shows TensorFlow's C++ log lines, which are left out otherwise (``c2am_tf.utils.native_logs``)."""
    own_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-v", "--verbose"):
        os.environ[SHOW_ENV] = "1"
        argv = argv[1:]
    if own_process:
        quiet_native_logs()
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from c2am_tf import __version__

        print(f"c2am-tf {__version__}")
        return 0
    name = argv[0].replace("_", "-")
    if name not in COMMANDS:
        sys.stderr.write(usage() + f"\nc2am-tf: error: unknown command {argv[0]!r}\n")
        return 2
    return run_command(name, argv[1:])
