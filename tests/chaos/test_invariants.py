"""The invariant checker itself: it must pass a correct ledger and name every kind of
violation, or the chaos suites that rely on it prove nothing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dci6bridge.provisioning.states import TRANSITIONS
from dci6bridge.stores import MemoryStore, NewTask, StoredService, Transition
from dci6bridge.testing import FakeDCImanager
from dci6bridge.testing.chaos import (
    DEFAULT_TARGETS,
    RemoteTruth,
    check_history,
    check_invariants,
)

PATH = (
    "selecting_module",
    "claiming_server",
    "creating_user",
    "assigning_owner",
    "installing_os",
    "active",
)


def _provision(
    store: MemoryStore, sid: str, *, server_id: int, user_id: int, path: Sequence[str] = PATH
) -> StoredService:
    store.create_service(sid, {"order": sid}, state="pending", desired="active")
    (lease,) = store.acquire("w1", 60.0)
    assert lease.service_id == sid
    row = lease.service
    for i, state in enumerate(path):
        last = i == len(path) - 1
        patch = {"server_id": server_id, "user_id": user_id} if state == "active" else {}
        if last:
            patch["runnable"] = False
        row = store.transition(
            lease,
            expected_state=row.state,
            expected_version=row.version,
            new_state=state,
            patch=patch,
        )
    store.release(lease)
    return row


def _truth(**overrides: object) -> RemoteTruth:
    base: dict[str, object] = {
        "owners": {1: "a@example.com", 2: "b@example.com", 3: None},
        "users": [(10, "a@example.com"), (11, "b@example.com"), (1, "admin@example.com")],
        "installs": {1: 1, 2: 1},
    }
    base.update(overrides)
    return RemoteTruth(**base)  # type: ignore[arg-type]


EMAILS = {"S-A": "a@example.com", "S-B": "b@example.com"}


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    _provision(s, "S-A", server_id=1, user_id=10)
    _provision(s, "S-B", server_id=2, user_id=11)
    return s


def test_correct_ledger_passes(store: MemoryStore) -> None:
    report = check_invariants(store, _truth(), customer_emails=EMAILS, allowed=TRANSITIONS)
    assert report.ok, report.format(store)
    assert report.services == 2
    assert report.counts == {"active": 2}


def test_targets_match_the_orchestrators_states() -> None:
    from dci6bridge.provisioning.states import ServiceState

    for desired, target in DEFAULT_TARGETS.items():
        assert ServiceState(desired).value == desired
        assert ServiceState(target).value == target


def test_i1_unsettled_service_without_task() -> None:
    s = MemoryStore()
    _provision(s, "S-A", server_id=1, user_id=10, path=PATH[:3])
    truth = _truth(owners={1: None}, installs={})
    report = check_invariants(s, truth, customer_emails={"S-A": "a@example.com"})
    assert report.by_invariant() == {"I1": 1}
    assert "creating_user" in str(report.violations[0])
    # an open department task explains it
    s.add_task("S-A", NewTask(department="Support", kind="stuck", reason="no free server"))
    assert check_invariants(s, truth, customer_emails={"S-A": "a@example.com"}).ok


def test_i2_chain_gap_wrong_origin_and_row_mismatch() -> None:
    row = StoredService(
        service_id="S", spec={}, spec_hash="h", state="active", version=4, desired="active",
        desired_seq=0, runnable=False, not_before=0.0, attempts=0, last_error=None,
        module=None, server_id=None, user_id=None, op_id=None, failed_from=None, data={},
        lease_owner=None, lease_epoch=1, lease_until=0.0, created_at=0.0, updated_at=0.0,
    )  # fmt: skip

    def t(version: int, a: str, b: str) -> Transition:
        return Transition("S", version, a, b, 1, "w", 0.0, {})

    good = [t(1, "pending", "selecting_module"), t(2, "selecting_module", "claiming_server"),
            t(3, "claiming_server", "creating_user"), t(4, "creating_user", "active")]  # fmt: skip
    assert check_history(row, good, initial_state="pending") == []
    # creating_user -> active skips steps: only the transition table catches that
    (bad_step,) = check_history(row, good, initial_state="pending", allowed=TRANSITIONS)
    assert "not an allowed transition" in bad_step.message

    gap = [*good[:2], t(4, "claiming_server", "active")]
    messages = [v.message for v in check_history(row, gap, initial_state="pending")]
    assert any("version 4 where 3" in m for m in messages)
    assert any("row version 4 but 3 history rows" in m for m in messages)

    fork = [*good[:2], t(3, "selecting_module", "creating_user"), good[3]]
    (v,) = check_history(row, fork, initial_state="pending")
    assert "starts from 'selecting_module'" in v.message

    lost = good[:3]
    messages = [v.message for v in check_history(row, lost, initial_state="pending")]
    assert any("row state 'active' but the history ends in 'creating_user'" in m for m in messages)


def test_i3_server_recorded_twice(store: MemoryStore) -> None:
    _provision(store, "S-C", server_id=1, user_id=12)
    report = check_invariants(
        store, _truth(users=[(10, "a@example.com"), (11, "b@example.com"), (12, "c@x.org")]),
        customer_emails={**EMAILS, "S-C": "c@x.org"},
    )  # fmt: skip
    by = report.by_invariant()
    assert by["I3"] >= 2  # both holders named, and S-C's server is owned by someone else
    assert {"S-A", "S-C"} <= set(report.offenders())


def test_i3_server_owned_by_someone_else(store: MemoryStore) -> None:
    report = check_invariants(
        store, _truth(owners={1: "outsider@x.org", 2: "b@example.com"}), customer_emails=EMAILS
    )
    assert [v.invariant for v in report.violations] == ["I3", "I4"]
    assert report.offenders() == ["S-A"]


def test_i4_duplicate_user_and_double_install(store: MemoryStore) -> None:
    users = [(10, "a@example.com"), (11, "b@example.com"), (13, "b@example.com")]
    report = check_invariants(
        store, _truth(users=users, installs={1: 2, 2: 1}), customer_emails=EMAILS
    )
    messages = sorted(str(v) for v in report.violations)
    assert report.by_invariant() == {"I4": 2}
    assert any("2 OS installs" in m and "S-A" in m for m in messages)
    assert any("2 remote users" in m and "S-B" in m for m in messages)


def test_i5_orphan_server_and_stray_install(store: MemoryStore) -> None:
    report = check_invariants(
        store,
        _truth(owners={1: "a@example.com", 2: "b@example.com", 3: "a@example.com"},
               installs={1: 1, 2: 1, 3: 1}),
        customer_emails=EMAILS,
    )  # fmt: skip
    assert report.by_invariant() == {"I5": 1, "I4": 1}
    assert "server 3" in report.format(store)


def test_truth_from_the_simulator() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=3)
    uid = fake.add_user("a@example.com")
    fake.modify_server(2, owner_id=uid)
    truth = RemoteTruth.from_fake(fake)
    assert truth.owners[2] == "a@example.com"
    assert truth.owners[1] is None
    assert truth.user_emails()["a@example.com"] == [uid]
    assert truth.installs == {}


def test_report_format_shows_the_transition_log(store: MemoryStore) -> None:
    report = check_invariants(store, _truth(installs={1: 3, 2: 1}), customer_emails=EMAILS)
    text = report.format(store)
    assert "transition log of S-A" in text
    assert "v6   installing_os -> active" in text
