"""``dci6bridge open | status | suspend | resume | close | reboot | reinstall | retry |
tasks``: billing operations against a catalog and a status store.

These commands only record what billing asks for; a worker (``dci6bridge worker``) does
the DCImanager side and moves each service to its next state. ``status`` shows where a
service is, ``tasks`` lists and resolves what needs a person.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dci6bridge.errors import ConfigError
from dci6bridge.provisioning.states import ServiceStatus

from ._common import (
    add_config_option,
    add_json_option,
    add_store_option,
    format_cell,
    format_time,
    print_json,
    provisioner_from_args,
    render_table,
)

if TYPE_CHECKING:
    from dci6bridge.provisioning import Service
    from dci6bridge.stores.base import DepartmentTask, Transition

__all__ = ["add_parser", "run"]


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    add_store_option(parser)
    add_json_option(parser)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``open``, ``status``, ``suspend``, ``resume``, ``close``, ``reboot``,
    ``retry``, ``reinstall`` and ``tasks``."""
    p = subparsers.add_parser(
        "open",
        help="record a new order; a worker then provisions it",
        description=(
            "Record a new order for a dedicated server. The service starts IN_PROGRESS; "
            "`dci6bridge worker` claims a free server, creates the customer's user, "
            "installs the OS and reports ACTIVE once the server is ready. Opening the "
            "same service id again with the same order is harmless."
        ),
    )
    p.add_argument("--service-id", required=True, help="billing's unique id for the service")
    p.add_argument("--tariff", required=True, help="tariff name from the catalog")
    p.add_argument("--os-template", required=True, help="DCImanager OS template name")
    p.add_argument("--email", required=True, help="the customer's e-mail (DCImanager user)")
    p.add_argument("--hostname", help="host name to give the server")
    p.add_argument(
        "--ssh-key",
        action="append",
        default=[],
        metavar="KEY",
        help="public SSH key to install (repeat for several)",
    )
    p.add_argument("--data-center", help="data center name to restrict module selection to")
    p.add_argument("--recipe", help="recipe (script) to run after the install; one of the tariff's")
    p.add_argument("--name", help="the customer's full name for their DCImanager user")
    _common(p)
    p.set_defaults(func=run)

    p = subparsers.add_parser(
        "status",
        help="show one service, or every service in the store",
        description="Show one service (with --history, its every state change) or all.",
    )
    p.add_argument("service_id", nargs="?", metavar="SERVICE_ID", help="service to show")
    p.add_argument("--history", action="store_true", help="list the service's state changes")
    p.add_argument(
        "--only",
        metavar="STATUS",
        choices=[s.value for s in ServiceStatus],
        help="without SERVICE_ID: only services with this status "
        "(in_progress, active, suspended, closed, failed)",
    )
    _common(p)
    p.set_defaults(func=run)

    for name, text in (
        ("suspend", "suspend a service: switch ports off, the server keeps running"),
        ("resume", "resume a suspended service: switch ports on again"),
        ("close", "close a service: power off, release the server and its IPs, delete the user"),
        ("reboot", "reboot an active service's server"),
        ("retry", "retry a failed service from the step it failed in"),
    ):
        p = subparsers.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("service_id", metavar="SERVICE_ID", help="the service")
        _common(p)
        p.set_defaults(func=run)

    p = subparsers.add_parser(
        "reinstall",
        help="reinstall an active service's OS (a new root password)",
        description=(
            "Reinstall an active service with one of its tariff's OS templates. It goes "
            "through installing_os again and is active once the install has finished."
        ),
    )
    p.add_argument("service_id", metavar="SERVICE_ID", help="the service")
    p.add_argument("--os-template", required=True, help="one of the tariff's OS templates")
    _common(p)
    p.set_defaults(func=run)

    p = subparsers.add_parser(
        "tasks",
        help="list department tasks, or resolve one",
        description=(
            "List the open tasks that need a person (failed steps, mismatched servers), "
            "optionally for one department; or mark one resolved with --resolve and --note."
        ),
    )
    p.add_argument("--department", help="only this department's tasks")
    p.add_argument("--all", action="store_true", help="include resolved tasks")
    p.add_argument("--resolve", type=int, metavar="ID", help="resolve the task with this id")
    p.add_argument("--note", help="what was done (required with --resolve)")
    _common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run whichever of this module's subcommands ``args.command`` names."""
    if args.command == "open":
        return run_open(args)
    if args.command == "status":
        return run_status(args)
    if args.command == "tasks":
        return run_tasks(args)
    return run_action(args)


def _service_rows(svc: Service) -> list[tuple[str, Any]]:
    return [
        ("service", svc.service_id),
        ("status", svc.status),
        ("state", svc.state),
        ("module", svc.module),
        ("server", svc.server_id),
        ("user", svc.user_id),
        ("IP addresses", svc.ip_addresses),
        ("OS template", svc.os_template),
        ("last error", svc.last_error),
        ("created", format_time(svc.created_at)),
        ("updated", format_time(svc.updated_at)),
    ]


def _show_service(svc: Service) -> None:
    rows = _service_rows(svc)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {format_cell(value)}")


def _service_table(services: Sequence[Service]) -> str:
    return render_table(
        ["SERVICE", "STATUS", "STATE", "MODULE", "SERVER", "IP", "UPDATED"],
        [
            (
                s.service_id,
                s.status,
                s.state,
                s.module,
                s.server_id,
                s.ip_addresses,
                format_time(s.updated_at),
            )
            for s in services
        ],
    )


def _history_table(history: Sequence[Transition]) -> str:
    return render_table(
        ["#", "AT", "FROM", "TO", "WORKER", "DETAIL"],
        [
            (
                t.version,
                format_time(t.at),
                t.from_state,
                t.to_state,
                t.worker,
                ", ".join(f"{k}={v}" for k, v in t.detail.items()),
            )
            for t in history
        ],
    )


def _task_table(tasks: Sequence[DepartmentTask]) -> str:
    return render_table(
        ["ID", "DEPARTMENT", "SERVICE", "KIND", "CREATED", "RESOLVED", "REASON"],
        [
            (
                t.id,
                t.department,
                t.service_id,
                t.kind,
                format_time(t.created_at),
                format_time(t.resolved_at),
                t.reason,
            )
            for t in tasks
        ],
    )


def run_open(args: argparse.Namespace) -> int:
    """``dci6bridge open``: record the order and show the new service."""
    from dci6bridge.domain import Order

    order = Order(
        service_id=args.service_id,
        tariff=args.tariff,
        os_template=args.os_template,
        customer_email=args.email,
        hostname=args.hostname,
        ssh_keys=tuple(args.ssh_key),
        data_center=args.data_center,
        recipe=args.recipe,
        customer_name=args.name,
    )
    with provisioner_from_args(args) as prov:
        svc = prov.open(order)
    if args.json:
        print_json(svc)
    else:
        _show_service(svc)
    return 0


def run_status(args: argparse.Namespace) -> int:
    """``dci6bridge status``: one service (optionally with history), or all of them."""
    with provisioner_from_args(args) as prov:
        if args.service_id is None:
            services = prov.services(args.only)
            if args.json:
                print_json(services)
            elif services:
                print(_service_table(services))
            else:
                print("no services" + (f" with status {args.only}" if args.only else ""))
            return 0
        if args.only is not None:
            raise ConfigError("--only: lists services; leave out SERVICE_ID")
        svc = prov.get(args.service_id)
        history = prov.history(args.service_id) if args.history else None
    if args.json:
        print_json({"service": svc, "history": history} if history is not None else svc)
        return 0
    _show_service(svc)
    if history is not None:
        print()
        print(_history_table(history))
    return 0


def run_action(args: argparse.Namespace) -> int:
    """``dci6bridge suspend|resume|close|reboot|retry|reinstall``: record the request; a
    worker carries it out."""
    with provisioner_from_args(args) as prov:
        if args.command == "reinstall":
            svc = prov.reinstall(args.service_id, args.os_template)
        else:
            svc = getattr(prov, args.command)(args.service_id)
    if args.json:
        print_json(svc)
    else:
        print(f"{args.command} requested for {svc.service_id} (now {svc.status.value})")
    return 0


def run_tasks(args: argparse.Namespace) -> int:
    """``dci6bridge tasks``: list department tasks, or resolve one."""
    if args.resolve is not None and not args.note:
        raise ConfigError("--note: required with --resolve (say what was done)")
    if args.note and args.resolve is None:
        raise ConfigError("--note: only meaningful with --resolve ID")
    with provisioner_from_args(args) as prov:
        if args.resolve is not None:
            known = {t.id: t for t in prov.tasks(include_resolved=True)}
            if args.resolve not in known:
                raise ConfigError(f"--resolve: there is no department task {args.resolve}")
            if known[args.resolve].resolved_at is not None:
                raise ConfigError(f"--resolve: task {args.resolve} is already resolved")
            task = prov.resolve_task(args.resolve, args.note)
            if args.json:
                print_json(task)
            else:
                print(f"task {task.id} resolved: {task.resolution}")
            return 0
        tasks = prov.tasks(department=args.department, include_resolved=args.all)
    if args.json:
        print_json(tasks)
    elif tasks:
        print(_task_table(tasks))
    else:
        print("no open tasks" + (f" for {args.department}" if args.department else ""))
    return 0
