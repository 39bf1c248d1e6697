"""Background-cue model on C2AM's maps (WSSS step 3): ``python train/fit_bgcues.py`` is ``c2am-tf fit-bgcues`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("fit-bgcues", prog="fit_bgcues.py"))
