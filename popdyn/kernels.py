r"""Correlation kernels :math:`E[\sigma(w\cdot x)\,\tau(v\cdot x)]` and their derivatives.

For :math:`x \sim N(0, I_d)` the pair :math:`(w\cdot x, v\cdot x)` is Gaussian with
covariance :math:`C = \begin{pmatrix} r_w^2 & r_w r_v\rho \\ r_w r_v\rho & r_v^2\end{pmatrix}`,
:math:`r_w = \|w\|`, :math:`r_v = \|v\|`, :math:`\rho = w\cdot v/(\|w\|\|v\|)`, so

.. math::

    K(\rho; r_w, r_v) = E[\sigma(r_w X)\,\tau(r_v Y)], \qquad
    (X, Y) \text{ standard normal with correlation } \rho .

Two entry points:

* :func:`correlation_kernel` -- ``K`` and ``dK/drho``, ``dK/dr_w``, ``dK/dr_v`` in the
  overlap/norm parametrisation (conventions of ``popdyn.__doc__``; non-unit norms as in
  theory/CONVENTIONS.md, "Non-unit norms").
* :func:`gaussian_pair_expectation` -- the same quantity for a raw 2x2 covariance ``C``
  (``E[sigma(A) tau(B)]``, ``(A, B) ~ N(0, C)``) with the derivatives in the entries of ``C``
  that the squared-loss ODEs need.

Routes (``method="auto"`` picks the first that applies):

``"polynomial"``
    Both activations are polynomials: exact, from the Hermite coefficients of the dilated
    polynomials, :math:`K = \sum_k c_k(\sigma(r_w\,\cdot))\,c_k(\tau(r_v\,\cdot))\,\rho^k`
    (Mehler; theory/CONVENTIONS.md, "Non-unit norms").  The sympy expression is :func:`correlation_kernel_expr`.
``"closed_form"``
    A tabulated pair (formulas in :func:`popdyn.gaussian.pair_closed_form`): ReLU/ReLU
    (arc-cosine kernel), abs/abs, ReLU/abs, ReLU/sign, abs/sign,
    sign/sign (:math:`\tfrac{2}{\pi}\arcsin\rho`) and erf/erf (Saad–Solla arcsin form,
    theory/CONVENTIONS.md, "Closed-form Gaussian kernels").  The positively homogeneous ones scale as
    :math:`r_w^{q_\sigma} r_v^{q_\tau}`.
``"quadrature"``
    Anything else: nested breakpoint-aware Gauss–Legendre quadrature (see
    :func:`correlation_kernel`, Notes).  Accuracy target :data:`KERNEL_TOL` (``1e-10``).
``"series"``
    Truncated Mehler series with a rigorous Cauchy–Schwarz tail bound; only for
    :math:`|\rho|` well below 1 (opt-in, mainly a cross-check).

Examples
--------
>>> round(float(correlation_kernel("relu", "relu", 0.5)), 12)
0.304498890522
>>> kv = correlation_kernel("he3", "he3", 0.5, norm_w=1.0, norm_v=1.0, derivatives=True)
>>> float(kv.value), float(kv.d_rho), kv.method
(0.125, 0.75, 'polynomial')
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import numpy as np

from ._validation import check_choice, check_int, check_real
from .activations import Activation, get_activation
from .errors import NumericalError
from .gaussian import (  # the closed forms and quadrature helpers shared with other models
    _gl,
    _npdf as _phi,
    closed_form_pair as _closed_form_pair,
    closed_form_pairs,
    pair_closed_form as _closed_form,
)

__all__ = [
    "KernelValue",
    "PairExpectation",
    "correlation_kernel",
    "correlation_kernel_expr",
    "gaussian_pair_expectation",
    "kernel_symbols",
    "closed_form_pairs",
    "KERNEL_TOL",
    "KERNEL_METHODS",
    "PRICE_SWITCH",
    "PSD_RTOL",
    "SERIES_MAX_DEGREE",
]

#: Default accuracy target of the numeric routes, mixed absolute/relative: every returned
#: quantity ``q`` satisfies ``error_estimate <= tol * max(1, |q|)`` or NumericalError is raised.
KERNEL_TOL = 1e-10
#: Valid values of ``method``.
KERNEL_METHODS = ("auto", "polynomial", "closed_form", "quadrature", "series")
#: Below this value of ``s = sqrt(1 - rho^2)`` the numeric derivatives of jump-free activations
#: use Price's formulas with the activations' derivatives (well conditioned up to ``|rho| = 1``)
#: instead of the derivative-free Gaussian-score weights, whose round-off grows like eps/s.
PRICE_SWITCH = 1e-3

# Quadrature layout of the numeric route.
_WINDOW = 12.0  # integrate |X|, |xi| <= 12: phi(12) = 2e-32, negligible even against z**10 growth
_PANEL = 1.0  # panel width at unit scale; shrunk by the activations' dilation
_GL_HIGH = 20  # Gauss-Legendre nodes per panel (result)
_GL_LOW = 12  # nodes of the comparison rule (error estimate)
_EPS = np.finfo(float).eps
_CHUNK = 1_000_000  # inner-quadrature nodes held in memory at once
#: Largest (and default) truncation degree of the series route: the norm derivatives need
#: coefficients to degree + 2, and popdyn.hermite certifies numeric ones to 1e-12 up to 60.
SERIES_MAX_DEGREE = 58
_COEFF_ERR = 1e-12  # absolute accuracy of numeric Hermite coefficients (popdyn.hermite.QUAD_TOL)


# ======================================================================================
# result types
# ======================================================================================
@dataclasses.dataclass(frozen=True)
class KernelValue:
    r"""A correlation kernel value with its first derivatives.

    Parameters
    ----------
    value, d_rho, d_norm_w, d_norm_v, method, error_bound
        The fields, in this order (see Attributes).

    Attributes
    ----------
    value : float or ndarray
        :math:`K(\rho; r_w, r_v) = E[\sigma(r_w X)\tau(r_v Y)]`.
    d_rho : float or ndarray
        :math:`\partial K/\partial\rho` at fixed norms (``+inf`` where it diverges, e.g.
        sign/sign at :math:`|\rho| = 1`).
    d_norm_w, d_norm_v : float or ndarray
        :math:`\partial K/\partial r_w`, :math:`\partial K/\partial r_v` at fixed
        :math:`\rho`.
    method : str
        Route used: ``"polynomial"``, ``"closed_form"``, ``"quadrature"`` or ``"series"``.
    error_bound : float or ndarray
        Estimated absolute error, the largest over the four quantities.  ``0`` for the exact
        routes (floating-point rounding only); an a-posteriori estimate (two quadrature rules
        plus a round-off estimate) for ``"quadrature"``; a rigorous tail bound plus the
        coefficient error for ``"series"``.

    Notes
    -----
    Other parametrisations follow by the chain rule.  With raw inner product
    :math:`c = w\cdot v` at fixed norms, :math:`\partial K/\partial c = K_\rho/(r_w r_v)`;
    with respect to the Gram entries :math:`C_{ww} = r_w^2`, see
    :func:`gaussian_pair_expectation`.
    """

    value: object
    d_rho: object
    d_norm_w: object
    d_norm_v: object
    method: str
    error_bound: object


@dataclasses.dataclass(frozen=True)
class PairExpectation:
    r""":math:`E[\sigma(A)\tau(B)]`, :math:`(A, B)\sim N(0, C)`, with derivatives in ``C``.

    Parameters
    ----------
    value, d_aa, d_bb, d_ab, method, error_bound
        The fields, in this order (see Attributes).

    Attributes
    ----------
    value : float or ndarray
    d_aa, d_bb : float or ndarray
        :math:`\partial/\partial C_{aa}` and :math:`\partial/\partial C_{bb}` (Price:
        :math:`\tfrac12 E[\sigma''(A)\tau(B)]` and :math:`\tfrac12 E[\sigma(A)\tau''(B)]`).
    d_ab : float or ndarray
        Derivative in the off-diagonal entry with :math:`C_{ab} = C_{ba}` moved together
        (Price: :math:`E[\sigma'(A)\tau'(B)]`).  The gradient with respect to the full
        symmetric matrix, entry by entry, is ``[[d_aa, d_ab/2], [d_ab/2, d_bb]]``.
    method, error_bound
        As in :class:`KernelValue`; the error bound is propagated through the chain rule.
    """

    value: object
    d_aa: object
    d_bb: object
    d_ab: object
    method: str
    error_bound: object


# ======================================================================================
# symbolic route
# ======================================================================================
def kernel_symbols():
    """The sympy symbols ``(rho, r_w, r_v)`` used by :func:`correlation_kernel_expr`.

    ``rho`` is real, ``r_w`` and ``r_v`` are positive.
    """
    import sympy

    return (sympy.Symbol("rho", real=True), sympy.Symbol("r_w", positive=True),
            sympy.Symbol("r_v", positive=True))


def _dilated_exact(coeffs, r):
    r"""Exact normalised coefficients of :math:`z \mapsto f(r z)` from those of ``f``.

    :math:`h_n(rz) = \sum_{i} r^{j}(r^2-1)^i \frac{\sqrt{n!/j!}}{2^i i!} h_j(z)`, ``j = n - 2i``
    (from :math:`He_n(rz)=\sum_i r^{n-2i}(r^2-1)^i\frac{n!}{2^i i!(n-2i)!}He_{n-2i}(z)`).
    """
    import sympy

    n_max = len(coeffs) - 1
    out = [sympy.Integer(0)] * (n_max + 1)
    for n, c in enumerate(coeffs):
        if c == 0:
            continue
        for i in range(n // 2 + 1):
            j = n - 2 * i
            factor = sympy.sqrt(sympy.factorial(n) / sympy.factorial(j)) / (2 ** i * sympy.factorial(i))
            out[j] += c * factor * r ** j * (r ** 2 - 1) ** i
    return out


@lru_cache(maxsize=256)
def _polynomial_expr_cached(ca: tuple, cb: tuple):
    import sympy

    rho, rw, rv = kernel_symbols()
    a = _dilated_exact(ca, rw)
    b = _dilated_exact(cb, rv)
    terms = [sympy.expand(a[k]) * sympy.expand(b[k]) * rho ** k for k in range(min(len(a), len(b)))]
    return sympy.Add(*terms)


@lru_cache(maxsize=256)
def _polynomial_functions(ca: tuple, cb: tuple):
    """Lambdified value and derivatives (rho, r_w, r_v) -> float of the polynomial kernel."""
    import sympy

    rho, rw, rv = kernel_symbols()
    expr = _polynomial_expr_cached(ca, cb)
    exprs = (expr, sympy.diff(expr, rho), sympy.diff(expr, rw), sympy.diff(expr, rv))
    return tuple(sympy.lambdify((rho, rw, rv), e, modules="numpy") for e in exprs)


def correlation_kernel_expr(sigma, tau):
    r"""Closed-form sympy expression of :math:`K(\rho; r_w, r_v)` in :func:`kernel_symbols`.

    Parameters
    ----------
    sigma, tau : activation spec
        Anything :func:`popdyn.get_activation` accepts.  Both polynomials, or a pair listed
        by :func:`closed_form_pairs`.

    Returns
    -------
    sympy expression
        In ``rho`` (cosine overlap), ``r_w = ||w||``, ``r_v = ||v||``.

    Raises
    ------
    ValueError
        No closed form is known for the pair (use :func:`correlation_kernel`, which falls
        back to quadrature).

    Notes
    -----
    For polynomials,

    .. math::

        K = \sum_k c_k(\sigma_{r_w})\, c_k(\tau_{r_v})\, \rho^k, \qquad
        c_j(f_r) = \sum_{n = j + 2i} c_n(f)\, r^{j}(r^2-1)^i \frac{\sqrt{n!/j!}}{2^i\, i!},

    exact (non-unit norms go through the coefficients of the dilated function; see
    theory/CONVENTIONS.md, "Non-unit norms").

    Examples
    --------
    >>> import sympy
    >>> rho, r_w, r_v = kernel_symbols()
    >>> sympy.factor(correlation_kernel_expr("poly:z**2", "poly:z**2"))
    r_v**2*r_w**2*(2*rho**2 + 1)
    """
    import sympy

    sa, sb = get_activation(sigma), get_activation(tau)
    if sa.is_polynomial and sb.is_polynomial:
        return _polynomial_expr_cached(tuple(sa.poly_coeffs), tuple(sb.poly_coeffs))
    pair = _closed_form_pair(sa, sb)
    if pair is None:
        raise ValueError(
            f"no closed form is known for the pair ({sa.name!r}, {sb.name!r}); closed forms exist for "
            f"two polynomials and for {', '.join(f'{a}/{b}' for a, b in closed_form_pairs())}. "
            "Use correlation_kernel(...) for a numeric value."
        )
    rho, rw, rv = kernel_symbols()
    name_a, name_b, swapped = pair
    if swapped:
        rw, rv = rv, rw
    pi = sympy.pi
    root = sympy.sqrt(1 - rho ** 2)
    table = {
        ("relu", "relu"): rw * rv * (root + (pi - sympy.acos(rho)) * rho) / (2 * pi),
        ("abs", "abs"): rw * rv * 2 * (root + rho * sympy.asin(rho)) / pi,
        ("relu", "abs"): rw * rv * (root + rho * sympy.asin(rho)) / pi,
        ("relu", "sign"): rw * rho / sympy.sqrt(2 * pi),
        ("abs", "sign"): sympy.Integer(0),
        ("sign", "sign"): 2 * sympy.asin(rho) / pi,
        ("erf", "erf"): 2 * sympy.asin(rw * rv * rho / sympy.sqrt((1 + rw ** 2) * (1 + rv ** 2))) / pi,
    }
    return table[(name_a, name_b)]


# ======================================================================================
# numeric route: nested breakpoint-aware Gauss–Legendre quadrature
# ======================================================================================
def _jump_points(act: Activation) -> tuple:
    """Breakpoints where ``act`` jumps (a discontinuity, not a kink).

    A jump keeps its size when the probe step shrinks; a kink's difference shrinks with it.
    """
    out = []
    for b in act.breakpoints:
        scale = max(1.0, abs(b))
        h1, h2 = 1e-7 * scale, 1e-9 * scale
        with np.errstate(all="ignore"):
            j1 = float(act(np.array([b + h1]))[0] - act(np.array([b - h1]))[0])
            j2 = float(act(np.array([b + h2]))[0] - act(np.array([b - h2]))[0])
        if abs(j2) > 1e-12 and abs(j2) > 0.5 * abs(j1):
            out.append(b)
    return tuple(out)


def _grid(half: float, width: float) -> np.ndarray:
    n = max(2, int(math.ceil(2.0 * half / width)))
    return np.linspace(-half, half, n + 1)


def _panel_nodes(edges: np.ndarray, n_gl: int):
    """Nodes and weights (Lebesgue) of composite GL on panels between sorted ``edges``.

    ``edges`` has shape ``(..., n_e)``; the result has shape ``(..., (n_e - 1) * n_gl)``.
    """
    t, w = _gl(n_gl)
    lo, hi = edges[..., :-1, None], edges[..., 1:, None]
    half = 0.5 * (hi - lo)
    x = (lo + hi) * 0.5 + half * t
    wx = half * w
    shape = edges.shape[:-1] + (-1,)
    return x.reshape(shape), np.broadcast_to(wx, x.shape).reshape(shape)


def _outer_edges(sig_bps, tau_bps, rho, s, rw, rv):
    """Outer panel edges in X: uniform grid, sigma's kinks, and graded panels around the
    near-kinks ``X* = c/(r_v rho)`` of the smoothed ``tau`` (width ``s/|rho|``)."""
    width = _PANEL / max(1.0, rw, rv * abs(rho))
    pts = [_grid(_WINDOW, width)]
    pts.append(np.array([b / rw for b in sig_bps if abs(b / rw) < _WINDOW]))
    if rho != 0.0:
        ell = s / abs(rho)  # 0 at |rho| = 1: X* is then a kink of tau(r_v rho X) itself
        for c in tau_bps:
            xs = c / (rv * rho)
            if abs(xs) >= _WINDOW:
                continue
            steps = [0.0]
            g = ell / 4.0
            while 0.0 < g < 4.0 * width:
                steps.append(g)
                g *= 2.0
            steps = np.array(steps)
            cand = np.concatenate([xs - steps, xs + steps])
            pts.append(cand[np.abs(cand) < _WINDOW])
    edges = np.unique(np.concatenate(pts))
    return edges


def _nested_sums(sig, tau, rho, rw, rv, n_gl, mode, sig_bps, tau_bps):
    """One quadrature rule of the nested integral.

    Returns ``(q, r)`` with ``q = (K, K_rho, K_rw, K_rv)`` and ``r`` a round-off bound.
    ``mode`` is ``"value"``, ``"score"`` (derivative-free Gaussian-score weights) or
    ``"price"`` (activation derivatives).
    """
    s = math.sqrt(max((1.0 - rho) * (1.0 + rho), 0.0))
    x_edges = _outer_edges(sig_bps, tau_bps, rho, s, rw, rv)
    x, wx = _panel_nodes(x_edges, n_gl)
    wx = wx * _phi(x)
    sx = sig(rw * x)
    zeros = np.zeros(4)
    if s == 0.0:  # |rho| = 1: one-dimensional expectation E[sigma(r_w X) tau(r_v rho X)]
        ty = tau(rv * rho * x)
        val = float(np.dot(wx, sx * ty))
        if mode == "value":
            return np.array([val, 0.0, 0.0, 0.0]), zeros
        dsx = sig.derivative(rw * x)
        dty = tau.derivative(rv * rho * x)
        q = np.array([val, rw * rv * float(np.dot(wx, dsx * dty)), float(np.dot(wx, x * dsx * ty)),
                      float(np.dot(wx, sx * rho * x * dty))])
        return q, zeros
    # inner variable xi: Y = rho X + s xi; tau's kinks sit at xi = (c/r_v - rho X)/s
    grid = _grid(_WINDOW, _PANEL / max(1.0, rv * s))
    n_xi = (grid.size - 1 + len(tau_bps)) * n_gl
    chunk = max(1, _CHUNK // n_xi)
    names = ("I0",) if mode == "value" else (("I0", "J0", "J1") if mode == "price" else ("I0", "I1", "I2", "A1", "A2"))
    sums = {k: np.empty(x.size) for k in names}
    for start in range(0, x.size, chunk):
        xc = x[start:start + chunk]
        sl = slice(start, start + xc.size)
        if tau_bps:
            kinks = np.clip((np.asarray(tau_bps)[None, :] / rv - rho * xc[:, None]) / s, -_WINDOW, _WINDOW)
            edges = np.sort(np.concatenate([np.broadcast_to(grid, (xc.size, grid.size)), kinks], axis=1), axis=1)
        else:
            edges = grid[None, :]
        xi, wxi = _panel_nodes(edges, n_gl)  # (n_chunk or 1, n_xi)
        wxi = wxi * _phi(xi)
        y = rho * xc[:, None] + s * xi
        ty = tau(rv * y)
        sums["I0"][sl] = np.sum(wxi * ty, axis=1)
        if mode == "price":
            dty = tau.derivative(rv * y)
            sums["J0"][sl] = np.sum(wxi * dty, axis=1)
            sums["J1"][sl] = np.sum(wxi * y * dty, axis=1)
        elif mode == "score":
            # centred on tau(r_v rho x): E[xi] = E[xi^2 - 1] = 0 exactly, and the centring turns
            # the O(1/s^2) cancellation of the score weights into O(1/s)
            xw = wxi * (ty - tau(rv * rho * xc)[:, None])
            p1 = xw * xi
            p2 = xw * (xi * xi - 1.0)
            sums["I1"][sl] = np.sum(p1, axis=1)
            sums["I2"][sl] = np.sum(p2, axis=1)
            sums["A1"][sl] = np.sum(np.abs(p1), axis=1)
            sums["A2"][sl] = np.sum(np.abs(p2), axis=1)
    I0 = sums["I0"]
    val = float(np.dot(wx, sx * I0))
    if mode == "value":
        return np.array([val, 0.0, 0.0, 0.0]), zeros
    if mode == "price":
        dsx = sig.derivative(rw * x)
        q = np.array([val, rw * rv * float(np.dot(wx, dsx * sums["J0"])), float(np.dot(wx, x * dsx * I0)),
                      float(np.dot(wx, sx * sums["J1"]))])
        return q, zeros
    # Gaussian-score weights (no activation derivatives):
    #   d/drho : x xi / s - rho (xi^2 - 1)/s^2
    #   d/dr_w : (x^2 - 1 - rho x xi / s)/r_w
    #   d/dr_v : (rho x xi / s + xi^2 - 1)/r_v
    I1, I2, A1, A2 = sums["I1"], sums["I2"], sums["A1"], sums["A2"]
    K_rho = float(np.dot(wx, sx * (x * I1 / s - rho * I2 / (s * s))))
    K_rw = float(np.dot(wx, sx * ((x * x - 1.0) * I0 - rho * x * I1 / s))) / rw
    K_rv = float(np.dot(wx, sx * (rho * x * I1 / s + I2))) / rv
    asx = np.abs(sx) * wx
    # round-off estimate: pairwise summation of n terms, random-walk model, error about
    # eps sqrt(log2 n) times the sum of |terms| (factor 4 of slack); the worst case is log2 n
    cnt = 4.0 * _EPS * math.sqrt(math.log2(max(2, n_xi * x.size)))
    r = cnt * np.array([
        float(np.dot(asx, np.abs(I0))),
        float(np.dot(asx, np.abs(x) * A1 / s + abs(rho) * A2 / (s * s))),
        float(np.dot(asx, np.abs(x * x - 1.0) * np.abs(I0) + np.abs(rho * x) * A1 / s)) / rw,
        float(np.dot(asx, np.abs(rho * x) * A1 / s + A2)) / rv,
    ])
    return np.array([val, K_rho, K_rw, K_rv]), r


def _quadrature_point(sig, tau, rho, rw, rv, derivatives, tol, jumps):
    """Value (and derivatives) at one point by the nested rule, with an error estimate."""
    s = math.sqrt(max((1.0 - rho) * (1.0 + rho), 0.0))
    if not derivatives:
        mode = "value"
    elif jumps:
        if s == 0.0:
            raise NumericalError(
                f"derivatives of the kernel of ({sig.name!r}, {tau.name!r}) at |rho| = 1 are not computed: "
                "an activation with a jump has a delta-function derivative (the rho-derivative may diverge). "
                "Evaluate at |rho| < 1."
            )
        mode = "score"
    else:
        mode = "price" if s < PRICE_SWITCH else "score"
    swap = mode == "score" and bool(_jump_points(sig)) and not _jump_points(tau)
    if swap:
        # K(sigma, tau; rho, r_w, r_v) = K(tau, sigma; rho, r_v, r_w).  A jump activation is
        # piecewise constant near its jump and evaluates without round-off noise, so it goes
        # inside, where the score weights amplify that noise by 1/s^2.
        sig, tau, rw, rv = tau, sig, rv, rw
    sig_bps, tau_bps = sig.breakpoints, tau.breakpoints
    with np.errstate(over="ignore", invalid="ignore"):
        q_hi, r_hi = _nested_sums(sig, tau, rho, rw, rv, _GL_HIGH, mode, sig_bps, tau_bps)
        q_lo, _ = _nested_sums(sig, tau, rho, rw, rv, _GL_LOW, mode, sig_bps, tau_bps)
    if not np.all(np.isfinite(q_hi)):
        raise NumericalError(
            f"the kernel of ({sig.name!r}, {tau.name!r}) is not finite at rho = {rho}, norms ({rw}, {rv}); "
            "the activations must be square-integrable under the Gaussian."
        )
    err = np.abs(q_hi - q_lo) + r_hi
    if swap:
        sig, tau, rw, rv = tau, sig, rv, rw
        q_hi, err = q_hi[[0, 1, 3, 2]], err[[0, 1, 3, 2]]
    n_q = 4 if derivatives else 1
    bad = err[:n_q] > tol * np.maximum(1.0, np.abs(q_hi[:n_q]))
    if np.any(bad):
        names = np.array(["value", "d_rho", "d_norm_w", "d_norm_v"])[:n_q][bad]
        raise NumericalError(
            f"quadrature of the kernel of ({sig.name!r}, {tau.name!r}) at rho = {rho!r}, norms ({rw}, {rv}) "
            f"did not reach `tol` = {tol:.3g}: error estimate {float(np.max(err[:n_q])):.3g} for "
            f"{', '.join(names)}. Declare the activations' breakpoints (kinks, jumps), move |rho| away "
            "from 1 (for jump activations), or raise `tol`."
        )
    return q_hi, float(np.max(err[:n_q]))


# ======================================================================================
# series route
# ======================================================================================
def _dilated_coefficients(act: Activation, r: float, n: int):
    """Float coefficients c_0..c_n of z -> act(r z), E[act(rZ)^2], and their abs. error."""
    if act.is_polynomial:
        from .hermite import HermiteSeries

        c = np.zeros(n + 1)
        base = HermiteSeries(np.array([float(v) for v in act.poly_coeffs])).dilate(r).coefficients
        m = min(n + 1, base.size)
        c[:m] = base[:m]
        return c, float(np.dot(base, base)), 0.0
    if act.homogeneity is not None and act.closed_coeffs is not None and act.second_moment_exact is not None:
        scale = r ** act.homogeneity
        return act.closed_coeffs(n)[: n + 1] * scale, act.second_moment_exact * scale ** 2, 0.0
    from .hermite import hermite_coefficients

    fn = act.fn
    c, m2, err = hermite_coefficients(lambda z: fn(r * np.asarray(z, dtype=float)), n,
                                      breakpoints=tuple(b / r for b in act.breakpoints),
                                      name=f"activation `{act.name}` dilated by {r:g}")
    return c, m2, max(err, _COEFF_ERR)


def _max_weight(rho_abs: float, n: int, shift: int) -> float:
    """``max_{k > n} (k + shift) * rho_abs**k`` (0 when ``rho_abs = 0``), for ``rho_abs < 1``."""
    if rho_abs == 0.0:
        return 0.0
    ks = [n + 1]
    kstar = -1.0 / math.log(rho_abs) - shift  # maximiser of (k + shift) rho^k over real k
    for k in (math.floor(kstar), math.ceil(kstar)):
        if k > n:
            ks.append(k)
    return max((k + shift) * rho_abs ** k for k in ks)


def _series_point(sig, tau, rho, rw, rv, degree, tol, derivatives):
    """Truncated Mehler series at one point with a rigorous error bound (Notes of correlation_kernel)."""
    n = degree
    ra = abs(rho)
    if ra >= 1.0:
        raise NumericalError(f"the Hermite series route does not converge at |rho| = 1 (rho = {rho!r}); "
                             "use method='quadrature'.")
    a, ma, ea = _dilated_coefficients(sig, rw, n + 2)
    b, mb, eb = _dilated_coefficients(tau, rv, n + 2)
    k = np.arange(n + 1)
    pw = rho ** k
    apw = ra ** k
    an, bn = a[: n + 1], b[: n + 1]
    # tail masses T_n = E f^2 - sum_{k<=n} c_k^2, widened by the coefficient errors
    Ta = max(ma - float(np.dot(an, an)), 0.0) + 2 * (n + 1) * ea * (1.0 + math.sqrt(ma))
    Tb = max(mb - float(np.dot(bn, bn)), 0.0) + 2 * (n + 1) * eb * (1.0 + math.sqrt(mb))
    tail = math.sqrt(Ta * Tb)
    e = ea + eb + ea * eb  # |a_k b_k - a~_k b~_k| <= e (|a_k| + |b_k| + 1)
    coef = np.abs(an) + np.abs(bn) + 1.0
    value = float(np.dot(an * bn, pw))
    err_v = ra ** (n + 1) * tail + e * float(np.dot(coef, apw))
    if not derivatives:
        q, err = np.array([value, 0.0, 0.0, 0.0]), np.array([err_v, 0.0, 0.0, 0.0])
    else:
        # d/drho: sum k a_k b_k rho^(k-1); tail <= max_{k>n} k |rho|^(k-1) sqrt(Ta Tb)
        d_rho = float(np.dot(k[1:] * an[1:] * bn[1:], rho ** (k[1:] - 1)))
        m1 = _max_weight(ra, n, 0) / ra if ra > 0 else float(n == 0)
        err_r = m1 * tail + e * float(np.dot(k[1:] * coef[1:], ra ** (k[1:] - 1)))
        # d/dr c_k(f(r .)) = (k c_k + sqrt((k+1)(k+2)) c_{k+2}) / r, so |d/dr c_k| <= (k+2)(|c_k|+|c_{k+2}|)/r
        up = np.sqrt((k + 1.0) * (k + 2.0))
        da = (k * an + up * a[2: n + 3]) / rw
        db = (k * bn + up * b[2: n + 3]) / rv
        d_rw = float(np.dot(da * bn, pw))
        d_rv = float(np.dot(an * db, pw))
        m2 = _max_weight(ra, n, 2)
        coef2 = (np.abs(an) + np.abs(a[2: n + 3]) + np.abs(bn) + np.abs(b[2: n + 3]) + 2.0) * (k + 2.0)
        err_w = (2.0 * m2 * tail + 2.0 * e * float(np.dot(coef2, apw))) / rw
        err_v2 = (2.0 * m2 * tail + 2.0 * e * float(np.dot(coef2, apw))) / rv
        q = np.array([value, d_rho, d_rw, d_rv])
        err = np.array([err_v, err_r, err_w, err_v2])
    n_q = 4 if derivatives else 1
    bad = err[:n_q] > tol * np.maximum(1.0, np.abs(q[:n_q]))
    if np.any(bad):
        raise NumericalError(
            f"the Hermite series of the kernel of ({sig.name!r}, {tau.name!r}) at rho = {rho!r} with degree {n} "
            f"has error bound {float(np.max(err[:n_q])):.3g} > `tol` = {tol:.3g}. Use method='quadrature' "
            f"(the series converges like |rho|^n; degree <= {SERIES_MAX_DEGREE})."
        )
    return q, float(np.max(err[:n_q]))


# ======================================================================================
# public API
# ======================================================================================
def _check_norm(name, value):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a positive real number or array, got {value!r}.")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`{name}` must be a positive real number or array, got {value!r}.") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    if np.any(arr <= 0):
        raise ValueError(f"`{name}` must be > 0 (a vector norm), got {value!r}.")
    return arr


def _check_rho(rho):
    try:
        arr = np.asarray(rho, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`rho` must be a real number or array in [-1, 1], got {rho!r}.") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`rho` must be finite, got {rho!r}.")
    if np.any(np.abs(arr) > 1.0):
        worst = float(arr.flat[int(np.argmax(np.abs(arr)))])
        raise ValueError(f"`rho` (the cosine overlap) must lie in [-1, 1], got {worst!r}.")
    return arr


def correlation_kernel(sigma, tau, rho, *, norm_w=1.0, norm_v=1.0, derivatives: bool = False,
                       degree: int | None = None, tol: float = KERNEL_TOL, method: str = "auto"):
    r"""Correlation kernel :math:`K(\rho; r_w, r_v) = E[\sigma(w\cdot x)\,\tau(v\cdot x)]`.

    Parameters
    ----------
    sigma, tau : activation spec
        Anything :func:`popdyn.get_activation` accepts.
    rho : float or array_like
        Cosine overlap :math:`w\cdot v/(\|w\|\|v\|)` in ``[-1, 1]``.
    norm_w, norm_v : float or array_like
        Norms :math:`r_w = \|w\| > 0`, :math:`r_v = \|v\| > 0`; broadcast with ``rho``.
    derivatives : bool
        Also return :math:`\partial_\rho K`, :math:`\partial_{r_w} K`, :math:`\partial_{r_v} K`.
    degree : int, optional
        Truncation degree of the ``"series"`` route (default and maximum
        :data:`SERIES_MAX_DEGREE`).  Ignored by the other routes.
    tol : float
        Accuracy target of the numeric routes (default :data:`KERNEL_TOL` = ``1e-10``): each
        returned quantity ``q`` has error estimate ``<= tol * max(1, |q|)``, else
        :class:`~popdyn.NumericalError` is raised.
    method : {"auto", "polynomial", "closed_form", "quadrature", "series"}
        Route; ``"auto"`` takes the polynomial route for two polynomials, the closed form
        for a tabulated pair (:func:`closed_form_pairs`), quadrature otherwise.

    Returns
    -------
    float or ndarray
        ``K`` (shape of the broadcast inputs; a float for scalar inputs), when
        ``derivatives`` is False.
    KernelValue
        When ``derivatives`` is True.

    Raises
    ------
    ValueError
        ``|rho| > 1``, a norm ``<= 0``, non-finite input, a route that does not apply.
    NumericalError
        The numeric route cannot reach ``tol``.

    Notes
    -----
    With :math:`(X, Y)` standard normal of correlation :math:`\rho`, write
    :math:`Y = \rho X + s\xi`, :math:`s = \sqrt{1-\rho^2}`, :math:`\xi \perp X`.

    *Quadrature route.*  :math:`K = E_X[\sigma(r_w X)\,E_\xi\,\tau(r_v(\rho X + s\xi))]`.
    Both integrals use composite 20-point Gauss–Legendre panels on :math:`[-12, 12]` (width
    ``1/max(1, r_w, r_v|rho|)`` outside, ``1/max(1, r_v s)`` inside).  The inner integral is
    split at :math:`\tau`'s breakpoints :math:`\xi = (c/r_v - \rho X)/s`; the outer one at
    :math:`\sigma`'s breakpoints :math:`X = b/r_w` and, since the smoothed
    :math:`E_\xi\tau` varies on the scale :math:`s/|\rho|` around :math:`X^* = c/(r_v\rho)`,
    on panels graded geometrically from :math:`s/(4|\rho|)` there.  The error estimate is
    the difference with a 12-point rule on the same panels plus a round-off estimate.  At
    :math:`|\rho| = 1` the kernel is the 1-D expectation
    :math:`E[\sigma(r_w X)\tau(\pm r_v X)]`.

    Derivatives need no activation derivative for :math:`s \ge` :data:`PRICE_SWITCH`:
    differentiating the Gaussian density of :math:`(X, \xi)` gives the score weights

    .. math::

        \partial_\rho K = E\Big[\sigma\tau\Big(\frac{X\xi}{s} - \frac{\rho(\xi^2-1)}{s^2}\Big)\Big],\quad
        \partial_{r_w} K = E\Big[\sigma\tau\,\frac{X^2 - 1 - \rho X\xi/s}{r_w}\Big],\quad
        \partial_{r_v} K = E\Big[\sigma\tau\,\frac{\rho X\xi/s + \xi^2 - 1}{r_v}\Big],

    with :math:`\sigma\tau = \sigma(r_w X)\tau(r_v Y)` (these equal Price's
    :math:`r_w r_v E[\sigma'\tau']`, :math:`E[X\sigma'\tau]`, :math:`E[\sigma Y\tau']`).
    The inner sums are centred on :math:`\tau(r_v\rho X)`, which keeps the round-off at
    :math:`O(\epsilon/s)`.  For :math:`s <` :data:`PRICE_SWITCH` (:math:`|\rho| > 1 - 5\cdot
    10^{-7}`) and jump-free activations, Price's formulas with the activations' derivatives
    are used instead (exact derivatives for the registry; central differences, about
    ``1e-9``, for user callables without a derivative).  Activations with jumps (``sign``)
    keep the score weights for :math:`0 < s`, with the jump activation moved to the inner
    integral (symmetry :math:`K(\sigma,\tau;\rho,r_w,r_v) = K(\tau,\sigma;\rho,r_v,r_w)`), where
    it evaluates without round-off noise; their derivatives at :math:`|\rho| = 1` raise
    NumericalError (the :math:`\rho`-derivative involves a delta function and may diverge).

    *Validity and accuracy.*  ``1e-10`` (``tol``) for the value and the derivatives of
    piecewise-smooth activations with declared breakpoints and at most polynomial growth,
    at any :math:`\rho \in [-1, 1]`; tested against the closed forms to ``rho = 1 - 1e-12``
    (observed errors are ~1e-14).  Cost: about ``1e6`` activation evaluations per point
    (0.01-0.05 s), growing like :math:`\max(1, r_w, r_v)^2` for large norms (about 1.5 s at
    :math:`r_w = r_v = 10`).

    *Series route.*  :math:`K = \sum_{k\le n} a_k b_k \rho^k` with :math:`a_k = c_k(\sigma(r_w
    \cdot))`, tail :math:`\le |\rho|^{n+1}\sqrt{T_n(a)T_n(b)}` (Cauchy–Schwarz, :math:`T_n`
    tail masses); the norm derivatives use
    :math:`\partial_r c_k(f(r\,\cdot)) = (k c_k + \sqrt{(k+1)(k+2)}\,c_{k+2})/r`
    (Stein's lemma with :math:`z h_k = \sqrt{k+1}h_{k+1} + \sqrt{k}h_{k-1}`).  Useful for
    :math:`|\rho| \lesssim 0.5` at ``tol = 1e-10`` (degree <= 58); it refuses
    :math:`|\rho| = 1`.

    Other parametrisations: :math:`\partial K/\partial(w\cdot v) = K_\rho/(r_w r_v)` at fixed
    norms; derivatives in the Gram entries are in :func:`gaussian_pair_expectation`.

    References
    ----------
    theory/CONVENTIONS.md, "Closed-form Gaussian kernels" (Mehler identity, arc-cosine and
    Saad–Solla arcsin closed forms); D. Saad, S. A. Solla, Phys. Rev. E 52, 4225 (1995);
    R. Price, "A useful theorem for nonlinear devices having Gaussian inputs", IRE Trans.
    Inf. Theory 4 (1958); Y. Cho, L. Saul, "Kernel methods for deep learning", NIPS 2009.

    Examples
    --------
    >>> round(float(correlation_kernel("relu", "relu", 1.0)), 12)
    0.5
    >>> kv = correlation_kernel("erf", "erf", 0.3, norm_w=2.0, derivatives=True)
    >>> round(float(kv.value), 10), kv.method
    (0.1215268484, 'closed_form')
    >>> round(float(correlation_kernel("tanh", "relu", 0.5, method="quadrature")), 10)
    0.1514263774
    """
    sa = get_activation(sigma)
    sb = get_activation(tau)
    method = check_choice("method", method, KERNEL_METHODS)
    tol = check_real("tol", tol, lower=0.0, lower_open=True)
    if degree is not None:
        degree = check_int("degree", degree, minimum=0, maximum=SERIES_MAX_DEGREE)
    if not isinstance(derivatives, (bool, np.bool_)):
        raise TypeError(f"`derivatives` must be a bool, got {derivatives!r}.")
    rho_a = _check_rho(rho)
    rw_a = _check_norm("norm_w", norm_w)
    rv_a = _check_norm("norm_v", norm_v)
    scalar = rho_a.ndim == 0 and rw_a.ndim == 0 and rv_a.ndim == 0
    rho_b, rw_b, rv_b = np.broadcast_arrays(rho_a, rw_a, rv_a)
    shape = rho_b.shape

    pair = _closed_form_pair(sa, sb)
    if method == "auto":
        if sa.is_polynomial and sb.is_polynomial:
            method = "polynomial"
        elif pair is not None:
            method = "closed_form"
        else:
            method = "quadrature"
    if method == "polynomial" and not (sa.is_polynomial and sb.is_polynomial):
        raise ValueError(f"method='polynomial' needs two polynomial activations; got ({sa.name!r}, {sb.name!r}).")
    if method == "closed_form" and pair is None:
        raise ValueError(
            f"method='closed_form' has no formula for ({sa.name!r}, {sb.name!r}); tabulated pairs: "
            f"{', '.join(f'{a}/{b}' for a, b in closed_form_pairs())}."
        )

    err = np.zeros(shape)
    if method == "polynomial":
        fns = _polynomial_functions(tuple(sa.poly_coeffs), tuple(sb.poly_coeffs))
        outs = [np.broadcast_to(np.asarray(f(rho_b, rw_b, rv_b), dtype=float), shape).copy()
                for f in (fns if derivatives else fns[:1])]
        while len(outs) < 4:
            outs.append(None)
    elif method == "closed_form":
        outs = [np.broadcast_to(np.asarray(o, dtype=float), shape).copy()
                for o in _closed_form(pair, rho_b, rw_b, rv_b)]
    else:
        outs = [np.empty(shape) for _ in range(4)]
        jumps = bool(_jump_points(sa) or _jump_points(sb)) if derivatives and method == "quadrature" else False
        done: dict = {}
        for idx in np.ndindex(shape):
            key = (float(rho_b[idx]), float(rw_b[idx]), float(rv_b[idx]))
            if key not in done:
                r, w_, v_ = key
                if method == "quadrature":
                    done[key] = _quadrature_point(sa, sb, r, w_, v_, derivatives, tol, jumps)
                else:
                    n = degree if degree is not None else SERIES_MAX_DEGREE
                    done[key] = _series_point(sa, sb, r, w_, v_, n, tol, derivatives)
            q, e = done[key]
            for j in range(4):
                outs[j][idx] = q[j]
            err[idx] = e

    def _out(a):
        return float(a) if scalar else a

    if not derivatives:
        return _out(outs[0])
    return KernelValue(value=_out(outs[0]), d_rho=_out(outs[1]), d_norm_w=_out(outs[2]),
                       d_norm_v=_out(outs[3]), method=method, error_bound=_out(err))


#: Relative slack on the Cauchy–Schwarz condition C_ab^2 <= C_aa C_bb (rounding of a
#: singular covariance); inside it the correlation is clipped to [-1, 1].
PSD_RTOL = 1e-12


def gaussian_pair_expectation(sigma, tau, C, *, derivatives: bool = False, tol: float = KERNEL_TOL,
                              method: str = "auto", degree: int | None = None):
    r""":math:`E[\sigma(A)\tau(B)]` for :math:`(A, B) \sim N(0, C)`, with derivatives in ``C``.

    Parameters
    ----------
    sigma, tau : activation spec
    C : array_like, shape ``(..., 2, 2)``
        Symmetric positive semi-definite covariances with positive diagonal, e.g. the local
        field covariance ``[[Q_ii, M_in], [M_in, T_nn]]``.  Leading axes are vectorised.
    derivatives : bool
        Also return ``d_aa``, ``d_bb``, ``d_ab`` (see :class:`PairExpectation`).
    tol, method, degree
        As in :func:`correlation_kernel`.

    Returns
    -------
    float or ndarray, or PairExpectation

    Raises
    ------
    ValueError
        ``C`` is not ``(..., 2, 2)``, not symmetric, has a non-positive diagonal entry, or
        violates :math:`C_{ab}^2 \le C_{aa}C_{bb}` beyond rounding (:data:`PSD_RTOL`).

    Notes
    -----
    With :math:`r_w = \sqrt{C_{aa}}`, :math:`r_v = \sqrt{C_{bb}}`,
    :math:`\rho = C_{ab}/(r_w r_v)`, this is :func:`correlation_kernel` and, by the chain rule,

    .. math::

        \frac{\partial E}{\partial C_{ab}} = \frac{K_\rho}{r_w r_v}, \qquad
        \frac{\partial E}{\partial C_{aa}} = \frac{K_{r_w}}{2 r_w} - \frac{\rho K_\rho}{2 r_w^2},
        \qquad
        \frac{\partial E}{\partial C_{bb}} = \frac{K_{r_v}}{2 r_v} - \frac{\rho K_\rho}{2 r_v^2}.

    By Price's theorem these equal :math:`E[\sigma'(A)\tau'(B)]`,
    :math:`\tfrac12E[\sigma''(A)\tau(B)]`, :math:`\tfrac12E[\sigma(A)\tau''(B)]`.  For the
    Saad–Solla ``erf`` this is :math:`I_2 = \tfrac{2}{\pi}\arcsin(C_{ab}/\sqrt{(1+C_{aa})(1+C_{bb})})`
    (Saad & Solla 1995; theory/CONVENTIONS.md, "Saad–Solla committee machine").

    Examples
    --------
    >>> C = [[1.0, 0.5], [0.5, 1.0]]
    >>> round(float(gaussian_pair_expectation("erf", "erf", C)), 12)   # Saad–Solla I2(0,1) = 0.160861246510
    0.16086124651
    """
    try:
        C = np.asarray(C, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`C` must be an array of 2x2 covariance matrices, got {C!r}.") from exc
    if C.ndim < 2 or C.shape[-2:] != (2, 2):
        raise ValueError(f"`C` must have shape (..., 2, 2), got {C.shape}.")
    if not np.all(np.isfinite(C)):
        raise ValueError("`C` must be finite.")
    a, b, c, c2 = C[..., 0, 0], C[..., 1, 1], C[..., 0, 1], C[..., 1, 0]
    if np.any(np.abs(c - c2) > 1e-12 * np.maximum(1.0, np.abs(c))):
        raise ValueError("`C` must be symmetric (C[..., 0, 1] == C[..., 1, 0]).")
    if np.any(a <= 0) or np.any(b <= 0):
        raise ValueError(f"`C` must have a positive diagonal (non-degenerate fields); got diagonal "
                         f"{np.stack([a, b], -1).reshape(-1, 2)[0].tolist()}.")
    if np.any(c * c > a * b * (1.0 + PSD_RTOL)):
        raise ValueError("`C` must be positive semi-definite: C_ab^2 <= C_aa C_bb is violated.")
    rw, rv = np.sqrt(a), np.sqrt(b)
    rho = np.clip(c / (rw * rv), -1.0, 1.0)
    scalar = C.ndim == 2
    kv = correlation_kernel(sigma, tau, rho, norm_w=rw, norm_v=rv, derivatives=derivatives, tol=tol,
                            method=method, degree=degree)
    if not derivatives:
        return float(kv) if scalar else kv
    K_rho, K_rw, K_rv = (np.asarray(x, dtype=float) for x in (kv.d_rho, kv.d_norm_w, kv.d_norm_v))
    with np.errstate(invalid="ignore"):
        d_ab = K_rho / (rw * rv)
        d_aa = K_rw / (2 * rw) - rho * K_rho / (2 * a)
        d_bb = K_rv / (2 * rv) - rho * K_rho / (2 * b)
    # propagate the kernel's error e through the chain rule above (|rho| <= 1)
    e = np.asarray(kv.error_bound, dtype=float)
    err = np.maximum.reduce([e, e / (rw * rv), e / (2 * rw) + e / (2 * a), e / (2 * rv) + e / (2 * b)])

    def _out(x):
        return float(x) if scalar else np.asarray(x)

    return PairExpectation(value=_out(kv.value), d_aa=_out(d_aa), d_bb=_out(d_bb), d_ab=_out(d_ab),
                           method=kv.method, error_bound=_out(err))
