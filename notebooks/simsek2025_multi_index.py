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
# # Multi-index gradient flow with correlation loss (arXiv 2411.08798)
#
# Şimşek, Bendjeddou and Hsu study neurons on the sphere trained by gradient flow on the
# correlation loss against a multi-index teacher `f*(x) = Σ_j σ*(v_j·x)`. This notebook
# reproduces three of their results with popdyn:
#
# 1. the **threshold β_c** at which the average of equiangular index vectors turns from a
#    saddle into a minimum, `β_c = (p−2)/(k+p−2)` for `σ = σ* = h_p`, and its
#    generalisation to mixed Hermite activations;
# 2. the **smallest Riemannian-Hessian eigenvalue** at the average point as a function of β;
# 3. the **overlap ODE against finite-d online SGD** from the same start, and how their
#    deviation shrinks as `d` grows.
#
# Set `POPDYN_FAST=1` for the small sizes the test suite uses.

# %%
import os
from pathlib import Path

import matplotlib

if os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import popdyn
from popdyn.plot import plot_comparison, plot_eigenvalue_curve, save_figure

FAST = os.environ.get("POPDYN_FAST", "0") == "1"
OUT = Path(os.environ.get("POPDYN_NOTEBOOK_OUT", "notebook_output"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. β_c for pure and mixed Hermite activations
# `popdyn.threshold` solves for β_c exactly (sympy) when the activations are polynomials and
# numerically (sign change of the smallest tangent eigenvalue) otherwise.

# %%
ks = (2, 3, 5, 10)
rows = []
for spec in ("he3", "he4", "he5", "hermite:0,0,0,1,0.5", "hermite:0,0,0.3,1"):
    res = [popdyn.threshold(spec, spec, k) for k in ks]
    rows.append((spec, [r.beta_c for r in res], res[0].kind_below, res[0].kind_above))
print(f"{'sigma = sigma*':<22}" + "".join(f"{'k=' + str(k):>12}" for k in ks) + "   below -> above")
for spec, betas, below, above in rows:
    print(f"{spec:<22}" + "".join(f"{b:>12.6f}" for b in betas) + f"   {below} -> {above}")
for p in (3, 4, 5):
    for k, b in zip(ks, rows[p - 3][1]):
        assert abs(b - (p - 2) / (k + p - 2)) < 1e-12

# %% [markdown]
# ## 2. Smallest tangent eigenvalue at the average point
# Below β_c the average point has a negative in-span eigenvalue (a saddle). Above β_c it is a
# minimum, so gradient flow started nearby cannot separate the index vectors.

# %%
betas = np.linspace(0.0, 0.95, 40 if FAST else 200)
fig, ax = plt.subplots(figsize=(5.5, 3.8))
for spec, k in (("he3", 3), ("he4", 3), ("hermite:0,0,0,1,1", 3)):
    curve = popdyn.smallest_eigenvalue_curve(spec, spec, k, betas)
    bc = popdyn.threshold(spec, spec, k).beta_c
    line, = ax.plot(curve.beta, curve.smallest, label=f"{spec}, k={k}: β_c = {bc:.4f}")
    ax.axvline(bc, color=line.get_color(), ls=":", lw=1)
ax.axhline(0, color="0.6", lw=0.8)
ax.set_xlabel(r"index-vector overlap $\beta$")
ax.set_ylabel(r"smallest in-span tangent eigenvalue")
ax.set_ylim(-3, 3)
ax.legend(fontsize=8)
save_figure(fig, OUT / "eigenvalue_vs_beta.png")

# %% [markdown]
# β_c for `σ = σ* = h_3 + c·h_4` interpolates between the pure-degree thresholds
# `1/(k+1)` (c = 0) and `2/(k+2)` (c → ∞):

# %%
cs = np.linspace(0, 5, 6 if FAST else 26)
fig, ax = plt.subplots(figsize=(5.5, 3.8))
for k in (2, 3, 5, 10):
    bc = [popdyn.threshold(f"hermite:0,0,0,1,{c:g}", f"hermite:0,0,0,1,{c:g}", k).beta_c for c in cs]
    ax.plot(cs, bc, "o-", ms=3, label=f"k = {k}")
ax.set_xlabel(r"weight $c$ of $h_4$ in $\sigma = h_3 + c\,h_4$")
ax.set_ylabel(r"$\beta_c$")
ax.legend(fontsize=8)
save_figure(fig, OUT / "beta_c_vs_c.png")

# %% [markdown]
# ## 3. Predicted against simulated
# Online SGD in `d` dimensions with step `η = δ/d` and minibatch `B` is compared with the
# overlap ODE. The ODE includes the leading normalisation term `−η(d−1)/(2B)·C(u)·u`.
# All replicas start from the same weights, so the replica mean is directly comparable
# with the single ODE run. The verdict tests every recorded time and overlap: the ODE must
# lie within `z*·SE + c/√d` of the replica mean (Bonferroni z over all points, plus the
# finite-size allowance); the plot's band is exactly that band.

# %%
problem = popdyn.MultiIndexProblem("he3", "he3", popdyn.gram("orthogonal", 3), n_neurons=4)
d = 300 if FAST else 1000
res = popdyn.compare(problem, d=d, t_end=5.0, eta=0.5 / d, batch=32, replicas=8, init=0.3, rng=0, progress=False)
v = res.verdict
print(f"d = {d}: verdict {'agree' if v.agree else 'DISAGREE'}: max |u_ode - mean u_sim| = {res.max_abs_deviation:.4f} "
      f"at t = {v.max_deviation.t:.3g} ({v.max_deviation.label}); {v.fraction_within:.0%} of {v.n_points} points "
      f"within z*SE + c/sqrt(d) (final directions agree: {res.agreement:.0%})")
print("rule:", v.rule)
fig = plot_comparison(res, OUT / "compare.png")

# %% [markdown]
# ### The deviation shrinks as d grows
# With `η = δ/d` the replica-mean noise is `O(√(δt/(dBR)))` and the terms the ODE drops are
# `O(1/d)`, so the deviation should fall at least like `d^{-1/2}`. To isolate that effect,
# every `d` starts from the same initial overlaps `u0`. We average the RMS deviation over
# seeds, because the maximum over the grid is a noisy extreme value.

# %%
small = popdyn.MultiIndexProblem("he3", "he3", popdyn.gram("orthogonal", 2), n_neurons=2)
u0 = np.array([[0.5, 0.2], [0.15, 0.45]])
ds = np.array([100, 200, 400] if FAST else [100, 200, 400, 800, 1600])
seeds = range(1 if FAST else 3)
rms, mx = [], []
for dd in ds:
    runs = [popdyn.compare(small, d=int(dd), t_end=2.0, eta=0.5 / dd, batch=32, replicas=16, init=u0, rng=s,
                           progress=False) for s in seeds]
    rms.append(np.mean([r.rms_deviation for r in runs]))
    mx.append(np.mean([r.max_abs_deviation for r in runs]))
slope = np.polyfit(np.log(ds), np.log(rms), 1)[0]
print("d:             ", ds.tolist())
print("rms deviation: ", np.round(rms, 5).tolist())
print("max deviation: ", np.round(mx, 5).tolist())
print(f"log-log slope of the rms deviation: {slope:.3f} (noise-limited prediction -0.5)")
fig, ax = plt.subplots(figsize=(4.8, 3.4))
ax.loglog(ds, rms, "o-", label=f"rms, slope {slope:.2f}")
ax.loglog(ds, mx, "s-", label="max")
ax.loglog(ds, rms[0] * (ds / ds[0]) ** -0.5, "--", color="0.5", label=r"$d^{-1/2}$")
ax.set_xlabel("dimension d")
ax.set_ylabel(r"$|u_{ODE} - \overline{u}_{sim}|$")
ax.legend(fontsize=8)
save_figure(fig, OUT / "deviation_vs_d.png")
