"""Hermite engine: recurrence, conversions, calculus, product, dilation, quadrature."""

import math

import numpy as np
import pytest
from numpy.polynomial import hermite_e as H

from popdyn import NumericalError
from popdyn.hermite import (
    HermiteSeries,
    exact_hermite_coefficients,
    gaussian_expectation,
    h_values,
    hermite_coefficients,
    hermite_to_power,
    power_to_hermite,
)

# Reference table (probabilists' Hermite, power basis, lowest degree first)
He3 = [0, -3, 0, 1]
He4 = [3, 0, -6, 0, 1]
He6 = [-15, 0, 45, 0, -15, 0, 1]

#: float64 rounding of sums of O(1) terms
ROUND = 1e-12
#: Gauss–Hermite with 200 nodes integrates polynomials of degree <= 399 exactly; the
#: orthonormality check is limited by rounding in h_k (k <= 60) only.
ORTHO_TOL = 1e-10


def test_reference_table():
    for k, ref in [(3, He3), (4, He4), (6, He6)]:
        z = np.linspace(-3, 3, 13)
        np.testing.assert_allclose(h_values(z, k)[k] * math.sqrt(math.factorial(k)), np.polynomial.polynomial.polyval(z, ref),
                                   rtol=ROUND, atol=ROUND, err_msg=f"At k={k}")


def test_orthonormality_to_degree_60():
    x, w = H.hermegauss(200)
    w = w / math.sqrt(2 * math.pi)
    V = h_values(x, 60)
    gram = (V * w) @ V.T
    np.testing.assert_allclose(gram, np.eye(61), atol=ORTHO_TOL)


def test_no_overflow_high_degree():
    vals = h_values(np.array([0.0, 5.0, 30.0]), 300)
    assert np.all(np.isfinite(vals))


@pytest.mark.parametrize("power", [[1.0], [0, 1.0], He3, He4, [0.5, -2.0, 0.3, 0.0, 1.5, -0.2]])
def test_power_roundtrip(power):
    c = power_to_hermite(power)
    np.testing.assert_allclose(hermite_to_power(c)[: len(power)], power, atol=ROUND)


def test_exact_coefficients_sympy():
    import sympy

    z = sympy.Symbol("z")
    # z^3 = He3 + 3 He1  ->  c1 = 3, c3 = sqrt(6)
    assert exact_hermite_coefficients(z**3) == (0, 3, 0, sympy.sqrt(6))
    # Parseval exactly: E[z^6] = 15
    c = exact_hermite_coefficients(z**3 + z**2)
    assert sympy.simplify(sum(x**2 for x in c) - (15 + 3)) == 0
    with pytest.raises(ValueError, match="not a polynomial"):
        exact_hermite_coefficients(sympy.exp(z))


@pytest.mark.parametrize("power", [He3, He4, [0.5, -2.0, 0.3, 0.0, 1.5, -0.2]])
def test_parseval_polynomials(power):
    s = HermiteSeries.from_power(power)
    x, w = H.hermegauss(60)
    w = w / math.sqrt(2 * math.pi)
    m2 = float(np.dot(w, np.polynomial.polynomial.polyval(x, power) ** 2))
    assert s.norm() ** 2 == pytest.approx(m2, rel=ROUND)
    assert s.tail_mass == 0.0


def test_evaluation_matches_power_basis():
    rng = np.random.default_rng(0)
    c = rng.standard_normal(9)
    s = HermiteSeries(c)
    z = np.linspace(-4, 4, 17)
    np.testing.assert_allclose(s(z), np.polynomial.polynomial.polyval(z, s.to_power()), rtol=1e-10, atol=1e-10)


def test_derivative_identity():
    rng = np.random.default_rng(1)
    c = rng.standard_normal(8)
    s = HermiteSeries(c)
    p = np.polynomial.Polynomial(s.to_power())
    z = np.linspace(-3, 3, 11)
    np.testing.assert_allclose(s.derivative()(z), p.deriv()(z), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s.derivative(2)(z), p.deriv(2)(z), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("m,n", [(0, 3), (2, 2), (3, 4), (5, 5), (7, 2)])
def test_product_identity(m, n):
    a = HermiteSeries(np.eye(m + 1)[m])
    b = HermiteSeries(np.eye(n + 1)[n])
    z = np.linspace(-3, 3, 13)
    np.testing.assert_allclose((a * b)(z), a(z) * b(z), rtol=1e-10, atol=1e-10, err_msg=f"At m={m}, n={n}")


def test_triple_product_reference():
    # theory/CONVENTIONS.md: E[He3^2 He2] = 36, E[He4^2 He2] = 192, E[He3 He4 He1] = 24
    def E(*ks):
        s = HermiteSeries(np.eye(ks[0] + 1)[ks[0]] * math.sqrt(math.factorial(ks[0])))
        for k in ks[1:]:
            s = s * HermiteSeries(np.eye(k + 1)[k] * math.sqrt(math.factorial(k)))
        return s.coefficients[0]

    assert E(3, 3, 2) == pytest.approx(36, rel=ROUND)
    assert E(4, 4, 2) == pytest.approx(192, rel=ROUND)
    assert E(3, 4, 1) == pytest.approx(24, rel=ROUND)
    assert E(3, 3, 3, 1) == pytest.approx(324, rel=ROUND)


@pytest.mark.parametrize("r", [0.3, 0.8, 1.0, 1.7, -1.2])
def test_dilation_identity(r):
    rng = np.random.default_rng(2)
    s = HermiteSeries(rng.standard_normal(7))
    z = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(s.dilate(r)(z), s(r * z), rtol=1e-10, atol=1e-10, err_msg=f"At r={r}")


def test_sympy_roundtrip():
    s = HermiteSeries.from_power(He4)
    back = HermiteSeries.from_sympy(s.to_sympy())
    np.testing.assert_allclose(back.coefficients, s.coefficients, atol=1e-12)


def test_quadrature_relu_beats_gauss_hermite():
    c, m2, err = hermite_coefficients(lambda z: np.maximum(z, 0), 4, breakpoints=[0.0])
    assert abs(c[0] - 1 / math.sqrt(2 * math.pi)) < 1e-14
    assert m2 == pytest.approx(0.5, abs=1e-14)
    x, w = H.hermegauss(80)
    gh = np.dot(w, np.maximum(x, 0)) / math.sqrt(2 * math.pi)
    assert abs(gh - 1 / math.sqrt(2 * math.pi)) > 1e-3  # the failure the design warns about


def test_quadrature_missing_breakpoint_reports_error():
    with pytest.raises(NumericalError, match="breakpoints"):
        hermite_coefficients(lambda z: np.sign(z - 0.123) * np.abs(z - 0.123) ** 0.5, 10)


def test_not_square_integrable():
    with pytest.raises(ValueError, match="square-integrable"):
        hermite_coefficients(lambda z: np.exp(z**2), 5)
    with pytest.raises(ValueError, match="square-integrable"):
        hermite_coefficients(lambda z: np.exp(z**2 / 4), 5)


def test_gaussian_expectation():
    val, err = gaussian_expectation(lambda z: np.abs(z) ** 3, breakpoints=[0.0])
    assert val == pytest.approx(2 * math.sqrt(2 / math.pi), abs=1e-13)


def test_bad_inputs():
    with pytest.raises(ValueError, match="`degree`"):
        h_values(0.0, -1)
    with pytest.raises(TypeError, match="`degree`"):
        h_values(0.0, 2.5)
    with pytest.raises(ValueError, match="finite"):
        HermiteSeries([0.0, np.nan])
    with pytest.raises(ValueError, match="Parseval"):
        HermiteSeries([1.0, 1.0], second_moment=1.0)
