"""What every resource module shares: id checks, paging plans, action results."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import attrs

from dci6bridge.client._checks import is_int
from dci6bridge.client._converter import parser, structure_list
from dci6bridge.client._core import Call
from dci6bridge.client._http import AsyncSession, SyncSession
from dci6bridge.client._retry import RetryPolicy
from dci6bridge.client.models import ActionResult, Page
from dci6bridge.client.query import Condition, SortKey, render_orderby, render_where
from dci6bridge.errors import ConfigError

__all__ = [
    "Page",
    "Paging",
    "aiterate",
    "check_id",
    "check_window",
    "iterate",
    "parse_action",
]

T = TypeVar("T")
_MAX_PAGE = 10_000


def check_id(name: str, value: object) -> int:
    """``value`` as an object id, or :class:`ConfigError` naming the argument and value."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name}: {value!r} is not a non-negative integer id")
    return value


_parse_action = parser(ActionResult)


def parse_action(data: Any) -> ActionResult:
    """An action's answer: ``{"id", "task"}``, ``{}`` or nothing at all."""
    if not isinstance(data, dict):
        return ActionResult()
    return _parse_action(data)


def check_window(offset: int, count: int) -> None:
    """:class:`ConfigError` naming each bad argument of a one-page read."""
    problems = []
    if not is_int(offset) or offset < 0:
        problems.append(f"offset: {offset!r} is not a non-negative integer")
    if not is_int(count) or not 1 <= count <= _MAX_PAGE:
        problems.append(f"count: {count!r} is not between 1 and {_MAX_PAGE}")
    if problems:
        raise ConfigError(problems)


@attrs.frozen
class Paging(Generic[T]):
    """How to walk a list route page by page (``limit=offset,count``); no I/O.

    Without an explicit ``orderby`` the walk sorts by ``id asc`` so pages do not shift
    while we read them.
    """

    route_name: str
    model: type[T]
    where: str | None = None
    orderby: str | None = "id asc"
    page_size: int = 500
    limit: int | None = None
    path_params: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(
        cls,
        route_name: str,
        model: type[T],
        *,
        where: Condition | str | None = None,
        orderby: SortKey | str | None = None,
        page_size: int = 500,
        limit: int | None = None,
        **path_params: int,
    ) -> Paging[T]:
        """A validated plan; bad arguments raise :class:`ConfigError` before any request."""
        problems = []
        if not is_int(page_size):
            problems.append(f"page_size: {page_size!r} is not an integer")
        elif not 1 <= page_size <= _MAX_PAGE:
            problems.append(f"page_size: {page_size!r} is not between 1 and {_MAX_PAGE}")
        if limit is not None and (not is_int(limit) or limit < 0):
            problems.append(f"limit: {limit!r} is not a non-negative integer")
        if problems:
            raise ConfigError(problems)
        return cls(
            route_name,
            model,
            render_where(where),
            render_orderby(orderby) or "id asc",
            page_size,
            limit,
            tuple(path_params.items()),
        )

    def count(self, offset: int) -> int:
        """How many items to ask for at ``offset``."""
        if self.limit is None:
            return self.page_size
        return min(self.page_size, self.limit - offset)

    def call(self, offset: int) -> Call[Page[T]]:
        """The request for the page starting at ``offset``."""
        count = self.count(offset)
        model = self.model

        def parse(data: Any) -> Page[T]:
            items = structure_list(data, model)[:count]
            size = data.get("size")
            return Page(items, size if isinstance(size, int) else None)

        params = {"where": self.where, "orderby": self.orderby, "limit": f"{offset},{count}"}
        return Call.to(self.route_name, parse, params=params, **dict(self.path_params))

    def next_offset(self, offset: int, page: Page[T]) -> int | None:
        """Where the next page starts, or ``None`` when the list is exhausted."""
        got = len(page.items)
        after = offset + got
        if got == 0 or got < self.count(offset):
            return None
        if page.size is not None and after >= page.size:
            return None
        if self.limit is not None and after >= self.limit:
            return None
        return after


def iterate(session: SyncSession, paging: Paging[T], retry: RetryPolicy | None) -> Iterator[T]:
    """Items of every page, fetching the next page only when the previous one is used up."""
    offset: int | None = 0 if paging.count(0) > 0 else None
    while offset is not None:
        page = session.execute(paging.call(offset), retry)
        yield from page.items
        offset = paging.next_offset(offset, page)


async def aiterate(
    session: AsyncSession, paging: Paging[T], retry: RetryPolicy | None
) -> AsyncIterator[T]:
    """Async twin of :func:`iterate`."""
    offset: int | None = 0 if paging.count(0) > 0 else None
    while offset is not None:
        page = await session.execute(paging.call(offset), retry)
        for item in page.items:
            yield item
        offset = paging.next_offset(offset, page)
