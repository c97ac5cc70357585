"""The status-store operations in SQL, shared by the SQLite and PostgreSQL backends.

Every write runs as one transaction that first locks the service row (SQLite: the whole
database through ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT … FOR UPDATE``), then applies
the shared rules of :mod:`dci6bridge.stores._rules` and writes the result. A backend only
supplies the transaction, its placeholders and the queue claim (:meth:`SqlStore._claim_sql`),
and may read its own clock inside the one-statement writes (:meth:`SqlStore._write_now`).
SQL here uses ``?`` placeholders and the table prefix ``self._p``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

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
    SERVICE_COLUMNS,
    customer_key,
    outbox_from_row,
    service_from_row,
    service_to_row,
    service_update_values,
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

__all__ = ["Claim", "SingletonTake", "SqlStore", "Take", "Tx"]

# ``customer`` is no field of the record: an index key derived from the spec once.
_INSERT_COLUMNS = ", ".join((*SERVICE_COLUMNS, "customer"))
_INSERT_MARKS = ", ".join("?" for _ in range(len(SERVICE_COLUMNS) + 1))
# Immutable after creation: identity, order and birth time.
_UPDATE_COLUMNS = tuple(
    c for c in SERVICE_COLUMNS if c not in ("service_id", "spec_json", "spec_hash", "created_at")
)
_UPDATE_SET = ", ".join(f"{c} = ?" for c in _UPDATE_COLUMNS)
_HISTORY_COLUMNS = (
    "service_id",
    "version",
    "from_state",
    "to_state",
    "epoch",
    "worker",
    "at",
    "detail_json",
)
_OUTBOX_COLUMNS = ("service_id", "version", "kind", "payload_json", "attempts", "available_at")
#: event ids acknowledged by one statement
ACK_CHUNK = 500
#: how a statement for :meth:`SqlStore._write_now` writes the transaction's clock
NOW = "{now}"
# Rows one prune transaction deletes at most: a short lock, a bounded RETURNING list.
_PRUNE_BATCH = 1000


class Tx(Protocol):
    """One open transaction of a backend."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one statement; the rows it returns (none for plain DML)."""
        ...

    def now(self) -> float:
        """The store's clock, read once per transaction after its locks are taken."""
        ...


@attrs.frozen
class Claim:
    """Lock up to ``limit`` rows of ``table`` matching ``where`` in ``order``, apply
    ``assign`` (a SET list) to them and return them updated. Rows another transaction
    holds are skipped, never waited for. ``where`` and ``assign`` write the clock as
    :data:`NOW` (the statement runs through :meth:`SqlStore._write_now`)."""

    table: str
    key: str
    assign: str
    assign_params: Sequence[Any]
    where: str
    order: str
    limit: int


@attrs.frozen
class SingletonTake:
    """A singleton an advance takes: its name, the holder and until when."""

    name: str
    holder: str
    until: float


@attrs.frozen
class Take:
    """What one request of an ``advance_many`` takes besides its rows: a server
    reservation and a singleton (``None``: not asked)."""

    lease: Lease
    server: int | None
    singleton: SingletonTake | None


T = TypeVar("T")


def _unsort(order: Sequence[int], values: Sequence[T]) -> list[T]:
    """``values`` (made for positions ``order``) back in position order."""
    out: list[T] = list(values)
    for position, value in zip(order, values, strict=True):
        out[position] = value
    return out


class _Rows:
    """The rows the requests of one ``advance_many`` write, gathered so that each table
    takes one statement for all of them."""

    def __init__(self) -> None:
        self.services: list[tuple[StoredService, tuple[str, ...]]] = []
        self.history: list[tuple[Any, ...]] = []
        self.outbox: list[tuple[Any, ...]] = []

    def add(self, plan: rules.AdvancePlan, lease: Lease, now: float) -> None:
        sid, epoch, worker = lease.service_id, lease.epoch, lease.worker_id
        self.services.append((plan.service, plan.changed))
        self.history += [
            (sid, version, from_state, to_state, epoch, worker, now, detail)
            for version, from_state, to_state, detail in plan.history
        ]
        self.outbox += [
            (sid, version, kind, payload_json, 0, now)
            for version, kind, payload_json in plan.outbox
        ]


class SqlStore(FencedWrites):
    """Everything a SQL status store does, over a backend's transactions."""

    def __init__(self, *, unsafe_disable_fencing: bool, prefix: str) -> None:
        self._unsafe = bool(unsafe_disable_fencing)
        self._p = prefix
        self._writes = 0
        self._writes_lock = threading.Lock()
        self._reopen_with: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})

    # ------------------------------------------------------------------ backend hooks
    _lock_row = ""  # appended to the SELECT that locks a service row
    _true = "1"  # the boolean literal, as the partial index predicate spells it

    def _transaction(self, *, write: bool, count: bool = True) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def _claim_sql(self, claim: Claim) -> tuple[str, list[Any]]:
        """The statement (and its parameters) that performs ``claim``."""
        raise NotImplementedError

    def _locked(
        self, tx: Tx, service_id: str, known: StoredService | None = None
    ) -> tuple[StoredService | None, float]:
        """The service row, locked, and the transaction's clock read after the lock.
        ``known``: an earlier record of the service (a lease's), whose spec is reused
        (:func:`~._codec.service_from_row`)."""
        current = self._service(tx, service_id, lock=True, known=known)
        return current, tx.now()

    def _locked_many(
        self, tx: Tx, known: Mapping[str, StoredService]
    ) -> tuple[dict[str, StoredService], float]:
        """The rows of the services of ``known`` (those that exist; id → an earlier
        record, a lease's), locked by one statement in id order (two writers locking
        overlapping sets cannot deadlock), and the transaction's clock read after the
        locks."""
        if len(known) == 1:
            ((service_id, record),) = known.items()
            current, now = self._locked(tx, service_id, record)
            return ({} if current is None else {current.service_id: current}), now
        marks = ", ".join("?" for _ in known)
        rows = tx.execute(
            f"SELECT * FROM {self._p}services WHERE service_id IN ({marks}) "
            f"ORDER BY service_id{self._lock_row}",
            list(known),
        )
        found = (service_from_row(r, known.get(r["service_id"])) for r in rows)
        return {s.service_id: s for s in found}, tx.now()

    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        """One multi-row ``INSERT`` of ``rows`` (values of ``columns``, in order)."""
        marks = "(" + ", ".join("?" for _ in columns) + ")"
        return (
            f"INSERT INTO {self._p}{table} ({', '.join(columns)}) VALUES "
            + ", ".join(marks for _ in rows),
            [value for row in rows for value in row],
        )

    def _write_all(self, tx: Tx, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run DML statements whose results nobody reads, in order."""
        for sql, params in statements:
            tx.execute(sql, params)

    def _write_now(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """Run one write statement that reads the clock (written :data:`NOW` in ``sql``;
        ``params`` are those of its ``?`` placeholders) in a transaction of its own; its
        rows. Here the transaction's clock is bound where ``NOW`` stands; a backend may
        read its own clock inside the statement instead."""
        with self._transaction(write=True) as tx:
            return tx.execute(*with_clock(sql, params, tx.now()))

    def _remember_arguments(self, *args: Any, **kwargs: Any) -> None:
        self._reopen_with = (args, kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # A store sent to another process (multiprocessing "spawn") reopens the same
        # database there with the same options; connections never travel.
        args, kwargs = self._reopen_with
        return (_reopen, (type(self), args, kwargs))

    def _counted(self, changed: bool) -> None:
        if changed:
            with self._writes_lock:
                self._writes += 1

    @property
    def write_count(self) -> int:
        """Committed transactions that changed at least one row."""
        return self._writes

    # ------------------------------------------------------------------ row helpers
    def _service(
        self, tx: Tx, service_id: str, *, lock: bool, known: StoredService | None = None
    ) -> StoredService | None:
        rows = tx.execute(
            f"SELECT * FROM {self._p}services WHERE service_id = ?"
            + (self._lock_row if lock else ""),
            (service_id,),
        )
        return service_from_row(rows[0], known) if rows else None

    def _update(self, tx: Tx, service: StoredService) -> StoredService:
        # ``service`` came from a row read in this transaction plus a checked patch (JSON
        # round-tripped), so it already equals what a re-read would return.
        tx.execute(*self._update_sql(service, _UPDATE_COLUMNS))
        return service

    def _update_sql(self, service: StoredService, columns: Sequence[str]) -> tuple[str, list[Any]]:
        """The ``UPDATE`` of ``columns`` of the service's row (fewer columns: fewer
        values to encode and bind, and no ``data`` JSON to encode when it is unchanged)."""
        assign = (
            _UPDATE_SET if columns is _UPDATE_COLUMNS else ", ".join(f"{c} = ?" for c in columns)
        )
        return (
            f"UPDATE {self._p}services SET {assign} WHERE service_id = ?",
            [*service_update_values(service, columns), service.service_id],
        )

    def _fenced(
        self,
        tx: Tx,
        lease: Lease,
        *,
        expected_state: str | None = None,
        expected_version: int | None = None,
        expected_desired_seq: int | None = None,
    ) -> tuple[StoredService, float]:
        current, now = self._locked(tx, lease.service_id, lease.service)
        service = rules.fence(
            current,
            lease,
            now,
            expected_state=expected_state,
            expected_version=expected_version,
            expected_desired_seq=expected_desired_seq,
            unsafe=self._unsafe,
        )
        return service, now

    def _open_task(self, tx: Tx, service_id: str, task: NewTask, now: float) -> dict[str, Any]:
        # The insert does nothing while a task of this service and kind is open. Under READ
        # COMMITTED that open task may be resolved before we read it: then insert again.
        for _ in range(3):
            rows = tx.execute(
                f"INSERT INTO {self._p}tasks (department, service_id, kind, reason, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING *",
                (task.department, service_id, task.kind, task.reason, now),
            )
            rows = rows or tx.execute(
                f"SELECT * FROM {self._p}tasks WHERE service_id = ? AND kind = ? "
                "AND resolved_at IS NULL",
                (service_id, task.kind),
            )
            if rows:
                return rows[0]
        raise StoreError(f"could not open a {task.kind!r} task for service {service_id!r}")

    # ------------------------------------------------------------------ inbound
    def create_service(
        self, service_id: str, spec: Mapping[str, Any], *, state: str, desired: str
    ) -> tuple[StoredService, bool]:
        """Insert-if-absent; see :meth:`StatusStore.create_service`."""
        with self._transaction(write=True) as tx:
            fresh = rules.new_service(service_id, spec, state=state, desired=desired, now=tx.now())
            row = service_to_row(fresh)
            inserted = tx.execute(
                f"INSERT INTO {self._p}services ({_INSERT_COLUMNS}) VALUES ({_INSERT_MARKS}) "
                "ON CONFLICT (service_id) DO NOTHING RETURNING service_id",
                [*(row[c] for c in SERVICE_COLUMNS), customer_key(fresh.spec)],
            )
            if inserted:
                return service_from_row(row), True
            existing = self._service(tx, service_id, lock=False)
        if existing is None:  # pragma: no cover - services are never deleted
            raise ServiceNotFound(f"service {service_id!r} vanished during create")
        if existing.spec_hash != fresh.spec_hash:
            raise SpecMismatch(
                f"service {service_id!r} exists with a different spec "
                f"(hash {existing.spec_hash[:12]}, got {fresh.spec_hash[:12]})"
            )
        return existing, False

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
        with self._transaction(write=True) as tx:
            current = self._service(tx, service_id, lock=True)
            if current is None:
                raise ServiceNotFound(f"service {service_id!r} not found")
            seen = tx.execute(
                f"SELECT params_hash FROM {self._p}requests "
                "WHERE service_id = ? AND request_id = ?",
                (service_id, request_id),
            )
            if seen:
                if seen[0]["params_hash"] != fingerprint:
                    raise SpecMismatch(
                        f"request {request_id!r} of service {service_id!r} was already "
                        "used with a different action or parameters"
                    )
                return current, False
            patch = rules.check_patch(decide(current))
            now = tx.now()
            updated = self._update(tx, rules.apply_patch(current, patch, now))
            tx.execute(
                f"INSERT INTO {self._p}requests (service_id, request_id, action, params_hash, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (service_id, request_id, action, fingerprint, now),
            )
            return updated, True

    # ------------------------------------------------------------------ leases
    def acquire(self, worker_id: str, ttl_s: float, limit: int = 1) -> list[Lease]:
        """Lease runnable services; see :meth:`StatusStore.acquire`."""
        ttl = rules.check_claim(worker_id, ttl_s, limit)
        rows = self._write_now(
            *self._claim_sql(
                Claim(
                    table=f"{self._p}services",
                    key="service_id",
                    assign="lease_owner = ?, lease_epoch = lease_epoch + 1, "
                    f"lease_until = {NOW} + ?",
                    assign_params=(worker_id, ttl),
                    where=f"runnable = {self._true} AND not_before <= {NOW} "
                    f"AND (lease_owner IS NULL OR lease_until <= {NOW})",
                    order="not_before, service_id",
                    limit=limit,
                )
            )
        )
        taken = sorted(map(service_from_row, rows), key=lambda s: (s.not_before, s.service_id))
        return [rules.lease_of(s) for s in taken]

    def renew(self, lease: Lease, ttl_s: float) -> Lease:
        """Extend a live lease; see :meth:`StatusStore.renew`."""
        ttl = rules.check_positive(ttl_s, "ttl_s")
        with self._transaction(write=True) as tx:
            current, now = self._fenced(tx, lease)
            renewed = self._update(tx, attrs.evolve(current, lease_until=now + ttl))
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
        with self._transaction(write=True) as tx:
            current, now = self._locked(tx, lease.service_id)
            if current is None or not (self._unsafe or rules.lease_held(current, lease, now)):
                return
            if count_attempt:
                changes["attempts"] = current.attempts + 1
            released = rules.apply_patch(current, changes, now)
            self._update(tx, attrs.evolve(released, lease_owner=None, lease_until=0.0))

    # ------------------------------------------------------------------ fenced writes
    def _advance_many(self, requests: Sequence[rules.CheckedRequest]) -> list[AdvanceOutcome]:
        outcomes: list[AdvanceOutcome | None] = [None] * len(requests)
        rows = _Rows()
        with self._transaction(write=True) as tx:
            leased, now = self._locked_many(
                tx, {r.lease.service_id: r.lease.service for r in requests}
            )
            fenced: list[tuple[int, StoredService, rules.AdvancePlan]] = []
            takes: list[Take] = []
            for i, request in enumerate(requests):
                try:
                    current, plan, take = self._plan(
                        request, leased.get(request.lease.service_id), now
                    )
                except (LeaseLost, StaleState, ServiceNotFound) as exc:
                    # decided before this request wrote anything: the others go on
                    outcomes[i] = exc
                    continue
                fenced.append((i, current, plan))
                takes.append(take)
            # in the one order of every store (PostgreSQL holds a claim's index entry
            # until commit: two batches taking claims in different orders deadlock)
            order = rules.take_order(
                [(t.server, t.singleton.name if t.singleton else None) for t in takes]
            )
            answers = _unsort(order, self._take_all(tx, [takes[k] for k in order], now))
            for (i, current, plan), take, answer in zip(fenced, takes, answers, strict=True):
                if isinstance(answer, StaleState):
                    outcomes[i] = answer
                    continue
                reserved, held = answer
                if reserved is False:  # another service holds the server: nothing written
                    outcomes[i] = Advanced(current, reserved=False)
                    continue
                rows.add(plan, take.lease, now)
                for task in plan.tasks:
                    self._open_task(tx, take.lease.service_id, task, now)
                outcomes[i] = Advanced(plan.service, reserved=reserved, singleton=held)
            self._write_all(tx, self._statements(rows))
        return [o for o in outcomes if o is not None]

    def _plan(
        self, request: rules.CheckedRequest, row: StoredService | None, now: float
    ) -> tuple[StoredService, rules.AdvancePlan, Take]:
        """Fence one request and plan its rows (nothing written yet); what it takes."""
        current, plan = rules.fence_and_plan(request, row, now, unsafe=self._unsafe)
        singleton = None
        if request.checked.singleton is not None:
            holder, until = rules.singleton_hold(request.lease, plan, now)
            singleton = SingletonTake(request.checked.singleton, holder, until)
        return current, plan, Take(request.lease, request.checked.reserve_server, singleton)

    def _take_all(
        self, tx: Tx, takes: Sequence[Take], now: float
    ) -> list[tuple[bool | None, bool | None] | StaleState]:
        """Make each take in order: the reservation (``False``: another service holds
        the server, and then nothing else of that request is taken), then the singleton.
        Answers ``(reserved, singleton)`` per take, ``None`` where nothing was asked, or
        the :class:`StaleState` of a service that holds another server."""
        answers: list[tuple[bool | None, bool | None] | StaleState] = []
        for take in takes:
            try:
                answers.append(self._take_one(tx, take, now))
            except StaleState as exc:
                answers.append(exc)
        return answers

    def _take_one(self, tx: Tx, take: Take, now: float) -> tuple[bool | None, bool | None]:
        reserved: bool | None = None
        held: bool | None = None
        if take.server is not None:
            reserved, held = self._reserve_and_take(
                tx, take.lease, take.server, now, take.singleton
            )
            if not reserved:
                return False, None
        single = take.singleton
        if single is not None and held is None:
            held = self._take_singleton(tx, single.name, single.holder, single.until, now)
        return reserved, held

    def _statements(self, rows: _Rows) -> list[tuple[str, list[Any]]]:
        """The statements that write ``rows``: an ``UPDATE`` per changed service, one
        multi-row ``INSERT`` of every history row and one of every outbox row."""
        writes = [self._update_sql(service, changed) for service, changed in rows.services]
        if rows.history:
            writes.append(self._insert_rows("transitions", _HISTORY_COLUMNS, rows.history))
        if rows.outbox:
            # One multi-row INSERT: the ids, hence the delivery order, follow the list
            # even where the statements run as one (PostgreSQL's data-modifying CTEs
            # have no order among themselves).
            writes.append(self._insert_rows("outbox", _OUTBOX_COLUMNS, rows.outbox))
        return writes

    # ------------------------------------------------------------------ reservations
    def _holder(self, tx: Tx, server_id: int) -> str | None:
        rows = tx.execute(
            f"SELECT service_id FROM {self._p}server_claims WHERE server_id = ?", (server_id,)
        )
        return str(rows[0]["service_id"]) if rows else None

    def reserve_server(self, lease: Lease, server_id: int) -> bool:
        """Reserve a server for the leased service; see :meth:`StatusStore.reserve_server`."""
        rules.check_server_id(server_id)
        with self._transaction(write=True) as tx:
            _, now = self._fenced(tx, lease)
            return self._reserve(tx, lease, server_id, now)

    def _reserve_and_take(
        self,
        tx: Tx,
        lease: Lease,
        server_id: int,
        now: float,
        singleton: SingletonTake | None,
    ) -> tuple[bool, bool | None]:
        """Backend hook: reserve as :meth:`_reserve` does and, where the backend can do
        it in the same step, take ``singleton`` once the reservation holds. Returns the
        reservation and the singleton's answer (``None``: not taken, the caller takes it
        after the other writes)."""
        return self._reserve(tx, lease, server_id, now), None

    def _reserve(self, tx: Tx, lease: Lease, server_id: int, now: float) -> bool:
        # The usual case, a free server for a service holding none, is one statement;
        # only when it inserts nothing do we look at who holds what.
        sid, p = lease.service_id, self._p
        inserted = tx.execute(
            f"INSERT INTO {p}server_claims (server_id, service_id, claimed_at) "
            f"SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM {p}server_claims "
            "WHERE server_id = ? OR service_id = ?) ON CONFLICT DO NOTHING RETURNING server_id",
            (server_id, sid, now, server_id, sid),
        )
        if inserted:
            return True
        holder = self._holder(tx, server_id)
        if holder is not None:
            return holder == sid
        mine = tx.execute(f"SELECT server_id FROM {p}server_claims WHERE service_id = ?", (sid,))
        if mine:
            raise StaleState(rules.holds_other_server(sid, int(mine[0]["server_id"]), server_id))
        # Free in this transaction's view, yet nothing inserted: a concurrent reservation
        # of the same server by another service (PostgreSQL) committed first.
        return self._holder(tx, server_id) == sid

    def release_server(self, lease: Lease, server_id: int) -> None:
        """Drop this service's reservation; see :meth:`StatusStore.release_server`."""
        rules.check_server_id(server_id)
        with self._transaction(write=True) as tx:
            self._fenced(tx, lease)
            tx.execute(
                f"DELETE FROM {self._p}server_claims WHERE server_id = ? AND service_id = ?",
                (server_id, lease.service_id),
            )

    def server_claims(
        self, server_ids: Iterable[int] | None = None, *, service_id: str | None = None
    ) -> Mapping[int, str]:
        """Reservations: server id → service id, ordered by server id; only those of
        ``server_ids`` and of ``service_id`` when given."""
        terms: list[str] = []
        params: list[Any] = []
        if server_ids is not None:
            params = list(rules.check_server_ids(server_ids))
            if not params:
                return {}
            terms.append(f"server_id IN ({', '.join('?' for _ in params)})")
        if service_id is not None:
            params.append(rules.check_text(service_id, "service_id"))
            terms.append("service_id = ?")
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        with self._transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT server_id, service_id FROM {self._p}server_claims{where} "
                "ORDER BY server_id",
                params,
            )
        return {int(r["server_id"]): str(r["service_id"]) for r in rows}

    # ------------------------------------------------------------------ reads
    def get(self, service_id: str) -> StoredService | None:
        """The service, or ``None``."""
        with self._transaction(write=False) as tx:
            return self._service(tx, service_id, lock=False)

    def services(self, states: Sequence[str] | None = None) -> list[StoredService]:
        """Every service (optionally only those in ``states``), ordered by id."""
        with self._transaction(write=False) as tx:
            if states is None:
                rows = tx.execute(f"SELECT * FROM {self._p}services ORDER BY service_id")
            elif not states:
                rows = []
            else:
                marks = ", ".join("?" for _ in states)
                rows = tx.execute(
                    f"SELECT * FROM {self._p}services WHERE state IN ({marks}) ORDER BY service_id",
                    list(states),
                )
        return [service_from_row(r) for r in rows]

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
        if wanted is not None and not wanted:
            return []
        where, params = ["customer = ?"], [key]
        if module is not None:
            where.append("module = ?")
            params.append(module)
        if wanted is not None:
            where.append(f"state IN ({', '.join('?' for _ in wanted)})")
            params.extend(wanted)
        with self._transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT * FROM {self._p}services WHERE {' AND '.join(where)} ORDER BY service_id",
                params,
            )
        return [service_from_row(r) for r in rows]

    def history(self, service_id: str) -> list[Transition]:
        """Every transition of the service, by version."""
        with self._transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT * FROM {self._p}transitions WHERE service_id = ? ORDER BY version",
                (service_id,),
            )
        return [transition_from_row(r) for r in rows]

    # ------------------------------------------------------------------ department tasks
    def add_task(self, service_id: str, task: NewTask) -> DepartmentTask:
        """Open a task unless the same service already has an open one of that kind."""
        rules.check_text(service_id, "service_id")
        rules.check_task(task)
        with self._transaction(write=True) as tx:
            return task_from_row(self._open_task(tx, service_id, task, tx.now()))

    def tasks(
        self, *, department: str | None = None, include_resolved: bool = False
    ) -> list[DepartmentTask]:
        """Department tasks, oldest first."""
        where, params = [], []
        if department is not None:
            where.append("department = ?")
            params.append(department)
        if not include_resolved:
            where.append("resolved_at IS NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT * FROM {self._p}tasks{clause} ORDER BY created_at, id", params
            )
        return [task_from_row(r) for r in rows]

    def resolve_task(self, task_id: int, resolution: str) -> DepartmentTask:
        """Mark a task resolved (idempotent: the first resolution stays)."""
        rules.check_text(resolution, "resolution")
        with self._transaction(write=True) as tx:
            tx.execute(
                f"UPDATE {self._p}tasks SET resolved_at = ?, resolution = ? "
                "WHERE id = ? AND resolved_at IS NULL",
                (tx.now(), resolution, task_id),
            )
            rows = tx.execute(f"SELECT * FROM {self._p}tasks WHERE id = ?", (task_id,))
        if not rows:
            raise TaskNotFound(f"department task {task_id!r} not found")
        return task_from_row(rows[0])

    # ------------------------------------------------------------------ outbox
    def claim_outbox(self, worker_id: str, ttl_s: float, limit: int = 100) -> list[OutboxMsg]:
        """Lease undelivered events, oldest first; see :meth:`StatusStore.claim_outbox`."""
        ttl = rules.check_claim(worker_id, ttl_s, limit)
        rows = self._write_now(
            *self._claim_sql(
                Claim(
                    table=f"{self._p}outbox",
                    key="id",
                    assign=f"lease_owner = ?, lease_until = {NOW} + ?",
                    assign_params=(worker_id, ttl),
                    where=f"delivered_at IS NULL AND available_at <= {NOW} "
                    f"AND (lease_until IS NULL OR lease_until <= {NOW})",
                    order="id",
                    limit=limit,
                )
            )
        )
        return sorted(map(outbox_from_row, rows), key=lambda m: m.id)

    def ack_outbox(self, ids: Sequence[int]) -> None:
        """Mark events delivered (unknown or already delivered ids are ignored)."""
        wanted = [int(i) for i in ids]

        def ack(chunk: list[int]) -> str:
            return (
                f"UPDATE {self._p}outbox SET delivered_at = {NOW}, lease_owner = NULL, "
                f"lease_until = NULL WHERE id IN ({', '.join('?' for _ in chunk)}) "
                "AND delivered_at IS NULL"
            )

        if len(wanted) <= ACK_CHUNK:
            if wanted:
                self._write_now(ack(wanted), wanted)
            return
        with self._transaction(write=True) as tx:
            now = tx.now()
            for chunk in _chunks(wanted, ACK_CHUNK):
                tx.execute(*with_clock(ack(chunk), chunk, now))

    def retry_outbox(self, msg_id: int, not_before: float) -> None:
        """Count a failed delivery and make the event available at ``not_before``."""
        when = rules.check_number(not_before, "not_before")
        with self._transaction(write=True) as tx:
            tx.execute(
                f"UPDATE {self._p}outbox SET attempts = attempts + 1, available_at = ?, "
                "lease_owner = NULL, lease_until = NULL WHERE id = ? AND delivered_at IS NULL",
                (when, msg_id),
            )

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
        with self._transaction(write=False) as tx:
            now = tx.now()  # one cutoff for every batch
        p = self._p
        requests, more_requests = self._prune_batches(
            f"DELETE FROM {p}requests WHERE (service_id, request_id) IN (SELECT service_id, "
            f"request_id FROM {p}requests WHERE at < ? ORDER BY at LIMIT ?) "
            "RETURNING service_id",
            now - request_age,
            most,
        )
        outbox, more_outbox = self._prune_batches(
            f"DELETE FROM {p}outbox WHERE id IN (SELECT id FROM {p}outbox WHERE delivered_at "
            "IS NOT NULL AND delivered_at < ? ORDER BY delivered_at LIMIT ?) RETURNING id",
            now - delivered_age,
            most,
        )
        return PruneResult(requests=requests, outbox=outbox, more=more_requests or more_outbox)

    def _prune_batches(self, sql: str, cutoff: float, most: int) -> tuple[int, bool]:
        """Run a ``DELETE … LIMIT ?`` in transactions of at most :data:`_PRUNE_BATCH`
        rows until fewer than asked are left or ``most`` rows are gone."""
        deleted = 0
        while deleted < most:
            batch = min(_PRUNE_BATCH, most - deleted)
            with self._transaction(write=True) as tx:
                gone = len(tx.execute(sql, (cutoff, batch)))
            deleted += gone
            if gone < batch:
                return deleted, False
        return deleted, True

    # ------------------------------------------------------------------ singletons
    def try_singleton(self, name: str, worker_id: str, ttl_s: float) -> bool:
        """Hold the named singleton for ``ttl_s`` if it is free, expired or already ours."""
        rules.check_text(name, "name")
        rules.check_text(worker_id, "worker_id")
        ttl = rules.check_positive(ttl_s, "ttl_s")
        with self._transaction(write=True) as tx:
            now = tx.now()
            return self._take_singleton(tx, name, worker_id, now + ttl, now)

    def _take_singleton(self, tx: Tx, name: str, holder: str, until: float, now: float) -> bool:
        return bool(tx.execute(*self._singleton_statement(SingletonTake(name, holder, until), now)))

    def _singleton_statement(self, take: SingletonTake, now: float) -> tuple[str, list[Any]]:
        """The statement that takes a singleton if it is free, expired or the holder's
        already, returning a row when it did."""
        return (
            f"INSERT INTO {self._p}singletons AS s (name, holder, held_until) "
            "VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "held_until = excluded.held_until WHERE s.held_until <= ? OR s.holder = ? "
            "RETURNING name",
            [take.name, take.holder, take.until, now, take.holder],
        )


def _reopen(cls: type[SqlStore], args: tuple[Any, ...], kwargs: dict[str, Any]) -> SqlStore:
    return cls(*args, **kwargs)


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def with_clock(
    sql: str, params: Sequence[Any], now: float | None, clock: str = "?"
) -> tuple[str, list[Any]]:
    """``sql`` with every :data:`NOW` written as ``clock``, and its parameters: ``params``
    for its ``?`` placeholders in order, with ``now`` bound wherever ``NOW`` stood when
    ``clock`` is itself a placeholder (a clock read in the statement binds nothing)."""
    pieces = sql.split(NOW)
    if clock != "?":
        return clock.join(pieces), list(params)
    given = iter(params)
    bound: list[Any] = []
    for piece in pieces[:-1]:
        bound += [next(given) for _ in range(piece.count("?"))]
        bound.append(now)
    bound += given
    return "?".join(pieces), bound
