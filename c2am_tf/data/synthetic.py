"""Procedural objects on textured backgrounds, with exact boxes and masks.

Offline default dataset: no download, deterministic given the seed. Each image
holds one object (an ellipse or a polygon, 15-45% of the image side to 70%)
filled with a saturated, high-frequency texture over a smooth, low-saturation
background texture: foreground and background differ in appearance across
images, which is exactly what C2AM's cross-image contrast can learn.
"""

import numpy as np
import tensorflow as tf

from c2am_tf.data.sharding import take_shard


def _smooth_noise(rng, size, cells):
    grid = rng.random((cells, cells, 3)).astype(np.float32)
    img = tf.image.resize(grid[None], (size, size), method="bicubic")[0].numpy()
    return np.clip(img, 0, 1)


def synthetic_example(index, size=160, seed=0):
    """(image uint8 (size, size, 3), mask uint8 (size, size), box [x0, y0, x1, y1]) for one index."""
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Background: smooth, muted colours plus faint low-frequency stripes.
    bg = 0.25 + 0.5 * _smooth_noise(rng, size, rng.integers(2, 5))
    gray = bg.mean(axis=2, keepdims=True)
    bg = 0.6 * gray + 0.4 * bg
    angle = rng.uniform(0, np.pi)
    stripes = 0.05 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(6, 14))
    bg = bg + stripes[..., None]
    # Object: an ellipse or a convex polygon somewhere inside the image.
    h = rng.uniform(0.3, 0.7) * size
    w = rng.uniform(0.3, 0.7) * size
    cy = rng.uniform(h / 2, size - h / 2)
    cx = rng.uniform(w / 2, size - w / 2)
    if rng.random() < 0.5:
        mask = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1.0
    else:
        k = rng.integers(3, 7)
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        px = cx + np.cos(angles) * w / 2
        py = cy + np.sin(angles) * h / 2
        mask = np.ones((size, size), bool)
        for i in range(k):  # inside every edge of a convex, counter-clockwise polygon
            x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % k], py[(i + 1) % k]
            mask &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
        if mask.sum() < 16:  # degenerate polygon: fall back to its ellipse
            mask = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1.0
    hue = rng.random(3)
    colour = np.eye(3, dtype=np.float32)[rng.integers(3)] * 0.7 + 0.3 * hue
    period = rng.uniform(3, 6)
    pattern = 0.5 + 0.5 * np.sign(np.sin(xx / period) * np.sin(yy / period))
    fg = colour[None, None, :] * (0.55 + 0.45 * pattern[..., None])
    image = np.where(mask[..., None], fg, bg)
    image = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    return (image * 255).astype(np.uint8), mask.astype(np.uint8), box


def synthetic_arrays(num_images, size=160, seed=0, indices=None):
    """Stacked (images (N, S, S, 3), masks (N, S, S), boxes (N, 1, 4)) arrays of images 0..N-1
    (or of ``indices``)."""
    ex = [synthetic_example(i, size, seed) for i in (range(num_images) if indices is None else indices)]
    images = np.stack([e[0] for e in ex])
    masks = np.stack([e[1] for e in ex])
    boxes = np.asarray([[e[2]] for e in ex], np.float32)
    return images, masks, boxes


def synthetic_source(num_images=512, size=160, seed=0, split="train", shard=None):
    """Dataset of {'image', 'boxes' (1, 4), 'mask', 'path'}; train and test use disjoint seeds.
    ``shard``: only this input pipeline's images (see ``c2am_tf.data.sharding``)."""
    split_seed = seed * 2 + (0 if split == "train" else 1)
    indices = take_shard(range(num_images), shard, "synthetic images")
    images, masks, boxes = synthetic_arrays(num_images, size, split_seed, indices)
    paths = [f"synthetic/{split}/{i:05d}" for i in indices]
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "boxes": boxes, "mask": masks, "path": paths}
    )
