"""The boxes file, ``c2am_tf.boxes/v1``: one schema, written as results come, read back safely.

Every command that writes boxes for many images (``extract_boxes``, ``predict``,
``tflite_detect``) writes this file through ``BoxesWriter``::

    {"format": "c2am_tf.boxes/v1", "model": ..., "threshold": 0.35, ...,
     "images": [{"path": ..., "width": W, "height": H, "box": [x0, y0, x1, y1],
                 "foreground_fraction": 0.31, "score": 0.9 (optional),
                 "top5": [285, 281, ...] (optional: a classifier's best classes)}, ...]}

Boxes are in original image pixels. While a run is under way each record is
appended to ``OUT.partial.jsonl`` (first line: the run's header) and flushed, so
a crash or a kill keeps every result so far; a run started again with the same
header resumes, another header is refused. The final JSON is written atomically.

Example:
>>> import tempfile, os
>>> out = os.path.join(tempfile.mkdtemp(), "boxes.json")
>>> with BoxesWriter(out, {"model": "m.keras", "threshold": 0.5}) as writer:
...     writer.add(box_record("a.jpg", 40, 30, [1, 2, 30.004, 20], 0.25))
>>> read_boxes(out)["images"][0]["box"]
[1.0, 2.0, 30.0, 20.0]
"""

import glob
import json
import math
import os
import re
import sys

from c2am_tf.utils.errors import InputError, as_input_error, differences
from c2am_tf.utils.files import OutputLock, image_paths, open_for_append, write_atomically, write_json_atomically

FORMAT = "c2am_tf.boxes/v1"
# the pictures predict and detect write beside each image's name (x.jpg.png, x.jpg.mask.png; .json is no image):
# a later run reading the same folder leaves them out (``drop_own_outputs``)
PICTURE_SUFFIXES = (".png", ".mask.png")


def box_record(path, width, height, box, foreground_fraction, score=None, top5=None):
    """One image's record (coordinates rounded to 0.01 px, fractions to 1e-4); ``top5``: a classifier's best
    classes, best first (what ``evaluate --boxes`` reads for Top-1/Top-5 Loc)."""
    record = {"path": os.fspath(path), "width": int(width), "height": int(height),
              "box": [round(float(v), 2) for v in box], "foreground_fraction": round(float(foreground_fraction), 4)}
    if score is not None:
        record["score"] = round(float(score), 4)
    if top5 is not None:
        record["top5"] = [int(c) for c in top5]
    return record


def check_record(record, where):
    """``record`` when it is a box record (a dict with a ``path`` string and a ``box`` of four finite numbers;
    ``width``/``height`` positive integers and ``top5`` a list of class indices where present); else an
    ``InputError`` naming ``where`` (``boxes.json: images[3]``, ``boxes.json.partial.jsonl:7``) and what is wrong:
    a hand-edited file is one line, never a traceback.

    >>> check_record({"path": "a.jpg", "box": [1, 2, 3, "x"]}, "b.json: images[0]")
    Traceback (most recent call last):
    ...
    c2am_tf.utils.errors.InputError: b.json: images[0]: 'box' must be four numbers [x0, y0, x1, y1]; got [1, 2, 3, 'x']
    """

    def bad(problem):
        return InputError(f"{where}: {problem}")

    if not isinstance(record, dict):
        raise bad(f"not a box record (a JSON {type(record).__name__}, not an object)")
    if not isinstance(record.get("path"), str) or not record["path"]:
        raise bad("no 'path' (the image the box is of)")
    box = record.get("box")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            and math.isfinite(v) for v in box)):
        raise bad(f"'box' must be four numbers [x0, y0, x1, y1]; got {box!r}"[:300])
    for key in ("width", "height"):
        if key in record and not (isinstance(record[key], int) and not isinstance(record[key], bool)
                                  and record[key] > 0):
            raise bad(f"'{key}' must be a positive integer; got {record[key]!r}"[:300])
    if "top5" in record:
        top = record["top5"]
        if not (isinstance(top, list) and top and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                      for c in top)):
            raise bad(f"'top5' must be a list of class indices, best first; got {top!r}"[:300])
    return record


def read_partial(path, header):
    """Records already written by a killed run: {path: record}.

    The first line must be ``{"header": header}``; another header raises ValueError naming
    the differing values, so two runs' results are never mixed. A torn last line (a kill
    mid-write) is dropped with a warning and cut from the file.
    """
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        lines = f.read().split("\n")
    done, kept = {}, []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            if number >= len(lines) - 1:  # the last line, torn by a kill: its image is redone
                print(f"warning: {path}:{number}: dropping a torn last line", file=sys.stderr)
                write_atomically(path, "".join(k + "\n" for k in kept))  # appends must not follow the fragment
                break
            raise ValueError(f"{path}:{number}: not a JSON line; delete the file to start over") from None
        kept.append(line)
        if number == 1:
            if not isinstance(entry, dict) or entry.get("header") != header:
                theirs = (entry.get("header") if isinstance(entry, dict) else None) or {}
                raise ValueError(f"{path} was written by another run ({differences(theirs, header)}); delete it to "
                                 "start over, or rerun with that run's settings")
            continue
        entry = check_record(entry, f"{path}:{number}")
        done[entry["path"]] = entry
    return done


def _finished_records(out, header):
    """{path: record} of a finished boxes file ``out`` written with ``header``; {} when there is none.
    Another run's file raises ValueError naming the settings that differ."""
    if not os.path.exists(out):
        return {}
    content = read_boxes(out)
    theirs = {k: v for k, v in content.items() if k not in ("format", "images")}
    if theirs != header:
        raise ValueError(f"{out} holds the results of another run ({differences(theirs, header)}); choose another "
                         "output, or pass --overwrite to replace them")
    return {record["path"]: record for record in content["images"]}


def recorded_paths(out):
    """The image paths recorded in the boxes file ``out`` and its partial log, whichever run wrote them
    (``BoxesWriter`` checks the header); an unreadable file records none."""
    paths = set()
    for name in (out, os.fspath(out) + ".partial.jsonl"):
        try:
            with open(name) as f:
                if name == out:
                    paths |= {r["path"] for r in json.load(f).get("images", ())}
                else:
                    paths |= {json.loads(line).get("path") for line in f if line.strip()}
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            continue
    paths.discard(None)
    return paths


def drop_own_outputs(paths, out, suffixes):
    """``paths`` (images found in the input folders) less the files a run that wrote the boxes file ``out``
    made for its images (``image + suffix``, e.g. ``x.jpg.png``): an output folder that is the input folder
    is read again without its own pictures, while a file of the user's that only looks like one stays an input.

    >>> drop_own_outputs(["x.jpg", "x.jpg.png", "y.jpg.png"], "missing/boxes.json", [".png"])
    ['x.jpg', 'x.jpg.png', 'y.jpg.png']
    """
    recorded = recorded_paths(out)
    own = {path + suffix for path in recorded for suffix in suffixes}
    return [path for path in paths if path not in own]


class BoxesWriter:
    """Streams box records to ``OUT.partial.jsonl``; ``close`` writes ``OUT`` (the boxes JSON).

    ``header`` (JSON-able dict: model, threshold, transform, ...) identifies the run and is
    copied into the final file. ``done`` holds the records of a resumed run, and those of a
    finished ``OUT`` of the same header (a run again adds only the images it lacks). A finished
    ``OUT`` of another header raises ValueError naming the differing settings, unless
    ``replace`` (the caller was told to overwrite it): results are never replaced unasked.
    """

    def __init__(self, out, header, replace=False):
        self.out, self.header = os.fspath(out), dict(header)
        self.partial = self.out + ".partial.jsonl"
        self._lock = OutputLock(self.out).acquire()  # a second run into OUT is refused, naming the first
        try:
            finished = {} if replace else _finished_records(self.out, self.header)
            self.done = read_partial(self.partial, self.header)
            if not self.done:
                write_atomically(self.partial, json.dumps({"header": self.header}) + "\n")
            self.done = {**finished, **self.done}
            self._log = open_for_append(self.partial)
        except BaseException:
            self._lock.release()
            raise

    def add(self, record):
        """Appends one record (see ``box_record``) and flushes it to disk."""
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        self.done[record["path"]] = record

    def close(self):
        """Writes the final JSON atomically and removes the partial log; returns the records."""
        self._log.close()
        records = list(self.done.values())
        try:
            write_json_atomically(self.out, {"format": FORMAT, **self.header, "images": records}, indent=1)
            os.remove(self.partial)
        finally:
            self._lock.release()
        return records

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:  # keep the partial log: a run started again resumes from it
            self._log.close()
            self._lock.release()


def input_images(inputs, out_dir):
    """The images below ``inputs`` (a file or a folder, searched recursively) that a workflow writing pictures and
    ``boxes.json`` into ``out_dir`` reads (``predict``, ``detect``): an output folder inside the input folder is
    not read, nor the pictures an earlier run there wrote. Inputs that cannot be listed are an ``InputError``."""
    with as_input_error():
        return drop_own_outputs(image_paths(inputs, exclude=out_dir), os.path.join(out_dir, "boxes.json"),
                                PICTURE_SUFFIXES)


def coco_from_records(records, root=None):
    """Box records as COCO detection JSON (one category, ``foreground``), the format CVAT, Label Studio and
    most labelling tools import as pre-annotations: ``file_name`` relative to ``root`` (default: the records'
    common folder), ``bbox`` ``[x, y, w, h]`` in the image's pixels, the map's ``score`` where the record has one.

    >>> coco = coco_from_records([box_record("in/a.jpg", 40, 30, [1, 2, 21, 12], 0.2)])
    >>> coco["images"][0]["file_name"], coco["annotations"][0]["bbox"], coco["categories"][0]["name"]
    ('a.jpg', [1.0, 2.0, 20.0, 10.0], 'foreground')
    """
    records = list(records)
    if root is None:
        folders = [os.path.dirname(os.path.abspath(r["path"])) for r in records]
        root = os.path.commonpath(folders) if folders else ""
    images, annotations = [], []
    for k, record in enumerate(records, 1):
        name = os.path.relpath(os.path.abspath(record["path"]), os.path.abspath(root)) if root else record["path"]
        images.append({"id": k, "file_name": name, "width": record["width"], "height": record["height"]})
        x0, y0, x1, y1 = record["box"]
        if x1 <= x0 or y1 <= y0:  # an empty map: the image is listed, with no box
            continue
        box = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
        annotation = {"id": len(annotations) + 1, "image_id": k, "category_id": 1, "bbox": box,
                      "area": round(box[2] * box[3], 2), "iscrowd": 0}
        if "score" in record:
            annotation["score"] = record["score"]
        annotations.append(annotation)
    return {"info": {"description": f"class-agnostic boxes from c2am_tf ({FORMAT})"}, "images": images,
            "annotations": annotations, "categories": [{"id": 1, "name": "foreground", "supercategory": "object"}]}


def write_coco(path, records, root=None):
    """``coco_from_records`` written atomically at ``path``."""
    write_json_atomically(path, coco_from_records(records, root), indent=1)


def read_sharded_boxes(prefix):
    """The JSON-lines parts ``PREFIX-00000-of-0000N.jsonl`` written by ``c2am_tf.inference.beam_boxes``, as one
    boxes dict; ValueError names a missing part or parts written by different runs."""

    files = sorted(glob.glob(glob.escape(prefix) + "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].jsonl"))
    if not files:
        raise FileNotFoundError(f"no boxes file {prefix} and no parts {prefix}-NNNNN-of-NNNNN.jsonl")
    counts = {int(re.search(r"-of-(\d+)\.jsonl$", f).group(1)) for f in files}
    if len(counts) > 1:
        raise ValueError(f"{prefix}: parts of runs with {sorted(counts)} shards are mixed")
    total = counts.pop()
    if len(files) < total:
        have = {int(re.search(r"-(\d+)-of-", f).group(1)) for f in files}
        missing = [k for k in range(total) if k not in have]
        raise ValueError(f"{prefix}: {len(missing)} of {total} parts are missing (e.g. part {missing[0]}); "
                         "run the job again to write them")
    header, images = None, []
    for path in files:
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if not lines or "header" not in lines[0]:
            raise ValueError(f"{path}: no header line")
        theirs = {k: v for k, v in lines[0]["header"].items() if k not in ("shard", "of")}
        if header is None:
            header = theirs
        elif theirs != header:
            raise ValueError(f"{path}: written by another run than {files[0]}")
        images += [check_record(r, f"{path}:{k}") for k, r in enumerate(lines[1:], 2)]
    if header.get("format") != FORMAT:
        raise ValueError(f"{files[0]}: not a {FORMAT} boxes file")
    return {**header, "images": images}


def read_boxes(path):
    """A boxes file as a dict; ValueError naming the file if it is not ``c2am_tf.boxes/v1``.

    ``path`` may also be the prefix of JSON-lines parts (``read_sharded_boxes``).
    """
    if not os.path.exists(path):
        return read_sharded_boxes(path)
    with open(path) as f:
        try:
            content = json.load(f)
        except ValueError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT or not isinstance(content.get("images"), list):
        raise ValueError(f"{path}: not a {FORMAT} boxes file")
    for k, record in enumerate(content["images"]):
        check_record(record, f"{path}: images[{k}]")
    return content
