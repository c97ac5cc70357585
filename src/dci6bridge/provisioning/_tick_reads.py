"""Remote reads the services of one lockstep tick share.

The services of a tick are worked on within moments of each other, and several steps
start with a read that says the same to every one of them: the free-server counts a
module selection looks at, the pages of free servers a claim picks from. One read
serves the whole tick, so a batch of N orders of one configuration makes one of each
where N orders taken one at a time make N. Nothing is lost in safety: a claim is still
a reservation in the store (tick-mates also skip the servers in :attr:`TickReads.reserving`),
and the owner read-back before the install still catches anyone outside the library.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import attrs

from dci6bridge.client.models import Page, Server

__all__ = ["SPREAD_PAGES", "WIDE_PAGES", "FreePage", "FreeServers", "ListingView", "TickReads"]

T = TypeVar("T")


@attrs.frozen
class FreePage:
    """Free servers as of one read, and who holds a reservation of any of them."""

    servers: list[Server]
    #: server id → the service that has it reserved, read from the store with the servers
    holders: Mapping[int, str]
    #: the read found fewer servers than it asked for at the front: there are no more
    complete: bool
    #: where the read started in the listing (0: the first free servers)
    offset: int = 0


#: pages read at once at the front, beyond those the servers seen taken fill, while
#: other workers pick from the same listing (see :class:`ListingView`)
WIDE_PAGES = 4

#: a listing at least this many pages long has the first read of a tick start at a
#: random place (see :class:`FreeServers`)
SPREAD_PAGES = 8


class ListingView:
    """What this worker last saw of one listing of free servers: how many it had, and
    how much other workers contend for its first servers. Kept by the worker from tick
    to tick (one per listing, :meth:`TickReads.listing`); it places and sizes reads,
    and never makes a claim skip a server.

    Reserved servers lead the listing until their owners are set, and workers picking
    among the same first free servers pick the same ones: their reservations are
    refused, and each refusal costs a write and often another read. So once others have
    been seen taking servers of the listing, the first read of a tick starts at a random
    place in it if it is long enough (:meth:`spread_offset`), and a read at the front
    asks for :data:`WIDE_PAGES` pages more than the servers seen taken fill
    (:meth:`first_pages`). A worker alone picks among the first free servers.

    Measured with 4 worker threads on PostgreSQL (``bench/provision.py``, 1,000 orders):
    reading one page at the front, 39-42 % of the reservations were refused; reading
    wide there, 21-26 %; starting at random places, 7-9 % (most of them at each
    worker's first ticks, before it has seen the others, and near the end of the
    inventory), with the listing read 0.16-0.17 times per order instead of 0.23.
    """

    def __init__(self) -> None:
        #: servers found reserved by the latest read, plus reservations refused since
        self.taken = 0
        #: free servers in the listing as of the latest read (``None``: not known)
        self.size: int | None = None
        #: others have been seen taking servers of the listing (and may be still)
        self.crowded = False

    def saw(self, reserved: int, size: int | None) -> None:
        """Take in a read that found ``reserved`` of its servers reserved by other
        services, in a listing of ``size`` free servers."""
        self.taken = reserved
        self.size = size
        self.crowded = self.crowded or reserved > 0

    def refused(self) -> None:
        """Count a reservation refused because another service holds the server."""
        self.taken += 1
        self.crowded = True

    def first_pages(self, page_size: int, max_pages: int) -> int:
        """Pages a tick's first read at the front asks for: one while nobody else was
        seen taking servers of the listing, else :data:`WIDE_PAGES` more than the servers
        seen taken fill (at most ``max_pages``)."""
        if self.taken <= 0:
            return 1
        return max(1, min(max_pages, WIDE_PAGES + -(-self.taken // page_size)))

    def spread_offset(self, page_size: int, rng: random.Random) -> int:
        """Where a tick's first read starts: anywhere a whole page fits, once others
        were seen taking servers and the latest read found the listing
        :data:`SPREAD_PAGES` pages long or longer; else at the front (0)."""
        size = self.size  # once: the threads of a Worker share the view unlocked
        if not self.crowded or size is None or size < SPREAD_PAGES * page_size:
            return 0
        return rng.randrange(size - page_size + 1)


class FreeServers:
    """Free servers of one listing, read lazily and kept for one tick.

    While other workers take servers of the listing, the tick's first read is one page
    at a random place in it (:meth:`ListingView.spread_offset`): workers that start
    reading at the same place pick the same servers and have their reservations
    refused. When that page runs out for a service (its servers taken), and always for
    a short listing or a worker alone, the first ``k`` pages are read at the front in
    one request for ``k * page_size`` servers, which replaces what was read before: a
    list read page by page by offset shifts as servers get their owners, so a page read
    later at its offset would skip the servers that moved into the pages before it
    (near the end of an inventory, the only free ones).
    Only a read at the front can find that there are no more free servers.

    DCImanager shows a server free until its owner is set, which happens only after the
    store has its reservation; each read therefore comes with the reservations of its
    servers, read right after it, so a claim skips the ones other workers (or other
    ticks) have taken already instead of having its reservation refused.

    Args:
        listing: reads ``count`` free servers from the ``offset``-th on (one
            ``servers.list`` request): ``listing(offset, count)``.
        page_size: servers per page.
        holders: the reservations of the given server ids
            (:meth:`StatusStore.server_claims <dci6bridge.stores.base.StatusStore.server_claims>`).
        view: what this worker saw of this listing before; every read updates it.
        max_pages: a read at the front asks for at most this many pages at first.
        rng: places the first read (``None``: at the front).
    """

    def __init__(
        self,
        listing: Callable[[int, int], Page[Server]],
        page_size: int,
        holders: Callable[[list[int]], Mapping[int, str]],
        *,
        view: ListingView | None = None,
        max_pages: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        self._listing = listing
        self._page_size = page_size
        self._holders = holders
        self._view = view if view is not None else ListingView()
        self._first_pages = self._view.first_pages(page_size, max_pages)
        self._rng = rng
        self._last: FreePage | None = None

    def first(
        self, pages: int, call: Callable[[Callable[[], Page[Server]]], Page[Server]]
    ) -> FreePage:
        """Free servers for a service's ``pages``-th try, read now through ``call`` (which
        wraps the remote read as :meth:`StepContext.call` does) unless the latest read
        serves: the first try takes the tick's first read wherever it started; later
        tries take at least the first ``pages`` pages at the front (all the latest read
        has, when it covers them or found all there were). A read that raises leaves the
        one before it in place."""
        wanted = pages * self._page_size
        last = self._last
        if last is None:
            rng = self._rng
            offset = 0 if rng is None else self._view.spread_offset(self._page_size, rng)
            if offset:
                return self._read(offset, self._page_size, call)
        elif last.offset:
            if pages == 1:
                return last
        # a read at the front that was not complete found as many servers as it asked for
        elif len(last.servers) >= wanted or last.complete:
            return last
        if last is None or last.offset:
            wanted = max(wanted, self._first_pages * self._page_size)
        return self._read(0, wanted, call)

    def _read(
        self,
        offset: int,
        count: int,
        call: Callable[[Callable[[], Page[Server]]], Page[Server]],
    ) -> FreePage:
        page = call(lambda: self._listing(offset, count))
        got = page.items
        held = self._holders([s.id for s in got]) if got else {}
        self._last = FreePage(got, held, complete=not offset and len(got) < count, offset=offset)
        self._view.saw(len(held), page.size)
        return self._last


class TickReads:
    """What the services of one tick read once and share (one per tick; not
    thread-safe), and the servers they are about to reserve.

    Args:
        listings: the worker's :class:`ListingView` per listing, kept from tick to tick
            (default: a fresh mapping, for this tick only).
    """

    def __init__(self, listings: dict[Hashable, ListingView] | None = None) -> None:
        #: servers the services of this tick are about to reserve
        self.reserving: set[int] = set()
        self._listings = listings if listings is not None else {}
        self._reads: dict[Hashable, Any] = {}

    def listing(self, key: Hashable) -> ListingView:
        """What the worker saw of listing ``key`` before."""
        return self._listings.setdefault(key, ListingView())

    def get(self, key: Hashable, read: Callable[[], T]) -> T:
        """What ``read()`` returned for ``key`` in this tick, read now if nothing did
        yet (a read that raises leaves nothing behind)."""
        try:
            value: T = self._reads[key]
        except KeyError:
            value = self._reads[key] = read()
        return value
