r"""Finite-d simulator for a general input covariance (arXiv 2309.03843 beyond the spiked model).

Ground truth for the d-dimensional population flow of
:class:`~popdyn.models.covariance.CovarianceProblem`.  Plugs into
:func:`popdyn.simulation.simulate` (``algorithm="sgd"`` or ``"gd"``, ``engine="full"``).

:class:`CovarianceStepper` **is** :class:`~popdyn.models.spiked_sim.SpikedStepper` (same
loss, gradient, update and retraction for the ``"spherical"``, ``"normalized"`` and
``"preconditioned"`` flows -- see that module's docstring for the formulas) with the
spiked :math:`\Sigma` operations replaced by dense ones:

* samples :math:`x = L g`, :math:`g \sim N(0, I_d)`, with the Cholesky factor
  :math:`LL^\top = \Sigma` computed once (:attr:`CovarianceProblem.cholesky
  <popdyn.models.covariance.CovarianceProblem>`); a minibatch is one ``(R, B, d) @ L^T``;
* :math:`\Sigma w` and the exact :math:`\Sigma^{-1} g` are dense mat-vecs;
* the preconditioned flow with ``problem.n_unlabeled`` = :math:`n'` uses, per replica,
  :math:`\hat\Sigma^{-1}` with :math:`\hat\Sigma = \frac1{n'}\sum_{i\le n'}x_ix_i^\top` from
  :math:`n'` fresh unlabelled samples (drawn once from the ``data`` stream; :math:`n' \ge
  d + 2`, :func:`~popdyn.models.spiked.min_unlabeled`).  The normaliser
  :math:`\|\Sigma^{1/2}w\|` always uses the exact :math:`\Sigma`, as in the spiked simulator.

Cost per step :math:`O(R B d^2)` (the sampling), plus :math:`O(R d^2)` with an empirical
preconditioner.  Time ``t = eta * steps``.

Recorded overlaps
-----------------
``w``        the weights, shape ``(n_times, R, d)`` (the ODE state of ``CovarianceProblem``);
``p``        :math:`\langle w, u\rangle` (:math:`u^\top\Sigma u = 1`);
``S``        :math:`w^\top\Sigma w`;
``m_sigma``  :math:`w^\top\Sigma u/\sqrt{w^\top\Sigma w}`;
``m_u``      :math:`\langle w,u\rangle/(\|w\|\,\|u\|)`.

Initialisation (``init``): ``"uniform"``, a float ``m0`` (:math:`m_\Sigma(w_0) = m_0`
exactly) or an array ``w0`` of length ``d``; see
:meth:`CovarianceProblem.initial_weight <popdyn.models.covariance.CovarianceProblem.initial_weight>`
(the draw comes from the ``init`` stream).  ``same_init=True`` (default) starts every
replica from one draw.  There is no random model quantity (``model`` stream unused).

References
----------
A. Mousavi-Hosseini, D. Wu, T. Suzuki, M. A. Erdogdu, arXiv 2309.03843; theory/mousavi2023/equations.md.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_init_scalar, check_int
from .covariance import INIT_CHOICES, CovarianceProblem
from .spiked_sim import SpikedStepper

__all__ = ["CovarianceStepper", "sample_inputs", "initial_state"]


def sample_inputs(rng, shape, cholesky) -> np.ndarray:
    r"""Draw ``x ~ N(0, L L^T)`` of shape ``shape + (d,)`` as ``g @ L^T`` (``cholesky`` = lower ``L``).

    Examples
    --------
    >>> L = np.linalg.cholesky(np.array([[2.0, 0.6], [0.6, 1.0]]))
    >>> X = sample_inputs(np.random.default_rng(0), (40000,), L)
    >>> np.round(X.T @ X / len(X), 1).tolist()
    [[2.0, 0.6], [0.6, 1.0]]
    """
    G = rng.standard_normal(tuple(shape) + (cholesky.shape[0],))
    return G @ cholesky.T


def _check_problem(problem):
    if not isinstance(problem, CovarianceProblem):
        raise TypeError(f"`problem` must be a CovarianceProblem, got {type(problem).__name__}.")
    return problem


def _check_init(init, d):
    if check_init_scalar(init, INIT_CHOICES, lower=-1.0, upper=1.0, open_bounds=True) is None:
        arr = np.asarray(init) if not isinstance(init, dict) else None
        if arr is None or arr.shape != (d,):
            raise TypeError(f"`init` must be one of {', '.join(INIT_CHOICES)} (d = {d}); got {init!r}.")


def initial_state(problem, d, *, init="uniform", model_rng=None, init_rng=None, replicas=1, same_init=True):
    r"""Target vector and initial weights ``(u, W0)``: ``u`` (d,) with :math:`u^\top\Sigma u = 1`,
    ``W0`` of shape ``(d,)`` when ``same_init`` else ``(R, d)``
    (:meth:`CovarianceProblem.initial_weight <popdyn.models.covariance.CovarianceProblem.initial_weight>`)."""
    _check_problem(problem)
    d = check_int("d", d, minimum=2)
    if d != problem.d:
        raise ValueError(f"`d` = {d} differs from the covariance's dimension {problem.d} (d is taken from `sigma`).")
    _check_init(init, d)
    size = None if same_init else check_int("replicas", replicas, minimum=1)
    return problem.u, problem.initial_weight(init, rng=init_rng, size=size)


class CovarianceStepper(SpikedStepper):
    r"""Online SGD / multi-pass GD with dense :math:`\Sigma` (stepper protocol; module docstring).

    Inherits ``teacher_labels``, ``loss``, ``gradient``, ``update``, ``step``, ``init_state``,
    ``observe`` and the dataset/preconditioner set-up from
    :class:`~popdyn.models.spiked_sim.SpikedStepper`, and overrides the :math:`\Sigma`
    operations, the sampling, the overlaps and the metadata.

    Attributes
    ----------
    sigma, L, u : ndarray
        :math:`\Sigma` (d, d), its lower Cholesky factor, the target vector (d,).
    P : ndarray (R, d, d) or None
        :math:`\hat\Sigma^{-1}` per replica (preconditioned flow with ``n_unlabeled``).
    """

    model = "covariance"
    algorithms = ("sgd", "gd")
    continuous = False
    initial_state = staticmethod(initial_state)

    def __init__(self, problem, config, streams):  # noqa: D107 -- replaces SpikedStepper.__init__
        _check_problem(problem)
        self.problem, self.config, self.flow = problem, config, problem.flow
        self.a_star = float(problem.a_star)
        self.R, self.d, self.eta, self.algorithm = config.replicas, config.d, config.eta, config.algorithm
        self.sigma, self.L = problem.sigma, problem.cholesky
        self.u, self._W0 = initial_state(problem, self.d, init=config.init, model_rng=streams["model"],
                                         init_rng=streams["init"], replicas=self.R, same_init=config.same_init)
        self._setup(problem, config, streams)

    # -- dense Sigma operations (override the spiked closed forms) -----------------------------
    def sigma_dot(self, W) -> np.ndarray:
        r""":math:`\Sigma w` for ``W`` of shape ``(..., d)``."""
        return W @ self.sigma

    def precondition(self, G) -> np.ndarray:
        r""":math:`\hat\Sigma^{-1} g` for ``G`` of shape ``(R, d)`` (exact :math:`\Sigma^{-1}` or empirical)."""
        if self.P is None:
            return G @ self.problem.sigma_inv
        return np.matmul(self.P, G[..., None])[..., 0]

    def sample(self, rng, shape) -> np.ndarray:
        """Inputs of shape ``shape + (d,)``."""
        return sample_inputs(rng, shape, self.L)

    # -- protocol ----------------------------------------------------------------------------
    @property
    def constants(self) -> dict:
        out = {"u": self.u, "sigma": self.sigma}
        if self.P is not None:
            out["P_trace"] = np.trace(self.P, axis1=1, axis2=2)
        return out

    def overlaps(self, W) -> dict:
        """``w`` and the derived overlaps of weights ``W`` (..., d) (module docstring)."""
        return {"w": np.array(W, dtype=float), **self.problem.overlaps(W)}

    def work_per_step(self) -> float:
        b = self.batch or 1
        extra = self.d if self.P is not None else 0
        return float(self.R * (b * (self.d + 4) + extra + self.d) * self.d)

    def describe(self) -> dict:
        init = self.config.init if isinstance(self.config.init, str) else np.asarray(self.config.init).tolist()
        ov = self.problem.overlaps(np.asarray(self._W0))
        return {"engine": "full", "flow": self.flow, "init": init, "batch_used": self.batch,
                "n_unlabeled": None if self.P is None else int(self.problem.n_unlabeled),
                "initial": {k: np.asarray(v).tolist() for k, v in ov.items()}}
