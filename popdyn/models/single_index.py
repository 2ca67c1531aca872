r"""Single-index model under spherical online SGD: the alignment ODE with its η² term.

This is the setting of Ben Arous, Gheissari and Jagannath (BAGJ, JMLR 2021, arXiv
2003.10409): one student neuron on the unit sphere learns one teacher direction from
fresh samples, and the number of samples needed to leave the equator is set by the
*information exponent* of the population loss.

Model (popdyn conventions, ``popdyn.__doc__``)
----------------------------------------------
* Data :math:`x \sim N(0, I_d)`; teacher :math:`y = a^*\sigma^*(\theta\cdot x)`, unit
  :math:`\theta`; student :math:`\sigma(w\cdot x)` with :math:`\|w\| = 1`.
* Alignment (the only order parameter) :math:`m = w\cdot\theta \in [-1, 1]`.
* Per-sample loss, with :math:`z = w\cdot x`, :math:`t = \theta\cdot x`:
  correlation :math:`\ell = -y\,\sigma(z)`; squared :math:`\ell = \tfrac12(\sigma(z) - y)^2`.
  Write :math:`\rho = -\partial\ell/\partial z` for the *force*: :math:`\rho = y\,\sigma'(z)`
  (correlation) or :math:`\rho = (y - \sigma(z))\,\sigma'(z)` (squared).
* Spherical online SGD with step :math:`\eta` and a fresh minibatch of ``B`` samples:

  .. math::

      \hat g = (I - w w^\top)\,\frac1B\sum_{b=1}^B \nabla\ell(x_b)
             = -\frac1B \sum_b \rho_b\,(x_b - z_b w), \qquad
      w \leftarrow \frac{w - \eta\hat g}{\|w - \eta\hat g\|}

  (the update of :mod:`popdyn.models.multi_index_sim` for the correlation loss).

Population quantities (Hermite/Mehler identity, theory/CONVENTIONS.md)
----------------------------------------------------------------------
:math:`(z, t)` is standard normal with correlation ``m``, so

.. math::

    \Phi(m) = E[\sigma(z)\,y] = a^*\sum_k c_k(\sigma)\,c_k(\sigma^*)\,m^k ,\qquad
    C(m) = E[\rho^2] =
    \begin{cases} E[y^2\sigma'(z)^2] & \text{correlation} \\
                  E[(\sigma(z) - y)^2\sigma'(z)^2] & \text{squared.} \end{cases}

The information exponent of the pair is the smallest ``k >= 1`` with
:math:`c_k(\sigma)c_k(\sigma^*) \ne 0` (``SingleIndexProblem.information_exponent``).

The alignment ODE (derivation)
------------------------------
Put :math:`c_b = \eta\rho_b/B`, :math:`e = (\theta - m w)/\sqrt{1-m^2}` and
:math:`s_b = e\cdot x_b = (t_b - m z_b)/\sqrt{1-m^2}`; then :math:`s_b \sim N(0,1)` is
independent of :math:`z_b`, and :math:`x_b - z_b w = s_b e + g_b` with
:math:`g_b \perp \mathrm{span}(w,\theta)`, :math:`g_b \sim N(0, I_{d-2})` there.  Exactly,

.. math::

    m' = \frac{m + D}{\sqrt{1 + N^2}}, \qquad D = \sum_b c_b (t_b - m z_b), \qquad
    N^2 = \Bigl\|\sum_b c_b (x_b - z_b w)\Bigr\|^2 = A^2 + \Bigl\|\sum_b c_b g_b\Bigr\|^2,
    \quad A = \sum_b c_b s_b .

Stein's lemma in :math:`s` gives :math:`E[\rho\,(t - mz)] = (1-m^2)\,\Phi'(m)` for both
losses (for the squared loss the extra term :math:`-E[\sigma(z)\sigma'(z)(t - mz)]`
vanishes because :math:`t - mz` is centred and independent of ``z``), and
:math:`E N^2 = \tfrac{\eta^2}{B}\bigl[(d-2)\,C(m) + E[\rho^2 s^2]\bigr]
+ \eta^2 (1 - \tfrac1B)(1-m^2)\Phi'(m)^2`.  Expanding
:math:`(1+N^2)^{-1/2} = 1 - N^2/2 + \tfrac38 N^4 - \dots`, the mean increment per step is

.. math::

    E[\Delta m] = \eta\,(1-m^2)\,\Phi'(m) - \frac{\eta^2}{2}\,\frac{(d-1)}{B}\, m\, C(m)
                  \;+\; R, \qquad

with the remainder ``R`` (what this module **drops**), exactly:

1. :math:`-\tfrac{\eta^2 m}{2B}\bigl(E[\rho^2 s^2] - C(m)\bigr)` -- order :math:`\eta^2`
   (zero when :math:`\rho` does not depend on ``s``; the :math:`(d-1)` counts the
   ``s`` direction as if it did not);
2. :math:`-\tfrac{\eta^2 m}{2}(1 - \tfrac1B)(1-m^2)\,\Phi'(m)^2` -- order :math:`\eta^2`;
3. :math:`-\tfrac12 E[D N^2] = -\tfrac{\eta^3 (d-2)}{2B^2}\sqrt{1-m^2}\,\bigl(E[\rho^3 s]
   + (B-1)\sqrt{1-m^2}\,\Phi'(m)\,C(m)\bigr) + O(\eta^3)` -- order :math:`\eta^3 d`;
4. :math:`\tfrac38 m E[N^4] + \dots` -- order :math:`\eta^4 d^2`.

Relative to the kept noise term (order :math:`\eta^2 d`) these are :math:`O(1/d)`,
:math:`O(\eta)`, :math:`O(\eta^2 d)`: with :math:`\eta = \delta/d` every dropped term is
:math:`O(\delta^2/d^2)` per step, i.e. :math:`O(1/d)` per unit of :math:`t = \mathrm{steps}/d`.
Fluctuations (the diffusion, :math:`\mathrm{Var}\,\Delta m \approx \eta^2 E[\rho^2 s^2]
(1-m^2)/B`) are not modelled: the ODE is the *mean path*.  In the search phase of
BAGJ (:math:`m \sim d^{-1/2}`) the fluctuations are as large as ``m`` itself, so the
median first-passage time differs from the ODE by an O(1) factor, while the *scaling
in d* is the ODE's (theory/bagj2021/equations.md, "Reference escape times").

*Validity of the expansion.*  It needs :math:`N^2 \approx \eta^2 d\,\rho^2/B \ll 1` on
the samples that carry :math:`C`.  For polynomial activations :math:`\rho^2` is
heavy-tailed (see the Notes of :func:`popdyn.ode.integrate`); the BAGJ step
:math:`\eta \propto d^{-p/2}` (``p >= 3``) is deep inside the valid regime.

Time units (``time_unit`` option, theory/CONVENTIONS.md)
--------------------------------------------------------
``"steps"``: ``t`` counts SGD steps.  ``"t = eta * steps"``: compared with gradient
flow (the unit of :func:`popdyn.simulate`).  ``"t = steps / d"``: the high-d scaling
with :math:`\eta = \delta/d`; then :math:`\dot m = \delta(1-m^2)\Phi' -
\tfrac{\delta^2}{2B}\tfrac{d-1}{d} m C`.  Without a step the ODE is gradient flow,
:math:`\dot m = (1-m^2)\Phi'(m)`.

The step can be given as ``eta``, as ``delta`` (:math:`\eta = \delta/d`) or as
``eta0`` with ``exponent`` (:math:`\eta = \eta_0 d^{-s}`; BAGJ's regime for
information exponent ``p >= 3`` is ``s = p/2``), see :func:`step_size`.

Computing :math:`\Phi'` and :math:`C`
-------------------------------------
* **Polynomial** student and teacher: exact.  The Hermite series of :math:`\sigma'^2`,
  :math:`y^2`, :math:`\sigma\sigma'^2`, :math:`\sigma^2\sigma'^2` come from exact
  Hermite products (``*`` of :class:`popdyn.hermite.HermiteSeries`), and the Mehler identity
  :math:`E[f(z)g(t)] = \sum_k c_k(f)c_k(g)m^k` makes :math:`\Phi'` and ``C``
  polynomials in ``m`` (power coefficients :attr:`SingleIndexProblem.drift_coefficients`
  and :attr:`SingleIndexProblem.noise_coefficients`).  Rounding only (checked against a
  tensor Gauss–Hermite rule with exact node counts in the tests).
* **Otherwise**: each pair expectation :math:`E[f(z)g(t)]` is evaluated by
  :func:`popdyn.kernels.correlation_kernel` (breakpoint-aware quadrature, 1e-10) at
  Chebyshev nodes in :math:`\varphi = \arcsin m` and interpolated.  In :math:`\varphi`
  the kernels of kinked activations are smooth (the arc-cosine kernel is
  :math:`(\cos\varphi + (\pi/2+\varphi)\sin\varphi)/2\pi`), so the interpolant converges
  geometrically: 16 nodes give 1e-12 for ReLU pairs, where interpolation in ``m``
  converges only like :math:`n^{-3}`.  The node count doubles (16 .. ``MAX_CHEB_NODES``)
  until the interpolant matches fresh quadrature values at interleaved check points to
  ``NUMERIC_TOL`` (times ``max(1, max|value|)``); otherwise :class:`NumericalError`
  reports the error reached.  The achieved estimates are in ``describe()``.

References
----------
G. Ben Arous, R. Gheissari, A. Jagannath, "Online stochastic gradient descent on
non-convex losses from high-dimensional inference", JMLR 22(106), 2021 (arXiv
2003.10409); derivations and reference values in theory/bagj2021/equations.md.

Examples
--------
>>> prob = SingleIndexProblem("he3", "he3")
>>> prob.information_exponent, float(prob.dphi(0.5)), round(float(prob.noise_moment(0.0)), 12)
(3, 0.75, 3.0)
>>> round(escape_samples(prob, 32, eta=0.5 * 32 ** -1.5))   # reference: 783 (theory/bagj2021)
783
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._validation import check_choice, check_int, check_real, check_time_unit
from ..activations import Activation, get_activation
from ..errors import NumericalError
from ..simulation import register_stepper

__all__ = [
    "SingleIndexProblem",
    "step_size",
    "escape_samples",
    "LOSSES",
    "ODE_TIME_UNITS",
    "ESCAPE_METHODS",
    "NUMERIC_TOL",
]

#: Valid values of ``loss``.
LOSSES = ("correlation", "squared")
#: Time units of the ODE with a step size (first one: the unit of :func:`popdyn.simulate`).
ODE_TIME_UNITS = ("t = eta * steps", "t = steps / d", "steps")
_TIME_ALIASES = {"eta*steps": "t = eta * steps", "steps/d": "t = steps / d", "steps": "steps"}
_GF_UNIT = "gradient-flow time t"
#: Methods of :func:`escape_samples`.
ESCAPE_METHODS = ("ode", "quadrature", "leading")
#: Target accuracy of the Chebyshev interpolants used for non-polynomial activations,
#: relative to ``max(1, max|value|)``: well below the O(1/d) terms the ODE drops for any
#: d < 1e8, and 100x above the 1e-10 accuracy of the quadrature that feeds them.
NUMERIC_TOL = 1e-8
#: Largest number of Chebyshev nodes tried (doubling from ``_CHEB_START``).  Smooth and
#: piecewise-smooth activations converge with 16-32 nodes (module docstring).
MAX_CHEB_NODES = 256
_CHEB_START = 16
#: ``|c_k(sigma) c_k(sigma*)|`` above this counts as non-zero for the information
#: exponent (numeric Hermite coefficients are accurate to 1e-12).
IE_TOL = 1e-10
#: Largest degree searched for the information exponent of non-polynomial pairs.
IE_MAX_DEGREE = 30
#: During integration, ``|m| - 1`` above this means the solver left [-1, 1].
M_DRIFT_TOL = 1e-6


def _unit(time_unit):
    return check_time_unit(time_unit, ODE_TIME_UNITS, _TIME_ALIASES)


def step_size(d, *, eta=None, delta=None, eta0=None, exponent=None) -> float:
    r"""Resolve the SGD step :math:`\eta` from exactly one of three parametrisations.

    ``eta`` (as is), ``delta`` (:math:`\eta = \delta/d`, the high-d scaling) or ``eta0``
    with ``exponent`` (:math:`\eta = \eta_0 d^{-s}`; BAGJ take :math:`s = p/2` for
    information exponent :math:`p \ge 3`, theory/bagj2021/equations.md).

    Parameters
    ----------
    d : int
        Input dimension, ``d >= 2``.
    eta : float, optional
        The step itself, ``eta > 0``.
    delta : float, optional
        Scaled step :math:`\delta > 0`, giving :math:`\eta = \delta/d`.
    eta0 : float, optional
        Prefactor :math:`\eta_0 > 0` of :math:`\eta = \eta_0 d^{-s}`; needs ``exponent``.
    exponent : float, optional
        The exponent :math:`s` (only with ``eta0``).

    Returns
    -------
    float
        The step :math:`\eta > 0` (finite).

    Raises
    ------
    ValueError
        Not exactly one of ``eta``, ``delta``, ``eta0`` given; ``exponent`` without ``eta0``
        or ``eta0`` without ``exponent``; a non-positive value or a non-finite resulting step.

    Examples
    --------
    >>> step_size(64, eta0=0.5, exponent=1.5)
    0.0009765625
    >>> step_size(100, delta=2.0)
    0.02
    """
    d = check_int("d", d, minimum=2)
    given = [name for name, v in (("eta", eta), ("delta", delta), ("eta0", eta0)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of `eta`, `delta` (eta = delta/d) and `eta0` (eta = eta0 d^-exponent); "
                         f"got {given or 'none'}.")
    if exponent is not None and eta0 is None:
        raise ValueError("`exponent` goes with `eta0` (eta = eta0 * d**-exponent).")
    if eta is not None:
        return check_real("eta", eta, lower=0.0, lower_open=True)
    if delta is not None:
        return check_real("delta", delta, lower=0.0, lower_open=True) / d
    eta0 = check_real("eta0", eta0, lower=0.0, lower_open=True)
    if exponent is None:
        raise ValueError("`eta0` needs `exponent` (eta = eta0 * d**-exponent).")
    exponent = check_real("exponent", exponent)
    eta = eta0 * float(d) ** (-exponent)
    if not eta > 0 or not math.isfinite(eta):
        raise ValueError(f"eta = eta0 * d**-exponent = {eta} is not a positive finite step.")
    return eta


# --------------------------------------------------------------------------------------
# Chebyshev tables in phi = arcsin(m) for non-polynomial activations
# --------------------------------------------------------------------------------------
def _cheb_nodes(n: int) -> np.ndarray:
    """First-kind Chebyshev nodes on (-1, 1) (interior: |m| = 1 is never evaluated)."""
    return np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _check_points(n: int) -> np.ndarray:
    """Interior second-kind points interleaved with the first-kind nodes."""
    return np.cos(np.pi * np.arange(1, n) / n)


def _build_table(fn, what: str, tol: float = NUMERIC_TOL):
    r"""Chebyshev coefficients (rows) of ``fn(m) -> (r, n)`` in ``x = 2 arcsin(m)/pi``.

    Interpolates at ``n`` first-kind nodes and measures the error at the ``n - 1``
    second-kind points between them (fresh evaluations of ``fn``); doubles ``n`` until
    the error is below ``tol * max(1, max|value|)``.  Returns ``(coefficients (r, n),
    error_estimate, n)``; the estimate is the largest deviation at the check points.
    """
    from numpy.polynomial import chebyshev as cheb

    n = _CHEB_START
    while True:
        x = _cheb_nodes(n)
        vals = np.atleast_2d(fn(np.sin(0.5 * np.pi * x)))
        coef = np.array([cheb.chebfit(x, v, n - 1) for v in vals])
        xc = _check_points(n)
        check = np.atleast_2d(fn(np.sin(0.5 * np.pi * xc)))
        approx = np.array([cheb.chebval(xc, c) for c in coef])
        scale = max(1.0, float(np.max(np.abs(check))), float(np.max(np.abs(vals))))
        err = float(np.max(np.abs(approx - check)))
        if err <= tol * scale:
            return coef, err, n
        if 2 * n > MAX_CHEB_NODES:
            raise NumericalError(
                f"the Chebyshev table of {what} did not converge: error estimate {err:.3g} with {n} nodes > "
                f"tolerance {tol * scale:.3g}. The activations may be too irregular at |m| -> 1 (a jump in both "
                "student and teacher); use a smoother or polynomial activation."
            )
        n *= 2


def _cheb_eval(coef: np.ndarray, m) -> np.ndarray:
    from numpy.polynomial import chebyshev as cheb

    m = np.asarray(m, dtype=float)
    x = (2.0 / np.pi) * np.arcsin(np.clip(m, -1.0, 1.0))
    return cheb.chebval(x, coef)


def _power_eval(coef: np.ndarray, m) -> np.ndarray:
    """Power series ``sum_k coef[k] m^k`` (Horner), vectorised over ``m``."""
    m = np.asarray(m, dtype=float)
    out = np.zeros_like(m)
    for c in coef[::-1]:
        out = out * m + c
    return out


# --------------------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------------------
def alignment_state(m0) -> dict:
    """ODE state of a one-neuron model: validate ``m0`` (one real number in [-1, 1]) and
    return ``{"m": 0-d array}`` (shared by the single-index and batch-reuse models)."""
    arr = np.asarray(m0, dtype=float) if not isinstance(m0, (str, bytes)) else None
    if arr is None or arr.size != 1:
        raise ValueError(f"`m0` must be a single alignment in [-1, 1], got {m0!r}.")
    m = check_real("m0", float(arr.reshape(())), lower=-1.0, upper=1.0)
    return {"m": np.array(m)}


class AlignmentODE:
    """ODE-protocol pieces shared by the one-neuron models (state ``m`` in [-1, 1]):
    :class:`SingleIndexProblem` and :class:`popdyn.models.reuse.ReuseProblem`."""

    #: One scalar state, the alignment ``m`` (trajectory overlap of shape ``(n_times, 1)``).
    ode_state_names = ("m",)

    def ode_initial_state(self, m0) -> dict:
        """Validate ``m0`` (a real number in [-1, 1]) and return ``{"m": 0-d array}``."""
        return alignment_state(m0)

    def ode_unit_speed(self, deriv) -> np.ndarray:
        """``|dm/dt|``, shape ``(1,)``."""
        return np.atleast_1d(np.abs(np.asarray(deriv["m"], dtype=float)))

    def ode_check_state(self, state) -> str | None:
        """A reason when ``|m|`` exceeds 1 by more than ``M_DRIFT_TOL``."""
        m = float(np.asarray(state["m"]))
        if abs(m) > 1.0 + M_DRIFT_TOL:
            return f"the alignment left [-1, 1] (m = {m:.9g}); tighten `rtol`"
        return None


@dataclasses.dataclass(frozen=True, eq=False)
class SingleIndexProblem(AlignmentODE):
    r"""One student neuron on the sphere learning :math:`y = a^*\sigma^*(\theta\cdot x)`.

    See the module docstring for the model, the ODE and its derivation.

    Parameters
    ----------
    student, teacher : str or Activation
        :math:`\sigma` and :math:`\sigma^*` (anything :func:`popdyn.get_activation` takes).
    loss : {"correlation", "squared"}
        Per-sample loss :math:`-y\sigma(w\cdot x)` or :math:`\tfrac12(\sigma(w\cdot x) - y)^2`.
    a_star : float
        Teacher amplitude :math:`a^*` (non-zero).

    Attributes
    ----------
    information_exponent : int or None
        Smallest ``k >= 1`` with :math:`c_k(\sigma)c_k(\sigma^*) \ne 0` (``None`` if none up
        to degree ``IE_MAX_DEGREE``).
    gamma : ndarray
        :math:`\gamma_k = a^* c_k(\sigma)c_k(\sigma^*)`, so :math:`\Phi(m) = \sum_k\gamma_k m^k`
        (exact for polynomials; to degree ``IE_MAX_DEGREE`` otherwise).
    exact : bool
        True when both activations are polynomials (exact route).

    Examples
    --------
    >>> p = SingleIndexProblem("he2", "he2", loss="squared", a_star=2.0)
    >>> p.information_exponent, float(p.drift(0.5))       # (1 - m^2) Phi'(m), Phi = a* m^2
    (2, 1.5)
    """

    student: Activation
    teacher: Activation
    loss: str = "correlation"
    a_star: float = 1.0

    def __post_init__(self):
        s = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        s("student", get_activation(self.student))
        s("teacher", get_activation(self.teacher))
        s("loss", check_choice("loss", self.loss, LOSSES))
        a = check_real("a_star", self.a_star)
        if a == 0.0:
            raise ValueError("`a_star` must be non-zero (a zero teacher has nothing to learn).")
        s("a_star", a)
        exact = self.student.is_polynomial and self.teacher.is_polynomial
        s("exact", exact)
        deg = max(self.student.degree, self.teacher.degree) if exact else IE_MAX_DEGREE
        gamma = a * self.student.coefficients(deg) * self.teacher.coefficients(deg)
        gamma.setflags(write=False)
        s("gamma", gamma)
        nz = [k for k in range(1, gamma.size) if abs(gamma[k]) > IE_TOL]
        s("information_exponent", nz[0] if nz else None)
        s("_cache", {})

    # -- population quantities -------------------------------------------------------------
    @property
    def drift_coefficients(self) -> np.ndarray:
        r"""Power coefficients of :math:`\Phi'(m)` (exact route only; lowest first)."""
        self._require_exact("drift_coefficients")
        k = np.arange(1, self.gamma.size)
        return k * self.gamma[1:] if self.gamma.size > 1 else np.zeros(1)

    @property
    def noise_coefficients(self) -> np.ndarray:
        r"""Power coefficients of :math:`C(m)` (exact route only; lowest first)."""
        self._require_exact("noise_coefficients")
        if "noise_poly" not in self._cache:
            self._cache["noise_poly"] = self._noise_polynomial()
        return self._cache["noise_poly"]

    def _require_exact(self, what):
        if not self.exact:
            raise ValueError(f"`{what}` exists only for polynomial student and teacher "
                             f"(got {self.student.name!r}, {self.teacher.name!r}).")

    def _series(self):
        from ..hermite import HermiteSeries

        s = HermiteSeries(self.student.coefficients(self.student.degree))
        t = HermiteSeries(self.teacher.coefficients(self.teacher.degree)) * self.a_star
        return s, s.derivative(), t

    def _noise_polynomial(self) -> np.ndarray:
        s, ds, y = self._series()
        ds2 = ds * ds
        pairs = [(ds2, y * y, 1.0)]
        const = 0.0
        if self.loss == "squared":
            pairs.append((s * ds2, y, -2.0))
            const = float((s * s * ds2).coefficients[0])
        n = max(min(f.coefficients.size, g.coefficients.size) for f, g, _ in pairs)
        out = np.zeros(max(n, 1))
        for f, g, w in pairs:
            k = min(f.coefficients.size, g.coefficients.size)
            out[:k] += w * f.coefficients[:k] * g.coefficients[:k]
        out[0] += const
        return out

    def _numeric_tables(self, which: str):
        """Cached Chebyshev tables: ``"phi"`` -> rows (Phi, Phi'); ``"noise"`` -> row C."""
        key = "table_" + which
        if key in self._cache:
            return self._cache[key]
        from ..hermite import gaussian_expectation
        from ..kernels import correlation_kernel

        sig, tea, a = self.student, self.teacher, self.a_star
        if which == "phi":
            def fn(m):
                kv = correlation_kernel(sig, tea, m, derivatives=True)
                return np.stack([a * np.asarray(kv.value), a * np.asarray(kv.d_rho)])
            table = _build_table(fn, f"Phi(m) for ({sig.name}, {tea.name})")
        else:
            bps_s = sig.breakpoints
            ds2 = get_activation(lambda z: sig.derivative(z) ** 2, breakpoints=bps_s, name=f"({sig.name})'^2")
            y2 = get_activation(lambda t: tea(t) ** 2, breakpoints=tea.breakpoints, name=f"({tea.name})^2")
            terms = [(ds2, y2, a * a)]
            const = 0.0
            if self.loss == "squared":
                sds2 = get_activation(lambda z: sig(z) * sig.derivative(z) ** 2, breakpoints=bps_s,
                                      name=f"{sig.name}*({sig.name})'^2")
                terms.append((sds2, tea, -2.0 * a))
                const = gaussian_expectation(lambda z: (sig(z) * sig.derivative(z)) ** 2, breakpoints=bps_s,
                                             name=f"({sig.name} {sig.name}')^2")[0]

            def fn(m):
                out = np.full(np.shape(m), const)
                for f, g, w in terms:
                    out = out + w * np.asarray(correlation_kernel(f, g, m))
                return out[None, :]
            table = _build_table(fn, f"C(m) for ({sig.name}, {tea.name}, {self.loss} loss)")
        self._cache[key] = table
        return table

    def phi(self, m) -> np.ndarray:
        r""":math:`\Phi(m) = E[\sigma(z)\,y] = a^*\sum_k c_k(\sigma)c_k(\sigma^*)m^k`."""
        if self.exact:
            return _power_eval(np.asarray(self.gamma), m)
        return _cheb_eval(self._numeric_tables("phi")[0][0], m)

    def dphi(self, m) -> np.ndarray:
        r""":math:`\Phi'(m) = a^* E[\sigma'(z)\sigma^{*\prime}(t)]`."""
        if self.exact:
            return _power_eval(self.drift_coefficients, m)
        return _cheb_eval(self._numeric_tables("phi")[0][1], m)

    def drift(self, m) -> np.ndarray:
        r"""Mean force along the sphere, :math:`E[\rho\,(t - mz)] = (1 - m^2)\,\Phi'(m)`."""
        m = np.asarray(m, dtype=float)
        return (1.0 - m * m) * self.dphi(m)

    def noise_moment(self, m) -> np.ndarray:
        r""":math:`C(m) = E[\rho^2]`: :math:`E[y^2\sigma'^2]` or :math:`E[(\sigma - y)^2\sigma'^2]`."""
        if self.exact:
            return _power_eval(self.noise_coefficients, m)
        return _cheb_eval(self._numeric_tables("noise")[0][0], m)

    def population_loss(self, m) -> np.ndarray:
        r"""Population loss at alignment ``m``: :math:`-\Phi(m)` (correlation) or
        :math:`\tfrac12(E\sigma^2 - 2\Phi(m) + a^{*2}E\sigma^{*2})` (squared)."""
        ph = self.phi(m)
        if self.loss == "correlation":
            return -ph
        return 0.5 * (self.student.second_moment - 2.0 * ph + self.a_star ** 2 * self.teacher.second_moment)

    def step_increment(self, m, *, eta, d, batch=1) -> np.ndarray:
        r"""Mean increment of ``m`` per SGD step (module docstring, to the kept order):

        .. math:: \eta(1-m^2)\Phi'(m) - \frac{\eta^2 (d-1)}{2B}\, m\, C(m).
        """
        eta = check_real("eta", eta, lower=0.0, lower_open=True)
        d = check_int("d", d, minimum=2)
        batch = check_int("batch", batch, minimum=1)
        m = np.asarray(m, dtype=float)
        return eta * self.drift(m) - (eta * eta * (d - 1) / (2.0 * batch)) * m * self.noise_moment(m)

    # -- per-sample quantities (simulators, Monte Carlo) ----------------------------------
    def labels(self, t) -> np.ndarray:
        r"""Teacher labels :math:`y = a^*\sigma^*(t)` for projections :math:`t = \theta\cdot x`."""
        return self.a_star * self.teacher(t)

    def force(self, z, y) -> np.ndarray:
        r"""Per-sample force :math:`\rho = -\partial\ell/\partial z`: :math:`y\sigma'(z)` or
        :math:`(y - \sigma(z))\sigma'(z)`."""
        z = np.asarray(z, dtype=float)
        if self.loss == "correlation":
            return y * self.student.derivative(z)
        return (y - self.student(z)) * self.student.derivative(z)

    # -- ODE protocol (popdyn.ode) ----------------------------------------------------------
    #: Name recorded in ``Trajectory.model``.
    ode_model = "single_index"

    def ode_validate_options(self, *, eta=None, d=None, batch=1, delta=None, eta0=None, exponent=None,
                             time_unit=None) -> dict:
        """Resolve the step (``eta`` / ``delta`` / ``eta0`` + ``exponent``), ``d``, ``batch`` and the time unit."""
        batch = check_int("batch", batch, minimum=1)
        unit = _unit(time_unit)
        if eta is None and delta is None and eta0 is None:
            if exponent is not None:
                raise ValueError("`exponent` goes with `eta0` (eta = eta0 * d**-exponent).")
            if d is not None:
                raise ValueError("`d` was given without a step: pass `eta`, `delta` or `eta0` for online SGD "
                                 "(or neither for gradient flow).")
            if unit is not None:
                raise ValueError(f"`time_unit` {unit!r} needs a step size; gradient flow runs in its own time.")
            return {"eta": None, "d": None, "batch": batch, "scale": 1.0, "time_unit": _GF_UNIT}
        if d is None:
            raise ValueError("`d` is required with a step size (the eta^2 term is proportional to d - 1).")
        d = check_int("d", d, minimum=2)
        eta_v = step_size(d, eta=eta, delta=delta, eta0=eta0, exponent=exponent)
        if unit is None:
            unit = "t = steps / d" if delta is not None else ("steps" if eta0 is not None else "t = eta * steps")
        scale = {"steps": 1.0, "t = eta * steps": 1.0 / eta_v, "t = steps / d": float(d)}[unit]
        out = {"eta": eta_v, "d": d, "batch": batch, "scale": scale, "time_unit": unit}
        if delta is not None:
            out["delta"] = float(delta)
        if eta0 is not None:
            out["eta0"], out["exponent"] = float(eta0), float(exponent)
        return out

    def ode_time_unit(self, *, time_unit=_GF_UNIT, **_) -> str:
        """The resolved time unit (``"gradient-flow time t"`` without a step)."""
        return time_unit

    def ode_rhs(self, t, state, *, eta=None, d=None, batch=1, scale=1.0, **_) -> dict:
        r""":math:`\dot m` = (steps per unit time) x mean increment per step; gradient flow
        :math:`(1-m^2)\Phi'(m)` without a step.  ``t`` is unused (autonomous)."""
        m = state["m"]
        if eta is None:
            return {"m": self.drift(m)}
        return {"m": scale * self.step_increment(m, eta=eta, d=d, batch=batch)}

    def ode_escape_bound(self) -> tuple:
        """``(1, reason)``: the alignment of unit vectors never exceeds 1."""
        return 1.0, "the alignment m = w.theta of unit vectors is at most 1"

    def ode_escape_observable(self, state) -> np.ndarray:
        """``m`` itself, shape ``(1,)`` (escape = reaching ``m >= level``)."""
        return np.atleast_1d(np.asarray(state["m"], dtype=float))

    def describe(self) -> dict:
        """JSON-friendly parameters (for results' ``meta``)."""
        out = {"model": "single_index", "student": self.student.name, "teacher": self.teacher.name,
               "loss": self.loss, "a_star": self.a_star, "information_exponent": self.information_exponent,
               "method": "polynomial" if self.exact else "chebyshev"}
        if not self.exact:
            out["numeric_error"] = {k[len("table_"):]: v[1] for k, v in self._cache.items() if k.startswith("table_")}
        return out


# --------------------------------------------------------------------------------------
# escape sample counts
# --------------------------------------------------------------------------------------
def _increment_root(problem, m_lo, m_hi, eta, d, batch):
    """First m in [m_lo, m_hi] where the mean increment is <= 0, or None (grid + bisection)."""
    grid = np.linspace(m_lo, m_hi, 2001)
    F = problem.step_increment(grid, eta=eta, d=d, batch=batch)
    bad = np.flatnonzero(F <= 0.0)
    if bad.size == 0:
        return None
    return float(grid[bad[0]])


def escape_samples(problem: SingleIndexProblem, d, *, eta, batch=1, m0=None, m_target=0.5, method="ode",
                   rtol=1e-10) -> float:
    r"""Predicted number of **samples** (``batch * steps``) for ``m`` to go from ``m0`` to ``m_target``.

    Parameters
    ----------
    problem : SingleIndexProblem
    d : int
        Dimension (``>= 2``).
    eta : float
        Step size (see :func:`step_size` for :math:`\delta/d` and :math:`\eta_0 d^{-s}`).
    batch : int
        Minibatch size ``B``; samples = ``B`` x steps.
    m0 : float, optional
        Initial alignment, default :math:`d^{-1/2}` (the typical overlap of a random start).
    m_target : float
        Level to reach, in (0, 1] (default 1/2, "weak recovery"; the mean path reaches ``m = 1``
        only in the ``"leading"`` closed form, the other methods return ``inf`` there).
    method : {"ode", "quadrature", "leading"}
        ``"ode"``: :func:`popdyn.integrate` of the alignment ODE in ``steps`` with an escape
        event (DOP853, ``rtol``).  ``"quadrature"``: the same hitting time as the 1-D integral
        :math:`\int_{m_0}^{m_1} dm/F(m)`, ``F`` the mean increment per step (an independent
        route).  ``"leading"``: the closed form of the ODE with :math:`\Phi'` and ``C``
        replaced by their lowest-order terms, :math:`F \approx a\,m^{p-1} - b\,m` with
        :math:`a = \eta p\gamma_p`, :math:`b = \eta^2 (d-1) C(0)/(2B)`, ``p`` the information
        exponent (Notes).
    rtol : float
        Tolerance of the ``"ode"``/``"quadrature"`` routes.

    Returns
    -------
    float
        Samples to reach ``m_target``; ``inf`` when the mean path never gets there (the
        :math:`\eta^2` contraction balances the drift below ``m_target``, or the drift
        points away); ``0`` when ``m0 >= m_target``.

    Notes
    -----
    Closed forms of the ``"leading"`` route (``B`` x steps; :math:`u = m^{p-2}`):

    .. math::

        p = 1:\; \frac1b\ln\frac{a - b m_0}{a - b m_1}, \qquad
        p = 2:\; \frac{\ln(m_1/m_0)}{a - b}, \qquad
        p \ge 3:\; \frac{1}{(p-2)\,b}\ln\frac{a - b/u_1}{a - b/u_0}.

    As :math:`b \to 0` and :math:`m_1 \to \infty` the last is
    :math:`m_0^{2-p}/(\eta p (p-2)\gamma_p)`; with :math:`\eta = \eta_0 d^{-p/2}`,
    :math:`m_0 = d^{-1/2}` and :math:`\gamma_p = 1` this is the leading-order
    :math:`d^{p-1}/(\eta_0 p(p-2))` of theory/bagj2021/equations.md.  With :math:`\eta = \delta/d` the ``p = 2`` and
    ``p = 1`` forms grow like :math:`d\log d` and ``d``: the BAGJ sample complexities.

    Examples
    --------
    >>> prob = SingleIndexProblem("he3", "he3")
    >>> [round(escape_samples(prob, d, eta=0.5 * d ** -1.5)) for d in (64, 128, 256)]   # theory/bagj2021 references
    [3008, 11954, 48042]
    """
    from ..ode import integrate

    if not isinstance(problem, SingleIndexProblem):
        raise TypeError(f"`problem` must be a SingleIndexProblem, got {type(problem).__name__}.")
    d = check_int("d", d, minimum=2)
    eta = check_real("eta", eta, lower=0.0, lower_open=True)
    batch = check_int("batch", batch, minimum=1)
    m0 = 1.0 / math.sqrt(d) if m0 is None else check_real("m0", m0, lower=-1.0, upper=1.0)
    m1 = check_real("m_target", m_target, lower=0.0, upper=1.0, lower_open=True)
    method = check_choice("method", method, ESCAPE_METHODS)
    rtol = check_real("rtol", rtol, lower=0.0, lower_open=True)
    if m0 >= m1:
        return 0.0
    if method == "leading":
        return batch * _leading_steps(problem, d, eta, batch, m0, m1)
    if _increment_root(problem, m0, m1, eta, d, batch) is not None:
        return math.inf
    from scipy.integrate import quad

    def inv(m):
        return 1.0 / float(problem.step_increment(m, eta=eta, d=d, batch=batch))

    steps_q = quad(inv, m0, m1, epsabs=0.0, epsrel=max(rtol, 1e-13), limit=400)[0]
    if method == "quadrature":
        return batch * steps_q
    traj = integrate(problem, m0, 1.5 * steps_q + 10.0, eta=eta, d=d, batch=batch, escape_level=m1,
                     options={"time_unit": "steps"}, n_times=3, rtol=rtol, atol=1e-14)
    hit = float(traj.events["escape"][0])
    if not math.isfinite(hit):
        raise NumericalError(f"the ODE did not reach m = {m1} by {1.5 * steps_q + 10:.6g} steps although the "
                             f"quadrature route predicts {steps_q:.6g}; tighten `rtol`.")
    return batch * hit


def _leading_steps(problem, d, eta, batch, m0, m1) -> float:
    p = problem.information_exponent
    if p is None:
        return math.inf
    g = float(problem.gamma[p])
    a = eta * p * g
    b = eta * eta * (d - 1) * float(problem.noise_moment(0.0)) / (2.0 * batch)
    if p == 1:
        if a - b * m1 <= 0 or a - b * m0 <= 0:
            return math.inf
        return (m1 - m0) / a if b == 0 else math.log((a - b * m0) / (a - b * m1)) / b
    if m0 <= 0:
        return math.inf  # m = 0 is a fixed point of the leading-order mean path for p >= 2
    if p == 2:
        return math.log(m1 / m0) / (a - b) if a > b else math.inf
    u0, u1 = m0 ** (p - 2), m1 ** (p - 2)
    if a * u0 <= b:
        return math.inf
    if b == 0:
        return (1.0 / u0 - 1.0 / u1) / ((p - 2) * a)
    return math.log((a - b / u1) / (a - b / u0)) / ((p - 2) * b)


register_stepper(SingleIndexProblem, "popdyn.models.single_index_sim:SingleIndexFullStepper", engine="full")
register_stepper(SingleIndexProblem, "popdyn.models.single_index_sim:SingleIndexExactStepper", engine="exact")
