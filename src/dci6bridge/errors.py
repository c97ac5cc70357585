"""One exception tree for the whole library.

Every exception dci6bridge raises on purpose derives from :class:`Dci6BridgeError`, so a
billing integration can catch the library's failures with one ``except`` clause and still
tell them apart by subclass. Messages never contain passwords or tokens: the classes take
only already-safe values (HTTP status, the platform's error code and message, paths).

```
Dci6BridgeError
├── ConfigError (also ValueError)            bad catalog / bad argument, every problem listed
├── APIConnectionError                      the request did not get an HTTP answer
│   └── APITimeoutError
├── APIStatusError                          DCImanager answered with an error status
│   ├── BadRequestError            400
│   ├── AuthenticationError        401
│   ├── PermissionDeniedError      403
│   ├── NotFoundError              404
│   ├── ConflictError              409
│   └── ServerError                5xx
│       └── ServiceUnavailableError  503 still answered after every retry
├── ResponseValidationError                 a 2xx body that does not have the documented shape
├── OperationError                          a DCImanager operation did not finish well
│   ├── OperationFailedError
│   └── OperationTimeoutError
├── SelectionError                          no processing module can serve the order
├── StoreError                              status store problems
│   ├── LeaseLost                           fencing: another worker owns the service now
│   ├── StaleState                          compare-and-set lost against a newer state
│   ├── SpecMismatch (also ValueError)      same service id, different order
│   ├── ServiceNotFound (also KeyError)
│   ├── TaskNotFound (also KeyError)
│   └── InvalidRequest (also ValueError)    e.g. resuming a closed service
├── SimulationError                         the deterministic simulation could not go on
└── ...
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "Dci6BridgeError",
    "InvalidRequest",
    "LeaseLost",
    "NotFoundError",
    "OperationError",
    "OperationFailedError",
    "OperationTimeoutError",
    "PermissionDeniedError",
    "ResponseValidationError",
    "SelectionError",
    "ServerError",
    "ServiceNotFound",
    "ServiceUnavailableError",
    "SimulationError",
    "SpecMismatch",
    "StaleState",
    "StoreError",
    "TaskNotFound",
    "status_error_class",
]


class Dci6BridgeError(Exception):
    """Base class of every error dci6bridge raises on purpose."""


class ConfigError(Dci6BridgeError, ValueError):
    """Invalid configuration or argument.

    ``problems`` lists every problem found, each as ``"<path>: <what is wrong>"`` with the
    offending value, e.g. ``"modules[1].url: 'ftp://x' is not an http(s) URL"``. Secrets
    are never echoed: a bad password is reported by its path only.
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


# --------------------------------------------------------------------------- transport


class APIConnectionError(Dci6BridgeError):
    """No HTTP answer: connection refused, reset, TLS failure, DNS failure.

    ``method`` and ``path`` name the request (the path never carries a token).
    """

    def __init__(self, message: str, *, method: str = "", path: str = "") -> None:
        self.method = method
        self.path = path
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{message}{where}")


class APITimeoutError(APIConnectionError):
    """The request timed out. DCImanager may or may not have acted: read back first."""


# --------------------------------------------------------------------------- status


class APIStatusError(Dci6BridgeError):
    """DCImanager answered with a non-2xx status.

    Attributes:
        status_code: the HTTP status.
        error_code: the platform's internal error code (e.g. ``1106``, ``3001``), if any.
        message: the platform's message (``error.msg`` or the auth service's ``error`` text).
        value: the platform's ``error.value`` (additional information), if any.
        field: the offending field named by the auth service on 400, if any.
        method, path: the request.
        body: the parsed JSON body (or ``None``).
    """

    def __init__(
        self,
        *,
        status_code: int,
        method: str,
        path: str,
        error_code: int | None = None,
        message: str = "",
        value: Any = None,
        field: str | None = None,
        body: Any = None,
    ) -> None:
        self.status_code = status_code
        self.method = method
        self.path = path
        self.error_code = error_code
        self.message = message
        self.value = value
        self.field = field
        self.body = body
        parts = [f"HTTP {status_code}"]
        if error_code is not None:
            parts.append(f"code {error_code}")
        text = " ".join(parts) + f" on {method} {path}"
        if message:
            text += f": {message}"
        if field:
            text += f" (field {field!r})"
        super().__init__(text)


class BadRequestError(APIStatusError):
    """HTTP 400: DCImanager rejected the request's parameters."""


class AuthenticationError(APIStatusError):
    """HTTP 401: bad or expired credentials, even after logging in again."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403: not allowed (e.g. ``403IpForbidden`` at login)."""


class NotFoundError(APIStatusError):
    """HTTP 404: no such object or route."""


class ConflictError(APIStatusError):
    """HTTP 409: the object's state does not allow the action (e.g. owned server)."""


class ServerError(APIStatusError):
    """HTTP 5xx from DCImanager."""


class ServiceUnavailableError(ServerError):
    """HTTP 503 still answered after every retry the :class:`RetryPolicy` allowed."""


_STATUS_CLASSES: Mapping[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    503: ServiceUnavailableError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The most specific :class:`APIStatusError` subclass for an HTTP status."""
    cls = _STATUS_CLASSES.get(status_code)
    if cls is not None:
        return cls
    if status_code >= 500:
        return ServerError
    return APIStatusError


# --------------------------------------------------------------------------- validation


class ResponseValidationError(Dci6BridgeError):
    """A successful response whose body does not have the expected shape.

    ``field`` is the JSON path of the bad value (e.g. ``$.list[3].id``), ``value`` a short
    repr of it, ``details`` every problem cattrs reported.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        field: str = "",
        details: Sequence[str] = (),
    ) -> None:
        self.method = method
        self.path = path
        self.field = field
        self.details = tuple(details)
        where = f" on {method} {path}" if method else ""
        super().__init__(f"{message}{where}")


# --------------------------------------------------------------------------- operations


class OperationError(Dci6BridgeError):
    """A long-running DCImanager operation on a server did not end well.

    ``server_id`` names the server, ``status`` is the operation's last status string and
    ``status_info`` its ``status_info`` object as DCImanager reported it.
    """

    def __init__(
        self,
        message: str,
        *,
        server_id: int,
        status: str | None = None,
        status_info: Any = None,
        operation: Any = None,
    ) -> None:
        self.server_id = server_id
        self.status = status
        self.status_info = status_info
        self.operation = operation
        super().__init__(message)


class OperationFailedError(OperationError):
    """The operation ended with a failure status."""


class OperationTimeoutError(OperationError):
    """The operation had not ended when the wait's timeout ran out."""


# --------------------------------------------------------------------------- selection


class SelectionError(Dci6BridgeError):
    """No processing module can serve the tariff; ``reasons`` says why for each module."""

    def __init__(self, tariff: str, reasons: Sequence[tuple[str, str]]) -> None:
        self.tariff = tariff
        self.reasons = tuple(reasons)
        detail = "; ".join(f"{name}: {why}" for name, why in self.reasons) or "no modules"
        super().__init__(f"no processing module can serve tariff {tariff!r} ({detail})")


# --------------------------------------------------------------------------- stores


class StoreError(Dci6BridgeError):
    """A status-store problem."""


class LeaseLost(StoreError):
    """The worker's lease on a service expired or was taken over (fencing epoch changed).

    The worker must stop touching the service at once and do no cleanup.
    """


class StaleState(StoreError):
    """A compare-and-set transition found a different state or version than expected."""


class SpecMismatch(StoreError, ValueError):
    """A service id was reused with a different order."""


class ServiceNotFound(StoreError, KeyError):
    """No service with that id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "service not found"


class TaskNotFound(StoreError, KeyError):
    """No department task with that id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "department task not found"


class InvalidRequest(StoreError, ValueError):
    """The request is not allowed in the service's current state (e.g. resume a closed one)."""


class SimulationError(Dci6BridgeError):
    """The deterministic simulation (:mod:`dci6bridge.testing.simulation`) could not go
    on: an actor blocked outside the scheduler, or billing's call kept crashing."""
