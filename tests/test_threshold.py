"""Tests for popdyn.models.multi_index_threshold: beta_c for equiangular index vectors (arXiv 2411.08798).

Reference values (theory/simsek2025/equations.md; sigma = sigma*):
    h_p, any k:                 beta_c = (p - 2)/(k + p - 2)
    h_3, k = 3, beta = 0.28:    lambda_par = 0.259600 (x2), lambda_perp = 3.374796
    h_3, k = 3, beta = 0.22:    lambda_par = -0.249415,     lambda_perp = 2.992984
    h_3 + c h_4:                (c=1, k=3) 0.333097973437; (c=0.5, k=2) 0.378252136019;
                                (c=2, k=5) 0.261816378235
    0.3 h_2 + h_3, k = 3:       0.234898347605
    (5 digits) 0.3 h_2 + h_3:   0.31768 (k=2), 0.15318 (k=5)
    (5 digits) h_3 + 0.5 h_5:   0.42146 (k=2), 0.31327 (k=3), 0.20148 (k=5)
"""

import json
import math

import numpy as np
import pytest

from popdyn.models.multi_index_fixedpoints import classify
from popdyn.models.multi_index import MultiIndexProblem, gram, index_vectors
from popdyn.models.multi_index_threshold import ThresholdResult, average_overlap, smallest_eigenvalue_curve, threshold

MONOMIAL = {(3, 3): 0.25, (4, 3): 0.4, (5, 8): 3 / 11}
MIXED_12 = {  # (student = teacher spec, k) -> beta_c to 12 digits
    ("hermite:0,0,0,1,1", 3): 0.333097973437,
    ("hermite:0,0,0,1,0.5", 2): 0.378252136019,
    ("hermite:0,0,0,1,2", 5): 0.261816378235,
    ("hermite:0,0,0.3,1", 3): 0.234898347605,
}
MIXED_5 = {  # 5-digit values from theory/simsek2025/equations.md
    ("hermite:0,0,0.3,1", 2): 0.31768,
    ("hermite:0,0,0.3,1", 5): 0.15318,
    ("hermite:0,0,0,1,0,0.5", 2): 0.42146,
    ("hermite:0,0,0,1,0,0.5", 3): 0.31327,
    ("hermite:0,0,0,1,0,0.5", 5): 0.20148,
}
HESSIAN_REF = {0.28: (0.259600, 3.374796), 0.22: (-0.249415, 2.992984)}

#: The references are printed to 12 (resp. 6, 5) digits: half a unit in the last place.
REF12_TOL = 5e-13
REF6_TOL = 5e-7
REF5_TOL = 5e-6
#: Numeric routes (brentq xtol 1e-14 on a smooth function) vs the exact algebraic root.
NUMERIC_TOL = 1e-12
#: Non-polynomial: truncated Hermite series at degree 200 vs the closed-form kernel; the
#: neglected tail is ~ c_beta^200 with c_beta <= 0.8 near the roots, i.e. negligible, so
#: the limit is the 1e-12 accuracy of the coefficients times ~m^2 for phi''.
NONPOLY_TOL = 1e-9


# --------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("p,k", sorted(MONOMIAL))
def test_monomial_reference(p, k):
    res = threshold(f"he{p}", f"he{p}", k)
    assert res.method == "exact"
    assert res.beta_c == pytest.approx(MONOMIAL[(p, k)], abs=1e-15)
    assert (res.kind_below, res.kind_above) == ("saddle", "minimum")


@pytest.mark.parametrize("p", [3, 4, 5, 6])
@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_monomial_formula_exact(p, k):
    import sympy as sp

    res = threshold(f"he{p}", f"he{p}", k, method="exact")
    assert sp.simplify(res.exact - sp.Rational(p - 2, k + p - 2)) == 0, res.exact
    # independent numeric route: the assembled Riemannian Hessian
    num = threshold(f"he{p}", f"he{p}", k, method="hessian")
    assert num.beta_c == pytest.approx((p - 2) / (k + p - 2), abs=NUMERIC_TOL)


@pytest.mark.parametrize("beta", sorted(HESSIAN_REF))
def test_hessian_reference_p3_k3(beta):
    cur = smallest_eigenvalue_curve("he3", "he3", 3, [beta])
    lam_par, lam_perp = HESSIAN_REF[beta]
    assert cur.smallest[0] == pytest.approx(lam_par, abs=REF6_TOL)
    assert cur.largest[0] == pytest.approx(lam_par, abs=REF6_TOL)     # multiplicity k - 1 = 2
    assert cur.outside[0] == pytest.approx(lam_perp, abs=REF6_TOL)
    fp = classify(MultiIndexProblem("he3", "he3", gram("equiangular", 3, beta=beta)),
                  np.full(3, average_overlap(3, beta)), d=10)
    assert list(fp.multiplicities) == [2, 7]          # in-span k - 1 = 2, outside d - k = 7
    np.testing.assert_allclose(fp.eigenvalues, sorted([lam_par, lam_perp]), atol=REF6_TOL)


def fd_in_span_eigenvalue(prob, k, beta, h=1e-2):
    """lambda_par by FD along a geodesic in R^d in the in-span tangent direction v_1 - v_2."""
    d = k + 2
    V = index_vectors(prob.G, d, rng=0)
    w = V.sum(axis=0)
    w /= np.linalg.norm(w)
    z = V[0] - V[1]
    z -= w * (w @ z)
    z /= np.linalg.norm(z)

    def D(hh):
        f = [float(prob.loss(V @ (w * math.cos(t) + z * math.sin(t)))) for t in (-hh, 0.0, hh)]
        return (f[0] - 2 * f[1] + f[2]) / hh ** 2

    return (4 * D(h / 2) - D(h)) / 3


@pytest.mark.parametrize("spec,k,beta", [("he3", 3, 0.28), ("hermite:0,0,0,1,1", 3, 0.2),
                                         ("hermite:0,0,0.3,1", 4, 0.6), ("relu", 3, 0.5)])
def test_lambda_par_formula_vs_fd_and_hessian(spec, k, beta):
    """Formula lambda_par = k c phi'(c) - (1 - beta) phi''(c) of theory/simsek2025/equations.md (phi = its "g"):
    checked against the FD second derivative and the assembled Hessian."""
    prob = MultiIndexProblem(spec, spec, gram("equiangular", k, beta=beta))
    c = average_overlap(k, beta)
    u = np.full(k, c)
    formula = k * c * prob.g(u)[0] - (1 - beta) * prob.dg(u)[0]
    assert smallest_eigenvalue_curve(spec, spec, k, [beta]).smallest[0] == pytest.approx(formula, abs=1e-12)
    # FD: Richardson-extrapolated central difference, error ~1e-9 (see test_fixedpoints FD_TOL)
    assert fd_in_span_eigenvalue(prob, k, beta) == pytest.approx(formula, abs=1e-7)
    # lambda_perp = k c phi'(c)
    assert smallest_eigenvalue_curve(spec, spec, k, [beta]).outside[0] == pytest.approx(k * c * prob.g(u)[0],
                                                                                         abs=1e-12)


@pytest.mark.parametrize("key", sorted(MIXED_12))
def test_mixed_reference_12_digits(key):
    spec, k = key
    res = {m: threshold(spec, spec, k, method=m) for m in ("exact", "series", "hessian")}
    assert res["exact"].beta_c == pytest.approx(MIXED_12[key], abs=REF12_TOL)
    assert res["series"].beta_c == pytest.approx(res["exact"].beta_c, abs=NUMERIC_TOL)
    assert res["hessian"].beta_c == pytest.approx(res["exact"].beta_c, abs=NUMERIC_TOL)
    assert all((r.kind_below, r.kind_above) == ("saddle", "minimum") for r in res.values())
    assert res["exact"].exact is not None and "CRootOf" in str(res["exact"].exact)


@pytest.mark.parametrize("key", sorted(MIXED_5))
def test_mixed_reference_5_digits(key):
    spec, k = key
    assert threshold(spec, spec, k).beta_c == pytest.approx(MIXED_5[key], abs=REF5_TOL)


@pytest.mark.parametrize("c", [0.25, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_mixture_bounded_by_single_degree_thresholds(c, k):
    """theory/simsek2025/equations.md: beta_c lies between the single-degree thresholds beta_3 and beta_4."""
    spec = f"hermite:0,0,0,1,{c}"
    b = threshold(spec, spec, k).beta_c
    assert 1 / (k + 1) < b < 2 / (k + 2)


# --------------------------------------------------------------------------------------
# dynamics: the u-ODE around the average point
# --------------------------------------------------------------------------------------
def run_from_average_point(spec, k, beta, T=300.0):
    from scipy.integrate import solve_ivp

    G = gram("equiangular", k, beta=beta)
    prob = MultiIndexProblem(spec, spec, G)
    c = average_overlap(k, beta)
    a = np.zeros(k)
    a[0], a[1] = 1.0, -1.0                        # in-span tangent: z = V^T a, 1^T a = 0
    u0 = c + 1e-3 * (G @ a) / math.sqrt(a @ G @ a)
    u0 /= math.sqrt(u0 @ np.linalg.solve(G, u0))  # back onto the unit sphere (w in span)
    sol = solve_ivp(lambda t, u: prob.velocity(u), (0, T), u0, method="DOP853", rtol=1e-10, atol=1e-13)
    assert sol.success
    return np.max(np.abs(sol.y[:, -1] - c))


@pytest.mark.parametrize("spec,k", [("he3", 3), ("he4", 3), ("hermite:0,0,0,1,1", 3), ("hermite:0,0,0.3,1", 3)])
def test_ode_returns_above_and_leaves_below(spec, k):
    bc = threshold(spec, spec, k).beta_c
    assert run_from_average_point(spec, k, bc + 0.05) < 1e-8       # perturbation 1e-3 decays
    assert run_from_average_point(spec, k, bc - 0.05) > 0.1        # and grows to O(1)


# --------------------------------------------------------------------------------------
# non-polynomial activations
# --------------------------------------------------------------------------------------
def abs_kernel_lambda(k, beta):
    """E|X||Y| = (2/pi)(sqrt(1-t^2) + t arcsin t): phi' = (2/pi) arcsin t, phi'' = (2/pi)/sqrt(1-t^2)."""
    c = math.sqrt((1 + (k - 1) * beta) / k)
    return (2 / math.pi) * (k * c * math.asin(c) - (1 - beta) / math.sqrt(1 - c * c))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_abs_against_closed_form_kernel(k):
    from scipy.optimize import brentq

    ref = brentq(lambda b: abs_kernel_lambda(k, b), 0.0, 0.9, xtol=1e-15)
    res = threshold("abs", "abs", k, degree=200)
    assert res.method == "hessian"
    assert res.beta_c == pytest.approx(ref, abs=NONPOLY_TOL)
    assert res.error_estimate < 1e-10
    assert (res.kind_below, res.kind_above) == ("saddle", "minimum")
    assert threshold("abs", "abs", k, degree=200, method="series").beta_c == pytest.approx(ref, abs=NONPOLY_TOL)


def tanh_nolin_lambda(k, beta, n=160):   # converged: 80 -> 160 nodes changes beta_c by 2e-8, 160 -> 320 by 1e-13
    """f = tanh - c_1 z (no h_1 part).  Price's theorem, phi'(t) = E[f'(X) f'(Y)],
    phi''(t) = E[f''(X) f''(Y)] with corr(X, Y) = t, by 2-d Gauss-Hermite quadrature
    (independent of the Hermite-series route)."""
    x, wts = np.polynomial.hermite_e.hermegauss(n)
    wts = wts / math.sqrt(2 * math.pi)
    c1 = float(np.sum(wts * np.tanh(x) * x))
    c = math.sqrt((1 + (k - 1) * beta) / k)
    X = x[:, None]
    Y = c * x[:, None] + math.sqrt(1 - c * c) * x[None, :]
    W = wts[:, None] * wts[None, :]

    def d1(z):
        return 1 / np.cosh(z) ** 2 - c1

    def d2(z):
        return -2 * np.tanh(z) / np.cosh(z) ** 2

    dphi = np.sum(W * d1(X) * d1(Y))
    d2phi = np.sum(W * d2(X) * d2(Y))
    return k * c * dphi - (1 - beta) * d2phi


@pytest.mark.parametrize("k", [2, 3, 5])
def test_smooth_nonpolynomial_against_price_quadrature(k):
    from scipy.optimize import brentq

    from popdyn.activations import get_activation

    c1 = get_activation("tanh").coefficients(1)[1]
    f = get_activation(lambda z: np.tanh(z) - c1 * z, name="tanh_minus_linear")
    ref = brentq(lambda b: tanh_nolin_lambda(k, b), 0.05, 0.9, xtol=1e-15)
    res = threshold(f, f, k)
    assert res.method == "hessian" and (res.kind_below, res.kind_above) == ("saddle", "minimum")
    assert res.beta_c == pytest.approx(ref, abs=NONPOLY_TOL)
    assert res.error_estimate < 1e-9


@pytest.mark.parametrize("k", [2, 3, 10])
def test_relu_has_no_transition(k):
    """The h_1 overlap keeps the average point a minimum; closed-form kernel confirms it:
    phi' = 1/2 - arccos(t)/(2 pi), phi'' = 1/(2 pi sqrt(1 - t^2))."""
    res = threshold("relu", "relu", k)
    assert res.beta_c is None and res.kind_below == res.kind_above == "minimum"
    for b in np.linspace(0, 0.99, 100):
        c = math.sqrt((1 + (k - 1) * b) / k)
        lam = k * c * (0.5 - math.acos(c) / (2 * math.pi)) - (1 - b) / (2 * math.pi * math.sqrt(1 - c * c))
        assert lam > 0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_negative_overlap_gives_saddle_to_maximum(k):
    """tanh has c_3 < 0, so phi = c_3(tanh) t^3: same beta_c, kinds flip to saddle -> maximum."""
    res = threshold("tanh", "he3", k)
    assert res.beta_c == pytest.approx(1 / (k + 1), abs=NUMERIC_TOL)
    assert (res.kind_below, res.kind_above) == ("saddle", "maximum")


# --------------------------------------------------------------------------------------
# special cases and bad input
# --------------------------------------------------------------------------------------
def test_k_equal_one_has_no_threshold():
    res = threshold("he3", "he3", 1)
    assert res.beta_c is None and res.method == "none" and res.kind_below == "minimum"


def test_pure_h2_threshold_at_zero():
    res = threshold("he2", "he2", 3)
    assert res.beta_c == 0.0 and (res.kind_below, res.kind_above) == ("saddle", "minimum")
    assert threshold("he2", "he2", 3, method="series").beta_c == pytest.approx(0.0, abs=1e-12)


def test_several_sign_changes_warn():
    """h_3 + h_8 with gamma_8 = -1/2 < 0: lambda_par is - / + / - on [0, 1)."""
    s, t = "hermite:0,0,0,1,0,0,0,0,1", "hermite:0,0,0,1,0,0,0,0,-0.5"
    with pytest.warns(UserWarning, match="changes sign 2 times"):
        ex = threshold(s, t, 3)
    with pytest.warns(UserWarning, match="changes sign 2 times"):
        nu = threshold(s, t, 3, method="series")
    assert len(ex.roots) == 2 and ex.beta_c == ex.roots[0]
    np.testing.assert_allclose(nu.roots, ex.roots, atol=NUMERIC_TOL)
    cur = smallest_eigenvalue_curve(s, t, 3, [0.05, 0.5, 0.99])   # roots 0.0845, 0.9226
    assert cur.smallest[0] < 0 < cur.smallest[1] and cur.smallest[2] < 0


def test_as_dict_is_json():
    res = threshold("hermite:0,0,0,1,1", "hermite:0,0,0,1,1", 3)
    assert isinstance(res, ThresholdResult)
    dct = json.loads(json.dumps(res.as_dict()))
    assert {"beta_c", "kind_below", "kind_above", "exact", "method"} <= set(dct)
    assert dct["exact"].startswith("CRootOf") and dct["method"] == "exact"
    assert json.dumps(threshold("relu", "relu", 3).as_dict())


def test_a_star_flips_kinds_not_beta_c():
    pos, neg = threshold("he3", "he3", 3), threshold("he3", "he3", 3, a_star=-2.0)
    assert pos.beta_c == neg.beta_c
    assert (neg.kind_below, neg.kind_above) == ("saddle", "maximum")


def test_bad_input():
    with pytest.raises(ValueError, match="`k`"):
        threshold("he3", "he3", 0)
    with pytest.raises(TypeError, match="`k`"):
        threshold("he3", "he3", 2.5)
    with pytest.raises(ValueError, match="`method`"):
        threshold("he3", "he3", 3, method="bisect")
    with pytest.raises(ValueError, match="exact"):
        threshold("relu", "relu", 3, method="exact")
    with pytest.raises(ValueError, match="share no Hermite degree"):
        threshold("he3", "he4", 3)
    with pytest.raises(ValueError, match="`a_star`"):
        threshold("he3", "he3", 3, a_star=[1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="`a_star`"):
        threshold("he3", "he3", 3, a_star=0.0)
    with pytest.raises(TypeError, match="`teacher`"):
        threshold("he3", ["he3", "he4"], 2)
    with pytest.raises(ValueError, match=r"`betas\[1\]`"):
        smallest_eigenvalue_curve("he3", "he3", 3, [0.2, 1.0])
    with pytest.raises(ValueError, match=r"`betas\[0\]`"):
        smallest_eigenvalue_curve("he3", "he3", 3, [-0.5])        # beta > -1/(k-1) required
    with pytest.raises(ValueError, match="`k`"):
        smallest_eigenvalue_curve("he3", "he3", 1, [0.2])
    with pytest.raises(ValueError, match="`beta`"):
        average_overlap(3, 1.0)
