r"""Hierarchical polynomial targets :math:`h = g\circ p` (arXiv 2311.13774): the problem,
its data and the formulas of the two training stages.

Wang, Nichani and Lee, "Learning Hierarchical Polynomials with Three-Layer Neural Networks"
(ICLR 2024).  The paper's text beyond its abstract was not available; what is reconstructed
(the feature class, the network's normalisations) is listed in
``theory/wang2023/equations.md``, "Reconstruction".

Target
------
Data :math:`x \sim N(0, I_d)`, labels :math:`y = g(p(x)) + \xi` with optional noise
:math:`\xi \sim N(0, \sigma^2)`, and the hidden feature

.. math::

    p(x) = \frac{\sum_{l=1}^{L} \lambda_l\, q(x_l)}{\sqrt{\sum_l \lambda_l^2\; E[q(z)^2]}},
    \qquad E[p] = 0,\ E[p^2] = 1,

a balanced sum of :math:`L \le d` independent pieces, each a degree-:math:`k` polynomial
:math:`q` (the ``piece``, default :math:`h_k = He_k/\sqrt{k!}`, with :math:`E[q] = 0`) of one
coordinate.  Equal weights give the feature :math:`p = L^{-1/2}\sum_l q(x_l)` of the
approximate Stein lemma (:mod:`popdyn.chaos`); :meth:`HierarchicalProblem.experiment` gives
the paper's experiment :math:`p = \sum_{i \le d/3}\lambda_i h_3(x_i)` (random
:math:`\lambda`).  The link :math:`g` (``link``) is a polynomial of degree :math:`q`, so
:math:`h` has degree :math:`kq`.

Stage formulas
--------------
*Stage 1* fits :math:`\hat p(x) = u^\top\sigma_1(Vx + s)` by ridge regression on ``n``
samples (:mod:`popdyn.models.hierarchical_sim`).  With :math:`m_1 \ge D_k(d)` random features
of a degree-:math:`k` :math:`\sigma_1` they span all polynomials of degree :math:`\le k`, a
space of dimension

.. math::

    D_m(d) = \binom{d + m}{m} \;\sim\; \frac{d^m}{m!},

and as :math:`n \to \infty` (ridge :math:`\to 0`) :math:`\hat p \to P_{\le k}h`.  The
approximate Stein lemma (the paper's Lemma 2; :func:`popdyn.chaos.stein_lemma`) says
:math:`P_{\le k}h \approx E[h] + c^* p` with :math:`c^* = E[g'(z)]`, so the population
correlation of the learned feature with :math:`p` is

.. math::

    \rho_\infty = \frac{E[h\,p]}{\sqrt{\sum_{1\le j\le k}\|P_j h\|^2}} \quad(\le 1),

exact from the chaos norms (:meth:`HierarchicalProblem.population`).  Where
:math:`P_{\le k}h = E[h] + \tilde c\,p` exactly (:math:`\rho_\infty = 1`; e.g. ``k = 2``,
equal weights, an even piece: every degree-2 chaos term other than :math:`\sum_l h_2(x_l)`
vanishes by symmetry), :math:`\tilde c = E[hp]` and ordinary least squares in the
degree-:math:`\le k` space has the leading-order feature error (:func:`stage1_law`)

.. math::

    E\big[(\hat p - P_{\le k}h)^2\big] \simeq \frac{A}{n}, \qquad
    A = E\big[\varepsilon(x)^2\, K_k(x, x)\big], \quad \varepsilon = y - P_{\le k}h(x),
    \quad K_k(x, x) = \sum_{|\alpha|\le k} H_\alpha(x)^2,

(the sandwich variance in an orthonormal basis :math:`H_\alpha = \prod_i h_{\alpha_i}(x_i)`;
:math:`E[K_k] = D_k(d)`, so :math:`A = \sigma_\varepsilon^2 D_k` for homoscedastic
:math:`\varepsilon`), hence :math:`\mathrm{corr}(\hat p, p) \simeq \tilde c/\sqrt{\tilde c^2 + A/n}`:
stage 1 needs :math:`n \propto D_k(d) \sim d^k` samples.

*Stage 2* fits the output layer on the scalar :math:`\hat p` (1-D random ReLU features), which
takes a number of samples independent of :math:`d`.  A kernel method with a rotation-invariant
kernel has to learn the whole degree-:math:`kq` polynomial :math:`h` and needs
:math:`n \propto D_{kq}(d) \sim d^{kq}` samples.  At the small :math:`d` a laptop allows, the
local log-log slopes of :math:`D_m(d)` (:func:`dimension_slope`) stand in for the exponents
:math:`m`: e.g. over :math:`d = 6..12`, :math:`D_2` has slope 1.70 and :math:`D_4` 3.11.

References
----------
Z. Wang, E. Nichani, J. D. Lee, arXiv 2311.13774 (ICLR 2024): abstract (sample complexities
:math:`\tilde O(d^k)` vs :math:`\tilde\Theta(d^{kq})`), Lemma 2 (approximate Stein lemma), the
experiments' feature :math:`\sum_{i\le d/3}\lambda_i h_3(x_i)`; ``theory/wang2023/equations.md``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from .._random import as_generator, seed_record
from .._validation import check_finite_array, check_int, check_real

__all__ = ["HierarchicalProblem", "Population", "Stage1Law", "poly_dimension", "dimension_slope", "dimension_laws",
           "christoffel_diagonal", "stage1_law", "DEFAULT_LINK", "MAX_K", "MAX_D"]

#: Default link g = h_1 + h_2 = z + (z^2 - 1)/sqrt 2: E[g'] = 1, degree q = 2, so h has degree 2k.
DEFAULT_LINK = "hermite:0,1,1"
#: Largest degree k of the feature (popdyn.chaos handles pieces up to degree 12; the network's
#: span D_k(d) = C(d + k, k) is what limits k in practice).
MAX_K = 6
#: Largest dimension (the feature p is a sum over coordinates; data arrays are n x d).
MAX_D = 100_000
#: Exact numbers from popdyn.chaos are used for features of at most this many pieces when
#: the weights are unequal (chaos.MAX_PIECE_TYPES); equal weights are exact for every L.
_ECHO = 40
#: Monte Carlo samples of the population quantities when the exact route does not apply.
DEFAULT_MC_SAMPLES = 200_000
#: Floats per chunk of the Monte Carlo loops (samples x d x ...): bounded memory at any d.
_MC_CHUNK_FLOATS = 2_000_000


def _echo(value) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO else text[: _ECHO - 3] + "..."


# --------------------------------------------------------------------------------------
# dimension counts (the sample scales of the two methods)
# --------------------------------------------------------------------------------------
def poly_dimension(d: int, m: int) -> int:
    r"""Dimension :math:`D_m(d) = \binom{d+m}{m}` of the polynomials of degree :math:`\le m` in ``d`` variables.

    The number of samples least squares (or kernel ridge regression) needs to fit a generic
    element of that space; :math:`D_m(d) \sim d^m/m!` as :math:`d \to \infty`.

    Parameters
    ----------
    d : int
        Number of variables (``>= 1``).
    m : int
        Largest degree (``>= 0``).

    Returns
    -------
    int
        :math:`\binom{d+m}{m}`, exactly.

    Examples
    --------
    >>> poly_dimension(12, 2), poly_dimension(12, 4)
    (91, 1820)
    """
    d = check_int("d", d, minimum=1)
    m = check_int("m", m, minimum=0)
    return math.comb(d + m, m)


def dimension_slope(ds, m: int) -> float:
    r"""Least-squares slope of :math:`\log D_m(d)` against :math:`\log d` over the grid ``ds``.

    The finite-:math:`d` stand-in for the exponent :math:`m` when a sample complexity is
    measured on the same grid (the local slope :math:`\sum_{j=1}^m d/(d+j)` tends to
    :math:`m` only slowly).

    Examples
    --------
    >>> round(dimension_slope((6, 8, 10, 12), 2), 3), round(dimension_slope((6, 8, 10, 12), 4), 3)
    (1.699, 3.112)
    """
    ds = _check_grid(ds)
    m = check_int("m", m, minimum=0)
    logs = np.array([math.log(math.comb(int(d) + m, m)) for d in ds])  # exact ints: no overflow
    return float(np.polyfit(np.log(ds), logs, 1)[0])


def dimension_laws(ds, m_max: int) -> dict:
    """``{"D_m": slope}`` for ``m = 1..m_max`` on the grid ``ds`` (:func:`dimension_slope`)."""
    m_max = check_int("m_max", m_max, minimum=1)
    return {f"D_{m}": dimension_slope(ds, m) for m in range(1, m_max + 1)}


def _check_grid(ds) -> np.ndarray:
    try:
        arr = np.asarray(ds, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`ds` must be a sequence of dimensions, got {_echo(ds)}.") from None
    if arr.ndim != 1 or arr.size < 2 or not np.all(np.isfinite(arr)) or np.any(arr < 1) or \
            np.any(arr != np.round(arr)) or np.unique(arr).size != arr.size:
        raise ValueError(f"`ds` must hold at least two distinct integer dimensions >= 1, got {_echo(ds)}.")
    return arr


def christoffel_diagonal(x, k: int) -> np.ndarray:
    r""":math:`K_k(x, x) = \sum_{|\alpha| \le k} \prod_i h_{\alpha_i}(x_i)^2` for each row of ``x``.

    The diagonal of the reproducing kernel of the polynomials of degree :math:`\le k` in
    :math:`L^2(N(0, I_d))`; :math:`E[K_k(x,x)] = D_k(d)`.  Computed as the sum of the
    coefficients of :math:`t^0..t^k` in :math:`\prod_{i=1}^d \sum_{a=0}^k h_a(x_i)^2 t^a`.

    Parameters
    ----------
    x : array_like, shape ``(..., d)``
    k : int
        Degree ``>= 0``.

    Returns
    -------
    ndarray, shape ``x.shape[:-1]``

    Examples
    --------
    >>> round(float(christoffel_diagonal([[0.0, 0.0]], 2)[0]), 12)   # 1 + 2 h_2(0)^2 = 1 + 2 * 1/2
    2.0
    """
    from ..hermite import h_values

    x = np.asarray(x, dtype=float)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"`x` must have shape (..., d) with d >= 1, got {x.shape}.")
    k = check_int("k", k, minimum=0, maximum=MAX_K * 4)
    H2 = h_values(x, k) ** 2                     # (k + 1,) + x.shape
    poly = np.zeros((k + 1,) + x.shape[:-1])
    poly[0] = 1.0
    for i in range(x.shape[-1]):                 # the truncated product, one coordinate at a time
        new = np.zeros_like(poly)
        for a in range(k + 1):
            new[a:] += poly[: k + 1 - a] * H2[a, ..., i]
        poly = new
    return poly.sum(axis=0)


# --------------------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Population:
    r"""Population quantities of :math:`h = g \circ p` (:meth:`HierarchicalProblem.population`).

    Attributes
    ----------
    mean : float
        :math:`E[h]`.
    variance : float
        :math:`\mathrm{Var}(h)` (without the label noise).
    overlap : float
        :math:`\tilde c = E[h\,p]`, the coefficient of :math:`p` in :math:`P_{\le k}h`.
    stage1_mass : float
        :math:`\sum_{1 \le j \le k}\|P_j h\|^2`, the non-constant part of stage 1's target.
    rho_inf : float
        :math:`\rho_\infty = \tilde c/\sqrt{\text{stage1\_mass}}`: the correlation of
        :math:`P_{\le k}h` with :math:`p` (a Monte Carlo value can exceed 1 by noise).
    affine : bool
        :math:`P_{\le k}h = E[h] + \tilde c\,p` exactly (only decided on the exact route).
    exact : bool
        Values from :mod:`popdyn.chaos` (exact) rather than Monte Carlo.
    se : dict
        Standard errors of the Monte Carlo values (empty when exact).
    """

    mean: float
    variance: float
    overlap: float
    stage1_mass: float
    rho_inf: float
    affine: bool
    exact: bool
    se: dict = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class HierarchicalProblem:
    r"""The target :math:`y = g(p(x)) + \xi` of arXiv 2311.13774 (module docstring).

    Parameters
    ----------
    d : int
        Input dimension, ``1 <= d <=`` :data:`MAX_D`.
    k : int
        Degree of the feature :math:`p`, ``1 <= k <=`` :data:`MAX_K`.
    link : str or Activation
        The outer polynomial :math:`g` (spec string: ``"hermite:0,1,1"``, ``"poly:z**3"``,
        ``"he2"``, ...), degree :math:`q \ge 1`.  :math:`E[g'(z)] = 0` is allowed but warned
        about (:class:`popdyn.chaos.ZeroSteinCoefficientWarning`): stage 1 then sees only the
        vanishing remainder of the Stein lemma.
    piece : str or Activation, optional
        The one-coordinate polynomial :math:`q` of degree exactly ``k`` with :math:`E[q] = 0`
        (default ``"he{k}"``).
    n_pieces : int, optional
        :math:`L`, the number of coordinates carrying a piece (``1..d``; default ``d``).
    weights : sequence of float, optional
        :math:`\lambda_1..\lambda_L`, not all zero (default: equal).  Only their direction
        matters (:math:`p` is normalised).
    noise : float
        Label noise standard deviation :math:`\sigma \ge 0`.

    Attributes
    ----------
    q : int
        Degree of :math:`g`.
    c_star : float
        :math:`c^* = E[g'(z)] = c_1(g)`.

    Examples
    --------
    >>> prob = HierarchicalProblem(12, 2)
    >>> prob.q, prob.c_star, prob.L, prob.stage1_dimension, prob.kernel_dimension
    (2, 1.0, 12, 91, 1820)
    """

    d: int
    k: int
    link: object = DEFAULT_LINK
    piece: object = None
    n_pieces: int | None = None
    weights: tuple | None = None
    noise: float = 0.0

    def __post_init__(self):
        from ..activations import Activation, get_activation

        d = check_int("d", self.d, minimum=1, maximum=MAX_D)
        k = check_int("k", self.k, minimum=1, maximum=MAX_K)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "k", k)
        g = self.link if isinstance(self.link, Activation) else get_activation(_spec("link", self.link))
        if not g.is_polynomial or g.degree < 1:
            raise ValueError(f"`link` must be a polynomial g of degree q >= 1 (arXiv 2311.13774: g of degree q), "
                             f"got {g.name!r}" + ("" if not g.is_polynomial else f" (degree {g.degree})") + ".")
        from ..chaos import MAX_OUTER_DEGREE

        if g.degree > MAX_OUTER_DEGREE:
            raise ValueError(f"`link` must have degree q <= {MAX_OUTER_DEGREE} (popdyn.chaos.MAX_OUTER_DEGREE), "
                             f"got degree {g.degree} ({g.name!r}).")
        piece = f"he{k}" if self.piece is None else self.piece
        qf = piece if isinstance(piece, Activation) else get_activation(_spec("piece", piece))
        if not qf.is_polynomial or qf.degree != k:
            got = f"degree {qf.degree}" if qf.is_polynomial else "not a polynomial"
            raise ValueError(f"`piece` must be a polynomial of degree exactly k = {k} (the feature p has degree k), "
                             f"got {qf.name!r} ({got}).")
        if qf.poly_coeffs[0] != 0:
            raise ValueError(f"`piece` must have mean zero, E[q(z)] = c_0(q) = 0 (so that E[p] = 0), got c_0 = "
                             f"{float(qf.poly_coeffs[0]):g} for {qf.name!r}.")
        L = d if self.n_pieces is None else check_int("n_pieces", self.n_pieces, minimum=1, maximum=d)
        object.__setattr__(self, "n_pieces", L)
        if self.weights is None:
            lam = np.full(L, 1.0)
        else:
            if isinstance(self.weights, (str, bytes)) or not hasattr(self.weights, "__len__"):
                raise TypeError(f"`weights` must be a sequence of {L} real numbers or None, got "
                                f"{_echo(self.weights)}.")
            lam = check_finite_array("weights", self.weights, ndim=1)
            if lam.size != L:
                raise ValueError(f"`weights` must have n_pieces = {L} entries, got {lam.size}.")
            if not np.any(lam != 0):
                raise ValueError("`weights` must not all be zero (p would vanish).")
            object.__setattr__(self, "weights", tuple(float(v) for v in lam))
        noise = check_real("noise", self.noise, lower=0.0)
        object.__setattr__(self, "noise", noise)
        object.__setattr__(self, "_g", g)
        object.__setattr__(self, "_q", qf)
        object.__setattr__(self, "_lam", lam / np.linalg.norm(lam))
        object.__setattr__(self, "_cache", {})
        if g.poly_coeffs[1] == 0:
            from ..chaos import ZeroSteinCoefficientWarning

            warnings.warn(ZeroSteinCoefficientWarning(
                f"`link` {g.name!r} has E[g'(z)] = c_1(g) = 0: by the approximate Stein lemma (arXiv 2311.13774, "
                f"Lemma 2) P_k h -> 0, so stage 1 learns only an O(1/L) remainder of p (allowed; expect no "
                f"feature learning)."), stacklevel=2)

    # -- structure ---------------------------------------------------------------------------
    @classmethod
    def experiment(cls, d: int, *, link=DEFAULT_LINK, noise: float = 0.0, rng=None) -> "HierarchicalProblem":
        r"""The paper's experimental feature :math:`p = \sum_{i \le d/3}\lambda_i h_3(x_i)`.

        ``k = 3``, :math:`L = \lfloor d/3 \rfloor` (at least 1) and :math:`\lambda_i` i.i.d.
        :math:`N(0, 1)` (then normalised) drawn from ``rng``: the distribution of the paper's
        :math:`\lambda_i` was not available (``theory/wang2023/equations.md``, "Reconstruction").
        """
        d = check_int("d", d, minimum=1, maximum=MAX_D)
        L = max(1, d // 3)
        lam = as_generator(rng).standard_normal(L)
        return cls(d, 3, link=link, piece="he3", n_pieces=L, weights=tuple(lam), noise=noise)

    @property
    def g(self):
        """The link :math:`g` as a :class:`popdyn.activations.Activation`."""
        return self._g

    @property
    def piece_function(self):
        """The piece :math:`q` as a :class:`popdyn.activations.Activation`."""
        return self._q

    @property
    def q(self) -> int:
        """Degree of the link :math:`g` (the paper's :math:`q`)."""
        return int(self._g.degree)

    @property
    def L(self) -> int:
        """Number of pieces."""
        return int(self.n_pieces)

    @property
    def lambdas(self) -> np.ndarray:
        """The weights normalised to unit Euclidean norm, shape ``(L,)``."""
        return self._lam.copy()

    @property
    def equal_weights(self) -> bool:
        return self.weights is None or len(set(self.weights)) == 1

    @property
    def c_star(self) -> float:
        """:math:`c^* = E[g'(z)] = c_1(g)` (exact for the polynomial link)."""
        return float(self._g.poly_coeffs[1])

    @property
    def stage1_dimension(self) -> int:
        """:math:`D_k(d)`: the span of stage 1 and its sample scale."""
        return poly_dimension(self.d, self.k)

    @property
    def kernel_dimension(self) -> int:
        """:math:`D_{kq}(d)`: the span a kernel method needs for :math:`h` and its sample scale."""
        return poly_dimension(self.d, self.k * self.q)

    def describe(self) -> dict:
        return {"model": "hierarchical", "paper": "2311.13774", "d": self.d, "k": self.k, "q": self.q,
                "link": self._g.name, "piece": self._q.name, "n_pieces": self.L,
                "weights": "equal" if self.weights is None else list(self.weights), "noise": self.noise}

    # -- the target and the data -------------------------------------------------------------
    def _x(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"`x` must have shape (..., d) with d = {self.d}, got {x.shape}.")
        return x

    def feature(self, x) -> np.ndarray:
        r"""The hidden feature :math:`p(x)`, shape ``x.shape[:-1]`` (``x``: ``(..., d)``)."""
        x = self._x(x)
        vals = self._q(x[..., : self.L])
        return vals @ self._lam / math.sqrt(self._q.second_moment)

    def target(self, x) -> np.ndarray:
        """The noiseless target :math:`h(x) = g(p(x))`, shape ``x.shape[:-1]``."""
        return self._g(self.feature(x))

    def sample(self, n: int, *, replicas: int | None = None, rng=None):
        """``(x, y, p)``: ``n`` samples ``x ~ N(0, I_d)``, labels ``y = g(p(x)) + noise`` and ``p(x)``.

        Shapes ``(n, d)``, ``(n,)``, ``(n,)``, or with a leading ``replicas`` axis.
        """
        from .._budget import check_memory, nbytes

        n = check_int("n", n, minimum=1)
        shape = (n,) if replicas is None else (check_int("replicas", replicas, minimum=1), n)
        check_memory(nbytes(*shape, self.d, 3), driver="n", value=n, what="the samples x (and the feature's "
                     "intermediate arrays)")
        gen = as_generator(rng)
        x = gen.standard_normal(shape + (self.d,))
        p = self.feature(x)
        y = self._g(p)
        if self.noise > 0:
            y = y + self.noise * gen.standard_normal(shape)
        return x, y, p

    # -- population (exact via popdyn.chaos, else Monte Carlo) -------------------------------
    @property
    def exact_route(self) -> bool:
        """True when :mod:`popdyn.chaos` computes this feature exactly: equal weights (any ``L``), or
        at most ``popdyn.chaos.MAX_PIECE_TYPES`` non-zero weights (one piece type each)."""
        from ..chaos import MAX_PIECE_TYPES

        return self.equal_weights or int(np.count_nonzero(self._lam)) <= MAX_PIECE_TYPES

    def _chaos_feature(self):
        """The feature as a :class:`popdyn.chaos.Feature`: exact normalisation for equal weights; unequal
        weights enter as the shortest rationals of their floats (one piece type each, ``L = 1``)."""
        import sympy

        from ..chaos import Feature, Piece, feature

        coeffs = self._q.poly_coeffs
        norm2 = sympy.nsimplify(sum(sympy.sympify(c) ** 2 for c in coeffs))
        if self.equal_weights:
            return feature(self._q.expr, self.L, weight=1 / sympy.sqrt(norm2))
        q = self._q.expr / sympy.sqrt(norm2)
        return Feature(tuple(Piece(q, weight=float(w)) for w in self._lam if w != 0), 1)

    def projection(self):
        r"""Exact chaos decomposition of :math:`h` (:func:`popdyn.chaos.chaos_projection`).

        Equal weights (any ``L``), or unequal weights on at most ``popdyn.chaos.MAX_PIECE_TYPES``
        pieces (:attr:`exact_route`).
        """
        if not self.exact_route:
            from ..chaos import MAX_PIECE_TYPES

            raise ValueError(f"the exact chaos projection needs equal `weights` or at most {MAX_PIECE_TYPES} "
                             f"non-zero ones (popdyn.chaos.MAX_PIECE_TYPES), got {np.count_nonzero(self._lam)} "
                             "unequal weights; use population(method='mc').")
        if "projection" not in self._cache:
            from ..chaos import chaos_projection

            self._cache["projection"] = chaos_projection(self._g.expr, self._chaos_feature())
        return self._cache["projection"]

    def stein_lemma(self):
        r"""The approximate Stein lemma's numbers (:func:`popdyn.chaos.stein_lemma`): :math:`c^*`,
        :math:`\|P_k h - c^* p\|^2` and :math:`\sum_{1\le j<k}\|P_j h\|^2`, exact; equal weights only.

        The zero-:math:`c^*` warning was already given when the problem was built.
        """
        if not self.equal_weights:
            raise ValueError("the exact Stein lemma needs equal `weights` (p = L^(-1/2) sum_l q(x_l)); use "
                             "population() or popdyn.chaos.stein_lemma_mc for other weights.")
        if "stein" not in self._cache:
            from ..chaos import ZeroSteinCoefficientWarning, stein_lemma

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ZeroSteinCoefficientWarning)
                self._cache["stein"] = stein_lemma(self._g.expr, self._chaos_feature())
        return self._cache["stein"]

    def population(self, *, method: str = "auto", n_samples: int = DEFAULT_MC_SAMPLES, rng=None) -> Population:
        r""":math:`E[h]`, :math:`\mathrm{Var}(h)`, :math:`E[hp]`, :math:`\sum_{1\le j\le k}\|P_jh\|^2`
        and :math:`\rho_\infty` (module docstring).

        ``method="exact"`` (:mod:`popdyn.chaos`; :attr:`exact_route`), ``"mc"`` (Monte Carlo
        with standard errors in ``se``: plain means for the moments, the unbiased U-statistic of
        :func:`popdyn.chaos.chaos_norms_mc` for the chaos mass) or ``"auto"`` (exact when it
        applies).
        """
        if method not in ("auto", "exact", "mc"):
            raise ValueError(f"`method` must be one of 'auto', 'exact', 'mc'; got {method!r}.")
        if method == "exact" or method == "auto" and self.exact_route:
            import sympy

            proj = self.projection()
            k = self.k
            overlap = sympy.nsimplify(sympy.Add(*proj.overlaps[1:k + 1]))
            mass = sympy.nsimplify(sympy.Add(*proj.norms[1:k + 1]))
            var = sympy.Add(*proj.norms[1:])
            affine = bool(sympy.simplify(overlap ** 2 - mass) == 0)
            rho = float(overlap) / math.sqrt(float(mass)) if float(mass) > 0 else 0.0
            return Population(mean=float(proj.mean), variance=float(var), overlap=float(overlap),
                              stage1_mass=float(mass), rho_inf=1.0 if affine else rho, affine=affine, exact=True)
        return self._population_mc(check_int("n_samples", n_samples, minimum=100), rng)

    def _population_mc(self, n_samples: int, rng) -> Population:
        from ..chaos import MAX_MC_BASIS, chaos_norms_mc

        basis = sum(math.comb(self.d + j - 1, j) for j in range(self.k + 1))
        if basis > MAX_MC_BASIS:
            raise ValueError(f"`d` = {self.d}: the Monte Carlo chaos mass of degrees <= k = {self.k} needs {basis} "
                             f"basis functions, more than popdyn.chaos.MAX_MC_BASIS = {MAX_MC_BASIS}; use equal weights "
                             "(exact route) or a smaller d.")
        gen = as_generator(rng)
        seed = seed_record(rng)
        sums = np.zeros(4)                                # h, h^2, hp, (hp)^2
        done = 0
        chunk = max(1, _MC_CHUNK_FLOATS // (3 * self.d))
        while done < n_samples:
            c = min(chunk, n_samples - done)
            _, _, p = self.sample(c, rng=gen)
            h = self._g(p)
            hp = h * p
            sums += [h.sum(), (h * h).sum(), hp.sum(), (hp * hp).sum()]
            done += c
        n = n_samples
        mean, overlap = sums[0] / n, sums[2] / n
        var = (sums[1] - n * mean * mean) / (n - 1)
        var_hp = (sums[3] - n * overlap * overlap) / (n - 1)
        est = chaos_norms_mc(self.target, self.d, self.k, n_samples=n_samples, rng=gen)
        mass, mass_se = est.total(range(1, self.k + 1))
        rho = overlap / math.sqrt(mass) if mass > 0 else 0.0
        return Population(mean=float(mean), variance=float(var), overlap=float(overlap), stage1_mass=mass,
                          rho_inf=float(rho), affine=False, exact=False,
                          se={"mean": float(math.sqrt(var / n)), "overlap": float(math.sqrt(var_hp / n)),
                              "stage1_mass": mass_se, "n_samples": n_samples, "seed": seed})


def _spec(name: str, value):
    if isinstance(value, str):
        return value
    raise TypeError(f"`{name}` must be an activation spec string (e.g. 'hermite:0,1,1', 'poly:z**3', 'he2') or a "
                    f"popdyn Activation, got {_echo(value)} ({type(value).__name__}).")


# --------------------------------------------------------------------------------------
# stage 1 in numbers: the least-squares law
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Stage1Law:
    r"""Leading-order law of stage 1's feature error (:func:`stage1_law`).

    Attributes
    ----------
    A : float
        :math:`E[\varepsilon^2 K_k(x,x)]` (Monte Carlo), so that
        :math:`E[(\hat p - P_{\le k}h)^2] \simeq A/n`.
    A_se : float
        Its standard error.
    overlap : float
        :math:`\tilde c = E[hp]` (exact).
    mean : float
        :math:`E[h]` (exact).
    dimension : int
        :math:`D_k(d)`.
    noise_variance : float
        :math:`E[\varepsilon^2]` (Monte Carlo; includes the label noise).
    """

    A: float
    A_se: float
    overlap: float
    mean: float
    dimension: int
    noise_variance: float
    meta: dict = dataclasses.field(default_factory=dict)

    def feature_error(self, n) -> np.ndarray:
        r""":math:`A/n`, the predicted :math:`E[(\hat p - P_{\le k}h)^2]` after ``n`` samples."""
        return self.A / np.asarray(n, dtype=float)

    def correlation(self, n) -> np.ndarray:
        r"""Predicted :math:`\mathrm{corr}(\hat p, p) = \tilde c/\sqrt{\tilde c^2 + A/n}`."""
        c = abs(self.overlap)
        return c / np.sqrt(c * c + self.feature_error(n))


def stage1_law(problem: HierarchicalProblem, *, n_samples: int = DEFAULT_MC_SAMPLES, rng=None) -> Stage1Law:
    r"""Stage 1's leading-order feature error :math:`A/n` (module docstring, "Stage formulas").

    Ordinary least squares in the orthonormal basis :math:`(H_\alpha)_{|\alpha|\le k}` of the
    degree-:math:`\le k` polynomials has
    :math:`\hat\beta - \beta = \hat\Sigma^{-1}\frac1n\sum_i H(x_i)\varepsilon_i` with
    :math:`\hat\Sigma \to I`, hence
    :math:`E\|\hat\beta - \beta\|^2 = E[\varepsilon^2\|H(x)\|^2]/n + O(n^{-2})` and
    :math:`\|H(x)\|^2 = K_k(x, x)` (:func:`christoffel_diagonal`).  Requires
    :math:`P_{\le k}h = E[h] + \tilde c\,p` exactly (``problem.population().affine``), so that
    :math:`\varepsilon = y - E[h] - \tilde c\,p` is known pointwise.  Valid for the network of
    :mod:`popdyn.models.hierarchical_sim` when :math:`m_1 \ge D_k(d)` and the ridge is small;
    the neglected terms are of relative order :math:`D_k/n` and, for the heavy-tailed
    :math:`\varepsilon^2 K_k`, converge slowly at small :math:`d` (``equations.md``).

    Parameters
    ----------
    problem : HierarchicalProblem
        With equal weights and :math:`\rho_\infty = 1` exactly.
    n_samples : int
        Monte Carlo samples for :math:`A`.
    rng : int, Generator or None

    Returns
    -------
    Stage1Law
    """
    if not isinstance(problem, HierarchicalProblem):
        raise TypeError(f"`problem` must be a HierarchicalProblem, got {type(problem).__name__}.")
    n_samples = check_int("n_samples", n_samples, minimum=100)
    pop = problem.population(method="exact") if problem.exact_route else None
    if pop is None or not pop.affine:
        raise ValueError("`problem`: the stage-1 law needs P_{<=k} h = E[h] + c p exactly (equal weights and "
                         "rho_inf = 1, e.g. k = 2 with an even piece); this problem has "
                         + ("too many unequal weights for the exact route." if pop is None else
                            f"rho_inf = {pop.rho_inf:.6g} < 1."))
    gen = as_generator(rng)
    seed = seed_record(rng)
    tot = tot2 = eps2 = 0.0
    done = 0
    chunk = max(1, _MC_CHUNK_FLOATS // (problem.d * (problem.k + 3)))
    while done < n_samples:
        c = min(chunk, n_samples - done)
        x, y, p = problem.sample(c, rng=gen)
        e2 = (y - pop.mean - pop.overlap * p) ** 2
        v = e2 * christoffel_diagonal(x, problem.k)
        tot += float(v.sum())
        tot2 += float((v * v).sum())
        eps2 += float(e2.sum())
        done += c
    A = tot / n_samples
    A_se = math.sqrt(max(tot2 / n_samples - A * A, 0.0) / (n_samples - 1))
    return Stage1Law(A=A, A_se=A_se, overlap=pop.overlap, mean=pop.mean, dimension=problem.stage1_dimension,
                     noise_variance=eps2 / n_samples, meta={"n_samples": n_samples, "seed": seed})
