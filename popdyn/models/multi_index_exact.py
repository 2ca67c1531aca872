r"""Exact d-free simulator of online spherical SGD for the multi-index model (arXiv 2411.08798).

Online spherical SGD with the correlation loss and fresh Gaussian samples is simulated
*exactly in law* at any finite dimension ``d`` without materialising a sample
:math:`x \in \mathbb{R}^d`, the index vectors ``V`` or the weights ``W``: the state of a
replica is its overlaps :math:`(u, Q)` and every step draws the low-dimensional
projections of the minibatch from their exact joint law (theory/CONVENTIONS.md, "Exact
d-free simulation of online SGD").  The cost of a step does not depend on ``d``.  It plugs
into :func:`popdyn.simulation.simulate` as the ``engine="exact"`` stepper of
:class:`~popdyn.models.multi_index.MultiIndexProblem`; the full d-dimensional simulator
(:mod:`popdyn.models.multi_index_sim`) stays the ground truth it is checked against.

Model and update (as in :mod:`popdyn.models.multi_index_sim`, algorithm ``"sgd"``)
----------------------------------------------------------------------------------
:math:`x \sim N(0, I_d)`; teacher :math:`y = f^*(x) = \sum_j a^*_j \sigma^*_j(v_j\cdot x)`
(unit rows :math:`v_j` of ``V``, ``k x d``, Gram :math:`G = V V^\top`); ``N`` student
neurons :math:`w_i` on the unit sphere; per-sample loss :math:`-y\,\sigma(w_i\cdot x)`.
One step with a fresh minibatch :math:`x_1..x_B`, shared by the ``N`` neurons of a
replica, with fields :math:`\lambda_{ib} = w_i\cdot x_b`, :math:`\nu_{jb} = v_j\cdot x_b`:

.. math::

    c_{ib} = \frac{\eta}{B}\, y_b\, \sigma'(\lambda_{ib}), \qquad
    s_i = \sum_b c_{ib}\lambda_{ib}, \qquad
    \hat w_i = (1 - s_i)\, w_i + \sum_b c_{ib}\, x_b, \qquad
    w_i' = \hat w_i / \|\hat w_i\| ,

i.e. the Riemannian gradient step :math:`w - \eta\hat g` followed by the retraction
(normalisation) to the sphere.  With :math:`\alpha_i = 1 - s_i`, the matrix
:math:`K = c\Lambda^\top` (:math:`K_{ij} = \sum_b c_{ib}\lambda_{jb}`, so
:math:`s_i = K_{ii}`) and the sample Gram matrix :math:`S_{bb'} = x_b\cdot x_{b'}`, the
overlaps :math:`u_i = V w_i` and :math:`Q = W W^\top` of the unnormalised vectors are

.. math::

    \hat u_i = \alpha_i u_i + \sum_b c_{ib}\,\nu_b, \qquad
    \hat Q_{ij} = \alpha_i\alpha_j Q_{ij} + \alpha_j K_{ij} + \alpha_i K_{ji}
                  + (c\, S\, c^\top)_{ij},                                    \tag{1}

and the normalisation divides by :math:`n_i = \|\hat w_i\| = \hat Q_{ii}^{1/2}`:

.. math::

    u_i' = \hat u_i / n_i, \qquad Q'_{ij} = \hat Q_{ij} / (n_i n_j), \qquad Q'_{ii} = 1.  \tag{2}

(:math:`n_i^2 = 1 - s_i^2 + (cSc^\top)_{ii} \ge 1` because
:math:`(cSc^\top)_{ii} = \|\sum_b c_{ib}x_b\|^2 \ge s_i^2` by Cauchy--Schwarz.)

Why the overlaps are an exact Markov chain
------------------------------------------
Let :math:`P = N + k` and :math:`C = \begin{pmatrix} Q & u\\ u^\top & G\end{pmatrix}`
(``P x P``, ``u`` the ``N x k`` matrix of the :math:`u_i`).  Given the past, ``W`` and
``V`` are fixed and the new samples are independent of them.  If :math:`d \ge P`, pick an
orthonormal frame ``E`` (``P x d``) whose row span contains span(W, V), so that
:math:`[W; V] = A E` with :math:`A A^\top = C`.  The frame coordinates
:math:`g_b = E x_b \sim N(0, I_P)` and the components :math:`x_b^\perp` outside the frame
are independent, the latter i.i.d. standard Gaussian in :math:`n = d - P` dimensions, so

.. math::

    (\lambda_b, \nu_b) = A\, g_b, \qquad S = g^\top g + S^\perp, \qquad
    S^\perp = X_\perp^\top X_\perp,                                           \tag{3}

with :math:`X_\perp` (``n x B``) i.i.d. :math:`N(0, 1)` and independent of ``g``.
Replacing ``A`` by another square root :math:`A O` (``O`` orthogonal) maps
:math:`g \mapsto O g`, which has the same law and the same :math:`g^\top g`: the
conditional law of :math:`(\Lambda, N, S)` depends on the past **only through** ``C``.
By (1)-(2) the new :math:`(u', Q')` is a function of :math:`(u, Q, \Lambda, N, S)`, so
:math:`(u_t, Q_t)` is a Markov chain whose kernel depends only on :math:`(G, d)` and the
problem, and drawing (3) then applying (1)-(2) samples it *exactly*: the joint law of the
recorded overlaps over all steps equals that of the d-dimensional simulation at the
same ``d`` (no large-d approximation; only floating-point rounding differs).  The span of
``W`` grows by the :math:`x_b` directions, but the next samples are fresh, so only the new
``C`` matters.  A fixed ``P``-dimensional frame needs no rank decision: when
:math:`\mathrm{rank}\, C < P` the spare frame directions move degrees of freedom from
:math:`X_\perp` into ``g``, with the same law.

Only :math:`c S c^\top` is needed, not ``S`` itself:
:math:`c S c^\top = (c g^\top)(c g^\top)^\top + c S^\perp c^\top`.  Since ``c`` is a
function of ``g`` and :math:`X_\perp` is independent of ``g``, the rows of
:math:`X_\perp c^\top` (``n x N``) are, given ``c``, i.i.d. :math:`N(0, c c^\top)`, so
:math:`X_\perp c^\top \overset{d}{=} Y F_c^\top` for ``Y`` (``n x N``) i.i.d.
:math:`N(0, 1)` and any :math:`F_c` with :math:`F_c F_c^\top = c c^\top`:

.. math::

    c S^\perp c^\top \overset{d}{=} F_c\, L L^\top F_c^\top, \qquad
    L L^\top \sim \mathrm{Wishart}_N(n, I_N) ,                                 \tag{4}

an ``N x N`` Wishart instead of a ``B x B`` one.  The engine uses (4) when
:math:`N \le B` and :math:`c\,L_B` with :math:`L_B L_B^\top \sim \mathrm{Wishart}_B(n, I_B)`
(i.e. (3) directly) when :math:`B < N`; both are drawn by the Bartlett decomposition
(:class:`popdyn.samplers.BartlettFactor`), so a step costs
:math:`O(R\,(P^3 + P^2 B + N P B + m^3))` with :math:`m = \min(N, B)`, independent of ``d``.
The factors of ``C`` and :math:`c c^\top` come from
:func:`popdyn.models.committee_exact.psd_factor` (Cholesky, with a fallback for singular
matrices); any square root gives the same law.

Validity and scope
------------------
* Algorithm ``"sgd"`` only (online SGD with fresh samples, any minibatch ``B``).  Multi-pass
  ``"gd"`` reuses its samples, so their projections on the moving weights are not a
  function of the overlaps, and ``"gf"`` is deterministic: its overlap dynamics is the
  u-ODE itself (:func:`popdyn.ode.integrate` without ``eta``), which closes in ``u``.
* Requires :math:`d \ge N + k` (the frame).  Exact for any activations and any such ``d``;
  the only approximation is floating-point rounding (relative ``~1e-16`` per step;
  ``Q`` is kept exactly symmetric with unit diagonal).

Initial state
-------------
:func:`initial_overlaps` draws :math:`(u_0, Q_0)` from the exact law of the full engine's
initial weights (:func:`popdyn.models.multi_index_sim.initial_weights`) in dimension ``d``:
the same law, not the same numbers (the full engine draws d-dimensional vectors from its
streams).  A dict ``{"u": u0, "Q": Q0}`` gives the state directly (e.g. the overlaps of a
full-engine state, to start both engines from the same point).

References
----------
B. Şimşek, A. Bendjeddou, D. Hsu, "Learning Gaussian Multi-Index Models with Gradient
Flow: Time Complexity and Directional Convergence", AISTATS 2025 (arXiv 2411.08798),
Section 2 (model, correlation loss, spherical student).
G. Ben Arous, R. Gheissari, A. Jagannath, "Online stochastic gradient descent on
non-convex losses from high-dimensional inference", JMLR 22 (2021) (spherical online SGD).
M. S. Bartlett (1933); T. W. Anderson, *An Introduction to Multivariate Statistical
Analysis*, 3rd ed. (2003), Theorem 7.2.1 (the Bartlett decomposition), Theorem 7.3.2
(:math:`A^\top W A` for a Wishart ``W``, behind (4)).

Examples
--------
>>> from popdyn.models.multi_index import MultiIndexProblem
>>> from popdyn.simulation import simulate
>>> prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=2)
>>> traj = simulate(prob, d=10**6, eta=0.5e-6, steps=50, batch=8, replicas=4, init=0.3, rng=0,
...                 engine="exact", n_record=3)
>>> traj.u.shape, traj.Q.shape, traj.meta["engine"]
((3, 4, 2, 2), (3, 4, 2, 2), 'exact')
"""

from __future__ import annotations

import math

import numpy as np

from .._random import as_generator
from .._validation import check_finite_array, check_int, check_real
from ..errors import NumericalError
from ..samplers import BartlettFactor
from .committee_exact import psd_factor
from .multi_index import PSD_TOL, MultiIndexProblem
from .multi_index_sim import (
    MAX_REJECTION_ROUNDS,
    SPHERE_TOL,
    _parse_init,
    boundary_tolerance,
    describe_init,
    fast_evaluator,
)

__all__ = ["MultiIndexExactStepper", "initial_overlaps", "exact_update", "check_dimension", "DRIFT_TOL"]

#: The joint Gram matrix ``C = [[Q, u], [u^T, G]]`` of a state is PSD exactly; rounding of
#: the update (relative ~1e-16 per step, a random walk) keeps its smallest eigenvalue above
#: ~ -1e-12 even after 1e8 steps.  Below ``-DRIFT_TOL`` the state is no longer the overlaps of
#: any vectors (a bug or an overflow), and :meth:`MultiIndexExactStepper.check_state` says so.
DRIFT_TOL = 1e-6


def check_dimension(problem: MultiIndexProblem, d) -> int:
    """``d`` as an int, or ``ValueError`` when ``d < N + k`` (the exact engine's frame)."""
    P = problem.n_neurons + problem.k
    d = check_int("d", d, minimum=1)
    if d < P:
        raise ValueError(
            f"`d` must be >= N + k = {problem.n_neurons} + {problem.k} = {P} for the exact engine (the "
            f"student and index vectors need a {P}-dimensional frame; the rest of x has d - N - k "
            f"dimensions), got d = {d}. Use engine='full' or a larger `d`."
        )
    return d


# --------------------------------------------------------------------------------------
# initial state
# --------------------------------------------------------------------------------------
def _range_basis(G):
    """``(Ur, lr)``: eigenvectors and eigenvalues of the range of ``G`` (as the full engine)."""
    lam, U = np.linalg.eigh(G)
    keep = lam > PSD_TOL * max(1.0, float(lam.max()))
    return U[:, keep], lam[keep]


def _normalised_gram(L) -> np.ndarray:
    """Cosines of the rows of ``Z`` from a factor ``L`` of their Gram ``Z Z^T = L L^T``."""
    gram = L @ np.swapaxes(L, -1, -2)
    norm = np.sqrt(np.diagonal(gram, axis1=-2, axis2=-1))
    return gram / (norm[..., :, None] * norm[..., None, :])


def _parse_state(problem: MultiIndexProblem, init: dict) -> tuple:
    """Validate ``{"u": (N, k), "Q": (N, N)}``: a realisable state (``C`` PSD, unit diagonal)."""
    N, k = problem.n_neurons, problem.k
    extra = sorted(set(init) - {"u", "Q"})
    if extra or not {"u", "Q"} <= set(init):
        raise ValueError(f"`init` as a dict must have exactly the keys 'u' and 'Q', got {sorted(init)}.")
    u = check_finite_array("init['u']", init["u"], shape=(N, k))
    Q = check_finite_array("init['Q']", init["Q"], shape=(N, N))
    if np.max(np.abs(Q - Q.T)) > SPHERE_TOL or np.max(np.abs(np.diag(Q) - 1.0)) > SPHERE_TOL:
        raise ValueError(f"`init['Q']` must be symmetric with unit diagonal (unit weights) up to {SPHERE_TOL:g}, "
                         f"got diagonal {np.round(np.diag(Q), 12).tolist()}.")
    C = np.block([[Q, u], [u.T, problem.G]])
    low = float(np.linalg.eigvalsh(0.5 * (C + C.T)).min())
    if low < -SPHERE_TOL:
        raise ValueError(f"`init`: [[Q, u], [u^T, G]] must be positive semidefinite (the Gram matrix of the "
                         f"weights and index vectors), got smallest eigenvalue {low:.3g}.")
    Q = 0.5 * (Q + Q.T)
    np.fill_diagonal(Q, 1.0)
    return u, Q


def initial_overlaps(problem: MultiIndexProblem, d: int, *, init="uniform", rng=None, replicas: int = 1,
                     same_init: bool = True) -> tuple:
    r"""Initial ``(u0, Q0)`` from the exact law of the full engine's initial weights.

    The full engine (:func:`popdyn.models.multi_index_sim.initial_weights`) draws unit rows
    :math:`w_i`; here only their overlaps :math:`u_0 = W_0 V^\top` (``N x k``) and
    :math:`Q_0 = W_0 W_0^\top` (``N x N``) are drawn, from the same law, with
    :math:`r = \mathrm{rank}\, G = F F^\top` (:math:`F = U_r \Lambda_r^{1/2}`, ``k x r``) and
    :math:`n_0 = d - r`:

    * ``"uniform"`` (Haar): :math:`w_i = z_i/\|z_i\|`, :math:`z_i \sim N(0, I_d)`.  Split
      along span(V) and its complement, :math:`Z V^\top = \xi F^\top` and
      :math:`Z Z^\top = \xi\xi^\top + L L^\top` with :math:`\xi` (``N x r``) i.i.d.
      :math:`N(0, 1)` and :math:`L L^\top \sim \mathrm{Wishart}_N(n_0, I)` independent; then
      :math:`u_0 = \xi F^\top / \|z_i\|` and :math:`Q_0 = Z Z^\top / (\|z_i\|\|z_j\|)`.
    * a float ``m0`` or an array ``u0``: :math:`u_0` as in the full engine
      (:math:`u_0 \sim N(0, m_0^2 G)` conditioned on :math:`u_0^\top G^+ u_0 < 1` by
      rejection, or given), and
      :math:`w_i = V^\top G^+ u_{0i} + \sqrt{1 - q_i}\, r_i` with
      :math:`q_i = u_{0i}^\top G^+ u_{0i}` and independent Haar unit vectors :math:`r_i` of
      the :math:`n_0`-dimensional complement, so

      .. math::

          Q_{0,ij} = u_{0i}^\top G^+ u_{0j} + \sqrt{(1 - q_i)(1 - q_j)}\; \rho_{ij},

      with :math:`\rho` the cosines of ``N`` i.i.d. Gaussian vectors of
      :math:`\mathbb{R}^{n_0}` (a normalised :math:`\mathrm{Wishart}_N(n_0, I)`).  A row with
      :math:`q_i = 1` up to rounding (:func:`~popdyn.models.multi_index_sim.boundary_tolerance`)
      lies in span(V), renormalised as in the full engine.
    * a dict ``{"u": u0, "Q": Q0}`` (shapes ``(N, k)``, ``(N, N)``): the state itself,
      checked to be realisable (:math:`[[Q_0, u_0], [u_0^\top, G]]` PSD, unit diagonal).

    Stream order: ``"uniform"``: :math:`\xi`, then the Bartlett factor (chi-squares, then
    normals); ``m0``: the rejection rounds of the full engine, then the Bartlett factor;
    ``u0``: the Bartlett factor.

    Parameters
    ----------
    problem : MultiIndexProblem
    d : int
        Dimension, ``>= N + k`` (:func:`check_dimension`).
    init : "uniform", float, array_like or dict
    rng : int, Generator or None
    replicas : int
        Number of independent draws when ``same_init`` is false.
    same_init : bool
        One draw (shapes ``(N, k)``, ``(N, N)``), or one per replica (leading axis ``R``).

    Returns
    -------
    u0, Q0 : ndarray

    Examples
    --------
    >>> from popdyn.models.multi_index import MultiIndexProblem
    >>> prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=3)
    >>> u0, Q0 = initial_overlaps(prob, 10**8, rng=0)
    >>> u0.shape, bool(np.abs(u0).max() < 1e-3), bool(np.allclose(Q0, np.eye(3), atol=1e-3))
    ((3, 2), True, True)
    """
    if not isinstance(problem, MultiIndexProblem):
        raise TypeError(f"`problem` must be a MultiIndexProblem, got {type(problem).__name__}.")
    d = check_dimension(problem, d)
    replicas = check_int("replicas", replicas, minimum=1)
    N, k = problem.n_neurons, problem.k
    lead = () if same_init else (replicas,)
    if isinstance(init, dict):
        u0, Q0 = _parse_state(problem, init)
        return np.broadcast_to(u0, lead + u0.shape).copy(), np.broadcast_to(Q0, lead + Q0.shape).copy()
    kind, value = _parse_init(init, k, N)
    rng = as_generator(rng)
    Ur, lr = _range_basis(problem.G)
    rank = lr.size
    perp = BartlettFactor(d - rank, N)
    if kind == "uniform":
        xi = rng.standard_normal(lead + (N, rank))
        L = perp.draw(rng, size=lead)
        gram = xi @ np.swapaxes(xi, -1, -2) + L @ np.swapaxes(L, -1, -2)  # Z Z^T
        norm = np.sqrt(np.diagonal(gram, axis1=-2, axis2=-1))
        u0 = ((xi * np.sqrt(lr)) @ Ur.T) / norm[..., None]  # Z V^T / |z_i|
        Q0 = gram / (norm[..., :, None] * norm[..., None, :])
    else:
        if kind == "m0":  # the full engine's rejection rounds (same law, same stream use)
            m0 = value
            xi = rng.standard_normal(lead + (N, rank))
            bad = m0 ** 2 * np.einsum("...j,...j->...", xi, xi) >= 1.0
            rounds = 0
            while bad.any():
                rounds += 1
                if rounds > MAX_REJECTION_ROUNDS:
                    raise ValueError(
                        f"`init` = m0 = {m0} is too large: u0 ~ N(0, m0^2 G) rarely satisfies "
                        f"u0^T G^+ u0 < 1 (rank(G) = {rank}); use m0 well below {1 / np.sqrt(rank):.3g}."
                    )
                xi[bad] = rng.standard_normal((int(bad.sum()), rank))
                bad = m0 ** 2 * np.einsum("...j,...j->...", xi, xi) >= 1.0
            coords = m0 * np.sqrt(lr) * xi
        else:
            u_given = np.broadcast_to(value, lead + (N, k))
            coords = u_given @ Ur
            off = np.linalg.norm(u_given - coords @ Ur.T, axis=-1)
            if off.max() > SPHERE_TOL:
                raise ValueError(f"`init`: u0 must lie in range(G) (G is singular); a row has a component "
                                 f"{off.max():.3g} outside it.")
        q = np.einsum("...j,...j->...", coords ** 2, 1.0 / lr)  # u0^T G^+ u0
        if q.max() > 1.0 + SPHERE_TOL:
            raise ValueError(f"`init`: u0 must satisfy u0^T G^+ u0 <= 1 (w is a unit vector), got {q.max():.12g}.")
        on_span = q >= 1.0 - boundary_tolerance(lr)
        rest = np.where(on_span, 0.0, np.sqrt(np.clip(1.0 - q, 0.0, None)))
        coords = coords / np.where(on_span, np.sqrt(q), 1.0)[..., None]  # a row in span(V) is renormalised
        u0 = coords @ Ur.T
        rho = _normalised_gram(perp.draw(rng, size=lead))
        Q0 = (coords / lr) @ np.swapaxes(coords, -1, -2) + rest[..., :, None] * rest[..., None, :] * rho
    Q0 = 0.5 * (Q0 + np.swapaxes(Q0, -1, -2))
    idx = np.arange(N)
    Q0[..., idx, idx] = 1.0
    return u0, Q0


# --------------------------------------------------------------------------------------
# the deterministic update (1)-(2)
# --------------------------------------------------------------------------------------
def _apply(u, Q, K, cnu, cSc) -> None:
    r"""(1)-(2) in place on ``u`` (R, N, k) and ``Q`` (R, N, N), given ``K = c Lambda^T``
    (R, N, N), ``c nu^T`` (R, N, k) and ``c S c^T`` (R, N, N)."""
    alpha = 1.0 - np.diagonal(K, axis1=1, axis2=2)  # 1 - s_i
    u *= alpha[:, :, None]
    u += cnu  # u hat
    Mx = K * alpha[:, None, :]  # alpha_j K_ij
    Q *= alpha[:, :, None] * alpha[:, None, :]
    Q += Mx
    Q += Mx.transpose(0, 2, 1)
    Q += cSc
    Q += Q.transpose(0, 2, 1).copy()  # x + y == y + x bitwise: exactly symmetric (2 Q hat)
    n = np.sqrt(0.5 * np.diagonal(Q, axis1=1, axis2=2))  # n_i = |w hat_i|
    u /= n[:, :, None]
    Q *= 0.5
    Q /= n[:, :, None] * n[:, None, :]
    idx = np.arange(Q.shape[1])
    Q[:, idx, idx] = 1.0


class _Evaluators:
    """Teacher labels and the student derivative, grouped as in the full engine."""

    def __init__(self, problem: MultiIndexProblem):
        groups: dict = {}
        for j, act in enumerate(problem.teacher):
            groups.setdefault((act.name, id(act.fn)), (act, []))[1].append(j)
        self.k = problem.k
        self.teacher = [(fast_evaluator(act), np.array(idx), problem.a_star[idx]) for act, idx in groups.values()]
        self.dstudent = fast_evaluator(problem.student, derivative=True)

    def labels(self, nuT) -> np.ndarray:
        r""":math:`y_b = \sum_j a^*_j\sigma^*_j(\nu_{jb})` for ``nuT`` of shape (R, B, k)."""
        y = None
        for act, idx, a in self.teacher:
            T = nuT if idx.size == self.k else nuT[..., idx]
            part = act(T, np.empty(T.shape)) @ a
            y = part if y is None else y + part
        return y

    def coefficients(self, lamT, y, eta: float) -> np.ndarray:
        r"""``c^T``: :math:`c_{ib} = (\eta/B)\, y_b \sigma'(\lambda_{ib})`, shape (R, B, N)."""
        B = lamT.shape[1]
        cT = self.dstudent(lamT, np.empty(lamT.shape))
        cT *= (y * (eta / B))[:, :, None]
        return cT


def exact_update(problem: MultiIndexProblem, u, Q, lam, nu, S, *, eta: float) -> tuple:
    r"""One spherical SGD step on the overlaps given the fields and the sample Gram: ``(u', Q')``.

    The deterministic map (1)-(2) of the module docstring, which the exact engine applies
    after drawing the fields from their law.  Given the fields and Gram of actual samples
    it reproduces the d-dimensional update of :mod:`popdyn.models.multi_index_sim`
    (gradient step and normalisation) up to rounding.

    Parameters
    ----------
    problem : MultiIndexProblem
    u, Q : array_like, shapes (R, N, k), (R, N, N)
        Overlaps before the step (``Q`` with unit diagonal).
    lam, nu : array_like, shapes (R, N, B), (R, k, B)
        Fields :math:`\lambda_{ib} = w_i\cdot x_b`, :math:`\nu_{jb} = v_j\cdot x_b`.
    S : array_like, shape (R, B, B)
        Sample Gram matrix :math:`x_b\cdot x_{b'}`.
    eta : float
        Step size.

    Returns
    -------
    u', Q' : ndarrays (new arrays; the inputs are not modified)

    Examples
    --------
    >>> from popdyn.models.multi_index import MultiIndexProblem
    >>> prob = MultiIndexProblem("he3", "he3", np.eye(1), n_neurons=1)
    >>> u1, Q1 = exact_update(prob, [[[0.5]]], [[[1.0]]], [[[0.5]]], [[[1.0]]], [[[1.0]]], eta=0.0)
    >>> u1.tolist(), Q1.tolist()
    ([[[0.5]]], [[[1.0]]])
    """
    if not isinstance(problem, MultiIndexProblem):
        raise TypeError(f"`problem` must be a MultiIndexProblem, got {type(problem).__name__}.")
    eta = check_real("eta", eta, lower=0.0)
    u = np.array(u, dtype=float)
    Q = np.array(Q, dtype=float)
    lam, nu, S = (np.asarray(v, dtype=float) for v in (lam, nu, S))
    N, k = problem.n_neurons, problem.k
    if u.ndim != 3 or u.shape[1:] != (N, k):
        raise ValueError(f"`u` must have shape (R, {N}, {k}), got {u.shape}.")
    R = u.shape[0]
    B = lam.shape[-1] if lam.ndim == 3 else -1
    for name, arr, shape in (("Q", Q, (R, N, N)), ("lam", lam, (R, N, B)), ("nu", nu, (R, k, B)),
                             ("S", S, (R, B, B))):
        if arr.shape != shape or B < 1:
            raise ValueError(f"`{name}` must have shape {shape}, got {arr.shape}.")
    ev = _Evaluators(problem)
    lamT, nuT = lam.transpose(0, 2, 1), nu.transpose(0, 2, 1)
    cT = ev.coefficients(lamT, ev.labels(nuT), eta)
    c = cT.transpose(0, 2, 1)
    _apply(u, Q, c @ lamT, c @ nuT, c @ S @ cT)
    return u, Q


# --------------------------------------------------------------------------------------
# the stepper
# --------------------------------------------------------------------------------------
class MultiIndexExactStepper:
    r"""Exact d-free online spherical SGD steps of the multi-index model (stepper protocol,
    ``engine="exact"``).

    Built by :func:`popdyn.simulation.make_stepper` / :func:`popdyn.simulation.simulate` with
    ``engine="exact"``; see the module docstring for the law and the update.  The state is
    ``{"u": (R, N, k), "Q": (R, N, N)}``; :meth:`observe` returns copies of both.  Each step
    draws from the noise stream, in this order, the frame coordinates ``g`` (R, B, N + k)
    and the Bartlett factor of the perpendicular Wishart (dimension ``min(N, B)``, ``d - N - k``
    degrees of freedom; its chi-squares, then its normals).

    Attributes
    ----------
    u0, Q0 : ndarray
        Initial overlaps (with a replica axis unless ``same_init``).
    eta : float
    batch : int
    """

    model = "multi_index"
    algorithms = ("sgd",)
    continuous = False

    def __init__(self, problem: MultiIndexProblem, config, streams: dict):
        if not isinstance(problem, MultiIndexProblem):
            raise TypeError(f"`problem` must be a MultiIndexProblem, got {type(problem).__name__}.")
        if config.algorithm != "sgd":
            raise ValueError(f"`algorithm` must be 'sgd' for the exact engine (online SGD with fresh samples); "
                             f"got {config.algorithm!r}. Use engine='full'.")
        self.problem = problem
        self.config = config
        self.R, self.N, self.k, self.d = config.replicas, problem.n_neurons, problem.k, config.d
        self.P = self.N + self.k
        check_dimension(problem, self.d)
        self.eta, self.batch = config.eta, config.batch
        self.u0, self.Q0 = initial_overlaps(problem, self.d, init=config.init, rng=streams["init"],
                                            replicas=self.R, same_init=config.same_init)
        self._ev = _Evaluators(problem)
        self._small_batch = self.batch < self.N  # Wishart of dimension B (3) instead of N (4)
        m = min(self.N, self.batch)
        self._perp = BartlettFactor(self.d - self.P, m)
        self._L = np.zeros((self.R, m, m))
        self._C = np.empty((self.R, self.P, self.P))
        self._C[:, self.N:, self.N:] = problem.G

    # -- protocol -------------------------------------------------------------------------
    @property
    def constants(self) -> dict:
        """Fixed arrays saved in checkpoints to verify a resume: the Gram matrix ``G``."""
        return {"G": np.array(self.problem.G)}

    def init_state(self) -> dict:
        """Fresh state ``{"u": (R, N, k), "Q": (R, N, N)}``."""
        return {"u": np.broadcast_to(self.u0, (self.R, self.N, self.k)).copy(),
                "Q": np.broadcast_to(self.Q0, (self.R, self.N, self.N)).copy()}

    def observe(self, state) -> dict:
        """``{"u", "Q"}`` (copies), shapes (R, N, k) and (R, N, N)."""
        return {"u": state["u"].copy(), "Q": state["Q"].copy()}

    def work_per_step(self) -> float:
        """Rough multiply-adds per step (independent of ``d``)."""
        P, B, m = self.P, self.batch, min(self.N, self.batch)
        return float(self.R * (P ** 3 + P * P * B + self.N * P * B + m ** 3))

    def describe(self) -> dict:
        """JSON-friendly extra ``meta``: engine, initial overlaps, batch, perpendicular dof."""
        init = self.config.init
        init = {key: np.asarray(v, dtype=float).tolist() for key, v in init.items()} if isinstance(init, dict) \
            else describe_init(init)
        return {"engine": "exact", "init": init, "u0": self.u0.tolist(), "Q0": self.Q0.tolist(),
                "batch_used": self.batch, "perp_dof": self.d - self.P}

    def check_state(self, state) -> str | None:
        """``None``, or a message when ``[[Q, u], [u^T, G]]`` is no longer PSD (by more than
        :data:`DRIFT_TOL`): the overlaps of no vectors (called at every recording time)."""
        C = self._joint(state)
        low = np.linalg.eigvalsh(C).min(axis=-1)
        worst = int(np.argmin(low))
        if low[worst] < -DRIFT_TOL:
            return (f"the overlaps of replica {worst} left the set of Gram matrices: smallest eigenvalue of "
                    f"[[Q, u], [u^T, G]] = {low[worst]:.3g} < -{DRIFT_TOL:g}. Try a smaller `eta`.")
        return None

    # -- the step ---------------------------------------------------------------------------
    def _joint(self, state) -> np.ndarray:
        N, C = self.N, self._C
        C[:, :N, :N] = state["Q"]
        C[:, :N, N:] = state["u"]
        C[:, N:, :N] = state["u"].transpose(0, 2, 1)
        return C

    def step(self, state, rng) -> None:
        """One exact online-SGD step, in place on ``state`` (``rng``: the noise stream)."""
        N, B = self.N, self.batch
        try:
            F = psd_factor(self._joint(state))  # (R, P, P)
            g = rng.standard_normal((self.R, B, self.P))
            Z = np.matmul(g, F.transpose(0, 2, 1))  # rows (lambda_b, nu_b) = F g_b
            lamT, nuT = Z[:, :, :N], Z[:, :, N:]
            cT = self._ev.coefficients(lamT, self._ev.labels(nuT), self.eta)  # (R, B, N)
            c = cT.transpose(0, 2, 1)
            cg = np.matmul(c, g)  # (R, N, P)
            cSc = np.matmul(cg, cg.transpose(0, 2, 1))
            L = self._perp.draw(rng, out=self._L)
            T = np.matmul(c, L) if self._small_batch else np.matmul(psd_factor(np.matmul(c, cT)), L)
            cSc += np.matmul(T, T.transpose(0, 2, 1))
            _apply(state["u"], state["Q"], np.matmul(c, lamT), np.matmul(c, nuT), cSc)
        except np.linalg.LinAlgError:  # a factor of a non-finite matrix
            finite = False
        else:
            finite = math.isfinite(float(state["Q"].sum()) + float(state["u"].sum()))
        if not finite:
            raise NumericalError(
                f"non-finite overlaps after an exact SGD step with eta = {self.eta:g}; the update "
                "overflowed. Try a smaller `eta` or a bounded activation."
            )


def _register() -> None:
    from ..simulation import register_stepper

    register_stepper(MultiIndexProblem, "popdyn.models.multi_index_exact:MultiIndexExactStepper", engine="exact")


_register()
