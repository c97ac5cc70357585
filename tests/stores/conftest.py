"""Fixtures of the store tests: one ``store`` per backend, driven by a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dci6bridge.stores import MemoryStore, PostgresStore, SQLiteStore, StatusStore, open_store

T0 = 1_700_000_000.0


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = T0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend name: memory, sqlite or postgres."""
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(
    backend: str, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., StatusStore]]:
    """``make_store(**options)``: a store of the backend on the test's database (SQL
    backends reopen the same database on every call)."""
    opened: list[StatusStore] = []

    def make(**options: Any) -> StatusStore:
        options.setdefault("clock", clock)
        store: StatusStore
        if backend == "memory":
            store = MemoryStore(**options)
        elif backend == "sqlite":
            store = SQLiteStore(tmp_path / "store.db", **options)
        else:
            store = open_store(request.getfixturevalue("pg_store_url"), **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., StatusStore]) -> StatusStore:
    return make_store()


@pytest.fixture
def pg(pg_store_url: str) -> Iterator[PostgresStore]:
    """A PostgresStore on a fresh schema, on the database clock (PostgreSQL-only tests)."""
    store = open_store(pg_store_url)
    assert isinstance(store, PostgresStore)
    yield store
    store.close()
