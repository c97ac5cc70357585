"""Servers: list, get, owner, OS install, power, switch ports, wait (``dci.servers``)."""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from dci6bridge.client._checks import is_number, is_text
from dci6bridge.client._converter import parser, structure_list
from dci6bridge.client._core import Call
from dci6bridge.client._http import AsyncSession, SyncSession
from dci6bridge.client._retry import RetryPolicy
from dci6bridge.client.models import (
    ActionResult,
    ConfigurationCount,
    Operation,
    Page,
    PortStatus,
    Server,
)
from dci6bridge.client.query import Condition, SortKey
from dci6bridge.errors import ConfigError, OperationFailedError, OperationTimeoutError
from dci6bridge.secret import Secret

from ._common import Paging, aiterate, check_id, check_window, iterate, parse_action
from .switches import port_call

__all__ = [
    "AsyncServers",
    "Servers",
    "Waiter",
    "install_os_call",
    "port_switch_calls",
]

_POWER = ("power_on", "power_off", "power_reset")


_parse_server = parser(Server)


def get_call(server_id: int) -> Call[Server]:
    """Read one server."""
    return Call.to("servers.get", _parse_server, server_id=check_id("server_id", server_id))


def configurations_call() -> Call[list[ConfigurationCount]]:
    """Free servers per configuration."""
    return Call.to("servers.configurations", lambda d: structure_list(d, ConfigurationCount))


def owner_call(server_id: int, user_id: int | None) -> Call[ActionResult]:
    """Give the server to ``user_id``, or release it with ``None``."""
    name = "servers.release_owner" if user_id is None else "servers.set_owner"
    owner = None if user_id is None else check_id("user_id", user_id)
    return Call.to(
        name, parse_action, body={"owner": owner}, server_id=check_id("server_id", server_id)
    )


def power_call(action: str, server_id: int) -> Call[ActionResult]:
    """``power_on``, ``power_off`` or ``power_reset``."""
    assert action in _POWER
    return Call.to(f"servers.{action}", parse_action, server_id=check_id("server_id", server_id))


def _recipe_params(params: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> list[Any]:
    if params is None:
        return []
    pairs: Iterable[object] = params.items() if isinstance(params, Mapping) else params
    out = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2 and is_text(pair[0])):
            raise ConfigError(f"recipe_params[{i}]: {pair!r} is not a (name, value) pair")
        out.append({"name": pair[0], "value": str(pair[1])})
    return out


def install_os_call(
    server_id: int,
    template_id: int,
    *,
    password: str | Secret,
    ssh_keys: Sequence[str] = (),
    recipe: int | None = None,
    recipe_params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    send_email_mode: str = "saas_only",
) -> Call[ActionResult]:
    """Install (or reinstall) an OS; the body holds the password, so it is never shown."""
    problems = []
    if not isinstance(password, Secret) and not is_text(password):
        problems.append("password: must be a non-empty string or Secret")
    if is_text(ssh_keys, empty=True) or not all(is_text(k) for k in ssh_keys):
        problems.append(f"ssh_keys: {ssh_keys!r} is not a sequence of strings")
    if not is_text(send_email_mode):
        problems.append(f"send_email_mode: {send_email_mode!r} is not a non-empty string")
    if problems:
        raise ConfigError(problems)
    body = {
        "os_template": check_id("template_id", template_id),
        "password": Secret(password).reveal(),
        "recipe": None if recipe is None else check_id("recipe", recipe),
        "recipe_params": _recipe_params(recipe_params),
        "ssh_keys": list(ssh_keys),
        "send_email_mode": send_email_mode,
    }
    return Call.to(
        "servers.install_os", parse_action, body=body, server_id=check_id("server_id", server_id)
    )


def port_switch_calls(server: Server, target: PortStatus) -> list[Call[ActionResult]]:
    """Calls that bring every data port of ``server`` to ``target``; IPMI is left alone.

    Ports already in the target admin status are skipped, so repeating is harmless.
    """
    return [
        port_call(c.switch, c.connection_id, on=target is PortStatus.UP)
        for c in server.data_connections
        if c.admin_status != target
    ]


def servers_paging(
    where: Condition | str | None,
    orderby: SortKey | str | None,
    page_size: int,
    limit: int | None,
) -> Paging[Server]:
    """Paging plan over the server list."""
    return Paging.of(
        "servers.list", Server, where=where, orderby=orderby, page_size=page_size, limit=limit
    )


def page_call(
    where: Condition | str | None, orderby: SortKey | str | None, offset: int, count: int
) -> Call[Page[Server]]:
    """The request for ``count`` matching servers from ``offset`` on."""
    check_window(offset, count)
    return servers_paging(where, orderby, count, None).call(offset)


def _status_text(op: Operation | None) -> str | None:
    """The operation's status as the platform wrote it (enum members by value)."""
    if op is None or op.status is None:
        return None
    return op.status.value if isinstance(op.status, enum.Enum) else op.status


@attrs.frozen
class Waiter:
    """When a polled server is done, failed or out of time; pure, the caller polls.

    Done means: the operation is terminal and, if ``after_operation_id`` was given, it is
    another operation than that one (so a wait right after an action does not return on
    the previous operation's ``ok``). Operation ids are compared for inequality, not
    order, since the platform does not promise increasing ids; an operation without an
    id never counts as the awaited one, so an unreadable answer times out rather than
    returning early. A server without any operation counts as done only when no new
    operation is awaited.
    """

    server_id: int
    timeout: float
    poll_interval: float
    started: float
    after_operation_id: int | None = None

    @classmethod
    def start(
        cls,
        server_id: int,
        *,
        timeout: float,
        poll_interval: float,
        after_operation_id: int | None,
        now: float,
    ) -> Waiter:
        """Validate the arguments and start the clock."""
        problems = []
        for name, value in (("timeout", timeout), ("poll_interval", poll_interval)):
            if not is_number(value) or value <= 0:
                problems.append(f"{name}: {value!r} must be a number above 0")
        if after_operation_id is not None:
            check_id("after_operation_id", after_operation_id)
        if problems:
            raise ConfigError(problems)
        check_id("server_id", server_id)
        return cls(server_id, timeout, poll_interval, now, after_operation_id)

    def next_sleep(self, server: Server, now: float) -> float | None:
        """``None`` when done; seconds to sleep before the next poll; raises on failure."""
        op = server.operation
        newer = self.after_operation_id is None or (
            op is not None and op.id is not None and op.id != self.after_operation_id
        )
        status = _status_text(op)
        if newer and (op is None or op.status is None or op.is_terminal):
            if op is not None and op.is_failed:
                raise OperationFailedError(
                    f"operation {op.id} on server {self.server_id} failed: {status}",
                    server_id=self.server_id,
                    status=status,
                    status_info=op.status_info,
                    operation=op,
                )
            return None
        remaining = self.started + self.timeout - now
        if remaining <= 0:
            raise OperationTimeoutError(
                f"server {self.server_id}: operation still {status or 'not started'} "
                f"after {self.timeout:g} s",
                server_id=self.server_id,
                status=status,
                status_info=None if op is None else op.status_info,
                operation=op,
            )
        return min(self.poll_interval, remaining)


class Servers:
    """Dedicated servers (sync). ``dci.servers``."""

    def __init__(self, session: SyncSession) -> None:
        self._s = session

    def list(
        self,
        where: Condition | str | None = None,
        orderby: SortKey | str | None = None,
        page_size: int = 500,
        limit: int | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> Iterator[Server]:
        """Lazy iterator over matching servers, one page (``page_size``) in memory.

        ``limit`` caps the total number yielded. Without ``orderby`` pages are sorted
        by ``id asc`` so they stay stable while being read.
        """
        return iterate(self._s, servers_paging(where, orderby, page_size, limit), retry)

    def page(
        self,
        where: Condition | str | None = None,
        orderby: SortKey | str | None = None,
        *,
        offset: int = 0,
        count: int = 500,
        retry: RetryPolicy | None = None,
    ) -> Page[Server]:
        """One page of matching servers: ``count`` of them from the ``offset``-th on
        (``limit=offset,count``), and how many match in all (:attr:`Page.size
        <dci6bridge.Page.size>`, if DCImanager says). For a caller that picks its own
        place in a list, such as a random one; to walk a list, :meth:`list` is simpler.
        Without ``orderby`` servers are sorted by ``id asc``. A bad ``offset`` or
        ``count`` raises :class:`~dci6bridge.ConfigError` before any request.
        """
        return self._s.execute(page_call(where, orderby, offset, count), retry)

    def get(self, server_id: int, *, retry: RetryPolicy | None = None) -> Server:
        """One server by id."""
        return self._s.execute(get_call(server_id), retry)

    def configurations(
        self, *, retry: RetryPolicy | None = None
    ) -> builtins.list[ConfigurationCount]:
        """Free servers per configuration."""
        return self._s.execute(configurations_call(), retry)

    def set_owner(
        self, server_id: int, user_id: int, *, retry: RetryPolicy | None = None
    ) -> ActionResult:
        """Make ``user_id`` the owner of the server (route inferred)."""
        return self._s.execute(owner_call(server_id, user_id), retry)

    def release_owner(self, server_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Remove the server's owner (route inferred)."""
        return self._s.execute(owner_call(server_id, None), retry)

    def install_os(
        self,
        server_id: int,
        template_id: int,
        *,
        password: str | Secret,
        ssh_keys: Sequence[str] = (),
        recipe: int | None = None,
        recipe_params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        send_email_mode: str = "saas_only",
        retry: RetryPolicy | None = None,
    ) -> ActionResult:
        """Start an OS (re)install; follow it with :meth:`wait`."""
        call = install_os_call(
            server_id,
            template_id,
            password=password,
            ssh_keys=ssh_keys,
            recipe=recipe,
            recipe_params=recipe_params,
            send_email_mode=send_email_mode,
        )
        return self._s.execute(call, retry)

    def power_on(self, server_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Power the server on."""
        return self._s.execute(power_call("power_on", server_id), retry)

    def power_off(self, server_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Power the server off."""
        return self._s.execute(power_call("power_off", server_id), retry)

    def power_reset(self, server_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Reboot a running server, or power on a stopped one."""
        return self._s.execute(power_call("power_reset", server_id), retry)

    def ports_off(self, server_id: int, *, retry: RetryPolicy | None = None) -> Server:
        """Switch off the server's data ports (IPMI untouched); the server read back."""
        return self._switch_ports(server_id, PortStatus.DOWN, retry)

    def ports_on(self, server_id: int, *, retry: RetryPolicy | None = None) -> Server:
        """Switch on the server's data ports; the server read back."""
        return self._switch_ports(server_id, PortStatus.UP, retry)

    def _switch_ports(
        self, server_id: int, target: PortStatus, retry: RetryPolicy | None
    ) -> Server:
        server = self.get(server_id, retry=retry)
        calls = port_switch_calls(server, target)
        for call in calls:
            self._s.execute(call, retry)
        return self.get(server_id, retry=retry) if calls else server

    def wait(
        self,
        server_id: int,
        *,
        timeout: float = 7200,
        poll_interval: float = 15.0,
        after_operation_id: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> Server:
        """Poll until the server's operation ends; the server as last read.

        Raises :class:`~dci6bridge.OperationFailedError` or
        :class:`~dci6bridge.OperationTimeoutError` (both carry ``status`` and
        ``status_info``).
        """
        waiter = Waiter.start(
            server_id,
            timeout=timeout,
            poll_interval=poll_interval,
            after_operation_id=after_operation_id,
            now=self._s.clock(),
        )
        while True:
            server = self.get(server_id, retry=retry)
            delay = waiter.next_sleep(server, self._s.clock())
            if delay is None:
                return server
            self._s.sleep(delay)


class AsyncServers:
    """Dedicated servers (async). ``dci.servers`` on :class:`~dci6bridge.AsyncClient`."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    def list(
        self,
        where: Condition | str | None = None,
        orderby: SortKey | str | None = None,
        page_size: int = 500,
        limit: int | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[Server]:
        """Lazy async iterator (``async for``) over matching servers, one page in memory."""
        return aiterate(self._s, servers_paging(where, orderby, page_size, limit), retry)

    async def page(
        self,
        where: Condition | str | None = None,
        orderby: SortKey | str | None = None,
        *,
        offset: int = 0,
        count: int = 500,
        retry: RetryPolicy | None = None,
    ) -> Page[Server]:
        """Async twin of :meth:`Servers.page`."""
        return await self._s.execute(page_call(where, orderby, offset, count), retry)

    async def get(self, server_id: int, *, retry: RetryPolicy | None = None) -> Server:
        """One server by id."""
        return await self._s.execute(get_call(server_id), retry)

    async def configurations(
        self, *, retry: RetryPolicy | None = None
    ) -> builtins.list[ConfigurationCount]:
        """Free servers per configuration."""
        return await self._s.execute(configurations_call(), retry)

    async def set_owner(
        self, server_id: int, user_id: int, *, retry: RetryPolicy | None = None
    ) -> ActionResult:
        """Make ``user_id`` the owner of the server (route inferred)."""
        return await self._s.execute(owner_call(server_id, user_id), retry)

    async def release_owner(
        self, server_id: int, *, retry: RetryPolicy | None = None
    ) -> ActionResult:
        """Remove the server's owner (route inferred)."""
        return await self._s.execute(owner_call(server_id, None), retry)

    async def install_os(
        self,
        server_id: int,
        template_id: int,
        *,
        password: str | Secret,
        ssh_keys: Sequence[str] = (),
        recipe: int | None = None,
        recipe_params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        send_email_mode: str = "saas_only",
        retry: RetryPolicy | None = None,
    ) -> ActionResult:
        """Start an OS (re)install; follow it with :meth:`wait`."""
        call = install_os_call(
            server_id,
            template_id,
            password=password,
            ssh_keys=ssh_keys,
            recipe=recipe,
            recipe_params=recipe_params,
            send_email_mode=send_email_mode,
        )
        return await self._s.execute(call, retry)

    async def power_on(self, server_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Power the server on."""
        return await self._s.execute(power_call("power_on", server_id), retry)

    async def power_off(self, server_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Power the server off."""
        return await self._s.execute(power_call("power_off", server_id), retry)

    async def power_reset(
        self, server_id: int, *, retry: RetryPolicy | None = None
    ) -> ActionResult:
        """Reboot a running server, or power on a stopped one."""
        return await self._s.execute(power_call("power_reset", server_id), retry)

    async def ports_off(self, server_id: int, *, retry: RetryPolicy | None = None) -> Server:
        """Switch off the server's data ports (IPMI untouched); the server read back."""
        return await self._switch_ports(server_id, PortStatus.DOWN, retry)

    async def ports_on(self, server_id: int, *, retry: RetryPolicy | None = None) -> Server:
        """Switch on the server's data ports; the server read back."""
        return await self._switch_ports(server_id, PortStatus.UP, retry)

    async def _switch_ports(
        self, server_id: int, target: PortStatus, retry: RetryPolicy | None
    ) -> Server:
        server = await self.get(server_id, retry=retry)
        calls = port_switch_calls(server, target)
        for call in calls:
            await self._s.execute(call, retry)
        return await self.get(server_id, retry=retry) if calls else server

    async def wait(
        self,
        server_id: int,
        *,
        timeout: float = 7200,
        poll_interval: float = 15.0,
        after_operation_id: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> Server:
        """Poll until the server's operation ends; the server as last read."""
        waiter = Waiter.start(
            server_id,
            timeout=timeout,
            poll_interval=poll_interval,
            after_operation_id=after_operation_id,
            now=self._s.clock(),
        )
        while True:
            server = await self.get(server_id, retry=retry)
            delay = waiter.next_sleep(server, self._s.clock())
            if delay is None:
                return server
            await self._s.sleep(delay)
