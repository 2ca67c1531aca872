r"""Information and generative exponents of a link :math:`y = f(z)`, :math:`z \sim N(0,1)`.

Definitions (conventions of ``popdyn.__doc__``)
-----------------------------------------------
* **Information exponent** (Ben Arous, Gheissari, Jagannath 2021):

  .. math:: \mathrm{IE}(f) = \min\{k \ge 1 : c_k(f) \ne 0\}, \qquad c_k(f) = E[f(z) h_k(z)].

* **Generative exponent** (Damian, Pillaud-Vivien, Lee, Bruna 2024, arXiv 2403.05529):

  .. math::

     \mathrm{GE}(f) = \min\{k \ge 1 : \lambda_k^2 > 0\}, \qquad
     \lambda_k^2 = E_y[\zeta_k(y)^2], \qquad \zeta_k(y) = E[h_k(z) \mid f(z) = y].

  Equivalently the smallest information exponent of :math:`T \circ f` over label
  transforms :math:`T \in L^2(P_y)`, since
  :math:`\sup_T E[T(y) h_k(z)]^2 / E[T(y)^2] = \lambda_k^2` (the supremum is reached at
  :math:`T = \zeta_k`).  Every label transform therefore gives the Cauchy–Schwarz lower
  bound :math:`\lambda_k^2 \ge E[T(y)h_k(z)]^2 / E[T(y)^2]`, which is how a *witness*
  certifies :math:`\lambda_k^2 > 0`.

How :math:`\zeta_k` is computed
-------------------------------
The real line (truncated to :math:`|z| \le L`, :math:`L = \sqrt{4K+2} + 8` for
:math:`K` = ``max_k``, where the Gaussian mass left out is below :math:`10^{-30}`) is
split into pieces on which :math:`f` is strictly monotone or constant: at the declared
breakpoints of the activation, at the real critical points of :math:`f` (roots of
:math:`f'`, exactly for polynomials and by a sign scan of :math:`f'` on a grid of
spacing 1/64 refined by bisection otherwise) and at the ends of
the intervals where :math:`f' = 0`.

* A **constant piece** with value :math:`a` is an atom of :math:`y`:
  :math:`\zeta_k(a) = E[h_k(z)\,1\{f(z)=a\}] / P(f(z)=a)`, in closed form from
  :math:`\int_\alpha^\beta h_k\varphi = (h_{k-1}(\alpha)\varphi(\alpha) -
  h_{k-1}(\beta)\varphi(\beta))/\sqrt{k}`.
* On the **monotone pieces**, for a value :math:`y` with real preimages :math:`z_i`,

  .. math::

     \zeta_k(y) = \frac{\sum_i \omega_i h_k(z_i)}{\sum_i \omega_i}, \qquad
     \omega_i = \frac{\varphi(z_i)}{|f'(z_i)|},

  and :math:`\lambda_k^2 = E_z[h_k(z)\,\zeta_k(f(z))] = E_z[\zeta_k(f(z))^2]` plus the
  atoms' :math:`P(a)\zeta_k(a)^2`.  Preimages come from a vectorised Newton iteration,
  safeguarded by bisection, on each monotone piece (to a few ulp).

Quadrature.  The :math:`z`-integral on each monotone piece is split where :math:`f(z)`
crosses a critical value of another piece: there a pair of preimages appears, and
:math:`\zeta_k \circ f` jumps with a square-root singularity.  Such "singular" ends are
mapped by :math:`z - a \propto u^2`, which makes the square roots analytic in
:math:`u`; the panels next to every end are graded geometrically, which also resolves
logarithmic end singularities (GELU) and near-poles (a fold's preimage pair, with
weight :math:`\sim 1/|z - c|`, overtaking a distant preimage).  Grading towards a fold
stops where :math:`f(z) - f(c)` would drop below 64 times its rounding error, because
there the partner preimages can no longer be resolved.  Critical values shared by
several folds (even links) are computed exactly for polynomials and snapped to one
value, and near each fold a polynomial is evaluated through its Taylor expansion
there, so that mirror preimages are neither lost nor misplaced by rounding.  Each panel gets
Gauss–Legendre nodes (20 and 28 per panel for the two resolutions).

Accuracy.  The error estimate (:attr:`GenerativeExponentResult.lambda_error`) is the
larger of the change between the two resolutions and the gap between
:math:`E[h_k\zeta_k]` and :math:`E[\zeta_k^2]`, which are equal in exact arithmetic; the
gap picks up errors in the preimage weights.  It is below ``1e-13`` for every
registered activation and every ``heK`` with ``K <= 8`` (``max_k = 6``), and about
``1e-10`` for the non-rational cubic ``hermite:0.3,0,1,0.2`` (its true error, against an
independent quadrature, is ``3e-11``); values that decide the exponent must be
accurate to ``tol/10`` or :class:`~popdyn.errors.NumericalError` is raised.  The
reference values of theory/lee2024/equations.md, "Label transforms and the generative
exponent" (5 digits) are reproduced, and an independent
adaptive quadrature with ``numpy.roots`` preimages agrees to ``1e-9`` or better
(``tests/test_exponents.py``).

Limits of validity: features of :math:`f'` narrower than the scan grid (1/64) are found
only for polynomials (exact critical points) or when declared as ``breakpoints``;
preimages with :math:`|z| > L` are ignored (their Gaussian weight is below
:math:`\varphi(L)`); a user callable without an exact ``derivative`` gets central
differences, whose ~1e-10 relative error enters the weights (and grows near folds,
where :math:`f' \to 0`).  The cost grows like the cube of the number of monotone pieces
on the window: a few hundredths of a second for the registered activations, ~2 s for
:math:`\sin 3z` (27 pieces), ~30 s for :math:`\sin 5z` (43 pieces).

References
----------
A. Damian, L. Pillaud-Vivien, J. D. Lee, J. Bruna, "Computational-statistical gaps in
Gaussian single-index models", COLT 2024, arXiv:2403.05529 (generative exponent).
G. Ben Arous, R. Gheissari, A. Jagannath, "Online stochastic gradient descent on
non-convex losses from high-dimensional inference", JMLR 2021 (information exponent).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from fractions import Fraction

import numpy as np

from . import hermite as _h
from ._validation import check_int, check_real
from .activations import Activation, get_activation
from .errors import NumericalError

__all__ = [
    "information_exponent",
    "generative_exponent",
    "exponents_summary",
    "GenerativeExponentResult",
    "LabelTransform",
    "COEFF_TOL",
    "TAIL_TOL",
    "GE_TOL",
]

#: A numeric Hermite coefficient counts as non-zero when ``|c_k| > COEFF_TOL``.  The
#: coefficients of :mod:`popdyn.activations` are accurate to 1e-12 (absolute), so this
#: leaves a factor 100 against rounding; a genuine coefficient smaller than 1e-10 would
#: be reported as zero.
COEFF_TOL = 1e-10
#: The truncation tail mass :math:`E[f^2] - \sum_{k\le n} c_k^2` counts as non-zero
#: above this (both terms are accurate to ~1e-12).
TAIL_TOL = 1e-10
#: Default threshold of the generative exponent: :math:`\lambda_k^2 > GE\_TOL` counts as
#: non-zero.  The :math:`\lambda_k^2` are computed to ~1e-11 or better (module
#: docstring), so this leaves a margin of 100 or more; the values that decide the
#: exponent must be accurate to ``tol/10``.
GE_TOL = 1e-8
#: Largest ``max_k`` accepted (the quadrature is tuned for :math:`h_k`, ``k <= 30``).
MAX_K_LIMIT = 30

_SQRT2PI = math.sqrt(2.0 * math.pi)
_GRID_DENSITY = 64          # derivative sign scan: points per unit length
_PANEL = 0.5                # composite Gauss-Legendre: panel width (in z, before mapping)
_GL_LOW, _GL_HIGH = 20, 28  # nodes per panel of the two resolutions
_GRADE_RATIO = 0.15         # geometric grading of the end panels (see _half_rule)
_GRADE_LEVELS = 10          # ... at most this many levels towards a fold
_SINGULAR_LEVELS = 30       # ... and this many towards the crossing of an asymptotic value (~1e-50 in z)
_NEAREST_NODE = 0.0018      # first Gauss-Legendre node of 28 on [0, 1]
_TABLE_POINTS = 257         # per monotone piece: table of f that brackets each preimage
_SOFT_IMAG = 3.0             # complex critical points closer than this to the real axis get a split
_NUMERIC_POWERS = 8         # numeric witness search: T(y) = y**j, j = 1.._NUMERIC_POWERS
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


# ======================================================================================
# information exponent
# ======================================================================================
def information_exponent(act, *, degree: int = 40, tol: float | None = None) -> int | None:
    r"""Information exponent :math:`\mathrm{IE}(f) = \min\{k \ge 1 : c_k(f) \ne 0\}`.

    Parameters
    ----------
    act : str, Activation, callable or sympy expression
        Anything :func:`popdyn.activations.get_activation` accepts.
    degree : int
        Highest degree examined for non-polynomials (``>= 1``).  Polynomials use all of
        their (exact) coefficients.
    tol : float, optional
        Threshold for *numeric* coefficients: :math:`|c_k| >` ``tol`` counts as non-zero.
        Default :data:`COEFF_TOL` (``1e-10``; coefficients are accurate to ``1e-12``).
        Exact coefficients (polynomials; closed forms of ``relu``, ``abs``, ``sign``,
        ``erf``) are compared with zero exactly and ignore ``tol``.

    Returns
    -------
    int or None
        The information exponent, or ``None`` for a constant link.

    Raises
    ------
    ValueError
        ``degree`` < 1 or ``tol`` <= 0; or all numeric :math:`c_1..c_n` vanish while the
        tail mass :math:`E[f^2] - \sum_{k \le n} c_k^2` is positive (the exponent is
        larger than ``degree``: retry with a larger ``degree``).
    TypeError
        Non-integer ``degree``.

    Notes
    -----
    The exponent of online SGD with the correlation loss (Ben Arous, Gheissari,
    Jagannath 2021): the population correlation along :math:`m = \langle w, v\rangle`
    is :math:`\sum_k c_k(\sigma) c_k(f) m^k`.

    Examples
    --------
    >>> information_exponent("he3"), information_exponent("poly:z**3")
    (3, 1)
    >>> information_exponent("abs"), information_exponent("poly:2") is None
    (2, True)
    """
    degree = check_int("degree", degree, minimum=1)
    if tol is None:
        tol = COEFF_TOL
    else:
        tol = check_real("tol", tol, lower=0.0, lower_open=True)
    a = get_activation(act)
    if a.is_polynomial:
        for k, c in enumerate(a.poly_coeffs):
            if k >= 1 and c != 0:
                return k
        return None
    exact = a.exact_coefficients(degree)
    if exact is not None:
        undecided = False
        for k in range(1, degree + 1):
            zero = getattr(exact[k], "is_zero", exact[k] == 0)
            if zero is False:
                return k
            undecided |= zero is None
        if not undecided:
            return _no_exponent(a, degree)
    c = a.coefficients(degree)
    nz = np.flatnonzero(np.abs(c[1:]) > tol)
    if nz.size:
        return int(nz[0]) + 1
    return _no_exponent(a, degree)


def _no_exponent(a: Activation, degree: int):
    tail = a.tail_mass(degree)
    if tail > TAIL_TOL:
        raise ValueError(
            f"activation `{a.name}` has c_1..c_{degree} = 0 but a positive tail mass {tail:.3g} beyond "
            f"degree {degree}: its information exponent is larger than {degree}. Retry with a larger `degree`."
        )
    return None


# ======================================================================================
# result types
# ======================================================================================
@dataclasses.dataclass(frozen=True, eq=False)
class LabelTransform:
    r"""A label transform :math:`T` with :math:`E[T(f(z)) h_k(z)] \ne 0` (a GE witness).

    Attributes
    ----------
    description : str
        ``"T(y) = y**3"`` or ``"T(y) = zeta_2(y) = E[h_2(z) | y]"``.
    fn : callable
        Vectorised numpy evaluation of :math:`T`.
    correlation : float
        :math:`E[T(f(z)) h_k(z)]` (for :math:`T = \zeta_k` this is :math:`\lambda_k^2`).
    exact_correlation : sympy expression or None
        The same, exactly, when it is known (polynomial links and powers of ``y``, or
        ``T(y) = y`` for closed-form coefficients).
    lambda_lower_bound : float
        :math:`E[T h_k]^2 / E[T^2] \le \lambda_k^2` (Cauchy–Schwarz).
    """

    description: str
    fn: Callable
    correlation: float
    exact_correlation: object = None
    lambda_lower_bound: float = float("nan")


@dataclasses.dataclass(frozen=True, eq=False)
class GenerativeExponentResult:
    r"""Result of :func:`generative_exponent`.

    Attributes
    ----------
    k : int or None
        Generative exponent; ``None`` for a constant link.
    lambdas : tuple of float
        ``lambdas[j-1]`` :math:`= \lambda_j^2 = E_y[\zeta_j(y)^2]` for ``j = 1..max_k``
        (empty for a constant link).  Exactly 0 for odd ``j`` when the link is an even
        polynomial (:math:`\zeta_j \equiv 0` by the symmetry :math:`z \to -z`).
    witness : LabelTransform or None
        A label transform with non-zero correlation with :math:`h_k`.
    method : str
        ``"exact-preimage"`` (polynomials: exact witness, preimages of the exact
        polynomial) or ``"numeric"``.
    tolerance : float
        Threshold used: :math:`\lambda_k^2 >` ``tolerance`` counts as non-zero.
    lambda_error : float
        A-posteriori absolute error estimate of the ``lambdas`` (largest over ``j``;
        exact zeros count as exact).
    """

    k: int | None
    lambdas: tuple
    witness: LabelTransform | None
    method: str
    tolerance: float
    lambda_error: float = 0.0


# ======================================================================================
# piecewise-monotone structure of f
# ======================================================================================
@dataclasses.dataclass(frozen=True)
class _Piece:
    a: float
    b: float
    kind: int     # +1 increasing, -1 decreasing, 0 constant
    fa: float     # f at a (one-sided limit from inside)
    fb: float     # f at b (one-sided limit from inside)

    @property
    def lo(self) -> float:
        return min(self.fa, self.fb)

    @property
    def hi(self) -> float:
        return max(self.fa, self.fb)


def _nudge(x: float, toward: float) -> float:
    """A point just inside the piece, to evaluate one-sided limits at a jump."""
    eps = 1e-11 * max(1.0, abs(x))
    return x + eps if toward > x else x - eps


def _refine_transition(dfn, x0: float, x1: float, s0: float) -> float:
    """Bisection for the point in (x0, x1) where sign(f') leaves the value ``s0``."""
    for _ in range(200):
        m = 0.5 * (x0 + x1)
        if m in (x0, x1):
            break
        if np.sign(float(dfn(np.array([m]))[0])) == s0:
            x0 = m
        else:
            x1 = m
    return 0.5 * (x0 + x1)


def _scan_cuts(a: Activation, edges) -> list:
    """Sign changes of f' (and ends of f' = 0 runs) inside each interval of ``edges``."""
    cuts = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        n = max(16, int(math.ceil((hi - lo) * _GRID_DENSITY)))
        x = np.linspace(lo, hi, n + 1)
        # just inside the ends: f' may jump at a breakpoint (and central differences of a
        # user callable, step 1e-6, must not straddle it)
        inset = 1e-5 * max(1.0, abs(lo), abs(hi))
        x[0], x[-1] = lo + inset, hi - inset
        with np.errstate(all="ignore"):
            d = a.derivative(x)
        if not np.all(np.isfinite(d)):
            bad = x[~np.isfinite(d)][0]
            raise NumericalError(
                f"the derivative of `{a.name}` is not finite at z = {bad:.6g}; declare it as a breakpoint."
            )
        s = np.sign(d)
        idx = np.flatnonzero(s[1:] != s[:-1])
        if idx.size > 2000:
            raise NumericalError(
                f"the derivative of `{a.name}` changes sign {idx.size} times on [{lo:.3g}, {hi:.3g}]; "
                "cannot split it into monotone pieces (pass an exact `derivative`)."
            )
        for i in idx:
            x0, x1 = float(x[i]), float(x[i + 1])
            # a sign change of f' (extremum) or the end of a run where f' = 0; bisection to
            # machine precision (scipy.optimize is not imported: it costs ~0.8 s at start-up)
            cuts.append(_refine_transition(a.derivative, x0, x1, s[i]))
    return cuts


def _polynomial_critical_points(a: Activation, L: float):
    """Real points in (-L, L) where the derivative of a polynomial changes sign.

    Returns ``(points, critical_values, exact)``.  Exact (sympy real-root isolation
    refined to 1e-40, odd multiplicities only; values to ~40 digits with mpmath) when
    ``f`` is a multiple of a rational polynomial, which covers every ``heK``, every
    ``poly:`` with rational coefficients and every ``hermite:`` spec whose coefficients
    share one radical; otherwise numpy roots, with clusters (multiple roots, split by
    rounding into ``~eps**(1/m)``-wide clusters) replaced by their mean.
    """
    import sympy

    rf = _rational_form(a)
    if rf is not None:
        import mpmath

        radical, g = rf
        dg = [c * n for n, c in enumerate(g)][1:]
        if not any(dg):
            return [], {}, True
        z = _h.z_symbol()
        dp = sympy.Poly([sympy.Rational(c.numerator, c.denominator) for c in reversed(dg)], z)
        pts, vals = [], {}
        with mpmath.workdps(45):
            gm = [mpmath.mpf(c.numerator) / c.denominator for c in reversed(g)]
            scale = mpmath.sqrt(radical)
            # exact isolating intervals, refined (exactly, in rationals) to width 1e-40
            for (lo_r, hi_r), mult in dp.intervals(eps=sympy.Rational(1, 10 ** 40)):
                if mult % 2 == 0:
                    continue  # f' does not change sign
                lo_m, hi_m = mpmath.mpf(lo_r.p) / lo_r.q, mpmath.mpf(hi_r.p) / hi_r.q
                r = (lo_m + hi_m) / 2
                x = float(r)
                if -L < x < L:
                    pts.append(x)
                    # critical value to ~40 digits: equal values (mirror folds) compare equal
                    vals[x] = float(scale * mpmath.polyval(gm, r))
        return pts, vals, True
    power = a.series(a.degree).to_power()
    dpow = np.polynomial.polynomial.polyder(power)
    if dpow.size <= 1:
        return [], {}, False
    roots = np.polynomial.polynomial.polyroots(dpow)
    real = np.sort(roots[np.abs(roots.imag) <= 1e-5 * np.maximum(1.0, np.abs(roots))].real)
    return [r for r in _cluster(list(real), 1e-4) if -L < r < L], {}, False


def _cluster(points, tol: float) -> list:
    """Replace runs of sorted points closer than ``tol * max(1, |x|)`` by their mean."""
    out, group = [], []
    for x in sorted(points):
        if group and x - group[-1] > tol * max(1.0, abs(x)):
            out.append(float(np.mean(group)))
            group = []
        group.append(x)
    if group:
        out.append(float(np.mean(group)))
    return out


def _snap_values(pieces: list) -> list:
    """Give end values of monotone pieces that agree to ~8 ulp one common value.

    Critical values shared by several pieces (a fold's two sides, mirror folds of an
    even link) must compare equal, or a one-ulp difference creates a spurious split
    point next to a fold and loses partner preimages there.
    """
    vals = sorted({v for p in pieces if p.kind for v in (p.fa, p.fb)})
    rep = {}
    group = []
    for v in vals + [None]:
        if group and (v is None or v - group[-1] > 8 * np.finfo(float).eps * max(1.0, abs(v))):
            m = float(np.mean(group))
            rep.update({g: m for g in group})
            group = []
        if v is not None:
            group.append(v)
    return [dataclasses.replace(p, fa=rep[p.fa], fb=rep[p.fb]) if p.kind else p for p in pieces]


def _build_pieces(a: Activation, L: float) -> list:
    bps = sorted(float(b) for b in a.breakpoints if -L < b < L)
    edges = [-L] + bps + [L]
    if a.is_polynomial:
        crit, crit_values, exact = _polynomial_critical_points(a, L)
        cand = crit if exact else _cluster(crit + _scan_cuts(a, edges), 1e-6)
    else:
        cand = _cluster(_scan_cuts(a, edges), 1e-9)
        crit_values = {}
    # fixed edges (window, declared breakpoints) win over nearby candidates
    merged = sorted(edges + [c for c in cand if all(abs(c - e) > 1e-9 * max(1.0, abs(e)) for e in edges)])
    pieces = []
    for lo, hi in zip(merged[:-1], merged[1:]):
        x = np.linspace(lo, hi, 67)[1:-1]
        xa, xb = _nudge(lo, hi), _nudge(hi, lo)
        fx = a(np.concatenate(([xa], x, [xb])))
        with np.errstate(all="ignore"):
            d = a.derivative(x)
        if not np.all(np.isfinite(fx)):
            raise NumericalError(f"`{a.name}` is not finite on [{lo:.6g}, {hi:.6g}].")
        # end values: exact critical values when known; f itself where f is continuous;
        # the one-sided limit (value just inside) at a jump
        f_ends = a(np.array([lo, hi]))
        fa, fb = (v_in if abs(v_end - v_in) > 1e-8 * (1.0 + abs(v_end)) else float(v_end)
                  for v_end, v_in in zip(f_ends, (float(fx[0]), float(fx[-1]))))
        fa, fb = crit_values.get(lo, fa), crit_values.get(hi, fb)
        diffs = np.diff(fx)
        scale = 1e-13 * (1.0 + float(np.max(np.abs(fx))))
        if np.all(d == 0) and np.ptp(fx) <= scale:
            kind = 0
        elif np.all(d >= 0) and np.all(diffs >= -scale) and fb > fa:
            kind = 1
        elif np.all(d <= 0) and np.all(diffs <= scale) and fb < fa:
            kind = -1
        else:
            raise NumericalError(
                f"could not split `{a.name}` into monotone pieces: it is not monotone on [{lo:.6g}, {hi:.6g}]. "
                "Declare its kinks/jumps as `breakpoints`, or pass an exact `derivative`."
            )
        pieces.append(_Piece(lo, hi, kind, fa, fb))
    return _snap_values(pieces)


def _invert(f, df, kind: int, lo, hi, y, z0) -> np.ndarray:
    """Solve f(z) = y in the brackets ``[lo, hi]`` of a monotone function (``kind`` = +-1).

    Vectorised Newton from ``z0``, safeguarded by bisection: the bracket shrinks at
    every step, and a Newton step that leaves it (near a fold, where f' -> 0) is
    replaced by bisection.  Converges to a relative precision of a few ulp in ``z``,
    also for roots near 0 (GELU's preimages of tiny ``y``).
    """
    y = np.asarray(y, dtype=float)
    lo, hi, z = (np.array(v, dtype=float, copy=True) for v in (lo, hi, z0))
    active = np.arange(y.size)
    eps = np.finfo(float).eps
    for _ in range(400):
        if not active.size:
            break
        l, h, t, x = lo[active], hi[active], y[active], z[active]
        with np.errstate(all="ignore"):
            r = f(x) - t
            step = r / df(x)
        below = r < 0 if kind > 0 else r > 0
        l = np.where(below, x, l)
        h = np.where(below, h, x)
        xn = x - step
        ok = np.isfinite(xn) & (xn > l) & (xn < h)
        xn = np.where(ok, xn, 0.5 * (l + h))
        lo[active], hi[active], z[active] = l, h, xn
        tiny = 4.0 * eps * np.abs(xn) + 1e-300
        done = (r == 0) | (np.abs(xn - x) <= tiny) | (h - l <= tiny)
        z[active[r == 0]] = x[r == 0]
        active = active[~done]
    return z


def _taylor_shift(power, c: float) -> np.ndarray:
    """Coefficients (lowest first) of ``p(c + x)`` from those of ``p`` (repeated Horner)."""
    t = np.array(power, dtype=float)
    for i in range(t.size - 1):
        for m in range(t.size - 2, i - 1, -1):
            t[m] += c * t[m + 1]
    return t


def _gl(n: int):
    key = ("gl", n)
    if key not in _CACHE:
        x, w = np.polynomial.legendre.leggauss(n)
        _CACHE[key] = (0.5 * (x + 1.0), 0.5 * w)  # on [0, 1]
    return _CACHE[key]


def _half_rule(n_half: int, levels: int, n_gl: int):
    r"""Composite Gauss–Legendre rule on :math:`x \in [0, 1/2]`, graded towards ``x = 0``.

    ``n_half`` uniform panels; the one at ``x = 0`` is split geometrically (ratio 0.15)
    into ``levels`` more.  ``x`` is the distance from the end of the sub-interval, so
    nodes within 1e-50 of an end stay representable.  Grading resolves
    (near-)singularities of :math:`\zeta_k \circ f` at the ends: logarithmic ones such as
    GELU's (its left tail keeps a weight :math:`\sim 1/|z|` as :math:`y \to 0^-`), and
    near-poles where the weight :math:`\sim 1/|z - c|` of a fold's preimage pair
    overtakes a distant preimage.
    """
    key = ("half", n_half, levels, n_gl)
    if key not in _CACHE:
        u0, w0 = _gl(n_gl)
        d = 0.5 / n_half
        e = np.concatenate(([0.0], d * _GRADE_RATIO ** np.arange(levels, 0, -1), d * np.arange(1, n_half + 1)))
        width = np.diff(e)[:, None]
        _CACHE[key] = ((e[:-1, None] + width * u0).ravel(), (width * w0).ravel())
    return _CACHE[key]


def _end_map(x: np.ndarray, this_singular: bool, other_singular: bool):
    r"""Map of a half sub-interval, in the distance ``x`` from its end: ``(g(x), g'(x))``.

    The full map :math:`[0,1] \to [0,1]` has :math:`g' = 0` at singular ends, where
    :math:`g(x) \propto x^2` makes a square root :math:`\sqrt{z - a}` analytic in the
    quadrature variable; it is :math:`u^2(3-2u)`, :math:`u^2`, :math:`1-(1-u)^2` or
    :math:`u`.  Regular ends (folds, kinks, the window edges) keep :math:`g' \ne 0`: there
    :math:`\zeta_k \circ f` is smooth, and nodes packed against a fold would make its
    partner preimages ill-conditioned.
    """
    if this_singular and other_singular:
        return x * x * (3.0 - 2.0 * x), 6.0 * x * (1.0 - x)
    if this_singular:
        return x * x, 2.0 * x
    if other_singular:
        return x * (2.0 - x), 2.0 * (1.0 - x)
    return x, np.ones_like(x)


def _phi(z):
    return np.exp(-0.5 * np.square(z)) / _SQRT2PI


class _Structure:
    r"""Monotone/constant pieces of ``f`` on ``[-L, L]`` and the conditional law of ``z`` given ``y``.

    Computes :math:`\lambda_k^2` for ``k = 0..K`` and evaluates :math:`\zeta_k(y)`.
    """

    def __init__(self, a: Activation, K: int):
        self.a = a
        self.K = K
        self.L = math.sqrt(4 * K + 2) + 8.0
        pieces = _build_pieces(a, self.L)
        self.mono = [p for p in pieces if p.kind != 0]
        self.atoms = self._group_atoms([p for p in pieces if p.kind == 0])
        self.taylor = self._local_expansions() if a.is_polynomial else None
        self._cache: dict = {}
        self.soft = self._soft_points()

    # -- evaluation of f on one monotone piece -------------------------------------------
    def _local_expansions(self):
        r"""Polynomials: Taylor coefficients of :math:`f` at both ends of each monotone piece.

        Near a fold :math:`c`, :math:`f(c + \delta) = f(c) + \sum_{m \ge 2} t_m \delta^m`
        is evaluated without the cancellation of a global evaluation (whose rounding error
        ~eps times the size of the terms would otherwise be comparable with
        :math:`f(z) - f(c)`).  Interior piece ends of a polynomial are critical points:
        there :math:`t_0` is the (exact, snapped) critical value and :math:`t_1 = 0`, so
        the pieces that share a fold, and mirror folds with the same value, see one
        consistent :math:`f`.
        """
        power = self.a.series(self.a.degree).to_power()
        out = []
        for p in self.mono:
            ends = []
            for c, fc in ((p.a, p.fa), (p.b, p.fb)):
                t = _taylor_shift(power, c)
                if -self.L < c < self.L:
                    t[0] = fc
                    if t.size > 1:
                        t[1] = 0.0
                ends.append((c, t, np.polynomial.polynomial.polyder(t) if t.size > 1 else np.zeros(1)))
            out.append(ends)
        return out

    def _f(self, j: int, z):
        """f on monotone piece ``j`` (local Taylor expansions for polynomials)."""
        if self.taylor is None:
            return self.a(z)
        z = np.asarray(z, dtype=float)
        (ca, ta, _), (cb, tb, _) = self.taylor[j]
        pv = np.polynomial.polynomial.polyval
        return np.where(np.abs(z - ca) <= np.abs(z - cb), pv(z - ca, ta), pv(z - cb, tb))

    def _df(self, j: int, z):
        """f' on monotone piece ``j``."""
        if self.taylor is None:
            return self.a.derivative(z)
        z = np.asarray(z, dtype=float)
        (ca, _, da), (cb, _, db) = self.taylor[j]
        pv = np.polynomial.polynomial.polyval
        return np.where(np.abs(z - ca) <= np.abs(z - cb), pv(z - ca, da), pv(z - cb, db))

    def _invert(self, j: int, y):
        """Preimages of ``y`` on monotone piece ``j``: bracket from a table of f, then Newton."""
        key = ("table", j)
        if key not in self._cache:
            p = self.mono[j]
            zt = np.linspace(p.a, p.b, _TABLE_POINTS)
            ft = self._f(j, zt)
            ft[0], ft[-1] = p.fa, p.fb
            if p.kind < 0:
                zt, ft = zt[::-1], ft[::-1]
            self._cache[key] = (zt, np.maximum.accumulate(ft))  # increasing in ft
        zt, ft = self._cache[key]
        y = np.asarray(y, dtype=float)
        i = np.clip(np.searchsorted(ft, y), 1, zt.size - 1)
        z0, z1, f0, f1 = zt[i - 1], zt[i], ft[i - 1], ft[i]
        with np.errstate(all="ignore"):
            guess = z0 + (y - f0) / (f1 - f0) * (z1 - z0)
        guess = np.where(np.isfinite(guess), guess, 0.5 * (z0 + z1))
        lo, hi = np.minimum(z0, z1), np.maximum(z0, z1)
        guess = np.clip(guess, lo, hi)
        return _invert(lambda z: self._f(j, z), lambda z: self._df(j, z), self.mono[j].kind, lo, hi, y, guess)

    def f_nodes(self, z, own):
        """f at nodes ``z`` owned by the monotone pieces ``own``."""
        y = np.empty(z.shape)
        for j in np.unique(own):
            sel = own == j
            y[sel] = self._f(int(j), z[sel])
        return y

    # -- atoms ---------------------------------------------------------------------------
    def _group_atoms(self, const):
        """Atoms of y: value -> (P(y = value), I[k] = E[h_k 1{y = value}], k = 0..K)."""
        from scipy.special import ndtr

        atoms = []
        for p in const:
            lo = -np.inf if p.a <= -self.L else p.a
            hi = np.inf if p.b >= self.L else p.b
            prob = float(ndtr(-lo) - ndtr(-hi)) if lo > 0 else float(ndtr(hi) - ndtr(lo))
            I = np.zeros(self.K + 1)
            I[0] = prob
            ends = [(lo, 1.0), (hi, -1.0)]
            for x, sgn in ends:
                if np.isfinite(x):
                    hv = _h.h_values(x, self.K)
                    I[1:] += sgn * hv[:-1] * _phi(x) / np.sqrt(np.arange(1, self.K + 1))
            val = 0.5 * (p.fa + p.fb)
            for at in atoms:
                if abs(at[0] - val) <= 1e-12 * (1.0 + abs(val)):
                    at[1] += prob
                    at[2] += I
                    break
            else:
                atoms.append([val, prob, I])
        return [(v, pr, I) for v, pr, I in atoms if pr > 0]

    @property
    def is_constant(self) -> bool:
        return not self.mono and len(self.atoms) <= 1

    # -- preimages -----------------------------------------------------------------------
    def _weights(self, y, own=None, z_own=None):
        """Preimages Z (n, P) over the monotone pieces and weights phi/|f'| (0 where none)."""
        n, P = y.size, len(self.mono)
        Z = np.zeros((n, P))
        has = np.zeros((n, P), dtype=bool)
        for l, p in enumerate(self.mono):
            mask = (y > p.lo) & (y < p.hi)
            if own is not None:
                mask &= own != l
                Z[own == l, l] = z_own[own == l]
                has[own == l, l] = True
            if np.any(mask):
                Z[mask, l] = self._invert(l, y[mask])
                has[mask, l] = True
        d = np.zeros((n, P))
        with np.errstate(all="ignore"):
            for l in range(P):
                d[:, l] = np.abs(self._df(l, Z[:, l]))
        W = np.where(has, _phi(Z) / np.maximum(d, 1e-300), 0.0)
        return Z, W

    def zeta_nodes(self, z, own):
        y = self.f_nodes(z, own)
        Z, W = self._weights(y, own, z)
        H = _h.h_values(Z, self.K)                       # (K+1, n, P)
        return np.einsum("knp,np->kn", H, W) / W.sum(axis=1)

    def zeta(self, y, k: int):
        r""":math:`\zeta_k(y)` at arbitrary ``y`` (0 outside the support of ``y``)."""
        y = np.asarray(y, dtype=float)
        flat = y.ravel()
        out = np.zeros(flat.shape)
        if self.mono:
            Z, W = self._weights(flat)
            tot = W.sum(axis=1)
            H = _h.h_values(Z, k)[k]
            ok = tot > 0
            out[ok] = (H * W).sum(axis=1)[ok] / tot[ok]
        for val, prob, I in self.atoms:
            hit = np.abs(flat - val) <= 1e-12 * (1.0 + abs(val))
            out[hit] = I[k] / prob
        return out.reshape(y.shape)

    # -- quadrature ----------------------------------------------------------------------
    def _fold_levels(self, j: int, x_end: float, f_end: float, inward: float, span: float) -> int:
        r"""Grading levels towards a fold ``x_end`` of piece ``j`` that keep partners resolvable.

        Near a fold :math:`f(z) - f(c) \approx a (z-c)^2` is lost in the rounding of
        :math:`f(c)` below :math:`|z - c| \sim \sqrt{\text{ulp}/a}`, and with it the
        partner preimages.  Grading stops before the nearest node gets there: it needs
        :math:`|f(z) - f(c)| \ge 64\,\epsilon\,|f(c)|` for polynomials (evaluated by
        :meth:`_local_expansions`) and :math:`\ge 64\,\epsilon \max(1, |f(c)|)` otherwise.
        """
        scale = abs(f_end) if self.taylor is not None else max(1.0, abs(f_end))
        floor = 64 * np.finfo(float).eps * scale
        m = np.arange(_GRADE_LEVELS + 1)
        dz = span * _GRADE_RATIO ** m * _NEAREST_NODE
        gap = np.abs(self._f(j, x_end + inward * dz) - f_end)
        ok = np.flatnonzero(gap > floor)
        return int(ok[-1]) if ok.size else 0

    def _soft_points(self) -> list:
        r"""Points ``(j, x0)`` of monotone piece ``j`` where :math:`|f'|` is nearly 0.

        There the weight :math:`\varphi/|f'|` peaks and :math:`\zeta_k \circ f` has a
        near-singularity (a complex critical point close to the real axis, or a flat
        inflection point), both on piece ``j`` and where other pieces cross the value
        :math:`f(x_0)`.  Polynomials: real parts of the roots of :math:`f'` with
        :math:`|\mathrm{Im}| < 3` that are not sign changes.  Other links: interior
        local minima of :math:`|f'|` on the scan grid, refined by golden section.
        """
        out = []
        if self.a.is_polynomial:
            dpow = np.polynomial.polynomial.polyder(self.a.series(self.a.degree).to_power())
            roots = np.polynomial.polynomial.polyroots(dpow) if dpow.size > 1 else np.zeros(0)
            cand = sorted({float(r.real) for r in roots if abs(r.imag) < _SOFT_IMAG})
        else:
            cand = []
            for p in self.mono:
                n = max(16, int(math.ceil((p.b - p.a) * _GRID_DENSITY)))
                x = np.linspace(p.a, p.b, n + 1)[1:-1]
                with np.errstate(all="ignore"):
                    d = np.abs(self.a.derivative(x))
                idx = np.flatnonzero((d[1:-1] < d[:-2]) & (d[1:-1] < d[2:])) + 1
                for i in idx[:50]:
                    lo_x, hi_x = float(x[i - 1]), float(x[i + 1])
                    for _ in range(40):  # golden section on |f'|
                        m1, m2 = hi_x - 0.618 * (hi_x - lo_x), lo_x + 0.618 * (hi_x - lo_x)
                        d1, d2 = np.abs(self.a.derivative(np.array([m1, m2])))
                        lo_x, hi_x = (lo_x, m2) if d1 < d2 else (m1, hi_x)
                    cand.append(0.5 * (lo_x + hi_x))
        for x0 in cand:
            for j, p in enumerate(self.mono):
                if p.a + 1e-9 < x0 < p.b - 1e-9:
                    out.append((j, x0))
        return out

    def _ends(self, j: int) -> list:
        """Sorted split points ``(z, kind, f(z))`` of monotone piece ``j`` (cached)."""
        key = ("ends", j)
        if key in self._cache:
            return self._cache[key]
        p = self.mono[j]
        ends = [(p.a, "edge" if p.a <= -self.L else "fold", p.fa),
                (p.b, "edge" if p.b >= self.L else "fold", p.fb)]
        # an end value of another piece: preimages appear or disappear there ("singular";
        # "asymptote" for values at the window edge, such as GELU's f(-L) ~ 0-, where the
        # singularity is logarithmic and needs the deepest grading)
        vals = {}
        for i, q in enumerate(self.mono):
            if i != j:
                for x, v in ((q.a, q.fa), (q.b, q.fb)):
                    edge = x <= -self.L or x >= self.L
                    vals[v] = "asymptote" if edge or vals.get(v) == "asymptote" else "singular"
        inner = np.array(sorted(v for v in vals if p.lo < v < p.hi))
        if inner.size:
            ends += [(float(c), vals[v], float(v)) for c, v in zip(self._invert(j, inner), inner)]
        # near-critical points of this piece and the crossings of their values ("soft")
        for i, x0 in self.soft:
            v = float(self._f(i, np.array([x0]))[0])
            if i == j:
                ends.append((x0, "soft", v))
            elif p.lo < v < p.hi:
                ends.append((float(self._invert(j, np.array([v]))[0]), "soft", v))
        ends.sort()
        self._cache[key] = ends
        return ends

    def nodes(self, n_gl: int):
        r"""Nodes ``z``, weights (GL x Jacobian x phi) and owning piece over the monotone pieces.

        Each monotone piece is cut where :math:`f` crosses a critical value of another
        piece (a "singular" end: a preimage pair appears there), and at "soft" points
        (:meth:`_soft_points`).  Singular ends get the map :math:`g(u) \propto u^2` and
        full grading (the deepest at the crossing of an asymptotic value, where the
        singularity is logarithmic); soft ends full grading; fold ends (the piece's own
        endpoints) keep :math:`g(u) = u` with grading limited by :meth:`_fold_levels`;
        the window ends :math:`\pm L` are not graded.  Each half of a sub-interval is
        parametrised by the distance from its end (:func:`_half_rule`).
        """
        zs, ws, owns = [], [], []
        for j in range(len(self.mono)):
            ends = self._ends(j)
            for (lo, kl, fl), (hi, kr, fr) in zip(ends[:-1], ends[1:]):
                if hi - lo <= 1e-14 * max(1.0, abs(lo)):
                    continue
                n_half = max(1, int(math.ceil((hi - lo) / (2 * _PANEL))))
                first = (hi - lo) * 0.5 / n_half
                sl, sr = kl in ("singular", "asymptote"), kr in ("singular", "asymptote")
                for x_end, kind, f_end, sgn, this, other in ((lo, kl, fl, 1.0, sl, sr), (hi, kr, fr, -1.0, sr, sl)):
                    lev = (_SINGULAR_LEVELS if kind == "asymptote" else
                           _GRADE_LEVELS if kind in ("singular", "soft") else
                           self._fold_levels(j, x_end, f_end, sgn, first) if kind == "fold" else 0)
                    x, wx = _half_rule(n_half, lev, n_gl)
                    g, dg = _end_map(x, this, other)
                    z = x_end + sgn * (hi - lo) * g
                    zs.append(z)
                    ws.append(wx * (hi - lo) * dg * _phi(z))
                    owns.append(np.full(z.size, j))
        if not zs:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=int)
        return np.concatenate(zs), np.concatenate(ws), np.concatenate(owns)

    def lambdas(self):
        r"""(:math:`\lambda_k^2`, error estimate), arrays over ``k = 0..K``.

        The estimate is the larger of the change between the two Gauss–Legendre
        resolutions and the gap between :math:`E[h_k \zeta_k]` and :math:`E[\zeta_k^2]`
        (equal in exact arithmetic; errors in the preimage weights separate them).
        """
        res = []
        for n_gl in (_GL_LOW, _GL_HIGH):
            z, w, own = self.nodes(n_gl)
            A = np.zeros(self.K + 1)
            B = np.zeros(self.K + 1)
            if z.size:
                zeta = self.zeta_nodes(z, own)
                A += (_h.h_values(z, self.K) * zeta) @ w
                B += (zeta * zeta) @ w
            for _, prob, I in self.atoms:
                A += I * I / prob
                B += I * I / prob
            res.append((A, B))
        (A1, _), (A2, B2) = res
        err = np.maximum(np.abs(A2 - A1), np.abs(A2 - B2))
        return B2, err

    def expect(self, T, k: int):
        r"""(:math:`E[T(y) h_k(z)]`, :math:`E[T(y)^2]`, truncation check ok) by the same quadrature."""
        z, w, own = self.nodes(_GL_HIGH)
        with np.errstate(all="ignore"):
            ty = np.asarray(T(self.f_nodes(z, own)), dtype=float)
            hk = _h.h_values(z, k)[k]
            corr = float(np.dot(w, ty * hk))
            m2 = float(np.dot(w, ty * ty))
            for val, prob, I in self.atoms:
                tv = float(np.asarray(T(np.array([val])), dtype=float)[0])
                corr += tv * I[k]
                m2 += tv * tv * prob
            # the window |z| <= L must hold the integrand: check its size at the ends
            edge = np.array([-self.L, self.L])
            te = np.asarray(T(self.a(edge)), dtype=float)
            tail = float(np.max(np.abs(te) * (np.abs(te) + np.abs(_h.h_values(edge, k)[k])) * _phi(edge)))
        ok = bool(np.isfinite(corr) and np.isfinite(m2) and m2 > 0 and tail <= 1e-14 * max(m2, abs(corr)))
        return corr, m2, ok


# ======================================================================================
# exact witnesses for polynomial links
# ======================================================================================
def _gauss_moment_he(n: int, k: int) -> int:
    r""":math:`E[z^n He_k(z)] = \frac{n!}{(n-k)!}(n-k-1)!!` for ``n >= k``, ``n - k`` even; else 0."""
    if n < k or (n - k) % 2:
        return 0
    out = math.perm(n, k)
    for m in range(n - k - 1, 0, -2):
        out *= m
    return out


def _rational_form(a: Activation):
    r"""``(r, g)`` with :math:`f = \sqrt{r}\, g`, ``r`` a square-free integer and ``g`` a
    list of Fractions (lowest degree first); None when no such split exists
    (coefficients with different radicals, or non-surd coefficients)."""
    surd = _surd_form(a)
    if surd is None:
        return None
    radicals = {r for c in surd for r in c}
    if len(radicals) != 1 or any(len(c) > 1 for c in surd):
        return None
    (r,) = radicals
    return r, [c.get(r, Fraction(0)) for c in surd]


def _surd_form(a: Activation):
    r"""Power coefficients of a polynomial as exact elements of :math:`\mathbb{Q}(\sqrt2, \sqrt3, \dots)`.

    Each coefficient is a dict ``{s: q}`` meaning :math:`\sum q \sqrt{s}` (``s``
    square-free, ``q`` a Fraction); the :math:`\sqrt{s}` are linearly independent over
    :math:`\mathbb{Q}`, so a number is zero exactly when its dict is empty.  Covers every
    ``heK``/``hermite:``/rational ``poly:`` spec (their coefficients carry
    :math:`1/\sqrt{k!}`).  Returns None for other coefficients (e.g. ``pi``).
    """
    key = ("surd", a)
    if key in _CACHE:
        return _CACHE[key]
    import sympy

    z = _h.z_symbol()
    out = []
    for c in reversed(sympy.Poly(sympy.expand(a.expr), z).all_coeffs()):
        d: dict = {}
        for term, q in sympy.expand(c).as_coefficients_dict().items():
            if not q.is_Rational:
                _CACHE[key] = None
                return None
            if term == 1:
                sq = 1
            elif term.is_Pow and term.exp == sympy.S.Half and term.base.is_Integer and term.base > 0:
                sq = int(term.base)
            else:
                _CACHE[key] = None
                return None
            d[sq] = d.get(sq, Fraction(0)) + Fraction(int(q.p), int(q.q))
        out.append({k: v for k, v in d.items() if v})
    _CACHE[key] = out
    return out


def _surd_mul(x: dict, y: dict) -> dict:
    r""":math:`\sqrt s \sqrt t = g \sqrt{(s/g)(t/g)}` with :math:`g = \gcd(s, t)`."""
    out: dict = {}
    for s, p in x.items():
        for t, q in y.items():
            g = math.gcd(s, t)
            r = (s // g) * (t // g)
            out[r] = out.get(r, Fraction(0)) + p * q * g
    return {k: v for k, v in out.items() if v}


def _surd_poly_mul(p: list, q: list) -> list:
    out = [dict() for _ in range(len(p) + len(q) - 1)]
    for i, a in enumerate(p):
        if a:
            for j, b in enumerate(q):
                if b:
                    for s, v in _surd_mul(a, b).items():
                        out[i + j][s] = out[i + j].get(s, Fraction(0)) + v
    return [{k: v for k, v in d.items() if v} for d in out]


class _ExactMoments:
    r"""Exact :math:`E[f(z)^j h_k(z)]` for a polynomial ``f``.

    Uses :math:`E[z^n He_k(z)] = \frac{n!}{(n-k)!}(n-k-1)!!` and exact surd arithmetic
    (:func:`_surd_form`); polynomials with other coefficients go through sympy.
    """

    def __init__(self, a: Activation):
        import sympy

        self.surd = _surd_form(a)
        if self.surd is not None:
            self.powers = {0: [{1: Fraction(1)}]}
        else:
            z = _h.z_symbol()
            self.poly = sympy.Poly(sympy.expand(a.expr), z, domain="EX")
            self.powers = {0: sympy.Poly(1, z, domain="EX")}

    def _power(self, j: int):
        if j not in self.powers:
            prev = self._power(j - 1)
            self.powers[j] = _surd_poly_mul(prev, self.surd) if self.surd is not None else prev * self.poly
        return self.powers[j]

    def moment(self, j: int, k: int):
        r"""Exact :math:`E[f^j h_k]` as a sympy number."""
        import sympy

        pj = self._power(j)
        if self.surd is not None:
            S: dict = {}
            for n, c in enumerate(pj):
                m = _gauss_moment_he(n, k)
                if m:
                    for s, v in c.items():
                        S[s] = S.get(s, Fraction(0)) + v * m
            S = {s: v for s, v in S.items() if v}
            if not S:
                return sympy.Integer(0)
            val = sum((sympy.Rational(v.numerator, v.denominator) * sympy.sqrt(s) for s, v in S.items()),
                      sympy.Integer(0))
        else:
            coeffs = list(reversed(pj.all_coeffs()))
            val = sympy.expand(sum((c * _gauss_moment_he(n, k) for n, c in enumerate(coeffs) if c), sympy.Integer(0)))
            if val.is_zero or sympy.simplify(val) == 0:
                return sympy.Integer(0)
        return sympy.radsimp(val / sympy.sqrt(sympy.factorial(k)))


def _power_name(j: int) -> str:
    """Display name of the label transform y -> y**j."""
    return "T(y) = y" if j == 1 else f"T(y) = y**{j}"


def _power_fn(j: int):
    def T(y):
        return np.asarray(y, dtype=float) ** j
    T.__name__ = f"y**{j}"
    return T


# ======================================================================================
# generative exponent
# ======================================================================================
def generative_exponent(act, *, max_k: int = 6, tol: float = GE_TOL) -> GenerativeExponentResult:
    r"""Generative exponent :math:`\mathrm{GE}(f) = \min\{k \ge 1 : \lambda_k^2 > 0\}` and a witness.

    Parameters
    ----------
    act : str, Activation, callable or sympy expression
        The link :math:`y = f(z)`; anything :func:`popdyn.activations.get_activation`
        accepts.
    max_k : int
        Compute :math:`\lambda_j^2` for ``j = 1..max_k`` (``1 <= max_k <= 30``).
    tol : float
        :math:`\lambda_k^2 >` ``tol`` counts as non-zero (default :data:`GE_TOL`
        ``= 1e-8``; the :math:`\lambda_k^2` are accurate to ~1e-13 for the registered
        activations and ~1e-10 at worst on the polynomial links tested, and a value that
        decides the exponent with an error estimate above ``tol/10`` raises).  For polynomial links an
        exact witness certifies :math:`\lambda_k^2 > 0` independently of ``tol``, and
        even links have exactly :math:`\lambda_k^2 = 0` for odd ``k``.

    Returns
    -------
    GenerativeExponentResult
        ``k`` (``None`` for a constant link), ``lambdas`` (:math:`\lambda_j^2`,
        ``j = 1..max_k``), ``witness`` (a :class:`LabelTransform`), ``method``,
        ``tolerance`` and ``lambda_error``.

    Raises
    ------
    ValueError
        Bad ``max_k``/``tol``; or no :math:`\lambda_k^2` exceeds ``tol`` for
        ``k <= max_k`` although the link is not constant (retry with a larger ``max_k``).
    TypeError
        Non-integer ``max_k``.
    NumericalError
        The link cannot be split into monotone pieces (undeclared kinks) or the
        quadrature misses its accuracy.

    Notes
    -----
    With :math:`\zeta_k(y) = E[h_k(z) \mid y]` (Damian, Pillaud-Vivien, Lee, Bruna 2024),
    for real preimages :math:`z_i` of :math:`y` with weights
    :math:`\omega_i = \varphi(z_i)/|f'(z_i)|`,

    .. math::

        \zeta_k(y) = \frac{\sum_i \omega_i h_k(z_i)}{\sum_i \omega_i}, \qquad
        \lambda_k^2 = E_z[h_k(z) \zeta_k(f(z))] = E_y[\zeta_k(y)^2],

    with constant pieces of :math:`f` treated as atoms of :math:`y` (module docstring).

    *Polynomial links* (``method="exact-preimage"``): the witness is the smallest power
    :math:`T(y) = y^j`, :math:`1 \le j \le J = 2\max(\deg f, 4)`, with
    :math:`E[y^j h_k] \ne 0`, computed exactly from the Gaussian moments
    :math:`E[z^n He_k(z)] = \frac{n!}{(n-k)!}(n-k-1)!!`; by Cauchy–Schwarz it certifies
    :math:`\lambda_k^2 \ge E[y^j h_k]^2/E[y^{2j}] > 0`.  Every non-constant polynomial
    has :math:`\mathrm{GE} \le 2` (arXiv 2406.01581, abstract; arXiv 2403.05529), and odd ``k`` give
    :math:`\zeta_k \equiv 0` for even links.  If no power works the witness is
    :math:`T = \zeta_k` with correlation :math:`\lambda_k^2`.

    *Other links* (``method="numeric"``): :math:`\mathrm{GE}` is the smallest ``k``
    with :math:`\lambda_k^2 >` ``tol``; the witness is the smallest power
    :math:`y^j` (``j <= 8``) with :math:`E[y^j h_k]^2/E[y^{2j}] >` ``tol``, else
    :math:`\zeta_k`.

    References
    ----------
    A. Damian, L. Pillaud-Vivien, J. D. Lee, J. Bruna, arXiv:2403.05529 (COLT 2024).

    Examples
    --------
    >>> r = generative_exponent("he3", max_k=3)
    >>> r.k, r.witness.description, r.witness.exact_correlation
    (1, 'T(y) = y**3', 9*sqrt(6))
    >>> [round(v, 5) for v in r.lambdas]
    [0.66783, 0.62305, 1.0]
    >>> generative_exponent("abs", max_k=2).k
    2
    """
    max_k = check_int("max_k", max_k, minimum=1, maximum=MAX_K_LIMIT)
    tol = check_real("tol", tol, lower=0.0, lower_open=True)
    a = get_activation(act)
    key = (a, max_k, tol)  # Activation hashes by identity (eq=False)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    res = _generative_exponent(a, max_k, tol)
    with _CACHE_LOCK:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = res
    return res


def _zeta_witness(st: _Structure, k: int, lam: float) -> LabelTransform:
    return LabelTransform(
        description=f"T(y) = zeta_{k}(y) = E[h_{k}(z) | y]",
        fn=lambda y, _st=st, _k=k: _st.zeta(y, _k),
        correlation=float(lam), exact_correlation=None, lambda_lower_bound=float(lam),
    )


def _generative_exponent(a: Activation, max_k: int, tol: float) -> GenerativeExponentResult:
    method = "exact-preimage" if a.is_polynomial else "numeric"
    if a.is_polynomial and a.degree == 0:
        return GenerativeExponentResult(None, (), None, method, tol, 0.0)
    st = _Structure(a, max_k)
    if st.is_constant:
        return GenerativeExponentResult(None, (), None, method, tol, 0.0)
    lam_all, err_all = st.lambdas()
    lam = np.clip(lam_all[1:], 0.0, None)
    err = err_all[1:].copy()
    certified = np.zeros(max_k, dtype=bool)  # lambda_k^2 known exactly (zero by symmetry)
    even = a.is_polynomial and all(c == 0 for kk, c in enumerate(a.poly_coeffs) if kk % 2)
    if even:
        certified[0::2] = True  # zeta_k = 0 for odd k (z -> -z symmetry), exactly
        lam[certified] = 0.0
        err[certified] = 0.0
    lam_error = float(np.max(err))

    def result(k, witness):
        # the decision uses lambda_j^2 <= tol for j < k: those must be accurate to tol/10
        below = [j for j in range(1, k) if not certified[j - 1] and err[j - 1] > 0.1 * tol]
        if below or (witness.exact_correlation is None and lam[k - 1] - err[k - 1] <= tol):
            j = below[0] if below else k
            raise NumericalError(
                f"lambda_{j}^2 of `{a.name}` = {lam[j - 1]:.3g} has an estimated error {err[j - 1]:.3g}, too large "
                f"to compare with `tol` = {tol:.3g}. Declare the activation's kinks as `breakpoints`, pass an "
                "exact `derivative`, or change `tol`."
            )
        return GenerativeExponentResult(k, tuple(map(float, lam)), witness, method, tol, lam_error)

    if a.is_polynomial:
        moments = _ExactMoments(a)
        J = 2 * max(a.degree, 4)
        for k in range(1, max_k + 1):
            if certified[k - 1]:
                continue
            for j in range(1, J + 1):
                exact = moments.moment(j, k)
                if exact != 0:
                    corr = float(exact)
                    bound = corr * corr / float(moments.moment(2 * j, 0))
                    if lam[k - 1] < bound - 10 * err[k - 1] - 1e-12:
                        raise NumericalError(
                            f"internal inconsistency for `{a.name}`: lambda_{k}^2 = {lam[k - 1]:.12g} is below the "
                            f"Cauchy-Schwarz bound {bound:.12g} of the exact witness y**{j}."
                        )
                    return result(k, LabelTransform(_power_name(j), _power_fn(j), corr, exact, float(bound)))
            if lam[k - 1] > tol:
                return result(k, _zeta_witness(st, k, lam[k - 1]))
        raise ValueError(_no_ge_message(a, max_k, tol, lam))

    above = np.flatnonzero(lam > tol)
    if not above.size:
        raise ValueError(_no_ge_message(a, max_k, tol, lam))
    k = int(above[0]) + 1
    witness = None
    for j in range(1, _NUMERIC_POWERS + 1):
        T = _power_fn(j)
        corr, m2, ok = st.expect(T, k)
        if not ok:
            break
        if corr * corr / m2 > tol:
            exact = None
            if j == 1:
                ex = a.exact_coefficients(k)
                exact = None if ex is None else ex[k]
            witness = LabelTransform(_power_name(j), T, float(corr), exact, float(corr * corr / m2))
            break
    if witness is None:
        witness = _zeta_witness(st, k, lam[k - 1])
    return result(k, witness)


def _no_ge_message(a, max_k, tol, lam):
    return (f"no lambda_k^2 of `{a.name}` exceeds `tol` = {tol:.3g} for k <= {max_k} "
            f"(largest {float(np.max(lam)):.3g}), but the link is not constant: its generative exponent is "
            "larger than `max_k`. Retry with a larger `max_k`.")


# ======================================================================================
# summary for the CLI
# ======================================================================================
def exponents_summary(act, *, max_k: int = 6, degree: int = 40) -> dict:
    r"""JSON-friendly summary of both exponents (for ``popdyn hermite``).

    Returns
    -------
    dict
        ``activation``, ``information_exponent``, ``generative_exponent``, ``lambdas``
        (:math:`\lambda_j^2`, ``j = 1..max_k``), ``lambda_error``, ``witness``
        (``description``, ``correlation``, ``exact_correlation`` as a string or None,
        ``lambda_lower_bound``), ``method``, ``tolerance``, ``reference``.

    Examples
    --------
    >>> s = exponents_summary("he4", max_k=2)
    >>> s["information_exponent"], s["generative_exponent"], s["witness"]["description"]
    (4, 2, 'T(y) = y**2')
    """
    a = get_activation(act)
    ie = information_exponent(a, degree=degree)
    ge = generative_exponent(a, max_k=max_k)
    w = ge.witness
    return {
        "activation": a.name,
        "information_exponent": ie,
        "generative_exponent": ge.k,
        "lambdas": [float(v) for v in ge.lambdas],
        "lambda_error": float(ge.lambda_error),
        "witness": None if w is None else {
            "description": w.description,
            "correlation": float(w.correlation),
            "exact_correlation": None if w.exact_correlation is None else str(w.exact_correlation),
            "lambda_lower_bound": float(w.lambda_lower_bound),
        },
        "method": ge.method,
        "tolerance": float(ge.tolerance),
        "reference": "Damian, Pillaud-Vivien, Lee, Bruna 2024, arXiv:2403.05529",
    }
