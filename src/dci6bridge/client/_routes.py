"""Every DCImanager 6 endpoint dci6bridge calls, in one table, with its evidence level.

Paths are relative to the API prefix (``/api`` by default, configurable on the client).
Several routes are *inferred* from the platform's style or from VMmanager 6: when one is
verified against a live instance's Swagger ("DCI back"), fix it here and only here — the
client, the simulator and the cassette tests all read this table.

Evidence levels (see ``reference/dci6-api.md``):

* ``documented``  — stated in the official DCImanager 6 documentation;
* ``vendor spec`` — an official ISPsystem OpenAPI file (auth v4, IPmanager 6);
* ``public code`` — seen in real client code calling DCImanager 6;
* ``VM6 analogy`` — exact in VMmanager 6 (same platform), applied by analogy;
* ``inferred``    — reasoned from naming and platform style; verify before relying on it.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Mapping
from urllib.parse import quote

import attrs

__all__ = ["ROUTES", "Evidence", "Route", "route"]


class Evidence(str, enum.Enum):
    """How sure we are that a route exists with this method, path and body."""

    DOCUMENTED = "documented"
    VENDOR_SPEC = "vendor spec"
    PUBLIC_CODE = "public code"
    VM6_ANALOGY = "VM6 analogy"
    INFERRED = "inferred"


@attrs.frozen
class Route:
    """One endpoint: ``method`` and a ``path`` template with ``{name}`` placeholders."""

    name: str
    method: str
    path: str
    evidence: Evidence
    note: str = ""
    _params: tuple[str, ...] = attrs.field(init=False, repr=False, eq=False)

    @_params.default
    def _parse_params(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.path) if f)

    @property
    def params(self) -> tuple[str, ...]:
        """The placeholder names in the path template, in order."""
        return self._params

    def format(self, **params: object) -> str:
        """The path with every placeholder filled (each value percent-encoded)."""
        try:
            return self.path.format(**{k: _segment(v) for k, v in params.items()})
        except KeyError:
            missing = sorted(set(self._params) - params.keys())
            raise KeyError(f"route {self.name!r} needs {missing}") from None


def _segment(value: object) -> str:
    # ids are ints on every hot path; they need no percent-encoding
    return str(value) if value.__class__ is int else quote(str(value), safe="")


_E = Evidence

# One route per entry, so the table reads as a table.
# fmt: off
_TABLE: tuple[Route, ...] = (
    # ------------------------------------------------------------------ auth v4
    Route("auth.login", "POST", "auth/v4/public/token", _E.VENDOR_SPEC,
          "201 {id, token, expires_at, confirmed}; public code accepts 200 too"),
    Route("auth.logout", "DELETE", "auth/v4/token/{token_id}", _E.VENDOR_SPEC,
          "takes the token id or value; we always send the id so the token stays out of URLs"),
    Route("auth.whoami", "GET", "auth/v4/whoami", _E.VENDOR_SPEC),
    Route("auth.create_token", "POST", "auth/v4/token", _E.VENDOR_SPEC,
          "long-lived integration token; body {expires_at, description}"),
    # ------------------------------------------------------------------ locations
    Route("locations.list", "GET", "dci/v3/location", _E.INFERRED,
          "item shape unknown; we read id and name"),
    # ------------------------------------------------------------------ servers
    Route("servers.list", "GET", "dci/v3/server", _E.DOCUMENTED,
          "where/orderby/limit; envelope {list, size} (size: public code)"),
    Route("servers.get", "GET", "dci/v3/server/{server_id}", _E.DOCUMENTED,
          "one server object, not wrapped; also used to poll operations"),
    Route("servers.configurations", "GET", "dci/v3/server/configuration", _E.DOCUMENTED,
          "{list: [{configuration, free_server_count}]}"),
    Route("servers.set_owner", "POST", "dci/v3/server/{server_id}/owner", _E.INFERRED,
          "body {owner: user_id}; VM6: POST /vm/v3/host/{id}/account {account}"),
    Route("servers.release_owner", "POST", "dci/v3/server/{server_id}/owner", _E.INFERRED,
          "body {owner: null}"),
    Route("servers.install_os", "POST", "dci/v3/server/{server_id}/reinstall", _E.VM6_ANALOGY,
          "body {os_template, password, recipe, recipe_params, ssh_keys (inferred), "
          "send_email_mode}"),
    Route("servers.power_on", "POST", "dci/v3/server/{server_id}/power_on", _E.PUBLIC_CODE,
          "command name documented; path from public code"),
    Route("servers.power_off", "POST", "dci/v3/server/{server_id}/power_off", _E.PUBLIC_CODE),
    Route("servers.power_reset", "POST", "dci/v3/server/{server_id}/power_reset",
          _E.PUBLIC_CODE),
    # ------------------------------------------------------------------ switches
    Route("switches.ports", "GET", "dci/v3/switch/{switch_id}/port", _E.PUBLIC_CODE),
    Route("switches.port_on", "POST", "dci/v3/switch/{switch_id}/port/{port_id}/on",
          _E.INFERRED, "DCI5 switch.port.on; read back switch_connection[].admin_status"),
    Route("switches.port_off", "POST", "dci/v3/switch/{switch_id}/port/{port_id}/off",
          _E.INFERRED, "DCI5 switch.port.off; read back switch_connection[].admin_status"),
    # ------------------------------------------------------------------ IPs
    Route("ips.assign", "POST", "dci/v3/server/{server_id}/ip", _E.VM6_ANALOGY,
          "body {ipv4_number, ipv4_pool: [pool_id]}; VM6 POST /vm/v3/host/{id}/ip"),
    Route("ips.release", "DELETE", "dci/v3/ip/{ip_id}", _E.VM6_ANALOGY,
          "VM6 DELETE /vm/v3/ip/{id}"),
    Route("ips.pools", "GET", "ip/v3/ippool", _E.VENDOR_SPEC),
    # ------------------------------------------------------------------ OS templates
    Route("os_templates.list", "GET", "dci/v3/os_template", _E.INFERRED,
          "VM6: GET /vm/v3/os; per location (filter location_id, inferred)"),
    # ------------------------------------------------------------------ users
    Route("users.list", "GET", "dci/v3/user", _E.DOCUMENTED,
          "find by email: where=email EQ '<email>' (inferred filter)"),
    Route("users.create", "POST", "dci/v3/user", _E.DOCUMENTED,
          "body {email, full_name, password, phone_number, role}; role @user: VM6 analogy"),
    Route("users.delete", "DELETE", "dci/v3/user/{user_id}", _E.VM6_ANALOGY,
          "refused while the user owns servers (documented, UI)"),
)
# fmt: on

ROUTES: Mapping[str, Route] = {r.name: r for r in _TABLE}
"""Every route by name, e.g. ``ROUTES["servers.get"]``."""


def route(name: str) -> Route:
    """The route called ``name``; raises ``KeyError`` naming it if there is none."""
    try:
        return ROUTES[name]
    except KeyError:
        raise KeyError(f"no route named {name!r}") from None
