r"""Finite-d simulation engine: gradient flow, online SGD and multi-pass GD in NumPy.

The simulation is the ground truth that the overlap ODEs must match.  One verb,
:func:`simulate`, runs any registered model, vectorised over replicas, neurons and the
samples of a minibatch (arrays of shape ``(R, N, d)``); the only Python loop is the
sequential loop over steps.  It returns a :class:`~popdyn.trajectory.Trajectory` with
the same fields as an ODE solution (``source="simulation"``).

Algorithms
----------
* ``"gf"``: gradient flow with the exact population gradient (time unit
  ``"gradient-flow time t"``), integrated by ``solve_ivp(method="DOP853")``
  with ``rtol``/``atol``, restarted at every recording time;
* ``"sgd"``: online SGD with a fresh minibatch of size ``batch`` each step;
* ``"gd"``: multi-pass GD on a fixed dataset of ``n_samples`` points per replica (full
  batch, or minibatches without replacement within each epoch).

Discrete algorithms are compared with gradient flow at ``t = eta * steps`` (time unit
``"t = eta * steps"``).  The model module defines the update: see a model's stepper
(its module under ``popdyn/models/``).

Stepper protocol
----------------
A model plugs in with a *stepper* class registered for its problem type
(:func:`register_stepper`).  ``Stepper(problem, config, streams)`` receives the validated
:class:`SimulationConfig` and a dict of independent generators
``{"model", "init", "data", "noise"}`` (spawned from one ``SeedSequence``; the stepper
draws its fixed quantities -- index vectors, initial weights, dataset -- from the first
three at construction, and ``"noise"`` is passed to every ``step``).  It provides

* ``model`` (str) -- recorded as ``Trajectory.model``;
* ``algorithms`` (tuple of str) -- the subset of :data:`ALGORITHMS` it implements;
* ``continuous`` (bool) -- ``True`` if it is advanced by ``advance`` (gradient flow);
* ``init_state() -> dict[str, ndarray]`` -- the fresh dynamic state.  Together with the
  noise generator's state it determines the future completely; checkpoints save exactly
  these arrays (and the steppers mutate them in place).  Per-replica arrays have the
  replica axis first (``stop`` freezes their rows; others count as shared);
* ``step(state, rng)`` -- one discrete step, in place; raises
  :class:`~popdyn.errors.NumericalError` when values become non-finite (the engine adds
  the step and time; it runs the loop under ``np.errstate(all="ignore")``);
* optionally ``step_block(state, rng, n_steps, frozen)`` -- ``n_steps >= 1`` discrete steps
  in one call (section "Block stepping"); when present the engine uses it instead of
  ``step``;
* ``advance(state, t0, t1)`` -- continuous algorithms: integrate from ``t0`` to ``t1``;
* ``observe(state) -> dict[str, ndarray]`` -- the overlaps, each of shape ``(R, ...)``;
* ``constants`` (dict of ndarray) -- fixed arrays (e.g. ``V``) saved in checkpoints to
  verify a resume;
* ``work_per_step() -> float`` -- rough cost of a step (multiply-adds; informational);
* optionally ``check_state(state) -> str | None`` -- a sanity check called at every
  recording time; a message makes :func:`simulate` raise
  :class:`~popdyn.errors.NumericalError` with it (and the step and time);
* optionally a static ``memory_terms(problem, config, n_times)`` refining the generic
  lower bound of the run's memory (:func:`memory_terms`), checked before construction;
* ``describe() -> dict`` -- JSON-friendly extra ``meta`` (e.g. the initial overlaps);
* optionally a static ``initial_state(problem, d, *, init, model_rng, init_rng,
  replicas, same_init)`` used by :func:`initial_state`.

Randomness and resuming
-----------------------
``rng`` (int, Generator, SeedSequence or None) gives one root ``SeedSequence``, recorded
in ``meta["seed"]`` in a form that rebuilds it.  Four child streams are spawned *by
role*, not by replica, so that each step draws one ``(R, B, d)`` block (vectorised over
replicas); a replica's path therefore depends on ``replicas``, and runs are
reproducible for a fixed ``(seed, replicas)``.  With ``checkpoint=path`` the state is
written atomically every ``checkpoint_every`` seconds (default ``CHECKPOINT_EVERY``;
and/or ``checkpoint_steps`` steps), on SIGINT/SIGTERM and at the end; a later call with
the same parameters resumes from it and returns exactly the arrays of an uninterrupted
run.

Per-replica stopping
--------------------
``stop=callable`` ends each replica at a condition: ``stop(observed) -> bool array (R,)``
is evaluated on ``stepper.observe(state)`` at every recording time, and also every
``stop_every`` steps when given (``stop_every=1``: at every step, for first-passage
times resolved to the step).  Once ``True`` for a replica it stays stopped: its state is
**frozen** at its hitting step and ``Trajectory.events["stop"]`` holds the hitting time
per replica (``NaN`` if never; discrete algorithms also ``events["stop_step"]``).  The
step stays vectorised over all replicas: every replica still draws its samples and is
updated, and the per-replica rows of the frozen ones (state arrays whose first axis has
length ``R``) are then restored.  So **the random stream is exactly that of the run
without** ``stop`` and, for ``"sgd"``/``"gd"``, the other replicas' paths are
bit-identical to it; shared state (e.g. the epoch position of minibatch GD) keeps
advancing.  (``"gf"`` has no randomness but integrates all replicas with one adaptive
solver, whose step sizes see the frozen rows: the others then agree with the free run to
the integration tolerance, not bit for bit.)  A frozen replica's discarded update can
still overflow and raise :class:`~popdyn.errors.NumericalError`, as in the free run (not
with a ``step_block`` stepper, which skips frozen replicas; "Block stepping").  The run
ends early once every replica has stopped: the trajectory ends at that step (appended to
the recording grid when it is not on it) and ``status = 1``.  Checkpoints hold the stop
state, so a resumed run is bit-identical (pass the same ``stop``).

Block stepping
--------------
A stepper whose step costs little (a d-free engine, a compiled kernel) loses most of its
time to the Python call per step.  It may then provide
``step_block(state, rng, n_steps, frozen)``, which must leave ``state`` and ``rng``
exactly as ``n_steps`` calls of ``step(state, rng)`` would (the same random numbers
consumed in the same order; the state equal up to the rounding the stepper documents),
with these rules:

* ``frozen`` is ``None`` or a bool array ``(R,)`` of replicas stopped by ``stop``: their
  per-replica rows must come out unchanged (skip them, or restore them after every
  step), while their random numbers are still consumed; a non-finite update of a frozen
  replica is not an error;
* the replicas are independent: a replica's rows depend only on its own rows, shared
  state and the stream, so the result does not depend on how the run is cut into blocks;
* on non-finite values it raises :class:`~popdyn.errors.NumericalError` with ``step`` set
  to the failing step counted from 1 within the call (the engine turns it into the
  absolute step and time; without ``step`` the engine reports the block's last step and
  its range).

The engine then calls it with blocks that end exactly at every step where the one-step
loop would act -- recording steps, multiples of ``stop_every`` and (with a checkpoint) of
``checkpoint_steps`` -- and sizes them to last about ``STEP_BLOCK_SECONDS``, polling
SIGINT/SIGTERM, the periodic checkpoint clock and the progress line after each block.
Recording, stop conditions, checkpoints and resumes therefore give the same arrays as
the one-step loop; an interrupt is served at the end of the current block instead of the
current step.  A stepper that draws its random numbers in blocks of steps must keep the
stream independent of how the engine cuts the run (e.g. draw them in fixed blocks kept in
``state``, as :mod:`popdyn.models.committee_exact` does, or in the per-step order, as
:mod:`popdyn.models.committee_sim` does).

Examples
--------
A self-contained model: linear regression on a unit teacher ``v``, squared loss, online
SGD on a student ``w`` started at ``init * v``; the overlap is ``m = v . w`` (a complete
version with the ODE and the command line is in ``tests/test_model_protocol.py``).

>>> import numpy as np
>>> class Regression:
...     def describe(self):
...         return {"model": "regression"}
>>> class RegressionSGD:
...     model, algorithms, continuous = "regression", ("sgd",), False
...     def __init__(self, problem, config, streams):
...         self.R, self.d = config.replicas, config.d
...         self.eta, self.B = config.eta, config.batch
...         self.v, self.w0, _ = self.initial_state(
...             problem, config.d, init=config.init, model_rng=streams["model"],
...             init_rng=streams["init"], replicas=config.replicas, same_init=config.same_init)
...         self.constants = {"v": self.v}
...     @staticmethod
...     def initial_state(problem, d, *, init, model_rng, init_rng, replicas, same_init):
...         v = model_rng.standard_normal(d)
...         v /= np.linalg.norm(v)
...         return v, float(init) * v, np.array([float(init)])
...     def init_state(self):
...         return {"w": np.tile(self.w0, (self.R, 1))}
...     def step(self, state, rng):
...         x = rng.standard_normal((self.R, self.B, self.d))
...         resid = np.einsum("rbd,rd->rb", x, state["w"] - self.v)
...         state["w"] -= self.eta / self.B * np.einsum("rb,rbd->rd", resid, x)
...     def observe(self, state):
...         return {"m": (state["w"] @ self.v)[:, None]}
...     def work_per_step(self):
...         return float(self.R * self.B * self.d)
...     def describe(self):
...         return {}
>>> register_stepper(Regression, RegressionSGD)
>>> traj = simulate(Regression(), d=50, algorithm="sgd", eta=0.01, steps=200, batch=4,
...                 replicas=3, init=0.3, n_record=5, rng=0)
>>> traj.m.shape, traj.time_unit
((5, 3, 1), 't = eta * steps')

:func:`initial_state` gives the start of a seeded run without simulating:

>>> v, w0, m0 = initial_state(Regression(), 50, init=0.3, rng=0)
>>> bool(np.allclose(traj.m[0, 0], m0, atol=1e-14))
True
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import numbers
import re
import time
import warnings
from pathlib import Path

import numpy as np

from ._budget import DEFAULT_MAX_STEPS, available_memory, check_memory, check_steps, fmt_count, nbytes
from ._io import atomic_write_bytes, versions
from ._progress import DeferredInterrupts, Interrupted, Progress, signal_name
from ._random import as_generator
from ._validation import check_choice, check_finite_array, check_int, check_real
from .errors import NumericalError
from .trajectory import Trajectory

__all__ = [
    "epoch_state",
    "next_minibatch",
    "simulate",
    "initial_state",
    "make_stepper",
    "register_stepper",
    "SimulationConfig",
    "memory_terms",
    "check_run_memory",
    "Interrupted",
    "ALGORITHMS",
    "STREAMS",
]

#: Valid values of ``algorithm``.
ALGORITHMS = ("gf", "sgd", "gd")
#: Time unit recorded for each algorithm (theory/CONVENTIONS.md, "Time units").
TIME_UNITS = {"gf": "gradient-flow time t", "sgd": "t = eta * steps", "gd": "t = eta * steps"}
#: Human-readable names for messages.
_LABELS = {"gf": "gradient flow", "sgd": "online SGD", "gd": "multi-pass GD"}
#: Independent random streams spawned from the root seed, by role.
STREAMS = ("model", "init", "data", "noise")
#: Valid string values of ``record``.
RECORD_CHOICES = ("log", "linear")
#: The log-spaced gradient-flow grid starts this many decades below ``t_end``.
GF_LOG_DECADES = 4
#: Default seconds between periodic checkpoint writes.  A write of the README example's
#: state (8 replicas x 4 neurons x d = 1000 plus the records, 340 kB) takes ~20 ms with
#: fsync (measured, median of 160 writes on the shared development machine), i.e. ~0.4% of
#: the run at this interval, and a crash or SIGKILL loses at most these few seconds.  SIGINT/SIGTERM lose nothing (a checkpoint is written on the way
#: out).  When ``checkpoint_every`` is not given, the interval is stretched so that writes
#: of a large state take at most ``MAX_CHECKPOINT_OVERHEAD`` of the wall time.
CHECKPOINT_EVERY = 5.0
#: Largest fraction of the wall time spent writing periodic checkpoints by default.
MAX_CHECKPOINT_OVERHEAD = 0.05
#: Record times given as an array are rounded to multiples of ``eta``; a larger relative
#: mismatch than this triggers a warning (1e-9 absorbs the rounding of ``k * eta``).
GRID_ROUND_TOL = 1e-9
#: Format tag of checkpoint files.
CHECKPOINT_FORMAT = "popdyn-simulate-checkpoint/1"
#: Steppers with ``step_block`` advance in blocks sized to last about this long (module
#: docstring, "Block stepping"), so SIGINT/SIGTERM, periodic checkpoints and the progress
#: line are serviced at least this often while the Python overhead of a block (a few
#: microseconds) stays below 1e-4 of the run.
STEP_BLOCK_SECONDS = 0.05
#: Most steps in one block.
MAX_STEP_BLOCK = 2 ** 22

#: Simulation engines: ``"full"`` materialises the d-dimensional data; ``"exact"`` draws the
#: low-dimensional projections of each sample from their exact joint law (cost per step
#: independent of d), where a model provides it.
ENGINES = ("full", "exact")

#: (problem type's qualified name, engine) -> stepper class or "module:Class" (lazy).  Filled by
#: the model modules through :func:`register_stepper`; the engine names no model.
_REGISTRY: dict = {}


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class SimulationConfig:
    r"""Validated options of one simulation (what a stepper receives).

    Attributes
    ----------
    d : int
        Ambient dimension, ``>= 1``.
    algorithm : {"gf", "sgd", "gd"}
    eta : float or None
        Step size ``> 0`` (``"sgd"``, ``"gd"``); ``None`` for ``"gf"``.
    batch : int or None
        Minibatch size: ``"sgd"`` default 1; ``"gd"`` ``None`` = full batch; ``"gf"`` ``None``.
    n_samples : int or None
        Dataset size of ``"gd"`` (required there, ``None`` otherwise).
    replicas : int
        Independent runs ``R >= 1``, vectorised.
    init : str, float or array_like
        Initialisation, interpreted by the model's stepper (e.g. ``"uniform"``, a warm-start
        scale ``m0`` or overlaps ``u0``; see the model's module under ``popdyn/models/``).
    same_init : bool
        Start every replica from the same ``W0`` (default), so the replica mean is
        comparable with one ODE run from ``u0 = V W0^T``.
    rtol, atol : float
        Tolerances of the gradient-flow integrator (``"gf"`` only).
    """

    d: int
    algorithm: str = "sgd"
    eta: float | None = None
    batch: int | None = None
    n_samples: int | None = None
    replicas: int = 8
    init: object = "uniform"
    same_init: bool = True
    rtol: float = 1e-10
    atol: float = 1e-12
    engine: str = "full"

    def __post_init__(self):
        s = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        s("d", check_int("d", self.d, minimum=1))
        check_choice("engine", self.engine, ENGINES)
        alg = check_choice("algorithm", self.algorithm, ALGORITHMS)
        if alg == "gf":
            for name in ("eta", "batch", "n_samples"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"`{name}` does not apply to algorithm 'gf' (gradient flow with the exact "
                        f"population gradient); got {name}={getattr(self, name)!r}. Pass None."
                    )
        else:
            if self.eta is None:
                raise ValueError(f"`eta` (the step size) is required for algorithm {alg!r}.")
            s("eta", check_real("eta", self.eta, lower=0.0, lower_open=True))
            if alg == "sgd":
                s("batch", 1 if self.batch is None else check_int("batch", self.batch, minimum=1))
                if self.n_samples is not None:
                    raise ValueError(
                        "`n_samples` applies to algorithm 'gd' (fixed dataset) only; online SGD draws "
                        f"fresh samples. Got n_samples={self.n_samples!r}."
                    )
            else:
                if self.n_samples is None:
                    raise ValueError("`n_samples` (the dataset size) is required for algorithm 'gd'.")
                s("n_samples", check_int("n_samples", self.n_samples, minimum=1))
                if self.batch is not None:
                    s("batch", check_int("batch", self.batch, minimum=1))
        s("replicas", check_int("replicas", self.replicas, minimum=1))
        if not isinstance(self.same_init, (bool, np.bool_)):
            raise TypeError(f"`same_init` must be a bool, got {self.same_init!r}.")
        s("same_init", bool(self.same_init))
        s("rtol", check_real("rtol", self.rtol, lower=0.0, lower_open=True))
        s("atol", check_real("atol", self.atol, lower=0.0, lower_open=True))

    def describe(self) -> dict:
        """JSON-friendly parameters."""
        init = self.init
        if isinstance(init, numbers.Real) and not isinstance(init, bool):
            init = float(init)
        elif isinstance(init, dict):
            init = {str(k): np.asarray(v, dtype=float).tolist() for k, v in init.items()}
        elif not isinstance(init, str):
            init = np.asarray(init, dtype=float).tolist()
        out = {"d": self.d, "algorithm": self.algorithm, "eta": self.eta, "batch": self.batch,
               "n_samples": self.n_samples, "replicas": self.replicas, "init": init,
               "same_init": self.same_init, "engine": self.engine}
        if self.algorithm == "gf":
            out.update(rtol=self.rtol, atol=self.atol)
        return out


# --------------------------------------------------------------------------------------
# minibatch GD on a fixed dataset (shared by the steppers)
# --------------------------------------------------------------------------------------
def epoch_state(replicas: int, n_samples: int) -> dict:
    """State arrays for minibatch GD without replacement: one permutation per replica and the
    position in the current epoch (saved in checkpoints with the rest of the state)."""
    return {"perm": np.zeros((replicas, n_samples), dtype=np.int64), "pos": np.zeros((), dtype=np.int64)}


def next_minibatch(state: dict, rng: np.random.Generator, n_samples: int, batch: int) -> np.ndarray:
    """Indices ``(R, b)`` of the next minibatch, advancing ``state`` from :func:`epoch_state`.

    Each epoch draws an independent permutation per replica and walks through it in
    minibatches of ``batch``; the last one of an epoch may be smaller, so every sample is
    used exactly once per epoch.
    """
    pos = int(state["pos"])
    perm = state["perm"]
    if pos == 0:  # new epoch: independent permutation per replica
        perm[...] = np.arange(n_samples)
        rng.permuted(perm, axis=1, out=perm)
    end = min(pos + batch, n_samples)
    state["pos"][...] = 0 if end == n_samples else end
    return perm[:, pos:end]


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------
def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_stepper(problem_type: type, stepper, *, engine: str = "full") -> None:
    """Register ``stepper`` (a class following the stepper protocol) for ``problem_type``.

    ``stepper`` may also be a ``"module:attribute"`` string, imported on first use.
    ``engine`` is ``"full"`` (d-dimensional data) or ``"exact"`` (d-free exact law).

    Parameters
    ----------
    problem_type : type
        The problem class; instances of it and of its subclasses (looked up along the MRO)
        are simulated with ``stepper``.
    stepper : type or str
        A class following the stepper protocol (module docstring), or a
        ``"module:attribute"`` string naming one.
    engine : {"full", "exact"}
        Which engine ``stepper`` implements (default ``"full"``).  A later registration for
        the same ``problem_type`` and ``engine`` replaces the earlier one.

    Raises
    ------
    TypeError
        ``problem_type`` is not a class.
    ValueError
        Unknown ``engine``.
    """
    if not isinstance(problem_type, type):
        raise TypeError(f"`problem_type` must be a class, got {problem_type!r}.")
    check_choice("engine", engine, ENGINES)
    _REGISTRY[(_qualname(problem_type), engine)] = stepper


def _lookup(problem, engine: str = "full"):
    for cls in type(problem).__mro__:
        key = (_qualname(cls), engine)
        entry = _REGISTRY.get(key)
        if entry is None:
            continue
        if isinstance(entry, str):
            module, attr = entry.split(":")
            entry = getattr(importlib.import_module(module), attr)
            _REGISTRY[key] = entry
        return entry
    known = sorted({name.rsplit(".", 1)[-1] for name, eng in _REGISTRY if eng == engine})
    other = sorted({eng for name, eng in _REGISTRY
                    if any(name == _qualname(c) for c in type(problem).__mro__)})
    hint = f"; it has the engine(s) {other}" if other else ""
    raise TypeError(
        f"`problem` of type {type(problem).__name__} has no {engine!r} simulator{hint}; problem types with one: "
        f"{', '.join(known) or '(none)'} (register one with popdyn.simulation.register_stepper)."
    )


# --------------------------------------------------------------------------------------
# randomness
# --------------------------------------------------------------------------------------
def _entropy_json(entropy):
    if isinstance(entropy, numbers.Integral):
        return int(entropy)
    return [int(e) for e in entropy]


def _ss_record(ss: np.random.SeedSequence) -> dict:
    return {"entropy": _entropy_json(ss.entropy), "spawn_key": [int(k) for k in ss.spawn_key],
            "n_children_spawned": int(ss.n_children_spawned)}


def _root_sequence(rng):
    """``(SeedSequence, record)``; the record rebuilds the sequence (see :func:`_root_from_record`)."""
    if rng is None:
        ss = np.random.SeedSequence()
        return ss, _ss_record(ss)
    if isinstance(rng, np.random.Generator):
        base = rng.bit_generator.seed_seq
        if not isinstance(base, np.random.SeedSequence):  # seedless generator: derive a fresh root
            ss = np.random.SeedSequence([int(v) for v in rng.integers(0, 2**63, size=4)])
            return ss, _ss_record(ss)
        rng = base
    if isinstance(rng, np.random.SeedSequence):
        record = _ss_record(rng)
        rng.spawn(len(STREAMS))  # consume children like a spawn, so a second call differs
        return _root_from_record(record), record
    as_generator(rng)  # type check (int seeds; TypeError otherwise)
    return np.random.SeedSequence(int(rng)), int(rng)


def _root_from_record(record) -> np.random.SeedSequence:
    if isinstance(record, numbers.Integral):
        return np.random.SeedSequence(int(record))
    return np.random.SeedSequence(record["entropy"], spawn_key=tuple(record["spawn_key"]),
                                  n_children_spawned=record["n_children_spawned"])


def _streams(root: np.random.SeedSequence) -> dict:
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, root.spawn(len(STREAMS)))}


def _build(problem, config: SimulationConfig, root):
    factory = _lookup(problem, config.engine)
    if config.algorithm not in factory.algorithms:
        raise ValueError(
            f"`algorithm` must be one of {', '.join(map(repr, factory.algorithms))} for "
            f"{type(problem).__name__}; got {config.algorithm!r}."
        )
    streams = _streams(root)
    return factory(problem, config, streams), streams["noise"]


# --------------------------------------------------------------------------------------
# public helpers
# --------------------------------------------------------------------------------------
def make_stepper(problem, *, d, algorithm="sgd", eta=None, batch=None, n_samples=None, replicas=8,
                 init="uniform", same_init=True, rng=None, rtol=1e-10, atol=1e-12, engine="full"):
    """Build the model's stepper exactly as :func:`simulate` does: ``(stepper, noise_rng)``.

    For custom loops and tests: ``state = stepper.init_state()``, then
    ``stepper.step(state, noise_rng)`` (``stepper.step_block(state, noise_rng, n)`` for many
    steps when the stepper has it; ``stepper.advance(state, t0, t1)`` for ``"gf"``) and
    ``stepper.observe(state)``.  Same seed, same arguments -> same draws as
    :func:`simulate`.
    """
    config = SimulationConfig(d=d, algorithm=algorithm, eta=eta, batch=batch, n_samples=n_samples,
                              replicas=replicas, init=init, same_init=same_init, rtol=rtol, atol=atol,
                              engine=engine)
    check_run_memory(getattr(_lookup(problem, config.engine), "memory_terms", memory_terms)(problem, config, 2))
    root, _ = _root_sequence(rng)
    return _build(problem, config, root)


def initial_state(problem, d, *, init="uniform", rng=None, replicas=1, same_init=True):
    r"""The initial state a seeded :func:`simulate` run starts from, without simulating.

    Returns what the stepper's static ``initial_state`` returns; for a model whose state
    is a per-unit vector overlap ``u``, e.g. ``(V, W0, u0)``: index vectors ``(k, d)``,
    initial weights ``(N, d)`` (``(R, N, d)`` when ``same_init=False``) and overlaps
    ``u0 = W0 V^T`` -- the initial condition to give the u-ODE.

    The draws match :func:`simulate` called with the same ``d``, ``init``, ``same_init``
    (and ``replicas`` when ``same_init=False``) and an int seed or ``SeedSequence``
    (a ``Generator`` advances on each call, so two calls with it differ).

    Parameters
    ----------
    problem : problem object
        An instance of a registered problem type (see :func:`register_stepper`).
    d : int
        Ambient dimension (``>= 1``).
    init : "uniform", float or array_like
        Initialisation, as in :func:`simulate` (model specific; default ``"uniform"``).
    rng : int, Generator, SeedSequence or None
        Seed, as in :func:`simulate`.
    replicas : int
        Number ``R`` of replicas (``>= 1``); only matters when ``same_init=False``.
    same_init : bool
        One initial draw shared by all replicas (default ``True``) or one per replica.

    Returns
    -------
    tuple
        The stepper's ``initial_state(problem, d, ...)`` result, e.g. ``(V, W0, u0)`` as
        above.

    Raises
    ------
    TypeError
        The problem's stepper does not expose a static ``initial_state``.
    ValueError
        Bad ``d`` or ``replicas``, or the initial weights would not fit in memory.

    Examples
    --------
    The module docstring's ``Regression`` toy shows a stepper with a static
    ``initial_state`` and checks that a seeded :func:`simulate` starts from it.
    """
    factory = _lookup(problem)
    fn = getattr(factory, "initial_state", None)
    if fn is None:
        raise TypeError(f"the simulator of {type(problem).__name__} does not expose `initial_state`.")
    d = check_int("d", d, minimum=1)
    replicas = check_int("replicas", replicas, minimum=1)
    n_draws, units = (1 if same_init else replicas), _n_units(problem)
    check_run_memory([(nbytes(n_draws, units, d), f"initial weights replicas x neurons x d = {fmt_count(n_draws)} x "
                                                  f"{fmt_count(units)} x {fmt_count(d)}",
                       {"d": d, "neurons": units, "replicas": n_draws})])
    root, _ = _root_sequence(rng)
    streams = _streams(root)
    return fn(problem, d, init=init, model_rng=streams["model"], init_rng=streams["init"],
              replicas=replicas, same_init=bool(same_init))


# --------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------
def _resolve_length(config: SimulationConfig, steps, t_end, max_steps=None):
    """``(n_steps or None, t_final)``; refuses more than ``max_steps`` steps before any work."""
    if config.algorithm == "gf":
        if steps is not None:
            raise ValueError("`steps` does not apply to algorithm 'gf' (continuous time); give `t_end`.")
        if t_end is None:
            raise ValueError("`t_end` is required for algorithm 'gf'.")
        return None, check_real("t_end", t_end, lower=0.0, lower_open=True)
    if (steps is None) == (t_end is None):
        raise ValueError(
            f"give exactly one of `steps` and `t_end` (t = eta * steps); got steps={steps!r}, t_end={t_end!r}."
        )
    if steps is not None:
        n = check_int("steps", steps, minimum=1)
        check_steps(n, max_steps, what="this run (`steps`)", lower="`steps`")
        return n, n * config.eta
    t_end = check_real("t_end", t_end, lower=0.0, lower_open=True)
    n = int(np.rint(t_end / config.eta))
    check_steps(n, max_steps, what=f"`t_end` = {t_end:g} with `eta` = {config.eta:g}", lower="`t_end`")
    if n < 1:
        raise ValueError(f"`t_end` = {t_end} is shorter than one step of eta = {config.eta}.")
    if abs(n * config.eta - t_end) > GRID_ROUND_TOL * t_end:
        warnings.warn(f"`t_end` = {t_end} is not a multiple of eta = {config.eta}; running {n} steps "
                      f"(t = {n * config.eta:.12g}).", stacklevel=3)
    return n, n * config.eta


def _grid(config, n_steps, t_final, n_record, record):
    """Recording grid: int steps (discrete) or float times (gf), starting at 0 and ending at the end."""
    gf = config.algorithm == "gf"
    if isinstance(record, str):
        check_choice("record", record, RECORD_CHOICES)
        if gf:
            if record == "log":
                g = np.logspace(np.log10(t_final) - GF_LOG_DECADES, np.log10(t_final), n_record - 1)
                g = np.concatenate(([0.0], g))
            else:
                g = np.linspace(0.0, t_final, n_record)
            g = np.unique(g)
            g[-1] = t_final
            return g
        if record == "log":
            g = np.rint(np.logspace(0.0, np.log10(n_steps), n_record - 1))
            g = np.concatenate(([0], g, [n_steps]))
        else:
            g = np.rint(np.linspace(0, n_steps, n_record))
        return np.unique(g.astype(np.int64))
    times = check_finite_array("record", record, ndim=1)
    tol = GRID_ROUND_TOL * max(1.0, t_final)
    if times.size and (times.min() < 0 or times.max() > t_final + tol):
        raise ValueError(f"`record` times must lie in [0, {t_final:.12g}] (the run), got "
                         f"[{times.min():.12g}, {times.max():.12g}].")
    if gf:
        g = np.unique(np.concatenate(([0.0], np.clip(times, 0.0, t_final), [t_final])))
        return g
    s = np.rint(times / config.eta)
    if times.size and np.max(np.abs(s * config.eta - times)) > tol:
        warnings.warn("`record` times were rounded to multiples of eta (t = eta * steps).", stacklevel=3)
    return np.unique(np.concatenate(([0], s, [n_steps])).astype(np.int64))


# --------------------------------------------------------------------------------------
# memory budget
# --------------------------------------------------------------------------------------
def _n_units(problem) -> int:
    """Neurons of the student (``n_neurons`` or ``K``; 1 when the problem has neither)."""
    for attr in ("n_neurons", "K"):
        value = getattr(problem, attr, None)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
            return int(value)
    return 1


def memory_terms(problem, config: SimulationConfig, n_times: int) -> list:
    r"""Lower bound of the arrays a run allocates, before any allocation.

    Returns ``[(nbytes, description, {argument: value})]`` for the weights (replicas x
    neurons x d), one minibatch of samples (``"sgd"``: replicas x batch x d), the dataset
    (``"gd"``: replicas x n_samples x d) and the recorded overlaps (n_times x replicas x
    neurons), in float64.  With ``engine="exact"`` the samples are low-dimensional, so
    ``d`` is replaced by 1 (a lower bound).  A stepper class may refine this with a static
    ``memory_terms(problem, config, n_times)`` of the same form.
    """
    R, d, N = config.replicas, config.d, _n_units(problem)
    full = config.engine == "full"

    def term(label, **dims):
        if not full:
            dims.pop("d", None)
        names = " x ".join(dims)
        values = " x ".join(fmt_count(v) for v in dims.values())
        return (nbytes(*dims.values()), f"{label} {names} = {values}",
                {k: v for k, v in dims.items() if k != "neurons"})

    terms = [term("weights", replicas=R, neurons=N, d=d)]
    if config.algorithm == "sgd":
        terms.append(term("minibatch", replicas=R, batch=config.batch, d=d))
    elif config.algorithm == "gd":
        terms.append(term("dataset", replicas=R, n_samples=config.n_samples, d=d))
    terms.append(term("records", n_record=n_times, replicas=R, neurons=N))
    return terms


def check_run_memory(terms: list, limit: int | None = None) -> None:
    """Refuse a run whose arrays (:func:`memory_terms`) exceed the machine's memory.

    The ``ValueError`` names the largest argument of the largest array, with the estimate
    in GiB (:func:`popdyn._budget.check_memory`).
    """
    total = sum(t[0] for t in terms)
    limit = available_memory() if limit is None else limit
    if total <= limit:
        return
    size, what, drivers = max(terms, key=lambda t: t[0])
    driver = max(drivers, key=lambda k: drivers[k])
    flag = None if driver in ("n_record", "neurons") else "--" + driver.replace("_", "-")
    check_memory(total, driver=driver, value=drivers[driver], limit=limit, flag=flag,
                 what=what)


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------
def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {obj!r}")


def _read_checkpoint(path: Path):
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {k: data[k] for k in data.files if k != "header"}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"`checkpoint` {str(path)!r} exists but is not a readable simulate checkpoint "
                         f"({exc}); delete it or choose another path.") from exc
    if header.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"`checkpoint` {str(path)!r} has format {header.get('format')!r}, expected "
                         f"{CHECKPOINT_FORMAT!r}; delete it or choose another path.")
    return header, arrays


def _write_checkpoint(path, header, state, constants, recorded, n_rec, extra=None) -> None:
    arrays = {f"state__{k}": np.asarray(v) for k, v in state.items()}
    arrays.update(extra or {})
    arrays.update({f"const__{k}": np.asarray(v) for k, v in constants.items()})
    arrays.update({f"rec__{k}": v[:n_rec] for k, v in recorded.items()})
    buf = io.BytesIO()
    np.savez(buf, header=np.array(json.dumps(header)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _diff_params(saved: dict, now: dict, prefix="") -> list:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key, "<missing>"), now.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff_params(a, b, prefix + key + ".")
        elif a != b:
            fa, fb = (repr(x) if len(repr(x)) < 60 else repr(x)[:57] + "..." for x in (a, b))
            out.append(f"{prefix}{key}: checkpoint {fa}, now {fb}")
    return out


# --------------------------------------------------------------------------------------
# block stepping
# --------------------------------------------------------------------------------------
class _BlockSizer:
    """Length of the next block of a ``step_block`` stepper: starts at one step and follows
    the measured speed so that a block lasts about ``STEP_BLOCK_SECONDS`` (growing at most
    ``4x`` per block, so the first, compiling, call cannot make it overshoot)."""

    def __init__(self):
        self.steps = 1

    def update(self, n: int, elapsed: float) -> None:
        want = 4 * self.steps if elapsed <= 0.0 else n * STEP_BLOCK_SECONDS / elapsed
        self.steps = int(max(1, min(want, 4 * self.steps, MAX_STEP_BLOCK)))


def _block_length(s: int, n_steps: int, longest: int, mark, stop_every, checkpoint_steps) -> int:
    """Steps of the block starting after step ``s``: at most ``longest``, and ending at the next
    recording step ``mark``, multiple of ``stop_every`` / ``checkpoint_steps`` (when given) or
    the end -- exactly the steps at which the one-step loop acts."""
    n = min(n_steps - s, longest)
    if mark is not None:
        n = min(n, mark - s)
    for every in (stop_every, checkpoint_steps):
        if every is not None:
            n = min(n, every - s % every)
    return max(1, n)


_AT_STEP = re.compile(r" \(at step \d+(, t = [^)]*)?\)$")


def _block_error(exc: NumericalError, s: int, n: int, eta: float) -> NumericalError:
    """The error of a ``step_block`` call over steps ``s+1 .. s+n`` at its absolute step and time."""
    message = _AT_STEP.sub("", str(exc))
    if exc.step is not None and 1 <= int(exc.step) <= n:
        k = s + int(exc.step)
    else:  # the stepper did not say which step: the block's last one, and the range in the message
        k = s + n
        message += f" (within steps {s + 1}..{s + n})"
    return NumericalError(message, step=k, time=k * eta)


# --------------------------------------------------------------------------------------
# the verb
# --------------------------------------------------------------------------------------
def simulate(problem, *, d, algorithm="sgd", eta=None, steps=None, t_end=None, batch=None,
             n_samples=None, replicas=8, init="uniform", same_init=True, n_record=100, record="log",
             rng=None, progress=None, checkpoint=None, checkpoint_every=None, checkpoint_steps=None,
             rtol=1e-10, atol=1e-12, engine="full", max_steps=DEFAULT_MAX_STEPS, stop=None,
             stop_every=None) -> Trajectory:
    r"""Simulate ``problem`` in dimension ``d`` and record its overlaps.

    Parameters
    ----------
    problem : problem object
        An instance of a registered problem type (see :func:`register_stepper`; each model
        registers its own under ``popdyn/models/``).
    d : int
        Ambient dimension (``>= 1``; the model may need more, e.g. ``d >= rank(G)``).
    algorithm : {"gf", "sgd", "gd"}
        Gradient flow, online SGD, or multi-pass GD on ``n_samples`` points.
    eta : float
        Step size (``"sgd"``, ``"gd"``); not used by ``"gf"``.
    steps, t_end : int, float
        Length of the run: exactly one of them for ``"sgd"``/``"gd"``
        (``steps = round(t_end / eta)``); ``t_end`` for ``"gf"``.
    batch : int, optional
        Minibatch size: default 1 for ``"sgd"``; full batch for ``"gd"`` (also when
        ``batch >= n_samples``).
    n_samples : int
        Dataset size per replica for ``"gd"``.
    replicas : int
        Number ``R`` of independent runs, vectorised.
    init : "uniform", float or array_like
        Initialisation (model specific, e.g. Haar, warm-start scale ``m0`` or overlaps
        ``u0``; see the model's stepper under ``popdyn/models/``).
    same_init : bool
        Start all replicas from the same ``W0`` (default ``True``).
    n_record : int
        Number of recording points (``>= 2``) on the grid ``record``; duplicate integer
        steps of a log grid are merged, so there may be fewer.
    record : {"log", "linear"} or array_like
        ``"log"``: step 0 and log-spaced steps from 1 to ``steps`` (gradient flow: time 0
        and ``GF_LOG_DECADES`` decades below ``t_end`` up to it); ``"linear"``; or explicit
        times in the trajectory's unit (rounded to multiples of ``eta`` for discrete
        algorithms).  The grid always contains the start and the end.
    rng : int, Generator, SeedSequence or None
        Seed; recorded in ``meta["seed"]`` in a form that rebuilds it.
    engine : {"full", "exact"}
        ``"full"`` draws the d-dimensional samples; ``"exact"`` draws only their
        low-dimensional projections from the exact joint law (cost per step independent of
        ``d``), for models that register such a stepper.
    progress : bool or None
        Progress on stderr (:class:`popdyn._progress.Progress`): a tqdm bar when stderr is
        a terminal, otherwise a plain line every ``PROGRESS_INTERVAL`` seconds (batch
        jobs, pipes).  ``None``: only once the run has lasted ``PROGRESS_DELAY`` seconds
        (short runs print nothing); ``True``: from the start; ``False``: silent.
    checkpoint : path, optional
        ``.npz`` file to save the state in (atomically), and to resume from when it
        exists and was written with the same parameters.  With ``rng=None`` the seed of
        the checkpoint is adopted.  With a checkpoint, SIGINT (Ctrl-C) and SIGTERM finish
        the current step (block of steps, ~``STEP_BLOCK_SECONDS``), write the checkpoint and raise
        :class:`popdyn._progress.Interrupted` (a ``KeyboardInterrupt``) saying where it is;
        the same call resumes.  A second signal stops at once.
    checkpoint_every : float, optional
        Seconds between periodic checkpoint writes (``0`` = at every step or recording
        time).  Default ``CHECKPOINT_EVERY`` (5 s), stretched when a write is slow so that
        writing takes at most ``MAX_CHECKPOINT_OVERHEAD`` of the run.
    checkpoint_steps : int, optional
        Also write every this many steps (``"gf"``: recording intervals).
    rtol, atol : float
        Tolerances of the DOP853 gradient-flow integrator (``"gf"`` only).
    max_steps : int or None
        Refuse (``ValueError``, before any work) a discrete run of more steps than this
        (default ``DEFAULT_MAX_STEPS`` = 1e9, about a day at the fastest measured
        throughput); ``None``: no limit.  Independently, a run whose arrays (weights,
        minibatch, dataset, records; :func:`memory_terms`) exceed the machine's memory is
        refused before allocating, naming the argument that drives the size.
    stop : callable, optional
        ``stop(observed) -> bool array (R,)`` on the dict ``stepper.observe(state)``: a
        replica for which it returns ``True`` is frozen there (module docstring,
        "Per-replica stopping"); the run ends when all have stopped.
    stop_every : int, optional
        Also evaluate ``stop`` every this many steps (discrete algorithms; default: only
        at recording times).  ``1`` gives hitting steps exact to the step, at the cost of
        one ``observe`` per step.

    Returns
    -------
    Trajectory
        ``t`` in ``TIME_UNITS[algorithm]``, overlaps of shape ``(n_times, R, ...)`` (for
        per-unit overlaps ``u`` of shape ``(N, k)``: ``(n_times, R, N, k)``),
        ``source="simulation"``, and ``meta`` with ``problem`` (``problem.describe()``),
        ``d``, ``algorithm``, ``eta``, ``batch``, ``n_samples``, ``replicas``, ``steps``,
        ``t_end``, ``seed``, ``versions``, the model's extras (e.g. ``u0``) and
        ``resumed_from``.  With ``stop``: ``events["stop"]`` (and ``"stop_step"``).

    Raises
    ------
    ValueError, TypeError
        Bad input, naming the argument; a checkpoint written with other parameters; a run
        above ``max_steps`` or the machine's memory.
    NumericalError
        Non-finite weights or overlaps (reported with the step and time), a message from
        the stepper's ``check_state``, or a failed gradient-flow integration.
    popdyn._progress.Interrupted
        SIGINT/SIGTERM during a run with a ``checkpoint`` (after writing it).

    Notes
    -----
    Discrete algorithms use time :math:`t = \eta\cdot\mathrm{steps}` so that they are
    compared with gradient flow at equal :math:`t` (theory/CONVENTIONS.md, "Time units").  Under online SGD with
    :math:`\eta = \delta/d` the high-dimensional limit has :math:`t = \mathrm{steps}/d`
    up to the factor :math:`\delta`.
    """
    config = SimulationConfig(d=d, algorithm=algorithm, eta=eta, batch=batch, n_samples=n_samples,
                              replicas=replicas, init=init, same_init=same_init, rtol=rtol, atol=atol,
                              engine=engine)
    factory = _lookup(problem, config.engine)
    if max_steps is not None:
        max_steps = check_int("max_steps", max_steps, minimum=1)
    n_steps, t_final = _resolve_length(config, steps, t_end, max_steps)
    n_record = check_int("n_record", n_record, minimum=2)
    check_run_memory([(nbytes(n_record, 2), f"recording grid 2 x n_record = 2 x {fmt_count(n_record)}",
                       {"n_record": n_record})])
    if config.algorithm not in factory.algorithms:
        raise ValueError(f"`algorithm` must be one of {', '.join(map(repr, factory.algorithms))} for "
                         f"{type(problem).__name__}; got {config.algorithm!r}.")
    grid = _grid(config, n_steps, t_final, n_record, record)
    check_run_memory(getattr(factory, "memory_terms", memory_terms)(problem, config, int(grid.size)))
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"`progress` must be True, False or None, got {progress!r}.")
    if checkpoint_every is not None:
        checkpoint_every = check_real("checkpoint_every", checkpoint_every, lower=0.0)
    interval = CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
    if checkpoint_steps is not None:
        checkpoint_steps = check_int("checkpoint_steps", checkpoint_steps, minimum=1)
    path = None if checkpoint is None else Path(checkpoint)
    if stop is not None and not callable(stop):
        raise TypeError(f"`stop` must be a callable stop(observed) -> bool array (R,), got {repr(stop)[:80]}.")
    if stop_every is not None:
        if stop is None:
            raise ValueError(f"`stop_every` = {stop_every!r} needs `stop` (a callable); pass stop=... or drop it.")
        if config.algorithm == "gf":
            raise ValueError("`stop_every` applies to discrete algorithms ('sgd', 'gd'); gradient flow evaluates "
                             f"`stop` at the recording times. Got stop_every={stop_every!r}.")
        stop_every = check_int("stop_every", stop_every, minimum=1)

    saved = _read_checkpoint(path) if path is not None and path.exists() else None
    if rng is None and saved is not None:
        seed_rec = saved[0]["params"]["seed"]
        root = _root_from_record(seed_rec)
    else:
        root, seed_rec = _root_sequence(rng)
    stepper, noise = _build(problem, config, root)
    gf = stepper.continuous
    params = _jsonable({
        "model": stepper.model, "problem": problem.describe(), "config": config.describe(),
        "steps": n_steps, "t_end": t_final, "grid": grid, "seed": seed_rec,
    })
    if stop is not None:  # only then, so that checkpoints of runs without `stop` keep their parameters
        params["stop"] = {"stop_every": stop_every}
    R = config.replicas
    cap = grid.size + (stop is not None)  # an early stop may add its step to the grid

    # ---- state: fresh or resumed ------------------------------------------------------
    recorded: dict = {}
    state = stepper.init_state()
    position, n_rec, resumed_from = 0, 0, None
    stop_pos = np.full(R, -1, dtype=np.int64)  # step (grid index for "gf") at which each replica stopped
    if saved is not None:
        header, arrays = saved
        diffs = _diff_params(header["params"], params)
        if diffs:
            raise ValueError(
                f"`checkpoint` {str(path)!r} was written with different parameters ("
                + "; ".join(diffs[:6]) + ("; ..." if len(diffs) > 6 else "")
                + "). Delete it, pass another path, or rerun with the original parameters."
            )
        for name, value in stepper.constants.items():
            if not np.array_equal(arrays.get(f"const__{name}"), value):
                raise ValueError(f"`checkpoint` {str(path)!r}: the saved `{name}` differs from the one drawn "
                                 "from the seed (different package version?); delete the checkpoint.")
        for name in state:
            state[name][...] = arrays[f"state__{name}"]
        noise.bit_generator.state = header["rng_state"]
        position, n_rec = int(header["position"]), int(header["n_recorded"])
        resumed_from = position
        if stop is not None:
            stop_pos[...] = arrays["stop__pos"]
        for key, arr in arrays.items():
            if key.startswith("rec__"):
                full = np.empty((cap,) + arr.shape[1:])
                full[:n_rec] = arr
                recorded[key[len("rec__"):]] = full

    def tval(pos):
        return float(grid[pos]) if gf else pos * config.eta

    check_state = getattr(stepper, "check_state", None)

    def observe(i, where):
        for name, arr in stepper.observe(state).items():
            if not np.all(np.isfinite(arr)):
                raise NumericalError(f"non-finite overlap `{name}` in {_LABELS[config.algorithm]}",
                                     step=None if gf else where, time=tval(where))
            if name not in recorded:
                recorded[name] = np.empty((cap,) + arr.shape)
            recorded[name][i] = arr
        if check_state is not None:
            message = check_state(state)
            if message:
                raise NumericalError(str(message), step=None if gf else where, time=tval(where))

    # ---- per-replica stopping (module docstring) ------------------------------------------
    frozen_rows = [k for k, v in state.items() if np.ndim(v) >= 1 and np.shape(v)[0] == R]
    snap = {k: state[k].copy() for k in frozen_rows} if stop is not None else {}
    frozen = np.flatnonzero(stop_pos >= 0)

    def check_stop(where) -> bool:
        """Evaluate ``stop`` at step (grid index) ``where``; freeze new stops; True when all stopped."""
        nonlocal frozen
        flags = stop(stepper.observe(state))
        flags = np.asarray(flags)
        if flags.dtype != np.bool_ or flags.shape != (R,):
            raise TypeError(f"`stop` must return a bool array of shape ({R},) (one per replica), got dtype "
                            f"{flags.dtype} and shape {flags.shape}.")
        new = flags & (stop_pos < 0)
        if new.any():
            stop_pos[new] = where
            for k in frozen_rows:
                snap[k][new] = state[k][new]
            frozen = np.flatnonzero(stop_pos >= 0)
        return frozen.size == R

    def restore_frozen():
        if frozen.size:
            for k in frozen_rows:
                state[k][frozen] = snap[k][frozen]

    def save(pos, n_done, complete=False):
        nonlocal next_save
        t0 = time.monotonic()
        header = {"format": CHECKPOINT_FORMAT, "params": params, "position": int(pos),
                  "n_recorded": int(n_done), "rng_state": noise.bit_generator.state, "complete": complete}
        extra = {} if stop is None else {"stop__pos": stop_pos}
        _write_checkpoint(path, header, state, stepper.constants, recorded, n_done, extra)
        now = time.monotonic()
        # default interval: stretched so that writes take at most MAX_CHECKPOINT_OVERHEAD of the run
        wait = interval if checkpoint_every is not None else max(interval, (now - t0) / MAX_CHECKPOINT_OVERHEAD)
        next_save = now + wait

    # ---- progress, interrupts and the main loop ---------------------------------------------
    total = grid.size - 1 if gf else n_steps
    unit = "interval" if gf else "step"
    bar = Progress(total, desc=f"simulate {config.algorithm}", unit=unit,
                   initial=(n_rec - 1 if gf and n_rec else position), enabled=progress)
    guard = DeferredInterrupts(path is not None)  # silent: the one-line message comes from Interrupted

    def halt(pos, n_done):
        save(pos, n_done)
        name = signal_name(guard.requested)
        where = (f"recording interval {pos}/{total} (t = {tval(pos):.6g})" if gf
                 else f"step {pos}/{n_steps} (t = {tval(pos):.6g})")
        raise Interrupted(f"{_LABELS[config.algorithm]} stopped by {name} at {where}; checkpoint saved to "
                          f"{str(path)!r}: rerun the same command to resume from there.",
                          signum=guard.requested, checkpoint=str(path))

    started = time.monotonic()
    next_save = started + interval
    all_stopped = stop is not None and frozen.size == R  # a resumed run that had already ended
    try:
        with guard, np.errstate(all="ignore"):
            if n_rec == 0:
                observe(0, 0)
                n_rec = 1
                if stop is not None:
                    all_stopped = check_stop(0)
            if all_stopped:
                pass  # nothing left to run (every replica stopped at the start or before the checkpoint)
            elif gf:
                for i in range(n_rec, grid.size):
                    try:
                        stepper.advance(state, float(grid[i - 1]), float(grid[i]))
                    except NumericalError as exc:
                        if exc.time is not None:
                            raise
                        raise NumericalError(str(exc), time=float(grid[i - 1])) from exc
                    restore_frozen()
                    observe(i, i)
                    n_rec = i + 1
                    if stop is not None and check_stop(i):
                        all_stopped, position = True, i
                        break
                    if path is not None:
                        if guard.requested is not None:
                            halt(i, n_rec)
                        if time.monotonic() >= next_save or (
                                checkpoint_steps is not None and i % checkpoint_steps == 0):
                            save(i, n_rec)
                    bar.update(1)
                else:
                    position = grid.size - 1
            else:
                marks = grid.tolist()
                nxt = marks[n_rec] if n_rec < len(marks) else None
                block = getattr(stepper, "step_block", None)  # block-stepping protocol (module docstring)
                sizer = _BlockSizer()
                s = position
                while s < n_steps:
                    if block is None:
                        n = 1
                        try:
                            stepper.step(state, noise)
                        except NumericalError as exc:
                            raise NumericalError(str(exc), step=s + 1, time=(s + 1) * config.eta) from exc
                    else:
                        n = _block_length(s, n_steps, sizer.steps, nxt, None if stop is None else stop_every,
                                          None if path is None else checkpoint_steps)
                        tic = time.perf_counter()
                        try:
                            block(state, noise, n, None if frozen.size == 0 else stop_pos >= 0)
                        except NumericalError as exc:
                            raise _block_error(exc, s, n, config.eta) from exc
                        sizer.update(n, time.perf_counter() - tic)
                    s += n
                    restore_frozen()
                    on_grid = s == nxt
                    if on_grid:
                        observe(n_rec, s)
                        n_rec += 1
                        nxt = marks[n_rec] if n_rec < len(marks) else None
                    if stop is not None and (on_grid or (stop_every is not None and s % stop_every == 0)) \
                            and check_stop(s):
                        if not on_grid:  # end the trajectory at the step where the last replica stopped
                            observe(n_rec, s)
                            n_rec += 1
                        all_stopped, position = True, s
                        bar.update(n)
                        break
                    if path is not None:
                        if guard.requested is not None:
                            halt(s, n_rec)
                        if (checkpoint_steps is not None and s % checkpoint_steps == 0) or \
                                time.monotonic() >= next_save:
                            save(s, n_rec)
                    bar.update(n)
                else:
                    position = n_steps
            if path is not None:
                save(position, n_rec, complete=True)
    except BaseException:
        bar.close(completed=False)
        raise
    bar.close()

    t = grid.astype(float) if gf else grid * config.eta
    events, status = {}, 0
    if stop is not None:
        hit = stop_pos >= 0
        if gf:
            events["stop"] = np.where(hit, grid[np.maximum(stop_pos, 0)], np.nan)
        else:
            events["stop"] = np.where(hit, stop_pos * config.eta, np.nan)
            events["stop_step"] = np.where(hit, stop_pos.astype(float), np.nan)
        if all_stopped:
            status = 1
            if gf:
                t = t[:n_rec]
            else:  # the last record is the stopping step, a grid point or appended to the grid
                t = np.append(grid[:n_rec - 1], position) * config.eta
            recorded = {k: v[:n_rec] for k, v in recorded.items()}
        elif recorded and next(iter(recorded.values())).shape[0] != t.size:
            recorded = {k: v[:t.size] for k, v in recorded.items()}
    meta = {
        "problem": problem.describe(), "d": config.d, "algorithm": config.algorithm, "eta": config.eta,
        "batch": config.batch, "n_samples": config.n_samples, "replicas": config.replicas,
        "steps": n_steps, "t_end": t_final, "same_init": config.same_init,
        "record_steps": None if gf else grid.tolist(), "seed": seed_rec, "versions": versions(),
        "checkpoint": None if path is None else str(path), "resumed_from": resumed_from,
        "wall_time_s": time.monotonic() - started,
    }
    if stop is not None:
        meta.update(stop_every=stop_every, n_stopped=int(np.sum(stop_pos >= 0)))
    if gf:
        meta.update(rtol=config.rtol, atol=config.atol)
    meta.update(stepper.describe())
    length = f"t = {t_final:.6g}" if gf else f"{n_steps} steps (t = {t_final:.6g})"
    message = f"{_LABELS[config.algorithm]} completed: {length}, {config.replicas} replicas."
    if status == 1:
        where = f"t = {float(t[-1]):.6g}" if gf else f"step {position} (t = {float(t[-1]):.6g})"
        message = (f"{_LABELS[config.algorithm]} stopped early: all {config.replicas} replicas met `stop` "
                   f"by {where}.")
    return Trajectory(t=t, overlaps=recorded, time_unit=TIME_UNITS[config.algorithm], source="simulation",
                      model=stepper.model, status=status, message=message, events=events, meta=meta)
