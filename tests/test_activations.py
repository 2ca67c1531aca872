"""Activation registry: values, derivatives, coefficients against independent references."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from popdyn import NumericalError, get_activation
from popdyn.activations import _NAMES

REF = json.loads((Path(__file__).parent / "data" / "reference_coefficients.json").read_text())

#: Issue requirement: numeric coefficients accurate to 1e-12 for every degree <= 30.
COEFF_TOL = 1e-12
#: Central differences with step 1e-5 have truncation error ~ h^2 f'''/6 ~ 1e-10.
FD_TOL = 1e-7

ALL_SPECS = list(_NAMES) + ["he0", "he3", "he7", "hermite:0.1,0,1,0.5", "poly:z**3-3*z"]


@pytest.fixture(params=ALL_SPECS)
def act(request):
    return get_activation(request.param)


@pytest.mark.parametrize("name", sorted(REF["coefficients"]))
def test_coefficients_vs_mpmath(name):
    ref = np.array([float(c) for c in REF["coefficients"][name]])
    got = get_activation(name).coefficients(REF["degree"])
    err = np.abs(got - ref)
    assert err.max() <= COEFF_TOL, f"{name}: max error {err.max():.2e} at k={int(err.argmax())}"
    assert get_activation(name).second_moment == pytest.approx(float(REF["second_moment"][name]), abs=COEFF_TOL)


def test_theory_table_values():
    # theory/CONVENTIONS.md (15 digits, mpmath)
    np.testing.assert_allclose(get_activation("relu").coefficients(8),
                               [0.398942280401433, 0.5, 0.282094791773878, 0, -0.0814337519838200, 0,
                                0.0446031029038193, 0, -0.0298017016880560], atol=1e-14)
    assert get_activation("erf").coefficients(1)[1] == pytest.approx(1 / math.sqrt(math.pi), abs=1e-15)
    assert get_activation("erf").second_moment == pytest.approx(1 / 3, abs=1e-15)
    assert get_activation("sigmoid").coefficients(3)[3] == pytest.approx(-0.0254732579073234, abs=1e-14)


def test_closed_forms_vs_numeric_route():
    from popdyn.hermite import hermite_coefficients

    for name in ["relu", "abs", "sign", "erf"]:
        a = get_activation(name)
        num, _, _ = hermite_coefficients(a.fn, 40, breakpoints=a.breakpoints)
        np.testing.assert_allclose(a.coefficients(40), num, atol=COEFF_TOL, err_msg=name)


def test_exact_closed_forms_match_floats():
    for name in ["relu", "abs", "sign", "erf"]:
        a = get_activation(name)
        exact = a.exact_coefficients(12)
        np.testing.assert_allclose([float(c) for c in exact], a.coefficients(12), atol=1e-15, err_msg=name)


def test_every_activation_has_consistent_derivative(act):
    z = np.array([-2.3, -1.1, -0.4, 0.35, 0.9, 1.7, 2.6])  # away from breakpoints
    h = 1e-5
    fd = (act(z + h) - act(z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(z), fd, atol=FD_TOL, rtol=FD_TOL, err_msg=act.name)


def test_every_activation_series_converges(act):
    s = act.series(30)
    assert s.tail_mass >= 0
    assert s.tail_mass < 0.1  # sign has the heaviest tail of the registry: 0.093 at degree 30
    z = np.linspace(-1, 1, 5) + 0.0123
    if act.is_polynomial:
        np.testing.assert_allclose(s(z), act(z), atol=1e-12)


def test_polynomial_specs_are_exact():
    import sympy

    a = get_activation("poly:z**3-3*z")
    assert a.is_polynomial and a.degree == 3
    assert a.exact_coefficients(3) == (0, 0, 0, sympy.sqrt(6))
    b = get_activation("he3")
    np.testing.assert_allclose(a.coefficients(5), math.sqrt(6) * b.coefficients(5), atol=1e-15)
    c = get_activation("hermite:0.1,0,1,0.5")
    assert c.exact_coefficients(3)[0] == sympy.Rational(1, 10)


def test_callable_and_sympy_inputs():
    import sympy

    z = sympy.Symbol("z")
    relu_sym = get_activation(sympy.Max(z, 0))
    np.testing.assert_allclose(relu_sym.coefficients(10), get_activation("relu").coefficients(10), atol=COEFF_TOL)
    cube = get_activation(z**3)
    assert cube.is_polynomial
    f = get_activation(lambda x: np.abs(x - 0.5), breakpoints=[0.5], name="shifted_abs")
    c = f.coefficients(6)
    assert np.all(np.isfinite(c))


def test_dilation():
    for name in ["relu", "tanh", "he3", "sign"]:
        a = get_activation(name)
        for r in [0.5, 2.0]:
            from popdyn.hermite import hermite_coefficients

            ref, _, _ = hermite_coefficients(lambda x: a(r * x), 12, breakpoints=[b / r for b in a.breakpoints])
            np.testing.assert_allclose(a.dilate(r).coefficients(12), ref, atol=COEFF_TOL, err_msg=f"{name} r={r}")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("reluu", "unknown activation 'reluu'; valid names: relu"),
        ("hermite:1,,2", "malformed spec"),
        ("hermite:a,b", "malformed spec"),
        ("hermite:1,inf", "malformed spec"),
        ("poly:exp(z)", "not a polynomial"),
        ("poly:", "malformed spec"),
        ("poly:z+", "malformed spec"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        get_activation(spec)


def test_bad_callables():
    with pytest.raises(ValueError, match="square-integrable"):
        get_activation(lambda z: np.exp(z**2))
    with pytest.raises(TypeError, match="`spec`"):
        get_activation(3.0)
    with pytest.raises(TypeError, match="`degree`"):
        get_activation("relu").coefficients(2.5)
    with pytest.raises(ValueError, match="`degree`"):
        get_activation("relu").coefficients(-1)
    with pytest.raises(NumericalError):
        get_activation(lambda z: np.abs(z - 0.3) ** 0.5, name="sqrt_kink").coefficients(20)
