"""The platform's list grammar: ``where``, ``orderby`` and ``limit``, compiled once.

``where`` is an infix expression (see ``reference/dci6-api.md`` §4)::

    expr    := term (OR term)*
    term    := factor (AND factor)*
    factor  := NOT factor | '(' expr ')' | field EQ value | field NE value
             | field CP 'pattern' | field IS [NOT] null
    value   := 'single-quoted' | number | true | false | null

Keywords are case-insensitive; fields are dotted paths (``operation.status``). Inside
strings a quote is written ``\\'`` or ``''`` and a backslash ``\\\\``. ``CP`` matches
with ``%`` as "any run of characters" (case-sensitive). Comparisons follow SQL's
three-valued logic: comparing a null field with ``EQ``, ``NE`` or ``CP`` is *unknown*,
``NOT unknown`` stays unknown, and only rows where the whole expression is true match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "FilterError",
    "ListQuery",
    "Predicate",
    "compare_eq",
    "compile_where",
    "like_regex",
    "parse_limit",
    "parse_orderby",
]

Row = Mapping[str, Any]
#: A compiled ``where``: True, False or None (SQL "unknown") for a row.
Predicate = Callable[[Row], "bool | None"]


class FilterError(ValueError):
    """A ``where``/``orderby``/``limit`` parameter that does not parse.

    ``param`` names the query parameter, ``value`` is its text.
    """

    def __init__(self, param: str, value: str, message: str) -> None:
        self.param = param
        self.value = value
        super().__init__(f"{param}: {message}")


# --------------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<string>'(?:[^'\\]|\\.|'')*')
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE | re.DOTALL,
)
_KEYWORDS = frozenset({"AND", "OR", "NOT", "EQ", "NE", "CP", "IS", "NULL", "TRUE", "FALSE"})
_UNESCAPE = re.compile(r"\\(.)|''", re.DOTALL)


@attrs.frozen
class _Tok:
    kind: str  # "(", ")", "string", "number", "kw", "field", "end"
    text: str
    pos: int
    value: Any = None


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FilterError("where", text, f"unexpected character {text[pos]!r} at {pos}")
        kind = m.lastgroup
        raw = m.group()
        if kind == "lparen":
            tokens.append(_Tok("(", raw, pos))
        elif kind == "rparen":
            tokens.append(_Tok(")", raw, pos))
        elif kind == "string":
            inner = raw[1:-1]
            value = _UNESCAPE.sub(lambda g: g.group(1) if g.group(1) is not None else "'", inner)
            tokens.append(_Tok("string", raw, pos, value))
        elif kind == "number":
            tokens.append(
                _Tok("number", raw, pos, int(raw) if raw.lstrip("-").isdigit() else float(raw))
            )
        elif kind == "word":
            upper = raw.upper()
            if upper in _KEYWORDS:
                tokens.append(_Tok("kw", upper, pos))
            else:
                tokens.append(_Tok("field", raw, pos))
        pos = m.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


# --------------------------------------------------------------------------- semantics


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def compare_eq(left: Any, right: Any) -> bool | None:
    """``left EQ right`` with SQL-like coercion; None (unknown) when either is null.

    Strings compare as strings; numbers and booleans (true = 1) numerically; a string
    and a number compare numerically when the string is a number, else they differ.
    """
    if left is None or right is None:
        return None
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    a, b = _as_number(left), _as_number(right)
    if a is None or b is None:
        return False
    return a == b


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def like_regex(pattern: str) -> re.Pattern[str]:
    """The regex for a ``CP`` pattern: ``%`` is any run of characters, the rest literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("%")), re.DOTALL)


def _getter(path: str) -> Callable[[Row], Any]:
    parts = path.split(".")
    if len(parts) == 1:
        key = parts[0]
        return lambda row: row.get(key)

    def get(row: Row) -> Any:
        value: Any = row
        for part in parts:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    return get


def _combine(parts: Sequence[Predicate], *, decisive: bool) -> Predicate:
    """OR (``decisive=True``: one true part decides) or AND (one false part decides),
    in SQL's three-valued logic: otherwise any unknown part makes the whole unknown."""

    def combined(row: Row) -> bool | None:
        unknown = False
        for p in parts:
            r = p(row)
            if r is decisive:
                return decisive
            if r is None:
                unknown = True
        return None if unknown else not decisive

    return combined


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, fields: Collection[str]) -> None:
        self.text = text
        self.fields = fields
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.top_or = False
        #: ``field EQ literal`` conjuncts of the top-level AND chain: every match has
        #: these values, so a caller may narrow its candidates by them first.
        self.top_equalities: dict[str, Any] = {}

    def error(self, message: str) -> FilterError:
        return FilterError("where", self.text, message)

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_kw(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "kw" and tok.text == word

    def parse(self) -> Predicate:
        pred = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise self.error(f"unexpected {tok.text!r} at {tok.pos}")
        return pred

    def expr(self) -> Predicate:
        parts = [self.term()]
        while self.at_kw("OR"):
            self.take()
            parts.append(self.term())
        if len(parts) == 1:
            return parts[0]
        if self.depth == 0:
            self.top_or = True
        return _combine(parts, decisive=True)

    def term(self) -> Predicate:
        parts = [self.factor()]
        while self.at_kw("AND"):
            self.take()
            parts.append(self.factor())
        if len(parts) == 1:
            return parts[0]
        return _combine(parts, decisive=False)

    def factor(self) -> Predicate:
        tok = self.peek()
        if tok.kind == "kw" and tok.text == "NOT":
            self.take()
            self.depth += 1
            inner = self.factor()
            self.depth -= 1

            def negate(row: Row) -> bool | None:
                r = inner(row)
                return None if r is None else not r

            return negate
        if tok.kind == "(":
            self.take()
            self.depth += 1
            inner = self.expr()
            self.depth -= 1
            close = self.take()
            if close.kind != ")":
                raise self.error(f"expected ')' at {close.pos}, found {close.text or 'end'!r}")
            return inner
        if tok.kind == "field":
            return self.comparison()
        raise self.error(f"expected a field name at {tok.pos}, found {tok.text or 'end'!r}")

    def value(self) -> Any:
        tok = self.take()
        if tok.kind in ("string", "number"):
            return tok.value
        if tok.kind == "kw" and tok.text in ("TRUE", "FALSE"):
            return tok.text == "TRUE"
        if tok.kind == "kw" and tok.text == "NULL":
            return None
        raise self.error(f"expected a value at {tok.pos}, found {tok.text or 'end'!r}")

    def comparison(self) -> Predicate:
        field_tok = self.take()
        name = field_tok.text
        if name not in self.fields:
            raise self.error(
                f"unknown field {name!r}; known fields: {', '.join(sorted(self.fields))}"
            )
        get = _getter(name)
        op = self.take()
        if op.kind != "kw" or op.text not in ("EQ", "NE", "CP", "IS"):
            raise self.error(f"expected EQ, NE, CP or IS after {name!r} at {op.pos}")
        if op.text == "IS":
            negated = False
            if self.at_kw("NOT"):
                self.take()
                negated = True
            null = self.take()
            if not (null.kind == "kw" and null.text == "NULL"):
                raise self.error(f"expected null after IS at {null.pos}")
            if negated:
                return lambda row: get(row) is not None
            return lambda row: get(row) is None
        value = self.value()
        if op.text == "CP":
            if not isinstance(value, str):
                raise self.error(f"CP needs a quoted pattern, got {value!r}")
            regex = like_regex(value)

            def like(row: Row) -> bool | None:
                v = get(row)
                if v is None:
                    return None
                return regex.fullmatch(_text(v)) is not None

            return like
        if value is None:
            # ``x EQ null`` is unknown in SQL for every row; so is ``x NE null``.
            return lambda row: None
        kind = type(value)
        if op.text == "EQ":
            if self.depth == 0:
                self.top_equalities[name] = value

            def equals(row: Row) -> bool | None:
                v = get(row)
                if v is None:
                    return None
                if type(v) is kind:  # the common case, without coercion
                    return bool(v == value)
                return compare_eq(v, value)

            return equals

        def differs(row: Row) -> bool | None:
            v = get(row)
            if v is None:
                return None
            if type(v) is kind:
                return bool(v != value)
            r = compare_eq(v, value)
            return None if r is None else not r

        return differs


def compile_where(text: str, fields: Collection[str]) -> Predicate:
    """Compile a ``where`` expression; raises :class:`FilterError` on bad syntax or an
    unknown field (``fields`` lists the dotted paths allowed)."""
    return _compile(text, fields)[0]


def _compile(text: str, fields: Collection[str]) -> tuple[Predicate, Mapping[str, Any]]:
    if not text.strip():
        return (lambda row: True), {}
    parser = _Parser(text, fields)
    predicate = parser.parse()
    return predicate, ({} if parser.top_or else parser.top_equalities)


# --------------------------------------------------------------------------- orderby/limit

_ORDER_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)(?:\s+(asc|desc))?\s*$", re.IGNORECASE)


def parse_orderby(text: str, fields: Collection[str]) -> tuple[tuple[str, bool], ...]:
    """``"field [asc|desc][, ...]"`` → ``((field, descending), ...)``."""
    keys: list[tuple[str, bool]] = []
    for item in text.split(","):
        m = _ORDER_ITEM.match(item)
        if m is None:
            raise FilterError("orderby", text, f"expected '<field> asc|desc', got {item.strip()!r}")
        name, direction = m.group(1), (m.group(2) or "asc").lower()
        if name not in fields:
            raise FilterError("orderby", text, f"unknown field {name!r}")
        keys.append((name, direction == "desc"))
    return tuple(keys)


def parse_limit(text: str) -> tuple[int, int | None]:
    """``"offset,count"`` or ``"count"`` → ``(offset, count)``."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise FilterError("limit", text, "expected '<offset>,<count>' or '<count>' (digits)")
    if len(parts) == 1:
        return 0, int(parts[0])
    return int(parts[0]), int(parts[1])


def _sort_key(get: Callable[[Row], Any]) -> Callable[[Row], tuple[int, Any]]:
    def key(row: Row) -> tuple[int, Any]:
        v = get(row)
        if v is None:
            return (0, 0)
        if isinstance(v, (bool, int, float)):
            return (1, float(v))
        return (2, str(v))

    return key


@attrs.frozen
class ListQuery:
    """A compiled list request: filter, order and page."""

    predicate: Predicate
    order: tuple[tuple[str, bool], ...] = ()
    offset: int = 0
    count: int | None = None
    #: ``field EQ literal`` conjuncts every matching row satisfies (for index lookups).
    equalities: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, str], fields: Collection[str]) -> ListQuery:
        """Compile ``where``, ``orderby`` and ``limit`` from query parameters."""
        predicate, equalities = _compile(params.get("where", ""), fields)
        order = parse_orderby(params["orderby"], fields) if params.get("orderby") else ()
        offset, count = parse_limit(params["limit"]) if params.get("limit") else (0, None)
        return cls(predicate, order, offset, count, equalities)

    def apply(self, rows: Sequence[Row]) -> tuple[list[Row], int]:
        """The page of matching rows and the total number that matched."""
        matched = [r for r in rows if self.predicate(r) is True]
        # Stable sorts from the last key to the first give a multi-key order; nulls
        # sort first ascending, last descending, as in MySQL.
        for name, descending in reversed(self.order):
            matched.sort(key=_sort_key(_getter(name)), reverse=descending)
        total = len(matched)
        end = None if self.count is None else self.offset + self.count
        return matched[self.offset : end], total
