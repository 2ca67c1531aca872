"""Information and generative exponents: reference values and independent routes.

Independent routes used here (none calls the preimage machinery of popdyn.exponents):

* exact Gaussian moments by Gauss–Hermite quadrature (``hermegauss``, exact for
  polynomials), e.g. E[He_3(z)^3 He_1(z)] = 324 (triple-product formula, theory/CONVENTIONS.md);
* an adaptive ``scipy.integrate.quad`` of E[zeta_k(f(z))^2] with zeta_k from the roots of
  f(z) - y found by ``numpy`` (polynomials) or ``scipy.optimize.brentq`` (GELU, SiLU);
* Monte Carlo over z of h_k(z) zeta_k(f(z)), zeta_k from batched companion-matrix
  eigenvalues (fixed seed, tolerance from the standard error);
* closed forms for ReLU, sign, |z|, clipping and injective links (derived in the
  comments), and the Cauchy–Schwarz bound lambda_k^2 >= E[T h_k]^2 / E[T^2].
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial import hermite_e as He
from numpy.polynomial import polynomial as P
from scipy import integrate
from scipy.optimize import brentq
from scipy.special import eval_hermitenorm, ndtr

from popdyn import get_activation
from popdyn.activations import _NAMES
from popdyn.exponents import (
    GenerativeExponentResult,
    _Structure,
    exponents_summary,
    generative_exponent,
    information_exponent,
)

# --------------------------------------------------------------------------------------
# reference table (theory/lee2024/equations.md, "Label transforms and the generative exponent").  "He_3 + He_4" is the UNNORMALISED sum
# z^3 - 3z + z^4 - 6z^2 + 3: it reproduces 0.21162 / 0.71684, while h_3 + h_4 gives
# lambda_1^2 = 0.44452, lambda_2^2 = 0.68699.
# --------------------------------------------------------------------------------------
HE3 = "poly:z**3-3*z"
HE4 = "poly:z**4-6*z**2+3"
HE34 = "poly:z**3-3*z+z**4-6*z**2+3"
#: spec, power coefficients (lowest first), IE, GE, {k: lambda_k^2} (5 digits), IE(y^j) j=1..5
THEORY_TABLE = [
    (HE3, [0, -3, 0, 1], 3, 1, {1: 0.66783, 2: 0.62305, 3: 1.0}, (3, 2, 1, 2, 1)),
    (HE4, [3, 0, -6, 0, 1], 4, 2, {1: 0.0, 2: 0.77537}, (4, 2, 2, 2, 2)),
    (HE34, [3, -3, -6, 1, 1], 3, 1, {1: 0.21162, 2: 0.71684}, (3, 1, 1, 1, 1)),
    ("poly:z**2", [0, 0, 1], 2, 2, {1: 0.0, 2: 1.0}, (2, 2, 2, 2, 2)),
    ("poly:z**3", [0, 0, 0, 1], 1, 1, {1: 1.0, 2: 1.0}, (1, 2, 1, 2, 1)),
]
#: (IE, GE) of other common links and of every registered activation
#: (theory/CONVENTIONS.md: all registered non-polynomial ones have IE 1 except |z|).
EXPONENTS = {
    "he2": (2, 2), "abs": (2, 2), "sign": (1, 1), "relu": (1, 1), "tanh": (1, 1), "erf": (1, 1),
    "sigmoid": (1, 1), "softplus": (1, 1), "gelu": (1, 1), "silu": (1, 1), "identity": (1, 1),
    "he5": (5, 1), "he6": (6, 2), "hermite:0.3,0,1,0.2": (2, 1),
}

#: The table prints 5 decimals, so a correct value is within 5e-6 of it.
REF_5DIGIT_TOL = 5e-6 + 1e-12
#: popdyn.exponents computes lambda_k^2 to ~1e-11 (module docstring); used against exact values.
LAMBDA_TOL = 1e-10
#: The independent scipy.quad route reaches ~1e-12 on these cases (its own error estimate);
#: 1e-9 leaves room for both routes' errors without hiding a wrong preimage or weight.
INDEP_TOL = 1e-9
#: Documented bound (module docstring) on the error estimate for registered activations and heK, K <= 8.
REGISTERED_ERROR_BOUND = 1e-13
#: Monte Carlo: |estimate - value| <= Z_MAX standard errors (two-sided p ~ 7e-6 per check).
Z_MAX = 4.5
#: Exact rational/surd moments converted to float: double rounding only.
FLOAT_REL = 1e-13


# --------------------------------------------------------------------------------------
# independent helpers
# --------------------------------------------------------------------------------------
def _phi(z):
    return np.exp(-0.5 * np.square(z)) / math.sqrt(2 * math.pi)


def _h(k, z):
    return eval_hermitenorm(k, z) / math.sqrt(math.factorial(k))


def _gauss_moment(power):
    """E[p(z)] for a polynomial in the power basis, by 80-point Gauss-Hermite (exact to degree 159)."""
    x, w = He.hermegauss(80)
    return float(np.dot(w, P.polyval(x, power)) / math.sqrt(2 * math.pi))


def _zeta_roots(power, k, y):
    """zeta_k(y) from the real roots of p(z) = y (numpy), weights phi/|p'|."""
    q = np.array(power, dtype=float)
    q[0] -= y
    r = P.polyroots(q)
    r = r[np.abs(r.imag) < 1e-6 * (1 + np.abs(r))].real
    d = np.abs(P.polyval(r, P.polyder(np.asarray(power, dtype=float))))
    w = _phi(r) / np.maximum(d, 1e-300)
    w = w / w.max()
    return float(np.dot(w, _h(k, r)) / w.sum())


def _lambda_by_roots(power, k, L=11.0):
    """lambda_k^2 = int phi(z) zeta_k(p(z))^2 dz, adaptive quad split at critical points and
    at the preimages of the critical values (where zeta_k o p jumps)."""
    power = np.asarray(power, dtype=float)
    crit = [r.real for r in P.polyroots(P.polyder(power)) if abs(r.imag) < 1e-9]
    pts = set(crit)
    for v in P.polyval(np.array(crit), power):
        q = power.copy()
        q[0] -= v
        pts |= {r.real for r in P.polyroots(q) if abs(r.imag) < 1e-7}
    pts = sorted(p for p in pts if -L < p < L)
    val, err = integrate.quad(lambda z: _phi(z) * _zeta_roots(power, k, P.polyval(z, power)) ** 2,
                              -L, L, points=pts, limit=400, epsabs=1e-13, epsrel=1e-12)
    return val, err


def _lambda_two_piece(f, df, k, lo=-3.0, hi=0.0):
    """lambda_k^2 for a link decreasing on (-inf, c) from f(-inf) = 0 and increasing on (c, inf)
    (GELU, SiLU): partner preimages by brentq, adaptive quad."""
    c = brentq(df, lo, hi, xtol=1e-15)
    fc = f(c)

    def zeta(z):
        y = f(z)
        zs = [z]
        if z < c:
            zs.append(brentq(lambda t: f(t) - y, c, 50.0, xtol=1e-300, rtol=1e-15))
        elif y < 0:
            zs.append(brentq(lambda t: f(t) - y, -60.0, c, xtol=1e-300, rtol=1e-15))
        zs = np.array(zs)
        w = _phi(zs) / np.abs([df(t) for t in zs])
        return float(np.dot(w, _h(k, zs)) / w.sum())

    assert fc < 0
    val, err = integrate.quad(lambda z: _phi(z) * zeta(z) ** 2, -12.0, 12.0, points=[c, 0.0],
                              limit=400, epsabs=1e-13, epsrel=1e-12)
    return val, err


def _mc_lambda(power, k, n, rng):
    """Monte Carlo of E_z[h_k(z) zeta_k(p(z))] with zeta_k from companion-matrix eigenvalues."""
    power = np.asarray(power, dtype=float)
    deg = power.size - 1
    z = rng.standard_normal(n)
    y = P.polyval(z, power)
    C = np.zeros((n, deg, deg))
    C[:, np.arange(1, deg), np.arange(deg - 1)] = 1.0
    a = np.broadcast_to(power[:-1] / power[-1], (n, deg)).copy()
    a[:, 0] -= y / power[-1]
    C[:, :, -1] = -a
    roots = np.linalg.eigvals(C)
    real = np.abs(roots.imag) < 1e-6 * (1 + np.abs(roots))
    r = roots.real
    w = np.where(real, _phi(r) / np.maximum(np.abs(P.polyval(r, P.polyder(power))), 1e-300), 0.0)
    zeta = (w * _h(k, r)).sum(axis=1) / w.sum(axis=1)
    vals = _h(k, z) * zeta
    return float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(n))


# --------------------------------------------------------------------------------------
# information exponent
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, power, ie, ge, lambdas, ie_powers", THEORY_TABLE)
def test_theory_table_exponents(spec, power, ie, ge, lambdas, ie_powers):
    assert information_exponent(spec) == ie
    r = generative_exponent(spec)
    assert r.k == ge
    assert r.method == "exact-preimage"
    for k, ref in lambdas.items():
        assert r.lambdas[k - 1] == pytest.approx(ref, abs=REF_5DIGIT_TOL), f"{spec}: lambda_{k}^2"


@pytest.mark.parametrize("spec, power, ie, ge, lambdas, ie_powers", THEORY_TABLE)
def test_information_exponent_of_label_powers(spec, power, ie, ge, lambdas, ie_powers):
    # the column "IE(y^j), j = 1..5" of theory/lee2024/equations.md, from the exact coefficients of the composed polynomial
    body = spec.split(":", 1)[1]
    got = tuple(information_exponent(f"poly:({body})**{j}") for j in range(1, 6))
    assert got == ie_powers
    # independent: first k with E[p(z)^j He_k(z)] != 0 by exact Gauss-Hermite quadrature
    for j, ref in enumerate(ie_powers, start=1):
        pj = P.polypow(power, j)
        first = next(k for k in range(1, 6 * j + 1)
                     if abs(_gauss_moment(P.polymul(pj, He.herme2poly([0] * k + [1])))) > 1e-6)
        assert first == ref, f"{spec}, j={j}"


@pytest.mark.parametrize("spec, expected", sorted(EXPONENTS.items()))
def test_exponents_of_named_links(spec, expected):
    assert (information_exponent(spec), generative_exponent(spec).k) == expected


def test_information_exponent_numeric_and_limits():
    h6 = lambda z: eval_hermitenorm(6, z) / math.sqrt(720.0)  # noqa: E731  (non-polynomial path)
    assert information_exponent(h6, degree=6) == 6
    with pytest.raises(ValueError, match="larger `degree`"):
        information_exponent(h6, degree=4)
    assert information_exponent(lambda z: np.full_like(z, 2.0)) is None
    assert information_exponent("poly:7") is None
    assert information_exponent("he0") is None
    assert information_exponent(lambda z: z ** 2) == 2
    assert information_exponent(lambda z: np.tanh(z) ** 2) == 2


# --------------------------------------------------------------------------------------
# lambda_k^2 against independent routes
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, power, ks", [
    ("he3", list(np.array([0, -3, 0, 1]) / math.sqrt(6)), (1, 2, 3)),
    (HE34, [3, -3, -6, 1, 1], (1, 2)),
    ("he4", list(np.array([3, 0, -6, 0, 1]) / math.sqrt(24)), (2,)),
    ("hermite:0.3,0,1,0.2", list(0.3 * np.array([1, 0, 0, 0]) + np.array([-1, 0, 1, 0]) / math.sqrt(2)
                                 + 0.2 * np.array([0, -3, 0, 1]) / math.sqrt(6)), (1, 2)),
])
def test_lambdas_vs_numpy_roots_quadrature(spec, power, ks):
    r = generative_exponent(spec)
    for k in ks:
        ref, qerr = _lambda_by_roots(power, k)
        assert qerr < INDEP_TOL
        assert abs(r.lambdas[k - 1] - ref) <= INDEP_TOL, f"{spec}, k={k}: {r.lambdas[k - 1]} vs {ref}"
        assert r.lambda_error <= INDEP_TOL


def test_square_of_he3_matches_he3():
    # y = x^2 with x = He_3(z) odd in z: for even k, E[h_k | x] is even in x, hence
    # E[h_k | x^2] = E[h_k | x]; for odd k it vanishes.  So lambda_k^2(He_3^2) equals
    # lambda_k^2(He_3) (even k) or 0 (odd k): six folds, two shared critical values.
    sq = generative_exponent("poly:(z**3-3*z)**2").lambdas
    he3 = generative_exponent(HE3).lambdas
    for k in range(1, 7):
        assert sq[k - 1] == pytest.approx(he3[k - 1] if k % 2 == 0 else 0.0, abs=LAMBDA_TOL), f"k={k}"


def _zeta_shifted_quartic(z, k):
    """zeta_k for y = z^4 - 2z^3 - 2z^2 + 3z = w^4 - 7w^2/2 + 13/16, w = z - 1/2, from the
    closed-form preimages w = +-sqrt(s), s = (7/2 +- sqrt(49/4 - 4(13/16 - y)))/2 (exact
    except at the folds), evaluated at the node's own w to avoid any root finding."""
    w0 = z - 0.5
    s0 = w0 * w0
    y_shift = s0 * s0 - 3.5 * s0  # = y - 13/16
    s_other = 3.5 - s0  # the other root of s^2 - 3.5 s - y_shift = 0 (sum of roots = 3.5)
    ws = [w0, -w0] + ([math.sqrt(s_other), -math.sqrt(s_other)] if s_other > 0 else [])
    ws = np.array(ws)
    wt = _phi(ws + 0.5) / np.abs(ws * (4 * ws * ws - 7))
    return float(np.dot(wt, _h(k, ws + 0.5)) / wt.sum())


def test_mirror_minima_off_centre():
    # two minima with the same value -9/4 (mirror folds about z = 1/2, not about 0): the
    # partner preimages of a node near one fold sit near the other fold
    r = generative_exponent("poly:z**4-2*z**3-2*z**2+3*z")
    c = math.sqrt(7 / 4)
    pts = [0.5 - math.sqrt(3.5), 0.5 - c, 0.5, 0.5 + c, 0.5 + math.sqrt(3.5)]
    for k in (1, 2, 3):
        ref, qerr = integrate.quad(lambda z: _phi(z) * _zeta_shifted_quartic(z, k) ** 2, -11, 12, points=pts,
                                   limit=400, epsabs=1e-14, epsrel=1e-13)
        assert abs(r.lambdas[k - 1] - ref) <= LAMBDA_TOL + qerr, f"k={k}: {r.lambdas[k - 1]} vs {ref}"
    # mpmath (30 digits, same closed form): lambda_1^2 = 0.28503621525002238, lambda_2^2 = 0.59977283766831908
    assert r.lambdas[0] == pytest.approx(0.28503621525002238, abs=LAMBDA_TOL)
    assert r.lambdas[1] == pytest.approx(0.59977283766831908, abs=LAMBDA_TOL)


def test_complex_critical_point_near_the_real_axis():
    # f' has roots 0.638 +- 0.128i: |f'| nearly vanishes inside a monotone piece, a
    # near-singularity of zeta_k o f that the quadrature must split at
    power = [1, -2, 3, -3, 2, 1, -2]
    r = generative_exponent("poly:1-2*z+3*z**2-3*z**3+2*z**4+z**5-2*z**6")
    for k in (1, 2):
        ref, qerr = _lambda_by_roots(power, k)
        assert qerr < INDEP_TOL
        assert abs(r.lambdas[k - 1] - ref) <= INDEP_TOL, f"k={k}: {r.lambdas[k - 1]} vs {ref}"
    assert r.lambda_error <= INDEP_TOL


def test_numeric_even_link_has_zero_odd_lambdas():
    # cos is even: zeta_k = 0 for odd k by symmetry; the numeric path has no certificate,
    # so this checks that mirror preimages are paired to rounding level
    r = generative_exponent(np.cos)
    assert r.k == 2 and r.method == "numeric"
    np.testing.assert_allclose(r.lambdas[0::2], 0.0, atol=1e-12)
    assert r.lambda_error <= 1e-10


def test_gelu_log_singularity_resolved_at_high_degree():
    # GELU's left tail keeps a weight ~ 1/|z| as y -> 0-: a logarithmic singularity whose
    # strength grows with k; max_k = 30 needs the deep grading towards the crossing of y = 0
    r = generative_exponent("gelu", max_k=30)
    assert r.lambda_error <= 1e-10
    np.testing.assert_allclose(r.lambdas[:6], generative_exponent("gelu").lambdas, atol=LAMBDA_TOL)


def test_lambda3_of_he3_is_one():
    # E[h_3 | y] = y/sqrt(6) for y = He_3(z): zeta_3 is a function of y, so lambda_3^2 = E[h_3^2] = 1
    assert generative_exponent(HE3).lambdas[2] == pytest.approx(1.0, abs=LAMBDA_TOL)


@pytest.mark.parametrize("power, k", [([0, -3, 0, 1], 1), ([0, -3, 0, 1], 2), ([3, -3, -6, 1, 1], 1),
                                      ([3, 0, -6, 0, 1], 2)])
def test_lambdas_vs_monte_carlo(power, k):
    spec = "poly:" + "+".join(f"({c})*z**{n}" for n, c in enumerate(power) if c)
    est, se = _mc_lambda(power, k, 200_000, np.random.default_rng(20240305))
    lam = generative_exponent(spec).lambdas[k - 1]
    assert abs(est - lam) <= Z_MAX * se, f"MC {est} +- {se} vs {lam}"


@pytest.mark.parametrize("name, f, df", [
    ("gelu", lambda z: z * ndtr(z), lambda z: ndtr(z) + z * _phi(z)),
    ("silu", lambda z: z / (1 + math.exp(-z)) if z > -700 else 0.0,
     lambda z: (1 / (1 + math.exp(-z))) * (1 + z * (1 - 1 / (1 + math.exp(-z)))) if z > -700 else 0.0),
])
def test_non_monotone_smooth_links_vs_brentq_quadrature(name, f, df):
    r = generative_exponent(name)
    assert r.method == "numeric" and r.k == 1
    for k in (1, 2, 3):
        ref, qerr = _lambda_two_piece(f, df, k)
        assert abs(r.lambdas[k - 1] - ref) <= INDEP_TOL + qerr, f"{name}, k={k}: {r.lambdas[k - 1]} vs {ref}"


def _h_at_zero(k):
    return eval_hermitenorm(k, 0.0) / math.sqrt(math.factorial(k))


@pytest.mark.parametrize("k", range(1, 7))
def test_relu_sign_abs_closed_forms(k):
    phi0 = 1 / math.sqrt(2 * math.pi)
    edge = _h_at_zero(k - 1) * phi0 / math.sqrt(k)  # int_0^inf h_k phi = h_{k-1}(0) phi(0)/sqrt(k)
    # ReLU: atom y = 0 (P = 1/2, zeta_k = -2 edge) plus the injective part z > 0 (zeta_k = h_k(y)),
    # which contributes int_0^inf h_k^2 phi = 1/2 (h_k^2 is even).
    assert generative_exponent("relu").lambdas[k - 1] == pytest.approx(0.5 + 2 * edge ** 2, abs=LAMBDA_TOL)
    # sign: atoms +-1 with P = 1/2 and zeta_k(+-1) = +-2 edge (k odd), 0 (k even)
    assert generative_exponent("sign").lambdas[k - 1] == pytest.approx(4 * edge ** 2, abs=LAMBDA_TOL)
    # |z|: preimages +-z with equal weights, zeta_k = (h_k(z) + h_k(-z))/2 = h_k(z) (k even) or 0
    assert generative_exponent("abs").lambdas[k - 1] == pytest.approx(float(k % 2 == 0), abs=LAMBDA_TOL)


def test_sign_lambda1_is_two_over_pi():
    assert generative_exponent("sign").lambdas[0] == pytest.approx(2 / math.pi, abs=LAMBDA_TOL)


@pytest.mark.parametrize("spec", ["tanh", "sigmoid", "erf", "softplus", "identity", "poly:z**3", "poly:z**5+z"])
def test_injective_links_have_all_lambdas_one(spec):
    # f injective: zeta_k(y) = h_k(f^{-1}(y)), so lambda_k^2 = E[h_k^2] = 1 for every k
    r = generative_exponent(spec)
    np.testing.assert_allclose(r.lambdas, 1.0, atol=LAMBDA_TOL, err_msg=spec)


def test_clipped_identity_atoms_plus_injective_part():
    act = get_activation(lambda z: np.clip(z, -1.0, 1.0), breakpoints=(-1.0, 1.0), name="clip")
    r = generative_exponent(act)
    p_atom = float(ndtr(-1.0))
    for k in range(1, 7):
        inner = integrate.quad(lambda z: _h(k, z) ** 2 * _phi(z), -1, 1, epsabs=1e-14)[0]
        tail = integrate.quad(lambda z: _h(k, z) * _phi(z), 1, np.inf, epsabs=1e-14)[0]
        # atoms y = +-1 (P = Phi(-1) each, |zeta_k| = |tail|/P) plus the injective middle part
        assert r.lambdas[k - 1] == pytest.approx(inner + 2 * tail ** 2 / p_atom, abs=LAMBDA_TOL), f"k={k}"


def test_user_callable_square_numeric_path():
    r = generative_exponent(lambda z: z ** 2)
    assert r.method == "numeric" and r.k == 2
    np.testing.assert_allclose(r.lambdas, [0, 1, 0, 1, 0, 1], atol=LAMBDA_TOL)
    assert r.witness.description == "T(y) = y"
    assert r.witness.correlation == pytest.approx(math.sqrt(2), abs=1e-10)  # E[z^2 h_2] = sqrt(2)


@pytest.mark.parametrize("spec", ["he3", "gelu"])
def test_lambdas_do_not_depend_on_max_k(spec):
    # max_k changes the window |z| <= L and hence every node: an independent resolution check
    a = generative_exponent(spec, max_k=3).lambdas
    b = generative_exponent(spec, max_k=12).lambdas[:3]
    np.testing.assert_allclose(a, b, atol=LAMBDA_TOL)


@pytest.mark.parametrize("name", list(_NAMES) + [f"he{k}" for k in range(1, 9)])
def test_registered_activations(name):
    r = generative_exponent(name, max_k=8)
    assert isinstance(r, GenerativeExponentResult)
    assert r.lambda_error <= REGISTERED_ERROR_BOUND
    lam = np.array(r.lambdas)
    # Jensen: lambda_k^2 = E[E[h_k|y]^2] <= E[h_k^2] = 1
    assert np.all(lam >= 0) and np.all(lam <= 1 + LAMBDA_TOL)
    assert lam[r.k - 1] >= r.witness.lambda_lower_bound - LAMBDA_TOL
    if name.startswith("he"):
        k = int(name[2:])
        assert r.k == (2 if k % 2 == 0 else 1)  # GE <= 2, = 1 unless the link is even (theory/lee2024)
        assert r.lambdas[k - 1] == pytest.approx(1.0, abs=LAMBDA_TOL)  # zeta_k(y) = y for y = h_k


# --------------------------------------------------------------------------------------
# witnesses
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, power, norm, k, j, exact", [
    # E[He_3^3 He_1] = 324 (theory/CONVENTIONS.md) and y = He_3/sqrt(6)
    ("he3", [0, -3, 0, 1], math.sqrt(6), 1, 3, "324/6**(3/2)"),
    # E[He_4^2 He_2] = 192, y = He_4/sqrt(24), h_2 = He_2/sqrt(2)
    ("he4", [3, 0, -6, 0, 1], math.sqrt(24), 2, 2, "192/(24*sqrt(2))"),
    # E[(He_3 + He_4)^2 He_1] = 2 E[He_3 He_4 He_1] = 48
    (HE34, [3, -3, -6, 1, 1], 1.0, 1, 2, "48"),
    ("poly:z**2", [0, 0, 1], 1.0, 2, 1, "sqrt(2)"),
    ("poly:z**3", [0, 0, 0, 1], 1.0, 1, 1, "3"),
])
def test_polynomial_witness_exact(spec, power, norm, k, j, exact):
    import sympy

    r = generative_exponent(spec)
    w = r.witness
    assert r.k == k and w.description == ("T(y) = y" if j == 1 else f"T(y) = y**{j}")
    assert sympy.simplify(w.exact_correlation - sympy.sympify(exact)) == 0
    # independent float route: Gauss-Hermite on the unnormalised polynomial p, y = p / norm
    pj = P.polypow(power, j)
    corr = _gauss_moment(P.polymul(pj, He.herme2poly([0] * k + [1]))) / norm ** j / math.sqrt(math.factorial(k))
    assert w.correlation == pytest.approx(corr, rel=FLOAT_REL)
    m2 = _gauss_moment(P.polypow(power, 2 * j)) / norm ** (2 * j)
    assert w.lambda_lower_bound == pytest.approx(corr ** 2 / m2, rel=FLOAT_REL)
    # Cauchy-Schwarz: lambda_k^2 >= E[T h_k]^2 / E[T^2]
    assert r.lambdas[k - 1] >= w.lambda_lower_bound - LAMBDA_TOL
    # the witness is the *smallest* power: lower powers are exactly uncorrelated with h_k
    for i in range(1, j):
        assert abs(_gauss_moment(P.polymul(P.polypow(power, i), He.herme2poly([0] * k + [1])))) < 1e-9
    assert w.fn(np.array([2.0]))[0] == pytest.approx(2.0 ** j)


def test_generative_below_information_exponent_with_square_witness():
    # h_2 + 0.2 h_3 + 0.3: IE 2 but E[y^2 h_1] = 2 sqrt(3)/5 != 0, so GE 1 (theory/lee2024/equations.md)
    r = generative_exponent("hermite:0.3,0,1,0.2")
    assert r.k == 1 and r.witness.description == "T(y) = y**2"
    assert str(r.witness.exact_correlation) == "2*sqrt(3)/5"


def test_mixed_radicals_exact_witness():
    # h_3 + h_5: power coefficients mix sqrt(6) and sqrt(30); exact surd arithmetic
    import sympy

    r = generative_exponent("hermite:0,0,0,1,0,1")
    assert r.k == 1 and r.witness.description == "T(y) = y**3"
    assert sympy.simplify(r.witness.exact_correlation - (84 * sympy.sqrt(6) + 45 * sympy.sqrt(30))) == 0
    x, w = He.hermegauss(80)
    y = He.hermeval(x, [0, 0, 0, 1 / math.sqrt(6), 0, 1 / math.sqrt(120)])
    ref = float(np.dot(w, y ** 3 * x) / math.sqrt(2 * math.pi))
    assert r.witness.correlation == pytest.approx(ref, rel=1e-12)


def test_numeric_witness_with_exact_first_coefficient():
    r = generative_exponent("sign")
    assert r.witness.description == "T(y) = y"
    assert r.witness.correlation == pytest.approx(math.sqrt(2 / math.pi), abs=1e-12)
    assert float(r.witness.exact_correlation) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-15)


def test_zeta_evaluation():
    # injective: zeta_1(y) = f^{-1}(y)
    st_tanh = _Structure(get_activation("tanh"), 3)
    y = np.tanh(np.linspace(-3, 3, 13))
    np.testing.assert_allclose(st_tanh.zeta(y, 1), np.arctanh(y), atol=1e-12)
    # y = z^2: zeta_2(y) = h_2(sqrt y) = (y - 1)/sqrt 2 and zeta_1 = 0
    st_sq = _Structure(get_activation("poly:z**2"), 3)
    y = np.array([0.1, 1.0, 4.0])
    np.testing.assert_allclose(st_sq.zeta(y, 2), (y - 1) / math.sqrt(2), atol=1e-12)
    np.testing.assert_allclose(st_sq.zeta(y, 1), 0.0, atol=1e-12)
    # atoms: sign(z) = 1 -> E[z | z > 0] = sqrt(2/pi); relu = 0 -> E[z | z < 0] = -sqrt(2/pi)
    assert _Structure(get_activation("sign"), 1).zeta(np.array([1.0]), 1)[0] == pytest.approx(math.sqrt(2 / math.pi))
    assert _Structure(get_activation("relu"), 1).zeta(np.array([0.0]), 1)[0] == pytest.approx(-math.sqrt(2 / math.pi))


@pytest.mark.parametrize("spec, k", [("gelu", 2), ("he4", 2), ("hermite:0.3,0,1,0.2", 1)])
def test_zeta_witness_attains_lambda(spec, k):
    # T = zeta_k is the optimal transform: E[zeta_k(y) h_k] = E[zeta_k(y)^2] = lambda_k^2
    s = _Structure(get_activation(spec), 6)
    corr, m2, ok = s.expect(lambda y: s.zeta(y, k), k)
    lam = generative_exponent(spec).lambdas[k - 1]
    assert ok
    assert corr == pytest.approx(lam, abs=INDEP_TOL) and m2 == pytest.approx(lam, abs=INDEP_TOL)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=2, max_size=5).filter(lambda c: any(c[1:])))
def test_polynomial_generative_exponent_is_one_unless_even(coeffs):
    spec = "poly:" + "+".join(f"({c})*z**{n}" for n, c in enumerate(coeffs) if c)
    r = generative_exponent(spec)
    even = not any(coeffs[1::2])
    assert r.k == (2 if even else 1)
    assert r.witness.exact_correlation != 0
    assert r.lambdas[r.k - 1] >= r.witness.lambda_lower_bound - LAMBDA_TOL


# --------------------------------------------------------------------------------------
# constants, bad input, summary
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["poly:2", "he0", lambda z: np.full_like(np.asarray(z, dtype=float), -1.5)])
def test_constant_links(spec):
    r = generative_exponent(spec)
    assert (r.k, r.lambdas, r.witness) == (None, (), None)
    assert information_exponent(spec) is None


@pytest.mark.parametrize("kwargs, exc, arg", [
    ({"max_k": 0}, ValueError, "max_k"), ({"max_k": -2}, ValueError, "max_k"), ({"max_k": 2.5}, TypeError, "max_k"),
    ({"max_k": 31}, ValueError, "max_k"), ({"tol": 0.0}, ValueError, "tol"), ({"tol": -1e-3}, ValueError, "tol"),
    ({"max_k": "3"}, TypeError, "max_k"),
])
def test_generative_exponent_bad_input(kwargs, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        generative_exponent("relu", **kwargs)


@pytest.mark.parametrize("kwargs, exc, arg", [
    ({"degree": 0}, ValueError, "degree"), ({"degree": -1}, ValueError, "degree"),
    ({"degree": 1.5}, TypeError, "degree"), ({"tol": -1.0}, ValueError, "tol"),
])
def test_information_exponent_bad_input(kwargs, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        information_exponent("tanh", **kwargs)


@pytest.mark.parametrize("spec", ["abs", "he4"])
def test_max_k_below_exponent_asks_for_more(spec):
    with pytest.raises(ValueError, match="larger `max_k`"):
        generative_exponent(spec, max_k=1)


def test_exponents_summary_is_json():
    s = exponents_summary("he3")
    back = json.loads(json.dumps(s))
    assert back["information_exponent"] == 3 and back["generative_exponent"] == 1
    assert back["witness"]["description"] == "T(y) = y**3"
    assert back["witness"]["exact_correlation"] == "9*sqrt(6)"
    assert back["method"] == "exact-preimage" and back["tolerance"] > 0
    assert back["lambdas"][0] == pytest.approx(0.66783, abs=REF_5DIGIT_TOL)
    c = json.loads(json.dumps(exponents_summary("poly:1")))
    assert c["generative_exponent"] is None and c["witness"] is None and c["lambdas"] == []
