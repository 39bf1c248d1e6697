"""WSSS refinement on Oxford-IIIT Pet dev (300 images, 3 breeds + background), end to end.

    python benchmarks/pets_wsss.py [--data-dir ../shared/data/oxford_pets_dev] [--out runs/pets_wsss]

Runs the four commands of docs/wsss.md on the same images (image-level
labels are used only by the classifier; C2AM and the cue model see images only):
1. train/fit_classifier.py: EfficientNet-Lite0 (frozen, ImageNet) + GAP + dense, 8 epochs; CAMs;
2. train/fit.py --dataset folder: C2AM with the recommended recipe;
3. train/fit_bgcues.py --pseudo hard: the cue model on C2AM's thresholded 1 - P;
4. train/refine.py: mIoU of the initial CAMs (best constant background), of the refinement
   with the raw 1 - P and with the cue model (each at power 1 and the best power);
5. train/fit_masks.py (the ``cub_lite0`` preset as teacher, 1 round of 8 epochs, pets images only)
   and train/refine.py with its cue at ``--bg-power auto`` (G from the images, no labels).
``--fine-tune`` trains the classifier with its backbone (``--train-backbone --lr 0.01``).
Steps whose output exists are skipped, so a stopped run resumes.
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step(title, done_file, command):
    """Runs ``command`` (a list) unless ``done_file`` exists; prints the wall time."""
    if os.path.exists(done_file):
        print(f"[skip] {title}: {done_file} exists")
        return
    start = time.time()
    print(f"[run] {title}: {' '.join(command)}", flush=True)
    subprocess.run([sys.executable, *command], check=True, cwd=ROOT)
    print(f"[done] {title} in {time.time() - start:.0f} s", flush=True)


from machine import header


def main(argv=None):
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data", "oxford_pets_dev"))
    p.add_argument("--out", default="runs/pets_wsss")
    p.add_argument("--pseudo", choices=["soft", "hard"], default="hard")
    p.add_argument("--fine-tune", action="store_true", help="fine-tune the classifier's backbone (lr 0.01)")
    args = p.parse_args(argv)
    print(header()[0], flush=True)
    out = os.path.abspath(args.out)
    images = os.path.join(args.data_dir, "images")
    classifier = os.path.join(out, "classifier_ft" if args.fine_tune else "classifier")
    step("classifier + CAMs", os.path.join(classifier, "cams"),
         ["train/fit_classifier.py", "--dataset", "pets", "--data-dir", args.data_dir, "--epochs", "8",
          "--out", classifier, "--cams-out", os.path.join(classifier, "cams")]
         + (["--train-backbone", "--lr", "0.01"] if args.fine_tune else []))
    step("C2AM", os.path.join(out, "c2am", "final.keras"),
         ["train/fit.py", "--dataset", "folder", "--data-dir", images, "--init-preset", "none", "--out", os.path.join(out, "c2am")])
    cues = os.path.join(out, f"bgcues_{args.pseudo}")
    step("background-cue model", os.path.join(cues, "bgcues.keras"),
         ["train/fit_bgcues.py", "--c2am", os.path.join(out, "c2am", "final.keras"), "--images", images,
          "--pseudo", args.pseudo, "--out", cues])
    step("refinement", os.path.join(out, "refined", ".never"),
         ["train/refine.py", "--cams", os.path.join(classifier, "cams"), "--bg-cues",
          os.path.join(cues, "bgcues.keras"), "--c2am", os.path.join(out, "c2am", "final.keras"),
          "--dataset", "pets", "--data-dir", args.data_dir, "--out", os.path.join(out, "refined")])
    masks = os.path.join(out, "masks")
    step("mask model", os.path.join(masks, "masks.keras"),
         ["train/fit_masks.py", "--preset", "cub_lite0", "--images", images, "--rounds", "1", "--epochs", "8",
          "--out", masks])
    step("refinement with the mask model, power calibrated without labels", os.path.join(out, "refined_masks", ".never"),
         ["train/refine.py", "--cams", os.path.join(classifier, "cams"), "--bg-cues",
          os.path.join(masks, "masks.keras"), "--bg-power", "auto", "--dataset", "pets", "--data-dir",
          args.data_dir, "--out", os.path.join(out, "refined_masks")])


if __name__ == "__main__":
    main()
