"""Runtime checks of caller-supplied arguments (typed ``object`` on purpose: callers
without a type checker pass anything, and the error must name the field and value)."""

from __future__ import annotations

__all__ = ["is_int", "is_number", "is_text"]


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_text(value: object, *, empty: bool = False) -> bool:
    """A ``str`` (non-empty unless ``empty``)."""
    return isinstance(value, str) and (empty or bool(value))
