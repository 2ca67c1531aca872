"""Benchmark the batch-reuse simulators (arXiv 2406.01581): exact d-free engine vs full d-dim.

One command, every ratio measured side by side in the same run::

    python benchmarks/bench_reuse.py            # d = 500, 2000, 8000; B = 1 and 8 (~1 min)
    python benchmarks/bench_reuse.py --quick    # smoke run (seconds)

For each (d, B) both engines run the same problem (tanh student, He3 target, reuse 2,
eta_tilde = 0.5, R = 100 replicas) through the stepper protocol -- exactly the loop of
:func:`popdyn.simulation.simulate`, without recording.  Each time is the median over
repetitions, with the repetitions of the two engines interleaved so that changes of the
machine's load hit both alike.  Printed: milliseconds per iteration (one minibatch used
for ``reuse`` steps), the ratio full/exact, and the exact engine's cost at the largest d
relative to the smallest (it should not depend on d).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from popdyn.models.reuse import ReuseProblem  # noqa: E402
from popdyn.simulation import make_stepper  # noqa: E402

#: Per-sample step scale eta * d / B (reference drift values, theory/lee2024/equations.md).
ETA_TILDE = 0.5


def per_iteration(problem, d, batch, replicas, engine, iterations, seed=0):
    """Seconds per iteration of one engine (median of the caller's repetitions)."""
    stepper, noise = make_stepper(problem, d=d, algorithm="sgd", eta=ETA_TILDE * batch / d, batch=batch,
                                  replicas=replicas, init="uniform", rng=seed, engine=engine)
    state = stepper.init_state()
    stepper.step(state, noise)  # warm-up (first-call allocations)
    t0 = time.perf_counter()
    for _ in range(iterations):
        stepper.step(state, noise)
    return (time.perf_counter() - t0) / iterations


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    dims = (200, 1000) if args.quick else (500, 2000, 8000)
    batches = (1, 8)
    problem = ReuseProblem("tanh", "he3", reuse=2)
    print(f"batch reuse r = {problem.reuse}, {problem.student.name} / {problem.teacher.name}, "
          f"R = {args.replicas} replicas, eta_tilde = {ETA_TILDE}; ms per iteration (median of {args.repeats})")
    print(f"{'d':>6} {'B':>3} {'full':>10} {'exact':>10} {'full/exact':>11}")
    exact_by_b = {}
    for batch in batches:
        for d in dims:
            full_it = max(3, int(2e7 / (args.replicas * batch * d)))
            exact_it = 20 * full_it
            tf, te = [], []
            for _ in range(args.repeats):
                tf.append(per_iteration(problem, d, batch, args.replicas, "full", full_it))
                te.append(per_iteration(problem, d, batch, args.replicas, "exact", exact_it))
            f, e = float(np.median(tf)), float(np.median(te))
            exact_by_b.setdefault(batch, []).append(e)
            print(f"{d:>6} {batch:>3} {1e3 * f:>10.3f} {1e3 * e:>10.4f} {f / e:>11.1f}")
    for batch, times in exact_by_b.items():
        print(f"exact engine, B = {batch}: time at d = {dims[-1]} / time at d = {dims[0]} = {times[-1] / times[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
