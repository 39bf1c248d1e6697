"""Heatmap overlays and boxes for images: ``c2am-tf predict IMAGE_OR_DIR --model M.keras|--preset NAME --out DIR``.

For each image (any size; grayscale and RGBA are converted to RGB) writes
``OUT/<path below the input folder>.png`` (``photos/sub/x.jpg`` -> ``OUT/sub/x.jpg.png``),
the heatmap overlay with the box, and the same name with ``.json``: the box
(original pixels), the threshold and the map's foreground fraction. With ``--masks``, also
``OUT/<...>.mask.png``: the foreground mask at the image's size (0 / 255), by the same rule
as the box. With ``--classifier`` each record also holds the classifier's five best classes
(``top5``, best first), and ``--cam-weight W --threshold T`` cuts the box from the map fused with
the CAM of the first (``c2am_tf.inference.maps.localization_maps``). Outputs never overwrite an input
image, and an output folder inside the input folder is not read. The workflow is
``c2am_tf.inference.predict``.
"""

import os

from c2am_tf.cli import common
from c2am_tf.inference.predict import predict_inputs
from c2am_tf.maps.geometry import EVAL_CROP


def build_parser(prog=None):
    """This command's flags (the commands in the README and docs/ are checked against it)."""
    p = common.command_parser(__doc__, prog)
    p.add_argument("inputs", help="an image file or a folder of images (searched recursively)")
    common.add_model_flags(p)
    p.add_argument("--out", required=True, type=common.output_folder, help="output folder")
    p.add_argument("--size", type=int, default=EVAL_CROP, help="the image is resized whole to size x size")
    p.add_argument("--threshold", type=float, help="override the model's stored threshold, in [0, 1]")
    common.add_box_band_flag(p)
    p.add_argument("--masks", action="store_true", help="also write each image's foreground mask (.mask.png)")
    common.add_classifier_flags(p, "its top-1 class")
    p.add_argument("--coco", type=common.output_file, help="also write the boxes as COCO JSON here (pre-annotations for "
                                                    "CVAT or Label Studio; file names relative to the input folder)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of other settings in --out")
    return p


def main(argv=None, prog=None):
    """``c2am-tf predict``; returns the exit status."""
    p = build_parser(prog)
    args = p.parse_args(argv)
    common.check_classifier_flags(p, args, threshold_needed=True)
    if args.coco:
        common.claim_output(p, args.coco, args.overwrite, "--coco", inputs=common.command_inputs(args))
    done = predict_inputs(args.inputs, args.model, args.out, args.size, args.threshold, args.preset, args.masks,
                          args.classifier, args.classifier_size, args.cam_weight, args.box_band, args.overwrite,
                          args.coco)
    records, images, seconds = done["records"], done["images"], done["seconds"]
    print(f"{len(records)} of {images} images -> {os.path.join(args.out, 'boxes.json')} ({images - len(records)} "
          f"unreadable skipped; {seconds:.1f} s, {images / max(seconds, 1e-9):.1f} img/s)")
    return 0 if records else 1
