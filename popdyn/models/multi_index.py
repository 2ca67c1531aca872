r"""Multi-index model with correlation loss on the sphere (Şimşek, Bendjeddou, Hsu, arXiv 2411.08798).

Model
-----
* Data :math:`x \sim N(0, I_d)`.
* Teacher :math:`f^*(x) = \sum_{j=1}^k a^*_j \sigma^*_j(v_j\cdot x)`, unit index vectors
  :math:`v_j` (rows of ``V``, shape ``(k, d)``), Gram :math:`G = V V^\top`.
* Student: ``N`` neurons :math:`w_i` on the unit sphere, :math:`f(x)=\sum_i \sigma(w_i\cdot x)`,
  **correlation loss** :math:`L = -E[f(x) f^*(x)] = \sum_i \ell(w_i)`; the neurons decouple.

Population loss of one neuron (Hermite correlation identity, DESIGN.md §1)
---------------------------------------------------------------------------
With :math:`u = V w \in \mathbb{R}^k` (so :math:`u_j = v_j\cdot w`, :math:`\|w\| = 1`):

.. math::

    \ell(w) = -\sum_{j=1}^k \phi_j(u_j), \qquad
    \phi_j(t) = a^*_j \sum_{p \ge 0} c_p(\sigma)\, c_p(\sigma^*_j)\, t^p .

Spherical gradient flow
-----------------------
:math:`\dot w = -(I - w w^\top)\nabla \ell(w) = (I - ww^\top) V^\top \phi'(u)`, which closes
in ``u`` (THEORY.md §1.7, verified there to 1e-10 against a d = 12 flow):

.. math::

    \dot u = G\, g(u) - u\,(u^\top g(u)), \qquad g_j(u) = \phi_j'(u_j)
           = a^*_j \sum_{p\ge1} p\, c_p(\sigma) c_p(\sigma^*_j)\, u_j^{p-1}.

This is the form quoted in the issue, with :math:`g_j` the derivative of the per-index
correlation kernel.  For non-polynomial activations the series is truncated at
``degree``; since :math:`|u_j| \le 1`, the truncation error of :math:`\phi_j` is bounded by
Cauchy–Schwarz, :math:`|a^*_j|\sqrt{T_n(\sigma) T_n(\sigma^*_j)}`, with :math:`T_n` the
tail masses (see :meth:`MultiIndexProblem.truncation_bound`).

References
----------
B. Şimşek, A. Bendjeddou, D. Hsu, "Learning Gaussian Multi-Index Models with Gradient
Flow: Time Complexity and Directional Convergence", AISTATS 2025 (arXiv 2411.08798).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from .._random import as_generator
from .._validation import check_choice, check_finite_array, check_int, check_real
from ..activations import Activation, get_activation

__all__ = ["MultiIndexProblem", "gram", "index_vectors", "GRAM_KINDS", "PSD_TOL"]

#: Eigenvalues of ``G`` above ``-PSD_TOL`` count as non-negative (rounding of a Gram
#: matrix built in floating point is ~1e-15; 1e-10 leaves room for user-typed values).
PSD_TOL = 1e-10
#: Tolerance on the unit diagonal of ``G`` (same reasoning).
DIAG_TOL = 1e-10
#: Default truncation degree for non-polynomial activations.
DEFAULT_DEGREE = 60
#: Above this Cauchy–Schwarz truncation bound a warning tells the user to raise `degree`.
TRUNCATION_WARN = 1e-4

GRAM_KINDS = ("orthogonal", "equiangular", "random", "custom")


def _check_gram(G, name: str = "G") -> np.ndarray:
    G = check_finite_array(name, G, ndim=2)
    k = G.shape[0]
    if G.shape != (k, k) or k < 1:
        raise ValueError(f"`{name}` must be a non-empty square matrix, got shape {G.shape}.")
    if not np.allclose(G, G.T, atol=1e-12, rtol=0):
        i, j = np.unravel_index(np.argmax(np.abs(G - G.T)), G.shape)
        raise ValueError(f"`{name}` must be symmetric; G[{i},{j}] = {G[i, j]} but G[{j},{i}] = {G[j, i]}.")
    diag = np.diag(G)
    if np.max(np.abs(diag - 1.0)) > DIAG_TOL:
        j = int(np.argmax(np.abs(diag - 1.0)))
        raise ValueError(
            f"`{name}` must have a unit diagonal (unit index vectors); G[{j},{j}] = {diag[j]}."
        )
    lam = np.linalg.eigvalsh(G)
    if lam[0] < -PSD_TOL:
        raise ValueError(
            f"`{name}` must be positive semidefinite; its smallest eigenvalue is {lam[0]:.6g} "
            f"(tolerance {PSD_TOL:g})."
        )
    G = 0.5 * (G + G.T)
    np.fill_diagonal(G, 1.0)
    return G


def gram(kind: str, k: int, *, beta: float | None = None, d: int | None = None, rng=None,
         G=None) -> np.ndarray:
    r"""Gram matrix :math:`G = V V^\top` of ``k`` unit index vectors.

    Parameters
    ----------
    kind : {"orthogonal", "equiangular", "random", "custom"}
        * ``orthogonal``: :math:`G = I_k`.
        * ``equiangular``: :math:`G = (1-\beta) I + \beta \mathbf{1}\mathbf{1}^\top`,
          PSD iff :math:`\beta \in [-1/(k-1), 1]`; we require the open interval
          :math:`(-1/(k-1), 1)` so the vectors are linearly independent.
        * ``random``: rows of ``V`` i.i.d. uniform on :math:`S^{d-1}` (near-orthogonal,
          overlaps :math:`O(d^{-1/2})`); needs ``d`` and takes ``rng``.
        * ``custom``: the user's ``G`` (validated: symmetric, PSD, unit diagonal).
    k : int
        Number of index vectors, ``k >= 1``.

    Examples
    --------
    >>> gram("equiangular", 3, beta=0.25)
    array([[1.  , 0.25, 0.25],
           [0.25, 1.  , 0.25],
           [0.25, 0.25, 1.  ]])
    """
    kind = check_choice("kind", kind, GRAM_KINDS)
    k = check_int("k", k, minimum=1)
    if kind == "orthogonal":
        return np.eye(k)
    if kind == "equiangular":
        if beta is None:
            raise ValueError("`beta` is required for an equiangular Gram matrix.")
        lo = -1.0 / (k - 1) if k > 1 else -np.inf
        beta = check_real("beta", beta)
        if not (lo < beta < 1.0):
            raise ValueError(
                f"`beta` must lie in (-1/(k-1), 1) = ({lo:.6g}, 1) for k = {k}, got {beta}."
            )
        return (1.0 - beta) * np.eye(k) + beta * np.ones((k, k))
    if kind == "random":
        if d is None:
            raise ValueError("`d` is required for a random Gram matrix (index vectors in dimension d).")
        d = check_int("d", d, minimum=1)
        V = as_generator(rng).standard_normal((k, d))
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        return _check_gram(V @ V.T)
    if G is None:
        raise ValueError("`G` is required for kind='custom'.")
    G = _check_gram(G)
    if G.shape[0] != k:
        raise ValueError(f"`G` must be {k}x{k} for k = {k}, got shape {G.shape}.")
    return G


def index_vectors(G, d: int, *, rng=None) -> np.ndarray:
    r"""Unit index vectors ``V`` (shape ``(k, d)``) in :math:`\mathbb{R}^d` with Gram ``G``.

    ``V = L R^T`` where :math:`G = L L^\top` (symmetric square root, valid for PSD ``G``)
    and ``R`` has ``k`` random orthonormal columns in :math:`\mathbb{R}^d` (Haar via QR).
    Needs ``d >= rank(G)``.
    """
    G = _check_gram(G)
    k = G.shape[0]
    d = check_int("d", d, minimum=1)
    lam, U = np.linalg.eigh(G)
    lam = np.clip(lam, 0.0, None)
    rank = int(np.sum(lam > PSD_TOL))
    if d < rank:
        raise ValueError(f"`d` must be at least rank(G) = {rank}, got {d}.")
    L = U * np.sqrt(lam)  # G = L L^T, L is k x k
    rng = as_generator(rng)
    m = min(d, k)
    A = rng.standard_normal((d, m))
    Qm, Rm = np.linalg.qr(A)
    Qm = Qm * np.sign(np.diag(Rm))  # Haar
    if m < k:  # d < k but d >= rank: keep the top-rank part of L
        order = np.argsort(lam)[::-1][:m]
        L = L[:, order]
    V = L @ Qm.T
    V /= np.linalg.norm(V, axis=1, keepdims=True)  # exact unit norm (rounding)
    return V


@dataclasses.dataclass(frozen=True, eq=False)
class MultiIndexProblem:
    r"""A multi-index teacher, a spherical student and the correlation loss.

    Parameters
    ----------
    student : str or Activation
        Student activation :math:`\sigma`.
    teacher : str, Activation, or sequence of them
        :math:`\sigma^*_j`; one for all ``j`` or one per index vector.
    G : array_like, shape (k, k)
        Gram matrix of the index vectors (see :func:`gram`).
    a_star : array_like, shape (k,), optional
        Second-layer teacher weights :math:`a^*_j`, default all ones.
    n_neurons : int
        Number of student neurons ``N >= 1``.
    degree : int
        Hermite truncation degree for non-polynomial activations (polynomials are exact
        at their own degree).

    Attributes
    ----------
    k : int
        Number of index vectors.
    gamma : ndarray, shape (k, degree + 1)
        :math:`\gamma_{jp} = a^*_j c_p(\sigma) c_p(\sigma^*_j)`, so
        :math:`\phi_j(t) = \sum_p \gamma_{jp} t^p`.
    """

    student: Activation
    teacher: tuple
    G: np.ndarray
    a_star: np.ndarray | None = None
    n_neurons: int = 1
    degree: int | None = None

    def __post_init__(self):
        student = get_activation(self.student)
        object.__setattr__(self, "student", student)
        G = _check_gram(self.G)
        object.__setattr__(self, "G", G)
        k = G.shape[0]
        teacher = self.teacher
        if isinstance(teacher, (str, Activation)) or callable(teacher):
            teacher = (teacher,) * k
        teacher = tuple(get_activation(t) for t in teacher)
        if len(teacher) != k:
            raise ValueError(f"`teacher` must be one activation or k = {k} of them, got {len(teacher)}.")
        object.__setattr__(self, "teacher", teacher)
        a = np.ones(k) if self.a_star is None else check_finite_array("a_star", self.a_star, ndim=1, shape=(k,))
        object.__setattr__(self, "a_star", a)
        object.__setattr__(self, "n_neurons", check_int("n_neurons", self.n_neurons, minimum=1))
        acts = (student,) + teacher
        if self.degree is None:
            if all(a.is_polynomial for a in acts):
                deg = max(a.degree for a in acts)
            else:
                deg = DEFAULT_DEGREE
        else:
            deg = check_int("degree", self.degree, minimum=1)
        object.__setattr__(self, "degree", deg)
        cs = student.coefficients(deg)
        gamma = np.stack([a[j] * cs * t.coefficients(deg) for j, t in enumerate(teacher)])
        gamma.setflags(write=False)
        object.__setattr__(self, "_gamma", gamma)
        p = np.arange(deg + 1, dtype=float)
        object.__setattr__(self, "_dgamma", gamma[:, 1:] * p[1:])
        object.__setattr__(self, "_d2gamma", gamma[:, 2:] * (p[2:] * (p[2:] - 1)))
        bound = self.truncation_bound()
        if bound > TRUNCATION_WARN:
            warnings.warn(
                f"Hermite truncation at degree {deg} bounds the loss error only by {bound:.2g}; "
                "pass a larger `degree` for more accuracy.", stacklevel=3,
            )

    # -- sizes ------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.G.shape[0]

    @property
    def gamma(self) -> np.ndarray:
        return self._gamma

    def truncation_bound(self) -> float:
        r"""Bound :math:`\max_j |a^*_j| \sqrt{T_n(\sigma) T_n(\sigma^*_j)}` on the loss truncation error."""
        ts = self.student.tail_mass(self.degree)
        return float(max(abs(a) * np.sqrt(ts * t.tail_mass(self.degree)) for a, t in zip(self.a_star, self.teacher)))

    # -- per-index kernel and derivatives (vectorised over leading axes) --------------
    @staticmethod
    def _polyval(coef: np.ndarray, u: np.ndarray) -> np.ndarray:
        # coef: (k, n+1) lowest first; u: (..., k) -> (..., k), Horner per index
        out = np.zeros_like(u)
        for p in range(coef.shape[1] - 1, -1, -1):
            out = out * u + coef[:, p]
        return out

    def phi(self, u) -> np.ndarray:
        r""":math:`\phi_j(u_j)` for ``u`` of shape ``(..., k)``."""
        return self._polyval(self._gamma, np.asarray(u, dtype=float))

    def g(self, u) -> np.ndarray:
        r""":math:`g_j(u) = \phi_j'(u_j)`, shape ``(..., k)``."""
        if self._dgamma.shape[1] == 0:
            return np.zeros_like(np.asarray(u, dtype=float))
        return self._polyval(self._dgamma, np.asarray(u, dtype=float))

    def dg(self, u) -> np.ndarray:
        r""":math:`\phi_j''(u_j)`, shape ``(..., k)``."""
        if self._d2gamma.shape[1] == 0:
            return np.zeros_like(np.asarray(u, dtype=float))
        return self._polyval(self._d2gamma, np.asarray(u, dtype=float))

    def loss(self, u) -> np.ndarray:
        r"""Population correlation loss of one neuron, :math:`\ell = -\sum_j \phi_j(u_j)`: shape ``(...)``."""
        return -self.phi(u).sum(axis=-1)

    def velocity(self, u) -> np.ndarray:
        r"""Spherical gradient-flow velocity :math:`\dot u = G g(u) - u (u^\top g(u))`, shape ``(..., k)``."""
        u = np.asarray(u, dtype=float)
        gu = self.g(u)
        return gu @ self.G - u * np.sum(u * gu, axis=-1, keepdims=True)

    def describe(self) -> dict:
        """JSON-friendly parameters (for results' ``meta``)."""
        return {
            "model": "multi_index", "student": self.student.name,
            "teacher": [t.name for t in self.teacher], "G": self.G.tolist(),
            "a_star": self.a_star.tolist(), "n_neurons": self.n_neurons, "degree": self.degree,
            "loss": "correlation", "truncation_bound": self.truncation_bound(),
        }
