"""Fixtures for the client's unit tests: a scripted DCImanager behind httpx.MockTransport,
and a fake clock whose sleep advances it (tests never really wait)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

import dci6bridge as d

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "Adm1n-Pa55w0rd-XYZ"
LOGIN_PATH = "/api/auth/v4/public/token"

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]
Reply = httpx.Response | Exception | Handler


class FakeTime:
    """A POSIX clock at a fixed start; ``sleep`` records and advances it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def _fresh(response: httpx.Response) -> httpx.Response:
    """A new response with the same status, headers and body: a response object is
    bound to the client that read it, and scripted replies repeat."""
    return httpx.Response(response.status_code, headers=response.headers, content=response.content)


class MockApi:
    """A scripted DCImanager: ``on(method, path, *replies)`` queues replies per route.

    A reply is a response, an exception to raise (transport failures) or a handler.
    The last queued reply repeats. Login answers 201 with a fresh token each time unless
    scripted otherwise; every request is kept in :attr:`requests`.
    """

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.replies: dict[tuple[str, str], list[Reply]] = {}
        self.logins = 0
        self.login_expires_at: str | None = None

    def on(self, method: str, path: str, *replies: Reply) -> MockApi:
        self.replies[(method, path)] = list(replies)
        return self

    def json(self, method: str, path: str, body: Any, status: int = 200) -> MockApi:
        return self.on(method, path, httpx.Response(status, json=body))

    def _login(self, request: httpx.Request) -> httpx.Response:
        self.logins += 1
        return httpx.Response(
            201,
            json={
                "id": 100 + self.logins,
                "token": f"TOKEN-{self.logins:04d}-SECRETVALUE",
                "expires_at": self.login_expires_at,
                "confirmed": False,
            },
        )

    def _pick(self, request: httpx.Request) -> Reply:
        self.requests.append(request)
        key = (request.method, request.url.path)
        queue = self.replies.get(key)
        if queue:
            return queue.pop(0) if len(queue) > 1 else queue[0]
        if key == ("POST", LOGIN_PATH):
            return self._login
        if key[0] == "DELETE" and key[1].startswith("/api/auth/v4/token/"):
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"error": {"code": 1106, "msg": f"no route {key}"}})

    def handle(self, request: httpx.Request) -> httpx.Response:
        reply = self._pick(request)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return _fresh(reply)
        result = reply(request)
        assert isinstance(result, httpx.Response)
        return result

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        reply = self._pick(request)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return _fresh(reply)
        result = reply(request)
        if not isinstance(result, httpx.Response):
            result = await result
        return result

    # ------------------------------------------------------------ helpers

    def paths(self, *, skip_login: bool = True) -> list[str]:
        return [
            f"{r.method} {r.url.path}"
            for r in self.requests
            if not (skip_login and r.url.path == LOGIN_PATH)
        ]

    def last(self, path: str | None = None) -> httpx.Request:
        for r in reversed(self.requests):
            if path is None or r.url.path == path:
                return r
        raise AssertionError(f"no request to {path}")

    @staticmethod
    def body(request: httpx.Request) -> Any:
        return json.loads(request.content) if request.content else None


@pytest.fixture
def api() -> MockApi:
    return MockApi()


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(api: MockApi, clock: FakeTime) -> Iterator[Callable[..., d.Client]]:
    made: list[d.Client] = []

    def make(**kwargs: Any) -> d.Client:
        options: dict[str, Any] = {
            "email": ADMIN_EMAIL,
            "password": ADMIN_PASSWORD,
            "transport": httpx.MockTransport(api.handle),
            "clock": clock,
            "sleep": clock.sleep,
        }
        if "token" in kwargs:
            options.pop("email")
            options.pop("password")
        options.update(kwargs)
        client = d.Client("https://dci.example.com", **options)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()


@pytest.fixture
def make_async_client(api: MockApi, clock: FakeTime) -> Callable[..., d.AsyncClient]:
    def make(**kwargs: Any) -> d.AsyncClient:
        options: dict[str, Any] = {
            "email": ADMIN_EMAIL,
            "password": ADMIN_PASSWORD,
            "transport": httpx.MockTransport(api.ahandle),
            "clock": clock,
            "sleep": clock.asleep,
        }
        if "token" in kwargs:
            options.pop("email")
            options.pop("password")
        options.update(kwargs)
        return d.AsyncClient("https://dci.example.com", **options)

    return make


def server_json(server_id: int, **fields: Any) -> dict[str, Any]:
    """A server object in the documented F2 shape."""
    body: dict[str, Any] = {
        "id": server_id,
        "name": f"srv-{server_id}",
        "operation": {"id": 1, "status": "ok", "status_info": {}, "progress_info": [{}]},
        "switch_connection": [],
        "ip": [],
    }
    body.update(fields)
    return body


@pytest.fixture(name="server_json")
def _server_json() -> Callable[..., dict[str, Any]]:
    return server_json
