"""Heatmap overlays, boxes and masks for a user's images: the workflow behind ``c2am-tf predict``.

``maps.boxes_json.input_images`` finds the images below a file or folder (leaving out this workflow's own
outputs), and
``predict`` writes, for each one, the overlay PNG with the box, a JSON record, optionally the mask, and
``OUT/boxes.json`` streamed as results come, so a stopped run goes on where it stopped.
"""

import os
import sys
import time

import numpy as np
from tqdm import tqdm

from c2am_tf.data.transforms import resize_square
from c2am_tf.inference.maps import localization_maps
from c2am_tf.inference.postprocess import map_to_box, map_to_mask
from c2am_tf.maps.boxes_json import PICTURE_SUFFIXES, BoxesWriter, box_record, input_images, write_coco
from c2am_tf.maps.geometry import EVAL_CROP, check_band, check_image_size, check_threshold, scale_box
from c2am_tf.maps.viz import overlay, write_png
from c2am_tf.models.settings import model_box_band
from c2am_tf.presets import load, load_classifier, model_label
from c2am_tf.utils.errors import ConfigError, InputError
from c2am_tf.utils.files import OutputNames, write_json_atomically
from c2am_tf.utils.image_io import UnreadableImageError, load_image


def predict(paths, model_path, out_dir, size=EVAL_CROP, threshold=None, preset=None, masks=False,
            classifier=None, classifier_size=None, cam_weight=0.0, box_band=None, overwrite=False, progress=False):
    """Writes an overlay PNG and a JSON per image (and a mask PNG with ``masks``), and
    ``OUT/boxes.json`` (``c2am_tf.boxes/v1``, streamed as results come); returns the list of
    records. The model is a ``.keras`` file (``model_path``) or a shipped ``preset`` name. With a
    ``classifier`` (images 0..255 -> logits) each record holds its five best classes (``top5``); ``cam_weight`` > 0
    fuses the map with that class's CAM and needs ``threshold`` (the stored one is for the map alone).
    ``box_band``: the box rule's band (``c2am_tf.maps.boxes.best_box_per_threshold``); None: the model's own.
    An ``out_dir`` holding the results of other settings raises ValueError naming them, and one holding a file
    of the user's where an output goes raises ``OutputError``, unless ``overwrite``;
    of the same settings, only the images it lacks are predicted. ``progress``: a progress bar (stderr)."""
    size = check_image_size(size)
    if threshold is not None:
        threshold = check_threshold(threshold)
    if box_band is not None:
        box_band = check_band(box_band)
    if cam_weight and threshold is None:
        raise ValueError("cam_weight needs a threshold: the model's stored one was chosen for its map alone")
    classify = dict(classifier=classifier, classifier_size=classifier_size, cam_weight=cam_weight)
    # a file in out_dir that no run wrote (a labelling tool's x.jpg.json) is refused here, before any work
    pictures = OutputNames(paths, out_dir, PICTURE_SUFFIXES[0], overwrite=overwrite)
    jsons = OutputNames(paths, out_dir, ".json", overwrite=overwrite)
    mask_names = OutputNames(paths, out_dir, PICTURE_SUFFIXES[1], overwrite=overwrite) if masks else None
    model = load(model_path, preset)
    t = float(model.threshold.numpy()) if threshold is None else threshold
    band = model_box_band(model, box_band)
    header = {"model": model_label(model_path, preset), "threshold": t, "size": size}
    if band:
        header["box_band"] = band
    if cam_weight:
        header["cam_weight"] = float(cam_weight)
    writer = BoxesWriter(os.path.join(out_dir, "boxes.json"), header, replace=overwrite)
    todo = [path for path in paths if path not in writer.done]
    with writer, tqdm(todo, desc="predict", unit="img", initial=len(paths) - len(todo), total=len(paths),
                      disable=not progress) as bar:
        for path in bar:
            record = _predict_one(model, path, size, t, pictures, jsons, mask_names, classify, band)
            if record is not None:
                writer.add(record)
    return list(writer.done.values())


def predict_inputs(inputs, model_path, out_dir, size=EVAL_CROP, threshold=None, preset=None, masks=False,
                   classifier=None, classifier_size=None, cam_weight=0.0, box_band=None, overwrite=False, coco=None,
                   progress=True):
    """``predict``'s workflow: ``predict`` on the images below ``inputs`` (``input_images``), with ``classifier`` a
    name or file (``load_classifier``) and, with ``coco``, the boxes also written there as COCO JSON. Returns
    {"records", "images" (how many were found), "seconds"}. Results of other settings in ``out_dir`` are the
    ``ConfigError`` of ``out``; inputs that cannot be listed an ``InputError``."""
    paths = input_images(inputs, out_dir)
    classifier, classifier_size = load_classifier(classifier, classifier_size)
    start = time.perf_counter()
    try:
        records = predict(paths, model_path, out_dir, size, threshold, preset, masks, classifier, classifier_size,
                          cam_weight, box_band, overwrite, progress)
    except (ConfigError, InputError):
        raise
    except ValueError as err:  # out_dir holds the results of other settings
        raise ConfigError("out", str(err)) from None
    seconds = time.perf_counter() - start
    if coco:
        write_coco(coco, records, inputs if os.path.isdir(inputs) else None)
    return {"records": records, "images": len(paths), "seconds": seconds}


def _predict_one(model, path, size, t, pictures, jsons, mask_names=None, classify=None, band=0.0):
    """One image: its record, or None (with a message) when it cannot be read."""
    try:
        image, (width, height) = load_image(path, return_size=True)
    except UnreadableImageError as err:
        print(f"skipping {err}", file=sys.stderr)
        return None
    maps, top = localization_maps(model, resize_square(image, size)[None], **(classify or {}))
    score_map = maps[0]
    box, fraction = map_to_box(score_map, t, width, height, band)  # the file's pixels, even if decoded smaller
    record = box_record(path, width, height, box, fraction, top5=None if top is None else top[0])
    write_json_atomically(jsons(path), {**record, "threshold": t}, indent=1)
    shown = scale_box(box, (width, height), image.shape[1::-1])
    write_png(pictures(path), overlay(image, score_map, [shown]))
    if mask_names is not None:  # at the size the image was decoded at, like the overlay
        # a mask model refines its map along the image's edges (its stored refinement)
        mask = map_to_mask(score_map, t, image.shape[1], image.shape[0], image, getattr(model, "refinement", "none"))
        write_png(mask_names(path), mask.astype(np.uint8) * 255)
    return record
