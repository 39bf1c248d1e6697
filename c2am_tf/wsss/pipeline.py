"""The WSSS refinement over a dataset, behind ``c2am-tf refine``: every image's CAMs and background cue ->
a label PNG, and with ground truth the confusion matrices of the initial CAMs (each constant background),
of the cue at each power, and of C2AM's raw 1 - P.

The refinement rule itself is ``c2am_tf.wsss.labels`` (one argmax over [cue, CAMs]); this module reads the
images, CAM files and cues, writes the label maps and keeps the scores. See ``c2am_tf.cli.refine`` for the
options (cue powers, ``--bg-mask``).
"""

import io
import os
import sys

import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from c2am_tf.data.segmentation import VOC_CLASSES, read_label_png, segmentation_dataset, voc_palette
from c2am_tf.evaluation.metrics import ConfusionMatrix
from c2am_tf.maps.foreground import foreground_mask
from c2am_tf.presets import load_model
from c2am_tf.utils.errors import ConfigError, InputError
from c2am_tf.utils.files import OutputNames, list_images, make_folder, write_atomically
from c2am_tf.utils.image_io import UnreadableImageError, load_image
from c2am_tf.utils.safe_pickle import load_npy
from c2am_tf.wsss.bgcues import background_map, is_c2am
from c2am_tf.wsss.cam import cam_files, check_cams, read_cams
from c2am_tf.wsss.labels import DEFAULT_BG_THRESHOLDS, DEFAULT_CUE_THRESHOLD, PowerCalibration, refined_labels_batch

BG_POWERS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def examples(dataset=None, data_dir=None, split=None, images=None, masks=None):
    """(class names or None, iterator of (image path, image uint8, ground truth or None)): a segmentation
    ``dataset`` under ``data_dir``, or a folder of ``images`` (searched recursively) with optional ground-truth
    index PNGs ``masks/NAME.png``."""
    if dataset:
        source, classes = segmentation_dataset(dataset, data_dir, split)
        items = ((ex["path"].numpy().decode(), ex["image"].numpy(), ex["mask"].numpy()) for ex in source)
        return classes, items

    def from_folder():
        for path in list_images(images):
            name = os.path.splitext(os.path.basename(path))[0]
            mask_path = os.path.join(masks, name + ".png") if masks else None
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
        return load_npy(path).astype(np.float32)  # bounded, and never a pickle that runs code


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
    """The two lines of one refinement's result: the mIoU and the foreground IoU, then the per-class IoU."""
    result = scores.result()
    fg = scores.foreground.result()["iou"][1]
    return (f"{title}: mIoU {result['miou']:.2f} (foreground IoU {fg:.1f})\n"
            + "    " + ", ".join(f"{n} {v:.1f}" for n, v in zip(names, result["iou"])))


def calibrated_power(items, cues, cams_by_name):
    """(G, the cues as uint8 by image name, a line saying how G was found): ``PowerCalibration`` over every
    image of ``items`` (``examples``), labels unused."""
    calibration = PowerCalibration(cues.cue_threshold)
    cached = {}
    for path, image, _ in tqdm(items, desc="calibrate the cue power", unit="img"):
        name = os.path.splitext(os.path.basename(path))[0]
        if name not in cams_by_name:
            continue
        cue = np.clip(cues(name, image), 0.0, 1.0)
        cached[name] = np.round(cue * 255.0).astype(np.uint8)
        calibration.update(cached[name] / 255.0, _resized(read_cams(cams_by_name[name])[1], image.shape[:2]))
    power = round(calibration.power(), 2)
    said = (f"cue power {power:g} from {calibration.images} images, no labels: median CAM "
            f"{calibration.median_cam():.3f} in the cue's foreground (threshold {cues.cue_threshold:.2f}), "
            f"boundary cue {np.median(calibration.boundaries):.3f}")
    return power, cached, said


class RefinementScores:
    """What ``refine_dataset`` counted: label maps written, images with ground truth, images without a CAM
    file, CAM files resized to their image, and the scores of the initial CAMs (by constant background), of the cue and of C2AM's raw 1 - P
    (by power; ``raw`` None when not scored, the cue's own scores when the cue is 1 - P)."""

    def __init__(self, num_classes, powers, raw_is_cue, with_raw):
        self.written = self.with_gt = self.missing = 0
        self.resized = []  # CAM files not at their image's size ("file WxH for image WxH")
        self.initial = {t: Scores(num_classes) for t in DEFAULT_BG_THRESHOLDS}
        self.powers = powers
        self.cue = {g: Scores(num_classes) for g in powers}
        self.raw = None if not with_raw else self.cue if raw_is_cue else {g: Scores(num_classes) for g in powers}

    def lines(self, names, cue_title, power, how=""):
        """The report: the initial CAMs at their best constant background, then each cue at ``power`` and
        at its best power."""
        best_t = max(self.initial, key=lambda t: self.initial[t].result()["miou"])
        out = [f"{self.with_gt} images with ground truth; {len(names) - 1} classes + background",
               report(f"initial CAMs, best constant background {best_t:.2f}", self.initial[best_t], names)]
        sources = ([("C2AM's raw 1 - P", self.raw)] if self.raw is not None else []) + (
            [(cue_title, self.cue)] if self.raw is not self.cue else [])
        for title, by_power in sources:
            out.append(report(f"refined with {title} (power {power:g}{how if by_power is self.cue else ''})",
                              by_power[power], names))
            best_g = max(self.powers, key=lambda g: by_power[g].result()["miou"])
            out.append(report(f"refined with {title}, best power {best_g:g}", by_power[best_g], names))
        return out


def check_ground_truth(gt, image, path, num_classes):
    """``InputError`` naming the image when its ground-truth labels are not at its size, or hold a value that
    is no class (0..``num_classes``, 255 ignored): a confusion matrix would fail on it, or count it wrongly."""
    if gt.shape != image.shape[:2]:
        raise InputError(f"{path}: its ground-truth mask is {gt.shape[1]}x{gt.shape[0]}, the image "
                         f"{image.shape[1]}x{image.shape[0]}; masks are the labels of the image's own pixels")
    values = np.unique(gt)
    wrong = values[(values > num_classes) & (values != 255)]
    if wrong.size:
        raise InputError(f"{path}: its ground-truth mask holds labels {wrong.tolist()[:10]}, not classes of 0.."
                         f"{num_classes} (0 background) or 255 (ignored); check --num-classes")


def refine_dataset(items, cams_by_name, cues, outputs, num_classes, power=1.0, raw=None, cached=None):
    """Refines every image of ``items`` (``examples``) that has a CAM file in ``cams_by_name`` with its
    ``cues`` (a ``CueSource``) raised to ``power``, and writes the label map as a palette PNG at
    ``outputs(path)``; returns the ``RefinementScores``. With ground truth every power of ``BG_POWERS`` is
    scored in one batched call, and ``raw`` (a ``CueSource`` of C2AM's 1 - P, or ``cues`` itself) too.
    ``cached``: cues as uint8 by image name (from ``calibrated_power``), used once each."""

    cached = {} if cached is None else cached
    powers = sorted(set(BG_POWERS) | {power})
    scores = RefinementScores(num_classes, powers, raw is cues, raw is not None)
    palette = voc_palette().ravel().tolist()
    for path, image, gt in tqdm(items, desc="refine", unit="img"):
        name = os.path.splitext(os.path.basename(path))[0]
        if name not in cams_by_name:
            scores.missing += 1
            continue
        keys, cams = read_cams(cams_by_name[name])
        check_cams(cams_by_name[name], keys, cams, num_classes)
        if cams.shape[1:] != image.shape[:2]:  # resized, and counted: a CAM of another image would be too
            scores.resized.append(f"{cams_by_name[name]} {cams.shape[2]}x{cams.shape[1]} for {path} "
                                  f"{image.shape[1]}x{image.shape[0]}")
        cams = _resized(cams, image.shape[:2])
        if gt is not None:
            check_ground_truth(gt, image, path, num_classes)
        # With ground truth, every power of the cue in one batched call; the written map is one of them.
        wanted = powers if gt is not None else [power]
        cue = cached.pop(name) / 255.0 if name in cached else np.clip(cues(name, image), 0.0, 1.0)
        by_power = dict(zip(wanted, refined_labels_batch([cue ** g for g in wanted], keys, cams, num_classes)))
        picture = Image.fromarray(by_power[power], mode="P")
        picture.putpalette(palette)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        write_atomically(outputs(path), buffer.getvalue())
        scores.written += 1
        if gt is None:
            continue
        scores.with_gt += 1
        for g, labels in by_power.items():
            scores.cue[g].update(labels, gt)
        if scores.raw is not None and raw is not cues:
            raw_cue = np.clip(raw(name, image), 0.0, 1.0)
            for g, labels in zip(powers, refined_labels_batch([raw_cue ** g for g in powers], keys, cams,
                                                              num_classes)):
                scores.raw[g].update(labels, gt)
        constants = [np.full((1, 1), t, np.float32) for t in scores.initial]
        for matrix, labels in zip(scores.initial.values(), refined_labels_batch(constants, keys, cams, num_classes)):
            matrix.update(labels, gt)
    return scores


def refine_folder(cams, bg_cues, out, images=None, masks=None, dataset=None, data_dir=None, split=None, c2am=None,
                  num_classes=None, size=448, bg_power=1.0, bg_mask=False, overwrite=False):
    """``refine``'s workflow: the CAM files of ``cams`` refined by the background cues of ``bg_cues`` (a model or a
    folder of cue files; ``bg_mask``: its binary mask) into label PNGs in ``out`` (never over an input or a file
    of the user's), for the images of a ``dataset`` or of the folder ``images`` (``masks``: their ground truth).
    ``bg_power`` "auto" calibrates the cue's power without labels; ``c2am``: a C2AM model whose raw 1 - P is
    scored beside. Returns {"scores" (``RefinementScores``), "names" (class names, background first), "power",
    "how" (how the power was chosen), "calibration" (the calibration's line, or None)}."""
    where = dict(dataset=dataset, data_dir=data_dir, split=split, images=images, masks=masks)
    classes, items = examples(**where)
    num_classes = len(classes) if classes else (num_classes or len(VOC_CLASSES))
    names = ["background"] + (list(classes) if classes else
                              list(VOC_CLASSES) if num_classes == len(VOC_CLASSES) else
                              [f"class{k}" for k in range(num_classes)])
    cams_by_name = cam_files(cams)
    cues = CueSource(bg_cues, size, binary=bg_mask)
    cached, how, said = {}, "", None
    if bg_power == "auto":
        how = ", calibrated without labels"
        bg_power, cached, said = calibrated_power(examples(**where)[1], cues, cams_by_name)
    # When bg_cues is the C2AM model itself, its refinement is the raw one: scored once.
    raw = CueSource(c2am, size) if c2am else (cues if cues.is_c2am and not bg_mask else None)
    try:  # label PNGs are keyed by image name; the dataset, its masks and the CAMs stay untouched
        outputs = OutputNames(None, out, ".png", layout="stem", root=[data_dir, images, masks, cams],
                              overwrite=overwrite)
    except InputError:
        raise
    except ValueError as err:
        raise ConfigError("out", str(err)) from None
    make_folder(out)
    scores = refine_dataset(items, cams_by_name, cues, outputs, num_classes, bg_power, raw, cached)
    return {"scores": scores, "names": names, "power": bg_power, "how": how, "calibration": said}
