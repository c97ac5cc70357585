"""Checking request bodies field by field, answering 400 with the field's name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import bad_value

__all__ = ["int_list", "opt_bool", "opt_int", "opt_str", "req_int", "req_str", "str_list"]

_MISSING = object()


def _get(body: Mapping[str, Any], field: str) -> Any:
    return body.get(field, _MISSING)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def req_int(body: Mapping[str, Any], field: str, *, minimum: int | None = None) -> int:
    """A required integer field."""
    value = _get(body, field)
    if value is _MISSING:
        raise bad_value(field, None, "required")
    if not _is_int(value):
        raise bad_value(field, value, "must be an integer")
    if minimum is not None and value < minimum:
        raise bad_value(field, value, f"must be at least {minimum}")
    return int(value)


def opt_int(body: Mapping[str, Any], field: str) -> int | None:
    """An optional integer field (absent or null → None)."""
    value = _get(body, field)
    if value is _MISSING or value is None:
        return None
    if not _is_int(value):
        raise bad_value(field, value, "must be an integer or null")
    return int(value)


def req_str(
    body: Mapping[str, Any], field: str, *, secret: bool = False, max_len: int | None = None
) -> str:
    """A required non-empty string field; a secret's value is never echoed back."""
    value = _get(body, field)
    if value is _MISSING:
        raise bad_value(field, None, "required", secret=secret)
    if not isinstance(value, str) or not value:
        raise bad_value(field, value, "must be a non-empty string", secret=secret)
    if max_len is not None and len(value) > max_len:
        raise bad_value(field, value, f"at most {max_len} characters", secret=secret)
    return value


def opt_str(body: Mapping[str, Any], field: str, *, max_len: int | None = None) -> str | None:
    """An optional string field."""
    value = _get(body, field)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, str):
        raise bad_value(field, value, "must be a string")
    if max_len is not None and len(value) > max_len:
        raise bad_value(field, value, f"at most {max_len} characters")
    return value


def opt_bool(body: Mapping[str, Any], field: str) -> bool | None:
    """An optional boolean field."""
    value = _get(body, field)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, bool):
        raise bad_value(field, value, "must be true or false")
    return value


def int_list(body: Mapping[str, Any], field: str) -> list[int] | None:
    """An optional list of integers."""
    value = _get(body, field)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise bad_value(field, value, "must be a list of integers")
    return [int(v) for v in value]


def str_list(body: Mapping[str, Any], field: str) -> list[str] | None:
    """An optional list of strings."""
    value = _get(body, field)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_value(field, value, "must be a list of strings")
    return list(value)
