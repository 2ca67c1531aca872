"""Tests of popdyn.models.spiked_sim (finite-d simulators of the spiked-covariance model)."""

import math

import numpy as np
import pytest
from scipy.integrate import quad

from popdyn.errors import NumericalError
from popdyn.models.spiked import SpikedProblem
from popdyn.models.spiked import min_unlabeled
from popdyn.models.spiked_sim import SpikedStepper, sample_inputs, spiked_directions
from popdyn.simulation import make_stepper, simulate

FLOWS = ("spherical", "normalized", "preconditioned")
#: Monte Carlo checks accept |estimate - reference| <= Z_TOL standard errors (fixed seeds;
#: a per-comparison false alarm has probability ~6e-5).
Z_TOL = 4.0
#: Exact algebraic identities evaluated in double precision (a few hundred flops each).
EXACT_TOL = 1e-12
#: Central finite differences with step 1e-6 on smooth losses: truncation ~1e-12,
#: rounding ~1e-16/1e-6 = 1e-10 relative.
FD_TOL = 1e-7
#: Inner Gauss-Hermite nodes of the population expectations (exact for the polynomial
#: teachers used here, degree <= 4, times the smooth student on each half line).
N_GH = 80
#: Quadrature (quad at epsrel 1e-12, exact inner Gauss-Hermite) vs the closed form.
QUAD_TOL = 1e-9


def _stepper(flow, *, kappa=4.0, align=0.7, student="relu", teacher="he4", d=8, replicas=4, init=0.4,
             algorithm="sgd", eta=1e-3, batch=1, n_samples=None, n_unlabeled=None, rng=0, same_init=True):
    prob = SpikedProblem(student, teacher, kappa=kappa, align=align, flow=flow, n_unlabeled=n_unlabeled,
                         d=None if n_unlabeled is None else d)
    return make_stepper(prob, d=d, algorithm=algorithm, eta=eta, batch=batch, n_samples=n_samples,
                        replicas=replicas, init=init, rng=rng, same_init=same_init)


# -------------------------------------------------------------------------------------------
# data
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kappa", [0.0, 3.0, 50.0])
def test_sampling_covariance(kappa):
    """Empirical covariance of sample_inputs vs Sigma = (I + kappa theta theta^T)/(1 + kappa)."""
    d, n = 5, 200_000
    rng = np.random.default_rng(1)
    theta = spiked_directions(d, 0.3, rng)[0]
    X = sample_inputs(rng, (n,), theta, kappa)
    S = (np.eye(d) + kappa * np.outer(theta, theta)) / (1 + kappa)
    emp = X.T @ X / n
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S * S) / n)  # Var(x_i x_j) = S_ii S_jj + S_ij^2
    assert np.max(np.abs(emp - S) / se) < Z_TOL
    assert np.max(np.abs(X.mean(axis=0)) / np.sqrt(np.diag(S) / n)) < Z_TOL


@pytest.mark.parametrize("align", [-1.0, -0.3, 0.0, 0.5, 1.0])
@pytest.mark.parametrize("flow", FLOWS)
def test_directions_and_initial_overlaps(align, flow):
    """u^T Sigma u = 1, cos(u, theta) = align, and a float init m0 gives m_Sigma = m0 and the
    ODE initial state of SpikedProblem.initial_state(d, m0=m0)."""
    kappa, d = 7.0, 12
    st, _ = _stepper(flow, kappa=kappa, align=align, d=d, init=-0.35, replicas=3, same_init=False)
    ref = st.problem.initial_state(d, m0=-0.35)
    S = (np.eye(d) + kappa * np.outer(st.theta, st.theta)) / (1 + kappa)
    assert abs(st.u @ S @ st.u - 1) < EXACT_TOL
    assert abs(st.u @ st.theta / np.linalg.norm(st.u) - align) < EXACT_TOL
    W = st.init_state()["W"]
    ov = st.observe({"W": W})
    assert np.allclose(ov["m_sigma"], -0.35, atol=EXACT_TOL)
    for name in ("p", "q", "S"):
        assert np.allclose(ov[name], ref[name][0], atol=EXACT_TOL), name
    assert np.allclose(ov["m_u"], ov["p"] / (np.linalg.norm(W, axis=1) * np.linalg.norm(st.u)), atol=EXACT_TOL)
    assert np.allclose(ov["sw2"], np.einsum("rd,de,re->r", W, S, W), atol=EXACT_TOL)
    assert np.allclose(ov["m_sigma"], (W @ S @ st.u) / np.sqrt(ov["sw2"]), atol=EXACT_TOL)
    target = 1.0 if flow == "preconditioned" else None
    if target is None:
        assert np.allclose(np.linalg.norm(W, axis=1), 1.0, atol=EXACT_TOL)
    else:
        assert np.allclose(ov["sw2"], 1.0, atol=EXACT_TOL)
    assert np.std(W[:, 0]) > 0  # same_init=False: replicas differ


# -------------------------------------------------------------------------------------------
# loss and gradient
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flow,student", [("spherical", "relu"), ("spherical", "abs"), ("normalized", "relu"),
                                          ("normalized", "tanh"), ("preconditioned", "he3")])
def test_gradient_matches_finite_differences(flow, student):
    st, _ = _stepper(flow, student=student, teacher="he2", d=6, replicas=2)
    rng = np.random.default_rng(3)
    W = rng.standard_normal((2, 6))
    X = sample_inputs(rng, (2, 5), st.theta, st.kappa)
    y = st.teacher_labels(X)
    G = st.gradient(W, X, y)
    h = 1e-6
    fd = np.empty_like(W)
    for i in range(6):
        E = np.zeros_like(W)
        E[:, i] = h
        fd[:, i] = (st.loss(W + E, X, y) - st.loss(W - E, X, y)) / (2 * h)
    assert np.max(np.abs(G - fd)) < FD_TOL * max(1.0, np.max(np.abs(G)))


@pytest.mark.parametrize("flow", ["normalized", "preconditioned"])
@pytest.mark.parametrize("scale", [0.1, 3.0, 250.0])
def test_normalized_loss_is_scale_invariant(flow, scale):
    """L(cw) = L(w), grad(cw) = grad(w)/c and w . grad = 0 (0-homogeneous loss)."""
    st, _ = _stepper(flow, d=7, replicas=3, kappa=20.0)
    rng = np.random.default_rng(4)
    W = rng.standard_normal((3, 7))
    X = sample_inputs(rng, (3, 16), st.theta, st.kappa)
    y = st.teacher_labels(X)
    assert np.allclose(st.loss(scale * W, X, y), st.loss(W, X, y), rtol=EXACT_TOL, atol=0)
    G = st.gradient(W, X, y)
    assert np.allclose(st.gradient(scale * W, X, y) * scale, G, rtol=1e-10, atol=1e-13)
    assert np.max(np.abs(np.einsum("rd,rd->r", W, G))) < EXACT_TOL * np.max(np.abs(G)) * np.max(np.abs(W)) * 10


@pytest.mark.parametrize("eta", [1e-3, 0.5])
@pytest.mark.parametrize("kappa", [2.0, 40.0])
def test_preconditioned_is_isotropic_spherical_in_whitened_coordinates(eta, kappa):
    """Exact Sigma: Sigma^{1/2} (preconditioned step of w on x) = spherical step of
    Sigma^{1/2} w on the whitened data Sigma^{-1/2} x with target Sigma^{1/2} u (any eta)."""
    d, R, B = 9, 3, 4
    pre, _ = _stepper("preconditioned", kappa=kappa, d=d, replicas=R, eta=eta, rng=5, same_init=False)
    S = (np.eye(d) + kappa * np.outer(pre.theta, pre.theta)) / (1 + kappa)
    lam, Q = np.linalg.eigh(S)
    S_half, S_mhalf = (Q * np.sqrt(lam)) @ Q.T, (Q / np.sqrt(lam)) @ Q.T
    rng = np.random.default_rng(6)
    W = pre.init_state()["W"]
    X = sample_inputs(rng, (R, B), pre.theta, kappa)
    y = pre.teacher_labels(X)
    Wt = W @ S_half  # whitened weights, unit norm
    assert np.allclose(np.linalg.norm(Wt, axis=1), 1.0, atol=EXACT_TOL)
    pre.update(W, X, y)
    # isotropic spherical step written out independently
    Xt = X @ S_mhalf
    ut = S_half @ pre.u
    assert abs(np.linalg.norm(ut) - 1) < EXACT_TOL
    yt = ((Xt @ ut) ** 4 - 6 * (Xt @ ut) ** 2 + 3) / math.sqrt(24)  # he4 = h4/sqrt(4!)
    assert np.allclose(yt, y, atol=1e-10)
    Z = np.einsum("rbd,rd->rb", Xt, Wt)
    c = (np.maximum(Z, 0) - y) * (Z > 0) / B
    grad = np.einsum("rb,rbd->rd", c, Xt)
    grad -= np.einsum("rd,rd->r", grad, Wt)[:, None] * Wt
    Wn = Wt - eta * grad
    Wn /= np.linalg.norm(Wn, axis=1)[:, None]
    assert np.max(np.abs(W @ S_half - Wn)) < 1e-11


# -------------------------------------------------------------------------------------------
# one-step mean increment of online SGD vs the population gradient
# -------------------------------------------------------------------------------------------
def _relu_pair_expectation(fn, s_w, rho):
    r"""E[fn(zeta, t)] with zeta ~ N(0,1), t = rho zeta + sqrt(1-rho^2) eta, restricted to zeta > 0
    (ReLU student: phi' = 1{zeta > 0}); outer quad on (0, inf), inner Gauss-Hermite."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(N_GH)
    weights = weights / math.sqrt(2 * math.pi)
    r = math.sqrt(max(0.0, 1 - rho * rho))

    def inner(z):
        t = rho * z + r * nodes
        return float(weights @ fn(z, t)) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    return quad(inner, 0, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


def _population_gradient(st, w, *, raw=False):
    r"""E[grad] at w for a ReLU student and he4 teacher, by the regression identity
    E[a(z,t) x] = Sigma [w u] C^{-1} E[a (z, t)], C = Cov(z, t), z = w.x, t = u.x."""
    d = w.size
    S = (np.eye(d) + st.kappa * np.outer(st.theta, st.theta)) / (1 + st.kappa)
    sw = math.sqrt(w @ S @ w)
    cwu = w @ S @ st.u
    rho = cwu / sw
    g4 = lambda t: (t ** 4 - 6 * t ** 2 + 3) / math.sqrt(24)  # noqa: E731
    scale = 1.0 if st.flow == "spherical" else sw  # p = zeta*sw (spherical) or zeta (normalized)
    # a(z, t) = (phi(p) - g(t)) phi'(p) / (1 or sw); with zeta = z / sw > 0
    pre = lambda zeta: zeta * sw / scale  # noqa: E731
    a = lambda zeta, t: (pre(zeta) - g4(t)) / (1.0 if st.flow == "spherical" else sw)  # noqa: E731
    Ez = _relu_pair_expectation(lambda zeta, t: a(zeta, t) * zeta * sw, sw, rho)
    Et = _relu_pair_expectation(lambda zeta, t: a(zeta, t) * t, sw, rho)
    C = np.array([[sw * sw, cwu], [cwu, 1.0]])
    coef = np.linalg.solve(C, [Ez, Et])
    G = S @ (coef[0] * w + coef[1] * st.u)
    if st.flow != "spherical":
        Ep = _relu_pair_expectation(lambda zeta, t: a(zeta, t) * pre(zeta), sw, rho)
        G -= Ep * (S @ w) / sw
    if raw:
        return G
    if st.flow == "spherical":
        G -= (w @ G) * w
    elif st.flow == "preconditioned":
        G = np.linalg.solve(S, G)
    return G


@pytest.mark.parametrize("flow", FLOWS)
def test_online_sgd_mean_increment_matches_population_gradient(flow):
    """E[Delta w]/eta = -(Riemannian / preconditioned) population gradient + O(eta)."""
    R, eta = 200_000, 1e-6  # O(eta) retraction term ~1e-6 * E|g|^2, far below the SE ~2e-3
    st, noise = _stepper(flow, kappa=6.0, align=0.6, d=6, replicas=R, eta=eta, init=0.6, rng=11)
    state = st.init_state()
    w0 = state["W"][0].copy()
    st.step(state, noise)
    inc = (state["W"] - w0) / eta
    mean, se = inc.mean(axis=0), inc.std(axis=0, ddof=1) / math.sqrt(R)
    ref = -_population_gradient(st, w0)
    z = np.abs(mean - ref) / se
    assert np.max(z) < Z_TOL, (mean, ref, z)
    assert np.linalg.norm(ref) > 10 * np.max(se)  # the check has power: the drift is resolved


@pytest.mark.parametrize("flow", ["spherical", "normalized"])
@pytest.mark.parametrize("m0", [0.1, 0.6])
def test_quadrature_gradient_matches_spiked_closed_form(flow, m0):
    """The test's quadrature route vs SpikedProblem's Hermite closed form
    grad R = g_s Sigma w + g_u Sigma u (both the Euclidean population gradient)."""
    st, _ = _stepper(flow, kappa=9.0, align=0.5, d=6, init=m0, replicas=1)
    w = st.init_state()["W"][0]
    d = w.size
    S = (np.eye(d) + st.kappa * np.outer(st.theta, st.theta)) / (1 + st.kappa)
    s = math.sqrt(w @ S @ w)
    g_s, g_u = st.problem._gradient_coefficients(s, (w @ S @ st.u) / s)
    ref = g_s * (S @ w) + g_u * (S @ st.u)
    assert np.max(np.abs(_population_gradient(st, w, raw=True) - ref)) < QUAD_TOL


#: Simulation vs ODE: the replica mean may differ from the gradient-flow ODE by the O(eta)
#: discretisation and the O(eta d / B) noise drift, ~ eta (1 + d/B) = 0.015 here; the ODE-sim
#: distance observed is <= 0.006 (about 1.5 SE), so this bound is a factor ~2 above it.
SIM_ODE_BIAS = 0.015


@pytest.mark.parametrize("flow", FLOWS)
def test_online_sgd_follows_the_overlap_ode(flow):
    """Replica mean of (p, q, S) under small-step large-batch SGD vs SpikedProblem.integrate
    from the same initial state (init=m0 uses the same convention)."""
    d, R = 50, 20
    prob = SpikedProblem("relu", "he2", kappa=5.0, align=0.8, flow=flow, d=d)
    tr = simulate(prob, d=d, algorithm="sgd", eta=0.01, steps=400, batch=100, replicas=R, init=0.3, rng=1,
                  n_record=5, record="linear")
    ode = prob.integrate(prob.initial_state(d, m0=0.3), float(tr.t[-1]))
    for name in ("p", "q", "S"):
        sim = tr.overlaps[name]
        ref = np.interp(tr.t, ode.t, ode.overlaps[name].reshape(len(ode.t), -1)[:, 0])
        se = sim.std(axis=1, ddof=1) / math.sqrt(R)
        assert np.all(np.abs(sim.mean(axis=1) - ref) <= Z_TOL * se + SIM_ODE_BIAS), name
    assert abs(tr.overlaps["p"][-1].mean() - tr.overlaps["p"][0].mean()) > 10 * SIM_ODE_BIAS  # it moved


def test_empirical_preconditioner_mean_is_inverse_wishart():
    """E[Sigma_hat^{-1}] = n'/(n'-d-1) Sigma^{-1} over replicas (independent unlabelled sets)."""
    d, n_unl, R, kappa = 4, 30, 3000, 5.0
    st, _ = _stepper("preconditioned", kappa=kappa, d=d, replicas=R, n_unlabeled=n_unl, rng=2)
    S = (np.eye(d) + kappa * np.outer(st.theta, st.theta)) / (1 + kappa)
    ref = n_unl / (n_unl - d - 1) * np.linalg.inv(S)
    mean, se = st.P.mean(axis=0), st.P.std(axis=0, ddof=1) / math.sqrt(R)
    assert np.max(np.abs(mean - ref) / se) < Z_TOL


# -------------------------------------------------------------------------------------------
# runs, reproducibility, bad input
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("algorithm,kw", [("sgd", {"batch": 3}), ("gd", {"n_samples": 50, "batch": 16}),
                                          ("gd", {"n_samples": 40})])
def test_simulate_runs_and_is_reproducible(flow, algorithm, kw):
    prob = SpikedProblem("relu", "he2", kappa=3.0, align=0.9, flow=flow,
                         n_unlabeled=30 if flow == "preconditioned" else None, d=10)
    args = dict(d=10, algorithm=algorithm, eta=0.05, steps=40, replicas=3, n_record=5, **kw)
    a = simulate(prob, rng=7, **args)
    b = simulate(prob, rng=7, **args)
    c = simulate(prob, rng=8, **args)
    assert set(a.overlaps) == {"p", "q", "S", "m_u", "m_theta", "sw2", "m_sigma"}
    for name in a.overlaps:
        assert a.overlaps[name].shape == (5, 3)
        assert np.array_equal(a.overlaps[name], b.overlaps[name])
    assert not np.array_equal(a.overlaps["m_u"], c.overlaps["m_u"])
    assert a.time_unit == "t = eta * steps" and np.isclose(a.t[-1], 2.0)
    assert np.all(np.abs(a.overlaps["m_u"]) <= 1 + EXACT_TOL)
    # same_init (default): replicas start together, then separate
    assert np.ptp(a.overlaps["m_u"][0]) < EXACT_TOL and np.ptp(a.overlaps["m_u"][-1]) > 1e-6


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"at least 12 \(= d \+ 2"):
        _stepper("preconditioned", d=10, n_unlabeled=11)
    assert min_unlabeled(10) == 12
    _stepper("preconditioned", d=10, n_unlabeled=12)  # the minimum is accepted
    with pytest.raises(ValueError, match="`init`"):
        _stepper("spherical", init="haar")
    with pytest.raises(ValueError, match="`init`"):
        _stepper("spherical", init=1.0)
    with pytest.raises(TypeError, match="`init`"):
        _stepper("spherical", init=True)
    with pytest.raises(ValueError, match="`algorithm`"):
        make_stepper(SpikedProblem(kappa=1.0, align=0.5, flow="spherical"), d=5, algorithm="gf", rng=0)
    with pytest.raises(ValueError, match="`d`"):
        _stepper("spherical", d=2)
    with pytest.raises(ValueError, match="differs"):
        make_stepper(SpikedProblem(kappa=1.0, align=0.5, flow="spherical", d=6), d=5, eta=0.1, rng=0)
    with pytest.raises(TypeError, match="SpikedProblem"):
        SpikedStepper(object(), None, None)


def test_overflow_raises_numerical_error():
    st, noise = _stepper("normalized", student="he4", teacher="he4", eta=1e200, d=5, init=0.3, replicas=2)
    state = st.init_state()
    with np.errstate(all="ignore"), pytest.raises(NumericalError):
        for _ in range(5):
            st.step(state, noise)


def test_large_spherical_step_warns():
    from popdyn.models.single_index_sim import LargeStepWarning

    prob = SpikedProblem("he3", "he3", kappa=5.0, align=1.0, flow="normalized")
    with pytest.warns(LargeStepWarning, match=r"eta = 1 takes relative steps"):
        simulate(prob, d=100, eta=1.0, t_end=3.0, replicas=2, rng=0, progress=False)
    ok = simulate(prob, d=100, eta=0.1 / 100, t_end=0.5, replicas=2, rng=0, progress=False)  # silent
    assert np.all(np.isfinite(ok.overlaps["m_u"]))
