"""select_module: the lowest sort wins; every other module is told why it lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dci6bridge import (
    Catalog,
    ConfigError,
    DataCenter,
    ProcessingModule,
    SelectionError,
    Tariff,
    select_module,
)
from dci6bridge.selection import rank_key


def test_lowest_sort_wins_and_others_are_ranked(catalog: Catalog) -> None:
    sel = select_module(catalog, "E3-64")
    assert sel.module.name == "dci-fra"  # sort 1
    assert [m.name for m in sel.ranked] == ["dci-fra", "dci-ams", "dci-ams-2"]
    assert sel.rejected == ()
    assert sel.tariff is catalog.tariff("E3-64")
    assert sel.explain() == (
        "tariff 'E3-64': module 'dci-fra' (sort 1, data center 'Frankfurt')\n"
        "  also eligible: 'dci-ams' (sort 2)\n"
        "  also eligible: 'dci-ams-2' (sort 5)"
    )


def test_unconnected_modules_are_rejected_with_reason(catalog: Catalog) -> None:
    sel = select_module(catalog, catalog.tariff("XEON-128"))
    assert sel.module.name == "dci-ams"
    assert [(r.module.name, r.reason) for r in sel.rejected] == [
        ("dci-fra", "not connected to tariff 'XEON-128'"),
        ("dci-ams-2", "not connected to tariff 'XEON-128'"),
    ]


def test_requested_data_center(catalog: Catalog) -> None:
    sel = select_module(catalog, "E3-64", data_center="Amsterdam")
    assert [m.name for m in sel.ranked] == ["dci-ams", "dci-ams-2"]
    assert [(r.module.name, r.reason) for r in sel.rejected] == [
        ("dci-fra", "in data center 'Frankfurt', not the requested 'Amsterdam'"),
    ]
    by_object = select_module(catalog, "E3-64", data_center=catalog.data_center("Amsterdam"))
    assert by_object == sel


def test_free_servers(catalog: Catalog) -> None:
    sel = select_module(catalog, "E3-64", free_servers={"dci-fra": 0, "dci-ams": 3})
    assert sel.module.name == "dci-ams"
    # dci-ams-2 is missing from the mapping: unknown count, still eligible
    assert [m.name for m in sel.ranked] == ["dci-ams", "dci-ams-2"]
    assert [(r.module.name, r.reason) for r in sel.rejected] == [
        ("dci-fra", "no free server of configuration 'E3-1230v6-64Gb-2x480SSD'"),
    ]
    unknown = select_module(catalog, "E3-64", free_servers={"dci-fra": None})
    assert unknown.module.name == "dci-fra"


def test_ties_break_on_data_center_sort_then_name(
    module_args: Callable[..., dict[str, Any]],
) -> None:
    early = DataCenter("Zurich", 1, sort=1)
    late = DataCenter("Amsterdam", 2, sort=9)
    modules = [
        ProcessingModule(**module_args(name="a-late", data_center=late, sort=3)),
        ProcessingModule(**module_args(name="z-early", data_center=early, sort=3)),
        ProcessingModule(**module_args(name="b-early", data_center=early, sort=3)),
    ]
    tariff = Tariff("T", "C", ("D",), [m.name for m in modules])
    catalog = Catalog(data_centers=[late, early], modules=modules, tariffs=[tariff])
    sel = select_module(catalog, "T")
    assert [m.name for m in sel.ranked] == ["b-early", "z-early", "a-late"]


def test_no_eligible_module_raises_with_every_reason(
    module_args: Callable[..., dict[str, Any]],
) -> None:
    legacy = DataCenter("Legacy", None, dci6_managed=False)
    ams = DataCenter("Amsterdam", 3)
    modules = [
        ProcessingModule(**module_args(name="off", data_center=ams, enabled=False)),
        ProcessingModule(**module_args(name="old", data_center=legacy)),
        ProcessingModule(**module_args(name="full", data_center=ams, sort=2)),
        ProcessingModule(**module_args(name="other", data_center=ams, sort=3)),
    ]
    tariff = Tariff("T", "C", ("D",), ["off", "old", "full"])
    catalog = Catalog(data_centers=[ams, legacy], modules=modules, tariffs=[tariff])
    with pytest.raises(SelectionError) as info:
        select_module(catalog, "T", data_center="Amsterdam", free_servers={"full": 0})
    assert info.value.tariff == "T"
    assert info.value.reasons == (
        ("off", "disabled"),
        (
            "old",
            "data center 'Legacy' is not managed by DCImanager 6; "
            "in data center 'Legacy', not the requested 'Amsterdam'",
        ),
        ("full", "no free server of configuration 'C'"),
        ("other", "not connected to tariff 'T'"),
    )
    assert str(info.value).startswith("no processing module can serve tariff 'T' (off: disabled;")


def test_bad_arguments(catalog: Catalog, module_args: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(ConfigError, match=r"^tariff: 'E9' is not in the catalog"):
        select_module(catalog, "E9")
    with pytest.raises(ConfigError, match=r"^data_center: 'Paris' is not in the catalog"):
        select_module(catalog, "E3-64", data_center="Paris")
    with pytest.raises(ConfigError) as info:
        select_module(catalog, "E3-64", free_servers={"dci-xyz": 1, "dci-ams": -1})
    assert info.value.problems == (
        "free_servers['dci-xyz']: is not a module of the catalog",
        "free_servers['dci-ams']: -1 is not an integer >= 0",
    )
    with pytest.raises(ConfigError, match=r"^module: 'ghost' is not in the catalog"):
        select_module(catalog, Tariff("X", "C", ("D",), ("ghost",)))
    with pytest.raises(ConfigError, match=r"^tariff: 5 is not a tariff name or Tariff$"):
        select_module(catalog, 5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^free_servers: \[1\] is not a mapping$"):
        select_module(catalog, "E3-64", free_servers=[1])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Catalog, str | None, dict[str, int | None] | None]:
    dc_count = draw(st.integers(1, 3))
    data_centers = [
        DataCenter(
            f"dc{i}",
            i + 1 if managed else None,
            dci6_managed=managed,
            sort=draw(st.integers(0, 3)),
        )
        for i, managed in enumerate(
            draw(st.lists(st.booleans(), min_size=dc_count, max_size=dc_count))
        )
    ]
    module_count = draw(st.integers(1, 6))
    names = draw(
        st.lists(
            st.text("abcxyz", min_size=1, max_size=3),
            min_size=module_count,
            max_size=module_count,
            unique=True,
        )
    )
    modules = [
        ProcessingModule(
            name=name,
            data_center=draw(st.sampled_from(data_centers)),
            url="https://dci.example.com",
            username="admin@example.com",
            password="pw",
            department="Support",
            sort=draw(st.integers(0, 3)),
            enabled=draw(st.booleans()),
        )
        for name in names
    ]
    connected = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    tariff = Tariff("T", "C", ("D",), connected)
    catalog = Catalog(data_centers=data_centers, modules=modules, tariffs=[tariff])
    requested = draw(st.none() | st.sampled_from([dc.name for dc in data_centers]))
    free = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(names), st.none() | st.integers(0, 2), max_size=len(names)
        )
    )
    return catalog, requested, free


def is_eligible(
    catalog: Catalog, m: ProcessingModule, requested: str | None, free: dict[str, int | None] | None
) -> bool:
    """The rules, written out independently of the implementation."""
    return (
        m.enabled
        and m.name in catalog.tariff("T").modules
        and m.data_center.dci6_managed
        and m.data_center.location_id is not None
        and (requested is None or m.data_center.name == requested)
        and (free or {}).get(m.name) != 0
    )


@settings(max_examples=150)
@given(scenarios(), st.randoms(use_true_random=False))
def test_selection_properties(
    scenario: tuple[Catalog, str | None, dict[str, int | None] | None], rnd: Any
) -> None:
    catalog, requested, free = scenario
    shuffled = Catalog(
        data_centers=rnd.sample(catalog.data_centers, len(catalog.data_centers)),
        modules=rnd.sample(catalog.modules, len(catalog.modules)),
        tariffs=catalog.tariffs,
    )
    expected = [m for m in catalog.modules if is_eligible(catalog, m, requested, free)]
    if not expected:
        with pytest.raises(SelectionError) as info:
            select_module(catalog, "T", requested, free)
        reasons = info.value.reasons
        assert sorted(name for name, _ in reasons) == sorted(m.name for m in catalog.modules)
        assert all(reason for _, reason in reasons)
        with pytest.raises(SelectionError) as again:
            select_module(shuffled, "T", requested, free)
        assert again.value.reasons == reasons
        return

    sel = select_module(catalog, "T", requested, free)
    # deterministic and independent of the catalog's order
    assert select_module(catalog, "T", requested, free) == sel
    assert select_module(shuffled, "T", requested, free) == sel
    # the choice is eligible and of minimal sort; the ranking is total and sorted
    assert sel.module is sel.ranked[0]
    assert is_eligible(catalog, sel.module, requested, free)
    assert sel.module.sort == min(m.sort for m in expected)
    assert set(sel.ranked) == set(expected)
    assert list(sel.ranked) == sorted(expected, key=rank_key)
    # every other module is rejected, with a reason
    assert {r.module for r in sel.rejected} == set(catalog.modules) - set(expected)
    assert all(r.reason for r in sel.rejected)
