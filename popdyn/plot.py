"""Plots (matplotlib is imported here and nowhere else in the package).

Every time axis is labelled with the trajectory's time unit; every overlap axis with the
overlap's definition.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_comparison", "plot_trajectory", "plot_eigenvalue_curve", "save_figure"]


def _plt():
    """pyplot, imported on first use (the rest of popdyn never imports matplotlib)."""
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> str:
    """Save ``fig`` as PNG atomically (temporary name, then rename) and return the path."""
    import io

    from ._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def _grid(n_panels: int):
    cols = min(n_panels, 3)
    rows = int(np.ceil(n_panels / cols))
    return rows, cols


#: ``spread`` choices of :func:`plot_comparison`.
SPREADS = ("verdict", "std", "sem")


def plot_comparison(result, path=None, *, max_neurons: int = 6, log_time: bool = False, spread: str = "verdict"):
    r"""Predicted overlap curves over the simulated replica mean ± spread.

    One panel per neuron (at most ``max_neurons``); in each, :math:`u_j(t) = v_j\cdot w_i(t)`
    for every index ``j``: solid lines are the ODE prediction, dots the simulated
    replica mean, and the band around the dots is

    * ``spread="verdict"`` (default): the verdict band of :mod:`popdyn.comparison`,
      ``mean ± (z*·SE + c/sqrt(d))`` -- the same quantity the console and ``--json``
      report, so the verdict is "agree" exactly when every line stays inside its band
      at the dots;
    * ``spread="std"``: ± the replica standard deviation;
    * ``spread="sem"``: ± the standard error of the mean.

    Parameters
    ----------
    result : popdyn.comparison.Comparison
        Output of :func:`popdyn.compare`.
    path : str or Path, optional
        Where to save a PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if spread not in SPREADS:
        raise ValueError(f"`spread` must be one of {', '.join(SPREADS)}; got {str(spread)[:40]!r}.")
    plt = _plt()
    ode, sim = result.ode, result.simulation
    unit = getattr(result, "unit_overlap", None)
    if unit is None:
        return _plot_scalar_comparison(result, path, log_time=log_time, spread=spread)
    u_ode = ode.mean(unit)         # (T, N, k): one panel per unit (neuron)
    u_sim = sim.mean(unit)
    band = _band(result, unit, spread)
    n = min(u_ode.shape[1], max_neurons)
    k = u_ode.shape[2]
    rows, cols = _grid(n)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharex=True, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= n:
            ax.axis("off")
            continue
        for j in range(k):
            c = colors[j % len(colors)]
            ax.fill_between(sim.t, u_sim[:, i, j] - band[:, i, j], u_sim[:, i, j] + band[:, i, j],
                            color=c, alpha=0.18, lw=0)
            ax.plot(sim.t, u_sim[:, i, j], "o", ms=2.2, color=c, alpha=0.8)
            ax.plot(ode.t, u_ode[:, i, j], "-", lw=1.4, color=c, label=f"{unit}[{j + 1}]")
        ax.set_title(f"neuron {i + 1}: ODE → {result.directions_ode[i]}, sim → {result.directions_sim[i]}",
                     fontsize=9)
        ax.axhline(0, color="0.7", lw=0.6)
        if log_time:
            ax.set_xscale("symlog", linthresh=max(sim.t[1] if sim.t.size > 1 else 1e-3, 1e-6))
        if i % cols == 0:
            ax.set_ylabel(f"overlap {unit}")
        if i // cols == rows - 1 or i + cols >= n:
            ax.set_xlabel(f"time ({sim.time_unit})")
    axes[0][0].legend(fontsize=8, loc="best")
    meta = sim.meta
    fig.suptitle(
        f"{meta.get('problem', {}).get('student', '?')} student / {', '.join(sorted(set(meta.get('problem', {}).get('teacher', ['?']))))}"
        f" teacher, k = {k}, d = {meta.get('d')}, {meta.get('algorithm')} "
        f"(eta = {meta.get('eta', '-')}, batch = {meta.get('batch', '-')}), {sim.n_replicas} replicas\n"
        f"lines: ODE prediction; dots: simulated mean; {_band_text(result, spread)}"
        f";  max |ODE − mean simulation| = {result.max_abs_deviation:.3g}",
        fontsize=9,
    )
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _band(result, name, spread):
    """Half-width of the plotted band of overlap ``name`` (see :func:`plot_comparison`)."""
    sim = result.simulation
    if spread == "verdict":
        return result.band(name)
    band = sim.std(name)
    return band / np.sqrt(max(sim.n_replicas, 1)) if spread == "sem" else band


def _band_text(result, spread) -> str:
    """Legend text of the band, with the verdict when the band is the verdict's."""
    if spread != "verdict":
        return f"band: ±1 {'s.d.' if spread == 'std' else 's.e.m.'} over replicas"
    v = result.verdict
    z = f"{v.z_crit:.3g}" if np.isfinite(v.z_crit) else "-"
    return (f"band: mean ± (z*SE + c/√d), z* = {z}, c/√d = {v.allowance:.2g}; "
            f"verdict: {'agree' if v.agree else 'DISAGREE'} ({v.fraction_within:.0%} of {v.n_points} points within)")


def _plot_scalar_comparison(result, path, *, log_time: bool, spread: str):
    """One panel per compared overlap (e.g. a scalar ``m``; or ``p, q, S``; ...)."""
    plt = _plt()
    ode, sim = result.ode, result.simulation
    names = getattr(result, "plot_names", ()) or result.names  # the model's choice (e.g. overlaps of a d-dim w)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        y_ode = ode.mean(name).reshape(ode.t.size, -1)
        y_sim = sim.mean(name).reshape(sim.t.size, -1)
        band = _band(result, name, spread).reshape(sim.t.size, -1)
        for j in range(y_ode.shape[1]):
            c = f"C{j % 10}"
            ax.fill_between(sim.t, y_sim[:, j] - band[:, j], y_sim[:, j] + band[:, j], color=c, alpha=0.18, lw=0)
            ax.plot(sim.t, y_sim[:, j], "o", ms=2.2, color=c, alpha=0.8)
            ax.plot(ode.t, y_ode[:, j], "-", lw=1.4, color=c)
        ax.axhline(0, color="0.7", lw=0.6)
        if log_time:
            ax.set_xscale("symlog", linthresh=max(sim.t[1] if sim.t.size > 1 else 1e-3, 1e-6))
        ax.set_xlabel(f"time ({sim.time_unit})")
        ax.set_ylabel(name)
    meta = result.meta
    fig.suptitle(
        f"{sim.model}: d = {meta.get('d')}, {meta.get('algorithm')} (eta = {meta.get('eta', '-')}, "
        f"batch = {meta.get('batch', '-')}), {sim.n_replicas} replicas\n"
        f"lines: ODE prediction; dots: simulated mean; {_band_text(result, spread)}"
        f";  max |ODE − mean sim| = {result.max_abs_deviation:.3g}",
        fontsize=9,
    )
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_trajectory(traj, name: str = "u", path=None, *, max_neurons: int = 6):
    """Replica mean (and ± s.d. band) of overlap ``name`` against time, one panel per neuron."""
    plt = _plt()
    mean, sd = traj.mean(name), traj.std(name)
    if mean.ndim == 1:
        mean, sd = mean[:, None, None], sd[:, None, None]
    elif mean.ndim == 2:
        mean, sd = mean[:, :, None], sd[:, :, None]
    n = min(mean.shape[1], max_neurons)
    rows, cols = _grid(n)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharex=True, sharey=True)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= n:
            ax.axis("off")
            continue
        for j in range(mean.shape[2]):
            line, = ax.plot(traj.t, mean[:, i, j], label=f"{name}[{j}]")
            ax.fill_between(traj.t, mean[:, i, j] - sd[:, i, j], mean[:, i, j] + sd[:, i, j],
                            color=line.get_color(), alpha=0.2, lw=0)
        ax.set_xlabel(f"time ({traj.time_unit})")
        ax.set_ylabel(name)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_eigenvalue_curve(betas, eigenvalues, beta_c=None, path=None, *, title: str = ""):
    r"""Smallest in-span tangent Hessian eigenvalue at the average point against :math:`\beta`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.plot(betas, eigenvalues, "-", lw=1.6)
    ax.axhline(0, color="0.6", lw=0.8)
    if beta_c is not None:
        ax.axvline(beta_c, color="C3", ls="--", lw=1.0, label=rf"$\beta_c = {beta_c:.6g}$")
        ax.legend()
    ax.set_xlabel(r"index-vector overlap $\beta$ ($v_i\cdot v_j$, equiangular)")
    ax.set_ylabel(r"smallest tangent eigenvalue $\lambda_\parallel$")
    ax.set_title(title or "average point: saddle ($\\lambda<0$) vs minimum ($\\lambda>0$)", fontsize=9)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
