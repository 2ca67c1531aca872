r"""Hermite chaos projections of composite functions :math:`h = g(p(x))`, :math:`x \sim N(0, I)`.

The Wiener chaos of degree :math:`j` is the span of the products
:math:`H_\alpha(x) = \prod_i h_{\alpha_i}(x_i)` with :math:`|\alpha| = j` (orthonormal Hermite
polynomials :math:`h_n = He_n/\sqrt{n!}`, the package convention), and :math:`P_j` is the
orthogonal projection onto it.  This module computes, exactly, the chaos norms
:math:`\|P_j h\|^2` and the overlaps :math:`\langle P_j h, P_j p\rangle = E[h\,P_j p]` of
:math:`h = g \circ p` for a polynomial :math:`g` and a *feature* :math:`p` that is a sum of
independent pieces, and estimates them by Monte Carlo (with standard errors) for anything else.

Features
--------
A :class:`Feature` of size :math:`L` is

.. math::

    p_L(x) = L^{-1/2} \sum_{t} w_t \sum_{i=1}^{m_t L} q_t\big(x^{(t,i)}\big),

a sum over piece types :math:`t` (a :class:`Piece`: polynomial :math:`q_t`, weight :math:`w_t`,
count :math:`m_t`) of :math:`m_t L` copies, each on its own block :math:`x^{(t,i)}` of
coordinates (one coordinate for a polynomial in ``z``, several for a polynomial in given
``variables``).  The standard feature of arXiv 2311.13774 is one type with :math:`q = h_k`:
:math:`p = L^{-1/2}\sum_{l=1}^L h_k(x_l)`, built by ``feature(k, L)``.  ``L = 1`` with explicit
weights and counts is any finite sum :math:`\sum_l \lambda_l q_l(x_l)` of independent pieces.
``L`` is a positive integer or a sympy symbol; either way the results are known as exact
functions of :math:`L` (sums of powers :math:`L^{e}`, :math:`e \in \tfrac12\mathbb Z`), so the
rate in :math:`L` is read off the exact expression (:func:`leading_order`), never fitted.

Method (exact route)
--------------------
With :math:`x_\rho = \rho x + \sqrt{1-\rho^2}\,x'` (:math:`x'` an independent copy), Mehler's
formula :math:`E[f(x) u(x_\rho)] = \sum_j \rho^j \langle P_j f, P_j u\rangle` gives

.. math::

    \|P_j h\|^2 = [\rho^j]\, E[g(A)\,g(B)], \qquad
    E[h\,P_j p] = [\rho^j]\, E[g(A)\,B], \qquad A = p(x),\; B = p(x_\rho).

:math:`E[g(A)g(B)] = \sum_{a,b} \gamma_a \gamma_b E[A_0^a B_0^b]` after centring
(:math:`A = \mu + A_0`, :math:`g(\mu + y) = \sum_a \gamma_a y^a`).  The joint moments of the
centred pair are polynomials in :math:`\rho` obtained by recursion, with no sampling:

1. for one piece, :math:`E[\tilde q(x)^a \tilde q(y)^b] = \sum_\alpha \alpha!\,F_a(\alpha)F_b(\alpha)\,\rho^{|\alpha|}`,
   where :math:`F_a(\alpha)` are the :math:`He_\alpha` coefficients of :math:`\tilde q^a` (exact
   integer tables :math:`z^n = \sum_i \frac{n!}{2^i i!(n-2i)!} He_{n-2i}`);
2. the joint cumulants of the piece follow from its moments by the bivariate recursion
   :math:`m_{a+1,b} = \sum_{i\le a, j \le b}\binom{a}{i}\binom{b}{j}\kappa_{i+1,j}\,m_{a-i,b-j}`;
3. cumulants of independent sums add: :math:`\kappa_{a,b}(A,B) = L^{1-(a+b)/2}\sum_t m_t w_t^{a+b}\kappa^{(t)}_{a,b}`
   (this is what makes :math:`L` symbolic for free);
4. the moments of :math:`(A_0, B_0)` follow from the cumulants by the same recursion.

All arithmetic is exact, in the smallest field containing the coefficients (rationals, or an
algebraic extension such as :math:`\mathbb{Q}(\sqrt 6)` for :math:`h_3`), via sympy's sparse
polynomial rings; :math:`L^{-1/2}` and :math:`L^{1/2}` are carried as two extra generators.

Monte Carlo route
-----------------
For any callable :math:`h` (or :math:`g`, :math:`q` given as callables),
:func:`chaos_norms_mc` estimates :math:`\|P_j h\|^2 = \sum_{|\alpha| = j} E[h H_\alpha]^2`
without bias by the U-statistic
:math:`\big(\|\sum_i Y_i\|^2 - \sum_i \|Y_i\|^2\big)/(n(n-1))`, :math:`Y_i = h(x_i)\,H_{|\alpha|=j}(x_i)`,
in independent batches; the standard error is the spread of the batch estimates.

References
----------
Z. Wang, E. Nichani, J. D. Lee, "Learning Hierarchical Polynomials with Three-Layer Neural
Networks", arXiv 2311.13774 (ICLR 2024): the approximate Stein lemma (the paper's Lemma 2),
:math:`P_k(g\circ p) \approx E_{z\sim N(0,1)}[g'(z)]\,p` and :math:`P_{<k}(g \circ p) \approx 0` for
:math:`p` a balanced sum of degree-:math:`k` pieces; its experiments use
:math:`p = \sum_i \lambda_i h_3(x_i)`.  Mehler's formula and the correlation identity are in
``theory/CONVENTIONS.md``.

Examples
--------
>>> res = stein_lemma("poly:z**3", 3, None)        # p = L^(-1/2) sum_l h_3(x_l), L symbolic
>>> res.c_star, res.err2, res.low_mass
(3, 8100/L**2, 486/L**2)
>>> res.err2_regime
'O(1/L^2)'
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import warnings
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from ._random import as_generator, seed_record
from ._validation import check_int

__all__ = [
    "Piece",
    "Feature",
    "feature",
    "ChaosProjection",
    "chaos_projection",
    "SteinLemma",
    "stein_lemma",
    "leading_order",
    "polynomial_chaos_norms",
    "chaos_basis",
    "ChaosEstimate",
    "chaos_norms_mc",
    "SteinLemmaMC",
    "stein_lemma_mc",
    "ZeroSteinCoefficientWarning",
    "L_symbol",
    "MAX_OUTER_DEGREE",
    "MAX_FEATURE_DEGREE",
    "MAX_CHAOS_DEGREE",
    "MAX_BLOCK_DIM",
    "MAX_PIECE_TYPES",
    "MAX_FIELD_DEGREE",
    "MAX_EXPANSION_TERMS",
    "MAX_MC_BASIS",
    "MAX_MC_DIM",
]

#: Highest degree of the outer polynomial g.  The moment tables grow like deg(g)^4 products
#: of polynomials in rho; measured (2 busy cores, sympy 1.14): deg g = 10 with k = 2 takes
#: 3-4 s (even k keeps odd cumulants, so more powers of L), with k = 3 1.5 s; deg g = 6 with k = 6 ~1 s.
MAX_OUTER_DEGREE = 10
#: Highest degree of a piece polynomial q (the chaos degree k of the standard feature).
MAX_FEATURE_DEGREE = 12
#: Highest chaos degree deg(g) * deg(p) of h = g(p): bounds the degree in rho of every
#: polynomial the exact route forms.  Measured worst cases within all the caps (2 busy cores):
#: deg g = 9, k = 4: 2-6 s; a 3-coordinate block piece of degree 3 under deg g = 10: 6-9 s;
#: six piece types h_1..h_6 (field Q(sqrt 2, sqrt 3, sqrt 5)) under deg g = 6: 4 s
#: (benchmarks/bench_chaos.py).
MAX_CHAOS_DEGREE = 36
#: Most coordinates in one block of a multivariate piece: the powers q^a of a block
#: polynomial have up to C(a k + m, m) monomials in m variables.
MAX_BLOCK_DIM = 3
#: Most piece types in one feature (each adds one cumulant table).
MAX_PIECE_TYPES = 8
#: Largest degree over the rationals of the number field of the coefficients (bounded before
#: the field is built: prod over primes P of the lcm of the root orders of the radicals whose
#: radicand P divides).  Field arithmetic slows with the degree; measured: Q(sqrt 2, sqrt 3,
#: sqrt 5) (degree 8) with deg g = 10, k = 3 takes 2.5 s, while four square roots (degree 16)
#: already take 6 s at deg g = 3.  The h_k normalisations sqrt(k!) of k <= 6 fit (primes 2, 3, 5).
MAX_FIELD_DEGREE = 8
#: Most monomials of the expanded polynomial in :func:`polynomial_chaos_norms`, bounded before
#: expanding (the exact route needs no such cap: a block power q^a has at most C(36 + 3, 3) = 9139
#: monomials within MAX_CHAOS_DEGREE and MAX_BLOCK_DIM).  Measured: 1771 monomials in 7
#: variables (h = g(p), k = 4, L = 7) take ~1 s.
MAX_EXPANSION_TERMS = 20_000
#: Most basis functions sum_j C(dim + j - 1, j) of the Monte Carlo projections (memory and
#: time are n_samples times this).
MAX_MC_BASIS = 20_000
#: Most coordinates x of a Monte Carlo estimate.
MAX_MC_DIM = 10_000
#: Floats in one Monte Carlo chunk of basis values (16 MB): bounds memory whatever n_samples.
MC_CHUNK_FLOATS = 2_000_000
#: Default Monte Carlo size and number of independent batches (the standard error is the
#: spread of the batch estimates; 100 batches give it to about 7 % relative accuracy for light
#: tails -- polynomials of Gaussians of high degree have heavy tails, and then worse).
DEFAULT_MC_SAMPLES = 200_000
DEFAULT_MC_BATCHES = 100
#: |E[g'(z)]| below which a callable g counts as E[g'] = 0 in :func:`stein_lemma_mc`: the
#: quadrature of popdyn.hermite.hermite_coefficients is accurate to 1e-12 (QUAD_TOL).
_QUADRATURE_ZERO = 1e-11
#: Characters of a user value echoed in an error message.
_ECHO = 60
#: The degree caps by name (error messages name the cap).
_DEGREE_LIMITS = {"MAX_OUTER_DEGREE": MAX_OUTER_DEGREE, "MAX_FEATURE_DEGREE": MAX_FEATURE_DEGREE}


class ZeroSteinCoefficientWarning(UserWarning):
    r"""The outer link has :math:`E[g'(z)] = 0` (first Hermite coefficient zero): the approximate
    Stein lemma then gives :math:`P_k(g \circ p) \to 0`, so the degree-k projection carries no
    information about the feature :math:`p` (arXiv 2311.13774 assumes :math:`E[g'(z)] \neq 0`)."""


def _echo(value) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO else text[: _ECHO - 3] + "..."


def L_symbol():
    """The sympy symbol ``L`` (positive integer) used for a symbolic feature size."""
    import sympy

    return sympy.Symbol("L", positive=True, integer=True)


# --------------------------------------------------------------------------------------
# exact tables
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _power_to_he(n: int) -> tuple:
    r"""``row[j]`` = coefficient of :math:`He_j` in :math:`z^n`: :math:`n!/(2^i i!\,j!)`, :math:`n = j + 2i`."""
    return tuple((n - 2 * i, math.factorial(n) // (2 ** i * math.factorial(i) * math.factorial(n - 2 * i)))
                 for i in range(n // 2 + 1))


def _gaussian_moment(n: int) -> int:
    """:math:`E[z^n]` for :math:`z \\sim N(0, 1)`: ``(n-1)!!`` for even n, else 0."""
    return 0 if n % 2 else math.factorial(n) // (2 ** (n // 2) * math.factorial(n // 2))


# --------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------
def _exact_number(name: str, value, *, nonzero: bool = False):
    """An exact real sympy number from an int, Fraction, float (shortest rational) or sympy constant."""
    import sympy

    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    if isinstance(value, numbers.Integral):
        out = sympy.Integer(int(value))
    elif isinstance(value, Fraction):
        out = sympy.Rational(value.numerator, value.denominator)
    elif isinstance(value, numbers.Real) and not isinstance(value, sympy.Basic):
        if not math.isfinite(float(value)):
            raise ValueError(f"`{name}` must be finite, got {value!r}.")
        out = sympy.nsimplify(float(value), rational=True)  # safe: a float, never text
    elif isinstance(value, sympy.Basic):
        if value.free_symbols:
            raise ValueError(f"`{name}` must be a constant, got {_echo(value)} with symbols "
                             f"{sorted(map(str, value.free_symbols))}.")
        if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo) or not value.is_real:
            raise ValueError(f"`{name}` must be a finite real constant, got {_echo(value)}.")
        out = sympy.nsimplify(value, rational=True) if value.has(sympy.Float) else value
    else:
        raise TypeError(f"`{name}` must be a real number (int, Fraction, float or sympy constant), "
                        f"got {_echo(value)} ({type(value).__name__}).")
    if nonzero and out == 0:
        raise ValueError(f"`{name}` must be non-zero, got {value!r}.")
    return out


def _degree_bound(expr, gens, depth: int = 0):
    """Upper bound of the total degree of ``expr`` in ``gens`` without expanding (None: not a polynomial)."""
    if depth > 200:
        raise ValueError("expression nested deeper than 200 levels.")
    if expr in gens:
        return 1
    if not expr.has(*gens):
        return 0
    if expr.is_Add:
        bounds = [_degree_bound(a, gens, depth + 1) for a in expr.args]
        return None if any(b is None for b in bounds) else max(bounds)
    if expr.is_Mul:
        bounds = [_degree_bound(a, gens, depth + 1) for a in expr.args]
        return None if any(b is None for b in bounds) else sum(bounds)
    if expr.is_Pow:
        base, ex = expr.args
        if ex.is_Integer and ex >= 0 and not ex.has(*gens):
            b = _degree_bound(base, gens, depth + 1)
            return None if b is None else b * int(ex)
    return None


def _terms_bound(expr, gens) -> int:
    """Upper bound of the number of monomials of ``expr`` once expanded (``expr`` a polynomial)."""
    if expr in gens or not expr.has(*gens):
        return 1
    if expr.is_Add:
        return sum(_terms_bound(a, gens) for a in expr.args)
    if expr.is_Mul:
        return math.prod(_terms_bound(a, gens) for a in expr.args)
    if expr.is_Pow:
        t, n = _terms_bound(expr.args[0], gens), int(expr.args[1])
        return 1 if t <= 1 else math.comb(t + n - 1, n)
    return 1


def _check_variables(variables) -> tuple:
    import sympy

    if isinstance(variables, sympy.Symbol):
        variables = (variables,)
    try:
        variables = tuple(variables)
    except TypeError:
        raise TypeError(f"`variables` must be a sequence of sympy Symbols, got {_echo(variables)}.") from None
    if not variables or not all(isinstance(v, sympy.Symbol) for v in variables):
        raise TypeError(f"`variables` must be a non-empty sequence of sympy Symbols, got {_echo(variables)}.")
    if len(set(v.name for v in variables)) != len(variables):
        raise ValueError(f"`variables` must be distinct, got {_echo(variables)}.")
    if len(variables) > MAX_BLOCK_DIM:
        raise ValueError(f"`variables`: a block has at most MAX_BLOCK_DIM = {MAX_BLOCK_DIM} coordinates, "
                         f"got {len(variables)}.")
    return variables


def _h_k_expr(k: int):
    import sympy

    from .hermite import z_symbol

    return sympy.expand(sympy.hermite_prob(k, z_symbol()) / sympy.sqrt(sympy.factorial(k)))


def _coerce_polynomial(name: str, value, *, variables=None, limit: str, allow_int: bool = False):
    """A sympy ``Poly`` in ``z`` (or in ``variables``) with real constant coefficients.

    Accepted: a sympy expression; a spec string of :func:`popdyn.activations.get_activation`
    that is a polynomial (``"poly:z**3 - 3*z"``, ``"he3"``, ``"hermite:0,1,0.5"``; parsed by the
    safe grammar, never evaluated); a polynomial :class:`~popdyn.activations.Activation`; with
    ``allow_int`` an int ``k`` meaning :math:`h_k`.
    """
    import sympy

    from .activations import Activation, get_activation
    from .hermite import z_symbol

    max_degree = _DEGREE_LIMITS[limit]
    z = z_symbol()
    gens = (z,) if variables is None else tuple(variables)
    where = "z" if variables is None else f"the variables {', '.join(v.name for v in gens)}"
    if allow_int and isinstance(value, numbers.Integral) and not isinstance(value, (bool, sympy.Basic)):
        if variables is not None:
            raise TypeError(f"`{name}`: an integer k means h_k(z), a univariate piece; with `variables` give a "
                            f"sympy expression, got {value!r}.")
        k = check_int(name, value, minimum=1, maximum=max_degree)
        return sympy.Poly(_h_k_expr(k), z)
    if isinstance(value, str):
        if variables is not None:
            raise TypeError(f"`{name}`: spec strings are polynomials in z; with `variables` give a sympy "
                            f"expression, got {_echo(value)}.")
        try:
            value = get_activation(value)
        except ValueError as exc:
            raise ValueError(f"`{name}`: {exc}") from None
    if isinstance(value, Activation):
        if not value.is_polynomial:
            raise ValueError(f"`{name}` must be a polynomial; {value.name!r} is not (use the Monte Carlo route: "
                             "chaos_norms_mc or stein_lemma_mc).")
        expr = value.expr
    elif isinstance(value, sympy.Basic):
        expr = value
    elif isinstance(value, (numbers.Real, Fraction)) and not isinstance(value, bool) and not allow_int:
        expr = _exact_number(name, value)
    else:
        accepted = "an int k (for h_k), " if allow_int else ""
        raise TypeError(f"`{name}` must be {accepted}a sympy polynomial, a polynomial spec string "
                        f"('poly:...', 'heK', 'hermite:...') or a polynomial Activation; got {_echo(value)} "
                        f"({type(value).__name__}); callables go through the Monte Carlo route.")
    by_name = {g.name: g for g in gens}
    subs = {s: by_name[s.name] for s in expr.free_symbols if s.name in by_name and s not in gens}
    if subs:
        expr = expr.subs(subs)
    free = expr.free_symbols - set(gens)
    if free:
        raise ValueError(f"`{name}` must be a polynomial in {where} only; found symbols "
                         f"{sorted(map(str, free))} in {_echo(expr)}.")
    bound = _degree_bound(expr, gens)
    if bound is None:
        raise ValueError(f"`{name}` must be a polynomial in {where}, got {_echo(expr)}.")
    if bound > max_degree:
        poly = sympy.Poly(expr, *gens) if bound <= 4 * max_degree else None  # cancellations are rare
        if poly is None or poly.total_degree() > max_degree:
            got = bound if poly is None else poly.total_degree()
            raise ValueError(f"`{name}` has degree {got}{' (bound)' if poly is None else ''}, more than "
                             f"{limit} = {max_degree}; got {_echo(expr)}.")
    if expr.has(sympy.Float):
        expr = sympy.nsimplify(expr, rational=True)  # safe: a sympy object; floats -> shortest rationals
    try:
        poly = sympy.Poly(expr, *gens)
    except sympy.PolynomialError:
        raise ValueError(f"`{name}` must be a polynomial in {where}, got {_echo(expr)}.") from None
    for c in poly.coeffs():
        if not c.is_number or c.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo) or not c.is_real:
            raise ValueError(f"`{name}` must have finite real constant coefficients; got {_echo(c)} in "
                             f"{_echo(expr)}.")
    return poly


# --------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Piece:
    r"""One type of independent piece of a :class:`Feature`: :math:`m L` copies of :math:`w\,q`.

    Parameters
    ----------
    poly : int, str, sympy expression or Activation
        The polynomial :math:`q`: an int ``k`` means :math:`h_k = He_k/\sqrt{k!}`; a spec string
        (``"poly:z**3 - 3*z"``, ``"he3"``, parsed safely, never evaluated) or sympy expression in
        ``z``; or, with ``variables``, a sympy polynomial in those block coordinates.  Degree
        1 to :data:`MAX_FEATURE_DEGREE`.
    weight : number, optional
        Exact weight :math:`w \neq 0` (int, Fraction, sympy constant; a float is read as its
        shortest rational).
    count : int, optional
        Copies per unit of :math:`L` (:math:`m \ge 1`): the feature has :math:`mL` copies.
    variables : sequence of sympy Symbols, optional
        The coordinates of one block (at most :data:`MAX_BLOCK_DIM`); default: one coordinate ``z``.

    Attributes
    ----------
    poly : sympy expression
        The validated polynomial (expanded).
    """

    poly: Any
    weight: Any = 1
    count: int = 1
    variables: tuple | None = None

    def __post_init__(self):
        variables = None if self.variables is None else _check_variables(self.variables)
        poly = _coerce_polynomial("poly", self.poly, variables=variables, limit="MAX_FEATURE_DEGREE",
                                  allow_int=True)
        if poly.total_degree() < 1:
            raise ValueError(f"`poly` must have degree >= 1 (a constant piece is not a feature), got "
                             f"{_echo(poly.as_expr())}.")
        object.__setattr__(self, "variables", variables)
        object.__setattr__(self, "poly", poly.as_expr())
        object.__setattr__(self, "_poly", poly)
        object.__setattr__(self, "weight", _exact_number("weight", self.weight, nonzero=True))
        object.__setattr__(self, "count", check_int("count", self.count, minimum=1))

    @property
    def degree(self) -> int:
        """Total degree of :math:`q`."""
        return self._poly.total_degree()

    @property
    def block(self) -> int:
        """Coordinates per copy."""
        return 1 if self.variables is None else len(self.variables)

    def __repr__(self) -> str:
        vs = "" if self.variables is None else f", variables={self.variables}"
        return f"Piece({self.poly}, weight={self.weight}, count={self.count}{vs})"


def _check_L(L):
    import sympy

    if L is None:
        return L_symbol()
    if isinstance(L, sympy.Symbol):
        return L
    if isinstance(L, sympy.Integer):
        L = int(L)
    return check_int("L", L, minimum=1)


@dataclasses.dataclass(frozen=True, eq=False)
class Feature:
    r"""The feature :math:`p_L(x) = L^{-1/2}\sum_t w_t \sum_{i=1}^{m_t L} q_t(x^{(t,i)})`.

    Parameters
    ----------
    pieces : Piece or sequence of Piece
        The piece types (at most :data:`MAX_PIECE_TYPES`); copies sit on disjoint blocks of
        coordinates, type after type.
    L : int or sympy Symbol, optional
        Size: a positive integer, or a symbol (default :func:`L_symbol`) for results exact in
        :math:`L`.

    Examples
    --------
    >>> p = Feature(Piece(2), 4)            # (h_2(x_1) + ... + h_2(x_4)) / 2
    >>> p.dim, p.degree
    (4, 2)
    """

    pieces: Any
    L: Any = None

    def __post_init__(self):
        pieces = self.pieces
        if isinstance(pieces, Piece):
            pieces = (pieces,)
        try:
            pieces = tuple(pieces)
        except TypeError:
            raise TypeError(f"`pieces` must be a Piece or a sequence of Piece, got {_echo(pieces)}.") from None
        if not pieces or not all(isinstance(p, Piece) for p in pieces):
            raise TypeError(f"`pieces` must be a non-empty sequence of Piece, got {_echo(pieces)}.")
        if len(pieces) > MAX_PIECE_TYPES:
            raise ValueError(f"`pieces`: at most MAX_PIECE_TYPES = {MAX_PIECE_TYPES} piece types, got {len(pieces)}.")
        object.__setattr__(self, "pieces", pieces)
        object.__setattr__(self, "L", _check_L(self.L))

    @property
    def symbolic(self) -> bool:
        """True when ``L`` is a symbol."""
        return not isinstance(self.L, int)

    @property
    def degree(self) -> int:
        """Highest piece degree (the top chaos of :math:`p`)."""
        return max(p.degree for p in self.pieces)

    @property
    def dim(self) -> int:
        """Number of coordinates of ``x`` (numeric ``L`` only)."""
        if self.symbolic:
            raise ValueError("`L` is symbolic: the feature has no fixed dimension; use feature.with_L(n).")
        return sum(p.count * self.L * p.block for p in self.pieces)

    def with_L(self, L) -> "Feature":
        """The same feature at another size ``L``."""
        return Feature(self.pieces, L)

    def evaluate(self, x) -> np.ndarray:
        """Float values :math:`p(x)` for ``x`` of shape ``(n, dim)`` (numeric ``L``)."""
        import sympy

        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"`x` must have shape (n, {self.dim}), got {x.shape}.")
        out = np.zeros(x.shape[0])
        start = 0
        for piece in self.pieces:
            n_copies, m = piece.count * self.L, piece.block
            block = x[:, start:start + n_copies * m].reshape(x.shape[0], n_copies, m)
            start += n_copies * m
            if piece.variables is None:
                coeffs = [float(c) for c in reversed(piece._poly.all_coeffs())]
                vals = np.polynomial.polynomial.polyval(block[..., 0], coeffs)
            else:  # safe: a validated polynomial, never text
                fn = sympy.lambdify(piece.variables, piece.poly, modules="numpy")
                vals = np.broadcast_to(np.asarray(fn(*np.moveaxis(block, -1, 0)), dtype=float), block.shape[:2])
            out += float(piece.weight) * vals.sum(axis=1)
        return out / math.sqrt(self.L)


def feature(q, L=None, *, weight=1) -> Feature:
    r"""The standard feature :math:`p = L^{-1/2}\sum_{l=1}^{L} w\,q(x_l)` (one piece type).

    ``q`` is an int ``k`` (:math:`h_k`), a polynomial spec string or a sympy expression in ``z``;
    ``L`` a positive integer or a sympy symbol (``None``: :func:`L_symbol`).

    Parameters
    ----------
    q : int, str or sympy expression
        The polynomial :math:`q`: an int ``k`` means :math:`h_k = He_k/\sqrt{k!}`; a spec string
        (``"poly:z**3 - 3*z"``, ``"he3"``) or a sympy expression in ``z`` (see :class:`Piece`).
    L : int or sympy Symbol, optional
        Number of copies: a positive integer, or a symbol (default :func:`L_symbol`) for results
        exact in :math:`L`.
    weight : number, optional
        Exact weight :math:`w \neq 0` of every copy (default 1).

    Returns
    -------
    Feature
        ``Feature((Piece(q, weight=weight),), L)``: one piece type with :math:`L` copies
        (count :math:`m = 1`).
    """
    return Feature((Piece(q, weight=weight),), L)


# --------------------------------------------------------------------------------------
# the exact engine
# --------------------------------------------------------------------------------------
def _field_degree_bound(constants) -> int:
    r"""Upper bound of the degree of the number field generated by the radicals in ``constants``.

    A root :math:`b^{1/q}` of a rational :math:`b` lies in :math:`\mathbb{Q}(P^{1/q} : P \mid b)`,
    so the degree is at most :math:`\prod_P \mathrm{lcm}\{q : P \mid b\}` (primes found by
    trial division up to 10^4; a remaining cofactor counts as one prime).  Any other algebraic
    atom multiplies the bound by its root order.
    """
    import sympy

    orders: dict = {}
    other = 1
    for c in constants:
        for atom in c.atoms(sympy.Pow):
            base, ex = atom.as_base_exp()
            if not ex.is_Rational or ex.is_Integer:
                continue
            q = int(ex.q)
            if base.is_Rational:
                keys = set()
                for n in (abs(int(base.p)), int(base.q)):
                    if n > 1:
                        keys |= set(sympy.factorint(n, limit=10_000))
                for key in keys:
                    orders[key] = math.lcm(orders.get(key, 1), q)
            else:
                other *= q
    return math.prod(orders.values()) * other


def _domain(constants):
    """The smallest exact domain ``K`` holding ``constants`` and ``{constant: element of K}``.

    One ``construct_domain`` call converts them all: converting one by one with
    ``K.from_sympy`` recomputes a minimal polynomial per number (measured: 16 s for 575
    coefficients in QQ<sqrt(42)> against 0.04 s at once).  Transcendental constants (pi, E,
    tanh(1)) give sympy's expression domain EX.
    """
    import sympy
    from sympy.polys.constructor import construct_domain

    constants = list(constants) or [sympy.Integer(1)]  # sympy numbers (validated coefficients and weights)
    bound = _field_degree_bound(constants)
    if bound > MAX_FIELD_DEGREE:
        raise ValueError(f"the coefficients and weights generate a number field of degree up to {bound} "
                         f"(their square and higher roots), more than MAX_FIELD_DEGREE = {MAX_FIELD_DEGREE}; "
                         "use fewer distinct radicals or the Monte Carlo route.")
    K, converted = construct_domain(constants, extension=True)
    if K == sympy.ZZ:
        converted = [sympy.QQ.convert_from(c, sympy.ZZ) for c in converted]
        K = sympy.QQ
    return K, dict(zip(constants, converted))


def _he_coefficients(elem, ring_domain) -> dict:
    """He-basis coefficients ``{alpha: c}`` of a block-ring element (tensor product of :func:`_power_to_he`)."""
    out: dict = {}
    zero = ring_domain.zero
    for monom, c in elem.terms():
        rows = [_power_to_he(m) for m in monom]
        for combo in itertools.product(*rows):
            alpha = tuple(j for j, _ in combo)
            t = 1
            for _, v in combo:
                t *= v
            out[alpha] = out.get(alpha, zero) + c * t
    return out


def _bivariate_recursion(src: dict, n: int, R, *, to_cumulants: bool) -> dict:
    r"""Moments <-> joint cumulants of a pair, for orders ``a, b <= n``.

    :math:`m_{a,b} = \sum_{i<a, j\le b}\binom{a-1}{i}\binom{b}{j}\kappa_{i+1,j}\,m_{a-1-i,b-j}` (a >= 1) and
    :math:`m_{0,b} = \sum_{j<b}\binom{b-1}{j}\kappa_{0,j+1}\,m_{0,b-1-j}`.
    """
    out = {(0, 0): R.one if not to_cumulants else R.zero}
    mom = src if to_cumulants else out
    kap = out if to_cumulants else src
    for tot in range(1, 2 * n + 1):
        for a in range(max(0, tot - n), min(n, tot) + 1):
            b = tot - a
            s = R.zero
            if a >= 1:
                terms = [(i, j) for i in range(a) for j in range(b + 1)]
                for i, j in terms:
                    if to_cumulants and (i, j) == (a - 1, b):
                        continue
                    k_ij, m_ij = kap.get((i + 1, j)), mom[(a - 1 - i, b - j)]
                    if k_ij and m_ij:
                        s += math.comb(a - 1, i) * math.comb(b, j) * k_ij * m_ij
            else:
                for j in range(b):
                    if to_cumulants and j == b - 1:
                        continue
                    k_j, m_j = kap.get((0, j + 1)), mom[(0, b - 1 - j)]
                    if k_j and m_j:
                        s += math.comb(b - 1, j) * k_j * m_j
            out[(a, b)] = src[(a, b)] - s if to_cumulants else s
    return out


class _Engine:
    """Joint moments of :math:`(A_0, B_0) = (p(x) - \\mu, p(x_\\rho) - \\mu)` as polynomials in
    ``rho``, ``tau = L^(-1/2)`` and ``sig = L^(1/2)``, exact over the coefficient field ``K``."""

    def __init__(self, feat: Feature, outer_polys, order: int):
        from sympy.polys.rings import ring

        consts = []
        for piece in feat.pieces:
            consts += list(piece._poly.coeffs()) + [piece.weight]
        for g in outer_polys:
            consts += list(g.all_coeffs())
        self.K, table = _domain(consts)
        K = self.K
        self.R, _, self.tau, self.sig = ring("rho,tau,sig", K)
        R = self.R
        n = max(order, 1)
        total = {}
        mean = K.zero
        for piece in feat.pieces:
            m = piece.block
            Rb, *_ = ring(",".join(f"x{i}" for i in range(m)), K)
            q = Rb.from_dict({monom: table[c] for monom, c in piece._poly.terms()})
            eq = K.zero
            for monom, c in q.terms():
                t = 1
                for e in monom:
                    t *= _gaussian_moment(e)
                eq += c * t
            qc = q - eq
            powers, F = [Rb.one], []
            for a in range(n + 1):
                if a:
                    powers.append(powers[-1] * qc)
                F.append(_he_coefficients(powers[-1], K))
            mom = {}
            for a in range(n + 1):
                for b in range(a, n + 1):
                    d: dict = {}
                    for alpha, c in F[a].items():
                        c2 = F[b].get(alpha)
                        if c2:
                            fact = 1
                            for ai in alpha:
                                fact *= math.factorial(ai)
                            key = (sum(alpha), 0, 0)
                            d[key] = d.get(key, K.zero) + c * c2 * fact
                    mom[(a, b)] = mom[(b, a)] = R.from_dict({k: v for k, v in d.items() if v}) if d else R.zero
            kap = _bivariate_recursion(mom, n, R, to_cumulants=True)
            w = table[piece.weight]
            for (a, b), v in kap.items():
                if a + b >= 2 and v:
                    total[(a, b)] = total.get((a, b), R.zero) + v * (piece.count * w ** (a + b))
            mean += eq * w * piece.count
        cum = {(a, b): (v * self.tau ** (a + b - 2)) for (a, b), v in total.items()}
        self.moments = _bivariate_recursion(cum, n, R, to_cumulants=False)
        self.mu = self.sig * mean   # E[p] = L^(1/2) sum_t m_t w_t E[q_t]
        self.table = table

    def shifted(self, gpoly) -> list:
        """:math:`\\gamma_a` with :math:`g(\\mu + y) = \\sum_a \\gamma_a y^a`."""
        R = self.R
        g = [self.table[c] for c in reversed(gpoly.all_coeffs())]
        mu_pow = [R.one]
        for _ in range(len(g)):
            mu_pow.append(mu_pow[-1] * self.mu)
        return [sum((R.one * (g[m] * math.comb(m, a)) * mu_pow[m - a] for m in range(a, len(g)) if g[m]), R.zero)
                for a in range(len(g))]

    def cross(self, gam1, gam2):
        """:math:`E[g_1(A) g_2(B)]` as a polynomial in rho, tau, sig."""
        s = self.R.zero
        for a, x in enumerate(gam1):
            if not x:
                continue
            for b, y in enumerate(gam2):
                if y:
                    s += x * y * self.moments[(a, b)]
        return s

    def by_degree(self, elem, max_degree: int) -> list:
        """``[{e: c}]`` per power of rho: the coefficient as :math:`\\sum_e c_e L^e`."""
        out = [dict() for _ in range(max_degree + 1)]
        for (i, t, s), c in elem.terms():   # i <= deg(g) deg(p) = max_degree
            e = Fraction(s - t, 2)
            out[i][e] = out[i].get(e, self.K.zero) + c
        return [{e: c for e, c in d.items() if c} for d in out]


def _series_expr(series: dict, K, L):
    """``sum_e c_e L^e`` as a sympy expression (exact)."""
    import sympy

    terms = [K.to_sympy(c) * L ** sympy.Rational(e.numerator, e.denominator) for e, c in sorted(series.items())]
    return sympy.expand(sympy.Add(*terms)) if terms else sympy.Integer(0)


def _series_combine(K, *pairs) -> dict:
    """``sum_i factor_i * series_i`` (factors in K)."""
    out: dict = {}
    for factor, series in pairs:
        for e, c in series.items():
            out[e] = out.get(e, K.zero) + factor * c
    return {e: c for e, c in out.items() if c}


def _series_leading(series: dict, K):
    import sympy

    if not series:
        return None, sympy.Integer(0)
    e = max(series)
    return sympy.Rational(e.numerator, e.denominator), K.to_sympy(series[e])


def _regime(exponent) -> str:
    if exponent is None:
        return "0 (identically)"
    if exponent == 0:
        return "O(1)"
    if exponent == -1:
        return "O(1/L)"
    if exponent < 0:
        return f"O(1/L^{-exponent})" if exponent.is_Integer else f"O(L^({exponent}))"
    return f"O(L^{exponent})" if exponent.is_Integer else f"O(L^({exponent}))"


def leading_order(expr, L=None):
    r"""Leading term of an exact expression :math:`\sum_e c_e L^e` as :math:`L \to \infty`.

    Parameters
    ----------
    expr : sympy expression
        A finite sum of constants times powers of ``L`` (as returned by this module).
    L : sympy Symbol, optional
        Default :func:`L_symbol`.

    Returns
    -------
    (exponent, coefficient) : (sympy Rational, sympy number), or ``(None, 0)`` when ``expr`` is 0.

    Examples
    --------
    >>> import sympy
    >>> L = L_symbol()
    >>> leading_order(2/L + 4*sympy.sqrt(2)/L**sympy.Rational(3, 2) + 4/L**2, L)
    (-1, 2)
    """
    import sympy

    L = L_symbol() if L is None else L
    if not isinstance(L, sympy.Symbol):
        raise TypeError(f"`L` must be a sympy Symbol, got {_echo(L)}.")
    if not isinstance(expr, sympy.Basic):
        expr = _exact_number("expr", expr)
    groups: dict = {}
    for term in sympy.Add.make_args(sympy.expand(expr)):
        coeff, e = term.as_coeff_exponent(L)
        if coeff.has(L) or not e.is_Rational:
            raise ValueError(f"`expr` must be a sum of constants times powers of {L}, got term {_echo(term)}.")
        groups[e] = groups.get(e, 0) + coeff
    nonzero = {e: c for e, c in groups.items() if sympy.simplify(c) != 0}
    if not nonzero:
        return None, sympy.Integer(0)
    e = max(nonzero)
    return sympy.Rational(e), sympy.simplify(nonzero[e])


# --------------------------------------------------------------------------------------
# exact projections
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class ChaosProjection:
    r"""Exact chaos decomposition of :math:`h = g \circ p` against the feature :math:`p`.

    Tuples are indexed by the chaos degree :math:`j = 0, \dots, \deg g \cdot \deg p`.

    Attributes
    ----------
    g : sympy expression
        The outer polynomial in ``z``.
    feature : Feature
    norms : tuple
        :math:`\|P_j h\|^2` at the feature's ``L`` (exact numbers, or expressions when ``L``
        is symbolic).
    overlaps : tuple
        :math:`\langle P_j h, P_j p\rangle = E[h\,P_j p]`.
    feature_norms : tuple
        :math:`\|P_j p\|^2`.
    mean : sympy expression
        :math:`E[h]`.
    symbol : sympy Symbol
        The symbol of the ``*_in_L`` fields (the feature's own symbol when ``L`` is symbolic).
    norms_in_L, overlaps_in_L, feature_norms_in_L : tuple
        The same as exact functions of ``symbol``: the family :math:`p_L` for every ``L``.
    """

    g: Any
    feature: Feature
    norms: tuple
    overlaps: tuple
    feature_norms: tuple
    mean: Any
    symbol: Any
    norms_in_L: tuple
    overlaps_in_L: tuple
    feature_norms_in_L: tuple
    _series: dict = dataclasses.field(repr=False)
    _K: Any = dataclasses.field(repr=False)

    @property
    def degree(self) -> int:
        """Highest chaos degree :math:`\\deg g \\cdot \\deg p` (entries beyond the true top are 0)."""
        return len(self.norms) - 1

    @property
    def L(self):
        return self.feature.L

    @property
    def second_moment(self):
        """:math:`E[h^2] = \\sum_j \\|P_j h\\|^2` (Parseval)."""
        import sympy

        return sympy.expand(sympy.Add(*self.norms))

    def _check_degree(self, j) -> int:
        return check_int("degree", j, minimum=0, maximum=self.degree)

    def error(self, c, degree: int, *, in_L: bool = False):
        r""":math:`\|P_j h - c\,P_j p\|^2 = \|P_j h\|^2 - 2c\,E[h P_j p] + c^2\|P_j p\|^2` (exact)."""
        import sympy

        j = self._check_degree(degree)
        c = _exact_number("c", c)
        src = (self.norms_in_L, self.overlaps_in_L, self.feature_norms_in_L) if in_L else \
            (self.norms, self.overlaps, self.feature_norms)
        return sympy.expand(src[0][j] - 2 * c * src[1][j] + c ** 2 * src[2][j])

    def mass(self, degrees, *, in_L: bool = False):
        """:math:`\\sum_{j \\in degrees} \\|P_j h\\|^2` (exact)."""
        import sympy

        src = self.norms_in_L if in_L else self.norms
        return sympy.expand(sympy.Add(*[src[self._check_degree(j)] for j in degrees]))

    def as_floats(self) -> dict:
        """Float arrays of ``norms``, ``overlaps`` and ``feature_norms`` (numeric ``L`` only)."""
        if self.feature.symbolic:
            raise ValueError("`L` is symbolic: there are no float values; use feature.with_L(n).")
        return {name: np.array([float(v) for v in getattr(self, name)])
                for name in ("norms", "overlaps", "feature_norms")}


def _projection(gpoly, feat: Feature):
    """(ChaosProjection, engine) for the sympy Poly ``gpoly``."""
    k = feat.degree
    q = max(gpoly.degree(), 1)
    if q * k > MAX_CHAOS_DEGREE:
        raise ValueError(f"deg(g) * deg(p) = {gpoly.degree()} * {k} = {gpoly.degree() * k} exceeds "
                         f"MAX_CHAOS_DEGREE = {MAX_CHAOS_DEGREE}.")
    eng = _Engine(feat, [gpoly], q)
    R = eng.R
    top = q * k
    gam = eng.shifted(gpoly)
    ident = [eng.mu, R.one]
    series = {
        "norms": eng.by_degree(eng.cross(gam, gam), top),
        "overlaps": eng.by_degree(eng.cross(gam, ident), top),
        "feature_norms": eng.by_degree(eng.cross(ident, ident), top),
        "mean": eng.by_degree(eng.cross(gam, [R.one]), 0)[0],
    }
    sym = feat.L if feat.symbolic else L_symbol()
    K = eng.K
    fields = {}
    for name in ("norms", "overlaps", "feature_norms"):
        fields[name + "_in_L"] = tuple(_series_expr(s, K, sym) for s in series[name])
        fields[name] = fields[name + "_in_L"] if feat.symbolic else \
            tuple(_series_expr(s, K, feat.L) for s in series[name])
    mean = _series_expr(series["mean"], K, feat.L)
    proj = ChaosProjection(g=gpoly.as_expr(), feature=feat, mean=mean, symbol=sym, _series=series, _K=K,
                           **fields)
    return proj, eng


def chaos_projection(g, p) -> ChaosProjection:
    r"""Exact chaos norms and overlaps of :math:`h = g \circ p` (no sampling).

    Parameters
    ----------
    g : sympy expression, spec string or Activation
        Polynomial in ``z`` of degree at most :data:`MAX_OUTER_DEGREE` (``"poly:z**3"``,
        ``"he3"``, ``sympy.Symbol('z')**3``, ...).  Text is parsed by the safe grammar of
        :mod:`popdyn._expr`, never evaluated.
    p : Feature
        The feature (see :class:`Feature` and :func:`feature`); ``deg g * deg p`` at most
        :data:`MAX_CHAOS_DEGREE`.

    Returns
    -------
    ChaosProjection
        :math:`\|P_j h\|^2`, :math:`E[h\,P_j p]`, :math:`\|P_j p\|^2` for every degree, at the
        feature's ``L`` and as exact functions of ``L``.

    Notes
    -----
    :math:`\|P_j h\|^2 = [\rho^j]E[h(x)h(x_\rho)]` with the joint moments of the independent
    sums from cumulant recursions (module docstring).  Exact: rational numbers, or numbers in
    the algebraic field of the coefficients (e.g. :math:`\sqrt 2` for :math:`h_2`).

    Examples
    --------
    >>> proj = chaos_projection("poly:z**2", feature(2, None))   # p = L^(-1/2) sum h_2(x_l)
    >>> proj.norms[2], proj.overlaps[2], proj.mean
    (8/L, 2*sqrt(2)/sqrt(L), 1)
    """
    gpoly = _coerce_polynomial("g", g, limit="MAX_OUTER_DEGREE")
    if not isinstance(p, Feature):
        raise TypeError(f"`p` must be a Feature (see popdyn.chaos.feature), got {_echo(p)} ({type(p).__name__}).")
    return _projection(gpoly, p)[0]


# --------------------------------------------------------------------------------------
# the approximate Stein lemma
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class SteinLemma:
    r"""The approximate Stein lemma in numbers (:func:`stein_lemma`).

    Attributes
    ----------
    c_star : sympy number
        :math:`c^* = E_{z\sim N(0,1)}[g'(z)]`.
    k : int
        Top chaos degree of the feature.
    err2, low_mass, err2_total : sympy expression
        At the feature's ``L``: :math:`\|P_k h - c^* P_k p\|^2`,
        :math:`\sum_{1\le j<k}\|P_j h\|^2` and :math:`\sum_{1 \le j \le k}\|P_j h - c^* P_j p\|^2`
        (the last equals the sum of the first two when :math:`p` lies in the degree-k chaos).
    err2_in_L, low_mass_in_L, err2_total_in_L : sympy expression
        The same as exact functions of ``projection.symbol``.
    err2_order, low_mass_order : (exponent, coefficient)
        Leading term :math:`c\,L^{e}` of ``err2_in_L`` / ``low_mass_in_L`` as
        :math:`L \to \infty`, read off the exact expression; ``(None, 0)`` when identically 0.
    projection : ChaosProjection
        All chaos norms and overlaps.
    """

    g: Any
    feature: Feature
    k: int
    c_star: Any
    err2: Any
    low_mass: Any
    err2_total: Any
    err2_in_L: Any
    low_mass_in_L: Any
    err2_total_in_L: Any
    err2_order: tuple
    low_mass_order: tuple
    projection: ChaosProjection

    @property
    def L(self):
        return self.feature.L

    @property
    def err2_regime(self) -> str:
        """``"O(1/L^2)"``, ``"O(1/L)"``, ... from :attr:`err2_order`."""
        return _regime(self.err2_order[0])

    @property
    def low_mass_regime(self) -> str:
        """The same for the low-degree mass."""
        return _regime(self.low_mass_order[0])

    def summary(self) -> str:
        """One line: c*, err^2 and the low-degree mass with their regimes."""
        return (f"g = {self.g}, k = {self.k}, L = {self.L}: c* = {self.c_star}; "
                f"err^2 = {self.err2} [{self.err2_regime}]; low-degree mass = {self.low_mass} "
                f"[{self.low_mass_regime}]")


def _stein_coefficient(gpoly):
    """:math:`E[g'(z)]` exactly."""
    import sympy

    d = gpoly.diff()
    return sympy.expand(sympy.Add(*[c * _gaussian_moment(m[0]) for m, c in d.terms()]))


def stein_lemma(g, q, L=None) -> SteinLemma:
    r"""The approximate Stein lemma of arXiv 2311.13774 in exact numbers.

    For :math:`h = g\circ p` with :math:`p` a normalised feature in (mainly) the degree-k
    chaos, the lemma says :math:`P_k h \approx c^* p` with :math:`c^* = E[g'(z)]` and
    :math:`P_j h \approx 0` for :math:`1 \le j < k`.  This returns :math:`c^*`,
    :math:`\mathrm{err}^2 = \|P_k h - c^* P_k p\|^2` and the low-degree mass
    :math:`\sum_{1\le j<k}\|P_j h\|^2`, exact at ``L`` and as functions of ``L`` with their
    leading orders (e.g. ``8100/L**2`` for :math:`g = z^3`, :math:`k = 3`).

    Parameters
    ----------
    g : sympy expression, spec string or Activation
        Polynomial link (see :func:`chaos_projection`).
    q : int, spec string, sympy expression or Feature
        An int ``k`` means :math:`q = h_k`; a polynomial ``q`` in ``z`` with
        :math:`E[q(z)] = 0`, :math:`E[q(z)^2] = 1` gives :math:`p = L^{-1/2}\sum_{l\le L} q(x_l)`;
        a :class:`Feature` is used as is (then ``L`` must be ``None``) and must have
        :math:`E[p] = 0`, :math:`E[p^2] = 1`.
    L : int, sympy Symbol or None
        Feature size; ``None`` for the symbol :func:`L_symbol`.

    Returns
    -------
    SteinLemma

    Raises
    ------
    ValueError
        ``q`` not normalised (the lemma compares :math:`p` with :math:`z \sim N(0,1)`), a
        degree beyond the module limits, a non-polynomial ``g`` (use :func:`stein_lemma_mc`).

    Warns
    -----
    ZeroSteinCoefficientWarning
        When :math:`E[g'(z)] = 0`: then :math:`\|P_k h\|^2 \to 0` and the degree-k projection
        does not reveal :math:`p` (the lemma's failure mode).

    Examples
    --------
    >>> res = stein_lemma("poly:z + z**2/2 + z**3/6", 2, None)
    >>> res.c_star, res.err2_regime, res.err2_order
    (3/2, 'O(1/L)', (-1, 2))
    >>> stein_lemma("poly:z**3", 3, 16).err2
    2025/64
    """
    import sympy

    gpoly = _coerce_polynomial("g", g, limit="MAX_OUTER_DEGREE")
    if isinstance(q, Feature):
        if L is not None:
            raise ValueError(f"`L` must be None when `q` is a Feature (its size is q.L = {q.L}); got {L!r}.")
        feat = q
    else:
        feat = feature(q, L)
    # normalisation, exactly: E[p] = 0 and E[p^2] = 1 for every L
    mean, var = sympy.Integer(0), sympy.Integer(0)
    for piece in feat.pieces:
        poly = piece._poly
        e1 = sympy.Add(*[c * math.prod(_gaussian_moment(e) for e in m) for m, c in poly.terms()])
        e2 = sympy.Add(*[c * math.prod(_gaussian_moment(e) for e in m) for m, c in (poly * poly).terms()])
        mean += piece.count * piece.weight * e1
        var += piece.count * piece.weight ** 2 * (e2 - e1 ** 2)
    mean, var = sympy.simplify(mean), sympy.simplify(var)
    if mean != 0 or var != 1:
        what = "q" if not isinstance(q, Feature) else "the feature"
        raise ValueError(f"`q` must give a normalised feature, E[p] = 0 and E[p^2] = 1 (the lemma compares p "
                         f"with z ~ N(0, 1)); {what} gives per unit of L: mean {mean}, variance {var}. "
                         "Use q - E[q] divided by its standard deviation, or an int k for h_k.")
    k = feat.degree
    c_star = _stein_coefficient(gpoly)
    if c_star == 0:
        warnings.warn(ZeroSteinCoefficientWarning(
            f"E[g'(z)] = 0 for g = {gpoly.as_expr()}: the approximate Stein lemma gives P_k(g o p) -> 0, so the "
            f"degree-{k} projection carries no information about p (the lemma's failure mode)."), stacklevel=2)
    proj, eng = _projection(gpoly, feat)
    K = eng.K
    gco = [eng.table[a] for a in reversed(gpoly.all_coeffs())]
    c = sum((gco[n] * (n * _gaussian_moment(n - 1)) for n in range(1, len(gco))), K.zero)  # c_star in K
    S = proj._series
    err_s = _series_combine(K, (K.one, S["norms"][k]), (-2 * c, S["overlaps"][k]), (c * c, S["feature_norms"][k]))
    low_s = _series_combine(K, *[(K.one, S["norms"][j]) for j in range(1, k)])
    tot_s = _series_combine(K, *[pair for j in range(1, k + 1) for pair in
                                 ((K.one, S["norms"][j]), (-2 * c, S["overlaps"][j]), (c * c, S["feature_norms"][j]))])
    sym = proj.symbol
    at = (lambda s: _series_expr(s, K, sym)) if feat.symbolic else (lambda s: _series_expr(s, K, feat.L))
    return SteinLemma(
        g=gpoly.as_expr(), feature=feat, k=k, c_star=c_star,
        err2=at(err_s), low_mass=at(low_s), err2_total=at(tot_s),
        err2_in_L=_series_expr(err_s, K, sym), low_mass_in_L=_series_expr(low_s, K, sym),
        err2_total_in_L=_series_expr(tot_s, K, sym),
        err2_order=_series_leading(err_s, K), low_mass_order=_series_leading(low_s, K), projection=proj)


# --------------------------------------------------------------------------------------
# direct expansion (exact, any polynomial in explicit variables)
# --------------------------------------------------------------------------------------
def polynomial_chaos_norms(h, variables, *, other=None) -> tuple:
    r"""Exact :math:`\|P_j h\|^2` (or :math:`\langle P_j h, P_j f\rangle`) of a polynomial in explicit variables.

    The polynomial is expanded in the power basis and converted monomial by monomial to the
    tensor Hermite basis, :math:`h = \sum_\alpha a_\alpha He_\alpha`; then
    :math:`\|P_j h\|^2 = \sum_{|\alpha| = j}\alpha!\,a_\alpha^2`.  An independent route to
    :func:`chaos_projection` (no moments, no :math:`\rho`), practical for a few coordinates.

    Parameters
    ----------
    h : sympy expression
        Polynomial in ``variables`` with real constant coefficients.
    variables : sequence of sympy Symbols
        The coordinates :math:`x_1, \dots, x_d` (independent standard Gaussians).
    other : sympy expression, optional
        A second polynomial :math:`f`: return the overlaps :math:`\langle P_j h, P_j f\rangle`.

    Returns
    -------
    tuple of sympy numbers, indexed by the degree j = 0, ..., deg h.

    Examples
    --------
    >>> import sympy
    >>> x, y = sympy.symbols("x y")
    >>> polynomial_chaos_norms(x**2 * y, (x, y))     # x^2 y = He_2(x) He_1(y) + He_1(y)
    (0, 1, 0, 2)
    """
    import sympy

    try:
        variables = tuple(variables)
    except TypeError:
        raise TypeError(f"`variables` must be a sequence of sympy Symbols, got {_echo(variables)}.") from None
    if not variables or not all(isinstance(v, sympy.Symbol) for v in variables):
        raise TypeError(f"`variables` must be a non-empty sequence of sympy Symbols, got {_echo(variables)}.")
    polys = []
    for name, expr in (("h", h), ("other", other)):
        if expr is None:
            continue
        if not isinstance(expr, sympy.Basic):
            raise TypeError(f"`{name}` must be a sympy expression, got {_echo(expr)} ({type(expr).__name__}).")
        free = expr.free_symbols - set(variables)
        if free:
            raise ValueError(f"`{name}` must be a polynomial in `variables` only; found {sorted(map(str, free))}.")
        bound = _degree_bound(expr, variables)
        if bound is None:
            raise ValueError(f"`{name}` must be a polynomial in `variables`, got {_echo(expr)}.")
        if bound > MAX_CHAOS_DEGREE:
            raise ValueError(f"`{name}` has degree up to {bound}, more than MAX_CHAOS_DEGREE = {MAX_CHAOS_DEGREE}.")
        terms = min(_terms_bound(expr, variables), math.comb(bound + len(variables), len(variables)))
        if terms > MAX_EXPANSION_TERMS:
            raise ValueError(f"`{name}` may expand to {terms} monomials, more than MAX_EXPANSION_TERMS = "
                             f"{MAX_EXPANSION_TERMS} (checked before expanding); use fewer variables or a "
                             "lower degree.")
        polys.append(sympy.Poly(sympy.nsimplify(expr, rational=True) if expr.has(sympy.Float) else expr,
                                *variables))
    K, table = _domain([c for p in polys for c in p.coeffs()])
    he = []
    for poly in polys:
        coeffs: dict = {}
        for monom, c in poly.terms():
            c = table[c]
            for combo in itertools.product(*[_power_to_he(m) for m in monom]):
                alpha = tuple(j for j, _ in combo)
                coeffs[alpha] = coeffs.get(alpha, K.zero) + c * math.prod(v for _, v in combo)
        he.append(coeffs)
    a, b = he[0], he[-1]
    top = max(p.total_degree() for p in polys)
    out = [K.zero] * (top + 1)
    for alpha, c in a.items():
        c2 = b.get(alpha)
        if c2:
            out[sum(alpha)] += c * c2 * math.prod(math.factorial(i) for i in alpha)
    return tuple(K.to_sympy(v) for v in out)


# --------------------------------------------------------------------------------------
# Monte Carlo route
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _multi_indices(dim: int, degree: int):
    """Positions and degrees ``(N, degree)`` of the multi-indices with |alpha| = degree (padded with h_0)."""
    combos = list(itertools.combinations_with_replacement(range(dim), degree))
    pos = np.zeros((len(combos), max(degree, 1)), dtype=np.intp)
    deg = np.zeros((len(combos), max(degree, 1)), dtype=np.intp)
    for r, combo in enumerate(combos):
        for c, (i, grp) in enumerate(itertools.groupby(combo)):
            pos[r, c] = i
            deg[r, c] = len(list(grp))
    pos.setflags(write=False)
    deg.setflags(write=False)
    return pos, deg


def _basis_size(dim: int, degree: int) -> int:
    return math.comb(dim + degree - 1, degree)


def chaos_basis(x, degree: int):
    r"""The orthonormal basis :math:`H_\alpha(x) = \prod_i h_{\alpha_i}(x_i)` of the degree-j chaos.

    Parameters
    ----------
    x : array_like, shape (n, d)
        Points.
    degree : int
        The chaos degree ``j >= 0``.

    Returns
    -------
    values : ndarray, shape (n, N)
        :math:`H_\alpha(x_i)` for the :math:`N = \binom{d + j - 1}{j}` multi-indices.
    alphas : ndarray, shape (N, d)
        The multi-indices (rows sum to ``j``), in lexicographic order of sorted coordinates.

    Examples
    --------
    >>> vals, alphas = chaos_basis([[1.0, 2.0]], 2)
    >>> alphas.tolist(), [round(float(v), 12) for v in vals[0]]
    ([[2, 0], [1, 1], [0, 2]], [0.0, 2.0, 2.12132034356])
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"`x` must have shape (n, d), got {x.shape}.")
    j = check_int("degree", degree, minimum=0)
    if _basis_size(x.shape[1], j) > MAX_MC_BASIS:
        raise ValueError(f"the degree-{j} chaos in d = {x.shape[1]} has {_basis_size(x.shape[1], j)} basis "
                         f"functions, more than MAX_MC_BASIS = {MAX_MC_BASIS}.")
    pos, deg = _multi_indices(x.shape[1], j)
    alphas = np.zeros((pos.shape[0], x.shape[1]), dtype=int)
    if j:
        np.add.at(alphas, (np.repeat(np.arange(pos.shape[0]), pos.shape[1]), pos.ravel()), deg.ravel())
    return _basis_values(x, j), alphas


def _basis_values(x, j):
    from .hermite import h_values

    if j == 0:
        return np.ones((x.shape[0], 1))
    pos, deg = _multi_indices(x.shape[1], j)
    H = np.moveaxis(h_values(x, j), 0, -1)            # (n, d, j + 1)
    out = H[:, pos[:, 0], deg[:, 0]]                  # (n, N)
    for c in range(1, pos.shape[1]):
        out = out * H[:, pos[:, c], deg[:, c]]
    return out


@dataclasses.dataclass(frozen=True)
class ChaosEstimate:
    r"""Monte Carlo chaos norms with standard errors (:func:`chaos_norms_mc`).

    Attributes
    ----------
    norms : ndarray, shape (m, J + 1)
        Unbiased estimates of :math:`\|P_j h_i\|^2` for the ``m`` outputs of ``h`` and
        :math:`j = 0..J` (the mean of the batch U-statistics).
    se : ndarray, shape (m, J + 1)
        Standard errors (spread of the batch estimates over :math:`\sqrt{B}`).
    batches : ndarray, shape (B, m, J + 1)
        The batch estimates (for sums over degrees with their correlations, :meth:`total`).
    n_samples : int
    seed : object
        The ``rng`` record (:func:`popdyn._random.seed_record`).
    """

    norms: np.ndarray
    se: np.ndarray
    batches: np.ndarray
    n_samples: int
    seed: Any = None

    def total(self, degrees, output: int = 0) -> tuple:
        """``(estimate, se)`` of :math:`\\sum_{j \\in degrees}\\|P_j h\\|^2` for one output."""
        degrees = [int(j) for j in degrees]
        vals = self.batches[:, output, degrees].sum(axis=1)
        return float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(len(vals)))


def chaos_norms_mc(h, dim: int, max_degree: int, *, n_samples: int = DEFAULT_MC_SAMPLES,
                   n_batches: int = DEFAULT_MC_BATCHES, rng=None) -> ChaosEstimate:
    r"""Monte Carlo :math:`\|P_j h\|^2`, :math:`j = 0..J`, with standard errors, for any callable ``h``.

    Parameters
    ----------
    h : callable
        ``h(x)`` for ``x`` of shape ``(n, dim)`` returns shape ``(n,)`` or ``(n, m)`` (``m``
        functions at once, on the same samples).
    dim : int
        Number of coordinates of ``x ~ N(0, I_dim)``.
    max_degree : int
        Highest chaos degree ``J``; :math:`\sum_{j \le J}\binom{d+j-1}{j} \le` :data:`MAX_MC_BASIS`.
    n_samples : int
        Total samples, split into ``n_batches`` independent batches (at least 2 samples each).
    n_batches : int
        Number of batches (at least 2); the standard error is the batch spread.
    rng : int, Generator or None

    Returns
    -------
    ChaosEstimate

    Notes
    -----
    With :math:`Y_i = h(x_i) H_{|\alpha|=j}(x_i)`, the batch statistic
    :math:`(\|\sum_i Y_i\|^2 - \sum_i\|Y_i\|^2)/(n_b(n_b-1))` is an unbiased estimate of
    :math:`\sum_{|\alpha|=j}E[h H_\alpha]^2 = \|P_j h\|^2` (the squared sample mean alone is
    biased upward by :math:`\mathrm{tr\,Cov}(Y)/n_b`).

    Examples
    --------
    >>> est = chaos_norms_mc(lambda x: x[:, 0] * x[:, 1], 2, 2, n_samples=20_000, rng=0)
    >>> bool(abs(est.norms[0, 2] - 1) < 5 * est.se[0, 2])
    True
    """
    if not callable(h):
        raise TypeError(f"`h` must be a callable of x with shape (n, dim), got {_echo(h)}.")
    dim = check_int("dim", dim, minimum=1, maximum=MAX_MC_DIM)
    J = check_int("max_degree", max_degree, minimum=0)
    size = sum(_basis_size(dim, j) for j in range(J + 1))
    if size > MAX_MC_BASIS:
        raise ValueError(f"`max_degree` = {J} in `dim` = {dim} needs {size} basis functions, more than "
                         f"MAX_MC_BASIS = {MAX_MC_BASIS}; lower max_degree or dim (or use the exact route).")
    B = check_int("n_batches", n_batches, minimum=2)
    n = check_int("n_samples", n_samples, minimum=2 * B)
    seed = seed_record(rng)
    gen = as_generator(rng)
    sizes = np.full(B, n // B)
    sizes[: n % B] += 1
    chunk = max(1, MC_CHUNK_FLOATS // max(size, dim))
    batches = None
    for b, nb in enumerate(sizes):
        S = Q = None
        done = 0
        while done < nb:
            c = int(min(chunk, nb - done))
            x = gen.standard_normal((c, dim))
            vals = np.asarray(h(x), dtype=float)
            if vals.ndim == 1:
                vals = vals[:, None]
            if vals.ndim != 2 or vals.shape[0] != c:
                raise ValueError(f"`h` must return shape (n,) or (n, m) for x of shape ({c}, {dim}), got {vals.shape}.")
            if not np.all(np.isfinite(vals)):
                raise ValueError("`h` returned non-finite values.")
            if S is None:
                m = vals.shape[1]
                S = [np.zeros((m, _basis_size(dim, j))) for j in range(J + 1)]
                Q = np.zeros((m, J + 1))
                if batches is None:
                    batches = np.empty((B, m, J + 1))
            for j in range(J + 1):
                phi = _basis_values(x, j)                    # (c, N_j)
                # einsum, not BLAS: multithreaded BLAS stalls for these thin products on a loaded machine
                S[j] += np.einsum("nm,nk->mk", vals, phi)
                Q[:, j] += np.einsum("nm,n->m", vals ** 2, np.einsum("nk,nk->n", phi, phi))
            done += c
        for j in range(J + 1):
            batches[b, :, j] = ((S[j] ** 2).sum(axis=1) - Q[:, j]) / (nb * (nb - 1.0))
    return ChaosEstimate(norms=batches.mean(axis=0), se=batches.std(axis=0, ddof=1) / math.sqrt(B),
                         batches=batches, n_samples=n, seed=seed)


@dataclasses.dataclass(frozen=True)
class SteinLemmaMC:
    """Monte Carlo version of :class:`SteinLemma`: estimates with standard errors."""

    k: int
    L: int
    c_star: float
    err2: float
    err2_se: float
    low_mass: float
    low_mass_se: float
    estimate: ChaosEstimate


def _as_scalar_callable(name: str, f):
    """``(vectorised float function, sympy Poly or None)`` for the Monte Carlo route.

    Polynomials (ints k for ``q``, spec strings, sympy polynomials, polynomial Activations)
    are evaluated with numpy from their exact coefficients; other registered activations
    (``"relu"``), non-polynomial sympy expressions and callables are used as functions.
    """
    import sympy

    from .activations import Activation, get_activation

    limit = "MAX_OUTER_DEGREE" if name == "g" else "MAX_FEATURE_DEGREE"
    if isinstance(f, str):
        try:
            f = get_activation(f)
        except ValueError as exc:
            raise ValueError(f"`{name}`: {exc}") from None
    if isinstance(f, sympy.Basic):
        try:
            poly = _coerce_polynomial(name, f, limit=limit)
        except ValueError:
            f = get_activation(f)          # a non-polynomial expression in z (lambdified, never text)
        else:
            f = None
    if isinstance(f, Activation):
        if not f.is_polynomial:
            return f, None
        poly = _coerce_polynomial(name, f, limit=limit)
    elif f is not None:
        if callable(f):
            return f, None
        poly = _coerce_polynomial(name, f, limit=limit, allow_int=(name == "q"))
    coeffs = [float(c) for c in reversed(poly.all_coeffs())]
    return (lambda z, _c=coeffs: np.polynomial.polynomial.polyval(np.asarray(z, dtype=float), _c)), poly


def stein_lemma_mc(g, q, L: int, *, k: int | None = None, n_samples: int = DEFAULT_MC_SAMPLES,
                   n_batches: int = DEFAULT_MC_BATCHES, rng=None) -> SteinLemmaMC:
    r"""Monte Carlo :math:`\|P_k h - c^*P_k p\|^2` and :math:`\sum_{1\le j<k}\|P_j h\|^2`, with standard errors.

    For :math:`h = g(p)`, :math:`p = L^{-1/2}\sum_{l\le L} q(x_l)` with ``g`` and ``q``
    polynomials (as in :func:`stein_lemma`) or vectorised callables; the lemma presumes
    :math:`E[q(z)] = 0` and :math:`E[q(z)^2] = 1`, which is not checked here.  :math:`c^* = E[g'(z)]`
    is exact for a polynomial ``g`` and :math:`E[g(z)z]` by quadrature
    (:meth:`popdyn.activations.Activation.coefficients`) for a callable.

    Parameters
    ----------
    g, q : polynomial or callable
        Link and piece (an int ``q = k`` means :math:`h_k`).
    L : int
        Feature size (the dimension of ``x``).
    k : int, optional
        Chaos degree of the lemma; default the degree of a polynomial ``q`` (required when
        ``q`` is a callable).
    n_samples, n_batches, rng
        As in :func:`chaos_norms_mc`.

    Returns
    -------
    SteinLemmaMC

    Warns
    -----
    ZeroSteinCoefficientWarning
        When :math:`E[g'(z)] = 0` (exactly for a polynomial, to the quadrature accuracy for a callable).
    """
    L = check_int("L", L, minimum=1)
    gfun, gpoly = _as_scalar_callable("g", g)
    qfun, qpoly = _as_scalar_callable("q", q)
    if k is None:
        if qpoly is None:
            raise ValueError("`k` is required when `q` is a callable (the chaos degree of the lemma).")
        k = qpoly.degree()
    k = check_int("k", k, minimum=1)
    if gpoly is not None:
        c_star = float(_stein_coefficient(gpoly))
    else:
        from .activations import get_activation

        c_star = float(get_activation(gfun).coefficients(1)[1])   # E[g(z) h_1(z)] = E[g'(z)]
    if abs(c_star) <= (0.0 if gpoly is not None else _QUADRATURE_ZERO):
        warnings.warn(ZeroSteinCoefficientWarning(
            f"E[g'(z)] = {c_star:.3g} for g = {g!r}: P_k(g o p) -> 0, the degree-{k} projection carries no "
            "information about p (the lemma's failure mode)."), stacklevel=2)

    def values(x):
        p = np.asarray(qfun(x), dtype=float).sum(axis=1) / math.sqrt(L)
        hv = np.asarray(gfun(p), dtype=float)
        return np.stack([hv, hv - c_star * p], axis=1)

    est = chaos_norms_mc(values, L, k, n_samples=n_samples, n_batches=n_batches, rng=rng)
    low, low_se = est.total(range(1, k), output=0) if k > 1 else (0.0, 0.0)
    return SteinLemmaMC(k=k, L=L, c_star=c_star, err2=float(est.norms[1, k]), err2_se=float(est.se[1, k]),
                        low_mass=low, low_mass_se=low_se, estimate=est)
