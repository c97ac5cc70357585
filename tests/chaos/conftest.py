"""Harness of the chaos suites: a served simulator, a catalog file pointing at it, worker
processes with failpoints, a nemesis, and the invariant checker.

Everything a test needs comes from the ``chaos`` fixture (a :class:`ChaosKit`); with
``--import-mode=importlib`` test modules cannot import helpers from each other, so the
helpers live here. The checker and the process nemesis themselves are shipped in
:mod:`dci6bridge.testing.chaos`.

Workers are separate processes running the worker command's own ``main`` (forked from a
fork server that imported it once, so the hundreds of restarts of a chaos run cost
milliseconds each; or real ``python -m dci6bridge worker`` processes with ``cli=True``)
against one status store and one served simulator (real HTTP on 127.0.0.1, real time).
Command-line workers may write bytecode even when ``PYTHONDONTWRITEBYTECODE`` is set (as
in CI): one that recompiles the package costs a second or more.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from dci6bridge import Catalog, Order, Provisioner, open_store
from dci6bridge.provisioning.states import TRANSITIONS
from dci6bridge.stores import StatusStore
from dci6bridge.testing import FakeDCImanager
from dci6bridge.testing._faults import Faults
from dci6bridge.testing.chaos import (
    DEFAULT_TARGETS,
    InvariantReport,
    RemoteTruth,
    WorkerFleet,
    check_invariants,
    read_marker,
)

#: Environment variable carrying the simulator's admin password to the workers (the
#: catalog file names it with ``password_env``; the password never sits in a file).
PASSWORD_ENV = "DCI6BRIDGE_CHAOS_DCI_PASSWORD"
CONFIGURATION = "E3-1230v6-64Gb-2x480SSD"
OS_TEMPLATE = "Ubuntu 22.04"
#: The tariff's second template (for reinstalls).
OTHER_TEMPLATE = "Debian 12"
#: What forked workers run (``WorkerFleet(entry=...)``): the worker command's own main.
WORKER_ENTRY = "dci6bridge.provisioning.worker:main"
#: Imported once by the fork server so a restarted worker is productive at once
#: (httpx imports its transport lazily, the store backends are imported on first use).
WORKER_PRELOAD = (
    "httpcore",
    "httpx",
    "dci6bridge.connect",
    "dci6bridge.stores.sqlite",
    "dci6bridge.stores.postgres",
    "psycopg",
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def catalog_toml(data: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The catalog structure as a TOML file (arrays of tables only)."""
    lines: list[str] = []
    for section, tables in data.items():
        for table in tables:
            lines.append(f"[[{section}]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
            lines.append("")
    return "\n".join(lines)


def catalog_data(
    url: str, admin_email: str, *, locations: int, ipv4_count: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """The catalog of a chaos world: one data center and module per simulator location
    (module ``dci-N`` at sort N, so the lowest location fills first), one tariff sold
    by all of them. The admin password comes from :data:`PASSWORD_ENV`."""
    return {
        "data_centers": [
            {"name": f"DC{n}", "location_id": n, "sort": n} for n in range(1, locations + 1)
        ],
        "modules": [
            {
                "name": f"dci-{n}",
                "data_center": f"DC{n}",
                "url": url,
                "username": admin_email,
                "password_env": PASSWORD_ENV,
                "department": f"Support-{n}",
                "sort": n,
            }
            for n in range(1, locations + 1)
        ],
        "tariffs": [
            {
                "name": "E3",
                "configuration": CONFIGURATION,
                "os_templates": [OS_TEMPLATE, OTHER_TEMPLATE],
                "modules": [f"dci-{n}" for n in range(1, locations + 1)],
                "ipv4_count": ipv4_count,
            }
        ],
    }


#: The life of a service in the crash matrix: (billing request, state it must reach).
LIFECYCLE: tuple[tuple[str, str], ...] = (
    ("open", "active"),
    ("reboot", "active"),
    ("reinstall", "active"),
    ("suspend", "suspended"),
    ("resume", "active"),
    ("close", "closed"),
)
#: Failpoints hit by the billing side (``Provisioner.open`` and requests), not a worker.
BILLING_POINTS = frozenset({"after:store.create_service", "after:store.request"})


def lifecycle_request(prov: Provisioner, order: Order, action: str) -> None:
    """Make billing request ``action`` of :data:`LIFECYCLE` for ``order``."""
    if action == "open":
        prov.open(order)
    elif action == "reinstall":
        prov.reinstall(order.service_id, OTHER_TEMPLATE)
    else:
        getattr(prov, action)(order.service_id)


def in_process(
    *, servers: int, ipv4_count: int = 0, **options: Any
) -> tuple[FakeDCImanager, Provisioner]:
    """An in-process simulator (one location of ``servers`` servers, installs of 5 s on
    its manual clock) and a provisioner on it with a memory store (no failpoints armed
    unless ``failpoints`` is given); drive it with ``run_until_idle(advance=fake.advance)``."""
    from dci6bridge import MemoryStore
    from dci6bridge.provisioning._failpoints import Failpoints

    fake = FakeDCImanager.with_inventory(
        locations=1,
        servers_per_location=servers,
        configurations=(CONFIGURATION,),
        install_duration=5,
    )
    catalog = Catalog.from_dict(
        catalog_data(fake.url, fake.admin_email, locations=1, ipv4_count=ipv4_count),
        environ={PASSWORD_ENV: fake.admin_password},
    )
    options.setdefault("failpoints", Failpoints())
    prov = Provisioner(
        catalog,
        MemoryStore(clock=fake.clock.now),
        transport=fake.transport,
        clock=fake.clock.now,
        sleep=fake.advance,
        poll_interval=1.0,
        **options,
    )
    return fake, prov


def probe_failpoints() -> dict[str, str]:
    """Every failpoint one service passes through in :data:`LIFECYCLE`, mapped to the
    request during which it is first reached, in order of first hit. Found by running
    the lifecycle in-process against the simulator with every point armed at
    probability 0 (counted, never fired), so the matrix follows the orchestrator as it
    changes instead of a hand-kept list."""
    from dci6bridge.provisioning._failpoints import Failpoints

    probe = Failpoints("*=0")
    fake, prov = in_process(servers=2, ipv4_count=1, failpoints=probe, worker_id="probe")
    order = Order(
        service_id="PROBE-1", tariff="E3", os_template=OS_TEMPLATE, customer_email="p@example.com"
    )
    first: dict[str, str] = {}
    with prov:
        for action, target in LIFECYCLE:
            lifecycle_request(prov, order, action)
            prov.run_until_idle(advance=fake.advance)
            state = prov.get(order.service_id).state.value
            if state != target:
                raise AssertionError(f"probe: {action} ended in {state}, not {target}")
            for point in probe.hits:
                first.setdefault(point, action)
    return first


@attrs.define
class World:
    """One served simulator, a catalog file for it, a store URL and the orders."""

    fake: FakeDCImanager
    url: str
    catalog: Catalog
    catalog_path: Path
    store_url: str
    dir: Path
    orders: list[Order]
    seed: int

    @property
    def emails(self) -> dict[str, str]:
        """Service id → the customer's email (the DCImanager user that must own it)."""
        return {o.service_id: o.customer_email.lower() for o in self.orders}

    @property
    def marker(self) -> Path:
        """The failpoint marker file of this world's workers."""
        return self.dir / "failpoints.log"

    def env(self, failpoints: str | None = None, **extra: str) -> dict[str, str]:
        """Environment of a worker process: the admin password, bytecode cache,
        failpoints (optional) with this world's seed and marker."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("DCI6BRIDGE_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        env[PASSWORD_ENV] = self.fake.admin_password
        if failpoints:
            env["DCI6BRIDGE_FAILPOINTS"] = failpoints
            env["DCI6BRIDGE_FAILPOINT_SEED"] = str(self.seed)
            env["DCI6BRIDGE_FAILPOINT_MARKER"] = str(self.marker)
        env.update(extra)
        return env

    def worker_argv(
        self,
        worker_id: str,
        *,
        lease_ttl: float,
        poll_interval: float = 0.2,
        max_attempts: int = 8,
        store_url: str | None = None,
        cli: bool = True,
    ) -> list[str]:
        """Arguments of one worker: the whole ``python -m dci6bridge worker`` command
        line, or (``cli=False``) only the arguments of :data:`WORKER_ENTRY`."""
        prefix = [sys.executable, "-m", "dci6bridge", "worker"] if cli else []
        return [
            *prefix,
            "--store",
            store_url or self.store_url,
            "--config",
            str(self.catalog_path),
            "--worker-id",
            worker_id,
            "--lease-ttl",
            str(lease_ttl),
            "--poll-interval",
            str(poll_interval),
            "--idle-sleep",
            "0.05",
            "--reconcile-every",
            "0",
            "--max-attempts",
            str(max_attempts),
        ]

    def provisioner(self, store: StatusStore, **options: Any) -> Provisioner:
        """An in-process provisioner on this world (no failpoints armed)."""
        from dci6bridge.provisioning._failpoints import Failpoints

        options.setdefault("failpoints", Failpoints())
        options.setdefault("worker_id", "test-process")
        options.setdefault("poll_interval", 0.1)
        options.setdefault("lease_ttl", 5.0)
        return Provisioner(self.catalog, store, **options)

    def check(self, store: StatusStore, **options: Any) -> InvariantReport:
        """I1-I5 for this world's orders (transition table of the orchestrator)."""
        options.setdefault("customer_emails", self.emails)
        options.setdefault("allowed", TRANSITIONS)
        return check_invariants(store, RemoteTruth.from_fake(self.fake), **options)

    def open_all(self, store: StatusStore) -> None:
        """Record every order (as billing would)."""
        with self.provisioner(store) as prov:
            for order in self.orders:
                prov.open(order)


def settled(store: StatusStore) -> tuple[bool, dict[str, int]]:
    """Whether every service rests in what billing asked for (or failed), and the
    count of services per state."""
    counts: dict[str, int] = {}
    done = True
    for row in store.services():
        counts[row.state] = counts.get(row.state, 0) + 1
        if row.state == "failed":
            continue
        if row.state != DEFAULT_TARGETS.get(row.desired) or row.runnable:
            done = False
    return done, counts


@attrs.define
class ChaosResult:
    """What one chaos run did and found."""

    seed: int
    wall: float
    settled: bool
    counts: dict[str, int]
    fleet: str
    crashes: int
    kills: int
    pauses: int
    report: InvariantReport
    log: str
    progress: list[tuple[float, int]] = attrs.field(factory=list)
    revocations: int = 0
    #: server ids the reconciler reported as orphans
    orphans_reported: list[int] = attrs.field(factory=list)
    #: the workers' warnings and errors, counted (see :func:`log_digest`)
    worker_log: str = ""

    def timeline(self, step: float = 5.0) -> str:
        """Active services every ``step`` seconds of the run."""
        out, mark = [], 0.0
        for t, active in self.progress:
            if t >= mark:
                out.append(f"{t:.0f}s:{active}")
                mark = t + step
        return " ".join(out)

    def summary(self) -> str:
        """One line for the test output; when the run did not settle, what the workers
        warned about follows (a run that makes no progress says why)."""
        line = (
            f"seed={self.seed} wall={self.wall:.1f}s settled={self.settled} "
            f"states={self.counts} {self.fleet} sessions_revoked={self.revocations} "
            f"violations={self.report.by_invariant()}"
        )
        return line if self.settled else f"{line}\nworker log:\n{self.worker_log}"


def log_digest(log_dir: Path, top: int = 12) -> str:
    """The workers' WARNING/ERROR lines counted by kind (service and server ids, times
    and numbers blanked), most frequent first, and the last traceback any worker wrote."""
    kinds: dict[str, int] = {}
    last_traceback: list[str] = []
    for path in sorted(log_dir.glob("worker-*.log")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for i, line in enumerate(lines):
            if " WARNING " in line or " ERROR " in line:
                kind = re.sub(r"(?<![A-Za-z])\d+(\.\d+)?", "N", line.split(" ", 2)[-1])[:160]
                kinds[kind] = kinds.get(kind, 0) + 1
            elif line.startswith("Traceback"):
                last_traceback = lines[i : i + 40]
    ranked = sorted(kinds.items(), key=lambda kv: -kv[1])[:top]
    out = [f"{n:6d} x {kind}" for kind, n in ranked] or ["(no warnings)"]
    return "\n".join(out + last_traceback[-20:])


class ChaosKit:
    """The ``chaos`` fixture: builds worlds and runs the nemesis against workers."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self._stack = contextlib.ExitStack()
        self._n = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._stack.close()

    def world(
        self,
        store_url: str | None = None,
        *,
        orders: int,
        servers_per_location: int | None = None,
        locations: int = 2,
        install_duration: float = 0.3,
        faults: Faults | None = None,
        token_ttl: float | None = None,
        seed: int = 1,
        shared_customers_every: int = 10,
        ipv4_count: int = 0,
    ) -> World:
        """A served simulator with ``locations`` modules (lowest sort first) selling one
        tariff, a catalog file for the workers, and ``orders`` orders (every
        ``shared_customers_every``-th order reuses the previous customer, so some
        customers own two servers through one DCImanager user)."""
        with self._lock:
            self._n += 1
            wdir = self.tmp / f"world{self._n}"
        wdir.mkdir()
        if servers_per_location is None:
            servers_per_location = orders // locations + 10
        fake = FakeDCImanager.with_inventory(
            locations=locations,
            servers_per_location=servers_per_location,
            configurations=(CONFIGURATION,),
            install_duration=install_duration,
            seed=seed,
            faults=faults,
            token_ttl=token_ttl,
        )
        with self._lock:
            url = self._stack.enter_context(fake.serve())
        data = catalog_data(url, fake.admin_email, locations=locations, ipv4_count=ipv4_count)
        path = wdir / "catalog.toml"
        path.write_text(catalog_toml(data), encoding="utf-8")
        catalog = Catalog.from_dict(data, environ={PASSWORD_ENV: fake.admin_password})
        order_list = []
        customer = 0
        for i in range(orders):
            if not (shared_customers_every and i and i % shared_customers_every == 0):
                customer += 1
            order_list.append(
                Order(
                    service_id=f"SVC-{i:04d}",
                    tariff="E3",
                    os_template=OS_TEMPLATE,
                    customer_email=f"customer{customer}@example.com",
                )
            )
        return World(
            fake=fake,
            url=url,
            catalog=catalog,
            catalog_path=path,
            store_url=store_url or f"sqlite:///{wdir / 'store.db'}",
            dir=wdir,
            orders=order_list,
            seed=seed,
        )

    def fleet(
        self,
        world: World,
        *,
        size: int = 1,
        failpoints: str | None = None,
        lease_ttl: float = 1.0,
        poll_interval: float = 0.1,
        cli: bool = False,
        name: str = "w",
        rng: random.Random | None = None,
        extra_env: Mapping[str, str] | None = None,
        store_url: str | None = None,
        entry: str = WORKER_ENTRY,
    ) -> WorkerFleet:
        """Workers for ``world`` (not started): forked from the fork server, or
        (``cli=True``) real ``python -m dci6bridge worker`` processes. ``entry`` is
        what a forked worker runs (``package.module:function``, called with the
        worker command's arguments)."""
        counter = iter(range(1, 1_000_000))
        return WorkerFleet(
            lambda slot: world.worker_argv(
                f"{name}{slot}.{next(counter)}",
                lease_ttl=lease_ttl,
                poll_interval=poll_interval,
                cli=cli,
                store_url=store_url,
            ),
            size=size,
            env=world.env(failpoints, **(extra_env or {})),
            log_dir=world.dir / "logs",
            rng=rng or random.Random(world.seed),
            entry=None if cli else entry,
            preload=(*WORKER_PRELOAD, WORKER_ENTRY.partition(":")[0]),
        )

    def run(
        self,
        world: World,
        *,
        workers: int = 6,
        failpoints: str | None = "*=0.02",
        kill_every: tuple[float, float] | None = (0.5, 1.0),
        pause: tuple[int, float] | None = None,
        lease_ttl: float = 3.0,
        budget: float = 120.0,
        store_url: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        reconcile: bool = True,
        expire_every: int = 0,
        entry: str = WORKER_ENTRY,
        during: Callable[[], object] | None = None,
        check: Mapping[str, Any] | None = None,
    ) -> ChaosResult:
        """Open every order, run ``workers`` worker processes under the nemesis until
        every service rests (or ``budget`` seconds pass), stop them, run the reconciler
        and a clean pass for what it handed over, and check the invariants.

        Nemesis, every ``kill_every`` seconds (uniform): SIGKILL a random worker; with
        ``pause = (n, seconds)``, every n-th time instead freeze one for ``seconds``
        (past its lease); every ``expire_every``-th time, also revoke every DCImanager
        session (the workers' next calls get 401 and log in again). Dead workers are
        restarted within 50 ms. Fixed cadences rather than dice, so that a short run
        still gets every kind of hit.

        ``during`` (e.g. billing sending requests) runs in a thread started with the
        workers; the run does not count as settled before it has returned. ``entry`` is
        what the forked workers run (:meth:`fleet`), ``check`` more options of
        :meth:`World.check`.
        """
        rng = random.Random(world.seed)
        store = open_store(store_url or world.store_url)
        try:
            world.open_all(store)
            url = store_url or world.store_url
            fleet = self.fleet(
                world,
                size=workers,
                failpoints=failpoints,
                lease_ttl=lease_ttl,
                poll_interval=0.2,
                rng=rng,
                extra_env=extra_env,
                store_url=url,
                entry=entry,
            )
            side = threading.Thread(target=during, name="chaos-during", daemon=True)
            start = time.monotonic()
            deadline = start + budget
            done = False
            counts: dict[str, int] = {}
            next_check = start
            progress: list[tuple[float, int]] = []
            ticks = revocations = 0
            next_hit = start + rng.uniform(*kill_every) if kill_every else float("inf")
            with fleet:
                if during is not None:
                    side.start()
                while (now := time.monotonic()) < deadline:
                    # dead workers come back within a tick, as under a process supervisor
                    time.sleep(0.05)
                    fleet.reap()
                    if now >= next_check:
                        next_check = now + 0.5
                        done, counts = settled(store)
                        done = done and not side.is_alive()
                        progress.append((now - start, counts.get("active", 0)))
                        if done:
                            break
                    if now >= next_hit and kill_every is not None:
                        next_hit = now + rng.uniform(*kill_every)
                        ticks += 1
                        if pause is not None and ticks % int(pause[0]) == 0:
                            fleet.pause_random(pause[1])
                        else:
                            fleet.kill_random()
                        if expire_every and ticks % expire_every == 0:
                            world.fake.expire_tokens()
                            revocations += 1
            if during is not None:
                side.join()
            wall = time.monotonic() - start
            orphans_reported: list[int] = []
            if reconcile and done:
                # the sweep may hand stale reservations to a worker: finish those too
                with world.provisioner(store) as prov:
                    sweep = prov.reconcile()
                    orphans_reported = sorted(o.server_id for o in sweep.orphans)
                    prov.run_until_idle(max_ticks=200)
            report = world.check(store, **(check or {}))
            log = report.format(store) if not report.ok else ""
            (world.dir / "report.txt").write_text(
                f"{fleet.summary()}\nwall={wall:.1f}s settled={done} states={counts}\n"
                f"{log or 'no violation'}\n",
                encoding="utf-8",
            )
            return ChaosResult(
                seed=world.seed,
                wall=wall,
                settled=done,
                counts=counts,
                fleet=fleet.summary(),
                crashes=fleet.crashes,
                kills=fleet.kills,
                pauses=fleet.pauses,
                report=report,
                log=log,
                progress=progress,
                revocations=revocations,
                orphans_reported=orphans_reported,
                worker_log="" if done else log_digest(world.dir / "logs"),
            )
        finally:
            store.close()

    def marker(self, world: World) -> list[str]:
        """Failpoints that fired in this world's workers, in order."""
        return read_marker(world.marker)


@pytest.fixture(scope="session")
def warm_bytecode() -> None:
    """Start the worker command once so the package's bytecode is written before a
    fleet of workers would all compile it at the same time."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [sys.executable, "-m", "dci6bridge", "worker", "--help"],
        env=env,
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def chaos_module(
    tmp_path_factory: pytest.TempPathFactory, warm_bytecode: None
) -> Iterator[ChaosKit]:
    """A :class:`ChaosKit` shared by the tests of one module (e.g. the crash matrix,
    whose cases all run in one parallel pass)."""
    kit = ChaosKit(tmp_path_factory.mktemp("chaos"))
    try:
        yield kit
    finally:
        kit.close()


@pytest.fixture
def chaos(tmp_path: Path, warm_bytecode: None) -> Iterator[ChaosKit]:
    """Build worlds and run chaos against them; everything is stopped afterwards."""
    kit = ChaosKit(tmp_path)
    try:
        yield kit
    finally:
        kit.close()


@pytest.fixture(scope="session")
def chaos_hooks() -> types.SimpleNamespace:
    """This module's helpers for test modules, which cannot import a conftest."""
    return types.SimpleNamespace(
        CONFIGURATION=CONFIGURATION,
        OS_TEMPLATE=OS_TEMPLATE,
        PASSWORD_ENV=PASSWORD_ENV,
        catalog_data=catalog_data,
        catalog_toml=catalog_toml,
        LIFECYCLE=LIFECYCLE,
        BILLING_POINTS=BILLING_POINTS,
        lifecycle_request=lifecycle_request,
        probe_failpoints=probe_failpoints,
        in_process=in_process,
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``worker_crash_point``: every failpoint a worker passes in :data:`LIFECYCLE`."""
    if "worker_crash_point" in metafunc.fixturenames:
        points = [p for p in probe_failpoints() if p not in BILLING_POINTS]
        metafunc.parametrize("worker_crash_point", points)
