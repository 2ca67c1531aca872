r"""Safe parser for the body of ``poly:`` activation specs.

Spec strings come from command lines, configuration files and shared sweep files, so
they are untrusted text.  This module never hands a string to ``sympy.sympify``,
``sympy.parse_expr``, ``eval`` or ``exec``: a hand-written tokenizer and a
recursive-descent parser build the sympy expression directly from tokens with
``sympy.Integer``/``Rational``/``Add``/``Mul``/``Pow`` and a fixed table of sympy
functions.

Grammar
-------
::

    body    := expr                                    (the whole body, nothing after it)
    expr    := term   (("+" | "-") term)*
    term    := unary  (("*" | "/") unary)*
    unary   := ("+" | "-") unary | power
    power   := atom   (("**" | "^") unary)?            (right-associative)
    atom    := NUMBER | "z" | CONST | FUNC "(" expr ")" | "(" expr ")"
    NUMBER  := [0-9]+ ("." [0-9]*)? EXP? | "." [0-9]+ EXP?      (ASCII digits only)
    EXP     := ("e" | "E") ("+" | "-")? [0-9]+
    CONST   := "pi" | "E"
    FUNC    := "exp" | "tanh" | "erf" | "sqrt" | "sin" | "cos" | "log" | "abs"

Spaces and tabs between tokens are ignored.  Precedence and associativity are
Python's: ``-z**2`` is :math:`-(z^2)`, ``2**3**2`` is :math:`2^9`, ``2**-1`` is 1/2
and ``z*-1`` is :math:`-z`.  ``^`` means ``**`` (as it did under sympy's
``convert_xor`` default, so existing specs keep their meaning).  Numbers are exact:
``0.1`` is 1/10 and ``2.5E2`` is 250.  Anything else -- other names, ``_``, ``.``
outside a number, quotes, brackets, commas, ``=``, ``;``, ``@``, backslashes,
non-ASCII characters -- is a ``ValueError`` naming the token and its position.

Semantics
---------
The result must be a polynomial in ``z`` with real coefficients, and every
intermediate result must be one too: functions apply to constant arguments only
(``tanh(z)`` is refused as "not a polynomial"; ``exp(1)*z`` is fine), exponents are
constants, a power of an expression in ``z`` needs a non-negative integer exponent,
and a divisor that contains ``z`` must cancel to a polynomial at once (``z**3/z``).
Constants must be real (``sqrt(-1)`` is refused) and division by zero is refused.

Limits
------
Every limit is checked *before* sympy computes the corresponding object, so no input
can make the parser or sympy run long or recurse deeply (module constants below give
the reasons).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = [
    "parse_polynomial",
    "MAX_BODY_LENGTH",
    "MAX_NESTING",
    "MAX_EXPONENT",
    "MAX_POLY_DEGREE",
    "MAX_INT_BITS",
    "MAX_ROOT_BITS",
    "MAX_TERMS",
    "MAX_CONSTANT",
    "FUNCTIONS",
    "CONSTANTS",
]

#: Longest accepted ``poly:`` body (characters).  Bounds tokenizer and sympy build time;
#: the expanded He_30 is about 400 characters, so realistic specs are far shorter.
MAX_BODY_LENGTH = 2000
#: Deepest nesting of parentheses, function calls, unary signs and right-associative
#: powers.  Each level costs about 5 Python frames, so 100 levels stay far below the
#: interpreter's recursion limit (no RecursionError); a degree-60 Horner form needs 60.
MAX_NESTING = 100
#: Largest ``|integer exponent|`` (and numerator/denominator of a rational exponent).
#: Checked before the power is formed; no polynomial within MAX_POLY_DEGREE and no
#: rational within MAX_INT_BITS needs more.
MAX_EXPONENT = 10_000
#: Highest polynomial degree (an upper bound tracked through the parse, checked before
#: any power or product is formed).  Measured (2 cores, sympy 1.14): the exact Hermite
#: coefficients of a dense degree-60 polynomial take 0.6-1.2 s (``(z+1)**60``,
#: ``(z/3+1/7)**60``); degree 100 takes 1.3-2.7 s, and beyond degree ~170 the squared
#: normalised coefficients (c_d = sqrt(d!) for z**d) overflow float64.  60 also matches
#: the package's default Hermite truncation (models.multi_index.DEFAULT_DEGREE).
MAX_POLY_DEGREE = 60
#: Largest bit length of a rational constant (numerator or denominator), checked
#: before an integer power of a rational is computed: ~3000 decimal digits, far
#: beyond the float range (1024 bits) every coefficient must end up in.
MAX_INT_BITS = 10_000
#: Largest bit length of a rational raised to a non-integer power: sympy extracts
#: perfect-power factors by trial division, ~1 s for one 1024-bit base, < 0.03 s at 512.
MAX_ROOT_BITS = 512
#: Upper bound on the number of monomials (in z and in the irrational constants) after
#: full expansion, for polynomials whose coefficients are not all rational (e.g.
#: ``(z + pi + sqrt(2))**k``): the multinomial count grows without bound otherwise.
#: Measured (2 cores, sympy 1.14, get_activation + series(60)): worst cases within the
#: cap ~1.3 s (100 terms: sum of (tanh(k)+erf(k))*z**k, k <= 50; (z+tanh(1))**60 0.8 s);
#: 2000 terms took 3-8 s.
MAX_TERMS = 100
#: Largest magnitude of an irrational constant (a function value, a power of a
#: constant): stops towers such as exp(exp(exp(10))) whose evaluation never ends;
#: every coefficient must be a finite float anyway.
MAX_CONSTANT = 1e300
#: Digits used to evaluate constants when checking magnitude and non-zero divisors.
_EVAL_DIGITS = 30

#: Whitelisted functions (name -> sympy attribute).
FUNCTIONS = {"exp": "exp", "tanh": "tanh", "erf": "erf", "sqrt": "sqrt", "sin": "sin",
             "cos": "cos", "log": "log", "abs": "Abs"}
#: Whitelisted constants (name -> sympy attribute).
CONSTANTS = {"pi": "pi", "E": "E"}

_ALLOWED = "numbers, z, + - * / ** ^ ( ), " + " ".join(FUNCTIONS) + " pi E"
_NUMBER_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WORD_RE = re.compile(r"[A-Za-z0-9_]+")
_ECHO = 20  # characters of an offending token or spec echoed in a message (one line < 200)


def _short(text: str, n: int = _ECHO) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


class _Error(ValueError):
    """Internal: a parse error with the offending position (re-raised with context)."""


def _fail(msg: str, pos: int | None = None):
    raise _Error(msg + (f" at position {pos}" if pos is not None else ""))


# --------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------
def _tokenize(body: str) -> list:
    """``[(kind, text, pos)]`` with kind in num, name, op, end."""
    toks = []
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch in " \t":
            i += 1
            continue
        if ch.isascii() and (ch.isdigit() or ch == "."):
            m = _NUMBER_RE.match(body, i)
            if m is None:
                _fail(f"unexpected token {_short(ch)}", i)
            # a number glued to letters/underscore/dot (2z, 1.2.3, 1_0) is one bad token
            end = m.end()
            if end < n and (body[end].isalnum() or body[end] in "_."):
                w = _WORD_RE.match(body, i)
                bad = body[i: max(end + 1, w.end() if w else end + 1)]
                _fail(f"unexpected token {_short(bad)}", i)
            toks.append(("num", m.group(), i))
            i = end
            continue
        if ch.isascii() and (ch.isalpha() or ch == "_"):
            m = _WORD_RE.match(body, i)
            word = m.group()
            if word != "z" and word not in FUNCTIONS and word not in CONSTANTS:
                _fail(f"unexpected token {_short(word)}", i)
            toks.append(("name", word, i))
            i = m.end()
            continue
        if body.startswith("**", i):
            toks.append(("op", "**", i))
            i += 2
            continue
        if ch in "+-*/^()":
            toks.append(("op", ch, i))
            i += 1
            continue
        _fail(f"unexpected token {_short(ch)}", i)
    toks.append(("end", "", n))
    return toks


# --------------------------------------------------------------------------------------
# values carried through the parse
# --------------------------------------------------------------------------------------
class _Node:
    """A sympy expression with upper bounds that keep later work bounded.

    ``deg``: degree in z; ``terms``: monomials after full expansion; ``hasz``: may
    contain z; ``rational``: a polynomial with rational coefficients.
    """

    __slots__ = ("expr", "deg", "terms", "hasz", "rational")

    def __init__(self, expr, deg, terms, hasz, rational):
        self.expr = expr
        self.hasz = hasz and not expr.is_Number
        self.deg = deg if self.hasz else 0
        self.rational = rational or expr.is_Rational
        self.terms = min(terms, self.deg + 1) if self.rational else terms


def _bits(q) -> int:
    """Bit length of the larger of numerator and denominator of a sympy Rational."""
    return max(int(q.p).bit_length(), int(q.q).bit_length())


def _multinomial_terms(terms: int, n: int) -> int:
    """Monomials in the expansion of a ``terms``-term sum to the power ``n``."""
    if terms <= 1:
        return 1
    return math.comb(terms + n - 1, n)


class _Parser:
    def __init__(self, body: str, sp, z):
        self.sp = sp
        self.z = z
        self.toks = _tokenize(body)
        self.i = 0
        self.depth = 0

    # -- helpers ---------------------------------------------------------------------------
    def peek(self):
        return self.toks[self.i]

    def take(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def enter(self, pos):
        self.depth += 1
        if self.depth > MAX_NESTING:
            _fail(f"nesting deeper than MAX_NESTING = {MAX_NESTING}", pos)

    def leave(self):
        self.depth -= 1

    def check_terms(self, node, pos):
        if not node.rational and node.terms > MAX_TERMS:
            _fail(f"expands to more than MAX_TERMS = {MAX_TERMS} terms (irrational coefficients)", pos)
        return node

    def check_degree(self, deg, pos):
        if deg > MAX_POLY_DEGREE:
            _fail(f"degree {deg if deg < 10**6 else '> 10**6'} exceeds MAX_POLY_DEGREE = {MAX_POLY_DEGREE}",
                  pos)

    def check_constant(self, node, pos, what):
        """Irrational constants must be real and of magnitude <= MAX_CONSTANT."""
        e = node.expr
        if e.is_Rational:
            if _bits(e) > MAX_INT_BITS:
                _fail(f"{what} has more than MAX_INT_BITS = {MAX_INT_BITS} bits", pos)
            return node
        sp = self.sp
        if e.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            _fail(f"{what} is undefined or infinite", pos)
        v = e.evalf(_EVAL_DIGITS)
        if not isinstance(v, sp.Float) and not v.is_Rational:
            _fail(f"{what} is not a real number", pos)
        if abs(float(v)) > MAX_CONSTANT:
            _fail(f"{what} exceeds MAX_CONSTANT = {MAX_CONSTANT:g} in magnitude", pos)
        return node

    def check_nonzero(self, node, pos):
        sp = self.sp
        e = node.expr
        if e.is_zero:
            _fail("division by zero", pos)
        if e.is_Rational:
            return
        try:
            v = e.evalf(_EVAL_DIGITS, strict=True)
        except sp.core.evalf.PrecisionExhausted:
            _fail("division by a constant that is zero to 30 digits", pos)
        if v == 0:
            _fail("division by zero", pos)

    # -- grammar ---------------------------------------------------------------------------
    def parse(self):
        node = self.expr()
        kind, text, pos = self.peek()
        if kind != "end":
            if text == ")":
                _fail("unbalanced ')'", pos)
            _fail(f"unexpected token {_short(text)}", pos)
        return node

    def expr(self):
        self.enter(self.peek()[2])
        first_pos = self.peek()[2]
        nodes = [self.term()]
        while self.peek()[1] in ("+", "-"):
            _, op, pos = self.take()
            rhs = self.term()
            if op == "-":
                rhs = _Node(-rhs.expr, rhs.deg, rhs.terms, rhs.hasz, rhs.rational)
            nodes.append(rhs)
        self.leave()
        if len(nodes) == 1:
            return nodes[0]
        out = _Node(self.sp.Add(*[n.expr for n in nodes]), max(n.deg for n in nodes),
                    sum(n.terms for n in nodes), any(n.hasz for n in nodes),
                    all(n.rational for n in nodes))
        if out.expr.is_Rational and _bits(out.expr) > MAX_INT_BITS:
            _fail(f"constant has more than MAX_INT_BITS = {MAX_INT_BITS} bits", first_pos)
        return self.check_terms(out, first_pos)

    def term(self):
        sp = self.sp
        first_pos = self.peek()[2]
        node = self.unary()
        while self.peek()[1] in ("*", "/"):
            _, op, pos = self.take()
            rhs = self.unary()
            if op == "*":
                deg = node.deg + rhs.deg
                self.check_degree(deg, pos)
                if node.expr.is_Rational and rhs.expr.is_Rational and \
                        _bits(node.expr) + _bits(rhs.expr) > MAX_INT_BITS:
                    _fail(f"constant has more than MAX_INT_BITS = {MAX_INT_BITS} bits", pos)
                node = _Node(sp.Mul(node.expr, rhs.expr), deg, node.terms * rhs.terms,
                             node.hasz or rhs.hasz, node.rational and rhs.rational)
            else:
                node = self.divide(node, rhs, pos)
            self.check_terms(node, first_pos)
        return node

    def divide(self, num, den, pos):
        sp = self.sp
        if den.hasz:
            q = num.expr / den.expr
            if not q.is_polynomial(self.z):
                _fail("not a polynomial in z: division by an expression in z", pos)
            return _Node(q, num.deg, num.terms, True, num.rational and den.rational)
        self.check_nonzero(den, pos)
        if num.expr.is_Rational and den.expr.is_Rational and _bits(num.expr) + _bits(den.expr) > MAX_INT_BITS:
            _fail(f"constant has more than MAX_INT_BITS = {MAX_INT_BITS} bits", pos)
        return _Node(sp.Mul(num.expr, sp.Pow(den.expr, -1)), num.deg, num.terms, num.hasz,
                     num.rational and den.expr.is_Rational)

    def unary(self):
        kind, text, pos = self.peek()
        if text in ("+", "-"):
            self.take()
            self.enter(pos)
            node = self.unary()
            self.leave()
            if text == "-":
                node = _Node(-node.expr, node.deg, node.terms, node.hasz, node.rational)
            return node
        return self.power()

    def power(self):
        base = self.atom()
        kind, text, pos = self.peek()
        if text not in ("**", "^"):
            return base
        self.take()
        self.enter(pos)
        expo = self.unary()
        self.leave()
        return self.raise_to(base, expo, pos)

    def raise_to(self, base, expo, pos):
        sp = self.sp
        if expo.hasz:
            _fail("not a polynomial in z: the exponent contains z", pos)
        e = expo.expr
        if e.is_Integer:
            n = int(e)
            if abs(n) > MAX_EXPONENT:
                _fail(f"exponent {n if abs(n) < 10**9 else '> 10**9'} exceeds MAX_EXPONENT = {MAX_EXPONENT}", pos)
            if base.hasz:
                if n < 0:
                    _fail("not a polynomial in z: negative power of an expression in z", pos)
                self.check_degree(base.deg * n, pos)
                node = _Node(sp.Pow(base.expr, e), base.deg * n, _multinomial_terms(base.terms, n), True,
                             base.rational)
                return self.check_terms(node, pos)
            b = base.expr
            if b.is_Rational:
                if b == 0 and n < 0:
                    _fail("division by zero", pos)
                if abs(n) * _bits(b) > MAX_INT_BITS:
                    _fail(f"power has more than MAX_INT_BITS = {MAX_INT_BITS} bits", pos)
                return _Node(sp.Pow(b, e), 0, 1, False, True)
            if n < 0:
                self.check_nonzero(base, pos)
            node = _Node(sp.Pow(b, e), 0, _multinomial_terms(base.terms, abs(n)), False, False)
            self.check_terms(node, pos)
            return self.check_constant(node, pos, "power")
        # non-integer exponent: constants only
        if base.hasz:
            _fail("not a polynomial in z: non-integer power of an expression in z", pos)
        self.check_constant(expo, pos, "exponent")
        if e.is_Rational:
            if max(abs(int(e.p)), int(e.q)) > MAX_EXPONENT:
                _fail(f"exponent {_short(str(e))} exceeds MAX_EXPONENT = {MAX_EXPONENT}", pos)
            if base.expr.is_Rational and _bits(base.expr) > MAX_ROOT_BITS:
                _fail(f"root of a constant with more than MAX_ROOT_BITS = {MAX_ROOT_BITS} bits", pos)
            k = math.ceil(abs(Fraction(int(e.p), int(e.q))))
        else:
            if base.expr.is_Rational and _bits(base.expr) > MAX_ROOT_BITS:
                _fail(f"power of a constant with more than MAX_ROOT_BITS = {MAX_ROOT_BITS} bits", pos)
            k = 1
        if base.expr.is_zero and e.is_negative:
            _fail("division by zero", pos)
        self.check_constant(base, pos, "base")
        node = _Node(sp.Pow(base.expr, e), 0, _multinomial_terms(base.terms, k), False, False)
        self.check_terms(node, pos)
        return self.check_constant(node, pos, "power")

    def atom(self):
        sp = self.sp
        kind, text, pos = self.take()
        if kind == "num":
            return _Node(self.number(text, pos), 0, 1, False, True)
        if kind == "name":
            if text == "z":
                return _Node(self.z, 1, 1, True, True)
            if text in CONSTANTS:
                return _Node(getattr(sp, CONSTANTS[text]), 0, 1, False, False)
            # function call
            if self.peek()[1] != "(":
                _fail(f"function {text!r} needs parentheses", pos)
            self.take()
            arg = self.expr()
            self.expect_close(pos)
            if arg.hasz:
                _fail(f"not a polynomial in z: {text}() of an expression in z "
                      "(use a registered name or a callable)", pos)
            if arg.expr.is_Rational and _bits(arg.expr) > MAX_ROOT_BITS and text in ("sqrt", "log"):
                _fail(f"{text}() of a constant with more than MAX_ROOT_BITS = {MAX_ROOT_BITS} bits", pos)
            if text == "log" and arg.expr.is_zero:
                _fail("log(0) is undefined", pos)
            if not arg.expr.is_Rational:
                self.check_constant(arg, pos, f"{text}() argument")
            val = getattr(sp, FUNCTIONS[text])(arg.expr)
            return self.check_constant(_Node(val, 0, 1, False, False), pos, f"{text}()")
        if text == "(":
            node = self.expr()
            self.expect_close(pos)
            return node
        if kind == "end":
            _fail("unexpected end of expression", pos)
        _fail(f"unexpected token {_short(text)}", pos)

    def expect_close(self, open_pos):
        kind, text, pos = self.take()
        if text != ")":
            if kind == "end":
                _fail(f"unclosed '(' from position {open_pos}", pos)
            _fail(f"unexpected token {_short(text)} (expected ')')", pos)

    @staticmethod
    def number(text: str, pos: int):
        import sympy

        mant, _, exp10 = text.lower().partition("e")
        e10 = int(exp10) if exp10 else 0  # at most MAX_BODY_LENGTH digits: cheap
        if abs(e10) > MAX_INT_BITS // 3:  # 10**3333 ~ 2**11070: refuse before forming it
            _fail(f"number {_short(text)} exceeds MAX_INT_BITS = {MAX_INT_BITS} bits", pos)
        frac = Fraction(mant) * (Fraction(10) ** e10)
        if max(frac.numerator.bit_length(), frac.denominator.bit_length()) > MAX_INT_BITS:
            _fail(f"number {_short(text)} exceeds MAX_INT_BITS = {MAX_INT_BITS} bits", pos)
        return sympy.Rational(frac.numerator, frac.denominator)


def parse_polynomial(body: str, *, name: str = "spec", spec: str | None = None, symbol=None):
    """Parse ``body`` (the text after ``poly:``) into a sympy polynomial in ``z``.

    Parameters
    ----------
    body : str
        Expression text, see the module docstring for the grammar.
    name : str
        Argument name used in error messages.
    spec : str, optional
        The whole spec echoed (truncated) in error messages; default ``"poly:" + body``.
    symbol : sympy.Symbol, optional
        The symbol ``z`` stands for (default :func:`popdyn.hermite.z_symbol`).

    Returns
    -------
    expr : sympy expression
        Polynomial in ``symbol`` (unexpanded; coefficients real constants).
    rational : bool
        True when every coefficient is a rational number.

    Raises
    ------
    ValueError
        Malformed text (the message names the token and its 0-based position), a
        non-polynomial, division by zero or an exceeded limit.  Never any other
        exception type for a ``str`` input, and no code is executed.
    """
    if not isinstance(body, str):
        raise TypeError(f"`{name}` must be a string, got {type(body).__name__}.")
    head = f"`{name}` malformed spec {_short('poly:' + body if spec is None else spec)}:"
    if len(body) > MAX_BODY_LENGTH:
        raise ValueError(f"{head} the poly: body has {len(body)} characters, "
                         f"more than MAX_BODY_LENGTH = {MAX_BODY_LENGTH}.")
    import sympy

    if symbol is None:  # the package's real symbol z (equal to popdyn.hermite.z_symbol(); sympy
        symbol = sympy.Symbol("z", real=True)  # symbols are equal by name and assumptions)
    try:
        node = _Parser(body, sympy, symbol).parse()
    except _Error as exc:
        msg = str(exc)
        hint = f"; allowed: {_ALLOWED}" if msg.startswith(("unexpected token", "function")) else ""
        raise ValueError(f"{head} {msg}{hint}.") from None
    return node.expr, node.rational
