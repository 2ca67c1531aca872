r"""Two-layer network with squared loss under online SGD: the committee machine.

Saad & Solla (PRE 52:4225, 1995), Biehl & Schwarze (1995), Goldt et al. (NeurIPS 2019),
in popdyn's conventions (DESIGN.md §1).

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
initial weights are scaled when a simulation materialises them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._validation import check_choice, check_finite_array, check_int, check_real
from ..activations import Activation, get_activation

__all__ = ["CommitteeProblem", "CONVENTIONS", "check_overlaps"]

CONVENTIONS = ("popdyn", "saad-solla")
#: Eigenvalues above ``-PSD_TOL * max(1, ||C||)`` count as non-negative when checking that
#: the joint Gram matrix [[Q, M], [M^T, G]] is positive semidefinite.
PSD_TOL = 1e-10


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
