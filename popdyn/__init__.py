r"""popdyn: population dynamics of feature learning, three ways that check each other.

1. **Symbolically** -- Hermite expansions give closed-form population losses in a few
   overlaps.
2. **As an ODE** -- those overlaps obey a low-dimensional ODE (integrated with scipy),
   whose fixed points are found, classified and tracked across phase thresholds.
3. **By simulation** -- finite-d SGD in plain NumPy, from the same initial state.

Conventions (one sheet for the whole package)
---------------------------------------------
* ``z ~ N(0,1)``; ``He_k`` probabilists' Hermite polynomials; orthonormal basis
  ``h_k = He_k/sqrt(k!)``; coefficients ``c_k(f) = E[f(z) h_k(z)]`` stored lowest degree
  first; Parseval ``sum_k c_k^2 = E[f^2]``.
* For unit ``u, v`` and ``x ~ N(0, I_d)``: ``E[h_j(u.x) h_k(v.x)] = delta_jk (u.v)^k``.
* Information exponent ``IE(f) = min{k >= 1 : c_k(f) != 0}``; generative exponent
  ``GE(f) = min{k >= 1 : E[zeta_k(y)^2] > 0}`` with ``zeta_k(y) = E[h_k(z) | f(z) = y]``.
* Data ``x ~ N(0, I_d)`` (or ``N(0, Sigma)``).  Teacher
  ``f*(x) = sum_j a*_j sigma*_j(v_j . x)`` with unit rows ``v_j`` of ``V`` (k x d),
  Gram ``G = V V^T``; default ``a*_j = 1``.  Student ``f(x) = sum_i a_i sigma(w_i . x + b_i)``.
* Losses: correlation ``L = -E[f f*]``; squared ``L = 1/2 E[(f - f*)^2]``.
* Overlaps: ``u_i = V w_i``, ``Q = W W^T``, ``M = W V^T``, ``m = (v.w)/||w||``.
* Time: gradient flow in its own time ``t``; a discrete algorithm with step ``eta`` is
  compared at ``t = eta * steps``; online SGD in the high-d limit uses ``eta = delta/d``.
* ``erf`` means ``erf(z/sqrt(2))`` (Saad–Solla).
* Every random function takes ``rng`` (int, Generator or None).
"""

from __future__ import annotations

from ._version import __version__

from .activations import Activation, get_activation, registered_names
from .comparison import Comparison, compare
from .errors import LargeStepWarning, NumericalError
from .exponents import generative_exponent, information_exponent
from .models.multi_index_fixedpoints import FixedPoint, FixedPointSet, classify, fixed_points, riemannian_hessian
from .hermite import HermiteSeries, h_values, hermite_coefficients
from .kernels import KernelValue, PairExpectation, correlation_kernel, correlation_kernel_expr, gaussian_pair_expectation
from .models.covariance import CovarianceProblem, load_covariance, load_direction
from .models.committee import (CommitteeProblem, add_eps_g, classic_initial_state, classic_problem, eps_g,
                               simulate_committee)
from .models.multi_index import MultiIndexProblem, gram, index_vectors
from .models.multi_index_sim import initial_weights
from .models.single_index import SingleIndexProblem, escape_samples, step_size
from .models.reuse import ReuseProblem, predicted_samples, student_survey, tanh_logcosh
from .models.reuse_sim import samples_to_reach, scaling_study, two_phase
from .models.spiked import (SimulatedEscape, SpikedProblem, effective_dimension, escape_grid_simulation,
                            escape_time_grid, kappa_critical, min_unlabeled, plot_escape_points)
from .models.single_index_sim import first_passage
from .ode import integrate
from .simulation import initial_state, register_stepper, simulate
from .models.multi_index_threshold import ThresholdResult, smallest_eigenvalue_curve, threshold
from .trajectory import Trajectory
from .verification import verify

__all__ = [
    "__version__",
    # foundation
    "Activation", "get_activation", "registered_names", "HermiteSeries", "h_values", "hermite_coefficients",
    "information_exponent", "generative_exponent",
    "correlation_kernel", "correlation_kernel_expr", "gaussian_pair_expectation", "KernelValue", "PairExpectation",
    "NumericalError", "LargeStepWarning", "Trajectory",
    # models
    "MultiIndexProblem", "gram", "index_vectors",
    "SingleIndexProblem", "escape_samples", "step_size", "first_passage",
    "SpikedProblem", "effective_dimension", "escape_time_grid", "kappa_critical", "min_unlabeled",
    "escape_grid_simulation", "plot_escape_points", "SimulatedEscape",
    "ReuseProblem", "predicted_samples", "student_survey", "tanh_logcosh", "samples_to_reach", "scaling_study",
    "two_phase",
    "CovarianceProblem", "load_covariance", "load_direction",
    "CommitteeProblem", "eps_g", "add_eps_g", "simulate_committee", "classic_problem", "classic_initial_state",
    # verbs
    "integrate", "simulate", "initial_state", "initial_weights", "register_stepper", "compare", "Comparison",
    "fixed_points", "classify", "riemannian_hessian", "FixedPoint", "FixedPointSet",
    "threshold", "smallest_eigenvalue_curve", "ThresholdResult", "verify",
]
