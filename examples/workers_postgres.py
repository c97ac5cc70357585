"""Several worker processes sharing one PostgreSQL store and one DCImanager.

The production layout: billing opens orders in the PostgreSQL status store, and any
number of ``dci6bridge worker`` processes (on any number of hosts) provision them. Each
worker leases a service before it touches it, so no two workers ever work on the same
service, and a worker that dies loses nothing: its lease expires and another worker
continues from the last recorded step.

Here the simulator is served over real HTTP on 127.0.0.1 (so the worker processes can
reach it), with 3-second installs on the real clock; the script opens the orders,
starts the workers with ``python -m dci6bridge worker``, waits until every service is
active, stops the workers with SIGTERM (they finish their current step) and shows which
worker did what.

    python examples/workers_postgres.py postgresql://user@localhost/billing
    DCI6BRIDGE_PG_URL=postgresql://... python examples/workers_postgres.py --workers 4
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import dci6bridge as d
from dci6bridge.testing import FakeDCImanager, SystemClock

HERE = Path(__file__).resolve().parent


def served_catalog(url: str, folder: Path) -> Path:
    """examples/catalog.toml with both modules pointing at the served simulator."""
    text = (HERE / "catalog.toml").read_text()
    for host in ("https://dci-ams.example.com", "https://dci-fra.example.com"):
        text = text.replace(host, url)
    path = folder / "catalog.toml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pg_url", nargs="?", default=os.environ.get("DCI6BRIDGE_PG_URL"))
    parser.add_argument("--workers", type=int, default=3)
    # more orders than one worker's batch (8), so that every worker gets some even when
    # one of them starts ticking first
    parser.add_argument("--orders", type=int, default=24)
    args = parser.parse_args()
    if not args.pg_url:
        parser.error("give the PostgreSQL URL as an argument or in DCI6BRIDGE_PG_URL")

    fake = FakeDCImanager.with_inventory(
        locations=2, servers_per_location=3 * args.orders, clock=SystemClock(), install_duration=3.0
    )
    # The workers read the modules' password from these variables, as in production.
    env = {
        **os.environ,
        "DCI_AMS_PASSWORD": fake.admin_password,
        "DCI_FRA_PASSWORD": fake.admin_password,
    }
    run = uuid.uuid4().hex[:6]  # fresh service ids on every run against the same database
    with fake.serve() as url, tempfile.TemporaryDirectory() as tmp:
        catalog_path = served_catalog(url, Path(tmp))
        catalog = d.Catalog.from_toml(catalog_path, environ=env)
        store = d.open_store(args.pg_url)
        with d.Provisioner(catalog, store) as billing:  # the billing side only opens orders
            ids = []
            for n in range(1, args.orders + 1):
                order = d.Order(f"PG-{run}-{n}", "E3-64", "Ubuntu 22.04", f"c{n}@example.com")
                ids.append(billing.open(order).service_id)
            print(f"opened {len(ids)} orders in {type(store).__name__}; simulator at {url}")

            worker = [sys.executable, "-m", "dci6bridge", "worker", "--config", str(catalog_path)]
            worker += ["--store", args.pg_url, "--poll-interval", "1", "--idle-sleep", "0.2"]
            workers = [
                subprocess.Popen(
                    [*worker, "--worker-id", f"worker-{k}", "--reconcile-every", "0"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(Path(tmp) / f"worker-{k}.log").open("w"),
                )
                for k in range(1, args.workers + 1)
            ]
            print(f"started {len(workers)} workers: pids {[w.pid for w in workers]}")
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    statuses = Counter(billing.get(i).status.value for i in ids)
                    print(f"  {dict(sorted(statuses.items()))}")
                    if statuses["active"] == len(ids):
                        break
                    time.sleep(1.0)
            finally:
                for w in workers:
                    w.send_signal(signal.SIGTERM)  # graceful: the current step finishes
                codes = [w.wait(timeout=60) for w in workers]
            print(f"workers stopped with exit codes {codes}")

            by_worker: Counter[str] = Counter()
            for sid in ids:
                by_worker.update(t.worker for t in billing.history(sid))
            print(f"state changes per worker: {dict(sorted(by_worker.items()))}")
            for sid in ids:
                svc = billing.get(sid)
                print(f"{sid}: {svc.status.value}, server {svc.server_id} on {svc.module}")
            final = [billing.get(i) for i in ids]
        store.close()
    servers = [s.server_id for s in final]
    if len(set(servers)) != len(servers):
        raise SystemExit(f"a server was given to two orders: {servers}")
    if any(s.status is not d.ServiceStatus.ACTIVE for s in final):
        raise SystemExit("not every service became active")


if __name__ == "__main__":
    main()
