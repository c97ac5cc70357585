"""Every route of the one route table is answered; prefixes; secrets stay hidden."""

from __future__ import annotations

import json
from contextlib import closing

import httpx
import pytest

from dci6bridge.client._routes import ROUTES
from dci6bridge.testing import FakeDCImanager, Faults

from .conftest import api, login, ok

SAMPLE = {"server_id": 2, "switch_id": 1, "port_id": 5, "ip_id": 1, "user_id": 2, "token_id": 1}
BODIES = {
    "auth.login": {"email": "admin@example.com", "password": "simulator-admin-password"},
    "auth.create_token": {"expires_at": "2030-01-01 00:00:00"},
    "servers.set_owner": {"owner": 2},
    "servers.release_owner": {"owner": None},
    "servers.install_os": {"os_template": 1, "password": "pw"},
    "ips.assign": {"ipv4_number": 1},
    "users.create": {"email": "new@example.com", "password": "pw"},
    "servers.power_on": {},
}


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_every_route_is_answered(name: str) -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=3)
    user = fake.add_user("someone@example.com")
    assert user == 2
    with closing(api(fake)) as http:
        ok(http.post("dci/v3/server/3/ip", json={"ipv4_number": 1}))  # ip id 1 for ips.release
        if name == "users.delete":
            ok(http.post("dci/v3/server/2/owner", json={"owner": None}))
        if name == "servers.power_on":
            ok(http.post("dci/v3/server/2/power_off", json={}))
        route = ROUTES[name]
        path = route.format(**{p: SAMPLE[p] for p in route.params})
        r = http.request(
            route.method, path, json=BODIES.get(name, {}) if route.method == "POST" else None
        )
    assert r.status_code in (200, 201), r.text
    recorded = [q.route for q in fake.state.requests]
    assert recorded[-1] == name


def test_api_prefix_is_configurable() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=1, api_prefix="")
    with closing(httpx.Client(base_url=f"{fake.url}/", transport=fake.transport)) as http:
        login(http, fake.admin_email, fake.admin_password)
        assert ok(http.get("dci/v3/server/1"))["id"] == 1
        assert http.get("api/dci/v3/server/1").status_code == 404


def test_secrets_stay_out_of_reprs_logs_and_state() -> None:
    lines: list[str] = []
    fake = FakeDCImanager.with_inventory(
        locations=1,
        servers_per_location=1,
        admin_password="hunter2-admin",
        faults=Faults(latency_ms=0),
    )
    with (
        fake.serve(log=lines.append) as url,
        closing(httpx.Client(base_url=f"{url}/api/", timeout=5)) as http,
    ):
        token = login(http, fake.admin_email, "hunter2-admin")
        ok(http.post("dci/v3/user", json={"email": "j@example.com", "password": "hunter2-user"}))
        ok(http.delete(f"auth/v4/token/{token}"))
    # The request log names routes, never paths: logout by value keeps the token out.
    texts = [repr(fake), str(fake.state), repr(fake.state.to_json()), *lines]
    for text in texts:
        for secret in ("hunter2-admin", "hunter2-user", token):
            assert secret not in text
    assert lines[-1] == "DELETE auth.logout -> 200"


def test_lost_answers_are_recorded_as_lost_when_served() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=1)
    with fake.serve() as url, closing(httpx.Client(base_url=f"{url}/api/", timeout=5)) as http:
        login(http, fake.admin_email, fake.admin_password)
        fake.set_faults(lost_response_rate=1.0, lost_response_routes={"servers.power_off"})
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("dci/v3/server/1/power_off", json={})
    state = fake.state
    assert state.servers[1].power_status == "off"
    assert [(r.route, r.status, r.lost) for r in state.requests][-1] == (
        "servers.power_off",
        200,
        True,
    )


def test_requests_record_their_query_parameters_but_not_the_auth_services() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=5)
    with closing(api(fake)) as http:
        ok(http.get("dci/v3/server", params={"where": "location_id EQ 1", "limit": "3,2"}))
        http.post("auth/v4/public/token", params={"password": "hunter2"}, json={})
    state = fake.state
    listing, login_again = state.requests[-2:]
    assert (listing.route, dict(listing.query)) == (
        "servers.list",
        {"where": "location_id EQ 1", "limit": "3,2"},
    )
    assert state.requests[0].query == login_again.query == (), "auth routes: none kept"
    assert "hunter2" not in repr(state.to_json())
    assert type(state).from_json(json.loads(json.dumps(state.to_json()))).requests == state.requests
