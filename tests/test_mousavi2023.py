"""Tests of the three-stage claim (theory/mousavi2023) and the SGD points of the spiked phase picture."""

import math

import numpy as np
import pytest

from popdyn.models.spiked import (SimulatedEscape, SpikedProblem, effective_dimension, escape_grid_simulation,
                                  escape_time_grid, plot_escape_grid, plot_escape_points)
from popdyn_theory.mousavi2023 import (CLAIMS, SLOPE_TOL, claim_three_stages, isotropic_escape_time, stage_exponents,
                                three_stage_points)

#: Start-of-flow rate rho' = A F'(rho) drops relative terms O(rho^2) and O(kappa <w,theta>^2 / (1+kappa));
#: at m0 = 1e-4 and d = 1e8 those are < 1e-6.
RATE_RTOL = 1e-5
#: ODE escape time vs T_iso(m0)/A for m0 -> 0: relative O(m0^2 log m0) + O(kappa/d) (m0 = 1e-3, d = 1e8).
FORMULA_RTOL = 1e-3
#: SGD median escape time vs the ODE (slow test): 8 replicas with spread ~0.05 in t give a median
#: standard error ~0.025 (5 %); allow 4 of them, which also covers the O(eta) and O(1/d) biases.
SIM_TIME_RTOL = 0.2


def _rho_dot(prob, state):
    """d m_Sigma / dt from the (p, q, S) overlap ODE by the chain rule (independent of the closed form)."""
    o = prob.overlaps(state)
    r = prob.ode_rhs(0.0, state)
    dP = (r["p"] + prob.kappa * prob.t_u * r["q"]) / (1 + prob.kappa)
    return float((dP / o["s"] - o["P"] * r["S"] / (2 * o["s"] ** 3))[0])


@pytest.mark.parametrize("kappa,align", [(0.0, 1.0), (50.0, 1.0), (1e3, 0.01), (300.0, 0.2), (20.0, -0.5)])
def test_normalized_start_rate_is_A_times_isotropic(kappa, align):
    """Near the equator the normalized flow (|w| = 1) moves m_Sigma at rate A F'(m), A = (d+kappa)/d_eff,
    and the preconditioned flow (|Sigma^1/2 w| = 1) at rate F'(m)."""
    d, m0 = 10 ** 8, 1e-4
    for flow, factor in (("normalized", (d + kappa) / effective_dimension(d, kappa, align)), ("preconditioned", 1.0)):
        prob = SpikedProblem("relu", "he4", kappa=kappa, align=align, flow=flow, d=d, a_star=-1.0)
        st = prob.initial_state(m0=m0)
        assert abs(_rho_dot(prob, st) / (factor * float(prob.dF(m0))) - 1) < RATE_RTOL
    u_theta2 = prob.t_u ** 2
    assert abs((d + kappa) / effective_dimension(d, kappa, align) - (1 + kappa * u_theta2)) < 1e-9 * (1 + kappa)


@pytest.mark.parametrize("kappa,align", [(50.0, 1.0), (1e3, 0.05), (10.0, 0.3)])
def test_normalized_escape_time_formula(kappa, align):
    d, m0 = 10 ** 8, 1e-3
    prob = SpikedProblem("relu", "he4", kappa=kappa, align=align, flow="normalized", d=d, a_star=-1.0)
    A = (d + kappa) / effective_dimension(d, kappa, align)
    t = prob.escape_time(prob.initial_state(m0=m0))
    assert abs(t * A / isotropic_escape_time(prob, m0) - 1) < FORMULA_RTOL


@pytest.mark.parametrize("r1,r2,stage,e", [(0.2, 0.05, 3, 1.0), (0.2, 0.3, 2, 0.8), (0.2, 0.6, 1, 0.4),
                                           (0.3, 0.45, 2, 0.7)])
def test_stage_exponents(r1, r2, stage, e):
    pred = stage_exponents(r1, r2, 4)
    assert pred["stage"] == stage and abs(pred["d_eff"] - e) < 1e-12
    assert abs(pred["pre"] - e) < 1e-12 and abs(pred["nor"] - (2 * e - 1)) < 1e-12


def test_three_stage_slopes_from_exact_deff():
    """The d_eff exponents of theory/mousavi2023/equations.md from the closed form at huge d (where the corrections vanish)."""
    ds = np.logspace(20, 30, 3)
    for r2, e in ((0.05, 1.0), (0.3, 0.8), (0.6, 0.4)):
        de = [effective_dimension(int(d), d ** r2, d ** -0.2) for d in ds]
        assert abs(np.polyfit(np.log(ds), np.log(de), 1)[0] - e) < 1e-3


def test_three_stage_points_shapes():
    pts = three_stage_points(0.2, 0.3, [1e4, 1e5])
    assert all(v.shape == (2,) for v in pts.values())
    assert np.all(pts["nor"] < pts["pre"])      # A > 1: the |w| = 1 normalized flow is faster in its own time


def test_three_stages_claim_quick_passes():
    rows = claim_three_stages(True, np.random.default_rng(0))
    assert len(rows) == 9 and all(r.passed for r in rows), [r.claim for r in rows if not r.passed]
    nor = [r for r in rows if "normalized" in r.claim and "stage 1" in r.claim][0]
    # the d_eff law for the preconditioned flow (slope 0.4) is clearly violated by the normalized flow in stage 1
    assert float(nor.measured.split()[1].rstrip(";")) < 0.4 - 10 * SLOPE_TOL
    assert "three_stages" in [c.name for c in CLAIMS]


# -------------------------------------------------------------------------------------------
# SGD points on the phase picture
# -------------------------------------------------------------------------------------------
def test_simulation_points_agree_with_ode_verdict():
    """d = 300, far from the boundary: the spherical flow stalls at (r1, r2) = (0, 0.3) (kappa = 5.5 << kappa_crit
    = 84.5) in the ODE and in SGD, and escapes at (0.1, 0.8) (ODE time 0.60) in both; the normalized flow
    escapes at (0, 0.3) and (0.2, 0.6) in both."""
    d = 300
    sph = escape_grid_simulation("relu", "he4", d, [(0.0, 0.3), (0.1, 0.8)], "spherical", a_star=-1.0, replicas=8,
                                 t_end=20.0, eta=1e-3, rng=0)
    nor = escape_grid_simulation("relu", "he4", d, [(0.0, 0.3), (0.2, 0.6)], "normalized", a_star=-1.0,
                                 replicas=8, t_end=20.0, eta=1e-3, rng=1)
    grid_sph = escape_time_grid("relu", "he4", d, [0.0], [0.3], "spherical", a_star=-1.0)
    assert math.isinf(sph[0].ode_time) and math.isinf(grid_sph[0, 0])
    assert sph[0].escaped_fraction == 0.0 and not sph[0].escaped and math.isinf(sph[0].median_time)
    assert np.all(np.abs(sph[0].m_final) < 0.5)
    assert sph[1].ode_escaped and sph[1].escaped_fraction == 1.0
    for res in nor:
        assert res.ode_escaped and res.escaped_fraction == 1.0
        assert res.median_time <= res.t_end
    assert isinstance(nor[0], SimulatedEscape) and nor[0].times.shape == (8,)


def test_simulation_uniform_init_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    res = escape_grid_simulation("relu", "he4", 200, [(0.0, 0.6), (0.0, 0.1)], "preconditioned", a_star=-1.0,
                                 replicas=3, t_end=1.0, eta=2e-3, init="uniform", rng=2)
    assert len(res) == 2 and all(r.times.shape == (3,) for r in res)
    r1, r2 = [0.0, 0.3], [0.1, 0.6]
    ax = plot_escape_grid(escape_time_grid("relu", "he4", 200, r1, r2, "preconditioned", a_star=-1.0), r1, r2)
    plot_escape_points(ax, res)
    assert len(ax.collections) >= 3        # mesh + one scatter per point
    ax.figure.savefig(tmp_path / "grid.png")
    ax2 = plot_escape_grid(np.full((2, 2), np.inf), r1, r2, overlay=res)
    assert len(ax2.collections) == 3
    with pytest.raises(TypeError, match="SimulatedEscape"):
        plot_escape_points(ax2, [(0.0, 0.1)])


@pytest.mark.parametrize("kwargs,match", [
    ({"points": [(0.1,)]}, "r1, r2"),
    ({"points": [(-0.1, 0.2)]}, "r1 >= 0"),
    ({"flow": "adam"}, "flow"),
    ({"eta": 0.0}, "eta"),
    ({"t_end": -1.0}, "t_end"),
    ({"level": 1.0}, "level"),
    ({"init": "warm"}, "init"),
    ({"d": 2}, "d"),
])
def test_escape_grid_simulation_bad_input(kwargs, match):
    args = {"d": 50, "points": [(0.0, 0.2)], "flow": "normalized", "t_end": 0.1, "eta": 0.01}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        escape_grid_simulation("relu", "he4", args.pop("d"), args.pop("points"), args.pop("flow"), **args)


@pytest.mark.slow
def test_simulation_escape_time_matches_ode():
    """Small step and minibatch 64 (noise-driven escape suppressed): the SGD median escape time of the
    normalized flow at (0, 0.6), d = 300, matches the ODE time (0.509)."""
    res = escape_grid_simulation("relu", "he4", 300, [(0.0, 0.6)], "normalized", a_star=-1.0, replicas=8,
                                 t_end=1.0, eta=6e-5, batch=64, rng=0)[0]
    assert res.escaped
    assert abs(res.median_time / res.ode_time - 1) < SIM_TIME_RTOL
