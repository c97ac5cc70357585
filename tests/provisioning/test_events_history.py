"""Events reach billing at least once with stable ids; the history is a gap-free chain;
no secret appears in history, events, tasks, logs or reprs."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import pytest

from dci6bridge.domain import Order
from dci6bridge.provisioning import Event, Provisioner, ServiceStatus
from dci6bridge.provisioning.events import OutboxRelay
from dci6bridge.testing import FakeDCImanager

Drive = Callable[[Provisioner], int]
NewOrder = Callable[..., Order]


def test_event_ids_are_stable_and_a_raising_callback_gets_redelivery(
    make_prov: Callable[..., Provisioner], fake: FakeDCImanager, new_order: NewOrder, drive: Drive
) -> None:
    seen: list[Event] = []
    fail = {"left": 2}

    def flaky(event: Event) -> None:
        seen.append(event)
        if fail["left"]:
            fail["left"] -= 1
            raise RuntimeError("billing is down")

    prov = make_prov(on_event=flaky)
    prov.open(new_order())
    drive(prov)
    assert prov.get("S1").status is ServiceStatus.ACTIVE
    # delivered at least once: the first attempt raised, later ones come after backoff
    for _ in range(5):
        fake.advance(600)
        prov.deliver_events()
    ids = [e.event_id for e in seen]
    assert len(ids) == 3
    assert len(set(ids)) == 1  # the same id on every delivery: billing dedupes on it
    [event] = {e.event_id: e for e in seen}.values()
    assert event.event_id == f"S1:{event.version}:activated"
    assert event.version == prov.store.get("S1").version
    # acknowledged: nothing more comes
    fake.advance(6000)
    assert prov.deliver_events() == 0
    assert len(seen) == 3


def test_events_wait_in_the_outbox_without_a_callback(
    make_prov: Callable[..., Provisioner], new_order: NewOrder, drive: Drive
) -> None:
    quiet = make_prov(on_event=None)
    quiet.open(new_order())
    drive(quiet)
    assert quiet.deliver_events() == 0
    got: list[Event] = []
    relay = OutboxRelay(quiet.store, got.append, worker_id="relay")
    assert relay.deliver() == 1
    assert [e.kind for e in got] == ["activated"]


def test_events_of_a_service_arrive_in_order(
    prov: Provisioner, new_order: NewOrder, drive: Drive, events: list[Event]
) -> None:
    prov.open(new_order())
    drive(prov)
    prov.suspend("S1")
    drive(prov)
    prov.resume("S1")
    drive(prov)
    prov.close("S1")
    drive(prov)
    assert [e.kind for e in events] == ["activated", "suspended", "resumed", "closed"]
    versions = [e.version for e in events]
    assert versions == sorted(versions)


def test_history_is_a_gap_free_chain(
    prov: Provisioner, new_order: NewOrder, drive: Drive, fake: FakeDCImanager
) -> None:
    fake.set_faults(install_failure_rate=1.0)
    prov.open(new_order())
    drive(prov)
    fake.set_faults(install_failure_rate=0.0)
    prov.retry("S1")
    drive(prov)
    prov.reinstall("S1", "Debian 12")
    drive(prov)
    prov.close("S1")
    drive(prov)
    hist = prov.history("S1")
    assert [h.version for h in hist] == list(range(1, len(hist) + 1))
    assert hist[0].from_state == "pending"
    for a, b in itertools.pairwise(hist):
        assert a.to_state == b.from_state
        assert a.at <= b.at
    row = prov.store.get("S1")
    assert (
        (row.version, row.state) == (hist[-1].version, hist[-1].to_state) == (len(hist), "closed")
    )
    assert all(h.worker == prov.worker_id for h in hist)
    failed = [h for h in hist if h.to_state == "failed"]
    assert failed[0].detail["kind"] == "install_failed"
    assert failed[0].detail["department"] == "AMS support"


def test_no_secret_leaks(
    make_prov: Callable[..., Provisioner],
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
    events: list[Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    prov = make_prov()
    prov.open(new_order())
    drive(prov)
    first = prov.get("S1").root_password
    prov.reinstall("S1", "Debian 12")
    drive(prov)
    svc = prov.get("S1")
    second = svc.root_password
    assert first is not None
    assert second is not None
    assert first != second
    secrets = [first.reveal(), second.reveal(), fake.admin_password]
    fake.set_faults(install_failure_rate=1.0)
    prov.open(new_order("S2", email="bob@example.com"))
    drive(prov)
    assert prov.get("S2").status is ServiceStatus.FAILED

    texts = [
        caplog.text,
        repr(svc),
        str(svc),
        repr(prov.services()),
        repr(events),
        repr(prov.tasks(include_resolved=True)),
        *(repr(prov.history(s)) for s in ("S1", "S2")),
        repr(prov.catalog),
        repr(prov),
    ]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert "***" in repr(svc)
    assert svc.root_password.reveal() == second.reveal()
