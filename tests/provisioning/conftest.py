"""Fixtures: a simulated DCImanager with a manual clock, a catalog with two modules in
two locations, a status store on the same clock (memory and SQLite), a provisioner."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from dci6bridge.domain import Catalog, DataCenter, Order, ProcessingModule, Tariff
from dci6bridge.provisioning import Event, Provisioner, ServiceStatus
from dci6bridge.provisioning._failpoints import Failpoints
from dci6bridge.provisioning.steps import Advance, run_step
from dci6bridge.stores import MemoryStore, SQLiteStore
from dci6bridge.stores.base import AdvanceRequest, StatusStore
from dci6bridge.testing import FakeDCImanager

CFG = "E3-1230v6-64Gb-2x480SSD"
OTHER_CFG = "i9-9900K-64Gb-2x1024NVMe"
INSTALL_S = 600.0


class StoreSpy:
    """A store that records every ``advance_many`` batch (service id, release, moves) and
    runs ``before(requests)`` ahead of each one, if given: every worker write goes
    through ``advance_many``."""

    def __init__(
        self, inner: StatusStore, before: Callable[[Sequence[AdvanceRequest]], None] | None = None
    ) -> None:
        self._inner = inner
        self._before = before
        self.batches: list[list[tuple[str, bool, list[str]]]] = []
        #: the requests of every batch, as sent
        self.requests: list[list[AdvanceRequest]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def advance_many(self, requests: Sequence[AdvanceRequest]) -> Any:
        if self._before is not None:
            self._before(requests)
        self.batches.append(
            [(r.lease.service_id, r.release, [m.to for m in r.moves]) for r in requests]
        )
        self.requests.append(list(requests))
        return self._inner.advance_many(requests)


def instant_worker(
    make_prov: Callable[..., Provisioner], store: StatusStore | StoreSpy, **options: Any
) -> Provisioner:
    """A worker (id ``w``) on ``store`` that polls an instant install again under the
    same lease (so a service goes from pending to active in one tick), without an event
    callback; ``options`` go to :class:`Provisioner`."""
    return make_prov(
        **{"store": store, "poll_interval": 0.0, "worker_id": "w", "on_event": None, **options}
    )


@pytest.fixture
def fake() -> FakeDCImanager:
    # 6 servers per location; configurations cycle, so 2 of each per location
    return FakeDCImanager.with_inventory(
        locations=2, servers_per_location=6, install_duration=INSTALL_S
    )


def make_catalog(
    fake: FakeDCImanager,
    *,
    ipv4_count: int = 1,
    ams_sort: int = 1,
    fra_sort: int = 2,
) -> Catalog:
    """Module dci-ams (location 1, department "AMS support") and dci-fra (location 2,
    "FRA support"); tariffs E3 (both modules, extra IPv4) and I9 (AMS only)."""
    ams = DataCenter(name="AMS", location_id=1, sort=1)
    fra = DataCenter(name="FRA", location_id=2, sort=2)
    common: dict[str, Any] = {
        "url": fake.url,
        "username": fake.admin_email,
        "password": fake.admin_password,
    }
    m_ams = ProcessingModule(
        name="dci-ams", data_center=ams, department="AMS support", sort=ams_sort, **common
    )
    m_fra = ProcessingModule(
        name="dci-fra", data_center=fra, department="FRA support", sort=fra_sort, **common
    )
    e3 = Tariff(
        name="E3",
        configuration=CFG,
        os_templates=("Ubuntu 22.04", "Debian 12"),
        modules=("dci-ams", "dci-fra"),
        ipv4_count=ipv4_count,
    )
    i9 = Tariff(
        name="I9", configuration=OTHER_CFG, os_templates=("Debian 12",), modules=("dci-ams",)
    )
    return Catalog(data_centers=(ams, fra), modules=(m_ams, m_fra), tariffs=(e3, i9))


@pytest.fixture
def catalog(fake: FakeDCImanager) -> Catalog:
    return make_catalog(fake)


@pytest.fixture(params=["memory", "sqlite"])
def store(
    request: pytest.FixtureRequest, fake: FakeDCImanager, tmp_path: Path
) -> Iterator[StatusStore]:
    s: StatusStore
    if request.param == "memory":
        s = MemoryStore(clock=fake.clock.now)
    else:
        s = SQLiteStore(tmp_path / "status.db", clock=fake.clock.now)
    yield s
    s.close()


@pytest.fixture
def events() -> list[Event]:
    return []


ProvFactory = Callable[..., Provisioner]


@pytest.fixture
def make_prov(
    fake: FakeDCImanager, store: StatusStore, catalog: Catalog, events: list[Event]
) -> Iterator[ProvFactory]:
    made: list[Provisioner] = []

    def factory(**kwargs: Any) -> Provisioner:
        options: dict[str, Any] = {
            "transport": fake.transport,
            "clock": fake.clock.now,
            "sleep": fake.clock.advance,
            "rng": random.Random(len(made)),
            "on_event": events.append,
            "poll_interval": 15.0,
            "worker_id": f"w{len(made)}",
            "failpoints": Failpoints(),
        }
        options.update(kwargs)
        cat = options.pop("catalog", catalog)
        p = Provisioner(cat, options.pop("store", store), **options)
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close_clients()


@pytest.fixture
def prov(make_prov: ProvFactory) -> Provisioner:
    return make_prov()


def _order(
    service_id: str = "S1",
    *,
    tariff: str = "E3",
    os_template: str = "Ubuntu 22.04",
    email: str = "jane@example.com",
    **kwargs: Any,
) -> Order:
    return Order(
        service_id=service_id,
        tariff=tariff,
        os_template=os_template,
        customer_email=email,
        **kwargs,
    )


@pytest.fixture
def new_order() -> Callable[..., Order]:
    """``new_order("S1", email=..., tariff=...)`` builds an :class:`Order`."""
    return _order


@pytest.fixture
def drive(fake: FakeDCImanager) -> Callable[[Provisioner], int]:
    """``drive(prov)``: run until idle, letting simulated time pass while installs run."""

    def run(p: Provisioner) -> int:
        return p.run_until_idle(advance=fake.clock.advance)

    return run


@pytest.fixture
def catalog_for(fake: FakeDCImanager) -> Callable[..., Catalog]:
    """``catalog_for(ipv4_count=0, ams_sort=5)`` builds a variant of the catalog."""

    def build(**kwargs: Any) -> Catalog:
        return make_catalog(fake, **kwargs)

    return build


@pytest.fixture
def active(
    prov: Provisioner, new_order: Callable[..., Order], drive: Callable[[Provisioner], int]
) -> Provisioner:
    """``prov`` with service ``S1`` (jane@example.com, tariff E3) provisioned: ACTIVE."""
    prov.open(new_order())
    drive(prov)
    assert prov.get("S1").status is ServiceStatus.ACTIVE
    return prov


@pytest.fixture
def step_until() -> Callable[[Provisioner, str], None]:
    """``step_until(prov, state)``: run the next runnable service's steps under one lease
    until it reaches ``state`` (each must advance), then release it."""

    def run(prov: Provisioner, state: str) -> None:
        lease = prov.store.acquire(prov.worker_id, 60.0, 1)[0]
        ctx = prov._context(lease)
        while ctx.row.state != state:
            outcome = run_step(ctx)
            assert isinstance(outcome, Advance), outcome
            prov._transition(ctx, outcome)
        # writes the state changes still queued, with the release
        prov._release(ctx)

    return run
