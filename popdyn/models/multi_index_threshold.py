r"""Threshold :math:`\beta_c` for equiangular index vectors (arXiv 2411.08798).

Setting
-------
Equiangular Gram matrix :math:`G = (1-\beta) I + \beta \mathbf{1}\mathbf{1}^\top`, the
same activation pair for every index, :math:`\phi(t) = a^* \sum_m \gamma_m t^m` with
:math:`\gamma_m = c_m(\sigma) c_m(\sigma^*)`.  The **average point**
:math:`w_{avg} = \sum_j v_j / \|\sum_j v_j\|` has :math:`u_j = c_\beta =
\sqrt{(1 + (k-1)\beta)/k}` and is a fixed point for every :math:`\phi` by symmetry.

Riemannian Hessian at the average point (derivation; theory/simsek2025/equations.md)
------------------------------------------------------------------------------------
With :math:`\nabla\ell = -V^\top \phi'(u)`, :math:`\nabla^2\ell = -V^\top
\operatorname{diag}\phi''(u) V` and a tangent in-span direction :math:`z = V^\top a`,
:math:`\mathbf 1^\top a = 0` (so :math:`Vz = Ga = (1-\beta)a`, :math:`\|z\|^2 =
(1-\beta)\|a\|^2`):

.. math::

    \lambda_\parallel = k c\,\phi'(c) - (1-\beta)\,\phi''(c)
        \quad(\text{multiplicity } k-1), \qquad
    \lambda_\perp = k c\,\phi'(c) \quad(\text{directions} \perp \operatorname{span} V).

(theory/simsek2025/equations.md, "Equiangular index vectors", writes ``g`` for the kernel
:math:`\phi`.)
Multiplying :math:`\lambda_\parallel` by :math:`c_\beta^2 > 0` and using :math:`k c^2 =
1 + (k-1)\beta`:

.. math::

    F(\beta) = c_\beta^2 \lambda_\parallel / a^*
             = \sum_m m\,\gamma_m\, c_\beta^m \left[(k+m-2)\beta - (m-2)\right],

so a single degree :math:`p` gives :math:`\beta_c = (p-2)/(k+p-2)`.  With the
substitution :math:`s = c_\beta`, :math:`\beta = (k s^2 - 1)/(k-1)`, the equation
:math:`F = 0` is a **polynomial** in :math:`s` for polynomial activations, so its roots
are algebraic numbers: the ``exact`` method isolates them with sympy and returns
:math:`\beta_c` as a rational, a radical or a ``CRootOf`` of its minimal polynomial.

:math:`\beta_c` is the first sign change of :math:`\lambda_\parallel` on :math:`[0, 1)`;
the kinds on both sides come from the full Riemannian Hessian (:func:`popdyn.models.multi_index_fixedpoints.classify`,
large ``d``, so the sign of :math:`\lambda_\perp` counts too).

References
----------
B. Şimşek, A. Bendjeddou, D. Hsu, AISTATS 2025 (arXiv 2411.08798): abstract, "sharp
threshold"; TL;DR :math:`\beta_c = (p^*-2)/(k+p^*-2)`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings

import numpy as np

from .._validation import check_choice, check_finite_array, check_int, check_real
from ..activations import Activation, get_activation
from ..errors import NumericalError
from .multi_index_fixedpoints import classify, riemannian_hessian
from .multi_index import DEFAULT_DEGREE, MultiIndexProblem, gram

__all__ = [
    "ThresholdResult",
    "EigenvalueCurve",
    "threshold",
    "smallest_eigenvalue_curve",
    "average_overlap",
    "THRESHOLD_METHODS",
]

THRESHOLD_METHODS = ("auto", "exact", "series", "hessian")
#: Sign-scan grid on [0, 1) for the ``series`` route (F is cheap); roots closer together
#: than 1/2000 can be missed -- the ``exact`` route has no such limit.
_SERIES_SCAN = 2001
#: Sign-scan grid for the ``hessian`` route (one eigen-decomposition per point).
_HESSIAN_SCAN = 201
#: Upper end of the scan: G becomes singular at beta = 1.
_BETA_MAX = 1.0 - 1e-9
#: brentq absolute tolerance on beta.
_XTOL = 1e-14
#: The scan starts at -_BELOW so a sign change exactly at beta = 0 is bracketed.
_BELOW = 1e-3
#: Roots in [-_ZERO_SNAP, 0) are rounding of a root at beta = 0.
_ZERO_SNAP = 1e-12
#: Half-width of the probe interval used to classify the average point on either side.
_PROBE = 1e-3


def average_overlap(k: int, beta: float) -> float:
    r""":math:`c_\beta = \sqrt{(1 + (k-1)\beta)/k}`, the overlaps of the average point.

    Examples
    --------
    >>> round(average_overlap(3, 0.28), 6)
    0.72111
    """
    k = check_int("k", k, minimum=1)
    beta = _check_beta(beta, k)
    return math.sqrt((1.0 + (k - 1) * beta) / k)


def _check_beta(beta, k: int, name: str = "beta") -> float:
    beta = check_real(name, beta)
    lo = -1.0 / (k - 1) if k > 1 else -math.inf
    if not (lo < beta < 1.0):
        raise ValueError(f"`{name}` must lie in (-1/(k-1), 1) = ({lo:.6g}, 1) for k = {k}, got {beta}.")
    return beta


def _check_a_star(a_star, k: int) -> float:
    if a_star is None:
        return 1.0
    if isinstance(a_star, numbers.Real) and not isinstance(a_star, bool):
        a = check_real("a_star", a_star)
    else:
        arr = check_finite_array("a_star", a_star, ndim=1, shape=(k,))
        if not np.all(arr == arr[0]):
            raise ValueError(
                f"`a_star` must be one number (or k equal numbers): with unequal weights {arr.tolist()} "
                "the average point is not a fixed point."
            )
        a = float(arr[0])
    if a == 0.0:
        raise ValueError("`a_star` must be non-zero (a_star = 0 makes the loss constant).")
    return a


def _activation(name: str, spec) -> Activation:
    if isinstance(spec, (list, tuple)):
        raise TypeError(
            f"`{name}` must be one activation (the same for every index; the threshold needs the "
            f"symmetric equiangular problem), got a sequence {spec!r}."
        )
    return get_activation(spec)


@dataclasses.dataclass(frozen=True, eq=False)
class ThresholdResult:
    r"""Result of :func:`threshold`.

    Parameters
    ----------
    beta_c, kind_below, kind_above, exact, method, bracket, roots, error_estimate, k, student, teacher, degree, message
        The fields, in this order (see Attributes).

    Attributes
    ----------
    beta_c : float or None
        First sign change of :math:`\lambda_\parallel` in :math:`[0, 1)`, ``None`` if
        there is none (and for ``k = 1``, where :math:`\beta` is meaningless).
    kind_below, kind_above : str
        Kind of the average point just below / above :math:`\beta_c` (probe at
        :math:`\beta_c \mp 10^{-3}`, or half the distance to the next root; "below" may be
        a negative :math:`\beta` when :math:`\beta_c = 0`).  Without a transition both
        are the kind at :math:`\beta = 0`.
    exact : sympy expression or None
        Exact algebraic value (``exact`` route only).
    method : str
        Route actually used: ``"exact"``, ``"series"``, ``"hessian"`` or ``"none"`` (k = 1).
    bracket : tuple of float or None
        Interval known to contain :math:`\beta_c`: the scan bracket (numeric routes) or
        the two floats adjacent to the exact value (``exact``).
    roots : tuple of float
        All sign changes found in :math:`[0, 1)` (several trigger a warning).
    error_estimate : float or None
        Estimated absolute error of ``beta_c``: 0 for ``exact``; the brentq tolerance for
        polynomial activations; :math:`|\beta_c(n) - \beta_c(2n)|` (Hermite truncation at
        degree ``n`` vs ``2n``) for non-polynomial ones.
    k : int
    student, teacher : str
        Canonical activation names.
    degree : int
        Hermite truncation degree used.
    message : str
    """

    beta_c: float | None
    kind_below: str
    kind_above: str
    exact: object
    method: str
    bracket: tuple | None
    roots: tuple
    error_estimate: float | None
    k: int
    student: str
    teacher: str
    degree: int
    message: str

    def as_dict(self) -> dict:
        """JSON-friendly dict (``exact`` as a string)."""
        return {
            "beta_c": self.beta_c, "kind_below": self.kind_below, "kind_above": self.kind_above,
            "exact": None if self.exact is None else str(self.exact), "method": self.method,
            "bracket": None if self.bracket is None else list(self.bracket), "roots": list(self.roots),
            "error_estimate": self.error_estimate, "k": self.k, "student": self.student,
            "teacher": self.teacher, "degree": self.degree, "message": self.message,
        }


@dataclasses.dataclass(frozen=True, eq=False)
class EigenvalueCurve:
    r"""Riemannian-Hessian eigenvalues at the average point along a :math:`\beta` grid.

    Attributes
    ----------
    beta : ndarray, shape (n,)
    smallest : ndarray, shape (n,)
        Smallest in-span tangent eigenvalue (:math:`\lambda_\parallel`, multiplicity k-1).
    largest : ndarray, shape (n,)
        Largest in-span tangent eigenvalue (equal to ``smallest`` by symmetry; kept as a check).
    outside : ndarray, shape (n,)
        :math:`\lambda_\perp = u^\top g(u)` (directions orthogonal to span V).
    """

    beta: np.ndarray
    smallest: np.ndarray
    largest: np.ndarray
    outside: np.ndarray

    def as_dict(self) -> dict:
        """JSON-friendly dict of lists."""
        return {key: getattr(self, key).tolist() for key in ("beta", "smallest", "largest", "outside")}


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------
def _problem(student, teacher, k, beta, a, degree) -> MultiIndexProblem:
    return MultiIndexProblem(student, teacher, gram("equiangular", k, beta=beta), a_star=np.full(k, a),
                             degree=degree)


def _hessian_eigs(student, teacher, k, beta, a, degree):
    """(smallest, largest) in-span tangent eigenvalue and lambda_perp at the average point."""
    prob = _problem(student, teacher, k, beta, a, degree)
    c = math.sqrt((1.0 + (k - 1) * beta) / k)
    H = riemannian_hessian(prob, np.full(k, c))
    r = k
    w = H.w[:r]
    # orthonormal basis of the in-span tangent space w^perp within R^r
    Q, _ = np.linalg.qr(np.column_stack([w, np.eye(r)]))
    T = Q[:, 1:r]
    lam = np.linalg.eigvalsh(T.T @ H.matrix[:r, :r] @ T)
    return float(lam[0]), float(lam[-1]), H.outside_eigenvalue


def _F(gamma: np.ndarray, k: int, beta):
    r""":math:`F(\beta) = \sum_m m\gamma_m c_\beta^m[(k+m-2)\beta-(m-2)]` (vectorised in beta)."""
    beta = np.asarray(beta, dtype=float)
    c = np.sqrt((1.0 + (k - 1) * beta) / k)
    m = np.arange(gamma.size, dtype=float)
    terms = m * gamma * c[..., None] ** m * ((k + m - 2) * beta[..., None] - (m - 2))
    return terms.sum(axis=-1)


def _scan_roots(f, grid, vals):
    """Sign changes of ``f`` (values ``vals`` on ``grid``; exact zeros at grid points
    included), refined by brentq."""
    from scipy.optimize import brentq

    roots, brackets = [], []
    for i in range(len(grid)):
        if vals[i] == 0.0 and (i == 0 or vals[i - 1] != 0.0):
            lo_s = np.sign(vals[i - 1]) if i > 0 else None
            hi_s = np.sign(vals[i + 1]) if i + 1 < len(grid) else None
            if lo_s is None or hi_s is None or lo_s != hi_s:
                roots.append(float(grid[i]))
                brackets.append((float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])))
        elif i + 1 < len(grid) and vals[i] * vals[i + 1] < 0:
            roots.append(float(brentq(f, grid[i], grid[i + 1], xtol=_XTOL, rtol=4 * np.finfo(float).eps)))
            brackets.append((float(grid[i]), float(grid[i + 1])))
    return roots, brackets


def _gamma(student: Activation, teacher: Activation, a: float, degree: int) -> np.ndarray:
    return a * student.coefficients(degree) * teacher.coefficients(degree)


def _exact_roots(student: Activation, teacher: Activation, k: int):
    """Exact roots of F in [0, 1) for polynomial activations, or None when not representable.

    Returns a list of (sympy beta, float beta, isolating interval).
    """
    import sympy as sp

    n = max(student.degree, teacher.degree)
    cs, ct = student.exact_coefficients(n), teacher.exact_coefficients(n)
    # exact coefficients are sympy numbers or ints, never text
    gam = [sp.nsimplify(sp.sympify(cs[m]) * sp.sympify(ct[m])) for m in range(n + 1)]  # safe: numbers only
    nz = [m for m in range(1, n + 1) if gam[m] != 0]
    if not nz:
        return None
    lead = gam[nz[0]]
    ratios = [sp.radsimp(gam[m] / lead) for m in range(n + 1)]
    if not all(r.is_rational for r in ratios):
        return None          # e.g. sqrt(6) against 1: minimal-polynomial route not attempted
    s = sp.Symbol("s", positive=True)
    x = sp.Symbol("beta")
    P = sum(m * ratios[m] * s ** m * ((k + m - 2) * (k * s ** 2 - 1) - (m - 2) * (k - 1)) for m in nz)
    P = sp.Poly(sp.cancel(P / s ** nz[0]), s)
    # roots in s = c_beta > 0 with odd multiplicity (sign changes), mapped to beta
    found = []
    for fac, mult in P.sqf_list()[1]:
        if mult % 2 == 0 or fac.degree() < 1:
            continue         # even multiplicity: F touches zero without changing sign
        for rt in sp.real_roots(fac):
            if rt.is_positive:
                bval = sp.N((k * rt ** 2 - 1) / sp.Integer(k - 1), 50)
                if -sp.Float("1e-40") <= bval < 1:
                    found.append(bval)
    if not found:
        return []
    # exact beta: root of the resultant Res_s(P(s), k s^2 - 1 - (k-1) beta), an integer
    # polynomial in beta (its extra roots come from s -> -s and are not matched below)
    Q = sp.Poly(sp.resultant(P.as_expr(), (k - 1) * x + 1 - k * s ** 2, s), x)
    cands = []
    for fac, _ in Q.factor_list()[1]:
        if fac.degree() <= 2:
            cands += [sp.nsimplify(sp.radsimp(q)) for q in sp.solve(fac.as_expr(), x) if q.is_real]
        else:
            cands += [sp.CRootOf(fac.as_expr(), i) for i in range(fac.count_roots())]  # real roots
    out = []
    for bval in found:
        expr = min(cands, key=lambda q: abs(sp.N(q, 50) - bval))
        if abs(sp.N(expr, 50) - bval) > sp.Float("1e-30"):
            return None      # should not happen; fall back to the numeric routes
        val = float(sp.N(expr, 30))
        out.append((expr, val, (math.nextafter(val, -math.inf), math.nextafter(val, math.inf))))
    out.sort(key=lambda t: t[1])
    return out


def _numeric_roots(method, student, teacher, k, a, degree):
    # one grid point below 0 so that a root at beta = 0 (e.g. pure h_2) is bracketed
    if method == "series":
        gamma = _gamma(student, teacher, a, degree)

        def f(b):
            return float(_F(gamma, k, np.array([b]))[0])

        grid = np.r_[-_BELOW, np.linspace(0.0, _BETA_MAX, _SERIES_SCAN)]
        vals = _F(gamma, k, grid)
    else:
        def f(b):
            return _hessian_eigs(student, teacher, k, b, a, degree)[0]

        grid = np.r_[-_BELOW, np.linspace(0.0, _BETA_MAX, _HESSIAN_SCAN)]
        vals = np.array([f(b) for b in grid])
    roots, brackets = _scan_roots(f, grid, vals)
    keep = [i for i, r in enumerate(roots) if r >= -_ZERO_SNAP]
    return [max(roots[i], 0.0) for i in keep], [brackets[i] for i in keep]


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
def smallest_eigenvalue_curve(student, teacher, k: int, betas, *, a_star=None, degree: int | None = None
                              ) -> EigenvalueCurve:
    r"""Smallest in-span tangent eigenvalue of the Riemannian Hessian at the average point.

    Computed from the full Riemannian Hessian (:func:`popdyn.models.multi_index_fixedpoints.riemannian_hessian`)
    of the equiangular problem at each :math:`\beta`, not from the closed form; compare
    with :math:`\lambda_\parallel = k c\phi'(c) - (1-\beta)\phi''(c)`.

    Parameters
    ----------
    student, teacher : str or Activation
    k : int
        Number of index vectors, ``>= 2`` (``k = 1`` has no in-span tangent direction).
    betas : array_like, shape (n,)
        Values in :math:`(-1/(k-1), 1)`.
    a_star : float, optional
        Common teacher weight (default 1).
    degree : int, optional
        Hermite truncation degree (non-polynomial activations; default 60).

    Returns
    -------
    EigenvalueCurve

    Examples
    --------
    Reference values of theory/simsek2025/equations.md, "Equiangular index vectors"
    (:math:`p = k = 3`):

    >>> cur = smallest_eigenvalue_curve("he3", "he3", 3, [0.22, 0.28])
    >>> np.round(cur.smallest, 6), np.round(cur.outside, 6)
    (array([-0.249415,  0.2596  ]), array([2.992984, 3.374796]))
    """
    student, teacher = _activation("student", student), _activation("teacher", teacher)
    k = check_int("k", k, minimum=2)
    a = _check_a_star(a_star, k)
    betas = check_finite_array("betas", betas, ndim=1)
    for i, b in enumerate(betas):
        _check_beta(float(b), k, name=f"betas[{i}]")
    out = np.array([_hessian_eigs(student, teacher, k, float(b), a, degree) for b in betas]).reshape(-1, 3)
    return EigenvalueCurve(beta=betas.copy(), smallest=out[:, 0], largest=out[:, 1], outside=out[:, 2])


def threshold(student, teacher, k: int, *, method: str = "auto", a_star=None, degree: int | None = None
              ) -> ThresholdResult:
    r"""Critical angle :math:`\beta_c` where the average point changes kind.

    Parameters
    ----------
    student, teacher : str or Activation
        One activation pair, the same for every index vector.
    k : int
        Number of index vectors, ``>= 1``.  For ``k = 1`` there is no :math:`\beta`
        (G = [1]) and no transition: ``beta_c`` is ``None``, ``method`` ``"none"`` and
        both kinds are the kind of :math:`w = v_1`.
    method : {"auto", "exact", "series", "hessian"}
        * ``exact``: polynomial activations with rationally related coefficients
          :math:`\gamma_m/\gamma_{p^*}`; roots of :math:`F` as algebraic numbers (sympy).
        * ``series``: sign scan of :math:`F(\beta)` (2001 points on :math:`[0, 1)`) + brentq.
        * ``hessian``: sign scan (201 points) + brentq of the smallest in-span eigenvalue
          of the numerically assembled Riemannian Hessian at the average point.  Works for
          any activation pair.
        * ``auto``: ``exact`` when possible, else ``hessian``.
    a_star : float, optional
        Common teacher weight (default 1).  Its sign flips the kinds, not :math:`\beta_c`.
    degree : int, optional
        Hermite truncation degree for non-polynomial activations (default 60; polynomial
        activations always use at least their own degree).

    Returns
    -------
    ThresholdResult

    Raises
    ------
    ValueError
        Bad ``k``/``method``/``a_star``; ``method="exact"`` not applicable; a loss with no
        Hermite overlap of degree ``>= 1``.
    NumericalError
        If the Hessian does not confirm the sign change found.

    Warns
    -----
    UserWarning
        If several sign changes are found (``beta_c`` is the first).

    Notes
    -----
    Accuracy: ``exact`` is exact; ``series``/``hessian`` on polynomials are limited by
    brentq (``1e-14``) and scan resolution (roots closer than the grid step may be
    missed).  For non-polynomial activations :math:`\phi', \phi''` are Hermite series
    truncated at ``degree``; the neglected terms :math:`\sum_{m>n} m^2|\gamma_m|
    c_\beta^{m}` decay geometrically for :math:`\beta < 1` but slowly as
    :math:`\beta \to 1`; ``error_estimate`` is :math:`|\beta_c(n) - \beta_c(2n)|`.

    Examples
    --------
    >>> threshold("he3", "he3", 3).beta_c
    0.25
    >>> res = threshold("hermite:0,0,0,1,1", "hermite:0,0,0,1,1", 3)
    >>> res.exact, round(res.beta_c, 12)
    (CRootOf(800*beta**3 - 672*beta**2 + 24*beta + 37, 1), 0.333097973437)
    """
    student, teacher = _activation("student", student), _activation("teacher", teacher)
    k = check_int("k", k, minimum=1)
    method = check_choice("method", method, THRESHOLD_METHODS)
    a = _check_a_star(a_star, k)
    poly = student.is_polynomial and teacher.is_polynomial
    if degree is not None:
        degree = check_int("degree", degree, minimum=1)
    if poly:   # exact at their own degree; a smaller `degree` would truncate them
        degree = max(student.degree, teacher.degree, 1, degree or 0)
    elif degree is None:
        degree = DEFAULT_DEGREE
    gamma = _gamma(student, teacher, a, degree)
    if not np.any(gamma[1:]):
        raise ValueError(
            f"`student` {student.name!r} and `teacher` {teacher.name!r} share no Hermite degree >= 1: "
            "the correlation loss is constant and there is no threshold."
        )
    names = dict(k=k, student=student.name, teacher=teacher.name, degree=degree)
    if k == 1:
        fp = classify(_problem(student, teacher, 1, 0.0, a, degree), np.ones(1))
        return ThresholdResult(
            beta_c=None, kind_below=fp.kind, kind_above=fp.kind, exact=None, method="none", bracket=None,
            roots=(), error_estimate=None, message="k = 1: a single index vector, beta is meaningless; "
            f"w = v_1 is a {fp.kind}.", **names)

    exact_roots = None
    if method in ("auto", "exact"):
        if poly:
            exact_roots = _exact_roots(student, teacher, k)
        if exact_roots is None and method == "exact":
            raise ValueError(
                "`method`='exact' needs polynomial activations whose coefficient products "
                f"gamma_m are rational multiples of each other; got {student.name!r}/{teacher.name!r}. "
                "Use method='series' or 'hessian'."
            )
        used = "exact" if exact_roots is not None else "hessian"
    else:
        used = method

    if used == "exact":
        roots = [t[1] for t in exact_roots]
        brackets = [t[2] for t in exact_roots]
        exprs = [t[0] for t in exact_roots]
        err = 0.0
    else:
        roots, brackets = _numeric_roots(used, student, teacher, k, a, degree)
        exprs = [None] * len(roots)
        err = _XTOL
        if not poly and roots:
            roots2, _ = _numeric_roots(used, student, teacher, k, a, 2 * degree)
            if len(roots2) == len(roots):
                err = max(err, max(abs(x - y) for x, y in zip(roots, roots2)))
            else:
                warnings.warn(
                    f"The number of sign changes differs at Hermite degree {degree} ({len(roots)}) and "
                    f"{2 * degree} ({len(roots2)}); raise `degree`.", stacklevel=2)
                err = math.inf

    if len(roots) > 1:
        warnings.warn(
            f"lambda_par changes sign {len(roots)} times on [0, 1) at beta = "
            f"{', '.join(f'{r:.10g}' for r in roots)}; beta_c is the first.", stacklevel=2)

    if not roots:
        fp = classify(_problem(student, teacher, k, 0.0, a, degree), np.full(k, average_overlap(k, 0.0)))
        return ThresholdResult(
            beta_c=None, kind_below=fp.kind, kind_above=fp.kind, exact=None, method=used, bracket=None,
            roots=(), error_estimate=None,
            message=f"No sign change of lambda_par on [0, 1): the average point is a {fp.kind} "
                    "for every beta in [0, 1).", **names)

    bc = roots[0]
    lo_edge = -1.0 / (k - 1)
    hi_edge = roots[1] if len(roots) > 1 else 1.0
    delta = min(_PROBE, 0.5 * (bc - lo_edge), 0.5 * (hi_edge - bc))
    kinds = []
    lam_side = []
    for b in (bc - delta, bc + delta):
        prob = _problem(student, teacher, k, b, a, degree)
        kinds.append(classify(prob, np.full(k, average_overlap(k, b))).kind)
        lam_side.append(_hessian_eigs(student, teacher, k, b, a, degree)[0])
    if not lam_side[0] * lam_side[1] < 0:
        raise NumericalError(
            f"The Riemannian Hessian does not confirm the sign change at beta_c = {bc:.12g}: smallest in-span "
            f"eigenvalue {lam_side[0]:.3g} at beta_c - {delta:g} and {lam_side[1]:.3g} at beta_c + {delta:g}. "
            "Try method='hessian' or a larger `degree`.")
    msg = (f"beta_c = {bc:.12g} ({used}): the average point is a {kinds[0]} below and a {kinds[1]} above "
           f"(k = {k}, {student.name} / {teacher.name}).")
    return ThresholdResult(
        beta_c=float(bc), kind_below=kinds[0], kind_above=kinds[1], exact=exprs[0], method=used,
        bracket=tuple(brackets[0]), roots=tuple(float(r) for r in roots), error_estimate=float(err),
        message=msg, **names)
