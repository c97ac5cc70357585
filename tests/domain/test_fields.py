"""Every field of DataCenter, ProcessingModule, Tariff and Order is checked on
construction, with a message naming the field and the value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dci6bridge import ConfigError, DataCenter, Order, ProcessingModule, Secret, Tariff

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl jane@laptop"


def problems_of(make: Callable[[], object]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        make()
    assert isinstance(info.value, ValueError)
    return info.value.problems


# --------------------------------------------------------------------------- DataCenter


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": ""}, "DataCenter.name: '' is empty"),
        ({"name": 5}, "DataCenter.name: 5 is not a string"),
        ({"name": " Ams"}, "DataCenter.name: ' Ams' has leading or trailing whitespace"),
        (
            {"location_id": 0},
            "DataCenter.location_id: 0 is not a positive integer "
            "(a DCImanager 6 managed data center needs its Location ID)",
        ),
        (
            {"location_id": None},
            "DataCenter.location_id: None is not an integer "
            "(a DCImanager 6 managed data center needs its Location ID)",
        ),
        (
            {"location_id": "3"},
            "DataCenter.location_id: '3' is not an integer "
            "(a DCImanager 6 managed data center needs its Location ID)",
        ),
        (
            {"location_id": True},
            "DataCenter.location_id: True is not an integer "
            "(a DCImanager 6 managed data center needs its Location ID)",
        ),
        (
            {"location_id": -1, "dci6_managed": False},
            "DataCenter.location_id: -1 is not a positive integer",
        ),
        ({"dci6_managed": "yes"}, "DataCenter.dci6_managed: 'yes' is not true or false"),
        ({"sort": 1.5}, "DataCenter.sort: 1.5 is not an integer"),
    ],
)
def test_data_center_field_problems(kwargs: dict[str, Any], problem: str) -> None:
    args: dict[str, Any] = {"name": "Amsterdam", "location_id": 3, **kwargs}
    assert problems_of(lambda: DataCenter(**args)) == (problem,)


def test_data_center_valid_forms() -> None:
    dc = DataCenter("Amsterdam", 3, sort=-5)
    assert (dc.name, dc.location_id, dc.dci6_managed, dc.sort) == ("Amsterdam", 3, True, -5)
    assert dc.selectable
    legacy = DataCenter("Old DC", None, dci6_managed=False)
    assert not legacy.selectable
    with pytest.raises(AttributeError):
        dc.sort = 1  # type: ignore[misc]


def test_data_center_lists_every_problem_at_once() -> None:
    assert problems_of(lambda: DataCenter("", -2, sort="x")) == (  # type: ignore[arg-type]
        "DataCenter.name: '' is empty",
        "DataCenter.location_id: -2 is not a positive integer "
        "(a DCImanager 6 managed data center needs its Location ID)",
        "DataCenter.sort: 'x' is not an integer",
    )


# --------------------------------------------------------------------------- ProcessingModule


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"name": ""}, "ProcessingModule.name: '' is empty"),
        (
            {"data_center": "Amsterdam"},
            "ProcessingModule.data_center: 'Amsterdam' is not a DataCenter",
        ),
        ({"url": "ftp://x"}, "ProcessingModule.url: 'ftp://x' is not an http(s) URL"),
        (
            {"url": "dci.example.com"},
            "ProcessingModule.url: 'dci.example.com' is not an http(s) URL "
            "(did you mean 'https://dci.example.com'?)",
        ),
        ({"url": "https://"}, "ProcessingModule.url: 'https://' is not an http(s) URL"),
        (
            {"url": "https://h:99999"},
            "ProcessingModule.url: 'https://h:99999' is not an http(s) URL",
        ),
        (
            {"url": "https://dci.example.com/?a=1"},
            "ProcessingModule.url: 'https://dci.example.com/?a=1' "
            "must not have a query or fragment",
        ),
        ({"url": 8080}, "ProcessingModule.url: 8080 is not a string"),
        ({"username": "admin"}, "ProcessingModule.username: 'admin' is not an e-mail address"),
        (
            {"username": "ad min@example.com"},
            "ProcessingModule.username: 'ad min@example.com' is not an e-mail address",
        ),
        ({"password": ""}, "ProcessingModule.password: is empty"),
        ({"password": 1234}, "ProcessingModule.password: must be a string, not int"),
        ({"department": "  "}, "ProcessingModule.department: '  ' is empty"),
        ({"sort": None}, "ProcessingModule.sort: None is not an integer"),
        ({"enabled": 1}, "ProcessingModule.enabled: 1 is not true or false"),
        ({"by_server_type": "no"}, "ProcessingModule.by_server_type: 'no' is not true or false"),
        ({"verify_tls": None}, "ProcessingModule.verify_tls: None is not true or false"),
        ({"ca_bundle": ""}, "ProcessingModule.ca_bundle: '' is empty"),
        (
            {"ca_bundle": "/etc/ca.pem", "verify_tls": False},
            "ProcessingModule.ca_bundle: '/etc/ca.pem' is set but verify_tls is false",
        ),
    ],
)
def test_module_field_problems(
    module_args: Callable[..., dict[str, Any]], overrides: dict[str, Any], problem: str
) -> None:
    assert problems_of(lambda: ProcessingModule(**module_args(**overrides))) == (problem,)


def test_module_url_with_credentials_is_refused_without_echoing_them(
    module_args: Callable[..., dict[str, Any]],
) -> None:
    problems = problems_of(
        lambda: ProcessingModule(**module_args(url="https://admin:topsecret@dci.example.com"))
    )
    assert problems == (
        "ProcessingModule.url: 'https://***@dci.example.com' holds credentials; "
        "give them as username and password instead",
    )
    assert "topsecret" not in str(problems)


def test_module_normalises_and_wraps(module_args: Callable[..., dict[str, Any]]) -> None:
    m = ProcessingModule(**module_args(url="https://dci.example.com:1500/proxy//", sort=-1))
    assert m.url == "https://dci.example.com:1500/proxy"
    assert isinstance(m.password, Secret)
    assert m.password.reveal() == "hunter2-secret"
    assert ProcessingModule(**module_args(password=Secret("x"))).password == Secret("x")
    assert m.verify is True
    assert ProcessingModule(**module_args(verify_tls=False)).verify is False
    bundled = ProcessingModule(**module_args(ca_bundle=Path("/etc/ssl/dci.pem")))
    assert bundled.ca_bundle == "/etc/ssl/dci.pem"
    assert bundled.verify == "/etc/ssl/dci.pem"
    plain_http = ProcessingModule(**module_args(url="http://10.0.0.5"))
    assert plain_http.url == "http://10.0.0.5"


def test_module_never_shows_its_password(module_args: Callable[..., dict[str, Any]]) -> None:
    m = ProcessingModule(**module_args(password="hunter2-secret"))
    for text in (repr(m), str(m), f"{m}", repr(m.password), str(m.password)):
        assert "hunter2" not in text
    assert "password=Secret('***')" in repr(m)
    # a bad module next to a good password: the error never carries the password
    with pytest.raises(ConfigError) as info:
        ProcessingModule(**module_args(password="hunter2-secret", url="ftp://x"))
    assert "hunter2" not in str(info.value)


# --------------------------------------------------------------------------- Tariff


def tariff_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "E3-64",
        "configuration": "E3-1230v6-64Gb",
        "os_templates": ("Ubuntu 22.04",),
        "modules": ("dci-ams",),
    }
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"name": ""}, "Tariff.name: '' is empty"),
        ({"configuration": None}, "Tariff.configuration: None is not a string"),
        (
            {"os_templates": ()},
            "Tariff.os_templates: () is empty (a server cannot be issued without an OS)",
        ),
        (
            {"os_templates": "Ubuntu 22.04"},
            "Tariff.os_templates: 'Ubuntu 22.04' is a string, not a list of names",
        ),
        ({"os_templates": ["A", "A"]}, "Tariff.os_templates[1]: 'A' is listed twice"),
        ({"os_templates": ["A", 7]}, "Tariff.os_templates[1]: 7 is not a string"),
        (
            {"modules": []},
            "Tariff.modules: () is empty (a tariff with no module cannot be ordered)",
        ),
        ({"modules": 3}, "Tariff.modules: 3 is int, not a list of names"),
        ({"modules": {"m": 1}}, "Tariff.modules: {'m': 1} is dict, not a list of names"),
        ({"ipv4_count": -1}, "Tariff.ipv4_count: -1 is not an integer >= 0"),
        ({"ip_pools": [1, 0]}, "Tariff.ip_pools[1]: 0 is not a positive integer"),
        ({"ip_pools": "pool"}, "Tariff.ip_pools: 'pool' is not a list of pool ids"),
        ({"recipes": [""]}, "Tariff.recipes[0]: '' is empty"),
        ({"description": None}, "Tariff.description: None is not a string"),
    ],
)
def test_tariff_field_problems(overrides: dict[str, Any], problem: str) -> None:
    assert problems_of(lambda: Tariff(**tariff_args(**overrides))) == (problem,)


def test_tariff_takes_lists_and_stores_tuples() -> None:
    t = Tariff(**tariff_args(os_templates=["A", "B"], modules=["m"], ip_pools=[4], recipes=["r"]))
    assert (t.os_templates, t.modules, t.ip_pools, t.recipes) == (("A", "B"), ("m",), (4,), ("r",))
    assert hash(t) == hash(
        Tariff(
            **tariff_args(os_templates=("A", "B"), modules=("m",), ip_pools=(4,), recipes=("r",))
        )
    )


# --------------------------------------------------------------------------- Order


def order_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "service_id": "INV-1001",
        "tariff": "E3-64",
        "os_template": "Ubuntu 22.04",
        "customer_email": "jane@example.com",
    }
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"service_id": ""}, "Order.service_id: '' is empty"),
        ({"service_id": 1001}, "Order.service_id: 1001 is not a string"),
        ({"tariff": ""}, "Order.tariff: '' is empty"),
        ({"os_template": None}, "Order.os_template: None is not a string"),
        ({"customer_email": "jane"}, "Order.customer_email: 'jane' is not an e-mail address"),
        ({"customer_email": "a@b@c"}, "Order.customer_email: 'a@b@c' is not an e-mail address"),
        ({"hostname": "-web"}, "Order.hostname: '-web' is not a valid host name (RFC 1123)"),
        ({"hostname": "web_1"}, "Order.hostname: 'web_1' is not a valid host name (RFC 1123)"),
        ({"hostname": "a..b"}, "Order.hostname: 'a..b' is not a valid host name (RFC 1123)"),
        ({"hostname": "web."}, "Order.hostname: 'web.' is not a valid host name (RFC 1123)"),
        (
            {"hostname": "10.0.0.1"},
            "Order.hostname: '10.0.0.1' is not a valid host name (RFC 1123)",
        ),
        (
            {"hostname": "a" * 64},
            f"Order.hostname: '{'a' * 54}...' is not a valid host name (RFC 1123)",
        ),
        (
            {"ssh_keys": ["hello"]},
            "Order.ssh_keys[0]: 'hello' does not look like an OpenSSH public key",
        ),
        (
            {"ssh_keys": [KEY, "ssh-rsa"]},
            "Order.ssh_keys[1]: 'ssh-rsa' does not look like an OpenSSH public key",
        ),
        ({"ssh_keys": KEY}, f"Order.ssh_keys: '{KEY[:54]}...' is not a list of public keys"),
        (
            {"ssh_keys": ["-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n"]},
            "Order.ssh_keys[0]: is a private key (value not shown); give the public key",
        ),
        ({"recipe": ""}, "Order.recipe: '' is empty"),
        ({"data_center": 3}, "Order.data_center: 3 is not a string"),
        ({"customer_name": ""}, "Order.customer_name: '' is empty"),
    ],
)
def test_order_field_problems(overrides: dict[str, Any], problem: str) -> None:
    assert problems_of(lambda: Order(**order_args(**overrides))) == (problem,)


def test_order_accepts_good_values_and_objects() -> None:
    rsa = "ssh-rsa " + "A" * 300 + "== ops key"
    ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI"
    tariff = Tariff(**tariff_args())
    dc = DataCenter("Amsterdam", 3)
    order = Order(
        **order_args(
            tariff=tariff,
            data_center=dc,
            hostname="web-1.Example.com",
            ssh_keys=[KEY, rsa, ecdsa],
            customer_name="Jane Doe",
        )
    )
    assert order.tariff == "E3-64"
    assert order.data_center == "Amsterdam"
    assert order.ssh_keys == (KEY, rsa, ecdsa)
    assert Order(**order_args(hostname="a" * 63 + ".example.com")).hostname


def test_order_lists_every_problem() -> None:
    problems = problems_of(lambda: Order("", "", "", "nobody", hostname="x_y"))
    assert problems == (
        "Order.service_id: '' is empty",
        "Order.tariff: '' is empty",
        "Order.os_template: '' is empty",
        "Order.customer_email: 'nobody' is not an e-mail address",
        "Order.hostname: 'x_y' is not a valid host name (RFC 1123)",
    )
    with pytest.raises(ConfigError) as info:
        Order("", "", "", "nobody")
    assert str(info.value).startswith("4 problems:\n  - Order.service_id: '' is empty\n")
