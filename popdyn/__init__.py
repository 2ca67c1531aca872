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

Start-up
--------
``import popdyn`` loads only :mod:`popdyn._version`; each public name below is imported from its
module on first use (PEP 562 ``__getattr__``), so ``popdyn --version`` and a command that needs
only the committee ODE do not pay for sympy, matplotlib or the other models.  ``dir(popdyn)`` and
``from popdyn import *`` see every name of ``__all__``.
"""

from __future__ import annotations

import importlib
import importlib.util

from ._version import __version__

#: Public name -> the module (relative to this package) that defines it, grouped by module.
_EXPORTS_BY_MODULE: dict[str, list[str]] = {
    "activations": ["Activation", "get_activation", "registered_names"],
    "hermite": ["HermiteSeries", "h_values", "hermite_coefficients"],
    "exponents": ["information_exponent", "generative_exponent"],
    "kernels": [
        "correlation_kernel", "correlation_kernel_expr", "gaussian_pair_expectation", "KernelValue",
        "PairExpectation",
    ],
    "errors": ["NumericalError", "LargeStepWarning"],
    "chaos": [
        "Feature", "Piece", "feature", "chaos_projection", "stein_lemma", "stein_lemma_mc", "chaos_norms_mc",
        "ZeroSteinCoefficientWarning",
    ],
    "trajectory": ["Trajectory"],
    "models.multi_index": ["MultiIndexProblem", "gram", "index_vectors"],
    "models.single_index": ["SingleIndexProblem", "escape_samples", "step_size"],
    "models.single_index_sim": ["first_passage"],
    "models.spiked": [
        "SpikedProblem", "effective_dimension", "escape_time_grid", "kappa_critical", "min_unlabeled",
        "escape_grid_simulation", "plot_escape_points", "SimulatedEscape",
    ],
    "models.reuse": ["ReuseProblem", "predicted_samples", "student_survey", "tanh_logcosh"],
    "models.reuse_sim": ["samples_to_reach", "scaling_study", "two_phase"],
    "models.covariance": ["CovarianceProblem", "load_covariance", "load_direction"],
    "models.committee": [
        "CommitteeProblem", "eps_g", "add_eps_g", "simulate_committee", "classic_problem",
        "classic_initial_state",
    ],
    "models.additive": ["AdditiveProblem", "task_directions", "coverage_law", "width_for_coverage", "localisation_report"],
    "models.additive_sim": ["phase_one", "phase_two", "samples_to_localise"],
    "models.additive_sq": ["superorthogonality_order", "find_superorthogonal", "csq_lower_bound"],
    "models.hierarchical": ["HierarchicalProblem", "stage1_law", "poly_dimension"],
    "models.hierarchical_sim": [
        "train_layerwise", "layerwise_curve", "kernel_curve", "train_end_to_end", "sample_exponents",
    ],
    "ode": ["integrate"],
    "simulation": ["simulate", "initial_state", "register_stepper"],
    "models.multi_index_sim": ["initial_weights"],
    "comparison": ["compare", "Comparison"],
    "models.multi_index_fixedpoints": [
        "fixed_points", "classify", "riemannian_hessian", "FixedPoint", "FixedPointSet",
    ],
    "models.multi_index_threshold": ["threshold", "smallest_eigenvalue_curve", "ThresholdResult"],
    "verification": ["verify"],
    "sweeps": ["sweep"],
}
_EXPORTS = {name: module for module, names in _EXPORTS_BY_MODULE.items() for name in names}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Import a public name's module on first access (PEP 562) and cache the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        # a submodule used as an attribute (``popdyn.hermite``, ``popdyn.models``) without an import
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'popdyn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
