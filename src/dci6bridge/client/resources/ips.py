"""IP addresses: bind to a server, unbind, list pools (``dci.ips``).

Bind and unbind follow VMmanager 6 (``VM6 analogy``); pools come from IPmanager 6.
"""

from __future__ import annotations

from collections.abc import Sequence

from dci6bridge.client._checks import is_int
from dci6bridge.client._core import Call
from dci6bridge.client._http import AsyncSession, SyncSession
from dci6bridge.client._retry import RetryPolicy
from dci6bridge.client.models import ActionResult, IpPool
from dci6bridge.errors import ConfigError

from ._common import Paging, aiterate, check_id, iterate, parse_action

__all__ = ["AsyncIps", "Ips", "assign_call"]


def assign_call(server_id: int, count: int, pool_ids: Sequence[int]) -> Call[ActionResult]:
    """Bind ``count`` IPv4 addresses from ``pool_ids`` (any pool if empty)."""
    if not is_int(count) or count < 1:
        raise ConfigError(f"count: {count!r} is not a positive integer")
    if isinstance(pool_ids, (str, bytes)):
        raise ConfigError(f"pool_ids: {pool_ids!r} is not a sequence of ids")
    pools = [check_id(f"pool_ids[{i}]", p) for i, p in enumerate(pool_ids)]
    return Call.to(
        "ips.assign",
        parse_action,
        body={"ipv4_number": count, "ipv4_pool": pools},
        server_id=check_id("server_id", server_id),
    )


def release_call(ip_id: int) -> Call[ActionResult]:
    """Unbind one address."""
    return Call.to("ips.release", parse_action, ip_id=check_id("ip_id", ip_id))


def pools_paging() -> Paging[IpPool]:
    """Paging plan over IPmanager pools."""
    return Paging.of("ips.pools", IpPool)


class Ips:
    """IP addresses (sync)."""

    def __init__(self, session: SyncSession) -> None:
        self._s = session

    def assign(
        self,
        server_id: int,
        *,
        count: int = 1,
        pool_ids: Sequence[int] = (),
        retry: RetryPolicy | None = None,
    ) -> ActionResult:
        """Bind ``count`` IPv4 addresses to the server."""
        return self._s.execute(assign_call(server_id, count, pool_ids), retry)

    def release(self, ip_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Unbind an address (``server.ip[].id``)."""
        return self._s.execute(release_call(ip_id), retry)

    def pools(self, *, retry: RetryPolicy | None = None) -> list[IpPool]:
        """Every IP pool."""
        return list(iterate(self._s, pools_paging(), retry))


class AsyncIps:
    """IP addresses (async)."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def assign(
        self,
        server_id: int,
        *,
        count: int = 1,
        pool_ids: Sequence[int] = (),
        retry: RetryPolicy | None = None,
    ) -> ActionResult:
        """Bind ``count`` IPv4 addresses to the server."""
        return await self._s.execute(assign_call(server_id, count, pool_ids), retry)

    async def release(self, ip_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Unbind an address (``server.ip[].id``)."""
        return await self._s.execute(release_call(ip_id), retry)

    async def pools(self, *, retry: RetryPolicy | None = None) -> list[IpPool]:
        """Every IP pool."""
        return [p async for p in aiterate(self._s, pools_paging(), retry)]
