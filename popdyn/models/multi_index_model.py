"""The multi-index model's declaration for the command line, ``compare`` and sweeps.

Spherical student neurons under the correlation loss with a multi-index teacher
(arXiv 2411.08798): the options that build a :class:`~popdyn.models.multi_index.MultiIndexProblem`
and what ``popdyn predict --model multi-index`` reports (the u-ODE from a drawn or given
start, final directions, escape times).

Engines: ``simulate`` and ``compare`` take ``--engine full|exact``.  ``full`` materialises the
d-dimensional samples (:mod:`popdyn.models.multi_index_sim`); ``exact`` draws only their
projections from the exact joint law given the overlaps (:mod:`popdyn.models.multi_index_exact`;
online SGD, ``d >= neurons + k``), exact in law at any ``d`` at a cost independent of ``d``.
``compare`` uses ``exact`` unless ``--engine`` is given, wherever it applies
(:func:`default_engine`); ``simulate`` keeps ``full`` unless told otherwise.
"""

from __future__ import annotations

from ..model import Command, Model, Option, Prediction, check_level, ode_options, parse_init, sgd_uses

__all__ = ["MODEL", "build_problem", "default_engine", "DEFAULT_K", "COMPARE_ENGINE"]

#: Default number of index vectors.
DEFAULT_K = 3
#: Default predict horizon (the escapes of the README examples happen by t ~ 10).
DEFAULT_T_END = 20.0
#: Engine of ``compare`` when ``--engine`` is not given and it applies (:func:`default_engine`).
COMPARE_ENGINE = "exact"


def default_engine(opts, problem) -> str | None:
    """The engine ``compare`` uses when ``--engine`` is not given: ``"exact"`` for online SGD
    with ``d >= neurons + k`` (where the exact d-free engine applies), else ``"full"``.

    ``None`` for the other verbs and when ``--engine`` was given (the user's choice stands).
    """
    if getattr(opts, "command", None) != "compare" or "engine" in getattr(opts, "given", {"engine"}):
        return None
    if getattr(opts, "algorithm", None) == "sgd" and opts.d >= problem.n_neurons + problem.k:
        return COMPARE_ENGINE
    return "full"


def build_problem(opts, *, n_neurons=None):
    """A :class:`~popdyn.models.multi_index.MultiIndexProblem` from ``student, teacher, k, gram, beta, degree, neurons``."""
    import numpy as np

    from .._budget import check_memory, nbytes
    from .multi_index import MultiIndexProblem, gram

    student = opts.student or "he3"
    teacher = opts.teacher or "he3"
    d = getattr(opts, "d", None)
    if opts.gram in ("orthogonal", "equiangular", "random"):
        k = DEFAULT_K if opts.k is None else opts.k
        check_memory(nbytes(k, k), driver="k", value=k, what="the k x k Gram matrix", flag="--k")
        if opts.gram == "random" and d is not None:
            check_memory(nbytes(k, d), driver="d", value=d, what="the k x d index vectors", flag="--d")
        G = gram(opts.gram, k, beta=opts.beta, d=d, rng=opts.seed)
    else:
        try:
            G = np.loadtxt(opts.gram, ndmin=2)
        except OSError as exc:
            raise ValueError(f"`--gram` must be orthogonal, equiangular, random or a readable text file; "
                             f"could not read {opts.gram!r}: {(exc.strerror or str(exc)).rstrip('.')}.") from None
        if opts.k is not None and opts.k != G.shape[0]:
            raise ValueError(f"`--k` ({opts.k}) does not match the {G.shape[0]}x{G.shape[0]} Gram matrix in "
                             f"{opts.gram!r}; omit --k to take k from the file.")
        G = gram("custom", G.shape[0], G=G)
    n = n_neurons if n_neurons is not None else getattr(opts, "neurons", 1)
    return MultiIndexProblem(student, teacher, G, n_neurons=n, degree=opts.degree)


def _build(opts):
    """``build`` hook: the problem, with ``compare``'s default engine filled in
    (:func:`default_engine`)."""
    problem = build_problem(opts)
    engine = default_engine(opts, problem)
    if engine is not None:
        opts.engine = engine
    return problem


def _validate(opts, given) -> None:
    if "beta" in given and opts.gram != "equiangular":
        raise ValueError(f"`--beta` applies with `--gram equiangular` only, got --gram {opts.gram}.")
    if "u0" in given:
        clash = [d for d in ("init",) + (("d",) if opts.gram != "random" else ()) if d in given]
        if clash:
            raise ValueError(f"`--{clash[0]}` is used to draw the initial overlaps; it does not apply with `--u0`, "
                             "which gives them.")


def _parse_u0(opts, problem):
    import numpy as np

    try:
        u0 = np.array([[float(x) for x in row.split(",")] for row in opts.u0.split(";")])
    except ValueError:
        raise ValueError(f"`--u0` must be rows of comma-separated numbers separated by ';', got {opts.u0!r}.") from None
    if "neurons" in opts.given and u0.shape[0] != opts.neurons:
        raise ValueError(f"`--u0` has {u0.shape[0]} rows (one per neuron) but `--neurons` = {opts.neurons}; "
                         "omit --neurons to take the count from --u0.")
    if u0.shape[1] != problem.k:
        raise ValueError(f"`--u0` must have shape (neurons, k) with k = {problem.k} (one entry per index vector), "
                         f"got shape {u0.shape}.")
    return u0


def _predict(problem, opts) -> Prediction:
    import numpy as np

    from ..comparison import final_directions
    from ..ode import integrate
    from ..simulation import initial_state

    if opts.u0 is not None:
        u0 = _parse_u0(opts, problem)
    else:
        _, _, u0 = initial_state(problem, opts.d, init=parse_init(opts.init), rng=opts.seed)
        u0 = np.asarray(u0).reshape(-1, problem.k)
    traj = integrate(problem, u0, DEFAULT_T_END if opts.t_end is None else opts.t_end,
                     escape_level=opts.escape_level, escape_terminal=False, **ode_options(opts))
    out = {"model": "multi-index", "t_final": float(traj.t[-1]), "time_unit": traj.time_unit, "u0": u0.tolist(),
           "u_final": traj.final("u")[0].tolist(), "directions": final_directions(traj.final("u")[0]),
           "status": traj.status, "message": traj.message}
    if opts.escape_level is not None:
        out["escape_times"] = np.asarray(traj.events.get("escape", [])).tolist()
    lines = [f"ODE to t = {out['t_final']:.6g} ({out['time_unit']}): {traj.message}"]
    for i, (a, b, c) in enumerate(zip(out["u0"], out["u_final"], out["directions"])):
        lines.append(f"  neuron {i + 1}: u0 = {np.round(a, 4).tolist()} -> u = {np.round(b, 4).tolist()}  ({c})")
    if "escape_times" in out:
        lines.append(f"  escape times (max_j |u_j| >= {opts.escape_level}): {out['escape_times']}")
    return Prediction(out, lines, traj, "u")


#: Options shared by every verb that builds this model (also used by ``loss`` and ``fixed-points``).
PROBLEM_OPTIONS = (
    Option("student", "str", None, "student activation spec (default he3)"),
    Option("teacher", "str", None, "teacher activation spec (default he3)"),
    Option("k", "int", None, f"number of index vectors (default {DEFAULT_K}, or the size of the --gram file)",
           positive=True),
    Option("gram", "str", "orthogonal",
           "orthogonal | equiangular (with --beta) | random (in dimension --d) | a text file with G"),
    Option("beta", "float", None, "overlap of equiangular index vectors"),
    Option("degree", "int", None, "Hermite truncation for non-polynomial activations", positive=True),
)

#: ``fixed-points --random-starts`` cap: one root search costs ~6 ms on 2 cores (2000 starts
#: in 12 s), so 1e5 starts is ~10 minutes, far more than the few hundred that find every
#: fixed point of the flows here.
MAX_RANDOM_STARTS = 10**5


def _one_neuron(args):
    _validate(args, getattr(args, "given", set()))
    return build_problem(args, n_neurons=1)


def _fmt(x, digits: int = 12) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _run_threshold(args) -> Prediction:
    from .multi_index_threshold import threshold

    res = threshold(args.student, args.teacher, args.k, method=args.method, degree=args.degree)
    exact = f"   (exact: {res.as_dict()['exact']})" if res.exact is not None else ""
    lines = [f"student {res.student}, teacher {res.teacher}, k = {res.k}, equiangular G",
             f"beta_c      {_fmt(res.beta_c)}{exact}", f"kind below  {res.kind_below}",
             f"kind above  {res.kind_above}", f"method      {res.method}", res.message]
    return Prediction(res.as_dict(), lines)


def _run_fixed_points(args) -> Prediction:
    from .multi_index_fixedpoints import fixed_points

    fps = fixed_points(_one_neuron(args), n_random=args.random_starts, rng=args.seed)
    return Prediction(fps.as_dict(), [fps.summary()])


def _run_loss(args) -> Prediction:
    from .multi_index import loss_report

    rep = loss_report(_one_neuron(args), latex=args.latex)
    lines = ["one-neuron correlation loss  l(u) = -E[sigma(w.x) f*(x)],  u_j = v_j . w",
             f"  {rep['latex']}" if args.latex else f"  l(u) = {rep['expr']}",
             "spherical gradient flow  du/dt = G g(u) - u (u.g(u))"]
    latex = args.latex and rep.get("velocity_latex")
    for j, v in enumerate(rep["velocity_latex"] if latex else rep["velocity"]):
        lines.append(f"  {v}" if latex else f"  du_{j + 1}/dt = {v}")
    lines.append(rep["note"])
    return Prediction(rep, lines)


_SEED = Option("seed", "int", 0, "random seed (default 0)", minimum=0)
COMMANDS = (
    Command("threshold", "beta_c: where the average point of equiangular index vectors turns from saddle to minimum "
                         "(arXiv 2411.08798)",
            options=(Option("student", "str", None, "student activation spec", required=True),
                     Option("teacher", "str", None, "teacher activation spec", required=True),
                     Option("k", "int", None, "number of index vectors", positive=True, required=True),
                     Option("method", "str", "auto", "exact (sympy, polynomials), series (F(beta) sign scan), "
                                                     "hessian (any pair); default auto",
                            choices=("auto", "exact", "series", "hessian")),
                     Option("degree", "int", None, "Hermite truncation for non-polynomial activations",
                            positive=True)),
            run=_run_threshold, papers=("2411.08798",)),
    Command("fixed-points", "fixed points of the spherical flow of one neuron, classified by their Riemannian "
                            "Hessian (arXiv 2411.08798)",
            options=PROBLEM_OPTIONS + (_SEED, Option("random_starts", "int", 200, "random root-finding starts "
                                                     f"(default 200, at most {MAX_RANDOM_STARTS}: ~6 ms each)",
                                                     minimum=0, maximum=MAX_RANDOM_STARTS)),
            run=_run_fixed_points, papers=("2411.08798",)),
    Command("loss", "closed-form one-neuron loss and u-ODE of the multi-index model (sympy)",
            options=PROBLEM_OPTIONS + (_SEED, Option("latex", "bool", False, "print LaTeX")),
            run=_run_loss, papers=("2411.08798",)),
)

MODEL = Model(
    name="multi-index",
    description="spherical neurons, correlation loss, multi-index teacher; u-ODE, fixed points, beta_c "
                "(arXiv 2411.08798)",
    papers=("2411.08798",),
    options=PROBLEM_OPTIONS + (
        Option("neurons", "int", 4, "student neurons N (default 4)", positive=True),
        Option("u0", "str", None, "initial overlaps, rows 'u11,u12,...;u21,...' (default: drawn as in a simulation "
                                  "in dimension --d with --init and --seed)", verbs=("predict",)),
        Option("escape_level", "float", None, "record when max_j |u_j| first reaches this level in (0, 1)",
               verbs=("predict",), check=check_level),
    ),
    uses=sgd_uses(("d", "seed", "init", "t_end", "out", "plot")),
    build=_build,
    predict=_predict,
    validate=_validate,
    commands=COMMANDS,
    default=True,
)
