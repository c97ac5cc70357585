"""Duplicate-request storm (T5 at the Provisioner level): billing retries, double
clicks and racing webhook deliveries must create each service once and apply each
request once, whichever of the concurrent calls wins.

* threads: 10 concurrent ``open`` calls for each of 40 service ids (3 % of them with a
  different order), then 5 concurrent ``suspend`` calls per service with the same
  request id, then provisioning: every service ends SUSPENDED after exactly one
  ``suspending`` transition;
* processes: concurrent ``dci6bridge open`` commands for the same service ids (one of
  three with a different customer), each its own process and store connection.
"""

from __future__ import annotations

import collections
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from dci6bridge import Catalog, Order, Provisioner, SpecMismatch, open_store
from dci6bridge.provisioning._failpoints import Failpoints
from dci6bridge.testing import FakeDCImanager

SERVICES = 40
OPENS_PER_SERVICE = 10
SUSPENDS_PER_SERVICE = 5
THREADS = 16
MISMATCH_RATE = 0.03


def _order(hooks: Any, sid: str, variant: int) -> Order:
    return Order(
        service_id=sid,
        tariff="E3",
        os_template=hooks.OS_TEMPLATE,
        customer_email=f"{sid.lower()}-{variant}@example.com",
    )


def _storm(store_url: str, hooks: Any) -> None:
    fake = FakeDCImanager.with_inventory(
        locations=1,
        servers_per_location=SERVICES + 5,
        configurations=(hooks.CONFIGURATION,),
        install_duration=30,
    )
    catalog = Catalog.from_dict(
        hooks.catalog_data(fake.url, fake.admin_email, locations=1),
        environ={hooks.PASSWORD_ENV: fake.admin_password},
    )
    rng = random.Random(5)
    ids = [f"DUP-{i:03d}" for i in range(SERVICES)]
    calls = [
        (sid, 1 if rng.random() < MISMATCH_RATE else 0)
        for sid in ids
        for _ in range(OPENS_PER_SERVICE)
    ]
    rng.shuffle(calls)
    outcomes: list[tuple[str, int, str, float | None]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def billing(share: list[tuple[str, int]], action: str) -> None:
        store = None
        try:
            store = open_store(store_url)
            with Provisioner(catalog, store, failpoints=Failpoints()) as prov:
                # A bounded wait: one thread failing to start must fail the test, not
                # leave the others parked at the barrier forever.
                barrier.wait(timeout=60)
                for sid, variant in share:
                    try:
                        if action == "open":
                            svc = prov.open(_order(hooks, sid, variant))
                            result: tuple[str, float | None] = ("ok", svc.created_at)
                        else:
                            prov.suspend(sid, request_id=f"billing-suspend-{sid}")
                            result = ("ok", None)
                    except SpecMismatch:
                        result = ("mismatch", None)
                    with lock:
                        outcomes.append((sid, variant, *result))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            if store is not None:
                store.close()

    def run(all_calls: list[tuple[str, int]], action: str) -> None:
        barrier.reset()
        threads = [
            threading.Thread(target=billing, args=(all_calls[i::THREADS], action), daemon=True)
            for i in range(THREADS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads), "billing threads did not finish"

    run(calls, "open")
    store = open_store(store_url)
    try:
        rows = {r.service_id: r for r in store.services()}
        assert sorted(rows) == ids  # each service exactly once, none lost
        by_sid: dict[str, list[tuple[int, str, float | None]]] = collections.defaultdict(list)
        for sid, variant, result, created in outcomes:
            by_sid[sid].append((variant, result, created))
        assert sum(len(v) for v in by_sid.values()) == len(calls)
        mismatches = 0
        for sid, seen in by_sid.items():
            winner = rows[sid].spec["customer_email"]
            for variant, result, created in seen:
                if _order(hooks, sid, variant).customer_email == winner:
                    # the same order again: the existing service, unchanged
                    assert result == "ok", (sid, variant)
                    assert created == rows[sid].created_at
                else:
                    assert result == "mismatch", (sid, variant)
                    mismatches += 1
            assert rows[sid].version == 0
            assert not store.history(sid)
        assert mismatches >= 1  # the storm did contain conflicting orders

        run([(sid, 0) for sid in ids for _ in range(SUSPENDS_PER_SERVICE)], "suspend")
        for row in store.services():
            assert row.desired == "suspended"
            assert row.desired_seq == 1, (row.service_id, row.desired_seq)

        with Provisioner(
            catalog,
            store,
            transport=fake.transport,
            clock=fake.clock.now,
            sleep=fake.advance,
            poll_interval=10.0,
            failpoints=Failpoints(),
        ) as prov:
            prov.run_until_idle(advance=fake.advance)
        truth = fake.state
        for sid in ids:
            row = store.get(sid)
            assert row is not None
            assert row.state == "suspended", (sid, row.state)
            suspending = [t for t in store.history(sid) if t.to_state == "suspending"]
            assert len(suspending) == 1, sid
            assert truth.install_count(row.server_id or 0) == 1
        owners = [s.owner_email for s in truth.servers.values() if s.owner_email]
        assert len(owners) == len(set(owners)) == SERVICES
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_duplicate_storm_sqlite(tmp_path: Path, chaos_hooks: Any) -> None:
    _storm(f"sqlite:///{tmp_path / 'storm.db'}", chaos_hooks)


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_duplicate_storm_postgres(pg_store_url: str, chaos_hooks: Any) -> None:
    _storm(pg_store_url, chaos_hooks)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_duplicate_open_from_processes(tmp_path: Path, chaos_hooks: Any) -> None:
    """``dci6bridge open`` in concurrent processes for the same ids: one wins per id;
    the same order again succeeds, a different one fails with exit status 2."""
    fake = FakeDCImanager.with_inventory(
        locations=1, servers_per_location=5, configurations=(chaos_hooks.CONFIGURATION,)
    )
    config = tmp_path / "catalog.toml"
    config.write_text(
        chaos_hooks.catalog_toml(chaos_hooks.catalog_data(fake.url, fake.admin_email, locations=1))
    )
    store_url = f"sqlite:///{tmp_path / 'storm.db'}"
    env = {**os.environ, chaos_hooks.PASSWORD_ENV: fake.admin_password}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    jobs = []
    for i in range(4):
        sid = f"PROC-{i}"
        for variant in (0, 0, 1):
            argv = [
                sys.executable, "-m", "dci6bridge", "open", "--config", str(config),
                "--store", store_url, "--service-id", sid, "--tariff", "E3",
                "--os-template", chaos_hooks.OS_TEMPLATE,
                "--email", f"{sid.lower()}-{variant}@example.com", "--json",
            ]  # fmt: skip
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            jobs.append((sid, variant, proc))
    results = [(sid, v, p.wait(60), p.stderr.read().decode()) for sid, v, p in jobs]  # type: ignore[union-attr]
    for _, _, proc in jobs:
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    store = open_store(store_url)
    try:
        rows = {r.service_id: r for r in store.services()}
        assert sorted(rows) == [f"PROC-{i}" for i in range(4)]
        for sid, variant, code, err in results:
            same = rows[sid].spec["customer_email"] == f"{sid.lower()}-{variant}@example.com"
            assert code == (0 if same else 2), (sid, variant, code, err)
            if not same:
                assert "different" in err.lower() or "mismatch" in err.lower(), err
    finally:
        store.close()
