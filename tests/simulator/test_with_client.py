"""End to end through dci6bridge.Client / AsyncClient: what docs/testing.md shows."""

from __future__ import annotations

import asyncio

import pytest

import dci6bridge as d
from dci6bridge.testing import FakeDCImanager, Faults


@pytest.fixture
def fake() -> FakeDCImanager:
    return FakeDCImanager.with_inventory(locations=2, servers_per_location=5)


def _client(fake: FakeDCImanager) -> d.Client:
    return d.Client(
        fake.url,
        email=fake.admin_email,
        password=fake.admin_password,
        transport=fake.transport,
        clock=fake.clock.now,
        sleep=fake.advance,  # the client's waits move simulated time, not real time
    )


def test_provision_one_server_end_to_end(fake: FakeDCImanager) -> None:
    with _client(fake) as dci:
        server = next(dci.servers.list(where=d.Q.free() & (d.Q("location_id") == 2), limit=1))
        user = dci.users.create(email="jane@example.com", password="pw-jane")
        dci.servers.set_owner(server.id, user.id)
        template = next(t for t in dci.os_templates.list(location_id=2) if t.name == "Debian 12")
        dci.servers.install_os(server.id, template.id, password="root-pw")
        done = dci.servers.wait(server.id, poll_interval=30)
        assert done.operation is not None
        assert done.operation.is_ok
        dci.servers.ports_off(server.id)
    state = fake.state
    assert state.servers[server.id].owner_email == "jane@example.com"
    assert state.install_count(server.id) == 1
    assert state.servers[server.id].ipmi_up
    assert state.servers[server.id].data_ports_up is False
    assert state.count("servers.get") >= 20  # 600 s install polled every 30 s


def test_failed_install_raises(fake: FakeDCImanager) -> None:
    fake.set_faults(install_failure_servers={3})
    with _client(fake) as dci:
        dci.servers.install_os(3, 1, password="root-pw")
        with pytest.raises(d.OperationFailedError) as info:
            dci.servers.wait(3, poll_interval=60)
    assert info.value.server_id == 3
    assert info.value.status == "failed"


def test_client_rides_out_503_bursts_and_token_expiry(fake: FakeDCImanager) -> None:
    fake.set_faults(unavailable_rate=0.2, unavailable_burst=2, token_ttl=120)
    with _client(fake) as dci:
        for _ in range(20):
            assert dci.servers.get(1).id == 1
            fake.advance(30)
        fake.set_faults(unavailable_rate=0.0, token_ttl=None)
        fake.advance(200)
        assert dci.servers.get(1).id == 1  # logs in again, now for good
        fake.expire_tokens()  # revoked behind the client's back: it meets a 401
        assert dci.servers.get(1).id == 1
    state = fake.state
    assert state.count("servers.get", 503) > 0
    assert state.count("servers.get", 401) == 1
    assert state.count("auth.login", 201) > 4  # 600 s of calls with 120 s tokens


def test_outsider_conflict_surfaces_as_conflict_error(fake: FakeDCImanager) -> None:
    fake.set_faults(outsider_rate=1.0)
    with _client(fake) as dci:
        user = dci.users.create(email="jane@example.com", password="pw-jane")
        with pytest.raises(d.ConflictError):
            dci.servers.set_owner(1, user.id)


def test_async_client(fake: FakeDCImanager) -> None:
    async def main() -> list[int]:
        async with d.AsyncClient(
            fake.url,
            email=fake.admin_email,
            password=fake.admin_password,
            transport=fake.transport,
        ) as dci:
            servers = await asyncio.gather(*(dci.servers.get(i) for i in (1, 2, 3)))
            return [s.id for s in servers]

    assert asyncio.run(main()) == [1, 2, 3]


def test_served_simulator_with_the_client() -> None:
    fake = FakeDCImanager.with_inventory(
        locations=1, servers_per_location=3, install_duration=0, faults=Faults(latency_ms=1)
    )
    with (
        fake.serve() as url,
        d.Client(url, email=fake.admin_email, password=fake.admin_password) as dci,
    ):
        check = dci.check()
        assert check.ok
        assert check.user_email == fake.admin_email
        assert [c.free_server_count for c in dci.servers.configurations()] == [1, 1, 1]
