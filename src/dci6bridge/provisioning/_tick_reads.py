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

__all__ = ["FreePage", "FreeServers", "TickReads"]

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


class FreeServers:
    """The first free servers of one listing, read lazily and kept.

    The first ``k`` pages are read in one request for ``k * page_size`` servers, which
    replaces what was read before: a list read page by page by offset shifts as servers
    get their owners, so a page read later at its offset would skip the servers that
    moved into the pages before it (near the end of an inventory, the only free ones).

    DCImanager shows a server free until its owner is set, which happens only after the
    store has its reservation; each read therefore comes with the reservations of its
    servers, read right after it, so a claim skips the ones other workers (or other
    ticks) have taken already instead of having its reservation refused.

    Args:
        listing: reads the first ``n`` free servers (one ``servers.list`` request).
        page_size: servers per page.
        holders: the reservations of the given server ids
            (:meth:`StatusStore.server_claims <dci6bridge.stores.base.StatusStore.server_claims>`).
    """

    def __init__(
        self,
        listing: Callable[[int], list[Server]],
        page_size: int,
        holders: Callable[[list[int]], Mapping[int, str]],
    ) -> None:
        self._listing = listing
        self._page_size = page_size
        self._holders = holders
        self._last: FreePage | None = None

    def first(
        self, pages: int, call: Callable[[Callable[[], list[Server]]], list[Server]]
    ) -> FreePage:
        """The first ``pages`` pages of free servers: those of the latest read when it
        covers them (or found all there were), else read now through ``call``, which
        wraps the remote read as :meth:`StepContext.call` does. A read that raises
        leaves the one before it in place."""
        wanted = pages * self._page_size
        last = self._last
        # a read that was not complete found as many servers as it asked for
        if last is None or (len(last.servers) < wanted and not last.complete):
            got = call(lambda: self._listing(wanted))
            held = self._holders([s.id for s in got]) if got else {}
            last = self._last = FreePage(got, held, complete=len(got) < wanted)
        return FreePage(last.servers[:wanted], last.holders, last.complete)


class TickReads:
    """What the services of one tick read once and share (one per tick; not
    thread-safe), and the servers they are about to reserve."""

    def __init__(self) -> None:
        #: servers the services of this tick are about to reserve
        self.reserving: set[int] = set()
        self._reads: dict[Hashable, Any] = {}

    def get(self, key: Hashable, read: Callable[[], T]) -> T:
        """What ``read()`` returned for ``key`` in this tick, read now if nothing did
        yet (a read that raises leaves nothing behind)."""
        try:
            value: T = self._reads[key]
        except KeyError:
            value = self._reads[key] = read()
        return value
