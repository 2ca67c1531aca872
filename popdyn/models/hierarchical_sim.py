r"""The three-layer network of arXiv 2311.13774 in NumPy: layer-wise training, end-to-end
gradient descent for contrast, and the kernel baseline.

Network
-------
.. math::

    h_\theta(x) = \hat p(x) + c^\top \sigma_2\big(a\,\hat p(x) + b\big) + c_0, \qquad
    \hat p(x) = u^\top\sigma_1(Vx + s) + u_0,

with a bottleneck (the scalar learned feature :math:`\hat p`) and a residual connection, as
in the paper (its form; the normalisations are ours, ``theory/wang2023/equations.md``,
"Reconstruction"): :math:`\sigma_1` a polynomial of degree exactly :math:`k` (default
:math:`h_k`), :math:`\sigma_2 = \mathrm{ReLU}`, :math:`m_1` first-layer and :math:`m_2`
second-layer units, :math:`u_0, c_0` output biases.  The rows of :math:`V` are uniform on the
sphere of radius :math:`2^{-1/2}` and :math:`s_j \sim N(0, 1/2)`, so every pre-activation
:math:`v_j\cdot x + s_j` is :math:`N(0, 1)` and the features have :math:`E[\sigma_1^2] = 1`
for :math:`\sigma_1 = h_k`; the random biases make the span of the :math:`m_1` features all
polynomials of degree :math:`\le k` once :math:`m_1 \ge D_k(d) = \binom{d+k}{k}`.

Layer-wise training (:func:`train_layerwise`, :func:`layerwise_curve`)
----------------------------------------------------------------------
* **Stage 1** (dataset :math:`D_1`, :math:`n_1` samples): :math:`V, s` random and frozen,
  :math:`c = 0`; :math:`(u, u_0)` by ridge regression of :math:`y` on the features
  (:class:`popdyn.readout.RidgeMoments`: per-sample mean squared error
  :math:`+\ \lambda_1\|u\|^2`, unpenalised :math:`u_0`; features have unit variance, so
  :math:`\lambda_1` is relative).  The solution of the (convex) stage-1 problem is what
  gradient descent on :math:`u` converges to, so it is computed in closed form.
* **Stage 2** (fresh :math:`D_2`, :math:`n_2` samples, independent of :math:`d`): the 1-D
  random ReLU features :math:`\sigma_2(a_j\tilde p + b_j)` of the standardised feature
  :math:`\tilde p = (\hat p - \mu)/\tau` (:math:`\mu, \tau` the mean and spread of
  :math:`\hat p` on :math:`D_2`), :math:`a_j = \pm 1`, :math:`b_j \sim U[-\beta, \beta]`;
  :math:`(c, c_0)` by ridge regression of the residual :math:`y - \hat p`.  Stored in the
  paper's form, :math:`a_j \leftarrow a_j/\tau`, :math:`b_j \leftarrow b_j - a_j\mu/\tau`.

Tracked against :math:`n_1`: the test correlation of :math:`\hat p` with :math:`p` and the
relative test error :math:`E[(h_\theta - y)^2]/\mathrm{Var}(y)` of the whole network.  The
curves reuse nested prefixes of one pool of samples (ridge sufficient statistics accumulate),
so a whole curve costs one fit at the largest :math:`n_1`.

End-to-end GD (:func:`train_end_to_end`)
----------------------------------------
Full-batch gradient descent on all of :math:`V, s, u, u_0, a, b, c, c_0` for
:math:`\tfrac12 E_n[(h_\theta - y)^2]`, from :math:`u = 0, c = 0` (hand-written backward
pass, checked against finite differences in the tests); the step on :math:`(u, u_0)` is
divided by the top eigenvalue of the initial feature covariance (the curvature of the loss
in :math:`u`), the others use ``lr`` as is.

Kernel baseline (:func:`kernel_curve`)
--------------------------------------
Kernel ridge regression with the inner-product kernel
:math:`K(x, x') = (1 + x\cdot x'/d)^{m}`, :math:`m = kq` by default, whose RKHS is exactly the
polynomials of degree :math:`\le m` (so :math:`h` lies in it), fitted by scikit-learn's
:class:`~sklearn.kernel_ridge.KernelRidge` (``kernel="precomputed"``; objective
:math:`\|y - Kc\|^2 + n\lambda\,c^\top K c`, i.e. per-sample ridge :math:`\lambda`).  It needs
:math:`n \propto D_{kq}(d)` samples, the network :math:`n_1 \propto D_k(d)`
(:mod:`popdyn.models.hierarchical`).

Sample complexity (:func:`samples_to_reach`, :func:`sample_exponents`)
----------------------------------------------------------------------
:math:`n^*` is where a replica's test-error curve last crosses a level from above
(log-log interpolation between grid points); the exponent is the least-squares slope of
:math:`\log n^*` against :math:`\log d`, fitted per replica, with the standard error of the
replica mean.

References
----------
Z. Wang, E. Nichani, J. D. Lee, arXiv 2311.13774 (ICLR 2024): the architecture and the
layer-wise algorithm (abstract; seed summary in ``theory/wang2023/equations.md``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._random import as_generator, seed_record
from .._validation import check_int, check_real
from ..errors import NumericalError
from .hierarchical import HierarchicalProblem, dimension_slope

__all__ = ["ThreeLayerNetwork", "Curve", "LayerwiseResult", "EndToEndResult", "ExponentStudy", "init_network",
           "fit_stage1",
           "train_layerwise", "layerwise_curve", "kernel_curve", "train_end_to_end", "samples_to_reach",
           "fit_exponent", "sample_exponents", "DEFAULT_M1_FACTOR", "DEFAULT_M2", "DEFAULT_N2", "DEFAULT_RIDGE1",
           "DEFAULT_RIDGE2", "DEFAULT_KERNEL_RIDGE", "DEFAULT_N_TEST", "DEFAULT_LR", "STAGE2_BIAS_RANGE",
           "loss_and_gradients"]

#: m1 = ceil(DEFAULT_M1_FACTOR * D_k(d)) by default: more features than the dimension of the
#: degree-<=k polynomials, so that the random features span them all (the paper's
#: m1 ~ d^(k + alpha) > d^k).
DEFAULT_M1_FACTOR = 2.0
#: Stage-2 ReLU units: 16-64 give the same test errors at n2 = 500-4000 (measured; 16 is
#: better at n2 <= 300, 64 at n2 = 4000).
DEFAULT_M2 = 32
#: Stage-2 samples (fresh, independent of d: the paper's O~(1)); 500 gives the test errors of
#: 4000 within the replica spread at d = 8, 12 (measured).
DEFAULT_N2 = 500
#: Stage-1 ridge, relative to the unit feature variance: small enough that the fit is least
#: squares in the degree-<=k span for n1 > D_k (the regime of the stage-1 law), large enough to
#: keep the normal equations of the m1 > D_k collinear features solvable (condition ~ 1/ridge).
DEFAULT_RIDGE1 = 1e-6
#: Stage-2 ridge on the 1-D ReLU features (unit-scale inputs).
DEFAULT_RIDGE2 = 1e-4
#: Kernel ridge (per sample): near-interpolation, the best choice for a noiseless target in the
#: RKHS; the kernel matrix has entries ~2^m, so 1e-8 keeps its solve well conditioned.
DEFAULT_KERNEL_RIDGE = 1e-8
#: End-to-end GD step: the training loss decreases monotonically at d = 6, n = 1500 for 300 steps
#: (measured; 0.05 learns faster but with loss spikes, 0.005 monotonically but slowly).
DEFAULT_LR = 0.02
#: Test samples of the reported errors and correlations.
DEFAULT_N_TEST = 4000
#: Stage-2 biases b ~ U[-beta, beta] on the standardised feature: covers +-3 standard deviations.
STAGE2_BIAS_RANGE = 3.0
#: Ridge solves accumulate features in chunks of at most this many floats (memory bound).
_CHUNK_FLOATS = 4_000_000


def _poly(act):
    """Power-basis coefficients (lowest first) of a polynomial activation and of its derivative."""
    from ..hermite import hermite_to_power

    c = hermite_to_power(np.array([float(v) for v in act.poly_coeffs]))
    return c, np.polynomial.polynomial.polyder(c)


def _polyval(c, z):
    return np.polynomial.polynomial.polyval(z, c)


def _mv(A, v):
    """Batched ``A @ v``: ``(R, n, m), (R, m) -> (R, n)`` (BLAS, unlike einsum)."""
    return (A @ v[..., None])[..., 0]


def _tv(A, v):
    """Batched ``A^T @ v``: ``(R, n, m), (R, n) -> (R, m)``."""
    return (v[:, None, :] @ A)[:, 0, :]


def _check_problem(problem) -> HierarchicalProblem:
    if not isinstance(problem, HierarchicalProblem):
        raise TypeError(f"`problem` must be a HierarchicalProblem, got {type(problem).__name__}.")
    return problem


def _sigma1(problem, sigma1):
    from ..activations import Activation, get_activation

    spec = f"he{problem.k}" if sigma1 is None else sigma1
    if not isinstance(spec, (str, Activation)):
        raise TypeError(f"`sigma1` must be an activation spec string or Activation, got {type(spec).__name__}.")
    act = spec if isinstance(spec, Activation) else get_activation(spec)
    if not act.is_polynomial or act.degree != problem.k:
        got = f"degree {act.degree}" if act.is_polynomial else "not a polynomial"
        raise ValueError(f"`sigma1` must be a polynomial of degree exactly k = {problem.k} with non-zero leading "
                         f"coefficient (arXiv 2311.13774: sigma1 of degree k spans the degree-<=k polynomials), got "
                         f"{act.name!r} ({got}).")
    return act


# --------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ThreeLayerNetwork:
    r""":math:`h_\theta(x) = \hat p(x) + c^\top\mathrm{ReLU}(a\hat p(x) + b) + c_0`,
    :math:`\hat p(x) = u^\top\sigma_1(Vx + s) + u_0` (module docstring), ``R`` replicas.

    Attributes
    ----------
    V : ndarray, shape (R, m1, d)
    s : ndarray, shape (R, m1)
    u : ndarray, shape (R, m1)
    u0 : ndarray, shape (R,)
    a, b, c : ndarray, shape (R, m2)
    c0 : ndarray, shape (R,)
    sigma1 : Activation
        Polynomial of degree ``k``.
    """

    V: np.ndarray
    s: np.ndarray
    u: np.ndarray
    u0: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    c0: np.ndarray
    sigma1: object

    @property
    def replicas(self) -> int:
        return self.V.shape[0]

    @property
    def m1(self) -> int:
        return self.V.shape[1]

    @property
    def m2(self) -> int:
        return self.a.shape[1]

    def _x(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim == 2:
            x = np.broadcast_to(x, (self.replicas,) + x.shape)
        if x.ndim != 3 or x.shape[0] != self.replicas or x.shape[2] != self.V.shape[2]:
            raise ValueError(f"`x` must have shape (n, {self.V.shape[2]}) or ({self.replicas}, n, "
                             f"{self.V.shape[2]}), got {x.shape}.")
        return x

    def features(self, x) -> np.ndarray:
        r""":math:`\sigma_1(Vx + s)`, shape ``(R, n, m1)``."""
        x = self._x(x)
        return _polyval(_poly(self.sigma1)[0], x @ np.swapaxes(self.V, 1, 2) + self.s[:, None, :])

    def feature(self, x) -> np.ndarray:
        r"""The learned feature :math:`\hat p(x)`, shape ``(R, n)``."""
        return _mv(self.features(x), self.u) + self.u0[:, None]

    def __call__(self, x) -> np.ndarray:
        r""":math:`h_\theta(x)`, shape ``(R, n)``."""
        ph = self.feature(x)
        hidden = np.maximum(self.a[:, None, :] * ph[..., None] + self.b[:, None, :], 0.0)
        return ph + _mv(hidden, self.c) + self.c0[:, None]


def init_network(problem: HierarchicalProblem, *, m1: int | None = None, m2: int = DEFAULT_M2, sigma1=None,
                 replicas: int = 1, rng=None) -> ThreeLayerNetwork:
    r"""A network at its layer-wise initialisation: random frozen :math:`V, s`, random
    :math:`a = \pm 1`, :math:`b \sim U[-\beta, \beta]` (standardised units), :math:`u = 0`,
    :math:`c = 0`.

    ``m1`` defaults to :math:`\lceil 2 D_k(d)\rceil` (:data:`DEFAULT_M1_FACTOR`).
    """
    problem = _check_problem(problem)
    act = _sigma1(problem, sigma1)
    d = problem.d
    m1 = math.ceil(DEFAULT_M1_FACTOR * problem.stage1_dimension) if m1 is None else check_int("m1", m1, minimum=1)
    m2 = check_int("m2", m2, minimum=1)
    R = check_int("replicas", replicas, minimum=1)
    from .._budget import check_memory, nbytes

    check_memory(nbytes(R, m1, d + 4), driver="m1", value=m1, what="the first layer V (replicas x m1 x d)")
    gen = as_generator(rng)
    V = gen.standard_normal((R, m1, d))
    V *= math.sqrt(0.5) / np.linalg.norm(V, axis=2, keepdims=True)
    s = math.sqrt(0.5) * gen.standard_normal((R, m1))
    a = gen.choice(np.array([-1.0, 1.0]), size=(R, m2))
    b = gen.uniform(-STAGE2_BIAS_RANGE, STAGE2_BIAS_RANGE, size=(R, m2))
    return ThreeLayerNetwork(V=V, s=s, u=np.zeros((R, m1)), u0=np.zeros(R), a=a, b=b, c=np.zeros((R, m2)),
                             c0=np.zeros(R), sigma1=act)


def fit_stage1(net: ThreeLayerNetwork, x, y, *, ridge: float = DEFAULT_RIDGE1) -> ThreeLayerNetwork:
    r"""Stage 1 alone: :math:`(u, u_0)` by ridge regression of ``y`` on :math:`\sigma_1(Vx + s)`.

    ``x`` of shape ``(R, n, d)`` (or ``(n, d)``, shared by the replicas), ``y`` of shape ``(R, n)``;
    features accumulate in chunks (:class:`popdyn.readout.RidgeMoments`), so memory stays
    ``O(R m1^2)`` whatever ``n``.  Returns the network with the new ``u, u0`` (stage 2 untouched).
    ``ridge = 0`` needs ``n >= m1 + 1``.
    """
    from ..readout import RidgeMoments

    if not isinstance(net, ThreeLayerNetwork):
        raise TypeError(f"`net` must be a ThreeLayerNetwork, got {type(net).__name__}.")
    x = net._x(x)
    y = np.asarray(y, dtype=float)
    if y.shape != x.shape[:2]:
        raise ValueError(f"`y` must have shape {x.shape[:2]}, got {y.shape}.")
    n = x.shape[1]
    ridge = _check_ridge("ridge", ridge, n=n, m=net.m1 + 1, what="stage 1, m1 + 1 with the intercept")
    acc = RidgeMoments()
    chunk = max(1, _CHUNK_FLOATS // (net.replicas * net.m1))
    for start in range(0, n, chunk):
        acc.add(net.features(x[:, start:start + chunk]), y[:, start:start + chunk], check=False)
    fit = acc.solve(ridge, name="ridge")
    return dataclasses.replace(net, u=fit.coef, u0=fit.intercept)


# --------------------------------------------------------------------------------------
# layer-wise training along a grid of n1
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Curve:
    r"""Test metrics along a grid of sample sizes (one column per replica).

    Attributes
    ----------
    n : ndarray, shape (J,)
        Sample sizes (stage-1 samples :math:`n_1` for the network, :math:`n` for the kernel).
    test_error : ndarray, shape (J, R)
        Relative test error :math:`E[(f - y)^2]/\mathrm{Var}(y)` (1 = no better than the mean).
    correlation : ndarray or None, shape (J, R)
        Network only: test correlation of :math:`\hat p` with :math:`p`.
    stage1_error : ndarray or None, shape (J, R)
        Network only: relative test error of :math:`\hat p` alone as a predictor of :math:`y`.
    method : str
        ``"layerwise"`` or ``"kernel"``.
    meta : dict
        Sizes, ridges, seed.
    """

    n: np.ndarray
    test_error: np.ndarray
    correlation: np.ndarray | None
    stage1_error: np.ndarray | None
    method: str
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LayerwiseResult:
    """One layer-wise training (:func:`train_layerwise`): the network and its test metrics per replica."""

    network: ThreeLayerNetwork
    correlation: np.ndarray
    test_error: np.ndarray
    stage1_error: np.ndarray
    meta: dict = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"correlation": self.correlation.tolist(), "test_error": self.test_error.tolist(),
                "stage1_error": self.stage1_error.tolist(), "meta": self.meta}


def _grid(name: str, ns) -> np.ndarray:
    try:
        arr = np.asarray(ns)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a sequence of sample sizes, got {type(ns).__name__}.") from None
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"`{name}` must be a non-empty 1-d sequence of sample sizes, got {arr.tolist()!r:.60}.")
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any(arr < 1):
        raise ValueError(f"`{name}` must hold positive integers, got {arr.tolist()!r:.60}.")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"`{name}` must be strictly increasing, got {arr.tolist()!r:.60}.")
    return arr.astype(np.int64)


def _relative_error(pred, y) -> np.ndarray:
    """Per replica: mean (pred - y)^2 / Var(y) over the last axis."""
    return np.mean((pred - y) ** 2, axis=-1) / np.var(y, axis=-1)


def _correlation(a, b) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    return np.where(den > 0, (a * b).sum(axis=-1) / np.where(den > 0, den, 1.0), 0.0)


def _check_ridge(name, value, *, n, m, what):
    value = check_real(name, value, lower=0.0)
    if value == 0 and n < m:
        raise ValueError(f"`{name}` = 0 needs at least as many samples as features ({what}: n = {n} < {m}); use "
                         f"`{name}` > 0 (e.g. {DEFAULT_RIDGE1:g}) for n < m.")
    return value


def _stage2(net, ph2, y2, ph_t, gen_ridge):
    """Fit (c, c0) on D2 for every replica; returns the network's test predictions and (a, b, c, c0)."""
    from ..readout import RidgeMoments

    mu = ph2.mean(axis=1)
    tau = ph2.std(axis=1)
    tau = np.where(tau > 0, tau, 1.0)
    a = net.a / tau[:, None]
    b = net.b - net.a * (mu / tau)[:, None]
    G2 = np.maximum(a[:, None, :] * ph2[..., None] + b[:, None, :], 0.0)
    acc = RidgeMoments()
    acc.add(G2, y2 - ph2, check=False)
    fit = acc.solve(gen_ridge, name="ridge2")
    Gt = np.maximum(a[:, None, :] * ph_t[..., None] + b[:, None, :], 0.0)
    pred = ph_t + _mv(Gt, fit.coef) + fit.intercept[:, None]
    return pred, a, b, fit.coef, fit.intercept


def _data(problem, data, n_max, n2, n_test, R, gen):
    """The pools: D1 (n_max), D2 (n2), test (n_test), each (R, n, d), labels and features."""
    if data is None:
        data = {}
    out = {}
    for key, size in (("1", n_max), ("2", n2), ("test", n_test)):
        if size == 0:
            continue
        if f"x{key}" in data:
            x, y, p = data[f"x{key}"], data[f"y{key}"], data[f"p{key}"]
            if x.shape[0] != R or x.shape[1] < size or x.shape[2] != problem.d:
                raise ValueError(f"`data['x{key}']` must have shape ({R}, >= {size}, {problem.d}), got {x.shape}.")
            out[key] = (x[:, :size], y[:, :size], p[:, :size])
        else:
            out[key] = problem.sample(size, replicas=R, rng=gen)
    return out


def layerwise_curve(problem: HierarchicalProblem, n1s, *, n2: int = DEFAULT_N2, m1: int | None = None,
                    m2: int = DEFAULT_M2, sigma1=None, ridge1: float = DEFAULT_RIDGE1,
                    ridge2: float = DEFAULT_RIDGE2, n_test: int = DEFAULT_N_TEST, replicas: int = 1, rng=None,
                    data: dict | None = None, return_network: bool = False):
    r"""Layer-wise training at every stage-1 size in ``n1s`` (nested prefixes of one pool).

    Parameters
    ----------
    problem : HierarchicalProblem
    n1s : sequence of int
        Strictly increasing stage-1 sample sizes.
    n2 : int
        Stage-2 samples (``>= 2``; the same fresh :math:`D_2` for every ``n1``).
    m1, m2 : int
        Widths (``m1`` default :math:`\lceil 2D_k(d)\rceil`).
    sigma1 : str or Activation, optional
        Degree-``k`` polynomial (default ``"he{k}"``).
    ridge1, ridge2 : float
        Ridges of the two stages (``ridge1 = 0`` only when every ``n1 >= m1 + 1``).
    n_test : int
        Test samples (``>= 2``).
    replicas : int
        Independent networks and data sets (vectorised).
    rng : int, Generator or None
    data : dict, optional
        Pools to use instead of fresh draws: ``x1, y1, p1`` (``(R, >= max(n1s), d)``), ``x2, y2, p2``,
        ``xtest, ytest, ptest`` (any subset), e.g. to give the kernel baseline the same data.
    return_network : bool
        Also return the network trained at the largest ``n1``.

    Returns
    -------
    Curve
        With ``correlation`` and ``stage1_error``; ``(Curve, ThreeLayerNetwork)`` with
        ``return_network``.

    Raises
    ------
    ValueError, TypeError
        Bad input, naming the argument (``ridge1 = 0`` with fewer samples than features).
    NumericalError
        A singular or non-finite ridge solve.
    """
    from .._budget import check_memory, nbytes
    from ..readout import RidgeMoments

    problem = _check_problem(problem)
    ns = _grid("n1s", n1s)
    n2 = check_int("n2", n2, minimum=2)
    n_test = check_int("n_test", n_test, minimum=2)
    R = check_int("replicas", replicas, minimum=1)
    gen = as_generator(rng)
    seed = seed_record(rng)
    net = init_network(problem, m1=m1, m2=m2, sigma1=sigma1, replicas=R, rng=gen)
    m1 = net.m1
    ridge1 = _check_ridge("ridge1", ridge1, n=int(ns[0]), m=m1 + 1, what="stage 1, m1 + 1 with the intercept")
    ridge2 = _check_ridge("ridge2", ridge2, n=n2, m=net.m2 + 1, what="stage 2, m2 + 1 with the intercept")
    for name, size in (("n2", n2), ("n_test", n_test)):
        check_memory(nbytes(R, size, m1 + problem.d), driver=name, value=size,
                     what=f"its samples and their stage-1 features (replicas x {name} x (m1 + d))")
    pools = _data(problem, data, int(ns[-1]), n2, n_test, R, gen)
    x1, y1, _ = pools["1"]
    x2, y2, _ = pools["2"]
    xt, yt, pt = pools["test"]
    F2, Ft = net.features(x2), net.features(xt)
    acc = RidgeMoments()
    chunk = max(1, _CHUNK_FLOATS // (R * m1))
    J = ns.size
    corr, err, err1 = np.empty((J, R)), np.empty((J, R)), np.empty((J, R))
    done = 0
    fit = None
    for j, n in enumerate(ns):
        while done < n:
            c = int(min(chunk, n - done))
            acc.add(net.features(x1[:, done:done + c]), y1[:, done:done + c], check=False)
            done += c
        fit = acc.solve(ridge1, name="ridge1")
        ph2 = _mv(F2, fit.coef) + fit.intercept[:, None]
        ph_t = _mv(Ft, fit.coef) + fit.intercept[:, None]
        pred, a, b, c2, c0 = _stage2(net, ph2, y2, ph_t, ridge2)
        if not np.all(np.isfinite(pred)):
            raise NumericalError(f"non-finite network output at n1 = {n} (ridge1 = {ridge1:g}, ridge2 = {ridge2:g}); "
                                 "raise the ridges.")
        corr[j] = _correlation(ph_t, pt)
        err[j] = _relative_error(pred, yt)
        err1[j] = _relative_error(ph_t, yt)
    meta = {"d": problem.d, "k": problem.k, "m1": m1, "m2": net.m2, "n2": n2, "n_test": n_test, "ridge1": ridge1,
            "ridge2": ridge2, "sigma1": net.sigma1.name, "replicas": R, "seed": seed, "problem": problem.describe()}
    curve = Curve(n=ns, test_error=err, correlation=corr, stage1_error=err1, method="layerwise", meta=meta)
    if not return_network:
        return curve
    trained = dataclasses.replace(net, u=fit.coef, u0=fit.intercept, a=a, b=b, c=c2, c0=c0)
    return curve, trained


def train_layerwise(problem: HierarchicalProblem, *, n1: int, n2: int = DEFAULT_N2, m1: int | None = None,
                    m2: int = DEFAULT_M2, sigma1=None, ridge1: float = DEFAULT_RIDGE1,
                    ridge2: float = DEFAULT_RIDGE2, n_test: int = DEFAULT_N_TEST, replicas: int = 1,
                    rng=None) -> LayerwiseResult:
    r"""Train the network layer-wise on ``n1`` + ``n2`` fresh samples (module docstring).

    Parameters are those of :func:`layerwise_curve` with a single stage-1 size ``n1``.

    Parameters
    ----------
    problem : HierarchicalProblem
    n1 : int
        Stage-1 samples (``>= 1``).
    n2 : int
        Stage-2 samples (``>= 2``, default ``DEFAULT_N2`` = 500).
    m1, m2 : int
        Widths (``m1`` default :math:`\lceil 2D_k(d)\rceil`, ``m2`` default ``DEFAULT_M2`` = 32).
    sigma1 : str or Activation, optional
        Degree-``k`` polynomial (default ``"he{k}"``).
    ridge1, ridge2 : float
        Ridges of the two stages (defaults ``1e-6`` and ``1e-4``; ``ridge1 = 0`` only when
        ``n1 >= m1 + 1``).
    n_test : int
        Test samples (``>= 2``, default ``DEFAULT_N_TEST`` = 4000).
    replicas : int
        Independent networks and data sets (vectorised).
    rng : int, Generator or None

    Returns
    -------
    LayerwiseResult
        The trained network and, per replica, the test correlation of :math:`\hat p` with
        :math:`p`, the relative test error of :math:`h_\theta` and of :math:`\hat p` alone.

    Examples
    --------
    >>> from popdyn.models.hierarchical import HierarchicalProblem
    >>> res = train_layerwise(HierarchicalProblem(8, 2), n1=800, n2=500, replicas=2, rng=0)
    >>> bool(res.correlation.min() > 0.9), bool(res.test_error.max() < 0.3)
    (True, True)
    """
    n1 = check_int("n1", n1, minimum=1)
    curve, net = layerwise_curve(problem, [n1], n2=n2, m1=m1, m2=m2, sigma1=sigma1, ridge1=ridge1, ridge2=ridge2,
                                 n_test=n_test, replicas=replicas, rng=rng, return_network=True)
    return LayerwiseResult(network=net, correlation=curve.correlation[0], test_error=curve.test_error[0],
                           stage1_error=curve.stage1_error[0], meta={**curve.meta, "n1": n1})


# --------------------------------------------------------------------------------------
# the kernel baseline
# --------------------------------------------------------------------------------------
def _poly_kernel(xa, xb, degree, d):
    r""":math:`(1 + x_a\cdot x_b/d)^m`, shape ``(R, n_a, n_b)`` (integer power by repeated squaring, in place)."""
    base = xa @ np.swapaxes(xb, 1, 2)
    base /= d
    base += 1.0
    out = None
    while degree:
        if degree & 1:
            out = base.copy() if out is None else np.multiply(out, base, out=out)
        degree >>= 1
        if degree:
            np.multiply(base, base, out=base)
    return out


def kernel_curve(problem: HierarchicalProblem, ns, *, degree: int | None = None,
                 ridge: float = DEFAULT_KERNEL_RIDGE, n_test: int = DEFAULT_N_TEST, replicas: int = 1, rng=None,
                 data: dict | None = None) -> Curve:
    r"""Kernel ridge regression with :math:`K(x,x') = (1 + x\cdot x'/d)^m` at every size in ``ns``.

    Parameters
    ----------
    problem : HierarchicalProblem
    ns : sequence of int
        Strictly increasing sample sizes (nested prefixes of one pool).
    degree : int, optional
        :math:`m` (default :math:`kq`, the degree of :math:`h`).
    ridge : float
        Per-sample ridge :math:`\lambda > 0` (scikit-learn ``alpha = n * ridge``).
    n_test, replicas, rng, data
        As in :func:`layerwise_curve` (``data`` keys ``x1, y1, p1`` and ``xtest, ytest, ptest``).

    Returns
    -------
    Curve
        ``method = "kernel"``, ``correlation`` and ``stage1_error`` are None.

    Notes
    -----
    Dual solve per replica and size (:math:`O(n^3)`), scikit-learn imported here.  The
    kernel matrix of the largest pool, ``replicas x n x n`` floats, is checked against the
    machine's memory first.
    """
    from .._budget import check_memory, nbytes

    problem = _check_problem(problem)
    ns = _grid("ns", ns)
    degree = problem.k * problem.q if degree is None else check_int("degree", degree, minimum=1)
    ridge = check_real("ridge", ridge, lower=0.0, lower_open=True)
    n_test = check_int("n_test", n_test, minimum=2)
    R = check_int("replicas", replicas, minimum=1)
    n_max = int(ns[-1])
    check_memory(nbytes(R, n_max, n_max + n_test) * 2, driver="ns", value=n_max,
                 what="the kernel matrices (replicas x n x (n + n_test), and the solver's copy)")
    from sklearn.kernel_ridge import KernelRidge

    gen = as_generator(rng)
    seed = seed_record(rng)
    pools = _data(problem, data, n_max, 0, n_test, R, gen)
    x, y, _ = pools["1"]
    xt, yt, _ = pools["test"]
    K = _poly_kernel(x, x, degree, problem.d)
    Kt = _poly_kernel(xt, x, degree, problem.d)
    err = np.empty((ns.size, R))
    for j, n in enumerate(ns):
        n = int(n)
        for r in range(R):  # one library solve per replica and size
            model = KernelRidge(alpha=n * ridge, kernel="precomputed").fit(K[r, :n, :n], y[r, :n])
            pred = model.predict(Kt[r, :, :n])
            if not np.all(np.isfinite(pred)):
                raise NumericalError(f"non-finite kernel predictions at n = {n} (ridge = {ridge:g}); raise `ridge`.")
            err[j, r] = _relative_error(pred, yt[r])
    meta = {"d": problem.d, "degree": degree, "ridge": ridge, "n_test": n_test, "replicas": R, "seed": seed,
            "kernel": f"(1 + x.x'/d)^{degree}", "problem": problem.describe()}
    return Curve(n=ns, test_error=err, correlation=None, stage1_error=None, method="kernel", meta=meta)


# --------------------------------------------------------------------------------------
# end-to-end gradient descent (contrast)
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EndToEndResult:
    """Full-batch GD on all layers (:func:`train_end_to_end`).

    ``steps`` (T,), ``train_loss`` (T, R) (``1/2`` mean squared error), ``test_error`` and
    ``correlation`` (T, R) at the recorded steps; the final ``network``.
    """

    steps: np.ndarray
    train_loss: np.ndarray
    test_error: np.ndarray
    correlation: np.ndarray
    network: ThreeLayerNetwork
    meta: dict = dataclasses.field(default_factory=dict)


def _forward(net, x, c1, dc1):
    z1 = x @ np.swapaxes(net.V, 1, 2) + net.s[:, None, :]
    phi = _polyval(c1, z1)
    ph = _mv(phi, net.u) + net.u0[:, None]
    z2 = net.a[:, None, :] * ph[..., None] + net.b[:, None, :]
    hid = np.maximum(z2, 0.0)
    out = ph + _mv(hid, net.c) + net.c0[:, None]
    return z1, phi, ph, z2, hid, out


def loss_and_gradients(net: ThreeLayerNetwork, x, y):
    r"""``(loss, grads)``: :math:`\tfrac12 E_n[(h_\theta(x) - y)^2]` per replica (shape ``(R,)``) and its
    gradients with respect to ``V, s, u, u0, a, b, c, c0`` (a dict of arrays shaped like them).

    ``x`` of shape ``(R, n, d)``, ``y`` of shape ``(R, n)``.  Backward pass:
    :math:`r = h_\theta - y`, :math:`\partial/\partial\hat p = r\,(1 + \sum_j c_j a_j 1[z_{2j} > 0])`,
    :math:`\partial/\partial z_1 = (\partial/\partial\hat p)\, u\, \sigma_1'(z_1)`.
    """
    c1, dc1 = _poly(net.sigma1)
    x = net._x(x)
    n = x.shape[1]
    z1, phi, ph, z2, hid, out = _forward(net, x, c1, dc1)
    r = out - y
    loss = 0.5 * np.mean(r * r, axis=1)
    active = (z2 > 0).astype(float)
    g_c = _tv(hid, r) / n
    g_c0 = r.mean(axis=1)
    rc = r[..., None] * active * net.c[:, None, :]          # (R, n, m2)
    g_a = _tv(rc, ph) / n
    g_b = rc.sum(axis=1) / n
    g_ph = r * (1.0 + _mv(active, net.c * net.a))
    g_u = _tv(phi, g_ph) / n
    g_u0 = g_ph.mean(axis=1)
    g_z1 = g_ph[..., None] * net.u[:, None, :] * _polyval(dc1, z1)
    g_V = np.swapaxes(g_z1, 1, 2) @ x / n
    g_s = g_z1.sum(axis=1) / n
    return loss, {"V": g_V, "s": g_s, "u": g_u, "u0": g_u0, "a": g_a, "b": g_b, "c": g_c, "c0": g_c0}


def train_end_to_end(problem: HierarchicalProblem, *, n: int, steps: int, lr: float = DEFAULT_LR,
                     m1: int | None = None, m2: int = DEFAULT_M2, sigma1=None, n_test: int = DEFAULT_N_TEST,
                     replicas: int = 1, n_record: int = 20, rng=None) -> EndToEndResult:
    r"""Full-batch gradient descent on every layer, for contrast with the layer-wise algorithm.

    Starts from :func:`init_network` (:math:`u = 0`, :math:`c = 0`) on ``n`` training samples;
    the step on :math:`(u, u_0)` is ``lr`` divided by the top eigenvalue of the initial
    feature covariance, every other parameter moves by ``lr`` times its gradient.

    Parameters
    ----------
    problem : HierarchicalProblem
    n : int
        Training samples.
    steps : int
        GD steps (the only Python loop).
    lr : float
        Step size ``> 0``.
    m1, m2, sigma1, n_test, replicas, rng
        As in :func:`layerwise_curve`.
    n_record : int
        Number of recorded steps (log-spaced, including 0 and ``steps``).

    Returns
    -------
    EndToEndResult

    Raises
    ------
    NumericalError
        The loss became non-finite (the step at which it did is named): lower ``lr``.
    """
    from .._budget import check_memory, nbytes

    problem = _check_problem(problem)
    n = check_int("n", n, minimum=2)
    steps = check_int("steps", steps, minimum=1)
    lr = check_real("lr", lr, lower=0.0, lower_open=True)
    n_test = check_int("n_test", n_test, minimum=2)
    n_record = check_int("n_record", n_record, minimum=2)
    R = check_int("replicas", replicas, minimum=1)
    gen = as_generator(rng)
    seed = seed_record(rng)
    net = init_network(problem, m1=m1, m2=m2, sigma1=sigma1, replicas=R, rng=gen)
    check_memory(nbytes(R, max(n, n_test), net.m1, 4), driver="n", value=n,
                 what="the forward and backward arrays (replicas x n x m1)")
    x, y, _ = problem.sample(n, replicas=R, rng=gen)
    xt, yt, pt = problem.sample(n_test, replicas=R, rng=gen)
    phi0 = net.features(x)
    cov = np.swapaxes(phi0, 1, 2) @ phi0 / n
    lam = np.linalg.eigvalsh(cov)[:, -1]                      # (R,)
    record = np.unique(np.concatenate([[0], np.geomspace(1, steps, n_record - 1).round().astype(int)]))
    T = record.size
    loss_t, err_t, corr_t = np.empty((T, R)), np.empty((T, R)), np.empty((T, R))
    params = {f.name: getattr(net, f.name).copy() for f in dataclasses.fields(net) if f.name != "sigma1"}
    scale = {"u": (lr / lam)[:, None], "u0": lr / lam}
    i_rec = 0
    for step in range(steps + 1):
        cur = ThreeLayerNetwork(sigma1=net.sigma1, **params)
        with np.errstate(over="ignore", invalid="ignore"):   # a blow-up is reported below, with its step
            loss, grads = loss_and_gradients(cur, x, y)
        if not np.all(np.isfinite(loss)) or not all(np.all(np.isfinite(g)) for g in grads.values()):
            raise NumericalError(f"end-to-end GD diverged (non-finite loss; lr = {lr:g}); lower `lr`.", step=step)
        if step == record[i_rec]:
            loss_t[i_rec] = loss
            err_t[i_rec] = _relative_error(cur(xt), yt)
            corr_t[i_rec] = _correlation(cur.feature(xt), pt)
            i_rec += 1
        if step == steps:
            break
        for name, g in grads.items():
            params[name] -= scale.get(name, lr) * g
    meta = {"d": problem.d, "k": problem.k, "n": n, "steps": steps, "lr": lr, "m1": net.m1, "m2": net.m2,
            "n_test": n_test, "replicas": R, "seed": seed, "problem": problem.describe()}
    return EndToEndResult(steps=record, train_loss=loss_t, test_error=err_t, correlation=corr_t,
                          network=ThreeLayerNetwork(sigma1=net.sigma1, **params), meta=meta)


# --------------------------------------------------------------------------------------
# sample complexity and its exponent in d
# --------------------------------------------------------------------------------------
def samples_to_reach(ns, errors, level: float) -> np.ndarray:
    r""":math:`n^*` per replica: where the error curve last crosses ``level`` from above.

    ``errors`` has shape ``(J, R)`` on the grid ``ns`` (``J``).  :math:`n^*` is interpolated
    linearly in :math:`(\log n, \log \mathrm{error})` between the last grid point above the
    level and the next one; ``ns[0]`` if the curve starts below the level; ``inf`` if it ends
    above it.

    Examples
    --------
    >>> samples_to_reach([100, 200, 400], [[0.9], [0.6], [0.1]], 0.3).round(1).tolist()  # 200 * 2^(log 2/log 6)
    [261.5]
    """
    ns = _grid("ns", ns).astype(float)
    e = np.asarray(errors, dtype=float)
    if e.ndim == 1:
        e = e[:, None]
    if e.shape[0] != ns.size:
        raise ValueError(f"`errors` must have shape ({ns.size}, replicas), got {e.shape}.")
    level = check_real("level", level, lower=0.0, lower_open=True)
    out = np.empty(e.shape[1])
    for r in range(e.shape[1]):
        above = np.nonzero(e[:, r] > level)[0]
        if above.size == 0:
            out[r] = ns[0]
        elif above[-1] == ns.size - 1:
            out[r] = math.inf
        else:
            j = above[-1]
            le0, le1 = math.log(e[j, r]), math.log(max(e[j + 1, r], 1e-300))
            frac = (le0 - math.log(level)) / (le0 - le1)
            out[r] = math.exp(math.log(ns[j]) + frac * (math.log(ns[j + 1]) - math.log(ns[j])))
    return out


def fit_exponent(ds, n_star) -> tuple:
    r"""``(slope, se, slopes)``: least-squares slope of :math:`\log n^*` on :math:`\log d` per replica
    (``n_star`` shape ``(len(ds), R)``), their mean and its standard error (``nan`` for one replica).
    """
    ds = np.asarray(ds, dtype=float)
    n_star = np.asarray(n_star, dtype=float)
    if n_star.ndim != 2 or n_star.shape[0] != ds.size or ds.size < 2:
        raise ValueError(f"`n_star` must have shape (len(ds) >= 2, replicas), got {n_star.shape} for {ds.size} ds.")
    if not np.all(np.isfinite(n_star)):
        raise ValueError("`n_star` must be finite: a curve never reached the level; extend the sample grid.")
    slopes = np.polyfit(np.log(ds), np.log(n_star), 1)[0]
    R = slopes.size
    se = float(slopes.std(ddof=1) / math.sqrt(R)) if R > 1 else math.nan
    return float(slopes.mean()), se, slopes


@dataclasses.dataclass(frozen=True)
class ExponentStudy:
    r"""Samples to reach a level against :math:`d`, network vs kernel (:func:`sample_exponents`).

    Each of ``nn``, ``corr`` and ``kernel`` is ``None`` when that method was not run, else a
    dict with ``n_star`` (shape ``(len(ds), R)``; ``inf`` where a replica's curve did not reach
    the level on its grid), ``reached`` (all finite), ``slope``, ``se`` (replica spread) and
    ``slopes`` (per replica; all three ``None`` unless ``reached``) and ``law`` (the slope of
    the dimension count on ``ds``):

    * ``nn``: stage-1 samples :math:`n_1^*` for the network's relative test error to reach
      ``level`` (stage 2 adds ``n2`` samples, independent of :math:`d`); law :math:`D_k`;
    * ``corr``: stage-1 samples for :math:`\mathrm{corr}(\hat p, p)` to reach ``corr_level``;
      law :math:`D_k`;
    * ``kernel``: samples for the kernel's relative test error to reach ``level``; law
      :math:`D_{kq}`.

    Attributes
    ----------
    ds : ndarray
    level, corr_level : float
    nn, corr, kernel : dict or None
    laws : dict
        Slopes of :math:`D_m(d)`, :math:`m = 1..kq+1`, on ``ds``.
    curves : list of (Curve or None, Curve or None)
        Network and kernel curves per ``d``.
    meta : dict
    """

    ds: np.ndarray
    level: float
    corr_level: float
    nn: dict | None
    corr: dict | None
    kernel: dict | None
    laws: dict
    curves: list
    meta: dict = dataclasses.field(default_factory=dict)


def _ratio_grid(name, ratios, scale):
    r = np.asarray(ratios, dtype=float)
    if r.ndim != 1 or r.size < 2 or not np.all(np.isfinite(r)) or np.any(r <= 0) or np.any(np.diff(r) <= 0):
        raise ValueError(f"`{name}` must be a strictly increasing sequence of at least two positive ratios, got "
                         f"{np.asarray(ratios).tolist()!r:.60}.")
    return np.unique(np.maximum(np.round(r * scale), 1)).astype(int)


def sample_exponents(make_problem, ds, *, level: float, nn_ratios=None, kernel_ratios=None, corr_level: float = 0.9,
                     replicas: int = 4, n2: int = DEFAULT_N2, n_test: int = 2000, m1_factor: float = DEFAULT_M1_FACTOR,
                     ridge1: float = DEFAULT_RIDGE1, kernel_ridge: float = DEFAULT_KERNEL_RIDGE,
                     rng=None) -> ExponentStudy:
    r"""Measured sample exponents of the layer-wise network and of the kernel baseline.

    For each ``d`` in ``ds`` and replica, the methods run share one pool of samples and one test
    set (drawn from ``make_problem(d)``); the network's stage-1 grid is
    ``nn_ratios * D_k(d)``, the kernel's ``kernel_ratios * D_kq(d)`` (rounded).
    :func:`samples_to_reach` gives :math:`n^*` and :func:`fit_exponent` the slopes in
    :math:`\log d`, compared with the slopes of the dimension counts (:func:`dimension_slope`).

    Parameters
    ----------
    make_problem : callable
        ``d -> HierarchicalProblem`` (the same ``k`` and ``q`` for every ``d``).
    ds : sequence of int
        At least two distinct dimensions.
    level : float
        Relative test-error level in (0, 1).
    nn_ratios, kernel_ratios : sequence of float, optional
        Grids in units of :math:`D_k(d)` and :math:`D_{kq}(d)`; a method whose grid is None is
        not run (at least one is required).
    corr_level : float
        Stage-1 correlation level in (0, 1) for ``corr``.
    replicas : int
        ``>= 2`` (the standard errors are the replica spread).
    n2, n_test, ridge1, kernel_ridge, rng
        As in :func:`layerwise_curve` / :func:`kernel_curve`.
    m1_factor : float
        Network width :math:`m_1 = \lceil m_1\text{-factor}\cdot D_k(d)\rceil`, ``>= 1`` (so that the
        features span the degree-:math:`\le k` polynomials).

    Returns
    -------
    ExponentStudy

    Raises
    ------
    ValueError
        Bad input, naming the argument.
    """
    if not callable(make_problem):
        raise TypeError(f"`make_problem` must be a callable d -> HierarchicalProblem, got "
                        f"{type(make_problem).__name__}.")
    ds = [check_int("ds", d, minimum=1) for d in ds]
    if len(ds) < 2 or len(set(ds)) != len(ds):
        raise ValueError(f"`ds` must hold at least two distinct dimensions, got {ds}.")
    if nn_ratios is None and kernel_ratios is None:
        raise ValueError("give `nn_ratios`, `kernel_ratios` or both (the grids of the methods to run).")
    level = check_real("level", level, lower=0.0, upper=1.0, lower_open=True, upper_open=True)
    corr_level = check_real("corr_level", corr_level, lower=0.0, upper=1.0, lower_open=True, upper_open=True)
    m1_factor = check_real("m1_factor", m1_factor, lower=1.0)
    R = check_int("replicas", replicas, minimum=2)
    gen = as_generator(rng)
    seed = seed_record(rng)
    star = {"nn": [], "corr": [], "kernel": []}
    curves, probs = [], []
    for d in ds:
        prob = _check_problem(make_problem(d))
        if prob.d != d:
            raise ValueError(f"`make_problem({d})` returned a problem with d = {prob.d}.")
        if probs and (prob.k, prob.q) != (probs[0].k, probs[0].q):
            raise ValueError(f"`make_problem` must keep k and q fixed, got (k, q) = {(probs[0].k, probs[0].q)} and "
                             f"{(prob.k, prob.q)}.")
        probs.append(prob)
        g_nn = None if nn_ratios is None else _ratio_grid("nn_ratios", nn_ratios, prob.stage1_dimension)
        g_k = None if kernel_ratios is None else _ratio_grid("kernel_ratios", kernel_ratios, prob.kernel_dimension)
        n_pool = max(int(g[-1]) for g in (g_nn, g_k) if g is not None)
        x1, y1, p1 = prob.sample(n_pool, replicas=R, rng=gen)
        xt, yt, pt = prob.sample(n_test, replicas=R, rng=gen)
        data = {"x1": x1, "y1": y1, "p1": p1, "xtest": xt, "ytest": yt, "ptest": pt}
        c_nn = c_k = None
        if g_nn is not None:
            c_nn = layerwise_curve(prob, g_nn, n2=n2, m1=math.ceil(m1_factor * prob.stage1_dimension), n_test=n_test,
                                   ridge1=ridge1, replicas=R, rng=gen, data=data)
            star["nn"].append(samples_to_reach(g_nn, c_nn.test_error, level))
            star["corr"].append(samples_to_reach(g_nn, 1.0 - c_nn.correlation, 1.0 - corr_level))
        if g_k is not None:
            c_k = kernel_curve(prob, g_k, ridge=kernel_ridge, n_test=n_test, replicas=R, rng=gen, data=data)
            star["kernel"].append(samples_to_reach(g_k, c_k.test_error, level))
        curves.append((c_nn, c_k))
    k, kq = probs[0].k, probs[0].k * probs[0].q
    laws = {f"D_{m}": dimension_slope(ds, m) for m in range(1, kq + 2)}
    law_of = {"nn": laws[f"D_{k}"], "corr": laws[f"D_{k}"], "kernel": laws[f"D_{kq}"]}
    out = {}
    for name, rows in star.items():
        if not rows:
            out[name] = None
            continue
        arr = np.array(rows)
        reached = bool(np.all(np.isfinite(arr)))
        slope = se = slopes = None
        if reached:
            slope, se, slopes = fit_exponent(ds, arr)
        out[name] = {"n_star": arr, "reached": reached, "slope": slope, "se": se, "slopes": slopes,
                     "law": law_of[name]}
    return ExponentStudy(ds=np.array(ds), level=level, corr_level=corr_level, nn=out["nn"], corr=out["corr"],
                         kernel=out["kernel"], laws=laws, curves=curves,
                         meta={"replicas": R, "n2": n2, "n_test": n_test, "ridge1": ridge1,
                               "kernel_ridge": kernel_ridge,
                               "nn_ratios": None if nn_ratios is None else list(map(float, nn_ratios)),
                               "kernel_ratios": None if kernel_ratios is None else list(map(float, kernel_ratios)),
                               "m1_factor": m1_factor, "seed": seed, "k": k, "kq": kq,
                               "problem": probs[0].describe()})
