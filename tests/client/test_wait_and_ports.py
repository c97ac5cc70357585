"""``servers.wait`` (terminal, failure, timeout, newer operation) and
``servers.ports_off/on`` (data ports only, idempotent), against scripted answers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import dci6bridge as d
from dci6bridge.client.models import PortStatus

from .conftest import FakeTime, MockApi

PATH = "/api/dci/v3/server/5"


def op(op_id: int, status: str, **info: Any) -> httpx.Response:
    return httpx.Response(
        200,
        json={"id": 5, "operation": {"id": op_id, "status": status, "status_info": info}},
    )


def test_wait_returns_on_terminal(api: MockApi, make_client, clock: FakeTime) -> None:
    api.on("GET", PATH, op(7, "running"), op(7, "running"), op(7, "ok"))
    server = make_client().servers.wait(5, poll_interval=10)
    assert server.operation is not None
    assert server.operation.status is d.OperationStatus.OK
    assert clock.sleeps == [10, 10]


def test_wait_for_a_newer_operation(api: MockApi, make_client, clock: FakeTime) -> None:
    """Right after an action the old operation still reads ``ok``: keep waiting."""
    api.on("GET", PATH, op(7, "ok"), op(8, "running"), op(8, "ok"))
    server = make_client().servers.wait(5, poll_interval=5, after_operation_id=7)
    assert server.operation is not None
    assert server.operation.id == 8
    assert clock.sleeps == [5, 5]


def test_wait_raises_on_failure(api: MockApi, make_client) -> None:
    api.on("GET", PATH, op(7, "running"), op(7, "install_failed", reason="disk"))
    with pytest.raises(d.OperationFailedError) as info:
        make_client().servers.wait(5)
    exc = info.value
    assert (exc.server_id, exc.status, exc.status_info) == (5, "install_failed", {"reason": "disk"})
    assert "install_failed" in str(exc)


def test_wait_times_out(api: MockApi, make_client, clock: FakeTime) -> None:
    api.on("GET", PATH, op(7, "running", step="partitioning"))
    started = clock.now
    with pytest.raises(d.OperationTimeoutError) as info:
        make_client().servers.wait(5, timeout=100, poll_interval=30)
    assert clock.sleeps == [30, 30, 30, 10]  # the last sleep ends exactly at the deadline
    assert clock.now - started == 100
    assert info.value.status == "running"
    assert info.value.status_info == {"step": "partitioning"}
    assert "after 100 s" in str(info.value)


def test_wait_without_operation(api: MockApi, make_client) -> None:
    api.on("GET", PATH, httpx.Response(200, json={"id": 5}))
    assert make_client().servers.wait(5).id == 5


def test_async_wait(api: MockApi, make_async_client, clock: FakeTime) -> None:
    api.on("GET", PATH, op(3, "running"), op(4, "ok"))

    async def run() -> d.Server:
        async with make_async_client() as c:
            return await c.servers.wait(5, poll_interval=2, after_operation_id=3)

    assert asyncio.run(run()).operation == d.Operation(id=4, status="ok", status_info={})
    assert clock.sleeps == [2]


def conn(conn_id: int, port: int, status: str, *, ipmi: bool = False) -> dict[str, Any]:
    return {
        "id": conn_id,
        "switch": 2,
        "connection_id": port,
        "admin_status": status,
        "is_ipmi_connection": ipmi,
    }


def server(*conns: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"id": 5, "switch_connection": list(conns)})


def test_ports_off_leaves_ipmi_alone(api: MockApi, make_client) -> None:
    before = server(conn(1, 11, "up", ipmi=True), conn(2, 12, "up"), conn(3, 13, "down"))
    after = server(conn(1, 11, "up", ipmi=True), conn(2, 12, "down"), conn(3, 13, "down"))
    api.on("GET", PATH, before, after)
    api.json("POST", "/api/dci/v3/switch/2/port/12/off", {})
    result = make_client().servers.ports_off(5)
    assert api.paths() == [
        "GET /api/dci/v3/server/5",
        "POST /api/dci/v3/switch/2/port/12/off",
        "GET /api/dci/v3/server/5",
    ]
    assert [c.admin_status for c in result.data_connections] == [PortStatus.DOWN] * 2
    assert result.switch_connection[0].admin_status is PortStatus.UP


def test_ports_on_idempotent(api: MockApi, make_client) -> None:
    api.on("GET", PATH, server(conn(1, 11, "down", ipmi=True), conn(2, 12, "up")))
    make_client().servers.ports_on(5)
    assert api.paths() == ["GET /api/dci/v3/server/5"]  # nothing to do, no second read


def test_async_ports_on(api: MockApi, make_async_client) -> None:
    api.on(
        "GET",
        PATH,
        server(conn(2, 12, "down"), conn(3, 13, "down")),
        server(conn(2, 12, "up"), conn(3, 13, "up")),
    )
    api.json("POST", "/api/dci/v3/switch/2/port/12/on", {})
    api.json("POST", "/api/dci/v3/switch/2/port/13/on", {})

    async def run() -> d.Server:
        async with make_async_client() as c:
            return await c.servers.ports_on(5)

    result = asyncio.run(run())
    assert {c.admin_status for c in result.switch_connection} == {PortStatus.UP}
    assert api.paths().count("GET /api/dci/v3/server/5") == 2


def test_wait_needs_another_operation_id(api: MockApi, make_client, clock: FakeTime) -> None:
    """Ids are compared for difference (not order); an id-less operation never counts."""
    no_id = httpx.Response(200, json={"id": 5, "operation": {"status": "ok"}})
    api.on("GET", PATH, op(9, "ok"), no_id, op(3, "ok"))
    server = make_client().servers.wait(5, poll_interval=1, after_operation_id=9)
    assert server.operation is not None
    assert server.operation.id == 3
    assert clock.sleeps == [1, 1]
