"""Tests for popdyn.kernels: every route is checked against an independent one.

Reference values (theory/CONVENTIONS.md; each re-derived below from its closed form):

    ReLU arc-cosine kernel, unit norms:  K(0) = 1/(2 pi) = 0.159154943092,
                                         K(0.5) = 0.304498890522,  K(1) = 1/2
    Saad-Solla erf(z/sqrt 2):  I2 = 0.160861246510   for C = [[1, .5], [.5, 1]]
                               I3(a,a,b) = 0.048292868604 for C = [[1, .3], [.3, 1]]
                               J2 = 0.319108657543   for C = [[1.3, .4], [.4, .8]]
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from popdyn import get_activation
from popdyn.errors import NumericalError
from popdyn.kernels import (
    KERNEL_TOL,
    PRICE_SWITCH,
    KernelValue,
    _nested_sums,
    closed_form_pairs,
    correlation_kernel,
    correlation_kernel_expr,
    gaussian_pair_expectation,
    kernel_symbols,
)

# --------------------------------------------------------------------------------------
# named tolerances
# --------------------------------------------------------------------------------------
#: The reference numbers are quoted to 12 decimals: agreement to the last digit.
REF_DIGITS_TOL = 1e-12
#: Two exact routes (sympy polynomial / closed form) against the numeric quadrature, whose
#: accuracy target is KERNEL_TOL (1e-10); observed agreement is ~1e-14.
ROUTE_TOL = KERNEL_TOL
#: Monte Carlo: a correct kernel is within 4 standard errors (two-sided p ~ 6e-5 per check;
#: the seed is fixed, so the test is deterministic).
MC_SIGMAS = 4.0
MC_SAMPLES = 400_000
MC_SEED = 20240611
#: Floating-point evaluation of exact expressions (a few ulps of O(1) numbers).
EXACT_TOL = 1e-13
#: Central-difference step for the derivative checks.
FD_STEP = 1e-4


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def relu_kernel(rho):
    """Arc-cosine kernel for unit norms (theory/CONVENTIONS.md), written out independently."""
    rho = np.asarray(rho, dtype=float)
    return (np.sqrt(1 - rho ** 2) + (np.pi - np.arccos(rho)) * rho) / (2 * np.pi)


def mc_kernel(sigma, tau, rho, rw, rv, rng):
    """Monte Carlo mean and standard error of sigma(rw X) tau(rv Y), corr(X, Y) = rho."""
    x = rng.standard_normal(MC_SAMPLES)
    xi = rng.standard_normal(MC_SAMPLES)
    y = rho * x + math.sqrt(1 - rho ** 2) * xi
    f = get_activation(sigma)(rw * x) * get_activation(tau)(rv * y)
    return f.mean(), f.std(ddof=1) / math.sqrt(MC_SAMPLES)


def third_derivative_bound(sigma, tau, rho_max, degree=60):
    r"""Rigorous bound on |K'''(rho)| for |rho| <= rho_max < 1 (unit norms), from the series.

    ``sum_k k(k-1)(k-2)|c_k d_k| r^(k-3)`` to ``degree`` plus the Cauchy-Schwarz tail
    ``max_{k>n} k^3 r^(k-3) sqrt(T_n(sigma) T_n(tau))``.
    """
    a, b = get_activation(sigma), get_activation(tau)
    c, d = a.coefficients(degree), b.coefficients(degree)
    k = np.arange(degree + 1)
    w = k * (k - 1.0) * (k - 2.0) * rho_max ** np.maximum(k - 3, 0)
    head = float(np.sum(w * np.abs(c * d)))
    kk = np.arange(degree + 1, 2000)
    # 1e-12: accuracy of the numeric second moments behind the tail masses
    tail_masses = a.tail_mass(degree) * b.tail_mass(degree) + 1e-12
    tail = float(np.max(kk ** 3.0 * rho_max ** (kk - 3.0))) * math.sqrt(tail_masses)
    return head + tail


# --------------------------------------------------------------------------------------
# reference values
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["closed_form", "quadrature"])
@pytest.mark.parametrize("rho, expected", [(0.0, 0.159154943092), (0.5, 0.304498890522), (1.0, 0.5)])
def test_relu_reference_values(method, rho, expected):
    got = correlation_kernel("relu", "relu", rho, method=method)
    assert abs(got - expected) < REF_DIGITS_TOL, f"{method}: K({rho}) = {got!r}"


def test_relu_k0_is_one_over_two_pi():
    assert abs(correlation_kernel("relu", "relu", 0.0) - 1 / (2 * np.pi)) < EXACT_TOL


@pytest.mark.parametrize("rho", [0.0, 0.3, -0.5, 0.8, -0.8])
def test_relu_series_matches_closed_form(rho):
    """sum_k c_k^2 rho^k with 200 closed-form coefficients (theory/CONVENTIONS.md)."""
    n = 200
    c = get_activation("relu").coefficients(n)
    series = float(np.polynomial.polynomial.polyval(rho, c * c))
    # tail <= |rho|^(n+1) * (E[relu^2] - sum c_k^2) by Parseval
    tail_bound = abs(rho) ** (n + 1) * max(0.5 - float(np.dot(c, c)), 0.0)
    assert abs(series - correlation_kernel("relu", "relu", rho)) <= tail_bound + EXACT_TOL


@pytest.mark.parametrize("rho", [-1.0, -0.9, -0.3, 0.0, 0.4, 0.95, 1.0])
def test_relu_derivative_closed_form(rho):
    """K'(rho) = (pi - arccos rho)/(2 pi) (theory/CONVENTIONS.md) from the numeric route."""
    kv = correlation_kernel("relu", "relu", rho, derivatives=True, method="quadrature")
    expected = (np.pi - np.arccos(rho)) / (2 * np.pi)
    assert abs(kv.d_rho - expected) < ROUTE_TOL
    # homogeneity of degree 1 in each norm: dK/dr = K at unit norms
    assert abs(kv.d_norm_w - relu_kernel(rho)) < ROUTE_TOL
    assert abs(kv.d_norm_v - relu_kernel(rho)) < ROUTE_TOL


# --------------------------------------------------------------------------------------
# Hermite identity E[He_j He_k] = k! rho^k delta_jk
# --------------------------------------------------------------------------------------
RHOS = np.array([-1.0, -0.9, -0.4, 0.0, 0.3, 0.7, 0.99, 1.0])


@pytest.mark.parametrize("j", range(9))
def test_hermite_identity_normalised(j):
    for k in range(9):
        got = correlation_kernel(f"he{j}", f"he{k}", RHOS)
        expected = RHOS ** k if j == k else np.zeros_like(RHOS)
        np.testing.assert_allclose(got, expected, rtol=0, atol=EXACT_TOL, err_msg=f"At j={j}, k={k}")


@pytest.mark.parametrize("j, k", [(0, 0), (2, 2), (3, 3), (5, 5), (8, 8), (3, 5), (4, 6), (2, 4), (1, 8)])
def test_hermite_identity_unnormalised(j, k):
    """Probabilists' He_j as `poly:` specs: E[He_j He_k] = k! rho^k delta_jk (theory/CONVENTIONS.md)."""
    import sympy

    z = sympy.Symbol("z")
    a = "poly:" + str(sympy.expand(sympy.hermite_prob(j, z)))
    b = "poly:" + str(sympy.expand(sympy.hermite_prob(k, z)))
    got = correlation_kernel(a, b, RHOS)
    expected = math.factorial(k) * RHOS ** k if j == k else np.zeros_like(RHOS)
    np.testing.assert_allclose(got, expected, rtol=0, atol=EXACT_TOL * math.factorial(max(j, k)),
                               err_msg=f"At j={j}, k={k}")


@pytest.mark.parametrize("j, k", [(3, 3), (2, 4), (4, 4), (1, 1)])
@pytest.mark.parametrize("rho", [-0.6, 0.5, 1.0])
def test_hermite_identity_by_quadrature(j, k, rho):
    got = correlation_kernel(f"he{j}", f"he{k}", rho, method="quadrature")
    expected = rho ** k if j == k else 0.0
    assert abs(got - expected) < ROUTE_TOL, f"At j={j}, k={k}"


# --------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------
MC_CASES = [
    ("relu", "tanh", 1.0, 1.0),
    ("relu", "tanh", 1.7, 0.6),
    ("he3", "he3", 1.0, 1.0),
    ("he3", "he3", 1.2, 0.8),
    ("erf", "relu", 0.5, 2.0),
    ("erf", "erf", 1.5, 0.7),
    ("sign", "abs", 1.0, 1.3),
    ("sign", "tanh", 0.8, 1.4),
    ("relu", "relu", 2.0, 0.5),
    ("sigmoid", "gelu", 1.3, 1.1),
]


@pytest.mark.parametrize("sigma, tau, rw, rv", MC_CASES)
def test_monte_carlo(sigma, tau, rw, rv):
    rng = np.random.default_rng(MC_SEED)
    for rho in (-0.6, 0.2, 0.9):
        mean, se = mc_kernel(sigma, tau, rho, rw, rv, rng)
        got = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv)
        assert abs(got - mean) <= MC_SIGMAS * se, f"{sigma}/{tau} rho={rho}: {got} vs MC {mean} +- {se}"


@pytest.mark.parametrize("sigma, tau, rw, rv", [("relu", "tanh", 1.3, 0.7), ("softplus", "erf", 0.9, 1.2)])
def test_monte_carlo_price_derivative(sigma, tau, rw, rv):
    """d_rho from derivative-free score weights vs MC of Price's r_w r_v E[sigma'(A) tau'(B)]."""
    rng = np.random.default_rng(MC_SEED + 1)
    a, b = get_activation(sigma), get_activation(tau)
    for rho in (-0.5, 0.6):
        x = rng.standard_normal(MC_SAMPLES)
        y = rho * x + math.sqrt(1 - rho ** 2) * rng.standard_normal(MC_SAMPLES)
        f = rw * rv * a.derivative(rw * x) * b.derivative(rv * y)
        mean, se = f.mean(), f.std(ddof=1) / math.sqrt(MC_SAMPLES)
        kv = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv, derivatives=True)
        assert kv.method == "quadrature"
        assert abs(kv.d_rho - mean) <= MC_SIGMAS * se, f"rho={rho}: {kv.d_rho} vs {mean} +- {se}"


# --------------------------------------------------------------------------------------
# derivatives vs finite differences
# --------------------------------------------------------------------------------------
def _fd_rounding(kv_plus, kv_minus, h):
    """Error of a central difference caused by the errors of the two values."""
    e = lambda kv: max(float(kv.error_bound), 4 * np.finfo(float).eps * max(1.0, abs(kv.value)))  # noqa: E731
    return (e(kv_plus) + e(kv_minus)) / (2 * h)


@pytest.mark.parametrize("sigma, tau", [("tanh", "relu"), ("relu", "sigmoid"), ("erf", "relu"), ("sign", "tanh"),
                                        ("gelu", "abs"), ("he3", "tanh")])
@pytest.mark.parametrize("rho", [-0.5, 0.0, 0.35, 0.6])
def test_d_rho_finite_difference(sigma, tau, rho):
    h = FD_STEP
    rho_max = abs(rho) + h
    # central difference error <= h^2/6 sup|K'''| on [rho - h, rho + h]
    trunc = h * h / 6 * third_derivative_bound(sigma, tau, rho_max)
    kv = correlation_kernel(sigma, tau, rho, derivatives=True)
    kp = correlation_kernel(sigma, tau, rho + h, derivatives=True)
    km = correlation_kernel(sigma, tau, rho - h, derivatives=True)
    fd = (kp.value - km.value) / (2 * h)
    tol = trunc + _fd_rounding(kp, km, h) + float(kv.error_bound)
    assert abs(kv.d_rho - fd) <= tol, f"{sigma}/{tau} rho={rho}: {kv.d_rho} vs FD {fd} (tol {tol:.2e})"


#: sup |sigma'''| on the real line, for the norm finite differences below:
#: tanh''' = -2 sech^2 (1 - 3 tanh^2) peaks at 2 (z = 0); erf(z/sqrt2)''' = sqrt(2/pi)(z^2 - 1)e^{-z^2/2}
#: peaks at sqrt(2/pi) (z = 0); relu and abs are homogeneous, so K is linear in their norm.
SUP_THIRD = {"tanh": 2.0, "erf": math.sqrt(2 / math.pi), "relu": 0.0, "abs": 0.0}


@pytest.mark.parametrize("sigma, tau", [("tanh", "relu"), ("erf", "sigmoid"), ("relu", "tanh"), ("abs", "gelu"),
                                        ("tanh", "erf")])
@pytest.mark.parametrize("rho", [-0.7, 0.4, 0.999])
def test_norm_derivatives_finite_difference(sigma, tau, rho):
    rw, rv, h = 1.3, 0.8, FD_STEP
    kv = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv, derivatives=True)
    # d^3/dr_w^3 E[sigma(r_w X) tau(.)] = E[X^3 sigma'''(r_w X) tau(.)], bounded by
    # sup|sigma'''| E|X|^3 ... <= sup|sigma'''| sqrt(E X^6) sqrt(E tau^2) = sup|sigma'''| sqrt(15) sqrt(E tau^2)
    m2_tau = correlation_kernel(tau, tau, 1.0, norm_w=rv, norm_v=rv)
    trunc_w = h * h / 6 * SUP_THIRD[sigma] * math.sqrt(15 * m2_tau)
    kp = correlation_kernel(sigma, tau, rho, norm_w=rw + h, norm_v=rv, derivatives=True)
    km = correlation_kernel(sigma, tau, rho, norm_w=rw - h, norm_v=rv, derivatives=True)
    fd = (kp.value - km.value) / (2 * h)
    tol = trunc_w + _fd_rounding(kp, km, h) + float(kv.error_bound)
    assert abs(kv.d_norm_w - fd) <= tol, f"d_norm_w {kv.d_norm_w} vs FD {fd} (tol {tol:.2e})"
    # the r_v derivative is the r_w derivative of the swapped pair (symmetry), checked here directly
    sw = correlation_kernel(tau, sigma, rho, norm_w=rv, norm_v=rw, derivatives=True)
    assert abs(sw.d_norm_v - kv.d_norm_w) <= float(kv.error_bound) + float(sw.error_bound) + EXACT_TOL


@pytest.mark.parametrize("pair", closed_form_pairs())
@pytest.mark.parametrize("rho", [-0.8, 0.1, 0.7])
def test_closed_form_derivatives_finite_difference(pair, rho):
    """Closed forms are analytic on |rho| < 1: FD with a Richardson pair h, h/2 (error O(h^4))."""
    rw, rv, h = 1.4, 0.6, 1e-3

    def val(**kw):
        return correlation_kernel(*pair, kw.get("rho", rho), norm_w=kw.get("rw", rw), norm_v=kw.get("rv", rv))

    def rich(f):
        d1 = (f(h) - f(-h)) / (2 * h)
        d2 = (f(h / 2) - f(-h / 2)) / h
        return (4 * d2 - d1) / 3

    kv = correlation_kernel(*pair, rho, norm_w=rw, norm_v=rv, derivatives=True)
    # Richardson truncation O(h^4 K^(5)) ~ 1e-12 here; rounding eps/h ~ 1e-13
    fd_tol = 1e-9
    assert abs(kv.d_rho - rich(lambda d: val(rho=rho + d))) < fd_tol
    assert abs(kv.d_norm_w - rich(lambda d: val(rw=rw + d))) < fd_tol
    assert abs(kv.d_norm_v - rich(lambda d: val(rv=rv + d))) < fd_tol


# --------------------------------------------------------------------------------------
# routes agree
# --------------------------------------------------------------------------------------
def _assert_kv_close(a: KernelValue, b: KernelValue, tol, msg=""):
    for name in ("value", "d_rho", "d_norm_w", "d_norm_v"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        np.testing.assert_allclose(x, y, rtol=0, atol=tol * max(1.0, float(np.max(np.abs(y)))),
                                   err_msg=f"{msg} {name}")


POLY_PAIRS = [("he3", "he3"), ("poly:z**3-3*z", "poly:z**2+1"), ("he6", "he4"), ("identity", "poly:z**5"),
              ("hermite:0.5,0,1,0.25", "he2")]


@pytest.mark.parametrize("sigma, tau", POLY_PAIRS)
@pytest.mark.parametrize("rw, rv", [(1.0, 1.0), (1.3, 0.6)])
def test_polynomial_route_equals_quadrature(sigma, tau, rw, rv):
    rho = np.array([-1.0, -0.7, 0.0, 0.45, 0.999, 1.0])
    exact = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv, derivatives=True)
    assert exact.method == "polynomial"
    numeric = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv, derivatives=True, method="quadrature")
    _assert_kv_close(numeric, exact, ROUTE_TOL, f"{sigma}/{tau}")


@pytest.mark.parametrize("sigma, tau", POLY_PAIRS[:3])
def test_symbolic_expression_equals_numeric(sigma, tau):
    """correlation_kernel_expr (and its sympy derivatives) vs the quadrature route."""
    import sympy

    rho_s, rw_s, rv_s = kernel_symbols()
    expr = correlation_kernel_expr(sigma, tau)
    assert expr.free_symbols <= {rho_s, rw_s, rv_s}
    for rho, rw, rv in [(0.3, 1.0, 1.0), (-0.8, 0.7, 1.9), (1.0, 1.2, 0.5)]:
        subs = {rho_s: rho, rw_s: rw, rv_s: rv}
        sym = [float(e.subs(subs)) for e in (expr, sympy.diff(expr, rho_s), sympy.diff(expr, rw_s),
                                             sympy.diff(expr, rv_s))]
        kv = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv, derivatives=True, method="quadrature")
        got = [kv.value, kv.d_rho, kv.d_norm_w, kv.d_norm_v]
        np.testing.assert_allclose(got, sym, rtol=0, atol=ROUTE_TOL * max(1.0, max(map(abs, sym))),
                                   err_msg=f"{sigma}/{tau} at {subs}")


def test_symbolic_expression_known_case():
    import sympy

    rho, rw, rv = kernel_symbols()
    # E[(r_w X)^2 (r_v Y)^2] = r_w^2 r_v^2 (1 + 2 rho^2) (Isserlis)
    expr = correlation_kernel_expr("poly:z**2", "poly:z**2")
    assert sympy.simplify(expr - rw ** 2 * rv ** 2 * (1 + 2 * rho ** 2)) == 0
    # h_3 dilated: E[h3(r_w X) h3(r_v Y)]; at unit norms rho^3
    assert sympy.simplify(correlation_kernel_expr("he3", "he3").subs({rw: 1, rv: 1}) - rho ** 3) == 0


@pytest.mark.parametrize("pair", closed_form_pairs())
@pytest.mark.parametrize("rw, rv", [(1.0, 1.0), (1.6, 0.45)])
def test_closed_forms_equal_quadrature(pair, rw, rv):
    rho = np.array([-0.97, -0.4, 0.0, 0.3, 0.85, 0.9999])
    exact = correlation_kernel(*pair, rho, norm_w=rw, norm_v=rv, derivatives=True)
    assert exact.method == "closed_form"
    numeric = correlation_kernel(*pair, rho, norm_w=rw, norm_v=rv, derivatives=True, method="quadrature")
    _assert_kv_close(numeric, exact, ROUTE_TOL, f"{pair}")
    # the swapped pair uses the same table entry with the norms exchanged
    swapped = correlation_kernel(pair[1], pair[0], rho, norm_w=rv, norm_v=rw, derivatives=True)
    np.testing.assert_allclose(swapped.value, exact.value, rtol=0, atol=EXACT_TOL)
    np.testing.assert_allclose(swapped.d_norm_v, exact.d_norm_w, rtol=0, atol=EXACT_TOL)


@pytest.mark.parametrize("pair", closed_form_pairs())
def test_closed_form_expressions_match_numbers(pair):
    rho_s, rw_s, rv_s = kernel_symbols()
    expr = correlation_kernel_expr(*pair)
    for rho, rw, rv in [(0.25, 1.0, 1.0), (-0.6, 1.7, 0.4)]:
        num = correlation_kernel(*pair, rho, norm_w=rw, norm_v=rv)
        assert abs(float(expr.subs({rho_s: rho, rw_s: rw, rv_s: rv})) - num) < EXACT_TOL


@pytest.mark.parametrize("sigma, tau", [("tanh", "relu"), ("gelu", "sign"), ("erf", "softplus"), ("abs", "he4")])
@pytest.mark.parametrize("rho", [-0.4, 0.0, 0.3])
def test_series_route_equals_quadrature(sigma, tau, rho):
    """Mehler series with rigorous tail bound vs the nested quadrature (independent derivations,
    including the norm-derivative identity d/dr c_k = (k c_k + sqrt((k+1)(k+2)) c_{k+2})/r)."""
    rw, rv = 1.25, 0.8
    s = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv, derivatives=True, method="series")
    q = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv, derivatives=True, method="quadrature")
    _assert_kv_close(s, q, float(s.error_bound) + float(q.error_bound) + EXACT_TOL, f"{sigma}/{tau}")


def test_series_route_refuses_near_one():
    with pytest.raises(NumericalError, match="quadrature"):
        correlation_kernel("tanh", "relu", 0.97, method="series")
    with pytest.raises(NumericalError, match="rho"):
        correlation_kernel("tanh", "relu", 1.0, method="series")


# --------------------------------------------------------------------------------------
# |rho| -> 1
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rho", [1 - 1e-4, 1 - 1e-7, 1 - 1e-9, 1 - 1e-12, -(1 - 1e-10)])
@pytest.mark.parametrize("pair", [("relu", "relu"), ("erf", "erf"), ("abs", "relu"), ("relu", "sign")])
def test_near_one_quadrature_vs_closed_form(pair, rho):
    rw, rv = 1.2, 0.9
    exact = correlation_kernel(*pair, rho, norm_w=rw, norm_v=rv, derivatives=True)
    numeric = correlation_kernel(*pair, rho, norm_w=rw, norm_v=rv, derivatives=True, method="quadrature")
    _assert_kv_close(numeric, exact, ROUTE_TOL, f"{pair} rho={rho}")


@pytest.mark.parametrize("sigma, tau", [("tanh", "relu"), ("softplus", "abs"), ("relu", "gelu")])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_rho_one_is_one_dimensional(sigma, tau, sign):
    """At |rho| = 1 the kernel is E[sigma(r_w X) tau(+-r_v X)]: check against scipy quad."""
    rw, rv = 1.1, 0.7
    a, b = get_activation(sigma), get_activation(tau)

    def f(x):
        return a(rw * x) * b(sign * rv * x) * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

    ref = sum(integrate.quad(f, lo, hi, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
              for lo, hi in [(-40, 0), (0, 40)])
    assert abs(correlation_kernel(sigma, tau, sign, norm_w=rw, norm_v=rv) - ref) < ROUTE_TOL


@pytest.mark.parametrize("sigma, tau", [("tanh", "relu"), ("relu", "tanh"), ("softplus", "abs"), ("erf", "gelu")])
@pytest.mark.parametrize("rho", [0.5, -0.99, 1 - 1e-6, 1 - 5e-7, 1 - 1e-8])
def test_score_weights_equal_price_formulas(sigma, tau, rho):
    """The derivative-free score weights and Price's formulas with activation derivatives are
    independent derivations of the same derivatives; both are valid for jump-free activations.
    Tolerance: the score weights' round-off grows like eps/s, which the returned estimate bounds."""
    a, b = get_activation(sigma), get_activation(tau)
    rw, rv = 1.3, 0.8
    score, r = _nested_sums(a, b, rho, rw, rv, 20, "score", a.breakpoints, b.breakpoints)
    price, _ = _nested_sums(a, b, rho, rw, rv, 20, "price", a.breakpoints, b.breakpoints)
    np.testing.assert_allclose(score, price, rtol=0, atol=ROUTE_TOL)
    assert np.all(r < ROUTE_TOL)
    s = math.sqrt(1 - rho * rho)
    if s < PRICE_SWITCH:  # the public function switches to Price here; it must agree with it
        kv = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv, derivatives=True)
        np.testing.assert_allclose([kv.d_rho, kv.d_norm_w, kv.d_norm_v], price[1:], rtol=0, atol=EXACT_TOL)


@pytest.mark.parametrize("rho", [1 - 1e-6, 1 - 1e-10, -(1 - 1e-12)])
def test_jump_activation_near_one(rho):
    """sign(X) tanh(Y): d_rho -> 2 phi(0) r_v E[tanh'(r_v s xi)] (delta of sign' at 0)."""
    rw, rv = 1.0, 1.0
    s = math.sqrt((1 - rho) * (1 + rho))
    # E[tanh'(r_v s xi)] by 80-point Gauss-Hermite (smooth integrand; poles at |Im| = pi/(2 r_v s))
    t, w = np.polynomial.hermite_e.hermegauss(80)
    inner = float(np.dot(w, np.cosh(rv * s * t) ** -2)) / math.sqrt(2 * math.pi)
    # Price: r_w r_v E[sign'(r_w X) tanh'(r_v Y)] with sign' = 2 delta: positive for either sign of rho
    expected = 2 * rv / math.sqrt(2 * math.pi) * inner
    for pair in [("sign", "tanh"), ("tanh", "sign")]:
        kv = correlation_kernel(*pair, rho, norm_w=rw, norm_v=rv, derivatives=True)
        assert abs(kv.d_rho - expected) < ROUTE_TOL, f"{pair}"


def test_jump_derivative_at_one_raises_and_sign_sign_diverges():
    with pytest.raises(NumericalError, match="jump"):
        correlation_kernel("sign", "tanh", 1.0, derivatives=True)
    kv = correlation_kernel("sign", "sign", np.array([-1.0, 1.0]), derivatives=True)
    assert np.all(np.isinf(kv.d_rho)) and np.all(kv.d_rho > 0)
    np.testing.assert_allclose(kv.value, [-1.0, 1.0], rtol=0, atol=EXACT_TOL)
    # the value alone is fine at |rho| = 1
    assert abs(correlation_kernel("sign", "tanh", 1.0) - _sign_tanh_at_one()) < ROUTE_TOL


def _sign_tanh_at_one():
    # E[sign(X) tanh(X)] = 2 int_0^inf tanh(x) phi(x) dx
    return 2 * integrate.quad(lambda x: math.tanh(x) * math.exp(-x * x / 2) / math.sqrt(2 * math.pi), 0, 40,
                              epsabs=1e-13, epsrel=1e-12)[0]


# --------------------------------------------------------------------------------------
# gaussian_pair_expectation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["closed_form", "quadrature"])
def test_pair_expectation_saad_solla_references(method):
    """Saad–Solla references (theory/CONVENTIONS.md): I2, I3(a,a,b) = -2 dE/dC_aa (Price + Stein), J2 = dE/dC_ab (Price)."""
    i2 = gaussian_pair_expectation("erf", "erf", [[1.0, 0.5], [0.5, 1.0]], method=method)
    assert abs(i2 - 0.160861246510) < REF_DIGITS_TOL
    p = gaussian_pair_expectation("erf", "erf", [[1.0, 0.3], [0.3, 1.0]], derivatives=True, method=method)
    assert abs(-2 * p.d_aa - 0.048292868604) < REF_DIGITS_TOL
    assert abs(-2 * p.d_bb - 0.048292868604) < REF_DIGITS_TOL
    q = gaussian_pair_expectation("erf", "erf", [[1.3, 0.4], [0.4, 0.8]], derivatives=True, method=method)
    assert abs(q.d_ab - 0.319108657543) < REF_DIGITS_TOL


@pytest.mark.parametrize("sigma, tau", [("tanh", "relu"), ("he3", "poly:z**2"), ("erf", "erf"), ("relu", "relu")])
def test_pair_expectation_finite_differences(sigma, tau):
    C = np.array([[1.4, 0.5], [0.5, 0.7]])
    p = gaussian_pair_expectation(sigma, tau, C, derivatives=True)
    h = 1e-3

    def val(M):
        return gaussian_pair_expectation(sigma, tau, M)

    def rich(direction):
        d1 = (val(C + h * direction) - val(C - h * direction)) / (2 * h)
        d2 = (val(C + h / 2 * direction) - val(C - h / 2 * direction)) / h
        return (4 * d2 - d1) / 3

    # Richardson truncation O(h^4) ~ 1e-12 for these analytic-in-C expectations (C is
    # non-singular); value errors <= KERNEL_TOL-level estimates, divided by h.
    fd_tol = 1e-9 + 4 * float(p.error_bound) / h
    e_aa = np.array([[1.0, 0.0], [0.0, 0.0]])
    e_bb = np.array([[0.0, 0.0], [0.0, 1.0]])
    e_ab = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert abs(p.d_aa - rich(e_aa)) < fd_tol
    assert abs(p.d_bb - rich(e_bb)) < fd_tol
    assert abs(p.d_ab - rich(e_ab)) < fd_tol


def test_pair_expectation_vectorised_and_consistent():
    C = np.array([[[1.0, 0.2], [0.2, 2.0]], [[0.5, -0.5], [-0.5, 0.5]], [[3.0, 1.0], [1.0, 1.0]]])
    p = gaussian_pair_expectation("tanh", "relu", C, derivatives=True)
    assert p.value.shape == (3,)
    for i in range(3):
        rw, rv = math.sqrt(C[i, 0, 0]), math.sqrt(C[i, 1, 1])
        kv = correlation_kernel("tanh", "relu", C[i, 0, 1] / (rw * rv), norm_w=rw, norm_v=rv, derivatives=True)
        assert abs(p.value[i] - kv.value) < EXACT_TOL
        assert abs(p.d_ab[i] - kv.d_rho / (rw * rv)) < EXACT_TOL


# --------------------------------------------------------------------------------------
# vectorisation and input validation
# --------------------------------------------------------------------------------------
def test_vectorised_shapes_and_scalars():
    rho = np.linspace(-1, 1, 12).reshape(3, 4)
    for pair in [("relu", "relu"), ("he2", "he2"), ("tanh", "relu")]:
        v = correlation_kernel(*pair, rho)
        assert isinstance(v, np.ndarray) and v.shape == (3, 4)
        kv = correlation_kernel(*pair, rho, norm_w=np.array([1.0, 2.0, 0.5, 1.5]), derivatives=True)
        assert kv.value.shape == kv.d_rho.shape == kv.d_norm_w.shape == kv.error_bound.shape == (3, 4)
        for idx in [(0, 0), (1, 2), (2, 3)]:
            one = correlation_kernel(*pair, float(rho[idx]), norm_w=[1.0, 2.0, 0.5, 1.5][idx[1]])
            assert isinstance(one, float)
            assert abs(one - kv.value[idx]) < EXACT_TOL
    assert isinstance(correlation_kernel("relu", "relu", 0.3, derivatives=True).d_rho, float)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rho=1.0000001), "`rho`"),
    (dict(rho=[0.2, -1.5]), "`rho`"),
    (dict(rho=float("nan")), "`rho`"),
    (dict(rho=0.2, norm_w=0.0), "`norm_w`"),
    (dict(rho=0.2, norm_v=-1.0), "`norm_v`"),
    (dict(rho=0.2, norm_w=float("inf")), "`norm_w`"),
    (dict(rho=0.2, method="magic"), "`method`"),
    (dict(rho=0.2, tol=0.0), "`tol`"),
])
def test_bad_input_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        correlation_kernel("tanh", "relu", **kwargs)


def test_bad_routes_and_types():
    with pytest.raises(ValueError, match="polynomial"):
        correlation_kernel("tanh", "he3", 0.1, method="polynomial")
    with pytest.raises(ValueError, match="closed_form"):
        correlation_kernel("tanh", "relu", 0.1, method="closed_form")
    with pytest.raises(ValueError, match="no closed form"):
        correlation_kernel_expr("tanh", "relu")
    with pytest.raises(ValueError, match="unknown activation"):
        correlation_kernel("nope", "relu", 0.1)
    with pytest.raises(TypeError, match="`norm_w`"):
        correlation_kernel("relu", "relu", 0.1, norm_w="big")
    with pytest.raises(TypeError, match="`derivatives`"):
        correlation_kernel("relu", "relu", 0.1, derivatives="yes")


@pytest.mark.parametrize("C, match", [
    ([[1.0, 0.5], [0.5]], "`C`"),
    (np.eye(3), "shape"),
    ([[1.0, 0.5], [0.4, 1.0]], "symmetric"),
    ([[0.0, 0.0], [0.0, 1.0]], "positive diagonal"),
    ([[1.0, 1.5], [1.5, 1.0]], "semi-definite"),
    ([[1.0, np.nan], [np.nan, 1.0]], "finite"),
])
def test_pair_expectation_bad_covariance(C, match):
    with pytest.raises((ValueError, TypeError), match=match):
        gaussian_pair_expectation("relu", "relu", C)


def test_user_callable_named_relu_is_not_the_closed_form():
    """A callable that happens to be called 'relu' must not hit the ReLU table."""
    act = get_activation(lambda z: np.maximum(z, 0.0) + 0.1, breakpoints=(0.0,), name="relu")
    kv = correlation_kernel(act, "relu", 0.3, derivatives=True)
    assert kv.method == "quadrature"
    # E[(relu(X) + 0.1) relu(Y)] = K_relu(0.3) + 0.1 E[relu] = K + 0.1/sqrt(2 pi)
    assert abs(kv.value - (relu_kernel(0.3) + 0.1 / math.sqrt(2 * math.pi))) < ROUTE_TOL
