r"""Fixed points of the spherical correlation-loss flow and their classification.

Model (arXiv 2411.08798, see :mod:`popdyn.models.multi_index`): one neuron
:math:`w \in S^{d-1}`, index vectors :math:`v_j` (rows of ``V``), overlaps
:math:`u = V w`, Gram :math:`G = V V^\top` and loss

.. math::

    \ell(w) = -\sum_{j=1}^k \phi_j(v_j\cdot w), \qquad
    \nabla\ell = -V^\top g(u), \qquad
    \nabla^2\ell = -V^\top \operatorname{diag}(\phi''(u))\, V,

with :math:`g_j = \phi_j'`.  Critical points of :math:`\ell` on the sphere are the fixed
points of :math:`\dot w = -(I - ww^\top)\nabla\ell`, equivalently of
:math:`\dot u = G g(u) - u\,(u^\top g(u))`.

Reduced coordinates
-------------------
Everything is computed in an orthonormal basis of :math:`\operatorname{span}(V)`
(:math:`r = \operatorname{rank} G` coordinates ``y``) plus **one** outside direction
:math:`e_\perp` (coordinate :math:`\rho \ge 0`), so ``w_coords = (y, rho)`` with
:math:`|y|^2 + \rho^2 = 1` and :math:`u = L y`, where ``L`` (``k x r``, rows = the
:math:`v_j` in that basis, :math:`L L^\top = G`) is :func:`span_coordinates`.  The
remaining :math:`d - r - 1` outside directions are all equivalent: on them the
Riemannian Hessian acts as the scalar

.. math::

    \lambda_\perp = -(w\cdot\nabla\ell) = u^\top g(u),

so they are reported as one eigenvalue with a multiplicity that depends on ``d``
(``None`` with label ``"d-r"``/``"d-r-1"`` in the default "large d" mode).

Riemannian Hessian (theory/CONVENTIONS.md)
------------------------------------------
.. math::

    \operatorname{Hess}\ell(w) = P\,\nabla^2\ell\,P - (w\cdot\nabla\ell)\,P,
    \qquad P = I - w w^\top,

restricted to the tangent space :math:`w^\perp`.  Its quadratic form equals
:math:`\frac{d^2}{dt^2}\ell(w\cos t + z\sin t)|_{t=0}` for unit tangent ``z`` (checked by
finite differences in the tests).

Classification (tolerance ``eig_tol``, relative to the largest eigenvalue magnitude,
floor 1 -- i.e. an eigenvalue is "zero" when :math:`|\lambda| \le` ``eig_tol`` :math:`\cdot
\max(1, \max|\lambda|)`):

* ``minimum``: all eigenvalues positive; ``maximum``: all negative;
* ``saddle``: at least one negative and one positive eigenvalue (zeros allowed);
* ``degenerate``: some zero eigenvalue and no sign change (second order inconclusive).

The saddle ``index`` is the number of negative eigenvalues counted with multiplicity
(``None`` when a negative eigenvalue has a ``d``-dependent multiplicity and ``d`` is not
given).

References
----------
B. Şimşek, A. Bendjeddou, D. Hsu, "Learning Gaussian Multi-Index Models with Gradient
Flow: Time Complexity and Directional Convergence", AISTATS 2025 (arXiv 2411.08798).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from .._random import as_generator, seed_record
from .._validation import check_finite_array, check_int, check_real
from ..errors import NumericalError
from .multi_index import MultiIndexProblem

__all__ = [
    "FixedPoint",
    "FixedPointSet",
    "RiemannianHessian",
    "fixed_points",
    "classify",
    "riemannian_hessian",
    "span_coordinates",
    "KINDS",
    "RESIDUAL_TOL",
    "EIG_TOL",
    "DEDUP_TOL",
    "DEGENERATE_MERGE_TOL",
]

#: Classification labels.
KINDS = ("minimum", "saddle", "maximum", "degenerate")
#: Largest Riemannian-gradient norm of an accepted fixed point.  Newton polishing
#: reaches ~1e-15 on non-degenerate points; 1e-10 leaves room for O(1)-scaled losses.
RESIDUAL_TOL = 1e-10
#: Relative threshold below which a Hessian eigenvalue counts as zero (and two
#: eigenvalues as equal).  Eigenvalues of a polished point are accurate to ~1e-13 times
#: the Hessian scale; 1e-8 separates rounding from genuinely small curvature.
EIG_TOL = 1e-8
#: Two fixed points whose reduced coordinates ``w_coords`` differ by less than this
#: (Euclidean norm) are the same point.  Non-degenerate points are polished to ~1e-14.
DEDUP_TOL = 1e-7
#: Degenerate critical points (a zero Hessian eigenvalue) can only be located to
#: ~(rounding of the gradient)^(1/(q-1)) for a q-th order zero, e.g. ~1e-5 for a quartic
#: one, so candidates with a zero eigenvalue are merged within this distance when their
#: losses agree to ``_LOSS_TOL`` (relative).
DEGENERATE_MERGE_TOL = 1e-3
_LOSS_TOL = 1e-9
#: Newton stops once its step (estimated distance to the critical point) is below this.
_STEP_TOL = 1e-13
#: Newton iterations (degenerate points converge only linearly, e.g. the equator for
#: an information exponent >= 3, so allow many).
_NEWTON_MAXITER = 200
#: Largest Newton step (radians); keeps a far-from-critical start from jumping wildly.
_NEWTON_MAXSTEP = 0.5
#: An outside norm rho below this is rounding (|y|^2 = 1 - 1e-16 gives rho = 1e-8) and is
#: set to 0 when ``w`` is rebuilt from ``u``.
_RHO_SNAP = 1e-6
#: Coordinates below this are rounding and shown as 0 (avoids "-0.0000" in tables).
_TINY = 1e-15
#: Rank threshold on the eigenvalues of G (G has a unit diagonal, so lambda_max >= 1).
_RANK_TOL = 1e-10


# --------------------------------------------------------------------------------------
# coordinates
# --------------------------------------------------------------------------------------
def span_coordinates(G) -> np.ndarray:
    r"""Coordinates ``L`` (``k x r``) of the index vectors in an orthonormal basis of span(V).

    For invertible ``G`` this is the Cholesky factor (lower triangular, :math:`L L^\top =
    G`), i.e. the basis is Gram--Schmidt applied to :math:`v_1, \dots, v_k` in order, so
    orthogonal index vectors get ``L = I``.  For singular ``G`` (rank ``r < k``) it is
    :math:`L = U_+ \Lambda_+^{1/2}` from the eigendecomposition (eigenvalues above 1e-10,
    decreasing, eigenvector signs fixed so the largest-magnitude entry is positive).

    Examples
    --------
    >>> span_coordinates([[1.0, 0.5], [0.5, 1.0]])
    array([[1.       , 0.       ],
           [0.5      , 0.8660254]])
    """
    G = check_finite_array("G", G, ndim=2)
    G = 0.5 * (G + G.T)
    lam, U = np.linalg.eigh(G)
    if lam[0] > _RANK_TOL:
        return np.linalg.cholesky(G)
    order = np.argsort(lam)[::-1]
    lam, U = lam[order], U[:, order]
    keep = lam > _RANK_TOL
    lam, U = lam[keep], U[:, keep]
    idx = np.argmax(np.abs(U), axis=0)
    U = U * np.sign(U[idx, np.arange(U.shape[1])])
    L = U * np.sqrt(lam)
    L[np.abs(L) < 1e-15] = 0.0
    return L + 0.0


def _reduced_vectors(problem: MultiIndexProblem, d: int | None) -> tuple[np.ndarray, int, int]:
    """Index vectors in reduced coordinates ``(k, m)``, with ``m = r + 1`` unless ``d == r``."""
    L = span_coordinates(problem.G)
    r = L.shape[1]
    if d is not None and d < r:
        raise ValueError(f"`d` must be at least rank(G) = {r}, got {d}.")
    if d is not None and d == r:
        return L, r, r
    return np.hstack([L, np.zeros((L.shape[0], 1))]), r, r + 1


def _tangent_basis(w: np.ndarray) -> np.ndarray:
    """Orthonormal bases of :math:`w^\\perp`, shape ``(..., m, m-1)`` (Householder, batched)."""
    m = w.shape[-1]
    s = np.where(w[..., :1] >= 0, 1.0, -1.0)
    a = w.copy()
    a[..., :1] += s
    H = np.eye(m) - 2.0 * a[..., :, None] * a[..., None, :] / np.sum(a * a, axis=-1)[..., None, None]
    return H[..., :, 1:]


def _grad_hess(problem: MultiIndexProblem, V: np.ndarray, w: np.ndarray):
    """Riemannian gradient ``(..., m)``, Riemannian Hessian ``(..., m, m)`` and ``u``."""
    u = w @ V.T
    gu = problem.g(u)
    dgu = problem.dg(u)
    egrad = -gu @ V                                        # grad l = -V^T g(u)
    ehess = -np.einsum("ki,...k,kj->...ij", V, dgu, V)     # hess l = -V^T diag(phi'') V
    wg = np.sum(w * egrad, axis=-1)                        # w . grad l = -u . g(u)
    rgrad = egrad - w * wg[..., None]
    m = w.shape[-1]
    P = np.eye(m) - w[..., :, None] * w[..., None, :]
    H = P @ ehess @ P - wg[..., None, None] * P
    return rgrad, 0.5 * (H + np.swapaxes(H, -1, -2)), u


@dataclasses.dataclass(frozen=True)
class RiemannianHessian:
    r"""Riemannian Hessian of :math:`\ell` at one point, in given ambient coordinates.

    Attributes
    ----------
    matrix : ndarray, shape (m, m)
        :math:`P\nabla^2\ell P - (w\cdot\nabla\ell)P` (zero on the normal direction ``w``).
    w : ndarray, shape (m,)
        The point (unit vector) in the same coordinates.
    V : ndarray, shape (k, m)
        Index vectors in the same coordinates.
    gradient : ndarray, shape (m,)
        Riemannian gradient :math:`P\nabla\ell` (zero at a fixed point).
    outside_eigenvalue : float
        :math:`u^\top g(u)`, the eigenvalue on every tangent direction orthogonal to span(V).
    """

    matrix: np.ndarray
    w: np.ndarray
    V: np.ndarray
    gradient: np.ndarray
    outside_eigenvalue: float

    def tangent_basis(self) -> np.ndarray:
        """An orthonormal basis of the tangent space :math:`w^\\perp`, shape ``(m, m-1)``."""
        return _tangent_basis(self.w)

    def tangent_eigenvalues(self) -> np.ndarray:
        """The ``m - 1`` eigenvalues on the tangent space, ascending."""
        T = self.tangent_basis()
        return np.linalg.eigvalsh(T.T @ self.matrix @ T)


def _w_from_u(problem: MultiIndexProblem, u, L: np.ndarray, m: int, *, name: str = "u") -> np.ndarray:
    """Reduced coordinates ``(y, rho)`` of a unit ``w`` with ``V w = u`` (rho >= 0)."""
    k = problem.k
    u = check_finite_array(name, u, ndim=1, shape=(k,))
    y, *_ = np.linalg.lstsq(L, u, rcond=None)
    if np.linalg.norm(L @ y - u) > 1e-9 * max(1.0, np.linalg.norm(u)):
        raise ValueError(
            f"`{name}` = {u.tolist()} is not an overlap vector V w: it is not in the range of G "
            f"(distance {np.linalg.norm(L @ y - u):.3g})."
        )
    ny2 = float(y @ y)
    if ny2 > 1.0 + 1e-10:
        raise ValueError(
            f"`{name}` is not the overlap vector of a unit w: u^T G^+ u = {ny2:.12g} > 1."
        )
    y = y / max(1.0, math.sqrt(ny2))
    rho = math.sqrt(max(0.0, 1.0 - float(y @ y)))
    if rho < _RHO_SNAP:  # rounding of |y|^2 ~ 1e-16 would fake rho ~ 1e-8
        rho = 0.0
        y = y / np.linalg.norm(y)
    if m == L.shape[1]:
        if rho > 1e-7:
            raise ValueError(
                f"`{name}` has a component outside span(V) (u^T G^+ u = {ny2:.12g} < 1) but `d` = rank(G)."
            )
        return y / np.linalg.norm(y)
    return np.append(y, rho)


def riemannian_hessian(problem: MultiIndexProblem, u, *, V=None, outside=None) -> RiemannianHessian:
    r"""Riemannian Hessian of the correlation loss at the point with overlaps ``u``.

    .. math::

        \operatorname{Hess}\ell(w) = P\,\nabla^2\ell(w)\,P - (w\cdot\nabla\ell(w))\,P,
        \quad P = I - ww^\top,\quad \nabla\ell = -V^\top g(u),\quad
        \nabla^2\ell = -V^\top\operatorname{diag}(\phi''(u))V .

    Parameters
    ----------
    problem : MultiIndexProblem
        Supplies :math:`g = \phi'`, :math:`\phi''` (truncated Hermite series for
        non-polynomial activations, see the problem's ``degree``) and ``G``.
    u : array_like, shape (k,)
        Overlaps :math:`u = V w`; must satisfy :math:`u \in \operatorname{range}(G)` and
        :math:`u^\top G^+ u \le 1`.
    V : array_like, shape (k, d), optional
        Index vectors in :math:`\mathbb{R}^d` with :math:`VV^\top = G`.  Without it the
        result is in the reduced coordinates of :func:`span_coordinates` plus one
        outside coordinate (``m = r + 1``).
    outside : array_like, shape (d,), optional
        With ``V``: direction used for the outside part of ``w`` (projected off span(V)
        and normalised); default the first standard basis vector with a non-zero
        projection.

    Returns
    -------
    RiemannianHessian

    Examples
    --------
    >>> from popdyn.models.multi_index import MultiIndexProblem
    >>> import numpy as np
    >>> p = MultiIndexProblem("he4", "he4", np.eye(2))
    >>> H = riemannian_hessian(p, np.array([1.0, 0.0]))
    >>> np.round(H.tangent_eigenvalues(), 12)   # in-span and outside: +p = 4
    array([4., 4.])
    """
    if not isinstance(problem, MultiIndexProblem):
        raise TypeError(f"`problem` must be a MultiIndexProblem, got {type(problem).__name__}.")
    if V is None:
        Vr, r, m = _reduced_vectors(problem, None)
        w = _w_from_u(problem, u, Vr[:, :r], m)
    else:
        Vr = check_finite_array("V", V, ndim=2)
        if Vr.shape[0] != problem.k:
            raise ValueError(f"`V` must have k = {problem.k} rows, got shape {Vr.shape}.")
        if not np.allclose(Vr @ Vr.T, problem.G, atol=1e-9):
            raise ValueError("`V` must satisfy V V^T = problem.G (to 1e-9).")
        u = check_finite_array("u", u, ndim=1, shape=(problem.k,))
        w = _embed(u, Vr, problem.G, outside)
    rgrad, H, uu = _grad_hess(problem, Vr, w)
    lam_out = float(uu @ problem.g(uu))
    return RiemannianHessian(matrix=H, w=w, V=Vr, gradient=rgrad, outside_eigenvalue=lam_out)


def _embed(u: np.ndarray, V: np.ndarray, G: np.ndarray, outside=None) -> np.ndarray:
    """Unit ``w`` in the coordinates of ``V`` with ``V w = u`` (in-span part + outside part)."""
    a, *_ = np.linalg.lstsq(G, u, rcond=None)
    w_par = V.T @ a
    n2 = float(w_par @ w_par)
    if n2 > 1.0 + 1e-10:
        raise ValueError(f"`u` is not the overlap vector of a unit w: u^T G^+ u = {n2:.12g} > 1.")
    rho = math.sqrt(max(0.0, 1.0 - n2))
    if rho < _RHO_SNAP:
        return w_par / math.sqrt(n2)
    d = V.shape[1]
    Q, _ = np.linalg.qr(V.T)  # orthonormal basis of span(V) (first columns)
    Q = Q[:, : np.linalg.matrix_rank(V)]
    cands = [check_finite_array("outside", outside, ndim=1, shape=(d,))] if outside is not None else list(np.eye(d))
    for z in cands:
        z = z - Q @ (Q.T @ z)
        nz = np.linalg.norm(z)
        if nz > 1e-8:
            return w_par + rho * z / nz
    raise ValueError("`outside` has no component orthogonal to span(V) (or d = rank(G)).")


# --------------------------------------------------------------------------------------
# result types
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class FixedPoint:
    r"""A critical point of :math:`\ell` on the sphere with its second-order classification.

    Parameters
    ----------
    u, w_coords, loss, eigenvalues, multiplicities, multiplicity_labels, kind
        The fields, in this order (see Attributes).
    index, origin, seed_distance, residual, outside_eigenvalue, in_span, d
        The remaining fields, in this order (see Attributes).

    Attributes
    ----------
    u : ndarray, shape (k,)
        Overlaps :math:`u_j = v_j\cdot w`.
    w_coords : ndarray, shape (r + 1,) or (r,)
        ``(y, rho)``: coordinates in the orthonormal basis of span(V) of
        :func:`span_coordinates`, then the norm :math:`\rho \ge 0` of the part outside
        span(V) (absent when ``d == rank G``).
    loss : float
        :math:`\ell(w) = -\sum_j \phi_j(u_j)`.
    eigenvalues : ndarray
        Distinct eigenvalues of the Riemannian Hessian on the tangent space, ascending.
    multiplicities : tuple of (int or None)
        Their multiplicities; ``None`` means "depends on d" (large-d mode, ``d`` not
        given), see ``multiplicity_labels``.
    multiplicity_labels : tuple of str
        Multiplicities as text, e.g. ``"2"`` or ``"d-3"``.
    kind : {"minimum", "saddle", "maximum", "degenerate"}
    index : int or None
        Number of negative eigenvalues with multiplicity (``None`` if d-dependent).
    origin : str
        How it was found: ``"seed:+v1-v3"`` (signed symmetric combination, then Newton),
        ``"random:17"`` (random start, root finding, Newton), ``"equator"``, ``"user"``.
    seed_distance : float
        Distance :math:`\|w - w_{seed}\|` between the seed and the polished point (0 for
        exact seeds; large values flag seeds that converged elsewhere).
    residual : float
        Norm of the Riemannian gradient at ``w``.
    outside_eigenvalue : float
        :math:`\lambda_\perp = u^\top g(u)` (eigenvalue of every direction ⊥ span(V), w).
    in_span : bool
        Whether :math:`w \in \operatorname{span}(V)` (``rho == 0``).
    d : int or None
        Ambient dimension used for the multiplicities (``None``: large d).
    """

    u: np.ndarray
    w_coords: np.ndarray
    loss: float
    eigenvalues: np.ndarray
    multiplicities: tuple
    multiplicity_labels: tuple
    kind: str
    index: int | None
    origin: str
    seed_distance: float
    residual: float
    outside_eigenvalue: float
    in_span: bool
    d: int | None

    def embed(self, V, *, outside=None) -> np.ndarray:
        """The point as a unit vector in :math:`\\mathbb{R}^d` for index vectors ``V`` (``k x d``).

        The part outside span(V) (norm ``rho``) points along ``outside`` projected off
        span(V) (default: the first standard basis vector with a non-zero projection);
        every such choice is an equivalent fixed point.
        """
        V = check_finite_array("V", V, ndim=2)
        if V.shape[0] != self.u.shape[0]:
            raise ValueError(f"`V` must have k = {self.u.shape[0]} rows, got shape {V.shape}.")
        return _embed(self.u, V, V @ V.T, outside)

    def spectrum(self) -> str:
        """Eigenvalues with multiplicities as text, e.g. ``"-4 (x1), 2 (xd-2)"``."""
        return ", ".join(f"{lam:.6g} (x{m})" for lam, m in zip(self.eigenvalues, self.multiplicity_labels))

    def as_dict(self) -> dict:
        """JSON-friendly representation."""
        return {
            "u": self.u.tolist(), "w_coords": self.w_coords.tolist(), "loss": self.loss,
            "eigenvalues": self.eigenvalues.tolist(), "multiplicities": list(self.multiplicities),
            "multiplicity_labels": list(self.multiplicity_labels), "kind": self.kind, "index": self.index,
            "origin": self.origin, "seed_distance": self.seed_distance, "residual": self.residual,
            "outside_eigenvalue": self.outside_eigenvalue, "in_span": self.in_span, "d": self.d,
        }


@dataclasses.dataclass(frozen=True, eq=False)
class FixedPointSet(Sequence):
    """The fixed points found by :func:`fixed_points` (a sequence of :class:`FixedPoint`).

    Sorted by loss (lowest first).  ``status`` is ``"ok"``; ``message`` summarises the
    search; ``meta`` holds the tolerances, seeds tried / converged, rank, ``d``, the
    problem description and the rng record.

    Parameters
    ----------
    points : tuple of FixedPoint
        The distinct fixed points, lowest loss first.
    status : str
        ``"ok"``.
    message : str
        Summary of the search.
    meta : dict
        Tolerances, seeds tried / converged, rank, ``d``, problem description, rng record.
    """

    points: tuple
    status: str
    message: str
    meta: dict

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i):
        return self.points[i]

    def by_kind(self, kind: str) -> list:
        """The fixed points of one kind."""
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(map(repr, KINDS))}; got {kind!r}.")
        return [p for p in self.points if p.kind == kind]

    def summary(self) -> str:
        """A plain-text table: kind, index, loss, u, spectrum, residual, origin."""
        rows = [("#", "kind", "index", "loss", "u", "eigenvalues (multiplicity)", "residual", "origin")]
        for i, p in enumerate(self.points):
            rows.append((str(i), p.kind, "-" if p.index is None else str(p.index), f"{p.loss:.8g}",
                         "(" + ", ".join(f"{x:.4f}" for x in p.u) + ")", p.spectrum(),
                         f"{p.residual:.1e}", p.origin))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(s.ljust(wd) for s, wd in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * wd for wd in widths))
        return "\n".join([self.message, *lines])

    def as_dict(self) -> dict:
        """JSON-friendly representation."""
        return {"status": self.status, "message": self.message, "meta": self.meta,
                "points": [p.as_dict() for p in self.points]}


# --------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------
def _classify_w(problem, V, r, m, w, d, eig_tol, origin="user", seed_distance=0.0) -> FixedPoint:
    rgrad, H, u = _grad_hess(problem, V, w)
    lam_out = float(u @ problem.g(u))
    rho = abs(float(w[r])) if m == r + 1 else 0.0
    in_span = rho == 0.0
    if in_span:
        # tangent space = (span tangent, r-1 dims) + outside family (d - r dims, eigenvalue lam_out)
        wy = w[:r]
        T = _tangent_basis(wy)
        Hs = H[:r, :r]
        eigs = list(np.linalg.eigvalsh(T.T @ Hs @ T)) if r > 1 else []
        out_offset = r          # outside multiplicity d - r
    else:
        T = _tangent_basis(w)
        eigs = list(np.linalg.eigvalsh(T.T @ H @ T))
        out_offset = r + 1      # the e_perp direction is in the m-dim block; d - r - 1 remain
    out_mult = None if d is None else d - out_offset
    scale = max(1.0, max((abs(x) for x in eigs), default=0.0), abs(lam_out))
    zero = eig_tol * scale
    groups: list[list] = []       # [value, int multiplicity, symbolic?]
    for lam in sorted(eigs):
        if groups and abs(lam - groups[-1][0]) <= zero:
            groups[-1][1] += 1
        else:
            groups.append([lam, 1, False])
    if out_mult is None or out_mult > 0:
        for gr in groups:
            if abs(gr[0] - lam_out) <= zero:
                if out_mult is None:
                    gr[2] = True
                else:
                    gr[1] += out_mult
                break
        else:
            groups.append([lam_out, 0 if out_mult is None else out_mult, out_mult is None])
            groups.sort(key=lambda g_: g_[0])
    values = np.array([0.0 if abs(g_[0]) <= zero else g_[0] for g_ in groups])
    mults = tuple(None if g_[2] else int(g_[1]) for g_ in groups)
    labels = tuple((f"d-{out_offset - g_[1]}" if g_[1] < out_offset else f"d+{g_[1] - out_offset}")
                   if g_[2] else str(g_[1]) for g_ in groups)
    neg = values < -zero
    pos = values > zero
    if neg.any() and pos.any():
        kind = "saddle"
    elif pos.all():
        kind = "minimum"
    elif neg.all():
        kind = "maximum"
    else:
        kind = "degenerate"
    if any(mults[i] is None for i in np.flatnonzero(neg)):
        index = None
    else:
        index = int(sum(mults[i] for i in np.flatnonzero(neg)))
    wc = w.copy()
    if m == r + 1:
        wc[r] = rho
    wc[np.abs(wc) < _TINY] = 0.0
    u = np.where(np.abs(u) < _TINY, 0.0, u)
    return FixedPoint(
        u=u, w_coords=wc, loss=float(problem.loss(u)) + 0.0, eigenvalues=values, multiplicities=mults,
        multiplicity_labels=labels, kind=kind, index=index, origin=origin,
        seed_distance=float(seed_distance), residual=float(np.linalg.norm(rgrad)),
        outside_eigenvalue=lam_out, in_span=in_span, d=d,
    )


def _check_problem(problem):
    if not isinstance(problem, MultiIndexProblem):
        raise TypeError(f"`problem` must be a MultiIndexProblem, got {type(problem).__name__}.")
    if not np.any(problem.gamma[:, 1:]):
        raise ValueError(
            "The correlation loss is constant on the sphere (student and teacher share no Hermite "
            "degree >= 1): every point is critical."
        )


def classify(problem: MultiIndexProblem, u, *, d: int | None = None, tol: float = RESIDUAL_TOL,
             eig_tol: float = EIG_TOL) -> FixedPoint:
    r"""Classify the fixed point with overlaps ``u`` by its Riemannian Hessian.

    Parameters
    ----------
    problem : MultiIndexProblem
    u : array_like, shape (k,)
        Overlaps of a critical point; the unit ``w`` is reconstructed as the in-span part
        :math:`V^\top G^+ u` plus an outside part of norm
        :math:`\rho = \sqrt{1 - u^\top G^+ u}` (all outside directions are equivalent).
    d : int, optional
        Ambient dimension (``>= rank G``, and ``> rank G`` if ``rho > 0``); default "large
        d": the outside eigenvalue gets multiplicity ``None`` (label ``"d-r"``).
    tol : float
        Largest accepted Riemannian gradient norm (else ``ValueError``: not a fixed point).
    eig_tol : float
        Relative zero threshold for eigenvalues (see the module docstring).

    Returns
    -------
    FixedPoint

    Raises
    ------
    ValueError
        If ``u`` is not an overlap vector of a unit ``w`` or not critical within ``tol``.

    Examples
    --------
    Reference spectrum of theory/simsek2025/equations.md, "Fixed points and Hessian for
    orthogonal index vectors": orthogonal, :math:`g = t^4`, :math:`|S| = 2`:

    >>> import numpy as np
    >>> from popdyn.models.multi_index import MultiIndexProblem
    >>> p = MultiIndexProblem("he4", "he4", np.eye(3))
    >>> fp = classify(p, np.array([1.0, 1.0, 0.0]) / np.sqrt(2))
    >>> fp.kind, fp.index, fp.spectrum()
    ('saddle', 1, '-4 (x1), 2 (xd-2)')
    """
    _check_problem(problem)
    tol = check_real("tol", tol, lower=0.0, lower_open=True)
    eig_tol = check_real("eig_tol", eig_tol, lower=0.0, lower_open=True)
    if d is not None:
        d = check_int("d", d, minimum=1)
    V, r, m = _reduced_vectors(problem, d)
    w = _w_from_u(problem, u, V[:, :r], m)
    fp = _classify_w(problem, V, r, m, w, d, eig_tol)
    if not fp.residual <= tol:
        raise ValueError(
            f"`u` = {np.asarray(u).tolist()} is not a fixed point: Riemannian gradient norm "
            f"{fp.residual:.3g} > tol = {tol:g}.  Use `fixed_points` to locate nearby fixed points."
        )
    return fp


# --------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------
def _newton(problem, V, w0: np.ndarray, *, maxiter: int = _NEWTON_MAXITER):
    """Batched Riemannian Newton on the sphere from ``w0`` (n, m); returns (w, residual, last step)."""
    w = w0 / np.linalg.norm(w0, axis=-1, keepdims=True)
    n = w.shape[0]
    step = np.full(n, np.inf)
    active = np.ones(n, dtype=bool)
    for _ in range(maxiter):
        if not active.any():
            break
        wa = w[active]
        rgrad, H, _ = _grad_hess(problem, V, wa)
        T = _tangent_basis(wa)
        gT = np.einsum("nmi,nm->ni", T, rgrad)
        HT = np.swapaxes(T, -1, -2) @ H @ T
        xi = -np.einsum("nij,nj->ni", np.linalg.pinv(HT, rcond=1e-13, hermitian=True), gT)
        nx = np.linalg.norm(xi, axis=-1)
        xi *= np.minimum(1.0, _NEWTON_MAXSTEP / np.maximum(nx, 1e-300))[:, None]
        wn = wa + np.einsum("nmi,ni->nm", T, xi)
        wn /= np.linalg.norm(wn, axis=-1, keepdims=True)
        if not np.all(np.isfinite(wn)):
            raise NumericalError("Non-finite iterate in the Newton polish of the fixed-point search.")
        idx = np.flatnonzero(active)
        w[idx] = wn
        step[idx] = nx
        active[idx[nx < _STEP_TOL]] = False
    rgrad, _, _ = _grad_hess(problem, V, w)
    return w, np.linalg.norm(rgrad, axis=-1), step


def _root_from(problem, V, w0: np.ndarray) -> np.ndarray:
    """scipy ``root`` (hybr) on the Riemannian gradient in the chart ``w0 + T x`` (normalised)."""
    from scipy.optimize import root

    T = _tangent_basis(w0)

    def chart(x):
        w = w0 + T @ x
        return w / np.linalg.norm(w)

    def F(x):
        rgrad, _, _ = _grad_hess(problem, V, chart(x))
        return T.T @ rgrad

    sol = root(F, np.zeros(T.shape[1]), method="hybr", options={"xtol": 1e-13})
    return chart(sol.x)


def _seed_points(k: int, L: np.ndarray, m: int, max_subset_size: int):
    """Signed symmetric combinations :math:`\\sum_{j\\in S}\\epsilon_j v_j` (normalised)."""
    pts, names = [], []
    r = L.shape[1]
    for s in range(1, max_subset_size + 1):
        for S in itertools.combinations(range(k), s):
            for eps in itertools.product((1.0, -1.0), repeat=s):
                y = np.asarray(eps) @ L[list(S)]
                ny = np.linalg.norm(y)
                if ny < 1e-8:       # linearly dependent subset: the combination vanishes
                    continue
                w = np.zeros(m)
                w[:r] = y / ny
                pts.append(w)
                names.append("seed:" + "".join(f"{'+' if e > 0 else '-'}v{j + 1}" for e, j in zip(eps, S)))
    return np.array(pts).reshape(-1, m), names


def fixed_points(problem: MultiIndexProblem, *, n_random: int = 200, rng=None, d: int | None = None,
                 tol: float = RESIDUAL_TOL, eig_tol: float = EIG_TOL, dedup_tol: float = DEDUP_TOL,
                 max_subset_size: int | None = None) -> FixedPointSet:
    r"""Find and classify the fixed points of the spherical correlation-loss flow.

    Candidates, each polished by batched Riemannian Newton (pseudo-inverse of the tangent
    Hessian, step capped at 0.5 rad, up to 200 iterations or a step below 1e-13) and kept
    when the Riemannian gradient norm is ``<= tol``:

    1. the **equator** (:math:`w \perp \operatorname{span} V`, a whole sphere of
       critical points) when it is critical, i.e. :math:`L^\top g(0) = 0` (for
       invertible ``G``: :math:`g(0) = 0`, no :math:`h_1` overlap) and ``d > rank G``;
    2. **seeds**: every signed symmetric combination
       :math:`w \propto \sum_{j\in S}\epsilon_j v_j` over subsets with
       :math:`1 \le |S| \le` ``max_subset_size`` (single directions :math:`\pm v_j`
       included; :math:`3^k - 1` seeds when all subsets are used).  For orthogonal ``G``
       and :math:`\phi_j = t^p` those with admissible signs are exact fixed points
       (arXiv 2411.08798; theory/simsek2025/equations.md); for non-orthogonal ``G`` they are only starting points and may
       converge elsewhere -- each result records its seed (``origin``) and the distance
       travelled (``seed_distance``).  Seeds where Newton fails are retried with
       ``scipy.optimize.root``;
    3. ``n_random`` **random starts** uniform on the reduced sphere
       :math:`S^{m-1}` (span coordinates plus one outside coordinate), solved with
       ``scipy.optimize.root`` (``hybr``) on the Riemannian gradient in a local chart,
       then Newton-polished.

    Points whose ``w_coords`` (outside coordinate folded to :math:`\rho \ge 0`) agree to
    ``dedup_tol`` are merged, keeping the equator or seed origin if any, else the random
    start closest to the point.  Degenerate points (a zero Hessian eigenvalue) converge
    only linearly and are located only to ~1e-5 (quartic degeneracy; the gradient is
    rounding-dominated closer in), so a point with a zero eigenvalue is also merged with
    any point within ``DEGENERATE_MERGE_TOL`` = 1e-3 whose loss agrees to 1e-9.

    Parameters
    ----------
    problem : MultiIndexProblem
    n_random : int
        Number of random starts (``>= 0``).
    rng : int, Generator or None
        Seed for the random starts.
    d : int, optional
        Ambient dimension for the multiplicities (default: large ``d``, see
        :func:`classify`).
    tol, eig_tol, dedup_tol : float
        Residual, eigenvalue-zero (relative) and deduplication tolerances.
    max_subset_size : int, optional
        Largest :math:`|S|` of the seeds (default ``k``).

    Returns
    -------
    FixedPointSet
        Sorted by loss; ``meta`` records the counts of seeds/starts tried and accepted.

    Notes
    -----
    Completeness is not guaranteed for non-orthogonal ``G``: random root finding finds
    critical points with basins of attraction of reasonable size; use more
    ``n_random`` to gain confidence.  Critical manifolds other than the equator (which
    occur only in degenerate situations, e.g. :math:`g` vanishing on a set) are
    reported as their points found.  Cost: :math:`O(3^k)` seeds, each a ``(r+1)``-
    dimensional Newton solve (vectorised).

    Examples
    --------
    >>> import numpy as np
    >>> from popdyn.models.multi_index import MultiIndexProblem
    >>> fps = fixed_points(MultiIndexProblem("he3", "he3", np.eye(2)), n_random=10, rng=0)
    >>> for p in fps:
    ...     print(f"{p.kind:10s} {p.index!s:4s} {np.round(p.u, 4)} {p.spectrum()}")
    minimum    0    [1. 0.] 3 (xd-1)
    minimum    0    [0. 1.] 3 (xd-1)
    saddle     1    [0.7071 0.7071] -2.12132 (x1), 2.12132 (xd-2)
    degenerate 0    [0. 0.] 0 (xd-1)
    saddle     None [-0.7071 -0.7071] -2.12132 (xd-2), 2.12132 (x1)
    maximum    None [ 0. -1.] -3 (xd-1)
    maximum    None [-1.  0.] -3 (xd-1)
    """
    _check_problem(problem)
    n_random = check_int("n_random", n_random, minimum=0)
    tol = check_real("tol", tol, lower=0.0, lower_open=True)
    eig_tol = check_real("eig_tol", eig_tol, lower=0.0, lower_open=True)
    dedup_tol = check_real("dedup_tol", dedup_tol, lower=0.0, lower_open=True)
    k = problem.k
    max_subset_size = k if max_subset_size is None else check_int("max_subset_size", max_subset_size,
                                                                    minimum=0, maximum=k)
    if d is not None:
        d = check_int("d", d, minimum=1)
    V, r, m = _reduced_vectors(problem, d)
    L = V[:, :r]
    gen = as_generator(rng)

    cand_w, cand_origin, cand_start = [], [], []
    # 1. equator
    equator = False
    if m == r + 1 and np.linalg.norm(L.T @ problem.g(np.zeros(k))) <= tol:
        equator = True
        e = np.zeros(m)
        e[r] = 1.0
        cand_w.append(e[None])
        cand_origin.append("equator")
        cand_start.append(e[None])
    # 2. seeds
    seeds, seed_names = _seed_points(k, L, m, max_subset_size)
    n_seed_ok = 0
    if len(seeds):
        w, res, step = _newton(problem, V, seeds.copy())
        ok = res <= tol
        bad = np.flatnonzero(~ok)
        if bad.size:
            retry = np.array([_root_from(problem, V, seeds[i]) for i in bad])
            w2, res2, step2 = _newton(problem, V, retry)
            w[bad], res[bad], step[bad] = w2, res2, step2
            ok = res <= tol
        n_seed_ok = int(ok.sum())
        cand_w.append(w[ok])
        cand_origin += [seed_names[i] for i in np.flatnonzero(ok)]
        cand_start.append(seeds[ok])
    # 3. random starts
    n_rand_ok = 0
    if n_random:
        starts = gen.standard_normal((n_random, m))
        starts /= np.linalg.norm(starts, axis=1, keepdims=True)
        roots = np.array([_root_from(problem, V, s) for s in starts])
        w, res, step = _newton(problem, V, roots)
        ok = res <= tol
        n_rand_ok = int(ok.sum())
        cand_w.append(w[ok])
        cand_origin += [f"random:{i}" for i in np.flatnonzero(ok)]
        cand_start.append(starts[ok])

    W = np.concatenate(cand_w) if cand_w else np.zeros((0, m))
    S = np.concatenate(cand_start) if cand_start else np.zeros((0, m))
    if m == r + 1:
        flip = W[:, r] < 0
        W[flip, r] *= -1.0
        S[flip, r] *= -1.0
        W[W[:, r] < dedup_tol, r] = 0.0
        W /= np.linalg.norm(W, axis=1, keepdims=True)
    dist = np.linalg.norm(W - S, axis=1)
    # deduplicate: greedy clustering; representatives preferred equator, then seeds, then
    # random starts, each in order of increasing seed distance
    is_random = np.array([o.startswith("random") for o in cand_origin], dtype=bool)
    order = np.lexsort((dist, is_random))
    points = []
    if len(W):
        from scipy.spatial import cKDTree

        tree = cKDTree(W)
        taken = np.zeros(len(W), dtype=bool)
        reps = []
        for i in order:
            if not taken[i]:
                reps.append(int(i))
                taken[tree.query_ball_point(W[i], dedup_tol)] = True
        cands = [_classify_w(problem, V, r, m, W[i], d, eig_tol, origin=cand_origin[i], seed_distance=dist[i])
                 for i in reps]
        # second pass: degenerate points are only located to ~1e-5; merge them generously
        Wr = W[reps]
        tree = cKDTree(Wr)
        degen = [bool(np.any(p.eigenvalues == 0.0)) for p in cands]
        dropped = np.zeros(len(reps), dtype=bool)
        for a, p in enumerate(cands):
            if dropped[a]:
                continue
            points.append(p)
            for b in tree.query_ball_point(Wr[a], DEGENERATE_MERGE_TOL):
                if b > a and not dropped[b] and (degen[a] or degen[b]) and \
                        abs(cands[b].loss - p.loss) <= _LOSS_TOL * max(1.0, abs(p.loss)):
                    dropped[b] = True
    points.sort(key=lambda p: (round(p.loss, 12), tuple(-p.u)))
    kinds = {kd: sum(p.kind == kd for p in points) for kd in KINDS}
    message = (
        f"{len(points)} fixed points ({', '.join(f'{v} {kd}' for kd, v in kinds.items() if v)}) from "
        f"{len(seeds)} symmetric seeds ({n_seed_ok} converged), {n_random} random starts "
        f"({n_rand_ok} converged){' and the equator' if equator else ''}; d = {'large' if d is None else d}."
    )
    meta = {
        "problem": problem.describe(), "rank": r, "d": d, "n_random": n_random, "rng": seed_record(rng),
        "n_seeds": len(seeds), "n_seeds_converged": n_seed_ok, "n_random_converged": n_rand_ok,
        "equator_critical": equator, "tol": tol, "eig_tol": eig_tol, "dedup_tol": dedup_tol,
        "max_subset_size": max_subset_size, "span_coordinates": L.tolist(),
    }
    return FixedPointSet(points=tuple(points), status="ok", message=message, meta=meta)
