"""Heatmap overlays and boxes for images: ``c2am-tf predict IMAGE_OR_DIR --model M.keras|--preset NAME --out DIR``.

For each image (any size; grayscale and RGBA are converted to RGB) writes
``OUT/<path below the input folder>.png`` (``photos/sub/x.jpg`` -> ``OUT/sub/x.jpg.png``),
the heatmap overlay with the box, and the same name with ``.json``: the box
(original pixels), the threshold and the map's foreground fraction. With ``--masks``, also
``OUT/<...>.mask.png``: the foreground mask at the image's size (0 / 255), by the same rule
as the box. With ``--classifier`` each record also holds the classifier's five best classes
(``top5``, best first), and ``--cam-weight W --threshold T`` cuts the box from the map fused with
the CAM of the first (``c2am_tf.evaluation.evaluate.localization_maps``). Outputs never overwrite an input
image, and an output folder inside the input folder is not read.
"""

import os
import sys
import time

import numpy as np
from tqdm import tqdm

from c2am_tf.maps.boxes_json import BoxesWriter, box_record, drop_own_outputs
from c2am_tf.evaluation.evaluate import localization_maps
from c2am_tf.utils.errors import ConfigError
from c2am_tf.utils.files import OutputNames, image_paths, write_json_atomically
from c2am_tf.data.transforms import resize_square
from c2am_tf.maps.geometry import EVAL_CROP, check_band, check_image_size, check_threshold, model_box_band, scale_box
from c2am_tf.utils.image_io import UnreadableImageError, load_image
from c2am_tf.inference.postprocess import map_to_box, map_to_mask
from c2am_tf.presets import load, model_label
from c2am_tf.maps.viz import overlay, write_png
from c2am_tf.cli.common import (add_box_band_flag, add_classifier_flags, add_model_flags, check_classifier_flags,
                                chosen_classifier, command_parser, output_folder)


OUTPUT_SUFFIXES = (".png", ".mask.png")  # the pictures written beside each image's name (.json is no image)


def predict(paths, model_path, out_dir, size=EVAL_CROP, threshold=None, preset=None, masks=False,
            classifier=None, classifier_size=None, cam_weight=0.0, box_band=None, overwrite=False, progress=False):
    """Writes an overlay PNG and a JSON per image (and a mask PNG with ``masks``), and
    ``OUT/boxes.json`` (``c2am_tf.boxes/v1``, streamed as results come); returns the list of
    records. The model is a ``.keras`` file (``model_path``) or a shipped ``preset`` name. With a
    ``classifier`` (images 0..255 -> logits) each record holds its five best classes (``top5``); ``cam_weight`` > 0
    fuses the map with that class's CAM and needs ``threshold`` (the stored one is for the map alone).
    ``box_band``: the box rule's band (``c2am_tf.maps.boxes.best_box_per_threshold``); None: the model's own.
    An ``out_dir`` holding the results of other settings raises ValueError naming them, unless ``overwrite``;
    of the same settings, only the images it lacks are predicted. ``progress``: a progress bar (stderr)."""
    size = check_image_size(size)
    if threshold is not None:
        threshold = check_threshold(threshold)
    if box_band is not None:
        box_band = check_band(box_band)
    if cam_weight and threshold is None:
        raise ValueError("cam_weight needs a threshold: the model's stored one was chosen for its map alone")
    classify = dict(classifier=classifier, classifier_size=classifier_size, cam_weight=cam_weight)
    pictures, jsons = OutputNames(paths, out_dir, OUTPUT_SUFFIXES[0]), OutputNames(paths, out_dir, ".json")
    mask_names = OutputNames(paths, out_dir, OUTPUT_SUFFIXES[1]) if masks else None
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



def build_parser(prog=None):
    """This command's flags (the README's commands are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("inputs", help="an image file or a folder of images (searched recursively)")
    add_model_flags(p)
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    p.add_argument("--size", type=int, default=EVAL_CROP, help="the image is resized whole to size x size")
    p.add_argument("--threshold", type=float, help="override the model's stored threshold, in [0, 1]")
    add_box_band_flag(p)
    p.add_argument("--masks", action="store_true", help="also write each image's foreground mask (.mask.png)")
    add_classifier_flags(p, "its top-1 class")
    p.add_argument("--overwrite", action="store_true", help="replace the results of other settings in --out")
    return p


def main(argv=None, prog=None):
    """``c2am-tf predict``; returns the exit status."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    check_classifier_flags(p, args, threshold_needed=True)
    try:
        paths = drop_own_outputs(image_paths(args.inputs, exclude=args.out), os.path.join(args.out, "boxes.json"),
                                 OUTPUT_SUFFIXES)
    except (FileNotFoundError, ValueError) as err:
        p.error(str(err))
    try:
        classifier, classifier_size = chosen_classifier(args)
        start = time.perf_counter()
        records = predict(paths, args.model, args.out, args.size, args.threshold, args.preset, args.masks,
                          classifier, classifier_size, args.cam_weight, args.box_band, args.overwrite, progress=True)
    except ConfigError as err:
        p.error(err.as_flag())
    except (ValueError, FileNotFoundError) as err:
        p.error(str(err))
    seconds = time.perf_counter() - start
    print(f"{len(records)} of {len(paths)} images -> {args.out}/boxes.json ({len(paths) - len(records)} unreadable "
          f"skipped; {seconds:.1f} s, {len(paths) / max(seconds, 1e-9):.1f} img/s)")
    return 0 if records else 1

