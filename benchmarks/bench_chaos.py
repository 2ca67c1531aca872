"""Wall time of the exact chaos projections (popdyn.chaos) against the feature size L and the
chaos degree k, for L symbolic and numeric; the Monte Carlo route at small L for comparison.

The exact route never forms the L coordinates: cumulants of the L independent pieces add, so the
cost does not depend on L (numeric L costs the symbolic computation plus one substitution).

Run:  python benchmarks/bench_chaos.py
"""

import time
import warnings

from popdyn.chaos import (MAX_CHAOS_DEGREE, ZeroSteinCoefficientWarning, chaos_projection, feature,
                          stein_lemma, stein_lemma_mc)
from popdyn.hermite import z_symbol

REPEATS = 3


def best(fn, repeats=REPEATS):
    """Best of ``repeats`` wall times (s) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    z = z_symbol()
    links = {"z^3": z ** 3, "z+z^2/2+z^3/6": z + z ** 2 / 2 + z ** 3 / 6, "z^6+z": z ** 6 + z}
    sizes = [None, 16, 256, 4096, 10 ** 6]
    print("exact stein_lemma(g, k, L): best of 3 wall times [ms]")
    print(f"{'g':<15} {'k':>2} " + " ".join(f"{('L symbolic' if L is None else f'L={L}'):>11}" for L in sizes)
          + f" {'chaos deg':>9}")
    for name, g in links.items():
        for k in range(1, 7):
            if 6 * k > MAX_CHAOS_DEGREE and name == "z^6+z":
                continue
            row = []
            for L in sizes:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ZeroSteinCoefficientWarning)
                    t, _ = best(lambda: stein_lemma(g, k, L))
                row.append(t)
            deg = (6 if name == "z^6+z" else 3) * k
            print(f"{name:<15} {k:>2} " + " ".join(f"{1e3 * t:>11.1f}" for t in row) + f" {deg:>9}")
    print()
    print("worst cases within the caps (one run each) [s]")
    for gdeg, k in [(10, 3), (9, 4), (6, 6), (3, 12)]:
        g = sum((i + 1) * z ** i for i in range(gdeg + 1))
        t, _ = best(lambda: chaos_projection(g, feature(k, None)), repeats=1)
        print(f"  deg g = {gdeg:>2}, k = {k:>2} (chaos degree {gdeg * k:>2}), L symbolic: {t:6.2f}")
    print()
    print("Monte Carlo stein_lemma_mc(g = z+z^2/2+z^3/6, k, L), 200000 samples [s] (cost grows with C(L+k, k))")
    for k, L in [(2, 4), (2, 16), (3, 8), (3, 16)]:
        t, res = best(lambda: stein_lemma_mc(links["z+z^2/2+z^3/6"], k, L, n_samples=200_000, rng=0), repeats=1)
        ex = float(stein_lemma(links["z+z^2/2+z^3/6"], k, L).err2)
        print(f"  k = {k}, L = {L:>2}: {t:6.2f}   err^2 = {res.err2:.4g} +- {res.err2_se:.2g} (exact {ex:.4g})")


if __name__ == "__main__":
    main()
