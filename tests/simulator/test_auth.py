"""Auth v4: login shape, both error envelopes, sessions, expiry, logout, roles."""

from __future__ import annotations

from contextlib import closing
from datetime import datetime, timezone

import httpx
import pytest

from dci6bridge.testing import FakeDCImanager

from .conftest import api, error_of, login, ok


def _auth_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str)
    assert isinstance(body["code"], int)
    return dict(body)


def test_login_answers_201_with_the_vendor_shape(fake: FakeDCImanager) -> None:
    with closing(api(fake, logged_in=False)) as http:
        r = http.post(
            "auth/v4/public/token",
            json={"email": fake.admin_email, "password": fake.admin_password},
        )
        body = ok(r, 201)
    assert set(body) == {"id", "token", "expires_at", "confirmed"}
    assert isinstance(body["id"], int)
    assert isinstance(body["token"], str)
    assert len(body["token"]) == 24
    assert body["expires_at"] is None
    assert body["confirmed"] is True


def test_token_values_are_deterministic_by_seed() -> None:
    def first_token(seed: int) -> str:
        fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=1, seed=seed)
        with closing(api(fake, logged_in=False)) as http:
            return login(http, fake.admin_email, fake.admin_password)

    assert first_token(1) == first_token(1)
    assert first_token(1) != first_token(2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "x"}, "email"),
        ({"email": "admin@example.com"}, "password"),
        ({"email": "admin@example.com", "password": 5}, "password"),
        ({"email": "a@b", "password": "x", "confirmed": "yes"}, "confirmed"),
    ],
)
def test_login_bad_body_is_400_with_field(
    fake: FakeDCImanager, body: dict[str, object], field: str
) -> None:
    with closing(api(fake, logged_in=False)) as http:
        err = _auth_error(http.post("auth/v4/public/token", json=body), 400)
    assert err["field"] == field


def test_login_body_that_is_not_an_object(fake: FakeDCImanager) -> None:
    with closing(api(fake, logged_in=False)) as http:
        err = _auth_error(http.post("auth/v4/public/token", content=b"[1, 2"), 400)
    assert err["field"] == "body"


def test_wrong_password_is_401_in_the_auth_envelope(fake: FakeDCImanager) -> None:
    with closing(api(fake, logged_in=False)) as http:
        err = _auth_error(
            http.post("auth/v4/public/token", json={"email": fake.admin_email, "password": "no"}),
            401,
        )
    assert "field" not in err
    assert "no" not in str(err["error"])


def test_requests_without_a_valid_token_are_401(fake: FakeDCImanager) -> None:
    with closing(api(fake, logged_in=False)) as http:
        # dci routes: the F7 envelope
        assert http.get("dci/v3/server").json() == {"error": {"code": 3001, "msg": "Unauthorized"}}
        assert http.get("dci/v3/server").status_code == 401
        http.headers["x-xsrf-token"] = "6BA7C69DCB7DF4DACFFC7E56"
        assert error_of(http.get("dci/v3/user"), 401)["code"] == 3001
        # auth routes: the auth envelope
        _auth_error(http.get("auth/v4/whoami"), 401)
    assert fake.state.count("servers.list", 401) == 2


@pytest.mark.parametrize("how", ["header", "cookie", "isp-session"])
def test_each_documented_way_of_sending_the_token(fake: FakeDCImanager, how: str) -> None:
    with closing(api(fake, logged_in=False)) as http:
        r = http.post(
            "auth/v4/public/token",
            json={"email": fake.admin_email, "password": fake.admin_password},
        )
        token = r.json()["token"]
        headers = {
            "header": {"x-xsrf-token": token},
            "cookie": {"cookie": f"ses6={token}"},
            "isp-session": {"ISP-Session": token},
        }[how]
        assert ok(http.get("auth/v4/whoami", headers=headers))["owner_email"] == fake.admin_email


def test_token_expires_after_its_ttl() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=1, token_ttl=300)
    with closing(api(fake, logged_in=False)) as http:
        r = ok(
            http.post(
                "auth/v4/public/token",
                json={"email": fake.admin_email, "password": fake.admin_password},
            ),
            201,
        )
        expected = datetime.fromtimestamp(fake.clock.now() + 300, tz=timezone.utc)
        assert r["expires_at"] == expected.strftime("%Y-%m-%d %H:%M:%S")
        http.headers["x-xsrf-token"] = r["token"]
        fake.advance(299)
        ok(http.get("dci/v3/server/1"))
        fake.advance(1)
        assert error_of(http.get("dci/v3/server/1"), 401)["code"] == 3001
        login(http, fake.admin_email, fake.admin_password)
        ok(http.get("dci/v3/server/1"))


def test_ttl_change_at_runtime_applies_to_new_logins(fake: FakeDCImanager) -> None:
    with closing(api(fake)) as http:
        fake.set_faults(token_ttl=10)
        fake.advance(3600)
        ok(http.get("dci/v3/server/1"))  # the old token never expires
        login(http, fake.admin_email, fake.admin_password)
        fake.advance(10)
        error_of(http.get("dci/v3/server/1"), 401)


def test_expire_tokens_revokes_every_session(fake: FakeDCImanager, http: httpx.Client) -> None:
    assert fake.expire_tokens() == 1
    error_of(http.get("dci/v3/server/1"), 401)


def test_logout_by_id_and_by_value(fake: FakeDCImanager) -> None:
    with closing(api(fake, logged_in=False)) as http:
        a = ok(
            http.post(
                "auth/v4/public/token",
                json={"email": fake.admin_email, "password": fake.admin_password},
            ),
            201,
        )
        b = ok(
            http.post(
                "auth/v4/public/token",
                json={"email": fake.admin_email, "password": fake.admin_password},
            ),
            201,
        )
        http.headers["x-xsrf-token"] = b["token"]
        assert ok(http.delete(f"auth/v4/token/{a['id']}")) == {}
        _auth_error(http.delete(f"auth/v4/token/{a['id']}"), 404)
        assert ok(http.delete(f"auth/v4/token/{b['token']}")) == {}
        error_of(http.get("dci/v3/server"), 401)


def test_whoami(fake: FakeDCImanager, http: httpx.Client) -> None:
    body = ok(http.get("auth/v4/whoami"))
    assert body["owner_id"] == 1
    assert body["owner_email"] == fake.admin_email


def test_long_lived_token(fake: FakeDCImanager, http: httpx.Client) -> None:
    r = http.post("auth/v4/token", json={"expires_at": "2026-01-02 00:00:00", "description": "x"})
    body = ok(r, 201)
    assert body["expires_at"] == "2026-01-02 00:00:00"
    with closing(api(fake, logged_in=False)) as other:
        other.headers["x-xsrf-token"] = body["token"]
        ok(other.get("dci/v3/server/1"))
        fake.advance(24 * 3600)
        error_of(other.get("dci/v3/server/1"), 401)
    err = _auth_error(http.post("auth/v4/token", json={"expires_at": "tomorrow"}), 400)
    assert err["field"] == "expires_at"
    err = _auth_error(
        http.post(
            "auth/v4/token", json={"expires_at": "2030-01-01 00:00:00", "description": "d" * 256}
        ),
        400,
    )
    assert err["field"] == "description"


def test_a_user_sees_only_its_own_servers(fake: FakeDCImanager, http: httpx.Client) -> None:
    uid = ok(http.post("dci/v3/user", json={"email": "jane@example.com", "password": "pw-j"}))["id"]
    ok(http.post("dci/v3/server/4/owner", json={"owner": uid}))
    with closing(api(fake, logged_in=False)) as jane:
        login(jane, "jane@example.com", "pw-j")
        assert [s["id"] for s in ok(jane.get("dci/v3/server"))["list"]] == [4]
        assert error_of(jane.get("dci/v3/server/5"), 404)["code"] == 3080
        assert error_of(jane.get("dci/v3/user"), 403)["code"] == 3001
        assert error_of(jane.post("dci/v3/server/5/owner", json={"owner": uid}), 403)
        ok(jane.post("dci/v3/server/4/reinstall", json={"os_template": 2, "password": "pw"}))
        ok(jane.get("dci/v3/location"))
    assert fake.state.installs[0].owner_email == "jane@example.com"


def test_deleting_a_user_ends_its_sessions(fake: FakeDCImanager, http: httpx.Client) -> None:
    uid = ok(http.post("dci/v3/user", json={"email": "j@example.com", "password": "pw-j"}))["id"]
    with closing(api(fake, logged_in=False)) as jane:
        login(jane, "j@example.com", "pw-j")
        ok(jane.get("auth/v4/whoami"))
        ok(http.delete(f"dci/v3/user/{uid}"))
        _auth_error(jane.get("auth/v4/whoami"), 401)
