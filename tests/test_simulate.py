"""Finite-d simulator (popdyn.simulation + popdyn.models.multi_index_sim) against independent routes.

* "gf"  : the d-dimensional flow vs the u-ODE integrated here with DOP853 (rtol 1e-11).
* "sgd" : the mean one-step increment vs its second-order expansion (closed form for
          he1/he1, low-dimensional Monte Carlo otherwise), error bars over replicas;
          small-eta trajectories vs gradient flow within noise + derived bias bounds.
* "gd"  : vs a straightforward per-replica, per-neuron, per-sample implementation.
* Engine: resumability, reproducibility, bad inputs, NumericalError.
"""

import json

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from popdyn.simulation import GF_LOG_DECADES
from popdyn import NumericalError, Trajectory
from popdyn.models.multi_index import MultiIndexProblem, gram
from popdyn.models.multi_index_sim import MultiIndexStepper, initial_weights
from popdyn.simulation import initial_state, make_stepper, simulate

#: d-dimensional DOP853 (rtol 1e-10, atol 1e-12) vs u-ODE (rtol 1e-11): both errors are
#: ~1e-10 over O(1) times; measured agreement ~1e-11, so 1e-8 leaves two decades.
GF_ODE_TOL = 1e-8
#: u-ODE reference tolerances (DOP853 rtol 1e-11).
ODE_RTOL, ODE_ATOL = 1e-11, 1e-13
#: Statistical tests: |estimate - prediction| <= Z_TOL standard errors.
Z_TOL = 4.0
#: Power requirement: the tested O(eta^2) term must exceed this many standard errors,
#: so the one-step test would fail if the Itô/normalisation term were missing.
POWER_MIN_Z = 5.0
#: Neglected O(eta^3), O(eta^4) terms of the one-step expansion must stay below this many SE.
NEGLECTED_MAX_Z = 0.5
#: Same floating-point operations in another order: rounding only (~1e-15 per step).
NAIVE_TOL = 1e-11
#: Power-basis Horner vs Hermite recurrence for degree <= 8 on |z| <= 10 (measured 1.4e-13 for he8).
FAST_EVAL_TOL = 1e-12
#: Unit norm / realised overlaps of constructed initial weights (rounding).
INIT_TOL = 1e-12


def ode_u(prob, u0, times):
    """Independent u-ODE: du/dt = G g(u) - u (u.g(u)) per neuron (theory/simsek2025/equations.md)."""
    shape = np.shape(u0)
    sol = solve_ivp(lambda t, y: prob.velocity(y.reshape(shape)).ravel(), (0.0, float(times[-1])),
                    np.ravel(u0), method="DOP853", rtol=ODE_RTOL, atol=ODE_ATOL, t_eval=times)
    assert sol.success
    return sol.y.T.reshape((len(times),) + shape)


def lowdim_samples(G, u, M, rng):
    """Samples of (t = V x, z = w.x, |x_S|^2, r) for unit w with V w = u, x_S = projection of x
    onto S = span(w, V) (dimension r): t = L xi, z = c.xi + tau xi', G = L L^T."""
    lam, U = np.linalg.eigh(G)
    keep = lam > 1e-12
    L = U[:, keep] * np.sqrt(lam[keep])
    c = np.linalg.lstsq(L, u, rcond=None)[0]
    tau = np.sqrt(max(0.0, 1.0 - c @ c))
    r = int(keep.sum()) + (tau > 1e-12)
    xi = rng.standard_normal((M, int(keep.sum()) + 1))
    t = xi[:, :-1] @ L.T
    z = xi[:, :-1] @ c + tau * xi[:, -1]
    sq = np.sum(xi[:, :-1] ** 2, axis=1) + (xi[:, -1] ** 2 if tau > 1e-12 else 0.0)
    return t, z, sq, r


def labels(prob, t):
    return sum(prob.a_star[j] * prob.teacher[j](t[:, j]) for j in range(prob.k))


# --------------------------------------------------------------------------------------
# gradient flow
# --------------------------------------------------------------------------------------
GF_CASES = [
    # (d, G, student, teacher, a_star, init)
    (12, np.eye(3), "he3", "he3", None, 0.3),
    (12, np.eye(2), "he4", "he4", None, "uniform"),
    (30, gram("equiangular", 3, beta=0.25), "hermite:0,0.3,0.5,1,0.5", "hermite:0,0,0,1,0.7", None, 0.3),
    (50, gram("equiangular", 2, beta=-0.2), "he3", ("he3", "hermite:0,0,0.4,1"), [1.0, 0.6], 0.25),
    (20, gram("random", 4, d=6, rng=5), "hermite:0,0,1,1", "hermite:0,0,1,1", None, 0.2),
]


@pytest.mark.parametrize("case", range(len(GF_CASES)))
def test_gf_matches_u_ode(case):
    d, G, student, teacher, a, init = GF_CASES[case]
    prob = MultiIndexProblem(student, teacher, G, a_star=a, n_neurons=3)
    t_end = 30.0 if init == "uniform" else 4.0
    traj = simulate(prob, d=d, algorithm="gf", t_end=t_end, init=init, rng=case, n_record=25, replicas=2)
    _, _, u0 = initial_state(prob, d, init=init, rng=case)
    ref = ode_u(prob, u0, traj.t)
    err = np.abs(traj.u - ref[:, None]).max()
    assert err <= GF_ODE_TOL, f"case {case}: max |u_sim - u_ode| = {err:.2e}"
    assert np.abs(ref[-1] - ref[0]).max() > 0.1, "the flow must move for the comparison to mean something"
    assert traj.time_unit == "gradient-flow time t" and traj.source == "simulation"
    np.testing.assert_array_equal(traj.u[:, 0], traj.u[:, 1])  # deterministic, same_init


def test_gf_independent_inits_match_ode_per_replica():
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=2)
    traj = simulate(prob, d=15, algorithm="gf", t_end=3.0, init=0.35, same_init=False, replicas=3,
                    rng=4, n_record=10)
    u0 = np.array(traj.meta["u0"])
    assert u0.shape == (3, 2, 2)
    assert not np.allclose(u0[0], u0[1])
    ref = ode_u(prob, u0, traj.t)
    assert np.abs(traj.u - ref).max() <= GF_ODE_TOL


# --------------------------------------------------------------------------------------
# online SGD: one-step statistics
# --------------------------------------------------------------------------------------
def one_step_prediction(prob, u, d, eta, B, rng, M=1_000_000):
    r"""Mean increment of u = V w after one spherical SGD step, to second order in eta.

    E[du] = eta v(u) - (eta^2/2) E|ghat|^2 u,  with
    E|ghat|^2 = (1 - 1/B)|P V^T g|^2 + (1/B) E[y^2 s'(z)^2 |P x|^2],
    |P V^T g|^2 = g.G g - (u.g)^2 and E[y^2 s'^2 |Px|^2] = (d - r) C + E[y^2 s'^2 (|x_S|^2 - z^2)]
    (x outside S = span(w, V) is independent of (y, z)).  For he1/he1 everything is in closed
    form (C = a.G.a); otherwise C and the O(1) part come from low-dimensional Monte Carlo.
    Also returns estimates of the neglected O(eta^3 d) and O(eta^4 d^2) terms and the MC SE.
    """
    g = prob.g(u)
    v = prob.velocity(u)
    drift2 = g @ prob.G @ g - (u @ g) ** 2
    t, z, sq, r = lowdim_samples(prob.G, u, M, rng)
    y = labels(prob, t)
    q = (y * prob.student.derivative(z)) ** 2
    if prob.student.name == "he1" and all(tt.name == "he1" for tt in prob.teacher):
        a = prob.a_star
        C = a @ prob.G @ a
        full = C * (d + 1) - 2 * (a @ u) ** 2  # E[(s.x)^2 |Px|^2], s = V^T a
        se_C = 0.0
    else:
        C = q.mean()
        se_C = q.std() / np.sqrt(M)
        full = (d - r) * C + np.mean(q * (sq - z ** 2))
    m2 = (1 - 1 / B) * drift2 + full / B
    pred = eta * v - 0.5 * eta ** 2 * m2 * u
    se_pred = 0.5 * eta ** 2 * (d - r) * se_C / B * np.abs(u)
    # neglected terms (leading order in d): (eta^3/2) E[|g|^2 V g] and (3/8) eta^4 E|g|^4 u
    ys = y * prob.student.derivative(z)
    T3 = np.mean((ys ** 3)[:, None] * (t - z[:, None] * u), axis=0)
    third = -0.5 * eta ** 3 * (d - r) / B ** 2 * (T3 + (B - 1) * np.mean(ys ** 2) * v)
    fourth = 3 / 8 * eta ** 4 * (d - r) ** 2 / B ** 2 * (np.mean(ys ** 4) / B + (1 - 1 / B) * C ** 2) * np.abs(u)
    return pred, se_pred, -0.5 * eta ** 2 * m2 * u, np.abs(third) + fourth


ONE_STEP_CASES = [
    # (student, teacher, B, eta): he1/he1 has sigma' = 1 and C = a.G.a
    ("he1", "he1", 1, 1e-3),
    ("he1", "he1", 4, 1e-3),
    ("hermite:0,1,0.5", "he2", 2, 5e-4),  # sigma' = 1 + z/sqrt(2): C by low-dim MC
]


@pytest.mark.parametrize("student,teacher,B,eta", ONE_STEP_CASES)
def test_sgd_one_step_mean_increment(student, teacher, B, eta):
    d, R, chunks = 400, 10000, 4  # 40000 replicas in chunks (memory)
    prob = MultiIndexProblem(student, teacher, np.eye(2), a_star=[1.0, 0.5], n_neurons=2)
    u0 = np.array([[0.5, 0.2], [-0.3, 0.4]])
    du = []
    for c in range(chunks):
        traj = simulate(prob, d=d, algorithm="sgd", eta=eta, steps=1, batch=B, replicas=R, init=u0,
                        rng=100 + c, record="linear", n_record=2)
        assert traj.t.tolist() == [0.0, eta]
        du.append(traj.u[1] - traj.u[0])
    du = np.concatenate(du)
    mean, se = du.mean(0), du.std(0, ddof=1) / np.sqrt(du.shape[0])
    _, _, u_init = initial_state(prob, d, init=u0, rng=100)  # = u0 up to rounding
    rng = np.random.default_rng(2024)
    power = []
    for i in range(2):
        pred, se_pred, term2, neglected = one_step_prediction(prob, u_init[i], d, eta, B, rng)
        tot = np.sqrt(se[i] ** 2 + se_pred ** 2)
        assert np.all(neglected < NEGLECTED_MAX_Z * tot), f"neuron {i}: neglected terms {neglected} vs SE {tot}"
        z = (mean[i] - pred) / tot
        print(f"neuron {i}: z = {z}, eta^2 term / SE = {term2 / tot}, neglected / SE = {neglected / tot}")
        assert np.all(np.abs(z) < Z_TOL), f"neuron {i}: z-scores {z}, mean {mean[i]}, prediction {pred}"
        power.append(np.max(np.abs(term2) / tot))
    assert max(power) > POWER_MIN_Z, f"the eta^2 term is only {max(power):.1f} SE: test has no power"


# --------------------------------------------------------------------------------------
# online SGD: small eta, large batch tracks gradient flow
# --------------------------------------------------------------------------------------
def test_sgd_tracks_gradient_flow():
    """Mean SGD path vs GF: |mean - gf| <= 4 SE + |disc - gf| + noise bias bound, where

    * disc is the noiseless discrete recursion u' = (u + eta v)/sqrt(1 + eta^2 |P V^T g|^2)
      (the B -> infinity limit of the same update, closed in u): its deviation from GF is the
      deterministic O(eta) discretisation bias;
    * the per-step Itô contraction is at most (eta^2/2)(d+1) C_max/B |u|, i.e. a drift of
      (eta/2)(d+1) C_max/B per unit time, with C_max the largest C(u) = E[y^2 s'(z)^2] over the
      GF path (low-dimensional MC, times 1.2 for its error).
    """
    act = "hermite:0,0,1,0.5"  # IE 2 with an h3 part; moderate C (C_max ~ 80) keeps the bias bound tight
    prob = MultiIndexProblem(act, act, np.eye(2), n_neurons=2)
    u0 = np.array([[0.6, 0.1], [0.2, 0.7]])
    d, eta, B, R, T = 20, 2e-3, 200, 32, 1.5
    traj = simulate(prob, d=d, algorithm="sgd", eta=eta, t_end=T, batch=B, replicas=R, init=u0, rng=11,
                    record="linear", n_record=11)
    np.testing.assert_allclose(traj.t, np.linspace(0, T, 11), rtol=0, atol=1e-12)
    gf = ode_u(prob, u0, traj.t)
    u, disc, steps = u0.copy(), [u0.copy()], np.rint(traj.t / eta).astype(int)
    for s in range(1, steps[-1] + 1):
        g, v = prob.g(u), prob.velocity(u)
        n2 = np.einsum("nj,jl,nl->n", g, prob.G, g) - np.sum(u * g, -1) ** 2
        u = (u + eta * v) / np.sqrt(1 + eta ** 2 * n2)[:, None]
        if s in steps:
            disc.append(u.copy())
    disc = np.array(disc)
    rng = np.random.default_rng(3)
    C_max = 1.2 * max(np.mean((labels(prob, t) * prob.student.derivative(z)) ** 2)
                      for t, z, _, _ in (lowdim_samples(prob.G, uu, 200_000, rng) for uu in gf.reshape(-1, 2)))
    bias = 0.5 * eta * (d + 1) * C_max / B * traj.t[:, None, None]
    se = traj.std("u") / np.sqrt(R)
    dev = np.abs(traj.mean("u") - gf)
    tol = Z_TOL * se + np.abs(disc - gf) + bias + INIT_TOL
    assert np.all(dev <= tol), f"max excess {np.max(dev - tol):.3g}; dev {dev.max():.3g}"
    # power: the flow moves by far more than the tolerance
    assert np.abs(gf[-1] - gf[0]).max() > 10 * tol.max()


# --------------------------------------------------------------------------------------
# multi-pass GD against a straightforward implementation
# --------------------------------------------------------------------------------------
def naive_update(prob, V, w, X, y, eta):
    """One spherical step on the batch (X, y), written sample by sample."""
    grad = np.zeros_like(w)
    for x, yy in zip(X, y):
        grad -= yy * prob.student.derivative(np.dot(w, x)) * x
    grad /= len(X)
    ghat = grad - np.dot(w, grad) * w
    w = w - eta * ghat
    return w / np.sqrt(np.dot(w, w))


def naive_labels(prob, V, X):
    return np.array([sum(prob.a_star[j] * float(prob.teacher[j](V[j] @ x)) for j in range(prob.k)) for x in X])


def _tiny_problem():
    return MultiIndexProblem("tanh", ("he3", "tanh"), gram("equiangular", 2, beta=0.3), a_star=[1.0, 0.7],
                             n_neurons=2)


def test_gd_full_batch_matches_naive():
    prob = _tiny_problem()
    d, n, R, eta, steps = 6, 7, 2, 0.05, 25
    stepper, _ = make_stepper(prob, d=d, algorithm="gd", eta=eta, n_samples=n, replicas=R, init=0.4, rng=8)
    assert stepper.data.shape == (R, n, d)
    traj = simulate(prob, d=d, algorithm="gd", eta=eta, steps=steps, n_samples=n, replicas=R, init=0.4,
                    rng=8, record="linear", n_record=steps + 1)
    V, W0 = stepper.V, np.array(stepper.init_state()["W"])
    for r in range(R):
        y = naive_labels(prob, V, stepper.data[r])
        np.testing.assert_allclose(stepper.labels[r], y, rtol=0, atol=NAIVE_TOL)
        for i in range(prob.n_neurons):
            w = W0[r, i]
            for s in range(1, steps + 1):
                w = naive_update(prob, V, w, stepper.data[r], y, eta)
                np.testing.assert_allclose(traj.u[s, r, i], V @ w, rtol=0, atol=NAIVE_TOL,
                                           err_msg=f"replica {r}, neuron {i}, step {s}")


def test_gd_minibatch_epochs_match_naive():
    prob = _tiny_problem()
    d, n, B, R, eta, steps = 5, 7, 3, 3, 0.1, 12  # batches of 3, 3, 1 per epoch
    stepper, noise = make_stepper(prob, d=d, algorithm="gd", eta=eta, n_samples=n, batch=B, replicas=R,
                                  init="uniform", rng=9)
    state = stepper.init_state()
    W = np.array(state["W"])
    seen = [[] for _ in range(R)]
    sizes = []
    for s in range(steps):
        pos = int(state["pos"])
        stepper.step(state, noise)
        end = min(pos + B, n)
        sizes.append(end - pos)
        for r in range(R):
            idx = state["perm"][r, pos:end]
            seen[r].append(idx.copy())
            X, y = stepper.data[r, idx], naive_labels(prob, stepper.V, stepper.data[r, idx])
            for i in range(prob.n_neurons):
                W[r, i] = naive_update(prob, stepper.V, W[r, i], X, y, eta)
        np.testing.assert_allclose(state["W"], W, rtol=0, atol=NAIVE_TOL, err_msg=f"step {s + 1}")
    assert sizes == [3, 3, 1] * 4
    for r in range(R):
        for e in range(4):  # every sample exactly once per epoch
            assert sorted(np.concatenate(seen[r][3 * e:3 * e + 3]).tolist()) == list(range(n))
    # the engine runs the same loop
    traj = simulate(prob, d=d, algorithm="gd", eta=eta, steps=steps, n_samples=n, batch=B, replicas=R,
                    rng=9, record="linear", n_record=2)
    np.testing.assert_array_equal(traj.u[-1], state["W"] @ stepper.V.T)


def test_gd_batch_larger_than_dataset_warns_and_uses_full_batch():
    prob = _tiny_problem()
    kw = dict(d=5, algorithm="gd", eta=0.1, steps=4, n_samples=6, replicas=2, rng=1, n_record=2)
    with pytest.warns(UserWarning, match="full-batch"):
        a = simulate(prob, batch=10, **kw)
    b = simulate(prob, **kw)
    np.testing.assert_array_equal(a.u, b.u)


@pytest.mark.parametrize("spec", ["he0", "he1", "he2", "he3", "he5", "he8", "hermite:0.1,0,1,0.5",
                                  "poly:z**3-3*z", "he9", "tanh"])
def test_fast_evaluator_matches_activation(spec):
    from popdyn import get_activation
    from popdyn.models.multi_index_sim import fast_evaluator

    act = get_activation(spec)
    z = np.linspace(-10, 10, 2001)
    for der in (False, True):
        ref = act.derivative(z) if der else act(z)
        got = fast_evaluator(act, derivative=der)(z, np.empty_like(z))
        err = np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref)))
        assert err < FAST_EVAL_TOL, f"{spec}, derivative={der}: {err:.2e}"


# --------------------------------------------------------------------------------------
# initial state
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("G", [np.eye(3), gram("equiangular", 3, beta=0.4), gram("random", 3, d=5, rng=2)])
def test_initial_weights_realise_u0(G):
    from popdyn.models.multi_index import index_vectors

    V = index_vectors(G, 9, rng=0)
    u0 = np.array([[0.3, -0.2, 0.1], [0.0, 0.5, 0.5], [0.1, 0.1, 0.1]])
    W = initial_weights(V, 3, init=u0, rng=1, replicas=4)
    assert W.shape == (4, 3, 9)
    np.testing.assert_allclose(W @ V.T, np.broadcast_to(u0, (4, 3, 3)), atol=INIT_TOL)
    np.testing.assert_allclose(np.linalg.norm(W, axis=-1), 1.0, atol=INIT_TOL)
    assert not np.allclose(W[0], W[1])  # independent components outside span(V)


def test_initial_weights_on_span_and_laws():
    from popdyn.models.multi_index import index_vectors

    V = index_vectors(np.eye(2), 4, rng=0)
    # u0^T G^+ u0 = 1: w = v_1, computed without a square root of a rounding residual
    # (the boundary is handled exactly), so rounding-level agreement holds on any BLAS
    W = initial_weights(V, 1, init=[1.0, 0.0], rng=0)
    np.testing.assert_allclose(W[0], V[0], atol=INIT_TOL)
    # warm start law: u0 ~ N(0, m0^2 G); covariance entries within 5 SE (Wishart variances)
    G = gram("equiangular", 3, beta=0.4)
    V = index_vectors(G, 10, rng=1)
    m0, n = 0.1, 20000
    u = initial_weights(V, n, init=m0, rng=3) @ V.T
    cov = u.T @ u / n / m0 ** 2
    se = np.sqrt((np.outer(np.diag(G), np.diag(G)) + G ** 2) / n)
    assert np.all(np.abs(cov - G) < 5 * se)
    # Haar: E[u u^T] = G / d
    d = 10
    u = initial_weights(V, n, init="uniform", rng=4) @ V.T
    assert np.all(np.abs(u.T @ u / n * d - G) < 5 * se * 1.2)  # sphere variances are slightly smaller


#: Orthogonal part sqrt(1 - q) for q = 1 - 1e-6: q has rounding error ~1e-15, so
#: sqrt(1 - q) = 1e-3 is known to ~1e-15 / 2e-3 = 5e-13, i.e. 5e-10 relative.
INSIDE_RTOL = 1e-8


def test_initial_weights_boundary_is_exact():
    """u0 = V w for unit w in span(V): q = u0^T G^+ u0 is 1 only up to rounding, yet the
    orthogonal part must be exactly zero (the old code put sqrt(rounding) ~ 1e-8 there)."""
    from popdyn.models.multi_index import index_vectors
    from popdyn.models.multi_index_sim import boundary_tolerance

    G = gram("equiangular", 3, beta=0.8)  # cond(G) = (1 + 2b) / (1 - b) = 13
    V = index_vectors(G, 12, rng=2)
    w = np.random.default_rng(0).standard_normal((6, 3)) @ V
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    u0 = w @ V.T
    q = np.einsum("ij,ij->i", u0, np.linalg.solve(G, u0.T).T)
    assert np.all(np.abs(q - 1) < boundary_tolerance(np.linalg.eigvalsh(G)))
    _, s, Vh = np.linalg.svd(V, full_matrices=False)
    W = initial_weights(V, 6, init=u0, rng=1)
    ortho = W - (W @ Vh.T) @ Vh
    assert np.abs(ortho).max() < INIT_TOL
    np.testing.assert_allclose(W, w, atol=INIT_TOL)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0, atol=INIT_TOL)
    # just inside the boundary the orthogonal part is real: sqrt(1 - q) = 1e-3
    W = initial_weights(V, 6, init=u0 * np.sqrt(1 - 1e-6), rng=1)
    ortho = W - (W @ Vh.T) @ Vh
    np.testing.assert_allclose(np.linalg.norm(ortho, axis=1), 1e-3, rtol=INSIDE_RTOL)
    np.testing.assert_allclose(W @ V.T, u0 * np.sqrt(1 - 1e-6), atol=INIT_TOL)


@pytest.mark.parametrize("init,match", [
    ("haar", "`init`"), (-0.1, "`init`"), (np.zeros((3, 3)), "`init`"), ([0.9, 0.9], "u0\\^T G\\^\\+ u0"),
    (100.0, "too large"),
])
def test_initial_weights_bad(init, match):
    from popdyn.models.multi_index import index_vectors

    V = index_vectors(np.eye(2), 6, rng=0)
    with pytest.raises(ValueError, match=match):
        initial_weights(V, 2, init=init, rng=0)


def test_initial_weights_no_room_outside_span():
    from popdyn.models.multi_index import index_vectors

    V = index_vectors(np.eye(2), 2, rng=0)
    with pytest.raises(ValueError, match="outside span"):
        initial_weights(V, 1, init=[0.3, 0.3], rng=0)
    V = index_vectors(np.ones((2, 2)), 3, rng=0)  # rank 1
    with pytest.raises(ValueError, match="range"):
        initial_weights(V, 1, init=[0.3, -0.3], rng=0)


def test_same_init_and_initial_state():
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=3)
    a = simulate(prob, d=10, eta=0.01, steps=5, replicas=4, rng=5, n_record=2)
    V, W0, u0 = initial_state(prob, 10, rng=5)
    for r in range(4):
        np.testing.assert_array_equal(a.u[0, r], u0)
    np.testing.assert_array_equal(np.array(a.meta["u0"]), u0)
    assert not np.allclose(a.u[1, 0], a.u[1, 1])  # different noise
    b = simulate(prob, d=10, eta=0.01, steps=5, replicas=4, rng=5, n_record=2, same_init=False)
    assert not np.allclose(b.u[0, 0], b.u[0, 1])
    _, W0b, u0b = initial_state(prob, 10, rng=5, replicas=4, same_init=False)
    np.testing.assert_array_equal(b.u[0], u0b)
    # gf and sgd with the same seed start from the same state
    c = simulate(prob, d=10, algorithm="gf", t_end=0.5, rng=5, n_record=2)
    np.testing.assert_array_equal(c.u[0, 0], u0)


# --------------------------------------------------------------------------------------
# engine: grids, meta, reproducibility, checkpoints
# --------------------------------------------------------------------------------------
def test_grids_and_meta():
    prob = MultiIndexProblem("he2", "he2", np.eye(2), n_neurons=1)
    tr = simulate(prob, d=8, eta=0.1, steps=1000, replicas=2, rng=0, n_record=30)
    steps = np.array(tr.meta["record_steps"])
    assert steps[0] == 0 and steps[-1] == 1000 and steps[1] == 1 and np.all(np.diff(steps) > 0)
    assert len(steps) <= 30
    np.testing.assert_allclose(tr.t, 0.1 * steps)
    assert tr.time_unit == "t = eta * steps" and tr.model == "multi_index"
    for key in ("problem", "d", "algorithm", "eta", "batch", "n_samples", "seed", "versions", "u0"):
        assert key in tr.meta
    assert tr.meta["seed"] == 0 and tr.meta["problem"] == prob.describe()
    tr2 = simulate(prob, d=8, eta=0.1, t_end=2.0, replicas=2, rng=0, record=[0.5, 1.0, 1.3])
    np.testing.assert_allclose(tr2.t, [0.0, 0.5, 1.0, 1.3, 2.0])
    gf = simulate(prob, d=8, algorithm="gf", t_end=2.0, replicas=1, rng=0, n_record=6)
    assert gf.t[0] == 0.0 and gf.t[1] == pytest.approx(2.0 * 10.0 ** -GF_LOG_DECADES)
    assert gf.t[-1] == 2.0 and gf.t.size == 6


def test_trajectory_save_load_roundtrip(tmp_path):
    prob = MultiIndexProblem("he2", "he3", np.eye(2), n_neurons=2)
    tr = simulate(prob, d=8, eta=0.05, steps=20, replicas=2, rng=0, n_record=5, init=0.3)
    back = Trajectory.load(tr.save(tmp_path / "t.npz"))
    np.testing.assert_array_equal(back.u, tr.u)
    assert back.meta["u0"] == tr.meta["u0"] and back.meta["seed"] == 0
    json.dumps(tr.meta)  # JSON-friendly


@pytest.mark.parametrize("algorithm,kw", [
    ("sgd", dict(eta=0.05, steps=40, batch=2)),
    ("gd", dict(eta=0.05, steps=40, n_samples=9, batch=4)),
])
def test_reproducible(algorithm, kw):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=2)
    run = lambda rng: simulate(prob, d=10, algorithm=algorithm, replicas=3, rng=rng, n_record=8, **kw)  # noqa: E731
    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a.u, b.u)
    assert not np.allclose(a.u[-1], c.u[-1])
    g1, g2 = run(np.random.default_rng(3)), run(np.random.default_rng(3))
    np.testing.assert_array_equal(g1.u, g2.u)
    assert g1.meta["seed"]["n_children_spawned"] == 0
    fresh = run(None)
    again = run(np.random.SeedSequence(fresh.meta["seed"]["entropy"]))
    np.testing.assert_array_equal(fresh.u, again.u)


class _Interrupt(Exception):
    pass


def _interrupt_after(monkeypatch, method, n_calls):
    orig = getattr(MultiIndexStepper, method)
    count = {"n": 0}

    def wrapped(self, *args):
        count["n"] += 1
        if count["n"] > n_calls:
            raise _Interrupt
        return orig(self, *args)

    monkeypatch.setattr(MultiIndexStepper, method, wrapped)


RESUME_CASES = [
    ("sgd", dict(eta=0.05, steps=60, batch=3), "step", 23),
    ("gd", dict(eta=0.05, steps=60, n_samples=11, batch=4), "step", 37),
    ("gf", dict(t_end=3.0), "advance", 13),
]


@pytest.mark.parametrize("algorithm,kw,method,n_calls", RESUME_CASES)
def test_resume_is_identical(tmp_path, monkeypatch, algorithm, kw, method, n_calls):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=2)
    common = dict(d=9, algorithm=algorithm, replicas=3, init=0.3, n_record=20, same_init=False, **kw)
    ref = simulate(prob, rng=5, **common)
    ck = tmp_path / "run.npz"
    with monkeypatch.context() as m:
        _interrupt_after(m, method, n_calls)
        with pytest.raises(_Interrupt):
            simulate(prob, rng=5, checkpoint=ck, checkpoint_steps=5, checkpoint_every=1e9, **common)
    assert ck.exists()
    resumed = simulate(prob, rng=5, checkpoint=ck, checkpoint_steps=5, checkpoint_every=1e9, **common)
    assert resumed.meta["resumed_from"] is not None and resumed.meta["resumed_from"] > 0
    np.testing.assert_array_equal(resumed.t, ref.t)
    np.testing.assert_array_equal(resumed.u, ref.u)
    done = simulate(prob, rng=5, checkpoint=ck, **common)  # complete checkpoint: no work
    np.testing.assert_array_equal(done.u, ref.u)


def test_resume_adopts_seed_and_rejects_mismatch(tmp_path, monkeypatch):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    common = dict(d=7, eta=0.05, steps=30, replicas=2, n_record=10)
    ck = tmp_path / "c.npz"
    with monkeypatch.context() as m:
        _interrupt_after(m, "step", 17)
        with pytest.raises(_Interrupt):
            simulate(prob, rng=None, checkpoint=ck, checkpoint_every=0.0, **common)
    resumed = simulate(prob, rng=None, checkpoint=ck, **common)
    assert resumed.meta["resumed_from"] == 17
    ref = simulate(prob, rng=np.random.SeedSequence(resumed.meta["seed"]["entropy"]), **common)
    np.testing.assert_array_equal(resumed.u, ref.u)
    with pytest.raises(ValueError, match="different parameters.*eta"):
        simulate(prob, rng=None, checkpoint=ck, **{**common, "eta": 0.06})
    with pytest.raises(ValueError, match="different parameters.*seed"):
        simulate(prob, rng=3, checkpoint=ck, **common)
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        simulate(prob, rng=3, checkpoint=tmp_path / "junk.npz", **common)


def test_progress_bar_to_stderr(capsys):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    a = simulate(prob, d=7, eta=0.05, steps=30, replicas=2, rng=1, progress=True)
    err = capsys.readouterr().err
    assert "simulate sgd" in err and "30/30" in err
    b = simulate(prob, d=7, eta=0.05, steps=30, replicas=2, rng=1, progress=False)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(a.u, b.u)


# --------------------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------------------
def test_numerical_error_huge_eta():
    prob = MultiIndexProblem("he5", "he5", np.eye(2), n_neurons=2)
    with pytest.raises(NumericalError, match="eta") as info:
        simulate(prob, d=10, eta=1e305, steps=10, replicas=2, rng=0, batch=4)
    assert info.value.step is not None and info.value.step <= 2
    assert info.value.time == pytest.approx(info.value.step * 1e305)


def test_numerical_error_injected_nonfinite(monkeypatch):
    import popdyn.models.multi_index_sim as mis

    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    calls = {"n": 0}
    orig = mis.fast_evaluator

    def poisoned(act, *, derivative=False):
        f = orig(act, derivative=derivative)
        if not derivative:
            return f

        def g(z, out):  # sigma' turns NaN at the 6th step
            calls["n"] += 1
            f(z, out)
            if calls["n"] == 6:
                out *= np.nan
            return out
        return g

    with monkeypatch.context() as m:
        m.setattr(mis, "fast_evaluator", poisoned)
        with pytest.raises(NumericalError, match="step 6") as info:
            simulate(prob, d=10, eta=0.01, steps=50, replicas=2, rng=0)
    assert info.value.step == 6 and info.value.time == pytest.approx(0.06)
    prob2 = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    object.__setattr__(prob2, "g", lambda u: np.full_like(u, np.inf))
    with pytest.raises(NumericalError, match="gradient-flow") as info:
        simulate(prob2, d=10, algorithm="gf", t_end=1.0, rng=0)
    assert info.value.time is not None


BAD_INPUTS = [
    (dict(d=0), ValueError, "`d`"),
    (dict(replicas=0), ValueError, "`replicas`"),
    (dict(eta=0.0), ValueError, "`eta`"),
    (dict(eta=-1.0), ValueError, "`eta`"),
    (dict(eta=None), ValueError, "`eta`"),
    (dict(batch=0), ValueError, "`batch`"),
    (dict(algorithm="gd", n_samples=0), ValueError, "`n_samples`"),
    (dict(algorithm="gd"), ValueError, "`n_samples`"),
    (dict(n_samples=5), ValueError, "`n_samples`"),
    (dict(t_end=1.0), ValueError, "exactly one of `steps` and `t_end`"),
    (dict(steps=None), ValueError, "exactly one of `steps` and `t_end`"),
    (dict(steps=1.5), TypeError, "`steps`"),
    (dict(algorithm="adam"), ValueError, "'gf', 'sgd', 'gd'"),
    (dict(d=2), ValueError, "`d` must be at least rank"),
    (dict(algorithm="gf", eta=None, steps=None), ValueError, "`t_end` is required"),
    (dict(algorithm="gf", eta=None, steps=None, t_end=1.0, batch=2), ValueError, "`batch`"),
    (dict(algorithm="gf", t_end=1.0, steps=None), ValueError, "`eta` does not apply"),
    (dict(algorithm="gf", eta=None, t_end=1.0), ValueError, "`steps` does not apply"),
    (dict(init="haar"), ValueError, "`init`"),
    (dict(init=0.0), ValueError, "`init`"),
    (dict(init=np.zeros(4)), ValueError, "`init`"),
    (dict(n_record=1), ValueError, "`n_record`"),
    (dict(record="cubic"), ValueError, "`record`"),
    (dict(record=[-1.0]), ValueError, "`record`"),
    (dict(rng="seed"), TypeError, "`rng`"),
    (dict(progress="yes"), TypeError, "`progress`"),
    (dict(same_init="no"), TypeError, "`same_init`"),
    (dict(eta=0.3, t_end=0.1, steps=None), ValueError, "`t_end`"),
]


@pytest.mark.parametrize("kw,exc,match", BAD_INPUTS)
def test_bad_inputs(kw, exc, match):
    prob = MultiIndexProblem("he3", "he3", np.eye(3), n_neurons=2)
    args = dict(d=10, algorithm="sgd", eta=0.1, steps=5, replicas=2, rng=0)
    args.update(kw)
    with pytest.raises(exc, match=match):
        simulate(prob, **args)


def test_unknown_problem_type():
    with pytest.raises(TypeError, match="MultiIndexProblem"):
        simulate(object(), d=5, eta=0.1, steps=2)


# --------------------------------------------------------------------------------------
# budgets: refused before any allocation or step
# --------------------------------------------------------------------------------------
#: An absurd request must be refused at once, not after allocating; far above the time
#: of the validation itself (~1 ms) and far below any allocation of the sizes involved.
REFUSAL_MAX_SECONDS = 1.0


@pytest.mark.parametrize("kw,driver", [
    (dict(d=10**12), "`d`"), (dict(replicas=10**12), "`replicas`"), (dict(batch=10**12), "`batch`"),
    (dict(algorithm="gd", n_samples=10**12), "`n_samples`"), (dict(n_record=10**12), "`n_record`"),
])
def test_memory_budget_refuses_huge_sizes(kw, driver):
    import time

    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=2)
    args = dict(d=100, eta=1e-3, steps=100, replicas=8, rng=0)
    args.update(kw)
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"^{driver} = 1e\\+12 needs at least .* GiB .* lower {driver}") as info:
        simulate(prob, **args)
    assert time.monotonic() - start < REFUSAL_MAX_SECONDS
    assert len(str(info.value)) < 200


def test_memory_terms_and_limit():
    from popdyn._budget import GiB, available_memory, check_memory
    from popdyn.simulation import SimulationConfig, check_run_memory, memory_terms

    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=3)
    config = SimulationConfig(d=1000, algorithm="sgd", eta=0.01, batch=32, replicas=8)
    terms = memory_terms(prob, config, 50)
    sizes = sorted(t[0] for t in terms)
    assert sizes == sorted([8 * 3 * 1000 * 8, 8 * 32 * 1000 * 8, 50 * 8 * 3 * 8])
    check_run_memory(terms)  # 2 MiB: fine
    # the largest array is the minibatch; its largest factor is named
    with pytest.raises(ValueError, match="^`d` = 1000 .*minibatch replicas x batch x d = 8 x 32 x 1000.* lower `d`"):
        check_run_memory(terms, limit=2**20)
    assert available_memory() > GiB // 4
    with pytest.raises(ValueError, match="`d` = 1e\\+12 needs at least 1.49e\\+04 GiB"):
        check_memory(2 * 8 * 10**12, driver="d", value=10**12)


def test_step_budget():
    import time

    from popdyn._budget import DEFAULT_MAX_STEPS
    from popdyn.models.committee import CommitteeProblem, simulate_committee

    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=2)
    start = time.monotonic()
    with pytest.raises(ValueError, match="^`t_end` = 1e\\+12 with `eta` = 0.001 needs 1e\\+15 steps, above "
                                         "`max_steps` = 1e\\+09; raise `max_steps`"):
        simulate(prob, d=10, eta=1e-3, t_end=1e12)
    with pytest.raises(ValueError, match="`max_steps` = 50"):
        simulate(prob, d=10, eta=1e-3, steps=51, max_steps=50)
    committee = CommitteeProblem("erf", "erf", K=2, M=2, delta=0.5)
    with pytest.raises(ValueError, match="^`t_end` = 1e\\+12 at `d` = 500 .* needs 5e\\+14 steps"):
        simulate_committee(committee, d=500, t_end=1e12)
    assert time.monotonic() - start < REFUSAL_MAX_SECONDS
    assert DEFAULT_MAX_STEPS == 10**9
    with pytest.raises(ValueError, match="`max_steps`"):
        simulate(prob, d=10, eta=1e-3, steps=5, max_steps=0)
    simulate(prob, d=10, eta=1e-3, steps=50, max_steps=50, n_record=2)  # at the limit: runs
    simulate(prob, d=10, eta=1e-3, steps=50, max_steps=None, n_record=2)


# ---------------------------------------------------------------------------------------
# per-replica stopping (stop=..., stop_every=...)
# ---------------------------------------------------------------------------------------
STOP_LEVEL = 0.45


def _stop_case(**extra):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    kw = dict(d=20, algorithm="sgd", eta=0.02, steps=400, batch=2, replicas=5, init=0.2, same_init=False,
              rng=11, progress=False)
    kw.update(extra)
    return prob, kw


def _reached(observed):
    return np.abs(observed["u"][:, 0, 0]) >= STOP_LEVEL


def test_stop_freezes_each_replica_at_its_hitting_step_without_changing_the_others():
    prob, kw = _stop_case()
    every = simulate(prob, record="linear", n_record=kw["steps"] + 1, **kw)  # the free run, every step
    first = np.argmax(np.abs(every.u[:, :, 0, 0]) >= STOP_LEVEL, axis=0)
    reached = np.any(np.abs(every.u[:, :, 0, 0]) >= STOP_LEVEL, axis=0)
    assert reached.sum() >= 2 and not reached.all()  # the test covers both kinds of replica
    traj = simulate(prob, record="linear", n_record=kw["steps"] + 1, stop=_reached, stop_every=1, **kw)
    assert traj.status == 0 and traj.t.size == every.t.size
    np.testing.assert_array_equal(traj.events["stop_step"], np.where(reached, first, np.nan))
    np.testing.assert_array_equal(traj.events["stop"], np.where(reached, first * kw["eta"], np.nan))
    for r in range(kw["replicas"]):
        if reached[r]:  # identical up to the hitting step, then frozen there
            np.testing.assert_array_equal(traj.u[:first[r] + 1, r], every.u[:first[r] + 1, r])
            np.testing.assert_array_equal(traj.u[first[r]:, r], np.broadcast_to(every.u[first[r], r],
                                                                                 traj.u[first[r]:, r].shape))
        else:  # same random stream: the unstopped replicas are bit-identical to the free run
            np.testing.assert_array_equal(traj.u[:, r], every.u[:, r])


def test_stop_at_recording_times_only_and_early_exit_when_all_stopped():
    prob, kw = _stop_case(replicas=3, steps=3000)
    every = simulate(prob, record="linear", n_record=kw["steps"] + 1, **kw)
    first = np.argmax(np.abs(every.u[:, :, 0, 0]) >= STOP_LEVEL, axis=0)
    assert np.all(np.any(np.abs(every.u[:, :, 0, 0]) >= STOP_LEVEL, axis=0)) and first.max() < 2000
    # without stop_every: evaluated on the grid (every 10 steps) only
    coarse = simulate(prob, record="linear", n_record=301, stop=_reached, **kw)
    np.testing.assert_array_equal(coarse.events["stop_step"], 10 * np.ceil(first / 10))
    # stop_every=1 with a coarse grid: exact steps, the run ends at the last one (appended to the grid)
    fine = simulate(prob, record="linear", n_record=301, stop=_reached, stop_every=1, **kw)
    np.testing.assert_array_equal(fine.events["stop_step"], first)
    last = first.max()
    assert fine.status == 1 and "stopped early" in fine.message
    assert fine.t[-1] == pytest.approx(last * kw["eta"], rel=1e-15) and fine.u.shape[0] == fine.t.size
    expected_grid = [s for s in range(0, last + 1, 10)] + ([last] if last % 10 else [])
    np.testing.assert_allclose(fine.t, np.array(expected_grid) * kw["eta"], rtol=1e-15)
    for r in range(3):
        np.testing.assert_array_equal(fine.u[-1, r], every.u[first[r], r])


def test_stop_everyone_at_the_start_and_gradient_flow():
    prob, kw = _stop_case()
    none = simulate(prob, record="linear", n_record=5, stop=lambda o: np.ones(5, dtype=bool), **kw)
    assert none.status == 1 and none.t.tolist() == [0.0]
    np.testing.assert_array_equal(none.events["stop_step"], np.zeros(5))
    gf = dict(d=20, algorithm="gf", t_end=30.0, replicas=3, init=0.2, same_init=False, rng=4, n_record=31,
              record="linear", progress=False)
    free = simulate(prob, **gf)
    hit = np.abs(free.u[:, :, 0, 0]) >= STOP_LEVEL
    reached = hit.any(axis=0)
    assert reached.sum() == 2 and not hit[0].any()  # replica 0 decays to the saddle u = 0
    first = np.argmax(hit, axis=0)
    stopped = simulate(prob, stop=_reached, **gf)
    np.testing.assert_array_equal(stopped.events["stop"], np.where(reached, free.t[first], np.nan))
    assert "stop_step" not in stopped.events and stopped.status == 0
    # one adaptive integrator for all replicas: freezing changes its steps, so the others agree
    # with the free run to the integration error (module docstring), not bit for bit
    np.testing.assert_allclose(stopped.u[:, 0], free.u[:, 0], rtol=0, atol=GF_ODE_TOL)
    for r in np.flatnonzero(reached):
        np.testing.assert_allclose(stopped.u[:first[r] + 1, r], free.u[:first[r] + 1, r], rtol=0, atol=GF_ODE_TOL)
        np.testing.assert_array_equal(stopped.u[first[r]:, r], np.broadcast_to(
            stopped.u[first[r], r], stopped.u[first[r]:, r].shape))  # frozen


@pytest.mark.parametrize("algorithm,extra,n_calls", [
    ("sgd", {}, 150),
    ("gd", dict(n_samples=13, batch=4), 150),
])
def test_stop_resume_is_bit_identical(tmp_path, monkeypatch, algorithm, extra, n_calls):
    prob, kw = _stop_case(algorithm=algorithm, steps=600, **extra)
    common = dict(kw, record="linear", n_record=61, stop=_reached, stop_every=1)
    ref = simulate(prob, **common)
    assert np.isfinite(ref.events["stop_step"]).any()
    assert np.nanmin(ref.events["stop_step"]) < n_calls  # some replica is frozen when interrupted
    ck = tmp_path / "stop.npz"
    with monkeypatch.context() as m:
        _interrupt_after(m, "step", n_calls)
        with pytest.raises(_Interrupt):
            simulate(prob, checkpoint=ck, checkpoint_steps=7, checkpoint_every=1e9, **common)
    resumed = simulate(prob, checkpoint=ck, checkpoint_steps=7, checkpoint_every=1e9, **common)
    assert resumed.meta["resumed_from"] > 0
    np.testing.assert_array_equal(resumed.t, ref.t)
    np.testing.assert_array_equal(resumed.u, ref.u)
    np.testing.assert_array_equal(resumed.events["stop_step"], ref.events["stop_step"])
    done = simulate(prob, checkpoint=ck, **common)  # complete checkpoint: no work, same answer
    np.testing.assert_array_equal(done.u, ref.u)
    np.testing.assert_array_equal(done.events["stop"], ref.events["stop"])
    with pytest.raises(ValueError, match="different parameters.*stop"):
        simulate(prob, checkpoint=ck, **{**common, "stop": None, "stop_every": None})


def test_stop_resume_after_everyone_stopped(tmp_path):
    prob, kw = _stop_case(replicas=3, steps=3000)
    common = dict(kw, record="linear", n_record=301, stop=_reached, stop_every=1)
    ck = tmp_path / "all.npz"
    ref = simulate(prob, checkpoint=ck, **common)
    assert ref.status == 1
    again = simulate(prob, checkpoint=ck, **common)
    assert again.status == 1
    np.testing.assert_array_equal(again.t, ref.t)
    np.testing.assert_array_equal(again.u, ref.u)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(stop=3), TypeError, "`stop` must be a callable"),
    (dict(stop_every=2), ValueError, "`stop_every` = 2 needs `stop`"),
    (dict(stop=_reached, stop_every=0), ValueError, "stop_every"),
    (dict(stop=lambda o: np.ones(4, dtype=bool)), TypeError, r"bool array of shape \(5,\).*shape \(4,\)"),
    (dict(stop=lambda o: np.ones(5)), TypeError, "bool array.*float64"),
])
def test_stop_bad_input(kw, exc, match):
    prob, base = _stop_case()
    with pytest.raises(exc, match=match):
        simulate(prob, n_record=5, **base, **kw)
    with pytest.raises(ValueError, match="`stop_every` applies to discrete"):
        simulate(prob, d=20, algorithm="gf", t_end=1.0, replicas=2, stop=_reached, stop_every=1, rng=0)
