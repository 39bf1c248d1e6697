"""SavedModel export: signatures, weights stored once, parity in a fresh process and with
saved_model_cli (the loader TF Serving uses), bad requests."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from c2am_tf.backbones import build_backbone
from c2am_tf.deploy.saved_model import export_saved_model, next_version
from c2am_tf.inference.postprocess import map_to_mask
from c2am_tf.maps.boxes import best_box_per_threshold
from c2am_tf.models.c2am.model import C2AM

FRESH = """
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
images, cams = np.load(sys.argv[2]), np.load(sys.argv[3])
out = {}
for name, args in (("serving_default", [images]), ("cam", [images]), ("refine", [images, cams])):
    fn = loaded.signatures[name]
    kwargs = dict(zip(["images", "cams"], [tf.constant(a) for a in args]))
    out.update({f"{name}.{k}": v.numpy() for k, v in fn(**kwargs).items()})
np.savez(sys.argv[4], **out)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    tf.keras.utils.set_random_seed(0)
    model = C2AM(build_backbone("tiny", weights=None), box_band=0.1)  # boxes averaged over a band
    model.polarity.assign(-1.0)  # the export must keep the orientation
    model.threshold.assign(0.4)
    images = np.random.RandomState(0).randint(0, 256, (2, 80, 96, 3)).astype(np.uint8)
    cams = np.random.RandomState(1).rand(2, 5, 6, 3).astype(np.float32)
    np.save(root / "images.npy", images)
    np.save(root / "cams.npy", cams)
    path = export_saved_model(model, str(root / "models"), version=3)
    return model, path, images, cams, root


def test_layout_and_weights_stored_once(exported):
    model, path, _, _, _ = exported
    assert path.endswith(os.path.join("models", "3")) and os.path.exists(os.path.join(path, "saved_model.pb"))
    stored = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(path, "variables")) for f in fs)
    weights = sum(v.numpy().nbytes for v in model.weights)
    assert stored < 1.3 * weights + 4096, (stored, weights)


def _expected(model, images, cams):
    maps = model.predict(images, verbose=0)[..., 0]
    t = float(model.threshold.numpy())
    h, w = maps.shape[1:]
    boxes = np.stack([best_box_per_threshold(m, [t], band=model.box_band)[0] for m in maps]) * [96 / w, 80 / h, 96 / w, 80 / h]
    bg = tf.image.resize((1 - maps)[..., None], cams.shape[1:3]).numpy()
    labels = np.argmax(np.concatenate([bg, cams], axis=-1), axis=-1)
    return maps, boxes, labels


def _mask_agreement(got, model, images):
    """IoU between the signature's masks and ``map_to_mask`` of the Keras maps (OpenCV's resize
    and TensorFlow's differ in the last float bits, which can move a pixel across the cut-off)."""
    maps = model.predict(images, verbose=0)[..., 0]
    t = float(model.threshold.numpy())
    want = np.stack([map_to_mask(m, t, images.shape[2], images.shape[1]) for m in maps])
    assert got.shape == want.shape and got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
    assert 0.05 < want.mean() < 0.95  # a real mask, not all or nothing
    return (got.astype(bool) & want).sum() / max((got.astype(bool) | want).sum(), 1)


def test_fresh_process_matches_keras(exported):
    model, path, images, cams, root = exported
    subprocess.run([sys.executable, "-c", FRESH, path, str(root / "images.npy"), str(root / "cams.npy"),
                    str(root / "out.npz")], check=True, capture_output=True, timeout=300)
    out = np.load(root / "out.npz")
    maps, boxes, labels = _expected(model, images, cams)
    np.testing.assert_allclose(out["cam.cam"], maps, atol=1e-4)
    assert out["serving_default.cam"].shape == (2, 80, 96)
    np.testing.assert_allclose(out["serving_default.boxes"], boxes, atol=1e-3)
    assert out["serving_default.scores"].shape == (2,)
    assert out["refine.labels"].dtype == np.int32
    np.testing.assert_array_equal(out["refine.labels"], labels)


@pytest.mark.parametrize("signature,inputs,key", [
    ("serving_default", "images={images}", "boxes"),
    ("cam", "images={images}", "cam"),
    ("refine", "images={images};cams={cams}", "labels"),
])
def test_saved_model_cli_run(exported, signature, inputs, key):
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli not on PATH")
    model, path, images, cams, root = exported
    outdir = root / f"cli_{signature}"
    spec = inputs.format(images=root / "images.npy", cams=root / "cams.npy")
    proc = subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", signature,
                           "--inputs", spec, "--outdir", str(outdir), "--overwrite"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(outdir / f"{key}.npy")
    maps, boxes, labels = _expected(model, images, cams)
    want = {"boxes": boxes, "cam": maps, "labels": labels}[key]
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_bad_requests_are_refused(exported):
    _, path, images, _, _ = exported
    fn = tf.saved_model.load(path).signatures["serving_default"]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        fn(images=tf.constant(images, tf.float32))  # wrong dtype
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible"):
        fn(images=tf.constant(images[0]))  # wrong rank: an error, not a crash
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible"):
        fn(images=tf.zeros((1, 8, 8, 4), tf.uint8))  # RGBA
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-zero"):
        fn(images=tf.zeros((1, 0, 5, 3), tf.uint8))


@pytest.mark.parametrize("kind", ["c2am", "mask_model"])
def test_masks_signature_agrees_with_map_to_mask_also_in_saved_model_cli(tmp_path, kind):
    from c2am_tf.models.masks.mask_model import MaskModel

    tf.keras.utils.set_random_seed(0)
    if kind == "c2am":
        model = C2AM(build_backbone("tiny", weights=None))
        kernel = model.head.weights[0]
    else:  # a stride-4 map; its refinement is OpenCV, outside the graph
        model = MaskModel(C2AM(build_backbone("tiny", weights=None)), width=8, fine_width=8)
        kernel = model.decoder.get_layer("correction").weights[0]
    kernel.assign(tf.random.normal(kernel.shape, stddev=2.0, seed=1))  # maps that vary across an image
    model.threshold.assign(0.8)
    images = np.random.RandomState(2).randint(0, 256, (2, 80, 96, 3)).astype(np.uint8)
    path = export_saved_model(model, str(tmp_path / "models"))
    got = tf.saved_model.load(path).signatures["masks"](images=tf.constant(images))["masks"].numpy()
    assert _mask_agreement(got, model, images) > 0.99
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli not on PATH")
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "masks",
                           "--inputs", f"images={tmp_path / 'images.npy'}", "--outdir", str(tmp_path / "cli"),
                           "--overwrite"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "cli" / "masks.npy"), got)


def test_a_served_version_is_never_replaced_unasked(tmp_path, capsys):
    from c2am_tf.cli import run_command

    tf.keras.utils.set_random_seed(0)
    model = C2AM(build_backbone("tiny", weights=None))
    base = str(tmp_path / "models")
    first = export_saved_model(model, base)
    assert first == os.path.join(base, "1") and next_version(base) == 2
    served = {f: open(os.path.join(first, "variables", f), "rb").read() for f in os.listdir(os.path.join(first, "variables"))}
    with pytest.raises(FileExistsError, match="may be serving it"):
        export_saved_model(model, base, version=1)
    model.save(tmp_path / "m.keras")
    with pytest.raises(SystemExit) as err:  # refused with the flags, before the model loads
        run_command("export-saved-model", ["--model", str(tmp_path / "m.keras"), "--out", base, "--version", "1"])
    assert err.value.code == 2 and "1 exists; pass --overwrite" in capsys.readouterr().err
    # the command's default is the next version: TF Serving moves to it, version 1 stays as it was
    assert run_command("export-saved-model", ["--model", str(tmp_path / "m.keras"), "--out", base]) in (0, None)
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert all(open(os.path.join(first, "variables", f), "rb").read() == b for f, b in served.items())
    # an explicit overwrite swaps the folder through a staging copy Serving ignores, and leaves nothing beside
    graph = open(os.path.join(first, "saved_model.pb"), "rb").read()
    model.threshold.assign(0.9)  # baked into the serving graph
    export_saved_model(model, base, version=1, overwrite=True)
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert open(os.path.join(first, "saved_model.pb"), "rb").read() != graph
