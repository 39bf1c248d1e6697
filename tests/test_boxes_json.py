"""The boxes file: records reach the disk as they come, a crash keeps them, runs never mix."""

import json

import pytest

from c2am_tf.maps.boxes_json import FORMAT, BoxesWriter, box_record, read_boxes

HEADER = {"model": "/m.keras", "threshold": 0.35}


def test_a_crash_keeps_every_record_written_so_far_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "det" / "boxes.json"
    with pytest.raises(MemoryError):
        with BoxesWriter(out, HEADER) as writer:
            writer.add(box_record("a.jpg", 10, 20, [1, 2, 3, 4], 0.5, score=0.9))
            writer.add(box_record("b.jpg", 10, 20, [0, 0, 10, 20], 1.0))
            raise MemoryError("a decompression bomb")
    assert not out.exists()
    lines = (tmp_path / "det" / "boxes.json.partial.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"header": HEADER} and len(lines) == 3
    with BoxesWriter(out, HEADER) as writer:
        assert sorted(writer.done) == ["a.jpg", "b.jpg"]
        writer.add(box_record("c.jpg", 5, 5, [0, 0, 1, 1], 0.04))
    result = read_boxes(out)
    assert result["format"] == FORMAT and result["threshold"] == 0.35
    assert [r["path"] for r in result["images"]] == ["a.jpg", "b.jpg", "c.jpg"]
    assert result["images"][0]["score"] == 0.9 and "score" not in result["images"][1]
    assert not (tmp_path / "det" / "boxes.json.partial.jsonl").exists()


def test_another_run_is_refused_and_a_torn_line_dropped(tmp_path):
    out = tmp_path / "boxes.json"
    partial = tmp_path / "boxes.json.partial.jsonl"
    partial.write_text(json.dumps({"header": HEADER}) + "\n" + json.dumps(box_record("a.jpg", 1, 1, [0, 0, 1, 1], 1))
                       + "\n" + '{"path": "b.jp')
    with pytest.raises(ValueError, match=r"written by another run \(threshold 0.35 -> 0.5\)"):
        BoxesWriter(out, {**HEADER, "threshold": 0.5})
    writer = BoxesWriter(out, HEADER)
    assert list(writer.done) == ["a.jpg"]
    writer.add(box_record("b.jpg", 1, 1, [0, 0, 1, 1], 1))
    assert [r["path"] for r in writer.close()] == ["a.jpg", "b.jpg"]


def test_read_boxes_names_a_file_of_another_format(tmp_path):
    (tmp_path / "psol.json").write_text('{"a.jpg": [0, 0, 1, 1]}')
    with pytest.raises(ValueError, match=r"psol.json: not a c2am_tf.boxes/v1 boxes file"):
        read_boxes(tmp_path / "psol.json")


def test_a_finished_file_of_another_run_is_refused_and_one_of_this_run_is_kept(tmp_path):
    out = tmp_path / "boxes.json"
    with BoxesWriter(out, HEADER) as writer:
        writer.add(box_record("a.jpg", 10, 10, [0, 0, 5, 5], 0.25))
    before = out.read_bytes()
    with pytest.raises(ValueError, match="threshold 0.35 -> 0.5"):
        BoxesWriter(out, {**HEADER, "threshold": 0.5})
    assert out.read_bytes() == before
    with BoxesWriter(out, HEADER) as writer:  # the same run again adds only what it lacks
        assert list(writer.done) == ["a.jpg"]
        writer.add(box_record("b.jpg", 10, 10, [1, 1, 5, 5], 0.2))
    assert [r["path"] for r in read_boxes(out)["images"]] == ["a.jpg", "b.jpg"]
    with BoxesWriter(out, {**HEADER, "threshold": 0.5}, replace=True) as writer:
        assert writer.done == {}
    assert read_boxes(out)["threshold"] == 0.5 and read_boxes(out)["images"] == []


def test_predict_and_extract_boxes_write_coco_json_of_the_same_boxes(tmp_path, capsys):
    import json
    import os

    import keras
    import numpy as np
    from PIL import Image

    from c2am_tf.backbones import build_backbone
    from c2am_tf.cli import run_command
    from c2am_tf.models.c2am.model import C2AM

    C2AM(build_backbone("tiny", weights=None)).save(tmp_path / "m.keras")
    keras.backend.clear_session()
    photos = tmp_path / "in"
    (photos / "sub").mkdir(parents=True)
    rng = np.random.RandomState(0)
    for rel in ("a.jpg", "sub/b.png"):
        Image.fromarray(rng.randint(0, 255, (30, 40, 3)).astype(np.uint8)).save(photos / rel)
    assert run_command("predict", [str(photos), "--model", str(tmp_path / "m.keras"), "--out", str(tmp_path / "o") + "/",
                                   "--coco", str(tmp_path / "coco.json")]) == 0
    assert f"-> {tmp_path / 'o' / 'boxes.json'} " in capsys.readouterr().out  # no 'o//boxes.json'
    coco = json.loads((tmp_path / "coco.json").read_text())
    boxes = {os.path.relpath(r["path"], photos): r for r in json.loads((tmp_path / "o" / "boxes.json").read_text())["images"]}
    assert sorted(i["file_name"] for i in coco["images"]) == sorted(boxes) == ["a.jpg", os.path.join("sub", "b.png")]
    by_id = {i["id"]: i for i in coco["images"]}
    for a in coco["annotations"]:
        image = by_id[a["image_id"]]
        x0, y0, x1, y1 = boxes[image["file_name"]]["box"]
        assert a["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.011) and a["category_id"] == 1
        assert (image["width"], image["height"]) == (40, 30)
    assert run_command("extract-boxes", ["--model", str(tmp_path / "m.keras"), "--dataset", "folder", "--data-dir",
                                         str(photos), "--size", "64", "--out", str(tmp_path / "b.json"),
                                         "--coco", str(tmp_path / "coco2.json")]) == 0
    coco2 = json.loads((tmp_path / "coco2.json").read_text())
    assert sorted(i["file_name"] for i in coco2["images"]) == ["a.jpg", os.path.join("sub", "b.png")]
