"""A service's life against the simulator: open → ACTIVE (only once the install has
finished), suspend, resume, reinstall, reboot, close; and close of a half-made one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dci6bridge.domain import Order
from dci6bridge.errors import InvalidRequest
from dci6bridge.provisioning import Event, Provisioner, ServiceState, ServiceStatus
from dci6bridge.secret import Secret
from dci6bridge.testing import FakeDCImanager

from .conftest import CFG, INSTALL_S


def test_open_returns_at_once_in_progress(
    prov: Provisioner, new_order: Callable[..., Order]
) -> None:
    svc = prov.open(new_order())
    assert svc.status is ServiceStatus.IN_PROGRESS
    assert svc.state is ServiceState.PENDING
    assert svc.server_id is None
    assert svc.root_password is None


def test_active_only_after_the_install_finished(
    prov: Provisioner, fake: FakeDCImanager, new_order: Callable[..., Order], events: list[Event]
) -> None:
    prov.open(new_order(hostname="web1.example.com"))
    # everything up to the install start runs in one go; then the lease is released
    prov.tick()
    svc = prov.get("S1")
    assert svc.state is ServiceState.INSTALLING_OS
    assert svc.status is ServiceStatus.IN_PROGRESS
    assert svc.root_password is None
    assert fake.state.install_count(svc.server_id) == 1
    # polling before the install ends does not activate it
    fake.advance(INSTALL_S / 2)
    assert prov.run_until_idle(advance=lambda s: None, max_ticks=5) >= 1
    assert prov.get("S1").status is ServiceStatus.IN_PROGRESS
    assert not events

    fake.advance(INSTALL_S)
    prov.run_until_idle(advance=fake.clock.advance)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    assert svc.module == "dci-ams"
    truth = fake.state.servers[svc.server_id]
    assert truth.owner_email == "jane@example.com"
    assert truth.configuration == CFG
    assert truth.location_id == 1
    assert truth.operation_kind == "install"
    assert truth.operation_status == "ok"
    assert svc.user_id == fake.state.users_by_email("jane@example.com")[0].id
    # the tariff asks for one extra IPv4 address
    assert len(svc.ip_addresses) == 1
    assert svc.ip_addresses[0] in truth.ips
    assert isinstance(svc.root_password, Secret)
    assert len(svc.root_password.reveal()) >= 16
    assert svc.os_template == "Ubuntu 22.04"
    assert fake.state.install_count(svc.server_id) == 1
    assert [e.kind for e in events] == ["activated"]
    assert events[0].payload["server_id"] == svc.server_id
    assert events[0].payload["ip_addresses"] == list(svc.ip_addresses)
    assert events[0].payload["hostname"] == "web1.example.com"


def test_tariff_without_ips_binds_none(
    make_prov: Callable[..., Provisioner],
    catalog_for: Callable[..., object],
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    drive: Callable[[Provisioner], int],
) -> None:
    prov = make_prov(catalog=catalog_for(ipv4_count=0))
    prov.open(new_order())
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    assert svc.ip_addresses == ()
    assert [h.to_state for h in prov.history("S1")] == [
        "selecting_module",
        "claiming_server",
        "creating_user",
        "assigning_owner",
        "installing_os",
        "active",
    ]


def test_suspend_turns_data_ports_off_only(
    active: Provisioner,
    fake: FakeDCImanager,
    drive: Callable[[Provisioner], int],
    events: list[Event],
) -> None:
    sid = active.get("S1").server_id
    svc = active.suspend("S1")
    assert svc.status is ServiceStatus.ACTIVE  # recorded, not done yet
    drive(active)
    svc = active.get("S1")
    assert svc.status is ServiceStatus.SUSPENDED
    truth = fake.state.servers[sid]
    assert truth.data_ports_up is False
    assert truth.ipmi_up
    assert truth.power_status == "on"
    assert truth.owner_email == "jane@example.com"
    assert svc.root_password is not None
    assert events[-1].kind == "suspended"

    active.resume("S1")
    drive(active)
    assert active.get("S1").status is ServiceStatus.ACTIVE
    assert fake.state.servers[sid].data_ports_up is True
    assert events[-1].kind == "resumed"


def test_close_frees_everything(
    active: Provisioner,
    fake: FakeDCImanager,
    drive: Callable[[Provisioner], int],
    events: list[Event],
) -> None:
    svc = active.get("S1")
    truth = fake.state.servers[svc.server_id]
    assert truth.ips
    active.close("S1")
    drive(active)
    closed = active.get("S1")
    assert closed.status is ServiceStatus.CLOSED
    truth = fake.state.servers[svc.server_id]
    assert truth.owner_email is None
    assert truth.power_status == "off"
    assert truth.ips == ()
    assert fake.state.users_by_email("jane@example.com") == ()
    assert active.store.server_claims() == {}
    assert events[-1].kind == "closed"
    # a closed service never comes back; closing again is harmless
    for call in (active.resume, active.suspend, active.reboot):
        with pytest.raises(InvalidRequest):
            call("S1")
    with pytest.raises(InvalidRequest):
        active.reinstall("S1", "Debian 12")
    assert active.close("S1").status is ServiceStatus.CLOSED
    drive(active)
    assert active.get("S1").status is ServiceStatus.CLOSED


def test_close_keeps_a_user_that_owns_another_service(
    prov: Provisioner,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    drive: Callable[[Provisioner], int],
) -> None:
    prov.open(new_order("S1"))
    prov.open(new_order("S2"))
    drive(prov)
    a, b = prov.get("S1"), prov.get("S2")
    assert a.user_id == b.user_id
    assert a.server_id != b.server_id
    assert len(fake.state.users_by_email("jane@example.com")) == 1
    prov.close("S1")
    drive(prov)
    assert fake.state.servers[a.server_id].owner_email is None
    assert len(fake.state.users_by_email("jane@example.com")) == 1
    assert fake.state.servers[b.server_id].owner_email == "jane@example.com"
    prov.close("S2")
    drive(prov)
    assert fake.state.users_by_email("jane@example.com") == ()


@pytest.mark.parametrize(
    "stop_after",
    ["claiming_server", "creating_user", "assigning_owner", "binding_ips", "installing_os"],
)
def test_close_of_a_half_provisioned_service_cleans_up(
    prov: Provisioner,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    drive: Callable[[Provisioner], int],
    step_until: Callable[[Provisioner, str], None],
    stop_after: str,
) -> None:
    prov.open(new_order())
    step_until(prov, stop_after)
    prov.close("S1")
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.CLOSED
    assert prov.store.server_claims() == {}
    assert all(s.owner_email is None for s in fake.state.servers.values())
    assert fake.state.users_by_email("jane@example.com") == ()
    assert all(not s.ips for s in fake.state.servers.values())


def test_reinstall_gives_a_new_password_and_template(
    active: Provisioner,
    fake: FakeDCImanager,
    drive: Callable[[Provisioner], int],
    events: list[Event],
) -> None:
    before = active.get("S1")
    svc = active.reinstall("S1", "Debian 12")
    assert svc.status is ServiceStatus.ACTIVE
    active.tick()
    during = active.get("S1")
    assert during.state is ServiceState.INSTALLING_OS
    assert during.root_password is None  # the old one no longer holds
    drive(active)
    after = active.get("S1")
    assert after.status is ServiceStatus.ACTIVE
    assert after.os_template == "Debian 12"
    assert after.server_id == before.server_id
    assert after.root_password is not None
    assert after.root_password != before.root_password
    assert fake.state.install_count(after.server_id) == 2
    assert events[-1].kind == "reinstalled"
    assert [h.to_state for h in active.history("S1")][-3:] == [
        "reinstalling",
        "installing_os",
        "active",
    ]


def test_reinstall_with_a_template_the_tariff_lacks_is_refused(active: Provisioner) -> None:
    from dci6bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="AlmaLinux 9"):
        active.reinstall("S1", "AlmaLinux 9")


def test_reboot(
    active: Provisioner,
    fake: FakeDCImanager,
    drive: Callable[[Provisioner], int],
    events: list[Event],
) -> None:
    sid = active.get("S1").server_id
    before = fake.state.count("servers.power_reset")
    active.reboot("S1")
    drive(active)
    assert active.get("S1").status is ServiceStatus.ACTIVE
    assert fake.state.count("servers.power_reset") == before + 1
    assert fake.state.servers[sid].power_status == "on"
    assert events[-1].kind == "rebooted"


def test_actions_need_an_active_service(prov: Provisioner, new_order: Callable[..., Order]) -> None:
    prov.open(new_order())
    with pytest.raises(InvalidRequest, match="not ACTIVE"):
        prov.reboot("S1")
    with pytest.raises(InvalidRequest, match="not ACTIVE"):
        prov.reinstall("S1", "Debian 12")


def test_suspend_while_provisioning_ends_suspended(
    prov: Provisioner,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    drive: Callable[[Provisioner], int],
) -> None:
    prov.open(new_order())
    prov.tick()
    prov.suspend("S1")
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.SUSPENDED
    assert fake.state.servers[svc.server_id].data_ports_up is False
    assert [h.to_state for h in prov.history("S1")][-3:] == ["active", "suspending", "suspended"]


def test_a_server_given_back_with_ports_off_is_handed_out_with_ports_on(
    prov: Provisioner,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    drive: Callable[[Provisioner], int],
) -> None:
    """A server in the pool whose data ports someone switched off: the next customer gets
    it with its network on (and IPMI never touched)."""
    from dci6bridge import Client

    with Client(
        fake.url, email=fake.admin_email, password=fake.admin_password, transport=fake.transport
    ) as admin:
        for server in fake.state.free_servers:
            admin.servers.ports_off(server.id)
    prov.open(new_order())
    drive(prov)
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE
    truth = fake.state.servers[svc.server_id]
    assert truth.data_ports_up is True
    assert truth.ipmi_up


def test_closing_a_suspended_service_gives_the_server_back_with_ports_on(
    active: Provisioner,
    fake: FakeDCImanager,
    drive: Callable[[Provisioner], int],
) -> None:
    sid = active.get("S1").server_id
    active.suspend("S1")
    drive(active)
    assert fake.state.servers[sid].data_ports_up is False
    active.close("S1")
    drive(active)
    assert active.get("S1").status is ServiceStatus.CLOSED
    truth = fake.state.servers[sid]
    assert truth.owner_email is None
    assert truth.data_ports_up is True
    assert [h.detail.get("ports_on") for h in active.history("S1")][-1] is True
