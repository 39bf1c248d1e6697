"""Files without TensorFlow: listing and reading image files, and atomic writes (a temporary file in
the same folder, then a rename: a run killed mid-write leaves the previous file, or
none, never a truncated one)."""

import json
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


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


def list_images(directory):
    """All image files under ``directory`` (recursive, sorted)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"image folder not found: {directory}")
    found = []
    for root, _, files in os.walk(directory):
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(root, name))
    if not found:
        raise ValueError(f"{directory}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(found)


def read_image(path):
    """uint8 RGB (H, W, 3) array of an image file (grayscale, palette and alpha converted),
    or None when the file cannot be read or decoded."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def image_paths(inputs):
    """Image files named by ``inputs``: image files and folders (searched recursively).

    Raises FileNotFoundError for a missing path and ValueError for a folder without images.
    """
    paths = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        if os.path.isdir(item):
            paths += list_images(item)
        elif os.path.isfile(item):
            paths.append(os.fspath(item))
        else:
            raise FileNotFoundError(f"no such file or folder: {item} (images: {', '.join(IMAGE_EXTENSIONS)})")
    return paths
