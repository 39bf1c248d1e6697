"""Pseudo boxes for millions of images with Apache Beam (the optional extra ``beam``).

``c2am-tf extract-boxes --runner DirectRunner|DataflowRunner|FlinkRunner|SparkRunner ...`` runs
``extract_boxes_beam``: the image list is cut into ``num_shards`` fixed parts, each image
is read by the project's one reader and resized whole (as the local extractor does),
Beam's ``RunInference`` with a TensorFlow model handler computes the maps (a ``.keras``
model, a preset, or an exported SavedModel's ``cam`` signature), and each part is written
as one JSON-lines file ``PREFIX-00003-of-00016.jsonl``:

    {"header": {"format": "c2am_tf.boxes/v1", "model": ..., "threshold": ..., "shard": 3, "of": 16}}
    {"path": ..., "width": W, "height": H, "box": [x0, y0, x1, y1], "foreground_fraction": ...}
    ...

the same records as ``extract-boxes`` without ``--runner`` (``c2am_tf.maps.boxes_json``), which
``read_boxes`` reads back whole. Unreadable images are counted (Beam counter
``c2am_tf/unreadable_images``) and left out, never fatal. A part whose file exists is
not computed again, so a failed or stopped job started again does only what is missing.
Files are written to a temporary name and renamed, through Beam's ``FileSystems``
(local paths, ``gs://``, ``s3://``, ...).
"""

import json
import logging
import uuid

import numpy as np

log = logging.getLogger("c2am_tf.beam")

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")
COUNTER_NAMESPACE = "c2am_tf"


def require_beam():
    """Apache Beam's version, or ImportError saying how to install it."""
    try:
        import apache_beam  # the optional apache-beam extra
    except ImportError:
        raise ImportError("--runner needs Apache Beam: pip install -r requirements-beam.txt "
                          "(or pip install 'c2am-tf[beam]')") from None
    return apache_beam.__version__


def shard_file(prefix, shard, num_shards):
    """The file of part ``shard`` of ``num_shards``."""
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}.jsonl"


def pending_shards(prefix, num_shards):
    """Parts whose file does not exist yet. ValueError if parts of another ``num_shards`` exist
    (their images would be split differently: the two runs cannot be mixed)."""
    from apache_beam.io.filesystems import FileSystems  # apache-beam (optional extra)

    others = [m.path for r in FileSystems.match([f"{prefix}-*-of-*.jsonl"]) for m in r.metadata_list
              if not m.path.endswith(f"-of-{num_shards:05d}.jsonl")]
    if others:
        raise ValueError(f"{others[0]} belongs to a run with another number of shards; "
                         f"use that number, or another --out prefix")
    return [k for k in range(num_shards) if not FileSystems.exists(shard_file(prefix, k, num_shards))]


class _SavedModelMaps:
    """An exported SavedModel's ``cam`` signature as a callable: images -> (B, h, w, 1) maps."""

    def __init__(self, path):
        import tensorflow as tf  # defers TensorFlow: the Beam launcher needs none

        self._cam = tf.saved_model.load(path).signatures["cam"]

    def __call__(self, images, **_):
        import tensorflow as tf  # defers TensorFlow (as above)

        return self._cam(images=tf.cast(images, tf.uint8))["cam"][..., None]


def model_handler(model=None, preset=None, saved_model=None, batch_size=16):
    """A Beam ``TFModelHandlerTensor`` that loads a C2AM ``.keras`` model, a preset or a SavedModel
    (exactly one) once per worker process and maps batches of images to foreground-high maps."""
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerTensor  # apache-beam (optional extra)

    if sum(x is not None for x in (model, preset, saved_model)) != 1:
        raise ValueError("give exactly one of model, preset, saved_model")

    class C2AMHandler(TFModelHandlerTensor):
        def load_model(self):
            if saved_model is not None:
                return _SavedModelMaps(saved_model)
            import tensorflow as tf  # a Beam worker: imported where it runs

            from c2am_tf.presets import load

            loaded = load(model, preset)
            # compiled once per batch shape, as Keras's predict does; an eager call is several times slower
            forward = tf.function(lambda images: loaded(tf.cast(images, tf.float32), training=False),
                                  reduce_retracing=True)
            return lambda images, **_: forward(images)

    uri = model or saved_model or f"preset:{preset}"
    # fixed batches: Beam's adaptive batching starts at 1 image and stays small on short bundles
    return C2AMHandler(uri, min_batch_size=batch_size, max_batch_size=batch_size, inference_fn=_maps)


def _maps(model, batch, inference_args, model_id=None):
    """Beam's default stacks with tf.stack, which converts a list of numpy images element by
    element, a large part of a batch's time on a CPU; np.stack is one copy."""
    from apache_beam.ml.inference.base import PredictionResult  # apache-beam (optional extra)

    maps = np.asarray(model(np.stack(batch)))
    return [PredictionResult(example, m, model_id) for example, m in zip(batch, maps)]


def _read(item, size, unannotated):
    """(key, image at size x size) for one (shard, path), or nothing for an unreadable file."""
    import apache_beam as beam  # a Beam worker: imported where it runs
    import tensorflow as tf

    from c2am_tf.data.transforms import eval_image
    from c2am_tf.utils.image_io import load_image

    shard, path = item
    try:
        image = load_image(path, exif=unannotated, downscale=unannotated)
    except Exception as err:  # any undecodable file: counted, never fatal
        beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "unreadable_images").inc()
        log.warning("skipping unreadable image %s: %s", path, err)
        return
    height, width = image.shape[:2]
    # numpy uint8 between stages: what Beam encodes is 4x smaller than float, and no tf.Tensor pickling
    yield (shard, path, width, height), eval_image(tf.constant(image), size, size).numpy()


def _record(keyed, threshold, size, band=0.0):
    """(shard, box record) of one image's map."""
    from c2am_tf.inference.postprocess import map_to_box  # a Beam worker: imported where it runs
    from c2am_tf.maps.boxes_json import box_record
    from c2am_tf.maps.geometry import scale_box

    (shard, path, width, height), result = keyed
    score_map = np.asarray(result.inference)[..., 0]
    box, fraction = map_to_box(score_map, threshold, size, size, band)
    return shard, box_record(path, width, height, scale_box(box, (size, size), (width, height)), fraction)


def _write_shard(group, prefix, num_shards, header):
    """Writes one part (header line + its records, sorted by path) atomically; returns its record count."""
    from apache_beam.io.filesystems import FileSystems  # apache-beam (optional extra)

    shard, records = group
    records = sorted((r for r in records if r is not None), key=lambda r: r["path"])
    lines = [json.dumps({"header": {**header, "shard": shard, "of": num_shards}})]
    lines += [json.dumps(r) for r in records]
    target = shard_file(prefix, shard, num_shards)
    tmp = f"{target}.{uuid.uuid4().hex}.tmp"  # unpredictable: a planted link is never the name written
    with FileSystems.create(tmp) as f:
        f.write(("\n".join(lines) + "\n").encode())
    FileSystems.rename([tmp], [target])
    return len(records)


def extract_boxes_beam(paths, prefix, header, threshold, size=448, unannotated=False, num_shards=16,
                       model=None, preset=None, saved_model=None, batch_size=16, pipeline_args=(), band=0.0):
    """Runs the Beam pipeline over ``paths`` (see the module docstring); returns
    {"shards_written", "shards_skipped", "boxes", "unreadable"}.

    ``pipeline_args``: Beam's own options (``--runner``, ``--project``, ``--temp_location``,
    ``--direct_num_workers``, ...). ``header``: what identifies the run in every part's first line.
    ``band``: the box rule's band (``c2am_tf.maps.boxes.best_box_per_threshold``).
    """
    require_beam()
    import apache_beam as beam  # apache-beam (optional extra)
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    todo = pending_shards(prefix, num_shards)
    paths = sorted(paths)
    work = [(k, p) for k in todo for p in paths[k::num_shards]]
    summary = {"shards_written": len(todo), "shards_skipped": num_shards - len(todo), "boxes": 0, "unreadable": 0}
    if not todo:
        return summary
    handler = KeyedModelHandler(model_handler(model, preset, saved_model, batch_size))
    pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
    images = (pipeline
              | "images" >> beam.Create(work, reshuffle=True)
              | "read" >> beam.FlatMap(_read, size, unannotated))
    records = (images
               | "maps" >> RunInference(handler)
               | "boxes" >> beam.Map(_record, threshold, size, band))
    # every part gets a file, also one whose images were all unreadable
    parts = pipeline | "parts" >> beam.Create([(k, None) for k in todo])
    _ = ((records, parts) | beam.Flatten() | beam.GroupByKey()
         | "write" >> beam.Map(_write_shard, prefix, num_shards, header))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(COUNTER_NAMESPACE))["counters"]
    summary["unreadable"] = int(sum(c.committed or c.attempted or 0 for c in counters
                                    if c.key.metric.name == "unreadable_images"))
    summary["boxes"] = len(work) - summary["unreadable"]
    return summary
