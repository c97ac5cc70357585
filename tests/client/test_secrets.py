"""Passwords and tokens appear in no log line, repr, str or exception."""

from __future__ import annotations

import asyncio
import logging

import attrs
import httpx
import pytest

import dci6bridge as d

from .conftest import ADMIN_PASSWORD, LOGIN_PATH, MockApi

PATH = "/api/dci/v3/server/5"
INSTALL_PASSWORD = "Inst4ll-P4ssw0rd-QQ"
TOKENS = ("TOKEN-0001-SECRETVALUE", "TOKEN-0002-SECRETVALUE", "SECRETVALUE")


def assert_clean(text: str) -> None:
    for secret in (ADMIN_PASSWORD, INSTALL_PASSWORD, *TOKENS):
        assert secret not in text, f"{secret!r} leaked into {text[:200]!r}"


def test_logs_over_login_401_and_retries(api: MockApi, make_client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    api.on(
        "GET",
        PATH,
        httpx.Response(401, json={"error": {"code": 3001, "msg": "expired"}}),
        httpx.Response(503),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"id": 5}),
    )
    api.on(
        "POST",
        "/api/dci/v3/server/5/reinstall",
        httpx.Response(503),
        httpx.Response(200, json={"id": 5, "task": 9}),
    )
    client = make_client()
    client.servers.get(5)
    client.servers.install_os(5, 1, password=INSTALL_PASSWORD)
    client.close()
    assert api.logins == 2
    lines = [r.getMessage() for r in caplog.records]
    ours = [r.getMessage() for r in caplog.records if r.name == "dci6bridge"]
    # one line per attempt: login, GET x4, relogin, revocation of the replaced session,
    # POST x2, logout, plus retry notes
    attempts = [m for m in ours if "(attempt" in m]
    assert len(attempts) == 10
    assert "DELETE auth/v4/token/101 -> 200" in attempts[3]
    assert "GET dci/v3/server/5 -> 401" in attempts[1]
    assert any("-> ReadTimeout" in m and "(attempt 2)" in m for m in attempts)
    for line in lines:
        assert_clean(line)
    assert_clean(caplog.text)


def test_reprs_and_strs(make_client, api: MockApi) -> None:
    api.on("GET", PATH, httpx.Response(200, json={"id": 5}))
    client = make_client()
    client.servers.get(5)
    from dci6bridge.client._core import Call
    from dci6bridge.client.resources.servers import install_os_call

    call: Call[object] = install_os_call(5, 1, password=INSTALL_PASSWORD)
    session = client._session
    for obj in (client, session.core.auth, call, d.Secret(INSTALL_PASSWORD)):
        assert_clean(repr(obj))
        assert_clean(str(obj))
    assert_clean(repr(attrs.asdict(session.core.auth)))


def test_token_client_repr() -> None:
    client = d.Client("https://x.example", token="TOKEN-0001-SECRETVALUE")
    assert_clean(repr(client))
    assert "token=***" in repr(client)


def test_exceptions_never_carry_secrets(api: MockApi, make_client) -> None:
    echo = f"wrong password {ADMIN_PASSWORD} for token TOKEN-0001-SECRETVALUE"
    api.on("GET", PATH, httpx.Response(500, content=echo.encode()))
    client = make_client(retry=d.RetryPolicy.none())
    with pytest.raises(d.ServerError) as info:
        client.servers.get(5)
    exc = info.value
    for text in (str(exc), repr(exc), repr(exc.body), exc.message, repr(exc.args)):
        assert_clean(text)


def test_login_failure_does_not_echo_password(api: MockApi, make_client) -> None:
    api.on(
        "POST", LOGIN_PATH, httpx.Response(400, json={"error": f"bad {ADMIN_PASSWORD}", "code": 1})
    )
    with pytest.raises(d.BadRequestError) as info:
        make_client().whoami()
    assert_clean(str(info.value))
    assert_clean(repr(info.value.body))


def test_check_detail_is_clean(api: MockApi, make_client) -> None:
    api.on(
        "GET",
        "/api/auth/v4/whoami",
        httpx.Response(403, json={"error": {"code": 1, "msg": f"{ADMIN_PASSWORD}"}}),
    )
    check = make_client().check()
    assert not check.ok
    assert_clean(check.detail)


def test_async_logs_clean(api: MockApi, make_async_client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    api.on("GET", PATH, httpx.Response(401), httpx.Response(200, json={"id": 5}))

    async def run() -> None:
        async with make_async_client() as c:
            await c.servers.get(5)
            await c.servers.install_os(5, 1, password=INSTALL_PASSWORD)

    api.on("POST", "/api/dci/v3/server/5/reinstall", httpx.Response(200, json={}))
    asyncio.run(run())
    assert caplog.records
    assert_clean(caplog.text)


def test_token_never_in_a_url(api: MockApi, make_client) -> None:
    api.on("GET", PATH, httpx.Response(200, json={"id": 5}))
    with make_client() as client:
        client.servers.get(5)
    for request in api.requests:
        assert_clean(str(request.url))
