"""Events for the billing side and the outbox relay that delivers them.

An event is written into the outbox in the same store transaction as the transition
that causes it, so it can never be lost or announced for a change that did not happen.
:class:`OutboxRelay` delivers stored events to the callback billing registers, **at least
once**: it acknowledges a batch only after the callback returned for each event, and a
callback that raises gets the event again later with exponential backoff. Billing dedupes
on :attr:`Event.event_id`, which is the same on every delivery.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from dci6bridge.stores.base import OutboxMsg, StatusStore

__all__ = ["Event", "EventKind", "OutboxRelay", "event_from_msg"]

log = logging.getLogger("dci6bridge.provisioning")

#: Payload key carrying the time the event was recorded (lifted into Event.created_at).
CREATED_AT_KEY = "created_at"


class EventKind(str, enum.Enum):
    """What happened to the service."""

    ACTIVATED = "activated"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    CLOSED = "closed"
    REINSTALLED = "reinstalled"
    REBOOTED = "rebooted"
    NEEDS_ATTENTION = "needs_attention"


@attrs.frozen
class Event:
    """One notification for billing.

    Attributes:
        event_id: stable across redeliveries (``"<service_id>:<version>:<kind>"``):
            dedupe on it.
        kind: see :class:`EventKind` (``activated``, ``suspended``, ``resumed``,
            ``closed``, ``reinstalled``, ``rebooted``, ``needs_attention``).
        service_id: the service.
        version: the service version (transition number) the event belongs to; events
            of one service are ordered by it.
        payload: details (server id, IP addresses, module, reason, ...). Never a
            secret: read the root password with ``Provisioner.get(service_id)``.
        created_at: when the transition happened (POSIX seconds, store clock).
    """

    event_id: str
    kind: str
    service_id: str
    version: int
    payload: Mapping[str, Any]
    created_at: float


def event_from_msg(msg: OutboxMsg) -> Event:
    """The :class:`Event` for a stored outbox message."""
    payload = dict(msg.payload)
    created_at = payload.pop(CREATED_AT_KEY, msg.available_at)
    return Event(
        event_id=msg.event_id,
        kind=msg.kind,
        service_id=msg.service_id,
        version=msg.version,
        payload=payload,
        created_at=float(created_at),
    )


class OutboxRelay:
    """Deliver outbox events to ``callback``, at least once.

    Args:
        store: the status store.
        callback: billing's handler, called with one :class:`Event` at a time.
        worker_id: identifies this relay's claims in the store.
        lease_ttl: how long claimed events stay reserved for this relay; if it dies
            mid-batch they are delivered again after that.
        base_backoff, max_backoff: retry delay after a raising callback
            (``base * 2**attempts``, capped).
        on_acked: called after each acknowledged batch (e.g. a failpoint).
    """

    def __init__(
        self,
        store: StatusStore,
        callback: Callable[[Event], object],
        *,
        worker_id: str,
        lease_ttl: float = 60.0,
        base_backoff: float = 5.0,
        max_backoff: float = 600.0,
        on_acked: Callable[[], object] | None = None,
    ) -> None:
        self._store = store
        self._callback = callback
        self._worker_id = worker_id
        self._ttl = lease_ttl
        self._base = base_backoff
        self._max = max_backoff
        self._on_acked = on_acked

    def deliver(self, limit: int = 100) -> int:
        """Deliver one batch of due events; returns how many the callback accepted.

        When the callback raises for an event, that event and the later events of the
        same service in this batch are put back (with backoff), so one service's events
        reach billing in order.
        """
        msgs = self._store.claim_outbox(self._worker_id, self._ttl, limit)
        if not msgs:
            return 0
        delivered: list[int] = []
        failed_services: dict[str, float] = {}
        for msg in sorted(msgs, key=lambda m: (m.service_id, m.version, m.id)):
            retry_at = failed_services.get(msg.service_id)
            if retry_at is None:
                try:
                    self._callback(event_from_msg(msg))
                except Exception as exc:
                    delay = min(self._max, self._base * (2 ** min(msg.attempts, 20)))
                    retry_at = self._store.now() + delay
                    failed_services[msg.service_id] = retry_at
                    log.warning(
                        "event %s: billing callback raised %s; retrying in %.0f s",
                        msg.event_id,
                        type(exc).__name__,
                        delay,
                    )
                else:
                    delivered.append(msg.id)
                    continue
            self._store.retry_outbox(msg.id, retry_at)
        if delivered:
            self._store.ack_outbox(delivered)
            if self._on_acked is not None:
                self._on_acked()
        return len(delivered)
