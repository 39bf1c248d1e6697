"""Checking box annotations when they are read, so one bad record never costs a run.

Each box is checked against its image's size (read from the file header, not
decoded): non-numeric or non-finite fields, an empty or inverted box, and a box
wholly outside the image are *skipped* (the image is dropped from the split);
a box partly outside the image is *clamped* to it. Each problem names the
annotation file and line. Without ``strict`` one warning gives the counts and
the first few problems; with ``strict`` the first problem is an
``AnnotationError``.
"""

import csv
import logging
import math

log = logging.getLogger("c2am_tf.data")


class AnnotationError(ValueError):
    """A box annotation that cannot be used (raised in strict mode)."""


def csv_rows(path, columns, expected=None):
    """[(fields stripped of spaces, line number)] of a comma-separated annotation file: blank lines are skipped and a
    byte-order mark is read past (it is no part of the first path); a line of another field count is a
    ValueError naming ``path:line`` and ``expected`` (the fields' names), for wsolevaluation's metadata and a
    user's CSV boxes alike."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line_no, fields in enumerate(csv.reader(f), 1):
            if not fields or not "".join(fields).strip():
                continue
            if len(fields) != columns:
                what = f"{columns} comma-separated fields"
                what = f"{expected} ({what})" if expected else what
                raise ValueError(f"{path}:{line_no}: expected {what}, got {fields!r}")
            rows.append(([x.strip() for x in fields], line_no))
    return rows


def first_of_each(rows, path, strict, label="{}", error=AnnotationError, consequence=""):
    """(kept, repeated) of ``rows`` [(fields, line number)] read from ``path``: the first row of each id (the first
    field), in order, and for every later row one ``path:line: <label> again (first at line N)<consequence>``;
    with ``strict`` the first repeat raises ``error``. CUB's tables and wsolevaluation's image ids name a
    repeated id this one way.

    >>> first_of_each([(["a", 1], 1), (["a", 2], 2)], "ids.txt", strict=False)
    ([(['a', 1], 1)], ['ids.txt:2: a again (first at line 1)'])
    """
    kept, first, repeated = [], {}, []
    for fields, line_no in rows:
        key = fields[0]
        if key in first:
            repeated.append(f"{path}:{line_no}: {label.format(key)} again (first at line {first[key]}){consequence}")
            if strict:
                raise error(repeated[0])
            continue
        first[key] = line_no
        kept.append((fields, line_no))
    return kept, repeated


def parse_box(fields, where):
    """Floats of ``fields`` or AnnotationError naming ``where`` (file:line) and the bad field."""
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise AnnotationError(f"{where}: non-numeric box field in {' '.join(fields)!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise AnnotationError(f"{where}: non-finite box {' '.join(fields)!r}")
    return values


def check_box(box, width, height, where):
    """(box clamped to the image, problem or None); raises AnnotationError if it cannot be used.

    ``box`` is x0, y0, x1, y1 in pixels of a ``width`` x ``height`` image (``inf``: size unknown).

    >>> check_box([10, 5, 50, 40], 100, 80, "b.txt:1")
    ([10, 5, 50, 40], None)
    >>> check_box([-4, 5, 120, 40], 100, 80, "b.txt:2")
    ([0, 5, 100, 40], 'b.txt:2: box [-4, 5, 120, 40] extends outside the 100x80 image, clamped')
    >>> check_box([10, 5, 10, 40], 100, 80, "b.txt:3")
    Traceback (most recent call last):
    ...
    c2am_tf.data.annotations.AnnotationError: b.txt:3: empty box [10, 5, 10, 40] (zero or negative area)
    """
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box):
        raise AnnotationError(f"{where}: non-finite box {list(box)}")
    if x1 <= x0 or y1 <= y0:
        raise AnnotationError(f"{where}: empty box {list(box)} (zero or negative area)")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise AnnotationError(f"{where}: box {list(box)} lies outside the {width}x{height} image")
    clamped = [max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)]
    if clamped != list(box):
        return clamped, f"{where}: box {list(box)} extends outside the {width}x{height} image, clamped"
    return list(box), None


class BoxAudit:
    """Collects skipped and clamped boxes of one annotation file and reports them once.

    Usage: ``audit.check(fields_or_box, size, where)`` per record (None = skip the image),
    then ``audit.report()``.
    """

    def __init__(self, what, strict=False):
        self.what, self.strict = what, strict
        self.skipped, self.clamped = [], []

    def check(self, box, size, where, scale=None):
        """The usable box (clamped) or None to skip the image; strict mode raises instead.

        ``box`` is four numbers or four strings (parsed here); ``scale`` = (sx, sy) multiplies it
        first (annotations recorded for another size of the same image)."""
        try:
            if box and isinstance(box[0], str):
                box = parse_box(box, where)
            if scale is not None:
                box = [box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]]
            # an unreadable image keeps its box: the image reader skips and counts it
            box, problem = check_box(box, *(size or (math.inf, math.inf)), where)
        except AnnotationError as err:
            if self.strict:
                raise
            self.skipped.append(str(err))
            return None
        if problem:
            if self.strict:
                raise AnnotationError(problem)
            self.clamped.append(problem)
        return box

    def report(self):
        """Logs one warning with the counts and the first problems; returns (skipped, clamped) counts."""
        if self.skipped or self.clamped:
            shown = "; ".join((self.skipped + self.clamped)[:3])
            more = " ..." if len(self.skipped) + len(self.clamped) > 3 else ""
            log.warning("%s: skipped %d images with unusable boxes, clamped %d boxes to their image "
                        "(strict mode makes these errors): %s%s",
                        self.what, len(self.skipped), len(self.clamped), shown, more)
        return len(self.skipped), len(self.clamped)
