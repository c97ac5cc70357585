"""The reads the services of one tick share (``provisioning._tick_reads``)."""

from __future__ import annotations

from collections.abc import Callable

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


class Listing:
    """The first ``n`` of ``free`` (which a test changes between reads), counting reads."""

    def __init__(self, free: list[Server]) -> None:
        self.free = free
        self.asked: list[int] = []

    def __call__(self, n: int) -> list[Server]:
        self.asked.append(n)
        return self.free[:n]


def no_holders(server_ids: list[int]) -> dict[int, str]:
    return {}


def direct(read: Callable[[], list[Server]]) -> list[Server]:
    return read()


def test_the_first_pages_are_read_together_and_kept(servers: list[Server]) -> None:
    listing = Listing(list(servers))
    free = FreeServers(listing, 10, no_holders)
    first = free.first(1, direct)
    assert (first.servers, first.complete) == (servers[:10], False)
    assert free.first(1, direct).servers == servers[:10]
    assert listing.asked == [10], "kept"
    assert free.first(2, direct).servers == servers[:20]
    assert free.first(1, direct).servers == servers[:10], "the latest read covers it"
    third = free.first(3, direct)
    assert (third.servers, third.complete) == (servers, True)
    assert free.first(5, direct).servers == servers, "all there were: not read again"
    assert listing.asked == [10, 20, 30]


def test_a_later_read_sees_the_servers_that_moved_forward(servers: list[Server]) -> None:
    """Three servers of the first page get owners after it was read: the next read,
    of the first two pages together, includes the three servers that moved into the
    first page (a second page read at offset 10 would have skipped them)."""
    listing = Listing(list(servers))
    free = FreeServers(listing, 10, no_holders)
    free.first(1, direct)
    for taken in servers[:3]:
        listing.free.remove(taken)
    assert free.first(2, direct).servers == servers[3:23]
    moved = {s.id for s in servers[10:13]}
    assert moved <= {s.id for s in free.first(2, direct).servers}


def test_a_failed_read_keeps_the_one_before(servers: list[Server]) -> None:
    listing = Listing(list(servers))
    free = FreeServers(listing, 10, no_holders)
    free.first(1, direct)

    def failing(read: Callable[[], list[Server]]) -> list[Server]:
        raise Boom

    with pytest.raises(Boom):
        free.first(2, failing)
    assert free.first(1, failing).servers == servers[:10]
    assert free.first(2, direct).servers == servers[:20]


def test_each_read_comes_with_the_reservations_of_its_servers(servers: list[Server]) -> None:
    asked: list[list[int]] = []

    def holders(server_ids: list[int]) -> dict[int, str]:
        asked.append(server_ids)
        return {i: f"svc-{i}" for i in server_ids if i % 4 == 0}

    free = FreeServers(Listing(list(servers)), 10, holders)
    first = free.first(1, direct)
    ids = [s.id for s in servers[:10]]
    assert asked == [ids]
    assert first.holders == {i: f"svc-{i}" for i in ids if i % 4 == 0}
    free.first(1, direct)
    assert len(asked) == 1, "read once with its servers"
    free.first(2, direct)
    assert asked[1] == [s.id for s in servers[:20]]


def test_tick_reads_keep_what_was_read_and_not_what_raised() -> None:
    reads = TickReads()
    assert reads.get("k", lambda: 1) == 1
    assert reads.get("k", lambda: 2) == 1

    def failing() -> int:
        raise Boom

    with pytest.raises(Boom):
        reads.get("other", failing)
    assert reads.get("other", lambda: 3) == 3
