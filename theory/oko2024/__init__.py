r"""arXiv 2406.11828 — Oko, Song, Suzuki, Wu, "Learning sum of diverse features: computational
hardness and efficient gradient-based training for ridge combinations" (COLT 2024).

The gradient-side claims of the paper as checks (``popdyn verify 2406.11828``), on the model of
:mod:`popdyn.models.additive` (``equations.md`` maps each formula to code and says which are the
paper's and which are derived here).  Each row compares a prediction with a measurement made by a
different route.  The statistical-query side (superorthogonal links) is in ``sq.py``; its
claims, ``superorthogonal_degree`` and ``superorthogonal_links``, are part of ``CLAIMS``.

Claims
------
``overlap_ode``
    The per-neuron overlap ODE :math:`\dot u = M^{-1/2}[G g(u) - (u^\top g(u))u]` (one kernel
    per task) is the exact projection of the ``d``-dimensional spherical gradient flow of the
    correlation loss with the teacher :math:`M^{-1/2}\sum_m a_m f_m(v_m\cdot x)`: integrated
    both ways from the same start (different links and weights per task, near-orthogonal
    ``V``).
``noise_moment``
    The online-SGD coefficient :math:`C(u) = E[f^*(x)^2\sigma'(w\cdot x)^2]` of the
    :math:`\eta^2` term, in its exact Hadamard-power form for many tasks, against Monte
    Carlo in ``d`` dimensions (and the multi-index Wick form).
``localisation``
    Uniformly initialised neurons localise (:math:`\max_m|u_m| > 0.95`), each on the task the
    leading-order race from the start predicts (:math:`\arg\max|u_m(0)|` for even ``p``,
    :math:`\arg\max u_m(0)` for odd ``p``): for all neurons with orthogonal directions, and
    for most (a threshold) with near-orthogonal ones, whose overlaps perturb the race.
``coverage``
    ``J`` uniformly initialised neurons cover the ``M`` tasks as ``J`` coupons of ``M``
    kinds: the number covered and :math:`P(\text{all})` follow the occupancy law, and the
    width at which all tasks are first covered has mean :math:`M H_M/q \approx M\log M`.
``sample_complexity``
    Online SGD with the BAGJ step :math:`\eta = \eta_0 M^{-1/2}d^{-p/2}` needs
    :math:`n \asymp M d^{p-1}` samples to localise: log–log slopes (with standard errors over
    replicas) of the samples against ``M`` at fixed ``d`` (1) and against ``d`` at fixed ``M``
    (``p - 1``), from a fixed start profile :math:`u_0 = d^{-1/2}(1, 1/2, 0, \dots)`.  Full
    mode adds uniform starts, where the maximum of ``M`` initial overlaps brings the
    logarithm hidden in :math:`\tilde O`; those rows compare SGD with the overlap ODE (with
    its :math:`\eta^2` term) from the same starts.
``phase_two``
    After Phase I, random biases and a ridge second layer on the learned directions reach
    a small test error with ``n`` of a few thousand samples, far below kernel ridge
    regression and a random first layer on the same data; the same first layer refitted to
    a new combination of new links on the same directions (transfer) does as well.
"""

from __future__ import annotations

import math

import numpy as np

from popdyn.models.additive import (AdditiveProblem, coverage_law, localisation, localisation_report, loglog_slope,
                                    task_directions, width_for_coverage)
from popdyn.verification import Claim, ClaimResult

from .sq import SQ_CLAIMS

PAPER = "2406.11828"

__all__ = ["CLAIMS", "PAPER", "harmonic_width", "fixed_start"]

#: d-dimensional gradient flow (DOP853 at rtol 1e-10) vs the u-ODE (rtol 1e-10): both are
#: accurate to ~1e-9 over the horizons used (the multi-index closure tests reach 1e-10).
CLOSURE_TOL = 1e-7
#: Standard errors allowed for a Monte Carlo estimate against its predicted value.
MC_SIGMAS = 4.0
#: Near-orthogonal directions perturb the race (cross terms of relative size sqrt(M/d),
#: equations.md): measured over 5 seeds at d = 144, M = 12, 90-95 % follow it for p = 3 and
#: 92-98 % for p = 4 (a random winner would score 1/M ~ 8 %).
RACE_FRACTION = {3: 0.8, 4: 0.85}
#: Slopes: allowed distance to the law's exponent, on top of MC_SIGMAS standard errors.
#: The finite-size drift of the overlap ODE's own slopes over the quick grids is <= 0.1
#: (the ODE with the eta^2 term gives 0.94 in M and 2.06 in d at d = 16..64), and the SGD
#: fluctuations add O(d^{-1/2}) corrections of the same size at d = 32.
SLOPE_ALLOWANCE = 0.15
#: Step scale of the uniform-start rows: smaller than the fixed-start one so that the mean-field
#: ODE (with its eta^2 term) still lets neurons with small initial overlaps escape.
UNIFORM_ETA0 = 0.2
#: Relative test error above which a baseline counts as not learning (1 = no better than the
#: mean; kernel ridge and a random first layer measure 0.97-1.05 at these n).
NOT_LEARNED = 0.6
#: Absolute slack on the Phase II alignment floor: the ridge penalty and the 4000 test samples
#: (relative standard error ~2 %) put a few 1e-3 on top of a floor that can be ~1e-3.
FLOOR_SLACK = 5e-3


def harmonic_width(M: int, q: float = 1.0) -> float:
    r"""Mean number of neurons until all ``M`` tasks are covered, :math:`M H_M/q`."""
    return M * sum(1.0 / k for k in range(1, M + 1)) / q


def fixed_start(M: int, d: int) -> np.ndarray:
    r"""The start profile :math:`u_0 = d^{-1/2}(1, 1/2, 0, \dots, 0)` of the sample-complexity rows."""
    u0 = np.zeros(M)
    u0[0] = 1.0 / math.sqrt(d)
    if M > 1:
        u0[1] = 0.5 / math.sqrt(d)
    return u0


def _seed(rng) -> int:
    return int(rng.integers(2**31))


def _flow_horizon(problem, u0, p, factor=20.0, cap=50.0) -> float:
    """``factor`` times the leading-order escape time of the slowest neuron, at most ``cap`` times
    the median one (a start with a tiny largest overlap would otherwise set a huge horizon)."""
    lead = float(np.max(np.abs(problem.gamma[:, p])))
    top = np.maximum(np.max(np.abs(u0), axis=-1), 1e-12)
    times = top ** (2 - p) / (p * (p - 2) * lead)
    return float(min(factor * np.max(times), cap * np.median(times)))


# --------------------------------------------------------------------------------------
def claim_overlap_ode(quick: bool, rng):
    from popdyn import integrate, simulate

    M, d, J = (6, 40, 3) if quick else (12, 120, 6)
    links = ["he3", "hermite:0,0,0,0.8,0.6"] * (M // 2)
    weights = np.linspace(0.5, 1.5, M)
    V = task_directions(M, d, rng=_seed(rng))
    problem = AdditiveProblem("hermite:0,0,0,1,0.5", links, V, weights=weights, n_neurons=J)
    t_end = 30.0
    traj = simulate(problem, d=d, algorithm="gf", t_end=t_end, init="uniform", replicas=1, n_record=6,
                    rng=_seed(rng), progress=False)
    u0 = traj.overlaps["u"][0, 0]
    ode = integrate(problem, u0, t_end, times=traj.t, rtol=1e-10, atol=1e-12, progress=False)
    err = float(np.max(np.abs(ode.overlaps["u"][:, 0] - traj.overlaps["u"][:, 0])))
    moved = float(np.max(np.abs(traj.overlaps["u"][-1, 0] - u0)))
    return ClaimResult(PAPER, f"overlap_ode (M={M}, d={d}, {J} neurons, two links, weights {weights[0]}..{weights[-1]})",
                       predicted="u-ODE with s = M^-1/2 = d-dim flow projected on V", measured=err,
                       tolerance=CLOSURE_TOL, passed=bool(err < CLOSURE_TOL and moved > 0.05),
                       details=f"max |u_ODE - V w_flow| over {traj.t.size} times to t = {t_end}; overlaps moved by "
                               f"{moved:.3f}; max |v_i.v_j| = {problem.max_overlap:.3f}")


def claim_noise_moment(quick: bool, rng):
    M, d = (40, 80) if quick else (200, 400)
    n = 200_000 if quick else 400_000
    V = task_directions(M, d, rng=_seed(rng))
    weights = 1.0 + 0.5 * rng.standard_normal(M)
    problem = AdditiveProblem("he3", ["he3", "hermite:0,0,0,0.6,0.8"] * (M // 2), V, weights=weights)
    w = rng.standard_normal(d) + 3.0 * V[0] - 2.0 * V[1]
    w /= np.linalg.norm(w)
    u = V @ w
    predicted = float(problem.noise_moment(u))
    wick = float(problem.multi_index.noise_moment(u, method="polynomial")) if M <= 60 else predicted
    from popdyn.models.additive_sim import teacher_labels

    acc, acc2, done = 0.0, 0.0, 0
    chunk = 50_000
    while done < n:
        X = rng.standard_normal((min(chunk, n - done), d))
        s = teacher_labels(problem, X) ** 2 * problem.student.derivative(X @ w) ** 2
        acc += s.sum()
        acc2 += (s ** 2).sum()
        done += X.shape[0]
    mc = acc / n
    se = math.sqrt(max(acc2 / n - mc ** 2, 0.0) / n)
    ok = abs(mc - predicted) <= MC_SIGMAS * se and abs(wick - predicted) <= 1e-10 * abs(predicted)
    return ClaimResult(PAPER, f"noise_moment (M={M}, d={d}, he3 student, two links)", predicted=round(predicted, 6),
                       measured=round(mc, 6), tolerance=f"{MC_SIGMAS:g} SE = {MC_SIGMAS * se:.2g}", passed=bool(ok),
                       details=f"Hadamard-power Wick form vs {n} Monte Carlo samples; the k^2-loop Wick form gives "
                               f"{wick:.12g}")


def claim_localisation(quick: bool, rng):
    from popdyn import initial_state, integrate

    M, d = (12, 144) if quick else (20, 400)
    J = math.ceil(2 * M * math.log(M))
    rows = []
    for kind in ("orthogonal", "random"):
        for p in (3, 4):
            V = task_directions(M, d, kind=kind, rng=_seed(rng))
            problem = AdditiveProblem(f"he{p}", f"he{p}", V, n_neurons=J)
            _, _, u0 = initial_state(problem, d, rng=_seed(rng))
            traj = integrate(problem, u0, _flow_horizon(problem, u0, p), n_times=10, rtol=1e-7, atol=1e-9,
                             progress=False)
            rep = localisation_report(problem, u0, traj.final("u")[0])
            need = 1.0 if kind == "orthogonal" else RACE_FRACTION[p]
            rows.append(ClaimResult(
                PAPER, f"localisation (h{p}, {kind} V, M={M}, d={d}, J={J})",
                predicted=f"all localise; winner = race from the start for >= {need:.0%}",
                measured=f"{rep.fraction_localised:.1%} localised, winner = race {rep.fraction_predicted:.1%}",
                tolerance=f"race >= {need:.0%}",
                passed=bool(rep.fraction_localised == 1.0 and rep.fraction_predicted >= need),
                details=f"overlap ODE (gradient flow) from Haar-uniform neurons; max |v_i.v_j| = "
                        f"{problem.max_overlap:.3f}; tasks covered {int(rep.covered[0])} of {M}"))
    return rows


def claim_coverage(quick: bool, rng):
    from popdyn import initial_state, integrate

    rows = []
    d = 100
    trials = 80 if quick else 400
    Ms = (4, 8) if quick else (4, 8, 16)
    for M in Ms:
        # even p: every neuron localises (q = 1); the race picks argmax |u_m(0)|, uniform over tasks
        J = math.ceil(M * math.log(M))
        J95 = width_for_coverage(M, confidence=0.95)
        V = task_directions(M, d, rng=_seed(rng))
        problem = AdditiveProblem("he4", "he4", V, n_neurons=trials * J95)
        _, _, u0 = initial_state(problem, d, rng=_seed(rng))
        # the flow to 3x the leading-order escape time of the slowest neuron (the leading-order
        # flow blows up at 1x), capped at 50x the median one
        traj = integrate(problem, u0, _flow_horizon(problem, u0, 4, factor=3.0), n_times=3, rtol=1e-8, atol=1e-10,
                         progress=False)
        loc, win, _ = localisation(traj.final("u")[0], level=0.5)
        win = np.where(loc, win, -1).reshape(trials, J95)

        def covered(width):
            return np.array([np.unique(row[:width][row[:width] >= 0]).size for row in win])

        law, law95 = coverage_law(M, J), coverage_law(M, J95)
        c = covered(J)
        mean, se = c.mean(), max(c.std(ddof=1), law.std) / math.sqrt(trials)
        p_all, p95 = float(np.mean(c == M)), float(np.mean(covered(J95) == M))

        def se_p(p):
            return math.sqrt(max(p * (1 - p), 1.0 / trials) / trials)

        ok = (abs(mean - law.expected) <= MC_SIGMAS * se and abs(p_all - law.p_all) <= MC_SIGMAS * se_p(law.p_all)
              and abs(p95 - law95.p_all) <= MC_SIGMAS * se_p(law95.p_all))
        rows.append(ClaimResult(
            PAPER, f"coverage (h4, random V, M={M}, d={d}; J = M log M = {J} and J_95 = {J95}; {trials} trials)",
            predicted=f"E covered {law.expected:.3f}, P(all | J) {law.p_all:.3f}, P(all | J_95) {law95.p_all:.3f}",
            measured=f"covered {mean:.3f}, P(all | J) {p_all:.3f}, P(all | J_95) {p95:.3f}",
            tolerance=f"{MC_SIGMAS:g} SE ({se:.3f}, {se_p(law.p_all):.3f}, {se_p(law95.p_all):.3f})", passed=bool(ok),
            details="winners (max_m |u_m| > 1/2) from the overlap ODE (gradient flow) of Haar-uniform neurons; the "
                    "coupon-collector law of M kinds; J_95 = the width the law says covers all tasks with "
                    f"probability 0.95 (M H_M = {harmonic_width(M):.1f} on average)"))
    return rows


def claim_sample_complexity(quick: bool, rng):
    from popdyn.models.additive_sim import samples_to_localise

    p = 3
    eta0 = 0.5
    R = 12 if quick else 32
    grids = {"M": [(M, 32 if quick else 48) for M in ((2, 6, 18) if quick else (2, 4, 8, 16, 32))],
             "d": [(2, d) for d in ((24, 48, 96) if quick else (24, 32, 48, 64, 96, 128))]}
    rows = []
    starts = ("fixed",) if quick else ("fixed", "uniform")
    for start in starts:
        for var, grid in grids.items():
            xs, meas, pred = [], [], []
            for M, d in grid:
                V = task_directions(M, d, kind="orthogonal", rng=_seed(rng))
                problem = AdditiveProblem(f"he{p}", f"he{p}", V, n_neurons=6 if quick else 8)
                init = fixed_start(M, d) if start == "fixed" else "uniform"
                lt = samples_to_localise(problem, eta0=eta0 if start == "fixed" else UNIFORM_ETA0, level=0.5,
                                         replicas=R, init=init, rng=_seed(rng), ode=start == "uniform",
                                         progress=False)
                xs.append(M if var == "M" else d)
                meas.append(lt.per_replica)
                # a replica whose median neuron the mean-field ODE traps at the equator (its eta^2 term
                # beats the drift of a neuron starting with tiny overlaps, which SGD's fluctuations
                # free) has no ODE prediction
                pred.append(lt.per_replica_ode[np.isfinite(lt.per_replica_ode)])
            fit = loglog_slope(xs, meas)
            law = 1.0 if var == "M" else p - 1.0
            tol = MC_SIGMAS * fit.slope_se + SLOPE_ALLOWANCE
            if start == "fixed":
                ok = abs(fit.slope - law) <= tol
                target, detail = law, "asymptotic exponent of n ~ M d^(p-1)"
            else:
                ode_fit = loglog_slope(xs, pred)
                ok = abs(fit.slope - ode_fit.slope) <= MC_SIGMAS * math.hypot(fit.slope_se, ode_fit.slope_se) + \
                    SLOPE_ALLOWANCE
                target = round(ode_fit.slope, 3)
                detail = (f"overlap ODE with the eta^2 term from the same starts (law exponent {law:g}; the max of M "
                          "initial overlaps adds a log M)")
            rows.append(ClaimResult(
                PAPER, f"sample_complexity (h{p}, {start} start, slope in {var}, orthogonal V, eta0 = "
                       f"{eta0 if start == 'fixed' else UNIFORM_ETA0})",
                predicted=target, measured=f"{fit.slope:.3f} +- {fit.slope_se:.3f}", tolerance=f"{tol:.3f}",
                passed=bool(ok),
                details=f"{detail}; median-neuron samples to max|u| = 1/2 over {R} replicas: "
                        f"{dict(zip(xs, np.round(np.exp(fit.log_y)).astype(int).tolist()))}"))
    return rows


def claim_phase_two(quick: bool, rng):
    from popdyn.models.additive_sim import (alignment_floor, flow_weights, kernel_baseline, phase_one, phase_two,
                                            sgd_step_size)

    M, d = (4, 40) if quick else (8, 64)
    J = math.ceil(2 * M * math.log(M))
    V = task_directions(M, d, rng=_seed(rng))
    problem = AdditiveProblem("he3", "he3", V, n_neurons=J)
    if quick:  # Phase I by the d-dimensional population flow (the infinite-sample limit of the SGD)
        W, how = flow_weights(problem, 60.0, rng=_seed(rng))[0], "d-dim gradient flow"
    else:
        res = phase_one(problem, eta=sgd_step_size(problem, 0.3), steps=2_000_000, replicas=1, stop_fraction=0.95,
                        anneal_steps=100_000, anneal_factor=0.1, rng=_seed(rng), progress=False)
        W, how = res.W[0], f"online SGD ({res.samples} samples)"
    ns = (8, 30, 100, 1000, 3000)
    errs = [float(phase_two(problem, W, n_train=n, rng=_seed(rng)).test_error[0]) for n in ns]
    floor = float(alignment_floor(problem, W)[0])
    bound = floor * (1.0 + 2.0 * 4 * J / ns[-1]) + FLOOR_SLACK
    kernel = kernel_baseline(problem, n_train=ns[-1], rng=_seed(rng))
    random_W = float(phase_two(problem, task_directions(J, d, rng=_seed(rng)), n_train=ns[-1],
                               rng=_seed(rng)).test_error[0])
    new = AdditiveProblem("he3", ["hermite:0,0,0.6,0.8", "he2"] * (M // 2), V, weights=rng.uniform(-2, 2, M),
                          n_neurons=J)
    transfer = float(phase_two(new, W, n_train=ns[-1], rng=_seed(rng)).test_error[0])
    t_floor = float(alignment_floor(new, W)[0])
    lasso = float(phase_two(problem, W, n_train=ns[-1], method="lasso", alpha=1e-3, rng=_seed(rng)).test_error[0])
    ok = (errs[-1] <= bound and transfer <= t_floor * (1.0 + 2.0 * 4 * J / ns[-1]) + FLOOR_SLACK
          and lasso <= 2 * bound and kernel > NOT_LEARNED and random_W > NOT_LEARNED and errs[0] > 10 * errs[-1])
    return ClaimResult(
        PAPER, f"phase_two (h3, M={M}, d={d}, J={J}; Phase I by {how})",
        predicted=f"ridge error <= alignment floor {floor:.4f} (+ estimation) = {bound:.4f} at n = {ns[-1]}; kernel "
                  f"ridge and a random first layer > {NOT_LEARNED}",
        measured=f"ridge {dict(zip(ns, np.round(errs, 4).tolist()))}, LASSO {lasso:.4f}, transfer {transfer:.4f} "
                 f"(its floor {t_floor:.4f}); kernel {kernel:.3f}, random first layer {random_W:.3f}",
        tolerance=f"floor x (1 + 2p/n) + {FLOOR_SLACK}; LASSO within 2x; baselines > {NOT_LEARNED}", passed=bool(ok),
        details=f"relative test errors (1 = the mean); {J * 4} features sigma(w_j.x + b), b ~ U[-1, 1], 4 per neuron; "
                "transfer = new links (h2 + h3 mix and h2) and weights on the same directions; floor = error if each "
                "task were fitted along its best neuron only (alignment_floor)")


CLAIMS = [
    Claim(PAPER, "overlap_ode", "per-neuron overlap ODE du/dt = M^-1/2 [G g'(u) - (u.g'(u)) u] closes the d-dim flow",
          claim_overlap_ode),
    Claim(PAPER, "noise_moment", "the online-SGD eta^2 coefficient C(u) for many tasks (exact form vs Monte Carlo)",
          claim_noise_moment),
    Claim(PAPER, "localisation", "student neurons localise on single task directions, the one the race from the start "
                                 "picks", claim_localisation),
    Claim(PAPER, "coverage", "J ~ M log M neurons cover all M tasks (coupon collector)", claim_coverage),
    Claim(PAPER, "sample_complexity", "SGD localises with n ~ M d^(p-1) samples", claim_sample_complexity),
    Claim(PAPER, "phase_two", "convex second layer on the localised features learns the target and transfers; kernels "
                              "do not", claim_phase_two),
    *SQ_CLAIMS,
]
