r"""Predicted vs simulated: run the ODE and the finite-d simulation from the same start.

:func:`compare` draws one initial state ``W0`` in dimension ``d``, runs ``replicas``
independent simulations from it (they differ only in their data), reads the initial
overlaps ``u0 = V W0^T`` and integrates the overlap ODE from exactly that ``u0`` on the
simulation's time grid.  The deviation is measured against the replica mean:

.. math::

    \Delta = \max_{t, i, j} \bigl|u^{\rm ODE}_{ij}(t) - \overline{u}^{\rm sim}_{ij}(t)\bigr| .

For online SGD with step :math:`\eta` and batch :math:`B` the ODE includes the
leading-order normalisation term :math:`-\tfrac{\eta(d-1)}{2B} C(u)\,u` (see
:func:`popdyn.ode.integrate`); with :math:`\eta = \delta/d` the remaining deviation is
the replica-mean noise, :math:`O(\sqrt{\delta t/(d R)})`, so it shrinks as ``d`` grows.
"""

from __future__ import annotations

import dataclasses

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
    directions_ode, directions_sim : list of str
        Where each neuron ends (``"+v1"``, ``"-v3"``, ``"none"``) in each.
    agreement : float
        Fraction of neurons whose end directions agree.
    """

    ode: Trajectory
    simulation: Trajectory
    max_abs_deviation: float
    rms_deviation: float
    max_standard_error: float
    directions_ode: list
    directions_sim: list
    agreement: float
    meta: dict

    def as_dict(self) -> dict:
        """JSON-friendly summary (the ``popdyn compare --json`` output)."""
        return {
            "max_abs_deviation": self.max_abs_deviation,
            "rms_deviation": self.rms_deviation,
            "max_standard_error": self.max_standard_error,
            "directions_ode": self.directions_ode,
            "directions_sim": self.directions_sim,
            "agreement": self.agreement,
            "t_final": float(self.simulation.t[-1]),
            "time_unit": self.simulation.time_unit,
            "u0": np.asarray(self.meta.get("u0")).tolist(),
            "u_final_ode": self.ode.final("u")[0].tolist(),
            "u_final_sim_mean": self.simulation.mean("u")[-1].tolist(),
            "meta": self.meta,
        }


def compare(problem, *, d: int, t_end: float, algorithm: str = "sgd", eta: float | None = None,
            batch: int | None = None, n_samples: int | None = None, replicas: int = 8, init="uniform",
            n_record: int = 60, rng=None, progress=None, ode_options: dict | None = None) -> Comparison:
    r"""Run the overlap ODE and the simulation from the same start and measure their deviation.

    Parameters
    ----------
    problem : MultiIndexProblem
        Model (student, teacher, Gram ``G``, number of neurons).
    d : int
        Ambient dimension of the simulation.
    t_end : float
        Final time, in gradient-flow units (``t = eta * steps`` for the discrete algorithms).
    algorithm : {"sgd", "gd", "gf"}
        Online SGD, multi-pass GD on ``n_samples`` samples, or d-dimensional gradient flow.
    eta : float, optional
        Step size (required for "sgd" and "gd").  For online SGD the high-d scaling is
        ``eta = delta/d``.
    batch, n_samples, replicas, init, n_record, rng, progress
        Passed to :func:`popdyn.simulate`.  All replicas start from the same ``W0``.
    ode_options : dict, optional
        Extra keywords for :func:`popdyn.integrate` (``rtol``, ``atol``, ``method``).

    Returns
    -------
    Comparison
    """
    from .ode import integrate
    from .simulate import simulate

    t_end = check_real("t_end", t_end, lower=0.0, lower_open=True)
    sim = simulate(problem, d=d, algorithm=algorithm, eta=eta, t_end=t_end, batch=batch, n_samples=n_samples,
                   replicas=replicas, init=init, same_init=True, n_record=n_record, rng=rng, progress=progress)
    u0 = np.asarray(sim.meta["u0"], dtype=float)
    opts = dict(ode_options or {})
    if algorithm == "sgd":
        opts.update(eta=eta, d=d, batch=1 if batch is None else batch)
    # the ODE is recorded on the simulation grid plus a fine linear grid (for smooth plots);
    # deviations are read on the simulation grid itself (no interpolation error)
    t_final = float(sim.t[-1])
    grid = np.union1d(sim.t, np.linspace(0.0, t_final, PLOT_POINTS))
    ode = integrate(problem, u0, t_final, times=grid, **opts)
    u_ode = ode.overlaps["u"][np.searchsorted(ode.t, sim.t), 0]
    u_sim = sim.mean("u")
    dev = float(np.max(np.abs(u_ode - u_sim)))
    rms = float(np.sqrt(np.mean((u_ode - u_sim) ** 2)))
    sem = float(np.max(sim.std("u"))) / np.sqrt(max(sim.n_replicas, 1))
    dir_ode = final_directions(ode.final("u")[0])
    dir_sim = final_directions(u_sim[-1])
    agree = float(np.mean([a == b for a, b in zip(dir_ode, dir_sim)]))
    meta = {
        "d": d, "algorithm": algorithm, "eta": eta, "batch": batch, "replicas": replicas,
        "t_end": t_end, "u0": u0.tolist(), "problem": problem.describe(),
        "ode_correction": "eta*(d-1)/(2B) C(u) u" if algorithm == "sgd" else None,
        "seed": sim.meta.get("seed"), "versions": sim.meta.get("versions"),
    }
    return Comparison(ode=ode, simulation=sim, max_abs_deviation=dev, rms_deviation=rms, max_standard_error=float(sem),
                      directions_ode=dir_ode, directions_sim=dir_sim, agreement=agree, meta=meta)
