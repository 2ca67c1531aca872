r"""Finite-d simulators of single-index spherical online SGD: full and exact (d-free).

Both plug into :func:`popdyn.simulation.simulate` (``algorithm="sgd"``) through the stepper
protocol, registered for :class:`~popdyn.models.single_index.SingleIndexProblem` with
``engine="full"`` and ``engine="exact"``.  The recorded overlap is ``{"m": (n_times, R)}``.

The update (both engines)
-------------------------
With the force :math:`\rho_b = -\partial\ell/\partial z` of sample ``b`` (see
:mod:`popdyn.models.single_index`) and :math:`c_b = \eta\rho_b/B`,

.. math::

    w \leftarrow \frac{w + \sum_b c_b (x_b - z_b w)}{\|w + \sum_b c_b (x_b - z_b w)\|},
    \qquad z_b = w\cdot x_b ,

i.e. :math:`w - \eta\hat g` with the Riemannian minibatch gradient, then retraction.

``engine="full"`` (:class:`SingleIndexFullStepper`)
    Materialises the samples, an array ``(R, B, d)`` per step (vectorised over replicas
    and the minibatch), with a Haar-random teacher direction :math:`\theta`.  The ground
    truth.

``engine="exact"`` (:class:`SingleIndexExactStepper`)
    By rotation invariance about :math:`\theta`, ``m`` alone is a Markov chain, and one
    step can be drawn exactly at any ``d`` from ``O(B)`` scalars.  Write
    :math:`e = (\theta - m w)/\sqrt{1-m^2}` and decompose each sample as
    :math:`x_b = z_b w + s_b e + g_b` with :math:`g_b \perp \mathrm{span}(w,\theta)`:
    :math:`z_b, s_b` are i.i.d. :math:`N(0,1)` and the :math:`g_b` are i.i.d.
    :math:`N(0, I_{d-2})` in the orthogonal complement, independent of them; the teacher
    sees :math:`t_b = m z_b + \sqrt{1-m^2}\,s_b`.  Then, **exactly**,

    .. math::

        m' = \frac{m + \sqrt{1-m^2}\,A}{\sqrt{1 + A^2 + \|\sum_b c_b g_b\|^2}}, \qquad
        A = \sum_b c_b s_b .

    The Gram matrix :math:`S_{bb'} = g_b\cdot g_{b'}` is Wishart(d - 2, I_B), but only the
    quadratic form :math:`c^\top S c` enters, and ``c`` is a function of
    :math:`(z_b, s_b)`, independent of ``S``.  For a fixed vector ``c``,
    :math:`\sum_b c_b g_b \sim N(0, \|c\|^2 I_{d-2})`, so
    :math:`c^\top S c \overset{d}{=} \|c\|^2\chi^2_{d-2}`: one chi-square draw per
    replica per step replaces the :math:`B\times B` Bartlett factor (same law, cost
    ``O(B)`` instead of ``O(B^2)``).  ``chi2_{d-2} = 2 Gamma((d-2)/2)`` is drawn by
    numpy's Marsaglia–Tsang sampler, whose cost does not depend on ``d``.  The update
    is exact (no expansion in :math:`\eta` or ``1/d``); the only error is rounding
    (``m`` is clipped to [-1, 1] against it).

Initial state (``init``)
------------------------
``"uniform"``: Haar-random ``w`` (exact engine: :math:`m_0 = g_1/\sqrt{g_1^2 +
\chi^2_{d-1}}`, the law of :math:`\theta\cdot w`); a float ``m0`` in [-1, 1]: every
replica starts at alignment exactly ``m0`` (full engine:
:math:`w_0 = m_0\theta + \sqrt{1 - m_0^2}\,r` with ``r`` uniform on the unit sphere of
:math:`\theta^\perp`).  ``same_init=True`` (default) starts all replicas from one draw.

First-passage times
-------------------
:func:`first_passage` runs either engine until ``m`` (or ``|m|``) reaches a level and
returns each replica's hitting step.  The full engine goes through
:func:`popdyn.simulation.simulate` with a per-step ``stop``; with the exact engine it draws the randomness in
blocks of steps and drops replicas that have arrived, so that large ``d`` costs nothing
extra (used by the BAGJ escape-scaling claim in ``theory/bagj2021``).

References
----------
G. Ben Arous, R. Gheissari, A. Jagannath, JMLR 22(106), 2021 (arXiv 2003.10409);
theory/CONVENTIONS.md, "Exact d-free simulation of online SGD".
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from .._validation import check_choice, check_init_scalar, check_int, check_real
from ..errors import LargeStepWarning, NumericalError
from ..samplers import chi_square, sphere_coordinate
from .multi_index_sim import fast_evaluator
from .single_index import SingleIndexProblem

__all__ = ["SingleIndexFullStepper", "SingleIndexExactStepper", "FirstPassage", "first_passage",
           "initial_state", "INIT_CHOICES", "LargeStepWarning", "RELATIVE_STEP_LIMIT", "StepSizeMonitor"]

#: Documented forms of ``init``.
INIT_CHOICES = ("'uniform'", "a float m0 in [-1, 1]")
#: Random numbers drawn per block by :func:`first_passage` (exact engine): bounds memory
#: (~16 MB) while amortising the cost of a generator call over many steps.
_BLOCK_NUMBERS = 2_000_000
#: Largest block of steps drawn at once by :func:`first_passage`.
_MAX_BLOCK_STEPS = 1024


def _parse_init(init):
    """``("uniform", None)`` or ``("m0", float)``."""
    head = check_init_scalar(init, INIT_CHOICES, lower=-1.0, upper=1.0, open_bounds=False)
    if head is None:
        raise TypeError(f"`init` must be one of {', '.join(INIT_CHOICES)}; got {init!r}.")
    return ("m0", head[1]) if head[0] == "scalar" else head


def _unit_rows(A):
    A /= np.sqrt(np.einsum("...d,...d->...", A, A))[..., None]
    return A


def initial_state(problem, d, *, init="uniform", model_rng=None, init_rng=None, replicas=1, same_init=True):
    r"""Teacher direction, initial weights and alignments of the full engine: ``(theta, W0, m0)``.

    ``theta`` has shape ``(d,)``; ``W0`` has shape ``(d,)`` when ``same_init`` else
    ``(R, d)``; ``m0 = W0 @ theta``.  Use :func:`popdyn.simulation.initial_state` for the
    state a seeded :func:`~popdyn.simulation.simulate` run starts from.
    """
    if not isinstance(problem, SingleIndexProblem):
        raise TypeError(f"`problem` must be a SingleIndexProblem, got {type(problem).__name__}.")
    lead = () if same_init else (check_int("replicas", replicas, minimum=1),)
    return spherical_start(init, d, lead, model_rng, init_rng)


def spherical_start(init, d, lead, model_rng, init_rng):
    r"""Haar teacher direction ``theta`` (d,) and unit initial weights ``W0`` of shape
    ``lead + (d,)``: Haar (``init="uniform"``) or at alignment exactly ``m0`` (a float),
    :math:`w_0 = m_0\theta + \sqrt{1 - m_0^2}\,r` with ``r`` uniform on the sphere of
    :math:`\theta^\perp`.  Returns ``(theta, W0, W0 @ theta)`` (shared by the one-neuron
    models' full engines)."""
    d = check_int("d", d, minimum=2)
    kind, m0 = _parse_init(init)
    theta = _unit_rows(model_rng.standard_normal(d))
    r = init_rng.standard_normal(tuple(lead) + (d,))
    if kind == "uniform":
        W0 = _unit_rows(r)
    else:
        r -= (r @ theta)[..., None] * theta
        W0 = m0 * theta + math.sqrt(max(0.0, 1.0 - m0 * m0)) * _unit_rows(r)
    return theta, W0, W0 @ theta


def initial_alignment(kind, m0_value, d, rng, n, same_init):
    r"""Initial alignments of the d-free engines: ``kind == "uniform"`` draws the law of
    :math:`\theta\cdot w` for Haar ``w``, :math:`g_1/\sqrt{g_1^2 + \chi^2_{d-1}}`; otherwise
    every replica starts at ``m0_value``.  ``n`` draws; a scalar when ``same_init``."""
    if kind == "uniform":
        m0 = sphere_coordinate(rng, d, size=n)  # n normals g_1, then n chi-squares
    else:
        m0 = np.full(n, m0_value)
    return m0[0] if same_init else m0


#: Largest root-mean-square relative step :math:`N = \eta\|\hat g\|/\|w\|` of spherical SGD
#: (``N^2 = \|w - \eta\hat g\|^2 - 1`` before the retraction, averaged over all replicas and
#: steps since the start of the run) for which a run is called small-step.  The overlap ODE expands the
#: retraction, :math:`(1 + N^2)^{-1/2} = 1 - N^2/2 + \tfrac38 N^4 - \dots`, and keeps
#: :math:`-N^2/2`; at ``N = 0.5`` the first dropped term is already 19% of the kept one.
#: Legitimate runs are far below: the BAGJ step :math:`\eta \propto d^{-p/2}` and
#: :math:`\eta = \delta/d` (the CLI default, ``delta = 0.5``) give :math:`N^2 \approx
#: \eta^2 d\,C/B = O(1/d)`: measured peaks 0.11 (``popdyn simulate --model single-index
#: --d 100``), 0.03 and 0.007 (README single-index examples), 0.008 (spiked, d = 400); the
#: test suite runs without the warning.  ``--eta 1 --d 200`` with a cubic student gives 19.
RELATIVE_STEP_LIMIT = 0.5
#: ``N^2`` is heavy-tailed for polynomial activations (one sample with ``|z| ~ 4`` gives
#: ``N^2 ~ 16`` at eta = 1e-3, d = 100 for he3/he3, whose mean ``N^2`` is 0.01), so a mean over
#: fewer than this many replica-steps is trusted only when it exceeds
#: ``STEP_SMALL_SAMPLE_FACTOR * RELATIVE_STEP_LIMIT**2`` (100 x 0.25 = 25, above what one such
#: sample among two can produce; the eta = 1 cubic run has mean ``N^2`` ~ 400).
STEP_STAT_MIN_COUNT = 1000
STEP_SMALL_SAMPLE_FACTOR = 100.0


class StepSizeMonitor:
    """Mixin for spherical steppers: accumulate the squared relative steps ``N^2`` of each
    update (``_record_steps``) and report them in :meth:`check_state`, which
    :func:`popdyn.simulation.simulate` calls at every recording time."""

    def _record_steps(self, n2_sum: float, count: int) -> None:
        """Add ``count`` squared relative steps with sum ``n2_sum``."""
        self._n2_sum = getattr(self, "_n2_sum", 0.0) + n2_sum
        self._n2_count = getattr(self, "_n2_count", 0) + count

    @property
    def relative_step_rms(self) -> float:
        """RMS relative step over all replicas and steps so far (0 before the first step)."""
        count = getattr(self, "_n2_count", 0)
        return math.sqrt(max(self._n2_sum, 0.0) / count) if count else 0.0

    def check_state(self, state) -> None:
        """Warn (:class:`LargeStepWarning`, once per run) when the RMS relative step since the
        start exceeds :data:`RELATIVE_STEP_LIMIT` (with fewer than :data:`STEP_STAT_MIN_COUNT`
        replica-steps: :data:`STEP_SMALL_SAMPLE_FACTOR` times the squared limit); never fails
        the run (the simulation is exact SGD), so it returns ``None``."""
        count = getattr(self, "_n2_count", 0)
        if count == 0 or getattr(self, "_warned", False):
            return None
        rms = self.relative_step_rms
        limit2 = RELATIVE_STEP_LIMIT ** 2 * (1.0 if count >= STEP_STAT_MIN_COUNT else STEP_SMALL_SAMPLE_FACTOR)
        if rms * rms > limit2:
            self._warned = True
            warnings.warn(LargeStepWarning(
                f"spherical SGD with eta = {float(self.eta):.3g} takes relative steps eta*|g|/|w| of RMS {rms:.3g} > "
                f"{RELATIVE_STEP_LIMIT} (d = {self.d}): far from the small-step regime of the overlap ODE, whose "
                "predictions do not apply to this run; use a smaller `eta` (e.g. eta = delta/d)"), stacklevel=2)
        return None


class _Kernel:
    """Fast per-sample labels and forces shared by both engines (Horner for polynomials)."""

    def __init__(self, problem: SingleIndexProblem):
        self.a = problem.a_star
        self.squared = problem.loss == "squared"
        self._teacher = fast_evaluator(problem.teacher)
        self._dstudent = fast_evaluator(problem.student, derivative=True)
        self._student = fast_evaluator(problem.student)

    def force(self, Z, T) -> np.ndarray:
        r""":math:`\rho(z, t)` for arrays of projections, a new array of their shape."""
        rho = self._teacher(T, np.empty(T.shape))
        if self.a != 1.0:
            rho *= self.a
        if self.squared:
            rho -= self._student(Z, np.empty(Z.shape))
        rho *= self._dstudent(Z, np.empty(Z.shape))
        return rho


def exact_update(m, z, s, chi2, coef, monitor=None):
    r"""One exact step for alignments ``m`` (R,), given ``z``, ``s`` (R, B), ``chi2`` (R,) and
    ``coef`` :math:`c_b = \eta\rho_b/B` (R, B): returns the new ``m`` (module docstring).
    ``monitor`` (a :class:`StepSizeMonitor`) receives the squared relative steps ``N^2``."""
    if coef.shape[1] == 1:  # the common online case, without reductions
        A = coef[:, 0] * s[:, 0]
        q = coef[:, 0] * coef[:, 0]
    else:
        A = np.einsum("rb,rb->r", coef, s)
        q = np.einsum("rb,rb->r", coef, coef)
    num = np.sqrt(np.maximum(1.0 - m * m, 0.0))
    num *= A
    num += m
    q *= chi2
    q += 1.0
    q += A * A
    total = float(q.sum())  # q = 1 + N^2
    if not math.isfinite(total):  # the squared step overflowed: no meaningful update
        return np.full_like(m, np.nan)
    if monitor is not None:
        monitor._record_steps(total - q.size, q.size)
    num /= np.sqrt(q, out=q)
    return np.clip(num, -1.0, 1.0, out=num)


class _Base:
    model = "single_index"
    algorithms = ("sgd",)
    continuous = False

    def __init__(self, problem, config):
        if not isinstance(problem, SingleIndexProblem):
            raise TypeError(f"`problem` must be a SingleIndexProblem, got {type(problem).__name__}.")
        if config.d < 2:
            raise ValueError(f"`d` must be an integer >= 2 for the single-index model, got {config.d}.")
        self.problem = problem
        self.config = config
        self.R, self.d, self.B, self.eta = config.replicas, config.d, config.batch, config.eta
        self.kernel = _Kernel(problem)
        self.kind, self.m0_value = _parse_init(config.init)

    def advance(self, state, t0, t1):  # pragma: no cover - protocol completeness
        raise TypeError("the single-index simulators implement online SGD only (algorithm='sgd').")

    def _fail(self):
        raise NumericalError(
            f"non-finite alignment after an update with eta = {self.eta:g}: the force overflowed. "
            "Try a smaller `eta` or a bounded activation."
        )


class SingleIndexFullStepper(StepSizeMonitor, _Base):
    r"""Full d-dimensional online SGD (stepper protocol of :mod:`popdyn.simulation`).

    Attributes
    ----------
    theta : ndarray (d,)
        Teacher direction (Haar, from the ``model`` stream).
    m0 : ndarray
        Initial alignments, ``()`` when ``same_init`` else ``(R,)``.
    """

    initial_state = staticmethod(initial_state)

    def __init__(self, problem, config, streams):
        super().__init__(problem, config)
        self.theta, self._W0, self.m0 = initial_state(
            problem, self.d, init=config.init, model_rng=streams["model"], init_rng=streams["init"],
            replicas=self.R, same_init=config.same_init)

    @property
    def constants(self) -> dict:
        return {"theta": self.theta}

    def init_state(self) -> dict:
        """``{"W": (R, d)}``."""
        W = np.empty((self.R, self.d))
        W[...] = self._W0
        return {"W": W}

    def observe(self, state) -> dict:
        """``{"m": W theta}``, shape ``(R,)``."""
        return {"m": state["W"] @ self.theta}

    def work_per_step(self) -> float:
        return float(3 * self.R * self.B * self.d)

    def describe(self) -> dict:
        return {"engine": "full", "init": self.config.init if isinstance(self.config.init, str) else float(
            self.config.init), "m0": np.asarray(self.m0).tolist()}

    def step(self, state, rng) -> None:
        """One online-SGD step in place on ``state["W"]`` (fresh ``(R, B, d)`` samples)."""
        W = state["W"]
        X = rng.standard_normal((self.R, self.B, self.d))
        Z = np.matmul(X, W[:, :, None])[..., 0]  # (R, B)
        T = X @ self.theta
        coef = self.kernel.force(Z, T)
        coef *= self.eta / self.B
        s = np.einsum("rb,rb->r", coef, Z)
        D = np.matmul(coef[:, None, :], X)[:, 0]  # sum_b c_b x_b, (R, d)
        W *= (1.0 - s)[:, None]
        W += D
        norm = np.einsum("rd,rd->r", W, W)  # = 1 + N^2, N = eta |g_tangent| (module docstring)
        self._record_steps(float(norm.sum()) - norm.size, norm.size)
        np.sqrt(norm, out=norm)
        if not np.all(np.isfinite(norm)) or np.any(norm == 0):
            self._fail()
        W /= norm[:, None]


class ScalarAlignmentState:
    """Stepper-protocol pieces of the d-free one-neuron engines (single-index and batch
    reuse): the dynamic state is ``{"m": (R,)}``, started at ``self.m0``; no constants."""

    @property
    def constants(self) -> dict:
        return {}

    def init_state(self) -> dict:
        """``{"m": (R,)}``."""
        m = np.empty(self.R)
        m[...] = self.m0
        return {"m": m}

    def observe(self, state) -> dict:
        return {"m": state["m"].copy()}


class SingleIndexExactStepper(StepSizeMonitor, ScalarAlignmentState, _Base):
    r"""Exact d-free online SGD on the alignment ``m`` (module docstring; cost per step
    ``O(R B)``, independent of ``d``)."""

    def __init__(self, problem, config, streams):
        super().__init__(problem, config)
        self.m0 = initial_alignment(self.kind, self.m0_value, self.d, streams["init"],
                                    1 if config.same_init else self.R, config.same_init)

    def work_per_step(self) -> float:
        return float(20 * self.R * self.B)

    def describe(self) -> dict:
        return {"engine": "exact", "init": self.config.init if isinstance(self.config.init, str) else float(
            self.config.init), "m0": np.asarray(self.m0).tolist()}

    def draw(self, rng, R):
        """``(z, s, chi2)`` for ``R`` replicas: shapes ``(R, B)``, ``(R, B)``, ``(R,)``."""
        zs = rng.standard_normal((2, R, self.B))
        chi2 = chi_square(rng, self.d - 2, size=R)
        return zs[0], zs[1], chi2

    def update(self, m, z, s, chi2) -> np.ndarray:
        """The exact map ``m -> m'`` for given draws (new array)."""
        T = z * m[:, None]
        T += s * np.sqrt(np.maximum(1.0 - m * m, 0.0))[:, None]
        coef = self.kernel.force(z, T)
        coef *= self.eta / self.B
        out = exact_update(m, z, s, chi2, coef, self)
        if not math.isfinite(float(out.sum())):  # NaN/inf anywhere makes the sum non-finite
            self._fail()
        return out

    def step(self, state, rng) -> None:
        """One exact step in place on ``state["m"]``."""
        m = state["m"]
        z, s, chi2 = self.draw(rng, self.R)
        m[...] = self.update(m, z, s, chi2)


# --------------------------------------------------------------------------------------
# first-passage times
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FirstPassage:
    r"""Hitting steps of ``m`` (or ``|m|``) at a level, one per replica.

    Attributes
    ----------
    steps : ndarray (R,)
        First step at which the level was reached (``0`` if it starts there; ``inf`` if
        not reached by ``max_steps`` or before the run stopped at ``stop_fraction``).
    batch : int
        Minibatch size; :attr:`samples` = ``batch * steps``.
    meta : dict
        Parameters, seed and engine.
    """

    steps: np.ndarray
    batch: int
    meta: dict

    @property
    def samples(self) -> np.ndarray:
        return self.batch * self.steps

    @property
    def fraction_reached(self) -> float:
        return float(np.mean(np.isfinite(self.steps)))

    def median_samples(self) -> float:
        """Median over replicas of the samples (``inf`` if half of them or more never arrived)."""
        return float(np.median(self.samples))


def first_passage(problem, d, *, eta, batch=1, replicas=200, m0=None, level=0.5, max_steps=10**7,
                  absolute=False, stop_fraction=1.0, engine="exact", rng=None) -> FirstPassage:
    r"""Steps until each replica's alignment reaches ``level``, by simulation.

    Parameters
    ----------
    problem : SingleIndexProblem
    d : int
        Dimension (``>= 2``).
    eta : float
        Step size.
    batch : int
        Minibatch size.
    replicas : int
        Independent runs.
    m0 : float or "uniform", optional
        Initial alignment (default :math:`d^{-1/2}`) or a Haar start.
    level : float
        Level to reach.
    max_steps : int
        Give up after this many steps (those replicas get ``inf``).
    absolute : bool
        Use :math:`|m|` (for problems symmetric under :math:`w \to -w`, e.g. even student
        and teacher).
    stop_fraction : float in (0, 1]
        Stop once this fraction of replicas has arrived (e.g. 0.6 when only the median is
        needed); the rest get ``inf``.
    engine : {"exact", "full"}
        Simulator (module docstring).  ``"exact"`` costs ``O(R B)`` per step at any ``d``.
    rng : int, Generator, SeedSequence or None

    Returns
    -------
    FirstPassage

    Raises
    ------
    NumericalError
        A non-finite alignment (reported with its step).
    """
    from ..simulation import make_stepper

    if not isinstance(problem, SingleIndexProblem):
        raise TypeError(f"`problem` must be a SingleIndexProblem, got {type(problem).__name__}.")
    d = check_int("d", d, minimum=2)
    level = check_real("level", level, lower=-1.0, upper=1.0)
    max_steps = check_int("max_steps", max_steps, minimum=1)
    stop_fraction = check_real("stop_fraction", stop_fraction, lower=0.0, upper=1.0, lower_open=True)
    engine = check_choice("engine", engine, ("exact", "full"))
    init = 1.0 / math.sqrt(d) if m0 is None else m0
    obs = (lambda m: np.abs(m)) if absolute else (lambda m: m)
    if engine == "full":
        return _first_passage_full(problem, d, eta, batch, replicas, init, obs, level, max_steps, stop_fraction,
                                   absolute, rng)
    stepper, noise = make_stepper(problem, d=d, algorithm="sgd", eta=eta, batch=batch, replicas=replicas,
                                  init=init, engine=engine, rng=rng)
    R = stepper.R
    need = math.ceil(stop_fraction * R - 1e-9)
    state = stepper.init_state()
    m_now = stepper.observe(state)["m"]
    hit = np.where(obs(m_now) >= level, 0.0, np.inf)
    meta = {"problem": problem.describe(), "d": d, "eta": stepper.eta, "batch": stepper.B, "replicas": R,
            "init": init, "level": level, "absolute": bool(absolute), "engine": engine,
            "max_steps": max_steps, "stop_fraction": stop_fraction}
    with np.errstate(all="ignore"):  # overflow is detected explicitly and reported with its step
        step = _run_first_passage(stepper, noise, state, hit, obs, level, max_steps, need)
    meta["steps_run"] = step
    return FirstPassage(steps=hit, batch=stepper.B, meta=meta)


def _first_passage_full(problem, d, eta, batch, replicas, init, obs, level, max_steps, stop_fraction, absolute,
                        rng) -> FirstPassage:
    """:func:`first_passage` with the full engine: :func:`popdyn.simulation.simulate` with a per-step
    ``stop`` (``stop_every=1``).  Same random stream as the stepper run by hand: every replica
    draws its samples at every step until the run ends, arrived replicas are frozen."""
    from ..simulation import simulate

    arrived = np.zeros(replicas, dtype=bool)  # replicas that really reached the level
    need = math.ceil(stop_fraction * replicas - 1e-9)

    def stop(observed):
        arrived[...] |= obs(observed["m"]) >= level
        if arrived.sum() >= need:  # quorum: end the run here, the others are censored (inf)
            return np.ones(replicas, dtype=bool)
        return arrived.copy()

    traj = simulate(problem, d=d, algorithm="sgd", eta=eta, batch=batch, replicas=replicas, init=init,
                    engine="full", steps=max_steps, n_record=2, record="linear", rng=rng, progress=False,
                    max_steps=None, stop=stop, stop_every=1)
    steps = np.where(arrived, traj.events["stop_step"], np.inf)
    steps_run = int(np.max(traj.events["stop_step"])) if traj.status == 1 else max_steps
    meta = {"problem": problem.describe(), "d": d, "eta": traj.meta["eta"], "batch": traj.meta["batch"],
            "replicas": replicas, "init": init, "level": level, "absolute": bool(absolute), "engine": "full",
            "max_steps": max_steps, "stop_fraction": stop_fraction, "steps_run": steps_run}
    return FirstPassage(steps=steps, batch=traj.meta["batch"], meta=meta)


def _run_first_passage(stepper, noise, state, hit, obs, level, max_steps, need) -> int:
    """Exact engine: fill ``hit`` (R,) in place with hitting steps; return the number of steps run.

    Kept as its own loop (not :func:`popdyn.simulation.simulate` with ``stop``): it draws the
    randomness of ``K`` steps at once for the replicas still running and drops arrived ones,
    a layout of the random stream that a per-step engine cannot reproduce (and that makes
    large ``max_steps`` cheap)."""
    R = stepper.R
    step = 0
    active = np.flatnonzero(np.isinf(hit))
    m = state["m"][active].copy()
    while step < max_steps and R - active.size < need:
        Ra = active.size
        K = int(min(_MAX_BLOCK_STEPS, max_steps - step, max(1, _BLOCK_NUMBERS // (Ra * (2 * stepper.B + 1)))))
        zs = noise.standard_normal((K, 2, Ra, stepper.B))
        chi2 = chi_square(noise, stepper.d - 2, size=(K, Ra))
        arrived = np.zeros(Ra, dtype=bool)
        done = R - Ra
        for k in range(K):
            step += 1
            try:
                m = stepper.update(m, zs[k, 0], zs[k, 1], chi2[k])
            except NumericalError as exc:
                raise NumericalError(str(exc), step=step) from exc
            new = ~arrived & (obs(m) >= level)
            if new.any():
                arrived |= new
                hit[active[new]] = step
                done += int(new.sum())
                if done >= need:  # stop at exactly the step the full engine would stop at
                    break
        keep = ~arrived
        active, m = active[keep], m[keep]
    return step
