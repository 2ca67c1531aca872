"""The additive ("sum of diverse features") model's declaration (arXiv 2406.11828).

``popdyn predict --model additive`` integrates the Phase I overlap ODE of ``J`` neurons from
a start drawn as in a simulation and reports localisation, the tasks covered against the
coupon-collector law and the width that covers all tasks; ``popdyn simulate --model
additive`` runs layer-wise online SGD in ``d`` dimensions (the generic engine with
:class:`~popdyn.models.additive_sim.AdditiveStepper`); ``popdyn compare --model additive``
puts the two side by side (the ODE with the online-SGD term).
"""

from __future__ import annotations

import math

from ..model import Model, Option, Prediction, check_level, ode_options, parse_init, sgd_uses

__all__ = ["MODEL", "build_problem", "DEFAULT_M", "DEFAULT_ETA0"]

#: Default number of tasks.
DEFAULT_M = 8
#: Default step scale: eta = eta0 M^{-1/2} d^{-p/2} (the BAGJ scale, popdyn.models.additive_sim.sgd_step_size).
DEFAULT_ETA0 = 0.5
#: Largest M x d (index vectors) and M x M (their Gram matrix) accepted from the command line before
#: the memory check of popdyn._budget; the Gram matrix is validated with an O(M^3) eigendecomposition
#: (~1 s at M = 1000, ~30 s at M = 3000 on 2 cores), so larger M is refused with that reason.
MAX_CLI_M = 4000


def _check_gamma(value: float) -> None:
    if not 0.0 <= value <= 3.0:
        raise ValueError(f"must lie in [0, 3] (M = d^gamma tasks; gamma > 3 means more than d^3 directions), got "
                         f"{value:g}")


def _n_tasks(opts) -> int:
    from .additive import tasks_for_gamma

    if opts.gamma is not None:
        if opts.M is not None:
            raise ValueError("give either `--M` or `--gamma` (M = ceil(d^gamma)), not both.")
        return tasks_for_gamma(opts.d, opts.gamma, kind=opts.directions)
    return DEFAULT_M if opts.M is None else opts.M


def default_width(M: int) -> int:
    """``J = ceil(2 M log M)`` (at least 2): about twice the coupon collector's ``M log M``."""
    return max(2, math.ceil(2 * M * math.log(max(M, 2))))


def build_problem(opts):
    """An :class:`~popdyn.models.additive.AdditiveProblem` from the options."""
    import numpy as np

    from .._budget import check_memory, nbytes
    from .additive import AdditiveProblem, diverse_student, task_directions

    if opts.d is None:
        from ..model import DEFAULT_D

        opts.d = DEFAULT_D
    d = opts.d
    M = _n_tasks(opts)
    if M > MAX_CLI_M:
        raise ValueError(f"`M` must be at most {MAX_CLI_M} on the command line (the M x M Gram matrix is checked by an "
                         f"O(M^3) eigendecomposition); got M = {M}.")
    check_memory(nbytes(M, d), driver="M", value=M, what="the M x d task directions", flag="--M")
    J = default_width(M) if opts.neurons is None else opts.neurons
    check_memory(nbytes(J, M), driver="neurons", value=J, what="the neurons x M overlaps", flag="--neurons")
    seeds = np.random.SeedSequence(opts.seed).spawn(2)
    V = task_directions(M, d, kind=opts.directions, rng=np.random.default_rng(seeds[0]))
    student = opts.student or opts.links or "he3"
    diversity = None
    if opts.diversity != "none":
        from ..activations import get_activation

        act = get_activation(student)
        if not act.is_polynomial:
            raise ValueError(f"`--diversity` needs a polynomial `--student`, got {student!r}.")
        diversity = diverse_student(J, max(act.degree, 1), kind=opts.diversity, rng=np.random.default_rng(seeds[1]))
    problem = AdditiveProblem(student, opts.links or "he3", V, n_neurons=J, diversity=diversity, degree=opts.degree)
    return problem


def _validate(opts, given) -> None:
    if "gamma" in given and "M" in given:
        raise ValueError("give either `--M` or `--gamma` (M = ceil(d^gamma)), not both.")
    if "eta" in given and "eta0" in given:
        raise ValueError("give either `--eta` or `--eta0` (eta = eta0 M^-1/2 d^-p/2), not both.")


def _step_size(opts) -> float:
    """``--eta``, else ``eta0 * M^-1/2 * d^-p/2`` with ``p`` the links' information exponent."""
    if opts.eta is not None:
        return opts.eta
    from ..exponents import information_exponent

    p = information_exponent(opts.links or "he3")
    if p is None or p < 1:
        raise ValueError(f"`--links` {opts.links!r} has no information exponent (a constant link); give `--eta`.")
    M = _n_tasks(opts)
    return (DEFAULT_ETA0 if opts.eta0 is None else opts.eta0) / math.sqrt(M) * opts.d ** (-p / 2)


def _predict(problem, opts) -> Prediction:
    import numpy as np

    from ..model import horizon
    from ..ode import integrate
    from ..simulation import initial_state
    from .additive import localisation_report, width_for_coverage

    p = problem.require_common_exponent()
    _, _, u0 = initial_state(problem, problem.d, init=parse_init(opts.init), rng=opts.seed)
    u0 = np.asarray(u0).reshape(-1, problem.M)
    lead = float(np.max(np.abs(problem.gamma[:, p])))
    top = np.maximum(np.max(np.abs(u0), axis=1), 1e-12)
    t_lead = float(np.median(top ** (2 - p))) / (p * (p - 2) * lead)  # leading-order escape of the median neuron
    times = top ** (2 - p) / (p * (p - 2) * lead)
    # 20x the leading-order escape of the slowest neuron, at most 50x the median one
    t_end = opts.t_end if opts.t_end is not None else horizon(float(min(20 * times.max(), 50 * np.median(times))),
                                                              1e4)
    traj = integrate(problem, u0, t_end, escape_level=opts.level, escape_terminal=False, n_times=60,
                     rtol=1e-8, atol=1e-11, **ode_options(opts))
    rep = localisation_report(problem, u0, traj.final("u")[0], level=opts.level)
    esc = np.asarray(traj.events.get("escape", []), dtype=float)
    eta = _step_size(opts)
    width = width_for_coverage(problem.M)
    out = {"model": "additive", "problem": problem.describe(), "p": p, "t_final": float(traj.t[-1]),
           "time_unit": traj.time_unit, "localisation": rep.as_dict(),
           "escape_times": esc.tolist(), "median_escape_time": float(np.nanmedian(esc)) if esc.size else None,
           "leading_order_escape_time": t_lead, "eta": eta,
           "steps_at_eta": float(np.nanmedian(esc)) / eta if esc.size and np.any(np.isfinite(esc)) else None,
           "sample_law_M_d^(p-1)": float(problem.M * problem.d ** (p - 1)),
           "width_for_coverage_95": width, "message": traj.message}
    lines = [f"additive model: M = {problem.M} tasks ({problem.links[0].name} links) in d = {problem.d}, "
             f"max |v_i.v_j| = {problem.max_overlap:.3g}; J = {problem.n_neurons} {problem.student.name} neurons"
             + (" (diverse)" if problem.diversity is not None else "") + f"; p = {p}",
             f"  Phase I overlap ODE to t = {out['t_final']:.6g} ({out['time_unit']}): {traj.message}",
             *rep.lines(),
             f"  median time to max|u| = {opts.level:g}: {out['median_escape_time']:.6g} (leading order "
             f"{t_lead:.6g}); at eta = {eta:.3g} that is ~{out['steps_at_eta'] or float('nan'):.3g} steps "
             f"(law: M d^(p-1) = {out['sample_law_M_d^(p-1)']:.3g}, up to constants and logs)",
             f"  width covering all {problem.M} tasks with probability 0.95: J = {width} (coupon collector)"]
    return Prediction(out, lines, traj, "u")


MODEL = Model(
    name="additive",
    description="sum of M near-orthogonal single-index tasks, M^-1/2 sum_m f_m(v_m.x): neuron localisation, "
                "coverage, Phase I SGD (arXiv 2406.11828)",
    papers=("2406.11828",),
    options=(
        Option("links", "str", None, "link spec of every task (default he3)"),
        Option("student", "str", None, "student activation spec (default: the link)"),
        Option("M", "int", None, f"number of tasks (default {DEFAULT_M})", positive=True, flag="--M"),
        Option("gamma", "float", None, "M = ceil(d^gamma) tasks instead of --M (0 <= gamma <= 3)",
               check=_check_gamma),
        Option("directions", "str", "random", "random (near-orthogonal) or orthogonal (needs M <= d) task directions",
               choices=("random", "orthogonal")),
        Option("neurons", "int", None, "student width J (default ceil(2 M log M))", positive=True),
        Option("diversity", "str", "none", "per-neuron random Hermite coefficients of the student: none, signs or "
                                           "gaussian", choices=("none", "signs", "gaussian")),
        Option("degree", "int", None, "Hermite truncation for non-polynomial activations", positive=True),
        Option("eta0", "float", None, f"step scale: eta = eta0 M^-1/2 d^-p/2 when --eta is not given (default "
                                      f"{DEFAULT_ETA0})", positive=True, verbs=("predict", "simulate", "compare")),
        Option("level", "float", 0.95, "localisation level in (0, 1) for max_m |u_m| (default 0.95)",
               verbs=("predict",), check=check_level),
    ),
    uses={verb: tuple(o for o in opts if o != "delta")  # the step is --eta or --eta0, never eta = delta/d
          for verb, opts in sgd_uses(("d", "seed", "init", "t_end", "eta", "out", "plot")).items()},
    build=build_problem,
    predict=_predict,
    validate=_validate,
    step_size=_step_size,
)
