r"""Activation registry: each activation knows its values, derivative and Hermite series.

Look-up by name or spec string with :func:`get_activation`:

=====================  ==============================================================
spec                   meaning
=====================  ==============================================================
``relu``               :math:`\max(z, 0)` (closed-form coefficients)
``abs``                :math:`|z|` (closed form)
``sign``               :math:`\mathrm{sign}(z)` (closed form)
``tanh``               :math:`\tanh z` (numeric)
``erf``                :math:`\mathrm{erf}(z/\sqrt2)` -- the Saad–Solla convention (closed form)
``sigmoid``            :math:`1/(1+e^{-z})` (numeric)
``softplus``           :math:`\log(1+e^{z})` (numeric)
``gelu``               :math:`z\,\Phi(z)` (exact GELU, numeric)
``silu``               :math:`z/(1+e^{-z})` (numeric)
``identity``           :math:`z` (polynomial)
``heK``                :math:`h_K = He_K/\sqrt{K!}` for any integer ``K >= 0`` (polynomial)
``hermite:c0,c1,...``  :math:`\sum_k c_k h_k`, normalised basis (polynomial, exact decimals)
``poly:<expr>``        a polynomial in ``z``, e.g. ``poly:z**3-3*z`` (grammar below)
=====================  ==============================================================

``poly:`` bodies are parsed by a small safe grammar (:mod:`popdyn._expr`), never
evaluated as Python or by ``sympy.sympify``: numbers (exact, ``1e-3`` is 1/1000), ``z``,
``+ - * / **`` (``^`` means ``**``), parentheses, the functions
``exp tanh erf sqrt sin cos log abs`` of constants and the constants ``pi E``; at most
degree :data:`~popdyn._expr.MAX_POLY_DEGREE` = 60.  Spec strings are at most
:data:`MAX_SPEC_LENGTH` characters and coefficient degrees at most
:data:`MAX_SERIES_DEGREE`.

Python callables (with optional ``breakpoints``) and sympy expressions are accepted by
:func:`get_activation` too.  Coefficients are exact (sympy) for polynomials, closed
form for ReLU, abs, sign and erf, and numeric (absolute error <= 1e-12 to degree 60)
otherwise.  Results are cached per activation and degree.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections.abc import Callable

import numpy as np

from . import _expr
from . import hermite as _h
from ._validation import check_int, check_real

__all__ = ["Activation", "get_activation", "registered_names", "ACTIVATION_SPECS",
           "MAX_SERIES_DEGREE", "MAX_SPEC_LENGTH", "MAX_HE_DEGREE"]

#: Highest ``degree`` accepted by :meth:`Activation.coefficients`, ``exact_coefficients``,
#: ``series`` and ``tail_mass``.  Equal to MAX_HE_DEGREE so every ``heK`` can be expanded
#: to its own degree.  Measured (2 cores): degree 400 takes ~1 s for the exact ReLU/erf
#: coefficients (sympy) and ~0.3 s for numeric ones; degree 1000 takes ~4 s (exact
#: ReLU) and the numeric recurrence overflows to nan near degree 390 of 1000; 10**12
#: used to end in MemoryError.
MAX_SERIES_DEGREE = 400
#: Highest ``K`` of a ``heK`` spec (the normalised h_K; cheap to build, so the cap only
#: keeps it within MAX_SERIES_DEGREE).
MAX_HE_DEGREE = 400
#: Longest accepted spec string (characters).  ``hermite:`` with MAX_SERIES_DEGREE + 1
#: coefficients of ~20 characters each fits; longer text is refused before parsing
#: (``int`` of a > 4300-digit string would raise its own error, and parse time grows
#: with length).  ``poly:`` bodies have the tighter ``popdyn._expr.MAX_BODY_LENGTH``.
MAX_SPEC_LENGTH = 10_000
#: Largest ``|c_k|`` of a polynomial or ``hermite:`` activation: E[sigma^2] = sum_k c_k^2
#: over at most MAX_SERIES_DEGREE + 1 terms must stay a finite float64 (401 * 1e300 < 1.8e308).
MAX_COEFFICIENT = 1e150
#: Characters of a user string echoed in an error message (messages stay < 200 chars).
_ECHO = 40


def _echo(text: str) -> str:
    return repr(text if len(text) <= _ECHO else text[: _ECHO - 3] + "...")


def _check_degree(degree) -> int:
    degree = check_int("degree", degree, minimum=0)
    if degree > MAX_SERIES_DEGREE:
        raise ValueError(f"`degree` must be an integer <= MAX_SERIES_DEGREE = {MAX_SERIES_DEGREE} "
                         f"(time and float64 range), got {degree if degree < 10**12 else f'{degree:.3g}'}.")
    return degree

_SQRT2PI = math.sqrt(2.0 * math.pi)
_cache_lock = threading.Lock()


# --------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------
def _double_factorial_log(n: int) -> float:
    """log(n!!) for n >= -1."""
    if n <= 0:
        return 0.0
    if n % 2 == 0:
        k = n // 2
        return k * math.log(2.0) + math.lgamma(k + 1)
    k = (n + 1) // 2
    return math.lgamma(2 * k + 1) - k * math.log(2.0) - math.lgamma(k + 1)


def _he_at_zero_scaled(m: int, n: int) -> float:
    r""":math:`He_m(0)/\sqrt{n!}` computed in logs (0 for odd m)."""
    if m % 2:
        return 0.0
    sign = -1.0 if (m // 2) % 2 else 1.0
    return sign * math.exp(_double_factorial_log(m - 1) - 0.5 * math.lgamma(n + 1))


def _relu_coeffs(n: int) -> np.ndarray:
    r"""ReLU: :math:`c_0 = 1/\sqrt{2\pi}`, :math:`c_1 = 1/2`,
    :math:`c_n = \varphi(0) He_{n-2}(0)/\sqrt{n!}` for n >= 2."""
    c = np.zeros(n + 1)
    c[0] = 1.0 / _SQRT2PI
    if n >= 1:
        c[1] = 0.5
    for k in range(2, n + 1):
        c[k] = _he_at_zero_scaled(k - 2, k) / _SQRT2PI
    return c


def _abs_coeffs(n: int) -> np.ndarray:
    c = 2.0 * _relu_coeffs(n)
    c[1::2] = 0.0
    return c


def _sign_coeffs(n: int) -> np.ndarray:
    r"""sign: :math:`c_n = 2\varphi(0) He_{n-1}(0)/\sqrt{n!}` for odd n, 0 for even n."""
    c = np.zeros(n + 1)
    for k in range(1, n + 1, 2):
        c[k] = 2.0 * _he_at_zero_scaled(k - 1, k) / _SQRT2PI
    return c


def _erf_coeffs(n: int) -> np.ndarray:
    r"""erf(z/sqrt 2): :math:`c_n = \pi^{-1/2} (-1/2)^{(n-1)/2} (n-2)!!/\sqrt{n!}` for odd n."""
    c = np.zeros(n + 1)
    for k in range(1, n + 1, 2):
        j = (k - 1) // 2
        sign = -1.0 if j % 2 else 1.0
        c[k] = sign * math.exp(-0.5 * math.log(math.pi) - j * math.log(2.0)
                               + _double_factorial_log(k - 2) - 0.5 * math.lgamma(k + 1))
    return c


def _relu_exact(n: int):
    import sympy

    out = [1 / sympy.sqrt(2 * sympy.pi), sympy.Rational(1, 2)][: n + 1]
    for k in range(2, n + 1):
        m = k - 2
        if m % 2:
            out.append(sympy.Integer(0))
        else:
            out.append((-1) ** (m // 2) * sympy.factorial2(m - 1)
                       / sympy.sqrt(2 * sympy.pi * sympy.factorial(k)))
    return tuple(out)


def _abs_exact(n: int):
    return tuple(0 if k % 2 else 2 * c for k, c in enumerate(_relu_exact(n)))


def _sign_exact(n: int):
    import sympy

    out = []
    for k in range(n + 1):
        if k % 2 == 0:
            out.append(sympy.Integer(0))
        else:
            m = k - 1
            out.append(2 * (-1) ** (m // 2) * sympy.factorial2(m - 1)
                       / sympy.sqrt(2 * sympy.pi * sympy.factorial(k)))
    return tuple(out)


def _erf_exact(n: int):
    import sympy

    out = []
    for k in range(n + 1):
        if k % 2 == 0:
            out.append(sympy.Integer(0))
        else:
            j = (k - 1) // 2
            out.append((-1) ** j * sympy.factorial2(k - 2)
                       / (sympy.sqrt(sympy.pi) * 2 ** j * sympy.sqrt(sympy.factorial(k))))
    return tuple(out)


# --------------------------------------------------------------------------------------
# numpy implementations
# --------------------------------------------------------------------------------------
def _erf(x):
    from scipy.special import erf

    return erf(x)


def _ndtr(x):
    from scipy.special import ndtr

    return ndtr(x)


def _expit(x):
    from scipy.special import expit

    return expit(x)


_PHI0 = 1.0 / _SQRT2PI


@dataclasses.dataclass(frozen=True, eq=False)
class Activation:
    r"""An activation :math:`\sigma` with its values, derivative and Hermite series.

    Build with :func:`get_activation` (registry names, spec strings, callables, sympy
    expressions) rather than directly.

    Parameters
    ----------
    name, fn, dfn, breakpoints
        As under Attributes (``breakpoints`` default ``()``, stored sorted; must be finite).
    poly_coeffs : tuple or None
        Exact normalised Hermite coefficients :math:`c_0, \dots, c_n` when :math:`\sigma` is a
        polynomial (then ``is_polynomial`` is true and ``expr`` is built from them); ``None``
        (default) otherwise.
    exact_coeffs, closed_coeffs, second_moment_exact, homogeneity, description
        As under Attributes (defaults ``None``, and ``""`` for ``description``).
    sympy_builder : callable or None
        ``() -> sympy expression`` in ``z``, called lazily for ``expr`` when ``poly_coeffs`` is
        ``None`` (sympy is slow to import); default ``None``.

    Attributes
    ----------
    name : str
        Canonical spec string (``"relu"``, ``"he3"``, ``"poly:z**3 - 3*z"``, ...).
    fn : callable
        Vectorised numpy evaluation.
    dfn : callable
        Vectorised derivative (almost everywhere; 0 on flat pieces of ``sign``).
    breakpoints : tuple of float
        Points where :math:`\sigma` or a derivative jumps; quadrature splits there.
    expr : sympy expression or None
        Exact expression in ``z`` when known (polynomials; ``None`` for callables).
    exact_coeffs : callable or None
        ``n -> tuple`` of exact sympy coefficients ``c_0..c_n`` (polynomials, closed forms).
    closed_coeffs : callable or None
        ``n -> ndarray`` of float coefficients from a closed form.
    second_moment_exact : float or None
        :math:`E[\sigma(z)^2]` in closed form, when known.
    homogeneity : float or None
        ``q`` with :math:`\sigma(rz) = r^q \sigma(z)` for ``r > 0`` (ReLU 1, sign 0).
    description : str
        One line for ``popdyn activations``.
    """

    name: str
    fn: Callable
    dfn: Callable
    breakpoints: tuple = ()
    poly_coeffs: tuple | None = None  # exact normalised coefficients of a polynomial
    exact_coeffs: Callable | None = None
    closed_coeffs: Callable | None = None
    second_moment_exact: float | None = None
    homogeneity: float | None = None
    description: str = ""
    sympy_builder: Callable | None = None  # () -> sympy expression (lazy; sympy is slow to import)
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        bps = tuple(sorted(float(b) for b in self.breakpoints))
        if not all(np.isfinite(bps)):
            raise ValueError(f"`breakpoints` must be finite, got {self.breakpoints!r}.")
        object.__setattr__(self, "breakpoints", bps)

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"

    # -- evaluation ------------------------------------------------------------------------
    def __call__(self, z) -> np.ndarray:
        """Vectorised evaluation :math:`\\sigma(z)`."""
        return np.asarray(self.fn(np.asarray(z, dtype=float)), dtype=float)

    def derivative(self, z) -> np.ndarray:
        """Vectorised derivative :math:`\\sigma'(z)` (almost everywhere)."""
        return np.asarray(self.dfn(np.asarray(z, dtype=float)), dtype=float)

    # -- structure -------------------------------------------------------------------------
    @property
    def is_polynomial(self) -> bool:
        """True when the activation is a polynomial (exact Hermite algebra applies)."""
        return self.poly_coeffs is not None

    @property
    def degree(self) -> int | None:
        """Polynomial degree, or ``None`` for a non-polynomial."""
        if self.poly_coeffs is None:
            return None
        nz = [k for k, c in enumerate(self.poly_coeffs) if c != 0]
        return nz[-1] if nz else 0

    @property
    def expr(self):
        """Exact sympy expression in ``z`` (``None`` when unknown)."""
        if self.poly_coeffs is not None:
            return HermiteSeriesFromExact(self.poly_coeffs).to_sympy()
        if self.sympy_builder is not None:
            return self.sympy_builder()
        return None

    # -- Hermite coefficients ---------------------------------------------------------------
    def coefficients(self, degree: int) -> np.ndarray:
        r"""Normalised coefficients :math:`c_0..c_n`, :math:`c_k = E[\sigma(z) h_k(z)]` (cached).

        Exact for polynomials, closed form for ReLU/abs/sign/erf, numeric to absolute
        error <= 1e-12 otherwise (see :func:`popdyn.hermite.hermite_coefficients`).
        """
        degree = _check_degree(degree)
        return self._coefficients_and_moment(degree)[0][: degree + 1].copy()

    def exact_coefficients(self, degree: int):
        """Exact sympy coefficients ``c_0..c_n`` or ``None`` when only numeric ones exist."""
        degree = _check_degree(degree)
        if self.poly_coeffs is not None:
            c = list(self.poly_coeffs)[: degree + 1]
            return tuple(c + [0] * (degree + 1 - len(c)))
        if self.exact_coeffs is not None:
            return self.exact_coeffs(degree)
        return None

    @property
    def second_moment(self) -> float:
        r""":math:`E[\sigma(z)^2]`."""
        return self._coefficients_and_moment(0)[1]

    def series(self, degree: int) -> _h.HermiteSeries:
        """The truncated :class:`~popdyn.hermite.HermiteSeries` to ``degree`` (with tail mass)."""
        degree = _check_degree(degree)
        c, m2 = self._coefficients_and_moment(degree)
        c = c[: degree + 1]
        exact = self.exact_coefficients(degree) if self.poly_coeffs is not None else None
        m2 = max(m2, float(np.dot(c, c)))  # rounding guard for exact polynomials
        return _h.HermiteSeries(c, second_moment=m2, exact=exact)

    def tail_mass(self, degree: int) -> float:
        r""":math:`E[\sigma^2] - \sum_{k \le n} c_k^2`, the squared L² truncation error."""
        return self.series(degree).tail_mass

    def _coefficients_and_moment(self, degree: int):
        with _cache_lock:
            hit = self._cache.get("coefficients")
        if hit is not None and hit[0].size > degree:
            return hit
        if self.poly_coeffs is not None:
            exact = list(self.poly_coeffs)
            c = np.zeros(max(degree + 1, len(exact)))
            c[: len(exact)] = [float(v) for v in exact]
            m2 = float(np.dot(c, c))
        elif self.closed_coeffs is not None:
            c = self.closed_coeffs(max(degree, 8))
            if self.second_moment_exact is not None:
                m2 = float(self.second_moment_exact)
            else:
                m2 = _h.gaussian_expectation(lambda z: self.fn(z) ** 2, breakpoints=self.breakpoints,
                                             name=self.name)[0]
        else:
            c, m2, _ = _h.hermite_coefficients(self.fn, max(degree, 8), breakpoints=self.breakpoints,
                                               name=f"activation `{self.name}`")
            if self.second_moment_exact is not None:
                m2 = float(self.second_moment_exact)
        c.setflags(write=False)
        with _cache_lock:
            self._cache["coefficients"] = (c, m2)
        return c, m2

    # -- transformations -------------------------------------------------------------------
    def dilate(self, r: float) -> "Activation":
        r"""The activation :math:`z \mapsto \sigma(r z)` (``r != 0``).

        Polynomials stay exact; positively homogeneous activations (ReLU, abs, sign,
        identity) rescale their closed-form coefficients; others are recomputed
        numerically with the breakpoints scaled by ``1/r``.
        """
        r = check_real("r", r)
        if r == 0.0:
            raise ValueError("`r` must be non-zero (sigma(0 * z) is a constant).")
        if r == 1.0:
            return self
        name = f"{self.name}@{r:g}"
        fn, dfn = self.fn, self.dfn
        if self.poly_coeffs is not None:
            import sympy

            s = _h.HermiteSeries(np.array([float(c) for c in self.poly_coeffs]), exact=tuple(self.poly_coeffs))
            expr = s.to_sympy().subs(_h.z_symbol(), sympy.nsimplify(r) * _h.z_symbol())
            return _polynomial_activation(name, sympy.expand(expr))
        closed = exact = None
        m2 = None
        if self.homogeneity is not None and self.closed_coeffs is not None:
            q = self.homogeneity
            sgn = np.where(np.arange(10_000) % 2 == 1, math.copysign(1.0, r), 1.0)
            scale = abs(r) ** q
            base = self.closed_coeffs
            closed = lambda n: base(n) * scale * sgn[: n + 1]  # noqa: E731
            if self.second_moment_exact is not None:
                m2 = self.second_moment_exact * scale ** 2
        return Activation(
            name=name,
            fn=lambda z: fn(r * np.asarray(z, dtype=float)),
            dfn=lambda z: r * dfn(r * np.asarray(z, dtype=float)),
            breakpoints=tuple(b / r for b in self.breakpoints),
            closed_coeffs=closed, exact_coeffs=exact, second_moment_exact=m2,
            homogeneity=self.homogeneity, description=f"{self.name}(r z) with r = {r:g}",
        )


def HermiteSeriesFromExact(exact):
    return _h.HermiteSeries(np.array([float(c) for c in exact]), exact=tuple(exact))


# --------------------------------------------------------------------------------------
# constructors
# --------------------------------------------------------------------------------------
def _check_float_coefficients(name: str, floats) -> None:
    """Coefficients must be finite floats whose squares sum without overflow."""
    bad = [k for k, v in enumerate(floats) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"activation {_echo(name)} has {len(bad)} non-finite coefficient(s) in float64 "
                         f"(first at degree {bad[0]}); coefficients must be finite.")
    big = [k for k, v in enumerate(floats) if abs(v) > MAX_COEFFICIENT]
    if big:
        raise ValueError(f"activation {_echo(name)}: |c_{big[0]}| = {abs(floats[big[0]]):.3g} exceeds "
                         f"MAX_COEFFICIENT = {MAX_COEFFICIENT:g} (E[sigma^2] would overflow float64).")


def _expanded_hermite_coefficients(expr) -> tuple:
    r"""Exact normalised coefficients of a polynomial whose coefficients are real constants.

    Same values as :func:`popdyn.hermite.exact_hermite_coefficients`, but each
    coefficient is only expanded, not ``sympy.simplify``-ed: simplify takes seconds to
    minutes on transcendental constants (measured: ``(tanh(1)+erf(1)+...)*z**4`` with 8
    constants 8.6 s, ``(z+tanh(1))**10`` 2.5 s), while ``poly:`` specs are bounded in
    size by :mod:`popdyn._expr` so expansion stays fast.  Used for parsed ``poly:`` specs
    with irrational coefficients only; rational ones take the simplify route unchanged.
    """
    from fractions import Fraction

    import sympy

    z = _h.z_symbol()
    # power-basis coefficients as {z-degree: {irrational monomial: rational factor}},
    # collected in Python (sympy.Poly spends seconds choosing a coefficient domain and
    # sympy arithmetic on sums is slow; the monomials are only hashed here)
    power: dict = {}
    for term in sympy.Add.make_args(sympy.expand(expr)):
        coeff, k = term.as_coeff_exponent(z)
        if coeff.has(z) or not k.is_Integer or k < 0:
            raise ValueError(f"`expr` {_echo(str(expr))} is not a polynomial in z.")
        q, rest = coeff.as_coeff_Mul(rational=True)
        row = power.setdefault(int(k), {})
        row[rest] = row.get(rest, 0) + Fraction(int(q.p), int(q.q))
    n = max(power)
    # He-basis coefficients of z^m (integers): z He_k = He_{k+1} + k He_{k-1}
    rows, zm = [], [1]
    for _ in range(n + 1):
        rows.append(zm)
        nxt = [0] * (len(zm) + 1)
        for k, a in enumerate(zm):
            nxt[k + 1] += a
            if k >= 1:
                nxt[k - 1] += k * a
        zm = nxt
    out = []
    for k in range(n + 1):
        he: dict = {}
        for m in range(k, n + 1):
            t = rows[m][k]
            if t:
                for rest, q in power.get(m, {}).items():
                    he[rest] = he.get(rest, 0) + t * q
        root = sympy.sqrt(sympy.factorial(k))
        out.append(sympy.Add(*[sympy.Rational(q.numerator, q.denominator) * root * rest
                               for rest, q in he.items() if q]))
    return tuple(out)


def _polynomial_activation(name: str, expr, description: str = "", *, expanded: bool = False) -> Activation:
    exact = _expanded_hermite_coefficients(expr) if expanded else _h.exact_hermite_coefficients(expr)
    # drop trailing zeros but keep c_0
    while len(exact) > 1 and exact[-1] == 0:
        exact = exact[:-1]
    floats = np.array([float(c) for c in exact])
    _check_float_coefficients(name, floats)
    series = _h.HermiteSeries(floats)
    dseries = series.derivative()
    return Activation(
        name=name, fn=series, dfn=dseries, poly_coeffs=tuple(exact),
        description=description or f"polynomial {expr}",
    )


def _hermite_activation(name: str, coeffs_exact, description: str = "") -> Activation:
    floats = np.array([float(c) for c in coeffs_exact])
    _check_float_coefficients(name, floats)
    exact = tuple(coeffs_exact)
    while len(exact) > 1 and exact[-1] == 0:
        exact = exact[:-1]
    floats = floats[: len(exact)]
    series = _h.HermiteSeries(floats)  # float evaluation; exact coefficients live in poly_coeffs
    return Activation(name=name, fn=series, dfn=series.derivative(), poly_coeffs=exact,
                      description=description)


def _he_k(k: int) -> Activation:
    exact = tuple([0] * k + [1])
    return _hermite_activation(f"he{k}", exact, description=f"h_{k} = He_{k}/sqrt({k}!) (normalised Hermite)")


def _logcosh(z):
    """``log cosh z = |z| + log1p(exp(-2|z|)) - log 2`` (no overflow)."""
    a = np.abs(np.asarray(z, dtype=float))
    return a + np.log1p(np.exp(-2.0 * a)) - math.log(2.0)


def _builtin(name: str) -> Activation:
    if name == "relu":
        return Activation(
            "relu", lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float), (0.0,),
            exact_coeffs=_relu_exact, closed_coeffs=_relu_coeffs, second_moment_exact=0.5, homogeneity=1.0,
            description="max(z, 0); closed-form coefficients",
            sympy_builder=lambda: __import__("sympy").Max(_h.z_symbol(), 0),
        )
    if name == "abs":
        return Activation(
            "abs", np.abs, np.sign, (0.0,), exact_coeffs=_abs_exact, closed_coeffs=_abs_coeffs,
            second_moment_exact=1.0, homogeneity=1.0, description="|z|; closed-form coefficients",
            sympy_builder=lambda: __import__("sympy").Abs(_h.z_symbol()),
        )
    if name == "sign":
        return Activation(
            "sign", np.sign, lambda z: np.zeros_like(np.asarray(z, dtype=float)), (0.0,),
            exact_coeffs=_sign_exact, closed_coeffs=_sign_coeffs, second_moment_exact=1.0, homogeneity=0.0,
            description="sign(z); closed-form coefficients (derivative 0 a.e.)",
            sympy_builder=lambda: __import__("sympy").sign(_h.z_symbol()),
        )
    if name == "tanh":
        return Activation("tanh", np.tanh, lambda z: 1.0 - np.tanh(z) ** 2,  # sech^2 without cosh overflow
                          description="tanh(z); numeric coefficients",
                          sympy_builder=lambda: __import__("sympy").tanh(_h.z_symbol()))
    if name == "logcosh":
        return Activation("logcosh", _logcosh, np.tanh,
                          description="log cosh(z) (derivative tanh, bounded); numeric coefficients",
                          sympy_builder=lambda: __import__("sympy").log(__import__("sympy").cosh(_h.z_symbol())))
    if name == "erf":
        return Activation(
            "erf", lambda z: _erf(np.asarray(z) / math.sqrt(2.0)),
            lambda z: math.sqrt(2.0 / math.pi) * np.exp(-0.5 * np.asarray(z) ** 2),
            exact_coeffs=_erf_exact, closed_coeffs=_erf_coeffs, second_moment_exact=1.0 / 3.0,
            description="erf(z/sqrt(2)) (Saad-Solla convention); closed-form coefficients",
            sympy_builder=lambda: __import__("sympy").erf(_h.z_symbol() / __import__("sympy").sqrt(2)),
        )
    if name == "sigmoid":
        return Activation("sigmoid", _expit, lambda z: _expit(z) * (1.0 - _expit(z)),
                          description="1/(1+exp(-z)); numeric coefficients")
    if name == "softplus":
        return Activation("softplus", lambda z: np.logaddexp(0.0, z), _expit,
                          description="log(1+exp(z)); numeric coefficients")
    if name == "gelu":
        return Activation("gelu", lambda z: np.asarray(z) * _ndtr(z),
                          lambda z: _ndtr(z) + np.asarray(z) * _PHI0 * np.exp(-0.5 * np.asarray(z) ** 2),
                          description="z*Phi(z) (exact GELU); numeric coefficients")
    if name == "silu":
        return Activation("silu", lambda z: np.asarray(z) * _expit(z),
                          lambda z: _expit(z) * (1.0 + np.asarray(z) * (1.0 - _expit(z))),
                          description="z*sigmoid(z); numeric coefficients")
    if name == "identity":
        return _hermite_activation("identity", (0, 1), description="z (polynomial)")
    raise KeyError(name)


#: Registered names (``heK`` and the ``hermite:``/``poly:`` prefixes are patterns).
_NAMES = ("relu", "abs", "sign", "tanh", "logcosh", "erf", "sigmoid", "softplus", "gelu", "silu", "identity")
ACTIVATION_SPECS = _NAMES + ("heK", "hermite:c0,c1,...", "poly:<expr in z>")
_BUILTIN_CACHE: dict = {}
#: Parsed spec strings -> Activation (so repeated look-ups reuse the cached coefficients).
_SPEC_CACHE: dict = {}
_SPEC_CACHE_MAX = 4096
# ASCII digits only ([0-9], not \d, which also matches other scripts' digits)
_HE_RE = re.compile(r"^he([0-9]+)$")
_NUM_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")


def registered_names() -> tuple:
    """Names and spec patterns accepted by :func:`get_activation`.

    Returns
    -------
    tuple of str
        The registry names and spec patterns (``ACTIVATION_SPECS``).
    """
    return ACTIVATION_SPECS


def _parse_spec(spec: str) -> Activation:
    """Spec string -> Activation.  Text is parsed, never evaluated (see :mod:`popdyn._expr`)."""
    if len(spec) > MAX_SPEC_LENGTH:
        raise ValueError(f"`spec` has {len(spec)} characters, more than MAX_SPEC_LENGTH = {MAX_SPEC_LENGTH}; "
                         f"got {_echo(spec)}.")
    s = spec.strip()
    low = s.lower()
    if low in _NAMES:
        if low not in _BUILTIN_CACHE:
            _BUILTIN_CACHE[low] = _builtin(low)
        return _BUILTIN_CACHE[low]
    m = _HE_RE.match(low)
    if m:
        digits = m.group(1)
        k = int(digits) if len(digits) <= 6 else None  # no int() of a huge digit string
        if k is None or k > MAX_HE_DEGREE:
            got = k if k is not None else f"a {len(digits)}-digit number"
            raise ValueError(f"`spec` heK needs 0 <= K <= MAX_HE_DEGREE = {MAX_HE_DEGREE}, got K = {got}.")
        key = f"he{k}"
        if key not in _BUILTIN_CACHE:
            _BUILTIN_CACHE[key] = _he_k(k)
        return _BUILTIN_CACHE[key]
    if low.startswith("hermite:"):
        body = s.split(":", 1)[1]
        parts = [p.strip() for p in body.split(",")]
        if not body.strip() or any(not _NUM_RE.match(p) for p in parts):
            bad = [p for p in parts if not _NUM_RE.match(p)]
            raise ValueError(
                f"`spec` malformed spec {_echo(spec)}: `hermite:` takes comma-separated real numbers c0,c1,... "
                f"(normalised basis, lowest first); could not read {_echo(repr(bad[:2]))}."
            )
        if len(parts) > MAX_SERIES_DEGREE + 1:
            raise ValueError(f"`spec` malformed spec {_echo(spec)}: `hermite:` takes at most "
                             f"MAX_SERIES_DEGREE + 1 = {MAX_SERIES_DEGREE + 1} coefficients, got {len(parts)}.")
        vals = [float(p) for p in parts]
        if not all(math.isfinite(v) for v in vals):
            bad = next(p for p, v in zip(parts, vals) if not math.isfinite(v))
            raise ValueError(f"`spec` malformed spec {_echo(spec)}: coefficients must be finite floats, "
                             f"got {_echo(bad)}.")
        from fractions import Fraction

        import sympy

        exact = tuple(sympy.Rational(Fraction(p)) if "e" not in p.lower() else sympy.Rational(Fraction(float(p)))
                      for p in parts)
        name = "hermite:" + ",".join(parts)
        return _hermite_activation(name, exact, description="sum_k c_k h_k (normalised basis)")
    if low.startswith("poly:"):
        body = s.split(":", 1)[1].strip()
        if not body:
            raise ValueError(f"`spec` malformed spec {_echo(spec)}: `poly:` needs an expression in z, "
                             "e.g. poly:z**3-3*z.")
        expr, rational = _expr.parse_polynomial(body, name="spec", spec=s)
        try:
            return _polynomial_activation(f"poly:{body}", expr, expanded=not rational)
        except ValueError as exc:
            raise ValueError(f"`spec` {exc}") from exc
    raise ValueError(
        f"`spec`: unknown activation {_echo(spec[:20])}; valid names: {', '.join(ACTIVATION_SPECS)}."
    )


def get_activation(spec, *, breakpoints=(), derivative: Callable | None = None, name: str | None = None) -> Activation:
    r"""Return the :class:`Activation` for a name, spec string, callable or sympy expression.

    Parameters
    ----------
    spec : str, Activation, callable or sympy expression
        See the module docstring for the spec strings.  A callable must be vectorised
        over numpy arrays.  A sympy expression in ``z`` is exact when it is a
        polynomial and is lambdified otherwise.
    breakpoints : sequence of float
        For callables and non-polynomial expressions: where the function or a
        derivative jumps (needed for 1e-12 coefficients).
    derivative : callable, optional
        For callables: the derivative.  Default: central differences with step 1e-6
        (accurate to about 1e-9 away from breakpoints).
    name : str, optional
        Display name for callables.

    Returns
    -------
    Activation
        ``spec`` itself when it is already an :class:`Activation`; otherwise the parsed (and,
        for strings, cached) activation with its values, derivative and Hermite series.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones), malformed spec, ``poly:`` that
        is not a polynomial, non-finite coefficients.
    TypeError
        Anything else.

    Examples
    --------
    >>> act = get_activation("he3")
    >>> [round(float(c), 12) for c in act.coefficients(4)]
    [0.0, 0.0, 0.0, 1.0, 0.0]
    >>> round(float(get_activation("relu").coefficients(2)[0]), 12)
    0.398942280401
    """
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        key = spec.strip()
        act = _SPEC_CACHE.get(key)
        if act is None:
            act = _parse_spec(key)
            if len(_SPEC_CACHE) < _SPEC_CACHE_MAX:
                _SPEC_CACHE[key] = act
        return act
    mod = type(spec).__module__ or ""
    if mod.startswith("sympy"):
        return _from_sympy(spec, breakpoints=breakpoints, name=name)
    if callable(spec):
        return _from_callable(spec, breakpoints=breakpoints, derivative=derivative, name=name)
    raise TypeError(
        f"`spec` must be a name/spec string, an Activation, a callable or a sympy expression; got {spec!r}."
    )


def _from_callable(fn, *, breakpoints, derivative, name) -> Activation:
    if derivative is None:
        step = 1e-6

        def derivative(z, _f=fn):
            z = np.asarray(z, dtype=float)
            return (np.asarray(_f(z + step), dtype=float) - np.asarray(_f(z - step), dtype=float)) / (2 * step)

    nm = name or getattr(fn, "__name__", "callable")
    probe = np.linspace(-3, 3, 7)
    with np.errstate(all="ignore"):
        try:
            val = np.asarray(fn(probe), dtype=float)
        except Exception as exc:  # report what the user's function did
            raise TypeError(f"activation callable `{nm}` failed on a numpy array: {exc!r}.") from exc
    if val.shape != probe.shape:
        raise TypeError(f"activation callable `{nm}` must be vectorised: got shape {val.shape} for input {probe.shape}.")
    act = Activation(nm, fn, derivative, tuple(breakpoints), description="user callable")
    act.coefficients(0)  # validates square integrability early with a clear message
    return act


def _from_sympy(expr, *, breakpoints, name) -> Activation:
    import sympy

    z = _h.z_symbol()
    expr = sympy.sympify(expr, strict=True)  # safe: sympy objects only (str -> _parse_spec); strict refuses str
    for s in list(expr.free_symbols):
        if s.name == "z" and s != z:
            expr = expr.subs(s, z)
    free = expr.free_symbols - {z}
    if free:
        raise ValueError(f"activation expression must depend on `z` only; found {sorted(map(str, free))}.")
    try:
        sympy.Poly(expr, z)
        return _polynomial_activation(name or f"poly:{expr}", expr)
    except sympy.PolynomialError:
        pass
    fn = sympy.lambdify(z, expr, modules=["scipy", "numpy"])
    dfn = sympy.lambdify(z, sympy.diff(expr, z), modules=["scipy", "numpy"])
    bps = set(float(b) for b in breakpoints)
    for atom in expr.atoms(sympy.Abs, sympy.sign, sympy.Heaviside, sympy.Max, sympy.Min):
        for arg in atom.args:
            if arg.has(z):
                for root in sympy.solve(sympy.Eq(arg, 0) if not isinstance(atom, (sympy.Max, sympy.Min))
                                        else sympy.Eq(atom.args[0] - atom.args[1], 0), z):
                    if root.is_real:
                        bps.add(float(root))

    def vfn(x, _f=fn):
        return np.broadcast_to(np.asarray(_f(np.asarray(x, dtype=float)), dtype=float), np.shape(x))

    def vdfn(x, _f=dfn):
        return np.broadcast_to(np.asarray(_f(np.asarray(x, dtype=float)), dtype=float), np.shape(x))

    act = Activation(name or str(expr), vfn, vdfn, tuple(sorted(bps)), description=f"sympy {expr}",
                     sympy_builder=lambda e=expr: e)
    act.coefficients(0)
    return act
