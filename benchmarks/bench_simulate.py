"""Throughput of the finite-d online-SGD simulator against numpy's own Gaussian sampler.

Run from the repository root::

    python benchmarks/bench_simulate.py            # d = 1000, R = 8, N = 4, B = 32
    python benchmarks/bench_simulate.py --d 200 --batch 1 --json

One SGD step needs ``R * B * d`` fresh standard normals; everything else (two batched
matmuls, the activation on ``(R, N, B)`` numbers, the retraction) should cost less than
drawing them.  The script reports the simulator's rate in samples x dimensions per
second next to the rate of ``rng.standard_normal(out=buf)`` on a buffer of the same
shape ``(R, B, d)``, and their ratio (goal: >= 0.5 at d = 1000).  The two are timed in
alternation, ``--rounds`` times, and the median ratio is reported, so that load from
other processes affects both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from popdyn.models.multi_index import MultiIndexProblem  # noqa: E402
from popdyn.simulation import simulate  # noqa: E402

GOAL = 0.5


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=1000)
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--neurons", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--k", type=int, default=4, help="number of index vectors")
    p.add_argument("--activation", default="he3", help="student and teacher activation")
    p.add_argument("--steps", type=int, default=300, help="SGD steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)

    R, N, B, d = args.replicas, args.neurons, args.batch, args.d
    prob = MultiIndexProblem(args.activation, args.activation, np.eye(args.k), n_neurons=N)
    rng = np.random.default_rng(0)
    buf = np.empty((R, B, d))
    numbers = args.steps * R * B * d
    kw = dict(d=d, algorithm="sgd", eta=1e-3 / d, steps=args.steps, batch=B, replicas=R, n_record=2,
              progress=False)
    simulate(prob, **{**kw, "steps": 2}, rng=0)  # warm-up (imports, caches)

    sim_rates, np_rates, ratios = [], [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        simulate(prob, **kw, rng=r)
        t_sim = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            rng.standard_normal(out=buf)
        t_np = time.perf_counter() - t0
        sim_rates.append(numbers / t_sim)
        np_rates.append(numbers / t_np)
        ratios.append(t_np / t_sim)

    result = {
        "d": d, "replicas": R, "neurons": N, "batch": B, "k": args.k, "activation": args.activation,
        "steps_per_round": args.steps, "rounds": args.rounds,
        "simulator_samples_x_dims_per_s": statistics.median(sim_rates),
        "numpy_normals_per_s": statistics.median(np_rates),
        "ratio_median": statistics.median(ratios), "ratio_best": max(ratios), "goal": GOAL,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"online SGD, d = {d}, R = {R}, N = {N}, B = {B}, k = {args.k}, {args.activation}; "
              f"{args.rounds} rounds of {args.steps} steps")
        print(f"{'':34s}{'median':>14s}")
        print(f"{'simulator (samples x dims / s)':34s}{result['simulator_samples_x_dims_per_s']:14.4g}")
        print(f"{'numpy standard_normal (numbers / s)':34s}{result['numpy_normals_per_s']:14.4g}")
        print(f"{'ratio simulator / numpy':34s}{result['ratio_median']:14.3f}   (best {result['ratio_best']:.3f}, "
              f"goal >= {GOAL})")
    return 0 if result["ratio_median"] >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
