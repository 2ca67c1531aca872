r"""Finite-d simulators of the spiked-covariance single-index model (arXiv 2309.03843).

Ground truth for the population/ODE description of :mod:`popdyn.models.spiked`.  Plugs
into :func:`popdyn.simulation.simulate` (``algorithm="sgd"`` or ``"gd"``, ``engine="full"``)
through :class:`SpikedStepper` (stepper protocol of :mod:`popdyn.simulation`).

Model
-----
Inputs :math:`x \sim N(0, \Sigma)` with the spiked covariance

.. math::

    \Sigma = \frac{I_d + \kappa\,\theta\theta^\top}{1+\kappa}, \qquad
    \Sigma^{-1} = (1+\kappa) I_d - \kappa\,\theta\theta^\top ,

(:math:`\|\Sigma\|_{op} = 1`), drawn without forming :math:`\Sigma`:
:math:`x = \big(g + (\sqrt{1+\kappa} - 1)(\theta\cdot g)\,\theta\big)/\sqrt{1+\kappa}`,
:math:`g \sim N(0, I_d)` (:func:`sample_inputs`).  The target direction is
:math:`\hat u = a\,\theta + \sqrt{1-a^2}\,\xi` with :math:`a` = ``problem.align`` and a
Haar unit :math:`\xi \perp \theta`; the index vector :math:`u = \hat u/\sqrt{\hat
u^\top\Sigma\hat u}` has :math:`u^\top \Sigma u = 1`, so :math:`\langle u, x\rangle
\sim N(0, 1)` and :math:`y = a^* g(\langle u, x\rangle)` (``problem.teacher``,
``problem.a_star``; no label noise).  One student
neuron :math:`\phi` (``problem.student``), per-sample loss
:math:`\ell = \tfrac12(\phi(p) - y)^2` with the preactivation ``p`` of the flow:

``"spherical"``
    :math:`p = \langle w, x\rangle`, :math:`\|w\| = 1`.  Euclidean minibatch gradient
    :math:`\nabla = \frac1B\sum_b r_b\,\phi'(p_b)\,x_b` with :math:`r_b = \phi(p_b) - y_b`;
    Riemannian step and retraction
    :math:`w \leftarrow (w - \eta\hat g)/\|w - \eta\hat g\|`,
    :math:`\hat g = \nabla - (w\cdot\nabla) w`.
``"normalized"``
    :math:`p = \langle w, x\rangle/\sigma_w`, :math:`\sigma_w = \|\Sigma^{1/2}w\|`, with
    the **exact** :math:`\Sigma` in the normaliser (the population batch-norm of the
    paper; an empirical normaliser is not implemented).  The loss is invariant under
    :math:`w \to c w`, and

    .. math::

        \nabla = \frac{1}{B\sigma_w}\sum_b r_b\,\phi'(p_b)
                 \Big(x_b - p_b\,\frac{\Sigma w}{\sigma_w}\Big), \qquad w\cdot\nabla = 0 ,

    so the gradient is already tangent to the sphere; the step is
    :math:`w \leftarrow (w - \eta\nabla)/\|w - \eta\nabla\|` (the retraction only
    removes the :math:`O(\eta^2)` growth of :math:`\|w\|`, which would otherwise slow
    the clock as :math:`1/\|w\|^2`).
``"preconditioned"``
    The normalized loss with the step
    :math:`w \leftarrow w - \eta\,\hat\Sigma^{-1}\nabla`, then the retraction in the
    :math:`\Sigma`-norm, :math:`w \leftarrow w/\|\Sigma^{1/2}w\|` (so ``sw2`` = 1).
    :math:`\hat\Sigma` is the exact :math:`\Sigma` (``problem.n_unlabeled`` is
    ``None``) or, per replica, the empirical covariance
    :math:`\frac{1}{n'}\sum_{i\le n'} x_i x_i^\top` of :math:`n'` fresh unlabelled
    samples (drawn once from the ``data`` stream; needs :math:`n' \ge`
    :func:`~popdyn.models.spiked.min_unlabeled` ``(d)`` :math:`= d + 2`, where
    :math:`E[\hat\Sigma^{-1}] = \frac{n'}{n'-d-1}\Sigma^{-1}` is finite).  With the exact
    :math:`\Sigma`, in whitened coordinates :math:`\tilde w = \Sigma^{1/2} w`,
    :math:`\tilde x = \Sigma^{-1/2}x \sim N(0, I_d)`, this is *exactly* (any
    :math:`\eta`) the isotropic spherical SGD on :math:`\tilde w`, target
    :math:`\Sigma^{1/2}u` (a unit vector) -- theory/mousavi2023/equations.md, "Reconstructed
    model and derived facts" (preconditioned flow).  Cost: :math:`O(R d^2)` memory and time per
    step with an empirical :math:`\hat\Sigma` (one :math:`d\times d` inverse per replica).

Algorithms: ``"sgd"`` (online, fresh minibatch of ``batch`` samples per step) and
``"gd"`` (multi-pass on ``n_samples`` labelled points per replica, full batch or
minibatches without replacement within each epoch, as in
:mod:`popdyn.models.multi_index_sim`).  Time ``t = eta * steps``.

Recorded overlaps (each of shape ``(n_times, R)``)
--------------------------------------------------
* ``p``, ``q``, ``S``: the ODE state of :class:`~popdyn.models.spiked.SpikedProblem`,
  :math:`\langle w, u\rangle` (:math:`u^\top\Sigma u = 1`), :math:`\langle w, \theta\rangle`,
  :math:`w^\top \Sigma w = (\|w\|^2 + \kappa\langle w,\theta\rangle^2)/(1+\kappa)`;
* ``m_u``: :math:`\langle w, u\rangle/(\|w\|\,\|u\|)` (cosine with the target);
* ``m_theta``: :math:`\langle w, \theta\rangle/\|w\|` (cosine with the spike);
* ``sw2``: :math:`w^\top\Sigma w` (same as ``S``);
* ``m_sigma``: :math:`w^\top\Sigma u/\sqrt{w^\top\Sigma w}` (the alignment that enters the
  normalized loss, :math:`R = \mathrm{const} - F(m_\Sigma)`; ``m`` of
  :meth:`SpikedProblem.overlaps <popdyn.models.spiked.SpikedProblem.overlaps>`).

Initialisation (``init``)
-------------------------
``"uniform"``: Haar on :math:`S^{d-1}`; a float ``m0`` in (-1, 1): the convention of
:meth:`SpikedProblem.initial_state(d, m0=m0) <popdyn.models.spiked.SpikedProblem.initial_state>`,
:math:`w_0 = \epsilon f + \sqrt{1-\epsilon^2}\,r` with :math:`f = \Sigma u/\|\Sigma u\|`,
``r`` a Haar unit vector orthogonal to :math:`\mathrm{span}(\theta, u)` and
:math:`\epsilon` chosen so that :math:`m_\Sigma(w_0) = m_0` exactly; then
``(p, q, S)`` at ``t = 0`` equal that ODE initial state (all replicas).
The preconditioned flow rescales :math:`w_0` to :math:`w_0^\top\Sigma w_0 = 1`.
``same_init=True`` (default) starts every replica from one draw.

Randomness: ``model`` stream -> :math:`\theta, \xi`; ``init`` -> :math:`w_0`; ``data``
-> the ``"gd"`` dataset, then the unlabelled samples of :math:`\hat\Sigma`; ``noise`` ->
fresh samples (``"sgd"``) or epoch permutations (``"gd"``).

References
----------
A. Mousavi-Hosseini, D. Wu, T. Suzuki, M. A. Erdogdu, "Gradient-Based Feature Learning
under Structured Data", NeurIPS 2023 (arXiv 2309.03843); theory/mousavi2023/equations.md.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._validation import check_init_scalar, check_int, check_real
from ..errors import NumericalError
from ..simulation import epoch_state, next_minibatch
from .multi_index_sim import fast_evaluator
from .single_index_sim import StepSizeMonitor
from .spiked import SpikedProblem, min_unlabeled

__all__ = ["SpikedStepper", "sample_inputs", "spiked_directions", "initial_state", "INIT_CHOICES"]

#: Documented forms of ``init``.
INIT_CHOICES = ("'uniform'", "a float m0 in (-1, 1) (the initial m_Sigma)")


def _unit(A):
    A /= np.sqrt(np.einsum("...d,...d->...", A, A))[..., None]
    return A


def _kappa(kappa):
    return check_real("kappa", kappa, lower=0.0)


def sample_inputs(rng, shape, theta, kappa) -> np.ndarray:
    r"""Draw ``x ~ N(0, Sigma)`` with :math:`\Sigma = (I + \kappa\theta\theta^\top)/(1+\kappa)`.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        Leading shape; the result has shape ``shape + (d,)``.
    theta : ndarray (d,)
        Unit spike direction.
    kappa : float
        Spike magnitude ``>= 0``.

    Examples
    --------
    >>> X = sample_inputs(np.random.default_rng(0), (20000,), np.eye(3)[0], 3.0)
    >>> np.round(np.var(X, axis=0) * 4, 1).tolist()   # (1 + kappa, 1, 1)
    [4.0, 1.0, 1.0]
    """
    kappa = _kappa(kappa)
    X = rng.standard_normal(tuple(shape) + (theta.shape[0],))
    return _spike(X, theta, kappa)


def _spike(X, theta, kappa):
    """In place: ``X <- (X + (sqrt(1+kappa) - 1)(theta.X) theta)/sqrt(1+kappa)``."""
    s = math.sqrt(1.0 + kappa)
    if kappa != 0.0:
        X += ((s - 1.0) * (X @ theta))[..., None] * theta
        X /= s
    return X


def spiked_directions(d, align, rng):
    r"""Spike :math:`\theta` (Haar), unit target direction :math:`\hat u` with
    :math:`\hat u\cdot\theta` = ``align``, and a unit :math:`\xi \perp \theta` used to build it."""
    d = check_int("d", d, minimum=2)
    align = check_real("align", align, lower=-1.0, upper=1.0)
    theta = _unit(rng.standard_normal(d))
    xi = rng.standard_normal(d)
    xi -= (xi @ theta) * theta
    xi = _unit(xi)
    u_hat = align * theta + math.sqrt(max(0.0, 1.0 - align * align)) * xi
    return theta, u_hat, xi


def _parse_init(init):
    head = check_init_scalar(init, INIT_CHOICES, lower=-1.0, upper=1.0, open_bounds=True)
    if head is None:
        raise TypeError(f"`init` must be one of {', '.join(INIT_CHOICES)}; got {init!r}.")
    return ("m0", head[1]) if head[0] == "scalar" else head


def _check_problem(problem):
    if not isinstance(problem, SpikedProblem):
        raise TypeError(f"`problem` must be a SpikedProblem, got {type(problem).__name__}.")
    return problem


def initial_state(problem, d, *, init="uniform", model_rng=None, init_rng=None, replicas=1, same_init=True):
    r"""Fixed directions and initial weights: ``(theta, u, W0)``.

    ``theta`` (d,) the spike, ``u`` (d,) the index vector (:math:`u^\top\Sigma u = 1`),
    ``W0`` of shape ``(d,)`` when ``same_init`` else ``(R, d)`` (module docstring,
    "Initialisation").  Use :func:`popdyn.simulation.initial_state` for the state a seeded
    :func:`~popdyn.simulation.simulate` run starts from.
    """
    _check_problem(problem)
    kappa, align = problem.kappa, problem.align
    d = check_int("d", d, minimum=3)
    kind, m0 = _parse_init(init)
    theta, u_hat, _ = spiked_directions(d, align, model_rng)
    u = u_hat * math.sqrt((1.0 + kappa) / (1.0 + kappa * align * align))
    lead = () if same_init else (check_int("replicas", replicas, minimum=1),)
    r = init_rng.standard_normal(lead + (d,))
    if kind == "uniform":
        W0 = _unit(r)
    else:
        Q, _ = np.linalg.qr(np.stack([theta, u_hat], axis=1))  # orthonormal basis of span(theta, u)
        r -= (r @ Q) @ Q.T
        Su = (u + kappa * (u @ theta) * theta) / (1.0 + kappa)
        su2 = float(Su @ Su)
        f = Su / math.sqrt(su2)
        a2 = float(f @ theta) ** 2
        e2 = m0 * m0 / ((1.0 + kappa) * su2 - kappa * m0 * m0 * a2)  # m_Sigma(eps f + sqrt(1-eps^2) r) = m0
        if not e2 <= 1.0:
            raise ValueError(f"`init` = m0 = {m0} is not reachable as m_Sigma of a unit vector "
                             f"eps f + sqrt(1 - eps^2) r (needs eps^2 = {e2:.6g} <= 1); use a smaller |m0|.")
        eps = math.copysign(math.sqrt(e2), m0)
        W0 = eps * f + math.sqrt(max(0.0, 1.0 - e2)) * _unit(r)
    if problem.flow == "preconditioned":
        sw2 = (np.einsum("...d,...d->...", W0, W0) + kappa * (W0 @ theta) ** 2) / (1.0 + kappa)
        W0 = W0 / np.sqrt(sw2)[..., None]
    return theta, u, W0


class SpikedStepper(StepSizeMonitor):
    r"""Online SGD / multi-pass GD for the spiked single-index model (stepper protocol).

    Built by :func:`popdyn.simulation.make_stepper`; the flows and overlaps are in the
    module docstring.

    Attributes
    ----------
    theta, u : ndarray (d,)
        Spike direction and index vector (shared by all replicas).
    P : ndarray (R, d, d) or None
        :math:`\hat\Sigma^{-1}` per replica (preconditioned flow with ``n_unlabeled``).
    data, labels : ndarray (R, n, d), (R, n) or None
        The ``"gd"`` dataset.
    """

    model = "spiked"
    algorithms = ("sgd", "gd")
    continuous = False
    initial_state = staticmethod(initial_state)

    def __init__(self, problem, config, streams):
        _check_problem(problem)
        self.kappa, self.align, self.flow = problem.kappa, problem.align, problem.flow
        self.a_star = float(problem.a_star)
        pd, n_unl = problem.d, problem.n_unlabeled
        self.problem, self.config = problem, config
        self.R, self.d, self.eta, self.algorithm = config.replicas, config.d, config.eta, config.algorithm
        if self.d < 3:
            raise ValueError(f"`d` must be an integer >= 3 for the spiked model, got {self.d}.")
        if pd is not None and pd != self.d:
            raise ValueError(f"`d` = {self.d} differs from the problem's d = {pd}.")
        _parse_init(config.init)
        if n_unl is not None and n_unl < min_unlabeled(self.d):  # SpikedProblem checks this for its own d
            raise ValueError(f"`n_unlabeled` must be at least {min_unlabeled(self.d)} (= d + 2) for d = {self.d}, "
                             f"got {n_unl}.")
        self.theta, self.u, self._W0 = initial_state(
            problem, self.d, init=config.init, model_rng=streams["model"], init_rng=streams["init"],
            replicas=self.R, same_init=config.same_init)
        self._setup(problem, config, streams)

    def _setup(self, problem, config, streams) -> None:
        """Shared by the subclasses: activations, the ``"gd"`` dataset and the empirical
        preconditioner, all through :meth:`sample` and :meth:`sigma_dot`."""
        from ..activations import get_activation

        self.u_norm = float(np.linalg.norm(self.u))
        self._Su = self.sigma_dot(self.u)
        student, teacher = get_activation(problem.student), get_activation(problem.teacher)
        self._phi = fast_evaluator(student)
        self._dphi = fast_evaluator(student, derivative=True)
        self._g = fast_evaluator(teacher)
        self.data = self.labels = None
        self.batch = config.batch
        if self.algorithm == "gd":
            n = config.n_samples
            self.data = self.sample(streams["data"], (self.R, n))
            self.labels = self.teacher_labels(self.data)
            self.batch = n if config.batch is None else min(config.batch, n)
            if config.batch is not None and config.batch > n:
                warnings.warn(f"`batch` = {config.batch} exceeds `n_samples` = {n}; using full-batch GD.",
                              stacklevel=5)
        self.P = None
        n_unl = problem.n_unlabeled
        if self.flow == "preconditioned" and n_unl is not None:
            U = self.sample(streams["data"], (self.R, int(n_unl)))
            self.P = np.linalg.inv(np.matmul(U.transpose(0, 2, 1), U) / float(n_unl))
            if not np.all(np.isfinite(self.P)):
                raise NumericalError("the empirical covariance is singular to working precision.")

    def sample(self, rng, shape) -> np.ndarray:
        """Inputs of shape ``shape + (d,)``."""
        return sample_inputs(rng, shape, self.theta, self.kappa)

    # -- geometry ----------------------------------------------------------------------
    def sigma_dot(self, W) -> np.ndarray:
        r""":math:`\Sigma w` for ``W`` of shape ``(..., d)``."""
        return (W + self.kappa * (W @ self.theta)[..., None] * self.theta) / (1.0 + self.kappa)

    def precondition(self, G) -> np.ndarray:
        r""":math:`\hat\Sigma^{-1} g` for ``G`` of shape ``(R, d)`` (exact or empirical)."""
        if self.P is None:
            return (1.0 + self.kappa) * G - self.kappa * (G @ self.theta)[..., None] * self.theta
        return np.matmul(self.P, G[..., None])[..., 0]

    def teacher_labels(self, X) -> np.ndarray:
        """:math:`y = a^* g(u\\cdot x)` for ``X`` of shape ``(..., d)``."""
        T = X @ self.u
        y = self._g(T, np.empty(T.shape))
        if self.a_star != 1.0:
            y *= self.a_star
        return y

    # -- loss and gradient ---------------------------------------------------------------
    def _pre(self, W, X):
        """Preactivations ``(R, b)`` and the normaliser ``sigma_w`` (``(R,)`` or ``None``)."""
        Z = np.matmul(X, W[..., None])[..., 0]
        if self.flow == "spherical":
            return Z, None
        sw = np.sqrt(np.einsum("rd,rd->r", W, self.sigma_dot(W)))
        return Z / sw[:, None], sw

    def loss(self, W, X, y) -> np.ndarray:
        r"""Minibatch loss :math:`\frac1b\sum_b \tfrac12(\phi(p_b) - y_b)^2`, shape ``(R,)``,
        for ``W`` (R, d), ``X`` (R, b, d), ``y`` (R, b)."""
        P, _ = self._pre(W, X)
        r = self._phi(P, np.empty(P.shape)) - y
        return 0.5 * np.mean(r * r, axis=1)

    def gradient(self, W, X, y) -> np.ndarray:
        r"""Euclidean gradient of :meth:`loss` with respect to ``W``, shape ``(R, d)``."""
        P, sw = self._pre(W, X)
        c = self._phi(P, np.empty(P.shape))
        c -= y
        c *= self._dphi(P, np.empty(P.shape))
        c /= X.shape[1]
        G = np.matmul(c[:, None, :], X)[:, 0]
        if sw is not None:
            G -= np.einsum("rb,rb->r", c, P)[:, None] * self.sigma_dot(W) / sw[:, None]
            G /= sw[:, None]
        return G

    def update(self, W, X, y) -> None:
        """One step on the batch ``X`` (R, b, d), ``y`` (R, b), in place on ``W`` (R, d)."""
        G = self.gradient(W, X, y)
        if self.flow == "spherical":
            G -= np.einsum("rd,rd->r", W, G)[:, None] * W
        elif self.flow == "preconditioned":
            G = self.precondition(G)
        W -= self.eta * G
        if self.flow == "preconditioned":
            norm2 = np.einsum("rd,rd->r", W, self.sigma_dot(W))
        else:
            norm2 = np.einsum("rd,rd->r", W, W)
        total = float(norm2.sum())
        if not math.isfinite(total) or np.any(norm2 <= 0):
            raise NumericalError(
                f"non-finite weights after an update with eta = {self.eta:g} ({self.flow} flow): the gradient "
                "overflowed. Try a smaller `eta`.")
        # W was a unit vector (Sigma-unit when preconditioned) and the step is tangent to that sphere,
        # so norm2 = 1 + N^2 with N the relative step (checked by StepSizeMonitor.check_state)
        self._record_steps(total - norm2.size, norm2.size)
        W /= np.sqrt(norm2)[:, None]

    # -- protocol ------------------------------------------------------------------------
    @property
    def constants(self) -> dict:
        out = {"theta": self.theta, "u": self.u}
        if self.P is not None:
            out["P_trace"] = np.trace(self.P, axis1=1, axis2=2)
        return out

    def init_state(self) -> dict:
        """``{"W": (R, d)}`` (+ ``"perm"``, ``"pos"`` for minibatch GD)."""
        W = np.empty((self.R, self.d))
        W[...] = self._W0
        state = {"W": W}
        if self.algorithm == "gd" and self.batch < self.config.n_samples:
            state.update(epoch_state(self.R, self.config.n_samples))
        return state

    def overlaps(self, W) -> dict:
        """The recorded overlaps of weights ``W`` (..., d) (module docstring)."""
        wu = W @ self.u
        wt = W @ self.theta
        w2 = np.einsum("...d,...d->...", W, W)
        sw2 = (w2 + self.kappa * wt * wt) / (1.0 + self.kappa)
        norm = np.sqrt(w2)
        return {"p": wu, "q": wt, "S": sw2, "m_u": wu / (norm * self.u_norm), "m_theta": wt / norm,
                "sw2": sw2, "m_sigma": (W @ self._Su) / np.sqrt(sw2)}

    def observe(self, state) -> dict:
        return self.overlaps(state["W"])

    def work_per_step(self) -> float:
        b = self.batch or 1
        extra = self.d if self.P is not None else 0
        return float(self.R * (4 * b + extra) * self.d)

    def describe(self) -> dict:
        init = self.config.init if isinstance(self.config.init, str) else float(self.config.init)
        ov = self.overlaps(np.asarray(self._W0))
        return {"engine": "full", "flow": self.flow, "kappa": self.kappa, "align": self.align, "init": init,
                "batch_used": self.batch, "n_unlabeled": None if self.P is None else int(
                    self.problem.n_unlabeled),
                "initial": {k: np.asarray(v).tolist() for k, v in ov.items()}}

    def step(self, state, rng) -> None:
        """One SGD / GD step in place on ``state["W"]`` (``rng``: the noise stream)."""
        W = state["W"]
        if self.algorithm == "sgd":
            X = self.sample(rng, (self.R, self.batch))
            self.update(W, X, self.teacher_labels(X))
            return
        n = self.config.n_samples
        if self.batch >= n:
            self.update(W, self.data, self.labels)
            return
        idx = next_minibatch(state, rng, n, self.batch)
        X = np.take_along_axis(self.data, idx[..., None], axis=1)
        y = np.take_along_axis(self.labels, idx, axis=1)
        self.update(W, X, y)
