"""Benchmark the exact d-free committee simulator (issue 4, benchmarks (b) and (c)).

One command, every ratio measured side by side in the same run::

    python benchmarks/bench_exact_simulator.py            # full benchmark (~1-2 min)
    python benchmarks/bench_exact_simulator.py --quick    # smoke run (seconds)
    python benchmarks/bench_exact_simulator.py --json out.json

(b) Exact engine vs the full d-dimensional simulator at d = 1e2, 1e3, 1e4, 1e5, for
    the same problem (erf K = M = 2, trained second layer), minibatch, number of steps
    and replicas.  The full simulator is the committee model's registered
    ``engine="full"`` stepper (``popdyn.models.committee_sim``) and the vectorised
    full-d loop ``FullLoop`` below (materialised x, W, V; buffers preallocated; BLAS
    matmuls), which is also the fallback when no full stepper is registered.  Goal: >= 100x at d = 1e4.
(c) The exact engine's time per step at d = 1e2 vs d = 1e6.  Goal: within 1.2x.

Timing: both engines are driven through the stepper protocol (``init_state`` / ``step``),
i.e. exactly the loop :func:`popdyn.simulation.simulate` runs, without recording; each
measurement is the median over repetitions of ``steps`` steps, the repetitions of the
engines being compared interleaved so that changes of the machine's load hit both alike.
By default (``--full both``) (b) is measured against both full simulators, the
registered one and ``FullLoop``, so that the ratio is not an artefact of one
implementation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from popdyn.models.committee import CommitteeProblem  # noqa: E402
from popdyn.models.committee_exact import initial_overlaps  # noqa: E402
from popdyn.simulation import _lookup, make_stepper  # noqa: E402

#: Goals from the issue.
GOAL_B_RATIO_AT_1E4 = 100.0
GOAL_C_RATIO = 1.2
#: The exact engine is timed this many times per timing of the full engine (it is cheap, and
#: a run of a few ms is sensitive to the machine's load).
EXACT_REPEAT = 5


class FullLoop:
    """Vectorised full d-dimensional online SGD of the committee machine (fallback full
    simulator, same update as the exact engine, x materialised)."""

    def __init__(self, problem, d, eta, batch, replicas, init_scale, rng):
        self.p, self.d, self.B, self.R = problem, d, batch, replicas
        self.eta = eta
        self.eta_a = eta * problem.delta_a / problem.delta if problem.train_second_layer else None
        K, Mn = problem.K, problem.M
        lam, U = np.linalg.eigh(problem.G)
        F = U * np.sqrt(np.clip(lam, 0, None))
        E = np.linalg.qr(rng.standard_normal((d, Mn)))[0].T
        self.V = F @ E
        self.VT = np.ascontiguousarray(self.V.T)
        self.W0 = init_scale / np.sqrt(d) * rng.standard_normal((K, d))
        self.X = np.empty((replicas, batch, d))
        self.D = np.empty((replicas, K, d))

    def init_state(self):
        return {"W": np.broadcast_to(self.W0, (self.R,) + self.W0.shape).copy(),
                "a": np.broadcast_to(self.p.a0, (self.R, self.p.K)).copy()}

    def step(self, state, rng):
        p, X, W, a = self.p, self.X, state["W"], state["a"]
        rng.standard_normal(out=X)
        lam = np.matmul(W, X.transpose(0, 2, 1))  # (R, K, B)
        y = np.matmul(p.teacher(np.matmul(X, self.VT)), p.a_star)  # (R, B)
        s_lam = p.student(lam)
        delta = np.matmul(a[:, None, :], s_lam)[:, 0, :] - y
        c = p.student.derivative(lam) * a[:, :, None] * delta[:, None, :] * (self.eta / self.B)
        np.matmul(c, X, out=self.D)
        W -= self.D
        if self.eta_a is not None:
            a -= (self.eta_a / self.B) * np.matmul(s_lam, delta[:, :, None])[..., 0]


def _full_stepper(kind, problem, d, eta, batch, replicas, seed):
    """``(stepper, noise_rng)``: the registered full engine (``kind="registered"``) or FullLoop."""
    if kind == "loop":
        rng = np.random.default_rng(seed)
        return FullLoop(problem, d, eta, batch, replicas, 0.5, rng), rng
    return make_stepper(problem, d=d, eta=eta, batch=batch, replicas=replicas, init=0.5, rng=seed, engine="full")


def _timer(stepper, noise):
    """A function ``run(steps) -> seconds per step`` on a private state (one warm-up step)."""
    state = stepper.init_state()
    stepper.step(state, noise)

    def run(steps):
        t0 = time.perf_counter()
        for _ in range(steps):
            stepper.step(state, noise)
        return (time.perf_counter() - t0) / steps

    return run


def bench_b(problem, dims, replicas, batch, steps_for, repeat, kinds):
    """Per d: median seconds per step of each full simulator and of the exact engine, the
    repetitions interleaved (full, exact, full, exact, ...) so that load drifts hit both."""
    rows = []
    for d in dims:
        eta, steps = problem.eta(d), steps_for(d)
        exact = _timer(*make_stepper(problem, d=d, eta=eta, batch=batch, replicas=replicas, init=0.5, rng=2,
                                     engine="exact"))
        row = {"d": d, "steps": steps}
        for kind in kinds:
            full = _timer(*_full_stepper(kind, problem, d, eta, batch, replicas, 1))
            t_full, t_exact = [], []
            for _ in range(repeat):
                t_full.append(full(steps))
                t_exact += [exact(steps) for _ in range(EXACT_REPEAT)]
            del full
            tf, te = float(np.median(t_full)), float(np.median(t_exact))
            row[kind] = {"full_s_per_step": tf, "exact_s_per_step": te, "ratio": tf / te}
            print(f"  d = {d:>8.0e}  steps = {steps:>4d}  full[{kind:10s}] {tf * 1e3:10.3f} ms/step   "
                  f"exact {te * 1e3:8.4f} ms/step   full/exact = {tf / te:9.1f}x", flush=True)
        rows.append(row)
    return rows


def bench_c(problem, replicas, batch, steps, repeat, dims=(10**2, 10**6)):
    timers = {d: _timer(*make_stepper(problem, d=d, eta=problem.eta(d), batch=batch, replicas=replicas,
                                      init=0.5, rng=3, engine="exact")) for d in dims}
    samples = {d: [] for d in dims}
    for _ in range(repeat):  # interleaved, so that drifts of the machine's load affect both alike
        for d in dims:
            samples[d].append(timers[d](steps))
    out = {d: float(np.median(samples[d])) for d in dims}
    for d in dims:
        print(f"  d = {d:>8.0e}   exact {out[d] * 1e6:9.2f} us/step", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (not for the goals)")
    ap.add_argument("--replicas", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--full", choices=("registered", "loop", "both"), default="both",
                    help="full simulator(s) to compare with: the registered engine='full' stepper, the "
                         "FullLoop of this script, or both (default; 'registered' falls back to 'loop' when "
                         "no full stepper is registered)")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)

    problem = CommitteeProblem("erf", "erf", K=2, M=2, train_second_layer=True)
    R, B = args.replicas, args.batch
    try:
        _lookup(problem, "full")
        registered = True
    except TypeError:
        registered = False
    kinds = {"registered": ["registered"], "loop": ["loop"], "both": ["registered", "loop"]}[args.full]
    if not registered:
        kinds = ["loop"]
    if args.quick:
        dims_b, steps_for, rep_b, steps_c, rep_c = (10**2, 10**3), (lambda d: 20), 3, 200, 3
    else:
        # enough steps that each full timing lasts ~1 s or more; the exact engine the same steps
        dims_b = (10**2, 10**3, 10**4, 10**5)
        steps_for = lambda d: int(min(2000, max(10, 2e8 / (R * B * d))))  # noqa: E731
        rep_b, steps_c, rep_c = 3, 2000, 15
    print(f"popdyn exact committee simulator benchmark ({platform.machine()}, numpy {np.__version__}, "
          f"{os.cpu_count()} cpus); erf K = M = 2, trained second layer, R = {R} replicas, batch B = {B}")
    print("full simulators: " + ", ".join(
        {"registered": "registered = popdyn.models.committee_sim (engine='full')",
         "loop": "loop = FullLoop of this script (own vectorised full-d loop)"}[k] for k in kinds))
    initial_overlaps(problem, 100, init=0.5, rng=0)  # import/warm-up

    print("(b) exact vs full, same steps and replicas (median of interleaved repetitions)")
    rows = bench_b(problem, dims_b, R, B, steps_for, rep_b, kinds)
    print("(c) exact engine, time per step vs d (interleaved repetitions)")
    c = bench_c(problem, R, B, steps_c, rep_c)
    ratio_c = c[10**6] / c[10**2]

    print("\nSummary")
    for r in rows:
        print(f"  (b) d = {r['d']:.0e}: " + ", ".join(f"full[{k}]/exact = {r[k]['ratio']:.1f}x" for k in kinds))
    row4 = next((r for r in rows if r["d"] == 10**4), None)
    if row4 is not None:
        worst = min(row4[k]["ratio"] for k in kinds)
        print(f"  (b) goal >= {GOAL_B_RATIO_AT_1E4:.0f}x at d = 1e4 (worst full simulator): {worst:.1f}x -> "
              f"{'MET' if worst >= GOAL_B_RATIO_AT_1E4 else 'NOT MET'}")
    print(f"  (c) time/step d=1e6 / d=1e2 = {ratio_c:.3f} (goal within {GOAL_C_RATIO}x: "
          f"{'MET' if max(ratio_c, 1 / ratio_c) <= GOAL_C_RATIO else 'NOT MET'})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"replicas": R, "batch": B, "full_simulators": kinds, "b": rows,
                       "c": {str(k): v for k, v in c.items()}, "c_ratio": ratio_c}, fh, indent=2)


if __name__ == "__main__":
    main()
