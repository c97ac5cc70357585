"""Suite-wide settings and the shared PostgreSQL fixtures.

Fixtures of one area live in that area's conftest.py. The PostgreSQL ones are here
because the store, orchestrator and chaos suites all use them:

* ``pg_url`` (session): a PostgreSQL URL — ``DCI6BRIDGE_TEST_PG_URL`` if set, else a
  throwaway server started from the local binaries (``tests/pg_server.py``). Without
  either the PostgreSQL tests skip, except under ``CI``, where they fail.
* ``pg_store_url``: ``pg_url`` plus ``?schema=<fresh name>`` — give it to
  ``open_store``/``PostgresStore`` (or to worker subprocesses); the schema is dropped after
  the test.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

# Deterministic property tests: the same examples on every run and every machine.
settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _pg_server_module() -> ModuleType:
    # --import-mode=importlib keeps tests/ off sys.path, so load the helper by path.
    path = Path(__file__).with_name("pg_server.py")
    spec = importlib.util.spec_from_file_location("dci6bridge_tests_pg_server", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI, but: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server URL for the whole session (see the module docstring)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'dci6bridge[postgres]')")
    given = os.environ.get("DCI6BRIDGE_TEST_PG_URL")
    if given:
        yield given
        return
    pg_server = _pg_server_module()
    try:
        server = pg_server.PgServer().start()
    except pg_server.PgUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def pg_store_url(pg_url: str) -> Iterator[str]:
    """``pg_url`` with a fresh ``schema`` option; the schema is dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
