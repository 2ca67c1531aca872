"""popdyn.chaos: exact chaos projections of g(p(x)) against independent routes.

Routes: tensor Gauss-Hermite quadrature (exact for polynomials, L <= 3), direct expansion in the
tensor Hermite basis (exact, a few coordinates), Monte Carlo with standard errors, and a
reference table of exact values.
"""

import importlib.util
import itertools
import math
import pathlib
import warnings

import numpy as np
import pytest
import sympy
from numpy.polynomial import hermite_e as H

from popdyn import chaos
from popdyn.chaos import (
    MAX_CHAOS_DEGREE,
    Feature,
    Piece,
    ZeroSteinCoefficientWarning,
    chaos_basis,
    chaos_norms_mc,
    chaos_projection,
    feature,
    leading_order,
    polynomial_chaos_norms,
    stein_lemma,
    stein_lemma_mc,
)
from popdyn.hermite import z_symbol

z = z_symbol()
L = chaos.L_symbol()
He3 = z ** 3 - 3 * z
G_EXP = z + z ** 2 / 2 + z ** 3 / 6          # truncated exponential

# Reference values for p = L^(-1/2) sum_l h_k(x_l): (k, g, c*, err^2 as a function of L or None,
# err^2 decimals, low-degree mass as a function of L or None, its decimals).  From an independent
# exact computation (a separate joint-moment script); decimals quoted to 3-4 significant digits.
STEIN_TABLE = [
    (2, z ** 3, 3, 144 / L ** 2, {16: 0.5625, 256: 0.00220}, sympy.Integer(0), {}),
    (3, z ** 3, 3, 8100 / L ** 2, {16: 31.64, 64: 1.9775, 256: 0.1236}, 486 / L ** 2,
     {16: 1.898, 64: 0.1187, 256: 0.00742}),
    (2, G_EXP, sympy.Rational(3, 2), None, {16: 0.2290, 64: 0.0433, 256: 0.00926}, sympy.Integer(0), {}),
    (3, G_EXP, sympy.Rational(3, 2), 225 / L ** 2, {16: 0.8789, 64: 0.0549, 256: 0.00343}, None,
     {16: 0.334, 64: 0.0736, 256: 0.0178}),
    (2, z ** 2, 0, 8 / L, {}, sympy.Integer(0), {}),
    (3, He3, 0, 8100 / L ** 2, {256: 0.1236}, 486 / L ** 2, {}),
]
#: Correlations E[h p] = E[g(p) p] from the same source.
CORRELATIONS = [(3, z ** 3, 3 + 90 / L), (2, z ** 3, 3 + 12 / L)]

#: float64 rounding of quadrature sums of up to ~1e5 terms of size up to ~1e6, relative.
QUAD_RTOL = 1e-10
#: Monte Carlo: polynomials of Gaussians have heavy tails, so the batch standard error is itself
#: uncertain (over 60 seeds per case the largest deviation was 4.5 SE); 5 SE, with the SE checked to
#: be small against the value so that a wrong exact answer cannot pass.
MC_SIGMAS = 5.0
MC_MAX_RELATIVE_SE = 0.06
MC_SEEDS = (0, 1)         # 15 seeds (0..14) were checked by hand; two keep the suite fast


def _unit_in_last_digit(x: float) -> float:
    """One unit in the last quoted digit of a decimal reference value (e.g. 0.00926 -> 1e-5)."""
    text = repr(x)
    digits = len(text.split(".")[1]) if "." in text else 0
    return 10.0 ** -digits


# --------------------------------------------------------------------------------------
# exact tables
# --------------------------------------------------------------------------------------
def test_power_to_he_table_matches_numpy():
    for n in range(21):
        ref = H.poly2herme([0] * n + [1])
        got = np.zeros(n + 1)
        for j, c in chaos._power_to_he(n):
            got[j] = c
        np.testing.assert_allclose(got, ref[: n + 1], rtol=1e-14, err_msg=f"At n={n}")


# --------------------------------------------------------------------------------------
# reference table
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", STEIN_TABLE, ids=lambda r: f"k={r[0]}, g={r[1]}")
def test_stein_table(row):
    k, g, c_star, err_exact, err_dec, low_exact, low_dec = row
    ctx = pytest.warns(ZeroSteinCoefficientWarning) if c_star == 0 else warnings.catch_warnings()
    with ctx:
        res = stein_lemma(g, k, None)
    assert res.c_star == c_star
    if err_exact is not None:
        assert sympy.simplify(res.err2 - err_exact) == 0, res.err2
    if low_exact is not None:
        assert sympy.simplify(res.low_mass - low_exact) == 0, res.low_mass
    for n, ref in err_dec.items():
        assert abs(float(res.err2.subs(L, n)) - ref) <= _unit_in_last_digit(ref), (n, res.err2)
    for n, ref in low_dec.items():
        assert abs(float(res.low_mass.subs(L, n)) - ref) <= _unit_in_last_digit(ref), (n, res.low_mass)


@pytest.mark.parametrize("k, g, ref", CORRELATIONS)
def test_correlation_with_feature(k, g, ref):
    proj = chaos_projection(g, feature(k, None))
    total = sympy.Add(*proj.overlaps)                  # E[h p] = sum_j <P_j h, P_j p>
    assert sympy.simplify(total - ref) == 0


def test_rates_from_exact_expression():
    res = stein_lemma(G_EXP, 2, None)
    assert res.err2_order == (-1, 2) and res.err2_regime == "O(1/L)"
    assert sympy.simplify(res.err2 - (2 / L + 4 * sympy.sqrt(2) / L ** sympy.Rational(3, 2) + 4 / L ** 2)) == 0
    res = stein_lemma(G_EXP, 3, None)
    assert res.err2_order == (-2, 225) and res.low_mass_order == (-1, sympy.Rational(9, 2))
    assert res.low_mass_regime == "O(1/L)"
    # homogeneous feature: the total error over degrees 1..k is err^2 + the low-degree mass
    assert sympy.simplify(res.err2_total - res.err2 - res.low_mass) == 0
    proj = res.projection
    assert sympy.simplify(proj.error(res.c_star, 3) - res.err2) == 0
    assert sympy.simplify(proj.mass([1, 2]) - res.low_mass) == 0
    assert sympy.simplify(proj.second_moment - sympy.Add(*proj.norms)) == 0
    # Parseval: E[h^2] for h = p + p^2/2 + p^3/6 from the moments E[p^m] computed independently
    num = chaos_projection(G_EXP, feature(3, 5))
    m = [chaos_projection(z ** n, feature(3, 5)).mean for n in range(7)]        # E[p^n]
    e_h2 = m[2] + m[3] + m[4] / 4 + m[4] / 3 + m[5] / 6 + m[6] / 36
    assert sympy.simplify(num.second_moment - e_h2) == 0


def test_failure_mode_warns():
    with pytest.warns(ZeroSteinCoefficientWarning, match="E\\[g'\\(z\\)\\] = 0"):
        res = stein_lemma("poly:z**3 - 3*z", 3, 256)
    assert res.c_star == 0
    assert res.err2 == sympy.Rational(8100, 256 ** 2)
    assert res.projection.norms[3] == res.err2       # c* = 0: err^2 is the whole degree-3 mass


def test_symbolic_and_numeric_L_agree():
    q = sympy.expand(sympy.hermite_prob(3, z) / sympy.sqrt(6))
    for g, p_sym in [(G_EXP, feature(2, None)), (z ** 3 + z, feature(q, None)),
                     (z ** 2 + z, Feature(Piece("poly:z**2"), None))]:      # the last has E[p] = sqrt(L)
        proj = chaos_projection(g, p_sym)
        for n in (1, 3, 16):
            num = chaos_projection(g, p_sym.with_L(n))
            for name in ("norms", "overlaps", "feature_norms"):
                for a, b in zip(getattr(proj, name), getattr(num, name)):
                    assert sympy.simplify(a.subs(L, n) - b) == 0, (g, n, name)
            assert sympy.simplify(proj.mean.subs(L, n) - num.mean) == 0


# --------------------------------------------------------------------------------------
# independent route 1: tensor Gauss-Hermite quadrature (exact for polynomials)
# --------------------------------------------------------------------------------------
def _quadrature_chaos(h, p, dim, max_degree, nodes):
    """Norms ||P_j h||^2 and overlaps <P_j h, P_j p> from all multi-index coefficients (numpy only)."""
    x, w = H.hermegauss(nodes)
    w = w / math.sqrt(2 * math.pi)
    X = np.stack([a.ravel() for a in np.meshgrid(*([x] * dim), indexing="ij")], axis=1)
    W = np.prod(np.stack([a.ravel() for a in np.meshgrid(*([w] * dim), indexing="ij")], axis=1), axis=1)
    hv, pv = h(X), p(X)
    he = np.zeros((max_degree + 1,) + X.shape)
    he[0] = 1.0
    he[1] = X
    for n in range(1, max_degree):
        he[n + 1] = X * he[n] - n * he[n - 1]
    for n in range(max_degree + 1):
        he[n] /= math.sqrt(math.factorial(n))
    norms, overlaps = np.zeros(max_degree + 1), np.zeros(max_degree + 1)
    for alpha in itertools.product(range(max_degree + 1), repeat=dim):
        j = sum(alpha)
        if j > max_degree:
            continue
        phi = np.prod([he[a][:, i] for i, a in enumerate(alpha)], axis=0)
        ch, cp = np.dot(W, hv * phi), np.dot(W, pv * phi)
        norms[j] += ch * ch
        overlaps[j] += ch * cp
    return norms, overlaps


def _h(k):
    return np.polynomial.hermite_e.HermiteE.basis(k) / math.sqrt(math.factorial(k))


def _assert_close(exact, quad, what):
    exact = np.array([float(v) for v in exact])
    scale = np.maximum(1.0, np.abs(exact))
    np.testing.assert_allclose(quad[: exact.size] / scale, exact / scale, rtol=0, atol=QUAD_RTOL, err_msg=what)


@pytest.mark.parametrize("L_", [1, 2, 3])
@pytest.mark.parametrize("k, g, gfun", [(4, z ** 3 + z, lambda y: y ** 3 + y),
                                        (3, G_EXP, lambda y: y + y ** 2 / 2 + y ** 3 / 6)])
def test_quadrature_standard_feature(L_, k, g, gfun):
    proj = chaos_projection(g, feature(k, L_))
    hk = _h(k)
    p = lambda X: hk(X).sum(axis=1) / math.sqrt(L_)              # noqa: E731
    norms, overlaps = _quadrature_chaos(lambda X: gfun(p(X)), p, L_, proj.degree, nodes=3 * k + 4)
    _assert_close(proj.norms, norms, f"norms, L={L_}")
    _assert_close(proj.overlaps, overlaps, f"overlaps, L={L_}")


def test_quadrature_mixed_pieces_with_mean():
    # p = L^(-1/2) [ sum_{2L} h_1 + (1/2) sum_{L} (z^2 + z/3) ] at L = 1: three coordinates, E[p] != 0
    feat = Feature([Piece(1, count=2), Piece(sympy.Rational(1, 3) * z + z ** 2, weight=sympy.Rational(1, 2))], 1)
    g = z ** 3 - 2 * z ** 2 + z
    proj = chaos_projection(g, feat)
    p = lambda X: X[:, 0] + X[:, 1] + 0.5 * (X[:, 2] ** 2 + X[:, 2] / 3)    # noqa: E731
    norms, overlaps = _quadrature_chaos(lambda X: p(X) ** 3 - 2 * p(X) ** 2 + p(X), p, 3, proj.degree, nodes=12)
    _assert_close(proj.norms, norms, "norms")
    _assert_close(proj.overlaps, overlaps, "overlaps")
    assert abs(float(proj.mean) - float(np.dot(*_gh_mean_weights(lambda X: p(X) ** 3 - 2 * p(X) ** 2 + p(X), 3)))) \
        < QUAD_RTOL * 10


def _gh_mean_weights(f, dim, nodes=12):
    x, w = H.hermegauss(nodes)
    w = w / math.sqrt(2 * math.pi)
    X = np.stack([a.ravel() for a in np.meshgrid(*([x] * dim), indexing="ij")], axis=1)
    W = np.prod(np.stack([a.ravel() for a in np.meshgrid(*([w] * dim), indexing="ij")], axis=1), axis=1)
    return W, f(X)


def test_quadrature_block_pieces():
    # pieces on blocks of two coordinates: q(x, y) = x y + (x^2 - 1)/2, two copies (L = 2), weight 1
    a, b = sympy.symbols("a b")
    feat = Feature(Piece(a * b + (a ** 2 - 1) / 2, variables=(a, b)), 2)
    g = z ** 2 + z
    proj = chaos_projection(g, feat)
    q = lambda u, v: u * v + (u ** 2 - 1) / 2                                 # noqa: E731
    p = lambda X: (q(X[:, 0], X[:, 1]) + q(X[:, 2], X[:, 3])) / math.sqrt(2)  # noqa: E731
    norms, overlaps = _quadrature_chaos(lambda X: p(X) ** 2 + p(X), p, 4, proj.degree, nodes=7)
    _assert_close(proj.norms, norms, "norms")
    _assert_close(proj.overlaps, overlaps, "overlaps")
    np.testing.assert_allclose(feat.evaluate(np.arange(8.0).reshape(2, 4) / 4), p(np.arange(8.0).reshape(2, 4) / 4),
                               rtol=1e-14)
    # a three-coordinate block x y w + x with weight 2 (L = 1), and g = z^3 - z
    c = sympy.Symbol("c")
    feat = Feature(Piece(a * b * c + a, weight=2, variables=(a, b, c)), 1)
    proj = chaos_projection(z ** 3 - z, feat)
    p = lambda X: 2 * (X[:, 0] * X[:, 1] * X[:, 2] + X[:, 0])                     # noqa: E731
    norms, overlaps = _quadrature_chaos(lambda X: p(X) ** 3 - p(X), p, 3, proj.degree, nodes=12)
    _assert_close(proj.norms, norms, "norms, 3-coordinate block")
    _assert_close(proj.overlaps, overlaps, "overlaps, 3-coordinate block")


@pytest.mark.parametrize("seed", range(4))
def test_quadrature_random_polynomials(seed):
    """Random rational g (degree <= 3) and q (degree <= 3, any mean) at L = 1, 2."""
    rng = np.random.default_rng(seed)
    gc = [sympy.Rational(int(c), 4) for c in rng.integers(-4, 5, size=4)]
    qc = [sympy.Rational(int(c), 3) for c in rng.integers(-3, 4, size=4)]
    qc[int(rng.integers(1, 4))] = sympy.Integer(1)                # degree >= 1
    g = sum(c * z ** i for i, c in enumerate(gc))
    q = sum(c * z ** i for i, c in enumerate(qc))
    L_ = int(rng.integers(1, 3))
    proj = chaos_projection(g, feature(q, L_))
    qf = lambda X: sum(float(c) * X ** i for i, c in enumerate(qc))              # noqa: E731
    p = lambda X: qf(X).sum(axis=1) / math.sqrt(L_)                               # noqa: E731
    gf = lambda y: sum(float(c) * y ** i for i, c in enumerate(gc))               # noqa: E731
    norms, overlaps = _quadrature_chaos(lambda X: gf(p(X)), p, L_, proj.degree, nodes=12)
    _assert_close(proj.norms, norms, f"seed {seed}: g={g}, q={q}, L={L_}")
    _assert_close(proj.overlaps, overlaps, f"seed {seed}")


# --------------------------------------------------------------------------------------
# independent route 2: direct expansion in the tensor Hermite basis
# --------------------------------------------------------------------------------------
def test_direct_expansion_k4_L7():
    """k = 4, g = z^3 + z, L = 7 (not in the table): err^2 and every other degree exactly."""
    L_, k = 7, 4
    xs = sympy.symbols(f"x0:{L_}")
    p = sum(sympy.hermite_prob(k, v) for v in xs) / sympy.sqrt(sympy.factorial(k) * L_)
    res = stein_lemma(z ** 3 + z, k, L_)
    direct = polynomial_chaos_norms(p ** 3 + p - res.c_star * p, xs)   # P_j(h - c p) = P_j h for j != k
    assert direct[k] == res.err2
    for j in range(len(direct)):
        if j != k:
            assert direct[j] == res.projection.norms[j], j
    assert sum(direct[1:k]) == res.low_mass


@pytest.mark.parametrize("k, sizes", [(2, range(1, 6)), (3, range(1, 4))])
def test_family_in_L_matches_direct_expansion(k, sizes):
    """err^2(L) is a polynomial in L^(-1/2) of degree <= 4 (k = 2; in 1/L of degree <= 2 for odd k),
    so agreement with direct expansion at 5 (3) sizes pins the whole family, hence the table at L = 256."""
    res = stein_lemma(G_EXP, k, None)
    exps = {leading_order(t, L)[0] for t in sympy.Add.make_args(res.err2)}
    assert all(-2 <= e <= 0 for e in exps) and (k == 2 or all(e.is_integer for e in exps))
    for n in sizes:
        xs = sympy.symbols(f"x0:{n}")
        p = sum(sympy.hermite_prob(k, v) for v in xs) / sympy.sqrt(sympy.factorial(k) * n)
        h = p + p ** 2 / 2 + p ** 3 / 6
        direct = polynomial_chaos_norms(h - res.c_star * p, xs)
        assert sympy.simplify(direct[k] - res.err2.subs(L, n)) == 0, n
        assert sympy.simplify(sum(direct[1:k]) - res.low_mass.subs(L, n)) == 0, n


def test_polynomial_chaos_norms_overlaps():
    a, b = sympy.symbols("a b")
    h = a ** 2 * b + a
    assert polynomial_chaos_norms(h, (a, b)) == (0, 2, 0, 2)           # a^2 b + a = He_2(a) b + b + a
    assert polynomial_chaos_norms(h, (a, b), other=b + a * b) == (0, 1, 0, 0)


# --------------------------------------------------------------------------------------
# independent route 3: Monte Carlo with standard errors
# --------------------------------------------------------------------------------------
def _assert_mc(est, se, exact, what, *, powerful=True):
    assert abs(est - exact) <= MC_SIGMAS * se, f"{what}: MC {est:.5g} +- {se:.3g} vs exact {exact:.6g}"
    if powerful and exact != 0:
        assert se <= MC_MAX_RELATIVE_SE * abs(exact), f"{what}: SE {se:.3g} too large to test {exact:.6g}"


@pytest.mark.parametrize("seed", MC_SEEDS)
@pytest.mark.parametrize("g, k, L_, n", [(z + z ** 2 / 2, 2, 4, 300_000), (z + z ** 2 / 2, 3, 3, 1_000_000),
                                         (G_EXP, 2, 4, 500_000)])
def test_stein_lemma_mc_agrees(seed, g, k, L_, n):
    exact = stein_lemma(g, k, L_)
    mc = stein_lemma_mc(g, k, L_, n_samples=n, n_batches=100, rng=seed)
    assert mc.c_star == float(exact.c_star)
    _assert_mc(mc.err2, mc.err2_se, float(exact.err2), "err^2")
    if float(exact.low_mass) != 0:
        _assert_mc(mc.low_mass, mc.low_mass_se, float(exact.low_mass), "low-degree mass")


@pytest.mark.parametrize("seed", MC_SEEDS)
def test_chaos_norms_mc_any_callable(seed):
    """A two-type feature with a block piece, as a plain callable of x: every degree."""
    a, b = sympy.symbols("a b")
    feat = Feature([Piece(1), Piece(a * b, weight=sympy.Rational(1, 2), variables=(a, b))], 2)
    g = z ** 2 / 2 + z
    proj = chaos_projection(g, feat).as_floats()
    est = chaos_norms_mc(lambda X: (lambda p: p ** 2 / 2 + p)(feat.evaluate(X)), feat.dim, 4,
                         n_samples=60_000, n_batches=100, rng=seed)
    for j in range(5):
        _assert_mc(est.norms[0, j], est.se[0, j], proj["norms"][j], f"degree {j}", powerful=proj["norms"][j] > 0.25)


def test_mc_callables_match_polynomial_route():
    """g and q as callables draw the same samples as their polynomial forms (same rng)."""
    hq = _h(2)
    poly = stein_lemma_mc(z + z ** 2 / 2, 2, 3, n_samples=4000, n_batches=4, rng=11)
    call = stein_lemma_mc(lambda y: y + y ** 2 / 2, lambda x: hq(x), 3, k=2, n_samples=4000, n_batches=4, rng=11)
    assert call.c_star == pytest.approx(poly.c_star, abs=1e-10)      # quadrature vs exact E[g']
    assert call.err2 == pytest.approx(poly.err2, rel=1e-8)
    assert call.low_mass == pytest.approx(poly.low_mass, rel=1e-8, abs=1e-12)


def test_mc_failure_mode_warns():
    with pytest.warns(ZeroSteinCoefficientWarning):
        mc = stein_lemma_mc("poly:z**2", 2, 3, n_samples=2000, n_batches=10, rng=0)
    assert mc.c_star == 0
    with pytest.warns(ZeroSteinCoefficientWarning):
        stein_lemma_mc(lambda y: y ** 2, 2, 3, n_samples=2000, n_batches=10, rng=0)   # quadrature E[g'] ~ 0


def test_mc_unbiased_simple():
    # h = x1 x2 + x1: ||P_1 h||^2 = 1, ||P_2 h||^2 = 1, ||P_0 h||^2 = 0
    est = chaos_norms_mc(lambda X: X[:, 0] * X[:, 1] + X[:, 0], 2, 3, n_samples=50_000, rng=3)
    for j, ref in enumerate([0.0, 1.0, 1.0, 0.0]):
        assert abs(est.norms[0, j] - ref) <= MC_SIGMAS * est.se[0, j], j
    total, se = est.total([1, 2])
    assert abs(total - 2.0) <= MC_SIGMAS * se


def test_chaos_basis_is_orthonormal():
    x, w = H.hermegauss(8)
    w = w / math.sqrt(2 * math.pi)
    X = np.stack([a.ravel() for a in np.meshgrid(x, x, x, indexing="ij")], axis=1)
    W = np.prod(np.stack([a.ravel() for a in np.meshgrid(w, w, w, indexing="ij")], axis=1), axis=1)
    Phi = np.concatenate([chaos_basis(X, j)[0] for j in range(4)], axis=1)
    np.testing.assert_allclose((Phi * W[:, None]).T @ Phi, np.eye(Phi.shape[1]), atol=1e-12)
    _, alphas = chaos_basis(X[:2], 3)
    assert alphas.shape == (10, 3) and np.all(alphas.sum(axis=1) == 3)


# --------------------------------------------------------------------------------------
# leading order and validation
# --------------------------------------------------------------------------------------
def test_leading_order():
    assert leading_order(2 / L + 3 / L ** 2, L) == (-1, 2)
    assert leading_order(sympy.sqrt(2) / L - sympy.sqrt(2) / L + 5 / L ** 3, L) == (-3, 5)
    assert leading_order(sympy.Integer(0), L) == (None, 0)
    assert leading_order(7 + 1 / sympy.sqrt(L), L) == (0, 7)
    with pytest.raises(ValueError, match="sum of constants times powers"):
        leading_order(sympy.sin(L), L)


@pytest.mark.parametrize("g, exc, match", [
    ("relu", ValueError, "must be a polynomial.*Monte Carlo"),
    (lambda y: y, TypeError, "Monte Carlo route"),
    (sympy.sin(z), ValueError, "must be a polynomial"),
    (z ** 11, ValueError, "degree 11"),
    (z * sympy.Symbol("y"), ValueError, "found symbols"),
    ("poly:__import__('os').system('echo hi')", ValueError, "unexpected token"),
    ("poly:z**3 + sqrt(-1)*z", ValueError, "not a real number"),
    (object(), TypeError, "`g` must be"),
])
def test_bad_g(g, exc, match):
    with pytest.raises(exc, match=match):
        chaos_projection(g, feature(2, 4))


@pytest.mark.parametrize("q, L_, exc, match", [
    (0, 4, ValueError, "`poly` must be an integer >= 1"),
    (13, 4, ValueError, "<= 12"),
    (True, 4, TypeError, "`poly` must be"),
    ("poly:z**2", 4, ValueError, "normalised"),
    (2, 0, ValueError, "`L` must be an integer >= 1"),
    (2, 2.5, TypeError, "`L` must be an integer"),
    (2, True, TypeError, "`L` must be an integer"),
    (2, "16", TypeError, "`L` must be an integer"),
])
def test_bad_q_and_L(q, L_, exc, match):
    with pytest.raises(exc, match=match):
        stein_lemma("poly:z**3", q, L_)


def test_bad_pieces_and_features():
    a, b, c, d = sympy.symbols("a b c d")
    with pytest.raises(ValueError, match="`weight` must be non-zero"):
        Piece(2, weight=0)
    with pytest.raises(TypeError, match="`weight` must be a real number"):
        Piece(2, weight="1")
    with pytest.raises(ValueError, match="`count` must be an integer >= 1"):
        Piece(2, count=0)
    with pytest.raises(ValueError, match="MAX_BLOCK_DIM"):
        Piece(a * b * c * d, variables=(a, b, c, d))
    with pytest.raises(ValueError, match="degree >= 1"):
        Piece(sympy.Integer(3))
    with pytest.raises(TypeError, match="spec strings are polynomials in z"):
        Piece("poly:z**2", variables=(a,))
    with pytest.raises(TypeError, match="`pieces`"):
        Feature([2, 3], 4)
    with pytest.raises(TypeError, match="`p` must be a Feature"):
        chaos_projection("poly:z**2", 3)
    with pytest.raises(ValueError, match="symbolic"):
        _ = feature(2, None).dim
    with pytest.raises(ValueError, match="MAX_CHAOS_DEGREE"):
        chaos_projection(z ** 10, feature(MAX_CHAOS_DEGREE // 10 + 1, 4))
    with pytest.raises(ValueError, match="`L` must be None"):
        stein_lemma("poly:z**3", feature(3, 4), 4)


def test_bad_monte_carlo_input():
    with pytest.raises(TypeError, match="`h` must be a callable"):
        chaos_norms_mc(3.0, 2, 2)
    with pytest.raises(ValueError, match="MAX_MC_BASIS"):
        chaos_norms_mc(lambda X: X[:, 0], 200, 3)
    with pytest.raises(ValueError, match="`n_samples` must be an integer >= 80"):
        chaos_norms_mc(lambda X: X[:, 0], 2, 2, n_samples=10, n_batches=40)
    with pytest.raises(ValueError, match="`n_batches` must be an integer >= 2"):
        chaos_norms_mc(lambda X: X[:, 0], 2, 2, n_samples=10, n_batches=1)
    with pytest.raises(ValueError, match="must return shape"):
        chaos_norms_mc(lambda X: X[:5, 0], 2, 1, n_samples=1000, rng=0)
    with pytest.raises(ValueError, match="non-finite"):
        chaos_norms_mc(lambda X: np.where(X[:, 0] > 0, np.inf, 0.0), 2, 1, n_samples=1000, rng=0)
    with pytest.raises(TypeError, match="`rng`"):
        chaos_norms_mc(lambda X: X[:, 0], 2, 1, n_samples=1000, rng="seed")
    with pytest.raises(ValueError, match="`k` is required"):
        stein_lemma_mc("poly:z**3", lambda x: x, 3)


# --------------------------------------------------------------------------------------
# the claims (theory/wang2023/lemma.py)
# --------------------------------------------------------------------------------------
def _lemma_module():
    """theory/wang2023/lemma.py loaded from its file: it imports only popdyn, so this tests it
    without the rest of the paper's package (popdyn_theory.wang2023 also loads the models)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "theory" / "wang2023" / "lemma.py"
    spec = importlib.util.spec_from_file_location("_wang2023_lemma", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lemma_claims_pass():
    lemma = _lemma_module()
    assert lemma.PAPER == "2311.13774"
    names = [c.name for c in lemma.LEMMA_CLAIMS]
    assert names == ["err_rate_odd", "err_rate_quadratic", "low_degree_mass", "failure_mode"]
    for claim in lemma.LEMMA_CLAIMS:
        rows = claim.run(True, np.random.default_rng(0))
        assert rows
        for r in rows:
            assert r.paper == "2311.13774" and r.predicted and r.measured
            assert r.passed, f"{r.claim}: predicted {r.predicted}, measured {r.measured}"


def test_lemma_predictions_are_independent_of_the_engine():
    """The predicted 1/L coefficients come from 1-D moments; spot-check them by hand."""
    lemma = _lemma_module()
    # k = 2: E[h_2^3] = 2 sqrt 2; g = z + z^2/2 + z^3/6: a(g) = 1/2  ->  8/4 = 2
    assert lemma.predicted_err2_coefficient(G_EXP, 2) == 2
    # k = 3: E[h_3^2 h_2]^2 = 18, E[h_3^2 h_1] = 0; (E[g'']/2)^2 = 1/4  ->  9/2
    assert lemma.predicted_low_mass_coefficient(G_EXP, 3) == sympy.Rational(9, 2)
    assert lemma.predicted_err2_coefficient(z + z ** 4 - 10 * z ** 2, 2) == 0
