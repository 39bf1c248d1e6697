"""Training a mask model (``fit-masks``) in a run folder: the self-training rounds of
``c2am_tf.models.masks.mask_model.self_train``, checkpointed after each round (``c2am_tf.training.run_folder``),
so a killed run started again with the same settings goes on from the last round it finished.
"""

import os

import keras

from c2am_tf.models.masks.mask_model import self_train
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
