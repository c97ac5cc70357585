"""Billing as an actor of the deterministic simulation (:mod:`.simulation`): it opens
the orders and sends lifecycle requests, drawn from its own RNG as the run goes, and
remembers what it last asked for each service."""

from __future__ import annotations

import collections
import random
from collections.abc import Callable

import attrs

from dci6bridge.domain import Order
from dci6bridge.errors import InvalidRequest, SimulationError, SpecMismatch
from dci6bridge.provisioning import Provisioner
from dci6bridge.provisioning._failpoints import FailpointCrash

from ._sim_world import OS_TEMPLATES
from .chaos import Violation

__all__ = ["ACTIONS", "WISH_OF", "Billing"]

#: What an accepted billing request makes billing wish for (the others keep the wish).
WISH_OF = {"suspend": "suspended", "resume": "active", "close": "closed"}
#: Billing's actions on an opened service, with weights (close is terminal: rarer).
ACTIONS = {"suspend": 4.0, "resume": 3.0, "close": 0.7, "reboot": 2.0, "reinstall": 2.0}


@attrs.define
class Billing:
    """Billing's side: its script, drawn from its own RNG as the run goes."""

    prov: Provisioner
    orders: list[Order]
    requests: int
    gap: float
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
        while pending or n < self.requests:
            self.sleep(self.rng.expovariate(1.0 / self.gap))
            # opens come first on average, but requests start while orders still arrive
            if pending and (not opened or self.rng.random() < 0.6 or n >= self.requests):
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
        action = self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
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
        if action in WISH_OF:
            self.wishes[sid] = WISH_OF[action]

    def _error(self, sid: str, message: str) -> None:
        self.errors.append(Violation("E", sid, f"billing: {message}"))
