r"""Linear readouts on learned features: ridge and LASSO fits of a second layer.

After a first layer has been trained (or drawn at random), the second layer of a two-layer
network :math:`f(x) = a_0 + \sum_j a_j \phi_j(x)` is fitted by penalised least squares on
``n`` samples of features :math:`\phi_i \in \mathbb{R}^p` and targets :math:`y_i`.

Objective (alpha convention)
----------------------------
Both methods minimise the *per-sample* mean squared error plus ``alpha`` times a penalty
of the coefficients; the intercept :math:`a_0` (``fit_intercept=True``) is not penalised:

.. math::

    (\hat a_0, \hat a) = \arg\min_{a_0, a}\ \frac1n \sum_{i=1}^n (y_i - a_0 - a\cdot\phi_i)^2
    + \alpha\, P(a), \qquad
    P(a) = \|a\|_2^2 \ (\text{ridge}), \quad P(a) = \|a\|_1 \ (\text{LASSO}).

Without intercept the ridge solution is :math:`\hat a = (X^\top X + \alpha n I)^{-1} X^\top y`
(``X`` the ``n x p`` feature matrix); with intercept the same formula holds for the centred
:math:`X - \bar x`, :math:`y - \bar y`, and :math:`\hat a_0 = \bar y - \bar x\cdot\hat a`.
In scikit-learn's conventions this is ``Ridge(alpha=alpha * n)`` and ``Lasso(alpha=alpha / 2)``
(scikit-learn's LASSO minimises :math:`\frac1{2n}\|y - Xw\|^2 + \alpha_{\rm sk}\|w\|_1`).

Solvers
-------
Ridge: the (centred) normal equations
:math:`(X_c^\top X_c/n + \alpha I)\,a = X_c^\top y_c/n` by ``numpy.linalg.solve``, from
sufficient statistics that can be accumulated over chunks of samples
(:class:`RidgeMoments`), so that ``n`` is not limited by memory.  The condition number is
at most :math:`(\lambda_{\max} + \alpha)/\alpha` of the feature covariance, bounded for
``alpha > 0``.  LASSO: scikit-learn's coordinate descent (:class:`sklearn.linear_model.Lasso`,
imported when first used), to a duality gap ``tol``; not converging raises
:class:`~popdyn.errors.NumericalError`.

Used by the Phase II fit of :func:`popdyn.models.reuse_sim.two_phase` (arXiv 2406.01581,
ridge on random-bias features); the same readout serves ridge or LASSO second layers
(arXiv 2406.11828) and ridge on random features (arXiv 2311.13774).

References
----------
A. E. Hoerl, R. W. Kennard, "Ridge regression", Technometrics 12 (1970).
R. Tibshirani, "Regression shrinkage and selection via the lasso", JRSS B 58 (1996).
J. Friedman, T. Hastie, R. Tibshirani, "Regularization paths for generalized linear models via
coordinate descent", J. Stat. Softw. 33 (2010).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings

import numpy as np

from ._validation import check_choice, check_int, check_real
from .errors import NumericalError

__all__ = ["Readout", "RidgeMoments", "fit_readout", "READOUT_METHODS"]

#: Methods of :func:`fit_readout`.
READOUT_METHODS = ("ridge", "lasso")
#: Default LASSO tolerance: scikit-learn stops when the duality gap is below ``tol`` times
#: :math:`\|y\|^2/n`; 1e-10 makes the coefficients accurate far beyond Monte Carlo error.
LASSO_TOL = 1e-10
#: Default LASSO iteration cap (coordinate-descent sweeps).
LASSO_MAX_ITER = 100_000


def _check_bool(name, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r} ({type(value).__name__}).")
    return bool(value)


def _check_data(features, targets, *, p=None):
    """Float arrays ``(..., n, p)`` and ``(..., n)``, finite, consistent shapes."""
    try:
        F = np.asarray(features, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`features` must be an array of real numbers, got {type(features).__name__}.") from None
    if F.ndim < 2 or F.shape[-1] < 1 or F.shape[-2] < 1:
        raise ValueError(f"`features` must have shape (..., n_samples, n_features) with n_samples, n_features "
                         f">= 1, got shape {F.shape}.")
    if p is not None and F.shape[-1] != p:
        raise ValueError(f"`features` must have {p} features (last axis) like the fit, got shape {F.shape}.")
    try:
        y = np.asarray(targets, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`targets` must be an array of real numbers, got {type(targets).__name__}.") from None
    if y.shape != F.shape[:-1]:
        raise ValueError(f"`targets` must have shape {F.shape[:-1]} (features.shape[:-1]), got {y.shape}.")
    for name, arr in (("features", F), ("targets", y)):
        if not np.all(np.isfinite(arr)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"`{name}` must be finite; entry {bad} is {arr[bad]}.")
    return F, y


@dataclasses.dataclass(frozen=True)
class Readout:
    r"""A fitted linear readout :math:`f(\phi) = a_0 + a\cdot\phi` (module docstring).

    Attributes
    ----------
    coef : ndarray, shape ``batch + (p,)``
        Coefficients :math:`\hat a`.
    intercept : ndarray, shape ``batch``
        :math:`\hat a_0` (zeros when ``fit_intercept`` is False).
    fit_intercept : bool
    method : str
        ``"ridge"`` or ``"lasso"``.
    alpha : float
        Penalty in the convention of the module docstring.
    n_samples : int
        Training samples ``n``.
    meta : dict
        Solver details (LASSO: iterations and final duality gap per batch element).
    """

    coef: np.ndarray
    intercept: np.ndarray
    fit_intercept: bool
    method: str
    alpha: float
    n_samples: int
    meta: dict = dataclasses.field(default_factory=dict)

    def _features(self, features):
        F = np.asarray(features, dtype=float)
        p = self.coef.shape[-1]
        if F.ndim < 2 or F.shape[-1] != p:
            raise ValueError(f"`features` must have shape (..., n_samples, {p}), got {F.shape}.")
        return F

    def predict(self, features) -> np.ndarray:
        """Predictions :math:`a_0 + a\\cdot\\phi_i`, shape ``features.shape[:-1]``.

        ``features`` has shape ``(..., n, p)`` with ``...`` broadcast against the batch shape
        of the fit.
        """
        F = self._features(features)
        if F.ndim == 3 and self.coef.ndim == 2:  # replicas x samples: the arithmetic two_phase always used
            f = np.einsum("rnj,rj->rn", F, self.coef)
        else:
            f = np.matmul(F, self.coef[..., :, None])[..., 0]
        f += self.intercept[..., None]
        return f

    def residuals(self, features, targets) -> np.ndarray:
        """``predict(features) - targets``, shape ``features.shape[:-1]``."""
        f = self.predict(features)
        y = np.asarray(targets, dtype=float)
        if y.shape != f.shape:
            raise ValueError(f"`targets` must have shape {f.shape} (features.shape[:-1]), got {y.shape}.")
        f -= y
        return f

    def test_error(self, features, targets, *, scale: float = 1.0) -> np.ndarray:
        r"""Mean squared error :math:`\frac1n\sum_i (f(\phi_i) - y_i)^2 / \mathrm{scale}`, shape batch.

        ``scale`` (``> 0``), e.g. the target variance, gives a relative error (1 = no better
        than the mean).
        """
        scale = check_real("scale", scale, lower=0.0, lower_open=True)
        r = self.residuals(features, targets)
        return np.einsum("...n,...n->...", r, r) / (r.shape[-1] * scale)


class RidgeMoments:
    r"""Sufficient statistics of a ridge fit, accumulated over chunks of samples.

    For features ``F`` of shape ``batch + (n_chunk, p)`` and targets ``batch + (n_chunk,)``
    each :meth:`add` accumulates :math:`\sum\phi`, :math:`\sum y`, :math:`\sum\phi\phi^\top`
    and :math:`\sum\phi y`; :meth:`solve` returns the ridge :class:`Readout` of all samples
    added (module docstring; the same numbers as one :func:`fit_readout` call up to the
    rounding of the chunked sums).

    Parameters
    ----------
    fit_intercept : bool
        Fit an unpenalised intercept (centred normal equations).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 3)); y = X @ [1.0, -2.0, 0.5] + 0.3
    >>> acc = RidgeMoments()
    >>> acc.add(X[:120], y[:120]); acc.add(X[120:], y[120:])
    >>> bool(np.allclose(acc.solve(1e-8).coef, [1.0, -2.0, 0.5], atol=1e-6))
    True
    """

    def __init__(self, *, fit_intercept: bool = True):
        self.fit_intercept = _check_bool("fit_intercept", fit_intercept)
        self.n = 0
        self._sF = self._sy = self._FF = self._Fy = None

    def add(self, features, targets, *, check: bool = True) -> None:
        """Add a chunk: ``features`` ``batch + (n_chunk, p)``, ``targets`` ``batch + (n_chunk,)``.

        ``check=False`` skips the validation (shapes, finiteness) for arrays the caller built.
        """
        if check:
            F, y = _check_data(features, targets, p=None if self._FF is None else self._FF.shape[-1])
            if self._FF is not None and F.shape[:-2] != self._sy.shape:
                raise ValueError(f"`features` must have batch shape {self._sy.shape} like the earlier chunks, "
                                 f"got shape {F.shape}.")
        else:
            F, y = features, targets
        FT = np.swapaxes(F, -1, -2)
        FF = np.matmul(FT, F)
        Fy = np.einsum("rnj,rn->rj", F, y) if F.ndim == 3 else np.matmul(FT, y[..., None])[..., 0]
        if self._FF is None:
            self._sF, self._sy, self._FF, self._Fy = F.sum(axis=-2), y.sum(axis=-1), FF, Fy
        else:
            self._sF += F.sum(axis=-2)
            self._sy += y.sum(axis=-1)
            self._FF += FF
            self._Fy += Fy
        self.n += F.shape[-2]

    def solve(self, alpha, *, name: str = "alpha") -> Readout:
        r"""The ridge readout of the samples added, penalty ``alpha >= 0``.

        ``alpha = 0`` (ordinary least squares) is allowed here, for callers whose samples are
        known to outnumber the features; a singular or non-finite system then raises
        :class:`~popdyn.errors.NumericalError`.  ``name`` is the caller's name of the penalty,
        used in the messages.
        """
        alpha = check_real(name, alpha, lower=0.0)
        if self._FF is None:
            raise ValueError("`RidgeMoments` has no samples: call `add(features, targets)` before `solve`.")
        n, p = self.n, self._FF.shape[-1]
        if self.fit_intercept:
            mF, my = self._sF / n, self._sy / n
            C = self._FF / n - mF[..., :, None] * mF[..., None, :]
            rhs = self._Fy / n - mF * my[..., None]
        else:
            C = self._FF / n
            rhs = self._Fy / n
        C[..., np.arange(p), np.arange(p)] += alpha
        try:
            with np.errstate(all="ignore"):
                a = np.linalg.solve(C, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError as exc:
            raise NumericalError(f"the ridge normal equations are singular ({name} = {alpha:g}, {n} samples, "
                                 f"{p} features); use `{name}` > 0.") from exc
        if not np.all(np.isfinite(a)):
            raise NumericalError(f"the ridge solution is not finite ({name} = {alpha:g}, {n} samples, {p} features); "
                                 f"use a larger `{name}`.")
        if self.fit_intercept:
            a0 = my - np.einsum("...j,...j->...", mF, a)
        else:
            a0 = np.zeros(a.shape[:-1])
        return Readout(coef=a, intercept=np.asarray(a0, dtype=float), fit_intercept=self.fit_intercept,
                       method="ridge", alpha=alpha, n_samples=n)


def _lasso(F, y, alpha, fit_intercept, max_iter, tol):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    batch = F.shape[:-2]
    p = F.shape[-1]
    coef = np.empty(batch + (p,))
    a0 = np.zeros(batch)
    n_iter = np.empty(batch, dtype=int)
    gap = np.empty(batch)
    for idx in np.ndindex(*batch):
        model = Lasso(alpha=alpha / 2.0, fit_intercept=fit_intercept, max_iter=max_iter, tol=tol,
                      selection="cyclic")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(F[idx], y[idx])
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            raise NumericalError(f"the LASSO fit did not reach duality gap `tol` = {tol:g} in `max_iter` = {max_iter} "
                                 f"sweeps (alpha = {alpha:g}, batch element {idx}); raise `max_iter` or `tol`.")
        coef[idx] = model.coef_
        a0[idx] = model.intercept_ if fit_intercept else 0.0
        n_iter[idx] = model.n_iter_
        gap[idx] = float(np.ravel(model.dual_gap_)[0])
    return coef, a0, {"solver": "sklearn.linear_model.Lasso (coordinate descent)", "sklearn_alpha": alpha / 2.0,
                      "n_iter": n_iter.tolist(), "dual_gap": gap.tolist(), "tol": tol}


def fit_readout(features, targets, *, method: str = "ridge", alpha, fit_intercept: bool = True,
                max_iter: int = LASSO_MAX_ITER, tol: float = LASSO_TOL) -> Readout:
    r"""Fit a ridge or LASSO readout :math:`y \approx a_0 + a\cdot\phi` (module docstring).

    Minimises :math:`\frac1n\sum_i (y_i - a_0 - a\cdot\phi_i)^2 + \alpha P(a)` with
    :math:`P = \|a\|_2^2` (ridge) or :math:`\|a\|_1` (LASSO), the intercept unpenalised.
    Ridge without intercept: :math:`\hat a = (X^\top X + \alpha n I)^{-1} X^\top y`.

    Parameters
    ----------
    features : array_like, shape ``(..., n, p)``
        Features :math:`\phi_i`; leading axes are independent problems (e.g. replicas).
    targets : array_like, shape ``(..., n)``
    method : {"ridge", "lasso"}
    alpha : float
        Penalty ``> 0`` (scikit-learn's ``Ridge(alpha=alpha*n)``, ``Lasso(alpha=alpha/2)``).
    fit_intercept : bool
        Fit an unpenalised intercept (default True).
    max_iter, tol : int, float
        LASSO only: coordinate-descent sweeps and duality-gap tolerance (scikit-learn's).

    Returns
    -------
    Readout

    Raises
    ------
    ValueError, TypeError
        Bad input, naming the argument.
    NumericalError
        A non-finite ridge solution, or a LASSO fit that did not converge.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 4)); y = 2.0 * X[:, 0] + 0.1 * rng.standard_normal(500)
    >>> fit = fit_readout(X, y, method="lasso", alpha=0.1)
    >>> round(float(fit.coef[0]), 2), bool(np.all(fit.coef[1:] == 0)), bool(fit.test_error(X, y) < 0.05)
    (1.96, True, True)
    """
    method = check_choice("method", method, READOUT_METHODS)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"`alpha` must be a real number > 0, got {alpha!r} ({type(alpha).__name__}).")
    alpha = check_real("alpha", alpha, lower=0.0, lower_open=True)
    fit_intercept = _check_bool("fit_intercept", fit_intercept)
    F, y = _check_data(features, targets)
    if method == "ridge":
        acc = RidgeMoments(fit_intercept=fit_intercept)
        acc.add(F, y, check=False)
        return acc.solve(alpha)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    tol = check_real("tol", tol, lower=0.0, lower_open=True)
    coef, a0, meta = _lasso(F, y, alpha, fit_intercept, max_iter, tol)
    return Readout(coef=coef, intercept=a0, fit_intercept=fit_intercept, method="lasso", alpha=alpha,
                   n_samples=F.shape[-2], meta=meta)
