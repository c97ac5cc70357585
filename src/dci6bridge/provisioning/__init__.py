"""The durable provisioning orchestrator: orders become ready dedicated servers.

Public names: :class:`Provisioner`, :class:`Worker`, :class:`Service`, :class:`Event`,
:class:`ServiceState`, :class:`ServiceStatus`, :class:`ReconcileReport`. See
``docs/orchestrator.md`` for the state machine, the drivers and failure handling.
"""

from __future__ import annotations

from .events import Event, EventKind
from .provisioner import Provisioner
from .reconciler import ReconcileReport
from .service import Service
from .states import ServiceState, ServiceStatus
from .worker import Worker

__all__ = [
    "Event",
    "EventKind",
    "Provisioner",
    "ReconcileReport",
    "Service",
    "ServiceState",
    "ServiceStatus",
    "Worker",
]
