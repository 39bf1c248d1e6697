"""Agreement of the TFLite and ONNX exports with the Keras model on the CUB dev eval split (or DUTS).

    python benchmarks/tflite_agreement.py --model cub_lite0 (a preset, or a .keras file) \\
        [--data-dir ../shared/data/CUB_200_2011_dev] [--size 448]
    python benchmarks/tflite_agreement.py --model runs/masks/masks.keras --dataset masks \\
        --data-dir ../shared/data/DUTS-TE_dev500     (calibrated on half1, scored on half2, whole images)

Converts the model to fp32, fp16 and int8 (calibrated on 100 CUB *train* images), runs
every eval image (resize 480, center crop 448, the benchmark's eval frame) through
Keras and through each model in the LiteRT interpreter, and prints: the largest map
difference, the share of images whose device-side box (``c2am_tf.deploy.on_device.box_from_map``)
has IoU >= 0.5 with the Keras box (``c2am_tf.maps.boxes``, OpenCV), the share of identical
boxes, the mean IoU of the device-side foreground mask (``c2am_tf.deploy.on_device.mask_from_map``) with
the Keras one (``c2am_tf.inference.postprocess.map_to_mask``) at the eval frame's size, GT-known Loc of
each, and the model sizes; the ONNX export (Keras's own, ``c2am_tf.deploy.onnx_export``, run by onnxruntime
in the same ``ForegroundDetector``) is one more row where the onnx extra is installed. A mask model's masks are refined on both sides (its stored
refinement, against the image), so the mask IoU compares what each runtime delivers.
"""

import argparse
import os
import time

import numpy as np

from c2am_tf import data
from c2am_tf.deploy import tflite_export as tflite
from c2am_tf.deploy.on_device import ForegroundDetector, box_from_map, mask_from_map
from c2am_tf.inference.postprocess import map_to_mask
from c2am_tf.maps.boxes import box_iou, boxes_from_map
from c2am_tf.maps.edges import edge_refined_mask
from c2am_tf.maps.geometry import EVAL_CROP, EVAL_RESIZE
from c2am_tf.presets import load_named

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


from machine import header


def main(argv=None):
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", choices=["cub", "masks"], default="cub")
    p.add_argument("--data-dir", default=os.path.join(SHARED, "CUB_200_2011_dev"))
    p.add_argument("--size", type=int, default=EVAL_CROP)
    p.add_argument("--calibration-steps", type=int, default=100)
    args = p.parse_args(argv)
    print(header()[0], flush=True)

    model = load_named(args.model)
    threshold = float(model.threshold.numpy())
    refinement = getattr(model, "refinement", "none")
    if args.dataset == "cub":
        resize = round(args.size * EVAL_RESIZE / EVAL_CROP)
        evals = list(data.eval_pipeline(data.cub_source(args.data_dir, "test"), 32, resize, args.size, cache=False))
        train = [record[0] for record in data.cub_records(args.data_dir, "train")]
    else:
        evals = list(data.eval_pipeline(data.make_source("masks", "half2", args.data_dir), 32, args.size, args.size,
                                        cache=False))
        train = data.source_files("masks", "half1", args.data_dir)[0]
    images = np.concatenate([b["image"].numpy() for b in evals]).astype(np.uint8)
    gt = np.concatenate([b["boxes"].numpy() for b in evals])
    keras_maps = model.predict(images.astype(np.float32), batch_size=16, verbose=0)[..., 0]
    h, w = keras_maps.shape[1:]
    scale = np.array([args.size / w, args.size / h] * 2)
    keras_boxes = np.stack([boxes_from_map(m, [threshold])[0][0] for m in keras_maps]) * scale

    def loc(boxes):
        iou = box_iou(boxes[:, None, :], gt)
        return 100.0 * np.mean(np.any((iou > 0.5) | np.isnan(iou), axis=1))

    print(f"{len(images)} eval images at {args.size}, threshold {threshold:.2f}; "
          f"Keras GT-known Loc {loc(keras_boxes):.2f}")
    # The device-side numpy box rule against OpenCV on the same (Keras) maps.
    numpy_boxes = np.stack([box_from_map(m, threshold) for m in keras_maps]) * scale
    same = np.mean(np.all(numpy_boxes == keras_boxes, axis=1)) * 100
    print(f"box_from_map (numpy) vs OpenCV on the Keras maps: identical boxes {same:.1f}%")
    keras_masks = [map_to_mask(m, threshold, args.size, args.size, image, refinement)
                   for m, image in zip(keras_maps, images)]

    def device_mask(m, image):
        if refinement == "none":
            return mask_from_map(m, threshold, args.size, args.size)
        return edge_refined_mask(image, m, refinement, threshold)

    def mask_iou(maps):
        ious = []
        for m, want, image in zip(maps, keras_masks, images):
            got = device_mask(m, image)
            union = (got | want).sum()
            ious.append((got & want).sum() / union if union else 1.0)
        return 100.0 * float(np.mean(ious))

    print(f"{'model':8s} {'MiB':>6s} {'max |map diff|':>15s} {'IoU>=0.5 vs Keras':>18s} "
          f"{'identical':>9s} {'mask IoU':>9s} {'GT-known Loc':>12s} {'masks/s':>8s}")
    for quantize in tflite.QUANTIZATIONS + ("onnx",):
        if quantize == "onnx":
            try:
                from c2am_tf.deploy import onnx_export
            except ImportError:
                continue
            content = onnx_export.convert(model, args.size)
        else:
            calibration = (tflite.calibration_images(train, args.size, args.calibration_steps)
                           if quantize == "int8" else None)
            content = tflite.convert(model, args.size, quantize, calibration, args.calibration_steps)
        detector = ForegroundDetector(content, num_threads=2)
        start = time.perf_counter()
        maps = np.stack([detector.map(image) for image in images])
        for m, image in zip(maps, images):  # the whole device-side mask: interpreter + resize/refine + cut
            device_mask(m, image)
        rate = len(images) / (time.perf_counter() - start)
        boxes = np.stack([box_from_map(m, threshold) for m in maps]) * scale
        iou = box_iou(boxes, keras_boxes)
        agree = np.mean((iou >= 0.5) | np.isnan(iou)) * 100
        identical = np.mean(np.all(boxes == keras_boxes, axis=1)) * 100
        print(f"{quantize:8s} {len(content) / 2**20:6.2f} {np.abs(maps - keras_maps).max():15.2e} "
              f"{agree:17.1f}% {identical:8.1f}% {mask_iou(maps):8.1f}% {loc(boxes):12.2f} {rate:8.1f}")


if __name__ == "__main__":
    main()
