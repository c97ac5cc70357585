"""Ground truth: a frozen snapshot of the simulated DCImanager for assertions."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "InstallRecord",
    "PortState",
    "RequestRecord",
    "ServerState",
    "SimulatorState",
    "UserState",
]


@attrs.frozen
class PortState:
    """One switch port cabled to a server."""

    switch_id: int
    port_id: int
    admin_status: str
    is_ipmi: bool


@attrs.frozen
class ServerState:
    """One server as the simulator sees it (includes the owner's user id, which the API
    does not show)."""

    id: int
    name: str
    location_id: int
    configuration: str
    owner_id: int | None
    owner_email: str | None
    is_new: bool
    maintenance_mode: bool
    power_status: str
    operation_id: int
    operation_kind: str
    operation_status: str
    os_template_id: int | None
    ports: tuple[PortState, ...]
    ips: tuple[str, ...]

    @property
    def is_free(self) -> bool:
        """Free by the documented rules: no owner, not new, last operation ok or
        canceled, not in maintenance."""
        return (
            self.owner_id is None
            and not self.is_new
            and self.operation_status in ("ok", "canceled")
            and not self.maintenance_mode
        )

    @property
    def ipmi_up(self) -> bool:
        """The IPMI (BMC) port is administratively up."""
        return all(p.admin_status == "up" for p in self.ports if p.is_ipmi)

    @property
    def data_ports_up(self) -> bool | None:
        """True if every data port is up, False if every one is down, None if mixed."""
        states = {p.admin_status == "up" for p in self.ports if not p.is_ipmi}
        return None if len(states) != 1 else states.pop()


@attrs.frozen
class UserState:
    """One user; ``server_ids`` are the servers it owns."""

    id: int
    email: str
    roles: tuple[str, ...]
    full_name: str
    server_ids: tuple[int, ...]


@attrs.frozen
class InstallRecord:
    """One OS install started: ``result`` is ``"running"``, ``"ok"`` or ``"failed"``."""

    server_id: int
    owner_email: str | None
    template_id: int
    started_at: float
    result: str
    operation_id: int


def _pairs(value: Mapping[str, str] | Any) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k), str(v)) for k, v in items)


@attrs.frozen
class RequestRecord:
    """One request the simulator answered (or whose answer it lost)."""

    at: float
    method: str
    route: str
    status: int
    lost: bool = False
    #: its query parameters (``where``, ``orderby``, ``limit``, ...) as ``(name, value)``
    #: pairs; none are kept for the auth service's routes
    query: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)


def _frozen_map(value: Mapping[int, Any]) -> Mapping[int, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class SimulatorState:
    """Everything at one instant: ``servers`` and ``users`` by id, ``installs`` and
    ``requests`` in order. ``route`` names are those of
    ``dci6bridge.client._routes.ROUTES`` (``"unknown"`` for unmatched paths)."""

    now: float
    servers: Mapping[int, ServerState] = attrs.field(converter=_frozen_map)
    users: Mapping[int, UserState] = attrs.field(converter=_frozen_map)
    installs: tuple[InstallRecord, ...]
    requests: tuple[RequestRecord, ...]

    def install_count(self, server_id: int) -> int:
        """How many installs were started on ``server_id``."""
        return sum(1 for i in self.installs if i.server_id == server_id)

    def users_by_email(self, email: str) -> tuple[UserState, ...]:
        """Every user with that email (duplicates are possible, as on the platform)."""
        return tuple(u for u in self.users.values() if u.email == email)

    def count(self, route: str, status: int | None = None) -> int:
        """How many requests hit ``route`` (with that HTTP ``status``, if given)."""
        return sum(
            1 for r in self.requests if r.route == route and (status is None or r.status == status)
        )

    def servers_of(self, email: str) -> tuple[ServerState, ...]:
        """Servers owned by a user with that email."""
        return tuple(s for s in self.servers.values() if s.owner_email == email)

    @property
    def free_servers(self) -> tuple[ServerState, ...]:
        """Servers free by the documented rules."""
        return tuple(s for s in self.servers.values() if s.is_free)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the served simulator's ``GET /__simulator__/state``)."""
        return {
            "now": self.now,
            "servers": [attrs.asdict(s) for s in self.servers.values()],
            "users": [attrs.asdict(u) for u in self.users.values()],
            "installs": [attrs.asdict(i) for i in self.installs],
            "requests": [attrs.asdict(r) for r in self.requests],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SimulatorState:
        """The inverse of :meth:`to_json`."""
        servers = {}
        for raw in data["servers"]:
            ports = tuple(PortState(**p) for p in raw["ports"])
            fields = {k: v for k, v in raw.items() if k not in ("ports", "ips")}
            servers[raw["id"]] = ServerState(**fields, ports=ports, ips=tuple(raw["ips"]))
        users = {
            u["id"]: UserState(
                **{k: v for k, v in u.items() if k not in ("roles", "server_ids")},
                roles=tuple(u["roles"]),
                server_ids=tuple(u["server_ids"]),
            )
            for u in data["users"]
        }
        return cls(
            now=data["now"],
            servers=servers,
            users=users,
            installs=tuple(InstallRecord(**i) for i in data["installs"]),
            requests=tuple(RequestRecord(**r) for r in data["requests"]),
        )
