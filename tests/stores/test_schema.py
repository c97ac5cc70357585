"""Schema creation and numbered migrations on the SQL backends."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dci6bridge.errors import StoreError
from dci6bridge.stores import PostgresStore, SQLiteStore, StatusStore, open_store
from dci6bridge.stores import _schema as schema

SQL_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
TABLES = {
    "schema_version",
    "services",
    "transitions",
    "server_claims",
    "requests",
    "outbox",
    "tasks",
    "singletons",
}


class Db:
    """Open the backend's store and run raw SQL on the same database."""

    def __init__(self, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self.path = tmp_path / "store.db"
        self.url = request.getfixturevalue("pg_store_url") if backend == "postgres" else ""
        self.opened: list[StatusStore] = []

    def open(self) -> StatusStore:
        store = SQLiteStore(self.path) if self.backend == "sqlite" else open_store(self.url)
        self.opened.append(store)
        return store

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            with sqlite3.connect(self.path) as conn:
                return list(conn.execute(statement).fetchall())
        import psycopg

        base, _, query = self.url.partition("?")
        name = query.split("schema=")[1]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{name}"')
            cur = conn.execute(statement)
            return list(cur.fetchall()) if cur.description else []

    def tables(self) -> set[str]:
        if self.backend == "sqlite":
            rows = self.sql("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = self.sql(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        return {r[0] for r in rows} - {"sqlite_sequence"}


@pytest.fixture(params=SQL_BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    handle = Db(str(request.param), tmp_path, request)
    yield handle
    for store in handle.opened:
        store.close()


def test_a_new_database_gets_every_table_and_the_version(db: Db) -> None:
    db.open()
    assert db.tables() == TABLES
    assert db.sql("SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]


def test_reopening_is_idempotent_and_keeps_the_data(db: Db) -> None:
    first = db.open()
    first.create_service("s", {"a": 1}, state="pending", desired="active")
    second = db.open()
    third = db.open()
    assert db.sql("SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    assert second.get("s") == third.get("s") == first.get("s")
    assert third.write_count == 0, "opening is not counted as a write"


def test_a_newer_database_is_refused(db: Db) -> None:
    db.open()
    db.sql("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match=r"schema version 99.*upgrade dci6bridge"):
        db.open()


def _with_migration(
    monkeypatch: pytest.MonkeyPatch, *statements: str
) -> Callable[[], tuple[str, ...]]:
    extra = (*schema.MIGRATIONS, statements)
    monkeypatch.setattr(schema, "MIGRATIONS", extra)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(extra))
    return lambda: statements


def test_a_later_migration_is_applied_on_open(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    db.open().create_service("s", {"a": 1}, state="pending", desired="active")
    _with_migration(monkeypatch, "CREATE TABLE {p}notes (body {text} NOT NULL)")
    store = db.open()
    assert "notes" in db.tables()
    assert db.sql("SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    assert store.get("s") is not None


def test_a_failing_migration_applies_nothing(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    db.open()
    before = db.sql("SELECT version FROM schema_version")
    _with_migration(
        monkeypatch,
        "CREATE TABLE {p}notes (body {text} NOT NULL)",
        "CREATE TABLE {p}broken (oops",
    )
    with pytest.raises(StoreError):
        db.open()
    assert "notes" not in db.tables(), "migrations run in one transaction"
    assert db.sql("SELECT version FROM schema_version") == before


@pytest.mark.postgres
def test_postgres_schemas_isolate_installations(pg_url: str) -> None:
    import psycopg

    names = ("iso_a", "iso_b")
    stores = [PostgresStore(pg_url, schema=n) for n in names]
    try:
        stores[0].create_service("same-id", {"a": 1}, state="pending", desired="active")
        stores[1].create_service("same-id", {"b": 2}, state="pending", desired="active")
        assert stores[0].get("same-id").spec == {"a": 1}  # type: ignore[union-attr]
        assert stores[1].get("same-id").spec == {"b": 2}  # type: ignore[union-attr]
    finally:
        for store in stores:
            store.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_a_failure_inside_a_transition_rolls_everything_back(db: Db) -> None:
    """A transition that fails on its last insert leaves no trace of its first ones."""
    from dci6bridge.stores import NewOutbox, NewTask

    store = db.open()
    store.create_service("s", {"a": 1}, state="pending", desired="active")
    [lease] = store.acquire("w", 60)
    # A stray outbox row with the (service, version, kind) the transition will write
    db.sql(
        "INSERT INTO outbox (service_id, version, kind, payload_json, attempts, available_at) "
        "VALUES ('s', 1, 'moved', '{}', 0, 0)"
    )
    before = (store.get("s"), store.history("s"), store.tasks(), store.write_count)
    with pytest.raises(StoreError):
        store.transition(
            lease,
            expected_state="pending",
            expected_version=0,
            new_state="selecting_module",
            patch={"module": "dci-ams"},
            outbox=[NewOutbox("first"), NewOutbox("moved")],
            task=NewTask("Support", "k", "r"),
        )
    assert (store.get("s"), store.history("s"), store.tasks(), store.write_count) == before
    assert db.sql("SELECT count(*) FROM outbox") == [(1,)]
    # the store is still usable, the transaction did not stay open
    moved = store.transition(
        lease, expected_state="pending", expected_version=0, new_state="selecting_module"
    )
    assert moved.version == 1
