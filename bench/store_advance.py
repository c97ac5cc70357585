"""Cost of one fenced write, per request and per transaction, in every store.

Replays the request shapes the provisioning worker sends (recorded from a
``bench/provision.py`` run with one worker and ``tick(max_services=8)``): each service
makes three ``advance_many`` requests, always 8 services per transaction (lockstep):

* **reserve**: 2 moves (``pending`` → ``selecting_module`` → ``claiming_server``, each
  with a ``data`` patch), a ``server_id`` patch, ``reserve_server``, a ``user:…``
  singleton and ``renew``;
* **install**: 3 moves (``creating_user`` → ``assigning_owner`` → ``installing_os``)
  whose ``data`` patches carry the install intent, and ``renew``;
* **final**: 1 move to ``active`` with the ``data`` the service keeps, an ``activated``
  outbox event and ``release``.

Only the ``advance_many`` calls are timed (creating the services and leasing them is
not). The figure is µs per request (a transaction's time divided by its 8 requests),
per shape and overall, the median of ``--rounds``.

``--baseline REV`` also runs the same benchmark on the library as it was at git
revision ``REV`` (exported to a temporary directory and run in a subprocess, in the
same run, on the same PostgreSQL server), so that a change is measured against its
starting point on the same machine at the same moment:

    python bench/store_advance.py                          # memory, SQLite, PostgreSQL
    python bench/store_advance.py --baseline 338ca01 --services 800
    python bench/store_advance.py --stores sqlite --batch 1   # one request per transaction

Without ``--pg-url`` (or ``DCI6BRIDGE_TEST_PG_URL``) a throwaway PostgreSQL server is
started from the local binaries, as the test suite does (fsync off).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

# the store benchmark next to this script starts the throwaway PostgreSQL server
sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_cas import _pg_url as pg_url_or_server

from dci6bridge.stores import (
    AdvanceRequest,
    Lease,
    MemoryStore,
    Move,
    NewOutbox,
    StatusStore,
    open_store,
)

SHAPES = ("reserve", "install", "final")
T0 = 1_800_000_000.0


def spec_of(i: int) -> dict[str, Any]:
    """An order's spec as billing's ``open`` stores it."""
    return {
        "customer_email": f"bench{i}@example.com",
        "customer_name": None,
        "data_center": None,
        "hostname": None,
        "os_template": "Ubuntu 22.04",
        "recipe": None,
        "service_id": f"B-{i:05d}",
        "ssh_keys": [],
        "tariff": "E3",
    }


def reserve_request(lease: Lease, i: int, now: float) -> AdvanceRequest:
    """The worker's first write of an order: module chosen, server reserved."""
    return AdvanceRequest(
        lease,
        expected_state="pending",
        expected_version=0,
        expected_desired_seq=0,
        moves=(
            Move(
                "selecting_module",
                {"data": {"since": now}, "runnable": True},
                {"tariff": "E3"},
            ),
            Move(
                "claiming_server",
                {"module": "dci-1", "data": {"since": now + 0.001}, "runnable": True},
                {"module": "dci-1", "free": 26, "skipped": []},
            ),
        ),
        patch={"server_id": i + 1},
        reserve_server=i + 1,
        singleton=f"user:https://dci.test:bench{i}@example.com",
        renew=60.0,
    )


def install_request(lease: Lease, i: int, now: float) -> AdvanceRequest:
    """The write before the install: user made owner, the install intent recorded."""
    return AdvanceRequest(
        lease,
        expected_state="claiming_server",
        expected_version=2,
        expected_desired_seq=0,
        moves=(
            Move(
                "creating_user",
                {"server_id": i + 1, "data": {"since": now}, "runnable": True},
                {"server_id": i + 1},
            ),
            Move(
                "assigning_owner",
                {"user_id": i + 2, "data": {"since": now + 0.001}, "runnable": True},
                {"user_id": i + 2, "created": True},
            ),
            Move(
                "installing_os",
                {
                    "data": {
                        "ips_before": [],
                        "install_issued_at": now,
                        "install_baseline": i + 1,
                        "install_sent": None,
                        "root_password_next": "utggDRWtbtRL7A==LDpu",
                        "since": now + 0.002,
                    },
                    "runnable": True,
                },
                {"server_id": i + 1, "user_id": i + 2, "assigned": True},
            ),
        ),
        renew=60.0,
    )


def final_request(lease: Lease, i: int, now: float) -> AdvanceRequest:
    """The last write: active, the event for billing, the lease given up."""
    return AdvanceRequest(
        lease,
        expected_state="installing_os",
        expected_version=5,
        expected_desired_seq=0,
        moves=(
            Move(
                "active",
                {
                    "op_id": 30 + i,
                    "data": {
                        "root_password": "utggDRWtbtRL7A==LDpu",
                        "root_password_next": None,
                        "os_template": "Ubuntu 22.04",
                        "os_template_next": None,
                        "ip_addresses": [],
                        "taken": None,
                        "exhausted_modules": None,
                        "since": now,
                    },
                    "runnable": False,
                },
                {"server_id": i + 1, "op_id": 30 + i, "ip_addresses": []},
                (
                    NewOutbox(
                        "activated",
                        {
                            "server_id": i + 1,
                            "module": "dci-1",
                            "user_id": i + 2,
                            "ip_addresses": [],
                            "os_template": "Ubuntu 22.04",
                            "hostname": None,
                            "created_at": now,
                        },
                    ),
                ),
            ),
        ),
        release=True,
    )


BUILDERS: dict[str, Callable[[Lease, int, float], AdvanceRequest]] = {
    "reserve": reserve_request,
    "install": install_request,
    "final": final_request,
}


def run_once(store: StatusStore, services: int, batch: int, first: int = 0) -> dict[str, float]:
    """Provision ``services`` services' writes in groups of ``batch``, numbered (their
    servers too) from ``first``; seconds per shape."""
    spent = dict.fromkeys(SHAPES, 0.0)
    run = uuid.uuid4().hex[:6]
    for start in range(first, first + services, batch):
        group = range(start, min(start + batch, first + services))
        for i in group:
            store.create_service(f"{run}-{i:05d}", spec_of(i), state="pending", desired="active")
        leases: dict[str, Lease] = {}
        while len(leases) < len(group):  # services created earlier are all done
            for lease in store.acquire("w0", 600, limit=len(group) - len(leases)):
                leases[lease.service_id] = lease
        ordered = sorted(leases.values(), key=lambda lease: lease.service_id)
        now = store.now()
        for shape in SHAPES:
            requests = [BUILDERS[shape](lease, start + k, now) for k, lease in enumerate(ordered)]
            began = time.perf_counter()
            outcomes = store.advance_many(requests)
            spent[shape] += time.perf_counter() - began
            for outcome in outcomes:
                if isinstance(outcome, Exception) or outcome.reserved is False:
                    raise SystemExit(f"{shape}: refused: {outcome!r}")
    return spent


def sample(new_url: Callable[[], str], services: int, batch: int) -> dict[str, float]:
    """µs per request of each shape and overall, on a fresh store (``new_url()``: a new
    empty database or schema)."""
    url = new_url()
    store = MemoryStore() if url == "memory" else open_store(url)
    warm = min(services, 2 * batch)
    run_once(store, warm, batch)  # warm up caches and plans
    spent = run_once(store, services, batch, first=warm)
    store.close()
    got = {shape: 1e6 * spent[shape] / services for shape in SHAPES}
    got["all"] = 1e6 * sum(spent.values()) / (3 * services)
    return got


def url_factory(kind: str, tmp: Path, pg_url: str | None) -> Callable[[], str] | None:
    """A function giving a new empty store URL of ``kind`` on each call."""

    def memory() -> str:
        return "memory"

    def sqlite() -> str:
        return f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.db'}"

    def postgresql() -> str:
        join = "&" if "?" in str(pg_url) else "?"
        return f"{pg_url}{join}schema=bench_{uuid.uuid4().hex[:12]}"

    factories = {"memory": memory, "sqlite": sqlite, "postgresql": postgresql}
    return factories.get("postgresql" if kind == "postgres" else kind)


def export(rev: str, into: Path) -> Path:
    """The library's source at git revision ``rev``, written under ``into``: a path
    to put first on ``PYTHONPATH``."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "src"], cwd=root, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def baseline_sample(src: Path, argv: list[str]) -> dict[str, dict[str, float]]:
    """One round of this benchmark on the library under ``src``, in a subprocess."""
    with tempfile.TemporaryDirectory(prefix="store-advance-base-") as tmp:
        out = Path(tmp) / "figures.json"
        subprocess.run(
            [sys.executable, __file__, *argv, "--rounds", "1", "--json", str(out), "--quiet"],
            env={**os.environ, "PYTHONPATH": str(src)},
            check=True,
        )
        figures: dict[str, dict[str, float]] = json.loads(out.read_text())
    return figures


def medians(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per store and shape, the median over rounds."""
    return {
        kind: {
            shape: statistics.median(r[kind][shape] for r in rounds) for shape in rounds[0][kind]
        }
        for kind in rounds[0]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="memory,sqlite,postgresql")
    parser.add_argument("--services", type=int, default=400, help="services per round")
    parser.add_argument("--batch", type=int, default=8, help="requests per transaction")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="also measure the library at this git revision")
    parser.add_argument("--pg-url", default=os.environ.get("DCI6BRIDGE_TEST_PG_URL"))
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--quiet", action="store_true", help="print nothing (with --json)")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    server = None
    with tempfile.TemporaryDirectory(prefix="store-advance-") as tmp:
        try:
            pg_url = args.pg_url
            if pg_url is None and any(k.startswith("postgres") for k in kinds):
                pg_url, server = pg_url_or_server(None)
            factories = {}
            for kind in kinds:
                new_url = url_factory(kind, Path(tmp), pg_url)
                if new_url is None:
                    parser.error(f"--stores: unknown store {kind!r}")
                factories[kind] = new_url
            src = export(args.baseline, Path(tmp)) if args.baseline else None
            again = ["--stores", args.stores, "--services", str(args.services)]
            again += ["--batch", str(args.batch), "--pg-url", str(pg_url)]
            ours: list[dict[str, dict[str, float]]] = []
            theirs: list[dict[str, dict[str, float]]] = []
            for r in range(args.rounds):
                # before and after take turns (ABBA), so that a slow moment of a shared
                # machine hits both alike
                if src is not None and r % 2 == 0:
                    theirs.append(baseline_sample(src, again))
                ours.append(
                    {
                        kind: sample(new, args.services, args.batch)
                        for kind, new in factories.items()
                    }
                )
                if src is not None and r % 2 == 1:
                    theirs.append(baseline_sample(src, again))
            figures = medians(ours)
            base = medians(theirs) if theirs else {}
        finally:
            if server is not None:
                server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.quiet:
        return 0
    print(
        f"µs per request, {args.services} services x 3 requests, {args.batch} per "
        f"transaction, median of {args.rounds} round(s)"
        + (f"; before = {args.baseline}" if base else "")
    )
    header = f"{'store':<12}" + "".join(f"{shape:>18}" for shape in (*SHAPES, "all"))
    print(header)
    for kind, got in figures.items():
        cells = []
        for shape in (*SHAPES, "all"):
            old = base.get(kind, {}).get(shape)
            cell = f"{got[shape]:.0f}" if old is None else f"{old:.0f} -> {got[shape]:.0f}"
            cells.append(f"{cell:>18}")
        print(f"{kind:<12}" + "".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
