"""Sweeps: configuration checks, seeds, the result store (resume after a kill, damaged records),
failed points, the executors (serial, process pool, dask LocalCluster: bit-identical results),
tables, xarray and plots."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from popdyn import sweeps
from popdyn._store import ResultStore
from popdyn.cli import main

#: A seeded model verb that is cheap per point (~0.1 s): the one-neuron u-ODE from a random start.
PREDICT = {
    "model": "multi-index", "verb": "predict", "seed": 11, "replicas": 2,
    "base": {"student": "he3", "teacher": "he3", "gram": "equiangular", "neurons": 1, "init": "uniform", "d": 200,
             "t_end": 20.0},
    "grid": {"k": [2, 3], "beta": [0.1, 0.5]},
    "outputs": ["u_final", "directions"],
}
#: Finite-d online SGD with the trajectories kept (random at every step: the strictest equality check).
SIMULATE = {
    "model": "multi-index", "verb": "simulate", "seed": 3,
    "base": {"student": "he3", "teacher": "he3", "k": 2, "neurons": 2, "d": 60, "t_end": 0.5, "replicas": 2},
    "grid": {"batch": [4, 8]},
    "trajectories": True,
}
#: A deterministic command: beta_c over k (exact: (p - 2)/(k + p - 2) for he3, arXiv 2411.08798).
THRESHOLD = {"model": "multi-index", "verb": "threshold", "base": {"student": "he3", "teacher": "he3"},
             "grid": {"k": [2, 3, 5]}, "outputs": ["beta_c"]}


def _results(res):
    """What must be bit-identical between two runs: keys, seeds, kept outputs, full results
    (without the wall-clock fields)."""
    def clean(obj):
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if k not in sweeps.TIMING_KEYS}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return obj

    return [clean({k: r.get(k) for k in ("key", "seed", "options", "status", "outputs", "result")})
            for r in res.records + res.prediction_records]


def _arrays(res):
    import numpy as np

    out = []
    for r in res.records:
        traj = res.trajectory(r)
        out.append((traj.t, {k: np.asarray(v) for k, v in traj.overlaps.items()}))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The PREDICT sweep run serially, uninterrupted."""
    return sweeps.sweep(PREDICT, tmp_path_factory.mktemp("ref"), executor="serial", progress=False)


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
BAD_CONFIGS = [
    ({"verb": "predict", "colour": 1}, "unknown key 'colour'"),
    ({"model": "nope", "verb": "predict"}, "`model` must be one of"),
    ({"model": "multi-index", "verb": "verify"}, "`verb` must be one of predict, simulate, compare"),
    ({"model": "multi-index", "verb": "predict", "base": {"betta": 0.1}}, "`betta` is not an option of"),
    ({"model": "multi-index", "verb": "predict", "base": {"k": True}}, "`k` takes an integer, not a switch, got True"),
    ({"model": "multi-index", "verb": "predict", "base": {"k": [1, 2]}}, "must be a number, a string or a boolean"),
    ({"model": "multi-index", "verb": "predict", "grid": {"k": [2, 0]}}, "the point k = 0: argument --k: must be a "
                                                                          "positive integer"),
    ({"model": "multi-index", "verb": "predict", "grid": {"d": [100, 0]}}, "the point d = 0"),
    ({"model": "multi-index", "verb": "predict", "base": {"seed": 3}}, "`seed` cannot be set in a sweep"),
    ({"model": "multi-index", "verb": "threshold", "replicas": 2, "base": {"student": "he3", "teacher": "he3",
                                                                           "k": 3}}, "needs a verb that takes a seed"),
    ({"model": "multi-index", "verb": "predict", "zip": {"k": [2, 3], "beta": [0.1]}}, "the same length"),
    ({"model": "multi-index", "verb": "predict", "grid": {"k": [2, 2]}}, "are the same run"),
    ({"model": "multi-index", "verb": "predict", "format": {"gram": "{nope}"}}, "{nope} names no variable"),
    ({"model": "multi-index", "verb": "threshold", "trajectories": True,
      "base": {"student": "he3", "teacher": "he3", "k": 3}}, "needs a verb that saves a trajectory"),
    ({"model": "multi-index", "verb": "predict", "outputs": ["u final"]}, "dotted result paths"),
    ({"model": "multi-index", "verb": "predict", "grid": {"k": {"linspace": [1, 2]}}}, "[start, stop, num]"),
    ({"model": "multi-index", "verb": "predict", "grid": {"beta": [0.1]}, "base": {"gram": "orthogonal"}},
     "`--beta` applies with `--gram equiangular` only"),
    ({"model": "multi-index", "verb": "predict", "grid": {"k": [2, 3]}, "plot": {"x": "beta"}},
     "`x` must be a swept variable"),
    ({"model": "multi-index", "verb": "predict", "grid": {"k": [2, 3]}, "seed": -1}, "`seed` must be a non-negative"),
]


@pytest.mark.parametrize("config, message", BAD_CONFIGS, ids=[m[:30] for _, m in BAD_CONFIGS])
def test_bad_configs_are_refused_before_anything_runs(config, message, tmp_path):
    with pytest.raises((ValueError, TypeError)) as info:
        sweeps.sweep(config, tmp_path / "store", executor="serial", progress=False)
    assert message in str(info.value)
    assert not (tmp_path / "store").exists()  # nothing created, nothing run


def test_cli_config_errors_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "multi-index"\nverb = "predict"\n[grid]\nk = [2, "three"]\n')
    assert main(["sweep", str(bad), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the point k = 'three': argument --k: must be an integer" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("verb = \n")
    assert main(["sweep", str(broken)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


def test_grid_zip_points_and_templates_expand_as_documented():
    cfg = sweeps.load_config({
        "model": "spiked", "verb": "predict",
        "base": {"flow": "normalized", "a_star": -1.0, "d": 100},
        "grid": {"kappa": {"logspace": [0, 1, 2]}},
        "zip": {"align": [1.0, 0.5], "t_end": [1.0, 2.0]},
        "points": [{"m_target": 0.5}, {"m_target": 0.4}],
        "format": {"covariance": "spiked:kappa={kappa},align={align}"}})
    assert len(cfg.points) == 2 * 2 * 2
    p = cfg.points[3]
    assert p.coords == {"kappa": 1.0, "align": 0.5, "t_end": 2.0, "m_target": 0.4}
    assert p.options["covariance"] == "spiked:kappa=1.0,align=0.5"     # floats exactly, no eval
    assert "kappa" not in p.options and p.options["t_end"] == 2.0


# --------------------------------------------------------------------------------------
# seeds and reproducibility
# --------------------------------------------------------------------------------------
def test_seeds_do_not_depend_on_grid_order(reference, tmp_path):
    shuffled = {**PREDICT, "grid": {"beta": [0.5, 0.1], "k": [3, 2]}}   # other order, other axis order
    res = sweeps.sweep(shuffled, tmp_path, executor="serial", progress=False)
    by_key = {r["key"]: r for r in res.records}
    assert set(by_key) == {r["key"] for r in reference.records}
    for r in reference.records:
        assert by_key[r["key"]]["seed"] == r["seed"] and by_key[r["key"]]["outputs"] == r["outputs"]
    assert len({r["seed"] for r in reference.records}) == len(reference.records)   # replicas differ


def test_a_record_reproduces_alone_from_its_command_line(reference, capsys):
    rec = reference.records[3]
    assert main(rec["argv"][1:]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {p: sweeps._get_path(result, p) for p in PREDICT["outputs"]} == rec["outputs"]
    assert rec["spec"] == result["spec"] and rec["spec"]["options"]["seed"] == rec["seed"]
    assert rec["versions"] == result["versions"]
    # the record file itself is a problem file: `popdyn predict --problem RECORD` reruns the point
    path = ResultStore(reference.store).path(rec["key"])
    assert main(["predict", "--problem", str(path), "--json", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {p: sweeps._get_path(again, p) for p in PREDICT["outputs"]} == rec["outputs"]


# --------------------------------------------------------------------------------------
# executors: bit-for-bit the same
# --------------------------------------------------------------------------------------
def test_pool_and_dask_local_cluster_give_bit_identical_results(reference, tmp_path):
    pool = sweeps.sweep(PREDICT, tmp_path / "pool", workers=2, progress=False)
    assert pool.counts["computed"] == 8 and not pool.failed
    assert _results(pool) == _results(reference)
    pytest.importorskip("dask.distributed")
    dask = sweeps.sweep(PREDICT, tmp_path / "dask", dask_local=2, progress=False)   # a real LocalCluster
    assert dask.counts["computed"] == 8
    assert _results(dask) == _results(reference)


def test_sgd_and_its_trajectories_are_identical_across_executors(tmp_path):
    import numpy as np

    serial = sweeps.sweep(SIMULATE, tmp_path / "serial", executor="serial", progress=False)
    pool = sweeps.sweep(SIMULATE, tmp_path / "pool", workers=2, progress=False)
    assert not serial.failed and _results(serial) == _results(pool)
    for (t1, o1), (t2, o2) in zip(_arrays(serial), _arrays(pool)):
        np.testing.assert_array_equal(t1, t2)
        assert o1.keys() == o2.keys()
        for k in o1:
            np.testing.assert_array_equal(o1[k], o2[k], err_msg=f"overlap {k}")


def test_dask_threads_keep_the_points_outputs_apart(reference, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        res = sweeps.sweep(PREDICT, tmp_path, scheduler=client, progress=False)
    assert _results(res) == _results(reference)   # three points at once in one process: no mixed stdout


# --------------------------------------------------------------------------------------
# the store: resume after a kill, interrupt, damaged records, failed points
# --------------------------------------------------------------------------------------
def _wait_for_records(store: Path, n: int, proc, timeout: float = 60.0) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        have = len(list((store / "records").glob("*.json"))) if (store / "records").exists() else 0
        if have >= n:
            return have
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before it could be killed: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    pytest.fail("no records appeared")


def _config_file(tmp_path, config) -> Path:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(config))
    return path


def test_resume_after_kill_loses_nothing_and_recomputes_nothing(reference, tmp_path):
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "popdyn", "sweep", str(_config_file(tmp_path, PREDICT)),
                             "--out", str(store), "--executor", "serial", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_records(store, 3, proc)
    proc.send_signal(signal.SIGKILL)   # no chance to clean up
    proc.wait(timeout=30)
    before = {p.name: p.read_bytes() for p in (store / "records").glob("*.json")}
    assert 3 <= len(before) < 8, "kill the sweep in the middle"
    for name in before:   # every record left by the killed process is complete and sound
        assert ResultStore(store).read(name[:-5])[1] is None
    res = sweeps.sweep(PREDICT, store, executor="serial", progress=False)
    assert res.counts["skipped"] == len(before) and res.counts["computed"] == 8 - len(before)
    assert res.counts["recomputed"] == 0 and not res.failed
    for name, data in before.items():   # nothing computed twice: the old records are untouched
        assert (store / "records" / name).read_bytes() == data
    assert _results(res) == _results(reference)   # and the values are those of an uninterrupted run
    assert not list(store.glob("**/.*.tmp"))


def test_ctrl_c_stops_a_pool_sweep_cleanly_and_a_rerun_resumes(reference, tmp_path):
    store = tmp_path / "store"
    config = {**PREDICT, "base": {**PREDICT["base"], "t_end": 60.0}}
    proc = subprocess.Popen([sys.executable, "-m", "popdyn", "sweep", str(_config_file(tmp_path, config)),
                             "--out", str(store), "--workers", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_records(store, 1, proc)
    os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C reaches the whole process group, workers included
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    done = len(list((store / "records").glob("*.json")))
    assert not (store / ".lock").exists()
    res = sweeps.sweep(config, store, executor="serial", progress=False)
    assert res.counts["skipped"] == done and res.counts["computed"] == 8 - done and not res.failed


def test_damaged_records_are_detected_and_recomputed(tmp_path):
    first = sweeps.sweep(SIMULATE, tmp_path, executor="serial", progress=False)
    a, b = first.records
    path_a = ResultStore(tmp_path).path(a["key"])
    path_a.write_bytes(path_a.read_bytes()[:-40])                          # truncated record
    arr = tmp_path / b["array"]["file"]
    data = bytearray(arr.read_bytes())
    data[len(data) // 2] ^= 0xFF                                            # flipped bit in the array
    arr.write_bytes(bytes(data))
    assert sweeps.load(tmp_path).counts["damaged"] == 2
    again = sweeps.sweep(SIMULATE, tmp_path, executor="serial", progress=False)
    assert again.counts["recomputed"] == 2 and again.counts["computed"] == 2
    assert _results(again) == _results(first)


def test_a_failing_point_is_recorded_with_its_error_and_the_rest_complete(tmp_path, capsys):
    config = {**THRESHOLD, "grid": {"k": [2, 3]}, "zip": {"student": ["he3", "he4"], "teacher": ["he3", "he3"]},
              "base": {}}
    path = _config_file(tmp_path, config)
    assert main(["sweep", str(path), "--out", str(tmp_path / "s"), "--executor", "serial", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "2 failed" in out and "student = 'he4', teacher = 'he3' (replica 0): error: `student` 'he4'" in out
    res = sweeps.load(tmp_path / "s")
    ok = [r for r in res.table() if r["status"] == "ok"]
    assert [(r["k"], r["beta_c"]) for r in ok] == [(2, 1 / 3), (3, 0.25)]   # (p-2)/(k+p-2), p = 3
    bad = res.failed
    assert len(bad) == 2 and all(r["exit_code"] == 2 and "share no Hermite degree" in r["error"] for r in bad)
    assert all(r["options"]["student"] == "he4" for r in bad)
    # a rerun keeps them failed without recomputing; --retry-failed computes them again
    assert sweeps.sweep(path, tmp_path / "s", executor="serial", progress=False).counts["computed"] == 0
    retry = sweeps.sweep(path, tmp_path / "s", executor="serial", progress=False, retry_failed=True)
    assert retry.counts["computed"] == 2 and len(retry.failed) == 2


def test_json_summary_and_exit_0(tmp_path, capsys):
    path = _config_file(tmp_path, THRESHOLD)
    assert main(["sweep", str(path), "--out", str(tmp_path / "s"), "--executor", "serial", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["computed"] == 3 and out["failed"] == 0 and out["failures"] == [] and out["store"] == str(tmp_path / "s")


# --------------------------------------------------------------------------------------
# tables, xarray, plots
# --------------------------------------------------------------------------------------
def test_table_and_xarray(reference, tmp_path):
    rows = reference.table()
    assert len(rows) == 8 and {"k", "beta", "replica", "seed", "status", "u_final", "directions"} <= set(rows[0])
    assert [(r["k"], r["beta"], r["replica"]) for r in rows[:3]] == [(2, 0.1, 0), (2, 0.1, 1), (2, 0.5, 0)]
    xr = pytest.importorskip("xarray")
    ds = reference.to_xarray()
    assert isinstance(ds, xr.Dataset)
    assert ds["u_final"].dims == ("k", "beta", "replica")   # (1, k) arrays of two sizes: one object per run
    assert ds["u_final"].sel(k=3, beta=0.5, replica=1).item() == rows[7]["u_final"]
    assert ds["directions"].sel(k=2, beta=0.1, replica=0).item() == rows[0]["directions"]
    numbers = sweeps.sweep(THRESHOLD, tmp_path, executor="serial", progress=False).to_xarray()
    assert numbers["beta_c"].dims == ("k", "replica") and numbers["beta_c"].dtype == float
    assert numbers["beta_c"].sel(replica=0).values.tolist() == [1 / 3, 0.25, 1 / 6]


def test_phase_diagram_with_predicted_boundary(tmp_path):
    config = {
        "model": "multi-index", "verb": "predict", "seed": 0, "replicas": 1, "outputs": ["u_final"],
        "base": {"student": "he3", "teacher": "he3", "gram": "equiangular", "neurons": 1, "init": "uniform",
                 "d": 200, "t_end": 20.0},
        "grid": {"k": [2, 3], "beta": [0.1, 0.5]},
        "prediction": {"verb": "threshold", "over": ["k"], "base": {"student": "he3", "teacher": "he3"},
                       "output": "beta_c", "grid": {"k": {"range": [2, 6]}}},
        "plot": {"x": "k", "y": "beta", "value": "u_final", "reduce": "spread"},
    }
    res = sweeps.sweep(config, tmp_path / "s", executor="serial", progress=False)
    assert [r["beta_c"] for r in res.table("prediction")] == [1 / 3, 0.25, 0.2, 1 / 6]
    ax = res.plot(tmp_path / "phase.png")
    assert (tmp_path / "phase.png").stat().st_size > 10_000
    line = [ln for ln in ax.get_lines() if ln.get_label().startswith("threshold")][0]
    assert line.get_xydata().tolist() == [[2, 1 / 3], [3, 0.25], [4, 0.2], [5, 1 / 6]]
    one_d = sweeps.sweep({**THRESHOLD, "plot": {"x": "k"}}, tmp_path / "t", executor="serial", progress=False)
    one_d.plot(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 5_000
