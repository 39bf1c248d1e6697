"""Pseudo boxes for a whole dataset: ``python train/extract_boxes.py`` is ``c2am-tf extract-boxes`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("extract-boxes", prog="extract_boxes.py"))
