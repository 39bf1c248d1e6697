"""SavedModel export for TensorFlow Serving: ``python export/saved_model.py`` is ``c2am-tf export-saved-model`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("export-saved-model", prog="saved_model.py"))
