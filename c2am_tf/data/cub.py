"""CUB-200-2011: the raw ``CUB_200_2011`` folder layout, or tfds ``caltech_birds2011``."""

import logging
import os

import tensorflow as tf

from c2am_tf.data.annotations import AnnotationError, BoxAudit, first_of_each, parse_box
from c2am_tf.data.records import records_source
from c2am_tf.data.tfds_source import prepared_tfds_split
from c2am_tf.utils.errors import InputError
from c2am_tf.utils.image_io import image_size

SPLITS = ("train", "test")
log = logging.getLogger("c2am_tf.data")


def _read_table(path, columns, strict=False):
    """{id: (fields, line number)} of a whitespace-separated CUB table. A byte-order mark is read past (it made
    the first id unknown, dropping its image); an id given twice keeps its first line, with one counted warning
    (an ``InputError`` naming both lines with ``strict``); a malformed line is an ``InputError`` naming it."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: a CUB_200_2011 folder holds images/, images.txt, "
            "train_test_split.txt and bounding_boxes.txt"
        )
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != columns:
                raise InputError(f"{path}:{line_no}: expected {columns} fields, got {line.strip()[:200]!r}")
            rows.append((parts, line_no))
    kept, repeated = first_of_each(rows, path, strict, "id {}", InputError, "; each id once" if strict else "")
    if repeated:
        log.warning("%d repeated id%s in %s, each line after the first ignored (strict mode makes this an error): "
                    "%s%s", len(repeated), "s" * (len(repeated) > 1), path, repeated[0],
                    ", ..." if len(repeated) > 1 else "")
    return {parts[0]: (parts[1:], line_no) for parts, line_no in kept}


def cub_records(data_dir, split, strict=False):
    """[(image path, [[x0, y0, x1, y1]], class index or -1)] for a split of a raw CUB folder (the record
    format of ``c2am_tf.data.wsol``); the class index is the position of the image's class in ``classes.txt``.

    Boxes are checked against their image (``c2am_tf.data.annotations``): unusable ones
    skip their image and boxes partly outside are clamped, with one warning; ``strict``
    makes either an ``AnnotationError`` naming the file and line.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images = _read_table(os.path.join(data_dir, "images.txt"), 2, strict)
    is_train = _read_table(os.path.join(data_dir, "train_test_split.txt"), 2, strict)
    box_file = os.path.join(data_dir, "bounding_boxes.txt")
    boxes = _read_table(box_file, 5, strict)
    labels = _class_indices(data_dir)
    want = "1" if split == "train" else "0"
    audit = BoxAudit(f"{box_file} ({split})", strict)
    records = []
    for image_id, ((rel,), _) in images.items():
        if is_train.get(image_id, ([None], 0))[0][0] != want:
            continue
        if image_id not in boxes:
            raise InputError(f"{box_file}: no box for image id {image_id} (images.txt:{images[image_id][1]})")
        fields, line_no = boxes[image_id]
        path = os.path.join(data_dir, "images", rel)
        where = f"{box_file}:{line_no}"
        try:
            x, y, w, h = parse_box(fields, where)
        except AnnotationError as err:
            if strict:
                raise
            audit.skipped.append(str(err))
            continue
        box = audit.check([x, y, x + w, y + h], image_size(path), where)
        if box is not None:
            records.append((path, [box], labels.get(image_id, -1)))
    audit.report()
    if not records:
        raise ValueError(f"{data_dir}: no usable images in split {split!r}")
    return records


def _class_indices(data_dir):
    """{image id: index of its class in classes.txt}; empty when the label files are absent."""
    classes_file = os.path.join(data_dir, "classes.txt")
    labels_file = os.path.join(data_dir, "image_class_labels.txt")
    if not (os.path.exists(classes_file) and os.path.exists(labels_file)):
        return {}
    order = {class_id: i for i, class_id in enumerate(_read_table(classes_file, 2))}
    return {image_id: order.get(fields[0], -1) for image_id, (fields, _) in _read_table(labels_file, 2).items()}


def cub_classes(data_dir):
    """Class names of a raw CUB folder, in ``classes.txt`` order (the classifier's output order)."""
    return [fields[0] for fields, _ in _read_table(os.path.join(data_dir, "classes.txt"), 2).values()]


def cub_source(data_dir, split="train", num_parallel_calls=tf.data.AUTOTUNE, strict=False, shard=None):
    """Dataset of {'image': uint8 (H, W, 3), 'boxes': (1, 4) float32, 'label', 'path'} from a raw folder.

    Unreadable images are skipped with a warning (see ``drop_unreadable``); so are images
    whose box cannot be used, unless ``strict`` (see ``cub_records``).
    """
    records = cub_records(data_dir, split, strict)
    try:
        return records_source(records, f"CUB {split} images of {data_dir}", num_parallel_calls, shard)
    except ValueError:
        raise ValueError(f"{data_dir}: no readable images in split {split!r}") from None


def tfds_cub_source(split="train", data_dir=None, download=False, with_masks=False, shard=None):
    """The same elements from tfds ``caltech_birds2011`` (already prepared, or ``download``).

    ``with_masks`` adds its ``segmentation_mask`` as 'mask' (H, W) uint8 in {0, 1}.

    Offline and not prepared: raises at once with a message pointing at
    ``--data-dir`` (the raw folder), instead of retrying downloads for minutes.
    """
    ds = prepared_tfds_split("caltech_birds2011", split, data_dir, download,
                             "Either read a raw CUB_200_2011 folder instead, or let tfds download and prepare "
                             "it once, online.", shard)

    def convert(ex):
        image = ex["image"]
        shape = tf.cast(tf.shape(image), tf.float32)
        ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(ex["bbox"], [4]))
        box = tf.stack([xmin * shape[1], ymin * shape[0], xmax * shape[1], ymax * shape[0]])
        out = {"image": image, "boxes": box[None, :], "label": tf.cast(ex["label"], tf.int32),
               "path": ex["image/filename"]}
        if with_masks:
            mask = ex["segmentation_mask"]
            mask = mask[..., 0] if mask.shape.rank == 3 else mask
            out["mask"] = tf.cast(mask > 0, tf.uint8)
        return out

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
