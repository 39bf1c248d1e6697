"""C2AMLoss: parity with the authors' loss (A_losses*.npz), the paper variant, degenerate batches."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import golden

from c2am_tf.losses import C2AMLoss, cosine_similarity, row_rank


def _cases(d):
    return sorted({k.split("_")[0] for k in d.keys()})


def _rel(got, want):
    return np.max(np.abs(np.asarray(got) - np.asarray(want)) / np.maximum(np.abs(want), 1e-6))


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
            got = [float(x) for x in parts] + [float(total)]
            want = [d[p + k][j] for k in ("_simmax_bg", "_simmin_bg_fg", "_simmax_fg", "_total")]
            assert _rel(got, want) < 1e-5, (p, alpha, got, want)
            if p + "_grad_fg" in d:
                g_fg, g_bg = tape.gradient(total, [fg, bg])
                for g, w in ((g_fg, d[p + "_grad_fg"][j]), (g_bg, d[p + "_grad_bg"][j])):
                    err = np.max(np.abs(g.numpy() - w)) / max(np.max(np.abs(w)), 1e-12)
                    assert err < 1e-5, (p, alpha, err)
                checked_grads += 1
    assert checked_grads > 0


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
