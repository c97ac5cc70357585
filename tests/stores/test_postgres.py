"""PostgreSQL-only guarantees: DB clock, SKIP LOCKED claims, reconnects, the partial index."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from dci6bridge.errors import LeaseLost, ServiceNotFound, StaleState, StoreError
from dci6bridge.stores import Advanced, AdvanceRequest, Move, NewOutbox, PostgresStore, open_store
from dci6bridge.stores import postgres as postgres_module

pytestmark = pytest.mark.postgres

import psycopg  # noqa: E402 - the test extra installs it; pg_url fails in CI without it


def _raw(pg_store_url: str) -> psycopg.Connection:
    base, _, query = pg_store_url.partition("?")
    conn = psycopg.connect(base, autocommit=True)
    conn.execute(f'SET search_path TO "{query.split("schema=")[1]}"')
    return conn


def test_leases_use_the_database_clock_by_default(pg: PostgresStore) -> None:
    before = time.time()
    db_now = pg.now()
    assert abs(db_now - before) < 5
    pg.create_service("s", {}, state="pending", desired="active")
    [lease] = pg.acquire("w", 60)
    assert 59 < lease.until - db_now < 65


def test_fenced_writes_on_the_database_clock(pg: PostgresStore, pg_store_url: str) -> None:
    # The lock and the clock are read by one statement here (the fake-clock contract
    # tests take the other path): same results, same refusals, nothing half-written.
    pg.create_service("s", {}, state="pending", desired="active")
    [lease] = pg.acquire("w1", 60)
    started = time.time()
    row = pg.transition(
        lease,
        expected_state="pending",
        expected_version=0,
        new_state="selecting_module",
        outbox=[NewOutbox("a"), NewOutbox("b")],
    )
    assert (row.version, row.lease_owner) == (1, "w1")
    assert abs(row.updated_at - started) < 5
    [hist] = pg.history("s")
    assert (hist.to_state, hist.at) == ("selecting_module", row.updated_at)
    assert [m.kind for m in pg.claim_outbox("relay", 30)] == ["a", "b"]
    assert pg.checkpoint(lease, expected_version=1, patch={"module": "m"}).module == "m"
    assert pg.reserve_server(lease, 7)
    pg.release_server(lease, 7)
    lease = pg.renew(lease, 60)
    writes = pg.write_count
    with pytest.raises(StaleState):
        pg.transition(lease, expected_state="pending", expected_version=1, new_state="x")
    with pytest.raises(ServiceNotFound):
        pg.transition(
            attrs.evolve(lease, service_id="ghost"),
            expected_state="pending",
            expected_version=0,
            new_state="x",
        )
    with _raw(pg_store_url) as raw:  # the lease expires by the database's clock
        raw.execute("UPDATE services SET lease_until = lease_until - 120")
    with pytest.raises(LeaseLost, match="expired"):
        pg.transition(lease, expected_state="selecting_module", expected_version=1, new_state="x")
    pg.release(lease, error="late")  # a lost lease: ignored
    assert pg.write_count == writes
    [again] = pg.acquire("w2", 60)
    done = pg.transition(
        again,
        expected_state="selecting_module",
        expected_version=1,
        new_state="active",
        release=True,
    )
    assert (done.version, done.lease_owner, done.lease_epoch) == (2, None, 2)
    assert pg.get("s") == done
    assert [h.version for h in pg.history("s")] == [1, 2]


def test_acquire_skips_rows_locked_by_others_instead_of_waiting(
    pg: PostgresStore, pg_store_url: str
) -> None:
    for sid in ("a", "b"):
        pg.create_service(sid, {}, state="pending", desired="active")
    with _raw(pg_store_url) as other:
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM services WHERE service_id = 'a' FOR UPDATE")
        started = time.monotonic()
        leases = pg.acquire("w", 60, limit=2)
        assert time.monotonic() - started < 2
        assert [x.service_id for x in leases] == ["b"]
        other.execute("ROLLBACK")
    assert [x.service_id for x in pg.acquire("w", 60, limit=2)] == ["a"]


def test_concurrent_acquire_never_hands_a_service_out_twice(pg_store_url: str) -> None:
    setup = open_store(pg_store_url)
    for n in range(120):
        setup.create_service(f"s{n:03d}", {}, state="pending", desired="active")
    store = open_store(pg_store_url)  # one store, one connection per thread
    got: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(name: str) -> None:
        start.wait(timeout=10)
        while True:
            leases = store.acquire(name, 300, limit=3)
            if not leases:
                return
            with lock:
                got.extend(x.service_id for x in leases)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    counts = Counter(got)
    assert len(counts) == 120
    assert max(counts.values()) == 1
    assert {s.lease_epoch for s in setup.services()} == {1}
    setup.close()
    store.close()


def test_a_killed_connection_fails_one_call_then_reconnects(
    pg: PostgresStore, pg_store_url: str
) -> None:
    pg.create_service("s", {}, state="pending", desired="active")
    pid = pg._conns.get().conn.info.backend_pid
    with _raw(pg_store_url) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreError, match="PostgreSQL error"):
        pg.get("s")
    assert pg.get("s") is not None
    assert pg._conns.get().conn.info.backend_pid != pid


def test_the_runnable_partial_index_serves_the_claim(pg: PostgresStore, pg_store_url: str) -> None:
    with _raw(pg_store_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT service_id FROM services WHERE runnable = true "
                "AND not_before <= 1 AND (lease_owner IS NULL OR lease_until <= 1) "
                "ORDER BY not_before, service_id LIMIT 5 FOR UPDATE SKIP LOCKED"
            ).fetchall()
        )
    assert "services_runnable" in plan


def test_transactions_run_read_committed(pg: PostgresStore, pg_url: str) -> None:
    # Whatever the server's default: the store's BEGIN names the level.
    options = "options=-c%20default_transaction_isolation%3Dserializable"
    store = PostgresStore(f"{pg_url}{'&' if '?' in pg_url else '?'}{options}", schema=pg.schema)
    with store._transaction(write=True) as tx:
        level = tx.execute("SHOW transaction_isolation")
        default = tx.execute("SHOW default_transaction_isolation")
    store.close()
    assert level == [{"transaction_isolation": "read committed"}]
    assert default == [{"default_transaction_isolation": "serializable"}]


def _reserving(lease: Any, server: int) -> AdvanceRequest:
    return AdvanceRequest(
        lease,
        expected_state="pending",
        expected_version=0,
        moves=[Move("claiming_server", {"server_id": server})],
        reserve_server=server,
    )


def _at_once(calls: list[Callable[[], list[Any]]]) -> list[list[Any] | BaseException]:
    """Run ``calls`` in threads released at the same moment; their results or errors."""
    gate = threading.Barrier(len(calls))
    results: list[list[Any] | BaseException] = [[] for _ in calls]

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_batches_reserving_in_opposite_orders_do_not_deadlock(
    pg_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers' batches want the same two servers, in opposite request orders, at
    the same moment, 40 times: the claims are taken by server id, so neither waits for
    the other's second claim while holding its first (that deadlock cost a second, then
    an error). Each server goes to exactly one service. (The rerun of a batch rolled
    back for a deadlock is off here: a deadlock fails the test.)"""
    monkeypatch.setattr(postgres_module, "_DEADLOCK_ATTEMPTS", 1)
    a, b = open_store(pg_store_url), open_store(pg_store_url)
    try:
        for round_ in range(40):
            sids = [f"r{round_}-{n}" for n in range(4)]
            for sid in sids:
                a.create_service(sid, {}, state="pending", desired="active")
            leases = {x.service_id: x for x in a.acquire("w", 60, limit=4)}
            one, two = 2 * round_ + 1, 2 * round_ + 2
            first = [_reserving(leases[sids[0]], one), _reserving(leases[sids[1]], two)]
            second = [_reserving(leases[sids[2]], two), _reserving(leases[sids[3]], one)]
            results = _at_once(
                [
                    functools.partial(a.advance_many, first),
                    functools.partial(b.advance_many, second),
                ]
            )
            batches = [r for r in results if not isinstance(r, BaseException)]
            assert len(batches) == 2, results
            won = [r for batch in batches for r in batch if isinstance(r, Advanced) and r.reserved]
            assert len(won) == 2  # one service per server, none twice
            claims = a.server_claims()
            assert {won[0].service.service_id, won[1].service.service_id} == {
                claims[one],
                claims[two],
            }
    finally:
        a.close()
        b.close()


_CLAIM = "INSERT INTO server_claims (server_id, service_id, claimed_at) VALUES (%s, %s, %s)"


def test_a_batch_the_server_rolls_back_for_a_deadlock_runs_again(pg_store_url: str) -> None:
    """Another session holds server 2's claim and then asks for server 1's, which the
    batch holds while it waits for server 2: a real deadlock. The server rolls the batch
    back (its detector fires first: 1 s against the other session's 10 s); the store
    runs the batch again, which then finds both servers taken and says so, instead of
    failing with "deadlock detected"."""
    store = open_store(pg_store_url)
    other = _raw(pg_store_url)
    try:
        for sid in ("x1", "x2", "i1", "i2"):
            store.create_service(sid, {}, state="pending", desired="active")
        leases = {x.service_id: x for x in store.acquire("w", 60, limit=4)}
        other.execute("SET deadlock_timeout = '10s'")
        other.execute("BEGIN")
        other.execute(_CLAIM, (2, "i2", time.time()))
        outcome: list[Any] = []
        batch = threading.Thread(
            target=lambda: outcome.extend(
                store.advance_many([_reserving(leases["x1"], 1), _reserving(leases["x2"], 2)])
            )
        )
        batch.start()
        time.sleep(0.3)  # the batch holds server 1's claim and waits for server 2's
        # waits for the batch: the cycle the server breaks by rolling the batch back
        other.execute(_CLAIM, (1, "i1", time.time()))
        other.execute("COMMIT")
        batch.join(timeout=30)
        assert not batch.is_alive()
        assert [type(o) for o in outcome] == [Advanced, Advanced]
        assert [o.reserved for o in outcome] == [False, False]
        assert store.server_claims() == {1: "i1", 2: "i2"}
        rows = [store.get(s) for s in ("x1", "x2")]
        assert [r.state for r in rows if r is not None] == ["pending", "pending"]
    finally:
        other.close()
        store.close()
