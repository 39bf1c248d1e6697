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
