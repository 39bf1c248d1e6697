"""The run folder (c2am_tf.training.run_folder) and the trainers on it: a killed run resumes to the
weights an uninterrupted one reaches; other settings are refused by name; nothing is left behind."""

import json

import keras
import numpy as np
import pytest

from c2am_tf.backbones import build_backbone
from c2am_tf.models.c2am.model import C2AM
from c2am_tf.models.masks.mask_model import MaskModel
from c2am_tf.training import run_folder
from c2am_tf.training.masks import train_mask_model


def _images(n=6, size=64, seed=0):
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 40, (n, size, size, 3)).astype(np.uint8)
    for i in range(n):
        y, x = rng.randint(0, size - 24, 2)
        images[i, y:y + 24, x:x + 24] = rng.randint(180, 256, (24, 24, 3))
    return images


def _mask_model():
    keras.utils.set_random_seed(0)
    return MaskModel(C2AM(build_backbone("tiny", weights=None)), width=8, fine_width=8)


class Killed(Exception):
    pass


class KillAt(keras.callbacks.Callback):
    """Stops the run at the end of the ``at``-th epoch it sees, as a kill would (no cleanup)."""

    def __init__(self, at):
        super().__init__()
        self.seen, self.at = 0, at

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            raise Killed


SETTINGS = {"rounds": 3, "epochs": 2, "lr": 1e-2}


def _train(target, images, settings=SETTINGS, **kwargs):
    return train_mask_model(_mask_model(), images, str(target), settings, rounds=3, epochs=2, batch_size=4,
                            lr=1e-2, seed=1, **kwargs)


def test_a_killed_mask_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    images = _images()
    whole, whole_losses, whole_log = _train(tmp_path / "whole" / "masks.keras", images)

    target = tmp_path / "killed" / "masks.keras"
    with pytest.raises(Killed):  # in round 2's second epoch: round 1 is checkpointed, round 2 is not
        _train(target, images, callbacks=[KillAt(4)])
    state = json.loads((target.parent / "resume.json").read_text())
    assert state["rounds_done"] == 1 and state["settings"] == SETTINGS and not target.exists()
    assert (target.parent / "last.keras").exists()

    with pytest.raises(run_folder.RunConflictError, match=r"other settings \(lr 0.01 -> 0.02\)"):
        _train(target, images, settings={**SETTINGS, "lr": 2e-2})
    seen = []
    resumed, losses, log = _train(target, images, after_round=lambda r, *_: seen.append(r))
    assert seen == [1, 2]  # round 1 is not run again
    assert losses == pytest.approx(whole_losses, rel=1e-5) and len(losses) == 3
    assert [row[:2] for row in log] == [[r, e] for r in (1, 2, 3) for e in (1, 2)]
    for a, b in zip(whole.decoder.get_weights(), resumed.decoder.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in target.parent.iterdir()) == ["log.csv", "masks.keras"]
    assert (target.parent / "log.csv").read_text().splitlines()[1:] == [",".join(map(str, r)) for r in whole_log]


def test_progress_and_finish(tmp_path):
    target = str(tmp_path / "model.keras")
    assert run_folder.progress(target, {"a": (1, 2)}) == {}
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    run_folder.save_progress(model, target, {"a": (1, 2)}, epochs_done=3)
    assert run_folder.progress(target, {"a": [1, 2]}) == {"epochs_done": 3}  # tuples read back as lists
    assert run_folder.epochs_done(target, {"a": (1, 2)}) == 3
    assert run_folder.epochs_done(target, {"a": (1, 3)}, overwrite=True) == 0
    with pytest.raises(run_folder.RunConflictError, match=r"resume.json holds a run with other settings \(a \[1, 2\] -> "
                                                          r"\[1, 3\]\); rerun with its settings"):
        run_folder.progress(target, {"a": (1, 3)})
    run_folder.finish(model, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
