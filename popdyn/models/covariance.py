r"""Single-index learning with a general (user-given) input covariance (arXiv 2309.03843).

The spiked model of :mod:`popdyn.models.spiked` is the fast special case.  Here any
dense symmetric positive-definite :math:`\Sigma` works through the same code: the
population gradient is the Hermite closed form of
:meth:`SpikedProblem._gradient_coefficients <popdyn.models.spiked.SpikedProblem>`
(imported, not re-derived), the finite-d simulator is
:class:`~popdyn.models.covariance_sim.CovarianceStepper` (a
:class:`~popdyn.models.spiked_sim.SpikedStepper` with dense :math:`\Sigma` operations).

Data model
----------
.. math::

    x \sim N(0, \Sigma), \qquad y = a^*\, g(\langle u, x\rangle), \qquad u^\top\Sigma u = 1 .

The user gives a direction (default :math:`e_1`); it is **rescaled** to
:math:`u = \hat u/\sqrt{\hat u^\top\Sigma\hat u}` so that :math:`\langle u, x\rangle \sim
N(0, 1)`; the factor is ``CovarianceProblem.direction_scale`` and appears in
:meth:`~CovarianceProblem.describe`.  One student neuron :math:`\phi` on the squared loss.

Population loss and gradient
----------------------------
With :math:`s = \sqrt{w^\top\Sigma w}` and :math:`m_\Sigma(w) = w^\top\Sigma u/s` the pair
:math:`(\langle w,x\rangle/s, \langle u,x\rangle)` is standard Gaussian with correlation
:math:`m_\Sigma`, so (theory/mousavi2023/equations.md, "Reconstructed model and derived facts", with
:math:`F(m) = a^*\sum_j c_j(\phi)\,\alpha_j m^j`)

.. math::

    \nabla R = g_s(s, m_\Sigma)\,\Sigma w + g_u(s, m_\Sigma)\,\Sigma u ,

``"normalized"`` / ``"preconditioned"``: :math:`R = \text{const} - F(m_\Sigma)`,
:math:`g_s = m_\Sigma F'/s^2`, :math:`g_u = -F'/s`;  ``"spherical"`` (positively
homogeneous student of degree :math:`q`, :math:`M_2 = E[\phi^2]`):
:math:`R = \tfrac12 s^{2q}M_2 - s^q F(m_\Sigma)`.  The flows are those of
:mod:`popdyn.models.spiked`:

.. math::

    \dot w = -(I - \tfrac{ww^\top}{\|w\|^2})\nabla R \ (\text{spherical}),\quad
    \dot w = -\nabla R \ (\text{normalized}),\quad
    \dot w = -\Sigma^{-1}\nabla R \ (\text{preconditioned}) .

Why the ODE state is the d-dimensional weight
---------------------------------------------
The loss depends on :math:`w` only through :math:`m_\Sigma` (normalized, preconditioned)
or through :math:`(w^\top\Sigma u, w^\top\Sigma w, \|w\|)` (spherical), but its gradient
contains :math:`\Sigma w`, whose overlaps bring in :math:`w^\top\Sigma^2 w`,
:math:`w^\top\Sigma^2 u`, ... -- the Krylov sequence of :math:`\Sigma` does not close on
a few scalars unless :math:`\Sigma` has few distinct eigenvalues (the spiked model has
two, which is why :class:`~popdyn.models.spiked.SpikedProblem` closes on
:math:`(p, q, S)`).  So :class:`CovarianceProblem` integrates the flow of
:math:`w \in \mathbb R^d` itself (``ode_state_names = ("w",)``); the overlaps
:math:`p, S, m_\Sigma` are derived (:meth:`~CovarianceProblem.overlaps`,
:meth:`~CovarianceProblem.with_overlaps`).  Exception: the preconditioned flow is the
isotropic flow in whitened coordinates, so :math:`\dot m_\Sigma = (1 - m_\Sigma^2)
F'(m_\Sigma)/s^2` with :math:`s` conserved, for any :math:`\Sigma` (theory/mousavi2023/equations.md,
checked in ``tests/test_covariance.py``).

Limits: the cost per right-hand side is :math:`O(d^2)` (dense mat-vec), set-up
:math:`O(d^3)` (eigenvalues, Cholesky, inverse); practical up to :math:`d` of a few
thousand.  The spherical flow needs a positively homogeneous student (relu, abs,
identity, sign), as in the spiked model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np

from .._validation import check_choice, check_finite_array, check_init_scalar, check_int, check_real
from ..activations import Activation
from .spiked import FLOWS, SETTLE_TOL, SpikedProblem, check_covariance, min_unlabeled

__all__ = ["CovarianceProblem", "load_covariance", "load_direction", "SYMMETRY_RTOL", "INIT_CHOICES"]

#: ``sigma`` is accepted as symmetric when :math:`\max_{ij}|\Sigma_{ij} - \Sigma_{ji}| \le`
#: ``SYMMETRY_RTOL`` :math:`\cdot\max_{ij}|\Sigma_{ij}|` (a few ulps of rounding from a
#: computed :math:`A A^\top` or a text file pass; a genuinely asymmetric input does not).
#: The accepted matrix is then symmetrised exactly, :math:`(\Sigma + \Sigma^\top)/2`.
SYMMETRY_RTOL = 1e-12
#: Documented forms of ``init`` (simulator and :meth:`CovarianceProblem.initial_weight`).
INIT_CHOICES = ("'uniform'", "a float m0 in (-1, 1) (the initial m_Sigma)", "an array w0 of length d")


def _read_array(path, what: str) -> np.ndarray:
    """``.npy`` via :func:`numpy.load`, anything else as whitespace (``.csv``: comma) text."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"`{what}` file {str(path)!r} does not exist or is not a file.")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            arr = np.loadtxt(p, delimiter="," if p.suffix.lower() == ".csv" else None, ndmin=1)
    except (OSError, ValueError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"`{what}` file {str(path)!r} could not be read as a .npy array or a numeric text "
                         f"table ({type(exc).__name__}: {exc}).") from None
    try:
        return np.asarray(arr, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"`{what}` file {str(path)!r} does not hold real numbers (dtype {arr.dtype}).") from None


def load_covariance(path) -> np.ndarray:
    r"""Read a dense covariance matrix from ``path``.

    ``.npy`` files are read with :func:`numpy.load` (no pickles); any other file as a
    whitespace-separated text table with :func:`numpy.loadtxt` (``#`` comments allowed;
    a ``.csv`` file is comma-separated).  The result must be a square 2-d array of
    finite reals; symmetry and positive definiteness are checked by
    :class:`CovarianceProblem`.

    Parameters
    ----------
    path : str or path-like
        The file to read (``.npy``, ``.csv`` or whitespace-separated text).

    Returns
    -------
    ndarray, shape (d, d)
        The matrix as read (float).

    Raises
    ------
    ValueError
        Missing or unreadable file, ragged rows, not 2-d, not square, non-finite entries.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "sigma.txt")
    >>> np.savetxt(path, [[2.0, 0.5], [0.5, 1.0]])
    >>> load_covariance(path).tolist()
    [[2.0, 0.5], [0.5, 1.0]]
    """
    arr = _read_array(path, "covariance")
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"`covariance` file {str(path)!r} must hold a square d x d matrix, got shape {arr.shape}.")
    return check_finite_array("covariance", arr)


def load_direction(path) -> np.ndarray:
    r"""Read a target direction (a vector of length ``d``) from ``path`` (``.npy`` or text:
    one number per line, or one row).  It is rescaled to :math:`u^\top\Sigma u = 1` by
    :class:`CovarianceProblem`.

    Parameters
    ----------
    path : str or path-like
        The file to read (``.npy``, ``.csv`` or whitespace-separated text).

    Returns
    -------
    ndarray, shape (d,)
        The direction as read (float, finite; a single row or column is flattened).

    Raises
    ------
    ValueError
        Missing or unreadable file, not a vector, non-finite entries.
    """
    arr = _read_array(path, "direction")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ValueError(f"`direction` file {str(path)!r} must hold a vector, got shape {arr.shape}.")
    return check_finite_array("direction", arr)


def _validate_sigma(sigma) -> np.ndarray:
    """Finite, square, symmetric within :data:`SYMMETRY_RTOL`, then (symmetrised) PD by
    :func:`popdyn.models.spiked.check_covariance`."""
    s = check_finite_array("sigma", sigma, ndim=2)
    if s.shape[0] != s.shape[1]:
        raise ValueError(f"`sigma` must be a square d x d matrix, got shape {s.shape}.")
    if s.shape[0] < 2:
        raise ValueError(f"`sigma` must be at least 2 x 2 (d >= 2), got shape {s.shape}.")
    scale = float(np.max(np.abs(s)))
    asym = np.abs(s - s.T)
    worst = float(asym.max())
    if worst > SYMMETRY_RTOL * scale:
        i, j = np.unravel_index(int(np.argmax(asym)), asym.shape)
        raise ValueError(f"`sigma` must be symmetric: |sigma[{i},{j}] - sigma[{j},{i}]| = {worst:.3e} exceeds "
                         f"SYMMETRY_RTOL * max|sigma| = {SYMMETRY_RTOL:g} * {scale:.3e} "
                         f"(sigma[{i},{j}] = {s[i, j]!r}, sigma[{j},{i}] = {s[j, i]!r}).")
    s = 0.5 * (s + s.T)
    return check_covariance(s)  # positive definite (reports the smallest eigenvalue)


@dataclasses.dataclass(frozen=True, eq=False)
class CovarianceProblem:
    r"""One neuron, single-index target, inputs :math:`N(0, \Sigma)` for a dense user-given
    :math:`\Sigma` (arXiv 2309.03843 beyond the spiked model; module docstring).

    Parameters
    ----------
    student, teacher : str or Activation
        Student :math:`\phi` and link :math:`g`.
    sigma : array_like (d, d)
        Symmetric (within :data:`SYMMETRY_RTOL`; then symmetrised) positive-definite
        covariance, ``d >= 2``.
    direction : array_like (d,), optional
        Target direction :math:`\hat u` (default :math:`e_1`), rescaled to
        :math:`u = \hat u/\sqrt{\hat u^\top\Sigma\hat u}` (``direction_scale``
        :math:`= 1/\sqrt{\hat u^\top\Sigma\hat u}`).
    flow : {"spherical", "normalized", "preconditioned"}
        As in :class:`~popdyn.models.spiked.SpikedProblem`.
    a_star : float
        Teacher amplitude (non-zero), :math:`y = a^* g(\langle u,x\rangle)`.
    n_unlabeled : int, optional
        Unlabelled samples of the empirical :math:`\hat\Sigma^{-1}` (preconditioned flow,
        simulator only); ``None`` = the exact :math:`\Sigma`.  At least
        :func:`~popdyn.models.spiked.min_unlabeled` ``(d) = d + 2``.

    Attributes
    ----------
    d : int
    sigma, u, sigma_u, cholesky, sigma_inv : ndarray (read-only)
        :math:`\Sigma`, :math:`u`, :math:`\Sigma u`, lower :math:`L` with :math:`LL^\top = \Sigma`,
        :math:`\Sigma^{-1}`.
    eigenvalues : ndarray (d,)
        Ascending eigenvalues of :math:`\Sigma`.
    direction_scale : float
        The factor applied to the given direction.

    Examples
    --------
    >>> sigma = np.diag([4.0, 1.0, 1.0, 1.0])
    >>> prob = CovarianceProblem("relu", "he2", sigma, flow="preconditioned")
    >>> prob.u.tolist(), prob.direction_scale
    ([0.5, 0.0, 0.0, 0.0], 0.5)
    >>> w = np.array([1.0, 1.0, 0.0, 0.0])
    >>> {k: round(float(v), 6) for k, v in prob.overlaps(w).items()}
    {'p': 0.5, 'S': 5.0, 'm_sigma': 0.894427, 'm_u': 0.707107}
    """

    student: Activation | str
    teacher: Activation | str
    sigma: np.ndarray = dataclasses.field(repr=False)
    direction: np.ndarray | None = dataclasses.field(default=None, repr=False)
    flow: str = "normalized"
    a_star: float = 1.0
    n_unlabeled: int | None = None

    ode_model = "covariance"
    ode_state_names = ("w",)
    #: compare and plot draw these overlaps of the d-dimensional weight (:meth:`with_overlaps`).
    plot_overlaps = ("m_sigma", "p", "S")

    def __post_init__(self):
        s = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        s("flow", check_choice("flow", self.flow, FLOWS))
        # the closed-form population gradient lives in SpikedProblem (kappa = 0 view: it only
        # uses s and m_Sigma); building it validates student, teacher, a_star, spherical+homogeneous
        helper = SpikedProblem(self.student, self.teacher, kappa=0.0, align=1.0, flow=self.flow, a_star=self.a_star)
        s("_helper", helper)
        s("student", helper.student)
        s("teacher", helper.teacher)
        s("a_star", helper.a_star)
        sig = _validate_sigma(self.sigma)
        d = sig.shape[0]
        s("d", d)
        if self.direction is None:
            uh = np.zeros(d)
            uh[0] = 1.0
        else:
            uh = check_finite_array("direction", self.direction, ndim=1)
            if uh.shape != (d,):
                raise ValueError(f"`direction` must have length d = {d} (the size of `sigma`), got shape {uh.shape}.")
            if not np.any(uh != 0):
                raise ValueError("`direction` must be a non-zero vector.")
        quad = float(uh @ sig @ uh)
        scale = 1.0 / math.sqrt(quad)
        u = uh * scale
        if self.n_unlabeled is not None:
            n = check_int("n_unlabeled", self.n_unlabeled, minimum=1)
            nmin = min_unlabeled(d)
            if n < nmin:
                raise ValueError(f"`n_unlabeled` must be at least {nmin} (= d + 2, so that the empirical covariance "
                                 f"is invertible with a finite mean inverse) for d = {d}, got {n}.")
            s("n_unlabeled", n)
        try:
            L = np.linalg.cholesky(sig)
        except np.linalg.LinAlgError:  # PD by eigenvalues but numerically not Cholesky-able
            ev = np.linalg.eigvalsh(sig)
            raise ValueError(f"`sigma` is too ill-conditioned for a Cholesky factorisation (eigenvalues in "
                             f"[{ev[0]:.3e}, {ev[-1]:.3e}]).") from None
        eye = np.eye(d)
        from scipy.linalg import cho_solve

        inv = cho_solve((L, True), eye)
        inv = 0.5 * (inv + inv.T)
        ev = np.linalg.eigvalsh(sig)
        for name, arr in (("sigma", sig), ("u", u), ("sigma_u", sig @ u), ("cholesky", L), ("sigma_inv", inv),
                          ("eigenvalues", ev)):
            arr = np.array(arr, dtype=float)
            arr.setflags(write=False)
            s(name, arr)
        if self.direction is not None:
            dirn = np.array(uh)
            dirn.setflags(write=False)
            s("direction", dirn)
        s("direction_scale", scale)

    # -- geometry ---------------------------------------------------------------------------
    def effective_dimension(self) -> float:
        r""":math:`d_{\rm eff} = \operatorname{tr}(\Sigma)(u^\top\Sigma u)/(u^\top\Sigma^2u)`
        (theory/mousavi2023/equations.md): :math:`1/d_{\rm eff}` approximates :math:`E[m_\Sigma(w_0)^2]` for a
        uniform :math:`w_0` (leading order in :math:`\|\Sigma\|_{op}/\operatorname{tr}\Sigma`)."""
        return float(np.trace(self.sigma) / (self.sigma_u @ self.sigma_u))

    def describe(self) -> dict:
        ev = self.eigenvalues
        return {"model": "covariance", "paper": "2309.03843", "student": self.student.name,
                "teacher": self.teacher.name, "a_star": self.a_star, "flow": self.flow, "d": self.d,
                "n_unlabeled": self.n_unlabeled, "direction": "e_1" if self.direction is None else "given",
                "direction_scale": self.direction_scale, "trace": float(np.trace(self.sigma)),
                "eigenvalue_min": float(ev[0]), "eigenvalue_max": float(ev[-1]),
                "condition_number": float(ev[-1] / ev[0]), "effective_dimension": self.effective_dimension(),
                "sigma_sha256": hashlib.sha256(np.ascontiguousarray(self.sigma).tobytes()).hexdigest()[:16],
                "u_sha256": hashlib.sha256(np.ascontiguousarray(self.u).tobytes()).hexdigest()[:16]}

    # -- population ---------------------------------------------------------------------------
    def F(self, m) -> np.ndarray:
        r""":math:`F(m) = a^*\sum_j c_j\alpha_j m^j`
        (:meth:`SpikedProblem.F <popdyn.models.spiked.SpikedProblem.F>`)."""
        return self._helper.F(m)

    def dF(self, m) -> np.ndarray:
        """:math:`F'(m)`."""
        return self._helper.dF(m)

    def overlaps(self, w) -> dict:
        r"""Derived overlaps of ``w`` of shape ``(..., d)``: ``p`` :math:`= \langle w, u\rangle`,
        ``S`` :math:`= w^\top\Sigma w`, ``m_sigma`` :math:`= w^\top\Sigma u/\sqrt S`,
        ``m_u`` :math:`= \langle w,u\rangle/(\|w\|\|u\|)` (names as in the spiked simulator)."""
        w = np.asarray(w, dtype=float)
        S = np.einsum("...d,...d->...", w @ self.sigma, w)
        p = w @ self.u
        return {"p": p, "S": S, "m_sigma": (w @ self.sigma_u) / np.sqrt(S),
                "m_u": p / (np.linalg.norm(w, axis=-1) * np.linalg.norm(self.u))}

    def _coefficients(self, w):
        """``(Sigma w, g_s, g_u)`` with grad R = g_s Sigma w + g_u Sigma u."""
        sw = w @ self.sigma
        s = np.sqrt(np.einsum("...d,...d->...", w, sw))
        g_s, g_u = self._helper._gradient_coefficients(s, (w @ self.sigma_u) / s)
        return sw, np.asarray(g_s), np.asarray(g_u)

    def loss(self, w) -> np.ndarray:
        r"""Population loss :math:`R(w)` (without :math:`\tfrac12E[y^2]`) of :attr:`flow`, ``w``
        of shape ``(..., d)``."""
        w = np.asarray(w, dtype=float)
        o = self.overlaps(w)
        # SpikedProblem with kappa = 0 reads (p, S) as (w.Sigma u, w^T Sigma w)
        return self._helper.loss({"p": o["m_sigma"] * np.sqrt(o["S"]), "q": np.zeros_like(o["S"]), "S": o["S"]})

    def gradient(self, w) -> np.ndarray:
        r"""Euclidean population gradient :math:`\nabla R = g_s\Sigma w + g_u\Sigma u`, shape ``(..., d)``."""
        sw, g_s, g_u = self._coefficients(np.asarray(w, dtype=float))
        return g_s[..., None] * sw + g_u[..., None] * self.sigma_u

    def velocity(self, w) -> np.ndarray:
        r"""Population flow :math:`\dot w` of :attr:`flow` (module docstring), shape ``(..., d)``."""
        w = np.asarray(w, dtype=float)
        grad = self.gradient(w)
        if self.flow == "spherical":
            lam = np.einsum("...d,...d->...", w, grad) / np.einsum("...d,...d->...", w, w)
            return -(grad - lam[..., None] * w)
        if self.flow == "preconditioned":
            return -(grad @ self.sigma_inv)
        return -grad

    # -- initial states -------------------------------------------------------------------------
    def initial_weight(self, init="uniform", *, rng=None, size=None) -> np.ndarray:
        r"""An initial weight :math:`w_0` (shape ``(d,)``, or ``(size, d)``).

        ``"uniform"``: Haar on :math:`S^{d-1}`.  A float ``m0`` in (-1, 1): the
        :math:`\Sigma`-orthogonal split :math:`w_0 \propto c\,u + r` with ``r`` a Haar unit
        vector of the hyperplane :math:`\{r: r^\top\Sigma u = 0\}` and
        :math:`c = \operatorname{sign}(m_0)\,|m_0|\sqrt{r^\top\Sigma r/(1-m_0^2)}`, so that
        :math:`m_\Sigma(w_0) = m_0` exactly (in whitened coordinates: :math:`m_0\tilde u`
        plus an orthogonal part).  An array: used as given (length ``d``, non-zero).
        Normalised to :math:`\|w_0\| = 1`, or :math:`w_0^\top\Sigma w_0 = 1` for the
        preconditioned flow (the norms the flows and the simulator conserve).

        Examples
        --------
        >>> prob = CovarianceProblem("relu", "he4", np.diag([3.0, 1.0, 0.5]))
        >>> w0 = prob.initial_weight(0.25, rng=0)
        >>> round(float(prob.overlaps(w0)["m_sigma"]), 12), round(float(np.linalg.norm(w0)), 12)
        (0.25, 1.0)
        """
        from .._random import as_generator

        head = check_init_scalar(init, INIT_CHOICES, lower=-1.0, upper=1.0, open_bounds=True)
        lead = () if size is None else (check_int("size", size, minimum=1),)
        if head is None:
            w = check_finite_array("init", init)
            if w.shape != (self.d,):
                raise ValueError(f"`init` as an array must have shape ({self.d},) (one weight vector), got {w.shape}.")
            if not np.any(w != 0):
                raise ValueError("`init` as an array must be a non-zero weight vector.")
            W = np.broadcast_to(w, lead + (self.d,)).copy()
        else:
            r = as_generator(rng).standard_normal(lead + (self.d,))
            if head[0] == "uniform":
                W = r
            else:
                m0 = head[1]
                a = self.sigma_u / np.linalg.norm(self.sigma_u)
                r -= (r @ a)[..., None] * a          # r^T Sigma u = 0
                r /= np.linalg.norm(r, axis=-1, keepdims=True)
                rsr = np.einsum("...d,...d->...", r @ self.sigma, r)
                c = math.copysign(1.0, m0) * abs(m0) * np.sqrt(rsr / (1.0 - m0 * m0))
                W = c[..., None] * self.u + r
        if self.flow == "preconditioned":
            norm = np.sqrt(np.einsum("...d,...d->...", W @ self.sigma, W))
        else:
            norm = np.linalg.norm(W, axis=-1)
        return W / norm[..., None]

    # -- ODE protocol -----------------------------------------------------------------------------
    def ode_initial_state(self, state0) -> dict:
        """Accept a weight vector of length ``d`` or ``{"w": ...}`` (used as given, no normalisation)."""
        w = state0["w"] if isinstance(state0, dict) else state0
        w = check_finite_array("state0", w)
        if w.shape != (self.d,):
            raise ValueError(f"`state0` must be a weight vector of shape ({self.d},), got {w.shape}.")
        if not np.any(w != 0):
            raise ValueError("`state0` must be a non-zero weight vector.")
        return {"w": w.copy()}

    def ode_rhs(self, t, state, **_) -> dict:
        r""":math:`\dot w` (:meth:`velocity`)."""
        return {"w": self.velocity(state["w"])}

    def ode_escape_observable(self, state) -> np.ndarray:
        r""":math:`|m_\Sigma(w)|`, shape ``(1,)``."""
        return np.atleast_1d(np.abs(self.overlaps(state["w"])["m_sigma"]))

    def ode_check_state(self, state):
        S = float(self.overlaps(state["w"])["S"])
        if not S > 0:
            return "the weight vector collapsed to 0 (w^T Sigma w <= 0)"
        return None

    def integrate(self, state0, t_end, **kwargs):
        """Integrate the d-dimensional flow with :func:`popdyn.ode.integrate` (returns a Trajectory
        with overlap ``"w"``; add ``p``, ``S``, ``m_sigma``, ``m_u`` with :meth:`with_overlaps`)."""
        from ..ode import integrate

        return integrate(self, state0, t_end, **kwargs)

    def with_overlaps(self, traj):
        """A copy of ``traj`` (ODE or simulation, overlap ``"w"`` of shape ``(n_times, R, d)``) with
        the derived overlaps :meth:`overlaps` added."""
        extra = self.overlaps(traj.overlaps["w"])
        return dataclasses.replace(traj, overlaps={**traj.overlaps, **extra})

    def escape_time(self, state0, *, level: float = 0.5, t_max: float = 1e12, stall_factor: float = 1e-6,
                    settle_tol: float = SETTLE_TOL) -> float:
        r"""Time for :math:`|m_\Sigma|` to reach ``level`` under the population flow (LSODA,
        ``rtol = 1e-10``; escapes span many decades of time).

        Returns ``inf`` when the flow stalls: :math:`|m_\Sigma|` falls below ``stall_factor``
        times its initial value (attracted to the equator), the flow settles at a fixed point
        below ``level`` (:math:`t\,\|\dot w\|/\|w\| < ` ``settle_tol`` after having been
        larger; e.g. the biased end point of the spherical flow, theory/mousavi2023/equations.md), or ``t_max``
        passes.  On the slow plateau of an escape :math:`t\,\|\dot w\|/\|w\|` stays of order
        :math:`|m_\Sigma|`, while at a stable fixed point it decays exponentially, so the
        settle test does not stop a slow escape.  Integrated by :func:`popdyn.ode.integrate`
        with three terminal user events (escape up, stall down, settle).
        """
        from ..ode import integrate

        level = check_real("level", level, lower=0.0, upper=1.0, lower_open=True)
        t_max = check_real("t_max", t_max, lower=0.0, lower_open=True)
        st = self.ode_initial_state(state0)
        m_init = float(self.ode_escape_observable(st)[0])
        if m_init >= level:
            return 0.0

        def up(t, state):
            return float(self.ode_escape_observable(state)[0]) - level

        def down(t, state):
            return float(self.ode_escape_observable(state)[0]) - stall_factor * m_init

        def settle(t, state):
            y = state["w"]
            return t * float(np.linalg.norm(self.velocity(y)) / np.linalg.norm(y)) - settle_tol

        up.terminal = down.terminal = settle.terminal = True
        up.direction, down.direction, settle.direction = 1, -1, -1
        traj = integrate(self, st, t_max, method="LSODA", rtol=1e-10, atol=1e-14, n_times=2, times="linear",
                         events=[up, down, settle], progress=False)
        if traj.events["up"].size:
            return float(traj.events["up"][0])
        return math.inf


from ..simulation import register_stepper  # noqa: E402  (registration at import time, string form)

register_stepper(CovarianceProblem, "popdyn.models.covariance_sim:CovarianceStepper", engine="full")
