"""Time for the simulator: a manual clock for deterministic tests, the wall clock otherwise."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock", "format_timestamp"]

#: 2026-01-01 00:00:00 UTC: a fixed start so that tokens' ``expires_at`` and operation
#: times are the same on every run.
DEFAULT_START = 1_767_225_600.0


@runtime_checkable
class Clock(Protocol):
    """Anything with ``now()`` returning seconds since the Unix epoch (UTC)."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The wall clock (``time.time()``)."""

    def now(self) -> float:
        """Seconds since the epoch, from the system."""
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: ``advance(seconds)``.

    While :meth:`follow_real_time` is on (the simulator turns it on while it serves real
    HTTP, unless you passed your own clock), real elapsed time is added as well, so
    served operations finish on their own and ``advance`` still jumps ahead. Thread-safe.
    """

    def __init__(self, start: float = DEFAULT_START) -> None:
        self._lock = threading.Lock()
        self._base = float(start)
        self._following_since: float | None = None

    def now(self) -> float:
        """The current simulated time, in seconds since the epoch."""
        with self._lock:
            return self._now_locked()

    def _now_locked(self) -> float:
        if self._following_since is None:
            return self._base
        return self._base + (time.monotonic() - self._following_since)

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError(f"seconds: cannot go back in time (got {seconds!r})")
        with self._lock:
            self._base += float(seconds)
            return self._now_locked()

    def follow_real_time(self, on: bool = True) -> None:
        """Start (or stop) adding real elapsed time to the manual time."""
        with self._lock:
            if on and self._following_since is None:
                self._following_since = time.monotonic()
            elif not on and self._following_since is not None:
                self._base = self._now_locked()
                self._following_since = None

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now()!r})"


def format_timestamp(epoch: float) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, the way the auth service writes ``expires_at``."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def parse_timestamp(text: str) -> float:
    """The inverse of :func:`format_timestamp`; raises ``ValueError`` on another format."""
    parsed = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    return parsed.replace(tzinfo=timezone.utc).timestamp()
