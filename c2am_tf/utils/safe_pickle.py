"""The one way c2am_tf reads a pickle: an allow-list per record, bounded sizes.

A pickle is a program: its GLOBAL and REDUCE opcodes import and call anything,
which is how a crafted weight or CAM file runs code. Here every name a pickle
asks for goes through ``find_class`` (the extension registry's opcodes too),
which only hands out what the record's allow-list names; a record with an empty
allow-list can hold plain data only (ints, floats, strings, bytes, lists,
tuples, dicts). Records are read from bytes already in memory, so a lying
length field cannot make the reader allocate more than the file holds.

Used by ``c2am_tf.utils.torch_weights`` (``.pth`` files) and ``c2am_tf.wsss.cam`` (PSA-style
``.npy`` CAM dicts).

Example:
>>> import pickle
>>> restricted_load(io.BytesIO(pickle.dumps({"a": [1, 2]})), source="x.pkl")
{'a': [1, 2]}
>>> restricted_load(io.BytesIO(pickle.dumps(print)), source="x.pkl")
Traceback (most recent call last):
...
c2am_tf.utils.safe_pickle.UnsafePickleError: x.pkl: refusing to load 'builtins.print': this record may hold plain data only (the file may execute code when unpickled)
"""

import io
import pickle

import numpy as np

from c2am_tf.utils.errors import InputError
from c2am_tf.utils.limits import check_array, npy_header, read_npy_header

PLAIN_TYPES = (int, float, bool, str, bytes, type(None))


class UnsafePickleError(pickle.UnpicklingError, InputError):
    """A pickle asked for a name its record's allow-list does not hold (an ``InputError``: one line in a command)."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, source, allowed, persistent_load, what):
        super().__init__(file)
        self._source, self._allowed, self._what = source, allowed, what
        self._persistent = persistent_load

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        allowed = ", ".join(f"{m}.{n}" for m, n in self._allowed) or "plain data only"
        raise UnsafePickleError(
            f"{self._source}: refusing to load '{module}.{name}': this {self._what} may hold {allowed} "
            "(the file may execute code when unpickled)")

    def persistent_load(self, pid):
        if self._persistent is None:
            raise UnsafePickleError(f"{self._source}: unexpected persistent id in the {self._what}")
        return self._persistent(pid)


def restricted_load(file, source, allowed=None, persistent_load=None, what="record"):
    """Unpickles one record of ``file`` (an in-memory, seekable binary stream).

    Args:
        file: a ``io.BytesIO`` (or other in-memory stream) positioned at the record.
        source: the file name, for messages.
        allowed: {(module, name): object} the record may refer to; None or {} allows
            plain data only.
        persistent_load: called with each persistent id (torch's storages), or None to
            refuse them.
        what: the record's name in messages.

    Raises:
        UnsafePickleError: the record names something not allowed.
        ValueError: the record is truncated or malformed.
    """
    if not isinstance(file, io.BytesIO):
        raise TypeError("restricted_load reads from memory (io.BytesIO): a lying length must not allocate")
    try:
        return _Unpickler(file, source, dict(allowed or {}), persistent_load, what).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, RecursionError) as err:
        raise ValueError(f"{source}: malformed {what} ({type(err).__name__}: {err})") from None


def check_plain(obj, source, what="record", depth=0):
    """Raises UnsafePickleError unless ``obj`` is plain data (nested lists, tuples, dicts of PLAIN_TYPES)."""
    if depth > 32:
        raise UnsafePickleError(f"{source}: {what} is nested too deeply")
    if isinstance(obj, PLAIN_TYPES):
        return obj
    if isinstance(obj, (list, tuple)):
        for item in obj:
            check_plain(item, source, what, depth + 1)
        return obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            check_plain(key, source, what, depth + 1)
            check_plain(value, source, what, depth + 1)
        return obj
    raise UnsafePickleError(f"{source}: {what} holds a {type(obj).__name__}, expected plain data")


# numpy arrays inside a pickle (np.save of a dict): rebuilt from their state by our own code, so
# only ndarray itself is ever constructed; an object array's items went through the same allow-list.
def _reconstruct(cls, shape, typecode):
    if cls is not np.ndarray:
        raise UnsafePickleError(f"refusing to rebuild an array of class {cls!r}")
    return _SafeArray()


class _SafeArray:
    """Stands for an array until BUILD gives it its state (version, shape, dtype, fortran, data)."""

    array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickleError("malformed array state")
        _, shape, dtype, fortran, data = state
        if not (isinstance(dtype, np.dtype) and isinstance(shape, tuple)
                and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise UnsafePickleError("malformed array state")
        count = int(np.prod(shape, dtype=np.int64))
        order = "F" if fortran else "C"
        if dtype.hasobject:
            if not isinstance(data, list) or len(data) != count:
                raise UnsafePickleError("malformed object array state")
            flat = np.empty(count, object)
            flat[:] = data
        else:
            if not isinstance(data, (bytes, bytearray)) or count * dtype.itemsize != len(data):
                raise UnsafePickleError(f"array of shape {shape} {dtype} does not match its data")
            flat = np.frombuffer(data, dtype).copy()
        self.array = flat.reshape(shape, order=order)


def _dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise UnsafePickleError("malformed dtype")
    return np.dtype(spec, align, copy)  # numpy's own __setstate__ then reads BUILD's tuple


def _scalar(dtype, data=b""):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes) \
            or len(data) != dtype.itemsize:
        raise UnsafePickleError("malformed numpy scalar")
    return np.frombuffer(data, dtype)[0]


NUMPY_ALLOWED = {
    (module, name): obj
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name, obj in (("_reconstruct", _reconstruct), ("scalar", _scalar))
}
NUMPY_ALLOWED[("numpy", "ndarray")] = np.ndarray
NUMPY_ALLOWED[("numpy", "dtype")] = _dtype


def unwrap_numpy(obj):
    """Replaces the array stand-ins of a record read with NUMPY_ALLOWED by real arrays."""
    if isinstance(obj, _SafeArray):
        if obj.array is None:
            raise UnsafePickleError("an array without its data")
        obj = obj.array
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        out = np.empty(obj.shape, object)
        for index, item in np.ndenumerate(obj):
            out[index] = unwrap_numpy(item)
        return out
    if isinstance(obj, dict):
        return {unwrap_numpy(k): unwrap_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unwrap_numpy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(unwrap_numpy(v) for v in obj)
    return obj


def load_npy(path):
    """``np.load`` of one ``.npy`` file without running code: object arrays (``np.save`` of a
    dict, as PSA-style CAM files are) are read through ``restricted_load`` with NUMPY_ALLOWED.

    Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cam.npy")
    >>> np.save(path, {"keys": np.array([3]), "hr_cam": np.ones((1, 2, 2), np.float32)})
    >>> load_npy(path).item()["hr_cam"].shape
    (1, 2, 2)
    """
    shape, fortran, dtype = npy_header(path)  # a regular file, its header read alone
    with open(path, "rb") as f:
        read_npy_header(f)  # to the data
        if not dtype.hasobject:
            check_array(path, shape, dtype)  # before np.load allocates what the header declares
            f.seek(0)
            return np.load(f, allow_pickle=False)
        # a pickle: read from the bytes the file holds, each array it builds checked as it is made
        record = restricted_load(io.BytesIO(f.read()), path, NUMPY_ALLOWED, what=".npy object array")
    array = unwrap_numpy(record)
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f"{path}: the pickled array does not match the .npy header")
    return array
