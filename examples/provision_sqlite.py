"""Provision dedicated servers: a catalog, an SQLite status store and ``run_until_idle``.

The billing side opens orders; ``run_until_idle`` does the work a ``dci6bridge worker``
would do in production: select the module (lowest sort wins), claim a free server,
create the customer's user, hand the server over, bind an IP, install the OS, and mark
the service ACTIVE once DCImanager reports the install finished. Then one service is
suspended and closed.

It runs against the in-process simulator with a manual clock: the provisioner's
``sleep`` advances the simulated time, so a 10-minute install passes instantly. Against
a real DCImanager you would drop ``transport``, ``clock`` and ``sleep``.

    python examples/provision_sqlite.py      # writes ./dci6bridge-example.db
"""

from __future__ import annotations

from pathlib import Path

import dci6bridge as d
from dci6bridge.testing import FakeDCImanager

HERE = Path(__file__).resolve().parent
DB = Path("dci6bridge-example.db")


def main() -> None:
    fake = FakeDCImanager.with_inventory(locations=2, servers_per_location=6)
    # The catalog reads each module's password from an environment variable; here we
    # hand it the simulator's instead of touching the real environment.
    passwords = {"DCI_AMS_PASSWORD": fake.admin_password, "DCI_FRA_PASSWORD": fake.admin_password}
    catalog = d.Catalog.from_toml(HERE / "catalog.toml", environ=passwords)
    print(d.select_module(catalog, "E3-64").explain())

    DB.unlink(missing_ok=True)  # start from an empty store on every run of the example
    store = d.open_store(f"sqlite:///{DB}", clock=fake.clock.now)
    events: list[d.Event] = []
    with d.Provisioner(
        catalog,
        store,
        transport=fake.transport,
        clock=fake.clock.now,
        sleep=fake.advance,
        on_event=events.append,  # billing's callback: activated, suspended, closed, ...
    ) as prov:
        orders = [
            d.Order("INV-1001", "E3-64", "Ubuntu 22.04", "jane@example.com", "web1.example.com"),
            d.Order("INV-1002", "E3-64", "Debian 12", "omar@example.com", data_center="Frankfurt"),
            d.Order("INV-1003", "I9-64", "Debian 12", "li@example.com", "db1.example.com"),
        ]
        for order in orders:
            svc = prov.open(order)  # returns at once; nothing has happened remotely yet
            print(f"opened {svc.service_id}: {svc.status.value} ({svc.state.value})")
        prov.open(orders[0])  # a double click: the same order again changes nothing

        prov.run_until_idle()
        for svc in prov.services():
            print(
                f"{svc.service_id}: {svc.status.value} on {svc.module}, server {svc.server_id}, "
                f"IP {', '.join(svc.ip_addresses) or '-'}, root password {svc.root_password}"
            )
        # The root password is a Secret: '***' everywhere until you reveal() it for the
        # customer, through your billing system's own secure channel.
        password = prov.get("INV-1001").root_password
        print(f"INV-1001's root password has {len(password.reveal()) if password else 0} chars")

        print("history of INV-1001:")
        for t in prov.history("INV-1001"):
            print(f"  {t.version:2} {t.from_state:>16} -> {t.to_state}")

        prov.suspend("INV-1002")
        prov.run_until_idle()
        print(f"INV-1002 is {prov.get('INV-1002').status.value}")
        prov.close("INV-1002")
        prov.run_until_idle()
        print(f"INV-1002 is {prov.get('INV-1002').status.value}")

        print("events for billing:", ", ".join(f"{e.service_id} {e.kind}" for e in events))
        print(f"open department tasks: {len(prov.tasks())}")
    store.close()

    # ground truth from the simulator: every active service has exactly one server
    owners = {s.owner_email for s in fake.state.servers.values() if s.owner_email}
    print(f"servers owned by customers: {sorted(owners)}")


if __name__ == "__main__":
    main()
