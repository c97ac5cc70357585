"""Failpoints, and an in-process crash matrix: a worker dies at every failpoint of the
provisioning and closing paths (abandoning its lease, as a killed process would), a
fresh worker takes over once the lease expires, and the service still converges with
exactly one server, one user and one install. The multi-process version (SIGKILL,
``os._exit``) lives in ``tests/chaos/``."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from dci6bridge.domain import Order
from dci6bridge.errors import ConfigError
from dci6bridge.provisioning import Event, Provisioner, ServiceStatus
from dci6bridge.provisioning._failpoints import FAILPOINTS, FailpointCrash, Failpoints
from dci6bridge.testing import FakeDCImanager

Drive = Callable[[Provisioner], int]
NewOrder = Callable[..., Order]

#: Every point the provisioning of one order (tariff with an extra IPv4) passes, in order.
OPEN_PATH = (
    "after:store.acquire",
    "after:store.transition:selecting_module",
    "before:servers.configurations",
    "after:servers.configurations",
    "after:store.transition:claiming_server",
    "before:servers.list",
    "after:servers.list",
    "after:store.reserve_server",
    "after:store.transition:creating_user",
    "before:users.find",
    "after:users.find",
    "after:store.singleton",
    "before:users.create",
    "after:users.create",
    "after:store.transition:assigning_owner",
    "before:servers.set_owner",
    "after:servers.set_owner",
    "after:store.transition:binding_ips",
    "before:ips.assign",
    "after:ips.assign",
    "after:store.transition:installing_os",
    "before:servers.get",
    "after:servers.get",
    "before:os_templates.list",
    "after:os_templates.list",
    "before:servers.install_os",
    "after:servers.install_os",
    "after:store.release",
    "after:store.checkpoint:op_id",
    "after:store.transition:active",
    "after:store.ack_outbox",
)

#: Points closing an active service passes.
CLOSE_PATH = (
    "after:store.request",
    "after:store.transition:terminating",
    "before:servers.power_off",
    "after:servers.power_off",
    "before:ips.release",
    "after:ips.release",
    "before:servers.release_owner",
    "after:servers.release_owner",
    "after:store.release_server",
    "before:users.delete",
    "after:users.delete",
    "after:store.transition:closed",
)


def recorder() -> Failpoints:
    """Failpoints that fire nowhere but record every point reached."""
    return Failpoints(["*=stall:0@0"], sleep=lambda s: None)


def test_the_paths_above_are_what_a_run_passes(
    make_prov: Callable[..., Provisioner], new_order: NewOrder, drive: Drive
) -> None:
    fp = recorder()
    prov = make_prov(failpoints=fp)
    prov.open(new_order())
    drive(prov)
    reached = set(fp.hits)
    assert set(OPEN_PATH) <= reached
    assert reached <= set(FAILPOINTS)
    fp.hits.clear()
    prov.close("S1")
    drive(prov)
    assert set(CLOSE_PATH) <= set(fp.hits) <= set(FAILPOINTS)


def assert_converged(prov: Provisioner, fake: FakeDCImanager, events: list[Event]) -> None:
    svc = prov.get("S1")
    assert svc.status is ServiceStatus.ACTIVE, prov.history("S1")
    assert svc.server_id is not None
    owned = fake.state.servers_of("jane@example.com")
    assert [s.id for s in owned] == [svc.server_id]
    assert len(fake.state.users_by_email("jane@example.com")) == 1
    assert fake.state.install_count(svc.server_id) == 1
    assert sum(len(s.ips) for s in fake.state.servers.values()) == 1
    assert prov.store.server_claims() == {svc.server_id: "S1"}
    hist = prov.history("S1")
    assert [h.version for h in hist] == list(range(1, len(hist) + 1))
    assert all(a.to_state == b.from_state for a, b in itertools.pairwise(hist))
    # at least once, and every delivery of it carries the same id
    assert {e.event_id for e in events if e.kind == "activated"} == {
        f"S1:{hist[-1].version}:activated"
    }


@pytest.mark.parametrize("point", OPEN_PATH)
def test_crash_anywhere_while_provisioning_converges(
    make_prov: Callable[..., Provisioner],
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
    events: list[Event],
    point: str,
) -> None:
    doomed = make_prov(failpoints=Failpoints([f"{point}=raise"]))
    doomed.open(new_order())
    with pytest.raises(FailpointCrash) as crash:
        drive(doomed)
    assert crash.value.point == point
    fake.advance(61.0)  # the dead worker's lease expires
    drive(make_prov())
    assert_converged(doomed, fake, events)


@pytest.mark.parametrize("point", CLOSE_PATH)
def test_crash_anywhere_while_closing_converges(
    make_prov: Callable[..., Provisioner],
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
    point: str,
) -> None:
    first = make_prov()
    first.open(new_order())
    drive(first)
    server_id = first.get("S1").server_id
    assert server_id is not None
    doomed = make_prov(failpoints=Failpoints([f"{point}=raise"]))

    def close_and_work() -> None:
        doomed.close("S1")
        drive(doomed)

    with pytest.raises(FailpointCrash):
        close_and_work()
    fake.advance(61.0)
    survivor = make_prov()
    if point == "after:store.request":
        survivor.close("S1")  # billing retries a close whose answer it never got
    drive(survivor)
    assert survivor.get("S1").status is ServiceStatus.CLOSED
    truth = fake.state.servers[server_id]
    assert truth.owner_email is None
    assert truth.ips == ()
    assert fake.state.users_by_email("jane@example.com") == ()
    assert survivor.store.server_claims() == {}


def test_close_after_a_crash_right_after_user_creation_deletes_the_user(
    make_prov: Callable[..., Provisioner],
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
) -> None:
    doomed = make_prov(failpoints=Failpoints(["after:users.create=raise"]))
    doomed.open(new_order())
    with pytest.raises(FailpointCrash):
        drive(doomed)
    assert doomed.store.get("S1").user_id is None  # created, never recorded
    doomed.close("S1")
    fake.advance(61.0)
    drive(make_prov())
    assert doomed.get("S1").status is ServiceStatus.CLOSED
    assert fake.state.users_by_email("jane@example.com") == ()
    assert doomed.store.server_claims() == {}


def test_unsafe_skip_readback_duplicates_what_read_back_prevents(
    make_prov: Callable[..., Provisioner],
    fake: FakeDCImanager,
    new_order: NewOrder,
    drive: Drive,
) -> None:
    # the negative control's switch: a lost users.create answer now makes a second user
    fake.set_faults(lost_response_rate=1.0, lost_response_routes={"users.create"})
    prov = make_prov(unsafe_skip_readback=True, max_attempts=3)
    prov.open(new_order())
    drive(prov)
    assert len(fake.state.users_by_email("jane@example.com")) >= 2


def test_unsafe_skip_readback_from_the_environment(
    make_prov: Callable[..., Provisioner], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DCI6BRIDGE_UNSAFE_SKIP_READBACK", "1")
    assert make_prov().settings.unsafe_skip_readback is True
    monkeypatch.setenv("DCI6BRIDGE_UNSAFE_SKIP_READBACK", "0")
    assert make_prov().settings.unsafe_skip_readback is False


# --------------------------------------------------------------------------- Failpoints


def test_exit_fires_once_and_records_the_marker(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    codes: list[int] = []
    fp = Failpoints("after:servers.set_owner", marker=marker, exit=codes.append)
    fp.hit("before:servers.set_owner")
    fp.hit("after:servers.set_owner")
    fp.hit("after:servers.set_owner")
    assert codes == [137]
    assert marker.read_text().split() == ["after:servers.set_owner"]
    # a restarted worker (new object, same marker) gets past the point
    again = Failpoints("after:servers.set_owner", marker=marker, exit=codes.append)
    again.hit("after:servers.set_owner")
    assert codes == [137]


def test_probability_rules_are_seeded(tmp_path: Path) -> None:
    def fired(seed: int) -> int:
        codes: list[int] = []
        fp = Failpoints("*=0.25", seed=seed, exit=codes.append)
        for _ in range(400):
            fp.hit("after:users.create")
        return len(codes)

    n = fired(7)
    assert 60 < n < 140
    assert fired(7) == n


def test_stall_and_raise(tmp_path: Path) -> None:
    slept: list[float] = []
    fp = Failpoints(["before:users.*=stall:1.5", "after:store.*=raise"], sleep=slept.append)
    fp.hit("before:users.create")
    fp.hit("before:users.create")
    assert slept == [1.5]
    with pytest.raises(FailpointCrash, match=r"after:store\.release"):
        fp.hit("after:store.release")
    fp.hit("after:servers.get")


def test_from_environment(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    fp = Failpoints.from_env(
        {
            "DCI6BRIDGE_FAILPOINTS": "after:users.create=raise",
            "DCI6BRIDGE_FAILPOINT_SEED": "3",
            "DCI6BRIDGE_FAILPOINT_MARKER": str(marker),
        }
    )
    assert fp.armed
    with pytest.raises(FailpointCrash):
        fp.hit("after:users.create")
    assert marker.read_text() == "after:users.create\n"
    assert not Failpoints.from_env({}).armed


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ("after:nothing.here", "matches no failpoint"),
        ("*=2", "not in"),
        ("*=often", "not a probability"),
        ("*=stall:x", "stall seconds"),
        ("=0.1", "empty point name"),
    ],
)
def test_bad_rules_are_refused(rule: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Failpoints(rule)


def test_every_name_is_unique() -> None:
    assert len(FAILPOINTS) == len(set(FAILPOINTS))
