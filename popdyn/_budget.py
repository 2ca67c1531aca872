"""Budgets checked before a long or large computation starts: step counts and memory.

An absurd request (``t_end = 1e12`` with a small ``eta``, ``d = 10**12``) must fail at
once with a message naming the argument to change, not after hours of stepping or with a
``MemoryError`` (or the kernel's OOM killer) half-way through an allocation.  Sizes are
multiplied as Python integers, so huge values never overflow.

Examples
--------
>>> check_steps(10**6, 10**9, what="`steps` = 1e+06", lower="`steps`")
>>> nbytes(8, 2, 10**12) // 2**30 > 10**5
True
"""

from __future__ import annotations

import math
import os

__all__ = ["DEFAULT_MAX_STEPS", "FALLBACK_MEMORY", "available_memory", "check_memory", "check_steps", "fmt_count", "nbytes",
           "GiB"]

#: Default cap on the number of SGD/GD steps of one run.  Measured throughput of the
#: cheapest configurations on the 2-core development machine (one replica, batch 1, no
#: progress output): 1.4e4 steps/s (multi-index, d = 2), 1.0e4 (multi-index, d = 500),
#: 1.6e4 (committee full engine, d = 100), 5.9e3 (committee exact engine) -- the per-step
#: Python overhead dominates, so no configuration is much faster.  At the fastest rate,
#: 1e9 steps take ~17 hours: a default run refused by this cap would last about a day or
#: more.  Raise it explicitly (``max_steps=...``, CLI ``--max-steps``) for such runs.
DEFAULT_MAX_STEPS = 10**9
#: Memory assumed when the machine's physical memory cannot be read (1 TiB: above any
#: workstation, so only sizes that cannot fit anywhere are refused).
FALLBACK_MEMORY = 2**40
#: Bytes per GiB.
GiB = 2**30


def nbytes(*factors, itemsize: int = 8) -> int:
    """Exact size in bytes of an array with these dimensions (Python integers, no overflow)."""
    return math.prod(int(f) for f in factors) * int(itemsize)


def available_memory() -> int:
    """Physical memory of the machine in bytes (``FALLBACK_MEMORY`` when it cannot be read).

    ``SC_PHYS_PAGES * SC_PAGE_SIZE`` (Linux, macOS, BSD).  The total, not the currently
    free memory: a budget check refuses only what cannot fit even on an idle machine.
    """
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # Windows, or names unknown to this libc
        return FALLBACK_MEMORY
    if pages <= 0 or size <= 0:
        return FALLBACK_MEMORY
    return int(pages) * int(size)


def fmt_count(value) -> str:
    """``"12345"``, or ``"1.23e+07"`` from a million on (messages stay short).

    >>> fmt_count(500), fmt_count(10**12)
    ('500', '1e+12')
    """
    value = int(value)
    return str(value) if abs(value) < 10**6 else f"{value:.3g}"


def check_memory(n: int, *, driver: str, value, what: str = "the arrays of this run", limit: int | None = None,
                 flag: str | None = None) -> None:
    """Raise ``ValueError`` when ``n`` bytes exceed the machine's memory.

    Parameters
    ----------
    n : int
        Estimated bytes (a lower bound of what the computation allocates).
    driver : str
        Name of the argument that drives the size (``"d"``, ``"replicas"``, ...), named in
        the message as the one to lower.
    value : int
        Its value.
    what : str
        What the estimate counts, e.g. ``"weights replicas x neurons x d"``.
    limit : int, optional
        Bytes available (default :func:`available_memory`).
    flag : str, optional
        The CLI flag of ``driver`` (e.g. ``"--d"``), mentioned in the message.

    Examples
    --------
    >>> check_memory(nbytes(10**12), driver="d", value=10**12, limit=2**34)
    Traceback (most recent call last):
    ...
    ValueError: `d` = 1e+12 needs at least 7.45e+03 GiB (the arrays of this run), above the 16 GiB of memory of this machine; lower `d`.
    """
    limit = available_memory() if limit is None else int(limit)
    if n <= limit:
        return
    cli = f" (CLI: {flag})" if flag else ""
    raise ValueError(f"`{driver}` = {fmt_count(value)} needs at least {n / GiB:.3g} GiB ({what}), above the "
                     f"{limit / GiB:.3g} GiB of memory of this machine; lower `{driver}`{cli}.")


def check_steps(n_steps: int, max_steps, *, what: str, lower: str) -> None:
    """Raise ``ValueError`` when a run needs more than ``max_steps`` steps.

    ``what`` says where the count comes from (e.g. "`t_end` = 1e+12 with `eta` = 0.001");
    ``lower`` names the argument(s) to lower instead.  ``max_steps=None``: no limit.
    """
    if max_steps is None or n_steps <= max_steps:
        return
    raise ValueError(f"{what} needs {fmt_count(n_steps)} steps, above `max_steps` = {fmt_count(max_steps)}; raise "
                     f"`max_steps` (CLI: --max-steps) or lower {lower}.")
