"""Refine CAMs with C2AM's background cues (WSSS step 4): ``python train/refine.py`` is ``c2am-tf refine`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("refine", prog="refine.py"))
