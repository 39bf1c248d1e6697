"""TFLite export for on-device foreground detection: ``python export/tflite.py`` is ``c2am-tf export-tflite`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("export-tflite", prog="tflite.py"))
