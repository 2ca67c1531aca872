"""Wall time to compute the Hermite coefficients of every registered activation to degree 30,
cold (fresh process, first call) and cached (second call), side by side.

Run:  python benchmarks/bench_activations.py
"""

import time

from popdyn.activations import _NAMES, _SPEC_CACHE, get_activation

DEGREE = 30


def main():
    specs = list(_NAMES) + ["he3", "he10", "hermite:0,0,1,0.5", "poly:z**4-6*z**2+3"]
    print(f"{'activation':<22} {'cold [ms]':>10} {'cached [us]':>12} {'ratio':>8}")
    tot_cold = tot_hot = 0.0
    for s in specs:
        t0 = time.perf_counter()
        a = get_activation(s)
        a.coefficients(DEGREE)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(100):
            get_activation(s).coefficients(DEGREE)
        hot = (time.perf_counter() - t0) / 100
        tot_cold += cold
        tot_hot += hot
        print(f"{s:<22} {cold * 1e3:>10.2f} {hot * 1e6:>12.1f} {cold / hot:>8.0f}x")
    print(f"{'total':<22} {tot_cold * 1e3:>10.2f} {tot_hot * 1e6:>12.1f} {tot_cold / tot_hot:>8.0f}x")
    print(f"(cache entries: {len(_SPEC_CACHE)}; 'cold' includes the first import of scipy/sympy where used)")


if __name__ == "__main__":
    main()
