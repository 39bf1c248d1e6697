"""TFRecord shards of any source: a cluster reads a few hundred large files instead of a million small ones.

``write_shards`` decodes every image once with the project's one reader (EXIF, CMYK,
16-bit and corrupt files handled there; unreadable ones were already skipped by the
source), encodes it as JPEG (quality 95) or PNG (lossless) and writes
``part-00000.tfrecord``, ``part-00001.tfrecord``, ... plus ``shards.json`` (counts,
fields, what was written from). ``tfrecord_source`` reads them back as a source like
the others, decoding with TensorFlow's own kernels in parallel: no Python per image.

Layout of one example: ``image`` (encoded bytes), ``boxes`` (flat float list, G x 4,
the same G for the whole set), ``label`` (int64, -1 when none), ``path`` (bytes) and,
when the source has masks, ``mask`` (PNG, values 0/1).
"""

import glob
import json
import logging
import os
import shutil
import tempfile

import tensorflow as tf

from c2am_tf.data.sharding import shard_dataset, take_shard
from c2am_tf.utils.files import make_folder, write_json_atomically

log = logging.getLogger("c2am_tf.data")

INDEX = "shards.json"
FORMAT = "c2am_tf.tfrecord/v1"
ENCODINGS = ("jpeg", "png")


class ShardsExistError(FileExistsError):
    """The output folder already holds TFRecord shards (they are never overwritten silently)."""


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _encode(ex, encoding, quality):
    image = tf.io.encode_jpeg(ex["image"], quality=quality) if encoding == "jpeg" else tf.io.encode_png(ex["image"])
    out = {"image": image, "boxes": tf.reshape(tf.cast(ex["boxes"], tf.float32), [-1]),
           "label": tf.cast(ex.get("label", -1), tf.int64), "path": ex["path"]}
    if "mask" in ex:
        out["mask"] = tf.io.encode_png(tf.cast(ex["mask"], tf.uint8)[..., None])
    return out


def _example(item):
    features = {
        "image": _bytes(item["image"]),
        "boxes": tf.train.Feature(float_list=tf.train.FloatList(value=item["boxes"].tolist())),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(item["label"])])),
        "path": _bytes(item["path"]),
    }
    if "mask" in item:
        features["mask"] = _bytes(item["mask"])
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_shards(source, out_dir, images_per_shard=1024, encoding="jpeg", quality=95, overwrite=False,
                 description="", progress=None):
    """Writes ``source`` (see ``c2am_tf.data``) as TFRecord shards in ``out_dir``; returns the index dict.

    Each shard is written to a temporary name and renamed when complete, and the index last:
    a killed run leaves no truncated shard and no index, and ``tfrecord_source`` refuses a
    folder without its index. An ``out_dir`` that already holds shards raises
    ``ShardsExistError`` unless ``overwrite`` (which removes those shards and the index only).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}; got {encoding!r}")
    if images_per_shard < 1:
        raise ValueError(f"images_per_shard must be >= 1; got {images_per_shard}")
    existing = sorted(glob.glob(os.path.join(out_dir, "part-*.tfrecord")))
    if os.path.exists(os.path.join(out_dir, INDEX)) or existing:
        if not overwrite:
            raise ShardsExistError(f"{out_dir} already holds TFRecord shards; pass overwrite=True (--overwrite) "
                                   "to replace them, or choose another folder")
        for path in existing + [os.path.join(out_dir, INDEX)]:
            if os.path.exists(path):
                os.remove(path)
    make_folder(out_dir)
    staging = tempfile.mkdtemp(prefix=".shards.", suffix=".tmp", dir=out_dir)  # private: nothing planted is followed
    encoded = source.map(lambda ex: _encode(ex, encoding, quality), num_parallel_calls=tf.data.AUTOTUNE)
    shards, writer, count, fields, boxes_per_image = [], None, 0, None, None
    try:
        for item in encoded.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            if fields is None:
                fields = sorted(item)
                boxes_per_image = len(item["boxes"]) // 4
            if writer is None:
                name = f"part-{len(shards):05d}.tfrecord"
                tmp = os.path.join(staging, name)
                writer = tf.io.TFRecordWriter(tmp)
                shards.append({"file": name, "images": 0})
            writer.write(_example(item))
            shards[-1]["images"] += 1
            count += 1
            if progress is not None:
                progress.update(1)
            if shards[-1]["images"] == images_per_shard:
                writer.close()
                os.replace(tmp, os.path.join(out_dir, shards[-1]["file"]))
                writer = None
        if writer is not None:
            writer.close()
            os.replace(tmp, os.path.join(out_dir, shards[-1]["file"]))
            writer = None
    finally:
        if writer is not None:
            writer.close()
        shutil.rmtree(staging, ignore_errors=True)
    if not count:
        raise ValueError(f"nothing to write to {out_dir}: the source has no readable images")
    index = {"format": FORMAT, "images": count, "shards": shards, "encoding": encoding, "fields": fields,
             "has_labels": "label" in source.element_spec, "boxes_per_image": boxes_per_image,
             "written_from": description}
    write_json_atomically(os.path.join(out_dir, INDEX), index, indent=1)
    log.info("wrote %d images in %d shards to %s", count, len(shards), out_dir)
    return index


def read_index(directory):
    """The ``shards.json`` of a shard folder; FileNotFoundError names a folder without one."""
    path = os.path.join(directory, INDEX)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: no {INDEX} (not a folder written by write_shards, "
                                "or its writing did not finish)")
    with open(path) as f:
        index = json.load(f)
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def tfrecord_source(directory, shard=None, num_parallel_reads=tf.data.AUTOTUNE):
    """A source (dicts like the other sources') reading the shards in ``directory``.

    ``shard`` (``c2am_tf.data.sharding.Shard``): with at least as many files as pipelines
    each pipeline reads its own files (policy FILE); otherwise every pipeline reads all
    files and keeps its share of the examples (policy DATA). Files are read interleaved
    and in parallel, in a fixed order (deterministic given the seed downstream).
    """
    index = read_index(directory)
    files = [os.path.join(directory, s["file"]) for s in index["shards"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{directory}: {len(missing)} shards listed in {INDEX} are missing, e.g. {missing[0]}")
    by_file = shard is not None and len(files) >= shard.count
    if by_file:
        files = take_shard(files, shard, "shard files")
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "path": tf.io.FixedLenFeature([], tf.string),
            "boxes": tf.io.VarLenFeature(tf.float32), "label": tf.io.FixedLenFeature([], tf.int64)}
    fields = set(index["fields"])
    if "mask" in fields:
        spec["mask"] = tf.io.FixedLenFeature([], tf.string)
    has_label = bool(index["has_labels"])

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        image = tf.io.decode_image(ex["image"], channels=3, expand_animations=False)
        out = {"image": image, "path": ex["path"],
               "boxes": tf.reshape(tf.sparse.to_dense(ex["boxes"]), [-1, 4])}
        if has_label:
            out["label"] = tf.cast(ex["label"], tf.int32)
        if "mask" in spec:
            out["mask"] = tf.io.decode_png(ex["mask"], channels=1)[..., 0]
        return out

    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
                       num_parallel_calls=num_parallel_reads, deterministic=True)
    if shard is not None and not by_file:
        ds = shard_dataset(ds, shard)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if shard is None:  # a known length spares callers a counting pass
        ds = ds.apply(tf.data.experimental.assert_cardinality(index["images"]))
    return ds
