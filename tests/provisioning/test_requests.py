"""Billing requests are idempotent: by service id for open, by (service id, request id)
for the rest; bad orders are refused before anything is written."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dci6bridge.domain import Order
from dci6bridge.errors import (
    ConfigError,
    InvalidRequest,
    SelectionError,
    ServiceNotFound,
    SpecMismatch,
)
from dci6bridge.provisioning import Provisioner, ServiceState, ServiceStatus
from dci6bridge.testing import FakeDCImanager

Drive = Callable[[Provisioner], int]
NewOrder = Callable[..., Order]


def test_duplicate_open_returns_the_same_service(
    prov: Provisioner, new_order: NewOrder, drive: Drive, fake: FakeDCImanager
) -> None:
    first = prov.open(new_order())
    again = prov.open(new_order())
    assert again == first
    drive(prov)
    assert prov.open(new_order()).status is ServiceStatus.ACTIVE
    assert len(prov.services()) == 1
    assert sum(fake.state.install_count(s.id) for s in fake.state.servers.values()) == 1


def test_same_id_different_order_is_a_spec_mismatch(prov: Provisioner, new_order: NewOrder) -> None:
    prov.open(new_order())
    with pytest.raises(SpecMismatch):
        prov.open(new_order(os_template="Debian 12"))
    assert prov.get("S1").os_template == "Ubuntu 22.04"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tariff": "nope"}, "order.tariff"),
        ({"os_template": "AlmaLinux 9"}, "order.os_template"),
        ({"data_center": "Mars"}, "order.data_center"),
    ],
)
def test_bad_order_is_refused_and_nothing_written(
    prov: Provisioner, new_order: NewOrder, kwargs: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        prov.open(new_order(**kwargs))
    assert prov.store.services() == []
    assert prov.store.write_count == 0


def test_order_no_module_can_serve_is_refused(
    make_prov: Callable[..., Provisioner], catalog_for: Callable[..., object], new_order: NewOrder
) -> None:
    import attrs

    catalog = catalog_for()
    off = attrs.evolve(catalog.modules[0], enabled=False)  # type: ignore[attr-defined]
    from dci6bridge.domain import Catalog

    cat = Catalog(
        data_centers=catalog.data_centers,  # type: ignore[attr-defined]
        modules=(off, catalog.modules[1]),  # type: ignore[attr-defined]
        tariffs=catalog.tariffs,  # type: ignore[attr-defined]
    )
    prov = make_prov(catalog=cat)
    with pytest.raises(SelectionError, match="dci-ams"):
        prov.open(new_order(tariff="I9", os_template="Debian 12"))
    assert prov.store.services() == []


def test_unknown_service(prov: Provisioner) -> None:
    with pytest.raises(ServiceNotFound):
        prov.get("nope")
    with pytest.raises(ServiceNotFound):
        prov.suspend("nope")
    with pytest.raises(ServiceNotFound):
        prov.history("nope")


def test_duplicate_request_ids_apply_once(
    active: Provisioner, drive: Drive, fake: FakeDCImanager
) -> None:
    for _ in range(3):
        active.suspend("S1", request_id="r1")
    drive(active)
    active.resume("S1", request_id="r2")
    # a late duplicate of r1 (billing retried it) must not suspend again
    active.suspend("S1", request_id="r1")
    drive(active)
    assert active.get("S1").status is ServiceStatus.ACTIVE
    states = [h.to_state for h in active.history("S1")]
    assert states.count("suspending") == 1
    assert states.count("resuming") == 1


def test_same_request_id_for_another_action_is_a_mismatch(active: Provisioner) -> None:
    active.suspend("S1", request_id="r1")
    with pytest.raises(SpecMismatch):
        active.close("S1", request_id="r1")


def test_requests_without_ids_collapse_while_nothing_changed(
    active: Provisioner, drive: Drive
) -> None:
    for _ in range(3):
        active.suspend("S1")
    drive(active)
    assert [h.to_state for h in active.history("S1")].count("suspending") == 1
    assert active.store.get("S1").desired_seq == 1


def test_last_request_wins(active: Provisioner, drive: Drive, fake: FakeDCImanager) -> None:
    active.suspend("S1", request_id="a")
    active.resume("S1", request_id="b")
    active.suspend("S1", request_id="c")
    drive(active)
    svc = active.get("S1")
    assert svc.status is ServiceStatus.SUSPENDED
    assert svc.desired is ServiceState.SUSPENDED
    assert fake.state.servers[svc.server_id].data_ports_up is False


def test_duplicate_reinstall_is_one_reinstall(
    active: Provisioner, drive: Drive, fake: FakeDCImanager
) -> None:
    active.reinstall("S1", "Debian 12")
    active.reinstall("S1", "Debian 12")
    with pytest.raises(InvalidRequest, match="pending reinstall"):
        active.reboot("S1")
    drive(active)
    assert fake.state.install_count(active.get("S1").server_id) == 2


def test_close_wins_over_everything_and_is_final(
    active: Provisioner, drive: Drive, fake: FakeDCImanager
) -> None:
    active.suspend("S1")
    active.close("S1")
    with pytest.raises(InvalidRequest, match="closed"):
        active.resume("S1")
    drive(active)
    assert active.get("S1").status is ServiceStatus.CLOSED
    assert active.store.get("S1").runnable is False


def test_bad_request_id(active: Provisioner) -> None:
    with pytest.raises(ConfigError, match="request_id"):
        active.suspend("S1", request_id="")
