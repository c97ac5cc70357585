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

import itertools
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from dci6bridge.client.models import Server

__all__ = ["FreePage", "FreeServers", "TickReads"]

T = TypeVar("T")


@attrs.frozen
class FreePage:
    """One page of free servers, and who holds a reservation of any of them."""

    servers: list[Server]
    #: server id → the service that has it reserved, read from the store with the page
    holders: Mapping[int, str]


class FreeServers:
    """The pages of one listing of free servers, read lazily and kept.

    DCImanager shows a server free until its owner is set, which happens only after the
    store has its reservation; each page therefore comes with the reservations of its
    servers, read right after it, so a claim skips the ones other workers (or other
    ticks) have taken already instead of having its reservation refused.

    Args:
        listing: makes the server iterator (the client's paged ``servers.list``).
        page_size: servers per page (the listing's own page size).
        holders: the reservations of the given server ids
            (:meth:`StatusStore.server_claims <dci6bridge.stores.base.StatusStore.server_claims>`).
    """

    def __init__(
        self,
        listing: Callable[[], Iterator[Server]],
        page_size: int,
        holders: Callable[[list[int]], Mapping[int, str]],
    ) -> None:
        self._listing = listing
        self._page_size = page_size
        self._holders = holders
        self._servers: Iterator[Server] | None = None
        self._pages: list[FreePage] = []

    def page(
        self, index: int, call: Callable[[Callable[[], list[Server]]], list[Server]]
    ) -> FreePage:
        """Page ``index`` (from 0); a page not read yet is read through ``call`` (which
        wraps the remote read, as :meth:`StepContext.call` does)."""
        while len(self._pages) <= index:
            try:
                got = call(self._next_page)
            except BaseException:
                # a generator that raised is finished: the next reader starts over
                self._servers = None
                self._pages.clear()
                raise
            held = self._holders([s.id for s in got]) if got else {}
            self._pages.append(FreePage(got, held))
        return self._pages[index]

    def _next_page(self) -> list[Server]:
        if self._servers is None:
            self._servers = self._listing()
        return list(itertools.islice(self._servers, self._page_size))


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
