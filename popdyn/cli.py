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
import sys

from . import __version__

EXIT_OK, EXIT_NUMERICAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message):  # pragma: no cover - exercised through subprocess tests
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"popdyn: error: {message}\n")


def _dump(obj) -> None:
    from ._io import _json_default

    json.dump(obj, sys.stdout, indent=2, default=_json_default)
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
    print(f"basis       h_k = He_k/sqrt(k!), c_k = E[f(z) h_k(z)]")
    print(f"{'k':>3}  {'c_k':>22}")
    for k, c in enumerate(series.coefficients):
        print(f"{k:>3}  {c:>22.15g}")
    print(f"E[f^2]                 {act.second_moment:.15g}")
    print(f"norm (truncated)       {series.norm():.15g}")
    print(f"tail mass (k > {args.degree:<3})    {series.tail_mass:.3g}")
    print(f"information exponent   {_fmt(summ['information_exponent'])}")
    print(f"generative exponent    {_fmt(summ['generative_exponent'])}")
    if summ.get("witness"):
        print(f"  witness              {summ['witness']}  (correlation {_fmt(summ.get('witness_correlation'), 8)})")
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


# --------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="popdyn",
        description="Population dynamics of feature learning: Hermite closed forms, overlap ODEs, finite-d SGD.",
        epilog="Exit codes: 0 ok, 1 numerical failure, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"popdyn {__version__}")
    parser.add_argument("--cite", action="store_true",
                        help="print the BibTeX of popdyn and of the papers behind the command, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("hermite", help="Hermite coefficients, norm, tail mass and exponents of an activation")
    p.add_argument("spec", help="activation spec: relu, tanh, he3, hermite:0,0,1, poly:z**3-3*z, ... (see `popdyn activations`)")
    p.add_argument("--degree", type=_nonneg_int, default=10, help="highest degree (default 10)")
    _add_common(p)
    p.set_defaults(func=cmd_hermite)

    p = sub.add_parser("activations", help="list the activation registry")
    _add_common(p)
    p.set_defaults(func=cmd_activations)

    for name, register in _EXTRA_COMMANDS:
        register(sub, name)
    return parser


#: (name, register(subparsers, name)) hooks for the model commands; filled below.
_EXTRA_COMMANDS: list = []


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cite:
        from .citations import COMMAND_PAPERS, bibtex

        sys.stdout.write(bibtex(COMMAND_PAPERS.get(args.command) if args.command else None))
        return EXIT_OK
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from .errors import NumericalError

    try:
        return int(args.func(args) or 0)
    except NumericalError as exc:
        print(f"popdyn: numerical failure: {exc}", file=sys.stderr)
        return EXIT_NUMERICAL
    except (ValueError, TypeError) as exc:
        print(f"popdyn: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("popdyn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
