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

from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import attrs

from dci6bridge.client.models import Server

__all__ = ["WIDE_PAGES", "Contention", "FreePage", "FreeServers", "TickReads"]

T = TypeVar("T")


@attrs.frozen
class FreePage:
    """The first free servers as of one read, and who holds a reservation of any of
    them."""

    servers: list[Server]
    #: server id → the service that has it reserved, read from the store with the servers
    holders: Mapping[int, str]
    #: the read found fewer servers than it asked for: there are no more
    complete: bool


#: pages read at once, beyond those the servers seen taken fill, while other workers
#: pick from the same listing (see :class:`Contention`)
WIDE_PAGES = 4


class Contention:
    """How much other workers contend for the free servers of one listing, as this
    worker last saw it: the servers its latest read of the listing found reserved, plus
    its reservations refused since. Kept by the worker from tick to tick (one per
    listing, :meth:`TickReads.contention`); it sizes reads, and never makes a claim
    skip a server.

    Reserved servers lead the listing until their owners are set, and workers picking
    at random among the same few free servers pick the same ones: their reservations
    are refused, and each refusal costs a write and often another read. So once others
    are seen at it, the first read of a tick asks for :data:`WIDE_PAGES` pages more than
    the servers seen taken fill. Measured with 4 worker threads on PostgreSQL
    (``bench/provision.py``, 1,000 orders): with one page, 39-42 % of the
    reservations were refused and the listing was read 0.44-0.46 times per order;
    reading wide, 21-25 % and 0.21-0.23.
    """

    def __init__(self) -> None:
        #: servers found reserved by the latest read, plus reservations refused since
        self.taken = 0

    def first_pages(self, page_size: int, max_pages: int) -> int:
        """Pages the first read of a tick asks for: one while nobody else was seen
        taking servers of the listing, else :data:`WIDE_PAGES` more than the servers
        seen taken fill (at most ``max_pages``)."""
        if self.taken <= 0:
            return 1
        return max(1, min(max_pages, WIDE_PAGES + -(-self.taken // page_size)))


class FreeServers:
    """The first free servers of one listing, read lazily and kept.

    The first ``k`` pages are read in one request for ``k * page_size`` servers, which
    replaces what was read before: a list read page by page by offset shifts as servers
    get their owners, so a page read later at its offset would skip the servers that
    moved into the pages before it (near the end of an inventory, the only free ones).

    DCImanager shows a server free until its owner is set, which happens only after the
    store has its reservation; each read therefore comes with the reservations of its
    servers, read right after it, so a claim skips the ones other workers (or other
    ticks) have taken already instead of having its reservation refused. While other
    workers pick from the same listing, the first read is wider (:class:`Contention`).

    Args:
        listing: reads the first ``n`` free servers (one ``servers.list`` request).
        page_size: servers per page.
        holders: the reservations of the given server ids
            (:meth:`StatusStore.server_claims <dci6bridge.stores.base.StatusStore.server_claims>`).
        contention: what this worker saw of others taking servers of this listing:
            sizes the first read; every read updates it.
        max_pages: the first read asks for at most this many pages.
    """

    def __init__(
        self,
        listing: Callable[[int], list[Server]],
        page_size: int,
        holders: Callable[[list[int]], Mapping[int, str]],
        *,
        contention: Contention | None = None,
        max_pages: int = 1,
    ) -> None:
        self._listing = listing
        self._page_size = page_size
        self._holders = holders
        self._contention = contention if contention is not None else Contention()
        self._first_pages = self._contention.first_pages(page_size, max_pages)
        self._last: FreePage | None = None

    def first(
        self, pages: int, call: Callable[[Callable[[], list[Server]]], list[Server]]
    ) -> FreePage:
        """At least the first ``pages`` pages of free servers (all the latest read has,
        when it covers them or found all there were), else read now through ``call``,
        which wraps the remote read as :meth:`StepContext.call` does. A read that raises
        leaves the one before it in place."""
        wanted = pages * self._page_size
        last = self._last
        # a read that was not complete found as many servers as it asked for
        if last is None or (len(last.servers) < wanted and not last.complete):
            if last is None:
                wanted = max(wanted, self._first_pages * self._page_size)
            got = call(lambda: self._listing(wanted))
            held = self._holders([s.id for s in got]) if got else {}
            last = self._last = FreePage(got, held, complete=len(got) < wanted)
            self._contention.taken = len(held)
        return last


class TickReads:
    """What the services of one tick read once and share (one per tick; not
    thread-safe), and the servers they are about to reserve.

    Args:
        contention: the worker's :class:`Contention` per listing, kept from tick to
            tick (default: a fresh mapping, for this tick only).
    """

    def __init__(self, contention: dict[Hashable, Contention] | None = None) -> None:
        #: servers the services of this tick are about to reserve
        self.reserving: set[int] = set()
        self._contention = contention if contention is not None else {}
        self._reads: dict[Hashable, Any] = {}

    def contention(self, key: Hashable) -> Contention:
        """What the worker saw of others taking servers of listing ``key``."""
        return self._contention.setdefault(key, Contention())

    def get(self, key: Hashable, read: Callable[[], T]) -> T:
        """What ``read()`` returned for ``key`` in this tick, read now if nothing did
        yet (a read that raises leaves nothing behind)."""
        try:
            value: T = self._reads[key]
        except KeyError:
            value = self._reads[key] = read()
        return value
