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

from ._version import __version__
from ._budget import DEFAULT_MAX_STEPS

EXIT_OK, EXIT_NUMERICAL, EXIT_USAGE = 0, 1, 2
#: ``predict --max-ode-steps`` default: the ODEs of the README examples take 10^2 - 3*10^3
#: adaptive steps to their horizons (the default model to t = 1e12: 2216 steps, the stiff part in
#: Radau); 10^5 is 30x that, and a solve that needs more is reported with how far it got
#: instead of running on (with progress lines) for an hour.
DEFAULT_MAX_ODE_STEPS = 10**5


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


def _dump(obj, args=None) -> None:
    """One JSON object on stdout; for the model verbs it embeds the problem spec and versions."""
    from ._io import _json_default, versions

    if args is not None and getattr(args, "command", None) in MODEL_VERBS and isinstance(obj, dict):
        obj = {**obj, "spec": _spec(args), "versions": versions()}

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


def cmd_models(args) -> int:
    """``popdyn models``: the registered model families, their papers and options."""
    from .model import models

    rows = []
    for name, m in sorted(models().items()):
        rows.append({"name": name, "description": m.description, "papers": list(m.papers), "compare": m.compare,
                     "options": [{"flag": o.flag, "type": o.kind, "default": o.default, "verbs": list(o.verbs),
                                  "help": o.help} for o in m.options]})
    if args.json:
        _dump({"models": rows})
        return EXIT_OK
    for r in rows:
        papers = f" [{', '.join(r['papers'])}]" if r["papers"] else ""
        print(f"{r['name']}{papers}: {r['description']}")
        print("    options: " + " ".join(o["flag"] for o in r["options"]))
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


def _model_command(command):
    """The ``func`` of a command a model declares (:class:`popdyn.model.Command`)."""
    def run(args) -> int:
        report = command.run(args)
        if args.json:
            _dump(report.out)
            return EXIT_OK
        for line in report.lines:
            print(line)
        return EXIT_OK

    return run


def _prepare(args, verb: str):
    """The chosen model, its problem built from the options, and the options completed."""
    from .model import DEFAULT_D, get_model

    model = get_model(args.model)
    if model.validate is not None:
        model.validate(args, args.given)
    if getattr(args, "d", None) is None:
        args.d = DEFAULT_D
    return model, model.build(args)


def _eta_for(model, args):
    from .model import step_size

    return None if getattr(args, "algorithm", None) == "gf" else step_size(model, args)


def cmd_predict(args) -> int:
    model, problem = _prepare(args, "predict")
    pred = model.predict(problem, args)
    out = pred.out
    if args.out:
        pred.trajectory.save(args.out)
        out["saved"] = args.out
    if args.plot:
        from .plot import plot_trajectory

        plot_trajectory(pred.trajectory, pred.plot_name, args.plot)
        out["plot"] = args.plot
    if args.json:
        _dump(out, args)
        return EXIT_OK
    for line in pred.lines:
        print(line)
    for key in ("saved", "plot"):
        if key in out:
            print(f"  {key}: {out[key]}")
    return EXIT_OK


def cmd_simulate(args) -> int:
    import numpy as np

    from .model import parse_init

    model, problem = _prepare(args, "simulate")
    run = {"checkpoint": args.checkpoint, "checkpoint_every": args.checkpoint_every,
           "progress": None if not args.quiet else False, "max_steps": args.max_steps}
    if model.simulate is not None:
        traj = model.simulate(problem, args, **run)
    else:
        from .simulation import simulate

        traj = simulate(problem, d=args.d, algorithm=args.algorithm, eta=_eta_for(model, args), t_end=args.t_end,
                        batch=None if args.algorithm == "gf" else args.batch, n_samples=args.n_samples,
                        replicas=args.replicas, init=parse_init(args.init), rng=args.seed, engine=args.engine, **run)
    out = traj.summary()
    if args.out:
        traj.save(args.out)
        out["saved"] = args.out
    if args.json:
        _dump(out, args)
        return EXIT_OK
    print(f"{args.model}: {traj.message} d = {args.d}, {traj.n_replicas} replicas, engine {args.engine}, "
          f"t = {traj.t[-1]:.6g} ({traj.time_unit})")
    for name, val in out["final_mean"].items():
        if np.asarray(val).size > 64:  # a d-dimensional weight (kept in --json and --out)
            continue
        print(f"  mean {name} = {np.round(np.asarray(val), 5).tolist()}")
    if "saved" in out:
        print(f"  saved: {out['saved']}")
    return EXIT_OK


def cmd_compare(args) -> int:
    """``popdyn compare``: ODE vs simulation, with the statistical verdict of :mod:`popdyn.comparison`.

    Exit code 0 for every completed comparison, whether the verdict is "agree" or
    "DISAGREE": a disagreement is a measured result (the printed line and the JSON
    ``verdict.agree`` carry it), not a failure of the computation.  Scripts that gate on
    it read ``verdict.agree`` from ``--json``.  Exit 1 stays reserved for numerical
    failures (non-finite weights, ODE blow-up), exit 2 for usage errors.
    """
    import numpy as np

    from .comparison import compare

    from .model import get_model, models, parse_init

    if not get_model(args.model).compare:
        able = [name for name, m in sorted(models().items()) if m.compare]
        raise ValueError(f"`popdyn compare` does not take --model {args.model} (no comparison declared; use `popdyn "
                         f"predict` and `popdyn simulate`); choices here: {', '.join(able)}.")
    model, problem = _prepare(args, "compare")
    res = compare(problem, d=args.d, t_end=args.t_end, algorithm=args.algorithm, eta=_eta_for(model, args),
                  batch=None if args.algorithm == "gf" else args.batch,
                  n_samples=args.n_samples, replicas=args.replicas, init=parse_init(args.init), rng=args.seed,
                  progress=None if not args.quiet else False, engine=args.engine)
    out = res.as_dict()
    if args.plot:
        from .plot import plot_comparison

        plot_comparison(res, args.plot)
        out["plot"] = args.plot
    if args.json:
        _dump(out, args)
        return EXIT_OK
    m = res.meta
    print(f"ODE vs {m['algorithm']} in d = {m['d']} (eta = {m['eta']}, batch = {m['batch']}, "
          f"{m['replicas']} replicas from the same start), t in [0, {out['t_final']:.6g}] ({out['time_unit']})")
    what = " - ".join(f"{n}_ode - mean {n}_sim" for n in res.names)
    print(f"  max |{what}| over ({', '.join(res.names)}) = {res.max_abs_deviation:.4g}   "
          f"(largest standard error of the mean: {res.max_standard_error:.4g})")
    for n in [n for n in (res.plot_names or res.names) if n != res.unit_overlap]:
        ode_n, sim = res.ode.mean(n), res.simulation
        se = sim.std(n)[-1] / np.sqrt(sim.n_replicas)
        print(f"  {n}: start {_short(np.round(ode_n[0], 5).tolist())}, end ODE {_short(np.round(ode_n[-1], 5).tolist())}, "
              f"simulation mean {_short(np.round(sim.mean(n)[-1], 5).tolist())} (SE {_short(np.round(se, 5).tolist())})")
    unit = "unit"
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
    from .verification import list_papers, verify

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


def cmd_sweep(args) -> int:
    """``popdyn sweep CONFIG``: one verb over a grid of points into a resumable store
    (:mod:`popdyn.sweeps`); exit 1 when some point failed (each listed with its error)."""
    from .sweeps import run_command

    out, lines, code = run_command(args)
    if args.json:
        _dump(out)
    else:
        print("\n".join(lines))
    return code


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
        from .citations import bibtex

        sys.stdout.write(bibtex(_command_papers(self.command)))
        parser.exit(EXIT_OK)


def _command_papers(command: str | None) -> list | None:
    """arXiv ids behind a command for ``--cite`` (all entries when ``command`` is None).

    The model verbs cite the papers of every registered model that has the verb, ``verify`` the
    papers with claims (both from the registries, so a plugged-in model or paper is cited with no
    edit here); the other commands have fixed papers (:data:`popdyn.citations.COMMAND_PAPERS`).
    """
    if command is None:
        return None
    if command in ("predict", "simulate", "compare"):
        from .model import models

        ids = [pid for m in models().values() if command != "compare" or m.compare for pid in m.papers]
        return list(dict.fromkeys(ids))
    if command == "verify":
        from .verification import list_papers

        return list(list_papers())
    from .citations import COMMAND_PAPERS
    from .model import models

    for m in models().values():
        for c in m.commands:
            if c.name == command:
                return list(dict.fromkeys([*c.papers, *COMMAND_PAPERS.get(command, [])]))
    return COMMAND_PAPERS.get(command, [])


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


def _pos_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}") from None
    if not (v > 0) or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return v


def _option_type(option):
    """argparse ``type`` from a model :class:`~popdyn.model.Option` (its own checks and message)."""
    def convert(text):
        try:
            return option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = option.kind
    return convert


def _add_options(group, options) -> None:
    for o in options:
        if o.kind == "bool":
            group.add_argument(o.flag, dest=o.name, action="store_true", help=o.help)
        else:
            metavar = "{" + ",".join(map(str, o.choices)) + "}" if o.choices else None
            group.add_argument(o.flag, dest=o.name, type=_option_type(o), default=o.default, help=o.help,
                               metavar=metavar)


def _selected_model(argv) -> str:
    """The ``--model`` value in ``argv`` (the default model when absent or unknown)."""
    from .model import default_model, model_names

    name = default_model()
    for i, tok in enumerate(argv):
        if tok == "--model" and i + 1 < len(argv):
            name = argv[i + 1]
        elif tok.startswith("--model="):
            name = tok.split("=", 1)[1]
    return name if name in model_names() else default_model()


def _add_model_verb(sub, verb: str, helptext: str, model) -> None:
    """``predict`` / ``simulate`` / ``compare``: the verb's own options plus ``model``'s."""
    from .model import default_model, model_names, models

    p = sub.add_parser(verb, help=helptext, description=helptext)
    g = p.add_argument_group("model")
    listing = "; ".join(f"{n}: {m.description}" for n, m in sorted(models().items()))
    g.add_argument("--model", choices=sorted(model_names()), default=default_model(),
                   help=f"the model family (default {default_model()}); `popdyn {verb} --model NAME --help` lists its "
                        f"options. {listing}")
    g.add_argument("--problem", metavar="FILE", default=None,
                   help="JSON or TOML with {model, options} (or the 'spec' of a --json result): its options act as "
                        "flags typed before the others")
    _add_options(p.add_argument_group(f"options of --model {model.name}"), model.options_for(verb))
    g = p.add_argument_group("run")
    uses = model.uses_for(verb)

    def add(flag, **kwargs):  # a run option, only where the model reads it (else its default)
        dest = flag[2:].replace("-", "_")
        if dest in uses:
            g.add_argument(flag, **kwargs)
        else:  # not read by this model: no default output file is written on its behalf
            p.set_defaults(**{dest: None if dest == "plot" else kwargs.get("default")})

    add("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    add("--d", type=_pos_int, default=None, help="dimension (default 500; a model may take it from its own input "
                                                   "file)")
    add("--eta", type=_pos_float, default=None, help="step size (overrides --delta)")
    add("--delta", type=_pos_float, default=None,
                   help="step size in high-d units, eta = delta/d (default 0.5 when --eta is not given)")
    g.add_argument("--quiet", action="store_true", help="no progress output (by default a bar on a terminal, a line "
                                                        "every 10 s otherwise, for runs over 5 s)")
    if verb == "predict":
        add("--batch", type=_pos_int, default=1, help="minibatch size (default 1)")
        add("--init", default="uniform", help="'uniform' (Haar on the sphere) or a warm-start scale m0 "
                                              "(the model's initial overlap or weight scale)")
        add("--t-end", type=_pos_float, default=None,
                       help="final time (default: the model's; past the predicted escape where there is one)")
        add("--out", default=None, help="save the trajectory (.npz)")
        add("--plot", default=None, help="save a PNG of the main overlap against time")
        g.add_argument("--max-ode-steps", type=_pos_int, default=DEFAULT_MAX_ODE_STEPS,
                       help=f"refuse to go on past this many ODE solver steps (default {DEFAULT_MAX_ODE_STEPS:.0e})")
        p.set_defaults(func=cmd_predict)
    else:
        add("--algorithm", choices=["sgd", "gd", "gf"], default="sgd",
                       help="online SGD, multi-pass GD on --n-samples, or d-dim gradient flow (default sgd)")
        add("--batch", type=_pos_int, default=32, help="minibatch size (default 32)")
        add("--n-samples", type=_pos_int, default=None, help="dataset size for --algorithm gd")
        add("--replicas", type=_pos_int, default=8, help="independent replicas (default 8)")
        add("--init", default="0.3", help="'uniform' (Haar on the sphere) or a warm-start scale m0: "
                                                     "u0 ~ N(0, m0^2 G) (default 0.3)")
        add("--t-end", type=_pos_float, default=5.0, help="final time t = eta * steps (default 5)")
        g.add_argument("--max-steps", type=_pos_int, default=DEFAULT_MAX_STEPS,
                       help=f"refuse a run needing more SGD/GD steps than this (default {DEFAULT_MAX_STEPS:.0e}, "
                            "about a day at the fastest measured rate)")
        add("--engine", choices=["full", "exact"], default="full",
                       help="full: materialise x in d dimensions; exact: draw only its projections from their "
                            "exact joint law (cost independent of d; for the models that have one). Default full, "
                            "unless the model's compare picks exact where it applies (its --help says)")
        if verb == "simulate":
            add("--out", default=None, help="save the trajectory (.npz)")
            add("--checkpoint", default=None,
                           help="checkpoint file (.npz): saved as the run goes and on Ctrl-C/SIGTERM; rerunning the "
                                "same command resumes from it, bit-identically")
            add("--checkpoint-every", type=_pos_float, default=None, metavar="SECONDS",
                           help="seconds between checkpoint writes (default 5, stretched if a write is slow)")
            p.set_defaults(func=cmd_simulate)
        else:
            add("--plot", default="popdyn_compare.png", help="PNG path (default popdyn_compare.png; "
                                                                       "'' for none)")
            p.set_defaults(func=cmd_compare)
    _add_common(p)


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; ``predict``/``simulate``/``compare`` carry the options of the model chosen in ``argv``."""
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

    p = sub.add_parser("models", help="list the model families (popdyn predict|simulate|compare --model NAME)")
    _add_common(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("activations", help="list the activation registry")
    _add_common(p)
    p.set_defaults(func=cmd_activations)

    from .model import models

    for m in sorted(models().values(), key=lambda m: m.name):
        for command in m.commands:
            p = sub.add_parser(command.name, help=command.help, description=command.help)
            for o in command.options:
                if o.kind == "bool":
                    p.add_argument(o.flag, dest=o.name, action="store_true", help=o.help)
                else:
                    p.add_argument(o.flag, dest=o.name, type=_option_type(o), default=o.default, help=o.help,
                                   required=o.required,
                                   metavar="{" + ",".join(map(str, o.choices)) + "}" if o.choices else None)
            _add_common(p)
            p.set_defaults(func=_model_command(command))

    from .model import get_model

    model = get_model(_selected_model(argv or []))
    _add_model_verb(sub, "predict", "integrate a model's overlap ODE and report its predictions (escape times, "
                                    "sample counts, ...)", model)
    _add_model_verb(sub, "simulate", "finite-d simulation (gradient flow, online SGD, multi-pass GD) in NumPy", model)
    _add_model_verb(sub, "compare", "ODE prediction vs finite-d simulation from the same start, with a plot and a "
                                    "statistical verdict (ODE within z*SE + c/sqrt(d) of the simulated mean at "
                                    "every recorded time and overlap); exits 0 also when the verdict is DISAGREE "
                                    "(see verdict.agree in --json)", model)

    p = sub.add_parser("verify", help="run the papers' claims as numerical checks (exit 0 only if all pass)")
    p.add_argument("papers", nargs="*", help="arXiv ids (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the papers and their claims")
    p.add_argument("--quick", action="store_true", help="small sizes: each paper in about two minutes on 2 cores")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    _add_common(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("sweep", help="run a verb over a grid of points from a TOML/JSON config: a resumable store, "
                                     "local processes or a dask cluster, plots (exit 1 if a point failed)")
    p.add_argument("config", help="sweep configuration (.toml or .json; see README 'Sweeps')")
    p.add_argument("--out", dest="store", metavar="DIR", default=None,
                   help="store directory (default NAME.sweep in the current directory for NAME.toml)")
    p.add_argument("--executor", choices=["pool", "serial"], default="pool",
                   help="pool: local processes (default); serial: one point at a time, in this process")
    p.add_argument("--workers", type=_pos_int, default=None, help="processes of the pool (default: all cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None, help="run on an existing dask.distributed "
                                                                       "cluster (needs pip install popdyn[dask])")
    p.add_argument("--dask-local", type=_pos_int, metavar="N", default=None,
                   help="start a dask LocalCluster with N worker processes")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="skip the points already in the store (the default)")
    g.add_argument("--force", action="store_true", help="recompute every point")
    p.add_argument("--retry-failed", action="store_true", help="compute again the points recorded as failed")
    p.add_argument("--plot", metavar="PNG", default=None, help="draw the config's [plot] (curve or phase diagram)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=cmd_sweep)

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


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_applicable(args, given: set[str]) -> None:
    """Refuse options that the chosen algorithm does not use (options of other models and run
    options the model does not read never reach the parser: :func:`_foreign_option`)."""
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


def _foreign_option(argv, verb: str, model_name: str):
    """A usage error for an option of another model (one that only other models declare), or None."""
    from .model import models

    if verb not in ("predict", "simulate", "compare"):
        return None
    from .model import COMMON_OPTIONS, get_model

    owners: dict[str, list[str]] = {}
    for name, model in models().items():
        for o in model.options_for(verb):
            owners.setdefault(o.flag, []).append(name)
    if verb == "compare" and not get_model(model_name).compare:
        able = [name for name, m in sorted(models().items()) if m.compare]
        return (f"`popdyn compare` does not take --model {model_name} (no comparison declared; use `popdyn "
                f"predict` and `popdyn simulate`); choices here: {', '.join(able)}.")
    uses = get_model(model_name).uses_for(verb)
    run_flags = {_flag(dest): dest for dest in COMMON_OPTIONS}
    for tok in argv:
        flag = tok.split("=", 1)[0]
        if flag in owners and model_name not in owners[flag]:
            return (f"`{flag}` applies to --model {' | '.join(sorted(owners[flag]))} only, not to --model "
                    f"{model_name}.")
        if flag in run_flags and run_flags[flag] not in uses:
            return (f"`{flag}` does not apply to `popdyn {verb} --model {model_name}` (its run options: "
                    f"{', '.join(_flag(u) for u in sorted(uses)) or 'none'}).")
    return None


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


#: Verbs that build a model's problem and so take ``--problem FILE``.
MODEL_VERBS = ("predict", "simulate", "compare")
#: Largest problem file read (bytes): a spec is a few hundred bytes; this keeps a wrong
#: path (a trajectory, a data set) from being read into memory.
MAX_PROBLEM_FILE = 10**6


def _expand_problem_file(argv: list) -> tuple[list, list]:
    """``--problem FILE`` (JSON or TOML): its options become flags placed right after the
    verb, so flags typed on the command line override them.

    The file holds ``{"model": NAME, "options": {name: value, ...}}`` (the ``spec`` that
    every ``--json`` result of these verbs embeds, so a result file reproduces its run) or
    a flat ``{name: value}`` table.  Values are data: each goes through the flag's own
    parser and checks, exactly as if typed.  Returns the expanded arguments and the ones the
    user typed (only those count as "given" for the checks of conflicting options).
    """
    if "--problem" not in argv and not any(a.startswith("--problem=") for a in argv):
        return argv, argv
    argv = list(argv)
    i = next(i for i, a in enumerate(argv) if a == "--problem" or a.startswith("--problem="))
    if argv[i] == "--problem":
        if i + 1 >= len(argv):
            raise ValueError("`--problem` needs a FILE (.json or .toml).")
        path = argv.pop(i + 1)
    else:
        path = argv[i].split("=", 1)[1]
    argv.pop(i)
    verb_at = next((j for j, a in enumerate(argv) if a in MODEL_VERBS), None)
    if verb_at is None or verb_at > i:
        raise ValueError(f"`--problem` goes after one of the verbs {', '.join(MODEL_VERBS)}.")
    spec = _read_problem_file(path)
    tokens = []
    model = spec.get("model")
    if model is not None and not isinstance(model, str):
        raise ValueError(f"`--problem` {path!r}: `model` must be a name, got {type(model).__name__}.")
    if model is not None:
        tokens += ["--model", str(model)]
    for key, value in spec.get("options", {}).items():
        if not (isinstance(key, str) and key[:1].isalpha() and key.replace("-", "_").isidentifier()):
            raise ValueError(f"`--problem` {path!r}: option names are words such as t_end or seed, got "
                             f"{str(key)[:40]!r}.")
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            tokens.append(flag)
        elif isinstance(value, (int, float, str)):
            tokens += [flag, str(value)]
        else:
            raise ValueError(f"`--problem` {path!r}: option {key!r} must be a number, a string or a boolean, "
                             f"got {type(value).__name__}.")
    return argv[: verb_at + 1] + tokens + argv[verb_at + 1:], argv


def _read_problem_file(path: str) -> dict:
    import os

    try:
        size = os.path.getsize(path)
        if size > MAX_PROBLEM_FILE:
            raise ValueError(f"`--problem` {path!r} is {size} bytes; a problem file is at most {MAX_PROBLEM_FILE}.")
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ValueError(f"`--problem` {path!r} cannot be read: {(exc.strerror or str(exc)).rstrip('.')}.") from None
    try:
        if path.lower().endswith(".toml"):
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"`--problem` {path!r} is not valid {'TOML' if path.lower().endswith('.toml') else 'JSON'}: "
                         f"{_one_line(exc)[:120]}.") from None
    if not isinstance(data, dict):
        raise ValueError(f"`--problem` {path!r} must hold a table of options, got {type(data).__name__}.")
    if "spec" in data and isinstance(data["spec"], dict):  # a popdyn --json result
        data = data["spec"]
    if "options" in data:
        if not isinstance(data["options"], dict):
            raise ValueError(f"`--problem` {path!r}: `options` must be a table.")
        extra = set(data) - {"options", "model", "command"}
        if extra:
            raise ValueError(f"`--problem` {path!r}: unknown keys {sorted(extra)}; expected model, options.")
        return {"model": data.get("model"), "options": data["options"]}
    return {"model": data.get("model"), "options": {k: v for k, v in data.items() if k != "model"}}


def _spec(args) -> dict:
    """The complete problem spec of a model verb: enough to rerun it (``--problem``)."""
    from .model import get_model

    model = get_model(args.model)
    names = [o.name for o in model.options_for(args.command)] + sorted(model.uses_for(args.command))
    names += [n for n in ("max_steps", "max_ode_steps") if hasattr(args, n)]
    options = {n: getattr(args, n) for n in names if n not in ("out", "plot", "checkpoint") and hasattr(args, n)}
    return {"command": args.command, "model": model.name, "options": options}


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
    try:
        argv, typed = _expand_problem_file(argv)
    except ValueError as exc:
        if debug:
            raise
        print(f"popdyn: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(argv)
    verb = next((tok for tok in argv if tok in parser.commands), None)
    foreign = _foreign_option(argv, verb, _selected_model(argv)) if verb else None
    if foreign is not None:
        if debug:
            raise ValueError(foreign)
        print(f"popdyn: error: {foreign}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    if args.cite:
        from .citations import bibtex

        sys.stdout.write(bibtex(_command_papers(args.command)))
        return EXIT_OK
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _install_warning_format()
    try:
        args.given = _given_flags(parser.commands[args.command], typed)
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
    if isinstance(exc, Warning):  # a warning turned into an error by the warnings filter (-W error)
        return EXIT_NUMERICAL, f"warning raised as an error: {type(exc).__name__}: {msg}"
    if isinstance(exc, (FloatingPointError, ArithmeticError, RecursionError)):
        return EXIT_NUMERICAL, f"numerical failure: {type(exc).__name__}: {msg}"
    return EXIT_NUMERICAL, (f"internal error: {type(exc).__name__}: {msg} (please report it; rerun with --debug "
                            "for the traceback)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
