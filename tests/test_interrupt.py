"""Interrupting long simulations: nothing lost on SIGINT/SIGTERM, resumes bit-identical; progress.

* In process: a signal sent from inside a step -> the step finishes, the checkpoint holds
  exactly that step, ``Interrupted`` (a KeyboardInterrupt) says where it is, handlers are
  restored; the resumed run equals an uninterrupted one bit for bit.
* The real CLI in a subprocess: SIGINT (exit 130, one line, no traceback) and SIGKILL
  (the periodic checkpoint is used), then the same command again to completion, compared
  with an uninterrupted run bit for bit (multi-index fast; committee marked slow).
* :class:`popdyn._progress.Progress`: plain lines when stderr is not a terminal, tqdm on a
  terminal, nothing for short runs.
"""

import inspect
import io
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import popdyn.cli
from popdyn import NumericalError, Trajectory
from popdyn._progress import DeferredInterrupts, Interrupted, Progress
from popdyn.models.multi_index import MultiIndexProblem
from popdyn.models.multi_index_sim import MultiIndexStepper
from popdyn.simulation import simulate

#: Seconds to wait for a subprocess to write its first checkpoint / to finish (generous:
#: the 2 cores of the test machine are shared).
SUBPROCESS_TIMEOUT = 120.0


def _signal_at(monkeypatch, method, n_call, signals):
    """Make the ``n_call``-th call of ``MultiIndexStepper.<method>`` send ``signals`` to this process."""
    original = getattr(MultiIndexStepper, method)
    calls = {"n": 0}

    def wrapped(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs)
        if calls["n"] == n_call:
            for sig in signals:
                os.kill(os.getpid(), sig)
        return out

    monkeypatch.setattr(MultiIndexStepper, method, wrapped)
    return calls


CASES = [
    ("sgd", dict(eta=0.05, steps=60, batch=3), "step", 23, signal.SIGINT),
    ("sgd", dict(eta=0.05, steps=60, batch=3), "step", 41, signal.SIGTERM),
    ("gd", dict(eta=0.05, steps=60, n_samples=11, batch=4), "step", 37, signal.SIGINT),
    ("gf", dict(t_end=3.0), "advance", 9, signal.SIGTERM),
]


@pytest.mark.parametrize("algorithm,kw,method,n_call,sig", CASES)
def test_signal_saves_the_current_step(tmp_path, monkeypatch, algorithm, kw, method, n_call, sig):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=2)
    common = dict(d=9, algorithm=algorithm, replicas=3, init=0.3, n_record=20, same_init=False, rng=5, **kw)
    ref = simulate(prob, **common)
    ck = tmp_path / "run.npz"
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with monkeypatch.context() as m:
        calls = _signal_at(m, method, n_call, [sig])
        with pytest.raises(Interrupted) as info:  # no periodic write: only the one on the signal
            simulate(prob, checkpoint=ck, checkpoint_every=1e9, **common)
    assert calls["n"] == n_call  # the step in progress finished, no further step ran
    assert isinstance(info.value, KeyboardInterrupt) and info.value.signum == sig
    msg = str(info.value)
    assert signal.Signals(sig).name in msg and str(ck) in msg and "rerun the same command" in msg
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored
    with np.load(ck) as data:
        import json

        header = json.loads(str(data["header"]))
    assert header["position"] == n_call and not header["complete"]
    resumed = simulate(prob, checkpoint=ck, **common)
    assert resumed.meta["resumed_from"] == n_call
    np.testing.assert_array_equal(resumed.t, ref.t)
    np.testing.assert_array_equal(resumed.u, ref.u)


def test_second_signal_stops_at_once(tmp_path, monkeypatch):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    ck = tmp_path / "run.npz"
    with monkeypatch.context() as m:
        _signal_at(m, "step", 7, [signal.SIGINT, signal.SIGINT])
        with pytest.raises(KeyboardInterrupt) as info:
            simulate(prob, d=6, eta=0.05, steps=30, replicas=2, rng=1, checkpoint=ck, checkpoint_every=1e9)
    assert not isinstance(info.value, Interrupted)  # raised by the handler, nothing saved
    assert not ck.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_checkpoint_keyboardinterrupt_propagates(monkeypatch):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    with monkeypatch.context() as m:
        calls = _signal_at(m, "step", 5, [signal.SIGINT])
        with pytest.raises(KeyboardInterrupt) as info:
            simulate(prob, d=6, eta=0.05, steps=30, replicas=2, rng=1)
    assert not isinstance(info.value, Interrupted) and calls["n"] == 5


def test_checkpointed_run_in_a_thread(tmp_path):
    """signal.signal is main-thread only: a run in a worker thread installs no handler."""
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    out = {}

    def work():
        out["traj"] = simulate(prob, d=6, eta=0.05, steps=20, replicas=2, rng=1, checkpoint=tmp_path / "c.npz")

    th = threading.Thread(target=work)
    th.start()
    th.join()
    ref = simulate(prob, d=6, eta=0.05, steps=20, replicas=2, rng=1)
    np.testing.assert_array_equal(out["traj"].u, ref.u)


def test_deferred_interrupts_restore_handlers():
    old = signal.getsignal(signal.SIGTERM)
    with DeferredInterrupts() as guard:
        assert signal.getsignal(signal.SIGTERM) != old
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == old
    with DeferredInterrupts(enabled=False) as guard:
        assert signal.getsignal(signal.SIGTERM) == old and guard.requested is None


# --------------------------------------------------------------------------------------
# sanity hook
# --------------------------------------------------------------------------------------
def test_check_state_hook(monkeypatch):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    common = dict(d=6, eta=0.05, steps=40, replicas=2, rng=1, record="linear", n_record=5)  # records 0,10,..,40
    seen = []

    def check(self, state):
        seen.append(state["W"].shape)
        return "norm drifted off the sphere" if len(seen) == 3 else None

    monkeypatch.setattr(MultiIndexStepper, "check_state", check, raising=False)
    with pytest.raises(NumericalError, match="norm drifted off the sphere") as info:
        simulate(prob, **common)
    assert info.value.step == 20 and info.value.time == pytest.approx(1.0)
    monkeypatch.setattr(MultiIndexStepper, "check_state", lambda self, state: None, raising=False)
    simulate(prob, **common)


# --------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------
class _TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_plain_lines():
    out = io.StringIO()
    bar = Progress(100, desc="simulate sgd", stream=out, delay=0.0, interval=0.0)
    bar.update(24)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("simulate sgd: step 24/100 (24%), ") and "steps/s, ETA " in lines[0]
    assert lines[-1].startswith("simulate sgd: step 24/100") and "done in" in lines[-1]
    quiet = io.StringIO()
    with Progress(100, desc="x", stream=quiet) as bar:  # automatic: nothing before PROGRESS_DELAY
        bar.update(100)
    with Progress(100, desc="x", stream=quiet, enabled=False, delay=0.0, interval=0.0) as bar:
        bar.update(100)
    assert quiet.getvalue() == ""


def test_progress_tqdm_on_a_terminal():
    out = _TTY()
    with Progress(3, desc="simulate gf", unit="interval", stream=out, enabled=True) as bar:
        for _ in range(3):
            bar.update()
    assert "simulate gf" in out.getvalue() and "3/3" in out.getvalue()


def test_short_run_prints_nothing(capsys):
    prob = MultiIndexProblem("he3", "he3", np.eye(2), n_neurons=1)
    simulate(prob, d=7, eta=0.05, steps=30, replicas=2, rng=1)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------
# the real CLI in a subprocess
# --------------------------------------------------------------------------------------
#: Runs of a few seconds on the (shared, 2-core) test machine.
CLI_RUNS = {
    "multi-index": ["--d", "300", "--batch", "16", "--t-end", "3", "--replicas", "8", "--seed", "3"],
    "committee": ["--model", "committee", "--d", "200", "--batch", "8", "--t-end", "15", "--replicas", "8",
                  "--seed", "3"],
}
#: Seconds between periodic checkpoints in the subprocess runs.
CLI_CHECKPOINT_EVERY = 0.2


def _cli(argv):
    """The command line of ``popdyn simulate <argv>`` with checkpoints every CLI_CHECKPOINT_EVERY s.

    Uses ``--checkpoint-every`` when the CLI has it; otherwise runs the same CLI entry point
    with the library default ``CHECKPOINT_EVERY`` lowered.
    """
    if "--checkpoint-every" in inspect.getsource(popdyn.cli):
        return [sys.executable, "-m", "popdyn", "simulate", *argv, "--checkpoint-every", str(CLI_CHECKPOINT_EVERY)]
    code = ("import importlib, sys; importlib.import_module('popdyn.simulation').CHECKPOINT_EVERY = float(sys.argv[1]); "
            "from popdyn.cli import main; sys.exit(main(sys.argv[2:]))")
    return [sys.executable, "-c", code, str(CLI_CHECKPOINT_EVERY), "simulate", *argv]


def _header(path):
    try:
        with np.load(path) as data:
            import json

            return json.loads(str(data["header"]))
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted run of CLI_RUNS[model] without a checkpoint (computed once per model)."""
    cache = {}

    def get(model):
        if model not in cache:
            path = tmp_path_factory.mktemp("ref") / f"{model}.npz"
            ref = subprocess.run(_cli(CLI_RUNS[model] + ["--quiet", "--out", str(path)]), capture_output=True,
                                 text=True, timeout=SUBPROCESS_TIMEOUT)
            assert ref.returncode == 0, ref.stderr
            cache[model] = path
        return cache[model]

    return get


def _interrupted_then_resumed(tmp_path, ref_out, model, sig):
    ck, out = tmp_path / "run.npz", tmp_path / "traj.npz"
    argv = CLI_RUNS[model] + ["--quiet"]
    cmd = _cli(argv + ["--checkpoint", str(ck), "--out", str(out)])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    try:
        while True:  # wait for a periodic checkpoint with some progress
            header = _header(ck)
            if header and header["position"] > 0:
                assert not header["complete"], "the run completed before it was interrupted: make CLI_RUNS longer"
                pos = header["position"]
                break
            assert proc.poll() is None, "the run ended before its first checkpoint: make CLI_RUNS longer"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    header = _header(ck)
    assert header is not None and not header["complete"]
    saved = header["position"]
    assert saved >= pos
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("popdyn: interrupted"), err  # no traceback
        assert saved > pos  # written on the signal, after the step in progress (the poll saw an older one)
    else:
        assert proc.returncode == -sig
    assert not out.exists()  # the run did not complete
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert done.returncode == 0, done.stderr
    a, b = Trajectory.load(out), Trajectory.load(ref_out)
    assert a.meta["resumed_from"] == saved > 0
    np.testing.assert_array_equal(a.t, b.t)
    assert a.overlaps.keys() == b.overlaps.keys()
    for name in a.overlaps:
        np.testing.assert_array_equal(a.overlaps[name], b.overlaps[name])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_cli_interrupt_and_resume_multi_index(tmp_path, reference, sig):
    _interrupted_then_resumed(tmp_path, reference("multi-index"), "multi-index", sig)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_cli_interrupt_and_resume_committee(tmp_path, reference, sig):
    _interrupted_then_resumed(tmp_path, reference("committee"), "committee", sig)
