"""fit-routed / c2am_tf.routing: clusters, a head per chosen cluster, the general head for the rest."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from c2am_tf import presets
from c2am_tf.cli import run_command
from c2am_tf.data.synthetic import synthetic_example
from c2am_tf.data.transforms import resize_square
from c2am_tf.inference import load_model

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
    monkeypatch.setattr(presets, "HERE", str(tmp_path))
    monkeypatch.setattr(presets, "INDEX", str(tmp_path / "presets.json"))
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

    from c2am_tf import tflite
    from c2am_tf.export import export_saved_model

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
    from c2am_tf.litert import ForegroundDetector

    detector = ForegroundDetector(tflite.convert(routed, 224, "none"))
    np.testing.assert_allclose(np.stack([detector.map(im) for im in batch]), want, atol=1e-4)
