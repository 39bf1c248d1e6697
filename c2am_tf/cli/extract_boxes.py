"""Pseudo boxes for a whole dataset at the model's stored threshold.

    python train/extract_boxes.py --model runs/cub/final.keras --dataset cub \
        --data-dir path/to/CUB_200_2011 --split train --out boxes.json [--psol-out psol.json]

Output (``--out``), one entry per image, boxes in original image pixels:

    {"format": "c2am_tf.boxes/v1", "model": ..., "threshold": 0.7,
     "images": [{"path": ..., "width": W, "height": H,
                 "box": [x0, y0, x1, y1], "foreground_fraction": 0.31}, ...]}

``--psol-out`` also writes the PSOL format: {image path: [x, y, w, h]} normalized
by the image size. Images go through the eval transform (resize, center crop)
as in the authors' extraction. Progress is saved to ``OUT.partial.jsonl``: a
killed run started again skips the images already done.
"""

import hashlib
import os
import sys

import tensorflow as tf
from tqdm import tqdm

from c2am_tf import data
from c2am_tf.callbacks import predict_maps
from c2am_tf.boxes_json import BoxesWriter, box_record
from c2am_tf.files import OutputNames, write_json_atomically
from c2am_tf.geometry import EVAL_CROP, EVAL_RESIZE, eval_box_to_original
from c2am_tf.inference import load_model, map_to_box
from c2am_tf.viz import overlay, write_png
from c2am_tf.cli.common import command_parser



def build_parser(prog=None):
    """This command's flags (the README's commands are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--model", required=True, help="a C2AM .keras model")
    p.add_argument("--dataset", default="cub", choices=list(data.DATASETS), help="dataset to read")
    p.add_argument("--data-dir", help="its folder")
    p.add_argument("--split", default="train", choices=["train", "test"], help="which split")
    p.add_argument("--out", required=True, help="boxes JSON")
    p.add_argument("--psol-out", help="also write PSOL-format JSON here")
    p.add_argument("--overlays", help="folder for heatmap overlay PNGs")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--resize", type=int, default=EVAL_RESIZE, help="the eval frame: resize to this square")
    p.add_argument("--crop", type=int, default=EVAL_CROP, help="the eval frame: then center-crop this square")
    p.add_argument("--threshold", type=float, help="override the model's stored threshold")
    return p


def parse_args(argv=None, prog=None):
    """Command-line flags."""
    p = build_parser(prog)
    return p.parse_args(argv)


def _digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def main(argv=None, prog=None):
    """Entry point."""
    args = parse_args(argv, prog)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)  # before loading anything: a bad --out fails at once
    if not os.access(out_dir, os.W_OK):
        sys.exit(f"error: --out: cannot write to {out_dir}")
    model = load_model(args.model)
    threshold = args.threshold if args.threshold is not None else float(model.threshold.numpy())
    source = data.make_source(args.dataset, args.split, args.data_dir)
    header = {"model": os.path.abspath(args.model), "model_sha256": _digest(args.model), "threshold": threshold,
              "resize": args.resize, "crop": args.crop, "dataset": args.dataset, "split": args.split}
    try:
        writer = BoxesWriter(args.out, header)
    except ValueError as err:
        sys.exit(f"error: {err}")
    done = writer.done
    paths = tf.constant(list(done) or [""])
    source = source.filter(lambda ex: tf.logical_not(tf.reduce_any(tf.equal(ex["path"], paths))))

    def prepare(ex):
        shape = tf.shape(ex["image"])
        return data.eval_image(ex["image"], args.resize, args.crop), ex["path"], shape[1], shape[0]

    ds = source.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(args.batch_size).prefetch(2)
    pictures = None
    if args.overlays:
        pictures = OutputNames(None, args.overlays, ".png", root=args.data_dir or os.getcwd())
    with writer, tqdm(desc="boxes", unit="img", initial=len(done)) as bar:
        for images, batch_paths, widths, heights in ds:
            maps = predict_maps(model, images)
            for i, score_map in enumerate(maps):
                box, fraction = map_to_box(score_map, threshold, args.crop, args.crop)
                w, h = int(widths[i]), int(heights[i])
                path = batch_paths[i].numpy().decode()
                writer.add(box_record(path, w, h, eval_box_to_original(box, w, h, args.resize, args.crop), fraction))
                if pictures is not None:
                    write_png(pictures(path), overlay(images[i].numpy(), score_map, [box]))
            bar.update(len(maps))
    records = list(done.values())
    if args.psol_out:
        psol = {e["path"]: [e["box"][0] / e["width"], e["box"][1] / e["height"],
                            (e["box"][2] - e["box"][0]) / e["width"], (e["box"][3] - e["box"][1]) / e["height"]]
                for e in records}
        write_json_atomically(args.psol_out, psol)
    print(f"{len(records)} boxes at threshold {threshold:.2f} -> {args.out}")

