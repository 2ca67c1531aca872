"""The SQ side of the additive model (arXiv 2406.11828): scalings and superorthogonal links.

Independent routes: exact rational expectations against Gauss-Hermite quadrature in double
precision (low degrees, where it is exact to rounding), the exact definiteness certificate
against the numerical search and against floating-point eigenvalues.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import sympy

from popdyn.hermite import h_values
from popdyn.models.additive_sq import (MAX_DEGREE, csq_lower_bound, find_superorthogonal, gradient_sample_complexity,
                                       second_power_certificate, superorthogonality_order)

#: Gauss-Hermite quadrature with 60 nodes is exact for degree <= 119; at the low degrees below the
#: only error is double-precision rounding of terms up to ~1e4.
QUAD_ATOL = 1e-9


def _quad_expectations(power_coeffs, p, max_power):
    """E[f^j h_i] by Gauss-Hermite quadrature, f given by power-basis coefficients."""
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / math.sqrt(2 * math.pi)
    f = np.polynomial.polynomial.polyval(x, power_coeffs)
    H = h_values(x, p)
    return {(j, i): float(w @ (f**j * H[i])) for j in range(1, max_power + 1) for i in range(1, p)}


def test_scalings():
    assert gradient_sample_complexity(20, 400, 3) == 20 * 400**2
    assert csq_lower_bound(20, 400, 3) == pytest.approx(20 * 400**1.5)
    # the gap n_GD / tau^-2 = d^(p/2 - 1)
    assert gradient_sample_complexity(7, 1000, 4) / csq_lower_bound(7, 1000, 4) == pytest.approx(1000.0)


@pytest.mark.parametrize("fn", [gradient_sample_complexity, csq_lower_bound])
@pytest.mark.parametrize("args, match", [((0, 10, 3), "`M`"), ((5, -1, 3), "`d`"), ((5, 10, 0), "`p`"),
                                         ((5, 10.5, 3), "`d`"), ((True, 10, 3), "`M`")])
def test_scalings_refuse_bad_sizes(fn, args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fn(*args)


@pytest.mark.parametrize("spec, p, order", [
    ("poly:z**3 - 3*z", 3, 1),             # He_3: E[He_3^2 h_2] = 18/sqrt(2) != 0
    ("poly:z", 2, 0),                      # information exponent 1 < p
    ("poly:z**2 - 1", 2, math.inf),        # even link, p = 2: every E[f^j h_1] vanishes
    ("poly:z**2 - 1", 3, 0),               # E[f h_2] != 0
    ("poly:z**3", 2, 0),
])
def test_order_of_simple_links(spec, p, order):
    assert superorthogonality_order(spec, p).order == order


@pytest.mark.parametrize("spec, p", [("poly:z**3 - 3*z + z**5/7", 3), ("poly:2*z**4 - z**2/3 + 1/5", 4),
                                     ("poly:z**2 - 1 + z**3/2", 3)])
def test_exact_values_match_quadrature(spec, p):
    res = superorthogonality_order(spec, p, max_power=4)
    expr = sympy.sympify(spec[5:], locals={"z": sympy.Symbol("z")})
    power = [float(c) for c in reversed(sympy.Poly(expr).all_coeffs())]
    quad = _quad_expectations(power, p, 4)
    for key, value in res.values.items():
        assert value == pytest.approx(quad[key], abs=QUAD_ATOL * max(1.0, abs(quad[key])))


def test_input_forms_agree():
    # the same polynomial as a spec, a sympy expression, exact and float Hermite coefficients
    z = sympy.Symbol("z")
    c = [0, 0, 0, Fraction(1, 2), 0, Fraction(-1, 3)]                  # h_3/2 - h_5/3
    expr = sum(ci * sympy.hermite_prob(k, z) / sympy.sqrt(sympy.factorial(k)) for k, ci in enumerate(c))
    a = superorthogonality_order(c, 3)
    b = superorthogonality_order([float(x) for x in c], 3)
    s = superorthogonality_order(expr, 3)
    assert a.order == b.order == s.order
    assert not (a.exact or b.exact or s.exact)                     # sqrt(k!) makes the power basis irrational
    assert superorthogonality_order("poly:z**3/2 - z", 3).exact
    for key in a.values:
        assert b.values[key] == pytest.approx(a.values[key], rel=1e-12, abs=1e-12)


def test_printed_degree_21_link_has_order_three():
    table = {3: 0.243859879557, 5: -0.432120827122, 7: 0.513570919942, 9: -0.486204966997, 11: 0.386381849366,
             13: -0.269423548697, 15: 0.153603956930, 17: -0.083365402021, 19: 0.034536531184, 21: -0.006072086140}
    c = [0.0] * 22
    for k, v in table.items():
        c[k] = v
    res = superorthogonality_order(c, 3)
    assert res.order == 3
    j, i, value, _ = res.violation
    assert (j, i) == (4, 2) and value == pytest.approx(5.40905e7, rel=1e-5)
    # claimed at a precision the table does not have, the link is not even of order 2
    assert superorthogonality_order(c, 3, rtol=1e-16).order < 3


@pytest.mark.parametrize("degree, reachable", [(13, False), (15, False), (17, True), (21, True)])
def test_second_power_certificate_flips_between_15_and_17(degree, reachable):
    cert = second_power_certificate(3, degree)
    assert cert.reachable is reachable
    # the exact decision agrees with the floating-point spectrum, which is far from 0 here
    assert (cert.smallest_eigenvalue < 0) is reachable
    assert cert.largest_eigenvalue > 0


def test_certificate_bounds_the_search():
    # where the form is definite, no unit f gets E[f^2 h_2] below its smallest eigenvalue
    cert = second_power_certificate(3, 15)
    res = find_superorthogonal(3, 2, 15, restarts=5, rng=0)
    assert not res.found
    assert res.check.values[(2, 2)] >= cert.smallest_eigenvalue * (1 - 1e-9)      # at the unit-norm f


@pytest.mark.parametrize("seed", range(5))
def test_search_finds_order_three_at_degree_19(seed):
    res = find_superorthogonal(3, 3, 19, rng=seed)
    assert res.found and res.check.order == 3
    assert res.coefficients[:3].tolist() == [0, 0, 0] and not np.any(res.coefficients[4::2])   # odd, IE 3
    assert float(np.sum(res.coefficients**2)) == pytest.approx(1.0, abs=1e-12)
    # independent check of the conditions by double-precision quadrature
    x, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / math.sqrt(2 * math.pi)
    H = h_values(x, 19)
    f = res.coefficients @ H
    assert abs(w @ (f**2 * H[2])) < 1e-8 and abs(w @ (f**3 * H[1])) < 1e-6 * math.sqrt(w @ f**6)


@pytest.mark.parametrize("call, match", [
    (lambda: superorthogonality_order("poly:z**3", 1), "`p`"),
    (lambda: superorthogonality_order("z**3", 3), "poly:"),
    (lambda: superorthogonality_order("poly:z**3 + __import__('os')", 3), "spec"),
    (lambda: superorthogonality_order("poly:0", 3), "zero polynomial"),
    (lambda: superorthogonality_order([], 3), "at least one"),
    (lambda: superorthogonality_order([0, float("nan")], 3), "finite"),
    (lambda: superorthogonality_order(["a"], 3), "real numbers"),
    (lambda: superorthogonality_order(3.0, 3), "sequence"),
    (lambda: superorthogonality_order(sympy.sin(sympy.Symbol("z")), 3), "polynomial"),
    (lambda: superorthogonality_order(sympy.Symbol("x") * sympy.Symbol("y"), 3), "one variable"),
    (lambda: superorthogonality_order([0.0] * (MAX_DEGREE + 2) + [1.0], 3), "MAX_DEGREE"),
    (lambda: superorthogonality_order("poly:z**3", 3, max_power=0), "`max_power`"),
    (lambda: superorthogonality_order([0, 0, 0, 1.0], 3, rtol=-1.0), "`rtol`"),
    (lambda: second_power_certificate(3, 15, i=3), "`i`"),
    (lambda: second_power_certificate(3, 2), "`degree`"),
    (lambda: second_power_certificate(4, 4, parity="odd"), "parity"),
    (lambda: find_superorthogonal(3, 2, 15, parity="prime"), "`parity`"),
    (lambda: find_superorthogonal(3, 0, 15), "`J`"),
    (lambda: find_superorthogonal(3, 2, 15, restarts=0), "`restarts`"),
])
def test_bad_input_is_refused_with_the_argument_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
