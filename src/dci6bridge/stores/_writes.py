"""The fenced-write entry points every store shares: argument checks, then one ``_advance``.

:meth:`transition` (one move) and :meth:`checkpoint` (no move) are the simplest cases
of :meth:`advance`; a store implements only ``_advance``, the transaction itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import _rules as rules
from .base import Advanced, Lease, Move, NewOutbox, NewTask, StoredService

__all__ = ["FencedWrites"]


class FencedWrites:
    """``transition``, ``checkpoint`` and ``advance`` over a store's ``_advance``."""

    def _advance(
        self,
        lease: Lease,
        *,
        checked: rules.CheckedAdvance,
        expected_state: str | None = None,
        expected_version: int,
        expected_desired_seq: int | None = None,
        renew: float | None = None,
        release: bool = False,
    ) -> Advanced:
        raise NotImplementedError

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
        return self._advance(
            lease,
            expected_state=expected_state,
            expected_version=expected_version,
            checked=rules.check_advance([move], None, None, None),
            release=release,
        ).service

    def checkpoint(
        self, lease: Lease, *, expected_version: int, patch: Mapping[str, Any]
    ) -> StoredService:
        """Fenced same-state update; see :meth:`StatusStore.checkpoint`."""
        return self._advance(
            lease,
            expected_version=expected_version,
            checked=rules.check_advance((), patch, None, None),
        ).service

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
        return self._advance(
            lease,
            expected_state=expected_state,
            expected_version=expected_version,
            expected_desired_seq=expected_desired_seq,
            checked=rules.check_advance(moves, patch, reserve_server, singleton),
            renew=None if renew is None else rules.check_positive(renew, "renew"),
            release=release,
        )
