"""The simulated DCImanager's state and the rules it follows.

One :class:`World` holds every server, user, token, pool and operation. Each method is
one platform action: it checks the documented preconditions, applies the effect and
returns the JSON answer, or raises :class:`~._errors.ApiError` with the platform's
envelope. Callers hold :attr:`World.lock` around every call (the HTTP layer does).
Operations progress by the injected clock; :meth:`World.settle` finishes those whose
time has come.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ._addresses import Addresses
from ._clock import Clock
from ._errors import ApiError, Code, auth_error, bad_value, conflict, dci_error, not_found
from ._faults import FaultDice, Faults
from ._filters import FilterError, ListQuery
from ._inventory import Inventory
from ._records import Op, Port, Server, Token, User, roles_text
from ._sessions import Sessions
from ._state import (
    InstallRecord,
    PortState,
    RequestRecord,
    ServerState,
    SimulatorState,
    UserState,
)

__all__ = ["ADMIN_ROLE", "USER_ROLE", "World"]

ADMIN_ROLE = "@admin"
USER_ROLE = "@user"
_ROLES = (ADMIN_ROLE, USER_ROLE)
_VLANS_PER_USER = 5

SERVER_FIELDS = frozenset(
    {
        "id",
        "name",
        "domain",
        "configuration",
        "location_id",
        "owner_email",
        "is_new",
        "maintenance_mode",
        "power_status",
        "state",
        "operation.id",
        "operation.status",
        "os_template.id",
        "os_template.name",
    }
)
USER_FIELDS = frozenset(
    {"id", "email", "server_count", "roles", "full_name", "state", "vlans_per_user"}
)
LOCATION_FIELDS = frozenset({"id", "name"})
TEMPLATE_FIELDS = frozenset({"id", "name", "location_id"})
POOL_FIELDS = frozenset({"id", "name", "location_id", "total_ip", "using_ip", "is_public"})
PORT_FIELDS = frozenset(
    {"id", "name", "description", "admin_status", "oper_status", "server_id", "is_ipmi_connection"}
)
_QUERY_CACHE_SIZE = 256


class World:
    """All simulated state, and one method per platform action."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        clock: Clock,
        seed: int,
        faults: Faults,
        admin_email: str,
        admin_password: str,
        install_duration: float,
        power_duration: float,
        unique_user_emails: bool,
        conditional_owner: bool,
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.faults = faults
        self.dice = FaultDice(seed)
        self.install_duration = install_duration
        self.power_duration = power_duration
        self.unique_user_emails = unique_user_emails
        self.conditional_owner = conditional_owner
        self.unavailable_left = 0
        self.requests: list[RequestRecord] = []
        self.installs: list[InstallRecord] = []
        self._install_index: dict[int, int] = {}  # operation id -> index in installs
        self._pending: list[tuple[float, int, int]] = []  # (ends_at, op id, server id)
        self._queries: dict[tuple[str, str, str, str], ListQuery] = {}
        self._next = {"op": 0, "user": 0, "port": 0, "conn": 0}
        self.users: dict[int, User] = {}
        self._users_by_email: dict[str, list[User]] = {}
        self.sessions = Sessions(clock, self.dice.tokens)
        self.locations = {loc.id: loc.name for loc in inventory.locations}
        self.templates: dict[int, dict[str, Any]] = {
            t.id: {"id": t.id, "name": t.name, "tags": list(t.tags), "location_id": t.location_id}
            for t in inventory.os_templates
        }
        self.addresses = Addresses(inventory.ip_pools)
        self.ports: dict[tuple[int, int], Port] = {}
        self.switches: dict[int, str] = {loc.id: f"sw-{loc.id}" for loc in inventory.locations}
        self.admin = self.add_user(admin_email, admin_password, (ADMIN_ROLE,), "Administrator")
        for u in inventory.users:
            self.add_user(u.email, u.password, u.roles, u.full_name)
        self.servers: dict[int, Server] = {}
        # Location and configuration never change, so these lists stay valid: a list
        # request naming them scans only the matching servers.
        self._server_index: dict[tuple[int | None, str | None], list[Server]] = {}
        now = clock.now()
        ports_on_switch = dict.fromkeys(self.switches, 0)
        for s in inventory.servers:
            ports = []
            for k in range(s.data_ports + 1):
                ports_on_switch[s.location_id] += 1
                port = Port(
                    id=self._id("port"),
                    switch_id=s.location_id,
                    switch_name=self.switches[s.location_id],
                    number=ports_on_switch[s.location_id],
                    connection_id=self._id("conn"),
                    server_id=s.id,
                    is_ipmi=k == 0,
                )
                self.ports[(port.switch_id, port.id)] = port
                ports.append(port)
            # The last operation of an integrated server is its diagnostics, finished.
            op = Op(self._id("op"), "diagnostics", now, 0.0, status="ok")
            server = Server(
                s.id,
                s.name,
                s.location_id,
                s.configuration,
                s.domain,
                s.is_new,
                s.maintenance_mode,
                s.power_status,
                op,
                ports,
            )
            self.servers[s.id] = server
            for key in (
                (s.location_id, None),
                (None, s.configuration),
                (s.location_id, s.configuration),
            ):
                self._server_index.setdefault(key, []).append(server)
            if s.owner_email is not None:
                owner = next(u for u in self.users.values() if u.email == s.owner_email)
                self.put_owner(server, owner)

    # ------------------------------------------------------------------ helpers

    def _id(self, kind: str) -> int:
        self._next[kind] += 1
        return self._next[kind]

    def _task(self) -> str:
        return str(self._id("op"))

    def now(self) -> float:
        """The simulated time."""
        return self.clock.now()

    def add_user(
        self, email: str, password: str, roles: Iterable[str], full_name: str = ""
    ) -> User:
        """Create a user directly (no request, no checks)."""
        user = User(self._id("user"), email, password, tuple(roles), full_name)
        self.users[user.id] = user
        self._users_by_email.setdefault(email, []).append(user)
        return user

    def put_owner(self, server: Server, user: User | None) -> None:
        """Make ``user`` the owner (None: no owner), keeping both sides in step."""
        if server.owner_id is not None:
            self.users[server.owner_id].servers.discard(server.id)
        server.owner_id = None if user is None else user.id
        server.owner_email = None if user is None else user.email
        if user is not None:
            user.servers.add(server.id)
        server.changed()

    def _query(self, kind: str, params: Mapping[str, str], fields: frozenset[str]) -> ListQuery:
        key = (kind, params.get("where", ""), params.get("orderby", ""), params.get("limit", ""))
        q = self._queries.get(key)
        if q is None:
            try:
                q = ListQuery.from_params(params, fields)
            except FilterError as exc:
                raise dci_error(
                    400, Code.BAD_VALUE, str(exc), {"field": exc.param, "value": exc.value}
                ) from None
            if len(self._queries) >= _QUERY_CACHE_SIZE:
                self._queries.clear()
            self._queries[key] = q
        return q

    def _page(
        self, kind: str, params: Mapping[str, str], fields: frozenset[str], rows: list[Any]
    ) -> dict[str, Any]:
        page, total = self._query(kind, params, fields).apply(rows)
        return {"list": page, "size": total}

    def server(self, server_id: int, viewer: User | None = None) -> Server:
        """The server, or 404 (also for a user who does not own it)."""
        server = self.servers.get(server_id)
        if server is None or (
            viewer is not None and not _is_admin(viewer) and server.owner_id != viewer.id
        ):
            raise not_found("server", server_id)
        return server

    # ------------------------------------------------------------------ time

    def settle(self) -> None:
        """Finish every operation whose end time has passed."""
        now = self.clock.now()
        while self._pending and self._pending[0][0] <= now:
            _, op_id, server_id = heapq.heappop(self._pending)
            server = self.servers[server_id]
            op = server.op
            if op.id != op_id or op.status != "running":
                continue
            op.status = "failed" if op.fail_reason else "ok"
            if op.kind == "install":
                if op.status == "ok":
                    server.power_status = "on"
                i = self._install_index[op.id]
                rec = self.installs[i]
                self.installs[i] = InstallRecord(
                    rec.server_id,
                    rec.owner_email,
                    rec.template_id,
                    rec.started_at,
                    op.status,
                    rec.operation_id,
                )
            elif op.kind == "power_on" or (op.kind == "power_reset"):
                server.power_status = "on"
            elif op.kind == "power_off":
                server.power_status = "off"
            server.changed()

    def _start_op(
        self,
        server: Server,
        kind: str,
        duration: float,
        fail_reason: str | None = None,
        template_id: int | None = None,
    ) -> Op:
        op = Op(
            self._id("op"), kind, self.clock.now(), duration, fail_reason, template_id=template_id
        )
        server.op = op
        server.changed()
        heapq.heappush(self._pending, (op.started_at + duration, op.id, server.id))
        return op

    def _refuse_if_busy(self, server: Server, action: str) -> None:
        if server.op.status == "running":
            raise conflict(
                f"server {server.id} has a running {server.op.kind} operation; cannot {action}",
                server_id=server.id,
                operation_id=server.op.id,
            )

    # ------------------------------------------------------------------ auth

    def login(self, email: str, password: str) -> dict[str, Any]:
        """``POST auth/v4/public/token``."""
        for user in self._users_by_email.get(email, []):
            if user.password == password:
                ttl = self.faults.token_ttl
                return self.sessions.issue(user, None if ttl is None else self.clock.now() + ttl)
        raise auth_error(401, Code.AUTH_BAD_CREDENTIALS, "Incorrect email or password")

    def authenticate(self, value: str | None) -> tuple[Token, User]:
        """The session for a token value; ``LookupError`` means answer 401."""
        token = self.sessions.check(value)
        user = self.users.get(token.user_id)
        if user is None:
            raise LookupError("user deleted")
        return token, user

    # ------------------------------------------------------------------ catalogue

    def list_locations(self, params: Mapping[str, str]) -> dict[str, Any]:
        rows = [{"id": i, "name": n} for i, n in sorted(self.locations.items())]
        return self._page("location", params, LOCATION_FIELDS, rows)

    def list_templates(self, params: Mapping[str, str]) -> dict[str, Any]:
        rows = [dict(t) for t in self.templates.values()]
        return self._page("os_template", params, TEMPLATE_FIELDS, rows)

    def list_pools(self, params: Mapping[str, str]) -> dict[str, Any]:
        return self._page("ippool", params, POOL_FIELDS, self.addresses.rows())

    # ------------------------------------------------------------------ servers

    def _server_candidates(self, equalities: Mapping[str, Any]) -> Iterable[Server]:
        """Servers that can match a query with these top-level equalities."""
        ident = equalities.get("id")
        if type(ident) is int:
            server = self.servers.get(ident)
            return [] if server is None else [server]
        loc = equalities.get("location_id")
        cfg = equalities.get("configuration")
        key = (loc if type(loc) is int else None, cfg if type(cfg) is str else None)
        if key == (None, None):
            return self.servers.values()
        return self._server_index.get(key, [])

    def list_servers(self, params: Mapping[str, str], viewer: User) -> dict[str, Any]:
        query = self._query("server", params, SERVER_FIELDS)
        if _is_admin(viewer):
            rows = [s.filter_row() for s in self._server_candidates(query.equalities)]
        else:
            rows = [self.servers[i].filter_row() for i in sorted(viewer.servers)]
        page, total = query.apply(rows)
        now = self.clock.now()
        return {"list": [r["_server"].to_json(now) for r in page], "size": total}

    def get_server(self, server_id: int, viewer: User) -> dict[str, Any]:
        return self.server(server_id, viewer).to_json(self.clock.now())

    def configurations(self, params: Mapping[str, str]) -> dict[str, Any]:
        counts: dict[str, int] = {}
        query = self._query("server", {"where": params.get("where", "")}, SERVER_FIELDS)
        rows = [s.filter_row() for s in self._server_candidates(query.equalities)]
        matched, _ = query.apply(rows)
        for s in self.servers.values():
            counts.setdefault(s.configuration, 0)
        for row in matched:
            s = row["_server"]
            if _is_free(s):
                counts[s.configuration] += 1
        return {
            "list": [
                {"configuration": c, "free_server_count": n} for c, n in sorted(counts.items())
            ]
        }

    def set_owner(self, server_id: int, owner_id: int | None) -> dict[str, Any]:
        server = self.server(server_id)
        if owner_id is None:
            self.put_owner(server, None)
            return {"id": server.id, "task": self._task()}
        user = self.users.get(owner_id)
        if user is None:
            raise bad_value("owner", owner_id, f"no user with id {owner_id}")
        if (
            server.owner_id is None
            and self.faults.outsider_rate > 0
            and FaultDice.roll(self.dice.outsider, self.faults.outsider_rate)
        ):
            n = sum(1 for u in self.users.values() if u.email.endswith("@outsider.invalid"))
            outsider = self.add_user(f"outsider-{n + 1}@outsider.invalid", "-", (USER_ROLE,))
            self.put_owner(server, outsider)
        if server.owner_id not in (None, user.id) and self.conditional_owner:
            raise conflict(
                f"server {server.id} already has an owner",
                server_id=server.id,
                owner_email=server.owner_email,
            )
        self.put_owner(server, user)
        return {"id": server.id, "task": self._task()}

    def install(self, server_id: int, template_id: int, viewer: User) -> dict[str, Any]:
        server = self.server(server_id, viewer)
        template = self.templates.get(template_id)
        if template is None or template["location_id"] != server.location_id:
            raise bad_value(
                "os_template",
                template_id,
                f"no OS template {template_id} in location {server.location_id}",
            )
        self._refuse_if_busy(server, "reinstall")
        reason = None
        if server.id in self.faults.install_failure_servers:
            reason = f"OS installation of {template['name']} failed on server {server.id}"
        elif self.faults.install_failure_rate > 0 and FaultDice.roll(
            self.dice.install, self.faults.install_failure_rate
        ):
            reason = f"OS installation of {template['name']} failed: installer did not report"
        server.os_template = {
            "id": template["id"],
            "name": template["name"],
            "tags": list(template["tags"]),
        }
        op = self._start_op(server, "install", self.install_duration, reason, template_id)
        self._install_index[op.id] = len(self.installs)
        self.installs.append(
            InstallRecord(
                server.id, server.owner_email, template_id, op.started_at, "running", op.id
            )
        )
        self.settle()
        return {"id": server.id, "task": str(op.id)}

    def power(self, server_id: int, action: str, viewer: User) -> dict[str, Any]:
        server = self.server(server_id, viewer)
        self._refuse_if_busy(server, action)
        status = server.power_status
        if action == "power_on" and status not in ("off", "unknown"):
            raise conflict(f"server {server.id} is already powered on", power_status=status)
        if action == "power_off" and status != "on":
            raise conflict(f"server {server.id} is not powered on", power_status=status)
        op = self._start_op(server, action, self.power_duration)
        self.settle()
        return {"id": server.id, "task": str(op.id)}

    # ------------------------------------------------------------------ switches

    def list_ports(self, switch_id: int, params: Mapping[str, str]) -> dict[str, Any]:
        if switch_id not in self.switches:
            raise not_found("switch", switch_id)
        rows = [p.port_json() for (sw, _), p in self.ports.items() if sw == switch_id]
        return self._page("port", params, PORT_FIELDS, rows)

    def set_port(self, switch_id: int, port_id: int, up: bool) -> dict[str, Any]:
        port = self.ports.get((switch_id, port_id))
        if port is None:
            raise not_found("switch port", f"{switch_id}/{port_id}")
        port.admin_status = "up" if up else "down"
        if port.server_id is not None:
            self.servers[port.server_id].changed()
        return {"id": port.id}

    # ------------------------------------------------------------------ IPs

    def assign_ips(self, server_id: int, count: int, pool_ids: list[int] | None) -> dict[str, Any]:
        server = self.server(server_id)
        server.ips.extend(self.addresses.take(server.id, server.location_id, count, pool_ids))
        server.changed()
        return {"id": server.id, "task": self._task()}

    def release_ip(self, ip_id: int) -> dict[str, Any]:
        ip = self.addresses.give_back(ip_id)
        server = self.servers[ip.server_id]
        server.ips = [i for i in server.ips if i.id != ip_id]
        server.changed()
        return {"id": ip_id, "task": self._task()}

    # ------------------------------------------------------------------ users

    def _user_json(self, user: User) -> dict[str, Any]:
        return {
            "id": user.id,
            "email": user.email,
            "server_count": len(user.servers),
            "roles": roles_text(user.roles),
            "vlans_per_user": _VLANS_PER_USER,
            "full_name": user.full_name,
            "state": "active",
        }

    def list_users(self, params: Mapping[str, str]) -> dict[str, Any]:
        query = self._query("user", params, USER_FIELDS)
        email, ident = query.equalities.get("email"), query.equalities.get("id")
        users: Iterable[User] = self.users.values()
        if type(email) is str:
            users = self._users_by_email.get(email, [])
        elif type(ident) is int:
            users = [self.users[ident]] if ident in self.users else []
        page, total = query.apply([self._user_json(u) for u in users])
        return {"list": page, "size": total}

    def create_user(
        self, email: str, password: str, role: str, full_name: str, phone: str
    ) -> dict[str, Any]:
        if role not in _ROLES:
            raise bad_value("role", role, f"must be one of {', '.join(_ROLES)}")
        if self.unique_user_emails and any(u.email == email for u in self.users.values()):
            raise conflict(f"a user with email {email!r} already exists", email=email)
        user = self.add_user(email, password, (role,), full_name)
        user.phone_number = phone
        return {"id": user.id}

    def delete_user(self, user_id: int) -> dict[str, Any]:
        user = self.users.get(user_id)
        if user is None:
            raise not_found("user", user_id)
        if user.servers:
            raise conflict(
                f"user {user_id} owns servers and cannot be deleted",
                user_id=user_id,
                server_ids=sorted(user.servers),
            )
        if user.id == self.admin.id:
            raise conflict("the administrator cannot be deleted", user_id=user_id)
        del self.users[user_id]
        self._users_by_email[user.email].remove(user)
        self.sessions.revoke_user(user_id)
        return {"id": user_id}

    # ------------------------------------------------------------------ ground truth

    def record(
        self,
        method: str,
        route: str,
        status: int,
        lost: bool = False,
        query: Mapping[str, str] | None = None,
    ) -> None:
        self.requests.append(
            RequestRecord(self.clock.now(), method, route, status, lost, query or {})
        )

    def snapshot(self) -> SimulatorState:
        self.settle()
        servers = {}
        for s in self.servers.values():
            servers[s.id] = ServerState(
                id=s.id,
                name=s.name,
                location_id=s.location_id,
                configuration=s.configuration,
                owner_id=s.owner_id,
                owner_email=s.owner_email,
                is_new=s.is_new,
                maintenance_mode=s.maintenance_mode,
                power_status=s.power_status,
                operation_id=s.op.id,
                operation_kind=s.op.kind,
                operation_status=s.op.status,
                os_template_id=None if s.os_template is None else s.os_template["id"],
                ports=tuple(
                    PortState(p.switch_id, p.id, p.admin_status, p.is_ipmi) for p in s.ports
                ),
                ips=tuple(ip.address for ip in s.ips),
            )
        users = {
            u.id: UserState(u.id, u.email, u.roles, u.full_name, tuple(sorted(u.servers)))
            for u in self.users.values()
        }
        return SimulatorState(
            now=self.clock.now(),
            servers=servers,
            users=users,
            installs=tuple(self.installs),
            requests=tuple(self.requests),
        )


def _is_admin(user: User) -> bool:
    return ADMIN_ROLE in user.roles


def _is_free(server: Server) -> bool:
    return (
        server.owner_id is None
        and not server.is_new
        and server.op.status in ("ok", "canceled")
        and not server.maintenance_mode
    )


def unauthorized(auth_service: bool) -> ApiError:
    """401 in the envelope of the service that was called."""
    if auth_service:
        return auth_error(401, Code.AUTH_BAD_TOKEN, "Provided token was incorrect or expired")
    return dci_error(401, Code.UNAUTHORIZED, "Unauthorized")
