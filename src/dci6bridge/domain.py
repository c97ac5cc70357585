"""What the billing side sells and where: data centers, processing modules, tariffs, orders.

These mirror BILLmanager's objects for its "DCImanager 6" processing module: a
:class:`DataCenter` is bound to one DCImanager location, a :class:`ProcessingModule` is the
connection to one DCImanager 6 server serving one data center, a :class:`Tariff` sells one
DCImanager server configuration through one or more modules, and an :class:`Order` is one
customer's request for one server. A :class:`Catalog` holds the first three and checks
that they fit together; it loads from a TOML file (:meth:`Catalog.from_toml`).

Every object validates itself on construction and raises one
:class:`~dci6bridge.errors.ConfigError` listing every bad field with its value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._validate import (
    Problems,
    check_bool,
    check_email,
    check_hostname,
    check_int,
    check_name,
    check_names,
    check_ssh_key,
    check_url,
    normalise_url,
    show,
    to_tuple,
)
from .errors import ConfigError
from .secret import Secret

__all__ = ["Catalog", "DataCenter", "Order", "ProcessingModule", "Tariff"]


def _to_names(value: Iterable[str]) -> tuple[str, ...]:
    result: tuple[str, ...] = to_tuple(value)
    return result


def _to_ids(value: Iterable[int]) -> tuple[int, ...]:
    result: tuple[int, ...] = to_tuple(value)
    return result


def _to_secret(value: str | Secret) -> Secret:
    # Anything else is passed through untouched so that the field check can report it as
    # a ConfigError instead of a TypeError from deep inside attrs.
    raw: Any = value
    result: Secret = Secret(raw) if isinstance(raw, (str, Secret)) else raw
    return result


def _to_optional_path(value: str | os.PathLike[str] | None) -> str | None:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _name_of(value: Any) -> Any:
    # Objects given where a name is stored (``Order(tariff=Tariff(...))``) become names.
    return value.name if isinstance(value, (Tariff, DataCenter)) else value


def _tariff_name(value: str | Tariff) -> str:
    name: str = _name_of(value)
    return name


def _data_center_name(value: str | DataCenter | None) -> str | None:
    name: str | None = _name_of(value)
    return name


# --------------------------------------------------------------------------- data center


@attrs.frozen
class DataCenter:
    """A data center as the billing side knows it (BILLmanager *Integration → Data centers*).

    Attributes:
        name: the name shown to customers; unique in a catalog.
        location_id: the DCImanager 6 Location ID servers are taken from (BILLmanager's
            "External data center id"). Required, a positive integer, when
            ``dci6_managed`` is true; may be ``None`` otherwise.
        dci6_managed: whether DCImanager 6 manages this data center. A data center set up
            for DCImanager 5 does not work with DCImanager 6: modules in a data center that
            is not DCImanager-6-managed are never selected.
        sort: display and tie-break order (lower first).
    """

    name: str
    location_id: int | None
    dci6_managed: bool = True
    sort: int = 0

    def __attrs_post_init__(self) -> None:
        p = Problems()
        p.add("DataCenter.name", check_name(self.name))
        p.add("DataCenter.dci6_managed", check_bool(self.dci6_managed))
        if self.location_id is not None or self.dci6_managed is True:
            problem = check_int(self.location_id, minimum=1)
            if problem is not None and self.dci6_managed is True:
                problem += " (a DCImanager 6 managed data center needs its Location ID)"
            p.add("DataCenter.location_id", problem)
        p.add("DataCenter.sort", check_int(self.sort))
        p.raise_if_any()

    @property
    def selectable(self) -> bool:
        """DCImanager-6-managed and bound to a Location ID: modules here can be selected."""
        return self.dci6_managed and self.location_id is not None


# --------------------------------------------------------------------------- module


@attrs.frozen
class ProcessingModule:
    """The connection to one DCImanager 6 server for one data center (BILLmanager
    *Integration → Processing modules → DCImanager 6*).

    Attributes:
        name: unique in a catalog.
        data_center: the :class:`DataCenter` (DCImanager location) this module serves.
        url: the domain name or public address of the DCImanager 6 server, ``http://`` or
            ``https://`` (trailing slashes are dropped). Credentials in the URL are refused.
        username: the e-mail address of a DCImanager 6 administrator.
        password: that administrator's password, held as a :class:`~dci6bridge.Secret`
            (a plain ``str`` is wrapped); ``repr`` and ``str`` show ``'***'``.
        department: the department that receives the tasks this module creates.
        sort: priority; when several modules can serve an order the **lowest** wins.
        enabled: a disabled module is never selected.
        by_server_type: when false and no free server has the tariff's configuration,
            the orchestrator takes the most similar server and creates a task for the
            department to finish the build by hand (as BILLmanager does).
        verify_tls: check the server's TLS certificate.
        ca_bundle: path of a CA bundle to verify it against (implies ``verify_tls``).
        password_env: the environment variable the password was read from, if it came
            from one (set by :meth:`Catalog.from_dict`); :meth:`Catalog.to_dict` writes it
            back instead of the password.
    """

    name: str
    data_center: DataCenter
    url: str = attrs.field(converter=normalise_url)
    username: str
    password: Secret = attrs.field(converter=_to_secret)
    department: str
    sort: int = 0
    enabled: bool = True
    by_server_type: bool = True
    verify_tls: bool = True
    ca_bundle: str | None = attrs.field(default=None, converter=_to_optional_path)
    # Where the password came from, not what the module is: not part of equality.
    password_env: str | None = attrs.field(default=None, kw_only=True, eq=False)

    def __attrs_post_init__(self) -> None:
        p = Problems()
        p.add("ProcessingModule.name", check_name(self.name))
        dc: Any = self.data_center
        if not isinstance(dc, DataCenter):
            p.add("ProcessingModule.data_center", f"{show(dc)} is not a DataCenter")
        p.add("ProcessingModule.url", check_url(self.url))
        p.add("ProcessingModule.username", check_email(self.username))
        password: Any = self.password
        if not isinstance(password, Secret):
            p.add("ProcessingModule.password", f"must be a string, not {type(password).__name__}")
        elif not password:
            p.add("ProcessingModule.password", "is empty")
        p.add("ProcessingModule.department", check_name(self.department))
        p.add("ProcessingModule.sort", check_int(self.sort))
        for field in ("enabled", "by_server_type", "verify_tls"):
            p.add(f"ProcessingModule.{field}", check_bool(getattr(self, field)))
        if self.ca_bundle is not None:
            p.add("ProcessingModule.ca_bundle", check_name(self.ca_bundle))
            if self.verify_tls is False:
                p.add(
                    "ProcessingModule.ca_bundle",
                    f"{show(self.ca_bundle)} is set but verify_tls is false",
                )
        if self.password_env is not None:
            p.add("ProcessingModule.password_env", check_name(self.password_env))
        p.raise_if_any()

    @property
    def verify(self) -> bool | str:
        """What to pass as the client's ``verify``: the CA bundle path, or ``verify_tls``."""
        return self.ca_bundle if self.ca_bundle is not None else self.verify_tls


# --------------------------------------------------------------------------- tariff


@attrs.frozen
class Tariff:
    """A tariff plan selling one DCImanager 6 server configuration.

    Attributes:
        name: unique in a catalog; orders name it.
        configuration: the DCImanager server configuration name (as
            ``GET /api/dci/v3/server/configuration`` reports it) a server must have.
        os_templates: the DCImanager OS template names a customer may order; at least one
            (a server cannot be issued without an OS).
        modules: names of the processing modules that may serve it; at least one (a tariff
            with no module cannot be ordered).
        ipv4_count: extra IPv4 addresses to assign after the server is handed over.
        ip_pools: DCImanager IP pool ids to take them from (empty: DCImanager's default).
        recipes: recipe (script) names a customer may have run after the install.
        description: free text.
    """

    name: str
    configuration: str
    os_templates: tuple[str, ...] = attrs.field(converter=_to_names)
    modules: tuple[str, ...] = attrs.field(converter=_to_names)
    ipv4_count: int = 0
    ip_pools: tuple[int, ...] = attrs.field(default=(), converter=_to_ids)
    recipes: tuple[str, ...] = attrs.field(default=(), converter=_to_names)
    description: str = ""

    def __attrs_post_init__(self) -> None:
        p = Problems()
        p.add("Tariff.name", check_name(self.name))
        p.add("Tariff.configuration", check_name(self.configuration))
        p.extend(
            "Tariff.os_templates",
            check_names(self.os_templates, if_empty="a server cannot be issued without an OS"),
        )
        p.extend(
            "Tariff.modules",
            check_names(self.modules, if_empty="a tariff with no module cannot be ordered"),
        )
        p.add("Tariff.ipv4_count", check_int(self.ipv4_count, minimum=0))
        pools: Any = self.ip_pools
        if isinstance(pools, tuple):
            for i, pool in enumerate(pools):
                p.add(f"Tariff.ip_pools[{i}]", check_int(pool, minimum=1))
        else:
            p.add("Tariff.ip_pools", f"{show(pools)} is not a list of pool ids")
        p.extend("Tariff.recipes", check_names(self.recipes))
        description: Any = self.description
        if not isinstance(description, str):
            p.add("Tariff.description", f"{show(description)} is not a string")
        p.raise_if_any()


# --------------------------------------------------------------------------- order


def _optional(check: Any, value: Any) -> str | None:
    result: str | None = None if value is None else check(value)
    return result


@attrs.frozen
class Order:
    """One customer's order of one dedicated server.

    Attributes:
        service_id: the billing side's unique id of the service (BILLmanager's
            ``remoteid``); the idempotency key of everything done for it.
        tariff: the tariff name (a :class:`Tariff` given here is stored by name).
        os_template: the DCImanager OS template name to install; must be one of the
            tariff's ``os_templates``.
        customer_email: the customer's e-mail; their DCImanager user is created with it.
        hostname: the server's host name (RFC 1123), if the customer chose one.
        ssh_keys: OpenSSH public key lines to install.
        recipe: a recipe (script) to run after the install; one of the tariff's ``recipes``.
        data_center: the name of the data center the customer asked for, if any.
        customer_name: the customer's full name for their DCImanager user.
    """

    service_id: str
    tariff: str = attrs.field(converter=_tariff_name)
    os_template: str
    customer_email: str
    hostname: str | None = None
    ssh_keys: tuple[str, ...] = attrs.field(default=(), converter=_to_names)
    recipe: str | None = None
    data_center: str | None = attrs.field(default=None, converter=_data_center_name)
    customer_name: str | None = None

    def __attrs_post_init__(self) -> None:
        p = Problems()
        p.add("Order.service_id", check_name(self.service_id))
        p.add("Order.tariff", check_name(self.tariff))
        p.add("Order.os_template", check_name(self.os_template))
        p.add("Order.customer_email", check_email(self.customer_email))
        p.add("Order.hostname", _optional(check_hostname, self.hostname))
        keys: Any = self.ssh_keys
        if isinstance(keys, tuple):
            for i, key in enumerate(keys):
                p.add(f"Order.ssh_keys[{i}]", check_ssh_key(key))
        else:
            p.add("Order.ssh_keys", f"{show(keys)} is not a list of public keys")
        p.add("Order.recipe", _optional(check_name, self.recipe))
        p.add("Order.data_center", _optional(check_name, self.data_center))
        p.add("Order.customer_name", _optional(check_name, self.customer_name))
        p.raise_if_any()

    def to_spec(self) -> dict[str, Any]:
        """The order as a JSON-safe dict (no secrets); :meth:`from_spec` reverses it."""
        spec = attrs.asdict(self, recurse=False)
        spec["ssh_keys"] = list(self.ssh_keys)
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Order:
        """Rebuild an order from :meth:`to_spec`'s dict. Unknown or missing keys and bad
        values raise one :class:`~dci6bridge.errors.ConfigError`."""
        if not isinstance(spec, Mapping):
            raise ConfigError(f"Order: {show(spec)} is not a mapping")
        fields = attrs.fields_dict(cls)
        p = Problems()
        for key in spec:
            if key not in fields:
                p.add(f"Order.{key}", "unknown field")
        for name, field in fields.items():
            if field.default is attrs.NOTHING and name not in spec:
                p.add(f"Order.{name}", "missing")
        p.raise_if_any()
        return cls(**{k: spec[k] for k in fields if k in spec})


# --------------------------------------------------------------------------- catalog


def reference_problems(
    data_centers: Sequence[Any],
    modules: Sequence[tuple[Any, Any]],
    tariffs: Sequence[tuple[Any, Any]],
) -> list[str]:
    """Cross-checks of a catalog on names alone, shared by :class:`Catalog` and the file
    loader (which runs them even when some entries failed their own checks).

    ``data_centers`` are names, ``modules`` ``(name, data center name)`` pairs, ``tariffs``
    ``(name, module names)`` pairs. Non-string names are skipped: their entries already
    have a problem of their own.
    """
    p = Problems()
    for kind, names in (
        ("data_centers", list(data_centers)),
        ("modules", [m for m, _ in modules]),
        ("tariffs", [t for t, _ in tariffs]),
    ):
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            if not isinstance(name, str):
                continue
            if name in first:
                p.add(
                    f"{kind}[{i}].name",
                    f"{show(name)} is already used by {kind}[{first[name]}]",
                )
            else:
                first[name] = i
    known_dcs = {n for n in data_centers if isinstance(n, str)}
    for i, (_, dc) in enumerate(modules):
        if isinstance(dc, str) and dc not in known_dcs:
            p.add(
                f"modules[{i}].data_center",
                f"{show(dc)} is not a data center of this catalog{_known(known_dcs)}",
            )
    known_modules = {m for m, _ in modules if isinstance(m, str)}
    for i, (_, names) in enumerate(tariffs):
        if not isinstance(names, (list, tuple)):
            continue
        for j, name in enumerate(names):
            if isinstance(name, str) and name not in known_modules:
                p.add(
                    f"tariffs[{i}].modules[{j}]",
                    f"{show(name)} is not a module of this catalog{_known(known_modules)}",
                )
    return p.items


def _find(kind: str, items: Sequence[Any], name: str) -> Any:
    for item in items:
        if item.name == name:
            return item
    known = _known(item.name for item in items)
    raise ConfigError(f"{kind}: {show(name)} is not in the catalog{known}")


def _known(names: Iterable[str]) -> str:
    listed = ", ".join(repr(n) for n in sorted(names))
    return f" (known: {listed})" if listed else " (there are none)"


def _to_data_centers(value: Iterable[DataCenter]) -> tuple[DataCenter, ...]:
    result: tuple[DataCenter, ...] = to_tuple(value)
    return result


def _to_modules(value: Iterable[ProcessingModule]) -> tuple[ProcessingModule, ...]:
    result: tuple[ProcessingModule, ...] = to_tuple(value)
    return result


def _to_tariffs(value: Iterable[Tariff]) -> tuple[Tariff, ...]:
    result: tuple[Tariff, ...] = to_tuple(value)
    return result


@attrs.frozen
class Catalog:
    """The data centers, processing modules and tariffs the billing side sells through.

    Construction cross-checks them: names are unique per kind, every module's data center
    is one of ``data_centers``, every tariff's modules are in ``modules``. Problems are
    reported with the paths a catalog file uses (``modules[1].data_center: ...``).
    """

    data_centers: tuple[DataCenter, ...] = attrs.field(default=(), converter=_to_data_centers)
    modules: tuple[ProcessingModule, ...] = attrs.field(default=(), converter=_to_modules)
    tariffs: tuple[Tariff, ...] = attrs.field(default=(), converter=_to_tariffs)

    def __attrs_post_init__(self) -> None:
        p = Problems()
        typed = True
        for kind, cls in (
            ("data_centers", DataCenter),
            ("modules", ProcessingModule),
            ("tariffs", Tariff),
        ):
            items: Any = getattr(self, kind)
            if not isinstance(items, tuple):
                p.add(kind, f"{show(items)} is not a list of {cls.__name__} objects")
                typed = False
                continue
            for i, item in enumerate(items):
                if not isinstance(item, cls):
                    p.add(f"{kind}[{i}]", f"{show(item)} is not a {cls.__name__}")
                    typed = False
        if typed:
            p.items.extend(
                reference_problems(
                    [dc.name for dc in self.data_centers],
                    [(m.name, m.data_center.name) for m in self.modules],
                    [(t.name, t.modules) for t in self.tariffs],
                )
            )
            by_name: dict[str, DataCenter] = {}
            for dc in self.data_centers:
                by_name.setdefault(dc.name, dc)  # a duplicate is reported above
            for i, m in enumerate(self.modules):
                listed = by_name.get(m.data_center.name)
                if listed is not None and listed != m.data_center:
                    p.add(
                        f"modules[{i}].data_center",
                        f"{m.data_center!r} differs from the catalog's {listed!r}",
                    )
        p.raise_if_any()

    # ------------------------------------------------------------------ lookups

    def data_center(self, name: str) -> DataCenter:
        """The data center called ``name``; :class:`ConfigError` if there is none."""
        found: DataCenter = _find("data_center", self.data_centers, name)
        return found

    def module(self, name: str) -> ProcessingModule:
        """The processing module called ``name``; :class:`ConfigError` if there is none."""
        found: ProcessingModule = _find("module", self.modules, name)
        return found

    def tariff(self, name: str) -> Tariff:
        """The tariff called ``name``; :class:`ConfigError` if there is none."""
        found: Tariff = _find("tariff", self.tariffs, name)
        return found

    def tariffs_of(self, module: str | ProcessingModule) -> tuple[Tariff, ...]:
        """The tariffs the module (or module name) is connected to, in catalog order."""
        name = module.name if isinstance(module, ProcessingModule) else module
        return tuple(t for t in self.tariffs if name in t.modules)

    def check_order(self, order: Order) -> Tariff:
        """Check that the catalog can take ``order`` and return its tariff.

        The tariff must exist, the OS template and recipe must be offered by it and a
        requested data center must exist. Every problem is reported in one
        :class:`ConfigError`. Whether a module can serve it is
        :func:`~dci6bridge.select_module`'s question.
        """
        p = Problems()
        tariff = next((t for t in self.tariffs if t.name == order.tariff), None)
        if tariff is None:
            p.add(
                "order.tariff",
                f"{show(order.tariff)} is not in the catalog{_known(t.name for t in self.tariffs)}",
            )
        else:
            if order.os_template not in tariff.os_templates:
                offered = ", ".join(map(repr, tariff.os_templates))
                p.add(
                    "order.os_template",
                    f"{show(order.os_template)} is not offered by tariff {tariff.name!r} "
                    f"(offered: {offered})",
                )
            if order.recipe is not None and order.recipe not in tariff.recipes:
                offered = ", ".join(map(repr, tariff.recipes)) or "none"
                p.add(
                    "order.recipe",
                    f"{show(order.recipe)} is not offered by tariff {tariff.name!r} "
                    f"(offered: {offered})",
                )
        if order.data_center is not None and all(
            dc.name != order.data_center for dc in self.data_centers
        ):
            p.add(
                "order.data_center",
                f"{show(order.data_center)} is not in the catalog"
                f"{_known(d.name for d in self.data_centers)}",
            )
        p.raise_if_any()
        assert tariff is not None
        return tariff

    # ------------------------------------------------------------------ files

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
    ) -> Catalog:
        """Build a catalog from the catalog file's structure (see ``docs/catalog.md``).

        Modules name their data center; a password is given as ``password`` or, better,
        as ``password_env`` (the environment variable holding it), looked up in
        ``environ`` (default: ``os.environ``). Every problem in the whole structure is
        reported in one :class:`ConfigError`; nothing is half-built.
        """
        from ._catalog_file import catalog_from_dict

        return catalog_from_dict(data, environ=os.environ if environ is None else environ)

    @classmethod
    def from_toml(
        cls, path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> Catalog:
        """Load a catalog file (TOML). A syntax error is a :class:`ConfigError` naming the
        file, line and column; a missing file raises :class:`OSError` as usual."""
        from ._catalog_file import load_toml

        data = load_toml(Path(path))
        return cls.from_dict(data, environ=environ)

    def to_dict(self) -> dict[str, Any]:
        """The catalog in the file's structure, safe to write anywhere: a module whose
        password came from ``password_env`` gets ``password_env`` back; any other gets
        ``password_omitted = true`` and no password (loading it again then asks for one)."""
        from ._catalog_file import catalog_to_dict

        return catalog_to_dict(self)
