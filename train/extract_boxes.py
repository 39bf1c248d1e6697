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

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from c2am_tf import data  # noqa: E402
from c2am_tf.callbacks import predict_maps  # noqa: E402
from c2am_tf.files import write_json_atomically  # noqa: E402
from c2am_tf.inference import crop_box_to_original, load_model, map_to_box  # noqa: E402
from c2am_tf.viz import overlay  # noqa: E402


def parse_args(argv=None):
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="cub", choices=list(data.DATASETS))
    p.add_argument("--data-dir")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--out", required=True, help="boxes JSON")
    p.add_argument("--psol-out", help="also write PSOL-format JSON here")
    p.add_argument("--overlays", help="folder for heatmap overlay PNGs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--resize", type=int, default=480)
    p.add_argument("--crop", type=int, default=448)
    p.add_argument("--threshold", type=float, help="override the model's stored threshold")
    return p.parse_args(argv)


def main(argv=None):
    """Entry point."""
    args = parse_args(argv)
    model = load_model(args.model)
    threshold = args.threshold if args.threshold is not None else float(model.threshold.numpy())
    source = data.make_source(args.dataset, args.split, args.data_dir)
    partial = args.out + ".partial.jsonl"
    done = {}
    if os.path.exists(partial):
        with open(partial) as f:
            for line in f:
                if line.strip():
                    entry = json.loads(line)
                    done[entry["path"]] = entry
    paths = tf.constant(list(done) or [""])
    source = source.filter(lambda ex: tf.logical_not(tf.reduce_any(tf.equal(ex["path"], paths))))

    def prepare(ex):
        shape = tf.shape(ex["image"])
        return data.eval_image(ex["image"], args.resize, args.crop), ex["path"], shape[1], shape[0]

    ds = source.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(args.batch_size).prefetch(2)
    if args.overlays:
        os.makedirs(args.overlays, exist_ok=True)
    with open(partial, "a") as log, tqdm(desc="boxes", unit="img", initial=len(done)) as bar:
        for images, batch_paths, widths, heights in ds:
            maps = predict_maps(model, images)
            for i, score_map in enumerate(maps):
                box, fraction = map_to_box(score_map, threshold, args.crop, args.crop)
                w, h = int(widths[i]), int(heights[i])
                entry = {"path": batch_paths[i].numpy().decode(), "width": w, "height": h,
                         "box": [round(float(v), 2) for v in crop_box_to_original(box, w, h, args.resize, args.crop)],
                         "foreground_fraction": round(fraction, 4)}
                log.write(json.dumps(entry) + "\n")
                done[entry["path"]] = entry
                if args.overlays:
                    name = os.path.splitext(os.path.basename(entry["path"]))[0] + ".png"
                    pic = overlay(images[i].numpy(), score_map, [box])
                    cv2.imwrite(os.path.join(args.overlays, name), pic[..., ::-1])
            log.flush()
            bar.update(len(maps))
    result = {"format": "c2am_tf.boxes/v1", "model": os.path.abspath(args.model), "threshold": threshold,
              "images": list(done.values())}
    write_json_atomically(args.out, result)
    if args.psol_out:
        psol = {e["path"]: [e["box"][0] / e["width"], e["box"][1] / e["height"],
                            (e["box"][2] - e["box"][0]) / e["width"], (e["box"][3] - e["box"][1]) / e["height"]]
                for e in done.values()}
        write_json_atomically(args.psol_out, psol)
    os.remove(partial)
    print(f"{len(done)} boxes at threshold {threshold:.2f} -> {args.out}")


if __name__ == "__main__":
    main()
