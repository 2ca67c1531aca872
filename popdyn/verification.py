"""Run the papers' claims as numerical checks (``popdyn verify``).

Each paper lives in its own folder under ``theory/`` (model, equation-to-code map,
BibTeX, claims).  ``theory/`` imports popdyn, never the reverse: papers are found at run
time through the ``popdyn.papers`` entry-point group declared in ``pyproject.toml``
(``"2411.08798" = "popdyn_theory.simsek2025:CLAIMS"``), so adding a paper needs no edit here.

A claim is a function ``run(quick: bool, rng) -> ClaimResult`` that computes a
prediction and a measurement by *different routes* and says whether they agree within a
stated tolerance.

Every claim draws from its own random stream, keyed by the run's seed and the claim's
identity ``"<paper>/<claim name>"`` (:func:`claim_seed_sequence`): a claim's result does
not depend on which other papers or claims are selected, nor on their order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Claim", "ClaimResult", "verify", "list_papers", "load_claims", "claim_seed_sequence",
           "claim_generator", "stable_int_words", "resolve_seed"]

ENTRY_POINT_GROUP = "popdyn.papers"
#: 32-bit words of the SHA-256 digest of a claim's key used as its SeedSequence spawn key
#: (128 bits: collisions between claims are out of the question).
KEY_WORDS = 4
#: Longest echoed user string in an error message.
_ECHO = 40


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
    #: The run's base seed (set by :func:`verify`): with the claim's key it fixes the stream
    #: (:func:`claim_seed_sequence`), so ``popdyn verify <paper> --seed <seed>`` reproduces it.
    seed: int | None = None

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
    # Only entry points: popdyn never imports the papers' package (the papers import popdyn).
    # A source checkout that was never installed (`pip install -e .`) has none, so no papers.
    for ep in _entry_points():
        papers[ep.name] = list(ep.load())
    return papers


def stable_int_words(key: str, n_words: int = KEY_WORDS) -> list[int]:
    """``n_words`` unsigned 32-bit integers from the SHA-256 digest of ``key`` (UTF-8).

    Stable across processes, machines and Python versions (unlike the salted ``hash()``).

    >>> stable_int_words("2406.01581/online_slope") == stable_int_words("2406.01581/online_slope")
    True
    >>> len(stable_int_words("x", 2))
    2
    """
    if not isinstance(key, str):
        raise TypeError(f"`key` must be a str; got {type(key).__name__}.")
    if not (isinstance(n_words, numbers.Integral) and 1 <= n_words <= 8):
        raise ValueError(f"`n_words` must be an int in [1, 8] (SHA-256 has 8 words); got {n_words!r}.")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return [int.from_bytes(digest[4 * i:4 * i + 4], "little") for i in range(int(n_words))]


def resolve_seed(rng) -> int:
    """The non-negative int base seed of a :func:`verify` run.

    An int is used as is; a ``numpy.random.Generator`` gives one 63-bit draw (so it advances
    by one draw); ``None`` gives fresh OS entropy (128 bits).  The result is reported in each
    :attr:`ClaimResult.seed`, so any run can be repeated with an int.
    """
    if isinstance(rng, bool):
        pass
    elif isinstance(rng, numbers.Integral):
        if rng < 0:
            raise ValueError(f"`rng` must be a non-negative int seed; got {int(rng)}.")
        return int(rng)
    elif rng is None:
        return int(np.random.SeedSequence().entropy)
    elif isinstance(rng, np.random.Generator):
        return int(rng.integers(2**63))
    raise TypeError(f"`rng` must be a non-negative int seed, a numpy.random.Generator or None; got {type(rng).__name__}.")


def claim_seed_sequence(seed: int, paper: str, claim: str) -> np.random.SeedSequence:
    """The SeedSequence of claim ``claim`` of ``paper`` in a run with base ``seed``.

    ``SeedSequence(seed, spawn_key=stable_int_words(f"{paper}/{claim}"))``: the claim's
    stream is a child of the run's seed keyed by the claim's identity, independent of which
    other claims run and in which order (numpy pads the entropy before appending the spawn
    key, so distinct ``(seed, key)`` pairs give distinct streams).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int; got {seed!r}.")
    return np.random.SeedSequence(int(seed), spawn_key=tuple(stable_int_words(f"{paper}/{claim}")))


def claim_generator(seed: int, paper: str, claim: str) -> np.random.Generator:
    """``numpy.random.default_rng`` of :func:`claim_seed_sequence`: the ``rng`` a claim receives."""
    return np.random.default_rng(claim_seed_sequence(seed, paper, claim))


def _select(table: dict, papers) -> list[str]:
    """The selected paper ids in the given order (all, sorted, when ``papers`` is None or empty)."""
    if papers is None:
        return sorted(table)
    if isinstance(papers, str):
        papers = [papers]
    try:
        papers = list(papers)
    except TypeError:
        raise TypeError(f"`papers` must be a sequence of arXiv ids (str) or None; got {type(papers).__name__}.") from None
    if not papers:
        return sorted(table)
    bad = [p for p in papers if not isinstance(p, str)]
    if bad:
        raise TypeError(f"`papers` must contain arXiv ids (str); got {type(bad[0]).__name__} {str(bad[0])[:_ECHO]!r}.")
    unknown = [p[:_ECHO] for p in papers if p not in table]
    if unknown:
        raise ValueError(f"`papers`: unknown paper(s) {unknown[:5]}; valid: {', '.join(sorted(table)) or '(none installed)'}.")
    return list(dict.fromkeys(papers))  # drop repeats, keep the order


def list_papers(papers=None) -> dict[str, list[str]]:
    """Paper id -> claim names, for all papers or the selected ones.

    Parameters
    ----------
    papers : str or sequence of str, optional
        arXiv ids to list (all when None or empty).

    Returns
    -------
    dict
        Paper id -> its claims' names; sorted by id when listing all, else in the given order.

    Raises
    ------
    ValueError
        An unknown paper id (the message lists the valid ones).
    TypeError
        ``papers`` is not a str, a sequence of str or None.
    """
    table = load_claims()
    return {p: [c.name for c in table[p]] for p in _select(table, papers)}


def verify(papers=None, *, quick: bool = False, rng=0, progress=None) -> list[ClaimResult]:
    """Run the claims of ``papers`` (all when None) and return one result per claim.

    Parameters
    ----------
    papers : str or sequence of str, optional
        arXiv ids (see :func:`list_papers`); all papers when None or empty.  Repeats are run once.
    quick : bool
        Smaller sizes so that every paper finishes within about two minutes on 2 cores.
    rng : int, Generator or None
        The run's base seed (:func:`resolve_seed`): an int is the seed; a Generator gives
        one 63-bit draw as the seed; None draws fresh OS entropy.  Claim ``c`` of paper
        ``p`` then gets ``numpy.random.default_rng(SeedSequence(seed,
        spawn_key=stable_int_words(f"{p}/{c.name}")))`` (:func:`claim_seed_sequence`, a
        SHA-256 key, never Python's salted ``hash()``), so its result is the same whatever
        else is selected: ``verify(["2406.01581"], rng=s)`` reproduces the rows of that
        paper in ``verify(None, rng=s)``.  The seed is reported in :attr:`ClaimResult.seed`.
    progress : callable, optional
        Called with each finished :class:`ClaimResult` (the CLI prints a line to stderr).

    Returns
    -------
    list of ClaimResult
        One row per claim (a claim may report several rows), paper by paper in the order
        selected, each with its run time per row in ``seconds`` and the base ``seed``.

    Raises
    ------
    ValueError
        An unknown paper id (the message lists the valid ones).
    TypeError
        ``papers`` or ``rng`` of the wrong type.
    """
    table = load_claims()
    selected = _select(table, papers)
    seed = resolve_seed(rng)
    results = []
    for paper, claim in ((p, c) for p in selected for c in table[p]):
        t0 = time.perf_counter()
        out = claim.run(quick, claim_generator(seed, paper, claim.name))
        rows = list(out) if isinstance(out, (list, tuple)) else [out]
        seconds = round((time.perf_counter() - t0) / max(len(rows), 1), 2)
        for res in rows:
            res = dataclasses.replace(res, seconds=seconds, seed=seed)
            results.append(res)
            if progress is not None:
                progress(res)
    return results
