"""popdyn.samplers: the exact laws (moments against theory), the stream-order contract, bad input.

Monte Carlo checks compare sample moments with their exact values, to within ``MC_Z``
standard errors computed from the exact law (not estimated), with fixed seeds.
"""

import math

import numpy as np
import pytest

from popdyn.samplers import BartlettFactor, bartlett_factor, chi_square, sphere_coordinate, wishart

#: Sample moments must lie within this many (exact) standard errors of the theory: with
#: ~150 comparisons over the file, a 5-sigma two-sided miss has probability ~1e-4 for a
#: correct sampler, while a wrong degree of freedom (n -> n +- 1) misses by >> 5 SE.
MC_Z = 5.0
#: Monte Carlo sample size (matrices or scalars per case).
N_MC = 40_000


def _assert_moment(samples, expect, se, what):
    err = np.abs(np.mean(samples, axis=0) - expect)
    assert np.all(err <= MC_Z * se), f"{what}: |mean - theory| = {err} > {MC_Z} x SE = {MC_Z * se}"


# --------------------------------------------------------------------------------------
# chi-square
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2.5, 7, 10**6])
def test_chi_square_mean_and_variance(k):
    """E X = k, Var X = 2k; SE of the variance from the central 4th moment 12k^2 + 48k."""
    x = chi_square(np.random.default_rng(1), k, size=N_MC)
    _assert_moment(x, k, math.sqrt(2 * k / N_MC), "chi2 mean")
    _assert_moment((x - k) ** 2, 2 * k, math.sqrt((8 * k * k + 48 * k) / N_MC), "chi2 variance")
    assert np.all(x >= 0)


def test_chi_square_zero_dof_and_broadcasting():
    assert np.all(chi_square(0, 0, size=5) == 0.0)
    x = chi_square(2, np.array([1.0, 4.0, 9.0]), size=(N_MC, 3))
    _assert_moment(x, np.array([1.0, 4.0, 9.0]), np.sqrt(2 * np.array([1.0, 4.0, 9.0]) / N_MC), "array dof")


def test_chi_square_equals_numpy_chisquare_bitwise():
    """The documented stream contract: the same numbers as ``Generator.chisquare``."""
    a = chi_square(np.random.default_rng(3), 5.5, size=1000)
    b = np.random.default_rng(3).chisquare(5.5, size=1000)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# coordinate of a Haar unit vector
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 50])
def test_sphere_coordinate_moments(n):
    """E x = 0, E x^2 = 1/n, E x^4 = 3/(n(n+2)) for x = theta . w, w Haar on S^{n-1}."""
    x = sphere_coordinate(np.random.default_rng(4), n, size=N_MC)
    assert np.all(np.abs(x) <= 1.0)
    m2, m4 = 1.0 / n, 3.0 / (n * (n + 2))
    _assert_moment(x, 0.0, math.sqrt(m2 / N_MC), "sphere mean")
    _assert_moment(x * x, m2, math.sqrt((m4 - m2 * m2) / N_MC), "sphere second moment")


def test_sphere_coordinate_dimension_one_is_a_sign():
    x = sphere_coordinate(5, 1, size=100)
    assert set(np.unique(x)) <= {-1.0, 1.0}


# --------------------------------------------------------------------------------------
# Wishart by the Bartlett decomposition
# --------------------------------------------------------------------------------------
BARTLETT_CASES = [  # (dof n, dim p, order, singular)
    (7, 3, "chi2_first", "triangular"),
    (7, 3, "normals_first", "gaussian"),
    (2, 4, "chi2_first", "triangular"),
    (2, 4, "normals_first", "gaussian"),
    (1, 1, "chi2_first", "triangular"),
    (3, 3, "normals_first", "triangular"),
    (10**6, 2, "chi2_first", "triangular"),
]


@pytest.mark.parametrize("n,p,order,singular", BARTLETT_CASES)
def test_bartlett_factor_has_wishart_moments(n, p, order, singular):
    """S = F F^T ~ Wishart_p(n, I): E S = n I; Var S_ii = 2n, Var S_ij = n (i != j);
    Cov(S_ii, S_jj) = 0.  SEs: Var((S_ii - n)^2) = 8n^2 + 48n, Var(S_ij^2) = 2n^2 + 6n."""
    F = BartlettFactor(n, p, order=order, singular=singular).draw(np.random.default_rng(6), size=(N_MC,))
    assert F.shape == (N_MC, p, min(n, p) if singular == "gaussian" else p)
    S = F @ F.transpose(0, 2, 1)
    d = np.arange(p)
    diag = S[:, d, d]
    iu = np.triu_indices(p, 1)
    off = S[:, iu[0], iu[1]]
    _assert_moment(diag, n, math.sqrt(2 * n / N_MC), "E S_ii")
    _assert_moment((diag - n) ** 2, 2 * n, math.sqrt((8 * n * n + 48 * n) / N_MC), "Var S_ii")
    if p > 1:
        _assert_moment(off, 0.0, math.sqrt(n / N_MC), "E S_ij")
        _assert_moment(off ** 2, n, math.sqrt((2 * n * n + 6 * n) / N_MC), "Var S_ij")
        # Cov(S_00, S_11) = 0: the product of independent centred chi2-like terms has variance (2n)^2
        _assert_moment((diag[:, 0] - n) * (diag[:, 1] - n), 0.0, 2 * n / math.sqrt(N_MC), "Cov(S_00, S_11)")
    if n < p:
        assert np.all(np.linalg.matrix_rank(S[:200]) <= n)
    if F.shape[-1] == p:
        assert np.all(np.triu(F, 1) == 0)


def test_wishart_moments_and_symmetry():
    S = wishart(np.random.default_rng(7), 5, 3, size=(N_MC,))
    np.testing.assert_array_equal(S, S.transpose(0, 2, 1))
    _assert_moment(S, 5.0 * np.eye(3), np.sqrt((5.0 + 5.0 * np.eye(3)) / N_MC), "E S")


def test_bartlett_stream_order_contract():
    """chi2_first: the diagonal chi-squares, then the below-diagonal normals (tril order);
    normals_first: the reverse; both leave the generator at the same position."""
    n, p, size = 6, 3, (4,)
    k = np.arange(p)
    rows, cols = np.tril_indices(p, -1)
    for order in ("chi2_first", "normals_first"):
        F = bartlett_factor(np.random.default_rng(8), n, p, size, order=order)
        ref = np.random.default_rng(8)
        if order == "chi2_first":
            chi = ref.chisquare(n - k, size=size + (p,))
            z = ref.standard_normal(size + (rows.size,))
        else:
            z = ref.standard_normal(size + (rows.size,))
            chi = ref.chisquare(n - k, size=size + (p,))
        np.testing.assert_array_equal(F[..., k, k], np.sqrt(chi))
        np.testing.assert_array_equal(F[..., rows, cols], z)
    # one degree of freedom left on the diagonal: the scalar-dof call gives the same stream
    F = bartlett_factor(np.random.default_rng(9), 1, 3, (5,))
    ref = np.random.default_rng(9)
    np.testing.assert_array_equal(F[:, 0, 0], np.sqrt(ref.chisquare(1.0, size=5)))
    np.testing.assert_array_equal(F[:, 1:, 0], ref.standard_normal((5, 2)))
    assert np.all(F[:, :, 1:] == 0)


def test_bartlett_out_is_filled_in_place_and_reusable():
    sampler = BartlettFactor(4, 3)
    out = np.zeros((2, 3, 3))
    r1, r2 = np.random.default_rng(10), np.random.default_rng(10)
    for _ in range(3):
        assert sampler.draw(r1, out=out) is out
        np.testing.assert_array_equal(out, sampler.draw(r2, size=(2,)))
    g = BartlettFactor(2, 4, singular="gaussian")
    out_g = np.empty((3, 4, 2))
    assert g.draw(11, out=out_g) is out_g and g.shape == (4, 2)


def test_zero_dof_gives_zero_factor_without_draws():
    rng = np.random.default_rng(12)
    before = rng.bit_generator.state
    assert np.all(bartlett_factor(rng, 0, 3, (2,)) == 0)
    assert bartlett_factor(rng, 0, 3, (2,), singular="gaussian").shape == (2, 3, 0)
    assert rng.bit_generator.state == before


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,exc,name", [
    (lambda: chi_square(0, -1.0), ValueError, "`dof`"),
    (lambda: chi_square(0, float("nan")), ValueError, "`dof`"),
    (lambda: chi_square(0, np.array([1.0, -2.0])), ValueError, "`dof`"),
    (lambda: chi_square("seed", 2.0), TypeError, "`rng`"),
    (lambda: sphere_coordinate(0, 0), ValueError, "`dim`"),
    (lambda: sphere_coordinate(0, 2.5), TypeError, "`dim`"),
    (lambda: BartlettFactor(-1, 2), ValueError, "`dof`"),
    (lambda: BartlettFactor(3, 0), ValueError, "`dim`"),
    (lambda: BartlettFactor(3, 2, order="diag"), ValueError, "`order`"),
    (lambda: BartlettFactor(3, 2, singular="full"), ValueError, "`singular`"),
    (lambda: BartlettFactor(3, 2).draw(0, out=np.zeros((2, 3, 3))), ValueError, "`out`"),
    (lambda: BartlettFactor(3, 2).draw(0, size=(-1,)), ValueError, "`size`"),
    (lambda: wishart(0, 3, 2, size="ab"), TypeError, "`size`"),
])
def test_bad_input_names_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()
