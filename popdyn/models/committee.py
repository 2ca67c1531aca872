r"""Two-layer network with squared loss under online SGD: the committee machine.

Saad & Solla (PRE 52:4225, 1995), Biehl & Schwarze (1995), Goldt et al. (NeurIPS 2019),
in popdyn's conventions (``popdyn.__doc__``).

Model (popdyn conventions)
--------------------------
* Data :math:`x \sim N(0, I_d)`.
* Teacher :math:`y = \sum_{n=1}^M a^*_n \sigma^*(v_n\cdot x) + \sqrt{\texttt{noise}}\,\xi`,
  rows :math:`v_n` of ``V`` (M x d) with Gram :math:`G = V V^\top` (often called ``T``).
* Student :math:`f(x) = \sum_{i=1}^K a_i \sigma(w_i\cdot x)`, rows :math:`w_i` of ``W``.
* Loss :math:`\ell = \tfrac12 (f(x) - y)^2` per sample (squared loss).
* Order parameters: :math:`Q = W W^\top` (K x K), :math:`M = W V^\top` (K x M; Saad–Solla's
  ``R``), :math:`G = V V^\top` (M x M; their ``T``), and the second layer ``a``.
* Online SGD with a fresh sample each step, first-layer step :math:`\eta = \delta/d`,
  second-layer step :math:`\eta_a = \delta_a/d`:

  .. math::

      w_i \leftarrow w_i - \eta\, a_i \Delta\, \sigma'(w_i\cdot x)\, x, \qquad
      a_i \leftarrow a_i - \eta_a \Delta\, \sigma(w_i\cdot x), \qquad \Delta = f(x) - y,

  and time :math:`t = \mathrm{steps}/d`.  In the limit :math:`d\to\infty` the order
  parameters follow a deterministic ODE in ``t`` (with :math:`\delta^2` terms in
  :math:`\dot Q`).

Conventions (``conventions=``)
------------------------------
``"popdyn"`` (default): weights of norm O(1), pre-activations :math:`w\cdot x`, step
:math:`\eta = \delta/d`, time ``t = steps/d``.

``"saad-solla"``: the classic papers' scaling: weights :math:`J_i` of norm
:math:`O(\sqrt N)` (``N = d``), pre-activations :math:`\lambda_i = J_i\cdot x/\sqrt N`,
order parameters :math:`Q_{ik} = J_i\cdot J_k/N`, :math:`R_{in} = J_i\cdot B_n/N`,
:math:`T_{nm} = B_n\cdot B_m/N`, update :math:`J_i \leftarrow J_i - (\eta/\sqrt N)\, v_i
\Delta g'(\lambda_i) x` and time :math:`\alpha = \mathrm{steps}/N`.  With
:math:`w = J/\sqrt N` this is *the same* dynamics as popdyn's with :math:`\delta = \eta`:
the ODEs, order parameters and times coincide, so numbers can be checked against the
literature directly.  The option only changes labels (``R``/``T``, ``alpha``) and how
initial weights are scaled when a simulation materialises them (the full simulator then
stores :math:`J = \sqrt N w` and applies the classic update; ``tests/test_committee.py``
checks it against an independent classic-scaling loop).

The ODE (ODE protocol of :mod:`popdyn.ode`)
-------------------------------------------
``popdyn.integrate(problem, {"Q": Q0, "M": M0[, "a": a0]}, t_end)`` integrates the
:math:`d\to\infty` online-SGD equations of :meth:`CommitteeProblem.ode_rhs` (state
``Q``, ``M``, ``a``; ``a`` moves only when ``train_second_layer``), with the
:math:`\delta^2` SGD-noise term and the label-noise term in :math:`\dot Q`, for any
activations: the Gaussian integrals come from
:mod:`popdyn.models.committee_integrals` (closed forms for erf and ReLU, contracted in one
vectorised pass whose cost is the number of integrals; exact for polynomials; a
quadrature fallback with a stated tolerance otherwise; option ``integrals``).  The
trajectory's time unit is ``"t = steps / d"`` (``"alpha = steps / N"`` under
``"saad-solla"``).  The generalisation error :math:`\varepsilon_g = \tfrac12
E[(f - y^*)^2]` is :meth:`CommitteeProblem.generalisation_error`; :func:`eps_g` and
:func:`add_eps_g` evaluate it along any trajectory (ODE or simulation; the overlap
``"eps_g"`` has shape ``(n_times, n_replicas)``).

Simulation
----------
``engine="full"`` (:mod:`popdyn.models.committee_sim`, the d-dimensional ground truth)
and ``engine="exact"`` (:mod:`popdyn.models.committee_exact`, d-free) are registered
for :func:`popdyn.simulation.simulate`.  :func:`simulate_committee` runs either in the
ODE's units (``eta = delta/d``, ``t = steps/d``) and adds ``eps_g``.  The classic
plateau comparison is :func:`classic_problem`, :func:`classic_initial_state`,
:func:`deviation_table` and :func:`plot_committee`.

Examples
--------
>>> import popdyn
>>> prob = classic_problem()                      # erf, K = M = 2, delta = 0.5, a fixed
>>> traj = add_eps_g(prob, popdyn.integrate(prob, classic_initial_state(prob), 50.0, n_times=5))
>>> traj.time_unit, round(float(traj.eps_g[-1, 0]), 4)     # on the plateau
('t = steps / d', 0.0148)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._budget import DEFAULT_MAX_STEPS
from .._validation import check_choice, check_finite_array, check_init_scalar, check_int, check_real
from ..activations import Activation, get_activation

__all__ = [
    "CommitteeProblem",
    "CONVENTIONS",
    "check_overlaps",
    "joint_covariance",
    "eps_g",
    "add_eps_g",
    "steps_per_d",
    "simulate_committee",
    "CLASSIC",
    "classic_problem",
    "classic_initial_state",
    "deviation_table",
    "plot_committee",
    "norm_scale",
    "check_norms",
]

CONVENTIONS = ("popdyn", "saad-solla")
#: Eigenvalues above ``-PSD_TOL * max(1, ||C||)`` count as non-negative when checking that
#: the joint Gram matrix [[Q, M], [M^T, G]] is positive semidefinite.
PSD_TOL = 1e-10


#: Activations with a kink (their integrals involve sqrt(1 - rho^2) of a correlation).
KINKED = ("relu", "abs", "sign")
#: Default absolute ODE tolerance for kinked activations: near convergence their right-hand
#: side varies by more than 1e-12 under the state's rounding, so the solver would crawl (ReLU,
#: K = M = 2 to t = 600: ~30 000 right-hand sides at 1e-12, ~2 000 at 1e-10); the overlaps are
#: O(1), so 1e-10 still resolves eps_g down to ~1e-10.
KINK_ATOL = 1e-10


def check_overlaps(Q, M, G, *, name_Q: str = "Q", name_M: str = "M", name_G: str = "G") -> tuple:
    r"""Validate ``Q`` (K x K), ``M`` (K x M), ``G`` (M x M): symmetric, and the joint
    Gram matrix :math:`\begin{pmatrix} Q & M \\ M^\top & G\end{pmatrix}` positive semidefinite
    (as it must be for vectors ``W``, ``V``).  Returns float copies."""
    Q = check_finite_array(name_Q, Q, ndim=2)
    G = check_finite_array(name_G, G, ndim=2)
    M = check_finite_array(name_M, M, ndim=2)
    K, Mn = Q.shape[0], G.shape[0]
    if Q.shape != (K, K) or K < 1:
        raise ValueError(f"`{name_Q}` must be a non-empty square matrix, got shape {Q.shape}.")
    if G.shape != (Mn, Mn) or Mn < 1:
        raise ValueError(f"`{name_G}` must be a non-empty square matrix, got shape {G.shape}.")
    if M.shape != (K, Mn):
        raise ValueError(f"`{name_M}` must have shape ({K}, {Mn}), got {M.shape}.")
    for nm, A in ((name_Q, Q), (name_G, G)):
        if not np.allclose(A, A.T, atol=1e-12 * max(1.0, np.abs(A).max()), rtol=0):
            raise ValueError(f"`{nm}` must be symmetric.")
    C = np.block([[Q, M], [M.T, G]])
    C = 0.5 * (C + C.T)
    lam = np.linalg.eigvalsh(C)
    if lam[0] < -PSD_TOL * max(1.0, lam[-1]):
        what = f"`{name_Q}`" if np.linalg.eigvalsh(0.5 * (Q + Q.T))[0] < -PSD_TOL * max(1.0, lam[-1]) \
            else f"the joint Gram matrix [[{name_Q}, {name_M}], [{name_M}^T, {name_G}]]"
        raise ValueError(
            f"{what} must be positive semidefinite (a Gram matrix of weight vectors); smallest "
            f"eigenvalue {lam[0]:.6g}."
        )
    return 0.5 * (Q + Q.T), M, 0.5 * (G + G.T)


#: Documented forms of ``init``.
INIT_CHOICES = ("a float scale s > 0 (rows iid N(0, s^2/d I))", "'uniform' (rows uniform on the unit sphere)",
                "a dict {'Q': Q0, 'M': M0[, 'a': a0]}")


def parse_init(init, problem: "CommitteeProblem"):
    """Validate a simulation ``init``: ``("scale", s)``, ``("uniform", None)`` or ``("state", (Q0, M0, a0))``.

    Shared by the full and the exact simulators so that both accept the same forms.
    """
    head = check_init_scalar(init, INIT_CHOICES)
    if head is not None:
        return ("scale", head[1]) if head[0] == "scalar" else head
    if isinstance(init, dict):
        extra = set(init) - {"Q", "M", "a"}
        if extra or not {"Q", "M"} <= set(init):
            raise ValueError(f"`init` as a dict needs the keys 'Q' and 'M' (and optionally 'a'); got keys "
                             f"{sorted(map(str, init))}.")
        Q0, M0, _ = check_overlaps(init["Q"], init["M"], problem.G, name_Q="init['Q']", name_M="init['M']")
        if Q0.shape != (problem.K, problem.K):
            raise ValueError(f"`init['Q']` must have shape (K, K) = ({problem.K}, {problem.K}), got {Q0.shape}.")
        a0 = problem.a0 if init.get("a") is None else check_finite_array("init['a']", init["a"], ndim=1,
                                                                          shape=(problem.K,))
        return "state", (Q0, M0, np.array(a0, dtype=float))
    raise TypeError(f"`init` must be one of {', '.join(INIT_CHOICES)}; got {type(init).__name__}.")


@dataclasses.dataclass(frozen=True, eq=False)
class CommitteeProblem:
    r"""Soft committee machine / two-layer network with squared loss (see module docstring).

    Parameters
    ----------
    student, teacher : str or Activation
        Activations :math:`\sigma` (student) and :math:`\sigma^*` (teacher).  ``"erf"`` is
        :math:`\mathrm{erf}(z/\sqrt2)`, Saad–Solla's ``g``.
    K, M : int
        Hidden units of the student and of the teacher (``>= 1``).
    G : array_like (M, M), optional
        Teacher Gram :math:`V V^\top`, default identity (orthonormal teacher vectors).
    a_star : array_like (M,), optional
        Teacher second layer, default ones.
    a0 : array_like (K,), optional
        Student second layer at ``t = 0``, default ones.
    train_second_layer : bool
        Train ``a`` (step ``delta_a/d``) or keep it fixed at ``a0`` (default).
    delta : float
        First-layer step in high-d units, :math:`\eta = \delta/d` (> 0).
    delta_a : float, optional
        Second-layer step, default ``delta``.
    noise : float
        Label-noise variance :math:`\sigma^2 \ge 0`.
    conventions : {"popdyn", "saad-solla"}
        Naming and scaling of order parameters and time (module docstring).
    """

    student: Activation
    teacher: Activation
    K: int
    M: int
    G: np.ndarray | None = None
    a_star: np.ndarray | None = None
    a0: np.ndarray | None = None
    train_second_layer: bool = False
    delta: float = 1.0
    delta_a: float | None = None
    noise: float = 0.0
    conventions: str = "popdyn"

    def __post_init__(self):
        s = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        s("student", get_activation(self.student))
        s("teacher", get_activation(self.teacher))
        K = check_int("K", self.K, minimum=1)
        Mn = check_int("M", self.M, minimum=1)
        s("K", K)
        s("M", Mn)
        G = np.eye(Mn) if self.G is None else check_finite_array("G", self.G, ndim=2, shape=(Mn, Mn))
        if not np.allclose(G, G.T, atol=1e-12 * max(1.0, np.abs(G).max()), rtol=0):
            raise ValueError("`G` must be symmetric.")
        lam = np.linalg.eigvalsh(0.5 * (G + G.T))
        if lam[0] < -PSD_TOL * max(1.0, lam[-1]):
            raise ValueError(f"`G` must be positive semidefinite (a Gram matrix); smallest eigenvalue {lam[0]:.6g}.")
        G = 0.5 * (G + G.T)
        G.setflags(write=False)
        s("G", G)
        a_star = np.ones(Mn) if self.a_star is None else check_finite_array("a_star", self.a_star, ndim=1, shape=(Mn,))
        a0 = np.ones(K) if self.a0 is None else check_finite_array("a0", self.a0, ndim=1, shape=(K,))
        a_star.setflags(write=False)
        a0.setflags(write=False)
        s("a_star", a_star)
        s("a0", a0)
        if not isinstance(self.train_second_layer, (bool, np.bool_)):
            raise TypeError(f"`train_second_layer` must be a bool, got {self.train_second_layer!r}.")
        s("train_second_layer", bool(self.train_second_layer))
        s("delta", check_real("delta", self.delta, lower=0.0, lower_open=True))
        s("delta_a", self.delta if self.delta_a is None
          else check_real("delta_a", self.delta_a, lower=0.0, lower_open=True))
        s("noise", check_real("noise", self.noise, lower=0.0))
        s("conventions", check_choice("conventions", self.conventions, CONVENTIONS))

    # -- naming -----------------------------------------------------------------------
    @property
    def overlap_names(self) -> dict:
        """Displayed names of the order parameters under the chosen conventions."""
        if self.conventions == "saad-solla":
            return {"Q": "Q", "M": "R", "G": "T", "a": "v", "t": "alpha = steps/N"}
        return {"Q": "Q", "M": "M", "G": "G", "a": "a", "t": "t = steps/d"}

    @property
    def ode_default_atol(self) -> float:
        """Absolute ODE tolerance when the caller sets none (:func:`popdyn.ode.integrate`):
        :data:`KINK_ATOL` when the student or the teacher has a kink (ReLU, abs, sign: the
        right-hand side is not smooth enough for 1e-12 near convergence, see :meth:`ode_rhs`),
        else the solver's 1e-12."""
        kinked = any(act.name.split(":")[0] in KINKED for act in (self.student, self.teacher))
        return KINK_ATOL if kinked else 1e-12

    def eta(self, d: int) -> float:
        """First-layer step size at dimension ``d``: :math:`\\delta/d`."""
        return self.delta / check_int("d", d, minimum=1)

    def describe(self) -> dict:
        """JSON-friendly parameters."""
        return {
            "model": "committee", "student": self.student.name, "teacher": self.teacher.name,
            "K": self.K, "M": self.M, "G": self.G.tolist(), "a_star": self.a_star.tolist(),
            "a0": self.a0.tolist(), "train_second_layer": self.train_second_layer,
            "delta": self.delta, "delta_a": self.delta_a, "noise": self.noise,
            "loss": "squared", "conventions": self.conventions,
        }

    # -- ODE protocol (popdyn.ode) ---------------------------------------------------------
    ode_model = "committee"
    #: State arrays: ``Q`` (K, K), ``M`` (K, M), ``a`` (K,) (constant unless trained).
    ode_state_names = ("Q", "M", "a")

    def ode_initial_state(self, state0) -> dict:
        r"""Validate the initial state ``{"Q": (K, K), "M": (K, M)[, "a": (K,)]}``.

        ``Q`` and ``M`` must form, with the problem's ``G``, a PSD joint Gram matrix
        (:func:`check_overlaps`); ``a`` defaults to ``problem.a0`` (with a fixed second layer it
        is the fixed value).
        """
        if not isinstance(state0, dict):
            raise TypeError(f"`u0` for a CommitteeProblem must be a dict {{'Q': (K, K), 'M': (K, M)[, 'a': (K,)]}}, "
                            f"got {type(state0).__name__}.")
        extra = set(state0) - {"Q", "M", "a"}
        if extra or not {"Q", "M"} <= set(state0):
            raise ValueError(f"the initial state needs the keys 'Q' and 'M' (and optionally 'a'); got "
                             f"{sorted(map(str, state0))}.")
        Q, M, _ = check_overlaps(state0["Q"], state0["M"], self.G)
        if Q.shape != (self.K, self.K):
            raise ValueError(f"`Q` must have shape (K, K) = ({self.K}, {self.K}), got {Q.shape}.")
        a = self.a0 if state0.get("a") is None else check_finite_array("a", state0["a"], ndim=1, shape=(self.K,))
        return {"Q": Q.copy(), "M": M.copy(), "a": np.array(a, dtype=float)}

    def ode_validate_options(self, *, eta=None, d=None, batch=1, tol=None, recheck=10, max_nodes=None,
                             integrals="auto") -> dict:
        """Check the options once: ``eta``/``d`` do not apply (the ODE is the d -> infinity limit
        with ``eta = delta/d``); ``batch`` divides the delta^2 term; ``tol``/``recheck`` tune the
        quadrature route of the Gaussian integrals; ``integrals`` picks their assembly
        (:data:`~popdyn.models.committee_integrals.ASSEMBLIES`)."""
        from .committee_integrals import ASSEMBLIES, FALLBACK_TOL

        if eta is not None or d is not None:
            raise ValueError(
                "`eta` and `d` do not apply to the committee-machine ODE: it is the d -> infinity limit of "
                f"online SGD with eta = delta/d (set `delta` = {self.delta:g} on the problem) and time "
                "t = steps/d. Pass eta=None, d=None."
            )
        batch = check_int("batch", batch, minimum=1)
        tol = FALLBACK_TOL if tol is None else check_real("tol", tol, lower=0.0, lower_open=True)
        recheck = check_int("recheck", recheck, minimum=1)
        if max_nodes is not None:
            max_nodes = check_int("max_nodes", max_nodes, minimum=1)
        integrals = check_choice("integrals", integrals, ASSEMBLIES)
        return {"eta": None, "d": None, "batch": batch, "tol": tol, "recheck": recheck, "max_nodes": max_nodes,
                "integrals": integrals}

    def ode_rhs(self, t, state, *, eta=None, d=None, batch=1, tol=None, recheck=10, max_nodes=None,
                integrals="auto") -> dict:
        r"""Right-hand side of the high-dimensional online-SGD ODE, in ``t = steps/d``.

        With :math:`\beta = (a_1..a_K, -a^*_1..-a^*_M)` (so :math:`f - y^* = \sum_c \beta_c
        s_c(x_c)`) and the integrals of :mod:`popdyn.models.committee_integrals`,

        .. math::

            \frac{dM_{in}}{dt} &= -\delta\, a_i \sum_c \beta_c I_3(i, n, c)
              = \delta a_i\Bigl[\sum_m a^*_m I_3(i,n,m) - \sum_j a_j I_3(i,n,j)\Bigr], \\
            \frac{dQ_{ik}}{dt} &= -\delta\Bigl[a_i \sum_c \beta_c I_3(i,k,c)
              + a_k \sum_c \beta_c I_3(k,i,c)\Bigr]
              + \frac{\delta^2}{B}\, a_i a_k \Bigl[\sum_{ce}\beta_c\beta_e I_4(i,k,c,e)
              + \texttt{noise}\; J_2(i,k)\Bigr], \\
            \frac{da_i}{dt} &= -\delta_a \sum_c \beta_c I_2(i, c)
              = \delta_a\Bigl[\sum_n a^*_n I_2(i,n) - \sum_j a_j I_2(i,j)\Bigr]
              \quad(\text{0 when the second layer is fixed}).

        *Derivation.*  One step changes :math:`M_{in}` by :math:`-\eta a_i\Delta\sigma'(\lambda_i)
        \nu_n` and :math:`Q_{ik}` by :math:`-\eta a_i\Delta\sigma'(\lambda_i)\lambda_k - (i
        \leftrightarrow k) + \eta^2 a_i a_k \Delta^2 \sigma'(\lambda_i)\sigma'(\lambda_k)
        \|x\|^2/B` (minibatch of ``B``: the cross-sample terms :math:`x_b\cdot x_{b'}` are
        :math:`O(\sqrt d)` and drop out), and :math:`a_i` by :math:`-\eta_a\Delta
        \sigma(\lambda_i)`, with :math:`\Delta = f - y^* - \sqrt{\texttt{noise}}\,\xi`.  With
        :math:`\eta = \delta/d`, :math:`\eta_a = \delta_a/d`, :math:`\|x\|^2 = d + O(\sqrt d)`
        and :math:`d` steps per unit time, the means give the equations (the label noise
        enters only through :math:`E[\Delta^2] \ni \texttt{noise}`, hence
        :math:`\texttt{noise}\,J_2`).  The :math:`\eta_a^2` term is :math:`O(1/d)` and
        vanishes.  For erf and :math:`a` fixed these are the Saad & Solla (1995) equations
        for R and Q (written out in theory/CONVENTIONS.md, "Saad–Solla committee machine") with their :math:`(\eta, v, \tilde v, \sigma^2)` = our
        :math:`(\delta, a, a^*, \texttt{noise})`.

        *Validity.*  The :math:`d\to\infty` limit at fixed :math:`\delta`; the first
        corrections are :math:`O(1/d)` relative (e.g. :math:`\|x\|^2` has mean ``d``, of which
        ``K + M`` directions are correlated with the fields).  ``tests/test_committee.py``
        checks it against the one-step mean increment of the full simulator at d = 1000.

        *Tolerances near convergence (ReLU).*  ReLU's integrals depend on
        :math:`\sqrt{1 - \rho^2}` of a student-teacher correlation, so once a student is
        within ~1e-11 of its teacher the right-hand side varies by more than ``atol = 1e-12``
        (the solver's default) under the state's own rounding and integration error: the
        solver then takes many small steps (K = M = 2 to t = 600 from a random start:
        ~30 000 evaluations at ``atol = 1e-12``, 26 000 of them after eps_g < 1e-11, against
        ~2 000 with ``atol = 1e-10``).  So a kinked activation's default is
        ``atol = KINK_ATOL = 1e-10`` (:attr:`ode_default_atol`); pass ``atol = 1e-12`` to resolve
        the converged tail.

        Options (``integrate(..., batch=B, options={...})``): ``batch`` (minibatch size
        ``B``); ``tol``, ``recheck`` and ``max_nodes`` (quadrature route of the integrals,
        :class:`~popdyn.models.committee_integrals.CommitteeIntegrals`; ``tol`` defaults to
        :data:`~popdyn.models.committee_integrals.FALLBACK_TOL`); ``integrals`` (``"auto"``:
        the contracted closed forms of erf and ReLU, whose cost grows with the number of
        integrals :math:`K^2 (K + M)^2` only; ``"tuples"`` and ``"quadrature"``: the per-tuple
        routes, kept for comparison).
        """
        try:
            parts = self.rhs_terms(state, batch=batch, tol=tol, recheck=recheck, max_nodes=max_nodes,
                                   integrals=integrals)
        except Exception as exc:
            from ..errors import NumericalError

            if not isinstance(exc, NumericalError) or exc.time is not None:
                raise
            raise NumericalError(str(exc), time=float(t)) from exc
        return {"Q": parts["dQ_drift"] + parts["dQ_noise"], "M": parts["dM"], "a": parts["da"]}

    def rhs_terms(self, state, *, batch=1, tol=None, recheck=10, max_nodes=None, integrals="auto") -> dict:
        r"""The ODE right-hand side split into its terms (see :meth:`ode_rhs`).

        Returns ``{"dQ_drift", "dQ_noise", "dM", "da"}``: ``dQ_drift`` is the
        :math:`O(\delta)` gradient term, ``dQ_noise`` the :math:`O(\delta^2)` SGD-noise term
        (including the label-noise :math:`\texttt{noise}\,J_2`).  ``state`` is
        ``{"Q", "M", "a"}`` (``a`` optional, default ``problem.a0``).
        """
        if not isinstance(state, dict) or "Q" not in state or "M" not in state:
            raise TypeError("`state` must be a dict with 'Q', 'M' (and optionally 'a').")
        if tol is None:
            from .committee_integrals import FALLBACK_TOL as tol
        K = self.K
        Q = np.asarray(state["Q"], dtype=float)
        M = np.asarray(state["M"], dtype=float)
        if Q.shape != (K, K) or M.shape != (K, self.M):
            raise ValueError(f"`state` must hold Q of shape ({K}, {K}) and M of shape ({K}, {self.M}); got "
                             f"{Q.shape}, {M.shape}.")
        a = self.a0 if state.get("a") is None else np.asarray(state["a"], dtype=float)
        C = np.empty((K + self.M, K + self.M))  # the joint covariance [[Q, M], [M^T, G]]
        C[:K, :K] = Q
        C[:K, :K] += Q.T
        C[:K, :K] *= 0.5
        C[:K, K:] = M
        C[K:, :K] = M.T
        C[K:, K:] = self.G
        beta = np.concatenate([a, -self.a_star])
        ints = _integrals(self, tol, recheck, max_nodes, integrals).contractions(
            C, beta, j2=self.noise > 0, i2=self.train_second_layer)
        D3 = ints["D3"]  # (K, P): E[sigma'(lambda_i) x_b (f - y*)]
        D4 = ints["D4"]  # (K, K), symmetric: E[sigma'(lambda_i) sigma'(lambda_k) (f - y*)^2]
        if self.noise > 0:
            D4 = D4 + self.noise * ints["J2"]
        aD = a[:, None] * D3
        T = aD[:, :K]
        # T + T^T and outer(a, a) * D4 are exactly symmetric in floating point
        drift = -self.delta * (T + T.T)
        noise = (self.delta ** 2 / batch) * np.multiply.outer(a, a) * D4
        da = -self.delta_a * (ints["I2"][:K] @ beta) if self.train_second_layer else np.zeros(K)
        return {"dQ_drift": drift, "dQ_noise": noise, "dM": -self.delta * aD[:, K:], "da": da}

    # -- comparison hooks (popdyn.comparison.compare) ---------------------------------------
    def ode_sgd_options(self, *, eta, d, batch) -> dict:
        """The ODE is the d -> infinity limit with eta = delta/d: only ``batch`` reaches it."""
        return {"batch": batch}

    def simulate_for_comparison(self, *, d, algorithm, eta, t_end, batch, n_samples, replicas, init, n_record, rng,
                                progress, engine):
        """Online SGD in the ODE's time ``t = steps/d`` (:func:`simulate_committee`) for
        :func:`popdyn.compare`; the step is the problem's ``eta = delta/d``."""
        import math

        if algorithm != "sgd":
            raise ValueError(f"`algorithm` must be 'sgd' for the committee machine (online SGD), got {algorithm!r}.")
        if n_samples is not None:
            raise ValueError("`n_samples` does not apply to online SGD (the committee machine's only algorithm).")
        if eta is not None and not math.isclose(eta, self.eta(d), rel_tol=1e-12):
            raise ValueError(f"`eta` = {eta:g} differs from the committee's step delta/d = {self.eta(d):g}; set "
                             "`delta` on the problem instead.")
        return simulate_committee(self, d=d, t_end=t_end, replicas=replicas, init=init,
                                  batch=1 if batch is None else batch, rng=rng, n_record=n_record, progress=progress,
                                  engine=engine)

    def ode_check_state(self, state) -> str | None:
        """Why the state is unusable (divergence, PSD violation), or ``None``."""
        Q = state["Q"]
        qmax = float(np.max(np.diag(Q)))
        if qmax > DIVERGENCE_Q:
            return (f"the student norms diverged (max Q_ii = {qmax:.3g} > {DIVERGENCE_Q:.0e}): delta = "
                    f"{self.delta:g} is above the stability limit of this problem; use a smaller `delta`")
        C = joint_covariance(0.5 * (Q + Q.T), state["M"], self.G)
        lam = np.linalg.eigvalsh(C)
        if lam[0] < -STATE_PSD_TOL * max(1.0, lam[-1]):
            return (f"the overlaps left the PSD cone (smallest eigenvalue of [[Q, M], [M^T, G]] is "
                    f"{lam[0]:.3g}): integration error")
        return None

    def ode_escape_bound(self) -> tuple:
        """``(1, reason)``: the observable is a cosine."""
        return 1.0, "max_n |M_in|/sqrt(Q_ii G_nn) is a cosine"

    def ode_escape_observable(self, state) -> np.ndarray:
        r"""Per student unit :math:`\max_n |M_{in}|/\sqrt{Q_{ii}G_{nn}}` (specialisation), shape (K,)."""
        Q, M = state["Q"], state["M"]
        q = np.sqrt(np.clip(np.diag(Q), 1e-300, None))
        g = np.sqrt(np.clip(np.diag(self.G), 1e-300, None))
        return np.max(np.abs(M) / (q[:, None] * g[None, :]), axis=1)

    def ode_unit_speed(self, deriv) -> np.ndarray:
        """Per student unit: the 2-norm of its rows of dQ, dM and of da_i, shape (K,)."""
        return np.sqrt(np.sum(deriv["Q"] ** 2, axis=1) + np.sum(deriv["M"] ** 2, axis=1) + deriv["a"] ** 2)

    def ode_time_unit(self, **_) -> str:
        return "alpha = steps / N" if self.conventions == "saad-solla" else "t = steps / d"

    def generalisation_error(self, Q, M, a=None, *, include_noise: bool = False, tol=None,
                             state_rtol=None) -> np.ndarray:
        r""":math:`\varepsilon_g = \tfrac12 E[(f(x) - y^*(x))^2]`, vectorised over leading axes.

        .. math::

            \varepsilon_g = \tfrac12 \sum_{ik} a_i a_k I_2(i, k) - \sum_{in} a_i a^*_n I_2(i, n)
            + \tfrac12 \sum_{nm} a^*_n a^*_m I_2(n, m) \;\Bigl(+ \tfrac12\,\texttt{noise}\Bigr),

        with :math:`I_2` over the fields of covariance :func:`joint_covariance` (Saad & Solla 1995,
        generalised to any activations).  ``include_noise`` adds the label-noise variance/2
        (the expected test loss on noisy labels); by default the noiseless error is returned.

        Parameters
        ----------
        Q, M : array_like, shapes (..., K, K), (..., K, M)
        a : array_like (..., K), optional
            Default ``problem.a0``.
        include_noise : bool
            Add ``noise / 2``.
        tol : float, optional
            Tolerance of the quadrature route of ``I2`` (non-closed-form activations).

        state_rtol : float, optional
            Relative accuracy of ``Q``, ``M``, ``a`` when they come from an ODE solver (its
            ``max(rtol, atol)``); widens the clamping tolerance below (None: exact overlaps, as
            from a simulation).

        Returns
        -------
        ndarray of shape ``Q.shape[:-2]``
            Never negative.  :math:`\varepsilon_g` is a sum of terms of both signs that cancel
            at the global minimum; a negative sum within ``tol = max(EPS_G_ROUND_TOL,
            EPS_G_STATE_FACTOR * state_rtol) * scale`` (``scale`` = sum of the moduli of the
            terms) is zero up to rounding and the state's accuracy and is returned as 0.

        Raises
        ------
        NumericalError
            A sum more negative than ``-tol``: the overlaps are not those of a network (the
            joint Gram matrix is far from PSD).

        Examples
        --------
        >>> prob = CommitteeProblem("erf", "erf", K=1, M=1)
        >>> round(float(prob.generalisation_error([[1.0]], [[0.0]])), 12)   # Saad–Solla sanity value 1/3
        0.333333333333
        """
        eps, scale = self._eps_g_terms(Q, M, a, tol)
        eps = _clamp_eps_g(eps, scale, state_rtol)
        if include_noise:
            eps = eps + 0.5 * self.noise
        return eps

    def _eps_g_terms(self, Q, M, a=None, tol=None) -> tuple:
        """``(eps_g, scale)`` before clamping: the signed sum and the sum of the moduli of its terms."""
        from .committee_integrals import FALLBACK_TOL

        Q = np.asarray(Q, dtype=float)
        M = np.asarray(M, dtype=float)
        a = np.broadcast_to(self.a0 if a is None else np.asarray(a, dtype=float), Q.shape[:-1])
        if Q.shape[-2:] != (self.K, self.K) or M.shape[-2:] != (self.K, self.M):
            raise ValueError(f"`Q`, `M` must end in shapes ({self.K}, {self.K}), ({self.K}, {self.M}); got "
                             f"{Q.shape}, {M.shape}.")
        C = joint_covariance(Q, M, self.G)
        ci = _integrals(self, FALLBACK_TOL if tol is None else tol, 1)
        I2 = ci.i2_matrix(C)
        beta = np.concatenate([a, np.broadcast_to(-self.a_star, a.shape[:-1] + (self.M,))], axis=-1)
        eps = 0.5 * np.einsum("...c,...ce,...e->...", beta, I2, beta)
        scale = 0.5 * np.einsum("...c,...ce,...e->...", np.abs(beta), np.abs(I2), np.abs(beta))
        return eps, scale


# ======================================================================================
# The online-SGD ODE (high-dimensional limit) -- ODE protocol of popdyn.ode
# ======================================================================================
#: A run whose largest student norm :math:`Q_{ii}` exceeds this is reported as diverged.
DIVERGENCE_Q = 1e10
#: The joint Gram matrix may leave the PSD cone by this much (relative) through the
#: integration error before the state is rejected.  At convergence to the teacher the
#: matrix is singular, so a loose solver tolerance (rtol ~ 1e-3) moves its smallest
#: eigenvalue below zero by ~1e-5; the integrals stay defined there (the closed forms clip,
#: the quadrature factor treats a negative residual variance as zero).
STATE_PSD_TOL = 1e-4


#: eps_g = 1/2 beta^T I2 beta sums (K + M)^2 terms of both signs that cancel at the global
#: minimum.  Floating-point rounding of the sum and of the integrals is a few hundred ulp of
#: the sum of their moduli (``scale``); a negative value within this relative tolerance is 0.
EPS_G_ROUND_TOL = 1e-13
#: For overlaps from an ODE solver the terms carry the solver's error: the global error of the
#: state is a few ``rtol`` (local tolerance accumulated over the run; the classic run of
#: ``popdyn predict --model committee`` at the default rtol = 1e-10 shows eps_g = -4.7e-11
#: = -2.3e-11 * scale at t = 1e4), so values down to ``-EPS_G_STATE_FACTOR * rtol * scale``
#: are zero within the state's accuracy.
EPS_G_STATE_FACTOR = 100.0


def _clamp_eps_g(eps, scale, state_rtol=None, times=None) -> np.ndarray:
    """Set eps_g values in ``[-tol, 0)`` to 0 (``tol`` = rounding/state accuracy times the size
    of the cancelling terms); raise :class:`NumericalError` below ``-tol``."""
    from ..errors import NumericalError

    rel = EPS_G_ROUND_TOL if state_rtol is None else max(EPS_G_ROUND_TOL, EPS_G_STATE_FACTOR * float(state_rtol))
    eps = np.asarray(eps, dtype=float)
    tol = rel * np.asarray(scale, dtype=float)
    bad = eps < -tol
    if np.any(bad):
        idx = np.unravel_index(int(np.argmax(bad)), eps.shape) if eps.ndim else ()
        time = None if times is None or not idx else float(np.asarray(times)[idx[0]])
        raise NumericalError(
            f"the generalisation error is negative beyond rounding: eps_g = {float(eps[idx]):.3g} < -{float(tol[idx]):.3g} "
            f"(relative tolerance {rel:.1g} of the cancelling terms, size {float(np.asarray(scale)[idx]):.3g}); the "
            "overlaps are not those of a network (joint Gram matrix [[Q, M], [M^T, G]] not PSD): tighten the "
            "solver's `rtol`/`atol`", time=time)
    return np.where(eps < 0, 0.0, eps)


#: Simulations (:meth:`~popdyn.models.committee_sim.CommitteeFullStepper.check_state`, :meth:`~popdyn.models.committee_exact.CommitteeExactStepper.check_state`):
#: a student norm :math:`Q_{ii}` more than this factor above the problem's norm scale
#: (:func:`norm_scale`) is reported as divergence.  A stable run keeps :math:`Q_{ii}` within
#: O(1) of that scale (the ODE's fixed points have :math:`Q \sim G`); growing by four orders of
#: magnitude means the step is unstable -- one step moves :math:`w_i` by
#: :math:`\eta|a_i\Delta\sigma'|\,\|x\| \approx \delta|a_i\Delta\sigma'|/\sqrt d`, which must
#: stay small against :math:`\|w_i\|` for the d -> infinity description to hold.
NORM_GROWTH_LIMIT = 1e4


def norm_scale(problem: "CommitteeProblem", Q0) -> float:
    r"""The scale of the student norms of a stable run:
    :math:`\max(1, \max_i Q_{ii}(0), \max_n G_{nn}\, r^2)`, :math:`r = \max(1,
    \sum_n|a^*_n| / \max_i|a_i(0)|)` (a homogeneous student with a small second layer needs
    norms up to :math:`r^2 G` to fit the teacher)."""
    q0 = float(np.max(np.diagonal(np.asarray(Q0, dtype=float), axis1=-2, axis2=-1)))
    amax = float(np.max(np.abs(problem.a0)))
    r = max(1.0, float(np.sum(np.abs(problem.a_star))) / amax) if amax > 0 else 1.0
    return max(1.0, q0, float(np.max(np.diag(problem.G))) * r * r)


def _is_bounded(act) -> bool:
    """Whether the activation is bounded (probed far out; only used to word messages)."""
    z = np.array([-1e4, -1e2, 1e2, 1e4])
    with np.errstate(all="ignore"):
        far = np.abs(np.asarray(act(z), dtype=float))
        near = np.abs(np.asarray(act(np.linspace(-5.0, 5.0, 41)), dtype=float))
    return bool(np.all(np.isfinite(far)) and far.max() <= 2.0 * max(near.max(), 1e-300))


def check_norms(problem: "CommitteeProblem", Q, Q0, *, eta: float, d: int) -> str | None:
    """Divergence message when a simulated ``Q_ii`` exceeds ``NORM_GROWTH_LIMIT * norm_scale``
    (``Q`` of shape (R, K, K), ``Q0`` the initial norms), else ``None``."""
    Q = np.asarray(Q, dtype=float)
    diag = np.diagonal(Q, axis1=-2, axis2=-1).reshape(-1, problem.K)
    scale = norm_scale(problem, Q0)
    bound = NORM_GROWTH_LIMIT * scale
    over = diag > bound
    if not np.any(over):
        return None
    r, i = np.unravel_index(int(np.argmax(np.where(over, diag, -np.inf))), diag.shape)
    why = (f"{problem.student.name} is bounded, so the loss is bounded and norms growing by orders of magnitude "
           "mean an unstable step, not learning" if _is_bounded(problem.student)
           else "the weights run away")
    return (f"the student norms diverged: Q_{i + 1}{i + 1} = {diag[r, i]:.3g} (replica {r}) > {NORM_GROWTH_LIMIT:.0e} x "
            f"the norm scale {scale:.3g} (max of 1, Q_ii(0), G_nn r^2); {why}: one step moves w_i by about "
            f"delta/sqrt(d) |a_i Delta sigma'| with delta = eta d = {eta * d:.3g}; use a smaller `delta`")


def joint_covariance(Q, M, G) -> np.ndarray:
    r"""Covariance of the local fields :math:`(\lambda_1..\lambda_K, \nu_1..\nu_M)`:
    :math:`C = \begin{pmatrix} Q & M\\ M^\top & G\end{pmatrix}`, vectorised over leading axes."""
    Q, M, G = (np.asarray(x, dtype=float) for x in (Q, M, G))
    lead = np.broadcast_shapes(Q.shape[:-2], M.shape[:-2])
    K, Mn = M.shape[-2], M.shape[-1]
    C = np.empty(lead + (K + Mn, K + Mn))
    C[..., :K, :K] = Q
    C[..., :K, K:] = M
    C[..., K:, :K] = np.swapaxes(M, -1, -2)
    C[..., K:, K:] = G
    return C


def _integrals(problem, tol, recheck, max_nodes=None, integrals="auto"):
    """Per-problem cache of :class:`CommitteeIntegrals` (the quadrature levels and the index
    plans are state); a hit costs one dictionary lookup (it runs at every right-hand side)."""
    cache = problem.__dict__.get("_integrals_cache")
    if cache is None:
        cache = {}
        object.__setattr__(problem, "_integrals_cache", cache)
    key = (tol, recheck, max_nodes, integrals)
    found = cache.get(key)
    if found is None:
        from .committee_integrals import MAX_NODES, CommitteeIntegrals

        found = CommitteeIntegrals(problem.student, problem.teacher, problem.K, problem.M, tol=tol, recheck=recheck,
                                   max_nodes=MAX_NODES if max_nodes is None else max_nodes, integrals=integrals)
        cache[key] = found
    return found


# ======================================================================================
# trajectories: eps_g, time in steps/d, the classic comparison
# ======================================================================================
def eps_g(problem: CommitteeProblem, traj, *, include_noise: bool = False) -> np.ndarray:
    r"""Generalisation error along a trajectory: shape ``(n_times, n_replicas)``.

    Works for ODE trajectories (``n_replicas = 1``) and simulations (either engine): it
    evaluates :meth:`CommitteeProblem.generalisation_error` at the recorded ``Q``, ``M``,
    ``a`` (all times and replicas in one batched call).  For ODE trajectories the clamping
    tolerance of small negative values includes the solver's ``max(rtol, atol)``
    (``state_rtol``); a :class:`~popdyn.errors.NumericalError` names the first bad time.

    Parameters
    ----------
    problem : CommitteeProblem
        The problem the trajectory was computed for.
    traj : Trajectory
        An ODE or simulation trajectory of ``problem`` with overlaps ``"Q"``, ``"M"`` and
        ``"a"``.
    include_noise : bool, optional
        Add the label-noise term :math:`\tfrac12\,\texttt{noise}` (the expected test loss on
        noisy labels); default ``False``, the noiseless error.

    Returns
    -------
    ndarray, shape (n_times, n_replicas)
        :math:`\varepsilon_g = \tfrac12 E[(f(x) - y^*(x))^2]` at every recorded time and
        replica (see :meth:`CommitteeProblem.generalisation_error`).

    Raises
    ------
    TypeError
        ``problem`` is not a :class:`CommitteeProblem`.
    ValueError
        ``traj`` lacks one of the overlaps ``"Q"``, ``"M"``, ``"a"``.
    """
    if not isinstance(problem, CommitteeProblem):
        raise TypeError(f"`problem` must be a CommitteeProblem, got {type(problem).__name__}.")
    for name in ("Q", "M", "a"):
        if name not in traj.overlaps:
            raise ValueError(f"`traj` has no overlap {name!r}; it is not a committee trajectory "
                             f"(overlaps: {sorted(traj.overlaps)}).")
    solver = traj.meta.get("solver") if traj.source == "ode" else None
    state_rtol = None if not solver else max(float(solver.get("rtol", 0.0)), float(solver.get("atol", 0.0)))
    eps, scale = problem._eps_g_terms(traj.Q, traj.M, traj.a)
    eps = _clamp_eps_g(eps, scale, state_rtol, times=traj.t)
    return eps + 0.5 * problem.noise if include_noise else eps


def add_eps_g(problem: CommitteeProblem, traj, *, include_noise: bool = False):
    r"""A copy of ``traj`` with the overlap ``"eps_g"`` of shape ``(n_times, n_replicas)``.

    Parameters
    ----------
    problem : CommitteeProblem
        The problem the trajectory was computed for.
    traj : Trajectory
        An ODE or simulation trajectory of ``problem`` with overlaps ``"Q"``, ``"M"`` and
        ``"a"``.
    include_noise : bool, optional
        Add the label-noise term :math:`\tfrac12\,\texttt{noise}` (the expected test loss on
        noisy labels); default ``False``, the noiseless error.

    Returns
    -------
    Trajectory
        ``traj`` with ``overlaps["eps_g"]`` = :func:`eps_g` added and
        ``meta["eps_g_includes_noise"]`` set; ``traj`` itself is not modified.
    """
    ov = dict(traj.overlaps)
    ov["eps_g"] = eps_g(problem, traj, include_noise=include_noise)
    meta = dict(traj.meta)
    meta["eps_g_includes_noise"] = bool(include_noise)
    return dataclasses.replace(traj, overlaps=ov, meta=meta)


def steps_per_d(traj, problem: CommitteeProblem | None = None):
    r"""A simulation trajectory re-timed from ``t = eta * steps`` to the ODE's ``t = steps/d``.

    Uses ``meta["record_steps"]`` and ``meta["d"]`` written by
    :func:`popdyn.simulation.simulate`.  The time unit becomes ``"t = steps / d"`` (or
    ``"alpha = steps / N"`` when ``problem.conventions == "saad-solla"``).
    """
    steps = traj.meta.get("record_steps")
    d = traj.meta.get("d")
    if steps is None or d is None:
        raise ValueError("`traj` must be a discrete simulation trajectory (meta needs 'record_steps' and 'd').")
    unit = "t = steps / d"
    if problem is not None and problem.conventions == "saad-solla":
        unit = "alpha = steps / N"
    t = np.asarray(steps, dtype=float) / float(d)
    message = f"{traj.message.split(' (t = ')[0]} ({unit.split(' = ')[0]} = {t[-1]:.6g})."
    if not traj.message.startswith("online SGD completed"):
        message = traj.message
    return dataclasses.replace(traj, t=t, time_unit=unit, message=message)


def simulate_committee(problem: CommitteeProblem, *, d: int, t_end: float, replicas: int = 8, init=1.0,
                       batch: int = 1, rng=None, engine: str = "full", record="log", n_record: int = 100,
                       include_noise: bool = False, max_steps=DEFAULT_MAX_STEPS, **kwargs):
    r"""Online SGD at dimension ``d`` in the ODE's units: ``eta = delta/d``, time ``t = steps/d``.

    A thin wrapper of :func:`popdyn.simulation.simulate` (either engine) that sets
    ``eta = problem.eta(d)`` and ``steps = round(t_end * d)``, converts ``record`` times from
    ``steps/d`` to the engine's unit, re-times the result (:func:`steps_per_d`) and adds
    ``eps_g`` (:func:`add_eps_g`).  Other keyword arguments go to ``simulate`` (e.g.
    ``checkpoint``, ``checkpoint_every``, ``progress``: SIGINT/SIGTERM then save the
    checkpoint before stopping).  A run of more than ``max_steps`` steps (``t_end * d``;
    default ``DEFAULT_MAX_STEPS`` = 1e9, ``None`` for no limit) is refused before any work.
    A diverging run (student norms beyond :data:`NORM_GROWTH_LIMIT` times :func:`norm_scale`,
    checked by the steppers' ``check_state`` at each recording time) raises
    :class:`~popdyn.errors.NumericalError` with the step and the time in ``steps/d``.

    Parameters
    ----------
    problem : CommitteeProblem
        The committee machine and its learning rates (``eta = problem.eta(d)`` :math:`= \delta/d`).
    d : int
        Input dimension (``>= 1``).
    t_end : float
        Final time :math:`t = \text{steps}/d > 0`; the run has ``round(t_end * d)`` steps
        (at least one).
    replicas : int, optional
        Number of independent runs (default 8).
    init : "uniform", float or array_like, optional
        Initialisation of the first layer, as in :func:`popdyn.simulation.simulate`
        (default 1.0).
    batch : int, optional
        Minibatch size (default 1).
    rng : int, Generator, SeedSequence or None, optional
        Seed.
    engine : {"full", "exact"}, optional
        Simulation engine (default ``"full"``).
    record : {"log", "linear"} or array_like, optional
        Recording grid; explicit times are in ``steps/d`` (default ``"log"``).
    n_record : int, optional
        Number of recording points for ``"log"``/``"linear"`` (default 100).
    include_noise : bool, optional
        Whether the recorded ``eps_g`` includes the label-noise term (:func:`eps_g`).
    max_steps : int or None, optional
        Refuse runs of more steps (default ``DEFAULT_MAX_STEPS``; ``None``: no limit).
    **kwargs
        Further keyword arguments of :func:`popdyn.simulation.simulate`.

    Returns
    -------
    Trajectory
        Time unit ``"t = steps / d"``, overlaps ``Q``, ``M``, ``a`` and ``eps_g`` of shape
        ``(n_times, replicas, ...)``.

    Raises
    ------
    ValueError
        Bad argument, ``t_end`` shorter than one step or more than ``max_steps`` steps.
    NumericalError
        The run diverged (the message gives the step and the time in ``steps/d``).

    Examples
    --------
    >>> prob = CommitteeProblem("erf", "erf", K=2, M=2, delta=0.5)
    >>> traj = simulate_committee(prob, d=50, t_end=1.0, replicas=2, init=0.5, rng=0, n_record=3)
    >>> traj.time_unit, float(traj.t[-1]), traj.eps_g.shape
    ('t = steps / d', 1.0, (3, 2))
    """
    from .._budget import check_steps
    from ..simulation import simulate

    d = check_int("d", d, minimum=1)
    t_end = check_real("t_end", t_end, lower=0.0, lower_open=True)
    if max_steps is not None:
        max_steps = check_int("max_steps", max_steps, minimum=1)
    steps = int(round(t_end * d))
    check_steps(steps, max_steps, what=f"`t_end` = {t_end:g} at `d` = {d} (steps = t_end * d)", lower="`t_end`")
    if steps < 1:
        raise ValueError(f"`t_end` = {t_end} is shorter than one step (t = steps/d = {1 / d:g}).")
    eta = problem.eta(d)
    if not isinstance(record, str):  # times in steps/d -> whole steps -> the engine's eta * steps
        record = np.rint(np.asarray(record, dtype=float) * d) * eta
    from ..errors import NumericalError

    try:
        traj = simulate(problem, d=d, algorithm="sgd", eta=eta, steps=steps, batch=batch, replicas=replicas,
                        init=init, rng=rng, engine=engine, record=record, n_record=n_record, max_steps=max_steps,
                        **kwargs)
    except NumericalError as exc:  # report the time in this function's unit, t = steps/d
        if exc.step is None:
            raise
        raise NumericalError(str(exc).rsplit(" (at step ", 1)[0], step=exc.step, time=exc.step / d) from exc
    return add_eps_g(problem, steps_per_d(traj, problem), include_noise=include_noise)


#: The classic plateau comparison (Saad & Solla 1995; Goldt et al. 2019): K = M = 2, erf,
#: delta = 0.5 (eta = 0.5 in Saad–Solla units), G = I, a = a* = 1 fixed, at d = 500.  The
#: first layer starts as a real network would, rows of W0 i.i.d. N(0, 0.25/d) (``init =
#: 0.5``) with seed 2024, giving Q0 ~ 0.25 I and M0 of order 0.5/sqrt(500) ~ 0.02; the ODE
#: starts from exactly these realised overlaps, so ODE and simulation share the start.
CLASSIC = {"d": 500, "init": 0.5, "seed": 2024, "t_end": 200.0, "times": (1, 10, 30, 50, 100, 200)}


def classic_problem(**overrides) -> CommitteeProblem:
    """Saad–Solla's classic: ``CommitteeProblem("erf", "erf", K=2, M=2, delta=0.5)``,
    ``G = I``, ``a = a* = 1`` fixed (``overrides`` are passed to the constructor).

    Parameters
    ----------
    **overrides
        Keyword arguments of :class:`CommitteeProblem` replacing the classic values (e.g.
        ``K=3``, ``delta=0.1``).

    Returns
    -------
    CommitteeProblem
        The classic problem with the overrides applied.
    """
    kw = dict(student="erf", teacher="erf", K=2, M=2, delta=0.5)
    kw.update(overrides)
    return CommitteeProblem(**kw)


def classic_initial_state(problem: CommitteeProblem | None = None, *, d: int = CLASSIC["d"],
                          init=CLASSIC["init"], seed: int = CLASSIC["seed"]) -> dict:
    """The initial overlaps ``{"Q", "M", "a"}`` of a seeded full simulation (see :data:`CLASSIC`).

    Exactly the state :func:`simulate_committee` with the same ``d``, ``init`` and
    ``rng=seed`` starts from (``popdyn.simulation.initial_state``).

    Parameters
    ----------
    problem : CommitteeProblem, optional
        Default :func:`classic_problem`.
    d : int, optional
        Input dimension (default ``CLASSIC["d"]`` = 500).
    init : "uniform", float or array_like, optional
        Initialisation (default ``CLASSIC["init"]`` = 0.5: first-layer rows i.i.d.
        :math:`N(0, 0.25/d)`).
    seed : int, optional
        Seed (default ``CLASSIC["seed"]`` = 2024).

    Returns
    -------
    dict
        ``{"Q": (K, K), "M": (K, M), "a": (K,)}``: the student-student and student-teacher
        overlaps and the second layer at time 0.

    Examples
    --------
    >>> s0 = classic_initial_state()
    >>> np.round(s0["Q"], 4).tolist(), np.round(s0["M"], 4).tolist()
    ([[0.2463, -0.0022], [-0.0022, 0.2295]], [[-0.0149, 0.0011], [-0.0159, -0.034]])
    """
    from ..simulation import initial_state

    problem = classic_problem() if problem is None else problem
    return initial_state(problem, d, init=init, rng=seed)[2]


def deviation_table(traj_ode, traj_sim, times, *, name: str = "eps_g") -> list:
    r"""ODE vs simulation of overlap ``name`` at ``times`` (both in the same time unit).

    Returns rows ``{"t", "ode", "sim_mean", "sim_se", "z", "rel_dev"}`` with the replica
    mean and standard error of the simulation, ``z = (sim_mean - ode)/sim_se`` and
    ``rel_dev = (sim_mean - ode)/ode``; values are linearly interpolated onto ``times``.
    """
    times = np.asarray(times, dtype=float)
    o = traj_ode.at(times).overlaps[name].reshape(times.size, -1)[:, 0]
    s = traj_sim.at(times).overlaps[name].reshape(times.size, traj_sim.n_replicas, -1)[:, :, 0]
    mean = s.mean(axis=1)
    se = s.std(axis=1, ddof=1) / math.sqrt(s.shape[1]) if s.shape[1] > 1 else np.full(times.size, np.nan)
    rows = []
    for i, t in enumerate(times):
        z = (mean[i] - o[i]) / se[i] if se[i] > 0 else float("nan")
        rows.append({"t": float(t), "ode": float(o[i]), "sim_mean": float(mean[i]), "sim_se": float(se[i]),
                     "z": float(z), "rel_dev": float((mean[i] - o[i]) / o[i])})
    return rows


def plot_committee(traj_ode, traj_sim=None, path=None, *, title: str = ""):
    r""":math:`\varepsilon_g(t)`: the ODE curve, the simulated replicas (thin) and their mean.

    Both trajectories need the overlap ``"eps_g"`` (:func:`add_eps_g`,
    :func:`simulate_committee`).  Log-log axes; the time axis is labelled with the
    trajectory's unit.  Saves a PNG when ``path`` is given (matplotlib via
    :mod:`popdyn.plot`, imported lazily).  Returns the figure.
    """
    from ..plot import _plt, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if traj_sim is not None:
        t = np.where(traj_sim.t > 0, traj_sim.t, np.nan)
        eps = traj_sim.overlaps["eps_g"]
        for r in range(eps.shape[1]):
            ax.plot(t, eps[:, r], color="tab:orange", lw=0.6, alpha=0.35)
        d = traj_sim.meta.get("d")
        engine = traj_sim.meta.get("engine", "full")
        ax.plot(t, eps.mean(axis=1), color="tab:orange", lw=1.8,
                label=f"simulation mean ({eps.shape[1]} replicas, d = {d}, {engine})")
    t = np.where(traj_ode.t > 0, traj_ode.t, np.nan)
    ax.plot(t, traj_ode.overlaps["eps_g"][:, 0], color="k", lw=1.6, label="ODE (d -> infinity)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(traj_ode.time_unit)
    ax.set_ylabel(r"$\varepsilon_g = \frac{1}{2}E[(f - y^*)^2]$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _register() -> None:
    from ..simulation import register_stepper

    register_stepper(CommitteeProblem, "popdyn.models.committee_sim:CommitteeFullStepper", engine="full")
    register_stepper(CommitteeProblem, "popdyn.models.committee_exact:CommitteeExactStepper", engine="exact")


_register()
