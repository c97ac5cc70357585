"""A value that must never be shown: passwords and tokens.

``Secret`` wraps a string so that ``repr``, ``str``, f-strings, logging and attrs reprs of
objects holding it print ``'***'``. Only :meth:`Secret.reveal` gives the value back, which
makes every place that sends a secret over the wire easy to find with grep.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Secret"]


class Secret:
    """A string that hides itself. Compare with ``==``; read with :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The hidden value. Call it only where the value leaves for DCImanager."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (multiprocessing) must keep the value; it is not a display path.
        return (Secret, (self._value,))
