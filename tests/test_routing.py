"""fit-routed / c2am_tf.training.routing: clusters, a head per chosen cluster, the general head for the rest."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from c2am_tf import presets
from c2am_tf.cli import run_command
from c2am_tf.data.synthetic import synthetic_example
from c2am_tf.data.transforms import resize_square
from c2am_tf.models.c2am import c2am_presets
from c2am_tf.presets import load_model

TINY = ["--backbone", "tiny", "--weights", "none", "--epochs", "1", "--batch-size", "4", "--verbose", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder of 48 images, general model path, routed run folder) after ``fit`` and ``fit-routed --own 1``."""
    root = tmp_path_factory.mktemp("routing")
    images = root / "images"
    images.mkdir()
    for i in range(48):
        Image.fromarray(synthetic_example(i, 64, seed=0)[0]).save(images / f"{i:03d}.png")
    assert run_command("fit", TINY + ["--synthetic-count", "64", "--eval-every", "0", "--out", str(root / "g")]) == 0
    general = str(root / "g" / "final.keras")
    common = ["--model", general, "--dataset", "folder", "--data-dir", str(images), "--clusters", "3"] + TINY
    assert run_command("fit-routed", common + ["--own", "1", "--out", str(root / "r")]) == 0
    return images, general, root / "r", common


def test_without_own_it_lists_the_clusters_and_trains_nothing(trained, tmp_path, capsys):
    _, _, _, common = trained
    with pytest.raises(SystemExit) as err:
        run_command("fit-routed", common + ["--out", str(tmp_path / "r")])
    assert err.value.code == 2
    out = capsys.readouterr()
    assert [line.split(":")[0] for line in out.out.splitlines() if line.startswith("cluster")] == \
        ["cluster 0", "cluster 1", "cluster 2"]
    assert "--own" in out.err and not (tmp_path / "r" / "routed.keras").exists()


def test_each_image_gets_its_clusters_head_or_the_general_one(trained):
    images, general, run, _ = trained
    routed = load_model(str(run / "routed.keras"))
    models = {"general": load_model(general), 1: load_model(str(run / "cluster1" / "final.keras"))}
    clusters = json.loads((run / "clusters.json").read_text())
    assert set(clusters.values()) == {0, 1, 2}
    listed = (run / "cluster1.txt").read_text().split()
    assert sorted(listed) == sorted(p for p, c in clusters.items() if c == 1)
    # in the frame the clusters were made in (each image resized whole to --crop)
    batch = np.stack([np.asarray(resize_square(tf.constant(np.asarray(Image.open(p))), 224), np.float32)
                      for p in sorted(clusters)])
    routed_maps = np.asarray(routed(batch))
    chosen = np.asarray(routed.head.clusters(routed.backbone(batch)))
    np.testing.assert_array_equal(chosen, [clusters[p] for p in sorted(clusters)])
    for c in (0, 1, 2):
        own = models[1] if c == 1 else models["general"]
        rows = chosen == c
        np.testing.assert_allclose(routed_maps[rows], np.asarray(own(batch[rows])), atol=1e-5)
    assert float(routed.polarity.numpy()) == 1.0  # each head's polarity is applied inside the routed head
    assert float(routed.threshold.numpy()) == pytest.approx(float(models["general"].threshold.numpy()))


def test_it_refuses_to_overwrite_a_routed_model_and_a_bad_cluster(trained, capsys):
    _, _, run, common = trained
    before = (run / "routed.keras").read_bytes()
    with pytest.raises(SystemExit) as err:
        run_command("fit-routed", common + ["--own", "1", "--out", str(run)])
    assert err.value.code == 2 and "routed.keras exists" in capsys.readouterr().err
    assert (run / "routed.keras").read_bytes() == before
    with pytest.raises(SystemExit) as err:
        run_command("fit-routed", common + ["--own", "7", "--out", str(run / "bad")])
    assert err.value.code == 2 and "there are 3 clusters" in capsys.readouterr().err
    assert not (run / "bad").exists()  # refused before any clustering or training


def test_a_routed_model_saves_and_loads_as_a_preset(trained, tmp_path, monkeypatch):
    images, _, run, _ = trained
    routed = load_model(str(run / "routed.keras"))
    presets.save_preset(routed, "r", "tiny", "concat", directory=str(tmp_path), trained_on="-", command="-")
    monkeypatch.setattr(c2am_presets, "HERE", str(tmp_path))
    monkeypatch.setattr(c2am_presets, "INDEX", str(tmp_path / "presets.json"))
    loaded = presets.from_preset("r", weights=None)
    net = presets.map_network("r", weights=None)
    loaded.backbone.set_weights(routed.backbone.get_weights())  # tiny has no stored weights: the file's only
    net.get_layer("tiny").set_weights(routed.backbone.get_weights())
    batch = np.stack([np.asarray(Image.open(p), np.float32) for p in sorted(images.glob("*.png"))[:16]])
    np.testing.assert_allclose(np.asarray(loaded(batch)), np.asarray(routed(batch)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(net(batch)), np.asarray(routed(batch)), atol=1e-6)


def _batch224(images, count=8):
    return np.stack([np.asarray(resize_square(tf.constant(np.asarray(Image.open(p))), 224), np.uint8)
                     for p in sorted(images.glob("*.png"))[:count]])


def test_a_routed_model_exports_to_tflite_and_saved_model(trained, tmp_path):
    import shutil
    import subprocess

    from c2am_tf.deploy import tflite_export as tflite
    from c2am_tf.deploy.saved_model import export_saved_model

    images, _, run, _ = trained
    routed = load_model(str(run / "routed.keras"))
    batch = _batch224(images)
    want = np.asarray(routed.predict(batch.astype(np.float32), verbose=0))[..., 0]
    assert len(set(np.asarray(routed.head.clusters(routed.backbone(batch.astype(np.float32)))).tolist())) > 1
    path = export_saved_model(routed, str(tmp_path / "models"))
    cli = shutil.which("saved_model_cli")
    if cli is not None:  # the loader TF Serving uses
        np.save(tmp_path / "images.npy", batch)
        proc = subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "cam",
                               "--inputs", f"images={tmp_path / 'images.npy'}", "--outdir", str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        np.testing.assert_allclose(np.load(tmp_path / "out" / "cam.npy"), want, atol=1e-4)
    pytest.importorskip("ai_edge_litert")
    from c2am_tf.deploy.on_device import ForegroundDetector

    detector = ForegroundDetector(tflite.convert(routed, 224, "none"))
    np.testing.assert_allclose(np.stack([detector.map(im) for im in batch]), want, atol=1e-4)


def _voting_head(exponents=None):
    """A RoutedHead on 4-channel features: centre 0 is channel 0, centre 1 channel 1; 3 classes whose logits
    are channels 1..3 of the pooled features, class 2 votes for head 1, class 0 and 1 for nobody."""
    from c2am_tf.models.c2am.layers import ActivationHead, RoutedHead

    heads = [ActivationHead(name="head_0"), ActivationHead(name="head_1")]
    kernel = np.zeros((4, 3), np.float32)
    kernel[1, 0] = kernel[2, 1] = kernel[3, 2] = 1.0
    head = RoutedHead(heads, routes=[0, 1], polarities=[1, -1], centres=np.eye(2, 4, dtype="float32"),
                      class_routes=[-1, -1, 1], class_votes=2, class_weights=(kernel, np.zeros(3, np.float32)),
                      exponents=exponents, name="routed_head")
    head.build((None, 5, 5, 4))
    return head


def _features(pooled):
    return np.broadcast_to(np.asarray(pooled, np.float32)[:, None, None, :], (len(pooled), 5, 5, 4)).copy()


def test_an_images_best_classes_vote_for_a_head_over_its_nearest_centre():
    head = _voting_head()
    # the class logits are channels 1..3 (classes 0..2); only class 2 votes, for head 1
    z = _features([[5, 1, 0.5, 0],  # nearest centre 0; class 2 not among its 2 best: centre 0's head 0
                   [5, 0, 1, 2],    # nearest centre 0, but class 2 is its best class: head 1
                   [5, 0, 2, 1],    # class 2 second best, among the 2 that vote: head 1
                   [0, 5, 0, 0],    # nearest centre 1: its head 1
                   [0, 5, 3, 2]])   # nearest centre 1, its 2 best classes vote for nobody: head 1
    np.testing.assert_array_equal(np.asarray(head.routed_heads(z)), [0, 1, 1, 1, 1])
    maps, routed = np.asarray(head.head_maps(z)), np.asarray(head(z))[..., 0]
    for i, j in enumerate([0, 1, 1, 1, 1]):
        np.testing.assert_allclose(routed[i], maps[i, ..., j], atol=1e-6)


def test_class_routes_come_from_the_clusters_of_each_classes_training_images():
    from c2am_tf.training.routing import class_routes_from_votes

    classes = np.array([0, 0, 0, 1, 1, 2, 2, 4])
    ids = np.array([1, 1, 0, 2, 2, 1, 2, 1])
    # class 0: 2 of 3 in cluster 1 (own head 1); class 1: cluster 2 (general); class 2: a tie; 3: unseen
    assert class_routes_from_votes(classes, ids, [0, 1, 0], 5) == [1, -1, -1, -1, 1]


def test_a_voting_calibrated_head_saves_loads_and_converts_to_tflite(tmp_path):
    import keras

    head = _voting_head(exponents=[1.0, 0.5])
    z = _features([[5, 0, 1, 2], [5, 0, 0, 0], [0, 5, 0, 0]]) + np.random.RandomState(0).rand(3, 5, 5, 4)
    inputs = keras.Input((5, 5, 4))
    model = keras.Model(inputs, head(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(z)), np.asarray(model(z)), atol=1e-6)
    assert loaded.get_layer("routed_head").exponents == [1.0, 0.5]
    # exponent 0.5 on head 1: its (polarity-applied) map, square-rooted
    raw = np.asarray(head.head_maps(z, calibrated=False))
    np.testing.assert_allclose(np.asarray(head.head_maps(z))[..., 1], np.sqrt(raw[..., 1]), atol=1e-6)
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    interpreter = Interpreter(model_content=converter.convert())
    runner = interpreter.get_signature_runner()
    got = list(runner(**{runner.get_input_details().popitem()[0]: z.astype(np.float32)}).values())[0]
    np.testing.assert_allclose(got, np.asarray(model(z)), atol=1e-5)


def test_calibrated_heads_each_box_at_their_own_threshold(trained):
    from c2am_tf import data
    from c2am_tf.evaluation.evaluate import evaluate
    from c2am_tf.training.routing import calibrate_heads, head_thresholds

    _, _, run, _ = trained
    routed = load_model(str(run / "routed.keras"))
    routed.box_band = 0.0  # with the band the boxes of a powered map move a little: exact without it
    held = data.eval_dataset("synthetic", "test", batch_size=16, frame="whole224")
    # unsmoothed: each head's threshold is then its best, which the assertion below needs
    found = head_thresholds(routed, held, min_images=1, smooth=0)
    calibrated, again = calibrate_heads(routed, held, min_images=1, smooth=0)
    assert again == found and sum(n for _, n in found.values()) == 128
    stored = found[0][0]
    assert float(calibrated.threshold.numpy()) == pytest.approx(stored)
    for (t, _), e in zip(found.values(), calibrated.head.exponents):
        assert e == pytest.approx(np.log(stored) / np.log(t))
    # each head at its own best threshold: at least as good as any one threshold for all of them
    before, _ = evaluate(routed, held, max_box_acc=False)
    after, _ = evaluate(calibrated, held, stored_threshold=stored, max_box_acc=False)
    assert after["at_stored"] >= before["best"]


def test_fit_routed_reuses_a_finished_head_and_calibrates(trained, tmp_path, capsys):
    import shutil

    _, _, run, common = trained
    out = tmp_path / "r2"
    shutil.copytree(run, out)
    (out / "routed.keras").unlink()
    config = json.loads((out / "cluster1" / "config.json").read_text())
    config["data_dir"] = str(out / "cluster1.txt")
    (out / "cluster1" / "config.json").write_text(json.dumps(config))
    head = (out / "cluster1" / "final.keras").read_bytes()
    assert run_command("fit-routed", common + ["--own", "1", "--out", str(out), "--calibrate", "synthetic", "-",
                                               "test"]) == 0
    assert (out / "cluster1" / "final.keras").read_bytes() == head  # reused, not trained again
    assert "head 1: threshold" in capsys.readouterr().out
    routed = load_model(str(out / "routed.keras"))
    assert len(routed.head.exponents) == 2
    assert run_command("fit-routed", common + ["--own", "1", "--out", str(tmp_path / "r3"), "--class-votes", "5"]) == 2
    assert "--class-votes the tiny backbone has no ImageNet classifier" in capsys.readouterr().err
