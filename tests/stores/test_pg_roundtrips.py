"""PostgreSQL's one-statement reservation: round trips counted, and the cases the
statement decides on its own (free, held by another, held by this service, this service
holding another server, a concurrent reservation committing or aborting first).

The semantics are the contract suite's (``test_contract``, ``test_advance``); these tests
run on the database clock (the production path) and race two real connections.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dci6bridge.errors import StaleState, StoreError
from dci6bridge.stores import (
    Advanced,
    AdvanceRequest,
    Lease,
    Move,
    NewOutbox,
    PostgresStore,
    open_store,
)

from .conftest import FakeClock
from .test_contract import create, lease_of, snapshot

pytestmark = pytest.mark.postgres

import psycopg  # noqa: E402 - the test extra installs it; pg_url fails in CI without it

# lock and clock | reservation and singleton | the other writes and COMMIT
RESERVING_ADVANCE_TRIPS = 3
_WAIT_S = 10.0


@pytest.fixture
def raw(pg_store_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection on the test's schema, outside any store."""
    base, _, query = pg_store_url.partition("?")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{query.split("schema=")[1]}"')
        yield conn


@pytest.fixture
def other(pg_store_url: str, pg: PostgresStore) -> Iterator[PostgresStore]:
    """A second store on ``pg``'s schema: another worker's connection."""
    store = open_store(pg_store_url)
    assert isinstance(store, PostgresStore)
    yield store
    store.close()


def trips(store: PostgresStore, call: Callable[[], Any]) -> tuple[int, Any]:
    """The round trips ``call`` costs this thread's connection, and its answer."""
    session = store._conns.get()
    before = session.round_trips
    answer = call()
    return session.round_trips - before, answer


def leased(store: PostgresStore, *sids: str) -> dict[str, Lease]:
    """Create the services and lease them all to worker ``w``."""
    for sid in sids:
        create(store, sid)
    return {x.service_id: x for x in store.acquire("w", 60, limit=len(sids))}


def reserve(lease: Lease, server_id: int, **kw: Any) -> AdvanceRequest:
    kw.setdefault("moves", [Move("claiming_server", patch={"server_id": server_id})])
    return AdvanceRequest(
        lease, expected_state="pending", expected_version=0, reserve_server=server_id, **kw
    )


def advance(store: PostgresStore, request: AdvanceRequest) -> Advanced:
    (done,) = store.advance_many([request])
    assert isinstance(done, Advanced), done
    return done


def singletons(raw: psycopg.Connection[Any]) -> dict[str, str]:
    return dict(raw.execute("SELECT name, holder FROM singletons").fetchall())


class Call(threading.Thread):
    """``call(store)`` in a thread of its own (so on a connection of its own), its
    backend pid known before the call starts."""

    def __init__(self, store: PostgresStore, call: Callable[[PostgresStore], Any]) -> None:
        super().__init__(daemon=True)
        self._store, self._call = store, call
        self._pid: queue.Queue[int] = queue.Queue()
        self.answer: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        self._pid.put(self._store._conns.get().conn.info.backend_pid)
        try:
            self.answer = self._call(self._store)
        except BaseException as exc:  # handed to the test, which re-raises it
            self.error = exc

    def pid(self) -> int:
        return self._pid.get(timeout=_WAIT_S)

    def result(self) -> Any:
        self.join(timeout=_WAIT_S)
        assert not self.is_alive(), "the call did not finish"
        if self.error is not None:
            raise self.error
        return self.answer


def wait_for_lock(pg_url: str, pid: int) -> None:
    """Until backend ``pid`` waits for a lock."""
    # Autocommit on a connection of its own: a transaction sees one snapshot of the
    # activity view.
    with psycopg.connect(pg_url, autocommit=True) as monitor:
        deadline = time.monotonic() + _WAIT_S
        while time.monotonic() < deadline:
            row = monitor.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.005)
    raise AssertionError(f"backend {pid} never waited for a lock")


# ---------------------------------------------------------------------------- round trips


def test_a_reserving_advance_takes_three_round_trips(pg: PostgresStore) -> None:
    create(pg, "A")
    lease = lease_of(pg, "A")
    spent, done = trips(pg, lambda: advance(pg, reserve(lease, 7, singleton="user:a", renew=30)))
    assert (done.reserved, done.singleton, done.service.server_id) == (True, True, 7)
    assert spent == RESERVING_ADVANCE_TRIPS, "the reservation costs one round trip, no more"
    assert pg.server_claims() == {7: "A"}
    assert pg.history("A")[-1].to_state == "claiming_server"


@pytest.mark.parametrize("with_singleton", [False, True])
def test_the_reservation_path_costs_the_same_on_a_fake_clock(
    pg_store_url: str, with_singleton: bool
) -> None:
    # The lock and the clock are two statements here, but the clock is no round trip.
    store = open_store(pg_store_url, clock=FakeClock())
    assert isinstance(store, PostgresStore)
    create(store, "A")
    lease = lease_of(store, "A")
    singleton = "user:a" if with_singleton else None
    spent, done = trips(store, lambda: advance(store, reserve(lease, 7, singleton=singleton)))
    store.close()
    assert (done.reserved, done.singleton) == (True, True if with_singleton else None)
    assert spent == RESERVING_ADVANCE_TRIPS


def test_two_leases_in_one_advance_many_lock_and_read_the_clock_in_one_round_trip(
    pg: PostgresStore,
) -> None:
    leases = leased(pg, "A", "B")
    spent, done = trips(
        pg,
        lambda: pg.advance_many(
            [
                AdvanceRequest(leases["A"], "pending", 0, moves=[Move("active")], release=True),
                reserve(leases["B"], 7, singleton="user:b"),
            ]
        ),
    )
    assert [(d.service.state, d.reserved) for d in done] == [
        ("active", None),
        ("claiming_server", True),
    ]
    assert spent == RESERVING_ADVANCE_TRIPS
    assert done[0].service.updated_at == done[1].service.updated_at


def test_the_clock_of_several_locks_is_read_once_all_are_held(
    pg: PostgresStore, raw: psycopg.Connection[Any], pg_url: str
) -> None:
    leases = leased(pg, "A", "B")
    raw.execute("BEGIN")
    raw.execute("SELECT 1 FROM services WHERE service_id = 'B' FOR UPDATE")
    both = Call(
        pg,
        lambda s: s.advance_many(
            [AdvanceRequest(leases[sid], "pending", 0, moves=[Move("x")]) for sid in "AB"]
        ),
    )
    both.start()
    wait_for_lock(pg_url, both.pid())  # A is locked, B is awaited
    time.sleep(0.05)
    [(released,)] = raw.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
    raw.execute("COMMIT")
    done = both.result()
    assert {d.service.updated_at for d in done} == {done[0].service.updated_at}
    assert done[0].service.updated_at >= released, "the clock was read before B was ours"


def test_reserve_server_takes_three_round_trips_and_counts_one_write(pg: PostgresStore) -> None:
    create(pg, "A")
    lease = lease_of(pg, "A")
    writes = pg.write_count
    assert trips(pg, lambda: pg.reserve_server(lease, 7)) == (3, True)
    assert pg.write_count == writes + 1
    assert trips(pg, lambda: pg.reserve_server(lease, 7)) == (3, True)
    assert pg.write_count == writes + 1, "reserving one's own server again changes nothing"


def test_a_refused_reservation_costs_no_more_and_writes_nothing(
    pg: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    leases = leased(pg, "A", "B")
    assert pg.reserve_server(leases["A"], 7)
    before, writes = snapshot(pg, "B"), pg.write_count
    spent, done = trips(pg, lambda: advance(pg, reserve(leases["B"], 7, singleton="user:b")))
    assert (done.reserved, done.singleton) == (False, None)
    assert done.service == before[0]
    assert spent == RESERVING_ADVANCE_TRIPS
    assert (snapshot(pg, "B"), pg.write_count) == (before, writes)
    assert "user:b" not in singletons(raw)


# ---------------------------------------------------------------------------- decisions


def test_re_reserving_its_own_server_is_true_and_keeps_the_claim(
    pg: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    create(pg, "A")
    lease = lease_of(pg, "A")
    assert pg.reserve_server(lease, 7)
    [(claimed_at,)] = raw.execute("SELECT claimed_at FROM server_claims").fetchall()
    done = advance(pg, reserve(lease, 7, singleton="user:a"))
    assert (done.reserved, done.singleton, done.service.version) == (True, True, 1)
    claims = raw.execute("SELECT server_id, service_id, claimed_at FROM server_claims")
    assert claims.fetchall() == [(7, "A", claimed_at)]
    assert singletons(raw) == {"user:a": "w1:A"}


def test_a_service_holding_another_server_is_stale_and_its_request_writes_nothing(
    pg: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    leases = leased(pg, "A", "B")
    assert pg.reserve_server(leases["A"], 7)
    before, claims = snapshot(pg, "A"), pg.server_claims()
    stale, fine = pg.advance_many(
        [
            reserve(leases["A"], 8, singleton="user:a"),
            AdvanceRequest(leases["B"], "pending", 0, moves=[Move("selecting_module")]),
        ]
    )
    assert isinstance(stale, StaleState)
    assert "already holds server 7" in str(stale)
    assert isinstance(fine, Advanced)
    assert fine.service.state == "selecting_module"
    assert snapshot(pg, "A") == before
    assert pg.server_claims() == claims == {7: "A"}
    assert singletons(raw) == {}
    with pytest.raises(StaleState, match="release it before reserving server 8"):
        pg.reserve_server(leases["A"], 8)


def test_held_by_another_wins_over_holding_another(pg: PostgresStore) -> None:
    # The shared path asks "who holds the server" first: a server held elsewhere is a
    # plain refusal even for a service that holds a server of its own.
    leases = leased(pg, "A", "B")
    assert pg.reserve_server(leases["A"], 7)
    assert pg.reserve_server(leases["B"], 8)
    assert pg.reserve_server(leases["B"], 7) is False
    assert advance(pg, reserve(leases["B"], 7)).reserved is False


def test_a_refused_singleton_does_not_stop_the_reservation(
    pg: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    assert pg.try_singleton("user:x", "someone", 60)
    create(pg, "A")
    lease = lease_of(pg, "A")
    done = advance(pg, reserve(lease, 7, singleton="user:x"))
    assert (done.reserved, done.singleton) == (True, False)
    assert (done.service.state, done.service.server_id) == ("claiming_server", 7)
    assert pg.get("A") == done.service
    assert pg.server_claims() == {7: "A"}
    assert singletons(raw) == {"user:x": "someone"}


# ---------------------------------------------------------------------------- races


def _race(
    pg: PostgresStore, other: PostgresStore, raw: psycopg.Connection[Any], pg_url: str
) -> Any:
    """A reserves server 7 and stops inside its transaction, the claim inserted but not
    committed (its singleton upsert waits for a row ``raw`` holds); then B, on another
    connection, reserves server 7 too and waits for A's claim. Returns the two calls,
    both waiting, and A's connection's pid; ``raw`` is in a transaction to end."""
    leases = leased(pg, "A", "B")
    raw.execute("INSERT INTO singletons (name, holder, held_until) VALUES ('user:a', 'x', 0)")
    raw.execute("BEGIN")
    raw.execute("SELECT * FROM singletons WHERE name = 'user:a' FOR UPDATE")
    first = Call(pg, lambda s: advance(s, reserve(leases["A"], 7, singleton="user:a")))
    first.start()
    first_pid = first.pid()
    wait_for_lock(pg_url, first_pid)
    second = Call(other, lambda s: advance(s, reserve(leases["B"], 7, singleton="user:b")))
    second.start()
    wait_for_lock(pg_url, second.pid())
    return first, second, first_pid


def test_of_two_concurrent_reservations_the_first_to_commit_wins(
    pg: PostgresStore, other: PostgresStore, raw: psycopg.Connection[Any], pg_url: str
) -> None:
    first, second, _ = _race(pg, other, raw, pg_url)
    before = snapshot(pg, "B")
    writes = other.write_count
    raw.execute("COMMIT")
    won, lost = first.result(), second.result()
    assert (won.reserved, won.singleton) == (True, True)
    assert (lost.reserved, lost.singleton) == (False, None)
    assert lost.service == before[0]
    assert pg.server_claims() == {7: "A"}
    assert snapshot(pg, "B")[:2] == before[:2], "the loser wrote nothing"
    assert other.write_count == writes
    assert singletons(raw) == {"user:a": "w:A"}


def test_a_concurrent_reservation_that_aborts_leaves_the_server_to_the_waiting_one(
    pg: PostgresStore, other: PostgresStore, raw: psycopg.Connection[Any], pg_url: str
) -> None:
    first, second, first_pid = _race(pg, other, raw, pg_url)
    raw.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
    won = second.result()
    raw.execute("ROLLBACK")
    with pytest.raises(StoreError, match="PostgreSQL error"):
        first.result()
    assert (won.reserved, won.singleton, won.service.state) == (True, True, "claiming_server")
    assert pg.server_claims() == {7: "B"}
    assert singletons(raw) == {"user:a": "x", "user:b": "w:B"}
    a = pg.get("A")
    assert a is not None
    assert (a.version, a.state) == (0, "pending"), "A wrote nothing"


def test_the_reservations_of_a_whole_batch_take_one_round_trip(
    pg: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    # Eight reserving requests (the worker's lockstep batch) cost what one does; their
    # statements still run in order (by server id): C asks for B's server after B got it, D
    # holds another server already, E takes a singleton without reserving.
    leases = leased(pg, "A", "B", "C", "D", "E", "F", "G", "H")
    assert pg.reserve_server(leases["D"], 40)
    requests = [
        reserve(leases["A"], 10, singleton="user:a"),
        reserve(leases["B"], 11, singleton="user:shared"),
        reserve(leases["C"], 11, singleton="user:c"),
        reserve(leases["D"], 12),
        AdvanceRequest(leases["E"], "pending", 0, moves=[Move("x")], singleton="user:shared"),
        reserve(leases["F"], 13),
        reserve(leases["G"], 14, singleton="user:g"),
        reserve(leases["H"], 15),
    ]
    spent, done = trips(pg, lambda: pg.advance_many(requests))
    assert spent == RESERVING_ADVANCE_TRIPS
    a, b, c, d, e, f, g, h = done
    assert isinstance(d, StaleState)
    assert all(isinstance(x, Advanced) for x in (a, b, c, e, f, g, h))
    answers = [(x.reserved, x.singleton) for x in (a, b, c, e, f, g, h) if isinstance(x, Advanced)]
    assert answers == [
        (True, True),
        (True, True),
        (False, None),  # B holds 11: nothing of C written, its singleton not taken
        (None, False),  # B holds user:shared
        (True, None),
        (True, True),
        (True, None),
    ]
    assert pg.server_claims() == {10: "A", 11: "B", 13: "F", 14: "G", 15: "H", 40: "D"}
    assert singletons(raw) == {"user:a": "w:A", "user:shared": "w:B", "user:g": "w:G"}
    assert pg.history("C") == pg.history("D") == []
    assert [t.to_state for t in pg.history("E")] == ["x"]


# ---------------------------------------------------------------------------- acquire


def test_acquire_on_the_database_clock_takes_one_round_trip(
    pg: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    """The clock is read inside the claim, which commits on its own: one round trip,
    one counted write, the same leases as the shared path."""
    for sid in ("a", "b", "c"):
        create(pg, sid)
    raw.execute("UPDATE services SET not_before = not_before - 5 WHERE service_id = 'c'")
    writes = pg.write_count
    (db_now,) = raw.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    n, got = trips(pg, lambda: pg.acquire("w", 30, limit=2))
    assert n == 1
    assert pg.write_count == writes + 1
    assert [x.service_id for x in got] == ["c", "a"], "by not_before, then id"
    for lease in got:
        assert lease.worker_id == "w"
        assert lease.epoch == 1
        assert db_now + 30 <= lease.until < db_now + 30 + 5
        assert lease.service.lease_until == lease.until
    rows = dict(raw.execute("SELECT service_id, lease_owner FROM services").fetchall())
    assert rows == {"a": "w", "b": None, "c": "w"}
    # the leased ones are skipped; an empty claim writes nothing
    n, (last,) = trips(pg, lambda: pg.acquire("v", 30, limit=5))
    assert (n, last.service_id, last.epoch) == (1, "b", 1)
    writes = pg.write_count
    assert trips(pg, lambda: pg.acquire("v", 30, limit=5)) == (1, [])
    assert pg.write_count == writes


# ---------------------------------------------------------------------------- outbox


def test_the_event_relay_claims_and_acks_in_one_round_trip_each(
    pg: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    """Claim and ack read the clock inside their statement, which commits on its own:
    one round trip and one counted write each, the same answers as the shared path."""
    leases = leased(pg, "a", "b")
    for sid in ("a", "b"):
        pg.advance(
            leases[sid],
            moves=[Move("active", outbox=[NewOutbox("activated", {"n": sid})])],
            expected_state="pending",
            expected_version=0,
        )
    writes = pg.write_count
    (db_now,) = raw.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    n, got = trips(pg, lambda: pg.claim_outbox("w", 30, limit=10))
    assert n == 1
    assert pg.write_count == writes + 1
    assert [(m.service_id, m.kind, m.payload) for m in got] == [
        ("a", "activated", {"n": "a"}),
        ("b", "activated", {"n": "b"}),
    ]
    leased_until = raw.execute("SELECT lease_owner, lease_until FROM outbox").fetchall()
    for owner, until in leased_until:
        assert owner == "w"
        assert db_now + 30 <= until < db_now + 30 + 5
    # claimed: nobody else gets them, and an empty claim writes nothing
    writes = pg.write_count
    assert trips(pg, lambda: pg.claim_outbox("v", 30, limit=10)) == (1, [])
    assert pg.write_count == writes
    n, _ = trips(pg, lambda: pg.ack_outbox([got[0].id, 10_000]))
    assert n == 1
    assert pg.write_count == writes + 1
    rows = raw.execute("SELECT id, delivered_at, lease_owner FROM outbox ORDER BY id").fetchall()
    (first_id, delivered, owner), (_, not_yet, still) = rows
    assert first_id == got[0].id
    assert delivered is not None
    assert delivered >= db_now
    assert owner is None
    assert (not_yet, still) == (None, "w")
    # acked again: nothing changes, nothing is counted
    assert trips(pg, lambda: pg.ack_outbox([got[0].id])) == (1, None)
    assert pg.write_count == writes + 1
