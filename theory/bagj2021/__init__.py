r"""arXiv 2003.10409 — Ben Arous, Gheissari, Jagannath, "Online stochastic gradient descent on
non-convex losses from high-dimensional inference" (JMLR 22(106), 2021).

The paper's sample-complexity classification as checks (``popdyn verify 2003.10409``).
Each claim compares a *prediction* (the BAGJ law, and the alignment ODE of
:mod:`popdyn.models.single_index` with its :math:`\eta^2` term) with a *measurement* by a
different route: the exact d-free simulation of spherical online SGD
(:mod:`popdyn.models.single_index_sim`, cross-checked against the full d-dimensional
simulator in ``tests/test_single_index.py``).  See ``equations.md`` for the
equation-to-code map.

Setting: :math:`\sigma = \sigma^* = h_p` (information exponent ``p``), correlation loss,
one fresh sample per step (``B = 1``), start at :math:`m_0 = d^{-1/2}` (the typical overlap
of a random start), target :math:`m = 1/2` (weak recovery; :math:`|m|` for even ``p``,
where :math:`w \to -w` is an exact symmetry).  Steps: :math:`\eta = \eta_0 d^{-p/2}` for
``p >= 3`` (BAGJ's regime, ``equations.md``), :math:`\eta = \delta/d` for ``p <= 2``.

Claims
------
``escape_slope``
    The number of samples to reach :math:`m = 1/2` grows like :math:`d^{p-1}` (``p >= 3``),
    :math:`d\log d` (``p = 2``) and ``d`` (``p = 1``).  Measured: the log–log slope of the
    median first-passage sample count over ``R`` replicas against ``d`` (bootstrap SE over
    replicas).  Predicted: the slope of the law itself on the same grid, and the slope of
    the ODE's escape sample counts (:func:`~popdyn.models.single_index.escape_samples`).
    Passes when the ODE slope is closer to the claimed law than to any other candidate law
    (``d``, ``d log d``, ``d^2``, ``d^3``, ``d^4``, ``d^5`` fitted on the same grid) and the
    measured slope is within ``SLOPE_SE_FACTOR`` standard errors of that law's cell (the
    slopes nearer to it than to any other law): neighbouring laws differ by 1 in slope for
    ``p >= 3`` and by ``1/log d`` between ``d`` and ``d log d``, so this is the resolution at
    which the classification is stated, and the standard error (<= 0.09, resp. <= 0.008)
    is well below half of it: a slope of another law fails.  The table in ``details``
    gives medians and ODE counts.
``mean_field_h3``
    Reference escape times (``equations.md``): for ``p = 3``, :math:`\eta = 0.5 d^{-3/2}`, the ODE predicts 783, 3008,
    11954, 48042 steps to :math:`m = 1/2` at ``d = 32, 64, 128, 256``; the SGD median is
    within a factor 2 of it (BAGJ-regime fluctuations are O(1) relative, so the median and
    the mean path differ by an O(1) factor) and median/d² stays O(1).
"""

from __future__ import annotations

import math

import numpy as np

from popdyn.models.single_index import SingleIndexProblem, escape_samples
from popdyn.models.single_index_sim import first_passage
from popdyn.verification import Claim, ClaimResult

PAPER = "2003.10409"

__all__ = ["CLAIMS", "escape_slope_table", "law_cell", "law_slopes", "SETTINGS"]

#: Per information exponent: (step rule, eta0 or delta, quick grid, full grid).  The p = 4
#: step eta0 = 0.25 keeps the ODE's mean path escaping at d = 16 (for eta0 >= 0.5 the
#: m-dependent eta^2 term, C(m) = 4 + 96 m^2 + 432 m^4 + 320 m^6, stops it below 1/2 at small d).
SETTINGS = {
    1: ("delta", 0.5, (128, 512, 2048, 8192), (256, 1024, 4096, 16384, 65536)),
    2: ("delta", 0.5, (128, 512, 2048, 8192), (256, 1024, 4096, 16384, 65536)),
    3: ("eta0", 0.5, (32, 64, 128, 256), (32, 64, 128, 256, 512)),
    4: ("eta0", 0.25, (16, 32, 64), (16, 32, 64, 128)),
}
#: Replicas (quick, full) and the fraction that must arrive before a run stops (the median
#: needs > 1/2; 0.6 keeps bootstrap resamples of the median finite).
REPLICAS = (400, 1000)
STOP_FRACTION = 0.6
#: Bootstrap resamples of the replicas for the SE of the measured slope.
N_BOOTSTRAP = 300
#: The measured slope may lie this many bootstrap SE outside the claimed law's cell.  On the
#: quick p = 4 grid (d = 16..64) the finite-d slope sits below the law (ODE 2.83, measured
#: 2.66..2.94 over seeds 0-7, SE 0.06-0.08) at 1.5-2.3 SE from the d^2|d^3 boundary 2.5, so a
#: bare nearest-law cut failed about one run in a hundred; 3 SE (one-sided false alarm 1.3e-3
#: for a slope on the boundary) keeps the laws apart: the next law's slope is >= 0.5 away
#: (0.074 for d vs d log d, where the SE is <= 0.008).
SLOPE_SE_FACTOR = 3.0
#: Target level (weak recovery); the start is m0 = d^{-1/2}.
M_TARGET = 0.5
#: equations.md reference: mean-field ODE steps to m = 1/2, eta = 0.5 d^{-3/2}, m0 = d^{-1/2}.
REFERENCE_H3 = {32: 783, 64: 3008, 128: 11954, 256: 48042}
#: The reference values are rounded to integers.
REFERENCE_TOL = 0.5
#: equations.md: the SGD median over >= 48 runs is within a factor 2 of the ODE.
MEDIAN_FACTOR = 2.0


def _step(p: int, d: int) -> float:
    rule, value = SETTINGS[p][:2]
    return value / d if rule == "delta" else value * float(d) ** (-p / 2)


def _fit_slope(ds, values) -> float:
    return float(np.polyfit(np.log(np.asarray(ds, float)), np.log(np.asarray(values, float)), 1)[0])


def law_slopes(ds) -> dict:
    """Log–log slopes on the grid ``ds`` of the candidate laws ``d``, ``d log d``, ``d^2`` .. ``d^5``."""
    ds = np.asarray(ds, float)
    out = {"d": 1.0, "d log d": _fit_slope(ds, ds * np.log(ds))}
    out.update({f"d^{k}": float(k) for k in range(2, 6)})
    return out


def _claimed_law(p: int) -> str:
    return {1: "d", 2: "d log d"}.get(p, f"d^{p - 1}")


def _nearest(slope: float, laws: dict) -> str:
    return min(laws, key=lambda k: abs(laws[k] - slope))


def law_cell(law: str, laws: dict) -> tuple:
    """``(lo, hi)``: the slopes nearer to ``law`` than to any other of ``laws`` (midpoints).

    >>> law_cell("d^3", {"d": 1.0, "d^2": 2.0, "d^3": 3.0})
    (2.5, inf)
    """
    v = laws[law]
    below = [x for k, x in laws.items() if k != law and x < v]
    above = [x for k, x in laws.items() if k != law and x > v]
    return ((v + max(below)) / 2 if below else -math.inf, (v + min(above)) / 2 if above else math.inf)


def escape_slope_table(ps=(1, 2, 3, 4), *, quick: bool = True, rng=0, replicas: int | None = None) -> list:
    r"""Measured vs predicted escape slopes, one dict per information exponent ``p``.

    Keys: ``p``, ``law``, ``ds``, ``law_slope``, ``ode_slope``, ``measured_slope``,
    ``measured_se`` (bootstrap over replicas), ``medians`` (samples), ``ode`` (samples),
    ``nearest_measured``, ``nearest_ode``, ``alternatives`` (all candidate law slopes).
    """
    gen = np.random.default_rng(rng)
    R = replicas or REPLICAS[0 if quick else 1]
    rows = []
    for p in ps:
        ds = SETTINGS[p][2 if quick else 3]
        problem = SingleIndexProblem(f"he{p}", f"he{p}")
        samples, medians, odes = [], [], []
        for d in ds:
            eta = _step(p, d)
            fp = first_passage(problem, d, eta=eta, replicas=R, level=M_TARGET, absolute=(p % 2 == 0),
                               stop_fraction=STOP_FRACTION, rng=int(gen.integers(2**31)))
            samples.append(fp.samples)
            medians.append(fp.median_samples())
            odes.append(escape_samples(problem, d, eta=eta, m_target=M_TARGET))
        boot = []
        for _ in range(N_BOOTSTRAP):
            meds = [np.median(s[gen.integers(0, s.size, s.size)]) for s in samples]
            if all(math.isfinite(x) for x in meds):
                boot.append(_fit_slope(ds, meds))
        laws = law_slopes(ds)
        meas = _fit_slope(ds, medians) if all(math.isfinite(x) for x in medians) else math.nan
        ode = _fit_slope(ds, odes) if all(math.isfinite(x) for x in odes) else math.nan
        rows.append({
            "p": p, "law": _claimed_law(p), "ds": list(ds), "law_slope": laws[_claimed_law(p)],
            "ode_slope": ode, "measured_slope": meas, "measured_se": float(np.std(boot)) if boot else math.nan,
            "medians": medians, "ode": odes, "replicas": R,
            "nearest_measured": _nearest(meas, laws) if math.isfinite(meas) else None,
            "nearest_ode": _nearest(ode, laws) if math.isfinite(ode) else None, "alternatives": laws,
            "step": SETTINGS[p][:2],
        })
    return rows


def claim_escape_slope(quick: bool, rng):
    out = []
    for row in escape_slope_table(quick=quick, rng=int(rng.integers(2**31))):
        p, law = row["p"], row["law"]
        lo, hi = law_cell(law, row["alternatives"])
        slack = SLOPE_SE_FACTOR * row["measured_se"]
        ok = row["nearest_ode"] == law and lo - slack <= row["measured_slope"] <= hi + slack
        rule, val = row["step"]
        step = f"eta = {val}/d" if rule == "delta" else f"eta = {val} d^(-{p}/2)"
        table = ", ".join(f"d={d}: median {m:.0f} / ODE {o:.0f}" for d, m, o in
                          zip(row["ds"], row["medians"], row["ode"]))
        out.append(ClaimResult(
            PAPER, f"escape_slope (IE={p}, law {law})", predicted=round(row["law_slope"], 4),
            measured=f"{row['measured_slope']:.4f} +- {row['measured_se']:.4f}",
            tolerance=(f"ODE nearest to the law; measured in its cell [{lo:.3f}, {hi:.3f}] "
                       f"+- {SLOPE_SE_FACTOR:g} SE"), passed=bool(ok),
            details=(f"h{p}/h{p}, correlation loss, {step}, B = 1, m0 = d^-1/2, target |m| = {M_TARGET}, "
                     f"{row['replicas']} replicas (exact simulator). ODE slope {row['ode_slope']:.4f}; "
                     f"nearest law: measured {row['nearest_measured']}, ODE {row['nearest_ode']}; candidate "
                     f"slopes {({k: round(v, 3) for k, v in row['alternatives'].items()})}. {table}")))
    return out


def claim_mean_field_h3(quick: bool, rng):
    problem = SingleIndexProblem("he3", "he3")
    ds = (32, 64, 128) if quick else (32, 64, 128, 256)
    R = REPLICAS[0 if quick else 1]
    rows = []
    for d in ds:
        eta = 0.5 * d ** -1.5
        ode = escape_samples(problem, d, eta=eta)
        fp = first_passage(problem, d, eta=eta, replicas=R, stop_fraction=STOP_FRACTION,
                           rng=int(rng.integers(2**31)))
        med = fp.median_samples()
        ok = abs(ode - REFERENCE_H3[d]) <= REFERENCE_TOL and 1 / MEDIAN_FACTOR <= med / ode <= MEDIAN_FACTOR
        rows.append(ClaimResult(
            PAPER, f"mean_field_h3 (d={d})", predicted=REFERENCE_H3[d],
            measured=f"ODE {ode:.1f}; SGD median {med:.0f}", tolerance=f"ODE +-{REFERENCE_TOL}; median within "
            f"x{MEDIAN_FACTOR:g}", passed=bool(ok),
            details=(f"eta = 0.5 d^-3/2, m0 = d^-1/2, {R} replicas (exact simulator): median/ODE = "
                     f"{med / ode:.3f}, median/d^2 = {med / d ** 2:.3f}")))
    return rows


CLAIMS = [
    Claim(PAPER, "escape_slope",
          "online SGD needs d^(IE-1) samples (IE >= 3), d log d (IE = 2) and d (IE = 1) to reach weak recovery",
          claim_escape_slope),
    Claim(PAPER, "mean_field_h3",
          "for IE = 3 the alignment ODE with its eta^2 term predicts the SGD escape time up to an O(1) factor",
          claim_mean_field_h3),
]
