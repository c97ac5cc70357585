"""``dci6bridge worker``: run a provisioning worker until SIGTERM/SIGINT.

Any number of workers may share one store (SQLite: processes on one host; PostgreSQL:
many hosts). Each leases runnable services, runs their next steps, releases them and
relays events; one of them also runs the reconciler sweep. ``--once`` works until
nothing is runnable and exits (for cron).
"""

from __future__ import annotations

import argparse

from dci6bridge.provisioning.worker import add_arguments, run_from_args

from ._common import add_config_option, add_store_option

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``worker``."""
    p = subparsers.add_parser(
        "worker",
        help="run a provisioning worker (graceful stop on SIGTERM)",
        description=(
            "Provision, suspend, resume, reinstall and close services recorded in the "
            "status store: lease runnable services, run their next steps against "
            "DCImanager, release them. Stops gracefully on SIGTERM or SIGINT (the step "
            "in progress finishes). Run as many as you like against one store."
        ),
    )
    add_store_option(p)
    add_config_option(p)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the worker (see :func:`dci6bridge.provisioning.worker.run_from_args`)."""
    return run_from_args(args)
