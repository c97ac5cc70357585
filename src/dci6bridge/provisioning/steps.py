"""One function per state: read the remote truth, act at most once, name the next state.

Every step follows ``reference/durability.md`` §3: the intent of a non-idempotent call is
durable before the call (the reserved server, the recorded user, the install intent with
the root password and the baseline operation), and after a crash, a timeout or a lost
response the step **reads back** before deciding whether to call again. A step returns
an outcome (:class:`Advance`, :class:`Wait`, :class:`Fail`, :class:`Retry`,
:class:`Idle`); the provisioner turns it into one fenced store write. Retryable errors
(:data:`RETRYABLE`) are raised; the provisioner backs off and counts the attempt.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from dci6bridge.client.models import PortStatus, Server, User
from dci6bridge.client.query import Q
from dci6bridge.domain import Catalog, Order, ProcessingModule, Tariff
from dci6bridge.errors import (
    APIConnectionError,
    BadRequestError,
    ConfigError,
    ConflictError,
    LeaseLost,
    NotFoundError,
    SelectionError,
    ServerError,
    ServiceNotFound,
    StaleState,
)
from dci6bridge.selection import select_module
from dci6bridge.stores import _rules as store_rules
from dci6bridge.stores.base import (
    Advanced,
    AdvanceOutcome,
    AdvanceRequest,
    Lease,
    Move,
    NewOutbox,
    NewTask,
    StatusStore,
    StoredService,
)

from ._failpoints import Failpoints
from ._tails import TailWrites
from ._tick_reads import FreeServers, ListingView, TickReads
from .events import CREATED_AT_KEY, EventKind
from .passwords import generate_password
from .states import ServiceState

if TYPE_CHECKING:
    from dci6bridge.client import Client

__all__ = [
    "RETRYABLE",
    "Advance",
    "Fail",
    "Idle",
    "Outcome",
    "Parked",
    "Reserve",
    "Retry",
    "StepContext",
    "StepSettings",
    "Wait",
    "has_work",
    "modules_sharing_users",
    "run_step",
    "user_email",
]

S = ServiceState
T = TypeVar("T")

#: Marker in the ``full_name`` of DCImanager users this library creates.
USER_MARKER = "[dci6bridge]"

#: Free servers read per claim attempt (one page); candidates are tried in random order
#: so that concurrent workers rarely race for the same server.
CLAIM_PAGE = 10
#: Pages read at most per claim attempt when every server listed is reserved already.
MAX_CLAIM_PAGES = 20


#: Remote calls that change nothing in DCImanager. Only these may run while state
#: changes of the lease wait to be written; any other call writes them first, so the
#: intent of every remote effect is durable before it is made.
READ_CALLS = frozenset(
    {
        "servers.configurations",
        "servers.list",
        "servers.get",
        "users.find",
        "os_templates.list",
    }
)

#: Remote calls that need no write of their own before them: their intent follows from
#: what is durable already and a retry reads it back. The user's email comes from the
#: order, "find by email" is its read-back and the creator holds the user singleton; the
#: server was reserved and recorded before, a retry keeps it and reads its owner back.
RECOVERABLE_CALLS = frozenset({"users.create", "servers.set_owner"})

#: Errors worth retrying: DCImanager unreachable or overloaded, a busy object. Everything
#: else fails the service with a department task.
RETRYABLE: tuple[type[BaseException], ...] = (
    APIConnectionError,
    ServerError,
    ConflictError,
)


# --------------------------------------------------------------------------- outcomes


@attrs.frozen
class Advance:
    """Move to ``to`` (one transition with its history row, outbox and task)."""

    to: ServiceState
    patch: Mapping[str, Any] = attrs.field(factory=dict)
    detail: Mapping[str, Any] = attrs.field(factory=dict)
    events: Sequence[tuple[EventKind, Mapping[str, Any]]] = ()
    task: NewTask | None = None


@attrs.frozen
class Wait:
    """Nothing to do until ``delay`` seconds from now (e.g. an install running); the
    lease is released meanwhile."""

    delay: float
    reason: str


@attrs.frozen
class Fail:
    """A permanent failure: the service goes to ``failed`` with a department task.

    ``patch`` is written with it; ``resume_at`` (default: the failing state) is where an
    operator's retry resumes."""

    kind: str
    reason: str
    patch: Mapping[str, Any] = attrs.field(factory=dict)
    resume_at: ServiceState | None = None


@attrs.frozen
class Retry:
    """The step cannot finish now but may later (e.g. every free server is reserved by
    another service right now): back off and count the attempt, like a retryable error."""

    reason: str


@attrs.frozen
class Idle:
    """The service has nothing to do (state matches what billing wants)."""


@attrs.frozen
class Reserve:
    """Reserve ``server`` (and claim ``singleton``) with the queued state changes, in the
    tick's next shared write; once the reservation holds, ``then`` follows. Only in
    lockstep (:attr:`StepContext.lockstep`); refused, the step runs again on its own."""

    server: Server
    singleton: str | None
    then: Advance
    #: of the listing the server was picked from: a refusal counts there
    listing: ListingView


Outcome = Advance | Wait | Fail | Retry | Idle | Reserve


class Parked(Exception):
    """Raised by :meth:`StepContext.call` in lockstep when a remote effect needs the
    queued state changes durable first and the step has made no remote call yet: the
    step is run again, from its start, once the tick's shared write has made them
    durable (nothing the step did before is lost)."""


# --------------------------------------------------------------------------- context


@attrs.frozen
class StepSettings:
    """Tunables the steps read (set on the :class:`~dci6bridge.Provisioner`)."""

    poll_interval: float = 15.0
    install_timeout: float = 7200.0
    unsafe_skip_readback: bool = False
    lease_ttl: float = 60.0


def user_email(order: Order) -> str:
    """The DCImanager user's email for an order: the customer's, lower-cased. One user
    per customer email (shared by that customer's services); "find by email" is the
    read-back of user creation."""
    return order.customer_email.strip().lower()


class StepContext:
    """What a step may use while its worker holds ``lease``.

    Every remote call goes through :meth:`call` (failpoints around it, lease renewed
    first when it is getting old); every store write through :meth:`flush` and the
    helpers built on it (:meth:`checkpoint`, :meth:`reserve`, :meth:`claim_singleton`,
    :meth:`release_server`), fenced by the lease, failpoints after.

    State changes are *deferred* (:meth:`defer`) until the next store write or the next
    remote call that is not a read (:data:`READ_CALLS`), then written with it in one
    transaction (:meth:`StatusStore.advance <dci6bridge.stores.base.StatusStore.advance>`).
    A crash loses only changes that followed remote reads, which the next worker simply
    makes again; ``row`` is the service as it will be once they are written, ``durable``
    as the store holds it.
    """

    def __init__(
        self,
        *,
        store: StatusStore,
        catalog: Catalog,
        lease: Lease,
        client_for: Callable[[ProcessingModule], Client],
        template_id: Callable[[ProcessingModule, str], int],
        failpoints: Failpoints,
        rng: random.Random,
        settings: StepSettings,
        monotonic: Callable[[], float] = time.monotonic,
        tails: TailWrites | None = None,
        store_now: tuple[float, float] | None = None,
        lockstep: bool = False,
        reads: TickReads | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.lease = lease
        self.row: StoredService = lease.service
        self.durable: StoredService = lease.service
        self.pending: list[Move] = []
        #: singletons this lease holds, with the lease expiry they were taken for
        self.singletons: dict[str, float] = {}
        self._client_for = client_for
        self._template_id = template_id
        self.failpoints = failpoints
        self.rng = rng
        self.settings = settings
        self._monotonic = monotonic
        #: lease-ending writes of this tick, sent with this lease's writes
        self.tails = tails
        self._store_now = store_now
        self._order: Order | None = None
        #: servers read in this lease (still fresh for the next step of the same lease)
        self.seen: dict[int, Server] = {}
        #: the tick writes the queued changes of all its services together: a step
        #: about to need a write of its own parks instead (:class:`Parked`, :class:`Reserve`)
        self.lockstep = lockstep
        #: what the services of this tick read once and share, and the servers they are
        #: about to reserve
        self.reads = reads if reads is not None else TickReads()
        #: this lease's reservations refused in the tick's shared writes
        self.refusals = 0
        #: remote calls made by the step now running (a step that made none may park)
        self.calls_in_step = 0
        #: steps this lease may still run
        self.steps_left = 0
        #: why the service waits for the tick's shared write (``None``: not parked)
        self.parked: Reserve | Parked | None = None

    # ------------------------------------------------------------------ lookups
    @property
    def service_id(self) -> str:
        """The leased service's id."""
        return self.row.service_id

    @property
    def data(self) -> Mapping[str, Any]:
        """The service's step data as of the last write."""
        return self.row.data

    @property
    def order(self) -> Order:
        """The order, rebuilt from the stored spec."""
        if self._order is None:
            self._order = Order.from_spec(self.row.spec)
        return self._order

    @property
    def tariff(self) -> Tariff:
        """The order's tariff (current catalog)."""
        return self.catalog.tariff(self.order.tariff)

    @property
    def module(self) -> ProcessingModule:
        """The selected processing module."""
        if self.row.module is None:
            raise ConfigError(f"service {self.service_id!r}: no module selected yet")
        return self.catalog.module(self.row.module)

    @property
    def email(self) -> str:
        """The customer's DCImanager user email."""
        return user_email(self.order)

    def client(self, module: ProcessingModule | None = None) -> Client:
        """The client of ``module`` (default: the selected one)."""
        return self._client_for(module or self.module)

    def template_id(self, name: str) -> int:
        """The id of OS template ``name`` in the selected module's location."""
        self.failpoints.hit("before:os_templates.list")
        tid = self._template_id(self.module, name)
        self.failpoints.hit("after:os_templates.list")
        return tid

    def now(self) -> float:
        """The store's clock, read once (``store_now``: as of the acquire, a pair of the
        store's time and the local monotonic clock then) and carried forward with the
        local clock (on PostgreSQL every read of the database clock is a round trip)."""
        if self._store_now is None:
            self._store_now = (self.store.now(), self._monotonic())
        base, at = self._store_now
        return base + max(0.0, self._monotonic() - at)

    def lease_aging(self) -> bool:
        """A third of the lease's TTL has passed: renew it (with the next write, or on
        its own before the next remote call)."""
        return self.lease.until - self.now() < self.settings.lease_ttl * 2 / 3

    # ------------------------------------------------------------------ remote calls
    def call(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Make remote call ``name`` (``servers.set_owner``, ...) with failpoints around
        it; renew the lease first when a third of its TTL has passed (a lease taken in
        a batch may have aged while the services before it were worked on)."""
        if self.pending and name not in READ_CALLS and name not in RECOVERABLE_CALLS:
            if self.lockstep and not self.calls_in_step:
                raise Parked(name)
            self.flush()
        self.failpoints.hit(f"before:{name}")
        # The lease is checked after the last hook before the call, not ahead of it: a
        # worker frozen past its lease (GC pause, SIGSTOP, VM stall) must not make a call
        # that the worker which took the service over may have made already. Renewing
        # is fenced (an expired lease raises LeaseLost even if nobody took it), and the
        # local check after it catches a freeze between the renewal and the call.
        if self.lease_aging():
            self.lease = self.store.renew(self.lease, self.settings.lease_ttl)
            self.failpoints.hit("after:store.renew")
        if self.now() >= self.lease.until:
            raise LeaseLost(
                f"lease on {self.lease.service_id!r} ran out before {name}; not calling"
            )
        self.calls_in_step += 1
        result = fn(*args, **kwargs)
        self.failpoints.hit(f"after:{name}")
        return result

    def shared(self, key: Hashable, read: Callable[[], T]) -> T:
        """``read()``; in lockstep, what it returned to a service of this tick already
        (:class:`~dci6bridge.provisioning._tick_reads.TickReads`)."""
        return self.reads.get(key, read) if self.lockstep else read()

    def get_server(self, server_id: int) -> Server:
        """``servers.get`` through :meth:`call`."""
        client = self.client()
        return self.call("servers.get", client.servers.get, server_id)

    # ------------------------------------------------------------------ store writes
    def defer(self, move: Move) -> None:
        """Queue a state change for the next write; ``row`` shows it at once."""
        # validated by the store when it is written (before anything is written)
        self.row = store_rules.transitioned(self.row, move.to, move.patch, self.now())
        self.pending.append(move)

    def discard(self) -> None:
        """Forget the queued state changes (the store refused them: lease lost, or the
        service changed under us)."""
        self.pending.clear()
        self.row = self.durable

    def _request(
        self,
        *,
        patch: Mapping[str, Any] | None = None,
        reserve: int | None = None,
        singleton: str | None = None,
        release: bool = False,
    ) -> AdvanceRequest:
        return AdvanceRequest(
            self.lease,
            expected_state=self.durable.state,
            expected_version=self.durable.version,
            moves=list(self.pending),
            patch=patch,
            # a decision taken on billing's old request must not overwrite its new one
            expected_desired_seq=self.durable.desired_seq,
            reserve_server=reserve,
            singleton=singleton,
            # every write extends the lease: a lease lasts one step, not one batch
            renew=None if release else self.settings.lease_ttl,
            release=release,
        )

    def flush(
        self,
        *,
        what: str | None = None,
        patch: Mapping[str, Any] | None = None,
        reserve: int | None = None,
        singleton: str | None = None,
        release: bool = False,
    ) -> Advanced:
        """Write the queued state changes, with ``patch`` (a checkpoint named ``what``),
        a server reservation, a singleton claim and the lease release, in one fenced
        transaction (together with the lease-ending writes of other services waiting in
        :attr:`tails`). A refused reservation writes nothing and keeps the queue."""
        request = self._request(patch=patch, reserve=reserve, singleton=singleton, release=release)
        tails = self.tails if self.tails is not None else TailWrites(self.store)
        return self.settle(
            tails.write(request),
            what=what,
            patch=patch,
            reserve=reserve,
            singleton=singleton,
            release=release,
        )

    def parked_request(self) -> AdvanceRequest:
        """The write a parked step waits for: the queued changes (and its reservation)."""
        if isinstance(self.parked, Reserve):
            server_id = self.parked.server.id
            return self._request(
                patch={"server_id": server_id},
                reserve=server_id,
                singleton=self.parked.singleton,
            )
        return self._request()

    def settle(
        self,
        done: Advanced,
        *,
        what: str | None = None,
        patch: Mapping[str, Any] | None = None,
        reserve: int | None = None,
        singleton: str | None = None,
        release: bool = False,
    ) -> Advanced:
        """Take in the store's answer to the write of the queued changes (made by
        :meth:`flush`, or by the tick for a parked step)."""
        if done.reserved is False:
            return done
        written, self.pending = self.pending, []
        self._written(done, written, what=what, patch=patch, singleton=singleton)
        if reserve is not None:
            self.failpoints.hit("after:store.reserve_server")
        if singleton is not None:
            self.failpoints.hit("after:store.singleton")
        if release:
            self.failpoints.hit("after:store.release")
        return done

    def finish(
        self,
        *,
        what: str | None = None,
        patch: Mapping[str, Any] | None = None,
        refused: Callable[[LeaseLost | StaleState | ServiceNotFound], None],
    ) -> None:
        """The lease's last write: the queued state changes, ``patch`` and the release.
        With :attr:`tails` it waits there for the worker's next write (nothing depends
        on it); ``refused`` gets the fencing error if the store refuses it then."""
        if self.tails is None:
            try:
                self.flush(what=what, patch=patch, release=True)
            except (LeaseLost, StaleState, ServiceNotFound) as exc:
                refused(exc)
            return
        request = self._request(patch=patch, release=True)
        moves, self.pending = self.pending, []

        def done(outcome: AdvanceOutcome) -> None:
            if not isinstance(outcome, Advanced):
                refused(outcome)
                return
            self._written(outcome, moves, what=what, patch=patch, singleton=None)
            self.failpoints.hit("after:store.release")

        self.tails.queue(request, done)

    def _written(
        self,
        done: Advanced,
        moves: Sequence[Move],
        *,
        what: str | None,
        patch: Mapping[str, Any] | None,
        singleton: str | None,
    ) -> None:
        self.durable = self.row = done.service
        if done.service.lease_owner is not None:
            self.lease = attrs.evolve(self.lease, until=done.service.lease_until)
        if done.singleton:
            assert singleton is not None
            self.singletons[singleton] = self.lease.until
        for move in moves:
            self.failpoints.hit(f"after:store.transition:{move.to}")
        if patch is not None and what is not None:
            self.failpoints.hit(f"after:store.checkpoint:{what}")

    def checkpoint(self, what: str, patch: Mapping[str, Any]) -> None:
        """A same-state fenced write (no history row), with any queued state changes."""
        self.flush(what=what, patch=patch)

    def reserve(self, server_id: int, *, singleton: str | None = None) -> bool:
        """Reserve ``server_id`` locally for this service (before any remote effect) and
        record it as the service's server, claiming ``singleton`` in the same write if it
        is given."""
        done = self.flush(reserve=server_id, patch={"server_id": server_id}, singleton=singleton)
        return bool(done.reserved)

    def claim_singleton(self, name: str) -> bool:
        """Hold the store singleton ``name`` for this service until the lease expires
        (no write when this lease holds it already and was not renewed since)."""
        until = self.singletons.get(name)
        # held for as long as the lease, and fresh enough that the call after it will
        # not need to renew the lease (a renewal would outlive the singleton)
        if until == self.lease.until and until - self.now() >= self.settings.lease_ttl * 2 / 3:
            return True
        return bool(self.flush(singleton=name).singleton)

    def release_server(self, server_id: int) -> None:
        """Drop this service's local reservation of ``server_id``."""
        if self.pending:
            self.flush()
        self.store.release_server(self.lease, server_id)
        self.failpoints.hit("after:store.release_server")


# --------------------------------------------------------------------------- helpers


def _owner_is(server: Server, email: str) -> bool:
    return (server.owner_email or "").strip().lower() == email


def _data_ports_down(server: Server) -> bool:
    """Whether a data port (not the IPMI connection) of the server is switched off."""
    return any(port.admin_status == PortStatus.DOWN for port in server.data_connections)


def _op_id(server: Server) -> int | None:
    return server.operation.id if server.operation is not None else None


def _our_ips(server: Server, before: Sequence[int]) -> list[Any]:
    known = set(before)
    return [ip for ip in server.ip if ip.id not in known]


def event(
    event_kind: EventKind, now: float, /, **payload: Any
) -> tuple[EventKind, Mapping[str, Any]]:
    """An outbox entry (payload plus the time it was recorded)."""
    return (event_kind, {**payload, CREATED_AT_KEY: now})


def outbox_of(advance: Advance) -> list[NewOutbox]:
    """The outbox rows of an :class:`Advance`."""
    return [NewOutbox(kind.value, dict(payload)) for kind, payload in advance.events]


def has_work(state: str, desired: str, data: Mapping[str, Any], failed_from: str | None) -> bool:
    """Whether a worker has something to do for a service in this shape."""
    if data.get("release_claim") is not None:
        return True
    st = ServiceState(state)
    if st is S.CLOSED:
        return False
    if st is S.FAILED:
        return bool(data.get("retry")) or (
            desired == S.CLOSED.value and failed_from != S.TERMINATING.value
        )
    if desired == S.CLOSED.value:
        return True
    if st is S.ACTIVE:
        return desired == S.SUSPENDED.value or bool(data.get("action"))
    if st is S.SUSPENDED:
        return desired == S.ACTIVE.value
    return True


# --------------------------------------------------------------------------- dispatch


def run_step(ctx: StepContext) -> Outcome:
    """Run the step for the service's current state (billing's wishes first)."""
    row = ctx.row
    if row.data.get("release_claim") is not None:
        _release_claim(ctx)
        row = ctx.row
    state = ServiceState(row.state)
    if not has_work(row.state, row.desired, row.data, row.failed_from):
        return Idle()
    if row.desired == S.CLOSED.value and state not in (S.TERMINATING, S.CLOSED):
        if state is S.FAILED and row.failed_from == S.TERMINATING.value:
            return Idle()
        came_from = row.failed_from if state is S.FAILED else row.state
        return Advance(
            S.TERMINATING,
            patch={"data": {"closed_from": came_from}},
            detail={"reason": "close requested"},
        )
    step = _STEPS.get(state)
    if step is None:
        return Idle()
    return step(ctx)


def _release_claim(ctx: StepContext) -> None:
    """Drop this service's reservation of a server it no longer records: asked by the
    reconciler (a closed or failed service's server without owner) or after the server
    was taken by someone else. Read back here, under the lease: kept while the customer
    owns the server."""
    row = ctx.row
    server_id = int(row.data["release_claim"])
    patch: dict[str, Any] = {"data": {"release_claim": None}}
    if row.module is not None:
        server = ctx.get_server(server_id)
        if not _owner_is(server, ctx.email):
            ctx.release_server(server_id)
            if row.state == S.FAILED.value and row.server_id == server_id:
                # a retry must claim a server afresh
                patch["server_id"] = None
                patch["failed_from"] = S.CLAIMING_SERVER.value
    ctx.checkpoint("housekeeping", patch)


def _failed(ctx: StepContext) -> Outcome:
    row = ctx.row
    if not row.data.get("retry"):
        return Idle()
    target = ServiceState(row.failed_from or S.PENDING.value)
    data: dict[str, Any] = {"retry": None, "taken": None}
    patch: dict[str, Any] = {"data": data, "last_error": None, "failed_from": None}
    if target in (S.INSTALLING_OS, S.REINSTALLING):
        # a failed install is started afresh (never adopted again)
        patch["op_id"] = None
        data.update(install_issued_at=None, install_baseline=None, install_sent=None)
    if target is S.CLAIMING_SERVER:
        patch["server_id"] = None
    return Advance(target, patch=patch, detail={"reason": "operator retry"})


def _active(ctx: StepContext) -> Outcome:
    row = ctx.row
    action = row.data.get("action")
    if isinstance(action, Mapping):
        if action.get("kind") == "reinstall":
            server_id = row.server_id
            assert server_id is not None
            server = ctx.get_server(server_id)
            if not _owner_is(server, ctx.email):
                return _owner_changed(server)
            # a new password for the new install (the old one holds until it is done)
            intent = _install_intent(ctx, server_id, fresh=server)
            return Advance(
                S.REINSTALLING,
                patch={
                    "op_id": None,
                    "data": {
                        "action": None,
                        "os_template_next": action.get("os_template"),
                        **intent,
                    },
                },
                detail={"os_template": action.get("os_template")},
            )
        if action.get("kind") == "reboot":
            return Advance(S.REBOOTING, patch={"data": {"action": None}})
    if row.desired == S.SUSPENDED.value:
        return Advance(S.SUSPENDING)
    return Idle()


def _suspended(ctx: StepContext) -> Outcome:
    if ctx.row.desired == S.ACTIVE.value:
        return Advance(S.RESUMING)
    return Idle()


def _pending(ctx: StepContext) -> Outcome:
    try:
        order = ctx.order
        ctx.catalog.check_order(order)
    except ConfigError as exc:
        return Fail("invalid_order", str(exc))
    return Advance(S.SELECTING_MODULE, detail={"tariff": order.tariff})


def _selecting_module(ctx: StepContext) -> Outcome:
    order = ctx.order
    tariff = ctx.tariff
    try:
        selection = select_module(ctx.catalog, tariff.name, data_center=order.data_center)
    except SelectionError as exc:
        return Fail("no_module", str(exc))
    # modules whose location turned out to have no free server (the free count is per
    # DCImanager, which may serve several locations)
    exhausted = set(ctx.data.get("exhausted_modules") or ())
    skipped: list[str] = []
    for module in selection.ranked:
        if module.name in exhausted:
            skipped.append(module.name)
            continue
        client = ctx.client(module)
        counts = ctx.shared(
            ("servers.configurations", module.url),  # per DCImanager
            functools.partial(ctx.call, "servers.configurations", client.servers.configurations),
        )
        free = sum(c.free_server_count for c in counts if c.configuration == tariff.configuration)
        if free > 0:
            return Advance(
                S.CLAIMING_SERVER,
                patch={"module": module.name},
                detail={"module": module.name, "free": free, "skipped": skipped},
            )
        skipped.append(module.name)
    return Fail(
        "no_free_server",
        f"no free server of configuration {tariff.configuration!r} in "
        f"{', '.join(repr(m.name) for m in selection.ranked)}",
    )


def _claiming_server(ctx: StepContext) -> Outcome:
    recorded = ctx.row.server_id
    if recorded is not None and _reserve(ctx, recorded, singleton=_user_singleton(ctx)):
        # An earlier attempt reserved and recorded this server, then crashed: it may have
        # assigned it already (the assignment writes nothing of its own), so keep it; the
        # owner step reads it back.
        return Advance(
            S.CREATING_USER,
            patch={"server_id": recorded},
            detail={"server_id": recorded, "reused": True},
        )
    module = ctx.module
    cfg = ctx.tariff.configuration
    location = module.data_center.location_id
    where = Q.free() & (Q("configuration") == cfg) & (Q("location_id") == location)
    client = ctx.client()
    key = ("servers.list", module.url, cfg, location)
    listing = ctx.reads.listing(key)
    free = ctx.shared(
        key,
        lambda: FreeServers(
            lambda offset, n: client.servers.page(where, offset=offset, count=n),
            CLAIM_PAGE,
            ctx.store.server_claims,
            view=listing,
            max_pages=MAX_CLAIM_PAGES,
            rng=ctx.rng,
        ),
    )
    sid = ctx.service_id
    reserved_by_others = 0
    for pages in range(1, MAX_CLAIM_PAGES + 1):
        # the tick's first read (one page; at a random place once other workers were
        # seen taking servers), then the first pages at the front, read together (see
        # FreeServers): servers of earlier tries are looked at again, and skipped if
        # they were taken meanwhile
        first = free.first(pages, lambda read: ctx.call("servers.list", read))
        # the remote filter covers owner and is_new only; check the rest of the rules here
        fitting = [
            s
            for s in first.servers
            if s.is_free and s.configuration == cfg and s.location_id == location
        ]
        # not one another service holds, nor one a service of this tick is about to
        # reserve (or was refused)
        candidates = [
            s
            for s in fitting
            if first.holders.get(s.id, sid) == sid and s.id not in ctx.reads.reserving
        ]
        reserved_by_others = len(fitting) - len(candidates)
        ctx.rng.shuffle(candidates)
        for server in candidates:
            claimed = Advance(
                S.CREATING_USER, patch={"server_id": server.id}, detail={"server_id": server.id}
            )
            # taken by this service now, or held by another: no tick-mate tries it again
            ctx.reads.reserving.add(server.id)
            if ctx.lockstep:
                # reserved in the tick's shared write (see Provisioner._reserved for a
                # refusal)
                return Reserve(server, _user_singleton(ctx), claimed, listing)
            if _reserve(ctx, server.id, singleton=_user_singleton(ctx)):
                ctx.seen[server.id] = server
                return claimed
            reserved_by_others += 1
            listing.refused()
        if first.complete:
            break
        # every server read so far is reserved by another service (in flight, or a
        # closed or failed one the reconciler has not swept yet): read on
    else:
        return Retry(
            f"the first {MAX_CLAIM_PAGES * CLAIM_PAGE} free servers of configuration "
            f"{cfg!r} are all reserved by other services"
        )
    # Nothing left here for this order: the module's location has no free server, or
    # only ones other services are taking right now (the free count covers the whole
    # DCImanager, which may serve several locations). Select again without this module;
    # the number of modules bounds the back-and-forth.
    exhausted = [*(ctx.data.get("exhausted_modules") or ()), module.name]
    why = (
        f"its {reserved_by_others} free server(s) are reserved by other services"
        if reserved_by_others
        else "no free server in its location"
    )
    return Advance(
        S.SELECTING_MODULE,
        patch={"module": None, "data": {"exhausted_modules": exhausted}},
        detail={"module": module.name, "reason": why},
    )


def modules_sharing_users(catalog: Catalog, module: ProcessingModule) -> frozenset[str]:
    """The names of the catalog's modules served by the same DCImanager as ``module``
    (one DCImanager may serve several modules, one per location): they share its users."""
    return frozenset(m.name for m in catalog.modules if m.url == module.url)


def _user_singleton(ctx: StepContext) -> str | None:
    """The name of the right to create the customer's user in the module's DCImanager
    (``None`` in the unsafe test mode, which creates blindly). Keyed by the DCImanager,
    not the module: two modules on one DCImanager share its users."""
    if ctx.settings.unsafe_skip_readback:
        return None
    return f"user:{ctx.module.url}:{ctx.email}"


def _reserve(ctx: StepContext, server_id: int, *, singleton: str | None = None) -> bool:
    # The user singleton is claimed with the reservation (the write is made anyway): the
    # next step then creates the customer's user, if it is missing, without a write.
    try:
        return ctx.reserve(server_id, singleton=singleton)
    except StaleState:
        # a crashed attempt reserved a server but never recorded it: nothing remote was
        # done with it, so let it go and reserve afresh
        for sid in ctx.store.server_claims(service_id=ctx.service_id):
            if sid != server_id:
                ctx.release_server(sid)
        return ctx.reserve(server_id)


def _find_users(ctx: StepContext, email: str) -> list[User]:
    client = ctx.client()
    users = ctx.call("users.find", client.users.list, Q("email") == email)
    return sorted((u for u in users if u.email.strip().lower() == email), key=lambda u: u.id)


def _creating_user(ctx: StepContext) -> Outcome:
    email = ctx.email
    client = ctx.client()
    skip = ctx.settings.unsafe_skip_readback
    users = [] if skip else _find_users(ctx, email)
    created: int | None = None
    if not users:
        # Services of one customer share the user: one creator at a time per email, so
        # two orders of a new customer cannot create two users. The sibling finds the
        # user on its next try; a crashed creator's claim runs out with the lease TTL.
        right = _user_singleton(ctx)
        if right is not None and not ctx.claim_singleton(right):
            return Wait(1.0 + ctx.rng.random(), "another service is creating the user")
        name = ctx.order.customer_name or email
        user = ctx.call(
            "users.create",
            client.users.create,
            email=email,
            # the customer signs in through billing (or resets it); never stored
            password=generate_password(ctx.rng, 24),
            full_name=f"{name} {USER_MARKER}",
        )
        created = user.id
        users = [user]
    chosen = users[0]
    # duplicates (a creator that stalled past its claim) own nothing: remove them
    for extra in users[1:]:
        if extra.server_count == 0:
            with contextlib.suppress(NotFoundError):
                ctx.call("users.delete", client.users.delete, extra.id)
    return Advance(
        S.ASSIGNING_OWNER,
        patch={"user_id": chosen.id},
        detail={"user_id": chosen.id, "created": created == chosen.id},
    )


def _taken(ctx: StepContext, server_id: int, owner: str | None) -> Outcome:
    # The reservation is dropped only after the move that forgets the server is written
    # (``release_claim``, done first thing by the next step): dropped before, a crash or
    # a refused write would leave the service recording a server that another service
    # may reserve next.
    taken = int(ctx.data.get("taken") or 0) + 1
    if taken >= 2:
        # the server is someone else's: forget it, a retry claims another one
        return Fail(
            "server_taken",
            f"server {server_id} was taken by someone else ({owner or 'unknown'}) "
            "after it was reserved, for the second time",
            patch={"server_id": None, "data": {"taken": None, "release_claim": server_id}},
            resume_at=S.CLAIMING_SERVER,
        )
    return Advance(
        S.CLAIMING_SERVER,
        patch={"server_id": None, "data": {"taken": taken, "release_claim": server_id}},
        detail={"server_id": server_id, "reason": "taken by someone else"},
    )


def _assigning_owner(ctx: StepContext) -> Outcome:
    server_id = ctx.row.server_id
    user_id = ctx.row.user_id
    assert server_id is not None
    assert user_id is not None
    client = ctx.client()
    ips_before: list[int] = list(ctx.data.get("ips_before") or ())
    server: Server | None = None
    if ctx.settings.unsafe_skip_readback:
        assigned_now = True
    else:
        # The listing this lease just claimed it from is fresh enough for the first try;
        # any later try (crash, timeout, lost answer) reads the server back first.
        server = ctx.seen.pop(server_id, None) or ctx.get_server(server_id)
        if not ctx.data.get("ips_before"):
            ips_before = [ip.id for ip in server.ip]
        if _owner_is(server, ctx.email):
            assigned_now = False
        elif server.owner_email is not None:
            return _taken(ctx, server_id, server.owner_email)
        else:
            assigned_now = True
    if assigned_now:
        try:
            ctx.call("servers.set_owner", client.servers.set_owner, server_id, user_id)
        except ConflictError:
            return _taken(ctx, server_id, None)
        except (NotFoundError, BadRequestError):
            # our user may have been deleted meanwhile (a sibling service of the same
            # customer closed): then create or find it again; anything else is for a person
            if any(u.id == user_id for u in _find_users(ctx, ctx.email)):
                raise
            return Advance(
                S.CREATING_USER,
                patch={"user_id": None},
                detail={"reason": f"user {user_id} vanished"},
            )
    detail = {"server_id": server_id, "user_id": user_id, "assigned": assigned_now}
    if ctx.tariff.ipv4_count > 0:
        return Advance(S.BINDING_IPS, patch={"data": {"ips_before": ips_before}}, detail=detail)
    intent = _install_intent(ctx, server_id, fresh=None if assigned_now else server)
    return Advance(
        S.INSTALLING_OS,
        patch={"data": {"ips_before": ips_before, **intent}},
        detail=detail,
    )


def _binding_ips(ctx: StepContext) -> Outcome:
    server_id = ctx.row.server_id
    assert server_id is not None
    tariff = ctx.tariff
    client = ctx.client()
    have = 0
    server: Server | None = None
    if not ctx.settings.unsafe_skip_readback:
        server = ctx.get_server(server_id)
        have = sum(
            1 for ip in _our_ips(server, ctx.data.get("ips_before") or ()) if ip.family == "ipv4"
        )
    missing = tariff.ipv4_count - have
    if missing > 0:
        ctx.call(
            "ips.assign",
            client.ips.assign,
            server_id,
            count=missing,
            pool_ids=list(tariff.ip_pools),
        )
        server = None
    intent = _install_intent(ctx, server_id, fresh=server)
    return Advance(
        S.INSTALLING_OS,
        patch={"data": intent},
        detail={"bound": max(missing, 0), "already": have},
    )


def _install_intent(ctx: StepContext, server_id: int, *, fresh: Server | None) -> dict[str, Any]:
    """What must be durable before an install call: the root password it installs and
    the server's operation id before it (an operation newer than that one, seen after a
    crash or a lost answer, is our install: adopted, never started twice).

    ``fresh`` is a read of the server taken after the last change this lease made to
    it; without one the server is read now (skipped in the unsafe test mode)."""
    server = fresh
    if server is None and not ctx.settings.unsafe_skip_readback:
        server = ctx.get_server(server_id)
    if server is not None:
        ctx.seen[server_id] = server
    intent: dict[str, Any] = {
        "install_issued_at": ctx.now(),
        "install_baseline": _op_id(server) if server is not None else None,
        "install_sent": None,
    }
    if not ctx.data.get("root_password_next"):
        intent["root_password_next"] = generate_password(ctx.rng).reveal()
    return intent


def _issue_install(ctx: StepContext) -> None:
    """Call the install; its intent (password, baseline) is durable already."""
    server_id = ctx.row.server_id
    assert server_id is not None
    data = ctx.data
    client = ctx.client()
    template = ctx.template_id(data.get("os_template_next") or ctx.order.os_template)
    # The answer's ``task`` is not reliably the operation id; the first poll learns the
    # id as "the server's operation that is not the baseline" and records it then.
    ctx.call(
        "servers.install_os",
        client.servers.install_os,
        server_id,
        template,
        password=data["root_password_next"],
        ssh_keys=list(ctx.order.ssh_keys),
    )
    if ctx.settings.unsafe_skip_readback:
        # the unsafe mode cannot tell our operation from an older one: remember the call
        ctx.checkpoint("op_id", {"data": {"install_sent": True}})


def _installing_os(ctx: StepContext) -> Outcome:
    row = ctx.row
    server_id = row.server_id
    assert server_id is not None
    if row.op_id is not None:
        return _poll_install(ctx)
    if not row.data.get("install_issued_at"):
        # no intent yet (an operator retry after a failed install): record one first
        ctx.checkpoint("install", {"data": _install_intent(ctx, server_id, fresh=None)})
    fresh = ctx.seen.get(server_id)
    skip = ctx.settings.unsafe_skip_readback
    if fresh is not None or (skip and not row.data.get("install_sent")):
        # read moments ago in this lease, after our last change: nothing to adopt
        if fresh is not None and not _owner_is(fresh, ctx.email):
            return _owner_changed(fresh)
        # forgotten only once called: a step parked before the call runs again
        _issue_install(ctx)
        ctx.seen.pop(server_id, None)
        return Wait(ctx.settings.poll_interval, "install started")
    return _poll_install(ctx)


def _owner_changed(server: Server) -> Fail:
    return Fail(
        "owner_changed",
        f"server {server.id} is owned by {server.owner_email!r}, not by the customer: "
        "not installing",
    )


def _poll_install(ctx: StepContext) -> Outcome:
    row = ctx.row
    server_id = row.server_id
    assert server_id is not None
    server = ctx.get_server(server_id)
    op = server.operation
    current = _op_id(server)
    op_id = row.op_id
    if op_id is None:
        if current is not None and current != row.data.get("install_baseline"):
            op_id = current
            if op is not None and not op.is_terminal:
                # recorded now so later polls know it; a finished one goes with the
                # transition it causes
                ctx.checkpoint("op_id", {"op_id": current})
        else:
            # the install call never took effect (crash before it, or lost before
            # DCImanager acted): the intent still holds, so call it now
            if not _owner_is(server, ctx.email):
                return _owner_changed(server)
            _issue_install(ctx)
            return Wait(ctx.settings.poll_interval, "install started")
    started = float(row.data.get("install_issued_at") or ctx.now())
    if current != op_id or op is None:
        return Fail(
            "install_replaced",
            f"server {server_id}: operation {op_id} was replaced by {current} before it ended",
        )
    if op.is_failed:
        return Fail(
            "install_failed",
            f"OS install on server {server_id} failed: {op.status} {op.status_info or ''}".strip(),
        )
    if not op.is_ok:
        if ctx.now() - started > ctx.settings.install_timeout:
            return Fail(
                "install_timeout",
                f"OS install on server {server_id} still {op.status} after "
                f"{ctx.settings.install_timeout:.0f} s",
            )
        jitter = ctx.rng.uniform(0.9, 1.1)
        return Wait(ctx.settings.poll_interval * jitter, f"install {op.status}")
    if not _owner_is(server, ctx.email):
        return Fail(
            "owner_changed",
            f"server {server_id} is owned by {server.owner_email!r}, not by the customer",
        )
    if _data_ports_down(server) and row.desired != S.SUSPENDED.value:
        # a server given back with its ports off (its last customer was suspended, or
        # someone switched them off): the customer gets it with its network on
        ctx.call("servers.ports_on", ctx.client().servers.ports_on, server_id)
    ips = [ip.name for ip in _our_ips(server, row.data.get("ips_before") or ())]
    reinstalled = row.data.get("os_template_next") is not None
    os_template = row.data.get("os_template_next") or ctx.order.os_template
    now = ctx.now()
    kind = EventKind.REINSTALLED if reinstalled else EventKind.ACTIVATED
    return Advance(
        S.ACTIVE,
        patch={
            "op_id": op_id,
            "data": {
                "root_password": row.data.get("root_password_next"),
                "root_password_next": None,
                "os_template": os_template,
                "os_template_next": None,
                "ip_addresses": ips,
                "taken": None,
                "exhausted_modules": None,
            },
        },
        detail={"server_id": server_id, "op_id": op_id, "ip_addresses": ips},
        events=[
            event(
                kind,
                now,
                server_id=server_id,
                module=row.module,
                user_id=row.user_id,
                ip_addresses=ips,
                os_template=os_template,
                hostname=ctx.order.hostname,
            )
        ],
    )


def _reinstalling(ctx: StepContext) -> Outcome:
    server_id = ctx.row.server_id
    assert server_id is not None
    fresh = ctx.seen.pop(server_id, None)
    if fresh is not None:
        # the intent was recorded from this read, in this lease: call now
        _issue_install(ctx)
    # otherwise (a crash since) the poll reads back: adopts the install or calls it
    return Advance(S.INSTALLING_OS, detail={"reinstall": True})


def _switch_ports(ctx: StepContext, *, on: bool) -> Outcome:
    server_id = ctx.row.server_id
    assert server_id is not None
    client = ctx.client()
    # naturally idempotent (set ports to a state), so it is simply re-issued after a crash
    if on:
        ctx.call("servers.ports_on", client.servers.ports_on, server_id)
        return Advance(
            S.ACTIVE,
            events=[event(EventKind.RESUMED, ctx.now(), server_id=server_id)],
            detail={"server_id": server_id, "ports": "on"},
        )
    ctx.call("servers.ports_off", client.servers.ports_off, server_id)
    return Advance(
        S.SUSPENDED,
        events=[event(EventKind.SUSPENDED, ctx.now(), server_id=server_id)],
        detail={"server_id": server_id, "ports": "off"},
    )


def _suspending(ctx: StepContext) -> Outcome:
    return _switch_ports(ctx, on=False)


def _resuming(ctx: StepContext) -> Outcome:
    return _switch_ports(ctx, on=True)


def _rebooting(ctx: StepContext) -> Outcome:
    server_id = ctx.row.server_id
    assert server_id is not None
    client = ctx.client()
    # at least once: a crash between the reset and its record reboots the server again
    ctx.call("servers.power_reset", client.servers.power_reset, server_id)
    return Advance(
        S.ACTIVE,
        events=[event(EventKind.REBOOTED, ctx.now(), server_id=server_id)],
        detail={"server_id": server_id},
    )


def _terminating(ctx: StepContext) -> Outcome:
    row = ctx.row
    server_id = row.server_id
    done: dict[str, Any] = {}
    if server_id is None:
        # a crash may have left an unrecorded reservation (nothing remote done with it)
        for sid in ctx.store.server_claims(service_id=row.service_id):
            ctx.release_server(sid)
            done["released_claim"] = sid
    elif (
        row.module is not None
        and ctx.store.server_claims([server_id]).get(server_id) != row.service_id
    ):
        # The reservation is given up only once the owner release is confirmed (or, after
        # the server was taken by someone else, when it is not ours): a crash after that
        # leaves nothing remote to undo, and the server may be another service's now, of
        # the same customer even, so it is not touched again.
        done["claim_gone"] = server_id
    elif row.module is not None:
        client = ctx.client()
        server = ctx.get_server(server_id)
        if _owner_is(server, ctx.email):
            op = server.operation
            if op is not None and not op.is_terminal:
                return Wait(ctx.settings.poll_interval, f"operation {op.status} on the server")
            if str(getattr(server.power_status, "value", server.power_status)) == "on":
                # already off or powering off: the owner release does not care
                with contextlib.suppress(ConflictError):
                    ctx.call("servers.power_off", client.servers.power_off, server_id)
                done["powered_off"] = True
            for ip in _our_ips(server, row.data.get("ips_before") or ()):
                with contextlib.suppress(NotFoundError):
                    ctx.call("ips.release", client.ips.release, ip.id)
            done["released_ips"] = len(_our_ips(server, row.data.get("ips_before") or ()))
            if _data_ports_down(server):
                # closed while suspended: the server goes back with its network on
                ctx.call("servers.ports_on", client.servers.ports_on, server_id)
                done["ports_on"] = True
            ctx.call("servers.release_owner", client.servers.release_owner, server_id)
            # release the reservation only once the remote owner is confirmed empty
            server = ctx.get_server(server_id)
        if not _owner_is(server, ctx.email):
            # free, or someone else's (taken from the customer): nothing of ours is left
            # on it to wait for
            ctx.release_server(server_id)
            done["released_claim"] = server_id
            if server.owner_email is not None:
                done["owner"] = server.owner_email
        else:
            # the owner release has not taken effect yet: the reconciler lets the
            # reservation go once the server is free
            done["kept_claim"] = server_id
    came_from = row.data.get("closed_from")
    # The user is created before its id is recorded, from claiming_server on (the
    # creation needs no write of its own): a crash there leaves it unrecorded.
    touched_user = row.user_id is not None or came_from in (
        S.CLAIMING_SERVER.value,
        S.CREATING_USER.value,
    )
    if touched_user and row.module is not None:
        done["user_deleted"] = _delete_user_if_unused(ctx)
    return Advance(
        S.CLOSED,
        detail=done,
        events=[event(EventKind.CLOSED, ctx.now(), server_id=server_id)],
    )


def _delete_user_if_unused(ctx: StepContext) -> bool:
    """Delete the customer's user when it owns nothing and no other live service of ours
    is for the same customer (services of one customer share the user). Found by email,
    so a user whose creation was never recorded (crash right after it) goes too."""
    row = ctx.row
    email = ctx.email
    live = [state.value for state in S if state is not S.CLOSED]
    # The store's customer index compares e-mails stripped and lower-cased, as ctx.email is.
    others = ctx.store.services_of_customer(email, states=live)
    sharing = modules_sharing_users(ctx.catalog, ctx.module)
    if any(
        other.service_id != row.service_id and (other.module is None or other.module in sharing)
        for other in others
    ):
        return False
    client = ctx.client()
    deleted = False
    for user in _find_users(ctx, email):
        if user.server_count > 0:
            continue
        # gone already, or owns something after all: leave it
        with contextlib.suppress(NotFoundError, ConflictError):
            ctx.call("users.delete", client.users.delete, user.id)
            deleted = True
    return deleted


_STEPS: Mapping[ServiceState, Callable[[StepContext], Outcome]] = {
    S.PENDING: _pending,
    S.SELECTING_MODULE: _selecting_module,
    S.CLAIMING_SERVER: _claiming_server,
    S.CREATING_USER: _creating_user,
    S.ASSIGNING_OWNER: _assigning_owner,
    S.BINDING_IPS: _binding_ips,
    S.INSTALLING_OS: _installing_os,
    S.ACTIVE: _active,
    S.SUSPENDING: _suspending,
    S.SUSPENDED: _suspended,
    S.RESUMING: _resuming,
    S.REINSTALLING: _reinstalling,
    S.REBOOTING: _rebooting,
    S.TERMINATING: _terminating,
    S.FAILED: _failed,
}
