"""The reconciler finds stuck services and orphan servers, and hands stale reservations
back."""

from __future__ import annotations

from collections.abc import Callable

from dci6bridge.domain import Order
from dci6bridge.provisioning import Provisioner, ServiceStatus
from dci6bridge.testing import FakeDCImanager

Drive = Callable[[Provisioner], int]
NewOrder = Callable[..., Order]


def test_clean_sweep(prov: Provisioner, new_order: NewOrder, drive: Drive) -> None:
    prov.open(new_order())
    drive(prov)
    report = prov.reconcile()
    assert report.clean, report


def test_stuck_service_becomes_a_task_once(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder
) -> None:
    prov.open(new_order())
    fake.advance(300)
    assert prov.reconcile().stuck == ()
    fake.advance(400)  # nobody worked on it for 700 s: over the 600 s budget of pending
    report = prov.reconcile()
    [stuck] = report.stuck
    assert (stuck.service_id, stuck.state) == ("S1", "pending")
    assert stuck.seconds >= 700
    [task] = prov.tasks(department="AMS support")
    assert (task.kind, task.service_id, task.id) == ("stuck", "S1", stuck.task_id)
    prov.reconcile()
    assert len(prov.tasks()) == 1


def test_orphan_server_is_reported(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    prov.open(new_order())
    drive(prov)
    svc = prov.get("S1")
    spare = next(s for s in fake.state.free_servers if s.location_id == 1)
    fake.modify_server(spare.id, owner_id=svc.user_id)  # handed over behind our back
    report = prov.reconcile()
    assert [(o.module, o.server_id, o.owner_email) for o in report.orphans] == [
        ("dci-ams", spare.id, "jane@example.com")
    ]
    [task] = prov.tasks(department="AMS support")
    assert task.kind == "orphan_server"
    assert str(spare.id) in task.reason
    # reported, never touched
    assert fake.state.servers[spare.id].owner_email == "jane@example.com"


def test_close_lets_go_of_a_server_someone_else_took(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    prov.open(new_order())
    drive(prov)
    sid = prov.get("S1").server_id
    assert sid is not None
    outsider = fake.add_user("someone@else.example")
    fake.modify_server(sid, owner_id=outsider)
    prov.close("S1")
    drive(prov)
    assert prov.get("S1").status is ServiceStatus.CLOSED
    # not ours any more: close leaves the server alone and drops its reservation
    assert fake.state.servers[sid].owner_email == "someone@else.example"
    assert prov.store.server_claims() == {}
    [closed] = [h for h in prov.history("S1") if h.to_state == "closed"]
    assert closed.detail["released_claim"] == sid
    assert closed.detail["owner"] == "someone@else.example"
    assert prov.reconcile().released_claims == ()


def test_stale_reservation_of_a_failed_service_is_released(
    make_prov: Callable[..., Provisioner],
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
) -> None:
    """A service that failed before its server was handed over keeps the reservation
    (retries exhausted on the owner assignment here); the reconciler has it dropped
    once the server reads back without an owner."""
    prov = make_prov(max_attempts=2)
    fake.set_faults(unavailable_routes=frozenset({"servers.set_owner"}))
    fake.fail_next(10_000)  # outlasts the client's own retries and the worker's attempts
    prov.open(new_order())
    drive(prov)
    row = prov.store.get("S1")
    assert row is not None
    assert (row.state, row.failed_from) == ("failed", "assigning_owner")
    sid = row.server_id
    assert sid is not None
    assert prov.store.server_claims() == {sid: "S1"}
    assert fake.state.servers[sid].owner_email is None
    report = prov.reconcile()
    assert report.released_claims == (sid,)
    drive(prov)
    assert prov.store.server_claims() == {}
    row = prov.store.get("S1")
    assert row is not None
    assert (row.state, row.server_id, row.failed_from) == ("failed", None, "claiming_server")


def test_a_server_taken_after_active_is_reported_not_touched(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    """T8: an outsider (or an operator) takes an ACTIVE service's server."""
    prov.open(new_order())
    prov.open(new_order("S2", email="bob@example.com"))
    drive(prov)
    sid = prov.get("S1").server_id
    assert sid is not None
    outsider = fake.add_user("someone@else.example")
    fake.modify_server(sid, owner_id=outsider)
    report = prov.reconcile()
    assert [(x.service_id, x.server_id, x.customer_email, x.owner_email) for x in report.lost] == [
        ("S1", sid, "jane@example.com", "someone@else.example")
    ]
    [task] = prov.tasks()
    assert (task.kind, task.service_id, task.department) == ("server_lost", "S1", "AMS support")
    assert "someone@else.example" in task.reason
    # reported, never touched; reported once while the task is open
    assert fake.state.servers[sid].owner_email == "someone@else.example"
    assert prov.get("S1").status is ServiceStatus.ACTIVE
    prov.reconcile()
    assert len(prov.tasks()) == 1
    # released by somebody: reported as owned by nobody
    fake.modify_server(sid, owner_id=None)
    [lost] = prov.reconcile().lost
    assert lost.owner_email is None


def test_a_suspended_service_keeps_its_server_without_a_report(
    prov: Provisioner, new_order: NewOrder, drive: Drive
) -> None:
    prov.open(new_order())
    drive(prov)
    prov.suspend("S1")
    drive(prov)
    assert prov.get("S1").status is ServiceStatus.SUSPENDED
    assert prov.reconcile().clean


def test_our_unused_users_are_deleted_needed_ones_kept(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    prov.open(new_order())
    drive(prov)
    # left behind by a crash: ours (marked), owns nothing, no service needs it
    stray = fake.add_user("gone@example.com", full_name="gone@example.com [dci6bridge]")
    # not ours: never touched, even if it owns nothing
    foreign = fake.add_user("admin2@example.com", full_name="Second admin")
    # ours and owning nothing, but a live service of that customer may still use it
    pending = fake.add_user("next@example.com", full_name="next@example.com [dci6bridge]")
    prov.open(new_order("S9", email="Next@Example.com"))
    report = prov.reconcile()
    assert [uid for _, uid in report.deleted_users] == [stray]
    ids = {u.id for u in fake.state.users.values()}
    assert stray not in ids
    assert {foreign, pending} <= ids
    # the customer with a server keeps its user
    assert fake.state.users_by_email("jane@example.com")
    # once the waiting service is closed (before it got to the user), the next sweep
    # deletes its customer's unused user too
    prov.close("S9")
    drive(prov)
    assert [uid for _, uid in prov.reconcile().deleted_users] == [pending]
    assert fake.state.users_by_email("next@example.com") == ()
    assert prov.reconcile().clean
