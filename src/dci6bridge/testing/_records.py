"""The simulator's mutable internal records and the JSON each one shows through the API.

Only the :class:`~dci6bridge.testing._world.World` touches these, under its lock.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "IPMI",
    "Ip",
    "IpPool",
    "Op",
    "Port",
    "Server",
    "Token",
    "User",
    "roles_text",
]

IPMI = "ipmi"


@attrs.define
class Op:
    """A long-running operation; it ends at ``started_at + duration``."""

    id: int
    kind: str
    started_at: float
    duration: float
    fail_reason: str | None = None
    status: str = "running"
    template_id: int | None = None

    def progress(self, now: float) -> int:
        if self.duration <= 0:
            return 100
        return max(0, min(99, int(100 * (now - self.started_at) / self.duration)))

    def to_json(self, now: float) -> dict[str, Any]:
        status_info: dict[str, Any] = {}
        progress_info: list[dict[str, Any]] = []
        if self.status == "running":
            progress_info = [{"name": self.kind, "progress": self.progress(now)}]
        elif self.status == "failed":
            status_info = {"name": self.kind, "msg": self.fail_reason or "failed"}
        return {
            "id": self.id,
            "status": self.status,
            "status_info": status_info,
            "progress_info": progress_info,
        }


@attrs.define
class Port:
    """A switch port; ``server_id`` is the server cabled to it (if any)."""

    id: int
    switch_id: int
    switch_name: str
    number: int
    connection_id: int
    server_id: int | None
    is_ipmi: bool
    admin_status: str = "up"

    @property
    def description(self) -> str:
        return f"{self.switch_name}/ge-0/0/{self.number}"

    def port_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": f"ge-0/0/{self.number}",
            "description": self.description,
            "admin_status": self.admin_status,
            "oper_status": self.admin_status,
            "server_id": self.server_id,
            "is_ipmi_connection": self.is_ipmi,
        }

    def connection_json(self) -> dict[str, Any]:
        return {
            "id": self.connection_id,
            "switch": self.switch_id,
            "connection_id": self.id,
            "description": self.description,
            "admin_status": self.admin_status,
            "oper_status": self.admin_status,
            "do_not_collect_traffic": self.is_ipmi,
            "is_ipmi_connection": self.is_ipmi,
            "switch_name": self.switch_name,
        }


@attrs.define
class IpPool:
    """An IPv4 pool; ``free`` holds addresses not bound to any server."""

    id: int
    name: str
    network: str
    gateway: str
    location_id: int | None
    total: int
    free: list[tuple[int, str]]  # (integer value, text) kept as a heap, lowest first

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "note": "",
            "is_public": True,
            "location_id": self.location_id,
            "total_ip": self.total,
            "using_ip": self.total - len(self.free),
            "ipnets": [{"name": self.network, "gateway": self.gateway}],
        }


@attrs.define
class Ip:
    """An address bound to a server."""

    id: int
    address: str
    value: int
    pool_id: int
    server_id: int
    gateway: str
    network: str

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": "",
            "family": "ipv4",
            "gateway": self.gateway,
            "id": self.id,
            "name": self.address,
            "network": self.network,
            "status": "allocated",
            "status_info": {},
        }


@attrs.define
class User:
    """A user; ``password`` is kept only to check logins."""

    id: int
    email: str
    password: str = attrs.field(repr=False)
    roles: tuple[str, ...]
    full_name: str = ""
    phone_number: str = ""
    servers: set[int] = attrs.Factory(set)


def roles_text(roles: tuple[str, ...]) -> str:
    """Roles the way the DCI user list writes them: the string ``"[@user]"``."""
    return "[" + ", ".join(roles) + "]"


@attrs.define
class Token:
    """A session; ``expires_at`` is None for tokens that never expire."""

    id: int
    value: str = attrs.field(repr=False)
    user_id: int
    expires_at: float | None


@attrs.define
class Server:
    """A server. ``row`` caches the filterable fields until the next change."""

    id: int
    name: str
    location_id: int
    configuration: str
    domain: str
    is_new: bool
    maintenance_mode: bool
    power_status: str
    op: Op
    ports: list[Port]
    owner_id: int | None = None
    owner_email: str | None = None
    os_template: dict[str, Any] | None = None
    ips: list[Ip] = attrs.Factory(list)
    row: dict[str, Any] | None = None

    def changed(self) -> None:
        self.row = None

    def _scalars(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "domain": self.domain,
            "configuration": self.configuration,
            "location_id": self.location_id,
            "owner_email": self.owner_email,
            "is_new": self.is_new,
            "maintenance_mode": self.maintenance_mode,
            "power_status": self.power_status,
            "state": "active",
        }

    def filter_row(self) -> dict[str, Any]:
        """The fields ``where`` and ``orderby`` see (cached until :meth:`changed`);
        ``_server`` leads back to this record."""
        if self.row is None:
            self.row = {
                **self._scalars(),
                "operation": {"id": self.op.id, "status": self.op.status},
                "os_template": self.os_template,
                "_server": self,
            }
        return self.row

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            **self._scalars(),
            "state_info": "",
            "operation": self.op.to_json(now),
            "os_template": dict(self.os_template) if self.os_template else None,
            "hardware_info": {},
            "perform_info": {},
            "settings": {"efi": True},
            "ip": [ip.to_json() for ip in self.ips],
            "switch_connection": [p.connection_json() for p in self.ports],
            "pdu_connection": {
                "port_id": self.id,
                "port_identity": f"pdu-{self.location_id}:{self.id}",
                "pdu_id": self.location_id,
                "pdu_name": f"pdu-{self.location_id}",
                "connection_id": self.id,
                "power_status": self.power_status,
            },
        }
