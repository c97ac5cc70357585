"""One database connection per process and thread, opened on first use.

A connection must never cross ``fork()`` (SQLite's locks and a PostgreSQL socket belong
to the process that opened them) nor be used by two threads at once. Keying connections by
``(pid, thread id)`` gives a forked worker its own connection automatically: the parent's
are left alone, never closed from the child.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from dci6bridge.errors import StoreError

__all__ = ["PerThread"]

C = TypeVar("C")


class PerThread(Generic[C]):
    """Lazily opened connections, one per ``(pid, thread)``."""

    def __init__(self, open_: Callable[[], C], close: Callable[[C], None], *, name: str) -> None:
        self._open = open_
        self._close = close
        self._name = name
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every connection opened, with its process and thread, for close_all and pruning.
        self._conns: list[tuple[int, threading.Thread, C]] = []
        self._closed = False

    def get(self) -> C:
        """This thread's connection, opened now if it has none."""
        if self._closed:
            raise StoreError(f"{self._name} is closed")
        pid = os.getpid()
        conn: C | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == pid:
            return conn
        self._prune(pid)
        conn = self._open()
        self._local.conn, self._local.pid = conn, pid
        with self._lock:
            self._conns.append((pid, threading.current_thread(), conn))
        return conn

    def discard(self) -> None:
        """Close and forget this thread's connection (after it broke)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        with self._lock:
            self._conns = [e for e in self._conns if e[2] is not conn]
        self._quietly_close(conn)

    def close_all(self) -> None:
        """Close every connection this process opened; later :meth:`get` calls fail."""
        pid = os.getpid()
        with self._lock:
            self._closed = True
            mine = [e[2] for e in self._conns if e[0] == pid]
            self._conns = [e for e in self._conns if e[0] != pid]
        self._local.conn = None
        for conn in mine:
            self._quietly_close(conn)

    def __len__(self) -> int:
        """Connections open in this process."""
        pid = os.getpid()
        return sum(1 for e in self._conns if e[0] == pid)

    def _prune(self, pid: int) -> None:
        # Threads come and go (thread pools, web servers); close what dead ones left.
        with self._lock:
            dead = [e for e in self._conns if e[0] == pid and not e[1].is_alive()]
            self._conns = [e for e in self._conns if not (e[0] == pid and not e[1].is_alive())]
        for _, _, conn in dead:
            self._quietly_close(conn)

    def _quietly_close(self, conn: C) -> None:
        # A broken connection may fail to close; it is gone either way.
        with contextlib.suppress(Exception):
            self._close(conn)
