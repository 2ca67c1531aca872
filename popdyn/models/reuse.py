r"""Single-index learning by spherical SGD with **batch reuse** (Lee, Oko, Suzuki, Wu 2024).

Lee, Oko, Suzuki and Wu (arXiv 2406.01581) show that SGD which takes two consecutive
gradient steps on the *same* minibatch learns any polynomial single-index target with
:math:`n \simeq d\,\mathrm{polylog}\,d` samples: the second step sees the first step's
change of the pre-activation, which brings powers of the label :math:`y^j` (label
transforms) into the gradient, so the effective exponent drops from the information
exponent ``p`` to the generative exponent :math:`p^* \le 2` (arXiv 2406.01581, abstract;
theory/lee2024/equations.md, "Label transforms and the generative exponent").
This module is the :math:`d\to\infty` mean-path theory of that mechanism for one
neuron (Phase I of the paper, correlation loss).

Model (reconstruction of arXiv 2406.01581; theory/lee2024/equations.md)
-----------------------------------------------------------------------
Data :math:`x\sim N(0, I_d)`, label :math:`y = a^*\sigma^*(\theta\cdot x)`, student
:math:`\sigma(w\cdot x)` with :math:`\|w\| = 1`, alignment :math:`m = w\cdot\theta`.
One *iteration* draws a fresh minibatch of ``B`` samples and takes ``r = reuse``
normalised spherical gradient steps of the correlation loss on it, each at the current
weight, then interpolates:

.. math::

    w_{k+1} = \frac{w_k + \eta\,\frac1B\sum_b y_b\,\sigma'(w_k\cdot x_b)\,(x_b - (w_k\cdot x_b) w_k)}
                   {\|\cdot\|}, \quad k = 0..r-1, \qquad
    w_{\rm new} = \frac{(1-\xi)\,w_0 + \xi\,w_r}{\|\cdot\|} .

``r = 1, xi = 1`` is plain online spherical SGD (:mod:`popdyn.models.single_index`).
The step scale per sample is :math:`\tilde\eta = \eta d/B`.

*Where we had to choose.*  The paper's Algorithm 1 (its exact step/interpolation
schedule, projected vs spherical steps, the per-neuron randomised polynomial
activations and the layer-wise squared loss with small fixed second layer) was not
available to us.  The schedule above is our reconstruction (theory/lee2024/equations.md,
"Reconstruction of the algorithm"): spherical steps, the interpolation
:math:`w \leftarrow (1-\xi)w_{\rm old} + \xi w_{\rm new}` mentioned in a summary of the paper, and the squared loss with a small fixed second-layer weight
:math:`a_j` modelled as the correlation loss of :math:`\mathrm{sign}(a_j)\sigma`.

The :math:`d\to\infty` drift per sample (derivation)
----------------------------------------------------
Write :math:`z_k = w_k\cdot x`, :math:`t = \theta\cdot x`.  For ``B = 1`` one step is
:math:`w_{k+1} = (w_k + \tfrac{\tilde\eta}{d}\,y\sigma'(z_k)(x - z_k w_k))/\|\cdot\|`.
Because :math:`\|x\|^2/d \to 1`, the next pre-activation on the same sample is

.. math::

    z_{k+1} = z_k + \tilde\eta\, y\,\sigma'(z_k) + O(d^{-1/2}),

a *deterministic* function of :math:`(z_0, y)`: this is the label transform.  The
alignment moves by :math:`\tfrac{\tilde\eta}{d}y\sigma'(z_k)(t - z_k m)` and the
normalisation contracts it by :math:`1 - \tfrac{\tilde\eta^2}{2d}y^2\sigma'(z_k)^2`.
For the interpolation, :math:`\|(1-\xi)w_0 + \xi w_r\|^2 = 1 - \xi(1-\xi)\|w_r -
w_0\|^2` with :math:`\|w_r - w_0\|^2 \simeq \tfrac{\tilde\eta^2}{d}y^2(\sum_k
\sigma'(z_k))^2`.  Summing, the mean increment per sample is :math:`D_r(m)/d` with

.. math::

    D_r(m) = \xi\sum_{k<r}\Bigl[\tilde\eta\,E[y\sigma'(z_k)(t - m z_k)]
             - \frac{\tilde\eta^2}{2}\,m\,E[y^2\sigma'(z_k)^2]\Bigr]
             + \frac{\xi(1-\xi)}{2}\,m\,\tilde\eta^2\,E\Bigl[y^2\Bigl(\sum_{k<r}\sigma'(z_k)\Bigr)^2\Bigr],

:math:`(z_0, t)` a standard normal pair with correlation ``m``.  In the time
:math:`\tau = \mathrm{samples}/d`, :math:`dm/d\tau = D_r(m)`.  With a minibatch of ``B``
samples, one iteration moves ``m`` by :math:`B D_r/d` and the cross-sample terms are
:math:`O(\tilde\eta\sqrt{B/d})`: the formula needs :math:`B \ll d`.  For ``r = 1``,
:math:`D_1 = \tilde\eta(1-m^2)\Phi'(m) - \tfrac{\tilde\eta^2}{2} m C(m)` is ``d``
times the per-step increment of :mod:`popdyn.models.single_index` with
:math:`\eta = \tilde\eta/d`, up to its factor :math:`(d-1)/d`.

Signal and contraction (Stein form)
-----------------------------------
Put :math:`G_p = \xi\tilde\eta\sum_k y\sigma'(z_k)` and
:math:`G_q = \xi\sum_k[\tilde\eta y\sigma'(z_k)(z_k - z_0) + \tfrac{\tilde\eta^2}{2}y^2\sigma'(z_k)^2]
- \tfrac{\xi(1-\xi)}{2}\tilde\eta^2 y^2(\sum_k\sigma'(z_k))^2`, functions of :math:`(z_0, t)`.
Since :math:`t - m z_k = (t - m z_0) - m(z_k - z_0)` and, given :math:`z_0`,
:math:`t - m z_0 = \sqrt{1-m^2}\,s` with ``s`` standard normal (Stein),

.. math::

    D_r(m) = (1 - m^2)\,P(m) - m\,Q(m), \qquad P(m) = E_m[\partial_t G_p], \quad Q(m) = E_m[G_q].

``P`` is the **signal** (it only sees :math:`t` through its Hermite components of degree
:math:`\ge 1`); ``Q`` collects the normalisation contraction and the within-batch
self-interaction (for ``r = 2``: :math:`\tilde\eta^2 E[y^2]E[\sigma'^2]` at ``m = 0``,
the second half of the :math:`-2E[y^2]E[\sigma'^2]` in the sign condition of
theory/lee2024/equations.md).  By Mehler's formula
:math:`E_m[F(z, t)] = \sum_j m^j E[F\,h_j(z)h_j(t)]` with :math:`z, t` *independent*,
and :math:`E[\partial_t g\,h_j(t)] = \sqrt{j+1}E[g\,h_{j+1}(t)]`, the power coefficients are

.. math::

    P_j = \sqrt{j+1}\,E[G_p\,h_j(z)\,h_{j+1}(t)], \quad Q_j = E[G_q\,h_j(z)\,h_j(t)], \quad
    D_j = P_j - P_{j-2} - Q_{j-1} .

The **effective exponent** is ``1 +`` the first ``j`` with :math:`P_j \ne 0`.  For
``r = 1``, :math:`P = \tilde\eta\Phi'`, so it is the information exponent of the pair.
(The split :math:`D = A - mB` with :math:`A = E_m[G_p t]` that one might try first gives
the same ``D`` but puts label-mean pieces such as :math:`E[y]E[\sigma'']m` and
:math:`E[y^2]E[z\sigma'\sigma'']m` into ``A``; they carry no information about
:math:`\theta` and cancel against :math:`mB`, so ``A`` would report exponent 2 for any
label with :math:`E[y] \ne 0`.  The Stein split has no such terms.)

At ``m = 0`` and ``r = 2`` (``xi = 1``), Taylor expanding :math:`\sigma'(z_1)` gives the label-transform series

.. math::

    D_2(0) = 2\tilde\eta\,E[yt]\,E[\sigma'] + \sum_{r'\ge 1}\frac{\tilde\eta^{r'+1}}{r'!}\,
             E[y^{r'+1}t]\,E[\sigma'^{r'}\sigma^{(r'+1)}]

(finite for a polynomial student, asymptotic otherwise); the first term vanishes when
:math:`E[yt] = 0` (information exponent ``>= 2``).

Computing the expectations
--------------------------
* **Polynomial** student and teacher (``exact``): :math:`G_p, G_q` are polynomials in
  :math:`(z_0, t, \tilde\eta)` (sympy), and the Gaussian moments
  :math:`E[z^a He_j(z)] = a!/(((a-j)/2)!\,2^{(a-j)/2})` make every coefficient exact.
  :math:`D` itself is computed by Mehler on monomials of :math:`G_p t` and
  :math:`G_p z_0 + G_q` (the ``A - mB`` form), the coefficients by the Stein form above:
  two routes that the tests compare exactly.
* **Otherwise**: tensor composite Gauss–Legendre rules against the Gaussian density
  (24 nodes per panel on :math:`[-14, 14]`, panels doubling from 16 to 256), over
  :math:`(z, s)` with :math:`t = mz + \sqrt{1-m^2}s` for :math:`D(m)`, over independent
  :math:`(z, t)` for the coefficients.  Refinement stops when two consecutive rules agree
  to ``QUAD_TOL`` relative to ``max(1, |value|)``; otherwise
  :class:`~popdyn.errors.NumericalError` reports the difference reached.  (Gauss–Hermite
  rules converge badly: :math:`\sigma'(z_1)` has steep transitions along the curve
  :math:`z_1 = 0` of the :math:`(z, t)` plane.)  Smooth bounded-derivative students (tanh,
  sigmoid, softplus, log cosh) converge at 384-768 nodes per axis; kinked students (ReLU:
  :math:`\sigma'(z_1)` jumps) do not, by design.
  For the ODE and :func:`predicted_samples`, :math:`D(m)` at a fixed
  :math:`\tilde\eta` is tabulated once on Chebyshev nodes in :math:`\arcsin m` (as in
  :mod:`popdyn.models.single_index`, accuracy ``NUMERIC_TOL``).

*Validity.*  Unbounded polynomial students make the :math:`d\to\infty` limit converge
very slowly (the step :math:`\tilde\eta y\sigma'(z)` is heavy-tailed; theory/lee2024/equations.md):
use bounded :math:`\sigma'` for quantitative comparisons with finite-``d`` simulation.
Fluctuations (diffusion) are not modelled: this is the mean path.

References
----------
J. D. Lee, K. Oko, T. Suzuki, D. Wu, "Neural network learns low-dimensional polynomials
with SGD near the information-theoretic limit", arXiv 2406.01581 (2024).
A. Damian, L. Pillaud-Vivien, J. D. Lee, J. Bruna, "Computational-statistical gaps in
Gaussian single-index models", arXiv 2403.05529 (generative exponent).
theory/lee2024/equations.md (derivations and reference drift values).

Examples
--------
>>> online, reuse = ReuseProblem("he3", "he3", reuse=1), ReuseProblem("he3", "he3", reuse=2)
>>> online.effective_exponent(), reuse.effective_exponent()      # IE 3 -> GE 1
(3, 1)
>>> reuse.drift_coefficients_expr(0)     # D_2(0) = (eta^3/2) E[y^3 t] E[sigma'^2 sigma''']
(81*eta_tilde**3,)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

import numpy as np

from .._validation import check_choice, check_int, check_real, check_time_unit
from ..activations import Activation, get_activation
from ..errors import NumericalError
from ..simulation import register_stepper
from .single_index import AlignmentODE

__all__ = [
    "ReuseProblem",
    "predicted_samples",
    "student_survey",
    "choose_students",
    "tanh_logcosh",
    "HE34",
    "QUAD_TOL",
    "NUMERIC_TOL",
    "ZERO_TOL",
    "ODE_TIME_UNITS",
]

#: Two consecutive quadrature rules must agree to this, relative to ``max(1, |value|)``.
#: 100x below NUMERIC_TOL so that the Chebyshev tables built from these values meet theirs.
QUAD_TOL = 1e-10
#: Composite Gauss–Legendre rule per axis: ``_GL_NODES`` nodes per panel on
#: [-QUAD_HALF_WIDTH, QUAD_HALF_WIDTH] with 16 * 2**level panels, level = 0..QUAD_MAX_LEVEL.
#: The Gaussian mass beyond 14 is 1e-44, so integrands growing up to ``|t|^20`` lose < 1e-20.
#: (Gauss–Hermite rules converge too slowly here: sigma'(z_1) with z_1 = z + eta y sigma'(z)
#: has steep transitions along a curve of the (z, t) plane, e.g. log cosh / he3 needs
#: > 1400 Hermite nodes per axis for 1e-5, against 384 Legendre nodes for 1e-13.)
QUAD_HALF_WIDTH = 14.0
QUAD_MAX_LEVEL = 4
_GL_NODES = 24
#: The kernel route of D_r(m) (one grid evaluation reweighted for every m) is used up to this
#: level (memory: 5 arrays of ~1.6e6 points) and for |m| <= _KERNEL_MAX_M (the density's
#: narrow width sqrt(1 - m^2) >= 0.31 stays resolved by the panels).
_KERNEL_MAX_LEVEL = 2
_KERNEL_MAX_M = 0.95
#: Tensor points whose weight is below this are dropped (outside radius ~12.7; an integrand
#: growing like |x|^16 contributes < 1e-16 there).
_WEIGHT_FLOOR = 1e-36
#: Accuracy of the Chebyshev tables of D_r(m) used by the ODE and predicted_samples.
NUMERIC_TOL = 1e-8
#: A numeric coefficient counts as non-zero above this (quadrature accuracy QUAD_TOL;
#: 100x margin).  Exact problems decide symbolically.
ZERO_TOL = 1e-8
#: Largest ``reuse``.  The paper analyses r = 2; the numeric drift's tensor quadrature costs
#: 0.5 s at r = 2, 6 s at r = 4 and 34 s at r = 8 (tanh student, he3 teacher, order 2, on 2
#: cores), growing faster than linearly, so larger r would hang the predictions.
MAX_REUSE = 8
#: Largest total degree of the composed polynomials for the exact (sympy) route; above it
#: polynomial problems use the numeric route.  he3/he3 reaches degree 26 at r = 2 (0.8 s),
#: 58 at r = 3 (3.9 s) and 122 at r = 4 (234 s).
MAX_EXACT_DEGREE = 60
#: Highest Mehler order searched by :meth:`ReuseProblem.effective_exponent` (numeric route).
MAX_EXPONENT_ORDER = 8
#: Time units of the ODE (first: the unit of :func:`popdyn.simulate`, t = eta * iterations).
ODE_TIME_UNITS = ("t = eta * steps", "samples / d")
_TIME_ALIASES = {"eta*steps": "t = eta * steps", "t=eta*steps": "t = eta * steps",
                 "samples/d": "samples / d", "tau": "samples / d"}
#: The unnormalised :math:`He_3 + He_4` (theory/lee2024/equations.md, "Caution: unnormalised
#: polynomials"; as in tests/test_exponents.py).
HE34 = "poly:z**3-3*z+z**4-6*z**2+3"


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def _check_reuse(reuse) -> int:
    if isinstance(reuse, bool) or not isinstance(reuse, numbers.Real):
        raise TypeError(f"`reuse` must be an integer in [1, {MAX_REUSE}], got {reuse!r} ({type(reuse).__name__}).")
    if not math.isfinite(float(reuse)) or float(reuse) != int(reuse) or not 1 <= int(reuse) <= MAX_REUSE:
        raise ValueError(f"`reuse` must be an integer in [1, {MAX_REUSE}] (gradient steps per minibatch), "
                         f"got {reuse!r}.")
    return int(reuse)


def _exact_degree(student_degree: int, teacher_degree: int, reuse: int) -> int:
    r"""Total degree in :math:`(z, t)` of the polynomial :math:`G_q` after ``reuse`` steps.

    The k-th pre-activation :math:`z_{k+1} = z_k + \tilde\eta\, y\, \sigma'(z_k)` has degree
    :math:`\deg z_{k+1} = \max(\deg z_k, \deg y + (\deg\sigma - 1)\deg z_k)`, and
    :math:`G_q` holds :math:`(y\sigma'(z_{r-1}))^2`.
    """
    dz = 1
    for _ in range(reuse - 1):
        dz = max(dz, teacher_degree + (student_degree - 1) * dz)
    return 2 * (teacher_degree + max(student_degree - 1, 0) * dz)


def _check_eta(eta_tilde) -> float:
    return check_real("eta_tilde", eta_tilde, lower=0.0)


@functools.lru_cache(maxsize=4)
def _tensor(level: int):
    """Flattened tensor rule ``(Z, S, W)``, points with weight below ``_WEIGHT_FLOOR`` dropped."""
    x, w = _rule(level)
    Z, S = np.meshgrid(x, x, indexing="ij")
    W = np.outer(w, w)
    keep = W > _WEIGHT_FLOOR
    return Z[keep], S[keep], W[keep]


@functools.lru_cache(maxsize=8)
def _rule(level: int):
    """1-D composite Gauss–Legendre nodes and weights for E over N(0, 1) (weights include the density)."""
    from numpy.polynomial.legendre import leggauss

    xg, wg = leggauss(_GL_NODES)
    edges = np.linspace(-QUAD_HALF_WIDTH, QUAD_HALF_WIDTH, 16 * 2 ** level + 1)
    a, b = edges[:-1, None], edges[1:, None]
    x = (0.5 * (a + b) + 0.5 * (b - a) * xg).ravel()
    w = (0.5 * (b - a) * wg).ravel() * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def _refine(fn, size: int, what: str, tol: float = QUAD_TOL, *, max_level: int = QUAD_MAX_LEVEL,
            raise_on_failure: bool = True):
    """Refine ``fn(level, idx) -> values at idx`` until consecutive levels agree elementwise.

    Element ``i`` is accepted when two consecutive levels differ by at most
    ``tol * max(1, |value_i|)``; later levels only recompute the elements not yet
    accepted.  Returns ``(values, largest accepted difference, highest level used)``;
    with ``raise_on_failure=False`` the elements not accepted by ``max_level`` are NaN.
    """
    val = np.full(size, np.nan)
    prev = None
    active = np.arange(size)
    err_max, used, last = 0.0, 0, math.inf
    for level in range(max_level + 1):
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            cur = np.asarray(fn(level, active), dtype=float)
        if not np.all(np.isfinite(cur)):
            raise NumericalError(f"{what}: the quadrature gave a non-finite value at refinement level {level} "
                                 "(an activation overflows on the shifted pre-activations).")
        used = level
        if prev is not None:
            diff = np.abs(cur - prev)
            rel = diff / np.maximum(1.0, np.abs(cur))
            ok = rel <= tol
            last = float(np.max(rel))
            val[active[ok]] = cur[ok]
            if np.any(ok):
                err_max = max(err_max, float(np.max(diff[ok])))
            active, cur = active[~ok], cur[~ok]
            if active.size == 0:
                return val, err_max, used
        prev = cur
    if not raise_on_failure:
        return val, err_max, used
    raise NumericalError(f"{what}: the tensor quadrature did not converge; consecutive rules differ by {last:.3g} "
                         f"(relative) with {16 * 2 ** QUAD_MAX_LEVEL * _GL_NODES} nodes per axis (tolerance "
                         f"{tol:g}). The student's derivative is probably not smooth (kinks make sigma'(z_k) jump), "
                         "or the step eta_tilde * y is very large; use a smooth activation or a smaller step.")


def _he_moment(a: int, j: int) -> int:
    r""":math:`E[z^a He_j(z)] = a!/(((a-j)/2)!\,2^{(a-j)/2})` for ``a >= j``, ``a - j`` even; else 0."""
    if a < j or (a - j) % 2:
        return 0
    h = (a - j) // 2
    return math.factorial(a) // (math.factorial(h) * 2 ** h)


def _power_eval(coef, m) -> np.ndarray:
    m = np.asarray(m, dtype=float)
    out = np.zeros_like(m)
    for c in np.asarray(coef, dtype=float)[::-1]:
        out = out * m + c
    return out


def _unit(time_unit):
    return check_time_unit(time_unit, ODE_TIME_UNITS, _TIME_ALIASES)


def tanh_logcosh(b_tanh: float = 0.0, b_logcosh: float = 1.0) -> Activation:
    r"""The bounded-derivative student :math:`\sigma(z) = b_1\tanh z + b_2\log\cosh z`.

    ``tanh_logcosh(0, 1)`` is :math:`\log\cosh` (:math:`\sigma' = \tanh`, even
    :math:`\sigma`); ``b_tanh != 0 != b_logcosh`` has no parity, so
    :math:`E[\sigma'\sigma''] \ne 0` and the :math:`O(\tilde\eta^2)` label-power-2 term
    of :math:`D_2(0)` survives.  Evaluated stably (:math:`\log\cosh z = |z| +
    \log(1+e^{-2|z|}) - \log 2`), with a sympy expression for the higher derivatives of
    :meth:`ReuseProblem.label_transform_table`.

    Parameters
    ----------
    b_tanh : float, optional
        Coefficient :math:`b_1` of :math:`\tanh z` (default 0).
    b_logcosh : float, optional
        Coefficient :math:`b_2` of :math:`\log\cosh z` (default 1).  ``b_tanh`` and
        ``b_logcosh`` cannot both be 0.

    Returns
    -------
    Activation
        :math:`\sigma` with derivative :math:`\sigma'(z) = b_1(1-\tanh^2 z) + b_2\tanh z`,
        named e.g. ``"logcosh"``, ``"-logcosh"`` or ``"1*tanh-0.5*logcosh"``.

    Raises
    ------
    ValueError
        Both coefficients are 0, or one is not a finite real.

    Examples
    --------
    >>> round(float(tanh_logcosh(0.0, 1.0)(1.0)), 12), round(float(np.log(np.cosh(1.0))), 12)
    (0.433780830483, 0.433780830483)
    """
    b1 = check_real("b_tanh", b_tanh)
    b2 = check_real("b_logcosh", b_logcosh)
    if b1 == 0.0 and b2 == 0.0:
        raise ValueError("`b_tanh` and `b_logcosh` cannot both be 0.")

    def fn(z):
        z = np.asarray(z, dtype=float)
        a = np.abs(z)
        return b1 * np.tanh(z) + b2 * (a + np.log1p(np.exp(-2.0 * a)) - math.log(2.0))

    def dfn(z):
        z = np.asarray(z, dtype=float)
        th = np.tanh(z)
        return b1 * (1.0 - th * th) + b2 * th

    def builder():
        import sympy

        from ..hermite import z_symbol

        z = z_symbol()
        return sympy.nsimplify(b1) * sympy.tanh(z) + sympy.nsimplify(b2) * sympy.log(sympy.cosh(z))

    if b1 == 0.0:
        name = {1.0: "logcosh", -1.0: "-logcosh"}.get(b2, f"{b2:g}*logcosh")
    else:
        name = f"{b1:g}*tanh{b2:+g}*logcosh" if b2 != 0.0 else f"{b1:g}*tanh"
    return Activation(name, fn, dfn, description=f"{b1:g} tanh(z) + {b2:g} log cosh(z)", sympy_builder=builder)


# --------------------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class ReuseProblem(AlignmentODE):
    r"""One student neuron trained by spherical SGD that reuses each minibatch ``reuse`` times.

    See the module docstring for the model, the drift :math:`D_r(m)` and its derivation.

    Parameters
    ----------
    student, teacher : str or Activation
        :math:`\sigma` and :math:`\sigma^*` (anything :func:`popdyn.get_activation`
        takes; see :func:`tanh_logcosh` for log cosh).  The sign of the paper's small
        fixed second-layer weight goes into the student (use :math:`-\sigma`).
    reuse : int
        ``r >= 1`` consecutive gradient steps on each minibatch (1: online SGD).
    interpolation : float
        :math:`\xi \in (0, 1]`: ``w_new = normalize((1 - xi) w_0 + xi w_r)``.
    a_star : float
        Teacher amplitude :math:`a^*` (non-zero).

    Attributes
    ----------
    exact : bool
        Both activations are polynomials: every method is exact (sympy / rounding only).
    information_exponent : int or None
        Of the pair (as :attr:`popdyn.models.single_index.SingleIndexProblem.information_exponent`).

    Raises
    ------
    ValueError
        ``reuse`` not an integer ``>= 1``; ``interpolation`` outside ``(0, 1]``;
        ``a_star == 0``.

    Examples
    --------
    >>> p = ReuseProblem("tanh", "he3")
    >>> p.reuse, p.interpolation, p.exact, p.information_exponent
    (2, 1.0, False, 3)
    """

    student: Activation
    teacher: Activation
    _: dataclasses.KW_ONLY
    reuse: int = 2
    interpolation: float = 1.0
    a_star: float = 1.0

    def __post_init__(self):
        s = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        s("student", get_activation(self.student))
        s("teacher", get_activation(self.teacher))
        s("reuse", _check_reuse(self.reuse))
        s("interpolation", check_real("interpolation", self.interpolation, lower=0.0, upper=1.0,
                                      lower_open=True))
        a = check_real("a_star", self.a_star)
        if a == 0.0:
            raise ValueError("`a_star` must be non-zero (a zero teacher has nothing to learn).")
        s("a_star", a)
        poly = bool(self.student.is_polynomial and self.teacher.is_polynomial)
        s("exact", poly and _exact_degree(self.student.degree, self.teacher.degree, self.reuse) <= MAX_EXACT_DEGREE)
        s("_cache", {})

    @property
    def information_exponent(self):
        """Information exponent of the pair (smallest ``k`` with :math:`c_k(\\sigma)c_k(\\sigma^*) \\ne 0`)."""
        if "ie" not in self._cache:
            from .single_index import SingleIndexProblem

            self._cache["ie"] = SingleIndexProblem(self.student, self.teacher, a_star=self.a_star).information_exponent
        return self._cache["ie"]

    def describe(self) -> dict:
        """JSON-friendly parameters (for results' ``meta``)."""
        return {"model": "reuse", "student": self.student.name, "teacher": self.teacher.name,
                "reuse": self.reuse, "interpolation": self.interpolation, "a_star": self.a_star,
                "information_exponent": self.information_exponent,
                "method": "polynomial" if self.exact else "gauss-hermite"}

    def _require_exact(self, what: str, numeric: str):
        if not self.exact:
            bad = [f"{role} {act.name!r}" for role, act in (("student", self.student), ("teacher", self.teacher))
                   if not act.is_polynomial]
            if not bad:
                deg = _exact_degree(self.student.degree, self.teacher.degree, self.reuse)
                raise ValueError(f"`{what}` is exact and its polynomials reach degree {deg} at reuse = {self.reuse}, "
                                 f"above MAX_EXACT_DEGREE = {MAX_EXACT_DEGREE}; use the numeric method `{numeric}`.")
            raise ValueError(f"`{what}` is exact and needs polynomial activations; the {' and the '.join(bad)} "
                             f"{'is' if len(bad) == 1 else 'are'} not a polynomial. Use the numeric method "
                             f"`{numeric}` instead.")

    # -- per-sample pieces (numeric route) --------------------------------------------------
    def _pieces(self, z0, t, eta: float):
        r""":math:`G_p, G_q` (module docstring) on arrays ``z0, t`` of one shape."""
        y = self.a_star * self.teacher(t)
        xi = self.interpolation
        zk = z0
        sp_sum = np.zeros_like(z0)
        gq = np.zeros_like(z0)
        for _ in range(self.reuse):
            sp = self.student.derivative(zk)
            ysp = y * sp
            sp_sum = sp_sum + sp
            gq = gq + eta * ysp * (zk - z0) + 0.5 * eta * eta * ysp * ysp
            zk = zk + eta * ysp
        gp = xi * eta * y * sp_sum
        gq = xi * gq - 0.5 * xi * (1.0 - xi) * eta * eta * (y * sp_sum) ** 2
        return gp, gq

    def _drift_quadrature(self, m: np.ndarray, eta: float, tol: float = QUAD_TOL) -> np.ndarray:
        r"""D_r(m) by tensor quadrature, refined per ``m`` (vectorised over ``m``).

        First the *kernel* route: :math:`G_p t` and :math:`G_p z + G_q` are evaluated once
        per rule on the independent :math:`(z, t)` grid and reweighted by the bivariate
        normal density for each ``m`` (levels up to ``_KERNEL_MAX_LEVEL``, ``|m| <=``
        ``_KERNEL_MAX_M``); the ``m`` not accepted there go to the direct route over
        :math:`(z, s)`, :math:`t = mz + \sqrt{1-m^2}s` (levels up to ``QUAD_MAX_LEVEL``).
        """
        m = np.asarray(m, dtype=float)
        flat = m.ravel()
        what = f"D_{self.reuse}(m) for ({self.student.name}, {self.teacher.name}), eta_tilde = {eta:g}"
        out = np.full(flat.size, np.nan)
        near = np.flatnonzero(np.abs(flat) <= _KERNEL_MAX_M)
        if near.size:
            def kernel_rule(level, idx):
                logw, Z, T, A, B = self._grid(level, eta)
                res = np.empty(idx.size)
                for i, mm in enumerate(flat[near[idx]]):
                    c = 1.0 - mm * mm
                    logk = logw - 0.5 * math.log(c) - (mm * mm * (Z * Z + T * T) - 2.0 * mm * Z * T) / (2.0 * c)
                    res[i] = np.exp(logk) @ (A - mm * B)
                return res

            val, err, level = _refine(kernel_rule, near.size, what, tol, max_level=_KERNEL_MAX_LEVEL,
                                      raise_on_failure=False)
            out[near] = val
            self._note_quadrature(err, level)
        rest = np.flatnonzero(np.isnan(out))
        if rest.size:
            def rule(level, idx):
                Z, S, W = _tensor(level)
                res = np.empty(idx.size)
                chunk = max(1, 4_000_000 // Z.size)
                for i in range(0, idx.size, chunk):
                    mm = flat[rest[idx[i:i + chunk]], None]
                    t = mm * Z + np.sqrt(np.maximum(1.0 - mm * mm, 0.0)) * S
                    z0 = np.broadcast_to(Z, t.shape)
                    gp, gq = self._pieces(z0, t, eta)
                    res[i:i + chunk] = (gp * t - mm * (gp * z0 + gq)) @ W
                return res

            val, err, level = _refine(rule, rest.size, what, tol)
            out[rest] = val
            self._note_quadrature(err, level)
        return out.reshape(m.shape)

    def _note_quadrature(self, err, level):
        self._cache["quad_error"] = max(self._cache.get("quad_error", 0.0), err)
        self._cache["quad_level"] = max(self._cache.get("quad_level", 0), level)

    def _grid(self, level: int, eta: float):
        """Cached ``(log w, z, t, G_p t, G_p z + G_q)`` on the independent tensor rule (last eta only)."""
        key = self._cache.get("grid_eta")
        if key != eta:
            self._cache["grid"] = {}
            self._cache["grid_eta"] = eta
        grids = self._cache["grid"]
        if level not in grids:
            Z, T, W = _tensor(level)
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                gp, gq = self._pieces(Z, T, eta)
            grids[level] = (np.log(W), Z, T, gp * T, gp * Z + gq)
        return grids[level]

    def _coefficients_quadrature(self, order: int, eta: float, tol: float = QUAD_TOL):
        """(P_0..P_order, Q_0..Q_order) by Gauss–Hermite over independent (z, t), refined."""
        from ..hermite import h_values

        def rule(level, idx):
            x, w = _rule(level)
            Z, T = np.meshgrid(x, x, indexing="ij")
            gp, gq = self._pieces(Z, T, eta)
            hx = h_values(x, order + 1) * w          # (order + 2, n), weights folded in
            P = np.array([math.sqrt(j + 1) * hx[j] @ gp @ hx[j + 1] for j in range(order + 1)])
            Q = np.array([hx[j] @ gq @ hx[j] for j in range(order + 1)])
            return np.concatenate([P, Q])[idx]

        val, err, level = _refine(rule, 2 * order + 2, f"Mehler coefficients of D_{self.reuse} for "
                                                       f"({self.student.name}, {self.teacher.name}), "
                                                       f"eta_tilde = {eta:g}", tol)
        return val[: order + 1], val[order + 1:]

    # -- exact route (polynomials) ----------------------------------------------------------
    def _exact(self):
        """Exact power coefficients in eta_tilde: dict with "D" (m-power -> {eta-power: coef}), "P", "Q"."""
        if "exact" in self._cache:
            return self._cache["exact"]
        import sympy

        from ..hermite import z_symbol

        z = z_symbol()
        t, e = sympy.symbols("t eta_tilde", real=True)
        xi = sympy.nsimplify(self.interpolation, rational=True)
        a = sympy.nsimplify(self.a_star, rational=True)
        ds = sympy.Poly(sympy.diff(self.student.expr, z), z)
        y = sympy.Poly(a * self.teacher.expr.subs(z, t), z, t, e)
        zk = sympy.Poly(z, z, t, e)
        z0 = zk
        sp_sum = sympy.Poly(0, z, t, e)
        gq = sympy.Poly(0, z, t, e)
        E = sympy.Poly(e, z, t, e)
        for _ in range(self.reuse):
            sp = ds.compose(zk) if ds.degree() > 0 else sympy.Poly(ds.as_expr(), z, t, e)
            sp = sympy.Poly(sp.as_expr(), z, t, e)
            ysp = y * sp
            sp_sum = sp_sum + sp
            gq = gq + E * ysp * (zk - z0) + sympy.Rational(1, 2) * E * E * ysp * ysp
            zk = zk + E * ysp
        gp = xi * E * y * sp_sum
        gq = xi * gq - sympy.Rational(1, 2) * xi * (1 - xi) * E * E * (y * sp_sum) ** 2
        T = sympy.Poly(t, z, t, e)
        A_poly = gp * T                     # D = E_m[A_poly] - m E_m[B_poly]
        B_poly = gp * z0 + gq

        def mehler(poly, shift_t=0):
            out = {}
            for (ia, ib, ic), c in poly.terms():
                for j in range(0, min(ia, ib + shift_t) + 1):
                    mom = _he_moment(ia, j) * _he_moment(ib, j + shift_t)
                    if mom:
                        key = (j, ic)
                        out[key] = out.get(key, 0) + c * sympy.Rational(mom, math.factorial(j))
            return out

        Amj, Bmj = mehler(A_poly), mehler(B_poly)
        P, Q = mehler(gp, shift_t=1), mehler(gq)
        D = {}
        for (j, ic), c in Amj.items():
            D[(j, ic)] = D.get((j, ic), 0) + c
        for (j, ic), c in Bmj.items():
            D[(j + 1, ic)] = D.get((j + 1, ic), 0) - c

        def to_expr(dct):
            n = max((j for j, _ in dct), default=-1) + 1
            rows = [sympy.Integer(0)] * n
            for (j, ic), c in dct.items():
                rows[j] = rows[j] + c * e ** ic
            return tuple(sympy.expand(r) for r in rows)

        res = {"eta": e, "D": to_expr(D), "P": to_expr(P), "Q": to_expr(Q)}
        res["D_num"] = _float_table(res["D"], e)
        self._cache["exact"] = res
        return res

    # -- public: drift ----------------------------------------------------------------------
    def drift(self, m, eta_tilde, *, method: str = "auto") -> np.ndarray:
        r"""The :math:`d\to\infty` drift per sample :math:`D_r(m)` (module docstring), vectorised over ``m``.

        Parameters
        ----------
        m : array_like
            Alignments in ``[-1, 1]``.
        eta_tilde : float
            Per-sample step scale :math:`\tilde\eta = \eta d/B \ge 0`.
        method : {"auto", "exact", "quadrature"}
            ``"exact"`` (polynomial student and teacher; exact coefficients evaluated in
            floating point), ``"quadrature"`` (tensor Gauss–Hermite, refined to
            ``QUAD_TOL``), ``"auto"`` = exact when possible.

        Raises
        ------
        ValueError
            ``m`` outside ``[-1, 1]``; ``method="exact"`` with a non-polynomial activation.
        NumericalError
            The quadrature does not reach ``QUAD_TOL`` (non-smooth student).

        Examples
        --------
        >>> p = ReuseProblem("tanh", "he3")
        >>> round(float(p.drift(0.0, 0.5)), 5), round(float(p.drift(0.2, 0.5)), 5)   # theory/lee2024 reference values
        (-0.05564, -0.09841)
        """
        eta = _check_eta(eta_tilde)
        method = check_choice("method", method, ("auto", "exact", "quadrature"))
        m = np.asarray(m, dtype=float)
        if not np.all(np.isfinite(m)) or np.any(np.abs(m) > 1.0):
            raise ValueError(f"`m` must lie in [-1, 1], got values in [{np.min(m)}, {np.max(m)}].")
        if method == "exact" or (method == "auto" and self.exact):
            if method == "exact":
                self._require_exact("drift(method='exact')", "drift(m, eta_tilde, method='quadrature')")
            return _eval_table(self._exact()["D_num"], m, eta)
        return self._drift_quadrature(m, eta)

    def _drift_fast(self, eta: float):
        """A fast callable ``m -> D_r(m)`` at fixed eta (exact polynomial or a cached Chebyshev table).

        Non-polynomial pairs: Chebyshev interpolation of :meth:`drift` on
        ``[-_KERNEL_MAX_M, _KERNEL_MAX_M]`` (16, 32, 64, 128 nodes until the interpolant
        matches fresh values at the interleaved points to ``NUMERIC_TOL`` times
        ``max(1, max|D|)``; :math:`D_r` is analytic there), direct quadrature beyond.
        """
        if self.exact:
            table = self._exact()["D_num"]
            return lambda m: _eval_table(table, m, eta)
        key = ("cheb", eta)
        if key not in self._cache:
            self._cache[key] = self._cheb_table(eta)
        coef = self._cache[key][0]

        def fast(m):
            from numpy.polynomial import chebyshev as cheb

            m = np.asarray(m, dtype=float)
            out = cheb.chebval(m / _KERNEL_MAX_M, coef)
            far = np.abs(m) > _KERNEL_MAX_M
            if np.any(far):
                out = np.array(out, dtype=float)
                out[far] = self._drift_quadrature(np.clip(m[far], -1.0, 1.0), eta)
            return out

        return fast

    def _cheb_table(self, eta: float):
        from numpy.polynomial import chebyshev as cheb

        L = _KERNEL_MAX_M
        err = math.inf
        for n in (16, 32, 64, 128):
            x = np.cos(np.pi * (np.arange(n) + 0.5) / n)
            vals = self._drift_quadrature(L * x, eta)
            coef = cheb.chebfit(x, vals, n - 1)
            xc = np.cos(np.pi * np.arange(1, n) / n)
            check = self._drift_quadrature(L * xc, eta)
            err = float(np.max(np.abs(cheb.chebval(xc, coef) - check)))
            if err <= NUMERIC_TOL * max(1.0, float(np.max(np.abs(vals)))):
                return coef, err, n
        raise NumericalError(f"the Chebyshev table of D_{self.reuse}(m) for ({self.student.name}, "
                             f"{self.teacher.name}) at eta_tilde = {eta:g} did not converge: error {err:.3g} with "
                             "128 nodes.")

    # -- public: coefficients ---------------------------------------------------------------
    def drift_coefficients_expr(self, order: int) -> tuple:
        r"""Exact power coefficients :math:`D_0..D_{order}` of :math:`D_r(m) = \sum_j D_j m^j`.

        Each is a sympy polynomial in the symbol ``eta_tilde`` (real).  Coefficients
        beyond the degree of the (polynomial) drift are 0.

        Raises
        ------
        ValueError
            A non-polynomial activation (the message names it; use
            :meth:`drift_coefficients`).

        Examples
        --------
        >>> ReuseProblem("he3", "he3", reuse=1).drift_coefficients_expr(3)   # eta(1-m^2)3m^2 - eta^2 m C/2
        (0, -3*eta_tilde**2/2, 3*eta_tilde, -18*eta_tilde**2)
        """
        order = check_int("order", order, minimum=0)
        self._require_exact("drift_coefficients_expr", "drift_coefficients(order, eta_tilde)")
        D = self._exact()["D"]
        return tuple(D[j] if j < len(D) else _sympy_zero() for j in range(order + 1))

    def signal_coefficients_expr(self, order: int) -> tuple:
        r"""Exact coefficients :math:`P_0..P_{order}` of the signal :math:`P(m)` (module docstring)."""
        order = check_int("order", order, minimum=0)
        self._require_exact("signal_coefficients_expr", "signal_coefficients(order, eta_tilde)")
        P = self._exact()["P"]
        return tuple(P[j] if j < len(P) else _sympy_zero() for j in range(order + 1))

    def drift_coefficients(self, order: int, eta_tilde, *, method: str = "auto") -> np.ndarray:
        r"""Power coefficients :math:`D_0..D_{order}` of :math:`D_r(m)` at ``eta_tilde`` (float array).

        ``"exact"`` for polynomials; ``"quadrature"``: Mehler coefficients
        :math:`D_j = P_j - P_{j-2} - Q_{j-1}` from Gauss–Hermite over independent
        :math:`(z, t)` (module docstring), refined to ``QUAD_TOL``.

        Examples
        --------
        >>> c = ReuseProblem("tanh", "he3", reuse=1).drift_coefficients(1, 0.5)
        >>> round(float(c[1]), 5)                      # -eta^2 E[y^2] E[sech^4] / 2 (theory/lee2024)
        -0.05805
        """
        return self._coefficients(order, eta_tilde, method)[2]

    def signal_coefficients(self, order: int, eta_tilde, *, method: str = "auto") -> np.ndarray:
        r"""Coefficients :math:`P_0..P_{order}` of the signal :math:`P(m) = E_m[\partial_t G_p]`."""
        return self._coefficients(order, eta_tilde, method)[0]

    def contraction_coefficients(self, order: int, eta_tilde, *, method: str = "auto") -> np.ndarray:
        r"""Coefficients :math:`Q_0..Q_{order}` of :math:`Q(m) = E_m[G_q]` (contraction + self-interaction)."""
        return self._coefficients(order, eta_tilde, method)[1]

    def _coefficients(self, order, eta_tilde, method):
        order = check_int("order", order, minimum=0)
        eta = _check_eta(eta_tilde)
        method = check_choice("method", method, ("auto", "exact", "quadrature"))
        if method == "exact" or (method == "auto" and self.exact):
            if method == "exact":
                self._require_exact("method='exact'", "method='quadrature'")
            ex = self._exact()
            e = ex["eta"]
            vals = [np.array([float(ex[k][j].subs(e, eta)) if j < len(ex[k]) else 0.0 for j in range(order + 1)])
                    for k in ("P", "Q", "D")]
            return tuple(vals)
        P, Q = self._coefficients_quadrature(order, eta)
        D = P.copy()
        D[2:] -= P[:-2]
        D[1:] -= Q[:-1]
        return P, Q, D

    # -- public: exponents and reports ------------------------------------------------------
    def effective_exponent(self, eta_tilde=None, *, max_order: int = MAX_EXPONENT_ORDER):
        r"""``1 +`` the index of the first non-zero coefficient of the signal :math:`P(m)`.

        For ``reuse = 1``, :math:`P = \tilde\eta\Phi'` and this is the information
        exponent; for ``reuse >= 2`` and a polynomial link it is the generative exponent
        (:func:`popdyn.exponents.generative_exponent`, ``<= 2``) for a generic student.

        Parameters
        ----------
        eta_tilde : float, optional
            Exact problems: ``None`` decides "non-zero" as a polynomial in
            :math:`\tilde\eta` (generic step); a value decides at that step.
            Numeric problems: required; non-zero means :math:`|P_j| >` ``ZERO_TOL``.
        max_order : int
            Highest ``j`` searched on the numeric route.

        Returns
        -------
        int or None
            ``None`` if no coefficient up to the search order is non-zero.
        """
        max_order = check_int("max_order", max_order, minimum=0)
        if self.exact and eta_tilde is None:
            import sympy

            for j, c in enumerate(self._exact()["P"]):
                if sympy.expand(c) != 0:
                    return j + 1
            return None
        if eta_tilde is None:
            raise ValueError(f"`eta_tilde` is required for the non-polynomial pair ({self.student.name!r}, "
                             f"{self.teacher.name!r}); the exact generic-step decision needs polynomials.")
        P = self.signal_coefficients(max_order if not self.exact else max(max_order, len(self._exact()["P"])),
                                     eta_tilde)
        nz = np.flatnonzero(np.abs(P) > ZERO_TOL)
        return int(nz[0]) + 1 if nz.size else None

    def linear_coefficient(self, eta_tilde) -> dict:
        r"""The sign condition at ``m = 0`` (theory/lee2024/equations.md).

        Returns ``{"D0", "D1", "signal", "contraction"}``: :math:`D_r(0)`, the linear
        coefficient :math:`D_1 = P_1 - Q_0` and its two parts, the signal :math:`P_1` (the
        :math:`h_2(t)` components of the label transforms) and :math:`Q_0` (normalisation
        contraction + within-batch self-interaction).  For ``r = 2``, ``xi = 1``, to
        second order in :math:`\tilde\eta` (theory/lee2024/equations.md; checked exactly in the tests)

        .. math::

            P_1 = 2\tilde\eta\Phi''(0) + \sqrt2\,\tilde\eta^2 E[\sigma'\sigma'' z]\,E[y^2 h_2(t)] + O(\tilde\eta^3),
            \qquad Q_0 = 2\tilde\eta^2 E[y^2]E[\sigma'^2] + O(\tilde\eta^3).

        When :math:`D_r(0) = 0` (an even target, or a student of definite parity for
        which every odd label power is blind) the equator repels iff ``D1 > 0``: the
        linear drift beats the contraction.

        Examples
        --------
        >>> lc = ReuseProblem(tanh_logcosh(0, 1), "he3").linear_coefficient(0.5)
        >>> round(lc["D1"], 5)       # not +0.0633: that is the secant D(0.03)/0.03
        0.06385
        """
        P, Q, D = self._coefficients(1, eta_tilde, "auto")
        return {"D0": float(D[0]), "D1": float(D[1]), "signal": float(P[1]), "contraction": float(Q[0])}

    def label_transform_table(self, max_power: int = 6, eta_tilde=None) -> dict:
        r"""Label powers :math:`y^j` and the series for :math:`D_2(0)` (theory/lee2024/equations.md).

        Returns a dict with

        * ``"rows"``: for ``j = 1..max_power``, ``{"power": j, "E[y^j h1]", "E[y^j h2]"}``
          (exact floats for polynomial teachers; the first non-zero column says whether
          :math:`y^j` has information exponent 1 or 2 through this transform);
        * ``"series"``: for ``r' = 0..max_power-1``, the coefficient of
          :math:`\tilde\eta^{r'+1}` in :math:`D_2(0)/\xi`:
          :math:`c_{r'} = E[y^{r'+1}t]\,E[\sigma'^{r'}\sigma^{(r'+1)}]/r'!` (with
          :math:`c_0 = 2E[yt]E[\sigma']`: both steps see the plain correlation), or
          ``None`` when the student has no sympy expression;
        * ``"series_value"`` (if ``eta_tilde`` is given and the series exists):
          :math:`\xi\sum_{r'} c_{r'}\tilde\eta^{r'+1}`, exact for a polynomial student of
          degree ``<= max_power`` and an asymptotic approximation otherwise.

        Only ``reuse = 2`` has this series (ValueError otherwise for ``eta_tilde``).
        """
        max_power = check_int("max_power", max_power, minimum=1, maximum=20)
        rows = []
        for j in range(1, max_power + 1):
            rows.append({"power": j, "E[y^j h1]": self._label_moment(j, 1), "E[y^j h2]": self._label_moment(j, 2)})
        series = self._series_coefficients(max_power)
        out = {"rows": rows, "series": series}
        if eta_tilde is not None:
            eta = _check_eta(eta_tilde)
            if self.reuse != 2:
                raise ValueError(f"the label-transform series is for `reuse` = 2, got {self.reuse}.")
            if series is not None:
                out["series_value"] = self.interpolation * sum(c * eta ** (k + 1) for k, c in enumerate(series))
        return out

    def _label_moment(self, j: int, k: int) -> float:
        r""":math:`E[y^j h_k(t)]`."""
        if self.teacher.is_polynomial:
            import sympy

            from ..hermite import z_symbol

            z = z_symbol()
            poly = sympy.Poly(sympy.nsimplify(self.a_star, rational=True) ** j * self.teacher.expr ** j, z)
            val = sum(c * _he_moment(a, k) for (a,), c in poly.terms()) / sympy.sqrt(math.factorial(k))
            return float(val)
        from ..hermite import gaussian_expectation, h_values

        tea, a = self.teacher, self.a_star
        return gaussian_expectation(lambda t: (a * tea(t)) ** j * h_values(t, k)[k], breakpoints=tea.breakpoints,
                                    degree=2 * j + k, name=f"y^{j} h_{k}")[0]

    def _series_coefficients(self, n: int):
        expr = self.student.expr
        if expr is None:
            return None
        import sympy

        from ..hermite import gaussian_expectation, z_symbol

        z = z_symbol()
        d1 = sympy.diff(expr, z)
        out = []
        for r in range(n):
            yt = self._label_moment(r + 1, 1)
            if yt == 0.0:
                out.append(0.0)
                continue
            integrand = d1 ** r * sympy.diff(expr, z, r + 1)
            if self.student.is_polynomial:
                poly = sympy.Poly(sympy.expand(integrand), z)
                s_mom = float(sum(c * _he_moment(a, 0) for (a,), c in poly.terms()))
            else:
                f = sympy.lambdify(z, integrand, modules="numpy")
                s_mom = gaussian_expectation(lambda x, f=f: np.broadcast_to(f(x), np.shape(x)),
                                             breakpoints=self.student.breakpoints,
                                             name=f"sigma'^{r} sigma^({r + 1})")[0]
            c = yt * s_mom / math.factorial(r)
            out.append(2.0 * c if r == 0 else c)
        return out

    # -- ODE protocol (popdyn.ode) ----------------------------------------------------------
    #: Name recorded in ``Trajectory.model``.
    ode_model = "reuse"

    def ode_validate_options(self, *, eta=None, d=None, batch=1, eta_tilde=None, time_unit=None) -> dict:
        r"""Resolve the step: ``eta`` with ``d`` and ``batch`` (:math:`\tilde\eta = \eta d/B`), or ``eta_tilde``.

        Time units: ``"t = eta * steps"`` (a step is one iteration = one minibatch, as
        in :func:`popdyn.simulate`; :math:`dm/dt = D_r(m)/\tilde\eta`; needs ``eta``)
        and ``"samples / d"`` (:math:`dm/d\tau = D_r(m)`).  Default: the first with
        ``eta``, the second with ``eta_tilde``.
        """
        batch = check_int("batch", batch, minimum=1)
        unit = _unit(time_unit)
        if (eta is None) == (eta_tilde is None):
            raise ValueError("give exactly one of `eta` (with `d` and `batch`: eta_tilde = eta d / batch) and "
                             f"`eta_tilde`; got eta={eta!r}, eta_tilde={eta_tilde!r}.")
        if eta is not None:
            if d is None:
                raise ValueError("`d` is required with `eta` (eta_tilde = eta * d / batch).")
            d = check_int("d", d, minimum=2)
            eta_v = check_real("eta", eta, lower=0.0, lower_open=True)
            et = eta_v * d / batch
        else:
            et = check_real("eta_tilde", eta_tilde, lower=0.0, lower_open=True)
            eta_v = None
        if unit is None:
            unit = "t = eta * steps" if eta is not None else "samples / d"
        scale = 1.0 / et if unit == "t = eta * steps" else 1.0
        return {"eta": eta_v, "d": d, "batch": batch, "eta_tilde": et, "scale": scale, "time_unit": unit}

    def ode_time_unit(self, *, time_unit="samples / d", **_) -> str:
        """The resolved time unit."""
        return time_unit

    def ode_rhs(self, t, state, *, eta_tilde, scale=1.0, **_) -> dict:
        r""":math:`\dot m = D_r(m)` (per ``samples/d``) times ``scale``; ``t`` unused (autonomous)."""
        return {"m": scale * self._drift_fast(eta_tilde)(state["m"])}

    def ode_escape_observable(self, state) -> np.ndarray:
        """``|m|``, shape ``(1,)`` (escape = reaching ``|m| >= level`` on either side)."""
        return np.atleast_1d(np.abs(np.asarray(state["m"], dtype=float)))



def _sympy_zero():
    import sympy

    return sympy.Integer(0)


def _float_table(rows, e) -> list:
    """Exact rows (polynomials in e) -> list of float coefficient arrays in e (lowest first)."""
    import sympy

    out = []
    for r in rows:
        p = sympy.Poly(r, e)
        c = np.zeros(p.degree() + 1 if not p.is_zero else 1)
        for (k,), v in p.terms():
            c[k] = float(v)
        out.append(c)
    return out


def _eval_table(table, m, eta: float) -> np.ndarray:
    coef = [float(_power_eval(c, eta)) for c in table] or [0.0]
    return _power_eval(coef, m)



# --------------------------------------------------------------------------------------
# sample complexity along the mean path
# --------------------------------------------------------------------------------------
#: Gauss–Legendre node counts tried (doubling) by the quadrature route of predicted_samples.
_PATH_GL_MAX = 4096
#: Points of the grid on which predicted_samples looks for a zero of D_r along the path.
STALL_GRID = 4001


def _path_grid(m0: float, end: float, n: int = STALL_GRID) -> np.ndarray:
    """Linear grid from m0 to end plus a geometric one in |m| on each side of 0 (small m resolved)."""
    pts = [np.linspace(m0, end, n)]
    for lo, hi in ((m0, end), (end, m0)):
        if lo != 0.0 and np.sign(lo) == np.sign(hi) and abs(lo) < abs(hi):
            pts.append(np.sign(lo) * np.geomspace(abs(lo), abs(hi), n // 4))
    if m0 * end < 0:
        for side in (m0, end):
            pts.append(np.sign(side) * np.geomspace(1e-12, abs(side), n // 4))
    g = np.concatenate(pts)
    lo, hi = min(m0, end), max(m0, end)
    return np.unique(g[(g >= lo) & (g <= hi)])


def _gl_integral(f, a: float, b: float, rtol: float, what: str) -> float:
    """∫_a^b f by Gauss–Legendre, doubling the nodes until two rules agree to rtol (relative)."""
    from numpy.polynomial.legendre import leggauss

    prev = None
    n = 32
    while n <= _PATH_GL_MAX:
        x, w = leggauss(n)
        u = 0.5 * (a + b) + 0.5 * (b - a) * x
        val = 0.5 * (b - a) * float(np.dot(w, f(u)))
        if prev is not None and abs(val - prev) <= rtol * abs(val):
            return val
        prev = val
        n *= 2
    raise NumericalError(f"{what}: the path integral did not converge with {_PATH_GL_MAX} Gauss-Legendre nodes "
                         f"(last two values {prev:.10g}, {val:.10g}); the drift is nearly zero somewhere on the "
                         "path (a near-stall).")


def predicted_samples(problem: ReuseProblem, d, *, eta_tilde, m0=None, m_target=0.5, method: str = "quadrature",
                      rtol: float = 1e-9) -> float:
    r"""Samples for the mean path to carry :math:`|m|` from :math:`|m_0|` to ``m_target``.

    .. math::

        n = d\int_{m_0}^{\pm m_{\rm target}} \frac{dm}{D_r(m)} ,

    the mean path :math:`dm/d\tau = D_r(m)`, :math:`\tau = n/d` (module docstring).

    *Direction.*  The path goes where the drift at ``m0`` points: toward
    :math:`+m_{\rm target}` if :math:`D_r(m_0) > 0` and toward :math:`-m_{\rm target}` if
    :math:`D_r(m_0) < 0` (crossing the equator if needed: e.g. tanh/he3 drifts to
    negative ``m`` from any small positive start).  A researcher asks for ``|m|`` to reach
    ``m_target``; the sign of the end point is part of the prediction.

    Parameters
    ----------
    problem : ReuseProblem
    d : int
        Dimension (sets the default ``m0`` and converts :math:`\tau` to samples).
    eta_tilde : float
        Per-sample step scale :math:`\eta d/B > 0`.
    m0 : float, optional
        Start, default :math:`d^{-1/2}`.
    m_target : float
        Level of :math:`|m|` to reach, in ``(0, 1)``.
    method : {"quadrature", "ode"}
        ``"quadrature"``: Gauss–Legendre in :math:`\log|m|` on each side of the equator
        (in ``m`` on a piece that ends at 0).  ``"ode"``: :func:`popdyn.ode.integrate`
        in the unit ``samples / d`` with the escape event on ``|m|`` (independent route;
        DOP853 with ``rtol``).
    rtol : float
        Relative accuracy of the integral / ODE.

    Returns
    -------
    float
        Samples ``n``; ``0`` when :math:`|m_0| \ge m_{\rm target}`; ``math.inf`` (not an
        error) when the mean path stalls: :math:`D_r(m_0) = 0`, or :math:`D_r` changes
        sign between ``m0`` and the end point (found on a grid of ``STALL_GRID`` points
        plus geometric points near ``m0`` and 0; a tangential near-zero narrower than
        the grid is reported by the quadrature as a NumericalError instead).

    Notes
    -----
    For ``reuse = 1`` this is :func:`popdyn.models.single_index.escape_samples` with
    ``eta = eta_tilde / d``, ``batch = 1``, except that the latter keeps the factor
    :math:`(d-1)/d` on the contraction (an :math:`O(1/d)` relative difference).

    Examples
    --------
    >>> d = 10_000
    >>> round(predicted_samples(ReuseProblem("he3", "he3", reuse=2), d, eta_tilde=0.01) / d, 2)  # tau = n/d
    390.12
    >>> round(predicted_samples(ReuseProblem("he3", "he3", reuse=1), d, eta_tilde=0.01) / d)
    4586
    >>> predicted_samples(ReuseProblem("he3", "he3", reuse=1), d, eta_tilde=0.05)   # stall at m ~ eta/2
    inf
    """
    if not isinstance(problem, ReuseProblem):
        raise TypeError(f"`problem` must be a ReuseProblem, got {type(problem).__name__}.")
    d = check_int("d", d, minimum=2)
    eta = check_real("eta_tilde", eta_tilde, lower=0.0, lower_open=True)
    m0 = 1.0 / math.sqrt(d) if m0 is None else check_real("m0", m0, lower=-1.0, upper=1.0)
    m1 = check_real("m_target", m_target, lower=0.0, upper=1.0, lower_open=True, upper_open=True)
    method = check_choice("method", method, ("quadrature", "ode"))
    rtol = check_real("rtol", rtol, lower=0.0, lower_open=True)
    if abs(m0) >= m1:
        return 0.0
    D = problem._drift_fast(eta)
    d0 = float(D(np.array(m0)))
    if d0 == 0.0:
        return math.inf
    end = math.copysign(m1, d0)
    grid = _path_grid(m0, end)
    if np.any(np.sign(D(grid)) != np.sign(d0)):
        return math.inf
    what = f"predicted_samples for {problem.describe()}"
    if method == "ode":
        tau_q = predicted_samples(problem, d, eta_tilde=eta, m0=m0, m_target=m1, rtol=rtol) / d
        from ..ode import integrate

        traj = integrate(problem, m0, 1.5 * tau_q + 1.0, escape_level=m1, options={"eta_tilde": eta},
                         n_times=3, rtol=rtol, atol=1e-14)
        hit = float(traj.events["escape"][0])
        if not math.isfinite(hit):
            raise NumericalError(f"{what}: the ODE did not reach |m| = {m1} by tau = {1.5 * tau_q + 1:.6g} although "
                                 f"the quadrature route predicts {tau_q:.6g}; tighten `rtol`.")
        return d * hit
    pieces = [(m0, 0.0), (0.0, end)] if m0 * end < 0 else [(m0, end)]
    tau = 0.0
    for a, b in pieces:
        if a != 0.0 and b != 0.0:   # same sign: integrate in u = log|m|, dm = m du
            s = math.copysign(1.0, a)
            tau += _gl_integral(lambda u, s=s: s * np.exp(u) / D(s * np.exp(u)), math.log(abs(a)),
                                math.log(abs(b)), rtol, what)
        else:
            tau += _gl_integral(lambda m: 1.0 / D(m), a, b, rtol, what)
    return d * tau


# --------------------------------------------------------------------------------------
# choosing a student: the survey of item 7
# --------------------------------------------------------------------------------------
#: Relative accuracy of the drifts in the survey (only signs along the path are decided).
SURVEY_TOL = 1e-7
#: Points per side of the equator on which the survey checks the sign of the drift.
SURVEY_POINTS = 24


def _default_students():
    return {"tanh": "tanh", "sigmoid": "sigmoid", "softplus": "softplus", "logcosh": tanh_logcosh(0.0, 1.0),
            "-logcosh": tanh_logcosh(0.0, -1.0), "tanh+0.5logcosh": tanh_logcosh(1.0, 0.5),
            "tanh-0.5logcosh": tanh_logcosh(1.0, -0.5)}


def _escape_direction(problem: ReuseProblem, eta: float, m_target: float, points: int):
    r"""Mean-path verdict as :math:`d\to\infty` (start :math:`m_0 \to 0^\pm`).

    Returns ``(direction, margin, D0, D1)``: ``direction`` = +1/-1 when the drift carries
    :math:`|m|` from :math:`0^\pm` to ``m_target`` without a zero (``0`` if it stalls),
    ``margin`` = the smallest :math:`s\,D(m)/|m|` on the path (how far from a stall).
    The path is checked at ``points`` geometric points from ``m_target/1000`` to
    ``m_target``; below the first one :math:`D \approx D_0 + D_1 m` decides.
    """
    if problem.exact:
        P, Q = problem._coefficients(1, eta, "exact")[:2]
    else:
        P, Q = problem._coefficients_quadrature(1, eta, SURVEY_TOL)
    D0 = float(P[0])
    D1 = float(P[1] - Q[0])
    m = np.geomspace(1e-3 * m_target, m_target, points)
    sides = []
    for s in (1.0, -1.0):
        if abs(D0) > ZERO_TOL and math.copysign(1.0, D0) != s:
            continue
        if abs(D0) <= ZERO_TOL and D1 <= ZERO_TOL:
            continue
        if abs(D0) > ZERO_TOL and D1 * D0 < 0 and -D0 / D1 * s < m[0]:
            continue                               # linear zero before the first grid point
        if problem.exact:
            vals = problem.drift(s * m, eta)
        else:
            vals = problem._drift_quadrature(s * m, eta, SURVEY_TOL)
        ratio = s * vals / m
        if np.all(s * vals > 0):
            sides.append((s, float(np.min(ratio))))
    if not sides:
        return 0, 0.0, D0, D1
    s, margin = max(sides, key=lambda x: x[1])
    return int(s), margin, D0, D1


def student_survey(targets=("he3", "he4", HE34), students=None, eta_grid=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5), *,
                   reuse: int = 2, m_target: float = 0.5, points: int = SURVEY_POINTS) -> list:
    r"""Which bounded student lets batch reuse escape where online SGD stalls (:math:`d\to\infty`)?

    For each target, student and :math:`\tilde\eta`, compares :math:`D_{\rm reuse}` with the
    online drift :math:`D_1` at the same :math:`\tilde\eta` on the path
    :math:`0 < |m| \le m_{\rm target}`: :math:`D(0)`, the linear coefficient :math:`D_1`
    (the sign condition of theory/lee2024/equations.md), and whether the drift keeps one sign from the
    equator to ``m_target`` on the side it points to (``escapes``; checked on ``points``
    points per side, drift accuracy ``SURVEY_TOL``).

    Parameters
    ----------
    targets : sequence of activation specs
        Default he3, he4 and the unnormalised :math:`He_3 + He_4` (``HE34``).
    students : dict name -> activation spec, optional
        Default tanh, sigmoid, softplus, :math:`\pm\log\cosh` and
        :math:`\tanh \pm 0.5\log\cosh` (no parity).  :math:`-\log\cosh` is the
        student with a negative second-layer sign: the :math:`\tilde\eta^2`
        terms are even in :math:`\sigma`, the online drift :math:`\tilde\eta\Phi'` odd.
    eta_grid : sequence of float
        Step scales :math:`\tilde\eta` to try.
    reuse : int, optional
        Number of times each batch is reused, as in :class:`ReuseProblem` (default 2); the
        online comparison uses ``reuse=1``.
    m_target : float, optional
        End :math:`m_{\rm target}` of the checked path :math:`0 < |m| \le m_{\rm target}`
        (default 0.5).
    points : int, optional
        Points per side of the equator at which the sign of the drift is checked, geometric
        from ``m_target/1000`` to ``m_target`` (default ``SURVEY_POINTS`` = 24).

    Returns
    -------
    list of dict
        One row per (target, student, eta_tilde) with keys ``target``, ``student``,
        ``eta_tilde``, ``D0``, ``D1``, ``direction``, ``escapes``, ``margin`` (smallest
        :math:`|D(m)/m|` on the escaping path) and the same for online SGD
        (``online_D0``, ``online_D1``, ``online_escapes``).  A row with
        ``escapes and not online_escapes`` is a valid choice (:func:`choose_students`).
        Pairs whose quadrature does not converge (the step is too large for the labels)
        have ``escapes = None`` and an ``error`` message.

    Notes
    -----
    Cost: two quadratures per row (about a second each for bounded students).

    Choices found with it (:math:`d\to\infty`, path :math:`0 < |m| \le 1/2`; online SGD
    stalls at the same :math:`\tilde\eta` in every case, its linear coefficient
    :math:`-\tilde\eta^2 C(0)/2 < 0`):

    ===========  =================================  ============  ===================  ==================
    target       student                            eta_tilde     D_2(0)               D_2'(0)
    ===========  =================================  ============  ===================  ==================
    he3          tanh                               0.5           -0.05564 (to -1/2)   -0.18754
    he4          -log cosh (negative 2nd layer)     0.5           0                    +0.21790
    He3+He4      -log cosh                          0.1           0                    +0.22035
    He3+He4      tanh - 0.5 log cosh                0.05          -0.01966 (to -1/2)   -0.01081
    ===========  =================================  ============  ===================  ==================

    tanh, sigmoid, softplus and +log cosh fail for he4 (linear coefficient negative, or a
    zero on the path); for He3+He4 tanh works only for :math:`\tilde\eta \le 0.02`.
    """
    students = _default_students() if students is None else dict(students)
    rows = []
    for tname in targets:
        for sname, sspec in students.items():
            for eta in eta_grid:
                eta = check_real("eta_tilde", eta, lower=0.0, lower_open=True)
                row = {"target": get_activation(tname).name, "student": sname, "eta_tilde": eta}
                try:
                    p = ReuseProblem(sspec, tname, reuse=reuse)
                    s, margin, D0, D1 = _escape_direction(p, eta, m_target, points)
                    p1 = ReuseProblem(sspec, tname, reuse=1)
                    s1, margin1, D0_1, D1_1 = _escape_direction(p1, eta, m_target, points)
                except NumericalError as exc:
                    row.update(escapes=None, online_escapes=None, error=str(exc))
                    rows.append(row)
                    continue
                row.update(D0=D0, D1=D1, direction=s, escapes=bool(s), margin=margin,
                           online_D0=D0_1, online_D1=D1_1, online_escapes=bool(s1))
                rows.append(row)
    return rows


def choose_students(rows) -> dict:
    """Per target, the surveyed (student, eta_tilde) that escapes with reuse but not online, largest margin.

    ``rows`` from :func:`student_survey`; returns ``{target: row or None}``.
    """
    best = {}
    for row in rows:
        best.setdefault(row["target"], None)
        if row.get("escapes") and row.get("online_escapes") is False:
            cur = best[row["target"]]
            if cur is None or row["margin"] > cur["margin"]:
                best[row["target"]] = row
    return best


register_stepper(ReuseProblem, "popdyn.models.reuse_sim:ReuseExactStepper", engine="exact")
register_stepper(ReuseProblem, "popdyn.models.reuse_sim:ReuseFullStepper", engine="full")
