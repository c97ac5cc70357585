"""``dci6bridge check``: test every processing module of a catalog before selling.

For each module: log in, read ``whoami``, confirm the data center's Location ID exists,
and read the free servers of each configuration its tariffs sell. Prints a table, then
the reason for every failure; the exit status is 1 when any module fails.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from dci6bridge.errors import ConfigError

from ._common import add_config_option, add_json_option, load_catalog, print_json, render_table

if TYPE_CHECKING:
    from dci6bridge.checks import ClientFactory, ModuleCheck
    from dci6bridge.client import Client
    from dci6bridge.domain import ProcessingModule

__all__ = ["add_parser", "run"]

DEFAULT_TIMEOUT = 10.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``check``."""
    p = subparsers.add_parser(
        "check",
        help="test every processing module's connection, location and free servers",
        description=(
            "For every processing module of the catalog: log in to its DCImanager 6, "
            "read whoami, confirm its data center's Location ID exists, and count free "
            "servers of each configuration its tariffs sell. Exit status 1 when any "
            "module fails, with the reason."
        ),
    )
    p.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="NAME",
        help="check only this module (repeatable)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="network timeout per request, and the retry deadline (default: %(default)s)",
    )
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run)


def _login(check: ModuleCheck) -> str:
    if check.logged_in and check.latency_s is not None:
        return f"ok {check.latency_s * 1000:.0f} ms"
    return "-" if check.latency_s is None else "failed"


def _location(check: ModuleCheck) -> str:
    location_id = check.module.data_center.location_id
    if check.location_ok is None:
        return "-" if location_id is None else f"{location_id} ?"
    return f"{location_id} {'ok' if check.location_ok else 'MISSING'}"


def _result(check: ModuleCheck) -> str:
    if not check.ok:
        return "FAILED"
    if check.warnings:
        n = len(check.warnings)
        return f"ok ({n} warning{'s' if n > 1 else ''})"
    return "ok" if check.module.enabled else "ok (disabled)"


def _as_json(check: ModuleCheck) -> dict[str, Any]:
    m = check.module
    return {
        "module": m.name,
        "data_center": m.data_center.name,
        "location_id": m.data_center.location_id,
        "url": m.url,
        "enabled": m.enabled,
        "ok": check.ok,
        "logged_in": check.logged_in,
        "latency_s": check.latency_s,
        "user_email": check.user_email,
        "location_ok": check.location_ok,
        "free_counts": dict(check.free_counts),
        "problems": list(check.problems),
        "warnings": list(check.warnings),
    }


def run(args: argparse.Namespace, *, client_factory: ClientFactory | None = None) -> int:
    """Check the modules and print the report; 0 when all pass, 1 otherwise.

    ``client_factory`` (module → client) replaces the default real-network client; the
    tests pass one bound to the simulator's in-process transport.
    """
    from dci6bridge.checks import check_modules
    from dci6bridge.client import RetryPolicy
    from dci6bridge.connect import client_for

    if not args.timeout > 0:
        raise ConfigError(f"--timeout: {args.timeout!r} must be above 0")
    catalog = load_catalog(args.config)
    if not catalog.modules:
        raise ConfigError(f"--config: {args.config!r} has no processing modules to check")
    if client_factory is None:
        # A check answers fast or fails: a couple of tries, bounded by --timeout.
        retry = RetryPolicy(attempts=2, deadline=args.timeout)

        def client_factory(module: ProcessingModule) -> Client:
            return client_for(module, timeout=args.timeout, retry=retry)

    results = check_modules(catalog, client_factory=client_factory, modules=args.module or None)
    failed = [r for r in results if not r.ok]

    if args.json:
        print_json({"ok": not failed, "modules": [_as_json(r) for r in results]})
        return 1 if failed else 0

    rows = [
        (
            r.module.name,
            r.module.data_center.name,
            r.module.url,
            _login(r),
            _location(r),
            [f"{c}: {n}" for c, n in r.free_counts.items()],
            _result(r),
        )
        for r in results
    ]
    print(
        render_table(["MODULE", "DATA CENTER", "URL", "LOGIN", "LOCATION", "FREE", "RESULT"], rows)
    )
    notes = [(r.module.name, "problem", p) for r in results for p in r.problems]
    notes += [(r.module.name, "warning", w) for r in results for w in r.warnings]
    if notes:
        print()
        for name, kind, text in notes:
            print(f"{name}: {kind}: {text}")
    print()
    print(
        f"{len(results)} module(s) checked: {len(results) - len(failed)} ok, {len(failed)} failed"
    )
    return 1 if failed else 0
