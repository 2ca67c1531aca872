r"""Single-index learning under a spiked input covariance (arXiv 2309.03843).

Mousavi-Hosseini, Wu, Suzuki and Erdogdu, "Gradient-Based Feature Learning under
Structured Data" (NeurIPS 2023).  The parametrisation below is a **reconstruction**
(theory/mousavi2023/equations.md, "Reconstructed model and derived facts"): the
normalisations were recalled, not copied from the paper.

Data model
----------
.. math::

    x \sim N(0, \Sigma), \qquad \Sigma = \frac{I_d + \kappa\,\theta\theta^\top}{1+\kappa},
    \qquad y = a^*\, g(\langle u, x\rangle),

with a unit spike direction :math:`\theta`, spike size :math:`\kappa \ge 0`
(:math:`\|\Sigma\|_{op} = 1`), target direction :math:`u` normalised so that
:math:`u^\top\Sigma u = 1` (so :math:`\langle u, x\rangle \sim N(0,1)`), and
``align`` :math:`= \cos\alpha = \langle\theta, u\rangle/\|u\|`.  Then

.. math::

    \|u\|^2 = \frac{1+\kappa}{1+\kappa\cos^2\alpha}, \qquad
    t_u := \langle u, \theta\rangle = \|u\|\cos\alpha, \qquad \Sigma\theta = \theta .

A single student neuron :math:`\phi` is trained on the squared loss
:math:`R(w) = \tfrac12 E[\phi(\langle w,x\rangle)^2] - E[\phi(\langle w,x\rangle)y]`
(+ const).

Population quantities (Hermite machinery for non-isotropic inputs)
------------------------------------------------------------------
The pair :math:`(\langle w,x\rangle, \langle u,x\rangle)` is Gaussian with variances
:math:`s^2 = w^\top\Sigma w` and 1 and correlation
:math:`\rho = m_\Sigma(w) = w^\top\Sigma u/\sqrt{w^\top\Sigma w}`, hence

.. math::

    E[\phi(\langle w,x\rangle)\, y] = a^*\sum_j c_j(\phi(s\,\cdot))\,\alpha_j\,\rho^j .

For a positively homogeneous student of degree ``q`` (ReLU, abs, identity, sign)
:math:`c_j(\phi(s\cdot)) = s^q c_j(\phi)` and :math:`E[\phi(sz)^2] = s^{2q}E[\phi^2]`, so
:math:`R = \tfrac12 s^{2q} M_2 - s^q F(\rho)` with :math:`F(\rho) = a^*\sum_j c_j\alpha_j\rho^j`
and

.. math::

    \nabla R = g_s\,\Sigma w + g_u\,\Sigma u,\quad
    g_s = q s^{2q-2}M_2 - q s^{q-2}F + s^{q-2}\rho F',\quad g_u = -s^{q-1}F'.

Flows (``flow=``)
-----------------
``"spherical"``  (paper §2.1): :math:`\dot w = -(I - ww^\top)\nabla R`, :math:`\|w\| = 1`.
    Needs a homogeneous student (the spherical flow of other students is not implemented).
``"normalized"`` (paper §3, "reminiscent of batch normalisation"): the student is
    :math:`\phi(\langle w,x\rangle/\|\Sigma^{1/2}w\|)`, so :math:`R = \text{const} - F(\rho)`
    with :math:`F(\rho) = a^*\sum_j c_j\alpha_j\rho^j`, and :math:`\dot w = -\nabla R
    = F'(\rho)(\Sigma u - \rho\Sigma w/s)/s`; :math:`R` is 0-homogeneous, so
    :math:`\|w\|` is conserved.
``"preconditioned"`` (paper §4): :math:`\dot w = -\Sigma^{-1}\nabla R` on the normalised
    loss; in whitened coordinates :math:`\tilde w = \Sigma^{1/2}w` this is the isotropic
    flow, :math:`s = \|\tilde w\|` is conserved and
    :math:`\dot\rho = (1-\rho^2)F'(\rho)/s^2` (theory/mousavi2023/equations.md).  The exact :math:`\Sigma` is
    used here; the empirical :math:`\hat\Sigma` from ``n_unlabeled`` samples is the
    finite-d simulator's business (:func:`min_unlabeled` gives the validation rule).

Overlap ODE
-----------
State :math:`(p, q, S) = (\langle w,u\rangle, \langle w,\theta\rangle, w^\top\Sigma w)`.
With :math:`\|w\|^2 = (1+\kappa)S - \kappa q^2`, :math:`P = w^\top\Sigma u =
(p + \kappa t_u q)/(1+\kappa)`, :math:`w^\top\Sigma^2 w = (\|w\|^2 + (2\kappa+\kappa^2)q^2)
/(1+\kappa)^2`, :math:`w^\top\Sigma^2 u = (p + (2\kappa+\kappa^2)t_u q)/(1+\kappa)^2`, every
flow :math:`\dot w = a\,\Sigma w + b\,\Sigma u + c\,w` (or :math:`a w + b u` for the
preconditioned flow) closes on :math:`(p, q, S)`; see :meth:`SpikedProblem.ode_rhs`.
The reduction is checked against the d-dimensional population flow
(:func:`dense_population_flow`) to 1e-9 in ``tests/test_spiked.py``.

Effective dimension (theory/mousavi2023/equations.md)
-----------------------------------------------------
For :math:`w` uniform on :math:`S^{d-1}` and :math:`\kappa \ll d`,
:math:`E[m_\Sigma(w)^2] \approx \|\Sigma u\|^2/\operatorname{tr}\Sigma = 1/d_{\rm eff}`,
:math:`d_{\rm eff} = \operatorname{tr}(\Sigma)(u^\top\Sigma u)/(u^\top\Sigma^2u)
= (d+\kappa)(1+\kappa\cos^2\alpha)/(1 + (2\kappa+\kappa^2)\cos^2\alpha)`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._validation import check_choice, check_finite_array, check_int, check_real
from ..activations import Activation, get_activation

__all__ = ["FLOWS", "SpikedCovariance", "SpikedProblem", "check_covariance", "dense_population_flow",
           "effective_dimension", "min_unlabeled", "escape_time_grid", "plot_escape_grid",
           "kappa_critical", "mc_initial_overlap", "SimulatedEscape", "escape_grid_simulation",
           "plot_escape_points"]

FLOWS = ("spherical", "normalized", "preconditioned")
#: Hermite degree used for non-polynomial teachers (the teacher series is truncated there).
TEACHER_DEGREE = 40
#: Relative eigenvalue floor below which a user-given covariance is "not positive definite".
PD_RTOL = 1e-12
#: :meth:`SpikedProblem.escape_time` reports a stall once ``t |dy/dt| / |y|`` falls below
#: this after having been larger: at a stable fixed point it decays exponentially, on the
#: plateau of a slow escape it stays of order ``|m_Sigma|`` (>> 1e-9 from any start).
SETTLE_TOL = 1e-9


def min_unlabeled(d: int) -> int:
    r"""Smallest number ``n'`` of unlabelled samples accepted for the empirical :math:`\hat\Sigma^{-1}`.

    :math:`\hat\Sigma = X^\top X/n'` is invertible only for :math:`n' \ge d`, and the
    inverse-Wishart mean :math:`E[\hat\Sigma^{-1}] = \frac{n'}{n'-d-1}\Sigma^{-1}` is finite only
    for :math:`n' \ge d + 2`; so ``n' >= d + 2`` is the minimum (the paper's guarantees need
    far more, e.g. :math:`n' \gtrsim n^2` for ReLU; this is the floor below which the
    preconditioner does not exist / has unbounded mean).

    Parameters
    ----------
    d : int
        Ambient dimension, ``d >= 1``.

    Returns
    -------
    int
        ``d + 2``.

    Examples
    --------
    >>> min_unlabeled(100)
    102
    """
    d = check_int("d", d, minimum=1)
    return d + 2


def effective_dimension(d, kappa, align) -> float:
    r""":math:`d_{\rm eff} = \operatorname{tr}(\Sigma)(u^\top\Sigma u)/(u^\top\Sigma^2 u)`
    for the spiked model (theory/mousavi2023/equations.md); ``1/d_eff`` predicts :math:`E[m_\Sigma(w_0)^2]`.

    Parameters
    ----------
    d : int
        Ambient dimension, ``d >= 1``.
    kappa : float
        Spike size :math:`\kappa \ge 0` of :math:`\Sigma = (I_d + \kappa\theta\theta^\top)/(1+\kappa)`.
    align : float
        :math:`\cos\alpha = \langle\theta, u\rangle/\|u\|` in [-1, 1].

    Returns
    -------
    float
        :math:`d_{\rm eff} = (d+\kappa)(1+\kappa\cos^2\alpha)/(1 + (2\kappa+\kappa^2)\cos^2\alpha)`
        (equal to ``d`` for :math:`\kappa = 0`).

    Examples
    --------
    >>> round(1 / effective_dimension(4000, 20.0, 1.0), 7)
    0.0052239
    """
    d = check_int("d", d, minimum=1)
    kappa = check_real("kappa", kappa, lower=0.0)
    c = check_real("align", align, lower=-1.0, upper=1.0)
    return (d + kappa) * (1 + kappa * c * c) / (1 + (2 * kappa + kappa * kappa) * c * c)


def check_covariance(sigma) -> np.ndarray:
    """Validate a user-given dense covariance: square, finite, symmetric, positive definite."""
    s = check_finite_array("sigma", sigma, ndim=2)
    if s.shape[0] != s.shape[1]:
        raise ValueError(f"`sigma` must be square, got shape {s.shape}.")
    if not np.allclose(s, s.T, rtol=1e-12, atol=1e-14 * max(1.0, np.abs(s).max())):
        raise ValueError("`sigma` must be symmetric.")
    ev = np.linalg.eigvalsh(s)
    if ev[0] <= PD_RTOL * max(abs(ev[-1]), 1e-300):
        raise ValueError(f"`sigma` must be positive definite; its smallest eigenvalue is {ev[0]:.3e} "
                         f"(largest {ev[-1]:.3e}).")
    return s


@dataclasses.dataclass(frozen=True)
class SpikedCovariance:
    r"""The spiked covariance in ``d`` dimensions, kept as :math:`(\theta, \kappa)` (no d x d matrix).

    Coordinates: :math:`\theta = e_1`, :math:`u = \|u\|(\cos\alpha\, e_1 + \sin\alpha\, e_2)`.
    """

    d: int
    kappa: float
    theta: np.ndarray = dataclasses.field(repr=False)
    u: np.ndarray = dataclasses.field(repr=False)

    def matvec(self, v) -> np.ndarray:
        r""":math:`\Sigma v` for ``v`` of shape ``(..., d)``."""
        v = np.asarray(v, dtype=float)
        return (v + self.kappa * (v @ self.theta)[..., None] * self.theta) / (1 + self.kappa)

    def inv_matvec(self, v) -> np.ndarray:
        r""":math:`\Sigma^{-1} v = (1+\kappa)(v - \tfrac{\kappa}{1+\kappa}\theta\theta^\top v)`."""
        v = np.asarray(v, dtype=float)
        return (1 + self.kappa) * (v - self.kappa / (1 + self.kappa) * (v @ self.theta)[..., None] * self.theta)

    def sqrt_matvec(self, v) -> np.ndarray:
        r""":math:`\Sigma^{1/2} v` (use it to draw :math:`x = \Sigma^{1/2} z`)."""
        v = np.asarray(v, dtype=float)
        k = self.kappa
        return (v + (math.sqrt(1 + k) - 1) * (v @ self.theta)[..., None] * self.theta) / math.sqrt(1 + k)

    def dense(self) -> np.ndarray:
        """The d x d matrix (only for small ``d``)."""
        return (np.eye(self.d) + self.kappa * np.outer(self.theta, self.theta)) / (1 + self.kappa)

    def trace(self) -> float:
        return (self.d + self.kappa) / (1 + self.kappa)


@dataclasses.dataclass(frozen=True)
class SpikedProblem:
    r"""Single neuron, single-index target, spiked covariance (arXiv 2309.03843; reconstruction).

    Parameters
    ----------
    student, teacher : str or Activation
        Student :math:`\phi` and link :math:`g` (Hermite coefficients :math:`\alpha_j`).
    kappa : float
        Spike size :math:`\kappa \ge 0` (:math:`\kappa = 0` is isotropic).
    align : float
        :math:`\cos\alpha = \langle\theta, u\rangle/\|u\|` in [-1, 1].
    flow : {"spherical", "normalized", "preconditioned"}
        See the module docstring.  ``"spherical"`` needs a positively homogeneous student.
    d : int, optional
        Ambient dimension (needed for :meth:`covariance`, initial states and ``d_eff``).
    n_unlabeled : int, optional
        Unlabelled samples for the empirical covariance (preconditioned flow, simulator
        only); must be at least :func:`min_unlabeled(d) <min_unlabeled>`.
    a_star : float
        Teacher amplitude (sign): :math:`y = a^* g(\langle u, x\rangle)`.

    Examples
    --------
    >>> p = SpikedProblem("relu", "he4", kappa=20.0, align=1.0, flow="normalized", d=4000, a_star=-1.0)
    >>> round(1 / p.effective_dimension(), 7)
    0.0052239
    """

    student: Activation | str = "relu"
    teacher: Activation | str = "he4"
    kappa: float = 0.0
    align: float = 1.0
    flow: str = "normalized"
    d: int | None = None
    n_unlabeled: int | None = None
    a_star: float = 1.0

    ode_model = "spiked"
    ode_state_names = ("p", "q", "S")

    def __post_init__(self):
        s = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        s("student", get_activation(self.student))
        s("teacher", get_activation(self.teacher))
        s("kappa", check_real("kappa", self.kappa, lower=0.0))
        s("align", check_real("align", self.align, lower=-1.0, upper=1.0))
        s("flow", check_choice("flow", self.flow, FLOWS))
        if self.d is not None:
            s("d", check_int("d", self.d, minimum=2))
        if self.n_unlabeled is not None:
            if self.d is None:
                raise ValueError("`n_unlabeled` needs `d` (the minimum is d + 2).")
            n = check_int("n_unlabeled", self.n_unlabeled, minimum=1)
            nmin = min_unlabeled(self.d)
            if n < nmin:
                raise ValueError(f"`n_unlabeled` must be at least {nmin} (= d + 2, so that the empirical "
                                 f"covariance is invertible with a finite mean inverse) for d = {self.d}, got {n}.")
            s("n_unlabeled", n)
        a = check_real("a_star", self.a_star)
        if a == 0.0:
            raise ValueError("`a_star` must be non-zero.")
        s("a_star", a)
        if self.flow == "spherical" and self.student.homogeneity is None:
            raise ValueError(f"flow='spherical' needs a positively homogeneous student (relu, abs, identity, "
                             f"sign); got {self.student.name!r}. Use flow='normalized' or 'preconditioned'.")
        k, c = self.kappa, self.align
        u2 = (1 + k) / (1 + k * c * c)
        s("u_norm2", u2)
        s("t_u", math.sqrt(u2) * c)
        # |Sigma u|^2 = u^T Sigma^2 u
        s("sigma_u2", (u2 + (2 * k + k * k) * self.t_u ** 2) / (1 + k) ** 2)
        deg = self.teacher.degree if self.teacher.is_polynomial else TEACHER_DEGREE
        coef = a * self.student.coefficients(deg) * self.teacher.coefficients(deg)
        coef.setflags(write=False)
        s("gamma", coef)
        s("_q", float(self.student.homogeneity) if self.student.homogeneity is not None else None)
        s("_m2", float(self.student.second_moment))

    # -- geometry --------------------------------------------------------------------------
    def covariance(self, d: int | None = None, *, dense: bool = False):
        r"""The covariance in ``d`` dimensions: a :class:`SpikedCovariance` (``theta``, ``u``,
        mat-vecs) or, with ``dense=True``, the d x d matrix."""
        d = self._dim(d)
        theta = np.zeros(d)
        theta[0] = 1.0
        u = np.zeros(d)
        un = math.sqrt(self.u_norm2)
        u[0] = un * self.align
        u[1] = un * math.sqrt(max(0.0, 1 - self.align ** 2))
        cov = SpikedCovariance(d, self.kappa, theta, u)
        return cov.dense() if dense else cov

    def _dim(self, d):
        if d is None:
            if self.d is None:
                raise ValueError("`d` is needed (pass it here or to SpikedProblem).")
            return self.d
        return check_int("d", d, minimum=2)

    def effective_dimension(self, d: int | None = None) -> float:
        """:func:`effective_dimension` for this problem."""
        return effective_dimension(self._dim(d), self.kappa, self.align)

    def describe(self) -> dict:
        return {"model": "spiked", "paper": "2309.03843", "student": self.student.name,
                "teacher": self.teacher.name, "a_star": self.a_star, "kappa": self.kappa,
                "align": self.align, "flow": self.flow, "d": self.d, "n_unlabeled": self.n_unlabeled}

    # -- population ------------------------------------------------------------------------
    def F(self, rho) -> np.ndarray:
        r""":math:`F(\rho) = a^*\sum_j c_j\alpha_j\rho^j` (correlation at unit preactivation scale)."""
        return np.polynomial.polynomial.polyval(np.asarray(rho, dtype=float), self.gamma)

    def dF(self, rho) -> np.ndarray:
        """:math:`F'(\\rho)`."""
        return np.polynomial.polynomial.polyval(np.asarray(rho, dtype=float),
                                                np.polynomial.polynomial.polyder(self.gamma))

    def overlaps(self, state) -> dict:
        r"""Derived quantities from ``state = {p, q, S}``: ``w2`` (:math:`\|w\|^2`), ``P``, ``s``,
        ``m`` (:math:`m_\Sigma`), ``cos`` (Euclidean cosine with :math:`u`), ``cos_theta``."""
        p, q, S = (np.asarray(state[k], dtype=float) for k in ("p", "q", "S"))
        k = self.kappa
        w2 = (1 + k) * S - k * q * q
        P = (p + k * self.t_u * q) / (1 + k)
        s = np.sqrt(S)
        return {"w2": w2, "P": P, "s": s, "m": P / s, "cos": p / np.sqrt(w2 * self.u_norm2),
                "cos_theta": q / np.sqrt(w2)}

    def loss(self, state) -> np.ndarray:
        r"""Population loss :math:`R` (without :math:`\tfrac12E[y^2]`) for this problem's flow."""
        o = self.overlaps(state)
        if self.flow == "spherical":
            qh = self._q
            return 0.5 * o["s"] ** (2 * qh) * self._m2 - o["s"] ** qh * self.F(o["m"])
        return 0.5 * self._m2 - self.F(o["m"])

    def _gradient_coefficients(self, s, rho):
        """(g_s, g_u) with grad R = g_s Sigma w + g_u Sigma u."""
        Fp = self.dF(rho)
        if self.flow == "spherical":
            qh, m2 = self._q, self._m2
            g_s = qh * s ** (2 * qh - 2) * m2 - qh * s ** (qh - 2) * self.F(rho) + s ** (qh - 2) * rho * Fp
            g_u = -s ** (qh - 1) * Fp
        else:
            g_s = rho * Fp / (s * s)
            g_u = -Fp / s
        return g_s, g_u

    # -- ODE protocol ----------------------------------------------------------------------
    def ode_initial_state(self, state0) -> dict:
        """Accept a dict ``{p, q, S}`` or a length-3 array ``(p, q, S)``."""
        if isinstance(state0, dict):
            vals = [state0[k] for k in self.ode_state_names]
        else:
            vals = list(check_finite_array("state0", state0, shape=(3,)))
        out = {k: check_finite_array(k, np.atleast_1d(np.asarray(v, dtype=float)), shape=(1,)).copy()
               for k, v in zip(self.ode_state_names, vals)}
        o = self.overlaps(out)
        if not out["S"][0] > 0 or not o["w2"][0] > 0:
            raise ValueError("`state0` must have S = w^T Sigma w > 0 and |w|^2 = (1+kappa) S - kappa q^2 > 0.")
        return out

    def ode_rhs(self, t, state, **_) -> dict:
        r"""Time derivatives of :math:`(p, q, S)` for :attr:`flow` (module docstring)."""
        k, tu = self.kappa, self.t_u
        o = self.overlaps(state)
        p, q, S = state["p"], state["q"], state["S"]
        s, rho, P, w2 = o["s"], o["m"], o["P"], o["w2"]
        if self.flow == "preconditioned":
            Fp = self.dF(rho)
            return {"p": Fp * (self.u_norm2 - rho * p / s) / s,
                    "q": Fp * (tu - rho * q / s) / s,
                    "S": np.zeros_like(S)}
        g_s, g_u = self._gradient_coefficients(s, rho)
        wS2w = (w2 + (2 * k + k * k) * q * q) / (1 + k) ** 2
        wS2u = (p + (2 * k + k * k) * tu * q) / (1 + k) ** 2
        # <u, grad R>, <theta, grad R>, <Sigma w, grad R>
        uG = g_s * P + g_u * 1.0
        thG = g_s * q + g_u * tu
        SwG = g_s * wS2w + g_u * wS2u
        if self.flow == "spherical":
            lam = (g_s * S + g_u * P) / w2  # projection onto the tangent space of the sphere |w|
            return {"p": -(uG - lam * p), "q": -(thG - lam * q), "S": -2 * (SwG - lam * S)}
        return {"p": -uG, "q": -thG, "S": -2 * SwG}

    def ode_escape_bound(self) -> tuple:
        """``(1, reason)``: :math:`|m_\\Sigma|` is a cosine in the Sigma inner product."""
        return 1.0, "|m_Sigma| is a cosine (Cauchy-Schwarz in the Sigma inner product)"

    def ode_escape_observable(self, state) -> np.ndarray:
        r""":math:`|m_\Sigma|`, the overlap in whitened coordinates."""
        return np.abs(self.overlaps(state)["m"])

    def ode_check_state(self, state):
        o = self.overlaps(state)
        if not (np.all(np.asarray(state["S"]) > 0) and np.all(o["w2"] > 0)):
            return "left the domain S > 0, |w|^2 > 0"
        return None

    def initial_state(self, d: int | None = None, *, m0: float | None = None, eps: float | None = None) -> dict:
        r"""A deterministic initial state :math:`w_0 = \epsilon f + \sqrt{1-\epsilon^2}\,\xi` with
        :math:`f = \Sigma u/\|\Sigma u\|` and :math:`\xi \perp \mathrm{span}(u, \theta)`.

        * default ``eps = d**-0.5``: the typical size of a uniform :math:`w_0`'s component along
          :math:`f`, which gives :math:`m_\Sigma(w_0)^2 = \|\Sigma u\|^2/(d\,w_0^\top\Sigma w_0)`;
          this equals :math:`1/d_{\rm eff}` up to relative :math:`O(\kappa/d)` (exactly when
          :math:`u = \theta`, where :math:`\langle w_0, \theta\rangle = d^{-1/2}`, the start of the
          reference :math:`\kappa_{crit}` values);
        * ``m0``: choose ``eps`` so that :math:`m_\Sigma(w_0) = m_0` exactly.

        For ``flow="preconditioned"`` the state is rescaled to :math:`\|\Sigma^{1/2}w_0\| = 1`
        (the preconditioned-flow convention), otherwise :math:`\|w_0\| = 1`.
        """
        k = self.kappa
        a2 = self.t_u ** 2 / self.sigma_u2  # <f, theta>^2
        if m0 is not None:
            m0 = check_real("m0", m0, lower=-1.0, upper=1.0, lower_open=True, upper_open=True)
            e2 = m0 * m0 / ((1 + k) * self.sigma_u2 - k * m0 * m0 * a2)
            eps = math.copysign(math.sqrt(e2), m0)
        elif eps is None:
            eps = self._dim(d) ** -0.5
        else:
            eps = check_real("eps", eps, lower=-1.0, upper=1.0)
        rs = math.sqrt(self.sigma_u2)
        p = eps / rs                       # <f, u> = u^T Sigma u / |Sigma u|
        q = eps * self.t_u / rs            # <f, theta> = <u, theta> / |Sigma u|
        S = (1 + k * q * q) / (1 + k)
        if self.flow == "preconditioned":
            c = 1 / math.sqrt(S)
            p, q, S = p * c, q * c, 1.0
        return {"p": np.array([p]), "q": np.array([q]), "S": np.array([S])}

    def integrate(self, state0, t_end, **kwargs):
        """Integrate the overlap ODE with :func:`popdyn.ode.integrate` (returns a Trajectory)."""
        from ..ode import integrate
        return integrate(self, state0, t_end, **kwargs)

    def escape_time(self, state0, *, level: float = 0.5, t_max: float = 1e12, stall_factor: float = 1e-6,
                    settle_tol: float = SETTLE_TOL) -> float:
        r"""Time for :math:`|m_\Sigma|` to reach ``level`` in (0, 1) (0 when it starts at or above
        ``level``; ``ValueError`` outside (0, 1), where :math:`|m_\Sigma| \le 1`); ``inf`` if it falls below
        ``stall_factor`` times its initial value (converged to the equator), if the flow
        settles at a fixed point below ``level`` (:math:`t\,|\dot y|/|y| <` ``settle_tol``
        after having been larger, with ``y = (p, q, S)``; e.g. the biased end point of the
        spherical flow), or if ``t_max`` passes.  On the slow plateau of an escape
        :math:`t\,|\dot y|/|y|` stays of order :math:`|m_\Sigma|`, while at a stable fixed
        point it decays exponentially, so the settle test does not stop a slow escape.

        :math:`|m_\Sigma|` can dip far before it grows (misaligned spike, spherical flow:
        to 4 % of its start for :math:`\kappa = 50`, ``align = 0.1``, then escape at
        :math:`t \approx 6.7\cdot10^5`), so the stall level is set deep (``1e-6``).

        Integrated by :func:`popdyn.ode.integrate` (LSODA, ``rtol = 1e-10``, ``atol = 1e-14``)
        with three terminal user events (escape up, stall down, settle).
        """
        from ..ode import integrate

        level = check_real("level", level, lower=0.0, upper=1.0, lower_open=True, upper_open=True)
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
            r = self.ode_rhs(t, state)
            f = np.concatenate([r["p"], r["q"], r["S"]])
            y = np.concatenate([state["p"], state["q"], state["S"]])
            return t * float(np.linalg.norm(f) / np.linalg.norm(y)) - settle_tol

        up.terminal = down.terminal = settle.terminal = True
        up.direction, down.direction, settle.direction = 1, -1, -1
        traj = integrate(self, st, t_max, method="LSODA", rtol=1e-10, atol=1e-14, n_times=2, times="linear",
                         events=[up, down, settle], progress=False)
        if traj.events["up"].size:
            return float(traj.events["up"][0])
        return math.inf

    def run_to_convergence(self, state0, t_end: float = 1e7) -> dict:
        """Overlaps at ``t_end`` (a long run; use to read the final cos / m_Sigma), by
        :func:`popdyn.ode.integrate` (LSODA, ``rtol = 1e-10``, ``atol = 1e-14``)."""
        from ..ode import integrate

        traj = integrate(self, state0, t_end, method="LSODA", rtol=1e-10, atol=1e-14, n_times=2, times="linear",
                         progress=False)
        o = self.overlaps({k: traj.overlaps[k][-1, 0, 0] for k in self.ode_state_names})
        return {k: float(v) for k, v in o.items()}


# -- d-dimensional population flow (independent check; any dense Sigma) ---------------------
def dense_population_flow(student, teacher, sigma, u, w0, t_eval, *, flow: str, a_star: float = 1.0,
                          rtol: float = 1e-12, atol: float = 1e-14) -> np.ndarray:
    r"""Integrate the d-dimensional population flow for a user-given dense :math:`\Sigma`.

    Uses :math:`\nabla R = \partial_s R\,\Sigma w/s + \partial_\rho R\,(\Sigma u - \rho\Sigma w/s)/s`
    with :math:`s = \sqrt{w^\top\Sigma w}`, :math:`\rho = w^\top\Sigma u/s` (``u`` must satisfy
    :math:`u^\top\Sigma u = 1`).  Returns ``w(t)`` of shape ``(len(t_eval), d)``.
    """
    from scipy.integrate import solve_ivp

    sigma = check_covariance(sigma)
    flow = check_choice("flow", flow, FLOWS)
    u = check_finite_array("u", u, ndim=1)
    if abs(u @ sigma @ u - 1) > 1e-10:
        raise ValueError(f"`u` must satisfy u^T Sigma u = 1, got {u @ sigma @ u!r}.")
    helper = SpikedProblem(student, teacher, kappa=0.0, align=1.0, flow=flow, a_star=a_star)
    sig_u = sigma @ u
    sig_inv = np.linalg.inv(sigma) if flow == "preconditioned" else None

    def fun(t, w):
        sw = sigma @ w
        s = math.sqrt(w @ sw)
        rho = (w @ sig_u) / s
        g_s, g_u = helper._gradient_coefficients(s, rho)
        grad = g_s * sw + g_u * sig_u
        if flow == "spherical":
            return -(grad - (w @ grad) / (w @ w) * w)
        if flow == "preconditioned":
            return -sig_inv @ grad
        return -grad

    t_eval = np.asarray(t_eval, dtype=float)
    sol = solve_ivp(fun, (0.0, float(t_eval[-1])), np.asarray(w0, dtype=float), method="DOP853",
                    t_eval=t_eval, rtol=rtol, atol=atol)
    return sol.y.T


# -- effective dimension by Monte Carlo ---------------------------------------------------------
def mc_initial_overlap(d, kappa, align, *, n_samples: int = 100_000, rng=0):
    r"""Monte Carlo :math:`E[m_\Sigma(w_0)^2]` for :math:`w_0` uniform on :math:`S^{d-1}`.

    Returns ``(mean, standard_error)``.  :math:`m_\Sigma` depends on :math:`w_0` only through
    its coordinates on :math:`\mathrm{span}(\theta, u) = \mathrm{span}(e_1, e_2)`, whose exact
    law is :math:`(g_1, g_2)/\sqrt{g_1^2 + g_2^2 + \chi^2_{d-2}}` with :math:`g_i \sim N(0,1)`;
    sampling that is exact and costs :math:`O(1)` per sample instead of :math:`O(d)`.
    """
    from .._random import as_generator

    prob = SpikedProblem("relu", "he4", kappa=kappa, align=align, flow="normalized", d=d)
    n_samples = check_int("n_samples", n_samples, minimum=2)
    cov = prob.covariance(d=2)
    su = cov.matvec(cov.u)                      # Sigma u lies in span(e1, e2)
    gen = as_generator(rng)
    g = gen.standard_normal((n_samples, 2))
    r2 = g[:, 0] ** 2 + g[:, 1] ** 2 + (gen.chisquare(d - 2, n_samples) if d > 2 else 0.0)
    w = g / np.sqrt(r2)[:, None]
    S = (1 + prob.kappa * w[:, 0] ** 2) / (1 + prob.kappa)   # |w| = 1
    v = (w @ su) ** 2 / S
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


# -- escape threshold and phase picture -----------------------------------------------------------
def kappa_critical(d, *, student="relu", teacher="he4", a_star=-1.0, align=1.0, kappa_lo=1.0,
                   kappa_hi=None, rtol: float = 1e-4, level: float = 0.5) -> float:
    r"""Smallest :math:`\kappa` at which the *spherical* flow escapes from the typical
    initial state (:math:`\langle w_0,\theta\rangle = d^{-1/2}` for :math:`u = \theta`),
    by bisection on the overlap ODE (reference values in
    theory/mousavi2023/equations.md).

    Escape means :math:`|m_\Sigma|` reaches ``level`` (a finite
    :meth:`SpikedProblem.escape_time`); anything else is a stall: :math:`|m_\Sigma|` falls to
    ``1e-6`` of its initial value (the equator is attracting), settles at a fixed point below
    ``level``, or has not escaped by ``t_max = 1e12``.  Below :math:`\kappa_{crit}` the flow stalls.

    Parameters
    ----------
    d : int
        Ambient dimension, ``d >= 2``.
    student, teacher : str or Activation, optional
        Student :math:`\phi` (positively homogeneous, for the spherical flow) and link
        :math:`g`; default ReLU and :math:`h_4`.
    a_star : float, optional
        Teacher amplitude (sign) :math:`a^*` (default -1).
    align : float, optional
        :math:`\cos\alpha` in [-1, 1] (default 1: :math:`u \parallel \theta`).
    kappa_lo : float, optional
        Lower end of the bracket, :math:`\kappa \ge 0` at which the flow must stall
        (default 1).
    kappa_hi : float, optional
        Upper end, at which the flow must escape (default ``d``).
    rtol : float, optional
        Bisection stops when the bracket width is below ``rtol`` times its upper end
        (default ``1e-4``).
    level : float, optional
        Escape level for :math:`|m_\Sigma|`, in (0, 1) (default 0.5).

    Returns
    -------
    float
        Midpoint of the final bracket :math:`[\kappa_{lo}, \kappa_{hi}]` (stall at the lower
        end, escape at the upper one), i.e. :math:`\kappa_{crit}` to relative accuracy ``rtol``.

    Raises
    ------
    ValueError
        The flow does not stall at ``kappa_lo`` and escape at ``kappa_hi`` (no threshold
        bracketed), or an invalid argument.
    """
    d = check_int("d", d, minimum=2)

    def escapes(kappa):
        p = SpikedProblem(student, teacher, kappa=kappa, align=align, flow="spherical", d=d, a_star=a_star)
        return math.isfinite(p.escape_time(p.initial_state(), level=level))

    lo = check_real("kappa_lo", kappa_lo, lower=0.0)
    hi = float(d) if kappa_hi is None else check_real("kappa_hi", kappa_hi, lower=0.0)
    if escapes(lo) or not escapes(hi):
        raise ValueError(f"no escape threshold bracketed in [{lo}, {hi}] for d = {d}.")
    while hi - lo > rtol * hi:
        mid = math.sqrt(lo * hi) if lo > 0 else 0.5 * hi
        if escapes(mid):
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def escape_time_grid(student, teacher, d, r1_values, r2_values, flow, *, a_star: float = 1.0,
                     level: float = 0.5, t_max: float = 1e12) -> np.ndarray:
    r"""Escape time of the overlap ODE over :math:`\kappa = d^{r_2}`, ``align`` :math:`= d^{-r_1}`.

    Returns an array of shape ``(len(r1_values), len(r2_values))``: the time for
    :math:`|m_\Sigma|` to reach ``level`` from :meth:`SpikedProblem.initial_state` (typical
    :math:`d^{-1/2}` start), ``inf`` when the flow stalls at the equator.

    Parameters
    ----------
    student, teacher : str or Activation
        Student :math:`\phi` and link :math:`g` (as in :class:`SpikedProblem`).
    d : int
        Ambient dimension, ``d >= 2``.
    r1_values : array_like, 1-d
        Exponents :math:`r_1 \ge 0` of the alignment ``align`` :math:`= d^{-r_1}` (rows).
    r2_values : array_like, 1-d
        Exponents :math:`r_2` of the spike size :math:`\kappa = d^{r_2}` (columns).
    flow : {"spherical", "normalized", "preconditioned"}
        The flow (see :class:`SpikedProblem`).
    a_star : float, optional
        Teacher amplitude (sign) :math:`a^*` (default 1).
    level : float, optional
        Escape level for :math:`|m_\Sigma|`, in (0, 1) (default 0.5).
    t_max : float, optional
        Time horizon of each ODE run (default ``1e12``); a cell not escaped by then is ``inf``.

    Returns
    -------
    ndarray, shape (len(r1_values), len(r2_values))
        ``out[i, j]`` is :meth:`SpikedProblem.escape_time` at ``align = d**-r1_values[i]``,
        ``kappa = d**r2_values[j]`` (``inf``: stalled).
    """
    d = check_int("d", d, minimum=2)
    r1 = check_finite_array("r1_values", r1_values, ndim=1)
    r2 = check_finite_array("r2_values", r2_values, ndim=1)
    if np.any(r1 < 0):
        raise ValueError("`r1_values` must be >= 0 (align = d^-r1 must lie in [0, 1]).")
    out = np.empty((r1.size, r2.size))
    for i, a in enumerate(r1):
        for j, b in enumerate(r2):
            p = SpikedProblem(student, teacher, kappa=float(d) ** b, align=float(d) ** (-a), flow=flow, d=d,
                              a_star=a_star)
            out[i, j] = p.escape_time(p.initial_state(), level=level, t_max=t_max)
    return out


def plot_escape_grid(times, r1_values, r2_values, *, ax=None, title=None, overlay=None):
    """Heat map of ``log10`` escape time over (r2, r1); stalled cells (inf) shown in grey.

    ``overlay``: optional :func:`escape_grid_simulation` results drawn on top with
    :func:`plot_escape_points` (filled = escaped, open = stalled).
    """
    import matplotlib.pyplot as plt

    times = np.asarray(times, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    logt = np.where(np.isfinite(times), np.log10(np.where(np.isfinite(times) & (times > 0), times, 1.0)), np.nan)
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    im = ax.pcolormesh(np.asarray(r2_values), np.asarray(r1_values), np.ma.masked_invalid(logt),
                       shading="nearest", cmap=cmap)
    ax.figure.colorbar(im, ax=ax, label="log10 escape time (grey: stalls)")
    ax.set_xlabel("r2  (kappa = d^r2)")
    ax.set_ylabel("r1  (align = d^-r1)")
    if title:
        ax.set_title(title)
    if overlay is not None:
        plot_escape_points(ax, overlay)
    return ax


from ..simulation import register_stepper  # noqa: E402  (registration at import time, string form)

register_stepper(SpikedProblem, "popdyn.models.spiked_sim:SpikedStepper", engine="full")


# -- simulation points on the phase picture ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SimulatedEscape:
    r"""Online-SGD escape record at one point :math:`(r_1, r_2)` of the phase picture.

    Built by :func:`escape_grid_simulation`.

    Parameters
    ----------
    r1, r2, kappa, align, times, t_end, ode_time, m_final
        The fields, in this order (see Attributes).

    Attributes
    ----------
    r1, r2 : float
        Grid coordinates: ``align`` :math:`= d^{-r_1}`, :math:`\kappa = d^{r_2}`.
    kappa, align : float
        The resulting spike size and alignment.
    times : ndarray (R,)
        Per replica, the first time :math:`t = \eta\cdot\text{step}` at which
        :math:`|m_\Sigma| \ge` ``level`` (``inf``: not reached by ``t_end``, "stalled").
    t_end : float
        Simulated time horizon.
    ode_time : float
        Escape time of the overlap ODE from the same start (:meth:`SpikedProblem.escape_time`,
        ``inf`` when the ODE stalls), the cell value of :func:`escape_time_grid`.
    m_final : ndarray (R,)
        :math:`m_\Sigma` per replica when it stopped: at its passage step for the replicas that
        escaped (they are frozen there), at the end of the run for the others.
    """

    r1: float
    r2: float
    kappa: float
    align: float
    times: np.ndarray = dataclasses.field(repr=False)
    t_end: float
    ode_time: float
    m_final: np.ndarray = dataclasses.field(repr=False)

    @property
    def escaped_fraction(self) -> float:
        """Fraction of replicas that reached the level by ``t_end``."""
        return float(np.mean(np.isfinite(self.times)))

    @property
    def median_time(self) -> float:
        """Median escape time over replicas (``inf`` when fewer than half escaped)."""
        return float(np.median(self.times))

    @property
    def escaped(self) -> bool:
        """Majority verdict: at least half of the replicas escaped."""
        return self.escaped_fraction >= 0.5

    @property
    def ode_escaped(self) -> bool:
        """The ODE verdict on the same horizon: escape before ``t_end``."""
        return bool(self.ode_time <= self.t_end)


def escape_grid_simulation(student, teacher, d, points, flow, *, a_star: float = 1.0, replicas: int = 8,
                           t_end: float, eta: float, batch: int = 1, level: float = 0.5, init="ode",
                           rng=0) -> list[SimulatedEscape]:
    r"""Online-SGD escape at a few points :math:`(r_1, r_2)` of the phase picture of
    :func:`escape_time_grid` (finite-d ground truth for the ODE verdict).

    At each point :math:`\kappa = d^{r_2}`, ``align`` :math:`= d^{-r_1}`, ``replicas``
    independent online-SGD runs (:class:`popdyn.models.spiked_sim.SpikedStepper`, step
    ``eta``, minibatch ``batch``, fresh samples each step; :func:`popdyn.simulation.simulate` with
    a per-step ``stop``) are tracked step by step, and each
    replica's first passage of :math:`|m_\Sigma| = w^\top\Sigma u/\sqrt{w^\top\Sigma w}` through
    ``level`` is recorded in the time unit of the ODE grid, :math:`t = \eta\cdot\text{step}`
    (the SGD mean increment is :math:`-\eta\nabla R`, so this matches gradient-flow time as
    :math:`\eta \to 0`).  A replica that has not passed by ``t_end`` counts as stalled: the
    verdict is relative to the horizon, so choose ``t_end`` a few times the ODE escape times
    of the points that should escape.

    Parameters
    ----------
    student, teacher : str or Activation
    d : int
        Dimension (``>= 3``).
    points : sequence of (r1, r2)
        Grid points; ``r1 >= 0``.
    flow : {"spherical", "normalized", "preconditioned"}
    a_star : float
        Teacher sign/amplitude.
    replicas : int
        Independent runs per point (vectorised).
    t_end : float
        Time horizon (``> 0``); ``ceil(t_end / eta)`` steps at most.
    eta : float
        Step size.  The SGD noise pushes :math:`|m_\Sigma|` towards 0 at a rate
        :math:`\propto \eta\, d` per unit time, so ``eta`` must be well below
        :math:`m_0^2/d`-ish for escape points (check by halving it).
    batch : int
        Minibatch size.
    level : float in (0, 1)
        Escape level for :math:`|m_\Sigma|`.
    init : {"ode", "uniform"}
        ``"ode"``: every replica starts from the ODE grid's state
        (:meth:`SpikedProblem.initial_state`, :math:`\epsilon = d^{-1/2}` along
        :math:`\Sigma u`), so that :attr:`SimulatedEscape.ode_time` is its exact ODE
        counterpart; ``"uniform"``: independent Haar starts (typical
        :math:`m_\Sigma^2 \approx 1/d_{\rm eff}`; ``ode_time`` is still from the ODE start).
    rng : int, Generator, SeedSequence or None
        Seed; each point gets an independent spawned stream.

    Returns
    -------
    list of SimulatedEscape
        One per point, in order.

    Examples
    --------
    >>> res = escape_grid_simulation("relu", "he4", 200, [(0.0, 0.5)], "normalized", a_star=-1.0,
    ...                              replicas=4, t_end=2.0, eta=2e-3, rng=1)
    >>> res[0].escaped_fraction, res[0].ode_escaped
    (1.0, True)
    """
    from .._random import spawn_generators
    from ..simulation import simulate

    d = check_int("d", d, minimum=3)
    flow = check_choice("flow", flow, FLOWS)
    replicas = check_int("replicas", replicas, minimum=1)
    t_end = check_real("t_end", t_end, lower=0.0, lower_open=True)
    eta = check_real("eta", eta, lower=0.0, lower_open=True)
    batch = check_int("batch", batch, minimum=1)
    level = check_real("level", level, lower=0.0, upper=1.0, lower_open=True, upper_open=True)
    init = check_choice("init", init, ("ode", "uniform"))
    pts = check_finite_array("points", points, ndim=2)
    if pts.shape[1] != 2 or pts.shape[0] == 0:
        raise ValueError(f"`points` must be a non-empty sequence of (r1, r2) pairs, got shape {pts.shape}.")
    if np.any(pts[:, 0] < 0):
        raise ValueError("`points` must have r1 >= 0 (align = d^-r1 must lie in [0, 1]).")
    n_steps = int(math.ceil(t_end / eta - 1e-9))
    gens = spawn_generators(rng, pts.shape[0])
    out = []
    for (r1, r2), gen in zip(pts, gens):
        kappa, align = float(d) ** r2, float(d) ** (-r1)
        prob = SpikedProblem(student, teacher, kappa=kappa, align=align, flow=flow, d=d, a_star=a_star)
        st0 = prob.initial_state()
        ode_time = prob.escape_time(st0, level=level, t_max=max(1e12, 10 * t_end))
        sim_init = float(prob.overlaps(st0)["m"][0]) if init == "ode" else "uniform"
        traj = simulate(prob, d=d, algorithm="sgd", eta=eta, batch=batch, replicas=replicas, init=sim_init,
                        same_init=init == "ode", steps=n_steps, n_record=2, record="linear", rng=gen,
                        progress=False, max_steps=None, stop_every=1,
                        stop=lambda o: np.abs(o["m_sigma"]) >= level)
        hit = np.where(np.isnan(traj.events["stop_step"]), np.inf, traj.events["stop_step"] * eta)
        out.append(SimulatedEscape(float(r1), float(r2), kappa, align, hit, t_end, float(ode_time),
                                   traj.overlaps["m_sigma"][-1]))
    return out


def plot_escape_points(ax, results, *, level_label: bool = True, **kwargs):
    """Overlay :func:`escape_grid_simulation` results on a :func:`plot_escape_grid` axis.

    One marker per point at :math:`(r_2, r_1)`: filled = the majority of replicas escaped by
    ``t_end``, open = stalled; the escaped fraction is written next to it.  Extra keyword
    arguments go to ``ax.scatter`` (e.g. ``s``, ``marker``, ``edgecolors``).

    Parameters
    ----------
    ax : matplotlib Axes
        The axis to draw on, with :math:`r_2` horizontal and :math:`r_1` vertical (as from
        :func:`plot_escape_grid`).
    results : iterable of SimulatedEscape
        The records from :func:`escape_grid_simulation`.
    level_label : bool, optional
        Write the escaped fraction (in percent) next to each marker (default True).
    **kwargs
        Passed to ``ax.scatter``; they override the defaults ``s=70``, ``marker="o"``,
        ``edgecolors="red"``, ``linewidths=1.8``, ``zorder=5``.

    Returns
    -------
    matplotlib Axes
        ``ax``.

    Raises
    ------
    TypeError
        An element of ``results`` is not a :class:`SimulatedEscape`.
    """
    results = list(results)
    bad = [type(r).__name__ for r in results if not isinstance(r, SimulatedEscape)]
    if bad:
        raise TypeError(f"`results` must be SimulatedEscape records from escape_grid_simulation, got {bad[0]}.")
    kw = {"s": 70, "marker": "o", "edgecolors": "red", "linewidths": 1.8, "zorder": 5}
    kw.update(kwargs)
    edge = kw["edgecolors"]
    for k, res in enumerate(results):
        face = edge if res.escaped else "none"
        label = None
        if k == 0:
            label = "SGD: filled = escaped, open = stalled"
        ax.scatter([res.r2], [res.r1], facecolors=face, label=label, **kw)
        if level_label:
            ax.annotate(f"{res.escaped_fraction:.0%}", (res.r2, res.r1), textcoords="offset points",
                        xytext=(6, 6), fontsize=7, color=edge)
    return ax
