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
    All activations ReLU: ``I2`` (arc-cosine kernel with norms), ``J2`` and ``I3``
    (elementary), and ``I4`` :math:`= E[x_c x_d 1\{x_a, x_b, x_c, x_d > 0\}]` through
    Gaussian orthant probabilities of at most four fields (Plackett's one-dimensional
    reduction, Tallis' truncated moments; :func:`popdyn.gaussian.relu_i4`), to ~1e-15, and
    to the input's rounding floor near aligned fields; repeated and aligned fields reduced
    exactly.
``"polynomial"`` (exact)
    All activations polynomials: tensor Gauss–Hermite with enough nodes to be exact for
    the total degree of the integrand, in the whitened coordinates below; the only error
    is rounding.
``"quadrature"`` (fallback)
    Anything else, including mixed pairs (ReLU student, erf teacher): the nested
    breakpoint-aware quadrature of :func:`gaussian_product_expectation`, refined until
    two successive rules agree to ``tol`` (default :data:`FALLBACK_TOL`), or a
    :class:`~popdyn.errors.NumericalError` that states the error reached.

One ODE right-hand side
-----------------------
:class:`CommitteeIntegrals` evaluates all integrals of a state.  With ``integrals="auto"``
(the default) and student and teacher both erf or both ReLU it uses a contracted
closed-form assembly: the right-hand side needs only :math:`D_3 = I_3\beta` and
:math:`D_4 = \sum_{ce} I_4(\cdot, \cdot, c, e)\beta_c\beta_e`, which it builds from the
joint covariance with matrix products, broadcasting and index plans made once per
problem, so its cost is the number of integrals (:math:`K^2 (K + M)^2 / 4` four-field
terms) and not Python-level work per tuple.  ``integrals="tuples"`` keeps the per-tuple
routes above (the assembly before this one) and ``"quadrature"`` forces the quadrature
route for every family, both for comparison.  Measured with
``benchmarks/bench_committee_ode.py`` (2 shared cores, one right-hand side at a K = M = 2
state): erf 0.05 ms, ReLU 0.08 ms (``"tuples"``: 0.06 and 0.9 ms; ``"quadrature"``: 15 and
31 ms); erf at K = M = 8: ~0.1 ms, K = M = 32: ~7 ms.

The closed forms (registry :data:`popdyn.gaussian.CLOSED_FORMS`, the Stein-lemma
derivation of ReLU's ``I3``, the orthant machinery) and the quadrature fallback with its
accuracy guarantees and limits of validity live in the foundation module
:mod:`popdyn.gaussian`; the names below are re-exported from there.

References
----------
D. Saad, S. A. Solla, "On-line learning in soft committee machines", PRE 52, 4225 (1995).
M. Biehl, H. Schwarze, "Learning by on-line gradient descent", J. Phys. A 28, 643 (1995).
S. Goldt, M. Advani, A. M. Saxe, F. Krzakala, L. Zdeborová, NeurIPS 2019 (arXiv 1906.08632).
Y. Cho, L. K. Saul, "Kernel methods for deep learning", NIPS 2009 (arc-cosine kernel).
R. L. Plackett, Biometrika 41, 351 (1954); D. R. Childs, Biometrika 54, 293 (1967); G. M.
Tallis, J. R. Stat. Soc. B 23, 223 (1961) (orthant probabilities and truncated moments).

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
    ALIGN_TOL,
    FALLBACK_TOL,
    MAX_NODES,
    RULE_NODES,
    Factor,
    OrthantPlan,
    _as_cov,
    _fine_only,
    closed_form,
    erf_i2,
    erf_i3,
    erf_i4,
    erf_j2,
    gaussian_product_expectation,
    is_builtin,
    reduce_indicators,
    relu_i2,
    relu_i3,
    relu_i4,
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
    "relu_i4",
    "Factor",
    "CommitteeIntegrals",
    "gaussian_product_expectation",
    "FALLBACK_TOL",
    "RULE_NODES",
    "MAX_NODES",
    "ROUTES",
    "ASSEMBLIES",
]

#: Routes reported by :func:`route`.
ROUTES = ("erf", "relu", "polynomial", "quadrature")
#: How :class:`CommitteeIntegrals` assembles the integrals of one ODE right-hand side:
#: ``"auto"`` (the contracted closed-form assembly where it exists, else ``"tuples"``),
#: ``"tuples"`` (every index tuple through its family's route, then contracted) and
#: ``"quadrature"`` (as ``"tuples"`` with the quadrature route for every family).
ASSEMBLIES = ("auto", "tuples", "quadrature")


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
    ('relu', 'relu')
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
    shape ``(..., 4, 4)`` (ReLU: orthant probabilities, :func:`popdyn.gaussian.relu_i4`)."""
    C = _as_cov(C, 4)
    _check_psd_soft(C)
    a, b, c, d = _acts(sigma_a, sigma_b, sigma_c, sigma_d)
    return _dispatch("i4", C, (a, b, c, d),
                     [Factor.derivative(a), Factor.derivative(b), Factor.value(c), Factor.value(d)],
                     tol, max_nodes)


# ======================================================================================
# all integrals of the committee ODE at one state
# ======================================================================================
_2_PI = 2.0 / np.pi
_TWO_PI = 2.0 * np.pi
#: Array entries per block of the erf ``D4`` assembly (64k doubles = 512 KiB: a block's
#: temporaries stay in cache; at K = M = 32 this is 31 student pairs per block, and
#: K = M <= 8 is one block).
BLOCK = 1 << 16


class _ErfAssembly:
    r"""Contracted closed forms of erf student and teacher (Saad & Solla 1995), vectorised.

    With :math:`g_c = 1 + C_{cc}`:

    * :math:`D_3(i, b) = \sum_c \beta_c I_3(i, b, c) = \sum_c w_{ic} C_{bc} - \frac{C_{ib}}{g_i}
      \sum_c w_{ic} C_{ic}`, :math:`w_{ic} = \frac{2}{\pi}\beta_c \Lambda_3(i, c)^{-1/2}`
      (two matrix products);
    * :math:`D_4(i, k) = \sum_{ce}\beta_c\beta_e I_4(i, k, c, e) = \frac{4}{\pi^2}
      \Lambda_4^{-1/2}\sum_{ce}\beta_c\beta_e \arcsin\frac{B_{ce}}{\sqrt{(1 + B_{cc})
      (1 + B_{ee})}}` with :math:`B = C - U^\top S^{-1} U`, :math:`U = C_{\{i,k\},\cdot}`,
      :math:`S = \begin{pmatrix} g_i & C_{ik}\\ C_{ik} & g_k\end{pmatrix}`: Saad–Solla's
      :math:`\Lambda_0/\sqrt{\Lambda_1\Lambda_2}` is the correlation of :math:`B` (the
      covariance given the pair, plus the unit variance of erf's Gaussian smoothing), so one
      conditional covariance per student pair :math:`i \le k` serves all :math:`c \le e`; the
      pairs are processed in blocks of :data:`BLOCK` entries (memory stays in cache at
      ``K = M = 32``).
    """

    def __init__(self, K: int, M: int):
        P = K + M
        self.K, self.P = K, P
        self.ii, self.kk = np.triu_indices(K)
        self.iu, self.ju = np.triu_indices(P)  # (c, e) with c <= e
        self.mult = np.where(self.iu == self.ju, 1.0, 2.0)  # (c, e) and (e, c)
        sym = np.zeros((K, K), dtype=np.int64)
        sym[self.ii, self.kk] = sym[self.kk, self.ii] = np.arange(self.ii.size)
        self.sym = sym.ravel()  # D4 (K, K) from the values of the student pairs i <= k
        self.block = max(1, BLOCK // self.iu.size)

    def __call__(self, C, beta, j2: bool, i2: bool = True) -> dict:
        K = self.K
        ii, kk, iu, ju = self.ii, self.kk, self.iu, self.ju
        g = 1.0 + np.diagonal(C)
        CK = C[:K]
        gK = g[:K]
        w = beta * (_2_PI / np.sqrt(np.multiply.outer(gK, g) - CK * CK))
        D3 = w @ C - CK * ((w * CK).sum(axis=1) / gK)[:, None]
        u0, u1 = CK[ii], CK[kk]
        a0, a1, cik = gK[ii], gK[kk], C[ii, kk]
        lam4 = a0 * a1 - cik * cik
        v0 = (a1[:, None] * u0 - cik[:, None] * u1) / lam4[:, None]
        v1 = (a0[:, None] * u1 - cik[:, None] * u0) / lam4[:, None]
        sb = np.sqrt(g - u0 * v0 - u1 * v1)  # sqrt(1 + B_cc) per pair
        cw = self.mult * beta[iu] * beta[ju]
        ct = C[iu, ju]
        d4 = np.empty(ii.size)
        for s in range(0, ii.size, self.block):
            sl = slice(s, s + self.block)
            B = ct - u0[sl][:, iu] * v0[sl][:, ju]
            B -= u1[sl][:, iu] * v1[sl][:, ju]
            B /= sb[sl][:, iu] * sb[sl][:, ju]
            d4[sl] = np.einsum("pt,t->p", np.arcsin(B, out=B), cw)
        d4 *= (4.0 / np.pi ** 2) / np.sqrt(lam4)
        out = {"D3": D3, "D4": d4[self.sym].reshape(K, K)}
        if i2:
            sg = np.sqrt(g)
            out["I2"] = _2_PI * np.arcsin(C / np.multiply.outer(sg, sg))
        if j2:
            out["J2"] = _2_PI / np.sqrt(np.multiply.outer(gK, gK) - C[:K, :K] ** 2)
        return out


class _ReluAssembly:
    r"""Contracted closed forms of ReLU student and teacher, vectorised.

    With :math:`P_2(c, e) = \tfrac14 + \arcsin(\rho_{ce})/(2\pi)` and :math:`\Delta_{ce} =
    C_{cc}C_{ee} - C_{ce}^2`:

    * :math:`I_2 = (\sqrt{\Delta} + C\,(\pi/2 + \arcsin\rho))/(2\pi)`, :math:`J_2 = P_2` (student
      block);
    * :math:`D_3(i, b) = \frac{C_{ib}}{2\pi C_{ii}}\sum_c\beta_c\sqrt{\Delta_{ic}} + \sum_c C_{bc}
      P_2(i, c)\beta_c` (:func:`~popdyn.gaussian.relu_i3` summed: two matrix products);
    * :math:`D_4(i, k) = \sum_{c \le e} m_{ce}\beta_c\beta_e E[x_c x_e 1\{x_i, x_k, x_c, x_e > 0\}]`
      over all index tuples by one :class:`~popdyn.gaussian.OrthantPlan` built once (repeated
      fields merged by index), then summed per student pair.

    A state with aligned fields (a student exactly on a teacher, ``|rho| = 1`` up to
    :data:`~popdyn.gaussian.ALIGN_TOL`) or a zero-variance field takes a plan with those
    fields merged per tuple (:func:`~popdyn.gaussian.reduce_indicators`), cached per
    alignment pattern, and the covariance closed forms for ``I2``, ``J2``, ``I3``.
    """

    def __init__(self, K: int, M: int):
        P = K + M
        self.K, self.P = K, P
        ii, kk = np.triu_indices(K)
        iu, ju = np.triu_indices(P)
        self.iu, self.ju = iu, ju
        self.mult = np.where(iu == ju, 1.0, 2.0)  # (c, e) and (e, c)
        pair = np.repeat(np.arange(ii.size), iu.size)
        ce = np.tile(np.arange(iu.size), ii.size)
        self.tuples = np.stack([ii[pair], kk[pair], iu[ce], ju[ce]], axis=1)  # (T, 4), student pair major
        self.pair, self.ii, self.kk = pair, ii, kk
        sym = np.zeros((K, K), dtype=np.int64)
        sym[ii, kk] = sym[kk, ii] = np.arange(ii.size)
        self.sym = sym.ravel()  # D4 (K, K) from the values of the student pairs i <= k
        self._plans: dict = {}
        self.plan = self._plan_for(None, None)[0]

    def _plan_for(self, key, C):
        """Plan and kept tuples for an alignment pattern (``None``: none; repeats by index only)."""
        if key in self._plans:
            return self._plans[key]
        items, keep = [], []
        for t, (i, k, c, e) in enumerate(self.tuples):
            S = tuple(dict.fromkeys((i, k, c, e))) if C is None else reduce_indicators((i, k, c, e), C)
            if S is not None:
                items.append((0, S, c, e))
                keep.append(t)
        plan = (OrthantPlan(self.P * self.P, self.P, items), np.asarray(keep, dtype=np.int64))
        self._plans[key] = plan
        return plan

    def __call__(self, C, beta, j2: bool, i2: bool = True) -> dict:
        K, P = self.K, self.P
        d = np.diagonal(C)
        dd = np.multiply.outer(d, d)
        delta = dd - C * C
        # beyond the diagonal: an aligned pair, or the whole row of a zero-variance field
        if np.count_nonzero(delta <= ALIGN_TOL * dd) > P:
            out, key = self._degenerate(C, beta, delta, dd)
            plan, keep = self._plan_for(key, C)
            tk = self.tuples[keep]
            wts = np.where(tk[:, 2] == tk[:, 3], 1.0, 2.0) * beta[tk[:, 2]] * beta[tk[:, 3]]
            d4 = np.bincount(self.pair[keep], weights=wts * plan(C.reshape(-1)), minlength=self.ii.size)
        else:
            sd = np.sqrt(d)
            rho = C / np.multiply.outer(sd, sd)  # |rho| < 1 off the diagonal (no aligned pair)
            rho.flat[::P + 1] = 1.0  # exactly: rounding would cost ~1e-8 in arcsin near |rho| = 1
            asn = np.arcsin(rho)
            sq = np.sqrt(delta)
            p2 = 0.25 + asn[:K] / _TWO_PI
            out = {"D3": C[:K] * ((sq[:K] @ beta) / (_TWO_PI * d[:K]))[:, None] + (p2 * beta) @ C, "J2": p2[:, :K]}
            if i2:
                out["I2"] = (sq + C * (0.5 * np.pi + asn)) / _TWO_PI
            vals = self.plan(C.reshape(-1)).reshape(self.ii.size, self.iu.size)
            d4 = vals @ (self.mult * beta[self.iu] * beta[self.ju])
        out["D4"] = d4[self.sym].reshape(K, K)
        if not j2:
            del out["J2"]
        if not i2:
            out.pop("I2", None)
        return out

    def _degenerate(self, C, beta, delta, dd):
        """``I2``, ``D3``, ``J2`` by the covariance closed forms (zero variances allowed) and the
        alignment pattern (zero-variance fields, aligned pairs with their sign)."""
        K, P = self.K, self.P
        pc = _pair_cov(C)
        idx = np.arange(P)
        trip = np.stack(np.broadcast_arrays(np.arange(K)[:, None, None], idx[None, :, None], idx[None, None, :]), -1)
        I3 = relu_i3(C[trip[..., :, None], trip[..., None, :]])
        out = {"I2": relu_i2(pc), "D3": I3 @ beta, "J2": relu_j2(pc[:K, :K])}
        aligned = np.argwhere(np.triu(delta <= ALIGN_TOL * dd, 1))
        key = (tuple(int(f) for f in np.flatnonzero(~(np.diagonal(C) > 0))),
               tuple((int(a), int(b), bool(C[a, b] > 0)) for a, b in aligned))
        return out, key


def _pair_cov(A) -> np.ndarray:
    """``(n, n, 2, 2)`` covariances of all pairs of fields of ``A`` (n, n)."""
    dg = np.diagonal(A)
    out = np.empty(A.shape + (2, 2))
    out[..., 0, 0] = dg[:, None]
    out[..., 1, 1] = dg[None, :]
    out[..., 0, 1] = A
    out[..., 1, 0] = A
    return out


def _assembly_for(student, teacher, K: int, M: int):
    """The contracted closed-form assembly of these activations, or ``None``."""
    for name, cls in (("erf", _ErfAssembly), ("relu", _ReluAssembly)):
        if is_builtin(student, name) and is_builtin(teacher, name):
            return cls(K, M)
    return None


class CommitteeIntegrals:
    r"""Every Gaussian integral the committee ODE needs at a state.

    Fields are numbered ``0..K-1`` (student, activation :math:`\sigma`) and
    ``K..K+M-1`` (teacher, :math:`\sigma^*`).  :meth:`compute` takes the joint covariance
    ``C`` (``P x P``) and returns

    * ``"I2"`` (P, P): :math:`I_2(c, e) = E[s_c(x_c) s_e(x_e)]`;
    * ``"I3"`` (K, P, P): :math:`I_3(i, b, c) = E[\sigma'(\lambda_i)\, x_b\, s_c(x_c)]`;
    * ``"I4"`` (K, K, P, P): :math:`I_4(i, k, c, e) = E[\sigma'(\lambda_i)\sigma'(\lambda_k)
      s_c(x_c) s_e(x_e)]` (when asked);
    * ``"J2"`` (K, K): :math:`E[\sigma'(\lambda_i)\sigma'(\lambda_k)]` (when asked).

    :meth:`contractions` returns what the right-hand side uses, ``I2``, :math:`D_3 = I_3
    \beta` (K, P), :math:`D_4 = \sum_{ce} I_4(\cdot, \cdot, c, e)\beta_c\beta_e` (K, K) and
    ``J2``.  With ``integrals="auto"`` and student and teacher both erf or both ReLU it
    evaluates them by a contracted closed-form assembly whose cost is set by the number of
    integrals, with no per-call index gathers beyond precomputed plans (see
    :class:`_ErfAssembly`, :class:`_ReluAssembly`).  Otherwise (``"tuples"``, or other
    activations) index tuples are grouped by their activations (one group when student and
    teacher share the activation) and each group is evaluated in one batched call of its
    route (:func:`route`; ``"quadrature"`` forces the quadrature route for every family);
    symmetric tuples (:math:`I_2(c,e) = I_2(e,c)`, :math:`I_4` in ``(i,k)`` and in
    ``(c,e)``) are computed once.  The teacher-teacher block of ``I2`` depends only on ``G``
    and is cached.  For the quadrature route the rule level that met ``tol`` is remembered
    per group, so an ODE pays the refinement once.

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
    integrals : {"auto", "tuples", "quadrature"}
        The assembly (:data:`ASSEMBLIES`); ``"tuples"`` and ``"quadrature"`` keep the
        per-tuple routes callable for comparison.
    """

    def __init__(self, student, teacher, K: int, M: int, *, tol: float = FALLBACK_TOL, recheck: int = 10,
                 max_nodes: int = MAX_NODES, integrals: str = "auto"):
        from .._validation import check_choice

        self.student = get_activation(student)
        self.teacher = get_activation(teacher)
        self.K = check_int("K", K, minimum=1)
        self.M = check_int("M", M, minimum=1)
        self.tol = check_real("tol", tol, lower=0.0, lower_open=True)
        self.recheck = check_int("recheck", recheck, minimum=1)
        self.max_nodes = check_int("max_nodes", max_nodes, minimum=1)
        self.integrals = check_choice("integrals", integrals, ASSEMBLIES)
        self._calls: dict = {}
        self.P = self.K + self.M
        K, P = self.K, self.P
        self._fast = _assembly_for(self.student, self.teacher, K, self.M) if self.integrals == "auto" else None
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
        q = np.stack([np.repeat(ii, c.size), np.repeat(kk, c.size), np.tile(c, ii.size), np.tile(e, ii.size)], 1)
        self._quads = self._group(q, (2, 3))
        # flat indices of each group's sub-covariances into C.ravel(): one gather per group and call
        self._flat = {}
        for groups in (self._pairs, self._pairs_tt, self._pairs_other, self._triples, self._spairs, self._quads):
            for _, idx in groups:
                self._flat[id(idx)] = idx[:, :, None] * P + idx[:, None, :]

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
        for name, groups in (("I2", self._pairs), ("I3", self._triples), ("I4", self._quads)):
            for key, _ in groups:
                acts = [self._act_of_kind(k) for k in key]
                if self.integrals == "quadrature":
                    r = "quadrature"
                elif name == "I2":
                    r = route("i2", *acts)
                elif name == "I3":
                    r = route("i3", s, *acts)
                else:
                    r = route("i4", s, s, *acts)
                out[f"{name}[{','.join(a.name for a in acts)}]"] = r
        out["J2"] = "quadrature" if self.integrals == "quadrature" else route("j2", s, s)
        out["assembly"] = "contracted closed forms" if self._fast is not None else "tuples"
        return out

    def _eval(self, family, key, C, idx):
        """Batched values of one group (sub-covariances gathered from ``C`` by a precomputed plan)."""
        flat = self._flat.get(id(idx))
        sub = C.reshape(-1)[flat] if flat is not None else C[idx[:, :, None], idx[:, None, :]]
        return self._eval_sub(family, key, sub)

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
        found = None if self.integrals == "quadrature" else closed_form(kind, *slots)
        name = "quadrature" if self.integrals == "quadrature" else route(kind, *slots)
        plan = (name, None if found is None else found[1], facs)
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

    def contractions(self, C, beta, *, j2: bool = False, i2: bool = True) -> dict:
        r"""What the ODE right-hand side uses at the joint covariance ``C`` (P x P).

        Returns ``{"D3": (K, P), "D4": (K, K)[, "I2": (P, P)][, "J2": (K, K)]}`` with
        :math:`D_3(i, b) = \sum_c I_3(i, b, c)\beta_c` and :math:`D_4(i, k) = \sum_{ce}
        I_4(i, k, c, e)\beta_c\beta_e` (``beta`` of shape (P,)); ``I2`` when ``i2``, ``J2``
        when ``j2``.
        """
        C = np.asarray(C, dtype=float)
        beta = np.asarray(beta, dtype=float)
        if self._fast is not None:
            # exactly symmetric (a no-op for symmetric C): the assemblies read either triangle
            return self._fast(0.5 * (C + C.T), beta, j2, i2)
        ints = self.compute(C, i4=True, j2=j2)
        D4 = np.einsum("ikce,c,e->ik", ints["I4"], beta, beta)
        out = {"I2": ints["I2"], "D3": ints["I3"] @ beta, "D4": 0.5 * (D4 + D4.T)}  # exactly symmetric
        if j2:
            out["J2"] = ints["J2"]
        return out

    def compute(self, C, *, i4: bool = True, j2: bool = False) -> dict:
        """Integrals at the joint covariance ``C`` (P x P), tuple by tuple; see the class docstring."""
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
