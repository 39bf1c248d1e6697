"""CAM files: a classifier's class activation maps (``c2am_tf.models.classifier``) written for the WSSS steps.

CAM files, one per image, read by ``read_cams``:
- the common WSSS layout (PSA, SEAM, PuzzleCAM, AdvCAM): ``NAME.npy`` holding a pickled dict
  (read through ``c2am_tf.utils.safe_pickle``: arrays, lists and numbers only, never code)
  with ``keys`` (class indices, 0-based, background excluded) and ``hr_cam``
  (len(keys), H, W) at image resolution (IRN's ``high_res`` is accepted too);
- ours (``write_cams``): ``NAME.npz`` with ``keys`` (k,) int32 and ``cams`` (k, H, W)
  float16 at image resolution, maps in [0, 1].
"""

import io
import os

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from c2am_tf.data.transforms import resize_square
from c2am_tf.models.classifier import class_activation_maps
from c2am_tf.utils.errors import InputError
from c2am_tf.utils.files import write_atomically
from c2am_tf.utils.limits import LimitError, load_npz
from c2am_tf.utils.safe_pickle import UnsafePickleError, load_npy


def write_cams(path, keys, cams):
    """Writes our CAM file (see the module docstring): keys (k,), cams (k, H, W) in [0, 1]."""
    keys = np.asarray(keys, np.int32).reshape(-1)
    cams = np.asarray(cams, np.float32)
    if cams.ndim != 3 or cams.shape[0] != keys.size:
        raise ValueError(f"cams must be (len(keys)={keys.size}, H, W), got {cams.shape}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, keys=keys, cams=cams.astype(np.float16))
    write_atomically(path, buffer.getvalue())


def read_cams(path):
    """(keys (k,) int, cams (k, H, W) float32) from our ``.npz`` or the common ``.npy`` dict layout."""
    try:
        if path.endswith(".npz"):
            stored = load_npz(path)  # each array's declared size checked before it is inflated
            keys, cams = stored["keys"], stored["cams"]
        else:
            d = load_npy(path).item()
            if not isinstance(d, dict) or "keys" not in d:
                raise ValueError("not a dict with 'keys'")
            key = next((k for k in ("hr_cam", "high_res", "cam") if k in d), None)
            if key is None:
                raise ValueError(f"no 'hr_cam' or 'high_res' maps (keys: {sorted(d)})")
            keys, cams = d["keys"], d[key]
    except UnsafePickleError as err:
        raise UnsafePickleError(
            f"{err} - a CAM .npy dict may hold only numpy arrays, lists and numbers; if this file comes "
            "from a tool you trust, convert it with write_cams (see c2am_tf/wsss/cam.py)") from None
    except LimitError:  # over a limit, or not a regular file: its own line
        raise
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise ValueError(f"{path}: not a CAM file ({err})") from err
    keys = np.asarray(keys, np.int64).reshape(-1)
    cams = np.asarray(cams, np.float32)
    if cams.ndim == 2:
        cams = cams[None]
    if cams.ndim != 3 or 0 in cams.shape:
        raise InputError(f"{path}: CAMs must be (classes, H, W) with at least one class and pixel; got shape "
                         f"{cams.shape}")
    if cams.shape[0] != keys.size:
        raise InputError(f"{path}: {keys.size} keys but {cams.shape[0]} maps")
    return keys, cams


def check_cams(path, keys, cams, num_classes):
    """``InputError`` naming the CAM file when its keys fall outside the ``num_classes`` foreground classes (a
    file of another dataset, or a wrong ``--num-classes``) or its maps hold NaN or infinite values (a diverged
    classifier): either would be used as it is and give wrong labels without a word."""
    if keys.min() < 0 or keys.max() >= num_classes:
        raise InputError(f"{path}: CAM keys {keys.tolist()[:10]} fall outside the {num_classes} classes "
                         f"(0..{num_classes - 1}); CAMs of another dataset, or check --num-classes")
    bad = int(np.count_nonzero(~np.isfinite(cams)))
    if bad:
        raise InputError(f"{path}: {bad} of {cams.size} CAM values are NaN or infinite")


def cam_files(directory):
    """{image name without extension: CAM file path} for the ``.npy``/``.npz`` files of a folder."""
    if not os.path.isdir(directory):
        raise InputError(f"{directory}: CAM folder not found (--cams)")
    found = {os.path.splitext(n)[0]: os.path.join(directory, n) for n in sorted(os.listdir(directory))
             if n.endswith((".npy", ".npz"))}
    if not found:
        raise ValueError(f"{directory}: no .npy or .npz CAM files")
    return found


def write_split_cams(classifier, source, outputs, size):
    """One CAM file per image of ``source``, for its labelled classes, at image resolution.

    ``outputs`` is an ``OutputNames`` of layout "stem": ``OUT/<image stem>.npz``, the name
    CAM readers look up.
    """

    count = 0
    for ex in tqdm(source.prefetch(4), desc="CAMs", unit="img"):
        image = ex["image"]
        keys = np.flatnonzero(ex["labels"].numpy())
        cams = class_activation_maps(classifier, resize_square(image, size)[None], size=tf.shape(image)[:2])[0]
        write_cams(outputs(ex["path"].numpy().decode()), keys, cams[keys])
        count += 1
    return count
