"""Tests for popdyn.models.spiked (spiked covariance, arXiv 2309.03843)."""

import math

import numpy as np
import pytest

from popdyn.models.spiked import (FLOWS, SpikedProblem, check_covariance, dense_population_flow,
                                  effective_dimension, escape_time_grid, kappa_critical, mc_initial_overlap,
                                  min_unlabeled, plot_escape_grid)

#: Overlap ODE vs d-dimensional population flow: both DOP853 at rtol 1e-12 (required: 1e-9).
REDUCTION_TOL = 1e-9
#: Gradient closed form vs Monte Carlo: allowed standard errors per component.
MC_SIGMAS = 5.0
#: theory/mousavi2023/equations.md quotes 1/d_eff to 7 decimals.
DEFF_ATOL = 5e-8
#: theory/mousavi2023/equations.md: E[m0^2] ~ 1/d_eff within ~10 % for kappa/d <= 0.05.
DEFF_RTOL = 0.10
#: theory/mousavi2023/equations.md quotes kappa_crit to one decimal; bisection to rtol 1e-5.
KAPPA_ATOL = 0.15
#: Algebraic identities in double precision.
EXACT_TOL = 1e-12

CASES = [  # student, teacher, a_star, kappa, align
    ("relu", "he4", -1.0, 5.0, 0.6),
    ("relu", "hermite:0,0.5,0.3,0.2", 1.0, 30.0, -0.3),
    ("abs", "he2", 1.0, 2.0, 1.0),
    ("tanh", "he3", 1.0, 3.0, 0.2),
]


def _state(w, cov, sigma):
    return {"p": np.array([w @ cov.u]), "q": np.array([w @ cov.theta]), "S": np.array([w @ sigma @ w])}


@pytest.mark.parametrize("flow,student,teacher,a_star,kappa,align",
                         [(f, *c) for f in FLOWS for c in CASES if f != "spherical" or c[0] != "tanh"])
def test_overlap_ode_matches_dense_flow(flow, student, teacher, a_star, kappa, align):
    d = 50
    prob = SpikedProblem(student, teacher, kappa=kappa, align=align, flow=flow, d=d, a_star=a_star)
    cov = prob.covariance()
    sigma = cov.dense()
    w0 = np.random.default_rng(3).standard_normal(d)
    w0 /= np.linalg.norm(w0)
    if flow == "preconditioned":
        w0 /= math.sqrt(w0 @ sigma @ w0)
    t = np.linspace(0.0, 15.0, 4)
    W = dense_population_flow(student, teacher, sigma, cov.u, w0, t, flow=flow, a_star=a_star)
    traj = prob.integrate(_state(w0, cov, sigma), 15.0, n_times=4, times="linear", rtol=1e-12, atol=1e-14)
    assert np.allclose(traj.t, t)
    for name, ref in (("p", W @ cov.u), ("q", W @ cov.theta), ("S", np.einsum("ti,ij,tj->t", W, sigma, W))):
        assert np.max(np.abs(traj.overlaps[name][:, 0, 0] - ref)) < REDUCTION_TOL, name


@pytest.mark.parametrize("flow", ["spherical", "normalized"])
@pytest.mark.parametrize("student,teacher,a_star,kappa,align", CASES[:3])
def test_gradient_matches_monte_carlo(flow, student, teacher, a_star, kappa, align):
    """The closed-form gradient g_s Sigma w + g_u Sigma u against sample averages of the loss gradient."""
    d, n = 6, 400_000
    prob = SpikedProblem(student, teacher, kappa=kappa, align=align, flow=flow, d=d, a_star=a_star)
    cov = prob.covariance()
    rng = np.random.default_rng(11)
    w = rng.standard_normal(d)
    w *= 0.8 / np.linalg.norm(w)
    x = cov.sqrt_matvec(rng.standard_normal((n, d)))
    y = a_star * prob.teacher(x @ cov.u)
    sw = cov.matvec(w)
    s = math.sqrt(w @ sw)
    if flow == "spherical":
        z = x @ w
        per = ((prob.student(z) - y) * prob.student.derivative(z))[:, None] * x
    else:
        z = x @ w / s
        per = ((prob.student(z) - y) * prob.student.derivative(z))[:, None] * (x / s - z[:, None] * sw / s ** 2)
    mc, se = per.mean(0), per.std(0, ddof=1) / math.sqrt(n)
    g_s, g_u = prob._gradient_coefficients(s, (w @ cov.matvec(cov.u)) / s)
    closed = g_s * sw + g_u * cov.matvec(cov.u)
    assert np.all(np.abs(closed - mc) <= MC_SIGMAS * se + 1e-12)


@pytest.mark.parametrize("kappa,align", [(0.0, 1.0), (20.0, 1.0), (200.0, 0.03), (7.0, -0.4)])
def test_preconditioned_flow_is_scalar_isotropic_ode(kappa, align):
    """theory/mousavi2023/equations.md: with ||Sigma^{1/2} w0|| = 1, m_Sigma(t) solves dm/dt = (1 - m^2) F'(m)."""
    from scipy.integrate import solve_ivp

    d = 50
    prob = SpikedProblem("relu", "hermite:0,0.3,0.5,0.4", kappa=kappa, align=align, flow="preconditioned", d=d)
    cov = prob.covariance()
    sigma = cov.dense()
    w0 = np.random.default_rng(5).standard_normal(d)
    w0 /= math.sqrt(w0 @ sigma @ w0)
    t = np.linspace(0.0, 10.0, 6)
    W = dense_population_flow("relu", prob.teacher, sigma, cov.u, w0, t, flow="preconditioned")
    m_dense = (W @ sigma @ cov.u) / np.sqrt(np.einsum("ti,ij,tj->t", W, sigma, W))
    sol = solve_ivp(lambda _, m: (1 - m * m) * prob.dF(m), (0, 10.0), [m_dense[0]], t_eval=t, method="DOP853",
                    rtol=1e-12, atol=1e-14)
    assert np.max(np.abs(sol.y[0] - m_dense)) < REDUCTION_TOL


@pytest.mark.parametrize("d,kappa,align,ref", [(4000, 20.0, 1.0, 0.0052239), (4000, 200.0, 0.03, 0.0075383),
                                               (4000, 0.0, 0.7, 1 / 4000)])
def test_effective_dimension_reference_values(d, kappa, align, ref):
    assert abs(1 / effective_dimension(d, kappa, align) - ref) < DEFF_ATOL


@pytest.mark.parametrize("kappa,align", [(3.0, 0.4), (10.0, -0.9), (0.0, 0.0)])
def test_effective_dimension_matches_matrix_definition(kappa, align):
    d = 30
    prob = SpikedProblem(kappa=kappa, align=align, d=d)
    cov = prob.covariance()
    sigma = cov.dense()
    u = cov.u
    assert abs(u @ sigma @ u - 1) < EXACT_TOL
    ref = np.trace(sigma) * (u @ sigma @ u) / (u @ sigma @ sigma @ u)
    assert abs(prob.effective_dimension() - ref) < EXACT_TOL * ref
    assert abs(np.dot(u, cov.theta) / np.linalg.norm(u) - align) < EXACT_TOL


@pytest.mark.parametrize("kappa,align", [(0.0, 1.0), (20.0, 1.0), (200.0, 0.03), (200.0, 1.0)])
def test_effective_dimension_predicts_initial_overlap(kappa, align):
    d = 4000  # kappa/d <= 0.05
    mean, se = mc_initial_overlap(d, kappa, align, n_samples=200_000, rng=7)
    pred = 1 / effective_dimension(d, kappa, align)
    assert abs(mean - pred) <= DEFF_RTOL * pred + 4 * se


def test_covariance_operations():
    prob = SpikedProblem(kappa=9.0, align=0.3, d=12)
    cov = prob.covariance()
    sigma = prob.covariance(dense=True)
    v = np.random.default_rng(0).standard_normal((3, 12))
    assert np.allclose(cov.matvec(v), v @ sigma, atol=EXACT_TOL)
    assert np.allclose(cov.sqrt_matvec(cov.sqrt_matvec(v)), v @ sigma, atol=EXACT_TOL)
    assert np.allclose(cov.inv_matvec(cov.matvec(v)), v, atol=1e-11)
    assert abs(cov.trace() - np.trace(sigma)) < EXACT_TOL
    assert abs(np.linalg.eigvalsh(sigma)[-1] - 1) < EXACT_TOL  # ||Sigma||_op = 1


@pytest.mark.parametrize("flow", FLOWS)
def test_initial_state(flow):
    d = 1000
    prob = SpikedProblem("relu", "he4", kappa=20.0, align=1.0, flow=flow, d=d, a_star=-1.0)
    o = prob.overlaps(prob.initial_state())
    if flow != "preconditioned":
        assert abs(o["w2"][0] - 1) < EXACT_TOL
        assert abs(o["cos_theta"][0] - d ** -0.5) < EXACT_TOL       # start of the kappa_crit references
        assert abs(o["m"][0] ** 2 - 1 / prob.effective_dimension()) < EXACT_TOL  # exact when u = theta
    else:
        assert abs(o["s"][0] - 1) < EXACT_TOL
    p2 = SpikedProblem("relu", "he4", kappa=50.0, align=0.2, flow=flow, d=d)
    assert abs(p2.overlaps(p2.initial_state(m0=0.137))["m"][0] - 0.137) < EXACT_TOL


@pytest.mark.parametrize("d,ref", [(1000, 165.5), (10000, 679.8), (100000, 2994.8)])
def test_kappa_critical(d, ref):
    assert abs(kappa_critical(d, rtol=1e-5) - ref) <= KAPPA_ATOL


def test_spherical_biased_normalized_recovers():
    out = {}
    for flow in ("spherical", "normalized"):
        prob = SpikedProblem("relu", "he4", kappa=500.0, align=1.0, flow=flow, d=1000, a_star=-1.0)
        out[flow] = prob.run_to_convergence(prob.initial_state(), 1e6)["cos"]
    assert 0.15 < out["spherical"] < 0.2      # theory/mousavi2023: cos ~ 0.17 for s = 4
    assert out["normalized"] > 1 - 1e-6
    stall = SpikedProblem("relu", "he4", kappa=50.0, align=1.0, flow="spherical", d=1000, a_star=-1.0)
    assert math.isinf(stall.escape_time(stall.initial_state()))


def test_escape_time_grid_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    r1, r2 = [0.0, 0.5], [0.2, 0.9]
    sph = escape_time_grid("relu", "he4", 1000, r1, r2, "spherical", a_star=-1.0)
    nor = escape_time_grid("relu", "he4", 1000, r1, r2, "normalized", a_star=-1.0)
    assert sph.shape == nor.shape == (2, 2)
    assert math.isinf(sph[0, 0]) and np.all(np.isfinite(nor))   # kappa = 4 < kappa_crit: spherical stalls
    assert math.isfinite(sph[0, 1])                              # kappa = 501 > kappa_crit = 165.5
    ax = plot_escape_grid(sph, r1, r2, title="spherical")
    ax.figure.savefig(tmp_path / "grid.png")


def test_ode_engine_escape_event():
    prob = SpikedProblem("relu", "he4", kappa=10.0, align=0.5, flow="normalized", d=1000, a_star=-1.0)
    st = prob.initial_state()
    traj = prob.integrate(st, 1e5, escape_level=0.5)
    assert abs(traj.events["escape"][0] - prob.escape_time(st)) < 1e-6 * prob.escape_time(st)


@pytest.mark.parametrize("kwargs,match", [
    ({"kappa": -1.0}, "kappa"),
    ({"kappa": 1.0, "align": 1.5}, "align"),
    ({"kappa": 1.0, "flow": "adam"}, "flow"),
    ({"kappa": 1.0, "d": 100, "n_unlabeled": 101}, "at least 102"),
    ({"kappa": 1.0, "n_unlabeled": 500}, "needs `d`"),
    ({"kappa": 1.0, "student": "tanh", "flow": "spherical"}, "homogeneous"),
    ({"kappa": 1.0, "a_star": 0.0}, "a_star"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpikedProblem(**kwargs)


def test_min_unlabeled_and_covariance_checks():
    assert min_unlabeled(50) == 52
    SpikedProblem(kappa=1.0, d=50, n_unlabeled=52)
    with pytest.raises(ValueError, match="positive definite"):
        check_covariance(np.diag([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="positive definite"):
        check_covariance(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        check_covariance(np.array([[1.0, 0.1], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="u\\^T Sigma u"):
        dense_population_flow("relu", "he4", np.eye(3), np.ones(3), np.ones(3), [0.0, 1.0], flow="normalized")


def test_mc_initial_overlap_matches_brute_force_sphere_sampling():
    """The 2-coordinate sampler against uniform points of S^{d-1} drawn in full."""
    d, kappa, align, n = 40, 6.0, 0.35, 100_000
    prob = SpikedProblem(kappa=kappa, align=align, d=d)
    cov = prob.covariance()
    z = np.random.default_rng(2).standard_normal((n, d))
    w = z / np.linalg.norm(z, axis=1, keepdims=True)
    v = (w @ cov.matvec(cov.u)) ** 2 / np.einsum("nd,nd->n", w, cov.matvec(w))
    mean, se = mc_initial_overlap(d, kappa, align, n_samples=n, rng=3)
    assert abs(mean - v.mean()) <= 4 * math.hypot(se, v.std(ddof=1) / math.sqrt(n))


def test_escape_time_stops_when_the_flow_settles_below_the_level():
    # spherical flow, kappa = 5, align = 0.8, m0 = 0.1: |m_Sigma| sinks to ~2e-3 and creeps there
    # (above the 1e-6 * m0 equator test), so only the settle event ends the integration instead of
    # running to t_max = 1e12
    prob = SpikedProblem("relu", "he4", kappa=5.0, align=0.8, flow="spherical", a_star=-1.0)
    state0 = prob.initial_state(1000, m0=0.1)
    assert prob.escape_time(state0, level=0.5) == math.inf
    m_end = abs(prob.run_to_convergence(state0, t_end=1e4)["m"])
    assert 1e-6 * 0.1 < m_end < 0.5


def test_escape_time_level_outside_unit_interval():
    prob = SpikedProblem("relu", "he2", kappa=5.0, align=0.8, flow="spherical")
    s0 = prob.initial_state(100)
    for bad in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match=r"`level` must lie in \(0\.0, 1\.0\), got"):
            prob.escape_time(s0, level=bad)
    assert prob.escape_time(s0, level=1e-9) == 0.0  # already above: 0, not an error later
