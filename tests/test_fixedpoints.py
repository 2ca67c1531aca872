"""Tests for popdyn.models.multi_index_fixedpoints: fixed points of the spherical correlation-loss flow.

References (theory/simsek2025/equations.md, orthogonal index vectors, sigma = sigma* = h_p so
phi(t) = t^p): at u = (1/sqrt(s)) sum_{j in S} e_j the Riemannian Hessian has
    within the support (s - 1 directions):  -p (p - 2) s^(1 - p/2)
    all other tangent directions:            +p s^(1 - p/2)
e.g. p=4, s=2 -> {-4 (x1), +2 (rest)}; p=3, s=4 -> {-1.5 (x3), +1.5 (rest)}; s=1 -> all +p.
"""

import json
import math

import numpy as np
import pytest

from popdyn.models.multi_index_fixedpoints import (
    FixedPoint,
    FixedPointSet,
    classify,
    fixed_points,
    riemannian_hessian,
    span_coordinates,
)
from popdyn.models.multi_index import MultiIndexProblem, gram, index_vectors

# Reference spectra (theory/simsek2025/equations.md): (p, s, k) -> [(eigenvalue, multiplicity as a function of d)]
THEORY_58 = {
    (4, 2, 3): [(-4.0, lambda d: 1), (2.0, lambda d: d - 2)],
    (3, 4, 4): [(-1.5, lambda d: 3), (1.5, lambda d: d - 4)],
    (3, 1, 3): [(3.0, lambda d: d - 1)],
    (4, 1, 3): [(4.0, lambda d: d - 1)],
    (5, 1, 2): [(5.0, lambda d: d - 1)],
}

#: Closed-form eigenvalues are exact up to rounding of a few O(1) operations.
EIG_ATOL = 1e-12
#: Second derivative by central differences with one Richardson step at h = 1e-2:
#: truncation ~ h^4/360 * l^(6) ~ 1e-10 * O(100), rounding ~ 1e-16 / h^2 * O(10) = 1e-11.
FD_TOL = 1e-7
#: Polished fixed points: Newton reaches machine precision on non-degenerate points.
CRIT_TOL = 1e-12


def expand(fp: FixedPoint) -> np.ndarray:
    """All eigenvalues with multiplicity (needs fp.d given)."""
    return np.repeat(fp.eigenvalues, fp.multiplicities)


# --------------------------------------------------------------------------------------
# Reference spectra and the general orthogonal formula
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("p,s,k", sorted(THEORY_58))
@pytest.mark.parametrize("d", [None, 9])
def test_theory_58_orthogonal_spectra(p, s, k, d):
    prob = MultiIndexProblem(f"he{p}", f"he{p}", np.eye(k))
    u = np.zeros(k)
    u[:s] = 1.0 / math.sqrt(s)
    fp = classify(prob, u, d=d)
    ref = THEORY_58[(p, s, k)]
    np.testing.assert_allclose(fp.eigenvalues, [lam for lam, _ in ref], atol=EIG_ATOL)
    if d is None:
        # in-span multiplicities are numbers; the outside family is "d - ..." (None)
        assert fp.multiplicities[-1] is None
        assert fp.multiplicity_labels[-1] == f"d-{s}"
    else:
        assert list(fp.multiplicities) == [m(d) for _, m in ref]
    assert fp.kind == ("minimum" if s == 1 else "saddle")
    if d is not None or s == 1:
        assert fp.index == (0 if s == 1 else s - 1)


@pytest.mark.parametrize("p", [3, 4, 5, 6])
@pytest.mark.parametrize("s", [1, 2, 3])
def test_orthogonal_general_formula(p, s):
    k, d = 3, 7
    prob = MultiIndexProblem(f"he{p}", f"he{p}", np.eye(k))
    u = np.zeros(k)
    u[:s] = 1.0 / math.sqrt(s)
    fp = classify(prob, u, d=d)
    expected = np.sort(np.r_[np.full(s - 1, -p * (p - 2) * s ** (1 - p / 2)), np.full(d - s, p * s ** (1 - p / 2))])
    np.testing.assert_allclose(np.sort(expand(fp)), expected, atol=EIG_ATOL, err_msg=f"p={p}, s={s}")


# --------------------------------------------------------------------------------------
# Riemannian Hessian against finite differences along geodesics (theory/CONVENTIONS.md)
# --------------------------------------------------------------------------------------
def geodesic_second_derivative(loss, w, z, h=1e-2):
    """d^2/dt^2 loss(w cos(t|z|) + z/|z| sin(t|z|)) at t = 0, Richardson-extrapolated."""
    n = np.linalg.norm(z)
    e = z / n

    def D(hh):
        f = [loss(w * math.cos(t * n) + e * math.sin(t * n)) for t in (-hh, 0.0, hh)]
        return (f[0] - 2 * f[1] + f[2]) / hh ** 2

    return (4 * D(h / 2) - D(h)) / 3   # cancels the h^2 term of the central difference


def fd_tangent_hessian(loss, w, T):
    """FD matrix of the Riemannian Hessian in the tangent basis T (polarisation)."""
    n = T.shape[1]
    M = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            if i == j:
                M[i, i] = geodesic_second_derivative(loss, w, T[:, i])
            else:
                a = geodesic_second_derivative(loss, w, T[:, i] + T[:, j])
                b = geodesic_second_derivative(loss, w, T[:, i] - T[:, j])
                M[i, j] = M[j, i] = (a - b) / 4
    return M


CASES_FD = {
    # name: (student, teacher, G, u)
    "he4 orthogonal, |S|=2": ("he4", "he4", np.eye(3), np.array([1, 1, 0]) / np.sqrt(2)),
    "h3+h4 equiangular average point": ("hermite:0,0,0,1,1", "hermite:0,0,0,1,1",
                                        gram("equiangular", 3, beta=0.3),
                                        np.full(3, math.sqrt((1 + 2 * 0.3) / 3))),
    "off-span critical point (g(u) = 0)": ("hermite:0,0,1,1", "hermite:0,0,1,1", np.eye(2),
                                           np.array([-2.0, -2.0]) / 3),
}


@pytest.mark.parametrize("name", sorted(CASES_FD))
def test_hessian_matches_fd_at_fixed_points(name):
    student, teacher, G, u = CASES_FD[name]
    prob = MultiIndexProblem(student, teacher, G)
    d = G.shape[0] + 3
    V = index_vectors(G, d, rng=1)
    fp = classify(prob, u, d=d)

    def loss(w):
        return float(prob.loss(V @ w))

    w = fp.embed(V)
    np.testing.assert_allclose(V @ w, u, atol=1e-12)
    H = riemannian_hessian(prob, u, V=V)
    np.testing.assert_allclose(H.w, w, atol=1e-12)
    T = H.tangent_basis()
    M = fd_tangent_hessian(loss, w, T)
    np.testing.assert_allclose(M, T.T @ H.matrix @ T, atol=FD_TOL, err_msg=name)
    # the classification's spectrum (with numeric multiplicities) equals the FD spectrum
    np.testing.assert_allclose(np.sort(expand(fp)), np.linalg.eigvalsh(M), atol=FD_TOL, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hessian_matches_fd_at_random_points(seed):
    """The formula is the Riemannian Hessian at any point, critical or not."""
    rng = np.random.default_rng(seed)
    k, d = 3, 6
    G = gram("random", k, d=5, rng=rng)
    prob = MultiIndexProblem("tanh", "hermite:0,1,0.5,1", G, degree=40)
    V = index_vectors(G, d, rng=rng)
    w = rng.standard_normal(d)
    w /= np.linalg.norm(w)
    H = riemannian_hessian(prob, V @ w, V=V, outside=w)
    np.testing.assert_allclose(H.w, w, atol=1e-12)
    T = H.tangent_basis()
    M = fd_tangent_hessian(lambda x: float(prob.loss(V @ x)), w, T)
    np.testing.assert_allclose(M, T.T @ H.matrix @ T, atol=FD_TOL)


def test_riemannian_gradient_is_velocity():
    """Riemannian gradient of l equals minus the spherical GF velocity; V grad = -u-ODE velocity."""
    G = gram("equiangular", 3, beta=0.4)
    prob = MultiIndexProblem("he3", "he3", G)
    V = index_vectors(G, 5, rng=3)
    w = np.array([0.3, -0.2, 0.5, 0.1, 0.4])
    w /= np.linalg.norm(w)
    H = riemannian_hessian(prob, V @ w, V=V, outside=w)
    np.testing.assert_allclose(-V @ H.gradient, prob.velocity(V @ w), atol=1e-14)


# --------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------
def expected_orthogonal_points(p, k):
    """Complete list (theory/simsek2025/equations.md): signed combinations (equal signs for odd p) + equator."""
    pts = []
    for mask in range(1, 2 ** k):
        S = [j for j in range(k) if mask >> j & 1]
        for signs in range(2 ** len(S)):
            eps = [1 if signs >> i & 1 == 0 else -1 for i in range(len(S))]
            if p % 2 == 1 and len(set(eps)) > 1:
                continue
            u = np.zeros(k)
            u[S] = np.array(eps) / math.sqrt(len(S))
            pts.append(u)
    pts.append(np.zeros(k))
    return np.array(pts)


@pytest.mark.parametrize("p,k", [(3, 3), (4, 3), (4, 2), (5, 3)])
def test_orthogonal_complete_set(p, k):
    prob = MultiIndexProblem(f"he{p}", f"he{p}", np.eye(k))
    fps = fixed_points(prob, n_random=30, rng=0)
    found = np.array([fp.u for fp in fps])
    ref = expected_orthogonal_points(p, k)
    assert len(found) == len(ref)
    dist = np.linalg.norm(found[:, None, :] - ref[None, :, :], axis=2)
    assert np.all(dist.min(axis=1) < 1e-10) and np.all(dist.min(axis=0) < 1e-10)
    for fp in fps:
        assert np.max(np.abs(prob.velocity(fp.u))) < CRIT_TOL, fp.origin
        if np.allclose(fp.u, 0):
            assert fp.origin == "equator" and fp.kind == "degenerate"
        s = int(np.count_nonzero(np.abs(fp.u) > 1e-8))
        if s and np.all(fp.u >= -1e-12):
            assert fp.kind == ("minimum" if s == 1 else "saddle")
            np.testing.assert_allclose(fp.eigenvalues[0], p if s == 1 else -p * (p - 2) * s ** (1 - p / 2),
                                       atol=EIG_ATOL)


@pytest.mark.parametrize("spec", ["he3", "he4"])
def test_random_search_alone_matches_seeded_search(spec):
    """Root finding from random starts (no seeds) recovers the seeded set (non-orthogonal G)."""
    prob = MultiIndexProblem(spec, spec, gram("equiangular", 3, beta=0.2))
    seeded = fixed_points(prob, n_random=0)
    rand = fixed_points(prob, n_random=300, rng=5, max_subset_size=0)   # 150 misses one saddle (he4)
    A = np.array([fp.w_coords for fp in seeded])
    B = np.array([fp.w_coords for fp in rand])
    assert len(A) == len(B)
    dist = np.linalg.norm(A[:, None] - B[None], axis=2)
    assert np.all(dist.min(axis=1) < 1e-9)
    assert [fp.kind for fp in seeded] == [fp.kind for fp in rand]


def test_biased_minimum_matches_ode_limit():
    """theory/simsek2025/equations.md: p=3, k=3, beta=0.2 < beta_c; the u-ODE from near v_3 converges to
    u ~ (0.29, 0.29, 0.99), which must be one of the minima found."""
    from scipy.integrate import solve_ivp

    G = gram("equiangular", 3, beta=0.2)
    prob = MultiIndexProblem("he3", "he3", G)
    mins = fixed_points(prob, n_random=20, rng=0).by_kind("minimum")
    assert len(mins) == 3
    u0 = np.array([0.25, 0.3, 0.95])
    u0 /= math.sqrt(u0 @ np.linalg.solve(G, u0))    # a unit w in span(V)
    sol = solve_ivp(lambda t, u: prob.velocity(u), (0, 200), u0, method="DOP853", rtol=1e-12, atol=1e-14)
    uT = sol.y[:, -1]
    np.testing.assert_allclose(uT, [0.2907, 0.2907, 0.9924], atol=1e-4)   # the rounded reference value
    assert min(np.linalg.norm(fp.u - uT) for fp in mins) < 1e-8
    # a non-orthogonal v_j itself is not a fixed point (non-orthogonal caveat, theory/simsek2025/equations.md)
    with pytest.raises(ValueError, match="not a fixed point"):
        classify(prob, G[2])


def test_equator_only_when_critical():
    assert any(fp.origin == "equator" for fp in fixed_points(MultiIndexProblem("he3", "he3", np.eye(2)),
                                                                n_random=0))
    relu = fixed_points(MultiIndexProblem("relu", "relu", np.eye(2)), n_random=10, rng=0)
    assert not any(fp.origin == "equator" for fp in relu)        # g(0) = gamma_1 = 1/4 != 0
    assert all(fp.in_span for fp in relu)
    assert relu.by_kind("minimum")                               # the minimum near (v1 + v2)


def test_rank_deficient_gram_and_d_equal_rank():
    V = np.array([[1.0, 0.0], [0.0, 1.0], [1 / np.sqrt(2), 1 / np.sqrt(2)]])
    prob = MultiIndexProblem("he4", "he4", V @ V.T)
    L = span_coordinates(prob.G)
    assert L.shape == (3, 2)
    np.testing.assert_allclose(L @ L.T, prob.G, atol=1e-14)
    fps = fixed_points(prob, n_random=20, rng=0, d=2)
    for fp in fps:
        assert fp.w_coords.shape == (2,)
        assert all(isinstance(m, int) for m in fp.multiplicities)
        assert sum(fp.multiplicities) == 1                       # S^1: one tangent direction
        assert np.max(np.abs(prob.velocity(fp.u))) < 1e-9
    # w = v_3 is a quartic-degenerate minimum: l(t) = -1.5 + t^4 along the circle
    deg = [fp for fp in fps if fp.kind == "degenerate"]
    assert len(deg) == 2 and all(abs(fp.loss + 1.5) < 1e-12 for fp in deg)


def test_result_types_and_json():
    fps = fixed_points(MultiIndexProblem("he4", "he4", np.eye(2)), n_random=5, rng=0)
    assert isinstance(fps, FixedPointSet) and len(fps) == 9
    assert fps[0] is list(fps)[0]
    json.dumps(fps.as_dict())
    text = fps.summary()
    assert "minimum" in text and "saddle" in text and "equator" in text
    assert [fp.loss for fp in fps] == sorted(fp.loss for fp in fps)
    with pytest.raises(ValueError, match="`kind`"):
        fps.by_kind("minimal")


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
def test_bad_input():
    prob = MultiIndexProblem("he3", "he3", np.eye(2))
    with pytest.raises(TypeError, match="`problem`"):
        classify("he3", [1.0, 0.0])
    with pytest.raises(ValueError, match="not the overlap vector"):
        classify(prob, [1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        classify(prob, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="not a fixed point"):
        classify(prob, [0.6, 0.8])
    with pytest.raises(ValueError, match="`n_random`"):
        fixed_points(prob, n_random=-1)
    with pytest.raises(ValueError, match="`d`"):
        fixed_points(prob, d=1)
    with pytest.raises(ValueError, match="constant"):
        fixed_points(MultiIndexProblem("he3", "he4", np.eye(2)))
    with pytest.raises(ValueError, match="`tol`"):
        classify(prob, [1.0, 0.0], tol=0.0)
