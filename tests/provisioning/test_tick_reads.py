"""The reads the services of one tick share (``provisioning._tick_reads``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dci6bridge import Client
from dci6bridge.client.models import Server
from dci6bridge.provisioning._tick_reads import WIDE_PAGES, Contention, FreeServers, TickReads
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
    assert free.first(1, direct).servers == servers[:20], "the latest read covers it: all of it"
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


def test_the_first_read_is_one_page_while_nobody_else_takes_servers(
    servers: list[Server],
) -> None:
    listing = Listing(list(servers))
    contention = Contention()
    FreeServers(listing, 10, no_holders, contention=contention, max_pages=20).first(1, direct)
    assert listing.asked == [10]
    assert contention.taken == 0


def test_servers_seen_taken_widen_the_next_first_read(servers: list[Server]) -> None:
    """A read that found 3 servers reserved by others: the next tick's first read asks
    for WIDE_PAGES pages more than those 3 fill; a read finding none narrows it again."""

    def three_held(server_ids: list[int]) -> dict[int, str]:
        return {i: f"other-{i}" for i in server_ids[:3]}

    contention = Contention()
    listing = Listing(list(servers))
    FreeServers(listing, 5, three_held, contention=contention, max_pages=20).first(1, direct)
    assert contention.taken == 3
    FreeServers(listing, 5, no_holders, contention=contention, max_pages=20).first(1, direct)
    assert listing.asked == [5, 5 * (WIDE_PAGES + 1)]
    assert contention.taken == 0, "the wide read found nothing reserved"
    FreeServers(listing, 5, no_holders, contention=contention, max_pages=20).first(1, direct)
    assert listing.asked[-1] == 5


@pytest.mark.parametrize(
    ("taken", "pages"),
    [(0, 1), (1, WIDE_PAGES + 1), (10, WIDE_PAGES + 1), (11, WIDE_PAGES + 2), (500, 20)],
)
def test_the_wide_read_covers_the_servers_seen_taken_up_to_max_pages(
    taken: int, pages: int
) -> None:
    contention = Contention()
    contention.taken = taken
    assert contention.first_pages(10, 20) == pages


def test_a_wide_read_that_fails_leaves_nothing_and_is_tried_again(servers: list[Server]) -> None:
    contention = Contention()
    contention.taken = 2
    listing = Listing(list(servers))
    free = FreeServers(listing, 10, no_holders, contention=contention, max_pages=20)

    def failing(read: Callable[[], list[Server]]) -> list[Server]:
        raise Boom

    with pytest.raises(Boom):
        free.first(1, failing)
    assert contention.taken == 2, "a failed read saw nothing"
    assert free.first(1, direct).servers == servers[:25]  # all 25 there are
    assert listing.asked == [10 * (WIDE_PAGES + 1)]


def test_tick_reads_keep_the_workers_contention_per_listing() -> None:
    kept: dict[object, Contention] = {}
    first = TickReads(kept).contention("listing")
    first.taken = 4
    assert TickReads(kept).contention("listing") is first
    assert TickReads(kept).contention("other").taken == 0
    assert TickReads().contention("listing").taken == 0, "without the worker's: fresh"
