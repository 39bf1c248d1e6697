"""Export a trained C2AM model for TensorFlow Serving.

    python export/saved_model.py --model runs/cub/final.keras --out models/c2am [--version 1]

Writes models/c2am/1/ with the signatures serving_default, cam and refine (see
c2am_tf/export.py). Check it with the loader TF Serving uses:

    saved_model_cli run --dir models/c2am/1 --tag_set serve --signature_def serving_default \\
        --inputs images=batch.npy        # uint8 (B, H, W, 3)
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from c2am_tf.export import export_saved_model  # noqa: E402
from c2am_tf.inference import load_model  # noqa: E402


def main(argv=None):
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved .keras C2AM model")
    p.add_argument("--out", required=True, help="model base folder; the export goes to OUT/VERSION")
    p.add_argument("--version", type=int, default=1)
    args = p.parse_args(argv)
    path = export_saved_model(load_model(args.model), args.out, args.version)
    print(f"SavedModel written to {path}")


if __name__ == "__main__":
    main()
