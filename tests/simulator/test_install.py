"""OS install: an operation that progresses by the clock, ends ok or failed."""

from __future__ import annotations

from contextlib import closing

import httpx
import pytest

from dci6bridge.testing import FakeDCImanager, Faults

from .conftest import api, error_of, ok

BODY = {
    "os_template": 1,
    "password": "s3cret-pw",
    "recipe": None,
    "recipe_params": [{"name": "hostname", "value": "web1"}],
    "ssh_keys": ["ssh-ed25519 AAAA"],
    "send_email_mode": "saas_only",
}


def test_install_progresses_and_ends_ok(fake: FakeDCImanager, http: httpx.Client) -> None:
    uid = fake.add_user("jane@example.com")
    ok(http.post("dci/v3/server/1/owner", json={"owner": uid}))
    before = ok(http.get("dci/v3/server/1"))["operation"]["id"]
    started = ok(http.post("dci/v3/server/1/reinstall", json=BODY))
    assert started["id"] == 1
    assert isinstance(started["task"], str)
    op = ok(http.get("dci/v3/server/1"))["operation"]
    assert op["id"] != before
    assert op["status"] == "running"
    assert op["progress_info"][0]["progress"] == 0
    fake.advance(150)
    op = ok(http.get("dci/v3/server/1"))["operation"]
    assert op["progress_info"][0]["progress"] == 25
    assert fake.state.installs[0].result == "running"
    fake.advance(450)
    server = ok(http.get("dci/v3/server/1"))
    assert server["operation"] == {
        "id": op["id"],
        "status": "ok",
        "status_info": {},
        "progress_info": [],
    }
    assert server["os_template"]["name"] == "Ubuntu 22.04"
    assert server["owner_email"] == "jane@example.com"  # install resets nothing else
    rec = fake.state.installs[0]
    assert (rec.server_id, rec.owner_email, rec.template_id, rec.result) == (
        1,
        "jane@example.com",
        1,
        "ok",
    )
    assert rec.started_at == fake.clock.now() - 600


def test_install_twice_is_two_installs(fake: FakeDCImanager, http: httpx.Client) -> None:
    ok(http.post("dci/v3/server/3/reinstall", json=BODY))
    err = error_of(http.post("dci/v3/server/3/reinstall", json=BODY), 409)
    assert err["value"]["server_id"] == 3
    fake.advance(600)
    ok(http.post("dci/v3/server/3/reinstall", json=BODY))
    assert fake.state.install_count(3) == 2


def test_zero_duration_finishes_at_once() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=1, install_duration=0)
    with closing(api(fake)) as http:
        ok(http.post("dci/v3/server/1/reinstall", json=BODY))
        assert ok(http.get("dci/v3/server/1"))["operation"]["status"] == "ok"


def test_install_failure_for_given_servers() -> None:
    fake = FakeDCImanager.with_inventory(
        locations=1, servers_per_location=3, faults=Faults(install_failure_servers={2})
    )
    with closing(api(fake)) as http:
        for sid in (1, 2):
            ok(http.post(f"dci/v3/server/{sid}/reinstall", json=BODY))
        fake.advance(600)
        failed = ok(http.get("dci/v3/server/2"))["operation"]
        assert failed["status"] == "failed"
        assert "failed" in failed["status_info"]["msg"]
        assert ok(http.get("dci/v3/server/1"))["operation"]["status"] == "ok"
    assert [i.result for i in fake.state.installs] == ["ok", "failed"]
    assert not fake.state.servers[2].is_free  # a failed last operation: not free


def _failures(seed: int, rate: float) -> list[str]:
    fake = FakeDCImanager.with_inventory(
        locations=1,
        servers_per_location=20,
        install_duration=0,
        seed=seed,
        faults=Faults(install_failure_rate=rate),
    )
    with closing(api(fake)) as http:
        for sid in range(1, 21):
            ok(http.post(f"dci/v3/server/{sid}/reinstall", json=BODY))
    return [i.result for i in fake.state.installs]


def test_install_failure_rate_is_seeded() -> None:
    a = _failures(7, 0.3)
    assert a == _failures(7, 0.3)
    assert a != _failures(8, 0.3)
    assert 0 < a.count("failed") < 20
    assert _failures(7, 1.0) == ["failed"] * 20


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"os_template": None}, "os_template"),
        ({"os_template": "1"}, "os_template"),
        ({"os_template": 4}, "os_template"),  # a template of location 2
        ({"os_template": 999}, "os_template"),
        ({"password": None}, "password"),
        ({"recipe": "x"}, "recipe"),
        ({"recipe_params": [{"value": 1}]}, "recipe_params"),
        ({"ssh_keys": "ssh-rsa"}, "ssh_keys"),
        ({"send_email_mode": 1}, "send_email_mode"),
    ],
)
def test_install_bad_bodies(
    fake: FakeDCImanager, http: httpx.Client, change: dict[str, object], field: str
) -> None:
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None or k == "recipe"}
    err = error_of(http.post("dci/v3/server/1/reinstall", json=body), 400)
    assert err["value"]["field"] == field
    assert fake.state.installs == ()


def test_templates_are_per_location(http: httpx.Client) -> None:
    all_templates = ok(http.get("dci/v3/os_template"))
    assert all_templates["size"] == 6
    loc2 = ok(http.get("dci/v3/os_template", params={"where": "location_id EQ 2"}))["list"]
    assert [t["name"] for t in loc2] == ["Ubuntu 22.04", "Debian 12", "AlmaLinux 9"]
    assert {"id", "name", "tags", "location_id"} <= set(loc2[0])
    assert ok(http.post("dci/v3/server/7/reinstall", json={**BODY, "os_template": loc2[0]["id"]}))


def test_locations(http: httpx.Client) -> None:
    assert ok(http.get("dci/v3/location")) == {
        "list": [{"id": 1, "name": "Location 1"}, {"id": 2, "name": "Location 2"}],
        "size": 2,
    }
