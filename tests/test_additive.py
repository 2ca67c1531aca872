"""The additive model of arXiv 2406.11828 (popdyn.models.additive, additive_sim, additive_model).

Independent routes:
* the Hadamard-power Wick noise moment against a direct triple loop over index pairs and Hermite
  degrees (written here), the multi-index ``"polynomial"`` form and Monte Carlo;
* the overlap ODE against the d-dimensional spherical gradient flow (also with per-neuron
  students) and online SGD (``popdyn.compare``);
* the coverage recursion against the inclusion-exclusion formula of theory/simsek2025 and the
  mean width M H_M;
* the race rule against the ODE; Phase II against exact representability;
* the weighted log-log slope against ``numpy.polyfit``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from popdyn import compare, initial_state, integrate, simulate
from popdyn.cli import main
from popdyn.hermite import HermiteSeries
from popdyn.models.additive import (AdditiveProblem, coverage_law, descent_path, diverse_student, localisation,
                                    localisation_report, loglog_slope, max_overlap, predicted_winners,
                                    task_directions, tasks_for_gamma, width_for_coverage)
from popdyn.models.additive_sim import (flow_weights, kernel_baseline, phase_one, phase_two, predicted_steps,
                                        sgd_step_size, teacher_labels)
from popdyn.models.multi_index import MultiIndexProblem, sphere_velocity, wick_noise_moment

#: Exact polynomial identities evaluated in floating point (sums of <= 1e4 terms).
EXACT_RTOL = 1e-11
#: Standard errors allowed for Monte Carlo estimates.
MC_SIGMAS = 4.0
#: d-dimensional flow (DOP853, rtol 1e-10) vs the u-ODE (rtol 1e-10).
CLOSURE_TOL = 1e-8


# --------------------------------------------------------------------------------------
# the shared multi-index pieces
# --------------------------------------------------------------------------------------
def _triple_loop_moment(u, G, A, S):
    """C(u) = sum_{j,l,a,b,c} A_ja A_lb S_c E[h_a(t_j) h_b(t_l) h_c(z)] by the diagram formula."""
    f = math.factorial
    total = 0.0
    k = len(u)
    for j in range(k):
        for l in range(k):
            for a in np.flatnonzero(A[j]):
                for b in np.flatnonzero(A[l]):
                    for c in np.flatnonzero(S):
                        if (a + b + c) % 2 or min(a + b - c, a + c - b, b + c - a) < 0:
                            continue
                        r, n, m = (a + b - c) // 2, (a + c - b) // 2, (b + c - a) // 2
                        total += (A[j, a] * A[l, b] * S[c] * math.sqrt(f(a) * f(b) * f(c)) / (f(r) * f(n) * f(m))
                                  * G[j, l] ** r * u[j] ** n * u[l] ** m)
    return total


@pytest.mark.parametrize("seed", range(3))
def test_wick_noise_moment_matches_a_direct_triple_loop(seed):
    rng = np.random.default_rng(seed)
    k, d = 5, 9
    V = task_directions(k, d, rng=rng)
    G = V @ V.T
    A = rng.standard_normal((k, 5)) * (rng.random((k, 5)) < 0.7)
    S = rng.standard_normal(7)
    W = rng.standard_normal((4, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    U = W @ V.T
    got = wick_noise_moment(U, G, A, S)
    for i, u in enumerate(U):
        assert got[i] == pytest.approx(_triple_loop_moment(u, G, A, S), rel=EXACT_RTOL), f"At i={i}"
    # per-neuron square coefficients and a diagonal G (the I shortcut)
    Sn = rng.standard_normal((4, 7))
    for G_ in (G, np.eye(k)):
        got = wick_noise_moment(U, G_, A, Sn)
        for i, u in enumerate(U):
            assert got[i] == pytest.approx(_triple_loop_moment(u, G_, A, Sn[i]), rel=EXACT_RTOL), f"At i={i}"


def test_gram_method_equals_polynomial_method_and_is_auto_for_many_tasks():
    rng = np.random.default_rng(1)
    V = task_directions(6, 12, rng=rng)
    prob = MultiIndexProblem("hermite:0,0.3,0.2,1", ("he3", "he4", "he2") * 2, V @ V.T,
                             a_star=rng.standard_normal(6))
    U = rng.standard_normal((3, 6)) * 0.2
    np.testing.assert_allclose(prob.noise_moment(U, method="gram"), prob.noise_moment(U, method="polynomial"),
                               rtol=EXACT_RTOL)
    big = MultiIndexProblem("he3", "he3", np.eye(40))
    assert big._noise_plan(None, "auto") == ("gram", None)
    with pytest.raises(ValueError, match="needs polynomial activations"):
        MultiIndexProblem("tanh", "he3", np.eye(2)).noise_moment([0.1, 0.2], method="gram")


def test_sphere_velocity_is_the_multi_index_flow_scaled():
    rng = np.random.default_rng(2)
    V = task_directions(5, 20, rng=rng)
    a = rng.uniform(0.5, 1.5, 5)
    prob = AdditiveProblem("he4", ["he4", "hermite:0,0,0,0,1,0.5"] * 2 + ["he4"], V, weights=a)
    mi = MultiIndexProblem("he4", prob.links, prob.G, a_star=a)
    U = rng.standard_normal((3, 5)) * 0.3
    np.testing.assert_allclose(prob.velocity(U), mi.velocity(U) / math.sqrt(5), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(sphere_velocity(U, mi.g(U), prob.G, scale=0.2), 0.2 * mi.velocity(U), rtol=1e-13)


# --------------------------------------------------------------------------------------
# the problem and its validation
# --------------------------------------------------------------------------------------
def test_directions_and_overlaps():
    V = task_directions(30, 50, rng=0)
    G = V @ V.T
    np.fill_diagonal(G, 0.0)
    assert max_overlap(V) == pytest.approx(np.abs(G).max(), rel=1e-14)
    O = task_directions(7, 7, kind="orthogonal", rng=1)
    np.testing.assert_allclose(O @ O.T, np.eye(7), atol=1e-13)
    assert tasks_for_gamma(400, 0.5) == 20 and tasks_for_gamma(100, 1.5) == 1000
    prob = AdditiveProblem("he3", "he3", V)
    assert prob.max_overlap == pytest.approx(max_overlap(V)) and prob.describe()["M"] == 30


@pytest.mark.parametrize("call, error, needle", [
    (lambda: task_directions(10, 5, kind="orthogonal"), ValueError, "`M` = 10 orthogonal directions"),
    (lambda: tasks_for_gamma(100, 1.2, kind="orthogonal"), ValueError, "`gamma` must be <= 1"),
    (lambda: tasks_for_gamma(100, -0.5), ValueError, "`gamma`"),
    (lambda: task_directions(0, 5), ValueError, "`M`"),
    (lambda: task_directions(3, 5, kind="haar"), ValueError, "`kind` must be one of"),
    (lambda: AdditiveProblem("he3", "he3", 2 * np.eye(2, 4)), ValueError, "unit rows"),
    (lambda: AdditiveProblem("he3", ["he3"] * 3, np.eye(2, 4)), ValueError, "M = 2"),
    (lambda: AdditiveProblem("he3", "he3", np.eye(2, 4), weights=[1.0]), ValueError, "`weights`"),
    (lambda: AdditiveProblem("he3", "he3", np.eye(2, 4), n_neurons=0), ValueError, "`n_neurons`"),
    (lambda: AdditiveProblem("relu", "he3", np.eye(2, 4), diversity=np.ones((1, 2))), ValueError, "polynomial"),
    (lambda: AdditiveProblem("he3", "he3", np.eye(2, 4), n_neurons=2, diversity=np.ones((2, 3))), ValueError,
     r"\(2, 4\)"),
    (lambda: AdditiveProblem("he3", ["he3", "he4"], np.eye(2, 4)).require_common_exponent(), ValueError,
     "share one information exponent"),
    (lambda: AdditiveProblem("he2", "he2", np.eye(2, 4)).require_common_exponent(), ValueError, "p must be >= 3"),
    (lambda: AdditiveProblem("he4", "he3", np.eye(2, 4)).require_common_exponent(), ValueError, "no Hermite coefficient"),
    (lambda: diverse_student(3, 2, kind="uniform"), ValueError, "`kind` must be one of"),
    (lambda: width_for_coverage(5, confidence=1.0), ValueError, "`confidence`"),
])
def test_bad_input_is_named(call, error, needle):
    with pytest.raises(error, match=needle):
        call()


def test_exponents_and_kernels():
    prob = AdditiveProblem("hermite:0,0,0,1,1", ["he3", "hermite:0,0,0,0.6,0.8"], np.eye(2, 6), weights=[2.0, 1.0])
    assert prob.exponent == 3 and prob.link_exponents.tolist() == [3, 3]
    assert prob.require_common_exponent() == 3
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(prob.gamma[:, 3], [2 * s, 0.6 * s], rtol=1e-14)
    np.testing.assert_allclose(prob.gamma[:, 4], [0.0, 0.8 * s], rtol=1e-14, atol=1e-15)


# --------------------------------------------------------------------------------------
# the overlap ODE
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("diverse", [False, True])
def test_overlap_ode_closes_the_d_dimensional_flow(diverse):
    M, d, J = 4, 24, 3
    V = task_directions(M, d, rng=3)
    xi = diverse_student(J, 4, rng=4) if diverse else None
    prob = AdditiveProblem("hermite:0,0,0,1,0.7", ["he3", "hermite:0,0,0,0.8,0.6"] * 2, V,
                           weights=[1.0, 0.5, 1.5, 1.0], n_neurons=J, diversity=xi)
    traj = simulate(prob, d=d, algorithm="gf", t_end=15.0, init="uniform", replicas=1, n_record=5, rng=0,
                    progress=False)
    ode = integrate(prob, traj.overlaps["u"][0, 0], 15.0, times=traj.t, progress=False)
    assert np.max(np.abs(traj.overlaps["u"][-1, 0] - traj.overlaps["u"][0, 0])) > 0.05
    np.testing.assert_allclose(ode.overlaps["u"][:, 0], traj.overlaps["u"][:, 0], atol=CLOSURE_TOL)


def test_diversity_with_unit_multipliers_is_the_plain_model():
    V = task_directions(3, 10, rng=0)
    plain = AdditiveProblem("he4", "he4", V, n_neurons=2)
    same = AdditiveProblem("he4", "he4", V, n_neurons=2, diversity=np.ones((2, 5)))
    U = np.random.default_rng(0).standard_normal((2, 3)) * 0.3
    np.testing.assert_allclose(same.velocity(U), plain.velocity(U), rtol=1e-14)
    np.testing.assert_allclose(same.noise_moment(U), plain.noise_moment(U), rtol=EXACT_RTOL)
    flipped = AdditiveProblem("he4", "he4", V, n_neurons=2, diversity=-np.ones((2, 5)))
    np.testing.assert_allclose(flipped.velocity(U), -plain.velocity(U), rtol=1e-14)


def test_noise_moment_monte_carlo_many_tasks():
    rng = np.random.default_rng(5)
    M, d, n = 30, 60, 200_000
    V = task_directions(M, d, rng=rng)
    prob = AdditiveProblem("he3", ["he3", "hermite:0,0,0,0.6,0.8"] * 15, V, weights=rng.uniform(0.5, 1.5, M))
    w = rng.standard_normal(d) + 2.0 * V[0]
    w /= np.linalg.norm(w)
    X = rng.standard_normal((n, d))
    s = teacher_labels(prob, X) ** 2 * prob.student.derivative(X @ w) ** 2
    mc, se = s.mean(), s.std(ddof=1) / math.sqrt(n)
    assert abs(float(prob.noise_moment(V @ w)) - mc) <= MC_SIGMAS * se


def test_teacher_labels_by_definition():
    rng = np.random.default_rng(6)
    V = task_directions(3, 7, rng=rng)
    prob = AdditiveProblem("he3", ["he3", "he2", "poly:z**3"], V, weights=[1.0, -2.0, 0.5])
    X = rng.standard_normal((5, 7))
    T = X @ V.T
    he3 = (T[:, 0] ** 3 - 3 * T[:, 0]) / math.sqrt(6)
    he2 = (T[:, 1] ** 2 - 1) / math.sqrt(2)
    expected = (he3 - 2.0 * he2 + 0.5 * T[:, 2] ** 3) / math.sqrt(3)
    np.testing.assert_allclose(teacher_labels(prob, X), expected, rtol=1e-12)


def test_sgd_follows_the_ode_with_its_eta2_term():
    M, d = 4, 300
    prob = AdditiveProblem("he3", "he3", task_directions(M, d, kind="orthogonal", rng=0), n_neurons=2)
    eta = sgd_step_size(prob, 0.5)
    res = compare(prob, d=d, t_end=1500 * eta, eta=eta, batch=1, replicas=16, init=0.3, rng=1, progress=False)
    assert res.verdict.agree, res.verdict.rule
    assert res.meta["ode_correction"] == prob.ode_correction_label


# --------------------------------------------------------------------------------------
# race, localisation, coverage
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [3, 4])
def test_race_rule_matches_the_flow_for_orthogonal_directions(p):
    M, d, J = 6, 60, 24
    prob = AdditiveProblem(f"he{p}", f"he{p}", task_directions(M, d, kind="orthogonal", rng=p), n_neurons=J)
    _, _, u0 = initial_state(prob, d, rng=p)
    t_end = 20.0 * float(np.max(np.max(np.abs(u0), axis=1) ** (2 - p))) / (p * (p - 2) * prob.gamma[0, p])
    traj = integrate(prob, u0, t_end, n_times=5, rtol=1e-8, atol=1e-10, progress=False)
    rep = localisation_report(prob, u0, traj.final("u")[0])
    win, sign = predicted_winners(prob, u0)
    if p % 2:  # the rule's own content: argmax u for odd p, argmax |u| with its sign for even p
        np.testing.assert_array_equal(win[win >= 0], np.argmax(u0, axis=1)[win >= 0])
    else:
        np.testing.assert_array_equal(win, np.argmax(np.abs(u0), axis=1))
    assert rep.fraction_localised == 1.0 and rep.fraction_predicted == 1.0


def test_descent_path_and_diverse_race():
    link = "hermite:0,0,0,0.6,0.8"
    J, M = 40, 4
    xi = diverse_student(J, 4, rng=1)
    prob = AdditiveProblem(link, link, task_directions(M, 40, kind="orthogonal", rng=1), n_neurons=J, diversity=xi)
    ok = descent_path(prob)
    # the kernel towards +-v_m is xi_3 c3^2 t^3 + xi_4 c4^2 t^4 (times s): a path iff xi_4 > 0
    # (then eps = sign xi_3 makes both coefficients >= 0)
    np.testing.assert_array_equal(ok, np.repeat((xi[:, 4] > 0)[:, None], M, axis=1))
    _, _, u0 = initial_state(prob, 40, rng=2)
    traj = integrate(prob, u0, 400.0, n_times=5, rtol=1e-8, atol=1e-10, progress=False)
    loc, win, _ = localisation(traj.final("u")[0])
    assert loc[ok[:, 0]].mean() >= 0.9        # neurons with a descent path localise
    assert not loc[~ok[:, 0]].any()           # the others are stopped on the way


def test_coverage_law_against_inclusion_exclusion_and_harmonic_width():
    simsek = pytest.importorskip("popdyn_theory.simsek2025")
    for M, J, q in [(5, 10, 1.0), (5, 10, 1 - 2 ** -5), (3, 7, 0.8), (8, 30, 1.0)]:
        law = coverage_law(M, J, q=q)
        assert law.p_all == pytest.approx(simsek.coupon_probability(M, J, q), abs=1e-12)
        c = np.arange(M + 1)
        assert float(c @ law.pmf) == pytest.approx(law.expected, rel=1e-12)
        assert law.pmf.sum() == pytest.approx(1.0, abs=1e-13)
    # mean width to cover all: sum_J P(not all covered after J) = M H_M / q
    M, q = 6, 0.7
    p_all = np.array([coverage_law(M, J, q=q).p_all for J in range(200)])
    assert np.sum(1.0 - p_all) == pytest.approx(M * sum(1 / k for k in range(1, M + 1)) / q, rel=1e-10)
    # the 95 % width by a search on inclusion-exclusion (51 at M = 10: theory/simsek2025/equations.md)
    for M_ in (5, 10, 20, 50):
        n = next(n for n in range(1, 2000) if simsek.coupon_probability(M_, n, 1.0) >= 0.95)
        assert width_for_coverage(M_) == n, f"At M={M_}"
    assert width_for_coverage(10) == 51
    big = coverage_law(500, 5000)   # the recursion stays a distribution where inclusion-exclusion cancels
    assert big.pmf.min() >= 0 and big.pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert big.expected == pytest.approx(500 * (1 - (1 - 1 / 500) ** 5000), rel=1e-12)


# --------------------------------------------------------------------------------------
# simulation: Phase I and Phase II
# --------------------------------------------------------------------------------------
def test_phase_one_carries_the_overlaps_and_localises():
    prob = AdditiveProblem("he3", "he3", task_directions(2, 48, kind="orthogonal", rng=0), n_neurons=4)
    res = phase_one(prob, eta=sgd_step_size(prob, 0.2), steps=200_000, replicas=4, level=0.5, rng=1,
                    anneal_steps=500)
    assert np.all(np.isfinite(res.hit_step)) and res.steps < 200_000
    assert res.W.shape == (4, 4, 48) and res.u.shape == (4, 4, 2)
    np.testing.assert_allclose(np.linalg.norm(res.W, axis=-1), 1.0, rtol=1e-12)
    pred = np.stack([predicted_steps(prob, u0, eta=res.eta) for u0 in res.u0])
    # neurons starting near the equator escape by fluctuations the mean-field ODE does not have
    # (its eta^2 term then traps them: NaN); the others agree with SGD (measured ratio of
    # medians 0.78-1.03 over 5 seeds)
    ok = np.isfinite(pred)
    assert ok.mean() >= 0.5
    assert 0.5 < np.median(res.hit_step[ok]) / np.median(pred[ok]) < 2.0


def test_carried_overlaps_equal_w_v():
    from popdyn.simulation import make_stepper

    prob = AdditiveProblem("he3", "he4", task_directions(5, 30, rng=0), n_neurons=4)
    stepper, noise = make_stepper(prob, d=30, algorithm="sgd", eta=0.01, batch=3, replicas=2, same_init=False, rng=0)
    state = stepper.init_state()
    state["U"] = state["W"] @ stepper.V.T
    for _ in range(500):
        stepper.step(state, noise)
    np.testing.assert_allclose(state["U"], stepper.observe(state)["u"], atol=1e-12)


def test_exact_engine_has_the_law_of_the_full_engine():
    """Each neuron's overlaps after 1500 steps: replica means and spreads agree (z-scores)."""
    M, d, J, R = 3, 40, 2, 1500
    prob = AdditiveProblem("he3", "he3", task_directions(M, d, rng=0), n_neurons=J)
    eta = 4 * sgd_step_size(prob, 0.5)
    u0 = np.array([[0.3, 0.1, -0.05], [0.05, -0.2, 0.15]])
    end = {}
    for engine in ("full", "exact"):
        traj = simulate(prob, d=d, algorithm="sgd", eta=eta, steps=1500, batch=1, replicas=R, init=u0, n_record=2,
                        rng=1 if engine == "full" else 2, engine=engine, progress=False)
        end[engine] = traj.overlaps["u"][-1]
    a, b = end["full"], end["exact"]
    assert np.max(np.abs(a.mean(0) - u0)) > 0.05   # the overlaps moved
    z = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0) / R + b.var(0) / R)
    assert np.max(np.abs(z)) < MC_SIGMAS, z
    # variance ratio: log(s_a^2/s_b^2) has standard error ~ sqrt(2/R + 2/R) for near-Gaussian data
    zv = np.log(a.var(0) / b.var(0)) / math.sqrt(4 / R)
    assert np.max(np.abs(zv)) < MC_SIGMAS, zv


def test_exact_engine_uniform_start_and_invariants():
    from popdyn.simulation import make_stepper

    M, d = 4, 30
    prob = AdditiveProblem("he4", "he4", task_directions(M, d, rng=1), n_neurons=3)
    stepper, noise = make_stepper(prob, d=d, algorithm="sgd", eta=1e-3, batch=1, replicas=4000, same_init=False,
                                  rng=0, engine="exact")
    state = stepper.init_state()
    U, r = state["U"], state["r"]
    # Haar start: E[u_m^2] = 1/d, E[r^2] = 1 - M/d (rank G = M)
    assert abs(np.mean(U ** 2) * d - 1) < MC_SIGMAS * np.std(U ** 2 * d) / math.sqrt(U.size / 3)
    assert abs(np.mean(r ** 2) - (1 - M / d)) < MC_SIGMAS * np.std(r ** 2) / math.sqrt(r.size / 3)
    for _ in range(300):
        stepper.step(state, noise)
    Gp = np.linalg.pinv(prob.G)
    q = np.einsum("rjm,mn,rjn->rj", state["U"], Gp, state["U"])
    np.testing.assert_allclose(q + state["r"] ** 2, 1.0, atol=1e-12)   # w stays a unit vector
    with pytest.raises(ValueError, match="`batch` must be 1"):
        make_stepper(prob, d=d, algorithm="sgd", eta=1e-3, batch=4, replicas=2, engine="exact")


def test_phase_two_exact_fit_transfer_and_baselines():
    V = task_directions(3, 20, kind="orthogonal", rng=0)
    prob = AdditiveProblem("he3", "he3", V)
    exact = phase_two(prob, V, n_train=200, rng=1)
    assert exact.test_error[0] < 1e-8 and exact.n_features == 12
    new = AdditiveProblem("he3", ["he2", "hermite:0,0,0.6,0.8", "he1"], V, weights=[2.0, -1.0, 0.5])
    assert phase_two(new, V, n_train=200, rng=2).test_error[0] < 1e-8   # degree <= 3: in the span
    quartic = AdditiveProblem("he3", "he4", V)
    assert phase_two(quartic, V, n_train=200, rng=2).test_error[0] > 0.5   # degree 4: orthogonal to it
    lasso = phase_two(prob, V, n_train=500, method="lasso", alpha=1e-4, rng=3)
    assert lasso.test_error[0] < 1e-2
    relu = phase_two(prob, V, n_train=1500, activation="relu", n_biases=12, bias_range=4.0, rng=4)
    assert relu.test_error[0] < 0.1
    assert phase_two(prob, task_directions(3, 20, rng=9), n_train=500, rng=5).test_error[0] > 0.7
    assert kernel_baseline(prob, n_train=400, rng=6) > 0.8
    with pytest.raises(ValueError, match="`W` must have shape"):
        phase_two(prob, np.ones((2, 5)), n_train=10)


def test_flow_weights_localise():
    prob = AdditiveProblem("he3", "he3", task_directions(3, 30, kind="orthogonal", rng=0), n_neurons=4)
    W = flow_weights(prob, 60.0, rng=1)
    assert np.all(np.max(np.abs(W[0] @ prob.V.T), axis=1) > 0.99)


def test_loglog_slope_against_polyfit():
    rng = np.random.default_rng(0)
    x = np.array([2.0, 4.0, 8.0, 16.0])
    groups = [3.0 * xi ** 1.5 * np.exp(0.1 * rng.standard_normal(10)) for xi in x]
    fit = loglog_slope(x, groups)
    se = np.array([np.std(np.log(g), ddof=1) / math.sqrt(10) for g in groups])
    ref = np.polyfit(np.log(x), [np.log(g).mean() for g in groups], 1, w=1 / se)
    assert fit.slope == pytest.approx(ref[0], rel=1e-12)
    assert abs(fit.slope - 1.5) < 4 * fit.slope_se
    with pytest.raises(ValueError, match="at least 2 finite positive"):
        loglog_slope([1, 2], [[1.0, np.inf], [2.0, 3.0]])


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------
def _json(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_cli_predict_simulate_compare(capsys, tmp_path):
    out = _json(["predict", "--model", "additive", "--M", "4", "--d", "60", "--links", "he4", "--json"], capsys)
    loc = out["localisation"]
    assert out["p"] == 4 and loc["fraction_localised"] == 1.0 and out["width_for_coverage_95"] == width_for_coverage(4)
    assert loc["coupon_collector"]["J"] == math.ceil(2 * 4 * math.log(4))
    sim = _json(["simulate", "--model", "additive", "--M", "3", "--d", "30", "--eta", "0.001", "--t-end", "0.01", "--replicas", "2",
                 "--batch", "1", "--quiet", "--json"], capsys)
    assert sim["n_replicas"] == 2
    res = _json(["compare", "--model", "additive", "--M", "3", "--d", "100", "--directions", "orthogonal",
                 "--eta", "0.0003", "--t-end", "0.45", "--batch", "1", "--replicas", "4", "--quiet", "--plot", "",
                 "--json"], capsys)
    assert "verdict" in res


@pytest.mark.parametrize("argv, needle", [
    (["predict", "--model", "additive", "--M", "50", "--d", "20", "--directions", "orthogonal"], "`M` = 50"),
    (["predict", "--model", "additive", "--gamma", "1.5", "--d", "20", "--directions", "orthogonal"], "`gamma`"),
    (["predict", "--model", "additive", "--gamma", "0.5", "--M", "3"], "--gamma"),
    (["predict", "--model", "additive", "--links", "he2", "--d", "20"], "p must be >= 3"),
    (["predict", "--model", "additive", "--student", "relu", "--diversity", "signs", "--d", "20"], "polynomial"),
    (["predict", "--model", "additive", "--M", "0"], "--M"),
    (["predict", "--model", "additive", "--delta", "0.1"], "--delta"),
    (["simulate", "--model", "additive", "--eta", "0.1", "--eta0", "0.2"], "--eta0"),
    (["predict", "--model", "additive", "--M", "1e9"], "`M` must be at most"),
])
def test_cli_bad_input(argv, needle, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err


# --------------------------------------------------------------------------------------
# slow: SGD localisation and coverage at a larger size
# --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sgd_localisation_and_coverage():
    M, d = 6, 64
    J = math.ceil(2 * M * math.log(M))
    prob = AdditiveProblem("he4", "he4", task_directions(M, d, kind="orthogonal", rng=0), n_neurons=J)
    res = phase_one(prob, eta=sgd_step_size(prob, 0.3), steps=3_000_000, replicas=2, stop_fraction=1.0,
                    anneal_steps=50_000, rng=1)
    rep = res.report
    assert rep.fraction_localised >= 0.9
    assert rep.fraction_predicted >= 0.7   # the SGD noise reorders close races at this d
    assert np.mean(rep.covered) >= rep.law.expected - 4 * rep.law.std


@pytest.mark.slow
@pytest.mark.parametrize("name", ["overlap_ode", "noise_moment", "localisation", "coverage", "sample_complexity",
                                  "phase_two"])
def test_full_mode_claims(name):
    """``popdyn verify 2406.11828`` without --quick: every row passes (seed 0)."""
    from popdyn.verification import claim_generator

    oko = pytest.importorskip("popdyn_theory.oko2024")
    claim = next(c for c in oko.CLAIMS if c.name == name)
    rows = claim.run(False, claim_generator(0, oko.PAPER, name))
    for row in rows if isinstance(rows, list) else [rows]:
        assert row.passed, (row.claim, row.predicted, row.measured, row.details)
