"""The fenced-write entry points every store shares: argument checks, then one
``_advance_many``.

:meth:`transition` (one move), :meth:`checkpoint` (no move) and :meth:`advance` (one
lease) are the simplest cases of :meth:`advance_many`; a store implements only
``_advance_many``, the transaction itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import _rules as rules
from .base import (
    Advanced,
    AdvanceOutcome,
    AdvanceRequest,
    Lease,
    Move,
    NewOutbox,
    NewTask,
    StoredService,
)

__all__ = ["FencedWrites"]


class FencedWrites:
    """``transition``, ``checkpoint``, ``advance`` and ``advance_many`` over a store's
    ``_advance_many``."""

    def _advance_many(self, requests: Sequence[rules.CheckedRequest]) -> list[AdvanceOutcome]:
        """Apply checked requests in one transaction, each fenced on its own; a refused
        one writes nothing and its error is returned in its place."""
        raise NotImplementedError

    def _one(self, request: rules.CheckedRequest) -> Advanced:
        (outcome,) = self._advance_many([request])
        if isinstance(outcome, Advanced):
            return outcome
        raise outcome

    def transition(
        self,
        lease: Lease,
        *,
        expected_state: str,
        expected_version: int,
        new_state: str,
        patch: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        outbox: Sequence[NewOutbox] = (),
        task: NewTask | None = None,
        release: bool = False,
    ) -> StoredService:
        """Fenced compare-and-set state change; see :meth:`StatusStore.transition`."""
        move = Move(new_state, patch or {}, detail or {}, outbox, task)
        checked = rules.check_advance([move], None, None, None)
        return self._one(
            rules.CheckedRequest(lease, checked, expected_state, expected_version, release=release)
        ).service

    def checkpoint(
        self, lease: Lease, *, expected_version: int, patch: Mapping[str, Any]
    ) -> StoredService:
        """Fenced same-state update; see :meth:`StatusStore.checkpoint`."""
        checked = rules.check_advance((), patch, None, None)
        return self._one(rules.CheckedRequest(lease, checked, None, expected_version)).service

    def advance(
        self,
        lease: Lease,
        *,
        expected_state: str,
        expected_version: int,
        moves: Sequence[Move] = (),
        patch: Mapping[str, Any] | None = None,
        expected_desired_seq: int | None = None,
        reserve_server: int | None = None,
        singleton: str | None = None,
        renew: float | None = None,
        release: bool = False,
    ) -> Advanced:
        """Several fenced writes in one transaction; see :meth:`StatusStore.advance`."""
        return self._one(
            rules.CheckedRequest(
                lease,
                rules.check_advance(moves, patch, reserve_server, singleton),
                expected_state,
                expected_version,
                expected_desired_seq,
                None if renew is None else rules.check_positive(renew, "renew"),
                release,
            )
        )

    def advance_many(self, requests: Sequence[AdvanceRequest]) -> list[AdvanceOutcome]:
        """Several leases' writes in one transaction; see :meth:`StatusStore.advance_many`."""
        checked = rules.check_requests(requests)
        return self._advance_many(checked) if checked else []
