"""A lease's last write waits for the worker's next write (another service's) and shares
its transaction; what is refused then is handled as a refused write of that lease."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from dci6bridge.domain import Catalog, Order
from dci6bridge.errors import StoreError
from dci6bridge.provisioning import Provisioner, ServiceState
from dci6bridge.stores.base import AdvanceRequest, StatusStore
from dci6bridge.testing import FakeDCImanager

from .conftest import StoreSpy
from .conftest import instant_worker as tail_worker


@pytest.fixture
def catalog(catalog_for: Callable[..., Catalog]) -> Catalog:
    # no extra IPv4: an order's remote effects are the owner and the install
    return catalog_for(ipv4_count=0)


@pytest.fixture
def fake() -> FakeDCImanager:
    # instant installs: a service goes from pending to active under one lease
    return FakeDCImanager.with_inventory(locations=2, servers_per_location=6, install_duration=0)


def finish_after_the_leases(
    make_prov: Callable[..., Provisioner], fake: FakeDCImanager, store: StatusStore, *sids: str
) -> None:
    """Once the leases ran out a new worker finishes the services by reading back: each
    ends ACTIVE with one install."""
    fake.clock.advance(61)
    tail_worker(make_prov, store).run_until_idle(advance=fake.clock.advance)
    for sid in sids:
        row = store.get(sid)
        assert row is not None
        assert row.state == ServiceState.ACTIVE.value
        assert row.server_id is not None
        assert fake.state.install_count(row.server_id) == 1


def open_orders(prov: Provisioner, new_order: Callable[..., Order], n: int) -> None:
    for i in range(n):
        prov.open(new_order(f"S{i}", email=f"c{i}@example.com"))


def test_the_last_write_of_a_lease_goes_with_the_next_services_write(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    drive: Callable[[Provisioner], int],
) -> None:
    """S0 (active) is suspended: one step, then its lease ends; its last write waits and
    goes with S1's reservation (S1 is a new order) in one transaction."""
    seed = tail_worker(make_prov, store)
    seed.open(new_order("S0", email="c0@example.com"))
    drive(seed)
    seed.suspend("S0")
    seed.open(new_order("S1", email="c1@example.com"))
    recording = StoreSpy(store)
    prov = tail_worker(make_prov, recording)
    assert prov.tick(max_services=8) == 2
    s0, s1 = store.get("S0"), store.get("S1")
    assert s0 is not None
    assert s1 is not None
    assert (s0.state, s1.state) == (ServiceState.SUSPENDED.value, ServiceState.ACTIVE.value)
    # nothing stays leased once the tick returns: the last one went out at its end
    assert {s0.lease_owner, s1.lease_owner} == {None}
    together = [[(sid, release) for sid, release, _ in batch] for batch in recording.batches]
    assert [("S0", True), ("S1", False)] in together
    assert together[-1] == [("S1", True)]
    ends = [moves for batch in recording.batches for _, rel, moves in batch if rel]
    assert all({"active", "suspended"} & set(moves) for moves in ends)
    assert [t.to_state for t in store.history("S0")][-1] == "suspended"
    assert [t.to_state for t in store.history("S1")][-1] == "active"


def test_a_last_write_whose_lease_was_lost_meanwhile_is_dropped_alone(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    caplog: pytest.LogCaptureFixture,
) -> None:
    open_orders(make_prov(), new_order, 2)
    stolen: list[str] = []

    def steal_s0(requests: Sequence[AdvanceRequest]) -> None:
        # another worker takes S0 over (a new epoch) before S0's last write goes out
        for r in requests:
            if not stolen and r.lease.service_id == "S0" and r.release:
                store.release(r.lease)  # as if its lease had run out
                assert [lease.service_id for lease in store.acquire("rival", 60, 8)] == ["S0"]
                stolen.append("S0")

    prov = tail_worker(make_prov, StoreSpy(store, steal_s0))
    caplog.set_level("WARNING", logger="dci6bridge.provisioning")
    prov.tick(max_services=8)
    assert stolen == ["S0"]
    s0, s1 = store.get("S0"), store.get("S1")
    assert s0 is not None
    assert s1 is not None
    # S0 keeps the state its last durable write gave it; the rival holds it now
    assert (s0.state, s0.lease_owner) == (ServiceState.INSTALLING_OS.value, "rival")
    assert "S0: lease lost" in caplog.text.replace("service ", "")
    # S1's writes in the same transactions were not affected; the rival finishes S0 by
    # reading the install back (one install, not two)
    assert s1.state == ServiceState.ACTIVE.value
    finish_after_the_leases(make_prov, fake, store, "S0")


def test_a_failed_tick_leaves_the_queued_write_to_the_next_lease(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
) -> None:
    """A store error in the next write loses the queued one with it, as a crash would:
    the lease runs out and the next worker reads back and finishes the service."""
    open_orders(make_prov(), new_order, 2)
    broken: list[bool] = []

    def fail_once(requests: Sequence[AdvanceRequest]) -> None:
        # the tick's last write: both services' move to active and release
        if not broken and all(r.release for r in requests):
            broken.append(True)
            raise StoreError("disk full")

    prov = tail_worker(make_prov, StoreSpy(store, fail_once))
    with pytest.raises(StoreError, match="disk full"):
        prov.tick(max_services=8)
    s0 = store.get("S0")
    assert s0 is not None
    assert s0.state == ServiceState.INSTALLING_OS.value  # its last write was lost
    finish_after_the_leases(make_prov, fake, store, "S0", "S1")


def test_a_tick_takes_the_store_clock_from_the_acquire(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
) -> None:
    """On PostgreSQL every read of the database clock is a round trip: a worker reads it
    with the acquire, not once per service."""
    open_orders(make_prov(), new_order, 3)
    reads: list[float] = []

    class CountingClock(StoreSpy):
        def now(self) -> float:
            reads.append(store.now())
            return reads[-1]

    prov = tail_worker(make_prov, CountingClock(store))
    assert prov.tick(max_services=8) == 3
    assert reads == []
