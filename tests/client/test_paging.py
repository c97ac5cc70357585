"""Lazy pagination over ``limit=offset,count`` pages, sync and async."""

from __future__ import annotations

import asyncio
import gc
import itertools

import httpx
import pytest

import dci6bridge as d

from .conftest import MockApi

LIST = "/api/dci/v3/server"


class Inventory:
    """Answers the server list from a virtual inventory of ``total`` servers."""

    def __init__(self, total: int, *, with_size: bool = True) -> None:
        self.total = total
        self.with_size = with_size
        self.limits: list[tuple[int, int]] = []
        self.requests_where: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        offset, count = (int(x) for x in request.url.params["limit"].split(","))
        self.limits.append((offset, count))
        if "where" in request.url.params:
            self.requests_where.add(request.url.params["where"])
        ids = range(offset + 1, min(offset + count, self.total) + 1)
        body: dict[str, object] = {"list": [{"id": i, "name": f"s{i}"} for i in ids]}
        if self.with_size:
            body["size"] = self.total
        return httpx.Response(200, json=body)


def test_100k_servers_one_page_at_a_time(api: MockApi, make_client) -> None:
    inv = Inventory(100_000)
    api.on("GET", LIST, inv)
    it = make_client().servers.list(page_size=1000)
    assert inv.limits == []  # nothing fetched until iteration starts
    first = list(itertools.islice(it, 10))
    assert [s.id for s in first] == list(range(1, 11))
    assert inv.limits == [(0, 1000)]
    list(itertools.islice(it, 990))
    assert len(inv.limits) == 1  # the first page is used up, the next not yet needed
    next(it)
    assert inv.limits[-1] == (1000, 1000)
    seen = 1001
    last_id = 0
    for server in it:
        seen += 1
        last_id = server.id
    assert seen == 100_000
    assert last_id == 100_000
    assert len(inv.limits) == 100
    assert inv.limits[-1] == (99_000, 1000)


def test_only_one_page_alive(api: MockApi, make_client) -> None:
    """Servers of consumed pages are garbage: the iterator keeps no history."""
    from dci6bridge import Server

    api.on("GET", LIST, Inventory(10_000))
    it = make_client().servers.list(page_size=500)
    for _ in itertools.islice(it, 5_000):
        pass
    gc.collect()
    alive = sum(1 for o in gc.get_objects() if isinstance(o, Server))
    assert alive <= 500


def test_limit_caps_total(api: MockApi, make_client) -> None:
    inv = Inventory(5000)
    api.on("GET", LIST, inv)
    got = list(make_client().servers.list(page_size=500, limit=1234))
    assert len(got) == 1234
    assert inv.limits == [(0, 500), (500, 500), (1000, 234)]


def test_limit_zero_fetches_nothing(api: MockApi, make_client) -> None:
    inv = Inventory(10)
    api.on("GET", LIST, inv)
    assert list(make_client().servers.list(limit=0)) == []
    assert inv.limits == []


def test_stops_on_size(api: MockApi, make_client) -> None:
    inv = Inventory(1000)
    api.on("GET", LIST, inv)
    assert len(list(make_client().servers.list(page_size=500))) == 1000
    assert inv.limits == [(0, 500), (500, 500)]  # size says done: no empty third page


def test_without_size_stops_on_short_page(api: MockApi, make_client) -> None:
    inv = Inventory(1001, with_size=False)
    api.on("GET", LIST, inv)
    assert len(list(make_client().servers.list(page_size=500))) == 1001
    assert inv.limits == [(0, 500), (500, 500), (1000, 500)]


def test_without_size_exact_multiple(api: MockApi, make_client) -> None:
    inv = Inventory(1000, with_size=False)
    api.on("GET", LIST, inv)
    assert len(list(make_client().servers.list(page_size=500))) == 1000
    assert inv.limits == [(0, 500), (500, 500), (1000, 500)]


def test_server_returning_more_than_asked_is_trimmed(api: MockApi, make_client) -> None:
    api.json("GET", LIST, {"list": [{"id": i} for i in range(1, 21)], "size": 20})
    assert len(list(make_client().servers.list(page_size=5, limit=5))) == 5


def test_other_lists_collect_every_page(api: MockApi, make_client) -> None:
    def users(request: httpx.Request) -> httpx.Response:
        offset, count = (int(x) for x in request.url.params["limit"].split(","))
        ids = range(offset + 1, min(offset + count, 1200) + 1)
        return httpx.Response(
            200, json={"list": [{"id": i, "email": f"u{i}@x.y"} for i in ids], "size": 1200}
        )

    api.on("GET", "/api/dci/v3/user", users)
    assert len(make_client().users.list()) == 1200


def test_async_iteration(api: MockApi, make_async_client) -> None:
    inv = Inventory(2500)
    api.on("GET", LIST, inv)

    async def run() -> tuple[int, int, int]:
        async with make_async_client() as c:
            it = c.servers.list(where=d.Q("location_id") == 1, page_size=1000)
            first = await it.__anext__()
            pages_after_first = len(inv.limits)
            n = 1
            async for _ in it:
                n += 1
            return first.id, n, pages_after_first

    assert asyncio.run(run()) == (1, 2500, 1)
    assert [lim[0] for lim in inv.limits] == [0, 1000, 2000]
    assert inv.requests_where == {"location_id EQ 1"}


@pytest.mark.parametrize("page_size", [1, 7, 500])
def test_page_sizes(api: MockApi, make_client, page_size) -> None:
    api.on("GET", LIST, Inventory(50))
    assert [s.id for s in make_client().servers.list(page_size=page_size)] == list(range(1, 51))


def test_one_page_from_an_offset_with_the_total(api: MockApi, make_client) -> None:
    inv = Inventory(5000)
    api.on("GET", LIST, inv)
    page = make_client().servers.page(d.Q("location_id") == 3, offset=1234, count=10)
    assert [s.id for s in page.items] == list(range(1235, 1245))
    assert page.size == 5000
    assert inv.limits == [(1234, 10)]
    assert inv.requests_where == {"location_id EQ 3"}


def test_one_page_past_the_end_and_without_size(api: MockApi, make_client) -> None:
    inv = Inventory(30, with_size=False)
    api.on("GET", LIST, inv)
    client = make_client()
    assert client.servers.page(offset=25, count=10) == d.Page(
        [d.Server(id=i, name=f"s{i}") for i in range(26, 31)], None
    )
    assert client.servers.page(offset=40, count=10).items == []
    assert inv.limits == [(25, 10), (40, 10)]


def test_one_page_async(api: MockApi, make_async_client) -> None:
    inv = Inventory(100)
    api.on("GET", LIST, inv)

    async def run() -> d.Page[d.Server]:
        async with make_async_client() as c:
            return await c.servers.page(orderby="id desc", offset=5, count=3)

    page = asyncio.run(run())
    assert [s.id for s in page.items] == [6, 7, 8]  # the mock ignores orderby
    assert page.size == 100
    assert inv.limits == [(5, 3)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"offset": -1}, "offset: -1 is not a non-negative integer"),
        ({"offset": True}, "offset: True is not a non-negative integer"),
        ({"count": 0}, "count: 0 is not between 1 and 10000"),
        ({"count": 10_001}, "count: 10001 is not between 1 and 10000"),
        ({"count": "10"}, "count: '10' is not between 1 and 10000"),
    ],
)
def test_one_page_refuses_bad_windows_before_any_request(
    api: MockApi, make_client, kwargs, message
) -> None:
    inv = Inventory(10)
    api.on("GET", LIST, inv)
    with pytest.raises(d.ConfigError, match=message):
        make_client().servers.page(**kwargs)
    assert inv.limits == []
