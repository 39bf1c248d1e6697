"""Training a mask model (``fit-masks``) in a run folder: the self-training rounds of
``c2am_tf.models.masks.mask_model.self_train``, checkpointed after each round (``c2am_tf.training.run_folder``),
so a killed run started again with the same settings goes on from the last round it finished.
"""

import json
import os
import time

import keras
import numpy as np

from c2am_tf.data import source_files
from c2am_tf.data.images import load_square_images
from c2am_tf.models.masks.mask_model import MaskModel, self_train
from c2am_tf.training import run_folder
from c2am_tf.utils.files import write_atomically


def train_mask_model(model, images, target, settings, rounds=2, epochs=20, batch_size=8, lr=1e-3, seed=0,
                     targets="soft", overwrite=False, after_round=None, callbacks=()):
    """Self-trains ``model`` (a ``MaskModel``) on ``images`` (N, S, S, 3) uint8 for ``rounds`` x ``epochs``,
    then saves it at ``target`` and the loss of every round and epoch in ``log.csv`` beside it (both
    atomically). After each round the model and how far the run got go to the run folder; a killed run of the
    same ``settings`` (any JSON-able dict: what must match to resume) resumes from there, and reruns at most
    the round it was in. ``after_round(r, model, targets, log)`` sees each round's pseudo-masks and the log
    rows so far. Returns (the model, the final loss of each round, the log rows ``[round, epoch, loss]``).
    """
    with run_folder.lock(os.path.dirname(target)):
        state = run_folder.progress(target, settings, overwrite)
        done = run_folder.count_done(target, state, "rounds_done", rounds)
        losses, log = list(state.get("losses", [])), list(state.get("log", []))
        if done:
            model = run_folder.resumed_model(target, f"{done} of {rounds} rounds done")

        class LogLoss(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.round, self.loss = done, None

            def on_epoch_end(self, epoch, logs=None):
                self.loss = float(logs["loss"])
                log.append([self.round + 1, epoch + 1, f"{self.loss:.5f}"])

        logger = LogLoss()

        def checkpoint(r, trained, wanted):
            losses.append(logger.loss)  # the round's last epoch: what self_train returns for it
            logger.round = r + 1
            run_folder.save_progress(trained, target, settings, rounds_done=r + 1, losses=losses, log=log)
            if after_round is not None:
                after_round(r, trained, wanted, log)

        self_train(model, images, rounds, epochs, batch_size, lr, seed, after_round=checkpoint, progress=True,
                   callbacks=[logger, *callbacks], targets=targets, start_round=done)
        run_folder.finish(model, target)
        write_atomically(os.path.join(os.path.dirname(target) or ".", "log.csv"),
                         "\n".join(",".join(map(str, row)) for row in [["round", "epoch", "loss"], *log]) + "\n")
        return model, losses, log


def fit_masks(teacher, teacher_label, images_dir, target, settings, size=448, refinement="guided", rounds=2, epochs=20,
              batch_size=8, lr=1e-3, seed=1, targets="soft", overwrite=False, say=print):
    """``fit-masks``' workflow: a ``MaskModel`` on the C2AM model ``teacher`` (named ``teacher_label``) self-trained
    on the images of ``images_dir`` (a folder or a list, resized whole to ``size``) and saved at ``target``
    (``train_mask_model``), with ``summary.json`` beside it; ``say`` gets a line before training and one per
    round. Returns (the model, the summary)."""
    keras.utils.set_random_seed(seed)
    images, _ = load_square_images(source_files("folder", "train", images_dir)[0], size)
    model = MaskModel(teacher, refinement=refinement)
    say(f"{len(images)} images at {size}; teacher {teacher_label}; {rounds} round(s) x {epochs} epochs")

    def after_round(r, _model, pseudo, log):
        known = pseudo != 255
        say(f"round {r + 1}: loss {log[-1][2]}; targets {known.mean():.1%} decided, "
            f"mean foreground {pseudo[known].mean():.1%}")

    start = time.time()
    model, losses, _ = train_mask_model(model, images, target, settings, rounds, epochs, batch_size, lr, seed, targets,
                                        overwrite, after_round)
    summary = {"images": len(images), "teacher": teacher_label, "rounds": rounds, "epochs": epochs, "size": size,
               "refinement": refinement, "targets": targets, "threshold": float(np.asarray(model.threshold)),
               "final_losses": losses, "seconds": round(time.time() - start, 1)}
    write_atomically(os.path.join(os.path.dirname(target) or ".", "summary.json"),
                     (json.dumps(summary, indent=1) + "\n").encode())
    return model, summary
