r"""Finite-d simulators of spherical SGD with batch reuse (arXiv 2406.01581): exact and full.

Both engines plug into :func:`popdyn.simulation.simulate` (``algorithm="sgd"``) through the
stepper protocol, registered for :class:`~popdyn.models.reuse.ReuseProblem` with
``engine="exact"`` (:class:`ReuseExactStepper`) and ``engine="full"``
(:class:`ReuseFullStepper`).  On top of them: :func:`two_phase` (Phase I alignment of a
two-layer network, then the Phase II ridge fit of the second layer) and
:func:`samples_to_reach` / :func:`scaling_study` (sample complexity of weak recovery).

The iteration (both engines)
----------------------------
Data :math:`x \sim N(0, I_d)`, label :math:`y = a^*\sigma^*(\theta\cdot x)`, student
:math:`s\,\sigma(w\cdot x)` with :math:`\|w\| = 1` and a fixed sign :math:`s = \pm 1` (the
sign of the small fixed second-layer weight; ``+1`` for a single
:class:`~popdyn.models.reuse.ReuseProblem`), correlation loss.  One *iteration* (one
``step``) draws a fresh minibatch :math:`x_1..x_B` and takes ``r = problem.reuse``
normalised spherical steps on it, each evaluated at the current weight, followed by the
interpolation step with :math:`\xi` = ``problem.interpolation``:

.. math::

    w_{k+1} = \frac{w_k + \sum_b c_{k,b}\,(x_b - \zeta_{k,b} w_k)}
                   {\|w_k + \sum_b c_{k,b}\,(x_b - \zeta_{k,b} w_k)\|}, \qquad
    \zeta_{k,b} = w_k\cdot x_b, \quad c_{k,b} = \frac{\eta}{B}\, s\, y_b\, \sigma'(\zeta_{k,b}),
    \qquad k = 0..r-1,

.. math::

    w_{\rm new} = \frac{(1-\xi)\,w_0 + \xi\, w_r}{\|(1-\xi)\,w_0 + \xi\, w_r\|}.

``r = 1, xi = 1`` is plain online spherical SGD (the control, same code path).  The
per-sample step scale is :math:`\tilde\eta = \eta d / B`; one iteration consumes ``B``
samples whatever ``r`` is, and ``t = eta * iterations`` (:func:`~popdyn.simulation.simulate`
counts iterations as steps).  The interpolation schedule is our reconstruction
(theory/lee2024/equations.md, "Reconstruction of the algorithm"): the exact schedule of the paper's Algorithm 1 was not available.

``engine="exact"``: derivation
------------------------------
Fix the current weight :math:`w_0` and alignment :math:`m = w_0\cdot\theta` (``|m| < 1``)
and put :math:`e = (\theta - m w_0)/\sqrt{1-m^2}`.  Decompose each sample of the minibatch
as :math:`x_b = z_b w_0 + s_b e + g_b` with :math:`g_b \perp \mathrm{span}(w_0, \theta)`.
Since :math:`x_b` is a fresh standard Gaussian, :math:`z_b, s_b` are i.i.d. :math:`N(0,1)`
and the :math:`g_b` are i.i.d. :math:`N(0, I_{d-2})` in the orthogonal complement,
independent of them; the teacher sees :math:`t_b = m z_b + \sqrt{1-m^2}\, s_b`.  Every
iterate stays in :math:`\mathrm{span}(w_0, e, g_1..g_B)`, so write

.. math::

    w_k = \alpha_k w_0 + \beta_k e + \sum_b \gamma_{k,b}\, g_b, \qquad
    (\alpha_0, \beta_0, \gamma_0) = (1, 0, 0).

With the Gram matrix :math:`S_{bb'} = g_b\cdot g_{b'}` every needed inner product is a
function of the scalars :math:`(z, s, S)` and the coefficients:

.. math::

    \zeta_{k,b} = w_k\cdot x_b = \alpha_k z_b + \beta_k s_b + (S\gamma_k)_b, \qquad
    \|w_k\|^2 = \alpha_k^2 + \beta_k^2 + \gamma_k^\top S \gamma_k, \qquad
    \theta\cdot w_k = m\alpha_k + \sqrt{1-m^2}\,\beta_k .

One spherical step maps, with :math:`f_k = 1 - \sum_b c_{k,b}\zeta_{k,b}`,

.. math::

    (\alpha, \beta, \gamma)_{k+1} \propto
    \bigl(f_k\alpha_k + c_k\cdot z,\; f_k\beta_k + c_k\cdot s,\; f_k\gamma_k + c_k\bigr),

normalised by the norm above; the interpolation is
:math:`(\alpha, \beta, \gamma) \leftarrow ((1-\xi) + \xi\alpha_r, \xi\beta_r, \xi\gamma_r)`,
normalised, and :math:`m_{\rm new} = m\alpha + \sqrt{1-m^2}\beta`.  By rotation invariance
about :math:`\theta` the law of :math:`m_{\rm new}` given the past depends on ``m`` only, so
``m`` alone is a Markov chain and this draws it **exactly** (no expansion in
:math:`\eta` or :math:`1/d`; the only error is rounding, and ``m`` is clipped to [-1, 1]).

:math:`S` is Wishart(d - 2, I_B).  Only a factor :math:`F` with :math:`S = F F^\top` is
needed (:math:`S\gamma = F(F^\top\gamma)`, :math:`\gamma^\top S\gamma = \|F^\top\gamma\|^2`);
it is drawn by the Bartlett decomposition: :math:`F` lower triangular ``B x B`` with
:math:`F_{ii}^2 \sim \chi^2_{d-2-i}` (``i = 0..B-1``) and standard normal entries below the
diagonal, all independent.  For ``B = 1`` this is one :math:`\chi^2_{d-2}`.  When
``d - 2 < B`` (singular Wishart) ``F`` is the ``B x (d-2)`` Gaussian matrix of the
:math:`g_b` coordinates itself.  :math:`\chi^2_k = 2\,\mathrm{Gamma}(k/2)` is drawn by
numpy's Marsaglia–Tsang sampler, whose cost does not depend on ``k``: one iteration costs
:math:`O(r B^2)` per replica, independent of ``d``.  The exact engine simulates one neuron
per replica.

``engine="full"``
-----------------
The d-dimensional ground truth: weights ``(R, N, d)`` (``N = problem.n_neurons`` when the
problem has that attribute, else 1; the ``N`` neurons of a replica share each minibatch, as
in a two-layer network in Phase I), a Haar-random :math:`\theta` from the ``model``
stream, a fresh ``(R, B, d)`` minibatch per iteration, the same update vectorised over
replicas, neurons and the minibatch.  The recorded overlap is ``{"m": (n_times, R)}`` for
one neuron, ``(n_times, R, N)`` otherwise.

Initial state (``init``)
------------------------
``"uniform"``: Haar-random ``w`` (exact engine: :math:`m_0 = g/\sqrt{g^2 + \chi^2_{d-1}}`);
a float ``m0`` in [-1, 1]: every replica (and neuron) starts at alignment exactly ``m0``
(full engine: :math:`w = m_0\theta + \sqrt{1-m_0^2}\, u` with ``u`` uniform on the unit
sphere of :math:`\theta^\perp`).  ``same_init=True`` starts all replicas from one draw.

Online control and step sizes
-----------------------------
With ``reuse = 1`` the same code runs plain online SGD.  For a target of information
exponent :math:`p \ge 3` online SGD escapes the equator only with the BAGJ step
:math:`\tilde\eta = \eta_0\, d^{1-p/2}` (i.e. :math:`\eta = \eta_0 d^{-p/2}`, theory/bagj2021/equations.md);
at constant :math:`\tilde\eta` its normalisation contraction :math:`-\tilde\eta^2 m\,
E[y^2\sigma'^2]` beats the :math:`O(m^{p-1})` drift and it never leaves
:math:`m = O(d^{-1/2})`.  :func:`scaling_study` therefore accepts ``eta_tilde`` as a
callable of ``d``.  With reuse the drift at the equator is :math:`O(1)` or
:math:`O(m)` (theory/lee2024/equations.md) and a constant :math:`\tilde\eta` works.

References
----------
J. D. Lee, K. Oko, T. Suzuki, D. Wu, "Neural network learns low-dimensional polynomials with
SGD near the information-theoretic limit", NeurIPS 2024 (arXiv 2406.01581) -- Phase I with
batch reuse, Phase II ridge fit with random biases (reconstruction, theory/lee2024/equations.md).
G. Ben Arous, R. Gheissari, A. Jagannath, JMLR 22(106), 2021 (online SGD time scales).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from .._io import atomic_write_json, versions
from .._validation import check_choice, check_int, check_real
from ..errors import NumericalError
from ..readout import RidgeMoments
from ..samplers import BartlettFactor
from ..simulation import _root_from_record, _root_sequence, _streams
from .multi_index_sim import fast_evaluator
from .single_index_sim import INIT_CHOICES, ScalarAlignmentState, _parse_init, initial_alignment, spherical_start

__all__ = ["ReuseExactStepper", "ReuseFullStepper", "TwoPhaseResult", "two_phase", "ReachResult",
           "samples_to_reach", "ScalingStudy", "scaling_study", "initial_state", "INIT_CHOICES"]

#: Random numbers drawn per block by :func:`samples_to_reach` (exact engine): bounds memory
#: (~16 MB) while amortising the cost of a generator call over many iterations.
_BLOCK_NUMBERS = 2_000_000
#: Largest block of iterations drawn at once by :func:`samples_to_reach`.
_MAX_BLOCK_STEPS = 1024
#: Largest ``R * chunk * d`` Gaussian block materialised at once by :func:`two_phase`.
_CHUNK_NUMBERS = 4_000_000
#: Recording points of the Phase I trajectory of :func:`two_phase` (log grid).
_PHASE1_RECORD = 40
#: Bootstrap resamples of :func:`scaling_study` for the slope's standard error.
_BOOTSTRAP = 1000
#: Format tag of :func:`scaling_study` output files.
SCALING_FORMAT = "popdyn-reuse-scaling/1"


def _problem_type():
    from .reuse import ReuseProblem

    return ReuseProblem


def _check_problem(problem):
    cls = _problem_type()
    if not isinstance(problem, cls):
        raise TypeError(f"`problem` must be a ReuseProblem, got {type(problem).__name__}.")
    return problem


def _init_json(init):
    return init if isinstance(init, str) else float(init)


def initial_state(problem, d, *, init="uniform", model_rng=None, init_rng=None, replicas=1, same_init=True,
                  n_neurons=None):
    r"""Teacher direction, initial weights and alignments of the full engine: ``(theta, W0, m0)``.

    ``theta`` has shape ``(d,)``; ``W0`` has shape ``(N, d)`` when ``same_init`` else
    ``(R, N, d)``; ``m0 = W0 @ theta``.  ``N`` is ``n_neurons`` or the problem's
    ``n_neurons`` (default 1).
    """
    _check_problem(problem)
    N = _n_neurons(problem) if n_neurons is None else check_int("n_neurons", n_neurons, minimum=1)
    lead = (N,) if same_init else (check_int("replicas", replicas, minimum=1), N)
    return spherical_start(init, d, lead, model_rng, init_rng)


def _n_neurons(problem) -> int:
    return int(getattr(problem, "n_neurons", 1))


class _Kernel:
    """Labels and student derivatives (Horner for polynomials)."""

    def __init__(self, problem):
        self.a = float(problem.a_star)
        self._teacher = fast_evaluator(problem.teacher)
        self._dstudent = fast_evaluator(problem.student, derivative=True)

    def labels(self, T) -> np.ndarray:
        y = self._teacher(T, np.empty(T.shape))
        if self.a != 1.0:
            y *= self.a
        return y

    def dstudent(self, Z) -> np.ndarray:
        return self._dstudent(Z, np.empty(Z.shape))


class _Base:
    model = "reuse"
    algorithms = ("sgd",)
    continuous = False

    def __init__(self, problem, config):
        _check_problem(problem)
        if config.d < 2:
            raise ValueError(f"`d` must be an integer >= 2 for the batch-reuse model, got {config.d}.")
        self.problem = problem
        self.config = config
        self.R, self.d, self.B, self.eta = config.replicas, config.d, config.batch, config.eta
        self.reuse = int(problem.reuse)
        self.xi = float(problem.interpolation)
        self.kernel = _Kernel(problem)
        self.kind, self.m0_value = _parse_init(config.init)

    def advance(self, state, t0, t1):  # pragma: no cover - protocol completeness
        raise TypeError("the batch-reuse simulators implement online SGD only (algorithm='sgd').")

    def _fail(self):
        raise NumericalError(
            f"non-finite alignment after an iteration with eta = {self.eta:g} (eta_tilde = "
            f"{self.eta * self.d / self.B:g}): the update overflowed. Try a smaller `eta` or a bounded activation."
        )


# --------------------------------------------------------------------------------------
# exact engine
# --------------------------------------------------------------------------------------
def _bartlett(rng, lead, B, df):
    r"""Factor ``F`` with ``F F^T ~ Wishart(df, I_B)``: shape ``lead + (B, q)``.

    ``q = B`` (Bartlett, lower triangular) when ``df >= B``; otherwise ``q = df`` and ``F`` is
    a plain Gaussian matrix (singular Wishart).  Stream order: the below-diagonal normals,
    then the chi-squares (:class:`popdyn.samplers.BartlettFactor` with ``order="normals_first"``,
    ``singular="gaussian"``)."""
    return _bartlett_sampler(B, df).draw(rng, lead)


def _bartlett_sampler(B, df) -> BartlettFactor:
    """The exact engine's sampler of ``F`` (see :func:`_bartlett`), index pattern precomputed."""
    return BartlettFactor(df, B, order="normals_first", singular="gaussian")


class ReuseExactStepper(ScalarAlignmentState, _Base):
    r"""Exact d-free batch-reuse SGD on the alignment ``m`` of one neuron (module docstring;
    cost per iteration ``O(R r B^2)``, independent of ``d``).

    Examples
    --------
    >>> from popdyn.models.reuse import ReuseProblem
    >>> from popdyn.simulation import simulate
    >>> prob = ReuseProblem("tanh", "he3", reuse=2)
    >>> traj = simulate(prob, d=10**6, eta=0.5e-6, steps=100, replicas=4, init=0.1,
    ...                 engine="exact", rng=0, n_record=3)
    >>> traj.m.shape
    (3, 4)
    """

    def __init__(self, problem, config, streams):
        super().__init__(problem, config)
        if _n_neurons(problem) != 1:
            raise ValueError(f"the exact engine simulates one neuron per replica; the problem has n_neurons="
                             f"{_n_neurons(problem)}. Use engine='full'.")
        self.m0 = initial_alignment(self.kind, self.m0_value, self.d, streams["init"],
                                    1 if config.same_init else self.R, config.same_init)
        self.df = self.d - 2
        self._bartlett = _bartlett_sampler(self.B, self.df)

    def work_per_step(self) -> float:
        return float(30 * self.R * self.reuse * self.B * self.B)

    def describe(self) -> dict:
        return {"engine": "exact", "init": _init_json(self.config.init), "m0": np.asarray(self.m0).tolist(),
                "reuse": self.reuse, "interpolation": self.xi}

    def numbers_per_step(self) -> int:
        """Random numbers per replica per iteration (block sizing)."""
        q = self.B if self.df >= self.B else self.df
        return 2 * self.B + self.B * q

    def draw(self, rng, R, lead=()):
        """``(z, s, F)`` for ``R`` replicas: shapes ``lead + (R, B)`` twice and ``lead + (R, B, q)``."""
        zs = rng.standard_normal((2,) + lead + (R, self.B))
        F = self._bartlett.draw(rng, lead + (R,))
        return zs[0], zs[1], F

    def update(self, m, z, s, F, sign=1.0) -> np.ndarray:
        """The exact map ``m -> m'`` for given draws (new array); ``sign`` multiplies the student."""
        R, B = z.shape
        root = np.sqrt(np.maximum(1.0 - m * m, 0.0))
        y = self.kernel.labels(z * m[:, None] + s * root[:, None])
        y *= (self.eta / B) * sign
        if B == 1 and F.shape[2] == 1:
            return self._update_online(m, root, z[:, 0], s[:, 0], F[:, 0, 0] ** 2, y[:, 0])
        Ft = F.transpose(0, 2, 1)  # (R, q, B)
        alpha = np.ones(R)
        beta = np.zeros(R)
        gamma = np.zeros((R, B))
        for k in range(self.reuse):
            if k == 0:
                zeta = z
            else:
                Fg = np.matmul(Ft, gamma[:, :, None])  # F^T gamma, (R, q, 1)
                zeta = np.matmul(F, Fg)[..., 0]  # S gamma
                zeta += alpha[:, None] * z
                zeta += beta[:, None] * s
            c = self.kernel.dstudent(zeta)
            c *= y
            f = 1.0 - np.einsum("rb,rb->r", c, zeta)
            alpha *= f
            alpha += np.einsum("rb,rb->r", c, z)
            beta *= f
            beta += np.einsum("rb,rb->r", c, s)
            gamma *= f[:, None]
            gamma += c
            norm = self._norm(alpha, beta, gamma, Ft)
            alpha /= norm
            beta /= norm
            gamma /= norm[:, None]
        return self._interpolate_and_read(m, root, alpha, beta, gamma, lambda a, b, g: self._norm(a, b, g, Ft))

    def _update_online(self, m, root, z, s, chi2, y):
        """``update`` for ``B = 1`` on ``(R,)`` arrays (``S = chi2``; same arithmetic, less overhead)."""
        alpha = np.ones_like(m)
        beta = np.zeros_like(m)
        gamma = np.zeros_like(m)
        for k in range(self.reuse):
            if k == 0:
                zeta = z
            else:
                zeta = chi2 * gamma
                zeta += alpha * z
                zeta += beta * s
            c = self.kernel.dstudent(zeta)
            c *= y
            f = 1.0 - c * zeta
            alpha *= f
            alpha += c * z
            beta *= f
            beta += c * s
            gamma *= f
            gamma += c
            norm = self._norm1(alpha, beta, gamma, chi2)
            alpha /= norm
            beta /= norm
            gamma /= norm
        return self._interpolate_and_read(m, root, alpha, beta, gamma, lambda a, b, g: self._norm1(a, b, g, chi2))

    def _interpolate_and_read(self, m, root, alpha, beta, gamma, norm):
        """Interpolation step ``normalize((1 - xi) w0 + xi w_r)`` on the coefficients, then the new
        alignment ``theta . w = m alpha + sqrt(1 - m^2) beta`` (``norm(alpha, beta, gamma)`` is |w|)."""
        if self.xi != 1.0:
            alpha *= self.xi
            alpha += 1.0 - self.xi
            beta *= self.xi
            gamma *= self.xi
            n = norm(alpha, beta, gamma)
            alpha /= n
            beta /= n
        out = m * alpha
        out += root * beta
        if not math.isfinite(float(out.sum())):  # NaN/inf anywhere makes the sum non-finite
            self._fail()
        return np.clip(out, -1.0, 1.0, out=out)

    def _norm1(self, alpha, beta, gamma, chi2):
        sq = gamma * gamma
        sq *= chi2
        sq += alpha * alpha
        sq += beta * beta
        if not math.isfinite(float(sq.sum())):
            self._fail()
        return np.sqrt(sq, out=sq)

    def _norm(self, alpha, beta, gamma, Ft):
        Fg = np.matmul(Ft, gamma[:, :, None])[..., 0]
        sq = np.einsum("rq,rq->r", Fg, Fg)
        sq += alpha * alpha
        sq += beta * beta
        if not math.isfinite(float(sq.sum())):  # an overflowed step: dividing by inf would fake m = 0
            self._fail()
        return np.sqrt(sq, out=sq)

    def step(self, state, rng) -> None:
        """One exact iteration in place on ``state["m"]``."""
        m = state["m"]
        z, s, F = self.draw(rng, self.R)
        m[...] = self.update(m, z, s, F)


# --------------------------------------------------------------------------------------
# full engine
# --------------------------------------------------------------------------------------
class ReuseFullStepper(_Base):
    r"""Full d-dimensional batch-reuse SGD of ``N`` neurons per replica (stepper protocol of
    :mod:`popdyn.simulation`; module docstring).

    Parameters
    ----------
    problem : ReuseProblem
    config : popdyn.simulation.SimulationConfig
    streams : dict of Generator
    n_neurons : int, optional
        Overrides the problem's ``n_neurons`` (default: that attribute, else 1).
    signs : array_like (N,), optional
        Fixed student signs :math:`s_j = \pm 1` (default all ``+1``).

    Attributes
    ----------
    theta : ndarray (d,)
        Teacher direction (Haar, from the ``model`` stream).
    m0 : ndarray
        Initial alignments, ``(N,)`` when ``same_init`` else ``(R, N)``.
    """

    initial_state = staticmethod(initial_state)

    def __init__(self, problem, config, streams, *, n_neurons=None, signs=None):
        super().__init__(problem, config)
        self.N = _n_neurons(problem) if n_neurons is None else check_int("n_neurons", n_neurons, minimum=1)
        if signs is None:
            self.signs = np.ones(self.N)
        else:
            self.signs = np.asarray(signs, dtype=float)
            if self.signs.shape != (self.N,) or not np.all(np.abs(self.signs) == 1.0):
                raise ValueError(f"`signs` must be {self.N} values +1 or -1, got {signs!r}.")
        self.theta, self._W0, self.m0 = initial_state(
            problem, self.d, init=config.init, model_rng=streams["model"], init_rng=streams["init"],
            replicas=self.R, same_init=config.same_init, n_neurons=self.N)

    @property
    def constants(self) -> dict:
        return {"theta": self.theta}

    def init_state(self) -> dict:
        """``{"W": (R, N, d)}``."""
        W = np.empty((self.R, self.N, self.d))
        W[...] = self._W0
        return {"W": W}

    def observe(self, state) -> dict:
        """``{"m": W theta}``, shape ``(R,)`` for one neuron, else ``(R, N)``."""
        m = state["W"] @ self.theta
        return {"m": m[:, 0] if self.N == 1 else m}

    def work_per_step(self) -> float:
        return float((4 * self.reuse + 1) * self.R * self.N * self.B * self.d)

    def describe(self) -> dict:
        return {"engine": "full", "init": _init_json(self.config.init), "m0": np.asarray(self.m0).tolist(),
                "n_neurons": self.N, "signs": self.signs.tolist(), "reuse": self.reuse,
                "interpolation": self.xi}

    def step(self, state, rng) -> None:
        """One iteration in place on ``state["W"]`` (fresh ``(R, B, d)`` minibatch, ``r`` steps on it)."""
        W = state["W"]
        X = rng.standard_normal((self.R, self.B, self.d))
        y = self.kernel.labels(X @ self.theta)  # (R, B)
        y *= self.eta / self.B
        ys = y[:, None, :] * self.signs[None, :, None]  # (R, N, B)
        Xt = X.transpose(0, 2, 1)
        W0 = W.copy() if self.xi != 1.0 else None
        for _ in range(self.reuse):
            Z = np.matmul(W, Xt)  # (R, N, B)
            c = self.kernel.dstudent(Z)
            c *= ys
            W *= (1.0 - np.einsum("rnb,rnb->rn", c, Z))[..., None]
            W += np.matmul(c, X)
            self._normalise(W)
        if W0 is not None:
            W *= self.xi
            W += (1.0 - self.xi) * W0
            self._normalise(W)

    def _normalise(self, W):
        norm = np.sqrt(np.einsum("rnd,rnd->rn", W, W))
        if not np.all(np.isfinite(norm)) or np.any(norm == 0):
            self._fail()
        W /= norm[..., None]


# --------------------------------------------------------------------------------------
# shared helpers of the drivers
# --------------------------------------------------------------------------------------
def _child(root: np.random.SeedSequence, *key) -> np.random.SeedSequence:
    """A child sequence addressed by ``key`` (independent of spawn order: used for resumes)."""
    return np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + tuple(int(k) for k in key))


def _check_progress(progress):
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"`progress` must be True, False or None, got {progress!r}.")
    return progress


def _log_grid(n_steps: int, n_record: int) -> np.ndarray:
    if n_steps == 0:
        return np.zeros(1, dtype=np.int64)
    g = np.rint(np.logspace(0.0, np.log10(n_steps), n_record - 1))
    return np.unique(np.concatenate(([0], g, [n_steps])).astype(np.int64))


# --------------------------------------------------------------------------------------
# two-phase training of a two-layer network
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TwoPhaseResult:
    r"""Outcome of :func:`two_phase`, per replica.

    Attributes
    ----------
    phase1 : Trajectory
        Phase I alignments ``m`` with shape ``(n_times, R, N)``, time ``t = eta * iterations``.
    alignment : ndarray (R, N)
        Final :math:`|m_j| = |w_j\cdot\theta|` after Phase I.
    signs : ndarray (N,)
        Fixed student signs :math:`s_j` of Phase I.
    biases : ndarray (R, N)
        Random biases :math:`b_j \sim U[-\text{bias\_range}, \text{bias\_range}]`.
    second_layer : ndarray (R, N)
        Ridge solution :math:`a_j`.
    intercept : ndarray (R,)
        Fitted intercept :math:`a_0`.
    train_error, test_error : ndarray (R,)
        Relative errors :math:`\mathrm{mean}[(f - y)^2]/\mathrm{Var}(y)` on the Phase II
        training samples and on fresh test samples (:math:`\mathrm{Var}(y)` is the exact
        population variance of the label).
    meta : dict
        Parameters, seed record, versions, wall time.
    """

    phase1: object
    alignment: np.ndarray
    signs: np.ndarray
    biases: np.ndarray
    second_layer: np.ndarray
    intercept: np.ndarray
    train_error: np.ndarray
    test_error: np.ndarray
    meta: dict

    def summary(self) -> str:
        e = self.test_error
        return (f"two-phase (d={self.meta['d']}, N={self.meta['n_neurons']}, R={e.size}): mean |m| = "
                f"{self.alignment.mean():.4g}, test error median {np.median(e):.4g} "
                f"[min {e.min():.4g}, max {e.max():.4g}]")


def _label_variance(problem) -> float:
    act = problem.teacher
    c0 = float(act.coefficients(0)[0])
    return float(problem.a_star) ** 2 * (float(act.second_moment) - c0 * c0)


def _features(student, X, W, b):
    """``sigma(W x + b)`` for ``X (R, n, d)``, ``W (R, N, d)``, ``b (R, N)``: ``(R, n, N)``."""
    P = np.matmul(X, W.transpose(0, 2, 1))
    P += b[:, None, :]
    return student(P, np.empty(P.shape))


def two_phase(problem, *, d, n_neurons, eta_tilde, batch=1, phase1_samples, phase2_samples, test_samples,
              bias_range, ridge, replicas, init="uniform", rng=None, progress=None) -> TwoPhaseResult:
    r"""Train a two-layer network in two phases (Lee et al. 2024, arXiv 2406.01581; reconstruction).

    Network :math:`f(x) = a_0 + \sum_{j=1}^N a_j\,\sigma(w_j\cdot x + b_j)`.

    * **Phase I** (first layer): the ``N`` neurons start on the unit sphere (``init``), with
      fixed random signs :math:`s_j = \pm 1` (the signs of the small fixed second-layer
      weights, which under the squared loss with :math:`a_j \to 0` reduce to the
      correlation loss with student :math:`s_j\sigma`), and are trained by the batch-reuse
      iteration of ``problem`` (``reuse``, ``interpolation``; module docstring) on
      ``phase1_samples`` fresh samples in minibatches of ``batch`` shared by the neurons,
      with :math:`\eta = \tilde\eta B/d`.  Each neuron evolves independently given the data.
    * **Phase II** (second layer): biases :math:`b_j \sim U[-\beta, \beta]`
      (``bias_range`` :math:`= \beta`) and the ridge fit, on ``phase2_samples`` fresh samples,

      .. math::

          (a_0, a) = \arg\min \frac1n\sum_i (a_0 + a\cdot\phi(x_i) - y_i)^2 + \lambda\|a\|^2,
          \qquad \phi_j(x) = \sigma(w_j\cdot x + b_j),

      solved in closed form (centred ``N x N`` normal equations, ``numpy.linalg.solve``;
      the intercept is not penalised; :class:`popdyn.readout.RidgeMoments` with
      ``alpha = ridge``).  The relative test error
      :math:`\mathrm{mean}[(f-y)^2]/\mathrm{Var}(y)` is measured on ``test_samples`` fresh
      samples (1 = no better than the mean).

    Parameters
    ----------
    problem : ReuseProblem
        Student :math:`\sigma`, teacher, ``reuse``, ``interpolation``, ``a_star``.
    d : int
        Dimension, ``>= 2``.
    n_neurons : int
        ``N >= 1``.
    eta_tilde : float
        Per-sample step scale :math:`\tilde\eta = \eta d/B > 0`.
    batch : int
        Minibatch size ``B`` of Phase I.
    phase1_samples : int
        Phase I samples, a multiple of ``batch`` (``0`` skips Phase I).
    phase2_samples : int
        Ridge samples, ``>= n_neurons + 1``.
    test_samples : int
        Fresh test samples, ``>= 1``.
    bias_range : float
        Half-width ``> 0`` of the bias distribution.
    ridge : float
        :math:`\lambda \ge 0` (with ``0`` the normal equations must be non-singular).
    replicas : int
        Independent networks (own teacher direction draw shared, own weights and data).
    init : "uniform" or float
        Haar start, or every neuron at alignment ``m0`` exactly.
    rng : int, Generator, SeedSequence or None
        Seed (recorded in ``meta["seed"]``).
    progress : bool or None
        Progress of the Phase I iterations on stderr (:class:`popdyn._progress.Progress`:
        tqdm on a terminal, plain lines otherwise; ``None``: only once Phase I has lasted
        a few seconds).

    Returns
    -------
    TwoPhaseResult

    Raises
    ------
    ValueError, TypeError
        Bad input, naming the argument.
    NumericalError
        Non-finite weights in Phase I or a singular ridge system (``ridge = 0``).

    Examples
    --------
    >>> from popdyn.models.reuse import ReuseProblem
    >>> prob = ReuseProblem("tanh", "he3", reuse=2)
    >>> res = two_phase(prob, d=30, n_neurons=16, eta_tilde=0.5, phase1_samples=0,
    ...                 phase2_samples=2000, test_samples=2000, bias_range=3.0, ridge=1e-4,
    ...                 replicas=2, init=1.0, rng=0)
    >>> bool(res.test_error.max() < 0.1)
    True
    """
    from ..simulation import SimulationConfig
    from ..trajectory import Trajectory

    _check_problem(problem)
    d = check_int("d", d, minimum=2)
    N = check_int("n_neurons", n_neurons, minimum=1)
    eta_tilde = check_real("eta_tilde", eta_tilde, lower=0.0, lower_open=True)
    batch = check_int("batch", batch, minimum=1)
    n1 = check_int("phase1_samples", phase1_samples, minimum=0)
    if n1 % batch:
        raise ValueError(f"`phase1_samples` must be a multiple of `batch` = {batch} (one iteration uses one "
                         f"minibatch), got {n1}.")
    n2 = check_int("phase2_samples", phase2_samples, minimum=1)
    if n2 < N + 1:
        raise ValueError(f"`phase2_samples` must be >= n_neurons + 1 = {N + 1} (N second-layer weights and an "
                         f"intercept), got {n2}.")
    n_test = check_int("test_samples", test_samples, minimum=1)
    bias_range = check_real("bias_range", bias_range, lower=0.0, lower_open=True)
    ridge = check_real("ridge", ridge, lower=0.0)
    R = check_int("replicas", replicas, minimum=1)
    _parse_init(init)
    progress = _check_progress(progress)
    root, seed_rec = _root_sequence(rng)
    phase1_root, phase2_root = root.spawn(2)

    # ---- Phase I ------------------------------------------------------------------------
    started = time.monotonic()
    eta = eta_tilde * batch / d
    config = SimulationConfig(d=d, algorithm="sgd", eta=eta, batch=batch, replicas=R, init=init,
                              same_init=False, engine="full")
    streams = _streams(phase1_root)
    signs = np.where(streams["model"].random(N) < 0.5, -1.0, 1.0)
    stepper = ReuseFullStepper(problem, config, streams, n_neurons=N, signs=signs)
    state = stepper.init_state()
    n_iter = n1 // batch
    grid = _log_grid(n_iter, _PHASE1_RECORD)
    rec = np.empty((grid.size, R, N))
    rec[0] = state["W"] @ stepper.theta
    from .._progress import Progress

    with Progress(n_iter, desc="two_phase: phase I", unit="iter", enabled=progress and n_iter > 0) as pbar:
        i_rec = 1
        with np.errstate(all="ignore"):
            for it in range(1, n_iter + 1):
                try:
                    stepper.step(state, streams["noise"])
                except NumericalError as exc:
                    raise NumericalError(str(exc), step=it, time=it * eta) from exc
                if it == grid[i_rec]:
                    rec[i_rec] = state["W"] @ stepper.theta
                    i_rec += 1
                pbar.update(1)
    W, theta = state["W"], stepper.theta
    phase1 = Trajectory(t=grid * eta, overlaps={"m": rec}, time_unit="t = eta * steps", source="simulation",
                        model="reuse", status=0,
                        message=f"phase I completed: {n_iter} iterations of batch {batch} "
                                f"({n1} samples), {R} replicas.",
                        meta={"problem": problem.describe(), "d": d, "eta": eta, "eta_tilde": eta_tilde,
                              "batch": batch, "steps": n_iter, "record_steps": grid.tolist(),
                              "n_neurons": N, "signs": signs.tolist(), "init": _init_json(init)})

    # ---- Phase II -------------------------------------------------------------------------
    rng2, rng_test, rng_bias = (np.random.default_rng(s) for s in phase2_root.spawn(3))
    b = rng_bias.uniform(-bias_range, bias_range, size=(R, N))
    student = fast_evaluator(problem.student)
    kernel = stepper.kernel
    chunk = max(1, _CHUNK_NUMBERS // (R * d))
    moments = RidgeMoments(fit_intercept=True)
    data2 = []  # keep the features for the training error only when they are small
    keep = R * n2 * (N + 1) <= _CHUNK_NUMBERS
    for lo in range(0, n2, chunk):
        X = rng2.standard_normal((R, min(chunk, n2 - lo), d))
        y = kernel.labels(X @ theta)
        F = _features(student, X, W, b)
        moments.add(F, y, check=False)
        if keep:
            data2.append((F, y))
    try:
        readout = moments.solve(ridge, name="ridge")  # popdyn.readout convention: alpha = ridge = lambda above
    except NumericalError as exc:
        raise NumericalError(f"Phase II: {exc}") from exc
    a, a0 = readout.coef, readout.intercept
    var_y = _label_variance(problem)

    def sq_error(F, y):
        f = readout.residuals(F, y)
        return np.einsum("rn,rn->r", f, f)

    if keep:
        train = sum(sq_error(F, y) for F, y in data2) / n2
    else:
        train = np.full(R, np.nan)
    test = np.zeros(R)
    for lo in range(0, n_test, chunk):
        X = rng_test.standard_normal((R, min(chunk, n_test - lo), d))
        y = kernel.labels(X @ theta)
        test += sq_error(_features(student, X, W, b), y)
    test /= n_test
    meta = {"problem": problem.describe(), "d": d, "n_neurons": N, "eta_tilde": eta_tilde, "eta": eta,
            "batch": batch, "phase1_samples": n1, "phase2_samples": n2, "test_samples": n_test,
            "bias_range": bias_range, "ridge": ridge, "replicas": R, "init": _init_json(init),
            "label_variance": var_y, "seed": seed_rec, "versions": versions(),
            "train_error_computed": keep, "wall_time_s": time.monotonic() - started}
    return TwoPhaseResult(phase1=phase1, alignment=np.abs(W @ theta), signs=signs, biases=b, second_layer=a,
                          intercept=a0, train_error=train / var_y, test_error=test / var_y, meta=meta)


# --------------------------------------------------------------------------------------
# sample complexity of weak recovery
# --------------------------------------------------------------------------------------
def _median_ci(x, level):
    """Median of ``x`` (``inf`` allowed) and its distribution-free order-statistics interval.

    The interval ``[x_(k), x_(n+1-k)]`` (1-based ranks) covers the true median with
    probability ``1 - 2 P(Bin(n, 1/2) <= k - 1) >= level``, with the largest such ``k``
    (exact integer arithmetic); ``(nan, nan)`` bounds when ``n`` is too small for that level."""
    from fractions import Fraction

    x = np.sort(np.asarray(x, dtype=float))
    n = x.size
    med = float(np.median(x)) if np.isfinite(x[(n - 1) // 2]) and np.isfinite(x[n // 2]) else math.inf
    bound = Fraction((1.0 - level) / 2.0) * 2**n  # P(Bin <= k - 1) <= (1 - level)/2, in counts
    k, cum, term = 0, 0, 1  # cum = sum_{j < k} C(n, j), term = C(n, k)
    while k < n and cum + term <= bound:
        cum += term
        k += 1
        term = term * (n - k + 1) // k
    if k < 1:
        return med, math.nan, math.nan
    return med, float(x[k - 1]), float(x[n - k])


@dataclasses.dataclass(frozen=True)
class ReachResult:
    r"""Samples until :math:`|m| \ge` ``m_target``, one entry per replica.

    Attributes
    ----------
    samples : ndarray (R,)
        ``batch * iterations`` at the first iteration with :math:`|m| \ge m_{\rm target}`
        (``0`` if the start is there already); ``inf`` = censored (not reached within
        ``max_samples``).
    meta : dict
        Parameters, seed record, engine, iterations run.
    """

    samples: np.ndarray
    meta: dict

    @property
    def censored(self) -> np.ndarray:
        """Boolean mask of the replicas that did not arrive within ``max_samples``."""
        return ~np.isfinite(self.samples)

    @property
    def fraction_reached(self) -> float:
        return float(np.mean(np.isfinite(self.samples)))

    def median(self, level=0.95):
        """``(median, lo, hi)``: median samples and its order-statistics confidence interval
        (``inf`` when half of the replicas or more are censored; an infinite ``hi`` means the
        interval is open above)."""
        return _median_ci(self.samples, level)


def samples_to_reach(problem, d, *, eta_tilde, batch=1, m_target=0.5, replicas, max_samples, init="uniform",
                     rng=None, engine="exact") -> ReachResult:
    r"""Samples of batch-reuse SGD until :math:`|m| \ge` ``m_target``, by simulation.

    Parameters
    ----------
    problem : ReuseProblem
        ``reuse = 1`` gives the online-SGD control.
    d : int
        Dimension, ``>= 2``.
    eta_tilde : float
        Per-sample step scale, :math:`\eta = \tilde\eta B/d`.
    batch : int
        Minibatch size ``B``; one iteration consumes ``B`` samples.
    m_target : float in (0, 1]
        Level of :math:`|m|`.
    replicas : int
        Independent runs (independent Haar starts with ``init="uniform"``).
    max_samples : int
        Censoring horizon; replicas not arrived by then get ``inf``.
    init : "uniform" or float
        Start (module docstring).
    rng : int, Generator, SeedSequence or None
    engine : {"exact", "full"}
        ``"exact"``: cost per iteration independent of ``d``, drawn in blocks, dropping
        replicas that have arrived; ``"full"``: the d-dimensional simulator (checks).

    Returns
    -------
    ReachResult

    Examples
    --------
    >>> from popdyn.models.reuse import ReuseProblem
    >>> res = samples_to_reach(ReuseProblem("tanh", "he3", reuse=2), 200, eta_tilde=0.5,
    ...                        replicas=8, max_samples=100_000, rng=1)
    >>> res.samples.shape, res.fraction_reached
    ((8,), 1.0)
    """
    from ..simulation import make_stepper, simulate

    _check_problem(problem)
    d = check_int("d", d, minimum=2)
    eta_tilde = check_real("eta_tilde", eta_tilde, lower=0.0, lower_open=True)
    batch = check_int("batch", batch, minimum=1)
    m_target = check_real("m_target", m_target, lower=0.0, upper=1.0, lower_open=True)
    replicas = check_int("replicas", replicas, minimum=1)
    max_samples = check_int("max_samples", max_samples, minimum=1)
    engine = check_choice("engine", engine, ("exact", "full"))
    _parse_init(init)
    root, seed_rec = _root_sequence(rng)
    max_iter = max_samples // batch
    if max_iter < 1:
        raise ValueError(f"`max_samples` = {max_samples} is less than one minibatch (batch = {batch}).")
    eta = eta_tilde * batch / d
    started = time.monotonic()
    if engine == "full":  # the simulate engine with a per-step stop; arrived replicas are frozen
        traj = simulate(problem, d=d, algorithm="sgd", eta=eta, batch=batch, replicas=replicas, init=init,
                        same_init=False, engine="full", steps=max_iter, n_record=2, record="linear", rng=root,
                        progress=False, max_steps=None, stop_every=1,
                        stop=lambda o: np.abs(np.asarray(o["m"]).reshape(replicas, -1)[:, 0]) >= m_target)
        hit = np.where(np.isnan(traj.events["stop_step"]), np.inf, traj.events["stop_step"])
        it = int(np.max(hit)) if traj.status == 1 else max_iter
    else:
        stepper, noise = make_stepper(problem, d=d, algorithm="sgd", eta=eta, batch=batch,
                                      replicas=replicas, init=init, same_init=False, engine=engine, rng=root)
        state = stepper.init_state()
        m_now = np.abs(np.asarray(stepper.observe(state)["m"]).reshape(replicas, -1)[:, 0])
        hit = np.where(m_now >= m_target, 0.0, np.inf)
        with np.errstate(all="ignore"):
            it = _run_exact(stepper, noise, state["m"], hit, m_target, max_iter)
    meta = {"problem": problem.describe(), "d": d, "eta_tilde": eta_tilde, "eta": eta, "batch": batch,
            "m_target": m_target, "replicas": replicas, "max_samples": max_samples, "init": _init_json(init),
            "engine": engine, "iterations_run": it, "seed": seed_rec, "versions": versions(),
            "wall_time_s": time.monotonic() - started}
    return ReachResult(samples=hit * batch, meta=meta)


def _run_exact(stepper, noise, m_all, hit, level, max_iter) -> int:
    """Fill ``hit`` (R,) with hitting iterations (exact engine, blocks, active replicas only).

    Kept as its own loop (not :func:`popdyn.simulation.simulate` with ``stop``): it draws the
    randomness of ``K`` iterations at once for the replicas still running and drops arrived
    ones, a layout of the random stream that a per-step engine cannot reproduce."""
    active = np.flatnonzero(np.isinf(hit))
    m = m_all[active].copy()
    it = 0
    per = stepper.numbers_per_step()
    while it < max_iter and active.size:
        Ra = active.size
        K = int(min(_MAX_BLOCK_STEPS, max_iter - it, max(1, _BLOCK_NUMBERS // (Ra * per))))
        z, s, F = stepper.draw(noise, Ra, lead=(K,))
        arrived = np.zeros(Ra, dtype=bool)
        for k in range(K):
            it += 1
            try:
                m = stepper.update(m, z[k], s[k], F[k])
            except NumericalError as exc:
                raise NumericalError(str(exc), step=it) from exc
            new = ~arrived & (np.abs(m) >= level)
            if new.any():
                arrived |= new
                hit[active[new]] = it
                if arrived.all():
                    break
        keep = ~arrived
        active, m = active[keep], m[keep]
    return it


# --------------------------------------------------------------------------------------
# scaling study
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScalingStudy:
    r"""Median samples to weak recovery against ``d``, and the fitted log-log slope.

    Attributes
    ----------
    rows : list of dict
        One per dimension: ``d``, ``eta_tilde``, ``max_samples``, ``median``, ``ci_lo``,
        ``ci_hi`` (order-statistics interval at ``meta["level"]``), ``fraction_reached``,
        ``replicas``, ``wall_time_s``.
    samples : dict int -> ndarray
        Per-replica samples (``inf`` = censored) for each ``d``.
    slope, slope_se, intercept : float
        Least-squares fit :math:`\log \mathrm{median} = \mathrm{intercept} +
        \mathrm{slope}\,\log d` over the dimensions with a finite median; ``slope_se`` is the
        bootstrap standard error (replicas resampled within each ``d``).  ``nan`` with fewer
        than two finite medians.
    meta : dict
    """

    rows: list
    samples: dict
    slope: float
    slope_se: float
    intercept: float
    meta: dict

    def table(self) -> str:
        """Plain-text table of the rows and the fit."""
        lines = [f"{'d':>8} {'eta_tilde':>10} {'median':>12} {'CI lo':>12} {'CI hi':>12} {'reached':>8}"]
        for r in self.rows:
            lines.append(f"{r['d']:>8d} {r['eta_tilde']:>10.4g} {r['median']:>12.6g} {r['ci_lo']:>12.6g} "
                         f"{r['ci_hi']:>12.6g} {r['fraction_reached']:>8.3f}")
        lines.append(f"log-log slope of the median: {self.slope:.4f} +- {self.slope_se:.4f} (bootstrap SE)")
        return "\n".join(lines)


def _as_function(name, value, check):
    if callable(value):
        return lambda d: check(name, value(d))
    check(name, value)
    return lambda d: value


def _fit_slope(dims, medians):
    x, y = np.log(np.asarray(dims, dtype=float)), np.log(np.asarray(medians, dtype=float))
    xc = x - x.mean()
    slope = float(np.dot(xc, y - y.mean()) / np.dot(xc, xc))
    return slope, float(y.mean() - slope * x.mean())


def scaling_study(problem, dims, *, eta_tilde, batch=1, m_target=0.5, replicas, max_samples, init="uniform",
                  rng=None, engine="exact", level=0.95, out=None) -> ScalingStudy:
    r"""Median samples of :func:`samples_to_reach` over ``dims`` and the log-log slope.

    With batch reuse the paper predicts :math:`n = \Theta(d\,\mathrm{polylog}\,d)` (slope
    slightly above 1); online SGD (``reuse = 1``, with the BAGJ step
    :math:`\tilde\eta = \eta_0 d^{1-p/2}` passed as a callable, module docstring) needs
    :math:`d^{p-1}` for information exponent :math:`p \ge 3`.

    Parameters
    ----------
    problem : ReuseProblem
    dims : sequence of int
        Dimensions (distinct, ``>= 2``).
    eta_tilde : float or callable
        Per-sample step scale, or a function ``d -> eta_tilde``.
    batch, m_target, replicas, engine
        As in :func:`samples_to_reach`.
    init : "uniform", float or callable
        As in :func:`samples_to_reach`, or a function ``d -> m0`` (e.g. ``lambda d: d**-0.5``,
        the typical start, for every ``d``).
    max_samples : int or callable
        Censoring horizon, or a function ``d -> int``.
    rng : int, SeedSequence or None
        Root seed; dimension ``d`` uses the child sequence with spawn key ``(d,)``, so a
        result does not depend on the other dimensions or on resuming.
    level : float in (0, 1)
        Confidence level of the order-statistics interval of each median.
    out : path, optional
        JSON file written atomically after every dimension; when it exists (same parameters)
        the finished dimensions are read back instead of rerun, so an interrupted study
        loses at most the dimension in progress.  With ``rng=None`` its seed is adopted.

    Returns
    -------
    ScalingStudy

    Raises
    ------
    ValueError
        Bad input; an ``out`` file written with other parameters.
    """
    _check_problem(problem)
    try:
        dims = [check_int("dims", v, minimum=2) for v in dims]
    except TypeError as exc:
        if not isinstance(dims, (list, tuple, np.ndarray, range)):
            raise TypeError(f"`dims` must be a sequence of integers >= 2, got {dims!r}.") from exc
        raise
    if not dims or len(set(dims)) != len(dims):
        raise ValueError(f"`dims` must be a non-empty sequence of distinct integers >= 2, got {dims!r}.")
    eta_of = _as_function("eta_tilde", eta_tilde,
                          lambda n, v: check_real(n, v, lower=0.0, lower_open=True))
    max_of = _as_function("max_samples", max_samples, lambda n, v: check_int(n, v, minimum=1))
    batch = check_int("batch", batch, minimum=1)
    m_target = check_real("m_target", m_target, lower=0.0, upper=1.0, lower_open=True)
    replicas = check_int("replicas", replicas, minimum=1)
    engine = check_choice("engine", engine, ("exact", "full"))
    level = check_real("level", level, lower=0.0, upper=1.0, lower_open=True, upper_open=True)
    if callable(init):
        init_of, init_rec = (lambda d: _parse_init(float(init(d)))[1]), "callable (per-d values in rows)"
    else:
        _parse_init(init)
        init_of, init_rec = (lambda d: init), _init_json(init)
    if isinstance(rng, np.random.Generator):
        raise TypeError("`rng` must be an int seed, a SeedSequence or None here (a Generator cannot be "
                        "recorded for resuming).")
    path = None if out is None else Path(out)
    saved = _read_scaling(path) if path is not None and path.exists() else None
    if rng is None and saved is not None:
        seed_rec = saved["params"]["seed"]
        root = _root_from_record(seed_rec)
    else:
        root, seed_rec = _root_sequence(rng)
    params = json.loads(json.dumps({
        "problem": problem.describe(), "batch": batch, "m_target": m_target, "replicas": replicas,
        "init": init_rec, "engine": engine, "seed": seed_rec}))
    done = {}
    if saved is not None:
        if saved["params"] != params:
            diff = [k for k in sorted(set(params) | set(saved["params"]))
                    if params.get(k) != saved["params"].get(k)]
            raise ValueError(f"`out` {str(path)!r} was written with different parameters ({', '.join(diff)}); "
                             "delete it, choose another path, or rerun with the original parameters.")
        done = saved["rows"]
    rows_json = dict(done)
    samples = {}
    for d in dims:
        eta_d, max_d, init_d = eta_of(d), max_of(d), init_of(d)
        key = str(d)
        if key in done and (done[key]["eta_tilde"] != eta_d or done[key]["max_samples"] != max_d
                            or done[key].get("init", _init_json(init_d)) != _init_json(init_d)):
            raise ValueError(f"`out` {str(path)!r} holds d={d} with eta_tilde={done[key]['eta_tilde']}, "
                             f"max_samples={done[key]['max_samples']}, init={done[key].get('init')}, now {eta_d}, "
                             f"{max_d}, {_init_json(init_d)}; delete it or use another path.")
        if key not in done:
            res = samples_to_reach(problem, d, eta_tilde=eta_d, batch=batch, m_target=m_target, replicas=replicas,
                                   max_samples=max_d, init=init_d, rng=_child(root, d), engine=engine)
            rows_json[key] = {"eta_tilde": eta_d, "max_samples": max_d, "init": _init_json(init_d),
                              "samples": [None if not np.isfinite(v) else float(v) for v in res.samples],
                              "wall_time_s": res.meta["wall_time_s"]}
            if path is not None:
                atomic_write_json(path, {"format": SCALING_FORMAT, "params": params, "rows": rows_json,
                                         "versions": versions()})
        samples[d] = np.array([np.inf if v is None else v for v in rows_json[key]["samples"]], dtype=float)
    rows = []
    for d in dims:
        med, lo, hi = _median_ci(samples[d], level)
        r = rows_json[str(d)]
        rows.append({"d": d, "eta_tilde": r["eta_tilde"], "max_samples": r["max_samples"], "median": med,
                     "ci_lo": lo, "ci_hi": hi, "fraction_reached": float(np.mean(np.isfinite(samples[d]))),
                     "replicas": replicas, "wall_time_s": r["wall_time_s"]})
    fit = [r["d"] for r in rows if math.isfinite(r["median"]) and r["median"] > 0]
    slope = slope_se = intercept = math.nan
    if len(fit) >= 2:
        slope, intercept = _fit_slope(fit, [np.median(samples[d]) for d in fit])
        boot_rng = np.random.default_rng(_child(root, 2**32 - 1))
        meds = np.empty((_BOOTSTRAP, len(fit)))
        for j, d in enumerate(fit):
            x = samples[d]
            idx = boot_rng.integers(0, x.size, size=(_BOOTSTRAP, x.size))
            meds[:, j] = np.median(x[idx], axis=1)
        ok = np.all(np.isfinite(meds) & (meds > 0), axis=1)
        if ok.sum() >= 2:
            xl = np.log(np.asarray(fit, dtype=float))
            xc = xl - xl.mean()
            yl = np.log(meds[ok])
            slopes = (yl - yl.mean(axis=1, keepdims=True)) @ xc / np.dot(xc, xc)
            slope_se = float(np.std(slopes, ddof=1))
    meta = dict(params, dims=dims, level=level, bootstrap=_BOOTSTRAP, fitted_dims=fit, out=None if path is None
                else str(path), resumed=sorted(int(k) for k in done), versions=versions())
    return ScalingStudy(rows=rows, samples=samples, slope=slope, slope_se=slope_se, intercept=intercept, meta=meta)


def _read_scaling(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"`out` {str(path)!r} exists but is not readable JSON ({exc}); delete it or choose "
                         "another path.") from exc
    if not isinstance(data, dict) or data.get("format") != SCALING_FORMAT:
        raise ValueError(f"`out` {str(path)!r} is not a scaling-study file (format {SCALING_FORMAT!r}); delete it "
                         "or choose another path.")
    return data
