"""tf.data sources and transforms: CUB layout, corrupt files, odd formats, folders, synthetic, tfds."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from c2am_tf import data
from c2am_tf.data.transforms import map_boxes_to_eval_frame


def _write_cub(root):
    """A 5-image CUB_200_2011 folder: RGB, RGBA PNG, grayscale, a corrupt JPEG; 1 test image."""
    rng = np.random.RandomState(0)
    folder = root / "images" / "001.Bird"
    folder.mkdir(parents=True)
    Image.fromarray(rng.randint(0, 255, (60, 80, 3), np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.randint(0, 255, (50, 40, 4), np.uint8), "RGBA").save(folder / "b.png")
    Image.fromarray(rng.randint(0, 255, (30, 30), np.uint8), "L").save(folder / "c.jpg")
    (folder / "d.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    Image.fromarray(rng.randint(0, 255, (100, 200, 3), np.uint8)).save(folder / "e.jpg")
    names = ["a.jpg", "b.png", "c.jpg", "d.jpg", "e.jpg"]
    (root / "images.txt").write_text("".join(f"{i + 1} 001.Bird/{n}\n" for i, n in enumerate(names)))
    (root / "train_test_split.txt").write_text("1 1\n2 1\n3 1\n4 1\n5 0\n")
    (root / "bounding_boxes.txt").write_text("1 1 2 10 10\n2 0 0 5 5\n3 1 1 3 3\n4 0 0 1 1\n5 20 10 100 50\n")
    return root


def test_cub_source_skips_corrupt_file_with_a_warning_and_reads_odd_formats(tmp_path, caplog):
    root = _write_cub(tmp_path / "CUB_200_2011")
    with caplog.at_level(logging.WARNING, logger="c2am_tf.data"):
        examples = list(data.cub_source(str(root), "train"))
    assert len(examples) == 3
    assert "skipping 1 unreadable" in caplog.text and "d.jpg" in caplog.text
    shapes = [tuple(ex["image"].shape) for ex in examples]
    assert shapes == [(60, 80, 3), (50, 40, 3), (30, 30, 3)]  # RGBA and grayscale become RGB
    assert all(ex["image"].dtype == tf.uint8 for ex in examples)
    np.testing.assert_allclose(examples[0]["boxes"].numpy(), [[1, 2, 11, 12]])


def test_corrupt_file_does_not_end_an_epoch_of_batches(tmp_path):
    root = _write_cub(tmp_path / "CUB_200_2011")
    batches = list(data.train_pipeline(data.cub_source(str(root), "train"), batch_size=2, resize=32, crop=24))
    assert len(batches) == 1 and tuple(batches[0].shape) == (2, 24, 24, 3)  # 3 images, remainder dropped


def test_eval_pipeline_maps_boxes_into_the_crop(tmp_path):
    root = _write_cub(tmp_path / "CUB_200_2011")
    batch = next(iter(data.eval_pipeline(data.cub_source(str(root), "test"), 4)))
    images, boxes = batch["image"], batch["boxes"]
    assert tuple(images.shape) == (1, 448, 448, 3)
    # W=200, H=100, box x0=20, y0=10, x1=120, y1=60: scale 2.4 / 4.8, shift -16
    np.testing.assert_allclose(boxes.numpy()[0], [[32, 32, 272, 272]], atol=1e-4)


def test_box_mapping_clips_to_the_crop():
    out = map_boxes_to_eval_frame(tf.constant([[0.0, 0.0, 200.0, 100.0]]), 100, 200, 480, 448)
    np.testing.assert_allclose(out.numpy(), [[0, 0, 448, 448]])


def test_missing_metadata_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="images.txt"):
        data.cub_records(str(tmp_path), "train")
    root = _write_cub(tmp_path / "c")
    (root / "bounding_boxes.txt").write_text("1 1 2 10\n")
    with pytest.raises(ValueError, match="bounding_boxes.txt:1"):
        data.cub_records(str(root), "train")


def test_folder_source_is_recursive_and_skips_bad_files(tmp_path, caplog):
    root = _write_cub(tmp_path / "CUB")
    with caplog.at_level(logging.WARNING, logger="c2am_tf.data"):
        examples = list(data.folder_source(str(root / "images")))
    assert len(examples) == 4 and "skipping 1" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        data.folder_source(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.folder_source(str(tmp_path / "nowhere"))


def test_synthetic_is_deterministic_with_exact_boxes():
    a_img, a_mask, a_box = data.synthetic_example(3, size=64, seed=5)
    b_img, _, b_box = data.synthetic_example(3, size=64, seed=5)
    np.testing.assert_array_equal(a_img, b_img)
    assert a_box == b_box
    ys, xs = np.nonzero(a_mask)
    assert a_box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert 0.05 < a_mask.mean() < 0.7
    train = next(iter(data.synthetic_source(2, 64, 0, "train")))
    test = next(iter(data.synthetic_source(2, 64, 0, "test")))
    assert not np.array_equal(train["image"].numpy(), test["image"].numpy())


def test_tfds_source_converts_normalized_boxes_to_pixels():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        raw = list(tfds.builder("caltech_birds2011").as_dataset(split="train"))
        ours = list(data.tfds_cub_source("train"))
    assert len(ours) == 3
    for r, o in zip(raw, ours):
        h, w = r["image"].shape[:2]
        ymin, xmin, ymax, xmax = r["bbox"].numpy()
        np.testing.assert_allclose(o["boxes"].numpy(), [[xmin * w, ymin * h, xmax * w, ymax * h]], rtol=1e-6)


def test_tfds_not_prepared_is_a_fast_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match="raw CUB_200_2011 folder"):
        data.tfds_cub_source("train", data_dir=str(tmp_path))


def test_make_source_errors():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.make_source("coco")
    with pytest.raises(ValueError, match="tfds imagenet2012 has no boxes"):
        data.make_source("imagenet", "test")
    with pytest.raises(ValueError, match="needs data_dir"):
        data.make_source("folder")


def _write_masks(root, layout=("DUTS-TE-Image", "DUTS-TE-Mask")):
    rng = np.random.RandomState(0)
    (root / layout[0]).mkdir(parents=True)
    (root / layout[1]).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.randint(0, 255, (40, 60, 3), np.uint8)).save(root / layout[0] / f"im{i}.jpg")
        mask = np.zeros((40, 60), np.uint8)
        mask[10:20, 5 + i:30] = 200  # soft foreground value, above 128
        mask[10, 5 + i] = 100  # a soft edge pixel below 128 stays background
        Image.fromarray(mask).save(root / layout[1] / f"im{i}.png")
    Image.fromarray(rng.randint(0, 255, (40, 60, 3), np.uint8)).save(root / layout[0] / "no_mask.jpg")
    return root


@pytest.mark.parametrize("layout", [("DUTS-TE-Image", "DUTS-TE-Mask"), ("images", "ground_truth_mask")])
def test_masks_source_pairs_binarizes_and_boxes(tmp_path, layout):
    root = _write_masks(tmp_path / "sal", layout)
    examples = list(data.masks_source(str(root)))
    assert len(examples) == 3  # the image without a mask is not paired
    ex = examples[1]
    assert ex["mask"].dtype == tf.uint8 and set(np.unique(ex["mask"].numpy())) == {0, 1}
    assert int(ex["mask"].numpy()[10, 6]) == 0
    np.testing.assert_allclose(ex["boxes"].numpy(), [[6, 10, 30, 20]])
    masks = next(iter(data.eval_pipeline(data.masks_source(str(root)), 3, 64, 56)))["mask"]
    assert tuple(masks.shape) == (3, 56, 56) and set(np.unique(masks.numpy())) <= {0, 1}


def test_masks_halves_split_the_pairs_for_two_fold_runs(tmp_path):
    root = str(_write_masks(tmp_path / "sal"))
    paths = {h: [ex["path"].numpy().decode() for ex in data.make_source("masks", h, root)]
             for h in ("half1", "half2", "test")}
    names = {h: [os.path.basename(p) for p in v] for h, v in paths.items()}
    assert names == {"half1": ["im0.jpg", "im2.jpg"], "half2": ["im1.jpg"], "test": ["im0.jpg", "im1.jpg", "im2.jpg"]}
    assert [os.path.basename(p) for p in data.source_files("masks", "half2", root)[0]] == ["im1.jpg"]


def test_load_square_images_skips_unreadable_files(tmp_path):
    from c2am_tf.data.images import load_square_images

    root = _write_masks(tmp_path / "sal")
    (root / "DUTS-TE-Image" / "broken.jpg").write_bytes(b"not a jpeg")
    paths = sorted(str(p) for p in (root / "DUTS-TE-Image").iterdir())
    images, kept = load_square_images(paths, 32)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert len(kept) == 4 and not any(p.endswith("broken.jpg") for p in kept)


def test_masks_layout_errors(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="no image/mask folder pair"):
        data.mask_pairs(str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError):
        data.mask_pairs(str(tmp_path / "nope"))


def test_tfds_cub_masks_are_binary():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=2):
        examples = list(data.make_source("masks", "train"))
    assert len(examples) == 2
    for ex in examples:
        assert ex["mask"].dtype == tf.uint8 and ex["mask"].shape.rank == 2
        assert set(np.unique(ex["mask"].numpy())) <= {0, 1}


def _bad_boxes(root):
    """The 5-image CUB folder with a NaN, a non-numeric, an empty and a partly-outside box."""
    _write_cub(root)
    (root / "bounding_boxes.txt").write_text(
        "1 1 2 10 nan\n2 0 0 x 5\n3 1 1 0 3\n4 0 0 1 1\n5 20 10 300 50\n")
    (root / "train_test_split.txt").write_text("1 0\n2 0\n3 0\n4 1\n5 0\n")
    return root


def test_unusable_boxes_are_skipped_with_their_line_and_partly_outside_ones_clamped(tmp_path, caplog):
    root = _bad_boxes(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="c2am_tf.data"):
        records = data.cub_records(str(root), "test")
    assert [(r[0].rsplit("/", 1)[1], r[1]) for r in records] == [("e.jpg", [[20.0, 10.0, 200.0, 60.0]])]
    text = caplog.text
    assert "skipped 3 images with unusable boxes, clamped 1 boxes" in text
    assert "bounding_boxes.txt:1: non-finite box" in text and "bounding_boxes.txt:2: non-numeric" in text


def test_strict_makes_a_bad_box_an_error_naming_file_and_line(tmp_path):
    from c2am_tf.data.annotations import AnnotationError

    root = _bad_boxes(tmp_path / "c")
    with pytest.raises(AnnotationError, match=r"bounding_boxes.txt:1: non-finite box"):
        data.cub_records(str(root), "test", strict=True)
    (root / "bounding_boxes.txt").write_text("1 1 2 10 10\n2 0 0 5 5\n3 1 1 3 3\n4 0 0 1 1\n5 20 10 300 50\n")
    with pytest.raises(AnnotationError, match=r"bounding_boxes.txt:5: box .* extends outside the 200x100 image"):
        data.cub_records(str(root), "test", strict=True)


def test_a_nan_box_no_longer_costs_the_run(tmp_path):
    """A NaN box crashed the epoch-end pictures and no model was saved; now it is skipped."""
    from c2am_tf.training.trainer import TrainConfig, run_training

    root = _write_cub(tmp_path / "c")
    (root / "bounding_boxes.txt").write_text("1 1 2 10 10\n2 0 0 5 5\n3 1 1 3 3\n4 0 0 1 1\n5 nan 10 100 50\n")
    (root / "train_test_split.txt").write_text("1 1\n2 1\n3 0\n4 0\n5 0\n")
    cfg = TrainConfig(dataset="cub", data_dir=str(root), backbone="tiny", weights=None, epochs=1, batch_size=2,
                      resize=64, crop=48, eval_resize=64, eval_crop=64, out=str(tmp_path / "run"), verbose=0)
    run_training(cfg)
    assert (tmp_path / "run" / "final.keras").exists()
