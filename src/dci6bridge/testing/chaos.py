"""Prove a provisioning deployment correct under failure: an invariant checker and a
process nemesis.

This is the harness dci6bridge's own chaos suites use (``tests/chaos/``), shipped so a
billing integration can run the same checks against its own setup. It has two parts:

* :func:`check_invariants` compares what the status store recorded (services, their
  transition history, server reservations, department tasks) with what DCImanager really
  holds (a :class:`RemoteTruth`, e.g. :meth:`RemoteTruth.from_fake` of the simulator) and
  returns every violation of the durability invariants I1-I5 of ``docs/durability.md``;
* :class:`WorkerFleet` runs worker processes and plays the nemesis against them: SIGKILL
  a random worker, freeze one past its lease (SIGSTOP … SIGCONT), restart the dead.

Neither part imports the orchestrator: the checker reads only the store's ledger and the
remote truth, so it judges the orchestrator from the outside.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import json
import multiprocessing
import multiprocessing.process
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import attrs

from dci6bridge.stores.base import OutboxMsg, StatusStore, StoredService, Transition

if TYPE_CHECKING:
    from dci6bridge.testing._fake import FakeDCImanager
    from dci6bridge.testing._state import SimulatorState

__all__ = [
    "DEFAULT_TARGETS",
    "EVENT_CRASH_ENV",
    "EVENT_KINDS",
    "EVENT_LOG_ENV",
    "UNSAFE_IGNORE_REQUESTS_ENV",
    "Delivery",
    "DeliveryLog",
    "EventRecorder",
    "InvariantReport",
    "RemoteTruth",
    "Violation",
    "WorkerFleet",
    "check_deliveries",
    "check_history",
    "check_invariants",
    "check_requests",
    "expected_events",
    "format_history",
    "read_deliveries",
    "read_marker",
    "recording_worker",
]

#: Where a service must end for each ``desired`` value billing can ask for (I1), as the
#: store spells states.
DEFAULT_TARGETS: Mapping[str, str] = {
    "active": "active",
    "suspended": "suspended",
    "closed": "closed",
}


@attrs.frozen
class Violation:
    """One broken invariant: ``invariant`` is ``"I1"`` … ``"I5"``, ``service_id`` the
    service it concerns (``None`` for a remote object no service records)."""

    invariant: str
    service_id: str | None
    message: str

    def __str__(self) -> str:
        who = self.service_id if self.service_id is not None else "-"
        return f"{self.invariant} [{who}] {self.message}"


@attrs.frozen
class RemoteTruth:
    """What DCImanager really holds, reduced to what the invariants need.

    ``owners`` maps every server id to its owner's email (``None`` when free);
    ``users`` lists every user as ``(user_id, email)``; ``installs`` counts the OS
    installs ever started per server id; ``user_servers`` (optional) maps a user id to
    the servers it owns, to say which of two duplicate users is the extra one;
    ``ports_up`` (optional) says per server id whether its data switch ports are all up
    (``True``), all down (``False``) or mixed (``None``); ``owner_installs`` (optional)
    counts installs per ``(server id, lower-case email of the owner at the time)``, to
    tell apart the installs of two services that held one server one after the other.
    """

    owners: Mapping[int, str | None]
    users: Sequence[tuple[int, str]]
    installs: Mapping[int, int]
    user_servers: Mapping[int, Sequence[int]] = attrs.field(factory=dict)
    ports_up: Mapping[int, bool | None] = attrs.field(factory=dict)
    owner_installs: Mapping[tuple[int, str], int] = attrs.field(factory=dict)

    @classmethod
    def from_state(cls, state: SimulatorState) -> RemoteTruth:
        """Reduce a simulator snapshot (``FakeDCImanager.state``) to the truth."""
        installs: collections.Counter[int] = collections.Counter(
            i.server_id for i in state.installs
        )
        owner_installs: collections.Counter[tuple[int, str]] = collections.Counter(
            (i.server_id, (i.owner_email or "").lower()) for i in state.installs
        )
        return cls(
            owners={s.id: s.owner_email for s in state.servers.values()},
            users=[(u.id, u.email) for u in state.users.values()],
            installs=dict(installs),
            user_servers={u.id: tuple(u.server_ids) for u in state.users.values()},
            ports_up={s.id: s.data_ports_up for s in state.servers.values()},
            owner_installs=dict(owner_installs),
        )

    @classmethod
    def from_fake(cls, fake: FakeDCImanager) -> RemoteTruth:
        """Snapshot the ground truth of a simulator now."""
        return cls.from_state(fake.state)

    def user_emails(self) -> dict[str, list[int]]:
        """Email → ids of every user with that email (more than one is a duplicate)."""
        by_email: dict[str, list[int]] = collections.defaultdict(list)
        for uid, email in self.users:
            by_email[email.lower()].append(uid)
        return dict(by_email)


@attrs.frozen
class InvariantReport:
    """The outcome of :func:`check_invariants`: ``ok`` when ``violations`` is empty."""

    violations: tuple[Violation, ...]
    services: int
    counts: Mapping[str, int]

    @property
    def ok(self) -> bool:
        """``True`` when no invariant is broken."""
        return not self.violations

    def by_invariant(self) -> dict[str, int]:
        """Number of violations per invariant name."""
        return dict(collections.Counter(v.invariant for v in self.violations))

    def offenders(self) -> list[str]:
        """Service ids named by a violation, each once, in order of first mention."""
        seen: dict[str, None] = {}
        for v in self.violations:
            if v.service_id is not None:
                seen.setdefault(v.service_id, None)
        return list(seen)

    def format(self, store: StatusStore | None = None, *, limit: int = 3) -> str:
        """A readable failure message: the violations, then (given the store) the
        transition log of the first ``limit`` offending services."""
        lines = [
            f"{len(self.violations)} invariant violation(s) over {self.services} services "
            f"{self.by_invariant()}:"
        ]
        lines += [f"  {v}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  ... and {len(self.violations) - 50} more")
        if store is not None:
            for sid in self.offenders()[:limit]:
                lines.append(f"transition log of {sid}:")
                lines.append(format_history(store, sid))
        return "\n".join(lines)


def format_history(store: StatusStore, service_id: str) -> str:
    """The service row and its transitions, one per line (no secrets are stored there)."""
    row = store.get(service_id)
    lines = []
    if row is None:
        lines.append("  (no such service)")
    else:
        lines.append(
            f"  row: state={row.state} version={row.version} desired={row.desired} "
            f"server={row.server_id} user={row.user_id} op={row.op_id} "
            f"attempts={row.attempts} last_error={row.last_error!r}"
        )
    for t in store.history(service_id):
        lines.append(
            f"  v{t.version:<3} {t.from_state} -> {t.to_state}  epoch={t.epoch} "
            f"worker={t.worker} at={t.at:.3f} {dict(t.detail)}"
        )
    return "\n".join(lines)


def check_history(
    service: StoredService,
    history: Sequence[Transition],
    *,
    initial_state: str,
    allowed: Mapping[str, Collection[str]] | None = None,
) -> list[Violation]:
    """I2 for one service: versions ``1..n`` without gaps, each ``from_state`` equal to
    the previous ``to_state`` (the first to ``initial_state``), every step allowed by
    ``allowed`` (state → states it may move to; e.g. the orchestrator's
    ``TRANSITIONS``) when given, and the row's ``(version, state)`` equal to the last
    history entry."""
    sid = service.service_id
    out: list[Violation] = []
    previous = initial_state
    for expected_version, t in enumerate(history, start=1):
        if t.version != expected_version:
            out.append(
                Violation(
                    "I2",
                    sid,
                    f"history version {t.version} where {expected_version} "
                    f"was due (gap or duplicate)",
                )
            )
        if t.from_state != previous:
            out.append(
                Violation(
                    "I2",
                    sid,
                    f"v{t.version} starts from {t.from_state!r} but the "
                    f"previous transition ended in {previous!r}",
                )
            )
        if allowed is not None and t.to_state not in allowed.get(t.from_state, ()):
            out.append(
                Violation(
                    "I2",
                    sid,
                    f"v{t.version} {t.from_state!r} -> {t.to_state!r} is not an allowed transition",
                )
            )
        previous = t.to_state
    if service.version != len(history):
        out.append(
            Violation("I2", sid, f"row version {service.version} but {len(history)} history rows")
        )
    if service.state != previous:
        out.append(
            Violation(
                "I2", sid, f"row state {service.state!r} but the history ends in {previous!r}"
            )
        )
    return out


def _retried(history: Sequence[Transition], kind: str) -> int:
    """How many times the service was retried (went back from ``failed`` to the state
    it failed in) after a failure of ``kind``."""
    n, failed_in = 0, None
    for t in history:
        if t.to_state == "failed":
            failed_in = t.from_state if t.detail.get("kind") == kind else None
        elif t.from_state == "failed" and t.to_state == failed_in:
            n += 1
    return n


def check_invariants(
    store: StatusStore,
    truth: RemoteTruth,
    *,
    customer_emails: Mapping[str, str] | None = None,
    initial_state: str = "pending",
    targets: Mapping[str, str] = DEFAULT_TARGETS,
    installs_per_service: int = 1,
    allowed: Mapping[str, Collection[str]] | None = None,
    reinstall_state: str | None = None,
    installs_by_owner: bool = False,
    retried_failure: str | None = None,
    count_installs: bool = True,
) -> InvariantReport:
    """Check I1-I5 between the store's ledger and DCImanager's ground truth.

    ``customer_emails`` maps each service id to the email of the DCImanager user that
    must own its server (the order's customer); users and servers of other emails (the
    administrator, outsiders) are ignored except as owners of our servers.

    * **I1** every service is in the state its ``desired`` asks for (``targets``), or
      has an open department task saying why not;
    * **I2** every history chain is gap-free, made of ``allowed`` steps (when given) and
      ends in the row's state (:func:`check_history`);
    * **I3** no server is recorded by two services, no service holds two reservations,
      and every settled service's server is owned remotely by its own customer;
    * **I4** one remote user per customer email, and at most ``installs_per_service``
      OS installs on a service's server (exactly that many once it is active or
      suspended), plus one per transition into ``reinstall_state`` (e.g.
      ``"reinstalling"``) when that is given. With ``installs_by_owner``, only the
      installs made while the service's customer owned the server count
      (``RemoteTruth.owner_installs``): a server closed by one service and taken by
      another carries the installs of both. With ``retried_failure`` (a failure
      ``kind`` of the history's detail, e.g. ``"install_failed"``), each operator
      retry out of ``failed`` after a failure of that kind allows one more install.
      ``count_installs=False`` skips the install counts (for a caller that judges each
      install another way, e.g. :mod:`dci6bridge.testing.simulation`);
    * **I5** no orphans: no server owned by one of our customers that no service
      records, no reservation of a service that records another server.
    """
    services = store.services()
    emails = dict(customer_emails or {})
    open_tasks: dict[str, list[str]] = collections.defaultdict(list)
    for task in store.tasks():
        if task.resolved_at is None:
            open_tasks[task.service_id].append(f"{task.kind}: {task.reason}")
    users_by_email = truth.user_emails()
    user_email_by_id = {uid: email.lower() for uid, email in truth.users}
    out: list[Violation] = []
    counts: collections.Counter[str] = collections.Counter()
    installs_of: collections.Counter[str] = collections.Counter(
        dict.fromkeys((svc.service_id for svc in services), installs_per_service)
    )

    def installs_on(service_id: str, server_id: int) -> int:
        email = emails.get(service_id)
        if installs_by_owner and email is not None:
            return truth.owner_installs.get((server_id, email.lower()), 0)
        return truth.installs.get(server_id, 0)

    # I1, I2 per service
    for svc in services:
        sid = svc.service_id
        counts[svc.state] += 1
        target = targets.get(svc.desired, svc.desired)
        if svc.state != target and not open_tasks.get(sid):
            out.append(
                Violation(
                    "I1",
                    sid,
                    f"state {svc.state!r} (desired {svc.desired!r}) "
                    f"and no open department task; last_error={svc.last_error!r}",
                )
            )
        history = store.history(sid)
        if reinstall_state is not None:
            installs_of[sid] += sum(1 for t in history if t.to_state == reinstall_state)
        if retried_failure is not None:
            installs_of[sid] += _retried(history, retried_failure)
        out += check_history(svc, history, initial_state=initial_state, allowed=allowed)

    # I3: store side, one server per service and one service per server
    holders: dict[int, list[str]] = collections.defaultdict(list)
    for svc in services:
        if svc.server_id is not None and svc.state != targets.get("closed", "closed"):
            holders[svc.server_id].append(svc.service_id)
    for server_id, sids in holders.items():
        if len(sids) > 1:
            for sid in sids:
                out.append(Violation("I3", sid, f"server {server_id} recorded by services {sids}"))
    claims = store.server_claims()
    by_service = {svc.service_id: svc for svc in services}
    for server_id, sid in claims.items():
        claimant = by_service.get(sid)
        if claimant is None:
            out.append(
                Violation("I5", sid, f"reservation of server {server_id} by an unknown service")
            )
        elif claimant.server_id is not None and claimant.server_id != server_id:
            out.append(
                Violation(
                    "I5",
                    sid,
                    f"reserves server {server_id} but records server {claimant.server_id}",
                )
            )

    # I3 / I4: remote side of every service that reached its target
    active_state = targets.get("active", "active")
    suspended_state = targets.get("suspended", "suspended")
    recorded_servers = set(holders)
    for svc in services:
        sid = svc.service_id
        email = emails.get(sid)
        if svc.state in (active_state, suspended_state):
            if svc.server_id is None:
                out.append(Violation("I3", sid, f"{svc.state} without a server"))
                continue
            owner = truth.owners.get(svc.server_id)
            if email is not None and (owner or "").lower() != email.lower():
                out.append(
                    Violation(
                        "I3",
                        sid,
                        f"server {svc.server_id} is owned remotely by "
                        f"{owner!r}, not by the customer {email!r}",
                    )
                )
            if svc.user_id is not None and user_email_by_id.get(svc.user_id) != (
                (owner or "").lower() or None
            ):
                out.append(
                    Violation(
                        "I4",
                        sid,
                        f"records user {svc.user_id}, which is not the "
                        f"owner {owner!r} of server {svc.server_id}",
                    )
                )
            n_installs = installs_on(svc.service_id, svc.server_id)
            if count_installs and n_installs != installs_of[sid]:
                out.append(
                    Violation(
                        "I4",
                        sid,
                        f"server {svc.server_id} had {n_installs} OS "
                        f"installs, expected {installs_of[sid]}",
                    )
                )
        elif (
            count_installs
            and svc.server_id is not None
            and installs_on(sid, svc.server_id) > installs_of[sid]
        ):
            out.append(
                Violation(
                    "I4",
                    sid,
                    f"server {svc.server_id} had {installs_on(sid, svc.server_id)} OS installs",
                )
            )

    # I4: one remote user per customer
    ours = {e.lower() for e in emails.values()}
    services_of_email: dict[str, list[str]] = collections.defaultdict(list)
    for sid, email in emails.items():
        services_of_email[email.lower()].append(sid)
    recorded_users = {svc.user_id for svc in services if svc.user_id is not None}
    for email in sorted(ours):
        ids = sorted(users_by_email.get(email, []))
        if len(ids) > 1:
            # name what each duplicate holds, so the log tells which creation was extra
            held = ", ".join(
                f"{uid} (owns {list(truth.user_servers.get(uid, ())) or 'nothing'}, "
                f"{'recorded' if uid in recorded_users else 'recorded by no service'})"
                for uid in ids
            )
            out.append(
                Violation(
                    "I4",
                    services_of_email[email][0],
                    f"{len(ids)} remote users with email {email!r}: {held}; services of "
                    f"this customer: {services_of_email[email]}",
                )
            )
    # I5: servers owned by our customers that no service records
    for server_id, owner in sorted(truth.owners.items()):
        if owner is not None and owner.lower() in ours and server_id not in recorded_servers:
            out.append(
                Violation(
                    "I5",
                    None,
                    f"server {server_id} is owned by our customer "
                    f"{owner!r} but no service records it (orphan)",
                )
            )
    # I4 again from the server side: an install on a server no service records
    for server_id, n in sorted(truth.installs.items()):
        if (
            count_installs
            and n
            and server_id not in recorded_servers
            and (truth.owners.get(server_id) or "").lower() in ours
        ):
            out.append(
                Violation(
                    "I4", None, f"server {server_id} got {n} OS installs but no service records it"
                )
            )

    return InvariantReport(violations=tuple(out), services=len(services), counts=dict(counts))


# --------------------------------------------------------------------------- billing's view

#: The state a service must rest in for each ``desired`` value (as :data:`DEFAULT_TARGETS`)
#: and the event kinds each kind of transition writes to the outbox: ``(from_state,
#: to_state)`` → kind, ``"*"`` for any ``from_state``. ``installing_os → active`` writes
#: ``activated``, or ``reinstalled`` after a transition into ``reinstalling`` (see
#: :func:`expected_events`).
EVENT_KINDS: Mapping[tuple[str, str], str] = {
    ("installing_os", "active"): "activated",
    ("resuming", "active"): "resumed",
    ("rebooting", "active"): "rebooted",
    ("suspending", "suspended"): "suspended",
    ("*", "closed"): "closed",
    ("*", "failed"): "needs_attention",
}


def expected_events(
    history: Sequence[Transition],
    *,
    kinds: Mapping[tuple[str, str], str] = EVENT_KINDS,
    reinstall_state: str = "reinstalling",
    reinstalled_kind: str = "reinstalled",
) -> list[tuple[int, str]]:
    """The ``(version, kind)`` of every event a service with this history must have
    written to the outbox: one per transition named in ``kinds``; an ``activated``
    following a transition into ``reinstall_state`` (since the last ``active``) is
    ``reinstalled_kind`` instead."""
    out: list[tuple[int, str]] = []
    reinstalling = False
    for t in history:
        if t.to_state == reinstall_state:
            reinstalling = True
        kind = kinds.get((t.from_state, t.to_state)) or kinds.get(("*", t.to_state))
        if kind == "activated" and reinstalling:
            kind = reinstalled_kind
        if t.to_state == DEFAULT_TARGETS["active"]:
            reinstalling = False
        if kind is not None:
            out.append((t.version, kind))
    return out


@attrs.frozen
class Delivery:
    """One call of billing's event callback, as :func:`read_deliveries` found it in
    ``log`` (the file of one worker process)."""

    event_id: str
    kind: str
    service_id: str
    version: int
    log: str

    @property
    def key(self) -> tuple[str, int, str]:
        """``(service_id, version, kind)``: what the event is about."""
        return (self.service_id, self.version, self.kind)


@attrs.frozen
class DeliveryLog:
    """Every delivery found in a directory of event logs; ``torn`` counts last lines
    cut short (a process killed while writing one)."""

    deliveries: tuple[Delivery, ...]
    torn: int

    def duplicates(self) -> int:
        """Deliveries beyond the first of each event (at-least-once redeliveries)."""
        return len(self.deliveries) - len({d.event_id for d in self.deliveries})


#: Environment of :func:`recording_worker`: the directory its event logs go to.
EVENT_LOG_ENV = "DCI6BRIDGE_CHAOS_EVENT_LOG"
#: Environment of :func:`recording_worker`: ``1`` makes its store ignore the
#: ``expected_desired_seq`` of every write (**test-only**, for a negative control: a
#: billing request arriving during a lease can then be overwritten).
UNSAFE_IGNORE_REQUESTS_ENV = "DCI6BRIDGE_CHAOS_UNSAFE_IGNORE_REQUESTS"


#: Environment of :func:`recording_worker`: probability that the process dies
#: (``os._exit(137)``) right after recording an event, before the relay acknowledges
#: it, so that the event is delivered again.
EVENT_CRASH_ENV = "DCI6BRIDGE_CHAOS_EVENT_CRASH_RATE"


class EventRecorder:
    """Billing's event callback for chaos runs: appends each event as one JSON line to
    ``path`` and flushes it before returning, so an event is on disk before the relay
    acknowledges it (a process killed in between delivers it again: at least once).

    With ``crash_rate``, the process exits with status 137 right after recording an
    event with that probability (drawn from ``rng``): the crash between billing's
    handling of an event and its acknowledgement, which redelivers it."""

    def __init__(
        self, path: Path, *, crash_rate: float = 0.0, rng: random.Random | None = None
    ) -> None:
        self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - lives with the process
        self._lock = threading.Lock()
        self._crash_rate = crash_rate
        self._rng = rng or random.Random(0)

    def __call__(self, event: Any) -> None:
        line = {
            "event_id": event.event_id,
            "kind": event.kind,
            "service_id": event.service_id,
            "version": event.version,
        }
        with self._lock:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
            if self._crash_rate and self._rng.random() < self._crash_rate:
                os._exit(137)

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def recording_worker(argv: Sequence[str]) -> int:
    """A worker entry for :class:`WorkerFleet` (``entry="dci6bridge.testing.chaos:
    recording_worker"``): the worker command's own ``main`` with ``argv``, whose
    provisioner delivers events to an :class:`EventRecorder` writing
    ``$DCI6BRIDGE_CHAOS_EVENT_LOG/events-<pid>.log`` (when that is set; it dies
    after recording an event with probability ``$DCI6BRIDGE_CHAOS_EVENT_CRASH_RATE``,
    seeded by ``DCI6BRIDGE_FAILPOINT_SEED`` and its pid). With
    ``DCI6BRIDGE_CHAOS_UNSAFE_IGNORE_REQUESTS=1`` its store drops the
    ``expected_desired_seq`` fence of every write (negative control only)."""
    from dci6bridge import stores
    from dci6bridge.provisioning import Provisioner, worker

    directory = os.environ.get(EVENT_LOG_ENV)
    if directory:
        seed = os.environ.get("DCI6BRIDGE_FAILPOINT_SEED", "0")
        recorder = EventRecorder(
            Path(directory) / f"events-{os.getpid()}.log",
            crash_rate=float(os.environ.get(EVENT_CRASH_ENV) or 0.0),
            rng=random.Random(f"{seed}:{os.getpid()}"),
        )
        # this process is a throwaway worker: rebinding the names the command uses is
        # the least intrusive way to run the real command with billing's callback
        provisioner = functools.partial(Provisioner, on_event=recorder)
        setattr(worker, "Provisioner", provisioner)  # noqa: B010
    if os.environ.get(UNSAFE_IGNORE_REQUESTS_ENV, "") == "1":
        opener = stores.open_store

        def open_unfenced(url: str, **options: Any) -> StatusStore:
            store = opener(url, **options)
            advance_many = store.advance_many

            # every worker write goes through advance_many
            def advance_many_ignoring_requests(requests: Any) -> Any:
                return advance_many([attrs.evolve(r, expected_desired_seq=None) for r in requests])

            setattr(store, "advance_many", advance_many_ignoring_requests)  # noqa: B010
            return store

        setattr(stores, "open_store", open_unfenced)  # noqa: B010
    return worker.main(argv)


def read_deliveries(directory: Path) -> DeliveryLog:
    """Every delivery recorded by :class:`EventRecorder` s in ``directory``
    (``events-*.log``); an unreadable line is counted as torn when it is the last line
    of its file and raises :class:`ValueError` anywhere else."""
    found: list[Delivery] = []
    torn = 0
    for path in sorted(Path(directory).glob("events-*.log")):
        lines = path.read_text(encoding="utf-8").split("\n")
        for n, line in enumerate(lines):
            if not line:
                continue
            try:
                raw = json.loads(line)
                found.append(
                    Delivery(
                        str(raw["event_id"]),
                        str(raw["kind"]),
                        str(raw["service_id"]),
                        int(raw["version"]),
                        path.name,
                    )
                )
            except (ValueError, KeyError, TypeError):
                if n != len(lines) - 1:
                    raise ValueError(f"{path}:{n + 1}: not a delivery: {line!r}") from None
                torn += 1
    return DeliveryLog(tuple(found), torn)


def check_deliveries(
    written: Sequence[OutboxMsg],
    deliveries: Sequence[Delivery],
    expected: Mapping[str, Sequence[tuple[int, str]]] | None = None,
) -> list[Violation]:
    """I6 between the outbox (every event ever ``written``, delivered or not), what
    billing's callback received and, optionally, the events each service's history
    calls for (``expected``: service id → ``(version, kind)`` list, e.g. from
    :func:`expected_events`):

    * every written event was delivered at least once;
    * every delivery is of a written event and carries its ``event_id``, the same on
      every delivery;
    * one event per ``(service_id, version, kind)`` in the outbox;
    * with ``expected``: the outbox holds exactly the events the histories call for
      (none missing, none for a transition that did not happen).
    """
    out: list[Violation] = []
    by_key: dict[tuple[str, int, str], OutboxMsg] = {}
    for msg in written:
        key = (msg.service_id, msg.version, msg.kind)
        if key in by_key:
            out.append(
                Violation("I6", msg.service_id, f"event {msg.event_id} written twice to the outbox")
            )
        by_key[key] = msg
    received: dict[tuple[str, int, str], list[Delivery]] = collections.defaultdict(list)
    for d in deliveries:
        received[d.key].append(d)
    for key, msg in sorted(by_key.items()):
        if not received.get(key):
            out.append(Violation("I6", msg.service_id, f"event {msg.event_id} never delivered"))
    for key, got in sorted(received.items()):
        sent = by_key.get(key)
        if sent is None:
            out.append(
                Violation("I6", key[0], f"delivered {got[0].event_id} ({len(got)}x), never written")
            )
            continue
        ids = sorted({d.event_id for d in got})
        if ids != [sent.event_id]:
            out.append(
                Violation("I6", key[0], f"event {sent.event_id} delivered with event ids {ids}")
            )
    if expected is not None:
        for sid, events in sorted(expected.items()):
            want = {(sid, version, kind) for version, kind in events}
            have = {key for key in by_key if key[0] == sid}
            for key in sorted(want - have):
                out.append(
                    Violation("I6", sid, f"v{key[1]} calls for a {key[2]!r} event; none written")
                )
            for key in sorted(have - want):
                out.append(
                    Violation(
                        "I6",
                        sid,
                        f"{key[2]!r} event written for v{key[1]}, which is no such transition",
                    )
                )
    return out


def check_requests(
    store: StatusStore,
    truth: RemoteTruth,
    wishes: Mapping[str, str],
    *,
    customer_emails: Mapping[str, str] | None = None,
    targets: Mapping[str, str] = DEFAULT_TARGETS,
    failed_state: str = "failed",
) -> list[Violation]:
    """T9: every service ended as billing's last accepted request asked (``wishes``:
    service id → the ``desired`` value of that request, ``"active"`` for a service only
    opened), once the workers are done:

    * the store records that wish as ``desired`` and the service is not runnable;
    * its state is the wish's target, or ``failed_state`` with an open department task;
    * remotely: an active service's data ports are up, a suspended one's down
      (``RemoteTruth.ports_up``); a closed service holds no reservation, its server is
      free unless another live service records it, and a customer whose every service
      is closed has no DCImanager user left (``customer_emails``).
    """
    out: list[Violation] = []
    emails = {sid: e.lower() for sid, e in (customer_emails or {}).items()}
    services = {svc.service_id: svc for svc in store.services()}
    closed_state = targets.get("closed", "closed")
    live_servers = {
        svc.server_id
        for svc in services.values()
        if svc.server_id is not None and svc.state != closed_state
    }
    live_customers = {
        emails[sid] for sid, svc in services.items() if svc.state != closed_state and sid in emails
    }
    open_tasks = {t.service_id for t in store.tasks()}
    claimants = set(store.server_claims().values())
    users = truth.user_emails()
    for sid, wish in sorted(wishes.items()):
        svc = services.get(sid)
        if svc is None:
            out.append(Violation("T9", sid, "no such service"))
            continue
        target = targets.get(wish, wish)
        if svc.desired != wish:
            out.append(
                Violation(
                    "T9",
                    sid,
                    f"the last accepted request asked for {wish!r}; the store records "
                    f"desired={svc.desired!r}",
                )
            )
        if svc.runnable:
            out.append(Violation("T9", sid, f"left runnable in {svc.state!r}"))
        if svc.state == failed_state:
            if sid not in open_tasks:
                out.append(Violation("T9", sid, "failed without an open department task"))
            continue
        if svc.state != target:
            out.append(
                Violation(
                    "T9",
                    sid,
                    f"rests in {svc.state!r} (runnable={svc.runnable}) but the last "
                    f"accepted request asked for {wish!r}: request lost",
                )
            )
            continue
        ports = truth.ports_up.get(svc.server_id) if svc.server_id is not None else None
        if svc.state == targets.get("active", "active") and truth.ports_up and ports is not True:
            out.append(Violation("T9", sid, f"active but the ports of {svc.server_id} are not up"))
        if (
            svc.state == targets.get("suspended", "suspended")
            and truth.ports_up
            and ports is not False
        ):
            out.append(
                Violation("T9", sid, f"suspended but the ports of {svc.server_id} are not down")
            )
        if svc.state == closed_state:
            if sid in claimants:
                out.append(Violation("T9", sid, "closed but still reserves a server"))
            if svc.server_id is not None and svc.server_id not in live_servers:
                owner = truth.owners.get(svc.server_id)
                if owner is not None:
                    out.append(
                        Violation(
                            "T9",
                            sid,
                            f"closed but its server {svc.server_id} is owned by {owner!r}",
                        )
                    )
            email = emails.get(sid)
            if email is not None and email not in live_customers and users.get(email):
                out.append(
                    Violation(
                        "T9",
                        sid,
                        f"closed, the customer {email!r} has no live service, yet "
                        f"DCImanager users {users[email]} remain",
                    )
                )
    return out


# --------------------------------------------------------------------------- nemesis


class _Process(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class _Forked:
    """A :class:`multiprocessing` process with the :class:`subprocess.Popen` calls the
    fleet uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._p = process
        self.pid = int(process.pid or 0)

    def poll(self) -> int | None:
        return self._p.exitcode

    def send_signal(self, sig: int) -> None:
        # The fork server, not this process, reaps the worker: once it is gone its pid
        # is unknown (like Popen.send_signal after the process ended, do nothing).
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        self._p.join(timeout)
        code = self._p.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        return code


def _run_entry(entry: str, argv: list[str], env: dict[str, str], log_path: str) -> None:
    """Body of a forked worker: output to ``log_path``, environment ``env``, then
    ``entry`` (``"package.module:function"``) called with ``argv``; its return value is
    the exit status."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    module, _, name = entry.partition(":")
    code = getattr(importlib.import_module(module), name)(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


@attrs.define
class _Member:
    slot: int
    proc: _Process
    log: IO[bytes] | None
    started: float


class WorkerFleet:
    """Keep ``size`` worker processes running and hurt them on request.

    ``argv_for(slot)`` builds the arguments of the worker in a slot (``slot`` is
    ``0 … size-1``; a restarted worker gets the same slot and a fresh process), ``env``
    is its whole environment. Without ``entry``, the arguments are a command line run
    with :class:`subprocess.Popen` (e.g. ``python -m dci6bridge worker ...``). With
    ``entry="package.module:function"``, each worker is forked from a
    :mod:`multiprocessing` fork server that has imported ``package.module`` once, and
    runs ``function(argv)``: the same worker code, but a restart costs milliseconds
    instead of an interpreter start, so a nemesis can kill hundreds of workers in a
    short run. ``preload`` names more modules the fork server imports up front (those
    the entry imports lazily, e.g. ``httpcore``). The fork server is started once per
    test process, so the first fleet's ``preload`` is the one that counts.

    Output of each process goes to ``log_dir/worker-<slot>.log`` (appended across
    restarts). Counters: ``kills`` (SIGKILLs sent), ``pauses``, ``crashes`` (exits with
    status 137, i.e. a failpoint fired), ``exits`` (every exit by status, ``-9`` for a
    SIGKILL), ``restarts``. Only processes this object started are ever signalled, by
    pid.
    """

    def __init__(
        self,
        argv_for: Callable[[int], Sequence[str]],
        *,
        size: int,
        env: Mapping[str, str],
        log_dir: Path,
        rng: random.Random,
        entry: str | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        if size < 1:
            raise ValueError(f"size: {size!r} is not a positive number of workers")
        if entry is not None and ":" not in entry:
            raise ValueError(f"entry: {entry!r} is not 'package.module:function'")
        self._argv_for = argv_for
        self._size = size
        self._env = dict(env)
        self._log_dir = Path(log_dir)
        self._rng = rng
        self._entry = entry
        self._ctx: Any = None
        if entry is not None:
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload([entry.partition(":")[0], *preload])
        self._members: dict[int, _Member] = {}
        self._lock = threading.Lock()
        self._paused: set[int] = set()
        self.kills = 0
        self.pauses = 0
        self.crashes = 0
        self.restarts = 0
        self.exits: collections.Counter[int] = collections.Counter()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start every slot."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for slot in range(self._size):
                self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        path = self._log_dir / f"worker-{slot}.log"
        argv = list(self._argv_for(slot))
        if self._entry is None:
            log = path.open("ab")
            proc: _Process = subprocess.Popen(
                argv,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            self._members[slot] = _Member(slot, proc, log, time.monotonic())
            return
        process = self._ctx.Process(
            target=_run_entry,
            args=(self._entry, argv, self._env, str(path)),
            name=f"chaos-worker-{slot}",
            daemon=True,
        )
        process.start()
        self._members[slot] = _Member(slot, _Forked(process), None, time.monotonic())

    def _collect(self, m: _Member, code: int) -> None:
        if m.log is not None:
            m.log.close()
        self.exits[code] += 1
        if code == 137:
            self.crashes += 1

    def reap(self, *, restart: bool = True) -> int:
        """Collect every worker that has exited, count why, and (by default) start a
        fresh one in its slot. Returns how many had exited."""
        died = 0
        with self._lock:
            for slot, m in list(self._members.items()):
                code = m.proc.poll()
                if code is None:
                    continue
                died += 1
                self._collect(m, code)
                del self._members[slot]
                self._paused.discard(slot)
                if restart:
                    self.restarts += 1
                    self._spawn(slot)
        return died

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM every worker (graceful shutdown), SIGKILL those still alive after
        ``timeout`` seconds, and collect them all."""
        with self._lock:
            members = list(self._members.values())
            for m in members:
                if m.proc.poll() is None:
                    if m.slot in self._paused:
                        m.proc.send_signal(signal.SIGCONT)
                    m.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for m in members:
                try:
                    code = m.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    m.proc.send_signal(signal.SIGKILL)
                    code = m.proc.wait()
                self._collect(m, code)
            self._members.clear()
            self._paused.clear()

    def __enter__(self) -> WorkerFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ nemesis
    def _pick(self) -> _Member | None:
        alive = [
            m
            for m in self._members.values()
            if m.proc.poll() is None and m.slot not in self._paused
        ]
        return self._rng.choice(alive) if alive else None

    def kill_random(self) -> int | None:
        """SIGKILL one running worker chosen at random; returns its slot."""
        with self._lock:
            m = self._pick()
            if m is None:
                return None
            m.proc.send_signal(signal.SIGKILL)
            self.kills += 1
            return m.slot

    def pause_random(self, seconds: float) -> int | None:
        """Freeze one running worker (SIGSTOP) for ``seconds``, then let it go on
        (SIGCONT) from a timer thread: a stall past its lease, as a long GC pause or a
        swapped-out VM would cause. Returns its slot."""
        with self._lock:
            m = self._pick()
            if m is None:
                return None
            m.proc.send_signal(signal.SIGSTOP)
            self._paused.add(m.slot)
            self.pauses += 1
        timer = threading.Timer(seconds, self._resume, args=(m,))
        timer.daemon = True
        timer.start()
        return m.slot

    def _resume(self, m: _Member) -> None:
        with self._lock:
            if m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)
            self._paused.discard(m.slot)

    @property
    def alive(self) -> int:
        """Workers currently running."""
        with self._lock:
            return sum(1 for m in self._members.values() if m.proc.poll() is None)

    def summary(self) -> str:
        """One line: kills, pauses, failpoint crashes, restarts and exit statuses."""
        return (
            f"kills={self.kills} pauses={self.pauses} failpoint_crashes={self.crashes} "
            f"restarts={self.restarts} exits={dict(sorted(self.exits.items()))}"
        )


def read_marker(path: Path) -> list[str]:
    """Failpoint names appended to a ``DCI6BRIDGE_FAILPOINT_MARKER`` file, in order."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]
