"""WSOL-standard data: wsolevaluation's metadata layout, the raw ILSVRC 2012 layout, tfds ``imagenet2012``.

A record is ``(image path, boxes [[x0, y0, x1, y1], ...] in the file's pixels, class index or -1)``.

- **wsolevaluation metadata** (clovaai): images plus ``metadata/image_ids.txt``, ``class_labels.txt``
  (``path,class``), ``image_sizes.txt`` (``path,width,height`` of the ORIGINAL image) and
  ``localization.txt`` (``path,x0,y0,x1,y1``, one line per box, in ORIGINAL pixels). Boxes are always
  scaled by actual / recorded size on each axis, so prescaled copies and full-size images read right.
  Its CUB metadata is read the same way.
- **raw ILSVRC 2012**: ``train/nXXXXXXXX/*.JPEG`` (unlabeled training images: labels never used) and
  validation images ``val/*.JPEG`` with boxes from per-image PASCAL-style XML files
  (``val/*.xml`` or ``Annotations/CLS-LOC/val/*.xml``) or from ``LOC_val_solution.csv``; class
  indices follow the sorted synsets (``LOC_synset_mapping.txt`` or the train folder names).
- **tfds ``imagenet2012``** (training images only; it carries no boxes), when it has been prepared.

Images with several GT boxes are padded to the dataset's largest count by repeating their first box:
GT-known counts "any box", so a repeated box changes nothing, where a zero box would (0/0 counts as
correct).
"""

import csv
import glob
import os

import tensorflow as tf

from c2am_tf.data.annotations import AnnotationError, BoxAudit, csv_rows, first_of_each, parse_box
from c2am_tf.data.box_files import voc_objects
from c2am_tf.data.folder import folder_source
from c2am_tf.data.records import records_source
from c2am_tf.data.tfds_source import prepared_tfds_split
from c2am_tf.utils.image_io import image_size

SPLITS = ("train", "test", "half1", "half2")
METADATA_FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


def metadata_dir(root):
    """The folder holding wsolevaluation's metadata files under ``root`` (``root/metadata`` or ``root``), or None."""
    for candidate in (os.path.join(root, "metadata"), root):
        if os.path.exists(os.path.join(candidate, "image_ids.txt")):
            return candidate
    return None


def _rows(path, columns, required=True):
    """[(fields, line number)] of a comma-separated metadata file (``csv_rows``)."""
    if not os.path.exists(path):
        if required:
            raise FileNotFoundError(f"{path} not found: wsolevaluation metadata holds {', '.join(METADATA_FILES)}")
        return []
    return csv_rows(path, columns)


def select_split(records, split):
    """``records`` of one split: ``train``/``test`` are all of them (unsupervised training uses no labels);
    ``half1``/``half2`` are the even/odd records in id order, for 2-fold train-on-one-half, score-the-other runs.

    >>> select_split(list("abcde"), "half2")
    ['b', 'd']
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split.startswith("half"):
        return records[int(split[-1]) - 1::2]
    return list(records)


def wsol_metadata_records(root, strict=False):
    """[(path, boxes, class)] from wsolevaluation metadata under ``root``, boxes in the files' pixels."""
    meta = metadata_dir(root)
    if meta is None:
        raise FileNotFoundError(f"{root}: no wsolevaluation metadata (metadata/image_ids.txt)")
    ids_file = os.path.join(meta, "image_ids.txt")
    # an id listed twice was scored twice before: counted, or an error with strict
    kept, repeated = first_of_each(_rows(ids_file, 1), ids_file, strict, consequence="; scored once")
    first = {fields[0]: line_no for fields, line_no in kept}  # each id's line, in the file's order
    labels = {f[0]: int(f[1]) for f, _ in _rows(os.path.join(meta, "class_labels.txt"), 2, required=False)}
    sizes = {f[0]: (f[1:], n) for f, n in _rows(os.path.join(meta, "image_sizes.txt"), 3)}
    loc_file = os.path.join(meta, "localization.txt")
    boxes = {}
    for fields, line_no in _rows(loc_file, 5):
        boxes.setdefault(fields[0], []).append((fields[1:], f"{loc_file}:{line_no}"))
    audit = BoxAudit(loc_file, strict)
    audit.skipped += repeated
    records = []
    for image_id in first:
        path = os.path.join(root, image_id)
        if image_id not in sizes:
            raise ValueError(f"{meta}/image_sizes.txt: no size for {image_id}")
        where = f"{meta}/image_sizes.txt:{sizes[image_id][1]}"
        recorded = parse_box(sizes[image_id][0] * 2, where)[:2]
        if min(recorded) <= 0:  # the boxes are scaled by actual / recorded size: the size line is the fault
            problem = f"{where}: size {recorded[0]:g}x{recorded[1]:g} of {image_id} is not positive"
            if strict:
                raise AnnotationError(problem)
            audit.skipped.append(problem)
            continue
        actual = image_size(path)
        scale = None if actual is None else (actual[0] / recorded[0], actual[1] / recorded[1])
        if image_id not in boxes:  # dropped without a word before
            problem = f"{loc_file}: no box for {image_id} ({ids_file}:{first[image_id]})"
            if strict:
                raise AnnotationError(problem)
            audit.skipped.append(problem)
            continue
        checked = (audit.check(fields, actual, where, scale) for fields, where in boxes[image_id])
        kept = [box for box in checked if box is not None]
        if kept:
            records.append((path, kept, labels.get(image_id, -1)))
    audit.report()
    return records


def synsets(root):
    """The sorted ILSVRC synsets (class index = position): ``LOC_synset_mapping.txt``, else the train folders."""
    for name in ("LOC_synset_mapping.txt", os.path.join("..", "LOC_synset_mapping.txt")):
        path = os.path.join(root, name)
        if os.path.exists(path):
            with open(path) as f:
                return [line.split()[0] for line in f if line.strip()]
    train = _first_dir(root, ("train", os.path.join("Data", "CLS-LOC", "train")))
    if train:
        return sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
    return []


def _first_dir(root, names):
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def ilsvrc_val_records(root, strict=False):
    """[(path, boxes, class)] of the raw ILSVRC 2012 validation layout (XML files or LOC_val_solution.csv)."""
    val = _first_dir(root, ("val", os.path.join("Data", "CLS-LOC", "val")))
    if val is None:
        raise FileNotFoundError(f"{root}: no val/ (or Data/CLS-LOC/val/) folder of ILSVRC validation images")
    index = {s: i for i, s in enumerate(synsets(root))}
    audit = BoxAudit(f"{root} validation boxes", strict)
    solution = os.path.join(root, "LOC_val_solution.csv")
    annotations = {}
    if os.path.exists(solution):
        with open(solution, newline="") as f:
            for line_no, row in enumerate(csv.reader(f), 1):
                if line_no == 1 or len(row) != 2:
                    continue
                parts = row[1].split()
                annotations[row[0]] = [(parts[i], parts[i + 1:i + 5], f"{solution}:{line_no}")
                                       for i in range(0, len(parts) - 4, 5)]
    else:
        xml_dir = _first_dir(root, (os.path.join("Annotations", "CLS-LOC", "val"),)) or val
        for xml in sorted(glob.glob(os.path.join(xml_dir, "*.xml"))):
            stem = os.path.splitext(os.path.basename(xml))[0]
            try:
                _, _, objects = voc_objects(xml)
            except AnnotationError as err:
                if strict:
                    raise
                audit.skipped.append(str(err))
                continue
            annotations[stem] = [(name, fields, f"{xml}:{line}") for name, fields, line in objects]
    if not annotations:
        raise FileNotFoundError(f"{root}: no validation boxes (LOC_val_solution.csv, or XML files in "
                                "Annotations/CLS-LOC/val/ or beside the images)")
    records = []
    for stem in sorted(annotations):
        path = os.path.join(val, stem + ".JPEG")
        if not os.path.exists(path):
            continue
        actual = image_size(path)
        kept, label = [], -1
        for name, fields, where in annotations[stem]:
            box = audit.check(fields, actual, where)
            if box is not None:
                kept.append(box)
                label = index.get(name, -1)
        if kept:
            records.append((path, kept, label))
    audit.report()
    return records


def wsol_records(root, split="test", strict=False):
    """Records of ``split`` under ``root``: wsolevaluation metadata when present, else raw ILSVRC validation."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset folder not found: {root}")
    records = wsol_metadata_records(root, strict) if metadata_dir(root) else ilsvrc_val_records(root, strict)
    if not records:
        raise ValueError(f"{root}: no image with a usable box")
    return select_split(records, split)


def unlabeled_train_dir(data_dir, split):
    """The raw ILSVRC ``train/`` folder that ``split`` 'train' reads as unlabeled images, or None
    (no such folder, wsolevaluation metadata present, or another split)."""
    train = _first_dir(data_dir, ("train", os.path.join("Data", "CLS-LOC", "train")))
    return train if split == "train" and train and not metadata_dir(data_dir) else None


def imagenet_source(data_dir, split="test", strict=False, shard=None):
    """ImageNet-style WSOL data: ``train`` of a raw ILSVRC folder is its unlabeled ``train/`` images;
    otherwise the annotated images of ``split`` (see ``wsol_records``)."""

    train = unlabeled_train_dir(data_dir, split)
    if train:
        return folder_source(train, shard=shard)
    return records_source(wsol_records(data_dir, split, strict), f"{data_dir} ({split})", shard=shard)


def tfds_imagenet_source(split="train", data_dir=None, download=False, shard=None):
    """Training images of tfds ``imagenet2012`` (prepared beforehand: it needs the manual ILSVRC tars);
    its labels are never used. Raises ``TfdsNotPreparedError`` when it is not prepared."""
    ds = prepared_tfds_split("imagenet2012", split, data_dir, download,
                             "Pass --data-dir with a raw ILSVRC folder or wsolevaluation metadata instead.", shard)
    return ds.map(lambda ex: {"image": ex["image"], "boxes": tf.zeros((0, 4)), "path": ex["file_name"]},
                  num_parallel_calls=tf.data.AUTOTUNE)
