"""The reads the services of one tick share (``provisioning._tick_reads``)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from dci6bridge import Client
from dci6bridge.client.models import Page, Server
from dci6bridge.provisioning._tick_reads import (
    SPREAD_PAGES,
    WIDE_PAGES,
    FreeServers,
    ListingView,
    TickReads,
)
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
    """``n`` of ``free`` (which a test changes between reads) from ``offset`` on, with
    their number, recording each read: ``n`` for a read at the front, else
    ``(offset, n)``."""

    def __init__(self, free: list[Server]) -> None:
        self.free = free
        self.asked: list[int | tuple[int, int]] = []

    def __call__(self, offset: int, n: int) -> Page[Server]:
        self.asked.append((offset, n) if offset else n)
        return Page(self.free[offset : offset + n], len(self.free))


def no_holders(server_ids: list[int]) -> dict[int, str]:
    return {}


def direct(read: Callable[[], Page[Server]]) -> Page[Server]:
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

    def failing(read: Callable[[], Page[Server]]) -> Page[Server]:
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
    view = ListingView()
    FreeServers(listing, 10, no_holders, view=view, max_pages=20).first(1, direct)
    assert listing.asked == [10]
    assert view.taken == 0


def test_servers_seen_taken_widen_the_next_first_read(servers: list[Server]) -> None:
    """A read that found 3 servers reserved by others: the next tick's first read asks
    for WIDE_PAGES pages more than those 3 fill; a read finding none narrows it again."""

    def three_held(server_ids: list[int]) -> dict[int, str]:
        return {i: f"other-{i}" for i in server_ids[:3]}

    view = ListingView()
    listing = Listing(list(servers))
    FreeServers(listing, 5, three_held, view=view, max_pages=20).first(1, direct)
    assert view.taken == 3
    FreeServers(listing, 5, no_holders, view=view, max_pages=20).first(1, direct)
    assert listing.asked == [5, 5 * (WIDE_PAGES + 1)]
    assert view.taken == 0, "the wide read found nothing reserved"
    FreeServers(listing, 5, no_holders, view=view, max_pages=20).first(1, direct)
    assert listing.asked[-1] == 5


@pytest.mark.parametrize(
    ("taken", "pages"),
    [(0, 1), (1, WIDE_PAGES + 1), (10, WIDE_PAGES + 1), (11, WIDE_PAGES + 2), (500, 20)],
)
def test_the_wide_read_covers_the_servers_seen_taken_up_to_max_pages(
    taken: int, pages: int
) -> None:
    view = ListingView()
    view.taken = taken
    assert view.first_pages(10, 20) == pages


def test_a_wide_read_that_fails_leaves_nothing_and_is_tried_again(servers: list[Server]) -> None:
    view = ListingView()
    view.taken = 2
    listing = Listing(list(servers))
    free = FreeServers(listing, 10, no_holders, view=view, max_pages=20)

    def failing(read: Callable[[], Page[Server]]) -> Page[Server]:
        raise Boom

    with pytest.raises(Boom):
        free.first(1, failing)
    assert view.taken == 2, "a failed read saw nothing"
    assert free.first(1, direct).servers == servers[:25]  # all 25 there are
    assert listing.asked == [10 * (WIDE_PAGES + 1)]


def test_tick_reads_keep_the_workers_view_of_each_listing() -> None:
    kept: dict[object, ListingView] = {}
    first = TickReads(kept).listing("listing")
    first.taken = 4
    assert TickReads(kept).listing("listing") is first
    assert TickReads(kept).listing("other").taken == 0
    assert TickReads().listing("listing").taken == 0, "without the worker's: fresh"


@pytest.fixture
def many() -> list[Server]:
    """A listing long enough to be read at random places (30 pages of 10)."""
    return [Server(id=i, name=f"s{i}") for i in range(1, 301)]


def crowded(size: int | None) -> ListingView:
    """A view of a listing of ``size`` free servers that others were seen taking."""
    view = ListingView()
    view.saw(1, size)
    return view


def test_a_short_or_unknown_listing_is_read_at_the_front() -> None:
    rng = random.Random(1)
    assert crowded(None).spread_offset(10, rng) == 0, "length not known yet"
    assert crowded(SPREAD_PAGES * 10 - 1).spread_offset(10, rng) == 0
    view = crowded(SPREAD_PAGES * 10)
    offsets = {view.spread_offset(10, rng) for _ in range(3000)}
    assert offsets == set(range(SPREAD_PAGES * 10 - 10 + 1)), "anywhere a whole page fits"


def test_a_worker_alone_reads_at_the_front_until_it_sees_others() -> None:
    rng = random.Random(1)
    view = ListingView()
    view.saw(0, 300)
    assert {view.spread_offset(10, rng) for _ in range(100)} == {0}
    view.refused()
    assert (view.crowded, view.taken) == (True, 1)
    assert view.spread_offset(10, rng) > 0
    view.saw(0, 300)
    assert view.crowded, "others may still be at it: sticks"
    seen = ListingView()
    seen.saw(2, 300)
    assert (seen.crowded, seen.taken) == (True, 2)


def test_the_first_read_of_a_tick_starts_at_a_random_place_once_the_length_is_known(
    many: list[Server],
) -> None:
    listing = Listing(list(many))
    view = ListingView()
    view.refused()  # others were seen taking servers
    first = FreeServers(listing, 10, no_holders, view=view, rng=random.Random(7))
    assert first.first(1, direct).servers == many[:10], "the length is not known yet"
    assert view.size == 300, "learnt from the read"
    offset = random.Random(7).randrange(300 - 10 + 1)
    free = FreeServers(listing, 10, no_holders, view=view, rng=random.Random(7))
    page = free.first(1, direct)
    assert (page.servers, page.offset, page.complete) == (many[offset : offset + 10], offset, False)
    assert free.first(1, direct) is page, "every service's first try shares it"
    assert listing.asked == [10, (offset, 10)]


def test_when_the_random_page_runs_out_the_front_is_read(many: list[Server]) -> None:
    """A service that found nothing for it in the tick's first read tries the first
    pages at the front, which alone can tell that there are no more free servers."""
    listing = Listing(list(many))
    view = crowded(300)
    free = FreeServers(listing, 10, no_holders, view=view, rng=random.Random(3))
    assert free.first(1, direct).offset > 0
    front = free.first(2, direct)
    assert (front.servers, front.offset, front.complete) == (many[:20], 0, False)
    assert free.first(1, direct) is front, "the front read serves the first try too"
    assert free.first(2, direct) is front
    assert free.first(3, direct).servers == many[:30]
    assert len(listing.asked) == 3


def test_a_random_page_past_the_shrunk_end_is_empty_but_not_the_end(
    many: list[Server],
) -> None:
    listing = Listing(list(many))
    view = crowded(300)  # from an earlier tick; 280 of them have been taken since
    listing.free = many[:20]
    free = FreeServers(listing, 10, no_holders, view=view, rng=random.Random(5))
    page = free.first(1, direct)
    assert (page.servers, page.complete) == ([], False)
    assert view.size == 20, "the length learnt again: the next tick reads at the front"
    front = free.first(2, direct)
    assert (front.servers, front.complete) == (many[:20], False)
    assert free.first(3, direct).complete
    assert view.spread_offset(10, random.Random(5)) == 0


def test_without_randomness_every_read_is_at_the_front(many: list[Server]) -> None:
    listing = Listing(list(many))
    FreeServers(listing, 10, no_holders, view=crowded(300), max_pages=20).first(1, direct)
    assert listing.asked == [10 * (WIDE_PAGES + 1)], "wide: others take servers"


def test_a_random_page_counts_the_servers_it_finds_reserved(many: list[Server]) -> None:
    def two_held(server_ids: list[int]) -> dict[int, str]:
        return dict.fromkeys(server_ids[:2], "other")

    view = crowded(300)
    page = FreeServers(Listing(list(many)), 10, two_held, view=view, rng=random.Random(9)).first(
        1, direct
    )
    assert page.offset > 0
    assert (len(page.holders), view.taken) == (2, 2)
