"""Checks of the deterministic simulation (:mod:`.simulation`) beyond
:mod:`.chaos`'s: the ones run at chosen steps (no server held by two services, active
means ready) and the ones that need what only the simulation knows (every install and
the service stay it belongs to, every event billing's callback received)."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

from dci6bridge.stores.base import StatusStore

from ._fake import FakeDCImanager
from ._state import InstallRecord
from .chaos import Violation, expected_events

__all__ = ["active_not_ready", "deliveries", "install_stays", "offenders", "shared_servers"]

#: Seconds two readings of the virtual clock may differ by through float rounding.
EPSILON = 1e-6
#: States in which a service may start an OS install (a reinstall starts it before
#: moving on to ``installing_os``).
INSTALLING = frozenset({"reinstalling", "installing_os"})
#: States whose recorded server may already be someone else's.
LET_GO = frozenset({"terminating", "closed"})


def active_not_ready(
    store: StatusStore, fake: FakeDCImanager, emails: Mapping[str, str], where: str
) -> list[Violation]:
    """Active means ready, the moment a service becomes active (and for every other
    active one then): its server is owned by its customer and its last operation
    ended well (no install still running or failed). ``emails``: service id -> its
    customer's lower-case e-mail; ``where`` says when, for the messages."""
    out: list[Violation] = []
    servers = fake.state.servers
    for row in store.services(["active"]):
        server = servers.get(row.server_id) if row.server_id is not None else None
        owner = (server.owner_email or "").lower() if server is not None else None
        if server is None or owner != emails.get(row.service_id):
            problem = f"server {row.server_id} is owned by {owner!r}"
        elif server.operation_status != "ok":
            problem = (
                f"server {row.server_id}'s {server.operation_kind} operation is "
                f"{server.operation_status}"
            )
        else:
            continue
        out.append(Violation("I1", row.service_id, f"{where}: active, but {problem}"))
    return out


def shared_servers(store: StatusStore, where: str) -> list[Violation]:
    """Store-side I3 at every step that may change it: no server recorded by two
    services that use it (a terminating service keeps recording the server it has
    already given back, which another may take)."""
    out: list[Violation] = []
    holders: dict[int, list[str]] = collections.defaultdict(list)
    for row in store.services():
        if row.server_id is not None and row.state not in LET_GO:
            holders[row.server_id].append(row.service_id)
    for server_id, sids in sorted(holders.items()):
        if len(sids) > 1:
            message = f"{where}: server {server_id} recorded by {sorted(sids)}"
            out.append(Violation("I3", sids[0], message))
    return out


def offenders(store: StatusStore, violations: Sequence[Violation], limit: int = 3) -> list[str]:
    """The first ``limit`` services a violation names, each followed by the other
    services that once recorded its server (the culprit is often one of those)."""
    named: dict[str, None] = {}
    for v in violations:
        if v.service_id is not None:
            named.setdefault(v.service_id, None)
    out: dict[str, None] = {}
    for sid in list(named)[:limit]:
        out.setdefault(sid, None)
        row = store.get(sid)
        if row is None or row.server_id is None:
            continue
        for other in store.services():
            if other.service_id != sid and any(
                row.server_id in (t.detail.get("server_id"), t.detail.get("released_claim"))
                for t in store.history(other.service_id)
            ):
                out.setdefault(other.service_id, None)
    return list(out)


def install_stays(
    store: StatusStore, installs: Sequence[InstallRecord], start: float
) -> list[Violation]:
    """I4 per install, in place of counting installs per owner (two services of
    one customer may hold one server one after the other): every OS install
    started in DCImanager falls in a stay of a service on that server in
    ``reinstalling`` / ``installing_os`` (from the transition in to the transition
    out), and no stay holds two."""
    stays: dict[int, list[tuple[float, float, str]]] = collections.defaultdict(list)
    for row in store.services():
        server: int | None = None
        began: float | None = None
        for t in store.history(row.service_id):
            if t.detail.get("server_id") is not None:
                server = int(t.detail["server_id"])
            if t.to_state in INSTALLING and began is None:
                began = t.at
            elif t.to_state not in INSTALLING and began is not None:
                if server is not None:
                    stays[server].append((began, t.at, row.service_id))
                began = None
        if began is not None and server is not None:
            stays[server].append((began, float("inf"), row.service_id))
    out: list[Violation] = []
    per_stay: collections.Counter[tuple[str, float]] = collections.Counter()
    for install in installs:
        when = install.started_at
        # transition times are the store clock carried forward by the worker:
        # equal to the simulator's clock up to rounding
        holders = [
            (sid, start)
            for start, end, sid in stays.get(install.server_id, ())
            if start - EPSILON <= when <= end + EPSILON
        ]
        if not holders:
            out.append(
                Violation(
                    "I4",
                    None,
                    f"OS install on server {install.server_id} at "
                    f"t={when - start:.3f} (owner {install.owner_email!r}) was "
                    "started outside every installing stay on that server",
                )
            )
        per_stay.update(holders)
    for (sid, start), n in sorted(per_stay.items()):
        if n > 1:
            out.append(
                Violation(
                    "I4",
                    sid,
                    f"{n} OS installs in one installing stay (from t={start - start:.3f})",
                )
            )
    return out


def deliveries(
    store: StatusStore,
    service_ids: Sequence[str],
    delivered: Sequence[tuple[str, str, int, str]],
) -> list[Violation]:
    """I6: each event a history calls for was delivered (``delivered``: event id,
    service id, version, kind per delivery), always with one event id, and nothing
    else was."""
    out: list[Violation] = []
    ids: dict[tuple[str, int, str], set[str]] = collections.defaultdict(set)
    for event_id, sid, version, kind in delivered:
        ids[(sid, version, kind)].add(event_id)
    want = {
        (sid, version, kind)
        for sid in service_ids
        for version, kind in expected_events(store.history(sid))
    }
    for key in sorted(want - set(ids)):
        out.append(Violation("I6", key[0], f"v{key[1]} {key[2]!r} event never delivered"))
    for key in sorted(set(ids) - want):
        out.append(Violation("I6", key[0], f"v{key[1]} {key[2]!r} delivered, no such transition"))
    for key, got in sorted(ids.items()):
        if len(got) > 1:
            out.append(Violation("I6", key[0], f"v{key[1]} {key[2]!r} under ids {sorted(got)}"))
    return out
