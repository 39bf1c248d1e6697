"""Pseudo boxes for a whole dataset at the model's stored threshold.

    c2am-tf extract-boxes --model runs/cub/final.keras --dataset cub \
        --data-dir path/to/CUB_200_2011 --split train --out boxes.json [--psol-out psol.json]
    c2am-tf extract-boxes --preset general_lite0 --dataset folder --data-dir photos/ --out boxes.json
    c2am-tf extract-boxes --preset general_lite0 --dataset folder --data-dir photos/ --out boxes.json \
        --classifier efficientnet_lite0 --cam-weight 0.5 --threshold 0.4   # + each image's classes and its top-1 CAM

Output (``--out``), one entry per image, boxes in original image pixels:

    {"format": "c2am_tf.boxes/v1", "model": ..., "threshold": 0.7,
     "images": [{"path": ..., "width": W, "height": H,
                 "box": [x0, y0, x1, y1], "foreground_fraction": 0.31}, ...]}

With ``--classifier`` each entry also holds the classifier's five best classes (``"top5"``, best first:
``evaluate --boxes`` then reports Top-1/Top-5 Loc); ``--cam-weight`` cuts the
box from the map fused with that class's CAM (``c2am_tf.inference.maps.localization_maps``; local runs only).
The local workflow is ``c2am_tf.inference.extract``.

``--psol-out`` also writes the PSOL format: {image path: [x, y, w, h]} normalized
by the image size.

On a cluster (Apache Beam, ``pip install -r requirements-beam.txt``), ``--runner`` runs the
same extraction as a Beam pipeline; ``--out`` is then a prefix of JSON-lines parts
``OUT-00000-of-00016.jsonl`` (same records; ``evaluate --boxes OUT`` reads them), and any
flag this command does not know goes to Beam (see ``c2am_tf.inference.beam_boxes``)::

    c2am-tf extract-boxes --preset general_lite0 --dataset folder --data-dir photos/ \
        --runner DirectRunner --direct_num_workers 2 --num-shards 8 --out boxes/photos
    c2am-tf extract-boxes --saved-model export/c2am/1 --threshold 0.35 --dataset imagenet \
        --data-dir gs://bucket/ILSVRC --runner DataflowRunner --project P --region R \
        --temp_location gs://bucket/tmp --num-shards 1024 --out gs://bucket/boxes/train Each image is resized whole to --size square, so a box can reach
every part of the image (the authors' extraction center-cropped 448 of 480 and could not). Progress is saved to ``OUT.partial.jsonl``: a
killed run started again skips the images already done.
"""


from c2am_tf import data
from c2am_tf.cli import common
from c2am_tf.inference.beam_boxes import RUNNERS
from c2am_tf.inference.extract import extract_dataset, extract_dataset_beam
from c2am_tf.maps.geometry import EVAL_CROP
from c2am_tf.presets import load


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = common.command_parser(__doc__, prog)
    common.add_model_flags(p, required=False)
    p.add_argument("--saved-model", help="with --runner: an exported SavedModel folder (its 'cam' signature); "
                                         "needs --threshold")
    p.add_argument("--dataset", default="cub", choices=list(data.DATASETS), help="dataset to read")
    p.add_argument("--data-dir", help="its folder")
    p.add_argument("--split", default="train", choices=["train", "test", "half1", "half2"],
                   help="which split (half1/half2: the halves of an annotated ImageNet-style set)")
    p.add_argument("--out", required=True, type=common.output_file, help="boxes JSON")
    p.add_argument("--psol-out", type=common.output_file, help="also write PSOL-format JSON here")
    p.add_argument("--coco", type=common.output_file, help="also write the boxes as COCO JSON here (pre-annotations for "
                                                    "CVAT or Label Studio; file names relative to --data-dir)")
    p.add_argument("--overlays", type=common.output_folder, help="folder for heatmap overlay PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace a finished --out (and --psol-out) of an earlier run")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--size", type=int, default=EVAL_CROP, help="each image is resized whole to this square")
    p.add_argument("--threshold", type=float, help="override the model's stored threshold")
    common.add_box_band_flag(p)
    common.add_classifier_flags(p, "its top-1 class (needs --threshold)")
    p.add_argument("--runner", choices=RUNNERS,
                   help="run as an Apache Beam pipeline on this runner (default: one local process)")
    p.add_argument("--num-shards", type=int, default=16, help="with --runner: output parts (the unit of resuming)")
    return p


def parse_args(argv=None, prog=None):
    """Command-line flags: (ours, Beam's pipeline options). Unknown flags are an error without --runner."""
    p = build_parser(prog)
    args, beam_args = p.parse_known_args(argv)
    if beam_args and not args.runner:
        p.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam options need --runner)")
    chosen = [x for x in (args.model, args.preset, args.saved_model) if x]
    if len(chosen) != 1:
        p.error("give one of --model, --preset" + (", --saved-model" if args.runner else ""))
    if args.saved_model and not args.runner:
        p.error("--saved-model: only with --runner (the local extractor reads --model or --preset)")
    if args.saved_model and args.threshold is None:
        p.error("--saved-model needs --threshold (a SavedModel does not carry the .keras model's threshold)")
    if args.num_shards < 1:
        p.error("--num-shards: must be >= 1")
    if args.runner and args.classifier:
        p.error("--classifier / --cam-weight: only in the local extractor, not with --runner")
    common.check_classifier_flags(p, args, threshold_needed=True)
    if not args.runner:  # a killed run leaves OUT.partial.jsonl, not OUT: it still resumes
        inputs = common.command_inputs(args)
        common.claim_output(p, args.out, args.overwrite, inputs=inputs)
        if args.psol_out:
            common.claim_output(p, args.psol_out, args.overwrite, "--psol-out", inputs=inputs)
        if args.coco:
            common.claim_output(p, args.coco, args.overwrite, "--coco", inputs=inputs)
    return args, beam_args, p


def main(argv=None, prog=None):
    """Entry point."""
    args, beam_args, parser = parse_args(argv, prog)
    if args.runner:
        summary = extract_dataset_beam(args.dataset, args.split, args.data_dir, args.out,
                                       ["--runner", args.runner, *beam_args], args.model, args.preset, args.saved_model,
                                       args.threshold, args.size, args.box_band, args.num_shards, args.batch_size)
        print(f"{summary['boxes']} boxes in {summary['shards_written']} new parts ({summary['shards_skipped']} "
              f"already written), {summary['unreadable']} unreadable images skipped -> "
              f"{args.out}-*-of-{args.num_shards:05d}.jsonl")
        return 0
    records, threshold = extract_dataset(load(args.model, args.preset), args.model, args.preset, args.dataset,
                                         args.split, args.data_dir, args.out, args.threshold, args.size, args.box_band,
                                         args.batch_size, args.classifier, args.classifier_size, args.cam_weight,
                                         args.overlays, args.overwrite, args.psol_out, args.coco)
    print(f"{len(records)} boxes at threshold {threshold:.2f} -> {args.out}")
    return 0
