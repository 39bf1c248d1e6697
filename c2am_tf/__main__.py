"""Command line: ``python -m c2am_tf predict IMAGE_OR_DIR --model M.keras --out DIR``.

For each image (any size; grayscale and RGBA are converted to RGB) writes
``NAME.png``, the heatmap overlay with the box, and ``NAME.json`` with the box
(original pixels), the threshold and the map's foreground fraction.
"""

import argparse
import json
import os
import sys

import cv2
import tensorflow as tf

from c2am_tf.callbacks import predict_maps
from c2am_tf.data.images import read_rgb
from c2am_tf.files import image_paths
from c2am_tf.data.transforms import resize_square
from c2am_tf.inference import load_model, map_to_box
from c2am_tf.viz import overlay


def predict(paths, model_path, out_dir, size=448, threshold=None):
    """Writes an overlay PNG and a JSON per image; returns the list of JSON records."""
    model = load_model(model_path)
    t = float(model.threshold.numpy()) if threshold is None else float(threshold)
    os.makedirs(out_dir, exist_ok=True)
    records = []
    for path in paths:
        try:
            image = read_rgb(path).numpy()
        except tf.errors.OpError as e:
            print(f"skipping {path}: cannot decode ({e.message.splitlines()[0]})", file=sys.stderr)
            continue
        if image.size == 0:
            print(f"skipping {path}: empty image", file=sys.stderr)
            continue
        h, w = image.shape[:2]
        score_map = predict_maps(model, resize_square(image, size)[None])[0]
        box, fraction = map_to_box(score_map, t, w, h)
        name = os.path.splitext(os.path.basename(path))[0]
        record = {"image": path, "width": w, "height": h, "box": [round(float(v), 2) for v in box],
                  "threshold": t, "foreground_fraction": round(fraction, 4)}
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(record, f, indent=1)
        cv2.imwrite(os.path.join(out_dir, name + ".png"), overlay(image, score_map, [box])[..., ::-1])
        records.append(record)
    return records


def main(argv=None):
    """Entry point of ``python -m c2am_tf``."""
    p = argparse.ArgumentParser(prog="python -m c2am_tf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("predict", help="heatmap overlays and boxes for images")
    pp.add_argument("inputs", help="an image file or a folder of images")
    pp.add_argument("--model", required=True)
    pp.add_argument("--out", required=True)
    pp.add_argument("--size", type=int, default=448, help="the image is resized to size x size")
    pp.add_argument("--threshold", type=float, help="override the model's stored threshold")
    args = p.parse_args(argv)
    try:
        paths = image_paths(args.inputs)
    except (FileNotFoundError, ValueError) as err:
        p.error(str(err))
    records = predict(paths, args.model, args.out, args.size, args.threshold)
    print(f"{len(records)} of {len(paths)} images -> {args.out}")
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
