"""Inventory presets and JSON files."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import pytest

from dci6bridge.errors import ConfigError
from dci6bridge.testing import FakeDCImanager, Inventory

from .conftest import api, ok

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "inventory.json"


def test_preset_numbering_and_cycling() -> None:
    fake = FakeDCImanager.with_inventory(
        locations=3,
        servers_per_location=4,
        configurations=("A", "B"),
        os_templates=("Ubuntu 22.04", "Windows Server 2022"),
        ip_pools=2,
        ips_per_pool=5,
    )
    state = fake.state
    assert sorted(state.servers) == list(range(1, 13))
    assert [s.location_id for s in state.servers.values()] == [1] * 4 + [2] * 4 + [3] * 4
    assert [s.configuration for s in state.servers.values()][:4] == ["A", "B", "A", "B"]
    assert state.servers[5].name == "srv-2-001"
    # one IPMI port plus one (odd id) or two (even id) data ports
    assert [len(state.servers[i].ports) for i in (1, 2)] == [2, 3]
    assert all(sum(p.is_ipmi for p in s.ports) == 1 for s in state.servers.values())
    with closing(api(fake)) as http:
        templates = ok(http.get("dci/v3/os_template"))["list"]
        pools = ok(http.get("ip/v3/ippool"))["list"]
    assert len(templates) == 6
    assert {t["location_id"] for t in templates} == {1, 2, 3}
    assert templates[1]["tags"] == ["windows"]
    assert len(pools) == 6
    assert all(p["total_ip"] == 5 for p in pools)
    assert all(s.is_free for s in state.servers.values())


def test_default_constructor_has_the_default_preset() -> None:
    state = FakeDCImanager().state
    assert len(state.servers) == 40
    assert len(state.users) == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"locations": -1}, "locations"),
        ({"servers_per_location": -2}, "servers_per_location"),
        ({"configurations": ()}, "configurations"),
        ({"ips_per_pool": 70_000}, "ips_per_pool"),
    ],
)
def test_bad_presets(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        FakeDCImanager.with_inventory(**kwargs)  # type: ignore[arg-type]


def test_example_file_loads_and_round_trips() -> None:
    fake = FakeDCImanager.from_inventory_file(EXAMPLE, install_duration=0)
    state = fake.state
    assert sorted(state.servers) == [101, 102, 103, 104, 105, 301, 302]
    assert [s.id for s in state.free_servers] == [101, 102, 301, 302]
    assert state.servers[105].owner_email == "existing-customer@example.com"
    assert state.servers[105].power_status == "off"
    assert len(state.servers[102].ports) == 2
    with closing(api(fake)) as http:
        ok(http.post("dci/v3/server/301/ip", json={"ipv4_number": 1, "ipv4_pool": [2]}))
        assert ok(http.get("dci/v3/server/301"))["ip"][0]["gateway"] == "192.0.2.1"
    assert fake.state.servers[301].ips == ("192.0.2.10",)
    inv = Inventory.from_file(EXAMPLE)
    assert Inventory.from_json(json.loads(json.dumps(inv.to_json()))) == inv


def test_preset_form_in_json(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    path.write_text(
        json.dumps(
            {
                "locations": 1,
                "servers_per_location": 3,
                "configurations": ["X"],
                "users": [{"email": "u@example.com"}],
            }
        )
    )
    state = FakeDCImanager.from_inventory_file(path).state
    assert len(state.servers) == 3
    assert {s.configuration for s in state.servers.values()} == {"X"}
    assert state.users_by_email("u@example.com")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ([], "expected a JSON object"),
        ({"locations": 1, "colour": 2}, "inventory.colour"),
        ({"locations": [{"id": 1}]}, r"locations\[0\].name: required"),
        ({"locations": [{"id": "1", "name": "x"}]}, r"locations\[0\].id: expected an integer"),
        (
            {
                "locations": [{"id": 1, "name": "x"}],
                "servers": [{"id": 1, "name": "s", "location_id": 2, "configuration": "c"}],
            },
            r"servers\[0\].location_id: 2 is not a location id",
        ),
        (
            {
                "locations": [{"id": 1, "name": "x"}],
                "servers": [
                    {
                        "id": 1,
                        "name": "s",
                        "location_id": 1,
                        "configuration": "c",
                        "power_status": "maybe",
                    }
                ],
            },
            r"servers\[0\].power_status",
        ),
        (
            {"locations": [{"id": 1, "name": "x"}, {"id": 1, "name": "y"}]},
            r"locations\[1\].id: duplicate id 1",
        ),
        (
            {
                "locations": [{"id": 1, "name": "x"}],
                "servers": [
                    {
                        "id": 1,
                        "name": "s",
                        "location_id": 1,
                        "configuration": "c",
                        "owner_email": "who@example.com",
                    }
                ],
            },
            "not in users",
        ),
        (
            {
                "locations": [{"id": 1, "name": "x"}],
                "ip_pools": [{"id": 1, "name": "p", "size": -1}],
            },
            "size",
        ),
    ],
)
def test_bad_inventory_json(tmp_path: Path, data: object, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=needle) as info:
        FakeDCImanager.from_inventory_file(path)
    assert str(path) in str(info.value)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Inventory.from_file(path)
