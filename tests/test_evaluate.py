"""The evaluation driver: every metric from one pass, on a model whose map is the object."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import green_classifier, two_object_batch
from conftest import oracle_model as _oracle

from c2am_tf.evaluation.evaluate import (
    Accumulator,
    Evaluation,
    evaluate,
    evaluate_boxes,
    format_result,
    upsample_normalized,
)
from c2am_tf.maps.boxes_json import read_boxes


def _batch():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[0, 8:24, 4:20, 0] = 255
    images[1, 0:12, 16:32, 0] = 255
    boxes = np.array([[[4, 8, 20, 24]], [[16, 0, 32, 12]]], np.float32)
    masks = (images[..., 0] > 0).astype(np.uint8)
    return images, boxes, masks


def _dataset(**columns):
    return tf.data.Dataset.from_tensor_slices(columns).batch(2)


def test_a_perfect_map_scores_100_on_boxes_and_masks():
    images, boxes, masks = _batch()
    result, examples = evaluate(_oracle(), _dataset(image=images, boxes=boxes, mask=masks), thresholds=[0.5],
                                keep=1, max_box_acc=False)
    assert result["best"] == 100.0 and result["best_threshold"] == 0.5
    assert result["pxap"] == pytest.approx(100.0) and result["mask_iou"] == pytest.approx(100.0)
    assert result["max_f_beta"] == pytest.approx(1.0) and result["per_image_iou"] == pytest.approx(100.0)
    assert 0 < result["mae"] < 0.1  # only the bilinear edges of the upsampled map are off
    assert "max F-beta 1.000" in format_result(result)
    assert len(examples) == 1 and examples[0][1].shape == (8, 8) and examples[0][2].shape == (1, 4)
    swapped = evaluate(_oracle(), _dataset(image=images, boxes=boxes[::-1].copy()), thresholds=[0.5],
                       max_box_acc=False)[0]
    assert swapped["best"] == 0.0


def test_a_mask_model_is_scored_on_its_refined_masks():
    from c2am_tf.maps.edges import edge_refined_map

    images, boxes, masks = _batch()
    coarse = keras.Sequential([_oracle(), keras.layers.AveragePooling2D(2)])  # stride 8: blurry edges
    plain = evaluate(coarse, _dataset(image=images, boxes=boxes, mask=masks), thresholds=[0.5],
                     max_box_acc=False)[0]
    coarse.refinement = "guided"
    coarse.edge_refine = lambda image, m: edge_refined_map(image, m, "guided")
    fine = evaluate(coarse, _dataset(image=images, boxes=boxes, mask=masks), thresholds=[0.5], max_box_acc=False)[0]
    assert fine["best"] == plain["best"]  # boxes come from the map itself
    assert fine["mae"] < 0.8 * plain["mae"] and fine["per_image_iou"] > plain["per_image_iou"]


def test_any_of_several_gt_boxes_counts_and_padding_by_repetition_changes_nothing():
    images, boxes, _ = _batch()
    decoy = np.array([[0, 0, 2, 2]], np.float32)
    # image 0: the right box second; image 1: its box repeated (the padding rule)
    several = np.stack([np.concatenate([decoy, boxes[0]]), np.concatenate([boxes[1], boxes[1]])])
    result = evaluate(_oracle(), _dataset(image=images, boxes=several), thresholds=[0.5], max_box_acc=False)[0]
    assert result["best"] == 100.0
    only_decoys = np.stack([np.concatenate([decoy, decoy])] * 2)
    assert evaluate(_oracle(), _dataset(image=images, boxes=only_decoys), thresholds=[0.5],
                    max_box_acc=False)[0]["best"] == 0.0


def test_top_k_loc_needs_the_class_and_the_box():
    images, boxes, _ = _batch()
    logits = np.zeros((2, 10), np.float32)
    logits[0, 3], logits[1, 7], logits[1, 2] = 5, 5, 4  # image 0: top-1 is 3; image 1: top-1 7, top-2 2
    inputs = keras.Input((32, 32, 3))
    classifier = keras.Model(inputs, keras.layers.Lambda(
        lambda x: tf.gather(tf.constant(logits), tf.cast(x[:, 0, 0, 1], tf.int32)))(inputs))
    images = images.copy()
    images[1, 0, 0, 1] = 1  # the classifier reads the image's index from one green pixel
    labels = np.array([3, 2], np.int32)
    bad_box = boxes.copy()
    bad_box[1] = [[0, 20, 8, 31]]
    result = evaluate(_oracle(), _dataset(image=images, boxes=bad_box, label=labels), thresholds=[0.5],
                      classifier=classifier, max_box_acc=False)[0]
    # image 0: class and box right; image 1: class in top-5 only and box wrong
    assert (result["top1"], result["top5"]) == (50.0, 100.0)
    assert (result["top1_loc"], result["top5_loc"], result["best"]) == (50.0, 50.0, 50.0)


def test_max_box_acc_of_a_perfect_map_and_the_stored_threshold():
    images, boxes, _ = _batch()
    model = _oracle()
    # +1-pixel areas: the exclusive GT corner becomes inclusive
    result = evaluate(model, _dataset(image=images, boxes=boxes - np.array([0, 0, 1, 1], np.float32)),
                      thresholds=[0.3, 0.7], stored_threshold=0.5)[0]
    assert result["max_box_acc"][70] == 100.0 and result["max_box_acc_v2"] == 100.0
    assert result["thresholds"] == [0.3, 0.5, 0.7] and result["stored_threshold"] == 0.5
    assert result["at_stored"] == result["per_threshold"][1]
    assert "MaxBoxAccV2 100.00" in format_result(result)


def test_upsample_normalized():
    maps = np.array([[[0.2, 0.6], [0.2, 0.2]], [[0.5, 0.5], [0.5, 0.5]]], np.float32)
    up = upsample_normalized(maps, 4)
    assert up.shape == (2, 4, 4)
    assert up[0].min() == 0.0 and up[0].max() == pytest.approx(1.0)
    assert np.all(up[1] == 0)  # a constant map carries no information


def test_evaluation_matches_the_hand_count():
    ev = Evaluation(thresholds=[0.5], max_box_acc=False)
    m = np.zeros((2, 4, 4))
    m[:, 1:3, 1:3] = 1
    gt = np.array([[[16, 16, 48, 48]], [[0, 0, 20, 20]]], np.float32)  # IoU 1, IoU 16/(1024+400-16)
    ev.update(m, {"image": np.zeros((2, 64, 64, 3)), "boxes": gt})
    assert ev.result()["per_threshold"][0] == 50.0
    # a threshold stored in float32 is the listed one, not a second column
    assert Evaluation([0.3, 0.35], stored_threshold=np.float32(0.35), max_box_acc=False).thresholds == (0.3, 0.35)


def test_evaluate_boxes_scores_a_file_by_path_and_by_name(tmp_path):
    boxes = {"format": "c2am_tf.boxes/v1", "threshold": 0.4, "images": [
        {"path": str(tmp_path / "a.jpg"), "width": 100, "height": 100, "box": [10, 10, 50, 50],
         "top5": [1, 2, 3, 4, 5]},
        {"path": "elsewhere/b.jpg", "width": 100, "height": 100, "box": [0, 0, 10, 10], "top5": [9, 1, 2, 3, 4]},
    ]}
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(boxes))
    records = [(str(tmp_path / "a.jpg"), [[12, 10, 50, 52]], 2),
               (str(tmp_path / "b.jpg"), [[0, 0, 10, 10], [50, 50, 60, 60]], 9),
               (str(tmp_path / "c.jpg"), [[0, 0, 1, 1]], 0)]
    result = evaluate_boxes(read_boxes(str(path)), records)
    assert result["total"] == 2 and result["missing"] == 1 and result["best"] == 100.0
    assert (result["top1_loc"], result["top5_loc"]) == (50.0, 100.0)


def _cub_folder(root, n=8):
    """A CUB_200_2011 folder of ``n`` images (2 classes), each a bright square on noise, with its box."""
    from PIL import Image

    rng = np.random.RandomState(0)
    lines = {"images.txt": [], "train_test_split.txt": [], "bounding_boxes.txt": [], "image_class_labels.txt": []}
    for i in range(n):
        folder = root / "images" / f"00{i % 2 + 1}.Bird"
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.randint(0, 60, (64, 80, 3)).astype(np.uint8)
        x, y = 8 + 4 * i, 10
        image[y:y + 30, x:x + 30] = 230
        Image.fromarray(image).save(folder / f"{i}.jpg")
        lines["images.txt"].append(f"{i + 1} 00{i % 2 + 1}.Bird/{i}.jpg")
        lines["train_test_split.txt"].append(f"{i + 1} {i % 4 != 0:d}")
        lines["bounding_boxes.txt"].append(f"{i + 1} {x} {y} 30 30")
        lines["image_class_labels.txt"].append(f"{i + 1} {i % 2 + 1}")
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("1 001.Bird\n2 002.Bird\n")
    return root


def test_evaluate_cli_scores_a_model_with_a_classifier_and_a_boxes_file(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    from c2am_tf.cli import run_command
    from c2am_tf.training.trainer import TrainConfig, run_training

    cub = _cub_folder(tmp_path / "CUB")
    run_training(TrainConfig(dataset="cub", data_dir=str(cub), backbone="tiny", weights=None, epochs=1, batch_size=2,
                             resize=64, crop=48, eval_resize=64, eval_crop=64, out=str(tmp_path / "run"), verbose=0))
    assert run_command("fit-classifier", ["--dataset", "cub", "--data-dir", str(cub), "--backbone", "tiny",
                                          "--weights", "none", "--size", "64", "--epochs", "1", "--batch-size", "2",
                                          "--out", str(tmp_path / "clf")]) == 0
    scores = tmp_path / "scores.json"
    proc = subprocess.run([sys.executable, "-m", "c2am_tf", "evaluate", "--model", str(tmp_path / "run" / "final.keras"),
                           "--dataset", "cub", "--data-dir", str(cub), "--frame", "whole448", "--classifier",
                           str(tmp_path / "clf" / "classifier.keras"), "--json", str(scores)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(scores.read_text())
    assert result["total"] == 2 and result["frame"] == "whole448" and "max_box_acc_v2" in result
    assert 0 <= result["top1_loc"] <= min(result["top1"], result["best"]) and result["top5"] == 100.0  # 2 classes
    assert "Top-1 Loc" in proc.stdout and "MaxBoxAccV2" in proc.stdout
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"format": "c2am_tf.boxes/v1", "threshold": 0.5, "images": [
        {"path": str(cub / "images" / "001.Bird" / "0.jpg"), "width": 80, "height": 64, "box": [8, 10, 38, 40]}]}))
    proc = subprocess.run([sys.executable, "-m", "c2am_tf", "evaluate", "--boxes", str(boxes), "--dataset", "cub",
                           "--data-dir", str(cub)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and "best 100.00" in proc.stdout and "without a box in the file: 1" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "c2am_tf", "evaluate", "--dataset", "cub", "--data-dir", str(cub)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and "one of --model, --preset or --boxes" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "c2am_tf", "evaluate", "--model", str(tmp_path / "run" / "final.keras"),
                           "--dataset", "cub", "--data-dir", str(cub), "--cam-weight", "0.5"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and "--cam-weight needs" in proc.stderr
    assert os.path.exists(tmp_path / "clf" / "classifier.keras")


def test_the_cam_of_the_true_class_picks_the_labelled_object_among_two():
    images, boxes = two_object_batch()
    classifier = green_classifier()
    data = _dataset(image=images, boxes=boxes, label=np.array([1], np.int32))
    alone = evaluate(_oracle(), data, thresholds=[0.75], classifier=classifier, max_box_acc=False)[0]
    fused = evaluate(_oracle(), data, thresholds=[0.75], classifier=classifier, max_box_acc=False, cam_weight=0.5)[0]
    assert alone["best"] == 0.0  # the map alone boxes the larger red square
    assert fused["best"] == 100.0 and fused["top1_loc"] == 100.0 and fused["top1"] == 100.0
    with pytest.raises(ValueError, match="class label"):
        evaluate(_oracle(), _dataset(image=images, boxes=boxes), classifier=classifier, cam_weight=0.5)
    with pytest.raises(ValueError, match="needs a classifier"):
        evaluate(_oracle(), data, cam_weight=0.5)


def test_a_banded_evaluation_scores_the_mean_box_and_takes_the_models_band():
    """A map whose box jumps from too large (up to threshold 0.4) to too small (from 0.5): no single
    threshold boxes the object, the mean box over the band 0.3-0.7 does. evaluate reads the band a
    model stores (``box_band``) and reports it."""
    from c2am_tf.maps.boxes import best_box_per_threshold

    m = np.full((1, 8, 8), 0.05)
    m[0, 1:7, 1:7] = 0.45
    m[0, 3:5, 3:5] = 1.0
    batch = {"image": np.zeros((1, 64, 64, 3)), "boxes": np.array([[[16, 16, 48, 48]]], np.float32)}
    alone = Evaluation([0.3, 0.4, 0.5, 0.6, 0.7], max_box_acc=False)
    alone.update(m, batch)
    assert alone.result()["best"] == 0.0  # IoU 0.44 (the 6 x 6 ring) or 0.25 (the 2 x 2 core)
    banded = Evaluation([0.5], max_box_acc=False, band=0.2)
    box = banded.update(m, batch)[0, 0]
    np.testing.assert_allclose(box, best_box_per_threshold(m[0], [0.5], 8, band=0.2)[0])
    np.testing.assert_allclose(box, [17.6, 17.6, 46.4, 46.4])  # 2 ring boxes and 3 core boxes averaged
    assert banded.result()["per_threshold"][0] == 100.0 and banded.result()["box_band"] == 0.2
    assert "band of 0.20" in format_result(banded.result())
    with pytest.raises(ValueError, match="box_band"):
        Evaluation([0.5], band=0.7)

    model = _oracle()
    model.box_band = 0.1
    images, boxes, _ = _batch()
    assert evaluate(model, _dataset(image=images, boxes=boxes), [0.5], max_box_acc=False)[0]["box_band"] == 0.1
    assert evaluate(model, _dataset(image=images, boxes=boxes), [0.5], max_box_acc=False,
                    box_band=0.0)[0]["box_band"] == 0.0


def test_evaluate_strict_makes_an_unusable_annotation_an_error(tmp_path, capsys):
    from PIL import Image

    from c2am_tf.cli import run_command
    from c2am_tf.maps.boxes_json import BoxesWriter, box_record

    root = tmp_path / "inet"
    (root / "val").mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(np.full((50, 100, 3), 128, np.uint8)).save(root / "val" / f"{name}.JPEG")
    meta = root / "metadata"
    meta.mkdir()
    (meta / "image_ids.txt").write_text("val/a.JPEG\nval/b.JPEG\n")
    (meta / "image_sizes.txt").write_text("val/a.JPEG,100,50\nval/b.JPEG,100,50\n")
    (meta / "localization.txt").write_text("val/a.JPEG,10,10,60,40\nval/b.JPEG,10,10,nan,40\n")
    with BoxesWriter(tmp_path / "boxes.json", {"model": "m", "threshold": 0.5}) as writer:
        for name in ("a", "b"):
            writer.add(box_record(str(root / "val" / f"{name}.JPEG"), 100, 50, [10, 10, 60, 40], 0.3))
    flags = ["--boxes", str(tmp_path / "boxes.json"), "--dataset", "imagenet", "--data-dir", str(root)]
    assert run_command("evaluate", flags) == 0
    assert "1 images" in capsys.readouterr().out  # b skipped, a scored
    assert run_command("evaluate", flags + ["--strict"]) == 1
    assert "localization.txt:2: non-finite box" in capsys.readouterr().err


class _MeanMap(Accumulator):
    """A metric made for the test below: the mean of every map (its value could be anything)."""

    logged = (("mean_map", "mean_map", "mean map"),)

    def __init__(self, evaluation):
        super().__init__(evaluation)
        self.total, self.count = 0.0, 0

    def update(self, step):
        if step.maps is not None:
            self.total, self.count = self.total + float(np.sum(step.maps.mean(axis=(1, 2)))), self.count + len(step.maps)

    def result(self, out):
        return {"mean_map": 100 * self.total / self.count} if self.count else {}

    @staticmethod
    def lines(result):
        return [f"mean map {result['mean_map']:.2f}"] if "mean_map" in result else []


def test_a_metric_is_one_accumulator_that_the_driver_the_json_and_the_trainer_pick_up(tmp_path, monkeypatch, capsys):
    """Adding a metric touches one place: an ``Accumulator`` listed in ``METRICS``."""
    import c2am_tf.evaluation.evaluate as driver
    from c2am_tf.training.trainer import TrainConfig, run_training

    monkeypatch.setattr(driver, "METRICS", driver.METRICS + (_MeanMap,))
    ev = Evaluation([0.5], max_box_acc=False)
    maps = np.stack([np.full((4, 4), 0.2), np.full((4, 4), 0.6)])
    ev.update(maps, {"boxes": np.zeros((2, 1, 4)), "image": np.zeros((2, 64, 64, 3))})
    result = ev.result()
    assert result["mean_map"] == pytest.approx(40.0) and list(result)[-1] == "mean_map"
    assert format_result(result).splitlines()[-1] == "mean map 40.00"
    ev.update_boxes(np.zeros((1, 1, 4)), {"boxes": np.zeros((1, 1, 4))})  # a boxes file: no maps to add
    assert ev.result()["mean_map"] == pytest.approx(40.0) and ev.result()["total"] == 3

    cfg = TrainConfig(out=str(tmp_path / "run"), epochs=1, steps_per_epoch=1, dataset="synthetic", backbone="tiny",
                      weights=None, batch_size=8, synthetic_count=16, synthetic_size=64, resize=64, crop=56,
                      eval_resize=64, eval_crop=64, verbose=0)
    _, history, summary = run_training(cfg)
    assert 0 < history.history["mean_map"][0] <= 100 and summary["mean_map"] == history.history["mean_map"][0]
    assert f"mean map {summary['mean_map']:.2f}" in capsys.readouterr().out
    stored = json.load(open(tmp_path / "run" / "summary.json"))
    assert stored["mean_map"] == pytest.approx(summary["mean_map"])
