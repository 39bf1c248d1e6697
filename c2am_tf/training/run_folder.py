"""The run folder of every trainer: its settings (the fingerprint), the claim on the folder, the lock,
atomic checkpoints, resume and the epoch count. A killed run started again with the same settings goes on
from its last checkpoint; one with other settings is a ``RunConflictError`` naming the difference
(``check_same_run``, the one rule every trainer applies).

Every trainer writes, beside the model's file (``target``), ``resume.json``: how far the run got
(``epochs_done``, or ``rounds_done``) and its settings, written atomically after the checkpoint it counts
(``save_progress``, ``EpochCount``), so the count never points past a checkpoint. It is this module's own
count: no trainer reads Keras's private files to learn where a run stopped.

- Trainers that save one model at the end (``fit-classifier``, ``fit-regressor``, ``fit-bgcues``: one
  checkpoint per epoch; ``fit-masks``: one per self-training round) checkpoint ``last.keras`` (the model,
  with its optimizer state where it has one) and go on from it (``fit_and_save``); both files go once the
  model is saved (``finish``).
- The C2AM trainer (``fit``, and each head of ``fit-routed``) claims its folder by its ``config.json``
  (``claim``), restores its weights and optimizer from Keras's public ``BackupAndRestore`` folder, and
  counts epochs with ``EpochCount``.
"""

import json
import os
import shutil

import keras

from c2am_tf.presets import load_model
from c2am_tf.utils.errors import ConfigError, InputError, differences, reason
from c2am_tf.utils.files import OutputLock, atomic_path, write_json_atomically


class RunConflictError(ConfigError):
    """``out`` holds another run: resuming it with these settings would mix two runs. A ``ConfigError`` of the
    output folder (``out``): every command shows it as that flag's error."""

    def __init__(self, message):
        super().__init__("out", message)


REPLACE_HINT = "pass --overwrite to replace it, or choose another --out"


def lock(out_dir):
    """The run folder's ``OutputLock``, held while a trainer writes there: a second run into it is one line
    naming the first, never two runs mixing checkpoints."""
    return OutputLock(os.path.join(out_dir or ".", ""))


def save_atomically(model, path):
    """Saves ``model`` to ``path`` (.keras) through a private temporary folder and a rename (``atomic_path``): a run
    killed while saving never leaves a truncated checkpoint."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def fingerprint(config, ignored=()):
    """The settings of ``config`` (a dict) that define a run, as they read back from JSON: what must match to resume
    it. ``ignored``: the fields that change nothing the run computes (its output folder, its verbosity)."""
    return run_settings({k: v for k, v in config.items() if k not in ignored})


def finished(out, names=("final.keras", "summary.json")):
    """Whether ``out`` holds a run that trained to its end (each of ``names`` is there)."""
    return all(os.path.exists(os.path.join(out, name)) for name in names)


def stored_settings(out, defaults, ignored=(), markers=()):
    """The settings of the run whose ``config.json`` is in ``out`` (a field added after that run was written has its
    value in ``defaults``); ``None`` when there is no run, ``{"config.json": "missing"}`` when one of ``markers``
    (a run's checkpoints) is there without it, ``{"config.json": "unreadable"}`` when it cannot be read."""
    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        if any(os.path.exists(os.path.join(out, name)) for name in markers):
            return {"config.json": "missing"}
        return None
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        return {**{k: v for k, v in defaults.items() if k not in stored}, **fingerprint(stored, ignored)}
    except (OSError, ValueError, TypeError, AttributeError):  # unreadable, or not a JSON object
        return {"config.json": "unreadable"}


def claim(out, theirs, ours, run_files, overwrite=False, reuse=False):
    """Makes ``out`` this run's. ``theirs``: the settings stored there (``stored_settings``), ``ours``: this run's.
    The same settings resume; other settings raise ``RunConflictError``, and so does a finished run of the same
    settings (training again would replace its ``final.keras``) unless ``reuse`` (the caller loads that run's
    model instead of training). ``overwrite`` removes the other run's files (``run_files`` only; the folder's
    other files stay)."""
    if theirs is None or (theirs == ours and (reuse or not finished(out))):
        return
    if not overwrite and theirs == ours:
        raise RunConflictError(f"{out} holds this run, finished ({os.path.join(out, 'final.keras')}); training "
                               f"again would replace it: {REPLACE_HINT}")
    if not overwrite:
        check_same_run(out, theirs, ours, hint=REPLACE_HINT)
    for name in run_files:
        target = os.path.join(out, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)


def claim_target(out, name, settings, overwrite=False):
    """``out/name``, the model a trainer that checkpoints here will save, once the folder is known to hold no
    killed run of other settings (a ``RunConflictError`` naming them, before any data is read or model built,
    unless ``overwrite``)."""
    target = os.path.join(out, name)
    progress(target, settings, overwrite)
    return target


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


def legacy_epochs(out):
    """Epochs finished by a run folder written before ``resume.json`` existed: the rows of its ``log.csv``, which
    Keras's ``CSVLogger`` appends once per finished epoch (0 when there is none)."""
    try:
        with open(os.path.join(out, "log.csv"), encoding="utf-8") as f:
            return max(sum(1 for line in f if line.strip()) - 1, 0)  # the header is not an epoch
    except OSError:
        return 0


class EpochCount(keras.callbacks.Callback):
    """Writes ``resume.json`` beside ``target`` (``epochs_done`` and the run's ``settings``) at the end of every
    epoch, after the callbacks before it saved the epoch's checkpoint; with ``save_model``, it saves that
    checkpoint (``last.keras``) itself first. ``write=False`` (a cluster's non-chief worker) writes nothing."""

    def __init__(self, target, settings, save_model=False, write=True):
        super().__init__()
        self.target, self.settings = target, settings
        self.save_model, self.write = bool(save_model), bool(write)

    def on_epoch_end(self, epoch, logs=None):
        if self.write:
            if self.save_model:
                save_progress(self.model, self.target, self.settings, epochs_done=epoch + 1)
            else:
                write_json_atomically(resume_files(self.target)[1],
                                      {"epochs_done": epoch + 1, "settings": run_settings(self.settings)})


def resumed_model(target, what):
    """The checkpoint beside ``target``, loaded, with a line saying ``what`` was done."""
    checkpoint, _ = resume_files(target)
    print(f"resuming from {checkpoint}: {what}", flush=True)
    return load_model(checkpoint, require_c2am=False)  # a truncated or missing checkpoint is one line naming it


def save_progress(model, target, settings, **state):
    """The checkpoint of a run still under way: ``model`` and ``state`` (JSON) with the run's ``settings``,
    each written atomically, the model first (a state never points past the model beside it)."""
    checkpoint, state_path = resume_files(target)
    save_atomically(model, checkpoint)
    write_json_atomically(state_path, {**state, "settings": run_settings(settings)})


def finish(model, target, keep_checkpoint=False):
    """Saves the trained ``model`` at ``target`` (atomically), then removes the run's resume state and (unless
    ``keep_checkpoint``) its checkpoint; ``model=None``: the model is saved already."""
    if model is not None:
        save_atomically(model, target)
    checkpoint, state = resume_files(target)
    for leftover in (state,) if keep_checkpoint else (state, checkpoint):  # the state first: it never outlives
        if os.path.exists(leftover):                                         # its model
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

        log = keras.callbacks.CSVLogger(os.path.join(out_dir, "log.csv"), append=done > 0)
        model.fit(data, epochs=epochs, initial_epoch=done, verbose=2,
                  callbacks=[log, EpochCount(target, settings, save_model=True)])
        return model, finish(model, target)
