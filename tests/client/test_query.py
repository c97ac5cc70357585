"""The query builder: exact rendering, quoting, and a property-based round trip through
the simulator's parser (the agreed grammar: quotes and backslashes doubled)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dci6bridge as d
from dci6bridge import Q
from dci6bridge.client.query import Condition, render_orderby, render_where
from dci6bridge.testing._filters import compile_where

FIELDS = {"a", "b", "c", "name"}


def test_free_is_the_documented_filter() -> None:
    assert str(Q.free()) == "(owner_email IS null) AND is_new EQ false"


@pytest.mark.parametrize(
    ("cond", "text"),
    [
        (Q("location_id") == 3, "location_id EQ 3"),
        (Q("location_id") != 3, "location_id NE 3"),
        (Q("is_new") == True, "is_new EQ true"),  # noqa: E712
        (Q("ratio") == 1.5, "ratio EQ 1.5"),
        (Q("name").like("%srv%"), "name CP '%srv%'"),
        (Q("name").contains("Srv-1"), "name CP '%Srv-1%'"),
        (Q("owner_email").is_null(), "owner_email IS null"),
        (Q("owner_email") == None, "owner_email IS null"),  # noqa: E711
        (Q("owner_email") != None, "NOT (owner_email IS null)"),  # noqa: E711
        (Q("email") == "O'Brien@x.y", "email EQ 'O''Brien@x.y'"),
        (Q("path") == "C:\\tmp", "path EQ 'C:\\\\tmp'"),
        (Q("account.id") == 3, "account.id EQ 3"),
        (~(Q("domain").like("%extended.%")), "NOT (domain CP '%extended.%')"),
        (
            Q.free() & (Q("location_id") == 3) & (Q("configuration") == "E3"),
            "(owner_email IS null) AND is_new EQ false AND location_id EQ 3 "
            "AND configuration EQ 'E3'",
        ),
        (
            (Q("a") == 1) & ~((Q("b") == 2) & (Q("c") == 3)),
            "a EQ 1 AND (NOT (b EQ 2 AND c EQ 3))",
        ),
    ],
)
def test_rendering(cond: Condition, text: str) -> None:
    assert str(cond) == text
    assert render_where(cond) == text


def test_no_or_in_the_grammar() -> None:
    with pytest.raises(TypeError, match="no attested OR"):
        (Q("a") == 1) | (Q("b") == 2)


def test_conditions_have_no_truth_value() -> None:
    with pytest.raises(TypeError, match="truth value"):
        bool(Q("a") == 1)
    with pytest.raises(TypeError, match="truth value"):
        (Q("a") == 1) and (Q("b") == 2)


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a;b", "a'", "a..b", 3])
def test_bad_field_names(name: Any) -> None:
    with pytest.raises(d.ConfigError, match="is not a field name"):
        Q(name)


@pytest.mark.parametrize("value", [[1], {"a": 1}, b"x", float("nan"), float("inf"), object()])
def test_bad_values(value: Any) -> None:
    with pytest.raises(d.ConfigError, match=r"Q\('a'\)"):
        Q("a") == value  # noqa: B015


def test_orderby() -> None:
    assert str(Q("id").desc()) == "id desc"
    assert render_orderby(Q("name").asc()) == "name asc"
    assert render_orderby("owner_email asc") == "owner_email asc"
    assert render_orderby("id") == "id asc"
    assert render_orderby(None) is None
    with pytest.raises(d.ConfigError, match="orderby: 'id up'"):
        render_orderby("id up")


def test_where_accepts_raw_strings() -> None:
    assert render_where("id EQ 5") == "id EQ 5"
    with pytest.raises(d.ConfigError, match="where: 5"):
        render_where(5)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.text())
def test_string_literal_round_trips(value: str) -> None:
    matches = compile_where(str(Q("name") == value), FIELDS)
    assert matches({"name": value}) is True
    assert matches({"name": value + "'"}) is False
    differs = compile_where(str(Q("name") != value), FIELDS)
    assert differs({"name": value}) is False


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(exclude_characters="%"), max_size=20), st.text(max_size=5))
def test_like_round_trips(inner: str, other: str) -> None:
    pattern = compile_where(str(Q("name").contains(inner)), FIELDS)
    assert pattern({"name": other + inner + other}) is True


# A random AND/NOT tree over a row, evaluated by Python and by the simulator's parser.
Row = dict[str, Any]
leaf = st.one_of(
    st.tuples(st.just("eq_a"), st.integers(-3, 3)),
    st.tuples(st.just("ne_a"), st.integers(-3, 3)),
    st.tuples(st.just("eq_b"), st.sampled_from(["x", "y'", "z\\", "%"])),
    st.tuples(st.just("cp_b"), st.sampled_from(["%", "x%", "%'", "y%"])),
    st.tuples(st.just("null_c"), st.none()),
)
tree = st.recursive(
    leaf,
    lambda kids: st.one_of(
        st.tuples(st.just("and"), st.lists(kids, min_size=2, max_size=3)),
        st.tuples(st.just("not"), kids),
    ),
    max_leaves=8,
)


def build(node: Any) -> tuple[Condition, Any]:
    kind, arg = node
    if kind == "and":
        built = [build(k) for k in arg]
        cond = built[0][0]
        for c, _ in built[1:]:
            cond = cond & c
        return cond, lambda r: all(f(r) for _, f in built)
    if kind == "not":
        c, f = build(arg)
        return ~c, lambda r: not f(r)
    if kind == "eq_a":
        return Q("a") == arg, lambda r: r["a"] == arg
    if kind == "ne_a":
        return Q("a") != arg, lambda r: r["a"] != arg
    if kind == "eq_b":
        return Q("b") == arg, lambda r: r["b"] == arg
    if kind == "cp_b":
        prefix, suffix = arg.startswith("%"), arg.endswith("%")
        core = arg.strip("%")

        def like(r: Row) -> bool:
            s = r["b"]
            if arg == "%":
                return True
            if prefix and suffix:
                return core in s
            if suffix:
                return s.startswith(core)
            return s.endswith(core)

        return Q("b").like(arg), like
    return Q("c").is_null(), lambda r: r["c"] is None


@settings(max_examples=300)
@given(
    tree,
    st.fixed_dictionaries(
        {
            "a": st.integers(-3, 3),
            "b": st.sampled_from(["x", "y'", "z\\", "%", "xy'"]),
            "c": st.one_of(st.none(), st.just("set")),
        }
    ),
)
def test_expressions_evaluate_like_python(node: Any, row: Row) -> None:
    cond, expected = build(node)
    assert compile_where(str(cond), FIELDS)(row) is expected(row)
