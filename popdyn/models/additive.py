r"""Sum of diverse features: the additive model of Oko, Song, Suzuki, Wu (arXiv 2406.11828).

Model
-----
* Data :math:`x \sim N(0, I_d)`.
* Teacher (a "ridge combination" of ``M`` single-index tasks)

  .. math::

      f^*(x) = M^{-1/2} \sum_{m=1}^M a_m f_m(v_m\cdot x),

  with unit task directions :math:`v_m` (rows of ``V``, shape ``(M, d)``, Gram
  :math:`G = V V^\top`), links :math:`f_m` (activation specs, one for all tasks or one
  per task) and weights :math:`a_m` (default 1).  The paper takes :math:`M \asymp d^\gamma`,
  near-orthogonal :math:`v_m` (random unit vectors, :math:`|v_i\cdot v_j| = O(\sqrt{\log M/d})`)
  and polynomial links sharing one information exponent ``p``.
* Student, Phase I: ``J`` neurons :math:`w_j` on the unit sphere with a small *fixed*
  second layer; to first order in its scale :math:`\epsilon` the squared loss is
  :math:`-\epsilon\sum_j E[\sigma_j(w_j\cdot x) f^*(x)] + O(\epsilon^2)`, i.e. the
  **correlation loss**, and :math:`\epsilon` is absorbed into the step ``eta``.  The
  neurons decouple: each one follows its own overlap ODE.  A fixed second-layer sign
  :math:`\varsigma_j = \pm 1` is the special case :math:`\xi_{j,i} = \varsigma_j` of the
  *diversity* option below.
* Phase II (:mod:`popdyn.models.additive_sim`): random biases and a ridge or LASSO
  second layer on the localised features.

Phase I population dynamics (theory/oko2024/equations.md)
----------------------------------------------------------
For one neuron with overlaps :math:`u = V w \in \mathbb{R}^M`, the Hermite correlation
identity (package conventions) gives :math:`E[\sigma(w\cdot x) f^*(x)] = s\sum_m \phi_m(u_m)`
with :math:`s = M^{-1/2}` and :math:`\phi_m(t) = a_m\sum_i c_i(\sigma) c_i(f_m) t^i`, so the
spherical gradient flow closes in ``u``:

.. math::

    \dot u = s\,\big[G\, g(u) - (u^\top g(u))\, u\big], \qquad g_m(u) = \phi_m'(u_m),

the multi-index flow of :mod:`popdyn.models.multi_index` with :math:`a^*_m = s\,a_m`
(:func:`popdyn.models.multi_index.sphere_velocity`).  Online SGD with step :math:`\eta`
and minibatch ``B`` adds the normalisation term :math:`-\eta(d-1)C(u)u/(2B)`,
:math:`C(u) = E[f^*(x)^2\sigma'(w\cdot x)^2]` (:func:`popdyn.models.multi_index.wick_noise_moment`),
in the time :math:`t = \eta\cdot\mathrm{steps}`.

**Diversity** (the paper's assumption on the student nonlinearities, as summarised in
theory/oko2024/equations.md): neuron ``j`` has its own activation
:math:`\sigma_j = \sum_i \xi_{j,i} c_i(\sigma) h_i` (random multipliers
:math:`\xi_{j,i}`, :func:`diverse_student`), so its kernel coefficients are
:math:`\Gamma_{jmi} = s\,a_m\,\xi_{j,i} c_i(\sigma) c_i(f_m)`.  The *descent-path condition*
for neuron ``j`` and task ``m`` (:func:`descent_path`): all :math:`\epsilon^i\Gamma_{jmi}`
have one sign (:math:`\ge 0`) for some :math:`\epsilon = \pm 1`, so the one-dimensional
kernel towards :math:`\epsilon v_m` increases all the way.

Localisation and coverage
-------------------------
* A neuron is **localised** when :math:`\max_m |u_m| >` ``LOCALISED_LEVEL`` (0.95); its
  **winner** is the argmax.  At leading order the race between tasks is decided at the
  start (:func:`predicted_winners`): the escape time from :math:`u_m(0)` is
  :math:`(\epsilon u_m(0))^{2-p}/(s\,p(p-2)|\Gamma|)` for :math:`p \ge 3`, so for equal kernels
  the winner is :math:`\arg\max_m |u_m(0)|` (even ``p``) or :math:`\arg\max_m u_m(0)` (odd
  ``p`` with positive kernel).
* With every neuron going to a uniformly random task, the number of tasks covered by
  ``J`` neurons follows the coupon-collector (occupancy) law (:func:`coverage_law`,
  computed exactly by recursion): :math:`E[\#\text{covered}] = M(1 - (1-q/M)^J)`, all
  tasks are covered with probability :math:`\sum_j (-1)^j\binom{M}{j}(1-qj/M)^J`, and
  :math:`J \approx M\log(M/\delta)/q` neurons cover all of them with probability
  :math:`1-\delta` (:func:`width_for_coverage`).

Sample complexity (heuristic, theory/oko2024/equations.md)
-----------------------------------------------------------
The per-task signal is :math:`s = M^{-1/2}` and the label noise is :math:`O(1)`: the
BAGJ scaling with signal :math:`s` needs :math:`\eta \lesssim s\,d^{-p/2}` and
:math:`n \asymp d^{p-1}/s^2 = M d^{p-1}` samples (up to logarithms) to localise, against
:math:`d^{q}` for kernel methods on degree-``q`` links.  Measured by
:func:`popdyn.models.additive_sim.samples_to_localise` and :func:`loglog_slope`.

References
----------
K. Oko, Y. Song, T. Suzuki, D. Wu, "Learning sum of diverse features: computational
hardness and efficient gradient-based training for ridge combinations", COLT 2024,
PMLR 247:4009-4081 (arXiv 2406.11828).
B. Şimşek, A. Bendjeddou, D. Hsu, arXiv 2411.08798 (the multi-index overlap flow, the
directional-convergence rule and the coupon collector reused here).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._random import as_generator
from .._validation import check_choice, check_finite_array, check_int, check_real
from ..activations import Activation, get_activation

__all__ = [
    "AdditiveProblem",
    "task_directions",
    "max_overlap",
    "tasks_for_gamma",
    "diverse_student",
    "descent_path",
    "predicted_winners",
    "localisation",
    "LocalisationReport",
    "localisation_report",
    "coverage_law",
    "CoverageLaw",
    "width_for_coverage",
    "loglog_slope",
    "SlopeFit",
    "DIRECTION_KINDS",
    "DIVERSITY_KINDS",
    "LOCALISED_LEVEL",
    "MIN_EXPONENT",
]

#: ``kind`` of :func:`task_directions`.
DIRECTION_KINDS = ("random", "orthogonal")
#: ``kind`` of :func:`diverse_student`.
DIVERSITY_KINDS = ("signs", "gaussian")
#: A neuron is localised when ``max_m |u_m|`` exceeds this (arXiv 2406.11828 "localisation";
#: the level used in theory/oko2024/equations.md).
LOCALISED_LEVEL = 0.95
#: Smallest information exponent for which neurons localise.  For p = 2 the population
#: correlation on span(V) is the quadratic form u^T diag(Gamma_2) u, maximised by a top
#: eigenvector (a mixture of tasks, not one task); p = 1 is linear.  The paper's
#: gradient-based guarantee is for p >= 3 (equations.md).
MIN_EXPONENT = 3
#: Kernel coefficients at or below this (relative to the largest) count as zero when the
#: leading degree of a kernel is determined: the numeric Hermite coefficients of
#: non-polynomial activations are accurate to 1e-12 (popdyn.hermite.QUAD_TOL).
_COEFF_ZERO = 1e-10
#: Rows of ``V`` per block in :func:`max_overlap` (bounds its memory to ~block x M floats).
_OVERLAP_BLOCK = 512


# --------------------------------------------------------------------------------------
# task directions
# --------------------------------------------------------------------------------------
def tasks_for_gamma(d: int, gamma: float, *, kind: str = "random") -> int:
    r"""Number of tasks :math:`M = \lceil d^\gamma\rceil` (the paper's :math:`M \asymp d^\gamma`).

    ``gamma >= 0``; with ``kind="orthogonal"`` the ``M`` directions must fit in
    :math:`\mathbb{R}^d`, so ``gamma <= 1``.

    Examples
    --------
    >>> tasks_for_gamma(400, 0.5), tasks_for_gamma(100, 1.0, kind="orthogonal")
    (20, 100)
    """
    d = check_int("d", d, minimum=1)
    gamma = check_real("gamma", gamma, lower=0.0)
    kind = check_choice("kind", kind, DIRECTION_KINDS)
    if kind == "orthogonal" and gamma > 1.0:
        raise ValueError(f"`gamma` must be <= 1 with orthogonal directions (M = d^gamma <= d), got gamma = {gamma:g} "
                         f"for d = {d}; use kind='random' for M > d.")
    return max(1, math.ceil(d ** gamma - 1e-9))


def task_directions(M: int, d: int, *, kind: str = "random", rng=None) -> np.ndarray:
    r"""Unit task directions ``V`` of shape ``(M, d)``.

    Parameters
    ----------
    M, d : int
        Number of tasks and dimension (``>= 1``).
    kind : {"random", "orthogonal"}
        * ``random``: i.i.d. uniform on :math:`S^{d-1}` (near-orthogonal,
          :math:`\max_{i\ne j}|v_i\cdot v_j| \approx 2\sqrt{\log M/d}`; any ``M``).
        * ``orthogonal``: ``M`` orthonormal rows of a Haar-random rotation (needs ``M <= d``).
    rng : int, Generator or None

    Returns
    -------
    ndarray, shape (M, d)
        Rows :math:`v_1, \dots, v_M` with :math:`\|v_m\| = 1`.

    Examples
    --------
    >>> V = task_directions(3, 5, kind="orthogonal", rng=0)
    >>> bool(np.allclose(V @ V.T, np.eye(3)))
    True
    """
    M = check_int("M", M, minimum=1)
    d = check_int("d", d, minimum=1)
    kind = check_choice("kind", kind, DIRECTION_KINDS)
    rng = as_generator(rng)
    if kind == "orthogonal":
        if M > d:
            raise ValueError(f"`M` = {M} orthogonal directions do not fit in dimension `d` = {d} (need M <= d); use "
                             "kind='random' for near-orthogonal directions.")
        Q, R = np.linalg.qr(rng.standard_normal((d, M)))
        return np.ascontiguousarray((Q * np.sign(np.diag(R))).T)
    V = rng.standard_normal((M, d))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    return V


def max_overlap(V) -> float:
    r"""Largest :math:`|v_i\cdot v_j|`, :math:`i \ne j`, of the rows of ``V`` (0 for one row).

    Computed in row blocks: :math:`O(M^2 d)` time once, :math:`O(M \cdot` block) memory.
    """
    V = np.asarray(V, dtype=float)
    M = V.shape[0]
    best = 0.0
    for s0 in range(0, M, _OVERLAP_BLOCK):
        B = V[s0:s0 + _OVERLAP_BLOCK] @ V.T
        rows = np.arange(B.shape[0])
        B[rows, s0 + rows] = 0.0
        best = max(best, float(np.max(np.abs(B))) if B.size else 0.0)
    return best


# --------------------------------------------------------------------------------------
# student diversity
# --------------------------------------------------------------------------------------
def diverse_student(n_neurons: int, degree: int, *, kind: str = "signs", rng=None) -> np.ndarray:
    r"""Per-neuron multipliers :math:`\xi_{j,i}` of the student's Hermite coefficients.

    Neuron ``j`` uses :math:`\sigma_j = \sum_{i=0}^{q} \xi_{j,i} c_i(\sigma) h_i`.

    Parameters
    ----------
    n_neurons : int
        ``J >= 1``.
    degree : int
        The student's polynomial degree ``q >= 1``.
    kind : {"signs", "gaussian"}
        ``signs``: independent :math:`\pm 1` (same magnitudes, random descent paths);
        ``gaussian``: independent :math:`N(0, 1)`.

    Returns
    -------
    ndarray, shape (J, q + 1)

    Examples
    --------
    >>> xi = diverse_student(4, 3, rng=0)
    >>> xi.shape, bool(np.all(np.abs(xi) == 1))
    ((4, 4), True)
    """
    J = check_int("n_neurons", n_neurons, minimum=1)
    q = check_int("degree", degree, minimum=1)
    kind = check_choice("kind", kind, DIVERSITY_KINDS)
    rng = as_generator(rng)
    if kind == "signs":
        return np.where(rng.random((J, q + 1)) < 0.5, -1.0, 1.0)
    return rng.standard_normal((J, q + 1))


# --------------------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class AdditiveProblem:
    r"""The additive teacher, a spherical student of ``J`` neurons and the correlation loss.

    Parameters
    ----------
    student : str or Activation
        Student activation :math:`\sigma` (polynomial when ``diversity`` is given).
    links : str, Activation, or sequence of them
        Links :math:`f_m`: one for every task or one per task (``M`` of them).
    V : array_like, shape (M, d)
        Unit task directions (:func:`task_directions`, or any user-given unit rows).
    weights : array_like, shape (M,), optional
        :math:`a_m`, default all ones (the teacher is :math:`M^{-1/2}\sum_m a_m f_m`).
    n_neurons : int
        Student width ``J >= 1``.
    diversity : array_like, shape (J, q + 1), optional
        Per-neuron multipliers :math:`\xi_{j,i}` of the student's Hermite coefficients
        (:func:`diverse_student`); ``None``: one student for all neurons.
    degree : int, optional
        Hermite truncation for non-polynomial activations (as in
        :class:`~popdyn.models.multi_index.MultiIndexProblem`).

    Attributes
    ----------
    M, d : int
        Tasks and dimension.
    scale : float
        Signal scale :math:`s = M^{-1/2}`.
    G : ndarray, shape (M, M)
        :math:`V V^\top` (computed once, :math:`O(M^2 d)`).
    multi_index : MultiIndexProblem
        The per-neuron overlap flow with :math:`a^*_m = s a_m` (built on first use:
        validating ``G`` costs :math:`O(M^3)`).

    Examples
    --------
    >>> prob = AdditiveProblem("he3", "he3", task_directions(4, 50, rng=0), n_neurons=2)
    >>> prob.M, prob.scale, prob.exponent
    (4, 0.5, 3)
    """

    student: Activation
    links: tuple
    V: np.ndarray
    weights: np.ndarray | None = None
    n_neurons: int = 1
    diversity: np.ndarray | None = None
    degree: int | None = None

    def __post_init__(self):
        from .multi_index import DEFAULT_DEGREE

        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        student = get_activation(self.student)
        set_("student", student)
        V = check_finite_array("V", self.V, ndim=2)
        M, d = V.shape
        if M < 1 or d < 1:
            raise ValueError(f"`V` must have at least one row (task) and one column (dimension), got shape {V.shape}.")
        norms = np.linalg.norm(V, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > 1e-8)
        if bad.size:
            raise ValueError(f"`V` must have unit rows (task directions); row {int(bad[0])} has norm "
                             f"{norms[bad[0]]:.12g}.")
        V = V / norms[:, None]
        V.setflags(write=False)
        set_("V", V)
        links = self.links
        if isinstance(links, (str, Activation)) or callable(links):
            links = (get_activation(links),) * M
        else:
            cache = {}
            links = tuple(cache.setdefault(x, get_activation(x)) if isinstance(x, str) else get_activation(x)
                          for x in links)
        if len(links) != M:
            raise ValueError(f"`links` must be one activation or M = {M} of them (one per task), got {len(links)}.")
        set_("links", links)
        a = np.ones(M) if self.weights is None else check_finite_array("weights", self.weights, ndim=1, shape=(M,))
        a = np.array(a, dtype=float)
        a.setflags(write=False)
        set_("weights", a)
        J = check_int("n_neurons", self.n_neurons, minimum=1)
        set_("n_neurons", J)
        if self.degree is None:
            acts = (student,) + tuple({id(t): t for t in links}.values())
            deg = max(t.degree for t in acts) if all(t.is_polynomial for t in acts) else DEFAULT_DEGREE
        else:
            deg = check_int("degree", self.degree, minimum=1)
        set_("degree", deg)
        if self.diversity is not None:
            if not student.is_polynomial:
                raise ValueError(f"`diversity` needs a polynomial `student` (per-neuron Hermite coefficients), got "
                                 f"{student.name!r}.")
            q = student.degree
            xi = check_finite_array("diversity", self.diversity, ndim=2)
            if xi.shape != (J, q + 1):
                raise ValueError(f"`diversity` must have shape (n_neurons, student degree + 1) = ({J}, {q + 1}), got "
                                 f"{xi.shape}.")
            xi = np.array(xi)
            xi.setflags(write=False)
            set_("diversity", xi)
        # kernel coefficients Gamma[m, i] = s a_m c_i(sigma) c_i(f_m), i = 0..degree
        cs = student.coefficients(deg)
        table = np.zeros((M, deg + 1))
        for act, idx in _groups(links):
            table[idx] = act.coefficients(deg)
        gamma = (self.scale * a)[:, None] * cs[None, :] * table
        gamma.setflags(write=False)
        set_("_gamma", gamma)
        set_("_link_table", table)

    # -- sizes and derived quantities -----------------------------------------------------------
    @property
    def M(self) -> int:
        """Number of tasks."""
        return self.V.shape[0]

    @property
    def d(self) -> int:
        """Dimension."""
        return self.V.shape[1]

    @property
    def scale(self) -> float:
        r"""Signal scale :math:`s = M^{-1/2}`."""
        return 1.0 / math.sqrt(self.M)

    @property
    def gamma(self) -> np.ndarray:
        r""":math:`\Gamma_{mi} = s\,a_m c_i(\sigma) c_i(f_m)`, shape ``(M, degree + 1)`` (before diversity)."""
        return self._gamma

    def _cached(self, key, build):
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = build()
        return cache[key]

    @property
    def G(self) -> np.ndarray:
        r""":math:`G = V V^\top`, shape ``(M, M)`` (unit diagonal set exactly)."""
        def build():
            G = self.V @ self.V.T
            np.fill_diagonal(G, 1.0)
            G.setflags(write=False)
            return G
        return self._cached("G", build)

    @property
    def max_overlap(self) -> float:
        r""":math:`\max_{i\ne j}|v_i\cdot v_j|` of the task directions actually used."""
        return self._cached("max_overlap", lambda: max_overlap(self.V))

    @property
    def multi_index(self):
        r"""The :class:`~popdyn.models.multi_index.MultiIndexProblem` with :math:`a^*_m = s a_m`."""
        from .multi_index import MultiIndexProblem

        return self._cached("multi_index", lambda: MultiIndexProblem(
            self.student, self.links, np.array(self.G), a_star=self.scale * self.weights, n_neurons=self.n_neurons,
            degree=self.degree))

    @property
    def link_exponents(self) -> np.ndarray:
        """Information exponent of each link, shape ``(M,)`` (0 for a constant link)."""
        def build():
            from ..exponents import information_exponent

            out = np.zeros(self.M, dtype=int)
            for act, idx in _groups(self.links):
                ie = information_exponent(act)
                out[idx] = 0 if ie is None else ie
            return out
        return self._cached("link_exponents", build)

    @property
    def exponent(self) -> int | None:
        r"""The common leading degree ``p`` of the kernels :math:`\phi_m` (``None`` if they differ).

        This is the information exponent of the links when the student has a non-zero
        coefficient at that degree (the paper's ``p``); a kernel that vanishes counts as 0.
        """
        lead = self.kernel_exponents
        return int(lead[0]) if np.all(lead == lead[0]) else None

    @property
    def kernel_exponents(self) -> np.ndarray:
        r"""Leading degree of each task's kernel :math:`\phi_m` (0 when it vanishes), shape ``(M,)``."""
        def build():
            g = np.abs(self._gamma[:, 1:])
            big = g > _COEFF_ZERO * max(float(g.max()) if g.size else 0.0, 1e-300)
            return np.where(big.any(axis=1), np.argmax(big, axis=1) + 1, 0)
        return self._cached("kernel_exponents", build)

    def require_common_exponent(self, *, minimum: int = MIN_EXPONENT) -> int:
        r"""The common exponent ``p`` of the links, or a ``ValueError`` saying why there is none.

        Raised when the links' information exponents differ (the paper assumes one ``p``
        for all tasks), when the student's kernel does not start at that degree, or when
        ``p < minimum`` (localisation needs ``p >= 3``; see ``MIN_EXPONENT``).
        """
        ie = self.link_exponents
        if np.any(ie != ie[0]):
            found = sorted({(int(e), self.links[int(np.flatnonzero(ie == e)[0])].name) for e in np.unique(ie)})
            raise ValueError("`links` must share one information exponent p (the paper's assumption on the tasks); got "
                             + ", ".join(f"IE {e} for {name!r}" for e, name in found) + ".")
        p = self.exponent
        if p is None or p != ie[0]:
            raise ValueError(f"the student {self.student.name!r} has no Hermite coefficient at the links' information "
                             f"exponent p = {int(ie[0])}, so the correlation kernel does not start at degree p; "
                             f"choose a student with c_{int(ie[0])} != 0.")
        if p < minimum:
            raise ValueError(f"the information exponent p must be >= {minimum} here (neurons localise on one task only "
                             f"for p >= 3; for p = 2 the flow goes to a top eigenvector mixing tasks), got p = {p}.")
        return p

    # -- per-neuron kernels ---------------------------------------------------------------------
    def neuron_gamma(self, neurons=None) -> np.ndarray:
        r""":math:`\Gamma_{jmi}` for the given neurons (default all), shape ``(n, M, degree + 1)``.

        Materialises ``n * M * (degree + 1)`` numbers: meant for diagnostics and small
        sizes; the ODE never builds it.
        """
        idx = np.arange(self.n_neurons) if neurons is None else np.atleast_1d(neurons)
        if self.diversity is None:
            return np.broadcast_to(self._gamma, (idx.size,) + self._gamma.shape).copy()
        xi = np.zeros((idx.size, self.degree + 1))
        xi[:, : self.diversity.shape[1]] = self.diversity[idx]
        return xi[:, None, :] * self._gamma[None, :, :]

    def g(self, u) -> np.ndarray:
        r""":math:`g_{jm}(u) = \phi_{jm}'(u_{jm})` for ``u`` of shape ``(..., J, M)`` (or ``(..., M)``
        without diversity)."""
        u = np.asarray(u, dtype=float)
        if self.diversity is None:
            return _horner_d(self._gamma, u)  # = self.multi_index.g(u): same coefficients
        return _horner_d(self._gamma, u, self._xi_full(u))

    def _xi_full(self, u):
        if u.shape[-2:] != (self.n_neurons, self.M):
            raise ValueError(f"with `diversity`, `u` must have shape (..., n_neurons, M) = (..., {self.n_neurons}, "
                             f"{self.M}), got {u.shape}.")
        xi = np.zeros((self.n_neurons, self.degree + 1))
        xi[:, : self.diversity.shape[1]] = self.diversity
        return xi

    def velocity(self, u) -> np.ndarray:
        r"""Population flow :math:`\dot u = G g(u) - (u^\top g(u))u` (the scale ``s`` is in ``g``)."""
        from .multi_index import sphere_velocity

        u = np.asarray(u, dtype=float)
        return sphere_velocity(u, self.g(u), self.G)

    def correlation(self, u) -> np.ndarray:
        r"""Population correlation :math:`E[\sigma_j(w\cdot x) f^*(x)] = \sum_m \phi_{jm}(u_m)`, shape ``(...)``."""
        u = np.asarray(u, dtype=float)
        xi = None if self.diversity is None else self._xi_full(u)
        return _horner(self._gamma, u, xi).sum(axis=-1)

    def student_square_coefficients(self) -> np.ndarray:
        r"""Hermite coefficients of :math:`\sigma_j'(z)^2`: shape ``(C + 1,)``, or ``(J, C + 1)``
        with diversity (polynomial students)."""
        def build():
            from ..hermite import HermiteSeries

            s = self.student
            q = s.degree
            if q is None:
                raise ValueError("the exact noise moment needs a polynomial student; the multi-index quadrature "
                                 "handles others.")
            base = s.coefficients(q)
            if self.diversity is None:
                if q == 0:
                    return np.zeros(1)
                ds = HermiteSeries(base).derivative()
                return (ds * ds).coefficients
            if q == 0:
                return np.zeros((self.n_neurons, 1))
            # sigma_j' = sum_{i>=1} xi_ji c_i sqrt(i) h_{i-1}; square by the linearisation tensor
            D = self.diversity[:, 1:] * base[1:] * np.sqrt(np.arange(1, q + 1))
            lin = np.zeros((q, q, 2 * q - 1))
            for a_ in range(q):
                for b_ in range(q):
                    ea, eb = np.zeros(q), np.zeros(q)
                    ea[a_], eb[b_] = 1.0, 1.0
                    c = (HermiteSeries(ea) * HermiteSeries(eb)).coefficients
                    lin[a_, b_, : c.size] = c
            return np.einsum("ja,jb,abc->jc", D, D, lin)
        return self._cached("square", build)

    def teacher_table(self) -> np.ndarray:
        r""":math:`A_{ma} = s\,a_m c_a(f_m)`, shape ``(M, P + 1)`` (polynomial links)."""
        def build():
            if not all(t.is_polynomial for t in self.links):
                raise ValueError("the exact noise moment needs polynomial links.")
            P = max(t.degree for t in self.links)
            return (self.scale * self.weights)[:, None] * self._link_table[:, : P + 1]
        return self._cached("teacher_table", build)

    def noise_moment(self, u) -> np.ndarray:
        r"""Online-SGD noise moment :math:`C(u) = E[f^*(x)^2\sigma_j'(w\cdot x)^2]`, shape ``(...)``.

        Exact for polynomials (:func:`~popdyn.models.multi_index.wick_noise_moment`); without
        diversity, any activation through
        :meth:`~popdyn.models.multi_index.MultiIndexProblem.noise_moment`.
        """
        from .multi_index import wick_noise_moment

        u = np.asarray(u, dtype=float)
        if self.diversity is None:
            return self.multi_index.noise_moment(u)
        S = self.student_square_coefficients()
        self._xi_full(u)
        return wick_noise_moment(u, self.G, self.teacher_table(), np.broadcast_to(S, u.shape[:-1] + S.shape[-1:]))

    # -- ODE protocol (see popdyn.ode) ----------------------------------------------------------
    #: Name recorded in ``Trajectory.model``.
    ode_model = "additive"
    ode_state_names = ("u",)
    plot_unit_overlap = "u"
    ode_correction_label = "eta*(d-1)/(2B) C(u) u"

    def ode_initial_state(self, u0) -> dict:
        r"""Validate overlaps ``u0`` of shape ``(N, M)`` (``(J, M)`` with diversity) or ``(M,)``."""
        state = self.multi_index.ode_initial_state(u0)
        if self.diversity is not None and state["u"].shape[0] != self.n_neurons:
            raise ValueError(f"with `diversity` every neuron has its own student: `u0` must have n_neurons = "
                             f"{self.n_neurons} rows, got {state['u'].shape[0]}.")
        return state

    def ode_validate_options(self, *, eta=None, d=None, batch=1) -> dict:
        """Check the online-SGD options once (``eta`` and ``d`` go together)."""
        out = self.multi_index.ode_validate_options(eta=eta, d=d, batch=batch)
        out.pop("noise_nodes", None)
        out.pop("noise_method", None)
        return out

    def ode_rhs(self, t, state, *, eta=None, d=None, batch=1) -> dict:
        r""":math:`\dot u = s[G g(u) - (u^\top g(u))u]\;[-\eta(d-1)C(u)u/(2B)]`, vectorised over neurons."""
        u = state["u"]
        v = self.velocity(u)
        if eta is not None:
            c = self.noise_moment(u)
            v -= (eta * (d - 1) / (2.0 * batch)) * c[..., None] * u
        return {"u": v}

    def ode_time_unit(self, *, eta=None, **_) -> str:
        return "gradient-flow time t" if eta is None else "t = eta * steps"

    def ode_escape_observable(self, state) -> np.ndarray:
        r"""Per-neuron :math:`\max_m |u_m|`."""
        return np.max(np.abs(state["u"]), axis=-1)

    def ode_escape_bound(self) -> tuple:
        return 1.0, "|u_m| = |v_m . w| <= 1 for unit vectors"

    def ode_unit_speed(self, deriv) -> np.ndarray:
        return np.linalg.norm(deriv["u"], axis=-1)

    def ode_check_state(self, state):
        return self.multi_index.ode_check_state(state)

    def end_labels(self, state) -> list:
        """Where each neuron ends: ``"+v3"``, ``"-v1"`` or ``"none"``."""
        return self.multi_index.end_labels(state)

    def describe(self) -> dict:
        """JSON-friendly parameters (``V`` summarised by its shape and largest overlap)."""
        names = sorted({t.name for t in self.links})
        return {"model": "additive", "student": self.student.name,
                "links": names[0] if len(names) == 1 else [t.name for t in self.links],
                "M": self.M, "d": self.d, "scale": self.scale, "weights": self.weights.tolist(),
                "n_neurons": self.n_neurons, "degree": self.degree, "diversity": self.diversity is not None,
                "max_overlap": self.max_overlap, "loss": "correlation (small fixed second layer)"}


def _groups(acts) -> list:
    """``[(activation, indices)]`` for each distinct activation object."""
    groups: dict = {}
    for j, act in enumerate(acts):
        groups.setdefault(id(act), (act, []))[1].append(j)
    return [(act, np.array(idx)) for act, idx in groups.values()]


def _horner(gamma, u, xi=None):
    r""":math:`\sum_i \xi_{ji}\Gamma_{mi} u_{jm}^i` (``xi`` of shape (J, n+1) or None)."""
    out = np.zeros_like(u)
    for i in range(gamma.shape[1] - 1, -1, -1):
        out *= u
        out += gamma[:, i] if xi is None else xi[:, i:i + 1] * gamma[:, i]
    return out


def _horner_d(gamma, u, xi=None):
    r""":math:`\sum_{i\ge1} i\,\xi_{ji}\Gamma_{mi} u_{jm}^{i-1}`."""
    out = np.zeros_like(u)
    for i in range(gamma.shape[1] - 1, 0, -1):
        out *= u
        out += i * gamma[:, i] if xi is None else (i * xi[:, i:i + 1]) * gamma[:, i]
    return out


# --------------------------------------------------------------------------------------
# descent paths, the race, localisation
# --------------------------------------------------------------------------------------
def descent_path(problem: AdditiveProblem) -> np.ndarray:
    r"""Descent-path condition per neuron and task, shape ``(J, M)`` (bool).

    True when, for some sign :math:`\epsilon = \pm1`, every coefficient of the kernel
    towards :math:`\epsilon v_m`, :math:`\epsilon^i\Gamma_{jmi}` (:math:`i \ge 1`), is
    :math:`\ge 0` and the leading one is :math:`> 0`: the one-dimensional correlation
    :math:`t \mapsto \phi_{jm}(\epsilon t)` then increases on :math:`[0, 1]`, so nothing stops
    the neuron on its way to :math:`\epsilon v_m` (theory/oko2024/equations.md, "Diversity").

    Examples
    --------
    >>> prob = AdditiveProblem("he4", "he4", np.eye(2, 6), n_neurons=3)
    >>> descent_path(prob).all()
    np.True_
    """
    g = problem.neuron_gamma()[:, :, 1:]  # (J, M, n)
    scale = max(float(np.abs(g).max()) if g.size else 0.0, 1e-300)
    g = np.where(np.abs(g) > _COEFF_ZERO * scale, g, 0.0)
    i = np.arange(1, g.shape[-1] + 1)
    ok = np.zeros(g.shape[:2], dtype=bool)
    lead = problem.kernel_exponents
    for eps in (1.0, -1.0):
        h = g * eps ** i
        nonneg = np.all(h >= 0.0, axis=-1)
        lead_val = np.take_along_axis(h, np.maximum(lead - 1, 0)[None, :, None].repeat(h.shape[0], 0), -1)[..., 0]
        ok |= nonneg & (lead_val > 0) & (lead > 0)
    return ok


def predicted_winners(problem: AdditiveProblem, u0) -> tuple:
    r"""The leading-order race: which task (and sign) each neuron should localise on.

    For :math:`p \ge 3` the escape time from :math:`u_m(0)` under
    :math:`\dot u_m \approx s\,p\,\Gamma_{jmp}u_m^{p-1}` is
    :math:`(\epsilon u_m(0))^{2-p}/(p(p-2)|\Gamma_{jmp}|)` in the direction
    :math:`\epsilon`: even ``p`` needs :math:`\Gamma_{jmp} > 0` and has
    :math:`\epsilon = \mathrm{sign}\,u_m(0)`; odd ``p`` has
    :math:`\epsilon = \mathrm{sign}\,\Gamma_{jmp}` and needs :math:`\epsilon u_m(0) > 0`.  The
    winner maximises :math:`\epsilon u_m(0)|\Gamma_{jmp}|^{1/(p-2)}` over the eligible tasks
    (for equal kernels: :math:`\arg\max|u_m(0)|` for even ``p``, :math:`\arg\max u_m(0)` for
    odd ``p``; arXiv 2411.08798's directional-convergence rule).

    Parameters
    ----------
    problem : AdditiveProblem
        With a common kernel exponent ``p >= 3``.
    u0 : array_like, shape (J, M)

    Returns
    -------
    (winner, sign) : ndarrays of shape (J,)
        Task index (``-1``: no eligible task) and :math:`\epsilon`.
    """
    p = problem.exponent
    if p is None or p < MIN_EXPONENT:
        raise ValueError(f"`problem` must have one kernel exponent p >= {MIN_EXPONENT} for the race rule, got "
                         f"{problem.kernel_exponents.tolist()[:8]}.")
    u0 = check_finite_array("u0", u0, ndim=2)
    if u0.shape[1] != problem.M:
        raise ValueError(f"`u0` must have shape (J, M = {problem.M}), got {u0.shape}.")
    J = u0.shape[0]
    if problem.diversity is None:
        lead = np.broadcast_to(problem.gamma[:, p], (J, problem.M))
    else:
        if J != problem.n_neurons:
            raise ValueError(f"with `diversity`, `u0` must have n_neurons = {problem.n_neurons} rows, got {J}.")
        lead = problem.diversity[:, p:p + 1] * problem.gamma[None, :, p] if p < problem.diversity.shape[1] else \
            np.zeros((J, problem.M))
    if p % 2 == 0:
        eps = np.where(u0 >= 0, 1.0, -1.0)
        eligible = lead > 0
    else:
        eps = np.sign(lead)
        eligible = (lead != 0) & (eps * u0 > 0)
    score = np.where(eligible, eps * u0 * np.abs(lead) ** (1.0 / (p - 2)), -np.inf)
    win = np.argmax(score, axis=1)
    rows = np.arange(J)
    ok = np.isfinite(score[rows, win])
    return np.where(ok, win, -1), np.where(ok, eps[rows, win], 0.0)


def localisation(u, *, level: float = LOCALISED_LEVEL) -> tuple:
    r"""``(localised, winner, sign)`` for overlaps ``u`` of shape ``(..., M)``.

    ``localised``: :math:`\max_m|u_m| >` ``level``; ``winner``: the argmax; ``sign``: the sign
    of that overlap.
    """
    level = check_real("level", level, lower=0.0, upper=1.0, lower_open=True, upper_open=True)
    u = np.asarray(u, dtype=float)
    win = np.argmax(np.abs(u), axis=-1)
    top = np.take_along_axis(u, win[..., None], axis=-1)[..., 0]
    return np.abs(top) > level, win, np.sign(top)


# --------------------------------------------------------------------------------------
# coupon collector
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CoverageLaw:
    r"""Occupancy law of the tasks covered by ``J`` neurons (coupon collector).

    Attributes
    ----------
    M, J : int
    q : float
        Probability that a neuron localises on some task (uniform over the ``M`` tasks).
    pmf : ndarray, shape (M + 1,)
        :math:`P(\#\text{covered} = c)`, ``c = 0..M``.
    """

    M: int
    J: int
    q: float
    pmf: np.ndarray

    @property
    def expected(self) -> float:
        r""":math:`E[\#\text{covered}] = M(1 - (1 - q/M)^J)`."""
        return float(self.M * (1.0 - (1.0 - self.q / self.M) ** self.J))

    @property
    def std(self) -> float:
        """Standard deviation of the number covered."""
        c = np.arange(self.M + 1)
        mean = float(c @ self.pmf)
        return float(np.sqrt(max(float((c - mean) ** 2 @ self.pmf), 0.0)))

    @property
    def p_all(self) -> float:
        """Probability that every task is covered."""
        return float(self.pmf[-1])

    def as_dict(self) -> dict:
        return {"M": self.M, "J": self.J, "q": self.q, "expected_covered": self.expected, "std_covered": self.std,
                "p_all_covered": self.p_all}


def _coverage_step(P, M, q):
    """One more neuron: P'_c = P_c (1 - q(M-c)/M) + P_{c-1} q(M-c+1)/M."""
    c = np.arange(M + 1)
    new = P * (1.0 - q * (M - c) / M)
    new[1:] += P[:-1] * q * (M - c[:-1]) / M
    return new


def coverage_law(M: int, J: int, *, q: float = 1.0) -> CoverageLaw:
    r"""Distribution of the number of tasks covered when each of ``J`` neurons localises,
    with probability ``q``, on a uniformly random task among ``M``.

    Computed exactly by the occupancy recursion
    :math:`P_{J+1}(c) = P_J(c)(1 - q\frac{M-c}{M}) + P_J(c-1)\,q\frac{M-c+1}{M}`
    (:math:`O(JM)`, numerically stable for any ``M``; the inclusion–exclusion sum
    :math:`P(\text{all}) = \sum_j(-1)^j\binom{M}{j}(1-qj/M)^J` of arXiv 2411.08798 cancels
    catastrophically for large ``M``; the tests check the two agree for small ``M``).

    Parameters
    ----------
    M : int
        Number of tasks (``>= 1``).
    J : int
        Number of neurons (``>= 0``).
    q : float, optional
        Probability in [0, 1] that a neuron localises at all (default 1).

    Returns
    -------
    CoverageLaw
        With ``pmf[c]`` :math:`= P(\#\text{covered} = c)`, ``c = 0..M``.

    Examples
    --------
    >>> law = coverage_law(5, 10)
    >>> round(law.p_all, 6), round(law.expected, 6)
    (0.522547, 4.463129)
    """
    M = check_int("M", M, minimum=1)
    J = check_int("J", J, minimum=0)
    q = check_real("q", q, lower=0.0, upper=1.0)
    P = np.zeros(M + 1)
    P[0] = 1.0
    for _ in range(J):  # the recursion over neurons; vectorised over coverage counts
        P = _coverage_step(P, M, q)
    return CoverageLaw(M, J, q, P)


def width_for_coverage(M: int, *, confidence: float = 0.95, q: float = 1.0, max_width: int | None = None) -> int:
    r"""Smallest ``J`` with :math:`P(\text{all } M \text{ tasks covered}) \ge` ``confidence``.

    About :math:`M\log(M/(1-\mathrm{confidence}))/q` (the width :math:`J \gtrsim M\log M`
    of arXiv 2406.11828; for ``M = 5, 10, 20, 50, 100`` and ``q = 1``: 21, 51, 117, 341, 754).

    Parameters
    ----------
    M : int
        Number of tasks (``>= 1``).
    confidence : float, optional
        Target probability that all tasks are covered, in (0, 1) (default 0.95).
    q : float, optional
        Probability in (0, 1] that a neuron localises at all (default 1).
    max_width : int, optional
        Largest ``J`` tried (default :math:`20 M\log(M/(1-\mathrm{confidence}) + 2)/q + 10`,
        rounded down).

    Returns
    -------
    int
        The smallest width ``J`` (from the exact occupancy law, :func:`coverage_law`).

    Raises
    ------
    ValueError
        No ``J <= max_width`` reaches ``confidence``, or a bad argument.

    Examples
    --------
    >>> [width_for_coverage(M) for M in (5, 10, 20)]
    [21, 51, 117]
    """
    M = check_int("M", M, minimum=1)
    confidence = check_real("confidence", confidence, lower=0.0, upper=1.0, lower_open=True, upper_open=True)
    q = check_real("q", q, lower=0.0, upper=1.0, lower_open=True)
    cap = max_width if max_width is not None else int(20 * M * math.log(M / (1 - confidence) + 2) / q) + 10
    P = np.zeros(M + 1)
    P[0] = 1.0
    for J in range(1, cap + 1):
        P = _coverage_step(P, M, q)
        if P[-1] >= confidence:
            return J
    raise ValueError(f"no width up to `max_width` = {cap} covers all M = {M} tasks with probability {confidence}; "
                     "raise `max_width`.")


# --------------------------------------------------------------------------------------
# Phase I report
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LocalisationReport:
    r"""What Phase I achieved, per replica and in total.

    Attributes
    ----------
    localised : ndarray of bool, shape (R, J)
        :math:`\max_m|u_m| >` ``level`` at the end.
    winner, sign : ndarray, shape (R, J)
        Final argmax task and the sign of its overlap.
    predicted, predicted_sign : ndarray, shape (R, J)
        The leading-order race from the start (:func:`predicted_winners`; ``-1``: none).
    covered : ndarray of int, shape (R,)
        Distinct tasks with at least one localised neuron.
    law : CoverageLaw
        The coupon-collector law for ``M`` tasks and ``J`` neurons.
    level : float
    """

    localised: np.ndarray
    winner: np.ndarray
    sign: np.ndarray
    predicted: np.ndarray
    predicted_sign: np.ndarray
    covered: np.ndarray
    law: CoverageLaw
    level: float

    @property
    def fraction_localised(self) -> float:
        return float(np.mean(self.localised))

    @property
    def fraction_predicted(self) -> float:
        """Among localised neurons: the fraction whose winner (and sign) is the race's prediction."""
        hit = (self.winner == self.predicted) & (self.sign == self.predicted_sign)
        n = int(self.localised.sum())
        return float(np.sum(hit & self.localised) / n) if n else float("nan")

    @property
    def fraction_covered(self) -> float:
        return float(np.mean(self.covered) / self.law.M)

    def as_dict(self) -> dict:
        return {"level": self.level, "fraction_localised": self.fraction_localised,
                "fraction_winner_is_initial_argmax": self.fraction_predicted,
                "covered": self.covered.tolist(), "mean_covered": float(np.mean(self.covered)),
                "coupon_collector": self.law.as_dict()}

    def lines(self) -> list:
        law = self.law
        return [f"  localised (max_m |u_m| > {self.level:g}): {self.fraction_localised:.1%} of "
                f"{self.localised.size} neurons",
                f"  winner = initial-argmax race: {self.fraction_predicted:.1%} of the localised neurons",
                f"  tasks covered: {np.mean(self.covered):.2f} of M = {law.M} (coupon collector for J = {law.J}: "
                f"E = {law.expected:.2f} +- {law.std:.2f}, P(all) = {law.p_all:.3f})"]


def localisation_report(problem: AdditiveProblem, u0, u_final, *, level: float = LOCALISED_LEVEL,
                        q: float = 1.0) -> LocalisationReport:
    r"""Phase I summary from initial and final overlaps of shape ``(J, M)`` or ``(R, J, M)``.

    ``q`` is the coupon collector's probability that a neuron localises at all (1 for the
    equal-kernel model at large ``M``).

    Parameters
    ----------
    problem : AdditiveProblem
        The problem (its ``M`` tasks and the race rule of :func:`predicted_winners`).
    u0 : array_like, shape (J, M) or (R, J, M)
        Initial overlaps (one ``(J, M)`` array is shared by all replicas).
    u_final : array_like, shape (J, M) or (R, J, M)
        Overlaps at the end of Phase I.
    level : float, optional
        A neuron is localised when :math:`\max_m|u_m| >` ``level``, in (0, 1) (default
        ``LOCALISED_LEVEL`` = 0.95).
    q : float, optional
        Localisation probability for the coverage law (default 1).

    Returns
    -------
    LocalisationReport
        Per replica and neuron: localised or not, final winner and sign, the predicted
        winner and sign, the number of tasks covered, and :func:`coverage_law` for ``M``
        tasks and ``J`` neurons.

    Raises
    ------
    ValueError
        ``u0`` and ``u_final`` have different or wrong shapes.
    """
    u0 = np.asarray(u0, dtype=float)
    uf = np.asarray(u_final, dtype=float)
    if uf.ndim == 2:
        uf = uf[None]
    if u0.ndim == 2:
        u0 = np.broadcast_to(u0, uf.shape)
    if u0.shape != uf.shape or uf.shape[-1] != problem.M:
        raise ValueError(f"`u0` and `u_final` must have shape (R, J, M) or (J, M) with M = {problem.M}, got "
                         f"{u0.shape} and {uf.shape}.")
    loc, win, sign = localisation(uf, level=level)
    pred = np.empty(win.shape, dtype=int)
    psign = np.empty(win.shape)
    for r in range(uf.shape[0]):  # replicas (few): the rule itself is vectorised over neurons
        pred[r], psign[r] = predicted_winners(problem, u0[r])
    covered = np.array([np.unique(win[r][loc[r]]).size for r in range(uf.shape[0])])
    return LocalisationReport(loc, win, sign, pred, psign, covered, coverage_law(problem.M, uf.shape[1], q=q), level)


# --------------------------------------------------------------------------------------
# log-log slopes
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SlopeFit:
    r"""Weighted least-squares fit :math:`\log y = a + b\log x`.

    Attributes
    ----------
    slope, slope_se : float
        ``b`` and its standard error (from the per-point standard errors).
    intercept : float
    chi2 : float
        Sum of squared standardised residuals (``n - 2`` degrees of freedom).
    x, log_y, log_y_se : ndarray
    """

    slope: float
    slope_se: float
    intercept: float
    chi2: float
    x: np.ndarray
    log_y: np.ndarray
    log_y_se: np.ndarray

    def as_dict(self) -> dict:
        return {"slope": self.slope, "slope_se": self.slope_se, "intercept": self.intercept, "chi2": self.chi2,
                "x": self.x.tolist(), "y": np.exp(self.log_y).tolist(), "log_y_se": self.log_y_se.tolist()}


def loglog_slope(x, groups) -> SlopeFit:
    r"""Slope of :math:`\log y` against :math:`\log x` with its standard error.

    Parameters
    ----------
    x : array_like, shape (n,)
        Positive abscissae (``M``, ``d``, ``M d^{p-1}``, ...).
    groups : sequence of array_like
        For each ``x``, independent positive measurements (e.g. one per replica); the point
        is the mean of their logarithms, with standard error ``std/sqrt(count)``
        (at least 2 measurements each).

    Examples
    --------
    >>> fit = loglog_slope([1, 2, 4], [[1.0, 1.1], [4.0, 4.2], [16.0, 17.0]])
    >>> round(fit.slope, 2)
    1.99
    """
    x = check_finite_array("x", x, ndim=1)
    if x.size < 2 or np.any(x <= 0):
        raise ValueError(f"`x` must hold at least 2 positive values, got {x.tolist()}.")
    if len(groups) != x.size:
        raise ValueError(f"`groups` must have one set of measurements per x ({x.size}), got {len(groups)}.")
    ly, se = np.empty(x.size), np.empty(x.size)
    for i, g in enumerate(groups):
        g = np.asarray(g, dtype=float).ravel()
        if g.size < 2 or np.any(~np.isfinite(g)) or np.any(g <= 0):
            raise ValueError(f"`groups[{i}]` must hold at least 2 finite positive values, got {g.tolist()[:6]}.")
        lg = np.log(g)
        ly[i], se[i] = lg.mean(), max(lg.std(ddof=1), 1e-12) / math.sqrt(g.size)
    X = np.stack([np.ones_like(x), np.log(x)], axis=1)
    W = 1.0 / se ** 2
    cov = np.linalg.inv(X.T @ (W[:, None] * X))
    beta = cov @ (X.T @ (W * ly))
    chi2 = float(np.sum(W * (ly - X @ beta) ** 2))
    return SlopeFit(float(beta[1]), float(math.sqrt(cov[1, 1])), float(beta[0]), chi2, x, ly, se)


def _register() -> None:
    from ..simulation import register_stepper

    register_stepper(AdditiveProblem, "popdyn.models.additive_sim:AdditiveStepper", engine="full")
    register_stepper(AdditiveProblem, "popdyn.models.additive_sim:AdditiveExactStepper", engine="exact")


_register()
