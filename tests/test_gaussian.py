"""Closed forms of popdyn.gaussian against its quadrature fallback and against Monte Carlo.

Every closed form registered in ``CLOSED_FORMS`` (committee families ``i2``, ``j2``,
``i3``, ``i4``) and every tabulated pair of ``pair_closed_form`` is checked two ways:
against the breakpoint-aware quadrature fallback (independent numerics, tolerance from its
own accuracy target) and against Monte Carlo with a fixed seed (tolerance from the
standard error).  Polynomials (exact Gauss–Hermite route) are checked against Wick's
theorem.
"""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

from popdyn import gaussian as g
from popdyn.activations import get_activation

# --------------------------------------------------------------------------------------
# named tolerances
# --------------------------------------------------------------------------------------
#: The fallback returns its finer rule and promises |error| <= FALLBACK_TOL * max(1, |v|)
#: (its error estimate is the difference of two successive rules, a conservative bound).
QUAD_TOL = g.FALLBACK_TOL
#: Monte Carlo: a correct closed form lies within 5 standard errors of the sample mean
#: except with probability 6e-7 per check (Gaussian approximation of the mean of N samples).
MC_SIGMAS = 5.0
#: Samples per Monte Carlo check: SE ~ 2e-3 for O(1) integrands, fast (< 0.05 s per check).
MC_SAMPLES = 100_000
#: Exact routes (closed form, Gauss–Hermite vs Wick) differ only by floating-point rounding
#: of O(1) sums of a few terms.
EXACT_TOL = 1e-13

SEED = 20240611

#: Covariances used by every check: non-unit variances, non-trivial correlations (4 x 4;
#: families with fewer fields use the leading block).
_A = np.array([[1.0, 0.0, 0.0, 0.0], [0.45, 0.9, 0.0, 0.0], [-0.3, 0.5, 1.1, 0.0], [0.2, -0.4, 0.35, 0.7]])
COV4 = _A @ _A.T
#: Factor slots of each family: "v" = value, "d" = derivative, "x" = the field itself.
SLOTS = {"i2": "vv", "j2": "dd", "i3": "dxv", "i4": "ddvv"}


def _factors(name: str, kind: str) -> list:
    out = []
    for s in SLOTS[kind]:
        if s == "v":
            out.append(g.Factor.value(name))
        elif s == "d":
            out.append(g.Factor.derivative(name))
        else:
            out.append(g.Factor.linear())
    return out


def _monte_carlo(C, factors, seed=SEED):
    """Sample mean and standard error of prod_a f_a(x_a), x ~ N(0, C)."""
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(C)
    x = rng.standard_normal((MC_SAMPLES, C.shape[0])) @ L.T
    prod = np.ones(MC_SAMPLES)
    for a, f in enumerate(factors):
        prod = prod * f.fn(x[:, a])
    return float(prod.mean()), float(prod.std(ddof=1) / np.sqrt(MC_SAMPLES))


REGISTERED = [(name, kind) for name, table in g.CLOSED_FORMS.items() for kind in table]


@pytest.mark.parametrize("name,kind", REGISTERED)
def test_registered_closed_form_against_quadrature(name, kind):
    n = len(SLOTS[kind])
    C = COV4[:n, :n]
    closed = float(g.CLOSED_FORMS[name][kind](C))
    quad = float(g.gaussian_product_expectation(C, _factors(name, kind)))
    assert abs(closed - quad) <= QUAD_TOL * max(1.0, abs(closed)), (closed, quad)


@pytest.mark.parametrize("name,kind", REGISTERED)
def test_registered_closed_form_against_monte_carlo(name, kind):
    n = len(SLOTS[kind])
    C = COV4[:n, :n]
    closed = float(g.CLOSED_FORMS[name][kind](C))
    mean, se = _monte_carlo(C, _factors(name, kind))
    assert abs(closed - mean) <= MC_SIGMAS * se, (closed, mean, se)


@pytest.mark.parametrize("name,kind", REGISTERED)
def test_closed_forms_are_vectorised(name, kind):
    n = len(SLOTS[kind])
    C = COV4[:n, :n]
    batch = np.stack([C, 0.5 * C, 2.0 * C])
    vals = g.CLOSED_FORMS[name][kind](batch)
    assert vals.shape == (3,)
    for b in range(3):
        assert vals[b] == float(g.CLOSED_FORMS[name][kind](batch[b]))


def test_closed_form_lookup_matches_registry_and_refuses_lookalikes():
    assert g.closed_form("i4", "erf", "erf", "erf", "erf")[1] is g.erf_i4
    assert g.closed_form("i4", "relu", "relu", "relu", "relu")[1] is g.relu_i4  # through orthant probabilities
    assert g.closed_form("i4", "tanh", "tanh", "tanh", "tanh") is None
    assert g.closed_form("i2", "relu", "erf") is None
    fake = get_activation(lambda z: np.maximum(z, 0.0), name="relu", breakpoints=(0.0,))
    assert g.closed_form("i2", fake, fake) is None  # a user callable named "relu" is not the registry's
    with pytest.raises(ValueError, match="`kind`"):
        g.closed_form("i5", "erf")


# --------------------------------------------------------------------------------------
# pair closed forms in the (rho, r_w, r_v) parametrisation
# --------------------------------------------------------------------------------------
RHO, RW, RV = 0.35, 1.3, 0.7


def _pair_cov(rho=RHO, rw=RW, rv=RV):
    return np.array([[rw * rw, rho * rw * rv], [rho * rw * rv, rv * rv]])


@pytest.mark.parametrize("pair", g.closed_form_pairs())
def test_pair_closed_form_against_quadrature_and_monte_carlo(pair):
    a, b = (get_activation(n) for n in pair)
    found = g.closed_form_pair(a, b)
    assert found is not None
    value = float(g.pair_closed_form(found, np.array(RHO), np.array(RW), np.array(RV))[0])
    facs = [g.Factor.value(a), g.Factor.value(b)]
    quad = float(g.gaussian_product_expectation(_pair_cov(), facs))
    assert abs(value - quad) <= QUAD_TOL * max(1.0, abs(value)), (value, quad)
    mean, se = _monte_carlo(_pair_cov(), facs)
    assert abs(value - mean) <= MC_SIGMAS * se, (value, mean, se)


@pytest.mark.parametrize("pair", [p for p in g.closed_form_pairs() if p[0] != p[1]])
def test_pair_closed_form_is_symmetric_under_swap(pair):
    a, b = (get_activation(n) for n in pair)
    fwd = g.pair_closed_form(g.closed_form_pair(a, b), np.array(RHO), np.array(RW), np.array(RV))
    bwd = g.pair_closed_form(g.closed_form_pair(b, a), np.array(RHO), np.array(RV), np.array(RW))
    assert abs(float(fwd[0]) - float(bwd[0])) <= EXACT_TOL
    assert abs(float(fwd[2]) - float(bwd[3])) <= EXACT_TOL  # d/dr_w of (a, b) = d/dr_v of (b, a)


def test_pair_and_covariance_forms_agree():
    """The two parametrisations of erf/erf and relu/relu (kernel form vs committee I2)."""
    C = _pair_cov()
    for name, fn in (("erf", g.erf_i2), ("relu", g.relu_i2)):
        act = get_activation(name)
        kv = float(g.pair_closed_form(g.closed_form_pair(act, act), np.array(RHO), np.array(RW),
                                      np.array(RV))[0])
        assert abs(kv - float(fn(C))) <= EXACT_TOL


# --------------------------------------------------------------------------------------
# polynomials: the exact Gauss–Hermite route against Wick's theorem
# --------------------------------------------------------------------------------------
def test_polynomial_route_is_exact_by_wick():
    C = COV4
    x = g.Factor.linear()
    val, info = g.gaussian_product_expectation(C, [x, x, x, x], return_info=True)
    wick = C[0, 1] * C[2, 3] + C[0, 2] * C[1, 3] + C[0, 3] * C[1, 2]
    assert info["exact"]
    assert abs(float(val) - wick) <= EXACT_TOL
    # "he2" is the normalised h_2(z) = (z^2 - 1)/sqrt(2); by Wick
    # E[(x0^2 - 1) x1 x2] = C00 C12 + 2 C01 C02 - C12
    he2 = g.Factor.value("he2")
    val3 = float(g.gaussian_product_expectation(C[:3, :3], [he2, x, x]))
    wick3 = (C[0, 0] * C[1, 2] + 2 * C[0, 1] * C[0, 2] - C[1, 2]) / np.sqrt(2.0)
    assert abs(val3 - wick3) <= EXACT_TOL


def test_polynomial_route_against_monte_carlo():
    C = COV4
    facs = [g.Factor.derivative("he3"), g.Factor.derivative("he3"), g.Factor.value("he2"), g.Factor.value("identity")]
    exact = float(g.gaussian_product_expectation(C, facs))
    mean, se = _monte_carlo(C, facs)
    assert abs(exact - mean) <= MC_SIGMAS * se, (exact, mean, se)


# --------------------------------------------------------------------------------------
# layering
# --------------------------------------------------------------------------------------
def test_gaussian_is_a_foundation_module():
    """popdyn.gaussian imports neither a model nor an engine (foundation never imports them)."""
    src = pathlib.Path(g.__file__).read_text(encoding="utf-8")
    forbidden = {"models", "ode", "simulate", "compare", "plot", "cli", "verify"}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom):
            mod = (node.module or "").split(".")
            names = {a.name for a in node.names}
            if node.level > 0:
                assert not (set(mod) & forbidden) and not (mod == [""] and names & forbidden), ast.dump(node)
            else:
                assert not (mod[0] == "popdyn" and set(mod[1:]) & forbidden), ast.dump(node)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                assert not (parts[0] == "popdyn" and set(parts[1:]) & forbidden), a.name


def test_old_modules_share_the_foundation_objects():
    from popdyn import kernels
    from popdyn.models import committee_integrals as ci

    for name in ("Factor", "gaussian_product_expectation", "erf_i2", "erf_j2", "erf_i3", "erf_i4",
                 "relu_i2", "relu_j2", "relu_i3", "relu_i4", "FALLBACK_TOL", "RULE_NODES", "MAX_NODES"):
        assert getattr(ci, name) is getattr(g, name), name
    assert kernels.closed_form_pairs is g.closed_form_pairs
    assert kernels._closed_form is g.pair_closed_form


# --------------------------------------------------------------------------------------
# orthant probabilities: the closed forms of n <= 3 fields against quadrature
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_orthant_probability_against_quadrature(n):
    """P(x > 0) = E[prod Theta(x_a)]: Sheppard's and the trivariate formula (n <= 3) and
    Plackett's reduction (n = 4) against the nested quadrature of step functions."""
    C = COV4[:n, :n]
    quad = float(g.gaussian_product_expectation(C, [g.Factor.derivative("relu")] * n, tol=1e-11))
    assert abs(float(g.orthant_probability(C)) - quad) <= 1e-11


def test_orthant_plan_matches_the_covariance_functions():
    """One plan over a 4 x 4 covariance: probabilities and moments of several indicator sets
    (the committee's use) equal the batched covariance functions."""
    C = COV4
    items = [(0, (0, 1, 2, 3), 2, 3), (0, (0, 2, 3), 2, 3), (0, (1, 3), None, None), (0, (0, 2), 1, 2)]
    vals = g.OrthantPlan(16, 4, items)(C.reshape(-1))
    assert abs(vals[0] - float(g.relu_i4(C))) <= EXACT_TOL
    assert abs(vals[1] - float(g.relu_i4(C[np.ix_([0, 0, 2, 3], [0, 0, 2, 3])]))) <= EXACT_TOL
    assert abs(vals[2] - float(g.relu_j2(C[np.ix_([1, 3], [1, 3])]))) <= EXACT_TOL
    assert abs(vals[3] - float(g.relu_i3(C[:3, :3]))) <= EXACT_TOL


def test_quadrature_keeps_small_conditional_correlations():
    """Regression: the echelon factor dropped off-diagonal entries below 1e-6 (ZERO_REL), i.e. a
    conditional correlation of 9e-7 here, and returned I4(a, a, c, d) 1.1e-7 off with an error
    estimate of 1e-16.  The orthant closed form is the independent route (mpmath agrees to 1e-18)."""
    C3 = np.array([[9.35626077e-01, 4.10841747e-03, -2.05676041e-04],
                   [4.10841747e-03, 1.0, 0.0], [-2.05676041e-04, 0.0, 1.0]])
    C = C3[np.ix_([0, 0, 1, 2], [0, 0, 1, 2])]
    quad = float(g.gaussian_product_expectation(C, _factors("relu", "i4"), tol=1e-12))
    assert abs(quad - float(g.relu_i4(C))) <= 1e-13
