"""Tests for popdyn.models.reuse (batch-reuse SGD, d -> infinity drift; theory/lee2024/equations.md)."""

import math

import numpy as np
import pytest

from popdyn.errors import NumericalError
from popdyn.exponents import generative_exponent
from popdyn.models.reuse import (
    HE34,
    ReuseProblem,
    choose_students,
    predicted_samples,
    student_survey,
    tanh_logcosh,
)
from popdyn.models.single_index import SingleIndexProblem, escape_samples

# theory/lee2024/equations.md quotes 4 significant digits: half a unit in the last digit.
THEORY_4DIGIT_TOL = 5e-6
# ... and 3 significant digits for the log cosh numbers (+0.0633, -0.0986).
THEORY_3DIGIT_TOL = 5e-5
# Two quadrature routes (each refined to QUAD_TOL = 1e-10 relative to max(1, |value|)).
QUAD_AGREE_TOL = 1e-9
# The Chebyshev tables of SingleIndexProblem / the fast drift are accurate to 1e-8.
TABLE_TOL = 3e-8
# Exact polynomial coefficients evaluated in floating point vs quadrature: relative.
EXACT_VS_QUAD_RTOL = 1e-9

LOGCOSH = tanh_logcosh(0.0, 1.0)


# --------------------------------------------------------------------------------------
# construction and bad input
# --------------------------------------------------------------------------------------
def test_attributes_and_describe():
    p = ReuseProblem("tanh", "he3", reuse=3, interpolation=0.5, a_star=2.0)
    assert (p.reuse, p.interpolation, p.a_star, p.exact) == (3, 0.5, 2.0, False)
    assert p.student.name == "tanh" and p.teacher.name == "he3"
    assert p.information_exponent == 3
    d = p.describe()
    assert d["model"] == "reuse" and d["reuse"] == 3 and d["interpolation"] == 0.5
    assert ReuseProblem("he3", "he2").exact


@pytest.mark.parametrize("reuse", [0, -1, 1.5])
def test_bad_reuse(reuse):
    with pytest.raises(ValueError, match="`reuse`"):
        ReuseProblem("tanh", "he3", reuse=reuse)


@pytest.mark.parametrize("xi", [0.0, 2.0, -0.5])
def test_bad_interpolation(xi):
    with pytest.raises(ValueError, match="`interpolation`"):
        ReuseProblem("tanh", "he3", interpolation=xi)


def test_bad_a_star_and_m():
    with pytest.raises(ValueError, match="`a_star`"):
        ReuseProblem("tanh", "he3", a_star=0.0)
    with pytest.raises(ValueError, match="`m`"):
        ReuseProblem("he3", "he3").drift(1.5, 0.1)
    with pytest.raises(ValueError, match="`eta_tilde`"):
        ReuseProblem("he3", "he3").drift(0.1, -0.1)


@pytest.mark.parametrize("call", [
    lambda p: p.drift_coefficients_expr(2),
    lambda p: p.signal_coefficients_expr(2),
    lambda p: p.drift(0.1, 0.5, method="exact"),
    lambda p: p.drift_coefficients(2, 0.5, method="exact"),
])
def test_exact_methods_on_tanh(call):
    with pytest.raises(ValueError, match="student 'tanh'.*not a polynomial"):
        call(ReuseProblem("tanh", "he3"))


def test_effective_exponent_needs_eta_for_numeric():
    with pytest.raises(ValueError, match="`eta_tilde`"):
        ReuseProblem("tanh", "he3").effective_exponent()


# --------------------------------------------------------------------------------------
# theory/lee2024/equations.md reference numbers
# --------------------------------------------------------------------------------------
def test_theory_tanh_he3_reuse():
    p = ReuseProblem("tanh", "he3", reuse=2)
    D = p.drift([0.0, 0.2], 0.5)
    assert abs(D[0] - (-0.05564)) < THEORY_4DIGIT_TOL
    assert abs(D[1] - (-0.09841)) < THEORY_4DIGIT_TOL


def test_theory_tanh_he3_fresh_steps():
    # F2 = two steps on fresh samples = 2 D_1 (per iteration of two samples)
    c = ReuseProblem("tanh", "he3", reuse=1).drift_coefficients(1, 0.5)
    assert abs(2 * c[0]) < 1e-12
    assert abs(2 * c[1] - (-0.11610)) < THEORY_4DIGIT_TOL


def test_theory_logcosh_he3_linear_coefficient():
    """The quoted +0.0633 is the secant D(m)/m at m = 0.03; the linear coefficient is 0.063850."""
    p = ReuseProblem(LOGCOSH, "he3", reuse=2)
    lc = p.linear_coefficient(0.5)
    assert abs(lc["D0"]) < 1e-12                       # he3 target, even student: D(0) = 0
    secant = float(p.drift(0.03, 0.5)) / 0.03
    assert abs(secant - 0.0633) < THEORY_3DIGIT_TOL
    # exact derivative by two independent quadrature routes (Mehler coefficients vs D(+-h))
    h = 1e-3
    fd = float(np.diff(p.drift([-h, h], 0.5))[0]) / (2 * h)
    d3 = p.drift_coefficients(3, 0.5)[3]
    assert abs(fd - d3 * h * h - lc["D1"]) < 1e-8         # central difference error is D_3 h^2
    assert abs(lc["D1"] - 0.0633) > 4e-4                  # ... and differs from the quoted rounded secant
    f2 = 2 * ReuseProblem(LOGCOSH, "he3", reuse=1).linear_coefficient(0.5)["D1"]
    assert abs(f2 - (-0.0986)) < THEORY_3DIGIT_TOL


# --------------------------------------------------------------------------------------
# exact vs quadrature, coefficient routes
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("student,teacher,reuse,xi", [
    ("he3", "he3", 2, 1.0),
    ("he2", "he4", 2, 0.7),
    ("poly:z**2+z**3/3", HE34, 2, 1.0),
    ("he3", "he3", 1, 0.4),
])
def test_exact_vs_quadrature(student, teacher, reuse, xi):
    p = ReuseProblem(student, teacher, reuse=reuse, interpolation=xi)
    m = np.array([-0.6, -0.1, 0.0, 0.3, 0.8])
    eta = 0.05
    ex = p.drift(m, eta)
    qu = p.drift(m, eta, method="quadrature")
    np.testing.assert_allclose(qu, ex, rtol=EXACT_VS_QUAD_RTOL, atol=1e-12)
    cq = p.drift_coefficients(4, eta, method="quadrature")
    ce = p.drift_coefficients(4, eta)
    np.testing.assert_allclose(cq, ce, rtol=EXACT_VS_QUAD_RTOL, atol=1e-11)


@pytest.mark.parametrize("student,teacher,reuse,xi", [
    ("he3", "he3", 2, 1.0),
    ("poly:z**2+z**3/3", HE34, 2, 0.5),
    ("poly:z**2+z**3", "poly:z**4-6*z**2+3", 2, 0.8),
])
def test_exact_stein_split_equals_mehler(student, teacher, reuse, xi):
    """D_j from Mehler on G_p t - m(G_p z + G_q) equals P_j - P_{j-2} - Q_{j-1} (Stein), exactly."""
    import sympy

    p = ReuseProblem(student, teacher, reuse=reuse, interpolation=xi)
    ex = p._exact()
    D, P, Q = ex["D"], ex["P"], ex["Q"]
    n = max(len(D), len(P) + 2, len(Q) + 1)

    def get(seq, j):
        return seq[j] if 0 <= j < len(seq) else 0

    for j in range(n):
        diff = sympy.expand(get(D, j) - (get(P, j) - get(P, j - 2) - get(Q, j - 1)))
        assert diff == 0, f"At j={j}"


def test_coefficients_vs_polynomial_fit():
    """tanh/he3: Mehler coefficients (independent (z,t)) vs a fit of D(m) (correlated (z,s) route)."""
    p = ReuseProblem("tanh", "he3", reuse=2)
    coef = p.drift_coefficients(8, 0.5)
    m = 0.08 * np.cos(np.pi * (np.arange(17) + 0.5) / 17)
    D = p.drift(m, 0.5)
    fit = np.polynomial.polynomial.polyfit(m, D, 8)
    # truncation of the degree-8 fit on |m| <= 0.08: D_9 0.08^9 ~ 1e-10 -> coefficient j error ~ 1e-10/0.08^j
    for j in range(4):
        assert abs(fit[j] - coef[j]) < 1e-9 / 0.08 ** j, f"At j={j}"
    # and the series reproduces D at m = 0.3 (Mehler converges; 30 terms)
    c30 = p.drift_coefficients(30, 0.5)
    assert abs(np.polynomial.polynomial.polyval(0.3, c30) - float(p.drift(0.3, 0.5))) < 1e-9


def test_exact_coefficients_expr():
    p = ReuseProblem("he3", "he3", reuse=1)
    # eta (1 - m^2) 3 m^2 - (eta^2/2) m C(m), C(m) = E[h3(t)^2 3 h2(z)^2] = 3 + 36 m^2 + ...
    assert [str(c) for c in p.drift_coefficients_expr(4)] == ["0", "-3*eta_tilde**2/2", "3*eta_tilde",
                                                              "-18*eta_tilde**2", "-3*eta_tilde"]
    # D_2(0) = (eta^3/2) E[y^3 t] E[sigma'^2 sigma'''] = (eta^3/2)(324/6^1.5)(18/sqrt 6) = 81 eta^3
    assert str(ReuseProblem("he3", "he3", reuse=2).drift_coefficients_expr(0)[0]) == "81*eta_tilde**3"


# --------------------------------------------------------------------------------------
# reuse = 1 is online SGD; the interpolation term
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("student,teacher", [("tanh", "he3"), ("he3", "he3"), ("erf", "he2"), ("sigmoid", "he4")])
def test_reuse1_is_single_index_online(student, teacher):
    eta = 0.3
    p = ReuseProblem(student, teacher, reuse=1, a_star=1.5)
    sip = SingleIndexProblem(student, teacher, a_star=1.5)
    m = np.linspace(-0.9, 0.9, 7)
    ref = eta * sip.drift(m) - 0.5 * eta * eta * m * sip.noise_moment(m)
    np.testing.assert_allclose(p.drift(m, eta), ref, atol=TABLE_TOL)
    # and d times the per-step increment of SingleIndexProblem up to its (d-1)/d factor
    d = 1000
    inc = d * sip.step_increment(m, eta=eta / d, d=d)
    np.testing.assert_allclose(p.drift(m, eta) + 0.5 * eta * eta * m * sip.noise_moment(m) / d, inc, atol=TABLE_TOL)


@pytest.mark.parametrize("xi", [0.25, 0.6])
def test_interpolation_reuse1_equals_smaller_step(xi):
    """r = 1: xi (eta E[..] - eta^2 m C/2) + xi(1-xi) eta^2 m C/2 = online drift at step xi*eta."""
    m = np.linspace(-0.8, 0.8, 5)
    a = ReuseProblem("tanh", "he3", reuse=1, interpolation=xi).drift(m, 0.5)
    b = ReuseProblem("tanh", "he3", reuse=1).drift(m, xi * 0.5)
    np.testing.assert_allclose(a, b, atol=QUAD_AGREE_TOL)


def test_monte_carlo_scalar_recursion():
    """Scalar recursion z_{k+1} = z_k + eta y sigma'(z_k) by Monte Carlo vs the quadrature (4 SE)."""
    rng = np.random.default_rng(20240601)
    n = 400_000
    m, eta = 0.3, 0.5
    z = rng.standard_normal(n)
    t = m * z + math.sqrt(1 - m * m) * rng.standard_normal(n)
    y = (t ** 3 - 3 * t) / math.sqrt(6)
    zk, acc = z, np.zeros(n)
    for _ in range(2):
        sp = 1.0 / np.cosh(zk) ** 2
        acc += eta * y * sp * (t - m * zk) - 0.5 * eta * eta * m * (y * sp) ** 2
        zk = zk + eta * y * sp
    est, se = acc.mean(), acc.std() / math.sqrt(n)
    assert abs(est - float(ReuseProblem("tanh", "he3").drift(m, eta))) < 4 * se


# --------------------------------------------------------------------------------------
# exponents and label transforms
# --------------------------------------------------------------------------------------
# No parity, all derivatives non-zero up to the third; rational power-basis coefficients keep
# the exact (sympy) route fast (normalised Hermite specs bring square roots: 10-100x slower).
GENERIC_STUDENT = "poly:z+z**2/2+z**3/6"
# He_3, He_4 unnormalised (same exponents as he3, he4)
RATIONAL = {"he3": "poly:z**3-3*z", "he4": "poly:z**4-6*z**2+3", HE34: HE34, "poly:z**2": "poly:z**2"}


@pytest.mark.parametrize("target", ["he3", "he4", HE34, "poly:z**2"])
def test_effective_exponent_is_generative_exponent(target):
    ge = generative_exponent(target).k
    assert ge == {"he3": 1, "he4": 2, HE34: 1, "poly:z**2": 2}[target]     # theory/lee2024 table
    assert ReuseProblem(GENERIC_STUDENT, RATIONAL[target], reuse=2).effective_exponent() == ge
    online = ReuseProblem(GENERIC_STUDENT, RATIONAL[target], reuse=1)
    assert online.effective_exponent() == online.information_exponent


@pytest.mark.parametrize("student,target,eta,expected", [
    ("tanh", "he3", 0.5, (3, 1)), (LOGCOSH, "he4", 0.2, (4, 2)), ("softplus", HE34, 0.05, (4, 1)),
])
def test_effective_exponent_numeric(student, target, eta, expected):
    # c_3(softplus) = E[softplus''']/sqrt(6) = 0 (sigmoid'' is odd), so (softplus, He3+He4) has IE 4
    online = ReuseProblem(student, target, reuse=1)
    assert online.information_exponent == expected[0]
    assert online.effective_exponent(eta) == expected[0]
    assert ReuseProblem(student, target, reuse=2).effective_exponent(eta) == expected[1]


def test_label_transform_table_he3():
    p = ReuseProblem("he3", "he3", reuse=2)
    tab = p.label_transform_table(5, eta_tilde=0.1)
    h1 = [r["E[y^j h1]"] for r in tab["rows"]]
    h2 = [r["E[y^j h2]"] for r in tab["rows"]]
    # theory/lee2024/equations.md: IE(he3^j) = 3, 2, 1, 2, 1
    assert [abs(v) > 1e-12 for v in h1] == [False, False, True, False, True]
    assert [abs(v) > 1e-12 for v in h2] == [False, True, False, True, False]
    assert abs(h1[2] - 324 / 6 ** 1.5) < 1e-12        # E[h3^3 h1] = E[He3^3 He1] / 6^(3/2)
    # the series is exact for a polynomial student (finite): D_2(0) = 81 eta^3
    assert abs(tab["series_value"] - 81 * 0.1 ** 3) < 1e-15
    assert abs(tab["series_value"] - float(p.drift(0.0, 0.1))) < 1e-15


@pytest.mark.parametrize("student,target", [(GENERIC_STUDENT, HE34), ("poly:z**2/2+z**3/3", "poly:z**3-3*z")])
def test_label_series_exact_polynomial(student, target):
    """The series of theory/lee2024/equations.md (plus the 2 eta E[yt] E[sigma'] term) equals the exact D_2(0)."""
    p = ReuseProblem(student, target, reuse=2)
    for eta in (0.03, 0.2):
        tab = p.label_transform_table(8, eta_tilde=eta)
        exact = float(p.drift(0.0, eta))
        assert abs(tab["series_value"] - exact) <= 1e-12 * max(1.0, abs(exact))


def test_label_series_tanh_small_eta():
    """tanh/he3: the series is asymptotic in eta; its error scales like the first omitted term."""
    p = ReuseProblem("tanh", "he3", reuse=2)
    lead_err, resid = [], []
    for eta in (0.01, 0.02):
        tab = p.label_transform_table(6, eta_tilde=eta)
        assert tab["series"][1] == 0.0 and tab["series"][3] == 0.0      # E[y^2 t] = E[y^4 t] = 0 for he3
        exact = float(p.drift(0.0, eta))
        lead = tab["series"][2] * eta ** 3          # (eta^3/2) E[y^3 t] E[sech^4 tanh''']
        lead_err.append(abs(exact - lead) / abs(lead))
        resid.append(abs(exact - tab["series_value"]) / abs(lead))
    assert lead_err[0] < 0.02 and resid[0] < 1e-3
    assert 3.0 < lead_err[1] / lead_err[0] < 5.0     # relative error ~ eta^2 (next term eta^5)
    assert 10.0 < resid[1] / resid[0] < 20.0         # ~ eta^4 (next term eta^7)


# --------------------------------------------------------------------------------------
# ODE and predicted samples
# --------------------------------------------------------------------------------------
ODE_VS_QUAD_RTOL = 1e-7     # DOP853 at rtol 1e-10 vs Gauss-Legendre at 1e-9


@pytest.mark.parametrize("student,teacher,eta", [("he3", "he3", 0.01), ("poly:z+z**3/10", "poly:z**3-3*z", 0.005)])
def test_predicted_samples_routes(student, teacher, eta):
    p = ReuseProblem(student, teacher, reuse=2)
    d = 4000
    q = predicted_samples(p, d, eta_tilde=eta)
    o = predicted_samples(p, d, eta_tilde=eta, method="ode")
    assert math.isfinite(q) and float(p.drift(d ** -0.5, eta)) > 0       # travels toward +1/2
    assert abs(o - q) <= ODE_VS_QUAD_RTOL * q


def test_predicted_samples_negative_direction_tanh():
    """tanh/he3: D_2 < 0 near 0, so |m| grows toward -1/2 from m0 = +d^-1/2 (crossing the equator)."""
    p = ReuseProblem("tanh", "he3", reuse=2)
    d = 10_000
    q = predicted_samples(p, d, eta_tilde=0.5)
    from popdyn.ode import integrate

    traj = integrate(p, d ** -0.5, 2 * q / d, escape_level=0.5, options={"eta_tilde": 0.5}, n_times=5)
    assert float(traj.m[-1, 0]) < -0.49
    assert abs(d * float(traj.events["escape"][0]) - q) <= 1e-6 * q
    # online (reuse 1) at the same step stalls: contraction beats the m^2 drift near the equator
    assert predicted_samples(ReuseProblem("tanh", "he3", reuse=1), d, eta_tilde=0.5) == math.inf


def test_predicted_samples_reuse1_vs_escape_samples():
    """reuse = 1 equals escape_samples (ODE route) up to its (d-1)/d factor on the contraction."""
    d, eta = 2000, 0.05
    p = ReuseProblem("he2", "he2", reuse=1)
    sip = SingleIndexProblem("he2", "he2")
    n_reuse = predicted_samples(p, d, eta_tilde=eta)
    n_si = escape_samples(sip, d, eta=eta / d, batch=1)
    # bound: the factor changes the contraction by 1/d; relative change of 1/D <= max |contraction/D| / d
    m = np.linspace(d ** -0.5, 0.5, 2001)
    contraction = 0.5 * eta * eta * m * sip.noise_moment(m)
    bound = float(np.max(contraction / p.drift(m, eta))) / d
    # escape_samples contracts by (d-1)/d less, so it escapes sooner; first order in 1/d (+ slack for 2nd)
    rel = (n_reuse - n_si) / n_reuse
    assert 0 < rel <= bound * (1 + 1e-3)
    assert rel > 0.2 * bound       # the difference is really the (d-1)/d factor


def test_ode_time_units():
    p = ReuseProblem("he3", "he3", reuse=2)
    from popdyn.ode import integrate

    eta_tilde, d, B = 0.01, 1000, 4
    eta = eta_tilde * B / d
    tau = predicted_samples(p, d, eta_tilde=eta_tilde) / d
    t1 = integrate(p, d ** -0.5, 2 * tau, escape_level=0.5, options={"eta_tilde": eta_tilde}, n_times=3)
    t2 = integrate(p, d ** -0.5, 2 * tau * eta_tilde, escape_level=0.5, eta=eta, d=d, batch=B, n_times=3)
    assert t1.time_unit == "samples / d" and t2.time_unit == "t = eta * steps"
    assert abs(float(t2.events["escape"][0]) - eta_tilde * float(t1.events["escape"][0])) < 1e-8 * eta_tilde * tau
    with pytest.raises(ValueError, match="exactly one"):
        integrate(p, 0.1, 1.0, options={"eta_tilde": 0.1}, eta=0.1, d=10)
    with pytest.raises(ValueError, match="`d`"):
        integrate(p, 0.1, 1.0, eta=0.1)


def test_predicted_samples_stall_and_trivial():
    p = ReuseProblem("he3", "he3", reuse=1)
    assert predicted_samples(p, 10_000, eta_tilde=0.05) == math.inf    # stall below m* = eta/2
    assert predicted_samples(p, 10_000, eta_tilde=0.05, m0=0.6) == 0.0
    with pytest.raises(ValueError, match="`m_target`"):
        predicted_samples(p, 100, eta_tilde=0.1, m_target=1.0)


def test_quadrature_failure_is_reported():
    """A kinked student (ReLU: sigma'(z_1) jumps) cannot meet the quadrature tolerance."""
    with pytest.raises(NumericalError, match="did not converge"):
        ReuseProblem("relu", "he3").drift(0.1, 0.5)


# --------------------------------------------------------------------------------------
# the survey (item 7)
# --------------------------------------------------------------------------------------
def test_survey_small():
    rows = student_survey(targets=("he3",), students={"tanh": "tanh"}, eta_grid=(0.5,), points=6)
    (row,) = rows
    assert row["escapes"] and not row["online_escapes"] and row["direction"] == -1
    assert abs(row["D0"] - (-0.05564)) < THEORY_4DIGIT_TOL
    assert choose_students(rows)["he3"] is row


def test_linear_coefficient_theory_expansion():
    """theory/lee2024/equations.md: d_m D_R2(0) = 2 eta Phi''(0) + eta^2 [sqrt2 E[s's'' z] E[y^2 h2] - 2 E[y^2] E[s'^2]] + O(eta^3)."""
    import sympy

    student, target = "poly:z+z**2/2+z**3/6", "poly:z**4-6*z**2+3"
    p = ReuseProblem(student, target, reuse=2)
    e = sympy.Symbol("eta_tilde", real=True)
    D1 = sympy.Poly(p.drift_coefficients_expr(1)[1], e)
    # independent moments by Gauss-Hermite (exact for these polynomial degrees)
    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    ds, dds = 1 + x + x ** 2 / 2, 1 + x
    y = x ** 4 - 6 * x ** 2 + 3
    h2 = (x ** 2 - 1) / math.sqrt(2)
    sip = SingleIndexProblem(student, target)
    phi2 = 2 * sip.gamma[2]
    theory1 = 2 * phi2
    theory2 = math.sqrt(2) * (w @ (ds * dds * x)) * (w @ (y * y * h2)) - 2 * (w @ (y * y)) * (w @ (ds * ds))
    assert abs(float(D1.coeff_monomial(e)) - theory1) < 1e-10
    assert abs(float(D1.coeff_monomial(e ** 2)) - theory2) < 1e-9 * abs(theory2)


@pytest.mark.parametrize("target,student,eta,direction", [
    ("he4", tanh_logcosh(0.0, -1.0), 0.5, None),        # D odd in m (even student): either side
    # no parity: O(eta^2) label-power-2 term, D(0) < 0; slow: the labels He3+He4 need fine quadrature (~150 s)
    pytest.param(HE34, tanh_logcosh(1.0, -0.5), 0.05, -1, marks=pytest.mark.slow),
])
def test_survey_choices(target, student, eta, direction):
    """The item-7 choices: reuse carries |m| from 0 to 1/2 without a zero, online stalls at the same step."""
    (row,) = student_survey(targets=(target,), students={"s": student}, eta_grid=(eta,), points=12)
    assert row["escapes"] and row["online_escapes"] is False
    assert direction is None or row["direction"] == direction
    assert row["online_D1"] < 0                       # online: contraction wins at the equator
    d = 1000
    assert math.isfinite(predicted_samples(ReuseProblem(student, target), d, eta_tilde=eta))
    assert predicted_samples(ReuseProblem(student, target, reuse=1), d, eta_tilde=eta) == math.inf
