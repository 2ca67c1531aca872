"""Committee-machine ODE benchmarks: the integrals' assembly (issue 12) and adaptive vs Euler (issue 4).

One command, every ratio measured side by side in the same run::

    python benchmarks/bench_committee_ode.py                       # both sections (~5 min)
    python benchmarks/bench_committee_ode.py --quick               # smoke run (~1 min)
    python benchmarks/bench_committee_ode.py --section assembly --baseline /tmp/popdyn_head
    python benchmarks/bench_committee_ode.py --json out.json

Section ``assembly`` (the Gaussian integrals of one right-hand side and the ODEs they drive;
times are CPU seconds of this process, ``time.process_time``, with the wall time next to
them, on whatever machine runs it):

* one right-hand side at a K = M = 2 state (``initial_state(problem, 500, init="uniform",
  rng=0)``) for erf and ReLU through each assembly of
  :class:`popdyn.models.committee_integrals.CommitteeIntegrals`: ``"auto"`` (contracted
  closed forms), ``"tuples"`` (per-tuple routes, the assembly before issue 12) and
  ``"quadrature"`` (the quadrature route for every family); the ratio ReLU / erf;
* the ReLU K = M = 2 ODE to t = 600 (``popdyn.integrate`` defaults, and with ``atol =
  1e-10``), and to t = 5 by the closed forms and by the quadrature route (ratio);
* the erf K = M = 8 ODE to t = 750 (``"auto"`` vs ``"tuples"``, ratio) and K = M = 32 to
  t = 750 (``"auto"``; skipped with ``--quick``);
* ``--baseline DIR``: the same workloads (those its API offers) timed with the popdyn found
  in ``DIR`` (e.g. ``git archive HEAD popdyn | tar -x -C DIR``) in a subprocess of this run,
  and the ratios baseline / current.

Section ``euler`` (issue 4): Saad–Solla's classic (erf, K = M = 2, delta = 0.5, second
layer fixed to 1, G = I) from the classic initial state
(``popdyn.models.committee.classic_initial_state``), integrated until the generalisation
error is below 1e-10 (``T_END`` is the first grid time where a tight reference run has
eps_g < 1e-10; every method integrates to the same ``T_END``).  Methods, all on the *same*
right-hand side ``CommitteeProblem.ode_rhs``:

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
evaluations, wall time, and both ratios Euler / adaptive.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

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
    # eps_g of solver states: negative values within the state's accuracy are 0 (state_rtol)
    eps = problem.generalisation_error(rec[:, :K * K].reshape(-1, K, K), rec[:, K * K:K * K + K * M].reshape(-1, K, M),
                                       rec[:, K * K + K * M:], state_rtol=dt)
    return eps, n, wall


def adaptive(problem, state0, t_end, grid, rtol, atol):
    from popdyn.ode import integrate

    t0 = time.perf_counter()
    traj = integrate(problem, state0, t_end, times=grid, rtol=rtol, atol=atol)
    wall = time.perf_counter() - t0
    eps = problem.generalisation_error(traj.Q[:, 0], traj.M[:, 0], traj.a[:, 0], state_rtol=max(rtol, atol))
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


def euler_section(args) -> dict:
    """Issue 4: Euler dt = 0.01 against the adaptive integrator on the classic problem."""
    from popdyn.errors import NumericalError
    from popdyn.models.committee import classic_initial_state, classic_problem
    from popdyn.ode import integrate

    problem = classic_problem()
    state0 = classic_initial_state(problem)
    # T_END: where the tight reference reaches eps_g < TARGET (rounded up to a multiple of dt)
    if args.quick:
        t_end = 50.0
    else:
        probe = integrate(problem, state0, 5000.0, times="linear", n_times=5001, rtol=1e-12, atol=1e-14)
        eps_probe = problem.generalisation_error(probe.Q[:, 0], probe.M[:, 0], probe.a[:, 0], state_rtol=1e-12)
        hit = np.flatnonzero(eps_probe < TARGET)
        if hit.size == 0:
            raise RuntimeError("eps_g never fell below the target by t = 5000")
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
    return {"t_end": t_end, "target": TARGET, "euler_dt": EULER_DT, "rows": rows,
            "reference": {"nfev": ref_nfev, "wall_s": ref_wall}}


# ======================================================================================
# section "assembly" (issue 12): the integrals of one right-hand side, and the ODEs
# ======================================================================================
#: Right-hand-side evaluations per timing (full run, --quick); the quadrature route is slow.
RHS_REPEATS = {"auto": (2000, 300), "tuples": (300, 50), "quadrature": (10, 3), "baseline": (300, 20)}
ASSEMBLIES = ("auto", "tuples", "quadrature")


def _clock(fn):
    """``(result, cpu seconds, wall seconds)`` of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def _problem(act, K, **kw):
    from popdyn.models.committee import CommitteeProblem
    from popdyn.simulation import initial_state

    problem = CommitteeProblem(act, act, K=K, M=K, delta=0.5, **kw)
    return problem, initial_state(problem, 500, init="uniform", rng=0)[2]


def _rhs_ms(act, integrals, n, K=2):
    """Mean CPU ms of ``ode_rhs`` at the K = M state (``integrals=None``: the popdyn default)."""
    problem, s0 = _problem(act, K)
    state = problem.ode_initial_state(s0)
    kw = {} if integrals is None else {"integrals": integrals}
    problem.ode_rhs(0.0, state, **kw)  # plans, caches, the quadrature level
    _, cpu, wall = _clock(lambda: [problem.ode_rhs(0.0, state, **kw) for _ in range(n)])
    return {"cpu_ms": 1e3 * cpu / n, "wall_ms": 1e3 * wall / n}


def _ode(act, K, t_end, integrals=None, **kw):
    from popdyn.ode import integrate

    problem, s0 = _problem(act, K)
    options = None if integrals is None else {"integrals": integrals}
    traj, cpu, wall = _clock(lambda: integrate(problem, s0, t_end, n_times=20, progress=False, options=options,
                                               **kw))
    from popdyn.models.committee import eps_g

    return {"cpu_s": cpu, "wall_s": wall, "nfev": int(traj.meta["solver"]["nfev"]),
            "eps_g_end": float(eps_g(problem, traj)[-1, 0]), "t_end": t_end}


def workloads(quick: bool, baseline: bool = False) -> list:
    """``(name, thunk)`` pairs; ``baseline``: only what the popdyn before issue 12 offers."""
    q = 1 if quick else 0
    out = []
    for act in ("erf", "relu"):
        if baseline:
            out.append((f"rhs {act} K=2", lambda act=act: _rhs_ms(act, None, RHS_REPEATS["baseline"][q])))
            continue
        for integ in ASSEMBLIES:
            out.append((f"rhs {act} K=2 {integ}",
                        lambda act=act, integ=integ: _rhs_ms(act, integ, RHS_REPEATS[integ][q])))
        for K in (4, 8):
            out.append((f"rhs {act} K={K} auto", lambda act=act, K=K: _rhs_ms(act, "auto", 20 if act == "relu" else 500,
                                                                               K)))
    short = 1.0 if quick else 5.0
    if baseline:
        out.append((f"ode relu K=2 t={short:g}", lambda: _ode("relu", 2, short)))
        out.append((f"ode erf K=8 t={100 if quick else 750}", lambda: _ode("erf", 8, 100.0 if quick else 750.0)))
        return out
    out.append((f"ode relu K=2 t={short:g}", lambda: _ode("relu", 2, short)))
    out.append((f"ode relu K=2 t={short:g} quadrature", lambda: _ode("relu", 2, short, "quadrature")))
    t_relu = 100.0 if quick else 600.0
    out.append((f"ode relu K=2 t={t_relu:g}", lambda: _ode("relu", 2, t_relu)))
    out.append((f"ode relu K=2 t={t_relu:g} atol=1e-10", lambda: _ode("relu", 2, t_relu, atol=1e-10)))
    t8 = 100.0 if quick else 750.0
    out.append((f"ode erf K=8 t={t8:g}", lambda: _ode("erf", 8, t8)))
    out.append((f"ode erf K=8 t={t8:g} tuples", lambda: _ode("erf", 8, t8, "tuples")))
    if not quick:
        out.append(("ode erf K=32 t=750", lambda: _ode("erf", 32, 750.0)))
    return out


def _measure(quick: bool, baseline: bool) -> dict:
    _ode("relu", 2, 0.1)  # imports (scipy.integrate) and first calls stay out of the timings
    results = {}
    for name, thunk in workloads(quick, baseline):
        results[name] = thunk()
        print(f"  ... {name}: {results[name]}", file=sys.stderr, flush=True)
    return results


def assembly_section(args) -> dict:
    """Issue 12: per-assembly right-hand-side costs and ODE times, and an optional baseline."""
    res = _measure(args.quick, False)
    base = None
    if args.baseline:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", os.path.abspath(args.baseline)]
        if args.quick:
            cmd.append("--quick")
        env = dict(os.environ, PYTHONPATH=os.path.abspath(args.baseline))
        base = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env,
                                         cwd=os.path.abspath(args.baseline)).stdout)
    r = lambda k: res[k]  # noqa: E731
    print("one right-hand side, K = M = 2 state (CPU ms per call; wall in brackets)")
    for act in ("erf", "relu"):
        cells = "  ".join(f"{integ} {r(f'rhs {act} K=2 {integ}')['cpu_ms']:.3f} "
                          f"({r(f'rhs {act} K=2 {integ}')['wall_ms']:.3f})" for integ in ASSEMBLIES)
        print(f"  {act:<5} {cells}")
    ratio = r("rhs relu K=2 auto")["cpu_ms"] / r("rhs erf K=2 auto")["cpu_ms"]
    for K in (4, 8):
        print(f"  K = M = {K}, auto: erf {r(f'rhs erf K={K} auto')['cpu_ms']:.3f}, ReLU "
              f"{r(f'rhs relu K={K} auto')['cpu_ms']:.3f}")
    print(f"  ReLU / erf (auto, K = M = 2): {ratio:.2f}x;  ReLU tuples / auto: "
          f"{r('rhs relu K=2 tuples')['cpu_ms'] / r('rhs relu K=2 auto')['cpu_ms']:.1f}x;  ReLU quadrature / auto: "
          f"{r('rhs relu K=2 quadrature')['cpu_ms'] / r('rhs relu K=2 auto')['cpu_ms']:.0f}x")
    print("ODEs (popdyn.integrate, DOP853 rtol 1e-10, atol 1e-12 unless stated; CPU s, wall s, RHS evaluations, "
          "eps_g at the end)")
    for name, row in res.items():
        if name.startswith("ode"):
            print(f"  {name:<34}{row['cpu_s']:>9.2f}{row['wall_s']:>9.2f}{row['nfev']:>9d}   {row['eps_g_end']:.3g}")
    short = [k for k in res if k.startswith("ode relu K=2 t=") and k.endswith("quadrature")][0]
    print(f"  ReLU short run, quadrature / closed form: {res[short]['cpu_s'] / res[short[:-11]]['cpu_s']:.0f}x")
    e8 = [k for k in res if k.startswith("ode erf K=8") and k.endswith("tuples")][0]
    print(f"  erf K = M = 8, tuples / auto: {res[e8]['cpu_s'] / res[e8[:-7]]['cpu_s']:.1f}x")
    out = {"current": res}
    if base is not None:
        print(f"baseline: popdyn in {args.baseline} (its default route), same workloads, same run")
        for name, row in base.items():
            cur = res[name + " auto"] if name.startswith("rhs") else res[name]
            key = "cpu_ms" if name.startswith("rhs") else "cpu_s"
            print(f"  {name:<28} baseline {row[key]:.4g}  current {cur[key]:.4g}  baseline / current "
                  f"{row[key] / cur[key]:.1f}x")
        out["baseline"] = base
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run (short horizons, fewer repeats)")
    p.add_argument("--section", choices=("all", "assembly", "euler"), default="all")
    p.add_argument("--baseline", default=None, help="directory holding another popdyn to time in the same run")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # baseline subprocess: print JSON
    args = p.parse_args(argv)
    if args.worker:
        sys.path.insert(0, args.worker)
        print(json.dumps(_measure(args.quick, True)))
        return 0
    sys.path.insert(0, REPO)
    out = {}
    if args.section in ("all", "assembly"):
        out["assembly"] = assembly_section(args)
    if args.section in ("all", "euler"):
        out["euler"] = euler_section(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
