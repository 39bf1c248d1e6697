"""Writes tests/golden/: the parity tests' subset of the reference golden vectors, small enough to ship.

    python tests/golden/make_subset.py [--source ../shared/golden]

Copies whole arrays, never recomputes or rounds one: each file here holds a chosen part of the same-named
file of the full set, under the same keys (``SUBSET`` says which), and ``SOURCES.json`` the sha256 of every
source file it came from. ``conftest.golden`` reads the full set when it is there, else this one; a test that
asks for an array the subset left out is skipped.
"""

import argparse
import json
import os

import numpy as np

from c2am_tf.utils.files import sha256_of

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "..", "shared", "golden")

# the losses: every case of at most 4 rows and 64 channels, and two with gradients (one of 16 rows)
LOSS_CASES = ("c000", "c001", "c003", "c004", "c007", "c012", "c013", "c015", "c016", "c024",
              "c025", "c027", "c028", "c036", "c037", "c039", "c040", "c048", "c049", "c051", "c052", "c060",
              "c061", "c063", "c064")
SUBSET = {
    "A_losses": lambda key: key.split("_")[0] in LOSS_CASES,
    "A_losses_edge": lambda key: True,
    "B_disentangler": lambda key: key.startswith("b0_"),
    # maps of 14 and 28 pixels (the maps of 224 and their 224k contour boxes are 7 MB)
    "C_boxes": lambda key: key.startswith(("s14_", "s28_", "thresh_int_table")),
    "D_corloc": lambda key: True,
}


def main(argv=None):
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=SHARED, help="the full golden set")
    args = p.parse_args(argv)
    sources = {}
    for name, keep in SUBSET.items():
        path = os.path.join(args.source, name + ".npz")
        full = np.load(path, allow_pickle=False)
        arrays = {key: full[key] for key in full.files if keep(key)}
        np.savez_compressed(os.path.join(HERE, name + ".npz"), **arrays)
        sources[name] = {"sha256": sha256_of(path), "keys": len(arrays), "of": len(full.files)}
        print(f"{name}: {len(arrays)} of {len(full.files)} arrays, "
              f"{os.path.getsize(os.path.join(HERE, name + '.npz')) / 1024:.0f} KB")
    with open(os.path.join(HERE, "SOURCES.json"), "w") as f:
        json.dump(sources, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
