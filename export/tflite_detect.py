"""Foreground boxes with a .tflite model (no TensorFlow needed): ``python export/tflite_detect.py`` is ``c2am-tf detect`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("detect", prog="tflite_detect.py"))
