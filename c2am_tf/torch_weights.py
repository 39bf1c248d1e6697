"""Read PyTorch ``.pth`` state dicts into numpy without importing torch.

A restricted unpickler accepts only what a plain state dict needs (an
``OrderedDict``, tensor-rebuild functions and storage types); anything else
(arbitrary callables, which is how malicious checkpoints run code) is refused
with an error naming the file. Both the legacy (torch < 1.6) stream format and
the zip format are supported.
"""

import collections
import io
import pickle
import zipfile

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class UnsafeCheckpointError(pickle.UnpicklingError):
    """Raised when a checkpoint asks to build something other than tensors."""


class _TensorRef:
    """A tensor view on a storage, resolved once the storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def resolve(self, storages):
        key, dtype = self.storage
        flat = storages[key]
        if not self.size:
            return np.array(flat[self.offset], dtype=dtype)
        itemsize = flat.itemsize
        return np.lib.stride_tricks.as_strided(
            flat[self.offset:],
            shape=self.size,
            strides=[s * itemsize for s in self.stride],
        ).copy()


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _TensorRef(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise UnsafeCheckpointError(
            f"{self._path}: refusing to load '{module}.{name}': only plain tensor "
            "state dicts are accepted (this file may execute code when unpickled)"
        )

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self._path}: unexpected persistent id {pid!r}")
        dtype = pid[1]
        if isinstance(dtype, str):  # zip format stores e.g. 'FloatStorage' via find_class
            dtype = _STORAGE_DTYPES[dtype]
        return (str(pid[2]), dtype)


def _resolve(obj, storages):
    if isinstance(obj, _TensorRef):
        return obj.resolve(storages)
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v, storages)) for k, v in obj.items())
    return obj


def _collect_refs(obj, out):
    if isinstance(obj, _TensorRef):
        out[obj.storage[0]] = obj.storage[1]
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_refs(v, out)
    return out


def load_state_dict(path):
    """Returns an OrderedDict name -> numpy array from a ``.pth`` file.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the pickle references anything but tensors.
        ValueError: the file is not a PyTorch checkpoint.
    """
    path = str(path)
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        if head == b"PK\x03\x04":
            return _load_zip(f, path)
        return _load_legacy(f, path)


def _load_legacy(f, path):
    try:
        magic = pickle.load(f)
    except Exception as e:
        raise ValueError(f"{path}: not a PyTorch checkpoint ({e})") from None
    if magic != _LEGACY_MAGIC:
        raise ValueError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    pickle.load(f)  # protocol version
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        raise ValueError(f"{path}: big-endian checkpoints are not supported")
    state = _RestrictedUnpickler(f, path).load()
    keys = pickle.load(f)  # a plain list of str, nothing to construct
    dtypes = _collect_refs(state, {})
    storages = {}
    for key in keys:
        count = int(np.frombuffer(f.read(8), "<i8")[0])
        dtype = np.dtype(dtypes.get(key, np.float32))
        storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype).copy()
    return _resolve(state, storages)


def _load_zip(f, path):
    with zipfile.ZipFile(f) as z:
        names = z.namelist()
        pkl = next((n for n in names if n.endswith("data.pkl")), None)
        if pkl is None:
            raise ValueError(f"{path}: zip checkpoint without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        state = _RestrictedUnpickler(io.BytesIO(z.read(pkl)), path).load()
        dtypes = _collect_refs(state, {})
        storages = {
            key: np.frombuffer(z.read(f"{prefix}data/{key}"), np.dtype(dt)).copy()
            for key, dt in dtypes.items()
        }
    return _resolve(state, storages)
