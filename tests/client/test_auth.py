"""Authentication: login answers, pre-issued tokens, re-login on 401 and before expiry,
one login under concurrency (threads and asyncio), revoking the session on close."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

import dci6bridge as d

from .conftest import LOGIN_PATH, FakeTime, MockApi

PATH = "/api/dci/v3/server/5"
OK = httpx.Response(200, json={"id": 5})
U401 = httpx.Response(401, json={"error": {"code": 3001, "msg": "Unauthorized"}})


def tokens_sent(api: MockApi, path: str = PATH) -> list[str]:
    return [r.headers["x-xsrf-token"] for r in api.requests if r.url.path == path]


@pytest.mark.parametrize("status", [200, 201])
def test_login_accepts_200_and_201(api: MockApi, make_client, status) -> None:
    api.json("POST", LOGIN_PATH, {"id": 3, "token": "T-OK", "expires_at": None}, status)
    api.on("GET", PATH, OK)
    make_client().servers.get(5)
    assert tokens_sent(api) == ["T-OK"]


def test_login_once_for_many_requests(api: MockApi, make_client) -> None:
    api.on("GET", PATH, OK)
    client = make_client()
    for _ in range(5):
        client.servers.get(5)
    assert api.logins == 1


def test_pre_issued_token(api: MockApi, make_client) -> None:
    api.on("GET", PATH, OK)
    with make_client(token=d.Secret("LONG-LIVED")) as client:
        client.servers.get(5)
    assert api.logins == 0
    assert tokens_sent(api) == ["LONG-LIVED"]
    assert api.paths() == ["GET " + PATH]  # never revoked: not ours


def test_pre_issued_token_401_raises(api: MockApi, make_client) -> None:
    api.on("GET", PATH, U401)
    with pytest.raises(d.AuthenticationError) as info:
        make_client(token="BAD").servers.get(5)
    assert info.value.error_code == 3001
    assert api.logins == 0


def test_relogin_once_on_401(api: MockApi, make_client) -> None:
    api.on("GET", PATH, U401, OK)
    assert make_client().servers.get(5).id == 5
    assert api.logins == 2
    assert tokens_sent(api) == ["TOKEN-0001-SECRETVALUE", "TOKEN-0002-SECRETVALUE"]


def test_second_401_raises(api: MockApi, make_client) -> None:
    api.on("GET", PATH, U401)
    with pytest.raises(d.AuthenticationError):
        make_client().servers.get(5)
    assert api.logins == 2  # one re-login, not a loop
    assert len(tokens_sent(api)) == 2


def test_renews_before_expiry(api: MockApi, make_client, clock: FakeTime) -> None:
    api.login_expires_at = "2027-01-15 08:00:00"  # UTC
    expires = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
    clock.now = expires - 3600
    api.on("GET", PATH, OK)
    client = make_client()
    client.servers.get(5)
    clock.now = expires - 120  # still outside the 60 s margin
    client.servers.get(5)
    assert api.logins == 1
    clock.now = expires - 30  # inside the margin: renew first
    client.servers.get(5)
    assert api.logins == 2
    assert tokens_sent(api)[-1] == "TOKEN-0002-SECRETVALUE"


def test_short_lived_token_renews_near_its_end_not_on_every_request(
    api: MockApi, make_client, clock: FakeTime
) -> None:
    # A token living less than the 60 s margin is renewed in the last quarter of its
    # life: a fixed margin would log in again before every request.
    api.login_expires_at = "2027-01-15 08:00:00"  # UTC
    expires = 1_800_000_000.0
    clock.now = expires - 20
    api.on("GET", PATH, OK)
    client = make_client()
    for now in (expires - 20, expires - 12, expires - 6):
        clock.now = now
        client.servers.get(5)
    assert api.logins == 1
    clock.now = expires - 4  # inside the last quarter (5 s) of 20 s
    client.servers.get(5)
    assert api.logins == 2


def test_a_clock_ahead_of_the_platform_does_not_log_in_before_every_request(
    api: MockApi, make_client, clock: FakeTime
) -> None:
    # Our clock runs a day ahead: the fresh token looks expired. The client keeps it
    # until the platform answers 401, instead of logging in again for every request.
    api.login_expires_at = "2027-01-15 08:00:00"
    clock.now = 1_800_000_000.0 + 86_400
    api.on("GET", PATH, OK, OK, OK, U401, OK)
    client = make_client()
    for _ in range(3):
        client.servers.get(5)
    assert api.logins == 1
    client.servers.get(5)  # 401: log in again, once
    assert api.logins == 2


def test_unparseable_expiry_is_ignored(api: MockApi, make_client) -> None:
    api.json("POST", LOGIN_PATH, {"id": 1, "token": "T", "expires_at": "soon"}, 201)
    api.on("GET", PATH, OK)
    client = make_client()
    client.servers.get(5)
    client.servers.get(5)
    assert sum(r.url.path == LOGIN_PATH for r in api.requests) == 1


def test_close_revokes_by_token_id(api: MockApi, make_client) -> None:
    api.on("GET", PATH, OK)
    client = make_client()
    client.servers.get(5)
    client.close()
    client.close()  # idempotent
    logout = api.requests[-1]
    assert (logout.method, logout.url.path) == ("DELETE", "/api/auth/v4/token/101")
    assert "SECRETVALUE" not in str(logout.url)
    assert logout.headers["x-xsrf-token"] == "TOKEN-0001-SECRETVALUE"
    assert sum(r.method == "DELETE" for r in api.requests) == 1


def test_close_without_login_sends_nothing(api: MockApi, make_client) -> None:
    make_client().close()
    assert api.requests == []


def test_close_survives_failed_logout(api: MockApi, make_client) -> None:
    api.on("GET", PATH, OK)
    api.on("DELETE", "/api/auth/v4/token/101", httpx.ConnectError("gone"))
    client = make_client()
    client.servers.get(5)
    client.close()  # logged, not raised


def test_one_login_under_20_threads(api: MockApi, make_client) -> None:
    def slow_login(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)  # widen the race window
        return api._login(request)

    api.on("POST", LOGIN_PATH, slow_login)
    api.on("GET", PATH, OK)
    client = make_client()
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            client.servers.get(5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert api.logins == 1
    assert len(tokens_sent(api)) == 20


def test_one_relogin_when_20_threads_get_401(api: MockApi, make_client) -> None:
    """All requests fail with the old token at once: only one of them logs in again."""
    api.on("GET", PATH, OK)
    client = make_client()
    client.servers.get(5)
    stale = "TOKEN-0001-SECRETVALUE"

    def by_token(request: httpx.Request) -> httpx.Response:
        if request.headers["x-xsrf-token"] == stale:
            time.sleep(0.01)
            return httpx.Response(401, json={"error": {"code": 3001, "msg": "expired"}})
        return httpx.Response(200, json={"id": 5})

    api.on("GET", PATH, by_token)
    barrier = threading.Barrier(20)

    def work() -> None:
        barrier.wait()
        client.servers.get(5)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert api.logins == 2


def test_one_login_under_20_tasks(api: MockApi, make_async_client) -> None:
    async def slow_login(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return api._login(request)

    api.on("POST", LOGIN_PATH, slow_login)
    api.on("GET", PATH, OK)

    async def run() -> list[int]:
        async with make_async_client() as client:
            servers = await asyncio.gather(*(client.servers.get(5) for _ in range(20)))
        return [s.id for s in servers]

    assert asyncio.run(run()) == [5] * 20
    assert api.logins == 1
    assert api.requests[-1].url.path == "/api/auth/v4/token/101"  # aclose revoked


def test_async_relogin_on_401_and_expiry(api: MockApi, make_async_client, clock: FakeTime) -> None:
    api.login_expires_at = "2027-01-15 08:00:00"
    clock.now = 1_800_000_000.0 - 3600
    api.on("GET", PATH, U401, OK)

    async def run() -> None:
        async with make_async_client() as client:
            await client.servers.get(5)  # 401, re-login, OK
            clock.now = 1_800_000_000.0 - 10
            await client.servers.get(5)  # renew before expiry

    asyncio.run(run())
    assert api.logins == 3


def test_expires_at_parsing() -> None:
    from dci6bridge.client._core import parse_expires_at

    assert parse_expires_at("2027-01-15 08:00:00") == 1_800_000_000.0
    assert parse_expires_at("2027-01-15T08:00:00Z") == 1_800_000_000.0
    assert parse_expires_at(None) is None
    assert parse_expires_at("") is None
    assert parse_expires_at("garbage") is None


def test_one_relogin_when_20_tasks_get_401(api: MockApi, make_async_client) -> None:
    stale = "TOKEN-0001-SECRETVALUE"

    async def by_token(request: httpx.Request) -> httpx.Response:
        if request.headers["x-xsrf-token"] == stale:
            await asyncio.sleep(0.01)
            return httpx.Response(401, json={"error": {"code": 3001, "msg": "expired"}})
        return httpx.Response(200, json={"id": 5})

    async def run() -> None:
        async with make_async_client() as client:
            api.on("GET", PATH, OK)
            await client.servers.get(5)
            api.on("GET", PATH, by_token)
            await asyncio.gather(*(client.servers.get(5) for _ in range(20)))

    asyncio.run(run())
    assert api.logins == 2
