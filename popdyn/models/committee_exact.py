r"""Exact d-free simulator of online SGD for the committee machine (two-layer, squared loss).

Online SGD with fresh Gaussian samples is simulated *exactly* at any finite dimension
``d`` without ever materialising a sample :math:`x \in \mathbb{R}^d` or the weights
:math:`W`: the state is the order parameters :math:`(Q, M, a)` and each step draws the
low-dimensional projections of the minibatch from their exact joint law (theory/CONVENTIONS.md,
"Exact d-free simulation of online SGD").
The cost per step is independent of ``d``.  It plugs into :func:`popdyn.simulation.simulate`
as the ``engine="exact"`` stepper of :class:`~popdyn.models.committee.CommitteeProblem`.

Model (popdyn conventions, see :mod:`popdyn.models.committee`)
--------------------------------------------------------------
:math:`x \sim N(0, I_d)`; teacher rows :math:`v_n` (``V``, M x d, Gram :math:`G`);
:math:`y = \sum_n a^*_n \sigma^*(v_n\cdot x) + \sqrt{\texttt{noise}}\,\xi`; student
:math:`f(x) = \sum_i a_i \sigma(w_i\cdot x)`; per-sample loss :math:`\tfrac12 (f-y)^2`.
One step of online SGD with a fresh minibatch :math:`x_1..x_B` (mean gradient):

.. math::

    w_i' = w_i - \sum_b c_{ib}\, x_b, \qquad
    c_{ib} = \frac{\eta}{B}\, a_i \Delta_b\, \sigma'(\lambda_{ib}), \qquad
    a_i' = a_i - \frac{\eta_a}{B} \sum_b \Delta_b\, \sigma(\lambda_{ib}),

with local fields :math:`\lambda_{ib} = w_i\cdot x_b`, :math:`\nu_{nb} = v_n\cdot x_b`,
error :math:`\Delta_b = f(x_b) - y_b`, and the second layer updated only when
``problem.train_second_layer`` (simultaneous update: the old ``a`` enters :math:`c`).
Hence, with :math:`\Lambda = (\lambda_{ib})` (K x B), :math:`N = (\nu_{nb})` (M x B) and
the sample Gram matrix :math:`S_{bb'} = x_b\cdot x_{b'}` (B x B),

.. math::

    Q' = Q - c\Lambda^\top - \Lambda c^\top + c\, S\, c^\top, \qquad
    M' = M - c\, N^\top .                                              \tag{1}

Why the overlaps are an exact Markov chain
------------------------------------------
Let :math:`P = K + M` and :math:`C = \begin{pmatrix} Q & M\\ M^\top & G\end{pmatrix}`
(P x P).  Given the past, :math:`W` and :math:`V` are fixed and the new samples are
independent of them.  If :math:`d \ge P`, pick any orthonormal frame :math:`E` (P x d)
whose row span contains span(W, V), so that :math:`[W; V] = A E` with
:math:`A A^\top = C`.  Then :math:`g_b = E x_b \sim N(0, I_P)` and the components
:math:`x_b^\perp` orthogonal to the frame are independent of :math:`g` and i.i.d.
standard Gaussian in a :math:`(d-P)`-dimensional space, so

.. math::

    (\lambda_b, \nu_b) = A\, g_b, \qquad
    S = g^\top g + S^\perp, \qquad S^\perp \sim \mathrm{Wishart}_B(d - P, I_B).  \tag{2}

Replacing :math:`A` by another square root :math:`A O` (:math:`O` orthogonal) maps
:math:`g \mapsto O g`, which has the same law and the same Gram :math:`g^\top g`: the
conditional law of :math:`(\Lambda, N, S)` depends on the past **only through**
:math:`C`, i.e. through :math:`(Q, M)`, :math:`G` and :math:`d`.  The label noise is
independent of everything, and :math:`a'` depends on :math:`(a, \Lambda, N, \xi)`.  By
(1), :math:`(Q_t, M_t, a_t)` is therefore a Markov chain whose kernel depends only on
:math:`(G, d)` and the problem, and sampling (2) then applying (1) draws it *exactly*:
the joint law over all steps equals that of the full d-dimensional simulation (up to
floating-point rounding).  The span of :math:`W` does grow by the :math:`x_b`
directions, but the next step's samples are fresh, so only the new :math:`C` matters.
Using a fixed P-dimensional frame (rather than the rank ``r`` of ``C``) needs no rank
decision: when :math:`\mathrm{rank}\, C < P` the extra frame directions simply move
:math:`P - r` degrees of freedom from the Wishart part into :math:`g^\top g`, with the
same law.  The factor :math:`A` is the Cholesky factor of ``C`` (with a zero column where a
pivot is at rounding level when ``C`` is singular, :func:`psd_factor`), and
:math:`S^\perp` is drawn by the Bartlett decomposition (:func:`bartlett_factor`), so a
step costs :math:`O(R\,(P^3 + P^2 B + K B^2))`, independent of ``d``.

Random stream
-------------
The random numbers are drawn in *stream blocks* of ``T`` steps (:func:`stream_block`:
``STREAM_BLOCK`` = 256 steps, fewer when ``R`` is large, at most ``STREAM_NUMBERS``
numbers): four generator calls per block (frame coordinates ``g``, Bartlett chi-squares,
Bartlett normals, label noise; :meth:`CommitteeExactStepper.refill`), kept in the state
(``"draws"``, ``"draws_used"``) and so in the checkpoints.  Blocks are aligned on the
step count from the start of the run, so the trajectory of a seed does not depend on how
the run is cut into calls (recording times, ``stop_every``, checkpoints and resumes,
:meth:`~CommitteeExactStepper.step` or :meth:`~CommitteeExactStepper.step_block`), nor on
the path (compiled or NumPy).  ``T`` itself *is* part of the stream: it is a function of
``(R, K + M, B, d, noise)`` only.  With ``T = 1`` the order is the per-step order the
engine used before it drew in blocks (frame, :class:`popdyn.samplers.BartlettFactor`,
noise); for ``T > 1`` a seed gives other, equally distributed, paths than that order.

Compiled steps
--------------
:meth:`CommitteeExactStepper.step_block` runs many steps per call in a compiled kernel
(numba through :mod:`popdyn._jit`, when installed and the activations have a compiled
form: the registry's closed forms and polynomials) or, otherwise, the vectorised NumPy
step in a loop.  Both take the same random numbers from the stream block and apply the
same operations; they differ only in the order of additions inside the small matrix
products, the Cholesky factor (LAPACK vs the kernel's loop) and libm's ``erf``/``exp``:
relative differences ~1e-15 that the dynamics carries along (``tests/test_compiled.py``
bounds them by ``PATH_RTOL`` = 1e-12 over thousands of steps; where ``C`` is nearly
singular two factors differ by ~1e-16 cond(C)).  Measured on the shared 2-core development
machine (``benchmarks/bench_simulate.py --committee``), erf K = M = 2, one replica: about
3e6 steps per CPU second compiled against 3e4 for the NumPy step (wall clock under load:
1.8e6 against 1.0e4 steps/s).  The first compiled call in a process costs about 1.5 s
(importing numba and starting LLVM; loading the cached machine code takes ~0.02 s); the
first one after an install or an edit of the kernel compiles it into ``__pycache__``
(~7-9 s, ``benchmarks/bench_exact_simulator.py`` (e)).  Set ``POPDYN_NO_JIT=1`` for the
NumPy path (e.g. many short runs in separate processes).

Validity
--------
Requires ``d >= K + M`` (a P-dimensional frame must exist; below that the weights and
teacher vectors cannot be generic).  Exact for any activations and any ``d``; the only
approximations are floating-point rounding (relative ``~1e-16`` per step; ``Q`` is kept
exactly symmetric) and the rank decision of :func:`psd_factor` (pivots below
``PIVOT_RTOL`` = 1e-13 of their diagonal entry count as exact dependence).

Step sizes
----------
The engine's ``eta`` is the first-layer step; the second-layer step is
:math:`\eta_a = \eta\,\delta_a/\delta`, so ``eta = problem.eta(d)`` (:math:`\delta/d`)
gives :math:`\eta_a = \delta_a/d` (:func:`step_sizes`), exactly as the full engine
(:mod:`popdyn.models.committee_sim`).  The engine records ``t = eta * steps``;
:func:`popdyn.models.committee.simulate_committee` runs either engine in the ODE's time
``t = steps/d``.  The overlaps do not depend on ``problem.conventions``
(:math:`Q = J J^\top/N = W W^\top` etc.), so the exact engine ignores that option.

Initialisation (``init``)
-------------------------
* a float ``s > 0``: first-layer rows i.i.d. :math:`N(0, s^2 I_d/d)` (so
  :math:`Q_0 = s^2 I + O(d^{-1/2})`), drawn through their exact overlap law
  (:func:`initial_overlaps`);
* ``"uniform"``: rows i.i.d. uniform on the unit sphere :math:`S^{d-1}`;
* a dict ``{"Q": Q0, "M": M0}`` (optionally ``"a": a0``): that exact state.

``a`` starts at ``problem.a0`` unless the dict gives ``"a"``.  With ``same_init`` (the
default) every replica starts from the same draw, as the full engine starts every
replica from the same ``W0``.

References
----------
D. Saad, S. A. Solla, "On-line learning in soft committee machines", PRE 52, 4225 (1995).
S. Goldt, M. Advani, A. M. Saxe, F. Krzakala, L. Zdeborová, "Dynamics of stochastic
gradient descent for two-layer neural networks in the teacher-student setup",
NeurIPS 2019.
M. S. Bartlett, "On the theory of statistical regression", Proc. R. Soc. Edinburgh 53
(1933) (Bartlett decomposition of the Wishart law).

Examples
--------
>>> from popdyn.models.committee import CommitteeProblem
>>> from popdyn.simulation import simulate
>>> prob = CommitteeProblem("erf", "erf", K=2, M=2)
>>> traj = simulate(prob, d=10**6, eta=prob.eta(10**6), steps=50, replicas=4, init=0.5,
...                 rng=0, engine="exact", n_record=3)
>>> traj.Q.shape, traj.M.shape, traj.a.shape
((3, 4, 2, 2), (3, 4, 2, 2), (3, 4, 2))
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _jit
from .._jit import act_eval, activation_kernel, njit
from .._random import as_generator
from .._validation import check_int, check_real
from ..samplers import BartlettFactor
from ..errors import NumericalError
from .committee import INIT_CHOICES, CommitteeProblem
from .committee import parse_init as _parse_init

__all__ = [
    "CommitteeExactStepper",
    "bartlett_factor",
    "psd_factor",
    "cholesky_psd_kernel",
    "exact_update",
    "initial_overlaps",
    "step_sizes",
    "stream_block",
    "INIT_CHOICES",
    "PIVOT_RTOL",
    "STREAM_BLOCK",
    "STREAM_NUMBERS",
]

#: Rank decision of :func:`psd_factor`: a Cholesky pivot at most this fraction of its diagonal
#: entry means the vector lies in the span of the previous ones up to rounding (the pivot of an
#: exactly dependent vector is a difference of O(1) numbers, ``|p| <~ P * 2.2e-16 * C_jj``; this
#: leaves a 100x margin up to P = 4 and 7x at P = 64).  Such columns are set to zero.  A genuine
#: pivot this small would need a student vector within an angle sqrt(1e-13) ~ 3e-7 of the span
#: of the others, which online SGD reaches only from an explicit start at such an angle.
PIVOT_RTOL = 1e-13
#: Most SGD steps whose random numbers are drawn by one set of generator calls (the *stream
#: block*; module docstring, "Random stream").  256 steps make the NumPy calls' overhead
#: (~10 us per block) negligible at one replica.
STREAM_BLOCK = 256
#: Most random numbers held in one stream block (its buffer is part of the state, so of the
#: checkpoints: 2**16 float64 = 512 kB); with many replicas the block has fewer steps.
STREAM_NUMBERS = 2 ** 16


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------
def bartlett_factor(n: int, B: int, rng=None, size=()) -> np.ndarray:
    r"""Lower-triangular ``L`` with :math:`L L^\top \sim \mathrm{Wishart}_B(n, I_B)`.

    The Gram matrix of ``B`` i.i.d. standard Gaussian vectors in :math:`\mathbb{R}^n`,
    drawn in :math:`O(B^2)` by the Bartlett decomposition (Gram–Schmidt of the vectors):

    .. math::

        L_{ii} = \sqrt{\chi^2_{n-i}}\ (i < n), \qquad
        L_{ij} \sim N(0, 1)\ (j < i,\ j < n), \qquad \text{all others } 0,

    with 0-based indices and all entries independent.  For integer ``n < B`` this is the
    singular Wishart law (rank ``n``): once ``n`` vectors span :math:`\mathbb{R}^n` the
    remaining ones have no orthogonal component.  Delegates to
    :class:`popdyn.samplers.BartlettFactor` (stream order ``"chi2_first"``).

    Parameters
    ----------
    n : int
        Degrees of freedom (the dimension of the space), ``>= 0``.
    B : int
        Size of the matrix, ``>= 1``.
    rng : int, Generator or None
    size : tuple of int
        Leading batch shape.

    Returns
    -------
    ndarray, shape ``size + (B, B)``

    Examples
    --------
    >>> L = bartlett_factor(5, 3, rng=0, size=(2,))
    >>> L.shape, bool(np.all(np.triu(L, 1) == 0))
    ((2, 3, 3), True)
    """
    n = check_int("n", n, minimum=0)
    B = check_int("B", B, minimum=1)
    size = tuple(size)
    rng = as_generator(rng)
    return BartlettFactor(n, B).draw(rng, size)


def _bartlett_pattern(n: int, B: int) -> BartlettFactor:
    """The stepper's precomputed sampler of the ``B x B`` Bartlett factor with ``n`` degrees of
    freedom (chi-squares drawn before normals; :class:`popdyn.samplers.BartlettFactor`)."""
    return BartlettFactor(n, B)


def psd_factor(C) -> np.ndarray:
    r"""A lower-triangular ``F`` with :math:`F F^\top = C` for PSD ``C`` of shape ``(..., P, P)``.

    The Cholesky factor (LAPACK) when every matrix of the batch is positive definite with
    pivots above rounding level; otherwise the whole batch is factored by the
    *semidefinite* Cholesky recursion (:func:`cholesky_psd_kernel`, here vectorised over
    the batch): a pivot :math:`p_j \le` ``PIVOT_RTOL`` :math:`C_{jj}` (vector ``j`` lies in
    the span of the previous ones, to rounding) gives a zero column, which for a PSD
    matrix is exact.  Any square root serves for the exact step (module docstring), so
    the choice does not change the law; a unique, deterministic one makes the compiled
    and NumPy paths of the engine agree, and keeps identical student vectors identical.

    Examples
    --------
    >>> C = np.array([[1.0, 1.0], [1.0, 1.0]])  # singular
    >>> F = psd_factor(C)
    >>> bool(np.allclose(F @ F.T, C)), float(F[1, 1])
    (True, 0.0)
    """
    C = np.asarray(C, dtype=float)
    try:
        F = np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        return _semidefinite_cholesky(C)
    piv = np.diagonal(F, axis1=-2, axis2=-1)
    piv = piv * piv
    diag = np.diagonal(C, axis1=-2, axis2=-1)
    if piv.min() > PIVOT_RTOL * diag.max() or not np.any(piv <= PIVOT_RTOL * diag):  # the first test is cheaper
        return F
    return _semidefinite_cholesky(C)


def _semidefinite_cholesky(C) -> np.ndarray:
    """:func:`cholesky_psd_kernel` vectorised over the batch (same operations in the same order)."""
    C = np.asarray(C, dtype=float)
    P = C.shape[-1]
    F = np.zeros(C.shape)
    for j in range(P):
        s = np.zeros(C.shape[:-2])
        for k in range(j):
            s = s + F[..., j, k] * F[..., j, k]
        p = C[..., j, j] - s
        ok = p > PIVOT_RTOL * C[..., j, j]
        piv = np.where(ok, np.sqrt(np.where(ok, p, 1.0)), 1.0)
        F[..., j, j] = np.where(ok, piv, 0.0)
        for i in range(j + 1, P):
            s = np.zeros(C.shape[:-2])
            for k in range(j):
                s = s + F[..., i, k] * F[..., j, k]
            F[..., i, j] = np.where(ok, (C[..., i, j] - s) / piv, 0.0)
    return F


@njit
def cholesky_psd_kernel(C, F, rtol):
    r"""Semidefinite Cholesky of one PSD matrix ``C`` (P x P) into ``F`` (lower triangular).

    :math:`p_j = C_{jj} - \sum_{k<j} F_{jk}^2`; if :math:`p_j > \mathrm{rtol}\, C_{jj}`
    then :math:`F_{jj} = \sqrt{p_j}` and :math:`F_{ij} = (C_{ij} - \sum_{k<j} F_{ik}F_{jk})/F_{jj}`
    (``i > j``), else column ``j`` is zero.  A kernel (:mod:`popdyn._jit`) for the compiled
    d-free engines; :func:`psd_factor` is its batched NumPy form.
    """
    P = C.shape[0]
    for i in range(P):
        for j in range(P):
            F[i, j] = 0.0
    for j in range(P):
        s = 0.0
        for k in range(j):
            s = s + F[j, k] * F[j, k]
        p = C[j, j] - s
        if p > rtol * C[j, j]:
            piv = math.sqrt(p)
            F[j, j] = piv
            for i in range(j + 1, P):
                s = 0.0
                for k in range(j):
                    s = s + F[i, k] * F[j, k]
                F[i, j] = (C[i, j] - s) / piv


def step_sizes(problem: CommitteeProblem, eta: float) -> tuple:
    r"""``(eta, eta_a)``: first-layer step ``eta`` and second-layer step
    :math:`\eta_a = \eta\,\delta_a/\delta` (``None`` when the second layer is fixed)."""
    eta = check_real("eta", eta, lower=0.0, lower_open=True)
    if not problem.train_second_layer:
        return eta, None
    return eta, eta * problem.delta_a / problem.delta


def _evaluators(problem: CommitteeProblem):
    return problem.student, problem.student.derivative, problem.teacher


def _update_core(Q, M, a, lam, nu, S, y, evaluators, eta, eta_a) -> None:
    r"""Update (1) in place on ``Q`` (R, K, K), ``M`` (R, K, M), ``a`` (R, K) given the
    fields ``lam`` (R, K, B), ``nu`` (R, M, B), the sample Gram ``S`` (R, B, B) and the
    labels ``y`` (R, B).  ``Q`` stays exactly symmetric."""
    sigma, dsigma, _ = evaluators
    B = lam.shape[-1]
    s_lam = sigma(lam)
    f = np.matmul(a[:, None, :], s_lam)[:, 0, :]  # (R, B)
    delta = f - y
    c = dsigma(lam)
    c *= a[:, :, None]
    c *= delta[:, None, :] * (eta / B)  # (R, K, B)
    cl = np.matmul(c, lam.transpose(0, 2, 1))  # (R, K, K): sum_b c_ib lam_kb
    csc = np.matmul(np.matmul(c, S), c.transpose(0, 2, 1))
    # x + y == y + x bitwise, so both sums are exactly symmetric and so is the increment
    dQ = 0.5 * (csc + csc.transpose(0, 2, 1)) - (cl + cl.transpose(0, 2, 1))
    Q += dQ
    M -= np.matmul(c, nu.transpose(0, 2, 1))
    if eta_a is not None:
        a -= (eta_a / B) * np.matmul(s_lam, delta[:, :, None])[..., 0]


def exact_update(problem: CommitteeProblem, Q, M, a, lam, nu, S, y, *, eta: float) -> tuple:
    r"""One SGD step on the overlaps given the fields and the sample Gram: ``(Q', M', a')``.

    This is the deterministic map (1) of the module docstring that the exact engine
    applies after drawing ``(lam, nu, S)`` from their law.  Given the fields and the
    Gram computed from actual samples it reproduces the explicit d-dimensional update
    :math:`w_i' = w_i - \sum_b c_{ib} x_b` exactly (up to rounding).

    Parameters
    ----------
    problem : CommitteeProblem
    Q, M, a : array_like, shapes (R, K, K), (R, K, M), (R, K)
        Overlaps and second layer before the step.
    lam, nu : array_like, shapes (R, K, B), (R, M, B)
        Local fields :math:`\lambda_{ib} = w_i\cdot x_b`, :math:`\nu_{nb} = v_n\cdot x_b`.
    S : array_like, shape (R, B, B)
        Sample Gram matrix :math:`x_b\cdot x_{b'}`.
    y : array_like, shape (R, B)
        Labels (with their noise).
    eta : float
        First-layer step; the second layer uses :func:`step_sizes`.

    Returns
    -------
    Q', M', a' : ndarrays (new arrays; the inputs are not modified)
    """
    if not isinstance(problem, CommitteeProblem):
        raise TypeError(f"`problem` must be a CommitteeProblem, got {type(problem).__name__}.")
    eta, eta_a = step_sizes(problem, eta)
    Q = np.array(Q, dtype=float)
    M = np.array(M, dtype=float)
    a = np.array(a, dtype=float)
    lam, nu, S, y = (np.asarray(v, dtype=float) for v in (lam, nu, S, y))
    K, Mn = problem.K, problem.M
    if Q.ndim != 3 or Q.shape[1:] != (K, K):
        raise ValueError(f"`Q` must have shape (R, {K}, {K}), got {Q.shape}.")
    R = Q.shape[0]
    B = lam.shape[-1] if lam.ndim == 3 else -1
    for name, arr, shape in (("M", M, (R, K, Mn)), ("a", a, (R, K)), ("lam", lam, (R, K, B)),
                             ("nu", nu, (R, Mn, B)), ("S", S, (R, B, B)), ("y", y, (R, B))):
        if arr.shape != shape or B < 1:
            raise ValueError(f"`{name}` must have shape {shape}, got {arr.shape}.")
    _update_core(Q, M, a, lam, nu, S, y, _evaluators(problem), eta, eta_a)
    return Q, M, a


# --------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------


def _check_dimension(problem: CommitteeProblem, d) -> int:
    P = problem.K + problem.M
    d = check_int("d", d, minimum=1)
    if d < P:
        raise ValueError(
            f"`d` must be >= K + M = {P} for the exact engine (the student and teacher vectors "
            f"need a {P}-dimensional frame; the perpendicular Wishart part has d - K - M degrees of "
            f"freedom), got d = {d}."
        )
    return d


def initial_overlaps(problem: CommitteeProblem, d: int, *, init=1.0, rng=None, replicas: int = 1,
                     same_init: bool = True) -> tuple:
    r"""Initial ``(Q0, M0, a0)`` drawn from the exact law of the first-layer initialisation.

    For ``init = s`` the rows of :math:`W_0` are i.i.d. :math:`N(0, s^2 I_d / d)`:
    writing :math:`W_0 = (s/\sqrt d)\, Z` and splitting ``Z`` along span(V)
    (dimension :math:`r_G = \mathrm{rank}\,G`) and its complement,

    .. math::

        M_0 = \frac{s}{\sqrt d}\, \xi F_G^\top, \qquad
        Q_0 = \frac{s^2}{d}\left(\xi\xi^\top + L L^\top\right),

    with :math:`\xi` (K x r_G) i.i.d. standard normal, :math:`F_G` (M x r_G) a factor
    of :math:`G = F_G F_G^\top` of full column rank, and :math:`L L^\top \sim
    \mathrm{Wishart}_K(d - r_G, I)` independent (:func:`bartlett_factor`).  For
    ``"uniform"`` the same draw with :math:`s^2 = d` is normalised,
    :math:`w_i \to w_i/\|w_i\|` (rows uniform on :math:`S^{d-1}`).  A dict gives the
    state directly.

    Returns
    -------
    Q0, M0, a0 : ndarrays
        Shapes ``(K, K)``, ``(K, M)``, ``(K,)`` when ``same_init``; otherwise with a
        leading replica axis ``R`` (``a0`` is then broadcast).

    Examples
    --------
    >>> from popdyn.models.committee import CommitteeProblem
    >>> prob = CommitteeProblem("erf", "erf", K=2, M=1)
    >>> Q0, M0, a0 = initial_overlaps(prob, 10**6, init=1.0, rng=0)
    >>> bool(np.allclose(Q0, np.eye(2), atol=1e-2)), bool(np.abs(M0).max() < 1e-2)
    (True, True)
    """
    if not isinstance(problem, CommitteeProblem):
        raise TypeError(f"`problem` must be a CommitteeProblem, got {type(problem).__name__}.")
    d = _check_dimension(problem, d)
    replicas = check_int("replicas", replicas, minimum=1)
    kind, value = _parse_init(init, problem)
    K = problem.K
    lead = () if same_init else (replicas,)
    if kind == "state":
        Q0, M0, a0 = value
        return tuple(np.broadcast_to(v, lead + v.shape).copy() for v in (Q0, M0, a0))
    rng = as_generator(rng)
    lamG, U = np.linalg.eigh(problem.G)
    keep = lamG > 1e-12 * max(1.0, float(lamG.max()))
    FG = U[:, keep] * np.sqrt(lamG[keep])  # (M, r_G), G = FG FG^T
    rG = FG.shape[1]
    xi = rng.standard_normal(lead + (K, rG))
    L = bartlett_factor(d - rG, K, rng, size=lead)
    gram = xi @ np.swapaxes(xi, -1, -2) + L @ np.swapaxes(L, -1, -2)  # Z Z^T
    ZV = xi @ FG.T  # Z V^T
    if kind == "scale":
        s = value
        Q0, M0 = (s * s / d) * gram, (s / math.sqrt(d)) * ZV
    else:
        norm = np.sqrt(np.diagonal(gram, axis1=-2, axis2=-1))
        Q0 = gram / (norm[..., :, None] * norm[..., None, :])
        M0 = ZV / norm[..., :, None]
    Q0 = 0.5 * (Q0 + np.swapaxes(Q0, -1, -2))
    a0 = np.broadcast_to(np.array(problem.a0, dtype=float), lead + (K,)).copy()
    return Q0, M0, a0


def _describe_init(init):
    if isinstance(init, str):
        return init
    if isinstance(init, numbers.Real) and not isinstance(init, bool):
        return float(init)
    if isinstance(init, dict):
        return {k: np.asarray(v, dtype=float).tolist() for k, v in init.items() if v is not None}
    return repr(init)


# --------------------------------------------------------------------------------------
# the random stream
# --------------------------------------------------------------------------------------
def _bartlett_entries(dof: int, B: int) -> tuple:
    """``(df, rows, cols)`` of the Bartlett factor of :math:`\\mathrm{Wishart}_B(n, I)`: the
    chi-square degrees of freedom ``n - i`` of the diagonal entries ``i < min(n, B)`` and the
    below-diagonal entries ``(i, j)``, ``j < i``, ``j < n``, in the row-major order of
    ``numpy.tril_indices(B, -1)`` (the order of :class:`popdyn.samplers.BartlettFactor`)."""
    i = np.arange(B)
    df = (dof - i[i < dof]).astype(float)
    rows, cols = np.tril_indices(B, -1)
    keep = cols < dof
    return df, np.ascontiguousarray(rows[keep], dtype=np.int64), np.ascontiguousarray(cols[keep], dtype=np.int64)


def stream_block(R: int, P: int, B: int, n_chi: int, n_normal: int, noise: bool) -> int:
    r"""Steps per stream block: ``min(STREAM_BLOCK, STREAM_NUMBERS // numbers per step)``, at least 1.

    One step uses ``R (P B + n_chi + n_normal + B [noise])`` random numbers (frame
    coordinates, Bartlett chi-squares and normals, label noise).

    Examples
    --------
    >>> stream_block(1, 4, 1, 1, 0, False), stream_block(100, 4, 1, 1, 0, False)
    (256, 131)
    """
    per_step = R * (P * B + n_chi + n_normal + (B if noise else 0))
    return int(max(1, min(STREAM_BLOCK, STREAM_NUMBERS // per_step)))


# --------------------------------------------------------------------------------------
# the compiled steps
# --------------------------------------------------------------------------------------
@njit
def _exact_steps(Q, M, a, G, a_star, draws, T, j0, n_steps, B, n_chi, rows, cols, noise_sd, eta, eta_a,
                 s_code, s_coef, ds_code, ds_coef, t_code, t_coef, frozen):
    """``n_steps`` exact SGD steps of every replica not ``frozen``, in place, with the random
    numbers of steps ``j0 .. j0 + n_steps - 1`` of the stream block ``draws`` (layout in
    :meth:`CommitteeExactStepper.refill`).  ``eta_a < 0``: fixed second layer; ``noise_sd == 0``:
    no label noise in the block.  Returns the first step (1-based) after which some replica's
    overlaps are not finite, else 0.  The operations follow :meth:`CommitteeExactStepper.draw`
    and :func:`_update_core`, except that :math:`c S c^\top` is summed as
    :math:`(c g^\top)(c g^\top)^\top + (c L)(c L)^\top` without forming ``S`` (O(K B (P + B))
    instead of O(B^2 (P + B)) operations per step); the results differ by the order of the
    additions (and libm's erf/exp), i.e. by rounding."""
    R, K, Mn = Q.shape[0], Q.shape[1], M.shape[2]
    P = K + Mn
    n_normal = rows.size
    o_chi = T * R * P * B
    o_nrm = o_chi + T * R * n_chi
    o_xi = o_nrm + T * R * n_normal
    C = np.empty((P, P))
    F = np.empty((P, P))
    g = np.empty((P, B))
    Z = np.empty((P, B))
    L = np.zeros((B, B))
    y = np.empty(B)
    delta = np.empty(B)
    s_lam = np.empty((K, B))
    c = np.empty((K, B))
    u = np.empty((K, P))
    v = np.empty((K, B))
    cl = np.empty((K, K))
    csc = np.empty((K, K))
    step_b = eta / B
    fail = 0
    for r in range(R):
        if frozen[r]:
            continue
        for i in range(Mn):
            for j in range(Mn):
                C[K + i, K + j] = G[i, j]
        for t in range(n_steps):
            blk = (j0 + t) * R + r
            # joint Gram matrix and its factor
            for i in range(K):
                for j in range(K):
                    C[i, j] = Q[r, i, j]
                for n in range(Mn):
                    C[i, K + n] = M[r, i, n]
                    C[K + n, i] = M[r, i, n]
            cholesky_psd_kernel(C, F, PIVOT_RTOL)
            # frame coordinates, fields Z = F g, Bartlett factor L (S = g^T g + L L^T, never formed)
            base = blk * P * B
            for p in range(P):
                for b in range(B):
                    g[p, b] = draws[base + p * B + b]
            for p in range(P):
                for b in range(B):
                    acc = 0.0
                    for q in range(P):
                        acc += F[p, q] * g[q, b]
                    Z[p, b] = acc
            base = o_chi + blk * n_chi
            for i in range(n_chi):
                L[i, i] = draws[base + i]
            base = o_nrm + blk * n_normal
            for q in range(n_normal):
                L[rows[q], cols[q]] = draws[base + q]
            # labels, errors and the coefficients c_ib
            for b in range(B):
                acc = 0.0
                for n in range(Mn):
                    acc += a_star[n] * act_eval(t_code, t_coef, Z[K + n, b])
                if noise_sd > 0.0:
                    acc = acc + noise_sd * draws[o_xi + blk * B + b]
                y[b] = acc
            for b in range(B):
                acc = 0.0
                for k in range(K):
                    s_lam[k, b] = act_eval(s_code, s_coef, Z[k, b])
                    acc += a[r, k] * s_lam[k, b]
                delta[b] = acc - y[b]
            for k in range(K):
                for b in range(B):
                    c[k, b] = act_eval(ds_code, ds_coef, Z[k, b]) * a[r, k] * (delta[b] * step_b)
            # update (1): Q' = Q - c lam^T - lam c^T + c S c^T, M' = M - c nu^T, with
            # c S c^T = u u^T + v v^T, u = c g^T (K x P), v = c L (K x B): O(K B (P + B)), not O(B^2 (P + B))
            for k in range(K):
                for p in range(P):
                    acc = 0.0
                    for b in range(B):
                        acc += c[k, b] * g[p, b]
                    u[k, p] = acc
                for q in range(B):
                    acc = 0.0
                    for b in range(q, B):  # L is lower triangular
                        acc += c[k, b] * L[b, q]
                    v[k, q] = acc
            for i in range(K):
                for j in range(K):
                    acc = 0.0
                    for b in range(B):
                        acc += c[i, b] * Z[j, b]
                    cl[i, j] = acc
                    acc = 0.0
                    for p in range(P):
                        acc += u[i, p] * u[j, p]
                    acc2 = 0.0
                    for q in range(B):
                        acc2 += v[i, q] * v[j, q]
                    csc[i, j] = acc + acc2
            total = 0.0
            for i in range(K):
                for j in range(K):
                    Q[r, i, j] += 0.5 * (csc[i, j] + csc[j, i]) - (cl[i, j] + cl[j, i])
                    total += Q[r, i, j]
                for n in range(Mn):
                    acc = 0.0
                    for b in range(B):
                        acc += c[i, b] * Z[K + n, b]
                    M[r, i, n] -= acc
                    total += M[r, i, n]
            if eta_a >= 0.0:
                for k in range(K):
                    acc = 0.0
                    for b in range(B):
                        acc += s_lam[k, b] * delta[b]
                    a[r, k] -= (eta_a / B) * acc
            for k in range(K):
                total += a[r, k]
            if not math.isfinite(total):
                if fail == 0 or t + 1 < fail:
                    fail = t + 1
                break
    return fail


# --------------------------------------------------------------------------------------
# the stepper
# --------------------------------------------------------------------------------------
class CommitteeExactStepper:
    r"""Exact d-free online-SGD steps of the committee machine (stepper protocol,
    ``engine="exact"``).

    Built by :func:`popdyn.simulation.make_stepper` / :func:`popdyn.simulation.simulate` with
    ``engine="exact"``; see the module docstring for the law and the update.  The state is
    ``{"Q": (R, K, K), "M": (R, K, M), "a": (R, K), "draws": (n,), "draws_used": ()}``:
    the overlaps, the current stream block of random numbers and how many of its steps
    are used (module docstring, "Random stream"); ``observe`` returns copies of the
    overlaps.  :meth:`step_block` advances many steps per call, compiled (:mod:`popdyn._jit`)
    when numba is available and the activations have a compiled form, else in NumPy;
    both consume the same random numbers.

    Attributes
    ----------
    Q0, M0, a0 : ndarray
        Initial state (with a replica axis unless ``same_init``).
    eta, eta_a : float
        Step sizes (``eta_a`` is ``None`` with a fixed second layer).
    batch : int
    block : int
        Steps per stream block (:func:`stream_block`).
    compiled : bool
        Whether :meth:`step_block` runs the compiled kernel (decided at construction).
    """

    model = "committee"
    algorithms = ("sgd",)
    continuous = False

    def __init__(self, problem: CommitteeProblem, config, streams: dict):
        if not isinstance(problem, CommitteeProblem):
            raise TypeError(f"`problem` must be a CommitteeProblem, got {type(problem).__name__}.")
        if config.algorithm != "sgd":
            raise ValueError(f"`algorithm` must be 'sgd' for the exact engine (online SGD with fresh samples); "
                             f"got {config.algorithm!r}.")
        self.problem = problem
        self.config = config
        self.R, self.K, self.M, self.d = config.replicas, problem.K, problem.M, config.d
        self.P = self.K + self.M
        _check_dimension(problem, self.d)
        _parse_init(config.init, problem)  # validate before drawing
        self.batch = config.batch
        self.eta, self.eta_a = step_sizes(problem, config.eta)
        self.Q0, self.M0, self.a0 = initial_overlaps(problem, self.d, init=config.init, rng=streams["init"],
                                                     replicas=self.R, same_init=config.same_init)
        self._evaluators = _evaluators(problem)
        self._noise_sd = math.sqrt(problem.noise)
        self._a_star = np.array(problem.a_star, dtype=float)
        self._G = np.array(problem.G, dtype=float)  # writable: one compiled signature
        self._pattern = _bartlett_pattern(self.d - self.P, self.batch)
        self._C = np.empty((self.R, self.P, self.P))
        self._C[:, self.K:, self.K:] = problem.G
        self._L = np.zeros((self.R, self.batch, self.batch))
        acts = [activation_kernel(problem.student), activation_kernel(problem.student, derivative=True),
                activation_kernel(problem.teacher)]
        self.compiled = _jit.enabled() and all(x is not None for x in acts)
        self._acts = acts
        self._kernel = _exact_steps.function() if self.compiled else None
        if self.compiled:  # compile (or load from numba's cache) now, outside the timed loop
            self._run(self.init_state(), 0, 0, np.zeros(self.R, dtype=np.bool_))

    # -- the random stream ------------------------------------------------------------------
    def _layout(self) -> tuple:
        """``(T, df, rows, cols, sizes)``: steps per block, the Bartlett pattern of ``_pattern``
        and the sizes of the four segments (frame, chi, normals, label noise) of one block."""
        cached = getattr(self, "_layout_cache", None)
        if cached is not None and cached[0] is self._pattern:
            return cached[1]
        df, rows, cols = _bartlett_entries(self._pattern.dof, self._pattern.dim)
        R, P, B = self.R, self.P, self.batch
        noise = self._noise_sd > 0.0
        T = stream_block(R, P, B, df.size, rows.size, noise)
        sizes = (T * R * P * B, T * R * df.size, T * R * rows.size, T * R * B if noise else 0)
        self._layout_cache = (self._pattern, (T, df, rows, cols, sizes), np.arange(df.size))
        return T, df, rows, cols, sizes

    @property
    def block(self) -> int:
        """Steps per stream block."""
        return self._layout()[0]

    def refill(self, state, rng) -> None:
        r"""Draw the next stream block into ``state["draws"]`` and mark it unused.

        Segments, in this order, each one generator call of shape ``(T, R, ...)``: the frame
        coordinates ``g`` (T, R, P, B) (standard normals), the square roots of the Bartlett
        chi-squares (T, R, k) (``rng.chisquare``), the Bartlett normals (T, R, m), and with
        label noise its normals (T, R, B).  For ``T = 1`` this is the per-step order of
        :meth:`draw` in earlier versions (frame, :class:`popdyn.samplers.BartlettFactor`,
        noise).
        """
        T, df, _, _, sizes = self._layout()
        buf = state["draws"]
        R, P, B = self.R, self.P, self.batch
        o = 0
        rng.standard_normal(out=buf[o:o + sizes[0]].reshape(T, R, P, B))
        o += sizes[0]
        if df.size == 1:  # scalar degrees of freedom: numpy's fast path, the same numbers
            buf[o:o + sizes[1]] = np.sqrt(rng.chisquare(float(df[0]), size=(T, R))).ravel()
        elif df.size:
            buf[o:o + sizes[1]] = np.sqrt(rng.chisquare(df, size=(T, R, df.size))).ravel()
        o += sizes[1]
        if sizes[2]:
            rng.standard_normal(out=buf[o:o + sizes[2]])
        o += sizes[2]
        if sizes[3]:
            rng.standard_normal(out=buf[o:o + sizes[3]])
        state["draws_used"][...] = 0

    def _segments(self, buf) -> tuple:
        """Views ``(g, chi, normals, xi)`` of shapes (T, R, ...) into the stream block ``buf``."""
        cached = getattr(self, "_segments_cache", None)
        if cached is not None and cached[0] is buf and cached[1] is self._pattern:
            return cached[2]
        T, df, rows, _, sizes = self._layout()
        R, P, B = self.R, self.P, self.batch
        o = np.cumsum((0,) + sizes)
        views = (buf[o[0]:o[1]].reshape(T, R, P, B), buf[o[1]:o[2]].reshape(T, R, df.size),
                 buf[o[2]:o[3]].reshape(T, R, rows.size), buf[o[3]:o[4]].reshape(T, R, B) if sizes[3] else None)
        self._segments_cache = (buf, self._pattern, views)
        return views

    def _take(self, state, rng) -> tuple:
        """The next step's ``(g, L, xi)`` from the stream block (refilled when used up)."""
        T, df, rows, cols, _ = self._layout()
        j = int(state["draws_used"])
        if j >= T:
            self.refill(state, rng)
            j = 0
        state["draws_used"][...] = j + 1
        g, chi, normals, xi = self._segments(state["draws"])
        L = self._L
        if df.size:
            k = self._layout_cache[2]
            L[:, k, k] = chi[j]
        if rows.size:
            L[:, rows, cols] = normals[j]
        return g[j], L, None if xi is None else xi[j]

    # -- protocol -------------------------------------------------------------------------
    @property
    def constants(self) -> dict:
        """Fixed arrays saved in checkpoints to verify a resume: the teacher Gram ``G``."""
        return {"G": np.array(self.problem.G)}

    def init_state(self) -> dict:
        """Fresh state: the overlaps ``{"Q": (R, K, K), "M": (R, K, M), "a": (R, K)}``, an
        empty stream block ``"draws"`` (1-d, never of length ``R``, so never taken for
        per-replica rows) and ``"draws_used"`` (0-d int; ``T`` = used up)."""
        R = self.R
        T, _, _, _, sizes = self._layout()
        return {"Q": np.broadcast_to(self.Q0, (R, self.K, self.K)).copy(),
                "M": np.broadcast_to(self.M0, (R, self.K, self.M)).copy(),
                "a": np.broadcast_to(self.a0, (R, self.K)).copy(),
                "draws": np.zeros(sum(sizes)), "draws_used": np.array(T, dtype=np.int64)}

    def observe(self, state) -> dict:
        """``{"Q", "M", "a"}`` (copies), shapes (R, K, K), (R, K, M), (R, K)."""
        return {name: state[name].copy() for name in ("Q", "M", "a")}

    def work_per_step(self) -> float:
        """Rough multiply-adds per step (independent of ``d``)."""
        P, B = self.P, self.batch
        return float(self.R * (P ** 3 + P * P * B + self.K * B * B + B * B * B))

    def describe(self) -> dict:
        """JSON-friendly extra ``meta``: engine, initial state, step sizes, Wishart dof, stream
        block, and whether the compiled kernel ran."""
        return {"engine": "exact", "init": _describe_init(self.config.init), "Q0": self.Q0.tolist(),
                "M0": self.M0.tolist(), "a0": self.a0.tolist(), "eta_a": self.eta_a,
                "batch_used": self.batch, "perp_dof": self.d - self.P, "stream_block": self.block,
                "compiled": self.compiled}

    def check_state(self, state) -> str | None:
        """Divergence message when a student norm ``Q_ii`` exceeds
        :data:`~popdyn.models.committee.NORM_GROWTH_LIMIT` times the problem's norm scale
        (:func:`~popdyn.models.committee.check_norms`), else ``None`` (called by
        :func:`popdyn.simulation.simulate` at each recording time)."""
        from .committee import check_norms

        return check_norms(self.problem, state["Q"], self.Q0, eta=self.eta, d=self.d)

    # -- the step ---------------------------------------------------------------------------
    def draw(self, state, rng) -> tuple:
        r"""Draw the next step's fields and Gram from their exact law given ``state``.

        Returns ``(lam, nu, S, y)`` of shapes (R, K, B), (R, M, B), (R, B, B), (R, B)
        (see (2) in the module docstring), from the next step of the stream block (drawing a
        new block from ``rng`` when the current one is used up); used by the NumPy step.
        """
        K = self.K
        g, L, xi = self._take(state, rng)
        C = self._C
        C[:, :K, :K] = state["Q"]
        C[:, :K, K:] = state["M"]
        C[:, K:, :K] = state["M"].transpose(0, 2, 1)
        F = psd_factor(C)
        Z = np.einsum("rpq,rqb->rpb", F, g) if self.batch == 1 else np.matmul(F, g)  # the faster of the two
        S = np.matmul(g.transpose(0, 2, 1), g)
        S += np.matmul(L, L.transpose(0, 2, 1))
        lam, nu = Z[:, :K, :], Z[:, K:, :]
        y = np.matmul(self._a_star, self._evaluators[2](nu))  # (R, B)
        if xi is not None:
            y += self._noise_sd * xi
        return lam, nu, S, y

    def _numpy_step(self, state, rng, active=None) -> None:
        lam, nu, S, y = self.draw(state, rng)
        Q, M, a = state["Q"], state["M"], state["a"]
        _update_core(Q, M, a, lam, nu, S, y, self._evaluators, self.eta, self.eta_a)
        if active is not None:
            Q, M, a = Q[active], M[active], a[active]
        if not (math.isfinite(float(Q.sum())) and math.isfinite(float(M.sum()))
                and math.isfinite(float(a.sum()))):
            raise NumericalError(self._diverged())

    def _diverged(self) -> str:
        return (f"non-finite overlaps after an exact SGD step with eta = {self.eta:g}; the dynamics "
                "diverged. Try a smaller `eta` (delta) or a bounded activation.")

    def step(self, state, rng) -> None:
        """One exact online-SGD step, in place on ``state`` (``rng``: the noise stream);
        ``step_block(state, rng, 1)``."""
        try:
            self.step_block(state, rng, 1)
        except NumericalError:
            raise NumericalError(self._diverged()) from None

    def step_block(self, state, rng, n_steps: int, frozen=None) -> None:
        """``n_steps`` exact SGD steps in place (block-stepping protocol of :mod:`popdyn.simulation`).

        Equal to ``n_steps`` calls of :meth:`step` (the same random numbers; the compiled and
        NumPy paths agree to rounding).  ``frozen`` (bool array (R,) or ``None``): replicas
        whose overlaps stay unchanged (their random numbers are still consumed).  Raises
        :class:`~popdyn.errors.NumericalError` with ``step`` = the 1-based step of this call
        after which an overlap of a replica that is not frozen became non-finite.
        """
        frozen = None if frozen is None or not np.any(frozen) else np.asarray(frozen, dtype=bool)
        if not self.compiled:
            active = None if frozen is None else ~frozen
            keep = None if frozen is None else {k: state[k][frozen] for k in ("Q", "M", "a")}
            for t in range(n_steps):
                try:
                    self._numpy_step(state, rng, active)
                except NumericalError as exc:
                    raise NumericalError(str(exc), step=t + 1) from None
                if keep is not None:
                    for k, v in keep.items():
                        state[k][frozen] = v
            return
        T = self._layout()[0]
        mask = np.zeros(self.R, dtype=np.bool_) if frozen is None else frozen
        done = 0
        while done < n_steps:
            j = int(state["draws_used"])
            if j >= T:
                self.refill(state, rng)
                j = 0
            m = min(n_steps - done, T - j)
            fail = self._run(state, j, m, mask)
            state["draws_used"][...] = j + m
            if fail:
                raise NumericalError(self._diverged(), step=done + fail)
            done += m

    def _run(self, state, j: int, m: int, mask) -> int:
        """The compiled kernel on steps ``j .. j + m - 1`` of the current stream block."""
        T, df, rows, cols, _ = self._layout()
        (s_code, s_coef), (ds_code, ds_coef), (t_code, t_coef) = self._acts
        eta_a = -1.0 if self.eta_a is None else float(self.eta_a)
        return self._kernel(state["Q"], state["M"], state["a"], self._G, self._a_star, state["draws"], T, j, m,
                            self.batch, df.size, rows, cols, self._noise_sd, self.eta, eta_a,
                            s_code, s_coef, ds_code, ds_coef, t_code, t_coef, mask)


def _register() -> None:
    from ..simulation import register_stepper

    register_stepper(CommitteeProblem, "popdyn.models.committee_exact:CommitteeExactStepper", engine="exact")


_register()
