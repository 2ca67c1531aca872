"""Wall time of the multi-index overlap ODE for N = 1000 neurons and k = 10 to convergence,
against the same ODE for one neuron (so the ratio shows what vectorising over neurons buys).

Run:  python benchmarks/bench_ode.py
"""

import time

import numpy as np

import popdyn

N, K, D = 1000, 10, 400
#: For odd p a neuron whose initial overlaps are all negative (probability 2^-k) creeps to
#: the equator algebraically (|u| ~ 1/(p t)), so its speed ~ t^-2 sets the convergence time.
CONVERGENCE_TOL = {"he4": 1e-8, "he3": 1e-6}


def run(n_neurons: int, spec: str, seed: int = 0):
    tol = CONVERGENCE_TOL[spec]
    problem = popdyn.MultiIndexProblem(spec, spec, popdyn.gram("orthogonal", K), n_neurons=n_neurons)
    _, _, u0 = popdyn.initial_state(problem, D, init="uniform", rng=seed)
    t0 = time.perf_counter()
    traj = popdyn.integrate(problem, np.asarray(u0), 1e6, convergence_tol=tol, n_times=50)
    return time.perf_counter() - t0, traj


def main():
    print(f"multi-index u-ODE (DOP853, rtol 1e-10), k = {K}, u0 from Haar neurons in d = {D}, "
          f"until the largest speed < {CONVERGENCE_TOL}")
    print(f"{'activation':<10} {'N=1 [s]':>9} {'N=1000 [s]':>11} {'t_conv':>10} {'per-neuron ratio':>17}")
    run(1, "he4")  # warm-up: imports
    for spec in ("he4", "he3"):
        t1, _ = run(1, spec)
        tn, traj = run(N, spec)
        print(f"{spec:<10} {t1:>9.3f} {tn:>11.3f} {traj.t[-1]:>10.4g} "
              f"{tn / (N * t1):>16.4f}x   ({traj.message})")
    print("per-neuron ratio = wall(N=1000) / (1000 * wall(N=1)); below 1 means vectorisation pays.")


if __name__ == "__main__":
    main()
