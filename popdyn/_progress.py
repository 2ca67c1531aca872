"""Long loops: progress on stderr and graceful interruption (SIGINT/SIGTERM).

:class:`Progress` reports a loop's progress on stderr whether or not it is a terminal:
a tqdm bar on a terminal, otherwise (a job scheduler's log, a pipe) a plain line every
``PROGRESS_INTERVAL`` seconds such as::

    simulate sgd: step 12000/50000 (24%), 3.1e+03 steps/s, ETA 12 s

In automatic mode nothing is shown before the loop has run for ``PROGRESS_DELAY``
seconds, so short runs and tests print nothing.

:class:`DeferredInterrupts` turns SIGINT/SIGTERM into a request that the loop polls
(``guard.requested``) between two steps, so the loop can finish its step, save its state
and raise :class:`Interrupted` (a :class:`KeyboardInterrupt`).  A second signal aborts at
once.

Examples
--------
>>> with Progress(3, desc="demo", enabled=False) as bar:
...     for _ in range(3):
...         bar.update()
>>> bar.n
3
"""

from __future__ import annotations

import signal
import sys
import threading
import time

__all__ = ["Progress", "DeferredInterrupts", "Interrupted", "PROGRESS_DELAY", "PROGRESS_INTERVAL",
           "format_duration", "signal_name"]

#: Automatic progress (``enabled=None``) appears only once the loop has run this long:
#: short runs and test suites print nothing, while a long run in a batch job shows its
#: first line after a few seconds.
PROGRESS_DELAY = 5.0
#: Seconds between two plain progress lines when stderr is not a terminal (a log of a
#: day-long run stays below ~10^4 lines).
PROGRESS_INTERVAL = 10.0


def signal_name(signum) -> str:
    """``"SIGINT"`` for ``signal.SIGINT`` (``"signal N"`` if unknown).

    >>> signal_name(signal.SIGINT)
    'SIGINT'
    """
    try:
        return signal.Signals(signum).name
    except (ValueError, TypeError):
        return f"signal {signum}"


def format_duration(seconds: float) -> str:
    """``"12 s"``, ``"3.5 min"``, ``"2.1 h"``, ``"3.2 d"``.

    >>> format_duration(12.3), format_duration(210), format_duration(7600), format_duration(3e5)
    ('12 s', '3.5 min', '2.1 h', '3.5 d')
    """
    if not seconds < float("inf"):
        return "?"
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


class Progress:
    """Progress of a loop of ``total`` units on stderr (context manager).

    Parameters
    ----------
    total : int
        Number of units (steps, intervals, points) of the whole loop.
    desc : str
        Prefix of the bar or line (e.g. ``"simulate sgd"``).
    unit : str
        Name of one unit (``"step"``; plural with an ``s``).
    initial : int
        Units already done (a resumed run).
    enabled : bool or None
        ``False``: silent.  ``None``: shown only after ``PROGRESS_DELAY`` seconds.
        ``True``: shown from the start, with a final line when stderr is not a terminal.
    stream : file, optional
        Default ``sys.stderr`` (at construction); ``None`` streams are silent.
    interval : float
        Seconds between plain lines.

    Notes
    -----
    :meth:`update` costs one clock read when lines are printed (well below a step of any
    simulator), nothing when ``enabled=False``.
    """

    def __init__(self, total: int, *, desc: str, unit: str = "step", initial: int = 0, enabled=None,
                 stream=None, interval: float = PROGRESS_INTERVAL, delay: float = PROGRESS_DELAY):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self._n0 = int(initial)
        self._stream = sys.stderr if stream is None else stream
        self._forced = enabled is True
        self._on = enabled is not False and self._stream is not None
        self._interval = float(interval)
        self._bar = None
        self._printed = False
        self._t0 = time.monotonic()
        self._next = self._t0 + (self._interval if self._forced else float(delay))
        if self._on and _isatty(self._stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, file=self._stream, desc=desc, unit=unit,
                             mininterval=0.5, dynamic_ncols=True, delay=0.0 if self._forced else float(delay))

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` units."""
        self.n += n
        if not self._on:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now >= self._next:
            self._line(now)
            self._next = now + self._interval

    def _rate(self, now: float) -> float:
        elapsed = now - self._t0
        return (self.n - self._n0) / elapsed if elapsed > 0 else float("nan")

    def _line(self, now: float, done: bool = False) -> None:
        rate = self._rate(now)
        pct = 100.0 * self.n / self.total if self.total else 100.0
        text = f"{self.desc}: {self.unit} {self.n}/{self.total} ({pct:.0f}%), {rate:.2g} {self.unit}s/s"
        if done:
            text += f", done in {format_duration(now - self._t0)}"
        elif rate > 0:
            text += f", ETA {format_duration((self.total - self.n) / rate)}"
        try:
            print(text, file=self._stream, flush=True)
        except (OSError, ValueError):  # closed or broken stream: progress is not worth failing for
            self._on = False
        self._printed = True

    def close(self, *, completed: bool = True) -> None:
        """Close the bar; for plain lines print a final line if any line was shown (or forced)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._on and completed and (self._printed or self._forced):
            self._line(time.monotonic(), done=True)
        self._on = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(completed=exc_type is None)
        return False


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Interrupted(KeyboardInterrupt):
    """A long loop stopped on SIGINT or SIGTERM after saving its state.

    A :class:`KeyboardInterrupt` (the CLI exits with code 130); ``str(exc)`` says where
    the state was saved and how to resume.  Attributes ``signum`` (the signal) and
    ``checkpoint`` (the path written, or ``None``).
    """

    def __init__(self, message: str, *, signum: int | None = None, checkpoint=None):
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint


class DeferredInterrupts:
    """Context manager: SIGINT/SIGTERM set :attr:`requested` instead of interrupting.

    The loop polls ``guard.requested`` (the signal number, or ``None``) between steps and
    stops cleanly.  A second signal raises :class:`KeyboardInterrupt` at once (an escape
    if a step hangs; a checkpoint written atomically is never left half-written).  The
    previous handlers are restored on exit.  Outside the main thread (where
    ``signal.signal`` is not allowed) or with ``enabled=False`` nothing is installed and
    signals keep their usual effect.

    Parameters
    ----------
    enabled : bool
        Install the handlers.
    note : str, optional
        Printed to stderr at the first signal (e.g. "saving the checkpoint to run.npz").
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, enabled: bool = True, *, note: str | None = None):
        self.enabled = bool(enabled)
        self.note = note
        self.requested: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        if self.note:
            try:
                print(f"popdyn: {signal_name(signum)} received: {self.note} "
                      "(send it again to stop at once)", file=sys.stderr, flush=True)
            except Exception:  # noqa: BLE001 - e.g. a reentrant write to stderr; the note is optional
                pass

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            try:
                for name in self.SIGNALS:
                    sig = getattr(signal, name, None)
                    if sig is not None:
                        self._old[sig] = signal.signal(sig, self._handler)
            except BaseException:
                self._restore()
                raise
        return self

    def _restore(self) -> None:
        while self._old:
            sig, old = self._old.popitem()
            signal.signal(sig, signal.SIG_DFL if old is None else old)

    def __exit__(self, exc_type, exc, tb):
        self._restore()
        return False
