r"""Finite-d simulator of the multi-index model with correlation loss (arXiv 2411.08798).

This is the ground truth that the overlap ODE of :mod:`popdyn.models.multi_index` must
match.  It plugs into the generic engine :func:`popdyn.simulation.simulate` through
:class:`MultiIndexStepper` (see the stepper protocol in :mod:`popdyn.simulation`).

Model
-----
Data :math:`x \sim N(0, I_d)`; teacher :math:`f^*(x) = \sum_{j=1}^k a^*_j
\sigma^*_j(v_j\cdot x)` with unit rows :math:`v_j` of ``V`` (shape ``(k, d)``, Gram
:math:`G = V V^\top`); student :math:`f(x) = \sum_{i=1}^N \sigma(w_i\cdot x)` with
:math:`\|w_i\| = 1`; correlation loss :math:`L = -E[f f^*]`, so the neurons decouple.
The recorded overlaps are :math:`u_i = V w_i \in \mathbb{R}^k`.

Algorithms
----------
``"gf"``
    Spherical gradient flow with the exact population gradient,

    .. math::

        \dot w_i = (I - w_i w_i^\top)\, V^\top g(V w_i), \qquad
        g_j(u) = \phi_j'(u_j) \;(\text{``problem.g``}),

    integrated with ``scipy.integrate.solve_ivp(method="DOP853")`` on the flattened
    ``(R, N, d)`` state, restarted at every recording time (so a resumed run is
    bit-identical to an uninterrupted one) and retracted to the sphere there (removes the
    ``O(rtol)`` norm drift).  It closes in ``u``: :math:`\dot u = G g(u) - u (u^\top g(u))`
    (arXiv 2411.08798; theory/simsek2025/equations.md).
``"sgd"``
    Online spherical SGD.  Each step draws, for every replica, a fresh minibatch
    :math:`x_1..x_B` (shared by the ``N`` neurons of that replica, as in a real network),
    with labels :math:`y_b = f^*(x_b)`.  Per-sample loss :math:`\ell = -y\,\sigma(w\cdot x)`;

    .. math::

        \nabla = -\frac1B \sum_b y_b\,\sigma'(w\cdot x_b)\, x_b, \qquad
        \hat g = \nabla - (w\cdot\nabla)\, w, \qquad
        w \leftarrow \frac{w - \eta \hat g}{\|w - \eta \hat g\|}.

    Time ``t = eta * steps``.  To second order in :math:`\eta` the mean increment is
    :math:`E[\Delta u] = \eta\,(G g - u\,u^\top g) - \tfrac{\eta^2}{2} E\|\hat g\|^2 u`,
    with :math:`E\|\hat g\|^2 = (d-1)\,C/B + O(1)` and
    :math:`C = E[y^2\sigma'(w\cdot x)^2]` (theory/bagj2021/equations.md, "Mean increment of
    spherical online SGD").
``"gd"``
    The same update on a fixed dataset of ``n_samples`` points per replica: full batch
    when ``batch`` is ``None`` or ``>= n``; otherwise, each epoch draws an independent
    permutation per replica and walks through it in minibatches of ``batch`` (the last
    minibatch of an epoch holds the ``n mod batch`` remaining samples, so every sample
    is used exactly once per epoch).  Time ``t = eta * steps``.

Randomness
----------
The engine spawns four streams from one ``SeedSequence``: ``model`` (index vectors
``V``), ``init`` (``W0``), ``data`` (the fixed dataset of ``"gd"``) and ``noise`` (the
fresh samples of ``"sgd"``, the permutations of ``"gd"``).  ``V`` and ``W0`` therefore
depend only on the seed, ``d``, ``init``, ``same_init`` and ``replicas``: a ``"gf"``
and an ``"sgd"`` run with the same seed start from the same ``V`` and ``W0``, and
:func:`popdyn.simulation.initial_state` returns them without simulating.  The index
vectors are shared by all replicas (one teacher).

References
----------
B. Şimşek, A. Bendjeddou, D. Hsu, "Learning Gaussian Multi-Index Models with Gradient
Flow: Time Complexity and Directional Convergence", AISTATS 2025 (arXiv 2411.08798).
G. Ben Arous, R. Gheissari, A. Jagannath, "Online stochastic gradient descent on
non-convex losses from high-dimensional inference", JMLR 22 (2021) (spherical online SGD).
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from .._random import as_generator
from .._validation import check_finite_array, check_init_scalar, check_int
from ..errors import NumericalError
from ..simulation import epoch_state, next_minibatch
from .multi_index import PSD_TOL, MultiIndexProblem, index_vectors

__all__ = ["initial_weights", "initial_state", "MultiIndexStepper", "INIT_CHOICES", "SPHERE_TOL"]

#: Documented forms of ``init``.
INIT_CHOICES = ("'uniform'", "a float m0 > 0 (warm start)", "an array u0 of shape (k,) or (N, k)")
#: An explicit ``u0`` may have :math:`u_0^\top G^+ u_0` up to ``1 + SPHERE_TOL`` (then ``w``
#: lies in span(V)) and a component outside range(G) up to ``SPHERE_TOL``: rounding of a
#: ``u0`` computed in floating point from a unit ``w`` is ~1e-15.
SPHERE_TOL = 1e-10
#: ``u0`` with :math:`u_0^\top G^+ u_0 \ge 1 - \text{BOUNDARY\_ULPS}\cdot\epsilon\cdot\mathrm{cond}(G)`
#: is on the boundary (``w`` in span(V)): :math:`q` is computed with a relative error of a
#: few ``eps * cond(G)``, and 256 is a generous multiple of it (a snapped ``w`` then realises
#: ``u0`` up to ~1e-13 relative, the rounding level, instead of carrying a spurious
#: orthogonal part ``sqrt(1 - q) ~ 1e-8``).
BOUNDARY_ULPS = 256
#: Rejection rounds for the warm start before giving up: if some neuron is still rejected,
#: its acceptance probability is ~1/200 or less and ``m0`` is far too large for the law to
#: mean "overlaps of scale m0".
MAX_REJECTION_ROUNDS = 200
#: Polynomial activations up to this degree are evaluated in the simulator by an in-place
#: Horner scheme in the power basis (fewer temporaries than the Hermite recurrence).  Up to
#: degree 8 it agrees with the recurrence to 1.4e-13 relative on ``|z| <= 10`` (he8, measured and
#: tested); the power coefficients grow with the degree, hence the cap.
FAST_POLY_MAX_DEGREE = 8

#: Row-wise dot product over the last axis (``np.vecdot`` on numpy >= 2 has less overhead).
_rowdot = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("...d,...d->...", a, b))


def fast_evaluator(act, *, derivative: bool = False):
    r"""``f(z, out) -> out``: :math:`\sigma(z)` (or :math:`\sigma'(z)`) written into ``out``.

    Polynomials of degree <= ``FAST_POLY_MAX_DEGREE`` use Horner's scheme in place;
    anything else falls back to the activation's own (allocating) evaluation.
    """
    if act.is_polynomial and act.degree <= FAST_POLY_MAX_DEGREE:
        from ..hermite import HermiteSeries

        series = HermiteSeries(np.array([float(c) for c in act.poly_coeffs]))
        if derivative:
            series = series.derivative()
        power = np.trim_zeros(np.atleast_1d(series.to_power()), "b")
        if power.size == 0:
            power = np.zeros(1)
        coeffs = [float(c) for c in power[::-1]]  # highest first

        def horner(z, out):
            out.fill(coeffs[0])
            for c in coeffs[1:]:
                out *= z
                if c != 0.0:
                    out += c
            return out

        return horner
    fn = act.derivative if derivative else act

    def fallback(z, out):
        out[...] = fn(z)
        return out

    return fallback


def _parse_init(init, k: int, n_neurons: int):
    """Return ``("uniform", None)``, ``("m0", float)`` or ``("u0", array (N, k))``."""
    head = check_init_scalar(init, INIT_CHOICES)
    if head is not None:
        return ("m0", head[1]) if head[0] == "scalar" else head
    u0 = check_finite_array("init", init)
    if u0.shape == (k,):
        u0 = np.broadcast_to(u0, (n_neurons, k)).copy()
    if u0.shape != (n_neurons, k):
        raise ValueError(
            f"`init` as an array of initial overlaps u0 must have shape (k,) = ({k},) or "
            f"(N, k) = ({n_neurons}, {k}), got {u0.shape}."
        )
    return "u0", u0


def describe_init(init) -> object:
    """JSON-friendly form of ``init`` (for ``meta`` and checkpoint matching)."""
    if isinstance(init, str):
        return init
    if isinstance(init, numbers.Real) and not isinstance(init, bool):
        return float(init)
    return np.asarray(init, dtype=float).tolist()


def _unit_rows(A: np.ndarray) -> np.ndarray:
    A /= np.sqrt(np.einsum("...d,...d->...", A, A))[..., None]
    return A


def boundary_tolerance(eigenvalues) -> float:
    r"""Rounding tolerance of :math:`q = u_0^\top G^+ u_0` near 1, from the condition of ``G``.

    ``eigenvalues`` are the nonzero eigenvalues of ``G`` (range of ``G``).  The computed
    eigenvalues have absolute errors of a few ``eps * max(lam)`` (backward-stable
    ``eigh``), so :math:`1/\lambda` has relative error ``~ eps * cond`` and so has ``q``;
    ``BOUNDARY_ULPS`` covers the few operations (and the rounding of ``G = V V^T``) on top.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    return BOUNDARY_ULPS * np.finfo(float).eps * float(lam.max() / lam.min())


def initial_weights(V, n_neurons: int, *, init="uniform", rng=None, replicas: int | None = None) -> np.ndarray:
    r"""Initial student weights on the unit sphere, shape ``(N, d)`` (or ``(R, N, d)``).

    Parameters
    ----------
    V : array_like, shape (k, d)
        Index vectors (unit rows), e.g. from :func:`popdyn.models.multi_index.index_vectors`.
    n_neurons : int
        Number of neurons ``N``.
    init : "uniform", float or array_like
        * ``"uniform"``: i.i.d. Haar (uniform) on :math:`S^{d-1}`.
        * a float ``m0 > 0``: warm start with random overlaps
          :math:`u_0 \sim N(0, m_0^2 G)` (for :math:`G = I`: :math:`u_{0j} = m_0 \xi_j` with
          i.i.d. standard normal :math:`\xi_j`), conditioned on
          :math:`u_0^\top G^+ u_0 < 1` by rejection.  This is the law of :math:`V w` for
          Haar ``w`` at large ``d`` when :math:`m_0 = d^{-1/2}`, so ``m0`` is the typical
          overlap scale.
        * an array ``u0`` of shape ``(k,)`` (all neurons) or ``(N, k)``: prescribed
          overlaps; needs ``u0`` in range(G) and :math:`u_0^\top G^+ u_0 \le 1`.

        In the last two cases the weights are

        .. math::

            w = V^\top G^+ u_0 + \sqrt{1 - u_0^\top G^+ u_0}\; r ,

        with ``r`` a uniformly random unit vector orthogonal to span(V), so that
        :math:`V w = u_0` and :math:`\|w\| = 1` exactly (up to rounding).
        When :math:`u_0^\top G^+ u_0 = 1` up to its rounding (:func:`boundary_tolerance`),
        ``w`` is exactly in span(V): ``r`` gets weight zero and :math:`V^\top G^+ u_0` is
        renormalised.
    rng : int, Generator or None
        Random source.
    replicas : int, optional
        If given, draw ``replicas`` independent sets: shape ``(R, N, d)``.

    Returns
    -------
    ndarray, shape (N, d) or (R, N, d)

    Raises
    ------
    ValueError
        Bad ``init`` (unknown string, ``m0 <= 0``, wrong ``u0`` shape, ``u0`` outside
        range(G) or :math:`u_0^\top G^+ u_0 > 1`, a warm start needing a component
        outside span(V) when ``d == rank(G)``).

    Examples
    --------
    >>> import numpy as np
    >>> V = np.eye(2, 5)
    >>> W = initial_weights(V, 3, init=[0.6, 0.0], rng=0)
    >>> np.round(W @ V.T, 12).tolist(), np.allclose(np.linalg.norm(W, axis=1), 1)
    ([[0.6, 0.0], [0.6, 0.0], [0.6, 0.0]], True)
    """
    V = check_finite_array("V", V, ndim=2)
    k, d = V.shape
    N = check_int("n_neurons", n_neurons, minimum=1)
    lead = (N,) if replicas is None else (check_int("replicas", replicas, minimum=1), N)
    kind, value = _parse_init(init, k, N)
    rng = as_generator(rng)
    if kind == "uniform":
        return _unit_rows(rng.standard_normal(lead + (d,)))
    G = V @ V.T
    lam, U = np.linalg.eigh(G)
    keep = lam > PSD_TOL * max(1.0, float(lam.max()))
    Ur, lr = U[:, keep], lam[keep]
    rank = int(keep.sum())
    if kind == "m0":
        m0 = value
        xi = rng.standard_normal(lead + (rank,))
        bad = m0 ** 2 * np.einsum("...j,...j->...", xi, xi) >= 1.0
        rounds = 0
        while bad.any():  # rejection rounds (vectorised), not a loop over neurons
            rounds += 1
            if rounds > MAX_REJECTION_ROUNDS:
                raise ValueError(
                    f"`init` = m0 = {m0} is too large: u0 ~ N(0, m0^2 G) rarely satisfies "
                    f"u0^T G^+ u0 < 1 (rank(G) = {rank}); use m0 well below {1 / np.sqrt(rank):.3g}."
                )
            xi[bad] = rng.standard_normal((int(bad.sum()), rank))
            bad = m0 ** 2 * np.einsum("...j,...j->...", xi, xi) >= 1.0
        coords = m0 * np.sqrt(lr) * xi  # u0 = coords @ Ur.T, u0^T G^+ u0 = m0^2 |xi|^2
        u0 = coords @ Ur.T
    else:
        u0 = np.broadcast_to(value, lead + (k,))
        coords = u0 @ Ur
        off = np.linalg.norm(u0 - coords @ Ur.T, axis=-1)
        if off.max() > SPHERE_TOL:
            raise ValueError(
                f"`init`: u0 must lie in range(G) (G is singular); a row has a component "
                f"{off.max():.3g} outside it."
            )
    q = np.einsum("...j,...j->...", coords ** 2, 1.0 / lr)  # u0^T G^+ u0
    if q.max() > 1.0 + SPHERE_TOL:
        raise ValueError(
            f"`init`: u0 must satisfy u0^T G^+ u0 <= 1 (w is a unit vector), got {q.max():.12g}."
        )
    # On the boundary (q = 1 up to the rounding of q) w lies in span(V): its orthogonal part
    # is exactly zero, not sqrt of a rounding residual (which would be ~1e-8 and machine
    # dependent); the span part is then renormalised below.
    on_span = q >= 1.0 - boundary_tolerance(lr)
    rest = np.where(on_span, 0.0, np.sqrt(np.clip(1.0 - q, 0.0, None)))
    W = ((coords / lr) @ Ur.T) @ V  # V^T G^+ u0, row form
    if np.any(on_span):
        W[on_span] = _unit_rows(W[on_span])
    if np.any(rest > 0):
        _, s, Vh = np.linalg.svd(V, full_matrices=False)
        Q = Vh[s > np.sqrt(PSD_TOL) * max(1.0, float(s.max()))]  # orthonormal basis of span(V)
        if Q.shape[0] >= d:
            raise ValueError(
                f"`init`: a warm start with u0^T G^+ u0 < 1 needs a component outside span(V), "
                f"which is all of R^d (d = {d} = rank(G)); increase `d` or use init='uniform'."
            )
        r = rng.standard_normal(lead + (d,))
        r -= (r @ Q.T) @ Q
        W = W + rest[..., None] * _unit_rows(r)
    else:
        rng.standard_normal(lead + (d,))  # keep the stream position independent of u0
    return W


def initial_state(problem: MultiIndexProblem, d: int, *, init="uniform", model_rng=None, init_rng=None,
                  replicas: int = 1, same_init: bool = True):
    r"""Index vectors, initial weights and initial overlaps: ``(V, W0, u0)``.

    ``V = index_vectors(problem.G, d, rng=model_rng)`` (shape ``(k, d)``);
    ``W0 = initial_weights(V, N, init=init, rng=init_rng)`` with shape ``(N, d)`` when
    ``same_init`` (all replicas start there) or ``(R, N, d)`` otherwise; ``u0 = W0 V^T``
    (shape ``(N, k)`` or ``(R, N, k)``), the initial condition of the u-ODE.

    Use :func:`popdyn.simulation.initial_state` to get the state a seeded
    :func:`~popdyn.simulation.simulate` run starts from.
    """
    if not isinstance(problem, MultiIndexProblem):
        raise TypeError(f"`problem` must be a MultiIndexProblem, got {type(problem).__name__}.")
    d = check_int("d", d, minimum=1)
    V = index_vectors(problem.G, d, rng=model_rng)
    W0 = initial_weights(V, problem.n_neurons, init=init, rng=init_rng,
                         replicas=None if same_init else replicas)
    return V, W0, W0 @ V.T


class MultiIndexStepper:
    r"""Simulator steps of the multi-index correlation-loss model (the stepper protocol).

    Built by :func:`popdyn.simulation.make_stepper`; see :mod:`popdyn.simulation` for the
    protocol and the module docstring for the algorithms.

    Attributes
    ----------
    V : ndarray, shape (k, d)
        Index vectors (shared by all replicas).
    u0 : ndarray, shape (N, k) or (R, N, k)
        Initial overlaps (``(N, k)`` when ``same_init``).
    data, labels : ndarray, shapes (R, n, d) and (R, n)
        The fixed dataset and its labels :math:`y = f^*(x)` (``"gd"`` only, else ``None``).
    batch : int or None
        Minibatch size in use (``n`` for full-batch ``"gd"``; ``None`` for ``"gf"``).
    """

    model = "multi_index"
    algorithms = ("gf", "sgd", "gd")
    #: ``(V, W0, u0)`` from the ``model``/``init`` streams (used by :func:`popdyn.simulation.initial_state`).
    initial_state = staticmethod(initial_state)

    def __init__(self, problem: MultiIndexProblem, config, streams: dict):
        if not isinstance(problem, MultiIndexProblem):
            raise TypeError(f"`problem` must be a MultiIndexProblem, got {type(problem).__name__}.")
        self.problem = problem
        self.config = config
        self.algorithm = config.algorithm
        self.R, self.N, self.d, self.k = config.replicas, problem.n_neurons, config.d, problem.k
        _parse_init(config.init, self.k, self.N)  # validate before drawing anything
        self.V, self._W0, self.u0 = initial_state(
            problem, self.d, init=config.init, model_rng=streams["model"], init_rng=streams["init"],
            replicas=self.R, same_init=config.same_init,
        )
        self._VT = np.ascontiguousarray(self.V.T)
        # teacher activations grouped by identity (usually one group): y = sum_g sigma_g(T[..., idx]) @ a[idx]
        groups: dict = {}
        for j, act in enumerate(problem.teacher):
            groups.setdefault((act.name, id(act.fn)), (act, []))[1].append(j)
        self._teacher_groups = [(fast_evaluator(act), np.array(idx), problem.a_star[idx])
                                for act, idx in groups.values()]
        self._dstudent = fast_evaluator(problem.student, derivative=True)
        self.eta = config.eta
        self.data = self.labels = None
        self.batch = None
        self._buffers: dict = {}
        if self.algorithm == "sgd":
            self.batch = config.batch
        elif self.algorithm == "gd":
            n = config.n_samples
            self.data = streams["data"].standard_normal((self.R, n, self.d))
            self.labels = self.teacher_labels(self.data)
            self.batch = n if config.batch is None else min(config.batch, n)
            if config.batch is not None and config.batch > n:
                warnings.warn(f"`batch` = {config.batch} exceeds `n_samples` = {n}; using full-batch GD.",
                              stacklevel=4)
            self._data_flat = self.data.reshape(self.R * n, self.d)
            self._row_offset = (np.arange(self.R) * n)[:, None]

    # -- protocol -------------------------------------------------------------------------
    @property
    def continuous(self) -> bool:
        """``True`` for gradient flow (advanced with :meth:`advance`)."""
        return self.algorithm == "gf"

    @property
    def constants(self) -> dict:
        """Arrays fixed for the whole run, saved in checkpoints to verify a resume."""
        return {"V": self.V}

    def init_state(self) -> dict:
        """Fresh dynamic state: ``{"W": (R, N, d)}`` (+ ``"perm"``, ``"pos"`` for minibatch GD)."""
        W = np.empty((self.R, self.N, self.d))
        W[...] = self._W0
        state = {"W": W}
        if self.algorithm == "gd" and self.batch < self.config.n_samples:
            state.update(epoch_state(self.R, self.config.n_samples))
        return state

    def observe(self, state) -> dict:
        """``{"u": W V^T}`` of shape ``(R, N, k)``."""
        return {"u": state["W"] @ self._VT}

    def work_per_step(self) -> float:
        """Rough cost of one step in multiply-adds (drives the automatic progress bar)."""
        b = self.batch or 1
        return float(self.R * (self.N + b + self.k) * self.d)

    def describe(self) -> dict:
        """JSON-friendly extra ``meta``: the initial overlaps and the batch in use."""
        return {"u0": self.u0.tolist(), "init": describe_init(self.config.init), "batch_used": self.batch}

    # -- teacher ----------------------------------------------------------------------------
    def teacher_labels(self, X) -> np.ndarray:
        r""":math:`y = f^*(x) = \sum_j a^*_j \sigma^*_j(v_j\cdot x)` for ``X`` of shape ``(..., d)``."""
        return self._labels_from_projections(np.asarray(X) @ self._VT)

    def _labels_from_projections(self, T) -> np.ndarray:
        y = None
        for act, idx, a in self._teacher_groups:  # one group unless the teachers differ
            Tj = T if idx.size == self.k else T[..., idx]
            part = act(Tj, np.empty(Tj.shape)) @ a
            y = part if y is None else y + part
        return y

    # -- discrete steps ------------------------------------------------------------------------
    def _buffer(self, name, shape):
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = np.empty(shape)
        return buf

    def step(self, state, rng) -> None:
        """One SGD / GD step, in place on ``state["W"]`` (``rng``: the noise stream)."""
        if self.algorithm == "sgd":
            X = self._buffer("X", (self.R, self.batch, self.d))
            rng.standard_normal(out=X)
            T = self._buffer("T", (self.R, self.batch, self.k))
            np.matmul(X, self._VT, out=T)
            self._update(state["W"], X, self._labels_from_projections(T))
        elif self.algorithm == "gd":
            n = self.config.n_samples
            if self.batch >= n:
                self._update(state["W"], self.data, self.labels)
                return
            idx = next_minibatch(state, rng, n, self.batch)
            b = idx.shape[1]
            rows = (idx + self._row_offset).ravel()
            X = self._buffer(f"X{b}", (self.R, b, self.d))
            np.take(self._data_flat, rows, axis=0, out=X.reshape(-1, self.d))
            y = self.labels.ravel()[rows].reshape(self.R, b)
            self._update(state["W"], X, y)
        else:
            raise TypeError("`step` is for discrete algorithms; gradient flow uses `advance`.")

    def _update(self, W, X, y) -> None:
        r"""Riemannian step with retraction on a batch ``X`` (R, b, d), labels ``y`` (R, b).

        With :math:`c_b = \eta\, y_b \sigma'(z_b)/b` (so that :math:`-\eta\nabla = \sum_b c_b x_b`)
        and :math:`s = \sum_b c_b z_b = -\eta\, w\cdot\nabla`:
        :math:`w - \eta\hat g = (1 - s)\,w + \sum_b c_b x_b`, whose norm is
        :math:`\sqrt{1 + \eta^2\|\hat g\|^2} \ge 1`; then normalise.
        """
        b = X.shape[1]
        Z = self._buffer(f"Z{b}", (self.R, self.N, b))
        np.matmul(W, X.transpose(0, 2, 1), out=Z)
        coef = self._dstudent(Z, self._buffer(f"C{b}", Z.shape))
        coef *= (y * (self.eta / b))[:, None, :]
        s = _rowdot(coef, Z)
        D = self._buffer("D", W.shape)
        np.matmul(coef, X, out=D)
        np.subtract(1.0, s, out=s)
        W *= s[..., None]
        W += D
        norm = np.sqrt(_rowdot(W, W))
        if not math.isfinite(float(norm.sum())):
            raise NumericalError(
                f"non-finite weights after an update with eta = {self.eta:g}; the gradient "
                "overflowed. Try a smaller `eta` or a bounded activation."
            )
        W /= norm[..., None]

    # -- gradient flow -------------------------------------------------------------------------
    def _gf_rhs(self, t, y, shape):
        W = y.reshape(shape)
        F = self.problem.g(W @ self._VT) @ self.V  # V^T g(V w), row form
        dW = F - np.einsum("rnd,rnd->rn", W, F)[..., None] * W
        if not np.all(np.isfinite(dW)):
            raise NumericalError("non-finite gradient-flow velocity", time=float(t))
        return dW.ravel()

    def advance(self, state, t0: float, t1: float) -> None:
        """Integrate the flow from ``t0`` to ``t1`` (DOP853), then retract to the sphere."""
        from scipy.integrate import solve_ivp

        W = state["W"]
        Wi = W[:1] if self.config.same_init else W  # deterministic: identical replicas integrated once
        shape = Wi.shape
        sol = solve_ivp(self._gf_rhs, (t0, t1), Wi.ravel(), method="DOP853", t_eval=[t1],
                        rtol=self.config.rtol, atol=self.config.atol, args=(shape,))
        if sol.status != 0 or sol.y.shape[1] != 1:
            raise NumericalError(f"gradient-flow integration failed: {sol.message}", time=float(t0))
        W[...] = _unit_rows(sol.y[:, -1].reshape(shape))
