"""Harness of the chaos suites: a served simulator, a catalog file pointing at it, worker
processes with failpoints, a nemesis, and the invariant checker.

Everything a test needs comes from the ``chaos`` fixture (a :class:`ChaosKit`); with
``--import-mode=importlib`` test modules cannot import helpers from each other, so the
helpers live here. The checker and the process nemesis themselves are shipped in
:mod:`dci6bridge.testing.chaos`.

Worker subprocesses run ``python -m dci6bridge worker`` against the same status store and
the same served simulator (real HTTP on 127.0.0.1, real time). They may write bytecode
even when ``PYTHONDONTWRITEBYTECODE`` is set (as in CI): a restarted worker that
recompiles the package costs a second or more, and the chaos runs restart hundreds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
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
#: States a service rests in; anything else is still being worked on.
#: What forked workers run (``WorkerFleet(entry=...)``): the worker command's own main.
WORKER_ENTRY = "dci6bridge.provisioning.worker:main"
RESTING = frozenset({"active", "suspended", "closed", "failed"})
TARGET = {"active": "active", "suspended": "suspended", "closed": "closed"}


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
        if row.state != TARGET.get(row.desired) or row.runnable:
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

    def summary(self) -> str:
        """One line for the test output."""
        return (
            f"seed={self.seed} wall={self.wall:.1f}s settled={self.settled} "
            f"states={self.counts} {self.fleet} violations={self.report.by_invariant()}"
        )


class ChaosKit:
    """The ``chaos`` fixture: builds worlds and runs the nemesis against workers."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self._stack = contextlib.ExitStack()
        self._n = 0

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
    ) -> World:
        """A served simulator with ``locations`` modules (lowest sort first) selling one
        tariff, a catalog file for the workers, and ``orders`` orders (every
        ``shared_customers_every``-th order reuses the previous customer, so some
        customers own two servers through one DCImanager user)."""
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
        url = self._stack.enter_context(fake.serve())
        data = {
            "data_centers": [
                {"name": f"DC{n}", "location_id": n, "sort": n} for n in range(1, locations + 1)
            ],
            "modules": [
                {
                    "name": f"dci-{n}",
                    "data_center": f"DC{n}",
                    "url": url,
                    "username": fake.admin_email,
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
                    "os_templates": [OS_TEMPLATE],
                    "modules": [f"dci-{n}" for n in range(1, locations + 1)],
                }
            ],
        }
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

    def run(
        self,
        world: World,
        *,
        workers: int = 6,
        failpoints: str | None = "*=0.02",
        kill_every: tuple[float, float] | None = (0.5, 1.0),
        pause: tuple[float, float] | None = None,
        lease_ttl: float = 3.0,
        budget: float = 120.0,
        store_url: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        reconcile: bool = True,
    ) -> ChaosResult:
        """Open every order, run ``workers`` worker processes under the nemesis until
        every service rests (or ``budget`` seconds pass), stop them, run the reconciler
        and a clean pass for what it handed over, and check the invariants.

        Nemesis, every ``kill_every`` seconds (uniform): SIGKILL a random worker; with
        ``pause = (probability, seconds)``, instead freeze one for ``seconds`` (past its
        lease) with that probability. Dead workers are restarted at once.
        """
        rng = random.Random(world.seed)
        store = open_store(store_url or world.store_url)
        try:
            world.open_all(store)
            url = store_url or world.store_url
            counter = iter(range(1, 1_000_000))
            fleet = WorkerFleet(
                lambda slot: world.worker_argv(
                    f"w{slot}.{next(counter)}", lease_ttl=lease_ttl, store_url=url, cli=False
                ),
                size=workers,
                env=world.env(failpoints, **(extra_env or {})),
                log_dir=world.dir / "logs",
                rng=rng,
                entry=WORKER_ENTRY,
            )
            start = time.monotonic()
            deadline = start + budget
            done = False
            counts: dict[str, int] = {}
            with fleet:
                while time.monotonic() < deadline:
                    if kill_every is None:
                        time.sleep(0.25)
                    else:
                        time.sleep(rng.uniform(*kill_every))
                    fleet.reap()
                    done, counts = settled(store)
                    if done:
                        break
                    if kill_every is None:
                        continue
                    if pause is not None and rng.random() < pause[0]:
                        fleet.pause_random(pause[1])
                    else:
                        fleet.kill_random()
            wall = time.monotonic() - start
            if reconcile and done:
                # the sweep may hand stale reservations to a worker: finish those too
                with world.provisioner(store) as prov:
                    prov.reconcile()
                    prov.run_until_idle(max_ticks=200)
            report = world.check(store)
            log = report.format(store) if not report.ok else ""
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


@pytest.fixture
def chaos(tmp_path: Path, warm_bytecode: None) -> Iterator[ChaosKit]:
    """Build worlds and run chaos against them; everything is stopped afterwards."""
    kit = ChaosKit(tmp_path)
    try:
        yield kit
    finally:
        kit.close()
