"""PASCAL VOC 2012 and Oxford-IIIT Pet loaders on tiny folders made here: labels, masks, errors."""

import numpy as np
import pytest
from PIL import Image

from c2am_tf.data.segmentation import (
    VOC_CLASSES,
    pets_records,
    segmentation_dataset,
    trimap_to_labels,
    voc_palette,
    voc_records,
)


def _voc(root, with_aug=False):
    for d in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n2007_000002\n")
    objects = {"2007_000001": ["dog", "person", "dog"], "2007_000002": ["tvmonitor"]}
    for i, (image_id, names) in enumerate(objects.items()):
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(f"<object><name>{n}</name><difficult>{int(n == 'person')}</difficult></object>" for n in names)
        (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{xml}</annotation>")
        mask = np.zeros((6, 8), np.uint8)
        mask[1:4, 2:5] = VOC_CLASSES.index(names[0]) + 1
        mask[0] = 255
        png = Image.fromarray(mask, mode="P")
        png.putpalette(voc_palette().ravel().tolist())  # as VOC stores them: palette indices
        png.save(root / "SegmentationClass" / f"{image_id}.png")
    if with_aug:
        (root / "SegmentationClassAug").mkdir()
        Image.fromarray(np.full((6, 8), 7, np.uint8)).save(root / "SegmentationClassAug" / "2007_000001.png")


def test_voc_labels_from_xml_and_palette_masks(tmp_path):
    _voc(tmp_path)
    records = voc_records(str(tmp_path), "train")
    assert [r[2] for r in records] == [[VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")],
                                       [VOC_CLASSES.index("tvmonitor")]]
    source, classes = segmentation_dataset("voc", str(tmp_path))
    first = next(iter(source))
    assert classes == list(VOC_CLASSES) and first["labels"].shape == (20,)
    assert np.flatnonzero(first["labels"].numpy()).tolist() == [11, 14]
    mask = first["mask"].numpy()
    assert mask.shape == (6, 8) and mask[2, 3] == 12 and mask[5, 7] == 0 and (mask[0] == 255).all()


def test_voc_prefers_the_augmented_masks_and_names_bad_files(tmp_path):
    _voc(tmp_path, with_aug=True)
    records = voc_records(str(tmp_path))
    assert records[0][1].endswith("SegmentationClassAug/2007_000001.png")
    assert records[1][1].endswith("SegmentationClass/2007_000002.png")
    (tmp_path / "Annotations" / "2007_000002.xml").write_text("<annotation><object><name>unicorn</name>"
                                                            "</object></annotation>")
    with pytest.raises(ValueError, match=r"2007_000002\.xml: unknown VOC classes \['unicorn'\]"):
        voc_records(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="val.txt"):
        voc_records(str(tmp_path), "val")


def _pets(root):
    (root / "images").mkdir()
    (root / "annotations" / "trimaps").mkdir(parents=True)
    names = {"Bengal_3": 6, "american_bulldog_10": 2, "Abyssinian_1": 1}
    (root / "annotations" / "trainval.txt").write_text(
        "".join(f"{n} {c} {1 if n[0].isupper() else 2} 1\n" for n, c in names.items()))
    for name in names:
        Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(root / "images" / f"{name}.jpg")
        trimap = np.full((5, 6), 2, np.uint8)
        trimap[1:4, 1:4] = 1
        trimap[0, 0] = 3
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
    (root / "images" / "Abyssinian_1.mat").write_bytes(b"stray file, as in the original")


def test_pets_classes_follow_the_class_ids_and_trimaps_become_labels(tmp_path):
    _pets(tmp_path)
    records, classes = pets_records(str(tmp_path))
    assert classes == ["Abyssinian", "american_bulldog", "Bengal"]
    assert [r[2] for r in records] == [[2], [1], [0]]
    source, _ = segmentation_dataset("pets", str(tmp_path))
    bengal = next(iter(source))
    assert np.flatnonzero(bengal["labels"].numpy()).tolist() == [2]
    mask = bengal["mask"].numpy()
    assert mask[2, 2] == 3 and mask[4, 5] == 0 and mask[0, 0] == 255


def test_trimap_conversion_and_unknown_breed(tmp_path):
    assert trimap_to_labels(np.array([[1, 2, 3]]), 4).tolist() == [[5, 0, 255]]
    _pets(tmp_path)
    with pytest.raises(ValueError, match="breed 'Bengal'"):
        pets_records(str(tmp_path), classes=["Abyssinian", "american_bulldog"])
    with pytest.raises(ValueError, match="unknown segmentation dataset"):
        segmentation_dataset("coco", str(tmp_path))


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette[1].tolist() == [128, 0, 0] and palette[15].tolist() == [192, 128, 128]
