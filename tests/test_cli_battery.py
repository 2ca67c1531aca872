"""Regression battery of bad command lines: every one exits 2 (usage) or 1 (numerical) with one
line on stderr that names the offending argument, never a traceback, never silently 0.

Each case is run in process through :func:`popdyn.cli.main` (fast); a few run as real
subprocesses to check the console script end to end.  A hypothesis fuzz draws random
flag sets for every verb and asserts the same contract.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popdyn.cli import main

#: (argv, expected exit code, text the one-line message must contain)
BAD = [
    # security: specs are data, never code
    (["hermite", "poly:__import__('os').system('touch /tmp/PWNED')"], 2, "spec"),
    (["hermite", "poly:z.__class__"], 2, "spec"),
    (["hermite", "poly:z**1000"], 2, "degree"),
    (["hermite", "he3", "--degree", "1e12"], 2, "degree"),
    (["hermite", "he3", "--degree", "-1"], 2, "--degree"),
    (["hermite", "nonsense"], 2, "nonsense"),
    # impossible output paths, checked before the run
    (["predict", "--out", "/proc/x.npz"], 2, "--out"),
    (["predict", "--plot", "/proc"], 2, "--plot"),
    (["predict", "--plot", "x.jpgz"], 2, "--plot"),
    (["predict", "--out", "x.txt"], 2, "--out"),
    (["predict", "--out", "/etc/hostname/x.npz"], 2, "--out"),
    (["simulate", "--checkpoint", "/proc/c.npz", "--t-end", "0.1"], 2, "--checkpoint"),
    (["compare", "--plot", "/proc/c.png", "--t-end", "0.1"], 2, "--plot"),
    # sizes beyond the machine, estimated before allocating
    (["simulate", "--d", "1e12"], 2, "max_steps"),
    (["simulate", "--replicas", "1e12"], 2, "replicas"),
    (["simulate", "--batch", "1e12"], 2, "batch"),
    (["simulate", "--algorithm", "gd", "--n-samples", "1e12"], 2, "n_samples"),
    (["predict", "--d", "1e12"], 2, "`d`"),
    (["predict", "--neurons", "1e12"], 2, "neurons"),
    (["predict", "--k", "1e12"], 2, "`k`"),
    (["predict", "--model", "committee", "--K", "1e12"], 2, "`K`"),
    (["predict", "--model", "committee", "--M", "1e9"], 2, "`M`"),
    (["fixed-points", "--random-starts", "1e12"], 2, "--random-starts"),
    (["predict", "--model", "spiked", "--covariance", "spiked:kappa=1e308,align=1"], 2, "kappa"),
    (["predict", "--model", "spiked", "--covariance", "spiked:kappa=nan,align=1"], 2, "kappa"),
    (["predict", "--model", "spiked", "--covariance", "spiked:kappa=5,align=3"], 2, "align"),
    # budgets instead of hangs
    (["simulate", "--t-end", "1e12"], 2, "--max-steps"),
    (["simulate", "--model", "committee", "--t-end", "1e12"], 2, "--max-steps"),
    (["simulate", "--t-end", "1", "--max-steps", "10"], 2, "max_steps"),
    (["predict", "--model", "single-index", "--reuse", "1e12"], 2, "reuse"),
    (["predict", "--model", "committee", "--t-end", "1e6", "--max-ode-steps", "50"], 1, "--max-ode-steps"),
    (["predict", "--t-end", "1e12", "--max-ode-steps", "20"], 1, "max_steps"),
    # flags that do not apply are errors, not ignored
    (["loss", "--gram", "orthogonal", "--beta", "0.3"], 2, "--beta"),
    (["predict", "--noise", "0.1"], 2, "--noise"),
    (["predict", "--conventions", "saad-solla"], 2, "--conventions"),
    (["simulate", "--model", "single-index", "--K", "3"], 2, "--K"),
    (["predict", "--model", "committee", "--k", "3"], 2, "--k"),
    (["predict", "--model", "committee", "--flow", "spherical"], 2, "--flow"),
    (["predict", "--model", "spiked", "--loss", "squared"], 2, "--loss"),
    (["predict", "--eta", "0.1"], 2, "--eta"),
    (["predict", "--u0", "0.1,0.2,0.3;0,0,0.1;0.1,0,0", "--neurons", "2"], 2, "--neurons"),
    (["predict", "--u0", "0.1,0.2;0,0.1"], 2, "--u0"),
    (["predict", "--u0", "0.1,0.2,0.3", "--init", "0.2"], 2, "--init"),
    (["simulate", "--n-samples", "100"], 2, "--n-samples"),
    (["simulate", "--algorithm", "gf", "--eta", "0.1"], 2, "--eta"),
    (["predict", "--model", "spiked", "--n-unlabeled", "100"], 2, "--n-unlabeled"),
    (["predict", "--escape-level", "2"], 2, "--escape-level"),
    (["predict", "--model", "single-index", "--m-target", "0"], 2, "--m-target"),
    (["predict", "--model", "spiked", "--m-target", "1.5"], 2, "--m-target"),
    (["verify", "--list", "9999.99999"], 2, "9999.99999"),
    # malformed values
    (["predict", "--beta", "nan", "--gram", "equiangular"], 2, "--beta"),
    (["predict", "--model", "committee", "--noise", "inf"], 2, "--noise"),
    (["predict", "--t-end", "0"], 2, "--t-end"),
    (["predict", "--t-end", "-1"], 2, "--t-end"),
    (["predict", "--d", "0"], 2, "--d"),
    (["predict", "--d", "2.5"], 2, "--d"),
    (["predict", "--neurons", "abc"], 2, "--neurons"),
    (["predict", "--model", "nope"], 2, "--model"),
    (["predict", "--stud", "he3"], 2, "--stud"),
    (["simulate", "--engine", "warp"], 2, "--engine"),
    (["predict", "--gram", "/nonexistent/G.txt"], 2, "--gram"),
    (["predict", "--model", "spiked", "--covariance", "/nonexistent/S.npy"], 2, "covariance"),
    (["predict", "--model", "spiked", "--covariance", "spiked:kappa=1"], 2, "align"),
    (["threshold", "--student", "he3", "--teacher", "he3", "--k", "0"], 2, "--k"),
    (["predict", "--d", "2", "--k", "3"], 2, "`d`"),
    (["predict", "--student", "poly:z**1000"], 2, "degree"),
]


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv,code,needle", BAD, ids=[" ".join(a)[:60] for a, _, _ in BAD])
def test_bad_input_gets_one_clean_line(argv, code, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        got, out, err = _run(argv, capsys)
    except SystemExit as exc:  # argparse errors
        got, captured = exc.code, capsys.readouterr()
        out, err = captured.out, captured.err
    assert got == code, f"{argv}: exit {got}, stderr {err!r}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{argv}: stderr is not one line: {err!r}"
    assert lines[0].startswith("popdyn: error:" if code == 2 else "popdyn: numerical failure:"), lines[0]
    assert needle in lines[0], f"{argv}: {lines[0]!r} does not name {needle!r}"
    assert len(lines[0]) <= 500
    assert not (tmp_path / "x.txt").exists()


def test_injection_creates_nothing(tmp_path, capsys):
    target = tmp_path / "PWNED"
    code = main(["hermite", f"poly:__import__('os').system('touch {target}')"])
    assert code == 2 and not target.exists()


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="--noise"):
        main(["--debug", "predict", "--noise", "0.1"])


def test_console_script_end_to_end(tmp_path):
    """The real process: exit code, one stderr line, empty stdout."""
    proc = subprocess.run([sys.executable, "-m", "popdyn", "predict", "--out", "/proc/x.npz"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "--out" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "popdyn", "predict", "--nope"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--nope" in proc.stderr


# --------------------------------------------------------------------------------------
# fuzz: random flag sets per verb; the contract is exit 0/1/2 and at most one stderr line
# --------------------------------------------------------------------------------------
#: Values that every numeric flag is tried with: valid small ones, boundaries, garbage.
NASTY = ["0", "-1", "1", "2", "0.5", "1e12", "1e308", "nan", "inf", "-inf", "", "abc", "1e-300", "3.5",
         "poly:__import__('os')", "/proc/x", "he3", "'", "--", "1,2;3"]
#: Fixed small base arguments that keep a valid run short (the random flags come after them,
#: so they override).
BASE = {
    "hermite": ["he3"],
    "threshold": ["--student", "he3", "--teacher", "he3", "--k", "3"],
    "fixed-points": ["--random-starts", "5"],
    "loss": [],
    "predict": ["--t-end", "0.5", "--d", "50"],
    "simulate": ["--t-end", "0.05", "--d", "20", "--replicas", "2", "--quiet"],
    "compare": ["--t-end", "0.05", "--d", "20", "--replicas", "2", "--quiet", "--plot", ""],
}
FLAGS = {
    "hermite": ["--degree"],
    "threshold": ["--method", "--degree", "--k"],
    "fixed-points": ["--k", "--gram", "--beta", "--degree", "--seed", "--student", "--teacher"],
    "loss": ["--k", "--gram", "--beta", "--degree", "--student", "--teacher"],
    "predict": ["--model", "--k", "--beta", "--gram", "--neurons", "--seed", "--d", "--init", "--a-star", "--K",
                "--M", "--noise", "--covariance", "--flow", "--reuse", "--eta-tilde", "--escape-level",
                "--m-target", "--u0", "--student", "--teacher", "--loss", "--batch", "--delta"],
    "simulate": ["--model", "--k", "--neurons", "--seed", "--d", "--init", "--algorithm", "--eta", "--delta",
                 "--batch", "--replicas", "--engine", "--n-samples", "--student", "--teacher", "--K",
                 "--checkpoint-every"],
    "compare": ["--model", "--k", "--neurons", "--seed", "--d", "--init", "--algorithm", "--delta", "--batch",
                "--engine", "--student", "--teacher"],
}
#: Verbs whose valid random runs may take a few seconds: fewer examples.
EXAMPLES = {"predict": 25, "simulate": 25, "compare": 15}


def _argv_strategy(verb):
    pairs = st.lists(st.tuples(st.sampled_from(FLAGS[verb]), st.sampled_from(NASTY)), min_size=1, max_size=3)
    return pairs.map(lambda ps: [verb, *BASE[verb], *[x for p in ps for x in p]])


@pytest.mark.parametrize("verb", sorted(FLAGS))
def test_fuzz_flags(verb, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    @settings(max_examples=EXAMPLES.get(verb, 30), deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(_argv_strategy(verb))
    def check(argv):
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
        text = err.getvalue()
        assert code in (0, 1, 2), (argv, code, text)
        assert "Traceback" not in text, (argv, text)
        if code:
            lines = [ln for ln in text.splitlines() if ln.startswith("popdyn:")]
            assert len(lines) >= 1 and "internal error" not in text, (argv, text)

    check()


def test_ode_progress_line_off_a_terminal(capsys):
    """A long ODE solve says so on stderr (plain lines when stderr is not a terminal)."""
    import io

    import numpy as np

    import popdyn
    from popdyn import _progress

    problem = popdyn.MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    stream = io.StringIO()
    original = _progress.Progress.__init__

    def forced(self, *args, **kwargs):  # show lines at once, every call, on our stream
        kwargs.update(enabled=True, stream=stream, interval=0.0)
        original(self, *args, **kwargs)

    _progress.Progress.__init__ = forced
    try:
        popdyn.integrate(problem, np.array([0.3, 0.1]), 50.0)
    finally:
        _progress.Progress.__init__ = original
    lines = stream.getvalue().splitlines()
    assert lines and lines[0].startswith("ODE to t_end = 50: permille")
    assert "1000/1000" in lines[-1] and "done in" in lines[-1]


def test_result_file_reproduces_its_run(tmp_path, capsys):
    """Every --json result of predict/simulate/compare embeds its complete spec and versions;
    `--problem RESULT.json` reruns it (flags typed after it override)."""
    import json

    argv = ["predict", "--model", "single-index", "--student", "tanh", "--d", "300", "--init", "0.2", "--t-end", "2",
            "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["spec"]["model"] == "single-index" and first["spec"]["options"]["student"] == "tanh"
    assert {"popdyn", "numpy", "scipy", "python"} <= set(first["versions"])
    path = tmp_path / "result.json"
    path.write_text(json.dumps(first))
    assert main(["predict", "--problem", str(path), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["m_final"] == first["m_final"] and again["spec"] == first["spec"]
    assert main(["predict", "--problem", str(path), "--t-end", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["t_final"] == 1.0
    toml = tmp_path / "p.toml"
    toml.write_text('model = "committee"\n[options]\nK = 3\nt_end = 2\n')
    assert main(["predict", "--problem", str(toml), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problem"]["K"] == 3


@pytest.mark.parametrize("content,needle", [
    (None, "cannot be read"),
    ("{not json", "not valid JSON"),
    ('[1, 2]', "table of options"),
    ('{"options": {"k": [1, 2]}}', "must be a number"),
    ('{"options": {"noise": 0.1}}', "--noise"),
    ('{"options": {"__class__": 1}}', "__class__"),
    ('{"options": 3}', "`options` must be a table"),
    ('{"options": {}, "eval": 1}', "unknown keys"),
    ('{"model": "nope"}', "--model"),
])
def test_bad_problem_files(content, needle, tmp_path, capsys):
    path = tmp_path / "spec.json"
    if content is not None:
        path.write_text(content)
    try:
        code = main(["predict", "--problem", str(path)])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err


def test_predict_warns_outside_the_small_step_regime(capsys):
    """A step the ODE cannot describe is a warning with the estimate, not a silent result."""
    from popdyn.errors import LargeStepWarning

    with pytest.warns(LargeStepWarning, match=r"moves the unit weight by ~1\.55e\+11 per step"):
        assert main(["predict", "--model", "single-index", "--reuse", "2", "--eta-tilde", "1e12", "--t-end", "1"]) == 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeStepWarning)  # the README's step: no warning
        assert main(["predict", "--model", "single-index", "--d", "128", "--eta", "0.0003453", "--t-end", "1"]) == 0
