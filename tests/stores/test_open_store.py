"""open_store(): URL schemes, options, and passwords kept out of every message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dci6bridge import errors
from dci6bridge.stores import MemoryStore, PostgresStore, SQLiteStore, open_store, redact_url


def test_memory_url() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    fake_now = open_store("memory://", clock=lambda: 5.0)
    assert fake_now.now() == 5.0


def test_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel.db")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == str(tmp_path / "rel.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == str(tmp_path / "abs.db")
    assert (tmp_path / "abs.db").exists()
    assert repr(absolute) == f"SQLiteStore({str(tmp_path / 'abs.db')!r})"
    relative.close()
    absolute.close()


def test_sqlite_query_options(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/o.db?synchronous=full&unsafe_disable_fencing=1")
    assert isinstance(store, SQLiteStore)
    assert store._synchronous == "FULL"
    assert store._unsafe is True
    store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root:hunter2@db/x", "unknown scheme 'mysql'"),
        ("redis://:hunter2@localhost", "unknown scheme 'redis'"),
        ("dci6bridge.db", "is not a URL"),
        ("sqlite://host/x.db", "has no host"),
        ("sqlite:///", "names no file"),
        ("sqlite:///x.db?journal=delete", "unknown query option 'journal'"),
        ("sqlite:///x.db?unsafe_disable_fencing=maybe", "is not a boolean"),
        ("sqlite:///x.db?synchronous=off", "synchronous"),
        ("memory://?schema=x", "unknown query option 'schema'"),
    ],
)
def test_bad_urls_raise_config_error_without_the_password(
    url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.ConfigError, match=message) as err:
        open_store(url)
    assert "hunter2" not in str(err.value)


def test_a_non_string_url() -> None:
    with pytest.raises(errors.ConfigError, match="is not a URL"):
        open_store(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db:5432/x", "postgresql://app:***@db:5432/x"),
        (
            "postgresql://app:p%40ss@db/x?sslmode=require",
            "postgresql://app:***@db/x?sslmode=require",
        ),
        ("postgresql://db/x?user=app&password=hunter2", "postgresql://db/x?user=app&password=***"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        ("mysql://:hunter2@h/", "mysql://:***@h/"),
        ("host=db password=hunter2 dbname=x", "host=db password=*** dbname=x"),
        ("host=db password = 'hun ter\\'2' user=a", "host=db password = *** user=a"),
        ("host=db passwordless=x", "host=db passwordless=x"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_sqlite_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="MemoryStore"):
        SQLiteStore(":memory:")
    with pytest.raises(errors.ConfigError, match="does not exist"):
        SQLiteStore(tmp_path / "missing" / "x.db")
    with pytest.raises(errors.ConfigError, match="synchronous"):
        SQLiteStore(tmp_path / "x.db", synchronous="OFF")
    with pytest.raises(errors.ConfigError, match="busy_timeout_s"):
        SQLiteStore(tmp_path / "x.db", busy_timeout_s=-1)


@pytest.mark.parametrize("schema", ["", "1abc", "a-b", 'x"; DROP TABLE y; --', "a" * 64, 5])
def test_postgres_rejects_a_bad_schema_before_connecting(schema: Any) -> None:
    with pytest.raises(errors.ConfigError, match="schema"):
        PostgresStore("postgresql://app:hunter2@127.0.0.1:1/x", schema=schema)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:hunter2@127.0.0.1:1/x?connect_timeout=2", "app:***@127.0.0.1:1/x"),
        ("host=127.0.0.1 port=1 user=app password=hunter2 connect_timeout=2", "password=***"),
    ],
)
def test_postgres_connection_failure_hides_the_password(dsn: str, shown: str) -> None:
    # Port 1 on loopback: nothing listens there, the refusal is immediate.
    with pytest.raises(errors.StoreError) as err:
        PostgresStore(dsn)
    text = str(err.value)
    assert shown in text
    assert "hunter2" not in text
    assert "hunter2" not in repr(err.value)
    assert err.value.__cause__ is None, "the driver's exception (and its text) is dropped"


@pytest.mark.postgres
def test_postgres_url_options_and_repr(pg_store_url: str) -> None:
    base, _, query = pg_store_url.partition("?")
    schema = query.split("=")[1]
    store = open_store(f"postgres://{base.split('://')[1]}?{query}&unsafe_disable_fencing=true")
    assert isinstance(store, PostgresStore)
    assert store.schema == schema
    assert store._unsafe is True
    assert repr(store).startswith("PostgresStore('postgresql://")
    store.close()


def test_postgres_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes "import psycopg" fail
    with pytest.raises(errors.StoreError, match=r"pip install 'dci6bridge\[postgres\]'"):
        open_store("postgresql://app:hunter2@127.0.0.1:1/x")
