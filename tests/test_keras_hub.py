"""keras-hub ViTs as a backbone family (c2am_tf/backbones/keras_hub.py), on a small random-init DINOv2 config
of the class the presets use: nothing downloads."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from c2am_tf.backbones import REGISTRY, Backbone, backbone_entry, register_backbone
from c2am_tf.backbones.keras_hub import parse_spec
from c2am_tf.utils.errors import ConfigError

NAME = "keras_hub_test_dinov2"
SIZE = 56  # the ViT's input: 4 x 4 patches of 14


def test_a_spec_names_a_preset_and_an_optional_size():
    assert parse_spec("dinov3_vit_small_lvd1689m@448") == ("dinov3_vit_small_lvd1689m", 448)
    entry = backbone_entry("keras_hub:dinov2_small")
    assert isinstance(entry, Backbone) and entry.features == ("concat",) and entry.classifier is None
    with pytest.raises(ConfigError, match="keras_hub:PRESET@SIZE"):
        backbone_entry("keras_hub:dinov2_small@big")
    with pytest.raises(ValueError, match="unknown backbone"):
        backbone_entry("hub:dinov2_small")


def _small_dinov2(weights, input_shape, features):
    import keras
    import keras_hub

    from c2am_tf.backbones.keras_hub import hub_backbone

    keras.utils.set_random_seed(0)  # every build the same random ViT: the preset below stores the head alone
    hub = keras_hub.models.DINOV2Backbone(patch_size=14, num_layers=2, hidden_dim=32, num_heads=2,
                                          intermediate_dim=64, num_register_tokens=1, image_shape=(SIZE, SIZE, 3),
                                          position_embedding_shape=(SIZE, SIZE, 3))
    return hub_backbone(hub, SIZE, name=NAME)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A C2AM run of the trainer on the small DINOv2 (one epoch of two steps), registered as one entry."""
    pytest.importorskip("keras_hub")
    from c2am_tf.training.trainer import TrainConfig, run_training

    register_backbone(NAME, Backbone(build=_small_dinov2))
    out = tmp_path_factory.mktemp("hub")
    try:
        cfg = TrainConfig(dataset="synthetic", backbone=NAME, weights=None, epochs=1, steps_per_epoch=2, batch_size=4,
                          synthetic_count=8, synthetic_size=64, resize=64, crop=56, eval_resize=64, eval_crop=64,
                          out=str(out / "run"), verbose=0)
        model, history, _ = run_training(cfg)
        images = np.random.RandomState(0).randint(0, 256, (3, 64, 80, 3)).astype(np.uint8)
        yield model, history, out, images
    finally:
        REGISTRY.pop(NAME, None)


def test_one_training_step_moves_the_head_and_the_grid_is_the_patch_grid(trained):
    model, history, _, images = trained
    assert np.isfinite(history.history["loss"]).all()
    maps = np.asarray(model.predict(images, verbose=0))
    assert maps.shape == (3, SIZE // 14, SIZE // 14, 1)  # the stride is the patch size, any input size
    assert 0 <= maps.min() and maps.max() <= 1 and maps.std() > 0


def test_the_keras_file_loads_in_a_fresh_process(trained):
    model, _, out, images = trained
    np.save(out / "images.npy", images)
    code = ("import sys, numpy as np, c2am_tf; m = c2am_tf.load_model(sys.argv[1]); "
            "np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))")
    proc = subprocess.run([sys.executable, "-c", code, str(out / "run" / "final.keras"), str(out / "images.npy"),
                           str(out / "fresh.npy")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(out / "fresh.npy"), model.predict(images, verbose=0), atol=1e-6)


def test_the_saved_model_runs_in_saved_model_cli(trained):
    from c2am_tf.deploy.saved_model import export_saved_model

    model, _, out, images = trained
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli not on PATH")
    path = export_saved_model(model, str(out / "serving"))
    np.save(out / "batch.npy", images)
    proc = subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "cam",
                           "--inputs", f"images={out / 'batch.npy'}", "--outdir", str(out / "cli"), "--overwrite"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(out / "cli" / "cam.npy"), model.predict(images, verbose=0)[..., 0], atol=1e-5)


def test_the_tflite_export_gives_the_keras_map(trained):
    pytest.importorskip("ai_edge_litert")
    from c2am_tf.deploy import tflite_export as tflite
    from c2am_tf.deploy.on_device import ForegroundDetector

    model, _, out, images = trained
    (out / "hub.tflite").write_bytes(tflite.convert(model, 64))
    detector = ForegroundDetector(str(out / "hub.tflite"), num_threads=1)
    square = images[:, :, :64]  # the export's input is 64 x 64
    want = model.predict(square, verbose=0)[0, ..., 0]
    np.testing.assert_allclose(detector.map(square[0]), want, atol=1e-4)


def test_the_presets_map_network_builds_on_the_registry_entry(trained, tmp_path):
    from c2am_tf.models.c2am.c2am_presets import map_network, save_preset

    model, _, _, images = trained
    save_preset(model, "hub_test", NAME, "concat", directory=str(tmp_path))
    net = map_network("hub_test", weights=None, directory=str(tmp_path))
    np.testing.assert_allclose(net.predict_on_batch(images.astype(np.float32)), model.predict(images, verbose=0),
                               atol=1e-5)


def test_the_backbone_flag_takes_a_family_spec_and_names_the_choices_otherwise(capsys):
    from c2am_tf.cli import fit

    cfg, _, _ = fit.parse_args(["--dataset", "synthetic", "--backbone", "keras_hub:dinov2_small@448", "--out", "unused"])
    assert cfg.backbone == "keras_hub:dinov2_small@448"  # a TrainConfig that validated
    for bad, said in (("resnet5", "keras_hub:..."), ("keras_hub:dinov2_small@x", "keras_hub:PRESET@SIZE")):
        with pytest.raises(SystemExit) as exit_:
            fit.parse_args(["--dataset", "synthetic", "--backbone", bad, "--out", "unused"])
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_a_keras_file_on_a_keras_hub_backbone_names_the_extra_when_it_is_missing(trained, monkeypatch):
    from c2am_tf.presets import load_model
    from c2am_tf.utils.errors import InputError

    model, _, out, _ = trained
    path = str(out / "hub.keras")
    model.save(path)
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as if the optional extra were not installed
    with pytest.raises(InputError, match=r"hub\.keras: its backbone is a keras-hub model.*pip install -e \.\[keras-hub\]"):
        load_model(path)
