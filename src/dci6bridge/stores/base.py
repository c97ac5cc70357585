"""The status-store protocol every backend implements, and the records it stores.

The store is a *ledger with leases*, free of business rules: it does not know what a
state name means. The orchestrator (``dci6bridge.provisioning``) decides; the store
guarantees that

* every state change is one compare-and-set transaction together with its history row,
  its outbox rows and its department task, never partial (:meth:`StatusStore.transition`);
* every write of a worker is fenced by its lease epoch: a worker whose lease expired or
  was taken over gets :class:`~dci6bridge.errors.LeaseLost` and changes nothing;
* a service id is created once (:meth:`StatusStore.create_service`), a billing request is
  applied once per ``(service_id, request_id)`` (:meth:`StatusStore.request`);
* a DCImanager server is reserved for at most one service and a service reserves at most
  one server (:meth:`StatusStore.reserve_server`).

Times are POSIX seconds from the store's clock (:meth:`StatusStore.now`), injectable for
tests. See ``reference/durability.md`` §5-§8 for the design this follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from dci6bridge.errors import LeaseLost, ServiceNotFound, StaleState

__all__ = [
    "PATCHABLE",
    "AdvanceRequest",
    "Advanced",
    "DepartmentTask",
    "Lease",
    "Move",
    "NewOutbox",
    "NewTask",
    "OutboxMsg",
    "PruneResult",
    "StatusStore",
    "StoredService",
    "Transition",
]

#: Service columns a :meth:`StatusStore.transition`, :meth:`StatusStore.checkpoint` or a
#: :meth:`StatusStore.request` decision may set. ``data`` is merged key by key (a ``None``
#: value deletes the key); every other column is replaced.
PATCHABLE: frozenset[str] = frozenset(
    {
        "desired",
        "desired_seq",
        "runnable",
        "not_before",
        "attempts",
        "last_error",
        "module",
        "server_id",
        "user_id",
        "op_id",
        "failed_from",
        "data",
    }
)


@attrs.frozen
class StoredService:
    """One service row as the store holds it.

    ``state`` is the fine-grained recovery point (a ``ServiceState`` value), ``version``
    counts transitions (the history holds versions ``1..version``), ``desired`` is what
    billing asked for last (``desired_seq`` orders those requests). ``runnable`` says a
    worker has something to do; :meth:`StatusStore.acquire` only hands out runnable
    services whose ``not_before`` has passed and whose lease is free or expired.
    ``data`` holds step data (IPs, the root password reference, pending actions) as JSON.
    """

    service_id: str
    spec: Mapping[str, Any]
    spec_hash: str
    state: str
    version: int
    desired: str
    desired_seq: int
    runnable: bool
    not_before: float
    attempts: int
    last_error: str | None
    module: str | None
    server_id: int | None
    user_id: int | None
    op_id: int | None
    failed_from: str | None
    data: Mapping[str, Any]
    lease_owner: str | None
    lease_epoch: int
    lease_until: float
    created_at: float
    updated_at: float


@attrs.frozen
class Lease:
    """A worker's exclusive, time-limited right to move one service.

    ``epoch`` is the fencing token: it grows on every acquire, and every fenced write
    presents it. ``service`` is the row as it was when the lease was taken (or last
    renewed: :meth:`StatusStore.renew` returns the current row).
    """

    service_id: str
    worker_id: str
    epoch: int
    until: float
    service: StoredService


@attrs.frozen
class Transition:
    """One history row: ``service_id`` moved ``from_state`` → ``to_state`` at ``version``."""

    service_id: str
    version: int
    from_state: str
    to_state: str
    epoch: int
    worker: str
    at: float
    detail: Mapping[str, Any]


@attrs.frozen
class NewOutbox:
    """An event to write with a transition (delivered later, at least once)."""

    kind: str
    payload: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class OutboxMsg:
    """A stored event. ``event_id`` is stable across redeliveries: billing dedupes on it."""

    id: int
    service_id: str
    version: int
    kind: str
    payload: Mapping[str, Any]
    attempts: int
    available_at: float

    @property
    def event_id(self) -> str:
        """``"<service_id>:<version>:<kind>"``, the same on every delivery."""
        return f"{self.service_id}:{self.version}:{self.kind}"


@attrs.frozen
class NewTask:
    """A department task to open with a transition (or on its own)."""

    department: str
    kind: str
    reason: str


@attrs.frozen
class Move:
    """One state change inside :meth:`StatusStore.advance`: to ``to``, with its patch of
    :data:`PATCHABLE` columns, its history ``detail`` (no secrets), outbox events and
    department task, exactly as one :meth:`StatusStore.transition` would write them."""

    to: str
    patch: Mapping[str, Any] = attrs.field(factory=dict)
    detail: Mapping[str, Any] = attrs.field(factory=dict)
    outbox: Sequence[NewOutbox] = ()
    task: NewTask | None = None


@attrs.frozen
class AdvanceRequest:
    """One lease's write in :meth:`StatusStore.advance_many`: the arguments of
    :meth:`StatusStore.advance`, as a record."""

    lease: Lease
    expected_state: str
    expected_version: int
    moves: Sequence[Move] = ()
    patch: Mapping[str, Any] | None = None
    expected_desired_seq: int | None = None
    reserve_server: int | None = None
    singleton: str | None = None
    renew: float | None = None
    release: bool = False


@attrs.frozen
class Advanced:
    """What :meth:`StatusStore.advance` did.

    ``service`` is the row afterwards (unchanged when the reservation was refused).
    ``reserved`` answers ``reserve_server`` (``None`` when none was asked): ``False``
    means another service holds that server and **nothing** was written.
    ``singleton`` answers ``singleton`` (``None`` when none was asked); a refused
    singleton does not stop the rest of the write.
    """

    service: StoredService
    reserved: bool | None = None
    singleton: bool | None = None


#: What one request of :meth:`StatusStore.advance_many` came to: done, or the fencing
#: error :meth:`StatusStore.advance` would have raised for it.
AdvanceOutcome = Advanced | LeaseLost | StaleState | ServiceNotFound


@attrs.frozen
class DepartmentTask:
    """Work for a person in the processing module's department."""

    id: int
    department: str
    service_id: str
    kind: str
    reason: str
    created_at: float
    resolved_at: float | None = None
    resolution: str | None = None


@attrs.frozen
class PruneResult:
    """What one :meth:`StatusStore.prune` call deleted.

    ``requests`` counts inbound request records (the idempotency keys of billing
    requests), ``outbox`` delivered events. ``more`` is ``True`` when a ``limit`` was
    reached, so older rows may remain: call again (the worker does, on its next pass).
    """

    requests: int
    outbox: int
    more: bool


@runtime_checkable
class StatusStore(Protocol):
    """What every status store provides. All methods are safe to call from several
    processes (SQLite: one host; PostgreSQL: many hosts) and raise only
    :class:`~dci6bridge.errors.StoreError` subclasses for conditions the caller handles."""

    # ------------------------------------------------------------------ lifecycle
    def now(self) -> float:
        """The store's clock (POSIX seconds); leases and ``not_before`` use it."""
        ...

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""
        ...

    @property
    def write_count(self) -> int:
        """Write transactions committed through this store object (for benchmarks)."""
        ...

    # ------------------------------------------------------------------ inbound
    def create_service(
        self, service_id: str, spec: Mapping[str, Any], *, state: str, desired: str
    ) -> tuple[StoredService, bool]:
        """Insert-if-absent. Returns ``(service, created)``. An existing service whose
        spec hash differs raises :class:`~dci6bridge.errors.SpecMismatch`. A new service
        starts at ``version`` 0, runnable, with no history row."""
        ...

    def request(
        self,
        service_id: str,
        request_id: str,
        action: str,
        params: Mapping[str, Any],
        decide: Callable[[StoredService], Mapping[str, Any]],
    ) -> tuple[StoredService, bool]:
        """Apply one billing request once. Returns ``(service, applied)``.

        In one transaction with the service row locked: if ``(service_id, request_id)``
        was seen, return ``applied=False`` (a different ``action``/``params`` for the same
        request id raises :class:`~dci6bridge.errors.SpecMismatch`). Otherwise call
        ``decide(service)``, which returns a patch of :data:`PATCHABLE` columns or raises
        (e.g. :class:`~dci6bridge.errors.InvalidRequest`; then nothing is written), apply
        the patch and record the request. Unfenced: billing holds no lease. Raises
        :class:`~dci6bridge.errors.ServiceNotFound`. ``decide`` runs inside the store's
        transaction and must not call the store."""
        ...

    # ------------------------------------------------------------------ leases
    def acquire(self, worker_id: str, ttl_s: float, limit: int = 1) -> list[Lease]:
        """Lease up to ``limit`` runnable services (``runnable``, ``not_before <= now``,
        lease free or expired), oldest ``not_before`` first, bumping each one's
        ``lease_epoch``. Never hands one service to two workers at once."""
        ...

    def renew(self, lease: Lease, ttl_s: float) -> Lease:
        """Extend the lease; raises :class:`~dci6bridge.errors.LeaseLost`."""
        ...

    def release(
        self,
        lease: Lease,
        *,
        not_before: float | None = None,
        error: str | None = None,
        count_attempt: bool = False,
    ) -> None:
        """Give the lease up (fenced; a lost lease is silently ignored). Optionally set
        ``not_before``, ``last_error`` and add one to ``attempts``."""
        ...

    # ------------------------------------------------------------------ fenced writes
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
        """Move the service to ``new_state`` at ``expected_version + 1``, in one
        transaction with its history row (``detail`` must hold no secret), its outbox
        rows and its department task. CAS on ``(state, version, lease_owner,
        lease_epoch)``: a foreign epoch or owner raises
        :class:`~dci6bridge.errors.LeaseLost`, a different state or version
        :class:`~dci6bridge.errors.StaleState`. Resets ``attempts`` to 0 unless the patch
        sets it. With ``release=True`` the same transaction also gives the lease up
        (``lease_owner`` cleared, as :meth:`release` does), saving a second write when
        nothing is left to do under the lease; the fencing is the transition's: nothing
        is written, the lease included, if it raises. Returns the new row."""
        ...

    def checkpoint(
        self, lease: Lease, *, expected_version: int, patch: Mapping[str, Any]
    ) -> StoredService:
        """Same-state fenced update (e.g. the operation id became known): no version bump,
        no history row. Same errors as :meth:`transition`."""
        ...

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
        """Several fenced writes of one lease in **one** transaction, in this order:

        1. the fence of :meth:`transition` (lease, ``expected_state``,
           ``expected_version``) and, when given, ``expected_desired_seq``: billing
           changed its request since the caller read the row (a different
           ``desired_seq``) raises :class:`~dci6bridge.errors.StaleState`, so a decision
           taken on the old request (say, "nothing left to do") cannot overwrite the new
           one;
        2. ``reserve_server`` as :meth:`reserve_server` does; when another service holds
           the server nothing at all is written and ``reserved`` is ``False``;
        3. each of ``moves`` as one :meth:`transition` (versions ``expected_version + 1``
           onwards, one history row each, their outbox rows and tasks);
        4. ``patch`` as a :meth:`checkpoint` of the resulting state;
        5. with ``renew`` (seconds), the lease extended to that long from now, as
           :meth:`renew` does;
        6. ``singleton`` (a name) as :meth:`try_singleton`, held by
           ``"<worker_id>:<service_id>"`` until the lease's expiry (after ``renew``);
        7. with ``release``, the lease given up as :meth:`release` does.

        Everything is validated before anything is written; it is all written or none
        of it. Workers use it to record the steps that made no remote change together
        with the next write they must make anyway (``reference/durability.md`` §2: local
        changes between two remote effects are grouped into one transaction)."""
        ...

    def advance_many(self, requests: Sequence[AdvanceRequest]) -> list[AdvanceOutcome]:
        """Several leases' :meth:`advance` in **one** transaction (one commit), each
        fenced and decided on its own, in order.

        The answer has one entry per request: its :class:`Advanced`, or the
        :class:`~dci6bridge.errors.LeaseLost`, :class:`~dci6bridge.errors.StaleState` or
        :class:`~dci6bridge.errors.ServiceNotFound` that :meth:`advance` would have
        raised, *returned* instead: a request refused by its fence writes nothing and does
        not stop the others. Every request is validated before anything is written (a
        :class:`~dci6bridge.errors.ConfigError` names ``requests[i]`` and its field, and
        nothing is written); one service may appear only once. Workers use it to send the
        last write of a finished lease together with the next write they must make
        anyway (``reference/durability.md`` §2).

        Requests are fenced in request order and written in request order, but their
        reservations and singletons are taken by server id (equal ids in request order),
        then the singletons asked for alone by name: concurrent batches wanting the same
        servers then lock them in one order instead of deadlocking. Every store answers
        alike."""
        ...

    # ------------------------------------------------------------------ reservations
    def reserve_server(self, lease: Lease, server_id: int) -> bool:
        """Reserve a DCImanager server for the leased service (fenced). ``True`` if it is
        now reserved for this service (also when it already was); ``False`` if another
        service holds it. A service holding a different server must release it first
        (raises :class:`~dci6bridge.errors.StaleState` otherwise)."""
        ...

    def release_server(self, lease: Lease, server_id: int) -> None:
        """Drop this service's reservation of ``server_id`` (fenced; no-op if absent)."""
        ...

    def server_claims(
        self, server_ids: Iterable[int] | None = None, *, service_id: str | None = None
    ) -> Mapping[int, str]:
        """Reservations: server id → service id, ordered by server id; only those of
        ``server_ids`` (positive ints) and only the one ``service_id`` holds, when given
        (a service holds at most one, so that lookup reads one row, not the table). A bad
        argument raises :class:`~dci6bridge.errors.ConfigError` naming it."""
        ...

    # ------------------------------------------------------------------ reads
    def get(self, service_id: str) -> StoredService | None:
        """The service, or ``None``."""
        ...

    def services(self, states: Sequence[str] | None = None) -> list[StoredService]:
        """Every service (optionally only those in ``states``), ordered by id."""
        ...

    def history(self, service_id: str) -> list[Transition]:
        """Every transition of the service, by version."""
        ...

    def services_of_customer(
        self,
        customer_email: str,
        *,
        module: str | None = None,
        states: Sequence[str] | None = None,
    ) -> list[StoredService]:
        """The services whose ``spec["customer_email"]`` matches ``customer_email``
        (both stripped and lower-cased), optionally only those of ``module`` and in
        ``states``, ordered by id. Answered from an index on the customer, so its cost
        grows with that customer's services, not with the whole table."""
        ...

    # ------------------------------------------------------------------ department tasks
    def add_task(self, service_id: str, task: NewTask) -> DepartmentTask:
        """Open a task outside a transition (reconciler findings). An unresolved task of
        the same service and kind is returned instead of opening a second one."""
        ...

    def tasks(
        self, *, department: str | None = None, include_resolved: bool = False
    ) -> list[DepartmentTask]:
        """Department tasks, oldest first."""
        ...

    def resolve_task(self, task_id: int, resolution: str) -> DepartmentTask:
        """Mark a task resolved (idempotent). Raises
        :class:`~dci6bridge.errors.TaskNotFound` (a ``KeyError``) for an unknown id."""
        ...

    # ------------------------------------------------------------------ outbox
    def claim_outbox(self, worker_id: str, ttl_s: float, limit: int = 100) -> list[OutboxMsg]:
        """Lease up to ``limit`` undelivered events whose ``available_at`` has passed,
        oldest first; a relay that dies leaves them to be claimed again after ``ttl_s``."""
        ...

    def ack_outbox(self, ids: Sequence[int]) -> None:
        """Mark events delivered."""
        ...

    def retry_outbox(self, msg_id: int, not_before: float) -> None:
        """Delivery failed: count an attempt and make it available again later."""
        ...

    # ------------------------------------------------------------------ housekeeping
    def prune(
        self,
        *,
        requests_older_than_s: float = 72 * 3600,
        delivered_older_than_s: float = 72 * 3600,
        limit: int = 10_000,
    ) -> PruneResult:
        """Delete what no longer needs keeping, oldest first, in short transactions of
        bounded size, at most ``limit`` rows of each kind per call:

        * inbound request records (:meth:`request`) recorded more than
          ``requests_older_than_s`` seconds ago by the store's clock. A billing request
          replayed with the same ``request_id`` after that is no longer recognised as
          seen: it is decided again like a new one. Keep the window longer than billing
          retries a request (``reference/durability.md`` §3: at least 72 h);
        * outbox events delivered (:meth:`ack_outbox`) more than
          ``delivered_older_than_s`` seconds ago. Undelivered events are never deleted.

        Services, history, reservations, department tasks and singletons are never
        touched. Bad arguments raise :class:`~dci6bridge.errors.ConfigError`."""
        ...

    # ------------------------------------------------------------------ singletons
    def try_singleton(self, name: str, worker_id: str, ttl_s: float) -> bool:
        """Claim a named singleton job (e.g. the reconciler sweep) for ``ttl_s`` seconds;
        ``True`` if this worker holds it now."""
        ...
