"""Steering a served simulator from another process (its ``/__simulator__/`` API)."""

from __future__ import annotations

from typing import Any

import httpx

from dci6bridge.errors import ConfigError

from ._faults import Faults
from ._server import CONTROL_PREFIX
from ._state import SimulatorState

__all__ = ["SimulatorControl"]


class SimulatorControl:
    """A small client of a served simulator's control API.

    ``SimulatorControl("http://127.0.0.1:8765").state()`` returns the same
    :class:`SimulatorState` that ``fake.state`` gives in the serving process.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url + CONTROL_PREFIX, timeout=timeout)

    def _call(self, method: str, action: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, action, json=body)
        if response.status_code == 400:
            raise ConfigError(response.json().get("problems") or response.text)
        response.raise_for_status()
        return response.json()

    def state(self) -> SimulatorState:
        """The ground truth now."""
        return SimulatorState.from_json(self._call("GET", "state"))

    def faults(self) -> Faults:
        """The faults in force."""
        return Faults(**self._call("GET", "faults"))

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault fields; returns the faults now in force."""
        return Faults(**self._call("POST", "faults", _jsonable(changes)))

    def advance(self, seconds: float) -> float:
        """Move the served simulator's clock forward; returns its new time."""
        now: float = self._call("POST", "advance", {"seconds": seconds})["now"]
        return now

    def fail_next(self, count: int) -> None:
        """The next ``count`` requests get 503."""
        self._call("POST", "fail_next", {"count": count})

    def expire_tokens(self) -> int:
        """Revoke every session; returns how many there were."""
        expired: int = self._call("POST", "expire_tokens")["expired"]
        return expired

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the simulator answers (e.g. right after starting it)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "health")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> SimulatorControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in changes.items()}
