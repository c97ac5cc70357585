"""``StatusStore.advance``: several fenced writes of one lease in one transaction, run
against every backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from dci6bridge.errors import ConfigError, LeaseLost, StaleState
from dci6bridge.stores import Lease, Move, NewOutbox, NewTask, StatusStore

from .conftest import FakeClock
from .test_contract import create, lease_of, snapshot

MOVES = [
    Move("selecting_module", detail={"tariff": "E3-64"}),
    Move("claiming_server", patch={"module": "dci-ams"}, detail={"module": "dci-ams"}),
    Move(
        "creating_user",
        patch={"server_id": 7, "data": {"since": 1.0}},
        outbox=[NewOutbox("progress", {"step": 3})],
    ),
]


def advance(store: StatusStore, lease: Lease, **kw: Any) -> Any:
    return store.advance(lease, expected_state="pending", expected_version=0, **kw)


def test_moves_write_one_history_row_each_in_one_transaction(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    writes = store.write_count
    done = advance(store, lease, moves=MOVES, patch={"data": {"op": 1}})
    assert store.write_count == writes + 1
    row = done.service
    assert (row.state, row.version, row.module, row.server_id) == ("creating_user", 3, "dci-ams", 7)
    assert row.data == {"since": 1.0, "op": 1}
    assert row == store.get("INV-1")
    history = store.history("INV-1")
    assert [(h.version, h.from_state, h.to_state) for h in history] == [
        (1, "pending", "selecting_module"),
        (2, "selecting_module", "claiming_server"),
        (3, "claiming_server", "creating_user"),
    ]
    assert [h.detail for h in history] == [{"tariff": "E3-64"}, {"module": "dci-ams"}, {}]
    assert {h.epoch for h in history} == {lease.epoch}
    assert [(m.version, m.kind, m.event_id) for m in store.claim_outbox("relay", 10)] == [
        (3, "progress", "INV-1:3:progress")
    ]
    assert (done.reserved, done.singleton) == (None, None)


def test_reservation_singleton_renewal_and_release_ride_along(
    store: StatusStore, clock: FakeClock
) -> None:
    create(store)
    lease = lease_of(store, "INV-1", ttl=10)
    clock.advance(5)
    done = advance(store, lease, moves=MOVES[:1], reserve_server=7, singleton="user:x", renew=30)
    assert (done.reserved, done.singleton) == (True, True)
    assert done.service.lease_until == clock() + 30
    assert store.server_claims() == {7: "INV-1"}
    # held by this service until the lease's (renewed) expiry
    assert not store.try_singleton("user:x", "someone", 60)
    clock.advance(29)
    assert not store.try_singleton("user:x", "someone", 60)
    clock.advance(1)
    assert store.try_singleton("user:x", "someone", 60)
    # a reservation already held by this service is kept; release gives the lease up
    lease = lease_of(store, "INV-1", worker="w2")
    done = store.advance(
        lease,
        expected_state="selecting_module",
        expected_version=1,
        reserve_server=7,
        moves=[Move("claiming_server")],
        release=True,
    )
    assert done.reserved is True
    assert (done.service.lease_owner, done.service.state) == (None, "claiming_server")
    assert store.acquire("w3", 60)[0].service_id == "INV-1"


def test_a_server_held_by_another_service_refuses_the_whole_write(store: StatusStore) -> None:
    create(store, "INV-2")
    other = lease_of(store, "INV-2", worker="w2")
    assert store.reserve_server(other, 7)
    create(store)
    lease = lease_of(store, "INV-1")
    before = snapshot(store)
    writes = store.write_count
    done = advance(store, lease, moves=MOVES, reserve_server=7, singleton="user:y", release=True)
    assert done.reserved is False
    assert done.singleton is None
    assert done.service == before[0]
    assert snapshot(store) == before
    assert store.write_count == writes
    assert store.try_singleton("user:y", "someone", 60), "the singleton was not taken"
    # holding another server is a stale state, as for reserve_server
    assert advance(store, lease, reserve_server=8).reserved is True
    with pytest.raises(StaleState, match="already holds server 8"):
        store.advance(lease, expected_state="pending", expected_version=0, reserve_server=9)


def test_a_singleton_held_elsewhere_does_not_stop_the_rest(store: StatusStore) -> None:
    create(store)
    assert store.try_singleton("user:z", "someone", 60)
    lease = lease_of(store, "INV-1")
    done = advance(store, lease, moves=MOVES[:1], singleton="user:z")
    assert done.singleton is False
    assert done.service.state == "selecting_module"


def test_billing_changing_its_request_makes_the_write_stale(store: StatusStore) -> None:
    """A decision taken on the old request (say "nothing left to do, not runnable")
    must not overwrite billing's newer one."""
    create(store)
    lease = lease_of(store, "INV-1")
    seen = lease.service.desired_seq
    store.request(
        "INV-1",
        "close-1",
        "close",
        {},
        lambda s: {"desired": "closed", "desired_seq": s.desired_seq + 1, "runnable": True},
    )
    before = snapshot(store)
    with pytest.raises(StaleState, match="billing changed its request"):
        advance(
            store,
            lease,
            moves=[Move("selecting_module", patch={"runnable": False})],
            expected_desired_seq=seen,
            release=True,
        )
    assert snapshot(store) == before
    row = store.get("INV-1")
    assert row is not None
    assert (row.desired, row.runnable, row.lease_owner) == ("closed", True, "w1")


def test_fencing_comes_first(store: StatusStore, clock: FakeClock) -> None:
    create(store)
    zombie = lease_of(store, "INV-1", ttl=10)
    clock.advance(10)
    current = lease_of(store, "INV-1", worker="w2")
    before = snapshot(store)
    with pytest.raises(LeaseLost):
        advance(store, zombie, moves=MOVES, reserve_server=7)
    with pytest.raises(StaleState, match="version"):
        store.advance(current, expected_state="pending", expected_version=5, reserve_server=7)
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"moves": "selecting_module"}, "moves"),
        ({"moves": [("selecting_module",)]}, "moves[0]"),
        ({"moves": [Move("a"), Move("")]}, "moves[1].new_state"),
        ({"moves": [Move("a", patch={"colour": 1})]}, "moves[0].patch"),
        ({"moves": [Move("a", task=NewTask("", "k", "r"))]}, "moves[0].task.department"),
        ({"patch": {"attempts": -1}}, "patch.attempts"),
        ({"reserve_server": 0}, "server_id"),
        ({"singleton": ""}, "singleton"),
        ({"renew": -1}, "renew"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    store: StatusStore, kwargs: dict[str, Any], field: str
) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    before = snapshot(store)
    writes = store.write_count
    with pytest.raises(ConfigError) as err:
        advance(store, lease, **{"moves": MOVES[:1], **kwargs})
    assert field in str(err.value)
    assert snapshot(store) == before
    assert store.write_count == writes
