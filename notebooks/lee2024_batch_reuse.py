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
# # SGD with batch reuse near the information-theoretic limit (arXiv 2406.01581)
#
# Lee, Oko, Suzuki and Wu show that SGD which takes **two gradient steps on the same
# minibatch** learns any polynomial single-index target `y = σ*(θ·x)` with
# `n ≃ d polylog d` samples, while online SGD needs `d^(IE−1)` (IE = information exponent).
# This notebook reproduces the mechanism and the scalings with popdyn:
#
# 1. the **label-transform mechanism** and the `d → ∞` drift `D_r(m)` (table of coefficients);
# 2. `D_r(m)` with and without reuse;
# 3. the alignment `m(t)`: mean-path ODE against the exact finite-`d` simulator;
# 4. the **sample-count scaling**: reuse (slope ≈ 1) against online SGD (slope IE − 1);
# 5. **Phase II**: a ridge fit of the second layer with random biases after Phase I.
#
# ## The algorithm (what we had to choose)
# The paper's Algorithm 1 was not available to us.  popdyn implements the reconstruction written
# out in `theory/lee2024/equations.md` ("Reconstruction of the algorithm"): one neuron `σ(w·x)` on the unit sphere, correlation loss
# (the paper's squared loss with a small fixed second-layer weight `a_j` reduces to it, with
# `sign(a_j)` folded into the student), and per *iteration*
#
# * a fresh minibatch of `B` samples;
# * `r` consecutive normalised spherical steps on it, each at the current weight:
#   `w_{k+1} = normalize(w_k + η (1/B) Σ_b y_b σ'(w_k·x_b)(x_b − (w_k·x_b) w_k))`;
# * the interpolation `w ← normalize((1−ξ) w_0 + ξ w_r)` (mentioned in a summary of the paper).
#
# `r = 1, ξ = 1` is plain online SGD, in the same code.  The per-sample step is `η̃ = η d / B`.
#
# ## The mechanism: label transforms
# On the same sample, the second step sees the pre-activation moved by the first one:
# because `‖x‖²/d → 1`, `z_1 = z_0 + η̃ y σ'(z_0) + O(d^{-1/2})`.  Expanding `σ'(z_1)` brings
# powers `y², y³, …` of the label into the gradient, i.e. label transforms.  Per sample
# (time `τ = samples/d`) the alignment `m = w·θ` follows `dm/dτ = D_r(m)` with
#
# `D_r(m) = ξ Σ_{k<r} [ η̃ E[y σ'(z_k)(t − m z_k)] − (η̃²/2) m E[y² σ'(z_k)²] ] + (ξ(1−ξ)/2) m η̃² E[y² (Σ_k σ'(z_k))²]`
#
# and at `m = 0`, `r = 2`: `D_2(0) = 2η̃E[yt]E[σ'] + Σ_{j≥1} (η̃^{j+1}/j!) E[y^{j+1} t] E[σ'^j σ^{(j+1)}]`.
# For `y = He_3` the power `y³` has information exponent 1 (`E[y³ t] ≠ 0`), so the reuse
# drift does not vanish at the equator: the effective exponent drops from IE = 3 to the
# generative exponent 1.
#
# Set `POPDYN_FAST=1` for the small sizes the test suite uses.

# %%
import os
import time
from pathlib import Path

import matplotlib

if os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import popdyn_theory.lee2024 as lee
from popdyn.models.reuse import ReuseProblem, predicted_samples
from popdyn.ode import integrate
from popdyn.plot import save_figure
from popdyn.simulation import simulate

FAST = os.environ.get("POPDYN_FAST", "0") == "1"
OUT = Path(os.environ.get("POPDYN_NOTEBOOK_OUT", "notebook_output"))
OUT.mkdir(parents=True, exist_ok=True)
T0 = time.perf_counter()

# %% [markdown]
# ## 1. Exponents and drift coefficients
# Generative exponents (popdyn.exponents) against the effective exponent of the drift
# (sympy, `σ = σ*`): reuse = 1 gives the information exponent, reuse = 2 the generative one.

# %%
print(f"{'link':<10}{'IE':>4}{'GE':>4}{'eff r=1':>9}{'eff r=2':>9}")
for r in lee.exponent_table(lee.named_links(), effective=True):
    print(f"{r['link']:<10}{r['IE']:>4}{r['GE']:>4}{r['effective_r1']:>9}{r['effective_r2']:>9}")

# %% [markdown]
# Reference drift values of `theory/lee2024/equations.md` (η̃ = 0.5): the exact drift of `popdyn.models.reuse` against a direct
# 2-D quadrature of the formula above.  R2 = reuse 2, F2 = two fresh online steps (= 2 D_1).
# For log cosh the reuse turns the equator from attracting (F2 < 0) to repelling (R2 > 0).
# (A value +0.0633 circulated for the log cosh R2 linear coefficient; that is a secant over
# m = ±0.03, the coefficient is 0.06385.)

# %%
print(f"{'student':<9}{'quantity':<13}{'reuse.py':>12}{'direct':>12}{'reference':>10}")
for r in lee.drift_reference_table():
    ref = "" if r["reference"] is None else f"{r['reference']:.5f}"
    print(f"{r['student']:<9}{r['quantity']:<13}{r['value']:>12.6f}{r['direct']:>12.6f}{ref:>10}")
lt = ReuseProblem("tanh", "he3", reuse=2).label_transform_table(4, eta_tilde=0.5)
print("\nlabel powers y^j for y = h3: E[y^j h1], E[y^j h2]")
for row in lt["rows"]:
    print(f"  j={row['power']}: {row['E[y^j h1]']:10.4f} {row['E[y^j h2]']:10.4f}")

# %% [markdown]
# ## 2. The drift with and without reuse
# For each target the student of `popdyn_theory.lee2024.REUSE_SETTINGS`: with reuse (solid) the
# drift keeps one sign from the equator to |m| = 1/2 on the escape side; online at the same
# η̃ (dashed) it has a stable zero near the equator (normalisation contraction beats the
# `m^{IE−1}` drift).

# %%
ms = np.linspace(-0.6, 0.6, 17 if FAST else 81)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for ax, target in zip(axes, lee.REUSE_SETTINGS):
    student, _, eta, xi, _ = lee.REUSE_SETTINGS[target]
    for reuse, ls in ((2, "-"), (1, "--")):
        prob = lee.reuse_problem(target, reuse=reuse)
        ax.plot(ms, prob.drift(ms, eta), ls, label=f"reuse = {reuse}")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_title(f"{target}: {student}, η̃ = {eta}, ξ = {xi}")
    ax.set_xlabel("m")
axes[0].set_ylabel(r"$D_r(m)$ (per sample, $\times d$)")
axes[0].legend()
save_figure(fig, OUT / "lee2024_drift.png")

# %% [markdown]
# ## 3. m(t): mean path against the exact simulator
# tanh / He3, η̃ = 0.5, start `m_0 = d^{-1/2}`.  The simulator is the exact `d`-free engine of
# `popdyn.models.reuse_sim` (the law of the next alignment, no expansion in η̃ or 1/d); the
# ODE is `dm/dτ = D_r(m)`.  With reuse `m` escapes to −1/2 and beyond (D_2(0) < 0); online at the
# same step it stays at the equator.

# %%
d = 500 if FAST else 2000
R = 16 if FAST else 64
eta = 0.5
tau_end = 1.6 * predicted_samples(ReuseProblem("tanh", "he3", reuse=2), d, eta_tilde=eta) / d
fig, ax = plt.subplots(figsize=(6, 4))
for reuse, color in ((2, "C0"), (1, "C3")):
    prob = ReuseProblem("tanh", "he3", reuse=reuse)
    ode = integrate(prob, d ** -0.5, tau_end, options={"eta_tilde": eta}, times="linear", n_times=200)
    steps = int(tau_end * d)
    sim = simulate(prob, d=d, eta=eta / d, steps=steps, replicas=R, init=d ** -0.5, engine="exact", rng=reuse,
                   n_record=60, record="linear", same_init=True)
    tau = np.asarray(sim.t) / eta  # t = (eta_tilde / d) * iterations and B = 1, so samples / d = t / eta_tilde
    m = sim.overlaps["m"]
    mean, sd = m.mean(axis=1), m.std(axis=1)
    ax.fill_between(tau, mean - sd, mean + sd, color=color, alpha=0.25)
    ax.plot(tau, mean, color=color, label=f"reuse = {reuse}: simulation (mean ± sd, {R} runs)")
    ax.plot(np.asarray(ode.t), ode.overlaps["m"][:, 0], "k--" if reuse == 2 else "k:", label=f"reuse = {reuse}: ODE")
ax.set_xlabel("samples / d")
ax.set_ylabel("m")
ax.set_title(f"tanh / He3, d = {d}, η̃ = {eta}")
ax.legend(fontsize=7)
save_figure(fig, OUT / "lee2024_m_of_t.png")

# %% [markdown]
# ## 4. Sample complexity of weak recovery
# Median samples to |m| = 1/2 against `d` (exact engine; `m_0 = d^{-1/2}`), and the mean-path
# prediction (dashed).  With reuse the slope is ≈ 1 (`d polylog d`) for He3, He4 and He3 + He4;
# online SGD with the BAGJ step `η̃ = η_0 d^{1−p/2}` (`σ = σ* = h_p`) needs `d^{p−1}`.

# %%
if FAST:
    reuse_rows = lee.reuse_slope_table(("He3",), dims=(250, 500, 1000), replicas=12, rng=1)
    online_rows = lee.online_slope_table((3,), dims={3: (16, 32, 64)}, replicas=40, rng=2)
else:
    reuse_rows = lee.reuse_slope_table(quick=False, rng=1)
    online_rows = lee.online_slope_table(quick=False, rng=2)
fig, ax = plt.subplots(figsize=(6.5, 4.5))
print(f"{'target':<10}{'kind':<8}{'d':<28}{'medians':<44}{'slope':>8}{'predicted':>10}")
for k, row in enumerate(reuse_rows):
    c = f"C{k}"
    ax.loglog(row["dims"], row["medians"], "o-", color=c,
              label=f"reuse {row['target']}: slope {row['slope']:.2f} (pred. {row['predicted_slope']:.2f})")
    ax.loglog(row["dims"], row["predicted"], "--", color=c)
    print(f"{row['target']:<10}{'reuse':<8}{str(row['dims']):<28}{str([round(m) for m in row['medians']]):<44}"
          f"{row['slope']:>8.3f}{row['predicted_slope']:>10.3f}")
for k, row in enumerate(online_rows):
    c = f"C{k + 3}"
    ax.loglog(row["dims"], row["medians"], "s-", color=c,
              label=f"online He{row['p']}: slope {row['slope']:.2f} (ODE {row['predicted_slope']:.2f}, law {row['law']})")
    ax.loglog(row["dims"], row["predicted"], "--", color=c)
    meds = str([round(m) for m in row["medians"]])
    print(f"{'He' + str(row['p']):<10}{'online':<8}{str(row['dims']):<28}{meds:<44}"
          f"{row['slope']:>8.3f}{row['predicted_slope']:>10.3f}")
ax.set_xlabel("d")
ax.set_ylabel("samples to |m| = 1/2 (median)")
ax.legend(fontsize=7)
save_figure(fig, OUT / "lee2024_scaling.png")

# %% [markdown]
# ## 5. Phase II: ridge fit with random biases
# After Phase I (tanh / He3, reuse 2, η̃ = 0.5, ξ = 0.25, whose drift has its stable point
# at |m*| ≈ 0.986) the second layer is fitted by ridge regression on fresh samples with random
# biases.  The relative test error `MSE / Var(y)` is small; with Phase I skipped (random first
# layer) it stays near 1.  One direction at alignment m explains at most `m^6` of Var(He3).

# %%
t = lee.phase2_table(sizes=(96, 12, 1) if FAST else (256, 32, 4), rng=3)
print(f"d = {t['d']}, N = {t['n_neurons']}, Phase I samples = {t['phase1_samples']}, |m*| = {t['m_star']:.4f}, "
      f"floor 1 - m*^6 = {t['floor']:.3f}")
print("with Phase I   :", t["trained"].summary())
print("without Phase I:", t["control"].summary())
ph = t["trained"].phase1
fig, ax = plt.subplots(figsize=(6, 4))
tau = np.asarray(ph.t) / lee.PHASE2_ETA  # t = eta * iterations = eta_tilde * samples / d
ax.plot(tau, np.abs(ph.overlaps["m"][:, 0, :]), color="C0", alpha=0.5, lw=0.8)
ax.axhline(t["m_star"], color="k", ls="--", label=r"stable point $|m^*|$ of $D_2$")
ax.set_xlabel("samples / d")
ax.set_ylabel("|m_j| (Phase I, each neuron)")
ax.set_title(f"test error {np.median(t['trained'].test_error):.3f} vs {np.median(t['control'].test_error):.3f} "
             "without Phase I")
ax.legend()
save_figure(fig, OUT / "lee2024_phase2.png")
print(f"total time {time.perf_counter() - T0:.1f} s")
