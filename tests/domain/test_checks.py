"""connect.client_for / async_client_for and checks.check_modules, against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dci6bridge import (
    AsyncClient,
    Catalog,
    Client,
    ConfigError,
    DataCenter,
    ProcessingModule,
    Q,
    RetryPolicy,
    Tariff,
)
from dci6bridge.checks import ModuleCheck, check_module, check_modules
from dci6bridge.connect import async_client_for, client_for
from dci6bridge.testing import FakeDCImanager

E3 = "E3-1230v6-64Gb-2x480SSD"
I9 = "i9-9900K-64Gb-2x1024NVMe"


@pytest.fixture
def fake() -> FakeDCImanager:
    return FakeDCImanager.with_inventory(locations=2, servers_per_location=6)


def make_catalog(fake: FakeDCImanager, *, password: str | None = None, **dc_ids: Any) -> Catalog:
    """Modules "ams" (location 1) and "fra" (location 2) on the simulator; tariffs sell
    E3 through both and I9 plus a configuration the simulator lacks through "fra"."""
    ams = DataCenter("Amsterdam", dc_ids.get("ams", 1))
    fra = DataCenter("Frankfurt", dc_ids.get("fra", 2), sort=1)

    def module(name: str, dc: DataCenter, **kw: Any) -> ProcessingModule:
        kw.setdefault("password", password or fake.admin_password)
        return ProcessingModule(name, dc, fake.url, fake.admin_email, department="Support", **kw)

    return Catalog(
        data_centers=[ams, fra],
        modules=[module("ams", ams), module("fra", fra)],
        tariffs=[
            Tariff("E3", E3, ("Debian 12",), ("ams", "fra")),
            Tariff("I9", I9, ("Debian 12",), ("fra",)),
            Tariff("XX", "No-Such-Config", ("Debian 12",), ("fra",)),
        ],
    )


def factory(fake: FakeDCImanager, **kw: Any) -> Callable[[ProcessingModule], Client]:
    return lambda m: client_for(
        m, transport=fake.transport, retry=RetryPolicy.none(), sleep=lambda s: None, **kw
    )


def free_in_location(fake: FakeDCImanager, location_id: int) -> dict[str, int]:
    """Counted another way: the free servers of a location, by configuration."""
    counts: dict[str, int] = {}
    with Client(
        fake.url, email=fake.admin_email, password=fake.admin_password, transport=fake.transport
    ) as dci:
        for s in dci.servers.list(where=Q.free() & (Q("location_id") == location_id)):
            counts[s.configuration or "?"] = counts.get(s.configuration or "?", 0) + 1
    return counts


# --------------------------------------------------------------------------- connect


def test_client_for_logs_in_as_the_module_admin(fake: FakeDCImanager) -> None:
    module = make_catalog(fake).module("ams")
    with client_for(module, transport=fake.transport, timeout=5.0) as dci:
        assert isinstance(dci, Client)
        assert dci.whoami().owner_email == fake.admin_email
        assert [loc.id for loc in dci.locations.list()] == [1, 2]
    assert fake.admin_password not in repr(dci)


def test_async_client_for(fake: FakeDCImanager) -> None:
    module = make_catalog(fake).module("fra")

    async def main() -> str | None:
        async with async_client_for(module, transport=fake.transport) as dci:
            assert isinstance(dci, AsyncClient)
            return (await dci.whoami()).owner_email

    assert asyncio.run(main()) == fake.admin_email


def test_client_for_refuses_a_missing_ca_bundle(
    fake: FakeDCImanager, tmp_path: Path, module_args: Callable[..., dict[str, Any]]
) -> None:
    missing = tmp_path / "ca.pem"
    module = ProcessingModule(**module_args(name="m", ca_bundle=missing))
    with pytest.raises(ConfigError) as info:
        client_for(module)
    assert str(info.value) == f"ca_bundle: {str(missing)!r} is not a file (CA bundle of module 'm')"


# --------------------------------------------------------------------------- check_modules


def test_all_modules_pass(fake: FakeDCImanager) -> None:
    catalog = make_catalog(fake)
    results = check_modules(catalog, client_factory=factory(fake))
    assert [r.module.name for r in results] == ["ams", "fra"]
    ams, fra = results
    assert ams.ok
    assert fra.ok
    assert ams.problems == fra.problems == ()
    assert ams.user_email == fake.admin_email
    assert ams.logged_in
    assert ams.location_ok is True
    assert fra.location_ok is True
    assert ams.latency_s is not None
    assert ams.latency_s >= 0
    assert set(ams.free_counts) == {E3}
    assert set(fra.free_counts) == {E3, I9, "No-Such-Config"}
    # the configuration endpoint counts the whole DCImanager: both locations together
    both = [free_in_location(fake, 1), free_in_location(fake, 2)]
    assert ams.free_counts[E3] == sum(c.get(E3, 0) for c in both) > 0
    assert fra.free_counts[I9] == sum(c.get(I9, 0) for c in both) > 0
    assert fra.free_counts["No-Such-Config"] == 0
    assert ams.warnings == ()
    assert fra.warnings == (
        "configuration 'No-Such-Config' (tariff 'XX') is not reported by DCImanager",
    )


def test_wrong_password_fails_with_the_reason_and_no_secret(fake: FakeDCImanager) -> None:
    catalog = make_catalog(fake, password="not-the-password")
    results = check_modules(catalog, client_factory=factory(fake))
    for r in results:
        assert not r.ok
        assert r.user_email is None
        assert not r.logged_in
        assert r.location_ok is None
        assert r.free_counts == {}
        assert len(r.problems) == 1
        assert r.problems[0].startswith("login failed: HTTP 401")
        assert "not-the-password" not in repr(r)


def test_missing_location_fails_that_module_only(fake: FakeDCImanager) -> None:
    catalog = make_catalog(fake, fra=9)
    ams, fra = check_modules(catalog, client_factory=factory(fake))
    assert ams.ok
    assert not fra.ok
    assert fra.location_ok is False
    assert fra.problems == (
        "location 9 of data center 'Frankfurt' does not exist in DCImanager (locations: 1, 2)",
    )
    assert fra.free_counts  # still read: it helps to see what the server offers


def test_os_template_missing_in_the_location_is_a_problem(fake: FakeDCImanager) -> None:
    base = make_catalog(fake)
    catalog = Catalog(
        data_centers=base.data_centers,
        modules=base.modules,
        tariffs=[*base.tariffs, Tariff("WIN", E3, ("Debian 12", "Windows 95"), ("ams",))],
    )
    ams, fra = check_modules(catalog, client_factory=factory(fake))
    assert fra.ok
    assert not ams.ok
    assert ams.problems == (
        "OS template 'Windows 95' of tariff 'WIN' is not in location 1 "
        "(templates: 'AlmaLinux 9', 'Debian 12', 'Ubuntu 22.04')",
    )


def test_failing_configuration_endpoint_is_a_problem(fake: FakeDCImanager) -> None:
    fake.set_faults(unavailable_rate=1.0, unavailable_routes={"servers.configurations"})
    ams, _ = check_modules(make_catalog(fake), client_factory=factory(fake))
    assert not ams.ok
    assert ams.location_ok is True
    assert len(ams.problems) == 1
    assert ams.problems[0].startswith(
        "reading free servers per configuration failed: ServiceUnavailableError: HTTP 503"
    )


def test_any_exception_becomes_a_problem(fake: FakeDCImanager) -> None:
    def broken(module: ProcessingModule) -> Client:
        raise RuntimeError(f"cannot build a client for {module.name}")

    results = check_modules(make_catalog(fake), client_factory=broken)
    assert [r.problems for r in results] == [
        ("RuntimeError: cannot build a client for ams",),
        ("RuntimeError: cannot build a client for fra",),
    ]
    assert all(r.latency_s is None for r in results)
    assert not any(r.ok for r in results)


def test_module_in_a_non_managed_data_center(
    fake: FakeDCImanager, module_args: Callable[..., dict[str, Any]]
) -> None:
    legacy = DataCenter("Legacy", None, dci6_managed=False)
    module = ProcessingModule(
        **module_args(
            name="old",
            data_center=legacy,
            url=fake.url,
            username=fake.admin_email,
            password=fake.admin_password,
        )
    )
    catalog = Catalog(data_centers=[legacy], modules=[module])
    result = check_module(catalog, module, client_factory=factory(fake))
    assert result == ModuleCheck(
        module=module,
        ok=True,
        latency_s=result.latency_s,
        user_email=fake.admin_email,
        location_ok=None,
        free_counts={},
        problems=(),
        logged_in=True,
    )


def test_parallel_and_sequential_agree_and_keep_catalog_order(fake: FakeDCImanager) -> None:
    catalog = make_catalog(fake, fra=9)
    parallel = check_modules(catalog, client_factory=factory(fake), max_workers=4)
    sequential = check_modules(catalog, client_factory=factory(fake), max_workers=1)

    def strip(r: ModuleCheck) -> tuple[Any, ...]:
        return (r.module.name, r.ok, r.location_ok, dict(r.free_counts), r.problems)

    assert [strip(r) for r in parallel] == [strip(r) for r in sequential]


def test_check_only_some_modules(fake: FakeDCImanager) -> None:
    catalog = make_catalog(fake)
    results = check_modules(catalog, client_factory=factory(fake), modules=["fra"])
    assert [r.module.name for r in results] == ["fra"]
    with pytest.raises(ConfigError, match=r"^module: 'zrh' is not in the catalog"):
        check_modules(catalog, client_factory=factory(fake), modules=["zrh"])
