"""Every error mapping: both platform envelopes, non-JSON bodies, every status class,
transport failures, and malformed 2xx bodies naming the bad field."""

from __future__ import annotations

import httpx
import pytest

import dci6bridge as d

from .conftest import ADMIN_PASSWORD, MockApi

PATH = "/api/dci/v3/server/5"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, d.BadRequestError),
        (401, d.AuthenticationError),
        (403, d.PermissionDeniedError),
        (404, d.NotFoundError),
        (409, d.ConflictError),
        (422, d.APIStatusError),
        (500, d.ServerError),
        (502, d.ServerError),
        (503, d.ServiceUnavailableError),
    ],
)
def test_status_classes(api: MockApi, make_client, status, cls) -> None:
    api.json("GET", PATH, {"error": {"code": 1234, "msg": "nope", "value": {"x": 1}}}, status)
    with pytest.raises(cls) as info:
        make_client(retry=d.RetryPolicy.none()).servers.get(5)
    exc = info.value
    assert type(exc) is cls
    assert isinstance(exc, d.Dci6BridgeError)
    assert exc.status_code == status
    assert exc.error_code == 1234
    assert exc.message == "nope"
    assert exc.value == {"x": 1}
    assert (exc.method, exc.path) == ("GET", "dci/v3/server/5")
    assert str(exc) == f"HTTP {status} code 1234 on GET dci/v3/server/5: nope"


def test_dci_envelope_without_value(api: MockApi, make_client) -> None:
    """F7: ``value`` is optional."""
    api.json(
        "POST",
        "/api/dci/v3/server/5/power_on",
        {"error": {"code": 3001, "msg": "Unauthorized"}},
        403,
    )
    with pytest.raises(d.PermissionDeniedError) as info:
        make_client().servers.power_on(5)
    assert info.value.error_code == 3001
    assert info.value.message == "Unauthorized"
    assert info.value.value is None


def test_auth_envelope_with_field(api: MockApi, make_client) -> None:
    """F8: the auth service's ``{"error": "text", "code": n, "field": name}``."""
    api.json(
        "POST",
        "/api/auth/v4/public/token",
        {"error": "Invalid email", "code": 1, "field": "email"},
        400,
    )
    with pytest.raises(d.BadRequestError) as info:
        make_client().servers.get(5)
    exc = info.value
    assert (exc.error_code, exc.message, exc.field) == (1, "Invalid email", "email")
    assert exc.path == "auth/v4/public/token"
    assert "(field 'email')" in str(exc)


def test_auth_forbidden_ip(api: MockApi, make_client) -> None:
    api.json("POST", "/api/auth/v4/public/token", {"error": "403IpForbidden", "code": 403}, 403)
    client = make_client()
    with pytest.raises(d.PermissionDeniedError, match="403IpForbidden"):
        client.whoami()
    check = client.check()
    assert not check.ok
    assert check.user_email is None
    assert "403IpForbidden" in check.detail


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html><body>Bad Gateway</body></html>", "<html><body>Bad Gateway</body></html>"),
        (b"", ""),
        (b"Unavailable", "Unavailable"),
        (b'"just a string"', ""),
        (b"[1,2]", ""),
    ],
)
def test_non_json_and_odd_bodies(api: MockApi, make_client, content, message) -> None:
    api.on("GET", PATH, httpx.Response(418, content=content))
    with pytest.raises(d.APIStatusError) as info:
        make_client().servers.get(5)
    assert info.value.status_code == 418
    assert info.value.message == message
    assert info.value.error_code is None


def test_long_text_body_is_truncated(api: MockApi, make_client) -> None:
    api.on("GET", PATH, httpx.Response(500, content=b"x" * 5000))
    with pytest.raises(d.ServerError) as info:
        make_client(retry=d.RetryPolicy.none()).servers.get(5)
    assert len(info.value.message) < 400


def test_error_code_as_string(api: MockApi, make_client) -> None:
    api.json("GET", PATH, {"error": {"code": "3080", "msg": "instance not found"}}, 404)
    with pytest.raises(d.NotFoundError) as info:
        make_client().servers.get(5)
    assert info.value.error_code == 3080


def test_secrets_masked_in_error_attributes(api: MockApi, make_client) -> None:
    echo = {
        "error": {
            "code": 1,
            "msg": f"bad password {ADMIN_PASSWORD}",
            "value": {"p": ADMIN_PASSWORD},
        }
    }
    api.json("POST", "/api/auth/v4/public/token", echo, 400)
    with pytest.raises(d.BadRequestError) as info:
        make_client().servers.get(5)
    exc = info.value
    for text in (str(exc), repr(exc), exc.message, repr(exc.value), repr(exc.body)):
        assert ADMIN_PASSWORD not in text


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectError("refused"), d.APIConnectionError),
        (httpx.ConnectTimeout("slow connect"), d.APITimeoutError),
        (httpx.ReadTimeout("slow read"), d.APITimeoutError),
        (httpx.RemoteProtocolError("peer closed"), d.APIConnectionError),
        (httpx.UnsupportedProtocol("ftp"), d.APIConnectionError),
    ],
)
def test_transport_failures(api: MockApi, make_client, exc, cls) -> None:
    api.on("GET", PATH, exc)
    with pytest.raises(cls) as info:
        make_client(retry=d.RetryPolicy.none()).servers.get(5)
    assert type(info.value) is cls
    assert (info.value.method, info.value.path) == ("GET", "dci/v3/server/5")
    assert type(exc).__name__ in str(info.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "five"}, "$.id"),
        ({"name": "no id"}, "$.id"),
        ({"id": 5, "operation": {"id": "x"}}, "$.operation.id"),
        ({"id": 5, "ip": [{"id": 1}, {"id": None}]}, "$.ip[1].id"),
        (
            {"id": 5, "switch_connection": [{"id": 1, "switch": 2}]},
            "$.switch_connection[0].connection_id",
        ),
    ],
)
def test_bad_2xx_body_names_field(api: MockApi, make_client, body, field) -> None:
    api.json("GET", PATH, body)
    with pytest.raises(d.ResponseValidationError) as info:
        make_client().servers.get(5)
    assert info.value.field == field
    assert field in str(info.value)
    assert info.value.path == "dci/v3/server/5"
    assert info.value.details


def test_bad_list_item_names_index(api: MockApi, make_client) -> None:
    api.json("GET", "/api/dci/v3/server", {"list": [{"id": 1}, {"id": 2}, {"id": []}], "size": 3})
    with pytest.raises(d.ResponseValidationError) as info:
        list(make_client().servers.list())
    assert info.value.field == "$.list[2].id"


@pytest.mark.parametrize("body", [b"not json", b"{", b"<html>"])
def test_non_json_2xx(api: MockApi, make_client, body) -> None:
    api.on("GET", PATH, httpx.Response(200, content=body))
    with pytest.raises(d.ResponseValidationError, match="not JSON"):
        make_client().servers.get(5)


def test_list_envelope_missing(api: MockApi, make_client) -> None:
    api.json("GET", "/api/dci/v3/server/configuration", {"items": []})
    with pytest.raises(d.ResponseValidationError) as info:
        make_client().servers.configurations()
    assert info.value.field == "$.list"


def test_login_without_token(api: MockApi, make_client) -> None:
    api.json("POST", "/api/auth/v4/public/token", {"id": 1}, 201)
    with pytest.raises(d.ResponseValidationError) as info:
        make_client().servers.get(5)
    assert info.value.field == "$.token"


def test_user_create_without_id(api: MockApi, make_client) -> None:
    api.json("POST", "/api/dci/v3/user", {})
    with pytest.raises(d.ResponseValidationError, match="no id"):
        make_client().users.create(email="a@b.c", password="pw")


def test_closed_client_refuses(api: MockApi, make_client) -> None:
    client = make_client()
    client.close()
    with pytest.raises(d.APIConnectionError, match="closed"):
        client.servers.get(5)


def test_other_httpx_errors_map_to_the_tree(api: MockApi, make_client) -> None:
    api.on("GET", PATH, httpx.DecodingError("bad gzip"))
    with pytest.raises(d.APIConnectionError, match="DecodingError"):
        make_client().servers.get(5)
