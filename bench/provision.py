"""Provisioning throughput and orchestrator overhead (issue 5; durability.md §10).

**Overhead.** One worker provisions ``--orders`` orders (default 1,000) against the
in-process simulator with instant installs, for SQLite and PostgreSQL, and the same
orders are provisioned by **bare client calls** (``dci6bridge.Client``, no store, no
orchestrator) against simulators with the same inventory. The sides take turns every
``--chunk`` orders (in ABBA order), so slow and fast moments of a shared machine hit
every side alike; ``--rounds`` repeats the whole comparison and the median is reported.
Three bare sequences are measured:

* **bare**: the 7 calls an order needs at the least: free counts, one page of free
  servers (the orchestrator's page size), find user, create user, set owner, install,
  one read of the finished install (the OS template list once, as the orchestrator
  caches it);
* **bare+check**: the same plus a read of the server between the owner assignment and
  the install, which ``reference/dci6-api.md`` §7 asks for (it is unknown whether the
  assignment refuses an owned server or overwrites it, and an install wipes the disk).
  The orchestrator makes that read too (and takes the install's baseline from it);
* **same calls**: bare+check with the free counts and the page of free servers read once
  per ``TICK`` orders, as the services of one worker tick share them: exactly the
  orchestrator's calls, so the ratio to it is the cost of the orchestrator itself.

Per run: ms/order (wall), CPU ms of the thread, the store's share (every store call,
timed through a proxy), the simulator's share (time inside the in-process transport,
DCImanager's own work), the rest (client library + orchestrator logic), store writes per
order (``write_count`` of every store object, billing's ``open`` included) and requests
per order. ``--latency-ms`` adds a real network delay to every request on every side.
The workers relay every event to a billing callback, as a deployment's do (the event
relay's store writes count), and every run checks that each order's ``activated``
event arrived.

**Throughput with 1, 2 and 4 workers** (``--workers``; threads, each with its own store
connection and ``Provisioner``): all orders opened, then provisioned by the threads;
orders/s, ms/order (wall time over the orders), the threads' CPU per order, writes and
store calls per order, the share of server reservations the store refused (another
worker held the server), reads of free servers per order, and ms/order against the bare
calls of the same orders, which take turns with the threads: every ``--chunk``
activations the threads wait between two ticks while the bare calls provision the next
``--chunk`` orders (that time is not counted); ``--rounds`` runs of each, and their
medians.
Threads share one interpreter (the in-process simulator cannot be shared by processes),
so more threads add lock and GIL waits rather than throughput.

    python bench/provision.py                          # SQLite + PostgreSQL
    python bench/provision.py --stores sqlite --orders 300 --rounds 1 --workers ''
    python bench/provision.py --latency-ms 2 --orders 300
    python bench/provision.py --tick 32 --orders 400 --workers ''
    python bench/provision.py --pg-url postgresql://user@host/db --json out.json

Targets: <= 25 store writes per order; orchestrator overhead <= 25 % over the bare
client calls. Without ``--pg-url`` (or ``DCI6BRIDGE_TEST_PG_URL``) a throwaway
PostgreSQL server is started from the local binaries, as the test suite does (fsync
off, so compare it with SQLite's ``synchronous=NORMAL``, not with a production server).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx

# the store benchmark next to this script starts the throwaway PostgreSQL server
from store_cas import _pg_url as pg_url_or_server

from dci6bridge import Catalog, Client, Event, Order, Provisioner, Q, open_store
from dci6bridge.provisioning import EventKind
from dci6bridge.provisioning._failpoints import Failpoints
from dci6bridge.provisioning.states import IN_FLIGHT
from dci6bridge.provisioning.steps import CLAIM_PAGE  # the orchestrator's page of free servers
from dci6bridge.stores.base import Advanced
from dci6bridge.testing import FakeDCImanager

CONFIGURATION = "E3-1230v6-64Gb-2x480SSD"
OS_TEMPLATE = "Ubuntu 22.04"
LOCATION = 1
#: services per tick of the worker (``Worker``'s default batch; ``--tick``)
TICK = 8


class Stopwatch:
    """Seconds accumulated per thread (summed at the end)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = 0.0
        self.calls = 0

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds
            self.calls += 1


class TimedTransport(httpx.BaseTransport):
    """The simulator's transport, timed: the time spent answering inside it (and in the
    network ``latency`` added to every request, as a real DCImanager would have)."""

    def __init__(self, inner: httpx.BaseTransport, watch: Stopwatch, latency: float = 0.0) -> None:
        self._inner = inner
        self._watch = watch
        self._latency = latency

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        try:
            if self._latency:
                time.sleep(self._latency)
            return self._inner.handle_request(request)
        finally:
            self._watch.add(time.perf_counter() - start)


class Reservations:
    """Server reservations the workers asked the store for, and how many it refused
    (another worker held the server), counted from the store's answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.asked = 0
        self.refused = 0

    def note(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], got: Any) -> None:
        """Count the reservations in a call to ``name`` and its answer ``got``."""
        if name == "advance_many":
            answers = [(r.reserve_server, out) for r, out in zip(args[0], got, strict=True)]
        elif name == "advance":
            answers = [(kwargs.get("reserve_server"), got)]
        else:
            return
        with self._lock:
            for server, out in answers:
                if server is not None:
                    self.asked += 1
                    # (a fencing error in its place is not a refusal of the server)
                    self.refused += isinstance(out, Advanced) and out.reserved is False


class TimedStore:
    """A status store whose every method call is timed (attributes pass through), its
    reservations counted if ``reservations`` is given."""

    def __init__(
        self, inner: Any, watch: Stopwatch, reservations: Reservations | None = None
    ) -> None:
        self._inner = inner
        self._watch = watch
        self._reservations = reservations

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value
        watch, reservations = self._watch, self._reservations

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                got = value(*args, **kwargs)
            finally:
                watch.add(time.perf_counter() - start)
            if reservations is not None:
                reservations.note(name, args, kwargs, got)
            return got

        return timed


def make_fake(orders: int) -> FakeDCImanager:
    return FakeDCImanager.with_inventory(
        locations=1,
        servers_per_location=orders + 10,
        configurations=(CONFIGURATION,),
        install_duration=0,
    )


def make_catalog(fake: FakeDCImanager) -> Catalog:
    return Catalog.from_dict(
        {
            "data_centers": [{"name": "DC1", "location_id": LOCATION}],
            "modules": [
                {
                    "name": "dci-1",
                    "data_center": "DC1",
                    "url": fake.url,
                    "username": fake.admin_email,
                    "password": fake.admin_password,
                    "department": "Support",
                }
            ],
            "tariffs": [
                {
                    "name": "E3",
                    "configuration": CONFIGURATION,
                    "os_templates": [OS_TEMPLATE],
                    "modules": ["dci-1"],
                }
            ],
        }
    )


def orders_of(n: int) -> list[Order]:
    return [
        Order(
            service_id=f"B-{i:05d}",
            tariff="E3",
            os_template=OS_TEMPLATE,
            customer_email=f"bench{i}@example.com",
        )
        for i in range(n)
    ]


class Gate:
    """Lets the main thread hold the worker threads between two ticks (to make the bare
    calls take their turn) and let them go again."""

    def __init__(self, threads: int) -> None:
        self._cond = threading.Condition()
        self._open = True
        self._live = threads
        self._waiting = 0

    def passage(self) -> None:
        """A worker thread between two ticks: wait while the gate is closed."""
        with self._cond:
            while not self._open:
                self._waiting += 1
                self._cond.notify_all()
                self._cond.wait()
                self._waiting -= 1

    def leave(self) -> None:
        """A worker thread is done."""
        with self._cond:
            self._live -= 1
            self._cond.notify_all()

    def close(self) -> None:
        """Close the gate; returns once every live worker thread waits at it."""
        with self._cond:
            self._open = False
            while self._waiting < self._live:
                self._cond.wait()

    def open(self) -> None:
        """Let the worker threads go on."""
        with self._cond:
            self._open = True
            self._cond.notify_all()


def run_orchestrator(
    store_url: str,
    orders: int,
    workers: int,
    tick: int = TICK,
    latency: float = 0.0,
    *,
    turn: Callable[[], None] | None = None,
    turn_every: int = 0,
) -> dict[str, Any]:
    """Open ``orders`` orders, then provision them with ``workers`` threads, each leasing
    up to ``tick`` services per tick. With ``turn``, every ``turn_every`` activations the
    threads are held between two ticks while ``turn()`` runs (the bare calls' turn), and
    that time is not counted."""
    fake = make_fake(orders)
    catalog = make_catalog(fake)
    sim, store_watch = Stopwatch(), Stopwatch()
    reservations = Reservations()
    transport = TimedTransport(fake.transport, sim, latency)
    stores: list[Any] = []
    delivered: list[Event] = []  # billing's callback: the workers relay every event

    def provisioner(worker_id: str) -> Provisioner:
        store = open_store(store_url)
        stores.append(store)
        return Provisioner(
            catalog,
            TimedStore(store, store_watch, reservations),  # type: ignore[arg-type]
            transport=transport,
            poll_interval=0.0,
            worker_id=worker_id,
            failpoints=Failpoints(),
            on_event=delivered.append,
        )

    opener = provisioner("billing")
    open_start = time.perf_counter()
    for order in orders_of(orders):
        opener.open(order)
    open_seconds = time.perf_counter() - open_start
    open_writes = stores[0].write_count
    store_watch.seconds = store_watch.calls = 0  # type: ignore[assignment]

    provs = [provisioner(f"w{i}") for i in range(workers)]
    done = threading.Event()
    errors: list[BaseException] = []

    gate = Gate(workers)

    def work(prov: Provisioner) -> None:
        try:
            while not done.is_set():
                gate.passage()
                if not prov.tick(max_services=tick):
                    # idle: the others hold what is left, or everything is done
                    if not prov.store.services(states=_UNFINISHED):
                        done.set()
                    time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)
            done.set()
        finally:
            gate.leave()

    cpu = Stopwatch()

    def timed_work(prov: Provisioner) -> None:
        start = time.thread_time()
        try:
            work(prov)
        finally:
            cpu.add(time.thread_time() - start)

    threads = [threading.Thread(target=timed_work, args=(p,)) for p in provs]
    start = time.perf_counter()
    for t in threads:
        t.start()
    held = 0.0  # seconds the threads were held for the bare calls' turns
    if turn is not None and turn_every > 0:
        seen, activated, next_turn = 0, 0, turn_every
        while any(t.is_alive() for t in threads):
            fresh = delivered[seen:]
            seen += len(fresh)
            activated += sum(1 for e in fresh if e.kind == EventKind.ACTIVATED)
            if activated >= next_turn and not done.is_set():
                gate.close()
                held_from = time.perf_counter()
                turn()
                held += time.perf_counter() - held_from
                gate.open()
                next_turn += turn_every
            time.sleep(0.01)  # seldom: the main thread's wake-ups take the GIL too
    for t in threads:
        t.join()
    wall = time.perf_counter() - start - held
    if errors:
        raise errors[0]
    rows = stores[0].services()
    active = sum(1 for r in rows if r.state == "active")
    if active != orders:
        raise SystemExit(f"only {active}/{orders} orders became active: {_states(rows)}")
    check_activations(delivered, orders)
    writes = sum(s.write_count for s in stores)
    requests = len(fake.state.requests)
    routes = _routes(fake, orders)
    for p in [opener, *provs]:
        p.close_clients()
    for s in stores:
        s.close()
    return {
        "orders": orders,
        "workers": workers,
        "wall_s": wall,
        "orders_per_s": orders / wall,
        "open_per_s": orders / open_seconds,
        "writes_per_order": writes / orders,
        "open_writes_per_order": open_writes / orders,
        "ms_per_order": 1000 * wall / orders,
        "cpu_ms_per_order": 1000 * cpu.seconds / orders,
        "thread_ms_per_order": 1000 * wall * workers / orders,
        "store_ms_per_order": 1000 * store_watch.seconds / orders,
        "store_calls_per_order": store_watch.calls / orders,
        "refused": reservations.refused / max(1, reservations.asked),
        "lists_per_order": routes.get("servers.list", 0.0),
        "sim_ms_per_order": 1000 * sim.seconds / orders,
        "requests_per_order": requests / orders,
        "routes_per_order": routes,
    }


_UNFINISHED = sorted(s.value for s in IN_FLIGHT)


#: the bare sequences a throughput run is compared with (``compare`` adds "same calls")
BRACKET = ("bare", "bare+check")


def bare_sides(orders: int, latency: float = 0.0) -> dict[str, BareSide]:
    """The :data:`BRACKET` sequences, each against its own simulator."""
    return {
        "bare": BareSide(orders, latency=latency),
        "bare+check": BareSide(orders, check_owner=True, latency=latency),
    }


def run_taking_turns(
    store_url: str,
    orders: int,
    workers: int,
    tick: int = TICK,
    latency: float = 0.0,
    chunk: int = 50,
) -> dict[str, Any]:
    """:func:`run_orchestrator` with the bare calls of the same orders taking turns with
    the worker threads: every ``chunk`` activations the threads are held between two
    ticks while the bare sequences each provision the next ``chunk`` orders (in ABBA
    order), so slow and fast moments of the machine hit both sides alike; the rest of
    the bare orders go after the run. The run's time per order is compared with theirs."""
    bares = bare_sides(orders, latency)
    samples = {name: Sample() for name in bares}
    chunks = [orders_of(orders)[i : i + chunk] for i in range(0, orders, chunk)]

    def turn() -> None:
        if not chunks:
            return
        part = chunks.pop(0)
        names = BRACKET if len(chunks) % 2 else BRACKET[::-1]
        for name in names:
            samples[name].add(bares[name].run(part))

    try:
        got = run_orchestrator(
            store_url, orders, workers, tick, latency, turn=turn, turn_every=chunk
        )
        while chunks:
            turn()
    finally:
        for side in bares.values():
            side.close()
    for name, sample in samples.items():
        wall_ms, cpu_ms = 1000 * sample.wall / orders, 1000 * sample.cpu / orders
        got[f"{name}_ms_per_order"] = wall_ms
        got[f"vs_{name}"] = got["ms_per_order"] / wall_ms - 1
        got[f"cpu_vs_{name}"] = got["cpu_ms_per_order"] / cpu_ms - 1
    return got


def check_activations(delivered: list[Event], orders: int) -> None:
    """Every order's ``activated`` event reached billing's callback (at least once)."""
    activated = {e.service_id for e in delivered if e.kind == EventKind.ACTIVATED}
    if len(activated) != orders:
        raise SystemExit(f"billing heard of {len(activated)}/{orders} activations")


def _states(rows: list[Any]) -> dict[str, int]:
    return dict(collections.Counter(r.state for r in rows))


def _routes(fake: FakeDCImanager, orders: int) -> dict[str, float]:
    counts = collections.Counter(r.route for r in fake.state.requests)
    return {route: round(n / orders, 2) for route, n in sorted(counts.items())}


@attrs.define
class Sample:
    """Time spent on one chunk of orders."""

    wall: float = 0.0
    cpu: float = 0.0
    sim: float = 0.0
    store: float = 0.0
    orders: int = 0

    def add(self, other: Sample) -> None:
        self.wall += other.wall
        self.cpu += other.cpu
        self.sim += other.sim
        self.store += other.store
        self.orders += other.orders


class BareSide:
    """The bare client calls, made chunk by chunk against its own simulator.

    With ``check_owner`` the server is read back after the owner assignment before the
    install, as ``reference/dci6-api.md`` §7 asks (whether the assignment refuses an
    owned server or overwrites it is unknown, and an install wipes the disk); the
    orchestrator makes that read too (it also takes the install's baseline from it)."""

    def __init__(
        self, total: int, *, check_owner: bool = False, batch: int = 1, latency: float = 0.0
    ) -> None:
        self.check_owner = check_owner
        self.batch = batch
        self.fake = make_fake(total)
        self.sim = Stopwatch()
        self.client = Client(
            self.fake.url,
            email=self.fake.admin_email,
            password=self.fake.admin_password,
            transport=TimedTransport(self.fake.transport, self.sim, latency),
        )
        self.where = (
            Q.free() & (Q("configuration") == CONFIGURATION) & (Q("location_id") == LOCATION)
        )
        self.templates: dict[str, int] = {}

    def run(self, orders: list[Order]) -> Sample:
        dci, sim_before = self.client, self.sim.seconds
        start, cpu_start = time.perf_counter(), time.thread_time()
        if not self.templates:  # once per run, as the orchestrator caches it
            self.templates = {t.name: t.id for t in dci.os_templates.list(location_id=LOCATION)}
        free: list[Any] = []
        # as many pages as a tick's services may need, in one request, as a tick reads them
        want = CLAIM_PAGE * -(-self.batch // CLAIM_PAGE)
        for n, order in enumerate(orders):
            if n % self.batch == 0 or not free:
                # the free counts and the free servers, once per batch (as a tick of the
                # orchestrator shares them)
                counts = dci.servers.configurations()
                assert any(c.configuration == CONFIGURATION and c.free_server_count for c in counts)
                free = list(dci.servers.list(where=self.where, page_size=want, limit=want))
            server = free.pop(0)
            user = dci.users.find(order.customer_email)
            if user is None:
                user = dci.users.create(
                    email=order.customer_email, password="Bench-password-1", full_name="bench"
                )
            dci.servers.set_owner(server.id, user.id)
            if self.check_owner:
                owned = dci.servers.get(server.id)
                assert owned.owner_email == order.customer_email
            dci.servers.install_os(
                server.id, self.templates[OS_TEMPLATE], password="Root-password-1", ssh_keys=[]
            )
            finished = dci.servers.get(server.id)
            assert finished.operation is not None
            assert finished.operation.is_ok
        return Sample(
            wall=time.perf_counter() - start,
            cpu=time.thread_time() - cpu_start,
            sim=self.sim.seconds - sim_before,
            orders=len(orders),
        )

    def close(self) -> None:
        self.client.close()


class OrchestratorSide:
    """One worker provisioning chunk after chunk against its own simulator and store;
    billing's ``open`` of a chunk happens before its clock starts."""

    def __init__(self, store_url: str, total: int, latency: float = 0.0, tick: int = TICK) -> None:
        self.tick = tick
        self.fake = make_fake(total)
        self.sim, self.store_watch = Stopwatch(), Stopwatch()
        self.store = open_store(store_url)
        catalog = make_catalog(self.fake)
        self.billing = Provisioner(
            catalog, self.store, transport=self.fake.transport, failpoints=Failpoints()
        )
        #: billing's callback: the worker relays the events as part of its work
        self.delivered: list[Event] = []
        self.opened = 0
        self.worker = Provisioner(
            catalog,
            TimedStore(self.store, self.store_watch),  # type: ignore[arg-type]
            transport=TimedTransport(self.fake.transport, self.sim, latency),
            poll_interval=0.0,
            worker_id="w0",
            failpoints=Failpoints(),
            on_event=self.delivered.append,
        )

    def run(self, orders: list[Order]) -> Sample:
        for order in orders:
            self.billing.open(order)
        sim_before, store_before = self.sim.seconds, self.store_watch.seconds
        start, cpu_start = time.perf_counter(), time.thread_time()
        while True:
            if self.worker.tick(max_services=self.tick):
                continue
            if not self.worker.store.services(states=_UNFINISHED):
                break
            time.sleep(0.001)  # a backoff is running: wait for it
        sample = Sample(
            wall=time.perf_counter() - start,
            cpu=time.thread_time() - cpu_start,
            sim=self.sim.seconds - sim_before,
            store=self.store_watch.seconds - store_before,
            orders=len(orders),
        )
        self.opened += len(orders)
        check_activations(self.delivered, self.opened)
        return sample

    def close(self) -> None:
        for prov in (self.billing, self.worker):
            prov.close_clients()
        self.store.close()


def compare(
    kinds: list[str],
    urls: dict[str, Callable[[int], str]],
    total: int,
    chunk: int,
    latency: float = 0.0,
    tick: int = TICK,
) -> dict[str, Any]:
    """Bare calls and each store's orchestrator, alternating every ``chunk`` orders (in
    ABBA order), so slow and fast moments of a shared machine hit every side alike."""
    bares = {
        **bare_sides(total, latency),
        "same calls": BareSide(total, check_owner=True, batch=tick, latency=latency),
    }
    sides: dict[str, Any] = {**bares}
    sides.update({kind: OrchestratorSide(urls[kind](1), total, latency, tick) for kind in kinds})
    names = list(sides)
    totals = {name: Sample() for name in names}
    ratios: dict[str, list[float]] = collections.defaultdict(list)
    try:
        all_orders = orders_of(total)
        for n, first in enumerate(range(0, total, chunk)):
            part = all_orders[first : first + chunk]
            order = names if n % 2 == 0 else names[::-1]
            got: dict[str, Sample] = {}
            for name in order:
                got[name] = sides[name].run(part)
                totals[name].add(got[name])
            for kind in kinds:
                for base in bares:
                    ratios[f"{kind}/{base}"].append(got[kind].wall / got[base].wall - 1)
        writes = {kind: sides[kind].store.write_count / total for kind in kinds}
        routes = {name: _routes(side.fake, total) for name, side in sides.items()}
    finally:
        for side in sides.values():
            side.close()
    return {"totals": totals, "ratios": ratios, "writes": writes, "routes": routes}


def _with_schema(pg_url: str) -> str:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    return f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"


def _jsonable(got: dict[str, Any]) -> dict[str, Any]:
    return {**got, "totals": {k: attrs.asdict(v) for k, v in got["totals"].items()}}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument(
        "--workers",
        default="1,2,4",
        help="comma-separated thread counts of the throughput runs ('' for none)",
    )
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="repeat the comparison; the overhead reported is the median of the rounds",
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=50,
        help="orders per turn: the bare calls and each store's worker take turns (ABBA) "
        "so that both sides of a ratio see the same machine load",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="network latency added to every DCImanager request on every side (the "
        "default 0 is the in-process simulator alone)",
    )
    parser.add_argument(
        "--tick",
        type=int,
        default=TICK,
        help="services a worker leases per tick (Worker's batch; the same-calls baseline "
        "shares its reads over as many orders)",
    )
    parser.add_argument("--pg-url", default=os.environ.get("DCI6BRIDGE_TEST_PG_URL"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.tick < 1:
        parser.error(f"--tick: must be at least 1, got {args.tick}")
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if any(n < 1 for n in workers):
        parser.error(f"--workers: thread counts must be at least 1, got {args.workers!r}")
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    results: dict[str, Any] = {
        "orders": args.orders,
        "tick": args.tick,
        "rounds": [],
        "runs": [],
        "python": sys.version,
    }
    pg_server = None
    tmp = Path(tempfile.mkdtemp(prefix="dci6bridge-bench-"))
    try:
        urls: dict[str, Callable[[int], str]] = {}
        for kind in kinds:
            if kind == "sqlite":
                urls[kind] = lambda n: f"sqlite:///{tmp / f'sqlite-{uuid.uuid4().hex[:8]}.db'}"
            elif kind in ("postgresql", "postgres"):
                if pg_server is None and "pg_url" not in results:
                    pg_url, pg_server = pg_url_or_server(args.pg_url)
                    results["pg_url"] = "(given)" if args.pg_url else "(throwaway server)"
                urls[kind] = lambda n, pg_url=pg_url: _with_schema(pg_url)
            else:
                parser.error(f"--stores: unknown store {kind!r} (sqlite, postgresql)")
        # warm up every path (imports, caches, prepared statements) so none pays for
        # going first
        BareSide(50, check_owner=True).run(orders_of(min(50, args.orders)))
        for kind in kinds:
            run_orchestrator(urls[kind](0), min(50, args.orders), 1)

        print(
            f"{args.orders} orders, in-process simulator, instant installs, "
            f"{args.latency_ms:g} ms latency per request; ticks of {args.tick} services; the "
            f"bare calls and 1 worker per store take turns every {args.chunk} orders; "
            f"{args.rounds} round(s)"
        )
        print(
            f"{'round':<7}{'run':<12}{'ms/order':>10}{'cpu ms':>9}{'store ms':>10}"
            f"{'sim ms':>8}{'other ms':>10}{'writes':>8}{'requests':>10}"
            f"{'vs bare':>9}{'vs bare+check':>15}{'vs same calls':>15}"
        )
        bases = ("bare", "bare+check", "same calls")
        summary: dict[str, Any] = {
            kind: {base: {"wall": [], "cpu": []} for base in bases} for kind in kinds
        }
        for round_no in range(1, args.rounds + 1):
            got = compare(kinds, urls, args.orders, args.chunk, args.latency_ms / 1000, args.tick)
            results["rounds"].append(_jsonable(got))
            ms = 1000 / args.orders
            for name, t in got["totals"].items():
                requests = sum(got["routes"][name].values())
                if name in bases:
                    print(
                        f"{round_no:<7}{name:<12}{t.wall * ms:>10.2f}{t.cpu * ms:>9.2f}"
                        f"{'-':>10}{t.sim * ms:>8.2f}{(t.wall - t.sim) * ms:>10.2f}{'-':>8}"
                        f"{requests:>10.2f}"
                    )
                    continue
                ovh = []
                for base in bases:
                    b = got["totals"][base]
                    summary[name][base]["wall"].append(t.wall / b.wall - 1)
                    summary[name][base]["cpu"].append(t.cpu / b.cpu - 1)
                    ovh.append(t.wall / b.wall - 1)
                print(
                    f"{round_no:<7}{name:<12}{t.wall * ms:>10.2f}{t.cpu * ms:>9.2f}"
                    f"{t.store * ms:>10.2f}{t.sim * ms:>8.2f}"
                    f"{(t.wall - t.store - t.sim) * ms:>10.2f}{got['writes'][name]:>8.2f}"
                    f"{requests:>10.2f}{100 * ovh[0]:>+8.0f}%{100 * ovh[1]:>+14.0f}%"
                    f"{100 * ovh[2]:>+14.0f}%"
                )
        print()
        print(
            "bare: the 7 calls an order needs at the least, one order at a time; bare+check: "
            "the same plus the read of the server after the owner assignment (dci6-api.md "
            f"§7), 8 calls; same calls: bare+check with the free counts and the page of free "
            f"servers read once per {args.tick} orders, as a tick of the worker shares them: the "
            "orchestrator's own calls"
        )
        for kind in kinds:
            for base in bases:
                wall = summary[kind][base]["wall"]
                cpu = summary[kind][base]["cpu"]
                summary[kind][base].update(wall_median=_median(wall), cpu_median=_median(cpu))
                print(
                    f"{kind}: orchestrator overhead over {base}, median of {len(wall)} "
                    f"round(s): {100 * _median(wall):+.0f} % wall "
                    f"({', '.join(f'{100 * w:+.0f}' for w in wall)}), "
                    f"{100 * _median(cpu):+.0f} % CPU (target <= +25 %)"
                )
            print(f"  writes/order {got['writes'][kind]:.2f} (target <= 25)")
        for name, routes in got["routes"].items():
            print(f"  {name} requests/order by route: {routes}")
        results["summary"] = summary

        if workers:
            print()
            print(
                f"{args.orders} orders opened, then provisioned by N worker threads (one "
                "interpreter: they share the GIL and the in-process simulator); every "
                f"{args.chunk} activations the threads wait between two ticks while the bare "
                f"calls provision the next {args.chunk} orders; {args.rounds} round(s)"
            )
            print(
                f"{'round':<7}{'store':<11}{'workers':>8}{'orders/s':>10}{'ms/order':>10}"
                f"{'cpu ms':>8}{'store ms':>10}{'writes':>8}{'store calls':>13}{'refused':>9}"
                f"{'lists':>7}{'bare ms':>9}{'vs bare':>9}{'vs bare+check':>15}"
            )
            for round_no in range(1, args.rounds + 1):
                for kind in kinds:
                    for n in workers:
                        r = run_taking_turns(
                            urls[kind](n),
                            args.orders,
                            n,
                            args.tick,
                            args.latency_ms / 1000,
                            args.chunk,
                        )
                        r.update(store=kind, round=round_no)
                        results["runs"].append(r)
                        print(
                            f"{round_no:<7}{kind:<11}{n:>8}{r['orders_per_s']:>10.1f}"
                            f"{r['ms_per_order']:>10.2f}{r['cpu_ms_per_order']:>8.2f}"
                            f"{r['store_ms_per_order']:>10.2f}{r['writes_per_order']:>8.2f}"
                            f"{r['store_calls_per_order']:>13.1f}{100 * r['refused']:>8.0f}%"
                            f"{r['lists_per_order']:>7.2f}{r['bare_ms_per_order']:>9.2f}"
                            f"{100 * r['vs_bare']:>+8.0f}%{100 * r['vs_bare+check']:>+14.0f}%"
                        )
            print(
                "ms/order: wall time over the orders (1 / throughput); cpu ms: the worker "
                "threads' CPU time per order, summed; refused: the server reservations the "
                "store refused (another worker held the server); lists: reads of free "
                "servers per order; vs bare: ms/order against the bare calls' "
                "(target <= +25 %)"
            )
            for kind in kinds:
                for n in workers:
                    mine = [r for r in results["runs"] if (r["store"], r["workers"]) == (kind, n)]
                    rate = _median([r["orders_per_s"] for r in mine])
                    vs = [r["vs_bare"] for r in mine]
                    print(
                        f"{kind}, {n} worker(s), median of {len(mine)} round(s): "
                        f"{rate:.1f} orders/s, {100 * _median(vs):+.0f} % against bare "
                        f"({', '.join(f'{100 * v:+.0f}' for v in vs)})"
                    )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        if pg_server is not None:
            pg_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
