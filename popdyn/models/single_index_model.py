"""The single-index model's declaration: online spherical SGD (arXiv 2003.10409) and, with
``--reuse``, SGD that reuses each minibatch (arXiv 2406.01581).

``popdyn predict --model single-index`` reports the predicted escape sample counts (three
routes) and the alignment ODE with its eta^2 term; with ``--reuse`` the exact reuse drift,
its effective exponent and the predicted sample counts against online SGD at the same step.
"""

from __future__ import annotations

from ..model import (DEFAULT_DELTA, STEP_OPTIONS, Model, Option, Prediction, check_level, ode_options, parse_init,
                     sgd_uses)

__all__ = ["MODEL"]

#: Batch reuse: default per-sample step scale eta * d / batch (the paper's experiments use
#: eta_tilde = O(1); 0.5 is the value of its Sec. 5 examples).
DEFAULT_ETA_TILDE = 0.5


def _reuse(opts) -> bool:
    return opts.reuse is not None or opts.interpolation is not None


def _build(opts):
    if opts.eta_tilde is not None and not _reuse(opts):
        raise ValueError("`--eta-tilde` (per-sample step eta*d/batch) applies with `--reuse` only; otherwise give "
                         "--eta or --delta.")
    student, teacher = opts.student or "he3", opts.teacher or "he3"
    if _reuse(opts):
        from .reuse import ReuseProblem

        if opts.loss != "correlation":
            raise ValueError(f"`--loss` must be 'correlation' with `--reuse` (the paper's Phase I: squared loss with "
                             f"a vanishing second layer is the correlation loss), got {opts.loss!r}.")
        return ReuseProblem(student, teacher, reuse=1 if opts.reuse is None else opts.reuse,
                            interpolation=1.0 if opts.interpolation is None else opts.interpolation,
                            a_star=opts.a_star)
    from .single_index import SingleIndexProblem

    return SingleIndexProblem(student, teacher, loss=opts.loss, a_star=opts.a_star)


def _step_size(opts) -> float:
    """eta from --eta / --delta, or with --reuse from --eta-tilde = eta d / batch (default 0.5)."""
    given = [n for n in ("eta", "delta") if getattr(opts, n) is not None]
    if _reuse(opts) or opts.eta_tilde is not None:
        if opts.eta_tilde is not None and given:
            raise ValueError(f"give either `--eta-tilde` or `--{given[0]}`, not both.")
        if not given:
            et = DEFAULT_ETA_TILDE if opts.eta_tilde is None else opts.eta_tilde
            return et * getattr(opts, "batch", 1) / opts.d
    if len(given) == 2:
        raise ValueError("give either `--eta` or `--delta` (eta = delta/d), not both.")
    if opts.eta is not None:
        return opts.eta
    return (DEFAULT_DELTA if opts.delta is None else opts.delta) / opts.d


def _m0(opts) -> float:
    import math

    return 1.0 / math.sqrt(opts.d) if opts.init == "uniform" else float(parse_init(opts.init))


#: Gauss-Hermite nodes for the step-size estimate (an order of magnitude is all it needs).
_STEP_NODES = 80


def check_step(problem, eta: float, d: int, batch: int) -> None:
    r"""Warn (:class:`popdyn.errors.LargeStepWarning`) when the predicted run takes steps
    outside the small-step regime of the overlap ODE.

    One step moves the unit weight by :math:`N pprox r\,\eta\,\|\hat g\|` with
    :math:`\|\hat g\|^2 pprox d\,E[y^2]\,E[\sigma'(z)^2]/B` at the equator (``r`` gradient
    steps per minibatch with batch reuse); the ODE keeps only the leading term of the
    renormalisation :math:`(1+N^2)^{-1/2}`, so its predictions lose their meaning once
    :math:`N` exceeds ``RELATIVE_STEP_LIMIT`` (the simulators' own check of the same bound).
    """
    import warnings

    import numpy as np

    from ..errors import LargeStepWarning
    from .single_index_sim import RELATIVE_STEP_LIMIT

    z, w = np.polynomial.hermite_e.hermegauss(_STEP_NODES)
    w = w / w.sum()
    with np.errstate(all="ignore"):
        sp2 = float(np.sum(w * np.asarray(problem.student.derivative(z), dtype=float) ** 2))
    y2 = problem.a_star ** 2 * problem.teacher.second_moment
    n_step = getattr(problem, "reuse", 1) * eta * np.sqrt(d * y2 * sp2 / batch)
    if np.isfinite(n_step) and n_step > RELATIVE_STEP_LIMIT:
        warnings.warn(LargeStepWarning(
            f"eta = {eta:.3g} at d = {d}, batch = {batch} moves the unit weight by ~{n_step:.3g} per step, above "
            f"{RELATIVE_STEP_LIMIT} (the small-step regime of the overlap ODE); its predictions do not describe "
            "such a run: lower the step"), stacklevel=2)


def _predict(problem, opts) -> Prediction:
    check_step(problem, _step_size(opts), opts.d, opts.batch)
    return _predict_reuse(problem, opts) if _reuse(opts) else _predict_online(problem, opts)


def _predict_online(problem, opts) -> Prediction:
    from ..model import horizon
    from ..ode import integrate
    from .single_index import escape_samples

    eta, m0 = _step_size(opts), _m0(opts)
    samples = {method: escape_samples(problem, opts.d, eta=eta, batch=opts.batch, m0=m0, m_target=opts.m_target,
                                      method=method) for method in ("ode", "quadrature", "leading")}
    steps = samples["ode"] / opts.batch
    t_end = opts.t_end if opts.t_end is not None else horizon(eta * steps * 1.5, eta * 1e6)
    traj = integrate(problem, m0, t_end, eta=eta, d=opts.d, batch=opts.batch, **ode_options(opts))
    desc = problem.describe()
    out = {"model": "single-index", "problem": desc, "d": opts.d, "eta": eta, "batch": opts.batch,
           "m0": m0, "m_target": opts.m_target, "escape_samples": samples,
           "information_exponent": problem.information_exponent, "t_final": float(traj.t[-1]),
           "time_unit": traj.time_unit, "m_final": float(traj.final("m").ravel()[0]), "message": traj.message}
    lines = [f"single-index online SGD, {desc['student']} / {desc['teacher']} ({desc['loss']} loss), "
             f"IE = {problem.information_exponent}, d = {opts.d}, eta = {eta:.6g}, batch = {opts.batch}",
             f"samples to go from m0 = {m0:.4g} to m = {opts.m_target}:"]
    lines += [f"  {method:<11} {v:.6g}" for method, v in samples.items()]
    lines.append(f"ODE to t = {out['t_final']:.6g} ({out['time_unit']}): m = {out['m_final']:.6g}")
    return Prediction(out, lines, traj, "m")


def _predict_reuse(problem, opts) -> Prediction:
    import dataclasses

    import numpy as np

    from ..model import horizon
    from ..ode import integrate
    from .reuse import predicted_samples

    eta, m0, batch = _step_size(opts), _m0(opts), opts.batch
    eta_tilde = eta * opts.d / batch
    online = dataclasses.replace(problem, reuse=1, interpolation=1.0)
    samples = {"reuse": predicted_samples(problem, opts.d, eta_tilde=eta_tilde, m0=m0, m_target=opts.m_target),
               "online (reuse 1, same step)": predicted_samples(online, opts.d, eta_tilde=eta_tilde, m0=m0,
                                                                m_target=opts.m_target)}
    coeffs = problem.drift_coefficients(2, eta_tilde)
    n = samples["reuse"]
    t_end = opts.t_end if opts.t_end is not None else horizon(1.5 * eta_tilde * n / opts.d, 1e3)
    traj = integrate(problem, m0, t_end, eta=eta, d=opts.d, batch=batch, **ode_options(opts))
    out = {"model": "reuse", "problem": problem.describe(), "d": opts.d, "eta": eta, "batch": batch,
           "eta_tilde": eta_tilde, "m0": m0, "m_target": opts.m_target, "predicted_samples": samples,
           "drift_coefficients": [float(c) for c in coeffs],
           "effective_exponent": problem.effective_exponent(eta_tilde),
           "information_exponent": problem.information_exponent, "t_final": float(traj.t[-1]),
           "time_unit": traj.time_unit, "m_final": float(np.ravel(traj.final("m"))[0]), "message": traj.message}
    lines = [f"single-index SGD with batch reuse {problem.reuse} (interpolation {problem.interpolation:g}), "
             f"{problem.student.name} / {problem.teacher.name}, d = {opts.d}, batch = {batch}, eta = {eta:.6g} "
             f"(eta_tilde = eta d / B = {eta_tilde:.6g})",
             f"  drift per sample, d -> inf: D(m) = {coeffs[0]:.6g} {coeffs[1]:+.6g} m {coeffs[2]:+.6g} m^2 + ...; "
             f"effective exponent {out['effective_exponent']} (information exponent {problem.information_exponent})",
             f"  samples for |m| to go from {m0:.4g} to {opts.m_target} (mean path; inf = stalls):"]
    lines += [f"    {k:<28} {v:.6g}" for k, v in samples.items()]
    lines.append(f"  ODE to t = {out['t_final']:.6g} ({out['time_unit']}): m = {out['m_final']:.6g}")
    return Prediction(out, lines, traj, "m")


MODEL = Model(
    name="single-index",
    description="one spherical neuron, online SGD with the eta^2 term (arXiv 2003.10409); with --reuse, batch "
                "reuse (arXiv 2406.01581)",
    papers=("2003.10409", "2406.01581"),
    options=(
        Option("student", "str", None, "student activation spec (default he3)"),
        Option("teacher", "str", None, "teacher activation spec (default he3)"),
        Option("loss", "str", "correlation", "correlation (default) or squared", choices=("correlation", "squared")),
        Option("a_star", "float", 1.0, "teacher scale a* (non-zero)"),
        Option("reuse", "int", None, "consecutive gradient steps on each minibatch (1 = online SGD; 2 = the batch "
                                     "reuse of arXiv 2406.01581); given, it selects the batch-reuse model",
               positive=True),
        Option("interpolation", "float", None, "with --reuse: xi in (0, 1], w <- normalize((1 - xi) w_old + "
                                               "xi w_new) after the reused steps (default 1 = none)"),
        Option("eta_tilde", "float", None, f"with --reuse: per-sample step scale eta*d/batch (default "
                                           f"{DEFAULT_ETA_TILDE} when neither --eta nor --delta is given)",
               positive=True),
        Option("m_target", "float", 0.5, "alignment in (0, 1) to reach (default 0.5)", verbs=("predict",),
               check=check_level),
    ),
    uses=sgd_uses(STEP_OPTIONS + ("out", "plot")),
    build=_build,
    predict=_predict,
    step_size=_step_size,
)
