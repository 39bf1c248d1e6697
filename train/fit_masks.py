"""Self-trained foreground masks on C2AM's pseudo-masks: ``python train/fit_masks.py`` is ``c2am-tf fit-masks`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("fit-masks", prog="fit_masks.py"))
