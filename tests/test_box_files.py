"""A user's box annotations: COCO JSON, Pascal VOC XML, YOLO txt and CSV read to the same records, a bad record is
one line naming its file and line (or a counted skip), and evaluate scores a folder against them."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from c2am_tf import data
from c2am_tf.data.annotations import AnnotationError
from c2am_tf.data.box_files import annotation_format, read_annotations

# image name -> (width, height, [boxes in pixels])
IMAGES = {"a.jpg": (80, 60, [[10, 5, 50, 40]]), "b.png": (64, 96, [[0, 10, 32, 90], [40, 0, 64, 20]]),
          "sub/c.jpg": (50, 50, [[5, 5, 45, 45]])}


def _images(tmp_path):
    root = tmp_path / "photos"
    for name, (w, h, _) in IMAGES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / name)
    return str(root)


def _coco(path, scale=1.0):
    images, annotations = [], []
    for k, (name, (w, h, boxes)) in enumerate(IMAGES.items(), 1):
        images.append({"id": k, "file_name": name, "width": w * scale, "height": h * scale})
        for x0, y0, x1, y1 in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": 1, "iscrowd": 0,
                                "bbox": [x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale]})
    annotations.append({"id": 99, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 80, 60]})
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))
    return str(path)


def _voc(folder):
    folder.mkdir()
    for name, (w, h, boxes) in IMAGES.items():
        objects = "".join(f"<object><name>thing</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                          f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>\n" for b in boxes)
        (folder / (os.path.basename(name) + ".xml")).write_text(
            f"<annotation>\n<filename>{name}</filename>\n<size><width>{w}</width><height>{h}</height></size>\n"
            f"{objects}</annotation>\n")
    return str(folder)


def _yolo(folder):
    folder.mkdir()
    for name, (w, h, boxes) in IMAGES.items():
        lines = [f"3 {(b[0] + b[2]) / 2 / w} {(b[1] + b[3]) / 2 / h} {(b[2] - b[0]) / w} {(b[3] - b[1]) / h}"
                 for b in boxes]
        (folder / (os.path.splitext(os.path.basename(name))[0] + ".txt")).write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("bird\n")
    return str(folder)


def _csv(path):
    lines = ["path,x0,y0,x1,y1"] + [f"{name},{b[0]},{b[1]},{b[2]},{b[3]}" for name, (_, _, boxes) in IMAGES.items()
                                   for b in boxes]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _expected(root):
    return sorted((os.path.join(root, name), boxes, -1) for name, (_, _, boxes) in IMAGES.items())


@pytest.mark.parametrize("kind", ["coco", "voc", "yolo", "csv"])
def test_the_four_formats_read_to_the_same_records(tmp_path, kind):
    root = _images(tmp_path)
    path = {"coco": lambda: _coco(tmp_path / "labels.json"), "voc": lambda: _voc(tmp_path / "xml"),
            "yolo": lambda: _yolo(tmp_path / "labels"), "csv": lambda: _csv(tmp_path / "boxes.csv")}[kind]()
    assert annotation_format(path) == kind
    records = read_annotations(path, root)
    expected = _expected(root)
    assert [r[0] for r in records] == [e[0] for e in expected]
    for (_, boxes, label), (_, want, _) in zip(records, expected):
        assert label == -1
        np.testing.assert_allclose(boxes, want, atol=1e-4)


def test_coco_boxes_recorded_for_another_size_are_scaled_to_the_file(tmp_path):
    root = _images(tmp_path)
    records = read_annotations(_coco(tmp_path / "labels.json", scale=2.0), root)
    for (_, boxes, _), (_, want, _) in zip(records, _expected(root)):
        np.testing.assert_allclose(boxes, want, atol=1e-4)


def _refused(path, content, root, error, pattern, strict=False):
    """Writes ``content`` at ``path`` and checks that reading it raises ``error`` matching ``pattern``."""
    path.write_text(content)
    with pytest.raises(error, match=pattern):
        read_annotations(str(path.parent if path.suffix in (".xml", ".txt") else path), root, strict=strict)


def test_a_bad_record_names_its_file_and_line_and_is_skipped_or_strict_error(tmp_path, caplog):
    root = _images(tmp_path)
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("a.jpg,10,5,50,40\nb.png,10,x,20,30\nsub/c.jpg,30,30,10,10\nmissing.jpg,1,1,5,5\n")
    with caplog.at_level(logging.WARNING, "c2am_tf.data"):
        records = read_annotations(str(csv_path), root)
    assert [os.path.basename(r[0]) for r in records] == ["a.jpg"]
    text = caplog.text
    assert f"{csv_path}:2: non-numeric box field" in text and f"{csv_path}:3: empty box" in text
    assert "skipped 2 images" in text and f"{csv_path}:4" in text  # the missing image, counted
    with pytest.raises(AnnotationError, match=f"{csv_path}:2: non-numeric"):
        read_annotations(str(csv_path), root, strict=True)
    _refused(csv_path, "a.jpg,10,5,50\n", root, ValueError, f"{csv_path}:1: expected path,x0,y0,x1,y1")


def test_voc_and_yolo_errors_name_the_line(tmp_path):
    root = _images(tmp_path)
    voc = tmp_path / "xml"
    voc.mkdir()
    (voc / "a.xml").write_text("<annotation>\n<filename>a.jpg</filename>\n<object><bndbox>\n<xmin>1</xmin>\n"
                               "</object>\n</annotation>\n")
    with pytest.raises(AnnotationError, match=r"a\.xml:5: cannot parse \(mismatched tag\)"):
        read_annotations(str(voc), root, strict=True)
    (voc / "a.xml").write_text("<annotation>\n<filename>a.jpg</filename>\n<object>\n<bndbox><xmin>10</xmin>"
                               "<ymin>5</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>\n<object>\n"
                               "<bndbox><xmin>10</xmin><ymin>5</ymin><xmax>5</xmax><ymax>40</ymax></bndbox>"
                               "</object>\n</annotation>\n")
    with pytest.raises(AnnotationError, match=r"a\.xml:5: empty box"):
        read_annotations(str(voc), root, strict=True)
    assert read_annotations(str(voc), root)[0][1] == [[10.0, 5.0, 50.0, 40.0]]
    yolo = tmp_path / "labels"
    yolo.mkdir()
    _refused(yolo / "a.txt", "0 0.5 0.5 0.2 0.2\n\n0 0.5 0.5 0.2\n", root, ValueError,
             r"a\.txt:3: a YOLO line is 'class cx cy w h'")
    _refused(yolo / "a.txt", "0 40 30 20 20\n", root, ValueError, r"a\.txt:1: YOLO coordinates are fractions")


def test_coco_errors_name_the_record(tmp_path):
    root = _images(tmp_path)
    path = tmp_path / "labels.json"
    image = {"id": 1, "file_name": "a.jpg"}
    _refused(path, json.dumps({"images": [image], "annotations": [{"image_id": 2, "bbox": [1, 1, 5, 5]}]}), root,
             ValueError, r"labels\.json: annotations\[0\]: its image_id is not an id")
    _refused(path, json.dumps({"images": [image], "annotations": [{"image_id": 1, "bbox": ["10", 5, 20, 20]}]}),
             root, AnnotationError, r"labels\.json: annotations\[0\]: non-numeric", strict=True)
    _refused(path, "{not json", root, ValueError, r"labels\.json: not JSON")


def test_a_folder_with_annotations_is_an_annotated_source_and_halves_split_it(tmp_path):
    root = _images(tmp_path)
    labels = _csv(tmp_path / "boxes.csv")
    batches = list(data.eval_dataset("folder", "test", root, batch_size=8, annotations=labels))
    assert batches[0]["image"].shape[1:] == (224, 224, 3)  # a folder is scored whole (whole224)
    assert batches[0]["boxes"].shape[0] == 3
    halves = [data.box_records("folder", root, h, annotations=labels) for h in ("half1", "half2")]
    assert sorted(r[0] for h in halves for r in h) == sorted(r[0] for r in _expected(root))
    with pytest.raises(ValueError, match="needs its annotations"):
        data.box_records("folder", root, "test")


def test_evaluate_scores_a_boxes_file_against_a_folders_annotations(tmp_path, capsys):
    from c2am_tf.cli.evaluate import main
    from c2am_tf.maps.boxes_json import FORMAT, box_record

    root = _images(tmp_path)
    labels = _voc(tmp_path / "xml")
    records = []
    for k, (name, (w, h, boxes)) in enumerate(IMAGES.items()):
        box = boxes[-1] if k != 2 else [0, 0, 5, 5]  # the last image's box misses
        records.append(box_record(os.path.join(root, name), w, h, box, 0.3))
    boxes_file = tmp_path / "preds.json"
    boxes_file.write_text(json.dumps({"format": FORMAT, "threshold": 0.5, "images": records}))
    out = tmp_path / "scores.json"
    assert main(["--boxes", str(boxes_file), "--dataset", "folder", "--data-dir", root, "--annotations", labels,
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["total"] == 3
    assert result["best"] == pytest.approx(200 / 3, abs=0.01)
    with pytest.raises(SystemExit):
        main(["--boxes", str(boxes_file), "--dataset", "folder", "--data-dir", root])
    assert "--dataset folder needs --annotations" in capsys.readouterr().err
