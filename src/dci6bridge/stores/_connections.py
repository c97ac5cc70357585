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
        self._lock = threading.Lock()
        self._conns: dict[tuple[int, int], C] = {}
        self._closed = False

    def get(self) -> C:
        """This thread's connection, opened now if it has none."""
        key = (os.getpid(), threading.get_ident())
        conn = self._conns.get(key)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreError(f"{self._name} is closed")
        self._prune(key[0])
        conn = self._open()
        with self._lock:
            self._conns[key] = conn
        return conn

    def discard(self) -> None:
        """Close and forget this thread's connection (after it broke)."""
        with self._lock:
            conn = self._conns.pop((os.getpid(), threading.get_ident()), None)
        if conn is not None:
            self._quietly_close(conn)

    def close_all(self) -> None:
        """Close every connection this process opened; later :meth:`get` calls fail."""
        pid = os.getpid()
        with self._lock:
            self._closed = True
            mine = [k for k in self._conns if k[0] == pid]
            conns = [self._conns.pop(k) for k in mine]
        for conn in conns:
            self._quietly_close(conn)

    def _prune(self, pid: int) -> None:
        # Threads come and go (thread pools, web servers); close what dead ones left.
        alive = {t.ident for t in threading.enumerate()}
        with self._lock:
            dead = [k for k in self._conns if k[0] == pid and k[1] not in alive]
            conns = [self._conns.pop(k) for k in dead]
        for conn in conns:
            self._quietly_close(conn)

    def _quietly_close(self, conn: C) -> None:
        # A broken connection may fail to close; it is gone either way.
        with contextlib.suppress(Exception):
            self._close(conn)
