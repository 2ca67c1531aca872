r"""Exact-law samplers of the low-dimensional projections of Gaussian samples.

The d-free ("exact") engines never materialise a ``d``-dimensional sample: they draw the
few inner products the update needs from their exact joint law.  The laws used are:

* :func:`chi_square` -- :math:`\|g\|^2` for :math:`g \sim N(0, I_k)`, i.e. :math:`\chi^2_k`,
  drawn as :math:`2\,\mathrm{Gamma}(k/2)` (numpy's Marsaglia--Tsang sampler, whose cost does
  not depend on ``k``).
* :func:`sphere_coordinate` -- the first coordinate :math:`\theta\cdot w` of a Haar-uniform
  unit vector :math:`w \in S^{n-1}`, :math:`g_1/\sqrt{g_1^2 + \chi^2_{n-1}}`.
* :class:`BartlettFactor` / :func:`bartlett_factor` / :func:`wishart` -- the Gram matrix
  :math:`S = G^\top G \sim \mathrm{Wishart}_p(n, I_p)` of ``p`` i.i.d. standard Gaussian
  vectors :math:`G_{\cdot b} \in \mathbb{R}^n`, through a factor :math:`S = L L^\top` drawn by
  the Bartlett decomposition in :math:`O(p^2)` operations, independent of ``n``.

Bartlett decomposition
----------------------
Gram--Schmidt of the ``p`` vectors gives a lower-triangular ``L`` with :math:`S = L L^\top`
whose entries are independent (0-based indices):

.. math::

    L_{ii}^2 \sim \chi^2_{n-i}\quad (i < n), \qquad
    L_{ij} \sim N(0, 1)\quad (j < i,\ j < n), \qquad \text{all other entries } 0 .

For integer ``n < p`` this is the singular Wishart law (rank ``n``): once ``n`` vectors span
:math:`\mathbb{R}^n` the remaining ones have no orthogonal component, so the columns
``j >= n`` vanish (``singular="triangular"``).  An equally valid factor of the singular
law is the ``p x n`` matrix of the vectors' coordinates itself, all entries i.i.d.
:math:`N(0,1)` (``singular="gaussian"``).

Random-stream order
-------------------
The models' seeded results depend on the order in which a sampler consumes the stream,
so the order is part of each function's contract and is stated in its docstring.
:class:`BartlettFactor` draws the diagonal chi-squares (all of them, in row order, for
every batch element) before the below-diagonal normals by default
(``order="chi2_first"``, as used by :mod:`popdyn.models.committee_exact`);
``order="normals_first"`` draws the normals first (as used by
:mod:`popdyn.models.reuse_sim`).  Both give the same law.

This module is a foundation module: it depends on numpy only (and :mod:`popdyn._random`,
:mod:`popdyn._validation`), never on the engines or the models.

References
----------
M. S. Bartlett, "On the theory of statistical regression", Proc. R. Soc. Edinburgh 53
(1933), 260--283 (the decomposition).
T. W. Anderson, *An Introduction to Multivariate Statistical Analysis*, 3rd ed., Wiley
(2003), Corollary 7.2.1 and Theorem 7.2.1 (the joint law of the Bartlett factor).
G. Marsaglia, W. W. Tsang, "A simple method for generating gamma variables", ACM TOMS 26
(2000) (the gamma sampler behind :func:`chi_square`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._random import as_generator
from ._validation import check_choice, check_int

__all__ = ["chi_square", "sphere_coordinate", "BartlettFactor", "bartlett_factor", "wishart",
           "BARTLETT_ORDERS", "SINGULAR_FORMS"]

#: Stream orders of :class:`BartlettFactor` (see the module docstring).
BARTLETT_ORDERS = ("chi2_first", "normals_first")
#: Forms of the factor of a singular Wishart law (``dof < dim``).
SINGULAR_FORMS = ("triangular", "gaussian")


def _size(size) -> tuple:
    if size is None:
        return ()
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size,)
    try:
        items = tuple(size)
    except TypeError:
        items = None
    if items is None or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in items):
        raise TypeError(f"`size` must be an int or a tuple of ints, got {size!r}.")
    size = tuple(int(s) for s in items)
    if any(s < 0 for s in size):
        raise ValueError(f"`size` must have non-negative entries, got {size}.")
    return size


def chi_square(rng, dof, size=None) -> np.ndarray | float:
    r"""Chi-square variates :math:`\chi^2_k`, the law of :math:`\|g\|^2` for :math:`g \sim N(0, I_k)`.

    Drawn as :math:`2\,\mathrm{Gamma}(k/2, 1)` with ``rng.standard_gamma`` (one call; the values
    are bit-identical to ``rng.chisquare(dof, size)``).  Mean ``k``, variance ``2k``.

    Parameters
    ----------
    rng : int, Generator, SeedSequence or None
    dof : float or array_like
        Degrees of freedom :math:`k \ge 0` (``0`` gives exactly 0); broadcast against
        ``size`` as numpy does.
    size : int, tuple of int or None
        Output shape (``None``: the shape of ``dof``).

    Returns
    -------
    float or ndarray

    Examples
    --------
    >>> x = chi_square(0, 5, size=100_000)
    >>> bool(abs(x.mean() - 5) < 0.05)
    True
    """
    if type(rng) is not np.random.Generator:  # the exact engines' inner loops pass a Generator
        rng = as_generator(rng)
    if type(dof) is int or type(dof) is float:  # fast path (NaN fails the comparison)
        if not 0 <= dof < math.inf:
            raise ValueError(f"`dof` must be a finite real >= 0, got {dof!r}.")
        half = dof / 2.0
    elif np.ndim(dof) == 0:
        if isinstance(dof, bool) or not isinstance(dof, numbers.Real) or not 0 <= dof < math.inf:
            raise ValueError(f"`dof` must be a finite real >= 0, got {dof!r}.")
        half = dof / 2.0
    else:
        dof = np.asarray(dof, dtype=float)
        if not np.all(np.isfinite(dof) & (dof >= 0)):
            raise ValueError(f"`dof` must be finite reals >= 0, got min {np.min(dof)!r}.")
        half = dof / 2.0
    return 2.0 * rng.standard_gamma(half, size=size)


def sphere_coordinate(rng, dim: int, size=None) -> np.ndarray | float:
    r"""The first coordinate of a Haar-uniform unit vector of :math:`\mathbb{R}^n` (``n = dim``).

    With :math:`w = g/\|g\|`, :math:`g \sim N(0, I_n)`, the coordinate
    :math:`w_1 = g_1/\sqrt{g_1^2 + \chi^2_{n-1}}` (the two terms independent) has density
    :math:`\propto (1 - x^2)^{(n-3)/2}` on [-1, 1]; mean 0, variance :math:`1/n`.
    Stream order: the ``size`` normals :math:`g_1`, then the ``size`` chi-squares.

    Parameters
    ----------
    rng : int, Generator, SeedSequence or None
    dim : int
        Dimension ``n >= 1`` (``n = 1`` gives :math:`\pm 1`).
    size : int, tuple of int or None

    Examples
    --------
    >>> x = sphere_coordinate(0, 50, size=100_000)
    >>> bool(abs(x.var() - 1 / 50) < 1e-3)
    True
    """
    rng = as_generator(rng)
    dim = check_int("dim", dim, minimum=1)
    g = rng.standard_normal(size)
    return g / np.sqrt(g * g + chi_square(rng, dim - 1, size=size))


class BartlettFactor:
    r"""Sampler of a factor ``F`` with :math:`F F^\top \sim \mathrm{Wishart}_p(n, I_p)`.

    ``n = dof`` (the dimension of the space the ``p = dim`` Gaussian vectors live in), drawn
    by the Bartlett decomposition (module docstring) in :math:`O(p^2)` per matrix.  The index
    pattern is computed once here, so :meth:`draw` is cheap in a stepper's inner loop.

    Parameters
    ----------
    dof : int
        Degrees of freedom ``n >= 0``.
    dim : int
        Matrix size ``p >= 1``.
    order : {"chi2_first", "normals_first"}
        Stream order of one :meth:`draw`: the chi-square diagonal (shape ``size + (k,)``,
        ``k = min(n, p)``; a single scalar-``dof`` call when ``k = 1``) then the
        below-diagonal normals (shape ``size + (m,)``, row-major order of
        ``numpy.tril_indices(p, -1)`` restricted to columns ``< n``), or the reverse.
    singular : {"triangular", "gaussian"}
        Factor returned when ``n < p``: the ``p x p`` Bartlett factor with vanishing columns
        ``j >= n``, or the ``p x n`` i.i.d. Gaussian coordinate matrix (then one draw of
        shape ``size + (p, n)`` and ``order`` is irrelevant).

    Attributes
    ----------
    shape : tuple
        ``(p, q)``: the shape of one factor (``q = n`` for a Gaussian singular factor, else ``p``).

    Examples
    --------
    >>> F = BartlettFactor(5, 3).draw(0, size=(2,))
    >>> F.shape, bool(np.all(np.triu(F, 1) == 0))
    ((2, 3, 3), True)
    """

    def __init__(self, dof: int, dim: int, *, order: str = "chi2_first", singular: str = "triangular"):
        self.dof = check_int("dof", dof, minimum=0)
        self.dim = check_int("dim", dim, minimum=1)
        self.order = check_choice("order", order, BARTLETT_ORDERS)
        self.singular = check_choice("singular", singular, SINGULAR_FORMS)
        n, p = self.dof, self.dim
        self._gaussian = singular == "gaussian" and n < p
        self.shape = (p, n) if self._gaussian else (p, p)
        i = np.arange(p)
        self._diag = i[i < n]
        self._df = (n - self._diag).astype(float)
        self._df0 = float(self._df[0]) if self._df.size else 0.0
        rows, cols = np.tril_indices(p, -1)
        keep = cols < n
        self._rows, self._cols = rows[keep], cols[keep]

    def __repr__(self) -> str:
        return f"BartlettFactor(dof={self.dof}, dim={self.dim}, order={self.order!r}, singular={self.singular!r})"

    def draw(self, rng, size=(), out=None) -> np.ndarray:
        """Draw factors of shape ``size + self.shape``.

        Parameters
        ----------
        rng : int, Generator, SeedSequence or None
        size : int or tuple of int
            Leading batch shape (ignored when ``out`` is given).
        out : ndarray, optional
            Array of shape ``batch + self.shape`` to fill in place.  Only the entries of the
            pattern are written: the rest must already be zero (e.g. an array from
            ``numpy.zeros`` reused between draws).

        Returns
        -------
        ndarray
            ``out`` when given, else a new array.
        """
        if type(rng) is not np.random.Generator:  # the exact engines' inner loops pass a Generator
            rng = as_generator(rng)
        if out is None:
            size = _size(size)
            if self._gaussian:
                return rng.standard_normal(size + self.shape)
            out = np.zeros(size + self.shape)
        else:
            if type(out) is not np.ndarray or out.shape[-2:] != self.shape:
                raise ValueError(f"`out` must be an ndarray of shape (..., {self.shape[0]}, {self.shape[1]}), "
                                 f"got {getattr(out, 'shape', type(out).__name__)}.")
            size = out.shape[:-2]
            if self._gaussian:
                out[...] = rng.standard_normal(size + self.shape)
                return out
        if self.order == "chi2_first":
            self._fill_diagonal(out, rng, size)
            self._fill_below(out, rng, size)
        else:
            self._fill_below(out, rng, size)
            self._fill_diagonal(out, rng, size)
        return out

    def _fill_diagonal(self, out, rng, size) -> None:
        # Generator.chisquare(k) is 2 * standard_gamma(k / 2) evaluated in C: the same numbers
        # as chi_square, without the temporary array
        diag = self._diag
        if diag.size == 1:  # scalar degrees of freedom: numpy's fast path
            out[..., 0, 0] = np.sqrt(rng.chisquare(self._df0, size=size))
        elif diag.size:
            out[..., diag, diag] = np.sqrt(rng.chisquare(self._df, size=size + (diag.size,)))

    def _fill_below(self, out, rng, size) -> None:
        if self._rows.size:
            out[..., self._rows, self._cols] = rng.standard_normal(size + (self._rows.size,))


def bartlett_factor(rng, dof: int, dim: int, size=(), *, order: str = "chi2_first",
                    singular: str = "triangular") -> np.ndarray:
    r"""Factors ``F`` (shape ``size + (p, q)``) with :math:`F F^\top \sim \mathrm{Wishart}_p(n, I_p)`.

    One-shot form of :class:`BartlettFactor` (``dof = n``, ``dim = p``; see there for
    ``order`` and ``singular``).  Bartlett (1933); Anderson (2003), Theorem 7.2.1.

    Examples
    --------
    >>> F = bartlett_factor(0, 7, 3, size=(4,))
    >>> F.shape
    (4, 3, 3)
    """
    return BartlettFactor(dof, dim, order=order, singular=singular).draw(rng, size)


def wishart(rng, dof: int, dim: int, size=()) -> np.ndarray:
    r"""Matrices :math:`S \sim \mathrm{Wishart}_p(n, I_p)`, shape ``size + (p, p)``.

    :math:`S = L L^\top` with ``L`` from :func:`bartlett_factor` (default order).  Moments:
    :math:`E S_{ij} = n\delta_{ij}`, :math:`\mathrm{Var}\, S_{ii} = 2n`,
    :math:`\mathrm{Var}\, S_{ij} = n` (``i != j``); rank ``min(n, p)``.

    Examples
    --------
    >>> S = wishart(0, 4, 2, size=(3,))
    >>> S.shape, bool(np.allclose(S, S.transpose(0, 2, 1)))
    ((3, 2, 2), True)
    """
    L = bartlett_factor(rng, dof, dim, size)
    return L @ np.swapaxes(L, -1, -2)
