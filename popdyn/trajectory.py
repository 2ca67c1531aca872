"""The :class:`Trajectory` result shared by ODE integrations and simulations.

A trajectory from the ODE and one from a simulation have the same fields, so anything
that takes one takes the other.  Every overlap array has **time first, replicas
second**: shape ``(n_times, n_replicas, ...)``.  An ODE solution is deterministic and
has ``n_replicas == 1``.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write_bytes

__all__ = ["Trajectory"]

TIME_UNITS = ("gradient-flow time t", "t = eta * steps", "t = steps / d", "steps", "alpha = steps / N")


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """Overlaps along a run, on a common time grid.

    Parameters
    ----------
    t, overlaps, time_unit, source, model, status, message, events, meta
        The fields, in this order (see Attributes).

    Attributes
    ----------
    t : ndarray, shape (n_times,)
        Times, in ``time_unit``.
    overlaps : dict[str, ndarray]
        Order parameters, each of shape ``(n_times, n_replicas, ...)``.  For the
        multi-index model ``overlaps["u"]`` has shape ``(n_times, n_replicas, N, k)``:
        ``u[t, r, i, j] = v_j . w_i`` for neuron ``i`` of replica ``r``.
    time_unit : str
        How ``t`` relates to the algorithm (see the package conventions), e.g.
        ``"gradient-flow time t"`` or ``"t = eta * steps"``.
    source : str
        ``"ode"``, ``"simulation"`` or ``"exact-simulation"``.
    model : str
        Name of the model module that produced it (``"multi_index"``, ...).
    status : int
        0 = reached the final time, 1 = a terminal event fired.  Failures raise
        :class:`popdyn.NumericalError` instead of returning.
    message : str
        Human-readable outcome.
    events : dict[str, ndarray]
        Event name -> times at which it fired (per replica / neuron where relevant).
    meta : dict
        Seed, versions and parameters of the run.
    """

    t: np.ndarray
    overlaps: dict
    time_unit: str
    source: str
    model: str
    status: int = 0
    message: str = ""
    events: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        t = np.asarray(self.t, dtype=float)
        if t.ndim != 1 or t.size == 0:
            raise ValueError(f"`t` must be a non-empty 1-d array, got shape {t.shape}.")
        if np.any(np.diff(t) < 0):
            raise ValueError("`t` must be non-decreasing.")
        object.__setattr__(self, "t", t)
        ov = {}
        for name, arr in self.overlaps.items():
            arr = np.asarray(arr, dtype=float)
            if arr.ndim < 2 or arr.shape[0] != t.size:
                raise ValueError(
                    f"overlap `{name}` must have shape (n_times={t.size}, n_replicas, ...), got {arr.shape}."
                )
            ov[name] = arr
        object.__setattr__(self, "overlaps", ov)

    # -- access ---------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        overlaps = self.__dict__.get("overlaps", {})
        if name in overlaps:
            return overlaps[name]
        raise AttributeError(f"Trajectory has no field or overlap {name!r}; overlaps: {sorted(overlaps)}.")

    @property
    def n_times(self) -> int:
        return self.t.size

    @property
    def n_replicas(self) -> int:
        return next(iter(self.overlaps.values())).shape[1] if self.overlaps else 0

    @property
    def success(self) -> bool:
        return self.status >= 0

    def mean(self, name: str) -> np.ndarray:
        """Replica mean of overlap ``name``: shape ``(n_times, ...)``."""
        return self.overlaps[name].mean(axis=1)

    def std(self, name: str) -> np.ndarray:
        """Replica standard deviation (ddof=1 when there are >= 2 replicas, else zeros)."""
        arr = self.overlaps[name]
        if arr.shape[1] < 2:
            return np.zeros_like(arr[:, 0])
        return arr.std(axis=1, ddof=1)

    def final(self, name: str) -> np.ndarray:
        """Overlap ``name`` at the last time: shape ``(n_replicas, ...)``."""
        return self.overlaps[name][-1]

    def at(self, times) -> "Trajectory":
        """Linear interpolation of every overlap onto ``times`` (inside ``[t[0], t[-1]]``)."""
        times = np.asarray(times, dtype=float)
        if times.ndim != 1:
            raise ValueError(f"`times` must be 1-d, got shape {times.shape}.")
        if np.any(np.diff(times) < 0):
            raise ValueError("`times` must be non-decreasing.")
        lo, hi = self.t[0], self.t[-1]
        tol = 1e-12 * max(1.0, abs(hi))
        if np.any(times < lo - tol) or np.any(times > hi + tol):
            raise ValueError(f"`times` must lie in [{lo}, {hi}] (the trajectory's range).")
        ov = {}
        for name, arr in self.overlaps.items():
            flat = arr.reshape(arr.shape[0], -1)
            out = np.empty((times.size, flat.shape[1]))
            for c in range(flat.shape[1]):  # columns are few (replicas x neurons x k)
                out[:, c] = np.interp(times, self.t, flat[:, c])
            ov[name] = out.reshape((times.size,) + arr.shape[1:])
        return dataclasses.replace(self, t=times, overlaps=ov)

    # -- persistence ------------------------------------------------------------------
    def save(self, path) -> Path:
        """Save to ``.npz`` atomically (temporary name, then rename)."""
        buf = io.BytesIO()
        header = {
            "time_unit": self.time_unit, "source": self.source, "model": self.model,
            "status": self.status, "message": self.message, "meta": self.meta,
        }
        arrays = {f"overlap__{k}": v for k, v in self.overlaps.items()}
        arrays.update({f"event__{k}": np.asarray(v, dtype=float) for k, v in self.events.items()})
        np.savez_compressed(buf, t=self.t, header=np.array(json.dumps(header, default=str)), **arrays)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> "Trajectory":
        """Load a trajectory written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            overlaps = {k[len("overlap__"):]: data[k] for k in data.files if k.startswith("overlap__")}
            events = {k[len("event__"):]: data[k] for k in data.files if k.startswith("event__")}
            return cls(t=data["t"], overlaps=overlaps, events=events, **header)

    def summary(self) -> dict:
        """JSON-friendly summary: final replica means of every overlap, and metadata."""
        return {
            "source": self.source, "model": self.model, "time_unit": self.time_unit,
            "t_final": float(self.t[-1]), "n_times": self.n_times, "n_replicas": self.n_replicas,
            "status": self.status, "message": self.message,
            "final_mean": {k: self.mean(k)[-1].tolist() for k in self.overlaps},
            "meta": self.meta,
        }
