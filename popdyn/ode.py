r"""Generic overlap-ODE engine: :func:`integrate` any model that speaks the ODE protocol.

The engine knows nothing about a particular model.  It packs the model's named state
arrays into one flat vector, steps a :mod:`scipy.integrate` solver (``DOP853`` by
default), records the state on a time grid, detects events vectorised over units
(neurons), and returns a :class:`~popdyn.trajectory.Trajectory`.

The ODE protocol
----------------
A model object (a "problem") plugs in by providing:

Required

``ode_model : str``
    Name recorded in ``Trajectory.model`` (e.g. ``"relax"`` in the example of
    :func:`integrate`).
``ode_state_names : tuple of str``
    Names of the state arrays, e.g. ``("u",)`` or ``("M", "Q", "a")``.  Each becomes
    ``Trajectory.overlaps[name]`` with shape ``(n_times, 1, *shape)``.
``ode_initial_state(state0) -> dict[str, ndarray]``
    Validate the user's initial state (array or dict) and return float arrays of fixed
    shapes, keyed by ``ode_state_names``.  Raise ``ValueError`` on bad input.
``ode_rhs(t, state, **options) -> dict[str, ndarray]``
    Time derivatives, same keys and shapes.  ``state`` holds read-only *views* into the
    solver's vector: do not modify them; return new arrays.  Vectorise over units; the
    engine calls this at every solver stage.
``describe() -> dict``
    JSON-friendly parameters, stored in ``meta["problem"]``.

Optional (the engine checks with ``hasattr``)

``ode_validate_options(**options) -> dict``
    Validate and normalise the options once (``eta``, ``d``, ``batch`` and any model
    specific ones passed through ``options=``); the result is what ``ode_rhs`` receives
    (it may add precomputed entries).  Without it the options are passed as given.
``ode_time_unit(**options) -> str``
    Default ``"gradient-flow time t"``.
``ode_escape_observable(state) -> ndarray (n_units,)``
    Needed for ``escape_level``: a per-unit scalar (for neurons, :math:`\max_j |u_j|`).
``ode_escape_bound() -> (float, str)``
    The largest value the escape observable can take and why; a larger
    ``escape_level`` (never reached) is rejected with ``ValueError``.
``ode_unit_speed(deriv) -> ndarray (n_units,)``
    Per-unit speed used by ``convergence_tol``.  Default: the 2-norm of the whole
    derivative vector (one unit).
``ode_check_state(state) -> str or None``
    Return a reason when an accepted state has left the model's domain (e.g. drifted
    off the sphere); the engine raises :class:`~popdyn.errors.NumericalError`.
``ode_jac_sparsity(state) -> sparse matrix``
    Jacobian sparsity pattern for ``method="Radau"`` / ``"BDF"`` (block diagonal for
    decoupled neurons), so finite-difference Jacobians stay cheap.

Each model (e.g. one with a per-unit state ``u`` of shape ``(N, k)``, or one with state
``(M, Q, a)``) implements these in its own module under ``popdyn/models/`` and never
touches this file.

Events
------
* **escape** (``escape_level``): unit ``i`` escapes at the first time its observable
  reaches ``escape_level`` (upward crossing; 0 if it starts at or above the level).
  ``Trajectory.events["escape"]`` has shape ``(n_units,)``, NaN for units that have not
  escaped by the end.  The crossing is located on the solver's dense output with
  :func:`scipy.optimize.brentq`.  The event is **terminal once every unit has
  escaped** (pass ``escape_terminal=False`` to run on to ``t_end``): with many neurons
  an early stop at the first escape would cut the others short.
* **convergence** (``convergence_tol``): fires when the largest per-unit speed crosses
  ``convergence_tol`` *from above* (located by root finding).  It is terminal.  A
  start that is already slower than the tolerance (near the equator saddle, say) must
  speed up first, so a slow start is not mistaken for convergence.
  ``Trajectory.events["convergence"]`` is ``[t]`` or ``[nan]``.

* **user events** (``events=[...]``): callables ``event(t, state) -> float`` as in
  :func:`scipy.integrate.solve_ivp`, with ``state`` the model's dict of named arrays
  (read-only views, as ``ode_rhs`` receives it).  Optional attributes ``terminal``
  (``bool``, or an ``int`` count: stop at that occurrence) and ``direction`` (``+1``:
  only upward zero crossings, ``-1``: only downward, ``0``: both).  A crossing is a sign
  change of the event value between the ends of a solver step (the ``solve_ivp`` rule;
  the start itself is never an event); it is located on the dense output with
  :func:`scipy.optimize.brentq`.  ``Trajectory.events[name]`` is the array of crossing
  times (``name`` = the function's ``__name__``, or ``"event_i"`` for a lambda).

After a terminal event the grid stops at the last grid time before the event, and the
event time itself is appended as the final point (``status = 1``).
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from ._io import versions
from ._progress import Progress
from ._validation import check_choice, check_int, check_real
from .errors import NumericalError
from .trajectory import Trajectory

#: Absolute tolerance of :func:`integrate` when neither the caller nor the problem
#: (``ode_default_atol``) sets one: overlaps are O(1), so 1e-12 with rtol 1e-10 keeps the
#: solver's local error near 1e-10 relative.
DEFAULT_ATOL = 1e-12

__all__ = ["integrate", "METHODS", "LOG_DECADES", "time_grid"]

#: scipy.integrate solver classes accepted by ``method``.
METHODS = ("DOP853", "RK45", "RK23", "Radau", "BDF", "LSODA")
#: The default log grid spans this many decades below ``t_end`` (plus ``t = 0``): the
#: escape from the equator takes ``Theta(d^{p/2-1})`` while the first moves are fast.
LOG_DECADES = 6
#: Resolution of the ODE's progress output: thousandths of ``t_end``.
PROGRESS_TICKS = 1000
#: Names the engine's own events use in ``Trajectory.events`` (user events may not take them).
RESERVED_EVENTS = ("escape", "convergence")
_REQUIRED = ("ode_model", "ode_state_names", "ode_initial_state", "ode_rhs", "describe")
#: Explicit methods and the length of their real stability interval: the step of an
#: explicit Runge--Kutta method is stable for ``h * lambda`` in ``[-boundary, 0]`` on the
#: negative real axis (Hairer & Wanner, *Solving ODEs II*, §IV.2: DOPRI5 3.3, DOP853 6.0;
#: Bogacki--Shampine 2.5).
EXPLICIT_STABILITY = {"DOP853": 6.0, "RK45": 3.3, "RK23": 2.5}
#: Stiffness switch (``switch_stiff=True``): an explicit run is tested for stiffness
#: only after this many steps, so short non-stiff runs never change solver (at rtol 1e-10
#: the non-stiff runs of the tests and examples take a few hundred steps).
STIFF_MIN_STEPS = 2000
#: ... and then every this many steps (each test costs ``STIFF_POWER_ITERS + 1`` right-hand
#: side evaluations, < 1% of the DOP853 work between tests).
STIFF_CHECK_EVERY = 100
#: Power iterations for the largest Jacobian eigenvalue modulus ``rho`` (finite differences).
STIFF_POWER_ITERS = 8
#: The step is stability-limited when ``h * rho`` exceeds this fraction of the method's
#: stability interval (accuracy-limited steps at rtol <= 1e-6 have ``h * rho`` well below 1).
STIFF_FRACTION = 0.5
#: Consecutive positive tests before switching (one test can catch a transient).
STIFF_CONFIRM = 3
#: Implicit method used after the switch (L-stable, order 5, dense output).
STIFF_METHOD = "Radau"


def time_grid(t_end: float, n_times: int = 200, times="log") -> np.ndarray:
    r"""Recording grid on :math:`[0, t_\mathrm{end}]`.

    ``"log"``: ``0`` then ``n_times - 1`` log-spaced points from
    :math:`t_\mathrm{end} 10^{-6}` (:data:`LOG_DECADES`) to :math:`t_\mathrm{end}`.
    ``"linear"``: ``n_times`` equispaced points.  An array: validated (1-d, finite,
    non-decreasing, inside :math:`[0, t_\mathrm{end}]`) and returned.

    Examples
    --------
    >>> time_grid(100.0, 4)
    array([0.e+00, 1.e-04, 1.e-01, 1.e+02])
    """
    t_end = check_real("t_end", t_end, lower=0.0, lower_open=True)
    if isinstance(times, str):
        kind = check_choice("times", times, ("log", "linear"))
        n_times = check_int("n_times", n_times, minimum=2)
        if kind == "linear":
            return np.linspace(0.0, t_end, n_times)
        return np.concatenate([[0.0], np.geomspace(t_end * 10.0 ** -LOG_DECADES, t_end, n_times - 1)])
    grid = np.asarray(times, dtype=float)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
        raise ValueError(f"`times` must be 'log', 'linear' or a non-empty 1-d finite array, got {times!r}.")
    if np.any(np.diff(grid) < 0):
        raise ValueError("`times` must be non-decreasing.")
    if grid[0] < 0 or grid[-1] > t_end:
        raise ValueError(f"`times` must lie in [0, t_end = {t_end}], got [{grid[0]}, {grid[-1]}].")
    return grid


def _solver_class(method: str):
    from scipy import integrate as si

    return getattr(si, method)


class _LazyDense:
    """The solver's dense output over the last step, built on first use."""

    def __init__(self, solver):
        self._solver = solver
        self._sol = None

    def __call__(self, t):
        if self._sol is None:
            self._sol = self._solver.dense_output()
        return self._sol(t)

    def many(self, ts) -> list:
        return list(np.array(self(np.asarray(ts)), ndmin=2).T.copy())


def _crossing(h, a: float, b: float) -> float:
    """First root of ``h`` on ``[a, b]`` given ``h(a) < 0 <= h(b)`` up to rounding."""
    from scipy.optimize import brentq

    ha, hb = h(a), h(b)
    if ha >= 0:  # rounding of the dense output at the left end
        return float(a)
    if hb < 0:
        return float(b)
    return float(brentq(h, a, b, xtol=1e-14 * max(1.0, abs(b)), rtol=4.0 * np.finfo(float).eps))


def _check_events(events) -> list:
    """Validate user events: ``[(name, fun, max_count, direction)]`` (``max_count`` = ``inf``
    for a non-terminal event)."""
    if events is None:
        return []
    if callable(events):
        events = [events]
    if isinstance(events, (str, bytes, dict)) or not hasattr(events, "__iter__"):
        raise TypeError(f"`events` must be a callable or a sequence of callables, got {type(events).__name__}.")
    out, seen = [], set()
    for i, ev in enumerate(events):
        if not callable(ev):
            raise TypeError(f"`events[{i}]` must be callable as event(t, state) -> float, got {repr(ev)[:80]}.")
        name = getattr(ev, "__name__", None)
        if not isinstance(name, str) or not name.isidentifier():  # lambdas ("<lambda>"), partials
            name = f"event_{i}"
        if name in RESERVED_EVENTS or name in seen:
            why = "is reserved for the engine's own event" if name in RESERVED_EVENTS else "is used twice"
            raise ValueError(f"`events[{i}]`: the name {name!r} {why}; give the function another __name__.")
        seen.add(name)
        terminal = getattr(ev, "terminal", False)
        if isinstance(terminal, (bool, np.bool_)):
            count = 1 if terminal else math.inf
        elif isinstance(terminal, numbers.Integral) and terminal >= 0:
            count = int(terminal) if terminal > 0 else math.inf
        else:
            raise ValueError(f"`events[{i}].terminal` ({name}) must be a bool or an int >= 0 (stop at that "
                             f"occurrence), got {repr(terminal)[:60]}.")
        direction = getattr(ev, "direction", 0)
        if isinstance(direction, (bool, np.bool_)) or not isinstance(direction, numbers.Real) or \
                direction not in (-1, 0, 1):
            raise ValueError(f"`events[{i}].direction` ({name}) must be -1, 0 or 1, got {repr(direction)[:60]}.")
        out.append((name, ev, count, int(direction)))
    return out


def _user_events(value, g_old, dense, t_old, t_new, y_new, direction, count, max_count, times):
    """Crossings of the user events in the step ``[t_old, t_new]`` by the rules of
    :func:`scipy.integrate.solve_ivp`: an event is active when its value changes sign
    between the step's ends (``g_old <= 0 <= g_new`` upward, ``g_old >= 0 >= g_new``
    downward) in an allowed direction; each active root is located on the dense output;
    when an event reaches its terminal count, the run stops at the earliest such root and
    later roots of the step are dropped.  Appends to ``times`` and increments ``count`` in
    place; returns ``(stop time or None, index of the stopping event or None, g_new)``."""
    g_new = np.array([value(k, t_new, y_new) for k in range(g_old.size)])
    up = (g_old <= 0) & (g_new >= 0)
    down = (g_old >= 0) & (g_new <= 0)
    active = np.flatnonzero((up & (direction > 0)) | (down & (direction < 0)) | ((up | down) & (direction == 0)))
    if not active.size:
        return None, None, g_new
    roots = []
    for k in active:
        sign = 1.0 if g_new[k] >= g_old[k] else -1.0  # orient so that h(t_old) <= 0 <= h(t_new)
        roots.append(_crossing(lambda t, k=k, sign=sign: sign * value(k, t, dense(t)), t_old, t_new))
    roots = np.array(roots)
    count[active] += 1
    stop = stopper = None
    done = count[active] >= max_count[active]
    if done.any():
        order = np.argsort(roots, kind="stable")
        active, roots, done = active[order], roots[order], done[order]
        first = int(np.flatnonzero(done)[0])
        active, roots = active[:first + 1], roots[:first + 1]
        stop, stopper = float(roots[-1]), int(active[-1])
    for k, r in zip(active, roots):
        times[k].append(float(r))
    return stop, stopper, g_new


def _jacobian_radius(fun, t: float, y: np.ndarray, f: np.ndarray) -> float:
    """Largest eigenvalue modulus of ``d fun / d y`` at ``(t, y)`` by power iteration on
    finite-difference Jacobian-vector products (deterministic start vector)."""
    n = y.size
    v = np.cos(1.0 + np.arange(n) * 2.399963)  # fixed, not aligned with any axis
    v /= np.linalg.norm(v)
    eps = math.sqrt(np.finfo(float).eps) * max(1.0, float(np.linalg.norm(y)))
    rho = 0.0
    for _ in range(STIFF_POWER_ITERS):
        jv = (fun(t, y + eps * v) - f) / eps
        norm = float(np.linalg.norm(jv))
        if not math.isfinite(norm) or norm == 0.0:
            return rho if math.isfinite(norm) else math.inf
        rho, v = norm, jv / norm
    return rho


def integrate(problem, u0, t_end, *, method: str = "DOP853", rtol: float = 1e-10, atol: float | None = None,
              n_times: int = 200, times="log", escape_level: float | None = None,
              escape_terminal: bool = True, convergence_tol: float | None = None,
              eta: float | None = None, d: int | None = None, batch: int = 1,
              max_step: float = np.inf, options: dict | None = None, switch_stiff: bool = True,
              max_steps: int | None = None, progress=None, events=None) -> Trajectory:
    r"""Integrate a model's overlap ODE from ``u0`` to ``t_end`` (or a terminal event).

    Parameters
    ----------
    problem : model object
        Anything implementing the ODE protocol (module docstring), e.g. a model's
        problem class (see its module under ``popdyn/models/``).
    u0 : array_like or dict
        Initial state, as the model accepts it (its ``ode_initial_state``), e.g. overlaps
        ``u = V w`` of shape ``(N, k)`` or ``(k,)``, validated against the unit sphere
        (:math:`u_0^\top G^+ u_0 \le 1`).
    t_end : float
        Final time (> 0), in the trajectory's time unit.
    method : {"DOP853", "RK45", "RK23", "Radau", "BDF", "LSODA"}
        :mod:`scipy.integrate` solver.
    rtol, atol : float
        Solver tolerances (defaults suit tests: ODE errors ~1e-10 relative).  ``atol=None``
        takes the problem's ``ode_default_atol`` if it declares one (a model whose right-hand
        side is not smooth enough for 1e-12, e.g. ReLU's committee integrals near aligned
        fields), else :data:`DEFAULT_ATOL`.
    n_times : int
        Number of recorded times for ``times="log"`` / ``"linear"``.
    times : {"log", "linear"} or array_like
        Recording grid, see :func:`time_grid`.  The default log grid (with ``t = 0``)
        resolves escapes from the equator that span decades.
    escape_level : float, optional
        Record per-unit escape times (see module docstring), terminal once all escaped
        unless ``escape_terminal=False``.
    escape_terminal : bool
        With ``escape_level``: stop (``status = 1``) once every unit has escaped (default
        ``True``); ``False`` records the escape times and runs on to ``t_end``.
    convergence_tol : float, optional
        Stop (``status = 1``) when the largest per-unit speed drops below this.
    eta, d, batch : optional
        Online-SGD correction for step ``eta``, dimension ``d`` and minibatch ``batch``;
        the time unit becomes ``t = eta * steps``.  See Notes.
    max_step : float
        Largest solver step.
    options : dict, optional
        Extra model-specific options passed to ``ode_rhs`` (e.g.
        ``noise_nodes=(outer, inner)`` for the quadrature of the noise moment
        :math:`C(u)`; the resolved ``noise_method``/``noise_nodes`` go to ``meta``).
    max_steps : int, optional
        Budget of solver steps: beyond it :class:`NumericalError` reports how far the
        integration got (``None``: no limit; the CLI passes ``--max-ode-steps``).
    progress : bool or None
        Progress on stderr (:class:`popdyn._progress.Progress`, in thousandths of
        ``t_end``): ``None`` shows it once the integration has run for a few seconds,
        ``False`` never.
    switch_stiff : bool
        With an explicit ``method`` (DOP853, RK45, RK23): when, after ``STIFF_MIN_STEPS``
        steps, the step size is limited by stability (``h * rho`` above ``STIFF_FRACTION``
        of the method's stability interval on ``STIFF_CONFIRM`` consecutive tests, ``rho``
        the largest Jacobian eigenvalue modulus), continue with ``STIFF_METHOD`` (Radau)
        from the current state and the same tolerances.  The switch time is in
        ``meta["solver"]["switched"]``.  Stiffness appears e.g. when the online-SGD
        contraction :math:`\eta^2 d\,C/B` is large and the state sits at a strongly
        attracting fixed point for a long ``t_end``: DOP853 then needs ``~ rho * t_end / 6``
        steps (millions) for a trajectory that does not move.  ``False`` keeps ``method``.
    events : callable or sequence of callables, optional
        User events ``event(t, state) -> float`` (``state``: the model's dict of named
        arrays, read-only), with optional attributes ``terminal`` (bool or int count) and
        ``direction`` (-1, 0, +1), as in :func:`scipy.integrate.solve_ivp`; see the module
        docstring.  Crossing times go to ``Trajectory.events[event.__name__]``
        (``"event_i"`` for a lambda).  A terminal event that fires before the engine's own
        terminal events stops the run (``status = 1``).

    Returns
    -------
    Trajectory
        ``overlaps[name]`` of shape ``(n_rec, 1, *shape)`` for each state array
        (e.g. ``"u"`` with shape ``(n_rec, 1, N, k)``); ``events``;
        ``meta`` with ``problem``, ``solver`` (method, tolerances, ``nfev``, steps),
        ``options`` and ``versions``.

    Raises
    ------
    ValueError, TypeError
        Bad input (the message names the argument).
    NumericalError
        The solver failed, the state became non-finite, or the model reports that the
        state left its domain; the message gives the time reached and what to try.

    Notes
    -----
    **Online-SGD correction** (a spherical student with per-unit overlaps ``u = V w``
    against ``k`` index vectors ``V``, as in arXiv 2411.08798; the same reasoning
    applies to any spherical model).  One step of spherical online SGD with step :math:`\eta` and a
    minibatch of :math:`B` fresh samples is

    .. math::

        w \leftarrow \frac{w - \eta\hat g}{\|w - \eta\hat g\|}, \qquad
        \hat g = P\,\frac1B\sum_{b=1}^B \bigl(-y_b\,\sigma'(w\cdot x_b)\, x_b\bigr),
        \quad P = I - ww^\top .

    Since :math:`\hat g \perp w`, :math:`\|w - \eta\hat g\|^{-1} = 1 - \tfrac{\eta^2}{2}
    \|\hat g\|^2 + O(\eta^4\|\hat g\|^4)`, so :math:`u' = (u - \eta V\hat g)(1 -
    \tfrac{\eta^2}{2}\|\hat g\|^2 + \dots)`.  With :math:`E[V\hat g] = -(G g(u) - u\,
    u^\top g(u))` and :math:`E\|\hat g\|^2 = (d-1) C(u)/B + O(1)`,
    :math:`C(u) = E[f^*(x)^2\sigma'(w\cdot x)^2]` (the :math:`O(1)` collects the
    squared mean gradient and the ``k`` directions of span(V)), the mean increment per
    unit time :math:`t = \eta\cdot\mathrm{steps}` is

    .. math::

        \dot u = G g(u) - u\,(u^\top g(u)) - \frac{\eta (d-1)}{2B}\, C(u)\, u .

    Terms of order :math:`\eta` (not :math:`\eta d`) per unit time are dropped; with
    :math:`\eta = \delta/d` they vanish as :math:`d\to\infty`.  Fluctuations (the
    diffusion) are not modelled: this is the mean path.  For one index it is the BAGJ increment
    (theory/bagj2021/equations.md, "Mean increment of spherical online SGD"), :math:`E[\Delta m] = \eta(1-m^2)\Phi'(m) - \tfrac{\eta^2}{2}(d-1)\,m\,C(m)`.
    ``tests/test_ode.py`` checks the one-step mean increment of a d = 400 simulation
    against it (bounded activations, within 4 SE; dropping the term misses by > 10 SE).

    *Validity.*  The expansion of the normalisation needs
    :math:`\eta^2\|\hat g\|^2 \approx \eta^2 d\, y^2\sigma'(z)^2/B \ll 1` on the
    samples that carry :math:`C`.  For bounded activations (erf, tanh) this holds as
    soon as :math:`\eta^2 d \ll 1`.  For polynomial activations :math:`y^2\sigma'^2`
    is heavy-tailed: for σ = σ* = h_3 at u ≈ (0.66, 0.42), 87% of C = 44.7 comes
    from samples with :math:`y^2\sigma'^2 > 800`, and at η = 1/d, d = 400, B = 2 a
    simulation contracts like C ≈ 13, not 44.7 (d = 1000: 17).  The correction is then
    an overestimate unless :math:`\eta^2 d \cdot 10^3/B \ll 1`.  The BAGJ step
    :math:`\eta \propto d^{-p/2}` (p >= 3) is deep inside that regime.

    References
    ----------
    B. Şimşek, A. Bendjeddou, D. Hsu, arXiv 2411.08798 (u-ODE); G. Ben Arous,
    R. Gheissari, A. Jagannath, JMLR 2021 (spherical online SGD and its normalisation
    term).

    Examples
    --------
    A self-contained problem, dm/dt = 1 - m, whose escape time to ``|m| = 0.9`` from
    ``m = 0`` is ``ln 10``:

    >>> import dataclasses
    >>> import numpy as np
    >>> @dataclasses.dataclass(frozen=True)
    ... class Relax:
    ...     ode_model = "relax"
    ...     ode_state_names = ("m",)
    ...     def ode_initial_state(self, state0):
    ...         return {"m": np.asarray(state0, dtype=float).reshape(1)}
    ...     def ode_rhs(self, t, state, **options):
    ...         return {"m": 1.0 - state["m"]}
    ...     def ode_escape_observable(self, state):
    ...         return np.abs(state["m"])
    ...     def describe(self):
    ...         return {"model": "relax"}
    >>> traj = integrate(Relax(), 0.0, 100.0, escape_level=0.9, n_times=20)
    >>> traj.m.shape[1:], traj.status, traj.time_unit
    ((1, 1), 1, 'gradient-flow time t')
    >>> round(float(traj.events["escape"][0]), 4)
    2.3026
    """
    missing = [name for name in _REQUIRED if not hasattr(problem, name)]
    if missing:
        raise TypeError(
            f"`problem` ({type(problem).__name__}) does not implement the ODE protocol; missing "
            f"{', '.join(missing)} (see popdyn.ode)."
        )
    method = check_choice("method", method, METHODS)
    if max_steps is not None:
        max_steps = check_int("max_steps", max_steps, minimum=1)
    if not isinstance(switch_stiff, (bool, np.bool_)):
        raise TypeError(f"`switch_stiff` must be True or False, got {switch_stiff!r}.")
    rtol = check_real("rtol", rtol, lower=0.0, lower_open=True)
    if atol is None:
        atol = getattr(problem, "ode_default_atol", DEFAULT_ATOL)
    atol = check_real("atol", atol, lower=0.0, lower_open=True)
    t_end = check_real("t_end", t_end, lower=0.0, lower_open=True)
    max_step = float(max_step)
    if not max_step > 0:
        raise ValueError(f"`max_step` must be > 0, got {max_step}.")
    grid = time_grid(t_end, n_times, times)
    if escape_level is not None:
        escape_level = check_real("escape_level", escape_level)
        if not hasattr(problem, "ode_escape_observable"):
            raise ValueError(f"`escape_level` needs a model with `ode_escape_observable`; "
                             f"{type(problem).__name__} has none.")
        if hasattr(problem, "ode_escape_bound"):  # optional: the largest value the observable can take
            bound, why = problem.ode_escape_bound()
            if escape_level > bound:
                raise ValueError(f"`escape_level` must be <= {bound:.6g} ({why}), got {float(escape_level):g}.")
    if convergence_tol is not None:
        convergence_tol = check_real("convergence_tol", convergence_tol, lower=0.0, lower_open=True)
    user_events = _check_events(events)

    opts = {"eta": eta, "d": d, "batch": batch, **(options or {})}
    if hasattr(problem, "ode_validate_options"):
        opts = problem.ode_validate_options(**opts)
    time_unit = problem.ode_time_unit(**opts) if hasattr(problem, "ode_time_unit") else "gradient-flow time t"

    # -- state packing --------------------------------------------------------------------
    names = tuple(problem.ode_state_names)
    state0 = problem.ode_initial_state(u0)
    if set(state0) != set(names):
        raise TypeError(f"{type(problem).__name__}.ode_initial_state returned keys {sorted(state0)}, "
                        f"expected {list(names)}.")
    shapes = [np.shape(state0[n]) for n in names]
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    y0 = np.concatenate([np.asarray(state0[n], dtype=float).ravel() for n in names])

    def unpack(y):
        return {n: y[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i, n in enumerate(names)}

    def fun(t, y):
        der = problem.ode_rhs(t, unpack(y), **opts)
        if len(names) == 1:
            return np.asarray(der[names[0]], dtype=float).ravel()
        return np.concatenate([np.asarray(der[n], dtype=float).ravel() for n in names])

    def speed(t, y, f=None):
        f = fun(t, y) if f is None else f
        if hasattr(problem, "ode_unit_speed"):
            return float(np.max(problem.ode_unit_speed(unpack(f))))
        return float(np.linalg.norm(f))

    def observable(y):
        return np.asarray(problem.ode_escape_observable(unpack(y)), dtype=float)

    def event_value(k, t, y):
        try:
            return float(user_events[k][1](t, unpack(y)))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"`events` {user_events[k][0]!r} must return one float: {str(exc)[:100]}") from exc

    # -- solver -----------------------------------------------------------------------------
    fsal = method in ("DOP853", "RK45", "RK23")  # these keep f(t, y) at the step end in `solver.f`
    extra = {}
    if method in ("Radau", "BDF") and hasattr(problem, "ode_jac_sparsity"):
        extra["jac_sparsity"] = problem.ode_jac_sparsity(state0)
    advice = ("Try a smaller `rtol`/`atol`, method='Radau' (stiff problems), a smaller `max_step`, "
              "or a shorter `t_end`")

    rec_t, rec_y = [], []
    next_idx = 0  # next grid index to record
    n_steps = 0
    stiff_hits, switched, nfev_before = 0, None, 0
    check_stiff = switch_stiff and method in EXPLICIT_STABILITY
    status, message = 0, f"Reached t_end = {t_end:g}."
    esc_times = None
    conv_time = None if convergence_tol is None else math.nan
    ev_times = [[] for _ in user_events]
    ev_count = np.zeros(len(user_events))
    ev_max = np.array([e[2] for e in user_events], dtype=float)
    ev_dir = np.array([e[3] for e in user_events], dtype=int)
    with contextlib.ExitStack() as stack:
        stack.enter_context(np.errstate(over="ignore", invalid="ignore", divide="ignore"))
        f0 = fun(0.0, y0)
        if not np.all(np.isfinite(f0)):
            raise NumericalError(f"the right-hand side is not finite at the initial state. {advice}.", time=0.0)
        solver = _solver_class(method)(fun, 0.0, y0, t_end, rtol=rtol, atol=atol, max_step=max_step, **extra)
        if convergence_tol is not None:
            speed_old = speed(0.0, y0, f0)
        g_old = np.array([event_value(k, 0.0, y0) for k in range(len(user_events))])
        n0 = int(np.searchsorted(grid, 0.0, side="right"))  # grid points at t = 0
        rec_t.extend(grid[:n0])
        rec_y.extend([y0.copy()] * n0)
        next_idx = n0
        stop_t = None
        if escape_level is not None:
            esc_times = np.where(observable(y0) >= escape_level, 0.0, np.nan)
            if escape_terminal and not np.any(np.isnan(esc_times)):
                stop_t, status = 0.0, 1
                message = f"All {esc_times.size} unit(s) start at or above the escape level {escape_level:g}."
                if not rec_t:
                    rec_t.append(0.0)
                    rec_y.append(y0.copy())
        bar = Progress(PROGRESS_TICKS, desc=f"ODE to t_end = {t_end:g}", unit="permille", enabled=progress)
        stack.enter_context(bar)
        while stop_t is None and solver.status == "running":
            failure = solver.step()
            n_steps += 1
            bar.update(int(PROGRESS_TICKS * min(solver.t / t_end, 1.0)) - bar.n)
            if max_steps is not None and n_steps >= max_steps and solver.status == "running":
                raise NumericalError(f"the solver used its budget of `max_steps` = {max_steps} steps and reached "
                                     f"only t = {solver.t:.6g} of `t_end` = {t_end:g}; raise `max_steps` (CLI: "
                                     "--max-ode-steps) or lower `t_end`", time=float(solver.t))
            if solver.status == "failed":
                raise NumericalError(f"{method} failed: {failure} The largest |state| entry is "
                                     f"{np.max(np.abs(solver.y)):.3g}. {advice}.", time=float(solver.t))
            t_old, t_new, y_new = solver.t_old, solver.t, solver.y
            if not np.all(np.isfinite(y_new)):
                raise NumericalError(f"the state became non-finite. {advice}.", time=float(t_new))
            if hasattr(problem, "ode_check_state"):
                why = problem.ode_check_state(unpack(y_new))
                if why:
                    raise NumericalError(f"{why}. {advice}.", time=float(t_new))
            dense = _LazyDense(solver)
            esc_stop = conv_stop = None
            if escape_level is not None:
                hit = np.flatnonzero(np.isnan(esc_times) & (observable(y_new) >= escape_level))
                for i in hit:  # each unit crosses once: a handful per step, not a loop over all units
                    esc_times[i] = _crossing(lambda t, i=i: observable(dense(t))[i] - escape_level, t_old, t_new)
                if hit.size and escape_terminal and not np.any(np.isnan(esc_times)):
                    esc_stop = float(np.max(esc_times))
            if convergence_tol is not None:
                speed_new = speed(t_new, y_new, solver.f if fsal else None)
                if speed_old >= convergence_tol > speed_new:
                    conv_stop = _crossing(lambda t: convergence_tol - speed(t, dense(t)), t_old, t_new)
                speed_old = speed_new
            user_stop = user_k = None
            if user_events:
                user_stop, user_k, g_old = _user_events(event_value, g_old, dense, t_old, t_new, y_new, ev_dir,
                                                        ev_count, ev_max, ev_times)
            if user_stop is not None and (conv_stop is None or user_stop < conv_stop) and (
                    esc_stop is None or user_stop < esc_stop):
                stop_t = user_stop
                message = f"Terminal event {user_events[user_k][0]!r} fired at t = {stop_t:.6g}."
            elif conv_stop is not None and (esc_stop is None or conv_stop <= esc_stop):
                stop_t, conv_time = conv_stop, conv_stop
                message = (f"Converged: the largest per-unit speed fell below convergence_tol = "
                           f"{convergence_tol:g} at t = {stop_t:.6g}.")
            elif esc_stop is not None:
                stop_t = esc_stop
                message = f"All {esc_times.size} unit(s) escaped (level {escape_level:g}) by t = {stop_t:.6g}."
            if stop_t is not None:
                status = 1
                if esc_times is not None:
                    esc_times[esc_times > stop_t] = np.nan
                for lst in ev_times:
                    lst[:] = [te for te in lst if te <= stop_t]
            # record grid points in (t_old, min(t_new, stop_t)]
            upto = t_new if stop_t is None else stop_t
            hi = int(np.searchsorted(grid, upto, side="right"))
            if hi > next_idx:
                tt = grid[next_idx:hi]
                ys = dense.many(tt)
                if tt[-1] == t_new:
                    ys[-1] = y_new
                rec_t.extend(tt)
                rec_y.extend(ys)
                next_idx = hi
            if stop_t is not None:
                if rec_t[-1] < stop_t:
                    rec_t.append(stop_t)
                    rec_y.append(y_new.copy() if stop_t == t_new else dense(stop_t))
                break
            if check_stiff and n_steps >= STIFF_MIN_STEPS and n_steps % STIFF_CHECK_EVERY == 0 and t_new < t_end:
                f_new = solver.f if fsal else fun(t_new, y_new)
                h_rho = (t_new - t_old) * _jacobian_radius(fun, t_new, y_new, f_new)
                stiff_hits = stiff_hits + 1 if h_rho > STIFF_FRACTION * EXPLICIT_STABILITY[method] else 0
                if stiff_hits >= STIFF_CONFIRM:
                    check_stiff = False
                    switched = {"to": STIFF_METHOD, "t": float(t_new), "step": n_steps, "h_rho": float(h_rho)}
                    nfev_before = int(solver.nfev)
                    if hasattr(problem, "ode_jac_sparsity"):
                        extra = {"jac_sparsity": problem.ode_jac_sparsity(state0)}
                    solver = _solver_class(STIFF_METHOD)(fun, t_new, y_new.copy(), t_end, rtol=rtol, atol=atol,
                                                         max_step=max_step, **extra)
                    fsal = False
    Y = np.array(rec_y)
    if not np.all(np.isfinite(Y)):  # dense output between finite nodes: defensive
        raise NumericalError(f"non-finite values in the recorded trajectory. {advice}.", time=float(solver.t))
    overlaps = {n: Y[:, offsets[i]:offsets[i + 1]].reshape((Y.shape[0], 1) + shapes[i])
                for i, n in enumerate(names)}
    events = {}
    if esc_times is not None:
        events["escape"] = esc_times
    if conv_time is not None:
        events["convergence"] = np.array([conv_time])
    for (name, *_), lst in zip(user_events, ev_times):
        events[name] = np.array(lst, dtype=float)
    meta = {
        "problem": problem.describe(),
        "solver": {"method": method, "rtol": rtol, "atol": atol, "max_step": max_step, "t_end": t_end,
                   "times": times if isinstance(times, str) else "array", "n_steps": n_steps,
                   "nfev": nfev_before + int(solver.nfev), "switched": switched, "njev": int(getattr(solver, "njev", 0)),
                   "nlu": int(getattr(solver, "nlu", 0))},
        "options": dict(opts),
        "escape_level": escape_level, "convergence_tol": convergence_tol,
        "state_shapes": {n: list(s) for n, s in zip(names, shapes)},
        "versions": versions(),
    }
    return Trajectory(t=np.array(rec_t), overlaps=overlaps, time_unit=time_unit, source="ode",
                      model=problem.ode_model, status=status, message=message, events=events, meta=meta)
