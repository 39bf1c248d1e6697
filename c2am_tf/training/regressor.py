"""Training a PSOL box regressor (``fit-regressor``) on C2AM's pseudo boxes: a frozen backbone and a box head
(``c2am_tf.models.psol.regressor``) fitted with mean squared error, resumable as every trainer
(``run_folder.fit_and_save``)."""

import keras

from c2am_tf import data
from c2am_tf.backbones import build_backbone, default_features
from c2am_tf.evaluation.evaluate import evaluate_regressor
from c2am_tf.maps.boxes_json import read_boxes
from c2am_tf.models.psol.regressor import REGRESSOR_SIZE, build_regressor, pseudo_box_dataset
from c2am_tf.presets import load_classifier
from c2am_tf.training.run_folder import fit_and_save
from c2am_tf.utils.errors import ConfigError


def train_regressor(target, settings, boxes, backbone="efficientnet_lite0", weights="imagenet", size=REGRESSOR_SIZE,
                    batch_size=32, lr=1e-3, epochs=10, seed=1, overwrite=False, eval_dataset=None, eval_data_dir=None,
                    eval_split="test", classifier=None):
    """A regressor trained on the pseudo boxes of the boxes file ``boxes`` and saved at ``target``; with
    ``eval_dataset`` its boxes scored on that split (``evaluate_regressor``; ``classifier`` for Top-k Loc). Returns
    {"boxes" (how many), "path", "model", "result" (or None)}. An unreadable boxes file is a ``ConfigError`` of
    ``boxes``."""
    try:
        records = read_boxes(boxes)["images"]
        train = pseudo_box_dataset(records, batch_size, size, seed)
    except (OSError, ValueError) as err:
        raise ConfigError("boxes", str(err)) from None
    keras.utils.set_random_seed(seed)
    features = build_backbone(backbone, weights, features=default_features(backbone))
    features.trainable = False
    regressor = build_regressor(features, size)
    regressor.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    regressor, path = fit_and_save(regressor, train, target, epochs, settings, overwrite)
    result = None
    if eval_dataset:
        batches = data.eval_dataset(eval_dataset, eval_split, eval_data_dir, cache=False)
        result = evaluate_regressor(regressor, batches, *load_classifier(classifier))
    return {"boxes": len(records), "path": path, "model": regressor, "result": result}
