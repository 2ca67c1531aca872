"""The spiked-covariance model's declaration (arXiv 2309.03843): one neuron under
``Sigma = (I + kappa theta theta^T)/(1 + kappa)`` with the spherical, normalized and
preconditioned flows, or under any positive-definite ``Sigma`` read from a file.

``popdyn predict --model spiked`` reports the effective dimension, the time for
``|m_Sigma|`` to reach the target (``inf``: stalls) and the overlaps at the end.
"""

from __future__ import annotations

from ..model import Model, Option, Prediction, check_level, ode_options, parse_init, sgd_uses

__all__ = ["MODEL", "parse_covariance", "MAX_KAPPA"]

#: ``--covariance spiked:kappa=K``: Sigma = (I + K theta theta^T)/(1 + K) has condition number
#: 1 + K; beyond 1e12 the isotropic part 1/(1 + K) is within ~1e4 rounding units of the spike
#: direction's scale and the flows lose their meaning in double precision.
MAX_KAPPA = 1e12


def parse_covariance(text: str) -> dict:
    """``spiked:kappa=K,align=A`` -> ``{"kappa": K, "align": A}``."""
    if not text.startswith("spiked:"):
        raise ValueError(f"`--covariance` must look like 'spiked:kappa=K,align=A' or be a file, got {text!r}.")
    out = {}
    for part in text[len("spiked:"):].split(","):
        key, _, val = part.partition("=")
        key = key.strip()
        if key not in ("kappa", "align") or not val:
            raise ValueError(f"`--covariance` takes the keys kappa and align, e.g. spiked:kappa=50,align=1; "
                             f"could not read {part!r}.")
        try:
            out[key] = float(val)
        except ValueError:
            raise ValueError(f"`--covariance` {key} must be a number, got {val!r}.") from None
        if out[key] != out[key] or abs(out[key]) == float("inf"):
            raise ValueError(f"`--covariance` {key} must be finite, got {val!r}.")
    if "kappa" in out and not 0.0 <= out["kappa"] <= MAX_KAPPA:
        raise ValueError(f"`--covariance` kappa must lie in [0, {MAX_KAPPA:g}] (the condition number of Sigma is "
                         f"1 + kappa), got {out['kappa']:g}.")
    if "align" in out and not -1.0 <= out["align"] <= 1.0:
        raise ValueError(f"`--covariance` align = cos(theta, target) must lie in [-1, 1], got {out['align']:g}.")
    missing = {"kappa", "align"} - set(out)
    if missing:
        raise ValueError(f"`--covariance` is missing {sorted(missing)}; e.g. spiked:kappa=50,align=1.")
    return out


def _from_file(opts) -> bool:
    return not opts.covariance.startswith("spiked:")


def _build(opts):
    student, teacher = opts.student or "relu", opts.teacher or "he4"
    if _from_file(opts):
        from .covariance import CovarianceProblem, load_covariance, load_direction

        sigma = load_covariance(opts.covariance)
        d = sigma.shape[0]
        if "d" in opts.given and opts.d != d:
            raise ValueError(f"`--d` = {opts.d} disagrees with the {d} x {d} covariance in {opts.covariance!r}; "
                             "omit --d to take d from the file.")
        opts.d = d
        direction = None if opts.direction is None else load_direction(opts.direction)
        return CovarianceProblem(student, teacher, sigma, direction=direction, flow=opts.flow, a_star=opts.a_star,
                                 n_unlabeled=opts.n_unlabeled)
    if opts.direction is not None:
        raise ValueError(f"`--direction` applies with a covariance FILE only, got --covariance {opts.covariance!r}.")
    from .spiked import SpikedProblem

    cov = parse_covariance(opts.covariance)
    return SpikedProblem(student, teacher, kappa=cov["kappa"], align=cov["align"], flow=opts.flow, d=opts.d,
                         n_unlabeled=opts.n_unlabeled, a_star=opts.a_star)


def _validate(opts, given) -> None:
    if "n_unlabeled" in given and opts.flow != "preconditioned":
        raise ValueError(f"`--n-unlabeled` applies with `--flow preconditioned` only (n_unlabeled samples estimate "
                         f"its Sigma), got --flow {opts.flow}.")


def _predict(problem, opts) -> Prediction:
    import dataclasses

    import numpy as np

    from ..model import horizon

    if problem.ode_model == "covariance":
        return _predict_file(problem, opts)
    m0 = None if opts.init == "uniform" else float(parse_init(opts.init))
    state0 = problem.initial_state(opts.d, m0=m0)
    t_escape = problem.escape_time(state0, level=opts.m_target)
    t_end = opts.t_end if opts.t_end is not None else horizon(2.0 * t_escape, 1e4)
    traj = problem.integrate(state0, t_end, **ode_options(opts))
    final = problem.overlaps({k: traj.final(k)[0] for k in problem.ode_state_names})
    derived = problem.overlaps({k: traj.overlaps[k] for k in problem.ode_state_names})
    traj = dataclasses.replace(traj, overlaps={**traj.overlaps, "m": derived["m"]})
    out = {"model": "spiked", "problem": problem.describe(), "d": opts.d,
           "effective_dimension": float(problem.effective_dimension(opts.d)),
           "m_sigma_initial": float(np.asarray(problem.overlaps(state0)["m"]).ravel()[0]),
           "escape_time": t_escape, "level": opts.m_target, "t_final": float(traj.t[-1]), "time_unit": traj.time_unit,
           "final": {k: float(np.asarray(v).ravel()[0]) for k, v in final.items()}, "message": traj.message}
    head = (f"spiked covariance (kappa = {problem.kappa:g}, align = {problem.align:g}), {opts.flow} flow, "
            f"{problem.student.name} neuron / {problem.teacher.name} target, d = {opts.d}, "
            f"d_eff = {out['effective_dimension']:.6g}")
    return Prediction(out, _lines(head, out, opts, ""), traj, "m")


def _lines(head: str, out: dict, opts, start_note: str) -> list:
    """The text report shared by both covariance forms: escape time and the overlaps at the end."""
    import math

    stalls = "  (stalls)" if not math.isfinite(out["escape_time"]) else ""
    return [head,
            f"  m_Sigma(0) = {out['m_sigma_initial']:.6g}{start_note}; time for |m_Sigma| to reach {opts.m_target}: "
            f"{out['escape_time']:.6g}{stalls}",
            f"  at t = {out['t_final']:.6g}: " + ", ".join(f"{k} = {v:.6g}" for k, v in out["final"].items())]


def _predict_file(problem, opts) -> Prediction:
    import numpy as np

    from ..model import horizon

    w0 = problem.initial_weight(parse_init(opts.init), rng=opts.seed)
    t_escape = problem.escape_time(w0, level=opts.m_target)
    t_end = opts.t_end if opts.t_end is not None else horizon(2.0 * t_escape, 1e4)
    traj = problem.with_overlaps(problem.integrate(w0, t_end, escape_level=opts.m_target, escape_terminal=False,
                                                   **ode_options(opts)))
    names = ("p", "S", "m_sigma", "m_u")
    ev = np.linalg.eigvalsh(problem.sigma)
    out = {"model": "covariance", "covariance": opts.covariance, "direction": opts.direction,
           "problem": problem.describe(), "d": opts.d, "effective_dimension": float(problem.effective_dimension()),
           "m_sigma_initial": float(np.asarray(traj.overlaps["m_sigma"][0]).ravel()[0]),
           "escape_time": t_escape, "level": opts.m_target, "t_final": float(traj.t[-1]), "time_unit": traj.time_unit,
           "final": {k: float(np.asarray(traj.final(k)).ravel()[0]) for k in names}, "message": traj.message}
    head = (f"covariance from {opts.covariance} (d = {opts.d}, eigenvalues in [{ev[0]:.4g}, {ev[-1]:.4g}], "
            f"d_eff = {out['effective_dimension']:.6g}), {opts.flow} flow, {problem.student.name} neuron / "
            f"{problem.teacher.name} target")
    return Prediction(out, _lines(head, out, opts, f" (init {opts.init}, seed {opts.seed})"), traj, "m_sigma")


MODEL = Model(
    name="spiked",
    description="one neuron under a spiked (or file-given) covariance: spherical, normalized and preconditioned "
                "flows (arXiv 2309.03843)",
    papers=("2309.03843",),
    options=(
        Option("student", "str", None, "student activation spec (default relu)"),
        Option("teacher", "str", None, "teacher activation spec (default he4)"),
        Option("a_star", "float", 1.0, "teacher scale a* (non-zero)"),
        Option("covariance", "str", "spiked:kappa=0,align=1",
               "data covariance as spiked:kappa=K,align=A (Sigma = (I + K theta theta^T)/(1+K), A = cos(theta, "
               "target)), or a FILE (.npy / text / .csv) holding a dense d x d covariance (d is then taken from "
               "the file)"),
        Option("direction", "str", None, "covariance FILE only: FILE with the d-vector target direction (default "
                                         "e_1), rescaled so that u^T Sigma u = 1"),
        Option("flow", "str", "normalized", "spherical, covariance-normalised (default) or preconditioned flow",
               choices=("spherical", "normalized", "preconditioned")),
        Option("n_unlabeled", "int", None, "preconditioned: unlabelled samples for the empirical covariance "
                                           "(default: exact Sigma)", positive=True),
        Option("m_target", "float", 0.5, "alignment in (0, 1) to reach (default 0.5)", verbs=("predict",),
               check=check_level),
    ),
    uses=sgd_uses(("d", "seed", "init", "t_end", "out", "plot")),
    build=_build,
    predict=_predict,
    validate=_validate,
)
