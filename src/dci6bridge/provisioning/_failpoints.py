"""Named failpoints: crash (or stall) a worker at an exact line, for crash-matrix tests.

Every remote call the orchestrator makes is bracketed by ``before:<call>`` and
``after:<call>``; every store write is followed by ``after:store.<write>[:<what>]``.
:data:`FAILPOINTS` lists every name. A :class:`Failpoints` object decides what happens
when a point is hit; the default one is built from the environment:

``DCI6BRIDGE_FAILPOINTS``
    comma-separated rules ``PATTERN[=ACTION]``. ``PATTERN`` is a point name or an
    ``fnmatch`` pattern (``*``, ``after:store.*``). ``ACTION`` is

    * empty / ``exit`` — ``os._exit(137)`` the first time the point is reached (when a
      marker file is set, "first" spans restarts: a point already recorded there does
      not fire again, so a restarted worker gets past it);
    * a probability such as ``0.02`` — exit with that probability at every hit;
    * ``stall:SECONDS`` or ``stall:SECONDS@P`` — sleep that long (with probability
      ``P``), e.g. to outlive the lease;
    * ``raise`` or ``raise@P`` — raise :class:`FailpointCrash` (in-process tests: the
      worker abandons its lease exactly as if the process had died).
``DCI6BRIDGE_FAILPOINT_SEED``
    seed of the probability draws (mixed with the process id, so a restarted worker
    does not replay its predecessor's crash sequence).
``DCI6BRIDGE_FAILPOINT_MARKER``
    a file; the name of every point that fires is appended to it (one per line) before
    the action, so a test can assert the crash point was reached.
"""

from __future__ import annotations

import fnmatch
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dci6bridge.errors import ConfigError

__all__ = [
    "FAILPOINTS",
    "REMOTE_CALLS",
    "STORE_WRITES",
    "FailpointCrash",
    "Failpoints",
]

#: Remote (DCImanager) calls the orchestrator makes; each has ``before:`` and ``after:``.
REMOTE_CALLS: tuple[str, ...] = (
    "servers.configurations",
    "servers.list",
    "servers.get",
    "servers.set_owner",
    "servers.release_owner",
    "servers.install_os",
    "servers.power_off",
    "servers.power_reset",
    "servers.ports_on",
    "servers.ports_off",
    "os_templates.list",
    "users.find",
    "users.create",
    "users.delete",
    "ips.assign",
    "ips.release",
)

_TRANSITION_TARGETS: tuple[str, ...] = (
    "selecting_module",
    "claiming_server",
    "creating_user",
    "assigning_owner",
    "binding_ips",
    "installing_os",
    "active",
    "suspending",
    "suspended",
    "resuming",
    "reinstalling",
    "rebooting",
    "terminating",
    "closed",
    "failed",
)

#: Store writes the orchestrator makes; each has an ``after:`` point.
STORE_WRITES: tuple[str, ...] = (
    "store.create_service",
    "store.request",
    "store.acquire",
    "store.renew",
    "store.release",
    "store.reserve_server",
    "store.singleton",
    "store.release_server",
    "store.checkpoint:install",
    "store.checkpoint:op_id",
    "store.checkpoint:housekeeping",
    "store.ack_outbox",
    *(f"store.transition:{s}" for s in _TRANSITION_TARGETS),
)

#: Every failpoint name.
FAILPOINTS: tuple[str, ...] = (
    *(f"{when}:{call}" for call in REMOTE_CALLS for when in ("before", "after")),
    *(f"after:{write}" for write in STORE_WRITES),
)

_ENV_SPEC = "DCI6BRIDGE_FAILPOINTS"
_ENV_SEED = "DCI6BRIDGE_FAILPOINT_SEED"
_ENV_MARKER = "DCI6BRIDGE_FAILPOINT_MARKER"


class FailpointCrash(BaseException):
    """A failpoint with the ``raise`` action fired.

    Derives from :class:`BaseException` so that no ``except Exception`` in the
    orchestrator catches it: like a killed process, the worker stops at once, writes
    nothing more and leaves its lease to expire.
    """

    def __init__(self, point: str) -> None:
        self.point = point
        super().__init__(point)


class _Rule:
    __slots__ = ("action", "arg", "once", "pattern", "probability")

    def __init__(self, text: str) -> None:
        pattern, _, action = text.partition("=")
        self.pattern = pattern.strip()
        action = action.strip()
        if not self.pattern:
            raise ConfigError(f"{_ENV_SPEC}: empty point name in {text!r}")
        self.once = False
        self.probability = 1.0
        self.arg = 0.0
        kind, _, prob = action.partition("@")
        if prob:
            self.probability = _probability(prob, text)
        if kind in ("", "exit"):
            self.action = "exit"
            self.once = not prob
        elif kind == "raise":
            self.action = "raise"
            self.once = not prob
        elif kind.startswith("stall:"):
            self.action = "stall"
            self.once = not prob
            try:
                self.arg = float(kind[len("stall:") :])
            except ValueError:
                raise ConfigError(f"{_ENV_SPEC}: bad stall seconds in {text!r}") from None
        else:
            self.action = "exit"
            self.probability = _probability(kind, text)
        if not any(fnmatch.fnmatchcase(p, self.pattern) for p in FAILPOINTS):
            raise ConfigError(f"{_ENV_SPEC}: {self.pattern!r} matches no failpoint")


def _probability(text: str, rule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{_ENV_SPEC}: {text!r} in {rule!r} is not a probability") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{_ENV_SPEC}: probability {value!r} in {rule!r} is not in [0, 1]")
    return value


class Failpoints:
    """Decide what happens at each named point (see the module docstring).

    Args:
        rules: rule strings (``"after:servers.set_owner"``, ``"*=0.02"``,
            ``"before:users.create=raise"``) or one comma-separated string.
        seed: seed of the probability draws.
        marker: file that records every point that fires.
        exit: what ``exit`` does (default ``os._exit``); tests may replace it.
        sleep: what ``stall`` does (default ``time.sleep``).
    """

    def __init__(
        self,
        rules: str | Sequence[str] = (),
        *,
        seed: int | str | None = None,
        marker: str | os.PathLike[str] | None = None,
        exit: Callable[[int], object] = os._exit,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if isinstance(rules, str):
            rules = [r for r in rules.split(",") if r.strip()]
        self._rules = [_Rule(r) for r in rules]
        self._rng = random.Random(f"{seed}:{os.getpid()}")
        self._marker = Path(marker) if marker is not None else None
        self._exit = exit
        self._sleep = sleep
        self._fired: set[str] = set()
        #: every point hit so far in this process, in order (for tests)
        self.hits: list[str] = []

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Failpoints:
        """Build from ``DCI6BRIDGE_FAILPOINTS``, ``…_SEED`` and ``…_MARKER``."""
        env = os.environ if environ is None else environ
        return cls(
            env.get(_ENV_SPEC, ""),
            seed=env.get(_ENV_SEED),
            marker=env.get(_ENV_MARKER) or None,
        )

    @property
    def armed(self) -> bool:
        """Whether any rule is set (an unarmed object only counts hits)."""
        return bool(self._rules)

    def _already_recorded(self, point: str) -> bool:
        if point in self._fired:
            return True
        if self._marker is None or not self._marker.exists():
            return False
        return point in self._marker.read_text().split()

    def _record(self, point: str) -> None:
        self._fired.add(point)
        if self._marker is not None:
            with self._marker.open("a") as f:
                f.write(point + "\n")
                f.flush()
                os.fsync(f.fileno())

    def hit(self, point: str) -> None:
        """Reach ``point``: apply the first rule matching it, if any."""
        if not self._rules:
            return
        self.hits.append(point)
        for rule in self._rules:
            if not fnmatch.fnmatchcase(point, rule.pattern):
                continue
            if rule.once and self._already_recorded(point):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                return
            self._record(point)
            if rule.action == "stall":
                self._sleep(rule.arg)
                return
            if rule.action == "raise":
                raise FailpointCrash(point)
            self._exit(137)
            return
