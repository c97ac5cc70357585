"""The StatusStore contract, run against every backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from dci6bridge import Secret
from dci6bridge.errors import (
    ConfigError,
    InvalidRequest,
    LeaseLost,
    ServiceNotFound,
    SpecMismatch,
    StaleState,
    StoreError,
    TaskNotFound,
)
from dci6bridge.stores import Lease, NewOutbox, NewTask, StatusStore, StoredService

from .conftest import T0, FakeClock

SPEC = {"tariff": "E3-64", "os_template": "Ubuntu 22.04", "customer_email": "j@example.com"}
TASK = NewTask(department="Support", kind="no_free_server", reason="no E3-64 in Amsterdam")


def create(store: StatusStore, sid: str = "INV-1", spec: Mapping[str, Any] = SPEC) -> StoredService:
    service, created = store.create_service(sid, spec, state="pending", desired="active")
    assert created
    return service


def lease_of(store: StatusStore, sid: str, worker: str = "w1", ttl: float = 60) -> Lease:
    """The lease of ``sid`` (every other runnable service gets leased to ``worker`` too)."""
    for lease in store.acquire(worker, ttl, limit=100):
        if lease.service_id == sid:
            return lease
    raise AssertionError(f"{sid} was not acquirable")


def step(store: StatusStore, lease: Lease, new_state: str, **kw: Any) -> StoredService:
    current = store.get(lease.service_id)
    assert current is not None
    return store.transition(
        lease,
        expected_state=current.state,
        expected_version=current.version,
        new_state=new_state,
        **kw,
    )


def snapshot(store: StatusStore, sid: str = "INV-1") -> tuple[Any, ...]:
    """Everything a write could touch, to prove a failed write changed nothing."""
    return (
        store.get(sid),
        store.history(sid),
        dict(store.server_claims()),
        store.tasks(include_resolved=True),
    )


# ---------------------------------------------------------------------------- create


def test_create_inserts_once_and_returns_the_existing_row(store: StatusStore) -> None:
    service = create(store)
    assert (service.version, service.state, service.desired) == (0, "pending", "active")
    assert service.runnable
    assert service.lease_owner is None
    assert service.lease_epoch == 0
    assert service.spec == SPEC
    assert service.data == {}
    assert (service.created_at, service.not_before) == (T0, T0)
    assert store.history("INV-1") == []
    again, created = store.create_service(
        "INV-1", dict(reversed(list(SPEC.items()))), state="pending", desired="active"
    )
    assert not created
    assert again == service


def test_create_with_another_spec_raises_spec_mismatch_and_keeps_the_row(
    store: StatusStore,
) -> None:
    service = create(store)
    with pytest.raises(SpecMismatch, match="INV-1"):
        store.create_service("INV-1", {**SPEC, "tariff": "E5"}, state="pending", desired="active")
    assert store.get("INV-1") == service


@pytest.mark.parametrize(
    ("sid", "spec", "field"),
    [
        ("", SPEC, "service_id"),
        (42, SPEC, "service_id"),
        ("INV-1", ["not", "a", "mapping"], "spec"),
        ("INV-1", {"when": {1, 2}}, "spec"),
        ("INV-1", {"password": Secret("hunter2")}, "spec"),
        ("INV-1", {1: "int key"}, "spec"),
        ("INV-1", {"x": float("nan")}, "spec"),
    ],
)
def test_create_rejects_bad_input_naming_the_field(
    store: StatusStore, sid: Any, spec: Any, field: str
) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        store.create_service(sid, spec, state="pending", desired="active")
    assert "hunter2" not in str(err.value)
    assert store.services() == []


def test_reads_get_services_history(store: StatusStore) -> None:
    assert store.get("nope") is None
    assert store.history("nope") == []
    for sid in ("b", "a", "c"):
        create(store, sid)
    assert [s.service_id for s in store.services()] == ["a", "b", "c"]
    assert store.services([]) == []
    lease = lease_of(store, "b")
    step(store, lease, "selecting_module")
    assert [s.service_id for s in store.services(["selecting_module"])] == ["b"]
    assert [s.service_id for s in store.services(["pending", "x"])] == ["a", "c"]


# ---------------------------------------------------------------------------- request


def _suspend(service: StoredService) -> Mapping[str, Any]:
    if service.desired == "terminated":
        raise InvalidRequest("closed")
    return {"desired": "suspended", "desired_seq": service.desired_seq + 1}


def test_request_applies_once_per_request_id(store: StatusStore) -> None:
    create(store)
    calls: list[str] = []

    def decide(service: StoredService) -> Mapping[str, Any]:
        calls.append(service.desired)
        return _suspend(service)

    service, applied = store.request("INV-1", "r1", "suspend", {"why": "unpaid"}, decide)
    assert applied
    assert service.desired == "suspended"
    assert service.desired_seq == 1
    assert service.version == 0, "a request changes desired only, never the state version"
    again, applied = store.request("INV-1", "r1", "suspend", {"why": "unpaid"}, decide)
    assert not applied
    assert again == service
    assert calls == ["active"], "a seen request must not call decide again"
    assert store.get("INV-1") == service


@pytest.mark.parametrize(
    ("action", "params"), [("suspend", {"why": "other"}), ("close", {"why": "unpaid"})]
)
def test_request_id_reused_with_other_content_raises(
    store: StatusStore, action: str, params: dict[str, Any]
) -> None:
    create(store)
    store.request("INV-1", "r1", "suspend", {"why": "unpaid"}, _suspend)
    before = snapshot(store)
    with pytest.raises(SpecMismatch, match="r1"):
        store.request("INV-1", "r1", action, params, _suspend)
    assert snapshot(store) == before


def test_request_whose_decide_raises_writes_nothing(store: StatusStore) -> None:
    create(store)
    writes = store.write_count

    def refuse(service: StoredService) -> Mapping[str, Any]:
        raise InvalidRequest("resume of a closed service")

    before = snapshot(store)
    with pytest.raises(InvalidRequest):
        store.request("INV-1", "r1", "resume", {}, refuse)
    assert snapshot(store) == before
    assert store.write_count == writes
    # the request id was not consumed: a later, valid decision applies
    _, applied = store.request("INV-1", "r1", "resume", {}, lambda s: {"desired": "active"})
    assert applied


def test_request_with_a_bad_patch_writes_nothing(store: StatusStore) -> None:
    create(store)
    before = snapshot(store)
    with pytest.raises(ConfigError, match="state"):
        store.request("INV-1", "r1", "x", {}, lambda s: {"state": "active"})
    with pytest.raises(ConfigError, match=r"patch\.desired_seq"):
        store.request("INV-1", "r2", "x", {}, lambda s: {"desired_seq": "1"})
    assert snapshot(store) == before


def test_request_for_an_unknown_service(store: StatusStore) -> None:
    with pytest.raises(ServiceNotFound) as err:
        store.request("ghost", "r1", "suspend", {}, _suspend)
    assert isinstance(err.value, KeyError)
    assert "ghost" in str(err.value)


# ---------------------------------------------------------------------------- leases


def test_acquire_leases_each_service_once_and_bumps_the_epoch(
    store: StatusStore, clock: FakeClock
) -> None:
    create(store)
    [lease] = store.acquire("w1", 30)
    assert (lease.service_id, lease.worker_id, lease.epoch) == ("INV-1", "w1", 1)
    assert lease.until == T0 + 30
    assert lease.service.lease_owner == "w1"
    assert lease.service.lease_epoch == 1
    assert store.acquire("w2", 30) == []
    clock.advance(29.9)
    assert store.acquire("w2", 30) == []
    clock.advance(0.1)  # expired at exactly lease_until
    [taken] = store.acquire("w2", 30)
    assert (taken.worker_id, taken.epoch) == ("w2", 2)


def test_acquire_respects_runnable_not_before_order_and_limit(
    store: StatusStore, clock: FakeClock
) -> None:
    for sid in ("a", "b", "c", "d"):
        create(store, sid)
    [la, lb, lc] = store.acquire("w1", 10, limit=3)
    assert [la.service_id, lb.service_id, lc.service_id] == ["a", "b", "c"]
    store.release(la, not_before=T0 + 50)
    store.release(lb, not_before=T0 + 20)
    step(store, lc, "idle", patch={"runnable": False})
    store.release(lc)
    assert [x.service_id for x in store.acquire("w2", 10, limit=10)] == ["d"]
    clock.advance(60)
    got = store.acquire("w3", 10, limit=10)
    assert [x.service_id for x in got] == ["d", "b", "a"], "oldest not_before first"


@pytest.mark.parametrize(
    ("args", "field"),
    [(("", 10), "worker_id"), (("w", 0), "ttl_s"), (("w", float("inf")), "ttl_s")],
)
def test_acquire_rejects_bad_arguments(store: StatusStore, args: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        store.acquire(*args)
    with pytest.raises(ConfigError, match="limit"):
        store.acquire("w", 10, limit=0)


def test_renew_extends_a_live_lease_only(store: StatusStore, clock: FakeClock) -> None:
    create(store)
    lease = lease_of(store, "INV-1", ttl=10)
    clock.advance(5)
    renewed = store.renew(lease, 10)
    assert renewed.until == T0 + 15
    assert renewed.epoch == lease.epoch
    assert renewed.service.lease_until == T0 + 15
    clock.advance(15)
    with pytest.raises(LeaseLost, match="expired"):
        store.renew(renewed, 10)
    [other] = store.acquire("w2", 10)
    with pytest.raises(LeaseLost, match="w2"):
        store.renew(renewed, 10)
    assert store.get("INV-1").lease_owner == "w2"  # type: ignore[union-attr]
    assert store.renew(other, 10).until == clock() + 10


def test_release_frees_the_service_and_records_the_outcome(
    store: StatusStore, clock: FakeClock
) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    store.release(lease, not_before=T0 + 30, error="DCImanager 503", count_attempt=True)
    row = store.get("INV-1")
    assert row is not None
    assert (row.lease_owner, row.not_before, row.last_error, row.attempts) == (
        None,
        T0 + 30,
        "DCImanager 503",
        1,
    )
    assert row.lease_epoch == 1, "the epoch never goes back"
    assert store.acquire("w2", 10) == []
    clock.advance(30)
    [again] = store.acquire("w2", 10)
    assert again.epoch == 2
    store.release(again, count_attempt=True)
    assert store.get("INV-1").attempts == 2  # type: ignore[union-attr]


def test_release_of_a_lost_lease_changes_nothing(store: StatusStore, clock: FakeClock) -> None:
    create(store)
    stale = lease_of(store, "INV-1", ttl=10)
    clock.advance(10)
    store.release(stale, error="late")  # expired: ignored
    [current] = store.acquire("w2", 10)
    before = snapshot(store)
    store.release(stale, not_before=T0 + 999, error="zombie", count_attempt=True)
    assert snapshot(store) == before
    assert store.get("INV-1").lease_owner == "w2"  # type: ignore[union-attr]
    assert current.epoch == 2


# ---------------------------------------------------------------------------- transition


def test_transition_writes_row_history_outbox_and_task_together(
    store: StatusStore, clock: FakeClock
) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    clock.advance(1)
    moved = store.transition(
        lease,
        expected_state="pending",
        expected_version=0,
        new_state="failed",
        patch={"failed_from": "pending", "last_error": "no server", "data": {"ips": ["1.2.3.4"]}},
        detail={"reason": "no server", "module": "dci-ams"},
        outbox=[NewOutbox("needs_attention", {"reason": "no server"}), NewOutbox("failed")],
        task=TASK,
    )
    assert (moved.state, moved.version, moved.failed_from) == ("failed", 1, "pending")
    assert moved.data == {"ips": ["1.2.3.4"]}
    assert moved.updated_at == T0 + 1
    assert moved.lease_owner == "w1", "a transition keeps the lease"
    assert store.get("INV-1") == moved
    [hist] = store.history("INV-1")
    assert (hist.version, hist.from_state, hist.to_state, hist.epoch, hist.worker, hist.at) == (
        1,
        "pending",
        "failed",
        1,
        "w1",
        T0 + 1,
    )
    assert hist.detail == {"reason": "no server", "module": "dci-ams"}
    msgs = store.claim_outbox("relay", 30)
    assert [(m.kind, m.version, m.payload) for m in msgs] == [
        ("needs_attention", 1, {"reason": "no server"}),
        ("failed", 1, {}),
    ]
    assert msgs[0].event_id == "INV-1:1:needs_attention"
    [task] = store.tasks()
    assert (task.department, task.service_id, task.kind, task.reason) == (
        "Support",
        "INV-1",
        "no_free_server",
        "no E3-64 in Amsterdam",
    )


def test_transition_chain_and_attempts_reset(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    store.release(lease, count_attempt=True)
    lease = lease_of(store, "INV-1")
    assert lease.service.attempts == 1
    states = ["selecting_module", "claiming_server", "server_claimed", "creating_user"]
    for i, state in enumerate(states):
        row = step(store, lease, state, patch={"attempts": 7} if i == 2 else None)
        assert row.attempts == (7 if i == 2 else 0)
    history = store.history("INV-1")
    assert [h.version for h in history] == [1, 2, 3, 4]
    assert [h.from_state for h in history] == ["pending", *states[:-1]]
    assert [h.to_state for h in history] == states


def test_transition_merges_data_key_by_key(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    step(store, lease, "a", patch={"data": {"x": 1, "y": {"n": 1}, "z": "keep"}})
    row = step(store, lease, "b", patch={"data": {"x": None, "y": {"m": 2}, "new": True}})
    assert row.data == {"y": {"m": 2}, "z": "keep", "new": True}
    assert step(store, lease, "c").data == row.data


def test_transition_keeps_a_request_that_came_in_after_the_lease(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    store.request("INV-1", "r1", "suspend", {}, _suspend)
    row = step(store, lease, "selecting_module", patch={"module": "dci-ams"})
    assert (row.desired, row.desired_seq, row.module) == ("suspended", 1, "dci-ams")


def test_transition_with_a_wrong_state_or_version_is_stale(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    step(store, lease, "selecting_module")
    before = snapshot(store)
    with pytest.raises(StaleState, match="selecting_module"):
        store.transition(lease, expected_state="pending", expected_version=1, new_state="x")
    with pytest.raises(StaleState, match="version 1"):
        store.transition(
            lease, expected_state="selecting_module", expected_version=0, new_state="x"
        )
    assert snapshot(store) == before


def test_transition_with_release_gives_the_lease_up_in_the_same_write(
    store: StatusStore, clock: FakeClock
) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    writes = store.write_count
    clock.advance(1)
    moved = store.transition(
        lease,
        expected_state="pending",
        expected_version=0,
        new_state="active",
        patch={"runnable": True, "data": {"since": 1}},
        outbox=[NewOutbox("active")],
        release=True,
    )
    assert store.write_count == writes + 1, "one transaction for both"
    assert (moved.state, moved.version, moved.lease_owner, moved.lease_until) == (
        "active",
        1,
        None,
        0.0,
    )
    assert moved.lease_epoch == 1, "the epoch never goes back"
    assert store.get("INV-1") == moved
    [hist] = store.history("INV-1")
    assert (hist.to_state, hist.epoch, hist.worker) == ("active", 1, "w1")
    assert [m.kind for m in store.claim_outbox("relay", 30)] == ["active"]
    # the released lease fences nothing any more: its holder's next write is refused
    with pytest.raises(LeaseLost):
        store.transition(lease, expected_state="active", expected_version=1, new_state="x")
    with pytest.raises(LeaseLost):
        store.checkpoint(lease, expected_version=1, patch={"module": "m"})
    [again] = store.acquire("w2", 10)
    assert (again.epoch, again.service.version) == (2, 1)


def test_a_refused_transition_with_release_keeps_the_lease_and_writes_nothing(
    store: StatusStore, clock: FakeClock
) -> None:
    create(store)
    old = lease_of(store, "INV-1", ttl=10)
    step(store, old, "selecting_module")
    before = snapshot(store)
    writes = store.write_count
    with pytest.raises(StaleState):
        store.transition(
            old, expected_state="pending", expected_version=0, new_state="x", release=True
        )
    with pytest.raises(ConfigError):
        store.transition(
            old,
            expected_state="selecting_module",
            expected_version=1,
            new_state="x",
            detail={"password": Secret("hunter2")},
            release=True,
        )
    assert snapshot(store) == before
    assert store.write_count == writes
    assert store.get("INV-1").lease_owner == "w1"  # type: ignore[union-attr]
    clock.advance(10)
    new = lease_of(store, "INV-1", worker="w2")
    before = snapshot(store)
    writes = store.write_count
    with pytest.raises(LeaseLost, match="w2"):
        store.transition(
            old, expected_state="selecting_module", expected_version=1, new_state="x", release=True
        )
    assert snapshot(store) == before
    assert store.write_count == writes
    assert store.get("INV-1").lease_owner == "w2"  # type: ignore[union-attr]
    assert new.epoch == 2


def test_a_stale_epoch_always_raises_lease_lost_and_writes_nothing(
    store: StatusStore, clock: FakeClock
) -> None:
    create(store)
    old = lease_of(store, "INV-1", ttl=10)
    clock.advance(10)
    with pytest.raises(LeaseLost, match="expired"):
        store.transition(old, expected_state="pending", expected_version=0, new_state="x")
    new = lease_of(store, "INV-1", worker="w2")
    step(store, new, "selecting_module")
    store.reserve_server(new, 7)
    before = snapshot(store)
    writes = store.write_count
    # LeaseLost wins over StaleState: the zombie must stop, not retry with a fresh read
    for expected_state, expected_version in (("pending", 0), ("selecting_module", 1)):
        with pytest.raises(LeaseLost, match="w2"):
            store.transition(
                old,
                expected_state=expected_state,
                expected_version=expected_version,
                new_state="claiming_server",
                outbox=[NewOutbox("x")],
                task=TASK,
            )
    with pytest.raises(LeaseLost):
        store.checkpoint(old, expected_version=1, patch={"op_id": 5})
    with pytest.raises(LeaseLost):
        store.reserve_server(old, 8)
    with pytest.raises(LeaseLost):
        store.release_server(old, 7)
    with pytest.raises(LeaseLost):
        store.renew(old, 10)
    assert snapshot(store) == before
    assert store.write_count == writes
    assert store.claim_outbox("relay", 10) == []


def test_a_lease_with_a_forged_worker_is_lost(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    forged = Lease(
        service_id=lease.service_id,
        worker_id="intruder",
        epoch=lease.epoch,
        until=lease.until,
        service=lease.service,
    )
    with pytest.raises(LeaseLost):
        store.transition(forged, expected_state="pending", expected_version=0, new_state="x")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"outbox": [NewOutbox("ready", {"ips": {"1.2.3.4"}})]}, "outbox[0].payload"),
        ({"outbox": [NewOutbox("a"), NewOutbox("a")]}, "outbox[1].kind"),
        ({"outbox": ["ready"]}, "outbox[0]"),
        ({"task": NewTask(department="", kind="k", reason="r")}, "task.department"),
        ({"task": "a task"}, "task"),
        ({"patch": {"version": 5}}, "version"),
        ({"patch": {"server_id": "12"}}, "patch.server_id"),
        ({"patch": {"runnable": 1}}, "patch.runnable"),
        ({"patch": {"data": {"pw": Secret("hunter2")}}}, "patch.data"),
        ({"detail": {"password": Secret("hunter2")}}, "detail"),
        ({"new_state": ""}, "new_state"),
    ],
)
def test_a_transition_with_an_invalid_part_writes_nothing(
    store: StatusStore, kwargs: dict[str, Any], field: str
) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    before = snapshot(store)
    writes = store.write_count
    args: dict[str, Any] = {"new_state": "selecting_module", **kwargs}
    with pytest.raises(ConfigError) as err:
        store.transition(lease, expected_state="pending", expected_version=0, **args)
    assert field in str(err.value)
    assert "hunter2" not in str(err.value)
    assert snapshot(store) == before
    assert store.write_count == writes
    assert store.claim_outbox("relay", 10) == []


def test_transition_of_a_vanished_lease_target(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    ghost = Lease(
        service_id="ghost", worker_id="w1", epoch=1, until=lease.until, service=lease.service
    )
    with pytest.raises(ServiceNotFound):
        store.transition(ghost, expected_state="pending", expected_version=0, new_state="x")


# ---------------------------------------------------------------------------- checkpoint


def test_checkpoint_updates_in_place_without_history(store: StatusStore, clock: FakeClock) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    moved = step(store, lease, "installing_os", patch={"attempts": 2})
    clock.advance(3)
    row = store.checkpoint(lease, expected_version=1, patch={"op_id": 9001, "data": {"k": 1}})
    assert (row.state, row.version, row.op_id, row.data, row.attempts) == (
        "installing_os",
        1,
        9001,
        {"k": 1},
        2,
    )
    assert row.updated_at == T0 + 3
    assert moved.updated_at == T0
    assert len(store.history("INV-1")) == 1
    with pytest.raises(StaleState):
        store.checkpoint(lease, expected_version=0, patch={"op_id": 1})
    assert store.get("INV-1").op_id == 9001  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- reservations


def test_reserve_server_is_unique_both_ways(store: StatusStore) -> None:
    create(store, "a")
    create(store, "b")
    la, lb = store.acquire("w1", 60, limit=2)
    assert store.reserve_server(la, 42)
    assert store.reserve_server(la, 42), "reserving again is fine"
    assert not store.reserve_server(lb, 42), "one server, one service"
    with pytest.raises(StaleState, match="42"):
        store.reserve_server(la, 43)  # one service, one server
    assert store.server_claims() == {42: "a"}
    store.release_server(lb, 42)  # not b's: no-op
    assert store.server_claims() == {42: "a"}
    store.release_server(la, 42)
    store.release_server(la, 42)  # absent: no-op
    assert store.reserve_server(lb, 42)
    assert store.reserve_server(la, 43)
    assert store.server_claims() == {42: "b", 43: "a"}


def test_server_claims_of_given_servers(store: StatusStore) -> None:
    for sid in ("a", "b", "c"):
        create(store, sid)
    leases = store.acquire("w1", 60, limit=3)
    for lease, server_id in zip(leases, (42, 7, 99), strict=True):
        assert store.reserve_server(lease, server_id)
    assert store.server_claims() == {7: "b", 42: "a", 99: "c"}
    assert list(store.server_claims()) == [7, 42, 99], "ordered by server id"
    assert store.server_claims([99, 5, 42, 42]) == {42: "a", 99: "c"}
    assert list(store.server_claims([99, 42])) == [42, 99]
    assert store.server_claims(iter([7])) == {7: "b"}
    assert store.server_claims([5, 6]) == {}
    assert store.server_claims([]) == {}
    assert store.server_claims(service_id="b") == {7: "b"}
    assert store.server_claims(service_id="zz") == {}, "a service that holds nothing"
    assert store.server_claims([7, 42], service_id="a") == {42: "a"}, "both filters"
    assert store.server_claims([7], service_id="a") == {}


@pytest.mark.parametrize(
    ("server_ids", "message"),
    [
        ([1, 0], r"server_ids\[1\]: expected a positive int, got 0"),
        ([True], r"server_ids\[0\]: expected a positive int, got True"),
        (["42"], r"server_ids\[0\]: expected a positive int, got '42'"),
        ("42", r"server_ids: expected an iterable of ints, got '42'"),
        (42, r"server_ids: expected an iterable of ints, got 42"),
    ],
)
def test_server_claims_rejects_bad_ids(store: StatusStore, server_ids: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        store.server_claims(server_ids)


@pytest.mark.parametrize("service_id", ["", 42, b"a"])
def test_server_claims_rejects_bad_service_id(store: StatusStore, service_id: Any) -> None:
    with pytest.raises(ConfigError, match=r"service_id: "):
        store.server_claims(service_id=service_id)


@pytest.mark.parametrize("server_id", [0, -1, "42", True, None])
def test_reserve_server_rejects_bad_ids(store: StatusStore, server_id: Any) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    with pytest.raises(ConfigError, match="server_id"):
        store.reserve_server(lease, server_id)


# ---------------------------------------------------------------------------- tasks


def test_tasks_dedupe_filter_and_resolve(store: StatusStore, clock: FakeClock) -> None:
    create(store, "a")
    first = store.add_task("a", TASK)
    clock.advance(1)
    assert store.add_task("a", NewTask("Other", "no_free_server", "again")) == first
    lease = lease_of(store, "a")
    step(store, lease, "failed", task=TASK)
    other = store.add_task("a", NewTask("Billing", "orphan_user", "user 7 owns nothing"))
    orphan = store.add_task("server:55", NewTask("Support", "orphan_server", "owned by us"))
    assert [t.id for t in store.tasks()] == [first.id, other.id, orphan.id]
    assert [t.id for t in store.tasks(department="Support")] == [first.id, orphan.id]
    assert store.tasks(department="Nobody") == []
    clock.advance(1)
    done = store.resolve_task(first.id, "added servers")
    assert (done.resolved_at, done.resolution) == (T0 + 2, "added servers")
    clock.advance(1)
    assert store.resolve_task(first.id, "second answer") == done, "idempotent, first wins"
    assert [t.id for t in store.tasks()] == [other.id, orphan.id]
    assert [t.id for t in store.tasks(include_resolved=True)] == [first.id, other.id, orphan.id]
    reopened = store.add_task("a", TASK)
    assert reopened.id not in (first.id, other.id, orphan.id)
    with pytest.raises(TaskNotFound, match="987654") as missing:
        store.resolve_task(987654, "x")
    assert isinstance(missing.value, KeyError), "still a KeyError for dict-style callers"
    with pytest.raises(ConfigError, match=r"task\.reason"):
        store.add_task("a", NewTask("Support", "k", ""))


# ---------------------------------------------------------------------------- outbox


def _three_events(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    step(store, lease, "active", outbox=[NewOutbox("activated", {"ip": "1.2.3.4"})])
    step(store, lease, "suspending", outbox=[NewOutbox("suspending")])
    step(store, lease, "suspended", outbox=[NewOutbox("suspended")])


def test_outbox_claim_is_leased_and_reclaimable_after_ttl(
    store: StatusStore, clock: FakeClock
) -> None:
    _three_events(store)
    first = store.claim_outbox("relay-1", 30, limit=2)
    assert [m.kind for m in first] == ["activated", "suspending"]
    assert [m.event_id for m in first] == ["INV-1:1:activated", "INV-1:2:suspending"]
    second = store.claim_outbox("relay-2", 30)
    assert [m.kind for m in second] == ["suspended"]
    assert store.claim_outbox("relay-2", 30) == []
    clock.advance(30)  # relay-1 died
    again = store.claim_outbox("relay-2", 30)
    assert [m.id for m in again] == [m.id for m in first + second]
    assert [m.event_id for m in again][:2] == [m.event_id for m in first], "stable event ids"


def test_outbox_ack_and_retry(store: StatusStore, clock: FakeClock) -> None:
    _three_events(store)
    msgs = store.claim_outbox("relay", 30)
    store.ack_outbox([msgs[0].id, 424242])
    store.retry_outbox(msgs[1].id, T0 + 100)
    store.retry_outbox(msgs[0].id, T0)  # delivered: ignored
    store.ack_outbox([])
    clock.advance(30)
    [left] = store.claim_outbox("relay", 300)
    assert left.id == msgs[2].id
    clock.advance(70)
    [retried] = store.claim_outbox("relay", 30)
    assert (retried.id, retried.attempts, retried.available_at) == (msgs[1].id, 1, T0 + 100)
    store.ack_outbox([retried.id, left.id])
    clock.advance(1000)
    assert store.claim_outbox("relay", 30) == []


def test_outbox_ack_of_more_ids_than_one_statement_takes(
    store: StatusStore, clock: FakeClock
) -> None:
    _three_events(store)
    msgs = store.claim_outbox("relay", 30)
    writes = store.write_count
    # unknown ids pad the list past one statement's chunk (500): one transaction still
    store.ack_outbox([msgs[0].id, *range(10_000, 10_700), msgs[2].id])
    assert store.write_count == writes + 1
    clock.advance(30)
    [left] = store.claim_outbox("relay", 30)
    assert left.id == msgs[1].id


# ---------------------------------------------------------------------------- singletons


def test_singleton_is_held_by_one_worker_until_it_expires(
    store: StatusStore, clock: FakeClock
) -> None:
    assert store.try_singleton("reconciler", "w1", 60)
    assert not store.try_singleton("reconciler", "w2", 60)
    assert store.try_singleton("other", "w2", 60)
    clock.advance(59)
    assert store.try_singleton("reconciler", "w1", 60), "the holder renews"
    clock.advance(59)
    assert not store.try_singleton("reconciler", "w2", 60)
    clock.advance(1)
    assert store.try_singleton("reconciler", "w2", 60)
    assert not store.try_singleton("reconciler", "w1", 60)


# ---------------------------------------------------------------------------- plumbing


def test_write_count_counts_committed_changes_only(store: StatusStore) -> None:
    assert store.write_count == 0
    create(store)
    assert store.write_count == 1
    store.create_service("INV-1", SPEC, state="pending", desired="active")
    store.get("INV-1")
    store.services()
    store.history("INV-1")
    store.tasks()
    store.server_claims()
    assert store.write_count == 1
    lease = lease_of(store, "INV-1")
    assert store.acquire("w2", 10) == []
    assert store.write_count == 2
    step(store, lease, "x", outbox=[NewOutbox("a"), NewOutbox("b")], task=TASK)
    assert store.write_count == 3, "one transition is one write, whatever it holds"


def test_now_is_the_injected_clock(store: StatusStore, clock: FakeClock) -> None:
    assert store.now() == T0
    clock.advance(12.5)
    assert store.now() == T0 + 12.5


def test_the_store_satisfies_the_protocol(store: StatusStore) -> None:
    assert isinstance(store, StatusStore)


def test_a_closed_store_refuses_work(store: StatusStore) -> None:
    create(store)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.create_service("x", SPEC, state="pending", desired="active")


def test_unsafe_disable_fencing_lets_a_zombie_write(make_store: Any, clock: FakeClock) -> None:
    """The test-only switch really drops fencing (the chaos suite's negative control)."""
    store = make_store(unsafe_disable_fencing=True)
    create(store)
    zombie = lease_of(store, "INV-1", ttl=10)
    clock.advance(10)
    current = lease_of(store, "INV-1", worker="w2")
    step(store, current, "selecting_module")
    row = store.transition(
        zombie, expected_state="pending", expected_version=0, new_state="claiming_server"
    )
    assert (row.state, row.version) == ("claiming_server", 2)
    history = store.history("INV-1")
    assert [(h.from_state, h.to_state) for h in history] == [
        ("pending", "selecting_module"),
        ("pending", "claiming_server"),  # the broken chain the chaos checker must catch
    ]
    assert store.renew(zombie, 10).until == clock() + 10
    assert store.checkpoint(zombie, expected_version=0, patch={"op_id": 3}).op_id == 3
    assert store.reserve_server(zombie, 11)
