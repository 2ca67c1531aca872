"""Benchmark (a) of issue 4: the committee ODE to convergence, adaptive vs fixed-step Euler.

One command, all ratios measured side by side in the same run::

    python benchmarks/bench_committee_ode.py            # full (~1-2 min)
    python benchmarks/bench_committee_ode.py --quick    # smoke run (t_end = 50)
    python benchmarks/bench_committee_ode.py --json out.json

Problem: Saad–Solla's classic (erf, K = M = 2, delta = 0.5, second layer fixed to 1,
G = I) from the classic initial state (``popdyn.models.committee.classic_initial_state``),
integrated until the generalisation error is below 1e-10 (``T_END`` is the first grid
time where a tight reference run has eps_g < 1e-10; every method integrates to the same
``T_END``).

Methods, all on the *same* right-hand side ``CommitteeProblem.ode_rhs``:

* reference: ``popdyn.integrate`` with DOP853 at rtol = 1e-13, atol = 1e-15;
* Euler, dt = 0.01: the classic tools' method (e.g. the C++ integrator of Goldt et al.),
  ``T_END / dt`` right-hand-side evaluations;
* popdyn default: ``popdyn.integrate`` (DOP853, rtol = 1e-10, atol = 1e-12);
* matched accuracy: ``popdyn.integrate`` (DOP853) at the loosest rtol of a ladder that is
  no worse than Euler in all three accuracy measures below.

Accuracy is the eps_g curve against the reference on a common log grid of 200 times in
``[0.01, T_END]``: the largest absolute deviation ``max |eps - eps_ref|`` (the matching
criterion), the largest relative deviation where ``eps_ref >= REL_FLOOR``, and the shift
of the time at which eps_g first falls below 1e-10.  Reported: right-hand-side
evaluations, wall time, and both ratios Euler / adaptive.  Goal: the adaptive integrator
reaches the same curve (matched accuracy) in fewer evaluations and less time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from popdyn.models.committee import classic_initial_state, classic_problem  # noqa: E402
from popdyn.errors import NumericalError  # noqa: E402
from popdyn.ode import integrate  # noqa: E402

TARGET = 1e-10
EULER_DT = 0.01
RTOL_LADDER = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
#: Relative deviations are reported only where eps_g >= REL_FLOOR: near the teacher eps_g is
#: *linear* in a state error (the optimum sits on the boundary of the PSD cone of the
#: overlaps), so eps_g ~ 1e-10 is only defined to the absolute state error (~1e-10 even for
#: the reference's dense output).
REL_FLOOR = 1e-6


def _pack(state):
    return np.concatenate([np.asarray(state[k], dtype=float).ravel() for k in ("Q", "M", "a")])


def _unpack(y, K, M):
    return {"Q": y[:K * K].reshape(K, K), "M": y[K * K:K * K + K * M].reshape(K, M), "a": y[K * K + K * M:]}


def euler(problem, state0, t_end, dt, grid):
    """Fixed-step explicit Euler on ``problem.ode_rhs``; returns (eps_g on grid, nfev, wall)."""
    K, M = problem.K, problem.M
    y = _pack(problem.ode_initial_state(state0))
    n = int(round(t_end / dt))
    rec = np.empty((grid.size, y.size))
    idx = np.rint(grid / dt).astype(int)
    j = 0
    t0 = time.perf_counter()
    for step in range(n + 1):
        while j < grid.size and idx[j] == step:
            rec[j] = y
            j += 1
        if step == n:
            break
        der = problem.ode_rhs(step * dt, _unpack(y, K, M))
        y = y + dt * np.concatenate([der["Q"].ravel(), der["M"].ravel(), der["a"].ravel()])
    wall = time.perf_counter() - t0
    eps = problem.generalisation_error(rec[:, :K * K].reshape(-1, K, K), rec[:, K * K:K * K + K * M].reshape(-1, K, M),
                                       rec[:, K * K + K * M:])
    return eps, n, wall


def adaptive(problem, state0, t_end, grid, rtol, atol):
    t0 = time.perf_counter()
    traj = integrate(problem, state0, t_end, times=grid, rtol=rtol, atol=atol)
    wall = time.perf_counter() - t0
    eps = problem.generalisation_error(traj.Q[:, 0], traj.M[:, 0], traj.a[:, 0])
    return eps, int(traj.meta["solver"]["nfev"]), wall


def crossing(grid, eps, level=TARGET):
    """First time eps falls below ``level`` (log-linear interpolation on the grid), or nan."""
    below = np.flatnonzero(eps < level)
    if below.size == 0 or below[0] == 0:
        return float("nan")
    i = below[0]
    l0, l1 = np.log(max(eps[i - 1], 1e-300)), np.log(max(eps[i], 1e-300))
    return float(grid[i - 1] + (np.log(level) - l0) / (l1 - l0) * (grid[i] - grid[i - 1]))


def accuracy(grid, eps, ref):
    """Curve error against the reference: max absolute deviation (the matching criterion),
    max relative deviation where eps_ref >= REL_FLOOR, and the shift of t(eps_g = 1e-10)."""
    keep = ref >= REL_FLOOR
    return {"max_abs_dev": float(np.max(np.abs(eps - ref))),
            "max_rel_dev": float(np.max(np.abs(eps - ref)[keep] / ref[keep])),
            "t_cross_shift": float(abs(crossing(grid, eps) - crossing(grid, ref)))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run to t = 50 (no convergence)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    problem = classic_problem()
    state0 = classic_initial_state(problem)
    # T_END: where the tight reference reaches eps_g < TARGET (rounded up to a multiple of dt)
    if args.quick:
        t_end = 50.0
    else:
        probe = integrate(problem, state0, 5000.0, times="linear", n_times=5001, rtol=1e-12, atol=1e-14)
        eps_probe = problem.generalisation_error(probe.Q[:, 0], probe.M[:, 0], probe.a[:, 0])
        hit = np.flatnonzero(eps_probe < TARGET)
        if hit.size == 0:
            print("eps_g never fell below the target by t = 5000", file=sys.stderr)
            return 1
        t_end = float(np.ceil(probe.t[hit[0]]))
    grid = np.concatenate([[0.0], np.round(np.geomspace(0.01, t_end, 199) / EULER_DT) * EULER_DT])
    grid = np.unique(np.clip(grid, 0.0, t_end))
    ref, ref_nfev, ref_wall = adaptive(problem, state0, t_end, grid, 1e-13, 1e-15)

    rows = {}
    eps, nfev, wall = euler(problem, state0, t_end, EULER_DT, grid)
    rows["euler_dt0.01"] = {"nfev": nfev, "wall_s": wall, **accuracy(grid, eps, ref)}
    eps, nfev, wall = adaptive(problem, state0, t_end, grid, 1e-10, 1e-12)
    rows["popdyn_default"] = {"nfev": nfev, "wall_s": wall, "rtol": 1e-10, **accuracy(grid, eps, ref)}
    target = rows["euler_dt0.01"]
    matched = None
    for rtol in RTOL_LADDER:
        try:
            eps, nfev, wall = adaptive(problem, state0, t_end, grid, rtol, rtol * 1e-2)
        except NumericalError as exc:  # too loose to stay in the domain: not a match
            print(f"(rtol {rtol:g}: {exc})", file=sys.stderr)
            continue
        acc = accuracy(grid, eps, ref)
        if all(acc[k] <= target[k] for k in ("max_abs_dev", "max_rel_dev", "t_cross_shift")):
            matched = {"nfev": nfev, "wall_s": wall, "rtol": rtol, **acc}
            break
    rows["matched"] = matched

    eu = rows["euler_dt0.01"]
    print(f"committee ODE, erf K = M = 2, delta = 0.5, a fixed; integrated to t = {t_end:g} "
          f"(reference eps_g({t_end:g}) = {ref[-1]:.3g}; reference DOP853 rtol 1e-13: {ref_nfev} RHS, "
          f"{ref_wall:.2f} s)")
    print(f"{'method':<26}{'RHS evals':>11}{'wall [s]':>10}{'max |dev|':>11}{'max rel dev':>13}"
          f"{'t(1e-10) shift':>16}{'RHS ratio':>11}{'time ratio':>11}")
    for name, r in (("Euler dt = 0.01", eu), ("popdyn default (1e-10)", rows["popdyn_default"]),
                    (f"DOP853 matched (rtol {matched['rtol']:g})" if matched else "DOP853 matched: none", matched)):
        if r is None:
            continue
        print(f"{name:<26}{r['nfev']:>11d}{r['wall_s']:>10.2f}{r['max_abs_dev']:>11.2e}{r['max_rel_dev']:>13.2e}"
              f"{r['t_cross_shift']:>16.3g}{eu['nfev'] / r['nfev']:>10.1f}x{eu['wall_s'] / r['wall_s']:>10.1f}x")
    print(f"max |dev| = max over the grid of |eps_g - eps_g,ref|; max rel dev over eps_g,ref >= {REL_FLOOR:g}; "
          "matched = the loosest rtol no worse than Euler in all three accuracy columns.")
    print("ratios = Euler / method (> 1: the method needs fewer RHS evaluations / less time).")
    out = {"t_end": t_end, "target": TARGET, "euler_dt": EULER_DT, "rows": rows,
           "reference": {"nfev": ref_nfev, "wall_s": ref_wall}}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
