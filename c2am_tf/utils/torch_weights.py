"""Read PyTorch ``.pth`` state dicts into numpy without importing torch.

Every pickled record of the file (the legacy format's magic number, protocol,
sys_info, state and key list; the zip format's ``data.pkl``) is read through
``c2am_tf.utils.safe_pickle`` with its own allow-list: the state may build an
``OrderedDict``, tensor views and storage types, the other records plain data
only. Anything else (arbitrary callables, which is how malicious checkpoints
run code) is refused with an error naming the file, before it runs. Sizes read
from the file are checked against the file's length. Both the legacy
(torch < 1.6) stream format and the zip format are supported.
"""

import collections
import io
import os
import zipfile

import numpy as np

from c2am_tf.utils.safe_pickle import UnsafePickleError, check_plain, restricted_load

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


class UnsafeCheckpointError(UnsafePickleError):
    """Raised when a checkpoint asks to build something other than tensors."""


class _TensorRef:
    """A tensor view on a storage, resolved once the storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def resolve(self, storages, path):
        key, dtype = self.storage
        flat = storages[key]
        size, stride, offset = self.size, self.stride, self.offset
        # as_strided reads raw memory: a view must lie inside its storage, or a crafted
        # size/stride would read (or copy gigabytes of) memory outside it.
        if (not isinstance(offset, int) or offset < 0 or len(size) != len(stride)
                or not all(isinstance(v, int) and v >= 0 for v in (*size, *stride))):
            raise ValueError(f"{path}: malformed tensor view (offset {offset!r}, size {size!r}, stride {stride!r})")
        numel = int(np.prod(size, dtype=np.int64))
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else offset - 1
        if last >= flat.size or numel > flat.size:
            raise ValueError(f"{path}: tensor of size {size} at offset {offset} lies outside its storage "
                             f"of {flat.size} elements")
        if not size:
            return np.array(flat[offset], dtype=dtype)
        return np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride]).copy()


def _rebuild_tensor(storage, offset, size, stride, *unused):
    if not (isinstance(storage, tuple) and isinstance(size, tuple) and isinstance(stride, tuple)):
        raise UnsafeCheckpointError("malformed tensor record")
    return _TensorRef(storage, offset, size, stride)


class _OrderedDict(collections.OrderedDict):
    """The only container a state dict may construct (a subclass, so ``find_class`` hands out
    nothing with a ``__reduce__`` of its own)."""


# What each record of a checkpoint may refer to. Magic, protocol, sys_info and keys hold plain data.
_STATE_ALLOWED = {("collections", "OrderedDict"): _OrderedDict}
_STATE_ALLOWED.update({("torch._utils", n): _rebuild_tensor for n in ("_rebuild_tensor_v2", "_rebuild_tensor")})
_STATE_ALLOWED.update({("torch", n): n for n in _STORAGE_DTYPES})


def _storage_id(path):
    def persistent_load(pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{path}: unexpected persistent id {pid!r:.200}")
        dtype = pid[1]
        if dtype not in _STORAGE_DTYPES:
            raise UnsafeCheckpointError(f"{path}: unknown storage type {dtype!r:.100}")
        if not isinstance(pid[4], int) or pid[4] < 0:
            raise ValueError(f"{path}: malformed storage size {pid[4]!r:.100}")
        return (str(pid[2]), _STORAGE_DTYPES[dtype])
    return persistent_load


def _resolve(obj, storages, path):
    if isinstance(obj, _TensorRef):
        return obj.resolve(storages, path)
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v, storages, path)) for k, v in obj.items())
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

    Every pickled record goes through ``c2am_tf.utils.safe_pickle`` with its own allow-list,
    and every size read from the file is checked against the file's length.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: a record references anything but tensors and plain data.
        ValueError: the file is not a PyTorch checkpoint, or is truncated or malformed.
    """
    path = str(path)
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        if head == b"PK\x03\x04":
            return _load_zip(f, path)
        return _load_legacy(io.BytesIO(f.read()), path)


def _record(f, path, what, allowed=None, persistent_load=None):
    try:
        return restricted_load(f, path, allowed, persistent_load, what=f"checkpoint's {what}")
    except UnsafePickleError as err:
        raise UnsafeCheckpointError(str(err)) from None


def _load_legacy(f, path):
    try:
        magic = _record(f, path, "magic number")
    except UnsafeCheckpointError:  # a ValueError too (InputError): code in the first record is refused as such
        raise
    except ValueError:
        raise ValueError(f"{path}: not a PyTorch checkpoint (no magic number)") from None
    if magic != _LEGACY_MAGIC or type(magic) is not int:
        raise ValueError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    protocol = _record(f, path, "protocol version")
    sys_info = _record(f, path, "sys_info")
    if type(protocol) is not int or not isinstance(sys_info, dict):
        raise ValueError(f"{path}: malformed checkpoint header")
    check_plain(sys_info, path, "checkpoint's sys_info")
    if not sys_info.get("little_endian", True):
        raise ValueError(f"{path}: big-endian checkpoints are not supported")
    state = _record(f, path, "state", _STATE_ALLOWED, _storage_id(path))
    keys = _record(f, path, "storage keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{path}: malformed storage key list")
    dtypes = _collect_refs(state, {})
    storages = {}
    for key in keys:
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"{path}: truncated at storage {key!r}")
        count = int(np.frombuffer(header, "<i8")[0])
        dtype = np.dtype(dtypes.get(key, np.float32))
        left = len(f.getbuffer()) - f.tell()
        if count < 0 or count * dtype.itemsize > left:
            raise ValueError(f"{path}: storage {key!r} claims {count} elements, the file holds {left} more bytes")
        storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype).copy()
    _check_storages(path, dtypes, storages)
    return _resolve(state, storages, path)


def _check_storages(path, dtypes, storages):
    missing = sorted(set(dtypes) - set(storages))
    if missing:
        raise ValueError(f"{path}: tensors refer to missing storages {missing[:5]}")


def _load_zip(f, path):
    archive_bytes = os.fstat(f.fileno()).st_size
    with zipfile.ZipFile(f) as z:
        names = z.namelist()
        pkl = next((n for n in names if n.endswith("data.pkl")), None)
        if pkl is None:
            raise ValueError(f"{path}: zip checkpoint without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        state = _record(io.BytesIO(_read_member(z, pkl, path, archive_bytes)), path, "state",
                        _STATE_ALLOWED, _storage_id(path))
        dtypes = _collect_refs(state, {})
        storages = {}
        for key, dt in dtypes.items():
            name = f"{prefix}data/{key}"
            if name not in names:
                continue
            raw = _read_member(z, name, path, archive_bytes)
            if len(raw) % np.dtype(dt).itemsize:
                raise ValueError(f"{path}: storage {key!r} is not a whole number of {np.dtype(dt)} elements")
            storages[key] = np.frombuffer(raw, np.dtype(dt)).copy()
    _check_storages(path, dtypes, storages)
    return _resolve(state, storages, path)


# torch stores members uncompressed; a member that inflates far past the archive is a zip bomb.
_MAX_INFLATION = 16


def _read_member(z, name, path, archive_bytes):
    size = z.getinfo(name).file_size
    if size > _MAX_INFLATION * archive_bytes:
        raise ValueError(f"{path}: member {name} claims {size} bytes, more than {_MAX_INFLATION}x the file")
    return z.read(name)
