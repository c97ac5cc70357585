"""How PostgresStore talks to the server: round trips per call (pipeline batches), value
binding, prepared statements, and what a failure or a Python exception mid-transaction
leaves behind."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from dci6bridge.errors import LeaseLost, StaleState, StoreError
from dci6bridge.stores import Lease, NewOutbox, PostgresStore
from dci6bridge.stores import postgres as pg_module

pytestmark = pytest.mark.postgres

import psycopg  # noqa: E402 - the test extra installs it; pg_url fails in CI without it


@pytest.fixture
def round_trips(pg: PostgresStore, tmp_path: Path) -> Iterator[Callable[[Callable[[], Any]], int]]:
    """``round_trips(call)``: how many batches the client sent during ``call``, as libpq's
    own protocol trace saw them: each ends with a Sync or a Flush (pipeline mode) or is
    one Query message, and each waits for its answers."""
    conn = pg._conns.get().conn
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as sink:
        conn.pgconn.trace(sink.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)

        def count(call: Callable[[], Any]) -> int:
            def seen() -> int:
                sink.flush()
                sent = [line.split("\t") for line in trace.read_text().splitlines()]
                return sum(1 for f in sent if f[0] == "F" and f[2] in ("Sync", "Flush", "Query"))

            before = seen()
            call()
            return seen() - before

        yield count
        conn.pgconn.untrace()


def _leased(pg: PostgresStore, service_id: str = "s") -> Lease:
    pg.create_service(service_id, {"plan": "x"}, state="pending", desired="active")
    [lease] = pg.acquire("w", 60)
    return lease


def _idle_on(pg: PostgresStore, pid: int) -> None:
    conn = pg._conns.get().conn
    assert conn.info.backend_pid == pid  # the same connection, still usable
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_fenced_write_is_two_round_trips(
    pg: PostgresStore, round_trips: Callable[[Callable[[], Any]], int]
) -> None:
    lease = _leased(pg)
    row = lease.service
    for n in range(3):  # the first use of a statement prepares it in the same message
        state = row.state
        new = f"step{n}"

        def move(state: str = state, version: int = row.version, new: str = new) -> None:
            nonlocal row
            row = pg.transition(
                lease,
                expected_state=state,
                expected_version=version,
                new_state=new,
                outbox=[NewOutbox("a"), NewOutbox("b")],
            )

        assert round_trips(move) == 2
    assert round_trips(lambda: pg.checkpoint(lease, expected_version=3, patch={"module": "m"})) == 2
    assert round_trips(lambda: pg.renew(lease, 60)) == 2
    assert round_trips(lambda: pg.release_server(lease, 5)) == 2
    assert round_trips(lambda: pg.get("s")) == 1
    with pytest.raises(StaleState):  # lock read, then the refusal rolls back
        assert round_trips(lambda: pg.checkpoint(lease, expected_version=0, patch={})) == 2
    assert round_trips(lambda: pg.release(lease)) == 2
    assert [h.to_state for h in pg.history("s")] == ["step0", "step1", "step2"]
    assert [m.kind for m in pg.claim_outbox("relay", 30)] == ["a", "b"] * 3


def test_a_python_exception_after_the_lock_read_rolls_back(pg: PostgresStore) -> None:
    lease = _leased(pg)
    pid = pg._conns.get().conn.info.backend_pid
    writes = pg.write_count
    stale = attrs.evolve(lease, epoch=lease.epoch + 1)
    with pytest.raises(LeaseLost):
        pg.transition(stale, expected_state="pending", expected_version=0, new_state="x")
    _idle_on(pg, pid)
    assert pg.write_count == writes
    # The row lock went with the rollback: another connection can take it at once.
    other = PostgresStore(pg._dsn, schema=pg.schema)
    moved = other.transition(lease, expected_state="pending", expected_version=0, new_state="y")
    other.close()
    assert moved.version == 1
    assert pg.history("s")[-1].to_state == "y"
    # The statements first prepared in the rolled-back transaction are still there.
    assert pg.checkpoint(lease, expected_version=1, patch={"module": "m"}).module == "m"


def test_a_python_exception_discards_deferred_writes(pg: PostgresStore) -> None:
    lease = _leased(pg)
    pid = pg._conns.get().conn.info.backend_pid
    p = f'"{pg.schema}".'

    def half_done() -> None:
        with pg._transaction(write=True) as tx:
            tx.execute(f"UPDATE {p}services SET version = 41 WHERE service_id = ?", ("s",))
            tx.execute(f"SELECT 1 AS one FROM {p}services")  # sends the UPDATE with it
            tx.execute(f"UPDATE {p}services SET version = 42 WHERE service_id = ?", ("s",))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        half_done()
    _idle_on(pg, pid)
    assert pg.get("s") == lease.service


def test_a_failing_write_sent_with_the_commit_fails_the_call_and_writes_nothing(
    pg: PostgresStore, pg_store_url: str
) -> None:
    lease = _leased(pg)
    pid = pg._conns.get().conn.info.backend_pid
    writes = pg.write_count
    base = pg_store_url.partition("?")[0]
    with psycopg.connect(base, autocommit=True) as raw:  # history row 1 is taken already
        raw.execute(
            f'INSERT INTO "{pg.schema}".transitions (service_id, version, from_state, '
            "to_state, epoch, worker, at, detail_json) VALUES ('s', 1, 'a', 'b', 1, 'w', 0, '{}')"
        )
    with pytest.raises(StoreError, match="transitions_pkey") as failed:
        pg.transition(lease, expected_state="pending", expected_version=0, new_state="x")
    assert isinstance(failed.value.__cause__, psycopg.errors.UniqueViolation)
    _idle_on(pg, pid)
    assert pg.get("s") == lease.service  # the row update in the same statement rolled back
    assert pg.write_count == writes
    assert [m.kind for m in pg.claim_outbox("relay", 30)] == []


VALUES: list[Any] = [
    'it\'s a "quote"',
    "back\\slash \\x00 and E'\\''",
    "'); DROP TABLE services; --",
    "ünïcødé ✓ 𝄞",
    '{"json": ["text", 1.5, null, true], "nested": {"q": "\'"}}',
    "",
    "100% %s %(x)s ? $1 $$",
    0.1,
    1 / 3,
    -1.5,
    1e-300,
    1700000000.123456,
    math.inf,
    -math.inf,
    0,
    -5,
    2**62,
    True,
    False,
    None,
    b"\x00\xff'\\",
]


def test_values_come_back_unchanged(pg: PostgresStore) -> None:
    marks = ", ".join(f"? AS v{i}" for i in range(len(VALUES)))
    for _ in range(2):  # prepared on first use, then executed again
        with pg._transaction(write=False) as tx:
            [row] = tx.execute(f"SELECT {marks}", VALUES)
        assert list(row.values()) == VALUES
        assert all(type(a) is type(b) for a, b in zip(row.values(), VALUES, strict=True))
    with pg._transaction(write=False) as tx:
        [nan] = tx.execute("SELECT ? AS v", [math.nan])
    assert math.isnan(nan["v"])
    with pg._transaction(write=True) as tx:  # DDL: sent unnamed, with its parameters
        tx.execute("CREATE TEMP TABLE unnamed_bound ON COMMIT DROP AS SELECT ? AS a", [VALUES[1]])
        assert tx.execute("SELECT a FROM unnamed_bound") == [{"a": VALUES[1]}]


def test_a_spec_full_of_quotes_round_trips_through_the_store(pg: PostgresStore) -> None:
    spec = {f"k{i}": v for i, v in enumerate(VALUES) if not isinstance(v, (bytes, float))}
    created, _ = pg.create_service("s", spec, state="pending", desired="active")
    assert pg.get("s") == created
    assert pg.services() == [created]


def test_parameters_keep_the_types_server_side_binding_gave_them(pg: PostgresStore) -> None:
    # A float compared with an integer column stays a float comparison: 1.5 is no id.
    p = f'"{pg.schema}".'
    with pg._transaction(write=True) as tx:
        for kind in ("a", "b"):
            tx.execute(
                f"INSERT INTO {p}tasks (department, service_id, kind, reason, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                ("ops", "s", kind, "r", 0.0),
            )
    with pg._transaction(write=False) as tx:
        assert tx.execute(f"SELECT id FROM {p}tasks WHERE id = ?", (1.5,)) == []
        assert tx.execute(f"SELECT id FROM {p}tasks WHERE id = ?", (2,)) == [{"id": 2}]


def test_a_statement_the_server_refuses_stays_refused_and_harmless(pg: PostgresStore) -> None:
    pid = pg._conns.get().conn.info.backend_pid

    def run(sql: str, params: tuple[Any, ...]) -> None:
        with pg._transaction(write=False) as tx:
            tx.execute(sql, params)

    for _ in range(2):  # a failed PREPARE is not remembered as prepared
        with pytest.raises(StoreError, match="no_such_column"):
            run(f'SELECT no_such_column FROM "{pg.schema}".services WHERE 1 = ?', (1,))
    with pytest.raises(StoreError, match="placeholders"):
        run("SELECT ? AS a", (1, 2))
    _idle_on(pg, pid)
    assert pg.get("s") is None


def test_the_prepared_statements_per_connection_are_bounded(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_module, "_MAX_PREPARED", 3)
    for n in range(12):
        with pg._transaction(write=True) as tx:
            assert tx.execute(f"SELECT ? + {n} AS v", (1,)) == [{"v": 1 + n}]
            assert tx.execute(f"SELECT ? + {n} AS v", (2,)) == [{"v": 2 + n}]
    with pg._transaction(write=False) as tx:
        named = tx.execute("SELECT name FROM pg_prepared_statements")
    # The three kept and this query's own; the eviction it causes runs after it.
    assert len(named) == 4


def test_a_connection_lost_mid_transaction_fails_the_call_then_reconnects(
    pg: PostgresStore, pg_url: str
) -> None:
    lease = _leased(pg)
    pid = pg._conns.get().conn.info.backend_pid
    p = f'"{pg.schema}".'

    def cut_off() -> None:
        with pg._transaction(write=True) as tx:
            tx.execute(f"SELECT * FROM {p}services WHERE service_id = ? FOR UPDATE", ("s",))
            tx.execute(f"UPDATE {p}services SET version = 41 WHERE service_id = ?", ("s",))
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            tx.execute(f"SELECT 1 AS one FROM {p}services")

    with pytest.raises(StoreError, match="PostgreSQL error"):
        cut_off()
    assert pg.get("s") == lease.service  # a new connection; nothing was committed
    assert pg._conns.get().conn.info.backend_pid != pid
