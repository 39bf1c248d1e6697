"""train/fit.py and run_training: a smoke run, outputs, and resuming a killed run."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from c2am_tf.training.callbacks import AtomicCheckpoint
from c2am_tf.training.trainer import TrainConfig, run_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = dict(dataset="synthetic", backbone="tiny", weights=None, batch_size=8, synthetic_count=32,
             synthetic_size=64, resize=64, crop=56, eval_resize=64, eval_crop=64, verbose=0)


def test_fit_script_smoke_run(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "train", "fit.py"), "--backbone", "tiny", "--weights", "none",
           "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "8", "--synthetic-count", "32",
           "--synthetic-size", "64", "--resize", "64", "--crop", "56", "--eval-resize", "64",
           "--eval-crop", "64", "--out", str(out), "--verbose", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GT-known Loc" in proc.stdout
    assert "\nverdict: " in proc.stdout  # the label-free report's one line, always printed
    for name in ("final.keras", "best.keras", "last.keras", "log.csv", "per_threshold.csv", "summary.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps_per_epoch"] == 3
    assert 0 <= summary["gt_known_loc"] <= 100 and len(summary["per_threshold"]) == 19
    model = keras.saving.load_model(str(out / "final.keras"))
    assert float(model.threshold.numpy()) == pytest.approx(summary["threshold"])
    assert os.listdir(out / "tb")  # TensorBoard logs
    assert not (out / "backup").exists()  # removed after a completed run


class _Crash(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("simulated crash")


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "r"), epochs=3, steps_per_epoch=2, eval_every=1, **QUICK)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, extra_callbacks=[_Crash()])
    assert (tmp_path / "r" / "backup").exists() and (tmp_path / "r" / "last.keras").exists()
    # the run folder's own count (c2am_tf.training.run_folder.EpochCount), not Keras's private metadata
    assert json.loads((tmp_path / "r" / "resume.json").read_text())["epochs_done"] == 1
    model, history, summary = run_training(cfg)
    assert not (tmp_path / "r" / "resume.json").exists() and (tmp_path / "r" / "last.keras").exists()
    assert len(history.history["loss"]) == 2  # epochs 2 and 3 only
    # its time and speed are of the epochs it ran, and say so
    assert summary["epochs_run"] == 2 and summary["epochs"] == 3 and summary["timed_steps"] <= 2 * 2
    assert int(model.optimizer.iterations.numpy()) == 3 * 2
    with open(tmp_path / "r" / "log.csv") as f:
        epochs = [row["epoch"] for row in csv.DictReader(f)]
    assert epochs == ["0", "1", "2"]
    # it went on with the images the killed run would have seen next: the same model as a run never killed
    whole, _, _ = run_training(TrainConfig(**{**vars(cfg), "out": str(tmp_path / "whole")}))
    for a, b in zip(model.weights, whole.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


def test_a_run_folder_written_before_resume_json_still_resumes(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "r"), epochs=3, steps_per_epoch=2, eval_every=0, **QUICK)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, extra_callbacks=[_Crash()])
    os.remove(tmp_path / "r" / "resume.json")  # as an older c2am_tf left it: the backup and log.csv only
    model, history, _ = run_training(cfg)
    assert len(history.history["loss"]) == 2 and int(model.optimizer.iterations.numpy()) == 3 * 2


def test_no_module_reads_keras_private_run_files():
    sources = [os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(ROOT, "c2am_tf"))
               for name in names if name.endswith(".py")]
    assert [p for p in sources if "training_metadata" in open(p).read()] == []


def test_atomic_checkpoint_keeps_the_best(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    cb = AtomicCheckpoint(str(tmp_path), monitor="score", mode="max")
    cb.set_model(model)
    cb.on_epoch_end(0, {"score": 5.0})
    first = os.path.getmtime(tmp_path / "best.keras")
    cb.on_epoch_end(1, {"score": 3.0})
    assert os.path.getmtime(tmp_path / "best.keras") == first
    assert json.loads((tmp_path / "best.json").read_text()) == {"value": 5.0, "epoch": 1}
    cb.on_epoch_end(2, {"score": 7.0})
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == 3
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp.keras")]
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "last.keras").get_weights()[0],
                                  model.get_weights()[0])


def test_masks_dataset_reports_pxap_and_mask_iou(tmp_path):
    from test_data import _write_masks

    root = _write_masks(tmp_path / "duts")
    cfg = TrainConfig(out=str(tmp_path / "m"), epochs=1, steps_per_epoch=2,
                      **{**QUICK, "dataset": "masks", "data_dir": str(root), "batch_size": 2})
    _, history, summary = run_training(cfg)
    assert 0 <= summary["pxap"] <= 100 and 0 <= summary["mask_iou"] <= 100
    assert "pxap" in history.history and "mask_iou" in history.history


def test_reusing_out_with_other_settings_is_refused_and_overwrite_replaces_only_run_files(tmp_path):
    from c2am_tf.training.run_folder import RunConflictError

    out = tmp_path / "r"
    cfg = TrainConfig(out=str(out), epochs=1, steps_per_epoch=1, eval_every=0, **QUICK)
    run_training(cfg)
    (out / "notes.txt").write_text("mine")
    final = (out / "final.keras").read_bytes()
    other = TrainConfig(**{**cfg.__dict__, "lr": 0.01, "crop": 48})
    with pytest.raises(RunConflictError, match=r"crop 56 -> 48, lr 0.001 -> 0.01"):
        run_training(other)
    assert (out / "final.keras").read_bytes() == final  # nothing of the old run was touched
    # the same run, finished: training it again would replace its final.keras (a setting that does not
    # change the run, verbosity, is still the same run)
    with pytest.raises(RunConflictError, match=r"holds this run, finished"):
        run_training(TrainConfig(**{**cfg.__dict__, "verbose": 2}))
    assert (out / "final.keras").read_bytes() == final
    _, _, summary = run_training(other, overwrite=True)
    assert json.loads((out / "config.json").read_text())["lr"] == 0.01
    assert (out / "notes.txt").read_text() == "mine" and summary["epochs"] == 1
    # a run written before a setting existed (here: box_band) resumes when the new setting is its default
    config = json.loads((out / "config.json").read_text())
    del config["box_band"]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunConflictError, match=r"holds this run, finished"):  # the same run, not another
        run_training(other)
    with pytest.raises(RunConflictError, match=r"box_band 0.1 -> 0.0"):
        run_training(TrainConfig(**{**other.__dict__, "box_band": 0.0}))


def _fit_cli(tmp_path, *flags):
    cmd = [sys.executable, os.path.join(ROOT, "train", "fit.py"), "--backbone", "tiny", "--weights", "none",
           "--synthetic-count", "16", "--synthetic-size", "64", "--resize", "64", "--crop", "56",
           "--eval-resize", "64", "--eval-crop", "64", "--verbose", "0", "--out", str(tmp_path / "cli"), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flags, message", [
    (("--lr", "nan"), "--lr must be a finite number > 0; got nan"),
    (("--batch-size", "0"), "--batch-size must be an integer >= 2"),
    (("--steps-per-epoch", "0"), "--steps-per-epoch must be an integer >= 1"),
    (("--crop", "72"), "--crop 72 is larger than resize 64"),
    (("--batch-size", "20"), "--batch-size 20 is more than the 16 readable training images"),
    (("--dataset", "folder", "--data-dir", "/no/such/folder"), "image folder not found: /no/such/folder"),
    (("--momentum", "1"), "--momentum must be a finite number >= 0 and < 1"),
    (("--weights", "no/such.pth"), "--weights file not found: no/such.pth"),
    (("--box-band", "0.6"), "--box-band must be a fraction of the map's maximum in [0, 0.5]; got 0.6"),
])
def test_bad_flags_are_one_line_errors_and_write_nothing(tmp_path, flags, message):
    proc = _fit_cli(tmp_path, *flags)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "cli").exists()


def test_a_loss_that_turns_nan_stops_the_run_and_keeps_the_last_good_model(tmp_path):
    from c2am_tf.training.trainer import NonFiniteLossError

    class _Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # weights become NaN: every later loss is NaN
                self.model.head.kernel.assign(self.model.head.kernel * np.nan)

    cfg = TrainConfig(out=str(tmp_path / "n"), epochs=3, steps_per_epoch=2, eval_every=1, **QUICK)
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 1"):
        run_training(cfg, extra_callbacks=[_Poison()])
    last = keras.saving.load_model(str(tmp_path / "n" / "last.keras"))
    assert all(np.isfinite(w).all() for w in last.get_weights())
    assert not (tmp_path / "n" / "final.keras").exists() and not (tmp_path / "n" / "backup").exists()


def test_a_bad_weights_file_is_one_line_and_does_not_block_the_corrected_retry(tmp_path, capsys):
    from c2am_tf.cli import run_command

    (tmp_path / "bad.weights.h5").write_bytes(b"not weights")
    out = tmp_path / "run"
    flags = ["--dataset", "synthetic", "--backbone", "tiny", "--epochs", "1", "--steps-per-epoch", "1",
             "--batch-size", "8", "--synthetic-count", "16", "--synthetic-size", "64", "--resize", "64",
             "--crop", "56", "--eval-resize", "64", "--eval-crop", "64", "--verbose", "0", "--out", str(out)]
    status = run_command("fit", flags + ["--weights", str(tmp_path / "bad.weights.h5")])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2 and "--weights" in message and "bad.weights.h5: cannot be loaded" in message
    assert not (out / "config.json").exists()
    assert run_command("fit", flags + ["--weights", "none"]) == 0  # the same --out, corrected, no --overwrite
    assert (out / "final.keras").exists()


def test_a_run_can_start_from_a_shipped_head_and_keeps_its_threshold():
    import numpy as np

    from c2am_tf import C2AM
    from c2am_tf.training.trainer import TrainConfig, build_model
    from c2am_tf.utils.errors import ConfigError

    for fields, message in ((dict(init_preset="bogus"), "must be 'none', a shipped head preset"),
                            (dict(init_preset="general_lite0", backbone="tiny"), "this run trains on tiny")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig(dataset="synthetic", **fields).validate()
    cfg = TrainConfig(dataset="synthetic", init_preset="cub_lite0").validate()
    model = build_model(cfg, total_steps=10)
    preset = C2AM.from_preset("cub_lite0")
    assert float(model.threshold.numpy()) == pytest.approx(0.35) and float(model.polarity.numpy()) == -1.0
    images = np.random.RandomState(0).randint(0, 256, (2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(images, verbose=0), preset.predict(images, verbose=0), atol=1e-5)


def test_a_run_can_go_on_from_an_earlier_runs_model_and_a_model_that_does_not_fit_is_one_line(tmp_path):
    """--init-preset runs/mine/final.keras: a run on new photos starts from the user's own model (its head,
    polarity and threshold), as the leave-one-domain-out benchmark starts from a head that never saw a domain."""
    from c2am_tf.presets import load_model
    from c2am_tf.training.trainer import build_model, choose_start
    from c2am_tf.utils.errors import ConfigError

    first, _, summary = run_training(TrainConfig(epochs=1, steps_per_epoch=2, out=str(tmp_path / "first"), **QUICK))
    assert summary["batches"] == "random"  # a run from scratch keeps its measured recipe
    path = str(tmp_path / "first" / "final.keras")
    earlier = load_model(path)
    earlier.threshold.assign(0.3)  # a threshold the start must carry over, not the default 0.5
    earlier.save(str(tmp_path / "calibrated.keras"))
    cfg = TrainConfig(init_preset=str(tmp_path / "calibrated.keras"), **QUICK).validate()
    assert cfg.lr == 1e-3  # the config's own rate: only "auto" with lr unset picks the warm one
    images = np.random.RandomState(0).randint(0, 256, (2, 56, 56, 3)).astype("float32")
    start, name, why = choose_start(cfg, images)
    assert (name, why) == (str(tmp_path / "calibrated.keras"), "the model named")
    model = build_model(cfg, total_steps=4, start=start)
    assert float(model.threshold.numpy()) == pytest.approx(0.3)
    assert float(model.polarity.numpy()) == float(earlier.polarity.numpy())
    for a, b in zip(model.head.weights, earlier.head.weights):  # the head (a tiny backbone without weights differs)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # a run from it trains and says where it started
    _, _, summary = run_training(TrainConfig(init_preset=path, epochs=1, steps_per_epoch=2, eval_every=0,
                                             out=str(tmp_path / "second"), **QUICK))
    assert summary["start"] == f"{path} (the model named)"
    # an adapted start draws each batch from one cluster of look-alike images: 32 images, batches of 8
    assert summary["batches"] == "each from one of 4 k-means clusters of look-alike images"
    assert summary["threshold_rule"].startswith(f"matched to {path}'s foreground")
    with pytest.raises(ConfigError, match="init_preset .*nowhere.keras: no such model file"):
        TrainConfig(init_preset=str(tmp_path / "nowhere.keras"), **QUICK).validate()
    wider = TrainConfig(**{**QUICK, "backbone": "efficientnet_lite0", "weights": None}, init_preset=path).validate()
    with pytest.raises(ConfigError, match="is a head on tiny; this run trains on efficientnet_lite0"):
        choose_start(wider, images)
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="init_preset .*junk.keras"):
        choose_start(TrainConfig(init_preset=str(tmp_path / "junk.keras"), **QUICK).validate(), images)


def test_a_warm_start_without_boxes_carries_its_threshold_over_by_the_foreground_it_keeps(tmp_path):
    from c2am_tf.maps.foreground import DEFAULT_THRESHOLDS
    from c2am_tf.training.trainer import TrainConfig, run_training

    common = dict(dataset="synthetic", epochs=1, steps_per_epoch=2, batch_size=4, eval_every=0, resize=64, crop=64,
                  synthetic_count=8, synthetic_size=64, verbose=0)
    _, _, summary = run_training(TrainConfig(init_preset="general_lite0", out=str(tmp_path / "warm"), **common))
    assert summary["threshold_rule"] == ("matched to general_lite0's foreground at its threshold 0.40 on 8 "
                                         "training images, never above it")
    assert any(abs(summary["threshold"] - t) < 1e-6 for t in DEFAULT_THRESHOLDS)
    assert summary["threshold"] <= 0.4 + 1e-6  # a wider map keeps the start's cut (label_free_threshold)
    assert "polarity_margin" in summary
    _, _, summary = run_training(TrainConfig(out=str(tmp_path / "cold"), **common))
    assert summary["threshold_rule"].startswith("none: the default 0.5") and summary["threshold"] == 0.5


def test_auto_starts_a_run_on_images_without_boxes_from_the_general_head():
    from c2am_tf.training.trainer import TrainConfig

    def resolved(**fields):
        cfg = TrainConfig(init_preset="auto", lr=None, **fields).validate()
        return cfg.init_preset, cfg.lr

    assert resolved(dataset="folder", data_dir="photos") == ("general_routed_lite0", 1e-4)
    assert resolved(dataset="masks", data_dir="duts") == ("general_routed_lite0", 1e-4)
    assert resolved(dataset="cub") == ("none", 1e-3)  # boxes: the recipe measured on CUB
    assert resolved(dataset="folder", data_dir="photos", backbone="tiny") == ("none", 1e-3)
    assert resolved(dataset="folder", data_dir="photos", weights="none") == ("none", 1e-3)
    assert TrainConfig(dataset="folder", data_dir="photos", init_preset="auto", lr=3e-4).validate().lr == 3e-4


def _labelled_folder(tmp_path, count=12, size=64):
    """A folder of synthetic photos and a CSV of their boxes (the user's few labelled images)."""
    from PIL import Image

    from c2am_tf.data import synthetic_arrays

    images, _, boxes = synthetic_arrays(count, size, seed=3)
    folder = tmp_path / "photos"
    folder.mkdir()
    lines = []
    for k, (image, box) in enumerate(zip(images, boxes)):
        Image.fromarray(image).save(folder / f"p{k:02d}.png")
        lines.append(f"p{k:02d}.png," + ",".join(f"{v:.1f}" for v in box[0]))
    (tmp_path / "boxes.csv").write_text("\n".join(lines[: count // 2]) + "\n")  # half of them labelled
    return str(folder), str(tmp_path / "boxes.csv")


def test_a_few_labelled_images_choose_the_epoch_and_final_keras_is_never_below_its_start(tmp_path):
    """final.keras is the start or the best epoch, whichever scores higher on the labelled images at its own
    label-free threshold, and it scores there what the summary says."""
    from c2am_tf.presets import load_model

    folder, labels = _labelled_folder(tmp_path)
    out = tmp_path / "mine"
    cfg = TrainConfig(dataset="folder", data_dir=folder, val_annotations=labels, init_preset="general_lite0",
                      epochs=2, batch_size=4, resize=64, crop=64, verbose=0, out=str(out))
    model, _, summary = run_training(cfg)
    assert summary["val_images"] == 6 and cfg.val_images == folder
    # the labelled images choose the epoch; the threshold stays the label-free one (chosen among 19 thresholds,
    # a few images overfit: docs/results/own_photos.md)
    assert summary["threshold_rule"].startswith("matched to general_lite0's foreground at its threshold 0.40")
    assert summary["threshold_rule"].endswith(f"the labelled images of {labels} chose the epoch")
    scores = summary["val_gt_known_loc"]
    assert set(scores) == {"trained", "trained_epoch", "start"}
    kept = "start.keras" if scores["start"] > scores["trained"] else "best.keras"  # a tie keeps the trained
    assert summary["kept"].startswith("the start, general_lite0" if kept == "start.keras" else "epoch ")
    final, chosen = load_model(str(out / "final.keras")), load_model(str(out / kept))
    for a, b in zip(final.weights, chosen.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(final.threshold.numpy()) == pytest.approx(summary["threshold"])
    # the kept model scores what the summary says on the labelled images
    from c2am_tf import data
    from c2am_tf.evaluation.evaluate import evaluate

    batches = data.eval_dataset("folder", "test", folder, annotations=labels)
    result, _ = evaluate(final, batches, max_box_acc=False, stored_threshold="model")
    assert result["total"] == 6
    assert result["at_stored"] == pytest.approx(max(scores["start"], scores["trained"]), abs=1e-6)
    assert summary["verdict"] and "median_iou_with_start" in summary["label_free"]


def test_val_annotations_are_checked_before_any_work(tmp_path):
    from c2am_tf.utils.errors import ConfigError

    folder, labels = _labelled_folder(tmp_path, count=4)
    for fields, flag, message in (
            (dict(dataset="cub", val_annotations=labels), "val_annotations", "are for images without boxes"),
            (dict(dataset="tfrecord", data_dir=folder, val_annotations=labels), "val_images", "is needed"),
            (dict(dataset="folder", data_dir=folder, val_annotations=folder), "val_annotations", "neither"),
            (dict(dataset="folder", data_dir=folder, val_images=folder), "val_images", "goes with")):
        with pytest.raises(ConfigError, match=message) as err:
            TrainConfig(**fields).validate()
        assert err.value.field == flag
