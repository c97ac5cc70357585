"""The reads the services of one tick share (``provisioning._tick_reads``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from dci6bridge import Client
from dci6bridge.client.models import Server
from dci6bridge.provisioning._tick_reads import FreeServers, TickReads
from dci6bridge.testing import FakeDCImanager


class Boom(Exception):
    """A read failing (as a 503 past its retries does)."""


@pytest.fixture
def servers() -> list[Server]:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=25)
    with Client(
        fake.url, email=fake.admin_email, password=fake.admin_password, transport=fake.transport
    ) as dci:
        return list(dci.servers.list())


def listing_of(servers: list[Server], fail_at: set[int]) -> Callable[[], Iterator[Server]]:
    """A listing that raises before yielding server number ``i`` for each ``i`` in
    ``fail_at`` (once each), as the client's paged listing raises mid-way."""

    def listing() -> Iterator[Server]:
        for i, server in enumerate(servers):
            if i in fail_at:
                fail_at.discard(i)
                raise Boom()
            yield server

    return listing


def no_holders(server_ids: list[int]) -> dict[int, str]:
    return {}


def direct(read: Callable[[], list[Server]]) -> list[Server]:
    return read()


def test_pages_are_read_once_and_in_order(servers: list[Server]) -> None:
    calls: list[int] = []

    def counted(read: Callable[[], list[Server]]) -> list[Server]:
        calls.append(1)
        return read()

    free = FreeServers(listing_of(servers, set()), 10, no_holders)
    assert free.page(1, counted).servers == servers[10:20]  # reads pages 0 and 1
    assert free.page(0, counted).servers == servers[:10]
    assert free.page(1, counted).servers == servers[10:20]
    assert free.page(2, counted).servers == servers[20:]
    assert len(calls) == 3


def test_a_listing_that_failed_is_read_again_from_the_start(servers: list[Server]) -> None:
    """The client's listing raised while reading page 1 (a generator that raised is
    done): the next reader gets whole pages again, not a short or empty one."""
    free = FreeServers(listing_of(servers, {12}), 10, no_holders)
    assert free.page(0, direct).servers == servers[:10]
    with pytest.raises(Boom):
        free.page(1, direct)
    assert free.page(1, direct).servers == servers[10:20]
    assert free.page(0, direct).servers == servers[:10]


def test_tick_reads_keep_what_was_read_and_not_what_raised() -> None:
    reads = TickReads()
    assert reads.get("k", lambda: 1) == 1
    assert reads.get("k", lambda: 2) == 1

    def failing() -> int:
        raise Boom()

    with pytest.raises(Boom):
        reads.get("other", failing)
    assert reads.get("other", lambda: 3) == 3


def test_each_page_comes_with_the_reservations_of_its_servers(servers: list[Server]) -> None:
    asked: list[list[int]] = []

    def holders(server_ids: list[int]) -> dict[int, str]:
        asked.append(server_ids)
        return {i: f"svc-{i}" for i in server_ids if i % 4 == 0}

    free = FreeServers(listing_of(servers, set()), 10, holders)
    first = free.page(0, direct)
    ids = [s.id for s in servers[:10]]
    assert asked == [ids]
    assert first.holders == {i: f"svc-{i}" for i in ids if i % 4 == 0}
    free.page(0, direct)
    assert len(asked) == 1, "read once with its page"
