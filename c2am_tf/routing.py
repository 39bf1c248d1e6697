"""A routed model: a head trained on every image, plus heads trained on chosen look-alike clusters.

C2AM's contrast needs batches whose foregrounds look alike. On a mixed collection one head learns a
compromise: the general head trained on CUB, DUTS, pets and ImageNet images scores 79 GT-known on CUB
where a head trained on CUB alone scores 89. Measured (README, "ImageNet"), with 3 k-means clusters of the
same 1,875 unlabeled images: the head of the bird cluster scores like the CUB head on CUB, the head of the
street-scene cluster far below the general head on ImageNet. So each chosen cluster gets its own head and
every other image keeps the general head; ``layers.RoutedHead`` sends each image to its nearest centre.

    c2am-tf fit-routed --model runs/general/final.keras --dataset folder --data-dir images.txt \\
        --clusters 3 --out runs/routed                 # prints the clusters, asks for --own
    c2am-tf fit-routed ... --own 1 --out runs/routed   # trains cluster 1's head, writes routed.keras
"""

import collections
import dataclasses
import logging
import os

import numpy as np

from c2am_tf import data
from c2am_tf.data.grouping import cluster_centres, pooled_features, spherical_kmeans
from c2am_tf.files import write_atomically, write_json_atomically
from c2am_tf.geometry import model_box_band

log = logging.getLogger(__name__)


def cluster_images(general, cfg, k, seed=0):
    """(paths, cluster ids (N,), (k, C) centres): spherical k-means (seeded by ``seed``) on the general
    model's pooled backbone features of ``cfg``'s training images, each resized whole to ``cfg.crop``."""
    source = data.make_source(cfg.dataset, "train", cfg.data_dir, cfg.synthetic_size, cfg.synthetic_count,
                              cfg.seed, cfg.tfds_download, cfg.strict)
    paths, x = pooled_features(source, general.backbone, cfg.crop)
    if k > len(paths):
        raise ValueError(f"{k} clusters for {len(paths)} images")
    ids = spherical_kmeans(x, k, seed=seed)
    return paths, ids, cluster_centres(x, ids, k)


def describe_clusters(paths, ids, k, top=3):
    """One line per cluster: its size and its commonest folders (what the images are, for choosing)."""
    lines = []
    for j in range(k):
        mine = [p for p, i in zip(paths, ids) if i == j]
        folders = collections.Counter(os.path.basename(os.path.dirname(p)) for p in mine).most_common(top)
        lines.append(f"cluster {j}: {len(mine)} images; " + ", ".join(f"{f} {n}" for f, n in folders))
    return lines


def _copy_head(head, name, channels):
    """A fresh ``ActivationHead`` with ``head``'s config and weights (one layer belongs to one model)."""
    from c2am_tf.layers import ActivationHead

    config = dict(head.get_config(), name=name, trainable=False)
    copy = ActivationHead.from_config(config)
    copy.build((None, None, None, channels))
    for target, source in zip(copy.weights, head.weights):
        target.assign(np.asarray(source))
    return copy


def routed_model(general, specialists, centres, name="c2am_routed"):
    """A C2AM whose head is a ``RoutedHead``: cluster j's images get ``specialists[j]``'s head (a trained
    C2AM on the same backbone), every other cluster the ``general`` model's head; each head keeps its own
    polarity (so the routed model's is +1), the threshold and the box rule's band are the general model's.

    Example:
    >>> routed = routed_model(general, {1: birds}, centres)  # doctest: +SKIP
    """
    from c2am_tf.layers import Disentangler, RoutedHead
    from c2am_tf.model import C2AM

    centres = np.asarray(centres, np.float32)
    if any(not 0 <= j < len(centres) for j in specialists):
        raise ValueError(f"clusters {sorted(specialists)} are not all among the {len(centres)} centres")
    channels = int(general.backbone.output_shape[-1])
    sources = [general] + [specialists[j] for j in sorted(specialists)]
    heads = [_copy_head(m.head, f"head_{i}", channels) for i, m in enumerate(sources)]
    routes = [1 + sorted(specialists).index(j) if j in specialists else 0 for j in range(len(centres))]
    polarities = [float(np.asarray(m.polarity)) for m in sources]
    head = RoutedHead(heads, routes, polarities, centres, name="routed_head")
    model = C2AM(general.backbone, Disentangler(head, name="disentangler"), alpha=general.alpha,
                 loss_variant=general.loss_variant, recipe=general.recipe, weight_decay=general.weight_decay,
                 backbone_bn=general.backbone_bn, box_band=model_box_band(general), name=name)
    model.threshold.assign(float(np.asarray(general.threshold)))
    return model


def fit_routed(general, cfg, k, own, seed=0, overwrite=False):
    """Clusters ``cfg``'s training images into ``k`` (k-means seeded by ``seed``), trains one head (``cfg``'s
    recipe) on each cluster in ``own`` under ``cfg.out/cluster<j>`` and returns (the routed model, the cluster
    description lines). Writes ``cfg.out/clusters.json`` (path -> cluster) and each cluster's image list."""
    from c2am_tf.training import run_training

    own = sorted(set(own))
    bad = [j for j in own if not 0 <= j < k]
    if bad:
        raise ValueError(f"--own {bad}: there are {k} clusters (0..{k - 1})")
    paths, ids, centres = cluster_images(general, cfg, k, seed)
    paths = [os.path.abspath(p) for p in paths]  # a list's relative entries are read from its own folder
    if not os.path.exists(paths[0]):
        raise ValueError(f"each cluster's head trains on a list of image files; --dataset {cfg.dataset} gives "
                         f"none ({paths[0]!r}): use a folder or a list of images")
    lines = describe_clusters(paths, ids, k)
    os.makedirs(cfg.out, exist_ok=True)
    write_json_atomically(os.path.join(cfg.out, "clusters.json"), dict(zip(paths, ids.tolist())), indent=0)
    specialists = {}
    for j in own:
        images = os.path.join(cfg.out, f"cluster{j}.txt")
        write_atomically(images, ("\n".join(p for p, i in zip(paths, ids) if i == j) + "\n").encode())
        sub = dataclasses.replace(cfg, dataset="folder", data_dir=images, out=os.path.join(cfg.out, f"cluster{j}"),
                                  eval_every=0)
        log.info("training the head of %s", lines[j])
        specialists[j], _, _ = run_training(sub, overwrite=overwrite)
    return routed_model(general, specialists, centres), lines
