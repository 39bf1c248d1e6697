"""Classifier for Top-k Loc, or its CAMs (WSSS step 1): ``python train/fit_classifier.py`` is ``c2am-tf fit-classifier`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("fit-classifier", prog="fit_classifier.py"))
