"""DCImanager locations, one per data center (``dci.locations``; route inferred)."""

from __future__ import annotations

from dci6bridge.client._http import AsyncSession, SyncSession
from dci6bridge.client._retry import RetryPolicy
from dci6bridge.client.models import Location

from ._common import Paging, aiterate, iterate

__all__ = ["AsyncLocations", "Locations"]


def locations_paging() -> Paging[Location]:
    """Paging plan over the location list."""
    return Paging.of("locations.list", Location)


class Locations:
    """Locations (sync)."""

    def __init__(self, session: SyncSession) -> None:
        self._s = session

    def list(self, *, retry: RetryPolicy | None = None) -> list[Location]:
        """Every location."""
        return list(iterate(self._s, locations_paging(), retry))


class AsyncLocations:
    """Locations (async)."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def list(self, *, retry: RetryPolicy | None = None) -> list[Location]:
        """Every location."""
        return [loc async for loc in aiterate(self._s, locations_paging(), retry)]
