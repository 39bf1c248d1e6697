"""The run folder: checkpoints and resume for every trainer. A killed run started again with the same
settings goes on from its last checkpoint; one with other settings is a ``RunConflictError`` naming the
difference (``check_same_run``, the one rule every trainer applies).

Trainers that save a model at the end (``fit-classifier``, ``fit-regressor``, ``fit-bgcues``: one
checkpoint per epoch; ``fit-masks``: one per self-training round) write, beside the model's file
(``target``), ``last.keras`` (the model, with its optimizer state where it has one) and ``resume.json``
(how far the run got, and its settings), both atomically (``save_progress``); both go once the model is
saved (``finish``). The C2AM trainer (``fit``, and each head of ``fit-routed``) keeps Keras's
``BackupAndRestore`` folder beside its ``config.json`` (``c2am_tf.training.trainer.claim_out_dir``), under
the same rule.
"""

import json
import os

import keras

from c2am_tf.training.callbacks import save_atomically
from c2am_tf.utils.errors import InputError, differences, reason
from c2am_tf.utils.files import OutputLock, write_json_atomically


class RunConflictError(ValueError):
    """``out`` holds another run: resuming it with these settings would mix two runs."""


def lock(out_dir):
    """The run folder's ``OutputLock``, held while a trainer writes there: a second run into it is one line
    naming the first, never two runs mixing checkpoints."""
    return OutputLock(os.path.join(out_dir or ".", ""))


def resume_files(target):
    """(the checkpoint, the resume state) beside ``target``."""
    out_dir = os.path.dirname(target) or "."
    return os.path.join(out_dir, "last.keras"), os.path.join(out_dir, "resume.json")


def run_settings(settings):
    """``settings`` as they read back from JSON (tuples -> lists), so a stored run compares equal."""
    return json.loads(json.dumps(settings))


def check_same_run(where, stored, settings, hint="rerun with its settings to resume it, or pass --overwrite to "
                                                 "start over"):
    """Raises ``RunConflictError`` when the run stored at ``where`` (its settings, ``stored``) is not one of
    ``settings``, naming each setting that differs."""
    if stored != settings:
        raise RunConflictError(f"{where} holds a run with other settings ({differences(stored, settings)})"
                               + (f"; {hint}" if hint else ""))


def progress(target, settings, overwrite=False):
    """How far a killed run of these ``settings`` got beside ``target``: its ``resume.json`` state (e.g.
    ``{"epochs_done": 3}``), ``{}`` when there is none or ``overwrite``. A killed run of other settings
    raises ``RunConflictError``."""
    _, state_path = resume_files(target)
    if overwrite or not os.path.exists(state_path):
        return {}
    try:
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as err:
        raise InputError(f"{state_path}: not a readable resume state ({reason(err)}); delete it, or pass "
                         "--overwrite to start over") from None
    if not isinstance(state, dict):
        raise InputError(f"{state_path}: not a resume state (a JSON {type(state).__name__}); delete it, or pass "
                         "--overwrite to start over")
    check_same_run(state_path, state.pop("settings", None) or {}, run_settings(settings))
    return state


def count_done(target, state, key, most):
    """``state[key]`` (how many epochs or rounds a killed run beside ``target`` finished): an integer in
    0..``most``, else an ``InputError`` (an edited state would pass off a run of one epoch as finished)."""
    state_path = resume_files(target)[1]
    value = state.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise InputError(f"{state_path}: {key} {value!r} is not a count of 0..{most} (this run's total); delete it, "
                         "or pass --overwrite to start over")
    return value


def epochs_done(target, settings, overwrite=False, epochs=None):
    """The epochs a killed run of these ``settings`` finished beside ``target`` (0: none, or ``overwrite``); with
    ``epochs``, a count above it (or not a count) is an ``InputError`` naming the state file."""
    state = progress(target, settings, overwrite)
    return count_done(target, state, "epochs_done", epochs if epochs is not None else 1 << 30)


def resumed_model(target, what):
    """The checkpoint beside ``target``, loaded, with a line saying ``what`` was done."""
    from c2am_tf.presets import load_model

    checkpoint, _ = resume_files(target)
    print(f"resuming from {checkpoint}: {what}", flush=True)
    return load_model(checkpoint, require_c2am=False)  # a truncated or missing checkpoint is one line naming it


def save_progress(model, target, settings, **state):
    """The checkpoint of a run still under way: ``model`` and ``state`` (JSON) with the run's ``settings``,
    each written atomically, the model first (a state never points past the model beside it)."""
    checkpoint, state_path = resume_files(target)
    save_atomically(model, checkpoint)
    write_json_atomically(state_path, {**state, "settings": run_settings(settings)})


def finish(model, target):
    """Saves the trained ``model`` at ``target`` (atomically), then removes the run's checkpoint."""
    save_atomically(model, target)
    for leftover in reversed(resume_files(target)):  # the state first: it must never outlive its model
        if os.path.exists(leftover):
            os.remove(leftover)
    return target


def fit_and_save(model, data, target, epochs, settings, overwrite=False):
    """``model.fit`` (compiled) for ``epochs`` with a CSV log (``log.csv``) beside ``target``, then the model
    saved atomically at ``target``; returns (the trained model, ``target``). A killed run of the same
    ``settings`` is resumed from its checkpoint (at most the epoch it was saving is done again)."""
    out_dir = os.path.dirname(resume_files(target)[0])
    with lock(out_dir):
        done = epochs_done(target, settings, overwrite, epochs)
        if done:
            model = resumed_model(target, f"{done} of {epochs} epochs done")

        class Checkpoint(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                save_progress(self.model, target, settings, epochs_done=epoch + 1)

        log = keras.callbacks.CSVLogger(os.path.join(out_dir, "log.csv"), append=done > 0)
        model.fit(data, epochs=epochs, initial_epoch=done, verbose=2, callbacks=[log, Checkpoint()])
        return model, finish(model, target)
