r"""The statistical-query side of the additive model (arXiv 2406.11828): lower-bound scalings
and superorthogonal polynomials.

Oko, Song, Suzuki and Wu (COLT 2024, arXiv 2406.11828) compare the sample complexity of
gradient training on :math:`f_*(x) = M^{-1/2}\sum_m f_m(v_m\cdot x)` (links of information
exponent :math:`p`, :math:`M \asymp d^\gamma` near-orthogonal tasks) with statistical-query
lower bounds:

.. math::

    n_{\rm GD} \asymp M\, d^{\,p-1}, \qquad
    \tau^{-2}_{\rm CSQ} \gtrsim M\, d^{\,p/2},

both up to constants and polylogarithmic factors (abstract and summary of the paper; the
derivation of :math:`n_{\rm GD}` from a per-task signal :math:`M^{-1/2}` is in
``theory/oko2024/equations.md``).  The full-SQ bound :math:`(Md)^{\rho(p,q)}` rests on
*superorthogonal* link functions: label transformations :math:`y \mapsto y^j` that an SQ
learner may apply do not lower the information exponent.

Superorthogonality
------------------
A polynomial :math:`f` is superorthogonal of order :math:`J` for exponent :math:`p` when

.. math::

    E_{z\sim N(0,1)}\big[f(z)^j\, h_i(z)\big] = 0 \quad
    \text{for all } 1 \le i < p,\ 1 \le j \le J ,

with :math:`h_i = He_i/\sqrt{i!}` (``theory/oko2024/equations.md``; the definition is
reconstructed from the paper's description, which states it only in words).  :math:`J = 1`
is information exponent :math:`\ge p`.  For a polynomial the order is finite unless a
symmetry makes every such expectation vanish (an even :math:`f` with only odd :math:`i < p`,
i.e. :math:`p = 2`): a non-constant polynomial has generative exponent at most 2.

:func:`superorthogonality_order` decides the order exactly: with rational coefficients every
:math:`E[f^j h_i]` is an exact rational (Gaussian moments :math:`E z^{2m} = (2m-1)!!`).
Coefficients known only to a relative precision ``rtol`` (a printed table) determine
:math:`E[f^j h_i]` only up to its first-order perturbation
:math:`j\,\sqrt{E[f^{2j-2}h_i^2]}\;\|f\|\;\mathrm{rtol}` (Cauchy-Schwarz on
:math:`E[j f^{j-1}\,\delta f\,h_i]`); such a value is evaluated with :data:`MP_DIGITS`
digits and counts as zero below :data:`ZERO_MARGIN` times that bound.
:func:`second_power_certificate` gives an exact yes/no for the first non-trivial condition
:math:`E[f^2 h_i] = 0` at a given degree (a definite quadratic form has no non-zero root), and
:func:`find_superorthogonal` searches a given degree numerically (Gauss-Hermite quadrature,
exact for polynomial integrands, and least squares from random starts), then checks what it
found with :func:`superorthogonality_order`.

The full-SQ exponent :math:`\rho(p, q)` itself is not implemented: its definition in the
paper was not available to us, and a guessed formula would be a wrong number.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

from .._random import as_generator
from .._validation import check_int, check_real
from ..errors import NumericalError

__all__ = [
    "gradient_sample_complexity", "csq_lower_bound", "superorthogonality_order",
    "SuperorthogonalityResult", "second_power_certificate", "SecondPowerCertificate",
    "find_superorthogonal", "SuperorthogonalSearch", "MP_DIGITS", "COEFFICIENT_RTOL", "ZERO_MARGIN",
    "SOLVE_TOL", "SOLUTION_RTOL", "MAX_DEGREE", "MAX_POWER",
]

#: Working precision (significant digits) of :func:`superorthogonality_order` for coefficients
#: that are not rational: f^j of a degree-21 f has moments up to ~1e40 while the expectations
#: tested for zero are ~1e-15 of their scale, so double precision would lose them entirely.
MP_DIGITS = 60
#: Relative precision assigned to exact inputs whose power basis is irrational (normalised
#: Hermite coefficients given as integers/Fractions, sympy surds): what MP_DIGITS leaves after
#: the ~20 digits that cancellation in E[f^j h_i] can cost at degree <= MAX_DEGREE.
EXACT_INPUT_RTOL = 1e-35
#: Default relative precision of coefficients that are not exact (``rtol`` of
#: :func:`superorthogonality_order`): tables print 12 significant digits, i.e. a relative
#: rounding of up to 5e-13 per coefficient; 1e-11 covers that with a factor 20.
COEFFICIENT_RTOL = 1e-11
#: Safety factor on the first-order perturbation bound of a non-exact E[f^j h_i] (see
#: :func:`superorthogonality_order`): the bound is first order in the rounding, and 10 absorbs
#: the second-order terms many times over at rtol <= 1e-6.
ZERO_MARGIN = 10.0
#: :func:`find_superorthogonal` accepts a least-squares solution whose conditions E[f^j h_i]
#: (with E f^2 = 1) are all below this in absolute value; least squares reaches ~1e-13 where a
#: root exists, while the infimum stays ~1e-2 or more where none does (degree 15 for p = 3).
SOLVE_TOL = 1e-9
#: Relative precision assumed for the coefficients the search returns in its exact check:
#: they are double-precision least-squares roots, accurate to ~1e-14 relative.
SOLUTION_RTOL = 1e-12
#: Largest polynomial degree accepted (the power f^j of degree j*deg is expanded exactly).
MAX_DEGREE = 60
#: Largest power j examined by :func:`superorthogonality_order`.
MAX_POWER = 12


# --------------------------------------------------------------------------------------
# Scalings
# --------------------------------------------------------------------------------------
def _check_size(value, name: str, minimum: int = 1) -> int:
    return check_int(name, value, minimum=minimum)


def gradient_sample_complexity(M: int, d: int, p: int) -> float:
    r"""Samples for layer-wise SGD to learn the additive model: :math:`n \asymp M d^{p-1}`.

    arXiv 2406.11828 (abstract and summary: :math:`n = \tilde O(M d^{p-1})`), up to constants
    and polylogarithmic factors.  Heuristic derivation: one task's signal is :math:`M^{-1/2}`
    against :math:`O(1)` label noise, and a single-index problem with signal :math:`\lambda`
    needs :math:`d^{p-1}/\lambda^2` samples (Ben Arous, Gheissari, Jagannath 2021).

    >>> gradient_sample_complexity(10, 100, 3)
    100000.0
    """
    M, d, p = _check_size(M, "M"), _check_size(d, "d"), _check_size(p, "p")
    return float(M) * float(d) ** (p - 1)


def csq_lower_bound(M: int, d: int, p: int) -> float:
    r"""Correlational-SQ lower bound on the inverse squared tolerance: :math:`\tau^{-2} \gtrsim M d^{p/2}`.

    arXiv 2406.11828 (CSQ lower bound; summary of the paper), up to constants and
    polylogarithmic factors.  For :math:`p > 2` it lies below
    :func:`gradient_sample_complexity`, the gap between gradient training and CSQ methods.

    Parameters
    ----------
    M : int
        Number of tasks (``>= 1``).
    d : int
        Dimension (``>= 1``).
    p : int
        Information exponent of the tasks (``>= 1``).

    Returns
    -------
    float
        :math:`M d^{p/2}`.

    Examples
    --------
    >>> csq_lower_bound(10, 100, 4)
    100000.0
    """
    M, d, p = _check_size(M, "M"), _check_size(d, "d"), _check_size(p, "p")
    return float(M) * float(d) ** (p / 2)


# --------------------------------------------------------------------------------------
# Polynomials: input forms and exact Gaussian expectations
# --------------------------------------------------------------------------------------
def _he_power_coefficients(k: int) -> list[int]:
    """Power-basis coefficients of He_k (integers), lowest degree first."""
    prev, cur = [1], [0, 1]
    if k == 0:
        return prev
    for n in range(1, k):
        nxt = [0] * (n + 2)
        for m, a in enumerate(cur):
            nxt[m + 1] += a
        for m, a in enumerate(prev):
            nxt[m] -= n * a
        prev, cur = cur, nxt
    return cur


def _gauss_moment(n: int) -> int:
    """E z^n for z ~ N(0, 1): (n-1)!! for even n, 0 for odd n."""
    if n % 2:
        return 0
    out = 1
    for m in range(n - 1, 0, -2):
        out *= m
    return out


def _poly_mul(a: list, b: list) -> list:
    out = [a[0] * 0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        if x == 0:
            continue
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def _expectation(coeffs: list):
    return sum(c * _gauss_moment(n) for n, c in enumerate(coeffs) if c != 0)


def _from_hermite_basis(coefficients, name: str):
    """Normalised-Hermite coefficients (c_0, c_1, ...) -> power basis, exact or mpmath."""
    arr = list(coefficients)
    if not arr:
        raise ValueError(f"`{name}` must hold at least one Hermite coefficient, got an empty sequence.")
    exact = all(isinstance(c, (int, Fraction)) and not isinstance(c, bool) for c in arr)
    if not exact:
        try:
            vals = [float(c) for c in arr]
        except (TypeError, ValueError):
            raise TypeError(f"`{name}` must be a sequence of real numbers (normalised Hermite coefficients "
                            f"c_k = E[f h_k], lowest degree first).") from None
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"`{name}` must be finite, got {arr!r}.")
    import mpmath

    power: list = [0] * len(arr)
    for k, c in enumerate(arr):
        if c == 0:
            continue
        he = _he_power_coefficients(k)
        # h_k = He_k / sqrt(k!): irrational for k >= 2, so the power basis is in mpmath
        if exact and k < 2:
            scale = Fraction(c)
        else:
            num = mpmath.mpf(c.numerator) / c.denominator if isinstance(c, Fraction) else mpmath.mpf(c)
            scale = num / mpmath.sqrt(mpmath.factorial(k))
        for m, a in enumerate(he):
            power[m] = power[m] + scale * a
    rational = exact and all(isinstance(x, (int, Fraction)) for x in power)
    return power, rational, exact


def _from_sympy(expr, name: str):
    import sympy

    free = sorted(expr.free_symbols, key=str)
    if len(free) > 1:
        raise ValueError(f"`{name}` must be a polynomial in one variable, got {len(free)} symbols: "
                         f"{', '.join(map(str, free))}.")
    z = free[0] if free else sympy.Symbol("z")
    try:
        poly = sympy.Poly(expr, z)
    except sympy.PolynomialError:
        raise ValueError(f"`{name}` must be a polynomial, got {str(expr)[:60]!r}.") from None
    coeffs = list(reversed(poly.all_coeffs()))
    if all(c.is_Rational for c in coeffs):
        return [Fraction(int(c.p), int(c.q)) for c in coeffs], True, True
    import mpmath

    try:
        return [mpmath.mpf(sympy.N(c, MP_DIGITS + 10)) for c in coeffs], False, True
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must have real coefficients, got {str(expr)[:60]!r}.") from None


def _polynomial(f, name: str):
    """Accept a ``poly:`` spec, a sympy expression or normalised Hermite coefficients."""
    import mpmath

    with mpmath.workdps(MP_DIGITS):
        return _polynomial_at_precision(f, name)


def _polynomial_at_precision(f, name: str):
    if isinstance(f, str):
        from .._expr import parse_polynomial

        if not f.startswith("poly:"):
            raise ValueError(f"`{name}` as text must be a 'poly:' spec such as 'poly:z**3 - 3*z', got {f[:40]!r}.")
        expr, _ = parse_polynomial(f[len("poly:"):], name=name, spec=f)
        power, rational, exact = _from_sympy(expr, name)
    elif hasattr(f, "free_symbols"):
        power, rational, exact = _from_sympy(f, name)
    else:
        if isinstance(f, np.ndarray):
            f = f.tolist()
        if not hasattr(f, "__iter__"):
            raise TypeError(f"`{name}` must be a 'poly:' spec, a sympy polynomial or a sequence of normalised "
                            f"Hermite coefficients, got {type(f).__name__}.")
        power, rational, exact = _from_hermite_basis(f, name)
    while len(power) > 1 and power[-1] == 0:
        power.pop()
    if len(power) - 1 > MAX_DEGREE:
        raise ValueError(f"`{name}` has degree {len(power) - 1}, more than MAX_DEGREE = {MAX_DEGREE}.")
    if all(c == 0 for c in power):
        raise ValueError(f"`{name}` is the zero polynomial; superorthogonality needs a non-zero f.")
    return power, rational, exact


def _parity(power) -> str | None:
    if all(c == 0 for n, c in enumerate(power) if n % 2):
        return "even"
    if all(c == 0 for n, c in enumerate(power) if n % 2 == 0):
        return "odd"
    return None


@dataclasses.dataclass(frozen=True)
class SuperorthogonalityResult:
    r"""Largest :math:`J` with :math:`E[f^j h_i] = 0` for :math:`1 \le i < p,\ j \le J`.

    Attributes
    ----------
    order : int or float
        :math:`J` (0: :math:`f` has information exponent below :math:`p`); ``math.inf`` when a
        parity argument makes every condition hold (even :math:`f`, :math:`p = 2`).
    p : int
        The exponent tested.
    exact : bool
        True when every expectation is an exact rational (rational power-basis coefficients);
        otherwise values are evaluated with :data:`MP_DIGITS` digits and the zero test allows
        for the input precision (``rtol``, or :data:`EXACT_INPUT_RTOL` for exact surd inputs).
    violation : tuple or None
        ``(j, i, value, ratio)`` of the first non-zero :math:`E[f^j h_i]` (``ratio`` = value over
        :math:`\sqrt{E f^{2j}}`); None when none up to ``max_power`` (then ``order`` is a lower
        bound unless it is infinite).
    values : dict
        ``(j, i) -> E[f^j h_i]`` for every pair examined (float).
    max_power : int
        Largest :math:`j` examined.
    """

    order: float
    p: int
    exact: bool
    violation: tuple | None
    values: dict
    max_power: int

    @property
    def is_lower_bound(self) -> bool:
        """True when no violation was found up to ``max_power`` and the order is finite."""
        return self.violation is None and math.isfinite(self.order)


def superorthogonality_order(f, p: int, *, max_power: int = 6,
                             rtol: float = COEFFICIENT_RTOL) -> SuperorthogonalityResult:
    r"""The order :math:`J` to which ``f`` is superorthogonal for exponent ``p`` (exact).

    Parameters
    ----------
    f : str, sympy expression or sequence
        A ``poly:`` spec (``"poly:z**3 - 3*z"``), a sympy polynomial in one variable, or the
        normalised Hermite coefficients :math:`c_k = E[f h_k]`, lowest degree first
        (integers/``Fraction`` are exact; floats are exact binary values evaluated with
        :data:`MP_DIGITS` digits).
    p : int
        Information exponent to protect, :math:`p \ge 2`.
    max_power : int
        Largest power :math:`j` examined (``1 <= max_power <= MAX_POWER``).
    rtol : float
        Relative precision of non-exact coefficients (ignored for exact ones); a value is zero
        when below :data:`ZERO_MARGIN` times its first-order perturbation bound.

    Returns
    -------
    SuperorthogonalityResult

    Examples
    --------
    >>> superorthogonality_order("poly:z**3 - 3*z", 3).order      # He_3: E[He_3^2 h_2] != 0
    1
    >>> superorthogonality_order("poly:z**2 - 1", 2).order        # even: every E[f^j h_1] = 0
    inf
    """
    p = check_int("p", p, minimum=2)
    max_power = check_int("max_power", max_power, minimum=1, maximum=MAX_POWER)
    rtol = check_real("rtol", rtol, lower=0.0, upper=1e-3, lower_open=True)
    power, rational, exact = _polynomial(f, "f")
    import mpmath

    if exact and not rational:      # exact input with surds (sqrt(k!)): only the working precision limits it
        rtol = EXACT_INPUT_RTOL

    parity = _parity(power)
    if parity == "even" and p == 2:
        return SuperorthogonalityResult(math.inf, p, rational, None, {}, max_power)
    he = {i: _he_power_coefficients(i) for i in range(1, p)}
    norm_i = {i: math.factorial(i) for i in range(1, p)}
    values: dict = {}
    with mpmath.workdps(MP_DIGITS):
        one = Fraction(1) if rational else mpmath.mpf(1)
        f_norm = mpmath.sqrt(_expectation(_poly_mul(power, power)))
        fj_prev, fj = [one], [one]
        for j in range(1, max_power + 1):
            fj_prev, fj = fj, _poly_mul(fj, power)
            for i in range(1, p):
                raw = _expectation(_poly_mul(fj, he[i]))          # E[f^j He_i]
                value = mpmath.mpf(raw.numerator) / raw.denominator if rational else raw
                value /= mpmath.sqrt(norm_i[i])                   # E[f^j h_i]
                if rational:
                    is_zero = raw == 0
                else:
                    fh = _poly_mul(fj_prev, he[i])                # f^(j-1) He_i
                    bound = j * mpmath.sqrt(_expectation(_poly_mul(fh, fh)) / norm_i[i]) * f_norm * rtol
                    is_zero = abs(value) <= ZERO_MARGIN * bound
                values[(j, i)] = float(value)
                if not is_zero:
                    scale = mpmath.sqrt(_expectation(_poly_mul(fj, fj)))
                    ratio = float(abs(value) / scale)
                    return SuperorthogonalityResult(j - 1, p, rational, (j, i, float(value), ratio), values,
                                                    max_power)
    return SuperorthogonalityResult(max_power, p, rational, None, values, max_power)


# --------------------------------------------------------------------------------------
# The first non-trivial condition, E[f^2 h_i] = 0, decided exactly
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SecondPowerCertificate:
    r"""Whether some non-zero ``f`` in the span can have :math:`E[f^2 h_i] = 0` for one ``i``.

    Attributes
    ----------
    degree, p, i : int
        The span is :math:`\{h_k : p \le k \le \text{degree}\}` (of the given parity).
    parity : str
        ``"odd"``, ``"even"`` or ``"any"``.
    definite : bool
        True when the quadratic form :math:`c \mapsto E[f^2 h_i]` is (positive or negative)
        definite on the span: then no non-zero ``f`` satisfies the condition (exact).
    smallest_eigenvalue, largest_eigenvalue : float
        Of the form in the orthonormal basis :math:`h_k` (for reading, not for the decision).
    """

    degree: int
    p: int
    i: int
    parity: str
    definite: bool
    smallest_eigenvalue: float
    largest_eigenvalue: float

    @property
    def reachable(self) -> bool:
        """True when a non-zero polynomial of the span satisfies :math:`E[f^2 h_i] = 0`."""
        return not self.definite


def _span(p: int, degree: int, parity: str) -> list[int]:
    ks = list(range(p, degree + 1))
    if parity == "odd":
        ks = [k for k in ks if k % 2]
    elif parity == "even":
        ks = [k for k in ks if k % 2 == 0]
    return ks


def _check_parity(parity) -> str:
    if parity not in ("odd", "even", "any"):
        raise ValueError(f"`parity` must be one of 'odd', 'even', 'any', got {parity!r}.")
    return parity


def second_power_certificate(p: int, degree: int, *, i: int = 2, parity: str = "odd") -> SecondPowerCertificate:
    r"""Decide exactly whether :math:`E[f^2 h_i] = 0` has a non-zero solution of the given degree.

    The condition is a quadratic form in the coefficients; in the basis :math:`He_k` its matrix
    :math:`B_{kl} = E[He_k He_l He_i]` has integer entries (a diagonal rescaling of the
    orthonormal form, so definiteness is the same), and a definite form has no non-zero root
    while an indefinite one has.  Definiteness is decided by exact rational Cholesky (sympy).

    Examples
    --------
    >>> second_power_certificate(3, 15).reachable      # odd f of IE 3, degree 15: impossible
    False
    >>> second_power_certificate(3, 17).reachable
    True
    """
    p = check_int("p", p, minimum=2)
    degree = check_int("degree", degree, minimum=p, maximum=MAX_DEGREE)
    i = check_int("i", i, minimum=1)
    if i >= p:
        raise ValueError(f"`i` must satisfy 1 <= i < p = {p} (the orders superorthogonality protects), got {i}.")
    parity = _check_parity(parity)
    ks = _span(p, degree, parity)
    if not ks:
        raise ValueError(f"no Hermite degree k with {p} <= k <= {degree} has parity {parity!r}; "
                         f"raise `degree` or change `parity`.")
    import sympy

    he = {k: _he_power_coefficients(k) for k in set(ks) | {i}}
    B = sympy.zeros(len(ks), len(ks))
    for a, k in enumerate(ks):
        for b, l in enumerate(ks[a:], start=a):
            val = _expectation(_poly_mul(_poly_mul(he[k], he[l]), he[i]))
            B[a, b] = B[b, a] = sympy.Integer(val)
    definite = bool(B.is_positive_definite or (-B).is_positive_definite)
    scale = np.array([1 / math.sqrt(math.factorial(k)) for k in ks]) / math.sqrt(math.factorial(i))
    eig = np.linalg.eigvalsh(np.array(B.tolist(), dtype=float) * np.outer(scale, scale) * math.sqrt(math.factorial(i)) ** 2
                             / math.sqrt(math.factorial(i)))
    return SecondPowerCertificate(degree, p, i, parity, definite, float(eig[0]), float(eig[-1]))


# --------------------------------------------------------------------------------------
# Numerical search
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SuperorthogonalSearch:
    r"""Outcome of :func:`find_superorthogonal`.

    Attributes
    ----------
    found : bool
        A unit-norm polynomial met every condition to :data:`SOLVE_TOL` and its exact check
        (:func:`superorthogonality_order` with ``rtol = SOLUTION_RTOL``) confirms order
        :math:`\ge J`.
    coefficients : numpy.ndarray
        Normalised Hermite coefficients (lowest degree first, length ``degree + 1``) of the
        best polynomial found, :math:`E f^2 = 1`, sign fixed so the lowest non-zero one is > 0.
    residual : float
        Largest :math:`|E[f^j h_i]|` (and :math:`|E f^2 - 1|`) at the best polynomial.
    check : SuperorthogonalityResult
        The exact check of ``coefficients``.
    p, J, degree : int
    parity : str
    restarts : int
        Random starts used.
    """

    found: bool
    coefficients: np.ndarray
    residual: float
    check: SuperorthogonalityResult
    p: int
    J: int
    degree: int
    parity: str
    restarts: int


def _conditions(p: int, J: int, ks: list, parity: str) -> list:
    """The (j, i) pairs that are not identically zero by parity."""
    pairs = []
    for j in range(2, J + 1):
        for i in range(1, p):
            if parity in ("odd", "even"):
                f_sign = 1 if parity == "even" else (-1) ** j
                if f_sign * (-1) ** i == -1:       # f^j h_i odd: expectation is 0 identically
                    continue
            pairs.append((j, i))
    return pairs


def find_superorthogonal(p: int, J: int, degree: int, *, parity: str = "odd", restarts: int = 20,
                         rng=None) -> SuperorthogonalSearch:
    r"""Search a polynomial of the given degree that is superorthogonal of order ``J`` for ``p``.

    Unknowns: coefficients :math:`c_k` on :math:`h_k`, :math:`p \le k \le` ``degree`` (of the
    given parity), so :math:`E[f h_i] = 0` for :math:`i < p` holds by construction.
    Conditions :math:`E[f^j h_i] = 0` (:math:`2 \le j \le J`, :math:`i < p`; those that vanish by
    parity are dropped) and :math:`E f^2 = 1` are solved by ``scipy.optimize.least_squares`` from ``restarts`` random unit starts; the
    expectations use Gauss-Hermite quadrature with enough nodes to be exact for the degree
    :math:`J\cdot` ``degree`` + p integrands.  The best solution is then checked exactly.

    Parameters
    ----------
    p : int
        Information exponent (``>= 2``): :math:`E[f h_i] = 0` for :math:`i < p`.
    J : int
        Superorthogonality order sought, ``1 <= J <=`` :data:`MAX_POWER`.
    degree : int
        Largest Hermite degree of :math:`f`, ``p <= degree <=`` :data:`MAX_DEGREE`.
    parity : {"odd", "even", "any"}, optional
        Parity of the degrees used (default ``"odd"``); at least one degree in
        ``[p, degree]`` must have it.
    restarts : int, optional
        Random unit starts of the least-squares solve (``>= 1``, default 20); the search stops
        at the first that meets every condition to :data:`SOLVE_TOL`.
    rng : int, Generator or None, optional
        Seed of the starts.

    Returns
    -------
    SuperorthogonalSearch
        Whether a polynomial was found, its normalised coefficients, the residual, and the
        exact check.

    Raises
    ------
    NumericalError
        The solve met the conditions but the exact check disagrees (quadrature too coarse).

    Examples
    --------
    >>> res = find_superorthogonal(3, 2, 15, restarts=4, rng=0)   # impossible at degree 15
    >>> res.found
    False
    """
    p = check_int("p", p, minimum=2)
    J = check_int("J", J, minimum=1, maximum=MAX_POWER)
    degree = check_int("degree", degree, minimum=p, maximum=MAX_DEGREE)
    restarts = check_int("restarts", restarts, minimum=1)
    parity = _check_parity(parity)
    ks = _span(p, degree, parity)
    if not ks:
        raise ValueError(f"no Hermite degree k with {p} <= k <= {degree} has parity {parity!r}; "
                         f"raise `degree` or change `parity`.")
    gen = as_generator(rng)
    from numpy.polynomial.hermite_e import hermegauss
    from scipy.optimize import least_squares

    from ..hermite import h_values

    pairs = _conditions(p, J, ks, parity)
    n_nodes = (2 * J * degree + p) // 2 + 2
    x, w = hermegauss(n_nodes)
    w = w / math.sqrt(2 * math.pi)
    H = h_values(x, max(degree, p)).T              # (n_nodes, degree+1)
    basis = H[:, ks]

    def residuals(c):
        f = basis @ c
        return np.array([float(w @ f**2) - 1.0] + [float(w @ (f**j * H[:, i])) for j, i in pairs])

    def jacobian(c):
        f = basis @ c
        rows = [2 * (w * f) @ basis] + [j * (w * f ** (j - 1) * H[:, i]) @ basis for j, i in pairs]
        return np.array(rows)

    best_c, best_r = None, math.inf
    for _ in range(restarts):
        c0 = gen.standard_normal(len(ks))
        c0 /= np.linalg.norm(c0)
        sol = least_squares(residuals, c0, jac=jacobian, xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=2000)
        r = float(np.max(np.abs(sol.fun)))
        if r < best_r:
            best_c, best_r = sol.x, r
        if best_r <= SOLVE_TOL:
            break
    coeffs = np.zeros(degree + 1)
    coeffs[ks] = best_c / math.sqrt(float(w @ (basis @ best_c) ** 2))
    lead = coeffs[np.flatnonzero(np.abs(coeffs) > 0)[0]]
    coeffs *= np.sign(lead)
    check = superorthogonality_order(coeffs.tolist(), p, max_power=min(J + 1, MAX_POWER), rtol=SOLUTION_RTOL)
    found = best_r <= SOLVE_TOL and check.order >= J
    if best_r <= SOLVE_TOL and check.order < J:
        raise NumericalError(f"find_superorthogonal: the search met every condition to {best_r:.1e} but the exact "
                             f"check gives order {check.order} < J = {J} (violation {check.violation}); "
                             f"the quadrature with {n_nodes} nodes is not accurate enough at degree {degree}.")
    return SuperorthogonalSearch(found, coeffs, best_r, check, p, J, degree, parity, restarts)
