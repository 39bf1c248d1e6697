"""TFRecord shards of a dataset split, for clusters and slow file systems.

    c2am-tf write-tfrecords --dataset imagenet --data-dir path/to/ILSVRC --split train --out shards/
    c2am-tf fit --dataset tfrecord --data-dir shards/ --no-cache

Writes OUT/SPLIT/part-00000.tfrecord ... and OUT/SPLIT/shards.json. Every image is decoded
once by the project's reader (unreadable files are skipped with a count) and stored as
JPEG (quality 95) or PNG (lossless), with its boxes, label and path (and mask, where the
dataset has masks). A folder that already holds shards is refused unless --overwrite.
"""

import os
import sys

from tqdm import tqdm

from c2am_tf import data
from c2am_tf.cli.common import command_parser, output_folder
from c2am_tf.data.tfrecord import ENCODINGS, ShardsExistError, write_shards


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--dataset", required=True, choices=[d for d in data.DATASETS if d != "tfrecord"],
                   help="dataset to read")
    p.add_argument("--data-dir", help="its folder")
    p.add_argument("--split", default="train", choices=["train", "test", "half1", "half2"], help="which split")
    p.add_argument("--out", required=True, type=output_folder, help="folder; shards go to OUT/SPLIT/")
    p.add_argument("--images-per-shard", type=int, default=1024,
                   help="images per file (about 100-200 MB of ImageNet JPEGs at 1024)")
    p.add_argument("--encoding", default="jpeg", choices=ENCODINGS, help="jpeg (quality 95) or png (lossless)")
    p.add_argument("--synthetic-count", type=int, help="synthetic images (dataset synthetic)")
    p.add_argument("--overwrite", action="store_true", help="replace the shards already in OUT/SPLIT")
    return p


def main(argv=None, prog=None):
    """Entry point."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.images_per_shard < 1:
        p.error("--images-per-shard: must be >= 1")
    try:
        source = data.make_source(args.dataset, args.split, args.data_dir, synthetic_count=args.synthetic_count)
        with tqdm(desc="tfrecords", unit="img") as bar:
            index = write_shards(source, os.path.join(args.out, args.split), args.images_per_shard, args.encoding,
                                 overwrite=args.overwrite, progress=bar,
                                 description=f"{args.dataset} {args.split} {args.data_dir or ''}".strip())
    except ShardsExistError as err:
        p.error(f"--out: {err}")
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(f"{index['images']} images in {len(index['shards'])} shards -> {os.path.join(args.out, args.split)}")
