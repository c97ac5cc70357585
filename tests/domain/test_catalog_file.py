"""Catalog.from_toml / from_dict / to_dict: the catalog file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dci6bridge import Catalog, ConfigError, Secret

EXAMPLE = Path(__file__).parents[2] / "examples" / "catalog.toml"
ENV = {"DCI_AMS_PASSWORD": "ams-pass-1", "DCI_FRA_PASSWORD": "fra-pass-2"}


def good() -> dict[str, Any]:
    return {
        "data_centers": [
            {"name": "Amsterdam", "location_id": 1, "sort": 10},
            {"name": "Frankfurt", "location_id": 2},
        ],
        "modules": [
            {
                "name": "dci-ams",
                "data_center": "Amsterdam",
                "url": "https://dci-ams.example.com/",
                "username": "admin@example.com",
                "password_env": "DCI_AMS_PASSWORD",
                "department": "Support",
                "sort": 1,
            },
            {
                "name": "dci-fra",
                "data_center": "Frankfurt",
                "url": "https://dci-fra.example.com",
                "username": "admin@example.com",
                "password": "inline-pass",
                "department": "Support",
                "verify_tls": False,
            },
        ],
        "tariffs": [
            {
                "name": "E3-64",
                "configuration": "E3",
                "os_templates": ["Debian 12"],
                "modules": ["dci-ams", "dci-fra"],
            }
        ],
    }


def test_the_annotated_example_loads() -> None:
    catalog = Catalog.from_toml(EXAMPLE, environ=ENV)
    assert [dc.name for dc in catalog.data_centers] == ["Amsterdam", "Frankfurt"]
    ams = catalog.module("dci-ams")
    assert ams.password == Secret("ams-pass-1")
    assert ams.password_env == "DCI_AMS_PASSWORD"
    assert ams.data_center is catalog.data_center("Amsterdam")
    assert catalog.tariff("E3-64").modules == ("dci-ams", "dci-fra")


def test_from_dict_builds_objects() -> None:
    catalog = Catalog.from_dict(good(), environ=ENV)
    ams, fra = catalog.modules
    assert ams.url == "https://dci-ams.example.com"
    assert ams.password.reveal() == "ams-pass-1"
    assert fra.password.reveal() == "inline-pass"
    assert fra.password_env is None
    assert fra.verify is False
    assert catalog.data_center("Frankfurt").sort == 0


def test_password_env_defaults_to_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DCI_AMS_PASSWORD", "from-os-environ")
    catalog = Catalog.from_dict(good())
    assert catalog.module("dci-ams").password.reveal() == "from-os-environ"


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        (
            {},
            "modules[0].password_env: environment variable 'DCI_AMS_PASSWORD' is not set "
            "(password of module 'dci-ams')",
        ),
        (
            {"DCI_AMS_PASSWORD": ""},
            "modules[0].password_env: environment variable 'DCI_AMS_PASSWORD' is empty "
            "(password of module 'dci-ams')",
        ),
    ],
)
def test_missing_password_env_names_module_and_variable(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Catalog.from_dict(good(), environ=environ)
    assert info.value.problems == (problem,)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"password": "x", "password_env": "DCI_AMS_PASSWORD"},
            "modules[0]: give either password or password_env, not both",
        ),
        ({"password_env": ""}, "modules[0].password_env: '' is empty"),
        ({"password": 42, "password_env": None}, "modules[0].password: must be a string, not int"),
        ({"password": "", "password_env": None}, "modules[0].password: is empty"),
        ({"password_env": None}, "modules[0].password: missing (set password_env, or password)"),
        (
            {"password_env": None, "password_omitted": True},
            "modules[0].password: missing (this catalog was exported without secrets; "
            "set password_env)",
        ),
        (
            {"password_env": None, "password_omitted": "yes"},
            "modules[0].password_omitted: 'yes' is not true or false",
        ),
    ],
)
def test_password_problems(change: dict[str, Any], problem: str) -> None:
    data = good()
    module = data["modules"][0]
    for key, value in change.items():
        if value is None:
            module.pop(key, None)
        else:
            module[key] = value
    with pytest.raises(ConfigError) as info:
        Catalog.from_dict(data, environ=ENV)
    assert problem in info.value.problems
    assert len(info.value.problems) <= 2  # the "yes" case also says the password is missing


def test_every_problem_of_a_bad_file_in_one_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        """
        colour = "blue"

        [[data_centers]]
        name = "Amsterdam"
        location_id = 0

        [[data_centers]]
        name = "Amsterdam"
        location_id = 2

        [[modules]]
        name = "dci-ams"
        data_center = "Berlin"
        url = "ftp://x"
        username = "admin"
        password = "s3cr3t-in-file"
        department = "Support"
        sorting = 1

        [[modules]]
        name = "dci-fra"
        url = "https://dci-fra.example.com"
        username = "admin@example.com"
        password_env = "NOT_SET_ANYWHERE"

        [[tariffs]]
        name = "E3-64"
        configuration = "E3"
        os_templates = []
        modules = ["dci-ams", "dci-zrh"]
        ipv4_count = -1
        """
    )
    with pytest.raises(ConfigError) as info:
        Catalog.from_toml(path, environ={})
    assert info.value.problems == (
        "colour: unknown section (known: data_centers, modules, tariffs)",
        "data_centers[0].location_id: 0 is not a positive integer "
        "(a DCImanager 6 managed data center needs its Location ID)",
        "modules[0].sorting: unknown key (known: by_server_type, ca_bundle, data_center, "
        "department, enabled, name, password, password_env, password_omitted, sort, url, "
        "username, verify_tls)",
        "modules[0].url: 'ftp://x' is not an http(s) URL",
        "modules[0].username: 'admin' is not an e-mail address",
        "modules[1].department: missing",
        "modules[1].password_env: environment variable 'NOT_SET_ANYWHERE' is not set "
        "(password of module 'dci-fra')",
        "modules[1].data_center: missing",
        "tariffs[0].os_templates: () is empty (a server cannot be issued without an OS)",
        "tariffs[0].ipv4_count: -1 is not an integer >= 0",
        "data_centers[1].name: 'Amsterdam' is already used by data_centers[0]",
        "modules[0].data_center: 'Berlin' is not a data center of this catalog "
        "(known: 'Amsterdam')",
        "tariffs[0].modules[1]: 'dci-zrh' is not a module of this catalog "
        "(known: 'dci-ams', 'dci-fra')",
    )
    assert str(info.value).startswith("13 problems:\n  - colour: unknown section")
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "catalog: [] is not a table"),
        (
            {"modules": {"name": "x"}},
            "modules: {'name': 'x'} is not an array of tables (write [[modules]] sections)",
        ),
        ({"data_centers": ["Amsterdam"]}, "data_centers[0]: 'Amsterdam' is not a table"),
        (
            {"data_centers": [{"location_id": 4}]},
            "data_centers[0].name: missing",
        ),
        (
            {
                "tariffs": [
                    {"name": "T", "configuration": "C", "os_templates": ["D"], "modules": "m"}
                ]
            },
            "tariffs[0].modules: 'm' is a string, not a list of names",
        ),
    ],
)
def test_structure_problems(data: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        Catalog.from_dict(data, environ={})
    assert problem in info.value.problems


def test_module_with_non_string_data_center() -> None:
    data = good()
    data["modules"][1]["data_center"] = 2
    with pytest.raises(ConfigError) as info:
        Catalog.from_dict(data, environ=ENV)
    assert info.value.problems == ("modules[1].data_center: 2 is not a data center name",)


def test_a_bad_entry_does_not_cascade_into_reference_problems() -> None:
    """A data center or module with a problem of its own is still known by name."""
    data = good()
    data["data_centers"][0]["location_id"] = -3
    data["modules"][0]["url"] = "gopher://x"
    with pytest.raises(ConfigError) as info:
        Catalog.from_dict(data, environ=ENV)
    assert info.value.problems == (
        "data_centers[0].location_id: -3 is not a positive integer "
        "(a DCImanager 6 managed data center needs its Location ID)",
        "modules[0].url: 'gopher://x' is not an http(s) URL",
    )


def test_invalid_toml_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[[modules]]\nname = "x\n')
    with pytest.raises(ConfigError) as info:
        Catalog.from_toml(path)
    assert str(info.value).startswith(f"{path}: not valid TOML: ")
    assert "line 2" in str(info.value)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Catalog.from_toml(tmp_path / "nope.toml")


def test_from_dict_does_not_modify_its_input() -> None:
    data = good()
    before = copy.deepcopy(data)
    Catalog.from_dict(data, environ=ENV)
    assert data == before


def test_to_dict_never_writes_a_secret_and_round_trips() -> None:
    catalog = Catalog.from_dict(good(), environ=ENV)
    exported = catalog.to_dict()
    text = json.dumps(exported)  # JSON-safe
    assert "ams-pass-1" not in text
    assert "inline-pass" not in text
    ams, fra = exported["modules"]
    assert ams["password_env"] == "DCI_AMS_PASSWORD"
    assert "password" not in ams
    assert fra["password_omitted"] is True
    assert "password" not in fra
    assert "password_env" not in fra

    # the exported file asks for the omitted password, nothing else
    with pytest.raises(ConfigError) as info:
        Catalog.from_dict(exported, environ=ENV)
    assert info.value.problems == (
        "modules[1].password: missing (this catalog was exported without secrets; "
        "set password_env)",
    )
    fra["password_env"] = "DCI_FRA_PASSWORD"
    del fra["password_omitted"]
    again = Catalog.from_dict(exported, environ=ENV)
    assert again.to_dict() == exported
    assert again.module("dci-ams") == catalog.module("dci-ams")
    assert again.data_centers == catalog.data_centers
    assert again.tariffs == catalog.tariffs


def test_to_dict_of_the_example_round_trips() -> None:
    catalog = Catalog.from_toml(EXAMPLE, environ=ENV)
    assert Catalog.from_dict(catalog.to_dict(), environ=ENV) == catalog


def test_non_managed_data_center_without_location() -> None:
    data = good()
    data["data_centers"].append({"name": "Legacy", "dci6_managed": False})
    del data["modules"][1]["password"]
    data["modules"][1]["password_env"] = "DCI_FRA_PASSWORD"
    catalog = Catalog.from_dict(data, environ=ENV)
    legacy = catalog.data_center("Legacy")
    assert legacy.location_id is None
    assert "location_id" not in catalog.to_dict()["data_centers"][2]
    assert Catalog.from_dict(catalog.to_dict(), environ=ENV).data_center("Legacy") == legacy
