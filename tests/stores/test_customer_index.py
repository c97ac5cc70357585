"""StatusStore.services_of_customer on every backend, and the migration that adds its
index to a database created at schema version 1."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from dci6bridge.errors import ConfigError
from dci6bridge.stores import StatusStore
from dci6bridge.stores import _rules as rules
from dci6bridge.stores import _schema as schema
from dci6bridge.stores._codec import SERVICE_COLUMNS, service_to_row

from . import test_schema
from .test_contract import lease_of, step
from .test_schema import Db

LIVE = ["pending", "active", "suspended"]


def spec(email: Any) -> dict[str, Any]:
    return {"tariff": "E3", "customer_email": email}


def ids(services: Sequence[Any]) -> list[str]:
    return [s.service_id for s in services]


def populate(store: StatusStore) -> None:
    """Services of one customer written several ways, across modules and states, plus
    other customers' services."""
    for sid, email, module, state in [
        ("S3", "Ann@Example.com", "dci-ams", "active"),
        ("S1", " ann@example.com\n", "dci-ams", "suspended"),
        ("S2", "ANN@EXAMPLE.COM", "dci-fra", "active"),
        ("S4", "ann@example.com", "dci-ams", "closed"),
        ("S5", "bob@example.com", "dci-ams", "active"),
        ("S6", "ann@example.org", "dci-ams", "active"),
    ]:
        store.create_service(sid, spec(email), state="pending", desired="active")
        lease = lease_of(store, sid)
        step(store, lease, state, patch={"module": module}, release=True)
    store.create_service("S7", {"tariff": "E3"}, state="pending", desired="active")
    store.create_service("S8", spec(42), state="pending", desired="active")


def test_matches_stripped_lower_cased_emails(store: StatusStore) -> None:
    populate(store)
    assert ids(store.services_of_customer("ann@example.com")) == ["S1", "S2", "S3", "S4"]
    assert ids(store.services_of_customer("  ANN@example.COM ")) == ["S1", "S2", "S3", "S4"]
    assert ids(store.services_of_customer("bob@example.com")) == ["S5"]
    assert store.services_of_customer("nobody@example.com") == []
    # a non-string email is compared as its text, as the orchestrator always did
    assert ids(store.services_of_customer("42")) == ["S8"]


def test_filters_by_module_and_states(store: StatusStore) -> None:
    populate(store)
    found = store.services_of_customer("ann@example.com", module="dci-ams", states=LIVE)
    assert ids(found) == ["S1", "S3"]
    assert [s.module for s in found] == ["dci-ams", "dci-ams"]
    assert ids(store.services_of_customer("ann@example.com", module="dci-fra")) == ["S2"]
    assert ids(store.services_of_customer("ann@example.com", states=["closed"])) == ["S4"]
    assert store.services_of_customer("ann@example.com", states=[]) == []
    # the rows are the full records, equal to what get() returns
    assert found[0] == store.get("S1")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"customer_email": ""}, "customer_email"),
        ({"customer_email": "   "}, "customer_email"),
        ({"customer_email": None}, "customer_email"),
        ({"customer_email": "a@b.c", "module": ""}, "module"),
        ({"customer_email": "a@b.c", "states": "active"}, "states"),
        ({"customer_email": "a@b.c", "states": ["active", 3]}, r"states\[1\]"),
    ],
)
def test_bad_arguments_name_the_field(
    store: StatusStore, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        store.services_of_customer(**kwargs)


# ---------------------------------------------------------------------------- migration


db = test_schema.db  # the same fixture: each SQL backend, raw SQL beside the store


def _insert_v1_rows(db: Db, rows: list[dict[str, Any]]) -> None:
    """Write service rows the way a version-1 dci6bridge did (no customer column)."""
    columns = ", ".join(SERVICE_COLUMNS)
    values = [[row[c] for c in SERVICE_COLUMNS] for row in rows]
    if db.backend == "sqlite":
        with sqlite3.connect(db.path) as conn:
            marks = ", ".join("?" for _ in SERVICE_COLUMNS)
            conn.executemany(f"INSERT INTO services ({columns}) VALUES ({marks})", values)
        return
    import psycopg

    base, _, query = db.url.partition("?")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{query.split("schema=")[1]}"')
        marks = ", ".join("%s" for _ in SERVICE_COLUMNS)
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO services ({columns}) VALUES ({marks})", values)


def test_a_version_1_database_migrates_and_answers(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as old:
        old.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        old.setattr(schema, "SCHEMA_VERSION", 1)
        db.open().close()
    assert db.sql("SELECT version FROM schema_version") == [(1,)]
    rows = []
    for sid, email, module, state in [
        ("A1", " Ann@Example.COM", "dci-ams", "active"),
        ("A2", "ann@example.com", "dci-ams", "closed"),
        ("A3", "ANN@example.com", "dci-fra", "active"),
        ("B1", "bob@example.com", "dci-ams", "active"),
    ]:
        fresh = rules.new_service(sid, spec(email), state=state, desired="active", now=1.0)
        rows.append(service_to_row(attrs.evolve(fresh, module=module)))
    rows.append(
        service_to_row(rules.new_service("C1", {}, state="active", desired="active", now=1.0))
    )
    _insert_v1_rows(db, rows)

    store = db.open()
    assert db.sql("SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    found = store.services_of_customer("ann@example.com", module="dci-ams", states=["active"])
    assert ids(found) == ["A1"]
    assert ids(store.services_of_customer("ann@example.com")) == ["A1", "A2", "A3"]
    assert ids(store.services_of_customer("bob@example.com")) == ["B1"]
    # rows written after the migration are indexed as well
    store.create_service("A4", spec("ann@EXAMPLE.com "), state="active", desired="active")
    assert ids(store.services_of_customer("ann@example.com", states=["active"])) == [
        "A1",
        "A3",
        "A4",
    ]
    if db.backend == "sqlite":
        plan = db.sql(
            "EXPLAIN QUERY PLAN SELECT * FROM services WHERE customer = 'x' AND module = 'y'"
        )
        assert "services_customer" in " ".join(str(r) for r in plan)
