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


def test_stale_reservation_of_a_closed_service_is_released(
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
    # not ours any more, so close left it alone, and kept the reservation
    assert fake.state.servers[sid].owner_email == "someone@else.example"
    assert prov.store.server_claims() == {sid: "S1"}
    assert prov.reconcile().released_claims == ()
    fake.modify_server(sid, owner_id=None)
    report = prov.reconcile()
    assert report.released_claims == (sid,)
    drive(prov)
    assert prov.store.server_claims() == {}
    assert prov.get("S1").status is ServiceStatus.CLOSED
