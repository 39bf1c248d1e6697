"""The allow-listed unpickler: plain data passes, names outside the allow-list never run."""

import io
import os
import pickle

import numpy as np
import pytest

from c2am_tf.utils.safe_pickle import UnsafePickleError, check_plain, load_npy, restricted_load


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_plain_data_round_trips_and_a_callable_is_refused(tmp_path):
    data = {"a": [1, 2.5, "x", b"y", None, True], "b": (1, {"c": -3})}
    assert restricted_load(io.BytesIO(pickle.dumps(data)), "d.pkl") == data
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match="d.pkl: refusing to load 'posix.mkdir'.*plain data only"):
        restricted_load(io.BytesIO(pickle.dumps([1, _Evil(marker)])), "d.pkl")
    assert not marker.exists()


def test_the_allow_list_is_per_record():
    allowed = {("collections", "OrderedDict"): dict}
    data = pickle.dumps(__import__("collections").OrderedDict(a=1), protocol=2)
    assert restricted_load(io.BytesIO(data), "s", allowed) == {"a": 1}
    with pytest.raises(UnsafePickleError, match="may hold collections.OrderedDict"):
        restricted_load(io.BytesIO(pickle.dumps(print)), "s", allowed)


def test_truncated_and_lying_lengths_are_value_errors_not_allocations():
    data = pickle.dumps(b"x" * 100, protocol=4)
    with pytest.raises(ValueError, match="t.pkl: malformed record"):
        restricted_load(io.BytesIO(data[:50]), "t.pkl")
    # BINBYTES8 claiming 2**40 bytes: read from memory, so nothing of that size is allocated
    lying = b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + b"abc."
    with pytest.raises(ValueError, match="malformed record"):
        restricted_load(io.BytesIO(lying), "t.pkl")


def test_only_in_memory_streams_are_read(tmp_path):
    path = tmp_path / "f.pkl"
    path.write_bytes(pickle.dumps(1))
    with open(path, "rb") as f, pytest.raises(TypeError, match="io.BytesIO"):
        restricted_load(f, str(path))


def test_check_plain_names_what_is_not_plain():
    assert check_plain({"a": [1, (2, "x")]}, "s") == {"a": [1, (2, "x")]}
    with pytest.raises(UnsafePickleError, match="s: sys_info holds a ndarray"):
        check_plain({"a": np.zeros(1)}, "s", "sys_info")


def test_load_npy_reads_plain_and_object_arrays_like_np_load(tmp_path):
    plain = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "p.npy", plain)
    np.testing.assert_array_equal(load_npy(tmp_path / "p.npy"), plain)
    d = {"keys": np.array([2, 5]), "hr_cam": np.asfortranarray(np.random.rand(2, 3, 4)), "n": np.float32(1.5),
         "nested": [np.ones(2, np.int16)]}
    np.save(tmp_path / "d.npy", d)
    got = load_npy(tmp_path / "d.npy").item()
    for key in ("keys", "hr_cam"):
        np.testing.assert_array_equal(got[key], d[key])
        assert got[key].dtype == d[key].dtype
    assert got["n"] == np.float32(1.5) and got["n"].dtype == np.float32
    np.testing.assert_array_equal(got["nested"][0], d["nested"][0])
