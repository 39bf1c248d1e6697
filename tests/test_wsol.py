"""WSOL-standard data: wsolevaluation metadata, raw ILSVRC validation (XML and CSV), tfds imagenet2012, lists."""

import os

import numpy as np
import pytest
from PIL import Image

from c2am_tf import data
from c2am_tf.data.folder import folder_source, read_image_list
from c2am_tf.data.records import pad_boxes
from c2am_tf.data.wsol import wsol_records

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ILSVRC_val_dev")


def _image(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)


def _metadata(root, recorded=(200, 100), actual=(100, 50)):
    _image(root / "val" / "a.JPEG", actual)
    _image(root / "val" / "b.JPEG", actual)
    meta = root / "metadata"
    meta.mkdir()
    (meta / "image_ids.txt").write_text("val/a.JPEG\nval/b.JPEG\n")
    (meta / "class_labels.txt").write_text("val/a.JPEG,7\nval/b.JPEG,3\n")
    (meta / "image_sizes.txt").write_text(f"val/a.JPEG,{recorded[0]},{recorded[1]}\nval/b.JPEG,{recorded[0]},{recorded[1]}\n")
    (meta / "localization.txt").write_text("val/a.JPEG,20,10,120,60\nval/a.JPEG,0,0,40,40\nval/b.JPEG,10,10,50,50\n")
    return root


def test_metadata_boxes_are_scaled_by_actual_over_recorded_size(tmp_path):
    root = _metadata(tmp_path / "inet")
    records = wsol_records(str(root), "test")
    assert [os.path.basename(r[0]) for r in records] == ["a.JPEG", "b.JPEG"]
    assert records[0][1] == [[10.0, 5.0, 60.0, 30.0], [0.0, 0.0, 20.0, 20.0]] and records[0][2] == 7
    full = _metadata(tmp_path / "full", recorded=(200, 100), actual=(200, 100))
    assert wsol_records(str(full), "test")[0][1][0] == [20.0, 10.0, 120.0, 60.0]
    assert [os.path.basename(r[0]) for r in wsol_records(str(root), "half2")] == ["b.JPEG"]


def test_the_source_pads_by_repeating_and_carries_labels(tmp_path):
    root = _metadata(tmp_path / "inet")
    batch = next(iter(data.eval_pipeline(data.make_source("imagenet", "test", str(root)), 2, 448, 448)))
    assert tuple(batch["boxes"].shape) == (2, 2, 4) and batch["label"].numpy().tolist() == [7, 3]
    np.testing.assert_allclose(batch["boxes"].numpy()[1, 1], batch["boxes"].numpy()[1, 0])  # never a zero box
    np.testing.assert_allclose(batch["boxes"].numpy()[0, 0], [44.8, 44.8, 268.8, 268.8], atol=1e-3)


def test_pad_boxes_never_pads_with_zeros():
    padded = pad_boxes([[[1, 2, 3, 4]], [[0, 0, 1, 1], [5, 5, 6, 6], [7, 7, 8, 8]]])
    assert padded.shape == (2, 3, 4) and not np.any(np.all(padded == 0, axis=-1))


def test_raw_ilsvrc_validation_from_xml_and_from_the_solution_csv(tmp_path):
    root = tmp_path / "ILSVRC"
    for synset in ("n02", "n01"):
        (root / "train" / synset).mkdir(parents=True)
    _image(root / "val" / "ILSVRC2012_val_00000001.JPEG", (100, 80))
    (root / "val" / "ILSVRC2012_val_00000001.xml").write_text(
        "<annotation><size><width>100</width><height>80</height></size>"
        "<object><name>n02</name><bndbox><xmin>10</xmin><ymin>5</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>"
        "<object><name>n02</name><bndbox><xmin>60</xmin><ymin>5</ymin><xmax>90</xmax><ymax>70</ymax></bndbox></object>"
        "</annotation>")
    (path, boxes, label), = wsol_records(str(root), "test")
    assert boxes == [[10.0, 5.0, 50.0, 40.0], [60.0, 5.0, 90.0, 70.0]] and label == 1  # sorted synsets: n01, n02
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n"
                                               "ILSVRC2012_val_00000001,n01 1 2 30 40 n01 5 5 9 9 \n")
    (path, boxes, label), = wsol_records(str(root), "test")
    assert boxes == [[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0]] and label == 0
    # training images of the raw layout are an unlabeled folder
    _image(root / "train" / "n01" / "x.JPEG", (40, 40))
    assert [ex["path"].numpy().decode() for ex in data.make_source("imagenet", "train", str(root))] == [
        str(root / "train" / "n01" / "x.JPEG")]


def test_a_box_file_naming_no_image_is_a_clear_error(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="no validation boxes"):
        wsol_records(str(tmp_path), "test")


def test_tfds_imagenet2012_from_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        examples = list(data.make_source("imagenet", "train").take(3))
    assert len(examples) == 3 and examples[0]["image"].shape[-1] == 3 and examples[0]["boxes"].shape == (0, 4)


def test_an_image_list_file_is_a_training_source(tmp_path):
    _image(tmp_path / "imgs" / "a.png", (40, 30))
    _image(tmp_path / "imgs" / "b.png", (40, 30))
    (tmp_path / "list.txt").write_text("# two images\nimgs/a.png\n\nimgs/b.png\n")
    assert len(list(folder_source(str(tmp_path / "list.txt")))) == 2
    (tmp_path / "bad.txt").write_text("imgs/a.png\nimgs/missing.png\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image_list(str(tmp_path / "bad.txt"))


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data/ILSVRC_val_dev is absent")
def test_the_shared_imagenet_dev_split_reads_whole():
    records = wsol_records(SHARED, "test")
    assert len(records) == 650 and sum(len(r[1]) for r in records) == 1018
    assert all(0 <= r[2] < 1000 for r in records)
    assert all(b[2] <= 227 and b[3] <= 227 for r in records for b in r[1])  # prescaled copies, scaled boxes



def test_tfds_workers_read_their_own_files_or_their_share_of_examples(monkeypatch):
    """tfds splits by file through ReadConfig(input_context); with fewer files than workers it
    refuses, and each worker keeps its share of the examples. (tfds.testing.mock_data ignores
    read configs, so a stand-in builder records what tfds is asked.)"""
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    from c2am_tf.data.sharding import Shard
    from c2am_tf.data.tfds_source import prepared_tfds_split

    asked = []

    class Builder:
        files = 4

        def as_dataset(self, split, read_config=None):
            asked.append(read_config)
            context = read_config.input_context if read_config else None
            if context is not None and context.num_input_pipelines > self.files:
                raise ValueError("fewer files than input pipelines")
            return tf.data.Dataset.range(10)

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: Builder())
    prepared_tfds_split("imagenet2012", "train", shard=Shard(3, 2))
    context = asked[-1].input_context
    assert (context.num_input_pipelines, context.input_pipeline_id) == (3, 2)
    Builder.files = 2
    parts = [list(prepared_tfds_split("imagenet2012", "train", shard=Shard(3, i)).as_numpy_iterator())
             for i in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and all(parts)


@pytest.mark.parametrize("size", ["0,0", "-200,100"])
def test_a_size_line_that_is_not_positive_skips_its_image_by_that_line(tmp_path, size):
    from c2am_tf.data.annotations import AnnotationError

    root = _metadata(tmp_path / "inet")
    sizes = root / "metadata" / "image_sizes.txt"
    sizes.write_text(sizes.read_text().replace("val/a.JPEG,200,100", f"val/a.JPEG,{size}"))
    assert [os.path.basename(r[0]) for r in wsol_records(str(root), "test")] == ["b.JPEG"]
    with pytest.raises(AnnotationError, match=r"image_sizes.txt:1: size .* of val/a.JPEG is not positive"):
        wsol_records(str(root), "test", strict=True)
