"""Client quickstart: talk to DCImanager 6 with the typed client.

Runs against the simulator, in-process by default or over real HTTP with ``--serve``.
To try it against your own DCImanager instead, replace the simulator with::

    dci = d.Client("https://dci.example.com", email="admin@example.com", password="...")

    python examples/client_quickstart.py            # in-process simulator
    python examples/client_quickstart.py --serve    # simulator on http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import dci6bridge as d
from dci6bridge.testing import FakeDCImanager


@contextlib.contextmanager
def connect(fake: FakeDCImanager, serve: bool) -> Iterator[d.Client]:
    """A client for the simulator: through its in-process transport, or over HTTP."""
    if serve:
        with fake.serve() as url:
            print(f"simulator serving {url}")
            # over HTTP the simulator's clock follows real time; installs here take 2 s
            with d.Client(url, email=fake.admin_email, password=fake.admin_password) as dci:
                yield dci
        return
    # In-process, the client's sleep moves the simulator's clock: waiting for a
    # 10-minute install takes no real time.
    with d.Client(
        fake.url,
        email=fake.admin_email,
        password=fake.admin_password,
        transport=fake.transport,
        clock=fake.clock.now,
        sleep=fake.advance,
    ) as dci:
        yield dci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="use the simulator over HTTP")
    args = parser.parse_args()

    fake = FakeDCImanager.with_inventory(
        locations=2, servers_per_location=6, install_duration=2.0 if args.serve else 600.0
    )
    with connect(fake, args.serve) as dci:
        check = dci.check()  # log in and ask who we are: "Test connection"
        print(f"connected as {check.user_email} in {check.latency_s * 1000:.1f} ms")

        for location in dci.locations.list():
            print(f"location {location.id}: {location.name}")

        print("free servers per configuration:")
        for count in dci.servers.configurations():
            print(f"  {count.configuration:32} {count.free_server_count}")

        # Q builds DCImanager's `where` filter; list() pages lazily through the results.
        free_in_1 = d.Q.free() & (d.Q("location_id") == 1)
        server = next(dci.servers.list(where=free_in_1, limit=1))
        print(f"picked server {server.id} ({server.name}, {server.configuration})")

        user = dci.users.create(
            email="jane@example.com", password=d.Secret("s3cret-Pa55"), full_name="Jane Doe"
        )
        print(f"created user {user.id} ({user.email})")
        dci.servers.set_owner(server.id, user.id)

        template = next(t for t in dci.os_templates.list(location_id=1) if t.name == "Debian 12")
        started = dci.servers.install_os(server.id, template.id, password=d.Secret("r00t-Pa55"))
        print(f"install of {template.name} started (task {started.task})")
        done = dci.servers.wait(server.id, timeout=3600, poll_interval=1 if args.serve else 30)
        status = done.operation.status if done.operation else None
        print(f"install finished: {getattr(status, 'value', status)}; owner {done.owner_email}")

        # every error is a subclass of dci6bridge.Dci6BridgeError
        try:
            dci.servers.get(999_999)
        except d.NotFoundError as exc:
            print(f"as expected: {exc}")


if __name__ == "__main__":
    main()
