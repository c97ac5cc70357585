"""Drivers: tick and run_until_idle, the Worker loop (threads, stop()), and the worker
process (graceful exit on SIGTERM)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dci6bridge.domain import Catalog, Order
from dci6bridge.errors import ConfigError
from dci6bridge.provisioning import Provisioner, ServiceStatus, Worker
from dci6bridge.provisioning._failpoints import FailpointCrash, Failpoints
from dci6bridge.stores import MemoryStore, SQLiteStore
from dci6bridge.testing import FakeDCImanager

Drive = Callable[[Provisioner], int]
NewOrder = Callable[..., Order]


def test_tick_is_bounded_and_run_until_idle_does_not_spin(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder
) -> None:
    for i in range(3):
        prov.open(new_order(f"S{i}", email=f"c{i}@example.com"))
    assert prov.tick(max_services=2) == 2
    assert prov.tick(max_services=2) == 1
    assert prov.tick() == 0  # all three installing: nothing runnable now
    waits: list[float] = []

    def advance(seconds: float) -> None:
        waits.append(seconds)
        fake.advance(seconds)

    prov.run_until_idle(advance=advance)
    assert all(s.status is ServiceStatus.ACTIVE for s in prov.services())
    # it slept until the next poll each time instead of spinning
    assert waits
    assert all(w > 0 for w in waits)
    assert len(waits) < 200


def test_services_by_status(prov: Provisioner, new_order: NewOrder, drive: Drive) -> None:
    prov.open(new_order("S1"))
    prov.open(new_order("S2"))
    drive(prov)
    prov.suspend("S2")
    drive(prov)
    assert [s.service_id for s in prov.services(ServiceStatus.ACTIVE)] == ["S1"]
    assert [s.service_id for s in prov.services("suspended")] == ["S2"]
    assert len(prov.services()) == 2


def test_sibling_orders_of_a_new_customer_create_one_user(
    make_prov: Callable[..., Provisioner],
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
) -> None:
    # S1's worker dies right after claiming "I create jane's user", before creating it
    doomed = make_prov(failpoints=Failpoints(["after:store.singleton=raise"]))
    doomed.open(new_order("S1"))
    with pytest.raises(FailpointCrash):
        drive(doomed)
    other = make_prov()
    other.open(new_order("S2"))
    drive(other)  # S2 waits for the claim to run out, then creates the user; S1 too
    assert [s.status for s in other.services()] == [ServiceStatus.ACTIVE] * 2
    assert len(fake.state.users_by_email("jane@example.com")) == 1
    assert fake.state.count("users.create") == 1


def test_worker_threads_share_the_work_and_stop(new_order: NewOrder) -> None:
    fake = FakeDCImanager.with_inventory(locations=2, servers_per_location=30, install_duration=0)
    from .conftest import make_catalog

    store = MemoryStore()
    prov = Provisioner(
        make_catalog(fake),
        store,
        transport=fake.transport,
        rng=random.Random(3),
        poll_interval=0.01,
        failpoints=Failpoints(),
    )
    n = 12
    for i in range(n):
        prov.open(new_order(f"S{i:02d}", email=f"c{i % 3}@example.com"))
    worker = Worker(prov, concurrency=4, idle_sleep=0.01, reconcile_every=0)
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(s.status is ServiceStatus.ACTIVE for s in prov.services()):
            break
        time.sleep(0.02)
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert worker.stopping
    services = prov.services()
    assert [s.status for s in services] == [ServiceStatus.ACTIVE] * n
    assert len({s.server_id for s in services}) == n
    for c in range(3):
        assert len(fake.state.users_by_email(f"c{c}@example.com")) == 1
    assert all(fake.state.install_count(s.server_id) == 1 for s in services)
    assert worker.worked >= n
    # every lease was given back
    assert all(r.lease_owner is None or r.lease_until <= store.now() for r in store.services())


def test_run_once_and_the_reconciler_singleton(
    prov: Provisioner, fake: FakeDCImanager, new_order: NewOrder
) -> None:
    prov.open(new_order())
    worker = Worker(prov, reconcile_every=300.0, clock=fake.clock.now)
    other = Worker(prov, reconcile_every=300.0, clock=fake.clock.now)
    assert worker.run_once() == 1
    assert prov.store.try_singleton("reconciler", "someone-else", 10.0) is False
    assert other.run_once() == 0


def test_worker_arguments_are_checked(prov: Provisioner) -> None:
    with pytest.raises(ConfigError, match="concurrency") as exc:
        Worker(prov, concurrency=0, idle_sleep=-1)
    assert any("idle_sleep" in p for p in exc.value.problems)


CATALOG = """
[[data_centers]]
name = "AMS"
location_id = 1

[[modules]]
name = "dci-ams"
data_center = "AMS"
url = "{url}"
username = "{email}"
password_env = "TEST_DCI_PASSWORD"
department = "Support"

[[tariffs]]
name = "E3"
configuration = "E3-1230v6-64Gb-2x480SSD"
os_templates = ["Ubuntu 22.04"]
modules = ["dci-ams"]
"""


def test_a_signal_never_takes_the_stop_event_lock(prov: Provisioner) -> None:
    """A signal handler runs in the main thread between two bytecodes, possibly while
    that thread holds the stop Event's lock (inside ``Event.wait``, which the idle loop
    spends its time in): the handler must not take that lock (``Event.set`` did, and a
    SIGTERM once hung a worker for good). It sets a flag the loop turns into a stop."""
    worker = Worker(prov, idle_sleep=0.01, reconcile_every=0, prune_every=0)
    returned = threading.Event()

    def signal_while_the_lock_is_held() -> None:
        with worker._stop._cond:  # type: ignore[attr-defined]  # as inside Event.wait
            worker._on_signal(signal.SIGTERM, None)
        returned.set()

    t = threading.Thread(target=signal_while_the_lock_is_held, daemon=True)
    t.start()
    t.join(5)
    assert returned.is_set(), "the signal handler blocked on the stop Event's lock"
    assert worker.stopping
    started = time.monotonic()
    worker.run_forever()  # sees the flag at its first check
    assert time.monotonic() - started < 5


def test_worker_process_provisions_and_stops_on_sigterm(
    tmp_path: Path, new_order: NewOrder
) -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=6, install_duration=0.2)
    with fake.serve() as url:
        config = tmp_path / "catalog.toml"
        config.write_text(CATALOG.format(url=url, email=fake.admin_email))
        db = tmp_path / "status.db"
        env = {**os.environ, "TEST_DCI_PASSWORD": fake.admin_password}
        env.pop("DCI6BRIDGE_FAILPOINTS", None)
        log = (tmp_path / "worker.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dci6bridge",
                "worker",
                "--store",
                f"sqlite:///{db}",
                "--config",
                str(config),
                "--poll-interval",
                "0.1",
                "--idle-sleep",
                "0.05",
                "--worker-id",
                "proc-1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            store = SQLiteStore(db)
            catalog = Catalog.from_toml(config, environ=env)
            prov = Provisioner(catalog, store, failpoints=Failpoints())
            prov.open(new_order(os_template="Ubuntu 22.04"))
            deadline = time.monotonic() + 30
            while prov.get("S1").status is not ServiceStatus.ACTIVE:
                assert proc.poll() is None, (tmp_path / "worker.log").read_text()
                assert time.monotonic() < deadline, prov.history("S1")
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
        text = (tmp_path / "worker.log").read_text()
        assert "worker proc-1: started" in text
        assert "stopping" in text
        assert "stopped" in text
        assert fake.admin_password not in text
        assert [h.worker for h in prov.history("S1")] == ["proc-1"] * len(prov.history("S1"))
        store.close()
