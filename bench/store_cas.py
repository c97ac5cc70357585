"""Status-store throughput through the real Store API (durability.md §10, T11).

Two figures per backend and process count:

* **transitions/s** — each process holds leases on its own services and moves them with
  fenced compare-and-set ``transition`` calls (one transaction each: CAS + history row);
  afterwards ``sum(version) == transitions`` proves no update was lost;
* **claims/s** — processes race to drain a queue of ``--jobs`` runnable services with
  ``acquire`` (SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite) and ``release`` each
  one as done (2 transactions per job); afterwards every job must have been claimed
  exactly once (lease epoch 1).

    python bench/store_cas.py                       # SQLite and PostgreSQL, 1/2/4 procs
    python bench/store_cas.py --backend sqlite --procs 1,2,4,8 --seconds 5
    python bench/store_cas.py --pg-url postgresql://user@host/db

Without ``--pg-url`` (or ``DCI6BRIDGE_TEST_PG_URL``) a throwaway PostgreSQL server is
started from the local binaries, as the test suite does (fsync off: compare SQLite with
``synchronous=NORMAL`` to it, not to a production server).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from dci6bridge.errors import StoreError
from dci6bridge.stores import StatusStore, open_store

FAR = 10**12  # "done": a not_before no run will reach


def _transitions(
    url: str, index: int, start: float, seconds: float, per_proc: int
) -> dict[str, Any]:
    store = open_store(url)
    leases = {}
    while len(leases) < per_proc:  # each process leases its own share first
        for lease in store.acquire(f"cas-{index}", 3600, limit=per_proc - len(leases)):
            leases[lease.service_id] = lease
    rows = {sid: lease.service for sid, lease in leases.items()}
    while time.time() < start:
        time.sleep(0.001)
    done = busy = 0
    deadline = start + seconds
    order = list(leases)
    while time.time() < deadline:
        for sid in order:
            row = rows[sid]
            try:
                rows[sid] = store.transition(
                    leases[sid],
                    expected_state=row.state,
                    expected_version=row.version,
                    new_state=f"s{row.version + 1}",
                )
                done += 1
            except StoreError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                busy += 1
    store.close()
    return {"done": done, "busy": busy, "end": deadline}


def _claims(url: str, index: int, start: float, seconds: float, per_proc: int) -> dict[str, Any]:
    store = open_store(url)
    while time.time() < start:
        time.sleep(0.001)
    done = 0
    while True:  # drain the queue: claim a job, mark it done
        leases = store.acquire(f"claim-{index}", 60)
        if not leases:
            break
        store.release(leases[0], not_before=FAR)
        done += 1
    store.close()
    return {"done": done, "busy": 0, "end": time.time()}


def _worker(args: tuple[str, str, int, float, float, int]) -> dict[str, Any]:
    kind, url, index, start, seconds, per_proc = args
    fn = _transitions if kind == "cas" else _claims
    return fn(url, index, start, seconds, per_proc)


def _seed(store: StatusStore, count: int, prefix: str) -> None:
    for n in range(count):
        store.create_service(f"{prefix}{n:06d}", {"n": n}, state="s0", desired="active")


def run(kind: str, url: str, procs: int, seconds: float, jobs: int) -> tuple[float, int]:
    """One measurement; returns (operations per second, busy errors)."""
    store = open_store(url)
    per_proc = 8
    _seed(store, per_proc * procs if kind == "cas" else jobs, kind)
    ctx = mp.get_context("spawn")
    start = time.time() + 2.0
    work = [(kind, url, i, start, seconds, per_proc) for i in range(procs)]
    with ctx.Pool(procs) as pool:
        results = pool.map(_worker, work)
    done = sum(r["done"] for r in results)
    elapsed = max(r["end"] for r in results) - start
    busy = sum(r["busy"] for r in results)
    services = store.services()
    if kind == "cas":
        versions = sum(s.version for s in services)
        assert versions == done, f"lost update: sum(version)={versions} != {done}"
    else:
        epochs = [s.lease_epoch for s in services]
        assert done == jobs, f"{jobs - done} jobs never claimed"
        assert set(epochs) == {1}, "a job was claimed twice"
    store.close()
    return done / elapsed, busy


def _pg_url(given: str | None) -> tuple[str, Any]:
    if given:
        return given, None
    path = Path(__file__).resolve().parent.parent / "tests" / "pg_server.py"
    spec = importlib.util.spec_from_file_location("pg_server", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = module.PgServer().start()
    return server.url, server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--procs", default="1,2,4", help="process counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0, help="per transitions run")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per claims run")
    parser.add_argument("--synchronous", default="NORMAL", help="SQLite: NORMAL or FULL")
    parser.add_argument("--pg-url", default=os.environ.get("DCI6BRIDGE_TEST_PG_URL"))
    args = parser.parse_args(argv)
    counts = [int(p) for p in args.procs.split(",")]
    server = None
    print(f"{'backend':<10} {'procs':>5} {'transitions/s':>14} {'claims/s':>10} {'busy':>5}")
    try:
        backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
        for backend in backends:
            for procs in counts:
                figures = []
                busy_total = 0
                for kind in ("cas", "claim"):
                    if backend == "sqlite":
                        folder = tempfile.mkdtemp(prefix="store-cas-")
                        url = f"sqlite:///{folder}/bench.db?synchronous={args.synchronous}"
                    else:
                        if server is None and not args.pg_url:
                            args.pg_url, server = _pg_url(None)
                        base = args.pg_url
                        sep = "&" if "?" in base else "?"
                        url = f"{base}{sep}schema=bench_{uuid.uuid4().hex[:10]}"
                    rate, busy = run(kind, url, procs, args.seconds, args.jobs)
                    figures.append(rate)
                    busy_total += busy
                print(
                    f"{backend:<10} {procs:>5} {figures[0]:>14,.0f} {figures[1]:>10,.0f} "
                    f"{busy_total:>5}",
                    flush=True,
                )
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
