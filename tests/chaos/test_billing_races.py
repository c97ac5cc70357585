"""Billing's requests racing chaos (durability.md T9) and outbox delivery (I6).

While worker processes provision under the nemesis of ``test_chaos.py`` (SIGKILLs,
failpoints, 503s, lost answers, revoked sessions, failed installs), a billing thread in
this process sends random lifecycle requests through :class:`~dci6bridge.Provisioner`
(suspend, resume, close, reboot, reinstall; an ``InvalidRequest`` for one not allowed
now is expected), half of them aimed at services a worker holds at that moment, with
replayed request ids (must change nothing) and reused ids with another action (must
raise ``SpecMismatch``). It remembers billing's last accepted wish per service.

The workers deliver events to a callback that appends each one to a per-process file
(:func:`dci6bridge.testing.chaos.recording_worker`); afterwards the outbox is drained.

Then, with everything quiet:

* T9: every service rests as its last accepted request asked (or failed with a
  department task), is not runnable, ports match, closed ones hold nothing remotely
  (:func:`~dci6bridge.testing.chaos.check_requests`); I1-I5 hold;
* I6: every event ever written was delivered at least once, always with the same
  ``event_id``, and the outbox holds exactly the events the histories call for
  (:func:`~dci6bridge.testing.chaos.check_deliveries`).

The negative control runs the same with the workers' ``expected_desired_seq`` fence
dropped (``DCI6BRIDGE_CHAOS_UNSAFE_IGNORE_REQUESTS=1``): requests that land while a
worker holds the service are then lost, and the checker must say so.
"""

from __future__ import annotations

import collections
import random
import time
from typing import Any

import attrs
import pytest

from dci6bridge import InvalidRequest, SpecMismatch, open_store
from dci6bridge.stores import OutboxMsg, StatusStore
from dci6bridge.stores._codec import outbox_from_row
from dci6bridge.testing._faults import Faults
from dci6bridge.testing.chaos import (
    EVENT_CRASH_ENV,
    EVENT_LOG_ENV,
    UNSAFE_IGNORE_REQUESTS_ENV,
    DeliveryLog,
    EventRecorder,
    RemoteTruth,
    Violation,
    check_deliveries,
    check_requests,
    expected_events,
    read_deliveries,
)

ORDERS = 100
WORKERS = 6
LEASE_TTL = 2.0
#: Seconds billing sends requests (from the start, while the first services provision).
BILLING_SECONDS = 20.0
#: Probability that a worker dies right after billing's callback recorded an event
#: (before the acknowledgement): the event is delivered again.
EVENT_CRASH_RATE = 0.1
#: Services billing sends requests for (the rest are only opened).
TOUCHED = 0.7
RECORDING_WORKER = "dci6bridge.testing.chaos:recording_worker"
OTHER_TEMPLATE = "Debian 12"

FAULTS = Faults(
    unavailable_rate=0.02,
    unavailable_burst=2,
    lost_response_rate=0.03,
    lost_response_routes=(
        "users.create",
        "servers.set_owner",
        "servers.install_os",
        "servers.get",
        "switches.port_off",
        "switches.port_on",
        "servers.power_reset",
    ),
    latency_ms=(1.0, 5.0),
    install_failure_rate=0.02,
)

#: action → weight; close is terminal, so it is rarer
ACTIONS = {"suspend": 4.0, "resume": 3.0, "close": 0.5, "reboot": 2.0, "reinstall": 2.0}
#: what an accepted request makes billing wish for (reboot and reinstall keep "active")
WISH_OF = {"suspend": "suspended", "resume": "active", "close": "closed"}


@attrs.define
class Billing:
    """Billing's side of the run: random requests, remembered wishes and counts."""

    world: Any
    store_url: str
    seed: int
    seconds: float = BILLING_SECONDS
    aim: float = 0.5
    gap: tuple[float, float] = (0.0, 0.03)
    until_all: bool = True
    wishes: dict[str, str] = attrs.field(factory=dict)
    accepted: dict[str, list[tuple[str, str]]] = attrs.field(factory=dict)
    counts: collections.Counter[str] = attrs.field(factory=collections.Counter)
    errors: list[str] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.wishes = {o.service_id: "active" for o in self.world.orders}

    def __call__(self) -> None:
        rng = random.Random(self.seed)
        ids = [o.service_id for o in self.world.orders]
        touched = sorted(rng.sample(ids, int(len(ids) * TOUCHED)))
        store = open_store(self.store_url)
        try:
            with self.world.provisioner(store, worker_id="billing") as prov:
                start = time.monotonic()
                n = 0
                while self._going_on(time.monotonic() - start):
                    time.sleep(rng.uniform(*self.gap))
                    self._one(prov, store, rng, touched, n)
                    n += 1
        except Exception as exc:  # reported by the test, never swallowed
            self.errors.append(f"billing stopped: {type(exc).__name__}: {exc}")
        finally:
            store.close()

    def _going_on(self, elapsed: float) -> bool:
        # The window, and with ``until_all`` on a slow machine (services active late) on
        # until every kind of request was accepted once, within twice the window.
        if elapsed < self.seconds:
            return True
        every = all(self.counts[f"accepted_{action}"] for action in ACTIONS)
        return self.until_all and not every and elapsed < 2 * self.seconds

    def _one(
        self, prov: Any, store: StatusStore, rng: random.Random, touched: list[str], n: int
    ) -> None:
        sid = rng.choice(touched)
        if rng.random() < self.aim:
            # aim at a service a worker holds right now: the race under test
            now = store.now()
            held = [
                r.service_id
                for r in store.services()
                if r.lease_owner is not None and r.lease_until > now and r.service_id in touched
            ]
            if held:
                sid = rng.choice(held)
                self.counts["aimed"] += 1
        past = self.accepted.get(sid, [])
        roll = rng.random()
        if past and roll < 0.08:
            # the same request again (billing's retry, or a late duplicate): no effect
            request_id, action = rng.choice(past)
            self._send(prov, sid, action, request_id, replay=True)
        elif past and roll < 0.11:
            request_id, action = rng.choice(past)
            other = "resume" if action != "resume" else "suspend"
            self.counts["sent"] += 1
            try:
                self._call(prov, sid, other, request_id)
            except SpecMismatch:
                self.counts["mismatch"] += 1
            else:
                self.errors.append(f"{sid}: request id {request_id} reused for {other} accepted")
        else:
            action = rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
            row = store.get(sid)
            if (
                row is not None
                and row.state == row.desired == "active"
                and not row.data.get("action")
                and roll < 0.6
            ):
                # an active idle service: where reboot and reinstall are allowed
                action = rng.choice(["reboot", "reinstall"])
            self._send(prov, sid, action, f"b{self.seed}-{n}", replay=False)

    @staticmethod
    def _call(prov: Any, sid: str, action: str, request_id: str) -> None:
        if action == "reinstall":
            prov.reinstall(sid, OTHER_TEMPLATE, request_id=request_id)
        else:
            getattr(prov, action)(sid, request_id=request_id)

    def _send(self, prov: Any, sid: str, action: str, request_id: str, *, replay: bool) -> None:
        self.counts["sent"] += 1
        self.counts[f"sent_{action}"] += 1
        try:
            self._call(prov, sid, action, request_id)
        except InvalidRequest:
            self.counts["rejected"] += 1
            return
        except Exception as exc:
            self.errors.append(f"{sid}: {action} ({request_id}): {type(exc).__name__}: {exc}")
            return
        if replay:
            self.counts["replayed"] += 1
            return
        self.counts["accepted"] += 1
        self.counts[f"accepted_{action}"] += 1
        self.accepted.setdefault(sid, []).append((request_id, action))
        if action in WISH_OF:
            self.wishes[sid] = WISH_OF[action]


def outbox_ledger(store: Any) -> list[tuple[OutboxMsg, float | None]]:
    """Every event ever written to the outbox (delivered or not) and when it was
    acknowledged; read from the SQL backends' table (no store API lists it)."""
    with store._transaction(write=False) as tx:
        rows = tx.execute(f"SELECT * FROM {store._p}outbox ORDER BY id")
    return [(outbox_from_row(r), r["delivered_at"]) for r in rows]


def drain(world: Any, store: StatusStore, recorder: EventRecorder, *, wait: float) -> int:
    """Deliver what is left in the outbox (events claimed by killed workers come back
    after their claim expires) until every event is acknowledged."""
    delivered: int = 0
    deadline = time.monotonic() + wait
    with world.provisioner(store, worker_id="drain", on_event=recorder) as prov:
        while True:
            got: int = prov.deliver_events(limit=500)
            delivered += got
            if got:
                continue
            if all(at is not None for _, at in outbox_ledger(store)):
                return delivered
            if time.monotonic() > deadline:
                raise AssertionError("outbox not drained: events stay claimed or failing")
            time.sleep(0.1)


@attrs.define
class Outcome:
    """What one run found."""

    result: Any
    billing: Billing
    t9: list[Violation]
    i6: list[Violation]
    log: DeliveryLog
    #: (service, version) of the activation of every service that ended ACTIVE
    activated: set[tuple[str, int]]


def _run(chaos: Any, store_url: str | None, seed: int, *, unsafe: bool = False) -> Outcome:
    world = chaos.world(
        store_url,
        orders=ORDERS,
        install_duration=0.3,
        # the control widens the window between a worker's read and its write
        faults=attrs.evolve(FAULTS, latency_ms=(5.0, 15.0)) if unsafe else FAULTS,
        token_ttl=2.0,
        seed=seed,
        # one customer per service, so installs and users are told apart by email
        shared_customers_every=0,
    )
    url = store_url or world.store_url
    events_dir = world.dir / "events"
    events_dir.mkdir()
    billing = Billing(world, url, seed, aim=0.9 if unsafe else 0.5, until_all=not unsafe)
    extra_env = {EVENT_LOG_ENV: str(events_dir), EVENT_CRASH_ENV: str(EVENT_CRASH_RATE)}
    if unsafe:
        extra_env[UNSAFE_IGNORE_REQUESTS_ENV] = "1"
    started = time.monotonic()
    result = chaos.run(
        world,
        workers=WORKERS,
        failpoints="*=0.02",
        kill_every=(0.5, 1.0),
        lease_ttl=LEASE_TTL,
        # the unsafe run never settles (lost requests leave services runnable-less
        # in the wrong state): stop soon after billing is done
        budget=BILLING_SECONDS + 12.0 if unsafe else 150.0,
        expire_every=5,
        entry=RECORDING_WORKER,
        extra_env=extra_env,
        during=billing,
        check={"reinstall_state": "reinstalling", "installs_by_owner": True},
    )
    store = open_store(url)
    try:
        recorder = EventRecorder(events_dir / "events-final.log")
        try:
            drained = drain(world, store, recorder, wait=3 * LEASE_TTL + 5.0)
        finally:
            recorder.close()
        truth = RemoteTruth.from_fake(world.fake)
        t9 = check_requests(store, truth, billing.wishes, customer_emails=world.emails)
        ledger = outbox_ledger(store)
        log = read_deliveries(events_dir)
        expected = {sid: expected_events(store.history(sid)) for sid in billing.wishes}
        i6 = check_deliveries([m for m, _ in ledger], log.deliveries, expected)
        states = collections.Counter(r.state for r in store.services())
        activated = {
            (r.service_id, v)
            for r in store.services()
            if r.state == "active"
            for v, kind in expected[r.service_id]
            if kind == "activated"
        }
    finally:
        store.close()
    delivered_by_workers = sum(1 for d in log.deliveries if d.log != "events-final.log")
    figures = (
        f"billing: {dict(sorted(billing.counts.items()))}\n"
        f"events: written={len(ledger)} delivered={len(log.deliveries)} "
        f"(by workers {delivered_by_workers}, final drain {drained}) "
        f"duplicates={log.duplicates()} torn_lines={log.torn}\n"
        f"final states: {dict(sorted(states.items()))}; wall {time.monotonic() - started:.1f}s"
    )
    print(result.summary())
    print(figures)
    return Outcome(result, billing, t9, i6, log, activated)


def _show(violations: list[Violation], store_url: str, limit: int = 30) -> str:
    return "\n".join(str(v) for v in violations[:limit]) + f"\n(store {store_url})"


def _assert_clean(out: Outcome) -> None:
    result, billing = out.result, out.billing
    assert not billing.errors, billing.errors[:10]
    assert result.settled, f"not settled within the budget: {result.summary()}"
    assert result.report.ok, f"{result.summary()}\n{result.log}"
    assert not out.t9, _show(out.t9, "")
    assert not out.i6, _show(out.i6, "")
    # the nemesis struck, and the races were really run
    assert result.kills >= 5, result.summary()
    assert result.crashes >= 5, result.summary()
    for what, least in (("accepted", 100), ("rejected", 10), ("aimed", 50), ("replayed", 5),
                        ("mismatch", 3)):  # fmt: skip
        assert billing.counts[what] >= least, (what, billing.counts)
    for action in ("suspend", "resume", "close", "reboot", "reinstall"):
        assert billing.counts[f"accepted_{action}"] >= 1, (action, billing.counts)
    wished = collections.Counter(billing.wishes.values())
    assert wished["closed"] >= 3, wished
    assert wished["suspended"] >= 3, wished
    # every ACTIVE service's activated event reached billing, some of them twice
    delivered = {(d.service_id, d.version) for d in out.log.deliveries if d.kind == "activated"}
    assert out.activated
    assert out.activated <= delivered
    assert out.log.duplicates() >= 1


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_billing_races_sqlite(chaos: Any) -> None:
    _assert_clean(_run(chaos, None, seed=20291))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_billing_races_postgres(chaos: Any, pg_store_url: str) -> None:
    _assert_clean(_run(chaos, pg_store_url, seed=20292))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_without_the_request_fence_requests_are_lost(chaos: Any) -> None:
    """Negative control: workers whose writes ignore ``expected_desired_seq`` overwrite
    requests that arrive while they hold a service; the T9 checker must see it."""
    # A loss needs a request to land while a worker holds its service; how often that
    # happens depends on timing, so a run that happened to lose nothing is followed by
    # another seed (the check must catch the bug, not every run must contain it).
    summaries = []
    for seed in (20293, 20294, 20295):
        out = _run(chaos, None, seed=seed, unsafe=True)
        lost = [v for v in out.t9 if "request lost" in v.message]
        if lost:
            break
        summaries.append(out.result.summary())
    print(_show(lost, "", limit=5))
    assert lost, f"fence off, yet no request lost in {len(summaries)} runs: {summaries}"
    # the I1 check of the invariant checker sees the same services
    assert out.result.report.by_invariant().get("I1", 0) >= 1, out.result.summary()


def test_a_server_closed_while_suspended_comes_back_with_its_ports_on(
    chaos_hooks: Any,
) -> None:
    """What the T9 checker asks of every ACTIVE service (its data ports up), on a server
    that a suspended service gave back: the next customer gets it with ports on."""
    from dci6bridge import Order

    h = chaos_hooks
    fake, prov = h.in_process(servers=1)
    with prov:

        def order(n: int) -> Order:
            return Order(f"S{n}", "E3", h.OS_TEMPLATE, customer_email=f"c{n}@example.com")

        prov.open(order(1))
        prov.run_until_idle(advance=fake.advance)
        prov.suspend("S1")
        prov.run_until_idle(advance=fake.advance)
        server_id = prov.get("S1").server_id
        assert server_id is not None
        assert fake.state.servers[server_id].data_ports_up is False
        prov.close("S1")
        prov.run_until_idle(advance=fake.advance)
        prov.open(order(2))
        prov.run_until_idle(advance=fake.advance)
        again = prov.get("S2")
        assert again.state.value == "active"
        assert again.server_id == server_id
        assert fake.state.servers[server_id].data_ports_up is True
