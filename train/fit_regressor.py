"""PSOL box regressor on pseudo boxes: ``python train/fit_regressor.py`` is ``c2am-tf fit-regressor`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("fit-regressor", prog="fit_regressor.py"))
