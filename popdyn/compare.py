r"""Predicted vs simulated: run the ODE and the finite-d simulation from the same start.

:func:`compare` draws one initial state ``W0`` in dimension ``d``, runs ``replicas``
independent simulations from it (they differ only in their data), reads the initial
overlaps (``u0 = V W0^T`` for the multi-index model; in general the simulation's record
at ``t = 0`` of every name in the model's ``ode_state_names``) and integrates the
overlap ODE from exactly that state on the simulation's time grid.  The deviation is
measured against the replica mean, over every compared overlap:

.. math::

    \Delta = \max_{t,\ \text{overlap},\ \text{index}}
    \bigl|q^{\rm ODE}(t) - \overline{q}^{\rm sim}(t)\bigr| .

Any model that speaks both the ODE protocol (:mod:`popdyn.ode`) and the stepper
protocol (:mod:`popdyn.simulate`) can be compared: multi-index, single-index (with or
without batch reuse), spiked covariance.  The online-SGD correction below is added
when the model's ODE accepts the options ``eta``, ``d`` and ``batch``; otherwise
(spiked covariance) the ODE is the gradient flow and the simulation matches it as
``eta -> 0``.

For online SGD with step :math:`\eta` and batch :math:`B` the ODE includes the
leading-order normalisation term :math:`-\tfrac{\eta(d-1)}{2B} C(u)\,u` (see
:func:`popdyn.ode.integrate`); with :math:`\eta = \delta/d` the remaining deviation is
the replica-mean noise, :math:`O(\sqrt{\delta t/(d R)})`, so it shrinks as ``d`` grows.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from ._validation import check_real
from .trajectory import Trajectory

__all__ = ["Comparison", "compare", "final_directions", "DIRECTION_LEVEL"]

#: A neuron "ends at" ±v_j when its largest |u_j| exceeds this level; below it the
#: neuron is reported as "none" (still near the equator or at a mixed point).
DIRECTION_LEVEL = 0.5
#: Extra linear time points at which the ODE is recorded, so its curve plots smoothly.
PLOT_POINTS = 400


def final_directions(u_final: np.ndarray, *, level: float = DIRECTION_LEVEL) -> list[str]:
    """Label each neuron by the signed index vector it ends closest to: ``"+v2"``, ``"-v1"`` or ``"none"``.

    ``u_final`` has shape ``(N, k)``.
    """
    out = []
    for row in np.atleast_2d(u_final):
        j = int(np.argmax(np.abs(row)))
        if abs(row[j]) < level:
            out.append("none")
        else:
            out.append(f"{'+' if row[j] > 0 else '-'}v{j + 1}")
    return out


@dataclasses.dataclass(frozen=True)
class Comparison:
    """ODE prediction against the finite-d simulation from the same initial state.

    Attributes
    ----------
    ode, simulation : Trajectory
        On the same time grid; ``ode.u`` has one replica, ``simulation.u`` has ``R``.
    max_abs_deviation : float
        :math:`\\max_{t,i,j} |u^{ODE} - \\text{mean}_R u^{sim}|`.
    rms_deviation : float
        Root-mean-square of the same difference over the grid, neurons and indices (a
        less noisy summary than the maximum, used for scaling studies).
    max_standard_error : float
        Largest standard error of the replica mean over the grid (the noise floor of
        ``max_abs_deviation``).
    names : tuple of str
        The compared overlaps (the model's ``ode_state_names``).
    directions_ode, directions_sim : list of str
        Where each neuron ends: ``"+v1"``, ``"-v3"`` or ``"none"`` for the multi-index
        model; for other models ``"escaped"`` when the model's escape observable
        (e.g. ``|m|``) ends at or above :data:`DIRECTION_LEVEL`, else ``"none"``.
    agreement : float
        Fraction of neurons whose end directions agree.
    """

    ode: Trajectory
    simulation: Trajectory
    names: tuple
    max_abs_deviation: float
    rms_deviation: float
    max_standard_error: float
    directions_ode: list
    directions_sim: list
    agreement: float
    meta: dict

    def as_dict(self) -> dict:
        """JSON-friendly summary (the ``popdyn compare --json`` output)."""
        out = {
            "overlaps": list(self.names),
            "max_abs_deviation": self.max_abs_deviation,
            "rms_deviation": self.rms_deviation,
            "max_standard_error": self.max_standard_error,
            "directions_ode": self.directions_ode,
            "directions_sim": self.directions_sim,
            "agreement": self.agreement,
            "t_final": float(self.simulation.t[-1]),
            "time_unit": self.simulation.time_unit,
            "initial": {n: np.asarray(self.ode.overlaps[n][0, 0]).tolist() for n in self.names},
            "final_ode": {n: np.asarray(self.ode.final(n)[0]).tolist() for n in self.names},
            "final_sim_mean": {n: np.asarray(self.simulation.mean(n)[-1]).tolist() for n in self.names},
            "meta": self.meta,
        }
        if "u" in self.names:  # the multi-index fields of earlier versions
            out["u0"] = out["initial"]["u"]
            out["u_final_ode"] = out["final_ode"]["u"]
            out["u_final_sim_mean"] = out["final_sim_mean"]["u"]
        return out


def compare(problem, *, d: int, t_end: float, algorithm: str = "sgd", eta: float | None = None,
            batch: int | None = None, n_samples: int | None = None, replicas: int = 8, init="uniform",
            n_record: int = 60, rng=None, progress=None, ode_options: dict | None = None,
            engine: str = "full") -> Comparison:
    r"""Run the overlap ODE and the simulation from the same start and measure their deviation.

    Parameters
    ----------
    problem : model object
        Any model with an overlap ODE and a registered simulator:
        :class:`~popdyn.models.multi_index.MultiIndexProblem`,
        :class:`~popdyn.models.single_index.SingleIndexProblem`,
        :class:`~popdyn.models.spiked.SpikedProblem`, ...
    d : int
        Ambient dimension of the simulation.
    t_end : float
        Final time, in gradient-flow units (``t = eta * steps`` for the discrete algorithms).
    algorithm : {"sgd", "gd", "gf"}
        Online SGD, multi-pass GD on ``n_samples`` samples, or d-dimensional gradient flow.
    eta : float, optional
        Step size (required for "sgd" and "gd").  For online SGD the high-d scaling is
        ``eta = delta/d``.
    batch, n_samples, replicas, init, n_record, rng, progress, engine
        Passed to :func:`popdyn.simulate`.  All replicas start from the same ``W0``.
    ode_options : dict, optional
        Extra keywords for :func:`popdyn.integrate` (``rtol``, ``atol``, ``method``).

    Returns
    -------
    Comparison
    """
    from .ode import integrate
    from .simulate import simulate

    names = tuple(getattr(problem, "ode_state_names", ()))
    if not names or not hasattr(problem, "ode_rhs"):
        raise TypeError(f"`problem` of type {type(problem).__name__} has no overlap ODE (the popdyn.ode protocol); "
                        "compare needs a model with both an ODE and a simulator.")
    t_end = check_real("t_end", t_end, lower=0.0, lower_open=True)
    sim = simulate(problem, d=d, algorithm=algorithm, eta=eta, t_end=t_end, batch=batch, n_samples=n_samples,
                   replicas=replicas, init=init, same_init=True, n_record=n_record, rng=rng, progress=progress,
                   engine=engine)
    missing = [n for n in names if n not in sim.overlaps]
    if missing:
        raise TypeError(f"the {type(problem).__name__} simulator does not record the ODE state {missing}; "
                        "cannot start the ODE from the simulated initial state.")
    state0 = {n: np.asarray(sim.overlaps[n][0, 0], dtype=float) for n in names}
    opts = dict(ode_options or {})
    corrected = algorithm == "sgd" and _accepts_sgd_options(problem)
    if corrected:
        opts.update(eta=eta, d=d, batch=1 if batch is None else batch)
    # the ODE is recorded on the simulation grid plus a fine linear grid (for smooth plots);
    # deviations are read on the simulation grid itself (no interpolation error)
    t_final = float(sim.t[-1])
    grid = np.union1d(sim.t, np.linspace(0.0, t_final, PLOT_POINTS))
    ode = integrate(problem, state0[names[0]] if len(names) == 1 else state0, t_final, times=grid, **opts)
    if hasattr(problem, "with_overlaps"):  # a d-dim ODE state: add the overlaps the simulation records
        ode = problem.with_overlaps(ode)
    at = np.searchsorted(ode.t, sim.t)
    diffs = [ode.overlaps[n][at, 0] - sim.mean(n) for n in names]
    flat = np.concatenate([np.ravel(x) for x in diffs])
    dev = float(np.max(np.abs(flat)))
    rms = float(np.sqrt(np.mean(flat ** 2)))
    sem = max(float(np.max(sim.std(n))) for n in names) / np.sqrt(max(sim.n_replicas, 1))
    dir_ode, dir_sim = _end_labels(problem, ode, sim, names)
    agree = float(np.mean([a == b for a, b in zip(dir_ode, dir_sim)])) if dir_ode else float("nan")
    meta = {
        "d": d, "algorithm": algorithm, "eta": eta, "batch": batch, "replicas": replicas, "engine": engine,
        "t_end": t_end, "problem": problem.describe(),
        "initial_state": {n: v.tolist() for n, v in state0.items()},
        "ode_correction": (None if not corrected else "eta*(d-1)/(2B) C(u) u" if names == ("u",)
                           else "leading-order online-SGD (eta^2) terms of the model's ODE"),
        "seed": sim.meta.get("seed"), "versions": sim.meta.get("versions"),
    }
    if "u" in state0:
        meta["u0"] = state0["u"].tolist()
    return Comparison(ode=ode, simulation=sim, names=names, max_abs_deviation=dev, rms_deviation=rms,
                      max_standard_error=float(sem), directions_ode=dir_ode, directions_sim=dir_sim,
                      agreement=agree, meta=meta)


def _accepts_sgd_options(problem) -> bool:
    """Whether the model's ODE takes the online-SGD options ``eta``, ``d``, ``batch``."""
    validate = getattr(problem, "ode_validate_options", None)
    if validate is None:
        return False
    params = inspect.signature(validate).parameters
    return all(k in params for k in ("eta", "d", "batch"))


def _end_labels(problem, ode, sim, names):
    """Final per-unit labels of the ODE and of the replica-mean simulation."""
    if names == ("u",):
        return final_directions(ode.final("u")[0]), final_directions(sim.mean("u")[-1])
    observable = getattr(problem, "ode_escape_observable", None)
    if observable is None:
        return [], []

    def labels(state):
        val = np.atleast_1d(np.asarray(observable(state), dtype=float))
        return ["escaped" if v >= DIRECTION_LEVEL else "none" for v in val]

    return (labels({n: np.asarray(ode.final(n)[0]) for n in names}),
            labels({n: np.asarray(sim.mean(n)[-1]) for n in names}))
