"""C2AMLoss: parity with the authors' loss (A_losses*.npz), the paper variant, degenerate batches."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import golden

from c2am_tf.models.c2am.losses import C2AMLoss, cosine_similarity, row_rank


def _cases(d):
    return sorted({k.split("_")[0] for k in d.keys()})


# Tolerances from float32 error analysis (u = 2^-24, the unit roundoff), the same on every machine;
# the golden numbers are float32 from torch, ours float32 from TensorFlow: two roundings, hence the 2.
U = 2.0 ** -24


def _value_tolerance(d, p, alpha, want):
    """Absolute error bound of each loss value (SimMax(bg), SimMin, SimMax(fg), total), first order.

    A float32 cosine of two C-dim unit vectors is off by ds <= 2u sqrt(C) + 4u (pairwise summation plus
    the normalizations). -log(s) and -log(1 - s) turn that into ds / s and ds / (1 - s): up to 2000 ds at
    the clamps 0.0005 / 0.9995, which is why a relative 1e-5 failed on one machine (case c060, n=2, C=8,
    where an entry sits near a clamp). Rank weights are at most exp(alpha). The mean of n^2 terms adds
    u log2(n^2) of the value. Observed errors on AVX-512 and AVX2 machines stay below 8% of this bound.
    """
    n, c = d[p + "_fg"].shape
    ds = 2 * U * np.sqrt(c) + 4 * U
    clip = lambda s: np.clip(s, 0.0005, 0.9995)  # noqa: E731
    w = np.exp(abs(alpha))
    b_bg = np.mean(w / clip(d[p + "_sim_bg_bg"])) * ds
    b_bf = np.mean(1.0 / (1.0 - clip(d[p + "_sim_bg_fg"]))) * ds
    b_fg = np.mean(w / clip(d[p + "_sim_fg_fg"])) * ds
    bound = np.array([b_bg, b_bf, b_fg, b_bg + b_bf + b_fg])
    return 2 * (bound + U * np.log2(n * n + 1) * np.abs(want))


def _gradient_tolerance(d, p):
    """Error bound of a gradient entry relative to the largest one: each entry sums n pair terms of
    C-dim products, whose rounding errors accumulate like a random walk, sqrt(C n) u (Higham 2002,
    sec. 2.8); x2 for two implementations, x2 margin. (The 1e-5 used before was crossed at 1.097e-5 by
    case c023, n=33, C=3072, whose bound is 7.6e-5.)"""
    n, c = d[p + "_fg"].shape
    return 4 * U * np.sqrt(c * n)


@pytest.mark.parametrize("name", ["A_losses", "A_losses_edge"])
def test_reference_values_and_gradients_match_golden(name):
    d = golden(name)
    checked_grads = 0
    for p in _cases(d):
        fg, bg = tf.constant(d[p + "_fg"]), tf.constant(d[p + "_bg"])
        for j, alpha in enumerate(d[p + "_alphas"]):
            loss = C2AMLoss(alpha=float(alpha), variant="reference")
            with tf.GradientTape() as tape:
                tape.watch([fg, bg])
                parts = loss.components(fg, bg)
                total = parts[0] + parts[1] + parts[2]
            got = np.array([float(x) for x in parts] + [float(total)])
            want = np.array([d[p + k][j] for k in ("_simmax_bg", "_simmin_bg_fg", "_simmax_fg", "_total")],
                            np.float64)
            tol = _value_tolerance(d, p, alpha, want)
            assert np.all(np.abs(got - want) <= tol), (p, alpha, got, want, tol)
            if p + "_grad_fg" in d:
                g_fg, g_bg = tape.gradient(total, [fg, bg])
                for g, w in ((g_fg, d[p + "_grad_fg"][j]), (g_bg, d[p + "_grad_bg"][j])):
                    err = np.max(np.abs(g.numpy() - w)) / max(np.max(np.abs(w)), 1e-12)
                    assert err < _gradient_tolerance(d, p), (p, alpha, err)
                checked_grads += 1
    assert checked_grads > 0


def _numpy_reference(fg, bg, alpha):
    """The authors' loss in float64 numpy, transcribed from ../shared/golden/README.md (behaviour 1-2):
    cosines clamped to [0.0005, 0.9995]; SimMax weights exp(-alpha (place in its row, descending,
    diagonal included, - 1)); means over all n^2 entries; SimMin = mean -log(1 - cos(bg, fg))."""
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def cos(a, b):
        return np.clip(unit(a) @ unit(b).T, 0.0005, 0.9995)

    def sim_max(x):
        s = cos(x, x)
        place = np.argsort(np.argsort(-s, axis=1, kind="stable"), axis=1, kind="stable")
        return np.mean(-np.log(s) * np.exp(-alpha * (place - 1)))

    fg, bg = np.asarray(fg, np.float64), np.asarray(bg, np.float64)
    parts = [sim_max(bg), np.mean(-np.log(1 - cos(bg, fg))), sim_max(fg)]
    return np.array(parts + [sum(parts)])


def test_the_numpy_transcription_matches_golden():
    """Gives the generated-case test below its authority: the transcription is the reference."""
    d = golden("A_losses")
    for p in _cases(d):
        for j, alpha in enumerate(d[p + "_alphas"]):
            want = np.array([d[p + k][j] for k in ("_simmax_bg_f64", "_simmin_bg_fg_f64", "_simmax_fg_f64",
                                                   "_total_f64")])
            got = _numpy_reference(d[p + "_fg"], d[p + "_bg"], float(alpha))
            np.testing.assert_allclose(got, want, rtol=1e-7, err_msg=p)  # observed: 2.5e-8


@pytest.mark.parametrize("n, c, kind", [(2, 8, "relu"), (4, 64, "signed"), (16, 256, "relu"), (33, 64, "signed")])
@pytest.mark.parametrize("alpha", [0.05, 0.75])
def test_loss_matches_the_reference_on_generated_cases(n, c, kind, alpha):
    """The parity logic without ../shared: generated features against the float64 transcription."""
    rng = np.random.RandomState(n * 1000 + c)
    fg, bg = rng.randn(n, c).astype(np.float32), rng.randn(n, c).astype(np.float32)
    if kind == "relu":
        fg, bg = np.maximum(fg, 0), np.maximum(bg, 0)
    parts = C2AMLoss(alpha=alpha, variant="reference").components(tf.constant(fg), tf.constant(bg))
    got = np.array([float(x) for x in parts] + [float(sum(parts))])
    want = _numpy_reference(fg, bg, alpha)
    ds = 2 * U * np.sqrt(c) + 4 * U  # one float32 rounding against float64: the bound of _value_tolerance, halved
    assert np.all(np.abs(got - want) <= 2000 * ds + U * np.log2(n * n + 1) * np.abs(want)), (got, want)
    assert np.all(np.abs(got - want) <= 1e-4 * np.abs(want)), (got, want)  # and close in plain terms


def test_similarities_and_ranks_match_golden():
    d = golden("A_losses")
    for p in _cases(d)[:24]:
        fg, bg = d[p + "_fg"], d[p + "_bg"]
        np.testing.assert_allclose(cosine_similarity(bg, fg).numpy(), d[p + "_sim_bg_fg"], atol=2e-6)
        sim = cosine_similarity(fg, fg)
        np.testing.assert_allclose(sim.numpy(), d[p + "_sim_fg_fg"], atol=2e-6)
        # torch's sort orders tied (clamped) entries arbitrarily; tied entries have
        # equal losses, so only the ranks of untied entries matter and must agree.
        want = d[p + "_sim_fg_fg"]
        got_rank = row_rank(tf.constant(want)).numpy()
        for i, row in enumerate(want):
            values, counts = np.unique(row, return_counts=True)
            untied = np.isin(row, values[counts == 1])
            np.testing.assert_array_equal(got_rank[i][untied], d[p + "_rank_fg"][i][untied])
            assert sorted(got_rank[i]) == sorted(d[p + "_rank_fg"][i])


def _paper_numpy(fg, bg, alpha):
    def sim(a, b):
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return np.clip(a @ b.T, 0.0005, 0.9995)

    def pos(x):
        s = sim(x, x)
        n = len(x)
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        order = sorted(pairs, key=lambda ij: -s[ij])  # stable: ties keep row-major order
        total = sum(np.exp(-alpha * r) * -np.log(s[ij]) for r, ij in enumerate(order))
        return total / (n * (n - 1))

    neg = np.mean(-np.log(1 - sim(bg, fg)))
    return pos(bg), neg, pos(fg)


def test_paper_variant_matches_equations():
    rng = np.random.RandomState(3)
    fg, bg = rng.rand(6, 10).astype(np.float32), rng.randn(6, 10).astype(np.float32)
    for alpha in (0.0, 0.05, 0.5):
        got = [float(x) for x in C2AMLoss(alpha, "paper").components(fg, bg)]
        np.testing.assert_allclose(got, _paper_numpy(fg, bg, alpha), rtol=1e-5)


def test_variants_differ_and_alpha_zero_removes_weighting():
    rng = np.random.RandomState(0)
    fg, bg = rng.rand(8, 16).astype(np.float32), rng.rand(8, 16).astype(np.float32)
    ref = float(C2AMLoss(0.25, "reference")(fg, bg))
    paper = float(C2AMLoss(0.25, "paper")(fg, bg))
    assert abs(ref - paper) > 1e-3
    # alpha = 0: the paper positive term is the plain mean of -log(s) over i != j.
    s = cosine_similarity(fg, fg).numpy()
    off = ~np.eye(8, dtype=bool)
    want = np.mean(-np.log(s[off]))
    assert float(C2AMLoss(0.0, "paper").components(fg, bg)[2]) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("kind", ["n1", "identical", "zero_rows", "fg_equals_bg"])
def test_degenerate_batches_are_finite(variant, kind):
    rng = np.random.RandomState(1)
    fg = rng.rand(4, 8).astype(np.float32)
    bg = rng.rand(4, 8).astype(np.float32)
    if kind == "n1":
        fg, bg = fg[:1], bg[:1]
    elif kind == "identical":
        fg = np.repeat(fg[:1], 4, axis=0)
    elif kind == "zero_rows":
        fg[1] = 0
        bg[:] = 0
    else:
        bg = fg.copy()
    fg, bg = tf.constant(fg), tf.constant(bg)
    with tf.GradientTape() as tape:
        tape.watch([fg, bg])
        total = C2AMLoss(0.05, variant)(fg, bg)
    grads = tape.gradient(total, [fg, bg])
    assert np.isfinite(float(total))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="variant"):
        C2AMLoss(variant="nope")
    with pytest.raises(ValueError, match="alpha"):
        C2AMLoss(alpha=-1)
    assert C2AMLoss(0.3, "paper").get_config() == {"alpha": 0.3, "variant": "paper"}


@pytest.mark.parametrize("parts", [2, 3])
def test_row_parts_of_the_reference_loss_sum_to_the_whole(parts):
    """Each replica's own rows against every column: the parts add up to the full terms exactly."""
    rng = np.random.default_rng(7)
    fg = tf.constant(rng.normal(size=(10, 16)), tf.float32)
    bg = tf.constant(rng.normal(size=(10, 16)) + 0.5, tf.float32)
    loss = C2AMLoss(0.05, "reference")
    whole = [float(x) for x in loss.components(fg, bg)]
    bounds = np.linspace(0, 10, parts + 1).astype(int)  # uneven parts too
    summed = np.sum([[float(x) for x in loss.components(fg, bg, rows=(fg[a:b], bg[a:b]))]
                     for a, b in zip(bounds, bounds[1:])], axis=0)
    np.testing.assert_allclose(summed, whole, rtol=1e-5)
    assert loss.splits_by_row and not C2AMLoss(0.05, "paper").splits_by_row
    with pytest.raises(ValueError, match="only the 'reference' variant"):
        C2AMLoss(0.05, "paper").components(fg, bg, rows=(fg[:5], bg[:5]))
