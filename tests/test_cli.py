"""The ``popdyn`` command line, run as a subprocess (``python -m popdyn``).

Checks the contract of popdyn/cli.py: exit codes (0 ok, 1 numerical failure, 2 usage
error), a clean stderr on success, one JSON object on stdout with ``--json``, and the
key numbers, each against an independent reference (closed forms; see theory/CONVENTIONS.md and theory/*/equations.md).
A few in-process tests call :func:`popdyn.cli.main` directly to check the exit-code
mapping of a command that raises.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import popdyn
from popdyn import cli
from popdyn.activations import registered_names
from popdyn.citations import BIBTEX
from popdyn.errors import NumericalError

#: ReLU normalised Hermite coefficients c_0..c_8 (theory/CONVENTIONS.md, mpmath to 15 digits).
RELU_C = [1 / math.sqrt(2 * math.pi), 0.5, 0.282094791773878, 0.0, -0.0814337519838200, 0.0,
          0.0446031029038193, 0.0, -0.0298017016880560]
#: Tolerance: closed forms vs 15-digit references (JSON keeps 17 digits).
COEF_TOL = 1e-12
#: Fixed points of the u-flow are polished by Newton to 1e-10 (fixedpoints.py `tol`);
#: Hessian eigenvalues are then exact up to rounding.
FP_TOL = 1e-8
#: A trajectory that has converged to +v1 by t = 10 (escape from |u| ~ 0.3 takes t ~ 1):
#: distance to the fixed point decays like exp(-3t), far below this.
CONVERGED_TOL = 1e-6
#: Event time of the package's u-ODE (default rtol ~1e-10) vs a DOP853 reference at rtol 1e-12;
#: the crossing is transversal (du_1/dt ~ 0.5), so time errors ~ state errors ~ 1e-9.
ESCAPE_TOL = 1e-7

ENV = dict(os.environ, MPLBACKEND="Agg")
TIMEOUT = 240


def run(*args, cwd=None):
    """Run ``python -m popdyn *args``; return the CompletedProcess (text mode)."""
    return subprocess.run([sys.executable, "-m", "popdyn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=TIMEOUT)


def ok_json(*args, cwd=None):
    """Run a command that must succeed with --json: exit 0, clean stderr, one JSON object."""
    proc = run(*args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = json.loads(proc.stdout)
    assert isinstance(out, dict)
    return out


def ok_text(*args, cwd=None):
    proc = run(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def usage_error(*args, cwd=None):
    """A usage error: exit 2, nothing on stdout, a final `popdyn: error:` line, no traceback.

    (argparse errors print the usage first; errors raised by the library are one line.)"""
    proc = run(*args, cwd=cwd)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("popdyn: error: "), proc.stderr
    return proc.stderr


# -- top level --------------------------------------------------------------------------
def test_version():
    assert ok_text("--version") == f"popdyn {popdyn.__version__}\n"


@pytest.mark.skipif(shutil.which("popdyn") is None, reason="console script not installed")
def test_console_script():
    proc = subprocess.run(["popdyn", "--version"], capture_output=True, text=True, env=ENV, timeout=TIMEOUT)
    assert proc.returncode == 0 and proc.stdout == f"popdyn {popdyn.__version__}\n" and proc.stderr == ""


def test_no_command_is_a_usage_error():
    proc = run()
    assert proc.returncode == 2 and proc.stdout == "" and "usage: popdyn" in proc.stderr


def _entries(bib: str) -> list[str]:
    """Entry keys of a BibTeX string, checking each entry's braces balance."""
    keys = []
    for chunk in bib.strip().split("\n\n"):
        assert chunk.startswith("@"), chunk
        assert chunk.count("{") == chunk.count("}"), chunk
        keys.append(chunk[chunk.index("{") + 1:chunk.index(",")])
    return keys


def test_cite_all():
    bib = ok_text("--cite")
    keys = _entries(bib)
    assert keys[0] == "popdyn" and len(keys) == len(BIBTEX)
    assert "eprint    = {2411.08798}" in bib and "eprint    = {2403.05529}" in bib


MODEL_PAPERS = ["2411.08798", "2003.10409", "2309.03843", "2406.01581"]
CLAIM_PAPERS = MODEL_PAPERS + ["2406.11828", "2311.13774"]


@pytest.mark.parametrize("command, eprints", [("compare", MODEL_PAPERS + ["2406.11828"]), ("verify", CLAIM_PAPERS),
                                              ("predict", CLAIM_PAPERS), ("activations", [])])
def test_cite_before_command(command, eprints):
    bib = ok_text("--cite", command)
    assert _entries(bib)[0] == "popdyn" and len(_entries(bib)) == 1 + len(eprints)
    for e in eprints:
        assert f"{{{e}}}" in bib


@pytest.mark.parametrize("argv, eprint", [(["compare", "--cite"], "2411.08798"),
                                          (["hermite", "--cite"], "2403.05529"),
                                          (["threshold", "--cite"], "2411.08798")])
def test_cite_after_command(argv, eprint):
    bib = ok_text(*argv)
    assert f"{{{eprint}}}" in bib and _entries(bib)[0] == "popdyn"


# -- hermite / activations --------------------------------------------------------------------
def test_hermite_relu_json():
    out = ok_json("hermite", "relu")
    assert {"coefficients", "information_exponent", "generative_exponent"} <= set(out)
    c = out["coefficients"]
    assert len(c) == 11  # default --degree 10: c_0..c_10
    assert abs(c[0] - 1 / math.sqrt(2 * math.pi)) <= COEF_TOL
    np.testing.assert_allclose(c[:9], RELU_C, rtol=0, atol=COEF_TOL)
    assert out["information_exponent"] == 1 and out["generative_exponent"] == 1
    assert out["second_moment"] == pytest.approx(0.5, abs=1e-15)  # E[relu^2] = 1/2
    # Parseval: truncated norm^2 + tail mass = E[f^2]
    assert out["norm"] ** 2 + out["tail_mass"] == pytest.approx(0.5, abs=1e-12)


def test_hermite_degree_option():
    out = ok_json("hermite", "relu", "--degree", 2)
    assert len(out["coefficients"]) == 3 and out["degree"] == 2


def test_hermite_he3_text():
    text = ok_text("hermite", "he3")
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            rows[int(parts[0])] = float(parts[1])
    assert rows == {k: (1.0 if k == 3 else 0.0) for k in range(11)}
    assert "information exponent   3" in text  # IE(He_3) = 3, GE(He_3) = 1 (theory/lee2024/equations.md)
    assert "generative exponent    1" in text


def test_activations_text_and_json():
    text = ok_text("activations")
    listed = [line.split()[0] for line in text.splitlines()]
    for name in ("relu", "tanh", "erf", "heK", "hermite:c0,c1,...", "poly:<expr>"):
        assert name in listed
    rows = ok_json("activations")["activations"]
    assert [r["spec"] for r in rows] == listed
    assert all(r["description"] for r in rows)


@pytest.mark.parametrize("degree", ["-1", "2.5"])
def test_hermite_bad_degree(degree):
    err = usage_error("hermite", "relu", "--degree", degree)
    assert "--degree" in err


def test_hermite_unknown_name_lists_valid_names_in_one_line():
    err = usage_error("hermite", "nope")
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "'nope'" in lines[0]
    for name in registered_names():
        assert name in lines[0]


@pytest.mark.parametrize("spec, fragment", [("hermite:1,,2", "malformed spec 'hermite:1,,2'"),
                                            ("poly:exp(z)", "not a polynomial")])
def test_hermite_malformed_spec(spec, fragment):
    err = usage_error("hermite", spec)
    assert len(err.strip().splitlines()) == 1 and fragment in err


# -- threshold / loss / fixed points ---------------------------------------------------------------
def test_threshold_he3():
    out = ok_json("threshold", "--student", "he3", "--teacher", "he3", "--k", 3)
    # beta_c = (p-2)/(k+p-2) = 1/4 for p = k = 3 (theory/simsek2025/equations.md)
    assert out["beta_c"] == pytest.approx(0.25, abs=1e-12)
    assert out["kind_below"] == "saddle" and out["kind_above"] == "minimum"
    assert out["exact"] == "1/4"


def test_threshold_text():
    text = ok_text("threshold", "--student", "he4", "--teacher", "he4", "--k", 3)
    assert "beta_c      0.4" in text  # (4-2)/(3+4-2)
    assert "kind below  saddle" in text


def test_threshold_relu_has_none():
    out = ok_json("threshold", "--student", "relu", "--teacher", "relu", "--k", 3)
    assert out["beta_c"] is None
    assert out["kind_below"] == out["kind_above"] == "minimum"


def test_threshold_k0():
    err = usage_error("threshold", "--student", "he3", "--teacher", "he3", "--k", "0")
    assert "argument --k: must be a positive integer, got 0" in err


def test_loss_he4():
    out = ok_json("loss", "--student", "he4", "--teacher", "he4", "--k", 2)
    # l(u) = -sum_j c_4^2 u_j^4 with c_4(h_4) = 1; du/dt = g(u) - u (u.g), g = 4u^3
    assert out["expr"] == "-u_1**4 - u_2**4"
    assert out["exact"] is True
    import sympy

    u1, u2 = sympy.symbols("u_1 u_2")
    g = [4 * u1**3, 4 * u2**3]
    ug = u1 * g[0] + u2 * g[1]
    for got, want in zip(out["velocity"], (g[0] - u1 * ug, g[1] - u2 * ug)):
        assert sympy.expand(sympy.sympify(got) - want) == 0


def test_loss_latex():
    text = ok_text("loss", "--student", "he4", "--teacher", "he4", "--k", 2, "--latex")
    assert "- u_{1}^{4} - u_{2}^{4}" in text
    out = ok_json("loss", "--student", "he4", "--teacher", "he4", "--k", 2, "--latex")
    assert "u_{1}^{4}" in out["latex"]


def test_loss_latex_labels_once():
    text = ok_text("loss", "--student", "he4", "--teacher", "he4", "--k", 2, "--latex")
    assert "l(u) = \\ell(u)" not in text and "du_1/dt = \\dot" not in text


def test_fixed_points_he4():
    out = ok_json("fixed-points", "--student", "he4", "--teacher", "he4", "--k", 2)
    pts = out["points"]
    # theory/simsek2025/equations.md (g = t^4, orthogonal): |S| = 1 -> all eigenvalues +4 (minimum, loss -1);
    # |S| = 2 -> {-4 (x1), +2 (rest)} (saddle, loss -1/2); plus the degenerate equator
    by_kind = {}
    for p in pts:
        by_kind.setdefault(p["kind"], []).append(p)
    assert sorted((k, len(v)) for k, v in by_kind.items()) == [("degenerate", 1), ("minimum", 4), ("saddle", 4)]
    for p in by_kind["minimum"]:
        assert sorted(np.abs(p["u"])) == pytest.approx([0.0, 1.0], abs=FP_TOL)
        assert p["loss"] == pytest.approx(-1.0, abs=FP_TOL)
        assert p["eigenvalues"] == pytest.approx([4.0], abs=FP_TOL)
    for p in by_kind["saddle"]:
        assert np.abs(p["u"]) == pytest.approx([2**-0.5] * 2, abs=FP_TOL)
        assert p["loss"] == pytest.approx(-0.5, abs=FP_TOL)
        assert sorted(p["eigenvalues"]) == pytest.approx([-4.0, 2.0], abs=FP_TOL)
        assert p["index"] == 1
    assert {tuple(np.sign(np.round(p["u"], 6))) for p in by_kind["saddle"]} == \
        {(1, 1), (1, -1), (-1, 1), (-1, -1)}


# -- predict -----------------------------------------------------------------------------------
def test_predict_from_u0(tmp_path):
    out = ok_json("predict", "--k", 2, "--u0", "0.3,0.1;0.1,-0.4", "--t-end", 10,
                  "--out", tmp_path / "p.npz", "--plot", tmp_path / "p.png")
    assert out["t_final"] == 10.0 and out["time_unit"] == "gradient-flow time t"
    assert out["u0"] == [[0.3, 0.1], [0.1, -0.4]]
    # he3 (odd p): each neuron goes to +v_{argmax_j u_j(0)} when that u_j(0) > 0 (arXiv 2411.08798)
    assert out["directions"] == ["+v1", "+v1"]
    np.testing.assert_allclose(out["u_final"], [[1.0, 0.0], [1.0, 0.0]], atol=CONVERGED_TOL)
    traj = popdyn.Trajectory.load(tmp_path / "p.npz")
    np.testing.assert_allclose(traj.final("u")[0], out["u_final"], rtol=0, atol=1e-15)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_escape_times():
    from scipy.integrate import solve_ivp

    out = ok_json("predict", "--k", 2, "--u0", "0.3,0.1", "--t-end", 10, "--escape-level", 0.5)
    assert out["directions"] == ["+v1"]
    (t_esc,) = np.ravel(out["escape_times"])

    # independent route: he3/he3, orthogonal G: l(u) = -u_1^3 - u_2^3, g = 3u^2,
    # du/dt = g - u (u.g), integrated here with DOP853 and an event at max |u_j| = 1/2
    def rhs(t, u):
        g = 3 * u**2
        return g - u * (u @ g)

    def hit(t, u):
        return np.max(np.abs(u)) - 0.5

    hit.terminal = True
    sol = solve_ivp(rhs, (0, 10), [0.3, 0.1], method="DOP853", rtol=1e-12, atol=1e-14, events=hit)
    assert t_esc == pytest.approx(sol.t_events[0][0], abs=ESCAPE_TOL)


@pytest.mark.parametrize("u0, fragment", [("0.9,0.9", "not consistent with a unit vector"),
                                          ("0.3,0.1,0.2", "shape"),
                                          ("a,b", "`--u0` must be rows")])
def test_predict_bad_u0(u0, fragment):
    err = usage_error("predict", "--k", 2, "--u0", u0, "--t-end", 10)
    assert fragment in err


# -- simulate ----------------------------------------------------------------------------------
def test_simulate_json():
    out = ok_json("simulate", "--d", 60, "--t-end", 0.5, "--replicas", 2, "--quiet")
    assert out["source"] == "simulation" and out["model"] == "multi_index"
    assert out["t_final"] == pytest.approx(0.5, rel=1e-12) and out["n_replicas"] == 2
    assert out["time_unit"] == "t = eta * steps" and out["status"] == 0
    u = np.asarray(out["final_mean"]["u"])
    assert u.shape == (4, 3)  # default --neurons 4, --k 3
    assert np.all(np.linalg.norm(u, axis=1) <= 1 + 1e-12)  # mean of unit vectors' overlaps


def test_simulate_save(tmp_path):
    out = ok_json("simulate", "--d", 40, "--t-end", 0.2, "--replicas", 2, "--k", 2, "--neurons", 1,
                  "--quiet", "--out", tmp_path / "s.npz")
    traj = popdyn.Trajectory.load(out["saved"])
    assert traj.n_replicas == 2
    np.testing.assert_allclose(traj.mean("u")[-1], out["final_mean"]["u"], rtol=0, atol=1e-15)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


@pytest.mark.parametrize("extra, fragment", [
    (["--eta", "0"], "argument --eta: must be a positive finite number"),
    (["--gram", "equiangular", "--beta", "1.5"], "`beta` must lie in"),
    (["--gram", "equiangular", "--beta", "-0.9", "--k", "3"], "(-0.5, 1)"),  # beta > -1/(k-1)
])
def test_simulate_usage_errors(extra, fragment, tmp_path):
    err = usage_error("simulate", "--d", 60, "--t-end", 0.5, "--replicas", 2, "--quiet", *extra, cwd=tmp_path)
    assert fragment in err


@pytest.mark.parametrize("G, fragment", [
    ("1 0.9 0.9\n0.9 1 -0.9\n0.9 -0.9 1\n", "positive semidefinite"),  # eigenvalues 1.9, 1.9, -0.8
    ("1 0\n0 2\n", "unit diagonal"),
    ("1 0.5\n0.4 1\n", "symmetric"),
])
def test_simulate_bad_gram_file(G, fragment, tmp_path):
    path = tmp_path / "G.txt"
    path.write_text(G)
    err = usage_error("simulate", "--d", 60, "--t-end", 0.5, "--replicas", 2, "--quiet", "--gram", path)
    assert fragment in err


def test_simulate_gram_file_ok(tmp_path):
    path = tmp_path / "G.txt"
    path.write_text("1 0.3\n0.3 1\n")
    out = ok_json("simulate", "--d", 40, "--t-end", 0.2, "--replicas", 2, "--neurons", 1, "--quiet",
                  "--gram", path)
    assert out["meta"]["problem"]["G"] == [[1.0, 0.3], [0.3, 1.0]]


def test_numerical_failure_exit_code_1():
    # a step of eta = 1e300 overflows the weights at the first update: the simulator raises
    # NumericalError (with the step), which the CLI maps to exit code 1
    proc = run("simulate", "--d", 60, "--eta", "1e300", "--t-end", "3e300", "--replicas", 2, "--quiet", "--json")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popdyn: numerical failure: non-finite weights")
    assert "step 1" in lines[0]


# -- compare -----------------------------------------------------------------------------------
def test_compare_json_and_plot(tmp_path):
    png = tmp_path / "c.png"
    out = ok_json("compare", "--d", 100, "--t-end", 1, "--replicas", 2, "--quiet", "--plot", png, cwd=tmp_path)
    assert {"max_abs_deviation", "directions_ode", "directions_sim", "agreement"} <= set(out)
    assert len(out["directions_ode"]) == len(out["directions_sim"]) == 4
    assert 0.0 <= out["agreement"] <= 1.0
    agree = np.mean([a == b for a, b in zip(out["directions_ode"], out["directions_sim"])])
    assert out["agreement"] == agree
    assert out["max_abs_deviation"] >= 0 and out["t_final"] == pytest.approx(1.0, rel=1e-12)
    assert out["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing else is written (the default popdyn_compare.png is not produced)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]


def test_compare_text_no_plot(tmp_path):
    text = ok_text("compare", "--d", 60, "--t-end", 0.5, "--replicas", 2, "--k", 2, "--neurons", 2,
                   "--quiet", "--plot", "", cwd=tmp_path)
    assert "max |u_ode - mean u_sim|" in text and "agreement:" in text
    assert list(tmp_path.iterdir()) == []


def test_compare_gradient_flow_cli(tmp_path):
    out = ok_json("compare", "--algorithm", "gf", "--d", 40, "--t-end", 1, "--replicas", 1, "--k", 2,
                  "--neurons", 2, "--quiet", "--plot", "", cwd=tmp_path)
    assert out["max_abs_deviation"] < 1e-7


# -- verify --------------------------------------------------------------------------------------
def test_verify_list():
    text = ok_text("verify", "--list")
    assert "2411.08798: directional_convergence, beta_c, coupon_collector, escape_time_scaling" in text
    out = ok_json("verify", "--list")
    assert out["papers"]["2411.08798"] == ["directional_convergence", "beta_c", "coupon_collector",
                                           "escape_time_scaling"]


def test_verify_unknown_paper():
    err = usage_error("verify", "nope")
    assert "2411.08798" in err


# -- exit-code mapping, in process ------------------------------------------------------------------
def test_main_maps_numerical_error_to_1(monkeypatch, capsys):
    def boom(args):
        raise NumericalError("integrator could not meet its tolerance", time=1.5)

    monkeypatch.setattr(cli, "cmd_hermite", boom)
    assert cli.main(["hermite", "he3"]) == cli.EXIT_NUMERICAL == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "popdyn: numerical failure: integrator could not meet its tolerance (at t = 1.5)\n"


@pytest.mark.parametrize("exc", [ValueError("`k` must be positive"), TypeError("`G` must be an array")])
def test_main_maps_bad_input_to_2(monkeypatch, capsys, exc):
    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_hermite", boom)
    assert cli.main(["hermite", "he3"]) == cli.EXIT_USAGE == 2
    assert capsys.readouterr().err == f"popdyn: error: {exc}\n"


def test_verify_exit_code_1_when_a_claim_fails(monkeypatch, capsys):
    import importlib

    from popdyn.verification import ClaimResult

    verify_module = importlib.import_module("popdyn.verification")

    def fake_verify(papers=None, *, quick=False, rng=0, progress=None):
        rows = [ClaimResult("X", "good", 1.0, 1.0, 0.1, True), ClaimResult("X", "bad", 1.0, 2.0, 0.1, False)]
        for r in rows:
            progress(r)
        return rows

    monkeypatch.setattr(verify_module, "verify", fake_verify)
    assert cli.main(["verify", "--json"]) == 1
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["passed"] is False and [c["passed"] for c in out["claims"]] == [True, False]
    assert cap.err.splitlines() == ["[pass] X good (0.0 s)", "[FAIL] X bad (0.0 s)"]
    assert cli.main(["verify"]) == 1
    assert "1/2 claims pass" in capsys.readouterr().out


# -- more usage errors, in process (same parser and handlers, no interpreter start-up) --------
def main_usage_error(argv, capsys):
    """Run cli.main in process; it must end with exit code 2 and a `popdyn: error:` line."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    assert code == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.strip().splitlines()[-1].startswith("popdyn: error: ")
    return cap.err


@pytest.mark.parametrize("argv, fragment", [
    (["hermite", "relu", "--degree", "ten"], "argument --degree"),
    (["threshold", "--student", "he3", "--teacher", "he3"], "--k"),
    (["threshold", "--student", "he3", "--teacher", "he3", "--k", "3", "--method", "magic"], "--method"),
    (["simulate", "--gram", "equiangular"], "`beta` is required"),
    (["simulate", "--eta", "0.01", "--delta", "0.5"], "not both"),
    (["simulate", "--init", "warm"], "`--init` must be 'uniform' or a warm-start"),
    (["simulate", "--algorithm", "adam"], "argument --algorithm"),
    (["simulate", "--t-end", "inf"], "argument --t-end"),
    (["simulate", "--gram", "no_such_file.txt"], "`--gram` must be orthogonal, equiangular, random or a readable"),
    (["predict", "--k", "2", "--u0", "0.3,0.1;0.2"], "`--u0` must be rows"),
    (["verify", "--seed", "-1"], "argument --seed"),
])
def test_usage_errors_in_process(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = main_usage_error(argv, capsys)
    assert fragment in err
    assert list(tmp_path.iterdir()) == []


# -- spiked covariance (arXiv 2309.03843) through the CLI --------------------------------------
def test_predict_spiked_stall_and_escape():
    # theory/mousavi2023/equations.md: at kappa = 50 < kappa_crit(d = 1000) = 165.5 the spherical flow stalls, the
    # normalized flow escapes
    base = ("predict", "--model", "spiked", "--covariance", "spiked:kappa=50,align=1", "--d", "1000", "--a-star", "-1")
    sph = ok_json(*base, "--flow", "spherical")
    nor = ok_json(*base, "--flow", "normalized")
    assert sph["escape_time"] is None  # never: strict JSON null, not Infinity
    assert 0 < nor["escape_time"] < 10
    # d_eff = tr(Sigma) u^T Sigma u / u^T Sigma^2 u for u = theta: (d + kappa)/(1 + kappa)
    assert nor["effective_dimension"] == pytest.approx((1000 + 50) / 51, rel=1e-12)


@pytest.mark.parametrize("cov", ["foo.txt", "spiked:kappa=1", "spiked:kappa=x,align=1", "spiked:kappa=-1,align=1",
                                 "spiked:kappa=1,align=2"])
def test_predict_spiked_bad_covariance(cov):
    usage_error("predict", "--model", "spiked", "--covariance", cov)


def test_compare_single_index_exact(tmp_path):
    out = ok_json("compare", "--model", "single-index", "--engine", "exact", "--d", 10000, "--eta", 1e-4,
                  "--t-end", 1, "--replicas", 4, "--init", 0.3, "--quiet", "--plot", tmp_path / "m.png")
    assert out["overlaps"] == ["m"] and out["initial"]["m"] == pytest.approx(0.3, abs=1e-15)
    assert out["meta"]["engine"] == "exact" and out["meta"]["problem"]["model"] == "single_index"
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_spiked_text(tmp_path):
    text = ok_text("compare", "--model", "spiked", "--covariance", "spiked:kappa=20,align=1", "--flow",
                   "preconditioned", "--d", 60, "--eta", 1e-3, "--t-end", 0.2, "--replicas", 2, "--quiet",
                   "--plot", "", cwd=tmp_path)
    assert "| over (p, q, S) = " in text and "p: start" in text


def test_compare_committee_joins_compare():
    """The committee machine is compared like every other model (it used to be refused)."""
    out = ok_json("compare", "--model", "committee", "--d", 100, "--t-end", 1, "--replicas", 4, "--quiet",
                  "--plot", "", "--json")
    assert out["overlaps"] == ["Q", "M", "a"] and out["time_unit"] == "t = steps / d"
    assert out["verdict"]["agree"] is True
    err = usage_error("compare", "--model", "committee", "--eta", 0.1, "--quiet", "--plot", "")
    assert "`--eta` does not apply" in err


# -- covariance from a file ----------------------------------------------------------------------
@pytest.fixture
def sigma_file(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((12, 12))
    path = tmp_path / "sigma.txt"
    np.savetxt(path, A @ A.T / 12 + 0.2 * np.eye(12))
    return path


def test_predict_covariance_file(sigma_file, tmp_path):
    out = ok_json("predict", "--model", "spiked", "--covariance", sigma_file, "--flow", "preconditioned", "--a-star", -1,
                  "--init", 0.3, "--m-target", 0.5)
    assert out["model"] == "covariance" and out["d"] == 12
    assert out["m_sigma_initial"] == pytest.approx(0.3, abs=1e-12)
    assert out["final"]["m_sigma"] >= 0.5 and np.isfinite(out["escape_time"])


def test_simulate_and_compare_covariance_file(sigma_file, tmp_path):
    out = ok_json("simulate", "--model", "spiked", "--covariance", sigma_file, "--eta", 1e-3, "--t-end", 0.05,
                  "--replicas", 2, "--quiet")
    assert {"p", "S", "m_sigma"} <= set(out["final_mean"])
    text = ok_text("compare", "--model", "spiked", "--covariance", sigma_file, "--eta", 1e-3, "--t-end", 0.05,
                   "--replicas", 2, "--quiet", "--plot", "", cwd=tmp_path)
    assert "over (w)" in text and "m_sigma: start" in text


@pytest.mark.parametrize("extra, fragment", [
    (["--d", 40], "disagrees with the 12 x 12 covariance"),
    (["--n-unlabeled", 5], "n_unlabeled"),
])
def test_covariance_file_errors(sigma_file, extra, fragment):
    err = usage_error("predict", "--model", "spiked", "--covariance", sigma_file, *extra)
    assert fragment in err


def test_covariance_file_not_positive_definite(tmp_path):
    path = tmp_path / "bad.txt"
    np.savetxt(path, np.diag([1.0, -0.5, 2.0]))
    assert "positive definite" in usage_error("predict", "--model", "spiked", "--covariance", path)
    assert "does not exist" in usage_error("predict", "--model", "spiked", "--covariance", tmp_path / "none.txt")
    assert "`--direction` applies" in usage_error("predict", "--model", "single-index", "--direction", path)


# -- batch reuse (arXiv 2406.01581) ----------------------------------------------------------------
def test_predict_reuse_vs_online():
    out = ok_json("predict", "--model", "single-index", "--reuse", 2, "--student", "tanh", "--teacher", "he3",
                  "--d", 2000)
    assert out["model"] == "reuse" and out["eta_tilde"] == pytest.approx(0.5, rel=1e-12)
    assert out["drift_coefficients"][0] == pytest.approx(-0.05564, abs=1e-5)    # theory/lee2024/equations.md
    assert out["effective_exponent"] == 1 and out["information_exponent"] == 3
    assert np.isfinite(out["predicted_samples"]["reuse"])
    assert out["predicted_samples"]["online (reuse 1, same step)"] is None      # stalls (JSON null = inf)
    assert abs(out["m_final"]) > 0.5


def test_simulate_and_compare_reuse(tmp_path):
    out = ok_json("simulate", "--model", "single-index", "--reuse", 2, "--student", "tanh", "--teacher", "he3",
                  "--d", 1000, "--batch", 1, "--t-end", 1, "--engine", "exact", "--replicas", 4, "--quiet")
    assert out["final_mean"]["m"] < 0.3   # drifts toward -theta from m0 = 0.3
    res = ok_json("compare", "--model", "single-index", "--reuse", 2, "--student", "tanh", "--teacher", "he3",
                  "--d", 2000, "--batch", 1, "--t-end", 4, "--engine", "exact", "--init", 0.1, "--replicas", 16,
                  "--quiet", "--plot", "", cwd=tmp_path)
    assert res["overlaps"] == ["m"] and res["meta"]["problem"]["reuse"] == 2
    assert res["max_abs_deviation"] <= 5 * res["max_standard_error"]


@pytest.mark.parametrize("args, fragment", [
    (["--model", "single-index", "--reuse", 0], "argument --reuse: must be a positive integer"),
    (["--model", "single-index", "--reuse", 2, "--interpolation", 1.5], "interpolation"),
    (["--model", "spiked", "--reuse", 2], "applies to --model single-index only"),
    (["--model", "single-index", "--reuse", 2, "--loss", "squared"], "`--loss` must be 'correlation'"),
    (["--model", "single-index", "--reuse", 2, "--eta-tilde", 0.5, "--eta", 0.01], "not both"),
    (["--model", "single-index", "--eta-tilde", 0.5], "applies with `--reuse` only"),
])
def test_reuse_usage_errors(args, fragment):
    assert fragment in usage_error("predict", *args)
