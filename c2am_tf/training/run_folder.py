"""Checkpoints and resume for the trainers that run ``model.fit`` on a compiled model (``fit-classifier``,
``fit-regressor``, ``fit-bgcues``): a killed run started again with the same settings goes on from its last
epoch, and one with other settings is refused, naming the difference.

Beside the model's file (``target``) each epoch writes ``last.keras`` (weights and optimizer state) and
``resume.json`` (the epochs done and the run's settings), atomically; both go once the model is saved.
The C2AM trainer keeps its own folder layout (``config.json``, ``backup/``; ``c2am_tf.training.trainer``),
with the same rule: same settings resume, others are a ``RunConflictError``.
"""

import json
import os

import keras

from c2am_tf.training.callbacks import save_atomically
from c2am_tf.utils.errors import differences
from c2am_tf.utils.files import write_json_atomically


class RunConflictError(ValueError):
    """``out`` holds another run: resuming it with these settings would mix two runs."""


def resume_files(target):
    """(the checkpoint, the resume state) beside ``target``."""
    out_dir = os.path.dirname(target) or "."
    return os.path.join(out_dir, "last.keras"), os.path.join(out_dir, "resume.json")


def run_settings(settings):
    """``settings`` as they read back from JSON (tuples -> lists), so a stored run compares equal."""
    return json.loads(json.dumps(settings))


def epochs_done(target, settings, overwrite=False):
    """The epochs a killed run of these ``settings`` finished beside ``target`` (0: none, or ``overwrite``);
    a killed run of other settings raises ``RunConflictError`` naming the difference."""
    _, state_path = resume_files(target)
    if overwrite or not os.path.exists(state_path):
        return 0
    with open(state_path) as f:
        state = json.load(f)
    settings = run_settings(settings)
    if state.get("settings") != settings:
        raise RunConflictError(f"{state_path}: a killed run with other settings "
                               f"({differences(state.get('settings') or {}, settings)}); rerun with its settings "
                               "to resume it, or pass --overwrite to start over")
    return int(state["epochs_done"])


def fit_and_save(model, data, target, epochs, settings, overwrite=False):
    """``model.fit`` (compiled) for ``epochs`` with a CSV log (``log.csv``) beside ``target``, then the model
    saved atomically at ``target``; returns (the trained model, ``target``). A killed run of the same
    ``settings`` is resumed from its checkpoint (at most the epoch it was saving is done again)."""
    checkpoint, state_path = resume_files(target)
    out_dir = os.path.dirname(checkpoint)
    os.makedirs(out_dir, exist_ok=True)
    settings, done = run_settings(settings), epochs_done(target, settings, overwrite)
    if done:
        model = keras.saving.load_model(checkpoint)
        print(f"resuming from {checkpoint}: {done} of {epochs} epochs done", flush=True)

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            save_atomically(self.model, checkpoint)
            write_json_atomically(state_path, {"epochs_done": epoch + 1, "settings": settings})

    log = keras.callbacks.CSVLogger(os.path.join(out_dir, "log.csv"), append=done > 0)
    model.fit(data, epochs=epochs, initial_epoch=done, verbose=2, callbacks=[log, Checkpoint()])
    save_atomically(model, target)
    for leftover in (state_path, checkpoint):
        if os.path.exists(leftover):
            os.remove(leftover)
    return model, target
