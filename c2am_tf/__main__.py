"""``python -m c2am_tf <command>``: the same as ``c2am-tf <command>`` (see ``c2am_tf.cli``)."""

import sys

from c2am_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
