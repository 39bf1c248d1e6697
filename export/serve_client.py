"""Send images to a TensorFlow Serving model: ``python export/serve_client.py`` is ``c2am-tf serve-client`` (``--help`` lists the flags).

The command lives in ``c2am_tf.cli``; this script only runs it.
"""

import sys

from c2am_tf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("serve-client", prog="serve_client.py"))
