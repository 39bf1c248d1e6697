"""Files: output names (unique, never an input), image listing, atomic writes."""

import os

import pytest

from c2am_tf.utils.files import OutputNames, image_paths, list_images, write_atomically


def _touch(root, *rels):
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return [str(root / rel) for rel in rels]


def test_mirror_names_keep_folders_and_extensions_apart(tmp_path):
    paths = _touch(tmp_path / "in", "x.jpg", "x.png", "sub/x.jpg")
    names = OutputNames(paths, tmp_path / "out", ".png")
    assert [os.path.relpath(names(p), tmp_path / "out") for p in paths] == ["x.jpg.png", "x.png.png",
                                                                             os.path.join("sub", "x.jpg.png")]


def test_a_name_that_is_an_input_is_refused(tmp_path):
    paths = _touch(tmp_path, "x.jpg", "x.jpg.png")
    with pytest.raises(ValueError, match=r"x\.jpg\.png would overwrite an input image"):
        OutputNames(paths, tmp_path, ".png")
    # through a symlinked output folder too
    os.symlink(tmp_path, tmp_path.parent / "alias")
    with pytest.raises(ValueError, match="would overwrite an input image"):
        OutputNames(paths, tmp_path.parent / "alias", ".png")


def test_stem_names_refuse_two_images_with_one_stem(tmp_path):
    paths = _touch(tmp_path / "in", "a.jpg", "sub/a.png", "b.jpg")
    with pytest.raises(ValueError, match=r"two images would write .*a\.npz: .*a\.jpg and .*a\.png"):
        OutputNames(paths, tmp_path / "out", ".npz", layout="stem")
    names = OutputNames(paths[::2], tmp_path / "out", ".npz", layout="stem")
    assert names(paths[2]) == str(tmp_path / "out" / "b.npz")


def test_streaming_names_refuse_an_overlapping_folder_and_late_clashes(tmp_path):
    data = tmp_path / "data"
    for out in (data, data / "labels", tmp_path):
        with pytest.raises(ValueError, match="overlaps the input folder"):
            OutputNames(None, out, ".png", layout="stem", root=[None, str(data)])
    names = OutputNames(None, tmp_path / "out", ".png", layout="stem", root=str(data))
    assert names(str(data / "a" / "x.jpg")) == str(tmp_path / "out" / "x.png")
    with pytest.raises(ValueError, match="two images would write"):
        names(str(data / "b" / "x.jpg"))
    mirror = OutputNames(None, tmp_path / "pics", ".png", root=str(data))
    assert mirror(str(data / "a" / "x.jpg")) == str(tmp_path / "pics" / "a" / "x.jpg.png")
    assert mirror("synthetic/test/0") == str(tmp_path / "pics" / "synthetic" / "test" / "0.png")
    with pytest.raises(ValueError, match="leaves the output folder"):
        mirror("../../no/such/image")
    with pytest.raises(ValueError, match="not below the input folder"):
        mirror(str(tmp_path / "elsewhere.jpg"))


def test_listing_leaves_out_the_output_folder(tmp_path):
    _touch(tmp_path, "a.jpg", "out/a.jpg.png", "sub/b.png")
    assert [os.path.relpath(p, tmp_path) for p in image_paths(str(tmp_path), exclude=str(tmp_path / "out"))] == [
        "a.jpg", os.path.join("sub", "b.png")]
    assert len(list_images(str(tmp_path))) == 3


def test_write_atomically_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "new" / "f.json"
    write_atomically(str(path), "{}")
    write_atomically(str(path), b"[]")
    assert path.read_bytes() == b"[]" and os.listdir(path.parent) == ["f.json"]


def test_sha256_of_reads_a_file_in_pieces_and_gives_hashlibs_digest(tmp_path):
    import hashlib

    from c2am_tf.utils.files import sha256_of

    blob = os.urandom((1 << 20) * 2 + 17)  # over two pieces
    (tmp_path / "m.bin").write_bytes(blob)
    assert sha256_of(tmp_path / "m.bin") == hashlib.sha256(blob).hexdigest()
