"""The generic ODE engine (popdyn.ode) and the multi-index model's side of its protocol.

Independent routes: closed-form escape times for one index, an independent solve_ivp run
(different method, own events) measured in units of its tolerance, theory/simsek2025/equations.md
reference times, the Wick formula and Monte Carlo for the noise moment C(u), and a
d-dimensional one-step SGD simulation for the online-SGD correction.
"""

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from popdyn import NumericalError, Trajectory
from popdyn.hermite import HermiteSeries
from popdyn.models.multi_index import MultiIndexProblem, gram, index_vectors
from popdyn.ode import LOG_DECADES, integrate, time_grid

# theory/simsek2025/equations.md: sigma = sigma* = h_p, orthogonal, k = 3, u0 = (1, .9, .8)/sqrt(d),
# time for u_1 to reach 1/2, quoted to 5 significant digits.
SEARCH_TIMES = [(4, 100, 12.595), (4, 6400, 800.61), (3, 6400, 26.199)]
#: Half a unit in the last quoted digit of SEARCH_TIMES, relative.
SEARCH_QUOTE_RTOL = 5e-5
#: Error of the engine (rtol 1e-10) against an exact or 1e-12 reference, in units of
#: rtol * T: a global error of a few hundred local tolerances is normal for ~1e3 steps.
TOL_UNITS = 300
ENGINE_RTOL = 1e-10
#: Batched vs separate integrations at rtol 1e-11: different step sequences, so they
#: agree to the global error (~1e3 x rtol), not bit for bit.
BATCH_RTOL = 1e-11
BATCH_TOL = 1e-8
#: Monte Carlo agreement in standard errors (a false alarm about once in 16 000).
MC_SIGMAS = 4.0
#: The one-step SGD test must be able to fail: without the Ito term the drift misses by
#: more than this many SE.
ITO_POWER_SIGMAS = 10.0
#: Quadrature vs Wick formula (both exact for polynomials): rounding only.
WICK_RTOL = 1e-12


def _he_problem(p, k=3, n_neurons=1):
    return MultiIndexProblem(f"he{p}", f"he{p}", np.eye(k), n_neurons=n_neurons)


def _escape_time_one_index(p, u0, level):
    r"""Exact escape time of du/dt = p u^{p-1}(1 - u^2) (k = 1, sigma = sigma* = h_p)."""
    if p == 4:  # int du/(4 u^3 (1-u^2)) = (1/4)(-1/(2u^2) + ln u - ln(1-u^2)/2)
        F = lambda u: (-0.5 / u ** 2 + math.log(u) - 0.5 * math.log1p(-u * u)) / 4  # noqa: E731
    elif p == 3:  # int du/(3 u^2 (1-u^2)) = (1/3)(-1/u + atanh u)
        F = lambda u: (-1.0 / u + math.atanh(u)) / 3  # noqa: E731
    else:
        raise ValueError(p)
    return F(level) - F(u0)


# --------------------------------------------------------------------------------------
# search times (theory/simsek2025/equations.md) and independent references
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, d, expected", SEARCH_TIMES)
def test_search_time_theory_table(p, d, expected):
    u0 = np.array([1.0, 0.9, 0.8]) / np.sqrt(d)
    traj = integrate(_he_problem(p), u0, 1e5, escape_level=0.5)
    t_esc = traj.events["escape"][0]
    assert t_esc == pytest.approx(expected, rel=SEARCH_QUOTE_RTOL)
    # orthogonal G: u_1 stays the largest entry, so escape of max_j |u_j| is u_1 = 1/2
    assert traj.status == 1 and traj.t[-1] == t_esc
    np.testing.assert_allclose(traj.u[-1, 0, 0], [0.5, *traj.u[-1, 0, 0, 1:]], atol=1e-9)
    assert np.all(traj.u[-1, 0, 0, 1:] < 0.5)


@pytest.mark.parametrize("p, d", [(4, 100), (4, 6400), (3, 6400)])
def test_search_time_independent_solver(p, d):
    """The engine vs solve_ivp(Radau) with its own events on a hand-written RHS."""
    u0 = np.array([1.0, 0.9, 0.8]) / np.sqrt(d)

    def rhs(t, u):  # orthogonal G, g(u) = p u^{p-1}
        g = p * u ** (p - 1)
        return g - u * (u @ g)

    def reach(t, u):
        return u[0] - 0.5

    reach.terminal = True
    ref = solve_ivp(rhs, (0, 1e5), u0, method="Radau", rtol=1e-12, atol=1e-15, events=reach)
    t_ref = ref.t_events[0][0]
    t_esc = integrate(_he_problem(p), u0, 1e5, escape_level=0.5, rtol=ENGINE_RTOL).events["escape"][0]
    assert abs(t_esc - t_ref) <= TOL_UNITS * ENGINE_RTOL * t_ref, (t_esc - t_ref) / (ENGINE_RTOL * t_ref)


@pytest.mark.parametrize("p, u0", [(4, 0.1), (4, 0.0125), (3, 0.05)])
def test_escape_time_closed_form_one_index(p, u0):
    prob = MultiIndexProblem(f"he{p}", f"he{p}", np.eye(1))
    t_esc = integrate(prob, [u0], 1e5, escape_level=0.5, rtol=ENGINE_RTOL).events["escape"][0]
    exact = _escape_time_one_index(p, u0, 0.5)
    assert abs(t_esc - exact) <= TOL_UNITS * ENGINE_RTOL * exact, (t_esc - exact) / (ENGINE_RTOL * exact)


# --------------------------------------------------------------------------------------
# vectorisation over neurons
# --------------------------------------------------------------------------------------
def test_batched_neurons_equal_separate_runs():
    rng = np.random.default_rng(0)
    G = gram("equiangular", 3, beta=0.2)
    prob = MultiIndexProblem("hermite:0,0,0.3,1,0.4", "he3", G)
    V = index_vectors(G, 20, rng=rng)
    W = rng.standard_normal((6, 20))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    U0 = W @ V.T
    times = np.linspace(0.0, 20.0, 21)
    kw = dict(times=times, rtol=BATCH_RTOL, atol=1e-13, escape_level=0.4, escape_terminal=False)
    together = integrate(prob, U0, 20.0, **kw)
    assert together.u.shape == (21, 1, 6, 3)
    for i in range(U0.shape[0]):
        alone = integrate(prob, U0[i], 20.0, **kw)
        np.testing.assert_allclose(together.u[:, 0, i], alone.u[:, 0, 0], rtol=0, atol=BATCH_TOL,
                                   err_msg=f"At neuron i={i}")
        np.testing.assert_allclose(together.events["escape"][i], alone.events["escape"][0],
                                   rtol=BATCH_TOL, equal_nan=True, err_msg=f"At neuron i={i}")


def test_directional_convergence_many_neurons():
    """Even p, orthogonal V: each neuron converges to sign(u_j0) e_j with j = argmax |u_j(0)|
    (arXiv 2411.08798; theory/simsek2025/equations.md), all 300 neurons integrated at once."""
    k, n, d = 10, 300, 100
    rng = np.random.default_rng(1)
    W = rng.standard_normal((n, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    U0 = W[:, :k]  # V = the first k basis vectors
    traj = integrate(_he_problem(4, k), U0, 1e4, convergence_tol=1e-8, rtol=1e-8, atol=1e-10)
    assert traj.status == 1 and "Converged" in traj.message
    j = np.argmax(np.abs(U0), axis=1)
    target = np.zeros_like(U0)
    target[np.arange(n), j] = np.sign(U0[np.arange(n), j])
    # speed < 1e-8 near a minimum with Hessian eigenvalue p = 4 means distance ~ 2.5e-9
    np.testing.assert_allclose(traj.final("u")[0], target, atol=1e-7)


# --------------------------------------------------------------------------------------
# events, grids, metadata
# --------------------------------------------------------------------------------------
def test_convergence_event():
    prob = _he_problem(4)
    tol = 1e-6
    traj = integrate(prob, [0.3, 0.2, 0.1], 1e3, convergence_tol=tol)
    assert traj.status == 1 and "Converged" in traj.message
    t_c = traj.events["convergence"][0]
    assert traj.t[-1] == t_c and np.all(np.diff(traj.t) > 0)
    # the located time is where the speed crosses tol (root found on the dense output)
    speed = np.linalg.norm(prob.velocity(traj.final("u")[0, 0]))
    assert speed == pytest.approx(tol, rel=1e-6)
    np.testing.assert_allclose(traj.final("u")[0, 0], [1, 0, 0], atol=1e-6)


def test_convergence_needs_a_downward_crossing():
    """Starting near the equator the speed is below the tolerance; that is not convergence."""
    d = 6400
    u0 = np.array([1.0, 0.9, 0.8]) / np.sqrt(d)
    prob = _he_problem(4)
    assert np.linalg.norm(prob.velocity(u0)) < 1e-4
    traj = integrate(prob, u0, 1e5, convergence_tol=1e-4, escape_level=0.5, escape_terminal=False)
    assert traj.events["convergence"][0] > traj.events["escape"][0] == pytest.approx(800.61, rel=SEARCH_QUOTE_RTOL)


def test_escape_nan_for_neurons_that_never_escape():
    # odd p: a neuron with all u_j(0) < 0 drifts to the equator and never escapes
    prob = _he_problem(3, k=2)
    traj = integrate(prob, [[0.2, 0.1], [-0.2, -0.1]], 200.0, escape_level=0.5)
    esc = traj.events["escape"]
    assert traj.status == 0 and traj.t[-1] == 200.0 and "Reached" in traj.message
    assert np.isfinite(esc[0]) and np.isnan(esc[1])
    assert np.max(np.abs(traj.final("u")[0, 1])) < 0.05


def test_escape_terminal_when_all_escaped_and_start_above_level():
    prob = _he_problem(4, k=2)
    u0 = [[0.3, 0.1], [0.6, 0.0], [0.05, 0.2]]
    traj = integrate(prob, u0, 1e4, escape_level=0.5)
    esc = traj.events["escape"]
    assert esc[1] == 0.0  # already above the level at t = 0
    assert traj.status == 1 and traj.t[-1] == np.max(esc) and np.all(esc[[0, 2]] > 0)
    obs = np.max(np.abs(traj.u[-1, 0]), axis=-1)
    assert obs[np.argmax(esc)] == pytest.approx(0.5, abs=1e-10)


def test_time_grids_and_metadata(tmp_path):
    prob = _he_problem(4, k=2)
    traj = integrate(prob, [0.3, 0.1], 10.0)
    assert traj.n_times == 200 and traj.t[0] == 0.0 and traj.t[1] == pytest.approx(10.0 * 10.0 ** -LOG_DECADES)
    assert traj.t[-1] == 10.0 and traj.status == 0
    assert traj.source == "ode" and traj.model == "multi_index" and traj.time_unit == "gradient-flow time t"
    meta = traj.meta
    assert meta["problem"] == prob.describe()
    assert meta["solver"]["method"] == "DOP853" and meta["solver"]["nfev"] > 0
    assert "numpy" in meta["versions"]
    lin = integrate(prob, [0.3, 0.1], 10.0, times="linear", n_times=11)
    np.testing.assert_allclose(lin.t, np.linspace(0, 10, 11))
    np.testing.assert_allclose(lin.at(traj.t[-3:]).u, traj.u[-3:], atol=1e-2)  # linear interpolation
    arr = integrate(prob, [0.3, 0.1], 10.0, times=[2.0, 5.0, 10.0])
    np.testing.assert_allclose(arr.t, [2.0, 5.0, 10.0])
    np.testing.assert_allclose(arr.u[-1], traj.u[-1], atol=1e-12)
    back = Trajectory.load(traj.save(tmp_path / "traj.npz"))
    np.testing.assert_array_equal(back.u, traj.u)


@pytest.mark.parametrize("times, match", [
    ([1.0, 0.5], "non-decreasing"), ([0.0, 20.0], r"must lie in \[0, t_end"), ("geometric", "`times`"),
])
def test_time_grid_errors(times, match):
    with pytest.raises(ValueError, match=match):
        time_grid(10.0, 5, times)


def test_implicit_method_with_sparsity_agrees():
    prob = MultiIndexProblem("he3", "he3", gram("equiangular", 3, beta=0.2))
    U0 = [[0.3, 0.2, 0.1], [0.1, 0.4, -0.2], [0.2, -0.1, 0.3]]
    times = np.linspace(0, 5, 6)
    a = integrate(prob, U0, 5.0, times=times, rtol=1e-11, atol=1e-13)
    b = integrate(prob, U0, 5.0, times=times, method="Radau", rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.u, a.u, atol=1e-7)  # Radau at rtol 1e-9: global error ~1e-8
    assert b.meta["solver"]["njev"] >= 1


# --------------------------------------------------------------------------------------
# input validation and numerical failure
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("u0, match", [
    ([1.1, 0.0], "u0\\^T G\\^\\+ u0 must be <= 1"),
    ([[0.8, 0.8]], "u0\\^T G\\^\\+ u0 must be <= 1"),
    ([0.1, 0.2, 0.3], r"shape \(N, k=2\)"),
    ([np.nan, 0.1], "finite"),
])
def test_invalid_u0(u0, match):
    with pytest.raises(ValueError, match=match):
        integrate(_he_problem(3, k=2), u0, 1.0)


def test_invalid_u0_equiangular_beyond_sphere():
    # each |u_j| < 1, but (0.9, -0.9) is not V w for a unit w when beta = 0.5
    prob = MultiIndexProblem("he3", "he3", gram("equiangular", 2, beta=0.5))
    with pytest.raises(ValueError, match="3.24"):
        integrate(prob, [0.9, -0.9], 1.0)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(method="Euler"), ValueError, "`method` must be one of"),
    (dict(rtol=0.0), ValueError, "`rtol`"),
    (dict(eta=0.01), ValueError, "`eta` and `d` must be given together"),
    (dict(eta=0.01, d=100, batch=0), ValueError, "`batch`"),
])
def test_invalid_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        integrate(_he_problem(3, k=2), [0.1, 0.1], 1.0, **kwargs)


class _Blowup:
    """A one-unit model with dy/dt = y^2: blows up at t = 1/y0."""

    ode_model = "blowup"
    ode_state_names = ("y",)

    def ode_initial_state(self, y0):
        return {"y": np.atleast_1d(np.asarray(y0, dtype=float))}

    def ode_rhs(self, t, state, **opts):
        return {"y": state["y"] ** 2}

    def describe(self):
        return {"model": "blowup"}


class _Oscillator:
    """A two-array state (x, v) with x' = v, v' = -x: shows dict states plug in."""

    ode_model = "oscillator"
    ode_state_names = ("x", "v")

    def ode_initial_state(self, state0):
        return {k: np.asarray(state0[k], dtype=float) for k in self.ode_state_names}

    def ode_rhs(self, t, state, **opts):
        return {"x": state["v"], "v": -state["x"]}

    def ode_escape_observable(self, state):
        return state["x"]

    def describe(self):
        return {"model": "oscillator"}


def test_blowup_raises_numerical_error_with_time():
    with pytest.raises(NumericalError, match="Try a smaller `rtol`") as info:
        integrate(_Blowup(), [1.0], 5.0)
    assert abs(info.value.time - 1.0) < 1e-3
    assert "largest |state| entry" in str(info.value)


def test_generic_protocol_two_state_model():
    x0, v0 = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    times = np.linspace(0, 3, 7)
    traj = integrate(_Oscillator(), {"x": x0, "v": v0}, 3.0, times=times, escape_level=0.5,
                     escape_terminal=False)
    assert traj.x.shape == (7, 1, 2) and traj.v.shape == (7, 1, 2) and traj.model == "oscillator"
    exact_x = np.outer(np.cos(times), x0) + np.outer(np.sin(times), v0)
    np.testing.assert_allclose(traj.x[:, 0], exact_x, atol=1e-9)
    # x_0 = cos t starts above 0.5; x_1 = 2 sin t reaches 0.5 at asin(1/4)
    np.testing.assert_allclose(traj.events["escape"], [0.0, math.asin(0.25)], rtol=1e-9)


def test_problem_without_protocol_is_rejected():
    with pytest.raises(TypeError, match="does not implement the ODE protocol"):
        integrate(object(), [0.1], 1.0)
    with pytest.raises(ValueError, match="ode_escape_observable"):
        integrate(_Blowup(), [0.1], 1.0, escape_level=1.0)


# --------------------------------------------------------------------------------------
# online-SGD correction: C(u) and the Ito term
# --------------------------------------------------------------------------------------
def _wick_noise_moment(prob, u):
    r"""C(u) from E[h_a(X) h_b(Y) h_c(Z)] = sqrt(a!b!c!)/(m!n!l!) r_xy^m r_xz^n r_yz^l."""
    fact = math.factorial
    s = prob.student
    dsig = HermiteSeries(s.coefficients(s.degree)).derivative()
    S = (dsig * dsig).coefficients
    total = 0.0
    for j in range(prob.k):
        A = prob.teacher[j].coefficients(prob.teacher[j].degree)
        for l in range(prob.k):
            B = prob.teacher[l].coefficients(prob.teacher[l].degree)
            for a in np.flatnonzero(A):
                for b in np.flatnonzero(B):
                    for c in np.flatnonzero(S):
                        if (a + b + c) % 2 or min(a + b - c, a + c - b, b + c - a) < 0:
                            continue
                        m, n, q = (a + b - c) // 2, (a + c - b) // 2, (b + c - a) // 2
                        total += (prob.a_star[j] * prob.a_star[l] * A[a] * B[b] * S[c]
                                  * math.sqrt(fact(a) * fact(b) * fact(c)) / (fact(m) * fact(n) * fact(q))
                                  * prob.G[j, l] ** m * u[j] ** n * u[l] ** q)
    return total


@pytest.mark.parametrize("method", ["polynomial", "quadrature"])
@pytest.mark.parametrize("student, teacher, a_star", [
    ("he3", "he3", None),
    ("he4", "he4", (1.0, -0.5, 0.7)),
    ("hermite:0,0.5,0.3,1", ("he2", "he3", "hermite:0,0,1,0.5"), (1.0, 0.5, -0.7)),
    ("he1", ("he3", "he4", "he2"), None),
])
def test_noise_moment_exact_for_polynomials(student, teacher, a_star, method):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 7))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    prob = MultiIndexProblem(student, teacher, A @ A.T, a_star=a_star)
    W = rng.standard_normal((4, 7))
    W[3] = A[0] * 0.6 + A[1] * 0.5  # w in span(V): tau = 0 for the pair (0, 1)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    U = W @ A.T
    got = prob.noise_moment(U, method=method)
    assert got.shape == (4,)
    for i, u in enumerate(U):
        ref = _wick_noise_moment(prob, u)
        assert got[i] == pytest.approx(ref, rel=WICK_RTOL), f"At i={i}"


@pytest.mark.parametrize("method", ["polynomial", "quadrature"])
def test_noise_moment_singular_gram(method):
    """Repeated index vector (G_12 = 1): the pseudo-inverse factor must handle it."""
    v = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    V = np.stack([v[0], v[0], v[1]])
    prob = MultiIndexProblem("he3", "he3", V @ V.T)
    u = V @ (np.array([0.6, 0.3, 0.74]) / np.linalg.norm([0.6, 0.3, 0.74]))
    assert prob.noise_moment(u, method=method) == pytest.approx(_wick_noise_moment(prob, u), rel=WICK_RTOL)


def test_noise_moment_method_errors_and_shapes():
    prob = MultiIndexProblem("tanh", "he3", np.eye(2))
    with pytest.raises(ValueError, match="needs polynomial activations"):
        prob.noise_moment([0.1, 0.2], method="polynomial")
    with pytest.raises(ValueError, match="`method` must be one of"):
        prob.noise_moment([0.1, 0.2], method="exact")
    poly = _he_problem(3, k=2)
    u = np.array([[[0.1, 0.2], [0.3, -0.1]]])
    assert poly.noise_moment(u).shape == (1, 2) and np.ndim(poly.noise_moment(u[0, 0])) == 0
    np.testing.assert_allclose(poly.noise_moment(u), poly.noise_moment(u, method="quadrature"), rtol=WICK_RTOL)


def test_noise_moment_relu_symmetry_exact():
    # sigma'(z)^2 = 1{z > 0} and f*^2 is even in x, so C = E[f*^2]/2 exactly
    G = gram("equiangular", 3, beta=0.3)
    prob = MultiIndexProblem("relu", "he3", G, a_star=(1.0, 0.5, -0.4))
    a = prob.a_star
    exact = 0.5 * a @ (G ** 3) @ a
    u = np.array([[0.5, 0.3, -0.2], [0.0, 0.0, 0.0], [0.9, 0.5, 0.4]])
    np.testing.assert_allclose(prob.noise_moment(u), exact, rtol=1e-12)


@pytest.mark.parametrize("student, teacher, seed", [
    ("he3", "he3", 1), ("relu", ("tanh", "he2", "relu"), 2), ("tanh", ("relu", "tanh", "he3"), 3),
])
def test_noise_moment_monte_carlo(student, teacher, seed):
    d, n = 12, 400_000
    rng = np.random.default_rng(seed)
    G = gram("equiangular", 3, beta=0.25)
    prob = MultiIndexProblem(student, teacher, G, a_star=(1.0, 0.8, -0.6))
    V = index_vectors(G, d, rng=rng)
    w = rng.standard_normal(d) + 2.0 * V[0] - 1.0 * V[2]
    w /= np.linalg.norm(w)
    x = rng.standard_normal((n, d))
    t = x @ V.T
    y = sum(prob.a_star[j] * prob.teacher[j](t[:, j]) for j in range(prob.k))
    sample = y ** 2 * prob.student.derivative(x @ w) ** 2
    mc, se = sample.mean(), sample.std(ddof=1) / np.sqrt(n)
    assert abs(prob.noise_moment(V @ w) - mc) <= MC_SIGMAS * se, (prob.noise_moment(V @ w), mc, se)


@pytest.mark.slow
@pytest.mark.parametrize("student, teacher, u, rel", [
    ("tanh", "tanh", (0.99, 0.2), 3e-7),
    ("tanh", "he3", (0.9, 0.1), 3e-7),
    ("tanh", "relu", (0.5, 0.3), 1.5e-3),
])
def test_noise_moment_nonpolynomial_accuracy(student, teacher, u, rel):
    """Documented accuracy (MultiIndexProblem.noise_moment Notes) vs nested adaptive quad."""
    from scipy import integrate as si
    from scipy.special import ndtr

    G12 = 0.3
    prob = MultiIndexProblem(student, teacher, np.array([[1.0, G12], [G12, 1.0]]))
    s, t = prob.student, prob.teacher[0]
    phi = lambda x: np.exp(-x * x / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    opts = dict(epsabs=1e-13, epsrel=1e-12, limit=200)

    def inner(mu, tau):
        if s.name == "relu":
            return ndtr(mu / tau)
        return si.quad(lambda x: s.derivative(mu + tau * x) ** 2 * phi(x), -12, 12, **opts)[0]

    def diag(uj):
        tau = math.sqrt(1 - uj * uj)
        return si.quad(lambda x: t(x) ** 2 * inner(uj * x, tau) * phi(x), -12, 12, points=[0.0], **opts)[0]

    al, be = math.sqrt((1 + G12) / 2), math.sqrt((1 - G12) / 2)
    c1, c2 = (u[0] + u[1]) / (2 * al), (u[0] - u[1]) / (2 * be)
    tau = math.sqrt(1 - c1 * c1 - c2 * c2)

    def g(x2, x1):
        return t(al * x1 + be * x2) * t(al * x1 - be * x2) * inner(c1 * x1 + c2 * x2, tau) * phi(x1) * phi(x2)

    def outer(x1):
        return si.quad(g, -12, 12, args=(x1,), points=sorted({-al * x1 / be, al * x1 / be}),
                       epsabs=1e-12, epsrel=1e-11, limit=200)[0]

    off = si.quad(outer, -12, 12, points=[0.0], epsabs=1e-11, epsrel=1e-10, limit=200)[0]
    ref = diag(u[0]) + diag(u[1]) + 2 * off
    assert prob.noise_moment(np.array(u)) == pytest.approx(ref, rel=rel)


def _one_step_mean_increment(prob, V, w, eta, batch, reps, rng, chunk=2000):
    """Mean and SE of (u' - u)/eta over `reps` independent spherical online-SGD steps from w."""
    d = V.shape[1]
    out = np.empty((reps, prob.k))
    for s0 in range(0, reps, chunk):  # chunks of independent steps (memory), not SGD steps
        m = min(chunk, reps - s0)
        x = rng.standard_normal((m, batch, d))
        t = x @ V.T
        y = sum(prob.a_star[j] * prob.teacher[j](t[..., j]) for j in range(prob.k))
        coef = -y * prob.student.derivative(x @ w)
        ghat = np.einsum("mb,mbd->md", coef, x) / batch
        ghat -= np.outer(ghat @ w, w)
        w_new = w - eta * ghat
        w_new /= np.linalg.norm(w_new, axis=1, keepdims=True)
        out[s0:s0 + m] = (w_new @ V.T - V @ w) / eta
    return out.mean(axis=0), out.std(axis=0, ddof=1) / np.sqrt(reps)


@pytest.mark.parametrize("student, teacher, batch, delta, seed", [
    ("erf", "erf", 2, 2.0, 1),
    ("tanh", ("erf", "he2"), 3, 3.0, 2),
])
def test_ito_correction_one_step_simulation(student, teacher, batch, delta, seed):
    """E[u' - u]/eta of d-dimensional spherical online SGD matches ode_rhs with eta, d, batch."""
    d, reps = 400, 20_000
    rng = np.random.default_rng(seed)
    G = gram("equiangular", 2, beta=0.3)
    prob = MultiIndexProblem(student, teacher, G)
    V = index_vectors(G, d, rng=rng)
    w = 0.5 * V[0] + 0.2 * V[1] + 0.35 * rng.standard_normal(d) / np.sqrt(d)
    w /= np.linalg.norm(w)
    u = V @ w
    eta = delta / d
    mc, se = _one_step_mean_increment(prob, V, w, eta, batch, reps, rng)
    with_ito = prob.ode_rhs(0.0, {"u": u[None]}, eta=eta, d=d, batch=batch)["u"][0]
    assert np.all(np.abs(mc - with_ito) <= MC_SIGMAS * se), (mc - with_ito) / se
    without = prob.velocity(u)
    assert np.max(np.abs(mc - without) / se) > ITO_POWER_SIGMAS


def test_ito_term_matches_theory_single_index():
    r"""theory/bagj2021/equations.md: per unit time (1 - m^2) Phi'(m) - (eta/2)(d-1) m C(m), with C(m) by quadrature."""
    from scipy import integrate as si

    prob = MultiIndexProblem("he3", "he3", np.eye(1))
    eta, d, m = 0.5 * 100 ** -1.5, 100, 0.4
    traj = integrate(prob, [m], 1e-9, eta=eta, d=d, times=[0.0, 1e-9])
    assert traj.time_unit == "t = eta * steps"
    rhs = prob.ode_rhs(0.0, {"u": np.array([[m]])}, eta=eta, d=d)["u"][0, 0]
    he3 = lambda z: (z ** 3 - 3 * z) / math.sqrt(6)  # noqa: E731
    dhe3 = lambda z: (3 * z ** 2 - 3) / math.sqrt(6)  # noqa: E731
    tau = math.sqrt(1 - m * m)
    gauss = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    C = si.dblquad(lambda x2, x1: he3(x1) ** 2 * dhe3(m * x1 + tau * x2) ** 2 * gauss(x1) * gauss(x2),
                   -12, 12, -12, 12, epsabs=1e-12, epsrel=1e-12)[0]
    expected = (1 - m * m) * 3 * m ** 2 - 0.5 * eta * (d - 1) * m * C
    assert rhs == pytest.approx(expected, rel=1e-10)
    assert traj.meta["options"]["eta"] == eta and traj.meta["options"]["d"] == d


def test_sgd_corrected_ode_integrates_and_slows_escape():
    prob = _he_problem(3)
    u0 = np.array([1.0, 0.9, 0.8]) / 10.0
    plain = integrate(prob, u0, 1e4, escape_level=0.5).events["escape"][0]
    noisy = integrate(prob, u0, 1e4, escape_level=0.5, eta=0.05 / 100, d=100, batch=1)
    assert noisy.status == 1 and noisy.events["escape"][0] > plain


def test_all_units_start_escaped():
    traj = integrate(_he_problem(4, k=2), [[0.6, 0.0], [0.0, -0.7]], 10.0, escape_level=0.5)
    assert traj.status == 1 and traj.t.tolist() == [0.0] and "start at or above" in traj.message
    np.testing.assert_array_equal(traj.events["escape"], [0.0, 0.0])


def test_noise_nodes_option_recorded():
    prob = MultiIndexProblem("tanh", "he3", np.eye(1))
    traj = integrate(prob, [0.3], 1.0, eta=1e-3, d=100, options={"noise_nodes": (96, 72)}, n_times=3)
    assert traj.meta["options"]["noise_nodes"] == (96, 72)
    default = integrate(prob, [0.3], 1.0, eta=1e-3, d=100, n_times=3)
    assert default.meta["options"]["noise_nodes"] == (64, 48)
    assert default.meta["options"]["noise_method"] == "quadrature"
    poly = integrate(_he_problem(3), [0.3, 0.2, 0.1], 1.0, eta=1e-3, d=100, n_times=3)
    assert poly.meta["options"]["noise_method"] == "polynomial" and poly.meta["options"]["noise_nodes"] is None
    # C(u) is accurate to ~2e-7 relative at the defaults (noise_moment Notes); the
    # correction is 0.05 C u per unit time, so u(1) moves by < 1e-8
    np.testing.assert_allclose(traj.u, default.u, atol=1e-8)


def test_unreachable_escape_level_is_rejected():
    """|u_j| <= sqrt(G_jj) on the sphere: escape_level = 2 used to give NaN escape times."""
    prob = MultiIndexProblem("he3", "he3", np.eye(2))
    with pytest.raises(ValueError, match=r"`escape_level` must be <= 1 \(\|u_j\| <= sqrt\(G_jj\).*got 2\.$"):
        integrate(prob, [0.3, 0.1], 10.0, escape_level=2.0)
    traj = integrate(prob, [0.3, 0.1], 100.0, escape_level=1.0, n_times=5)  # the bound itself is allowed
    assert traj.events["escape"].shape == (1,)


def test_stiff_run_switches_to_an_implicit_method():
    """`popdyn predict --model single-index --loss squared --student poly:z**3 --teacher he3 --d 100`
    hung for minutes: the eta^2 contraction (rate ~2e3 per unit time) made DOP853 take ~1e6 steps."""
    from popdyn.models.single_index import SingleIndexProblem

    prob = SingleIndexProblem("poly:z**3", "he3", loss="squared")
    traj = integrate(prob, 0.1, 5000.0, eta=0.005, d=100)
    sw = traj.meta["solver"]["switched"]
    assert sw is not None and sw["to"] == "Radau" and traj.meta["solver"]["n_steps"] < 10_000
    assert abs(float(traj.final("m").ravel()[0])) < 1e-10  # the mean path collapses onto m = 0
    # a non-stiff run never switches and is unchanged
    easy = integrate(prob, 0.1, 1e-3, eta=0.005, d=100)
    assert easy.meta["solver"]["switched"] is None
    ref = integrate(prob, 0.1, 1e-3, eta=0.005, d=100, switch_stiff=False)
    np.testing.assert_array_equal(easy.overlaps["m"], ref.overlaps["m"])


# ---------------------------------------------------------------------------------------
# user events (events=[...])
# ---------------------------------------------------------------------------------------
#: User events on a linear toy ODE vs closed-form crossing times: the engine's global error
#: at rtol 1e-12 over t <= 4*pi is ~1e-11, and brentq locates a root to 1e-14 relative.
EVENT_TOL = 1e-9


class _Rotation:
    """x' = y, y' = -x from (1, 0): x = cos t, y = -sin t (a toy model of the ODE protocol)."""

    ode_model = "toy_rotation"
    ode_state_names = ("x", "y")

    def ode_initial_state(self, state0):
        x0, y0 = np.asarray(state0, dtype=float)
        return {"x": np.array([x0]), "y": np.array([y0])}

    def ode_rhs(self, t, state, **_):
        return {"x": state["y"].copy(), "y": -state["x"]}

    def describe(self):
        return {"model": "toy_rotation"}


def _run_rotation(events, t_end=4 * math.pi):
    return integrate(_Rotation(), [1.0, 0.0], t_end, rtol=1e-12, atol=1e-14, events=events)


def test_user_events_nonterminal_and_direction_match_closed_form():
    def x_zero(t, state):  # x = cos t: zeros at pi/2 (down), 3pi/2 (up), 5pi/2 (down), 7pi/2 (up)
        return float(state["x"][0])

    def x_half_up(t, state):  # cos t = 1/2 upward: t = 5pi/3 (sin < 0 there)
        return float(state["x"][0]) - 0.5

    def x_half_down(t, state):  # downward: pi/3, 7pi/3
        return float(state["x"][0]) - 0.5

    x_half_up.direction, x_half_down.direction = 1, -1
    traj = _run_rotation([x_zero, x_half_up, x_half_down, lambda t, s: float(s["x"][0]) + 2.0])
    assert traj.status == 0
    np.testing.assert_allclose(traj.events["x_zero"], np.pi * np.array([0.5, 1.5, 2.5, 3.5]), atol=EVENT_TOL)
    np.testing.assert_allclose(traj.events["x_half_up"], [5 * np.pi / 3, 11 * np.pi / 3], atol=EVENT_TOL)
    np.testing.assert_allclose(traj.events["x_half_down"], [np.pi / 3, 7 * np.pi / 3], atol=EVENT_TOL)
    assert traj.events["event_3"].shape == (0,)  # x + 2 > 0 always: recorded as never


def test_user_event_terminal_count_stops_at_that_crossing():
    def x_zero(t, state):
        return float(state["x"][0])

    x_zero.terminal = True
    once = _run_rotation([x_zero])
    assert once.status == 1 and "x_zero" in once.message
    np.testing.assert_allclose(once.events["x_zero"], [np.pi / 2], atol=EVENT_TOL)
    assert once.t[-1] == once.events["x_zero"][0] and once.t[-2] < once.t[-1]
    np.testing.assert_allclose(once.overlaps["x"][-1, 0, 0], 0.0, atol=EVENT_TOL)

    x_zero.terminal = 3
    third = _run_rotation([x_zero], t_end=10 * math.pi)
    np.testing.assert_allclose(third.events["x_zero"], np.pi * np.array([0.5, 1.5, 2.5]), atol=EVENT_TOL)
    assert third.status == 1 and third.t[-1] == third.events["x_zero"][-1]


def test_user_events_match_solve_ivp_and_an_earlier_terminal_event_cuts_the_others():
    """Same LSODA solver, same rules as solve_ivp: the crossing times agree to root-finding accuracy."""
    prob = MultiIndexProblem("he4", "he4", np.eye(2))

    def reach(t, state):
        return float(state["u"][0, 0]) - 0.5

    def slow(t, state):  # fires later than `reach`: must be dropped when `reach` stops the run
        return float(state["u"][0, 0]) - 0.8

    reach.terminal = True
    u0 = [0.3, 0.1]
    traj = integrate(prob, u0, 100.0, method="LSODA", events=[reach, slow])
    ref = solve_ivp(lambda t, y: prob.ode_rhs(t, {"u": y.reshape(1, 2)})["u"].ravel(), (0, 100.0),
                    np.array(u0), method="LSODA", rtol=1e-10, atol=1e-12, events=[lambda t, y: y[0] - 0.5])
    # same solver steps; the roots differ only by the two brentq tolerances (~1e-14 relative)
    np.testing.assert_allclose(traj.events["reach"], ref.t_events[0][:1], rtol=EVENT_TOL)
    assert traj.events["slow"].size == 0 and traj.status == 1


def test_user_event_and_escape_event_together_unchanged_escape():
    prob = MultiIndexProblem("he4", "he4", np.eye(2))
    plain = integrate(prob, [0.3, 0.1], 100.0, escape_level=0.9, n_times=20)

    def quarter(t, state):
        return float(state["u"][0, 0]) - 0.4

    both = integrate(prob, [0.3, 0.1], 100.0, escape_level=0.9, n_times=20, events=quarter)
    np.testing.assert_array_equal(both.events["escape"], plain.events["escape"])
    np.testing.assert_array_equal(both.u, plain.u)
    assert 0 < both.events["quarter"][0] < both.events["escape"][0]


@pytest.mark.parametrize("events,exc,match", [
    (3.0, TypeError, "`events` must be a callable"),
    ([1.0], TypeError, r"`events\[0\]` must be callable"),
    ([type("E", (), {"__call__": lambda self, t, s: 0.0, "direction": 2})()], ValueError,
     r"`events\[0\]\.direction`.*-1, 0 or 1, got 2"),
    ([type("E", (), {"__call__": lambda self, t, s: 0.0, "terminal": -1})()], ValueError,
     r"`events\[0\]\.terminal`.*bool or an int >= 0"),
    ([lambda t, s: 0.0, "x"], TypeError, r"`events\[1\]` must be callable"),
])
def test_user_events_bad_input(events, exc, match):
    with pytest.raises(exc, match=match):
        _run_rotation(events)


def test_user_events_bad_names_and_returns():
    def escape(t, state):
        return 1.0

    with pytest.raises(ValueError, match="'escape' is reserved"):
        _run_rotation([escape])

    def twice(t, state):
        return 1.0

    with pytest.raises(ValueError, match="'twice' is used twice"):
        _run_rotation([twice, twice])
    with pytest.raises(TypeError, match="must return one float"):
        _run_rotation([lambda t, s: np.ones(3)])
