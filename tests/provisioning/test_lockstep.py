"""The services of one tick advance in lockstep: a step that needs its state changes
durable before a remote effect waits for the others, and all are written in one
transaction (``Provisioner.tick``)."""

from __future__ import annotations

import collections
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from dci6bridge import Client
from dci6bridge.client.query import Q
from dci6bridge.domain import Catalog, Order
from dci6bridge.provisioning import Provisioner, ServiceState
from dci6bridge.provisioning._failpoints import FailpointCrash, Failpoints
from dci6bridge.provisioning._tick_reads import WIDE_PAGES
from dci6bridge.provisioning.states import TRANSITIONS
from dci6bridge.provisioning.steps import CLAIM_PAGE
from dci6bridge.stores import MemoryStore, SQLiteStore
from dci6bridge.stores.base import AdvanceRequest, Lease, StatusStore
from dci6bridge.testing import FakeDCImanager
from dci6bridge.testing.chaos import check_history

from .conftest import CFG, StoreSpy, make_catalog
from .conftest import instant_worker as worker

ORDERS = 8

#: the remote calls one order needs (dci6-api.md §7: the server is read back after the
#: owner assignment; the finished install is read once)
CALLS_PER_ORDER = {
    "users.list": 1,
    "users.create": 1,
    "servers.set_owner": 1,
    "servers.get": 2,
    "servers.install_os": 1,
}
#: the reads the services of one tick share: the free counts of the module selection,
#: a page of free servers (10) when the tick claims at most that many
CALLS_PER_TICK = {"servers.configurations": 1, "servers.list": 1}


@pytest.fixture
def catalog(catalog_for: Callable[..., Catalog]) -> Catalog:
    return catalog_for(ipv4_count=0)


@pytest.fixture
def fake() -> FakeDCImanager:
    # 10 free servers of the tariff's configuration in the first module's location
    return FakeDCImanager.with_inventory(locations=2, servers_per_location=30, install_duration=0)


def open_orders(
    prov: Provisioner, new_order: Callable[..., Order], n: int, prefix: str = "S", mail: str = "c"
) -> list[str]:
    sids = [f"{prefix}{i}" for i in range(n)]
    for i, sid in enumerate(sids):
        prov.open(new_order(sid, email=f"{mail}{i}@example.com"))
    return sids


def routes(fake: FakeDCImanager, since: int) -> dict[str, int]:
    counted = collections.Counter(r.route for r in fake.state.requests[since:])
    counted.pop("os_templates.list", None)  # once per worker, cached
    counted.pop("auth.login", None)
    return dict(counted)


def rival_leases(
    billing: Provisioner, store: StatusStore, new_order: Callable[..., Order], ids: list[str]
) -> list[Lease]:
    """Services ``ids`` opened and leased by another worker ("rival"), whose leases keep
    them out of the tested worker's tick and can hold reservations."""
    for rid in ids:
        billing.open(new_order(rid, email=f"{rid}@example.com"))
    return store.acquire("rival", 600, len(ids))


def snatcher(
    store: StatusStore, rivals: list[Lease]
) -> tuple[Callable[[Sequence[AdvanceRequest]], None], list[int]]:
    """A :class:`StoreSpy` hook with which the rivals, one per shared write, reserve the
    server S0 is about to reserve; and the list of the servers they took."""
    snatched: list[int] = []

    def snatch(requests: Sequence[AdvanceRequest]) -> None:
        for r in requests:
            if (
                r.lease.service_id == "S0"
                and r.reserve_server is not None
                and len(snatched) < len(rivals)
            ):
                assert store.reserve_server(rivals[len(snatched)], r.reserve_server)
                snatched.append(r.reserve_server)

    return snatch, snatched


def test_a_tick_writes_its_services_together(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
) -> None:
    sids = open_orders(make_prov(), new_order, ORDERS)
    installed_before_intent: list[str] = []

    def check(requests: Sequence[AdvanceRequest]) -> None:
        # an install intent is durable before its install call
        for r in requests:
            if any(m.to == ServiceState.INSTALLING_OS.value for m in r.moves):
                row = store.get(r.lease.service_id)
                assert row is not None
                if row.server_id is None or fake.state.install_count(row.server_id):
                    installed_before_intent.append(r.lease.service_id)

    spy = StoreSpy(store, check)
    since = len(fake.state.requests)
    writes = store.write_count
    assert worker(make_prov, spy).tick(max_services=ORDERS) == ORDERS
    rows = [store.get(sid) for sid in sids]
    assert all(r is not None and r.state == ServiceState.ACTIVE.value for r in rows)
    servers = [r.server_id for r in rows if r is not None]
    assert len(set(servers)) == ORDERS  # no server given twice
    assert all(fake.state.install_count(s) == 1 for s in servers if s is not None)
    assert installed_before_intent == []
    # three shared writes: the reservations, the install intents, the move to active with
    # the release; each carries every service of the tick
    assert [sorted(sid for sid, _, _ in b) for b in spy.batches] == [sorted(sids)] * 3
    first, second, last = spy.requests
    assert sorted(r.reserve_server for r in first) == sorted(servers)  # type: ignore[type-var]
    assert all(r.singleton is not None for r in first)
    assert not any(r.release for r in first + second)
    assert all(r.release for r in last)
    assert store.write_count - writes == 3 + 1  # + the acquire
    # a parked step runs again without repeating a remote call: the calls of the bare
    # sequence, no more, and the reads every service needs made once for the tick
    expected = {k: v * ORDERS for k, v in CALLS_PER_ORDER.items()} | CALLS_PER_TICK
    assert routes(fake, since) == expected


def test_a_tick_shares_its_reads_across_pages_and_modules(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    new_order: Callable[..., Order],
) -> None:
    """25 orders in one tick, 20 free servers of the configuration in the first
    module's location: the tick reads the free counts once (one DCImanager serves both
    modules); the first location's free servers three times (the first page, then the
    first two pages together, then the first three, which finds only 20: no more), and
    the second location's first page once for the 5 services that move there."""
    fake = FakeDCImanager.with_inventory(locations=2, servers_per_location=60, install_duration=0)
    make = functools.partial(
        make_prov, transport=fake.transport, catalog=make_catalog(fake, ipv4_count=0)
    )
    sids = open_orders(make(), new_order, 25)
    since = len(fake.state.requests)
    assert worker(make, store).tick(max_services=25) == 25
    rows = [store.get(sid) for sid in sids]
    assert all(r is not None and r.state == ServiceState.ACTIVE.value for r in rows)
    assert len({r.server_id for r in rows if r is not None}) == 25
    assert sorted(r.module for r in rows if r is not None).count("dci-fra") == 5
    lists = [r for r in fake.state.requests[since:] if r.route == "servers.list"]
    assert len(lists) == 4
    got = routes(fake, since)
    assert got["servers.configurations"] == 1
    assert got["users.create"] == got["servers.install_os"] == 25


def test_lockstep_records_what_one_service_per_tick_records(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
) -> None:
    sids = open_orders(make_prov(), new_order, 4)
    worker(make_prov, store).tick(max_services=2)  # S0, S1 together
    solo = worker(make_prov, store)
    while solo.tick(max_services=1):  # S2, S3 one by one
        pass
    chains = {sid: [(t.from_state, t.to_state) for t in store.history(sid)] for sid in sids}
    assert chains["S0"] == chains["S1"] == chains["S2"] == chains["S3"]
    assert chains["S0"][-1] == ("installing_os", "active")


def test_a_reservation_refused_in_the_shared_write_takes_another_server(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
) -> None:
    """Another worker reserves the server S0 is about to reserve: S0's request is
    refused alone (nothing of it written), the other services of the tick go on, and S0
    reserves another server in the tick's next shared write."""
    billing = make_prov()
    rivals = rival_leases(billing, store, new_order, ["R"])
    sids = open_orders(billing, new_order, 3)
    snatch, snatched = snatcher(store, rivals)
    spy = StoreSpy(store, snatch)
    prov = worker(make_prov, spy)
    # the rival's lease keeps R out of this tick
    assert prov.tick(max_services=8) == 3
    assert len(snatched) == 1
    rows = [store.get(sid) for sid in sids]
    assert all(r is not None and r.state == ServiceState.ACTIVE.value for r in rows)
    servers = {r.server_id for r in rows if r is not None}
    assert len(servers) == 3
    assert snatched[0] not in servers
    assert store.server_claims()[snatched[0]] == "R"
    # S0's refused request wrote nothing: its chain has no gap and no repeated move
    chain = [(t.from_state, t.to_state) for t in store.history("S0")]
    assert chain == [(t.from_state, t.to_state) for t in store.history("S1")]
    # S0 reserved another candidate in the next shared write, with its tick-mates'
    # install intents; no write of its own
    second = spy.requests[1]
    assert [(r.lease.service_id, r.reserve_server is not None) for r in second] == [
        ("S0", True),
        ("S1", False),
        ("S2", False),
    ]
    assert spy.batches[1][0] == ("S0", False, ["selecting_module", "claiming_server"])
    assert all(len(b) > 1 for b in spy.batches[:3])


class ListingLimits(httpx.BaseTransport):
    """The simulator's transport, noting where each read of the free-server listing
    starts, how many servers it asks for, and the ids it gets."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner
        self.asked: list[int] = []
        self.offsets: list[int] = []
        self.got: list[list[int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        response = self._inner.handle_request(request)
        if request.method == "GET" and url.path.endswith("/server") and "where" in url.params:
            offset, count = url.params["limit"].split(",")
            self.offsets.append(int(offset))
            self.asked.append(int(count))
            self.got.append([s["id"] for s in json.loads(response.read())["list"]])
        return response


def test_after_a_refusal_the_next_tick_reads_more_free_servers_at_once(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
) -> None:
    """Another worker took the server S0 was about to reserve: the worker's next tick
    reads WIDE_PAGES pages more of free servers in its first read, so that it picks
    among more of them (workers picking at random among a few collide). It goes on
    reading wide while its reads find the server reserved, and back to one page once a
    read finds nothing reserved."""
    billing = make_prov()
    rivals = rival_leases(billing, store, new_order, ["R"])
    sids = open_orders(billing, new_order, 3)
    snatch, snatched = snatcher(store, rivals)
    limits = ListingLimits(fake.transport)
    prov = worker(make_prov, StoreSpy(store, snatch), transport=limits)
    assert prov.tick(max_services=8) == 3
    assert len(snatched) == 1
    assert limits.asked == [CLAIM_PAGE], "one read of one page; the refusal picked again"
    for n, (sid, wide) in enumerate([("T0", True), ("T1", True), ("T2", False)]):
        if sid == "T1":  # the other worker lets its server go
            store.release_server(rivals[0], snatched[0])
        billing.open(new_order(sid, email=f"t{n}@example.com"))
        asked = len(limits.asked)
        assert prov.tick(max_services=8) == 1
        want = CLAIM_PAGE * (WIDE_PAGES + 1) if wide else CLAIM_PAGE
        assert limits.asked[asked:] == [want]
    rows = [store.get(sid) for sid in [*sids, "T0", "T1", "T2"]]
    assert all(r is not None and r.state == ServiceState.ACTIVE.value for r in rows)


def test_among_other_workers_a_ticks_first_read_of_a_long_listing_starts_at_random(
    make_prov: Callable[..., Provisioner],
    store: StatusStore,
    new_order: Callable[..., Order],
) -> None:
    """100 free servers of the configuration in the first module's location (10 pages).
    A worker alone reads the first page, tick after tick. Once another worker took a
    server it was about to reserve, its next tick reads one page at a random place
    (the listing's length learnt from its reads), and claims from it. (Workers reading
    the first page at once pick the same servers; see ListingView.)"""
    fake = FakeDCImanager.with_inventory(locations=2, servers_per_location=300, install_duration=0)
    make = functools.partial(
        make_prov, transport=fake.transport, catalog=make_catalog(fake, ipv4_count=0)
    )
    billing = make()
    rivals = rival_leases(billing, store, new_order, ["R"])
    limits = ListingLimits(fake.transport)
    snatch, snatched = snatcher(store, rivals)  # takes S0's server only
    prov = worker(make, StoreSpy(store, snatch), transport=limits)
    alone = open_orders(billing, new_order, ORDERS, prefix="A", mail="a")
    assert prov.tick(max_services=8) == ORDERS
    assert (limits.offsets, limits.asked) == ([0], [CLAIM_PAGE]), "alone: the first page"
    first = open_orders(billing, new_order, ORDERS)
    assert prov.tick(max_services=8) == ORDERS
    assert len(snatched) == 1
    assert limits.offsets == [0, 0], "the front, until others were seen"
    asked = len(limits.asked)
    second = open_orders(billing, new_order, ORDERS, prefix="T", mail="t")
    assert prov.tick(max_services=8) == ORDERS
    assert limits.asked[asked:] == [CLAIM_PAGE]
    assert 0 < limits.offsets[asked] <= 100 - CLAIM_PAGE
    rows = [store.get(sid) for sid in [*alone, *first, *second]]
    assert all(r is not None and r.state == ServiceState.ACTIVE.value for r in rows)
    servers = [r.server_id for r in rows if r is not None]
    assert len(set(servers)) == 3 * ORDERS
    assert snatched[0] not in servers
    assert set(servers[-ORDERS:]) <= set(limits.got[asked])


def test_a_service_refused_twice_claims_on_its_own(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
) -> None:
    """Other workers take S0's candidate in two shared writes in a row: S0 then claims
    on its own (one write per candidate) rather than holding its tick-mates' writes."""
    billing = make_prov()
    rivals = rival_leases(billing, store, new_order, ["R0", "R1"])
    sids = open_orders(billing, new_order, 3)
    snatch, snatched = snatcher(store, rivals)
    spy = StoreSpy(store, snatch)
    assert worker(make_prov, spy).tick(max_services=8) == 3
    assert len(snatched) == 2
    rows = [store.get(sid) for sid in sids]
    assert all(r is not None and r.state == ServiceState.ACTIVE.value for r in rows)
    assert not {r.server_id for r in rows if r is not None} & set(snatched)
    # the third try: a write of S0's own
    assert [("S0", False, ["selecting_module", "claiming_server"])] in spy.batches


def test_servers_reserved_elsewhere_are_skipped_before_reserving(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
) -> None:
    """Another worker's services hold reservations of 5 of the 10 free servers (DCImanager
    still shows them free: their owners are not set yet). The tick's 5 services pick
    among the other 5, and not one of their reservations is refused."""
    billing = make_prov()
    where = Q.free() & (Q("configuration") == CFG) & (Q("location_id") == 1)
    with Client(
        fake.url, email=fake.admin_email, password=fake.admin_password, transport=fake.transport
    ) as dci:
        free = [s.id for s in dci.servers.list(where=where, limit=10)]
    assert len(free) == 10
    leases = rival_leases(billing, store, new_order, [f"R{i}" for i in range(5)])
    for lease, server_id in zip(leases, free[::2], strict=True):
        assert store.reserve_server(lease, server_id)
    sids = open_orders(billing, new_order, 5)
    spy = StoreSpy(store)
    assert worker(make_prov, spy).tick(max_services=8) == 5
    first = spy.requests[0]
    assert sorted(r.lease.service_id for r in first) == sids
    assert sorted(r.reserve_server for r in first) == sorted(free[1::2])  # type: ignore[type-var]
    # no service claimed again on its own after a refusal
    assert len(spy.batches) == 3
    rows = [store.get(sid) for sid in sids]
    assert all(r is not None and r.state == ServiceState.ACTIVE.value for r in rows)


def test_a_parked_service_whose_lease_was_lost_is_dropped_alone(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sids = open_orders(make_prov(), new_order, 3)
    stolen: list[str] = []

    def steal_s1(requests: Sequence[AdvanceRequest]) -> None:
        # S1's lease runs out while it waits for the install-intent write; a rival has it
        for r in requests:
            moves = [m.to for m in r.moves]
            if not stolen and r.lease.service_id == "S1" and "installing_os" in moves:
                store.release(r.lease)
                assert [x.service_id for x in store.acquire("rival", 60, 8)] == ["S1"]
                stolen.append("S1")

    caplog.set_level("WARNING", logger="dci6bridge.provisioning")
    worker(make_prov, StoreSpy(store, steal_s1)).tick(max_services=8)
    assert stolen == ["S1"]
    s1 = store.get("S1")
    assert s1 is not None
    # S1 keeps its reservation write; nothing after it was written or called
    assert (s1.state, s1.lease_owner) == (ServiceState.CLAIMING_SERVER.value, "rival")
    assert s1.server_id is not None
    assert fake.state.install_count(s1.server_id) == 0
    assert "S1: lease lost" in caplog.text.replace("service ", "")
    for sid in sids:
        if sid != "S1":
            row = store.get(sid)
            assert row is not None
            assert row.state == ServiceState.ACTIVE.value
    # once the lease runs out a worker finishes S1 on the server it reserved
    fake.clock.advance(61)
    worker(make_prov, store).run_until_idle(advance=fake.clock.advance)
    row = store.get("S1")
    assert row is not None
    assert (row.state, row.server_id) == (ServiceState.ACTIVE.value, s1.server_id)
    assert fake.state.install_count(s1.server_id) == 1


class SlowNetwork(httpx.BaseTransport):
    """Every request to the simulator takes ``seconds`` of the simulator's clock."""

    def __init__(self, fake: FakeDCImanager, seconds: float) -> None:
        self._fake = fake
        self._seconds = seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._fake.clock.advance(self._seconds)
        return self._fake.transport.handle_request(request)


def test_a_slow_dcimanager_does_not_let_parked_leases_run_out(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each request takes 0.25 s: the 8 services' user lookups and creations after their
    reservations take 4 s, two thirds of a lease. The shared write goes out once a
    parked lease has aged a third (and renews the leases of the services still waiting
    their turn), so no service of the batch loses its lease or repeats a remote call."""
    ttl = 6.0
    sids = open_orders(make_prov(), new_order, ORDERS)
    spy = StoreSpy(store)
    since = len(fake.state.requests)
    caplog.set_level("WARNING", logger="dci6bridge.provisioning")
    prov = worker(make_prov, spy, lease_ttl=ttl, transport=SlowNetwork(fake, 0.25))
    assert prov.tick(max_services=ORDERS) == ORDERS
    assert "lease lost" not in caplog.text
    rows = [store.get(sid) for sid in sids]
    assert all(r is not None and r.state == ServiceState.ACTIVE.value for r in rows)
    assert len({r.server_id for r in rows if r is not None}) == ORDERS
    expected = {k: v * ORDERS for k, v in CALLS_PER_ORDER.items()} | CALLS_PER_TICK
    assert routes(fake, since) == expected
    # more shared writes than the three of a fast tick, each before a lease ran out
    assert len(spy.batches) > 3
    for sid, row in zip(sids, rows, strict=True):
        assert row is not None
        history = store.history(sid)
        assert check_history(row, history, initial_state="pending", allowed=TRANSITIONS) == []
    # services waiting their turn were renewed in a shared write: a request without
    # moves, reservation or release
    assert any(
        not r.moves and r.reserve_server is None and not r.release
        for batch in spy.requests
        for r in batch
    )


class CrashAt(Failpoints):
    """Raise :class:`FailpointCrash` (the in-process stand-in for a killed worker) at the
    ``at``-th failpoint hit; with ``at=None`` only record the hits."""

    def __init__(self, at: int | None) -> None:
        super().__init__()
        self.at = at

    def hit(self, point: str) -> None:
        self.hits.append(point)
        if len(self.hits) - 1 == self.at:
            raise FailpointCrash(point)


def test_a_crash_anywhere_in_a_lockstep_tick_converges(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    tmp_path: Path,
) -> None:
    """T2 for lockstep: three orders in one tick; the worker dies at every failpoint hit
    of the tick in turn (each case on a fresh store of the same kind and simulator);
    after its leases run out a new worker finishes every service with one server, one
    user and one install, and every history chain is whole."""
    probe = CrashAt(None)
    sids = open_orders(make_prov(), new_order, 3)
    assert worker(make_prov, store, failpoints=probe).tick(max_services=3) == 3
    hits = list(probe.hits)
    # the tick passed the shared writes of all three services
    assert hits.count("after:store.reserve_server") == 3
    assert hits.count("after:servers.install_os") == 3
    for at, point in enumerate(hits):
        world = FakeDCImanager.with_inventory(
            locations=2, servers_per_location=30, install_duration=0
        )
        case_store: StatusStore = (
            SQLiteStore(tmp_path / f"case{at}.db", clock=world.clock.now)
            if isinstance(store, SQLiteStore)
            else MemoryStore(clock=world.clock.now)
        )
        case: dict[str, Any] = {
            "catalog": make_catalog(world, ipv4_count=0),
            "transport": world.transport,
            "clock": world.clock.now,
            "sleep": world.clock.advance,
        }
        open_orders(make_prov(store=case_store, **case), new_order, 3)
        with pytest.raises(FailpointCrash):
            worker(make_prov, case_store, failpoints=CrashAt(at), **case).tick(max_services=3)
        world.clock.advance(61)  # the dead worker's leases run out
        worker(make_prov, case_store, **case).run_until_idle(advance=world.clock.advance)
        where = f"crash at hit {at} ({point})"
        rows = [case_store.get(sid) for sid in sids]
        assert all(r is not None and r.state == ServiceState.ACTIVE.value for r in rows), where
        servers = [r.server_id for r in rows if r is not None]
        assert len(set(servers)) == 3, where
        for i, (row, server_id) in enumerate(zip(rows, servers, strict=True)):
            assert server_id is not None
            assert row is not None
            assert world.state.install_count(server_id) == 1, where
            assert len(world.state.users_by_email(f"c{i}@example.com")) == 1, where
            history = case_store.history(row.service_id)
            assert check_history(row, history, initial_state="pending", allowed=TRANSITIONS) == []
        # no reservation left over beyond the three servers in use
        assert sorted(case_store.server_claims()) == sorted(servers), where
        case_store.close()
