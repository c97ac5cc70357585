"""``dci6bridge servers``: free servers per configuration and location, for every
processing module of a catalog, and which tariffs each configuration serves.

A module that cannot be reached is reported on its own line and makes the exit status 1;
the other modules are still listed.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from dci6bridge.errors import Dci6BridgeError

from ._common import add_config_option, add_json_option, load_catalog, print_json, render_table

if TYPE_CHECKING:
    from dci6bridge.domain import Catalog, ProcessingModule

__all__ = ["add_parser", "free_servers", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``servers``."""
    p = subparsers.add_parser(
        "servers",
        help="free servers per configuration and location, for every module",
        description=(
            "Ask each processing module's DCImanager for its free servers (no owner, "
            "not in maintenance, last operation finished) in the module's location, "
            "grouped by configuration, with the tariffs that sell each configuration."
        ),
    )
    p.add_argument("--module", action="append", default=[], help="only this module (repeatable)")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run)


def free_servers(module: ProcessingModule) -> Counter[str]:
    """Free servers in ``module``'s location, counted by configuration name.

    The query narrows the list on the server side (no owner, not new); the remaining
    rules (last operation finished well, not in maintenance) are checked here.
    """
    from dci6bridge.client import Q
    from dci6bridge.connect import client_for

    location_id = module.data_center.location_id
    counts: Counter[str] = Counter()
    with client_for(module) as dci:
        for server in dci.servers.list(where=Q.free() & (Q("location_id") == location_id)):
            if server.is_free:
                counts[server.configuration or "(unknown)"] += 1
    return counts


def _tariffs_by_configuration(catalog: Catalog, module_name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for tariff in catalog.tariffs:
        if module_name in tariff.modules:
            out.setdefault(tariff.configuration, []).append(tariff.name)
    return out


def run(args: argparse.Namespace) -> int:
    """List free servers for every (or each ``--module``) processing module."""
    catalog = load_catalog(args.config)
    modules = [m for m in catalog.modules if not args.module or m.name in args.module]
    unknown = sorted(set(args.module) - {m.name for m in catalog.modules})
    if unknown:
        from dci6bridge.errors import ConfigError

        known = ", ".join(m.name for m in catalog.modules)
        raise ConfigError(f"--module: no module named {unknown[0]!r} (known: {known})")

    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    for module in modules:
        try:
            counts = free_servers(module)
        except Dci6BridgeError as exc:
            failed.append((module.name, " ".join(str(exc).split())))
            continue
        sold = _tariffs_by_configuration(catalog, module.name)
        for configuration in sorted(set(counts) | set(sold)):
            rows.append(
                {
                    "module": module.name,
                    "data_center": module.data_center.name,
                    "location_id": module.data_center.location_id,
                    "configuration": configuration,
                    "free": counts.get(configuration, 0),
                    "tariffs": sold.get(configuration, []),
                }
            )

    if args.json:
        print_json({"servers": rows, "errors": [{"module": m, "error": e} for m, e in failed]})
    else:
        print(
            render_table(
                ["MODULE", "DATA CENTER", "LOCATION", "CONFIGURATION", "FREE", "TARIFFS"],
                [
                    (
                        r["module"],
                        r["data_center"],
                        r["location_id"],
                        r["configuration"],
                        r["free"],
                        r["tariffs"],
                    )
                    for r in rows
                ],
            )
        )
    for name, error in failed:
        print(f"dci6bridge: error: module {name}: {error}", file=sys.stderr)
    return 1 if failed else 0
