"""The golden subset shipped in tests/golden/: the reference's own arrays, unchanged, from the files it names."""

import hashlib
import json
import os

import numpy as np
import pytest
from conftest import GOLDEN, SUBSET

SOURCES = json.load(open(os.path.join(SUBSET, "SOURCES.json")))


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_shipped_subset_is_the_full_sets_arrays_unchanged(name):
    full_path = os.path.join(GOLDEN, name + ".npz")
    if not os.path.exists(full_path):
        pytest.skip(f"{full_path} not available to compare with")
    with open(full_path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == SOURCES[name]["sha256"]  # made from this very file
    part, full = np.load(os.path.join(SUBSET, name + ".npz")), np.load(full_path)
    assert len(part.files) == SOURCES[name]["keys"] and set(part.files) <= set(full.files)
    for key in part.files:
        assert part[key].dtype == full[key].dtype
        np.testing.assert_array_equal(part[key], full[key], err_msg=key)


def test_the_subset_is_small_and_covers_every_golden_family():
    sizes = {name: os.path.getsize(os.path.join(SUBSET, name + ".npz")) for name in SOURCES}
    assert sum(sizes.values()) < 500 * 1024, sizes
    assert {"A_losses", "B_disentangler", "C_boxes", "D_corloc"} <= set(sizes)
