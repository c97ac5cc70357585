"""The store's rules, written once and used by every backend.

Argument checks, the fencing decision (:func:`fence`) and how a patch or a transition
changes a service row are pure functions of records. Each backend only supplies the
transaction around them: a lock (memory), ``BEGIN IMMEDIATE`` (SQLite) or
``SELECT … FOR UPDATE`` (PostgreSQL). Identical rules make the backends agree exactly,
which the shared contract suite checks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from dci6bridge._validate import show
from dci6bridge.errors import ConfigError, LeaseLost, ServiceNotFound, StaleState

from ._codec import (
    SERVICE_COLUMNS,
    canonical_json,
    check_keys,
    check_mapping,
    customer_key,
    digest,
    plain_json,
    replace_service,
)
from .base import PATCHABLE, AdvanceRequest, Lease, Move, NewOutbox, NewTask, StoredService

__all__ = [
    "AdvancePlan",
    "CheckedAdvance",
    "CheckedRequest",
    "CheckedTransition",
    "apply_patch",
    "changed_columns",
    "check_advance",
    "check_claim",
    "check_customer_query",
    "check_limit",
    "check_number",
    "check_outbox",
    "check_patch",
    "check_positive",
    "check_prune",
    "check_requests",
    "check_server_id",
    "check_server_ids",
    "check_task",
    "check_text",
    "check_transition",
    "fence",
    "fence_and_plan",
    "holds_other_server",
    "lease_held",
    "lease_of",
    "new_service",
    "params_hash",
    "plan_advance",
    "release_changes",
    "singleton_hold",
    "take_order",
    "transitioned",
]

_INT_COLUMNS = frozenset({"desired_seq", "attempts", "server_id", "user_id", "op_id"})
_OPTIONAL = frozenset({"last_error", "module", "server_id", "user_id", "op_id", "failed_from"})
_TEXT_COLUMNS = frozenset({"desired", "last_error", "module", "failed_from"})
# The lease columns of a row whose lease was given up.
_RELEASED = {"lease_owner": None, "lease_until": 0.0}


def check_text(value: Any, field: str) -> str:
    """A non-empty string, or :class:`ConfigError` naming ``field``."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field}: expected a non-empty string, got {show(value)}")
    return value


def check_number(value: Any, field: str) -> float:
    """A finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field}: expected a finite number, got {show(value)}")
    return float(value)


def check_positive(value: Any, field: str) -> float:
    """A finite number above zero (TTLs)."""
    number = check_number(value, field)
    if number <= 0:
        raise ConfigError(f"{field}: must be above 0, got {show(value)}")
    return number


def check_limit(value: Any) -> int:
    """A batch size of at least one."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"limit: expected an int of at least 1, got {show(value)}")
    return value


def check_claim(worker_id: Any, ttl_s: Any, limit: Any) -> float:
    """The arguments of a claim (``acquire``, ``claim_outbox``); returns the TTL."""
    check_text(worker_id, "worker_id")
    check_limit(limit)
    return check_positive(ttl_s, "ttl_s")


def lease_of(service: StoredService) -> Lease:
    """The lease a service row holds (as just taken by ``acquire``)."""
    assert service.lease_owner is not None
    return Lease(
        service_id=service.service_id,
        worker_id=service.lease_owner,
        epoch=service.lease_epoch,
        until=service.lease_until,
        service=service,
    )


def check_prune(
    requests_older_than_s: Any, delivered_older_than_s: Any, limit: Any
) -> tuple[float, float, int]:
    """The arguments of :meth:`StatusStore.prune` (two ages above 0, a batch limit)."""
    return (
        check_positive(requests_older_than_s, "requests_older_than_s"),
        check_positive(delivered_older_than_s, "delivered_older_than_s"),
        check_limit(limit),
    )


def check_customer_query(
    customer_email: Any, module: Any, states: Any
) -> tuple[str, str | None, list[str] | None]:
    """The arguments of :meth:`StatusStore.services_of_customer`: the customer as
    indexed (:func:`~._codec.customer_key`), the module, the states as a list."""
    key = customer_key({"customer_email": check_text(customer_email, "customer_email")})
    if not key:
        raise ConfigError(f"customer_email: expected an e-mail, got {show(customer_email)}")
    if module is not None:
        check_text(module, "module")
    if states is None:
        return key, module, None
    if isinstance(states, str) or not isinstance(states, Sequence):
        raise ConfigError(f"states: expected a sequence of state names, got {show(states)}")
    return key, module, [check_text(s, f"states[{i}]") for i, s in enumerate(states)]


def _not_a_sequence(value: Any) -> bool:
    # lists and tuples, by far the most common, are let through before this is asked
    return isinstance(value, (str, bytes)) or not isinstance(value, Sequence)


def _check_column(key: str, value: Any) -> Any:
    field = f"patch.{key}"
    if value is None and key in _OPTIONAL:
        return None
    if key in _INT_COLUMNS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{field}: expected an int, got {show(value)}")
        if key in ("desired_seq", "attempts") and value < 0:
            raise ConfigError(f"{field}: must not be negative, got {show(value)}")
        return value
    if key in _TEXT_COLUMNS:
        return check_text(value, field)
    if key == "runnable":
        if not isinstance(value, bool):
            raise ConfigError(f"{field}: expected a bool, got {show(value)}")
        return value
    if key == "not_before":
        return check_number(value, field)
    # "data": validated as JSON here so a bad value fails before anything is written, and
    # kept as JSON gives it back (tuples become lists) so every backend returns the same.
    loaded: dict[str, Any] = plain_json(check_keys(value, field=field), field=field)
    return loaded


def check_patch(patch: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a patch of :data:`~dci6bridge.stores.base.PATCHABLE` columns."""
    if patch is None:
        return {}
    if not isinstance(patch, Mapping):
        raise ConfigError(f"patch: expected a mapping, got {show(patch)}")
    if not PATCHABLE.issuperset(patch):
        unknown = sorted(str(k) for k in patch if k not in PATCHABLE)
        raise ConfigError(
            f"patch: {', '.join(map(repr, unknown))} cannot be patched "
            f"(allowed: {', '.join(sorted(PATCHABLE))})"
        )
    return {key: _check_column(key, value) for key, value in patch.items()}


def check_outbox(outbox: Sequence[NewOutbox]) -> list[tuple[str, str]]:
    """``(kind, payload JSON)`` per event; kinds must differ (they make the event id)."""
    checked: list[tuple[str, str]] = []
    for i, msg in enumerate(outbox):
        if not isinstance(msg, NewOutbox):
            raise ConfigError(f"outbox[{i}]: expected a NewOutbox, got {show(msg)}")
        kind = check_text(msg.kind, f"outbox[{i}].kind")
        if any(kind == seen for seen, _ in checked):
            raise ConfigError(
                f"outbox[{i}].kind: {kind!r} appears twice in one transition "
                "(the event id service:version:kind must be unique)"
            )
        checked.append((kind, check_mapping(msg.payload, field=f"outbox[{i}].payload")))
    return checked


def check_task(task: Any, field: str = "task") -> NewTask:
    """A :class:`NewTask` with non-empty fields."""
    if not isinstance(task, NewTask):
        raise ConfigError(f"{field}: expected a NewTask, got {show(task)}")
    check_text(task.department, f"{field}.department")
    check_text(task.kind, f"{field}.kind")
    check_text(task.reason, f"{field}.reason")
    return task


def new_service(
    service_id: str, spec: Mapping[str, Any], *, state: str, desired: str, now: float
) -> StoredService:
    """A fresh row: version 0, runnable at once, no lease."""
    check_text(service_id, "service_id")
    check_text(state, "state")
    check_text(desired, "desired")
    spec_json = check_mapping(spec, field="spec")
    return StoredService(
        service_id=service_id,
        spec=dict(spec),
        spec_hash=digest(spec_json),
        state=state,
        version=0,
        desired=desired,
        desired_seq=0,
        runnable=True,
        not_before=now,
        attempts=0,
        last_error=None,
        module=None,
        server_id=None,
        user_id=None,
        op_id=None,
        failed_from=None,
        data={},
        lease_owner=None,
        lease_epoch=0,
        lease_until=0.0,
        created_at=now,
        updated_at=now,
    )


def params_hash(action: str, params: Mapping[str, Any]) -> str:
    """Identity of a billing request's content, to detect a reused request id."""
    check_text(action, "action")
    return digest(canonical_json([action, check_mapping(params, field="params")], field="params"))


def lease_held(service: StoredService, lease: Lease, now: float) -> bool:
    """Whether ``lease`` is still the live lease of ``service``."""
    return (
        service.lease_owner == lease.worker_id
        and service.lease_epoch == lease.epoch
        and service.lease_until > now
    )


def fence(
    service: StoredService | None,
    lease: Lease,
    now: float,
    *,
    expected_state: str | None = None,
    expected_version: int | None = None,
    expected_desired_seq: int | None = None,
    unsafe: bool = False,
) -> StoredService:
    """The compare-and-set decision of every fenced write.

    Fencing comes first: an owner or epoch other than the lease's, or an expired lease,
    is :class:`LeaseLost` whatever the state. Then a state or version other than expected
    is :class:`StaleState`. ``unsafe`` (test-only) skips both checks.
    """
    if service is None:
        raise ServiceNotFound(f"service {lease.service_id!r} not found")
    if unsafe:
        return service
    if not lease_held(service, lease, now):
        if service.lease_owner == lease.worker_id and service.lease_epoch == lease.epoch:
            why = f"expired at {service.lease_until:.3f} (now {now:.3f})"
        else:
            why = f"now held by {service.lease_owner!r} at epoch {service.lease_epoch}"
        raise LeaseLost(
            f"lease of {lease.worker_id!r} at epoch {lease.epoch} on service "
            f"{service.service_id!r} is lost: {why}"
        )
    if expected_state is not None and service.state != expected_state:
        raise StaleState(
            f"service {service.service_id!r} is in state {service.state!r} "
            f"(version {service.version}), not {expected_state!r}"
        )
    if expected_version is not None and service.version != expected_version:
        raise StaleState(
            f"service {service.service_id!r} is at version {service.version}, "
            f"not {expected_version}"
        )
    if expected_desired_seq is not None and service.desired_seq != expected_desired_seq:
        raise StaleState(
            f"service {service.service_id!r}: billing changed its request (desired "
            f"{service.desired!r}, request {service.desired_seq}, not {expected_desired_seq})"
        )
    return service


def apply_patch(
    service: StoredService, patch: Mapping[str, Any], now: float, **also: Any
) -> StoredService:
    """``service`` with a checked patch applied: ``data`` merged key by key (``None``
    deletes), other columns replaced, ``updated_at`` set, plus the columns in ``also``."""
    changes = {**patch, **also, "updated_at": now}
    if "data" in changes:
        changes["data"] = merge_data(dict(service.data), changes["data"])
    return replace_service(service, changes)


def merge_data(into: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``into`` (changed in place and returned) with a ``data`` patch merged key by key:
    a ``None`` value deletes the key."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        else:
            into[key] = value
    return into


def transitioned(
    service: StoredService,
    new_state: str,
    patch: Mapping[str, Any],
    now: float,
    *,
    release: bool = False,
) -> StoredService:
    """The row after a transition: next version, ``attempts`` reset unless patched, the
    lease given up with ``release``."""
    changes = {"attempts": 0, **patch}
    moved = apply_patch(service, changes, now, state=new_state, version=service.version + 1)
    return replace_service(moved, _RELEASED) if release else moved


def check_server_id(server_id: Any) -> int:
    """A DCImanager server id: a positive int."""
    if isinstance(server_id, bool) or not isinstance(server_id, int) or server_id < 1:
        raise ConfigError(f"server_id: expected a positive int, got {show(server_id)}")
    return server_id


def check_server_ids(server_ids: Any) -> list[int]:
    """Server ids to look up (each a positive int), without repeats, in order."""
    if isinstance(server_ids, str | bytes) or not isinstance(server_ids, Iterable):
        raise ConfigError(f"server_ids: expected an iterable of ints, got {show(server_ids)}")
    checked: dict[int, None] = {}
    for i, server_id in enumerate(server_ids):
        if isinstance(server_id, bool) or not isinstance(server_id, int) or server_id < 1:
            raise ConfigError(f"server_ids[{i}]: expected a positive int, got {show(server_id)}")
        checked[server_id] = None
    return list(checked)


def holds_other_server(service_id: str, held: int, wanted: int) -> str:
    """The :class:`StaleState` message of a second reservation by one service."""
    return (
        f"service {service_id!r} already holds server {held}; "
        f"release it before reserving server {wanted}"
    )


def release_changes(*, not_before: float | None, error: str | None) -> dict[str, Any]:
    """The service columns a :meth:`~StatusStore.release` sets (checked)."""
    changes: dict[str, Any] = {}
    if not_before is not None:
        changes["not_before"] = check_number(not_before, "not_before")
    if error is not None:
        changes["last_error"] = check_text(error, "error")
    return changes


@attrs.frozen
class CheckedTransition:
    """A transition's arguments, validated and encoded before anything is written."""

    patch: dict[str, Any]
    detail_json: str
    outbox: list[tuple[str, str]]
    task: NewTask | None


def check_transition(
    new_state: str,
    patch: Mapping[str, Any] | None,
    detail: Mapping[str, Any] | None,
    outbox: Sequence[NewOutbox],
    task: NewTask | None,
) -> CheckedTransition:
    """Validate everything a transition would write, so a bad payload writes nothing."""
    check_text(new_state, "new_state")
    return CheckedTransition(
        patch=check_patch(patch),
        detail_json=check_mapping({} if detail is None else detail, field="detail"),
        outbox=check_outbox(outbox),
        task=None if task is None else check_task(task),
    )


@attrs.frozen
class CheckedAdvance:
    """The arguments of an ``advance``, validated and encoded before anything is written."""

    moves: list[tuple[str, CheckedTransition]]
    patch: dict[str, Any]
    reserve_server: int | None
    singleton: str | None


def check_advance(
    moves: Sequence[Move],
    patch: Mapping[str, Any] | None,
    reserve_server: int | None,
    singleton: str | None,
) -> CheckedAdvance:
    """Validate everything an ``advance`` would write, so a bad payload writes nothing."""
    given: Any = moves  # checked at run time
    if type(given) is not tuple and type(given) is not list and _not_a_sequence(given):
        raise ConfigError(f"moves: expected a sequence of Move, got {show(given)}")
    checked: list[tuple[str, CheckedTransition]] = []
    for i, move in enumerate(moves):
        if not isinstance(move, Move):
            raise ConfigError(f"moves[{i}]: expected a Move, got {show(move)}")
        try:
            one = check_transition(move.to, move.patch, move.detail, move.outbox, move.task)
        except ConfigError as exc:
            raise ConfigError(f"moves[{i}].{exc}") from None
        checked.append((move.to, one))
    return CheckedAdvance(
        moves=checked,
        patch=check_patch(patch),
        reserve_server=None if reserve_server is None else check_server_id(reserve_server),
        singleton=None if singleton is None else check_text(singleton, "singleton"),
    )


@attrs.frozen
class CheckedRequest:
    """One lease's write, validated: what a backend's ``_advance_many`` applies.
    ``expected_state`` is ``None`` for a checkpoint (no state fence)."""

    lease: Lease
    checked: CheckedAdvance
    expected_state: str | None
    expected_version: int
    expected_desired_seq: int | None = None
    renew: float | None = None
    release: bool = False


def check_requests(requests: Sequence[AdvanceRequest]) -> list[CheckedRequest]:
    """Validate every request of an ``advance_many`` (fields named ``requests[i]...``),
    so a bad one writes nothing; one service may appear once."""
    given: Any = requests  # checked at run time
    if type(given) is not list and type(given) is not tuple and _not_a_sequence(given):
        raise ConfigError(f"requests: expected a sequence of AdvanceRequest, got {show(given)}")
    checked: list[CheckedRequest] = []
    seen: dict[str, int] = {}
    for i, req in enumerate(requests):
        if not isinstance(req, AdvanceRequest):
            raise ConfigError(f"requests[{i}]: expected an AdvanceRequest, got {show(req)}")
        if not isinstance(req.lease, Lease):
            raise ConfigError(f"requests[{i}].lease: expected a Lease, got {show(req.lease)}")
        sid = req.lease.service_id
        if sid in seen:
            raise ConfigError(
                f"requests[{i}]: service {sid!r} appears twice (also requests[{seen[sid]}]); "
                "one transaction writes a service once"
            )
        seen[sid] = i
        try:
            one = check_advance(req.moves, req.patch, req.reserve_server, req.singleton)
            renew = None if req.renew is None else check_positive(req.renew, "renew")
        except ConfigError as exc:
            raise ConfigError(f"requests[{i}].{exc}") from None
        checked.append(
            CheckedRequest(
                req.lease,
                one,
                req.expected_state,
                req.expected_version,
                req.expected_desired_seq,
                renew,
                req.release,
            )
        )
    return checked


@attrs.frozen
class AdvancePlan:
    """The rows an ``advance`` writes: the service row afterwards, one history row
    ``(version, from_state, to_state, detail_json)`` per move, the outbox rows
    ``(version, kind, payload_json)`` and the department tasks. ``changed`` names the
    ``services`` columns whose value differs from the row before (``data_json`` for
    ``data``), in table order: all an ``UPDATE`` needs to write."""

    service: StoredService
    history: list[tuple[int, str, str, str]]
    outbox: list[tuple[int, str, str]]
    tasks: list[NewTask]
    changed: tuple[str, ...]


def changed_columns(before: StoredService, changes: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``services`` columns ``changes`` (record fields) set to a new value, in
    table order (``data`` is the ``data_json`` column); ``updated_at`` always, as every
    write sets it, even to the same time."""
    differ = {key for key, value in changes.items() if getattr(before, key) != value}
    differ.add("updated_at")
    if "data" in differ:
        differ.add("data_json")
    return tuple(column for column in SERVICE_COLUMNS if column in differ)


def plan_advance(
    current: StoredService,
    checked: CheckedAdvance,
    now: float,
    *,
    release: bool,
    expected_state: str | None = None,
    lease_until: float | None = None,
) -> AdvancePlan:
    """Apply the moves one after the other, then the same-state patch, then the release.

    The first history row starts from ``expected_state`` (the state the writer saw):
    fencing makes it the current one, and without fencing (the test-only switch) the
    broken chain stays visible in the history."""
    state, version = current.state, current.version
    from_state = expected_state or state
    changes: dict[str, Any] = {}
    data: dict[str, Any] | None = None
    history: list[tuple[int, str, str, str]] = []
    outbox: list[tuple[int, str, str]] = []
    tasks: list[NewTask] = []

    def apply(patch: Mapping[str, Any]) -> None:
        nonlocal data
        for key, value in patch.items():
            if key != "data":
                changes[key] = value
                continue
            data = merge_data(dict(current.data) if data is None else data, value)

    # the same result as transitioned() per move, then apply_patch(), in one replace
    for to, one in checked.moves:
        changes["attempts"] = 0  # a transition resets them unless its patch sets them
        apply(one.patch)
        version += 1
        history.append((version, from_state, to, one.detail_json))
        outbox += [(version, kind, payload) for kind, payload in one.outbox]
        if one.task is not None:
            tasks.append(one.task)
        from_state = state = to
    apply(checked.patch)
    if data is not None:
        changes["data"] = data
    if release:
        changes.update(_RELEASED)
    elif lease_until is not None:
        changes["lease_until"] = lease_until
    changes.update(state=state, version=version, updated_at=now)
    return AdvancePlan(
        service=replace_service(current, changes),
        history=history,
        outbox=outbox,
        tasks=tasks,
        changed=changed_columns(current, changes),
    )


def fence_and_plan(
    request: CheckedRequest, row: StoredService | None, now: float, *, unsafe: bool
) -> tuple[StoredService, AdvancePlan]:
    """Fence one request of an ``advance_many`` against its row and plan what it writes
    (nothing written yet): planned before the takes, so that a backend can take the
    singleton, whose expiry the plan sets, with the reservation."""
    current = fence(
        row,
        request.lease,
        now,
        expected_state=request.expected_state,
        expected_version=request.expected_version,
        expected_desired_seq=request.expected_desired_seq,
        unsafe=unsafe,
    )
    plan = plan_advance(
        current,
        request.checked,
        now,
        release=request.release,
        expected_state=request.expected_state,
        lease_until=None if request.renew is None else now + request.renew,
    )
    return current, plan


def singleton_hold(lease: Lease, plan: AdvancePlan, now: float) -> tuple[str, float]:
    """Who holds a singleton an advance takes, and until when (its new lease's end)."""
    return f"{lease.worker_id}:{lease.service_id}", max(plan.service.lease_until, now)


def take_order(takes: Sequence[tuple[int | None, str | None]]) -> list[int]:
    """The positions of an ``advance_many``'s takes (server to reserve, singleton to take;
    ``None``: not asked) in the order every store makes them: reservations by server id
    (equal ids in request order), then the singletons asked for alone, by name.
    Concurrent transactions of the SQL stores thus lock the claims they both want in one
    order instead of deadlocking on each other's; the memory store follows the same
    order so that every store gives the same answers."""

    def key(position: int) -> tuple[int, int, str]:
        server, singleton = takes[position]
        if server is not None:
            return 0, server, ""
        return 1, 0, singleton or ""

    return sorted(range(len(takes)), key=key)
