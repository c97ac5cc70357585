"""The public view of one service: :class:`Service`, built from the store's row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from dci6bridge.secret import Secret
from dci6bridge.stores.base import StoredService

from .states import ServiceState, ServiceStatus, status_of

__all__ = ["PASSWORD_VISIBLE", "Service", "service_from_row"]

#: States in which :attr:`Service.root_password` is filled in: the password of the
#: finished install (during a reinstall the old one no longer holds).
PASSWORD_VISIBLE: frozenset[ServiceState] = frozenset(
    {
        ServiceState.ACTIVE,
        ServiceState.SUSPENDING,
        ServiceState.SUSPENDED,
        ServiceState.RESUMING,
        ServiceState.REBOOTING,
    }
)


@attrs.frozen
class Service:
    """A dedicated-server service as billing sees it.

    Attributes:
        service_id: billing's id of the service (the idempotency key of everything).
        status: the coarse billing status (IN_PROGRESS, ACTIVE, SUSPENDED, CLOSED, FAILED).
        state: the fine-grained recovery point (see :class:`ServiceState`).
        desired: what billing asked for last (``ACTIVE``, ``SUSPENDED`` or ``CLOSED``).
        module: name of the processing module serving it, once selected.
        server_id: the DCImanager server id, once claimed.
        user_id: the DCImanager user id of the customer, once created or found.
        ip_addresses: addresses bound to the server (once active).
        os_template: the OS template installed (or being installed).
        root_password: the root password of the installed OS, a :class:`~dci6bridge.Secret`;
            ``None`` until the service is active (and during a reinstall).
        last_error: why the last attempt failed, if it did (never contains secrets).
        created_at: when the order was recorded (POSIX seconds, store clock).
        updated_at: when the service last changed.
    """

    service_id: str
    status: ServiceStatus
    state: ServiceState
    desired: ServiceState
    module: str | None
    server_id: int | None
    user_id: int | None
    ip_addresses: tuple[str, ...]
    os_template: str | None
    root_password: Secret | None
    last_error: str | None
    created_at: float
    updated_at: float

    @property
    def is_active(self) -> bool:
        """``status is ServiceStatus.ACTIVE``."""
        return self.status is ServiceStatus.ACTIVE


def service_from_row(row: StoredService) -> Service:
    """The public :class:`Service` for a stored row (secrets wrapped, data decoded)."""
    data: Mapping[str, Any] = row.data
    state = ServiceState(row.state)
    password = data.get("root_password") if state in PASSWORD_VISIBLE else None
    os_template = data.get("os_template") or row.spec.get("os_template")
    return Service(
        service_id=row.service_id,
        status=status_of(state),
        state=state,
        desired=ServiceState(row.desired),
        module=row.module,
        server_id=row.server_id,
        user_id=row.user_id,
        ip_addresses=tuple(data.get("ip_addresses") or ()),
        os_template=os_template,
        root_password=Secret(password) if isinstance(password, str) else None,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
