r"""Full d-dimensional simulator of online SGD for the committee machine (``engine="full"``).

The ground truth for the committee ODE (:mod:`popdyn.models.committee`) and for the exact
d-free engine (:mod:`popdyn.models.committee_exact`): the weights :math:`W` (``R x K x d``)
and the fresh samples :math:`x \in \mathbb{R}^d` are materialised, vectorised over
replicas and the minibatch; the only Python loop is the engine's loop over steps.  It
plugs into :func:`popdyn.simulation.simulate` as the ``engine="full"`` stepper of
:class:`~popdyn.models.committee.CommitteeProblem` (stepper protocol in
:mod:`popdyn.simulation`).

Model and update (popdyn conventions)
-------------------------------------
Teacher rows :math:`v_n` of ``V`` (M x d) with :math:`V V^\top = G` (drawn once per run from
the ``model`` stream by :func:`teacher_vectors`, shared by the replicas),
:math:`y = \sum_n a^*_n\sigma^*(v_n\cdot x) + \sqrt{\texttt{noise}}\,\xi`, student
:math:`f(x) = \sum_i a_i\sigma(w_i\cdot x)`.  One step draws, per replica, a fresh minibatch
:math:`x_1..x_B \sim N(0, I_d)` (then, if ``noise > 0``, the label noise) and applies the
mean-gradient step of :math:`\tfrac12 (f - y)^2`

.. math::

    w_i \leftarrow w_i - \frac{\eta}{B}\sum_b a_i\Delta_b\,\sigma'(\lambda_{ib})\, x_b, \qquad
    a_i \leftarrow a_i - \frac{\eta_a}{B}\sum_b \Delta_b\,\sigma(\lambda_{ib}), \qquad
    \Delta_b = f(x_b) - y_b,

with the old ``a`` in both (simultaneous update) and ``a`` updated only when
``problem.train_second_layer``.  The engine's ``eta`` is the first-layer step and
:math:`\eta_a = \eta\,\delta_a/\delta` (as in the exact engine), so ``eta = problem.eta(d)``
(:math:`\delta/d`) is online SGD in the high-d scaling; the engine records
``t = eta * steps`` -- use :func:`popdyn.models.committee.simulate_committee` (or
:func:`popdyn.models.committee.steps_per_d`) for the ODE's time ``t = steps/d``.

Conventions
-----------
With ``problem.conventions == "saad-solla"`` the weights are materialised in the classic
scaling :math:`J_i = \sqrt{N}\, w_i` (``N = d``, norms :math:`O(\sqrt N)`), the local fields
are :math:`\lambda_i = J_i\cdot x/\sqrt N` and the update is Saad & Solla's

.. math::

    J_i \leftarrow J_i - \frac{\eta_{\rm SS}}{\sqrt N}\, a_i\Delta\, g'(\lambda_i)\, x, \qquad
    \eta_{\rm SS} = \eta N = \delta ,

with the order parameters :math:`Q = J J^\top/N`, :math:`R = J B^\top/N` (teacher
:math:`B_n = \sqrt N v_n`).  This is the same dynamics: the observed overlaps agree with
the popdyn scaling to rounding (``tests/test_committee.py``).

Compiled steps
--------------
:meth:`CommitteeFullStepper.step_block` runs many steps per call in a compiled kernel
(numba through :mod:`popdyn._jit`, when installed and the activations have a compiled
form) or, otherwise, the vectorised NumPy step in a loop.  The samples are drawn from the
noise stream in the per-step order (``X`` of shape (R, B, d), then the label noise), many
steps per generator call, so the random numbers are those of the one-step NumPy loop
whatever the blocks, and a seed gives the same path on both paths up to rounding: the
kernel sums the d-dimensional products in another (vectorised) order, relative
differences ~1e-15 (``tests/test_compiled.py``, ``PATH_RTOL``).  At ``d = 500`` a step is
dominated by drawing the ``d`` standard normals of its sample (NumPy's generator), which
both paths share: at one replica about 2e5 steps per CPU second compiled against 4e4 for
the NumPy step, at 100 replicas 1.2x (``benchmarks/bench_simulate.py --committee``).  The
first compiled call in a process costs about 1.5 s (numba's import and start-up), ~4-6 s
when the kernel is compiled for the first time; ``POPDYN_NO_JIT=1`` selects the NumPy path.

Initialisation (``init``, same forms as the exact engine)
---------------------------------------------------------
* a float ``s > 0``: rows of :math:`W_0` i.i.d. :math:`N(0, s^2 I_d/d)`;
* ``"uniform"``: rows uniform on the unit sphere;
* a dict ``{"Q": Q0, "M": M0}`` (optionally ``"a": a0``): realised exactly,
  :math:`W_0 = M_0 G^+ V + S^{1/2} E` with :math:`S = Q_0 - M_0 G^+ M_0^\top` (the Schur
  complement of the joint Gram matrix, PSD by :func:`~popdyn.models.committee.check_overlaps`)
  and ``E`` a random orthonormal K-frame orthogonal to span(V), so that
  :math:`W_0 W_0^\top = Q_0` and :math:`W_0 V^\top = M_0` (:func:`realise_overlaps`).

With ``same_init`` (default) every replica starts from the same :math:`W_0`, so the
replica mean is comparable with one ODE run from ``initial_state(...)[2]``.

Examples
--------
>>> import numpy as np
>>> from popdyn.models.committee import CommitteeProblem
>>> from popdyn.simulation import make_stepper, simulate
>>> prob = CommitteeProblem("erf", "erf", K=2, M=2, delta=0.5)
>>> traj = simulate(prob, d=100, eta=prob.eta(100), steps=50, replicas=3, init=0.5, rng=0, n_record=3)
>>> traj.Q.shape, traj.M.shape, traj.a.shape
((3, 3, 2, 2), (3, 3, 2, 2), (3, 3, 2))
>>> init = {"Q": 0.25 * np.eye(2), "M": np.zeros((2, 2))}      # realised exactly
>>> stepper, noise = make_stepper(prob, d=100, eta=prob.eta(100), replicas=3, init=init, rng=0)
>>> bool(np.allclose(stepper.observe(stepper.init_state())["Q"][0], 0.25 * np.eye(2)))
True
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _jit
from .._jit import act_eval, activation_kernel, njit
from .._random import as_generator
from .._validation import check_finite_array, check_int
from ..errors import NumericalError
from .committee import INIT_CHOICES, PSD_TOL, CommitteeProblem, check_overlaps
from .committee import parse_init as _parse_init
from .multi_index_sim import FAST_POLY_MAX_DEGREE, fast_evaluator

__all__ = ["CommitteeFullStepper", "realise_overlaps", "teacher_vectors", "initial_state", "INIT_CHOICES",
           "DRAW_NUMBERS"]

#: Most random numbers drawn by one generator call in :meth:`CommitteeFullStepper.step_block`
#: (2**16 float64 = 512 kB, about the L2 cache, so the kernel reads them while still cached);
#: a call draws whole steps, at least one.
DRAW_NUMBERS = 2 ** 16


def _describe_init(init):
    if isinstance(init, str):
        return init
    if isinstance(init, numbers.Real) and not isinstance(init, bool):
        return float(init)
    return {k: np.asarray(v, dtype=float).tolist() for k, v in init.items()}


def teacher_vectors(G, d: int, *, rng=None) -> np.ndarray:
    r"""Teacher rows ``V`` (M x d) with :math:`V V^\top = G` (any PSD ``G``, unit diagonal or not).

    :math:`V = L O^\top` with :math:`G = L L^\top` (symmetric square root) and ``O`` (d x M)
    Haar-random orthonormal columns.  Needs ``d >= M``.

    Examples
    --------
    >>> import numpy as np
    >>> G = np.array([[2.0, 0.5], [0.5, 1.0]])
    >>> V = teacher_vectors(G, 7, rng=0)
    >>> V.shape, bool(np.allclose(V @ V.T, G))
    ((2, 7), True)
    """
    G = check_finite_array("G", G, ndim=2)
    Mn = G.shape[0]
    d = check_int("d", d, minimum=1)
    if d < Mn:
        raise ValueError(f"`d` must be >= M = {Mn} (the teacher vectors need {Mn} dimensions), got {d}.")
    lam, U = np.linalg.eigh(0.5 * (G + G.T))
    L = (U * np.sqrt(np.clip(lam, 0.0, None))) @ U.T
    rng = as_generator(rng)
    A = rng.standard_normal((d, Mn))
    O, Rm = np.linalg.qr(A)
    O = O * np.sign(np.diag(Rm))
    return L @ O.T


def realise_overlaps(Q0, M0, V, *, rng=None) -> np.ndarray:
    r"""Weights ``W0`` (K x d) with :math:`W_0 W_0^\top = Q_0` and :math:`W_0 V^\top = M_0`.

    .. math::

        W_0 = M_0 G^+ V + S^{1/2} E, \qquad S = Q_0 - M_0 G^+ M_0^\top, \quad G = V V^\top,

    with :math:`S^{1/2}` the PSD square root and ``E`` (K x d) a uniformly random
    orthonormal frame orthogonal to span(V).  This is the block Cholesky factorisation of
    the joint Gram matrix :math:`\begin{pmatrix} Q_0 & M_0\\ M_0^\top & G\end{pmatrix}`
    realised in :math:`\mathbb{R}^d`.  Given :math:`(Q_0, M_0)` it is a uniform draw among
    all realisations (rotation invariance orthogonal to span(V)).

    Parameters
    ----------
    Q0, M0 : array_like, shapes (K, K), (K, M)
    V : array_like, shape (M, d)
    rng : int, Generator or None

    Raises
    ------
    ValueError
        The joint Gram matrix is not PSD, ``M0`` is not in the range of ``G`` (singular
        ``G``), or ``d < K + rank(G)`` (no room for the orthogonal part).

    Examples
    --------
    >>> import numpy as np
    >>> V = np.eye(2, 6)
    >>> W = realise_overlaps([[0.5, 0.1], [0.1, 0.4]], [[0.3, 0.0], [0.0, -0.2]], V, rng=0)
    >>> bool(np.allclose(W @ W.T, [[0.5, 0.1], [0.1, 0.4]])), bool(np.allclose(W @ V.T, [[0.3, 0], [0, -0.2]]))
    (True, True)
    """
    V = check_finite_array("V", V, ndim=2)
    G = V @ V.T
    Q0, M0, _ = check_overlaps(Q0, M0, G, name_Q="Q0", name_M="M0")
    K, d = Q0.shape[0], V.shape[1]
    lam, U = np.linalg.eigh(G)
    keep = lam > PSD_TOL * max(1.0, float(lam.max()))
    Ginv = (U[:, keep] / lam[keep]) @ U[:, keep].T
    if np.abs(M0 - M0 @ Ginv @ G).max() > 1e-9 * max(1.0, np.abs(M0).max()):
        raise ValueError("`M0` must lie in the row space of G (G is singular).")
    S = Q0 - M0 @ Ginv @ M0.T
    S = 0.5 * (S + S.T)
    ls, Us = np.linalg.eigh(S)
    root = (Us * np.sqrt(np.clip(ls, 0.0, None))) @ Us.T
    W = M0 @ Ginv @ V
    rank = int(keep.sum())
    if d < K + rank:
        raise ValueError(f"`d` = {d} is too small to realise K = {K} student vectors next to a rank-{rank} "
                         f"teacher: need d >= {K + rank}.")
    rng = as_generator(rng)
    Z = rng.standard_normal((K, d))
    _, sv, Vh = np.linalg.svd(V, full_matrices=False)
    span = Vh[sv > math.sqrt(PSD_TOL) * max(1.0, float(sv.max()))]
    Z -= (Z @ span.T) @ span
    E = np.linalg.qr(Z.T)[0].T  # (K, d) orthonormal rows, orthogonal to span(V)
    return W + root @ E


def initial_state(problem: CommitteeProblem, d: int, *, init=1.0, model_rng=None, init_rng=None,
                  replicas: int = 1, same_init: bool = True):
    r"""Teacher, initial weights and the ODE's initial condition: ``(V, W0, state0)``.

    ``V`` (M x d) with :math:`VV^\top = G`; ``W0`` of shape (K, d) (``same_init``) or
    (R, K, d), in the popdyn scaling (the stepper multiplies by :math:`\sqrt d` under the
    Saad–Solla conventions); ``state0 = {"Q", "M", "a"}`` the initial overlaps, ready for
    :func:`popdyn.integrate` (with a replica axis when not ``same_init``).
    """
    if not isinstance(problem, CommitteeProblem):
        raise TypeError(f"`problem` must be a CommitteeProblem, got {type(problem).__name__}.")
    d = check_int("d", d, minimum=1)
    replicas = check_int("replicas", replicas, minimum=1)
    kind, value = _parse_init(init, problem)
    V = teacher_vectors(problem.G, d, rng=model_rng)
    rng = as_generator(init_rng)
    lead = () if same_init else (replicas,)
    K = problem.K
    a0 = np.array(problem.a0, dtype=float)
    if kind == "scale":
        W0 = rng.standard_normal(lead + (K, d)) * (value / math.sqrt(d))
    elif kind == "uniform":
        W0 = rng.standard_normal(lead + (K, d))
        W0 /= np.linalg.norm(W0, axis=-1, keepdims=True)
    else:
        Q0, M0, a0 = value
        if same_init:
            W0 = realise_overlaps(Q0, M0, V, rng=rng)
        else:
            W0 = np.stack([realise_overlaps(Q0, M0, V, rng=rng) for _ in range(replicas)])
    Q0 = W0 @ np.swapaxes(W0, -1, -2)
    state0 = {"Q": 0.5 * (Q0 + np.swapaxes(Q0, -1, -2)), "M": W0 @ V.T,
              "a": np.broadcast_to(a0, lead + (K,)).copy()}
    return V, W0, state0


def _kernel_activation(act, derivative=False):
    """``(code, coeffs)`` of :func:`popdyn._jit.act_eval` with the arithmetic of
    :func:`~popdyn.models.multi_index_sim.fast_evaluator` (Horner up to FAST_POLY_MAX_DEGREE)."""
    form = "power" if act.is_polynomial and act.degree <= FAST_POLY_MAX_DEGREE else "series"
    return activation_kernel(act, derivative=derivative, form=form)


@njit(fastmath={"reassoc", "contract"})
def _full_steps(W, a, V, draws, n_steps, B, noise_sd, scale, step_c, eta_a, a_star,
                s_code, s_coef, ds_code, ds_coef, t_code, t_coef, frozen):
    """``n_steps`` online-SGD steps of every replica not ``frozen``, in place on ``W`` (R, K, d)
    and ``a`` (R, K), with the samples in the rows of ``draws`` (one row per step: ``X``
    (R, B, d) then, when ``noise_sd > 0``, the label noise (R, B), i.e. the stream order of
    :meth:`CommitteeFullStepper.step`).  ``step_c = eta * scale / B``; ``eta_a < 0``: fixed
    second layer.  Returns the first step (1-based) after which some replica's weights are
    not finite, else 0.  The operations follow :meth:`CommitteeFullStepper._numpy_step`; the
    d-sums are reassociated (vectorised), so the results agree to rounding."""
    R, K, d = W.shape[0], W.shape[1], W.shape[2]
    Mn = V.shape[0]
    o_xi = R * B * d
    lam = np.empty((B, K))
    nu = np.empty((B, Mn))
    s_lam = np.empty((B, K))
    c = np.empty((B, K))
    delta = np.empty(B)
    D = np.empty(d)
    fail = 0
    for r in range(R):
        if frozen[r]:
            continue
        for t in range(n_steps):
            row = draws[t]
            for b in range(B):
                x0 = (r * B + b) * d
                for k in range(K):
                    acc = 0.0
                    for i in range(d):
                        acc += row[x0 + i] * W[r, k, i]
                    lam[b, k] = acc if scale == 1.0 else acc / scale
                for n in range(Mn):
                    acc = 0.0
                    for i in range(d):
                        acc += row[x0 + i] * V[n, i]
                    nu[b, n] = acc
            for b in range(B):
                acc = 0.0
                for n in range(Mn):
                    acc += act_eval(t_code, t_coef, nu[b, n]) * a_star[n]
                if noise_sd > 0.0:
                    acc = acc + noise_sd * row[o_xi + r * B + b]
                f = 0.0
                for k in range(K):
                    s_lam[b, k] = act_eval(s_code, s_coef, lam[b, k])
                    f += s_lam[b, k] * a[r, k]
                delta[b] = f - acc
            for b in range(B):
                for k in range(K):
                    c[b, k] = act_eval(ds_code, ds_coef, lam[b, k]) * a[r, k] * (delta[b] * step_c)
            total = 0.0
            for k in range(K):
                for i in range(d):
                    D[i] = 0.0
                for b in range(B):
                    x0 = (r * B + b) * d
                    cb = c[b, k]
                    for i in range(d):
                        D[i] += cb * row[x0 + i]
                for i in range(d):
                    W[r, k, i] -= D[i]
                    total += W[r, k, i]
            if eta_a >= 0.0:
                for k in range(K):
                    acc = 0.0
                    for b in range(B):
                        acc += s_lam[b, k] * delta[b]
                    a[r, k] -= (eta_a / B) * acc
            for k in range(K):
                total += a[r, k]
            if not math.isfinite(total):
                if fail == 0 or t + 1 < fail:
                    fail = t + 1
                break
    return fail


class CommitteeFullStepper:
    r"""Full d-dimensional online-SGD steps of the committee machine (stepper protocol,
    ``engine="full"``); see the module docstring.

    The state is ``{"W": (R, K, d), "a": (R, K)}`` (``W`` holds :math:`J = \sqrt d\, W`
    under the Saad–Solla conventions); :meth:`observe` returns ``{"Q", "M", "a"}`` with
    shapes (R, K, K), (R, K, M), (R, K).  Each step draws from the noise stream, in this
    order, the samples ``X`` (R, B, d) and (when ``noise > 0``) the label noise (R, B).

    Attributes
    ----------
    V : ndarray (M, d)
        Teacher vectors (:math:`V V^\top = G`).
    state0 : dict
        Initial overlaps ``{"Q", "M", "a"}`` (the ODE's initial condition).
    eta, eta_a : float
        Step sizes (``eta_a`` is ``None`` with a fixed second layer).
    """

    model = "committee"
    algorithms = ("sgd",)
    continuous = False
    #: ``(V, W0, state0)`` from the ``model``/``init`` streams (:func:`popdyn.simulation.initial_state`).
    initial_state = staticmethod(initial_state)

    def __init__(self, problem: CommitteeProblem, config, streams: dict):
        if not isinstance(problem, CommitteeProblem):
            raise TypeError(f"`problem` must be a CommitteeProblem, got {type(problem).__name__}.")
        if config.algorithm != "sgd":
            raise ValueError(f"`algorithm` must be 'sgd' for the committee machine (online SGD with fresh "
                             f"samples); got {config.algorithm!r}.")
        self.problem = problem
        self.config = config
        self.R, self.K, self.M, self.d = config.replicas, problem.K, problem.M, config.d
        self.batch = config.batch
        _parse_init(config.init, problem)  # validate before drawing
        self.V, self._W0, self.state0 = initial_state(
            problem, self.d, init=config.init, model_rng=streams["model"], init_rng=streams["init"],
            replicas=self.R, same_init=config.same_init)
        self.eta = config.eta
        self.eta_a = config.eta * problem.delta_a / problem.delta if problem.train_second_layer else None
        self._scale = math.sqrt(self.d) if problem.conventions == "saad-solla" else 1.0
        self._VT = np.ascontiguousarray(self.V.T)
        self._a_star = np.array(problem.a_star, dtype=float)
        self._sigma = fast_evaluator(problem.student)
        self._dsigma = fast_evaluator(problem.student, derivative=True)
        self._teacher = fast_evaluator(problem.teacher)
        self._noise_sd = math.sqrt(problem.noise)
        self._X = np.empty((self.R, self.batch, self.d))
        acts = [_kernel_activation(problem.student), _kernel_activation(problem.student, derivative=True),
                _kernel_activation(problem.teacher)]
        self.compiled = _jit.enabled() and all(x is not None for x in acts)
        self._acts = acts
        if self.compiled:
            self._per_step = self.R * self.batch * (self.d + (1 if self._noise_sd > 0.0 else 0))
            self._rows = max(1, DRAW_NUMBERS // self._per_step)
            self._draws = np.empty((self._rows, self._per_step))
            self._V = np.array(self.V, dtype=float, order="C")
            self._kernel = _full_steps.function()
            state = self.init_state()  # compile (or load from numba's cache) now, outside the timed loop
            self._run(state, self._draws[:0], np.zeros(self.R, dtype=np.bool_))

    # -- protocol -------------------------------------------------------------------------
    @property
    def constants(self) -> dict:
        """Fixed arrays saved in checkpoints to verify a resume: the teacher ``V``."""
        return {"V": self.V}

    def init_state(self) -> dict:
        """Fresh state ``{"W": (R, K, d), "a": (R, K)}``."""
        W = np.empty((self.R, self.K, self.d))
        W[...] = self._W0 * self._scale
        a = np.empty((self.R, self.K))
        a[...] = self.state0["a"]
        return {"W": W, "a": a}

    def observe(self, state) -> dict:
        """``{"Q": W W^T, "M": W V^T, "a"}`` (divided by d, sqrt(d) under Saad–Solla)."""
        W = state["W"]
        Q = np.matmul(W, W.transpose(0, 2, 1)) / self._scale ** 2
        return {"Q": 0.5 * (Q + Q.transpose(0, 2, 1)), "M": (W @ self._VT) / self._scale,
                "a": state["a"].copy()}

    def work_per_step(self) -> float:
        """Rough multiply-adds per step."""
        return float(self.R * self.batch * (2 * self.K + self.M) * self.d)

    def describe(self) -> dict:
        """JSON-friendly extra ``meta``: engine, initial overlaps, step sizes, conventions, and
        whether the compiled kernel ran."""
        s0 = self.state0
        return {"engine": "full", "init": _describe_init(self.config.init), "Q0": s0["Q"].tolist(),
                "M0": s0["M"].tolist(), "a0": s0["a"].tolist(), "eta_a": self.eta_a,
                "batch_used": self.batch, "conventions": self.problem.conventions, "compiled": self.compiled}

    def check_state(self, state) -> str | None:
        """Divergence message when a student norm ``Q_ii`` exceeds
        :data:`~popdyn.models.committee.NORM_GROWTH_LIMIT` times the problem's norm scale
        (:func:`~popdyn.models.committee.check_norms`), else ``None`` (called by
        :func:`popdyn.simulation.simulate` at each recording time)."""
        from .committee import check_norms

        return check_norms(self.problem, self.observe(state)["Q"], self.state0["Q"], eta=self.eta, d=self.d)

    # -- the step ---------------------------------------------------------------------------
    def step(self, state, rng) -> None:
        """One online-SGD step, in place on ``state`` (``rng``: the noise stream)."""
        if self.compiled:
            try:
                self.step_block(state, rng, 1)
            except NumericalError:
                raise NumericalError(self._diverged()) from None
            return
        self._numpy_step(state, rng)
        if not (math.isfinite(float(state["W"].sum())) and math.isfinite(float(state["a"].sum()))):
            raise NumericalError(self._diverged())

    def _diverged(self) -> str:
        return (f"non-finite weights after an SGD step with eta = {self.eta:g}; the dynamics diverged. "
                "Try a smaller `eta` (delta) or a bounded activation.")

    def _run(self, state, draws, frozen) -> int:
        (s_code, s_coef), (ds_code, ds_coef), (t_code, t_coef) = self._acts
        eta_a = -1.0 if self.eta_a is None else float(self.eta_a)
        return self._kernel(state["W"], state["a"], self._V, draws, draws.shape[0], self.batch, self._noise_sd,
                            self._scale, self.eta * self._scale / self.batch, eta_a, self._a_star,
                            s_code, s_coef, ds_code, ds_coef, t_code, t_coef, frozen)

    def step_block(self, state, rng, n_steps: int, frozen=None) -> None:
        """``n_steps`` online-SGD steps in place (block-stepping protocol of :mod:`popdyn.simulation`).

        Equal to ``n_steps`` calls of :meth:`step`: the samples are drawn in the same
        stream order (``X`` then the label noise, step after step; here up to
        ``DRAW_NUMBERS`` numbers per generator call), so the stream does not depend on the
        blocks.  ``frozen`` (bool array (R,) or ``None``): replicas whose weights stay
        unchanged (their samples are still drawn).  Raises
        :class:`~popdyn.errors.NumericalError` with ``step`` = the 1-based step of this call
        after which the weights of a replica that is not frozen became non-finite.
        """
        frozen = None if frozen is None or not np.any(frozen) else np.asarray(frozen, dtype=bool)
        if not self.compiled:
            keep = None if frozen is None else {k: state[k][frozen] for k in ("W", "a")}
            for t in range(n_steps):
                self._numpy_step(state, rng)
                if keep is not None:
                    for k, v in keep.items():
                        state[k][frozen] = v
                W, a = (state["W"], state["a"]) if frozen is None else (state["W"][~frozen], state["a"][~frozen])
                if not (math.isfinite(float(W.sum())) and math.isfinite(float(a.sum()))):
                    raise NumericalError(self._diverged(), step=t + 1)
            return
        mask = np.zeros(self.R, dtype=np.bool_) if frozen is None else frozen
        done = 0
        while done < n_steps:
            m = min(n_steps - done, self._rows)
            draws = self._draws[:m]
            rng.standard_normal(out=draws)
            fail = self._run(state, draws, mask)
            if fail:
                raise NumericalError(self._diverged(), step=done + fail)
            done += m

    def _numpy_step(self, state, rng) -> None:
        """One step of the NumPy path (vectorised over replicas), without the finiteness check."""
        W, a = state["W"], state["a"]
        X = self._X
        rng.standard_normal(out=X)
        lam = np.einsum("rbd,rkd->rbk", X, W)  # (R, B, K)
        if self._scale != 1.0:
            lam /= self._scale
        nu = X @ self._VT  # (R, B, M)
        y = self._teacher(nu, np.empty(nu.shape)) @ self._a_star  # (R, B)
        if self._noise_sd > 0.0:
            y += self._noise_sd * rng.standard_normal(y.shape)
        s_lam = self._sigma(lam, np.empty(lam.shape))
        delta = np.einsum("rbk,rk->rb", s_lam, a) - y
        c = self._dsigma(lam, np.empty(lam.shape))
        c *= a[:, None, :]
        c *= delta[:, :, None] * (self.eta * self._scale / self.batch)
        W -= np.einsum("rbk,rbd->rkd", c, X)
        if self.eta_a is not None:
            a -= (self.eta_a / self.batch) * np.einsum("rbk,rb->rk", s_lam, delta)
