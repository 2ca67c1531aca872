"""Hierarchical polynomials h = g(p) and the three-layer network (arXiv 2311.13774).

Every formula meets an independent route: dimension counts against explicit enumeration,
the reproducing-kernel diagonal against popdyn.chaos's basis, exact population numbers
(popdyn.chaos) against Monte Carlo with its standard error, stage 1 against ordinary least
squares in an explicit Hermite basis, the kernel's dual solve (scikit-learn) against the
primal ridge on the kernel's explicit feature map (popdyn.readout), the hand-written
backward pass against finite differences.  Statistical checks run over several seeds.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from popdyn.chaos import ZeroSteinCoefficientWarning, chaos_basis
from popdyn.cli import main
from popdyn.models.hierarchical import (HierarchicalProblem, christoffel_diagonal, dimension_laws, dimension_slope,
                                        poly_dimension, stage1_law)
from popdyn.models.hierarchical_sim import (ThreeLayerNetwork, fit_exponent, init_network, kernel_curve,
                                            layerwise_curve, loss_and_gradients, sample_exponents, samples_to_reach,
                                            train_end_to_end, train_layerwise)

#: Monte Carlo agreement: standard errors allowed (|z| > 5 has probability 6e-7 per check).
MC_SIGMAS = 5.0
#: Stage 1 with ridge lambda differs from least squares by O(lambda) (measured: 28 lambda at d = 5
#: for features of unit variance); the bound below is 1e3 lambda times the target's scale.
RIDGE_BIAS_FACTOR = 1e3
#: Dual (scikit-learn) vs primal (normal equations) kernel ridge: the same predictor; the primal
#: normal equations square the condition number (~1e6 at ridge 1e-3), so ~1e-9 relative.
DUAL_PRIMAL_RTOL = 1e-7
#: Central finite differences with step 1e-6 on a smooth (almost surely kink-free) point.
FD_STEP, FD_RTOL = 1e-6, 1e-5


def _data(prob, n, n_test, R, seed):
    gen = np.random.default_rng(seed)
    x1, y1, p1 = prob.sample(n, replicas=R, rng=gen)
    xt, yt, pt = prob.sample(n_test, replicas=R, rng=gen)
    return {"x1": x1, "y1": y1, "p1": p1, "xtest": xt, "ytest": yt, "ptest": pt}


# -- dimension counts --------------------------------------------------------------------
@pytest.mark.parametrize("d, m", [(1, 3), (3, 2), (5, 4), (7, 3)])
def test_poly_dimension_counts_monomials(d, m):
    count = sum(1 for j in range(m + 1) for _ in itertools.combinations_with_replacement(range(d), j))
    assert poly_dimension(d, m) == count


def test_dimension_slope_is_the_loglog_fit_and_tends_to_m():
    ds = (6, 8, 10, 12)
    direct = np.polyfit(np.log(ds), np.log([math.comb(d + 3, 3) for d in ds]), 1)[0]
    assert dimension_slope(ds, 3) == pytest.approx(direct, rel=1e-12)
    assert dimension_slope((10**5, 2 * 10**5), 4) == pytest.approx(4.0, abs=1e-3)
    laws = dimension_laws(ds, 4)
    assert list(laws) == ["D_1", "D_2", "D_3", "D_4"] and np.all(np.diff(list(laws.values())) > 0)
    with pytest.raises(ValueError, match="`ds`"):
        dimension_slope((6,), 2)
    with pytest.raises(ValueError, match="`ds`"):
        dimension_slope((6, 6.5), 2)


@pytest.mark.parametrize("d, k", [(1, 3), (3, 2), (4, 3)])
def test_christoffel_diagonal_against_the_chaos_basis(d, k):
    x = np.random.default_rng(d + k).standard_normal((50, d))
    direct = sum((chaos_basis(x, j)[0] ** 2).sum(axis=1) for j in range(k + 1))
    np.testing.assert_allclose(christoffel_diagonal(x, k), direct, rtol=1e-12)


def test_christoffel_diagonal_has_mean_D():
    x = np.random.default_rng(0).standard_normal((200_000, 4))
    K = christoffel_diagonal(x, 2)
    assert abs(K.mean() - poly_dimension(4, 2)) < MC_SIGMAS * K.std() / math.sqrt(K.size)


# -- the problem -------------------------------------------------------------------------
def test_defaults_and_describe():
    prob = HierarchicalProblem(12, 2)
    assert (prob.q, prob.c_star, prob.L, prob.equal_weights) == (2, 1.0, 12, True)
    assert (prob.stage1_dimension, prob.kernel_dimension) == (91, 1820)
    assert prob.describe()["piece"] == "he2" and prob.describe()["weights"] == "equal"
    e = HierarchicalProblem.experiment(12, rng=0)
    assert (e.k, e.L, e.piece_function.name) == (3, 4, "he3") and not e.equal_weights
    assert e.lambdas == pytest.approx(HierarchicalProblem.experiment(12, rng=0).lambdas)


def test_feature_is_the_normalised_sum():
    prob = HierarchicalProblem(5, 3, piece="poly:z**3 - 3*z", n_pieces=3, weights=(1.0, -2.0, 0.5))
    x = np.random.default_rng(1).standard_normal((7, 5))
    lam = np.array([1.0, -2.0, 0.5])
    direct = ((x[:, :3] ** 3 - 3 * x[:, :3]) @ lam) / math.sqrt(6 * lam @ lam)   # E[He_3^2] = 6
    np.testing.assert_allclose(prob.feature(x), direct, rtol=1e-12)
    np.testing.assert_allclose(prob.target(x), prob.g(direct), rtol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(d=9, k=2), dict(d=9, k=3, n_pieces=4, weights=(0.3, -1.0, 2.0, 0.1)),
                                    dict(d=6, k=4, piece="poly:z**4 - 6*z**2 + 3")])
def test_feature_has_mean_zero_and_unit_variance(kwargs):
    prob = HierarchicalProblem(**kwargs)
    _, _, p = prob.sample(200_000, rng=3)
    assert abs(p.mean()) < MC_SIGMAS * p.std() / math.sqrt(p.size)
    p2 = p * p
    assert abs(p2.mean() - 1.0) < MC_SIGMAS * p2.std() / math.sqrt(p.size)


def test_labels_carry_the_noise():
    prob = HierarchicalProblem(4, 2, noise=0.5)
    x, y, p = prob.sample(100_000, rng=0)
    r = y - prob.g(p)
    assert abs(r.var() - 0.25) < MC_SIGMAS * 0.25 * math.sqrt(2 / r.size)


@pytest.mark.parametrize("kwargs, exc, needle", [
    (dict(d=0, k=2), ValueError, "`d`"),
    (dict(d=4, k=0), ValueError, "`k`"),
    (dict(d=4, k=7), ValueError, "`k`"),
    (dict(d=4, k=2.5), TypeError, "`k`"),
    (dict(d=4, k=2, link="relu"), ValueError, "`link`"),
    (dict(d=4, k=2, link="hermite:1"), ValueError, "`link`"),
    (dict(d=4, k=2, link="poly:z**11"), ValueError, "`link`"),
    (dict(d=4, k=2, link=3), TypeError, "`link`"),
    (dict(d=4, k=2, piece="he3"), ValueError, "`piece`"),
    (dict(d=4, k=2, piece="poly:z**2"), ValueError, "mean zero"),
    (dict(d=4, k=2, piece="tanh"), ValueError, "`piece`"),
    (dict(d=4, k=2, n_pieces=5), ValueError, "`n_pieces`"),
    (dict(d=4, k=2, n_pieces=2, weights=(1.0,)), ValueError, "`weights`"),
    (dict(d=4, k=2, n_pieces=2, weights=(0.0, 0.0)), ValueError, "`weights`"),
    (dict(d=4, k=2, n_pieces=2, weights=(1.0, float("nan"))), ValueError, "`weights`"),
    (dict(d=4, k=2, weights="equal"), TypeError, "`weights`"),
    (dict(d=4, k=2, noise=-1.0), ValueError, "`noise`"),
])
def test_bad_problems_name_the_argument(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        HierarchicalProblem(**kwargs)


def test_zero_stein_coefficient_is_allowed_but_warned():
    with pytest.warns(ZeroSteinCoefficientWarning, match="E\\[g'\\(z\\)\\] = c_1\\(g\\) = 0"):
        prob = HierarchicalProblem(6, 2, link="he3")
    assert prob.c_star == 0.0


# -- population numbers: exact (popdyn.chaos) vs Monte Carlo -----------------------------
@pytest.mark.parametrize("d, k, link, weights", [(6, 2, "hermite:0,1,1", None), (5, 3, "poly:z**3", None),
                                                 (6, 2, "poly:z + z**2/2", None),
                                                 (6, 2, "hermite:0,1,1", (1.0, -2.0, 0.5, 3.0, 1.0, 0.2)),
                                                 (5, 3, "poly:z + z**2", (0.3, 1.0, -0.7, 0.0, 0.1))])
def test_population_exact_matches_monte_carlo(d, k, link, weights):
    prob = HierarchicalProblem(d, k, link=link, weights=weights)
    ex = prob.population()
    mc = prob.population(method="mc", n_samples=200_000, rng=11)
    assert ex.exact and not mc.exact
    for name in ("mean", "overlap", "stage1_mass"):
        assert abs(getattr(mc, name) - getattr(ex, name)) < MC_SIGMAS * mc.se[name], name


def test_population_affine_cases():
    # k = 2, equal weights, even piece: P_<=2 h = E[h] + c p exactly (symmetry), any link
    ex = HierarchicalProblem(12, 2).population()
    assert ex.affine and ex.rho_inf == 1.0
    assert ex.overlap == pytest.approx(1 + 2 / math.sqrt(12), rel=1e-12)   # E[g(p) p] = 1 + E[p^3]/sqrt 2
    with pytest.warns(ZeroSteinCoefficientWarning):
        he3 = HierarchicalProblem(12, 2, link="he3")
    assert he3.population().stage1_mass == pytest.approx(24 / 144, rel=1e-12)    # ||P_2 h_3(p)||^2 = 24/L^2
    # k = 3 with an even part in g: the low-degree mass makes P_<=3 h not parallel to p
    k3 = HierarchicalProblem(8, 3).population()      # E[hp] = c* = 1, low-degree mass 9/L (popdyn.chaos)
    assert not k3.affine and k3.rho_inf == pytest.approx(1 / math.sqrt(1 + 9 / 8), rel=1e-12)
    lemma = HierarchicalProblem(12, 2).stein_lemma()
    assert lemma.c_star == 1 and float(lemma.err2) == pytest.approx(4 / 12, rel=1e-12)


def test_population_mc_refuses_too_many_basis_functions():
    prob = HierarchicalProblem(300, 2, n_pieces=10, weights=tuple(range(1, 11)))   # > MAX_PIECE_TYPES: MC route
    assert not prob.exact_route
    with pytest.raises(ValueError, match="`d` = 300"):
        prob.population()
    with pytest.raises(ValueError, match="at most 8 non-zero"):
        prob.projection()
    with pytest.raises(ValueError, match="equal `weights`"):
        prob.stein_lemma()


# -- the network -------------------------------------------------------------------------
def test_random_features_span_the_degree_k_polynomials():
    prob = HierarchicalProblem(5, 2)
    net = init_network(prob, replicas=1, rng=0)                   # m1 = 2 D = 42
    x = np.random.default_rng(1).standard_normal((400, 5))
    s = np.linalg.svd(net.features(x)[0], compute_uv=False)
    D = prob.stage1_dimension
    assert s[D - 1] / s[0] > 1e-6 and s[D] / s[0] < 1e-10          # rank exactly D = 21


def test_stage1_is_least_squares_in_the_hermite_basis():
    """ridge -> 0: p_hat is the OLS fit of y on (H_alpha)_{|alpha| <= k} (an independent basis)."""
    prob = HierarchicalProblem(5, 2)
    ridge = 1e-10
    data = _data(prob, 200, 300, 1, 0)
    _, net = layerwise_curve(prob, [200], ridge1=ridge, n_test=300, data=data, rng=1, return_network=True)
    B = np.concatenate([chaos_basis(data["x1"][0], j)[0] for j in range(3)], axis=1)
    Bt = np.concatenate([chaos_basis(data["xtest"][0], j)[0] for j in range(3)], axis=1)
    ols = Bt @ np.linalg.lstsq(B, data["y1"][0], rcond=None)[0]
    assert np.abs(net.feature(data["xtest"])[0] - ols).max() < RIDGE_BIAS_FACTOR * ridge * ols.std()


def test_network_output_is_the_papers_form():
    prob = HierarchicalProblem(6, 2)
    res = train_layerwise(prob, n1=300, n2=200, m2=8, replicas=2, n_test=100, rng=0)
    net = res.network
    x = np.random.default_rng(5).standard_normal((9, 6))
    for r in range(2):
        phi = net.features(x)[r]
        ph = phi @ net.u[r] + net.u0[r]
        out = ph + np.maximum(np.outer(ph, net.a[r]) + net.b[r], 0) @ net.c[r] + net.c0[r]
        np.testing.assert_allclose(net(x)[r], out, rtol=1e-12)
        z = x @ net.V[r].T + net.s[r]
        np.testing.assert_allclose(phi, (z * z - 1) / math.sqrt(2), rtol=1e-12, atol=1e-12)   # sigma1 = h_2
    assert np.allclose(np.linalg.norm(net.V, axis=2), math.sqrt(0.5))


@pytest.mark.parametrize("seed", range(3))
def test_stage1_recovers_p_and_fails_without_stein(seed):
    """corr(p_hat, p) at n1 = 32 D: ~0.98 for E[g'] = 1 (law: 0.98), ~0.45 for g = h_3 (law: 0.44)."""
    prob = HierarchicalProblem(8, 2)
    curve = layerwise_curve(prob, [4 * 45, 32 * 45], replicas=6, n_test=2000, rng=seed)
    assert curve.correlation[1].mean() >= 0.95
    assert np.all(curve.correlation[1] > curve.correlation[0])
    with pytest.warns(ZeroSteinCoefficientWarning):
        bad = HierarchicalProblem(8, 2, link="he3")
    corr = layerwise_curve(bad, [32 * 45], replicas=6, n_test=2000, rng=seed).correlation[0]
    assert corr.mean() < 0.9


def test_layerwise_is_reproducible_and_replicas_are_independent():
    prob = HierarchicalProblem(6, 2)
    a = train_layerwise(prob, n1=200, n2=100, m2=8, replicas=3, n_test=200, rng=7)
    b = train_layerwise(prob, n1=200, n2=100, m2=8, replicas=3, n_test=200, rng=7)
    np.testing.assert_array_equal(a.test_error, b.test_error)
    assert len(set(np.round(a.correlation, 12))) == 3
    assert a.meta["m1"] == 2 * prob.stage1_dimension and a.meta["seed"] == 7


@pytest.mark.parametrize("kwargs, exc, needle", [
    (dict(n1s=[10], ridge1=0.0), ValueError, "`ridge1` = 0"),
    (dict(n1s=[100], ridge2=0.0, n2=10, m2=32), ValueError, "`ridge2` = 0"),
    (dict(n1s=[100], sigma1="he1"), ValueError, "`sigma1`"),
    (dict(n1s=[100], sigma1="he3"), ValueError, "`sigma1`"),
    (dict(n1s=[100], sigma1="relu"), ValueError, "`sigma1`"),
    (dict(n1s=[100], sigma1=3), TypeError, "`sigma1`"),
    (dict(n1s=[100, 50]), ValueError, "`n1s`"),
    (dict(n1s=[0]), ValueError, "`n1s`"),
    (dict(n1s=[100], m1=0), ValueError, "`m1`"),
    (dict(n1s=[100], m2=-1), ValueError, "`m2`"),
    (dict(n1s=[100], n2=1), ValueError, "`n2`"),
    (dict(n1s=[100], n_test=1), ValueError, "`n_test`"),
    (dict(n1s=[100], replicas=0), ValueError, "`replicas`"),
])
def test_layerwise_bad_input(kwargs, exc, needle):
    prob = HierarchicalProblem(4, 2)
    with pytest.raises(exc, match=needle):
        layerwise_curve(prob, **kwargs)


def test_ridge_zero_is_least_squares_when_n_exceeds_the_features():
    prob = HierarchicalProblem(4, 2)
    D = prob.stage1_dimension
    res = train_layerwise(prob, n1=400, n2=200, m1=D, m2=8, ridge1=0.0, n_test=500, rng=0)  # m1 = D: independent
    assert res.correlation[0] > 0.9


# -- the kernel baseline -----------------------------------------------------------------
def _poly_kernel_features(x, m, d):
    """Explicit feature map of (1 + x.x'/d)^m: sqrt(C(m, j) j!/alpha! d^-j) x^alpha, |alpha| = j <= m."""
    cols = []
    for j in range(m + 1):
        for combo in itertools.combinations_with_replacement(range(x.shape[1]), j):
            counts = np.bincount(np.array(combo, dtype=int), minlength=x.shape[1])
            w = math.comb(m, j) * math.factorial(j) / math.prod(math.factorial(c) for c in counts) / d ** j
            cols.append(math.sqrt(w) * np.prod(x ** counts, axis=1))
    return np.stack(cols, axis=1)


def test_kernel_dual_solve_equals_the_primal_ridge():
    from popdyn.readout import fit_readout

    prob = HierarchicalProblem(4, 2)
    ridge = 1e-3
    data = _data(prob, 150, 80, 1, 2)
    curve = kernel_curve(prob, [100, 150], ridge=ridge, n_test=80, data=data, rng=0)
    x, y, xt, yt = data["x1"][0], data["y1"][0], data["xtest"][0], data["ytest"][0]
    np.testing.assert_allclose(_poly_kernel_features(x[:7], 4, 4) @ _poly_kernel_features(x[:5], 4, 4).T,
                               (1 + x[:7] @ x[:5].T / 4) ** 4, rtol=1e-12)
    for j, n in enumerate((100, 150)):
        fit = fit_readout(_poly_kernel_features(x[:n], 4, 4), y[:n], alpha=ridge, fit_intercept=False)
        err = np.mean((fit.predict(_poly_kernel_features(xt, 4, 4)) - yt) ** 2) / np.var(yt)
        assert curve.test_error[j, 0] == pytest.approx(err, rel=DUAL_PRIMAL_RTOL)


def test_kernel_interpolates_h_from_D_kq_samples_and_not_from_half():
    """h has degree kq = 4 and lies in the RKHS: n = D_4 noiseless samples determine it."""
    prob = HierarchicalProblem(6, 2)
    D4 = prob.kernel_dimension                                      # 210
    curve = kernel_curve(prob, [D4 // 2, int(1.2 * D4)], replicas=2, n_test=500, rng=0)
    assert np.all(curve.test_error[0] > 0.3) and np.all(curve.test_error[1] < 1e-3)


# -- end-to-end gradient descent ---------------------------------------------------------
def test_backward_pass_matches_finite_differences():
    prob = HierarchicalProblem(3, 2)
    net = init_network(prob, m1=4, m2=3, replicas=2, rng=0)
    gen = np.random.default_rng(1)
    net = ThreeLayerNetwork(**{**{f: getattr(net, f) for f in ("V", "s", "a", "b", "sigma1")},
                               "u": gen.standard_normal((2, 4)), "u0": gen.standard_normal(2),
                               "c": gen.standard_normal((2, 3)), "c0": gen.standard_normal(2)})
    x, y, _ = prob.sample(7, replicas=2, rng=2)
    _, grads = loss_and_gradients(net, x, y)
    for name, g in grads.items():
        base = getattr(net, name)
        for idx in np.ndindex(*base.shape):
            plus, minus = base.copy(), base.copy()
            plus[idx] += FD_STEP
            minus[idx] -= FD_STEP
            lp = loss_and_gradients(ThreeLayerNetwork(**{**net.__dict__, name: plus}), x, y)[0][idx[0]]
            lm = loss_and_gradients(ThreeLayerNetwork(**{**net.__dict__, name: minus}), x, y)[0][idx[0]]
            fd = (lp - lm) / (2 * FD_STEP)
            assert g[idx] == pytest.approx(fd, rel=FD_RTOL, abs=FD_RTOL), (name, idx)


def test_end_to_end_gd_decreases_the_loss_and_learns_the_feature():
    prob = HierarchicalProblem(6, 2)
    res = train_end_to_end(prob, n=1500, steps=300, replicas=2, n_test=1000, rng=0)      # lr = DEFAULT_LR
    assert res.steps[0] == 0 and res.steps[-1] == 300
    assert np.all(np.diff(res.train_loss, axis=0) <= 1e-12)          # monotone at this step size
    assert np.all(res.correlation[-1] > 0.95) and np.all(res.test_error[-1] < 0.3)


def test_end_to_end_divergence_names_the_step():
    from popdyn.errors import NumericalError

    with pytest.raises(NumericalError, match=r"lr.*at step \d+"):
        train_end_to_end(HierarchicalProblem(4, 2), n=50, steps=200, lr=1e6, rng=0)


# -- sample complexity -------------------------------------------------------------------
def test_samples_to_reach_interpolates_a_power_law():
    ns = np.array([100, 200, 400, 800])
    errs = 50.0 / ns                                                # error = 50/n: 0.1 at n = 500
    assert samples_to_reach(ns, errs[:, None], 0.1)[0] == pytest.approx(500.0, rel=1e-12)
    assert samples_to_reach(ns, errs[:, None], 1.0)[0] == 100       # below the level from the start
    assert samples_to_reach(ns, errs[:, None], 0.01)[0] == math.inf
    # the last crossing from above counts: a dip that comes back up is ignored
    assert samples_to_reach(ns, [[0.5], [0.05], [0.5], [0.01]], 0.1)[0] > 400


def test_fit_exponent_recovers_an_exact_power_law():
    ds = np.array([6, 8, 12, 16])
    n_star = np.outer(3.0 * ds ** 2.5, [1.0, 1.1, 0.9])
    slope, se, slopes = fit_exponent(ds, n_star)
    assert slope == pytest.approx(2.5, abs=1e-12) and se == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="finite"):
        fit_exponent(ds[:2], [[1.0, math.inf], [2.0, 3.0]])


def test_sample_exponents_small_run():
    study = sample_exponents(lambda d: HierarchicalProblem(d, 2), (5, 6, 7), level=0.25,
                             nn_ratios=[2 ** (j / 2) for j in range(11)], kernel_ratios=[0.5, 0.7, 1.0], replicas=2,
                             n_test=500, rng=0)
    assert study.kernel["reached"] and study.corr["reached"]
    assert study.kernel["law"] == pytest.approx(dimension_slope((5, 6, 7), 4))
    assert study.kernel["slope"] > study.corr["slope"]
    with pytest.raises(ValueError, match="`nn_ratios`, `kernel_ratios`"):
        sample_exponents(lambda d: HierarchicalProblem(d, 2), (5, 6), level=0.25)
    with pytest.raises(ValueError, match="k and q fixed"):
        sample_exponents(lambda d: HierarchicalProblem(d, 2 if d == 5 else 3), (5, 6), level=0.25,
                         kernel_ratios=[0.5, 1.0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_stage1_law_at_large_n(seed):
    """E[(p_hat - P_<=2 h)^2] = A/n1 + O(D/n1): within 3 SE + 2 D/n1 relative at d = 24, n1 = 32 D."""
    prob = HierarchicalProblem(24, 2)
    law = stage1_law(prob, n_samples=400_000, rng=seed)
    n1 = 32 * prob.stage1_dimension
    data = _data(prob, n1, 4000, 6, seed + 10)
    _, net = layerwise_curve(prob, [n1], replicas=6, n_test=4000, data=data, rng=seed, return_network=True)
    err = np.mean((net.feature(data["xtest"]) - law.mean - law.overlap * data["ptest"]) ** 2, axis=1)
    pred = float(law.feature_error(n1))
    tol = 3 * math.hypot(err.std(ddof=1) / math.sqrt(err.size), law.A_se / n1) + 2 * pred / 32
    assert abs(err.mean() - pred) < tol, (err.mean(), pred, tol)


# -- command line ------------------------------------------------------------------------
def _cli_json(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out), out.err


def test_cli_predict_reports_the_lemma_and_the_exponents(capsys):
    out, _ = _cli_json(["predict", "--model", "hierarchical", "--d", "12", "--json"], capsys)
    assert out["stein_lemma"]["err2_exact"] == "1/3" and out["stein_lemma"]["err2_regime"] == "O(1/L)"
    assert out["sample_scales"]["network"]["exponent"] == 2 and out["sample_scales"]["kernel"]["exponent"] == 4
    assert out["sample_scales"]["kernel"]["samples"] == 1820 and out["population"]["rho_inf"] == 1.0
    assert out["spec"]["model"] == "hierarchical"


def test_cli_simulate_reports_correlation_and_errors(capsys):
    argv = ["simulate", "--model", "hierarchical", "--d", "6", "--n1", "400", "--n2", "200", "--replicas", "2",
            "--n-test", "500", "--kernel", "--gd-steps", "5", "--quiet", "--json"]
    out, _ = _cli_json(argv, capsys)
    fm = out["final_mean"]
    assert {"correlation", "test_error", "stage1_error", "kernel_test_error", "gd_test_error"} <= set(fm)
    assert 0.5 < np.mean(fm["correlation"]) <= 1.0 and out["meta"]["n1"] == 400 and out["n_replicas"] == 2
    again, _ = _cli_json(argv, capsys)
    assert again["final_mean"] == out["final_mean"]


def test_cli_warns_for_zero_stein_coefficient(capsys):
    with pytest.warns(ZeroSteinCoefficientWarning, match="E\\[g'\\(z\\)\\] = c_1\\(g\\) = 0"):
        code = main(["predict", "--model", "hierarchical", "--d", "8", "--link", "he3"])
    out = capsys.readouterr()
    assert code == 0 and "failure mode" in out.out


@pytest.mark.parametrize("argv, needle", [
    (["predict", "--model", "hierarchical", "--k", "0"], "--k"),
    (["predict", "--model", "hierarchical", "--link", "relu"], "link"),
    (["predict", "--model", "hierarchical", "--piece", "he3"], "piece"),
    (["predict", "--model", "hierarchical", "--d", "1e12"], "`d`"),
    (["predict", "--model", "hierarchical", "--noise", "-1"], "--noise"),
    (["predict", "--model", "hierarchical", "--n1", "10"], "--n1"),
    (["simulate", "--model", "hierarchical", "--d", "4", "--sigma1", "he1"], "sigma1"),
    (["simulate", "--model", "hierarchical", "--d", "4", "--n1", "5", "--ridge1", "0"], "ridge1"),
    (["simulate", "--model", "hierarchical", "--n1", "0"], "--n1"),
    (["simulate", "--model", "hierarchical", "--m2", "0"], "--m2"),
    (["simulate", "--model", "hierarchical", "--lr", "0.1"], "--lr"),
    (["simulate", "--model", "hierarchical", "--d", "2000"], "budget"),
    (["simulate", "--model", "hierarchical", "--d", "70", "--kernel"], "MAX_KERNEL_SAMPLES"),
    (["simulate", "--model", "hierarchical", "--d", "40", "--kernel"], "MAX_KERNEL_WORK"),
    (["simulate", "--model", "hierarchical", "--t-end", "1"], "--t-end"),
    (["compare", "--model", "hierarchical"], "compare"),
])
def test_cli_bad_input_is_one_clean_line(argv, needle, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popdyn: error:") and needle in lines[0], err


def test_fit_stage1_matches_the_curve_and_checks_ridge():
    from popdyn.models.hierarchical_sim import fit_stage1

    prob = HierarchicalProblem(5, 2)
    data = _data(prob, 300, 200, 2, 4)
    _, trained = layerwise_curve(prob, [300], n_test=200, replicas=2, data=data, rng=9, return_network=True)
    net = init_network(prob, replicas=2, rng=np.random.default_rng(9))      # the same draws as the curve's
    alone = fit_stage1(net, data["x1"], data["y1"])
    np.testing.assert_allclose(alone.u, trained.u, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="`ridge` = 0"):
        fit_stage1(net, data["x1"][:, :20], data["y1"][:, :20], ridge=0.0)
    with pytest.raises(ValueError, match="`y`"):
        fit_stage1(net, data["x1"], data["y1"][:, :5])
