"""``dci6bridge demo``: the whole library at work in a few seconds, with no network.

It starts the DCImanager 6 simulator in-process, opens a status store (SQLite in a
temporary directory unless ``--store`` names one), loads the built-in example catalog
(``demo_catalog.toml`` next to this module), lets orders arrive and provisions them while
showing every state change, then suspends, resumes and closes one service and prints a
summary. The simulator's manual clock is moved by the demo loop, so the tens of minutes
an OS install takes pass in a moment of real time.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from dci6bridge.cli._common import format_duration, render_table
from dci6bridge.cli._progress import Progress, Row, make_progress

if TYPE_CHECKING:
    from dci6bridge.domain import Catalog, Order
    from dci6bridge.provisioning import Provisioner, Service
    from dci6bridge.testing import FakeDCImanager

__all__ = ["add_parser", "run"]

#: The demo catalog reads its modules' password from this variable; the demo sets it
#: to the simulator's administrator password.
PASSWORD_ENV = "DCI6BRIDGE_DEMO_PASSWORD"
ADMIN_EMAIL = "admin@demo.example.com"
INSTALL_MINUTES = 40
#: Simulated seconds the clock moves when no service has work to do right now.
STEP_S = 30.0
#: Give up waiting for services to settle after this much simulated time.
PATIENCE_S = 6 * 3600.0
#: Real seconds per frame on a terminal, so that a person can watch the states move.
FRAME_S = 0.03
MAX_ORDERS = 200
_CUSTOMERS = ("jane", "omar", "li", "ana", "sven", "priya", "tom", "fatima", "kenji", "eva")


def _order_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_ORDERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_ORDERS}, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo``."""
    p = subparsers.add_parser(
        "demo",
        help="watch orders provisioned end to end against a simulated DCImanager",
        description=(
            "Start the DCImanager 6 simulator in-process, load the built-in example "
            "catalog, open orders and watch each service move through its states until "
            "it is active; then suspend, resume and close one, and print a summary. "
            f"OS installs take {INSTALL_MINUTES} simulated minutes on a fast clock, so "
            "the demo takes seconds. No network needed."
        ),
    )
    p.add_argument(
        "--orders",
        type=_order_count,
        default=5,
        metavar="N",
        help=f"how many orders to open, 1 to {MAX_ORDERS} (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=7,
        help="seed for the orders and the simulator, for a repeatable run (default: %(default)s)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help=(
            "status store URL to keep the result, e.g. sqlite:///demo.db "
            "(default: SQLite in a temporary directory, removed afterwards)"
        ),
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="one line per state change even on a terminal (the default when piped)",
    )
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- setup


def _simulator(orders: int, seed: int) -> FakeDCImanager:
    from dci6bridge.testing import FakeDCImanager, ManualClock

    # Every configuration gets `orders` servers in each location, so any mix of orders
    # finds free servers. Simulated time starts at the real time, so that the times a
    # kept store (--store) records look like today's.
    return FakeDCImanager.with_inventory(
        locations=2,
        servers_per_location=3 * max(orders, 3),
        clock=ManualClock(start=time.time()),
        seed=seed,
        admin_email=ADMIN_EMAIL,
        admin_password=f"demo-{seed}-password",
        install_duration=INSTALL_MINUTES * 60.0,
    )


def demo_catalog(password: str) -> Catalog:
    """The built-in example catalog, its modules' password set to ``password``."""
    from dci6bridge.domain import Catalog

    with as_file(files(__package__ or "dci6bridge.cli") / "demo_catalog.toml") as path:
        return Catalog.from_toml(path, environ={PASSWORD_ENV: password})


def demo_orders(catalog: Catalog, count: int, seed: int, first_number: int) -> list[Order]:
    """``count`` orders over the catalog's tariffs, the same for the same ``seed``."""
    from dci6bridge.domain import Order

    rng = random.Random(seed)
    orders = []
    for i in range(count):
        tariff = catalog.tariffs[i % len(catalog.tariffs)] if i < 3 else rng.choice(catalog.tariffs)
        customer = _CUSTOMERS[i % len(_CUSTOMERS)]
        number = first_number + i
        orders.append(
            Order(
                service_id=f"INV-{number}",
                tariff=tariff.name,
                os_template=rng.choice(tariff.os_templates),
                customer_email=f"{customer}@example.com",
                hostname=f"{customer}-{number}.example.com",
            )
        )
    return orders


@contextlib.contextmanager
def _store_url(given: str | None) -> Iterator[tuple[str, str]]:
    """(URL, how to describe it)."""
    if given is not None:
        yield given, given
        return
    with tempfile.TemporaryDirectory(prefix="dci6bridge-demo-") as tmp:
        path = Path(tmp) / "demo.db"
        yield f"sqlite:///{path}", f"SQLite in a temporary directory ({path})"


# --------------------------------------------------------------------------- the loop


@attrs.define
class _Run:
    """What the demo loop needs, and what it learns (simulated times)."""

    prov: Provisioner
    fake: FakeDCImanager
    progress: Progress
    live: bool
    started: float
    orders: dict[str, Order] = attrs.field(factory=dict)
    became_active: dict[str, float] = attrs.field(factory=dict)
    seen_update: dict[str, tuple[str, float]] = attrs.field(factory=dict)
    seen_versions: dict[str, int] = attrs.field(factory=dict)
    #: when each service entered its current state (simulated time)
    entered: dict[str, float] = attrs.field(factory=dict)

    def now(self) -> float:
        return self.fake.clock.now()

    def rows(self) -> list[Row]:
        """Every service as it is now; new history rows are reported as changes."""
        rows = []
        for sid, order in self.orders.items():
            svc = self.prov.get(sid)
            # a whole suspend/resume can happen within one simulated instant: the
            # state is part of the key so that no change goes unreported
            key = (svc.state.value, svc.updated_at)
            if key != self.seen_update.get(sid):
                self.seen_update[sid] = key
                self._report_changes(sid)
            if svc.state.value == "active" and sid not in self.became_active:
                self.became_active[sid] = svc.updated_at - svc.created_at
            installing = svc.state.value == "installing_os"
            since = self.entered.get(sid, self.now())
            done = (self.now() - since) / (INSTALL_MINUTES * 60.0) if installing else 0
            detail = f"install {min(done, 1.0):.0%}" if installing else ""
            rows.append(
                Row(
                    service_id=sid,
                    tariff=order.tariff,
                    state=svc.state.value,
                    module=svc.module,
                    server_id=svc.server_id,
                    detail=detail or ", ".join(svc.ip_addresses),
                    step_done=done,
                )
            )
        return rows

    def _report_changes(self, service_id: str) -> None:
        history = self.prov.history(service_id)
        seen = self.seen_versions.get(service_id, 0)
        if seen == 0 and history:
            first = history[0]
            order = self.orders[service_id]
            what = f"{order.tariff}, {order.os_template} for {order.customer_email}"
            self.progress.change(service_id, "", first.from_state, first.at - self.started, what)
        for t in history[seen:]:
            self.entered[service_id] = t.at
            self.progress.change(
                service_id, t.from_state, t.to_state, t.at - self.started, _detail(t.detail)
            )
        self.seen_versions[service_id] = len(history)

    def show(self) -> list[Row]:
        rows = self.rows()
        self.progress.update(rows, self.now() - self.started)
        if self.live:
            time.sleep(FRAME_S)
        return rows

    def settle(self, done: Callable[[Sequence[Row]], bool]) -> None:
        """Tick the provisioner, moving the simulated clock whenever nobody has work,
        until ``done(rows)``; raise if that does not happen in :data:`PATIENCE_S`."""
        deadline = self.now() + PATIENCE_S
        while True:
            worked = self.prov.tick(max_services=max(len(self.orders), 1))
            rows = self.show()
            if done(rows):
                return
            if self.now() > deadline:
                stuck = ", ".join(f"{r.service_id}={r.state}" for r in rows)
                raise _DemoStuck(f"services did not settle in simulated time: {stuck}")
            if not worked:
                self.fake.advance(STEP_S)


def _detail(detail: Mapping[str, Any]) -> str:
    """The parts of a history row's detail a person cares about, in words."""
    parts = []
    if detail.get("module"):
        parts.append(f"module {detail['module']}")
    user, server = detail.get("user_id"), detail.get("server_id")
    if user is not None and "created" in detail:  # creating_user -> assigning_owner
        parts.append(f"user {user} {'created' if detail['created'] else 'found'}")
    elif user is not None and server is not None:  # assigning_owner -> next
        parts.append(f"user {user} owns server {server}")
    elif server is not None:
        parts.append(f"server {server}")
    if detail.get("ip_addresses"):
        parts.append("IP " + ", ".join(detail["ip_addresses"]))
    if detail.get("ports"):
        parts.append(f"switch ports {detail['ports']}")
    if detail.get("reason"):
        parts.append(str(detail["reason"]))
    return ", ".join(parts)


class _DemoStuck(Exception):
    """Services did not settle within :data:`PATIENCE_S` of simulated time."""


_RESTING = {"active", "suspended", "closed", "failed"}


def _all_resting(rows: Sequence[Row]) -> bool:
    return all(r.state in _RESTING for r in rows)


def _open_orders(run: _Run, orders: Sequence[Order], rng: random.Random) -> None:
    """Orders arrive a few simulated minutes apart; work goes on in between."""
    for order in orders:
        run.prov.open(order)
        run.orders[order.service_id] = order
        run.show()
        gap = run.now() + rng.uniform(60.0, 240.0)
        while run.now() < gap:
            if not run.prov.tick(max_services=len(run.orders)):
                run.fake.advance(STEP_S)
            run.show()


def _lifecycle(run: _Run, service_id: str) -> None:
    """Suspend, resume and close one service, checking the simulator's ground truth."""
    svc = run.prov.get(service_id)
    server_id = svc.server_id
    run.progress.note(f"\nSuspending {service_id}: its switch ports go off, power stays on.")
    run.prov.suspend(service_id)
    run.settle(lambda rows: run.prov.get(service_id).state.value == "suspended")
    if server_id is not None:
        server = run.fake.state.servers[server_id]
        run.progress.note(
            f"  server {server_id}: data ports {'up' if server.data_ports_up else 'down'}, "
            f"IPMI {'up' if server.ipmi_up else 'down'}, power {server.power_status}"
        )
    run.progress.note(f"Resuming {service_id}.")
    run.prov.resume(service_id)
    run.settle(lambda rows: run.prov.get(service_id).state.value == "active")
    run.progress.note(f"Closing {service_id}: power off, release the server, delete the user.")
    run.prov.close(service_id)
    run.settle(lambda rows: run.prov.get(service_id).state.value == "closed")
    if server_id is not None:
        server = run.fake.state.servers[server_id]
        run.progress.note(
            f"  server {server_id}: owner {server.owner_email or 'none'}, "
            f"free again: {'yes' if server.is_free else 'no'}"
        )


def _summary(run: _Run, services: Sequence[Service]) -> str:
    return render_table(
        ["SERVICE", "TARIFF", "MODULE", "SERVER", "IP", "STATUS", "TIME TO ACTIVE"],
        [
            (
                s.service_id,
                run.orders[s.service_id].tariff,
                s.module,
                s.server_id,
                s.ip_addresses,
                s.status.value.upper(),
                format_duration(run.became_active.get(s.service_id)),
            )
            for s in services
        ],
    )


def _first_number(prov: Provisioner) -> int:
    """Invoice numbers after any the store already holds (a reused ``--store``)."""
    taken = [
        int(s.service_id[4:])
        for s in prov.services()
        if s.service_id.startswith("INV-") and s.service_id[4:].isdigit()
    ]
    return max(taken, default=1000) + 1


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every service ended as expected."""
    from dci6bridge.provisioning import Provisioner
    from dci6bridge.stores import open_store

    started_real = time.monotonic()
    out = sys.stdout
    live = out.isatty() and not args.plain
    fake = _simulator(args.orders, args.seed)
    catalog = demo_catalog(fake.admin_password)
    with _store_url(args.store) as (url, described):
        store = open_store(url, clock=fake.clock.now)
        try:
            prov = Provisioner(
                catalog,
                store,
                transport=fake.transport,
                clock=fake.clock.now,
                sleep=fake.advance,
                rng=random.Random(args.seed),
                worker_id="demo-worker",
                poll_interval=60.0,
            )
            print(
                "dci6bridge demo: a simulated DCImanager 6 "
                f"({len(fake.state.servers)} servers in 2 locations), "
                f"the built-in catalog ({len(catalog.modules)} modules, "
                f"{len(catalog.tariffs)} tariffs), store: {described}."
            )
            print(
                f"OS installs take {INSTALL_MINUTES} simulated minutes; the simulator's "
                "clock runs fast, so they pass in a moment. Times below are simulated.\n"
            )
            progress = make_progress(out, live=live)
            demo = _Run(prov, fake, progress, live, started=fake.clock.now())
            orders = demo_orders(catalog, args.orders, args.seed, _first_number(prov))
            with prov:
                try:
                    _open_orders(demo, orders, random.Random(args.seed))
                    demo.settle(_all_resting)
                    progress.finish()
                    if demo.prov.get(orders[0].service_id).state.value == "active":
                        _lifecycle(demo, orders[0].service_id)
                        progress.finish()
                except _DemoStuck as exc:
                    progress.finish()
                    print(f"dci6bridge: error: {exc}", file=sys.stderr)
                    return 1
                services = [prov.get(o.service_id) for o in orders]
                tasks = [t for t in prov.tasks() if t.service_id in demo.orders]
        finally:
            store.close()
    print()
    print(_summary(demo, services))
    for task in tasks:
        print(
            f"task #{task.id} for {task.department}: {task.service_id} {task.kind}: {task.reason}"
        )
    expected = ["closed"] + ["active"] * (len(services) - 1)
    ok = [s.status.value for s in services] == expected
    elapsed = time.monotonic() - started_real
    simulated = fake.clock.now() - demo.started
    verdict = "all services ended as expected" if ok else "some services did not end as expected"
    print(f"\n{verdict}: {simulated / 60:.0f} simulated minutes in {elapsed:.1f} s of real time.")
    return 0 if ok else 1
