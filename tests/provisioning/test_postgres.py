"""The orchestrator on PostgreSQL: the same life and the same crash recovery as on the
embedded stores (the full matrix runs on memory and SQLite; the chaos suite runs many
workers on PostgreSQL)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from dci6bridge.domain import Order
from dci6bridge.provisioning import Event, Provisioner, ServiceStatus
from dci6bridge.provisioning._failpoints import FailpointCrash, Failpoints
from dci6bridge.stores import open_store
from dci6bridge.stores.base import StatusStore
from dci6bridge.testing import FakeDCImanager

from .conftest import make_catalog

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store(pg_store_url: str, fake: FakeDCImanager) -> Iterator[StatusStore]:
    store = open_store(pg_store_url, clock=fake.clock.now)
    yield store
    store.close()


def provisioner(
    store: StatusStore, fake: FakeDCImanager, events: list[Event], **options: object
) -> Provisioner:
    defaults: dict[str, object] = {
        "transport": fake.transport,
        "clock": fake.clock.now,
        "sleep": fake.clock.advance,
        "rng": random.Random(5),
        "on_event": events.append,
        "failpoints": Failpoints(),
    }
    defaults.update(options)
    return Provisioner(make_catalog(fake), store, **defaults)  # type: ignore[arg-type]


def test_life_of_a_service(
    pg_store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    events: list[Event],
) -> None:
    prov = provisioner(pg_store, fake, events)
    prov.open(new_order())
    assert prov.open(new_order()).status is ServiceStatus.IN_PROGRESS
    prov.run_until_idle(advance=fake.clock.advance)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    assert svc.root_password is not None
    prov.suspend("S1", request_id="r1")
    prov.suspend("S1", request_id="r1")
    prov.run_until_idle(advance=fake.clock.advance)
    assert prov.get("S1").status is ServiceStatus.SUSPENDED
    prov.close("S1")
    prov.run_until_idle(advance=fake.clock.advance)
    assert prov.get("S1").status is ServiceStatus.CLOSED
    assert [e.kind for e in events] == ["activated", "suspended", "closed"]
    assert fake.state.users_by_email("jane@example.com") == ()
    assert pg_store.server_claims() == {}
    hist = prov.history("S1")
    assert [h.version for h in hist] == list(range(1, len(hist) + 1))


@pytest.mark.parametrize(
    "point", ["after:users.create", "after:servers.set_owner", "after:servers.install_os"]
)
def test_crash_and_takeover(
    pg_store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    events: list[Event],
    point: str,
) -> None:
    doomed = provisioner(pg_store, fake, events, failpoints=Failpoints([f"{point}=raise"]))
    doomed.open(new_order())
    with pytest.raises(FailpointCrash):
        doomed.run_until_idle(advance=fake.clock.advance)
    fake.advance(61.0)
    survivor = provisioner(pg_store, fake, events, worker_id="survivor")
    survivor.run_until_idle(advance=fake.clock.advance)
    svc = survivor.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    assert len(fake.state.users_by_email("jane@example.com")) == 1
    assert fake.state.install_count(svc.server_id) == 1
