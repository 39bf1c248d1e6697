"""Atomic file writes: a temporary file in the same folder, then a rename.

A run killed mid-write leaves the previous file (or none), never a truncated one.
"""

import json
import os


def write_atomically(path, data):
    """Writes ``data`` (bytes or str) to ``path`` atomically; creates the folder."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp")
    with open(tmp, "wb" if isinstance(data, (bytes, bytearray)) else "w") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json_atomically(path, obj, **kwargs):
    """``json.dumps(obj, **kwargs)`` written atomically to ``path``."""
    write_atomically(path, json.dumps(obj, **kwargs))
