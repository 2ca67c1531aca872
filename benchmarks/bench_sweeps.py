"""Benchmark sweeps: points/s of the local process pool against serial, a dask LocalCluster
against the pool, and the result store's overhead per point.

One command, every ratio measured in the same run::

    python benchmarks/bench_sweeps.py            # 96 ODE points, 5 passes per executor (~3 min on 2 cores)
    python benchmarks/bench_sweeps.py --quick    # 16 points, 2 passes (smoke run)

* **Executors.**  The same sweep (the one-neuron u-ODE of the multi-index model from random
  starts, ``popdyn predict``, ~0.1-0.2 s per point) runs serially, in a pool of ``--workers``
  processes and on a dask ``LocalCluster`` of as many single-threaded worker processes, each
  pass into a fresh store.  Printed: the start-up of each executor (spawning the workers, which
  import popdyn: paid once per sweep) and the throughput with the workers up (points/s, median
  of ``--repeats`` passes interleaved between the executors), with the ratios pool/serial
  (expect close to the number of cores) and dask/pool.  The results of every pass are checked
  to be bit-identical across the executors.
* **Store.**  Writing one record (canonical JSON, SHA-256, temporary file, rename) and reading
  it back with its checksum verified, over 2000 records of the size a sweep writes; the same
  write with an ``fsync`` (:func:`popdyn._io.atomic_write_bytes`) for comparison.  Target:
  < 5 ms per point, so that a 10^4-point ODE sweep is not dominated by bookkeeping.
* **Whole bookkeeping.**  :func:`popdyn.sweeps.run_point` (output capture, one BLAS thread,
  JSON) against calling :func:`popdyn.cli.main` with the same command line, interleaved, plus
  building and writing the record: what the sweep adds to every point.

Other programs on the machine share its cores: the benchmark also measures, between the passes,
how much faster a pure CPU loop runs on ``--workers`` processes than on one (the ceiling of any
executor at that moment), and prints the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from popdyn import sweeps  # noqa: E402
from popdyn._io import atomic_write_bytes  # noqa: E402
from popdyn._store import ResultStore, canonical_json  # noqa: E402


def ode_config(n_points: int) -> dict:
    betas = [round(0.05 + 0.55 * i / (n_points // 4 - 1), 6) for i in range(n_points // 4)]
    return {"model": "multi-index", "verb": "predict", "seed": 0, "replicas": 1, "outputs": ["u_final", "directions"],
            "base": {"student": "hermite:0,0,0,1,1", "teacher": "hermite:0,0,0,1,1", "gram": "equiangular",
                     "neurons": 1, "init": "0.3", "d": 500, "t_end": 40.0},
            "grid": {"k": [2, 3, 4, 5], "beta": betas}}


def timed_pass(ex, config) -> tuple:
    """Seconds for one sweep of ``config`` on the executor ``ex`` (kept open), and its values."""
    with tempfile.TemporaryDirectory() as tmp:
        tasks = sweeps._tasks(sweeps.load_config(config))
        records, counts = {}, {"computed": 0}
        t0 = time.perf_counter()
        sweeps._drive(_KeepOpen(ex), tasks, ResultStore(tmp), records, counts, False, len(tasks))
        elapsed = time.perf_counter() - t0
        assert counts["computed"] == len(tasks) and all(r["status"] == "ok" for r in records.values())
        return elapsed, [(t.key, records[t.key]["outputs"]) for t in tasks]


def start_up(make) -> tuple:
    """An executor and the seconds from creating it to its first finished point on every worker."""
    warm = {"model": "multi-index", "verb": "threshold", "base": {"teacher": "he3", "student": "he3"},
            "grid": {"k": list(range(2, 4))}, "outputs": ["beta_c"]}
    t0 = time.perf_counter()
    ex = make()
    timed_pass(ex, warm)
    return ex, time.perf_counter() - t0


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def ceiling(pool, workers: int, n: int = 2_000_000) -> float:
    """How much faster ``workers`` processes run a pure CPU loop than one, now: the most any
    executor can gain on this machine at this moment (other programs share the cores)."""
    t0 = time.perf_counter()
    for _ in range(2 * workers):
        _burn(n)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(pool.map(_burn, [n] * (2 * workers)))
    return one / (time.perf_counter() - t0)


class _KeepOpen:
    """An executor whose ``close`` is deferred (one pool for several passes)."""

    def __init__(self, ex):
        self.ex, self.workers = ex, ex.workers

    def __getattr__(self, name):
        return getattr(self.ex, name)

    def close(self):
        pass


def store_overhead(n: int = 2000) -> dict:
    record = {"key": "", "status": "ok", "outputs": {"u_final": [[0.1234567890123, 0.98765432101234, 0.5]] * 2,
                                                     "directions": ["+v1", "+v2"]},
              "options": {"student": "hermite:0,0,0,1,1", "teacher": "hermite:0,0,0,1,1", "gram": "equiangular",
                          "k": 3, "beta": 0.25, "seed": 12345678901234567},
              "argv": ["popdyn", "predict", "--model", "multi-index"] + ["--flag=value"] * 12,
              "versions": {"popdyn": "0.1.0", "numpy": "2.0"}, "stderr": [], "seconds": 0.1}
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(tmp)
        keys = [f"{i:032x}" for i in range(n)]
        t0 = time.perf_counter()
        for k in keys:
            store.write({**record, "key": k})
        write = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for k in keys:
            rec, reason = store.read(k)
            assert reason is None
        read = (time.perf_counter() - t0) / n
        data = canonical_json(record)
        m = min(n, 300)
        t0 = time.perf_counter()
        for i in range(m):
            atomic_write_bytes(os.path.join(tmp, f"fsync{i}.json"), data)
        fsync = (time.perf_counter() - t0) / m
    return {"write": write, "read": read, "fsync_write": fsync, "bytes": len(data)}


def bookkeeping(n: int = 40) -> tuple:
    """Median seconds per point: the same command line called directly and through ``run_point``
    (interleaved), and building + writing its record (a new file each time: ext4 flushes a file
    renamed over an existing one, which only a recomputed record pays)."""
    import statistics

    from popdyn.cli import main

    config = {"model": "multi-index", "verb": "threshold", "base": {"teacher": "he3", "student": "he3", "k": 3},
              "outputs": ["beta_c"]}
    tasks = sweeps._tasks(sweeps.load_config(config)) * n   # one command line (cached work): the overhead shows
    direct, wrapped, record = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(tmp)
        sweeps.run_point(sweeps._payload(tasks[0]))   # warm-up (imports)
        for i, task in enumerate(tasks):
            task = dataclasses.replace(task, key=f"{i:032x}")   # a new record each time, as in a sweep
            with contextlib.redirect_stdout(io.StringIO()):
                t0 = time.perf_counter()
                main(list(task.argv))
                direct.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            outcome = sweeps.run_point(sweeps._payload(task))
            wrapped.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store.write(sweeps._record(task, outcome))
            record.append(time.perf_counter() - t0)
    return statistics.median(direct), statistics.median(wrapped), statistics.median(record)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 points (smoke run)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-dask", action="store_true", help="skip the dask LocalCluster")
    ap.add_argument("--repeats", type=int, default=None, help="passes per executor (default 5; --quick 2)")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    n = 16 if args.quick else 96
    config = ode_config(n)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"sweep benchmark: {n} ODE points (popdyn predict --model multi-index), {os.cpu_count()} cores, "
          f"load average {load:.1f}")
    import statistics

    executors = [("serial", *start_up(sweeps._Serial)),
                 (f"pool ({args.workers} processes)", *start_up(lambda: sweeps._Pool(args.workers)))]
    if not args.no_dask:
        try:
            import distributed  # noqa: F401  (dask.distributed)
        except ImportError:
            print("  (dask.distributed not installed: pip install -e '.[dask]')")
        else:
            executors.append((f"dask LocalCluster ({args.workers} workers)",
                              *start_up(lambda: sweeps._Dask(dask_local=args.workers))))
    times = {name: [] for name, _, _ in executors}
    ceilings = []
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    burner = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    list(burner.map(_burn, [10] * args.workers))
    try:
        for rep in range(args.repeats):   # interleaved, so that changes of the machine's load hit all alike
            ceilings.append(ceiling(burner, args.workers))
            cfg = {**config, "seed": rep}
            ref = None
            for name, ex, _ in executors:
                t, vals = timed_pass(ex, cfg)
                ref = vals if ref is None else ref
                assert vals == ref, f"{name}: results differ from serial"
                times[name].append(t)
    finally:
        burner.shutdown()
        for _, ex, _ in executors:
            ex.close()
    rate = {name: n / statistics.median(ts) for name, ts in times.items()}
    print(f"  {'executor':<30} {'start-up s':>10} {'points/s':>9}   (median of {args.repeats} passes of {n} points, "
          "workers up; results bit-identical)")
    for name, _, up in executors:
        print(f"  {name:<30} {up:10.2f} {rate[name]:9.2f}")
    names = [name for name, _, _ in executors]
    print(f"  ceiling now: a CPU-bound loop runs {statistics.median(ceilings):.2f}x faster on {args.workers} processes "
          f"than on one (passes: {', '.join(f'{c:.2f}' for c in ceilings)}; {args.workers:.0f}x on an idle machine)")
    print(f"  pool / serial: {rate[names[1]] / rate[names[0]]:.2f}x points/s")
    if len(names) > 2:
        print(f"  dask / pool:   {rate[names[2]] / rate[names[1]]:.2f}x points/s")
    st = store_overhead(500 if args.quick else 2000)
    print(f"  store, per record of {st['bytes']} bytes: write {st['write'] * 1e3:.3f} ms, checked read "
          f"{st['read'] * 1e3:.3f} ms, total {(st['write'] + st['read']) * 1e3:.3f} ms (target < 5 ms); "
          f"with an fsync per write: {st['fsync_write'] * 1e3:.2f} ms")
    direct, wrapped, record = bookkeeping(16 if args.quick else 40)
    print(f"  per point (medians over {16 if args.quick else 40} calls of one threshold point): command line "
          f"{direct * 1e3:.2f} ms, through run_point {wrapped * 1e3:.2f} ms ({(wrapped - direct) * 1e3:+.2f} ms: "
          f"capture, JSON; the medians' noise included), record built and written {record * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
