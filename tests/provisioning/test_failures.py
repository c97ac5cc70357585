"""Failures: retryable trouble is retried with backoff, permanent trouble and exhausted
retries become department tasks, lost responses are read back (never re-issued blindly),
outsiders taking a server send the claim elsewhere."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from dci6bridge.domain import Catalog, Order
from dci6bridge.errors import InvalidRequest, LeaseLost
from dci6bridge.provisioning import Event, Provisioner, ServiceState, ServiceStatus
from dci6bridge.provisioning.steps import Advance, run_step
from dci6bridge.testing import FakeDCImanager

from .conftest import CFG

Drive = Callable[[Provisioner], int]
NewOrder = Callable[..., Order]


def occupy(fake: FakeDCImanager, *, location: int | None = None, configuration: str = CFG) -> int:
    """Give every free server of ``configuration`` (in ``location``) to an outsider."""
    outsider = fake.add_user("someone@else.example")
    for s in fake.state.servers.values():
        if s.configuration == configuration and (location is None or s.location_id == location):
            fake.modify_server(s.id, owner_id=outsider)
    return outsider


def test_no_free_server_fails_with_a_task_for_the_department(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive, events: list[Event]
) -> None:
    occupy(fake)
    prov.open(new_order())
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.FAILED
    assert svc.last_error is not None
    assert "no_free_server" in svc.last_error
    tasks = prov.tasks(department="AMS support")
    assert [(t.service_id, t.kind) for t in tasks] == [("S1", "no_free_server")]
    assert CFG in tasks[0].reason
    assert prov.tasks(department="FRA support") == []
    assert events[-1].kind == "needs_attention"
    assert events[-1].payload["kind"] == "no_free_server"
    # resolvable
    prov.resolve_task(tasks[0].id, "bought more servers")
    assert prov.tasks(department="AMS support") == []
    assert prov.tasks(department="AMS support", include_resolved=True)[0].resolution == (
        "bought more servers"
    )


def test_lowest_sort_wins_and_modules_without_free_servers_are_skipped(
    make_prov: Callable[..., Provisioner],
    catalog_for: Callable[..., Catalog],
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
) -> None:
    prov = make_prov(catalog=catalog_for(ams_sort=5, fra_sort=1))
    prov.open(new_order("S1"))
    drive(prov)
    assert prov.get("S1").module == "dci-fra"
    assert fake.state.servers[prov.get("S1").server_id].location_id == 2

    occupy(fake, location=2)
    prov.open(new_order("S2"))
    drive(prov)
    s2 = prov.get("S2")
    assert s2.status is ServiceStatus.ACTIVE
    assert s2.module == "dci-ams"
    # one DCImanager serves both locations here, so its free count did not rule dci-fra
    # out: the claim found nothing in location 2 and selection looked again
    hist = prov.history("S2")
    back = [
        h for h in hist if h.from_state == "claiming_server" and h.to_state == "selecting_module"
    ]
    assert [h.detail["module"] for h in back] == ["dci-fra"]
    assert [h for h in hist if h.to_state == "claiming_server"][-1].detail["skipped"] == ["dci-fra"]


def test_a_module_whose_dcimanager_has_no_free_server_is_skipped(
    make_prov: Callable[..., Provisioner],
    catalog_for: Callable[..., Catalog],
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
) -> None:
    from dci6bridge.connect import client_for

    # two DCImanagers: dci-fra (sort 1) on an empty one, dci-ams (sort 5) on ``fake``
    empty = FakeDCImanager.with_inventory(locations=2, servers_per_location=0)
    fakes = {"dci-fra": empty, "dci-ams": fake}
    prov = make_prov(
        catalog=catalog_for(ams_sort=5, fra_sort=1),
        client_factory=lambda m: client_for(
            m, transport=fakes[m.name].transport, clock=fake.clock.now, sleep=fake.clock.advance
        ),
    )
    prov.open(new_order())
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    assert svc.module == "dci-ams"
    [selected] = [h for h in prov.history("S1") if h.to_state == "claiming_server"]
    assert selected.detail["skipped"] == ["dci-fra"]
    assert empty.state.count("servers.configurations") == 1
    assert empty.state.count("servers.list") == 0


def test_install_failure_becomes_a_task_and_an_operator_retry_reinstalls(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    fake.set_faults(install_failure_rate=1.0)
    prov.open(new_order())
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.FAILED
    assert svc.root_password is None
    [task] = prov.tasks()
    assert (task.department, task.kind) == ("AMS support", "install_failed")
    assert prov.store.get("S1").failed_from == "installing_os"
    # only a person decides: nothing happens on its own
    assert drive(prov) == 0
    assert fake.state.install_count(svc.server_id) == 1

    fake.set_faults(install_failure_rate=0.0)
    prov.retry("S1")
    prov.retry("S1")  # the same retry twice is one retry
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    assert fake.state.install_count(svc.server_id) == 2
    assert [h.to_state for h in prov.history("S1")].count("failed") == 1


def test_retry_of_a_service_that_has_not_failed_is_refused(
    prov: Provisioner, new_order: NewOrder
) -> None:
    prov.open(new_order())
    with pytest.raises(InvalidRequest, match="not failed"):
        prov.retry("S1")


def test_failed_service_can_be_closed(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    fake.set_faults(install_failure_rate=1.0)
    prov.open(new_order())
    drive(prov)
    assert prov.get("S1").status is ServiceStatus.FAILED
    with pytest.raises(InvalidRequest, match="failed"):
        prov.suspend("S1")
    prov.close("S1")
    drive(prov)
    assert prov.get("S1").status is ServiceStatus.CLOSED
    assert all(s.owner_email is None for s in fake.state.servers.values())
    assert prov.store.server_claims() == {}


def test_permanent_error_fails_at_once(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
) -> None:
    import attrs

    # the catalog offers a template this DCImanager location does not have
    e3 = attrs.evolve(catalog.tariff("E3"), os_templates=("Ubuntu 22.04", "Windows 2022"))
    bad = Catalog(
        data_centers=catalog.data_centers,
        modules=catalog.modules,
        tariffs=(e3, catalog.tariff("I9")),
    )
    prov = make_prov(catalog=bad)
    prov.open(new_order(os_template="Windows 2022"))
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.FAILED
    [task] = prov.tasks()
    assert task.kind == "config_error"
    assert "Windows 2022" in task.reason
    assert prov.store.get("S1").attempts == 0


def test_retries_exhausted_become_a_task(
    make_prov: Callable[..., Provisioner], fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    prov = make_prov(max_attempts=3)
    fake.set_faults(
        unavailable_rate=1.0, unavailable_burst=1000, unavailable_routes={"servers.configurations"}
    )
    prov.open(new_order())
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.FAILED
    [task] = prov.tasks()
    assert task.kind == "retries_exhausted"
    assert "selecting_module" in task.reason
    assert "3 attempts" in task.reason
    assert svc.last_error is not None
    assert "503" in svc.last_error


def test_503_bursts_and_token_expiry_are_survived(
    make_prov: Callable[..., Provisioner], fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    fake.set_faults(unavailable_rate=0.3, unavailable_burst=3, token_ttl=40.0)
    prov = make_prov()
    for i in range(3):
        prov.open(new_order(f"S{i}", email=f"c{i}@example.com"))
    drive(prov)
    for i in range(3):
        svc = prov.get(f"S{i}")
        assert svc.status is ServiceStatus.ACTIVE, svc
        assert fake.state.install_count(svc.server_id) == 1
        assert len(fake.state.users_by_email(f"c{i}@example.com")) == 1
    assert fake.state.count("servers.get", 503) + fake.state.count("servers.list", 503) > 0
    assert fake.state.count("auth.login") > 1


@pytest.mark.parametrize(
    "route", ["users.create", "servers.set_owner", "servers.install_os", "ips.assign"]
)
def test_lost_responses_are_read_back_not_reissued(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive, route: str
) -> None:
    fake.set_faults(lost_response_rate=1.0, lost_response_routes={route})
    prov.open(new_order())
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    assert fake.state.count(route) == 1  # the effect happened once; never called again
    assert len(fake.state.users_by_email("jane@example.com")) == 1
    assert fake.state.install_count(svc.server_id) == 1
    assert len(svc.ip_addresses) == 1
    assert len(fake.state.servers[svc.server_id].ips) == 1


def test_outsider_takes_the_reserved_server_so_another_is_claimed(
    prov: Provisioner,
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
    step_until: Callable[[Provisioner, str], None],
) -> None:
    prov.open(new_order())
    step_until(prov, "assigning_owner")
    first = prov.store.get("S1").server_id
    assert first is not None
    outsider = fake.add_user("someone@else.example")
    fake.modify_server(first, owner_id=outsider)
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    assert svc.server_id != first
    assert fake.state.servers[first].owner_email == "someone@else.example"
    assert prov.store.server_claims() == {svc.server_id: "S1"}
    back = [h for h in prov.history("S1") if h.to_state == "claiming_server"]
    assert len(back) == 2
    assert back[1].from_state == "assigning_owner"


@pytest.mark.parametrize("orders", [1, 3], ids=["alone", "in-lockstep"])
def test_a_crashed_attempts_unrecorded_reservation_is_let_go(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive, orders: int
) -> None:
    # a worker reserved a server for S1 and crashed before recording it: the next claim
    # is refused (one service, one server), drops that reservation and takes its own
    for n in range(1, orders + 1):
        prov.open(new_order(f"S{n}", email=f"c{n}@example.com"))
    crashed = next(
        x for x in prov.store.acquire("crashed", 30.0, limit=orders) if x.service_id == "S1"
    )
    assert prov.store.reserve_server(crashed, 9999)
    fake.clock.advance(31.0)
    drive(prov)
    claims = prov.store.server_claims()
    for n in range(1, orders + 1):
        svc = prov.get(f"S{n}")
        assert svc.status is ServiceStatus.ACTIVE, svc
        assert claims[svc.server_id] == f"S{n}"
    assert 9999 not in claims
    assert prov.store.server_claims(service_id="S1") == {prov.get("S1").server_id: "S1"}


def test_server_taken_twice_becomes_a_task(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    fake.set_faults(outsider_rate=1.0)
    prov.open(new_order())
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.FAILED
    [task] = prov.tasks()
    assert (task.kind, task.department) == ("server_taken", "AMS support")
    assert prov.store.server_claims() == {}
    assert not fake.state.servers_of("jane@example.com")
    # the failed service forgets the server (someone else's now); a retry claims afresh
    row = prov.store.get("S1")
    assert row.server_id is None
    assert row.failed_from == "claiming_server"
    fake.set_faults(outsider_rate=0.0)
    prov.retry("S1")
    drive(prov)
    assert prov.get("S1").status is ServiceStatus.ACTIVE


def test_user_deleted_before_the_assignment_is_created_again(
    prov: Provisioner,
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
    step_until: Callable[[Provisioner, str], None],
) -> None:
    prov.open(new_order())
    step_until(prov, "assigning_owner")
    first = prov.store.get("S1").user_id
    assert first is not None
    prov.client("dci-ams").users.delete(first)  # e.g. a sibling service closed meanwhile
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    assert svc.user_id != first
    assert [u.id for u in fake.state.users_by_email("jane@example.com")] == [svc.user_id]
    back = [h for h in prov.history("S1") if h.from_state == "assigning_owner"]
    assert back[0].to_state == "creating_user"


def test_stale_lease_holder_is_fenced_out(
    make_prov: Callable[..., Provisioner], fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    slow, other = make_prov(lease_ttl=30.0), make_prov(lease_ttl=30.0)
    slow.open(new_order())
    lease = slow.store.acquire(slow.worker_id, 30.0, 1)[0]
    ctx = slow._context(lease)
    outcome = run_step(ctx)  # pending -> selecting_module decided, not yet written
    fake.advance(31.0)  # the slow worker stalls past its lease
    drive(other)
    assert other.get("S1").status is ServiceStatus.ACTIVE
    from dci6bridge.errors import LeaseLost, StaleState

    assert isinstance(outcome, Advance)
    slow._transition(ctx, outcome)  # queued for the next write of the lease
    with pytest.raises((LeaseLost, StaleState)):
        ctx.flush()
    assert prov_history_ok(other, "S1")


def prov_history_ok(prov: Provisioner, sid: str) -> bool:
    hist = prov.history(sid)
    return [h.version for h in hist] == list(range(1, len(hist) + 1)) and all(
        a.to_state == b.from_state for a, b in itertools.pairwise(hist)
    )


def test_state_names_in_history_follow_the_table(
    prov: Provisioner, new_order: NewOrder, drive: Drive
) -> None:
    from dci6bridge.provisioning.states import TRANSITIONS

    prov.open(new_order())
    drive(prov)
    for h in prov.history("S1"):
        assert ServiceState(h.to_state) in TRANSITIONS[ServiceState(h.from_state)]


def test_claim_reads_past_servers_reserved_by_others(
    prov: Provisioner,
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
    step_until: Callable[[Provisioner, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dci6bridge.provisioning import steps

    monkeypatch.setattr(steps, "CLAIM_PAGE", 1)
    prov.open(new_order("S1"))
    step_until(prov, "creating_user")  # S1 holds the first free server, not assigned yet
    first = prov.store.get("S1").server_id
    [held] = prov.store.acquire("blocker", 600.0, 1)  # keep S1 where it is
    assert held.service_id == "S1"
    prov.open(new_order("S2", email="bob@example.com"))
    step_until(prov, "creating_user")
    second = prov.store.get("S2").server_id
    assert second is not None
    assert second != first
    assert fake.state.servers[first].owner_email is None  # still free remotely
    prov.store.release(held)
    drive(prov)
    assert {s.status for s in prov.services()} == {ServiceStatus.ACTIVE}


def test_when_other_services_hold_a_locations_last_servers_the_next_module_serves(
    prov: Provisioner,
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
    step_until: Callable[[Provisioner, str], None],
) -> None:
    # location 1 has two servers of the configuration: S1 and S2 reserve them
    held = []
    for sid in ("S1", "S2"):
        prov.open(new_order(sid, email=f"{sid.lower()}@example.com"))
        step_until(prov, "creating_user")
        held += prov.store.acquire("blocker", 600.0, 1)  # keep it from going on
    assert {fake.state.servers[prov.store.get(s).server_id].location_id for s in ("S1", "S2")} == {
        1
    }
    prov.open(new_order("S3", email="s3@example.com"))
    step_until(prov, "creating_user")
    s3 = prov.store.get("S3")
    assert s3.module == "dci-fra"
    assert fake.state.servers[s3.server_id].location_id == 2
    back = [h for h in prov.history("S3") if h.to_state == "selecting_module"][-1]
    assert back.detail["reason"] == "its 2 free server(s) are reserved by other services"
    for lease in held:
        prov.store.release(lease)
    drive(prov)
    assert {s.status for s in prov.services()} == {ServiceStatus.ACTIVE}


def test_an_aged_lease_is_renewed_before_a_remote_call(
    make_prov: Callable[..., Provisioner], fake: FakeDCImanager, new_order: NewOrder
) -> None:
    from dci6bridge.provisioning._failpoints import Failpoints

    fp = Failpoints(["*=stall:0@0"], sleep=lambda s: None)  # records every point
    prov = make_prov(lease_ttl=30.0, failpoints=fp)
    prov.open(new_order())
    [lease] = prov.store.acquire(prov.worker_id, 30.0, 1)
    fake.advance(12.0)  # e.g. it waited in a batch behind other services
    ctx = prov._context(lease)
    prov._transition(ctx, run_step(ctx))  # pending -> selecting_module: no remote call
    assert "after:store.renew" not in fp.hits
    run_step(ctx)  # reads the free counts: renews after the last hook, right before
    hits = fp.hits
    assert (
        hits.index("before:servers.configurations")
        < hits.index("after:store.renew")
        < hits.index("after:servers.configurations")
    )
    assert ctx.lease.until >= fake.clock.now() + 29.0


@pytest.mark.parametrize("point", ["before:servers.configurations", "after:store.renew"])
def test_a_worker_frozen_past_its_lease_makes_no_remote_call(
    make_prov: Callable[..., Provisioner],
    fake: FakeDCImanager,
    new_order: NewOrder,
    point: str,
) -> None:
    """A freeze (GC pause, SIGSTOP) at the last hook before a call, or between the
    renewal and the call, longer than the lease: the worker stops with LeaseLost and
    DCImanager never sees the call another worker may have made meanwhile."""
    from dci6bridge.provisioning._failpoints import Failpoints

    # the first stall is harmless (the lease is young); only the one that outlasts it counts
    fp = Failpoints([f"{point}=stall:45"], sleep=fake.advance)
    prov = make_prov(lease_ttl=30.0, failpoints=fp)
    prov.open(new_order())
    [lease] = prov.store.acquire(prov.worker_id, 30.0, 1)
    ctx = prov._context(lease)
    prov._transition(ctx, run_step(ctx))  # pending -> selecting_module: no remote call
    if point == "after:store.renew":
        fake.advance(12.0)  # aged: the call renews first, then freezes
    before = fake.state.count("servers.configurations")
    with pytest.raises(LeaseLost):
        run_step(ctx)
    assert fake.state.count("servers.configurations") == before
