"""``SQLiteStore``: the embedded default status store.

Several worker processes on **one host** may share one database file. The backend makes
the classic SQLite pitfalls impossible by construction (``reference/durability.md`` §7):

* WAL journal, so readers never block the writer nor the writer the readers;
* every transaction that may write starts with ``BEGIN IMMEDIATE`` (the connection runs
  with ``isolation_level=None``, so Python never opens a DEFERRED transaction behind our
  back): a read-then-write can therefore never fail with an unretryable ``SQLITE_BUSY``;
* ``busy_timeout`` of 30 s on every connection, ``foreign_keys=ON``;
* ``synchronous=NORMAL`` by default (a power loss may undo the last commits; the
  reconciler re-reads DCImanager), ``synchronous="FULL"`` on request;
* one connection per process and thread, opened lazily, so a forked worker never uses
  its parent's connection;
* a warning when the file is on a network filesystem, where WAL's locking breaks.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dci6bridge._validate import show
from dci6bridge.errors import ConfigError, StoreError

from . import _rules as rules
from ._connections import PerThread
from ._schema import migrate
from ._sql import Claim, SqlStore

__all__ = ["SQLiteStore"]

log = logging.getLogger("dci6bridge.stores")

_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
_NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "9p"}
)
_WORDS = {
    "p": "",
    "text": "TEXT",
    "int": "INTEGER",
    "real": "REAL",
    "bool": "INTEGER",
    "true": "1",
    "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
}


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def network_filesystem(path: str, mounts: str = "/proc/self/mounts") -> str | None:
    """The filesystem type of ``path`` if it is a network one (Linux only; else ``None``)."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as fh:
            table = [line.split()[1:3] for line in fh if len(line.split()) >= 3]
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", ""
    for point, fstype in table:
        point = point.replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind if kind in _NETWORK_FS or kind.startswith("fuse.sshfs") else None


class _Tx:
    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self._conn = conn
        self._clock = clock
        self._now: float | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._conn.execute(sql, params).fetchall()

    def now(self) -> float:
        if self._now is None:
            self._now = float(self._clock())
        return self._now


class SQLiteStore(SqlStore):
    """A :class:`~dci6bridge.stores.base.StatusStore` in one SQLite file.

    Args:
        path: the database file (created with its schema if missing; its directory must
            exist). ``":memory:"`` is refused: use :class:`~dci6bridge.stores.MemoryStore`.
        clock: POSIX seconds; inject a fake clock in tests.
        synchronous: ``"NORMAL"`` (default) or ``"FULL"`` (fsync every commit).
        busy_timeout_s: how long a writer waits for the single write lock.
        unsafe_disable_fencing: **test-only**; see :func:`~dci6bridge.stores.open_store`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 30.0,
        unsafe_disable_fencing: bool = False,
    ) -> None:
        super().__init__(unsafe_disable_fencing=unsafe_disable_fencing, prefix="")
        given: object = path  # checked at run time: callers may pass anything
        raw = os.fspath(path) if isinstance(given, (str, os.PathLike)) else given
        if not isinstance(raw, str) or not raw or raw == ":memory:" or raw.startswith("file:"):
            raise ConfigError(
                f"path: {show(raw)} is not a database file path "
                "(use MemoryStore for an in-memory store)"
            )
        sync: object = synchronous
        mode = sync.upper() if isinstance(sync, str) else ""
        if mode not in _SYNCHRONOUS:
            raise ConfigError(
                f"synchronous: {show(synchronous)} is not one of {', '.join(_SYNCHRONOUS)}"
            )
        busy = rules.check_number(busy_timeout_s, "busy_timeout_s")
        if busy < 0:
            raise ConfigError(f"busy_timeout_s: must not be negative, got {show(busy_timeout_s)}")
        self._path = os.path.abspath(raw)
        if not Path(self._path).parent.is_dir():
            raise ConfigError(f"path: the directory of {self._path!r} does not exist")
        self._remember_arguments(
            self._path,
            clock=clock,
            synchronous=mode,
            busy_timeout_s=busy,
            unsafe_disable_fencing=unsafe_disable_fencing,
        )
        self._clock = clock
        self._synchronous = mode
        self._busy_ms = int(busy * 1000)
        fstype = network_filesystem(os.path.dirname(self._path))
        if fstype is not None:
            log.warning(
                "SQLite database %s is on a %s network filesystem: WAL locking is not "
                "safe there; use a local disk or PostgreSQL",
                self._path,
                fstype,
            )
        self._conns: PerThread[sqlite3.Connection] = PerThread(
            self._connect, sqlite3.Connection.close, name=repr(self)
        )
        with self._transaction(write=True, count=False) as tx:
            migrate(tx.execute, _WORDS, where=self._path)

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    def _connect(self) -> sqlite3.Connection:
        # Several processes or threads opening a new database at once all try to switch
        # it to WAL, which needs it alone for a moment; where waiting could deadlock,
        # SQLite answers "locked" at once instead of waiting for the busy timeout
        # (seen: 1 in 100 runs of 16 threads opening a new file). Try again, within it.
        deadline = time.monotonic() + self._busy_ms / 1000
        pause = 0.001
        while True:
            try:
                return self._open_connection()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise StoreError(f"cannot open SQLite database {self._path}: {exc}") from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite database {self._path}: {exc}") from exc

    def _open_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.row_factory = _dict_row
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()["journal_mode"]
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        if str(journal).lower() != "wal":
            log.warning("SQLite database %s refused WAL mode (journal %s)", self._path, journal)
        return conn

    @contextmanager
    def _transaction(self, *, write: bool, count: bool = True) -> Iterator[_Tx]:
        conn = self._conns.get()
        try:
            if not write:
                yield _Tx(conn, self._clock)
                return
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            try:
                yield _Tx(conn, self._clock)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if count:
                self._counted(conn.total_changes != before)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite error on {self._path}: {exc}") from exc

    def _claim_sql(self, claim: Claim) -> tuple[str, list[Any]]:
        # The IMMEDIATE transaction already excludes every other writer, so a plain
        # UPDATE of the first rows in order is the whole claim.
        c = claim
        return (
            f"UPDATE {c.table} SET {c.assign} WHERE {c.key} IN (SELECT {c.key} FROM {c.table} "
            f"WHERE {c.where} ORDER BY {c.order} LIMIT ?) RETURNING *",
            [*c.assign_params, c.limit],
        )

    def now(self) -> float:
        """The injected clock."""
        return float(self._clock())

    def close(self) -> None:
        """Close this process's connections; later calls raise
        :class:`~dci6bridge.errors.StoreError`."""
        self._conns.close_all()
