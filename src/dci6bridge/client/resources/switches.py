"""Switch ports: list a switch's ports, switch one on or off (``dci.switches``).

The on/off routes are *inferred* (DCImanager 5 had ``switch.port.on/off``); read the
server's ``switch_connection[].admin_status`` back to confirm.
"""

from __future__ import annotations

from dci6bridge.client._core import Call
from dci6bridge.client._http import AsyncSession, SyncSession
from dci6bridge.client._retry import RetryPolicy
from dci6bridge.client.models import ActionResult, SwitchPort

from ._common import Paging, aiterate, check_id, iterate, parse_action

__all__ = ["AsyncSwitches", "Switches", "port_call", "ports_paging"]


def ports_paging(switch_id: int) -> Paging[SwitchPort]:
    """Paging plan over one switch's ports."""
    return Paging.of("switches.ports", SwitchPort, switch_id=check_id("switch_id", switch_id))


def port_call(switch_id: int, port_id: int, *, on: bool) -> Call[ActionResult]:
    """Switch one port on or off."""
    return Call.to(
        "switches.port_on" if on else "switches.port_off",
        parse_action,
        switch_id=check_id("switch_id", switch_id),
        port_id=check_id("port_id", port_id),
    )


class Switches:
    """Switch ports (sync)."""

    def __init__(self, session: SyncSession) -> None:
        self._s = session

    def ports(self, switch_id: int, *, retry: RetryPolicy | None = None) -> list[SwitchPort]:
        """Every port of switch ``switch_id``."""
        return list(iterate(self._s, ports_paging(switch_id), retry))

    def port_on(
        self, switch_id: int, port_id: int, *, retry: RetryPolicy | None = None
    ) -> ActionResult:
        """Switch a port on (admin status up)."""
        return self._s.execute(port_call(switch_id, port_id, on=True), retry)

    def port_off(
        self, switch_id: int, port_id: int, *, retry: RetryPolicy | None = None
    ) -> ActionResult:
        """Switch a port off (admin status down)."""
        return self._s.execute(port_call(switch_id, port_id, on=False), retry)


class AsyncSwitches:
    """Switch ports (async)."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def ports(self, switch_id: int, *, retry: RetryPolicy | None = None) -> list[SwitchPort]:
        """Every port of switch ``switch_id``."""
        return [p async for p in aiterate(self._s, ports_paging(switch_id), retry)]

    async def port_on(
        self, switch_id: int, port_id: int, *, retry: RetryPolicy | None = None
    ) -> ActionResult:
        """Switch a port on (admin status up)."""
        return await self._s.execute(port_call(switch_id, port_id, on=True), retry)

    async def port_off(
        self, switch_id: int, port_id: int, *, retry: RetryPolicy | None = None
    ) -> ActionResult:
        """Switch a port off (admin status down)."""
        return await self._s.execute(port_call(switch_id, port_id, on=False), retry)
