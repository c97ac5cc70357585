"""Servers: documented shapes, free-server rules, owners, power, ports, IPs."""

from __future__ import annotations

from contextlib import closing

import httpx
import pytest

from dci6bridge.testing import FakeDCImanager

from .conftest import api, error_of, ok

F2_KEYS = {
    "operation",
    "domain",
    "id",
    "os_template",
    "hardware_info",
    "perform_info",
    "configuration",
    "settings",
    "state",
    "state_info",
    "ip",
    "switch_connection",
    "pdu_connection",
}
EXTRA_KEYS = {"owner_email", "location_id", "is_new", "power_status", "name", "maintenance_mode"}
CONNECTION_KEYS = {
    "id",
    "switch",
    "connection_id",
    "description",
    "admin_status",
    "oper_status",
    "do_not_collect_traffic",
    "is_ipmi_connection",
}
PDU_KEYS = {"port_id", "port_identity", "pdu_id", "pdu_name", "connection_id"}


def _new_user(http: httpx.Client, email: str = "jane@example.com") -> int:
    return int(ok(http.post("dci/v3/user", json={"email": email, "password": "pw1"}))["id"])


def test_list_has_the_documented_item_shape(http: httpx.Client) -> None:
    body = ok(http.get("dci/v3/server"))
    assert set(body) == {"list", "size"}
    assert body["size"] == len(body["list"]) == 12
    item = body["list"][0]
    assert set(item) >= F2_KEYS | EXTRA_KEYS
    assert set(item["operation"]) == {"id", "status", "status_info", "progress_info"}
    assert isinstance(item["operation"]["progress_info"], list)
    assert item["hardware_info"] == {}
    assert item["perform_info"] == {}
    assert isinstance(item["settings"]["efi"], bool)
    for conn in item["switch_connection"]:
        assert set(conn) >= CONNECTION_KEYS
        assert isinstance(conn["do_not_collect_traffic"], bool)
    assert set(item["pdu_connection"]) >= PDU_KEYS
    assert any(k.startswith("power") for k in set(item["pdu_connection"]) - PDU_KEYS)


def test_get_one_server_is_not_wrapped(http: httpx.Client) -> None:
    body = ok(http.get("dci/v3/server/2"))
    assert body["id"] == 2
    assert "list" not in body
    assert body == ok(http.get("dci/v3/server", params={"where": "id EQ 2"}))["list"][0]


def test_unknown_server_is_404_instance_not_found(http: httpx.Client) -> None:
    assert error_of(http.get("dci/v3/server/999"), 404)["code"] == 3080
    assert error_of(http.get("dci/v3/server/abc"), 404)["code"] == 3080


def test_f1_configurations_count_free_servers(fake: FakeDCImanager, http: httpx.Client) -> None:
    body = ok(http.get("dci/v3/server/configuration"))
    assert set(body) == {"list"}
    counts = {c["configuration"]: c["free_server_count"] for c in body["list"]}
    assert all(set(c) == {"configuration", "free_server_count"} for c in body["list"])
    assert sum(counts.values()) == 12
    # Each rule of the documented free-server criteria removes one server.
    uid = _new_user(http)
    ok(http.post("dci/v3/server/1/owner", json={"owner": uid}))
    fake.modify_server(2, is_new=True)
    fake.modify_server(3, maintenance_mode=True)
    ok(http.post("dci/v3/server/4/reinstall", json={"os_template": 1, "password": "pw"}))
    body = ok(http.get("dci/v3/server/configuration"))
    assert sum(c["free_server_count"] for c in body["list"]) == 8
    assert {s.id for s in fake.state.free_servers} == set(range(5, 13))
    fake.advance(600)  # the install ends ok: server 4 is owned by nobody, so free again
    assert (
        sum(c["free_server_count"] for c in ok(http.get("dci/v3/server/configuration"))["list"])
        == 9
    )


def test_configurations_can_be_narrowed_to_a_location(http: httpx.Client) -> None:
    body = ok(http.get("dci/v3/server/configuration", params={"where": "location_id EQ 2"}))
    assert sum(c["free_server_count"] for c in body["list"]) == 6


def test_documented_free_server_filter(fake: FakeDCImanager, http: httpx.Client) -> None:
    fake.modify_server(5, is_new=True)
    uid = _new_user(http)
    ok(http.post("dci/v3/server/6/owner", json={"owner": uid}))
    # The exact query string seen in public code (freeds-selection).
    r = http.get(
        "dci/v3/server?orderby=owner_email%20asc&limit=0,400"
        "&where=(owner_email%20IS%20null)+AND+is_new%20EQ%20false"
    )
    ids = [s["id"] for s in ok(r)["list"]]
    assert 5 not in ids
    assert 6 not in ids
    assert len(ids) == 10


def test_owner_set_conflict_and_release(fake: FakeDCImanager, http: httpx.Client) -> None:
    a, b = _new_user(http, "a@example.com"), _new_user(http, "b@example.com")
    ok(http.post("dci/v3/server/3/owner", json={"owner": a}))
    assert ok(http.get("dci/v3/server/3"))["owner_email"] == "a@example.com"
    ok(http.post("dci/v3/server/3/owner", json={"owner": a}))  # same owner again: fine
    err = error_of(http.post("dci/v3/server/3/owner", json={"owner": b}), 409)
    assert err["value"]["owner_email"] == "a@example.com"
    assert fake.state.servers[3].owner_id == a
    ok(http.post("dci/v3/server/3/owner", json={"owner": None}))
    assert ok(http.get("dci/v3/server/3"))["owner_email"] is None
    state = fake.state
    assert state.count("servers.set_owner", 409) == 1
    assert state.count("servers.release_owner") == 1


def test_overwriting_owner_mode() -> None:
    fake = FakeDCImanager.with_inventory(
        locations=1, servers_per_location=2, conditional_owner=False
    )
    a = fake.add_user("a@example.com")
    b = fake.add_user("b@example.com")
    with closing(api(fake)) as http:
        ok(http.post("dci/v3/server/1/owner", json={"owner": a}))
        ok(http.post("dci/v3/server/1/owner", json={"owner": b}))
    assert fake.state.servers[1].owner_email == "b@example.com"
    assert fake.state.users[a].server_ids == ()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "owner"),
        ({"owner": "3"}, "owner"),
        ({"owner": True}, "owner"),
        ({"owner": 999}, "owner"),
    ],
)
def test_owner_bad_bodies(http: httpx.Client, body: dict[str, object], field: str) -> None:
    err = error_of(http.post("dci/v3/server/1/owner", json=body), 400)
    assert err["value"]["field"] == field


def test_ports_off_leaves_ipmi_up(fake: FakeDCImanager, http: httpx.Client) -> None:
    server = ok(http.get("dci/v3/server/2"))  # even id: two data ports
    conns = server["switch_connection"]
    assert sum(c["is_ipmi_connection"] for c in conns) == 1
    data = [c for c in conns if not c["is_ipmi_connection"]]
    assert len(data) == 2
    for c in data:
        ok(http.post(f"dci/v3/switch/{c['switch']}/port/{c['connection_id']}/off", json={}))
    after = ok(http.get("dci/v3/server/2"))["switch_connection"]
    assert {c["is_ipmi_connection"]: c["admin_status"] for c in after} == {
        True: "up",
        False: "down",
    }
    st = fake.state.servers[2]
    assert st.ipmi_up
    assert st.data_ports_up is False
    # Other servers' ports are untouched.
    assert fake.state.servers[1].data_ports_up is True
    ports = ok(http.get(f"dci/v3/switch/{data[0]['switch']}/port"))
    down = {p["id"] for p in ports["list"] if p["admin_status"] == "down"}
    assert down == {c["connection_id"] for c in data}
    c = data[0]
    ok(http.post(f"dci/v3/switch/{c['switch']}/port/{c['connection_id']}/on", json={}))
    assert fake.state.servers[2].data_ports_up is None


def test_unknown_switch_or_port_is_404(http: httpx.Client) -> None:
    assert error_of(http.get("dci/v3/switch/77/port"), 404)["code"] == 3080
    assert error_of(http.post("dci/v3/switch/1/port/9999/off", json={}), 404)["code"] == 3080


def test_power_preconditions(fake: FakeDCImanager, http: httpx.Client) -> None:
    assert error_of(http.post("dci/v3/server/1/power_on", json={}), 409)
    ok(http.post("dci/v3/server/1/power_off", json={}))
    assert ok(http.get("dci/v3/server/1"))["power_status"] == "off"
    assert error_of(http.post("dci/v3/server/1/power_off", json={}), 409)
    ok(http.post("dci/v3/server/1/power_on", json={}))
    ok(http.post("dci/v3/server/1/power_reset", json={}))
    fake.modify_server(1, power_status="unknown")
    ok(http.post("dci/v3/server/1/power_on", json={}))
    fake.modify_server(1, power_status="off")
    ok(http.post("dci/v3/server/1/power_reset", json={}))  # reset powers a stopped server on
    assert fake.state.servers[1].power_status == "on"


def test_power_with_duration_is_an_operation() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=1, power_duration=30)
    with closing(api(fake)) as http:
        body = ok(http.post("dci/v3/server/1/power_off", json={}))
        assert body["id"] == 1
        assert isinstance(body["task"], str)
        server = ok(http.get("dci/v3/server/1"))
        assert server["operation"]["status"] == "running"
        assert server["power_status"] == "on"
        assert error_of(http.post("dci/v3/server/1/power_reset", json={}), 409)
        fake.advance(30)
        server = ok(http.get("dci/v3/server/1"))
        assert server["operation"]["status"] == "ok"
        assert server["power_status"] == "off"


def test_ip_bind_and_unbind(fake: FakeDCImanager, http: httpx.Client) -> None:
    pools = ok(http.get("ip/v3/ippool"))["list"]
    pool = next(p for p in pools if p["location_id"] == 1)
    free_before = pool["total_ip"] - pool["using_ip"]
    ok(http.post("dci/v3/server/1/ip", json={"ipv4_number": 2, "ipv4_pool": [pool["id"]]}))
    ips = ok(http.get("dci/v3/server/1"))["ip"]
    assert len(ips) == 2
    assert all(ip["family"] == "ipv4" for ip in ips)
    assert {"domain", "family", "gateway", "id", "name", "network", "status"} <= set(ips[0])
    ok(http.delete(f"dci/v3/ip/{ips[0]['id']}"))
    assert [ip["id"] for ip in ok(http.get("dci/v3/server/1"))["ip"]] == [ips[1]["id"]]
    pool_after = next(p for p in ok(http.get("ip/v3/ippool"))["list"] if p["id"] == pool["id"])
    assert pool_after["total_ip"] - pool_after["using_ip"] == free_before - 1
    # The released address is the lowest free one again.
    ok(http.post("dci/v3/server/2/ip", json={"ipv4_number": 1, "ipv4_pool": [pool["id"]]}))
    assert ok(http.get("dci/v3/server/2"))["ip"][0]["name"] == ips[0]["name"]
    assert error_of(http.delete(f"dci/v3/ip/{ips[0]['id']}"), 404)["code"] == 3080
    assert fake.state.servers[1].ips == (ips[1]["name"],)


def test_ip_bind_refuses_what_it_cannot_do_whole() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=1, ips_per_pool=2)
    with closing(api(fake)) as http:
        error_of(http.post("dci/v3/server/1/ip", json={"ipv4_number": 3, "ipv4_pool": [1]}), 409)
        assert fake.state.servers[1].ips == ()  # nothing half-done
        err = error_of(
            http.post("dci/v3/server/1/ip", json={"ipv4_number": 1, "ipv4_pool": [9]}), 400
        )
        assert err["value"]["field"] == "ipv4_pool"
        err = error_of(http.post("dci/v3/server/1/ip", json={"ipv4_number": 0}), 400)
        assert err["value"] == {"field": "ipv4_number", "value": 0}


def test_ip_bind_without_pools_uses_the_location_pools(
    fake: FakeDCImanager, http: httpx.Client
) -> None:
    for body in ({"ipv4_number": 1}, {"ipv4_number": 1, "ipv4_pool": []}):
        ok(http.post("dci/v3/server/8/ip", json=body))  # server 8 is in location 2
    ips = fake.state.servers[8].ips
    assert len(ips) == 2
    assert all(ip.startswith("10.2.") for ip in ips)  # pool 2 belongs to location 2
