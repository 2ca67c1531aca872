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
# # Phase diagrams with `popdyn sweep`
#
# A sweep runs one verb of one model (`predict`, `simulate`, `compare`, or a model's own command such as
# `threshold`) over a grid of parameters, stores one checksummed record per point, resumes where it
# stopped, and draws the result. The same configuration file runs from the shell,
# `popdyn sweep examples/beta_c_phase.toml --plot phase.png`, or from Python with `popdyn.sweeps.sweep`.
#
# Two pictures:
#
# 1. the **β_c phase diagram** of arXiv 2411.08798 over (k, β) for σ = σ* = h₃ + h₄: the threshold β_c(k)
#    from the `threshold` command over the end states of the overlap ODE from random starts;
# 2. the **escape picture** of arXiv 2309.03843 (spiked covariance, normalized flow): the ODE escape time
#    over (κ, alignment) with online-SGD points on top.
#
# Set `POPDYN_FAST=1` for the small grids the test suite uses.

# %%
import os
import tempfile
import tomllib
from pathlib import Path

import matplotlib

if os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from popdyn.plot import save_figure
from popdyn.sweeps import load, plot_sweep, sweep

FAST = os.environ.get("POPDYN_FAST", "0") == "1"
OUT = Path(os.environ.get("POPDYN_NOTEBOOK_OUT", "notebook_output"))
OUT.mkdir(parents=True, exist_ok=True)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" if "__file__" in globals() else Path("../examples")
STORE = Path(tempfile.mkdtemp(prefix="popdyn-sweeps-"))
# In Jupyter the sweeps run on a local process pool. Run as a script (the test suite's fast mode) they
# run serially: pool workers are spawned processes that import the main script, so a script must start
# its sweeps under `if __name__ == "__main__":`, which a notebook's cells cannot express.
EXECUTOR = {"executor": "serial"} if "__file__" in globals() else {"workers": 2}


def config(name: str) -> dict:
    """An example configuration, as the dict `sweep` also takes."""
    with open(EXAMPLES / name, "rb") as fh:
        return tomllib.load(fh)


# %% [markdown]
# ## 1. β_c over (k, β) for h₃ + h₄
# `examples/beta_c_phase.toml`: the one-neuron u-ODE (`popdyn predict --model multi-index`) from random
# starts (`--init 0.3`, drawn as in a simulation), three seeds per point; the outcome is the spread
# $\max_j u_j - \min_j u_j$ at $t_{end}$: large when the neuron picked one index vector, 0 when it ended at
# the average point. The `[prediction]` table adds `popdyn threshold` over k: the line β_c(k).

# %%
beta_c_cfg = config("beta_c_phase.toml")
if FAST:
    beta_c_cfg["grid"] = {"k": [2, 3, 4], "beta": {"linspace": [0.1, 0.6, 6]}}
    beta_c_cfg["replicas"] = 2
    beta_c_cfg["prediction"]["grid"] = {"k": {"range": [2, 5]}}
res = sweep(beta_c_cfg, STORE / "beta_c", **EXECUTOR, progress=False)
print(res.counts)
ax = plot_sweep(res, OUT / "beta_c_phase.png")

# %% [markdown]
# The predicted line is exact (sympy roots of F(β); reference value (c, k) = (1, 3) → 0.333097973437 in
# theory/simsek2025/equations.md). Away from the line the ODE outcomes fall on the predicted side:

# %%
beta_c = {row["k"]: row["beta_c"] for row in res.table("prediction")}
print("beta_c(k):", {k: round(v, 6) for k, v in beta_c.items()})
assert abs(beta_c[3] - 0.333097973437) < 1e-9
agree, total = 0, 0
for coords, _, spread in res.values("u_final", reduce="spread"):
    margin = coords["beta"] - beta_c[coords["k"]]
    if abs(margin) > 0.05:                       # the ODE slows down near the transition
        total += 1
        agree += (spread > 0.1) == (margin < 0)  # below beta_c: one index vector is picked
print(f"{agree}/{total} points away from the line on the predicted side")
assert agree >= 0.8 * total

# %% [markdown]
# Rerunning the same sweep computes nothing: every point is already in the store (a killed or interrupted
# sweep resumes the same way). A 1-D cut at k = 3 reuses the same records (points are found by their
# parameters, not by their position in a grid) and draws mean ± standard error over the seeds.

# %%
again = sweep(beta_c_cfg, STORE / "beta_c", **EXECUTOR, progress=False)
print("rerun:", again.counts)
assert again.counts["computed"] == 0
cut = {**beta_c_cfg, "grid": {**beta_c_cfg["grid"], "k": [3]}, "plot": {"x": "beta", "value": "u_final",
                                                                        "reduce": "spread"}}
del cut["prediction"]
line = sweep(cut, STORE / "beta_c", **EXECUTOR, progress=False)
assert line.counts["computed"] == 0
fig, ax = plt.subplots(figsize=(5.5, 3.8))
plot_sweep(line, ax=ax)
ax.axvline(beta_c[3], color="C3", ls="--", label=f"beta_c(3) = {beta_c[3]:.4f}")
ax.set_ylabel(r"$\max_j u_j - \min_j u_j$ at $t_{end}$")
ax.legend(fontsize=8)
save_figure(fig, OUT / "beta_c_cut_k3.png")

# %% [markdown]
# ## 2. Escape under a spiked covariance, with SGD points
# `examples/spiked_escape.toml`: background, the ODE escape time from the typical start (grey: the flow
# stalls); red line, where it equals the SGD horizon; squares, online SGD (`popdyn simulate`) from
# independent uniform starts, coloured by the mean |m_Σ| at the horizon. The swept variables κ and align
# enter through the template `covariance = "spiked:kappa={kappa},align={align}"` (substituted, never evaluated).

# %%
spiked_cfg = config("spiked_escape.toml")
if FAST:
    spiked_cfg["grid"] = {"kappa": [1.0, 30.0], "align": [1.0]}
    spiked_cfg["replicas"] = 1
    spiked_cfg["prediction"]["grid"] = {"kappa": {"logspace": [0, 2.2, 8]}, "align": {"logspace": [-1.3, 0, 5]}}
spiked = sweep(spiked_cfg, STORE / "spiked", **EXECUTOR, progress=False)
print(spiked.counts)
plot_sweep(spiked, OUT / "spiked_escape.png")
for row in spiked.table():
    print(f"kappa = {row['kappa']:6g}, align = {row['align']:4g}, start {row['replica']}: SGD |m_Sigma| at t_end = "
          f"{abs(row['final_mean.m_sigma']):.3f}")

# %% [markdown]
# The records load back as a list of dicts (`load(store).table()`), or as an xarray Dataset with one
# dimension per swept variable when xarray is installed:

# %%
table = load(STORE / "spiked").table()
print(len(table), "runs;", sorted(table[0]))
try:
    print(load(STORE / "beta_c").to_xarray())
except ValueError as exc:   # xarray not installed
    print(exc)
