"""The platform's two error envelopes and the codes the simulator answers with.

dci/ip services answer ``{"error": {"code", "msg", "value"}}``; the auth v4 service
answers ``{"error": "<text>", "code": <int>}`` plus ``"field"`` on 400. Codes 1106, 3001
and 3080 are the platform's (``reference/dci6-api.md`` §3.2); the others are the
simulator's own choice, since the vendor does not publish them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "Code", "auth_error", "bad_value", "conflict", "dci_error", "not_found"]


class Code:
    """Internal error codes (see module docstring for which are the platform's)."""

    HANDLER_NOT_FOUND = 1106
    UNAUTHORIZED = 3001
    INSTANCE_NOT_FOUND = 3080
    BAD_VALUE = 1002
    CONFLICT = 1009
    UNAVAILABLE = 1503
    AUTH_BAD_FIELD = 1001
    AUTH_BAD_CREDENTIALS = 1003
    AUTH_BAD_TOKEN = 1004
    AUTH_NOT_FOUND = 1005


class ApiError(Exception):
    """An error answer: HTTP ``status`` and the JSON ``body`` to send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body!r}")


def dci_error(status: int, code: int, msg: str, value: Any = None) -> ApiError:
    """The dci/ip envelope; ``value`` is left out when ``None`` (as in F7)."""
    error: dict[str, Any] = {"code": code, "msg": msg}
    if value is not None:
        error["value"] = value
    return ApiError(status, {"error": error})


def auth_error(status: int, code: int, text: str, field: str | None = None) -> ApiError:
    """The auth v4 envelope, with ``field`` on 400."""
    body: dict[str, Any] = {"error": text, "code": code}
    if field is not None:
        body["field"] = field
    return ApiError(status, body)


def bad_value(field: str, value: Any, why: str, *, secret: bool = False) -> ApiError:
    """400 naming the field (and its value, unless the field holds a secret)."""
    shown: dict[str, Any] = {"field": field}
    if not secret:
        shown["value"] = value
    return dci_error(400, Code.BAD_VALUE, f"invalid value of field {field!r}: {why}", shown)


def not_found(kind: str, ident: Any) -> ApiError:
    """404 instance not found (code 3080)."""
    return dci_error(404, Code.INSTANCE_NOT_FOUND, f"{kind} {ident} not found", {"id": ident})


def conflict(msg: str, **value: Any) -> ApiError:
    """409: the object's state does not allow the action."""
    return dci_error(409, Code.CONFLICT, msg, value or {})
