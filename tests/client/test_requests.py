"""Request shapes: method, URL, query, headers and JSON body of every client method,
sync and async alike (the async twin must send exactly the same requests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import dci6bridge as d
from dci6bridge.client._routes import ROUTES

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, MockApi

SERVER = {"id": 5, "name": "srv-5"}
LIST = {"list": [], "size": 0}

# (call on a client, expected method, expected path, expected JSON body or None)
CASES: list[tuple[str, Callable[[Any], Any], str, str, Any]] = [
    ("servers.get", lambda c: c.servers.get(5), "GET", "/api/dci/v3/server/5", None),
    (
        "servers.configurations",
        lambda c: c.servers.configurations(),
        "GET",
        "/api/dci/v3/server/configuration",
        None,
    ),
    (
        "servers.set_owner",
        lambda c: c.servers.set_owner(5, 9),
        "POST",
        "/api/dci/v3/server/5/owner",
        {"owner": 9},
    ),
    (
        "servers.release_owner",
        lambda c: c.servers.release_owner(5),
        "POST",
        "/api/dci/v3/server/5/owner",
        {"owner": None},
    ),
    (
        "servers.install_os",
        lambda c: c.servers.install_os(
            5,
            3,
            password=d.Secret("r00t-pw"),
            ssh_keys=["ssh-ed25519 AAAA k"],
            recipe=4,
            recipe_params={"a": "1"},
        ),
        "POST",
        "/api/dci/v3/server/5/reinstall",
        {
            "os_template": 3,
            "password": "r00t-pw",
            "recipe": 4,
            "recipe_params": [{"name": "a", "value": "1"}],
            "ssh_keys": ["ssh-ed25519 AAAA k"],
            "send_email_mode": "saas_only",
        },
    ),
    (
        "servers.power_on",
        lambda c: c.servers.power_on(5),
        "POST",
        "/api/dci/v3/server/5/power_on",
        {},
    ),
    (
        "servers.power_off",
        lambda c: c.servers.power_off(5),
        "POST",
        "/api/dci/v3/server/5/power_off",
        {},
    ),
    (
        "servers.power_reset",
        lambda c: c.servers.power_reset(5),
        "POST",
        "/api/dci/v3/server/5/power_reset",
        {},
    ),
    ("users.delete", lambda c: c.users.delete(9), "DELETE", "/api/dci/v3/user/9", None),
    (
        "users.create",
        lambda c: c.users.create(email="j@example.com", password="pw", full_name="J"),
        "POST",
        "/api/dci/v3/user",
        {"email": "j@example.com", "password": "pw", "role": "@user", "full_name": "J"},
    ),
    (
        "ips.assign",
        lambda c: c.ips.assign(5, count=2, pool_ids=[7]),
        "POST",
        "/api/dci/v3/server/5/ip",
        {"ipv4_number": 2, "ipv4_pool": [7]},
    ),
    ("ips.release", lambda c: c.ips.release(11), "DELETE", "/api/dci/v3/ip/11", None),
    (
        "switches.port_on",
        lambda c: c.switches.port_on(2, 8),
        "POST",
        "/api/dci/v3/switch/2/port/8/on",
        {},
    ),
    (
        "switches.port_off",
        lambda c: c.switches.port_off(2, 8),
        "POST",
        "/api/dci/v3/switch/2/port/8/off",
        {},
    ),
    ("auth.whoami", lambda c: c.whoami(), "GET", "/api/auth/v4/whoami", None),
]


def _reply_for(api: MockApi, method: str, path: str) -> None:
    if path.endswith("/server/5"):
        api.json(method, path, SERVER)
    elif path.endswith("configuration"):
        api.json(method, path, {"list": [{"configuration": "c", "free_server_count": 1}]})
    elif path.endswith("whoami"):
        api.json(method, path, {"owner_id": 1, "owner_email": ADMIN_EMAIL})
    else:
        api.json(method, path, {"id": 1, "task": 7})


def _check(api: MockApi, method: str, path: str, body: Any) -> None:
    req = api.last(path)
    assert req.method == method
    assert req.url.host == "dci.example.com"
    token = "TOKEN-0001-SECRETVALUE"
    assert req.headers["cookie"] == f"ses6={token}"
    assert req.headers["x-xsrf-token"] == token
    assert req.headers["isp-box-instance"] == "true"
    assert req.headers["accept"] == "application/json"
    assert req.headers["user-agent"].startswith("dci6bridge/")
    if body is None:
        assert req.content == b""
        assert "content-type" not in req.headers
    else:
        assert req.headers["content-type"] == "application/json"
        assert json.loads(req.content) == body


@pytest.mark.parametrize(
    ("name", "call", "method", "path", "body"), CASES, ids=[c[0] for c in CASES]
)
def test_sync_request_shape(api: MockApi, make_client, name, call, method, path, body) -> None:
    assert ROUTES[name].method == method
    _reply_for(api, method, path)
    call(make_client())
    _check(api, method, path, body)


@pytest.mark.parametrize(
    ("name", "call", "method", "path", "body"), CASES, ids=[c[0] for c in CASES]
)
def test_async_request_shape(api, make_async_client, name, call, method, path, body) -> None:
    _reply_for(api, method, path)

    async def run() -> None:
        async with make_async_client() as c:
            await call(c)

    asyncio.run(run())
    _check(api, method, path, body)


def test_login_request(api: MockApi, make_client) -> None:
    api.json("GET", "/api/dci/v3/server/5", SERVER)
    make_client().servers.get(5)
    login = api.requests[0]
    assert login.method == "POST"
    assert login.url.path == "/api/auth/v4/public/token"
    assert json.loads(login.content) == {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    assert "cookie" not in login.headers
    assert "x-xsrf-token" not in login.headers
    assert login.headers["isp-box-instance"] == "true"


def test_list_query_encoding(api: MockApi, make_client) -> None:
    api.json("GET", "/api/dci/v3/server", LIST)
    where = d.Q.free() & (d.Q("name") == "a+b 'c' (d)")
    list(make_client().servers.list(where=where, orderby=d.Q("name").desc(), page_size=50))
    req = api.last("/api/dci/v3/server")
    raw = req.url.query.decode()
    # spaces as %20, '+' encoded, quotes and parentheses left readable
    assert "where=(owner_email%20IS%20null)%20AND%20is_new%20EQ%20false%20AND%20name%20EQ%20" in raw
    assert "'a%2Bb%20''c''%20(d)'" in raw
    assert "orderby=name%20desc" in raw
    assert "limit=0,50" in raw
    params = dict(req.url.params)
    assert (
        params["where"] == "(owner_email IS null) AND is_new EQ false AND name EQ 'a+b ''c'' (d)'"
    )


def test_list_defaults_to_stable_order(api: MockApi, make_client) -> None:
    api.json("GET", "/api/dci/v3/server", LIST)
    assert list(make_client().servers.list()) == []
    assert dict(api.last("/api/dci/v3/server").url.params) == {
        "orderby": "id asc",
        "limit": "0,500",
    }


def test_api_prefix_configurable(api: MockApi, make_client) -> None:
    api.json("GET", "/dci/v3/server/5", SERVER)
    api.on("POST", "/auth/v4/public/token", lambda r: api._login(r))
    make_client(api_prefix="").servers.get(5)
    assert [r.url.path for r in api.requests] == ["/auth/v4/public/token", "/dci/v3/server/5"]


def test_custom_prefix_and_trailing_slash(api: MockApi, make_client) -> None:
    api.json("GET", "/dci6/api/dci/v3/server/5", SERVER)
    api.on("POST", "/dci6/api/auth/v4/public/token", lambda r: api._login(r))
    client = d.Client(
        "https://dci.example.com/dci6/",
        email=ADMIN_EMAIL,
        password=ADMIN_PASSWORD,
        transport=httpx.MockTransport(api.handle),
    )
    with client:
        assert client.servers.get(5).id == 5


def test_request_escape_hatch(api: MockApi, make_client) -> None:
    api.json("GET", "/api/dci/v3/anything", {"x": [1, 2]})
    api.json("POST", "/api/dci/v3/thing/1/act", {"id": 1})
    client = make_client()
    got = client.request(
        "get", "/dci/v3/anything", params={"where": d.Q("a") == 1, "flag": True, "n": 3}
    )
    assert got == {"x": [1, 2]}
    assert dict(api.last().url.params) == {"where": "a EQ 1", "flag": "true", "n": "3"}
    assert client.request("POST", "dci/v3/thing/1/act") == {"id": 1}
    assert json.loads(api.last().content) == {}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"method": "PUT", "path": "dci/v3/x"}, "method: 'PUT'"),
        ({"method": "GET", "path": "https://evil/x"}, "path: 'https://evil/x'"),
        ({"method": "GET", "path": "/"}, "path: '/'"),
    ],
)
def test_request_rejects_bad_input(make_client, kwargs, fragment) -> None:
    with pytest.raises(d.ConfigError, match=fragment):
        make_client().request(**kwargs)


def test_user_agent_prefix(api: MockApi, make_client) -> None:
    api.json("GET", "/api/dci/v3/server/5", SERVER)
    make_client(user_agent="mybilling/2.1").servers.get(5)
    assert api.last().headers["user-agent"].startswith("mybilling/2.1 dci6bridge/")


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda c: c.servers.get("5"), "server_id: '5'"),
        (lambda c: c.servers.get(-1), "server_id: -1"),
        (lambda c: c.servers.set_owner(5, True), "user_id: True"),
        (lambda c: c.servers.install_os(5, 3, password=""), "password"),
        (lambda c: c.servers.install_os(5, 3, password="x", ssh_keys="ssh-rsa A"), "ssh_keys"),
        (
            lambda c: c.servers.install_os(5, 3, password="x", recipe_params=[("a",)]),
            "recipe_params",
        ),
        (lambda c: c.ips.assign(5, count=0), "count: 0"),
        (lambda c: c.ips.assign(5, pool_ids=["x"]), r"pool_ids\[0\]: 'x'"),
        (lambda c: c.users.create(email="nope", password="x"), "email: 'nope'"),
        (lambda c: c.users.create(email="a@b", password="x", role="admin"), "role: 'admin'"),
        (lambda c: c.users.find("nope"), "email: 'nope'"),
        (lambda c: c.servers.list(page_size=0), "page_size: 0"),
        (lambda c: c.servers.list(limit=-1), "limit: -1"),
        (lambda c: c.servers.list(orderby="id; drop"), "orderby"),
        (lambda c: c.servers.wait(5, timeout=0), "timeout: 0"),
    ],
)
def test_bad_arguments_name_field_and_value(api: MockApi, make_client, call, fragment) -> None:
    with pytest.raises(d.ConfigError, match=fragment):
        call(make_client())
    assert api.requests == []  # nothing was sent


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"email": "a@b"}, "email and password"),
        ({}, "credentials"),
        ({"email": "x", "password": "p"}, "email: 'x'"),
        ({"token": "t", "timeout": 0}, "timeout: 0"),
        ({"token": "t", "retry": 3}, "retry: 3"),
        ({"token": ""}, "token: must be"),
        ({"email": "a@b.c", "password": 1234}, "password: must be"),
    ],
)
def test_client_rejects_bad_configuration(kwargs, fragment) -> None:
    with pytest.raises(d.ConfigError, match=fragment):
        d.Client("https://dci.example.com", **kwargs)


def test_bad_base_url() -> None:
    with pytest.raises(d.ConfigError, match=r"base_url: 'dci\.example\.com'"):
        d.Client("dci.example.com", token="t")


def test_verify_ca_bundle_path(tmp_path) -> None:
    import certifi

    client = d.Client("https://x.example", token="t", verify=certifi.where())
    client.close()
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(d.ConfigError, match=r"verify: CA bundle '.*missing\.pem' cannot be loaded"):
        d.Client("https://x.example", token="t", verify=missing)
    with pytest.raises(d.ConfigError, match="verify: 1 is not"):
        d.Client("https://x.example", token="t", verify=1)
