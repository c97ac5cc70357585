"""Test every processing module's connection before selling through it (BILLmanager's
``CHECK_CONNECTION``, WHMCS's "Test Connection").

For each module of a catalog: log in and read ``whoami``, confirm that its data center's
Location ID exists in DCImanager and offers the OS templates its tariffs name, and read
the free-server counts of the configurations its tariffs sell. Whatever goes wrong
becomes a problem of that module; one broken module never hides the others and nothing
raises.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Mapping

import attrs

from .client import Client
from .connect import client_for
from .domain import Catalog, ProcessingModule

__all__ = ["ModuleCheck", "check_module", "check_modules"]

ClientFactory = Callable[[ProcessingModule], Client]

_SHOW_NAMES = 8


@attrs.frozen
class ModuleCheck:
    """What :func:`check_modules` found for one module.

    Attributes:
        module: the module checked.
        ok: no problems (warnings do not count).
        latency_s: seconds the login and ``whoami`` took, ``None`` if the client could
            not even be built.
        user_email: the e-mail DCImanager reports for the session (``None`` when login
            failed).
        location_ok: the data center's Location ID is among DCImanager's locations;
            ``None`` when not checked (login failed, or the data center is not
            DCImanager-6-managed).
        free_counts: free servers per configuration sold through this module (from
            ``GET /api/dci/v3/server/configuration``, which counts the whole DCImanager
            server, not only this module's location).
        problems: why the module fails the check, one line each.
        warnings: things worth a look that do not fail it (e.g. a tariff configuration
            DCImanager does not report at all: a typo, or no such servers yet).
        logged_in: the login and ``whoami`` succeeded.
    """

    module: ProcessingModule
    ok: bool
    latency_s: float | None
    user_email: str | None
    location_ok: bool | None
    free_counts: Mapping[str, int]
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    logged_in: bool = False


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_location(dci: Client, module: ProcessingModule, problems: list[str]) -> bool | None:
    dc = module.data_center
    if not dc.selectable:
        return None
    try:
        ids = sorted(loc.id for loc in dci.locations.list())
    except Exception as exc:  # any failure is this module's problem, never a traceback
        problems.append(f"listing locations failed: {_describe(exc)}")
        return None
    if dc.location_id in ids:
        return True
    known = ", ".join(map(str, ids)) or "none"
    problems.append(
        f"location {dc.location_id} of data center {dc.name!r} does not exist in DCImanager "
        f"(locations: {known})"
    )
    return False


def _check_os_templates(
    dci: Client, catalog: Catalog, module: ProcessingModule, problems: list[str]
) -> None:
    location_id = module.data_center.location_id
    try:
        available = {t.name for t in dci.os_templates.list(location_id)}
    except Exception as exc:  # any failure is this module's problem, never a traceback
        problems.append(f"listing OS templates failed: {_describe(exc)}")
        return
    for tariff in catalog.tariffs_of(module):
        for name in tariff.os_templates:
            if name not in available:
                known = ", ".join(map(repr, sorted(available)[:_SHOW_NAMES]))
                more = ", ..." if len(available) > _SHOW_NAMES else ""
                problems.append(
                    f"OS template {name!r} of tariff {tariff.name!r} is not in location "
                    f"{location_id} (templates: {known or 'none'}{more})"
                )


def _free_counts(
    dci: Client,
    catalog: Catalog,
    module: ProcessingModule,
    problems: list[str],
    warnings: list[str],
) -> dict[str, int]:
    sold: dict[str, list[str]] = {}
    for tariff in catalog.tariffs_of(module):
        sold.setdefault(tariff.configuration, []).append(tariff.name)
    if not sold:
        return {}
    try:
        reported = {c.configuration: c.free_server_count for c in dci.servers.configurations()}
    except Exception as exc:  # any failure is this module's problem, never a traceback
        problems.append(f"reading free servers per configuration failed: {_describe(exc)}")
        return {}
    counts: dict[str, int] = {}
    for configuration, tariffs in sold.items():
        counts[configuration] = reported.get(configuration, 0)
        if configuration not in reported:
            names = ", ".join(map(repr, tariffs))
            warnings.append(
                f"configuration {configuration!r} (tariff {names}) is not reported by DCImanager"
            )
    return counts


def check_module(
    catalog: Catalog,
    module: ProcessingModule,
    *,
    client_factory: ClientFactory = client_for,
) -> ModuleCheck:
    """Check one module of ``catalog`` (see :func:`check_modules`). Never raises for
    network, API or TLS problems: they become the result's ``problems``."""
    problems: list[str] = []
    warnings: list[str] = []
    latency: float | None = None
    user_email: str | None = None
    location_ok: bool | None = None
    free: dict[str, int] = {}
    logged_in = False
    try:
        with client_factory(module) as dci:
            connection = dci.check()
            latency = connection.latency_s
            if not connection.ok:
                problems.append(f"login failed: {' '.join(connection.detail.split())}")
            else:
                logged_in = True
                user_email = connection.user_email
                location_ok = _check_location(dci, module, problems)
                if location_ok:
                    _check_os_templates(dci, catalog, module, problems)
                free = _free_counts(dci, catalog, module, problems, warnings)
    except Exception as exc:  # building or closing the client; reported, never raised
        problems.append(_describe(exc))
    return ModuleCheck(
        module=module,
        ok=not problems,
        latency_s=latency,
        user_email=user_email,
        location_ok=location_ok,
        free_counts=free,
        problems=tuple(problems),
        warnings=tuple(warnings),
        logged_in=logged_in,
    )


def check_modules(
    catalog: Catalog,
    *,
    client_factory: ClientFactory = client_for,
    modules: Iterable[str] | None = None,
    max_workers: int = 4,
) -> list[ModuleCheck]:
    """Check every module of ``catalog``, disabled ones included; results in catalog order.

    Per module: log in and read ``whoami``; the data center's Location ID must be among
    DCImanager's locations, and every OS template of the module's tariffs among that
    location's templates; free servers are counted for each configuration its tariffs
    sell (a configuration DCImanager does not report is a warning, not a failure).

    Modules are checked ``max_workers`` at a time (each with its own client), so one
    unreachable server does not make the others wait for its timeout. ``client_factory``
    builds the client for a module (default :func:`~dci6bridge.connect.client_for`; tests
    pass one bound to the simulator's transport). ``modules`` limits the check to those
    module names (an unknown name is a :class:`~dci6bridge.ConfigError`).
    """
    chosen = catalog.modules if modules is None else tuple(catalog.module(n) for n in modules)
    if max_workers <= 1 or len(chosen) <= 1:
        return [check_module(catalog, m, client_factory=client_factory) for m in chosen]
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=min(max_workers, len(chosen)), thread_name_prefix="dci6bridge-check"
    ) as pool:
        futures: list[concurrent.futures.Future[ModuleCheck]] = [
            pool.submit(check_module, catalog, m, client_factory=client_factory) for m in chosen
        ]
        return [f.result() for f in futures]
