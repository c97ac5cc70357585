"""What can go wrong in the simulated DCImanager, and the seeded dice that decide when."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from dci6bridge.client._routes import ROUTES
from dci6bridge.errors import ConfigError

__all__ = ["FaultDice", "Faults"]


def _route_names(value: Iterable[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset((value,))
    return frozenset(value)


def _server_ids(value: Iterable[int] | None) -> frozenset[int]:
    if value is None:
        return frozenset()
    return frozenset(value)


def _latency(value: tuple[float, float] | Iterable[float] | float | None) -> tuple[float, float]:
    if value is None:
        return (0.0, 0.0)
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    low, high = tuple(value)
    return (float(low), float(high))


@attrs.frozen(kw_only=True)
class Faults:
    """Faults the simulator injects; every field defaults to "off".

    All random decisions come from generators seeded by the simulator's ``seed``, one
    stream per kind of fault, so a run replays exactly and switching one fault on does
    not change when another fires.

    Attributes:
        token_ttl: seconds a token lives after login (``None``: forever). Requests with
            an expired token get 401.
        unavailable_rate: probability that a request starts a "service suspended"
            episode: it and the next ``unavailable_burst - 1`` requests get 503.
        unavailable_burst: how many consecutive requests one episode answers with 503.
        unavailable_routes: route names (``"servers.get"``, ...) the 503s hit; empty
            means every route.
        latency_ms: ``(low, high)`` milliseconds added to each answer, drawn uniformly.
            The simulator sleeps for real only when served over HTTP or when
            ``latency_in_process`` is true.
        latency_in_process: sleep for the latency in the in-process transport too.
        lost_response_rate: probability that a request's effect is applied but its
            answer is lost (in-process: ``httpx.ReadTimeout``; served: the socket is
            closed without an answer).
        lost_response_routes: route names the lost answers hit; empty means every route.
        install_failure_rate: probability that an OS install ends ``failed``.
        install_failure_servers: server ids whose installs always end ``failed``.
        outsider_rate: probability that, when a free server is assigned, another user
            takes it first, so the assignment is refused with 409.
    """

    token_ttl: float | None = None
    unavailable_rate: float = 0.0
    unavailable_burst: int = 1
    unavailable_routes: frozenset[str] = attrs.field(default=frozenset(), converter=_route_names)
    latency_ms: tuple[float, float] = attrs.field(default=(0.0, 0.0), converter=_latency)
    latency_in_process: bool = False
    lost_response_rate: float = 0.0
    lost_response_routes: frozenset[str] = attrs.field(default=frozenset(), converter=_route_names)
    install_failure_rate: float = 0.0
    install_failure_servers: frozenset[int] = attrs.field(
        default=frozenset(), converter=_server_ids
    )
    outsider_rate: float = 0.0

    def __attrs_post_init__(self) -> None:
        problems: list[str] = []
        if self.token_ttl is not None and not self.token_ttl > 0:
            problems.append(f"token_ttl: must be positive seconds or None, got {self.token_ttl!r}")
        for name in (
            "unavailable_rate",
            "lost_response_rate",
            "install_failure_rate",
            "outsider_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name}: must be a probability in [0, 1], got {value!r}")
        if self.unavailable_burst < 1:
            problems.append(
                f"unavailable_burst: must be at least 1, got {self.unavailable_burst!r}"
            )
        low, high = self.latency_ms
        if not 0 <= low <= high:
            problems.append(f"latency_ms: need 0 <= low <= high, got {self.latency_ms!r}")
        for name in ("unavailable_routes", "lost_response_routes"):
            unknown = sorted(set(getattr(self, name)) - set(ROUTES))
            if unknown:
                problems.append(f"{name}: unknown route name(s) {unknown!r}")
        if problems:
            raise ConfigError(problems)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (used by the served simulator's control API)."""
        return {
            "token_ttl": self.token_ttl,
            "unavailable_rate": self.unavailable_rate,
            "unavailable_burst": self.unavailable_burst,
            "unavailable_routes": sorted(self.unavailable_routes),
            "latency_ms": list(self.latency_ms),
            "latency_in_process": self.latency_in_process,
            "lost_response_rate": self.lost_response_rate,
            "lost_response_routes": sorted(self.lost_response_routes),
            "install_failure_rate": self.install_failure_rate,
            "install_failure_servers": sorted(self.install_failure_servers),
            "outsider_rate": self.outsider_rate,
        }

    def evolve(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` applied; unknown names raise :class:`ConfigError`."""
        known = {a.name for a in attrs.fields(Faults)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError([f"faults: unknown field {name!r}" for name in unknown])
        return attrs.evolve(self, **changes)


class FaultDice:
    """Independent seeded random streams, one per kind of fault."""

    def __init__(self, seed: int) -> None:
        self.unavailable = random.Random(f"{seed}:unavailable")
        self.latency = random.Random(f"{seed}:latency")
        self.lost = random.Random(f"{seed}:lost")
        self.install = random.Random(f"{seed}:install")
        self.outsider = random.Random(f"{seed}:outsider")
        self.tokens = random.Random(f"{seed}:tokens")

    @staticmethod
    def roll(rng: random.Random, probability: float) -> bool:
        """True with ``probability``; draws nothing when it is 0 or 1."""
        if probability <= 0.0:
            return False
        if probability >= 1.0:
            return True
        return rng.random() < probability
