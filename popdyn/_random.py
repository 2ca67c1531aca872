"""Random-number plumbing: every random function takes ``rng`` (int, Generator or None).

The global numpy random state is never touched.  Replicas and sweep points get
independent streams from ``np.random.SeedSequence(seed).spawn(n)``.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_generator", "spawn_generators", "seed_record"]


def as_generator(rng) -> np.random.Generator:
    """Return a ``np.random.Generator`` from an int seed, a Generator, a SeedSequence or None."""
    if rng is None or isinstance(rng, (numbers.Integral, np.random.SeedSequence)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(
        f"`rng` must be an int seed, a numpy.random.Generator, a SeedSequence or None; got {rng!r}."
    )


def spawn_generators(rng, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from ``rng`` via SeedSequence spawning."""
    if isinstance(rng, np.random.Generator):
        seqs = rng.bit_generator.seed_seq.spawn(n)
    elif isinstance(rng, np.random.SeedSequence):
        seqs = rng.spawn(n)
    else:
        as_generator(rng)  # validates the type
        seqs = np.random.SeedSequence(rng).spawn(n)
    return [np.random.default_rng(s) for s in seqs]


def seed_record(rng):
    """A JSON-friendly description of ``rng`` for a result's ``meta``."""
    if rng is None:
        return None
    if isinstance(rng, numbers.Integral):
        return int(rng)
    if isinstance(rng, np.random.Generator):
        ss = rng.bit_generator.seed_seq
        return {"entropy": str(getattr(ss, "entropy", None)), "spawn_key": list(getattr(ss, "spawn_key", ()))}
    if isinstance(rng, np.random.SeedSequence):
        return {"entropy": str(rng.entropy), "spawn_key": list(rng.spawn_key)}
    return repr(rng)
