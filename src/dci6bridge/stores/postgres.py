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
  and the next call reconnects;
* few round trips: the connection runs in libpq pipeline mode, so ``BEGIN`` travels with
  a transaction's first statement and writes whose result nobody reads wait to travel with
  the next statement or with ``COMMIT``; a fenced write is two round trips (lock + clock,
  then write + commit), a reservation one more (one statement decides, claims and takes
  the advance's singleton). Values are bound server side as psycopg binds them, and each
  statement is prepared once per connection;
* no unbounded waits: every exchange with the server has a deadline (``io_timeout_s``)
  checked between non-blocking reads of the socket, and the connect has libpq's
  ``connect_timeout``. A connection that misses its deadline is in an unknown pipeline
  state and is dropped, never reused; the server ends a session left idle inside a
  transaction for as long (``idle_in_transaction_session_timeout``), so a client that
  vanished mid-transaction releases its row locks.

psycopg is imported only when a ``PostgresStore`` is created: install the ``postgres``
extra (``pip install 'dci6bridge[postgres]'``).
"""

from __future__ import annotations

import contextlib
import math
import re
import selectors
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from dci6bridge._validate import show
from dci6bridge.errors import ConfigError, StaleState, StoreError

from . import _rules as rules
from ._codec import service_from_row
from ._connections import PerThread
from ._schema import migrate
from ._sql import Claim, SingletonTake, SqlStore, Take, Tx, with_clock
from ._url import redact_url
from .base import AdvanceOutcome, Lease, StoredService

__all__ = ["PostgresStore"]

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_NOW_EXPR = "extract(epoch FROM clock_timestamp())::float8"
_DB_NOW = f"SELECT {_NOW_EXPR} AS now"
_LOCKED_AT = "dci6bridge_locked_at"
_WRITES = ("INSERT", "UPDATE", "DELETE")
# Explicit, whatever default_transaction_isolation the server has: REPEATABLE READ claims
# fail with serialization errors under concurrency.
_BEGIN = b"BEGIN ISOLATION LEVEL READ COMMITTED"
_COMMIT = b"COMMIT"
_ROLLBACK = b"ROLLBACK"
_PREPARABLE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES"})
# DML that returns no rows: nothing to wait for, so it can ride with the next batch.
_BLIND = re.compile(r"\s*(?:INSERT|UPDATE|DELETE)\b(?!.*\bRETURNING\b)", re.IGNORECASE | re.DOTALL)
_MAX_PREPARED = 256  # per connection; the least recently used one is deallocated
_DEADLOCK = "40P01"
#: attempts of an ``advance_many`` the server rolled back to break a deadlock
_DEADLOCK_ATTEMPTS = 3


class _Deadlock(StoreError):
    """The server rolled the transaction back to break a deadlock: nothing of it was
    written, so it may run again."""


_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def _seconds(name: str, value: object) -> float:
    # bool is an int: io_timeout_s=True is a mistake, not one second.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    raise ConfigError(f"{name}: expected a positive number of seconds, got {show(value)}")


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


@attrs.frozen
class _Sql:
    """A statement in the ``?`` style, numbered for the server once."""

    text: bytes  # with ``$1``…``$n``
    marks: int
    preparable: bool  # kept as a named prepared statement on the connection

    @classmethod
    def parse(cls, sql: str) -> _Sql:
        pieces = sql.split("?")
        numbered = "".join(f"{piece}${n}" for n, piece in enumerate(pieces[:-1], 1))
        words = sql.split(None, 1)
        return cls(
            (numbered + pieces[-1]).encode(),
            len(pieces) - 1,
            bool(words) and words[0].upper() in _PREPARABLE,
        )


@attrs.frozen
class _Bound:
    """A statement with its values dumped (at the call, so later changes to the caller's
    objects cannot reach a deferred write), their types and formats."""

    sql: _Sql
    values: Sequence[Any]
    types: tuple[int, ...]
    formats: Sequence[Any]


_Result = tuple[str, int, list[dict[str, Any]]]  # command status, row count, rows


class _Session:
    """One connection in libpq pipeline mode, and the statements prepared on it.

    A batch of statements goes out in one write and ends with a Sync; its results come
    back together. Inside ``BEGIN`` … ``COMMIT`` a Sync ends no transaction: it brings
    the server to ReadyForQuery, where its idle-in-transaction timeout runs (after a
    flush request instead, the server would wait for the rest of the transaction, and
    for a client that vanished, forever). Values are dumped exactly as psycopg dumps
    them for server-side binding, and each statement is prepared once per connection
    (by name, keyed on its text and parameter types, as psycopg does).
    """

    def __init__(self, conn: Any, pg: Any, *, io_timeout_s: float) -> None:
        self.conn = conn
        self._pq = conn.pgconn
        self._pq.enter_pipeline_mode()
        self._io_timeout_s = io_timeout_s
        self._timed_out = pg.errors.ConnectionTimeout
        self._adapt = pg.adapt.Transformer(conn)
        self._auto = pg.adapt.PyFormat.AUTO
        self._status = pg.pq.ExecStatus
        self._error_from = pg.errors.error_from_result
        self._encoding = conn.info.encoding
        self._programming_error = pg.ProgrammingError
        self._operational_error = pg.OperationalError
        self._error = pg.Error
        self._idle = pg.pq.TransactionStatus.IDLE
        self._bad = pg.pq.ConnStatus.BAD
        self._names: OrderedDict[tuple[bytes, tuple[int, ...]], bytes] = OrderedDict()
        self._made = 0
        self._doomed: list[bytes] = []  # evicted names, deallocated after the next batch
        self.round_trips = 0  # batches sent and answered: what a statement's latency costs
        # Set when an exchange missed its deadline: what the server did with the batch,
        # and where the pipeline stands, are unknown, so the connection is never reused.
        self.broken = False

    def bind(self, sql: _Sql, params: Sequence[Any]) -> _Bound:
        """``sql`` with ``params`` dumped."""
        if len(params) != sql.marks:
            raise self._programming_error(
                f"the statement has {sql.marks} placeholders, "
                f"but {len(params)} parameters were passed"
            )
        values = self._adapt.dump_sequence(params, [self._auto] * len(params))
        return _Bound(sql, values, tuple(self._adapt.types), tuple(self._adapt.formats))

    def run(
        self, statements: Sequence[_Bound], *, begin: bool = False, end: bytes | None = None
    ) -> tuple[list[_Result], str]:
        """Send ``statements`` as one batch (after ``BEGIN`` with ``begin``; followed by
        ``end``, ``COMMIT`` or ``ROLLBACK``, and a Sync); their results, and the
        command status of ``end``. The first failing statement raises; the server skips
        the rest of the batch."""
        pq = self._pq
        expect: list[tuple[str, Any]] = []
        if begin:
            pq.send_query_params(_BEGIN, None)
            expect.append(("control", None))
        for bound in statements:
            if bound.sql.preparable:
                name = self._name(bound, expect)
                pq.send_query_prepared(name, bound.values, param_formats=bound.formats)
            else:
                pq.send_query_params(
                    bound.sql.text, bound.values, bound.types, param_formats=bound.formats
                )
            expect.append(("statement", None))
        if end is not None:
            pq.send_query_params(end, None)
            expect.append(("end", None))
        doomed, self._doomed = self._doomed, []
        for name in doomed:
            pq.send_query_params(b"DEALLOCATE " + name, None)
            expect.append(("deallocate", name))
        pq.pipeline_sync()
        expect.append(("sync", None))
        self.round_trips += 1
        groups = self._within_deadline(self._exchange(len(expect)))
        return self._results(expect, groups)

    def _within_deadline(self, exchange: Generator[int, None, list[list[Any]]]) -> Any:
        # psycopg's own wait has no deadline by default. Every step of ``exchange`` is
        # non-blocking (flush, consume_input, get_result once not busy) and yields the
        # socket event it needs, so the only wait is here, bounded by what is left.
        deadline = time.monotonic() + self._io_timeout_s
        with selectors.DefaultSelector() as selector:
            try:
                events = next(exchange)
                selector.register(self._pq.socket, events)
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        exchange.close()
                        self.broken = True
                        raise self._timed_out(
                            f"no answer within io_timeout={self._io_timeout_s:g} s; the "
                            "connection is dropped, and whether this call's writes were "
                            "committed is unknown"
                        )
                    if selector.select(left):
                        wanted = next(exchange)
                        if wanted != events:
                            events = selector.modify(self._pq.socket, wanted).events
            except StopIteration as done:
                return done.value

    def _name(self, bound: _Bound, expect: list[tuple[str, Any]]) -> bytes:
        key = (bound.sql.text, bound.types)
        name = self._names.get(key)
        if name is not None:
            self._names.move_to_end(key)
            return name
        self._made += 1
        name = self._names[key] = b"dci6bridge_%d" % self._made
        self._pq.send_prepare(name, bound.sql.text, bound.types)
        expect.append(("prepare", key))
        while len(self._names) > _MAX_PREPARED:
            self._doomed.append(self._names.popitem(last=False)[1])
        return name

    def _exchange(self, groups: int) -> Generator[int, None, list[list[Any]]]:
        # Flush the batch, then collect one group of results per query (and one per
        # Sync); yields the socket event to wait for before each non-blocking step.
        pq = self._pq
        while pq.flush():
            yield _WRITE
        got: list[list[Any]] = []
        current: list[Any] = []
        while len(got) < groups:
            yield _READ
            pq.consume_input()
            while not pq.is_busy():
                result = pq.get_result()
                if result is None:
                    if not current:
                        break
                    got.append(current)
                    current = []
                elif result.status == self._status.PIPELINE_SYNC:
                    got.append([result])
                else:
                    current.append(result)
        return got

    def _results(
        self, expect: list[tuple[str, Any]], groups: list[list[Any]]
    ) -> tuple[list[_Result], str]:
        status = self._status
        failed = None
        results: list[_Result] = []
        ended = ""
        for (kind, key), group in zip(expect, groups, strict=True):
            result = group[-1]
            ok = result.status in (status.COMMAND_OK, status.TUPLES_OK)
            if not ok and result.status != status.PIPELINE_SYNC:
                failed = failed or (result if result.status == status.FATAL_ERROR else None)
                if kind == "prepare":  # never created: prepare it again next time
                    self._names.pop(key, None)
                elif kind == "deallocate":
                    self._doomed.append(key)
                continue
            if kind == "statement":
                results.append(self._rows(result))
            elif kind == "end":
                ended = (result.command_status or b"").decode()
        if failed is not None:
            error = self._error_from(failed, encoding=self._encoding)
            if self._pq.status == self._bad:  # as psycopg reports a lost connection
                raise self._operational_error(str(error)) from error
            raise error
        return results, ended

    def _rows(self, result: Any) -> _Result:
        command = (result.command_status or b"").decode()
        count = -1 if result.command_tuples is None else result.command_tuples
        if result.status != self._status.TUPLES_OK:
            return command, count, []
        names = [result.fname(i).decode(self._encoding) for i in range(result.nfields)]
        self._adapt.set_pgresult(result)
        rows = self._adapt.load_rows(
            0, result.ntuples, lambda values: dict(zip(names, values, strict=True))
        )
        return command, count, rows

    def rollback(self) -> None:
        """End whatever transaction is open (running or aborted), leaving the connection
        idle. Every batch ends with a Sync, so no failure leaves the pipeline aborted."""
        with contextlib.suppress(self._error):  # the state tells whether it worked
            self.run([], end=_ROLLBACK)
        if self.broken or self._pq.transaction_status != self._idle:
            raise self._operational_error("the connection did not return to idle")


class _Tx:
    def __init__(
        self,
        session: _Session,
        clock: Callable[[], float] | None,
        parse: Callable[[str], _Sql],
        *,
        write: bool,
    ) -> None:
        self._session = session
        self._clock = clock
        self._parse = parse
        self._write = write
        self._begun = False
        self._pending: list[_Bound] = []  # blind writes not sent yet
        self._now: float | None = None
        self.changed = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        if self._write and _BLIND.match(sql):
            self.defer(sql, params)
            return []
        bound = self._session.bind(self._parse(sql), params)
        return self._send([*self._take(), bound])[0][-1][2]

    def execute_many(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[dict[str, Any]]]:
        """Run ``statements`` in order in one round trip (after what is deferred); the
        rows of each. The first that fails raises, and the rest are not run."""
        bound = [self._session.bind(self._parse(sql), params) for sql, params in statements]
        results = self._send([*self._take(), *bound])[0]
        return [rows for _, _, rows in results[len(results) - len(bound) :]]

    def defer(self, sql: str, params: Sequence[Any]) -> None:
        """Queue a write whose result nobody reads: it goes out with the next statement or
        with ``COMMIT``, and its errors surface there (still inside the transaction)."""
        self._pending.append(self._session.bind(self._parse(sql), params))

    def commit(self) -> str:
        """Send what is pending with ``COMMIT`` (nothing at all for a transaction that
        never ran a statement); how the server ended the transaction."""
        if not (self._begun or self._pending):
            return "COMMIT"
        return self._send(self._take(), end=_COMMIT)[1]

    def _take(self) -> list[_Bound]:
        pending, self._pending = self._pending, []
        return pending

    def _send(
        self, statements: list[_Bound], end: bytes | None = None
    ) -> tuple[list[_Result], str]:
        begin = self._write and not self._begun
        self._begun = self._begun or begin
        results, ended = self._session.run(statements, begin=begin, end=end)
        if any(count > 0 and status.startswith(_WRITES) for status, count, _ in results):
            self.changed = True
        return results, ended

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
                self._now = float(self.execute(_DB_NOW)[0]["now"])
        return self._now


class PostgresStore(SqlStore):
    """A :class:`~dci6bridge.stores.base.StatusStore` in PostgreSQL.

    Args:
        dsn: a libpq connection URL or ``key=value`` string. Its password never appears
            in reprs, logs or error messages.
        schema: the schema holding the tables (created if missing). Several
            installations, or tests, can share one database with different schemas.
        clock: POSIX seconds for leases; ``None`` (default) uses the database clock.
        connect_timeout_s: how long to wait for a connection (libpq's
            ``connect_timeout``: whole seconds, rounded up, at least 2). A
            ``connect_timeout`` in ``dsn`` wins.
        io_timeout_s: how long to wait for the server's answer to each exchange
            (one batch of statements). When it passes, the call raises
            :class:`~dci6bridge.errors.StoreError` naming the timeout and the server, the
            connection is dropped and the next call opens a new one. The server ends a
            session idle inside a transaction for this long too, releasing its locks.
            Set it above your slowest statement, lock waits included.
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
        io_timeout_s: float = 30.0,
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
        connect_s = math.ceil(_seconds("connect_timeout_s", connect_timeout_s))
        self._io_timeout_s = _seconds("io_timeout_s", io_timeout_s)
        self._psycopg = _psycopg()
        super().__init__(unsafe_disable_fencing=unsafe_disable_fencing, prefix=f'"{schema}".')
        self._remember_arguments(
            dsn,
            schema=schema,
            clock=clock,
            connect_timeout_s=connect_timeout_s,
            io_timeout_s=io_timeout_s,
            unsafe_disable_fencing=unsafe_disable_fencing,
        )
        self._dsn = dsn
        self._where = redact_url(dsn)
        self._password = _password_of(self._psycopg, dsn)
        self._schema = schema
        self._clock = clock
        self._timeout = connect_s
        self._sql_cache: dict[str, _Sql] = {}
        self._conns: PerThread[_Session] = PerThread(
            self._connect, lambda s: s.conn.close(), name=repr(self)
        )
        words = {
            "p": self._p,
            "text": "TEXT",
            "int": "BIGINT",
            "real": "DOUBLE PRECISION",
            "bool": "BOOLEAN",
            "true": "true",
            "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        }
        p = self._p
        # ``_reserve_and_take``'s statement; the outer query's parameters (server,
        # service) come last in both.
        held = (
            "held AS MATERIALIZED (SELECT server_id, service_id FROM "
            f"{p}server_claims WHERE server_id = ? OR service_id = ?), "
            f"ins AS (INSERT INTO {p}server_claims (server_id, service_id, claimed_at) "
            "SELECT ?, ?, ? WHERE NOT EXISTS (SELECT FROM held) "
            "ON CONFLICT DO NOTHING RETURNING server_id)"
        )
        answer = (
            "SELECT EXISTS (SELECT FROM ins) AS inserted, "
            "(SELECT service_id FROM held WHERE server_id = ?) AS holder, "
            "(SELECT server_id FROM held WHERE service_id = ?) AS mine"
        )
        self._reserve_sql = f"WITH {held} {answer}"
        self._reserve_taking_sql = (
            f"WITH {held}, one AS (INSERT INTO {p}singletons AS s (name, holder, held_until) "
            "SELECT ?, ?, ? WHERE EXISTS (SELECT FROM ins) "
            "OR EXISTS (SELECT FROM held WHERE server_id = ? AND service_id = ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "held_until = excluded.held_until WHERE s.held_until <= ? OR s.holder = ? "
            f"RETURNING name) {answer}, EXISTS (SELECT FROM one) AS took"
        )
        with self._transaction(write=True, count=False) as tx:
            # Workers starting together would race on CREATE SCHEMA/TABLE otherwise.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"dci6bridge:{schema}",))
            tx.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            migrate(tx.execute, words, where=f"{self._where} (schema {schema})")

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r}, schema={self._schema!r})"

    @property
    def io_timeout_s(self) -> float:
        """How long each exchange with the server may take (see the constructor)."""
        return self._io_timeout_s

    @property
    def schema(self) -> str:
        """The schema holding the tables."""
        return self._schema

    def _parse(self, sql: str) -> _Sql:
        parsed = self._sql_cache.get(sql)
        if parsed is None:
            parsed = self._sql_cache[sql] = _Sql.parse(sql)
        return parsed

    def _connect(self) -> _Session:
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
        session = _Session(conn, pg, io_timeout_s=self._io_timeout_s)
        # Without it, a session whose client vanished mid-transaction (a dropped NAT
        # entry, a frozen link: no FIN ever arrives) keeps its row locks until TCP
        # keepalives notice, hours later; and a COMMIT delivered late could still commit
        # after the client gave up on it. Our transactions never sit idle on purpose.
        idle_ms = max(1, math.ceil(self._io_timeout_s * 1000))
        setup = self._parse(f"SET idle_in_transaction_session_timeout = {idle_ms}")
        try:
            session.run([session.bind(setup, ())])
        except pg.Error as exc:
            conn.close()
            raise StoreError(
                f"cannot set up the connection to PostgreSQL at {self._where}: {self._scrub(exc)}"
            ) from None
        return session

    @contextmanager
    def _transaction(self, *, write: bool, count: bool = True) -> Iterator[_Tx]:
        pg = self._psycopg
        session = self._conns.get()
        tx = _Tx(session, self._clock, self._parse, write=write)
        try:
            try:
                yield tx
                ended = tx.commit()
            except BaseException:
                self._settle(session)
                raise
        except pg.Error as exc:
            message = f"PostgreSQL error on {self._where}: {self._scrub(exc)}"
            if exc.sqlstate == _DEADLOCK:  # rolled back whole; the connection is fine
                raise _Deadlock(message) from exc
            if isinstance(exc, pg.OperationalError):
                self._conns.discard()
            raise StoreError(message) from exc
        if ended != "COMMIT":  # the answer to COMMIT in a transaction that had failed
            raise StoreError(f"PostgreSQL error on {self._where}: the transaction was {ended}")
        if write and count:
            self._counted(tx.changed)

    def _settle(self, session: _Session) -> None:
        """After a failure: roll an open transaction back, or drop a connection left in
        an unknown state, so the next call starts clean."""
        states = self._psycopg.pq.TransactionStatus
        status = session.conn.info.transaction_status
        if session.broken:
            self._conns.discard()
            return
        if status == states.IDLE:
            return
        if status in (states.INTRANS, states.INERROR):
            # A connection that cannot roll back is dropped.
            with contextlib.suppress(Exception):
                session.rollback()
                return
        self._conns.discard()

    def _scrub(self, exc: BaseException) -> str:
        text = redact_url(str(exc))
        return text.replace(self._password, "***") if self._password else text

    def _locked(
        self, tx: Tx, service_id: str, known: StoredService | None = None
    ) -> tuple[StoredService | None, float]:
        if not isinstance(tx, _Tx) or not self._clock_with_locks(tx):
            return super()._locked(tx, service_id, known)
        known_by_id = {} if known is None else {service_id: known}
        rows, now = self._lock_reading_clock(tx, "service_id = ?", [service_id], known_by_id)
        return (rows[0] if rows else None), now

    def _locked_many(
        self, tx: Tx, known: Mapping[str, StoredService]
    ) -> tuple[dict[str, StoredService], float]:
        if len(known) == 1 or not isinstance(tx, _Tx) or not self._clock_with_locks(tx):
            return super()._locked_many(tx, known)
        marks = ", ".join("?" for _ in known)
        rows, now = self._lock_reading_clock(tx, f"service_id IN ({marks})", list(known), known)
        return {row.service_id: row for row in rows}, now

    def _clock_with_locks(self, tx: _Tx) -> bool:
        """Whether the lock statement should read the transaction's clock too."""
        return self._clock is None and not tx.has_now

    def _lock_reading_clock(
        self, tx: _Tx, where: str, params: Sequence[Any], known: Mapping[str, StoredService]
    ) -> tuple[list[StoredService], float]:
        # One statement instead of two. The clock is read in the outer query, row by row
        # as the materialized CTE hands them over locked (in id order: writers locking
        # overlapping sets cannot deadlock); the last reading, taken once every row is
        # ours, is the transaction's clock, so a wait for a lock never makes ``now``
        # earlier than the moment the rows are ours.
        rows = tx.execute(
            f"WITH s AS MATERIALIZED (SELECT * FROM {self._p}services WHERE {where} "
            f"ORDER BY service_id FOR UPDATE) SELECT s.*, {_NOW_EXPR} AS {_LOCKED_AT} FROM s",
            params,
        )
        if not rows:
            return [], tx.now()
        stamps = [float(row.pop(_LOCKED_AT)) for row in rows]
        found = [service_from_row(row, known.get(row["service_id"])) for row in rows]
        return found, tx.set_now(max(stamps))

    def _reserve(self, tx: Tx, lease: Lease, server_id: int, now: float) -> bool:
        return self._reserve_and_take(tx, lease, server_id, now, None)[0]

    def _advance_many(self, requests: Sequence[rules.CheckedRequest]) -> list[AdvanceOutcome]:
        # Claims are taken in one order (server id), but a singleton taken with a
        # reservation can still close a cycle with another worker's batch; the server
        # breaks it by rolling one transaction back whole, which is then simply rerun.
        attempt = 1
        while True:
            try:
                return super()._advance_many(requests)
            except _Deadlock:
                if attempt >= _DEADLOCK_ATTEMPTS:
                    raise
                attempt += 1

    def _reserve_and_take(
        self,
        tx: Tx,
        lease: Lease,
        server_id: int,
        now: float,
        singleton: SingletonTake | None,
    ) -> tuple[bool, bool | None]:
        # One statement, one round trip, where the shared path needs three or four (who
        # holds the server, what the service holds, the insert, maybe who won a race)
        # and one more for the singleton. The claim is inserted only when nobody holds
        # the server and the service holds nothing; the singleton only once the claim is
        # the service's, so a refused reservation writes nothing. The outer query reads
        # the claims as they were before the insert (one snapshot for the statement).
        if not isinstance(tx, _Tx):
            return super()._reserve_and_take(tx, lease, server_id, now, singleton)
        ((row,),) = tx.execute_many([self._reserve_statement(lease, server_id, now, singleton)])
        return self._reserved(tx, row, lease, server_id)

    def _reserve_statement(
        self, lease: Lease, server_id: int, now: float, singleton: SingletonTake | None
    ) -> tuple[str, list[Any]]:
        sid = lease.service_id
        sql, params = self._reserve_sql, [server_id, sid, server_id, sid, now]
        if singleton is not None:
            sql = self._reserve_taking_sql
            params += [singleton.name, singleton.holder, singleton.until, server_id, sid]
            params += [now, singleton.holder]
        return sql, [*params, server_id, sid]

    def _reserved(
        self, tx: _Tx, row: Mapping[str, Any], lease: Lease, server_id: int
    ) -> tuple[bool, bool | None]:
        """The answer of a reservation statement: reserved, and the singleton's."""
        sid = lease.service_id
        took = row.get("took")
        tx.changed = tx.changed or bool(row["inserted"] or took)
        if row["inserted"]:
            return True, took
        if row["holder"] is not None:
            ours = row["holder"] == sid
            return ours, took if ours else None
        if row["mine"] is not None:
            raise StaleState(rules.holds_other_server(sid, int(row["mine"]), server_id))
        # Free in the snapshot, yet the insert did nothing: a concurrent reservation of
        # this server committed first (it waited for that one). The holder decides, as
        # in the shared path; the singleton, if any, is taken by the caller.
        return self._holder(tx, server_id) == sid, None

    def _take_all(
        self, tx: Tx, takes: Sequence[Take], now: float
    ) -> list[tuple[bool | None, bool | None] | StaleState]:
        # Every reservation and singleton of the transaction in one round trip (a
        # reserving batch of 8 took 8): the statements still run one after the other,
        # in the order given, each writing only what its own answer allows, so the
        # answers are those of running them one by one.
        asked = [t for t in takes if t.server is not None or t.singleton is not None]
        if len(asked) < 2 or not isinstance(tx, _Tx):
            return super()._take_all(tx, takes, now)
        statements = []
        for take in asked:
            if take.server is not None:
                statements.append(
                    self._reserve_statement(take.lease, take.server, now, take.singleton)
                )
            elif take.singleton is not None:
                statements.append(self._singleton_statement(take.singleton, now))
        results = iter(tx.execute_many(statements))
        answers: list[tuple[bool | None, bool | None] | StaleState] = []
        for take in takes:
            if take.server is None and take.singleton is None:
                answers.append((None, None))
                continue
            rows = next(results)
            if take.server is None:
                answers.append((None, bool(rows)))
                continue
            try:
                reserved, held = self._reserved(tx, rows[0], take.lease, take.server)
            except StaleState as exc:
                answers.append(exc)
                continue
            single = take.singleton
            if reserved and single is not None and held is None:
                held = self._take_singleton(tx, single.name, single.holder, single.until, now)
            answers.append((reserved, held if reserved else None))
        return answers

    def _write_all(self, tx: Tx, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        # Data-modifying CTEs all run, in full, whether or not the outer statement reads
        # them: one statement (one prepared plan) for the whole write, deferred to travel
        # with the COMMIT (``_Tx.execute`` defers a single row-less write by itself).
        if len(statements) < 2 or not isinstance(tx, _Tx):
            super()._write_all(tx, statements)
            return
        *first, (last_sql, last_params) = statements
        ctes = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(first))
        params = [p for _, ps in first for p in ps]
        tx.defer(f"WITH {ctes} {last_sql}", [*params, *last_params])

    def _write_now(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        if self._clock is not None:
            return super()._write_now(sql, params)
        # One round trip where a transaction takes three (BEGIN with the clock read, the
        # statement, COMMIT): the database clock is read once inside the statement, which
        # commits on its own (the connection is in autocommit between our transactions).
        # A worker's every tick starts with one (``acquire``) and ends with two (the event
        # relay's claim and acknowledgement).
        text, bound = with_clock(sql, params, None, clock="(SELECT now FROM t)")
        clock = f"WITH t AS MATERIALIZED (SELECT {_NOW_EXPR} AS now)"
        text = f"{clock}, {text[5:]}" if text.startswith("WITH ") else f"{clock} {text}"
        with self._transaction(write=False) as tx:
            rows = tx.execute(text, bound)
        self._counted(tx.changed)
        return rows

    def _claim_sql(self, claim: Claim) -> tuple[str, list[Any]]:
        c = claim
        return (
            f"WITH c AS (SELECT {c.key} FROM {c.table} WHERE {c.where} ORDER BY {c.order} "
            f"LIMIT ? FOR UPDATE SKIP LOCKED) UPDATE {c.table} SET {c.assign} FROM c "
            f"WHERE {c.table}.{c.key} = c.{c.key} RETURNING {c.table}.*",
            [c.limit, *c.assign_params],
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
