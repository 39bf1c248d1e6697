"""Shared fixtures: paths to ../shared (golden vectors, dev data), skipped cleanly when absent."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.environ.get("C2AM_SHARED", os.path.join(ROOT, "..", "shared"))
GOLDEN = os.path.join(SHARED, "golden")
DATA = os.path.join(SHARED, "data")


def golden(name):
    """Loads ../shared/golden/<name>.npz or skips the test."""
    path = os.path.join(GOLDEN, name + ".npz")
    if not os.path.exists(path):
        pytest.skip(f"golden file {path} not available")
    return np.load(path)


def data_dir(name):
    """../shared/data/<name> or skips the test."""
    path = os.path.join(DATA, name)
    if not os.path.isdir(path):
        pytest.skip(f"dev data {path} not available")
    return path
