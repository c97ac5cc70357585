"""Pluggable status stores: where the orchestrator keeps services, leases and history.

:func:`open_store` picks one from a URL. All of them implement
:class:`~dci6bridge.stores.base.StatusStore` with exactly the same semantics:

* :class:`MemoryStore` — tests, examples, one-process scripts;
* :class:`SQLiteStore` — the embedded default: WAL, ``BEGIN IMMEDIATE``, safe for several
  worker processes on one host;
* :class:`PostgresStore` — psycopg 3, ``FOR UPDATE SKIP LOCKED`` claims, for many workers on
  many hosts (install the ``postgres`` extra).
"""

from __future__ import annotations

from ._url import open_store, redact_url
from .base import (
    PATCHABLE,
    Advanced,
    AdvanceRequest,
    DepartmentTask,
    Lease,
    Move,
    NewOutbox,
    NewTask,
    OutboxMsg,
    PruneResult,
    StatusStore,
    StoredService,
    Transition,
)
from .memory import MemoryStore
from .postgres import PostgresStore
from .sqlite import SQLiteStore

__all__ = [
    "PATCHABLE",
    "AdvanceRequest",
    "Advanced",
    "DepartmentTask",
    "Lease",
    "MemoryStore",
    "Move",
    "NewOutbox",
    "NewTask",
    "OutboxMsg",
    "PostgresStore",
    "PruneResult",
    "SQLiteStore",
    "StatusStore",
    "StoredService",
    "Transition",
    "open_store",
    "redact_url",
]
