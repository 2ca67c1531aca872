"""popdyn.readout: ridge against its closed form, LASSO against a known sparse solution and
the KKT conditions of the documented objective, chunked moments, bad input.

Convention under test: minimise (1/n) sum_i (y_i - a0 - a.phi_i)^2 + alpha P(a), with
P = |a|_2^2 (ridge) or |a|_1 (LASSO), intercept unpenalised; ridge without intercept is
a = (X^T X + alpha n I)^{-1} X^T y.
"""

import numpy as np
import pytest

from popdyn.errors import NumericalError
from popdyn.readout import Readout, RidgeMoments, fit_readout

#: Two solvers of a well-conditioned (condition number < 1e3) linear system in float64
#: agree to ~1e-13 relative; 1e-10 leaves room for any BLAS kernel.
SOLVE_RTOL = 1e-10
#: LASSO coefficients with the default duality-gap tolerance (1e-10 of |y|^2/n): the KKT
#: residuals and the distance to an exactly known solution are below ~1e-9 relative to
#: alpha; 1e-6 is the bound (a wrong alpha convention, e.g. alpha/2 vs alpha, misses by O(alpha)).
LASSO_ATOL = 1e-6


def _data(n=200, p=5, seed=0, batch=()):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal(batch + (n, p)) + 0.5
    a = np.linspace(-1.0, 2.0, p)
    y = X @ a + 0.7 + 0.3 * rng.standard_normal(batch + (n,))
    return X, y


# --------------------------------------------------------------------------------------
# ridge
# --------------------------------------------------------------------------------------
def test_ridge_matches_closed_form_without_intercept():
    X, y = _data()
    n, p = X.shape
    alpha = 0.05
    fit = fit_readout(X, y, alpha=alpha, fit_intercept=False)
    expect = np.linalg.solve(X.T @ X + alpha * n * np.eye(p), X.T @ y)
    np.testing.assert_allclose(fit.coef, expect, rtol=SOLVE_RTOL)
    assert fit.intercept == 0.0 and fit.method == "ridge" and fit.alpha == alpha and fit.n_samples == n


def test_ridge_with_intercept_matches_augmented_least_squares():
    """Independent solver: lstsq of [X 1; sqrt(alpha n) I 0] [a; a0] = [y; 0] (intercept unpenalised)."""
    X, y = _data(seed=1)
    n, p = X.shape
    alpha = 0.02
    fit = fit_readout(X, y, alpha=alpha)
    A = np.block([[X, np.ones((n, 1))], [np.sqrt(alpha * n) * np.eye(p), np.zeros((p, 1))]])
    sol = np.linalg.lstsq(A, np.concatenate([y, np.zeros(p)]), rcond=None)[0]
    np.testing.assert_allclose(fit.coef, sol[:p], rtol=SOLVE_RTOL)
    np.testing.assert_allclose(fit.intercept, sol[p], rtol=SOLVE_RTOL)


def test_ridge_alpha_convention_is_sklearn_alpha_over_n():
    from sklearn.linear_model import Ridge

    X, y = _data(seed=2)
    alpha = 0.1
    fit = fit_readout(X, y, alpha=alpha)
    sk = Ridge(alpha=alpha * X.shape[0]).fit(X, y)
    np.testing.assert_allclose(fit.coef, sk.coef_, rtol=SOLVE_RTOL)
    np.testing.assert_allclose(fit.intercept, sk.intercept_, rtol=SOLVE_RTOL)


def test_ridge_batch_equals_separate_fits_and_chunks_equal_one_shot():
    X, y = _data(batch=(3,), seed=3)
    fit = fit_readout(X, y, alpha=0.01)
    assert fit.coef.shape == (3, 5) and fit.intercept.shape == (3,)
    for r in range(3):
        one = fit_readout(X[r], y[r], alpha=0.01)
        np.testing.assert_allclose(fit.coef[r], one.coef, rtol=SOLVE_RTOL)
        np.testing.assert_allclose(fit.intercept[r], one.intercept, rtol=SOLVE_RTOL)
    acc = RidgeMoments()
    for lo in range(0, 200, 70):
        acc.add(X[:, lo:lo + 70], y[:, lo:lo + 70])
    chunked = acc.solve(0.01)
    assert acc.n == 200
    np.testing.assert_allclose(chunked.coef, fit.coef, rtol=SOLVE_RTOL)
    np.testing.assert_allclose(chunked.intercept, fit.intercept, rtol=SOLVE_RTOL)


def test_predict_residuals_and_test_error():
    X, y = _data(seed=4)
    fit = fit_readout(X, y, alpha=1e-3)
    f = X @ fit.coef + fit.intercept
    np.testing.assert_allclose(fit.predict(X), f, rtol=SOLVE_RTOL)
    np.testing.assert_allclose(fit.residuals(X, y), f - y, rtol=SOLVE_RTOL)
    mse = np.mean((f - y) ** 2)
    np.testing.assert_allclose(fit.test_error(X, y), mse, rtol=SOLVE_RTOL)
    np.testing.assert_allclose(fit.test_error(X, y, scale=np.var(y)), mse / np.var(y), rtol=SOLVE_RTOL)
    assert 0.05 < mse < 0.15  # noise variance 0.09, p = 5 of n = 200 fitted


def test_ridge_ols_limit_and_singular_system():
    X, y = _data(seed=5)
    acc = RidgeMoments(fit_intercept=False)
    acc.add(X, y)
    np.testing.assert_allclose(acc.solve(0.0).coef, np.linalg.lstsq(X, y, rcond=None)[0], rtol=SOLVE_RTOL)
    dup = np.concatenate([X[:, :1], X[:, :1]], axis=1)  # identical columns: X^T X singular
    acc = RidgeMoments(fit_intercept=False)
    acc.add(dup, y)
    with pytest.raises(NumericalError, match="`lam` > 0"):
        acc.solve(0.0, name="lam")
    assert np.all(np.isfinite(acc.solve(1e-3).coef))


# --------------------------------------------------------------------------------------
# LASSO
# --------------------------------------------------------------------------------------
def _orthogonal_design(n, p, seed, centred):
    """X with X^T X = n I (and columns orthogonal to 1 when centred)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, p + 1))
    if centred:
        A[:, 0] = 1.0
    Q = np.linalg.qr(A)[0]
    return np.sqrt(n) * Q[:, 1:]


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_lasso_known_sparse_solution(fit_intercept):
    """With X^T X = n I the objective separates: a_j = soft(X_j.y / n, alpha / 2)."""
    n, p, alpha = 100, 6, 0.4
    X = _orthogonal_design(n, p, seed=6, centred=fit_intercept)
    a_true = np.array([1.5, -0.8, 0.15, 0.0, -0.1, 0.6])
    y = X @ a_true + (2.0 if fit_intercept else 0.0)
    fit = fit_readout(X, y, method="lasso", alpha=alpha, fit_intercept=fit_intercept)
    z = X.T @ y / n
    expect = np.sign(z) * np.maximum(np.abs(z) - alpha / 2, 0.0)
    assert np.count_nonzero(expect) == 3  # the known sparse support {0, 1, 5}
    np.testing.assert_allclose(fit.coef, expect, rtol=0, atol=LASSO_ATOL)
    assert np.all(fit.coef[expect == 0] == 0.0)
    np.testing.assert_allclose(fit.intercept, 2.0 if fit_intercept else 0.0, rtol=0, atol=LASSO_ATOL)
    assert fit.method == "lasso" and fit.meta["sklearn_alpha"] == alpha / 2


@pytest.mark.parametrize("alpha", [0.05, 0.5])
def test_lasso_kkt_conditions_of_the_documented_objective(alpha):
    """Subgradient of (1/n)|y - a0 - X a|^2 + alpha |a|_1 at the fit: g_j = -(2/n) X_j.r;
    g_j = -alpha sign(a_j) on the support, |g_j| <= alpha off it; sum(r) = 0 (intercept)."""
    X, y = _data(n=300, p=8, seed=7)
    X[:, 3] *= 0.1  # a weak feature, pushed to zero
    fit = fit_readout(X, y, method="lasso", alpha=alpha)
    r = y - fit.predict(X)
    g = -2.0 / len(y) * X.T @ r
    on = fit.coef != 0
    assert on.any()
    if alpha == 0.5:  # the weak feature is off the support
        assert not on[3]
    np.testing.assert_allclose(g[on], -alpha * np.sign(fit.coef[on]), rtol=0, atol=LASSO_ATOL * alpha)
    assert np.all(np.abs(g[~on]) <= alpha * (1 + LASSO_ATOL))
    assert abs(r.mean()) <= LASSO_ATOL
    # a ridge-like perturbation of the solution never lowers the objective
    obj = lambda a, a0: np.mean((y - a0 - X @ a) ** 2) + alpha * np.abs(a).sum()  # noqa: E731
    rng = np.random.default_rng(8)
    base = obj(fit.coef, fit.intercept)
    for _ in range(20):
        assert obj(fit.coef + 1e-3 * rng.standard_normal(8), fit.intercept) >= base


def test_lasso_batch_loops_over_problems():
    X, y = _data(batch=(2,), seed=9)
    fit = fit_readout(X, y, method="lasso", alpha=0.1)
    for r in range(2):
        np.testing.assert_allclose(fit.coef[r], fit_readout(X[r], y[r], method="lasso", alpha=0.1).coef,
                                   rtol=0, atol=LASSO_ATOL)


def test_lasso_not_converging_raises():
    X, y = _data(n=300, p=8, seed=10)
    X[:, 1] = X[:, 0] + 1e-3 * X[:, 1]  # nearly collinear: slow coordinate descent
    with pytest.raises(NumericalError, match="`max_iter`"):
        fit_readout(X, y, method="lasso", alpha=1e-4, max_iter=2, tol=1e-14)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(alpha=0.0), ValueError, "`alpha`"),
    (dict(alpha=-1.0), ValueError, "`alpha`"),
    (dict(alpha=float("nan")), ValueError, "`alpha`"),
    (dict(alpha="1"), TypeError, "`alpha`"),
    (dict(alpha=True), TypeError, "`alpha`"),
    (dict(alpha=0.1, method="elastic"), ValueError, "`method`"),
    (dict(alpha=0.1, fit_intercept=1), TypeError, "`fit_intercept`"),
    (dict(alpha=0.1, method="lasso", max_iter=0), ValueError, "`max_iter`"),
    (dict(alpha=0.1, method="lasso", tol=0.0), ValueError, "`tol`"),
])
def test_bad_parameters(kwargs, exc, name):
    X, y = _data(n=20, p=2)
    with pytest.raises(exc, match=name):
        fit_readout(X, y, **kwargs)


def test_bad_arrays():
    X, y = _data(n=20, p=2)
    with pytest.raises(ValueError, match="`features`.*shape"):
        fit_readout(y, y, alpha=0.1)
    with pytest.raises(ValueError, match="`targets`.*shape"):
        fit_readout(X, y[:-1], alpha=0.1)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"`features` must be finite; entry \(3, 1\)"):
        fit_readout(bad, y, alpha=0.1)
    bad = y.copy()
    bad[4] = np.inf
    with pytest.raises(ValueError, match="`targets` must be finite"):
        fit_readout(X, bad, alpha=0.1)
    with pytest.raises(TypeError, match="`features`"):
        fit_readout([["a", "b"]], [1.0], alpha=0.1)
    fit = fit_readout(X, y, alpha=0.1)
    with pytest.raises(ValueError, match="`features`"):
        fit.predict(np.ones((4, 3)))
    with pytest.raises(ValueError, match="`scale`"):
        fit.test_error(X, y, scale=0.0)
    acc = RidgeMoments()
    with pytest.raises(ValueError, match="no samples"):
        acc.solve(0.1)
    acc.add(X, y)
    with pytest.raises(ValueError, match="`features`"):
        acc.add(np.ones((5, 3)), np.ones(5))
    with pytest.raises(ValueError, match="`alpha`"):
        acc.solve(-1.0)
    assert isinstance(fit, Readout)
