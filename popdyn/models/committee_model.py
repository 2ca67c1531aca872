"""The committee machine's declaration: a two-layer network under the squared loss trained
by online SGD (Saad and Solla 1995; Goldt et al. 2019, arXiv 1906.08632), ``erf`` meaning
``erf(z/sqrt 2)``.

``popdyn predict --model committee`` integrates the order-parameter ODE and reports the
generalisation error along the way and the final ``Q``, ``M``; ``popdyn simulate --model
committee`` runs online SGD with ``eta = delta/d`` (full or exact d-free engine).
"""

from __future__ import annotations

from ..model import DEFAULT_DELTA, Model, Option, Prediction, ode_options, parse_init

__all__ = ["MODEL"]

#: Default predict horizon (the classic K = M = 2 erf plateau ends by t ~ 100).
DEFAULT_T_END = 200.0


def _build(opts):
    from .._budget import check_memory, nbytes
    from .committee import CommitteeProblem

    # the ODE's right-hand side holds the K^2 (K+M)^2 four-point Gaussian integrals I4 with
    # their index tuples and 4x4 covariances (~50 bytes each, counted as 64)
    name, value = max((("K", opts.K), ("M", opts.M)), key=lambda nv: nv[1])
    check_memory(nbytes(opts.K, opts.K, opts.K + opts.M, opts.K + opts.M, itemsize=64), driver=name, value=value,
                 what="the K^2 (K+M)^2 Gaussian integrals I4 of the committee ODE", flag=f"--{name}")
    delta = DEFAULT_DELTA if opts.delta is None else opts.delta
    return CommitteeProblem(opts.student or "erf", opts.teacher or "erf", K=opts.K, M=opts.M, delta=delta,
                            train_second_layer=opts.train_second_layer, noise=opts.noise,
                            conventions=opts.conventions)


def _predict(problem, opts) -> Prediction:
    import numpy as np

    from ..ode import integrate
    from ..simulation import initial_state
    from .committee import add_eps_g

    state0 = initial_state(problem, opts.d, init=parse_init(opts.init), rng=opts.seed)[2]
    traj = add_eps_g(problem, integrate(problem, state0, opts.t_end or DEFAULT_T_END, batch=opts.batch,
                                        **ode_options(opts)))
    eg = traj.overlaps["eps_g"][:, 0]
    out = {"model": "committee", "problem": problem.describe(), "t_final": float(traj.t[-1]),
           "time_unit": traj.time_unit, "eps_g_initial": float(eg[0]), "eps_g_final": float(eg[-1]),
           "Q_final": traj.final("Q")[0].tolist(), "M_final": traj.final("M")[0].tolist(), "message": traj.message}
    names = problem.overlap_names
    lines = [f"committee machine ODE ({problem.student.name} student K = {problem.K}, {problem.teacher.name} teacher "
             f"M = {problem.M}, delta = {problem.delta}), to t = {out['t_final']:.6g} ({out['time_unit']})"]
    for t in np.unique(np.geomspace(max(traj.t[1], 1e-3), traj.t[-1], 8)):
        i = int(np.argmin(np.abs(traj.t - t)))
        lines.append(f"  t = {traj.t[i]:<10.4g} eps_g = {eg[i]:.6g}")
    lines.append(f"  final {names['Q']} = {np.round(out['Q_final'], 4).tolist()}, {names['M']} = "
                 f"{np.round(out['M_final'], 4).tolist()}")
    return Prediction(out, lines, traj, "eps_g")


def _simulate(problem, opts, **run):
    from .committee import simulate_committee

    if opts.algorithm != "sgd":
        raise ValueError(f"`--algorithm` must be 'sgd' for --model committee (online SGD); got {opts.algorithm!r}.")
    return simulate_committee(problem, d=opts.d, t_end=opts.t_end, replicas=opts.replicas,
                              init=parse_init(opts.init), batch=opts.batch, rng=opts.seed, engine=opts.engine,
                              **run)


MODEL = Model(
    name="committee",
    description="two-layer network, squared loss, online SGD with eta = delta/d (Saad-Solla; erf = erf(z/sqrt 2))",
    options=(
        Option("student", "str", None, "student activation spec (default erf)"),
        Option("teacher", "str", None, "teacher activation spec (default erf)"),
        Option("K", "int", 2, "student hidden units (default 2)", positive=True, flag="--K"),
        Option("M", "int", 2, "teacher hidden units (default 2)", positive=True, flag="--M"),
        Option("train_second_layer", "bool", False, "train the second layer"),
        Option("noise", "float", 0.0, "label-noise variance"),
        Option("conventions", "str", "popdyn", "naming/scaling of order parameters and time",
               choices=("popdyn", "saad-solla")),
    ),
    uses={"predict": ("d", "seed", "init", "t_end", "delta", "batch", "out", "plot"),
          "simulate": ("d", "seed", "init", "t_end", "delta", "batch", "algorithm", "replicas", "out", "checkpoint",
                       "checkpoint_every", "engine"),
          "compare": ("d", "seed", "init", "t_end", "delta", "batch", "replicas", "plot", "engine")},
    build=_build,
    predict=_predict,
    simulate=_simulate,
)
