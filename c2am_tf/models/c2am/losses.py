"""The C2AM contrastive loss (paper eqs. 2-9) with rank weighting.

Two variants:
- ``"reference"``: what the authors' code computes (CVI-SZU/CCAM ``SimMaxLoss`` /
  ``SimMinLoss``): cosine similarities clamped to [0.0005, 0.9995]; each entry
  ranked within its own row, diagonal included, minus 1 (so the self pair gets
  weight exp(+alpha)); means over all n*n entries.
- ``"paper"``: eqs. 2-9 as printed: positives ranked over all i != j pairs
  (rank 0 = most similar), weight exp(-alpha * rank), averaged with 1/(n(n-1));
  negatives averaged with 1/n^2. Similarities use the same clamp, which keeps
  log() finite.
"""

import keras
import tensorflow as tf

VARIANTS = ("reference", "paper")
CLAMP_MIN, CLAMP_MAX = 0.0005, 0.9995
_NORM_EPS = 1e-12


def l2_normalize(x):
    """x / max(||x||, 1e-12) per row, like torch.nn.functional.normalize.

    (tf.math.l2_normalize puts its epsilon on the squared norm, which differs
    for rows with norm below ~1e-6; the sqrt is guarded so zero rows get a
    zero gradient instead of NaN.)
    """
    sq = tf.reduce_sum(tf.square(x), axis=1, keepdims=True)
    positive = sq > 0
    norm = tf.where(positive, tf.sqrt(tf.where(positive, sq, tf.ones_like(sq))), 0.0)
    return x / tf.maximum(norm, _NORM_EPS)


def cosine_similarity(a, b):
    """Clamped cosine similarity matrix (n, m) between the rows of a and b."""
    sim = tf.matmul(l2_normalize(a), l2_normalize(b), transpose_b=True)
    return tf.clip_by_value(sim, CLAMP_MIN, CLAMP_MAX)


def row_rank(sim):
    """Each entry's 0-based place in its own row sorted descending (stable)."""
    order = tf.argsort(sim, axis=1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=1, stable=True)


def pair_rank(sim):
    """Rank (0 = most similar) of each off-diagonal entry among all i != j pairs."""
    n = tf.shape(sim)[0]
    off = ~tf.eye(n, dtype=tf.bool)
    values = tf.boolean_mask(sim, off)
    order = tf.argsort(values, direction="DESCENDING", stable=True)
    ranks = tf.argsort(order, stable=True)
    return tf.scatter_nd(tf.where(off), ranks, tf.shape(sim, out_type=tf.int64))


def _sim_max_reference(x, alpha, rows=None):
    # rows: a part of x's rows (one replica's); each row is ranked on its own, so the rows'
    # sum over n^2 is their exact share of the full mean
    sim = cosine_similarity(x if rows is None else rows, x)
    loss = tf.maximum(-tf.math.log(sim), 0.0)
    rank = tf.stop_gradient(tf.cast(row_rank(sim) - 1, tf.float32))
    weighted = loss * tf.exp(-rank * alpha)
    if rows is None:
        return tf.reduce_mean(weighted)
    return tf.reduce_sum(weighted) / tf.cast(tf.shape(x)[0] ** 2, tf.float32)


def _sim_max_paper(x, alpha):
    sim = cosine_similarity(x, x)
    n = tf.shape(sim)[0]
    rank = tf.stop_gradient(tf.cast(pair_rank(sim), tf.float32))
    off = 1.0 - tf.eye(n, dtype=tf.float32)
    weighted = off * tf.exp(-alpha * rank) * -tf.math.log(sim)
    pairs = tf.cast(n * (n - 1), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(weighted), pairs)


def _sim_min(bg, fg, bg_rows=None):
    if bg_rows is None:
        return tf.reduce_mean(-tf.math.log(1.0 - cosine_similarity(bg, fg)))
    pairs = tf.cast(tf.shape(bg)[0] * tf.shape(fg)[0], tf.float32)
    return tf.reduce_sum(-tf.math.log(1.0 - cosine_similarity(bg_rows, fg))) / pairs


@keras.saving.register_keras_serializable(package="c2am_tf")
class C2AMLoss:
    """Contrastive loss on foreground/background representations.

    ``loss(fg, bg)`` returns SimMax(bg) + SimMin(bg, fg) + SimMax(fg);
    ``loss.components(fg, bg)`` returns the three parts in that order.

    Args:
        alpha: smoothness of the rank weighting exp(-alpha * rank).
        variant: ``"reference"`` (the authors' code) or ``"paper"`` (eqs. 2-9).

    Example:
    >>> loss = C2AMLoss(alpha=0.05)
    >>> fg, bg = tf.random.normal((8, 32)), tf.random.normal((8, 32))
    >>> float(loss(fg, bg)) > 0
    True
    """

    def __init__(self, alpha=0.05, variant="reference"):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.variant = variant

    def components(self, fg, bg, rows=None):
        """(SimMax(bg), SimMin(bg, fg), SimMax(fg)) as float32 scalars.

        ``rows`` = (fg rows, bg rows), a part of ``fg`` and ``bg`` (one replica's own vectors;
        ``reference`` variant only, whose ranks are per row): the parts' share of each term,
        computed on len(rows) x n similarities instead of n x n. Summed over the parts that
        cover the batch, they give the full terms exactly.
        """
        fg = tf.cast(fg, tf.float32)
        bg = tf.cast(bg, tf.float32)
        if rows is not None:
            if self.variant != "reference":
                raise ValueError("rows: only the 'reference' variant ranks each row on its own")
            fg_rows, bg_rows = (tf.cast(r, tf.float32) for r in rows)
            return (_sim_max_reference(bg, self.alpha, bg_rows), _sim_min(bg, fg, bg_rows),
                    _sim_max_reference(fg, self.alpha, fg_rows))
        sim_max = _sim_max_reference if self.variant == "reference" else _sim_max_paper
        return sim_max(bg, self.alpha), _sim_min(bg, fg), sim_max(fg, self.alpha)

    @property
    def splits_by_row(self):
        """Whether ``components`` can take ``rows`` (each replica computing its own rows only)."""
        return self.variant == "reference"

    def __call__(self, fg, bg):
        a, b, c = self.components(fg, bg)
        return a + b + c

    def get_config(self):
        """Constructor arguments, for serialization."""
        return {"alpha": self.alpha, "variant": self.variant}

    @classmethod
    def from_config(cls, config):
        """Inverse of get_config."""
        return cls(**config)
