"""Fixtures for the simulator's own tests: plain httpx against the fake, no client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dci6bridge.testing import FakeDCImanager


def login(http: httpx.Client, email: str, password: str) -> str:
    """Log in and make ``http`` send the token the way the vendor samples do."""
    r = http.post("auth/v4/public/token", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    http.headers["x-xsrf-token"] = token
    http.headers["isp-box-instance"] = "true"
    http.cookies.set("ses6", token)
    return token


def api(fake: FakeDCImanager, *, logged_in: bool = True) -> httpx.Client:
    """An httpx client on ``fake``'s API prefix, logged in as the administrator."""
    http = httpx.Client(base_url=f"{fake.url}/api/", transport=fake.transport)
    if logged_in:
        login(http, fake.admin_email, fake.admin_password)
    return http


@pytest.fixture
def fake() -> FakeDCImanager:
    return FakeDCImanager.with_inventory(locations=2, servers_per_location=6)


@pytest.fixture
def http(fake: FakeDCImanager) -> Iterator[httpx.Client]:
    client = api(fake)
    yield client
    client.close()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The dci envelope's ``error`` object, checking its shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], int)
    assert isinstance(error["msg"], str)
    return error
