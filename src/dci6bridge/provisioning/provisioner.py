"""The orchestrator billing code talks to: :class:`Provisioner`.

Billing calls are non-blocking: :meth:`Provisioner.open`, :meth:`~Provisioner.suspend`,
:meth:`~Provisioner.resume`, :meth:`~Provisioner.close`, :meth:`~Provisioner.reinstall`
and :meth:`~Provisioner.reboot` only record what billing wants, idempotently, and return
the service. Work happens in :meth:`Provisioner.tick` (one bounded unit: lease runnable
services, run their steps, release, relay events), driven by
:meth:`~Provisioner.run_until_idle`, a :class:`~dci6bridge.Worker`, or the caller's own
scheduler. See ``docs/orchestrator.md``.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

from dci6bridge.client import RetryPolicy
from dci6bridge.domain import Catalog, Order, ProcessingModule
from dci6bridge.errors import (
    APIStatusError,
    ConfigError,
    InvalidRequest,
    LeaseLost,
    OperationError,
    ResponseValidationError,
    SelectionError,
    ServiceNotFound,
    StaleState,
    StoreError,
)
from dci6bridge.selection import select_module
from dci6bridge.stores.base import (
    Advanced,
    AdvanceOutcome,
    DepartmentTask,
    Lease,
    Move,
    NewTask,
    StatusStore,
    StoredService,
)
from dci6bridge.stores.base import Transition as Transition

from ._failpoints import Failpoints
from ._tails import TailWrites
from ._tick_reads import ListingView, TickReads
from .events import Event, EventKind, OutboxRelay
from .service import Service, service_from_row
from .states import ServiceState, ServiceStatus, check_transition, status_of
from .steps import (
    RETRYABLE,
    Advance,
    Fail,
    Idle,
    Parked,
    Reserve,
    Retry,
    StepContext,
    StepSettings,
    Wait,
    event,
    has_work,
    outbox_of,
    run_step,
)

if TYPE_CHECKING:
    from dci6bridge.client import Client

    from .reconciler import ReconcileReport

__all__ = ["Provisioner"]

log = logging.getLogger("dci6bridge.provisioning")

S = ServiceState

#: Steps one lease may run back to back before the service is put back in the queue
#: (keeps a tick bounded and lets other services through).
MAX_STEPS_PER_LEASE = 12

#: Reservations of one lease a tick's shared writes may refuse before its claim goes on
#: alone (concurrent workers read the same free servers: a refused service usually
#: finds another candidate in the same page, and writes it with its tick-mates).
LOCKSTEP_REFUSALS = 1

#: Retry delay bounds (seconds) after a retryable error; the delay doubles per attempt
#: and is jittered by ±50 %.
BACKOFF_BASE = 2.0
BACKOFF_MAX = 300.0

_ENV_SKIP_READBACK = "DCI6BRIDGE_UNSAFE_SKIP_READBACK"
_FALLBACK_DEPARTMENT = "dci6bridge"

#: Errors that a retry cannot fix: the service fails at once with a department task.
_PERMANENT: tuple[type[BaseException], ...] = (
    ConfigError,
    SelectionError,
    ResponseValidationError,
    OperationError,
    APIStatusError,  # after RETRYABLE took 409 and 5xx: 400, 401, 403, 404, ...
)


def check_number(name: str, value: Any, low: float, *, integer: bool = False) -> list[str]:
    """``[]`` if ``value`` is a number (an int when ``integer``) of at least ``low``,
    else the problem naming ``name`` and the value."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < low:
        what = "an int" if integer else "a number"
        return [f"{name}: {value!r} is not {what} >= {low:g}"]
    return []


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _error_kind(exc: BaseException) -> str:
    name = type(exc).__name__
    out = [name[0].lower()]
    for ch in name[1:]:
        out.append(f"_{ch.lower()}" if ch.isupper() else ch)
    return "".join(out)


class Provisioner:
    """Turns orders into ready dedicated servers, durably.

    Args:
        catalog: data centers, processing modules and tariffs.
        store: the status store (:func:`~dci6bridge.open_store`); shared by every
            worker of the deployment.
        client_factory: ``module -> Client``; default
            :func:`dci6bridge.connect.client_for` with ``transport``, ``clock`` and
            ``sleep``. One client per module is kept and reused.
        transport: httpx transport for the default clients (tests: ``fake.transport``).
        clock: wall clock (POSIX seconds) for the clients and lease-age bookkeeping;
            default :func:`time.time`. Times stored in the ledger come from the store's
            clock.
        sleep: how :meth:`run_until_idle` and the clients' retries wait; default
            :func:`time.sleep`. With a simulator's manual clock, pass its ``advance``.
        rng: randomness for root passwords, jitter and candidate order; default
            :class:`random.SystemRandom`.
        worker_id: names this process in leases and history rows; default
            ``host:pid:random``.
        lease_ttl: seconds a lease lasts (renewed before remote calls when a third has
            passed). Keep it well above the HTTP timeout.
        poll_interval: seconds between install polls (jittered ±10 %); no lease is held
            while waiting.
        install_timeout: an install still running after this long fails the service.
        max_attempts: retryable failures of one step before the service fails with a
            department task.
        on_event: billing's callback for :class:`Event` s (called by
            :meth:`deliver_events`, at least once per event).
        failpoints: crash-test hooks; default from ``DCI6BRIDGE_FAILPOINTS``.
        unsafe_skip_readback: **test-only**: re-issue remote calls blindly instead of
            reading back first (also env ``DCI6BRIDGE_UNSAFE_SKIP_READBACK=1``). It exists
            so the chaos suite can show that it catches the duplicates this causes.
    """

    def __init__(
        self,
        catalog: Catalog,
        store: StatusStore,
        *,
        client_factory: Callable[[ProcessingModule], Client] | None = None,
        transport: Any = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], object] | None = None,
        rng: random.Random | None = None,
        worker_id: str | None = None,
        lease_ttl: float = 60.0,
        poll_interval: float = 15.0,
        install_timeout: float = 7200.0,
        max_attempts: int = 5,
        on_event: Callable[[Event], object] | None = None,
        failpoints: Failpoints | None = None,
        unsafe_skip_readback: bool | None = None,
    ) -> None:
        given: dict[str, Any] = {
            "catalog": catalog,
            "lease_ttl": lease_ttl,
            "poll_interval": poll_interval,
            "install_timeout": install_timeout,
            "max_attempts": max_attempts,
        }
        problems = []
        if not isinstance(given["catalog"], Catalog):
            problems.append(f"catalog: {type(catalog).__name__} is not a Catalog")
        for name, low in (("lease_ttl", 1e-3), ("poll_interval", 0.0), ("install_timeout", 1e-3)):
            problems += check_number(name, given[name], low)
        problems += check_number("max_attempts", given["max_attempts"], 1, integer=True)
        if problems:
            raise ConfigError(problems)
        if unsafe_skip_readback is None:
            unsafe_skip_readback = os.environ.get(_ENV_SKIP_READBACK, "") not in ("", "0")
        self.catalog = catalog
        self.store = store
        self.worker_id = worker_id or _default_worker_id()
        self.on_event = on_event
        self.failpoints = failpoints if failpoints is not None else Failpoints.from_env()
        self.settings = StepSettings(
            poll_interval=float(poll_interval),
            install_timeout=float(install_timeout),
            unsafe_skip_readback=bool(unsafe_skip_readback),
            lease_ttl=float(lease_ttl),
        )
        self.max_attempts = max_attempts
        self._transport = transport
        self._clock: Callable[[], float] = clock or time.time
        self._sleep: Callable[[float], object] = sleep or time.sleep
        self._rng = rng if rng is not None else random.SystemRandom()
        self._client_factory = client_factory
        self._clients: dict[str, Client] = {}
        self._templates: dict[tuple[str, int | None], dict[str, int]] = {}
        #: what this worker saw of each free-server listing (its length, others taking
        #: its servers); the threads of a Worker(concurrency=N) share it unlocked: it
        #: only places and sizes reads
        self._listings: dict[Hashable, ListingView] = {}
        self._lock = threading.Lock()
        if self.settings.unsafe_skip_readback:
            log.warning("UNSAFE: read-back before re-issuing remote calls is disabled")

    # ------------------------------------------------------------------ clients
    def client(self, module: ProcessingModule | str) -> Client:
        """The (shared, reused) client of a processing module."""
        if isinstance(module, str):
            module = self.catalog.module(module)
        with self._lock:
            client = self._clients.get(module.name)
            if client is None:
                client = self._make_client(module)
                self._clients[module.name] = client
            return client

    def _make_client(self, module: ProcessingModule) -> Client:
        if self._client_factory is not None:
            return self._client_factory(module)
        from dci6bridge.connect import client_for

        sleep: Any = self._sleep
        # A call (with its own retries) must end well inside the lease it runs under, so a
        # slow DCImanager cannot make a worker act after its lease has passed to another.
        budget = self.settings.lease_ttl / 3
        return client_for(
            module,
            transport=self._transport,
            clock=self._clock,
            sleep=sleep,
            retry=RetryPolicy(deadline=min(60.0, budget)),
            timeout=min(30.0, budget),
        )

    def _template_id(self, module: ProcessingModule, name: str) -> int:
        location = module.data_center.location_id
        key = (module.name, location)
        with self._lock:
            cached = self._templates.get(key)
        if cached is None or name not in cached:
            templates = self.client(module).os_templates.list(location_id=location)
            cached = {t.name: t.id for t in templates}
            with self._lock:
                self._templates[key] = cached
        if name not in cached:
            raise ConfigError(
                f"os_template: {name!r} is not a template of location {location} in module "
                f"{module.name!r} (known: {', '.join(sorted(map(repr, cached))) or 'none'})"
            )
        return cached[name]

    def close_clients(self) -> None:
        """Close the DCImanager clients (the store belongs to the caller). Also done on
        leaving a ``with Provisioner(...)`` block."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.close()
            except Exception:  # closing is best effort; a dead session expires anyway
                log.debug("closing a client failed", exc_info=True)

    def __enter__(self) -> Provisioner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_clients()

    # ------------------------------------------------------------------ billing side
    def open(self, order: Order, *, request_id: str | None = None) -> Service:
        """Record a new order and return its service at once (``IN_PROGRESS``).

        Opening the same ``service_id`` with the same order returns the existing
        service; with a different order raises :class:`~dci6bridge.SpecMismatch`. The
        order is checked against the catalog first (:class:`~dci6bridge.ConfigError`,
        :class:`~dci6bridge.SelectionError`): nothing is written for a bad order.
        ``request_id`` is accepted for symmetry; the service id is the idempotency key.
        """
        if not isinstance(order, Order):
            raise ConfigError(f"order: {type(order).__name__} is not an Order")
        tariff = self.catalog.check_order(order)
        select_module(self.catalog, tariff.name, data_center=order.data_center)
        row, created = self.store.create_service(
            order.service_id,
            order.to_spec(),
            state=S.PENDING.value,
            desired=S.ACTIVE.value,
        )
        self.failpoints.hit("after:store.create_service")
        if created:
            log.info("service %s: opened (tariff %s)", order.service_id, order.tariff)
        return service_from_row(row)

    def get(self, service_id: str) -> Service:
        """The service; :class:`~dci6bridge.ServiceNotFound` if there is none."""
        return service_from_row(self._row(service_id))

    def _row(self, service_id: str) -> StoredService:
        row = self.store.get(service_id)
        if row is None:
            raise ServiceNotFound(f"no service {service_id!r}")
        return row

    def services(self, status: ServiceStatus | str | None = None) -> list[Service]:
        """Every service (optionally only those with ``status``), by id."""
        wanted = ServiceStatus(status) if status is not None else None
        if wanted is None:
            rows = self.store.services()
        else:
            states = [s.value for s in ServiceState if status_of(s) is wanted]
            rows = self.store.services(states)
        return [service_from_row(r) for r in rows]

    def history(self, service_id: str) -> list[Transition]:
        """Every transition of the service, oldest first (no secrets in ``detail``)."""
        self._row(service_id)
        return self.store.history(service_id)

    def tasks(
        self, department: str | None = None, include_resolved: bool = False
    ) -> list[DepartmentTask]:
        """Department tasks (open ones unless ``include_resolved``), oldest first."""
        return self.store.tasks(department=department, include_resolved=include_resolved)

    def resolve_task(self, task_id: int, resolution: str) -> DepartmentTask:
        """Mark a department task resolved, saying what was done."""
        text: Any = resolution
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("resolution: say what was done (a non-empty string)")
        return self.store.resolve_task(task_id, resolution)

    def suspend(self, service_id: str, *, request_id: str | None = None) -> Service:
        """Ask for the service to be suspended: its data switch ports go off (the IPMI
        connection and the power stay on). Allowed while provisioning (it is suspended
        once active); :class:`~dci6bridge.InvalidRequest` for a closed or failed one."""
        return self._request(service_id, "suspend", {}, request_id, self._decide_desired)

    def resume(self, service_id: str, *, request_id: str | None = None) -> Service:
        """Ask for a suspended service to be resumed (its ports go on again)."""
        return self._request(service_id, "resume", {}, request_id, self._decide_desired)

    def close(self, service_id: str, *, request_id: str | None = None) -> Service:
        """Ask for the service to be closed: the server is powered off, its IPs and owner
        released, the customer's user deleted if it owns nothing else, then the local
        reservation dropped. Works at any stage (cleans up partial work); closing a
        closed service is a no-op. A closed service never comes back."""
        return self._request(service_id, "close", {}, request_id, self._decide_desired)

    def reinstall(
        self, service_id: str, os_template: str, *, request_id: str | None = None
    ) -> Service:
        """Reinstall an ``ACTIVE`` service with ``os_template`` (one of its tariff's);
        it goes through ``installing_os`` again and comes back ``ACTIVE`` with a new
        root password. A failed reinstall is never retried automatically: it becomes a
        department task."""
        row = self._row(service_id)
        tariff = self.catalog.tariff(Order.from_spec(row.spec).tariff)
        if os_template not in tariff.os_templates:
            offered = ", ".join(map(repr, tariff.os_templates))
            raise ConfigError(
                f"os_template: {os_template!r} is not offered by tariff {tariff.name!r} "
                f"(offered: {offered})"
            )
        return self._request(
            service_id, "reinstall", {"os_template": os_template}, request_id, self._decide_action
        )

    def reboot(self, service_id: str, *, request_id: str | None = None) -> Service:
        """Reboot (power reset) an ``ACTIVE`` service's server."""
        return self._request(service_id, "reboot", {}, request_id, self._decide_action)

    def retry(self, service_id: str, *, request_id: str | None = None) -> Service:
        """Operator retry of a ``FAILED`` service: it resumes at the state it failed in
        (``failed_from``). Retrying the same failure twice is harmless."""
        return self._request(service_id, "retry", {}, request_id, self._decide_retry)

    _DESIRED_OF: Mapping[str, str] = {
        "suspend": S.SUSPENDED.value,
        "resume": S.ACTIVE.value,
        "close": S.CLOSED.value,
    }

    def _request(
        self,
        service_id: str,
        action: str,
        params: Mapping[str, Any],
        request_id: str | None,
        decide: Callable[[str, Mapping[str, Any], StoredService], Mapping[str, Any]],
    ) -> Service:
        if request_id is None:
            # Without billing's key, identical back-to-back calls collapse into one: the
            # key is the action at the service's current request sequence and version.
            row = self._row(service_id)
            request_id = f"auto:{action}:{row.desired_seq}:{row.version}"
        elif not isinstance(request_id, str) or not request_id:  # type: ignore[redundant-expr]
            raise ConfigError(f"request_id: {request_id!r} is not a non-empty string")
        row, applied = self.store.request(
            service_id,
            request_id,
            action,
            dict(params),
            lambda svc: decide(action, params, svc),
        )
        self.failpoints.hit("after:store.request")
        if applied:
            log.info("service %s: %s requested (%s)", service_id, action, request_id)
        return service_from_row(row)

    def _decide_desired(
        self, action: str, params: Mapping[str, Any], svc: StoredService
    ) -> Mapping[str, Any]:
        state = ServiceState(svc.state)
        desired = self._DESIRED_OF[action]
        if action == "close":
            if state is S.CLOSED or svc.desired == desired:
                return {}
        else:
            if state is S.CLOSED or svc.desired == S.CLOSED.value:
                raise InvalidRequest(
                    f"service {svc.service_id!r} is closed; it cannot be {action}d"
                )
            if state is S.FAILED:
                raise InvalidRequest(
                    f"service {svc.service_id!r} has failed ({svc.last_error}); "
                    f"retry or close it before it can be {action}d"
                )
            if svc.desired == desired:
                return {}
        return {"desired": desired, "desired_seq": svc.desired_seq + 1, "runnable": True}

    def _decide_action(
        self, action: str, params: Mapping[str, Any], svc: StoredService
    ) -> Mapping[str, Any]:
        state = ServiceState(svc.state)
        pending = svc.data.get("action")
        wanted = {"kind": action, **params}
        if isinstance(pending, Mapping) and dict(pending) == wanted:
            return {}
        if state is not S.ACTIVE or svc.desired != S.ACTIVE.value or pending:
            why = f"pending {pending['kind']}" if isinstance(pending, Mapping) else state.value
            raise InvalidRequest(
                f"service {svc.service_id!r} is not ACTIVE and idle ({why}); it cannot {action} now"
            )
        return {
            "data": {"action": wanted},
            "desired_seq": svc.desired_seq + 1,
            "runnable": True,
        }

    def _decide_retry(
        self, action: str, params: Mapping[str, Any], svc: StoredService
    ) -> Mapping[str, Any]:
        if ServiceState(svc.state) is not S.FAILED:
            raise InvalidRequest(
                f"service {svc.service_id!r} is {svc.state}, not failed: nothing to retry"
            )
        if svc.desired == S.CLOSED.value and svc.failed_from != S.TERMINATING.value:
            return {}
        return {"data": {"retry": True}, "runnable": True, "desired_seq": svc.desired_seq + 1}

    # ------------------------------------------------------------------ workers
    def tick(self, max_services: int = 1) -> int:
        """One bounded unit of work: lease up to ``max_services`` runnable services, run
        their next steps (a few at most each), release them, then relay due events.

        The services of one tick advance in lockstep: whenever a step needs its state
        changes durable before a remote effect (a server reservation, an install
        intent), it waits until every other service of the tick has run as far as it
        can (or until a third of its lease has passed), and then all of them are
        written in one transaction. A service's last write (its new state with the
        release) rides in the next such transaction; what is left goes out before
        ``tick`` returns. Returns the number of services worked on. Safe to call from a
        scheduler (cron, Celery beat) in any number of processes."""
        # the local clock is read before the store's: a lease's remaining time is never
        # overestimated
        before = self._clock()
        ttl = self.settings.lease_ttl
        leases = self.store.acquire(self.worker_id, ttl, max_services)
        if leases:
            self.failpoints.hit("after:store.acquire")
        tails = TailWrites(self.store)
        reads = TickReads(self._listings)
        running = [
            self._context(
                lease,
                tails=tails,
                store_now=(lease.until - ttl, before),
                lockstep=len(leases) > 1,
                reads=reads,
            )
            for lease in leases
        ]
        for ctx in running:
            ctx.steps_left = MAX_STEPS_PER_LEASE
        queue = deque(running)
        parked: list[StepContext] = []
        while queue or parked:
            # The shared write waits for every service of the tick, but not past a third
            # of a parked lease: a slow DCImanager (retries, 503 episodes) must not let
            # the leases run out under a batch that then loses all it did. Services
            # still waiting their turn get their leases renewed in the same write.
            if parked and (not queue or any(ctx.lease_aging() for ctx in parked)):
                written = [*parked, *(ctx for ctx in queue if ctx.lease_aging())]
                kept = set(self._write_parked(tails, written))
                # in turn as before, the parked ones last; a refused one is dropped
                queue = deque(c for c in [*queue, *parked] if c in kept or c not in written)
                parked = []
                continue
            ctx = queue.popleft()
            if self._work(ctx):
                parked.append(ctx)
        tails.drain()
        self.deliver_events()
        return len(leases)

    def _write_parked(self, tails: TailWrites, parked: list[StepContext]) -> list[StepContext]:
        """Write what the parked services wait for (for a service not parked: its
        queued changes and a lease renewal), in one transaction with the queued
        lease-ending writes; returns those that go on working."""
        outcomes = tails.write_many([ctx.parked_request() for ctx in parked])
        going_on: list[StepContext] = []
        for ctx, outcome in zip(parked, outcomes, strict=True):
            why, ctx.parked = ctx.parked, None
            if isinstance(why, Reserve):
                if self._reserved(ctx, why, outcome):
                    going_on.append(ctx)
            elif isinstance(outcome, Advanced):
                ctx.settle(outcome)
                going_on.append(ctx)
            else:
                self._refused(ctx, outcome)
        return going_on

    def _reserved(self, ctx: StepContext, why: Reserve, outcome: AdvanceOutcome) -> bool:
        """Take in the answer to a parked reservation; ``True`` while the lease goes on."""
        if isinstance(outcome, LeaseLost | ServiceNotFound):
            self._refused(ctx, outcome)
            return False
        server = why.server
        if isinstance(outcome, StaleState) or not outcome.reserved:
            # Refused: another service holds the server (a concurrent worker reserved it
            # after the page was read), or a crashed attempt of this one holds another.
            # The first time the step picks another candidate for the tick's next
            # shared write (the refused server stays in the tick's reserving set, so no
            # tick-mate picks it either); after that, or for a crashed attempt's claim,
            # it runs again on its own, candidate by candidate, one write each.
            ctx.refusals += 1
            why.listing.refused()
            if isinstance(outcome, StaleState) or ctx.refusals > LOCKSTEP_REFUSALS:
                ctx.lockstep = False
            return True
        ctx.settle(
            outcome, patch={"server_id": server.id}, reserve=server.id, singleton=why.singleton
        )
        ctx.seen[server.id] = server
        ctx.steps_left -= 1
        return not self._transition(ctx, why.then)

    def run_until_idle(
        self,
        max_ticks: int = 100_000,
        advance: Callable[[float], object] | None = None,
    ) -> int:
        """Work until nothing is runnable; returns the number of services worked on.

        When every remaining service is waiting (an install running, a backoff), it does
        not spin: it waits with ``advance`` (default: the injected ``sleep``) until the
        earliest one is due. Tests with the simulator's manual clock pass
        ``advance=fake.clock.advance``; the simulated installs then finish in no real
        time. Stops after ``max_ticks`` ticks in any case.
        """
        wait = advance or self._sleep
        total = 0
        for _ in range(max_ticks):
            worked = self.tick(max_services=64)
            total += worked
            if worked:
                continue
            wake = self._next_wakeup()
            if wake is None:
                return total
            delay = wake - self.store.now()
            if delay > 0:
                wait(delay)
        log.warning("run_until_idle: stopped after %d ticks with work left", max_ticks)
        return total

    def _next_wakeup(self) -> float | None:
        wake: float | None = None
        now = self.store.now()
        for row in self.store.services():
            if not row.runnable:
                continue
            at = row.not_before
            if row.lease_owner is not None and row.lease_until > now:
                at = max(at, row.lease_until)
            wake = at if wake is None else min(wake, at)
        return wake

    def deliver_events(self, limit: int = 100) -> int:
        """Relay due outbox events to ``on_event`` (at least once; a raising callback
        gets the event again later with backoff). Returns how many were delivered.
        Without a callback, events wait in the outbox."""
        if self.on_event is None:
            return 0
        relay = OutboxRelay(
            self.store,
            self.on_event,
            worker_id=self.worker_id,
            lease_ttl=self.settings.lease_ttl,
            on_acked=lambda: self.failpoints.hit("after:store.ack_outbox"),
        )
        return relay.deliver(limit)

    def reconcile(self) -> ReconcileReport:
        """Sweep for stuck services, orphan servers and stale reservations (see
        :func:`dci6bridge.provisioning.reconciler.reconcile`)."""
        from .reconciler import reconcile

        return reconcile(self)

    # ------------------------------------------------------------------ one lease
    def _context(
        self,
        lease: Lease,
        *,
        tails: TailWrites | None = None,
        store_now: tuple[float, float] | None = None,
        lockstep: bool = False,
        reads: TickReads | None = None,
    ) -> StepContext:
        return StepContext(
            store=self.store,
            catalog=self.catalog,
            lease=lease,
            client_for=self.client,
            template_id=self._template_id,
            failpoints=self.failpoints,
            rng=self._rng,
            settings=self.settings,
            monotonic=self._clock,
            tails=tails,
            store_now=store_now,
            lockstep=lockstep,
            reads=reads,
        )

    def _work(self, ctx: StepContext) -> bool:
        """Run the leased service's steps (at most ``ctx.steps_left``) until it waits,
        ends its lease, or parks for the tick's shared write (``True``)."""
        sid = ctx.service_id
        try:
            while ctx.steps_left > 0:
                ctx.calls_in_step = 0
                try:
                    outcome = run_step(ctx)
                except Parked as exc:
                    ctx.parked = exc
                    return True
                except (LeaseLost, StaleState):
                    raise
                except RETRYABLE as exc:
                    self._retry_later(ctx, type(exc).__name__, str(exc))
                    return False
                except _PERMANENT as exc:
                    outcome = Fail(_error_kind(exc), str(exc))
                except StoreError:
                    raise
                except Exception as exc:
                    log.exception("service %s: unexpected error in %s", sid, ctx.row.state)
                    self._retry_later(ctx, type(exc).__name__, str(exc))
                    return False
                if isinstance(outcome, Reserve):
                    ctx.parked = outcome
                    return True
                # a parked step runs again in full: only finished ones count
                ctx.steps_left -= 1
                if isinstance(outcome, Idle):
                    if ctx.row.runnable:
                        self._release(ctx, patch={"runnable": False}, what="housekeeping")
                    else:
                        self._release(ctx)
                    return False
                if isinstance(outcome, Retry):
                    self._retry_later(ctx, "not yet", outcome.reason)
                    return False
                if isinstance(outcome, Wait):
                    if outcome.delay > 0:
                        self._release(ctx, not_before=ctx.now() + outcome.delay)
                        return False
                    # nothing to wait for (poll_interval=0): look again under this lease
                    continue
                if isinstance(outcome, Fail):
                    outcome = self._failure(
                        ctx,
                        outcome.kind,
                        outcome.reason,
                        patch=outcome.patch,
                        resume_at=outcome.resume_at,
                    )
                if self._transition(ctx, outcome):
                    return False
            # bounded: put it back in the queue for the next tick
            if not ctx.row.runnable:
                self._release(ctx, patch={"runnable": True}, what="housekeeping")
            else:
                self._release(ctx)
        except (LeaseLost, StaleState) as exc:
            self._refused(ctx, exc)
        return False

    def _refused(self, ctx: StepContext, exc: LeaseLost | StaleState | ServiceNotFound) -> None:
        """A write of this lease was refused: stop; if only the row changed under us (a
        billing request), give the lease up without writing anything else."""
        if not isinstance(exc, StaleState):
            log.warning("service %s: lease lost; another worker owns it now", ctx.service_id)
            return
        log.warning("service %s: changed under us; leaving it", ctx.service_id)
        ctx.discard()
        self.store.release(ctx.lease)
        self.failpoints.hit("after:store.release")

    def _release(
        self,
        ctx: StepContext,
        *,
        not_before: float | None = None,
        error: str | None = None,
        count_attempt: bool = False,
        patch: Mapping[str, Any] | None = None,
        what: str | None = None,
    ) -> None:
        # written with the state changes still queued, in one transaction
        changes = dict(patch or {})
        if not_before is not None:
            changes["not_before"] = not_before
        if error is not None:
            changes["last_error"] = error
        if count_attempt:
            changes["attempts"] = ctx.row.attempts + 1
        ctx.finish(
            patch=changes or None,
            what=what,
            refused=functools.partial(self._refused, ctx),
        )

    def _retry_later(self, ctx: StepContext, what: str, why: str) -> None:
        attempts = ctx.row.attempts + 1
        reason = f"{ctx.row.state}: {why}"[:1000]
        if attempts >= self.max_attempts:
            outcome = self._failure(
                ctx,
                "retries_exhausted",
                f"{reason} (gave up after {attempts} attempts)",
            )
            # a refused write is handled by _refused (the lease-ending write never raises)
            if not self._transition(ctx, outcome):
                self._release(ctx)
            return
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempts - 1))
        delay *= self._rng.uniform(0.5, 1.5)
        log.info(
            "service %s: %s failed (%s); attempt %d/%d, retry in %.1f s",
            ctx.service_id,
            ctx.row.state,
            what,
            attempts,
            self.max_attempts,
            delay,
        )
        self._release(ctx, not_before=ctx.now() + delay, error=reason, count_attempt=True)

    def department_of(self, row: StoredService) -> str:
        """The department that gets the service's tasks: its module's, else the first
        eligible module's for its tariff."""
        try:
            if row.module is not None:
                return self.catalog.module(row.module).department
            order = Order.from_spec(row.spec)
            sel = select_module(self.catalog, order.tariff, data_center=order.data_center)
            return sel.module.department
        except (ConfigError, SelectionError):
            modules = self.catalog.modules
            return modules[0].department if modules else _FALLBACK_DEPARTMENT

    def _failure(
        self,
        ctx: StepContext,
        kind: str,
        reason: str,
        *,
        patch: Mapping[str, Any] | None = None,
        resume_at: ServiceState | None = None,
    ) -> Advance:
        row = ctx.row
        department = self.department_of(row)
        log.warning("service %s: failed in %s: %s: %s", row.service_id, row.state, kind, reason)
        failed_from = resume_at.value if resume_at is not None else row.state
        return Advance(
            S.FAILED,
            patch={
                **(patch or {}),
                "failed_from": failed_from,
                "last_error": f"{kind}: {reason}"[:1000],
            },
            detail={"kind": kind, "reason": reason[:500], "department": department},
            events=[
                event(
                    EventKind.NEEDS_ATTENTION,
                    ctx.now(),
                    state=row.state,
                    kind=kind,
                    reason=reason[:500],
                    department=department,
                )
            ],
            task=NewTask(department=department, kind=kind, reason=f"{row.state}: {reason}"),
        )

    def _transition(self, ctx: StepContext, adv: Advance) -> bool:
        """Queue ``adv`` (written with the next store write); ``True`` when it was
        written at once together with giving the lease up."""
        row = ctx.row
        check_transition(row.state, adv.to)
        patch = dict(adv.patch)
        data_patch = dict(patch.get("data") or {})
        data_patch["since"] = ctx.now()
        patch["data"] = data_patch
        merged = {**row.data, **data_patch}
        merged = {k: v for k, v in merged.items() if v is not None}
        failed_from = patch.get("failed_from", row.failed_from)
        patch["runnable"] = has_work(adv.to.value, row.desired, merged, failed_from)
        ctx.defer(Move(adv.to.value, patch, dict(adv.detail), outbox_of(adv), adv.task))
        log.info(
            "service %s: %s -> %s (v%d)",
            row.service_id,
            row.state,
            adv.to.value,
            ctx.row.version,
        )
        # Nothing left to do under this lease: the next step would be Idle (no work and
        # no reservation to drop) followed by a plain release, so give the lease up in
        # the same transaction instead.
        if not patch["runnable"] and merged.get("release_claim") is None:
            ctx.finish(refused=functools.partial(self._refused, ctx))
            return True
        return False
