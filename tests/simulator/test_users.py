"""Users: F4 list shape, F5 create, non-idempotent create, delete rules, bad bodies."""

from __future__ import annotations

import httpx
import pytest

from dci6bridge.testing import FakeDCImanager

from .conftest import api, error_of, ok

F5_BODY = {
    "email": "admin2@example.com",
    "full_name": "name",
    "password": "pass",
    "phone_number": "phone",
    "role": "@user",
}


def test_f4_list_shape(http: httpx.Client) -> None:
    body = ok(http.get("dci/v3/user"))
    item = body["list"][0]
    assert {"id", "email", "server_count", "roles", "vlans_per_user"} <= set(item)
    assert item["roles"] == "[@admin]"  # a string, as in the vendor example
    assert isinstance(item["vlans_per_user"], int)
    assert body["size"] == 1


def test_f5_create_returns_only_the_id(fake: FakeDCImanager, http: httpx.Client) -> None:
    body = ok(http.post("dci/v3/user", json=F5_BODY))
    assert set(body) == {"id"}
    user = fake.state.users[body["id"]]
    assert user.email == "admin2@example.com"
    assert user.roles == ("@user",)
    assert user.full_name == "name"
    listed = ok(http.get("dci/v3/user", params={"where": "email EQ 'admin2@example.com'"}))
    assert [u["roles"] for u in listed["list"]] == ["[@user]"]


def test_create_is_not_idempotent(fake: FakeDCImanager, http: httpx.Client) -> None:
    a = ok(http.post("dci/v3/user", json=F5_BODY))["id"]
    b = ok(http.post("dci/v3/user", json=F5_BODY))["id"]
    assert a != b
    assert len(fake.state.users_by_email("admin2@example.com")) == 2
    found = ok(http.get("dci/v3/user", params={"where": "email EQ 'admin2@example.com'"}))
    assert found["size"] == 2


def test_unique_user_emails_flag() -> None:
    fake = FakeDCImanager.with_inventory(
        locations=1, servers_per_location=1, unique_user_emails=True
    )
    http = api(fake)
    ok(http.post("dci/v3/user", json=F5_BODY))
    err = error_of(http.post("dci/v3/user", json=F5_BODY), 409)
    assert err["value"] == {"email": "admin2@example.com"}
    http.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": None}, "email"),
        ({"email": ""}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"email": 7}, "email"),
        ({"password": None}, "password"),
        ({"role": "level"}, "role"),
        ({"full_name": 3}, "full_name"),
        ({"phone_number": ["x"]}, "phone_number"),
    ],
)
def test_create_bad_bodies_name_the_field(
    fake: FakeDCImanager, http: httpx.Client, change: dict[str, object], field: str
) -> None:
    body = {k: v for k, v in {**F5_BODY, **change}.items() if v is not None}
    err = error_of(http.post("dci/v3/user", json=body), 400)
    assert err["value"]["field"] == field
    assert field in err["msg"]
    assert len(fake.state.users) == 1  # nothing was created


def test_password_is_never_echoed(http: httpx.Client) -> None:
    r = http.post("dci/v3/user", json={"email": "x@example.com", "password": ""})
    err = error_of(r, 400)
    assert err["value"] == {"field": "password"}
    r = http.post("dci/v3/server/1/reinstall", json={"os_template": 1, "password": 12345})
    assert "12345" not in r.text


def test_body_that_is_not_a_json_object(http: httpx.Client) -> None:
    r = http.post("dci/v3/user", content=b"{oops", headers={"content-type": "application/json"})
    assert error_of(r, 400)["value"] == {"field": "body"}
    assert error_of(http.post("dci/v3/user", json=[1]), 400)["value"] == {"field": "body"}


def test_delete_refused_while_the_user_owns_servers(
    fake: FakeDCImanager, http: httpx.Client
) -> None:
    uid = ok(http.post("dci/v3/user", json=F5_BODY))["id"]
    ok(http.post("dci/v3/server/2/owner", json={"owner": uid}))
    assert (
        ok(http.get("dci/v3/user", params={"where": f"id EQ {uid}"}))["list"][0]["server_count"]
        == 1
    )
    err = error_of(http.delete(f"dci/v3/user/{uid}"), 409)
    assert err["value"]["server_ids"] == [2]
    assert uid in fake.state.users
    ok(http.post("dci/v3/server/2/owner", json={"owner": None}))
    assert ok(http.delete(f"dci/v3/user/{uid}")) == {"id": uid}
    assert uid not in fake.state.users
    assert error_of(http.delete(f"dci/v3/user/{uid}"), 404)["code"] == 3080


def test_the_administrator_cannot_be_deleted(http: httpx.Client) -> None:
    error_of(http.delete("dci/v3/user/1"), 409)


def test_unknown_route_is_404_handler_not_found(http: httpx.Client) -> None:
    for r in (
        http.get("dci/v3/nothing"),
        http.put("dci/v3/user", json={}),
        http.get("dci/v9/server"),
    ):
        assert error_of(r, 404)["code"] == 1106
    other = httpx.Client(base_url="https://dci.test/", transport=http._transport)
    assert error_of(other.get("dci/v3/server"), 404)["code"] == 1106  # no /api prefix
