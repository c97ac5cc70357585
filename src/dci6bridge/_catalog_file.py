"""The catalog file: TOML (or any dict of the same shape) to :class:`Catalog` and back.

```toml
[[data_centers]]
name = "Amsterdam"
location_id = 3

[[modules]]
name = "dci-ams"
data_center = "Amsterdam"          # by name
url = "https://dci-ams.example.com"
username = "admin@example.com"
password_env = "DCI_AMS_PASSWORD"  # or password = "..." (not recommended)
department = "Support"

[[tariffs]]
name = "E3-64"
configuration = "E3-1230v6-64Gb-2x480SSD"
os_templates = ["Ubuntu 22.04"]
modules = ["dci-ams"]
```

Every entry is checked by its class, the references between entries by
:func:`~dci6bridge.domain.reference_problems`; all problems of the whole file come back in
one :class:`ConfigError`, with paths like ``modules[1].url``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ._validate import Problems, check_bool, check_name, show
from .domain import Catalog, DataCenter, ProcessingModule, Tariff, reference_problems
from .errors import ConfigError
from .secret import Secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["catalog_from_dict", "catalog_to_dict", "load_toml"]

_T = TypeVar("_T")

# Keys of each section; those mapped to a value are optional in the file and the value
# fills a *missing required* key so the rest of the entry can still be checked (the
# missing key itself is reported).
_DC_KEYS = {"name", "location_id", "dci6_managed", "sort"}
_DC_REQUIRED = {"name": "?"}
_MODULE_KEYS = {
    "name", "data_center", "url", "username", "password", "password_env", "password_omitted",
    "department", "sort", "enabled", "by_server_type", "verify_tls", "ca_bundle",
}  # fmt: skip
_MODULE_REQUIRED = {
    "name": "?",
    "url": "https://placeholder.invalid",
    "username": "placeholder@placeholder.invalid",
    "department": "?",
}
_TARIFF_KEYS = {
    "name", "configuration", "os_templates", "modules", "ipv4_count", "ip_pools", "recipes",
    "description",
}  # fmt: skip
_TARIFF_REQUIRED: dict[str, Any] = {
    "name": "?",
    "configuration": "?",
    "os_templates": ("?",),
    "modules": ("?",),
}
_PLACEHOLDER_DC = DataCenter(name="?", location_id=1)
_PLACEHOLDER_PASSWORD = Secret("?")


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a :class:`ConfigError` naming the file."""
    with path.open("rb") as f:
        try:
            data: dict[str, Any] = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return data


def _tables(data: Mapping[str, Any], key: str, p: Problems) -> list[Mapping[str, Any] | None]:
    """The entries of one section; a non-table entry is reported and kept as ``None`` so
    later entries keep their index."""
    raw = data.get(key, [])
    if not isinstance(raw, list):
        p.add(key, f"{show(raw)} is not an array of tables (write [[{key}]] sections)")
        return []
    entries: list[Mapping[str, Any] | None] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, Mapping):
            entries.append(entry)
        else:
            p.add(f"{key}[{i}]", f"{show(entry)} is not a table")
            entries.append(None)
    return entries


def _kwargs(
    entry: Mapping[str, Any],
    path: str,
    keys: Collection[str],
    required: Mapping[str, Any],
    p: Problems,
) -> dict[str, Any]:
    for key in entry:
        if key not in keys:
            p.add(f"{path}.{key}", f"unknown key (known: {', '.join(sorted(keys))})")
    kwargs = {k: v for k, v in entry.items() if k in keys}
    for key, placeholder in required.items():
        if key not in kwargs:
            p.add(f"{path}.{key}", "missing")
            kwargs[key] = placeholder
    return kwargs


def _build_section(
    entries: Sequence[Mapping[str, Any] | None],
    section: str,
    cls: type[_T],
    keys: Collection[str],
    required: Mapping[str, Any],
    p: Problems,
    prepare: Callable[[Mapping[str, Any], str, dict[str, Any]], None] | None = None,
) -> list[_T | None]:
    """Build every entry of a section; an entry with problems becomes ``None`` (its
    problems are in ``p``, re-rooted from ``ClassName.field`` to ``section[i].field``)."""
    built: list[_T | None] = []
    for i, entry in enumerate(entries):
        if entry is None:
            built.append(None)
            continue
        path = f"{section}[{i}]"
        kwargs = _kwargs(entry, path, keys, required, p)
        if prepare is not None:
            prepare(entry, path, kwargs)
        try:
            built.append(cls(**kwargs))
        except ConfigError as e:
            p.merge(e, old_prefix=cls.__name__, new_prefix=path)
            built.append(None)
    return built


def _password(
    entry: Mapping[str, Any], path: str, environ: Mapping[str, str], p: Problems
) -> tuple[Secret, str | None]:
    """The module's password and the variable it came from. Never echoes a value."""
    has_password = "password" in entry
    env: Any = entry.get("password_env")
    if has_password and env is not None:
        p.add(path, "give either password or password_env, not both")
        return _PLACEHOLDER_PASSWORD, None
    if has_password:
        value = entry["password"]
        if not isinstance(value, str):
            p.add(f"{path}.password", f"must be a string, not {type(value).__name__}")
            return _PLACEHOLDER_PASSWORD, None
        return Secret(value), None  # emptiness is the module's check
    if env is not None:
        problem = check_name(env)
        if problem is not None:
            p.add(f"{path}.password_env", problem)
            return _PLACEHOLDER_PASSWORD, None
        name = entry.get("name", "?")
        value = environ.get(env)
        if value is None:
            p.add(
                f"{path}.password_env",
                f"environment variable {env!r} is not set (password of module {show(name)})",
            )
            return _PLACEHOLDER_PASSWORD, env
        if not value:
            p.add(
                f"{path}.password_env",
                f"environment variable {env!r} is empty (password of module {show(name)})",
            )
            return _PLACEHOLDER_PASSWORD, env
        return Secret(value), env
    omitted = entry.get("password_omitted", False)
    p.add(f"{path}.password_omitted", check_bool(omitted))
    if omitted is True:
        p.add(
            f"{path}.password",
            "missing (this catalog was exported without secrets; set password_env)",
        )
    else:
        p.add(f"{path}.password", "missing (set password_env, or password)")
    return _PLACEHOLDER_PASSWORD, None


def catalog_from_dict(data: Mapping[str, Any], *, environ: Mapping[str, str]) -> Catalog:
    """See :meth:`Catalog.from_dict`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"catalog: {show(data)} is not a table")
    p = Problems()
    for key in data:
        if key not in ("data_centers", "modules", "tariffs"):
            p.add(key, "unknown section (known: data_centers, modules, tariffs)")
    dc_entries = _tables(data, "data_centers", p)
    module_entries = _tables(data, "modules", p)
    tariff_entries = _tables(data, "tariffs", p)

    def no_location_yet(entry: Mapping[str, Any], path: str, kwargs: dict[str, Any]) -> None:
        kwargs.setdefault("location_id", None)

    data_centers = _build_section(
        dc_entries, "data_centers", DataCenter, _DC_KEYS, _DC_REQUIRED, p, no_location_yet
    )
    dc_by_name = {dc.name: dc for dc in data_centers if dc is not None}

    def connect(entry: Mapping[str, Any], path: str, kwargs: dict[str, Any]) -> None:
        for key in ("password", "password_env", "password_omitted"):
            kwargs.pop(key, None)
        kwargs["password"], kwargs["password_env"] = _password(entry, path, environ, p)
        # An unknown data center is reported by reference_problems below; a placeholder
        # lets the rest of the entry be checked meanwhile.
        dc_name: Any = kwargs.get("data_center")
        if dc_name is None:
            p.add(f"{path}.data_center", "missing")
        elif not isinstance(dc_name, str):
            p.add(f"{path}.data_center", f"{show(dc_name)} is not a data center name")
        kwargs["data_center"] = (
            dc_by_name.get(dc_name, _PLACEHOLDER_DC)
            if isinstance(dc_name, str)
            else _PLACEHOLDER_DC
        )

    modules = _build_section(
        module_entries, "modules", ProcessingModule, _MODULE_KEYS, _MODULE_REQUIRED, p, connect
    )
    tariffs = _build_section(tariff_entries, "tariffs", Tariff, _TARIFF_KEYS, _TARIFF_REQUIRED, p)

    p.items.extend(
        reference_problems(
            [e.get("name") if e is not None else None for e in dc_entries],
            [
                (e.get("name"), e.get("data_center")) if e is not None else (None, None)
                for e in module_entries
            ],
            [
                (e.get("name"), e.get("modules")) if e is not None else (None, None)
                for e in tariff_entries
            ],
        )
    )
    p.raise_if_any()
    return Catalog(
        data_centers=[dc for dc in data_centers if dc is not None],
        modules=[m for m in modules if m is not None],
        tariffs=[t for t in tariffs if t is not None],
    )


def catalog_to_dict(catalog: Catalog) -> dict[str, Any]:
    """See :meth:`Catalog.to_dict`."""
    data_centers = []
    for dc in catalog.data_centers:
        entry: dict[str, Any] = {"name": dc.name}
        if dc.location_id is not None:
            entry["location_id"] = dc.location_id
        entry.update(dci6_managed=dc.dci6_managed, sort=dc.sort)
        data_centers.append(entry)
    modules = []
    for m in catalog.modules:
        entry = {
            "name": m.name,
            "data_center": m.data_center.name,
            "url": m.url,
            "username": m.username,
        }
        if m.password_env is not None:
            entry["password_env"] = m.password_env
        else:
            entry["password_omitted"] = True
        entry.update(
            department=m.department,
            sort=m.sort,
            enabled=m.enabled,
            by_server_type=m.by_server_type,
            verify_tls=m.verify_tls,
        )
        if m.ca_bundle is not None:
            entry["ca_bundle"] = m.ca_bundle
        modules.append(entry)
    tariffs = []
    for t in catalog.tariffs:
        tariffs.append(
            {
                "name": t.name,
                "configuration": t.configuration,
                "os_templates": list(t.os_templates),
                "modules": list(t.modules),
                "ipv4_count": t.ipv4_count,
                "ip_pools": list(t.ip_pools),
                "recipes": list(t.recipes),
                "description": t.description,
            }
        )
    return {"data_centers": data_centers, "modules": modules, "tariffs": tariffs}
