"""Refine multi-class CAMs with background cues (paper section 3.5) and measure mIoU.

    python train/refine.py --cams DIR --bg-cues MODEL_OR_DIR --images DIR --out DIR \\
        [--masks DIR] [--c2am C2AM.keras] [--num-classes 20]
    python train/refine.py --cams DIR --bg-cues MODEL_OR_DIR --dataset pets --data-dir ROOT --out DIR

``--cams``: one CAM file per image (c2am_tf.wsss.cam: PSA/SEAM/PuzzleCAM/AdvCAM ``.npy`` dicts
with ``keys`` and ``hr_cam``, or our ``.npz``). ``--bg-cues``: a background-cue model
(train/fit_bgcues.py), a C2AM model (its raw 1 - P is the cue), or a folder of ``NAME.npy``
background maps in [0, 1]; or a mask model (train/fit_masks.py), whose cue is one minus its
refined mask at the image's size. Writes ``OUT/NAME.png``: palette PNGs with VOC colours
(0 background, k = class k - 1). With ground truth (``--masks`` index PNGs with 255 =
ignore, or ``--dataset``), prints per-class IoU and mIoU of the initial CAMs with the
best constant background threshold (swept on the ground truth), of the refinement with C2AM's raw 1 - P
(``--c2am``, or when ``--bg-cues`` is a C2AM model) and of the refinement with ``--bg-cues``.

``--bg-mask`` replaces the soft cue by the model's own binary mask at its stored threshold (the
model's one threshold policy, no knob): foreground pixels take the CAMs' class, the rest is
background. ``--bg-power G`` raises the cue to the power G before the argmax (default 1, the paper's
rule); ``--bg-power auto`` chooses G from the images without labels (``c2am_tf.wsss.refine.PowerCalibration``:
at the cue's own boundary its score equals the median CAM score of the pixels it calls foreground), in
a first pass over every image that keeps the cues in memory (uint8, the cue model's size). A soft cue such as 1 - P is on another scale than max-normalized CAMs, which
are often low on most of the object (the best constant background is typically
0.1-0.3): the evaluation therefore also sweeps G, as it sweeps the constant
background of the initial CAMs, and reports the best of both.
"""

import argparse
import io
import os
import sys

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from c2am_tf.wsss.bgcues import background_map, is_c2am
from c2am_tf.wsss.cam import cam_files, read_cams
from c2am_tf.data.segmentation import (SEGMENTATION_DATASETS, VOC_CLASSES, read_label_png,
                                       segmentation_dataset, voc_palette)
from c2am_tf.utils.image_io import UnreadableImageError, load_image
from c2am_tf.maps.foreground import foreground_mask
from c2am_tf.utils.files import OutputNames, list_images, write_atomically
from c2am_tf.presets import load_model
from c2am_tf.evaluation.metrics import ConfusionMatrix
from c2am_tf.wsss.refine import DEFAULT_BG_THRESHOLDS, DEFAULT_CUE_THRESHOLD, PowerCalibration, refined_labels_batch
from c2am_tf.cli.common import command_parser, output_folder
from c2am_tf.maps.geometry import EVAL_CROP

BG_POWERS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)



def build_parser(prog=None):
    """This command's flags (the README's commands are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--cams", required=True, help="folder of CAM files")
    p.add_argument("--bg-cues", required=True,
                   help="mask model .keras (fit-masks), background-cue .keras, C2AM .keras, or folder of NAME.npy")
    p.add_argument("--out", required=True, type=output_folder, help="folder for the refined label PNGs")
    p.add_argument("--images", help="folder of images (searched recursively)")
    p.add_argument("--masks", help="ground-truth index PNGs NAME.png (255 = ignore) for --images")
    p.add_argument("--dataset", choices=SEGMENTATION_DATASETS, help="images and ground truth from a dataset")
    p.add_argument("--data-dir", help="the dataset's root folder")
    p.add_argument("--split", help="dataset split (default: train for voc, trainval for pets)")
    p.add_argument("--c2am", help="a C2AM model: also report the refinement with its raw 1 - P")
    p.add_argument("--num-classes", type=int, help="foreground classes (default: from the dataset, else 20)")
    p.add_argument("--size", type=int, default=EVAL_CROP, help="input size of the cue models")
    p.add_argument("--bg-power", type=_power, default=1.0,
                   help="cue ** G before the argmax (written PNGs); 'auto': G from the images, without labels")
    p.add_argument("--bg-mask", action="store_true",
                   help="cue = the model's own binary mask at its stored threshold (1 background, 0 foreground): "
                        "foreground pixels take the CAMs' class, the rest is background; no power")
    return p


def _power(text):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'auto': {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def parse_args(argv=None, prog=None):
    """Command-line flags."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    if bool(args.images) == bool(args.dataset):
        p.error("give either --images DIR or --dataset with --data-dir")
    if args.dataset and not args.data_dir:
        p.error("--dataset needs --data-dir")
    if args.bg_power == "auto" and args.bg_mask:
        p.error("--bg-power auto calibrates a soft cue; --bg-mask has no power")
    return args


def examples(args):
    """(class names or None, iterator of (image path, image uint8, ground truth or None))."""
    if args.dataset:
        source, classes = segmentation_dataset(args.dataset, args.data_dir, args.split)
        items = ((ex["path"].numpy().decode(), ex["image"].numpy(), ex["mask"].numpy()) for ex in source)
        return classes, items

    def from_folder():
        for path in list_images(args.images):
            name = os.path.splitext(os.path.basename(path))[0]
            mask_path = os.path.join(args.masks, name + ".png") if args.masks else None
            gt = read_label_png(mask_path) if mask_path and os.path.exists(mask_path) else None
            try:
                image = load_image(path, exif=False, downscale=False)  # aligned with its mask
            except UnreadableImageError as err:
                print(f"skipping {err}", file=sys.stderr)
                continue
            yield path, image, gt
    return None, from_folder()


class CueSource:
    """Background maps from a model (.keras: mask model, cue model or C2AM) or a folder of NAME.npy maps.
    ``binary``: the model's own mask at its stored threshold instead (1 background, 0 foreground)."""

    def __init__(self, where, size, binary=False):
        self.size = size
        if os.path.isdir(where):
            self.model, self.folder = None, where
        else:
            self.model, self.folder = load_model(where, require_c2am=False), None
        self.binary = binary
        if binary and (self.model is None or not hasattr(self.model, "threshold")):
            raise ValueError(f"--bg-mask needs a mask model or a C2AM model (a stored threshold), got {where}")

    @property
    def cue_threshold(self):
        """The threshold that makes the cue's own foreground: the model's stored one, else 0.5."""
        if self.model is not None and hasattr(self.model, "threshold"):
            return float(np.asarray(self.model.threshold))
        return DEFAULT_CUE_THRESHOLD

    @property
    def is_c2am(self):
        """True when the cue is C2AM's raw 1 - P."""
        return self.model is not None and is_c2am(self.model)

    def __call__(self, name, image):
        if self.model is not None:
            cue = background_map(self.model, image, self.size)
            if not self.binary:
                return cue
            return (~foreground_mask(np.clip(1.0 - cue, 0.0, 1.0), self.cue_threshold)).astype(np.float32)
        path = os.path.join(self.folder, name + ".npy")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no background map {path}")
        return np.load(path).astype(np.float32)


def _resized(cams, shape):
    if cams.shape[1:] == tuple(shape):
        return cams
    return np.moveaxis(tf.image.resize(np.moveaxis(cams, 0, -1), shape, method="bilinear").numpy(), -1, 0)


class Scores:
    """A confusion matrix of the labels and one of their class-agnostic foreground (label > 0)."""

    def __init__(self, num_classes):
        self.labels, self.foreground = ConfusionMatrix(num_classes + 1), ConfusionMatrix(2)

    def update(self, labels, gt):
        """Adds one image's labels against its ground truth (255 = ignore)."""
        self.labels.update(labels, gt)
        self.foreground.update((labels > 0).astype(np.uint8), np.where(gt == 255, 255, gt > 0).astype(np.uint8))

    def result(self):
        """The labels' result dict."""
        return self.labels.result()


def report(title, scores, names):
    """Prints the mIoU, the foreground IoU and the per-class IoU; returns the mIoU."""
    result = scores.result()
    fg = scores.foreground.result()["iou"][1]
    print(f"{title}: mIoU {result['miou']:.2f} (foreground IoU {fg:.1f})")
    print("    " + ", ".join(f"{n} {v:.1f}" for n, v in zip(names, result["iou"])))
    return result["miou"]


def calibrated_power(args, cues, cams_by_name):
    """(G, the cues as uint8 by image name): ``PowerCalibration`` over every image, labels unused."""
    calibration = PowerCalibration(cues.cue_threshold)
    cached = {}
    _, items = examples(args)
    for path, image, _ in tqdm(items, desc="calibrate the cue power", unit="img"):
        name = os.path.splitext(os.path.basename(path))[0]
        if name not in cams_by_name:
            continue
        cue = np.clip(cues(name, image), 0.0, 1.0)
        cached[name] = np.round(cue * 255.0).astype(np.uint8)
        calibration.update(cached[name] / 255.0, _resized(read_cams(cams_by_name[name])[1], image.shape[:2]))
    power = round(calibration.power(), 2)
    print(f"cue power {power:g} from {calibration.images} images, no labels: median CAM {calibration.median_cam():.3f} "
          f"in the cue's foreground (threshold {cues.cue_threshold:.2f}), boundary cue "
          f"{np.median(calibration.boundaries):.3f}")
    return power, cached


def main(argv=None, prog=None):
    """Entry point."""
    args = parse_args(argv, prog)
    classes, items = examples(args)
    num_classes = len(classes) if classes else (args.num_classes or len(VOC_CLASSES))
    names = ["background"] + (list(classes) if classes else
                              list(VOC_CLASSES) if num_classes == len(VOC_CLASSES) else
                              [f"class{k}" for k in range(num_classes)])
    cams_by_name = cam_files(args.cams)
    cues = CueSource(args.bg_cues, args.size, binary=args.bg_mask)
    cached, how = {}, ""
    if args.bg_power == "auto":
        how = ", calibrated without labels"
        args.bg_power, cached = calibrated_power(args, cues, cams_by_name)
    raw = CueSource(args.c2am, args.size) if args.c2am else (cues if cues.is_c2am and not args.bg_mask else None)
    matrices = {t: Scores(num_classes) for t in DEFAULT_BG_THRESHOLDS}
    powers = sorted(set(BG_POWERS) | {args.bg_power})
    refined_cm = {g: Scores(num_classes) for g in powers}
    # When --bg-cues is the C2AM model itself, its refinement is the raw one: score it once.
    raw_cm = None if raw is None else refined_cm if raw is cues else {g: Scores(num_classes) for g in powers}
    try:  # label PNGs are keyed by image name; the dataset, its masks and the CAMs stay untouched
        outputs = OutputNames(None, args.out, ".png", layout="stem",
                              root=[args.data_dir, args.images, args.masks, args.cams])
    except ValueError as err:
        sys.exit(f"error: --out: {err}")
    os.makedirs(args.out, exist_ok=True)
    palette = voc_palette().ravel().tolist()
    from PIL import Image

    done = with_gt = missing = 0
    for path, image, gt in tqdm(items, desc="refine", unit="img"):
        name = os.path.splitext(os.path.basename(path))[0]
        if name not in cams_by_name:
            missing += 1
            continue
        keys, cams = read_cams(cams_by_name[name])
        cams = _resized(cams, image.shape[:2])
        # With ground truth, every power of the cue in one batched call; the written map is one of them.
        wanted = powers if gt is not None else [args.bg_power]
        cue = cached.pop(name) / 255.0 if name in cached else np.clip(cues(name, image), 0.0, 1.0)
        by_power = dict(zip(wanted, refined_labels_batch([cue ** g for g in wanted], keys, cams, num_classes)))
        picture = Image.fromarray(by_power[args.bg_power], mode="P")
        picture.putpalette(palette)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        write_atomically(outputs(path), buffer.getvalue())
        done += 1
        if gt is None:
            continue
        with_gt += 1
        for g, labels in by_power.items():
            refined_cm[g].update(labels, gt)
        if raw_cm is not None and raw is not cues:
            raw_cue = np.clip(raw(name, image), 0.0, 1.0)
            for g, labels in zip(powers, refined_labels_batch([raw_cue ** g for g in powers], keys, cams,
                                                              num_classes)):
                raw_cm[g].update(labels, gt)
        constants = [np.full((1, 1), t, np.float32) for t in matrices]
        for matrix, labels in zip(matrices.values(), refined_labels_batch(constants, keys, cams, num_classes)):
            matrix.update(labels, gt)
    if missing:
        print(f"warning: {missing} images have no CAM file in {args.cams}", file=sys.stderr)
    print(f"{done} label maps -> {args.out}")
    if not with_gt:
        return
    best_t = max(matrices, key=lambda t: matrices[t].result()["miou"])
    print(f"{with_gt} images with ground truth; {num_classes} classes + background")
    report(f"initial CAMs, best constant background {best_t:.2f}", matrices[best_t], names)
    sources = ([("C2AM's raw 1 - P", raw_cm)] if raw_cm is not None else []) + (
        [(args.bg_cues + (" (its mask)" if args.bg_mask else ""), refined_cm)] if raw is not cues else [])
    for title, by_power in sources:
        report(f"refined with {title} (power {args.bg_power:g}{how if by_power is refined_cm else ''})",
               by_power[args.bg_power], names)
        best_g = max(powers, key=lambda g: by_power[g].result()["miou"])
        report(f"refined with {title}, best power {best_g:g}", by_power[best_g], names)

