"""The service state machine: recovery points, billing statuses and allowed transitions.

A service's ``state`` is its **recovery point**: the name of the last durable checkpoint,
which is also the step a worker runs next (``reference/durability.md`` §4). Billing sees
the coarser :class:`ServiceStatus`. Every state change the orchestrator makes is checked
against :data:`TRANSITIONS` before it reaches the store (:func:`check_transition`), as
MAAS enforces ``NODE_TRANSITIONS`` in code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from dci6bridge.errors import InvalidRequest

__all__ = [
    "IN_FLIGHT",
    "STATUS_OF",
    "TRANSITIONS",
    "ServiceState",
    "ServiceStatus",
    "check_transition",
    "status_of",
]


class ServiceState(str, enum.Enum):
    """Fine-grained recovery points of a service (the store's ``state`` column).

    Provisioning runs ``pending → selecting_module → claiming_server → creating_user →
    assigning_owner → [binding_ips →] installing_os → active``. ``terminating`` keeps its
    sub-steps in the service data; ``closed`` is terminal; ``failed`` waits for a person
    (``failed_from`` remembers where to resume).
    """

    PENDING = "pending"
    SELECTING_MODULE = "selecting_module"
    CLAIMING_SERVER = "claiming_server"
    CREATING_USER = "creating_user"
    ASSIGNING_OWNER = "assigning_owner"
    BINDING_IPS = "binding_ips"
    INSTALLING_OS = "installing_os"
    ACTIVE = "active"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    RESUMING = "resuming"
    REINSTALLING = "reinstalling"
    REBOOTING = "rebooting"
    TERMINATING = "terminating"
    CLOSED = "closed"
    FAILED = "failed"


class ServiceStatus(str, enum.Enum):
    """What billing shows for a service (BILLmanager's service statuses)."""

    IN_PROGRESS = "in_progress"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"
    FAILED = "failed"


S = ServiceState

#: The billing status of every state.
STATUS_OF: Mapping[ServiceState, ServiceStatus] = {
    **dict.fromkeys(ServiceState, ServiceStatus.IN_PROGRESS),
    S.ACTIVE: ServiceStatus.ACTIVE,
    S.SUSPENDED: ServiceStatus.SUSPENDED,
    S.CLOSED: ServiceStatus.CLOSED,
    S.FAILED: ServiceStatus.FAILED,
}

#: States a worker moves a service out of by itself (everything but the resting states).
IN_FLIGHT: frozenset[ServiceState] = frozenset(
    s for s, status in STATUS_OF.items() if status is ServiceStatus.IN_PROGRESS
)

_PROVISIONING = (
    S.PENDING,
    S.SELECTING_MODULE,
    S.CLAIMING_SERVER,
    S.CREATING_USER,
    S.ASSIGNING_OWNER,
    S.BINDING_IPS,
    S.INSTALLING_OS,
)


def _table() -> dict[ServiceState, frozenset[ServiceState]]:
    stop = {S.TERMINATING, S.FAILED}
    table: dict[ServiceState, set[ServiceState]] = {
        S.PENDING: {S.SELECTING_MODULE},
        S.SELECTING_MODULE: {S.CLAIMING_SERVER},
        # nothing reservable right now although counts said otherwise: select again
        S.CLAIMING_SERVER: {S.CREATING_USER, S.SELECTING_MODULE},
        S.CREATING_USER: {S.ASSIGNING_OWNER},
        # someone else owns the server: release the claim and pick another one;
        # the user vanished (closed by a sibling service): create or find it again
        S.ASSIGNING_OWNER: {S.BINDING_IPS, S.INSTALLING_OS, S.CLAIMING_SERVER, S.CREATING_USER},
        S.BINDING_IPS: {S.INSTALLING_OS},
        S.INSTALLING_OS: {S.ACTIVE},
        S.ACTIVE: {S.SUSPENDING, S.REINSTALLING, S.REBOOTING},
        S.SUSPENDING: {S.SUSPENDED},
        S.SUSPENDED: {S.RESUMING},
        S.RESUMING: {S.ACTIVE},
        S.REINSTALLING: {S.INSTALLING_OS},
        S.REBOOTING: {S.ACTIVE},
        S.TERMINATING: {S.CLOSED, S.FAILED},
        S.CLOSED: set(),
        # operator retry resumes where it failed; billing may close a failed service
        S.FAILED: {*_PROVISIONING, S.SUSPENDING, S.RESUMING, S.REINSTALLING, S.REBOOTING}
        | {S.TERMINATING},
    }
    for state in (*_PROVISIONING, S.ACTIVE, S.SUSPENDING, S.SUSPENDED, S.RESUMING):
        table[state] |= stop
    for state in (S.REINSTALLING, S.REBOOTING):
        table[state] |= stop
    return {k: frozenset(v) for k, v in table.items()}


#: Allowed transitions: state → the states it may move to. Enforced by
#: :func:`check_transition` on every transition the orchestrator writes.
TRANSITIONS: Mapping[ServiceState, frozenset[ServiceState]] = _table()


def status_of(state: str | ServiceState) -> ServiceStatus:
    """The billing status of a state (given as enum or its string value)."""
    return STATUS_OF[ServiceState(state)]


def check_transition(from_state: str | ServiceState, to_state: str | ServiceState) -> None:
    """Raise :class:`~dci6bridge.errors.InvalidRequest` unless ``from_state → to_state``
    is in :data:`TRANSITIONS`."""
    src, dst = ServiceState(from_state), ServiceState(to_state)
    if dst not in TRANSITIONS[src]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[src])) or "none"
        raise InvalidRequest(
            f"transition {src.value!r} -> {dst.value!r} is not allowed (allowed: {allowed})"
        )
