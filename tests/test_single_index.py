"""Single-index spherical online SGD: alignment ODE with its eta^2 term, exact and full simulators.

Every closed form is checked by an independent route: Gauss–Hermite tensor rules with
exact node counts (polynomials), Monte Carlo over (z, t) with tolerances from the
standard error, a one-step simulation in d dimensions, and the full simulator against the
exact d-free one (statistics over replicas).
"""

import functools
import math

import numpy as np
import pytest

from popdyn.errors import NumericalError
from popdyn.models.single_index import (ODE_TIME_UNITS, SingleIndexProblem, escape_samples, step_size)
from popdyn.models.single_index_sim import first_passage
from popdyn.ode import integrate
from popdyn.simulation import make_stepper, simulate

#: theory/bagj2021/equations.md: mean-field ODE steps to m = 1/2 for h3/h3, eta = 0.5 d^{-3/2}, m0 = d^{-1/2}.
REFERENCE_H3 = {32: 783, 64: 3008, 128: 11954, 256: 48042}
#: The reference values are rounded to the nearest integer.
REFERENCE_TOL = 0.5
#: Monte Carlo agreement in standard errors (4 SE: a false alarm has probability 6e-5 per check).
MC_SIGMAS = 4.0
#: Exact-vs-full agreement in standard errors (the acceptance criterion).
ENGINE_SIGMAS = 3.0
#: Polynomial route vs an exact Gauss–Hermite tensor rule: both exact, rounding only.
EXACT_RTOL = 1e-11
#: Numeric (Chebyshev-in-arcsin) route vs the exact polynomial route: the interpolation
#: target NUMERIC_TOL = 1e-8 times max(1, |value|) (values here are O(10)).
NUMERIC_ATOL = 1e-7
#: ODE escape event vs the quadrature of dm/F: both computed to rtol 1e-10.
ESCAPE_RTOL = 1e-7


@functools.lru_cache(maxsize=None)
def problem(student, teacher, loss="correlation", a_star=1.0):
    """Shared instances, so the Chebyshev tables of non-polynomial pairs are built once."""
    return SingleIndexProblem(student, teacher, loss=loss, a_star=a_star)


def pair_samples(m, n, rng):
    """``n`` draws of (z, t) standard normal with correlation ``m``, and the independent s."""
    z = rng.standard_normal(n)
    s = rng.standard_normal(n)
    return z, m * z + math.sqrt(1 - m * m) * s, s


def sample_stats(x):
    """Mean, its SE, unbiased variance and the SE of the variance (from the 4th moment)."""
    n = x.size
    mu = x.mean()
    v = x.var(ddof=1)
    m4 = np.mean((x - mu) ** 4)
    return mu, math.sqrt(v / n), v, math.sqrt(max(m4 - v * v * (n - 3) / (n - 1), 0.0) / n)


# ---------------------------------------------------------------------------------------
# reference values and exact population quantities
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ode", "quadrature"])
def test_reference_escape_steps_theory_5_18(method):
    prob = problem("he3", "he3")
    for d, ref in REFERENCE_H3.items():
        got = escape_samples(prob, d, eta=0.5 * d ** -1.5, method=method)
        assert abs(got - ref) <= REFERENCE_TOL, f"d={d}: {got} vs {ref}"


def test_ode_escape_equals_quadrature_of_inverse_increment():
    prob = problem("hermite:0,1,0,1", "he3", "squared")
    for d, eta in ((100, 0.002), (400, 1e-3)):
        a = escape_samples(prob, d, eta=eta, batch=3, m0=0.05, m_target=0.6, method="ode")
        b = escape_samples(prob, d, eta=eta, batch=3, m0=0.05, m_target=0.6, method="quadrature")
        assert a == pytest.approx(b, rel=ESCAPE_RTOL)


@pytest.mark.parametrize("student,teacher,loss,a_star", [
    ("he3", "he3", "correlation", 1.0),
    ("he2", "he4", "squared", 1.0),
    ("poly:z**3 + z**2 - 2", "hermite:0,1,0.5,0.2", "squared", -1.5),
    ("he1", "he5", "correlation", 2.0),
])
def test_polynomial_route_vs_exact_gauss_hermite(student, teacher, loss, a_star):
    prob = problem(student, teacher, loss, a_star)
    s, t = prob.student, prob.teacher

    def rho(Z, T):
        y = a_star * t(T)
        return (y if loss == "correlation" else y - s(Z)) * s.derivative(Z)

    deg = s.degree + t.degree
    for m in (-0.7, 0.0, 0.3, 0.95, 1.0):
        if abs(m) == 1.0:
            m = math.copysign(1 - 1e-15, m)
        n = 2 * deg + 2  # exact for the integrands rho^2 (degree 2 deg - 2) and rho (t - m z)
        drift = float(np.sum(_gh_values(lambda Z, T: rho(Z, T) * (T - m * Z), m, n)))
        noise = float(np.sum(_gh_values(lambda Z, T: rho(Z, T) ** 2, m, n)))
        scale = max(1.0, abs(noise))
        assert float(prob.drift(m)) == pytest.approx(drift, abs=EXACT_RTOL * scale), f"m={m}"
        assert float(prob.noise_moment(m)) == pytest.approx(noise, abs=EXACT_RTOL * scale), f"m={m}"


def _gh_values(h, m, n):
    """Weighted values of h(z, t) on an n x n Gauss–Hermite rule (sum = E[h], exact for degree <= 2n - 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    Z, S = np.meshgrid(x, x, indexing="ij")
    T = m * Z + math.sqrt(1 - m * m) * S
    return np.outer(w, w) * h(Z, T)


@pytest.mark.parametrize("student,teacher,loss,a_star", [
    ("he3", "he3", "correlation", 1.0),
    ("hermite:0,1,0.5,1", "he3", "squared", 0.7),
    ("tanh", "relu", "squared", 1.0),
    ("relu", "tanh", "correlation", 2.0),
])
@pytest.mark.parametrize("m", [0.1, 0.6, 0.97])
def test_drift_and_noise_moment_vs_monte_carlo(student, teacher, loss, a_star, m):
    prob = problem(student, teacher, loss, a_star)
    rng = np.random.default_rng(abs(hash((student, teacher, loss, m))) % 2**32)
    z, t, _ = pair_samples(m, 400_000, rng)
    rho = prob.force(z, prob.labels(t))
    for name, sample, value in (("drift", rho * (t - m * z), prob.drift(m)),
                                ("C", rho * rho, prob.noise_moment(m))):
        mu, se = sample.mean(), sample.std() / math.sqrt(sample.size)
        assert abs(mu - float(value)) <= MC_SIGMAS * se, f"{name}: MC {mu} +- {se} vs {float(value)}"


@pytest.mark.parametrize("student,teacher", [("tanh", "he3"), ("hermite:0,0,1,1", "he2")])
def test_squared_loss_drift_equals_correlation_drift(student, teacher):
    # E[sigma(z) sigma'(z) (t - m z)] = 0: t - m z is centred and independent of z
    sq, co = problem(student, teacher, "squared"), problem(student, teacher, "correlation")
    ms = np.linspace(-0.9, 0.9, 7)
    assert np.allclose(sq.drift(ms), co.drift(ms), atol=1e-14)
    rng = np.random.default_rng(3)
    for m in (0.2, 0.8):
        z, t, _ = pair_samples(m, 400_000, rng)
        x = sq.student(z) * sq.student.derivative(z) * (t - m * z)
        assert abs(x.mean()) <= MC_SIGMAS * x.std() / math.sqrt(x.size)


def test_numeric_route_matches_exact_route():
    """A polynomial wrapped as a callable takes the Chebyshev/quadrature route."""
    from popdyn.activations import get_activation

    he3 = get_activation("he3")
    wrapped = get_activation(lambda z: (z ** 3 - 3 * z) / math.sqrt(6),
                             derivative=lambda z: (3 * z ** 2 - 3) / math.sqrt(6), name="he3-callable")
    # the squared loss: its C(m) has the correlation loss's pair expectation and two more
    exact = SingleIndexProblem(he3, he3, loss="squared", a_star=1.3)
    numeric = SingleIndexProblem(wrapped, he3, loss="squared", a_star=1.3)
    assert not numeric.exact and exact.exact
    ms = np.linspace(-1, 1, 41)
    for fn in ("phi", "dphi", "noise_moment"):
        np.testing.assert_allclose(getattr(numeric, fn)(ms), getattr(exact, fn)(ms), rtol=0, atol=NUMERIC_ATOL,
                                   err_msg=fn)
    assert max(numeric.describe()["numeric_error"].values()) < 1e-8


def test_information_exponent_and_gamma():
    assert [problem(f"he{p}", f"he{p}").information_exponent for p in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert problem("tanh", "relu").information_exponent == 1
    assert problem("he3", "hermite:0,0,1,1").information_exponent == 3
    assert problem("he2", "he3").information_exponent is None  # Phi = 0: nothing to learn by correlation
    p = problem("he2", "he2", "squared", 2.0)  # Phi = 2 m^2: (1 - m^2) Phi' = 0.75 * 2 = 1.5 at m = 1/2
    assert float(p.drift(0.5)) == pytest.approx(1.5)


# ---------------------------------------------------------------------------------------
# the eta^2 term: exact second moment of the update and the one-step mean increment
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 3])
def test_second_moment_of_update_formula(batch):
    r"""E N^2 = (eta^2/B)[(d-2) C + E rho^2 s^2] + eta^2 (1 - 1/B)(1 - m^2) Phi'^2 (module docstring)."""
    prob = problem("he2", "tanh", "squared")
    m, d, eta, n = 0.4, 30, 0.05, 200_000
    rng = np.random.default_rng(7)
    z = rng.standard_normal((n, batch))
    s = rng.standard_normal((n, batch))
    t = m * z + math.sqrt(1 - m * m) * s
    c = eta * prob.force(z, prob.labels(t)) / batch
    N2 = np.sum(c * s, 1) ** 2 + np.sum(c * c, 1) * rng.chisquare(d - 2, n)
    rho = prob.force(z[:, 0], prob.labels(t[:, 0]))
    pred = (eta ** 2 / batch) * ((d - 2) * prob.noise_moment(m) + np.mean(rho ** 2 * s[:, 0] ** 2)) \
        + eta ** 2 * (1 - 1 / batch) * (1 - m * m) * prob.dphi(m) ** 2
    assert abs(N2.mean() - pred) <= MC_SIGMAS * N2.std() / math.sqrt(n)


@pytest.mark.parametrize("student,teacher,loss,d,eta,batch,m0", [
    # bounded activations: eta = 1/d (the eta^2 term is 2.5% of the step, dropped terms 0.1 SE)
    ("tanh", "tanh", "correlation", 400, 1 / 400, 1, 0.5),
    ("erf", "erf", "squared", 400, 4 / 400, 4, 0.5),
    # polynomial: the BAGJ step eta = 0.5 d^{-3/2}, deep inside the validity of the expansion
    ("he3", "he3", "squared", 400, 0.5 * 400 ** -1.5, 1, 0.5),
])
def test_one_step_mean_increment_full_simulator_vs_ode(student, teacher, loss, d, eta, batch, m0):
    prob = problem(student, teacher, loss)
    inc = []
    for seed in range(4):  # 4 x 10000 replicas of one step, in blocks to bound memory (32 MB)
        traj = simulate(prob, d=d, eta=eta, steps=1, batch=batch, replicas=10_000, init=m0, rng=seed,
                        n_record=2, engine="full")
        inc.append(traj.overlaps["m"][-1] - traj.overlaps["m"][0])
    inc = np.concatenate(inc)
    mu, se = inc.mean(), inc.std() / math.sqrt(inc.size)
    pred = float(prob.step_increment(m0, eta=eta, d=d, batch=batch))
    assert abs(mu - pred) <= MC_SIGMAS * se, f"simulated {mu:.4g} +- {se:.2g} vs ODE {pred:.4g}"
    # the check has power: without the eta^2 term the prediction is rejected
    no_noise = eta * float(prob.drift(m0))
    assert abs(mu - no_noise) > 2 * MC_SIGMAS * se


# ---------------------------------------------------------------------------------------
# the ODE through the generic engine
# ---------------------------------------------------------------------------------------
def test_time_units_describe_the_same_path():
    prob = problem("he4", "he4")
    d, delta = 200, 0.3
    eta = delta / d
    steps = 4000.0
    ref = integrate(prob, 0.2, steps, eta=eta, d=d, options={"time_unit": "steps"}, times=[0, steps / 2, steps])
    for unit, scale in (("t = eta * steps", eta), ("t = steps / d", 1 / d)):
        tr = integrate(prob, 0.2, steps * scale, eta=eta, d=d, options={"time_unit": unit},
                       times=[0, steps * scale / 2, steps * scale])
        assert tr.time_unit == unit
        np.testing.assert_allclose(tr.overlaps["m"][:, 0], ref.overlaps["m"][:, 0], rtol=1e-8)
    tr = integrate(prob, 0.2, steps / d, d=d, options={"delta": delta}, times=[0, steps / d])
    assert tr.time_unit == "t = steps / d" and tr.overlaps["m"].shape == (2, 1)
    assert tr.overlaps["m"][-1, 0] == pytest.approx(ref.overlaps["m"][-1, 0], rel=1e-8)
    tr = integrate(prob, 0.2, steps, d=d, options={"eta0": eta * d ** 2, "exponent": 2})
    assert tr.time_unit == "steps" and tr.meta["options"]["eta"] == pytest.approx(eta)
    assert set(ODE_TIME_UNITS) == {"t = eta * steps", "t = steps / d", "steps"}


def test_gradient_flow_and_escape_event():
    prob = problem("he3", "he3")
    tr = integrate(prob, 0.1, 100.0, escape_level=0.5)
    assert tr.time_unit == "gradient-flow time t"
    # dm/dt = 3 m^2 (1 - m^2): t = int dm / (3 m^2 (1 - m^2)) = [-1/m + atanh(m)] / 3
    exact = ((-1 / 0.5 + math.atanh(0.5)) - (-1 / 0.1 + math.atanh(0.1))) / 3
    assert tr.events["escape"][0] == pytest.approx(exact, rel=1e-8)


def test_leading_order_closed_forms_vs_quadrature():
    from scipy.integrate import quad

    for p, d, eta in ((1, 500, 1e-3), (2, 500, 1e-3), (3, 128, 0.5 * 128 ** -1.5), (4, 64, 0.25 * 64 ** -2.0)):
        prob = problem(f"he{p}", f"he{p}")
        a = eta * p
        b = eta ** 2 * (d - 1) * float(prob.noise_moment(0.0)) / 2
        m0, m1 = d ** -0.5, 0.5
        ref = quad(lambda m: 1 / (a * m ** (p - 1) - b * m), m0, m1, epsrel=1e-12)[0]
        assert escape_samples(prob, d, eta=eta, method="leading") == pytest.approx(ref, rel=1e-9), f"p={p}"
    # theory/bagj2021/equations.md: without noise and with m1 -> infinity, T = d^{p-1}/(eta0 p (p - 2))
    prob, d, eta0 = problem("he3", "he3"), 10 ** 6, 1e-6
    T = escape_samples(prob, d, eta=eta0 * d ** -1.5, m_target=1.0, method="leading")
    assert T == pytest.approx(d ** 2 / (eta0 * 3), rel=2e-3)  # m1 = 1: relative correction m0 = 1e-3


def test_escape_samples_edge_cases():
    prob = problem("he3", "he3")
    assert escape_samples(prob, 64, eta=0.01, m0=0.6) == 0.0
    # eta0 = 4 (> 2 p / C(0) = 2): the eta^2 contraction beats the drift at m0, no escape
    assert escape_samples(prob, 64, eta=4 * 64 ** -1.5) == math.inf
    assert escape_samples(prob, 64, eta=4 * 64 ** -1.5, method="leading") == math.inf
    # batch B with eta -> B eta: the same number of samples at leading order (linear scaling)
    one = escape_samples(prob, 256, eta=0.5 * 256 ** -1.5)
    eight = escape_samples(prob, 256, eta=8 * 0.5 * 256 ** -1.5, batch=8)
    assert eight == pytest.approx(one, rel=1e-9)


# ---------------------------------------------------------------------------------------
# exact vs full simulator
# ---------------------------------------------------------------------------------------
ENGINE_CASES = [
    # (student, teacher, loss, a*, d, eta, batch, init, steps)
    ("he3", "he3", "correlation", 1.0, 50, 0.01, 1, 0.3, 500),      # finite-d: eta^2 d = 0.005, m0 = 0.3
    ("tanh", "relu", "squared", 1.0, 50, 0.05, 4, 0.1, 150),
    ("he2", "he2", "correlation", 1.0, 20, 0.05, 2, "uniform", 200),  # Haar start, per replica
    ("relu", "he1", "correlation", 1.0, 200, 0.02, 1, -0.2, 400),
    ("erf", "erf", "squared", 2.0, 8, 0.2, 3, 0.0, 40),              # d = 8: eta^2 d / B = 0.1
]


@pytest.mark.parametrize("case", ENGINE_CASES, ids=[f"{c[0]}-{c[1]}-d{c[4]}" for c in ENGINE_CASES])
def test_exact_engine_matches_full_engine(case):
    student, teacher, loss, a, d, eta, batch, init, steps = case
    prob = problem(student, teacher, loss, a)
    kw = dict(d=d, eta=eta, steps=steps, batch=batch, replicas=400, init=init, n_record=3, record="linear",
              same_init=False)
    full = simulate(prob, engine="full", rng=101, **kw)
    exact = simulate(prob, engine="exact", rng=202, **kw)
    assert full.overlaps["m"].shape == exact.overlaps["m"].shape == (3, 400)
    np.testing.assert_array_equal(full.t, exact.t)
    for i in (1, 2):
        fm, fse, fv, fvse = sample_stats(full.overlaps["m"][i])
        em, ese, ev, evse = sample_stats(exact.overlaps["m"][i])
        assert abs(fm - em) <= ENGINE_SIGMAS * math.hypot(fse, ese), f"mean at t={full.t[i]}: {fm} vs {em}"
        assert abs(fv - ev) <= ENGINE_SIGMAS * math.hypot(fvse, evse), f"variance at t={full.t[i]}: {fv} vs {ev}"


def test_haar_start_has_mean_square_one_over_d():
    prob = problem("he3", "he3")
    for engine in ("full", "exact"):
        st, _ = make_stepper(prob, d=40, eta=0.01, replicas=4000, init="uniform", same_init=False, engine=engine,
                             rng=5)
        m0 = st.observe(st.init_state())["m"]
        x = m0 ** 2
        assert abs(x.mean() - 1 / 40) <= MC_SIGMAS * x.std() / math.sqrt(x.size), engine


def test_first_passage_exact_matches_full():
    prob = problem("he1", "he1")
    d = 30
    kw = dict(eta=0.5 / d, replicas=400, level=0.5)
    a = first_passage(prob, d, engine="exact", rng=1, **kw).steps
    b = first_passage(prob, d, engine="full", rng=2, **kw).steps
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    sa, sb = sample_stats(a), sample_stats(b)
    assert abs(sa[0] - sb[0]) <= ENGINE_SIGMAS * math.hypot(sa[1], sb[1])
    assert abs(sa[2] - sb[2]) <= ENGINE_SIGMAS * math.hypot(sa[3], sb[3])


def test_first_passage_stop_fraction_and_absolute():
    prob = problem("he2", "he2")
    fp = first_passage(prob, 64, eta=0.5 / 64, replicas=100, absolute=True, stop_fraction=0.5, rng=3)
    assert 0.5 <= fp.fraction_reached < 1.0
    assert math.isfinite(fp.median_samples()) or fp.fraction_reached == 0.5
    assert fp.meta["absolute"] and fp.batch == 1


# ---------------------------------------------------------------------------------------
# reproducibility
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["full", "exact"])
def test_reproducible_with_seed(engine):
    prob = problem("tanh", "he3", "squared")
    kw = dict(d=30, eta=0.02, steps=50, batch=2, replicas=5, init=0.2, n_record=4, engine=engine)
    a, b, c = simulate(prob, rng=9, **kw), simulate(prob, rng=9, **kw), simulate(prob, rng=10, **kw)
    np.testing.assert_array_equal(a.overlaps["m"], b.overlaps["m"])
    assert not np.array_equal(a.overlaps["m"], c.overlaps["m"])
    assert a.meta["engine"] == engine and a.model == "single_index"
    f1 = first_passage(prob, 30, eta=0.05, replicas=20, max_steps=200, rng=4, engine=engine)
    f2 = first_passage(prob, 30, eta=0.05, replicas=20, max_steps=200, rng=4, engine=engine)
    np.testing.assert_array_equal(f1.steps, f2.steps)


# ---------------------------------------------------------------------------------------
# bad input and numerical failure
# ---------------------------------------------------------------------------------------
def test_bad_problem_arguments():
    with pytest.raises(ValueError, match="`loss`"):
        SingleIndexProblem("he3", "he3", loss="hinge")
    with pytest.raises(ValueError, match="`a_star`"):
        SingleIndexProblem("he3", "he3", a_star=0.0)
    with pytest.raises(ValueError, match="unknown|valid"):
        SingleIndexProblem("nope", "he3")


@pytest.mark.parametrize("kwargs,match", [
    (dict(eta=-0.1, d=10), "`eta`"),
    (dict(eta=0.0, d=10), "`eta`"),
    (dict(d=10, options={"delta": 0.0}), "`delta`"),
    (dict(d=10, options={"eta0": 1.0}), "`exponent`"),
    (dict(eta=0.1, d=10, batch=0), "`batch`"),
    (dict(eta=0.1, d=1), "`d`"),
    (dict(eta=0.1), "`d`"),
    (dict(d=10), "`d`"),
    (dict(eta=0.1, d=10, options={"delta": 1.0}), "exactly one"),
    (dict(eta=0.1, d=10, options={"time_unit": "hours"}), "`time_unit`"),
])
def test_bad_ode_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        integrate(problem("he3", "he3"), 0.1, 1.0, **kwargs)


@pytest.mark.parametrize("m0", [1.5, -1.01, [0.1, 0.2]])
def test_bad_initial_alignment(m0):
    with pytest.raises(ValueError, match="`m0`"):
        integrate(problem("he3", "he3"), m0, 1.0)


def test_bad_simulation_and_escape_arguments():
    prob = problem("he3", "he3")
    with pytest.raises(ValueError, match="`init`"):
        simulate(prob, d=10, eta=0.1, steps=2, init=1.5, engine="exact")
    with pytest.raises(ValueError, match="`init`"):
        simulate(prob, d=10, eta=0.1, steps=2, init="haar")
    with pytest.raises(ValueError, match="`d`"):
        simulate(prob, d=1, eta=0.1, steps=2, init=0.1, engine="exact")
    with pytest.raises(ValueError, match="`eta`"):
        simulate(prob, d=10, eta=-1.0, steps=2, init=0.1)
    with pytest.raises(ValueError, match="`batch`"):
        simulate(prob, d=10, eta=0.1, batch=0, steps=2, init=0.1)
    with pytest.raises(ValueError, match="`algorithm`"):
        simulate(prob, d=10, t_end=1.0, algorithm="gf", init=0.1)
    with pytest.raises(ValueError, match="`m0`"):
        escape_samples(prob, 10, eta=0.1, m0=2.0)
    with pytest.raises(ValueError, match="`d`"):
        escape_samples(prob, 1, eta=0.1)
    with pytest.raises(ValueError, match="`eta`"):
        escape_samples(prob, 10, eta=0.0)
    with pytest.raises(ValueError, match="`method`"):
        escape_samples(prob, 10, eta=0.1, method="guess")
    with pytest.raises(ValueError, match="exactly one"):
        step_size(10)


@pytest.mark.parametrize("engine", ["full", "exact"])
def test_diverging_run_reports_the_step(engine):
    prob = problem("he3", "he3")
    with pytest.raises(NumericalError, match="step 1"):
        simulate(prob, d=10, eta=1e300, steps=5, init=0.3, engine=engine, rng=0)
    with pytest.raises(NumericalError, match="step 1"):
        first_passage(prob, 10, eta=1e300, replicas=3, engine=engine, rng=0)


def test_numeric_route_reports_the_error_it_reached():
    # sign/sign: Phi'(m) = 2 / (pi sqrt(1 - m^2)) is unbounded at |m| = 1, no interpolant converges
    with pytest.raises(NumericalError, match="did not converge: error estimate"):
        SingleIndexProblem("sign", "sign").dphi(0.5)


@pytest.mark.parametrize("engine", ["full", "exact"])
def test_large_spherical_step_warns(engine):
    """eta = 1 with a cubic student used to finish silently: the RMS relative step eta|g| is ~20,
    far outside the small-step regime of the ODE.  A delta/d step stays silent."""
    from popdyn.models.single_index_sim import RELATIVE_STEP_LIMIT, LargeStepWarning

    prob = SingleIndexProblem("poly:z**3", "he3")
    with pytest.warns(LargeStepWarning, match=r"relative steps .* RMS .* > 0\.5 \(d = 200\)"):
        simulate(prob, d=200, eta=1.0, t_end=5.0, replicas=2, rng=0, engine=engine, progress=False)
    stepper, noise = make_stepper(prob, d=200, eta=0.5 / 200, replicas=2, rng=0, engine=engine)
    state = stepper.init_state()
    for _ in range(50):
        stepper.step(state, noise)
    assert stepper.check_state(state) is None  # no warning (pytest turns it into an error)
    assert 0 < stepper.relative_step_rms < 0.5 * RELATIVE_STEP_LIMIT


def test_escape_samples_target_outside_unit_interval():
    prob = problem("he3", "he3")
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"`m_target` must lie in \(0\.0, 1\.0\], got"):
            escape_samples(prob, 64, eta=0.01, m_target=bad)
    assert escape_samples(prob, 64, eta=0.01, m0=0.2, m_target=0.1) == 0.0
