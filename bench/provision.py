"""Provisioning throughput and orchestrator overhead (issue 5; durability.md §10).

Provisions ``--orders`` orders (default 1,000) against the in-process simulator with
instant installs, for SQLite and PostgreSQL with 1, 2 and 4 worker threads (each with
its own store connection and ``Provisioner``), and prints per run:

* **orders/s** — orders made ACTIVE per second of worker time (opening excluded);
* **writes/order** — store write transactions per order (``store.write_count`` of every
  store object, the billing side's ``open`` included);
* **store calls** — store method calls per order (reads and writes, worker side);
* **ms/order** (1 worker) — wall time per order, split into store time (every store
  call, timed through a proxy), simulator time (inside the in-process transport) and
  the rest (client library + orchestrator logic). Worker threads share one interpreter
  (the in-process simulator cannot be shared across processes), so more threads add
  lock and GIL waits rather than throughput, and their time does not split cleanly.

Then, in the same run, the **bare client calls** an order needs — free counts, one page
of free servers, find user, create user, set owner, install, one read of the finished
install (the template list once per run, as the orchestrator caches it) — are made
directly with ``dci6bridge.Client`` against a fresh simulator with the same inventory,
and the orchestrator's time per order (1 worker) is compared with them.

    python bench/provision.py                          # SQLite + PostgreSQL, 1/2/4 workers
    python bench/provision.py --stores sqlite --orders 200
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

import httpx

# the store benchmark next to this script starts the throwaway PostgreSQL server
from store_cas import _pg_url as pg_url_or_server

from dci6bridge import Catalog, Client, Order, Provisioner, Q, open_store
from dci6bridge.provisioning._failpoints import Failpoints
from dci6bridge.provisioning.states import IN_FLIGHT
from dci6bridge.testing import FakeDCImanager

CONFIGURATION = "E3-1230v6-64Gb-2x480SSD"
OS_TEMPLATE = "Ubuntu 22.04"
LOCATION = 1
CLAIM_PAGE = 25  # the orchestrator reads free servers one page of this size at a time


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
    """The simulator's transport, timed: the time spent answering inside it."""

    def __init__(self, inner: httpx.BaseTransport, watch: Stopwatch) -> None:
        self._inner = inner
        self._watch = watch

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        try:
            return self._inner.handle_request(request)
        finally:
            self._watch.add(time.perf_counter() - start)


class TimedStore:
    """A status store whose every method call is timed (attributes pass through)."""

    def __init__(self, inner: Any, watch: Stopwatch) -> None:
        self._inner = inner
        self._watch = watch

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value
        watch = self._watch

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                watch.add(time.perf_counter() - start)

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


def run_orchestrator(store_url: str, orders: int, workers: int) -> dict[str, Any]:
    """Open ``orders`` orders, then provision them with ``workers`` threads."""
    fake = make_fake(orders)
    catalog = make_catalog(fake)
    sim, store_watch = Stopwatch(), Stopwatch()
    transport = TimedTransport(fake.transport, sim)
    stores: list[Any] = []

    def provisioner(worker_id: str) -> Provisioner:
        store = open_store(store_url)
        stores.append(store)
        return Provisioner(
            catalog,
            TimedStore(store, store_watch),  # type: ignore[arg-type]
            transport=transport,
            poll_interval=0.0,
            worker_id=worker_id,
            failpoints=Failpoints(),
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

    def work(prov: Provisioner) -> None:
        try:
            while not done.is_set():
                if not prov.tick(max_services=8):
                    # idle: the others hold what is left, or everything is done
                    if not prov.store.services(states=_UNFINISHED):
                        done.set()
                    time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)
            done.set()

    threads = [threading.Thread(target=work, args=(p,)) for p in provs]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    rows = stores[0].services()
    active = sum(1 for r in rows if r.state == "active")
    if active != orders:
        raise SystemExit(f"only {active}/{orders} orders became active: {_states(rows)}")
    writes = sum(s.write_count for s in stores)
    requests = len(fake.state.requests)
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
        "thread_ms_per_order": 1000 * wall * workers / orders,
        "store_ms_per_order": 1000 * store_watch.seconds / orders,
        "store_calls_per_order": store_watch.calls / orders,
        "sim_ms_per_order": 1000 * sim.seconds / orders,
        "requests_per_order": requests / orders,
        "routes_per_order": _routes(fake, orders),
    }


_UNFINISHED = sorted(s.value for s in IN_FLIGHT)


def _states(rows: list[Any]) -> dict[str, int]:
    return dict(collections.Counter(r.state for r in rows))


def _routes(fake: FakeDCImanager, orders: int) -> dict[str, float]:
    counts = collections.Counter(r.route for r in fake.state.requests)
    return {route: round(n / orders, 2) for route, n in sorted(counts.items())}


def run_bare(orders: int) -> dict[str, Any]:
    """The client calls one order needs, made directly: no store, no orchestrator."""
    fake = make_fake(orders)
    sim = Stopwatch()
    transport = TimedTransport(fake.transport, sim)
    where = Q.free() & (Q("configuration") == CONFIGURATION) & (Q("location_id") == LOCATION)
    with Client(
        fake.url, email=fake.admin_email, password=fake.admin_password, transport=transport
    ) as dci:
        start = time.perf_counter()
        templates = {t.name: t.id for t in dci.os_templates.list(location_id=LOCATION)}
        for order in orders_of(orders):
            counts = dci.servers.configurations()
            assert any(c.configuration == CONFIGURATION and c.free_server_count for c in counts)
            server = next(
                iter(dci.servers.list(where=where, page_size=CLAIM_PAGE, limit=CLAIM_PAGE))
            )
            user = dci.users.find(order.customer_email)
            if user is None:
                user = dci.users.create(
                    email=order.customer_email, password="Bench-password-1", full_name="bench"
                )
            dci.servers.set_owner(server.id, user.id)
            dci.servers.install_os(
                server.id, templates[OS_TEMPLATE], password="Root-password-1", ssh_keys=[]
            )
            finished = dci.servers.get(server.id)
            assert finished.operation is not None
            assert finished.operation.is_ok
        wall = time.perf_counter() - start
    return {
        "orders": orders,
        "wall_s": wall,
        "ms_per_order": 1000 * wall / orders,
        "sim_ms_per_order": 1000 * sim.seconds / orders,
        "requests_per_order": len(fake.state.requests) / orders,
        "routes_per_order": _routes(fake, orders),
    }


def _with_schema(pg_url: str) -> str:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    return f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated thread counts")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("DCI6BRIDGE_TEST_PG_URL"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    results: dict[str, Any] = {"orders": args.orders, "runs": [], "python": sys.version}
    pg_server = None
    tmp = Path(tempfile.mkdtemp(prefix="dci6bridge-bench-"))
    try:
        # warm up both paths (imports, caches) so neither pays for going first
        run_bare(min(50, args.orders))
        run_orchestrator(f"sqlite:///{tmp / 'warmup.db'}", min(50, args.orders), 1)
        bare = run_bare(args.orders)
        results["bare"] = bare
        print(
            f"bare client calls: {bare['ms_per_order']:.2f} ms/order "
            f"({bare['requests_per_order']:.2f} requests/order, simulator "
            f"{bare['sim_ms_per_order']:.2f} ms)"
        )
        header = (
            f"{'store':<11}{'workers':>8}{'orders/s':>10}{'writes/order':>14}{'store calls':>13}"
            f"{'ms/order':>10}{'store ms':>10}{'sim ms':>8}{'other ms':>10}{'requests':>10}"
        )
        print(header)
        for kind in kinds:
            url_for: Callable[[int], str]
            if kind == "sqlite":

                def url_for(n: int, kind: str = kind) -> str:
                    return f"sqlite:///{tmp / f'{kind}-{n}.db'}"
            elif kind in ("postgresql", "postgres"):
                if pg_server is None and "pg_url" not in results:
                    pg_url, pg_server = pg_url_or_server(args.pg_url)
                    results["pg_url"] = "(given)" if args.pg_url else "(throwaway server)"

                def url_for(n: int, pg_url: str = pg_url) -> str:
                    return _with_schema(pg_url)
            else:
                parser.error(f"--stores: unknown store {kind!r} (sqlite, postgresql)")
            for n in workers:
                r = run_orchestrator(url_for(n), args.orders, n)
                r["store"] = kind
                other = (
                    r["ms_per_order"] * n - r["store_ms_per_order"] * n - r["sim_ms_per_order"] * n
                )
                r["other_ms_per_order"] = other / n
                results["runs"].append(r)
                breakdown = (
                    f"{r['thread_ms_per_order']:>10.2f}{r['store_ms_per_order']:>10.2f}"
                    f"{r['sim_ms_per_order']:>8.2f}{r['other_ms_per_order']:>10.2f}"
                    if n == 1
                    else f"{'-':>10}{'-':>10}{'-':>8}{'-':>10}"
                )
                print(
                    f"{kind:<11}{n:>8}{r['orders_per_s']:>10.1f}{r['writes_per_order']:>14.2f}"
                    f"{r['store_calls_per_order']:>13.1f}{breakdown}{r['requests_per_order']:>10.2f}"
                )
        print()
        for r in results["runs"]:
            if r["workers"] != 1:
                continue
            overhead = r["ms_per_order"] / bare["ms_per_order"] - 1
            r["overhead_vs_bare"] = overhead
            print(
                f"{r['store']}: orchestrator {r['ms_per_order']:.2f} ms/order vs bare client "
                f"{bare['ms_per_order']:.2f} ms/order: overhead {100 * overhead:+.0f} % "
                f"(target <= +25 %); writes/order {r['writes_per_order']:.2f} (target <= 25)"
            )
            print(f"  orchestrator requests/order by route: {r['routes_per_order']}")
        print(f"  bare requests/order by route:         {bare['routes_per_order']}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        if pg_server is not None:
            pg_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
