"""Exception types shared by the whole package.

Bad input raises the builtin :class:`ValueError` / :class:`TypeError` (the CLI maps
them to exit code 2).  A computation that fails numerically (divergence, non-finite
overlaps, an integrator that cannot meet its tolerance, a quadrature that cannot reach
its target accuracy) raises :class:`NumericalError` (CLI exit code 1), which records
where it happened.
"""

from __future__ import annotations

__all__ = ["NumericalError", "LargeStepWarning"]


class NumericalError(RuntimeError):
    """A numerical failure, reported with the time or step at which it happened.

    Parameters
    ----------
    message : str
        What failed and what to try next.
    step : int, optional
        SGD step (or iteration) at which the failure was detected.
    time : float, optional
        Time (in the trajectory's own unit) at which the failure was detected.
    """

    def __init__(self, message: str, *, step: int | None = None, time: float | None = None):
        where = []
        if step is not None:
            where.append(f"step {step}")
        if time is not None:
            where.append(f"t = {time:.6g}")
        full = message if not where else f"{message} (at {', '.join(where)})"
        super().__init__(full)
        self.step = step
        self.time = time


class LargeStepWarning(UserWarning):
    """Spherical SGD ran with steps too large for the small-step regime of the overlap ODE
    (the simulation itself is exact SGD; its comparison with the ODE is not meaningful)."""
