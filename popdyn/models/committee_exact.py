r"""Exact d-free simulator of online SGD for the committee machine (two-layer, squared loss).

Online SGD with fresh Gaussian samples is simulated *exactly* at any finite dimension
``d`` without ever materialising a sample :math:`x \in \mathbb{R}^d` or the weights
:math:`W`: the state is the order parameters :math:`(Q, M, a)` and each step draws the
low-dimensional projections of the minibatch from their exact joint law (theory/CONVENTIONS.md,
"Exact d-free simulation of online SGD").
The cost per step is independent of ``d``.  It plugs into :func:`popdyn.simulation.simulate`
as the ``engine="exact"`` stepper of :class:`~popdyn.models.committee.CommitteeProblem`.

Model (popdyn conventions, see :mod:`popdyn.models.committee`)
--------------------------------------------------------------
:math:`x \sim N(0, I_d)`; teacher rows :math:`v_n` (``V``, M x d, Gram :math:`G`);
:math:`y = \sum_n a^*_n \sigma^*(v_n\cdot x) + \sqrt{\texttt{noise}}\,\xi`; student
:math:`f(x) = \sum_i a_i \sigma(w_i\cdot x)`; per-sample loss :math:`\tfrac12 (f-y)^2`.
One step of online SGD with a fresh minibatch :math:`x_1..x_B` (mean gradient):

.. math::

    w_i' = w_i - \sum_b c_{ib}\, x_b, \qquad
    c_{ib} = \frac{\eta}{B}\, a_i \Delta_b\, \sigma'(\lambda_{ib}), \qquad
    a_i' = a_i - \frac{\eta_a}{B} \sum_b \Delta_b\, \sigma(\lambda_{ib}),

with local fields :math:`\lambda_{ib} = w_i\cdot x_b`, :math:`\nu_{nb} = v_n\cdot x_b`,
error :math:`\Delta_b = f(x_b) - y_b`, and the second layer updated only when
``problem.train_second_layer`` (simultaneous update: the old ``a`` enters :math:`c`).
Hence, with :math:`\Lambda = (\lambda_{ib})` (K x B), :math:`N = (\nu_{nb})` (M x B) and
the sample Gram matrix :math:`S_{bb'} = x_b\cdot x_{b'}` (B x B),

.. math::

    Q' = Q - c\Lambda^\top - \Lambda c^\top + c\, S\, c^\top, \qquad
    M' = M - c\, N^\top .                                              \tag{1}

Why the overlaps are an exact Markov chain
------------------------------------------
Let :math:`P = K + M` and :math:`C = \begin{pmatrix} Q & M\\ M^\top & G\end{pmatrix}`
(P x P).  Given the past, :math:`W` and :math:`V` are fixed and the new samples are
independent of them.  If :math:`d \ge P`, pick any orthonormal frame :math:`E` (P x d)
whose row span contains span(W, V), so that :math:`[W; V] = A E` with
:math:`A A^\top = C`.  Then :math:`g_b = E x_b \sim N(0, I_P)` and the components
:math:`x_b^\perp` orthogonal to the frame are independent of :math:`g` and i.i.d.
standard Gaussian in a :math:`(d-P)`-dimensional space, so

.. math::

    (\lambda_b, \nu_b) = A\, g_b, \qquad
    S = g^\top g + S^\perp, \qquad S^\perp \sim \mathrm{Wishart}_B(d - P, I_B).  \tag{2}

Replacing :math:`A` by another square root :math:`A O` (:math:`O` orthogonal) maps
:math:`g \mapsto O g`, which has the same law and the same Gram :math:`g^\top g`: the
conditional law of :math:`(\Lambda, N, S)` depends on the past **only through**
:math:`C`, i.e. through :math:`(Q, M)`, :math:`G` and :math:`d`.  The label noise is
independent of everything, and :math:`a'` depends on :math:`(a, \Lambda, N, \xi)`.  By
(1), :math:`(Q_t, M_t, a_t)` is therefore a Markov chain whose kernel depends only on
:math:`(G, d)` and the problem, and sampling (2) then applying (1) draws it *exactly*:
the joint law over all steps equals that of the full d-dimensional simulation (up to
floating-point rounding).  The span of :math:`W` does grow by the :math:`x_b`
directions, but the next step's samples are fresh, so only the new :math:`C` matters.
Using a fixed P-dimensional frame (rather than the rank ``r`` of ``C``) needs no rank
decision: when :math:`\mathrm{rank}\, C < P` the extra frame directions simply move
:math:`P - r` degrees of freedom from the Wishart part into :math:`g^\top g`, with the
same law.  The factor :math:`A` is a Cholesky factor of ``C`` (an eigen-factor with
clipped rounding-level negative eigenvalues when ``C`` is singular), and
:math:`S^\perp` is drawn by the Bartlett decomposition (:func:`bartlett_factor`), so a
step costs :math:`O(R\,(P^3 + P^2 B + K B^2))`, independent of ``d``.

Validity
--------
Requires ``d >= K + M`` (a P-dimensional frame must exist; below that the weights and
teacher vectors cannot be generic).  Exact for any activations and any ``d``; the only
approximations are floating-point rounding (relative ``~1e-16`` per step; ``Q`` is kept
exactly symmetric).

Step sizes
----------
The engine's ``eta`` is the first-layer step; the second-layer step is
:math:`\eta_a = \eta\,\delta_a/\delta`, so ``eta = problem.eta(d)`` (:math:`\delta/d`)
gives :math:`\eta_a = \delta_a/d` (:func:`step_sizes`), exactly as the full engine
(:mod:`popdyn.models.committee_sim`).  The engine records ``t = eta * steps``;
:func:`popdyn.models.committee.simulate_committee` runs either engine in the ODE's time
``t = steps/d``.  The overlaps do not depend on ``problem.conventions``
(:math:`Q = J J^\top/N = W W^\top` etc.), so the exact engine ignores that option.

Initialisation (``init``)
-------------------------
* a float ``s > 0``: first-layer rows i.i.d. :math:`N(0, s^2 I_d/d)` (so
  :math:`Q_0 = s^2 I + O(d^{-1/2})`), drawn through their exact overlap law
  (:func:`initial_overlaps`);
* ``"uniform"``: rows i.i.d. uniform on the unit sphere :math:`S^{d-1}`;
* a dict ``{"Q": Q0, "M": M0}`` (optionally ``"a": a0``): that exact state.

``a`` starts at ``problem.a0`` unless the dict gives ``"a"``.  With ``same_init`` (the
default) every replica starts from the same draw, as the full engine starts every
replica from the same ``W0``.

References
----------
D. Saad, S. A. Solla, "On-line learning in soft committee machines", PRE 52, 4225 (1995).
S. Goldt, M. Advani, A. M. Saxe, F. Krzakala, L. Zdeborová, "Dynamics of stochastic
gradient descent for two-layer neural networks in the teacher-student setup",
NeurIPS 2019.
M. S. Bartlett, "On the theory of statistical regression", Proc. R. Soc. Edinburgh 53
(1933) (Bartlett decomposition of the Wishart law).

Examples
--------
>>> from popdyn.models.committee import CommitteeProblem
>>> from popdyn.simulation import simulate
>>> prob = CommitteeProblem("erf", "erf", K=2, M=2)
>>> traj = simulate(prob, d=10**6, eta=prob.eta(10**6), steps=50, replicas=4, init=0.5,
...                 rng=0, engine="exact", n_record=3)
>>> traj.Q.shape, traj.M.shape, traj.a.shape
((3, 4, 2, 2), (3, 4, 2, 2), (3, 4, 2))
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._random import as_generator
from .._validation import check_int, check_real
from ..samplers import BartlettFactor
from ..errors import NumericalError
from .committee import INIT_CHOICES, CommitteeProblem
from .committee import parse_init as _parse_init

__all__ = [
    "CommitteeExactStepper",
    "bartlett_factor",
    "psd_factor",
    "exact_update",
    "initial_overlaps",
    "step_sizes",
    "INIT_CHOICES",
]

#: Documented forms of ``init``.


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------
def bartlett_factor(n: int, B: int, rng=None, size=()) -> np.ndarray:
    r"""Lower-triangular ``L`` with :math:`L L^\top \sim \mathrm{Wishart}_B(n, I_B)`.

    The Gram matrix of ``B`` i.i.d. standard Gaussian vectors in :math:`\mathbb{R}^n`,
    drawn in :math:`O(B^2)` by the Bartlett decomposition (Gram–Schmidt of the vectors):

    .. math::

        L_{ii} = \sqrt{\chi^2_{n-i}}\ (i < n), \qquad
        L_{ij} \sim N(0, 1)\ (j < i,\ j < n), \qquad \text{all others } 0,

    with 0-based indices and all entries independent.  For integer ``n < B`` this is the
    singular Wishart law (rank ``n``): once ``n`` vectors span :math:`\mathbb{R}^n` the
    remaining ones have no orthogonal component.  Delegates to
    :class:`popdyn.samplers.BartlettFactor` (stream order ``"chi2_first"``).

    Parameters
    ----------
    n : int
        Degrees of freedom (the dimension of the space), ``>= 0``.
    B : int
        Size of the matrix, ``>= 1``.
    rng : int, Generator or None
    size : tuple of int
        Leading batch shape.

    Returns
    -------
    ndarray, shape ``size + (B, B)``

    Examples
    --------
    >>> L = bartlett_factor(5, 3, rng=0, size=(2,))
    >>> L.shape, bool(np.all(np.triu(L, 1) == 0))
    ((2, 3, 3), True)
    """
    n = check_int("n", n, minimum=0)
    B = check_int("B", B, minimum=1)
    size = tuple(size)
    rng = as_generator(rng)
    return BartlettFactor(n, B).draw(rng, size)


def _bartlett_pattern(n: int, B: int) -> BartlettFactor:
    """The stepper's precomputed sampler of the ``B x B`` Bartlett factor with ``n`` degrees of
    freedom (chi-squares drawn before normals; :class:`popdyn.samplers.BartlettFactor`)."""
    return BartlettFactor(n, B)


def psd_factor(C) -> np.ndarray:
    r"""A square factor ``F`` with :math:`F F^\top = C` for PSD ``C`` of shape ``(..., P, P)``.

    The Cholesky factor when every matrix of the batch is positive definite; otherwise
    the eigen-factor :math:`U \sqrt{\max(\Lambda, 0)}` (negative eigenvalues of
    rounding size are clipped).  Any square root serves for the exact step (module
    docstring), so the choice does not change the law.

    Examples
    --------
    >>> C = np.array([[1.0, 1.0], [1.0, 1.0]])  # singular
    >>> F = psd_factor(C)
    >>> bool(np.allclose(F @ F.T, C))
    True
    """
    C = np.asarray(C, dtype=float)
    try:
        return np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        lam, U = np.linalg.eigh(C)
        return U * np.sqrt(np.clip(lam, 0.0, None))[..., None, :]


def step_sizes(problem: CommitteeProblem, eta: float) -> tuple:
    r"""``(eta, eta_a)``: first-layer step ``eta`` and second-layer step
    :math:`\eta_a = \eta\,\delta_a/\delta` (``None`` when the second layer is fixed)."""
    eta = check_real("eta", eta, lower=0.0, lower_open=True)
    if not problem.train_second_layer:
        return eta, None
    return eta, eta * problem.delta_a / problem.delta


def _evaluators(problem: CommitteeProblem):
    return problem.student, problem.student.derivative, problem.teacher


def _update_core(Q, M, a, lam, nu, S, y, evaluators, eta, eta_a) -> None:
    r"""Update (1) in place on ``Q`` (R, K, K), ``M`` (R, K, M), ``a`` (R, K) given the
    fields ``lam`` (R, K, B), ``nu`` (R, M, B), the sample Gram ``S`` (R, B, B) and the
    labels ``y`` (R, B).  ``Q`` stays exactly symmetric."""
    sigma, dsigma, _ = evaluators
    B = lam.shape[-1]
    s_lam = sigma(lam)
    f = np.matmul(a[:, None, :], s_lam)[:, 0, :]  # (R, B)
    delta = f - y
    c = dsigma(lam)
    c *= a[:, :, None]
    c *= delta[:, None, :] * (eta / B)  # (R, K, B)
    cl = np.matmul(c, lam.transpose(0, 2, 1))  # (R, K, K): sum_b c_ib lam_kb
    csc = np.matmul(np.matmul(c, S), c.transpose(0, 2, 1))
    # x + y == y + x bitwise, so both sums are exactly symmetric and so is the increment
    dQ = 0.5 * (csc + csc.transpose(0, 2, 1)) - (cl + cl.transpose(0, 2, 1))
    Q += dQ
    M -= np.matmul(c, nu.transpose(0, 2, 1))
    if eta_a is not None:
        a -= (eta_a / B) * np.matmul(s_lam, delta[:, :, None])[..., 0]


def exact_update(problem: CommitteeProblem, Q, M, a, lam, nu, S, y, *, eta: float) -> tuple:
    r"""One SGD step on the overlaps given the fields and the sample Gram: ``(Q', M', a')``.

    This is the deterministic map (1) of the module docstring that the exact engine
    applies after drawing ``(lam, nu, S)`` from their law.  Given the fields and the
    Gram computed from actual samples it reproduces the explicit d-dimensional update
    :math:`w_i' = w_i - \sum_b c_{ib} x_b` exactly (up to rounding).

    Parameters
    ----------
    problem : CommitteeProblem
    Q, M, a : array_like, shapes (R, K, K), (R, K, M), (R, K)
        Overlaps and second layer before the step.
    lam, nu : array_like, shapes (R, K, B), (R, M, B)
        Local fields :math:`\lambda_{ib} = w_i\cdot x_b`, :math:`\nu_{nb} = v_n\cdot x_b`.
    S : array_like, shape (R, B, B)
        Sample Gram matrix :math:`x_b\cdot x_{b'}`.
    y : array_like, shape (R, B)
        Labels (with their noise).
    eta : float
        First-layer step; the second layer uses :func:`step_sizes`.

    Returns
    -------
    Q', M', a' : ndarrays (new arrays; the inputs are not modified)
    """
    if not isinstance(problem, CommitteeProblem):
        raise TypeError(f"`problem` must be a CommitteeProblem, got {type(problem).__name__}.")
    eta, eta_a = step_sizes(problem, eta)
    Q = np.array(Q, dtype=float)
    M = np.array(M, dtype=float)
    a = np.array(a, dtype=float)
    lam, nu, S, y = (np.asarray(v, dtype=float) for v in (lam, nu, S, y))
    K, Mn = problem.K, problem.M
    if Q.ndim != 3 or Q.shape[1:] != (K, K):
        raise ValueError(f"`Q` must have shape (R, {K}, {K}), got {Q.shape}.")
    R = Q.shape[0]
    B = lam.shape[-1] if lam.ndim == 3 else -1
    for name, arr, shape in (("M", M, (R, K, Mn)), ("a", a, (R, K)), ("lam", lam, (R, K, B)),
                             ("nu", nu, (R, Mn, B)), ("S", S, (R, B, B)), ("y", y, (R, B))):
        if arr.shape != shape or B < 1:
            raise ValueError(f"`{name}` must have shape {shape}, got {arr.shape}.")
    _update_core(Q, M, a, lam, nu, S, y, _evaluators(problem), eta, eta_a)
    return Q, M, a


# --------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------


def _check_dimension(problem: CommitteeProblem, d) -> int:
    P = problem.K + problem.M
    d = check_int("d", d, minimum=1)
    if d < P:
        raise ValueError(
            f"`d` must be >= K + M = {P} for the exact engine (the student and teacher vectors "
            f"need a {P}-dimensional frame; the perpendicular Wishart part has d - K - M degrees of "
            f"freedom), got d = {d}."
        )
    return d


def initial_overlaps(problem: CommitteeProblem, d: int, *, init=1.0, rng=None, replicas: int = 1,
                     same_init: bool = True) -> tuple:
    r"""Initial ``(Q0, M0, a0)`` drawn from the exact law of the first-layer initialisation.

    For ``init = s`` the rows of :math:`W_0` are i.i.d. :math:`N(0, s^2 I_d / d)`:
    writing :math:`W_0 = (s/\sqrt d)\, Z` and splitting ``Z`` along span(V)
    (dimension :math:`r_G = \mathrm{rank}\,G`) and its complement,

    .. math::

        M_0 = \frac{s}{\sqrt d}\, \xi F_G^\top, \qquad
        Q_0 = \frac{s^2}{d}\left(\xi\xi^\top + L L^\top\right),

    with :math:`\xi` (K x r_G) i.i.d. standard normal, :math:`F_G` (M x r_G) a factor
    of :math:`G = F_G F_G^\top` of full column rank, and :math:`L L^\top \sim
    \mathrm{Wishart}_K(d - r_G, I)` independent (:func:`bartlett_factor`).  For
    ``"uniform"`` the same draw with :math:`s^2 = d` is normalised,
    :math:`w_i \to w_i/\|w_i\|` (rows uniform on :math:`S^{d-1}`).  A dict gives the
    state directly.

    Returns
    -------
    Q0, M0, a0 : ndarrays
        Shapes ``(K, K)``, ``(K, M)``, ``(K,)`` when ``same_init``; otherwise with a
        leading replica axis ``R`` (``a0`` is then broadcast).

    Examples
    --------
    >>> from popdyn.models.committee import CommitteeProblem
    >>> prob = CommitteeProblem("erf", "erf", K=2, M=1)
    >>> Q0, M0, a0 = initial_overlaps(prob, 10**6, init=1.0, rng=0)
    >>> bool(np.allclose(Q0, np.eye(2), atol=1e-2)), bool(np.abs(M0).max() < 1e-2)
    (True, True)
    """
    if not isinstance(problem, CommitteeProblem):
        raise TypeError(f"`problem` must be a CommitteeProblem, got {type(problem).__name__}.")
    d = _check_dimension(problem, d)
    replicas = check_int("replicas", replicas, minimum=1)
    kind, value = _parse_init(init, problem)
    K = problem.K
    lead = () if same_init else (replicas,)
    if kind == "state":
        Q0, M0, a0 = value
        return tuple(np.broadcast_to(v, lead + v.shape).copy() for v in (Q0, M0, a0))
    rng = as_generator(rng)
    lamG, U = np.linalg.eigh(problem.G)
    keep = lamG > 1e-12 * max(1.0, float(lamG.max()))
    FG = U[:, keep] * np.sqrt(lamG[keep])  # (M, r_G), G = FG FG^T
    rG = FG.shape[1]
    xi = rng.standard_normal(lead + (K, rG))
    L = bartlett_factor(d - rG, K, rng, size=lead)
    gram = xi @ np.swapaxes(xi, -1, -2) + L @ np.swapaxes(L, -1, -2)  # Z Z^T
    ZV = xi @ FG.T  # Z V^T
    if kind == "scale":
        s = value
        Q0, M0 = (s * s / d) * gram, (s / math.sqrt(d)) * ZV
    else:
        norm = np.sqrt(np.diagonal(gram, axis1=-2, axis2=-1))
        Q0 = gram / (norm[..., :, None] * norm[..., None, :])
        M0 = ZV / norm[..., :, None]
    Q0 = 0.5 * (Q0 + np.swapaxes(Q0, -1, -2))
    a0 = np.broadcast_to(np.array(problem.a0, dtype=float), lead + (K,)).copy()
    return Q0, M0, a0


def _describe_init(init):
    if isinstance(init, str):
        return init
    if isinstance(init, numbers.Real) and not isinstance(init, bool):
        return float(init)
    if isinstance(init, dict):
        return {k: np.asarray(v, dtype=float).tolist() for k, v in init.items() if v is not None}
    return repr(init)


# --------------------------------------------------------------------------------------
# the stepper
# --------------------------------------------------------------------------------------
class CommitteeExactStepper:
    r"""Exact d-free online-SGD steps of the committee machine (stepper protocol,
    ``engine="exact"``).

    Built by :func:`popdyn.simulation.make_stepper` / :func:`popdyn.simulation.simulate` with
    ``engine="exact"``; see the module docstring for the law and the update.  The state is
    ``{"Q": (R, K, K), "M": (R, K, M), "a": (R, K)}``; ``observe`` returns copies of the
    same three arrays.  Each step draws, in this order from the noise stream, the frame
    coordinates ``g`` (R, P, B), the Bartlett chi-squares and normals of
    :math:`S^\perp`, and (when ``noise > 0``) the label noise (R, B).

    Attributes
    ----------
    Q0, M0, a0 : ndarray
        Initial state (with a replica axis unless ``same_init``).
    eta, eta_a : float
        Step sizes (``eta_a`` is ``None`` with a fixed second layer).
    batch : int
    """

    model = "committee"
    algorithms = ("sgd",)
    continuous = False

    def __init__(self, problem: CommitteeProblem, config, streams: dict):
        if not isinstance(problem, CommitteeProblem):
            raise TypeError(f"`problem` must be a CommitteeProblem, got {type(problem).__name__}.")
        if config.algorithm != "sgd":
            raise ValueError(f"`algorithm` must be 'sgd' for the exact engine (online SGD with fresh samples); "
                             f"got {config.algorithm!r}.")
        self.problem = problem
        self.config = config
        self.R, self.K, self.M, self.d = config.replicas, problem.K, problem.M, config.d
        self.P = self.K + self.M
        _check_dimension(problem, self.d)
        _parse_init(config.init, problem)  # validate before drawing
        self.batch = config.batch
        self.eta, self.eta_a = step_sizes(problem, config.eta)
        self.Q0, self.M0, self.a0 = initial_overlaps(problem, self.d, init=config.init, rng=streams["init"],
                                                     replicas=self.R, same_init=config.same_init)
        self._evaluators = _evaluators(problem)
        self._noise_sd = math.sqrt(problem.noise)
        self._a_star = np.array(problem.a_star, dtype=float)
        B, P = self.batch, self.P
        self._pattern = _bartlett_pattern(self.d - P, B)
        self._C = np.empty((self.R, P, P))
        self._C[:, self.K:, self.K:] = problem.G
        self._L = np.zeros((self.R, B, B))

    # -- protocol -------------------------------------------------------------------------
    @property
    def constants(self) -> dict:
        """Fixed arrays saved in checkpoints to verify a resume: the teacher Gram ``G``."""
        return {"G": np.array(self.problem.G)}

    def init_state(self) -> dict:
        """Fresh state ``{"Q": (R, K, K), "M": (R, K, M), "a": (R, K)}``."""
        R = self.R
        return {"Q": np.broadcast_to(self.Q0, (R, self.K, self.K)).copy(),
                "M": np.broadcast_to(self.M0, (R, self.K, self.M)).copy(),
                "a": np.broadcast_to(self.a0, (R, self.K)).copy()}

    def observe(self, state) -> dict:
        """``{"Q", "M", "a"}`` (copies), shapes (R, K, K), (R, K, M), (R, K)."""
        return {name: state[name].copy() for name in ("Q", "M", "a")}

    def work_per_step(self) -> float:
        """Rough multiply-adds per step (independent of ``d``)."""
        P, B = self.P, self.batch
        return float(self.R * (P ** 3 + P * P * B + self.K * B * B + B * B * B))

    def describe(self) -> dict:
        """JSON-friendly extra ``meta``: engine, initial state, step sizes, Wishart dof."""
        return {"engine": "exact", "init": _describe_init(self.config.init), "Q0": self.Q0.tolist(),
                "M0": self.M0.tolist(), "a0": self.a0.tolist(), "eta_a": self.eta_a,
                "batch_used": self.batch, "perp_dof": self.d - self.P}

    def check_state(self, state) -> str | None:
        """Divergence message when a student norm ``Q_ii`` exceeds
        :data:`~popdyn.models.committee.NORM_GROWTH_LIMIT` times the problem's norm scale
        (:func:`~popdyn.models.committee.check_norms`), else ``None`` (called by
        :func:`popdyn.simulation.simulate` at each recording time)."""
        from .committee import check_norms

        return check_norms(self.problem, state["Q"], self.Q0, eta=self.eta, d=self.d)

    # -- the step ---------------------------------------------------------------------------
    def draw(self, state, rng) -> tuple:
        r"""Draw the minibatch's fields and Gram from their exact law given ``state``.

        Returns ``(lam, nu, S, y)`` of shapes (R, K, B), (R, M, B), (R, B, B), (R, B)
        (see (2) in the module docstring); used by :meth:`step`.
        """
        K, B = self.K, self.batch
        C = self._C
        C[:, :K, :K] = state["Q"]
        C[:, :K, K:] = state["M"]
        C[:, K:, :K] = state["M"].transpose(0, 2, 1)
        F = psd_factor(C)
        g = rng.standard_normal((self.R, self.P, B))
        Z = np.einsum("rpq,rqb->rpb", F, g) if B == 1 else np.matmul(F, g)  # the faster of the two
        L = self._L
        self._pattern.draw(rng, out=L)
        S = np.matmul(g.transpose(0, 2, 1), g)
        S += np.matmul(L, L.transpose(0, 2, 1))
        lam, nu = Z[:, :K, :], Z[:, K:, :]
        y = np.matmul(self._a_star, self._evaluators[2](nu))  # (R, B)
        if self._noise_sd > 0.0:
            y += self._noise_sd * rng.standard_normal((self.R, B))
        return lam, nu, S, y

    def step(self, state, rng) -> None:
        """One exact online-SGD step, in place on ``state`` (``rng``: the noise stream)."""
        lam, nu, S, y = self.draw(state, rng)
        Q, M, a = state["Q"], state["M"], state["a"]
        _update_core(Q, M, a, lam, nu, S, y, self._evaluators, self.eta, self.eta_a)
        if not (math.isfinite(float(Q.sum())) and math.isfinite(float(M.sum()))
                and math.isfinite(float(a.sum()))):
            raise NumericalError(
                f"non-finite overlaps after an exact SGD step with eta = {self.eta:g}; the dynamics "
                "diverged. Try a smaller `eta` (delta) or a bounded activation."
            )


def _register() -> None:
    from ..simulation import register_stepper

    register_stepper(CommitteeProblem, "popdyn.models.committee_exact:CommitteeExactStepper", engine="exact")


_register()
