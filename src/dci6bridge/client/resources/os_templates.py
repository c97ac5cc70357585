"""OS templates that can be installed (``dci.os_templates``; route inferred)."""

from __future__ import annotations

from dci6bridge.client._http import AsyncSession, SyncSession
from dci6bridge.client._retry import RetryPolicy
from dci6bridge.client.models import OsTemplate
from dci6bridge.client.query import Q

from ._common import Paging, aiterate, check_id, iterate

__all__ = ["AsyncOsTemplates", "OsTemplates"]


def templates_paging(location_id: int | None) -> Paging[OsTemplate]:
    """Paging plan over templates, optionally of one location (``location_id EQ n``)."""
    where = (
        None if location_id is None else Q("location_id") == check_id("location_id", location_id)
    )
    return Paging.of("os_templates.list", OsTemplate, where=where)


class OsTemplates:
    """OS templates (sync)."""

    def __init__(self, session: SyncSession) -> None:
        self._s = session

    def list(
        self, location_id: int | None = None, *, retry: RetryPolicy | None = None
    ) -> list[OsTemplate]:
        """Every template, or those of one location."""
        return list(iterate(self._s, templates_paging(location_id), retry))


class AsyncOsTemplates:
    """OS templates (async)."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def list(
        self, location_id: int | None = None, *, retry: RetryPolicy | None = None
    ) -> list[OsTemplate]:
        """Every template, or those of one location."""
        return [t async for t in aiterate(self._s, templates_paging(location_id), retry)]
