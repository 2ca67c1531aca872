"""Whole-process start-up times of the CLI against plain Python and ``import numpy``.

Usage::

    python benchmarks/bench_startup.py [--repeats 11]

Each command runs as a fresh process, the commands alternating so that machine load affects
them alike; the median wall time of each is printed with its ratio to ``python -c "import numpy"``.
"Eager import" loads every public name, which is what ``import popdyn`` did before the names
became lazy (PEP 562): the line "popdyn --version" against it is the before/after ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PY = sys.executable
COMMANDS = {
    "python -c pass": [PY, "-c", "pass"],
    "python -c 'import numpy'": [PY, "-c", "import numpy"],
    "eager import (every public name)": [PY, "-c", "import popdyn\nfor n in popdyn.__all__: getattr(popdyn, n)"],
    "import popdyn": [PY, "-c", "import popdyn"],
    "popdyn --version": [PY, "-m", "popdyn", "--version"],
    "popdyn predict --model committee": [PY, "-m", "popdyn", "predict", "--model", "committee"],
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["python -c 'import numpy'"])
    print(f"{'command':40s} {'median s':>9s} {'/ import numpy':>15s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:40s} {med:9.3f} {med / base:15.2f}")


if __name__ == "__main__":
    main()
