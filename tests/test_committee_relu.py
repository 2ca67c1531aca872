"""ReLU committee integrals through orthant probabilities, and the ReLU committee ODE.

Independent routes for every formula of ``popdyn.gaussian``'s orthant machinery
(Plackett's reduction in Childs' form, Tallis' second moments):

* 40-digit mpmath values of the same quantities for exactly representable covariances,
  from near-orthogonal to nearly singular (table ``REFERENCE``; computed offline by two
  different Plackett paths that agree to 1e-27 or better, and Tallis' identity in mpmath);
* exact special values (equicorrelation 1/2, block structures);
* the breakpoint-aware nested quadrature of :func:`popdyn.gaussian.gaussian_product_expectation`;
* Monte Carlo with its standard error, for several seeds;
* for the committee assembly: the per-tuple routes (``integrals="tuples"`` and
  ``"quadrature"``) and, for the ODE, the quadrature route along a trajectory and full
  d-dimensional simulations (d = 1000).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import popdyn
from popdyn import gaussian as g
from popdyn.models import committee_integrals as ci
from popdyn.models.committee import (
    CommitteeProblem,
    add_eps_g,
    deviation_table,
    joint_covariance,
    simulate_committee,
)
from popdyn.simulation import initial_state

# --------------------------------------------------------------------------------------
# reference table and named tolerances
# --------------------------------------------------------------------------------------
#: Rows of the base field vectors (times 1/4) and the perturbation directions (times 2^-e)
#: of the reference covariances: ``C = U U^T`` is exact in double precision (dyadic entries).
BASE = [[3, -1, 2, 0, 1, -2], [1, 2, -1, 3, 0, 1], [-2, 1, 1, 1, 2, 0], [0, 3, -1, -2, 1, 1]]
PERTURB = [[1, 2, -1, 0, 1, 1], [2, -1, 0, 1, -1, 2]]
#: (kind, e, P(x > 0), E[x_2 x_3 1{x > 0}]) to 25 digits, mpmath at 40 digits.  ``pair``:
#: field 2 = field 0 + 2^-e w (nearly aligned pair); ``double``: also field 3 = field 1 + 2^-e w';
#: ``plane``: field 3 = (field 0 + field 1)/2 + 2^-e w (nearly rank 3).
REFERENCE = [
    ("rand", 0, "0.04821883464843767822249597", "0.02324906113133551358955339"),
    ("pair", 4, "0.09321591212713313937754751", "0.05892854091325564032276197"),
    ("pair", 10, "0.09325591387039409617878172", "0.0425837180217628234675379"),
    ("pair", 16, "0.09325656099756469704376406", "0.04232833169576206108814238"),
    ("pair", 20, "0.09325657063269949231661743", "0.0423245313043746064052911"),
    ("double", 6, "0.2183603456501893860697304", "0.1393146581346567561315335"),
    ("double", 12, "0.2224126769470397712672148", "0.1292905879167979512336873"),
    ("double", 20, "0.2224783031702659472755567", "0.1291343771424080391061375"),
    ("plane", 10, "0.1066472630423828590033243", "0.05146117228578248429215201"),
    ("plane", 20, "0.1066476075187778960603415", "0.05137690303898882796729866"),
]
#: Against the exact value of an exactly given covariance: the evaluation's own rounding
#: (1e-14 for O(1) sums of a few hundred terms) plus the input's rounding floor: perturbing
#: the covariance by its last bit moves an orthant probability by ~1e-16 / sqrt(lambda_min)
#: (square-root dependence on the residual variance of a nearly dependent field).
ABS_FLOOR = 1e-14
ROUNDING_FLOOR = 1e-16
#: Target of the quadrature route (conservative: two successive rules agree to it).
QUAD_TARGET = 1e-11
#: Monte Carlo: a correct value lies within 4 standard errors (probability 6e-5 per check).
MC_SIGMAS = 4.0
MC_SAMPLES = 200_000
#: Closed-form assembly against the per-tuple closed forms: the same formulas summed in
#: another order, O(1) terms.
ASSEMBLY_TOL = 1e-13
#: The brief's acceptance: the closed-form ODE reproduces the quadrature route to 1e-9.
ODE_ROUTE_TOL = 1e-9
#: ODE against the replica mean of full simulations, in standard errors of the mean.
SIM_Z = 3.0

F = g.Factor
RELU_I4 = [F.derivative("relu"), F.derivative("relu"), F.value("relu"), F.value("relu")]


def reference_cov(kind: str, e: int) -> np.ndarray:
    U = [[Fraction(x, 4) for x in row] for row in BASE]
    if kind in ("pair", "double"):
        U[2] = [U[0][j] + Fraction(PERTURB[0][j], 2 ** e) for j in range(6)]
    if kind == "double":
        U[3] = [U[1][j] + Fraction(PERTURB[1][j], 2 ** e) for j in range(6)]
    if kind == "plane":
        U[3] = [(U[0][j] + U[1][j]) / 2 + Fraction(PERTURB[0][j], 2 ** e) for j in range(6)]
    return np.array([[float(sum(U[a][k] * U[b][k] for k in range(6))) for b in range(4)] for a in range(4)])


def random_cov(n: int, seed: int) -> np.ndarray:
    A = np.random.default_rng(seed).standard_normal((n, n + 2))
    return A @ A.T / (n + 2)


def monte_carlo(C, fn, seed):
    """Mean and standard error of fn(x), x ~ N(0, C)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((MC_SAMPLES, len(C))) @ np.linalg.cholesky(C).T
    v = fn(x)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(MC_SAMPLES))


# ======================================================================================
# orthant probabilities and truncated moments
# ======================================================================================
@pytest.mark.parametrize("kind,e,p_ref,i4_ref", REFERENCE, ids=[f"{r[0]}-{r[1]}" for r in REFERENCE])
def test_against_40_digit_references(kind, e, p_ref, i4_ref):
    C = reference_cov(kind, e)
    d = np.sqrt(np.diag(C))
    lam = np.linalg.eigvalsh(C / np.outer(d, d))[0]
    tol = ABS_FLOOR + ROUNDING_FLOOR / math.sqrt(lam)
    assert abs(float(g.orthant_probability(C)) - float(p_ref)) <= tol
    assert abs(float(g.relu_i4(C)) - float(i4_ref)) <= tol
    assert abs(float(g.orthant_moment(C, 2, 3)) - float(i4_ref)) <= tol


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_equicorrelation_one_half_gives_one_over_n_plus_one(n):
    R = np.full((n, n), 0.5) + 0.5 * np.eye(n)
    assert abs(float(g.orthant_probability(R)) - 1.0 / (n + 1)) <= ABS_FLOOR


def test_block_structures_factorise():
    A, B = random_cov(2, 1), random_cov(2, 2)
    C = np.zeros((4, 4))
    C[:2, :2], C[2:, 2:] = A, B
    product = float(g.orthant_probability(A) * g.orthant_probability(B))
    assert abs(float(g.orthant_probability(C)) - product) <= ABS_FLOOR
    C3 = random_cov(3, 3)
    C = np.zeros((4, 4))
    C[:3, :3], C[3, 3] = C3, 2.0
    assert abs(float(g.orthant_probability(C)) - 0.5 * float(g.orthant_probability(C3))) <= ABS_FLOOR
    # Tallis with an independent indicator: E[x_2 x_3 1{x > 0}] = P(x_0 > 0, x_1 > 0) E[relu relu]
    C = np.zeros((4, 4))
    C[:2, :2], C[2:, 2:] = A, B
    assert abs(float(g.relu_i4(C)) - float(g.orthant_probability(A) * g.relu_i2(B))) <= ABS_FLOOR


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orthant_probability_vs_monte_carlo(n, seed):
    C = random_cov(n, 10 * n + seed)
    mean, se = monte_carlo(C, lambda x: np.all(x > 0, axis=1).astype(float), seed)
    assert abs(float(g.orthant_probability(C)) - mean) <= MC_SIGMAS * se


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relu_i4_vs_monte_carlo(seed):
    C = random_cov(4, 100 + seed)
    mean, se = monte_carlo(C, lambda x: (x[:, 0] > 0) * (x[:, 1] > 0) * np.maximum(x[:, 2], 0)
                           * np.maximum(x[:, 3], 0), seed)
    assert abs(float(g.relu_i4(C)) - mean) <= MC_SIGMAS * se


@pytest.mark.parametrize("idx", [[0, 1, 2, 3], [0, 0, 2, 3], [0, 1, 1, 3], [2, 3, 2, 3], [1, 1, 1, 1],
                                 [0, 1, 2, 2], [0, 2, 2, 3], [3, 1, 2, 3], [0, 0, 0, 1]])
@pytest.mark.parametrize("seed", [0, 1])
def test_relu_i4_vs_quadrature_with_repeated_fields(idx, seed):
    """Repeated fields (a == b, c == d, a == c) are reduced exactly; the nested quadrature
    handles the singular covariance by its echelon factor."""
    C = random_cov(4, 200 + seed)[np.ix_(idx, idx)]
    closed = float(g.relu_i4(C))
    quad = float(g.gaussian_product_expectation(C, RELU_I4, tol=QUAD_TARGET))
    assert abs(closed - quad) <= QUAD_TARGET * max(1.0, abs(closed)), (closed, quad)


def test_aligned_anti_aligned_and_zero_variance_fields():
    rng = np.random.default_rng(5)
    U = rng.standard_normal((4, 6))
    U[2] = 1.7 * U[0]  # aligned: 1{x_2 > 0} = 1{x_0 > 0}
    C = U @ U.T
    reduced = float(g.orthant_moment(C, 2, 3, indicators=(0, 1, 3)))
    assert float(g.relu_i4(C)) == pytest.approx(reduced, abs=ABS_FLOOR)
    quad = float(g.gaussian_product_expectation(C, RELU_I4, tol=QUAD_TARGET))
    assert abs(float(g.relu_i4(C)) - quad) <= QUAD_TARGET
    three = float(g.orthant_probability(C[np.ix_([0, 1, 3], [0, 1, 3])]))
    assert float(g.orthant_probability(C)) == pytest.approx(three, abs=ABS_FLOOR)
    U[2] = -0.4 * U[0]  # anti-aligned: empty orthant
    C = U @ U.T
    assert float(g.relu_i4(C)) == 0.0 and float(g.orthant_probability(C)) == 0.0
    U[2] = 0.0  # zero variance: Theta(0) = 0
    C = U @ U.T
    assert float(g.relu_i4(C)) == 0.0


def test_reduce_indicators():
    C = np.array([[1.0, 1.0, -2.0, 0.3], [1.0, 1.0, -2.0, 0.3], [-2.0, -2.0, 4.0, -0.6], [0.3, 0.3, -0.6, 1.0]])
    assert g.reduce_indicators((0, 3, 0, 1), C) == (0, 3)  # repeat and positive alignment
    assert g.reduce_indicators((0, 2), C) is None  # anti-aligned
    Z = np.diag([1.0, 0.0])
    assert g.reduce_indicators((0, 1), Z) is None  # zero variance


def test_orthant_moment_with_a_moment_field_outside_the_indicators():
    """E[Theta(x_0) x_1 relu(x_2)] = E[x_1 x_2 1{x_0, x_2 > 0}] is the committee's I3."""
    for seed in range(3):
        C = random_cov(3, 300 + seed)
        v = float(g.orthant_moment(C, 1, 2, indicators=(0, 2)))
        assert abs(v - float(g.relu_i3(C))) <= ABS_FLOOR
        mean, se = monte_carlo(C, lambda x: (x[:, 0] > 0) * x[:, 1] * np.maximum(x[:, 2], 0), seed)
        assert abs(v - mean) <= MC_SIGMAS * se


def test_orthant_functions_are_vectorised():
    Cs = np.stack([random_cov(4, s) for s in range(5)]).reshape(5, 1, 4, 4)
    Cs[2, 0, 1] = Cs[2, 0, 0]  # a repeated field inside the batch
    Cs[2, 0, :, 1] = Cs[2, 0, :, 0]
    vals = g.relu_i4(Cs)
    probs = g.orthant_probability(Cs)
    assert vals.shape == probs.shape == (5, 1)
    for b in range(5):
        assert vals[b, 0] == float(g.relu_i4(Cs[b, 0]))
        assert probs[b, 0] == float(g.orthant_probability(Cs[b, 0]))


def test_orthant_input_errors():
    with pytest.raises(ValueError, match=r"`C` must have shape \(\.\.\., n, n\) with 1 <= n <= 4"):
        g.orthant_probability(np.eye(5))
    with pytest.raises(ValueError, match="positive semidefinite"):
        g.orthant_probability(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        g.relu_i4(np.eye(4) + np.triu(0.1 * np.ones((4, 4)), 1))
    with pytest.raises(ValueError, match=r"`C` must have shape \(\.\.\., 4, 4\)"):
        g.relu_i4(np.eye(3))
    with pytest.raises(ValueError, match=r"`c` must be a field index in \[0, 3\)"):
        g.orthant_moment(np.eye(3), 3, 0)
    with pytest.raises(ValueError, match="`indicators` must hold 1 to 4 field indices"):
        g.orthant_moment(np.eye(3), 0, 1, indicators=())


def test_tanh_sinh_rule_integrates_exactly_enough():
    """The Plackett rule: weights sum to 1, and a square-root endpoint singularity is resolved."""
    u, om, w = g._tanh_sinh(g.ORTHANT_NODES)
    assert abs(w.sum() - 1.0) <= 1e-14
    np.testing.assert_allclose(u + om, 1.0, rtol=0, atol=4e-16)  # 1 - u without cancellation
    assert abs(np.sum(w * np.sqrt(om)) - 2.0 / 3.0) <= 1e-13  # int_0^1 sqrt(1 - u) du


# ======================================================================================
# the committee assembly
# ======================================================================================
def _sum_tol(beta) -> float:
    """Bound of a beta-weighted sum of quadrature values (each within QUAD_TARGET)."""
    return float(np.sum(np.abs(beta))) ** 2 * QUAD_TARGET


def _state(K, M, seed, scale=0.6):
    prob = CommitteeProblem("relu", "relu", K=K, M=M)
    return initial_state(prob, 200, init=scale, rng=seed)[2]


@pytest.mark.parametrize("K,M", [(2, 2), (3, 2), (2, 3)])
def test_relu_assembly_matches_tuples_and_quadrature(K, M):
    rng = np.random.default_rng(K * 10 + M)
    s = _state(K, M, seed=K + M)
    G = np.eye(M) + 0.2 * (np.ones((M, M)) - np.eye(M))  # correlated teachers: C_cd != 0 in I4
    a, a_star = rng.uniform(0.5, 1.5, K), rng.uniform(0.5, 1.5, M)
    C = joint_covariance(s["Q"], s["M"] @ np.linalg.cholesky(G).T, G)
    beta = np.concatenate([a, -a_star])
    fast = ci.CommitteeIntegrals("relu", "relu", K, M).contractions(C, beta, j2=True)
    tuples = ci.CommitteeIntegrals("relu", "relu", K, M, integrals="tuples").contractions(C, beta, j2=True)
    quad = ci.CommitteeIntegrals("relu", "relu", K, M, integrals="quadrature", tol=QUAD_TARGET).contractions(
        C, beta, j2=True)
    for key in ("I2", "D3", "D4", "J2"):
        np.testing.assert_allclose(fast[key], tuples[key], rtol=0, atol=ASSEMBLY_TOL, err_msg=key)
        np.testing.assert_allclose(fast[key], quad[key], rtol=0, atol=_sum_tol(beta), err_msg=key)


def _mc_contractions(C, beta, K, seed):
    """Monte Carlo means and standard errors of D3 = E[Theta(x_i) x_b (f - y*)] and D4 =
    E[Theta(x_i) Theta(x_k) (f - y*)^2] (singular C allowed: sampled by its eigenvectors)."""
    lam, V = np.linalg.eigh(C)
    x = np.random.default_rng(seed).standard_normal((MC_SAMPLES, len(C))) @ (V * np.sqrt(np.clip(lam, 0, None))).T
    err = np.maximum(x, 0) @ beta
    step = (x[:, :K] > 0).astype(float)
    d3 = (step * err[:, None])[:, :, None] * x[:, None, :]
    d4 = (step * err[:, None])[:, :, None] * (step * err[:, None])[:, None, :]
    return {key: (v.mean(0), v.std(0, ddof=1) / math.sqrt(MC_SAMPLES)) for key, v in (("D3", d3), ("D4", d4))}


def test_relu_rhs_at_the_teacher_vanishes_and_aligned_states_are_exact():
    """Student = teacher (aligned fields, the merged plan): the error f - y* is 0 almost surely, so
    the right-hand side vanishes.  A mismatched second layer at an aligned, rank-deficient state
    agrees with the per-tuple closed forms and with Monte Carlo (the quadrature route cannot
    certify its tolerance at such singular covariances with kinks)."""
    prob = CommitteeProblem("relu", "relu", K=2, M=2, delta=0.7)
    for M0 in (np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]])):
        rhs = prob.ode_rhs(0.0, {"Q": np.eye(2), "M": M0, "a": np.ones(2)})
        for key, val in rhs.items():
            assert np.max(np.abs(val)) <= 1e-15, (key, val)
    # student 0 on teacher 0, student 1 in the teachers' plane: rank 2
    C = joint_covariance(np.array([[1.0, 0.3], [0.3, 1.0]]), np.array([[1.0, 0.0], [0.3, math.sqrt(0.91)]]),
                         np.eye(2))
    beta = np.array([0.6, 1.3, -1.0, -1.0])
    fast = ci.CommitteeIntegrals("relu", "relu", 2, 2).contractions(C, beta, j2=True)
    tuples = ci.CommitteeIntegrals("relu", "relu", 2, 2, integrals="tuples").contractions(C, beta, j2=True)
    for key in fast:
        np.testing.assert_allclose(fast[key], tuples[key], rtol=0, atol=ASSEMBLY_TOL, err_msg=key)
    for seed in (0, 1):
        for key, (mean, se) in _mc_contractions(C, beta, 2, seed).items():
            assert np.all(np.abs(fast[key] - mean) <= MC_SIGMAS * se + 1e-15), (key, fast[key], mean, se)


def test_relu_assembly_with_a_zero_norm_student():
    C = joint_covariance(np.diag([0.0, 0.8]), np.array([[0.0, 0.0], [0.3, -0.2]]), np.eye(2))
    beta = np.array([0.7, 1.1, -1.0, -1.0])
    fast = ci.CommitteeIntegrals("relu", "relu", 2, 2).contractions(C, beta, j2=True)
    quad = ci.CommitteeIntegrals("relu", "relu", 2, 2, integrals="quadrature", tol=QUAD_TARGET).contractions(
        C, beta, j2=True)
    for key in fast:
        np.testing.assert_allclose(fast[key], quad[key], rtol=0, atol=_sum_tol(beta), err_msg=key)
    assert np.all(fast["D4"][0] == 0.0) and np.all(fast["J2"][0] == 0.0)


# ======================================================================================
# the ReLU committee ODE
# ======================================================================================
def _relu_problem():
    prob = CommitteeProblem("relu", "relu", K=2, M=2, delta=0.5)
    return prob, initial_state(prob, 500, init="uniform", rng=0)[2]


def _compare_routes(t_end, n_times, tol, recheck):
    prob, s0 = _relu_problem()
    times = np.linspace(0.0, t_end, n_times)
    closed = popdyn.integrate(prob, s0, t_end, times=times, progress=False)
    quad = popdyn.integrate(prob, s0, t_end, times=times, progress=False,
                            options={"integrals": "quadrature", "tol": tol, "recheck": recheck})
    assert closed.meta["solver"]["nfev"] > 0 and quad.meta["solver"]["nfev"] > 0
    for name in ("Q", "M"):
        np.testing.assert_allclose(closed.overlaps[name], quad.overlaps[name], rtol=0, atol=ODE_ROUTE_TOL,
                                   err_msg=name)


def test_relu_ode_reproduces_the_quadrature_route_short():
    _compare_routes(0.5, 3, 1e-10, 10)


@pytest.mark.slow
def test_relu_ode_reproduces_the_quadrature_route_long():
    """Through the plateau into specialisation (eps_g from 0.69 to 3e-2); beyond, the students
    approach the teachers and the quadrature route can no longer certify 1e-10 near the
    aligned (singular) covariances."""
    _compare_routes(40.0, 21, 1e-10, 1)


def test_relu_ode_converges_to_the_teacher():
    """To convergence: the aligned end state runs through the merged (exact) plan."""
    prob, s0 = _relu_problem()
    traj = add_eps_g(prob, popdyn.integrate(prob, s0, 600.0, n_times=30, atol=1e-10, progress=False))
    assert traj.eps_g[0, 0] > 0.5 and traj.eps_g[-1, 0] < 1e-12
    M = np.abs(traj.final("M")[0])
    np.testing.assert_allclose(np.sort(M, axis=1)[:, -1], 1.0, atol=1e-6)


#: A warm start (overlaps of order one, not 1/sqrt(d)): at d = 1000 the d -> infinity ODE is
#: then accurate to O(1/d), well inside the replicas' standard error.
WARM = {"Q": np.array([[0.5, 0.1], [0.1, 0.6]]), "M": np.array([[0.3, 0.05], [0.0, 0.25]])}
SIM_TIMES = np.array([0.5, 2.0, 5.0, 10.0])


def test_relu_ode_matches_full_simulation_d1000():
    """eps_g of 16 full d = 1000 simulations (same start) within SIM_Z standard errors of the
    ODE at four times; checked for seeds 0..5.  Power: the ODE without the delta^2 term
    (batch -> infinity) is rejected by many standard errors."""
    prob = CommitteeProblem("relu", "relu", K=2, M=2, delta=0.5)
    grid = np.concatenate([[0.0], SIM_TIMES])
    ode = add_eps_g(prob, popdyn.integrate(prob, WARM, 10.0, times=grid, progress=False))
    sim = simulate_committee(prob, d=1000, t_end=10.0, replicas=16, init=WARM, rng=3, record=SIM_TIMES,
                             engine="full", progress=False)
    for row in deviation_table(ode, sim, SIM_TIMES):
        assert abs(row["z"]) < SIM_Z, row
    no_noise = add_eps_g(prob, popdyn.integrate(prob, WARM, 10.0, times=grid, batch=10 ** 6, progress=False))
    assert max(abs(r["z"]) for r in deviation_table(no_noise, sim, SIM_TIMES)) > 5 * SIM_Z
