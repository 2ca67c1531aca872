r"""arXiv 2311.13774 — Wang, Nichani, Lee: the approximate Stein lemma as exact claims.

The paper's Lemma 2 (approximate Stein lemma): for :math:`h = g \circ p` with :math:`p` a
normalised, balanced sum of :math:`L` independent degree-:math:`k` pieces,
:math:`P_k h \approx E_{z\sim N(0,1)}[g'(z)]\,p` and :math:`P_j h \approx 0` for
:math:`1 \le j < k`.  The rows below measure, exactly (:func:`popdyn.chaos.stein_lemma`: joint
moments by cumulant recursion, rational arithmetic, :math:`L` symbolic), the test feature
:math:`p = L^{-1/2}\sum_{l=1}^{L} h_k(x_l)` with

.. math::

    \mathrm{err}^2(L) = \|P_k h - c^* p\|^2, \qquad c^* = E[g'(z)], \qquad
    \mathrm{low}(L) = \sum_{1 \le j < k} \|P_j h\|^2,

as exact functions of :math:`L`; the rate is the leading power of :math:`L` in that function
(read off, not fitted).

Predictions (derived here, not stated in the paper)
---------------------------------------------------
Write :math:`p = Y + \varepsilon u`, :math:`u = h_k(x_l)`, :math:`\varepsilon = L^{-1/2}`, and
expand :math:`E[g(p)\,u] = \sum_m \frac{\varepsilon^m}{m!}E[g^{(m)}(Y)]E[u^{m+1}]`; the
remainder :math:`Y` has third cumulant :math:`\approx \varepsilon E[u^3]`, so (Edgeworth)
:math:`E[g'(Y)] \approx E[g'(z)] + \tfrac{\varepsilon}{6}E[u^3]E[g^{(4)}(z)]`.  Hence the
coefficient of :math:`p` in :math:`P_k h` is :math:`c^* + \varepsilon\,T_k\,a(g) + O(\varepsilon^2)`
with :math:`T_k = E[h_k^3]` and :math:`a(g) = E[g''(z)]/2 + E[g^{(4)}(z)]/6`, while the other
degree-k terms are :math:`O(1/L^2)` in total:

.. math::

    \mathrm{err}^2(L) = \frac{T_k^2\,a(g)^2}{L} + O(L^{-3/2}), \qquad
    \mathrm{low}(L) = \frac{E[g''(z)]^2}{4L}\sum_{1 \le j < k} E[h_k^2 h_j]^2 + O(L^{-2}).

:math:`T_k = 0` for odd :math:`k` and :math:`a(g) = 0` for odd :math:`g`, so
:math:`\mathrm{err}^2 = O(1/L^2)` there, and :math:`O(1/L)` when :math:`k` is even and
:math:`a(g) \ne 0` (a :math:`z^2` part, unless cancelled: :math:`g = z + z^4 - 10z^2` has
:math:`a(g) = 0`).  The predicted coefficients are computed here from one-dimensional Gaussian
moments and the Hermite triple-product formula
:math:`E[He_a He_b He_c] = a!\,b!\,c!/((s-a)!(s-b)!(s-c)!)`, :math:`s = (a+b+c)/2` -- a route
independent of the chaos computation they are compared with.

Failure mode: if :math:`c^* = E[g'(z)] = 0` then :math:`\|P_k h\|^2 = \mathrm{err}^2 \to 0`:
the degree-k projection carries no information about :math:`p`
(:class:`popdyn.chaos.ZeroSteinCoefficientWarning`).
"""

from __future__ import annotations

import math
import warnings

from popdyn.chaos import ZeroSteinCoefficientWarning, leading_order, stein_lemma
from popdyn.verification import Claim, ClaimResult

PAPER = "2311.13774"

__all__ = ["LEMMA_CLAIMS", "predicted_err2_coefficient", "predicted_low_mass_coefficient", "SIZES"]

#: Feature sizes at which each row also prints the exact values.
SIZES = (16, 64, 256)
#: Exact comparison: the measured leading coefficient must equal the prediction exactly.
EXACT = "exact (rational arithmetic)"


def _z():
    from popdyn.hermite import z_symbol

    return z_symbol()


def _gauss_mean(expr):
    """:math:`E[f(z)]` of a polynomial by :math:`E[z^{2m}] = (2m-1)!!` (exact)."""
    import sympy

    poly = sympy.Poly(sympy.expand(expr), _z())
    return sympy.Add(*[c * (0 if n % 2 else math.prod(range(n - 1, 0, -2))) for (n,), c in poly.terms()])


def _triple(a: int, b: int, c: int):
    r""":math:`E[h_a h_b h_c]` from the triple-product formula (normalised basis)."""
    import sympy

    s2 = a + b + c
    if s2 % 2:
        return sympy.Integer(0)
    s = s2 // 2
    if s < max(a, b, c):
        return sympy.Integer(0)
    he = sympy.factorial(a) * sympy.factorial(b) * sympy.factorial(c) / (
        sympy.factorial(s - a) * sympy.factorial(s - b) * sympy.factorial(s - c))
    return sympy.nsimplify(he / sympy.sqrt(sympy.factorial(a) * sympy.factorial(b) * sympy.factorial(c)))


def predicted_err2_coefficient(g, k: int):
    r"""The predicted coefficient of :math:`1/L` in :math:`\mathrm{err}^2`: :math:`(E[h_k^3]\,a(g))^2`."""
    import sympy

    z = _z()
    a = _gauss_mean(sympy.diff(g, z, 2)) / 2 + _gauss_mean(sympy.diff(g, z, 4)) / 6
    return sympy.simplify((_triple(k, k, k) * a) ** 2)


def predicted_low_mass_coefficient(g, k: int):
    r"""The predicted coefficient of :math:`1/L` in the low-degree mass:
    :math:`(E[g'']/2)^2\sum_{1\le j<k}E[h_k^2 h_j]^2`."""
    import sympy

    z = _z()
    half = _gauss_mean(sympy.diff(g, z, 2)) / 2
    return sympy.simplify(half ** 2 * sympy.Add(*[_triple(k, k, j) ** 2 for j in range(1, k)]))


def _run(g, k):
    """(SteinLemma, warned) with the lemma's warning recorded rather than raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ZeroSteinCoefficientWarning)
        res = stein_lemma(g, k, None)
    return res, any(issubclass(w.category, ZeroSteinCoefficientWarning) for w in caught)


def _values(expr, L):
    """Exact values (and decimals) at the printed sizes."""
    out = []
    for n in SIZES:
        v = expr.subs(L, n)
        out.append(f"L={n}: {v} ({float(v):.4g})")
    return "; ".join(out)


def _over_L(c) -> str:
    """``c/L`` printed as sympy prints it (``9/(2*L)``)."""
    from popdyn.chaos import L_symbol

    return str(c / L_symbol())


def _fmt_order(order) -> str:
    e, c = order
    return "identically 0" if e is None else f"leading {c}*L^({e})"


def _cases_odd():
    z = _z()
    return [(2, z ** 3), (3, z ** 3), (3, z + z ** 2 / 2 + z ** 3 / 6), (4, z ** 3 + z), (5, z + z ** 2)]


def _cases_even():
    z = _z()
    return [(2, z + z ** 2 / 2 + z ** 3 / 6), (2, z + z ** 2), (4, z + z ** 2), (2, z + z ** 4),
            (6, z + z ** 2 / 2), (2, z + z ** 4 - 10 * z ** 2)]


def claim_err_rate_odd(quick: bool, rng):
    """err^2 = O(1/L^2) when k is odd or g is odd (the 1/L coefficient vanishes)."""
    rows = []
    for k, g in _cases_odd():
        res, _ = _run(g, k)
        pred = predicted_err2_coefficient(g, k)
        e, c = res.err2_order
        ok = pred == 0 and (e is None or e <= -2)
        rows.append(ClaimResult(
            PAPER, f"err_rate_odd (k={k}, g={g})",
            predicted=f"O(1/L^2): 1/L coefficient (E[h_k^3] a(g))^2 = {pred}",
            measured=f"err^2 = {res.err2_in_L} [{res.err2_regime}]", tolerance=EXACT, passed=bool(ok),
            details=f"c* = {res.c_star}; {_values(res.err2_in_L, res.projection.symbol)}"))
    return rows


def claim_err_rate_quadratic(quick: bool, rng):
    """For even k and a z^2 part in g, err^2 = (E[h_k^3] a(g))^2 / L + o(1/L); o(1/L) when a(g) = 0."""
    rows = []
    for k, g in _cases_even():
        res, _ = _run(g, k)
        pred = predicted_err2_coefficient(g, k)
        e, c = res.err2_order
        if pred != 0:
            ok = e == -1 and c == pred
            predicted = f"{_over_L(pred)} + o(1/L)  [O(1/L)]"
        else:  # the z^2 part is cancelled by the z^4 part: a(g) = E[g'']/2 + E[g'''']/6 = 0
            ok = e is None or e < -1
            predicted = "o(1/L): a(g) = E[g'']/2 + E[g'''']/6 = 0"
        rows.append(ClaimResult(
            PAPER, f"err_rate_quadratic (k={k}, g={g})", predicted=predicted,
            measured=f"err^2 = {res.err2_in_L} [{res.err2_regime}; {_fmt_order(res.err2_order)}]",
            tolerance=EXACT, passed=bool(ok),
            details=f"c* = {res.c_star}; {_values(res.err2_in_L, res.projection.symbol)}"))
    return rows


def claim_low_degree_mass(quick: bool, rng):
    """sum_{1<=j<k} ||P_j h||^2 = (E[g'']/2)^2 sum_j E[h_k^2 h_j]^2 / L + O(1/L^2) -> 0."""
    z = _z()
    rows = []
    for k, g in [(2, z + z ** 2 / 2 + z ** 3 / 6), (3, z ** 3), (3, z + z ** 2 / 2 + z ** 3 / 6), (4, z + z ** 2),
                 (6, z + z ** 2 / 2)]:
        res, _ = _run(g, k)
        pred = predicted_low_mass_coefficient(g, k)
        e, c = res.low_mass_order
        if pred != 0:
            ok = e == -1 and c == pred
            predicted = f"{_over_L(pred)} + O(1/L^2)"
        else:
            ok = e is None or e <= -2
            predicted = "O(1/L^2) (E[g''] = 0 or no triple products)"
        rows.append(ClaimResult(
            PAPER, f"low_degree_mass (k={k}, g={g})", predicted=predicted,
            measured=f"low-degree mass = {res.low_mass_in_L} [{res.low_mass_regime}]", tolerance=EXACT,
            passed=bool(ok), details=_values(res.low_mass_in_L, res.projection.symbol)))
    return rows


def claim_failure_mode(quick: bool, rng):
    """E[g'(z)] = 0: ||P_k h||^2 -> 0 (warned); E[g'] != 0: ||P_k h||^2 -> c*^2."""
    z = _z()
    rows = []
    for k, g in [(3, z ** 3 - 3 * z), (2, z ** 2), (4, z ** 4 - 6 * z ** 2 + 3), (3, z ** 3)]:
        res, warned = _run(g, k)
        norm_k = res.projection.norms_in_L[k]
        e, c = leading_order(norm_k, res.projection.symbol)
        if res.c_star == 0:
            predicted = "||P_k h||^2 -> 0 (E[g'] = 0), ZeroSteinCoefficientWarning"
            ok = warned and (e is None or e < 0)
        else:
            predicted = f"||P_k h||^2 -> c*^2 = {res.c_star ** 2}, no warning"
            ok = (not warned) and e == 0 and c == res.c_star ** 2
        rows.append(ClaimResult(
            PAPER, f"failure_mode (k={k}, g={g})", predicted=predicted,
            measured=f"||P_k h||^2 = {norm_k} [{_fmt_order((e, c))}]; warned: {warned}", tolerance=EXACT,
            passed=bool(ok), details=f"c* = {res.c_star}; {_values(norm_k, res.projection.symbol)}"))
    return rows


LEMMA_CLAIMS = [
    Claim(PAPER, "err_rate_odd",
          "approximate Stein lemma: ||P_k h - E[g'] p||^2 = O(1/L^2) for odd k or odd g (exact in L)",
          claim_err_rate_odd),
    Claim(PAPER, "err_rate_quadratic",
          "approximate Stein lemma: ||P_k h - E[g'] p||^2 = Theta(1/L) for even k when g has a z^2 part "
          "(exact leading coefficient)", claim_err_rate_quadratic),
    Claim(PAPER, "low_degree_mass", "approximate Stein lemma: sum_{1<=j<k} ||P_j h||^2 -> 0 (exact in L)",
          claim_low_degree_mass),
    Claim(PAPER, "failure_mode", "E[g'(z)] = 0: the degree-k projection vanishes, ||P_k h||^2 -> 0",
          claim_failure_mode),
]
