"""Benchmark the exact d-free multi-index engine against the full engine (issue 12, item 4).

One command, every ratio measured side by side in the same run::

    python benchmarks/bench_multi_index_exact.py               # full benchmark (~2-4 min)
    python benchmarks/bench_multi_index_exact.py --quick       # smoke run (seconds)
    python benchmarks/bench_multi_index_exact.py --json out.json
    python benchmarks/bench_multi_index_exact.py --compare 5   # also time `popdyn compare`, 5 pairs

(a) Online spherical SGD of the multi-index model (he3 student and teacher, orthogonal
    G), exact engine (``popdyn.models.multi_index_exact``) vs the full engine
    (``popdyn.models.multi_index_sim``) at d = 1e2, 1e3, 1e4, 1e5, for two workloads: the
    README's ``popdyn compare`` (k = 3, N = 4 neurons, batch 32, 8 replicas) and one
    learning curve (k = 3, N = 4, batch 1, 1 replica).  Reported: steps/s of each engine
    and full/exact.  Both engines are driven through the stepper protocol
    (``init_state``/``step``), i.e. the loop :func:`popdyn.simulation.simulate` runs,
    without recording; each figure is the median over repetitions, the repetitions of
    the two engines interleaved so that changes of the machine's load hit both alike.
(b) With ``--compare N``: the whole process ``popdyn compare`` (the README's main job,
    run in a temporary directory, writing its PNG) with the exact engine (the default
    now) and with ``--engine full`` (the default before), N interleaved pairs; wall time
    and CPU time (user + sys of the child) are reported, median and range.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from popdyn.models import multi_index_exact  # noqa: E402, F401  (registers engine="exact")
from popdyn.models.multi_index import MultiIndexProblem  # noqa: E402
from popdyn.simulation import make_stepper  # noqa: E402

#: Workloads of (a): name -> (neurons, k, batch, replicas).
WORKLOADS = {"compare (R=8, B=32)": (4, 3, 32, 8), "one curve (R=1, B=1)": (4, 3, 1, 1)}
#: Dimensions of (a).
DIMS = (10**2, 10**3, 10**4, 10**5)
#: The exact engine is timed this many times per timing of the full engine (its runs are
#: short, hence sensitive to the machine's load).
EXACT_REPEAT = 3


def _timer(problem, engine, d, batch, replicas, seed):
    """``run(steps) -> seconds per step`` on a private state (after one warm-up step)."""
    stepper, noise = make_stepper(problem, d=d, eta=0.5 / d, batch=batch, replicas=replicas, init=0.3, rng=seed,
                                  engine=engine)
    state = stepper.init_state()
    stepper.step(state, noise)

    def run(steps):
        t0 = time.perf_counter()
        for _ in range(steps):
            stepper.step(state, noise)
        return (time.perf_counter() - t0) / steps

    return run


def bench_engines(dims, repeat, full_seconds, exact_steps):
    rows = []
    for name, (N, k, B, R) in WORKLOADS.items():
        problem = MultiIndexProblem("he3", "he3", np.eye(k), n_neurons=N)
        print(f"  workload {name}: he3/he3, k = {k}, N = {N}, batch {B}, {R} replica(s)", flush=True)
        for d in dims:
            full = _timer(problem, "full", d, B, R, 1)
            exact = _timer(problem, "exact", d, B, R, 2)
            probe = full(2)
            steps_full = int(max(3, min(5000, full_seconds / probe)))
            t_full, t_exact = [], []
            for _ in range(repeat):
                t_full.append(full(steps_full))
                t_exact += [exact(exact_steps) for _ in range(EXACT_REPEAT)]
            tf, te = float(np.median(t_full)), float(np.median(t_exact))
            row = {"workload": name, "neurons": N, "k": k, "batch": B, "replicas": R, "d": d,
                   "full_steps_per_s": 1.0 / tf, "exact_steps_per_s": 1.0 / te, "ratio": tf / te,
                   "full_steps_timed": steps_full, "exact_steps_timed": exact_steps}
            rows.append(row)
            print(f"    d = {d:>7.0e}  full {1 / tf:>10.1f} steps/s   exact {1 / te:>9.1f} steps/s   "
                  f"full/exact time = {tf / te:>8.1f}x", flush=True)
    return rows


def _child_run(cmd, cwd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def bench_compare(pairs):
    """Whole-process ``popdyn compare`` (README Quick start), exact (default) vs --engine full."""
    base = [sys.executable, "-m", "popdyn", "compare", "--quiet"]
    cmds = {"exact (default)": base, "full (--engine full)": base + ["--engine", "full"]}
    times = {k: {"wall": [], "cpu": []} for k in cmds}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(pairs):
            for name, cmd in (cmds.items() if i % 2 == 0 else reversed(list(cmds.items()))):
                wall, cpu = _child_run(cmd, tmp)
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    out = {}
    for name, t in times.items():
        w, c = np.array(t["wall"]), np.array(t["cpu"])
        out[name] = {"wall_median_s": float(np.median(w)), "wall_min_s": float(w.min()), "wall_max_s": float(w.max()),
                     "cpu_median_s": float(np.median(c)), "cpu_min_s": float(c.min()), "cpu_max_s": float(c.max())}
        print(f"  popdyn compare, engine {name:<22s} wall {np.median(w):6.2f} s (range {w.min():.2f}-{w.max():.2f})   "
              f"cpu {np.median(c):6.2f} s (range {c.min():.2f}-{c.max():.2f})", flush=True)
    e, f = out["exact (default)"], out["full (--engine full)"]
    print(f"  full/exact: wall {f['wall_median_s'] / e['wall_median_s']:.2f}x, "
          f"cpu {f['cpu_median_s'] / e['cpu_median_s']:.2f}x", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (not for the figures)")
    ap.add_argument("--compare", type=int, default=0, metavar="PAIRS",
                    help="also time the whole process `popdyn compare`, exact vs full, this many interleaved pairs")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        dims, repeat, full_seconds, exact_steps = (10**2, 10**3), 2, 0.05, 50
    else:
        dims, repeat, full_seconds, exact_steps = DIMS, 3, 1.0, 2000
    print(f"popdyn multi-index exact engine benchmark ({platform.machine()}, numpy {np.__version__}, "
          f"{os.cpu_count()} cpus)")
    print("(a) exact vs full engine, steps/s (median of interleaved repetitions)")
    rows = bench_engines(dims, repeat, full_seconds, exact_steps)
    result = {"engines": rows}
    if args.compare:
        print(f"(b) whole process `popdyn compare`, {args.compare} interleaved pairs")
        result["compare"] = bench_compare(args.compare)
    print("\nSummary (full/exact time per step)")
    for name in WORKLOADS:
        print(f"  {name}: " + ", ".join(f"d = {r['d']:.0e}: {r['ratio']:.1f}x" for r in rows if r["workload"] == name))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
