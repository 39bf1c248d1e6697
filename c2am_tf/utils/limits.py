"""What one file may make c2am_tf allocate or wait for: the limits, and the bounded readers that apply them
(no TensorFlow).

A small file can declare a huge payload: a 1.5 MB PNG of 40000^2 pixels, a 400 KB ``.npz`` that inflates to
gigabytes, a ``.npy`` header that asks for 37 GB, a ``.keras`` archive whose ``config.json`` inflates to 10 GB.
Every reader of such a file checks what the file declares against a limit before it allocates, and refuses with
one line naming the file, the size and the setting that lifts the limit. A FIFO, socket or device where a file
is expected would block a reader for ever: only regular files are opened.

Each limit is an environment variable, read when it is used, so a user can lift one for a run:

=========================  ==============  =====================================================================
variable                   default         bounds
=========================  ==============  =====================================================================
``C2AM_MAX_PIXELS``        64,000,000      pixels of one decoded image or label mask (``utils.image_io``)
``C2AM_MAX_ARRAY_BYTES``   1 GiB           bytes of one array read from a ``.npy`` / ``.npz`` (CAMs, cues)
``C2AM_MAX_MODEL_BYTES``   4 GiB           bytes a ``.keras`` archive's members inflate to, all together
``C2AM_MAX_CONFIG_BYTES``  64 MiB          bytes of a ``.keras`` archive's ``config.json`` and ``metadata.json``
``C2AM_MAX_RESPONSE_BYTES`` 512 MiB        bytes of one TensorFlow Serving response
=========================  ==============  =====================================================================

A value that is not a positive integer is one line naming the variable (``InputError``).

Example:
>>> import os
>>> os.environ["C2AM_MAX_ARRAY_BYTES"] = "abc"
>>> limit("C2AM_MAX_ARRAY_BYTES")
Traceback (most recent call last):
...
c2am_tf.utils.errors.InputError: C2AM_MAX_ARRAY_BYTES must be a positive integer (bytes of one array read from a .npy / .npz); got 'abc'
>>> del os.environ["C2AM_MAX_ARRAY_BYTES"]
>>> limit("C2AM_MAX_ARRAY_BYTES") == 1 << 30
True
"""

import math
import os
import stat
import zipfile

import numpy as np

from c2am_tf.utils.errors import ConfigError, InputError

# name -> (default, what it bounds)
LIMITS = {
    "C2AM_MAX_PIXELS": (64_000_000, "pixels of one decoded image"),
    "C2AM_MAX_ARRAY_BYTES": (1 << 30, "bytes of one array read from a .npy / .npz"),
    "C2AM_MAX_MODEL_BYTES": (4 << 30, "bytes a .keras archive inflates to"),
    "C2AM_MAX_CONFIG_BYTES": (64 << 20, "bytes of a .keras archive's config"),
    "C2AM_MAX_RESPONSE_BYTES": (512 << 20, "bytes of one TensorFlow Serving response"),
}
class LimitError(InputError):
    """A file declares more than a limit allows, or is not a regular file: refused before it is read."""


# a member of a .keras archive that inflates more than this many times its stored size is a bomb: weights and
# JSON compress 1-20x, a run of zeros 1000x
MAX_INFLATION = 200


def limit(name):
    """The limit ``name`` (one of ``LIMITS``) in force: its environment variable, else its default."""
    default, what = LIMITS[name]
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = int(value.strip().replace("_", ""))
    except ValueError:
        number = 0
    if number <= 0:
        raise InputError(f"{name} must be a positive integer ({what}); got {value!r}")
    return number


def check_timeout(value, name="timeout"):
    """``value`` as seconds a wait may last: a finite number > 0, else a ``ConfigError`` naming ``name`` (every
    wait has a deadline, and -1, nan or inf would be none).

    >>> check_timeout("2.5")
    2.5
    >>> check_timeout(float("inf"))
    Traceback (most recent call last):
    ...
    c2am_tf.utils.errors.ConfigError: timeout must be a finite number of seconds > 0; got inf
    """

    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(name, f"must be a finite number of seconds > 0; got {value!r}")
    return seconds


def _size(count):
    """Bytes for a message: '37.3 GB', '512 MB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def over_limit(path, declared, name, what):
    """``InputError`` for ``path``, which declares ``declared`` of what the limit ``name`` bounds."""
    shown = _size(declared) if name != "C2AM_MAX_PIXELS" else f"{declared / 1e6:.3g} megapixels"
    allowed = _size(limit(name)) if name != "C2AM_MAX_PIXELS" else f"{limit(name) / 1e6:.3g} megapixels"
    return LimitError(f"{path}: {what} declares {shown}, over the limit of {allowed} (set {name} to read it)")


def file_kind(mode):
    """'a FIFO', 'a socket', 'a device', 'a folder' or 'not a regular file' for a non-regular ``st_mode``."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file_problem(path):
    """Why ``path`` cannot be read as a file (no such file, a FIFO, a socket, ...), or None for a regular file.
    Nothing is opened: a FIFO is told apart before a read would block on it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as err:
        return err.strerror or str(err)
    return None if stat.S_ISREG(mode) else f"{file_kind(mode)}, not a regular file"


def check_regular_file(path, what="file"):
    """``path``, when it is a regular file; else an ``InputError`` saying what it is (``x.jpg: a FIFO, not a regular
    file``): a reader never blocks on a pipe, and a missing file is not confused with one."""
    problem = regular_file_problem(path)
    if problem is not None:
        raise LimitError(f"{path}: {problem}" + (f" (the {what})" if what != "file" else ""))
    return path


def check_array(path, shape, dtype, name=None):
    """An ``InputError`` when an array of ``shape`` and ``dtype``, declared by ``path``'s header, exceeds
    ``C2AM_MAX_ARRAY_BYTES``: checked before the array is allocated."""

    count = int(np.prod(shape, dtype=np.float64)) if len(shape) else 1
    declared = count * max(np.dtype(dtype).itemsize, 1)
    if declared > limit("C2AM_MAX_ARRAY_BYTES"):
        label = f"array {name!r} " if name else "array "
        raise over_limit(path, declared, "C2AM_MAX_ARRAY_BYTES", f"its {label}{tuple(shape)} {np.dtype(dtype)}")


def read_npy_header(stream):
    """(shape, fortran, dtype) from a ``.npy`` stream positioned at its start, leaving it at the data; ValueError
    when it is none."""

    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"unsupported .npy version {version}")
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return reader(stream, max_header_size=1 << 16)


def npy_header(path):
    """(shape, fortran_order, dtype) of a ``.npy`` file, read from its header alone (a regular file checked)."""
    check_regular_file(path)
    with open(path, "rb") as f:
        try:
            return read_npy_header(f)
        except ValueError as err:
            raise InputError(f"{path}: not a .npy file ({err})") from None


def load_npz(path):
    """{name: array} of a ``.npz`` file (no pickles), each array's header and stored size checked against
    ``C2AM_MAX_ARRAY_BYTES`` before it is inflated: a crafted archive cannot allocate more than the limit.

    >>> import tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "c.npz")
    >>> np.savez_compressed(path, keys=np.array([1]), cams=np.zeros((1, 4, 4), np.float16))
    >>> sorted((k, v.shape) for k, v in load_npz(path).items())
    [('cams', (1, 4, 4)), ('keys', (1,))]
    """

    check_regular_file(path)
    cap = limit("C2AM_MAX_ARRAY_BYTES")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{path}: not a .npz archive ({err})") from None
    arrays = {}
    with archive:
        for info in archive.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.file_size > cap + (1 << 16):  # the declared size bounds what zipfile will inflate
                raise over_limit(path, info.file_size, "C2AM_MAX_ARRAY_BYTES", f"its member {info.filename!r}")
            try:
                with archive.open(info) as member:
                    shape, fortran, dtype = read_npy_header(member)
                    if dtype.hasobject:
                        raise ValueError("an object array (a pickle), which is not read")
                    check_array(path, shape, dtype, name)
                    count = int(np.prod(shape)) if shape else 1
                    data = member.read(count * dtype.itemsize)
                if len(data) != count * dtype.itemsize:
                    raise ValueError(f"array {name!r} is truncated")
                array = np.frombuffer(data, dtype=dtype)
                arrays[name] = array.reshape(shape, order="F" if fortran else "C").copy()
            except (ValueError, zipfile.BadZipFile, EOFError, OSError) as err:
                raise InputError(f"{path}: not a readable .npz archive ({err})") from None
    return arrays


def check_keras_archive(path):
    """Refuses (``InputError``) a ``.keras`` file that is not a regular file or a zip archive, or whose members
    declare more than ``C2AM_MAX_MODEL_BYTES`` together, a config over ``C2AM_MAX_CONFIG_BYTES``, or a member
    inflating more than ``MAX_INFLATION`` times: all read from the archive's directory, before Keras inflates
    anything (Python's zipfile never inflates a member past its declared size)."""
    check_regular_file(path, "model")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InputError(f"{path}: not a readable .keras model (not a zip archive: truncated, or another "
                         "format)") from None
    total = sum(info.file_size for info in members)
    if total > limit("C2AM_MAX_MODEL_BYTES"):
        raise over_limit(path, total, "C2AM_MAX_MODEL_BYTES", "its archive")
    for info in members:
        if info.filename.endswith(".json") and info.file_size > limit("C2AM_MAX_CONFIG_BYTES"):
            raise over_limit(path, info.file_size, "C2AM_MAX_CONFIG_BYTES", f"its {info.filename}")
        if info.file_size > (1 << 20) and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
            raise LimitError(f"{path}: its {info.filename} inflates {info.file_size / max(info.compress_size, 1):.0f}"
                             f" times ({_size(info.compress_size)} -> {_size(info.file_size)}): a zip bomb, not a "
                             "model")
    return path
