"""``PostgresStore``: the status store for many workers on many hosts (psycopg 3).

Follows ``reference/durability.md`` §8:

* READ COMMITTED transactions, each one short and never open across a caller's HTTP
  call; every fenced write locks its service row with ``SELECT … FOR UPDATE`` and then
  compares state, version, lease owner and epoch;
* claims (services and outbox events) with a CTE ``SELECT … FOR UPDATE SKIP LOCKED`` and
  one ``UPDATE … RETURNING``, backed by a partial index on the runnable predicate;
* lease times from the database clock by default, so hosts with skewed clocks agree
  (pass ``clock=`` to use another one, e.g. a fake clock in tests);
* tables live in their own schema (default ``dci6bridge``), created and migrated on open
  under an advisory lock so several workers may start at once;
* one connection per process and thread, opened lazily; a broken connection is dropped
  and the next call reconnects.

psycopg is imported only when a ``PostgresStore`` is created: install the ``postgres``
extra (``pip install 'dci6bridge[postgres]'``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dci6bridge._validate import show
from dci6bridge.errors import ConfigError, StoreError

from ._codec import service_from_row
from ._connections import PerThread
from ._schema import migrate
from ._sql import Claim, SqlStore, Tx
from ._url import redact_url
from .base import StoredService

__all__ = ["PostgresStore"]

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_NOW_EXPR = "extract(epoch FROM clock_timestamp())::float8"
_DB_NOW = f"SELECT {_NOW_EXPR} AS now"
_LOCKED_AT = "dci6bridge_locked_at"
_WRITES = ("INSERT", "UPDATE", "DELETE")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            "PostgresStore needs psycopg 3: pip install 'dci6bridge[postgres]'"
        ) from exc
    return psycopg


def _password_of(pg: Any, dsn: str) -> str | None:
    try:
        password = pg.conninfo.conninfo_to_dict(dsn).get("password")
    except pg.Error:  # an unparsable DSN fails on connect, with a scrubbed message
        return None
    return str(password) if password else None


class _Tx:
    def __init__(
        self, conn: Any, clock: Callable[[], float] | None, convert: Callable[[str], str]
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._convert = convert
        self._now: float | None = None
        self.changed = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self._conn.execute(self._convert(sql), params)
        if cur.rowcount > 0 and (cur.statusmessage or "").startswith(_WRITES):
            self.changed = True
        return list(cur.fetchall()) if cur.description else []

    @property
    def has_now(self) -> bool:
        """Whether this transaction has read its clock already."""
        return self._now is not None

    def set_now(self, now: float) -> float:
        """Fix the transaction's clock to a value read by another statement."""
        self._now = now
        return now

    def now(self) -> float:
        if self._now is None:
            if self._clock is not None:
                self._now = float(self._clock())
            else:
                self._now = float(self._conn.execute(_DB_NOW).fetchone()["now"])
        return self._now


class PostgresStore(SqlStore):
    """A :class:`~dci6bridge.stores.base.StatusStore` in PostgreSQL.

    Args:
        dsn: a libpq connection URL or ``key=value`` string. Its password never appears
            in reprs, logs or error messages.
        schema: the schema holding the tables (created if missing). Several
            installations, or tests, can share one database with different schemas.
        clock: POSIX seconds for leases; ``None`` (default) uses the database clock.
        connect_timeout_s: how long to wait for a connection.
        unsafe_disable_fencing: **test-only**; see :func:`~dci6bridge.stores.open_store`.
    """

    _lock_row = " FOR UPDATE"
    _true = "true"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "dci6bridge",
        clock: Callable[[], float] | None = None,
        connect_timeout_s: float = 10.0,
        unsafe_disable_fencing: bool = False,
    ) -> None:
        given: tuple[object, object] = (dsn, schema)  # checked at run time
        if not isinstance(given[0], str) or not dsn:
            raise ConfigError(f"dsn: expected a PostgreSQL URL, got {show(dsn)}")
        if not isinstance(given[1], str) or not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                f"schema: {show(schema)} is not a plain SQL identifier "
                "(letters, digits and _, at most 63)"
            )
        self._psycopg = _psycopg()
        super().__init__(unsafe_disable_fencing=unsafe_disable_fencing, prefix=f'"{schema}".')
        self._remember_arguments(
            dsn,
            schema=schema,
            clock=clock,
            connect_timeout_s=connect_timeout_s,
            unsafe_disable_fencing=unsafe_disable_fencing,
        )
        self._dsn = dsn
        self._where = redact_url(dsn)
        self._password = _password_of(self._psycopg, dsn)
        self._schema = schema
        self._clock = clock
        self._timeout = max(1, int(connect_timeout_s))
        self._sql_cache: dict[str, str] = {}
        self._conns: PerThread[Any] = PerThread(self._connect, lambda c: c.close(), name=repr(self))
        words = {
            "p": self._p,
            "text": "TEXT",
            "int": "BIGINT",
            "real": "DOUBLE PRECISION",
            "bool": "BOOLEAN",
            "true": "true",
            "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        }
        with self._transaction(write=True, count=False) as tx:
            # Workers starting together would race on CREATE SCHEMA/TABLE otherwise.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"dci6bridge:{schema}",))
            tx.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            migrate(tx.execute, words, where=f"{self._where} (schema {schema})")

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r}, schema={self._schema!r})"

    @property
    def schema(self) -> str:
        """The schema holding the tables."""
        return self._schema

    def _convert(self, sql: str) -> str:
        converted = self._sql_cache.get(sql)
        if converted is None:
            converted = self._sql_cache[sql] = sql.replace("?", "%s")
        return converted

    def _connect(self) -> Any:
        pg = self._psycopg
        from psycopg.rows import dict_row

        # A connect_timeout in the URL wins over the constructor's default.
        extra = {} if "connect_timeout" in self._dsn else {"connect_timeout": self._timeout}
        try:
            conn = pg.connect(self._dsn, autocommit=True, row_factory=dict_row, **extra)
        except pg.Error as exc:
            # from None: the driver's own exception text is not ours to vouch for
            raise StoreError(
                f"cannot connect to PostgreSQL at {self._where}: {self._scrub(exc)}"
            ) from None
        # Explicit, whatever default_transaction_isolation the server has: REPEATABLE READ
        # claims fail with serialization errors under concurrency.
        conn.isolation_level = pg.IsolationLevel.READ_COMMITTED
        return conn

    @contextmanager
    def _transaction(self, *, write: bool, count: bool = True) -> Iterator[_Tx]:
        pg = self._psycopg
        conn = self._conns.get()
        tx = _Tx(conn, self._clock, self._convert)
        try:
            if write:
                with conn.transaction():
                    yield tx
                if count:
                    self._counted(tx.changed)
            else:
                yield tx
        except pg.OperationalError as exc:
            self._conns.discard()
            raise StoreError(f"PostgreSQL error on {self._where}: {self._scrub(exc)}") from exc
        except pg.Error as exc:
            raise StoreError(f"PostgreSQL error on {self._where}: {self._scrub(exc)}") from exc

    def _scrub(self, exc: BaseException) -> str:
        text = redact_url(str(exc))
        return text.replace(self._password, "***") if self._password else text

    def _locked(self, tx: Tx, service_id: str) -> tuple[StoredService | None, float]:
        # One statement instead of two. The clock is read in the outer query, so only
        # once the materialized CTE has the row lock: a wait for a lock never makes
        # ``now`` earlier than the moment the row is ours.
        if self._clock is not None or not isinstance(tx, _Tx) or tx.has_now:
            return super()._locked(tx, service_id)
        rows = tx.execute(
            f"WITH s AS MATERIALIZED (SELECT * FROM {self._p}services WHERE service_id = ? "
            f"FOR UPDATE) SELECT s.*, {_NOW_EXPR} AS {_LOCKED_AT} FROM s",
            (service_id,),
        )
        if not rows:
            return None, tx.now()
        row = dict(rows[0])
        return service_from_row(row), tx.set_now(float(row.pop(_LOCKED_AT)))

    def _write_all(self, tx: Tx, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        # Data-modifying CTEs all run, in full, whether or not the outer statement reads
        # them: one statement (one round trip, one prepared plan) for the whole write.
        if len(statements) < 2:
            super()._write_all(tx, statements)
            return
        *first, (last_sql, last_params) = statements
        ctes = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(first))
        params = [p for _, ps in first for p in ps]
        tx.execute(f"WITH {ctes} {last_sql}", [*params, *last_params])

    def _claim_sql(self, claim: Claim) -> tuple[str, list[Any]]:
        c = claim
        return (
            f"WITH c AS (SELECT {c.key} FROM {c.table} WHERE {c.where} ORDER BY {c.order} "
            f"LIMIT ? FOR UPDATE SKIP LOCKED) UPDATE {c.table} SET {c.assign} FROM c "
            f"WHERE {c.table}.{c.key} = c.{c.key} RETURNING {c.table}.*",
            [*c.where_params, c.limit, *c.assign_params],
        )

    def now(self) -> float:
        """The injected clock, or the database clock."""
        if self._clock is not None:
            return float(self._clock())
        with self._transaction(write=False) as tx:
            return tx.now()

    def close(self) -> None:
        """Close this process's connections; later calls raise
        :class:`~dci6bridge.errors.StoreError`."""
        self._conns.close_all()
