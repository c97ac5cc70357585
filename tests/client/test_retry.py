"""Retries: what is retried for which method, the attempt cap, the total deadline,
backoff growth, per-call overrides. The fake clock's sleep never really waits."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import dci6bridge as d
from dci6bridge.client._retry import Failure

from .conftest import FakeTime, MockApi

PATH = "/api/dci/v3/server/5"
OK = httpx.Response(200, json={"id": 5})
U503 = httpx.Response(503, content=b"Unavailable")


def count(api: MockApi, method: str, path: str) -> int:
    return sum(1 for r in api.requests if r.method == method and r.url.path == path)


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("GET", PATH, lambda c: c.servers.get(5)),
        ("POST", "/api/dci/v3/server/5/power_on", lambda c: c.servers.power_on(5)),
        ("DELETE", "/api/dci/v3/ip/3", lambda c: c.ips.release(3)),
    ],
)
def test_503_retried_for_every_method(api: MockApi, make_client, clock, method, path, call) -> None:
    ok = httpx.Response(200, json={"id": 5})
    api.on(method, path, U503, U503, U503, ok)
    call(make_client())
    assert count(api, method, path) == 4
    assert len(clock.sleeps) == 3


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("x"), httpx.ConnectTimeout("x"), httpx.PoolTimeout("x")]
)
@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("GET", PATH, lambda c: c.servers.get(5)),
        ("POST", "/api/dci/v3/server/5/owner", lambda c: c.servers.set_owner(5, 1)),
        ("DELETE", "/api/dci/v3/user/3", lambda c: c.users.delete(3)),
    ],
)
def test_not_sent_failures_retried_for_every_method(
    api, make_client, exc, method, path, call
) -> None:
    api.on(method, path, exc, exc, httpx.Response(200, json={"id": 5}))
    call(make_client())
    assert count(api, method, path) == 3


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("x"), httpx.RemoteProtocolError("x"), httpx.ReadError("x")]
)
def test_lost_response_retried_for_get(api: MockApi, make_client, exc) -> None:
    api.on("GET", PATH, exc, OK)
    assert make_client().servers.get(5).id == 5
    assert count(api, "GET", PATH) == 2


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ReadTimeout("x"), d.APITimeoutError),
        (httpx.WriteTimeout("x"), d.APITimeoutError),
        (httpx.RemoteProtocolError("x"), d.APIConnectionError),
        (httpx.ReadError("x"), d.APIConnectionError),
    ],
)
def test_lost_response_never_retried_for_post(api: MockApi, make_client, exc, cls) -> None:
    """A POST may have acted: surface the failure so the caller reads back."""
    path = "/api/dci/v3/server/5/reinstall"
    api.on("POST", path, exc, httpx.Response(200, json={"id": 1}))
    with pytest.raises(cls):
        make_client().servers.install_os(5, 1, password="pw")
    assert count(api, "POST", path) == 1


@pytest.mark.parametrize("status", [500, 502, 504])
def test_other_5xx_retried_for_get_only(api: MockApi, make_client, status) -> None:
    api.on("GET", PATH, httpx.Response(status), OK)
    assert make_client().servers.get(5).id == 5
    post = "/api/dci/v3/server/5/power_off"
    api.on("POST", post, httpx.Response(status), httpx.Response(200, json={}))
    with pytest.raises(d.ServerError) as info:
        make_client().servers.power_off(5)
    assert info.value.status_code == status
    assert count(api, "POST", post) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
def test_client_errors_not_retried(api: MockApi, make_client, status) -> None:
    api.on("GET", PATH, httpx.Response(status, json={"error": {"code": 1, "msg": "m"}}))
    with pytest.raises(d.APIStatusError):
        make_client(token="pre-issued").servers.get(5)
    assert count(api, "GET", PATH) == 1


def test_attempt_cap_then_service_unavailable(api: MockApi, make_client, clock) -> None:
    api.on("GET", PATH, U503)
    with pytest.raises(d.ServiceUnavailableError) as info:
        make_client(retry=d.RetryPolicy(attempts=4)).servers.get(5)
    assert info.value.status_code == 503
    assert info.value.message == "Unavailable"
    assert count(api, "GET", PATH) == 4
    assert len(clock.sleeps) == 3


def test_default_policy_makes_ten_attempts(api: MockApi, make_client) -> None:
    api.on("POST", "/api/dci/v3/server/5/power_on", U503)
    with pytest.raises(d.ServiceUnavailableError):
        make_client().servers.power_on(5)
    assert count(api, "POST", "/api/dci/v3/server/5/power_on") == 10


def test_connection_attempts_exhausted(api: MockApi, make_client) -> None:
    api.on("GET", PATH, httpx.ConnectError("refused"))
    with pytest.raises(d.APIConnectionError, match="ConnectError"):
        make_client(retry=d.RetryPolicy(attempts=3)).servers.get(5)
    assert count(api, "GET", PATH) == 3


def test_backoff_grows_and_is_capped(api: MockApi, make_client, clock: FakeTime) -> None:
    api.on("GET", PATH, U503)
    policy = d.RetryPolicy(attempts=8, initial=0.1, max_delay=1.0, jitter=False, deadline=1000)
    with pytest.raises(d.ServiceUnavailableError):
        make_client(retry=policy).servers.get(5)
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_jitter_stays_within_half_to_full_delay() -> None:
    policy = d.RetryPolicy(initial=0.2, max_delay=2.0)
    for attempt in range(1, 12):
        base = min(2.0, 0.2 * 2 ** (attempt - 1))
        for _ in range(20):
            assert base / 2 <= policy.delay(attempt) <= base


def test_deadline_bounds_total_time(api: MockApi, make_client, clock: FakeTime) -> None:
    api.on("GET", PATH, U503)
    started = clock.now
    policy = d.RetryPolicy(attempts=1000, initial=1.0, max_delay=4.0, jitter=False, deadline=10.0)
    with pytest.raises(d.ServiceUnavailableError):
        make_client(retry=policy).servers.get(5)
    # sleeps 1, 2, 4 (7 s); the next 4 s sleep would end past 10 s, so it stops
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert clock.now - started <= 10.0
    assert count(api, "GET", PATH) == 4


def test_per_call_override(api: MockApi, make_client) -> None:
    api.on("GET", PATH, U503)
    client = make_client(retry=d.RetryPolicy(attempts=5))
    with pytest.raises(d.ServiceUnavailableError):
        client.servers.get(5, retry=d.RetryPolicy.none())
    assert count(api, "GET", PATH) == 1
    with pytest.raises(d.ServiceUnavailableError):
        client.request("GET", "dci/v3/server/5", retry=d.RetryPolicy(attempts=2))
    assert count(api, "GET", PATH) == 3


def test_login_retried_on_503(api: MockApi, make_client) -> None:
    api.on("POST", "/api/auth/v4/public/token", U503, lambda r: api._login(r))
    api.on("GET", PATH, OK)
    assert make_client().servers.get(5).id == 5
    assert count(api, "POST", "/api/auth/v4/public/token") == 2


def test_async_retries_use_async_sleep(api: MockApi, make_async_client, clock: FakeTime) -> None:
    api.on("GET", PATH, U503, httpx.ReadTimeout("x"), OK)

    async def run() -> int:
        async with make_async_client() as c:
            return (await c.servers.get(5)).id

    assert asyncio.run(run()) == 5
    assert len(clock.sleeps) == 2


def test_async_post_read_timeout_not_retried(api: MockApi, make_async_client) -> None:
    path = "/api/dci/v3/server/5/owner"
    api.on("POST", path, httpx.ReadTimeout("x"))

    async def run() -> None:
        async with make_async_client() as c:
            await c.servers.set_owner(5, 2)

    with pytest.raises(d.APITimeoutError):
        asyncio.run(run())
    assert count(api, "POST", path) == 1


def test_policy_decisions() -> None:
    p = d.RetryPolicy()
    assert p.retries_status("POST", 503)
    assert not p.retries_status("POST", 500)
    assert p.retries_status("GET", 502)
    assert not p.retries_status("GET", 404)
    assert p.retries_failure("DELETE", Failure.NOT_SENT)
    assert not p.retries_failure("DELETE", Failure.RESPONSE_LOST)
    assert p.retries_failure("GET", Failure.RESPONSE_LOST)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"attempts": 0}, "attempts: 0"),
        ({"attempts": 2.5}, "attempts: 2.5"),
        ({"initial": -1}, "initial: -1"),
        ({"max_delay": 0}, "max_delay: 0"),
        ({"deadline": "60"}, "deadline: '60'"),
    ],
)
def test_policy_validation(kwargs, fragment) -> None:
    with pytest.raises(d.ConfigError, match=fragment):
        d.RetryPolicy(**kwargs)
