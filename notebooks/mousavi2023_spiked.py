# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Feature learning under a spiked covariance (arXiv 2309.03843)
#
# Mousavi-Hosseini, Wu, Suzuki and Erdogdu study one neuron learning a single-index target when
# the inputs have a spiked covariance. popdyn implements a **reconstruction** of their model
# (`theory/mousavi2023/equations.md`; the normalisations were recalled, not copied from the paper):
#
# $$x \sim N(0,\Sigma),\quad \Sigma = \frac{I_d + \kappa\,\theta\theta^\top}{1+\kappa}\ (\|\Sigma\|_{op}=1),\quad
#   y = a^* g(\langle u, x\rangle),\quad u^\top\Sigma u = 1,\quad \cos\alpha = \frac{\langle\theta,u\rangle}{\|u\|}.$$
#
# The preactivation pair is Gaussian with variances $s^2 = w^\top\Sigma w$ and 1 and correlation
# $m_\Sigma = w^\top\Sigma u/s$, so with $F(m) = a^*\sum_j c_j\alpha_j m^j$ (Hermite coefficients of
# the student $c_j$ and of the link $\alpha_j$) the three flows are
#
# * **spherical**: $\|w\| = 1$, $R = \tfrac12 E[\phi(\langle w,x\rangle)^2] - E[\phi(\langle w,x\rangle)y]$;
#   for ReLU $R = s^2/4 - sF(m_\Sigma)$, and the $s^2/4$ term repels $w$ from the spike;
# * **normalized** ("batch norm"): $\phi(\langle w,x\rangle/s)$, so $R = \text{const} - F(m_\Sigma)$; $\|w\| = 1$;
# * **preconditioned**: $\dot w = -\Sigma^{-1}\nabla R$ on the normalized loss; in whitened coordinates it is the
#   isotropic flow, $\dot m = (1-m^2)F'(m)$ with $\|\Sigma^{1/2}w\| = 1$.
#
# The start matters through the **effective dimension**: for $w_0$ uniform on the sphere,
# $E[m_\Sigma(w_0)^2] \approx 1/d_{\rm eff}$ with
#
# $$d_{\rm eff} = \frac{\operatorname{tr}\Sigma\,(u^\top\Sigma u)}{u^\top\Sigma^2u}
#   = \frac{(d+\kappa)(1+\kappa\cos^2\alpha)}{1+(2\kappa+\kappa^2)\cos^2\alpha}.$$
#
# Throughout: ReLU neuron, target $-h_4$ (so $c_4\alpha_4 > 0$, information exponent $s = 4$).
# Set `POPDYN_FAST=1` for the small sizes the test suite uses.

# %%
import os
from pathlib import Path

import matplotlib

if os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from popdyn.models.spiked import (SpikedProblem, effective_dimension, escape_grid_simulation, escape_time_grid,
                                  kappa_critical, mc_initial_overlap, plot_escape_grid, plot_escape_points)
from popdyn.plot import save_figure
from popdyn.simulation import simulate
from popdyn_theory.mousavi2023 import STAGE_POINTS, isotropic_escape_time, stage_exponents, three_stage_points

FAST = os.environ.get("POPDYN_FAST", "0") == "1"
OUT = Path(os.environ.get("POPDYN_NOTEBOOK_OUT", "notebook_output"))
OUT.mkdir(parents=True, exist_ok=True)
STUDENT, TEACHER, A_STAR = "relu", "he4", -1.0


def problem(kappa, align, flow, d):
    return SpikedProblem(STUDENT, TEACHER, kappa=kappa, align=align, flow=flow, d=d, a_star=A_STAR)


def ode_curves(prob, t_end, n_times=120):
    """cos(w, u) and m_Sigma along the overlap ODE from the typical start (eps = d^-1/2)."""
    traj = prob.integrate(prob.initial_state(), t_end, n_times=n_times, method="LSODA")  # stiff near the end
    o = prob.overlaps({k: traj.overlaps[k][:, 0, 0] for k in ("p", "q", "S")})
    return traj.t, o["cos"], o["m"]


# %% [markdown]
# ## 1. Effective dimension against Monte Carlo
# $E[m_\Sigma(w_0)^2]$ for uniform $w_0$ (exact two-coordinate sampler) against $1/d_{\rm eff}$; the
# approximation is good for $\kappa \ll d$ and degrades as $\kappa/d$ grows.

# %%
d = 4000
kappas = np.logspace(0, 3.3, 6 if FAST else 14)
n_mc = 20_000 if FAST else 400_000
fig, ax = plt.subplots(figsize=(5.2, 3.6))
for align in (1.0, 0.1, 0.01):
    mc = np.array([mc_initial_overlap(d, k, align, n_samples=n_mc, rng=i)[0] for i, k in enumerate(kappas)])
    pred = np.array([1 / effective_dimension(d, k, align) for k in kappas])
    line, = ax.loglog(kappas, pred, "-", label=f"1/d_eff, cos α = {align:g}")
    ax.loglog(kappas, mc, "o", color=line.get_color(), ms=4)
    print(f"cos = {align:5g}: MC / (1/d_eff) =", np.round(mc / pred, 3).tolist())
ax.set_xlabel(r"$\kappa$")
ax.set_ylabel(r"$E[m_\Sigma(w_0)^2]$  (dots: Monte Carlo)")
ax.set_title(f"d = {d}")
ax.legend(fontsize=8)
save_figure(fig, OUT / "deff_vs_mc.png")

# %% [markdown]
# ## 2. Stall against escape: the three flows at two spike sizes
# $u = \theta$ (the spike is perfectly aligned with the target), $d = 1000$, start
# $\langle w_0,\theta\rangle = d^{-1/2}$. At $\kappa = 50 < \kappa_{crit} \approx 165.5$ the spherical flow
# returns to the equator; at $\kappa = 500$ it escapes but to a **biased** point ($\cos \approx 0.18$),
# while the normalized and preconditioned flows reach $\cos = 1$.

# %%
d = 1000
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
print(f"{'kappa':>6} {'flow':>15} {'m_Sigma(0)':>10} {'T(m_Sigma=1/2)':>15} {'T(m_Sigma=0.9)':>15} {'final cos':>10}")
for ax, kappa in zip(axes, (50.0, 500.0)):
    for flow in ("spherical", "normalized", "preconditioned"):
        p = problem(kappa, 1.0, flow, d)
        t, cos, _ = ode_curves(p, 1e6)
        st = p.initial_state()
        t_esc = p.escape_time(st)
        print(f"{kappa:6g} {flow:>15} {float(p.overlaps(st)['m'][0]):10.4f} {t_esc:15.4g} "
              f"{p.escape_time(st, level=0.9):15.4g} {p.run_to_convergence(st, 1e6)['cos']:10.4f}")
        ax.semilogx(t[1:], cos[1:], label=flow)
    ax.set_title(f"ODE, d = {d}, κ = {kappa:g}, u = θ")
    ax.set_xlabel("t")
axes[0].set_ylabel(r"$\cos(w, u)$")
axes[0].legend(fontsize=8)
save_figure(fig, OUT / "stall_vs_escape_ode.png")

# %% [markdown]
# ### Finite-d online SGD on top of the ODE
# At modest $d = 200$ ($\kappa_{crit} \approx 65$), online SGD (minibatch $B = 16$, step $\eta = 0.02$, or
# $0.004$ for the preconditioned flow whose whitened-coordinate noise is larger; time
# $t = \eta\cdot$steps) from the ODE's start, κ = 10 (spherical stalls) and κ = 100 (spherical escapes to
# its biased point). Dots: median over replicas of $|\cos(w,u)|$; lines: ODE. At this small $d$ the SGD
# noise speeds up the escapes of the normalized flow (the fluctuations of $m_\Sigma$ are comparable to
# $m_0$); it does not rescue the spherical flow at κ = 10, whose equator is attracting. The preconditioned
# SGD lags its ODE at these steps and approaches it as η shrinks (κ = 100, median |cos| at t = 20:
# 0.37, 0.61, 0.84 for η = 4e-3, 1e-3, 2.5e-4, ODE 0.998).

# %%
d_sim = 200
batch = 16
# The preconditioned step is isotropic SGD in whitened coordinates: its noise pushes m_Sigma to the
# equator at a rate ~ eta d / B, which must stay well below the signal ~ m0^2, so it needs a smaller step.
etas = {"spherical": 0.02, "normalized": 0.02, "preconditioned": 0.004 if FAST else 0.001}
t_end = 20.0 if FAST else 60.0
reps = 3 if FAST else 12
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, kappa in zip(axes, (10.0, 100.0)):
    for flow in ("spherical", "normalized", "preconditioned"):
        p = problem(kappa, 1.0, flow, d_sim)
        t, cos, _ = ode_curves(p, t_end)
        line, = ax.semilogx(t[1:], cos[1:], label=flow)
        m0 = float(p.overlaps(p.initial_state())["m"][0])
        traj = simulate(p, d=d_sim, algorithm="sgd", eta=etas[flow], t_end=t_end, batch=batch, replicas=reps, init=m0,
                        rng=1, n_record=25, progress=False)
        ax.semilogx(traj.t[1:], np.median(np.abs(traj.overlaps["m_u"]), axis=1)[1:], "o", ms=3,
                    color=line.get_color())
    ax.set_title(f"d = {d_sim}, κ = {kappa:g}: ODE (lines), SGD (dots)")
    ax.set_xlabel("t")
axes[0].set_ylabel(r"$|\cos(w, u)|$")
axes[0].legend(fontsize=8)
save_figure(fig, OUT / "stall_vs_escape_sgd.png")

# %% [markdown]
# ## 3. The escape threshold κ_crit of the spherical flow
# Bisection on the overlap ODE; to leading order $s|c_s|\epsilon_0^{s-2}(1+\kappa)^{(s-1)/2} = \kappa/(2(1+\kappa))$
# with $\epsilon_0 = d^{-1/2}$, so $\kappa_{crit} \propto d^{2/3}$ for $s = 4$.

# %%
from scipy.optimize import brentq  # noqa: E402

ds = np.logspace(2.5, 5, 4 if FAST else 8)
kc = np.array([kappa_critical(int(dd), rtol=1e-4) for dd in ds])
c4 = abs(problem(0.0, 1.0, "normalized", 100).gamma[4])
lead = np.array([brentq(lambda k: 4 * c4 / dd * (1 + k) ** 1.5 - k / (2 * (1 + k)), 1.0, 1e7) for dd in ds])
slope = np.polyfit(np.log(ds), np.log(kc), 1)[0]
print("d:         ", np.round(ds).astype(int).tolist())
print("kappa_crit:", np.round(kc, 1).tolist())
print("leading:   ", np.round(lead, 1).tolist())
print(f"log-log slope {slope:.3f} (asymptotic 2/3)")
fig, ax = plt.subplots(figsize=(4.8, 3.4))
ax.loglog(ds, kc, "o-", label=f"ODE bisection (slope {slope:.2f})")
ax.loglog(ds, lead, "--", label="leading order")
ax.set_xlabel("d")
ax.set_ylabel(r"$\kappa_{crit}$")
ax.legend(fontsize=8)
save_figure(fig, OUT / "kappa_crit_vs_d.png")

# %% [markdown]
# ## 4. Phase picture over $(r_1, r_2)$: $\kappa = d^{r_2}$, $\cos\alpha = d^{-r_1}$
# Colour: $\log_{10}$ of the ODE time for $|m_\Sigma|$ to reach 1/2 from the typical start (grey: the flow
# stalls at the equator). Markers: online SGD at a few points (filled: most replicas escaped by $t_{end}$,
# open: stalled), with the escaped fraction. The SGD verdict is relative to the horizon $t_{end}$; points
# whose ODE time exceeds it should be open.

# %%
d_grid = 300
r1_values = np.linspace(0.0, 0.5, 6 if FAST else 11)
r2_values = np.linspace(0.0, 0.8, 5 if FAST else 17)
sim_points = [(0.0, 0.2), (0.0, 0.4), (0.2, 0.6), (0.1, 0.8)]
t_sim, eta_sim, batch_sim = (6.0 if FAST else 10.0), 2e-3, 8
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
table = {}
for ax, flow in zip(axes, ("spherical", "normalized", "preconditioned")):
    times = escape_time_grid(STUDENT, TEACHER, d_grid, r1_values, r2_values, flow, a_star=A_STAR)
    plot_escape_grid(times, r1_values, r2_values, ax=ax, title=f"{flow}, d = {d_grid}")
    sims = escape_grid_simulation(STUDENT, TEACHER, d_grid, sim_points, flow, a_star=A_STAR,
                                  replicas=3 if FAST else 8, t_end=t_sim, eta=eta_sim, batch=batch_sim, rng=3)
    plot_escape_points(ax, sims)
    table[flow] = (times, sims)
axes[0].legend(fontsize=7, loc="lower right")
save_figure(fig, OUT / "phase_picture.png")
print(f"SGD points (d = {d_grid}, eta = {eta_sim:g}, B = {batch_sim}, t_end = {t_sim:g}):")
print(f"{'flow':>15} {'(r1, r2)':>11} {'ODE time':>10} {'SGD escaped':>12} {'SGD median t':>13} {'agree':>6}")
for flow, (_, sims) in table.items():
    for r in sims:
        print(f"{flow:>15} {str((r.r1, r.r2)):>11} {r.ode_time:10.4g} {r.escaped_fraction:12.0%} "
              f"{r.median_time:13.4g} {str(r.escaped == r.ode_escaped):>6}")

# %% [markdown]
# ## 5. The three stages
# At fixed $r_1$, one $r_2$ per stage: $r_2 < r_1$ ($d_{\rm eff} \sim d$), $r_1 < r_2 < 2r_1$
# ($d_{\rm eff}\sim d^{1-2(r_2-r_1)}$), $r_2 > 2r_1$ ($d_{\rm eff}\sim d^{1-r_2}$). From $m_0 = d_{\rm eff}^{-1/2}$ the
# preconditioned flow ($\|\Sigma^{1/2}w_0\|=1$) needs $T \approx d_{\rm eff}^{(s-2)/2}/(s(s-2)|c_s\alpha_s|)$
# (`theory/mousavi2023/equations.md`). The normalized flow ($\|w_0\| = 1$) starts at rate $\dot m = A\,F'(m)$ with
# $A = (1+\kappa)\|\Sigma u\|^2 = (d+\kappa)/d_{\rm eff}$, so $T_{\rm nor} \approx T_{\rm pre}\,d_{\rm eff}/(d+\kappa)$
# and its
# exponent is $s e/2 - 1$, not $(s-2)e/2$ (claim `three_stages`).

# %%
r1 = 0.2
ds = np.logspace(4, 10, 5 if FAST else 13)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
print(f"{'stage':>5} {'r2':>5} | {'d_eff pred':>10} {'meas':>7} | {'T_pre pred':>10} {'meas':>7} | "
      f"{'T_nor pred':>10} {'meas':>7} | {'d_eff law for T_nor':>20}")
for ax, r2 in zip(axes, STAGE_POINTS[r1]):
    pred = stage_exponents(r1, r2, 4)
    pts = three_stage_points(r1, r2, ds)
    meas = {k: np.polyfit(np.log(ds), np.log(pts[k]), 1)[0] for k in ("d_eff", "pre", "nor")}
    print(f"{pred['stage']:>5} {r2:5g} | {pred['d_eff']:10.3f} {meas['d_eff']:7.3f} | {pred['pre']:10.3f} "
          f"{meas['pre']:7.3f} | {pred['nor']:10.3f} {meas['nor']:7.3f} | {pred['pre']:20.3f}")
    for key, lab in (("d_eff", r"$d_{\rm eff}$"), ("pre", r"$T_{\rm pre}$"), ("nor", r"$T_{\rm nor}$")):
        ax.loglog(ds, pts[key], "o-", ms=3, label=f"{lab}: slope {meas[key]:.2f} (pred {pred[key]:.2f})")
    ax.loglog(ds, pts["nor_formula"], "k:", lw=1, label=r"$T_{\rm iso}(m_0)/A$")
    ax.set_title(f"stage {pred['stage']}: r1 = {r1:g}, r2 = {r2:g}")
    ax.set_xlabel("d")
    ax.legend(fontsize=7)
save_figure(fig, OUT / "three_stages.png")

# %% [markdown]
# ## 6. Preconditioning removes the κ dependence
# From one common start $m_\Sigma(w_0) = m_0$, the preconditioned flow's escape time is the isotropic
# $T_{\rm iso}(m_0) = \int_{m_0}^{1/2} dm/((1-m^2)F'(m))$ for every κ and alignment. The normalized flow's time
# depends on κ through $A(\kappa,\alpha) = 1 + \kappa\langle u,\theta\rangle^2$: $T_{\rm nor} \approx T_{\rm iso}(m_0)/A$
# for small $m_0$ (in its own normalisation $\|w\| = 1$; this is flow time, not a sample count).

# %%
d, m0 = 10_000, 0.05
kappas = np.logspace(0, 3, 7 if FAST else 19)
fig, ax = plt.subplots(figsize=(5.4, 3.8))
for align, mk in ((1.0, "o"), (0.1, "s")):
    t_pre, t_nor, t_form = [], [], []
    for k in kappas:
        pre, nor = problem(k, align, "preconditioned", d), problem(k, align, "normalized", d)
        t_pre.append(pre.escape_time(pre.initial_state(m0=m0)))
        t_nor.append(nor.escape_time(nor.initial_state(m0=m0)))
        t_form.append(isotropic_escape_time(pre, m0) * effective_dimension(d, k, align) / (d + k))
    ax.loglog(kappas, t_pre, mk + "-", ms=4, label=f"preconditioned, cos α = {align:g}")
    ax.loglog(kappas, t_nor, mk + "--", ms=4, label=f"normalized, cos α = {align:g}")
    ax.loglog(kappas, t_form, "k:", lw=1)
    print(f"cos = {align:g}: T_pre range {min(t_pre):.6g}..{max(t_pre):.6g}; "
          f"T_nor / (T_iso/A) = {np.round(np.array(t_nor) / np.array(t_form), 3).tolist()}")
ax.set_xlabel(r"$\kappa$")
ax.set_ylabel(r"time to $m_\Sigma = 1/2$ from $m_0 = 0.05$")
ax.legend(fontsize=7)
save_figure(fig, OUT / "preconditioning.png")
