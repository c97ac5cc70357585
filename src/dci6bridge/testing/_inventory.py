"""What a simulated DCImanager starts with: locations, servers, OS templates, IP pools,
users. Built from presets (:meth:`Inventory.preset`) or read from JSON."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from dci6bridge.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIGURATIONS",
    "DEFAULT_OS_TEMPLATES",
    "Inventory",
    "IpPoolSpec",
    "LocationSpec",
    "OsTemplateSpec",
    "ServerSpec",
    "UserSpec",
]

DEFAULT_CONFIGURATIONS: tuple[str, ...] = (
    "E3-1230v6-64Gb-2x480SSD",
    "E-2146G-64Gb-1920SSD-3840SSD",
    "i9-9900K-64Gb-2x1024NVMe",
)
DEFAULT_OS_TEMPLATES: tuple[str, ...] = ("Ubuntu 22.04", "Debian 12", "AlmaLinux 9")
_POWER = ("on", "off", "unknown")


@attrs.frozen
class LocationSpec:
    """A location (data center): ``id`` and ``name``."""

    id: int
    name: str


@attrs.frozen
class ServerSpec:
    """A server at start. ``data_ports`` is 1 or 2; every server also has one IPMI port."""

    id: int
    name: str
    location_id: int
    configuration: str
    is_new: bool = False
    maintenance_mode: bool = False
    power_status: str = "on"
    data_ports: int = 2
    owner_email: str | None = None
    domain: str = ""


@attrs.frozen
class OsTemplateSpec:
    """An OS template available in one location."""

    id: int
    name: str
    location_id: int
    tags: tuple[str, ...] = ()


@attrs.frozen
class IpPoolSpec:
    """An IPv4 pool: its addresses are handed out lowest first."""

    id: int
    name: str
    network: str
    gateway: str
    addresses: tuple[str, ...]
    location_id: int | None = None


@attrs.frozen
class UserSpec:
    """A user present at start (besides the administrator)."""

    email: str
    password: str = "user-password"
    roles: tuple[str, ...] = ("@user",)
    full_name: str = ""


def _pool(pool_id: int, name: str, location_id: int | None, size: int) -> IpPoolSpec:
    # 10.<pool>.0.0/16 leaves room for 65,533 addresses after the gateway.
    net = ipaddress.ip_network(f"10.{pool_id % 256}.0.0/16")
    hosts = net.hosts()
    gateway = str(next(hosts))
    addresses = tuple(str(next(hosts)) for _ in range(size))
    return IpPoolSpec(pool_id, name, str(net), gateway, addresses, location_id)


@attrs.frozen
class Inventory:
    """Everything the simulated DCImanager holds when it starts."""

    locations: tuple[LocationSpec, ...] = ()
    servers: tuple[ServerSpec, ...] = ()
    os_templates: tuple[OsTemplateSpec, ...] = ()
    ip_pools: tuple[IpPoolSpec, ...] = ()
    users: tuple[UserSpec, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Every inconsistency, each naming the item and the bad value."""
        out: list[str] = []
        loc_ids = [loc.id for loc in self.locations]
        for kind, ids in (
            ("locations", loc_ids),
            ("servers", [s.id for s in self.servers]),
            ("os_templates", [t.id for t in self.os_templates]),
            ("ip_pools", [p.id for p in self.ip_pools]),
        ):
            seen: set[int] = set()
            for i, ident in enumerate(ids):
                if ident in seen:
                    out.append(f"{kind}[{i}].id: duplicate id {ident!r}")
                seen.add(ident)
        known = set(loc_ids)
        for i, s in enumerate(self.servers):
            if s.location_id not in known:
                out.append(f"servers[{i}].location_id: {s.location_id!r} is not a location id")
            if s.power_status not in _POWER:
                out.append(f"servers[{i}].power_status: {s.power_status!r} is not one of {_POWER}")
            if s.data_ports not in (1, 2):
                out.append(f"servers[{i}].data_ports: must be 1 or 2, got {s.data_ports!r}")
            if s.owner_email is not None and s.owner_email not in {u.email for u in self.users}:
                out.append(f"servers[{i}].owner_email: {s.owner_email!r} is not in users")
        for i, t in enumerate(self.os_templates):
            if t.location_id not in known:
                out.append(f"os_templates[{i}].location_id: {t.location_id!r} is not a location id")
        for i, p in enumerate(self.ip_pools):
            if p.location_id is not None and p.location_id not in known:
                out.append(f"ip_pools[{i}].location_id: {p.location_id!r} is not a location id")
        return out

    @classmethod
    def preset(
        cls,
        *,
        locations: int = 2,
        servers_per_location: int = 20,
        configurations: Sequence[str] = DEFAULT_CONFIGURATIONS,
        os_templates: Sequence[str] = DEFAULT_OS_TEMPLATES,
        ip_pools: int = 1,
        ips_per_pool: int | None = None,
        users: Sequence[UserSpec] = (),
    ) -> Inventory:
        """A generated inventory.

        Locations get ids from 1 and names ``"Location N"``; each has
        ``servers_per_location`` servers whose configurations cycle through
        ``configurations`` (ids numbered across locations from 1, names
        ``srv-<location>-<n>``, one data port on odd ids, two on even), a copy of every
        OS template, and ``ip_pools`` pools of ``ips_per_pool`` addresses (default: two
        per server).
        """
        problems = []
        if locations < 0:
            problems.append(f"locations: must be >= 0, got {locations!r}")
        if servers_per_location < 0:
            problems.append(f"servers_per_location: must be >= 0, got {servers_per_location!r}")
        if not configurations and servers_per_location:
            problems.append("configurations: need at least one configuration")
        if ip_pools < 0:
            problems.append(f"ip_pools: must be >= 0, got {ip_pools!r}")
        size = 2 * servers_per_location if ips_per_pool is None else ips_per_pool
        if not 0 <= size <= 65_533:
            problems.append(f"ips_per_pool: must be in 0..65533, got {ips_per_pool!r}")
        if problems:
            raise ConfigError(problems)
        locs: list[LocationSpec] = []
        servers: list[ServerSpec] = []
        templates: list[OsTemplateSpec] = []
        pools: list[IpPoolSpec] = []
        for loc in range(1, locations + 1):
            locs.append(LocationSpec(loc, f"Location {loc}"))
            for n in range(servers_per_location):
                sid = len(servers) + 1
                cfg = configurations[n % len(configurations)]
                servers.append(
                    ServerSpec(sid, f"srv-{loc}-{n + 1:03d}", loc, cfg, data_ports=2 - sid % 2)
                )
            for name in os_templates:
                tags = ("linux",) if name.split()[0].lower() != "windows" else ("windows",)
                templates.append(OsTemplateSpec(len(templates) + 1, name, loc, tags))
            for k in range(ip_pools):
                pid = len(pools) + 1
                pools.append(_pool(pid, f"public-{loc}-{k + 1}", loc, size))
        return cls(tuple(locs), tuple(servers), tuple(templates), tuple(pools), tuple(users))

    # ------------------------------------------------------------------ JSON

    @classmethod
    def from_json(cls, data: Any) -> Inventory:
        """Read the JSON form (see ``examples/inventory.json``).

        Either the preset form — ``{"locations": 2, "servers_per_location": 20,
        "configurations": [...], "os_templates": [...], "ip_pools": 1,
        "ips_per_pool": 64, "users": [...]}`` — or the explicit form, where
        ``locations``, ``servers``, ``os_templates``, ``ip_pools`` and ``users`` are
        lists of objects with the fields of :class:`LocationSpec`, :class:`ServerSpec`,
        :class:`OsTemplateSpec`, :class:`IpPoolSpec` (``size`` instead of
        ``addresses`` generates them) and :class:`UserSpec`.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"inventory: expected a JSON object, got {type(data).__name__}")
        users = tuple(
            _build(UserSpec, u, f"users[{i}]") for i, u in enumerate(_list(data, "users"))
        )
        if not isinstance(data.get("locations", 0), list):
            preset_keys = {
                "locations",
                "servers_per_location",
                "configurations",
                "os_templates",
                "ip_pools",
                "ips_per_pool",
            }
            unknown = sorted(set(data) - preset_keys - {"users"})
            if unknown:
                raise ConfigError(
                    [f"inventory.{k}: unknown key in the preset form" for k in unknown]
                )
            kwargs = {k: data[k] for k in preset_keys if k in data}
            for key in ("configurations", "os_templates"):
                if key in kwargs:
                    kwargs[key] = tuple(kwargs[key])
            try:
                return cls.preset(users=users, **kwargs)
            except TypeError as exc:
                raise ConfigError(f"inventory: {exc}") from None
        known = {"locations", "servers", "os_templates", "ip_pools", "users"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError([f"inventory.{k}: unknown key" for k in unknown])
        pools = []
        for i, raw in enumerate(_list(data, "ip_pools")):
            if isinstance(raw, Mapping) and "size" in raw and "addresses" not in raw:
                size = raw["size"]
                if not isinstance(size, int) or not 0 <= size <= 65_533:
                    raise ConfigError(f"ip_pools[{i}].size: must be 0..65533, got {size!r}")
                base = _pool(int(raw.get("id", i + 1)), str(raw.get("name", "")), None, size)
                raw = {
                    "network": base.network,
                    "gateway": base.gateway,
                    **{k: v for k, v in raw.items() if k != "size"},
                    "addresses": list(base.addresses),
                }
            pools.append(_build(IpPoolSpec, raw, f"ip_pools[{i}]"))
        return cls(
            locations=tuple(
                _build(LocationSpec, x, f"locations[{i}]")
                for i, x in enumerate(_list(data, "locations"))
            ),
            servers=tuple(
                _build(ServerSpec, x, f"servers[{i}]") for i, x in enumerate(_list(data, "servers"))
            ),
            os_templates=tuple(
                _build(OsTemplateSpec, x, f"os_templates[{i}]")
                for i, x in enumerate(_list(data, "os_templates"))
            ),
            ip_pools=tuple(pools),
            users=users,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Inventory:
        """Read a JSON inventory file; errors name the file and the bad item."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        try:
            return cls.from_json(data)
        except ConfigError as exc:
            raise ConfigError([f"{path}: {p}" for p in exc.problems]) from None

    def to_json(self) -> dict[str, Any]:
        """The explicit JSON form (round-trips through :meth:`from_json`)."""
        return {
            "locations": [attrs.asdict(x) for x in self.locations],
            "servers": [attrs.asdict(x) for x in self.servers],
            "os_templates": [attrs.asdict(x) | {"tags": list(x.tags)} for x in self.os_templates],
            "ip_pools": [attrs.asdict(x) | {"addresses": list(x.addresses)} for x in self.ip_pools],
            "users": [attrs.asdict(x) | {"roles": list(x.roles)} for x in self.users],
        }


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
    return value


def _build(cls: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected an object, got {raw!r}")
    fields = {f.name: f for f in attrs.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    problems = [f"{where}.{k}: unknown field" for k in unknown]
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is attrs.NOTHING:
                problems.append(f"{where}.{name}: required")
            continue
        value = raw[name]
        problem = _check_type(f.type, value)
        if problem:
            problems.append(f"{where}.{name}: {problem}, got {value!r}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    if problems:
        raise ConfigError(problems)
    return cls(**kwargs)


def _check_type(annotation: Any, value: Any) -> str | None:
    text = str(annotation)
    if text.startswith("tuple"):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "expected a list of strings"
    nullable = "None" in text
    if value is None:
        return None if nullable else "must not be null"
    if text.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "expected an integer"
    if text.startswith("bool"):
        return None if isinstance(value, bool) else "expected true or false"
    if text.startswith("str"):
        return None if isinstance(value, str) else "expected a string"
    return None
