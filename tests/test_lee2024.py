"""theory/lee2024: the claims of arXiv 2406.01581 (batch reuse) and their building blocks.

Default tests: the cheap claims run in quick mode and pass; the settings of the slope claims
escape with reuse and stall online (mean path); the correction of the quoted 0.0633 (theory/lee2024/equations.md) is explained;
the random links have IE >= 3; the verdicts of the slope and stall rows on stand-in tables
(a wrong law fails).  Slow: the simulation claims (reuse_slope, online_slope,
phase2_test_error) in quick mode.
"""

import importlib
import math

import numpy as np
import pytest

from popdyn.exponents import information_exponent
from popdyn.models.reuse import ReuseProblem, predicted_samples, tanh_logcosh
from popdyn.verification import Claim, ClaimResult

lee = importlib.import_module("popdyn_theory.lee2024")

CLAIM_NAMES = ["generative_exponent", "drift_coefficients", "reuse_slope", "online_slope", "phase2_test_error"]
#: The quoted 0.0633 has 4 digits: half a unit of the last digit.
THEORY_ROUNDING = 5e-5
#: The secant step that reproduces the quoted 0.0633: D is odd-symmetric to O(m^3) with D_3 = -0.628,
#: so the secant at h is D_1 + D_3 h^2; h = 0.03 gives 0.06329.
SECANT_H = 0.03


def _run(name, quick=True, seed=0):
    claim = next(c for c in lee.CLAIMS if c.name == name)
    out = claim.run(quick, np.random.default_rng(seed))
    return out if isinstance(out, list) else [out]


def test_claims_are_complete():
    assert [c.name for c in lee.CLAIMS] == CLAIM_NAMES
    for c in lee.CLAIMS:
        assert isinstance(c, Claim) and c.paper == "2406.01581" and callable(c.run) and c.description


@pytest.mark.parametrize("name", ["generative_exponent", "drift_coefficients"])
def test_cheap_claims_pass_in_quick_mode(name):
    rows = _run(name)
    assert rows and all(isinstance(r, ClaimResult) for r in rows)
    failed = [(r.claim, r.predicted, r.measured) for r in rows if not r.passed]
    assert not failed, failed


def test_random_links_have_information_exponent_above_generative():
    links = lee.random_links()
    assert len(links) >= 6
    for name, spec in links.items():
        ie = information_exponent(spec)
        assert ie >= 3, (name, spec, ie)
    rows = lee.exponent_table(links)
    assert all(r["GE"] < r["IE"] for r in rows)
    # the even parts really are even and the full links are not
    assert all(r["even"] == name.endswith("(even part)") for name, r in zip(links, rows))


def test_exponent_table_detects_a_wrong_prediction():
    # the claim's verdict is not vacuous: an even link predicted as 1 would fail
    row = lee.exponent_table({"He4": "poly:z**4-6*z**2+3"})[0]
    assert row["GE"] == 2 and row["GE_predicted"] == 2 and row["GE"] != 1


def test_theory_logcosh_number_is_a_secant():
    p = ReuseProblem(tanh_logcosh(0.0, 1.0), "he3", reuse=2)
    exact = p.linear_coefficient(0.5)["D1"]
    secant = float((p.drift(SECANT_H, 0.5) - p.drift(-SECANT_H, 0.5)) / (2 * SECANT_H))
    assert abs(exact - 0.0633) > 10 * THEORY_ROUNDING      # THEORY's value is not the coefficient ...
    assert abs(secant - 0.0633) <= THEORY_ROUNDING          # ... but the secant over +-0.03


@pytest.mark.parametrize("target", list(lee.REUSE_SETTINGS))
def test_reuse_settings_escape_with_reuse_and_stall_online(target):
    _, _, eta, _, _ = lee.REUSE_SETTINGS[target]
    d = 1000
    n_reuse = predicted_samples(lee.reuse_problem(target), d, eta_tilde=eta)
    assert math.isfinite(n_reuse) and n_reuse < 1000 * d
    assert math.isinf(predicted_samples(lee.reuse_problem(target, reuse=1), d, eta_tilde=eta))


def test_reach_study_rejects_a_stalling_mean_path():
    with pytest.raises(ValueError, match="stalls"):
        lee.reach_study(ReuseProblem("tanh", "he3", reuse=1), [100], lambda d: 0.5, replicas=2)


def test_stable_point_is_a_zero_of_the_drift():
    prob = ReuseProblem("tanh", "he3", reuse=2, interpolation=lee.PHASE2_XI)
    m_star = lee._stable_point(prob, lee.PHASE2_ETA)
    assert 0.95 < m_star < 1.0
    assert abs(float(prob.drift(-m_star, lee.PHASE2_ETA))) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reuse_slope", "online_slope", "phase2_test_error"])
def test_simulation_claims_pass_in_quick_mode(name):
    rows = _run(name, seed=1)
    failed = [(r.claim, r.predicted, r.measured) for r in rows if not r.passed]
    assert not failed, failed


# -- verdicts of the redesigned slope and stall rows, on stand-in tables (no simulation) -------
def _reuse_row(target, slope, se):
    return {"target": target, "slope": slope, "slope_se": se, "predicted_slope": 1.0, "dims": [250, 500],
            "medians": [1.0, 2.0], "predicted": [1.0, 2.0], "student": "s", "eta_tilde": 0.1, "interpolation": 1.0,
            "batch": 1, "replicas": 24}


@pytest.mark.parametrize("slope, se, passed", [
    (1.25, 0.06, True),     # inside the band
    (1.45, 0.06, True),     # 1.7 SE above the band: not rejected
    (1.60, 0.06, False),    # > 3 SE above the band
    (1.90, 0.20, False),    # within 3 SE of the band, but not 3 SE below the online law d^2
    (2.00, 0.05, False),    # the online law
])
def test_reuse_slope_verdict(monkeypatch, slope, se, passed):
    monkeypatch.setattr(lee, "reuse_slope_table", lambda **kw: [_reuse_row("He3", slope, se)])
    (row,) = lee.claim_reuse_slope(True, np.random.default_rng(0))
    assert row.passed is passed, row


def _online_row(p, slope, se, predicted_slope=2.0):
    dims = lee.ONLINE_SETTINGS[p][1]
    return {"p": p, "law": p - 1, "eta0": 0.5, "slope": slope, "slope_se": se, "predicted_slope": predicted_slope,
            "dims": list(dims), "medians": [1.0] * len(dims), "predicted": [1.0] * len(dims), "replicas": 400}


@pytest.mark.parametrize("p, slope, se, passed", [
    (4, 2.94, 0.17, True),   # formerly 1.3 SE from its cut (mean path 2.35 + 0.3 + 3 SE)
    (4, 2.54, 0.13, True),
    (4, 2.00, 0.05, False),  # d^2, resolved
    (3, 1.95, 0.07, True),
    (3, 1.20, 0.05, False),  # d polylog d: the online control would not be slower than reuse
    (3, 3.00, 0.07, False),  # d^3
])
def test_online_slope_verdict(monkeypatch, p, slope, se, passed):
    monkeypatch.setattr(lee, "online_slope_table", lambda **kw: [_online_row(p, slope, se)])
    monkeypatch.setattr(lee, "stall_check", lambda **kw: {
        "target": "He3", "student": "tanh", "d": 2000, "eta_tilde": 0.5, "budget": 1, "replicas": 200,
        "reuse_fraction": 1.0, "reuse_median": 1.0, "online_fraction": 0.01, "online_predicted": math.inf})
    rows = lee.claim_online_slope(True, np.random.default_rng(0))
    assert rows[0].passed is passed, rows[0]
    assert rows[1].passed  # the stall row


@pytest.mark.parametrize("online, reuse, predicted, passed", [
    (0.01, 1.0, math.inf, True), (0.15, 1.0, math.inf, False), (0.0, 0.8, math.inf, False),
    (0.0, 1.0, 5e5, False)])
def test_stall_verdict(monkeypatch, online, reuse, predicted, passed):
    monkeypatch.setattr(lee, "online_slope_table", lambda **kw: [])
    monkeypatch.setattr(lee, "stall_check", lambda **kw: {
        "target": "He3", "student": "tanh", "d": 2000, "eta_tilde": 0.5, "budget": 1, "replicas": 200,
        "reuse_fraction": reuse, "reuse_median": 1.0, "online_fraction": online, "online_predicted": predicted})
    (row,) = lee.claim_online_slope(True, np.random.default_rng(0))
    assert row.passed is passed, row
