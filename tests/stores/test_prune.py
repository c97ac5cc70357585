"""StatusStore.prune on every backend: old request records and delivered events go, in
bounded batches, by the store's clock; nothing else is ever deleted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from dci6bridge.errors import ConfigError
from dci6bridge.stores import Lease, NewOutbox, NewTask, PruneResult, StatusStore, StoredService
from dci6bridge.stores import _sql as sql

from .conftest import FakeClock
from .test_contract import create, lease_of, step

HOUR = 3600.0
WINDOW = 72 * HOUR


class Decisions:
    """A ``decide`` callback that counts how often the store asked it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, service: StoredService) -> Mapping[str, Any]:
        self.calls += 1
        return {"desired_seq": service.desired_seq + 1}


def test_a_request_is_recognised_until_the_window_and_new_after_it(
    store: StatusStore, clock: FakeClock
) -> None:
    create(store)
    decide = Decisions()
    assert store.request("INV-1", "r1", "suspend", {}, decide)[1] is True
    clock.advance(WINDOW)  # exactly at the window: still kept
    assert store.prune() == PruneResult(requests=0, outbox=0, more=False)
    assert store.request("INV-1", "r1", "suspend", {}, decide)[1] is False
    clock.advance(1)
    assert store.prune() == PruneResult(requests=1, outbox=0, more=False)
    # The documented consequence: a replay after the window is decided again.
    service, applied = store.request("INV-1", "r1", "suspend", {}, decide)
    assert applied is True
    assert decide.calls == 2
    assert service.desired_seq == 2
    # ... and recorded again, so its own replays are recognised once more.
    assert store.request("INV-1", "r1", "suspend", {}, decide)[1] is False


def test_only_records_older_than_the_window_go(store: StatusStore, clock: FakeClock) -> None:
    create(store)
    store.request("INV-1", "old", "suspend", {}, Decisions())
    clock.advance(10 * HOUR)
    store.request("INV-1", "young", "resume", {}, Decisions())
    clock.advance(WINDOW - 5 * HOUR)  # "old" is 67 h + 10 h old, "young" 67 h
    assert store.prune().requests == 1
    decide = Decisions()
    assert store.request("INV-1", "young", "resume", {}, decide)[1] is False
    assert store.request("INV-1", "old", "suspend", {}, decide)[1] is True
    assert decide.calls == 1


def _with_events(store: StatusStore, clock: FakeClock) -> list[int]:
    """INV-1 with three events (and still leased by w1); returns their ids."""
    create(store)
    lease = lease_of(store, "INV-1")
    step(
        store,
        lease,
        "active",
        outbox=[NewOutbox("a"), NewOutbox("b"), NewOutbox("c")],
        task=NewTask("Support", "check", "look at it"),
    )
    return [m.id for m in store.claim_outbox("relay", 30, limit=10)]


def test_delivered_events_go_after_the_window_undelivered_never(
    store: StatusStore, clock: FakeClock
) -> None:
    a, b, c = _with_events(store, clock)
    store.ack_outbox([a])
    clock.advance(HOUR)
    store.ack_outbox([b])  # delivered an hour later
    store.retry_outbox(c, clock.t + 10 * WINDOW)  # never delivered, retried far ahead
    clock.advance(WINDOW)  # a: 73 h since delivery, b: 72 h
    assert store.prune() == PruneResult(requests=0, outbox=1, more=False)
    clock.advance(100 * WINDOW)
    assert store.prune() == PruneResult(requests=0, outbox=1, more=False)
    assert store.prune() == PruneResult(requests=0, outbox=0, more=False)
    # the undelivered event is still there and still delivered once due
    left = store.claim_outbox("relay", 30, limit=10)
    assert [(m.id, m.kind, m.event_id) for m in left] == [(c, "c", "INV-1:1:c")]


def test_a_claimed_but_unacknowledged_event_survives(store: StatusStore, clock: FakeClock) -> None:
    ids = _with_events(store, clock)
    clock.advance(1000 * WINDOW)
    assert store.prune().outbox == 0
    assert sorted(m.id for m in store.claim_outbox("relay-2", 30, limit=10)) == ids


def test_services_history_tasks_claims_and_singletons_are_never_touched(
    store: StatusStore, clock: FakeClock
) -> None:
    ids = _with_events(store, clock)
    store.ack_outbox(ids)
    store.request("INV-1", "r1", "suspend", {}, Decisions())
    service = store.get("INV-1")
    assert service is not None
    lease = Lease("INV-1", "w1", service.lease_epoch, service.lease_until, service)
    assert store.reserve_server(lease, 7)
    store.add_task("INV-1", NewTask("Support", "other", "more"))
    assert store.try_singleton("reconciler", "w1", 10 * WINDOW)
    before = (
        store.services(),
        store.history("INV-1"),
        store.tasks(include_resolved=True),
        dict(store.server_claims()),
    )
    clock.advance(5 * WINDOW)
    assert store.prune() == PruneResult(requests=1, outbox=3, more=False)
    after = (
        store.services(),
        store.history("INV-1"),
        store.tasks(include_resolved=True),
        dict(store.server_claims()),
    )
    assert after == before
    assert not store.try_singleton("reconciler", "w2", 60)


def test_the_windows_are_separate_and_given_in_seconds(
    store: StatusStore, clock: FakeClock
) -> None:
    a, *_ = _with_events(store, clock)
    store.ack_outbox([a])
    store.request("INV-1", "r1", "suspend", {}, Decisions())
    clock.advance(2 * HOUR)
    assert store.prune(requests_older_than_s=3 * HOUR, delivered_older_than_s=HOUR) == (
        PruneResult(requests=0, outbox=1, more=False)
    )
    assert store.prune(requests_older_than_s=HOUR, delivered_older_than_s=HOUR).requests == 1


def test_limit_bounds_one_call_and_more_says_so(store: StatusStore, clock: FakeClock) -> None:
    create(store)
    for i in range(5):
        store.request("INV-1", f"r{i}", "suspend", {}, Decisions())
        clock.advance(1)
    clock.advance(WINDOW)
    assert store.prune(limit=2) == PruneResult(requests=2, outbox=0, more=True)
    decide = Decisions()
    # oldest first: r0 and r1 went, r2 is still recognised
    assert store.request("INV-1", "r2", "suspend", {}, decide)[1] is False
    assert store.request("INV-1", "r1", "suspend", {}, decide)[1] is True
    clock.advance(WINDOW + 1)  # r1's new record is old too now
    assert store.prune(limit=2) == PruneResult(requests=2, outbox=0, more=True)
    assert store.prune(limit=2) == PruneResult(requests=2, outbox=0, more=True)
    assert store.prune(limit=2) == PruneResult(requests=0, outbox=0, more=False)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_sql_stores_delete_in_short_transactions(
    store: StatusStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "_PRUNE_BATCH", 2)
    create(store)
    for i in range(5):
        store.request("INV-1", f"r{i}", "suspend", {}, Decisions())
    clock.advance(WINDOW + 1)
    writes = store.write_count
    assert store.prune() == PruneResult(requests=5, outbox=0, more=False)
    assert store.write_count - writes == 3  # batches of 2, 2 and 1
    assert store.prune() == PruneResult(requests=0, outbox=0, more=False)


def test_nothing_to_prune_writes_nothing(store: StatusStore, clock: FakeClock) -> None:
    create(store)
    store.request("INV-1", "r1", "suspend", {}, Decisions())
    writes = store.write_count
    assert store.prune() == PruneResult(requests=0, outbox=0, more=False)
    assert store.write_count == writes


@pytest.mark.parametrize(
    ("kwargs", "field", "shown"),
    [
        ({"requests_older_than_s": 0}, "requests_older_than_s", "0"),
        ({"requests_older_than_s": -5.0}, "requests_older_than_s", "-5.0"),
        ({"delivered_older_than_s": float("nan")}, "delivered_older_than_s", "nan"),
        ({"delivered_older_than_s": "72h"}, "delivered_older_than_s", "72h"),
        ({"limit": 0}, "limit", "0"),
        ({"limit": 2.5}, "limit", "2.5"),
        ({"limit": True}, "limit", "True"),
    ],
)
def test_bad_arguments_name_the_field_and_value(
    store: StatusStore, kwargs: dict[str, Any], field: str, shown: str
) -> None:
    create(store)
    store.request("INV-1", "r1", "suspend", {}, Decisions())
    with pytest.raises(ConfigError, match=field) as info:
        store.prune(**kwargs)
    assert shown in str(info.value)
