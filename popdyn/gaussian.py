r"""Gaussian expectations of products of activations under any covariance, pair and n-fold.

For :math:`x \sim N(0, C)` with :math:`C` an ``n x n`` covariance (``n <= 4``) this module
computes :math:`E[\prod_a f_a(x_a)]`, where each factor is an activation, its derivative
or the field itself.  It is the single home of

* the closed forms, attached to the activation they belong to through the registry
  :data:`CLOSED_FORMS` (``CLOSED_FORMS[name][kind]``, ``kind`` one of the product
  families ``"i2"``, ``"j2"``, ``"i3"``, ``"i4"`` below) and, for pairs of possibly
  different activations in the overlap/norm parametrisation with derivatives,
  :func:`pair_closed_form` (ReLU, abs, sign, erf; table :func:`closed_form_pairs`);
* Gaussian orthant probabilities of up to four fields and the truncated second moments
  :math:`E[x_c x_d\,1\{x_S > 0\}]` (:func:`orthant_probability`, :func:`orthant_moment`,
  the batched :class:`OrthantPlan`), which give every committee integral of ReLU and its
  step derivative, ``I4`` included;
* the closed-form conditional means :math:`E[f(\mu + sZ)]` of ReLU, its step derivative,
  erf and its derivative, abs, sign (used to integrate one quadrature level exactly);
* the breakpoint-aware nested quadrature fallback :func:`gaussian_product_expectation`
  (``n``-fold, refined until a tolerance; exact Gauss–Hermite for polynomials).

The product families, for the fields of a sub-covariance in argument order:

.. math::

    I_2 &= E[f_0(x_0)\, f_1(x_1)], &
    J_2 &= E[f_0'(x_0)\, f_1'(x_1)], \\
    I_3 &= E[f_0'(x_0)\, x_1\, f_2(x_2)], &
    I_4 &= E[f_0'(x_0)\, f_1'(x_1)\, f_2(x_2)\, f_3(x_3)] .

``erf`` means Saad–Solla's :math:`\mathrm{erf}(z/\sqrt2)` (registry ``"erf"``); its four
families are the formulas of Saad & Solla (1995) and Biehl & Schwarze (1995).  ReLU has
elementary closed forms for ``I2``, ``J2`` and ``I3`` (derived below); its ``I4`` is
:math:`E[x_2 x_3 1\{x > 0\}]`, a truncated second moment over the positive orthant of four
fields, which Tallis' identity reduces to a four-field orthant probability (one
one-dimensional integral, Plackett's reduction) plus bivariate terms (:func:`relu_i4`,
section "Orthant probabilities" below).  A closed form applies only to the registry's own
activation (:func:`is_builtin`), never to a user callable that shares its name.

This is a foundation module: it imports only :mod:`popdyn.activations`,
:mod:`popdyn.errors` and the validation helpers, never a model or an engine.
:mod:`popdyn.kernels` (correlation kernels) and
:mod:`popdyn.models.committee_integrals` (committee ODE integrals) are built on it.
The quadrature route of :func:`popdyn.kernels.correlation_kernel` is a separate, pair-only
rule (derivatives in the overlap and the norms by Gaussian-score weights, ``1e-10`` up to
:math:`|\rho| = 1`, which the ``n``-fold fallback below does not guarantee near singular
covariances with kinks); it stays in :mod:`popdyn.kernels` and uses this module's
Gauss–Legendre nodes and Gaussian density.

ReLU closed forms
-----------------
With :math:`\theta_{ab} = \arccos\bigl(C_{ab}/\sqrt{C_{aa}C_{bb}}\bigr)`:

.. math::

    I_2^{\rm relu}(a, b) &= \frac{\sqrt{C_{aa}C_{bb} - C_{ab}^2} + C_{ab}(\pi - \theta_{ab})}{2\pi},
    \qquad
    J_2^{\rm relu}(a, b) = \frac{\pi - \theta_{ab}}{2\pi}, \\
    I_3^{\rm relu}(a, b, c) &= C_{ab}\,\frac{\sqrt{C_{aa}C_{cc} - C_{ac}^2}}{2\pi C_{aa}}
      + C_{bc}\,\frac{\pi - \theta_{ac}}{2\pi} .

``I3`` follows from Stein's lemma :math:`E[x_b F(x)] = \sum_j C_{bj} E[\partial_j F]` with
:math:`F = \Theta(x_a)\,\mathrm{relu}(x_c)`: :math:`\partial_a F = \delta(x_a)\,
\mathrm{relu}(x_c)` gives :math:`p_{x_a}(0)\,E[\mathrm{relu}(x_c) \mid x_a = 0] =
\sqrt{C_{aa}C_{cc} - C_{ac}^2}/(2\pi C_{aa})`, and :math:`\partial_c F = \Theta(x_a)
\Theta(x_c)` gives the orthant probability :math:`(\pi - \theta_{ac})/(2\pi)`.  For
:math:`a = c` it reduces to :math:`C_{ab}/2`.  A field of zero variance contributes 0
(:math:`\Theta(0) = 0`, the convention of ``relu.derivative``).

Orthant probabilities and truncated moments
-------------------------------------------
For :math:`x \sim N(0, C)` and an indicator set :math:`S` of at most four fields,
:math:`P(S) = P(x_s > 0\ \forall s \in S)` is :math:`2^{-k} + \sum_{j<m}\arcsin(\rho_{jm})
/(2^{k-1}\pi)` for :math:`k = |S| \le 3` and, for four fields, Plackett's reduction in
Childs' form (Plackett 1954; Childs 1967): six one-dimensional integrals of
:math:`\arcsin` of partial correlations along :math:`R(t) = (1 - t)I + tR`, with the
substitution :math:`t\rho_{jm} = \sin\phi` that removes the bivariate density's
endpoint singularity, on a tanh-sinh rule of :data:`ORTHANT_NODES` nodes.  Two Gaussian
integrations by parts (Tallis 1961) give :math:`E[x_c x_d 1_S]` from :math:`P(S)` and the
conditional probabilities of the remaining indicators given a pair at zero
(:class:`OrthantPlan` writes the identity out).  All partial correlations of one
four-field item come from one eigendecomposition of its correlation matrix, so the
evaluation is backward stable: measured against 40-digit mpmath values it is accurate to
~1e-15 for well-conditioned covariances and to the input's rounding floor
:math:`\sim 10^{-16}/\sqrt{\lambda_{\min}}` for nearly singular ones (a student within
:math:`10^{-14}` of a teacher).  Repeated fields (``a == b``, ``c == d``), aligned fields
(:math:`|\rho| = 1` up to :data:`ALIGN_TOL`) and zero-variance fields are reduced exactly
(:func:`reduce_indicators`): a repeated or positively aligned indicator is dropped, an
anti-aligned pair empties the orthant, :math:`\Theta(0) = 0`.

The quadrature route
--------------------
:func:`gaussian_product_expectation` computes :math:`E[\prod_a f_a(x_a)]` for
:math:`x \sim N(0, C)`, :math:`C` of size ``n <= 4``.  It writes :math:`x = L z` with
:math:`z \sim N(0, I_n)` and ``L`` lower triangular: a semidefinite Cholesky factor in
echelon form, so a singular ``C`` (coinciding fields, a student aligned with a teacher)
needs no special case -- a field that is a combination of earlier ones opens no new
integration level (a residual standard deviation below :data:`ZERO_REL` times the largest
standard deviation is set to zero; off-diagonal entries only below the rounding level
:data:`OFFDIAG_REL`).  The integral over ``z`` is nested, outermost
:math:`z_1`.  Factor ``a`` depends on :math:`z_1..z_{\ell(a)}`, where :math:`\ell(a)` is
the last non-zero entry of row ``a`` of ``L``; its breakpoints (kinks, jumps) sit at a
known :math:`z_{\ell(a)}` given the outer variables, and the level :math:`\ell(a)` is split
there into Gauss–Legendre panels on :math:`[-Z, Z]` (:data:`Z_MAX`).  After integrating
the inner levels the integrand is smooth in the outer variable except at that level's
own breakpoints, so every level converges spectrally for piecewise-smooth activations
with declared breakpoints.  Levels without breakpoints use the trapezoidal rule on :math:`[-Z, Z]`
(:data:`RULE_NODES`), exponentially accurate for integrands analytic in a strip (where
Gauss–Hermite converges only like :math:`e^{-d\sqrt{2m}}` for a pole at distance ``d``,
e.g. tanh); levels with breakpoints use composite Gauss–Legendre on panels between the
breakpoints (``m`` nodes each) when every factor is piecewise entire (ReLU, erf, abs,
sign, polynomials), otherwise also split on a uniform grid of width :data:`PANEL_WIDTH`
(:data:`RULE_GL` nodes each).  When the innermost level
holds a single factor with a closed-form conditional mean :math:`E[f(\mu + s Z)]` (ReLU,
its step derivative, erf and its derivative, abs, sign, ``x``) that level is integrated
exactly, and the smoothed kink it leaves in the next level gets panels of its own width
(:data:`SOFT_OFFSETS`).  Fields are ordered so that such a factor comes last.

*Accuracy, honestly.*  The error estimate is the difference between two successive rules
(:data:`RULE_NODES`), checked against ``tol`` (relative to ``max(1, |value|)``); the
finer rule's value is returned, so the estimate is conservative.  It is reliable for smooth
activations and for declared kinks and jumps.  It degrades when a covariance is
*nearly* singular between fields with kinks (a kink smoothed over a width
:math:`\epsilon` with :math:`10^{-6} \lesssim \epsilon \lesssim 10^{-2}`, e.g. a ReLU
student within :math:`\epsilon^2` of a teacher): more nodes are then needed, and when
the node budget :data:`MAX_NODES` is exhausted a :class:`~popdyn.errors.NumericalError`
reports the tolerance and the error reached.  An activation with undeclared kinks or
rapid oscillations fails the same way.  *Cost:* a 4-field integral of smooth activations
without a closed-form conditional mean (tanh, sigmoid, gelu, ...) needs about
:math:`49^4 \approx 6\cdot 10^6` points for ``tol = 1e-8`` (seconds per integral); pass a
looser ``tol`` (e.g. ``1e-6``) for ODE runs with them.  All integrals of one K = M = 2
committee right-hand side by this route (``tol = 1e-8``): ReLU ``I4`` ~30 ms, and it
cannot certify 1e-8 once a student is within ~1e-9 of a teacher in angle (the orthant
closed form above replaces it), ReLU student with erf teacher ~0.1 s, polynomials ~4 ms
(exact); the tanh ``I4`` exceeds :data:`MAX_NODES` at the default ``tol``.

References
----------
D. Saad, S. A. Solla, "On-line learning in soft committee machines", PRE 52, 4225 (1995).
M. Biehl, H. Schwarze, "Learning by on-line gradient descent", J. Phys. A 28, 643 (1995).
Y. Cho, L. K. Saul, "Kernel methods for deep learning", NIPS 2009 (arc-cosine kernel).
R. Price, "A useful theorem for nonlinear devices having Gaussian inputs", IRE Trans.
Inf. Theory 4 (1958).
R. L. Plackett, "A reduction formula for normal multivariate integrals", Biometrika 41, 351
(1954).
D. R. Childs, "Reduction of the multivariate normal integral to characteristic form",
Biometrika 54, 293 (1967).
G. M. Tallis, "The moment generating function of the truncated multi-normal
distribution", J. R. Stat. Soc. B 23, 223 (1961).

Examples
--------
>>> import numpy as np
>>> C = np.array([[1, .5, .3, .2], [.5, 1, .4, .1], [.3, .4, 1, .6], [.2, .1, .6, 1]])
>>> round(float(CLOSED_FORMS["erf"]["i4"](C)), 12)
0.061492408341
>>> v = gaussian_product_expectation(C, [Factor.derivative("erf"), Factor.derivative("erf"), "erf", "erf"])
>>> abs(float(v) - 0.061492408341) < 1e-8
True
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ._validation import check_int, check_real
from .activations import Activation, get_activation
from .errors import NumericalError

__all__ = [
    "CLOSED_FORMS",
    "closed_form",
    "closed_form_pairs",
    "pair_closed_form",
    "is_builtin",
    "erf_i2",
    "erf_j2",
    "erf_i3",
    "erf_i4",
    "relu_i2",
    "relu_j2",
    "relu_i3",
    "relu_i4",
    "orthant_probability",
    "orthant_moment",
    "OrthantPlan",
    "reduce_indicators",
    "ORTHANT_NODES",
    "ALIGN_TOL",
    "Factor",
    "gaussian_product_expectation",
    "FALLBACK_TOL",
    "RULE_NODES",
    "RULE_GL",
    "MAX_NODES",
    "Z_MAX",
    "ZERO_REL",
    "OFFDIAG_REL",
]

#: Default target of the quadrature route: the estimated error of every integral is at
#: most ``FALLBACK_TOL * max(1, |value|)``.
FALLBACK_TOL = 1e-8
#: Successive rules, as nodes per level: a level without breakpoints uses the trapezoidal
#: rule with ``2 m + 1`` nodes on ``[-Z_MAX, Z_MAX]`` (exponentially accurate for integrands
#: analytic in a strip, e.g. tanh, where Gauss–Hermite converges only like
#: :math:`e^{-d\sqrt{2m}}`); a level with breakpoints uses composite Gauss–Legendre with
#: ``RULE_GL[k]`` nodes on each panel between the breakpoints and a uniform grid of width
#: :data:`PANEL_WIDTH`.
RULE_NODES = (8, 12, 16, 24, 32, 48, 64, 96)
RULE_GL = (3, 4, 5, 6, 8, 10, 12, 16)
#: Width of the uniform Gauss–Legendre panels of a level with breakpoints.
PANEL_WIDTH = 2.0
#: Largest tensor grid (points per integral) the quadrature route may use.
MAX_NODES = 8_000_000
#: Every rule covers ``|z| <= Z_MAX`` in the whitened coordinates (the Gaussian mass outside
#: is 1.2e-15; integrands must not grow faster than polynomially times exp(o(z^2)) -- the
#: truncation error is not part of the error estimate).
Z_MAX = 8.0
#: A field whose residual standard deviation (given the previous fields) is below
#: ``ZERO_REL * max_a sqrt(C_aa)`` is treated as a combination of them (zero diagonal entry
#: of the triangular factor): dropping an independent component of size eps moves a smooth
#: integral by O(eps^2) (below 1e-12), but a product of kinks or jumps on nearly aligned
#: fields by O(eps) (e.g. two steps: sqrt(1 - rho) ~ eps): the fallback's limit near
#: singular covariances (module docstring).
ZERO_REL = 1e-6
#: Off-diagonal entries of the triangular factor below ``OFFDIAG_REL * max_a sqrt(C_aa)`` are
#: rounding noise and set to 0.  (Dropping an off-diagonal entry eps moves a covariance entry
#: by eps to first order, so this threshold stays at the rounding level: at ZERO_REL it cost
#: 1e-7 in I4(a, a, c, d) for a correlation C_cd = 0 whose conditional value was ~1e-6.)
OFFDIAG_REL = 1e-14
#: Panel edges placed around the smoothed kink of the factor integrated in closed form
#: (offsets in units of the smoothing width): the boundary layer gets panels of its size.
SOFT_OFFSETS = (-4.0, -1.0, 0.0, 1.0, 4.0)
SOFT_EDGES = len(SOFT_OFFSETS)
#: Grid points evaluated at once (memory bound of the quadrature route).
CHUNK = 1 << 21
_N_PANELS = int(round(2 * Z_MAX / PANEL_WIDTH))
_PANEL_EDGES = np.linspace(-Z_MAX, Z_MAX, _N_PANELS + 1)
_WHOLE_EDGES = np.array([-Z_MAX, Z_MAX])

_2_PI = 2.0 / math.pi
_SQRT2PI = math.sqrt(2.0 * math.pi)


# ======================================================================================
# helpers
# ======================================================================================
def _as_cov(C, n: int, name: str = "C") -> np.ndarray:
    try:
        C = np.asarray(C, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`{name}` must be an array of {n}x{n} covariance matrices, got {C!r}.") from exc
    if C.ndim < 2 or C.shape[-2:] != (n, n):
        raise ValueError(f"`{name}` must have shape (..., {n}, {n}), got {C.shape}.")
    if not np.all(np.isfinite(C)):
        raise ValueError(f"`{name}` must be finite.")
    if np.any(np.abs(C - np.swapaxes(C, -1, -2)) > 1e-12 * np.maximum(1.0, np.abs(C))):
        raise ValueError(f"`{name}` must be symmetric.")
    if np.any(np.diagonal(C, axis1=-2, axis2=-1) < 0):
        raise ValueError(f"`{name}` must have a non-negative diagonal (variances).")
    return C



def is_builtin(act: Activation, name: str) -> bool:
    """True when ``act`` is the registry's ``name`` (not a user callable that shares the name)."""
    return act.name == name and act.fn is get_activation(name).fn


def _npdf(x):
    """Standard normal density."""
    return np.exp(-0.5 * x * x) / _SQRT2PI


@lru_cache(maxsize=32)
def _gl(m: int):
    """Gauss–Legendre nodes and weights on ``[-1, 1]`` (cached)."""
    return np.polynomial.legendre.leggauss(m)


# ======================================================================================
# pair closed forms in the overlap/norm parametrisation, with derivatives
# ======================================================================================
#: ``(name_a, name_b) -> (q_a, q_b)``: pairs whose kernel is positively homogeneous, with the
#: degrees (``K = r_w^{q_a} r_v^{q_b} k(rho)``); erf/erf is handled separately.
_HOMOGENEOUS_PAIRS = {
    ("relu", "relu"): (1, 1),
    ("abs", "abs"): (1, 1),
    ("relu", "abs"): (1, 1),
    ("relu", "sign"): (1, 0),
    ("abs", "sign"): (1, 0),
    ("sign", "sign"): (0, 0),
}
_CLOSED_NAMES = ("relu", "abs", "sign", "erf")


def closed_form_pairs() -> tuple:
    """Activation pairs (registry names, either order) with a tabulated closed form."""
    return tuple(_HOMOGENEOUS_PAIRS) + (("erf", "erf"),)


def closed_form_pair(a: Activation, b: Activation):
    """``(name_a, name_b, swapped)`` of the tabulated pair formed by ``a`` and ``b``, or ``None``.

    ``swapped`` is True when the table lists the pair as ``(b, a)``; pass the result to
    :func:`pair_closed_form`.
    """
    na = next((n for n in _CLOSED_NAMES if is_builtin(a, n)), None)
    nb = next((n for n in _CLOSED_NAMES if is_builtin(b, n)), None)
    if na is None or nb is None:
        return None
    if (na, nb) in _HOMOGENEOUS_PAIRS or (na, nb) == ("erf", "erf"):
        return na, nb, False
    if (nb, na) in _HOMOGENEOUS_PAIRS:
        return nb, na, True
    return None


def _homogeneous_unit(pair, rho):
    """Unit-norm kernel k(rho) and k'(rho) of a homogeneous pair."""
    root = np.sqrt(np.maximum((1.0 - rho) * (1.0 + rho), 0.0))
    with np.errstate(divide="ignore"):
        if pair == ("relu", "relu"):
            k = (root + (np.pi - np.arccos(rho)) * rho) / (2 * np.pi)
            dk = (np.pi - np.arccos(rho)) / (2 * np.pi)
        elif pair == ("abs", "abs"):
            k = 2.0 * (root + rho * np.arcsin(rho)) / np.pi
            dk = 2.0 * np.arcsin(rho) / np.pi
        elif pair == ("relu", "abs"):
            k = (root + rho * np.arcsin(rho)) / np.pi
            dk = np.arcsin(rho) / np.pi
        elif pair == ("relu", "sign"):
            k = rho / _SQRT2PI
            dk = np.full_like(rho, 1.0 / _SQRT2PI)
        elif pair == ("abs", "sign"):
            k = np.zeros_like(rho)
            dk = np.zeros_like(rho)
        else:  # sign/sign: (2/pi) arcsin rho, derivative diverges at |rho| = 1
            k = 2.0 * np.arcsin(rho) / np.pi
            dk = np.where(root > 0, 2.0 / (np.pi * np.where(root > 0, root, 1.0)), np.inf)
    return k, dk


def pair_closed_form(pair, rho, rw, rv):
    r"""Closed-form :math:`K = E[\sigma(r_w X)\tau(r_v Y)]` and ``(K_rho, K_rw, K_rv)``.

    Parameters
    ----------
    pair : tuple
        The result of :func:`closed_form_pair`.
    rho, rw, rv : ndarray
        Correlation of ``(X, Y)`` (standard normal) in ``[-1, 1]`` and norms ``> 0``,
        broadcast together.

    Returns
    -------
    tuple of ndarray
        ``(value, d_rho, d_rw, d_rv)``; ``d_rho`` is ``+inf`` for sign/sign at
        :math:`|\rho| = 1`.  Covariance-parametrised values of the same integrals (with
        zero-variance fields allowed) are :func:`erf_i2` and :func:`relu_i2`.
    """
    name_a, name_b, swapped = pair
    if swapped:
        rw, rv = rv, rw
    if (name_a, name_b) == ("erf", "erf"):
        # Saad–Solla: (2/pi) arcsin(C_ab / sqrt((1 + C_aa)(1 + C_bb))) (same formula as erf_i2)
        den = np.sqrt((1.0 + rw * rw) * (1.0 + rv * rv))
        q = rw * rv * rho / den  # |q| < 1 always since r^2/(1+r^2) < 1
        value = 2.0 * np.arcsin(q) / np.pi
        dq = 2.0 / (np.pi * np.sqrt((1.0 - q) * (1.0 + q)))
        d_rho = dq * rw * rv / den
        d_rw = dq * q / (rw * (1.0 + rw * rw))
        d_rv = dq * q / (rv * (1.0 + rv * rv))
    else:
        qa, qb = _HOMOGENEOUS_PAIRS[(name_a, name_b)]
        k, dk = _homogeneous_unit((name_a, name_b), rho)
        scale = rw ** qa * rv ** qb
        value = scale * k
        d_rho = scale * dk
        d_rw = qa * value / rw
        d_rv = qb * value / rv
    if swapped:
        d_rw, d_rv = d_rv, d_rw
    return value, d_rho, d_rw, d_rv


# ======================================================================================
# closed forms by covariance: erf(z / sqrt 2)   (Saad & Solla 1995; Biehl & Schwarze 1995)
# ======================================================================================
def erf_i2(C) -> np.ndarray:
    r""":math:`I_2 = \tfrac{2}{\pi}\arcsin\bigl(C_{01}/\sqrt{(1+C_{00})(1+C_{11})}\bigr)`,
    ``C`` of shape ``(..., 2, 2)``."""
    C = np.asarray(C, dtype=float)
    q = C[..., 0, 1] / np.sqrt((1.0 + C[..., 0, 0]) * (1.0 + C[..., 1, 1]))
    return _2_PI * np.arcsin(np.clip(q, -1.0, 1.0))


def erf_j2(C) -> np.ndarray:
    r""":math:`J_2 = \tfrac{2}{\pi}\bigl((1+C_{00})(1+C_{11}) - C_{01}^2\bigr)^{-1/2}`."""
    C = np.asarray(C, dtype=float)
    return _2_PI / np.sqrt((1.0 + C[..., 0, 0]) * (1.0 + C[..., 1, 1]) - C[..., 0, 1] ** 2)


def erf_i3(C) -> np.ndarray:
    r""":math:`I_3 = \tfrac{2}{\pi}\Lambda_3^{-1/2}\,\frac{C_{12}(1+C_{00}) - C_{01}C_{02}}{1+C_{00}}`,
    :math:`\Lambda_3 = (1+C_{00})(1+C_{22}) - C_{02}^2`, ``C`` of shape ``(..., 3, 3)``."""
    C = np.asarray(C, dtype=float)
    a1 = 1.0 + C[..., 0, 0]
    lam3 = a1 * (1.0 + C[..., 2, 2]) - C[..., 0, 2] ** 2
    return _2_PI / np.sqrt(lam3) * (C[..., 1, 2] * a1 - C[..., 0, 1] * C[..., 0, 2]) / a1


def erf_i4(C) -> np.ndarray:
    r""":math:`I_4 = \tfrac{4}{\pi^2}\Lambda_4^{-1/2}\arcsin\bigl(\Lambda_0/\sqrt{\Lambda_1\Lambda_2}\bigr)`
    (Saad & Solla 1995), ``C`` of shape ``(..., 4, 4)``."""
    C = np.asarray(C, dtype=float)
    c00, c11, c22, c33 = C[..., 0, 0], C[..., 1, 1], C[..., 2, 2], C[..., 3, 3]
    c01, c02, c03, c12, c13, c23 = C[..., 0, 1], C[..., 0, 2], C[..., 0, 3], C[..., 1, 2], C[..., 1, 3], C[..., 2, 3]
    a0, a1 = 1.0 + c00, 1.0 + c11
    lam4 = a0 * a1 - c01 * c01
    lam0 = lam4 * c23 - c12 * c13 * a0 - c02 * c03 * a1 + c01 * (c02 * c13 + c03 * c12)
    lam1 = lam4 * (1.0 + c22) - c12 * c12 * a0 - c02 * c02 * a1 + 2.0 * c01 * c02 * c12
    lam2 = lam4 * (1.0 + c33) - c13 * c13 * a0 - c03 * c03 * a1 + 2.0 * c01 * c03 * c13
    q = lam0 / np.sqrt(lam1 * lam2)
    return (4.0 / math.pi ** 2) / np.sqrt(lam4) * np.arcsin(np.clip(q, -1.0, 1.0))


# ======================================================================================
# closed forms by covariance: ReLU
# ======================================================================================
def _theta(caa, cbb, cab):
    """Angle arccos(C_ab / sqrt(C_aa C_bb)) and a mask of non-degenerate pairs."""
    prod = caa * cbb
    ok = prod > 0
    rho = np.where(ok, cab / np.sqrt(np.where(ok, prod, 1.0)), 0.0)
    return np.arccos(np.clip(rho, -1.0, 1.0)), ok


def relu_i2(C) -> np.ndarray:
    r""":math:`E[\mathrm{relu}(x_0)\mathrm{relu}(x_1)] = \bigl(\sqrt{C_{00}C_{11}-C_{01}^2}
    + C_{01}(\pi-\theta)\bigr)/(2\pi)` (arc-cosine kernel with norms)."""
    C = np.asarray(C, dtype=float)
    caa, cbb, cab = C[..., 0, 0], C[..., 1, 1], C[..., 0, 1]
    th, ok = _theta(caa, cbb, cab)
    det = np.sqrt(np.clip(caa * cbb - cab * cab, 0.0, None))
    return np.where(ok, (det + cab * (math.pi - th)) / (2.0 * math.pi), 0.0)


def relu_j2(C) -> np.ndarray:
    r""":math:`E[\Theta(x_0)\Theta(x_1)] = (\pi - \theta)/(2\pi)` (0 for a zero-variance field)."""
    C = np.asarray(C, dtype=float)
    th, ok = _theta(C[..., 0, 0], C[..., 1, 1], C[..., 0, 1])
    return np.where(ok, (math.pi - th) / (2.0 * math.pi), 0.0)


def relu_i3(C) -> np.ndarray:
    r""":math:`E[\Theta(x_0)\,x_1\,\mathrm{relu}(x_2)] = C_{01}\sqrt{C_{00}C_{22}-C_{02}^2}/(2\pi C_{00})
    + C_{12}(\pi-\theta_{02})/(2\pi)` (module docstring)."""
    C = np.asarray(C, dtype=float)
    caa, ccc, cac = C[..., 0, 0], C[..., 2, 2], C[..., 0, 2]
    th, ok = _theta(caa, ccc, cac)
    det = np.sqrt(np.clip(caa * ccc - cac * cac, 0.0, None))
    first = C[..., 0, 1] * det / (2.0 * math.pi * np.where(ok, caa, 1.0))
    return np.where(ok, first + C[..., 1, 2] * (math.pi - th) / (2.0 * math.pi), 0.0)


# ======================================================================================
# orthant probabilities and truncated second moments (Plackett 1954; Childs 1967; Tallis 1961)
# ======================================================================================
#: The Plackett integrals of a four-field orthant probability use a tanh-sinh rule with
#: ``2 * ORTHANT_NODES + 1`` nodes on ``[0, 1]``.  Its nodes crowd double-exponentially
#: towards both ends, where a nearly singular covariance puts the integrand's square-root
#: layers; measured against 40-digit mpmath values of the same integrals, 61 nodes give
#: errors below 1e-15 for well-conditioned covariances and at the rounding floor
#: ``~1e-16 / sqrt(delta)`` of the input for near-singular ones (``delta`` = relative residual
#: variance of the nearly dependent field, 1e-2 down to 1e-14).
ORTHANT_NODES = 30
#: Items whose correlation matrix has its smallest eigenvalue at least ``ORTHANT_GL_MIN`` use
#: Gauss–Legendre with ``ORTHANT_GL_NODES`` nodes instead (the integrand is analytic well
#: beyond [0, 1] there): the largest difference from the tanh-sinh rule over 3000 random
#: covariances with ``lambda_min`` in [0.1, 0.2) was 3e-16 (2.8e-16 at 20 nodes; 8e-14 at 16).
ORTHANT_GL_MIN = 0.1
ORTHANT_GL_NODES = 20
#: Half-width of the tanh-sinh rule in its own variable: the outermost nodes sit within
#: ``exp(-pi sinh(3.2)) ~ 1e-16`` of the ends, i.e. the whole interval in double precision.
ORTHANT_SPAN = 3.2
#: Two indicator fields whose determinant ``C_jj C_mm - C_jm^2`` is at most ``ALIGN_TOL *
#: C_jj C_mm`` are aligned (``|rho| = 1`` up to rounding) and merged exactly
#: (``1{x_j > 0} = 1{x_m > 0}`` for ``rho = +1``; an empty orthant for ``rho = -1``).  The
#: input's own rounding already moves an orthant probability by ``~sqrt(ALIGN_TOL) / (2 pi)
#: ~ 5e-9`` there (it depends on ``sqrt(1 - rho)``), so merging changes nothing the input
#: determines.
ALIGN_TOL = 1e-15
#: Eigenvalues of a four-field correlation matrix are floored here before it is inverted:
#: the floored matrix differs from the input by 1e-30 (far below rounding), and the partial
#: correlations of an exactly singular (not aligned) matrix become their limits.
SPECTRAL_FLOOR = 1e-30
#: Covariances whose correlation matrix has an eigenvalue below ``-PSD_REL_TOL`` are
#: rejected as not positive semidefinite (rounding of a PSD input stays far above).
PSD_REL_TOL = 1e-10

#: The six pairs of four fields and, for each, the complementary pair.
_PAIRS4 = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_COMPL4 = ((2, 3), (1, 3), (1, 2), (0, 3), (0, 2), (0, 1))
_KC = np.array([p[0] for p in _COMPL4])
_LC = np.array([p[1] for p in _COMPL4])
#: Row pairs of ``V`` whose products give, per pair slot, the (k, k), (l, l), (k, l) entries of
#: :math:`V\,\mathrm{diag}(g)\,V^\top` for the complement (k, l).
_W_LEFT = np.concatenate([_KC, _LC, _KC])
_W_RIGHT = np.concatenate([_KC, _LC, _LC])
#: Entry (i, j) of a 4 x 4 correlation matrix in ``[1, rho_01, rho_02, ..., rho_23]``.
_R_FROM_PAIRS = np.array([0 if i == j else 1 + _PAIRS4.index((min(i, j), max(i, j)))
                          for i in range(4) for j in range(4)])
_PI2 = 2.0 * math.pi
#: Pad codes of a plan template: entries that read the constant 1 or 0 appended to the data.
_ONE, _ZERO = -1, -2


@lru_cache(maxsize=8)
def _tanh_sinh(m: int):
    """Tanh-sinh nodes ``u`` on (0, 1), ``1 - u`` (computed without cancellation) and weights."""
    h = ORTHANT_SPAN / m
    x = np.arange(-m, m + 1) * h
    s = 0.5 * math.pi * np.sinh(x)
    u = 1.0 / (1.0 + np.exp(-2.0 * s))
    om = 1.0 / (1.0 + np.exp(2.0 * s))
    w = h * 0.25 * math.pi * np.cosh(x) / np.cosh(s) ** 2
    return u, om, w


@lru_cache(maxsize=1024)
def _template(n: int, S: tuple, c, d) -> tuple:
    """Index template of one truncated moment over fields ``0..n-1`` of one covariance.

    Returns ``(idx, ce, base, coef, pcond, quad)``: ``idx`` (7, 6) holds the flat indices
    ``i n + j`` (or a pad code) of ``C_jj, C_mm, C_jm, C_cj, C_cm, C_dj, C_dm`` for the six
    pair slots ``(j, m)`` of ``S`` (a pad slot contributes nothing: ``C_jj = C_mm = 1``, the
    rest 0); ``ce`` the index of ``C_cd`` (the constant 1 for a probability); ``base + coef *
    sum_slots arcsin(rho_jm)`` is the closed part of ``P(S)``; ``pcond`` the conditional
    probability of the other indicators given a slot's pair at 0 (filled in by the Plackett
    machinery when ``|S| = 4``); ``quad`` tells whether ``|S| = 4``.
    """
    k = len(S)
    idx = np.full((7, 6), _ZERO, dtype=np.int64)
    idx[0] = idx[1] = _ONE
    pcond = np.zeros(6)
    slots = [(a, b) for a in range(k) for b in range(a + 1, k)]
    for p, (a, b) in enumerate(slots):
        j, m = S[a], S[b]
        idx[0, p], idx[1, p], idx[2, p] = j * n + j, m * n + m, j * n + m
        if c is not None:
            idx[3, p], idx[4, p], idx[5, p], idx[6, p] = c * n + j, c * n + m, d * n + j, d * n + m
        pcond[p] = {2: 1.0, 3: 0.5}.get(k, 0.0)
    ce = _ONE if c is None else c * n + d
    coef = 0.0 if k < 2 else 1.0 / (2 ** (k - 1) * math.pi)
    return idx, ce, 0.5 ** k, coef, pcond, k == 4


class OrthantPlan:
    r"""Index plan of many truncated moments :math:`E[x_c x_d\,1\{x_s > 0\ \forall s \in S\}]`
    of one flat array of covariance entries, evaluated in one vectorised pass.

    Built once per problem (a committee ODE evaluates it at every right-hand side): a call
    costs a fixed number of gathers and array operations over all items, plus the Plackett
    integrals of the items with four indicator fields.

    Parameters
    ----------
    size : int
        Length of the flat data array the plan reads (e.g. ``P * P`` for one ``P x P``
        covariance, ``B * n * n`` for a batch).
    n : int
        Size of one covariance: entry ``(i, j)`` of the covariance at ``offset`` sits at
        ``offset + i n + j``.
    items : sequence of ``(offset, S, c, d)``
        ``S`` a tuple of 0 to 4 pairwise distinct, non-aligned indicator fields (use
        :func:`reduce_indicators` first); ``c, d`` the moment fields (any fields, ``c == d``
        allowed) or ``None, None`` for the probability :math:`P(x_S > 0)`.

    Notes
    -----
    Tallis' identity (two Gaussian integrations by parts, Tallis 1961) gives, for any fields
    ``c, d``,

    .. math::

        E[x_c x_d 1_S] = C_{cd}\, P(S) + \sum_{\{j, m\} \subset S}
          \frac{C_{cj} C^{(j)}_{dm} + C_{cm} C^{(m)}_{dj}}{2\pi\sqrt{C_{jj}C_{mm} - C_{jm}^2}}\,
          P\bigl(S \setminus \{j, m\} \bigm| x_j = x_m = 0\bigr),
        \qquad C^{(j)}_{dm} = C_{dm} - \frac{C_{dj}C_{jm}}{C_{jj}} .

    The conditional probability of the remaining indicators is 1 (none), 1/2 (one) or
    :math:`\tfrac14 + \arcsin(r_{pq\cdot jm})/(2\pi)` (two, :math:`r_{pq\cdot jm}` their
    partial correlation given the pair).  The orthant probabilities are
    :math:`P(S) = 2^{-k} + \sum_{j<m}\arcsin(\rho_{jm})/(2^{k-1}\pi)` for ``k = |S| <= 3``
    (Sheppard's formula and its trivariate extension), and for four fields Plackett's
    reduction (Plackett 1954) along :math:`R(t) = (1 - t) I + t R` in Childs' form (Childs
    1967),

    .. math::

        P_4 = \frac1{16} + \sum_{j<m}\Bigl[\frac{\arcsin\rho_{jm}}{8\pi}
          + \frac{\arcsin\rho_{jm}}{4\pi^2}\int_0^1 \arcsin r_{pq\cdot jm}\bigl(t(u)\bigr)\,du\Bigr],
          \qquad t(u) = \frac{\sin(u \arcsin\rho_{jm})}{\rho_{jm}},

    where the substitution absorbs the bivariate density of
    :math:`\partial P_4/\partial\rho_{jm} = \phi_2(0, 0; \rho_{jm})\,P(x_p, x_q > 0 \mid x_j =
    x_m = 0)` (bounded integrand).  The partial correlations :math:`r_{pq\cdot jm}(t) =
    -\Pi_{pq}/\sqrt{\Pi_{pp}\Pi_{qq}}` come from :math:`\Pi = R(t)^{-1} =
    V\,\mathrm{diag}\bigl(1/(1 - t + t\lambda)\bigr)\,V^\top` with one eigendecomposition
    :math:`R = V \Lambda V^\top` per item: every pair and node uses the *same*
    (backward-stable) matrix, so the cancellations between terms that a nearly singular
    covariance causes stay exact, and the result is accurate to the rounding floor of the
    input.  The integrals use Gauss–Legendre (:data:`ORTHANT_GL_NODES`) for well-conditioned
    items (:data:`ORTHANT_GL_MIN`) and the tanh-sinh rule (:data:`ORTHANT_NODES`) otherwise.
    """

    __slots__ = ("size", "n_items", "idx", "ce", "base", "coef", "pcond", "quad")

    def __init__(self, size: int, n: int, items):
        rows, offs = [], []
        for off, S, c, d in items:
            rows.append(_template(int(n), tuple(int(s) for s in S), None if c is None else int(c),
                                  None if d is None else int(d)))
            offs.append(int(off))
        self._build(int(size), rows, np.asarray(offs, dtype=np.int64))

    @classmethod
    def repeated(cls, size: int, n: int, S: tuple, c, d, offsets) -> "OrthantPlan":
        """One item structure at many offsets (a batch of covariances), without a Python loop."""
        self = cls.__new__(cls)
        offsets = np.asarray(offsets, dtype=np.int64).ravel()
        row = _template(int(n), tuple(int(s) for s in S), None if c is None else int(c),
                        None if d is None else int(d))
        self._build(int(size), [row], offsets, repeat=True)
        return self

    def _build(self, size: int, rows, offsets, repeat: bool = False):
        T = offsets.size
        idx = np.stack([r[0] for r in rows]) if rows else np.zeros((0, 7, 6), dtype=np.int64)
        ce = np.array([r[1] for r in rows], dtype=np.int64)
        base = np.array([r[2] for r in rows], dtype=float)
        coef = np.array([r[3] for r in rows], dtype=float)
        pcond = np.stack([r[4] for r in rows]) if rows else np.zeros((0, 6))
        quad = np.array([r[5] for r in rows], dtype=bool)
        if repeat:
            idx, ce, base, coef, pcond, quad = (np.repeat(a, T, axis=0) for a in (idx, ce, base, coef, pcond, quad))

        def resolve(a, off):
            return np.where(a >= 0, a + off, np.where(a == _ONE, size, size + 1))

        self.size = size
        self.n_items = T
        self.idx = np.ascontiguousarray(resolve(idx, offsets[:, None, None]).transpose(1, 0, 2))
        self.ce = resolve(ce, offsets)
        self.base, self.coef, self.pcond = base, coef, pcond
        self.quad = np.flatnonzero(quad)

    def __call__(self, flat) -> np.ndarray:
        """The items' values for the covariance entries ``flat`` (1-d, length ``size``).

        The items' indicator fields must have positive variances and no aligned pair (the
        caller merges them first, :func:`reduce_indicators`): then every determinant
        :math:`C_{jj}C_{mm} - C_{jm}^2` read here is positive.
        """
        if flat.size != self.size:
            raise ValueError(f"`flat` must hold the plan's {self.size} covariance entries, got {flat.size}.")
        ext = np.concatenate([flat, (1.0, 0.0)])
        return _orthant_eval(ext[self.idx], ext[self.ce], self.base, self.coef, self.pcond, self.quad)


def _orthant_eval(g, cce, base, coef, pcond, quad) -> np.ndarray:
    """Tallis' identity on gathered entries ``g`` (7, T, 6) (see :class:`OrthantPlan`)."""
    cjj, cmm, cjm, ccj, ccm, cdj, cdm = g
    prod = cjj * cmm
    rho = cjm / np.sqrt(prod)  # |rho| < 1: aligned pairs were merged
    asn = np.arcsin(rho)
    prob = base + coef * np.add.reduce(asn, axis=1)
    if quad.size:
        # the four-field integral only where its coefficient C_cd is not exactly 0 (e.g. two
        # orthogonal teachers); the partial correlations at t = 1 are needed by every item
        integral, r1 = _plackett4(rho[quad], asn[quad], cce[quad] != 0.0)
        prob[quad] += integral
        pcond = pcond.copy()
        pcond[quad] = 0.25 + np.arcsin(r1) / _PI2
    w = ccj * (cdm - cdj * cjm / cjj) + ccm * (cdj - cdm * cjm / cmm)
    return cce * prob + np.add.reduce(w / np.sqrt(prod - cjm * cjm) * pcond, axis=1) / _PI2


@lru_cache(maxsize=4)
def _plackett_nodes(rule: str):
    r"""Nodes as ``(1 - u)/2`` and weights divided by :math:`4\pi^2` of the Plackett rules:
    ``"tanh-sinh"`` (:data:`ORTHANT_NODES`) or ``"legendre"`` (:data:`ORTHANT_GL_NODES`)."""
    if rule == "legendre":
        x, w = np.polynomial.legendre.leggauss(ORTHANT_GL_NODES)
        om, w = 0.5 * (1.0 - x), 0.5 * w
    else:
        _, om, w = _tanh_sinh(ORTHANT_NODES)
    return 0.5 * om, w / (4.0 * math.pi ** 2)


def _plackett_integral(asn, lam, W, rule: str):
    """The integral part of :math:`P_4` for items with arcsines ``asn`` (T, 6), floored
    eigenvalues ``lam`` (T, 4) and eigenvector products ``W`` (T, 6, 4, 3)."""
    hom, w = _plackett_nodes(rule)
    # t(u) = sin(u A)/sin A with psi = (1 - u) A/2: 1 - t = 2 sin(psi) (sin(psi) + cos(psi)/tan(A)),
    # free of cancellation near u = 1; a pair with rho = 0 contributes A * integral = 0 (any finite t)
    a = np.where(asn == 0.0, 1e-300, asn)
    psi = hom * a[..., None]  # (T, 6, N)
    sh = np.sin(psi)
    om = 2.0 * sh * (sh + np.cos(psi) / np.tan(a)[..., None])
    t = 1.0 - om
    # Pi(t) = V diag(1/(1 - t + t lam)) V^T: its (k, k), (l, l), (k, l) entries in one product
    pi = (1.0 / (om[..., None] + t[..., None] * lam[:, None, None, :])) @ W  # (T, 6, N, 3)
    r = np.minimum(np.maximum(t * pi[..., 2] / np.sqrt(pi[..., 0] * pi[..., 1]), -1.0), 1.0)
    return np.add.reduce(asn * (np.arcsin(r) @ w), axis=1)


def _plackett4(rho, asn, need=None):
    r"""Plackett–Childs integrals of four-field orthant probabilities (:class:`OrthantPlan`).

    ``rho``, ``asn``: (T, 6) correlations of the pairs ``_PAIRS4`` and their arcsines;
    ``need`` (T,) marks the items whose integral is wanted (default all; the others get 0).
    Returns the integral part of :math:`P_4` (T,) and the partial correlations
    :math:`r_{pq\cdot jm}` at ``t = 1`` (T, 6).  Items whose correlation matrix has its
    smallest eigenvalue above :data:`ORTHANT_GL_MIN` use the Gauss–Legendre rule, the others
    the tanh-sinh rule.
    """
    T = rho.shape[0]
    R = np.concatenate([np.ones((T, 1)), rho], axis=1)[:, _R_FROM_PAIRS].reshape(T, 4, 4)
    lam, V = np.linalg.eigh(R)
    lam = np.maximum(lam, SPECTRAL_FLOOR)
    # rows (k, l) of V for each pair's complement: products V_km V_km, V_lm V_lm, V_km V_lm (lam_m - 1),
    # so that (W^T g)_(kk, ll, kl) = (Pi_kk, Pi_ll, -Pi_kl / t) for Pi = V diag(g) V^T, g = 1/(1 - t + t lam)
    W = V[:, _W_LEFT, :] * V[:, _W_RIGHT, :]  # (T, 18, 4)
    W[:, 12:] *= lam[:, None, :] - 1.0
    W = W.reshape(T, 3, 6, 4).transpose(0, 2, 3, 1)  # (T, 6, 4, 3)
    p1 = (1.0 / lam)[:, None, None, :] @ W  # (T, 6, 1, 3): t = 1
    r1 = np.minimum(np.maximum(p1[..., 0, 2] / np.sqrt(p1[..., 0, 0] * p1[..., 0, 1]), -1.0), 1.0)
    integral = np.zeros(T)
    easy = lam[:, 0] >= ORTHANT_GL_MIN
    if need is not None and need.all():
        need = None
    if need is not None:
        easy = easy[need]
        sel = np.flatnonzero(need)
        if sel.size == 0:
            return integral, r1
        asn, lam, W = asn[sel], lam[sel], W[sel]
    else:
        sel = slice(None)
    if easy.all():
        integral[sel] = _plackett_integral(asn, lam, W, "legendre")
    elif not easy.any():
        integral[sel] = _plackett_integral(asn, lam, W, "tanh-sinh")
    else:
        part = np.empty(easy.size)
        for mask, rule in ((easy, "legendre"), (~easy, "tanh-sinh")):
            part[mask] = _plackett_integral(asn[mask], lam[mask], W[mask], rule)
        integral[sel] = part
    return integral, r1


def reduce_indicators(fields, C, *, tol: float = ALIGN_TOL):
    r"""The indicator set of :math:`\prod_{f} 1\{x_f > 0\}` with repeated and aligned fields
    merged, or ``None`` when the product vanishes almost surely.

    Parameters
    ----------
    fields : sequence of int
        Indicator fields (repeats allowed).
    C : ndarray (n, n)
        Their covariance (indexed by the field numbers).
    tol : float
        Alignment tolerance (:data:`ALIGN_TOL`).

    Returns
    -------
    tuple of int or None
        The first field of each group of repeated or positively aligned fields, in order of
        first appearance; ``None`` when a field has zero variance (:math:`\Theta(0) = 0`) or
        two fields are anti-aligned (an empty orthant).
    """
    out = []
    for f in fields:
        f = int(f)
        if not C[f, f] > 0.0:
            return None
        for g in out:
            if g == f:
                break
            det = C[f, f] * C[g, g] - C[f, g] * C[f, g]  # the same operations as the plan's determinants
            if det <= tol * C[f, f] * C[g, g]:
                if C[f, g] < 0:
                    return None
                break
        else:
            out.append(f)
    return tuple(out)


def _check_psd_corr(C, name="C"):
    d = np.sqrt(np.diagonal(C, axis1=-2, axis2=-1))
    s = np.where(d > 0, d, 1.0)
    lam = np.linalg.eigvalsh(C / s[..., :, None] / s[..., None, :])
    if lam.size and np.min(lam) < -PSD_REL_TOL:
        raise ValueError(f"`{name}` must be positive semidefinite; its correlation matrix has the eigenvalue "
                         f"{float(np.min(lam)):.3g}.")


def _orthant_batch(C, S, c, d) -> np.ndarray:
    """:math:`E[x_c x_d 1\\{x_S > 0\\}]` for a batch ``C`` (B, n, n), merging repeated, aligned
    and zero-variance indicator fields per element (:func:`reduce_indicators`)."""
    B, n = C.shape[0], C.shape[-1]
    out = np.zeros(B)
    if B == 0:
        return out
    S = tuple(int(s) for s in S)
    # structure key per element: zero-variance fields and aligned pairs (with their sign)
    Sa = np.array(S, dtype=np.int64)
    diag = C[:, Sa, Sa]
    key = np.zeros(B, dtype=np.int64)
    bit = 1
    for a in range(len(S)):
        key |= np.where(diag[:, a] > 0.0, 0, bit)
        bit <<= 1
    for a in range(len(S)):
        for b in range(a + 1, len(S)):
            caa, cbb, cab = diag[:, a], diag[:, b], C[:, S[a], S[b]]
            aligned = caa * cbb - cab * cab <= ALIGN_TOL * caa * cbb
            key |= np.where(aligned & (cab > 0), bit, 0) | np.where(aligned & (cab < 0), 2 * bit, 0)
            bit <<= 2
    flat = C.reshape(-1)
    for k in np.unique(key):
        rows = np.flatnonzero(key == k)
        red = reduce_indicators(S, C[rows[0]])
        if red is None:
            continue
        plan = OrthantPlan.repeated(flat.size, n, red, c, d, rows * (n * n))
        out[rows] = plan(flat)
    return out


def _as_batch(C, n_min: int, name: str = "C"):
    C = np.asarray(C, dtype=float)
    if C.ndim < 2 or C.shape[-1] != C.shape[-2] or not n_min <= C.shape[-1] <= 4:
        raise ValueError(f"`{name}` must have shape (..., n, n) with {n_min} <= n <= 4, got {C.shape}.")
    C = _as_cov(C, C.shape[-1], name)
    _check_psd_corr(C, name)
    return C


def orthant_probability(C) -> np.ndarray:
    r""":math:`P(x_1 > 0, \dots, x_n > 0)` for :math:`x \sim N(0, C)`, ``n <= 4``, vectorised.

    Closed forms for ``n <= 3`` (:math:`\tfrac14 + \arcsin\rho/(2\pi)`, :math:`\tfrac18 +
    \sum\arcsin\rho_{jm}/(4\pi)`); for ``n = 4`` Plackett's one-dimensional reduction in Childs'
    form (:class:`OrthantPlan`), accurate to ~1e-15 (to the input's rounding floor when
    ``C`` is nearly singular).  Repeated and aligned fields are merged exactly, anti-aligned
    ones give 0, and so does a zero-variance field (:math:`\Theta(0) = 0`).

    Parameters
    ----------
    C : array_like, shape (..., n, n)
        Positive semidefinite covariances, ``1 <= n <= 4``.

    Returns
    -------
    ndarray of shape ``C.shape[:-2]``

    References
    ----------
    R. L. Plackett, "A reduction formula for normal multivariate integrals", Biometrika 41,
    351 (1954).  D. R. Childs, "Reduction of the multivariate normal integral to
    characteristic form", Biometrika 54, 293 (1967).

    Examples
    --------
    >>> R = np.full((4, 4), 0.5) + 0.5 * np.eye(4)        # equicorrelated, rho = 1/2: 1/5
    >>> round(float(orthant_probability(R)), 14)
    0.2
    """
    C = _as_batch(C, 1)
    n = C.shape[-1]
    return _orthant_batch(C.reshape(-1, n, n), tuple(range(n)), None, None).reshape(C.shape[:-2])


def orthant_moment(C, c: int, d: int, *, indicators=None) -> np.ndarray:
    r"""Truncated second moment :math:`E[x_c x_d\,1\{x_s > 0\ \forall s \in S\}]`, vectorised.

    Tallis' identity (:class:`OrthantPlan`) reduces it to orthant probabilities of at most
    four fields and bivariate densities; accuracy as :func:`orthant_probability`.

    Parameters
    ----------
    C : array_like, shape (..., n, n)
        Positive semidefinite covariances, ``1 <= n <= 4``.
    c, d : int
        The moment fields (``c == d`` allowed; they need not be indicator fields).
    indicators : sequence of int, optional
        The indicator set ``S`` (default: every field).  Repeats, aligned and zero-variance
        fields are handled exactly (:func:`reduce_indicators`).

    Returns
    -------
    ndarray of shape ``C.shape[:-2]``

    References
    ----------
    G. M. Tallis, "The moment generating function of the truncated multi-normal
    distribution", J. R. Stat. Soc. B 23, 223 (1961).

    Examples
    --------
    >>> C = np.array([[1.0, 0.3], [0.3, 2.0]])
    >>> bool(abs(orthant_moment(C, 0, 1) - relu_i2(C)) < 1e-15)     # E[relu(x_0) relu(x_1)]
    True
    """
    C = _as_batch(C, 1)
    n = C.shape[-1]
    S = tuple(range(n)) if indicators is None else tuple(indicators)
    for name, v in (("c", c), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < n:
            raise ValueError(f"`{name}` must be a field index in [0, {n}), got {v!r}.")
    if not 0 < len(S) <= 4 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < n
                                  for s in S):
        raise ValueError(f"`indicators` must hold 1 to 4 field indices in [0, {n}), got {indicators!r}.")
    return _orthant_batch(C.reshape(-1, n, n), S, int(c), int(d)).reshape(C.shape[:-2])


def relu_i4(C) -> np.ndarray:
    r""":math:`E[\Theta(x_0)\Theta(x_1)\,\mathrm{relu}(x_2)\,\mathrm{relu}(x_3)] = E[x_2 x_3\,
    1\{x > 0\}]`, ``C`` of shape ``(..., 4, 4)``: Tallis' identity with the four-field orthant
    probability by Plackett's reduction (:class:`OrthantPlan`), repeated and aligned fields
    merged exactly (module docstring)."""
    shape = np.shape(C)
    if len(shape) < 2 or shape[-2:] != (4, 4):
        raise ValueError(f"`C` must have shape (..., 4, 4), got {shape}.")
    C = _as_batch(C, 4)
    return _orthant_batch(C.reshape(-1, 4, 4), (0, 1, 2, 3), 2, 3).reshape(C.shape[:-2])


#: Closed forms attached to the activation they belong to: ``CLOSED_FORMS[name][kind]`` is
#: a function of covariances ``(..., n, n)`` giving the product family ``kind`` (module
#: docstring: ``"i2"``, ``"j2"``, ``"i3"``, ``"i4"``) when every factor is the registry
#: activation ``name``.  A missing ``kind`` means no closed form.
CLOSED_FORMS = {
    "erf": {"i2": erf_i2, "j2": erf_j2, "i3": erf_i3, "i4": erf_i4},
    "relu": {"i2": relu_i2, "j2": relu_j2, "i3": relu_i3, "i4": relu_i4},
}
#: Number of activation slots (fields carrying an activation) of each product family.
_FAMILY_SLOTS = {"i2": 2, "j2": 2, "i3": 2, "i4": 4}


def closed_form(kind: str, *acts):
    """``(name, function)`` of the closed form of family ``kind`` for these activations, or ``None``.

    Parameters
    ----------
    kind : {"i2", "j2", "i3", "i4"}
        Product family (module docstring).
    *acts : activation specs
        One per activation slot (``i3`` takes two: the derivative slot and the value slot).

    Examples
    --------
    >>> closed_form("i4", "relu", "relu", "relu", "relu")[0], closed_form("i4", "tanh", "tanh", "tanh", "tanh")
    ('relu', None)
    """
    if kind not in _FAMILY_SLOTS:
        raise ValueError(f"`kind` must be one of {tuple(_FAMILY_SLOTS)}, got {str(kind)[:40]!r}.")
    acts = tuple(get_activation(a) for a in acts)
    for name, table in CLOSED_FORMS.items():
        if kind in table and all(is_builtin(a, name) for a in acts):
            return name, table[kind]
    return None


# ======================================================================================
# the quadrature route
# ======================================================================================
class Factor:
    r"""One factor :math:`f(x_a)` of a Gaussian product expectation.

    Parameters
    ----------
    fn : callable
        Vectorised function of one array.
    breakpoints : sequence of float
        Kinks and jumps of ``fn`` (the quadrature splits there).
    degree : int or None
        Polynomial degree when ``fn`` is a polynomial (exact Gauss–Hermite), else ``None``.
    name : str
        For messages.
    cond_mean : callable or None
        ``(mu, s) -> E[fn(mu + s Z)]``, ``Z ~ N(0, 1)``, ``s > 0``, in closed form when
        known (ReLU, its step derivative, erf and its derivative, abs, sign, ``x``); the
        quadrature then integrates the innermost variable exactly.
    entire : bool
        Each piece between breakpoints is the restriction of an entire function
        (polynomials, ReLU, abs, sign, erf, gelu): Gauss–Legendre then converges fast on
        long panels, so a level is split at its breakpoints only; otherwise (tanh, sigmoid,
        softplus, silu, user callables: poles or branch points near the real axis) also on
        a uniform grid of width :data:`PANEL_WIDTH`.
    """

    __slots__ = ("fn", "breakpoints", "degree", "name", "cond_mean", "entire")

    def __init__(self, fn, breakpoints=(), degree=None, name="f", cond_mean=None, entire=False):
        self.fn = fn
        self.breakpoints = tuple(float(b) for b in breakpoints)
        self.degree = degree
        self.name = name
        self.cond_mean = cond_mean
        self.entire = bool(entire or degree is not None)

    def __repr__(self) -> str:
        return f"Factor({self.name!r})"

    @classmethod
    def value(cls, act) -> "Factor":
        """:math:`\\sigma(x)` of an activation."""
        act = get_activation(act)
        cm = next((_COND_MEANS[n][0] for n in _COND_MEANS if is_builtin(act, n)), None)
        return cls(act.fn, act.breakpoints, act.degree, act.name, cm, _is_entire(act))

    @classmethod
    def derivative(cls, act) -> "Factor":
        """:math:`\\sigma'(x)` of an activation."""
        act = get_activation(act)
        deg = None if act.degree is None else max(act.degree - 1, 0)
        cm = next((_COND_MEANS[n][1] for n in _COND_MEANS if is_builtin(act, n)), None)
        return cls(act.dfn, act.breakpoints, deg, f"{act.name}'", cm, _is_entire(act))

    @classmethod
    def linear(cls) -> "Factor":
        """The field itself, :math:`x`."""
        return cls(_identity, (), 1, "x", _cm_linear, True)


def _identity(x):
    return x


#: Built-ins whose pieces between breakpoints are entire functions (value and derivative).
_ENTIRE = ("relu", "abs", "sign", "erf", "gelu")


def _is_entire(act) -> bool:
    return act.is_polynomial or any(is_builtin(act, n) for n in _ENTIRE)


def _ndtr(x):
    from scipy.special import ndtr

    return ndtr(x)


def _cm_linear(mu, s):
    return mu


def _cm_relu(mu, s):
    r = mu / s
    return mu * _ndtr(r) + s * _npdf(r)


def _cm_step(mu, s):
    return _ndtr(mu / s)


def _cm_abs(mu, s):
    r = mu / s
    return mu * (2.0 * _ndtr(r) - 1.0) + 2.0 * s * _npdf(r)


def _cm_sign(mu, s):
    return 2.0 * _ndtr(mu / s) - 1.0


def _cm_zero(mu, s):
    return np.zeros(np.broadcast_shapes(np.shape(mu), np.shape(s)))


def _cm_erf(mu, s):
    from scipy.special import erf

    return erf(mu / np.sqrt(2.0 * (1.0 + s * s)))


def _cm_derf(mu, s):
    v = 1.0 + s * s
    return math.sqrt(2.0 / math.pi) * np.exp(-0.5 * mu * mu / v) / np.sqrt(v)


#: Closed-form conditional means ``E[f(mu + s Z)]`` of (value, derivative) of built-ins.
_COND_MEANS = {
    "relu": (_cm_relu, _cm_step),
    "erf": (_cm_erf, _cm_derf),
    "abs": (_cm_abs, _cm_sign),
    "sign": (_cm_sign, _cm_zero),
}


@lru_cache(maxsize=32)
def _gh(m: int):
    """Probabilists' Gauss–Hermite nodes and weights normalised to sum 1."""
    t, w = np.polynomial.hermite_e.hermegauss(m)
    return t, w / w.sum()


@lru_cache(maxsize=32)
def _trapezoid(m: int):
    """Trapezoidal nodes ``k Z_MAX / m`` (|k| <= m) with Gaussian weights, normalised to sum 1."""
    t = np.linspace(-Z_MAX, Z_MAX, 2 * m + 1)
    w = np.exp(-0.5 * t * t)
    return t, w / w.sum()


def _triangular_factor(C: np.ndarray) -> np.ndarray:
    r"""Lower-triangular ``L`` with ``L L^T = C`` for PSD ``C`` (B, n, n), in echelon form.

    Semidefinite Cholesky without pivoting: a field whose residual variance (given the
    previous fields) is below :math:`(\text{ZERO\_REL}\cdot\max_a\sqrt{C_{aa}})^2` gets a
    zero diagonal entry, i.e. it is a combination of the previous fields and opens no new
    integration level.  Off-diagonal entries below :data:`OFFDIAG_REL` (rounding) are set to zero.
    """
    n = C.shape[-1]
    scale = np.sqrt(np.max(np.diagonal(C, axis1=-2, axis2=-1), axis=-1))
    thr = ZERO_REL * scale
    L = np.zeros_like(C)
    for j in range(n):
        for col in range(j):
            piv = L[:, col, col]
            num = C[:, j, col] - np.einsum("bm,bm->b", L[:, j, :col], L[:, col, :col])
            L[:, j, col] = np.where(piv > 0, num / np.where(piv > 0, piv, 1.0), 0.0)
        res = C[:, j, j] - np.einsum("bm,bm->b", L[:, j, :j], L[:, j, :j])
        L[:, j, j] = np.where(res > thr * thr, np.sqrt(np.clip(res, 0.0, None)), 0.0)
    return np.where(np.abs(L) > OFFDIAG_REL * scale[:, None, None], L, 0.0)


def _plan(factors, nz, exact: bool):
    """Integration plan of one sparsity pattern ``nz`` (n, n) of ``L``.

    Returns ``(levels, last, close, soft, nbps)``: the integrated levels (outermost first),
    the last non-zero level of each factor (-1 for a zero field), the factor integrated in
    closed form at the innermost level (or ``None``), the outer level that holds the
    smoothed kink of that factor (or ``None``), and the number of panel edges per level.
    """
    n = len(factors)
    idx = np.arange(n)
    last = np.where(nz, idx, -1).max(axis=1)
    levels = [int(j) for j in np.flatnonzero(nz.any(axis=0))]
    close = soft = None
    if levels and not exact:
        inner = levels[-1]
        at = [a for a in range(n) if last[a] == inner]
        if len(at) == 1 and factors[at[0]].cond_mean is not None:
            close = at[0]
            levels = levels[:-1]
            outer = [j for j in levels if nz[close, j]]
            if outer and factors[close].breakpoints:
                soft = outer[-1]
    nbps = []
    for j in levels:
        nb = sum(len(factors[a].breakpoints) for a in range(n) if last[a] == j and a != close)
        if soft == j:
            nb += SOFT_EDGES * len(factors[close].breakpoints)
        nbps.append(nb)
    return levels, last, close, soft, nbps


def _panels(factors, m: int):
    """``(base edges, Gauss–Legendre nodes per panel)`` of a level with breakpoints: split at
    the breakpoints only, ``m`` nodes per panel, when every factor is piecewise entire;
    otherwise also on the uniform grid of width PANEL_WIDTH with ``RULE_GL`` nodes."""
    if all(f.entire for f in factors):
        return _WHOLE_EDGES, m
    return _PANEL_EDGES, RULE_GL[RULE_NODES.index(m)]


def _level_sizes(factors, nz, m: int, exact_m: int | None):
    levels, _, _, _, nbps = _plan(factors, nz, exact_m is not None)
    if exact_m is not None:
        return [exact_m] * len(levels)
    base, per = _panels(factors, m)
    return [2 * m + 1 if nb == 0 else (base.size - 1 + nb) * per for nb in nbps]


def _pad(arr, ndim: int):
    """Append trailing singleton axes up to ``ndim`` dimensions."""
    return arr.reshape(arr.shape + (1,) * (ndim - arr.ndim))


def _field(L, a, levels, zs, upto, ndim):
    """``x_a = sum_l L[a, l] z_l`` over the levels ``<= upto`` (broadcastable array)."""
    B = L.shape[0]
    x = np.zeros((1,) * ndim)
    for p, j in enumerate(levels):
        if j > upto:
            break
        coef = L[:, a, j]
        if np.all(coef == 0):
            continue
        x = x + coef.reshape((B,) + (1,) * (ndim - 1)) * _pad(zs[p], ndim)
    return x


def _nested_rule(L, factors, nz, m: int, exact_m: int | None) -> np.ndarray:
    """One nested tensor rule for a group of covariances sharing a pattern; returns (B,)."""
    B, n = L.shape[0], L.shape[-1]
    levels, last, close, soft, _ = _plan(factors, nz, exact_m is not None)
    J = len(levels)
    zs, ws = [], []  # z_l, w_l of shapes (B or 1, n_0, .., n_l)
    for pos, j in enumerate(levels):
        bps = [(a, kappa) for a in range(n) if last[a] == j and a != close for kappa in factors[a].breakpoints]
        soft_here = soft == j
        if exact_m is not None or not (bps or soft_here):
            t, w = _gh(exact_m) if exact_m is not None else _trapezoid(m)
            shape = (1,) * (pos + 1) + (t.size,)
            zs.append(t.reshape(shape))
            ws.append(w.reshape(shape))
            continue
        # breakpoint positions in z_j given the outer levels: shape (B, n_0, .., n_{pos-1})
        cols = []
        for a, kappa in bps:
            part = _field(L, a, levels[:pos], zs[:pos], j - 1, pos + 1)
            diag = L[:, a, j].reshape((B,) + (1,) * pos)
            cols.append((kappa - part) / diag)
        if soft_here:
            # the closed factor's kink, smoothed over the width s/|L[close, j]| (in z_j units):
            # panel edges at the centre and at +-1, +-4 widths, so the layer is resolved
            jc = int(last[close])
            coef = L[:, close, j].reshape((B,) + (1,) * pos)
            width = np.abs(L[:, close, jc].reshape((B,) + (1,) * pos) / coef)
            part = _field(L, close, levels[:pos], zs[:pos], j - 1, pos + 1)
            for kappa in factors[close].breakpoints:
                centre = (kappa - part) / coef
                for off in SOFT_OFFSETS:
                    cols.append(centre + off * width)
        prefix = np.broadcast_shapes((B,) + (1,) * pos, *(c.shape for c in cols))
        inner = np.stack([np.broadcast_to(c, prefix) for c in cols], axis=-1)
        base_edges, per = _panels(factors, m)
        base = np.broadcast_to(base_edges, prefix + (base_edges.size,))
        edges = np.sort(np.concatenate([base, np.clip(inner, -Z_MAX, Z_MAX)], axis=-1), axis=-1)
        t, w = _gl(per)
        a_, b_ = edges[..., :-1, None], edges[..., 1:, None]
        half = 0.5 * (b_ - a_)
        z = (0.5 * (a_ + b_) + half * t).reshape(prefix + (-1,))
        wz = (half * w).reshape(prefix + (-1,)) * _npdf(z)
        zs.append(z)
        ws.append(wz)
    nd = J + 1
    weight = np.ones((1,) * nd)
    for w in ws:
        weight = weight * _pad(w, nd)
    prod = None
    for a in range(n):
        if a == close:
            jc = int(last[a])
            mu = _field(L, a, levels, zs, jc - 1, nd)
            sd = np.abs(L[:, a, jc]).reshape((B,) + (1,) * J)
            val = factors[a].cond_mean(mu, sd)
        elif last[a] < 0:
            val = factors[a].fn(np.zeros((1,) * nd))
        else:
            val = factors[a].fn(_field(L, a, levels, zs, int(last[a]), nd))
        val = np.asarray(val, dtype=float)
        prod = val if prod is None else prod * val
    total = prod * weight
    total = np.broadcast_to(total, np.broadcast_shapes(total.shape, (B,) + (1,) * J))
    return total.reshape(B, -1).sum(axis=1)


def _patterns(L):
    """Sparsity patterns of ``L`` (B, n, n): unique patterns and the group of each element."""
    n = L.shape[-1]
    keys = (L != 0.0).reshape(L.shape[0], n * n)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    return uniq.reshape(-1, n, n), np.asarray(inv).reshape(-1)


def _evaluate_rule(L, factors, m: int, exact_m: int | None) -> np.ndarray:
    out = np.empty(L.shape[0])
    if exact_m is not None:
        # exact Gauss–Hermite: no breakpoints and no closure, so one dense pattern serves all
        n = L.shape[-1]
        nz = np.tril(np.ones((n, n), dtype=bool))
        step = max(1, CHUNK // exact_m ** n)
        for start in range(0, L.shape[0], step):
            out[start:start + step] = _nested_rule(L[start:start + step], factors, nz, m, exact_m)
        return out
    pats, inv = _patterns(L)
    for g, nz in enumerate(pats):
        rows = np.flatnonzero(inv == g)
        size = int(np.prod(_level_sizes(factors, nz, m, exact_m) or [1]))
        step = max(1, CHUNK // max(size, 1))
        for start in range(0, rows.size, step):
            sel = rows[start:start + step]
            out[sel] = _nested_rule(L[sel], factors, nz, m, exact_m)
    return out


def _grid_points(factors, L, m: int) -> int:
    pats, _ = _patterns(L)
    return max(int(np.prod(_level_sizes(factors, nz, m, None) or [1])) for nz in pats)


def _closing_order(facs) -> list:
    """Field order for the factorisation: a factor with a closed-form conditional mean (and
    breakpoints, the costly kind) goes last, so the innermost level is integrated exactly."""
    n = len(facs)
    score = [(f.cond_mean is not None) * (2 + bool(f.breakpoints)) for f in facs]
    best = int(np.argmax(score))
    if score[best] == 0:
        return list(range(n))
    return [a for a in range(n) if a != best] + [best]


def gaussian_product_expectation(C, factors, *, tol: float = FALLBACK_TOL, level: int = 1,
                                 max_nodes: int = MAX_NODES, return_info: bool = False):
    r""":math:`E[\prod_a f_a(x_a)]` for :math:`x \sim N(0, C)`, vectorised over covariances.

    Parameters
    ----------
    C : array_like, shape (..., n, n)
        Positive semidefinite covariances, ``n <= 4`` (singular ones allowed).
    factors : sequence of Factor or activation specs
        ``n`` factors (an activation spec means :math:`\sigma(x)`; use
        :meth:`Factor.derivative` / :meth:`Factor.linear` for :math:`\sigma'` and ``x``).
    tol : float
        Target: estimated error <= ``tol * max(1, |value|)`` for every entry.
    level : int
        Index into :data:`RULE_NODES` of the first fine rule tried (the coarse rule is the
        one before); a caller that integrates many nearby covariances (an ODE) passes the
        level that worked last time.
    max_nodes : int
        Largest grid (points per integral) allowed.
    return_info : bool
        Also return ``{"error": ndarray, "level": int, "nodes": int, "exact": bool}``.

    Returns
    -------
    ndarray of shape ``C.shape[:-2]`` (and the info dict)

    Raises
    ------
    ValueError
        Bad ``C`` (shape, symmetry, negative variance) or ``len(factors) != n``.
    NumericalError
        The finest affordable rule does not reach ``tol``: "fallback cannot reach tolerance
        X; error reached Y" with the factors named.

    Notes
    -----
    See the module docstring (nested breakpoint-aware rule).  When every factor is a
    polynomial a single Gauss–Hermite rule with :math:`m = \lfloor D/2\rfloor + 1` nodes per
    level (``D`` the total degree) is exact and is used without refinement.

    Examples
    --------
    >>> C = [[1.0, 0.3], [0.3, 2.0]]
    >>> v = gaussian_product_expectation(C, [Factor.value("relu"), Factor.value("relu")])
    >>> round(float(v), 10) == round(float(relu_i2(np.array(C))), 10)
    True
    """
    facs = [f if isinstance(f, Factor) else Factor.value(f) for f in factors]
    C = np.asarray(C, dtype=float)
    n = len(facs)
    if not 1 <= n <= 4:
        raise ValueError(f"`factors` must hold 1 to 4 factors, got {n}.")
    C = _as_cov(C, n)
    tol = check_real("tol", tol, lower=0.0, lower_open=True)
    level = check_int("level", level, minimum=1, maximum=len(RULE_NODES) - 1)
    batch_shape = C.shape[:-2]
    order = _closing_order(facs)
    facs = [facs[a] for a in order]
    Cf = C.reshape((-1, n, n))[:, order][:, :, order]
    L = _triangular_factor(Cf)
    with np.errstate(all="ignore"):
        if all(f.degree is not None for f in facs):
            D = sum(f.degree for f in facs)
            m = D // 2 + 1
            val = _evaluate_rule(L, facs, m, m)
            info = {"error": np.zeros(val.shape), "level": level, "nodes": m ** n, "exact": True}
            out = val.reshape(batch_shape)
            return (out, info) if return_info else out
        coarse = None
        lev = level
        err = None
        while True:
            m_c, m_f = RULE_NODES[lev - 1], RULE_NODES[lev]
            npts = _grid_points(facs, L, m_f)
            if npts > max_nodes:
                reached = (f"error reached {float(np.max(err)):.3g} with {RULE_NODES[lev - 1]} nodes per level"
                           if err is not None else "no error estimate (even the first pair of rules is too large)")
                raise NumericalError(
                    f"the Gaussian-expectation fallback cannot reach tolerance {tol:.3g} for the factors "
                    f"({', '.join(f.name for f in facs)}); {reached}; the next rule needs {npts} points > "
                    f"max_nodes = {max_nodes}. Declare the activation's breakpoints (kinks, jumps), use a "
                    "smoother activation, raise `tol` or `max_nodes`."
                )
            if coarse is None:
                coarse = _evaluate_rule(L, facs, m_c, None)
            fine = _evaluate_rule(L, facs, m_f, None)
            if not np.all(np.isfinite(fine)):
                raise NumericalError(
                    f"the Gaussian expectation of ({', '.join(f.name for f in facs)}) is not finite; the "
                    "activations must be square-integrable under the Gaussian."
                )
            err = np.abs(fine - coarse)
            if np.all(err <= tol * np.maximum(1.0, np.abs(fine))):
                break
            if lev + 1 >= len(RULE_NODES):
                raise NumericalError(
                    f"the Gaussian-expectation fallback cannot reach tolerance {tol:.3g} for the factors "
                    f"({', '.join(f.name for f in facs)}); error reached {float(np.max(err)):.3g} with "
                    f"{m_f} nodes per level (the finest rule). Declare the activation's breakpoints, use a "
                    "smoother activation, or raise `tol`."
                )
            coarse = fine
            lev += 1
    info = {"error": err.reshape(batch_shape), "level": lev, "nodes": npts, "exact": False}
    out = fine.reshape(batch_shape)
    return (out, info) if return_info else out



def _fine_only(C, facs, level: int) -> np.ndarray:
    """The finer rule of ``level`` without an error estimate (see ``CommitteeIntegrals``)."""
    n = len(facs)
    order = _closing_order(facs)
    facs = [facs[a] for a in order]
    Cf = C.reshape((-1, n, n))[:, order][:, :, order]
    with np.errstate(all="ignore"):
        val = _evaluate_rule(_triangular_factor(Cf), facs, RULE_NODES[level], None)
    if not np.all(np.isfinite(val)):
        raise NumericalError(f"the Gaussian expectation of ({', '.join(f.name for f in facs)}) is not finite.")
    return val.reshape(C.shape[:-2])

