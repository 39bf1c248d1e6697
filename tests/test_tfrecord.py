"""c2am_tf.data.tfrecord: shards written from a source read back as the same source; refusals and sharding."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from c2am_tf import data
from c2am_tf.data.sharding import Shard
from c2am_tf.data.tfrecord import ShardsExistError, read_index, tfrecord_source, write_shards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _items(ds):
    return sorted(ds.as_numpy_iterator(), key=lambda ex: ex["path"])


def test_png_shards_read_back_exactly(tmp_path):
    source = data.make_source("synthetic", synthetic_count=7, synthetic_size=40)
    index = write_shards(source, str(tmp_path), images_per_shard=3, encoding="png")
    assert index["images"] == 7 and [s["images"] for s in index["shards"]] == [3, 3, 1]
    assert sorted(os.listdir(tmp_path)) == ["part-00000.tfrecord", "part-00001.tfrecord", "part-00002.tfrecord",
                                            "shards.json"]
    back = tfrecord_source(str(tmp_path))
    assert int(back.cardinality()) == 7
    for a, b in zip(_items(source), _items(back)):
        assert a["path"] == b["path"]
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
        np.testing.assert_allclose(a["boxes"], b["boxes"])
        assert b["boxes"].shape == (1, 4)


def test_jpeg_shards_keep_labels_and_several_boxes_and_are_close(tmp_path):
    records = []
    root = tmp_path / "images"
    root.mkdir()
    import cv2

    rng = np.random.default_rng(0)
    for i in range(4):
        path = str(root / f"{i}.png")
        y, x = np.mgrid[0:30 + i, 0:50]  # smooth content: JPEG's error stays small
        cv2.imwrite(path, np.stack([x * 4, y * 6, x + y + 40 * rng.random()], -1).astype(np.uint8))
        records.append((path, [[1, 2, 10, 12]] + ([[0, 0, 5, 5]] if i % 2 else []), i))
    from c2am_tf.data.records import records_source

    source = records_source(records, "test images")
    write_shards(source, str(tmp_path / "shards"), images_per_shard=10)
    back = _items(tfrecord_source(str(tmp_path / "shards")))
    for (path, boxes, label), ex in zip(records, back):
        assert ex["path"].decode() == path and int(ex["label"]) == label
        assert ex["boxes"].shape == (2, 4)  # padded like the source, by repeating the first box
        np.testing.assert_allclose(ex["boxes"][0], boxes[0])
        original = cv2.imread(path)[..., ::-1].astype(int)
        assert ex["image"].shape == original.shape
        assert np.abs(ex["image"].astype(int) - original).mean() < 3  # JPEG quality 95


def test_existing_shards_are_refused_then_overwritten_on_request(tmp_path):
    source = data.make_source("synthetic", synthetic_count=3, synthetic_size=32)
    write_shards(source, str(tmp_path), images_per_shard=1)
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(ShardsExistError, match="already holds TFRecord shards"):
        write_shards(source, str(tmp_path), images_per_shard=2)
    assert read_index(str(tmp_path))["images"] == 3 and len(read_index(str(tmp_path))["shards"]) == 3
    write_shards(source, str(tmp_path), images_per_shard=2, overwrite=True)
    assert len(read_index(str(tmp_path))["shards"]) == 2 and keep.read_text() == "mine"
    assert not (tmp_path / "part-00002.tfrecord").exists()


def test_a_folder_without_its_index_or_with_a_missing_shard_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shards.json"):
        tfrecord_source(str(tmp_path))
    write_shards(data.make_source("synthetic", synthetic_count=2, synthetic_size=32), str(tmp_path),
                 images_per_shard=1)
    os.remove(tmp_path / "part-00001.tfrecord")
    with pytest.raises(FileNotFoundError, match="1 shards listed in shards.json are missing"):
        tfrecord_source(str(tmp_path))


@pytest.mark.parametrize("per_shard", [2, 8])  # 4 files (split by file) and 1 file (split by example)
def test_workers_read_disjoint_parts_that_cover_the_set(tmp_path, per_shard):
    source = data.make_source("synthetic", synthetic_count=8, synthetic_size=32)
    write_shards(source, str(tmp_path), images_per_shard=per_shard, encoding="png")
    parts = [[ex["path"] for ex in tfrecord_source(str(tmp_path), Shard(3, i)).as_numpy_iterator()]
             for i in range(3)]
    flat = sum(parts, [])
    assert len(flat) == len(set(flat)) == 8 and all(parts)


def test_write_tfrecords_command_and_training_on_the_shards(tmp_path):
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "c2am_tf", "write-tfrecords", "--dataset", "synthetic", "--synthetic-count", "16",
           "--out", str(out), "--images-per-shard", "5"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "16 images in 4 shards" in proc.stdout
    assert json.loads((out / "train" / "shards.json").read_text())["images"] == 16
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    from c2am_tf.training.trainer import TrainConfig, run_training

    _, history, summary = run_training(TrainConfig(
        dataset="tfrecord", data_dir=str(out), backbone="tiny", weights=None, batch_size=8, epochs=1, resize=64,
        crop=48, eval_every=0, cache=False, out=str(tmp_path / "run"), verbose=0))
    assert summary["steps_per_epoch"] == 2 and np.isfinite(history.history["loss"][0])
