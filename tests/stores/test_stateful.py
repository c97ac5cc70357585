"""T1: a Hypothesis state machine drives each backend and an in-memory reference model
with the same operations; every return value and every exception must agree.

The model is written from the protocol's docstrings, independently of the stores' shared
rules module, so a wrong rule there shows up as a disagreement here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from dci6bridge.errors import InvalidRequest, LeaseLost, ServiceNotFound, SpecMismatch, StaleState
from dci6bridge.stores import (
    Lease,
    MemoryStore,
    NewOutbox,
    SQLiteStore,
    StatusStore,
    StoredService,
    open_store,
)

from .conftest import FakeClock

IDS = ("a", "b", "c")
SPECS = ({"tariff": "E3"}, {"tariff": "E5"})
WORKERS = ("w1", "w2")
STATES = ("selecting_module", "claiming_server", "installing_os", "active")
SETTINGS = settings(max_examples=50, stateful_step_count=30, deadline=None)


@attrs.define
class Model:
    """What one service should look like."""

    spec: str
    not_before: float
    state: str = "pending"
    version: int = 0
    desired: str = "active"
    desired_seq: int = 0
    runnable: bool = True
    attempts: int = 0
    op_id: int | None = None
    lease_owner: str | None = None
    lease_epoch: int = 0
    lease_until: float = 0.0
    history: list[tuple[int, str, str, int, str]] = attrs.field(factory=list)


def _canon(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


class StoreMachine(RuleBasedStateMachine):
    """Subclassed per backend with ``make_store(clock)`` and ``cleanup()``."""

    make_store: Callable[[FakeClock], StatusStore]
    cleanup: Callable[[], None] = staticmethod(lambda: None)

    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = type(self).make_store(self.clock)
        self.model: dict[str, Model] = {}
        self.requests: dict[tuple[str, str], str] = {}
        self.claims: dict[int, str] = {}
        # outbox id -> [available_at, lease_until or None, delivered]
        self.outbox: dict[int, list[Any]] = {}
        self.singletons: dict[str, tuple[str, float]] = {}

    def teardown(self) -> None:
        self.store.close()
        type(self).cleanup()

    # ------------------------------------------------------------------ helpers
    def held(self, lease: Lease) -> bool:
        m = self.model[lease.service_id]
        return (
            m.lease_owner == lease.worker_id
            and m.lease_epoch == lease.epoch
            and m.lease_until > self.clock()
        )

    # ------------------------------------------------------------------ rules
    @initialize(
        target=leases,
        specs=st.lists(st.sampled_from(SPECS), min_size=1, max_size=len(IDS)),
        ttl=st.sampled_from((5.0, 30.0)),
    )
    def start_with_leased_services(self, specs: list[dict[str, Any]], ttl: float) -> Any:
        # Most rules need a lease. Hypothesis enables a random subset of rules per example
        # (swarm testing), so leasing at the start keeps every example busy.
        for sid, spec in zip(IDS, specs, strict=False):
            self.create(sid, spec)
        return self.acquire("w1", ttl, len(specs))

    @rule(sid=st.sampled_from(IDS), spec=st.sampled_from(SPECS))
    def create(self, sid: str, spec: dict[str, Any]) -> None:
        known = self.model.get(sid)
        if known is not None and known.spec != _canon(spec):
            with pytest.raises(SpecMismatch):
                self.store.create_service(sid, spec, state="pending", desired="active")
            return
        _, created = self.store.create_service(sid, spec, state="pending", desired="active")
        assert created == (known is None)
        if known is None:
            self.model[sid] = Model(spec=_canon(spec), not_before=self.clock())

    @rule(
        sid=st.sampled_from(IDS),
        rid=st.sampled_from(("r1", "r2", "r3")),
        action=st.sampled_from(("suspended", "active", "terminated")),
    )
    def request(self, sid: str, rid: str, action: str) -> None:
        def decide(service: StoredService) -> Mapping[str, Any]:
            if service.desired == "terminated":
                raise InvalidRequest("terminated services stay terminated")
            return {"desired": action, "desired_seq": service.desired_seq + 1}

        m = self.model.get(sid)
        if m is None:
            with pytest.raises(ServiceNotFound):
                self.store.request(sid, rid, action, {}, decide)
            return
        seen = self.requests.get((sid, rid))
        if seen is not None and seen != action:
            with pytest.raises(SpecMismatch):
                self.store.request(sid, rid, action, {}, decide)
            return
        if seen is None and m.desired == "terminated":
            with pytest.raises(InvalidRequest):
                self.store.request(sid, rid, action, {}, decide)
            return
        service, applied = self.store.request(sid, rid, action, {}, decide)
        assert applied == (seen is None)
        if applied:
            self.requests[(sid, rid)] = action
            m.desired, m.desired_seq = action, m.desired_seq + 1
        assert (service.desired, service.desired_seq) == (m.desired, m.desired_seq)

    @rule(
        target=leases,
        worker=st.sampled_from(WORKERS),
        ttl=st.sampled_from((5.0, 30.0)),
        limit=st.integers(1, 3),
    )
    def acquire(self, worker: str, ttl: float, limit: int) -> Any:
        now = self.clock()
        ready = sorted(
            (
                (m.not_before, sid)
                for sid, m in self.model.items()
                if m.runnable
                and m.not_before <= now
                and (m.lease_owner is None or m.lease_until <= now)
            )
        )[:limit]
        got = self.store.acquire(worker, ttl, limit=limit)
        event(f"acquire: {len(got)}")
        assert [x.service_id for x in got] == [sid for _, sid in ready]
        for lease in got:
            m = self.model[lease.service_id]
            m.lease_owner, m.lease_epoch, m.lease_until = worker, m.lease_epoch + 1, now + ttl
            assert (lease.epoch, lease.until) == (m.lease_epoch, m.lease_until)
        return multiple(*got)

    @rule(lease=leases, ttl=st.sampled_from((5.0, 30.0)))
    def renew(self, lease: Lease, ttl: float) -> None:
        if not self.held(lease):
            with pytest.raises(LeaseLost):
                self.store.renew(lease, ttl)
            return
        renewed = self.store.renew(lease, ttl)
        self.model[lease.service_id].lease_until = self.clock() + ttl
        assert renewed.until == self.clock() + ttl

    @rule(
        lease=leases,
        how=st.sampled_from(("ok", "ok", "wrong_state", "stale_version")),
        new_state=st.sampled_from(STATES),
        runnable=st.sampled_from((True, True, True, False)),
    )
    def transition(self, lease: Lease, how: str, new_state: str, runnable: bool) -> None:
        m = self.model[lease.service_id]
        expected_state = m.state + ("?" if how == "wrong_state" else "")
        expected_version = m.version + (1 if how == "stale_version" else 0)

        def call() -> StoredService:
            return self.store.transition(
                lease,
                expected_state=expected_state,
                expected_version=expected_version,
                new_state=new_state,
                patch={"runnable": runnable},
                detail={"how": how},
                outbox=[NewOutbox("moved", {"to": new_state})],
            )

        event(f"transition: {'held' if self.held(lease) else 'lost'} {how}")
        if not self.held(lease):
            with pytest.raises(LeaseLost):
                call()
        elif how != "ok":
            with pytest.raises(StaleState):
                call()
        else:
            row = call()
            m.history.append((m.version + 1, m.state, new_state, lease.epoch, lease.worker_id))
            m.state, m.version, m.runnable, m.attempts = new_state, m.version + 1, runnable, 0
            assert (row.state, row.version) == (m.state, m.version)
            self.outbox[len(self.outbox) + 1] = [self.clock(), None, False]

    @rule(lease=leases, stale=st.booleans(), op_id=st.integers(1, 9))
    def checkpoint(self, lease: Lease, stale: bool, op_id: int) -> None:
        m = self.model[lease.service_id]
        version = m.version - 1 if stale else m.version
        if not self.held(lease):
            with pytest.raises(LeaseLost):
                self.store.checkpoint(lease, expected_version=version, patch={"op_id": op_id})
        elif stale:
            with pytest.raises(StaleState):
                self.store.checkpoint(lease, expected_version=version, patch={"op_id": op_id})
        else:
            row = self.store.checkpoint(lease, expected_version=version, patch={"op_id": op_id})
            m.op_id = op_id
            assert (row.op_id, row.version) == (op_id, m.version)

    @rule(lease=leases, delay=st.sampled_from((None, 0.0, 20.0)), count=st.booleans())
    def release(self, lease: Lease, delay: float | None, count: bool) -> None:
        now = self.clock()
        not_before = None if delay is None else now + delay
        if self.held(lease):
            m = self.model[lease.service_id]
            m.lease_owner, m.lease_until = None, 0.0
            if not_before is not None:
                m.not_before = not_before
            m.attempts += int(count)
        self.store.release(lease, not_before=not_before, count_attempt=count)

    @rule(lease=leases, server=st.integers(1, 3))
    def reserve(self, lease: Lease, server: int) -> None:
        sid = lease.service_id
        if not self.held(lease):
            with pytest.raises(LeaseLost):
                self.store.reserve_server(lease, server)
            return
        holder = self.claims.get(server)
        mine = [s for s, owner in self.claims.items() if owner == sid]
        if holder is None and mine:
            with pytest.raises(StaleState):
                self.store.reserve_server(lease, server)
            return
        assert self.store.reserve_server(lease, server) == (holder in (None, sid))
        if holder is None:
            self.claims[server] = sid

    @rule(lease=leases, server=st.integers(1, 3))
    def release_server(self, lease: Lease, server: int) -> None:
        if not self.held(lease):
            with pytest.raises(LeaseLost):
                self.store.release_server(lease, server)
            return
        self.store.release_server(lease, server)
        if self.claims.get(server) == lease.service_id:
            del self.claims[server]

    @rule(
        worker=st.sampled_from(WORKERS),
        ttl=st.sampled_from((5.0, 30.0)),
        limit=st.integers(1, 3),
        ack=st.booleans(),
    )
    def relay(self, worker: str, ttl: float, limit: int, ack: bool) -> None:
        now = self.clock()
        ready = [
            i
            for i, (available, until, delivered) in sorted(self.outbox.items())
            if not delivered and available <= now and (until is None or until <= now)
        ][:limit]
        got = self.store.claim_outbox(worker, ttl, limit=limit)
        assert [m.id for m in got] == ready
        for i in ready:
            self.outbox[i][1] = now + ttl
        if ack and got:
            self.store.ack_outbox([got[0].id])
            self.outbox[got[0].id][2] = True
        elif got:
            self.store.retry_outbox(got[-1].id, now + 4.0)
            self.outbox[got[-1].id][:2] = [now + 4.0, None]

    @rule(name=st.sampled_from(("reconciler", "sweeper")), worker=st.sampled_from(WORKERS))
    def singleton(self, name: str, worker: str) -> None:
        now = self.clock()
        held = self.singletons.get(name)
        expect = held is None or held[0] == worker or held[1] <= now
        assert self.store.try_singleton(name, worker, 5.0) == expect
        if expect:
            self.singletons[name] = (worker, now + 5.0)

    @rule(seconds=st.sampled_from((1.0, 4.0, 5.0, 31.0)))  # 5 = a TTL: exact expiry
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def agrees_with_the_model(self) -> None:
        assert [s.service_id for s in self.store.services()] == sorted(self.model)
        for sid, m in self.model.items():
            row = self.store.get(sid)
            assert row is not None
            assert (
                _canon(row.spec),
                row.state,
                row.version,
                row.desired,
                row.desired_seq,
                row.runnable,
                row.not_before,
                row.attempts,
                row.op_id,
                row.lease_owner if m.lease_owner is not None else None,
                row.lease_epoch,
                row.lease_until if m.lease_owner is not None else 0.0,
            ) == (
                m.spec,
                m.state,
                m.version,
                m.desired,
                m.desired_seq,
                m.runnable,
                m.not_before,
                m.attempts,
                m.op_id,
                m.lease_owner,
                m.lease_epoch,
                m.lease_until,
            )
            history = [
                (h.version, h.from_state, h.to_state, h.epoch, h.worker)
                for h in self.store.history(sid)
            ]
            assert history == m.history
        assert dict(self.store.server_claims()) == self.claims


def _run(name: str, machine: type[StoreMachine]) -> None:
    machine.__name__ = f"{name.capitalize()}StoreMachine"  # named in failure reports
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_memory_store_matches_the_model() -> None:
    class Machine(StoreMachine):
        make_store = staticmethod(lambda clock: MemoryStore(clock=clock))

    _run("memory", Machine)


def test_sqlite_store_matches_the_model(tmp_path: Path) -> None:
    def make(clock: FakeClock) -> StatusStore:
        return SQLiteStore(Path(tempfile.mkdtemp(dir=tmp_path)) / "s.db", clock=clock)

    class Machine(StoreMachine):
        make_store = staticmethod(make)
        cleanup = staticmethod(lambda: [shutil.rmtree(p) for p in tmp_path.iterdir()])

    _run("sqlite", Machine)


@pytest.mark.postgres
def test_postgres_store_matches_the_model(pg_store_url: str) -> None:
    def make(clock: FakeClock) -> StatusStore:
        store = open_store(pg_store_url, clock=clock)
        _truncate(store)
        return store

    class Machine(StoreMachine):
        make_store = staticmethod(make)

    _run("postgres", Machine)


def _truncate(store: Any) -> None:
    # One schema per test; each example starts from empty tables (faster than a schema).
    with store._transaction(write=True, count=False) as tx:
        tx.execute(
            f"TRUNCATE {store._p}services, {store._p}transitions, {store._p}server_claims, "
            f"{store._p}requests, {store._p}outbox, {store._p}tasks, {store._p}singletons "
            "RESTART IDENTITY"
        )
