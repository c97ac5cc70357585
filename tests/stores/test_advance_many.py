"""``StatusStore.advance_many``: several leases' writes in one transaction, each fenced and
decided on its own, run against every backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from dci6bridge.errors import ConfigError, LeaseLost, ServiceNotFound, StaleState
from dci6bridge.stores import (
    Advanced,
    AdvanceRequest,
    Lease,
    Move,
    NewOutbox,
    NewTask,
    StatusStore,
)

from .conftest import FakeClock
from .test_contract import create, lease_of, snapshot


def leased(store: StatusStore, *sids: str) -> list[Lease]:
    for sid in sids:
        create(store, sid)
    leases = {lease.service_id: lease for lease in store.acquire("w1", 60, limit=100)}
    return [leases[sid] for sid in sids]


def request(lease: Lease, **kw: Any) -> AdvanceRequest:
    kw.setdefault("expected_state", "pending")
    kw.setdefault("expected_version", 0)
    return AdvanceRequest(lease, **kw)


def test_every_request_is_written_in_one_transaction_in_order(store: StatusStore) -> None:
    a, b = leased(store, "A", "B")
    writes = store.write_count
    done = store.advance_many(
        [
            request(
                a,
                moves=[Move("active", detail={"why": "ok"}, outbox=[NewOutbox("activated", {})])],
                release=True,
            ),
            request(b, moves=[Move("claiming_server")], reserve_server=7, singleton="user:b"),
        ]
    )
    assert store.write_count == writes + 1
    assert all(isinstance(d, Advanced) for d in done)
    first, second = done
    assert isinstance(first, Advanced)
    assert isinstance(second, Advanced)
    assert (first.service.state, first.service.version, first.service.lease_owner) == (
        "active",
        1,
        None,
    )
    assert (second.reserved, second.singleton, second.service.state) == (
        True,
        True,
        "claiming_server",
    )
    assert first.service == store.get("A")
    assert second.service == store.get("B")
    assert store.server_claims() == {7: "B"}
    assert [(h.from_state, h.to_state, h.detail) for h in store.history("A")] == [
        ("pending", "active", {"why": "ok"})
    ]
    assert [m.event_id for m in store.claim_outbox("relay", 10)] == ["A:1:activated"]


def test_a_refused_request_writes_nothing_and_the_others_go_on(
    store: StatusStore, clock: FakeClock
) -> None:
    a, b, c, d = leased(store, "A", "B", "C", "D")
    # C: another worker takes it over after our lease ran out; D: billing changed its request
    create(store, "E")
    e = next(lease for lease in store.acquire("w1", 60, limit=100) if lease.service_id == "E")
    assert store.advance_many([request(e, reserve_server=9)])[0].reserved is True
    before = {sid: snapshot(store, sid) for sid in "BCD"}
    d_row = store.get("D")
    assert d_row is not None
    done = store.advance_many(
        [
            request(a, moves=[Move("selecting_module")]),
            request(b, reserve_server=9),  # held by E: refused, nothing written
            request(c, expected_version=3),  # stale version
            request(d, expected_desired_seq=d_row.desired_seq + 1),  # billing moved on
            request(attrs.evolve(a, service_id="NOPE")),
        ]
    )
    assert isinstance(done[0], Advanced)
    assert done[0].service.state == "selecting_module"
    assert isinstance(done[1], Advanced)
    assert done[1].reserved is False
    assert isinstance(done[2], StaleState)
    assert isinstance(done[3], StaleState)
    assert isinstance(done[4], ServiceNotFound)
    assert {sid: snapshot(store, sid) for sid in "BCD"} == before
    assert store.server_claims() == {9: "E"}
    # a lost lease is refused too, and only that request
    clock.advance(61)
    stolen = lease_of(store, "C", worker="w2")  # w2 takes every expired lease
    create(store, "F")
    (mine,) = store.acquire("w1", 60, limit=100)
    done = store.advance_many([request(c), request(mine, moves=[Move("selecting_module")])])
    assert isinstance(done[0], LeaseLost)
    assert isinstance(done[1], Advanced)
    c_row = store.get("C")
    assert c_row is not None
    assert (c_row.state, c_row.lease_owner, c_row.lease_epoch) == ("pending", "w2", stolen.epoch)


def test_only_refusals_is_no_write(store: StatusStore) -> None:
    (a,) = leased(store, "A")
    writes = store.write_count
    done = store.advance_many([request(a, expected_version=5)])
    assert isinstance(done[0], StaleState)
    assert store.write_count == writes
    assert store.advance_many([]) == []
    assert store.write_count == writes


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ("nope", "requests: expected a sequence of AdvanceRequest"),
        ([{"lease": 1}], "requests[0]: expected an AdvanceRequest"),
        (
            lambda a, b: [request(a), request(b, patch={"server_id": "seven"})],
            "requests[1].patch.server_id: expected an int",
        ),
        (
            lambda a, b: [request(a, moves=[Move("x", task=NewTask("", "k", "r"))])],
            "requests[0].moves[0].task.department",
        ),
        (lambda a, b: [request(a, renew=-1)], "requests[0].renew: must be above 0"),
        (lambda a, b: [request(a), request(a)], "requests[1]: service 'A' appears twice"),
        (lambda a, b: [request(a), AdvanceRequest("A", "pending", 0)], "requests[1].lease"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_names_the_request_and_field_and_writes_nothing(
    store: StatusStore, requests: Any, message: str
) -> None:
    a, b = leased(store, "A", "B")
    before = (snapshot(store, "A"), snapshot(store, "B"), store.write_count)
    given = requests(a, b) if callable(requests) else requests
    with pytest.raises(ConfigError) as caught:
        store.advance_many(given)
    assert message in str(caught.value)
    assert (snapshot(store, "A"), snapshot(store, "B"), store.write_count) == before


def test_advance_is_the_one_request_case(store: StatusStore) -> None:
    (a,) = leased(store, "A")
    with pytest.raises(StaleState):
        store.advance(a, expected_state="pending", expected_version=4)
    done = store.advance(a, expected_state="pending", expected_version=0, moves=[Move("x")])
    assert (done.service.state, done.service.version) == ("x", 1)


def test_takes_follow_server_ids_and_every_store_answers_alike(store: StatusStore) -> None:
    """Reservations are taken by server id (the order that keeps concurrent batches from
    deadlocking), singletons asked for alone after them; rows are still written in
    request order. So here D (server 5) takes the shared singleton before B (server 9),
    and A, asking for it alone, comes last, though A and B come first in the batch; C
    wants B's server after B got it."""
    a, b, c, d = leased(store, "A", "B", "C", "D")
    done = store.advance_many(
        [
            request(a, moves=[Move("selecting_module")], singleton="user:shared"),
            request(b, moves=[Move("claiming_server")], reserve_server=9, singleton="user:shared"),
            request(c, moves=[Move("claiming_server")], reserve_server=9),
            request(d, moves=[Move("claiming_server")], reserve_server=5, singleton="user:shared"),
        ]
    )
    answers = [(o.reserved, o.singleton) for o in done if isinstance(o, Advanced)]
    assert answers == [(None, False), (True, False), (False, None), (True, True)]
    assert dict(store.server_claims()) == {5: "D", 9: "B"}
    # C's refused reservation wrote nothing; the others moved
    refused = store.get("C")
    assert refused is not None
    assert (refused.version, store.history("C")) == (0, [])
    assert [len(store.history(s)) for s in ("A", "B", "D")] == [1, 1, 1]
