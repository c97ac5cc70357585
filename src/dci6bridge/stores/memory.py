"""``MemoryStore``: the status store for tests, examples and one-process scripts.

Everything lives in this object, behind one lock, so it is thread-safe but neither shared
between processes nor kept after exit. It follows exactly the same rules as the SQL
stores (:mod:`dci6bridge.stores._rules`) and stores the same rows, so code tested against
it behaves the same on SQLite or PostgreSQL.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from dci6bridge.errors import (
    LeaseLost,
    ServiceNotFound,
    SpecMismatch,
    StaleState,
    StoreError,
    TaskNotFound,
)

from . import _rules as rules
from ._codec import (
    customer_key,
    outbox_from_row,
    service_from_row,
    service_to_row,
    task_from_row,
    transition_from_row,
)
from ._writes import FencedWrites
from .base import (
    Advanced,
    AdvanceOutcome,
    DepartmentTask,
    Lease,
    NewTask,
    OutboxMsg,
    PruneResult,
    StoredService,
    Transition,
)

__all__ = ["MemoryStore"]


class MemoryStore(FencedWrites):
    """An in-process :class:`~dci6bridge.stores.base.StatusStore`.

    Args:
        clock: returns POSIX seconds; inject a fake clock to move leases forward in tests.
        unsafe_disable_fencing: **test-only** — fenced writes skip the lease and version
            checks (see :func:`~dci6bridge.stores.open_store`). Never use it in production.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        unsafe_disable_fencing: bool = False,
    ) -> None:
        self._clock = clock
        self._unsafe = bool(unsafe_disable_fencing)
        self._lock = threading.RLock()
        self._writes = 0
        self._closed = False
        self._services: dict[str, dict[str, Any]] = {}
        # Ids of the rows with ``runnable`` set: what ``acquire`` looks through (the SQL
        # stores' partial index), so its cost follows the work left, not every service.
        self._runnable: set[str] = set()
        self._history: dict[str, list[dict[str, Any]]] = {}
        self._claims: dict[int, str] = {}
        self._claim_of: dict[str, int] = {}  # the reverse of _claims: one server a service
        self._requests: dict[tuple[str, str], tuple[str, float]] = {}  # fingerprint, at
        self._by_customer: dict[str, set[str]] = {}  # the SQL stores' customer index
        self._outbox: dict[int, dict[str, Any]] = {}
        self._tasks: dict[int, dict[str, Any]] = {}
        self._singletons: dict[str, tuple[str, float]] = {}
        self._last_ids: dict[str, int] = {"outbox": 0, "tasks": 0}

    def __repr__(self) -> str:
        return f"MemoryStore(services={len(self._services)})"

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _write(self) -> Iterator[None]:
        # Callers validate and decide before touching the dicts, so an exception in the
        # block leaves everything as it was: the memory analogue of a rolled-back write.
        with self._lock:
            self._check_open()
            yield
            self._writes += 1

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("MemoryStore is closed")

    def _row(self, service_id: str, known: StoredService | None = None) -> StoredService | None:
        row = self._services.get(service_id)
        return None if row is None else service_from_row(row, known)

    def _put(self, service: StoredService) -> StoredService:
        """Store ``service``; a copy sharing nothing with it or with the store."""
        self._store(service, None)
        return service_from_row(self._services[service.service_id])

    def _store(self, service: StoredService, changed: Sequence[str] | None) -> None:
        """Store ``service`` as a row. ``changed``: the columns that differ from the
        stored row (``None``: unknown); the JSON of ``spec`` (never changed after
        creation) and of an unchanged ``data`` is kept rather than encoded again."""
        sid = service.service_id
        old = self._services.get(sid)
        if old is None:
            row = service_to_row(service)
        else:
            same_data = changed is not None and "data_json" not in changed
            row = service_to_row(
                service,
                spec_json=old["spec_json"],
                data_json=old["data_json"] if same_data else None,
            )
        self._services[sid] = row
        if service.runnable:
            self._runnable.add(sid)
        else:
            self._runnable.discard(sid)

    def _new_id(self, table: str) -> int:
        # One sequence per table, as the SQL stores have.
        self._last_ids[table] += 1
        return self._last_ids[table]

    def _open_task(self, service_id: str, task: NewTask, now: float) -> dict[str, Any]:
        for row in self._tasks.values():
            if (
                row["service_id"] == service_id
                and row["kind"] == task.kind
                and row["resolved_at"] is None
            ):
                return row
        row = {
            "id": self._new_id("tasks"),
            "department": task.department,
            "service_id": service_id,
            "kind": task.kind,
            "reason": task.reason,
            "created_at": now,
            "resolved_at": None,
            "resolution": None,
        }
        self._tasks[row["id"]] = row
        return row

    # ------------------------------------------------------------------ lifecycle
    def now(self) -> float:
        """The injected clock."""
        return float(self._clock())

    def close(self) -> None:
        """Mark the store closed; later calls raise :class:`~dci6bridge.errors.StoreError`."""
        self._closed = True

    @property
    def write_count(self) -> int:
        """Write operations that changed something."""
        return self._writes

    # ------------------------------------------------------------------ inbound
    def create_service(
        self, service_id: str, spec: Mapping[str, Any], *, state: str, desired: str
    ) -> tuple[StoredService, bool]:
        """Insert-if-absent; see :meth:`StatusStore.create_service`."""
        with self._lock:
            self._check_open()
            now = self.now()
            fresh = rules.new_service(service_id, spec, state=state, desired=desired, now=now)
            existing = self._row(service_id)
            if existing is not None:
                if existing.spec_hash != fresh.spec_hash:
                    raise SpecMismatch(
                        f"service {service_id!r} exists with a different spec "
                        f"(hash {existing.spec_hash[:12]}, got {fresh.spec_hash[:12]})"
                    )
                return existing, False
            with self._write():
                self._history[service_id] = []
                self._by_customer.setdefault(customer_key(fresh.spec), set()).add(service_id)
                return self._put(fresh), True

    def request(
        self,
        service_id: str,
        request_id: str,
        action: str,
        params: Mapping[str, Any],
        decide: Callable[[StoredService], Mapping[str, Any]],
    ) -> tuple[StoredService, bool]:
        """Apply one billing request once; see :meth:`StatusStore.request`."""
        rules.check_text(request_id, "request_id")
        fingerprint = rules.params_hash(action, params)
        with self._lock:
            self._check_open()
            current = self._row(service_id)
            if current is None:
                raise ServiceNotFound(f"service {service_id!r} not found")
            seen = self._requests.get((service_id, request_id))
            if seen is not None:
                if seen[0] != fingerprint:
                    raise SpecMismatch(
                        f"request {request_id!r} of service {service_id!r} was already "
                        "used with a different action or parameters"
                    )
                return current, False
            patch = rules.check_patch(decide(current))
            now = self.now()
            updated = rules.apply_patch(current, patch, now)
            with self._write():
                self._requests[(service_id, request_id)] = (fingerprint, now)
                return self._put(updated), True

    # ------------------------------------------------------------------ leases
    def acquire(self, worker_id: str, ttl_s: float, limit: int = 1) -> list[Lease]:
        """Lease runnable services; see :meth:`StatusStore.acquire`."""
        ttl = rules.check_claim(worker_id, ttl_s, limit)
        with self._lock:
            self._check_open()
            now = self.now()
            rows = self._services
            due = (
                rows[sid]
                for sid in self._runnable
                if rows[sid]["not_before"] <= now
                and (rows[sid]["lease_owner"] is None or rows[sid]["lease_until"] <= now)
            )
            first = heapq.nsmallest(limit, due, key=lambda r: (r["not_before"], r["service_id"]))
            ready = [service_from_row(row) for row in first]
            if not ready:
                return []
            leases = []
            with self._write():
                for service in ready:
                    taken = self._put(
                        attrs.evolve(
                            service,
                            lease_owner=worker_id,
                            lease_epoch=service.lease_epoch + 1,
                            lease_until=now + ttl,
                        )
                    )
                    leases.append(rules.lease_of(taken))
            return leases

    def renew(self, lease: Lease, ttl_s: float) -> Lease:
        """Extend a live lease; see :meth:`StatusStore.renew`."""
        ttl = rules.check_positive(ttl_s, "ttl_s")
        with self._lock:
            self._check_open()
            now = self.now()
            current = rules.fence(self._row(lease.service_id), lease, now, unsafe=self._unsafe)
            with self._write():
                renewed = self._put(attrs.evolve(current, lease_until=now + ttl))
            return attrs.evolve(lease, until=renewed.lease_until, service=renewed)

    def release(
        self,
        lease: Lease,
        *,
        not_before: float | None = None,
        error: str | None = None,
        count_attempt: bool = False,
    ) -> None:
        """Give a lease up; see :meth:`StatusStore.release`."""
        changes = rules.release_changes(not_before=not_before, error=error)
        with self._lock:
            self._check_open()
            now = self.now()
            current = self._row(lease.service_id)
            if current is None or not (self._unsafe or rules.lease_held(current, lease, now)):
                return
            if count_attempt:
                changes["attempts"] = current.attempts + 1
            released = rules.apply_patch(current, changes, now)
            with self._write():
                self._put(attrs.evolve(released, lease_owner=None, lease_until=0.0))

    # ------------------------------------------------------------------ fenced writes
    def _advance_many(self, requests: Sequence[rules.CheckedRequest]) -> list[AdvanceOutcome]:
        # The phases of the SQL stores: fence and plan every request, make the takes in
        # the stores' one order, then write in request order (so the answers, the
        # history and the outbox order are theirs).
        outcomes: list[AdvanceOutcome | None] = [None] * len(requests)
        with self._lock:
            self._check_open()
            now = self.now()
            planned: list[tuple[int, StoredService, rules.AdvancePlan]] = []
            for i, request in enumerate(requests):
                try:
                    row = self._row(request.lease.service_id, request.lease.service)
                    planned.append(
                        (i, *rules.fence_and_plan(request, row, now, unsafe=self._unsafe))
                    )
                except (LeaseLost, StaleState, ServiceNotFound) as exc:
                    # decided before this request wrote anything: the others go on
                    outcomes[i] = exc
            order = rules.take_order(
                [
                    (requests[i].checked.reserve_server, requests[i].checked.singleton)
                    for i, _, _ in planned
                ]
            )
            taken: dict[int, tuple[bool | None, bool | None]] = {}
            for k in order:
                i, current, plan = planned[k]
                try:
                    answer = self._take(requests[i], plan, now)
                except StaleState as exc:
                    outcomes[i] = exc
                    continue
                if answer is None:  # another service holds the server: nothing written
                    outcomes[i] = Advanced(current, reserved=False)
                else:
                    taken[i] = answer
            for i, _, plan in planned:
                if i in taken:
                    reserved, held = taken[i]
                    self._write_plan(requests[i].lease, plan, now)
                    outcomes[i] = Advanced(plan.service, reserved=reserved, singleton=held)
            # a write only if some request wrote (a refused reservation writes nothing)
            if taken:
                self._writes += 1
        return [o for o in outcomes if o is not None]

    def _take(
        self, request: rules.CheckedRequest, plan: rules.AdvancePlan, now: float
    ) -> tuple[bool | None, bool | None] | None:
        """The request's reservation, then its singleton: ``(reserved, held)``, ``None``
        when another service holds the server (then nothing is taken)."""
        sid, checked = request.lease.service_id, request.checked
        reserved: bool | None = None
        if checked.reserve_server is not None:
            if not self._reservable(sid, checked.reserve_server):
                return None
            self._claim(checked.reserve_server, sid)
            reserved = True
        held: bool | None = None
        if checked.singleton is not None:
            holder, until = rules.singleton_hold(request.lease, plan, now)
            held = self._take_singleton(checked.singleton, holder, until, now)
        return reserved, held

    def _write_plan(self, lease: Lease, plan: rules.AdvancePlan, now: float) -> None:
        sid = lease.service_id
        # plan.service shares no object with the store, which keeps JSON text
        self._store(plan.service, plan.changed)
        self._history.setdefault(sid, []).extend(
            {
                "service_id": sid,
                "version": version,
                "from_state": from_state,
                "to_state": to_state,
                "epoch": lease.epoch,
                "worker": lease.worker_id,
                "at": now,
                "detail_json": detail_json,
            }
            for version, from_state, to_state, detail_json in plan.history
        )
        for version, kind, payload_json in plan.outbox:
            msg_id = self._new_id("outbox")
            self._outbox[msg_id] = {
                "id": msg_id,
                "service_id": sid,
                "version": version,
                "kind": kind,
                "payload_json": payload_json,
                "attempts": 0,
                "available_at": now,
                "lease_owner": None,
                "lease_until": None,
                "delivered_at": None,
            }
        for task in plan.tasks:
            self._open_task(sid, task, now)

    # ------------------------------------------------------------------ reservations
    def reserve_server(self, lease: Lease, server_id: int) -> bool:
        """Reserve a server for the leased service; see :meth:`StatusStore.reserve_server`."""
        rules.check_server_id(server_id)
        with self._lock:
            self._check_open()
            rules.fence(self._row(lease.service_id), lease, self.now(), unsafe=self._unsafe)
            if self._claims.get(server_id) == lease.service_id:
                return True
            if not self._reservable(lease.service_id, server_id):
                return False
            with self._write():
                self._claim(server_id, lease.service_id)
            return True

    def _claim(self, server_id: int, service_id: str) -> None:
        self._claims[server_id] = service_id
        self._claim_of[service_id] = server_id

    def _reservable(self, service_id: str, server_id: int) -> bool:
        """Whether ``service_id`` may hold ``server_id`` (``False``: another one does)."""
        holder = self._claims.get(server_id)
        if holder is not None:
            return holder == service_id
        mine = self._claim_of.get(service_id)
        if mine is not None:
            raise StaleState(rules.holds_other_server(service_id, mine, server_id))
        return True

    def release_server(self, lease: Lease, server_id: int) -> None:
        """Drop this service's reservation; see :meth:`StatusStore.release_server`."""
        rules.check_server_id(server_id)
        with self._lock:
            self._check_open()
            rules.fence(self._row(lease.service_id), lease, self.now(), unsafe=self._unsafe)
            if self._claims.get(server_id) == lease.service_id:
                with self._write():
                    del self._claims[server_id]
                    del self._claim_of[lease.service_id]

    def server_claims(
        self, server_ids: Iterable[int] | None = None, *, service_id: str | None = None
    ) -> Mapping[int, str]:
        """Reservations: server id → service id, ordered by server id; only those of
        ``server_ids`` and of ``service_id`` when given."""
        wanted = None if server_ids is None else set(rules.check_server_ids(server_ids))
        holder = None if service_id is None else rules.check_text(service_id, "service_id")
        with self._lock:
            return {
                server: service
                for server, service in sorted(self._claims.items())
                if (wanted is None or server in wanted) and holder in (None, service)
            }

    # ------------------------------------------------------------------ reads
    def get(self, service_id: str) -> StoredService | None:
        """The service, or ``None``."""
        with self._lock:
            return self._row(service_id)

    def services(self, states: Sequence[str] | None = None) -> list[StoredService]:
        """Every service (optionally only those in ``states``), ordered by id."""
        wanted = None if states is None else set(states)
        with self._lock:
            rows = [self._services[k] for k in sorted(self._services)]
        # filtered on the row: only the services asked for are decoded
        return [service_from_row(r) for r in rows if wanted is None or r["state"] in wanted]

    def services_of_customer(
        self,
        customer_email: str,
        *,
        module: str | None = None,
        states: Sequence[str] | None = None,
    ) -> list[StoredService]:
        """One customer's services, by the customer index; see
        :meth:`StatusStore.services_of_customer`."""
        key, module, wanted = rules.check_customer_query(customer_email, module, states)
        with self._lock:
            rows = [self._services[k] for k in sorted(self._by_customer.get(key, ()))]
        return [
            s
            for s in map(service_from_row, rows)
            if (module is None or s.module == module) and (wanted is None or s.state in wanted)
        ]

    def history(self, service_id: str) -> list[Transition]:
        """Every transition of the service, by version."""
        with self._lock:
            rows = list(self._history.get(service_id, ()))
        return [transition_from_row(r) for r in rows]

    # ------------------------------------------------------------------ department tasks
    def add_task(self, service_id: str, task: NewTask) -> DepartmentTask:
        """Open a task unless the same service already has an open one of that kind."""
        rules.check_text(service_id, "service_id")
        rules.check_task(task)
        with self._lock:
            self._check_open()
            before = len(self._tasks)
            row = self._open_task(service_id, task, self.now())
            if len(self._tasks) != before:
                self._writes += 1
            return task_from_row(row)

    def tasks(
        self, *, department: str | None = None, include_resolved: bool = False
    ) -> list[DepartmentTask]:
        """Department tasks, oldest first."""
        with self._lock:
            rows = [dict(r) for r in self._tasks.values()]
        rows = [
            r
            for r in rows
            if (department is None or r["department"] == department)
            and (include_resolved or r["resolved_at"] is None)
        ]
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
        return [task_from_row(r) for r in rows]

    def resolve_task(self, task_id: int, resolution: str) -> DepartmentTask:
        """Mark a task resolved (idempotent: the first resolution stays)."""
        rules.check_text(resolution, "resolution")
        with self._lock:
            self._check_open()
            row = self._tasks.get(task_id)
            if row is None:
                raise TaskNotFound(f"department task {task_id!r} not found")
            if row["resolved_at"] is None:
                with self._write():
                    row["resolved_at"] = self.now()
                    row["resolution"] = resolution
            return task_from_row(row)

    # ------------------------------------------------------------------ outbox
    def claim_outbox(self, worker_id: str, ttl_s: float, limit: int = 100) -> list[OutboxMsg]:
        """Lease undelivered events, oldest first; see :meth:`StatusStore.claim_outbox`."""
        ttl = rules.check_claim(worker_id, ttl_s, limit)
        with self._lock:
            self._check_open()
            now = self.now()
            ready = [
                r
                for r in self._outbox.values()
                if r["delivered_at"] is None
                and r["available_at"] <= now
                and (r["lease_until"] is None or r["lease_until"] <= now)
            ][:limit]
            if not ready:
                return []
            with self._write():
                for row in ready:
                    row["lease_owner"] = worker_id
                    row["lease_until"] = now + ttl
            return [outbox_from_row(r) for r in ready]

    def ack_outbox(self, ids: Sequence[int]) -> None:
        """Mark events delivered (unknown or already delivered ids are ignored)."""
        with self._lock:
            self._check_open()
            rows = [
                self._outbox[i]
                for i in ids
                if i in self._outbox and self._outbox[i]["delivered_at"] is None
            ]
            if rows:
                now = self.now()
                with self._write():
                    for row in rows:
                        row["delivered_at"] = now
                        row["lease_owner"] = None
                        row["lease_until"] = None

    def retry_outbox(self, msg_id: int, not_before: float) -> None:
        """Count a failed delivery and make the event available at ``not_before``."""
        when = rules.check_number(not_before, "not_before")
        with self._lock:
            self._check_open()
            row = self._outbox.get(msg_id)
            if row is None or row["delivered_at"] is not None:
                return
            with self._write():
                row["attempts"] += 1
                row["available_at"] = when
                row["lease_owner"] = None
                row["lease_until"] = None

    # ------------------------------------------------------------------ housekeeping
    def prune(
        self,
        *,
        requests_older_than_s: float = 72 * 3600,
        delivered_older_than_s: float = 72 * 3600,
        limit: int = 10_000,
    ) -> PruneResult:
        """Delete old request records and delivered events; see :meth:`StatusStore.prune`."""
        request_age, delivered_age, most = rules.check_prune(
            requests_older_than_s, delivered_older_than_s, limit
        )
        with self._lock:
            self._check_open()
            now = self.now()
            old_requests = sorted(
                (at, key) for key, (_, at) in self._requests.items() if at < now - request_age
            )
            delivered = sorted(
                (row["delivered_at"], msg_id)
                for msg_id, row in self._outbox.items()
                if row["delivered_at"] is not None and row["delivered_at"] < now - delivered_age
            )
            if not (old_requests or delivered):
                return PruneResult(requests=0, outbox=0, more=False)
            with self._write():
                for _, key in old_requests[:most]:
                    del self._requests[key]
                for _, msg_id in delivered[:most]:
                    del self._outbox[msg_id]
        return PruneResult(
            requests=min(len(old_requests), most),
            outbox=min(len(delivered), most),
            more=len(old_requests) >= most or len(delivered) >= most,
        )

    # ------------------------------------------------------------------ singletons
    def try_singleton(self, name: str, worker_id: str, ttl_s: float) -> bool:
        """Hold the named singleton for ``ttl_s`` if it is free, expired or already ours."""
        rules.check_text(name, "name")
        rules.check_text(worker_id, "worker_id")
        ttl = rules.check_positive(ttl_s, "ttl_s")
        with self._lock:
            self._check_open()
            now = self.now()
            if not self._singleton_free(name, worker_id, now):
                return False
            with self._write():
                return self._take_singleton(name, worker_id, now + ttl, now)

    def _singleton_free(self, name: str, holder: str, now: float) -> bool:
        held = self._singletons.get(name)
        return held is None or held[0] == holder or held[1] <= now

    def _take_singleton(self, name: str, holder: str, until: float, now: float) -> bool:
        if not self._singleton_free(name, holder, now):
            return False
        self._singletons[name] = (holder, until)
        return True
