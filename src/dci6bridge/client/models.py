"""Frozen attrs models of what DCImanager 6 returns.

Models are plain data: no network calls hide behind attributes. They are built by the one
cattrs converter in :mod:`dci6bridge.client._converter`, which reads leniently: unknown
fields are ignored, unknown enum values are kept as plain strings, ``roles`` may come as a
list or as the string ``"[@user]"``, ``task`` as a string or a number.
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

import attrs

__all__ = [
    "ActionResult",
    "ConfigurationCount",
    "ConnectionCheck",
    "IpPool",
    "Location",
    "Operation",
    "OperationStatus",
    "OsTemplate",
    "OsTemplateRef",
    "Page",
    "PortStatus",
    "PowerStatus",
    "Server",
    "ServerIp",
    "SwitchConnection",
    "SwitchPort",
    "User",
    "WhoAmI",
]

T = TypeVar("T")


@attrs.frozen
class Page(Generic[T]):
    """One page of a list (``servers.page()``): its items, and the number of items
    matching the filter in all pages (``size``) when DCImanager reported it."""

    items: list[T]
    #: the total number of matching items, ``None`` if the answer had no ``size``
    size: int | None


class PowerStatus(str, enum.Enum):
    """A server's power state (``power_status``). Unknown values stay plain strings."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class OperationStatus(str, enum.Enum):
    """Known values of ``operation.status``; others are kept as plain strings.

    ``ok`` and ``canceled`` are terminal successes (documented: BILLmanager treats such a
    server as available). In-progress and failure values are not documented; the
    simulator uses ``running`` and ``failed``. :attr:`Operation.is_failed` also treats any
    value containing ``fail`` or ``error`` as a failure.
    """

    OK = "ok"
    CANCELED = "canceled"
    RUNNING = "running"
    FAILED = "failed"


class PortStatus(str, enum.Enum):
    """A switch port's ``admin_status`` / ``oper_status``."""

    UP = "up"
    DOWN = "down"


@attrs.frozen
class Operation:
    """The server's last or current long-running operation (``server.operation``)."""

    id: int | None = None
    status: OperationStatus | str | None = None
    status_info: Any = None
    progress_info: tuple[Any, ...] = ()

    @property
    def is_ok(self) -> bool:
        """Ended successfully (``ok`` or ``canceled``)."""
        return self.status in (OperationStatus.OK, OperationStatus.CANCELED)

    @property
    def is_failed(self) -> bool:
        """Ended with a failure (``failed``, or any status containing fail/error)."""
        s = str(getattr(self.status, "value", self.status) or "").lower()
        return "fail" in s or "error" in s

    @property
    def is_terminal(self) -> bool:
        """Ended, well or badly."""
        return self.is_ok or self.is_failed


@attrs.frozen
class OsTemplateRef:
    """The OS template recorded on a server (``server.os_template``)."""

    id: int | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()


@attrs.frozen
class ServerIp:
    """An IP address bound to a server (``server.ip[]``)."""

    id: int
    name: str = ""
    family: str = "ipv4"
    domain: str | None = None
    gateway: str | None = None
    network: str | None = None
    status: str | None = None


@attrs.frozen
class SwitchConnection:
    """A server's connection to a switch port (``server.switch_connection[]``).

    ``connection_id`` is the switch port id; connections with ``is_ipmi_connection``
    carry the BMC and are never switched off by suspend.
    """

    id: int
    switch: int
    connection_id: int
    description: str = ""
    admin_status: PortStatus | str | None = None
    oper_status: PortStatus | str | None = None
    do_not_collect_traffic: bool = False
    is_ipmi_connection: bool = False
    switch_name: str | None = None


@attrs.frozen
class Server:
    """A dedicated server as ``GET /api/dci/v3/server/{id}`` returns it."""

    id: int
    name: str = ""
    domain: str | None = None
    configuration: str | None = None
    location_id: int | None = None
    owner_email: str | None = None
    is_new: bool = False
    maintenance_mode: bool = False
    state: str | None = None
    state_info: str | None = None
    power_status: PowerStatus | str | None = None
    operation: Operation | None = None
    os_template: OsTemplateRef | None = None
    ip: tuple[ServerIp, ...] = ()
    switch_connection: tuple[SwitchConnection, ...] = ()

    @property
    def is_free(self) -> bool:
        """Free by the documented rules: no owner, not new, last operation ok or
        canceled (or none), not in maintenance."""
        op_ok = self.operation is None or self.operation.status is None or self.operation.is_ok
        return self.owner_email is None and not self.is_new and op_ok and not self.maintenance_mode

    @property
    def data_connections(self) -> tuple[SwitchConnection, ...]:
        """Switch connections that are not the IPMI/BMC connection."""
        return tuple(c for c in self.switch_connection if not c.is_ipmi_connection)


@attrs.frozen
class ConfigurationCount:
    """Free servers of one configuration (``GET /api/dci/v3/server/configuration``)."""

    configuration: str
    free_server_count: int


@attrs.frozen
class Location:
    """A DCImanager location (one data center)."""

    id: int
    name: str = ""


@attrs.frozen
class OsTemplate:
    """An OS template that can be installed on servers of a location."""

    id: int
    name: str
    tags: tuple[str, ...] = ()
    location_id: int | None = None


@attrs.frozen
class User:
    """A DCImanager user. ``roles`` is always a tuple, whatever shape the API sent."""

    id: int
    email: str
    server_count: int = 0
    roles: tuple[str, ...] = ()
    full_name: str | None = None
    state: str | None = None


@attrs.frozen
class ActionResult:
    """What an action returns: the object's ``id`` and the platform ``task`` if any."""

    id: int | None = None
    task: str | None = None


@attrs.frozen
class IpPool:
    """An IPmanager pool."""

    id: int
    name: str = ""


@attrs.frozen
class SwitchPort:
    """A switch port (``GET /api/dci/v3/switch/{id}/port``)."""

    id: int
    description: str = ""
    admin_status: PortStatus | str | None = None
    oper_status: PortStatus | str | None = None


@attrs.frozen
class WhoAmI:
    """The session's user (``GET /api/auth/v4/whoami``)."""

    owner_id: int | None = None
    owner_email: str | None = None


@attrs.frozen
class ConnectionCheck:
    """Result of :meth:`Client.check`: could we log in and read ``whoami``?"""

    ok: bool
    user_email: str | None
    latency_s: float
    detail: str = ""
