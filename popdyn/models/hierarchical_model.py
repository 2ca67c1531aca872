r"""The hierarchical-polynomial model's declaration (arXiv 2311.13774): targets
:math:`h = g\circ p` and the three-layer network trained layer-wise.

``popdyn predict --model hierarchical`` reports the approximate Stein lemma's numbers
(:math:`c^* = E[g']`, :math:`\|P_k h - c^*p\|^2`, the low-degree mass; exact, from
:mod:`popdyn.chaos`), the population correlation :math:`\rho_\infty` of stage 1's target with
:math:`p`, and the predicted sample scales: :math:`D_k(d) \sim d^k` for the network against
:math:`D_{kq}(d) \sim d^{kq}` for a kernel method.  ``popdyn simulate --model hierarchical``
trains the network layer-wise at one stage-1 size ``--n1`` (optionally with the kernel
baseline and end-to-end GD on the same sizes) and reports the learned feature's correlation
with :math:`p` and the test errors.
"""

from __future__ import annotations

from ..model import Model, Option, Prediction

__all__ = ["MODEL", "DEFAULT_D", "MAX_KERNEL_SAMPLES"]

#: Dimension when ``--d`` is not given: the network's span D_2(12) = 91 and the kernel's
#: D_4(12) = 1820 are both within seconds.
DEFAULT_D = 12
#: Default stage-1 samples in units of D_k(d) (the correlation is ~0.93 there for the default target).
N1_FACTOR = 8
#: Largest kernel-baseline sample size: the dual solve is O(n^3) (n = 20000: ~3 GB per replica).
MAX_KERNEL_SAMPLES = 20_000
#: Largest kernel work, replicas x n^3/3 multiply-adds of the Cholesky solves (1e12: minutes on two
#: cores; measured 2.4e11 in ~2.5 min on a loaded 2-core machine).
MAX_KERNEL_WORK = 10**12
#: predict evaluates the stage-1 law (a Monte Carlo average of K_k(x, x), d coordinates per sample)
#: up to this dimension, with LAW_SAMPLES samples (~1 s at d = 2000).
MAX_LAW_D = 2000
LAW_SAMPLES = 50_000
#: Largest product replicas x n1 x m1 of stage-1 feature entries accumulated (time, not memory:
#: 2e10 multiply-adds for the normal equations take minutes on two cores).
MAX_STAGE1_WORK = 2 * 10**10


def _check_nonneg(value) -> None:
    if value < 0:
        raise ValueError(f"must be >= 0, got {value:g}")


def _validate(opts, given) -> None:
    if "d" not in given:
        opts.d = DEFAULT_D
    if getattr(opts, "command", None) == "simulate" and "lr" in given and not opts.gd_steps:
        raise ValueError("`--lr` is the step of end-to-end GD and applies with `--gd-steps` N > 0 only.")


def _build(opts):
    import numpy as np

    from .hierarchical import HierarchicalProblem

    weights = None
    if opts.weights == "random":
        from .._validation import check_int

        L = opts.d if opts.n_pieces is None else check_int("n_pieces", opts.n_pieces, minimum=1, maximum=opts.d)
        weights = tuple(np.random.default_rng(opts.seed).standard_normal(L))
    return HierarchicalProblem(opts.d, opts.k, link=opts.link, piece=opts.piece, n_pieces=opts.n_pieces,
                               weights=weights, noise=opts.noise)


def _predict(problem, opts) -> Prediction:
    import math

    from .hierarchical import dimension_slope, stage1_law

    k, q, d = problem.k, problem.q, problem.d
    out = {"model": "hierarchical", "problem": problem.describe(), "d": d, "k": k, "q": q,
           "c_star": problem.c_star}
    lines = [f"hierarchical target h = g(p): g = {problem.g.name} (degree q = {q}), p = sum of {problem.L} pieces "
             f"{problem.piece_function.name} (degree k = {k}), "
             f"{'equal' if problem.equal_weights else 'random'} weights, d = {d}"]
    if problem.equal_weights:
        lemma = problem.stein_lemma()
        out["stein_lemma"] = {"c_star": str(lemma.c_star), "err2": float(lemma.err2), "err2_exact": str(lemma.err2),
                              "err2_in_L": str(lemma.err2_in_L), "err2_regime": lemma.err2_regime,
                              "low_mass": float(lemma.low_mass), "low_mass_exact": str(lemma.low_mass),
                              "low_mass_in_L": str(lemma.low_mass_in_L), "low_mass_regime": lemma.low_mass_regime}
        lines.append(f"  approximate Stein lemma (exact, L = {problem.L}): c* = E[g'] = {lemma.c_star}; "
                     f"||P_k h - c* p||^2 = {lemma.err2} = {float(lemma.err2):.6g} [{lemma.err2_regime}: "
                     f"{lemma.err2_in_L}]; low-degree mass sum_(1<=j<k) ||P_j h||^2 = {float(lemma.low_mass):.6g} "
                     f"[{lemma.low_mass_regime}]")
    pop = problem.population(rng=opts.seed)
    out["population"] = pop.as_dict()
    how = "exact" if pop.exact else f"Monte Carlo, {pop.se.get('n_samples')} samples"
    lines.append(f"  stage 1's target P_(<=k) h = E[h] + ...: E[h] = {pop.mean:.6g}, E[h p] = {pop.overlap:.6g}, "
                 f"sum_(1<=j<=k) ||P_j h||^2 = {pop.stage1_mass:.6g}; correlation with p rho_inf = {pop.rho_inf:.6g}"
                 f"{' (exactly affine in p)' if pop.affine else ''} ({how})")
    if problem.c_star == 0:
        lines.append("  E[g'] = 0: the Stein lemma's failure mode, stage 1 sees only the O(1/L) remainder of p")
    grid = sorted({max(2, d // 2), d, 2 * d})
    scales = {"network": {"samples": problem.stage1_dimension, "exponent": k,
                          "local_slope": dimension_slope(grid, k)},
              "kernel": {"samples": problem.kernel_dimension, "exponent": k * q,
                         "local_slope": dimension_slope(grid, k * q)}}
    out["sample_scales"] = scales
    out["local_slope_grid"] = grid
    lines.append(f"  samples: network stage 1 ~ D_k(d) = C(d+k, k) = {problem.stage1_dimension} ~ d^{k} (local slope "
                 f"{scales['network']['local_slope']:.3f} on d in {grid}) + O(1) for stage 2; kernel ~ D_kq(d) = "
                 f"C(d+kq, kq) = {problem.kernel_dimension} ~ d^{k * q} (local slope "
                 f"{scales['kernel']['local_slope']:.3f})")
    if pop.affine and d <= MAX_LAW_D:
        law = stage1_law(problem, n_samples=LAW_SAMPLES, rng=opts.seed)
        n90 = law.A / (law.overlap ** 2 * (1 / 0.81 - 1))
        out["stage1_law"] = {"A": law.A, "A_se": law.A_se, "n_for_correlation_0.9": n90}
        lines.append(f"  stage-1 law (least squares, m1 >= D_k): E[(p_hat - P_(<=k) h)^2] ~ A/n1 with A = {law.A:.4g} "
                     f"+- {law.A_se:.2g}; corr(p_hat, p) = 0.9 at n1 ~ {math.ceil(n90)} = "
                     f"{n90 / problem.stage1_dimension:.2f} D_k(d)")
    return Prediction(out, lines, None, None)


def _simulate(problem, opts, **run):
    import math

    import numpy as np

    from .._budget import fmt_count
    from ..trajectory import Trajectory
    from .hierarchical_sim import init_network, kernel_curve, layerwise_curve, train_end_to_end

    D = problem.stage1_dimension
    n1 = N1_FACTOR * D if opts.n1 is None else opts.n1
    m1 = math.ceil(2 * D) if opts.m1 is None else opts.m1
    R = opts.replicas
    if R * n1 * m1 > MAX_STAGE1_WORK:
        raise ValueError(f"`--n1` x `--m1` x `--replicas` = {fmt_count(n1)} x {fmt_count(m1)} x {R} stage-1 feature "
                         f"entries exceeds the budget {MAX_STAGE1_WORK:.0e} (minutes of normal equations); lower "
                         f"--n1, --m1, --replicas or --d.")
    if opts.kernel and n1 + opts.n2 > MAX_KERNEL_SAMPLES:
        raise ValueError(f"`--kernel` fits on n1 + n2 = {n1 + opts.n2} samples, more than MAX_KERNEL_SAMPLES = "
                         f"{MAX_KERNEL_SAMPLES} (the dual solve is O(n^3)); lower --n1 or --n2.")
    if opts.kernel and R * (n1 + opts.n2) ** 3 / 3 > MAX_KERNEL_WORK:
        raise ValueError(f"`--kernel` on n1 + n2 = {n1 + opts.n2} samples x {R} replicas needs ~"
                         f"{R * (n1 + opts.n2) ** 3 / 3:.2g} multiply-adds, over MAX_KERNEL_WORK = {MAX_KERNEL_WORK:.0e} "
                         f"(minutes); lower --n1, --n2 or --replicas.")
    from .._budget import check_memory, nbytes

    for name, size in (("n1", n1), ("n2", opts.n2), ("n_test", opts.n_test)):
        check_memory(nbytes(R, size, problem.d + m1), driver=name, value=size, flag="--" + name.replace("_", "-"),
                     what=f"the samples and their features (replicas x {name} x (d + m1))")
    init_network(problem, m1=m1, m2=opts.m2, sigma1=opts.sigma1, replicas=1, rng=0)  # sigma1, widths: errors first
    gen = np.random.default_rng(opts.seed)
    x1, y1, p1 = problem.sample(n1, replicas=R, rng=gen)
    xt, yt, pt = problem.sample(opts.n_test, replicas=R, rng=gen)
    data = {"x1": x1, "y1": y1, "p1": p1, "xtest": xt, "ytest": yt, "ptest": pt}
    curve = layerwise_curve(problem, [n1], n2=opts.n2, m1=m1, m2=opts.m2, sigma1=opts.sigma1, ridge1=opts.ridge1,
                            ridge2=opts.ridge2, n_test=opts.n_test, replicas=R, rng=gen, data=data)
    overlaps = {"correlation": curve.correlation, "test_error": curve.test_error,
                "stage1_error": curve.stage1_error}
    meta = {"n1": n1, "n2": opts.n2, "m1": m1, "m2": opts.m2, "ridge1": opts.ridge1, "ridge2": opts.ridge2,
            "n_test": opts.n_test, "sigma1": opts.sigma1 or f"he{problem.k}", "seed": opts.seed,
            "stage1_dimension": D, "kernel_dimension": problem.kernel_dimension, "problem": problem.describe()}
    parts = [f"layer-wise: corr(p_hat, p) = {np.mean(curve.correlation):.4f}, test error "
             f"{np.mean(curve.test_error):.4f}"]
    if opts.kernel:
        n = n1 + opts.n2
        x2, y2, p2 = problem.sample(opts.n2, replicas=R, rng=gen)
        kdata = {"x1": np.concatenate([x1, x2], axis=1), "y1": np.concatenate([y1, y2], axis=1),
                 "p1": np.concatenate([p1, p2], axis=1), "xtest": xt, "ytest": yt, "ptest": pt}
        kc = kernel_curve(problem, [n], n_test=opts.n_test, replicas=R, rng=gen, data=kdata)
        overlaps["kernel_test_error"] = kc.test_error
        meta["kernel"] = {"n": n, **{k: v for k, v in kc.meta.items() if k != "problem"}}
        parts.append(f"kernel (n = {n}): test error {np.mean(kc.test_error):.4f}")
    if opts.gd_steps:
        e2e = train_end_to_end(problem, n=n1 + opts.n2, steps=opts.gd_steps, lr=opts.lr, m1=m1, m2=opts.m2,
                               sigma1=opts.sigma1, n_test=opts.n_test, replicas=R, rng=gen)
        overlaps["gd_test_error"] = e2e.test_error[-1:]
        overlaps["gd_correlation"] = e2e.correlation[-1:]
        overlaps["gd_train_loss"] = e2e.train_loss[-1:]
        meta["end_to_end"] = {"n": n1 + opts.n2, "steps": opts.gd_steps, "lr": opts.lr}
        parts.append(f"end-to-end GD ({opts.gd_steps} steps): corr {np.mean(e2e.correlation[-1]):.4f}, test error "
                     f"{np.mean(e2e.test_error[-1]):.4f}")
    message = "; ".join(parts) + "."
    return Trajectory(t=np.array([float(n1)]), overlaps=overlaps, time_unit="stage-1 samples n1", source="simulation",
                      model="hierarchical", status=0, message=message, meta=meta)


MODEL = Model(
    name="hierarchical",
    description="h = g(p(x)) with a degree-k feature p: three-layer network trained layer-wise (d^k samples) vs a "
                "kernel (d^(kq)); approximate Stein lemma (arXiv 2311.13774)",
    papers=("2311.13774",),
    options=(
        Option("k", "int", 2, "degree k of the feature p (default 2)", minimum=1, maximum=6, flag="--k"),
        Option("link", "str", "hermite:0,1,1", "polynomial link g (activation spec; default hermite:0,1,1 = h1 + h2)"),
        Option("piece", "str", None, "degree-k piece q of p = sum_l lambda_l q(x_l) (default he<k>; E[q] = 0)"),
        Option("n_pieces", "int", None, "number L of coordinates carrying a piece (default d)", positive=True),
        Option("weights", "str", "equal", "weights lambda_l: equal (the Stein-lemma feature) or random (N(0,1) from "
                                          "--seed, the paper's experiment)", choices=("equal", "random")),
        Option("noise", "float", 0.0, "label-noise standard deviation (default 0)", check=_check_nonneg),
        Option("n1", "int", None, "stage-1 samples (default 8 D_k(d))", positive=True, verbs=("simulate",)),
        Option("n2", "int", 500, "stage-2 samples (default 500)", minimum=2, verbs=("simulate",)),
        Option("m1", "int", None, "first-layer width (default 2 D_k(d))", positive=True, verbs=("simulate",)),
        Option("m2", "int", 32, "second-layer (ReLU) width (default 32)", positive=True, verbs=("simulate",)),
        Option("sigma1", "str", None, "first-layer activation: a polynomial of degree k (default he<k>)",
               verbs=("simulate",)),
        Option("ridge1", "float", 1e-6, "stage-1 ridge, relative to the unit feature variance (0 needs n1 > m1)",
               check=_check_nonneg, verbs=("simulate",)),
        Option("ridge2", "float", 1e-4, "stage-2 ridge (0 needs n2 > m2)", check=_check_nonneg, verbs=("simulate",)),
        Option("n_test", "int", 4000, "test samples (default 4000)", minimum=2, verbs=("simulate",)),
        Option("kernel", "bool", False, "also fit the kernel baseline (1 + x.x'/d)^(kq) on n1 + n2 samples",
               verbs=("simulate",)),
        Option("gd_steps", "int", 0, "also train all layers end to end by this many full-batch GD steps on n1 + n2 "
                                     "samples (default 0: no)", minimum=0, verbs=("simulate",)),
        Option("lr", "float", 0.02, "end-to-end GD step size (default 0.02)", positive=True, verbs=("simulate",)),
    ),
    uses={"predict": ("d", "seed"), "simulate": ("d", "seed", "replicas", "out")},
    build=_build,
    predict=_predict,
    simulate=_simulate,
    validate=_validate,
    compare=False,
)
