"""Routed model (a general head plus heads for chosen clusters): ``python train/fit_routed.py`` is
``c2am-tf fit-routed`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("fit-routed", prog="fit_routed.py"))
