"""Pseudo boxes for a whole dataset in one local process: the workflow behind ``c2am-tf extract-boxes``
without ``--runner`` (its Apache Beam twin is ``c2am_tf.inference.beam_boxes``).

Each image is resized whole to a square, so a box can reach every part of the image (the authors'
extraction center-cropped 448 of 480 and could not). Records stream into ``OUT.partial.jsonl`` as they
come (``c2am_tf.maps.boxes_json.BoxesWriter``): a killed run started again skips the images already done.
"""

import os

import tensorflow as tf
from tqdm import tqdm

from c2am_tf import data
from c2am_tf.data.transforms import eval_image
from c2am_tf.inference.beam_boxes import extract_boxes_beam, require_beam
from c2am_tf.inference.maps import localization_maps
from c2am_tf.inference.postprocess import map_to_box
from c2am_tf.maps.boxes_json import FORMAT, BoxesWriter, box_record, write_coco
from c2am_tf.maps.geometry import scale_box
from c2am_tf.maps.viz import overlay, write_png
from c2am_tf.models.settings import model_box_band
from c2am_tf.presets import load, load_classifier, model_label, model_sha256
from c2am_tf.utils.errors import ConfigError, as_input_error
from c2am_tf.utils.files import OutputNames, make_folder, write_json_atomically


def extraction_header(model_path, preset, threshold, size, dataset, split, band=0.0):
    """The header of a dataset's boxes file (local and Beam alike): the model (its label and sha256), the
    threshold, the square size, the data, and the box band where there is one."""
    header = {"model": model_label(model_path, preset), "model_sha256": model_sha256(model_path, preset),
              "threshold": threshold, "size": size, "dataset": dataset, "split": split}
    if band:
        header["box_band"] = band
    return header


def extract_boxes(model, source, out, header, threshold, size, band=0.0, batch_size=16, classifier=None,
                  classifier_size=None, cam_weight=0.0, overlays=None, overlay_root=None, overwrite=False,
                  progress=False):
    """Boxes of every image of ``source`` (a tf.data source of {'image', 'path'}) at ``threshold``, written
    to ``out`` (``c2am_tf.boxes/v1`` with ``header``, streamed); returns every record, those of an earlier run
    of the same header included. ``classifier`` (and ``cam_weight``): as ``localization_maps``. ``overlays``:
    a folder for heatmap PNGs, named by each path below ``overlay_root``. A finished ``out`` of another header
    raises ValueError naming the difference, unless ``overwrite``. ``progress``: a bar on stderr."""
    writer = BoxesWriter(out, header, replace=overwrite)
    done = writer.done
    paths = tf.constant(list(done) or [""])
    source = source.filter(lambda ex: tf.logical_not(tf.reduce_any(tf.equal(ex["path"], paths))))

    def prepare(ex):
        shape = tf.shape(ex["image"])
        return eval_image(ex["image"], size, size), ex["path"], shape[1], shape[0]

    ds = source.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
    pictures = None
    if overlays:
        pictures = OutputNames(None, overlays, ".png", root=overlay_root or os.getcwd(), overwrite=overwrite)
    with writer, tqdm(desc="boxes", unit="img", initial=len(done), disable=not progress) as bar:
        for images, batch_paths, widths, heights in ds:
            maps, top = localization_maps(model, images, classifier, classifier_size, cam_weight)
            for i, score_map in enumerate(maps):
                box, fraction = map_to_box(score_map, threshold, size, size, band)
                w, h = int(widths[i]), int(heights[i])
                path = batch_paths[i].numpy().decode()
                writer.add(box_record(path, w, h, scale_box(box, (size, size), (w, h)), fraction,
                                      top5=None if top is None else top[i]))
                if pictures is not None:
                    write_png(pictures(path), overlay(images[i].numpy(), score_map, [box]))
            bar.update(len(maps))
    return list(done.values())


def write_psol(path, records):
    """The records in PSOL's format: {image path: [x, y, w, h]}, normalized by the image's size."""
    psol = {e["path"]: [e["box"][0] / e["width"], e["box"][1] / e["height"],
                        (e["box"][2] - e["box"][0]) / e["width"], (e["box"][3] - e["box"][1]) / e["height"]]
            for e in records}
    write_json_atomically(path, psol)


def extract_dataset(model, model_path, preset, dataset, split, data_dir, out, threshold=None, size=448, box_band=None,
                    batch_size=16, classifier=None, classifier_size=None, cam_weight=0.0, overlays=None,
                    overwrite=False, psol_out=None, coco=None):
    """``extract-boxes``'s local workflow: every box of a dataset's ``split`` written to ``out`` (resumable), and
    where asked the PSOL file ``psol_out`` and the COCO file ``coco``. ``model`` was loaded from ``model_path`` or
    the preset ``preset`` (named in the header, so a resumed run never mixes models); ``threshold`` and
    ``box_band`` default to the model's; ``classifier``: a name or file (``load_classifier``). Returns (the
    records, the threshold). Data that cannot be read, or a finished ``out`` of another run, is an ``InputError``."""
    out_dir = os.path.dirname(os.path.abspath(out))
    make_folder(out_dir, out)  # before any data is read: a bad out fails at once
    if not os.access(out_dir, os.W_OK):
        raise ConfigError("out", f"cannot write to {out_dir}")
    band = model_box_band(model, box_band)
    threshold = threshold if threshold is not None else float(model.threshold.numpy())
    header = extraction_header(model_path, preset, threshold, size, dataset, split, band)
    with as_input_error():  # an annotation file, a finished out of another run: one line
        loaded, classifier_size = load_classifier(classifier, classifier_size)
        if loaded is not None:  # a resumed run must not mix boxes of another classifier or weight
            header.update(classifier=classifier, classifier_size=classifier_size, cam_weight=float(cam_weight))
        source = data.make_source(dataset, split, data_dir)
        records = extract_boxes(model, source, out, header, threshold, size, band, batch_size, loaded,
                                classifier_size, cam_weight, overlays, data_dir, overwrite, progress=True)
    if psol_out:
        write_psol(psol_out, records)
    if coco:
        write_coco(coco, records, data_dir if data_dir and os.path.isdir(data_dir) else None)
    return records, threshold


def extract_dataset_beam(dataset, split, data_dir, out, pipeline_args, model_path=None, preset=None, saved_model=None,
                         threshold=None, size=448, box_band=None, num_shards=16, batch_size=16):
    """``extract-boxes --runner``'s workflow: the boxes of a dataset's ``split`` in ``num_shards`` parts
    ``out-*-of-N.jsonl`` by Apache Beam (``beam_boxes.extract_boxes_beam``; ``pipeline_args``: Beam's options), from
    the model file ``model_path``, the preset ``preset`` or the exported ``saved_model`` (which needs
    ``threshold``). Returns the pipeline's summary. A missing Beam or unreadable data is an ``InputError``."""
    with as_input_error(ImportError, OSError, ValueError):  # no Beam, unreadable data: one line
        require_beam()
        paths, unannotated = data.source_files(dataset, split, data_dir)
        if saved_model:
            band = model_box_band(None, box_band)
            header = {"format": FORMAT, "model": saved_model, "model_sha256": None, "threshold": threshold,
                      "size": size, "dataset": dataset, "split": split}
            if band:
                header["box_band"] = band
        else:
            model = load(model_path, preset)  # here only for its threshold and a clear error before the job
            band = model_box_band(model, box_band)
            threshold = threshold if threshold is not None else float(model.threshold.numpy())
            header = {"format": FORMAT, **extraction_header(model_path, preset, threshold, size, dataset, split, band)}
        return extract_boxes_beam(paths, out, header, threshold, size, unannotated, num_shards, model_path, preset,
                                  saved_model, batch_size, pipeline_args, band)
