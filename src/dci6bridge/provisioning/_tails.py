"""The last writes of finished leases, sent with the worker's next write.

A lease ends with one write: its queued state changes and the release (``active`` after
the last poll, a backoff, an idle release). Nothing waits on that write: it follows only
remote reads or remote calls whose intent is durable already, so a crash that loses it
loses what the next worker reads back and writes again (``reference/durability.md`` §2).
It can therefore wait for the next write the worker must make anyway, for another
service, and share its transaction (:meth:`StatusStore.advance_many
<dci6bridge.stores.base.StatusStore.advance_many>`); :meth:`TailWrites.drain` sends what
is left when the tick ends.
"""

from __future__ import annotations

from collections.abc import Callable

from dci6bridge.stores.base import Advanced, AdvanceOutcome, AdvanceRequest, StatusStore

__all__ = ["TailWrites"]


class TailWrites:
    """One tick's queue of lease-ending writes (not thread-safe: one per tick)."""

    def __init__(self, store: StatusStore) -> None:
        self._store = store
        self._queued: list[tuple[AdvanceRequest, Callable[[AdvanceOutcome], None]]] = []

    def queue(self, request: AdvanceRequest, done: Callable[[AdvanceOutcome], None]) -> None:
        """Hold ``request`` until the next :meth:`write` or :meth:`drain`; ``done`` gets
        its outcome then (the :class:`Advanced`, or the fencing error it met)."""
        self._queued.append((request, done))

    def write(self, request: AdvanceRequest) -> Advanced:
        """Write ``request`` with the queued writes ahead of it, in one transaction; its
        own refusal is raised as :meth:`StatusStore.advance` raises it."""
        (own,) = self.write_many([request])
        if isinstance(own, Advanced):
            return own
        raise own

    def write_many(self, requests: list[AdvanceRequest]) -> list[AdvanceOutcome]:
        """Write ``requests`` (several services' writes) with the queued writes ahead of
        them, in one transaction; returns their outcomes, a refusal in its place."""
        return self._send(requests)[-len(requests) :] if requests else []

    def drain(self) -> None:
        """Write what is queued (nothing to do when the queue is empty)."""
        self._send([])

    def _send(self, requests: list[AdvanceRequest]) -> list[AdvanceOutcome]:
        queued, self._queued = self._queued, []
        requests = [r for r, _ in queued] + requests
        if not requests:
            return []
        outcomes = self._store.advance_many(requests)
        for (_, done), outcome in zip(queued, outcomes, strict=False):
            done(outcome)
        return outcomes
