r"""Predicted vs simulated: run the ODE and the finite-d simulation from the same start.

:func:`compare` draws one initial state ``W0`` in dimension ``d``, runs ``replicas``
independent simulations from it (they differ only in their data), reads the initial
overlaps (e.g. ``u0 = V W0^T`` for a model whose state is a per-unit vector overlap ``u``;
in general the simulation's record at ``t = 0`` of every name in the model's
``ode_state_names``) and integrates the overlap ODE from exactly that state on the
simulation's time grid.  The deviation is measured against the replica mean, over
every compared overlap:

.. math::

    \Delta = \max_{t,\ \text{overlap},\ \text{index}}
    \bigl|q^{\rm ODE}(t) - \overline{q}^{\rm sim}(t)\bigr| .

Any model that speaks both the ODE protocol (:mod:`popdyn.ode`) and the stepper
protocol (:mod:`popdyn.simulation`) can be compared: every model under
``popdyn/models/`` that registers both.  The online-SGD correction below is added
when the model's ODE accepts the options ``eta``, ``d`` and ``batch``; otherwise
(a model whose ODE is the gradient flow only) the simulation matches it as
``eta -> 0``.

For online SGD with step :math:`\eta` and batch :math:`B` the ODE includes the
leading-order normalisation term :math:`-\tfrac{\eta(d-1)}{2B} C(u)\,u` (see
:func:`popdyn.ode.integrate`); with :math:`\eta = \delta/d` the remaining deviation is
the replica-mean noise, :math:`O(\sqrt{\delta t/(d R)})`, so it shrinks as ``d`` grows.

Verdict
-------
Every compared overlap component :math:`c` (each name in ``ode_state_names`` and each of
its entries, e.g. ``u[i, j]``) at every recorded time :math:`t` gives one point with

.. math::

    \Delta_c(t) = q_c^{\rm ODE}(t) - \overline{q}_c^{\rm sim}(t), \qquad
    \mathrm{SE}_c(t) = s_c(t)/\sqrt{R}, \qquad z_c(t) = \Delta_c(t)/\mathrm{SE}_c(t),

(:math:`s_c` the replica standard deviation, ``ddof=1``).  The point agrees when

.. math::

    |\Delta_c(t)| \le z^\ast\,\mathrm{SE}_c(t) + c_{\rm fin}/\sqrt d ,

and the comparison agrees when every point does.  The two terms:

* **sampling noise**: :math:`z^\ast` is the two-sided Bonferroni critical value of a
  Student t with :math:`R-1` degrees of freedom (the SE is estimated from :math:`R`
  replicas) for :math:`n` tests at family-wise level :data:`FAMILY_ALPHA`:
  :math:`z^\ast = t_{R-1}^{-1}(1 - \alpha/(2n))`, ``n`` = the number of points with a
  non-zero SE.  Bonferroni holds under any correlation; here neighbouring times share
  most of their noise, so the actual false-alarm rate of an exact ODE is below
  :data:`FAMILY_ALPHA`.  With few replicas :math:`z^\ast` is large (R = 8, n = 240:
  9.0; R = 2: ~1.5e4), i.e. the test has little power, and the result says so.
* **finite size**: the ODE is the :math:`d\to\infty` limit.  At finite ``d`` each
  replica fluctuates around it by :math:`O(d^{-1/2})` (online SGD with
  :math:`\eta = \delta/d`: :math:`\sqrt{\delta t/(B d)}`); the replica mean removes these
  fluctuations only to first order, and through the nonlinearity of the drift they
  feed back into the mean at second order, :math:`O(\delta t/(B d))`, amplified near
  unstable directions (saddles, escapes) and joined by the :math:`O(1/d)` terms the
  ODE drops.  The allowance :math:`c_{\rm fin}/\sqrt d` (:data:`C_FINITE`) is the
  conservative envelope of these: it decays no faster than the fluctuation scale
  itself, so an :math:`O(1/d)` bias cannot outgrow it as ``d`` increases.

The Student t assumes Gaussian replicas.  In the first few steps the replica spread is
the sum of a handful of heavy-tailed minibatch gradients (products of Hermite
polynomials), so with few replicas the earliest z-scores are unreliable (measured: the
README's main job, 8 replicas, worst z +4 to +8 always within t <= 0.04, where the
deviation is ~1e-3); there the allowance, not :math:`z^\ast`, decides, which is why
:attr:`Verdict.band_ratio` (the margin) is reported next to the worst z.

When no point has a standard error above :data:`SE_FLOOR` (one replica, or the
deterministic gradient flow whose replicas are identical) no z-test is possible and only
the finite-size allowance applies; :attr:`Verdict.notes` says so.  The final directions
(:attr:`Comparison.agreement`) are kept as extra information; they are not the verdict.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from ._validation import check_real
from .trajectory import Trajectory

__all__ = ["Comparison", "Verdict", "DeviationPoint", "compare", "final_directions", "critical_z",
           "DIRECTION_LEVEL", "FAMILY_ALPHA", "C_FINITE", "SE_FLOOR"]

#: A neuron "ends at" ±v_j when its largest ``|u_j|`` exceeds this level; below it the
#: neuron is reported as "none" (still near the equator or at a mixed point).
DIRECTION_LEVEL = 0.5
#: Extra linear time points at which the ODE is recorded, so its curve plots smoothly.
PLOT_POINTS = 400
#: Family-wise false-alarm rate of the verdict: the probability that an exact ODE is
#: declared "disagree" because of replica noise alone (Bonferroni over all z-tests of one
#: comparison; a researcher reruns a disagreeing comparison, so a 1-in-100 false alarm is
#: acceptable, while 5 % would make "disagree" on a single run uninformative).
FAMILY_ALPHA = 0.01
#: Finite-size allowance c_fin: ``|ODE - mean|`` may exceed the noise band by c_fin / sqrt(d)
#: (overlaps are O(1): cosines, w^T Sigma w ~ 1).  Measured systematic ``|ODE - mean|`` (4 seeds
#: x 64 replicas, the package's default model (arXiv 2411.08798, he3 student and teacher),
#: k = N = 2, escaping from u0 = [[.35,.15],[.1,.4]],
#: eta = 0.5/d, B = 32, t <= 2): 0.034 (d = 64), 0.015 (d = 128), 0.011 (d = 256, at its
#: 3-SE noise floor), i.e. sqrt(d) * bias <= 0.27 (and d * bias ~ 2: the O(1/d) of the
#: module docstring).  0.3 covers that; it gives 0.013 at d = 500 and 0.0067 at d = 2000,
#: far below the O(1) deviations of a wrong teacher or a wrong flow.
C_FINITE = 0.3
#: Standard errors at or below this are rounding noise of identical replicas (1e4 ulps of
#: an O(1) overlap, e.g. S = w^T Sigma w after an exact retraction), not sampling noise:
#: such points get no z-score and only the finite-size allowance applies.
SE_FLOOR = 1e-12
#: Above this critical z the verdict notes the low power of the test (R = 8 replicas and
#: 240 points give 9.0; R = 16, 5.7; R = 4, 38: the SE itself is then known to a factor ~2).
LOW_POWER_Z = 10.0


def critical_z(replicas: int, n_tests: int, alpha: float = FAMILY_ALPHA) -> float:
    r"""Two-sided Bonferroni critical value :math:`t_{R-1}^{-1}(1 - \alpha/(2n))`.

    Student t with ``replicas - 1`` degrees of freedom because the standard error is
    estimated from the replicas; ``nan`` for fewer than two replicas (no SE).

    Examples
    --------
    >>> round(critical_z(8, 240), 2), round(critical_z(10**6, 1, 0.05), 3)
    (9.03, 1.96)
    """
    from scipy.special import stdtrit

    if replicas < 2:
        return float("nan")
    return float(stdtrit(replicas - 1, 1.0 - alpha / (2.0 * max(int(n_tests), 1))))


@dataclasses.dataclass(frozen=True)
class DeviationPoint:
    """One (time, overlap component) point of a comparison.

    ``index`` is the 0-based index inside the overlap (``()`` for a scalar); :attr:`label`
    writes it 1-based, like the CLI's neuron numbers (``u[2,1]``: neuron 2, index vector 1).
    """

    overlap: str
    index: tuple
    t: float
    deviation: float      # ODE - replica mean
    standard_error: float
    z: float              # deviation / standard_error (nan when the SE is zero)
    band: float           # z_crit * SE + c_fin / sqrt(d)

    @property
    def label(self) -> str:
        if not self.index:
            return self.overlap
        return f"{self.overlap}[{','.join(str(i + 1) for i in self.index)}]"

    def as_dict(self) -> dict:
        return {"overlap": self.overlap, "index": list(self.index), "label": self.label, "t": self.t,
                "deviation": self.deviation, "standard_error": self.standard_error,
                "z": _finite_or_none(self.z), "band": self.band}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Statistical verdict of a comparison (module docstring, "Verdict").

    Attributes
    ----------
    agree : bool
        Every (time, overlap) point lies within its band.
    rule : str
        One line stating the rule with the numbers used.
    z_crit : float
        Critical z (nan when no point has a standard error).
    alpha, c_finite, allowance : float
        :data:`FAMILY_ALPHA`, :data:`C_FINITE` and ``c_finite / sqrt(d)``.
    n_points, n_tested : int
        All points, and those with a standard error above :data:`SE_FLOOR` (z-tested).
    fraction_within : float
        Fraction of points within their band.
    worst_z : DeviationPoint or None
        The point with the largest ``|z|`` (None when nothing was z-tested).
    max_deviation : DeviationPoint
        The point with the largest ``|ODE - mean|``.
    band_ratio : float
        Largest ``|ODE - mean| / band`` over the points (> 1 exactly when the verdict is
        "disagree"; the margin of the verdict).
    notes : tuple of str
        E.g. no standard error (only the allowance applies), low power with few replicas.
    """

    agree: bool
    rule: str
    z_crit: float
    alpha: float
    c_finite: float
    allowance: float
    n_points: int
    n_tested: int
    fraction_within: float
    worst_z: DeviationPoint | None
    max_deviation: DeviationPoint
    band_ratio: float
    notes: tuple = ()

    def as_dict(self) -> dict:
        return {"agree": self.agree, "rule": self.rule, "z_crit": _finite_or_none(self.z_crit), "alpha": self.alpha,
                "c_finite": self.c_finite, "allowance": self.allowance, "n_points": self.n_points,
                "n_tested": self.n_tested, "fraction_within": self.fraction_within,
                "worst_z": None if self.worst_z is None else self.worst_z.as_dict(),
                "max_deviation": self.max_deviation.as_dict(), "band_ratio": self.band_ratio,
                "notes": list(self.notes)}


def _finite_or_none(x):
    x = float(x)
    return x if np.isfinite(x) else None


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

    Built by :func:`compare` rather than directly.

    Parameters
    ----------
    ode, simulation, names, max_abs_deviation, rms_deviation, max_standard_error
        As under Attributes.
    directions_ode, directions_sim, agreement
        As under Attributes.
    meta : dict
        The run's parameters (``d``, ``algorithm``, ``eta``, ``batch``, ``replicas``,
        ``engine``, ``t_end``, ``problem``), the shared initial state, the ODE correction used,
        the seed and the versions.
    verdict : Verdict, optional
        As under Attributes (default ``None``).
    unit_overlap : str, optional
        Name of a per-unit vector overlap to draw as one panel per unit (the model's
        ``plot_unit_overlap``); default ``None``.
    plot_names : tuple of str, optional
        The overlaps to draw one panel each (the model's ``plot_overlaps``); default ``()``.

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
        Where each neuron ends: the model's own labels when it provides ``end_labels``
        (e.g. ``"+v1"``, ``"-v3"`` or ``"none"`` for per-unit overlaps ``u`` of shape
        ``(N, k)``); for other models ``"escaped"`` when the model's escape observable
        (e.g. ``|m|``) ends at or above :data:`DIRECTION_LEVEL`, else ``"none"``.
    agreement : float
        Fraction of neurons whose end directions agree (extra information only: it looks
        at the last time and at a coarse label, so it is not the verdict).
    verdict : Verdict
        The statistical verdict over every recorded time and overlap component (module
        docstring, "Verdict").  Per-point values: :meth:`deviation`,
        :meth:`standard_error`, :meth:`z_scores`, :meth:`band`.
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
    verdict: Verdict | None = None
    #: How the model asks to be drawn (its ``plot_unit_overlap`` / ``plot_overlaps``
    #: attributes): a per-unit vector overlap drawn as one panel per unit, and the overlaps
    #: drawn one panel each.
    unit_overlap: str | None = None
    plot_names: tuple = ()

    def _ode_on_sim_grid(self, name: str) -> np.ndarray:
        """The ODE's ``name`` on the simulation grid, shaped like ``simulation.mean(name)``."""
        return _ode_on_grid(self.ode, self.simulation, name)

    def deviation(self, name: str) -> np.ndarray:
        """``ODE - replica mean`` of overlap ``name`` on the simulation grid, shape ``(T, ...)``."""
        return self._ode_on_sim_grid(name) - self.simulation.mean(name)

    def standard_error(self, name: str) -> np.ndarray:
        """Standard error of the replica mean of ``name`` (zeros for one replica)."""
        return self.simulation.std(name) / np.sqrt(max(self.simulation.n_replicas, 1))

    def z_scores(self, name: str) -> np.ndarray:
        """:meth:`deviation` / :meth:`standard_error`; nan where the SE is at most :data:`SE_FLOOR`."""
        se = self.standard_error(name)
        ok = se > SE_FLOOR
        return np.where(ok, self.deviation(name) / np.where(ok, se, 1.0), np.nan)

    def band(self, name: str) -> np.ndarray:
        """Half-width of the verdict band, ``z_crit * SE + c_fin / sqrt(d)``, of any simulated overlap."""
        if self.verdict is None:
            raise ValueError("`verdict` is None: this Comparison was built without one.")
        se = self.standard_error(name)
        z = 0.0 if not np.isfinite(self.verdict.z_crit) else self.verdict.z_crit
        return np.where(se > SE_FLOOR, z * se, 0.0) + self.verdict.allowance

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
            "verdict": None if self.verdict is None else self.verdict.as_dict(),
            "z_scores": {n: _nan_to_none(self.z_scores(n)) for n in self.names},
            "t": self.simulation.t.tolist(),
            "t_final": float(self.simulation.t[-1]),
            "time_unit": self.simulation.time_unit,
            "initial": {n: np.asarray(self.ode.overlaps[n][0, 0]).tolist() for n in self.names},
            "final_ode": {n: np.asarray(self.ode.final(n)[0]).tolist() for n in self.names},
            "final_sim_mean": {n: np.asarray(self.simulation.mean(n)[-1]).tolist() for n in self.names},
            "meta": self.meta,
        }
        for n in self.names:  # flat aliases, e.g. u0, u_final_ode, u_final_sim_mean
            out[f"{n}0"] = out["initial"][n]
            out[f"{n}_final_ode"] = out["final_ode"][n]
            out[f"{n}_final_sim_mean"] = out["final_sim_mean"][n]
        return out


def compare(problem, *, d: int, t_end: float, algorithm: str = "sgd", eta: float | None = None,
            batch: int | None = None, n_samples: int | None = None, replicas: int = 8, init="uniform",
            n_record: int = 60, rng=None, progress=None, ode_options: dict | None = None,
            engine: str = "full") -> Comparison:
    r"""Run the overlap ODE and the simulation from the same start and measure their deviation.

    Parameters
    ----------
    problem : model object
        Any model with an overlap ODE (:mod:`popdyn.ode`) and a registered simulator
        (:mod:`popdyn.simulation`).  Optional hooks, asked with ``getattr``:
        ``simulate_for_comparison(**run) -> Trajectory`` (a simulation in the ODE's own time
        unit, for models whose runs need their own set-up), ``ode_sgd_options(eta, d, batch)
        -> dict`` (the online-SGD options its ODE takes), ``end_labels(state) -> list``,
        ``plot_unit_overlap``, ``plot_overlaps`` and ``ode_correction_label``.
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
    from .simulation import simulate

    names = tuple(getattr(problem, "ode_state_names", ()))
    if not names or not hasattr(problem, "ode_rhs"):
        raise TypeError(f"`problem` of type {type(problem).__name__} has no overlap ODE (the popdyn.ode protocol); "
                        "compare needs a model with both an ODE and a simulator.")
    t_end = check_real("t_end", t_end, lower=0.0, lower_open=True)
    run = dict(d=d, algorithm=algorithm, eta=eta, t_end=t_end, batch=batch, n_samples=n_samples, replicas=replicas,
               init=init, n_record=n_record, rng=rng, progress=progress, engine=engine)
    own = getattr(problem, "simulate_for_comparison", None)  # a model whose simulation needs its own set-up
    sim = own(**run) if own is not None else simulate(problem, same_init=True, **run)
    missing = [n for n in names if n not in sim.overlaps]
    if missing:
        raise TypeError(f"the {type(problem).__name__} simulator does not record the ODE state {missing}; "
                        "cannot start the ODE from the simulated initial state.")
    state0 = {n: np.asarray(sim.overlaps[n][0, 0], dtype=float) for n in names}
    opts = dict(ode_options or {})
    sgd_options = getattr(problem, "ode_sgd_options", None)  # the model says which SGD options its ODE takes
    corrected = algorithm == "sgd" and (sgd_options is not None or _accepts_sgd_options(problem))
    if corrected:
        sgd = dict(eta=eta, d=d, batch=1 if batch is None else batch)
        opts.update(sgd_options(**sgd) if sgd_options is not None else sgd)
    # the ODE is recorded on the simulation grid plus a fine linear grid (for smooth plots);
    # deviations are read on the simulation grid itself (no interpolation error)
    t_final = float(sim.t[-1])
    grid = np.union1d(sim.t, np.linspace(0.0, t_final, PLOT_POINTS))
    ode = integrate(problem, state0[names[0]] if len(names) == 1 else state0, t_final, times=grid, **opts)
    if hasattr(problem, "with_overlaps"):  # a d-dim ODE state: add the overlaps the simulation records
        ode = problem.with_overlaps(ode)
    diffs = [_ode_on_grid(ode, sim, n) - sim.mean(n) for n in names]
    flat = np.concatenate([np.ravel(x) for x in diffs])
    dev = float(np.max(np.abs(flat)))
    rms = float(np.sqrt(np.mean(flat ** 2)))
    sem = max(float(np.max(sim.std(n))) for n in names) / np.sqrt(max(sim.n_replicas, 1))
    verdict = _verdict(sim, names, diffs, d=int(sim.meta.get("d", d)))
    dir_ode, dir_sim = _end_labels(problem, ode, sim, names)
    agree = float(np.mean([a == b for a, b in zip(dir_ode, dir_sim)])) if dir_ode else float("nan")
    meta = {
        "d": d, "algorithm": algorithm, "eta": eta, "batch": batch, "replicas": replicas, "engine": engine,
        "t_end": t_end, "problem": problem.describe(),
        "initial_state": {n: v.tolist() for n, v in state0.items()},
        "ode_correction": (None if not corrected else getattr(
            problem, "ode_correction_label", "leading-order online-SGD (eta^2) terms of the model's ODE")),
        "seed": sim.meta.get("seed"), "versions": sim.meta.get("versions"),
    }
    meta.update({f"{n}0": v.tolist() for n, v in state0.items()})  # e.g. u0
    plot_names = tuple(n for n in getattr(problem, "plot_overlaps", names) if n in ode.overlaps and n in sim.overlaps)
    return Comparison(ode=ode, simulation=sim, names=names, max_abs_deviation=dev, rms_deviation=rms,
                      max_standard_error=float(sem), directions_ode=dir_ode, directions_sim=dir_sim,
                      agreement=agree, meta=meta, verdict=verdict,
                      unit_overlap=getattr(problem, "plot_unit_overlap", None), plot_names=plot_names)


def _ode_on_grid(ode, sim, name):
    """ODE values of ``name`` at the simulation's times, shaped like ``sim.mean(name)``.

    The ODE stores one replica (``(T_ode, 1, ...)``) and may keep a length-1 component axis
    where the simulator records a scalar (e.g. a scalar ``p``: ``(T, 1, 1)`` vs ``(T, R)``); the
    values are reshaped, never broadcast, so time i is only ever compared with time i.
    """
    at = np.searchsorted(ode.t, sim.t)
    vals = np.asarray(ode.overlaps[name])[at, 0]
    shape = sim.mean(name).shape
    if vals.size != int(np.prod(shape)):
        raise TypeError(f"overlap `{name}`: the ODE gives shape {vals.shape[1:]} per time, the simulation "
                        f"{shape[1:]}; cannot compare them.")
    return vals.reshape(shape)


def _verdict(sim, names, diffs, *, d: int) -> Verdict:
    """The statistical verdict (module docstring, "Verdict") from the per-name deviations."""
    R = sim.n_replicas
    t = np.asarray(sim.t, dtype=float)
    T = t.size
    dev_cols, se_cols, where = [], [], []
    for name, diff in zip(names, diffs):
        comp_shape = diff.shape[1:]
        se = sim.std(name) / np.sqrt(max(R, 1))
        dev_cols.append(diff.reshape(T, -1))
        se_cols.append(np.asarray(se, dtype=float).reshape(T, -1))
        where += [(name, tuple(int(i) for i in np.unravel_index(c, comp_shape)) if comp_shape else ())
                  for c in range(int(np.prod(comp_shape, dtype=int)))]
    dev = np.concatenate(dev_cols, axis=1)
    se = np.concatenate(se_cols, axis=1)
    tested = se > SE_FLOOR
    n_tested = int(np.count_nonzero(tested))
    z_crit = critical_z(R, n_tested) if n_tested else float("nan")
    allowance = C_FINITE / np.sqrt(d)
    band = np.where(tested, (0.0 if np.isnan(z_crit) else z_crit) * se, 0.0) + allowance
    z = np.where(tested, dev / np.where(tested, se, 1.0), np.nan)
    within = np.abs(dev) <= band
    ratio = np.abs(dev) / band

    def point(flat_index):
        i, c = np.unravel_index(int(flat_index), dev.shape)
        name, idx = where[c]
        return DeviationPoint(overlap=name, index=idx, t=float(t[i]), deviation=float(dev[i, c]),
                              standard_error=float(se[i, c]) if tested[i, c] else 0.0,
                              z=float(z[i, c]), band=float(band[i, c]))

    worst_z = point(np.nanargmax(np.abs(z))) if n_tested else None
    notes = []
    if not n_tested:
        why = "one replica" if R < 2 else "the replicas are identical (deterministic dynamics)"
        notes.append(f"no standard error ({why}): only the finite-size allowance c/sqrt(d) = {allowance:.2g} applies")
    elif z_crit > LOW_POWER_Z:
        notes.append(f"low power: with {R} replicas z* = {z_crit:.3g}; use more replicas for a sharper test")
    if n_tested:
        rule = (f"|ODE - mean| <= z*SE + c/sqrt(d) at all {dev.size} points; z* = {z_crit:.3g} (Bonferroni, "
                f"alpha = {FAMILY_ALPHA:g} over {n_tested} tests, Student t with {R - 1} dof), "
                f"c/sqrt(d) = {C_FINITE:g}/sqrt({d}) = {allowance:.2g}")
    else:
        rule = (f"|ODE - mean| <= c/sqrt(d) at all {dev.size} points (no standard error); "
                f"c/sqrt(d) = {C_FINITE:g}/sqrt({d}) = {allowance:.2g}")
    return Verdict(agree=bool(np.all(within)), rule=rule, z_crit=float(z_crit), alpha=FAMILY_ALPHA,
                   c_finite=C_FINITE, allowance=float(allowance), n_points=int(dev.size), n_tested=n_tested,
                   fraction_within=float(np.mean(within)), worst_z=worst_z,
                   max_deviation=point(np.argmax(np.abs(dev))), band_ratio=float(np.max(ratio)),
                   notes=tuple(notes))


def _nan_to_none(a):
    """Nested lists with nan replaced by None (strict JSON)."""
    arr = np.asarray(a, dtype=object)
    arr[np.asarray(np.isnan(np.asarray(a, dtype=float)))] = None
    return arr.tolist()


def _accepts_sgd_options(problem) -> bool:
    """Whether the model's ODE takes the online-SGD options ``eta``, ``d``, ``batch``."""
    validate = getattr(problem, "ode_validate_options", None)
    if validate is None:
        return False
    params = inspect.signature(validate).parameters
    return all(k in params for k in ("eta", "d", "batch"))


def _end_labels(problem, ode, sim, names):
    """Final per-unit labels of the ODE and of the replica-mean simulation."""
    labeller = getattr(problem, "end_labels", None)  # e.g. per-unit "+v1" / "none" labels
    if labeller is not None:
        return (labeller({n: np.asarray(ode.final(n)[0]) for n in names}),
                labeller({n: np.asarray(sim.mean(n)[-1]) for n in names}))
    observable = getattr(problem, "ode_escape_observable", None)
    if observable is None:
        return [], []

    def labels(state):
        val = np.atleast_1d(np.asarray(observable(state), dtype=float))
        return ["escaped" if v >= DIRECTION_LEVEL else "none" for v in val]

    return (labels({n: np.asarray(ode.final(n)[0]) for n in names}),
            labels({n: np.asarray(sim.mean(n)[-1]) for n in names}))
