r"""Multi-index model with correlation loss on the sphere (Şimşek, Bendjeddou, Hsu, arXiv 2411.08798).

Model
-----
* Data :math:`x \sim N(0, I_d)`.
* Teacher :math:`f^*(x) = \sum_{j=1}^k a^*_j \sigma^*_j(v_j\cdot x)`, unit index vectors
  :math:`v_j` (rows of ``V``, shape ``(k, d)``), Gram :math:`G = V V^\top`.
* Student: ``N`` neurons :math:`w_i` on the unit sphere, :math:`f(x)=\sum_i \sigma(w_i\cdot x)`,
  **correlation loss** :math:`L = -E[f(x) f^*(x)] = \sum_i \ell(w_i)`; the neurons decouple.

Population loss of one neuron (Hermite correlation identity, ``popdyn.__doc__``)
--------------------------------------------------------------------------------
With :math:`u = V w \in \mathbb{R}^k` (so :math:`u_j = v_j\cdot w`, :math:`\|w\| = 1`):

.. math::

    \ell(w) = -\sum_{j=1}^k \phi_j(u_j), \qquad
    \phi_j(t) = a^*_j \sum_{p \ge 0} c_p(\sigma)\, c_p(\sigma^*_j)\, t^p .

Spherical gradient flow
-----------------------
:math:`\dot w = -(I - w w^\top)\nabla \ell(w) = (I - ww^\top) V^\top \phi'(u)`, which closes
in ``u`` (theory/simsek2025/equations.md; checked against the d-dimensional flow in the tests):

.. math::

    \dot u = G\, g(u) - u\,(u^\top g(u)), \qquad g_j(u) = \phi_j'(u_j)
           = a^*_j \sum_{p\ge1} p\, c_p(\sigma) c_p(\sigma^*_j)\, u_j^{p-1}.

This is the form quoted in the issue, with :math:`g_j` the derivative of the per-index
correlation kernel.  For non-polynomial activations the series is truncated at
``degree``; since :math:`|u_j| \le 1`, the truncation error of :math:`\phi_j` is bounded by
Cauchy–Schwarz, :math:`|a^*_j|\sqrt{T_n(\sigma) T_n(\sigma^*_j)}`, with :math:`T_n` the
tail masses (see :meth:`MultiIndexProblem.truncation_bound`).

Symbolic form, ODE protocol, online-SGD correction
--------------------------------------------------
* :func:`population_loss_expr`, :func:`population_loss_latex`, :func:`velocity_exprs`
  and :func:`loss_report` give the loss and the u-ODE in closed form (sympy).
* :class:`MultiIndexProblem` implements the ODE protocol of :mod:`popdyn.ode`
  (``ode_initial_state``, ``ode_rhs``, escape/speed observables, ...), so
  ``popdyn.ode.integrate(problem, u0, t_end)`` integrates ``N`` neurons at once.
* :meth:`MultiIndexProblem.noise_moment` gives
  :math:`C(u) = E[f^*(x)^2\sigma'(w\cdot x)^2]`, the coefficient of the online-SGD
  normalisation term :math:`-\eta(d-1)C(u)u/(2B)` (derivation in
  :func:`popdyn.ode.integrate`).

Shared with other models (many index vectors, per-neuron students)
-------------------------------------------------------------------
* :func:`sphere_velocity` is the per-neuron overlap ODE
  :math:`\dot u = s\,[G g(u) - (u^\top g(u))\,u]` for *any* per-coordinate derivative
  :math:`g_j` (one link per index vector, possibly one student per neuron) and a signal
  scale ``s``; :meth:`MultiIndexProblem.velocity` is the case ``s = 1``.  The additive model
  of arXiv 2406.11828 (:mod:`popdyn.models.additive`) uses it with :math:`s = M^{-1/2}`.
* :func:`wick_noise_moment` is the exact polynomial :math:`C(u)` written with Hadamard
  powers of ``G``: cost :math:`O(N k^2)` per term and no :math:`O(k^2)` set-up loop, so it
  serves thousands of index vectors; it also takes one student per neuron.
  ``noise_moment(method="gram")`` uses it (the ``"auto"`` choice for ``k > WICK_GRAM_K``).

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

__all__ = [
    "MultiIndexProblem",
    "gram",
    "index_vectors",
    "GRAM_KINDS",
    "PSD_TOL",
    "u_symbols",
    "population_loss_expr",
    "population_loss_latex",
    "velocity_exprs",
    "loss_report",
    "SPHERE_TOL",
    "sphere_velocity",
    "wick_noise_moment",
    "WICK_GRAM_K",
]

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

#: An initial ``u0`` may exceed the unit sphere, :math:`u^\top G^+ u \le 1`, and leave
#: range(G) by this much (rounding of ``V w`` is ~1e-15; room for typed-in values).
SPHERE_TOL = 1e-9
#: During integration, :math:`u^\top G^+ u - 1` above this means the solver has drifted
#: off the sphere (the exact flow keeps it <= 1): a NumericalError says to tighten `rtol`.
SPHERE_DRIFT_TOL = 1e-4
#: Nodes per dimension for :meth:`MultiIndexProblem.noise_moment` when an activation is
#: not a polynomial (equispaced rule; measured accuracy in that method's Notes).
NONPOLY_OUTER_NODES = 64
NONPOLY_INNER_NODES = 48
#: Half-width of the equispaced rule used for non-polynomial activations: the Gaussian
#: weight is 2e-22 there, below double precision relative to polynomial growth ~z^8.
_TRAPEZOID_HALF_WIDTH = 10.0
#: Largest polynomial degree for the exact (Wick) polynomial form of the noise moment;
#: beyond it the set-up (k^2 degree^3 terms) and the factorial ratios grow large.
MAX_WICK_DEGREE = 40
#: Above this many index vectors ``noise_moment(method="auto")`` uses the Hadamard-power
#: form (:func:`wick_noise_moment`) for polynomials: the ``"polynomial"`` form builds a
#: ``(k(p+1))^2`` matrix in a Python loop over the ``k^2`` pairs (~0.1 s at k = 32, minutes
#: and hundreds of MB at k = 1000), while the Hadamard form has no set-up at all.
WICK_GRAM_K = 32
#: Chunk size (number of quadrature evaluations) that bounds the memory of one
#: vectorised block of :meth:`MultiIndexProblem.noise_moment` (~32 MB of float64).
_NOISE_CHUNK = 4_000_000
#: Numeric Hermite coefficients at or below this are printed as 0 in the symbolic loss
#: (their quadrature accuracy is 1e-12, popdyn.hermite.QUAD_TOL).
_NUMERIC_ZERO = 1e-12


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
    beta : float, optional
        Common overlap :math:`\beta` for ``kind="equiangular"`` (required there), in
        :math:`(-1/(k-1), 1)` (any :math:`\beta < 1` for ``k = 1``).  Ignored otherwise.
    d : int, optional
        Dimension :math:`d \ge 1` of the index vectors for ``kind="random"`` (required there).
    rng : int, numpy Generator or None, optional
        Seed or generator for ``kind="random"``.
    G : array_like, shape (k, k), optional
        The Gram matrix for ``kind="custom"`` (required there): symmetric, positive
        semi-definite, unit diagonal.

    Returns
    -------
    ndarray, shape (k, k)
        The Gram matrix :math:`G_{ij} = v_i\cdot v_j` (unit diagonal, PSD).

    Raises
    ------
    ValueError
        Unknown ``kind``, ``k < 1``, ``beta`` missing or outside its interval, ``d`` or ``G``
        missing where required, ``G`` not a valid ``k x k`` Gram matrix.

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

    Parameters
    ----------
    G : array_like, shape (k, k)
        Gram matrix of the index vectors: symmetric, positive semi-definite, unit diagonal
        (e.g. from :func:`gram`).
    d : int
        Ambient dimension, ``d >= rank(G)``.
    rng : int, numpy Generator or None, optional
        Seed or generator for the random rotation ``R``.

    Returns
    -------
    ndarray, shape (k, d)
        Rows :math:`v_1, \dots, v_k` with :math:`\|v_i\| = 1` and :math:`V V^\top = G` (up to
        rounding); their orientation in :math:`\mathbb{R}^d` is uniformly random.
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
        return sphere_velocity(u, self.g(u), self.G)

    # -- unit sphere in overlap space ---------------------------------------------------
    def _range_projector(self):
        """Cached ``(G^+, P_null)``: pseudo-inverse of ``G`` and projector onto ker(G)."""
        cache = self.__dict__.setdefault("_cache", {})
        if "pinv" not in cache:
            lam, U = np.linalg.eigh(self.G)
            keep = lam > PSD_TOL
            Gp = (U[:, keep] / lam[keep]) @ U[:, keep].T
            Pn = U[:, ~keep] @ U[:, ~keep].T
            cache["pinv"] = (Gp, Pn)
        return cache["pinv"]

    def sphere_norm2(self, u) -> np.ndarray:
        r""":math:`u^\top G^+ u = \|P_{\mathrm{span}V} w\|^2` for ``u = V w``: shape ``(...)``.

        The flow keeps ``w`` on the unit sphere, so this is ``<= 1`` along any exact
        trajectory, with equality iff ``w`` lies in span(V).
        """
        u = np.asarray(u, dtype=float)
        Gp, _ = self._range_projector()
        return np.einsum("...j,jl,...l->...", u, Gp, u)

    # -- ODE protocol (see popdyn.ode) ----------------------------------------------------
    #: Name recorded in ``Trajectory.model``.
    ode_model = "multi_index"
    #: One state array, the overlaps ``u`` of shape ``(N, k)``.
    ode_state_names = ("u",)
    #: How compare and plot present this model: one panel per neuron for ``u``; the
    #: online-SGD term the ODE adds (arXiv 2411.08798 conventions, package docstring).
    plot_unit_overlap = "u"
    ode_correction_label = "eta*(d-1)/(2B) C(u) u"

    def end_labels(self, state) -> list:
        """Where each neuron ends: ``"+v1"``, ``"-v3"`` or ``"none"`` (:func:`popdyn.comparison.final_directions`)."""
        from ..comparison import final_directions

        return final_directions(np.asarray(state["u"]))

    def ode_initial_state(self, u0) -> dict:
        r"""Validate the initial overlaps and return ``{"u": array (N, k)}``.

        ``u0`` has shape ``(N, k)`` or ``(k,)`` (one neuron).  It must be realisable as
        ``V w`` with a unit ``w``: :math:`u_0^\top G^+ u_0 \le 1` and ``u0`` in range(G),
        both up to :data:`SPHERE_TOL`.  ``N`` need not equal ``n_neurons``: the neurons
        decouple under the correlation loss.
        """
        u = check_finite_array("u0", u0)
        if u.ndim == 1:
            u = u[None, :]
        if u.ndim != 2 or u.shape[1] != self.k or u.shape[0] < 1:
            raise ValueError(f"`u0` must have shape (N, k={self.k}) or (k,), got {np.shape(u0)}.")
        _, Pn = self._range_projector()
        off = np.linalg.norm(u @ Pn, axis=-1)
        if off.max() > SPHERE_TOL:
            i = int(np.argmax(off))
            raise ValueError(
                f"`u0` is not of the form V w: neuron {i} has a component {off[i]:.3g} outside "
                f"range(G) (G is singular; tolerance {SPHERE_TOL:g})."
            )
        q = self.sphere_norm2(u)
        if q.max() > 1.0 + SPHERE_TOL:
            i = int(np.argmax(q))
            raise ValueError(
                f"`u0` is not consistent with a unit vector w: u0^T G^+ u0 must be <= 1, "
                f"got {q[i]:.12g} for neuron {i} (tolerance {SPHERE_TOL:g})."
            )
        return {"u": np.array(u, dtype=float)}

    def ode_validate_options(self, *, eta=None, d=None, batch=1, noise_nodes=None) -> dict:
        """Check the online-SGD options once (``eta`` and ``d`` go together)."""
        if (eta is None) != (d is None):
            raise ValueError(
                "`eta` and `d` must be given together (the online-SGD correction needs both); "
                f"got eta={eta!r}, d={d!r}."
            )
        out = {"eta": None, "d": None, "batch": check_int("batch", batch, minimum=1), "noise_nodes": None}
        if eta is not None:
            out["eta"] = check_real("eta", eta, lower=0.0, lower_open=True)
            out["d"] = check_int("d", d, minimum=2)
            if noise_nodes is not None:
                if len(noise_nodes) != 2:
                    raise ValueError(f"`noise_nodes` must be a pair (outer, inner), got {noise_nodes!r}.")
                noise_nodes = (check_int("noise_nodes[0]", noise_nodes[0], minimum=1),
                               check_int("noise_nodes[1]", noise_nodes[1], minimum=1))
            # resolved once, recorded in the trajectory's meta
            out["noise_method"], out["noise_nodes"] = self._noise_plan(noise_nodes, "auto")
        return out

    def ode_rhs(self, t, state, *, eta=None, d=None, batch=1, noise_nodes=None,
                noise_method: str = "auto") -> dict:
        r"""Right-hand side of the u-ODE, vectorised over neurons.

        .. math::

            \dot u_i = G g(u_i) - u_i (u_i^\top g(u_i))
                       \;[\, - \tfrac{\eta (d-1)}{2B} C(u_i)\, u_i \,]

        The bracket is the online-SGD (Itô/normalisation) correction, present when
        ``eta`` and ``d`` are given; see :func:`popdyn.ode.integrate` for its derivation
        and :meth:`noise_moment` for ``C``.  ``t`` is unused (autonomous).
        """
        u = state["u"]
        v = self.velocity(u)
        if eta is not None:
            c = self.noise_moment(u, nodes=noise_nodes, method=noise_method)
            v -= (eta * (d - 1) / (2.0 * batch)) * c[..., None] * u
        return {"u": v}

    def ode_time_unit(self, *, eta=None, **_) -> str:
        """``"t = eta * steps"`` with the SGD correction, else ``"gradient-flow time t"``."""
        return "gradient-flow time t" if eta is None else "t = eta * steps"

    def ode_escape_observable(self, state) -> np.ndarray:
        r"""Per-neuron :math:`\max_j |u_{ij}|`, shape ``(N,)`` (escape from the equator)."""
        return np.max(np.abs(state["u"]), axis=-1)

    def ode_escape_bound(self) -> tuple:
        r"""``(bound, reason)``: :math:`|u_j| = |v_j\cdot w| \le \|v_j\| = \sqrt{G_{jj}}`
        on the unit sphere, so an ``escape_level`` above :math:`\max_j\sqrt{G_{jj}}` is never reached."""
        bound = float(np.sqrt(np.max(np.diag(self.G))))
        return bound, f"|u_j| <= sqrt(G_jj) <= {bound:.6g} on the unit sphere"

    def ode_unit_speed(self, deriv) -> np.ndarray:
        r"""Per-neuron speed :math:`\|\dot u_i\|_2`, shape ``(N,)`` (convergence test)."""
        return np.linalg.norm(deriv["u"], axis=-1)

    def ode_check_state(self, state) -> str | None:
        """``None``, or why the state is no longer on the unit sphere (solver drift)."""
        q = self.sphere_norm2(state["u"])
        if q.max() > 1.0 + SPHERE_DRIFT_TOL:
            i = int(np.argmax(q))
            return (f"neuron {i} left the unit sphere: u^T G^+ u = {q[i]:.8g} > 1 + {SPHERE_DRIFT_TOL:g} "
                    "(the exact flow keeps it <= 1)")
        return None

    def ode_jac_sparsity(self, state):
        """Block-diagonal Jacobian pattern (neurons decouple), for implicit methods."""
        from scipy import sparse

        n = state["u"].shape[0]
        return sparse.kron(sparse.identity(n, format="csr"), np.ones((self.k, self.k)), format="csr")

    # -- online-SGD noise moment C(u) ---------------------------------------------------------
    def _noise_node_counts(self, nodes=None) -> tuple:
        r"""``(n_outer, n_inner)`` of the quadrature in :meth:`noise_moment`.

        ``n_inner == 0`` means the inner expectation is in closed form (piecewise
        constant :math:`\sigma'`).
        """
        s = self.student
        if s.is_polynomial:
            ds = 2 * (s.degree - 1) if s.degree >= 1 else 0  # degree of sigma'^2
            n_inner = max(1, -(-(ds + 1) // 2))
        else:
            n_inner = 0 if self._student_piecewise_linear() else NONPOLY_INNER_NODES
        if s.is_polynomial and all(t.is_polynomial for t in self.teacher):
            pmax = max(t.degree for t in self.teacher)
            n_outer = max(1, -(-(2 * pmax + ds + 1) // 2))
        else:
            n_outer = NONPOLY_OUTER_NODES
        if nodes is not None:
            n_outer, n_inner = int(nodes[0]), (0 if n_inner == 0 else int(nodes[1]))
        return (n_outer, n_inner)

    def _noise_plan(self, nodes, method: str) -> tuple:
        """``(method, nodes)`` actually used by :meth:`noise_moment`."""
        method = check_choice("method", method, ("auto", "quadrature", "polynomial", "gram"))
        acts = (self.student,) + self.teacher
        polynomial = all(a.is_polynomial for a in acts)
        if method in ("polynomial", "gram") and not polynomial:
            raise ValueError(f"`method='{method}'` needs polynomial activations; use 'quadrature'.")
        if method == "auto":
            small = polynomial and max(a.degree for a in acts) <= MAX_WICK_DEGREE
            method = ("quadrature" if not (small and nodes is None)
                      else "gram" if self.k > WICK_GRAM_K else "polynomial")
        if method in ("polynomial", "gram"):
            return method, None
        return "quadrature", self._noise_node_counts(nodes)

    def _student_piecewise_linear(self) -> bool:
        s = self.student
        return (not s.is_polynomial and s.homogeneity in (0.0, 1.0) and set(s.breakpoints) <= {0.0})

    @staticmethod
    def _rule(n: int, gauss_hermite: bool):
        """Nodes and weights for E over N(0,1): Gauss–Hermite, or trapezoid on [-L, L]."""
        if gauss_hermite:
            x, w = np.polynomial.hermite_e.hermegauss(n)
            return x, w / np.sqrt(2.0 * np.pi)
        x = np.linspace(-_TRAPEZOID_HALF_WIDTH, _TRAPEZOID_HALF_WIDTH, n)
        return x, (x[1] - x[0]) * np.exp(-0.5 * x ** 2) / np.sqrt(2.0 * np.pi)

    def _noise_rule(self, nodes: tuple) -> dict:
        """Cached nodes, weights and diagonal teacher values of the C(u) quadrature."""
        cache = self.__dict__.setdefault("_cache", {})
        key = ("noise", nodes)
        if key in cache:
            return cache[key]
        n_outer, n_inner = nodes
        s = self.student
        exact = s.is_polynomial and all(t.is_polynomial for t in self.teacher)
        x, w = self._rule(n_outer, exact)
        k, a = self.k, self.a_star
        J, L = np.triu_indices(k, 1)
        Gp = self.G[J, L]
        al = np.sqrt(np.clip((1.0 + Gp) / 2.0, 0.0, None))
        be = np.sqrt(np.clip((1.0 - Gp) / 2.0, 0.0, None))
        # teacher activations grouped by identity, for vectorised evaluation over pairs
        groups = {}
        for j, t in enumerate(self.teacher):
            groups.setdefault(id(t), (t, []))[1].append(j)
        rule = {
            "x": x, "w": w, "ww": np.outer(w, w),
            "td": np.stack([a[j] ** 2 * self.teacher[j](x) ** 2 * w for j in range(k)]),  # (k, n)
            "J": J, "L": L, "al": al, "be": be, "pair_w": 2.0 * a[J] * a[L],
            # pseudo-inverse of L2 = [[al, be], [al, -be]]; zero where a singular value vanishes
            "inv_al": np.where(al > 1e-12, 0.5 / np.maximum(al, 1e-300), 0.0),
            "inv_be": np.where(be > 1e-12, 0.5 / np.maximum(be, 1e-300), 0.0),
            "groups": [(t, np.isin(J, idx), np.isin(L, idx)) for t, idx in groups.values()],
            "n_inner": n_inner,
        }
        if n_inner == 0:
            rule["s_pm"] = (float(s.derivative(1.0)) ** 2, float(s.derivative(-1.0)) ** 2)
        else:
            rule["x3"], rule["w3"] = self._rule(n_inner, s.is_polynomial)
        cache[key] = rule
        return rule

    def _inner_expectation(self, rule, mu, tau):
        r""":math:`E_\xi[\sigma'(\mu + \tau\xi)^2]`, ``tau`` broadcast against ``mu``."""
        if rule["n_inner"] == 0:
            from scipy.special import ndtr

            sp, sm = rule["s_pm"]
            mu, tau = np.broadcast_arrays(mu, tau)
            pos = tau > 0.0
            ratio = np.divide(mu, tau, out=np.zeros(mu.shape), where=pos)
            phi = np.where(pos, ndtr(ratio), np.where(mu > 0, 1.0, np.where(mu < 0, 0.0, 0.5)))
            return sm + (sp - sm) * phi
        z = mu[..., None] + tau[..., None] * rule["x3"]
        return self.student.derivative(z) ** 2 @ rule["w3"]

    def _teacher_pairs(self, rule, tj, tl):
        r""":math:`\sigma^*_j(t_j)\sigma^*_l(t_l)` for arrays of shape ``(m, P, ...)``."""
        if len(rule["groups"]) == 1:
            act = rule["groups"][0][0]
            return act(tj) * act(tl)
        fj, fl = np.empty_like(tj), np.empty_like(tl)
        for act, in_j, in_l in rule["groups"]:  # distinct teacher activations (<= k)
            fj[:, in_j] = act(tj[:, in_j])
            fl[:, in_l] = act(tl[:, in_l])
        return fj * fl

    def _noise_polynomial(self):
        r"""Cached matrix ``M[(j, n), (l, m)] = P[j, l, n, m]`` with
        :math:`C(u) = \sum_{jlnm} P_{jlnm} u_j^n u_l^m` (polynomial activations).

        From :math:`E[h_a(t_j) h_b(t_l) h_c(z)] = \sqrt{a!b!c!}\,
        G_{jl}^{r} u_j^{n} u_l^{m} / (r!\,n!\,m!)` with :math:`r = (a+b-c)/2`,
        :math:`n = (a+c-b)/2`, :math:`m = (b+c-a)/2` (Wick/diagram formula; zero unless
        these are non-negative integers), applied to the Hermite coefficients of
        :math:`\sigma^*_j`, :math:`\sigma^*_l` and :math:`\sigma'^2`.
        """
        cache = self.__dict__.setdefault("_cache", {})
        if "noise_poly" not in cache:
            from math import lgamma

            from ..hermite import HermiteSeries

            s = self.student
            ds = HermiteSeries(s.coefficients(s.degree)).derivative()
            S = (ds * ds).coefficients if s.degree >= 1 else np.zeros(1)
            A = [t.coefficients(t.degree) for t in self.teacher]
            p = max(t.degree for t in self.teacher)
            k = self.k
            P = np.zeros((k, k, p + 1, p + 1))
            for j in range(k):  # set-up only: k^2 * degree^3 terms, cached per problem
                for l in range(j, k):
                    for a in np.flatnonzero(A[j]):
                        for b in np.flatnonzero(A[l]):
                            for c in np.flatnonzero(S):
                                r2, n2, m2 = a + b - c, a + c - b, b + c - a
                                if (a + b + c) % 2 or min(r2, n2, m2) < 0:
                                    continue
                                r, n, m = r2 // 2, n2 // 2, m2 // 2
                                if r and self.G[j, l] == 0.0:
                                    continue
                                comb = np.exp(0.5 * (lgamma(a + 1) + lgamma(b + 1) + lgamma(c + 1))
                                              - lgamma(r + 1) - lgamma(n + 1) - lgamma(m + 1))
                                P[j, l, n, m] += A[j][a] * A[l][b] * S[c] * comb * self.G[j, l] ** r
                    P[j, l] *= self.a_star[j] * self.a_star[l] * (1.0 if j == l else 2.0)
            # M[(j, n), (l, m)] = P[j, l, n, m]: C(u) = X M X^T with X = (u_j^n)_{j,n}
            cache["noise_poly"] = P.transpose(0, 2, 1, 3).reshape(k * (p + 1), k * (p + 1))
        return cache["noise_poly"]

    def _teacher_coefficient_table(self) -> np.ndarray:
        r"""Cached ``(k, p+1)`` table :math:`a^*_j c_a(\sigma^*_j)` (polynomial teachers)."""
        cache = self.__dict__.setdefault("_cache", {})
        if "teacher_table" not in cache:
            p = max(t.degree for t in self.teacher)
            A = np.zeros((self.k, p + 1))
            for t, idx in _group_by_identity(self.teacher):
                A[idx, : t.degree + 1] = t.coefficients(t.degree)
            cache["teacher_table"] = A * self.a_star[:, None]
        return cache["teacher_table"]

    def _student_square_coefficients(self) -> np.ndarray:
        r"""Cached Hermite coefficients of :math:`\sigma'(z)^2` (polynomial student)."""
        cache = self.__dict__.setdefault("_cache", {})
        if "student_square" not in cache:
            from ..hermite import HermiteSeries

            s = self.student
            if s.degree >= 1:
                ds = HermiteSeries(s.coefficients(s.degree)).derivative()
                cache["student_square"] = (ds * ds).coefficients
            else:
                cache["student_square"] = np.zeros(1)
        return cache["student_square"]

    def noise_moment(self, u, *, nodes=None, method: str = "auto") -> np.ndarray:
        r"""Online-SGD noise moment :math:`C(u) = E[f^*(x)^2 \sigma'(w\cdot x)^2]`, shape ``(...)``.

        Parameters
        ----------
        u : array_like, shape (..., k)
            Overlaps ``V w`` of unit vectors ``w`` (not validated here; see
            :meth:`ode_initial_state`).
        nodes : (int, int), optional
            Quadrature nodes ``(outer, inner)`` per dimension, overriding the defaults
            below (the inner count is ignored where the inner integral is closed form).
            Implies ``method="quadrature"``.
        method : {"auto", "quadrature", "polynomial", "gram"}
            ``"polynomial"`` (the ``"auto"`` choice when every activation is a
            polynomial of degree <= ``MAX_WICK_DEGREE`` and ``k <= WICK_GRAM_K``): the
            exact polynomial :math:`C(u) = \sum_{j,l}\sum_{n,m} P_{jlnm} u_j^n u_l^m`,
            with ``P`` from the Wick formula, precomputed once (cost per call
            ``N k^2 (p+1)^2``).  ``"gram"`` (the ``"auto"`` choice for polynomials when
            ``k > WICK_GRAM_K``): the same polynomial by Hadamard powers of ``G``
            (:func:`wick_noise_moment`), no set-up.  ``"quadrature"``: the rule below,
            for any activation.

        Notes
        -----
        With :math:`z = w\cdot x`, :math:`t_j = v_j\cdot x`,

        .. math::

            C(u) = \sum_{j,l} a^*_j a^*_l\, E[\sigma^*_j(t_j)\sigma^*_l(t_l)\sigma'(z)^2],

        where :math:`(z, t_j, t_l)` is centred Gaussian with unit variances,
        :math:`\mathrm{cov}(z, t_j) = u_j` and :math:`\mathrm{cov}(t_j, t_l) = G_{jl}`.
        The 3x3 covariance (PSD, possibly singular) is factored with the teacher pair
        first: :math:`(t_j, t_l) = L_2 \xi` with :math:`L_2` the eigen factor of the
        2x2 block, then :math:`z = c^\top\xi + \tau\xi_3` with
        :math:`c = L_2^+ (u_j, u_l)` and :math:`\tau^2 = 1 - \|c\|^2` (a pseudo-inverse,
        so :math:`G_{jl} = \pm 1` and :math:`\tau = 0` are fine).  The tensor rule for
        :math:`\xi` is rotated per neuron so its first axis lies along :math:`c`; then
        :math:`c^\top\xi` depends on one coordinate and the inner expectation over
        :math:`\xi_3` is needed at ``n_outer`` points only.  Diagonal terms ``j = l`` use
        a 2-dimensional rule.

        * **Polynomials** (``method="quadrature"``): tensor Gauss–Hermite with
          :math:`\lceil (2q-1)/2\rceil` inner and :math:`\lceil (2p + 2q - 1)/2\rceil`
          outer nodes, :math:`q = \deg\sigma`,
          :math:`p = \max_j\deg\sigma^*_j`: exact (the integrand has total degree
          :math:`\le 2p + 2q - 2`, and a rotated tensor rule is exact to that total
          degree); it agrees with the ``"polynomial"`` method and with a separate
          implementation of the Wick formula in the tests to 1e-12.
        * **Piecewise-linear** students with a kink at 0 (ReLU, abs, sign): the inner
          integral is exact, :math:`s_- + (s_+ - s_-)\Phi(\mu/\tau)`.
        * **Other** activations: equispaced (trapezoid) rules on ``[-10, 10]`` with
          ``NONPOLY_OUTER_NODES = 64`` and ``NONPOLY_INNER_NODES = 48`` nodes.  For
          analytic integrands this converges geometrically, whereas Gauss–Hermite
          converges only like :math:`e^{-c\sqrt n}` when the integrand has complex
          poles (tanh).  Measured against nested adaptive quadrature (scipy ``quad``,
          split at the kinks) at ``k = 2``, :math:`G_{12} = 0.3` and ``u`` in
          {(0.5, 0.3), (0.9, 0.1), (0.99, 0.2)}, relative errors at the defaults:
          tanh/tanh and tanh/he3 <= 2e-7; relu/tanh 2e-11; relu/he3 3e-15; with a
          kinked *teacher* (relu) 2e-5 .. 1.1e-3 (tanh/relu, relu/relu, he3/relu;
          worst near :math:`|u| \to 1`), and <= 1e-4 with ``nodes=(128, 64)``.
          ``tests/test_ode.py`` re-measures some of these (slow) and checks Monte
          Carlo (fast).  The accuracy is ample for a correction of relative size
          :math:`\eta d`; pass larger ``nodes`` for more.

        Cost per call of the quadrature: about
        ``N k(k-1)/2 * (2 n_outer^2 + n_outer * n_inner)`` activation evaluations,
        vectorised and chunked to bound memory (measured 0.3 s per call for he4,
        N = 1000, k = 10, against about 2 ms for the ``"polynomial"`` method).

        Examples
        --------
        >>> prob = MultiIndexProblem("he1", "he1", np.eye(1))   # sigma' = 1: C = E[t^2] = 1
        >>> float(prob.noise_moment([0.3])[()])
        1.0
        """
        u = np.asarray(u, dtype=float)
        if u.shape[-1:] != (self.k,):
            raise ValueError(f"`u` must have last axis k = {self.k}, got shape {u.shape}.")
        method, nodes = self._noise_plan(nodes, method)
        if method == "gram":
            return wick_noise_moment(u, self.G, self._teacher_coefficient_table(), self._student_square_coefficients())
        if method == "polynomial":
            M = self._noise_polynomial()  # quadratic form on the stacked powers u_j^n
            powers = np.empty(u.shape + (M.shape[0] // self.k,))
            powers[..., 0] = 1.0
            for n in range(1, powers.shape[-1]):  # repeated products: ~50x faster than **
                np.multiply(powers[..., n - 1], u, out=powers[..., n])
            powers = powers.reshape(u.shape[:-1] + (-1,))
            return np.sum((powers @ M) * powers, axis=-1)
        lead = u.shape[:-1]
        U = u.reshape(-1, self.k)
        rule = self._noise_rule(nodes)
        x = rule["x"]
        n, ni = x.size, max(rule["n_inner"], 1)
        J, L, P = rule["J"], rule["L"], rule["J"].size
        per_row = self.k * n * ni + P * (3 * n * n + n * ni)
        m = max(1, _NOISE_CHUNK // per_row)
        out = np.empty(U.shape[0])
        for s0 in range(0, U.shape[0], m):  # memory chunks, not a loop over neurons
            Uc = U[s0:s0 + m]
            tau = np.sqrt(np.clip(1.0 - Uc ** 2, 0.0, None))
            inner = self._inner_expectation(rule, Uc[..., None] * x, tau[..., None])  # (m, k, n)
            total = np.einsum("mkn,kn->m", inner, rule["td"])
            if P:
                c1 = (Uc[:, J] + Uc[:, L]) * rule["inv_al"]  # (m, P)
                c2 = (Uc[:, J] - Uc[:, L]) * rule["inv_be"]
                r = np.hypot(c1, c2)
                tau2 = np.sqrt(np.clip(1.0 - r ** 2, 0.0, None))
                e1 = np.divide(c1, r, out=np.ones_like(r), where=r > 0)  # unit vector along c
                e2 = np.divide(c2, r, out=np.zeros_like(r), where=r > 0)
                inner2 = self._inner_expectation(rule, r[..., None] * x, tau2[..., None])  # (m, P, n)
                # xi = eta1 e + eta2 e_perp on the (eta1, eta2) grid; t = L2 xi
                a1 = (rule["al"] * e1 + rule["be"] * e2)[..., None, None]  # coefficient of eta1 in t_j
                b1 = (rule["be"] * e1 - rule["al"] * e2)[..., None, None]  # coefficient of eta2 in t_j
                a2 = (rule["al"] * e1 - rule["be"] * e2)[..., None, None]
                b2 = (-rule["al"] * e2 - rule["be"] * e1)[..., None, None]
                tj = a1 * x[:, None] + b1 * x[None, :]
                tl = a2 * x[:, None] + b2 * x[None, :]
                prod = self._teacher_pairs(rule, tj, tl)  # (m, P, n, n)
                outer = np.einsum("mpab,ab->mpa", prod, rule["ww"])
                total += np.einsum("mpa,mpa,p->m", inner2, outer, rule["pair_w"])
            out[s0:s0 + m] = total
        return out.reshape(lead)

    def describe(self) -> dict:
        """JSON-friendly parameters (for results' ``meta``)."""
        return {
            "model": "multi_index", "student": self.student.name,
            "teacher": [t.name for t in self.teacher], "G": self.G.tolist(),
            "a_star": self.a_star.tolist(), "n_neurons": self.n_neurons, "degree": self.degree,
            "loss": "correlation", "truncation_bound": self.truncation_bound(),
        }


# --------------------------------------------------------------------------------------
# Pieces shared with other models: the overlap velocity and the Wick noise moment
# --------------------------------------------------------------------------------------
def _group_by_identity(acts) -> list:
    """``[(activation, indices)]``: the positions of each distinct activation object."""
    groups: dict = {}
    for j, act in enumerate(acts):
        groups.setdefault(id(act), (act, []))[1].append(j)
    return [(act, np.array(idx)) for act, idx in groups.values()]


def sphere_velocity(u, gu, G, *, scale: float = 1.0) -> np.ndarray:
    r"""The per-neuron overlap ODE of spherical gradient flow on a correlation loss.

    .. math::

        \dot u = s\,\big[G\, g(u) - (u^\top g(u))\, u\big], \qquad
        g_j(u) = \phi_j'(u_j),

    for a neuron :math:`w` on the unit sphere with overlaps :math:`u = V w` and the
    population correlation :math:`s\sum_j \phi_j(u_j)` (one kernel :math:`\phi_j` per index
    vector, i.e. per link).  It is the projection of :math:`\dot w = s(I - ww^\top)V^\top g(Vw)`
    onto the index vectors (theory/simsek2025/equations.md; with :math:`s = M^{-1/2}` the
    additive model of arXiv 2406.11828, theory/oko2024/equations.md).

    Parameters
    ----------
    u : array_like, shape (..., k)
        Overlaps of each neuron.
    gu : array_like, shape (..., k)
        :math:`g_j(u)` evaluated per neuron and index vector (so per-neuron students are
        allowed: the caller evaluates each neuron's own kernel).
    G : array_like, shape (k, k)
        Gram matrix of the index vectors.
    scale : float
        Signal scale ``s`` multiplying the whole velocity.

    Returns
    -------
    ndarray, shape (..., k)

    Notes
    -----
    Cost :math:`O(k^2)` per neuron (the product with ``G``).

    Examples
    --------
    >>> u = np.array([0.6, 0.0]); float(sphere_velocity(u, 3 * u ** 2, np.eye(2), scale=0.5)[0])
    0.3456
    """
    u = np.asarray(u, dtype=float)
    gu = np.asarray(gu, dtype=float)
    v = gu @ np.asarray(G, dtype=float) - u * np.sum(u * gu, axis=-1, keepdims=True)
    if scale != 1.0:
        v *= scale
    return v


#: Neurons per block of :func:`wick_noise_moment` times ``k`` (~32 MB of float64 per array).
_WICK_CHUNK = 4_000_000


def wick_noise_moment(u, G, teacher, square) -> np.ndarray:
    r"""Exact online-SGD noise moment :math:`C(u) = E[f^*(x)^2 S(w\cdot x)]` for polynomials.

    Here :math:`f^*(x) = \sum_j A_j(v_j\cdot x)` with :math:`A_j = \sum_a A_{ja} h_a` (the
    teacher weights included) and :math:`S = \sum_c S_c h_c` the Hermite series of
    :math:`\sigma'^2` (for online SGD; one series per neuron allowed).

    Parameters
    ----------
    u : array_like, shape (..., k)
        Overlaps :math:`u_j = v_j\cdot w` of unit ``w`` (not validated).
    G : array_like, shape (k, k)
        Gram matrix of the unit index vectors.
    teacher : array_like, shape (k, P + 1)
        :math:`A_{ja}`, lowest degree first.
    square : array_like, shape (C + 1,) or u.shape[:-1] + (C + 1,)
        :math:`S_c`, one series for every neuron or one per neuron.

    Returns
    -------
    ndarray, shape u.shape[:-1]

    Notes
    -----
    The diagram formula :math:`E[h_a(t_j)h_b(t_l)h_c(z)] = \sqrt{a!b!c!}\,
    G_{jl}^r u_j^n u_l^m/(r!n!m!)`, :math:`a = r+n`, :math:`b = r+m`, :math:`c = n+m`
    (valid for any unit-variance Gaussian triple, degenerate ones included), summed
    over :math:`(j, l)` gives

    .. math::

        C(u) = \sum_{r,n,m} S_{n+m}\,\frac{\sqrt{(r+n)!(r+m)!(n+m)!}}{r!\,n!\,m!}\;
        X^{(r+n,n)\top}\, G^{\circ r}\, X^{(r+m,m)},\qquad X^{(a,n)}_j = A_{ja} u_j^n,

    with :math:`G^{\circ r}` the entrywise power (:math:`G^{\circ 0} = \mathbf 1\mathbf 1^\top`,
    a rank-one product; :math:`G^{\circ r} = I` for :math:`r \ge 1` when ``G`` is diagonal).
    Only the non-zero :math:`(A_{\cdot a}, A_{\cdot b}, S_c)` triples are visited.  Cost per
    neuron :math:`O(k^2)` for each :math:`(r \ge 1, m)` pair (one matrix product) and
    :math:`O(k)` for the others: the order of the drift :math:`G g(u)` itself, without the
    :math:`O(k^2 P^3)` set-up of :meth:`MultiIndexProblem.noise_moment`'s ``"polynomial"``
    method.  It agrees with that method and with an independent triple loop to 1e-12 in
    the tests.

    Examples
    --------
    >>> # he1 teacher and student (sigma' = 1): C = E[t^2] = 1
    >>> float(wick_noise_moment([0.3], np.eye(1), [[0.0, 1.0]], [1.0]))
    1.0
    """
    from math import lgamma

    u = np.asarray(u, dtype=float)
    G = np.asarray(G, dtype=float)
    A = np.asarray(teacher, dtype=float)
    S = np.asarray(square, dtype=float)
    k = u.shape[-1]
    if G.shape != (k, k) or A.ndim != 2 or A.shape[0] != k:
        raise ValueError(f"`G` must be ({k}, {k}) and `teacher` ({k}, P+1) for u with last axis {k}; got "
                         f"{G.shape} and {A.shape}.")
    lead = u.shape[:-1]
    per_neuron = S.ndim > 1
    if per_neuron and S.shape[:-1] != lead:
        raise ValueError(f"`square` must have shape (C+1,) or {lead} + (C+1,), got {S.shape}.")
    U = u.reshape(-1, k)
    Sf = S.reshape(-1, S.shape[-1]) if per_neuron else S
    P, C = A.shape[1] - 1, S.shape[-1] - 1
    nzA = np.any(A != 0.0, axis=0)
    nzS = np.any(Sf != 0.0, axis=0) if per_neuron else Sf != 0.0
    diagonal = not np.any(G - np.diag(np.diag(G)))
    terms = []  # (r, n, m, weight)
    for r in range(P + 1):
        for n in range(P - r + 1):
            for m in range(P - r + 1):
                c = n + m
                if nzA[r + n] and nzA[r + m] and c <= C and nzS[c]:
                    w = np.exp(0.5 * (lgamma(r + n + 1) + lgamma(r + m + 1) + lgamma(c + 1))
                               - lgamma(r + 1) - lgamma(n + 1) - lgamma(m + 1))
                    terms.append((r, n, m, w))
    out = np.zeros(U.shape[0])
    powers_needed = max([max(n, m) for _, n, m, _ in terms], default=0)
    block = max(1, _WICK_CHUNK // max(k * (powers_needed + 3), 1))
    Gr = {}
    for s0 in range(0, U.shape[0], block):  # memory blocks, not a loop over neurons
        Ub = U[s0:s0 + block]
        pw = [np.ones_like(Ub)]
        for _ in range(powers_needed):
            pw.append(pw[-1] * Ub)
        Sb = Sf[s0:s0 + block] if per_neuron else Sf
        acc = np.zeros(Ub.shape[0])
        Y = {}
        for r, n, m, w in terms:
            key = (r, m)
            if key not in Y:
                Xm = pw[m] * A[:, r + m]
                if r == 0:
                    Y[key] = Xm.sum(axis=-1)  # G^{o0} = 1 1^T
                elif diagonal:
                    Y[key] = Xm * np.diag(G) ** r
                else:
                    if r not in Gr:
                        Gr[r] = G ** r
                    Y[key] = Xm @ Gr[r]
            Xn = pw[n] * A[:, r + n]
            inner = Xn.sum(axis=-1) * Y[key] if r == 0 else np.einsum("ij,ij->i", Xn, Y[key])
            acc += w * (Sb[:, n + m] if per_neuron else Sb[n + m]) * inner
        out[s0:s0 + block] = acc
    return out.reshape(lead)


# --------------------------------------------------------------------------------------
# Symbolic population loss and u-ODE (sympy is imported inside the functions)
# --------------------------------------------------------------------------------------
def _sym_number(x):
    """A float as a sympy number: integers and short decimals exactly, others as Float."""
    import sympy

    x = float(x)
    if x.is_integer():
        return sympy.Integer(int(x))
    r = repr(x)
    if "e" not in r and len(r.lstrip("-")) <= 8:
        return sympy.Rational(r)
    return sympy.Float(x, 17)


def _sym_coefficients(act: Activation, degree: int):
    """``(coefficients c_0..c_n as sympy numbers, exact?)``."""
    import sympy

    exact = act.exact_coefficients(degree)
    if exact is not None:
        return [sympy.sympify(c) for c in exact], True  # safe: exact coefficients are numbers, never text
    # numeric coefficients are accurate to QUAD_TOL = 1e-12: smaller ones are zero within
    # their accuracy, and keeping them would print rounding noise as polynomial terms
    return [sympy.Float(float(c), 16) if abs(c) > _NUMERIC_ZERO else sympy.Integer(0)
            for c in act.coefficients(degree)], False


def u_symbols(k: int) -> tuple:
    """The real sympy symbols ``u_1, ..., u_k`` used by the symbolic loss."""
    import sympy

    k = check_int("k", k, minimum=1)
    return tuple(sympy.symbols(f"u_1:{k + 1}", real=True))


def _phi_exprs(problem: MultiIndexProblem):
    """Symbols ``u`` and per-index kernels :math:`\\phi_j(u_j)` (sympy), and exactness."""
    import sympy

    u = u_symbols(problem.k)
    n = problem.degree
    cs, exact = _sym_coefficients(problem.student, n)
    phis = []
    for j, t in enumerate(problem.teacher):
        ct, ex_t = _sym_coefficients(t, n)
        exact = exact and ex_t
        a = _sym_number(problem.a_star[j])
        terms = [sympy.nsimplify(cs[p] * ct[p]) if exact else cs[p] * ct[p] for p in range(n + 1)]
        phis.append(sympy.expand(a * sum((c * u[j] ** p for p, c in enumerate(terms) if c != 0),
                                         sympy.Integer(0))))
    return u, phis, exact


def _is_truncated(problem: MultiIndexProblem) -> bool:
    """True iff some index has an infinite product series cut at ``problem.degree``."""
    def deg(a):
        return a.degree if a.is_polynomial else np.inf

    return any(min(deg(problem.student), deg(t)) > problem.degree for t in problem.teacher)


def population_loss_expr(problem: MultiIndexProblem):
    r"""Closed-form population loss of one neuron as a sympy expression in ``u_1..u_k``.

    .. math::

        \ell(u) = -\sum_{j=1}^k a^*_j \sum_{p=0}^{n} c_p(\sigma)\, c_p(\sigma^*_j)\, u_j^p,
        \qquad u_j = v_j\cdot w,\ \|w\| = 1,

    from the correlation identity :math:`E[h_p(w\cdot x) h_q(v\cdot x)] = \delta_{pq}
    (w\cdot v)^p` (``popdyn.__doc__``; arXiv 2411.08798).

    * Complete when, for every ``j``, the student or :math:`\sigma^*_j` is a polynomial
      of degree ``<= problem.degree`` (the product series stops).
    * Otherwise truncated at ``n = problem.degree``.  The dropped tail is bounded for
      :math:`|u_j| \le 1` by :meth:`MultiIndexProblem.truncation_bound`
      (Cauchy–Schwarz on the tail masses).
    * Coefficients are exact sympy numbers for polynomials and the closed forms (relu,
      abs, sign, erf), and 16-digit floats for the numeric ones (tanh, ...), where
      values at or below their 1e-12 accuracy are printed as 0.

    Examples
    --------
    >>> prob = MultiIndexProblem("he4", "he4", np.eye(2))
    >>> population_loss_expr(prob)
    -u_1**4 - u_2**4
    """
    _, phis, _ = _phi_exprs(problem)
    return -sum(phis)


def population_loss_latex(problem: MultiIndexProblem) -> str:
    r"""LaTeX of :func:`population_loss_expr`, as ``\ell(u) = ...``.

    A truncated series ends with ``+ \dots`` and a comment giving the degree.

    Examples
    --------
    >>> population_loss_latex(MultiIndexProblem("he3", "he3", np.eye(1)))
    '\\ell(u) = - u_{1}^{3}'
    """
    import sympy

    body = sympy.latex(population_loss_expr(problem))
    if _is_truncated(problem):
        return rf"\ell(u) = {body} + \dots \quad (\text{{Hermite series truncated at degree {problem.degree}}})"
    return rf"\ell(u) = {body}"


def velocity_exprs(problem: MultiIndexProblem) -> list:
    r"""The u-ODE right-hand side as sympy expressions, one per component.

    .. math::

        \dot u_j = \sum_l G_{jl}\, g_l(u) - u_j \sum_l u_l\, g_l(u), \qquad
        g_l(u) = \phi_l'(u_l) = a^*_l \sum_p p\, c_p(\sigma) c_p(\sigma^*_l) u_l^{p-1}.

    Examples
    --------
    >>> velocity_exprs(MultiIndexProblem("he3", "he3", np.eye(1)))
    [-3*u_1**4 + 3*u_1**2]
    """
    import sympy

    u, phis, _ = _phi_exprs(problem)
    g = [sympy.diff(phi, uj) for phi, uj in zip(phis, u)]
    G = [[_sym_number(x) for x in row] for row in problem.G]
    radial = sum(ul * gl for ul, gl in zip(u, g))
    return [sympy.expand(sum(G[j][l] * g[l] for l in range(problem.k)) - u[j] * radial)
            for j in range(problem.k)]


def loss_report(problem: MultiIndexProblem, latex: bool = False) -> dict:
    """JSON-friendly report of the closed-form loss and u-ODE (for ``popdyn loss``).

    Returns
    -------
    dict
        ``expr`` (str), ``latex`` (str, or ``None`` unless ``latex=True``),
        ``velocity`` (list of str, ``du_j/dt``), ``velocity_latex`` (list or ``None``),
        ``symbols`` (``["u_1", ...]``), ``exact`` (bool: no truncation and exact
        coefficients), ``truncated_at`` (degree or ``None``), ``truncation_bound``
        (float; 0 for polynomials), ``note`` (str) and ``problem``
        (:meth:`MultiIndexProblem.describe`).

    Examples
    --------
    >>> rep = loss_report(MultiIndexProblem("he4", "he4", np.eye(2)))
    >>> rep["expr"], rep["velocity"][0], rep["truncated_at"]
    ('-u_1**4 - u_2**4', '-4*u_1**5 + 4*u_1**3 - 4*u_1*u_2**4', None)
    """
    import sympy

    u, phis, exact_coeffs = _phi_exprs(problem)
    expr = -sum(phis)
    vel = velocity_exprs(problem)
    truncated = _is_truncated(problem)
    kind = ("exact" if exact_coeffs
            else "numeric coefficients (abs. error <= 1e-12; smaller ones shown as 0)")
    if truncated:
        note = (f"Hermite series truncated at degree {problem.degree}, {kind}; for |u_j| <= 1 the "
                f"dropped tail changes the loss by at most {problem.truncation_bound():.3g}.")
    else:
        note = f"Complete series (a polynomial on one side of every index pair), {kind}."
    return {
        "expr": str(expr),
        "latex": population_loss_latex(problem) if latex else None,
        "velocity": [str(v) for v in vel],
        "velocity_latex": [rf"\dot u_{{{j + 1}}} = {sympy.latex(v)}" for j, v in enumerate(vel)] if latex else None,
        "symbols": [str(s) for s in u],
        "exact": bool(exact_coeffs and not truncated),
        "truncated_at": problem.degree if truncated else None,
        "truncation_bound": float(problem.truncation_bound()) if truncated else 0.0,
        "note": note,
        "problem": problem.describe(),
    }


def _register() -> None:
    from ..simulation import register_stepper

    register_stepper(MultiIndexProblem, "popdyn.models.multi_index_sim:MultiIndexStepper", engine="full")
    register_stepper(MultiIndexProblem, "popdyn.models.multi_index_exact:MultiIndexExactStepper", engine="exact")


_register()
