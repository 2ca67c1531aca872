"""Tests of the batch-reuse simulators (popdyn.models.reuse_sim): exact vs full engine, d->inf
drift, two-phase training, samples to weak recovery and the scaling study."""

import json
import math

import numpy as np
import pytest

from popdyn.errors import NumericalError
from popdyn.models.reuse import ReuseProblem
from popdyn.models.reuse_sim import (
    ReuseExactStepper,
    ReuseFullStepper,
    _bartlett,
    _median_ci,
    samples_to_reach,
    scaling_study,
    two_phase,
)
from popdyn.simulation import SimulationConfig, make_stepper, simulate

#: Rounding only: the exact engine and the full engine fed the same minibatch agree to this
#: (a few hundred flops on O(1) numbers at d <= 12).
SAME_DRAW_ATOL = 1e-12
#: Statistical agreement in units of the combined standard error (fixed seeds; a 3-sigma
#: band fails by chance with probability ~3e-3 per comparison).
ENGINE_SIGMAS = 3.0
#: Monte Carlo vs closed form / quadrature, in standard errors (fixed seeds).
MC_SIGMAS = 4.0
#: theory/lee2024/equations.md reference drift: tanh student, normalised h3 target, eta_tilde = 0.5, r = 2.
THEORY_D_R2 = {0.0: -0.05564, 0.2: -0.09841}
#: The reference values are quoted to 4-5 significant digits.
THEORY_ROUND = 5e-5
#: Gauss-Hermite nodes per axis for the d->inf drift.  sigma'(z_k) composes tanh' with the
#: polynomial label, so convergence is slow: measured 200 vs 300 nodes differ by < 2e-9 for
#: r = 2 and by 7e-6 for r = 3 -- far below the Monte Carlo SE (~1e-3) of the simulations.
GH_NODES = 300
#: Agreement with reuse.py's drift (its own adaptive quadrature) for r = 2, where this rule
#: is converged to ~2e-9.
REUSE_DRIFT_ATOL = 1e-8


def _problem(reuse=2, xi=1.0, student="tanh", teacher="he3", a_star=1.0):
    return ReuseProblem(student, teacher, reuse=reuse, interpolation=xi, a_star=a_star)


def _streams(seed):
    ss = np.random.SeedSequence(seed).spawn(4)
    return {k: np.random.default_rng(s) for k, s in zip(("model", "init", "data", "noise"), ss)}


# --------------------------------------------------------------------------------------
# exact engine == full engine on the same minibatch (deterministic)
# --------------------------------------------------------------------------------------
SAME_DRAW_CASES = [(1, 1.0, 1, 9), (2, 1.0, 1, 9), (3, 0.5, 1, 9), (2, 1.0, 3, 12), (3, 0.3, 4, 12),
                   (2, 0.5, 3, 4)]  # last: d - 2 < B (singular Wishart)


@pytest.mark.parametrize("reuse,xi,B,d", SAME_DRAW_CASES)
def test_exact_update_equals_full_update_on_the_same_minibatch(reuse, xi, B, d):
    """Reconstruct (z, s, S) from the full engine's minibatch; the exact map must give the same m'."""
    prob = _problem(reuse, xi)
    R, eta = 6, 0.9
    cfg = SimulationConfig(d=d, eta=eta, batch=B, replicas=R, init="uniform", same_init=False)
    full = ReuseFullStepper(prob, cfg, _streams(1))
    exact = ReuseExactStepper(prob, SimulationConfig(d=d, eta=eta, batch=B, replicas=R, engine="exact"), _streams(2))
    state = full.init_state()
    W0 = state["W"][:, 0].copy()
    theta = full.theta
    noise = np.random.default_rng(7)
    X = np.random.default_rng(7).standard_normal((R, B, d))  # the draw full.step will make
    full.step(state, noise)
    m_full = full.observe(state)["m"]
    m = W0 @ theta
    e = theta[None, :] - m[:, None] * W0
    e /= np.linalg.norm(e, axis=1)[:, None]
    z = np.einsum("rbd,rd->rb", X, W0)
    s = np.einsum("rbd,rd->rb", X, e)
    G = X - z[..., None] * W0[:, None, :] - s[..., None] * e[:, None, :]  # S = G G^T, a (B x d) factor
    m_exact = exact.update(m, z, s, G)
    np.testing.assert_allclose(m_exact, m_full, rtol=0, atol=SAME_DRAW_ATOL)
    if B == 1:  # the online fast path (a 1 x 1 factor sqrt(|g|^2)) must agree too
        chi = np.sqrt(np.einsum("rbd,rbd->rb", G, G))[..., None]
        np.testing.assert_allclose(exact.update(m, z, s, chi), m_full, rtol=0, atol=SAME_DRAW_ATOL)
    assert np.max(np.abs(m_full - m)) > 1e-3  # the step moved m (the comparison is not vacuous)


def test_reuse_one_reproduces_single_index_exact_stepper():
    """r = 1, xi = 1 is online SGD: same draws -> the same m' as SingleIndexExactStepper."""
    from popdyn.models.single_index import SingleIndexProblem

    d, B, R, eta = 300, 3, 1000, 0.02
    si, noise_si = make_stepper(SingleIndexProblem("tanh", "he3"), d=d, eta=eta, batch=B, replicas=R, init=0.3,
                                engine="exact", rng=4)
    ru = ReuseExactStepper(_problem(1), SimulationConfig(d=d, eta=eta, batch=B, replicas=R, init=0.3,
                                                         engine="exact"), _streams(0))
    m = np.linspace(-0.9, 0.9, R)
    rng = np.random.default_rng(11)
    z, s = rng.standard_normal((2, R, B))
    chi2 = 2.0 * rng.standard_gamma((d - 2) / 2.0, size=R)
    # one online step uses S only through c^T S c, which SingleIndexExactStepper draws as |c|^2 chi2:
    # the factor F = sqrt(chi2) I_B gives exactly that quadratic form
    F = np.sqrt(chi2)[:, None, None] * np.eye(B)[None]
    np.testing.assert_allclose(ru.update(m, z, s, F), si.update(m, z, s, chi2), rtol=0, atol=SAME_DRAW_ATOL)
    # and in law, through simulate (independent seeds)
    a = simulate(SingleIndexProblem("tanh", "he3"), d=d, eta=eta, batch=B, steps=20, replicas=4000, init=0.3,
                 engine="exact", rng=1, n_record=2).m[-1]
    b = simulate(_problem(1), d=d, eta=eta, batch=B, steps=20, replicas=4000, init=0.3, engine="exact", rng=2,
                 n_record=2).m[-1]
    se = math.hypot(a.std(), b.std()) / math.sqrt(a.size)
    assert abs(a.mean() - b.mean()) <= ENGINE_SIGMAS * se
    var_se = math.hypot(a.var(), b.var()) * math.sqrt(2.0 / a.size)  # Gaussian-approximate SE of a variance
    assert abs(a.var() - b.var()) <= ENGINE_SIGMAS * var_se


def test_bartlett_factor_has_wishart_moments():
    """E[S] = n I, Var(S_ii) = 2n, Var(S_ij) = n for S = F F^T ~ Wishart(n, I_B)."""
    n, B, R = 7, 3, 200_000
    F = _bartlett(np.random.default_rng(3), (R,), B, n)
    S = F @ F.transpose(0, 2, 1)
    mean = S.mean(axis=0)
    se = S.std(axis=0) / math.sqrt(R)
    assert np.all(np.abs(mean - n * np.eye(B)) <= MC_SIGMAS * se)
    v = S.var(axis=0)
    expect = n * (np.ones((B, B)) + np.eye(B))
    assert np.all(np.abs(v - expect) <= 0.05 * expect)  # 5%: SE of a variance of chi2-like entries ~1.3% here


# --------------------------------------------------------------------------------------
# one-iteration law: exact vs full engine (statistical)
# --------------------------------------------------------------------------------------
LAW_CASES = [(1, 1.0, 1), (2, 1.0, 1), (2, 0.5, 1), (2, 1.0, 3), (2, 0.5, 3)]


def _one_iteration(prob, d, eta_tilde, B, m0, R, engine, seed):
    st, noise = make_stepper(prob, d=d, eta=eta_tilde * B / d, batch=B, replicas=R, init=m0, engine=engine, rng=seed)
    state = st.init_state()
    st.step(state, noise)
    return (st.observe(state)["m"] - m0) * d / B


@pytest.mark.parametrize("reuse,xi,B", LAW_CASES)
def test_one_iteration_law_exact_vs_full(reuse, xi, B):
    prob = _problem(reuse, xi)
    d, R, m0 = 40, 60_000, 0.3
    a = _one_iteration(prob, d, 2.0, B, m0, R, "exact", 1)
    b = _one_iteration(prob, d, 2.0, B, m0, R, "full", 2)
    se = math.hypot(a.std(), b.std()) / math.sqrt(R)
    assert abs(a.mean() - b.mean()) <= ENGINE_SIGMAS * se, f"means {a.mean()} vs {b.mean()} (se {se})"
    qa, qb = a * a, b * b  # second moments: the variance of the increment
    se2 = math.hypot(qa.std(), qb.std()) / math.sqrt(R)
    assert abs(qa.mean() - qb.mean()) <= ENGINE_SIGMAS * se2


# --------------------------------------------------------------------------------------
# d -> infinity drift
# --------------------------------------------------------------------------------------
def _drift_quadrature(prob, m, eta_tilde):
    """Contract formula for D_r(m) by a tensor Gauss-Hermite rule (independent of reuse.py)."""
    x, w = np.polynomial.hermite_e.hermegauss(GH_NODES)
    w = w / w.sum()
    Z0, V = np.meshgrid(x, x, indexing="ij")
    Wt = np.outer(w, w)
    T = m * Z0 + math.sqrt(1 - m * m) * V
    y = prob.a_star * prob.teacher(T)
    dsig = prob.student.derivative
    r, xi = prob.reuse, prob.interpolation
    z = Z0.copy()
    total, ssum = 0.0, np.zeros_like(z)
    for _ in range(r):
        with np.errstate(over="ignore"):  # tanh' = 1/cosh^2 overflows to the correct 0 at |z| > 355
            sp = dsig(z)
        total += np.sum(Wt * (eta_tilde * y * sp * (T - z * m) - 0.5 * eta_tilde**2 * m * y * y * sp * sp))
        ssum += sp
        z = z + eta_tilde * y * sp
    return xi * total + 0.5 * xi * (1 - xi) * m * eta_tilde**2 * np.sum(Wt * y * y * ssum * ssum)


def test_quadrature_drift_reproduces_theory_values():
    prob = _problem(2)
    for m, ref in THEORY_D_R2.items():
        assert abs(_drift_quadrature(prob, m, 0.5) - ref) <= THEORY_ROUND, m


DRIFT_CASES = [(2, 1.0, 0.0), (2, 1.0, 0.2), (2, 0.5, 0.2), (3, 1.0, 0.1)]


@pytest.mark.parametrize("reuse,xi,m", DRIFT_CASES)
def test_large_d_mean_increment_matches_drift(reuse, xi, m):
    """At d = 20000 the mean one-iteration increment * d / B matches D_r(m) (O(1/d) bias << SE)."""
    prob = _problem(reuse, xi)
    d, R, eta_tilde = 20_000, 1_000_000, 0.5
    x = _one_iteration(prob, d, eta_tilde, 1, m, R, "exact", 3)
    se = x.std() / math.sqrt(R)
    ref = _drift_quadrature(prob, m, eta_tilde)
    assert abs(x.mean() - ref) <= MC_SIGMAS * se, f"simulated {x.mean()} +- {se} vs D = {ref}"
    if reuse == 2:  # reuse.py's d->inf drift, an independent implementation of the same formula
        assert float(prob.drift(m, eta_tilde)) == pytest.approx(ref, abs=REUSE_DRIFT_ATOL)


# --------------------------------------------------------------------------------------
# simulate: runs and resumes
# --------------------------------------------------------------------------------------
class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("engine", ["exact", "full"])
def test_simulate_runs_and_resumes(tmp_path, monkeypatch, engine):
    prob = _problem(2, 0.7)
    common = dict(d=25, eta=0.04, steps=50, batch=2, replicas=5, init=0.2, same_init=False, n_record=12,
                  engine=engine)
    ref = simulate(prob, rng=5, **common)
    assert ref.m.shape == (ref.t.size, 5) and ref.model == "reuse"
    cls = ReuseExactStepper if engine == "exact" else ReuseFullStepper
    orig, count = cls.step, {"n": 0}

    def wrapped(self, *args):
        count["n"] += 1
        if count["n"] > 23:
            raise _Interrupt
        return orig(self, *args)

    ck = tmp_path / "run.npz"
    with monkeypatch.context() as mp:
        mp.setattr(cls, "step", wrapped)
        with pytest.raises(_Interrupt):
            simulate(prob, rng=5, checkpoint=ck, checkpoint_steps=5, checkpoint_every=1e9, **common)
    resumed = simulate(prob, rng=5, checkpoint=ck, **common)
    assert resumed.meta["resumed_from"] == 20
    np.testing.assert_array_equal(resumed.m, ref.m)


def test_full_stepper_sign_flip_equals_negated_teacher():
    """A neuron with sign -1 follows exactly the dynamics of teacher -y with sign +1."""
    d, R = 15, 3
    cfg = SimulationConfig(d=d, eta=0.1, batch=2, replicas=R, init="uniform", same_init=False)
    a = ReuseFullStepper(_problem(2, 0.6), cfg, _streams(9), signs=[-1.0])
    b = ReuseFullStepper(_problem(2, 0.6, a_star=-1.0), cfg, _streams(9))
    sa, sb = a.init_state(), b.init_state()
    for _ in range(5):
        a.step(sa, np.random.default_rng(_ + 1))
        b.step(sb, np.random.default_rng(_ + 1))
    np.testing.assert_allclose(sa["W"], sb["W"], rtol=0, atol=SAME_DRAW_ATOL)
    with pytest.raises(ValueError, match="signs"):
        ReuseFullStepper(_problem(), cfg, _streams(9), signs=[0.5])


# --------------------------------------------------------------------------------------
# two-phase training
# --------------------------------------------------------------------------------------
#: Aligned start m0 = 0.99, then 20 Phase I samples at d = 30 (|m| drops to ~0.96): the best
#: function of one direction w leaves 1 - m^6 (E[h3(t) | w.x] = m^3 h3(w.x)), 0.06 at m = 0.99
#: and 0.22 at 0.96; the 32 features average over their directions and do better (measured
#: 0.075-0.117 at this seed; test-sample SE ~0.02).  A misaligned network gives ~1.
ALIGNED_MAX_ERROR = 0.15
#: m0 = 0 exactly: all features are independent of the label, so the relative test error is
#: >= 1 up to test-sample noise (SE of the mean of (f - y)^2 / Var y: sqrt(E h3^4 - 1)/sqrt(n)
#: = sqrt(92)/sqrt(20000) ~ 0.07).
MISALIGNED_MIN_ERROR = 1.0 - 4 * math.sqrt(92.0 / 20_000)


def test_two_phase_aligned_vs_misaligned():
    prob = _problem(2)
    kw = dict(d=30, n_neurons=32, eta_tilde=0.5, phase2_samples=3000, test_samples=20_000, bias_range=3.0,
              ridge=1e-4, replicas=3, rng=1)
    good = two_phase(prob, init=0.99, phase1_samples=20, **kw)
    bad = two_phase(prob, init=0.0, phase1_samples=0, **kw)
    assert good.phase1.m.shape == (good.phase1.t.size, 3, 32)
    assert good.alignment.shape == (3, 32) and good.second_layer.shape == (3, 32)
    assert np.all(good.alignment > 0.9)
    assert np.all(good.test_error < ALIGNED_MAX_ERROR), good.test_error
    assert np.all(bad.test_error > MISALIGNED_MIN_ERROR), bad.test_error
    assert np.all(bad.alignment < 1e-12)
    assert good.meta["seed"] == 1 and "versions" in good.meta
    again = two_phase(prob, init=0.99, phase1_samples=20, **kw)
    np.testing.assert_array_equal(again.test_error, good.test_error)


# --------------------------------------------------------------------------------------
# samples to reach, scaling study
# --------------------------------------------------------------------------------------
def test_samples_to_reach_censoring_and_start():
    online = _problem(1)  # constant eta_tilde: online SGD on he3 never escapes (module docstring)
    res = samples_to_reach(online, 400, eta_tilde=0.5, replicas=6, max_samples=3000, rng=2)
    assert np.all(np.isinf(res.samples)) and res.censored.all() and res.fraction_reached == 0.0
    assert res.median()[0] == math.inf
    assert res.meta["iterations_run"] == 3000
    start = samples_to_reach(_problem(2), 400, eta_tilde=0.5, batch=4, replicas=3, max_samples=100, init=0.6,
                             m_target=0.5, rng=2)
    np.testing.assert_array_equal(start.samples, 0.0)


def test_samples_to_reach_exact_vs_full_engine():
    """Same law of the hitting sample count: medians within their order-statistics intervals."""
    prob = _problem(2)
    kw = dict(eta_tilde=1.0, batch=2, replicas=60, max_samples=200_000, m_target=0.5)
    a = samples_to_reach(prob, 20, engine="exact", rng=1, **kw)
    b = samples_to_reach(prob, 20, engine="full", rng=2, **kw)
    assert a.fraction_reached == b.fraction_reached == 1.0
    assert np.all(a.samples % 2 == 0)
    ma, la, ha = a.median(level=0.99)
    mb, lb, hb = b.median(level=0.99)
    assert la <= mb <= ha or lb <= ma <= hb, (a.median(), b.median())


def test_median_ci_coverage_rule():
    x = np.arange(1.0, 101.0)
    med, lo, hi = _median_ci(x, 0.95)
    # binomial(100, 1/2): P(Bin <= 39) = 0.0176 <= 0.025 < P(Bin <= 40) = 0.0284, so the 95%
    # interval is [x_(40), x_(61)] (the textbook ranks for n = 100), coverage 0.965
    assert med == 50.5 and (lo, hi) == (40.0, 61.0)
    assert _median_ci(np.arange(1.0, 21.0), 0.95)[1:] == (6.0, 15.0)  # textbook ranks for n = 20
    assert all(math.isnan(v) for v in _median_ci(np.arange(1.0, 6.0), 0.95)[1:])  # 2/32 > 0.05: none
    assert _median_ci(np.array([1.0, np.inf, np.inf]), 0.5)[0] == math.inf


def test_scaling_study_writes_and_resumes(tmp_path):
    prob = _problem(2)
    out = tmp_path / "scaling.json"
    kw = dict(eta_tilde=0.5, replicas=12, max_samples=lambda d: 400 * d, out=out)
    first = scaling_study(prob, [40, 80], rng=3, **kw)
    data = json.loads(out.read_text())
    assert sorted(data["rows"]) == ["40", "80"]
    full = scaling_study(prob, [40, 80, 160], **kw)  # seed adopted from the file
    assert full.meta["resumed"] == [40, 80]
    np.testing.assert_array_equal(full.samples[80], first.samples[80])
    fresh = scaling_study(prob, [160], rng=3, eta_tilde=0.5, replicas=12, max_samples=64_000)
    np.testing.assert_array_equal(fresh.samples[160], full.samples[160])  # per-d seeds: order-independent
    assert math.isfinite(full.slope) and full.slope_se > 0
    assert "log-log slope" in full.table()
    with pytest.raises(ValueError, match="different parameters"):
        scaling_study(prob, [40], rng=3, **{**kw, "replicas": 13})
    with pytest.raises(ValueError, match="eta_tilde"):
        scaling_study(prob, [40], **{**kw, "eta_tilde": 0.4})


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
_TP = dict(d=10, n_neurons=4, eta_tilde=0.5, phase1_samples=10, phase2_samples=50, test_samples=10,
           bias_range=2.0, ridge=0.1, replicas=2, rng=0)

BAD_TWO_PHASE = [
    (dict(bias_range=0.0), ValueError, "bias_range"),
    (dict(ridge=-1e-3), ValueError, "ridge"),
    (dict(n_neurons=0), ValueError, "n_neurons"),
    (dict(phase2_samples=4), ValueError, "phase2_samples"),
    (dict(phase1_samples=7, batch=2), ValueError, "phase1_samples"),
    (dict(eta_tilde=0.0), ValueError, "eta_tilde"),
    (dict(init="haar"), ValueError, "init"),
    (dict(init=1.5), ValueError, "init"),
    (dict(d=1), ValueError, "`d`"),
    (dict(test_samples=0), ValueError, "test_samples"),
    (dict(replicas=2.5), TypeError, "replicas"),
    (dict(rng="x"), TypeError, "rng"),
]


@pytest.mark.parametrize("change,exc,match", BAD_TWO_PHASE)
def test_two_phase_bad_input(change, exc, match):
    with pytest.raises(exc, match=match):
        two_phase(_problem(), **{**_TP, **change})


BAD_REACH = [
    (dict(m_target=0.0), ValueError, "m_target"),
    (dict(max_samples=0), ValueError, "max_samples"),
    (dict(max_samples=3, batch=4), ValueError, "max_samples"),
    (dict(engine="fast"), ValueError, "engine"),
    (dict(replicas=0), ValueError, "replicas"),
]


@pytest.mark.parametrize("change,exc,match", BAD_REACH)
def test_samples_to_reach_bad_input(change, exc, match):
    kw = {**dict(eta_tilde=0.5, replicas=2, max_samples=10, rng=0), **change}
    with pytest.raises(exc, match=match):
        samples_to_reach(_problem(), 20, **kw)


def test_other_bad_input():
    with pytest.raises(TypeError, match="ReuseProblem"):
        samples_to_reach(object(), 20, eta_tilde=0.5, replicas=2, max_samples=10)
    with pytest.raises(ValueError, match="dims"):
        scaling_study(_problem(), [], eta_tilde=0.5, replicas=2, max_samples=10)
    with pytest.raises(ValueError, match="dims"):
        scaling_study(_problem(), [10, 10], eta_tilde=0.5, replicas=2, max_samples=10)
    with pytest.raises(ValueError, match="eta_tilde"):
        scaling_study(_problem(), [10], eta_tilde=lambda d: -1.0, replicas=2, max_samples=10)
    with pytest.raises(ValueError, match="reuse"):
        ReuseProblem("tanh", "he3", reuse=0)
    with pytest.raises(ValueError, match="algorithm"):
        simulate(_problem(), d=10, algorithm="gd", eta=0.1, steps=2, n_samples=5, engine="exact")


def test_numerical_failure_is_reported():
    prob = _problem(2, student="he3", teacher="he3")
    with pytest.raises(NumericalError):
        simulate(prob, d=5, eta=1e154, steps=3, replicas=2, init=0.5, engine="exact", rng=0)
