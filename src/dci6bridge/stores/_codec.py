"""How store records become rows and back, the same way in every backend.

Every backend keeps a service as a flat row of columns (:data:`SERVICE_COLUMNS`) with its
``spec`` and ``data`` as canonical JSON text. Keeping the memory store on the same rows as
the SQL stores means a caller can never mutate a stored record through a returned dict,
and all three backends hand back exactly the same values (lists, not tuples; str keys).
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from dci6bridge._validate import show
from dci6bridge.errors import ConfigError
from dci6bridge.secret import Secret

from .base import DepartmentTask, OutboxMsg, StoredService, Transition

__all__ = [
    "SERVICE_COLUMNS",
    "canonical_json",
    "check_keys",
    "check_mapping",
    "customer_key",
    "digest",
    "outbox_from_row",
    "plain_json",
    "replace_service",
    "service_from_row",
    "service_to_row",
    "service_update_values",
    "task_from_row",
    "transition_from_row",
]

#: Column order of the ``services`` table.
SERVICE_COLUMNS: tuple[str, ...] = (
    "service_id",
    "spec_json",
    "spec_hash",
    "state",
    "version",
    "desired",
    "desired_seq",
    "runnable",
    "not_before",
    "attempts",
    "last_error",
    "module",
    "server_id",
    "user_id",
    "op_id",
    "failed_from",
    "data_json",
    "lease_owner",
    "lease_epoch",
    "lease_until",
    "created_at",
    "updated_at",
)


def _refuse(value: Any) -> Any:
    if isinstance(value, Secret):
        raise TypeError("a Secret cannot be stored; store a reference to it instead")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# An encoder is immutable once built; building one per call (json.dumps with options)
# costs more than encoding the small documents stored here.
_CANONICAL = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_refuse,
)


def canonical_json(value: Any, *, field: str) -> str:
    """Sorted-key, compact JSON. Raises :class:`ConfigError` naming ``field`` for values
    that JSON cannot hold (sets, objects, NaN, a :class:`~dci6bridge.Secret`)."""
    try:
        return _CANONICAL.encode(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{field}: cannot be stored as JSON ({exc})") from None


class _Unusual(Exception):
    """A value :func:`plain_json` leaves to the JSON encoder (to copy or refuse)."""


def _plain(value: Any) -> Any:
    # Exact types only: subclasses (IntEnum, OrderedDict, str enums), non-str keys and
    # non-finite floats are rare and take the encoder's path, which decides them.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if value - value != 0.0:  # inf - inf and nan - nan are nan
            raise _Unusual
        return value
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise _Unusual
        return {key: _plain(value[key]) for key in sorted(value)}
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    raise _Unusual


def plain_json(value: Any, *, field: str) -> Any:
    """``json.loads(canonical_json(value))`` without the text: a copy of ``value`` as
    JSON gives it back (tuples become lists, keys sorted), or :class:`ConfigError`
    naming ``field`` where :func:`canonical_json` would raise. Copying the plain values
    the store keeps directly costs a fraction of an encode and a decode."""
    try:
        return _plain(value)
    except (_Unusual, RecursionError):
        return json.loads(canonical_json(value, field=field))


def digest(text: str) -> str:
    """sha256 hex of canonical JSON text: the spec and request-params hash."""
    return hashlib.sha256(text.encode()).hexdigest()


def check_keys(value: Any, *, field: str) -> Mapping[str, Any]:
    """``value`` if it is a str-keyed mapping, else :class:`ConfigError` naming ``field``."""
    if type(value) is dict and all(type(key) is str for key in value):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{field}: expected a mapping, got {show(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{field}: keys must be strings, got {show(key)}")
    return value


def check_mapping(value: Any, *, field: str) -> str:
    """Canonical JSON of a str-keyed mapping, or :class:`ConfigError` naming ``field``."""
    return canonical_json(check_keys(value, field=field), field=field)


def customer_key(spec: Mapping[str, Any]) -> str:
    """The indexed customer of a spec: its ``customer_email`` stripped and lower-cased
    (``""`` without one), as closing a service compares them."""
    return str(spec.get("customer_email", "")).strip().lower()


def _float(value: Any) -> float:
    result = float(value)
    if math.isnan(result):
        raise ValueError("NaN time in store row")
    return result


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def service_from_row(row: Mapping[str, Any], known: StoredService | None = None) -> StoredService:
    """A :class:`StoredService` from a ``services`` row (SQLite ints become bools).

    A spec never changes after its service is created, so a ``known`` record of the
    same service with the same ``spec_hash`` (the one a lease carries) lends its
    ``spec`` instead of decoding ``spec_json`` again."""
    if (
        known is not None
        and known.spec_hash == row["spec_hash"]
        and known.service_id == row["service_id"]
    ):
        spec = known.spec
    else:
        spec = json.loads(row["spec_json"])
    return StoredService(
        service_id=row["service_id"],
        spec=spec,
        spec_hash=row["spec_hash"],
        state=row["state"],
        version=int(row["version"]),
        desired=row["desired"],
        desired_seq=int(row["desired_seq"]),
        runnable=bool(row["runnable"]),
        not_before=_float(row["not_before"]),
        attempts=int(row["attempts"]),
        last_error=row["last_error"],
        module=row["module"],
        server_id=_opt_int(row["server_id"]),
        user_id=_opt_int(row["user_id"]),
        op_id=_opt_int(row["op_id"]),
        failed_from=row["failed_from"],
        data=json.loads(row["data_json"]),
        lease_owner=row["lease_owner"],
        lease_epoch=int(row["lease_epoch"]),
        lease_until=_float(row["lease_until"]),
        created_at=_float(row["created_at"]),
        updated_at=_float(row["updated_at"]),
    )


def service_to_row(
    service: StoredService, *, spec_json: str | None = None, data_json: str | None = None
) -> dict[str, Any]:
    """The ``services`` row of a record (inverse of :func:`service_from_row`).
    ``spec_json``/``data_json``: the JSON of ``spec``/``data`` where the caller already
    has it (a stored row's, for a value that did not change)."""
    return {
        "service_id": service.service_id,
        "spec_json": canonical_json(service.spec, field="spec") if spec_json is None else spec_json,
        "spec_hash": service.spec_hash,
        "state": service.state,
        "version": service.version,
        "desired": service.desired,
        "desired_seq": service.desired_seq,
        "runnable": service.runnable,
        "not_before": service.not_before,
        "attempts": service.attempts,
        "last_error": service.last_error,
        "module": service.module,
        "server_id": service.server_id,
        "user_id": service.user_id,
        "op_id": service.op_id,
        "failed_from": service.failed_from,
        "data_json": canonical_json(service.data, field="data") if data_json is None else data_json,
        "lease_owner": service.lease_owner,
        "lease_epoch": service.lease_epoch,
        "lease_until": service.lease_until,
        "created_at": service.created_at,
        "updated_at": service.updated_at,
    }


_SERVICE_FIELDS = tuple(a.name for a in attrs.fields(StoredService))
_fields_of = operator.attrgetter(*_SERVICE_FIELDS)


def replace_service(service: StoredService, changes: Mapping[str, Any]) -> StoredService:
    """``attrs.evolve(service, **changes)`` at half its cost (it sits on every write)."""
    values = dict(zip(_SERVICE_FIELDS, _fields_of(service), strict=True))
    values.update(changes)
    return StoredService(**values)


def service_update_values(service: StoredService, columns: Sequence[str]) -> list[Any]:
    """The values of ``columns`` of a record, ``data`` as JSON (for an UPDATE)."""
    return [
        canonical_json(service.data, field="data") if c == "data_json" else getattr(service, c)
        for c in columns
    ]


def transition_from_row(row: Mapping[str, Any]) -> Transition:
    """A :class:`Transition` from a ``transitions`` row."""
    return Transition(
        service_id=row["service_id"],
        version=int(row["version"]),
        from_state=row["from_state"],
        to_state=row["to_state"],
        epoch=int(row["epoch"]),
        worker=row["worker"],
        at=_float(row["at"]),
        detail=json.loads(row["detail_json"]),
    )


def outbox_from_row(row: Mapping[str, Any]) -> OutboxMsg:
    """An :class:`OutboxMsg` from an ``outbox`` row."""
    return OutboxMsg(
        id=int(row["id"]),
        service_id=row["service_id"],
        version=int(row["version"]),
        kind=row["kind"],
        payload=json.loads(row["payload_json"]),
        attempts=int(row["attempts"]),
        available_at=_float(row["available_at"]),
    )


def task_from_row(row: Mapping[str, Any]) -> DepartmentTask:
    """A :class:`DepartmentTask` from a ``tasks`` row."""
    resolved = row["resolved_at"]
    return DepartmentTask(
        id=int(row["id"]),
        department=row["department"],
        service_id=row["service_id"],
        kind=row["kind"],
        reason=row["reason"],
        created_at=_float(row["created_at"]),
        resolved_at=None if resolved is None else _float(resolved),
        resolution=row["resolution"],
    )
