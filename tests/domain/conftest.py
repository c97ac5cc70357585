"""Fixtures for the domain, selection, connect and check tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dci6bridge import Catalog, DataCenter, ProcessingModule, Tariff


def module_kwargs(**overrides: Any) -> dict[str, Any]:
    """Valid ProcessingModule arguments, with overrides."""
    kwargs: dict[str, Any] = {
        "name": "dci-ams",
        "data_center": DataCenter(name="Amsterdam", location_id=3, sort=10),
        "url": "https://dci-ams.example.com",
        "username": "admin@example.com",
        "password": "hunter2-secret",
        "department": "Support",
    }
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def module_args() -> Callable[..., dict[str, Any]]:
    """``module_args(**overrides)``: valid ProcessingModule arguments with overrides."""
    return module_kwargs


@pytest.fixture
def catalog() -> Catalog:
    """Two data centers, three modules, two tariffs."""
    ams = DataCenter(name="Amsterdam", location_id=3, sort=10)
    fra = DataCenter(name="Frankfurt", location_id=7, sort=20)
    modules = (
        ProcessingModule(**module_kwargs(name="dci-ams", data_center=ams, sort=2)),
        ProcessingModule(
            **module_kwargs(
                name="dci-fra", data_center=fra, url="https://dci-fra.example.com", sort=1
            )
        ),
        ProcessingModule(**module_kwargs(name="dci-ams-2", data_center=ams, sort=5)),
    )
    tariffs = (
        Tariff(
            name="E3-64",
            configuration="E3-1230v6-64Gb-2x480SSD",
            os_templates=("Ubuntu 22.04", "Debian 12"),
            modules=("dci-ams", "dci-fra", "dci-ams-2"),
            recipes=("install-docker",),
        ),
        Tariff(
            name="XEON-128",
            configuration="2xE5-2680v4-128Gb",
            os_templates=("Debian 12",),
            modules=("dci-ams",),
        ),
    )
    return Catalog(data_centers=(ams, fra), modules=modules, tariffs=tariffs)
