"""Benchmark Phase I of the additive model (arXiv 2406.11828; issue 13, item 7).

Online-SGD steps per second of the full d-dimensional engine
(:class:`popdyn.models.additive_sim.AdditiveStepper`) against the number of tasks ``M`` at
``d = 1000`` and width ``J = 2 M log M``, one replica, one sample per step, all in one run and
printed as ratios to the smallest ``M``::

    python benchmarks/bench_additive.py             # M = 10, 30, 100, 300, 1000 (~1-2 min)
    python benchmarks/bench_additive.py --quick     # M = 10, 30, 100
    python benchmarks/bench_additive.py --json out.json

A step costs ``O((J + M) d)`` multiply-adds (the projections ``V x``, the fields ``W x`` and the
update): the table also prints the throughput in those units (``(J + M) d`` per second), which
should stay roughly flat once the arrays are large enough for BLAS to dominate the Python
overhead.  Optionally (``--carry``) the same with the overlaps ``U = W V^T`` carried along
(``O(J M)`` more per step, as :func:`popdyn.models.additive_sim.phase_one` does).  The exact
d-free engine (:class:`popdyn.models.additive_sim.AdditiveExactStepper`, ``O(J M + M^2)`` per
step) is timed on the same problems, and its speed-up over the full engine printed.
On a shared machine set ``OPENBLAS_NUM_THREADS=1``: multithreaded BLAS on busy cores is
slower than one thread (measured 25 ms instead of 0.3 ms for one 922 x 1000 matrix-vector
product at a load average of 9 on 2 cores).

Timing: the median over ``--repeats`` blocks of ``steps`` steps, after one warm-up block;
``steps`` shrinks with ``M`` so that each block takes about a second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from popdyn.models.additive import AdditiveProblem, task_directions  # noqa: E402
from popdyn.models.additive_sim import sgd_step_size  # noqa: E402
from popdyn.simulation import make_stepper  # noqa: E402


def width(M: int) -> int:
    return max(2, math.ceil(2 * M * math.log(M)))


def measure(M: int, d: int, *, repeats: int, carry: bool, engine: str = "full", seed: int = 0) -> dict:
    J = width(M)
    problem = AdditiveProblem("he3", "he3", task_directions(M, d, rng=seed), n_neurons=J)
    stepper, noise = make_stepper(problem, d=d, algorithm="sgd", eta=sgd_step_size(problem, 0.5), batch=1,
                                  replicas=1, rng=seed, engine=engine)
    state = stepper.init_state()
    if carry and engine == "full":
        state["U"] = state["W"] @ stepper.V.T
    work = (J + M) * d
    steps = max(5, int(2e8 / work))  # ~1 s per block at ~2e8 multiply-adds per second
    times = []
    for rep in range(repeats + 1):
        t0 = time.perf_counter()
        for _ in range(steps):
            stepper.step(state, noise)
        if rep:  # the first block is a warm-up
            times.append((time.perf_counter() - t0) / steps)
    per_step = float(np.median(times))
    return {"M": M, "J": J, "d": d, "engine": engine, "steps_per_s": 1.0 / per_step, "work_per_s": work / per_step,
            "seconds_per_step": per_step}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="M = 10, 30, 100 only")
    parser.add_argument("--d", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--carry", action="store_true", help="also time the run with the carried overlaps")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    Ms = (10, 30, 100) if args.quick else (10, 30, 100, 300, 1000)
    rows = []
    variants = [("full", False)] + ([("full", True)] if args.carry else []) + [("exact", False)]
    for engine, carry in variants:
        for M in Ms:
            r = measure(M, args.d, repeats=args.repeats, carry=carry, engine=engine)
            r["carry"] = carry
            rows.append(r)
            print(f"M = {M:>5}  J = {r['J']:>6}  {engine:<5} carry U = {carry!s:<5}  {r['steps_per_s']:>10.1f} steps/s  "
                  f"{r['work_per_s']:.3g} (J+M)d/s", flush=True)
    print(f"\nPhase I, d = {args.d}, J = 2 M log M, batch 1, one replica "
          f"({platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')})")
    print(f"{'M':>6} {'J':>7} {'engine':>7} {'carry':>6} {'steps/s':>10} {'ratio to M=10':>14} "
          f"{'(J+M)d per s':>13} {'exact/full':>11}")
    full = {r["M"]: r for r in rows if r["engine"] == "full" and not r["carry"]}
    for engine, carry in variants:
        sub = [r for r in rows if r["engine"] == engine and r["carry"] == carry]
        base = sub[0]
        for r in sub:
            speedup = r["steps_per_s"] / full[r["M"]]["steps_per_s"]
            print(f"{r['M']:>6} {r['J']:>7} {engine:>7} {str(carry):>6} {r['steps_per_s']:>10.1f} "
                  f"{r['steps_per_s'] / base['steps_per_s']:>14.4f} {r['work_per_s']:>13.3g} {speedup:>11.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"d": args.d, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
