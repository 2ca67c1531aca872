"""Run the papers' claims as numerical checks (``popdyn verify``).

Each paper lives in its own folder under ``theory/`` (model, equation-to-code map,
BibTeX, claims).  ``theory/`` imports popdyn, never the reverse: papers are found at run
time through the ``popdyn.papers`` entry-point group declared in ``pyproject.toml``
(``"2411.08798" = "theory.simsek2025:CLAIMS"``), so adding a paper needs no edit here.

A claim is a function ``run(quick: bool, rng) -> ClaimResult`` that computes a
prediction and a measurement by *different routes* and says whether they agree within a
stated tolerance.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable
from typing import Any

from ._random import spawn_generators

__all__ = ["Claim", "ClaimResult", "verify", "list_papers", "load_claims"]

ENTRY_POINT_GROUP = "popdyn.papers"


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """Outcome of one claim: what theory predicts, what was measured, and whether they agree."""

    paper: str
    claim: str
    predicted: Any
    measured: Any
    tolerance: Any
    passed: bool
    details: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paper's claim as a runnable check.

    Attributes
    ----------
    paper : str
        arXiv id, e.g. ``"2411.08798"``.
    name : str
        Short identifier, e.g. ``"beta_c"``.
    description : str
        One sentence: what the paper says.
    run : callable
        ``run(quick, rng) -> ClaimResult`` or a list of them (one row per case).
    """

    paper: str
    name: str
    description: str
    run: Callable


def _entry_points():
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def load_claims() -> dict[str, list[Claim]]:
    """Paper id -> its claims, from the ``popdyn.papers`` entry points."""
    papers: dict[str, list[Claim]] = {}
    eps = _entry_points()
    if not eps:  # running from a source checkout that was never installed
        try:
            mod = importlib.import_module("theory")
            papers.update({k: list(v) for k, v in getattr(mod, "PAPERS", {}).items()})
        except ImportError:
            pass
        return papers
    for ep in eps:
        papers[ep.name] = list(ep.load())
    return papers


def list_papers() -> dict[str, list[str]]:
    """Paper id -> claim names."""
    return {p: [c.name for c in cs] for p, cs in sorted(load_claims().items())}


def verify(papers=None, *, quick: bool = False, rng=0, progress=None) -> list[ClaimResult]:
    """Run the claims of ``papers`` (all when None) and return one result per claim.

    Parameters
    ----------
    papers : sequence of str, optional
        arXiv ids (see :func:`list_papers`).
    quick : bool
        Smaller sizes so that every paper finishes within about two minutes on 2 cores.
    rng : int, Generator or None
        Seed; each claim gets its own spawned stream.
    progress : callable, optional
        Called with each finished :class:`ClaimResult` (the CLI prints a line to stderr).

    Raises
    ------
    ValueError
        An unknown paper id (the message lists the valid ones).
    """
    table = load_claims()
    if papers:
        unknown = [p for p in papers if p not in table]
        if unknown:
            raise ValueError(f"unknown paper(s) {unknown}; valid: {', '.join(sorted(table)) or '(none installed)'}.")
        selected = list(papers)
    else:
        selected = sorted(table)
    claims = [c for p in selected for c in table[p]]
    gens = spawn_generators(rng, max(1, len(claims)))
    results = []
    for claim, g in zip(claims, gens):
        t0 = time.perf_counter()
        out = claim.run(quick, g)
        rows = list(out) if isinstance(out, (list, tuple)) else [out]
        seconds = round((time.perf_counter() - t0) / max(len(rows), 1), 2)
        for res in rows:
            res = dataclasses.replace(res, seconds=seconds)
            results.append(res)
            if progress is not None:
                progress(res)
    return results
