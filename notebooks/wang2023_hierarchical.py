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
# # Hierarchical polynomials with three-layer networks (arXiv 2311.13774)
#
# Wang, Nichani and Lee learn targets $h = g\circ p$ on $x \sim N(0, I_d)$, with a hidden feature $p$ of
# degree $k$ and a link $g$ of degree $q$, by a three-layer network
#
# $$h_\theta(x) = \hat p(x) + c^\top \mathrm{ReLU}\big(a\,\hat p(x) + b\big), \qquad
#   \hat p(x) = u^\top\sigma_1(Vx + s),$$
#
# trained layer-wise: **stage 1** fits $u$ by ridge regression on random features of a degree-$k$
# polynomial $\sigma_1$ (so $\hat p \to P_{\le k}h$), **stage 2** fits $c$ on fresh data as a 1-D function of
# $\hat p$.  By the **approximate Stein lemma** $P_{\le k}h \approx E[h] + E[g'(z)]\,p$, so stage 1 recovers $p$
# from $\sim d^k$ samples, while a kernel method must learn the whole degree-$kq$ polynomial from $\sim d^{kq}$.
#
# Throughout (unless said otherwise) $p = L^{-1/2}\sum_{l\le L} h_2(x_l)$ with $L = d$ ($k = 2$) and
# $g = h_1 + h_2$ ($E[g'] = 1$, $q = 2$): then $P_{\le 2}h = E[h] + \tilde c\,p$ **exactly** (by symmetry), and
# the stage-1 least-squares law $E[(\hat p - P_{\le 2}h)^2] \simeq A/n_1$, $A = E[\varepsilon^2 K_2(x,x)]$
# (`theory/wang2023/equations.md`) predicts the correlation of $\hat p$ with $p$.
# Set `POPDYN_FAST=1` for the small sizes the test suite uses.

# %%
import os
import time
import warnings
from pathlib import Path

import matplotlib

if os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from popdyn.chaos import ZeroSteinCoefficientWarning
from popdyn.models.hierarchical import HierarchicalProblem, stage1_law
from popdyn.models.hierarchical_sim import kernel_curve, layerwise_curve, sample_exponents, train_end_to_end
from popdyn.plot import save_figure

FAST = os.environ.get("POPDYN_FAST", "0") == "1"
OUT = Path(os.environ.get("POPDYN_NOTEBOOK_OUT", "notebook_output"))
OUT.mkdir(parents=True, exist_ok=True)
T0 = time.perf_counter()
warnings.simplefilter("ignore", ZeroSteinCoefficientWarning)   # the E[g'] = 0 links below are deliberate

# %% [markdown]
# ## 1. The approximate Stein lemma in exact numbers
# `popdyn.chaos` computes $\|P_k h - c^*p\|^2$ and the low-degree mass $\sum_{1\le j<k}\|P_j h\|^2$ exactly, as
# functions of $L$: $O(1/L^2)$ for odd $g$ or odd $k$, $O(1/L)$ when an even part of $g$ lands back in degree $k$,
# and $\|P_k h\|^2 \to 0$ when $E[g'] = 0$ (the failure mode).

# %%
print(f"{'k':>2} {'g':>16} {'c*':>4} {'err^2(L)':>24} {'low-degree mass(L)':>24}")
for k, link in ((2, "poly:z**3"), (3, "poly:z**3"), (2, "hermite:0,1,1"), (3, "hermite:0,1,1"), (2, "he3"),
                (3, "he3")):
    lem = HierarchicalProblem(8, k, link=link).stein_lemma()
    print(f"{k:>2} {link:>16} {str(lem.c_star):>4} {str(lem.err2_in_L):>24} {str(lem.low_mass_in_L):>24}")

# %% [markdown]
# ## 2. Stage 1 recovers $p$ at $n_1 \propto D_2(d) = \binom{d+2}{2}$
# Test correlation of $\hat p$ with $p$ against $n_1/D_2(d)$: the curves of different $d$ collapse (the sample
# scale is the dimension of the degree-$\le 2$ polynomials, $\sim d^2/2$) and approach 1.  Dashed: the stage-1
# law $\tilde c/\sqrt{\tilde c^2 + A/n_1}$ (leading order in $D/n_1$; its heavy-tailed Monte Carlo constant
# converges slowly at small $d$).  Right: the link $g = h_3$ with $E[g'] = 0$ at the same sizes: the signal
# $\|P_2 h\|^2 = 24/L^2$ vanishes and stage 1 does not recover $p$.

# %%
ratios = 2.0 ** np.arange(1, 6.5 if FAST else 7.5, 0.5)
dims = (8, 12) if FAST else (8, 12, 16, 24)
R = 4 if FAST else 8
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for i, d in enumerate(dims):
    for ax, link in zip(axes, ("hermite:0,1,1", "he3")):
        prob = HierarchicalProblem(d, 2, link=link)
        D = prob.stage1_dimension
        curve = layerwise_curve(prob, np.round(ratios * D).astype(int), replicas=R, n_test=2000, rng=10 + i)
        m, se = curve.correlation.mean(1), curve.correlation.std(1, ddof=1) / np.sqrt(R)
        ax.errorbar(ratios, m, se, marker="o", ms=3, color=f"C{i}", label=f"d = {d}")
        law = stage1_law(prob, n_samples=50_000 if FAST else 400_000, rng=i)
        ax.plot(ratios, law.correlation(ratios * D), "--", color=f"C{i}", lw=1)
        print(f"{link:>14} d = {d:2d}: corr at n1/D = {ratios[0]:g} .. {ratios[-1]:g}:",
              np.round(m, 3).tolist(), " law:", np.round(law.correlation(ratios * D), 3).tolist())
for ax, title in zip(axes, ("g = h1 + h2 (E[g'] = 1)", "g = h3 (E[g'] = 0)")):
    ax.set_xscale("log")
    ax.set_xlabel(r"$n_1 / D_2(d)$")
    ax.set_title(title)
axes[0].set_ylabel(r"corr$(\hat p, p)$ (test)")
axes[0].legend()
save_figure(fig, OUT / "wang2023_stage1.png")

# %% [markdown]
# ## 3. Network vs kernel on the same data
# Relative test error against the number of samples at one $d$: the network (stage-1 samples $n_1$, plus 500
# stage-2 samples) and kernel ridge regression with $K = (1 + x\cdot x'/d)^4$, whose RKHS holds $h$ (about half
# of $\mathrm{Var}\,h$ is in degree 4).  The kernel needs the whole degree-4 space: it $h$ at $n \approx D_4(d)$: near interpolation (ridge $10^{-8}$) its error stays near 1 until
# $n \approx 0.4\,D_4$ and reaches 0.25 at $\approx 0.7\,D_4$; larger ridges ($10^{-4}..10^{-1}$, measured at $d = 10$)
# do a little better below $0.5\,D_4$ and worse above, and never reach 0.25 with fewer samples.

# %%
d = 10 if FAST else 12
prob = HierarchicalProblem(d, 2)
D2, D4 = prob.stage1_dimension, prob.kernel_dimension
ns = np.unique(np.round(np.geomspace(D2, 1.3 * D4, 12 if FAST else 18)).astype(int))
gen = np.random.default_rng(3)
x1, y1, p1 = prob.sample(int(ns[-1]), replicas=R, rng=gen)
xt, yt, pt = prob.sample(2000, replicas=R, rng=gen)
data = {"x1": x1, "y1": y1, "p1": p1, "xtest": xt, "ytest": yt, "ptest": pt}
nn = layerwise_curve(prob, ns, replicas=R, n_test=2000, data=data, rng=gen)
ker = kernel_curve(prob, ns, replicas=R, n_test=2000, data=data, rng=gen)
fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(ns, np.median(nn.test_error, 1), "o-", label="three-layer network (layer-wise), n = n1")
ax.loglog(ns, np.median(nn.stage1_error, 1), ".:", label=r"stage 1 alone ($\hat p$ as predictor)")
ax.loglog(ns, np.median(ker.test_error, 1), "s-", label="kernel ridge, degree 4")
for v, name in ((D2, "$D_2$"), (D4, "$D_4$")):
    ax.axvline(v, color="gray", lw=0.8, ls="--")
    ax.text(v, 1.5, name, ha="center")
ax.set_ylim(1e-3, 3)  # the kernel's error falls to ~1e-7 past D_4 (exact interpolation)
ax.set_xlabel("samples")
ax.set_ylabel("relative test error (median)")
ax.set_title(f"d = {d}")
ax.legend(fontsize=8)
save_figure(fig, OUT / "wang2023_network_vs_kernel.png")
for n, e1, e2 in zip(ns, np.median(nn.test_error, 1), np.median(ker.test_error, 1)):
    print(f"n = {n:5d} ({n / D2:6.2f} D2, {n / D4:5.2f} D4): network {e1:.3f}, kernel {e2:.3f}")

# %% [markdown]
# ## 4. Sample exponents
# Samples to reach $\mathrm{corr}(\hat p, p) = 0.9$ (network, stage 1) and a relative test error of 0.25
# (kernel) against $d$, with log-log fits (slope per replica, SE of the mean).  At these small $d$ the
# exponents are the slopes of the dimension counts $D_m(d)$ on the same grid ($m = 2$ vs $m = 4$), which tend to
# $m$ only slowly.

# %%
mk = lambda d: HierarchicalProblem(d, 2)  # noqa: E731
nn_st = sample_exponents(mk, (6, 8, 11, 16) if FAST else (6, 8, 11, 16, 24), level=0.25,
                         nn_ratios=2 ** (np.arange(21) / 4), replicas=R, rng=5)
k_st = sample_exponents(mk, (6, 7, 8, 9, 10) if FAST else (6, 8, 10, 12, 14), level=0.25,
                        kernel_ratios=2 ** (np.arange(-4, 1) / 4), replicas=R, rng=6)
fig, ax = plt.subplots(figsize=(6, 4))
for st, key, label, c in ((nn_st, "corr", "network stage 1 (corr 0.9)", "C0"), (k_st, "kernel", "kernel (error 0.25)",
                                                                                  "C1")):
    res = getattr(st, key)
    med = np.median(res["n_star"], 1)
    ax.loglog(st.ds, med, "o", color=c, label=f"{label}: slope {res['slope']:.2f} ± {res['se']:.2f} "
                                             f"(law {res['law']:.2f})")
    fit = np.polyfit(np.log(st.ds), np.log(med), 1)
    ax.loglog(st.ds, np.exp(np.polyval(fit, np.log(st.ds))), "-", color=c, lw=0.8)
    print(f"{label}: d = {st.ds.tolist()}, median n* = {np.round(med).astype(int).tolist()}, slope "
          f"{res['slope']:.3f} ± {res['se']:.3f}, dimension-count law {res['law']:.3f}")
ax.set_xlabel("d")
ax.set_ylabel("samples (median over replicas)")
ax.legend(fontsize=8)
save_figure(fig, OUT / "wang2023_exponents.png")

# %% [markdown]
# ## 5. End-to-end gradient descent, for contrast
# The paper's experiments also train all layers together.  Full-batch GD on every parameter from the layer-wise
# initialisation ($u = 0$, $c = 0$) on $n$ samples, against the layer-wise network on the same number of samples.

# %%
d = 8
prob = HierarchicalProblem(d, 2)
n = 16 * prob.stage1_dimension
e2e = train_end_to_end(prob, n=n, steps=200 if FAST else 2000, replicas=2, n_test=2000, rng=7)
lw = layerwise_curve(prob, [n - 500], replicas=2, n_test=2000, rng=8)
fig, ax = plt.subplots(figsize=(6, 4))
ax.semilogx(e2e.steps[1:], e2e.test_error[1:].mean(1), "o-", label="end-to-end GD: test error")
ax.semilogx(e2e.steps[1:], e2e.correlation[1:].mean(1), "s-", label=r"end-to-end GD: corr$(\hat p, p)$")
ax.axhline(lw.test_error.mean(), color="C0", ls="--", label="layer-wise: test error")
ax.axhline(lw.correlation.mean(), color="C1", ls="--", label=r"layer-wise: corr$(\hat p, p)$")
ax.set_xlabel("GD steps")
ax.set_title(f"d = {d}, n = {n}")
ax.legend(fontsize=8)
save_figure(fig, OUT / "wang2023_end_to_end.png")
print(f"end-to-end GD after {e2e.steps[-1]} steps: test error {e2e.test_error[-1].mean():.3f}, corr "
      f"{e2e.correlation[-1].mean():.3f}; layer-wise: {lw.test_error.mean():.3f}, {lw.correlation.mean():.3f}")

# %% [markdown]
# ## 6. The paper's experimental feature, $p = \sum_{i \le d/3}\lambda_i h_3(x_i)$
# $k = 3$, random weights ($N(0,1)$, normalised; our choice), $g = z + z^3/6$.  With few, unequal pieces
# $P_{\le 3}h$ is not parallel to $p$: $\rho_\infty < 1$ (exact, `popdyn.chaos` with one piece type per
# weight), and stage 1's correlation converges to it.

# %%
d = 9 if FAST else 15
prob = HierarchicalProblem.experiment(d, link="poly:z + z**3/6", rng=1)
pop = prob.population()
D3 = prob.stage1_dimension
curve = layerwise_curve(prob, [2 * D3, 8 * D3, 32 * D3] if not FAST else [2 * D3, 8 * D3], replicas=2, n_test=2000,
                        rng=4)
print(f"d = {d}, L = {prob.L}, lambda = {np.round(prob.lambdas, 3).tolist()}; rho_inf = {pop.rho_inf:.4f} "
      f"(exact: {pop.exact}); corr at n1 = {curve.n.tolist()}: "
      f"{np.round(curve.correlation.mean(1), 3).tolist()}")
print(f"total time {time.perf_counter() - T0:.1f} s")
