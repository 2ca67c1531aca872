r"""Gaussian integrals of the committee-machine ODEs (Saad–Solla ``I2``, ``I3``, ``I4``, ``J2``).

The squared-loss online-SGD ODEs of a two-layer network (:mod:`popdyn.models.committee`)
need low-dimensional Gaussian expectations over the local fields
:math:`x = (\lambda_1..\lambda_K, \nu_1..\nu_M)` with covariance

.. math::

    C = \begin{pmatrix} Q & M \\ M^\top & G \end{pmatrix} \qquad (P \times P,\ P = K + M).

Each field :math:`x_c` carries its own activation :math:`s_c` (the student's
:math:`\sigma` for :math:`c < K`, the teacher's :math:`\sigma^*` otherwise).  For a
sub-covariance of the fields involved (2, 3 or 4 of them, in the order of the arguments):

.. math::

    I_2(a, b) &= E[s_a(x_a)\, s_b(x_b)], &
    J_2(a, b) &= E[s_a'(x_a)\, s_b'(x_b)], \\
    I_3(a, b, c) &= E[s_a'(x_a)\, x_b\, s_c(x_c)], &
    I_4(a, b, c, d) &= E[s_a'(x_a)\, s_b'(x_b)\, s_c(x_c)\, s_d(x_d)] .

The batched functions :func:`i2`, :func:`j2`, :func:`i3`, :func:`i4` take covariances of
shape ``(..., n, n)`` (``n`` = 2, 2, 3, 4; leading axes vectorised) and one activation per
slot, and dispatch to the first route that applies:

``"erf"`` (closed form)
    All activations are Saad–Solla's :math:`\mathrm{erf}(z/\sqrt2)` (registry ``"erf"``):
    the formulas of THEORY.md §1.8 (Saad & Solla 1995, Biehl & Schwarze 1995), exact.
``"relu"`` (closed form)
    All activations ReLU, for ``I2`` (arc-cosine kernel with norms), ``J2`` and ``I3``
    (derived below).  ``I4`` of ReLU has no elementary closed form (it contains a
    four-dimensional orthant probability) and goes to the quadrature route.
``"polynomial"`` (exact)
    All activations polynomials: tensor Gauss–Hermite with enough nodes to be exact for
    the total degree of the integrand, in the whitened coordinates below; the only error
    is rounding.
``"quadrature"`` (fallback)
    Anything else, including mixed pairs (ReLU student, erf teacher): the nested
    breakpoint-aware quadrature of :func:`gaussian_product_expectation`, refined until
    two successive rules agree to ``tol`` (default :data:`FALLBACK_TOL`), or a
    :class:`~popdyn.errors.NumericalError` that states the error reached.

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

The quadrature route
--------------------
:func:`gaussian_product_expectation` computes :math:`E[\prod_a f_a(x_a)]` for
:math:`x \sim N(0, C)`, :math:`C` of size ``n <= 4``.  It writes :math:`x = L z` with
:math:`z \sim N(0, I_n)` and ``L`` lower triangular: a semidefinite Cholesky factor in
echelon form, so a singular ``C`` (coinciding fields, a student aligned with a teacher)
needs no special case -- a field that is a combination of earlier ones opens no new
integration level (entries below :data:`ZERO_REL` times the largest standard deviation
are set to zero).  The integral over ``z`` is nested, outermost
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
looser ``tol`` (e.g. ``1e-6``) for ODE runs with them.  Measured on a random K = M = 2
state (``tol = 1e-8``, all integrals of one ODE right-hand side): erf 0.2 ms (closed
forms), all-ReLU ~30 ms (``I4`` by quadrature), ReLU/erf ~0.1 s, polynomials ~4 ms; the
tanh ``I4`` exceeds :data:`MAX_NODES` at the default ``tol``.

References
----------
D. Saad, S. A. Solla, "On-line learning in soft committee machines", PRE 52, 4225 (1995).
M. Biehl, H. Schwarze, "Learning by on-line gradient descent", J. Phys. A 28, 643 (1995).
S. Goldt, M. Advani, A. M. Saxe, F. Krzakala, L. Zdeborová, NeurIPS 2019 (arXiv 1906.08632).
Y. Cho, L. K. Saul, "Kernel methods for deep learning", NIPS 2009 (arc-cosine kernel).

Examples
--------
>>> import numpy as np
>>> C = np.array([[1, .5, .3, .2], [.5, 1, .4, .1], [.3, .4, 1, .6], [.2, .1, .6, 1]])
>>> round(float(i2(C[:2, :2], "erf", "erf")), 12)          # THEORY.md §5.11
0.16086124651
>>> round(float(i4(C, "erf", "erf", "erf", "erf")), 12)
0.061492408341
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .._validation import check_int, check_real
from ..activations import Activation, get_activation
from ..errors import NumericalError

__all__ = [
    "i2",
    "j2",
    "i3",
    "i4",
    "route",
    "erf_i2",
    "erf_j2",
    "erf_i3",
    "erf_i4",
    "relu_i2",
    "relu_j2",
    "relu_i3",
    "Factor",
    "CommitteeIntegrals",
    "gaussian_product_expectation",
    "FALLBACK_TOL",
    "RULE_NODES",
    "MAX_NODES",
    "ROUTES",
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
#: Entries of the triangular factor below ``ZERO_REL * max_a sqrt(C_aa)`` are set to 0:
#: dropping a component of size eps moves a smooth integral by O(eps^2) and a kinked one
#: by O(eps^2) too (the smoothing layer integrates to eps^2), i.e. below 1e-12.
ZERO_REL = 1e-6
#: Panel edges placed around the smoothed kink of the factor integrated in closed form
#: (offsets in units of the smoothing width): the boundary layer gets panels of its size.
SOFT_OFFSETS = (-4.0, -1.0, 0.0, 1.0, 4.0)
SOFT_EDGES = len(SOFT_OFFSETS)
#: Grid points evaluated at once (memory bound of the quadrature route).
CHUNK = 1 << 21
_N_PANELS = int(round(2 * Z_MAX / PANEL_WIDTH))
_PANEL_EDGES = np.linspace(-Z_MAX, Z_MAX, _N_PANELS + 1)
_WHOLE_EDGES = np.array([-Z_MAX, Z_MAX])
#: Routes reported by :func:`route`.
ROUTES = ("erf", "relu", "polynomial", "quadrature")

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


def _is_builtin(act: Activation, name: str) -> bool:
    """``act`` is the registry's ``name`` (not a user callable sharing the name)."""
    return act.name == name and act.fn is get_activation(name).fn


def _acts(*specs) -> tuple:
    return tuple(get_activation(s) for s in specs)


def route(kind: str, *acts) -> str:
    """The route (one of :data:`ROUTES`) used for integral ``kind`` with these activations.

    ``kind`` is ``"i2"``, ``"j2"``, ``"i3"`` or ``"i4"``; ``acts`` one activation per
    slot (``i3`` takes two: the derivative slot and the value slot).

    Examples
    --------
    >>> route("i3", "relu", "relu"), route("i4", "relu", "relu", "relu", "relu")
    ('relu', 'quadrature')
    >>> route("i2", "relu", "erf"), route("i4", "he3", "he3", "he2", "identity")
    ('quadrature', 'polynomial')
    """
    acts = _acts(*acts)
    if all(_is_builtin(a, "erf") for a in acts):
        return "erf"
    if kind in ("i2", "j2", "i3") and all(_is_builtin(a, "relu") for a in acts):
        return "relu"
    if all(a.is_polynomial for a in acts):
        return "polynomial"
    return "quadrature"


# ======================================================================================
# closed forms: erf(z / sqrt 2)   (THEORY.md §1.8)
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
    (THEORY.md §1.8), ``C`` of shape ``(..., 4, 4)``."""
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
# closed forms: ReLU
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
        cm = next((_COND_MEANS[n][0] for n in _COND_MEANS if _is_builtin(act, n)), None)
        return cls(act.fn, act.breakpoints, act.degree, act.name, cm, _is_entire(act))

    @classmethod
    def derivative(cls, act) -> "Factor":
        """:math:`\\sigma'(x)` of an activation."""
        act = get_activation(act)
        deg = None if act.degree is None else max(act.degree - 1, 0)
        cm = next((_COND_MEANS[n][1] for n in _COND_MEANS if _is_builtin(act, n)), None)
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
    return act.is_polynomial or any(_is_builtin(act, n) for n in _ENTIRE)


def _ndtr(x):
    from scipy.special import ndtr

    return ndtr(x)


def _npdf(x):
    return np.exp(-0.5 * x * x) / _SQRT2PI


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


@lru_cache(maxsize=32)
def _gl(m: int):
    return np.polynomial.legendre.leggauss(m)


def _triangular_factor(C: np.ndarray) -> np.ndarray:
    r"""Lower-triangular ``L`` with ``L L^T = C`` for PSD ``C`` (B, n, n), in echelon form.

    Semidefinite Cholesky without pivoting: a field whose residual variance (given the
    previous fields) is below :math:`(\text{ZERO\_REL}\cdot\max_a\sqrt{C_{aa}})^2` gets a
    zero diagonal entry, i.e. it is a combination of the previous fields and opens no new
    integration level.  Off-diagonal entries below the same threshold are set to zero.
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
    return np.where(np.abs(L) > thr[:, None, None], L, 0.0)


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


# ======================================================================================
# dispatch
# ======================================================================================
def _check_psd_soft(C):
    """Reject clearly non-PSD covariances (beyond rounding)."""
    lam = np.linalg.eigvalsh(C)
    scale = np.maximum(1.0, np.abs(lam).max(axis=-1))
    if np.any(lam[..., 0] < -1e-10 * scale):
        raise ValueError(f"`C` must be positive semidefinite; smallest eigenvalue {float(lam[..., 0].min()):.3g}.")


def _dispatch(kind, C, acts, factors, closed, tol, max_nodes):
    r = route(kind, *acts)
    if r == "erf":
        return closed["erf"](C)
    if r == "relu":
        return closed["relu"](C)
    return gaussian_product_expectation(C, factors, tol=tol, max_nodes=max_nodes)


def i2(C, sigma_a, sigma_b, *, tol: float = FALLBACK_TOL,
       max_nodes: int = MAX_NODES):
    r""":math:`I_2 = E[\sigma_a(x_0)\,\sigma_b(x_1)]`, ``C`` of shape ``(..., 2, 2)``.

    Routes: closed forms for erf/erf and ReLU/ReLU, exact for polynomials, quadrature
    otherwise (module docstring).  ``tol`` and ``max_nodes`` apply to the quadrature route
    (:func:`gaussian_product_expectation`), the same in :func:`j2`, :func:`i3`, :func:`i4`.
    """
    C = _as_cov(C, 2)
    _check_psd_soft(C)
    a, b = _acts(sigma_a, sigma_b)
    return _dispatch("i2", C, (a, b), [Factor.value(a), Factor.value(b)],
                     {"erf": erf_i2, "relu": relu_i2}, tol, max_nodes)


def j2(C, sigma_a, sigma_b, *, tol: float = FALLBACK_TOL,
       max_nodes: int = MAX_NODES):
    r""":math:`J_2 = E[\sigma_a'(x_0)\,\sigma_b'(x_1)]`, ``C`` of shape ``(..., 2, 2)``."""
    C = _as_cov(C, 2)
    _check_psd_soft(C)
    a, b = _acts(sigma_a, sigma_b)
    return _dispatch("j2", C, (a, b), [Factor.derivative(a), Factor.derivative(b)],
                     {"erf": erf_j2, "relu": relu_j2}, tol, max_nodes)


def i3(C, sigma_a, sigma_c, *, tol: float = FALLBACK_TOL,
       max_nodes: int = MAX_NODES):
    r""":math:`I_3 = E[\sigma_a'(x_0)\,x_1\,\sigma_c(x_2)]`, ``C`` of shape ``(..., 3, 3)``.

    ``sigma_a`` is the activation whose derivative enters (a student unit),
    ``sigma_c`` the one of the third field (student or teacher).
    """
    C = _as_cov(C, 3)
    _check_psd_soft(C)
    a, c = _acts(sigma_a, sigma_c)
    return _dispatch("i3", C, (a, c), [Factor.derivative(a), Factor.linear(), Factor.value(c)],
                     {"erf": erf_i3, "relu": relu_i3}, tol, max_nodes)


def i4(C, sigma_a, sigma_b, sigma_c, sigma_d, *, tol: float = FALLBACK_TOL,
       max_nodes: int = MAX_NODES):
    r""":math:`I_4 = E[\sigma_a'(x_0)\,\sigma_b'(x_1)\,\sigma_c(x_2)\,\sigma_d(x_3)]`, ``C`` of
    shape ``(..., 4, 4)``.  ReLU has no closed form here: quadrature route."""
    C = _as_cov(C, 4)
    _check_psd_soft(C)
    a, b, c, d = _acts(sigma_a, sigma_b, sigma_c, sigma_d)
    return _dispatch("i4", C, (a, b, c, d),
                     [Factor.derivative(a), Factor.derivative(b), Factor.value(c), Factor.value(d)],
                     {"erf": erf_i4}, tol, max_nodes)


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


# ======================================================================================
# all integrals of the committee ODE at one state
# ======================================================================================
class CommitteeIntegrals:
    r"""Every Gaussian integral the committee ODE needs at a state, vectorised over index tuples.

    Fields are numbered ``0..K-1`` (student, activation :math:`\sigma`) and
    ``K..K+M-1`` (teacher, :math:`\sigma^*`).  :meth:`compute` takes the joint covariance
    ``C`` (``P x P``) and returns

    * ``"I2"`` (P, P): :math:`I_2(c, e) = E[s_c(x_c) s_e(x_e)]`;
    * ``"I3"`` (K, P, P): :math:`I_3(i, b, c) = E[\sigma'(\lambda_i)\, x_b\, s_c(x_c)]`;
    * ``"I4"`` (K, K, P, P): :math:`I_4(i, k, c, e) = E[\sigma'(\lambda_i)\sigma'(\lambda_k)
      s_c(x_c) s_e(x_e)]` (when asked);
    * ``"J2"`` (K, K): :math:`E[\sigma'(\lambda_i)\sigma'(\lambda_k)]` (when asked).

    Index tuples are grouped by their activations (one group when student and teacher
    share the activation) and each group is evaluated in one batched call of its route
    (:func:`route`); symmetric tuples (:math:`I_2(c,e) = I_2(e,c)`, :math:`I_4` in
    ``(i,k)`` and in ``(c,e)``) are computed once.  The teacher-teacher block of ``I2``
    depends only on ``G`` and is cached.  For the quadrature route the rule level that
    met ``tol`` is remembered per group, so an ODE pays the refinement once.

    Parameters
    ----------
    student, teacher : activation specs
    K, M : int
    tol : float
        Tolerance of the quadrature route (:data:`FALLBACK_TOL`).
    recheck : int
        Quadrature route only: the error estimate (two rules) is recomputed on the first
        call and every ``recheck`` calls per group; in between only the finer rule of the
        remembered level is evaluated (the states of consecutive ODE stages are close).
        ``1`` checks every call.
    max_nodes : int
        Grid budget per integral of the quadrature route (:data:`MAX_NODES`).
    """

    def __init__(self, student, teacher, K: int, M: int, *, tol: float = FALLBACK_TOL, recheck: int = 10,
                 max_nodes: int = MAX_NODES):
        self.student = get_activation(student)
        self.teacher = get_activation(teacher)
        self.K = check_int("K", K, minimum=1)
        self.M = check_int("M", M, minimum=1)
        self.tol = check_real("tol", tol, lower=0.0, lower_open=True)
        self.recheck = check_int("recheck", recheck, minimum=1)
        self.max_nodes = check_int("max_nodes", max_nodes, minimum=1)
        self._calls: dict = {}
        self.P = self.K + self.M
        K, P = self.K, self.P
        self._acts = [self.student] * K + [self.teacher] * self.M
        same = self._key(self.student) == self._key(self.teacher)
        self._kind = np.array([0] * K + [0 if same else 1] * self.M)
        self._levels: dict = {}
        self._plans: dict = {}
        self._tt_cache = None
        c, e = np.triu_indices(P)
        self._pairs = self._group(np.stack([c, e], 1), (0, 1))
        tt = [(k, np.all(idx >= K, axis=1), idx) for k, idx in self._pairs]
        self._pairs_tt = [(k, idx[m]) for k, m, idx in tt if m.any()]
        self._pairs_other = [(k, idx[~m]) for k, m, idx in tt if (~m).any()]
        i, b, cc = np.meshgrid(np.arange(K), np.arange(P), np.arange(P), indexing="ij")
        self._triples = self._group(np.stack([i.ravel(), b.ravel(), cc.ravel()], 1), (2,))
        ii, kk = np.triu_indices(K)
        self._spairs = [(("j2",), np.stack([ii, kk], 1))]
        q = np.array([(a, b_, c_, e_) for a, b_ in zip(ii, kk) for c_, e_ in zip(c, e)], dtype=int)
        self._quads = self._group(q, (2, 3))

    @staticmethod
    def _key(act):
        return (act.name, id(act.fn))

    def _group(self, idx, value_slots):
        """Split index tuples by the activation kinds of their value slots."""
        kinds = self._kind[idx[:, list(value_slots)]]
        out = []
        for key in np.unique(kinds, axis=0):
            sel = np.all(kinds == key, axis=1)
            out.append((tuple(int(k) for k in key), idx[sel]))
        return out

    def _act_of_kind(self, kind):
        return self.student if kind == 0 else self.teacher

    def routes(self) -> dict:
        """Route used for each integral family and activation group (for ``meta``)."""
        s = self.student
        out = {}
        for name, groups, slots in (("I2", self._pairs, None), ("I3", self._triples, None),
                                    ("I4", self._quads, None)):
            for key, _ in groups:
                acts = [self._act_of_kind(k) for k in key]
                if name == "I2":
                    r = route("i2", *acts)
                elif name == "I3":
                    r = route("i3", s, *acts)
                else:
                    r = route("i4", s, s, *acts)
                out[f"{name}[{','.join(a.name for a in acts)}]"] = r
        out["J2"] = route("j2", s, s)
        return out

    def _eval(self, family, key, C, idx):
        """Batched values of one group (sub-covariances gathered from ``C``)."""
        return self._eval_sub(family, key, C[idx[:, :, None], idx[:, None, :]])

    def _plan(self, family, key):
        """``(route, closed-form function or None, factors)`` of a group (cached)."""
        plan = self._plans.get((family, key))
        if plan is not None:
            return plan
        s = self.student
        acts = [self._act_of_kind(k) for k in key] if family != "J2" else []
        if family == "I2":
            r, facs, closed = route("i2", *acts), [Factor.value(a) for a in acts], {"erf": erf_i2, "relu": relu_i2}
        elif family == "I3":
            r = route("i3", s, *acts)
            facs = [Factor.derivative(s), Factor.linear(), Factor.value(acts[0])]
            closed = {"erf": erf_i3, "relu": relu_i3}
        elif family == "I4":
            r = route("i4", s, s, *acts)
            facs = [Factor.derivative(s), Factor.derivative(s)] + [Factor.value(a) for a in acts]
            closed = {"erf": erf_i4}
        else:
            r, facs, closed = route("j2", s, s), [Factor.derivative(s)] * 2, {"erf": erf_j2, "relu": relu_j2}
        plan = (r, closed.get(r), facs)
        self._plans[(family, key)] = plan
        return plan

    def _eval_sub(self, family, key, sub):
        """Values of one group at the sub-covariances ``sub`` (..., n, n)."""
        r, closed, facs = self._plan(family, key)
        if closed is not None:
            return closed(sub)
        gk = (family, key)
        calls = self._calls.get(gk, 0)
        self._calls[gk] = calls + 1
        if gk in self._levels and calls % self.recheck and r != "polynomial":
            return _fine_only(sub, facs, self._levels[gk])
        val, info = gaussian_product_expectation(sub, facs, tol=self.tol, level=self._levels.get(gk, 1),
                                                 max_nodes=self.max_nodes, return_info=True)
        self._levels[gk] = info["level"]
        return val

    def i2_matrix(self, C) -> np.ndarray:
        """``I2`` (..., P, P) for covariances ``C`` (..., P, P) (leading axes vectorised)."""
        C = np.asarray(C, dtype=float)
        P = self.P
        out = np.empty(C.shape[:-2] + (P, P))
        for key, idx in self._pairs:
            sub = C[..., idx[:, :, None], idx[:, None, :]]
            val = self._eval_sub("I2", key, sub)
            out[..., idx[:, 0], idx[:, 1]] = val
            out[..., idx[:, 1], idx[:, 0]] = val
        return out

    def compute(self, C, *, i4: bool = True, j2: bool = False) -> dict:
        """Integrals at the joint covariance ``C`` (P x P); see the class docstring."""
        K, P = self.K, self.P
        C = np.asarray(C, dtype=float)
        out = {}
        I2 = np.empty((P, P))
        G = C[K:, K:]
        if self._tt_cache is None or not np.array_equal(self._tt_cache[0], G):
            tt = [(idx, self._eval("I2", key, C, idx)) for key, idx in self._pairs_tt]
            self._tt_cache = (G.copy(), tt)
        for idx, val in self._tt_cache[1]:
            I2[idx[:, 0], idx[:, 1]] = val
            I2[idx[:, 1], idx[:, 0]] = val
        for key, idx in self._pairs_other:
            val = self._eval("I2", key, C, idx)
            I2[idx[:, 0], idx[:, 1]] = val
            I2[idx[:, 1], idx[:, 0]] = val
        out["I2"] = I2
        I3 = np.empty((K, P, P))
        for key, idx in self._triples:
            I3[idx[:, 0], idx[:, 1], idx[:, 2]] = self._eval("I3", key, C, idx)
        out["I3"] = I3
        if i4:
            I4 = np.empty((K, K, P, P))
            for key, idx in self._quads:
                val = self._eval("I4", key, C, idx)
                a, b, c, e = idx.T
                I4[a, b, c, e] = val
                I4[b, a, c, e] = val
                I4[a, b, e, c] = val
                I4[b, a, e, c] = val
            out["I4"] = I4
        if j2:
            J2 = np.empty((K, K))
            for key, idx in self._spairs:
                val = self._eval("J2", key, C, idx)
                J2[idx[:, 0], idx[:, 1]] = val
                J2[idx[:, 1], idx[:, 0]] = val
            out["J2"] = J2
        return out
