"""The reconciler sweep: stuck services, orphan servers, stale reservations.

Expired leases need no sweep (the next :meth:`~dci6bridge.stores.base.StatusStore.acquire`
takes them). The sweep covers what leases cannot see (``reference/durability.md`` §6):

* **stuck services** — in one state longer than its budget (:data:`STATE_BUDGETS`):
  a ``stuck`` department task (once per service while it is open);
* **orphan servers** — a server owned in DCImanager by one of our customers' users that
  no live service records: reported, with an ``orphan_server`` task, never touched
  (an operator may have handed it over by hand);
* **lost servers** — a live service past provisioning (``active``, ``suspended``, ...)
  whose server is no longer owned by its customer in DCImanager (an outsider or an
  operator took it, or released it): reported, with a ``server_lost`` task, never touched;
* **unused users** — DCImanager users this library created (marked ``[dci6bridge]``)
  that own nothing and that no live service of a module on that DCImanager needs (its
  customer has none, or none that could still pick such a module): deleted (a crash can
  leave one behind, e.g. right after it was created for a service that was then closed);
* **stale reservations** — a local reservation held by a closed or failed service whose
  server has no owner in DCImanager: handed to a worker to release (under a lease,
  fenced like every write).

A :class:`~dci6bridge.Worker` runs it every ``reconcile_every`` seconds as a store
singleton, so one worker of the deployment sweeps at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from dci6bridge.client.query import Q
from dci6bridge.domain import Order
from dci6bridge.errors import (
    ConfigError,
    ConflictError,
    Dci6BridgeError,
    InvalidRequest,
    NotFoundError,
    ServiceNotFound,
)
from dci6bridge.stores.base import NewTask, StoredService

from .states import ServiceState
from .steps import USER_MARKER, user_email

if TYPE_CHECKING:
    from .provisioner import Provisioner

__all__ = [
    "STATE_BUDGETS",
    "LostServer",
    "OrphanServer",
    "ReconcileReport",
    "StuckService",
    "reconcile",
]

log = logging.getLogger("dci6bridge.provisioning")

S = ServiceState

#: Seconds a service may stay in a state before the sweep flags it. ``installing_os``
#: gets the provisioner's ``install_timeout`` on top (an install is slow by nature).
STATE_BUDGETS: Mapping[ServiceState, float] = {
    S.PENDING: 600.0,
    S.SELECTING_MODULE: 600.0,
    S.CLAIMING_SERVER: 600.0,
    S.CREATING_USER: 600.0,
    S.ASSIGNING_OWNER: 600.0,
    S.BINDING_IPS: 600.0,
    S.INSTALLING_OS: 900.0,
    S.SUSPENDING: 600.0,
    S.RESUMING: 600.0,
    S.REINSTALLING: 600.0,
    S.REBOOTING: 600.0,
    S.TERMINATING: 1800.0,
}


@attrs.frozen
class StuckService:
    """A service in ``state`` for ``seconds`` (over its budget); ``task_id`` is the
    department task about it."""

    service_id: str
    state: str
    seconds: float
    budget: float
    task_id: int


@attrs.frozen
class OrphanServer:
    """Server ``server_id`` of module ``module`` owned by ``owner_email`` (one of our
    customers) but recorded by no live service."""

    module: str
    server_id: int
    owner_email: str


@attrs.frozen
class LostServer:
    """Service ``service_id`` holds server ``server_id`` of ``module`` for
    ``customer_email``, but DCImanager says ``owner_email`` owns it (``None``: nobody)."""

    service_id: str
    module: str
    server_id: int
    customer_email: str
    owner_email: str | None


#: States in which the service's server must be owned by its customer.
OWNED_STATES = frozenset(
    {S.ACTIVE, S.SUSPENDING, S.SUSPENDED, S.RESUMING, S.REINSTALLING, S.REBOOTING}
)


@attrs.frozen
class ReconcileReport:
    """What one sweep found and did.

    Attributes:
        stuck: services over their state's time budget (a task was opened for each).
        orphans: servers owned by our customers that no live service records.
        lost: live services whose server their customer no longer owns (a task was
            opened for each).
        deleted_users: ``(module, user id)`` of unused users of ours that were deleted.
        released_claims: server ids whose stale reservation was handed to a worker to
            release.
        errors: modules that could not be checked, with the reason.
    """

    stuck: tuple[StuckService, ...] = ()
    orphans: tuple[OrphanServer, ...] = ()
    lost: tuple[LostServer, ...] = ()
    deleted_users: tuple[tuple[str, int], ...] = ()
    released_claims: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """Nothing stuck, no orphans or lost servers, nothing deleted or released, no
        errors."""
        return not (
            self.stuck
            or self.orphans
            or self.lost
            or self.deleted_users
            or self.released_claims
            or self.errors
        )


def _since(row: StoredService) -> float:
    since = row.data.get("since")
    return float(since) if isinstance(since, (int, float)) else row.updated_at


def reconcile(prov: Provisioner) -> ReconcileReport:
    """Run one sweep for ``prov``'s store and catalog (see the module docstring)."""
    store = prov.store
    now = store.now()
    rows = store.services()
    stuck: list[StuckService] = []
    for row in rows:
        state = ServiceState(row.state)
        budget = STATE_BUDGETS.get(state)
        if budget is None:
            continue
        if state is S.INSTALLING_OS:
            budget += prov.settings.install_timeout
        age = now - _since(row)
        if age <= budget:
            continue
        department = prov.department_of(row)
        task = store.add_task(
            row.service_id,
            NewTask(
                department=department,
                kind="stuck",
                reason=f"in {row.state} for {age:.0f} s (budget {budget:.0f} s)",
            ),
        )
        stuck.append(StuckService(row.service_id, row.state, age, budget, task.id))
        log.warning("service %s: stuck in %s for %.0f s", row.service_id, row.state, age)

    orphans, lost, errors = _servers(prov, rows)
    deleted, user_errors = _unused_users(prov, rows)
    released = _stale_claims(prov, rows)
    return ReconcileReport(
        stuck=tuple(stuck),
        orphans=tuple(orphans),
        lost=tuple(lost),
        deleted_users=tuple(deleted),
        released_claims=tuple(released),
        errors=tuple(errors + user_errors),
    )


def _emails(rows: list[StoredService]) -> set[str]:
    return {email for email in map(_email_of, rows) if email is not None}


def _email_of(row: StoredService) -> str | None:
    try:
        return user_email(Order.from_spec(row.spec))
    except ConfigError:
        return None


def _servers(
    prov: Provisioner, rows: list[StoredService]
) -> tuple[list[OrphanServer], list[LostServer], list[str]]:
    """One listing of the owned servers per module: orphans and lost servers."""
    ours = _emails(rows)
    live = [row for row in rows if row.state != S.CLOSED.value]
    recorded = {(row.module, row.server_id) for row in live if row.server_id is not None}
    owned_rows = [
        row
        for row in live
        if row.server_id is not None and row.module and ServiceState(row.state) in OWNED_STATES
    ]
    found: list[OrphanServer] = []
    lost: list[LostServer] = []
    errors: list[str] = []
    if not ours:
        return found, lost, errors
    for module in prov.catalog.modules:
        if not module.data_center.selectable:
            continue
        location = module.data_center.location_id
        try:
            servers = list(
                prov.client(module).servers.list(
                    where=(Q("location_id") == location) & (Q("owner_email") != None)  # noqa: E711
                )
            )
        except Dci6BridgeError as exc:
            errors.append(f"{module.name}: {exc}")
            continue
        owners = {server.id: (server.owner_email or "").strip().lower() for server in servers}
        for server in servers:
            owner = owners[server.id]
            if owner not in ours or (module.name, server.id) in recorded:
                continue
            found.append(OrphanServer(module.name, server.id, owner))
            prov.store.add_task(
                f"orphan:{module.name}:server:{server.id}",
                NewTask(
                    department=module.department,
                    kind="orphan_server",
                    reason=(
                        f"server {server.id} in module {module.name!r} is owned by our "
                        f"customer {owner!r} but no service records it"
                    ),
                ),
            )
            log.warning("orphan server %s in %s owned by %s", server.id, module.name, owner)
        for row in owned_rows:
            if row.module != module.name or row.server_id is None:
                continue
            customer = _email_of(row)
            holder = owners.get(row.server_id)  # absent from the listing: no owner
            if customer is None or holder == customer:
                continue
            lost.append(LostServer(row.service_id, module.name, row.server_id, customer, holder))
            prov.store.add_task(
                row.service_id,
                NewTask(
                    department=module.department,
                    kind="server_lost",
                    reason=(
                        f"server {row.server_id} of service {row.service_id!r} is owned by "
                        f"{holder or 'nobody'} in module {module.name!r}, not by the "
                        f"customer {customer!r}"
                    ),
                ),
            )
            log.warning(
                "service %s: server %s is owned by %s, not by %s",
                row.service_id,
                row.server_id,
                holder or "nobody",
                customer,
            )
    return found, lost, errors


def _unused_users(
    prov: Provisioner, rows: list[StoredService]
) -> tuple[list[tuple[str, int]], list[str]]:
    """Delete our users that own nothing and that no live service may still need.

    A service is stored before its user is created, so a user whose email no live
    service of a module on that DCImanager (or one still choosing its module) carries
    cannot be in the middle of being set up."""
    # by DCImanager, not by module: modules on one DCImanager share its users
    url_of = {m.name: m.url for m in prov.catalog.modules}
    needed: dict[str | None, set[str]] = {}
    for row in rows:
        if row.state == S.CLOSED.value:
            continue
        email = _email_of(row)
        if email is not None:
            # a module no longer in the catalog: kept everywhere, as undecided ones are
            needed.setdefault(url_of.get(row.module or ""), set()).add(email)
    undecided = needed.get(None, set())
    deleted: list[tuple[str, int]] = []
    errors: list[str] = []
    swept: set[str] = set()
    for module in prov.catalog.modules:
        if not module.data_center.selectable or module.url in swept:
            continue
        swept.add(module.url)
        client = prov.client(module)
        keep = needed.get(module.url, set()) | undecided
        try:
            users = list(client.users.list())
        except Dci6BridgeError as exc:
            errors.append(f"{module.name}: users: {exc}")
            continue
        for user in users:
            email = user.email.strip().lower()
            if USER_MARKER not in (user.full_name or "") or email in keep:
                continue
            if user.server_count:
                continue  # owns something: the orphan check reports its servers
            try:
                client.users.delete(user.id)
            except (NotFoundError, ConflictError):
                continue  # gone already, or owns something after all
            except Dci6BridgeError as exc:
                errors.append(f"{module.name}: deleting user {user.id}: {exc}")
                continue
            deleted.append((module.name, user.id))
            log.warning("deleted unused user %s (%s) in %s", user.id, email, module.name)
    return deleted, errors


def _stale_claims(prov: Provisioner, rows: list[StoredService]) -> list[int]:
    by_id = {row.service_id: row for row in rows}
    released: list[int] = []
    for server_id, service_id in prov.store.server_claims().items():
        row = by_id.get(service_id)
        if row is None or row.state not in (S.CLOSED.value, S.FAILED.value):
            continue
        if (
            row.state == S.FAILED.value
            and row.server_id == server_id
            and row.failed_from
            in (
                S.BINDING_IPS.value,
                S.INSTALLING_OS.value,
                S.ACTIVE.value,
                S.SUSPENDING.value,
                S.SUSPENDED.value,
                S.RESUMING.value,
                S.REINSTALLING.value,
                S.REBOOTING.value,
                S.TERMINATING.value,
            )
        ):
            continue  # handed over already: the server stays with the failed service
        module = row.module
        if module is None:
            continue
        try:
            server = prov.client(module).servers.get(server_id)
        except Dci6BridgeError as exc:
            log.warning("reservation of server %s: cannot read it back: %s", server_id, exc)
            continue
        if server.owner_email is not None:
            continue

        def decide(svc: StoredService, server_id: int = server_id) -> Mapping[str, Any]:
            # a new request: a worker's decision taken before it must not overwrite it
            return {
                "data": {"release_claim": server_id},
                "runnable": True,
                "desired_seq": svc.desired_seq + 1,
            }

        try:
            prov.store.request(
                service_id,
                f"reconcile:release:{server_id}:{row.version}",
                "release_claim",
                {"server_id": server_id},
                decide,
            )
        except (InvalidRequest, ServiceNotFound):
            continue
        released.append(server_id)
    return released
