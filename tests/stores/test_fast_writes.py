"""What makes a fenced write cheaper must not make it wrong: the record an ``advance``
returns is the stored row (whoever else wrote it since the lease), an ``UPDATE`` of the
changed columns keeps what it does not touch, one statement per table serves every
request of an ``advance_many``, ``plain_json`` copies a patch exactly as a JSON round
trip would, and the memory store's indexes follow every write."""

from __future__ import annotations

import enum
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dci6bridge.errors import ConfigError
from dci6bridge.secret import Secret
from dci6bridge.stores import (
    Advanced,
    AdvanceRequest,
    Lease,
    MemoryStore,
    Move,
    NewOutbox,
    StatusStore,
)
from dci6bridge.stores import memory as memory_module
from dci6bridge.stores._codec import canonical_json, plain_json, service_from_row

from .conftest import FakeClock
from .test_contract import SPEC, create, lease_of


def written(outcome: object) -> Advanced:
    assert isinstance(outcome, Advanced), outcome
    return outcome


# ------------------------------------------------------------------ the stored row wins


def test_a_lease_record_with_another_spec_does_not_lend_it(store: StatusStore) -> None:
    # The spec is taken from the lease's record only when the row's spec hash matches.
    create(store)
    lease = lease_of(store, "INV-1")
    forged = attrs.evolve(
        lease,
        service=attrs.evolve(lease.service, spec={"tariff": "other"}, spec_hash="0" * 64),
    )
    done = store.advance(
        forged, expected_state="pending", expected_version=0, moves=[Move("selecting_module")]
    )
    assert done.service.spec == SPEC
    assert done.service == store.get("INV-1")


def test_a_row_written_by_another_connection_since_the_lease_is_what_comes_back(
    make_store: Callable[..., StatusStore], backend: str
) -> None:
    # Billing (another connection, or process) changes the row after the worker leased
    # it; the worker's write starts from the row as it is now, not from its lease.
    worker = make_store()
    billing = worker if backend == "memory" else make_store()  # one process: one store
    create(worker)
    lease = lease_of(worker, "INV-1")
    billing.request(
        "INV-1", "r1", "suspend", {}, lambda s: {"desired": "suspended", "data": {"b": 1}}
    )
    done = worker.advance(
        lease,
        expected_state="pending",
        expected_version=0,
        moves=[Move("selecting_module", {"module": "dci-1", "data": {"w": 2}})],
    )
    assert done.service.desired == "suspended"
    assert done.service.data == {"b": 1, "w": 2}
    assert done.service == worker.get("INV-1") == billing.get("INV-1")


def test_an_update_of_some_columns_keeps_the_others(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    first = store.advance(
        lease,
        expected_state="pending",
        expected_version=0,
        moves=[Move("selecting_module", {"module": "m", "last_error": "e", "data": {"a": 1}})],
    )
    # same values again, no data: nothing but updated_at differs
    again = store.checkpoint(
        lease, expected_version=1, patch={"module": "m", "runnable": first.service.runnable}
    )
    assert again == store.get("INV-1")
    assert (again.module, again.last_error, again.data) == ("m", "e", {"a": 1})
    # a data key deleted, a column cleared
    last = store.checkpoint(
        lease, expected_version=1, patch={"last_error": None, "data": {"a": None, "b": [1]}}
    )
    assert last == store.get("INV-1")
    assert (last.last_error, last.data, last.module) == (None, {"b": [1]}, "m")


def test_the_requests_of_one_transaction_share_statements_yet_keep_their_rows(
    store: StatusStore, clock: FakeClock
) -> None:
    for sid in ("A", "B", "C"):
        create(store, sid)
    leases = {lease.service_id: lease for lease in store.acquire("w1", 60, limit=10)}
    requests = [
        AdvanceRequest(
            leases[sid],
            expected_state="pending",
            expected_version=0,
            moves=[
                Move("selecting_module", {"data": {"n": n}}, {"n": n}),
                Move("active", outbox=[NewOutbox("activated", {"sid": sid})]),
            ],
            reserve_server=10 + n,
            release=True,
        )
        for n, sid in enumerate(("A", "B", "C"))
    ]
    # B's fence fails: its rows must be missing and the others' complete
    requests[1] = attrs.evolve(requests[1], expected_version=5)
    outcomes = store.advance_many(requests)
    assert not isinstance(outcomes[1], Advanced)
    for sid in ("A", "C"):
        done = written(outcomes["ABC".index(sid)])
        assert done.service == store.get(sid)
        assert [(t.version, t.from_state, t.to_state) for t in store.history(sid)] == [
            (1, "pending", "selecting_module"),
            (2, "selecting_module", "active"),
        ]
    assert store.history("B") == []
    assert store.server_claims() == {10: "A", 12: "C"}
    events = store.claim_outbox("relay", 10)
    assert [(m.service_id, m.event_id) for m in events] == [
        ("A", "A:2:activated"),
        ("C", "C:2:activated"),
    ]


def test_a_second_server_is_refused_and_the_first_stays_reserved(store: StatusStore) -> None:
    create(store)
    lease = lease_of(store, "INV-1")
    assert store.reserve_server(lease, 3)
    assert store.reserve_server(lease, 3)  # already ours
    create(store, "OTHER")
    other = lease_of(store, "OTHER")
    refused = store.advance(other, expected_state="pending", expected_version=0, reserve_server=3)
    assert refused.reserved is False
    store.release_server(lease, 3)
    assert store.reserve_server(lease, 4)  # the released one no longer counts as held
    assert store.server_claims() == {4: "INV-1"}


# ------------------------------------------------------------------ plain_json


class Colour(enum.IntEnum):
    RED = 1


_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5)
    | st.sampled_from([Colour.RED, Secret("hunter2"), {1, 2}, b"x"])
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.dictionaries(st.integers(0, 3), inner, max_size=2)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3).map(OrderedDict)
    ),
    max_leaves=12,
)


def _round_trip(value: Any) -> Any:
    return json.loads(canonical_json(value, field="f"))


@given(_VALUES)
def test_plain_json_is_a_json_round_trip(value: Any) -> None:
    expected: Any = None
    refusal = ""
    try:
        expected = _round_trip(value)
    except ConfigError as exc:
        refusal = str(exc)
    if refusal:
        with pytest.raises(ConfigError) as err:
            plain_json(value, field="f")
        assert str(err.value) == refusal
        return
    got = plain_json(value, field="f")
    assert got == expected
    assert json.dumps(got) == json.dumps(expected)  # same types and key order too


def test_plain_json_copies_and_refuses_what_json_refuses() -> None:
    source: dict[str, Any] = {"b": [1, (2, 3)], "a": {"x": 1.5}}
    copy = plain_json(source, field="data")
    assert copy == {"a": {"x": 1.5}, "b": [1, [2, 3]]}
    copy["a"]["x"] = 0
    assert source["a"]["x"] == 1.5
    for bad in (math.inf, math.nan, Secret("hunter2"), object()):
        with pytest.raises(ConfigError, match=r"^data: cannot be stored as JSON") as err:
            plain_json({"k": [bad]}, field="data")
        assert "hunter2" not in str(err.value)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ConfigError, match=r"^data: "):
        plain_json({"k": loop}, field="data")


# ------------------------------------------------------------------ memory store indexes


def test_memory_acquire_looks_only_at_runnable_services(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    for n in range(200):
        create(store, f"DONE-{n:03d}")
    for lease in store.acquire("w1", 60, limit=200):
        store.transition(
            lease,
            expected_state="pending",
            expected_version=0,
            new_state="active",
            patch={"runnable": False},
            release=True,
        )
    create(store, "NEW")
    decoded: list[str] = []
    real = service_from_row

    def counting(row: Any, known: Any = None) -> Any:
        decoded.append(row["service_id"])
        return real(row, known)

    monkeypatch.setattr(memory_module, "service_from_row", counting)
    (lease,) = store.acquire("w2", 60, limit=5)
    assert lease.service_id == "NEW"
    assert len(decoded) <= 2  # the one taken (and its copy), not the 200 finished ones


def test_memory_acquire_follows_runnable_through_every_kind_of_write() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    create(store, "A")
    create(store, "B")
    clock.advance(1)
    a, b = store.acquire("w1", 60, limit=5)
    store.checkpoint(a, expected_version=0, patch={"runnable": False})
    store.release(a)
    store.release(b, not_before=clock.t + 10)
    assert store.acquire("w2", 60, limit=5) == []
    # billing makes A runnable again; B's backoff passes
    store.request("A", "r1", "resume", {}, lambda s: {"runnable": True})
    clock.advance(11)
    got = store.acquire("w2", 60, limit=5)
    # oldest not_before first: A's was set at creation, B's 10 s after
    assert [lease.service_id for lease in got] == ["A", "B"]
    assert all(isinstance(lease, Lease) for lease in got)
