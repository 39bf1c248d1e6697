"""The one image reader, on a hostile corpus generated here: bit depths, EXIF, bombs, junk."""

import numpy as np
import pytest
from PIL import Image

from c2am_tf.utils.image_io import UnreadableImageError, load_image, read_image


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Files a stranger's folder may hold; none is committed."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 255, (30, 40, 3), np.uint8)
    Image.fromarray(rgb).save(root / "rgb.png")
    gray16 = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)  # 0 .. 59950
    Image.fromarray(gray16).save(root / "gray16.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(rgb).convert("P").save(root / "palette.gif")
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 7, np.uint8)])).save(root / "rgba.png")
    Image.fromarray(rgb[:1, :1]).save(root / "one_pixel.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": stored 40 wide, 30 high; shown 30 wide, 40 high
    Image.fromarray(rgb).save(root / "rotated.jpg", exif=exif.tobytes(), quality=95)
    Image.new("L", (20000, 20000)).save(root / "bomb.png", optimize=True)  # ~400 KB, 400 megapixels
    Image.new("RGB", (9000, 8000), (200, 30, 30)).save(root / "huge.jpg", quality=50)  # 72 megapixels
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes((root / "rotated.jpg").read_bytes()[:300])
    (root / "text.png").write_text("not an image")
    return root, rgb, gray16


def test_16_bit_is_scaled_not_clipped(corpus):
    root, _, gray16 = corpus
    image = load_image(root / "gray16.png")
    assert image.shape == (30, 40, 3)
    np.testing.assert_array_equal(image[..., 0], np.round(gray16 / 257).astype(np.uint8))
    assert 0 < image.mean() < 255  # Pillow's convert("RGB") makes this all white


def test_modes_convert_to_rgb(corpus):
    root, rgb, _ = corpus
    np.testing.assert_array_equal(load_image(root / "rgb.png"), rgb)
    np.testing.assert_array_equal(load_image(root / "rgba.png"), rgb)  # alpha dropped
    for name in ("cmyk.jpg", "palette.gif", "one_pixel.png"):
        image = load_image(root / name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_exif_orientation_is_applied_unless_asked_not_to(corpus):
    root, _, _ = corpus
    shown, size = load_image(root / "rotated.jpg", return_size=True)
    assert shown.shape[:2] == (40, 30) and size == (30, 40)
    assert load_image(root / "rotated.jpg", exif=False).shape[:2] == (30, 40)  # stored pixels (annotations)


def test_a_decompression_bomb_is_refused_before_decoding(corpus):
    import resource

    root, _, _ = corpus
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UnreadableImageError, match=r"bomb.png: 20000x20000 is 400 megapixels, over the limit of 64 "):
        load_image(root / "bomb.png")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing near 1.2 GB


def test_a_huge_jpeg_is_decoded_at_reduced_scale_with_its_true_size(corpus, monkeypatch):
    root, _, _ = corpus
    image, size = load_image(root / "huge.jpg", return_size=True)
    assert size == (9000, 8000) and image.shape == (4000, 4500, 3)  # 1/2 scale: 18 megapixels
    assert abs(int(image[..., 0].mean()) - 200) < 8
    with pytest.raises(UnreadableImageError, match="over the limit"):
        load_image(root / "huge.jpg", downscale=False)
    monkeypatch.setenv("C2AM_MAX_PIXELS", "100000000")
    assert load_image(root / "huge.jpg").shape == (8000, 9000, 3)


@pytest.mark.parametrize("name", ["empty.jpg", "truncated.jpg", "text.png", "missing.jpg"])
def test_junk_is_one_clear_error_or_none(corpus, name):
    root, _, _ = corpus
    with pytest.raises(UnreadableImageError, match=name):
        load_image(root / name)
    assert read_image(root / name) is None


def test_the_training_pipeline_reads_through_the_same_reader(corpus):
    import tensorflow as tf

    from c2am_tf.data.images import find_unreadable, read_rgb

    root, _, gray16 = corpus
    image = read_rgb(tf.constant(str(root / "gray16.png"))).numpy()
    np.testing.assert_array_equal(image[..., 0], np.round(gray16 / 257).astype(np.uint8))
    names = ["rgb.png", "bomb.png", "empty.jpg", "huge.jpg", "text.png", "rotated.jpg"]
    bad = find_unreadable([str(root / n) for n in names])  # annotated-data policy: no downscaling
    assert [names[i] for i in bad] == ["bomb.png", "empty.jpg", "huge.jpg", "text.png"]
    bad = find_unreadable([str(root / n) for n in names], exif=True, downscale=True)
    assert [names[i] for i in bad] == ["bomb.png", "empty.jpg", "text.png"]


def test_a_jpeg_over_pillows_own_bomb_limit_is_drafted_not_skipped(tmp_path):
    # 182 megapixels: over Pillow's default 179 MP error, which fired at open before the draft
    Image.new("L", (14000, 13000), 90).save(tmp_path / "vast.jpg", quality=30)
    image, size = load_image(tmp_path / "vast.jpg", return_size=True)
    assert size == (14000, 13000) and image.shape == (6500, 7000, 3)  # 1/2 scale: 45.5 megapixels
    assert abs(int(image.mean()) - 90) < 4


def test_a_refusal_states_the_image_and_the_limit_in_force(corpus, monkeypatch):
    from c2am_tf.utils.image_io import image_size

    root, _, _ = corpus
    monkeypatch.setenv("C2AM_MAX_PIXELS", "10000000")  # our check, from the header
    with pytest.raises(UnreadableImageError, match=r"20000x20000 is 400 megapixels, over the limit of 10 "):
        load_image(root / "bomb.png")
    monkeypatch.setenv("C2AM_MAX_PIXELS", "1000000")  # over 64x the limit: Pillow's own check, set from ours
    with pytest.raises(UnreadableImageError, match=r"bomb.png: 400 megapixels, over the limit of 1 "):
        load_image(root / "bomb.png")
    assert image_size(root / "bomb.png") == (20000, 20000)  # the header alone, even for a bomb
