"""The client against the simulator (in-process transport): every resource method,
sync and async, with the simulator's clock driving waits and token expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import dci6bridge as d
from dci6bridge.testing import FakeDCImanager, ManualClock


@pytest.fixture
def fake() -> FakeDCImanager:
    return FakeDCImanager.with_inventory(locations=2, servers_per_location=6, clock=ManualClock())


def client_for(fake: FakeDCImanager, **kwargs: Any) -> d.Client:
    clock = fake.clock
    return d.Client(
        fake.url,
        email=fake.admin_email,
        password=fake.admin_password,
        transport=fake.transport,
        clock=clock.now,
        sleep=fake.advance,
        **kwargs,
    )


@pytest.fixture
def dci(fake: FakeDCImanager) -> Iterator[d.Client]:
    with client_for(fake) as client:
        yield client


def test_check_and_whoami(dci: d.Client, fake: FakeDCImanager) -> None:
    check = dci.check()
    assert check.ok
    assert check.user_email == fake.admin_email
    assert dci.whoami().owner_email == fake.admin_email


def test_read_only_resources(dci: d.Client) -> None:
    locations = dci.locations.list()
    assert [loc.id for loc in locations] == [1, 2]
    templates = dci.os_templates.list(location_id=1)
    assert templates
    assert {t.location_id for t in templates} == {1}
    counts = dci.servers.configurations()
    assert sum(c.free_server_count for c in counts) == 12
    assert dci.ips.pools()


def test_filters_reach_the_simulator(dci: d.Client) -> None:
    in_one = list(dci.servers.list(where=d.Q.free() & (d.Q("location_id") == 2), page_size=4))
    assert len(in_one) == 6
    assert {s.location_id for s in in_one} == {2}
    desc = [s.id for s in dci.servers.list(orderby=d.Q("id").desc(), limit=3)]
    assert desc == sorted(desc, reverse=True)
    assert len(desc) == 3


def test_provisioning_flow(dci: d.Client, fake: FakeDCImanager) -> None:
    server = next(dci.servers.list(where=d.Q.free() & (d.Q("location_id") == 1)))
    user = dci.users.create(email="jane@example.com", password="Jane-pw-1234", full_name="Jane")
    found = dci.users.find("jane@example.com")
    assert found is not None
    assert (found.id, found.email, found.roles) == (user.id, "jane@example.com", ("@user",))
    dci.servers.set_owner(server.id, user.id)
    owned = dci.servers.get(server.id)
    assert owned.owner_email == "jane@example.com"
    template = dci.os_templates.list(location_id=1)[0]
    before = owned.operation.id if owned.operation else None
    dci.servers.install_os(
        server.id, template.id, password="Root-pw-98765", ssh_keys=["ssh-ed25519 AAAA x"]
    )
    done = dci.servers.wait(server.id, poll_interval=60, after_operation_id=before)
    assert done.operation is not None
    assert done.operation.is_ok
    assert fake.state.install_count(server.id) == 1

    off = dci.servers.ports_off(server.id)
    assert all(c.admin_status == "down" for c in off.data_connections)
    assert all(c.admin_status == "up" for c in off.switch_connection if c.is_ipmi_connection)
    assert fake.state.servers[server.id].ipmi_up
    on = dci.servers.ports_on(server.id)
    assert all(c.admin_status == "up" for c in on.switch_connection)

    dci.servers.release_owner(server.id)
    assert dci.servers.get(server.id).owner_email is None
    dci.users.delete(user.id)
    assert dci.users.find("jane@example.com") is None


def test_failed_install_raises(fake: FakeDCImanager) -> None:
    server_id = 1
    fake.set_faults(install_failure_servers=[server_id])
    with client_for(fake) as dci:
        user = dci.users.create(email="f@example.com", password="F-pw-123456")
        dci.servers.set_owner(server_id, user.id)
        before = dci.servers.get(server_id).operation
        dci.servers.install_os(server_id, 1, password="Root-pw-98765")
        with pytest.raises(d.OperationFailedError) as info:
            dci.servers.wait(
                server_id, poll_interval=60, after_operation_id=before.id if before else None
            )
    assert info.value.server_id == server_id


def test_wait_timeout_with_simulated_time(fake: FakeDCImanager) -> None:
    with client_for(fake) as dci:
        user = dci.users.create(email="t@example.com", password="T-pw-123456")
        dci.servers.set_owner(2, user.id)
        before = dci.servers.get(2).operation
        dci.servers.install_os(2, 1, password="Root-pw-98765")
        with pytest.raises(d.OperationTimeoutError):
            dci.servers.wait(
                2, timeout=120, poll_interval=30, after_operation_id=before.id if before else None
            )


def test_conflict_on_owned_server(dci: d.Client) -> None:
    a = dci.users.create(email="a@example.com", password="A-pw-123456")
    b = dci.users.create(email="b@example.com", password="B-pw-123456")
    dci.servers.set_owner(3, a.id)
    with pytest.raises(d.ConflictError):
        dci.servers.set_owner(3, b.id)


def test_not_found(dci: d.Client) -> None:
    with pytest.raises(d.NotFoundError):
        dci.servers.get(99_999)


def test_relogin_after_tokens_expire(fake: FakeDCImanager) -> None:
    with client_for(fake) as dci:
        dci.servers.get(1)
        fake.expire_tokens()
        assert dci.servers.get(1).id == 1
    assert fake.state.count("auth.login") == 2


def test_renews_before_ttl(fake: FakeDCImanager) -> None:
    fake.set_faults(token_ttl=600)
    with client_for(fake) as dci:
        dci.servers.get(1)
        fake.advance(580)  # within the renewal margin of expires_at
        dci.servers.get(1)
    assert fake.state.count("auth.login") == 2
    assert fake.state.count("servers.get", 401) == 0


def test_503_bursts_are_ridden_out(fake: FakeDCImanager) -> None:
    fake.fail_next(3)
    with client_for(fake) as dci:
        assert dci.servers.get(1).id == 1


def test_close_revokes_session(fake: FakeDCImanager) -> None:
    with client_for(fake) as dci:
        dci.servers.get(1)
    assert fake.state.count("auth.logout", 200) == 1


def test_async_flow(fake: FakeDCImanager) -> None:
    async def sleep(seconds: float) -> None:
        fake.advance(seconds)

    async def run() -> tuple[int, bool]:
        async with d.AsyncClient(
            fake.url,
            email=fake.admin_email,
            password=fake.admin_password,
            transport=fake.transport,
            clock=fake.clock.now,
            sleep=sleep,
        ) as dci:
            assert (await dci.check()).ok
            servers = [s async for s in dci.servers.list(where=d.Q.free(), page_size=5)]
            user = await dci.users.create(email="as@example.com", password="As-pw-123456")
            await dci.servers.set_owner(servers[0].id, user.id)
            before = (await dci.servers.get(servers[0].id)).operation
            await dci.servers.install_os(servers[0].id, 1, password="Root-pw-98765")
            done = await dci.servers.wait(
                servers[0].id, poll_interval=60, after_operation_id=before.id if before else None
            )
            off = await dci.servers.ports_off(servers[0].id)
            assert await dci.locations.list()
            assert await dci.os_templates.list()
            assert await dci.ips.pools()
            assert await dci.users.find("as@example.com") is not None
            assert await dci.servers.configurations()
            return len(servers), bool(done.operation and done.operation.is_ok) and all(
                c.admin_status == "down" for c in off.data_connections
            )

    assert asyncio.run(run()) == (12, True)
