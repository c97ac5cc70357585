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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from dci6bridge.client import RetryPolicy
from dci6bridge.client._routes import ROUTES
from dci6bridge.connect import client_for
from dci6bridge.domain import ProcessingModule
from dci6bridge.errors import ConfigError, SimulationError
from dci6bridge.provisioning import Provisioner, Worker
from dci6bridge.provisioning._failpoints import FAILPOINTS, FailpointCrash, Failpoints
from dci6bridge.provisioning.states import TRANSITIONS
from dci6bridge.stores.base import StatusStore
from dci6bridge.stores.memory import MemoryStore

from ._fake import FakeDCImanager
from ._faults import Faults
from ._filters import parse_limit
from ._sim_billing import Billing
from ._sim_checks import active_not_ready, deliveries, install_stays, offenders, shared_servers
from ._sim_fiber import Fiber, Hooks, Message
from ._sim_world import CONFIGURATION, OS_TEMPLATES, catalog, orders
from .chaos import (
    InvariantReport,
    RemoteTruth,
    Violation,
    check_invariants,
    check_requests,
    format_history,
)

__all__ = [
    "FaultPlan",
    "SimulationConfig",
    "SimulationResult",
    "run_many",
    "run_simulation",
]

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


def _point_rules(name: str, given: Mapping[str, float]) -> list[str]:
    """Problems of a ``{failpoint pattern: probability}`` field of :class:`FaultPlan`."""
    problems = []
    # checked at run time: callers may pass anything
    rules: Sequence[tuple[object, object]] = list(given.items())
    for pattern, chance in rules:
        if not isinstance(pattern, str) or not any(
            fnmatch.fnmatchcase(p, pattern) for p in FAILPOINTS
        ):
            problems.append(f"FaultPlan.{name}: {pattern!r} matches no failpoint")
        if not isinstance(chance, (int, float)) or not 0.0 <= chance <= 1.0:
            problems.append(
                f"FaultPlan.{name}[{pattern!r}]: {chance!r} is not a probability in [0, 1]"
            )
    return problems


def _chance(point: str, rules: Mapping[str, float], default: float) -> float:
    """The probability of the first rule whose pattern matches ``point``, else ``default``."""
    for pattern, probability in rules.items():
        if fnmatch.fnmatchcase(point, pattern):
            return probability
    return default


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
        stall_at: per-point stall probabilities that replace ``stall`` where they match
            (as ``crash_at``), e.g. right before the non-idempotent calls:
            ``{"before:users.create": 0.3, "before:servers.install_os": 0.3}``.
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
    stall_at: Mapping[str, float] = attrs.field(factory=dict, converter=dict)
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
        problems += _point_rules("crash_at", self.crash_at)
        problems += _point_rules("stall_at", self.stall_at)
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
    servers_per_location: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(_positive("servers_per_location", 1, integer=True)),
    )
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
            f"replay: run_simulation({self.seed}, <same config and faults>); with the "
            f"defaults, DCI6BRIDGE_SIM_SEED={self.seed} pytest tests/simulation -k test_seeds",
            *(f"  {v}" for v in self.violations[:30]),
        ]
        if len(self.violations) > 30:
            lines.append(f"  ... and {len(self.violations) - 30} more")
        shown = self.trace[max(0, len(self.trace) - tail) :]
        lines.append(f"trace tail ({len(shown)} of {len(self.trace)} steps):")
        lines += [f"  {step}" for step in shown]
        for sid, text in self.history.items():
            lines.append(f"history of {sid}:")
            lines.append(text)
        return "\n".join(lines)


# --------------------------------------------------------------------------- actors


@attrs.define
class _Actor:
    name: str
    kind: str  # worker or billing
    fiber: Fiber
    wake_at: float
    idle: bool = False


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
        self.catalog = catalog(self.fake)
        self.orders = orders(config.orders, config.shared_customer_every)
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

    # ------------------------------------------------------------------ building actors
    def _note(self, actor: str, what: str) -> None:
        self.trace.append(f"{len(self.trace)} t={self.clock.now() - self.start:.6f} {actor} {what}")

    def _sleep_of(self, actor: Callable[[], _Actor]) -> Callable[[float], None]:
        def sleep(seconds: float) -> None:
            actor().fiber.pause(Message("sleep", seconds=max(0.0, float(seconds))))

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
            failpoints=Hooks(lambda: actor().fiber),
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

    def _fiber(self, name: str, body: Callable[[], None]) -> Fiber:
        return Fiber(name, body, self.config.real_timeout_s)

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
                    holder[0].fiber.pause(Message("idle", seconds=self.config.idle_sleep))
                    holder[0].idle = False

        actor = _Actor(name, "worker", self._fiber(name, body), self.clock.now())
        holder.append(actor)
        return actor

    def _new_billing(self) -> tuple[_Actor, Billing]:
        holder: list[_Actor] = []
        prov = self._provisioner("billing", lambda: holder[0])
        billing = Billing(
            prov,
            self.orders,
            self.config.requests,
            self.config.request_gap,
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
            self.violations += shared_servers(self.store, self._where(point))
        if point == "after:store.transition:active":
            emails = {o.service_id: o.customer_email.strip().lower() for o in self.orders}
            self.violations += active_not_ready(self.store, self.fake, emails, self._where(point))
        if actor.kind == "billing":
            if self.dice.random() < self.faults.billing_crash:
                self._step(actor, "crash")
            return
        if self.dice.random() < _chance(point, self.faults.crash_at, self.faults.crash):
            self.counts["crashes"] += 1
            self._step(actor, "crash")
            return
        if self.dice.random() < _chance(point, self.faults.stall_at, self.faults.stall):
            self.counts["stalls"] += 1
            stall = self.faults.stall_leases * self.config.lease_ttl
            self._note(actor.name, f"STALL {stall:.1f}")
            actor.wake_at = self.clock.now() + stall

    def _where(self, point: str) -> str:
        return f"step {len(self.trace) - 1} ({point})"

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

    def _judge(self, billing: Billing, settled: bool) -> SimulationResult:
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
        service_ids = [o.service_id for o in self.orders]
        violations += deliveries(self.store, service_ids, self.deliveries)
        state = self.fake.state
        violations += install_stays(self.store, state.installs, self.start)
        self.counts.update(billing.counts)
        self.counts["workers_started"] = sum(self.incarnations.values())
        self.counts["events_delivered"] = len(self.deliveries)
        self.counts["virtual_seconds"] = int(self.clock.now() - self.start)
        # reads of free servers that started past the first one (a worker among others
        # reading a long listing at a random place)
        self.counts["lists_off_front"] = sum(
            1
            for r in state.requests
            if r.route == "servers.list" and parse_limit(dict(r.query).get("limit", "0"))[0] > 0
        )
        for row in self.store.services():
            self.counts[f"final_{row.state}"] += 1
        history = {
            sid: format_history(self.store, sid) for sid in offenders(self.store, violations)
        }
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
