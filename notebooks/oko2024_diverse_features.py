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
# # Learning a sum of diverse features (arXiv 2406.11828)
#
# Oko, Song, Suzuki and Wu study the additive teacher
# `f*(x) = M^(-1/2) Σ_m f_m(v_m·x)` with many (`M ≍ d^γ`) near-orthogonal task directions.
# Layer-wise SGD on a two-layer network first **localises** each student neuron on one task
# direction (Phase I, correlation loss with a small fixed second layer), then a convex
# second layer (ridge or LASSO on random-bias features) learns the links (Phase II), with
# `n ≈ M d^(p-1)` samples, where kernel methods need `d^q`. This notebook reproduces, with
# popdyn:
#
# 1. the near-orthogonal teacher and the per-neuron overlap ODE
#    `du/dt = M^(-1/2)[G g'(u) − (u·g'(u))u]`;
# 2. **localisation** and the race that decides each neuron's task, and **coverage** of the
#    tasks against the coupon collector (`J ≈ M log M`);
# 3. the **sample complexity** of online SGD against `M` and `d` (log–log slopes);
# 4. **Phase II**: test error against `n`, transfer, and the kernel baseline;
# 5. the student **diversity** option and the descent-path condition.
#
# Set `POPDYN_FAST=1` for the small sizes the test suite uses.

# %%
import math
import os
from pathlib import Path

import matplotlib

if os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from popdyn import NumericalError, initial_state, integrate
from popdyn.models.additive import (AdditiveProblem, coverage_law, descent_path, diverse_student, localisation,
                                    localisation_report, loglog_slope, task_directions, tasks_for_gamma,
                                    width_for_coverage)
from popdyn.models.additive_sim import (alignment_floor, kernel_baseline, phase_one, phase_two,
                                        samples_to_localise, sgd_step_size)

FAST = os.environ.get("POPDYN_FAST", "0") == "1"
OUT = Path(os.environ.get("POPDYN_NOTEBOOK_OUT", "notebook_output"))
OUT.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The teacher: M = d^γ near-orthogonal directions
# Random unit vectors have overlaps of order `sqrt(log M / d)`; popdyn reports the largest one
# actually drawn. The overlap ODE of one neuron is the multi-index flow with the signal scaled by
# `s = M^(-1/2)`.

# %%
print(f"{'d':>6} {'gamma':>6} {'M':>6} {'max |v_i.v_j|':>14} {'2 sqrt(log M / d)':>18}")
for d in ((100, 400) if FAST else (100, 400, 1600)):
    for gamma in (0.5, 1.0):
        M = tasks_for_gamma(d, gamma)
        prob = AdditiveProblem("he3", "he3", task_directions(M, d, rng=rng))
        print(f"{d:>6} {gamma:>6} {M:>6} {prob.max_overlap:>14.3f} {2 * math.sqrt(math.log(M) / d):>18.3f}")

# %% [markdown]
# ## 2. Localisation and coverage (overlap ODE, gradient flow)
# `J = 2 M log M` neurons start uniformly on the sphere. Each localises (`max_m |u_m| > 0.95`) on
# the task its initial race picks: `argmax_m u_m(0)` for odd `p`, `argmax_m |u_m(0)|` for even
# `p`. Near-orthogonal overlaps perturb the race a little.

# %%
M, d = (12, 144) if FAST else (20, 400)
J = math.ceil(2 * M * math.log(M))
print(f"M = {M}, d = {d}, J = {J}")
print(f"{'directions':>11} {'p':>2} {'localised':>10} {'winner = race':>14} {'covered':>8} {'coupon E':>9}")
for kind in ("orthogonal", "random"):
    for p in (3, 4):
        prob = AdditiveProblem(f"he{p}", f"he{p}", task_directions(M, d, kind=kind, rng=rng), n_neurons=J)
        _, _, u0 = initial_state(prob, d, rng=rng)
        lead = float(prob.gamma[0, p])
        t_end = 20.0 * float(np.max(np.max(np.abs(u0), axis=1) ** (2 - p))) / (p * (p - 2) * lead)
        traj = integrate(prob, u0, t_end, n_times=10, rtol=1e-7, atol=1e-9, progress=False)
        rep = localisation_report(prob, u0, traj.final("u")[0])
        print(f"{kind:>11} {p:>2} {rep.fraction_localised:>10.1%} {rep.fraction_predicted:>14.1%} "
              f"{int(rep.covered[0]):>8} {rep.law.expected:>9.2f}")

# %% [markdown]
# The number of tasks covered by `J` neurons against the coupon-collector law (winners from the
# ODE of many independent `h_4` neurons, split into trials), and the width `J_95` that covers all
# tasks with probability 0.95: `≈ M log(M/0.05)`.

# %%
M_cov, d_cov = 8, 100
trials = 40 if FAST else 200
Jmax = width_for_coverage(M_cov)
prob = AdditiveProblem("he4", "he4", task_directions(M_cov, d_cov, rng=rng), n_neurons=trials * Jmax)
_, _, u0 = initial_state(prob, d_cov, rng=rng)
lead_times = np.max(np.abs(u0), axis=1) ** -2.0 / (8 * float(prob.gamma[0, 4]))  # leading-order escape, p = 4
t_end = min(3.0 * lead_times.max(), 50.0 * np.median(lead_times))
loc, win, _ = localisation(integrate(prob, u0, t_end, n_times=3, rtol=1e-7, atol=1e-9,
                                     progress=False).final("u")[0], level=0.5)
win = np.where(loc, win, -1).reshape(trials, Jmax)
widths = np.arange(1, Jmax + 1)
measured = [np.mean([np.unique(row[:j][row[:j] >= 0]).size for row in win]) for j in widths]
law = [coverage_law(M_cov, int(j)).expected for j in widths]
fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
ax[0].plot(widths, law, "k-", label="coupon collector M(1-(1-1/M)^J)")
ax[0].plot(widths, measured, "o", ms=3, label=f"overlap ODE, {trials} trials")
ax[0].axvline(M_cov * math.log(M_cov), ls=":", c="gray", label="J = M log M")
ax[0].set(xlabel="width J", ylabel="tasks covered", title=f"M = {M_cov}, d = {d_cov}")
ax[0].legend(fontsize=8)
Ms = np.array([5, 10, 20, 50, 100, 200])
ax[1].loglog(Ms, [width_for_coverage(int(m)) for m in Ms], "o-", label="J_95 (exact law)")
ax[1].loglog(Ms, Ms * np.log(Ms / 0.05), "k--", label="M log(M/0.05)")
ax[1].set(xlabel="M", ylabel="width", title="width covering all tasks (P = 0.95)")
ax[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "oko2024_coverage.png", dpi=110)
print("J_95:", {int(m): width_for_coverage(int(m)) for m in Ms})

# %% [markdown]
# ## 3. Samples to localise: n ≍ M d^(p−1)
# Online SGD with the BAGJ step `η = η0 M^(-1/2) d^(-p/2)` (one fresh sample per step, shared by
# the neurons), from the fixed start profile `u0 = d^(-1/2)(1, 1/2, 0, ...)` (a uniform start
# adds the `log M` of the largest of `M` initial overlaps). Median-neuron samples to reach
# `max_m |u_m| = 1/2`, per replica; slopes with standard errors over replicas.

# %%
p, eta0 = 3, 0.5
R = 8 if FAST else 24
grids = {"M": [(M_, 32) for M_ in ((2, 6, 18) if FAST else (2, 4, 8, 16, 32))],
         "d": [(2, d_) for d_ in ((24, 48, 96) if FAST else (24, 32, 48, 64, 96, 128))]}
fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
for a, (var, grid) in zip(ax, grids.items()):
    xs, groups, odes = [], [], []
    for M_, d_ in grid:
        prob = AdditiveProblem("he3", "he3", task_directions(M_, d_, kind="orthogonal", rng=rng), n_neurons=6)
        u0 = np.zeros(M_)
        u0[0], u0[1] = 1 / math.sqrt(d_), 0.5 / math.sqrt(d_)
        lt = samples_to_localise(prob, eta0=eta0, replicas=R, init=u0, rng=rng, progress=False)
        xs.append(M_ if var == "M" else d_)
        groups.append(lt.per_replica)
        odes.append(lt.per_replica_ode)
    fit, ode_fit = loglog_slope(xs, groups), loglog_slope(xs, odes)
    law = 1 if var == "M" else p - 1
    print(f"slope in {var}: SGD {fit.slope:.3f} +- {fit.slope_se:.3f}, overlap ODE with eta^2 term "
          f"{ode_fit.slope:.3f} (law {law})")
    x = np.array(xs, dtype=float)
    a.errorbar(x, np.exp(fit.log_y), yerr=np.exp(fit.log_y) * fit.log_y_se, fmt="o", label="online SGD")
    a.plot(x, np.exp(ode_fit.log_y), "s", mfc="none", label="overlap ODE + eta^2 term")
    a.plot(x, np.exp(fit.intercept) * x ** law, "k--", label=f"slope {law}")
    a.set(xscale="log", yscale="log", xlabel=var, ylabel="samples to localise",
          title=f"{'d = 32' if var == 'M' else 'M = 2'}: slope {fit.slope:.2f} ± {fit.slope_se:.2f}")
    a.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "oko2024_samples.png", dpi=110)

# %% [markdown]
# ## 4. Phase II: random biases and a convex second layer
# Phase I by online SGD (`J = 3 M log M` neurons, with a last stretch at a tenth of the step to
# lower the noise floor), then features `σ(w_j·x + b)` with random biases and ridge / LASSO.
# The error is floored by the Phase I alignment (`alignment_floor`: the error if each task were
# fitted along its best neuron only). The same first layer is
# refitted to a new combination of new links on the same directions (transfer). Kernel ridge
# regression on the same data does not learn at these `n` (it needs `n ≳ d^3` for cubic links),
# nor does a random first layer.

# %%
M2, d2 = (4, 64) if FAST else (8, 128)
J2 = math.ceil(3 * M2 * math.log(M2))
# at d = 64 four random directions can overlap by ~0.35 and two tasks then share a basin: the
# fast mode takes orthogonal ones
V2 = task_directions(M2, d2, kind="orthogonal" if FAST else "random", rng=rng)
prob = AdditiveProblem("he3", "he3", V2, n_neurons=J2)
res = phase_one(prob, eta=sgd_step_size(prob, 0.3), steps=1_000_000 if FAST else 10_000_000, stop_fraction=0.95,
                anneal_steps=50_000 if FAST else 400_000, rng=rng, progress=False)
print(f"Phase I: {res.samples} samples; max |v_i.v_j| = {prob.max_overlap:.3f}; alignment floor of the ridge "
      f"error {float(alignment_floor(prob, res.W)[0]):.4f}")
for line in res.report.lines():
    print(line)
flow = integrate(prob, res.u0[0], 2000.0, n_times=5, rtol=1e-8, atol=1e-10, progress=False)
print("  the overlap ODE (gradient flow) from the same starts covers "
      f"{int(localisation_report(prob, res.u0[0], flow.final('u')[0]).covered[0])} tasks")
ns = [8, 30, 100, 300, 1000, 3000] if FAST else [8, 30, 100, 300, 1000, 3000, 10000]
ridge = [float(phase_two(prob, res.W, n_train=n, rng=rng).test_error[0]) for n in ns]


def lasso_error(n):
    """LASSO test error; NaN where coordinate descent does not converge (few samples, collinear features)."""
    if n < 100:
        return np.nan
    try:
        return float(phase_two(prob, res.W, n_train=n, method="lasso", alpha=1e-3, rng=rng).test_error[0])
    except NumericalError as exc:
        print(f"LASSO at n = {n}: {exc}")
        return np.nan


lasso = [lasso_error(n) for n in ns]
random_W = [float(phase_two(prob, task_directions(J2, d2, rng=rng), n_train=n, rng=rng).test_error[0]) for n in ns]
kernel = [kernel_baseline(prob, n_train=n, rng=rng) for n in ns]
new = AdditiveProblem("he3", ["hermite:0,0,0.6,0.8", "he2"] * (M2 // 2), V2, weights=rng.uniform(-2, 2, M2))
transfer = [float(phase_two(new, res.W, n_train=n, rng=rng).test_error[0]) for n in ns]
print(f"{'n':>6} {'ridge':>9} {'LASSO':>9} {'transfer':>9} {'random W':>9} {'kernel':>9}")
for row in zip(ns, ridge, lasso, transfer, random_W, kernel):
    print(f"{row[0]:>6} " + " ".join(f"{v:>9.4f}" for v in row[1:]))
fig, ax = plt.subplots(figsize=(5.5, 3.8))
for ys, lab in ((ridge, "ridge, learned W"), (lasso, "LASSO, learned W"), (transfer, "transfer (new links)"),
                (random_W, "ridge, random W"), (kernel, "kernel ridge (RBF)")):
    ax.loglog(ns, ys, "o-", label=lab)
ax.set(xlabel="Phase II samples n", ylabel="relative test error", title=f"M = {M2}, d = {d2}, J = {J2}")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "oko2024_phase_two.png", dpi=110)

# %% [markdown]
# ## 5. Diversity and the descent path
# With per-neuron random signs of the student's Hermite coefficients, a neuron can descend to
# task `m` only when all coefficients of its kernel towards `±v_m` have one sign. For the
# mixed link `h_3 + h_4` a quarter of the (neuron, sign) pairs qualify; neurons localise on
# the tasks they have a path to.

# %%
M3, d3 = 6, 100
J3 = 60 if FAST else 200
link = "hermite:0,0,0,0.6,0.8"
xi = diverse_student(J3, 4, rng=rng)
prob = AdditiveProblem(link, link, task_directions(M3, d3, kind="orthogonal", rng=rng), n_neurons=J3, diversity=xi)
ok = descent_path(prob)
_, _, u0 = initial_state(prob, d3, rng=rng)
traj = integrate(prob, u0, 3000.0, n_times=10, rtol=1e-7, atol=1e-9, progress=False)
loc, win, _ = localisation(traj.final("u")[0])
print(f"descent path to a given task: {ok.mean():.1%} of (neuron, task) pairs; localised: {loc.mean():.1%}; "
      f"localised neurons whose task has a descent path: {np.mean(ok[np.arange(J3), win][loc]):.1%}")
