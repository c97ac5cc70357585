"""The where/orderby/limit grammar: parsing, three-valued logic, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dci6bridge.testing._filters import FilterError, ListQuery, compile_where

FIELDS = frozenset({"id", "name", "is_new", "owner_email", "location_id", "operation.status"})

# --------------------------------------------------------------------------- reference


def ref_like(text: str, pattern: str) -> bool:
    """``%`` matches any run of characters: a plain dynamic programme."""
    n, m = len(text), len(pattern)
    match = [[False] * (m + 1) for _ in range(n + 1)]
    match[0][0] = True
    for j in range(1, m + 1):
        match[0][j] = match[0][j - 1] and pattern[j - 1] == "%"
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if pattern[j - 1] == "%":
                match[i][j] = match[i][j - 1] or match[i - 1][j]
            else:
                match[i][j] = match[i - 1][j - 1] and text[i - 1] == pattern[j - 1]
    return match[n][m]


def ref_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except ValueError:
        return None


def ref_eq(a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    x, y = ref_number(a), ref_number(b)
    return False if x is None or y is None else x == y


def ref_eval(node: tuple[Any, ...], row: dict[str, Any]) -> bool | None:
    kind = node[0]
    if kind == "and":
        results = [ref_eval(n, row) for n in node[1]]
        if False in results:
            return False
        return None if None in results else True
    if kind == "or":
        results = [ref_eval(n, row) for n in node[1]]
        if True in results:
            return True
        return None if None in results else False
    if kind == "not":
        r = ref_eval(node[1], row)
        return None if r is None else not r
    field, op, value = node[1], node[0], node[2] if len(node) > 2 else None
    actual = row["operation"]["status"] if field == "operation.status" else row[field]
    if op == "null":
        return actual is None
    if op == "notnull":
        return actual is not None
    if op == "EQ":
        return ref_eq(actual, value)
    if op == "NE":
        r = ref_eq(actual, value)
        return None if r is None else not r
    if actual is None:
        return None
    text = ("1" if actual else "0") if isinstance(actual, bool) else str(actual)
    return ref_like(text, value)


# --------------------------------------------------------------------------- generation

TEXT = st.text(alphabet="ab%' \\x", max_size=6)
VALUES = st.one_of(TEXT, st.integers(-3, 3), st.booleans())


def quote(value: str, style: str) -> str:
    if style == "doubled":
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@st.composite
def leaves(draw: st.DrawFn) -> tuple[tuple[Any, ...], str]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    op = draw(st.sampled_from(["EQ", "NE", "CP", "null", "notnull"]))
    style = draw(st.sampled_from(["doubled", "backslash"]))
    if op == "null":
        return (op, field), f"{field} IS null"
    if op == "notnull":
        return (op, field), f"{field} IS NOT null"
    value = draw(TEXT) if op == "CP" else draw(VALUES)
    if isinstance(value, bool):
        literal = "true" if value else "false"
    elif isinstance(value, int):
        literal = str(value)
    else:
        literal = quote(value, style)
    return (op, field, value), f"{field} {op} {literal}"


def combine(children: st.SearchStrategy[tuple[tuple[Any, ...], str]]) -> Any:
    def join(kind: str) -> Any:
        word = f" {kind.upper()} "
        return st.lists(children, min_size=2, max_size=3).map(
            lambda parts: ((kind, [p[0] for p in parts]), word.join(f"({p[1]})" for p in parts))
        )

    return st.one_of(
        join("and"),
        join("or"),
        children.map(lambda c: (("not", c[0]), f"NOT ({c[1]})")),
    )


EXPRESSIONS = st.recursive(leaves(), combine, max_leaves=6)
ROWS = st.fixed_dictionaries(
    {
        "id": st.integers(-3, 3),
        "name": st.one_of(st.none(), TEXT),
        "is_new": st.booleans(),
        "owner_email": st.one_of(st.none(), TEXT),
        "location_id": st.one_of(st.none(), st.integers(-3, 3)),
        "operation": st.fixed_dictionaries({"status": st.one_of(st.none(), TEXT)}),
    }
)


@settings(max_examples=300)
@given(EXPRESSIONS, st.lists(ROWS, min_size=1, max_size=5))
def test_where_evaluates_like_the_reference(
    expr: tuple[tuple[Any, ...], str], rows: list[dict[str, Any]]
) -> None:
    tree, text = expr
    predicate = compile_where(text, FIELDS)
    for row in rows:
        assert predicate(row) == ref_eval(tree, row), (text, row)


# --------------------------------------------------------------------------- examples


def test_precedence_and_case_insensitive_keywords() -> None:
    p = compile_where("id EQ 1 or id EQ 2 and is_new eq true", FIELDS)
    row = {"id": 1, "is_new": False}
    assert p(row) is True  # AND binds tighter than OR
    p = compile_where("NOT id EQ 1 AND is_new EQ false", FIELDS)
    assert p({"id": 2, "is_new": False}) is True


def test_sql_null_logic() -> None:
    assert compile_where("owner_email NE 'x'", FIELDS)({"owner_email": None}) is None
    assert compile_where("NOT (owner_email EQ 'x')", FIELDS)({"owner_email": None}) is None
    assert compile_where("owner_email EQ null", FIELDS)({"owner_email": None}) is None


def test_escapes_in_strings() -> None:
    p = compile_where(r"name EQ 'O''Brien' OR name EQ 'it\'s' OR name EQ 'C:\\tmp'", FIELDS)
    for name in ("O'Brien", "it's", "C:\\tmp"):
        assert p({"name": name}) is True
    assert p({"name": "C:\\\\tmp"}) is False


def test_exponent_numbers_and_dotted_fields() -> None:
    p = compile_where("id EQ 1e0 AND operation.status EQ 'ok'", FIELDS)
    assert p({"id": 1, "operation": {"status": "ok"}}) is True


@pytest.mark.parametrize(
    "text",
    [
        "id EQ",
        "id LIKE 1",
        "(id EQ 1",
        "id EQ 1)",
        "id EQ 1 AND",
        "name CP 5",
        "unknown EQ 1",
        "id EQ 'unterminated",
        "id EQ 1 # comment",
        "id IS 1",
    ],
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_where(text, FIELDS)
    assert info.value.param == "where"


def test_orderby_and_limit() -> None:
    rows = [{"id": i, "name": n} for i, n in enumerate(["b", None, "a", "b", "c"])]
    q = ListQuery.from_params({"orderby": "name desc, id asc", "limit": "1,3"}, FIELDS)
    page, total = q.apply(rows)
    assert total == 5
    assert [r["id"] for r in page] == [0, 3, 2]
    q = ListQuery.from_params({"orderby": "name", "limit": "2"}, FIELDS)
    assert [r["id"] for r in q.apply(rows)[0]] == [1, 2]  # nulls first ascending


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "a,b"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1,2,3"}, "limit"),
        ({"orderby": "name sideways"}, "orderby"),
        ({"orderby": "colour asc"}, "orderby"),
        ({"where": "id EQ"}, "where"),
    ],
)
def test_bad_list_params_are_400_naming_the_parameter(
    http: httpx.Client, params: dict[str, str], param: str
) -> None:
    r = http.get("dci/v3/server", params=params)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["value"]["field"] == param
    assert error["value"]["value"] == params[param]


def test_list_envelope_size_is_the_total_before_paging(http: httpx.Client) -> None:
    r = http.get(
        "dci/v3/server", params={"where": "location_id EQ 1", "limit": "2,3", "orderby": "id desc"}
    )
    body = r.json()
    assert body["size"] == 6
    assert [s["id"] for s in body["list"]] == [4, 3, 2]


def test_the_clients_q_renders_what_the_simulator_reads(http: httpx.Client) -> None:
    from dci6bridge.client.query import Q

    where = Q.free() & (Q("location_id") == 2) & ~Q("name").like("%-001")
    r = http.get("dci/v3/server", params={"where": str(where)})
    assert r.status_code == 200, r.text
    assert [s["id"] for s in r.json()["list"]] == [8, 9, 10, 11, 12]
    tricky = Q("name") == "it's \\ odd"
    assert compile_where(str(tricky), FIELDS)({"name": "it's \\ odd"}) is True


@pytest.mark.parametrize(
    "where",
    [
        "location_id EQ 2",
        "location_id EQ '2'",  # coerced: not an index lookup, same answer
        "configuration EQ 'i9-9900K-64Gb-2x1024NVMe' AND location_id EQ 1",
        "location_id EQ 1 AND location_id EQ 2",
        "location_id EQ 1 OR configuration EQ 'A'",
        "(location_id EQ 1) AND NOT (configuration EQ 'i9-9900K-64Gb-2x1024NVMe')",
        "id EQ 3",
        "id EQ 3 OR id EQ 9",
        "id EQ 99",
        "location_id EQ true",
    ],
)
def test_index_narrowing_gives_the_full_scan_answer(http: httpx.Client, where: str) -> None:
    from dci6bridge.testing._world import SERVER_FIELDS

    every = http.get("dci/v3/server").json()["list"]
    predicate = compile_where(where, SERVER_FIELDS)
    expected = [s["id"] for s in every if predicate(s) is True]
    got = http.get("dci/v3/server", params={"where": where})
    assert got.status_code == 200
    assert [s["id"] for s in got.json()["list"]] == expected


def test_users_found_by_email_or_id_match_the_full_scan(http: httpx.Client) -> None:
    for email in ("a@example.com", "b@example.com", "a@example.com"):
        http.post("dci/v3/user", json={"email": email, "password": "pw"})
    by_email = http.get("dci/v3/user", params={"where": "email EQ 'a@example.com'"}).json()
    assert [u["id"] for u in by_email["list"]] == [2, 4]
    by_id = http.get("dci/v3/user", params={"where": "id EQ 3"}).json()
    assert [u["email"] for u in by_id["list"]] == ["b@example.com"]
    both = http.get("dci/v3/user", params={"where": "email EQ 'a@example.com' AND id EQ 3"})
    assert both.json() == {"list": [], "size": 0}
