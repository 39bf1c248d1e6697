"""A user's box annotations, in the formats labelling tools write: COCO JSON, Pascal VOC XML, YOLO txt, CSV.

Every reader returns the records every box-annotated dataset reads through (``c2am_tf.data.records``):
``[(image path, [[x0, y0, x1, y1], ...] in the image file's pixels, -1)]``, sorted by path, and checks each
box as the CUB and wsolevaluation readers do (``c2am_tf.data.annotations.BoxAudit``): a bad record names
its file and line (COCO: its place in the JSON), and is skipped with one counted warning, or is an error
with ``strict``. An annotated image that is not in the images folder is a counted skip too.

- **COCO JSON** (``*.json``): ``images`` (``id``, ``file_name`` relative to the images folder, ``width``,
  ``height``) and ``annotations`` (``image_id``, ``bbox`` ``[x, y, w, h]``); crowd regions are left out.
  Boxes are scaled by the actual / recorded size, so a resized copy of the images reads right.
- **Pascal VOC XML** (a folder of ``*.xml``, or one file): ``filename``, ``size``, and each ``object``'s
  ``bndbox`` (``xmin ymin xmax ymax``), read as written.
- **YOLO txt** (a folder of ``*.txt``): one ``class cx cy w h`` line per box, normalized to [0, 1]; each
  file is matched with the image of the same stem under the images folder, whose size is read from its header.
- **CSV** (``*.csv``): ``path,x0,y0,x1,y1`` per box (an optional header line), paths relative to the images folder.

The boxes are class-agnostic: every class counts as foreground.
"""

import json
import logging
import os
import xml.parsers.expat

from c2am_tf.data.annotations import AnnotationError, BoxAudit, csv_rows
from c2am_tf.data.images import list_images
from c2am_tf.utils.image_io import image_size
from c2am_tf.utils.limits import check_regular_file

log = logging.getLogger("c2am_tf.data")

FORMATS = ("coco", "voc", "yolo", "csv")


def annotation_format(path):
    """Which of ``FORMATS`` ``path`` holds, from its name (a file) or its files (a folder); ValueError otherwise.

    >>> annotation_format("labels.json"), annotation_format("boxes.csv")
    ('coco', 'csv')
    """
    lower = path.lower()
    if lower.endswith(".json"):
        return "coco"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".xml"):
        return "voc"
    if os.path.isdir(path):
        names = os.listdir(path)
        if any(n.lower().endswith(".xml") for n in names):
            return "voc"
        if any(n.lower().endswith(".txt") and n != "classes.txt" for n in names):
            return "yolo"
        raise ValueError(f"{path}: a folder of annotations holds Pascal VOC .xml or YOLO .txt files; it has neither")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: annotations not found")
    raise ValueError(f"{path}: annotations are COCO .json, .csv (path,x0,y0,x1,y1), or a folder of Pascal VOC "
                     ".xml or YOLO .txt files")


def read_annotations(path, images_dir, strict=False):
    """Records ``[(image path, boxes, -1)]`` of the annotations at ``path`` (any of ``FORMATS``), with image paths
    under ``images_dir``. ValueError naming the file (and line) for a malformed file, or when no image is usable."""
    kind = annotation_format(path)
    audit = BoxAudit(f"annotations {path}", strict)
    missing = []
    boxes = {}  # image path -> [box]
    sizes = {}  # image path -> (width, height) from its header: read once per image, not per box or per reader

    def header(image):
        if image not in sizes:
            sizes[image] = image_size(image) if os.path.isfile(image) else False
        return sizes[image]

    for image, box, size, where in READERS[kind](path, images_dir, header):
        actual = header(image)
        if actual is False:
            if strict:
                raise AnnotationError(f"{where}: image {image} not found")
            missing.append(where)
            continue
        scale = None
        if size is not None and actual is not None and tuple(size) != tuple(actual):
            scale = (actual[0] / size[0], actual[1] / size[1])
        kept = audit.check(box, actual, where, scale)
        boxes.setdefault(image, [])
        if kept is not None:
            boxes[image].append(kept)
    audit.report()
    if missing:
        log.warning("annotations %s: skipped %d boxes of images not under %s (e.g. %s)", path, len(missing),
                    images_dir, missing[0])
    records = [(image, b, -1) for image, b in sorted(boxes.items()) if b]
    if not records:
        raise ValueError(f"{path}: no usable box of an image under {images_dir}")
    return records


def _image_path(images_dir, name):
    return name if os.path.isabs(name) else os.path.join(images_dir, name)


def _coco(path, images_dir, header=None):
    check_regular_file(path, "COCO annotations")
    with open(path, encoding="utf-8-sig") as f:
        try:
            content = json.load(f)
        except ValueError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list) \
            or not isinstance(content.get("annotations"), list):
        raise ValueError(f"{path}: not COCO detection JSON (no 'images' and 'annotations' lists)")
    images = {}
    for k, image in enumerate(content["images"]):
        where = f"{path}: images[{k}]"
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise ValueError(f"{where}: an image needs 'id' and 'file_name'")
        if image["id"] in images:
            raise ValueError(f"{where}: image id {image['id']!r} is listed twice")
        size = None
        if _positive(image.get("width")) and _positive(image.get("height")):
            size = (float(image["width"]), float(image["height"]))
        images[image["id"]] = (_image_path(images_dir, image["file_name"]), size)
    for k, annotation in enumerate(content["annotations"]):
        where = f"{path}: annotations[{k}]"
        if not isinstance(annotation, dict) or annotation.get("image_id") not in images:
            raise ValueError(f"{where}: its image_id is not an id of 'images'")
        if annotation.get("iscrowd"):
            continue
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{where}: bbox must be [x, y, width, height]; got {bbox!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            # repr: a number written as a string ("10") is refused as non-numeric, not read as a corner
            yield images[annotation["image_id"]][0], [repr(v) for v in bbox], None, where
            continue
        x, y, w, h = bbox
        image, size = images[annotation["image_id"]]
        yield image, [x, y, x + w, y + h], size, where


def _positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def voc_objects(path):
    """(filename, (width, height) or None, [(name, box fields as strings, line)]) of one Pascal VOC XML file;
    AnnotationError naming the file (and line) when it cannot be parsed."""
    check_regular_file(path, "VOC annotation")
    parser = xml.parsers.expat.ParserCreate()
    stack, objects, found = [], [], {}
    text = []

    def start(tag, _attrs):
        stack.append(tag)
        text.clear()
        if tag == "object":
            objects.append({"line": parser.CurrentLineNumber})

    def end(tag):
        value = "".join(text).strip()
        text.clear()
        inside = stack[:-1]
        stack.pop()
        if objects and "object" in inside:
            if tag == "name" and inside[-1] == "object":
                objects[-1]["name"] = value
            elif tag in ("xmin", "ymin", "xmax", "ymax") and inside[-1] == "bndbox":
                objects[-1][tag] = value
        elif tag in ("filename", "width", "height") and "object" not in inside:
            found[tag] = value

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text.append
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except xml.parsers.expat.ExpatError as err:
        raise AnnotationError(f"{path}:{err.lineno}: cannot parse ({xml.parsers.expat.ErrorString(err.code)})") \
            from None
    size = None
    try:
        if float(found["width"]) > 0 and float(found["height"]) > 0:
            size = (float(found["width"]), float(found["height"]))
    except (KeyError, ValueError):
        pass
    boxes = [(o.get("name", ""), [o.get(k, "") for k in ("xmin", "ymin", "xmax", "ymax")], o["line"])
             for o in objects if any(k in o for k in ("xmin", "ymin", "xmax", "ymax"))]
    return found.get("filename"), size, boxes


def _voc(path, images_dir, header=None):
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(".xml"))
    for xml_file in files:
        filename, size, objects = voc_objects(xml_file)
        if not filename:  # the image of the same stem
            filename = os.path.splitext(os.path.basename(xml_file))[0] + ".jpg"
        image = _image_path(images_dir, filename)
        for _, fields, line in objects:
            yield image, fields, size, f"{xml_file}:{line}"


def _yolo(path, images_dir, header=image_size):
    by_stem = {}
    for image in list_images(images_dir):
        by_stem.setdefault(os.path.splitext(os.path.basename(image))[0], []).append(image)
    for name in sorted(os.listdir(path)):
        if not name.lower().endswith(".txt") or name == "classes.txt":
            continue
        txt = os.path.join(path, name)
        stem = os.path.splitext(name)[0]
        same = by_stem.get(stem, [])
        if len(same) > 1:
            raise ValueError(f"{txt}: several images named {stem}.* under {images_dir} ({same[0]}, {same[1]})")
        image = same[0] if same else os.path.join(images_dir, stem + ".jpg")
        size = header(image) if same else None
        with open(txt, encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                where = f"{txt}:{line_no}"
                if len(fields) != 5:
                    raise ValueError(f"{where}: a YOLO line is 'class cx cy w h' (5 fields); got {line.strip()!r}")
                try:
                    cx, cy, w, h = (float(v) for v in fields[1:])
                except ValueError:
                    yield image, fields[1:], None, where
                    continue
                if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
                    raise ValueError(f"{where}: YOLO coordinates are fractions of the image (0 to 1); got "
                                     f"{' '.join(fields[1:])}")
                if size is None:  # the image is missing: read_annotations skips it
                    yield image, [cx, cy, cx, cy], None, where
                    continue
                width, height = size
                yield image, [(cx - w / 2) * width, (cy - h / 2) * height,
                              (cx + w / 2) * width, (cy + h / 2) * height], None, where


def _csv(path, images_dir, header=None):
    check_regular_file(path, "CSV annotations")
    for fields, line_no in csv_rows(path, 5, "path,x0,y0,x1,y1"):
        if line_no == 1 and not _numeric(fields[1]):  # a header line
            continue
        yield _image_path(images_dir, fields[0]), fields[1:], None, f"{path}:{line_no}"


def _numeric(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


# each reader: (path, images_dir, header) -> (image path, box, the size the box is in or None, where); ``header``
# gives an image's (width, height) from its header (read once), as read_annotations reads it
READERS = {"coco": _coco, "voc": _voc, "yolo": _yolo, "csv": _csv}
