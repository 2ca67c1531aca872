r"""Finite-d simulation of the additive model (arXiv 2406.11828): Phase I SGD, Phase II fits.

Phase I (layer-wise online SGD)
-------------------------------
:class:`AdditiveStepper` plugs :class:`~popdyn.models.additive.AdditiveProblem` into
:func:`popdyn.simulation.simulate` (engine ``"full"``).  Each step draws, for every replica,
a fresh minibatch :math:`x_1..x_B \sim N(0, I_d)` shared by the ``J`` neurons, with labels
:math:`y_b = f^*(x_b) = M^{-1/2}\sum_m a_m f_m(v_m\cdot x_b)`, and takes the spherical step of
the correlation loss :math:`\ell = -y\,\sigma_j(w_j\cdot x)` (a small fixed second layer,
module docstring of :mod:`popdyn.models.additive`):

.. math::

    \hat g_j = -\frac1B\sum_b y_b\sigma_j'(z_{jb})\,(x_b - z_{jb} w_j), \qquad
    w_j \leftarrow \frac{w_j - \eta\hat g_j}{\|w_j - \eta\hat g_j\|}, \qquad z_{jb} = w_j\cdot x_b .

Time ``t = eta * steps``, samples ``n = B * steps``.  Cost per step
:math:`O(R\,(J + M)\,B\,d)`: the projections :math:`V x` (:math:`M d`), the fields
:math:`W x` (:math:`J d`) and the update (:math:`J d`); never :math:`O(M^2 d)`.  With
``state["U"]`` present the overlaps :math:`U = W V^\top` are carried along exactly by
:math:`U \leftarrow ((1 - s_j) U + c_j (Vx)^\top)/\|\cdot\|` at cost :math:`O(RJMB)` (no
:math:`O(JMd)` recomputation), which :func:`phase_one` uses to time each neuron's
localisation at every step.

``"gf"``: spherical gradient flow in ``d`` dimensions with the exact population gradient
:math:`\dot w_j = (I - w_jw_j^\top)V^\top g_j(Vw_j)` (DOP853), the ground truth of the
overlap ODE's closure.

An exact d-free engine
----------------------
Per neuron the overlap law allows one.  Given :math:`u = Vw` and the norm
:math:`r = \|P_\perp w\|` of the part of ``w`` outside span(V), a fresh sample enters only
through :math:`t = Vx \sim N(0, G)`, :math:`z = w\cdot x = u^\top G^+ t + r\xi` and
:math:`\|x\|^2 = t^\top G^+ t + \xi^2 + \chi^2_{d-\mathrm{rank}\,G-1}`, with
:math:`\xi \sim N(0, 1)` (the component along :math:`P_\perp w/r`) and the chi-square
independent of ``t``.  With :math:`c = \eta\,y\,\sigma'(z)` and :math:`s = cz` the step maps

.. math::

    u \leftarrow \frac{(1-s)u + c\,t}{N}, \qquad
    r \leftarrow \frac{\sqrt{((1-s)r + c\xi)^2 + c^2\chi^2}}{N}, \qquad
    N^2 = 1 + c^2(\|x\|^2 - z^2),

exactly.  :class:`AdditiveExactStepper` (``engine="exact"``) keeps ``J M`` overlaps and ``J``
norms per replica instead of ``J d`` weights; a step costs :math:`O(JM + M\,\mathrm{rank}\,G)`
instead of :math:`O((J + M)d)`: cheaper when :math:`M \ll d` (:math:`\gamma < 1`), about
even when :math:`M \approx d` and dearer beyond.  Each neuron's path has exactly the law of
the full engine's; the sample ``t`` (hence the label) is shared by the neurons of a replica as
in the full engine, but their residual components :math:`\xi_j` are drawn independently and
one chi-square serves them all, so the *joint* law of the neurons differs by the
correlations of the residual parts :math:`P_\perp w_j` (overlaps :math:`O(d^{-1/2})` at a
uniform start).  A jointly exact d-free engine would have to carry the ``J x J`` residual
Gram matrix and factor it at every step, :math:`O(J^3)`, cheaper than the full engine only
when :math:`J^2 \lesssim d`.  Online SGD with batch 1 only.

Phase II
--------
:func:`phase_two` re-draws biases :math:`b_{jk}` for each learned direction and fits the
second layer of :math:`f(x) = a_0 + \sum_{j,k} a_{jk}\,\mathrm{ReLU}(w_j\cdot x + b_{jk})` by
ridge or LASSO (:func:`popdyn.readout.fit_readout`), and measures the relative test error.
Transfer: the same first layer refitted to another teacher on the same directions
(:meth:`AdditiveProblem` with new ``links``/``weights``).  :func:`kernel_baseline` is kernel
ridge regression (scikit-learn ``KernelRidge``) on the same data, for contrast.

References
----------
K. Oko, Y. Song, T. Suzuki, D. Wu, arXiv 2406.11828 (COLT 2024).
G. Ben Arous, R. Gheissari, A. Jagannath, JMLR 22 (2021) (spherical online SGD, its
normalisation term).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._random import as_generator
from .._validation import check_choice, check_finite_array, check_int, check_real
from ..errors import NumericalError
from .additive import LOCALISED_LEVEL, AdditiveProblem, localisation_report

__all__ = [
    "AdditiveStepper",
    "AdditiveExactStepper",
    "teacher_labels",
    "sgd_step_size",
    "phase_one",
    "PhaseOneResult",
    "flow_weights",
    "predicted_steps",
    "samples_to_localise",
    "LocalisationTimes",
    "phase_two",
    "PhaseTwoResult",
    "kernel_baseline",
    "alignment_floor",
    "FEATURE_ACTIVATIONS",
]

#: Phase II feature activations.
FEATURE_ACTIVATIONS = ("relu",)
#: Duality-gap tolerance of the Phase II LASSO (scikit-learn's ``tol``: the objective is
#: within ``tol * |y|^2/n`` of its minimum, so the test error within ~``tol`` relative).
#: Features sigma(w.x + b) at several biases are nearly collinear and coordinate descent
#: needs >1e5 sweeps for the readout's default 1e-10 (measured); 1e-4 converges in ~1e3
#: sweeps and is below the LASSO's own bias at the penalties used (test errors ~1e-3).
LASSO_TOL = 1e-4
#: Numbers per block of Phase II features (~32 MB of float64).
_CHUNK_NUMBERS = 4_000_000

_rowdot = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("...d,...d->...", a, b))


def _check_problem(problem) -> AdditiveProblem:
    if not isinstance(problem, AdditiveProblem):
        raise TypeError(f"`problem` must be an AdditiveProblem, got {type(problem).__name__}.")
    return problem


class _Teacher:
    """Vectorised labels from projections ``T = X V^T`` (links grouped by identity)."""

    def __init__(self, problem: AdditiveProblem):
        from .additive import _groups
        from .multi_index_sim import fast_evaluator

        w = problem.scale * problem.weights
        self.M = problem.M
        self.groups = [(fast_evaluator(act), idx, w[idx]) for act, idx in _groups(problem.links)]

    def __call__(self, T) -> np.ndarray:
        y = None
        for f, idx, w in self.groups:
            Tj = T if idx.size == self.M else T[..., idx]
            part = f(Tj, np.empty(Tj.shape)) @ w
            y = part if y is None else y + part
        return y


def teacher_labels(problem: AdditiveProblem, X) -> np.ndarray:
    r""":math:`f^*(x) = M^{-1/2}\sum_m a_m f_m(v_m\cdot x)` for ``X`` of shape ``(..., d)``."""
    _check_problem(problem)
    X = np.asarray(X, dtype=float)
    if X.shape[-1] != problem.d:
        raise ValueError(f"`X` must have last axis d = {problem.d}, got shape {X.shape}.")
    return _Teacher(problem)(X @ problem.V.T)


class _StudentDerivative:
    r"""``f(Z) -> sigma_j'(Z)`` for ``Z`` of shape ``(R, J, B)`` (one student or per-neuron ones)."""

    def __init__(self, problem: AdditiveProblem):
        from .multi_index_sim import fast_evaluator

        self.diverse = problem.diversity is not None
        if self.diverse:
            s = problem.student
            q = s.degree
            c = s.coefficients(q)
            # sigma_j' = sum_{i>=1} xi_ji c_i sqrt(i) h_{i-1}
            self.D = problem.diversity[:, 1:] * c[1:] * np.sqrt(np.arange(1, q + 1))  # (J, q)
            self.q = q
        else:
            self.f = fast_evaluator(problem.student, derivative=True)

    def __call__(self, Z) -> np.ndarray:
        if not self.diverse:
            return self.f(Z, np.empty(Z.shape))
        if self.q == 0:
            return np.zeros_like(Z)
        from ..hermite import h_values

        H = h_values(Z, self.q - 1)  # (q, R, J, B)
        return np.einsum("irjb,ji->rjb", H, self.D)


class AdditiveStepper:
    r"""Phase I simulator of the additive model (stepper protocol of :mod:`popdyn.simulation`).

    Attributes
    ----------
    V : ndarray, shape (M, d)
        The problem's task directions (shared by the replicas).
    u0 : ndarray, shape (J, M) or (R, J, M)
        Initial overlaps.
    """

    model = "additive"
    algorithms = ("sgd", "gf")

    def __init__(self, problem: AdditiveProblem, config, streams: dict):
        from .multi_index_sim import _parse_init

        self.problem = _check_problem(problem)
        if config.d != problem.d:
            raise ValueError(f"`d` = {config.d} must equal the dimension of the problem's task directions "
                             f"V ({problem.M} x {problem.d}).")
        self.config = config
        self.algorithm = config.algorithm
        self.R, self.J, self.M, self.d = config.replicas, problem.n_neurons, problem.M, problem.d
        _parse_init(config.init, self.M, self.J)
        self.V, self._W0, self.u0 = self.initial_state(problem, self.d, init=config.init, model_rng=streams["model"],
                                                       init_rng=streams["init"], replicas=self.R,
                                                       same_init=config.same_init)
        self._VT = np.ascontiguousarray(self.V.T)
        self._teacher = _Teacher(problem)
        self._dstudent = _StudentDerivative(problem)
        self.eta = config.eta
        self.batch = config.batch if self.algorithm == "sgd" else None
        self._buffers: dict = {}

    @staticmethod
    def initial_state(problem, d, *, init="uniform", model_rng=None, init_rng=None, replicas=1, same_init=True):
        r"""``(V, W0, u0)``: the problem's ``V``, initial weights (``init`` as in
        :func:`popdyn.models.multi_index_sim.initial_weights`: ``"uniform"``, a warm-start
        scale ``m0`` or overlaps ``u0``) and ``u0 = W0 V^T``."""
        from .multi_index_sim import initial_weights

        problem = _check_problem(problem)
        d = check_int("d", d, minimum=1)
        if d != problem.d:
            raise ValueError(f"`d` = {d} must equal the dimension of the problem's task directions "
                             f"V ({problem.M} x {problem.d}).")
        W0 = initial_weights(problem.V, problem.n_neurons, init=init, rng=init_rng,
                             replicas=None if same_init else replicas)
        return problem.V, W0, W0 @ problem.V.T

    @staticmethod
    def memory_terms(problem, config, n_times) -> list:
        """Weights, minibatch, its projections and the recorded overlaps (float64)."""
        from .._budget import fmt_count, nbytes

        R, J, M, d = config.replicas, problem.n_neurons, problem.M, config.d
        B = config.batch or 1
        return [(nbytes(R, J, d), f"weights replicas x neurons x d = {R} x {fmt_count(J)} x {fmt_count(d)}",
                 {"replicas": R, "d": d}),
                (nbytes(R, B, d + M), f"minibatch replicas x batch x (d + M) = {R} x {B} x {fmt_count(d + M)}",
                 {"replicas": R, "batch": B, "d": d}),
                (nbytes(n_times, R, J, M), f"records n_record x replicas x neurons x M = {n_times} x {R} x "
                                           f"{fmt_count(J)} x {fmt_count(M)}", {"n_record": n_times, "replicas": R})]

    # -- protocol ---------------------------------------------------------------------------
    @property
    def continuous(self) -> bool:
        return self.algorithm == "gf"

    @property
    def constants(self) -> dict:
        return {"V": self.V}

    def init_state(self) -> dict:
        """``{"W": (R, J, d)}``; add ``"U"`` (= ``W V^T``) to have the overlaps carried along."""
        W = np.empty((self.R, self.J, self.d))
        W[...] = self._W0
        return {"W": W}

    def observe(self, state) -> dict:
        """``{"u": W V^T}``, shape ``(R, J, M)``."""
        return {"u": state["W"] @ self._VT}

    def work_per_step(self) -> float:
        return float(self.R * (self.J + self.M) * (self.batch or 1) * self.d)

    def describe(self) -> dict:
        from .multi_index_sim import describe_init

        return {"init": describe_init(self.config.init), "batch_used": self.batch,
                "max_overlap": self.problem.max_overlap}

    def _buffer(self, name, shape):
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = np.empty(shape)
        return buf

    # -- SGD ----------------------------------------------------------------------------------
    def step(self, state, rng) -> None:
        """One online-SGD step in place on ``state["W"]`` (and ``state["U"]`` when present)."""
        if self.algorithm != "sgd":
            raise TypeError("`step` is for online SGD; gradient flow uses `advance`.")
        b = self.batch
        X = self._buffer("X", (self.R, b, self.d))
        rng.standard_normal(out=X)
        T = self._buffer("T", (self.R, b, self.M))
        np.matmul(X, self._VT, out=T)
        y = self._teacher(T)
        W = state["W"]
        Z = self._buffer("Z", (self.R, self.J, b))
        np.matmul(W, X.transpose(0, 2, 1), out=Z)
        coef = self._dstudent(Z)
        coef *= (y * (self.eta / b))[:, None, :]
        s = _rowdot(coef, Z)
        np.subtract(1.0, s, out=s)
        D = self._buffer("D", W.shape)
        if b == 1:  # an outer product: a broadcast multiply is ~3x faster than a matmul with inner size 1
            np.multiply(coef, X, out=D)
        else:
            np.matmul(coef, X, out=D)
        W *= s[..., None]
        W += D
        norm = np.sqrt(_rowdot(W, W))
        if not math.isfinite(float(norm.sum())):
            raise NumericalError(f"non-finite weights after an update with eta = {self.eta:g}; try a smaller `eta`.")
        W /= norm[..., None]
        U = state.get("U")
        if U is not None:
            U *= s[..., None]
            U += coef @ T
            U /= norm[..., None]

    # -- gradient flow --------------------------------------------------------------------------
    def _gf_rhs(self, t, y, shape):
        W = y.reshape(shape)
        F = self.problem.g(W @ self._VT) @ self.V
        dW = F - _rowdot(W, F)[..., None] * W
        if not np.all(np.isfinite(dW)):
            raise NumericalError("non-finite gradient-flow velocity", time=float(t))
        return dW.ravel()

    def advance(self, state, t0: float, t1: float) -> None:
        """Integrate the d-dimensional flow from ``t0`` to ``t1`` (DOP853), retract to the sphere."""
        from scipy.integrate import solve_ivp

        W = state["W"]
        Wi = W[:1] if self.config.same_init else W
        sol = solve_ivp(self._gf_rhs, (t0, t1), Wi.ravel(), method="DOP853", t_eval=[t1], rtol=self.config.rtol,
                        atol=self.config.atol, args=(Wi.shape,))
        if sol.status != 0 or sol.y.shape[1] != 1:
            raise NumericalError(f"gradient-flow integration failed: {sol.message}", time=float(t0))
        Wn = sol.y[:, -1].reshape(Wi.shape)
        W[...] = Wn / np.linalg.norm(Wn, axis=-1, keepdims=True)


class AdditiveExactStepper:
    r"""Exact d-free online SGD of the additive model, per neuron (module docstring).

    State ``{"U": (R, J, M), "r": (R, J)}``: overlaps :math:`u = Vw` and the norms
    :math:`r = \|P_\perp w\|` (:math:`r^2 = 1 - u^\top G^+ u`, carried separately to avoid the
    cancellation).  Registered as ``engine="exact"`` for :class:`AdditiveProblem`; ``"sgd"``
    with ``batch = 1``.  The start: ``init="uniform"`` is drawn d-free (:math:`u = Vg/\|g\|`,
    :math:`g \sim N(0, I_d)`, from ``Vg ~ N(0, G)`` and an independent chi-square); other
    starts go through :func:`popdyn.models.multi_index_sim.initial_weights` once.
    """

    model = "additive"
    algorithms = ("sgd",)
    continuous = False

    def __init__(self, problem: AdditiveProblem, config, streams: dict):
        from .multi_index_sim import _parse_init

        self.problem = _check_problem(problem)
        if config.d != problem.d:
            raise ValueError(f"`d` = {config.d} must equal the dimension of the problem's task directions "
                             f"V ({problem.M} x {problem.d}).")
        if config.batch != 1:
            raise ValueError(f"`batch` must be 1 for the exact additive engine (one fresh sample per step), got "
                             f"{config.batch}; use engine='full' for minibatches.")
        self.config = config
        self.R, self.J, self.M, self.d = config.replicas, problem.n_neurons, problem.M, problem.d
        _parse_init(config.init, self.M, self.J)
        lam, U = np.linalg.eigh(problem.G)
        keep = lam > 1e-10 * max(1.0, float(lam.max()))
        self.rank = int(keep.sum())
        self._L = U[:, keep] * np.sqrt(lam[keep])        # t = eta @ L^T ~ N(0, G)
        self._Gp_half = U[:, keep] / np.sqrt(lam[keep])  # G^+ t = eta @ Gp_half^T
        self.dof = self.d - self.rank - 1                # chi-square of x outside span(V) and w
        self._teacher = _Teacher(problem)
        self._dstudent = _StudentDerivative(problem)
        self.eta = config.eta
        self.batch = 1
        self.u0, self.r0 = self._start(config, streams["init"])
        self.V = problem.V

    def _start(self, config, rng):
        R, J = (1 if config.same_init else self.R), self.J
        if isinstance(config.init, str):  # "uniform": u = V g/|g| for g ~ N(0, I_d), d-free
            t = rng.standard_normal((R, J, self.rank))
            perp = rng.chisquare(self.d - self.rank, size=(R, J)) if self.d > self.rank else np.zeros((R, J))
            norm2 = np.einsum("...k,...k->...", t, t) + perp
            u = (t @ self._L.T) / np.sqrt(norm2)[..., None]
            r = np.sqrt(perp / norm2)
        else:
            from .multi_index_sim import initial_weights

            W0 = initial_weights(self.problem.V, J, init=config.init, rng=rng,
                                 replicas=None if config.same_init else self.R)
            W0 = W0 if W0.ndim == 3 else W0[None]
            u = W0 @ self.problem.V.T
            coords = u @ self._Gp_half  # u^T G^+ u = |coords|^2
            r = np.sqrt(np.clip(1.0 - np.einsum("...k,...k->...", coords, coords), 0.0, None))
        return (u[0], r[0]) if config.same_init else (u, r)

    @staticmethod
    def memory_terms(problem, config, n_times) -> list:
        from .._budget import fmt_count, nbytes

        R, J, M = config.replicas, problem.n_neurons, problem.M
        return [(nbytes(R, J, M + 1), f"overlaps replicas x neurons x (M + 1) = {R} x {fmt_count(J)} x "
                                      f"{fmt_count(M + 1)}", {"replicas": R}),
                (nbytes(n_times, R, J, M), f"records n_record x replicas x neurons x M = {n_times} x {R} x "
                                           f"{fmt_count(J)} x {fmt_count(M)}", {"n_record": n_times, "replicas": R})]

    @property
    def constants(self) -> dict:
        return {"V": self.problem.V}

    def init_state(self) -> dict:
        U = np.empty((self.R, self.J, self.M))
        r = np.empty((self.R, self.J))
        U[...] = self.u0
        r[...] = self.r0
        return {"U": U, "r": r}

    def observe(self, state) -> dict:
        return {"u": state["U"].copy()}

    def work_per_step(self) -> float:
        return float(self.R * (self.J * self.M + self.M * self.rank))

    def describe(self) -> dict:
        from .multi_index_sim import describe_init

        return {"init": describe_init(self.config.init), "batch_used": 1, "rank_G": self.rank,
                "max_overlap": self.problem.max_overlap}

    def step(self, state, rng) -> None:
        """One exact online-SGD step on ``(U, r)`` for every neuron and replica."""
        U, r = state["U"], state["r"]
        e = rng.standard_normal((self.R, self.rank))
        t = e @ self._L.T                                    # (R, M)
        Gpt = e @ self._Gp_half.T                            # G^+ t
        tGt = np.einsum("rk,rk->r", e, e)                    # t^T G^+ t
        xi = rng.standard_normal((self.R, self.J))
        chi2 = rng.chisquare(self.dof, size=(self.R, 1)) if self.dof > 0 else np.zeros((self.R, 1))
        z = np.einsum("rjm,rm->rj", U, Gpt) + r * xi
        y = self._teacher(t)                                 # (R,)
        c = self._dstudent(z[..., None])[..., 0] * (self.eta * y)[:, None]
        s = c * z
        x2 = tGt[:, None] + xi ** 2 + chi2
        norm = np.sqrt(1.0 + c * c * (x2 - z * z))
        if not math.isfinite(float(norm.sum())):
            raise NumericalError(f"non-finite overlaps after an update with eta = {self.eta:g}; try a smaller `eta`.")
        U *= (1.0 - s)[..., None]
        U += c[..., None] * t[:, None, :]
        U /= norm[..., None]
        r[...] = np.sqrt(((1.0 - s) * r + c * xi) ** 2 + c * c * chi2) / norm


# --------------------------------------------------------------------------------------
# Phase I runs
# --------------------------------------------------------------------------------------
def sgd_step_size(problem: AdditiveProblem, eta0: float) -> float:
    r"""The BAGJ step :math:`\eta = \eta_0\, M^{-1/2} d^{-p/2}` for the problem's exponent ``p``.

    At this scale the drift :math:`s\,p\,\Gamma u^{p-1}` of a neuron at the typical start
    :math:`u \sim d^{-1/2}` and the normalisation term :math:`\eta d\,C u/2` are of the same
    order, so :math:`\eta_0 = O(1)` is the largest step that still escapes, and the number of
    steps to localise is :math:`\asymp M d^{p-1}` (theory/oko2024/equations.md).
    """
    _check_problem(problem)
    eta0 = check_real("eta0", eta0, lower=0.0, lower_open=True)
    p = problem.require_common_exponent()
    return eta0 * problem.scale * problem.d ** (-p / 2)


@dataclasses.dataclass(frozen=True)
class PhaseOneResult:
    r"""Outcome of :func:`phase_one`.

    Attributes
    ----------
    W : ndarray, shape (R, J, d), or None
        Final first layer (``None`` with the exact d-free engine).
    u0, u : ndarray, shape (R, J, M)
        Initial and final overlaps.
    hit_step : ndarray, shape (R, J)
        First step at which :math:`\max_m|u_m| \ge` ``level`` (``NaN``: not reached).
    steps : int
        Steps run.
    eta, batch : float, int
    report : LocalisationReport
        At the final step (with ``level`` = :data:`~popdyn.models.additive.LOCALISED_LEVEL`).
    meta : dict
    """

    W: np.ndarray
    u0: np.ndarray
    u: np.ndarray
    hit_step: np.ndarray
    steps: int
    eta: float
    batch: int
    report: object
    meta: dict

    @property
    def samples(self) -> int:
        """Samples used, ``batch * steps``."""
        return self.batch * self.steps


def phase_one(problem: AdditiveProblem, *, eta: float, steps: int, batch: int = 1, replicas: int = 1,
              init="uniform", level: float = LOCALISED_LEVEL, stop_fraction: float = 1.0, anneal_steps: int = 0,
              anneal_factor: float = 0.1, engine: str = "full", rng=None, progress=None) -> PhaseOneResult:
    r"""Layer-wise online SGD of the first layer, timing each neuron's localisation.

    Parameters
    ----------
    problem : AdditiveProblem
    eta : float
        Step size (:func:`sgd_step_size` gives the BAGJ scale).
    steps : int
        Largest number of steps.
    batch : int
        Minibatch shared by the neurons.
    replicas : int
        Independent runs (own initial weights and samples; one teacher).
    init : "uniform", float or array_like
        As in :func:`popdyn.models.multi_index_sim.initial_weights`.
    level : float
        Localisation level for ``hit_step``.
    stop_fraction : float
        Stop once, in every replica, at least this fraction of the neurons has reached
        ``level`` (``1``: all of them; a value above 1 never stops early).
    anneal_steps, anneal_factor : int, float
        After the run (or its early stop), ``anneal_steps`` more steps with the step
        ``anneal_factor * eta``: the online-SGD noise floor of a localised neuron,
        :math:`1 - u^2 \approx \eta(d-1)C/(2 s p\,\Gamma_p)` at leading order (the fixed
        point of the ODE with the normalisation term), shrinks with the step.  Not counted
        in ``hit_step``; counted in ``steps``.
    engine : {"full", "exact"}
        The d-dimensional simulator, or the exact d-free one (each neuron's law exact; no
        weights: ``W`` is then ``None``; ``batch`` 1).
    rng : int, Generator, SeedSequence or None
    progress : bool or None

    Returns
    -------
    PhaseOneResult

    Examples
    --------
    >>> from popdyn.models.additive import task_directions
    >>> prob = AdditiveProblem("he3", "he3", task_directions(2, 16, kind="orthogonal", rng=0), n_neurons=2)
    >>> res = phase_one(prob, eta=sgd_step_size(prob, 0.5), steps=40000, replicas=2, anneal_steps=5000, rng=1)
    >>> bool(np.all(np.isfinite(res.hit_step))), res.report.fraction_localised
    (True, 1.0)
    """
    from .._progress import Progress
    from ..simulation import make_stepper

    _check_problem(problem)
    steps = check_int("steps", steps, minimum=1)
    level = check_real("level", level, lower=0.0, upper=1.0, lower_open=True, upper_open=True)
    stop_fraction = check_real("stop_fraction", stop_fraction, lower=0.0, lower_open=True)
    stepper, noise = make_stepper(problem, d=problem.d, algorithm="sgd", eta=eta, batch=batch, replicas=replicas,
                                  init=init, same_init=False, rng=rng, engine=engine)
    state = stepper.init_state()
    full = "W" in state
    if full:
        state["U"] = state["W"] @ stepper._VT
    u0 = state["U"].copy()
    hit = np.full(u0.shape[:2], np.nan)
    hit[np.max(np.abs(u0), axis=-1) >= level] = 0
    done = 0
    need = math.ceil(stop_fraction * hit.shape[1] - 1e-9)  # neurons per replica that must have hit
    with Progress(steps, desc="additive phase I", unit="step", enabled=progress) as bar:
        with np.errstate(all="ignore"):
            for it in range(1, steps + 1):
                try:
                    stepper.step(state, noise)
                except NumericalError as exc:
                    raise NumericalError(str(exc), step=it, time=it * stepper.eta) from exc
                new = np.isnan(hit) & (np.max(np.abs(state["U"]), axis=-1) >= level)
                bar.update(1)
                done = it
                if new.any():
                    hit[new] = it
                    if need <= hit.shape[1] and np.min(np.sum(~np.isnan(hit), axis=1)) >= need:
                        break
    anneal_steps = check_int("anneal_steps", anneal_steps, minimum=0)
    if anneal_steps:
        anneal_factor = check_real("anneal_factor", anneal_factor, lower=0.0, lower_open=True)
        stepper.eta = stepper.eta * anneal_factor
        if full:
            state.pop("U")
        with np.errstate(all="ignore"):
            for it in range(done + 1, done + anneal_steps + 1):
                try:
                    stepper.step(state, noise)
                except NumericalError as exc:
                    raise NumericalError(str(exc), step=it, time=float("nan")) from exc
        done += anneal_steps
        stepper.eta = stepper.eta / anneal_factor
    u = state["W"] @ stepper._VT if full else state["U"]  # full: recomputed (the carried U agrees to rounding)
    report = localisation_report(problem, u0, u)
    return PhaseOneResult(W=state["W"] if full else None, u0=u0, u=u, hit_step=hit, steps=done, eta=stepper.eta, batch=stepper.batch,
                          report=report, meta={"problem": problem.describe(), "replicas": replicas, "level": level,
                                               "max_steps": steps, "anneal_steps": anneal_steps,
                                               "anneal_factor": anneal_factor, "engine": engine})


def flow_weights(problem: AdditiveProblem, t_end: float, *, init="uniform", replicas: int = 1, rtol: float = 1e-8,
                 rng=None) -> np.ndarray:
    r"""First layer after the ``d``-dimensional population gradient flow to ``t_end``, shape ``(R, J, d)``.

    The infinite-sample limit of Phase I (:class:`AdditiveStepper`, algorithm ``"gf"``,
    DOP853 at ``rtol``), from independent starts per replica.
    """
    from ..simulation import make_stepper

    _check_problem(problem)
    t_end = check_real("t_end", t_end, lower=0.0, lower_open=True)
    stepper, _ = make_stepper(problem, d=problem.d, algorithm="gf", replicas=replicas, init=init, same_init=False,
                              rtol=rtol, atol=rtol * 1e-2, rng=rng)
    state = stepper.init_state()
    stepper.advance(state, 0.0, t_end)
    return state["W"]


def predicted_steps(problem: AdditiveProblem, u0, *, eta: float, batch: int = 1, level: float = 0.5,
                    t_end: float | None = None) -> np.ndarray:
    r"""Steps for each neuron to reach :math:`\max_m|u_m| =` ``level`` under the overlap ODE
    with the online-SGD term (``t/eta``; ``NaN`` when it never does by ``t_end``).

    ``u0`` has shape ``(J, M)``; ``t_end`` defaults to 20 times the leading-order escape
    time of the slowest neuron, :math:`\max_j (u^*_j)^{2-p}/(p (p-2)|\Gamma_p|)` with
    :math:`u^*_j = \max_m |u_{jm}(0)|`, capped at 50 times the median one (a neuron whose
    largest overlap is tiny would otherwise set a huge horizon; it is then ``NaN``).
    """
    from ..ode import integrate

    _check_problem(problem)
    p = problem.require_common_exponent()
    eta = check_real("eta", eta, lower=0.0, lower_open=True)
    u0 = check_finite_array("u0", u0, ndim=2)
    if t_end is None:
        lead = float(np.max(np.abs(problem.gamma[:, p])))
        top = np.maximum(np.max(np.abs(u0), axis=1), 1e-12)
        times = top ** (2 - p) / (p * (p - 2) * lead)
        t_end = float(min(20.0 * times.max(), 50.0 * np.median(times)))
    traj = integrate(problem, u0, t_end, eta=eta, d=problem.d, batch=batch, escape_level=level, n_times=20,
                     rtol=1e-8, atol=1e-11, progress=False)
    return np.asarray(traj.events["escape"], dtype=float) / eta


@dataclasses.dataclass(frozen=True)
class LocalisationTimes:
    r"""Samples to localise, measured by SGD and predicted by the ODE from the same starts.

    Attributes
    ----------
    measured : ndarray, shape (R, J)
        Samples (``batch * steps``) until :math:`\max_m|u_m| \ge` ``level``, NaN if not reached.
    predicted : ndarray, shape (R, J)
        The same from the overlap ODE with the online-SGD term.
    per_replica : ndarray, shape (R,)
        Lower median over neurons of ``measured`` (the :math:`\lceil J/2\rceil`-th fastest
        neuron of each replica; ``inf`` if it never localised).
    per_replica_ode : ndarray, shape (R,)
    eta : float
    level : float
    """

    measured: np.ndarray
    predicted: np.ndarray
    per_replica: np.ndarray
    per_replica_ode: np.ndarray
    eta: float
    level: float


def samples_to_localise(problem: AdditiveProblem, *, eta0: float = 0.5, level: float = 0.5, replicas: int = 8,
                        batch: int = 1, init="uniform", max_steps: int | None = None, ode: bool = True,
                        engine: str = "full", rng=None, progress=None) -> LocalisationTimes:
    r"""Samples that online SGD needs to localise the median neuron, and the ODE's prediction.

    Runs :func:`phase_one` with :math:`\eta = \eta_0 M^{-1/2} d^{-p/2}` (:func:`sgd_step_size`)
    until, in every replica, half of the neurons have reached ``level`` (default 0.5: weak
    recovery, after which the rest takes :math:`O(\sqrt M/\eta)` steps, a lower order than
    :math:`M d^{p-1}`), at most ``max_steps`` (default 50 times the leading-order estimate
    :math:`M d^{p-1}/\eta_0`).  ``init`` as in :func:`phase_one` (e.g. a fixed overlap
    profile ``u0`` of shape ``(M,)``, which removes the :math:`\log M` of the random start);
    ``engine`` as in :func:`phase_one`.  Neurons not reached count as infinitely slow in the
    medians.

    Parameters
    ----------
    problem : AdditiveProblem
        The problem (its tasks must share one information exponent ``p``).
    eta0 : float, optional
        Prefactor :math:`\eta_0 > 0` of the step (default 0.5).
    level : float, optional
        Localisation level for :math:`\max_m|u_m|` (default 0.5).
    replicas : int, optional
        Independent runs (default 8).
    batch : int, optional
        Minibatch size (default 1); samples are ``batch * steps``.
    init : "uniform", float or array_like, optional
        As in :func:`phase_one` (default ``"uniform"``).
    max_steps : int, optional
        Step budget (default :math:`\lfloor 50 M d^{p-1}/\eta_0\rfloor + 1000`).
    ode : bool, optional
        Also predict the samples with the overlap ODE (:func:`predicted_steps`) from the same
        starts (default True; ``False`` leaves the predictions NaN).
    engine : {"full", "exact"}, optional
        As in :func:`phase_one`.
    rng : int, Generator, SeedSequence or None, optional
        Seed.
    progress : bool or None, optional
        Progress on stderr, as in :func:`phase_one`.

    Returns
    -------
    LocalisationTimes
        Samples per neuron measured by SGD and predicted by the ODE, their lower medians per
        replica, the step ``eta`` and ``level``.
    """
    _check_problem(problem)
    p = problem.require_common_exponent()
    eta = sgd_step_size(problem, eta0)
    if max_steps is None:
        max_steps = int(50 * problem.M * problem.d ** (p - 1) / eta0) + 1000
    res = phase_one(problem, eta=eta, steps=max_steps, batch=batch, replicas=replicas, init=init, level=level,
                    stop_fraction=0.5, engine=engine, rng=rng, progress=progress)
    measured = res.hit_step * batch
    if ode:
        pred = np.stack([predicted_steps(problem, u0r, eta=eta, batch=batch, level=level) for u0r in res.u0]) * batch
    else:
        pred = np.full_like(measured, np.nan)
    k = math.ceil(0.5 * measured.shape[1] - 1e-9) - 1  # lower median: the neuron the run stopped at
    per = np.sort(np.where(np.isnan(measured), np.inf, measured), axis=1)[:, k]
    per_ode = np.sort(np.where(np.isnan(pred), np.inf, pred), axis=1)[:, k]
    return LocalisationTimes(measured, pred, per, per_ode, eta, level)


# --------------------------------------------------------------------------------------
# Phase II
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PhaseTwoResult:
    r"""Phase II fit: relative test errors per replica and the readouts.

    Attributes
    ----------
    test_error : ndarray, shape (R,)
        :math:`\mathrm{mean}[(f - y)^2]/\mathrm{Var}(y)` on fresh samples (1: no better than
        the mean).
    train_error : ndarray, shape (R,)
    readout : popdyn.readout.Readout
        Fitted on the features divided by ``feature_scale``.
    n_features : int
    feature_scale : ndarray, shape (R, 1, n_features)
        Column standard deviations for LASSO (standardised features), ones for ridge.
    meta : dict
    """

    test_error: np.ndarray
    train_error: np.ndarray
    readout: object
    n_features: int
    feature_scale: np.ndarray
    meta: dict


def _features(W, X, b, act):
    """act(X W^T + b): W (R, J, d), X (R, n, d), b (R, J, K) -> (R, n, J*K)."""
    Z = np.matmul(X, W.transpose(0, 2, 1))  # (R, n, J)
    F = Z[..., None] + b[:, None, :, :]
    F = act(F, np.empty_like(F))
    return F.reshape(F.shape[0], F.shape[1], -1)


def phase_two(problem: AdditiveProblem, W, *, n_train: int, n_test: int = 4000, method: str = "ridge",
              alpha: float = 1e-6, n_biases: int | None = None, bias_range: float = 1.0, activation: str = "student",
              rng=None) -> PhaseTwoResult:
    r"""Fit the second layer on the first layer ``W`` (random biases, ridge or LASSO).

    Features :math:`\phi_{jk}(x) = \sigma_2(w_j\cdot x + b_{jk})`, ``k = 1..n_biases``, with
    random biases :math:`b_{jk} \sim U[-\beta, \beta]` (``bias_range`` :math:`=\beta`; the
    paper's Phase II re-initialises the biases) and :math:`\sigma_2` the Phase I student
    (``activation="student"``; for a polynomial of degree ``q``, ``q + 1`` distinct biases
    already span every polynomial of degree ``<= q`` in :math:`w_j\cdot x`, so links of
    degree ``<= q`` are represented exactly along a learned direction) or ``"relu"``.
    Targets :math:`y = f^*(x)` of ``problem`` (any teacher on the same ``d``: refitting a
    learned ``W`` to a new teacher on the same directions is the transfer experiment).  The
    readout minimises :math:`\frac1n\sum_i(y_i - a_0 - a\cdot\phi_i)^2 + \alpha P(a)`
    (:func:`popdyn.readout.fit_readout`); LASSO on features standardised to unit variance.

    Along a direction :math:`w` with :math:`w\cdot v_m = u`, the best function of
    :math:`w\cdot x` captures :math:`\sum_i c_i(f_m)^2 u^{2i}` of :math:`E f_m^2` (correlation
    identity), so the error is floored by the Phase I alignment (:math:`1 - u^6` for
    :math:`h_3` and one neuron per task); several neurons per task lower the floor.

    Parameters
    ----------
    problem : AdditiveProblem
        The teacher to fit.
    W : array_like, shape (J, d) or (R, J, d)
        First-layer directions (e.g. :attr:`PhaseOneResult.W`).
    n_train, n_test : int
        Fresh training and test samples per replica.
    method : {"ridge", "lasso"}
    alpha : float
        Penalty ``> 0``.
    n_biases : int, optional
        Random biases per neuron (default: ``q + 1`` for a degree-``q`` polynomial
        student, 8 for ReLU).
    bias_range : float
        Half-width of the bias distribution.
    activation : {"student", "relu"}
    rng : int, Generator or None

    Returns
    -------
    PhaseTwoResult
        Per replica the relative test error :math:`\mathrm{mean}[(f - y)^2]/\mathrm{Var}(y)` and
        the training error, with the fitted readouts.

    Examples
    --------
    >>> from popdyn.models.additive import task_directions
    >>> V = task_directions(2, 10, kind="orthogonal", rng=0)
    >>> prob = AdditiveProblem("he3", "he3", V)
    >>> res = phase_two(prob, V, n_train=500, rng=0)     # exact directions: exact fit
    >>> bool(res.test_error[0] < 1e-6)
    True
    """
    from ..readout import fit_readout

    _check_problem(problem)
    W = check_finite_array("W", W)
    if W.ndim == 2:
        W = W[None]
    if W.ndim != 3 or W.shape[-1] != problem.d:
        raise ValueError(f"`W` must have shape (J, d) or (R, J, d) with d = {problem.d}, got {W.shape}.")
    n_train = check_int("n_train", n_train, minimum=2)
    n_test = check_int("n_test", n_test, minimum=1)
    method = check_choice("method", method, ("ridge", "lasso"))
    activation = check_choice("activation", activation, ("student", "relu"))
    if activation == "student":
        from .multi_index_sim import fast_evaluator

        act = fast_evaluator(problem.student)
        default_k = (problem.student.degree + 1) if problem.student.is_polynomial else 8
    else:
        def act(z, out):
            return np.maximum(z, 0.0, out=out)
        default_k = 8
    K = check_int("n_biases", default_k if n_biases is None else n_biases, minimum=1)
    bias_range = check_real("bias_range", bias_range, lower=0.0)
    R, J, d = W.shape
    rng = as_generator(rng)
    b = rng.uniform(-bias_range, bias_range, size=(R, J, K))
    X = rng.standard_normal((R, n_train, d))
    y = teacher_labels(problem, X)
    F = _features(W, X, b, act)
    # LASSO on standardised features (glmnet's default): coordinate descent on raw sigma(w.x + b)
    # columns of very different scales stalls (measured: > 1e5 sweeps); ridge is scale-free here
    scale = np.std(F, axis=-2, keepdims=True) if method == "lasso" else np.ones((R, 1, F.shape[-1]))
    scale = np.where(scale > 0, scale, 1.0)
    fit = fit_readout(F / scale, y, method=method, alpha=alpha, tol=LASSO_TOL)
    train = fit.test_error(F / scale, y, scale=1.0)
    Xt = rng.standard_normal((R, n_test, d))
    yt = teacher_labels(problem, Xt)
    var = np.var(yt, axis=-1)
    test = fit.test_error(_features(W, Xt, b, act) / scale, yt) / var
    return PhaseTwoResult(test_error=np.asarray(test), train_error=np.asarray(train) / np.var(y, axis=-1),
                          readout=fit, n_features=J * K, feature_scale=scale,
                          meta={"method": method, "alpha": alpha, "n_train": n_train, "n_test": n_test,
                                "n_biases": K, "bias_range": bias_range, "activation": activation,
                                "problem": problem.describe()})


def alignment_floor(problem: AdditiveProblem, W) -> np.ndarray:
    r"""Relative Phase II error if each task is fitted along its best-aligned neuron only.

    With :math:`u^*_m = \max_j |w_j\cdot v_m|`, the best function of :math:`w\cdot x` captures
    :math:`\sum_{i\ge1} c_i(f_m)^2 (u^*_m)^{2i}` of the variance of :math:`f_m(v_m\cdot x)`
    (correlation identity), so

    .. math::

        \text{floor} = \frac{\sum_m a_m^2 \sum_{i\ge1} c_i(f_m)^2 (1 - (u^*_m)^{2i})}
                           {\sum_m a_m^2 \sum_{i\ge1} c_i(f_m)^2},

    neglecting the :math:`O(\max|v_i\cdot v_j|^p)` cross terms between tasks.  Several neurons
    per task can only do better, so with enough samples the ridge error is at most this plus
    its estimation error.  ``W`` has shape ``(J, d)`` or ``(R, J, d)``; returns shape ``(R,)``.
    """
    _check_problem(problem)
    W = check_finite_array("W", W)
    if W.ndim == 2:
        W = W[None]
    u = np.max(np.abs(W @ problem.V.T), axis=-2)  # (R, M)
    c2 = problem._link_table[:, 1:] ** 2  # (M, n)
    i = np.arange(1, c2.shape[1] + 1)
    a2 = problem.weights ** 2
    lost = np.einsum("m,mi,rmi->r", a2, c2, 1.0 - u[..., None] ** (2 * i))
    return lost / float(np.sum(a2[:, None] * c2))


def kernel_baseline(problem: AdditiveProblem, *, n_train: int, n_test: int = 2000, kernel: str = "rbf",
                    alpha: float = 1.0, degree: int | None = None, rng=None) -> float:
    r"""Relative test error of kernel ridge regression on the same kind of data (no feature learning).

    scikit-learn ``KernelRidge`` (imported here) with ``kernel="rbf"`` (bandwidth
    :math:`\gamma = 1/(2d)`, the natural scale :math:`\|x - x'\|^2 \approx 2d`) or
    ``kernel="poly"`` (:math:`(1 + x\cdot x'/d)^q`, ``q = degree`` default the links' largest
    degree).  A rotation-invariant kernel needs :math:`n \gtrsim d^q` samples for a
    degree-``q`` link, against :math:`M d^{p-1}` for SGD with feature learning.
    """
    from sklearn.kernel_ridge import KernelRidge

    _check_problem(problem)
    n_train = check_int("n_train", n_train, minimum=2)
    n_test = check_int("n_test", n_test, minimum=1)
    kernel = check_choice("kernel", kernel, ("rbf", "poly"))
    alpha = check_real("alpha", alpha, lower=0.0, lower_open=True)
    rng = as_generator(rng)
    d = problem.d
    X = rng.standard_normal((n_train, d))
    y = teacher_labels(problem, X)
    Xt = rng.standard_normal((n_test, d))
    yt = teacher_labels(problem, Xt)
    if kernel == "rbf":
        model = KernelRidge(alpha=alpha, kernel="rbf", gamma=1.0 / (2 * d))
    else:
        q = degree if degree is not None else max((t.degree or 1) for t in problem.links)
        model = KernelRidge(alpha=alpha, kernel="poly", degree=int(q), gamma=1.0 / d, coef0=1.0)
    model.fit(X, y)
    err = np.mean((model.predict(Xt) - yt) ** 2) / np.var(yt)
    return float(err)
