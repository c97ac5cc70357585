"""Catalog: cross-checks, lookups, check_order, and secrets staying hidden."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from dci6bridge import Catalog, ConfigError, DataCenter, Order, ProcessingModule, Tariff


def tariff(name: str = "T", modules: tuple[str, ...] = ("m1",)) -> Tariff:
    return Tariff(name=name, configuration="C", os_templates=("Debian 12",), modules=modules)


def test_lookups(catalog: Catalog) -> None:
    assert catalog.tariff("E3-64").configuration == "E3-1230v6-64Gb-2x480SSD"
    assert catalog.module("dci-fra").data_center.name == "Frankfurt"
    assert catalog.data_center("Amsterdam").location_id == 3
    assert [t.name for t in catalog.tariffs_of("dci-ams")] == ["E3-64", "XEON-128"]
    assert [t.name for t in catalog.tariffs_of(catalog.module("dci-fra"))] == ["E3-64"]


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        ("tariff", "tariff: 'nope' is not in the catalog (known: 'E3-64', 'XEON-128')"),
        (
            "module",
            "module: 'nope' is not in the catalog (known: 'dci-ams', 'dci-ams-2', 'dci-fra')",
        ),
        (
            "data_center",
            "data_center: 'nope' is not in the catalog (known: 'Amsterdam', 'Frankfurt')",
        ),
    ],
)
def test_lookup_of_unknown_name(catalog: Catalog, lookup: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        getattr(catalog, lookup)("nope")
    assert str(info.value) == message


def test_empty_catalog_says_there_are_none() -> None:
    with pytest.raises(
        ConfigError, match=r"^tariff: 'x' is not in the catalog \(there are none\)$"
    ):
        Catalog().tariff("x")


def test_cross_checks_list_every_problem(module_args: Callable[..., dict[str, Any]]) -> None:
    ams = DataCenter("Amsterdam", 3)
    elsewhere = DataCenter("Nowhere", 9)
    m1 = ProcessingModule(**module_args(name="m1", data_center=ams))
    m1_again = ProcessingModule(**module_args(name="m1", data_center=ams, sort=4))
    orphan = ProcessingModule(**module_args(name="m2", data_center=elsewhere))
    with pytest.raises(ConfigError) as info:
        Catalog(
            data_centers=[ams, DataCenter("Amsterdam", 4)],
            modules=[m1, m1_again, orphan],
            tariffs=[tariff("T", ("m1", "m9")), tariff("T")],
        )
    assert info.value.problems == (
        "data_centers[1].name: 'Amsterdam' is already used by data_centers[0]",
        "modules[1].name: 'm1' is already used by modules[0]",
        "tariffs[1].name: 'T' is already used by tariffs[0]",
        "modules[2].data_center: 'Nowhere' is not a data center of this catalog "
        "(known: 'Amsterdam')",
        "tariffs[0].modules[1]: 'm9' is not a module of this catalog (known: 'm1', 'm2')",
    )


def test_module_data_center_must_be_the_catalogs_own(
    module_args: Callable[..., dict[str, Any]],
) -> None:
    listed = DataCenter("Amsterdam", 3)
    other = DataCenter("Amsterdam", 4)
    with pytest.raises(ConfigError) as info:
        Catalog(
            data_centers=[listed],
            modules=[ProcessingModule(**module_args(name="m1", data_center=other))],
        )
    assert info.value.problems == (
        "modules[0].data_center: DataCenter(name='Amsterdam', location_id=4, dci6_managed=True, "
        "sort=0) differs from the catalog's DataCenter(name='Amsterdam', location_id=3, "
        "dci6_managed=True, sort=0)",
    )


def test_wrong_types_in_catalog() -> None:
    with pytest.raises(ConfigError) as info:
        Catalog(data_centers=["Amsterdam"], modules=5, tariffs=[tariff()])  # type: ignore[list-item,arg-type]
    assert info.value.problems == (
        "data_centers[0]: 'Amsterdam' is not a DataCenter",
        "modules: 5 is not a list of ProcessingModule objects",
    )


def test_catalog_is_frozen_and_never_shows_passwords(catalog: Catalog) -> None:
    text = repr(catalog) + str(catalog) + repr(catalog.to_dict()) + str(catalog.modules)
    assert "hunter2" not in text
    assert "Secret('***')" in repr(catalog)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        catalog.modules = ()  # type: ignore[misc]


def order(**overrides: Any) -> Order:
    args: dict[str, Any] = {
        "service_id": "INV-1",
        "tariff": "E3-64",
        "os_template": "Debian 12",
        "customer_email": "jane@example.com",
    }
    args.update(overrides)
    return Order(**args)


def test_check_order_accepts_a_good_order(catalog: Catalog) -> None:
    good = order(recipe="install-docker", data_center="Frankfurt")
    assert catalog.check_order(good) is catalog.tariff("E3-64")


def test_check_order_lists_every_problem(catalog: Catalog) -> None:
    with pytest.raises(ConfigError) as info:
        catalog.check_order(order(os_template="Windows 11", recipe="mine", data_center="Paris"))
    assert info.value.problems == (
        "order.os_template: 'Windows 11' is not offered by tariff 'E3-64' "
        "(offered: 'Ubuntu 22.04', 'Debian 12')",
        "order.recipe: 'mine' is not offered by tariff 'E3-64' (offered: 'install-docker')",
        "order.data_center: 'Paris' is not in the catalog (known: 'Amsterdam', 'Frankfurt')",
    )
    with pytest.raises(ConfigError) as info:
        catalog.check_order(order(tariff="E5", recipe="x"))
    assert info.value.problems == (
        "order.tariff: 'E5' is not in the catalog (known: 'E3-64', 'XEON-128')",
    )
    with pytest.raises(ConfigError, match=r"offered: none\)$"):
        catalog.check_order(order(tariff="XEON-128", recipe="x"))
