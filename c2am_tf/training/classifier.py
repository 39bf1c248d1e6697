"""Training a classifier on image-level labels (``fit-classifier``): for Top-1/Top-5 Loc on CUB, or its
CAMs for WSSS. The model is ``c2am_tf.models.classifier.build_classifier`` (a factory backbone, global average
pooling, a dense layer); single-label CUB trains with softmax cross-entropy, the multi-label segmentation
datasets with a binary cross-entropy per class.
"""

import keras
import tensorflow as tf

from c2am_tf.backbones import build_backbone, has_feature_choice
from c2am_tf.data import count_examples
from c2am_tf.data.cub import cub_classes, cub_source
from c2am_tf.data.segmentation import segmentation_dataset
from c2am_tf.data.transforms import resize_square
from c2am_tf.models.c2am.optim import poly_sgd
from c2am_tf.models.classifier import build_classifier
from c2am_tf.training.run_folder import fit_and_save
from c2am_tf.utils.errors import ConfigError, InputError
from c2am_tf.utils.files import OutputNames
from c2am_tf.wsss.cam import write_split_cams


def labelled_source(dataset, data_dir, split=None):
    """(source of {'image', 'labels' (multi-hot), 'path'}, class names, single_label): CUB's classes
    (one per image; ``split`` default train) or a segmentation dataset's (``c2am_tf.data.segmentation``)."""
    if dataset == "cub":
        classes = cub_classes(data_dir)
        source = cub_source(data_dir, split or "train").map(
            lambda ex: {"image": ex["image"], "labels": tf.one_hot(ex["label"], len(classes)), "path": ex["path"]})
        return source, classes, True
    source, classes = segmentation_dataset(dataset, data_dir, split)
    return source, classes, False


def classifier_training_set(source, size, batch_size, seed):
    """(batches of (image resized whole to ``size``, labels) with random flips, steps per epoch); the resized
    images are cached after the first epoch."""
    train = (source.map(lambda ex: (resize_square(ex["image"], size), ex["labels"]),
                        num_parallel_calls=tf.data.AUTOTUNE).cache()
             .shuffle(1024, seed=seed)
             .map(lambda im, y: (tf.image.random_flip_left_right(im), y), num_parallel_calls=tf.data.AUTOTUNE)
             .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return train, -(-count_examples(source) // batch_size)  # unreadable images were dropped already


def backbone_classifier(backbone_name, weights, features, train_backbone, num_classes):
    """The classifier on ``backbone_name`` (``features`` where the backbone has a choice; frozen unless
    ``train_backbone``)."""
    backbone = build_backbone(backbone_name, weights, features=features if has_feature_choice(backbone_name)
                              else "concat")
    backbone.trainable = train_backbone
    return build_classifier(backbone, num_classes)


def compile_classifier(classifier, single_label, lr, total_steps):
    """Compiles ``classifier`` with poly-decay SGD over ``total_steps``, and the loss and accuracy of single-
    label (softmax) or multi-label (a sigmoid per class) training."""
    if single_label:
        loss, metric = (keras.losses.CategoricalCrossentropy(from_logits=True),
                        keras.metrics.CategoricalAccuracy(name="acc"))
    else:
        loss, metric = (keras.losses.BinaryCrossentropy(from_logits=True),
                        keras.metrics.BinaryAccuracy(threshold=0.0, name="acc"))
    classifier.compile(optimizer=poly_sgd(lr, total_steps), loss=loss, metrics=[metric])
    return classifier


def train_classifier(target, settings, dataset, data_dir, split=None, backbone="efficientnet_lite0", weights="imagenet",
                     features=None, train_backbone=False, size=448, batch_size=16, lr=0.01, epochs=10, seed=1,
                     overwrite=False, cams_out=None):
    """``fit-classifier``'s workflow: a classifier trained on the labelled images of ``dataset`` and saved at
    ``target`` (resumable: ``run_folder.fit_and_save`` with the run's ``settings``); with ``cams_out`` the CAM file of
    every image of the split there (names checked before training). Returns {"classes", "path", "model", "cams"}."""
    cam_names = None
    if cams_out:
        try:
            cam_names = OutputNames(None, cams_out, ".npz", layout="stem", root=data_dir, overwrite=overwrite)
        except InputError:
            raise
        except ValueError as err:
            raise ConfigError("cams_out", str(err)) from None
    keras.utils.set_random_seed(seed)
    source, classes, single_label = labelled_source(dataset, data_dir, split)
    classifier = backbone_classifier(backbone, weights, features, train_backbone, len(classes))
    train, steps = classifier_training_set(source, size, batch_size, seed)
    compile_classifier(classifier, single_label, lr, steps * epochs)
    classifier, path = fit_and_save(classifier, train, target, epochs, settings, overwrite)
    count = write_split_cams(classifier, source, cam_names, size) if cam_names is not None else None
    return {"classes": classes, "path": path, "model": classifier, "cams": count}
