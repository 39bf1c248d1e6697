"""Callbacks: polarity decisions (the evaluation they call is tested in test_evaluate.py)."""

import pytest

from c2am_tf.backbones import build_backbone
from c2am_tf.models.c2am.model import C2AM
from c2am_tf.training.callbacks import PolarityCallback


@pytest.mark.parametrize("statistic,polarity", [(0.1, -1.0), (-0.1, 1.0)])
def test_polarity_callback(statistic, polarity):
    model = C2AM(build_backbone("tiny", weights=None))
    cb = PolarityCallback()
    cb.set_model(model)
    logs = {"border_minus_center": statistic}
    cb.on_epoch_end(0, logs)
    assert float(model.polarity.numpy()) == polarity and logs["polarity"] == polarity
