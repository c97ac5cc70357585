"""IPv4 pools and the addresses bound to servers."""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from ._errors import bad_value, conflict, not_found
from ._inventory import IpPoolSpec
from ._records import Ip, IpPool

__all__ = ["Addresses"]


class Addresses:
    """Pools hand out their lowest free address first; released ones go back."""

    def __init__(self, specs: Iterable[IpPoolSpec]) -> None:
        self.pools: dict[int, IpPool] = {}
        self.bound: dict[int, Ip] = {}
        self._last_id = 0
        for p in specs:
            free = [(int(ipaddress.ip_address(a)), a) for a in p.addresses]
            heapq.heapify(free)
            self.pools[p.id] = IpPool(
                p.id, p.name, p.network, p.gateway, p.location_id, len(free), free
            )

    def rows(self) -> list[dict[str, Any]]:
        """Every pool as ``GET ip/v3/ippool`` lists it."""
        return [p.to_json() for p in self.pools.values()]

    def take(
        self, server_id: int, location_id: int, count: int, pool_ids: Sequence[int] | None
    ) -> list[Ip]:
        """Bind ``count`` addresses from the pools named (none: the location's), all or
        nothing."""
        if not pool_ids:  # None or []: the location's pools (the client sends [] for "any")
            pools = [p for p in self.pools.values() if p.location_id == location_id]
        else:
            unknown = [p for p in pool_ids if p not in self.pools]
            if unknown:
                raise bad_value("ipv4_pool", list(pool_ids), f"unknown pool id(s) {unknown}")
            pools = [self.pools[p] for p in pool_ids]
        if sum(len(p.free) for p in pools) < count:
            raise conflict(
                f"not enough free addresses for {count} IPv4 address(es)",
                ipv4_pool=[p.id for p in pools],
            )
        taken: list[Ip] = []
        for pool in pools:
            while len(taken) < count and pool.free:
                value, address = heapq.heappop(pool.free)
                self._last_id += 1
                ip = Ip(
                    self._last_id, address, value, pool.id, server_id, pool.gateway, pool.network
                )
                self.bound[ip.id] = ip
                taken.append(ip)
        return taken

    def give_back(self, ip_id: int) -> Ip:
        """Unbind an address and return it to its pool (404 if not bound)."""
        ip = self.bound.pop(ip_id, None)
        if ip is None:
            raise not_found("ip", ip_id)
        heapq.heappush(self.pools[ip.pool_id].free, (ip.value, ip.address))
        return ip
