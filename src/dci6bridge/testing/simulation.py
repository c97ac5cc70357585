"""Deterministic simulation of the orchestrator (durability.md T10).

One seed fully determines a run: several logical workers (each a real
:class:`~dci6bridge.Provisioner` with its own worker id) and billing (a logical actor
making ``open``, ``suspend``, ``resume``, ``close``, ``reinstall``, ``reboot`` and
``retry`` calls, with replays) share one status store and one in-process
:class:`~dci6bridge.testing.FakeDCImanager`. Each actor runs in its own thread, but only
one runs at a time: at every I/O boundary (every failpoint the orchestrator passes:
``before:<call>``, ``after:<call>``, ``after:store.<write>``), every sleep and every idle
pause the running actor hands control back to the scheduler, which picks the next actor
with the seeded RNG. Nothing else switches threads, so the interleaving, and with it
every store write and every simulated request, follows from the seed.

Time is virtual: the simulator's :class:`~dci6bridge.testing.ManualClock` is the clock
of the store, the provisioners and their clients; sleeps and idle pauses park an actor
until a virtual instant, and when no actor is ready the scheduler moves the clock to the
earliest wake-up (installs finish in simulated time, leases expire).

Faults come from the seed (:class:`FaultPlan`): crashes at failpoints (the worker raises
:class:`~dci6bridge.provisioning._failpoints.FailpointCrash`, abandons its lease and is
replaced by a fresh worker with a new id, as a restarted process would be), stalls past
the lease (the actor is parked for longer than its lease while the others go on), the
simulator's :class:`~dci6bridge.testing.Faults` (503s, lost answers after the effect,
expired tokens, failed installs, outsiders) and revoked sessions.

Afterwards a clean provisioner runs the reconciler and finishes what it handed over, the
outbox is drained, and the run is judged with :func:`~dci6bridge.testing.chaos.
check_invariants` (I1-I5), :func:`~dci6bridge.testing.chaos.check_requests` (T9: each
service as billing's last accepted request asked) and the delivered events (I6).

The trace (:attr:`SimulationResult.trace`: one line per step, actor and what it did)
and its :attr:`~SimulationResult.digest` are identical for identical seeds, in any
process; :meth:`SimulationResult.failure_message` shows the seed, the trace tail and the
offending services' histories.

This harness sits above the orchestrator, like billing code: it imports
:mod:`dci6bridge.provisioning` (the simulator it drives imports none of it).
"""

from __future__ import annotations

import collections
import concurrent.futures
import fnmatch
import hashlib
import itertools
import multiprocessing
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from dci6bridge.client import RetryPolicy
from dci6bridge.client._routes import ROUTES
from dci6bridge.connect import client_for
from dci6bridge.domain import Catalog, DataCenter, Order, ProcessingModule, Tariff
from dci6bridge.errors import ConfigError, Dci6BridgeError, InvalidRequest, SpecMismatch
from dci6bridge.provisioning import Provisioner, Worker
from dci6bridge.provisioning._failpoints import FAILPOINTS, FailpointCrash, Failpoints
from dci6bridge.provisioning.states import TRANSITIONS
from dci6bridge.stores.base import StatusStore
from dci6bridge.stores.memory import MemoryStore

from ._fake import FakeDCImanager
from ._faults import Faults
from .chaos import (
    InvariantReport,
    RemoteTruth,
    Violation,
    check_invariants,
    check_requests,
    expected_events,
    format_history,
)

__all__ = [
    "FaultPlan",
    "SimulationConfig",
    "SimulationError",
    "SimulationResult",
    "run_many",
    "run_simulation",
]

#: The configuration every simulated server has, and the tariff's OS templates.
CONFIGURATION = "E3-1230v6-64Gb-2x480SSD"
OS_TEMPLATES = ("Ubuntu 22.04", "Debian 12")
#: Routes whose answers a default plan loses after applying them: every call that
#: changes something in DCImanager (the orchestrator must read back before repeating
#: one), logins aside, and the server read the steps rely on.
LOST_ANSWER_ROUTES = frozenset(
    {name for name, r in ROUTES.items() if r.method != "GET" and not name.startswith("auth.")}
    | {"servers.get"}
)
#: The simulator's faults of a default plan: what the chaos suites inject, in virtual time.
DEFAULT_SIMULATOR_FAULTS = Faults(
    token_ttl=900.0,
    unavailable_rate=0.02,
    unavailable_burst=2,
    lost_response_rate=0.03,
    lost_response_routes=LOST_ANSWER_ROUTES,
    install_failure_rate=0.05,
    outsider_rate=0.02,
)

#: What an accepted billing request makes billing wish for (the others keep the wish).
_WISH_OF = {"suspend": "suspended", "resume": "active", "close": "closed"}
#: Billing's actions on an opened service, with weights (close is terminal: rarer).
_ACTIONS = {"suspend": 4.0, "resume": 3.0, "close": 0.7, "reboot": 2.0, "reinstall": 2.0}
#: Seconds two readings of the virtual clock may differ by through float rounding.
_EPSILON = 1e-6
#: States in which a service may start an OS install (a reinstall starts it before
#: moving on to ``installing_os``).
_INSTALLING = frozenset({"reinstalling", "installing_os"})
#: States whose recorded server may already be someone else's.
_LET_GO = frozenset({"terminating", "closed"})


class SimulationError(Dci6BridgeError):
    """The simulation itself could not go on (an actor blocked outside the scheduler)."""


@attrs.frozen(kw_only=True)
class FaultPlan:
    """The faults of a simulation, as probabilities the seed draws against.

    Attributes:
        crash: per failpoint a worker reaches: it dies there (``FailpointCrash``) and a
            fresh worker with a new id takes its place.
        crash_at: per-point crash probabilities that replace ``crash`` where they match
            (``fnmatch`` patterns of failpoint names, first match wins), to aim a run at
            one window: ``{"after:store.release_server": 0.5}``.
        billing_crash: per failpoint billing reaches (right after its request was
            written): billing's call dies there and billing repeats it, same request id.
        stall: per failpoint a worker reaches: it freezes for ``stall_leases`` lease
            lengths while the others go on.
        stall_leases: how long a stall lasts, in lease TTLs.
        expire_sessions: per step: every DCImanager session is revoked.
        event_crash: per event billing's callback receives in a worker: the worker
            dies right after it, before the event is acknowledged (redelivery).
        latency: ``(low, high)`` virtual seconds one step takes, drawn uniformly.
        simulator: the simulator's own faults (seeded by the run's seed).
    """

    crash: float = 0.01
    crash_at: Mapping[str, float] = attrs.field(factory=dict, converter=dict)
    billing_crash: float = 0.05
    stall: float = 0.003
    stall_leases: float = 1.5
    expire_sessions: float = 0.001
    event_crash: float = 0.05
    latency: tuple[float, float] = (0.001, 0.02)
    simulator: Faults = DEFAULT_SIMULATOR_FAULTS

    def __attrs_post_init__(self) -> None:
        problems = []
        for name in ("crash", "billing_crash", "stall", "expire_sessions", "event_crash"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                problems.append(f"FaultPlan.{name}: {value!r} is not a probability in [0, 1]")
        # checked at run time: callers may pass anything
        rules: Sequence[tuple[object, object]] = list(self.crash_at.items())
        for pattern, chance in rules:
            if not isinstance(pattern, str) or not any(
                fnmatch.fnmatchcase(p, pattern) for p in FAILPOINTS
            ):
                problems.append(f"FaultPlan.crash_at: {pattern!r} matches no failpoint")
            if not isinstance(chance, (int, float)) or not 0.0 <= chance <= 1.0:
                problems.append(
                    f"FaultPlan.crash_at[{pattern!r}]: {chance!r} is not a probability in [0, 1]"
                )
        stall: object = self.stall_leases
        if not isinstance(stall, (int, float)) or stall <= 1.0:
            problems.append(f"FaultPlan.stall_leases: {stall!r} must be above 1 (past the lease)")
        low, high = self.latency
        if not 0.0 <= low <= high:
            problems.append(f"FaultPlan.latency: need 0 <= low <= high, got {self.latency!r}")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def none(cls) -> FaultPlan:
        """No fault at all: only the interleaving varies with the seed."""
        return cls(
            crash=0.0,
            billing_crash=0.0,
            stall=0.0,
            expire_sessions=0.0,
            event_crash=0.0,
            simulator=Faults(),
        )


def _positive(name: str, low: float, *, integer: bool = False) -> Callable[..., None]:
    def check(instance: object, attribute: object, value: object) -> None:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value < low:
            what = "an int" if integer else "a number"
            raise ConfigError(f"SimulationConfig.{name}: {value!r} is not {what} >= {low:g}")

    return check


@attrs.frozen(kw_only=True)
class SimulationConfig:
    """The world and the actors of a simulation (everything but the seed and faults).

    Attributes:
        orders: services billing opens.
        workers: logical workers interleaved with each other and with billing.
        requests: billing's lifecycle requests after the opens (spread over the run).
        request_gap: mean virtual seconds between two of billing's calls.
        servers_per_location: servers of the tariff's configuration in each of the two
            locations (default: enough for every order, plus two).
        shared_customer_every: every n-th order reuses the previous order's customer
            (one DCImanager user owning two servers); ``0``: one customer per order.
        lease_ttl: the workers' lease, virtual seconds.
        poll_interval: seconds between install polls.
        install_duration: seconds an OS install takes in the simulator.
        idle_sleep: seconds an idle worker waits before it looks again.
        max_attempts: retryable failures of a step before the service fails.
        reconcile_every: seconds between the workers' reconciler sweeps (``0``: only
            the final sweep).
        max_steps: steps after which a run that has not settled is a liveness failure.
        store: ``clock -> StatusStore`` (default: a :class:`MemoryStore` on ``clock``);
            called once per run.
        unsafe_disable_fencing: **test-only**: the default store without fencing.
        unsafe_skip_readback: **test-only**: workers re-issue remote calls blindly.
        real_timeout_s: real seconds an actor may run without handing control back
            before the run stops with :class:`SimulationError` (it blocked outside the
            simulation: a real sleep, a lock, a busy database).
    """

    orders: int = attrs.field(default=10, validator=_positive("orders", 1, integer=True))
    workers: int = attrs.field(default=4, validator=_positive("workers", 1, integer=True))
    requests: int = attrs.field(default=20, validator=_positive("requests", 0, integer=True))
    request_gap: float = attrs.field(default=8.0, validator=_positive("request_gap", 0.0))
    servers_per_location: int | None = None
    shared_customer_every: int = attrs.field(
        default=3, validator=_positive("shared_customer_every", 0, integer=True)
    )
    lease_ttl: float = attrs.field(default=30.0, validator=_positive("lease_ttl", 1e-3))
    poll_interval: float = attrs.field(default=10.0, validator=_positive("poll_interval", 0.0))
    install_duration: float = attrs.field(
        default=40.0, validator=_positive("install_duration", 0.0)
    )
    idle_sleep: float = attrs.field(default=5.0, validator=_positive("idle_sleep", 1e-3))
    max_attempts: int = attrs.field(default=8, validator=_positive("max_attempts", 1, integer=True))
    reconcile_every: float = attrs.field(default=60.0, validator=_positive("reconcile_every", 0.0))
    max_steps: int = attrs.field(default=200_000, validator=_positive("max_steps", 1, integer=True))
    store: Callable[[Callable[[], float]], StatusStore] | None = None
    unsafe_disable_fencing: bool = False
    unsafe_skip_readback: bool = False
    real_timeout_s: float = attrs.field(default=60.0, validator=_positive("real_timeout_s", 1e-3))


@attrs.frozen
class SimulationResult:
    """What one seed did and what the checks found.

    Attributes:
        seed: the seed.
        trace: one line per step (``index actor what``), in order.
        digest: SHA-256 of the trace: equal digests mean identical runs.
        settled: every service came to rest before ``max_steps``.
        violations: every broken invariant (I1-I6, T9, and ``E`` for an exception
            that escaped a worker's tick or a billing call).
        report: the I1-I5 report of :func:`~dci6bridge.testing.chaos.check_invariants`.
        counts: what happened (steps, crashes, stalls, billing's requests, ...).
        history: service id → its formatted history (:func:`format_history`), for
            the services a violation names.
    """

    seed: int
    trace: tuple[str, ...]
    digest: str
    settled: bool
    violations: tuple[Violation, ...]
    report: InvariantReport
    counts: Mapping[str, int]
    history: Mapping[str, str]

    @property
    def ok(self) -> bool:
        """Settled and no violation."""
        return self.settled and not self.violations

    def summary(self) -> str:
        """One line: seed, digest prefix, verdict and counts."""
        verdict = "ok" if self.ok else f"FAILED ({len(self.violations)} violations)"
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return (
            f"seed={self.seed} digest={self.digest[:12]} {verdict} settled={self.settled} {counts}"
        )

    def failure_message(self, tail: int = 40) -> str:
        """The seed (and how to replay it), the violations, the last ``tail`` steps of
        the trace and the history of each offending service."""
        lines = [
            self.summary(),
            f"replay: DCI6BRIDGE_SIM_SEED={self.seed}",
            *(f"  {v}" for v in self.violations[:30]),
        ]
        if len(self.violations) > 30:
            lines.append(f"  ... and {len(self.violations) - 30} more")
        lines.append(f"trace tail ({min(tail, len(self.trace))} of {len(self.trace)} steps):")
        lines += [f"  {step}" for step in self.trace[-tail:]]
        for sid, text in self.history.items():
            lines.append(f"history of {sid}:")
            lines.append(text)
        return "\n".join(lines)


# --------------------------------------------------------------------------- actors


class _Stop(BaseException):
    """Unwinds an actor's thread at the end of a run."""


@attrs.frozen
class _Message:
    """What an actor says when it hands control back."""

    kind: str  # hit, sleep, idle, done, crashed, stopped, error
    point: str = ""
    seconds: float = 0.0
    error: BaseException | None = None


#: What an actor says when its thread ends.
_FINAL = frozenset({"done", "crashed", "stopped", "error"})


class _Fiber:
    """A function run in its own thread one slice at a time: :meth:`switch` runs it
    until it calls :meth:`pause` (or returns); exactly one of the two threads runs."""

    def __init__(self, name: str, body: Callable[[], None], timeout: float) -> None:
        self.name = name
        self._timeout = timeout
        self._body = body
        self._go = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self._reply = "go"
        self._message = _Message("done")
        self._thread = threading.Thread(target=self._main, name=f"sim-{name}", daemon=True)
        self.started = False
        self.finished = False
        #: switched to and not back yet (only after a timeout, seen from outside)
        self.running = False

    def _main(self) -> None:
        self._go.acquire()
        try:
            self._check_reply("start")
            self._body()
            message = _Message("done")
        except FailpointCrash as exc:
            message = _Message("crashed", point=exc.point)
        except _Stop:
            message = _Message("stopped")
        except BaseException as exc:  # reported as a finding, never swallowed
            message = _Message("error", error=exc)
        self.finished = True
        self._message = message
        self._back.release()

    def switch(self, reply: str = "go") -> _Message:
        """Run the fiber until it pauses; ``reply`` is what its pending :meth:`pause`
        does: ``go`` returns, ``crash`` raises ``FailpointCrash``, ``stop`` unwinds."""
        if self.finished:
            raise SimulationError(f"actor {self.name} has finished")
        self._reply = reply
        if not self.started:
            self.started = True
            self._thread.start()
        self._go.release()
        self.running = True
        if not self._back.acquire(timeout=self._timeout):
            # left running: stopping it would only wait for it again
            raise SimulationError(
                f"actor {self.name} ran {self._timeout:g} s of real time without "
                "yielding: it blocked outside the simulation"
            )
        self.running = False
        message = self._message
        if message.kind in _FINAL:
            self._thread.join(timeout=self._timeout)
        return message

    def pause(self, message: _Message) -> None:
        """Hand control back to the scheduler (called in the fiber's own thread)."""
        self._message = message
        self._back.release()
        self._go.acquire()
        self._check_reply(message.point)

    def _check_reply(self, point: str) -> None:
        if self._reply == "crash":
            raise FailpointCrash(point)
        if self._reply == "stop":
            raise _Stop()


class _Hooks(Failpoints):
    """Failpoints that yield to the scheduler at every point the orchestrator passes."""

    def __init__(self, fiber: Callable[[], _Fiber]) -> None:
        super().__init__()
        self._fiber = fiber

    def hit(self, point: str) -> None:
        """Yield at ``point``; the scheduler may crash the actor here."""
        self._fiber().pause(_Message("hit", point=point))


@attrs.define
class _Actor:
    name: str
    kind: str  # worker or billing
    fiber: _Fiber
    wake_at: float
    idle: bool = False


# --------------------------------------------------------------------------- world


def _catalog(fake: FakeDCImanager) -> Catalog:
    """Two data centers (one per simulator location), a module in each (the first
    sorts first), one tariff sold by both."""
    centers = [DataCenter(name=f"DC{n}", location_id=n, sort=n) for n in (1, 2)]
    modules = [
        ProcessingModule(
            name=f"dci-{dc.location_id}",
            data_center=dc,
            url=fake.url,
            username=fake.admin_email,
            password=fake.admin_password,
            department=f"Support-{dc.location_id}",
            sort=dc.sort,
        )
        for dc in centers
    ]
    tariff = Tariff(
        name="E3",
        configuration=CONFIGURATION,
        os_templates=OS_TEMPLATES,
        modules=tuple(m.name for m in modules),
    )
    return Catalog(data_centers=centers, modules=modules, tariffs=[tariff])


def _orders(config: SimulationConfig) -> list[Order]:
    out = []
    customer = 0
    for i in range(config.orders):
        every = config.shared_customer_every
        if not (every and i and i % every == 0):
            customer += 1
        out.append(
            Order(
                service_id=f"SIM-{i:03d}",
                tariff="E3",
                os_template=OS_TEMPLATES[0],
                customer_email=f"customer{customer}@example.com",
            )
        )
    return out


@attrs.define
class _Billing:
    """Billing's side: its script, drawn from its own RNG as the run goes."""

    prov: Provisioner
    orders: list[Order]
    config: SimulationConfig
    rng: random.Random
    note: Callable[[str], None]
    sleep: Callable[[float], object]
    wishes: dict[str, str] = attrs.field(factory=dict)
    accepted: dict[str, list[tuple[str, str]]] = attrs.field(factory=dict)
    counts: collections.Counter[str] = attrs.field(factory=collections.Counter)
    errors: list[Violation] = attrs.field(factory=list)

    def __call__(self) -> None:
        pending = list(self.orders)
        opened: list[str] = []
        n = 0
        while pending or n < self.config.requests:
            self.sleep(self.rng.expovariate(1.0 / self.config.request_gap))
            # opens come first on average, but requests start while orders still arrive
            if pending and (not opened or self.rng.random() < 0.6 or n >= self.config.requests):
                order = pending.pop(0)
                self._open(order)
                opened.append(order.service_id)
                continue
            failed = [sid for sid in opened if self._state(sid) == "failed"]
            if failed and self.rng.random() < 0.5:
                # the operator looks at the department task and retries
                self._send(self.rng.choice(failed), "retry", f"r{n}", replay=False)
            else:
                self._request(self._aim(opened), n)
            n += 1

    def _open(self, order: Order) -> None:
        self._retrying(f"open {order.service_id}", lambda: self.prov.open(order))
        self.wishes[order.service_id] = "active"
        self.counts["opened"] += 1
        if self.rng.random() < 0.1:
            # billing's retry of a timed-out open: the same service comes back
            self._retrying(f"open {order.service_id} again", lambda: self.prov.open(order))
            self.counts["reopened"] += 1
        if self.rng.random() < 0.05:
            other = attrs.evolve(order, os_template=OS_TEMPLATES[1])
            try:
                self.prov.open(other)
            except SpecMismatch:
                self.counts["mismatch"] += 1
            else:
                self._error(order.service_id, "an open with another order was accepted")

    def _state(self, sid: str) -> str | None:
        row = self.prov.store.get(sid)
        return None if row is None else row.state

    def _retrying(self, what: str, call: Callable[[], object]) -> object:
        """Billing repeats a call that died after writing (its process crashed, or the
        answer was lost) until it returns: the same request, the same id."""
        for _ in range(100):
            try:
                return call()
            except FailpointCrash as exc:
                self.counts["billing_crashes"] += 1
                self.note(f"crashed at {exc.point} during {what}; repeating")
        raise SimulationError(f"billing: {what} crashed 100 times")

    def _aim(self, opened: list[str]) -> str:
        """Half the time a service a worker holds right now: the race under test."""
        if self.rng.random() < 0.5:
            store = self.prov.store
            now = store.now()
            held = [
                row.service_id
                for row in store.services()
                if row.service_id in opened
                and row.lease_owner is not None
                and row.lease_until > now
            ]
            if held:
                self.counts["aimed"] += 1
                return self.rng.choice(held)
        return self.rng.choice(opened)

    def _request(self, sid: str, n: int) -> None:
        past = self.accepted.get(sid, [])
        roll = self.rng.random()
        row = self.prov.store.get(sid)
        if past and roll < 0.08:
            request_id, action = self.rng.choice(past)
            self._send(sid, action, request_id, replay=True)
            return
        if past and roll < 0.11:
            request_id, action = self.rng.choice(past)
            other = "resume" if action != "resume" else "suspend"
            self.counts["sent"] += 1
            try:
                self._call(sid, other, request_id)
            except SpecMismatch:
                self.counts["mismatch"] += 1
            except FailpointCrash:
                self._error(sid, f"request id {request_id} reused for {other} was written")
            else:
                self._error(sid, f"request id {request_id} reused for {other} was accepted")
            return
        action = self.rng.choices(list(_ACTIONS), weights=list(_ACTIONS.values()))[0]
        if (
            row is not None
            and row.state == row.desired == "active"
            and not row.data.get("action")
            and roll < 0.6
        ):
            action = self.rng.choice(["reboot", "reinstall"])
        self._send(sid, action, f"r{n}", replay=False)

    def _call(self, sid: str, action: str, request_id: str) -> object:
        if action == "reinstall":
            return self.prov.reinstall(sid, OS_TEMPLATES[1], request_id=request_id)
        method: Callable[..., object] = getattr(self.prov, action)
        return method(sid, request_id=request_id)

    def _send(self, sid: str, action: str, request_id: str, *, replay: bool) -> None:
        self.counts["sent"] += 1
        try:
            self._retrying(
                f"{action} {sid} ({request_id})", lambda: self._call(sid, action, request_id)
            )
        except InvalidRequest:
            self.counts["rejected"] += 1
            return
        except Exception as exc:
            self._error(sid, f"{action} ({request_id}) raised {type(exc).__name__}: {exc}")
            return
        if replay:
            self.counts["replayed"] += 1
            return
        self.counts[f"accepted_{action}"] += 1
        self.accepted.setdefault(sid, []).append((request_id, action))
        if action in _WISH_OF:
            self.wishes[sid] = _WISH_OF[action]

    def _error(self, sid: str, message: str) -> None:
        self.errors.append(Violation("E", sid, f"billing: {message}"))


class _Run:
    """One seed's run: the world, the actors and the scheduler loop."""

    def __init__(self, seed: int, config: SimulationConfig, faults: FaultPlan) -> None:
        self.seed = seed
        self.config = config
        self.faults = faults
        per_location = config.servers_per_location
        if per_location is None:
            per_location = config.orders // 2 + 2
        self.fake = FakeDCImanager.with_inventory(
            locations=2,
            servers_per_location=per_location,
            configurations=(CONFIGURATION,),
            os_templates=OS_TEMPLATES,
            install_duration=config.install_duration,
            seed=seed,
            faults=faults.simulator,
        )
        clock: Any = self.fake.clock
        self.clock = clock
        self.start = clock.now()
        self.catalog = _catalog(self.fake)
        self.orders = _orders(config)
        if config.store is not None:
            self.store = config.store(clock.now)
        else:
            self.store = MemoryStore(
                clock=clock.now, unsafe_disable_fencing=config.unsafe_disable_fencing
            )
        self.choose = random.Random(f"{seed}:schedule")
        self.dice = random.Random(f"{seed}:faults")
        self.trace: list[str] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.violations: list[Violation] = []
        self.deliveries: list[tuple[str, str, int, str]] = []
        self.actors: list[_Actor] = []
        self.incarnations: collections.Counter[str] = collections.Counter()
        self.current: _Actor | None = None

    # ------------------------------------------------------------------ building actors
    def _note(self, actor: str, what: str) -> None:
        self.trace.append(f"{len(self.trace)} t={self.clock.now() - self.start:.6f} {actor} {what}")

    def _sleep_of(self, actor: Callable[[], _Actor]) -> Callable[[float], None]:
        def sleep(seconds: float) -> None:
            actor().fiber.pause(_Message("sleep", seconds=max(0.0, float(seconds))))

        return sleep

    def _provisioner(self, name: str, actor: Callable[[], _Actor]) -> Provisioner:
        ttl = self.config.lease_ttl
        sleep = self._sleep_of(actor)
        budget = ttl / 3

        def client(module: ProcessingModule) -> Any:
            # no jitter: a backoff drawn from the global RNG would not replay
            return client_for(
                module,
                transport=self.fake.transport,
                clock=self.clock.now,
                sleep=sleep,
                retry=RetryPolicy(jitter=False, deadline=min(60.0, budget)),
                timeout=min(30.0, budget),
            )

        return Provisioner(
            self.catalog,
            self.store,
            client_factory=client,
            clock=self.clock.now,
            sleep=sleep,
            rng=random.Random(f"{self.seed}:{name}"),
            worker_id=name,
            lease_ttl=ttl,
            poll_interval=self.config.poll_interval,
            max_attempts=self.config.max_attempts,
            on_event=self._delivered_then_maybe_die,
            failpoints=_Hooks(lambda: actor().fiber),
            unsafe_skip_readback=self.config.unsafe_skip_readback,
        )

    def _delivered(self, event: Any) -> None:
        self.deliveries.append((event.event_id, event.service_id, event.version, event.kind))

    def _delivered_then_maybe_die(self, event: Any) -> None:
        """Billing's callback in a worker: recorded, then perhaps the worker dies before
        the relay acknowledges it (the event must come again)."""
        self._delivered(event)
        if self.dice.random() < self.faults.event_crash:
            self.counts["event_crashes"] += 1
            raise FailpointCrash("after:billing.event")

    def _fiber(self, name: str, body: Callable[[], None]) -> _Fiber:
        return _Fiber(name, body, self.config.real_timeout_s)

    def _new_worker(self, slot: int) -> _Actor:
        base = f"w{slot}"
        self.incarnations[base] += 1
        name = f"{base}.{self.incarnations[base]}"
        holder: list[_Actor] = []
        prov = self._provisioner(name, lambda: holder[0])
        worker = Worker(
            prov,
            idle_sleep=self.config.idle_sleep,
            reconcile_every=self.config.reconcile_every,
            prune_every=0.0,
            clock=self.clock.now,
        )

        def body() -> None:
            while True:
                try:
                    worked = worker.run_once()
                except Exception as exc:  # Worker's own loop logs these and goes on
                    self.violations.append(
                        Violation("E", None, f"{name}: tick raised {type(exc).__name__}: {exc}")
                    )
                    worked = 0
                if not worked:
                    holder[0].idle = True
                    holder[0].fiber.pause(_Message("idle", seconds=self.config.idle_sleep))
                    holder[0].idle = False

        actor = _Actor(name, "worker", self._fiber(name, body), self.clock.now())
        holder.append(actor)
        return actor

    def _new_billing(self) -> tuple[_Actor, _Billing]:
        holder: list[_Actor] = []
        prov = self._provisioner("billing", lambda: holder[0])
        billing = _Billing(
            prov,
            self.orders,
            self.config,
            random.Random(f"{self.seed}:billing"),
            note=lambda what: self._note("billing", what),
            sleep=self._sleep_of(lambda: holder[0]),
        )
        actor = _Actor("billing", "billing", self._fiber("billing", billing), self.clock.now())
        holder.append(actor)
        return actor, billing

    # ------------------------------------------------------------------ the scheduler
    def run(self) -> SimulationResult:
        billing_actor, billing = self._new_billing()
        self.actors = [billing_actor] + [
            self._new_worker(i) for i in range(1, self.config.workers + 1)
        ]
        settled = False
        try:
            settled = self._loop()
        finally:
            self._stop_all()
        self._finish()
        return self._judge(billing, settled)

    def _loop(self) -> bool:
        for _ in range(self.config.max_steps):
            now = self.clock.now()
            ready = [a for a in self.actors if a.wake_at <= now]
            if not ready:
                if self._quiet():
                    return True
                wake = min(a.wake_at for a in self.actors)
                self.fake.advance(wake - now)
                continue
            actor = self.choose.choice(ready)
            self._step(actor)
            if self.faults.expire_sessions and self.dice.random() < self.faults.expire_sessions:
                self.counts["sessions_revoked"] += self.fake.expire_tokens()
                self._note("nemesis", "revoke sessions")
        self.counts["step_limit"] += 1
        return False

    def _quiet(self) -> bool:
        """Billing is done, every worker idles, and every service rests."""
        if any(a.kind == "billing" for a in self.actors):
            return False
        if not all(a.idle for a in self.actors):
            return False
        return not any(row.runnable for row in self.store.services())

    def _step(self, actor: _Actor, reply: str = "go") -> None:
        self.counts["steps"] += 1
        message = actor.fiber.switch(reply)
        low, high = self.faults.latency
        if high > 0:
            self.clock.advance(self.dice.uniform(low, high))
        now = self.clock.now()
        if message.kind == "hit":
            self._note(actor.name, message.point)
            self._hit(actor, message.point)
        elif message.kind in ("sleep", "idle"):
            self._note(actor.name, f"{message.kind} {message.seconds:.3f}")
            actor.wake_at = now + message.seconds
        elif message.kind == "done":
            self._note(actor.name, "done")
            self.actors.remove(actor)
        elif message.kind == "crashed":
            self._note(actor.name, f"CRASHED at {message.point}")
            self._replace(actor)
        elif message.kind == "error":
            error = message.error
            self._note(actor.name, f"ERROR {type(error).__name__}")
            if isinstance(error, SimulationError):
                raise error
            self.violations.append(
                Violation("E", None, f"{actor.name} died of {type(error).__name__}: {error}")
            )
            self._replace(actor)
        else:  # pragma: no cover - stopped only happens in _stop_all
            raise SimulationError(f"unexpected message {message!r} from {actor.name}")

    def _hit(self, actor: _Actor, point: str) -> None:
        if point.startswith("after:store.transition") or point == "after:store.reserve_server":
            self._check_claims(point)
        if point == "after:store.transition:active":
            self._check_active(point)
        if actor.kind == "billing":
            if self.dice.random() < self.faults.billing_crash:
                self._step(actor, "crash")
            return
        if self.dice.random() < self._crash_probability(point):
            self.counts["crashes"] += 1
            self._step(actor, "crash")
            return
        if self.dice.random() < self.faults.stall:
            self.counts["stalls"] += 1
            stall = self.faults.stall_leases * self.config.lease_ttl
            self._note(actor.name, f"STALL {stall:.1f}")
            actor.wake_at = self.clock.now() + stall

    def _check_active(self, point: str) -> None:
        """Active means ready, the moment a service becomes active (and for every other
        active one then): its server is owned by its customer and its last operation
        ended well (no install still running or failed)."""
        emails = {o.service_id: o.customer_email.strip().lower() for o in self.orders}
        servers = self.fake.state.servers
        for row in self.store.services(["active"]):
            server = servers.get(row.server_id) if row.server_id is not None else None
            owner = (server.owner_email or "").lower() if server is not None else None
            if server is None or owner != emails.get(row.service_id):
                problem = f"server {row.server_id} is owned by {owner!r}"
            elif server.operation_status != "ok":
                problem = (
                    f"server {row.server_id}'s {server.operation_kind} operation is "
                    f"{server.operation_status}"
                )
            else:
                continue
            self.violations.append(
                Violation(
                    "I1",
                    row.service_id,
                    f"step {len(self.trace) - 1} ({point}): active, but {problem}",
                )
            )

    def _crash_probability(self, point: str) -> float:
        for pattern, probability in self.faults.crash_at.items():
            if fnmatch.fnmatchcase(point, pattern):
                return probability
        return self.faults.crash

    def _check_claims(self, point: str) -> None:
        """Store-side I3 at every step that may change it: no server recorded by two
        services that use it (a terminating service keeps recording the server it has
        already given back, which another may take)."""
        holders: dict[int, list[str]] = collections.defaultdict(list)
        for row in self.store.services():
            if row.server_id is not None and row.state not in _LET_GO:
                holders[row.server_id].append(row.service_id)
        for server_id, sids in sorted(holders.items()):
            if len(sids) > 1:
                self.violations.append(
                    Violation(
                        "I3",
                        sids[0],
                        f"step {len(self.trace) - 1} ({point}): server {server_id} recorded "
                        f"by {sorted(sids)}",
                    )
                )

    def _replace(self, actor: _Actor) -> None:
        index = self.actors.index(actor)
        if actor.kind == "billing":  # pragma: no cover - billing catches its crashes
            raise SimulationError("billing died")
        slot = int(actor.name[1:].split(".")[0])
        self.actors[index] = self._new_worker(slot)

    def _stop_all(self) -> None:
        for actor in self.actors:
            # a handler on the way out may pass another failpoint: stop it again there
            for _ in range(100):
                if not actor.fiber.started or actor.fiber.finished or actor.fiber.running:
                    break
                actor.fiber.switch("stop")

    # ------------------------------------------------------------------ judging
    def _finish(self) -> None:
        """What an operator does once the dust settles: the reconciler, a clean pass for
        what it handed over, the outbox drained (events a dead worker held come back
        after their claim expires)."""
        self.fake.faults = Faults()
        prov = Provisioner(
            self.catalog,
            self.store,
            transport=self.fake.transport,
            clock=self.clock.now,
            sleep=self.fake.advance,
            rng=random.Random(f"{self.seed}:final"),
            worker_id="final",
            lease_ttl=self.config.lease_ttl,
            poll_interval=self.config.poll_interval,
            on_event=self._delivered,
            failpoints=Failpoints(),
        )
        with prov:
            # leases of workers that died at the very end expire first
            self.fake.advance(self.config.lease_ttl * 2)
            report = prov.reconcile()
            self.counts["orphans_reported"] += len(report.orphans)
            prov.run_until_idle(max_ticks=2000, advance=self.fake.advance)
            for _ in range(20):
                if not prov.deliver_events(limit=1000):
                    self.fake.advance(self.config.lease_ttl)
                    if not prov.deliver_events(limit=1000):
                        break

    def _judge(self, billing: _Billing, settled: bool) -> SimulationResult:
        emails = {o.service_id: o.customer_email.lower() for o in self.orders}
        truth = RemoteTruth.from_fake(self.fake)
        report = check_invariants(
            self.store,
            truth,
            customer_emails=emails,
            allowed={s.value: {t.value for t in to} for s, to in TRANSITIONS.items()},
            reinstall_state="reinstalling",
            installs_by_owner=True,
            count_installs=False,
        )
        violations = list(self.violations) + list(billing.errors) + list(report.violations)
        # an outsider taking a server we gave back is the world moving on, not a leak
        ours = set(emails.values())
        owners = {
            k: (v if v is None or v.lower() in ours else None) for k, v in truth.owners.items()
        }
        violations += check_requests(
            self.store, attrs.evolve(truth, owners=owners), billing.wishes, customer_emails=emails
        )
        violations += self._check_events()
        violations += self._check_installs()
        self.counts.update(billing.counts)
        self.counts["workers_started"] = sum(self.incarnations.values())
        self.counts["events_delivered"] = len(self.deliveries)
        self.counts["virtual_seconds"] = int(self.clock.now() - self.start)
        for row in self.store.services():
            self.counts[f"final_{row.state}"] += 1
        history = {sid: format_history(self.store, sid) for sid in self._offenders(violations)}
        # the outcome is part of what must replay, not only the schedule
        for row in self.store.services():
            self._note(
                "final", f"{row.service_id} {row.state} v{row.version} server={row.server_id}"
            )
        self._note(
            "final",
            f"owners {sorted(truth.owners.items())} installs {sorted(truth.installs.items())}",
        )
        digest = hashlib.sha256("\n".join(self.trace).encode()).hexdigest()
        return SimulationResult(
            seed=self.seed,
            trace=tuple(self.trace),
            digest=digest,
            settled=settled,
            violations=tuple(violations),
            report=report,
            counts=dict(self.counts),
            history=history,
        )

    def _offenders(self, violations: list[Violation], limit: int = 3) -> list[str]:
        """The first ``limit`` services a violation names, each followed by the other
        services that once recorded its server (the culprit is often one of those)."""
        named: dict[str, None] = {}
        for v in violations:
            if v.service_id is not None:
                named.setdefault(v.service_id, None)
        out: dict[str, None] = {}
        for sid in list(named)[:limit]:
            out.setdefault(sid, None)
            row = self.store.get(sid)
            if row is None or row.server_id is None:
                continue
            for other in self.store.services():
                if other.service_id != sid and any(
                    row.server_id in (t.detail.get("server_id"), t.detail.get("released_claim"))
                    for t in self.store.history(other.service_id)
                ):
                    out.setdefault(other.service_id, None)
        return list(out)

    def _check_installs(self) -> list[Violation]:
        """I4 per install, in place of counting installs per owner (two services of
        one customer may hold one server one after the other): every OS install
        started in DCImanager falls in a stay of a service on that server in
        ``reinstalling`` / ``installing_os`` (from the transition in to the transition
        out), and no stay holds two."""
        stays: dict[int, list[tuple[float, float, str]]] = collections.defaultdict(list)
        for row in self.store.services():
            server: int | None = None
            began: float | None = None
            for t in self.store.history(row.service_id):
                if t.detail.get("server_id") is not None:
                    server = int(t.detail["server_id"])
                if t.to_state in _INSTALLING and began is None:
                    began = t.at
                elif t.to_state not in _INSTALLING and began is not None:
                    if server is not None:
                        stays[server].append((began, t.at, row.service_id))
                    began = None
            if began is not None and server is not None:
                stays[server].append((began, float("inf"), row.service_id))
        out: list[Violation] = []
        per_stay: collections.Counter[tuple[str, float]] = collections.Counter()
        for install in self.fake.state.installs:
            when = install.started_at
            # transition times are the store clock carried forward by the worker:
            # equal to the simulator's clock up to rounding
            holders = [
                (sid, start)
                for start, end, sid in stays.get(install.server_id, ())
                if start - _EPSILON <= when <= end + _EPSILON
            ]
            if not holders:
                out.append(
                    Violation(
                        "I4",
                        None,
                        f"OS install on server {install.server_id} at "
                        f"t={when - self.start:.3f} (owner {install.owner_email!r}) was "
                        "started outside every installing stay on that server",
                    )
                )
            per_stay.update(holders)
        for (sid, start), n in sorted(per_stay.items()):
            if n > 1:
                out.append(
                    Violation(
                        "I4",
                        sid,
                        f"{n} OS installs in one installing stay (from t={start - self.start:.3f})",
                    )
                )
        return out

    def _check_events(self) -> list[Violation]:
        """I6: each event a history calls for was delivered, always with one event id,
        and nothing else was."""
        out: list[Violation] = []
        ids: dict[tuple[str, int, str], set[str]] = collections.defaultdict(set)
        for event_id, sid, version, kind in self.deliveries:
            ids[(sid, version, kind)].add(event_id)
        want = {
            (o.service_id, version, kind)
            for o in self.orders
            for version, kind in expected_events(self.store.history(o.service_id))
        }
        for key in sorted(want - set(ids)):
            out.append(Violation("I6", key[0], f"v{key[1]} {key[2]!r} event never delivered"))
        for key in sorted(set(ids) - want):
            out.append(
                Violation("I6", key[0], f"v{key[1]} {key[2]!r} delivered, no such transition")
            )
        for key, got in sorted(ids.items()):
            if len(got) > 1:
                out.append(Violation("I6", key[0], f"v{key[1]} {key[2]!r} under ids {sorted(got)}"))
        return out


def run_many(
    seeds: Iterable[int],
    config: SimulationConfig | None = None,
    faults: FaultPlan | None = None,
    *,
    processes: int = 1,
) -> list[SimulationResult]:
    """:func:`run_simulation` for each seed, in seed order; with ``processes > 1`` in
    that many worker processes (each seed's run is the same in any process). The
    ``config`` and ``faults`` are then sent to the processes, so a custom
    ``SimulationConfig.store`` must be picklable (a module-level function)."""
    chosen = list(seeds)
    given: object = processes  # checked at run time: callers may pass anything
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise ConfigError(f"processes: {given!r} is not an int >= 1")
    if processes == 1 or len(chosen) < 2:
        return [run_simulation(seed, config, faults) for seed in chosen]
    # forkserver: children start from a clean process, not from a copy of a parent
    # whose other threads may hold locks
    context = multiprocessing.get_context("forkserver")
    workers = min(processes, len(chosen))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        runs = pool.map(
            run_simulation,
            chosen,
            itertools.repeat(config),
            itertools.repeat(faults),
            chunksize=max(1, len(chosen) // (workers * 8)),
        )
        return list(runs)


def run_simulation(
    seed: int,
    config: SimulationConfig | None = None,
    faults: FaultPlan | None = None,
) -> SimulationResult:
    """Run one seed of the deterministic simulation and judge it.

    The same ``seed``, ``config`` and ``faults`` give the same
    :attr:`SimulationResult.trace` (and digest), in this process or any other. A
    :class:`SimulationError` means the harness itself could not go on.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: {seed!r} is not an int")
    run = _Run(seed, config or SimulationConfig(), faults or FaultPlan())
    try:
        return run.run()
    finally:
        run.store.close()
