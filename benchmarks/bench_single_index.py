"""Benchmark the exact d-free single-index simulator against the full d-dimensional one.

One command, every ratio measured in the same run::

    python benchmarks/bench_single_index.py            # d = 1e2 .. 1e5 (full), 1e2 vs 1e6 (exact)
    python benchmarks/bench_single_index.py --quick    # smoke run (seconds)
    python benchmarks/bench_single_index.py --json

(b) time per step of ``engine="full"`` over ``engine="exact"`` at d = 1e2, 1e3, 1e4, 1e5,
    same problem (h3/h3, correlation loss), step, minibatch, replicas and steps.
(c) the exact engine's time per step at d = 1e2 against d = 1e6 (goal: within 1.2x).

Both engines are driven through the stepper protocol (``init_state`` / ``step``), i.e. the
loop :func:`popdyn.simulation.simulate` runs, without recording.  Each number is the median
of ``--repeat`` timings; the two d values of (c) are timed in alternation so that load from
other processes affects both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from popdyn.models.single_index import SingleIndexProblem  # noqa: E402
from popdyn.simulation import make_stepper  # noqa: E402

#: Goals of issue 4 (stated there for the committee simulator; the same engine design here).
GOAL_B = 100.0
GOAL_C = 1.2


def _time_per_step(problem, d, engine, *, replicas, batch, steps, seed=0):
    stepper, noise = make_stepper(problem, d=d, eta=0.5 * d ** -1.5, batch=batch, replicas=replicas, init=0.3,
                                  engine=engine, rng=seed)
    state = stepper.init_state()
    stepper.step(state, noise)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        stepper.step(state, noise)
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=200, help="steps per timing of the full engine")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="d <= 1e4 for (b), fewer steps")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    problem = SingleIndexProblem("he3", "he3")
    R, B = args.replicas, args.batch
    ds = (100, 1_000, 10_000) if args.quick else (100, 1_000, 10_000, 100_000)
    steps_full = max(5, args.steps // (5 if args.quick else 1))
    steps_exact = 20 * steps_full
    out = {"replicas": R, "batch": B, "b": [], "c": None}
    for d in ds:
        full = statistics.median(_time_per_step(problem, d, "full", replicas=R, batch=B,
                                                steps=max(3, steps_full * 100 // max(100, d // 10)))
                                 for _ in range(args.repeat))
        exact = statistics.median(_time_per_step(problem, d, "exact", replicas=R, batch=B, steps=steps_exact)
                                  for _ in range(args.repeat))
        out["b"].append({"d": d, "full_s_per_step": full, "exact_s_per_step": exact, "ratio": full / exact})
    lo, hi = [], []
    for _ in range(args.repeat):  # alternate the two dimensions
        lo.append(_time_per_step(problem, 100, "exact", replicas=R, batch=B, steps=steps_exact))
        hi.append(_time_per_step(problem, 1_000_000, "exact", replicas=R, batch=B, steps=steps_exact))
    out["c"] = {"d_lo": 100, "d_hi": 1_000_000, "s_per_step_lo": statistics.median(lo),
                "s_per_step_hi": statistics.median(hi), "ratio": statistics.median(hi) / statistics.median(lo)}
    out["goals"] = {"b_at_1e4": GOAL_B, "c": GOAL_C}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"single-index h3/h3, R = {R}, B = {B}")
    print(f"{'d':>8} {'full us/step':>14} {'exact us/step':>14} {'full/exact':>11}")
    for row in out["b"]:
        print(f"{row['d']:>8} {1e6 * row['full_s_per_step']:>14.1f} {1e6 * row['exact_s_per_step']:>14.1f} "
              f"{row['ratio']:>11.1f}")
    c = out["c"]
    print(f"(c) exact engine: {1e6 * c['s_per_step_lo']:.1f} us/step at d = 1e2, {1e6 * c['s_per_step_hi']:.1f} "
          f"at d = 1e6: ratio {c['ratio']:.3f} (goal <= {GOAL_C})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
