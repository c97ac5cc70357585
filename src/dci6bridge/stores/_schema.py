"""The SQL schema and its numbered migrations, for SQLite and PostgreSQL alike.

Each migration is a list of statements written once with placeholders for the dialect's
column types (``{text}``, ``{int}``, ``{real}``, ``{bool}``, ``{serial}``) and the table
prefix (``{p}``: empty on SQLite, ``"schema".`` on PostgreSQL), or of Python steps for
what SQL cannot compute the same way on both (:func:`_fill_customers`). :func:`migrate` applies
the missing ones in order inside the caller's write transaction and records the version
in ``schema_version``, so a crash mid-migration leaves the previous version intact.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dci6bridge.errors import StoreError

from ._codec import customer_key

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Execute", "Step", "migrate"]

Execute = Callable[[str, Sequence[Any]], list[dict[str, Any]]]
#: One migration step: a statement template, or a function of ``(execute, words)``.
Step = str | Callable[[Execute, Mapping[str, str]], None]

_FILL_CHUNK = 500


def _fill_customers(execute: Execute, words: Mapping[str, str]) -> None:
    """Set the ``customer`` column of existing services from their spec, with the same
    normalisation new rows get (Python's ``strip().lower()``, which SQL's ``lower`` and
    ``trim`` do not match outside ASCII)."""
    p = words["p"]
    by_key: dict[str, list[str]] = {}
    for row in execute(f"SELECT service_id, spec_json FROM {p}services", ()):
        key = customer_key(json.loads(row["spec_json"]))
        if key:
            by_key.setdefault(key, []).append(row["service_id"])
    for key, ids in by_key.items():
        for start in range(0, len(ids), _FILL_CHUNK):
            chunk = ids[start : start + _FILL_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            execute(
                f"UPDATE {p}services SET customer = ? WHERE service_id IN ({marks})",
                [key, *chunk],
            )


#: Migration ``n`` is ``MIGRATIONS[n - 1]``. Append only: never edit a released one.
MIGRATIONS: tuple[tuple[Step, ...], ...] = (
    (
        """CREATE TABLE {p}services (
            service_id {text} PRIMARY KEY,
            spec_json {text} NOT NULL,
            spec_hash {text} NOT NULL,
            state {text} NOT NULL,
            version {int} NOT NULL,
            desired {text} NOT NULL,
            desired_seq {int} NOT NULL,
            runnable {bool} NOT NULL,
            not_before {real} NOT NULL,
            attempts {int} NOT NULL,
            last_error {text},
            module {text},
            server_id {int},
            user_id {int},
            op_id {int},
            failed_from {text},
            data_json {text} NOT NULL,
            lease_owner {text},
            lease_epoch {int} NOT NULL,
            lease_until {real} NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL
        )""",
        # Matches the claim's predicate and order; the lease test stays a filter because
        # "expired" depends on the clock and cannot be part of an index predicate.
        "CREATE INDEX services_runnable ON {p}services (not_before, service_id) "
        "WHERE runnable = {true}",
        "CREATE INDEX services_state ON {p}services (state)",
        """CREATE TABLE {p}transitions (
            service_id {text} NOT NULL REFERENCES {p}services (service_id),
            version {int} NOT NULL,
            from_state {text} NOT NULL,
            to_state {text} NOT NULL,
            epoch {int} NOT NULL,
            worker {text} NOT NULL,
            at {real} NOT NULL,
            detail_json {text} NOT NULL,
            PRIMARY KEY (service_id, version)
        )""",
        """CREATE TABLE {p}server_claims (
            server_id {int} PRIMARY KEY,
            service_id {text} NOT NULL UNIQUE REFERENCES {p}services (service_id),
            claimed_at {real} NOT NULL
        )""",
        """CREATE TABLE {p}requests (
            service_id {text} NOT NULL REFERENCES {p}services (service_id),
            request_id {text} NOT NULL,
            action {text} NOT NULL,
            params_hash {text} NOT NULL,
            at {real} NOT NULL,
            PRIMARY KEY (service_id, request_id)
        )""",
        """CREATE TABLE {p}outbox (
            id {serial},
            service_id {text} NOT NULL REFERENCES {p}services (service_id),
            version {int} NOT NULL,
            kind {text} NOT NULL,
            payload_json {text} NOT NULL,
            attempts {int} NOT NULL,
            available_at {real} NOT NULL,
            lease_owner {text},
            lease_until {real},
            delivered_at {real},
            UNIQUE (service_id, version, kind)
        )""",
        "CREATE INDEX outbox_pending ON {p}outbox (id) WHERE delivered_at IS NULL",
        # Reconciler findings may concern no service row (an orphan server), so no FK.
        """CREATE TABLE {p}tasks (
            id {serial},
            department {text} NOT NULL,
            service_id {text} NOT NULL,
            kind {text} NOT NULL,
            reason {text} NOT NULL,
            created_at {real} NOT NULL,
            resolved_at {real},
            resolution {text}
        )""",
        "CREATE UNIQUE INDEX tasks_open ON {p}tasks (service_id, kind) WHERE resolved_at IS NULL",
        "CREATE INDEX tasks_department ON {p}tasks (department, created_at)",
        """CREATE TABLE {p}singletons (
            name {text} PRIMARY KEY,
            holder {text} NOT NULL,
            held_until {real} NOT NULL
        )""",
    ),
    (
        # The customer's e-mail as closing a service looks it up: other live services of
        # the same customer keep their shared DCImanager user. Specs never change, so it
        # is written once, with the row.
        "ALTER TABLE {p}services ADD COLUMN customer {text} NOT NULL DEFAULT ''",
        _fill_customers,
        "CREATE INDEX services_customer ON {p}services (customer, module)",
        # What prune() deletes, oldest first.
        "CREATE INDEX requests_at ON {p}requests (at)",
        "CREATE INDEX outbox_delivered ON {p}outbox (delivered_at) WHERE delivered_at IS NOT NULL",
    ),
)

#: The schema version this library writes and reads.
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(
    execute: Execute,
    words: Mapping[str, str],
    *,
    where: str,
) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION` inside the caller's write transaction.

    ``execute`` runs one statement; ``words`` fills the dialect placeholders; ``where``
    names the database in messages (never with a password). Returns the version found
    before migrating. Raises :class:`StoreError` for a database newer than this library.
    """
    p = words["p"]
    execute(f"CREATE TABLE IF NOT EXISTS {p}schema_version (version INTEGER NOT NULL)", ())
    rows = execute(f"SELECT version FROM {p}schema_version", ())
    if not rows:
        execute(f"INSERT INTO {p}schema_version (version) VALUES (0)", ())
    found = int(rows[0]["version"]) if rows else 0
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema version {found}, newer than this dci6bridge supports "
            f"({SCHEMA_VERSION}); upgrade dci6bridge before using this database"
        )
    for steps in MIGRATIONS[found:]:
        for step in steps:
            if isinstance(step, str):
                execute(step.format(**words), ())
            else:
                step(execute, words)
    if found != SCHEMA_VERSION:
        execute(f"UPDATE {p}schema_version SET version = ?", (SCHEMA_VERSION,))
    return found
