"""The ``popdyn`` command line: thin wrappers that load, call one library function, print.

Exit codes: 0 ok, 1 numerical failure (:class:`popdyn.NumericalError`), 2 usage error
(bad arguments, unknown names, invalid values).  ``--json`` prints one JSON object to
stdout; progress and logs go to stderr.  Heavy modules (sympy, matplotlib, scipy's
integrators) are imported inside the commands that use them, so ``popdyn --version``
starts fast.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from . import __version__
from ._budget import DEFAULT_MAX_STEPS

EXIT_OK, EXIT_NUMERICAL, EXIT_USAGE = 0, 1, 2
#: Default online-SGD step in high-d units (eta = delta/d); with the default batch of 32
#: the per-step normalisation term eta*(d-1)/(2B)*C stays a small correction.
DEFAULT_DELTA = 0.5
#: Default number of index vectors of the multi-index model.
DEFAULT_K = 3
#: ``fixed-points --random-starts`` cap: one root search costs ~6 ms on 2 cores (2000 starts
#: in 12 s), so 1e5 starts is ~10 minutes, far more than the few hundred that find every
#: fixed point of the flows here.
MAX_RANDOM_STARTS = 10**5
#: ``--covariance spiked:kappa=K``: Sigma = (I + K theta theta^T)/(1 + K) has condition number
#: 1 + K; beyond 1e12 the isotropic part 1/(1 + K) is within ~1e4 rounding units of the spike
#: direction's scale and the flows lose their meaning in double precision.
MAX_KAPPA = 1e12


#: Longest error message printed (characters): a message echoing a huge user string
#: (a 5,000-character spec, a matrix) is cut, so every failure stays one readable line.
MAX_MESSAGE = 400


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit code 2, and no abbreviations.

    Abbreviated long options are refused (``allow_abbrev=False``) so that every flag a
    user typed can be matched exactly against the flags that apply to the chosen model.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # pragma: no cover - exercised through subprocess tests
        self.exit(EXIT_USAGE, f"popdyn: error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _one_line(text) -> str:
    """A message as one line of at most ``MAX_MESSAGE`` characters, numpy scalars shown as numbers."""
    text = " ".join(str(text).split())
    text = re.sub(r"np\.(?:float|int|uint|complex|bool_?)\d*\(([^()]*)\)", r"\1", text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 5] + " ...)"


def _finite_or_null(obj):
    """Strict JSON: non-finite floats (an escape time that never happens, ...) become null."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def _dump(obj) -> None:
    from ._io import _json_default

    text = json.dumps(obj, default=_json_default)  # numpy -> python first
    json.dump(_finite_or_null(json.loads(text)), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def _fmt(x, digits: int = 12) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------
def cmd_hermite(args) -> int:
    from .activations import get_activation
    from .exponents import exponents_summary

    act = get_activation(args.spec)
    series = act.series(args.degree)
    summ = exponents_summary(act)
    out = {
        "activation": act.name,
        "description": act.description,
        "basis": "orthonormal h_k = He_k/sqrt(k!), c_k = E[f(z) h_k(z)], lowest degree first",
        "degree": args.degree,
        "coefficients": series.coefficients.tolist(),
        "exact": act.is_polynomial or act.exact_coefficients(0) is not None,
        "second_moment": act.second_moment,
        "norm": series.norm(),
        "tail_mass": series.tail_mass,
        **summ,
    }
    if args.json:
        _dump(out)
        return EXIT_OK
    print(f"activation  {act.name}   ({act.description})")
    print("basis       h_k = He_k/sqrt(k!), c_k = E[f(z) h_k(z)]")
    print(f"{'k':>3}  {'c_k':>22}")
    for k, c in enumerate(series.coefficients):
        print(f"{k:>3}  {c:>22.15g}")
    print(f"E[f^2]                 {act.second_moment:.15g}")
    print(f"norm (truncated)       {series.norm():.15g}")
    print(f"tail mass (k > {args.degree:<3})    {series.tail_mass:.3g}")
    print(f"information exponent   {_fmt(summ['information_exponent'])}")
    print(f"generative exponent    {_fmt(summ['generative_exponent'])}")
    w = summ.get("witness")
    if w:
        exact = f", exact {w['exact_correlation']}" if w["exact_correlation"] else ""
        print(f"  witness              {w['description']}  (E[T(y) h_k] = {_fmt(w['correlation'], 8)}{exact})")
    print(f"lambda_k^2 (k=1..{len(summ['lambdas'])})  " + ", ".join(_fmt(v, 6) for v in summ["lambdas"]))
    return EXIT_OK


def cmd_activations(args) -> int:
    from .activations import _NAMES, get_activation

    rows = [{"spec": n, "description": get_activation(n).description} for n in _NAMES]
    rows += [
        {"spec": "heK", "description": "h_K = He_K/sqrt(K!) for any integer K >= 0, e.g. he3"},
        {"spec": "hermite:c0,c1,...", "description": "sum_k c_k h_k in the normalised basis, e.g. hermite:0,0,1,0.5"},
        {"spec": "poly:<expr>", "description": "polynomial in z, e.g. poly:z**3-3*z"},
    ]
    if args.json:
        _dump({"activations": rows})
        return EXIT_OK
    width = max(len(r["spec"]) for r in rows)
    for r in rows:
        print(f"{r['spec']:<{width}}  {r['description']}")
    return EXIT_OK


def _problem_from_args(args, *, n_neurons=None):
    """Build a MultiIndexProblem from --student/--teacher/--k/--gram/--beta/--neurons."""
    import numpy as np

    from .models.multi_index import MultiIndexProblem, gram

    student = args.student or DEFAULT_ACTIVATION["multi-index"][0]
    teacher = args.teacher or DEFAULT_ACTIVATION["multi-index"][1]
    if args.gram in ("orthogonal", "equiangular", "random"):
        from ._budget import check_memory, nbytes

        k = DEFAULT_K if args.k is None else args.k
        check_memory(nbytes(k, k), driver="k", value=k, what="the k x k Gram matrix", flag="--k")
        if args.gram == "random" and getattr(args, "d", None) is not None:
            check_memory(nbytes(k, args.d), driver="d", value=args.d, what="the k x d index vectors", flag="--d")
        G = gram(args.gram, DEFAULT_K if args.k is None else args.k, beta=args.beta, d=getattr(args, "d", None),
                 rng=args.seed)
    else:
        try:
            G = np.loadtxt(args.gram, ndmin=2)
        except OSError as exc:
            raise ValueError(f"`--gram` must be orthogonal, equiangular, random or a readable text file; "
                             f"could not read {args.gram!r}: {(exc.strerror or str(exc)).rstrip('.')}.") from None
        if args.k is not None and args.k != G.shape[0]:
            raise ValueError(f"`--k` ({args.k}) does not match the {G.shape[0]}x{G.shape[0]} Gram matrix in {args.gram!r}; "
                             "omit --k to take k from the file.")
        G = gram("custom", G.shape[0], G=G)
    n = n_neurons if n_neurons is not None else getattr(args, "neurons", 1)
    return MultiIndexProblem(student, teacher, G, n_neurons=n, degree=args.degree)


MODELS = ("multi-index", "single-index", "committee", "spiked")
#: Dimension when --d is not given (a covariance file sets its own).
DEFAULT_D = 500
#: Batch reuse: default per-sample step scale eta * d / batch (THEORY.md §2.2, §5.14).
DEFAULT_ETA_TILDE = 0.5
#: Default activations per model (the committee machine's classic is erf, Saad-Solla's g;
#: the spiked-covariance example of arXiv 2309.03843 is a ReLU neuron and an h4 target).
DEFAULT_ACTIVATION = {"multi-index": ("he3", "he3"), "single-index": ("he3", "he3"), "committee": ("erf", "erf"),
                      "spiked": ("relu", "he4")}


def _parse_covariance(text: str) -> dict:
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


def _covariance_problem(args):
    """``--covariance FILE``: a dense user-given Sigma (d from the file)."""
    from .models.covariance import CovarianceProblem, load_covariance, load_direction

    sigma = load_covariance(args.covariance)
    d = sigma.shape[0]
    if args.d is not None and args.d != d:
        raise ValueError(f"`--d` = {args.d} disagrees with the {d} x {d} covariance in {args.covariance!r}; "
                         "omit --d to take d from the file.")
    args.d = d
    direction = None if args.direction is None else load_direction(args.direction)
    return CovarianceProblem(args.student, args.teacher, sigma, direction=direction, flow=args.flow,
                             a_star=args.a_star, n_unlabeled=args.n_unlabeled)


def _model_problem(args):
    """The problem object for ``--model`` (multi-index by default)."""
    model = getattr(args, "model", "multi-index")
    for name, default in zip(("student", "teacher"), DEFAULT_ACTIVATION[model]):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if model == "spiked" and not args.covariance.startswith("spiked:"):
        return _covariance_problem(args)
    if getattr(args, "direction", None) is not None:
        raise ValueError("`--direction` applies to --model spiked with a covariance FILE only "
                         f"(got --model {model}, --covariance {getattr(args, 'covariance', None)!r}).")
    if getattr(args, "d", 0) is None:
        args.d = DEFAULT_D
    if model == "multi-index":
        return _problem_from_args(args)
    reuse_args = getattr(args, "reuse", None) is not None or getattr(args, "interpolation", None) is not None
    if reuse_args and model != "single-index":
        raise ValueError(f"`--reuse` / `--interpolation` apply to --model single-index only (batch reuse, "
                         f"arXiv 2406.01581), got --model {model}.")
    if getattr(args, "eta_tilde", None) is not None and not reuse_args:
        raise ValueError("`--eta-tilde` (per-sample step eta*d/batch) applies with `--reuse` only; "
                         "otherwise give --eta or --delta.")
    if model == "single-index" and reuse_args:
        from .models.reuse import ReuseProblem

        if args.loss != "correlation":
            raise ValueError(f"`--loss` must be 'correlation' with `--reuse` (the paper's Phase I: squared loss "
                             f"with a vanishing second layer is the correlation loss), got {args.loss!r}.")
        return ReuseProblem(args.student, args.teacher, reuse=1 if args.reuse is None else args.reuse,
                            interpolation=1.0 if args.interpolation is None else args.interpolation,
                            a_star=args.a_star)
    if model == "single-index":
        from .models.single_index import SingleIndexProblem

        return SingleIndexProblem(args.student, args.teacher, loss=args.loss, a_star=args.a_star)
    if model == "spiked":
        from .models.spiked import SpikedProblem

        cov = _parse_covariance(args.covariance)
        return SpikedProblem(args.student, args.teacher, kappa=cov["kappa"], align=cov["align"], flow=args.flow,
                             d=args.d, n_unlabeled=args.n_unlabeled, a_star=args.a_star)
    from ._budget import check_memory, nbytes
    from .models.committee import CommitteeProblem

    # the ODE's right-hand side holds the K^2 (K+M)^2 four-point Gaussian integrals I4 with
    # their index tuples and 4x4 covariances (~50 bytes each, counted as 64)
    name, value = max((("K", args.K), ("M", args.M)), key=lambda nv: nv[1])
    check_memory(nbytes(args.K, args.K, args.K + args.M, args.K + args.M, itemsize=64), driver=name, value=value,
                 what="the K^2 (K+M)^2 Gaussian integrals I4 of the committee ODE", flag=f"--{name}")
    delta = DEFAULT_DELTA if args.delta is None else args.delta
    if args.eta is not None:
        raise ValueError("`--eta` does not apply to --model committee: its step is eta = delta/d; use `--delta`.")
    return CommitteeProblem(args.student, args.teacher, K=args.K, M=args.M, delta=delta,
                            train_second_layer=args.train_second_layer, noise=args.noise,
                            conventions=args.conventions)


def cmd_threshold(args) -> int:
    from .threshold import threshold

    res = threshold(args.student, args.teacher, args.k, method=args.method, degree=args.degree)
    if args.json:
        _dump(res.as_dict())
        return EXIT_OK
    print(f"student {res.student}, teacher {res.teacher}, k = {res.k}, equiangular G")
    print(f"beta_c      {_fmt(res.beta_c)}" + (f"   (exact: {res.as_dict()['exact']})" if res.exact is not None else ""))
    print(f"kind below  {res.kind_below}")
    print(f"kind above  {res.kind_above}")
    print(f"method      {res.method}")
    print(res.message)
    return EXIT_OK


def cmd_fixed_points(args) -> int:
    from .fixedpoints import fixed_points

    problem = _problem_from_args(args, n_neurons=1)
    if args.random_starts > MAX_RANDOM_STARTS:
        raise ValueError(f"`--random-starts` must be at most {MAX_RANDOM_STARTS} (each start is one root search, "
                         f"~6 ms on 2 cores), got {args.random_starts}.")
    fps = fixed_points(problem, n_random=args.random_starts, rng=args.seed)
    if args.json:
        _dump(fps.as_dict())
        return EXIT_OK
    print(fps.summary())
    return EXIT_OK


def cmd_loss(args) -> int:
    from .models.multi_index import loss_report

    rep = loss_report(_problem_from_args(args, n_neurons=1), latex=args.latex)
    if args.json:
        _dump(rep)
        return EXIT_OK
    print("one-neuron correlation loss  l(u) = -E[sigma(w.x) f*(x)],  u_j = v_j . w")
    print(f"  {rep['latex']}" if args.latex else f"  l(u) = {rep['expr']}")
    print("spherical gradient flow  du/dt = G g(u) - u (u.g(u))")
    vel = rep["velocity_latex"] if args.latex and rep.get("velocity_latex") else rep["velocity"]
    for j, v in enumerate(vel):
        print(f"  {v}" if args.latex and rep.get("velocity_latex") else f"  du_{j + 1}/dt = {v}")
    print(rep["note"])
    return EXIT_OK


def _eta(args):
    eta_tilde = getattr(args, "eta_tilde", None)
    if eta_tilde is not None or getattr(args, "reuse", None) is not None or getattr(args, "interpolation", None) is not None:
        given = [n for n in ("eta", "delta") if getattr(args, n) is not None]
        if eta_tilde is not None and given:
            raise ValueError(f"give either `--eta-tilde` or `--{given[0]}`, not both.")
        if not given:  # batch reuse: the per-sample step scale eta*d/batch (THEORY §2.2 uses 0.5)
            et = DEFAULT_ETA_TILDE if eta_tilde is None else eta_tilde
            return et * getattr(args, "batch", 1) / args.d
    if args.eta is not None and args.delta is not None:
        raise ValueError("give either `--eta` or `--delta` (eta = delta/d), not both.")
    if args.eta is not None:
        return args.eta
    return (DEFAULT_DELTA if args.delta is None else args.delta) / args.d


def _init(text):
    if text in ("uniform",):
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"`--init` must be 'uniform' or a warm-start overlap scale m0 (a number), got {text!r}.") from None


def cmd_predict(args) -> int:
    model = args.model
    if model == "single-index" and (args.reuse is not None or args.interpolation is not None):
        return _predict_reuse(args)
    if model == "single-index":
        return _predict_single_index(args)
    if model == "committee":
        return _predict_committee(args)
    if model == "spiked":
        return _predict_spiked(args)
    import numpy as np

    from .ode import integrate
    from .simulate import initial_state

    problem = _model_problem(args)
    if args.u0 is not None:
        try:
            u0 = np.array([[float(x) for x in row.split(",")] for row in args.u0.split(";")])
        except ValueError:
            raise ValueError(f"`--u0` must be rows of comma-separated numbers separated by ';', got {args.u0!r}.") from None
        if "neurons" in getattr(args, "given", ()) and u0.shape[0] != args.neurons:
            raise ValueError(f"`--u0` has {u0.shape[0]} rows (one per neuron) but `--neurons` = {args.neurons}; "
                             "omit --neurons to take the count from --u0.")
        if u0.shape[1] != problem.k:
            raise ValueError(f"`--u0` must have shape (neurons, k) with k = {problem.k} (one entry per index "
                             f"vector), got shape {u0.shape}.")
    else:
        _, _, u0 = initial_state(problem, args.d, init=_init(args.init), rng=args.seed)
        u0 = np.asarray(u0).reshape(-1, problem.k)
    traj = integrate(problem, u0, 20.0 if args.t_end is None else args.t_end, escape_level=args.escape_level,
                     escape_terminal=False)
    from .compare import final_directions

    out = {"model": model, "t_final": float(traj.t[-1]), "time_unit": traj.time_unit, "u0": u0.tolist(),
           "u_final": traj.final("u")[0].tolist(), "directions": final_directions(traj.final("u")[0]),
           "status": traj.status, "message": traj.message}
    if args.escape_level is not None:
        out["escape_times"] = np.asarray(traj.events.get("escape", [])).tolist()
    _save_and_plot(args, traj, "u", out)
    if args.json:
        _dump(out)
        return EXIT_OK
    print(f"ODE to t = {out['t_final']:.6g} ({out['time_unit']}): {traj.message}")
    for i, (a, b, c) in enumerate(zip(out["u0"], out["u_final"], out["directions"])):
        print(f"  neuron {i + 1}: u0 = {np.round(a, 4).tolist()} -> u = {np.round(b, 4).tolist()}  ({c})")
    if "escape_times" in out:
        print(f"  escape times (max_j |u_j| >= {args.escape_level}): {out['escape_times']}")
    _print_saved(out)
    return EXIT_OK


def _horizon(predicted: float, fallback: float) -> float:
    """Default ``--t-end``: past the predicted escape, or ``fallback`` when there is none (the
    flow stalls: ``inf``) or the start is already past the target (``0``)."""
    import math

    return predicted if math.isfinite(predicted) and predicted > 0 else fallback


def _save_and_plot(args, traj, name, out) -> None:
    if args.out:
        traj.save(args.out)
        out["saved"] = args.out
    if args.plot:
        from .plot import plot_trajectory

        plot_trajectory(traj, name, args.plot)
        out["plot"] = args.plot


def _print_saved(out) -> None:
    for key in ("saved", "plot"):
        if key in out:
            print(f"  {key}: {out[key]}")


def _predict_single_index(args) -> int:
    import math

    from .models.single_index import escape_samples
    from .ode import integrate

    problem = _model_problem(args)
    eta = _eta(args)
    m0 = 1.0 / math.sqrt(args.d) if args.init == "uniform" else float(_init(args.init))
    samples = {method: escape_samples(problem, args.d, eta=eta, batch=args.batch, m0=m0, m_target=args.m_target,
                                      method=method) for method in ("ode", "quadrature", "leading")}
    steps = samples["ode"] / args.batch
    t_end = args.t_end if args.t_end is not None else _horizon(eta * steps * 1.5, eta * 1e6)
    traj = integrate(problem, m0, t_end, eta=eta, d=args.d, batch=args.batch)
    out = {"model": "single-index", "problem": problem.describe(), "d": args.d, "eta": eta, "batch": args.batch,
           "m0": m0, "m_target": args.m_target, "escape_samples": samples,
           "information_exponent": problem.information_exponent, "t_final": float(traj.t[-1]),
           "time_unit": traj.time_unit, "m_final": float(traj.final("m").ravel()[0]), "message": traj.message}
    _save_and_plot(args, traj, "m", out)
    if args.json:
        _dump(out)
        return EXIT_OK
    print(f"single-index online SGD, {problem.describe()['student']} / {problem.describe()['teacher']} "
          f"({problem.describe()['loss']} loss), IE = {problem.information_exponent}, d = {args.d}, eta = {eta:.6g}, "
          f"batch = {args.batch}")
    print(f"samples to go from m0 = {m0:.4g} to m = {args.m_target}:")
    for method, v in samples.items():
        print(f"  {method:<11} {v:.6g}")
    print(f"ODE to t = {out['t_final']:.6g} ({out['time_unit']}): m = {out['m_final']:.6g}")
    _print_saved(out)
    return EXIT_OK


def _predict_reuse(args) -> int:
    import dataclasses
    import math

    import numpy as np

    from .models.reuse import predicted_samples
    from .ode import integrate

    problem = _model_problem(args)
    eta = _eta(args)
    batch = args.batch
    eta_tilde = eta * args.d / batch
    m0 = 1.0 / math.sqrt(args.d) if args.init == "uniform" else float(_init(args.init))
    online = dataclasses.replace(problem, reuse=1, interpolation=1.0)
    samples = {"reuse": predicted_samples(problem, args.d, eta_tilde=eta_tilde, m0=m0, m_target=args.m_target),
               "online (reuse 1, same step)": predicted_samples(online, args.d, eta_tilde=eta_tilde, m0=m0,
                                                                m_target=args.m_target)}
    coeffs = problem.drift_coefficients(2, eta_tilde)
    n = samples["reuse"]
    t_end = args.t_end if args.t_end is not None else _horizon(1.5 * eta_tilde * n / args.d, 1e3)
    traj = integrate(problem, m0, t_end, eta=eta, d=args.d, batch=batch)
    out = {"model": "reuse", "problem": problem.describe(), "d": args.d, "eta": eta, "batch": batch,
           "eta_tilde": eta_tilde, "m0": m0, "m_target": args.m_target, "predicted_samples": samples,
           "drift_coefficients": [float(c) for c in coeffs],
           "effective_exponent": problem.effective_exponent(eta_tilde),
           "information_exponent": problem.information_exponent, "t_final": float(traj.t[-1]),
           "time_unit": traj.time_unit, "m_final": float(np.ravel(traj.final("m"))[0]), "message": traj.message}
    _save_and_plot(args, traj, "m", out)
    if args.json:
        _dump(out)
        return EXIT_OK
    print(f"single-index SGD with batch reuse {problem.reuse} (interpolation {problem.interpolation:g}), "
          f"{problem.student.name} / {problem.teacher.name}, d = {args.d}, batch = {batch}, eta = {eta:.6g} "
          f"(eta_tilde = eta d / B = {eta_tilde:.6g})")
    print(f"  drift per sample, d -> inf: D(m) = {coeffs[0]:.6g} {coeffs[1]:+.6g} m {coeffs[2]:+.6g} m^2 + ...; "
          f"effective exponent {out['effective_exponent']} (information exponent {problem.information_exponent})")
    print(f"  samples for |m| to go from {m0:.4g} to {args.m_target} (mean path; inf = stalls):")
    for k, v in samples.items():
        print(f"    {k:<28} {v:.6g}")
    print(f"  ODE to t = {out['t_final']:.6g} ({out['time_unit']}): m = {out['m_final']:.6g}")
    _print_saved(out)
    return EXIT_OK


def _predict_spiked(args) -> int:
    import dataclasses
    import math

    import numpy as np

    problem = _model_problem(args)
    if problem.ode_model == "covariance":
        return _predict_covariance(args, problem)
    m0 = None if args.init == "uniform" else float(_init(args.init))
    state0 = problem.initial_state(args.d, m0=m0)
    t_escape = problem.escape_time(state0, level=args.m_target)
    t_end = args.t_end if args.t_end is not None else _horizon(2.0 * t_escape, 1e4)
    traj = problem.integrate(state0, t_end)
    final = problem.overlaps({k: traj.final(k)[0] for k in problem.ode_state_names})
    derived = problem.overlaps({k: traj.overlaps[k] for k in problem.ode_state_names})
    traj = dataclasses.replace(traj, overlaps={**traj.overlaps, "m": derived["m"]})
    out = {"model": "spiked", "problem": problem.describe(), "d": args.d,
           "effective_dimension": float(problem.effective_dimension(args.d)),
           "m_sigma_initial": float(np.asarray(problem.overlaps(state0)["m"]).ravel()[0]),
           "escape_time": t_escape, "level": args.m_target, "t_final": float(traj.t[-1]), "time_unit": traj.time_unit,
           "final": {k: float(np.asarray(v).ravel()[0]) for k, v in final.items()}, "message": traj.message}
    _save_and_plot(args, traj, "m", out)
    if args.json:
        _dump(out)
        return EXIT_OK
    print(f"spiked covariance (kappa = {problem.kappa:g}, align = {problem.align:g}), {args.flow} flow, "
          f"{problem.student.name} neuron / {problem.teacher.name} target, d = {args.d}, d_eff = {out['effective_dimension']:.6g}")
    print(f"  m_Sigma(0) = {out['m_sigma_initial']:.6g}; time for |m_Sigma| to reach {args.m_target}: {t_escape:.6g}" + ("  (stalls)" if not math.isfinite(t_escape) else ""))
    print(f"  at t = {out['t_final']:.6g}: " + ", ".join(f"{k} = {v:.6g}" for k, v in out["final"].items()))
    _print_saved(out)
    return EXIT_OK


def _predict_covariance(args, problem) -> int:
    import math

    import numpy as np

    w0 = problem.initial_weight(_init(args.init), rng=args.seed)
    t_escape = problem.escape_time(w0, level=args.m_target)
    t_end = args.t_end if args.t_end is not None else _horizon(2.0 * t_escape, 1e4)
    traj = problem.with_overlaps(problem.integrate(w0, t_end, escape_level=args.m_target, escape_terminal=False))
    names = ("p", "S", "m_sigma", "m_u")
    ev = np.linalg.eigvalsh(problem.sigma)
    out = {"model": "covariance", "covariance": args.covariance, "direction": args.direction,
           "problem": problem.describe(), "d": args.d, "effective_dimension": float(problem.effective_dimension()),
           "m_sigma_initial": float(np.asarray(traj.overlaps["m_sigma"][0]).ravel()[0]),
           "escape_time": t_escape, "level": args.m_target, "t_final": float(traj.t[-1]), "time_unit": traj.time_unit,
           "final": {k: float(np.asarray(traj.final(k)).ravel()[0]) for k in names}, "message": traj.message}
    _save_and_plot(args, traj, "m_sigma", out)
    if args.json:
        _dump(out)
        return EXIT_OK
    print(f"covariance from {args.covariance} (d = {args.d}, eigenvalues in [{ev[0]:.4g}, {ev[-1]:.4g}], "
          f"d_eff = {out['effective_dimension']:.6g}), {args.flow} flow, {problem.student.name} neuron / "
          f"{problem.teacher.name} target")
    print(f"  m_Sigma(0) = {out['m_sigma_initial']:.6g} (init {args.init}, seed {args.seed}); time for |m_Sigma| to "
          f"reach {args.m_target}: {t_escape:.6g}" + ("  (stalls)" if not math.isfinite(t_escape) else ""))
    print(f"  at t = {out['t_final']:.6g}: " + ", ".join(f"{k} = {v:.6g}" for k, v in out["final"].items()))
    _print_saved(out)
    return EXIT_OK


def _predict_committee(args) -> int:
    import numpy as np

    from .models.committee import add_eps_g
    from .ode import integrate
    from .simulate import initial_state

    problem = _model_problem(args)
    state0 = initial_state(problem, args.d, init=_init(args.init), rng=args.seed)[2]
    traj = add_eps_g(problem, integrate(problem, state0, args.t_end or 200.0, batch=args.batch))
    eg = traj.overlaps["eps_g"][:, 0]
    out = {"model": "committee", "problem": problem.describe(), "t_final": float(traj.t[-1]),
           "time_unit": traj.time_unit, "eps_g_initial": float(eg[0]), "eps_g_final": float(eg[-1]),
           "Q_final": traj.final("Q")[0].tolist(), "M_final": traj.final("M")[0].tolist(), "message": traj.message}
    _save_and_plot(args, traj, "eps_g", out)
    if args.json:
        _dump(out)
        return EXIT_OK
    names = problem.overlap_names
    print(f"committee machine ODE ({problem.student.name} student K = {problem.K}, {problem.teacher.name} teacher "
          f"M = {problem.M}, delta = {problem.delta}), to t = {out['t_final']:.6g} ({out['time_unit']})")
    for t in np.unique(np.geomspace(max(traj.t[1], 1e-3), traj.t[-1], 8)):
        i = int(np.argmin(np.abs(traj.t - t)))
        print(f"  t = {traj.t[i]:<10.4g} eps_g = {eg[i]:.6g}")
    print(f"  final {names['Q']} = {np.round(out['Q_final'], 4).tolist()}, {names['M']} = {np.round(out['M_final'], 4).tolist()}")
    _print_saved(out)
    return EXIT_OK


def cmd_simulate(args) -> int:
    import numpy as np

    problem = _model_problem(args)
    progress = None if not args.quiet else False
    if args.model == "committee":
        from .models.committee import simulate_committee

        if args.algorithm != "sgd":
            raise ValueError(f"`--algorithm` must be 'sgd' for --model committee (online SGD); got {args.algorithm!r}.")
        traj = simulate_committee(problem, d=args.d, t_end=args.t_end, replicas=args.replicas,
                                  init=_init(args.init), batch=args.batch, rng=args.seed, engine=args.engine,
                                  checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                                  progress=progress, max_steps=args.max_steps)
    else:
        from .simulate import simulate

        eta = None if args.algorithm == "gf" else _eta(args)
        traj = simulate(problem, d=args.d, algorithm=args.algorithm, eta=eta, t_end=args.t_end,
                        batch=None if args.algorithm == "gf" else args.batch,
                        n_samples=args.n_samples, replicas=args.replicas, init=_init(args.init), rng=args.seed,
                        checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, progress=progress,
                        engine=args.engine, max_steps=args.max_steps)
    out = traj.summary()
    if args.out:
        traj.save(args.out)
        out["saved"] = args.out
    if args.json:
        _dump(out)
        return EXIT_OK
    print(f"{args.model}: {traj.message} d = {args.d}, {traj.n_replicas} replicas, engine {args.engine}, "
          f"t = {traj.t[-1]:.6g} ({traj.time_unit})")
    for name, val in out["final_mean"].items():
        if name == "w":  # the d-dim weight of a covariance-file run (kept in --json and --out)
            continue
        print(f"  mean {name} = {np.round(np.asarray(val), 5).tolist()}")
    if "saved" in out:
        print(f"  saved: {out['saved']}")
    return EXIT_OK


def cmd_compare(args) -> int:
    """``popdyn compare``: ODE vs simulation, with the statistical verdict of :mod:`popdyn.compare`.

    Exit code 0 for every completed comparison, whether the verdict is "agree" or
    "DISAGREE": a disagreement is a measured result (the printed line and the JSON
    ``verdict.agree`` carry it), not a failure of the computation.  Scripts that gate on
    it read ``verdict.agree`` from ``--json``.  Exit 1 stays reserved for numerical
    failures (non-finite weights, ODE blow-up), exit 2 for usage errors.
    """
    import numpy as np

    from .compare import compare

    if args.model == "committee":
        raise ValueError("`popdyn compare` does not take --model committee: use `popdyn predict --model committee` "
                         "and `popdyn simulate --model committee` (the committee's own comparison is in "
                         "popdyn.models.committee); choices here: multi-index, single-index, spiked.")
    problem = _model_problem(args)
    eta = None if args.algorithm == "gf" else _eta(args)
    res = compare(problem, d=args.d, t_end=args.t_end, algorithm=args.algorithm, eta=eta,
                  batch=None if args.algorithm == "gf" else args.batch,
                  n_samples=args.n_samples, replicas=args.replicas, init=_init(args.init), rng=args.seed,
                  progress=None if not args.quiet else False, engine=args.engine)
    out = res.as_dict()
    if args.plot:
        from .plot import plot_comparison

        plot_comparison(res, args.plot)
        out["plot"] = args.plot
    if args.json:
        _dump(out)
        return EXIT_OK
    m = res.meta
    print(f"ODE vs {m['algorithm']} in d = {m['d']} (eta = {m['eta']}, batch = {m['batch']}, "
          f"{m['replicas']} replicas from the same start), t in [0, {out['t_final']:.6g}] ({out['time_unit']})")
    what = "u_ode - mean u_sim|" if res.names == ("u",) else f"ODE - mean simulation| over ({', '.join(res.names)})"
    print(f"  max |{what} = {res.max_abs_deviation:.4g}   "
          f"(largest standard error of the mean: {res.max_standard_error:.4g})")
    if "w" in res.names:  # covariance file: report the overlaps, not the d-dim weight
        ode = problem.overlaps(res.ode.overlaps["w"][:, 0])
        sim = res.simulation
        for n in ("m_sigma", "p", "S"):
            print(f"  {n}: start {ode[n][0]:.5g}, end ODE {ode[n][-1]:.5g}, simulation mean {sim.mean(n)[-1]:.5g} "
                  f"(SE {sim.std(n)[-1] / np.sqrt(sim.n_replicas):.2g})")
    elif "u" not in res.names:
        for n in res.names:
            print(f"  {n}: start {np.round(np.asarray(out['initial'][n]), 5).tolist()}, end ODE "
                  f"{np.round(np.asarray(out['final_ode'][n]), 5).tolist()}, simulation mean "
                  f"{np.round(np.asarray(out['final_sim_mean'][n]), 5).tolist()}")
    unit = "neuron" if "u" in res.names else "unit"
    for i, (a, b) in enumerate(zip(res.directions_ode, res.directions_sim)):
        print(f"  {unit} {i + 1}: ODE -> {a:<7} simulation -> {b:<7} {'agree' if a == b else 'DISAGREE'}")
    if res.directions_ode:
        print(f"  direction agreement: {res.agreement:.0%} (final directions only; not the verdict)")
    v = res.verdict
    mx = v.max_deviation
    at_mx = f"{mx.z:+.2g} SE" if np.isfinite(mx.z) else "no SE"
    print(f"  verdict: {'agree' if v.agree else 'DISAGREE'} - max |dev| = {abs(mx.deviation):.3g} = {at_mx} "
          f"at t = {mx.t:.4g} ({mx.label}); {v.fraction_within:.0%} of {v.n_points} points within "
          f"z*SE + c/sqrt(d)")
    if v.worst_z is not None:
        w = v.worst_z
        print(f"  worst z = {w.z:+.3g} at t = {w.t:.4g} ({w.label}, |dev| = {abs(w.deviation):.3g}, "
              f"band {w.band:.3g}); largest |dev|/band = {v.band_ratio:.3g}")
    print(f"  rule: {v.rule}")
    for note in v.notes:
        print(f"  note: {note}")
    if args.plot:
        print(f"  plot: {args.plot}")
    return EXIT_OK


def cmd_verify(args) -> int:
    from .verify import list_papers, verify

    if args.list:
        papers = list_papers(args.papers or None)
        if args.json:
            _dump({"papers": papers})
        else:
            for p, claims in papers.items():
                print(f"{p}: {', '.join(claims)}")
        return EXIT_OK

    def progress(r):
        print(f"[{'pass' if r.passed else 'FAIL'}] {r.paper} {r.claim} ({r.seconds:.1f} s)", file=sys.stderr)

    results = verify(args.papers or None, quick=args.quick, rng=args.seed, progress=progress)
    ok = all(r.passed for r in results)
    if args.json:
        _dump({"claims": [r.as_dict() for r in results], "passed": ok})
    else:
        rows = [("paper", "claim", "predicted", "measured", "tolerance", "result")]
        for r in results:
            rows.append((r.paper, r.claim, _short(r.predicted), _short(r.measured), _short(r.tolerance),
                         "pass" if r.passed else "FAIL"))
        widths = [max(len(str(row[c])) for row in rows) for c in range(6)]
        for n, row in enumerate(rows):
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
            if n == 0:
                print("  ".join("-" * w for w in widths))
        print(f"{sum(r.passed for r in results)}/{len(results)} claims pass")
    return EXIT_OK if ok else EXIT_NUMERICAL


def _short(x) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in x) + "]"
    return str(x)


# --------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------
class _CiteAction(argparse.Action):
    """``COMMAND --cite``: print the BibTeX behind the command and exit (before required arguments are checked)."""

    def __init__(self, option_strings, dest, command=None, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.command = command

    def __call__(self, parser, namespace, values, option_string=None):
        from .citations import COMMAND_PAPERS, bibtex

        sys.stdout.write(bibtex(COMMAND_PAPERS.get(self.command, [])))
        parser.exit(EXIT_OK)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.add_argument("--cite", action=_CiteAction, command=p.prog.split()[-1],
                   help="print the BibTeX of popdyn and of the papers behind this command, then exit")


def _int(text: str, minimum: int, what: str) -> int:
    """An integer ``>= minimum``; integral floats such as ``1e4`` are accepted."""
    try:
        v = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (f == f and abs(f) != float("inf") and f.is_integer()):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        v = int(f)
    if v < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    return _int(text, 0, "a non-negative integer")


def _pos_int(text: str) -> int:
    return _int(text, 1, "a positive integer")


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def _pos_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}") from None
    if not (v > 0) or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return v


def _level(text: str) -> float:
    """An overlap level in (0, 1): the unit-norm overlaps |u_j|, |m| never exceed 1."""
    v = _finite_float(text)
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1) (overlaps of unit vectors are at most 1 in "
                                         f"absolute value), got {text!r}")
    return v


def _add_model_args(p) -> None:
    g = p.add_argument_group("other models (--model single-index | committee)")
    g.add_argument("--model", choices=MODELS, default="multi-index",
                   help="multi-index (default; arXiv 2411.08798), single-index online SGD (BAGJ 2021), or committee "
                        "(two-layer squared loss, Saad-Solla)")
    g.add_argument("--loss", choices=["correlation", "squared"], default="correlation", help="single-index loss")
    g.add_argument("--a-star", type=_finite_float, default=1.0, help="single-index / spiked: teacher scale a* (non-zero)")
    g.add_argument("--K", type=_pos_int, default=2, help="committee: student hidden units (default 2)")
    g.add_argument("--M", type=_pos_int, default=2, help="committee: teacher hidden units (default 2)")
    g.add_argument("--train-second-layer", action="store_true", help="committee: train the second layer")
    g.add_argument("--noise", type=_finite_float, default=0.0, help="committee: label-noise variance")
    g.add_argument("--conventions", choices=["popdyn", "saad-solla"], default="popdyn",
                   help="committee: naming/scaling of order parameters and time")
    g.add_argument("--covariance", default="spiked:kappa=0,align=1",
                   help="spiked: data covariance as spiked:kappa=K,align=A (Sigma = (I + K theta theta^T)/(1+K), "
                        "A = cos(theta, target)), or a FILE (.npy / text / .csv) holding a dense d x d covariance "
                        "(d is then taken from the file)")
    g.add_argument("--direction", default=None,
                   help="covariance FILE only: FILE with the d-vector target direction (default e_1), rescaled so "
                        "that u^T Sigma u = 1")
    g.add_argument("--flow", choices=["spherical", "normalized", "preconditioned"], default="normalized",
                   help="spiked: spherical, covariance-normalised (default) or preconditioned flow")
    g.add_argument("--n-unlabeled", type=_pos_int, default=None,
                   help="spiked, preconditioned: unlabelled samples for the empirical covariance (default: exact Sigma)")
    g.add_argument("--reuse", type=_pos_int, default=None,
                   help="single-index: consecutive gradient steps on each minibatch (default 1 = online SGD; 2 = "
                        "the batch reuse of arXiv 2406.01581); given, it selects the batch-reuse model, correlation loss")
    g.add_argument("--interpolation", type=_finite_float, default=None,
                   help="single-index with --reuse: xi in (0, 1], w <- normalize((1 - xi) w_old + xi w_new) "
                        "after the reused steps (default 1 = none)")
    g.add_argument("--eta-tilde", type=_pos_float, default=None,
                   help=f"single-index with --reuse: per-sample step scale eta*d/batch (default {DEFAULT_ETA_TILDE} "
                        "when neither --eta nor --delta is given)")


def _add_problem_args(p, *, neurons: bool = True, student="he3", teacher="he3", n=4) -> None:
    g = p.add_argument_group("model (multi-index teacher, spherical student, correlation loss)")
    g.add_argument("--student", default=None, help=f"student activation spec (default {student}; erf for the committee)")
    g.add_argument("--teacher", default=None, help=f"teacher activation spec (default {teacher}; erf for the committee)")
    g.add_argument("--k", type=_pos_int, default=None,
                   help=f"number of index vectors (default {DEFAULT_K}, or the size of the --gram file)")
    g.add_argument("--gram", default="orthogonal",
                   help="orthogonal | equiangular (with --beta) | random (in dimension --d) | a text file with G")
    g.add_argument("--beta", type=_finite_float, default=None, help="overlap of equiangular index vectors")
    g.add_argument("--degree", type=_pos_int, default=None, help="Hermite truncation for non-polynomial activations")
    if neurons:
        g.add_argument("--neurons", type=_pos_int, default=n, help=f"student neurons N (default {n})")
    g.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="popdyn",
        description="Population dynamics of feature learning: Hermite closed forms, overlap ODEs, finite-d SGD.",
        epilog="Exit codes: 0 ok, 1 numerical failure, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"popdyn {__version__}")
    parser.add_argument("--cite", action="store_true",
                        help="print the BibTeX of popdyn and of the papers behind the command, then exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of a failure instead of the one-line message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.commands = sub.choices  # command name -> its parser (for the options a user typed)

    p = sub.add_parser("hermite", help="Hermite coefficients, norm, tail mass and exponents of an activation")
    p.add_argument("spec", help="activation spec: relu, tanh, he3, hermite:0,0,1, poly:z**3-3*z, ... (see `popdyn activations`)")
    p.add_argument("--degree", type=_nonneg_int, default=10, help="highest degree (default 10)")
    _add_common(p)
    p.set_defaults(func=cmd_hermite)

    p = sub.add_parser("activations", help="list the activation registry")
    _add_common(p)
    p.set_defaults(func=cmd_activations)

    p = sub.add_parser("threshold", help="beta_c: where the average point of equiangular index vectors turns "
                                         "from saddle to minimum (arXiv 2411.08798)")
    p.add_argument("--student", required=True, help="student activation spec")
    p.add_argument("--teacher", required=True, help="teacher activation spec")
    p.add_argument("--k", type=_pos_int, required=True, help="number of index vectors")
    p.add_argument("--method", default="auto", choices=["auto", "exact", "series", "hessian"],
                   help="exact (sympy, polynomials), series (F(beta) sign scan), hessian (any pair); default auto")
    p.add_argument("--degree", type=_pos_int, default=None, help="Hermite truncation for non-polynomial activations")
    _add_common(p)
    p.set_defaults(func=cmd_threshold)

    p = sub.add_parser("fixed-points", help="fixed points of the spherical flow of one neuron, classified by "
                                            "their Riemannian Hessian (arXiv 2411.08798)")
    _add_problem_args(p, neurons=False)
    p.add_argument("--random-starts", type=_nonneg_int, default=200, help="random root-finding starts (default 200)")
    _add_common(p)
    p.set_defaults(func=cmd_fixed_points)

    p = sub.add_parser("loss", help="closed-form one-neuron loss and u-ODE of the multi-index model (sympy)")
    _add_problem_args(p, neurons=False)
    p.add_argument("--latex", action="store_true", help="print LaTeX")
    _add_common(p)
    p.set_defaults(func=cmd_loss)

    p = sub.add_parser("predict", help="integrate the overlap ODE; for single-index also the predicted escape "
                                       "sample counts")
    _add_problem_args(p)
    _add_model_args(p)
    p.add_argument("--eta", type=_pos_float, default=None, help="single-index: step size (overrides --delta)")
    p.add_argument("--delta", type=_pos_float, default=None, help="single-index / committee: eta = delta/d (default 0.5)")
    p.add_argument("--batch", type=_pos_int, default=1, help="single-index / committee: minibatch size (default 1)")
    p.add_argument("--m-target", type=_level, default=0.5, help="single-index / spiked: alignment in (0, 1) to reach "
                                                                   "(default 0.5)")
    p.add_argument("--u0", default=None, help="initial overlaps, rows 'u11,u12,...;u21,...' (default: drawn as in a "
                                              "simulation in dimension --d with --init and --seed)")
    p.add_argument("--d", type=_pos_int, default=None,
                   help="dimension used to draw u0 (default 500; a covariance FILE sets it)")
    p.add_argument("--init", default="uniform", help="'uniform' (Haar on the sphere) or a warm-start scale m0 "
                                                     "(single-index: the initial alignment; committee: weight scale)")
    p.add_argument("--t-end", type=_pos_float, default=None,
                   help="final time (default: 20 multi-index; past the predicted escape single-index; 200 committee)")
    p.add_argument("--escape-level", type=_level, default=None,
                   help="multi-index: record when max_j |u_j| first reaches this level in (0, 1)")
    p.add_argument("--out", default=None, help="save the trajectory (.npz)")
    p.add_argument("--plot", default=None, help="save a PNG of u(t)")
    _add_common(p)
    p.set_defaults(func=cmd_predict)

    for name, helptext in (("simulate", "finite-d simulation (gradient flow, online SGD, multi-pass GD) in NumPy"),
                           ("compare", "ODE prediction vs finite-d simulation from the same start, with a plot and a "
                                       "statistical verdict (ODE within z*SE + c/sqrt(d) of the simulated mean at "
                                       "every recorded time and overlap); exits 0 also when the verdict is DISAGREE "
                                       "(see verdict.agree in --json)")):
        p = sub.add_parser(name, help=helptext)
        _add_problem_args(p)
        _add_model_args(p)
        g = p.add_argument_group("simulation")
        g.add_argument("--d", type=_pos_int, default=None, help="dimension (default 500; a covariance FILE sets it)")
        g.add_argument("--algorithm", choices=["sgd", "gd", "gf"], default="sgd",
                       help="online SGD, multi-pass GD on --n-samples, or d-dim gradient flow (default sgd)")
        g.add_argument("--eta", type=_pos_float, default=None, help="step size (overrides --delta)")
        g.add_argument("--delta", type=_pos_float, default=None,
                       help="step size in high-d units, eta = delta/d (default 0.5 when --eta is not given)")
        g.add_argument("--batch", type=_pos_int, default=32, help="minibatch size (default 32)")
        g.add_argument("--n-samples", type=_pos_int, default=None, help="dataset size for --algorithm gd")
        g.add_argument("--replicas", type=_pos_int, default=8, help="independent replicas (default 8)")
        g.add_argument("--init", default="0.3", help="'uniform' (Haar on the sphere) or a warm-start scale m0: "
                                                     "u0 ~ N(0, m0^2 G) (default 0.3)")
        g.add_argument("--t-end", type=_pos_float, default=5.0, help="final time t = eta * steps (default 5)")
        g.add_argument("--quiet", action="store_true", help="no progress output (by default a bar on a terminal, "
                                                            "a line every 10 s otherwise, for runs over 5 s)")
        g.add_argument("--max-steps", type=_pos_int, default=DEFAULT_MAX_STEPS,
                       help=f"refuse a run needing more SGD/GD steps than this (default {DEFAULT_MAX_STEPS:.0e}, "
                            "about a day at the fastest measured rate)")
        g.add_argument("--engine", choices=["full", "exact"], default="full",
                       help="full: materialise x in d dimensions; exact: draw only its projections from their "
                            "exact joint law (cost independent of d; single-index and committee)")
        if name == "simulate":
            g.add_argument("--out", default=None, help="save the trajectory (.npz)")
            g.add_argument("--checkpoint", default=None,
                           help="checkpoint file (.npz): saved as the run goes and on Ctrl-C/SIGTERM; rerunning the "
                                "same command resumes from it, bit-identically")
            g.add_argument("--checkpoint-every", type=_pos_float, default=None, metavar="SECONDS",
                           help="seconds between checkpoint writes (default 5, stretched if a write is slow)")
            p.set_defaults(func=cmd_simulate)
        else:
            g.add_argument("--plot", default="popdyn_compare.png", help="PNG path (default popdyn_compare.png; "
                                                                       "'' for none)")
            p.set_defaults(func=cmd_compare)
        _add_common(p)

    p = sub.add_parser("verify", help="run the papers' claims as numerical checks (exit 0 only if all pass)")
    p.add_argument("papers", nargs="*", help="arXiv ids (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the papers and their claims")
    p.add_argument("--quick", action="store_true", help="small sizes: each paper in about two minutes on 2 cores")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    _add_common(p)
    p.set_defaults(func=cmd_verify)

    for name, register in _EXTRA_COMMANDS:
        register(sub, name)
    return parser


#: (name, register(subparsers, name)) hooks for the model commands; filled below.
_EXTRA_COMMANDS: list = []


def _given_flags(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The ``dest`` of every option the user typed (abbreviations are refused by the parser)."""
    actions = parser._option_string_actions
    given = set()
    for tok in argv:
        if tok.startswith("-"):
            action = actions.get(tok.split("=", 1)[0])
            if action is not None:
                given.add(action.dest)
    return given


#: Options that only some models use (``dest`` -> models).  An option outside its models is
#: a usage error, never silently ignored.
MODEL_OPTIONS = {
    "k": {"multi-index"}, "gram": {"multi-index"}, "beta": {"multi-index"}, "degree": {"multi-index"},
    "neurons": {"multi-index"}, "u0": {"multi-index"}, "escape_level": {"multi-index"},
    "loss": {"single-index"}, "reuse": {"single-index"}, "interpolation": {"single-index"},
    "eta_tilde": {"single-index"}, "a_star": {"single-index", "spiked"}, "m_target": {"single-index", "spiked"},
    "K": {"committee"}, "M": {"committee"}, "train_second_layer": {"committee"}, "noise": {"committee"},
    "conventions": {"committee"},
    "covariance": {"spiked"}, "direction": {"spiked"}, "flow": {"spiked"}, "n_unlabeled": {"spiked"},
}
#: ``popdyn predict`` integrates gradient flows for these models: a step size means nothing there.
_PREDICT_STEP_MODELS = {"single-index", "committee"}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_applicable(args, given: set[str]) -> None:
    """Refuse options that the chosen command, model or algorithm does not use."""
    model = getattr(args, "model", None)
    if model is not None:
        for dest in sorted(given):
            models = MODEL_OPTIONS.get(dest)
            if models is not None and model not in models:
                raise ValueError(f"`{_flag(dest)}` applies to --model {' | '.join(sorted(models))} only, not to "
                                 f"--model {model}.")
    gram_kind = getattr(args, "gram", None)
    if "beta" in given and gram_kind != "equiangular":
        raise ValueError(f"`--beta` applies with `--gram equiangular` only, got --gram {gram_kind}.")
    if args.command == "predict":
        step = [d for d in ("eta", "delta", "batch") if d in given]
        if step and model not in _PREDICT_STEP_MODELS:
            raise ValueError(f"`{_flag(step[0])}` does not apply to `predict --model {model}`: it integrates the "
                             f"gradient flow (step sizes matter for --model single-index | committee).")
        if "u0" in given:
            clash = [d for d in ("init",) + (("d",) if gram_kind != "random" else ()) if d in given]
            if clash:
                raise ValueError(f"`{_flag(clash[0])}` is used to draw the initial overlaps; it does not apply "
                                 "with `--u0`, which gives them.")
    algorithm = getattr(args, "algorithm", None)
    if algorithm is not None:
        if "n_samples" in given and algorithm != "gd":
            raise ValueError(f"`--n-samples` (dataset size) applies with `--algorithm gd` only, got --algorithm "
                             f"{algorithm}.")
        if algorithm == "gf":
            step = [d for d in ("eta", "delta", "batch", "eta_tilde") if d in given]
            if step:
                raise ValueError(f"`{_flag(step[0])}` does not apply to `--algorithm gf` (gradient flow has no "
                                 "step or minibatch).")
    if "n_unlabeled" in given and getattr(args, "flow", None) != "preconditioned":
        raise ValueError(f"`--n-unlabeled` applies with `--flow preconditioned` only (n_unlabeled samples estimate "
                         f"its Sigma), got --flow {args.flow}.")


def _check_outputs(args) -> None:
    """Check every output path before the run starts (a failed write after an hour loses the hour)."""
    for dest, suffixes in (("out", (".npz",)), ("plot", (".png",)), ("checkpoint", (".npz",))):
        path = getattr(args, dest, None)
        if path is None or (dest == "plot" and path == ""):
            continue
        _check_output_path(_flag(dest), path, suffixes)


def _check_output_path(flag: str, path: str, suffixes) -> None:
    import os
    import tempfile
    from pathlib import Path

    if path == "":
        raise ValueError(f"`{flag}` must be a file path, got an empty string.")
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"`{flag}` must end in {' or '.join(suffixes)} (the format popdyn writes), got {path!r}.")
    if p.is_dir():
        raise ValueError(f"`{flag}` {path!r} is a directory; give a file path.")
    parent = p.parent
    while not parent.exists():  # atomic writes create missing parent directories
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"`{flag}` {path!r}: {str(parent)!r} is a file, not a directory.")
    try:  # the only portable test: really create a file there (root passes os.access on /proc)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        reason = (exc.strerror or str(exc)).rstrip(".")
        raise ValueError(f"`{flag}` {path!r} cannot be written: creating a file in {str(parent)!r} failed "
                         f"({reason}).") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"`{flag}` {path!r} exists and is not writable.")


def _install_warning_format() -> None:
    """Warnings as one line on stderr (``popdyn: warning: ...``), without source lines."""
    import warnings

    warnings.formatwarning = lambda message, category, *a, **k: (
        f"popdyn: warning: {_one_line(message)} ({category.__name__})\n")


def main(argv=None) -> int:
    """Run the ``popdyn`` command line; return the exit code (0 ok, 1 numerical failure, 2 usage error).

    Every failure becomes one line on stderr: usage errors (bad or inapplicable options,
    impossible output paths, sizes beyond the machine's memory or the step budget) exit 2,
    numerical failures exit 1 with the time or step where they happened, an interrupt exits
    130 (after saving a checkpoint when one was requested).  ``--debug`` re-raises instead,
    showing the traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv[: argv.index("--") if "--" in argv else len(argv)]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cite:
        from .citations import COMMAND_PAPERS, bibtex

        sys.stdout.write(bibtex(COMMAND_PAPERS.get(args.command) if args.command else None))
        return EXIT_OK
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _install_warning_format()
    from .errors import NumericalError

    try:
        args.given = _given_flags(parser.commands[args.command], argv)
        _check_applicable(args, args.given)
        _check_outputs(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        print(f"popdyn: interrupted: {_one_line(exc)}" if str(exc) else "popdyn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `popdyn ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # the one error boundary: no traceback reaches the user without --debug
        if debug:
            raise
        code, text = _classify(exc)
        print(f"popdyn: {text}", file=sys.stderr)
        return code


def _classify(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line message for an exception that reached the command line."""
    from .errors import NumericalError

    msg = _one_line(exc)
    if isinstance(exc, NumericalError):
        return EXIT_NUMERICAL, f"numerical failure: {msg}"
    if isinstance(exc, (ValueError, TypeError)):
        return EXIT_USAGE, f"error: {msg}"
    if isinstance(exc, MemoryError):
        return EXIT_USAGE, ("error: not enough memory for this run; lower the sizes (--d, --replicas, --batch, "
                            "--n-samples, --neurons, --K/--M, --degree).")
    if isinstance(exc, OverflowError):
        return EXIT_USAGE, f"error: a value is too large to compute with ({msg}); give smaller numbers."
    if isinstance(exc, OSError):
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return EXIT_USAGE, f"error: cannot access{where}: {(exc.strerror or msg).rstrip('.')}."
    if isinstance(exc, (FloatingPointError, ArithmeticError, RecursionError)):
        return EXIT_NUMERICAL, f"numerical failure: {type(exc).__name__}: {msg}"
    return EXIT_NUMERICAL, (f"internal error: {type(exc).__name__}: {msg} (please report it; rerun with --debug "
                            "for the traceback)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
