"""Population loss and u-ODE of the multi-index correlation model (arXiv 2411.08798).

Independent routes:
* the symbolic loss against hand-derived exact expressions and the numpy kernel;
* Monte Carlo in d dimensions of the loss -E[sigma(w.x) f*(x)] and of the tangential
  gradient (fixed seeds, tolerance from the standard error);
* the d-dimensional spherical gradient flow, integrated directly and projected with V,
  against the closed u-ODE (theory/simsek2025/equations.md).
"""

import numpy as np
import pytest
import sympy
from scipy.integrate import solve_ivp

from popdyn.models.multi_index import (
    MultiIndexProblem,
    gram,
    index_vectors,
    loss_report,
    population_loss_expr,
    population_loss_latex,
    u_symbols,
    velocity_exprs,
)
from popdyn.ode import integrate

#: Monte Carlo agreement in standard errors (4 SE: a false alarm about once in 16 000).
MC_SIGMAS = 4.0
#: sympy (lambdified) vs numpy Horner evaluation of the same polynomial: rounding only.
SYMBOLIC_TOL = 1e-12
#: d-dim flow projected with V vs the u-ODE, both at rtol 1e-11.
CLOSURE_TOL = 1e-9
CLOSURE_RTOL = 1e-11
CLOSURE_ATOL = 1e-13


def _unit_w(V, rng, weights):
    """A unit w with a chosen part in span(V) plus a random orthogonal part."""
    d = V.shape[1]
    r = rng.standard_normal(d)
    r -= V.T @ np.linalg.lstsq(V.T, r, rcond=None)[0]  # remove the span(V) component
    w = np.asarray(weights) @ V + 0.6 * r / np.linalg.norm(r)
    return w / np.linalg.norm(w)


# --------------------------------------------------------------------------------------
# symbolic form
# --------------------------------------------------------------------------------------
def test_loss_expr_monomial_exact():
    u1, u2 = u_symbols(2)
    prob = MultiIndexProblem("he4", "he4", np.eye(2))
    assert sympy.expand(population_loss_expr(prob) - (-u1 ** 4 - u2 ** 4)) == 0


def test_loss_expr_relu_closed_form_coefficients():
    # c_0 = 1/sqrt(2 pi), c_1 = 1/2, c_2 = 1/(2 sqrt(pi)), c_3 = 0, c_4 = -1/sqrt(48 pi)
    # (= -0.0814337519838, theory/CONVENTIONS.md), so ell = -(1/(2 pi) + u/4 + u^2/(4 pi) + u^4/(48 pi)).
    (u,) = u_symbols(1)
    with pytest.warns(UserWarning, match="truncation"):  # degree 4 is a coarse truncation
        prob = MultiIndexProblem("relu", "relu", np.eye(1), degree=4)
    expected = -(1 / (2 * sympy.pi) + u / 4 + u ** 2 / (4 * sympy.pi) + u ** 4 / (48 * sympy.pi))
    assert sympy.simplify(population_loss_expr(prob) - expected) == 0
    rep = loss_report(prob)
    assert rep["truncated_at"] == 4 and not rep["exact"]
    assert rep["truncation_bound"] == pytest.approx(prob.truncation_bound())
    assert "truncated at degree 4" in rep["note"]


@pytest.mark.parametrize("student, teacher, G, a_star", [
    ("he3", ("he3", "hermite:0,0,0.5,1", "he4"), gram("equiangular", 3, beta=0.3), (1.0, -0.5, 2.0)),
    ("hermite:0,0.2,0.3,1,0.5", "hermite:0,0,0.4,0.7,0.2", gram("orthogonal", 2), None),
    ("relu", "tanh", gram("equiangular", 2, beta=0.25), None),
    ("erf", "he3", gram("equiangular", 2, beta=-0.2), (0.5, 1.5)),
])
def test_symbolic_loss_and_velocity_match_numeric(student, teacher, G, a_star):
    prob = MultiIndexProblem(student, teacher, G, a_star=a_star)
    us = u_symbols(prob.k)
    loss_fn = sympy.lambdify(us, population_loss_expr(prob), "numpy")
    vel_fns = [sympy.lambdify(us, v, "numpy") for v in velocity_exprs(prob)]
    rng = np.random.default_rng(11)
    for _ in range(5):
        u = rng.uniform(-0.6, 0.6, prob.k)
        scale = 1.0 + abs(float(prob.loss(u)))
        assert abs(loss_fn(*u) - prob.loss(u)) <= SYMBOLIC_TOL * scale, f"loss at u={u}"
        vel = np.array([f(*u) for f in vel_fns], dtype=float)
        np.testing.assert_allclose(vel, prob.velocity(u), rtol=0, atol=SYMBOLIC_TOL * 10 * scale,
                                   err_msg=f"velocity at u={u}")


def test_loss_report_fields_and_latex():
    prob = MultiIndexProblem("he3", "he3", gram("equiangular", 2, beta=0.25))
    rep = loss_report(prob, latex=True)
    assert rep["expr"] == "-u_1**3 - u_2**3"
    assert rep["exact"] and rep["truncated_at"] is None and rep["truncation_bound"] == 0.0
    assert rep["symbols"] == ["u_1", "u_2"]
    # du_1/dt = g_1 + beta g_2 - u_1 (u.g), g = 3 u^2, beta = 1/4 (exact rational)
    u1, u2 = u_symbols(2)
    v1 = sympy.sympify(rep["velocity"][0], locals={"u_1": u1, "u_2": u2})
    expected = 3 * u1 ** 2 + sympy.Rational(3, 4) * u2 ** 2 - u1 * (3 * u1 ** 3 + 3 * u2 ** 3)
    assert sympy.expand(v1 - expected) == 0
    assert rep["latex"] == r"\ell(u) = - u_{1}^{3} - u_{2}^{3}"
    assert rep["velocity_latex"][0].startswith(r"\dot u_{1} = ")
    assert loss_report(prob)["latex"] is None
    trunc = MultiIndexProblem("tanh", "tanh", np.eye(1))
    assert population_loss_latex(trunc).endswith(r"(\text{Hermite series truncated at degree 60})")


def test_numeric_coefficients_below_accuracy_are_dropped():
    # tanh is odd: its even coefficients are zero up to the 1e-12 quadrature error and
    # must not show up as noise terms.
    (u,) = u_symbols(1)
    expr = population_loss_expr(MultiIndexProblem("tanh", "tanh", np.eye(1)))
    degrees = sympy.Poly(expr, u).monoms()
    assert degrees and all(m[0] % 2 == 1 for m in degrees)


# --------------------------------------------------------------------------------------
# Monte Carlo in d dimensions (1a)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("student, teacher, beta, a_star, seed", [
    ("he3", "he3", 0.3, (1.0, 0.5, -0.8), 1),
    ("relu", ("he3", "tanh", "relu"), 0.2, None, 2),
    ("hermite:0,0.3,0.4,1", "hermite:0,0,0.6,0.8", -0.1, (1.0, 1.0, 1.0), 3),
])
def test_population_loss_monte_carlo(student, teacher, beta, a_star, seed):
    d, n = 12, 400_000
    rng = np.random.default_rng(seed)
    G = gram("equiangular", 3, beta=beta)
    prob = MultiIndexProblem(student, teacher, G, a_star=a_star)
    V = index_vectors(G, d, rng=rng)
    w = _unit_w(V, rng, [0.6, -0.3, 0.2])
    x = rng.standard_normal((n, d))
    t = x @ V.T
    fstar = sum(prob.a_star[j] * prob.teacher[j](t[:, j]) for j in range(prob.k))
    sample = -prob.student(x @ w) * fstar
    mc, se = sample.mean(), sample.std(ddof=1) / np.sqrt(n)
    exact = float(prob.loss(V @ w))
    # the truncation bound is a worst case over |u| <= 1; include it (it is ~1e-4 at most)
    assert abs(mc - exact) <= MC_SIGMAS * se + prob.truncation_bound(), (mc, se, exact)


@pytest.mark.parametrize("student, teacher, seed", [("he3", "he4", 4), ("tanh", "he3", 5)])
def test_tangential_gradient_monte_carlo(student, teacher, seed):
    r"""E[-y sigma'(w.x) P x] = -P V^T g(u): the gradient the u-ODE is built on."""
    d, n = 8, 400_000
    rng = np.random.default_rng(seed)
    G = gram("equiangular", 2, beta=0.4)
    prob = MultiIndexProblem(student, teacher, G)
    V = index_vectors(G, d, rng=rng)
    w = _unit_w(V, rng, [0.5, 0.4])
    x = rng.standard_normal((n, d))
    y = sum(prob.teacher[j](x @ V[j]) for j in range(prob.k))
    P = np.eye(d) - np.outer(w, w)
    samples = (-(y * prob.student.derivative(x @ w))[:, None] * x) @ P
    mc, se = samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(n)
    exact = -P @ V.T @ prob.g(V @ w)
    assert np.all(np.abs(mc - exact) <= MC_SIGMAS * se), np.abs(mc - exact) / se


# --------------------------------------------------------------------------------------
# closure: d-dimensional spherical flow vs the u-ODE (1b, theory/simsek2025/equations.md)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("student, teacher, a_star, t_end", [
    ("he4", "he4", None, 6.0),
    ("hermite:0,0,0.4,1,0.5", ("he3", "hermite:0,0,0.3,0.8,0.5", "he4"), (1.0, 0.7, -0.5), 6.0),
])
def test_closure_d_dimensional_flow(student, teacher, a_star, t_end):
    d = 12
    rng = np.random.default_rng(7)
    A = rng.standard_normal((3, 5))  # a non-orthogonal, non-equiangular Gram matrix
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    G = gram("custom", 3, G=A @ A.T)
    prob = MultiIndexProblem(student, teacher, G, a_star=a_star)
    V = index_vectors(G, d, rng=rng)
    w0 = _unit_w(V, rng, [0.5, 0.3, -0.2])

    def flow(t, w):  # dw/dt = (I - w w^T) V^T g(V w), in d dimensions
        grad = V.T @ prob.g(V @ w)
        return grad - w * (w @ grad)

    times = np.linspace(0.0, t_end, 13)
    ref = solve_ivp(flow, (0.0, t_end), w0, method="DOP853", t_eval=times,
                    rtol=CLOSURE_RTOL, atol=CLOSURE_ATOL)
    assert ref.success
    u_ref = (V @ ref.y).T
    assert np.max(np.abs(u_ref[-1] - u_ref[0])) > 0.1, "the test must move u by O(1)"
    traj = integrate(prob, V @ w0, t_end, times=times, rtol=CLOSURE_RTOL, atol=CLOSURE_ATOL)
    np.testing.assert_allclose(traj.u[:, 0, 0, :], u_ref, rtol=0, atol=CLOSURE_TOL)


def test_closure_singular_gram():
    """Two identical index vectors (G singular): u0 must lie in range(G), and the flow closes."""
    d = 6
    rng = np.random.default_rng(8)
    v = rng.standard_normal((2, d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    V = np.stack([v[0], v[0], v[1]])
    prob = MultiIndexProblem("he3", "he3", V @ V.T)
    w0 = _unit_w(V[[0, 2]], rng, [0.4, 0.3])

    def flow(t, w):
        grad = V.T @ prob.g(V @ w)
        return grad - w * (w @ grad)

    times = np.linspace(0.0, 3.0, 7)
    ref = solve_ivp(flow, (0.0, 3.0), w0, method="DOP853", t_eval=times, rtol=CLOSURE_RTOL, atol=CLOSURE_ATOL)
    traj = integrate(prob, V @ w0, 3.0, times=times, rtol=CLOSURE_RTOL, atol=CLOSURE_ATOL)
    np.testing.assert_allclose(traj.u[:, 0, 0, :], (V @ ref.y).T, rtol=0, atol=CLOSURE_TOL)
    with pytest.raises(ValueError, match="outside range"):
        integrate(prob, [0.3, -0.3, 0.1], 1.0)
