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
    the formulas of Saad & Solla 1995 and Biehl & Schwarze 1995 (written out in
    theory/CONVENTIONS.md, "Saad–Solla committee machine"), exact.
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

ReLU closed forms and the quadrature route
------------------------------------------
The closed forms (registry :data:`popdyn.gaussian.CLOSED_FORMS`, including the Stein-lemma
derivation of ReLU's ``I3``) and the quadrature fallback with its accuracy guarantees and
limits of validity live in the foundation module :mod:`popdyn.gaussian`; the names below
are re-exported from there.  Measured on a random K = M = 2 state (``tol = 1e-8``, all
integrals of one ODE right-hand side): erf 0.2 ms (closed forms), all-ReLU ~30 ms (``I4``
by quadrature), ReLU/erf ~0.1 s, polynomials ~4 ms; the tanh ``I4`` exceeds
:data:`MAX_NODES` at the default ``tol``.

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
>>> round(float(i2(C[:2, :2], "erf", "erf")), 12)          # Saad–Solla I2(0,1)
0.16086124651
>>> round(float(i4(C, "erf", "erf", "erf", "erf")), 12)
0.061492408341
"""

from __future__ import annotations

import numpy as np

from .._validation import check_int, check_real
from ..activations import get_activation
from ..gaussian import (  # noqa: F401  (re-exported: public names of this module)
    FALLBACK_TOL,
    MAX_NODES,
    RULE_NODES,
    Factor,
    _as_cov,
    _fine_only,
    closed_form,
    erf_i2,
    erf_i3,
    erf_i4,
    erf_j2,
    gaussian_product_expectation,
    relu_i2,
    relu_i3,
    relu_j2,
)

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

#: Routes reported by :func:`route`.
ROUTES = ("erf", "relu", "polynomial", "quadrature")


def _acts(*specs) -> tuple:
    return tuple(get_activation(s) for s in specs)


def route(kind: str, *acts) -> str:
    """The route (one of :data:`ROUTES`) used for integral ``kind`` with these activations.

    ``kind`` is ``"i2"``, ``"j2"``, ``"i3"`` or ``"i4"``; ``acts`` one activation per
    slot (``i3`` takes two: the derivative slot and the value slot).  A closed form of
    :data:`popdyn.gaussian.CLOSED_FORMS` is reported by its activation's name.

    Examples
    --------
    >>> route("i3", "relu", "relu"), route("i4", "relu", "relu", "relu", "relu")
    ('relu', 'quadrature')
    >>> route("i2", "relu", "erf"), route("i4", "he3", "he3", "he2", "identity")
    ('quadrature', 'polynomial')
    """
    acts = _acts(*acts)
    found = closed_form(kind, *acts)
    if found is not None:
        return found[0]
    if all(a.is_polynomial for a in acts):
        return "polynomial"
    return "quadrature"


# ======================================================================================
# dispatch
# ======================================================================================
def _check_psd_soft(C):
    """Reject clearly non-PSD covariances (beyond rounding)."""
    lam = np.linalg.eigvalsh(C)
    scale = np.maximum(1.0, np.abs(lam).max(axis=-1))
    if np.any(lam[..., 0] < -1e-10 * scale):
        raise ValueError(f"`C` must be positive semidefinite; smallest eigenvalue {float(lam[..., 0].min()):.3g}.")


def _dispatch(kind, C, acts, factors, tol, max_nodes):
    found = closed_form(kind, *acts)
    if found is not None:
        return found[1](C)
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
    return _dispatch("i2", C, (a, b), [Factor.value(a), Factor.value(b)], tol, max_nodes)


def j2(C, sigma_a, sigma_b, *, tol: float = FALLBACK_TOL,
       max_nodes: int = MAX_NODES):
    r""":math:`J_2 = E[\sigma_a'(x_0)\,\sigma_b'(x_1)]`, ``C`` of shape ``(..., 2, 2)``."""
    C = _as_cov(C, 2)
    _check_psd_soft(C)
    a, b = _acts(sigma_a, sigma_b)
    return _dispatch("j2", C, (a, b), [Factor.derivative(a), Factor.derivative(b)], tol, max_nodes)


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
                     tol, max_nodes)


def i4(C, sigma_a, sigma_b, sigma_c, sigma_d, *, tol: float = FALLBACK_TOL,
       max_nodes: int = MAX_NODES):
    r""":math:`I_4 = E[\sigma_a'(x_0)\,\sigma_b'(x_1)\,\sigma_c(x_2)\,\sigma_d(x_3)]`, ``C`` of
    shape ``(..., 4, 4)``.  ReLU has no closed form here: quadrature route."""
    C = _as_cov(C, 4)
    _check_psd_soft(C)
    a, b, c, d = _acts(sigma_a, sigma_b, sigma_c, sigma_d)
    return _dispatch("i4", C, (a, b, c, d),
                     [Factor.derivative(a), Factor.derivative(b), Factor.value(c), Factor.value(d)],
                     tol, max_nodes)


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
            kind, slots, facs = "i2", acts, [Factor.value(a) for a in acts]
        elif family == "I3":
            kind, slots = "i3", [s] + acts
            facs = [Factor.derivative(s), Factor.linear(), Factor.value(acts[0])]
        elif family == "I4":
            kind, slots = "i4", [s, s] + acts
            facs = [Factor.derivative(s), Factor.derivative(s)] + [Factor.value(a) for a in acts]
        else:
            kind, slots, facs = "j2", [s, s], [Factor.derivative(s)] * 2
        found = closed_form(kind, *slots)
        plan = (route(kind, *slots), None if found is None else found[1], facs)
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
