"""Request handling shared by the in-process transport and the HTTP server.

Paths come from the one route table, :data:`dci6bridge.client._routes.ROUTES`, so the
simulator answers exactly the routes the client calls. :meth:`App.handle` turns one
request into a :class:`Reply`: it applies faults (503 episodes, lost answers, latency),
checks the session, validates the body, runs the world's rule and logs the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

import attrs

from dci6bridge.client._routes import ROUTES, Route

from ._clock import parse_timestamp
from ._errors import ApiError, Code, auth_error, dci_error, not_found
from ._faults import FaultDice
from ._records import Token, User
from ._validate import int_list, opt_int, opt_str, req_int, req_str, str_list
from ._world import ADMIN_ROLE, USER_ROLE, World, unauthorized

__all__ = ["App", "Reply"]


@attrs.frozen
class Reply:
    """One answer: ``status`` and JSON ``body``; ``lost`` means "apply, don't answer";
    ``delay`` is the injected latency in seconds."""

    status: int
    body: Any
    route: str
    lost: bool = False
    delay: float = 0.0


@attrs.frozen
class _Call:
    route: str
    params: Mapping[str, int | str]
    query: Mapping[str, str]
    body: Mapping[str, Any]
    token: Token | None
    user: User | None

    @property
    def viewer(self) -> User:
        assert self.user is not None
        return self.user


_ADMIN_ONLY = frozenset(
    {
        "servers.configurations",
        "servers.set_owner",
        "servers.release_owner",
        "switches.ports",
        "switches.port_on",
        "switches.port_off",
        "ips.assign",
        "ips.release",
        "ips.pools",
        "users.list",
        "users.create",
        "users.delete",
    }
)
_NO_SESSION = frozenset({"auth.login"})
_CREATED = frozenset({"auth.login", "auth.create_token"})
_OWNER = ROUTES["servers.set_owner"]
_RELEASE = ROUTES["servers.release_owner"]
#: Routes that share a method and path with another, and how the body picks one.
_BY_BODY: Mapping[str, Callable[[Mapping[str, Any]], str]] = (
    {_OWNER.name: lambda body: _RELEASE.name if body.get("owner", 0) is None else _OWNER.name}
    if (_OWNER.method, _OWNER.path) == (_RELEASE.method, _RELEASE.path)
    else {}
)
_INT_PARAMS = frozenset({"server_id", "switch_id", "port_id", "ip_id", "user_id"})


def _compile(route: Route) -> re.Pattern[str]:
    pattern = re.escape(route.path)
    for name in route.params:
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
    return re.compile(pattern)


class App:
    """The simulated platform behind one URL prefix."""

    def __init__(self, world: World, api_prefix: str = "/api") -> None:
        self.world = world
        self.prefix = "/" + api_prefix.strip("/") if api_prefix.strip("/") else ""
        # Literal paths first, so ``server/configuration`` is not read as a server id.
        # Routes sharing a method and path (assign and release owner) match as the
        # first; :data:`_BY_BODY` then tells them apart by the body.
        routes = sorted(ROUTES.values(), key=lambda r: len(r.params))
        seen: set[tuple[str, str]] = set()
        self._routes = []
        for r in routes:
            if (r.method, r.path) not in seen:
                seen.add((r.method, r.path))
                self._routes.append((r, _compile(r)))
        self._handlers: dict[str, Callable[[_Call], Any]] = {
            "auth.login": self._login,
            "auth.logout": self._logout,
            "auth.whoami": lambda c: world.sessions.whoami(_need(c.token), c.viewer),
            "auth.create_token": self._create_token,
            "locations.list": lambda c: world.list_locations(c.query),
            "servers.list": lambda c: world.list_servers(c.query, c.viewer),
            "servers.get": lambda c: world.get_server(_int(c, "server_id"), c.viewer),
            "servers.configurations": lambda c: world.configurations(c.query),
            "servers.set_owner": self._set_owner,
            "servers.release_owner": lambda c: world.set_owner(_int(c, "server_id"), None),
            "servers.install_os": self._install,
            "servers.power_on": lambda c: world.power(_int(c, "server_id"), "power_on", c.viewer),
            "servers.power_off": lambda c: world.power(_int(c, "server_id"), "power_off", c.viewer),
            "servers.power_reset": lambda c: world.power(
                _int(c, "server_id"), "power_reset", c.viewer
            ),
            "switches.ports": lambda c: world.list_ports(_int(c, "switch_id"), c.query),
            "switches.port_on": lambda c: world.set_port(
                _int(c, "switch_id"), _int(c, "port_id"), True
            ),
            "switches.port_off": lambda c: world.set_port(
                _int(c, "switch_id"), _int(c, "port_id"), False
            ),
            "ips.assign": self._assign_ips,
            "ips.release": lambda c: world.release_ip(_int(c, "ip_id")),
            "ips.pools": lambda c: world.list_pools(c.query),
            "os_templates.list": lambda c: world.list_templates(c.query),
            "users.list": lambda c: world.list_users(c.query),
            "users.create": self._create_user,
            "users.delete": lambda c: world.delete_user(_int(c, "user_id")),
        }
        missing = set(ROUTES) - set(self._handlers)
        if missing:  # pragma: no cover - guards the route table growing
            raise RuntimeError(f"simulator has no handler for routes {sorted(missing)}")

    # ------------------------------------------------------------------ entry

    def relative(self, path: str) -> str | None:
        """The path below the API prefix (no slashes at the ends), or None outside it."""
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix) + 1 :]
        return path.strip("/")

    def match(self, method: str, rel_path: str) -> tuple[Route | None, dict[str, str]]:
        """The route for a path below the prefix, and its path parameters."""
        for route, pattern in self._routes:
            if route.method != method:
                continue
            m = pattern.fullmatch(rel_path)
            if m is not None:
                return route, m.groupdict()
        return None, {}

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Reply:
        """Answer one request. ``headers`` keys must be lower-case."""
        world = self.world
        method = method.upper()
        rel_path = self.relative(path)
        route, raw_params = (None, {}) if rel_path is None else self.match(method, rel_path)
        name = route.name if route else "unknown"
        auth_service = rel_path is not None and rel_path.startswith("auth/")
        data: Mapping[str, Any] | ApiError = {}
        if route is not None:
            try:
                data = self._body(method, body, auth_service)
            except ApiError as exc:
                data = exc
            if not isinstance(data, ApiError) and name in _BY_BODY:
                name = _BY_BODY[name](data)
        with world.lock:
            world.settle()
            try:
                self._maybe_unavailable(name, auth_service)
                if route is None:
                    # Auth paths may carry a token value: never echo them.
                    shown = "auth/..." if auth_service else path
                    raise dci_error(
                        404, Code.HANDLER_NOT_FOUND, f"request handler not found: {method} {shown}"
                    )
                if isinstance(data, ApiError):
                    raise data
                token, user = (
                    (None, None) if name in _NO_SESSION else self._session(headers, auth_service)
                )
                if user is not None and name in _ADMIN_ONLY and ADMIN_ROLE not in user.roles:
                    raise dci_error(403, Code.UNAUTHORIZED, "Unauthorized")
                call = _Call(name, _params(raw_params), query, data, token, user)
                result = self._handlers[name](call)
                status = 201 if name in _CREATED else 200
            except ApiError as exc:
                status, result = exc.status, exc.body
            lost = self._maybe_lost(name)
            delay = self._latency()
            world.record(method, name, status, lost, None if auth_service else query)
        return Reply(status, result, name, lost, delay)

    # ------------------------------------------------------------------ faults

    def _maybe_unavailable(self, name: str, auth_service: bool) -> None:
        world, faults = self.world, self.world.faults
        hits = not faults.unavailable_routes or name in faults.unavailable_routes
        if not hits:
            return
        if world.unavailable_left == 0 and FaultDice.roll(
            world.dice.unavailable, faults.unavailable_rate
        ):
            world.unavailable_left = faults.unavailable_burst
        if world.unavailable_left > 0:
            world.unavailable_left -= 1
            if auth_service:
                raise auth_error(503, Code.UNAVAILABLE, "Unavailable")
            raise dci_error(503, Code.UNAVAILABLE, "Unavailable", {})

    def _maybe_lost(self, name: str) -> bool:
        faults = self.world.faults
        if faults.lost_response_routes and name not in faults.lost_response_routes:
            return False
        return FaultDice.roll(self.world.dice.lost, faults.lost_response_rate)

    def _latency(self) -> float:
        low, high = self.world.faults.latency_ms
        if high <= 0:
            return 0.0
        return self.world.dice.latency.uniform(low, high) / 1000.0

    # ------------------------------------------------------------------ plumbing

    def _body(self, method: str, body: bytes, auth_service: bool) -> Mapping[str, Any]:
        if method != "POST" or not body.strip():
            return {}
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            if auth_service:
                raise auth_error(400, Code.AUTH_BAD_FIELD, "Body must be a JSON object", "body")
            raise dci_error(
                400, Code.BAD_VALUE, "request body must be a JSON object", {"field": "body"}
            )
        return data

    def _session(self, headers: Mapping[str, str], auth_service: bool) -> tuple[Token, User]:
        value = headers.get("x-xsrf-token") or headers.get("isp-session")
        if not value and headers.get("cookie"):
            try:
                jar = SimpleCookie(headers["cookie"])
            except CookieError:
                jar = SimpleCookie()
            if "ses6" in jar:
                value = jar["ses6"].value
        try:
            return self.world.authenticate(value)
        except LookupError:
            raise unauthorized(auth_service) from None

    # ------------------------------------------------------------------ handlers with bodies

    def _login(self, call: _Call) -> Any:
        body = call.body
        for field in ("email", "password"):
            if not isinstance(body.get(field), str) or not body[field]:
                raise auth_error(400, Code.AUTH_BAD_FIELD, f"Field {field} is required", field)
        if "confirmed" in body and not isinstance(body["confirmed"], bool):
            raise auth_error(
                400, Code.AUTH_BAD_FIELD, "Field confirmed must be boolean", "confirmed"
            )
        return self.world.login(body["email"], body["password"])

    def _create_token(self, call: _Call) -> Any:
        body = call.body
        raw = body.get("expires_at")
        try:
            expires_at = parse_timestamp(raw) if isinstance(raw, str) else None
        except ValueError:
            expires_at = None
        if expires_at is None:
            raise auth_error(
                400,
                Code.AUTH_BAD_FIELD,
                "Field expires_at is required as 'YYYY-MM-DD HH:MM:SS'",
                "expires_at",
            )
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > 255:
            raise auth_error(
                400,
                Code.AUTH_BAD_FIELD,
                "Field description: a string of at most 255 characters",
                "description",
            )
        return self.world.sessions.issue(call.viewer, expires_at)

    def _logout(self, call: _Call) -> Any:
        self.world.sessions.revoke(str(call.params["token_id"]))
        return {}

    def _set_owner(self, call: _Call) -> Any:
        return self.world.set_owner(_int(call, "server_id"), req_int(call.body, "owner"))

    def _install(self, call: _Call) -> Any:
        body = call.body
        template = req_int(body, "os_template")
        req_str(body, "password", secret=True)
        opt_int(body, "recipe")
        params = body.get("recipe_params")
        if params is not None and not (
            isinstance(params, list)
            and all(isinstance(p, dict) and isinstance(p.get("name"), str) for p in params)
        ):
            raise dci_error(
                400,
                Code.BAD_VALUE,
                "invalid value of field 'recipe_params': a list of {name, value} objects",
                {"field": "recipe_params", "value": params},
            )
        str_list(body, "ssh_keys")
        opt_str(body, "send_email_mode")
        return self.world.install(_int(call, "server_id"), template, call.viewer)

    def _assign_ips(self, call: _Call) -> Any:
        count = req_int(call.body, "ipv4_number", minimum=1)
        pools = int_list(call.body, "ipv4_pool")
        return self.world.assign_ips(_int(call, "server_id"), count, pools)

    def _create_user(self, call: _Call) -> Any:
        body = call.body
        email = req_str(body, "email", max_len=255)
        if "@" not in email.strip("@"):
            raise dci_error(
                400,
                Code.BAD_VALUE,
                "invalid value of field 'email': not an email address",
                {"field": "email", "value": email},
            )
        password = req_str(body, "password", secret=True)
        role = opt_str(body, "role") or USER_ROLE
        full_name = opt_str(body, "full_name", max_len=255) or ""
        phone = opt_str(body, "phone_number", max_len=64) or ""
        return self.world.create_user(email, password, role, full_name, phone)


def _params(raw: Mapping[str, str]) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for key, value in raw.items():
        if key in _INT_PARAMS:
            if not value.isdigit():
                raise not_found(key.removesuffix("_id"), value)
            out[key] = int(value)
        else:
            out[key] = value
    return out


def _int(call: _Call, name: str) -> int:
    value = call.params[name]
    assert isinstance(value, int)
    return value


def _need(token: Token | None) -> Token:
    assert token is not None
    return token
