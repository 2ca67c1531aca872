"""Activation spec strings are parsed by a fixed grammar, never evaluated as code."""

import builtins
import contextlib
import sys
import sysconfig
import time
import types
from fractions import Fraction

import pytest
import sympy
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import popdyn.activations as acts
from popdyn import Activation, get_activation
from popdyn._expr import (
    MAX_BODY_LENGTH,
    MAX_EXPONENT,
    MAX_NESTING,
    MAX_POLY_DEGREE,
    MAX_TERMS,
    parse_polynomial,
)
from popdyn.hermite import exact_hermite_coefficients, z_symbol

#: Error messages are one line of at most this many characters (package standard).
MAX_MESSAGE = 200
#: A refused spec must be refused quickly: the limits are checked before any work.
FAST_SECONDS = 1.0
#: Exact coefficients compared after evaluation to 30 digits; 1e-20 leaves 10 digits
#: of margin for the cancellation inside a degree <= 4 Hermite transform.
EXACT_EVAL_TOL = 1e-20

Z = z_symbol()


# --------------------------------------------------------------------------------------
# guard: no string evaluation while a spec is processed
# --------------------------------------------------------------------------------------
class _Evaluated(BaseException):
    """Raised by the guards; a BaseException so no ``except Exception`` can swallow it."""


#: Top-level modules the spec path may import (lazily); anything else fails the test.
_ALLOWED_IMPORTS = {
    "sympy", "mpmath", "popdyn", "numpy", "scipy", "fractions", "math", "cmath", "re",
    "numbers", "decimal", "functools", "itertools", "collections", "operator", "threading",
    "typing", "warnings", "dataclasses", "contextlib", "inspect", "types", "keyword", "string",
    "gmpy2", "flint", "random", "copy", "enum", "abc", "weakref", "textwrap", "tokenize", "ast",
}


_LIBRARY_PATHS = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})


_WARM = []


def _warm_up():
    """Let sympy finish its lazy imports outside the guard.

    ``sympy.simplify`` imports ``sympy.physics.units`` on first use, whose module code
    sympifies its own constant strings ("yotta", ...); that is sympy's text, not ours.
    """
    if not _WARM:
        import sympy.physics.units  # noqa: F401

        for spec in ["poly:(z + 1)**3/7", "poly:tanh(1)*z**2 + sqrt(2)"]:
            fresh(spec).series(4)
        _WARM.append(True)


@contextlib.contextmanager
def no_string_evaluation(calls):
    """Fail on sympify/parse_expr/eval/exec or a non-whitelisted import; log to ``calls``."""
    _warm_up()
    import sympy.parsing.sympy_parser as sympy_parser

    core_sympify = sys.modules["sympy.core.sympify"]  # the module (sympy.core.sympify is the function)

    def forbid(name, real=None):
        def guard(*args, **kwargs):
            # Installed libraries may run their own generated code (the import system
            # executes module files; sympy.polys compiles monomial helpers).  User text
            # could only reach them through sympify/parse_expr, which are forbidden
            # outright; calls from popdyn, the tests or string-compiled code fail.
            caller = sys._getframe(1).f_code.co_filename
            if real is not None and (caller.startswith(_LIBRARY_PATHS) or caller.startswith("<frozen")):
                return real(*args, **kwargs)
            calls.append((name, args[:1]))
            raise _Evaluated(f"{name} called with {args[:1]!r}")
        return guard

    real_core = core_sympify.sympify
    real_import = builtins.__import__

    def core_guard(a, *args, **kwargs):  # sympy calls this internally on objects (strict)
        if isinstance(a, str):
            calls.append(("sympy.core.sympify.sympify(str)", (a,)))
            raise _Evaluated(f"sympify of a string {a!r}")
        return real_core(a, *args, **kwargs)

    def import_guard(name, globals=None, locals=None, fromlist=(), level=0):
        # Installed libraries and the import system import lazily whatever they need
        # (sympy loads submodules on first use); code compiled from a string (file
        # "<string>") may import nothing, and popdyn/test code only the allowed modules.
        caller = sys._getframe(1).f_code.co_filename
        dynamic = caller.startswith("<") and not caller.startswith("<frozen")
        library = caller.startswith(_LIBRARY_PATHS) or caller.startswith("<frozen")
        if level == 0 and (dynamic or (not library and name.split(".")[0] not in _ALLOWED_IMPORTS)):
            calls.append(("__import__", (name,)))
            raise _Evaluated(f"import of {name!r}")
        return real_import(name, globals, locals, fromlist, level)

    patches = [(sympy, "sympify", forbid("sympy.sympify")), (sympy, "parse_expr", forbid("sympy.parse_expr")),
               (sympy_parser, "parse_expr", forbid("parse_expr")), (core_sympify, "sympify", core_guard),
               (builtins, "eval", forbid("eval", builtins.eval)), (builtins, "exec", forbid("exec", builtins.exec)),
               (builtins, "__import__", import_guard)]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, new in patches:
            setattr(obj, attr, new)
        yield
    finally:
        for obj, attr, old in saved:
            setattr(obj, attr, old)


def fresh(spec):
    """get_activation without the spec cache (every call parses)."""
    acts._SPEC_CACHE.pop(spec.strip(), None)
    return get_activation(spec)


def test_guard_catches_string_evaluation():
    # the guard itself works, so the tests below can fail
    calls = []
    with pytest.raises(_Evaluated):
        with no_string_evaluation(calls):
            sympy.sympify("1 + 1")
    with pytest.raises(_Evaluated):
        with no_string_evaluation(calls):
            __import__("os")
    with pytest.raises(_Evaluated):
        with no_string_evaluation(calls):
            exec("1")
    with pytest.raises(_Evaluated):  # an import from code compiled from a string
        with no_string_evaluation(calls):
            types.FunctionType(compile("import math", "<string>", "exec"), {})()
    assert [c[0] for c in calls] == ["sympy.sympify", "__import__", "exec", "__import__"]
    assert sympy.sympify("1 + 1") == 2  # restored


def test_valid_poly_spec_makes_no_sympify_call():
    calls = []
    with no_string_evaluation(calls):
        a = fresh("poly:z**3-3*z")
        b = fresh("poly:(z + sqrt(2))**3 - tanh(1)*z")
    assert calls == []
    assert a.name == "poly:z**3-3*z" and a.exact_coefficients(3) == (0, 0, 0, sympy.sqrt(6))
    assert b.degree == 3


# --------------------------------------------------------------------------------------
# injection strings
# --------------------------------------------------------------------------------------
INJECTIONS = [
    ("__import__('os').system('touch {p}')", "'__import__'"),
    ("z.__class__", "'.'"),
    ("().__class__.__bases__[0].__subclasses__()", "'.'"),
    ("lambda: 0", "'lambda'"),
    ("exec('open(\"{p}\", \"w\")')", "'exec'"),
    ("eval('1')", "'eval'"),
    ("open('{p}', 'w')", "'open'"),
    ("Symbol('x')", "'Symbol'"),
    ("'z'", "\"'\""),
    ('"z"', "'\"'"),
    ("z\\x41", "'\\\\'"),
    ("ｚ**2", "'ｚ'"),                 # fullwidth z
    ("z**٢", "'٢'"),                  # Arabic-Indic digit two
    ("е*z", "'е'"),                   # Cyrillic ie
    ("z;__import__('os')", "';'"),
    ("z=1", "'='"),
    ("z@z", "'@'"),
    ("[z]", "'['"),
    ("z,1", "','"),
    ("_", "'_'"),
    ("globals()", "'globals'"),
    ("getattr(z, 'x')", "'getattr'"),
    ("Integer(2)**z", "'Integer'"),
    ("S('1')", "'S'"),
]


@pytest.mark.parametrize("body, token", INJECTIONS)
def test_injection_is_refused_naming_the_token(body, token, tmp_path):
    target = tmp_path / "PWNED"
    spec = "poly:" + body.format(p=target)
    calls = []
    with no_string_evaluation(calls):
        with pytest.raises(ValueError) as info:
            fresh(spec)
    msg = str(info.value)
    assert "`spec`" in msg and f"unexpected token {token}" in msg, msg
    assert "position" in msg and len(msg) < MAX_MESSAGE and "\n" not in msg
    assert calls == [] and not target.exists()


def test_pwned_payload(tmp_path):
    target = tmp_path / "PWNED"
    with pytest.raises(ValueError, match=r"`spec`.*unexpected token '__import__' at position 0"):
        fresh(f"poly:__import__('os').system('touch {target}')")
    assert not target.exists()


def test_hermite_exact_coefficients_parse_strings():
    # a string reaching the public hermite API goes through the same parser
    assert exact_hermite_coefficients("z**3") == (0, 3, 0, sympy.sqrt(6))
    with pytest.raises(ValueError, match=r"`expr`.*'__import__'"):
        exact_hermite_coefficients("__import__('os').getcwd()")


ALPHABET = list("abcdefghijklmnopqrstuvwxyzEIS_0123456789.()[]'\",*/+-=:;@\\^ ") + ["**", "exp", "sqrt", "z"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=25).map("".join))
def test_random_text_is_activation_or_value_error(body):
    calls = []
    with no_string_evaluation(calls):
        try:
            out = fresh("poly:" + body)
        except ValueError as exc:
            msg = str(exc)
            assert "`spec`" in msg and len(msg) < MAX_MESSAGE and "\n" not in msg, msg
        else:
            assert isinstance(out, Activation) and out.is_polynomial
    assert calls == []


# --------------------------------------------------------------------------------------
# parser correctness against an independent route (Fraction polynomial arithmetic)
# --------------------------------------------------------------------------------------
# Nodes: (text, precedence, power coefficients as Fractions lowest first, degree bound).
# Precedences follow Python: 1 + -, 2 * /, 3 unary, 4 **, 5 atoms.
NUMBERS = [("0", 0), ("1", 1), ("2", 2), ("3", 3), ("10", 10), ("0.5", Fraction(1, 2)),
           ("1e1", 10), ("25E-2", Fraction(1, 4)), (".5", Fraction(1, 2)), ("2.", 2)]
#: Exponent texts with their value: right-associative chains tell ** apart from a
#: left-associative reading ((2**1)**3 = 8, (2**2)**0 = 1, (3**2)**0 = 1).
EXPONENTS = [("0", 0), ("1", 1), ("2", 2), ("3", 3), ("2**1**3", 2), ("2**2**0", 2), ("3**2**0", 3)]


def _add(p, q):
    n = max(len(p), len(q))
    return [(p[i] if i < len(p) else 0) + (q[i] if i < len(q) else 0) for i in range(n)]


def _mul(p, q):
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def _wrap(node, need):
    text, prec = node[0], node[1]
    return text if prec >= need else f"({text})"


leaves = st.one_of(
    st.sampled_from(NUMBERS).map(lambda nv: (nv[0], 5, [Fraction(nv[1])], 0)),
    st.just(("z", 5, [Fraction(0), Fraction(1)], 1)),
)


def _extend(children):
    binary = st.tuples(st.sampled_from(["+", "-", "*"]), children, children)
    return st.one_of(
        binary.map(lambda t: _binary(*t)),
        children.map(lambda a: ("-" + _wrap(a, 3), 3, [-c for c in a[2]], a[3])),
        children.map(lambda a: ("+" + _wrap(a, 3), 3, a[2], a[3])),
        st.tuples(children, st.sampled_from([("2", 2), ("4", 4), ("0.5", Fraction(1, 2))])).map(
            lambda t: (f"{_wrap(t[0], 2)}/{t[1][0]}", 2, [c / Fraction(t[1][1]) for c in t[0][2]], t[0][3])),
        st.tuples(children, st.sampled_from(EXPONENTS)).map(lambda t: _power(*t)),
        children.map(lambda a: (f"( {a[0]} )", 5, a[2], a[3])),
    )


def _binary(op, a, b):
    if op == "+":
        return (f"{_wrap(a, 1)}+{_wrap(b, 1)}", 1, _add(a[2], b[2]), max(a[3], b[3]))
    if op == "-":
        return (f"{_wrap(a, 1)} - {_wrap(b, 2)}", 1, _add(a[2], [-c for c in b[2]]), max(a[3], b[3]))
    return (f"{_wrap(a, 2)}*{_wrap(b, 3)}", 2, _mul(a[2], b[2]), a[3] + b[3])


def _power(base, expo):
    text, n = expo
    coeffs = [Fraction(1)]
    for _ in range(n):
        coeffs = _mul(coeffs, base[2])
    return (f"{_wrap(base, 5)}**{text}", 4, coeffs, base[3] * n)


trees = st.recursive(leaves, _extend, max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_parser_matches_fraction_arithmetic(tree):
    text, _, want, bound = tree
    assume(bound <= 20)
    expr, rational = parse_polynomial(text)
    assert rational
    got = sympy.Poly(expr, Z).all_coeffs()[::-1] if expr.has(Z) else [expr]
    want = want + [Fraction(0)] * (len(got) - len(want))
    got = got + [0] * (len(want) - len(got))
    assert [sympy.Rational(c.numerator, c.denominator) for c in want] == list(got), text


@pytest.mark.parametrize("text, coeffs", [
    ("-z**2", [0, 0, -1]), ("2**3**2", [512]), ("z*-1", [0, -1]), ("-2**2", [-4]), ("(-2)**2", [4]),
    ("2**-1*z", [0, Fraction(1, 2)]), ("z^2", [0, 0, 1]), ("2/4*z", [0, Fraction(1, 2)]), ("1e-3", [Fraction(1, 1000)]),
    ("2.5E2*z", [0, 250]), ("z**2/z", [0, 1]), ("--z", [0, 1]), ("+z - -z", [0, 2]), ("4**0.5*z", [0, 2]),
    ("\tz *  z ", [0, 0, 1]),
])
def test_precedence_examples(text, coeffs):
    expr, _ = parse_polynomial(text)
    got = sympy.Poly(expr, Z).all_coeffs()[::-1] if expr.has(Z) else [expr]
    assert list(got) == [sympy.Rational(Fraction(c).numerator, Fraction(c).denominator) for c in coeffs]


def test_canonical_names_unchanged():
    for spec in ["poly:z**3-3*z", "poly:z**3 - 3*z", "poly:z**4-6*z**2+3", "he3", "hermite:0.1,0,1,0.5"]:
        assert get_activation(spec).name == spec


@pytest.mark.parametrize("body", ["(z + sqrt(2))**3", "tanh(1)*z**3 + pi*z - E", "(z + pi + sqrt(2))**4",
                                  "exp(1/2)*z**2/3 + erf(1)", "sin(1)*z + cos(1)*z**2 + log(3) + abs(-2)*z"])
def test_irrational_coefficients_match_simplify_route(body):
    # parsed specs with irrational constants use an expand-only Hermite transform
    expr, rational = parse_polynomial(body)
    assert not rational
    got = get_activation("poly:" + body).exact_coefficients(4)
    want = exact_hermite_coefficients(expr)
    want = tuple(want) + (0,) * (5 - len(want))
    for g, w in zip(got, want):
        assert abs(complex(sympy.N(g - w, 30))) <= EXACT_EVAL_TOL * max(1.0, abs(float(w)))


@pytest.mark.parametrize("body, fragment", [
    ("exp(z)", "not a polynomial"), ("tanh(z)*0", "not a polynomial"), ("z**0.5", "not a polynomial"),
    ("2**z", "not a polynomial"), ("1/z", "not a polynomial"), ("(z**2-1)/(z-1)", "not a polynomial"),
    ("z**-1", "not a polynomial"), ("1/0", "division by zero"), ("z/(z-z)", "division by zero"),
    ("0**-1", "division by zero"), ("1/(sin(1)**2 + cos(1)**2 - 1)", "zero to 30 digits"),
    ("sqrt(-1)*z", "not a real number"), ("log(0)", "undefined"), ("(z", "unclosed '('"),
    ("z)", "unbalanced ')'"), ("z +", "unexpected end"), ("exp", "needs parentheses"), ("1.2.3", "'1.2.'"),
    ("2z", "'2z'"), ("1e", "'1e'"),
])
def test_semantic_errors(body, fragment):
    with pytest.raises(ValueError) as info:
        fresh("poly:" + body)
    msg = str(info.value)
    assert fragment in msg and "`spec`" in msg and len(msg) < MAX_MESSAGE, msg


def test_huge_literal_is_exact_then_refused_as_non_finite():
    a = fresh("poly:1e100*z")  # exact 10**100
    assert a.exact_coefficients(1)[1] == sympy.Integer(10) ** 100
    for body in ["1e400*z", "1e300*z"]:  # not a float64; square (E[sigma^2]) not a float64
        with pytest.raises(ValueError, match=r"`spec`.*(non-finite|MAX_COEFFICIENT)"):
            fresh("poly:" + body)


# --------------------------------------------------------------------------------------
# limits: refused fast, with a short message naming the argument
# --------------------------------------------------------------------------------------
LIMIT_CASES = [
    (lambda: fresh("poly:" + "z+" * MAX_BODY_LENGTH + "z"), "`spec`", "MAX_BODY_LENGTH"),
    (lambda: fresh("poly:" + "(" * (MAX_NESTING + 1) + "z" + ")" * (MAX_NESTING + 1)), "`spec`", "MAX_NESTING"),
    (lambda: fresh("poly:" + "-" * 1500 + "z"), "`spec`", "MAX_NESTING"),
    (lambda: fresh("poly:" + "(" * 10 ** 5), "`spec`", "MAX_SPEC_LENGTH"),
    (lambda: fresh("poly:z**1000000"), "`spec`", "MAX_EXPONENT"),
    (lambda: fresh("poly:2**(10**9)"), "`spec`", "MAX_EXPONENT"),
    (lambda: fresh("poly:9**9**9**9"), "`spec`", "MAX_EXPONENT"),
    (lambda: fresh("poly:z**1000"), "`spec`", "MAX_POLY_DEGREE"),
    (lambda: fresh(f"poly:z**{MAX_POLY_DEGREE + 1}"), "`spec`", "MAX_POLY_DEGREE"),
    (lambda: fresh("poly:((z+1)**8)**8"), "`spec`", "MAX_POLY_DEGREE"),
    (lambda: fresh("poly:(z**30)*(z**31)"), "`spec`", "MAX_POLY_DEGREE"),
    (lambda: fresh("poly:3**5000*3**5000"), "`spec`", "MAX_INT_BITS"),
    (lambda: fresh("poly:1e99999"), "`spec`", "MAX_INT_BITS"),
    (lambda: fresh("poly:(1+pi+E+sqrt(2)+tanh(1))**60"), "`spec`", "MAX_TERMS"),
    (lambda: fresh("poly:exp(exp(exp(10)))"), "`spec`", "MAX_CONSTANT"),
    (lambda: fresh("poly:sqrt(" + "7" * 300 + ")"), "`spec`", "MAX_ROOT_BITS"),
    (lambda: fresh("he100000000"), "`spec`", "MAX_HE_DEGREE"),
    (lambda: fresh("he" + "9" * 5000), "`spec`", "MAX_HE_DEGREE"),
    (lambda: fresh("hermite:" + ",".join(["1"] * 1000)), "`spec`", "coefficients"),
    (lambda: fresh("hermite:" + ",".join(["1"] * 6000)), "`spec`", "MAX_SPEC_LENGTH"),
    (lambda: fresh("hermite:1," + "9" * 400), "`spec`", "finite"),
    (lambda: fresh("hermite:1,nan"), "`spec`", "malformed spec"),
    (lambda: get_activation("he3").coefficients(10 ** 12), "`degree`", "MAX_SERIES_DEGREE"),
    (lambda: get_activation("relu").series(10 ** 12), "`degree`", "MAX_SERIES_DEGREE"),
    (lambda: get_activation("tanh").exact_coefficients(10 ** 12), "`degree`", "MAX_SERIES_DEGREE"),
    (lambda: get_activation("relu").tail_mass(acts.MAX_SERIES_DEGREE + 1), "`degree`", "MAX_SERIES_DEGREE"),
]


@pytest.mark.parametrize("call, argument, fragment", LIMIT_CASES)
def test_limits_fail_fast_with_short_message(call, argument, fragment):
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        call()
    elapsed = time.perf_counter() - start
    msg = str(info.value)
    assert argument in msg and fragment in msg, msg
    assert len(msg) < MAX_MESSAGE and "\n" not in msg, msg
    assert elapsed < FAST_SECONDS, f"{elapsed:.2f} s"


def test_limits_leave_room_for_realistic_specs():
    # a dense rational polynomial at the degree cap, a Horner form, irrational terms within MAX_TERMS
    assert fresh(f"poly:(z/3 + 1/7)**{MAX_POLY_DEGREE}").degree == MAX_POLY_DEGREE
    horner = "1" + "".join("+z*(1" for _ in range(40)) + ")" * 40
    assert fresh("poly:" + horner).degree == 40
    assert fresh("poly:(z + pi + sqrt(2))**3").degree == 3
    assert MAX_EXPONENT >= MAX_POLY_DEGREE and MAX_TERMS >= MAX_POLY_DEGREE + 1
    assert get_activation("he3").coefficients(acts.MAX_SERIES_DEGREE).size == acts.MAX_SERIES_DEGREE + 1
