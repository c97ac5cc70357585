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
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

from dci6bridge.client.models import Server

__all__ = ["FreeServers", "TickReads"]

T = TypeVar("T")


class FreeServers:
    """The pages of one listing of free servers, read lazily and kept.

    Args:
        listing: makes the server iterator (the client's paged ``servers.list``).
        page_size: servers per page (the listing's own page size).
    """

    def __init__(self, listing: Callable[[], Iterator[Server]], page_size: int) -> None:
        self._listing = listing
        self._page_size = page_size
        self._servers: Iterator[Server] | None = None
        self._pages: list[list[Server]] = []

    def page(
        self, index: int, call: Callable[[Callable[[], list[Server]]], list[Server]]
    ) -> list[Server]:
        """Page ``index`` (from 0); a page not read yet is read through ``call`` (which
        wraps the read, as :meth:`StepContext.call` does)."""
        while len(self._pages) <= index:
            try:
                got = call(self._next_page)
            except BaseException:
                # a generator that raised is finished: the next reader starts over
                self._servers = None
                self._pages.clear()
                raise
            self._pages.append(got)
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
