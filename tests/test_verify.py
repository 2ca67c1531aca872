"""popdyn.verification and the claims of arXiv 2411.08798 (theory/simsek2025).

* The registry: the paper and its four claims are found (entry point, and the
  source-checkout fallback gives the same table).
* The engine (ordering, flattening, timing, progress, seeding) on stand-in claims.
* The cheap claims run in quick mode and pass; their predictions are recomputed here from
  the paper's closed forms.
* ``coupon_probability`` (inclusion-exclusion) against an exact Markov-chain recursion
  and the reference values of theory/simsek2025/equations.md.
* SLOW: the whole ``popdyn verify --quick --json`` run.
"""

import importlib
import json
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from popdyn.verification import Claim, ClaimResult, list_papers, load_claims, verify

# the module popdyn.verification (popdyn.verify is the function)
verify_module = importlib.import_module("popdyn.verification")

PAPER = "2411.08798"
CLAIM_NAMES = ["directional_convergence", "beta_c", "coupon_collector", "escape_time_scaling"]

#: theory/simsek2025/equations.md quotes the coupon probabilities to 6 decimals: half a unit of the last digit.
THEORY_ROUNDING = 5e-7
#: Inclusion-exclusion (alternating sum of k + 1 terms of size <= C(k, k/2)) vs an exact
#: rational recursion: cancellation costs at most a few ulps times C(5, 2) = 10.
FLOAT_SUM_TOL = 1e-13


def simsek():
    return importlib.import_module("popdyn_theory.simsek2025")


# -- registry ------------------------------------------------------------------------
def test_list_papers_has_the_paper_and_its_claims():
    papers = list_papers()
    assert PAPER in papers
    assert papers[PAPER] == CLAIM_NAMES


def test_claims_are_complete_objects():
    claims = load_claims()[PAPER]
    assert [c.name for c in claims] == CLAIM_NAMES
    for c in claims:
        assert isinstance(c, Claim) and c.paper == PAPER and callable(c.run) and c.description


def test_papers_come_only_from_entry_points(monkeypatch):
    # popdyn never imports the papers' package: without installed entry points there are none
    monkeypatch.setattr(verify_module, "_entry_points", lambda: [])
    assert load_claims() == {}
    with pytest.raises(ValueError, match=r"\(none installed\)"):
        verify(["2411.08798"])


def test_unknown_paper_lists_valid_ids():
    with pytest.raises(ValueError, match=r"unknown paper\(s\) \['nope'\]; valid: .*2411\.08798"):
        verify(["nope"])
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        verify([PAPER, "nope"])  # nothing is run when any id is unknown


# -- engine, on stand-in claims -------------------------------------------------------------
def _fake_table():
    def one(quick, rng):
        return ClaimResult("X", "one", predicted=1.0, measured=float(rng.random()), tolerance=1.0,
                           passed=True, details=f"quick={quick}")

    def rows(quick, rng):
        return [ClaimResult("X", f"row{i}", predicted=0, measured=int(rng.integers(1000)), tolerance=0,
                            passed=i == 0) for i in range(2)]

    return {"X": [Claim("X", "one", "a single result", one), Claim("X", "rows", "a list of results", rows)],
            "Y": [Claim("Y", "never", "must not run when only X is selected", _boom)]}


def _boom(quick, rng):
    raise AssertionError("claim of an unselected paper was run")


def test_verify_engine_flattens_times_and_reports(monkeypatch):
    monkeypatch.setattr(verify_module, "load_claims", _fake_table)
    seen = []
    res = verify(["X"], quick=True, rng=7, progress=seen.append)
    assert [r.claim for r in res] == ["one", "row0", "row1"]
    assert seen == res  # progress gets every row, in order
    assert res[0].details == "quick=True"
    assert [r.passed for r in res] == [True, True, False]
    assert all(isinstance(r.seconds, float) and r.seconds >= 0 for r in res)
    # as_dict is JSON-ready and carries the schema the CLI prints
    d = json.loads(json.dumps(res[1].as_dict()))
    assert set(d) >= {"paper", "claim", "predicted", "measured", "tolerance", "passed", "details", "seconds"}
    # the same seed gives the same measurements; another seed does not
    again = verify(["X"], quick=True, rng=7)
    assert [r.measured for r in again] == [r.measured for r in res]
    other = verify(["X"], quick=True, rng=8)
    assert [r.measured for r in other] != [r.measured for r in res]


# -- per-claim streams: independent of the selection and the order --------------------------
def _draw(name):
    def run(quick, rng):
        return ClaimResult(name[0], name, predicted=0.0, measured=rng.random(3).tolist(), tolerance=0.0, passed=True)
    return run


def _keyed_table():
    # "A" sorts first and draws; "B" must not see it
    return {p: [Claim(p, f"{p}{i}", "draws", _draw(f"{p}{i}")) for i in range(2)] for p in ("A", "B", "C")}


def _by_claim(results):
    return {(r.paper, r.claim): r.measured for r in results}


def test_claim_streams_do_not_depend_on_selection_or_order(monkeypatch):
    monkeypatch.setattr(verify_module, "load_claims", _keyed_table)
    everything = _by_claim(verify(None, rng=3))
    for sel in (["B"], ["C", "B"], ["B", "A"], "B"):
        got = _by_claim(verify(sel, rng=3))
        assert got == {k: v for k, v in everything.items() if k in got}
    assert len({tuple(v) for v in everything.values()}) == 6  # distinct claims get distinct streams
    # the documented key: SeedSequence(seed, spawn_key=sha256 words of "<paper>/<claim>")
    ss = np.random.SeedSequence(3, spawn_key=tuple(verify_module.stable_int_words("B/B1")))
    assert everything[("B", "B1")] == np.random.default_rng(ss).random(3).tolist()
    assert _by_claim(verify(["B"], rng=4)) != _by_claim(verify(["B"], rng=3))


def test_stable_int_words_are_fixed_numbers():
    # SHA-256 of b"2406.01581/online_slope", first four little-endian 32-bit words, pinned: a
    # change of hash or byte order would silently change every claim's stream
    assert verify_module.stable_int_words("2406.01581/online_slope") == [3318769297, 1131997132, 18036742,
                                                                         2230216449]
    assert verify_module.stable_int_words("a/b") != verify_module.stable_int_words("a/c")
    with pytest.raises(TypeError, match="`key`"):
        verify_module.stable_int_words(3)


def test_rng_kinds_resolve_to_a_reported_seed(monkeypatch):
    monkeypatch.setattr(verify_module, "load_claims", _keyed_table)
    assert {r.seed for r in verify(["A"], rng=5)} == {5}
    g = np.random.default_rng(11)
    expected = int(np.random.default_rng(11).integers(2**63))
    res = verify(["A"], rng=g)  # a Generator gives one 63-bit draw as the seed
    assert {r.seed for r in res} == {expected}
    assert _by_claim(res) == _by_claim(verify(["A"], rng=expected))
    fresh = verify(["A"], rng=None)  # fresh entropy, reported so that the run can be repeated
    assert _by_claim(verify(["A"], rng=fresh[0].seed)) == _by_claim(fresh)
    with pytest.raises(TypeError, match="`rng`"):
        verify(["A"], rng=1.5)
    with pytest.raises(ValueError, match="`rng`.*-1"):
        verify(["A"], rng=-1)


def test_real_claim_same_rows_alone_or_with_everything(monkeypatch):
    # a real quick claim that draws (Monte Carlo of E[m0^2]), alone and after another paper's claims
    real = next(c for c in load_claims()["2309.03843"] if c.name == "effective_dimension")
    table = {"2003.00000": _keyed_table()["A"], "2309.03843": [real]}
    monkeypatch.setattr(verify_module, "load_claims", lambda: table)
    alone = verify(["2309.03843"], quick=True, rng=2)
    together = [r for r in verify(None, quick=True, rng=2) if r.paper == "2309.03843"]
    assert [r.measured for r in alone] == [r.measured for r in together] and len(alone) == 4


def test_list_papers_selection(monkeypatch):
    monkeypatch.setattr(verify_module, "load_claims", _keyed_table)
    assert list_papers(["C", "A"]) == {"C": ["C0", "C1"], "A": ["A0", "A1"]}
    assert list_papers("B") == {"B": ["B0", "B1"]}
    assert list(list_papers()) == list(list_papers([])) == ["A", "B", "C"]
    with pytest.raises(ValueError, match=r"`papers`: unknown paper\(s\) \['nope'\]; valid: A, B, C"):
        list_papers(["A", "nope"])
    with pytest.raises(TypeError, match="`papers`"):
        list_papers([1])


# -- the cheap claims, quick mode -----------------------------------------------------------
def test_claim_beta_c_quick():
    rows = simsek().claim_beta_c(True, np.random.default_rng(0))
    assert len(rows) == 4
    # monomial h_p: beta_c = (p - 2)/(k + p - 2) (arXiv 2411.08798; theory/simsek2025/equations.md), mixture values from there too
    expected = {"beta_c (he3, k=3)": (3 - 2) / (3 + 3 - 2), "beta_c (he4, k=3)": (4 - 2) / (3 + 4 - 2),
                "beta_c (he5, k=2)": (5 - 2) / (2 + 5 - 2),
                "beta_c (hermite:0,0,0,1,1, k=3)": 0.333097973437}
    assert [r.claim for r in rows] == list(expected)
    for r in rows:
        assert r.paper == PAPER
        assert r.passed, r
        assert r.predicted == pytest.approx(expected[r.claim], abs=1e-12)
        assert isinstance(r.measured, float) and isinstance(r.tolerance, float)
        assert abs(r.measured - r.predicted) <= r.tolerance
        assert "saddle" in r.details and "minimum" in r.details


def test_claim_escape_time_scaling_quick():
    rows = simsek().claim_escape_time_scaling(True, np.random.default_rng(0))
    assert [r.claim for r in rows] == ["escape_time_scaling (h3, k=3)", "escape_time_scaling (h4, k=3)"]
    for r, p in zip(rows, (3, 4)):
        assert r.passed, r
        assert r.predicted == p / 2 - 1  # time ~ d^{p/2 - 1}
        assert abs(r.measured - r.predicted) <= r.tolerance
    # theory/simsek2025/equations.md: p = 4, d = 100 takes t = 12.595 to reach u_1 = 1/2
    assert "100: 12.59" in rows[1].details


# -- coupon collector ----------------------------------------------------------------------
def coupon_exact(k: int, n: int, q: Fraction) -> Fraction:
    """P(all k found) by the exact Markov chain on the number found so far: each neuron finds
    one of the k directions uniformly with probability q, nothing otherwise."""
    p = [Fraction(0)] * (k + 1)
    p[0] = Fraction(1)
    for _ in range(n):
        new = [Fraction(0)] * (k + 1)
        for j, pj in enumerate(p):
            if pj:
                step = q * Fraction(k - j, k)
                new[j] += pj * (1 - step)
                if j < k:
                    new[j + 1] += pj * step
        p = new
    return p[k]


@pytest.mark.parametrize("k, n, q, theory", [
    (5, 10, Fraction(1), 0.522547),               # even p
    (5, 10, 1 - Fraction(1, 2**5), 0.492336),     # odd p: no direction when all u_j(0) < 0
])
def test_coupon_probability_matches_theory(k, n, q, theory):
    got = simsek().coupon_probability(k, n, float(q))
    assert abs(got - theory) <= THEORY_ROUNDING
    assert abs(got - float(coupon_exact(k, n, q))) <= FLOAT_SUM_TOL


@pytest.mark.parametrize("k, n", [(1, 1), (3, 2), (3, 3), (4, 9), (10, 51), (10, 50)])
@pytest.mark.parametrize("q", [Fraction(1), Fraction(7, 8)])
def test_coupon_probability_against_markov_chain(k, n, q):
    got = simsek().coupon_probability(k, n, float(q))
    ref = coupon_exact(k, n, q)
    # C(10, 5) = 252 magnifies the rounding of the alternating sum
    assert abs(got - float(ref)) <= 300 * FLOAT_SUM_TOL
    if n < k:
        assert ref == 0


def test_coupon_95_percent_at_k10_is_n51():
    # theory/simsek2025/equations.md: n for 95% success at k = 10 (even p) is 51
    cp = simsek().coupon_probability
    assert cp(10, 51, 1.0) >= 0.95 > cp(10, 50, 1.0)


@pytest.mark.parametrize("u0, p, expected", [
    ([[0.1, -0.3, 0.2]], 4, ["-v2"]),
    ([[0.1, -0.3, 0.2]], 3, ["+v3"]),
    ([[-0.1, -0.3, -0.2]], 3, ["none"]),
    ([[-0.1, -0.3, -0.2], [0.5, 0.1, 0.0]], 4, ["-v2", "+v1"]),
])
def test_predicted_direction_rule(u0, p, expected):
    assert simsek().predicted_direction(np.array(u0), p) == expected


# -- the full quick run (slow) -----------------------------------------------------------------
@pytest.mark.slow
def test_cli_verify_quick_all_claims_pass():
    proc = subprocess.run([sys.executable, "-m", "popdyn", "verify", PAPER, "--quick", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] is True
    claims = out["claims"]
    assert {c["claim"].split(" ")[0] for c in claims} == set(CLAIM_NAMES)
    for c in claims:
        assert set(c) >= {"paper", "claim", "predicted", "measured", "tolerance", "passed"}
        assert c["paper"] == PAPER and c["passed"] is True, c
    # progress goes to stderr, one line per claim row
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == len(claims) and all(ln.startswith("[pass] 2411.08798 ") for ln in lines)
