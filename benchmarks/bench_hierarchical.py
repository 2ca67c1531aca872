"""Benchmark stage 1 of the three-layer network (arXiv 2311.13774): the ridge solve against m1 and n.

One command, a table of seconds::

    python benchmarks/bench_hierarchical.py            # d = 16; m1 = 153..1224, n = 2000..32000 (~2 min)
    python benchmarks/bench_hierarchical.py --quick    # smoke run (seconds)

Stage 1 (:func:`popdyn.models.hierarchical_sim.fit_stage1`) evaluates the ``n x m1`` features
:math:`\\sigma_1(Vx + s)` in chunks and accumulates the ridge normal equations
(:class:`popdyn.readout.RidgeMoments`), then solves the ``m1 x m1`` system: cost
``~ n d m1 + n m1^2 + m1^3/3`` multiply-adds, memory ``O(m1^2)`` whatever ``n``.  Each time is the
median over repetitions (one replica, the data drawn once per size, outside the timing); the last
column is the measured rate in Gflop/s of the ``n m1^2 + m1^3/3`` part, which should stay roughly
constant once the matrix products dominate.  ``D_k(d) = C(d+k, k)`` is the dimension the features
must span (153 for d = 16, k = 2): m1 >= D_k.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from popdyn.models.hierarchical import HierarchicalProblem  # noqa: E402
from popdyn.models.hierarchical_sim import fit_stage1, init_network  # noqa: E402


def solve_time(problem, m1, n, repeats, seed=0):
    """Median seconds of one stage-1 fit (features + normal equations + solve)."""
    net = init_network(problem, m1=m1, replicas=1, rng=seed)
    x, y, _ = problem.sample(n, replicas=1, rng=seed + 1)
    fit_stage1(net, x[:, :min(n, 200)], y[:, :min(n, 200)])  # warm-up (first-call allocations)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit_stage1(net, x, y)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    problem = HierarchicalProblem(args.d, args.k)
    D = problem.stage1_dimension
    factors = (1, 2) if args.quick else (1, 2, 4, 8)
    ns = (1000, 4000) if args.quick else (2000, 8000, 32000)
    print(f"stage-1 ridge solve, d = {args.d}, k = {args.k}, sigma1 = he{args.k}, D_k(d) = {D}; seconds (median of "
          f"{args.repeats}), threads: OPENBLAS_NUM_THREADS = {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")
    print(f"{'m1':>6} {'m1/D':>5} {'n':>7} {'seconds':>9} {'Gflop/s':>8}")
    for f in factors:
        m1 = f * D
        for n in ns:
            t = solve_time(problem, m1, n, args.repeats)
            flops = 2.0 * (n * m1 * m1 + m1 ** 3 / 3)
            print(f"{m1:>6} {f:>5} {n:>7} {t:>9.4f} {flops / t / 1e9:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
