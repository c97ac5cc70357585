"""Several real processes on one store: the duplicate storm (T5), the SQLite pitfall guard
(T12) and PostgreSQL's claim under concurrency.

Each worker is a fresh ``python`` process that opens the store from its URL, as a worker
deployed by a user would; they start together once all of them are connected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dci6bridge.stores import StatusStore, open_store

pytestmark = pytest.mark.slow

WORKER = r"""
import json, random, sys, time
from dci6bridge.errors import LeaseLost, SpecMismatch, StaleState, StoreError
from dci6bridge.stores import open_store

import pathlib
mode, url, index, barrier, arg = sys.argv[1:6]
index, barrier = int(index), pathlib.Path(barrier)
store = open_store(url)
store.get("warm-up")  # connected before the start
rng = random.Random(index)
out = {"busy": 0, "errors": []}
start = 0.0

def wait():
    # Start together: say we are ready, then wait for the parent's "go".
    global start
    (barrier / f"ready-{index}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.002)
    start = time.time()

if mode == "storm":
    ids = [f"svc-{n:04d}" for n in range(int(arg))]
    rng.shuffle(ids)
    wait()
    results = {}
    for sid in ids:
        n = int(sid[4:])
        spec = {"tariff": "E3", "n": n, **({"by": index} if n % 30 == 0 else {})}
        try:
            _, created = store.create_service(sid, spec, state="pending", desired="active")
            results[sid] = "created" if created else "existing"
        except SpecMismatch:
            results[sid] = "mismatch"
    applied = {}
    for sid in ids:
        decide = lambda s: {"desired": "suspended", "desired_seq": s.desired_seq + 1}
        _, applied[sid] = store.request(sid, "suspend-1", "suspend", {}, decide)
    out.update(results=results, applied=applied)

elif mode == "churn":
    wait()
    deadline, moves = start + float(arg), 0
    while time.time() < deadline:
        try:
            leases = store.acquire(f"w{index}", 30)
            if not leases:
                continue
            lease = leases[0]
            row = lease.service
            store.transition(
                lease,
                expected_state=row.state,
                expected_version=row.version,
                new_state=f"s{row.version + 1}",
                detail={"by": index},
            )
            moves += 1
            store.release(lease)
        except (LeaseLost, StaleState) as exc:
            out["errors"].append(repr(exc))
        except StoreError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                out["busy"] += 1
            else:
                out["errors"].append(repr(exc))
    out["moves"] = moves

elif mode == "claim":
    wait()
    got = []
    while True:
        leases = store.acquire(f"w{index}", 600, limit=int(arg))
        if not leases:
            break
        got.extend((x.service_id, x.epoch) for x in leases)
    out["got"] = got

store.close()
print(json.dumps(out))
"""


def _run_workers(mode: str, url: str, processes: int, arg: Any) -> list[dict[str, Any]]:
    barrier = Path(tempfile.mkdtemp(prefix="store-mp-"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, url, str(i), str(barrier), str(arg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < processes:
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), "a worker died before the start"
        time.sleep(0.01)
    (barrier / "go").touch()
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outputs


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    return str(request.getfixturevalue("pg_store_url"))


def _open(url: str) -> StatusStore:
    return open_store(url)


def test_duplicate_storm_creates_each_service_once(shared_url: str) -> None:
    ids, processes = 150, 4
    store = _open(shared_url)  # creates the schema before the storm
    outputs = _run_workers("storm", shared_url, processes, ids)
    services = {s.service_id: s for s in store.services()}
    assert len(services) == ids
    for n in range(ids):
        sid = f"svc-{n:04d}"
        outcomes = Counter(out["results"][sid] for out in outputs)
        assert outcomes["created"] == 1, (sid, outcomes)
        if n % 30 == 0:  # every process sent its own spec: the losers must be told
            assert outcomes["mismatch"] == processes - 1, (sid, outcomes)
            winner = next(i for i, out in enumerate(outputs) if out["results"][sid] == "created")
            assert services[sid].spec["by"] == winner
        else:
            assert outcomes["existing"] == processes - 1, (sid, outcomes)
        assert sum(out["applied"][sid] for out in outputs) == 1, f"{sid}: suspend applied once"
        assert (services[sid].desired, services[sid].desired_seq) == ("suspended", 1)
    store.close()


def _seed(store: StatusStore, count: int) -> None:
    for n in range(count):
        store.create_service(f"svc-{n:04d}", {"n": n}, state="s0", desired="active")


def _check_history(store: StatusStore, outputs: list[dict[str, Any]]) -> int:
    moves = sum(out["moves"] for out in outputs)
    services = store.services()
    assert sum(s.version for s in services) == moves, "no lost or phantom transition"
    for service in services:
        history = store.history(service.service_id)
        assert [h.version for h in history] == list(range(1, service.version + 1))
        assert all(h.from_state == f"s{h.version - 1}" for h in history)
        assert all(h.to_state == f"s{h.version}" for h in history)
    return moves


def test_sqlite_pitfall_guard_no_busy_error_and_no_lost_update(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/churn.db"
    store = _open(url)
    _seed(store, 40)
    outputs = _run_workers("churn", url, 4, 2.0)
    assert [out["busy"] for out in outputs] == [0, 0, 0, 0], "SQLITE_BUSY surfaced"
    assert [out["errors"] for out in outputs] == [[], [], [], []]
    moves = _check_history(store, outputs)
    assert moves > 200, f"only {moves} transitions in 2 s: the guard measured nothing"
    store.close()


@pytest.mark.postgres
def test_postgres_concurrent_churn_keeps_the_history_exact(pg_store_url: str) -> None:
    store = _open(pg_store_url)
    _seed(store, 40)
    outputs = _run_workers("churn", pg_store_url, 4, 2.0)
    assert [out["errors"] for out in outputs] == [[], [], [], []]
    assert _check_history(store, outputs) > 40
    store.close()


@pytest.mark.postgres
def test_postgres_concurrent_acquire_never_double_claims(pg_store_url: str) -> None:
    store = _open(pg_store_url)
    _seed(store, 400)
    outputs = _run_workers("claim", pg_store_url, 4, 3)
    claimed = Counter(sid for out in outputs for sid, _ in out["got"])
    assert len(claimed) == 400
    assert max(claimed.values()) == 1
    assert {epoch for out in outputs for _, epoch in out["got"]} == {1}
    busy = sum(1 for out in outputs if out["got"])
    assert busy >= 2, "claims ran concurrently (more than one process got work)"
    store.close()


def test_a_store_sent_to_a_spawned_process_reopens_the_same_database(shared_url: str) -> None:
    import multiprocessing

    store = _open(shared_url)
    _seed(store, 2)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        # The child unpickles the store (path or URL plus options), never a connection.
        seen = pool.apply(type(store).get, (store, "svc-0001"))
        created = pool.apply(
            type(store).create_service,
            (store, "from-child", {"n": 9}),
            {"state": "s0", "desired": "active"},
        )
    assert seen == store.get("svc-0001")
    assert created[1] is True
    assert store.get("from-child") == created[0]
    store.close()
