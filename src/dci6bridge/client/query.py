"""``Q``: build DCImanager ``where`` filters and ``orderby`` keys without string pasting.

The grammar is not documented by the vendor; what is attested in real requests
(reference §4) is: comparisons ``EQ``, ``NE``, ``CP`` (SQL ``%`` patterns), ``IS null``;
``AND``; prefix ``NOT``; parentheses; strings in single quotes; numbers and
``true``/``false`` bare. ``OR`` is not attested, so ``Q`` does not offer it.

Rendering rules (the simulator parses exactly this):

* inside a string a single quote is **doubled** (``'O''Brien'``, the SQL standard) and
  a backslash is doubled too (``'C:\\\\tmp'``), as MySQL's default mode expects; the
  simulator reads both. Only values containing a backslash depend on this undocumented
  detail: verify them against your installation (see ``docs/recording.md``);
* in an ``AND`` chain, ``IS null`` tests and negations are parenthesised, plain
  comparisons are not, so :meth:`Q.free` renders as the documented
  ``(owner_email IS null) AND is_new EQ false``;
* ``NOT`` always parenthesises its operand: ``NOT (name CP '%test%')``.

>>> str((Q("location_id") == 3) & Q("name").like("%srv%"))
"location_id EQ 3 AND name CP '%srv%'"
"""

from __future__ import annotations

import re
from typing import Final, Literal

import attrs

from dci6bridge.errors import ConfigError

__all__ = ["Condition", "Q", "SortKey", "render_orderby", "render_where"]

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _field_name(name: object) -> str:
    if not isinstance(name, str) or not _FIELD.fullmatch(name):
        raise ConfigError(f"Q field: {name!r} is not a field name (letters, digits, _ and .)")
    return name


def literal(value: object, *, field: str = "value") -> str:
    """``value`` as a filter literal: a quoted string (quotes and backslashes doubled),
    a bare number or ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"Q({field!r}): {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    raise ConfigError(
        f"Q({field!r}): {value!r} ({type(value).__name__}) is not a str, int, float or bool"
    )


@attrs.frozen
class Condition:
    """A filter expression; combine with ``&`` and ``~``, render with ``str()``."""

    text: str
    kind: Literal["cmp", "null", "and", "not"]
    parts: tuple[Condition, ...] = ()

    def __and__(self, other: Condition) -> Condition:
        if not isinstance(other, Condition):
            return NotImplemented
        parts = (*self._and_parts(), *other._and_parts())
        return Condition(" AND ".join(p._in_and() for p in parts), "and", parts)

    def __invert__(self) -> Condition:
        return Condition(f"NOT ({self.text})", "not", (self,))

    def __or__(self, other: object) -> Condition:
        raise TypeError("DCImanager's filter grammar has no attested OR; use two queries")

    def __bool__(self) -> bool:
        raise TypeError("a Q condition has no truth value; combine with & and ~, not and/not")

    def _and_parts(self) -> tuple[Condition, ...]:
        return self.parts if self.kind == "and" else (self,)

    def _in_and(self) -> str:
        return self.text if self.kind == "cmp" else f"({self.text})"

    def __str__(self) -> str:
        return self.text


@attrs.frozen
class SortKey:
    """One ``orderby`` key: ``str(Q("id").desc())`` is ``"id desc"``."""

    field: str
    direction: Literal["asc", "desc"] = "asc"

    def __str__(self) -> str:
        return f"{self.field} {self.direction}"


@attrs.frozen(eq=False)
class Q:
    """A field to filter or sort on: ``Q("location_id") == 3``, ``Q("id").desc()``.

    Comparisons return a :class:`Condition`. ``== None`` means ``IS null``.
    """

    name: str = attrs.field(converter=_field_name)

    def _cmp(self, op: str, value: object) -> Condition:
        return Condition(f"{self.name} {op} {literal(value, field=self.name)}", "cmp")

    def __eq__(self, value: object) -> Condition:  # type: ignore[override]
        if value is None:
            return self.is_null()
        return self._cmp("EQ", value)

    def __ne__(self, value: object) -> Condition:  # type: ignore[override]
        if value is None:
            return ~self.is_null()
        return self._cmp("NE", value)

    __hash__ = None  # type: ignore[assignment]

    def like(self, pattern: str) -> Condition:
        """``CP`` pattern match; ``%`` matches any run of characters."""
        if not isinstance(pattern, str):
            raise ConfigError(f"Q({self.name!r}).like: {pattern!r} is not a string")
        return self._cmp("CP", pattern)

    def contains(self, text: str) -> Condition:
        """``CP '%text%'``."""
        return self.like(f"%{text}%")

    def is_null(self) -> Condition:
        """``IS null``."""
        return Condition(f"{self.name} IS null", "null")

    def asc(self) -> SortKey:
        """Ascending ``orderby`` key."""
        return SortKey(self.name, "asc")

    def desc(self) -> SortKey:
        """Descending ``orderby`` key."""
        return SortKey(self.name, "desc")

    @staticmethod
    def free() -> Condition:
        """The documented free-server filter: ``(owner_email IS null) AND is_new EQ false``.

        It covers owner and ``is_new`` only; :attr:`Server.is_free` checks the rest.
        """
        return Q("owner_email").is_null() & (Q("is_new") == False)  # noqa: E712


_ORDERBY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.]* (asc|desc)")


def render_where(where: Condition | str | None) -> str | None:
    """A ``where`` argument as the query-string value (``str`` passes through)."""
    if where is None or isinstance(where, str):
        return where
    if isinstance(where, Condition):
        return where.text
    raise ConfigError(f"where: {where!r} is not a Q condition or a string")


def render_orderby(orderby: SortKey | str | None) -> str | None:
    """An ``orderby`` argument: a :class:`SortKey`, ``"field asc|desc"`` or a bare field."""
    if orderby is None:
        return None
    if isinstance(orderby, SortKey):
        return str(orderby)
    if isinstance(orderby, str):
        if _FIELD.fullmatch(orderby):
            return f"{orderby} asc"
        if _ORDERBY.fullmatch(orderby):
            return orderby
    raise ConfigError(f"orderby: {orderby!r} is not 'field', 'field asc' or 'field desc'")
