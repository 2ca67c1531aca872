"""Tests of the committee-machine ODE, its Gaussian integrals and the full simulator.

Independent routes:
* Saad–Solla reference values (erf closed forms, theory/CONVENTIONS.md), to 1e-11;
* Monte Carlo of every integral family (erf, ReLU, a mixed ReLU/erf pair, polynomials,
  tanh), with a fixed seed and a tolerance of ``MC_Z`` standard errors;
* the closed forms against the quadrature route (two implementations of the same
  integral) and the polynomial route against the Mehler kernel of :mod:`popdyn.kernels`;
* the ODE right-hand side against the one-step mean increment of the full d-dimensional
  simulator (d = 1000), including the delta^2 terms (and a power check: dropping them is
  rejected);
* the ODE against the replica mean of full simulations through plateau and escape;
* the Saad–Solla conventions against an independent classic-scaling SGD loop written here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.special import erf

import popdyn
from popdyn.errors import NumericalError
from popdyn.models import committee_integrals as ci
from popdyn.models.committee import (
    CLASSIC,
    CommitteeProblem,
    add_eps_g,
    classic_initial_state,
    classic_problem,
    deviation_table,
    eps_g,
    joint_covariance,
    plot_committee,
    simulate_committee,
)
from popdyn.models.committee_sim import CommitteeFullStepper, realise_overlaps, teacher_vectors
from popdyn.simulation import initial_state, make_stepper

#: Covariance and reference values of theory/CONVENTIONS.md (12 digits quoted there).
C511 = np.array([[1, .5, .3, .2], [.5, 1, .4, .1], [.3, .4, 1, .6], [.2, .1, .6, 1]])
REF_511 = {
    "I2(0,1)": 0.160861246510, "I3(0,1,2)": 0.104634548642, "I3(0,0,2)": 0.048292868604,
    "I4(0,1,2,3)": 0.061492408341, "I4(0,0,2,3)": 0.067920753810, "J2": 0.319108657543,
}
#: The references are quoted to 12 decimals.
REF_TOL = 1e-11
#: Monte Carlo tolerance in standard errors (fixed seeds; a correct formula fails by chance
#: with probability ~6e-5 per comparison).
MC_Z = 4.0
MC_SAMPLES = 400_000
#: Two routes to the same integral: closed form vs the quadrature route (target 1e-8 with
#: a conservative estimate); 1e-8 absolute.
ROUTE_TOL = 1e-8
#: Mean-increment check: |z| below this many SE for every entry of (dQ, dM, da).
INCREMENT_Z = 4.0
#: ODE vs the replica mean of full simulations, in SE of the mean.
SIM_Z = 4.0

# own activations (independent of popdyn.activations)
_ACT = {
    "erf": (lambda z: erf(z / math.sqrt(2.0)), lambda z: math.sqrt(2.0 / math.pi) * np.exp(-0.5 * z * z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "he3": (lambda z: (z ** 3 - 3 * z) / math.sqrt(6.0), lambda z: (3 * z ** 2 - 3) / math.sqrt(6.0)),
    "he2": (lambda z: (z ** 2 - 1) / math.sqrt(2.0), lambda z: 2 * z / math.sqrt(2.0)),
}


def _ix(C, idx):
    return C[np.ix_(idx, idx)]


def _random_cov(n, seed, scale=0.8):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n + 2)) * scale
    return A @ A.T / (n + 2) * 2.0


def _mc(C, fn, seed):
    """Monte Carlo mean and standard error of fn(x), x ~ N(0, C)."""
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(C + 1e-14 * np.eye(len(C)))
    x = rng.standard_normal((MC_SAMPLES, len(C))) @ L.T
    v = fn(x)
    return v.mean(), v.std(ddof=1) / math.sqrt(MC_SAMPLES)


# ======================================================================================
# integrals: reference values, closed forms, routes
# ======================================================================================
def test_theory_5_11_values():
    ix = _ix
    got = {
        "I2(0,1)": ci.i2(ix(C511, [0, 1]), "erf", "erf"),
        "I3(0,1,2)": ci.i3(ix(C511, [0, 1, 2]), "erf", "erf"),
        "I3(0,0,2)": ci.i3(ix(C511, [0, 0, 2]), "erf", "erf"),
        "I4(0,1,2,3)": ci.i4(C511, "erf", "erf", "erf", "erf"),
        "I4(0,0,2,3)": ci.i4(ix(C511, [0, 0, 2, 3]), "erf", "erf", "erf", "erf"),
        "J2": ci.j2(np.array([[1.3, .4], [.4, .8]]), "erf", "erf"),
    }
    for k, ref in REF_511.items():
        assert abs(float(got[k]) - ref) < REF_TOL, f"{k}: {float(got[k])!r} vs {ref}"
    prob = CommitteeProblem("erf", "erf", K=1, M=1)
    assert abs(float(prob.generalisation_error([[1.0]], [[0.0]])) - 1.0 / 3.0) < 1e-14


def _families():
    """(name, kind, activations, fields, integrand for MC)."""
    out = []
    for s, t in (("erf", "erf"), ("relu", "relu"), ("relu", "erf"), ("he3", "he2"), ("tanh", "tanh")):
        fs, dfs = _ACT[s]
        ft, _ = _ACT[t]
        out += [
            (f"I2[{s},{t}]", "i2", (s, t), lambda x, fs=fs, ft=ft: fs(x[:, 0]) * ft(x[:, 1])),
            (f"J2[{s}]", "j2", (s, s), lambda x, d=dfs: d(x[:, 0]) * d(x[:, 1])),
            (f"I3[{s};{t}]", "i3", (s, t), lambda x, d=dfs, ft=ft: d(x[:, 0]) * x[:, 1] * ft(x[:, 2])),
            (f"I4[{s};{t},{t}]", "i4", (s, s, t, t),
             lambda x, d=dfs, ft=ft: d(x[:, 0]) * d(x[:, 1]) * ft(x[:, 2]) * ft(x[:, 3])),
        ]
        if s != t:
            out.append((f"I4[{s};{s},{t}]", "i4", (s, s, s, t),
                        lambda x, d=dfs, fs=fs, ft=ft: d(x[:, 0]) * d(x[:, 1]) * fs(x[:, 2]) * ft(x[:, 3])))
    return out


_N = {"i2": 2, "j2": 2, "i3": 3, "i4": 4}


@pytest.mark.parametrize("name,kind,acts,integrand", _families(), ids=[f[0] for f in _families()])
def test_integrals_vs_monte_carlo(name, kind, acts, integrand):
    n = _N[kind]
    # tanh has no closed-form conditional mean: its 4-field integrals cost ~49^4 points at
    # tol 1e-6 for unit-scale fields (module docstring), so it is tested at that scale and tol
    tanh = "tanh" in name
    C = _random_cov(n, seed=len(name) + n, scale=0.5 if tanh else 0.8)
    tol = 1e-6 if tanh else ci.FALLBACK_TOL
    val = float(getattr(ci, kind)(C, *acts, tol=tol))
    mean, se = _mc(C, integrand, seed=11 + n)
    assert abs(val - mean) < MC_Z * se, f"{name}: {val} vs MC {mean} +- {se}"


def test_routes():
    assert ci.route("i4", "erf", "erf", "erf", "erf") == "erf"
    assert ci.route("i3", "relu", "relu") == "relu"
    assert ci.route("i4", "relu", "relu", "relu", "relu") == "relu"  # orthant-probability closed form
    assert ci.route("i4", "tanh", "tanh", "tanh", "tanh") == "quadrature"
    assert ci.route("i3", "relu", "erf") == "quadrature"
    assert ci.route("i4", "he3", "he3", "identity", "he2") == "polynomial"


@pytest.mark.parametrize("idx", [[0, 1, 2, 3], [0, 0, 2, 3], [0, 1, 1, 3], [2, 3, 2, 3], [1, 1, 1, 1]])
def test_erf_closed_forms_vs_quadrature(idx):
    """Same integral, two implementations (closed form, nested quadrature), incl. coinciding fields."""
    F = ci.Factor
    C = _ix(C511, idx)
    q4 = ci.gaussian_product_expectation(C, [F.derivative("erf"), F.derivative("erf"), F.value("erf"),
                                             F.value("erf")])
    assert abs(float(q4) - float(ci.erf_i4(C))) < ROUTE_TOL
    C3 = _ix(C511, idx[:3])
    q3 = ci.gaussian_product_expectation(C3, [F.derivative("erf"), F.linear(), F.value("erf")])
    assert abs(float(q3) - float(ci.erf_i3(C3))) < ROUTE_TOL


@pytest.mark.parametrize("idx", [[0, 1, 2], [0, 0, 2], [0, 1, 0], [2, 2, 2], [3, 0, 1]])
def test_relu_closed_forms_vs_quadrature(idx):
    F = ci.Factor
    C3 = _ix(C511, idx)
    q3 = ci.gaussian_product_expectation(C3, [F.derivative("relu"), F.linear(), F.value("relu")])
    assert abs(float(q3) - float(ci.relu_i3(C3))) < ROUTE_TOL
    C2 = _ix(C511, [idx[0], idx[2]])
    q2 = ci.gaussian_product_expectation(C2, [F.value("relu"), F.value("relu")])
    assert abs(float(q2) - float(ci.relu_i2(C2))) < ROUTE_TOL
    j2 = ci.gaussian_product_expectation(C2, [F.derivative("relu"), F.derivative("relu")])
    assert abs(float(j2) - float(ci.relu_j2(C2))) < ROUTE_TOL


def test_relu_i2_matches_kernels_module():
    from popdyn.kernels import gaussian_pair_expectation

    C = np.array([[1.7, -0.4], [-0.4, 0.6]])
    assert abs(float(ci.relu_i2(C)) - float(gaussian_pair_expectation("relu", "relu", C))) < 1e-12
    assert abs(float(ci.i2(C, "he3", "he3")) - float(gaussian_pair_expectation("he3", "he3", C))) < 1e-12


def test_relu_degenerate_limits():
    """a = c gives C_ab / 2; zero-variance fields give 0 (Theta(0) = 0)."""
    C = np.array([[2.0, 0.7, 2.0], [0.7, 1.0, 0.7], [2.0, 0.7, 2.0]])
    assert abs(float(ci.relu_i3(C)) - 0.35) < 1e-14
    Z = np.array([[0.0, 0.0], [0.0, 1.0]])
    assert float(ci.relu_i2(Z)) == 0.0 and float(ci.relu_j2(Z)) == 0.0


def test_polynomial_route_is_exact():
    """Polynomials: the Gauss-Hermite rule is exact (here against Isserlis' theorem)."""
    C = _random_cov(4, seed=3)
    # E[x0 x1 x2 x3] = C01 C23 + C02 C13 + C03 C12 ; identity' = 1
    F = ci.Factor
    val = ci.gaussian_product_expectation(C, [F.value("identity")] * 4)
    ref = C[0, 1] * C[2, 3] + C[0, 2] * C[1, 3] + C[0, 3] * C[1, 2]
    assert abs(float(val) - ref) < 1e-13
    # I3 with he2: E[x1 (x2^2 - 1)/sqrt2] * identity' = 2 C12 C22... exact: E[x1 x2^2] = 0
    assert abs(float(ci.i3(C[:3, :3], "identity", "he2"))) < 1e-14


def test_committee_integrals_assembly_matches_direct_calls():
    """CommitteeIntegrals (grouped, symmetric, batched) equals the one-at-a-time integrals."""
    K, M = 2, 2
    # closed forms agree to rounding; two quadrature evaluations may use different rules
    # (refined per group vs per integral), each within FALLBACK_TOL of the truth
    tol = {"erf": 1e-13, "relu": 2 * ci.FALLBACK_TOL}
    C = _random_cov(K + M, seed=5)
    for s, t in (("erf", "erf"), ("relu", "erf")):
        out = ci.CommitteeIntegrals(s, t, K, M).compute(C, i4=True, j2=True)
        acts = [s] * K + [t] * M
        for c, e in ((0, 3), (2, 3), (1, 1)):
            assert abs(out["I2"][c, e] - float(ci.i2(_ix(C, [c, e]), acts[c], acts[e]))) < tol[s]
        for i, b, c in ((0, 2, 3), (1, 0, 1), (1, 3, 0)):
            assert abs(out["I3"][i, b, c] - float(ci.i3(_ix(C, [i, b, c]), s, acts[c]))) < tol[s]
        for i, k, c, e in ((0, 1, 2, 3), (1, 0, 3, 0), (1, 1, 2, 2)):
            ref = float(ci.i4(_ix(C, [i, k, c, e]), s, s, acts[c], acts[e]))
            assert abs(out["I4"][i, k, c, e] - ref) < tol[s]
        assert abs(out["J2"][0, 1] - float(ci.j2(_ix(C, [0, 1]), s, s))) < tol[s]


@pytest.mark.parametrize("act", ["erf", "relu"])
@pytest.mark.parametrize("K,M", [(2, 2), (5, 3), (2, 4)])
def test_contracted_assembly_matches_the_tuples_route(act, K, M):
    """The contracted closed forms (integrals="auto") equal the per-tuple closed forms summed
    (integrals="tuples"): I2, D3 = I3 beta, D4 = I4 beta beta, J2, and the whole ODE right-hand
    side with noise and a trained second layer."""
    rng = np.random.default_rng(K * 7 + M)
    prob = CommitteeProblem(act, act, K=K, M=M, a0=rng.uniform(-1.0, 1.5, K), a_star=rng.uniform(0.5, 1.5, M),
                            train_second_layer=True, noise=0.2, delta=0.8)
    state = initial_state(prob, 300, init=0.7, rng=K + M)[2]
    C = joint_covariance(state["Q"], state["M"], prob.G)
    beta = np.concatenate([state["a"], -prob.a_star])
    fast = ci.CommitteeIntegrals(act, act, K, M).contractions(C, beta, j2=True)
    slow = ci.CommitteeIntegrals(act, act, K, M, integrals="tuples").contractions(C, beta, j2=True)
    for key in ("I2", "D3", "D4", "J2"):
        np.testing.assert_allclose(fast[key], slow[key], rtol=0, atol=1e-13, err_msg=key)
    a = prob.ode_rhs(0.0, prob.ode_initial_state(state))
    b = prob.ode_rhs(0.0, prob.ode_initial_state(state), integrals="tuples")
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-13, err_msg=key)


def test_integrals_option():
    prob = classic_problem()
    s0 = classic_initial_state(prob)
    with pytest.raises(ValueError, match=r"`integrals` must be one of .*'auto'.*'tuples'.*'quadrature'"):
        popdyn.integrate(prob, s0, 1.0, options={"integrals": "fast"})
    a = popdyn.integrate(prob, s0, 5.0, n_times=5)
    b = popdyn.integrate(prob, s0, 5.0, n_times=5, options={"integrals": "tuples"})
    np.testing.assert_allclose(a.Q, b.Q, rtol=0, atol=1e-13)
    assert ci.CommitteeIntegrals("relu", "relu", 2, 2).routes()["I4[relu,relu]"] == "relu"
    assert ci.CommitteeIntegrals("relu", "relu", 2, 2, integrals="quadrature").routes()["I4[relu,relu]"] == "quadrature"
    assert ci.CommitteeIntegrals("tanh", "tanh", 2, 2).routes()["assembly"] == "tuples"


def test_fallback_cannot_reach_tolerance():
    """tanh has no closed form: its 4-field integral at unit scale needs ~6e6 points for 1e-8;
    with a budget of 4e5 points the fallback says which tolerance it missed and by how much."""
    with pytest.raises(NumericalError, match=r"cannot reach tolerance 1e-08.*error reached \d"):
        ci.i4(C511, "tanh", "tanh", "tanh", "tanh", max_nodes=400_000)
    # a looser target is reached within the same budget, and agrees with Monte Carlo
    v = float(ci.i4(C511, "tanh", "tanh", "tanh", "tanh", tol=1e-3, max_nodes=400_000))
    t, dt = _ACT["tanh"]
    mean, se = _mc(C511, lambda x: dt(x[:, 0]) * dt(x[:, 1]) * t(x[:, 2]) * t(x[:, 3]), 3)
    assert abs(v - mean) < MC_Z * se + 1e-3


def test_integral_input_errors():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2, 2\)"):
        ci.i2(np.eye(3), "erf", "erf")
    with pytest.raises(ValueError, match="positive semidefinite"):
        ci.i2(np.array([[1.0, 2.0], [2.0, 1.0]]), "erf", "erf")
    with pytest.raises(ValueError, match="symmetric"):
        ci.i3(np.array([[1.0, 0.1, 0], [0.2, 1.0, 0], [0, 0, 1.0]]), "erf", "erf")


# ======================================================================================
# the ODE
# ======================================================================================
STATE = {"Q": np.array([[0.6, 0.2], [0.2, 0.9]]), "M": np.array([[0.3, -0.1], [0.2, 0.4]]),
         "a": np.array([0.8, -0.5])}


def _mean_increment(prob, state, d, replicas, chunks, seed):
    """d * (mean one-step change of Q, M, a) of the full simulator and its standard error."""
    res = []
    for c in range(chunks):
        st, noise = make_stepper(prob, d=d, eta=prob.eta(d), replicas=replicas, init=state, rng=seed + c)
        s = st.init_state()
        o0 = st.observe(s)
        st.step(s, noise)
        o1 = st.observe(s)
        res.append(np.concatenate([((o1[k] - o0[k]) * d).reshape(replicas, -1) for k in ("Q", "M", "a")], axis=1))
    res = np.concatenate(res)
    return res.mean(axis=0), res.std(axis=0, ddof=1) / math.sqrt(res.shape[0])


def _check_increment(prob, d, replicas, chunks, seed):
    m, se = _mean_increment(prob, STATE, d, replicas, chunks, seed)
    parts = prob.rhs_terms(STATE)
    full = np.concatenate([(parts["dQ_drift"] + parts["dQ_noise"]).ravel(), parts["dM"].ravel(), parts["da"].ravel()])
    nodelta2 = np.concatenate([parts["dQ_drift"].ravel(), parts["dM"].ravel(), parts["da"].ravel()])
    live = se > 0  # a fixed second layer does not move
    z = (m - full)[live] / se[live]
    assert np.all(np.abs(z) < INCREMENT_Z), f"z = {np.round(z, 2)}"
    # power: without the delta^2 terms the diagonal of dQ is off by many SE
    z0 = np.abs((m - nodelta2)[live] / se[live])
    assert z0.max() > 10 * INCREMENT_Z, f"the delta^2 term is not resolved (max z {z0.max():.1f})"


def test_rhs_vs_one_step_mean_increment_erf():
    """erf, trained second layer, label noise, delta = 2 (large delta^2 term), d = 1000."""
    prob = CommitteeProblem("erf", "erf", K=2, M=2, a0=STATE["a"], a_star=[1.0, 0.6], train_second_layer=True,
                            noise=0.3, delta=2.0, delta_a=0.7)
    _check_increment(prob, d=1000, replicas=5000, chunks=6, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("student,teacher", [("relu", "relu"), ("relu", "erf")])
def test_rhs_vs_one_step_mean_increment_relu(student, teacher):
    prob = CommitteeProblem(student, teacher, K=2, M=2, a0=STATE["a"], a_star=[1.0, 0.6],
                            train_second_layer=teacher == "erf", delta=1.5)
    _check_increment(prob, d=1000, replicas=5000, chunks=10, seed=21)


def test_rhs_matches_saad_solla_form_for_erf():
    """For erf with a fixed second layer the RHS is the Saad–Solla ODE of theory/CONVENTIONS.md term by term (own loop)."""
    prob = CommitteeProblem("erf", "erf", K=2, M=2, a0=[0.8, -0.5], a_star=[1.0, 0.6], noise=0.2, delta=0.7)
    Q, R, T = STATE["Q"], STATE["M"], prob.G
    v, vt, eta, s2 = prob.a0, prob.a_star, prob.delta, prob.noise
    C = joint_covariance(Q, R, T)
    K = 2
    I3 = lambda a, b, c: float(ci.erf_i3(_ix(C, [a, b, c])))  # noqa: E731
    I4 = lambda a, b, c, d: float(ci.erf_i4(_ix(C, [a, b, c, d])))  # noqa: E731
    dR = np.zeros((2, 2))
    dQ = np.zeros((2, 2))
    for i in range(2):
        for n in range(2):
            dR[i, n] = eta * v[i] * (sum(vt[m] * I3(i, K + n, K + m) for m in range(2))
                                     - sum(v[j] * I3(i, K + n, j) for j in range(2)))
        for k in range(2):
            lin = sum(eta * v[p] * (sum(vt[m] * I3(p, q, K + m) for m in range(2))
                                    - sum(v[j] * I3(p, q, j) for j in range(2))) for p, q in ((i, k), (k, i)))
            quad = eta ** 2 * v[i] * v[k] * (
                sum(vt[n] * vt[m] * I4(i, k, K + n, K + m) for n in range(2) for m in range(2))
                - 2 * sum(v[j] * vt[n] * I4(i, k, j, K + n) for j in range(2) for n in range(2))
                + sum(v[j] * v[l] * I4(i, k, j, l) for j in range(2) for l in range(2))
                + s2 * float(ci.erf_j2(_ix(C, [i, k]))))
            dQ[i, k] = lin + quad
    rhs = prob.ode_rhs(0.0, prob.ode_initial_state(STATE))
    np.testing.assert_allclose(rhs["M"], dR, atol=1e-13)
    np.testing.assert_allclose(rhs["Q"], dQ, atol=1e-13)
    assert np.all(rhs["a"] == 0)


def test_integrate_protocol_and_eps_g():
    prob = classic_problem(train_second_layer=True, delta_a=0.3)
    traj = popdyn.integrate(prob, classic_initial_state(prob), 20.0, n_times=30)
    assert traj.Q.shape == (30, 1, 2, 2) and traj.M.shape == (30, 1, 2, 2) and traj.a.shape == (30, 1, 2)
    assert traj.time_unit == "t = steps / d" and traj.model == "committee"
    assert not np.allclose(traj.a[-1], traj.a[0])  # trained
    out = add_eps_g(prob, traj)
    assert out.eps_g.shape == (30, 1)
    e = eps_g(prob, traj)[:, 0]
    assert e[-1] < e[0]
    # a perfect student: eps_g = 0
    assert abs(float(prob.generalisation_error(np.eye(2), np.eye(2), np.ones(2)))) < 1e-15
    # noise option
    noisy = dataclasses.replace(prob, noise=0.5)
    assert abs(float(noisy.generalisation_error(np.eye(2), np.eye(2), np.ones(2), include_noise=True)) - 0.25) < 1e-15


def test_eps_g_never_negative_at_the_minimum():
    """eps_g = 1/2 beta^T I2 beta cancels to 0 at the teacher: rounding-size negatives are 0,
    larger ones (overlaps that are not a network's) raise NumericalError."""
    prob = CommitteeProblem("erf", "erf", K=1, M=1)
    one = np.ones((1, 1))
    # M = 1 + 1e-12 leaves the PSD cone by ~1e-12: eps_g ~ -3.7e-13 (scale 2/3)
    tiny = 1.0 + 1e-12 * np.ones((1, 1))
    raw, scale = prob._eps_g_terms(one, tiny)
    assert -1e-12 < float(raw) < 0 and float(scale) == pytest.approx(2.0 / 3.0)
    with pytest.raises(NumericalError, match="negative beyond rounding"):
        prob.generalisation_error(one, tiny)  # exact overlaps: only float rounding is allowed
    assert float(prob.generalisation_error(one, tiny, state_rtol=1e-10)) == 0.0  # within an ODE's accuracy
    with pytest.raises(NumericalError, match="not PSD"):
        prob.generalisation_error(one, 1.01 * one, state_rtol=1e-10)
    # positive values are untouched
    q = np.array([[0.7]]), np.array([[0.3]])
    assert float(prob.generalisation_error(*q)) == float(prob._eps_g_terms(*q)[0]) > 0


def test_eps_g_of_a_converged_ode_run_is_not_negative():
    """Regression: `popdyn predict --model committee --t-end 1e6` printed eps_g = -1.2e-11."""
    prob = classic_problem()
    traj = popdyn.integrate(prob, initial_state(prob, 500, init=1.0, rng=0)[2], 1e4, n_times=40)
    raw, scale = prob._eps_g_terms(traj.Q, traj.M, traj.a)
    e = eps_g(prob, traj)
    assert np.all(e >= 0) and e[-1, 0] < 1e-10
    pos = raw > 0
    np.testing.assert_array_equal(e[pos], raw[pos])  # unchanged where the sum is positive
    # the trajectory's time is named when a state is far off the PSD cone
    bad = dataclasses.replace(traj, overlaps={**traj.overlaps, "M": traj.M * 1.01})
    with pytest.raises(NumericalError, match=r"at t = "):
        eps_g(prob, bad)


def test_escape_event_and_batch_option():
    prob = classic_problem()
    s0 = classic_initial_state(prob)
    traj = popdyn.integrate(prob, s0, 400.0, escape_level=0.9, n_times=20)
    assert traj.status == 1 and np.all(np.isfinite(traj.events["escape"]))
    # a minibatch of B divides the delta^2 term: B -> infinity is the gradient-flow limit
    big = prob.rhs_terms(s0, batch=1000)
    one = prob.rhs_terms(s0)
    np.testing.assert_allclose(big["dQ_noise"] * 1000, one["dQ_noise"], rtol=1e-12)


def test_plateau_and_escape_ode_vs_simulation_small():
    """Fast version of the classic comparison: d = 200, up to t = 20 (through the plateau onset)."""
    prob = classic_problem()
    d, seed, times = 200, 7, np.array([1.0, 5.0, 10.0, 20.0])
    _, _, s0 = initial_state(prob, d, init=0.5, rng=seed)
    ode = add_eps_g(prob, popdyn.integrate(prob, s0, 20.0, times=np.concatenate([[0.0], times])))
    sim = simulate_committee(prob, d=d, t_end=20.0, replicas=8, init=0.5, rng=seed, record=times)
    np.testing.assert_allclose(sim.Q[0, 0], s0["Q"], atol=1e-14)  # same start
    for row in deviation_table(ode, sim, times):
        assert abs(row["z"]) < SIM_Z, row


@pytest.mark.slow
def test_plateau_and_escape_ode_vs_simulation_classic(tmp_path):
    """The classic: d = 500, 16 replicas, eps_g within SIM_Z SE of the ODE at t = 1..200."""
    prob = classic_problem()
    d, seed, times = CLASSIC["d"], CLASSIC["seed"], np.array(CLASSIC["times"], dtype=float)
    s0 = classic_initial_state(prob)
    grid = np.unique(np.concatenate([[0.0], times, np.geomspace(1e-2, 200, 40)]))
    ode = add_eps_g(prob, popdyn.integrate(prob, s0, 200.0, times=grid))
    sim = simulate_committee(prob, d=d, t_end=200.0, replicas=16, init=CLASSIC["init"], rng=seed, record=grid)
    for row in deviation_table(ode, sim, times):
        assert abs(row["z"]) < SIM_Z, row
    plot_committee(ode, sim, tmp_path / "classic.png")
    assert (tmp_path / "classic.png").stat().st_size > 1000


def test_relu_ode_vs_simulation():
    """ReLU (I4 by orthant probabilities): ODE within SIM_Z SE of 8 full simulations at d = 300."""
    prob = CommitteeProblem("relu", "relu", K=2, M=2, delta=0.5)
    d, seed, times = 300, 3, np.array([1.0, 3.0, 10.0, 20.0])
    _, _, s0 = initial_state(prob, d, init=0.5, rng=seed)
    ode = add_eps_g(prob, popdyn.integrate(prob, s0, 20.0, times=np.concatenate([[0.0], times])))
    sim = simulate_committee(prob, d=d, t_end=20.0, replicas=8, init=0.5, rng=seed, record=times)
    for row in deviation_table(ode, sim, times):
        assert abs(row["z"]) < SIM_Z, row


# ======================================================================================
# conventions
# ======================================================================================
def test_conventions_ode_identical_numbers():
    pp = classic_problem()
    ss = classic_problem(conventions="saad-solla")
    s0 = classic_initial_state(pp)
    a = popdyn.integrate(pp, s0, 10.0, n_times=10)
    b = popdyn.integrate(ss, s0, 10.0, n_times=10)
    assert b.time_unit == "alpha = steps / N" and ss.overlap_names["M"] == "R"
    np.testing.assert_array_equal(a.Q, b.Q)
    np.testing.assert_array_equal(a.M, b.M)


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_saad_solla_scaling_classic_update(noise):
    """J = sqrt(N) w with the classic update J <- J - (eta/sqrt N) v Delta g'(J.x/sqrt N) x
    gives the same order parameters as popdyn's scaling (own loop, same samples)."""
    N, R, steps, eta_ss = 60, 3, 40, 0.8
    prob = CommitteeProblem("erf", "erf", K=2, M=2, delta=eta_ss, noise=noise, train_second_layer=True, delta_a=0.5,
                            conventions="saad-solla")
    st, rng = make_stepper(prob, d=N, eta=prob.eta(N), replicas=R, init=0.7, rng=3)
    state = st.init_state()
    assert np.allclose(np.linalg.norm(state["W"], axis=-1) / math.sqrt(N), 0.7, rtol=0.5)  # norms ~ sqrt(N)
    J = state["W"].copy()
    B = np.sqrt(N) * st.V  # teacher in the classic scaling, T = B B^T / N = G
    v = state["a"].copy()
    g, dg = _ACT["erf"]
    own = np.random.default_rng()
    own.bit_generator.state = rng.bit_generator.state
    for _ in range(steps):
        st.step(state, rng)
        x = own.standard_normal((R, 1, N))[:, 0]
        lam = np.einsum("rkn,rn->rk", J, x) / math.sqrt(N)
        nu = x @ B.T / math.sqrt(N)
        y = g(nu).sum(axis=1)
        if noise:
            y = y + math.sqrt(noise) * own.standard_normal((R, 1))[:, 0]
        delta = (v * g(lam)).sum(axis=1) - y
        J -= (eta_ss / math.sqrt(N)) * (v * delta[:, None] * dg(lam))[:, :, None] * x[:, None, :]
        v -= (0.5 / N) * delta[:, None] * g(lam)
    obs = st.observe(state)
    np.testing.assert_allclose(obs["Q"], np.einsum("rkn,rln->rkl", J, J) / N, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(obs["M"], J @ B.T / N, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(obs["a"], v, rtol=1e-10, atol=1e-12)
    # popdyn scaling, same seed: the same overlaps
    pp = dataclasses.replace(prob, conventions="popdyn")
    st2, rng2 = make_stepper(pp, d=N, eta=pp.eta(N), replicas=R, init=0.7, rng=3)
    s2 = st2.init_state()
    for _ in range(steps):
        st2.step(s2, rng2)
    np.testing.assert_allclose(st2.observe(s2)["Q"], obs["Q"], rtol=1e-10, atol=1e-12)


# ======================================================================================
# simulator pieces
# ======================================================================================
def test_realise_overlaps_and_teacher_vectors():
    G = np.array([[1.5, 0.3], [0.3, 0.7]])
    V = teacher_vectors(G, 9, rng=0)
    np.testing.assert_allclose(V @ V.T, G, atol=1e-13)
    Q0 = np.array([[0.5, 0.1, 0.0], [0.1, 0.4, 0.05], [0.0, 0.05, 0.3]])
    M0 = np.array([[0.2, 0.1], [0.0, -0.3], [0.1, 0.1]])
    W = realise_overlaps(Q0, M0, V, rng=1)
    np.testing.assert_allclose(W @ W.T, Q0, atol=1e-13)
    np.testing.assert_allclose(W @ V.T, M0, atol=1e-13)
    with pytest.raises(ValueError, match="too small"):
        realise_overlaps(Q0, M0, teacher_vectors(G, 4, rng=0))


def test_dict_init_realised_exactly_in_the_stepper():
    prob = classic_problem()
    st, _ = make_stepper(prob, d=50, eta=prob.eta(50), replicas=2, init={"Q": STATE["Q"], "M": STATE["M"]}, rng=0)
    assert isinstance(st, CommitteeFullStepper)
    obs = st.observe(st.init_state())
    np.testing.assert_allclose(obs["Q"][1], STATE["Q"], atol=1e-13)
    np.testing.assert_allclose(obs["M"][0], STATE["M"], atol=1e-13)


def test_simulate_committee_time_and_eps_g():
    prob = classic_problem()
    traj = simulate_committee(prob, d=40, t_end=2.0, replicas=3, init=0.5, rng=0, record=[0.5, 1.0])
    np.testing.assert_allclose(traj.t, [0.0, 0.5, 1.0, 2.0])
    assert traj.eps_g.shape == (4, 3) and traj.meta["eta"] == prob.delta / 40
    np.testing.assert_allclose(traj.eps_g, eps_g(prob, traj))


# ======================================================================================
# bad input
# ======================================================================================
@pytest.mark.parametrize("kw,exc,match", [
    (dict(K=0), ValueError, "`K`"),
    (dict(M=0), ValueError, "`M`"),
    (dict(delta=0.0), ValueError, "`delta`"),
    (dict(delta=-1.0), ValueError, "`delta`"),
    (dict(delta_a=0.0), ValueError, "`delta_a`"),
])
def test_bad_problem(kw, exc, match):
    base = dict(student="erf", teacher="erf", K=2, M=2)
    base.update(kw)
    with pytest.raises(exc, match=match):
        CommitteeProblem(**base)


def test_bad_initial_state_and_options():
    prob = classic_problem()
    with pytest.raises(ValueError, match="positive semidefinite"):
        popdyn.integrate(prob, {"Q": -np.eye(2), "M": np.zeros((2, 2))}, 1.0)
    with pytest.raises(ValueError, match="positive semidefinite"):  # |M| too large for Q, G
        popdyn.integrate(prob, {"Q": 0.1 * np.eye(2), "M": np.eye(2)}, 1.0)
    with pytest.raises(ValueError, match="keys 'Q' and 'M'"):
        popdyn.integrate(prob, {"Q": np.eye(2)}, 1.0)
    with pytest.raises(ValueError, match="`eta` and `d` do not apply"):
        popdyn.integrate(prob, classic_initial_state(prob), 1.0, eta=0.01, d=100)
    with pytest.raises(ValueError, match="`d`"):
        simulate_committee(prob, d=0, t_end=1.0)
    with pytest.raises(ValueError, match="M = 2"):
        make_stepper(prob, d=1, eta=0.1, replicas=1, init=0.5, rng=0)


def test_ode_divergence_is_a_numerical_error_with_time():
    """A linear network with a step far above its stability limit diverges exponentially."""
    prob = CommitteeProblem("identity", "identity", K=1, M=1, delta=8.0)
    with pytest.raises(NumericalError, match=r"diverged.*\(at t = "):
        popdyn.integrate(prob, {"Q": [[0.5]], "M": [[0.1]]}, 100.0, rtol=1e-6, atol=1e-8)


def test_simulation_divergence_is_a_numerical_error_with_step():
    prob = CommitteeProblem("identity", "identity", K=2, M=2, delta=20.0)
    with pytest.raises(NumericalError, match=r"diverged.*\(at step \d+"):
        simulate_committee(prob, d=20, t_end=500.0, replicas=2, init=0.5, rng=0, n_record=2)


def test_ode_fallback_failure_reports_time():
    prob = CommitteeProblem("tanh", "tanh", K=2, M=2)
    with pytest.raises(NumericalError, match=r"cannot reach tolerance 1e-08.*error reached.*\(at t = 0\)"):
        popdyn.integrate(prob, {"Q": np.eye(2), "M": 0.3 * np.eye(2)}, 1.0, options={"max_nodes": 400_000})
