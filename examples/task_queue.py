"""Drive the orchestrator from your own task queue instead of ``dci6bridge worker``.

Billing systems often have a task queue already (Celery, RQ, Dramatiq, cron). You do not
need our worker loop: call ``prov.tick()`` periodically from it. ``tick()`` leases a few
runnable services, runs their next steps, releases them and relays events; it never
blocks on a long install (the install is polled on later ticks), so it fits a periodic
task, and any number of ticks may run at once in threads or processes.

With Celery it would look like this::

    app = Celery("billing")
    app.conf.beat_schedule = {"dci6bridge-tick": {"task": "billing.tick", "schedule": 2.0}}

    @app.task
    def tick():
        provisioner().tick(max_services=4)   # one Provisioner per worker process

    @app.task
    def open_order(spec):
        provisioner().open(dci6bridge.Order.from_spec(spec))

To run without Celery, this script uses a minimal stand-in: ``MiniBeat`` submits the
periodic task to a thread pool every ``interval`` seconds, like Celery beat feeding a
worker pool, and orders arrive as tasks on the same pool. The simulator runs on the real
clock with 2-second installs, so the whole run takes a few seconds.

    python examples/task_queue.py
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import dci6bridge as d
from dci6bridge.testing import FakeDCImanager, SystemClock

HERE = Path(__file__).resolve().parent


class MiniBeat:
    """Calls ``task`` on ``pool`` every ``interval`` seconds until stopped (a toy Celery
    beat: no persistence, no overlap control beyond what the task itself does)."""

    def __init__(self, pool: ThreadPoolExecutor, task: Callable[[], object], interval: float):
        self._pool = pool
        self._task = task
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mini-beat", daemon=True)
        self.submitted = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._pool.submit(self._task)
            self.submitted += 1

    def __enter__(self) -> MiniBeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    fake = FakeDCImanager.with_inventory(
        locations=2, servers_per_location=6, clock=SystemClock(), install_duration=2.0
    )
    passwords = {"DCI_AMS_PASSWORD": fake.admin_password, "DCI_FRA_PASSWORD": fake.admin_password}
    catalog = d.Catalog.from_toml(HERE / "catalog.toml", environ=passwords)
    store = d.open_store("memory://")  # use sqlite:/// or postgresql:// across processes
    # Real time everywhere: only the transport is the simulator's.
    prov = d.Provisioner(catalog, store, transport=fake.transport, poll_interval=0.5)

    def tick() -> None:  # the periodic task
        worked = prov.tick(max_services=4)
        if worked:
            print(f"  tick: worked on {worked} service(s)")

    customers = ["jane", "omar", "li", "ana"]
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="queue-worker")
    with pool, MiniBeat(pool, tick, interval=0.2) as beat:
        # orders arrive as tasks too, e.g. from the web shop's checkout
        opened: list[Future[d.Service]] = [
            pool.submit(prov.open, d.Order(f"Q-{n}", "E3-64", "Debian 12", f"{name}@example.com"))
            for n, name in enumerate(customers, start=1)
        ]
        for future in opened:
            print(f"opened {future.result().service_id}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = {s.service_id: s.status for s in prov.services()}
            if all(st is d.ServiceStatus.ACTIVE for st in statuses.values()):
                break
            time.sleep(0.2)
    print(f"the beat submitted {beat.submitted} ticks")
    # Amsterdam (sort 1) has two free E3 servers: the later orders go to Frankfurt.

    for svc in prov.services():
        print(f"{svc.service_id}: {svc.status.value}, server {svc.server_id} on {svc.module}")
    prov.close_clients()
    store.close()
    if any(s.status is not d.ServiceStatus.ACTIVE for s in prov.services()):
        raise SystemExit("not every service became active")


if __name__ == "__main__":
    main()
