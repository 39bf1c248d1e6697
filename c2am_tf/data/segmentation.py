"""Segmentation datasets with image-level labels: PASCAL VOC 2012 and Oxford-IIIT Pet (raw layouts).

A *record* is ``(image path, mask path or None, class indices present)``; a source
(``segmentation_source``) yields ``{'image': uint8 (H, W, 3), 'labels': (K,) float32
multi-hot, 'mask': (H, W) uint8 (0 background, k = class k - 1, 255 ignore), 'path'}``.
"""

import os
import xml.etree.ElementTree as ET

import numpy as np
import tensorflow as tf
from PIL import Image

from c2am_tf.data.images import drop_unreadable, read_rgb
from c2am_tf.utils.errors import InputError
from c2am_tf.utils.image_io import image_size, max_pixels
from c2am_tf.utils.limits import check_regular_file, over_limit

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
IGNORE = 255


def voc_palette():
    """The PASCAL VOC colour map: (256, 3) uint8, index k -> RGB (255 = border, cream)."""
    palette = np.zeros((256, 3), np.uint8)
    for k in range(256):
        c, r, g, b = k, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[k] = (r, g, b)
    return palette


def _read_ids(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"split file not found: {path}")
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip() and not line.startswith("#")]


def voc_records(root, split="train"):
    """[(image, mask or None, class indices)] of PASCAL VOC 2012 (``VOCdevkit/VOC2012`` layout).

    Split ids come from ``ImageSets/Segmentation/<split>.txt``; masks from
    ``SegmentationClassAug/`` when present (the augmented set), else ``SegmentationClass/``;
    image-level labels from ``Annotations/<id>.xml`` (every object, difficult included).
    """
    ids = _read_ids(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"))
    mask_dirs = [d for d in ("SegmentationClassAug", "SegmentationClass") if os.path.isdir(os.path.join(root, d))]
    records = []
    for image_id in ids:
        xml_path = os.path.join(root, "Annotations", image_id + ".xml")
        try:
            names = {obj.findtext("name").strip() for obj in ET.parse(xml_path).getroot().iter("object")}
        except (OSError, ET.ParseError) as err:
            raise ValueError(f"{xml_path}: cannot read the image-level labels ({err})") from err
        unknown = names - set(VOC_CLASSES)
        if unknown:
            raise ValueError(f"{xml_path}: unknown VOC classes {sorted(unknown)}")
        mask = next((p for p in (os.path.join(root, d, image_id + ".png") for d in mask_dirs) if os.path.exists(p)),
                    None)
        records.append((os.path.join(root, "JPEGImages", image_id + ".jpg"), mask,
                        sorted(VOC_CLASSES.index(n) for n in names)))
    return records


def pet_breed(name):
    """Breed of an Oxford-IIIT Pet file name: ``american_bulldog_12.jpg`` -> ``american_bulldog``."""
    return os.path.splitext(os.path.basename(name))[0].rsplit("_", 1)[0]


def pets_records(root, split="trainval", classes=None):
    """([(image, trimap, [class index])], class names) of Oxford-IIIT Pet (original layout).

    Ids come from ``annotations/<split>.txt`` (``list`` for all); the class is the
    breed in the file name; ``classes`` defaults to the breeds present, in the
    order of the dataset's class ids. Masks are trimaps (1 pet, 2 background,
    3 unsure), turned into labels by ``segmentation_source(..., trimap=True)``.
    """
    list_path = os.path.join(root, "annotations", f"{split}.txt")
    ids = _read_ids(list_path)
    if classes is None:
        class_id = {}
        with open(list_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and not line.startswith("#"):
                    class_id.setdefault(pet_breed(parts[0] + ".jpg"), int(parts[1]))
        classes = sorted(class_id, key=class_id.get)
    classes = list(classes)
    records = []
    for image_id in ids:
        breed = pet_breed(image_id + ".jpg")
        if breed not in classes:
            raise ValueError(f"{list_path}: {image_id} has breed {breed!r}, not among the classes {classes}")
        records.append((os.path.join(root, "images", image_id + ".jpg"),
                        os.path.join(root, "annotations", "trimaps", image_id + ".png"), [classes.index(breed)]))
    return records, classes


def read_label_png(path):
    """(H, W) uint8 label indices of a PNG: palette indices as stored (VOC), or its gray values. A file that is
    not regular, or declares more pixels than ``C2AM_MAX_PIXELS``, is an ``InputError`` before it is decoded."""

    check_regular_file(path, "label mask")
    size = image_size(path)
    if size is not None and size[0] * size[1] > max_pixels():
        raise over_limit(path, size[0] * size[1], "C2AM_MAX_PIXELS", f"its {size[0]}x{size[1]} label mask")
    with Image.open(path) as image:
        if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):  # gray values of colours are no classes
            raise InputError(f"{path}: its label mask is {image.mode}, not class indices (a palette or 8-bit gray "
                             "PNG, e.g. VOC's SegmentationClass)")
        if image.mode not in ("P", "L"):
            image = image.convert("L")
        return np.asarray(image, np.uint8)


def trimap_to_labels(trimap, class_index):
    """Oxford-IIIT Pet trimap -> labels: pet 1 -> class_index + 1, background 2 -> 0, unsure 3 -> 255."""
    trimap = np.asarray(trimap)
    return np.where(trimap == 1, class_index + 1, np.where(trimap == 2, 0, IGNORE)).astype(np.uint8)


def segmentation_source(records, num_classes, trimap=False):
    """tf.data source of {'image', 'labels', 'mask', 'path'} from records (see module docstring).

    Unreadable images are skipped with a warning; a missing mask gives an all-ignore mask.
    """
    paths, masks, classes, _ = drop_unreadable([r[0] for r in records], [r[1] or "" for r in records],
                                               [r[2] for r in records], what="images")
    labels = np.zeros((len(paths), num_classes), np.float32)
    for i, present in enumerate(classes):
        labels[i, present] = 1.0
    first = np.array([c[0] if c else 0 for c in classes], np.int32)

    def load_mask(mask_path, class_index, shape):
        mask_path = mask_path.numpy().decode()
        if not mask_path:
            return np.full(shape.numpy()[:2], IGNORE, np.uint8)
        mask = read_label_png(mask_path)
        return trimap_to_labels(mask, int(class_index)) if trimap else mask

    def load(path, mask_path, label, class_index):
        image = read_rgb(path)
        mask = tf.py_function(load_mask, [mask_path, class_index, tf.shape(image)], tf.uint8)
        mask.set_shape([None, None])
        tf.debugging.assert_equal(tf.shape(mask), tf.shape(image)[:2],
                                  message=tf.strings.join(["mask and image sizes differ: ", mask_path]))
        return {"image": image, "labels": label, "mask": mask, "path": path}

    ds = tf.data.Dataset.from_tensor_slices((paths, masks, labels, first))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


SEGMENTATION_DATASETS = ("voc", "pets")


def segmentation_dataset(name, root, split=None):
    """(source, class names) of ``voc`` (default split ``train``) or ``pets`` (default ``trainval``)."""
    if name == "voc":
        return segmentation_source(voc_records(root, split or "train"), len(VOC_CLASSES)), list(VOC_CLASSES)
    if name == "pets":
        records, classes = pets_records(root, split or "trainval")
        return segmentation_source(records, len(classes), trimap=True), classes
    raise ValueError(f"unknown segmentation dataset {name!r}; choose one of {SEGMENTATION_DATASETS}")
