"""Crash-point matrix (T2): a worker process dies (``os._exit(137)``) at one named
failpoint, a fresh worker takes over, and the service still converges with exactly one
server, one user and one install, through its whole life.

Every failpoint one service passes through (open, reboot, reinstall, suspend, resume,
close) gets a case; the list comes from a probe of the orchestrator itself
(``probe_failpoints``), and ``test_matrix_covers_every_failpoint`` makes sure nothing
in ``FAILPOINTS`` is left out silently. The cases run in one parallel pass (module
fixture ``matrix``); each point is reported as its own test.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
import zlib
from typing import Any

import attrs
import pytest

from dci6bridge import open_store
from dci6bridge.provisioning._failpoints import FAILPOINTS, FailpointCrash, Failpoints
from dci6bridge.testing.chaos import RemoteTruth, format_history

#: Failpoints a single service's ordinary life does not pass, and why; any other point
#: the probe does not reach fails ``test_matrix_covers_every_failpoint``.
NOT_ON_THE_LIFECYCLE = {
    "after:store.renew": "a lease is renewed only when a step outlives a third of its TTL",
    "after:store.checkpoint:install": "an operator retry of a failed install records a new intent",
    "after:store.checkpoint:housekeeping": "only when an idle service is found runnable",
    "after:store.ack_outbox": "events are relayed only to a registered callback",
    "after:store.transition:failed": "failure paths are covered by the chaos runs",
}
PARALLEL = 4
PHASE_TIMEOUT = 30.0


@attrs.define
class CaseResult:
    point: str
    phases: list[str]
    #: exit statuses of the armed fleet's workers (the one that crashes at the point)
    exits: dict[int, int]
    #: exit statuses of the clean fleet's workers (started after the crash, stopped at
    #: the end with SIGTERM)
    clean_exits: dict[int, int]
    marker: list[str]
    problems: list[str]
    wall: float
    history: str


def _phases(first_phase: str, lifecycle: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The requests of a case: open, the steps needed to reach the point's phase, close."""
    names = [a for a, _ in lifecycle]
    target = dict(lifecycle)
    wanted = ["open"]
    if first_phase == "resume":
        wanted.append("suspend")
    if first_phase not in ("open", "close"):
        wanted.append(first_phase)
    wanted.append("close")
    return [(a, target[a]) for a in names if a in wanted]


def _run_case(
    kit: Any,
    hooks: Any,
    point: str,
    first_phase: str,
    *,
    cli: bool = False,
    install_duration: float = 0.5,
) -> CaseResult:
    started = time.monotonic()
    world = kit.world(
        orders=1,
        locations=1,
        servers_per_location=3,
        # well above the poll interval: the first poll must find the install running,
        # as in the probe, or the op_id checkpoint is skipped
        install_duration=install_duration,
        seed=zlib.crc32(point.encode()),
        ipv4_count=1,
    )
    order = world.orders[0]
    sid = order.service_id
    phases = _phases(first_phase, hooks.LIFECYCLE)
    problems: list[str] = []
    store = open_store(world.store_url)
    armed = kit.fleet(world, failpoints=point, name="armed", cli=cli)
    clean = None
    installs = 0
    try:
        armed.start()
        with world.provisioner(store) as prov:
            for action, target in phases:
                hooks.lifecycle_request(prov, order, action)
                if action in ("open", "reinstall"):
                    installs += 1
                deadline = time.monotonic() + PHASE_TIMEOUT
                while True:
                    if armed is not None and armed.reap(restart=False):
                        armed.stop()
                        clean = kit.fleet(world, name="clean", cli=cli)
                        clean.start()
                    row = store.get(sid)
                    assert row is not None
                    if row.state == target and not row.runnable:
                        break
                    if row.state == "failed":
                        problems.append(f"{action}: failed: {row.last_error}")
                        break
                    if time.monotonic() > deadline:
                        problems.append(f"{action}: still {row.state} after {PHASE_TIMEOUT} s")
                        break
                    time.sleep(0.03)
                if problems:
                    break
                report = world.check(store, installs_per_service=installs)
                problems += [f"{action}: {v}" for v in report.violations]
                server = store.get(sid).server_id  # type: ignore[union-attr]
                truth = world.fake.state
                if action == "suspend" and server is not None:
                    srv = truth.servers[server]
                    if srv.data_ports_up is not False or not srv.ipmi_up:
                        problems.append(
                            f"suspend: data ports up={srv.data_ports_up}, ipmi up={srv.ipmi_up}"
                        )
                if (
                    action == "resume"
                    and server is not None
                    and truth.servers[server].data_ports_up is not True
                ):
                    problems.append("resume: data ports are not all up")
        if not problems:
            truth = RemoteTruth.from_fake(world.fake)
            owned = {s: o for s, o in truth.owners.items() if o is not None}
            if owned:
                problems.append(f"close: servers still owned: {owned}")
            if order.customer_email.lower() in truth.user_emails():
                problems.append("close: the customer's user was not deleted")
            if store.server_claims():
                problems.append(f"close: reservations left: {dict(store.server_claims())}")
    finally:
        for fleet in (armed, clean):
            if fleet is not None:
                fleet.stop(timeout=5.0)
        history = format_history(store, sid)
        store.close()
    exits = dict(armed.exits) if armed is not None else {}
    clean_exits = dict(clean.exits) if clean is not None else {}
    return CaseResult(
        point=point,
        phases=[a for a, _ in phases],
        exits=exits,
        clean_exits=clean_exits,
        marker=kit.marker(world),
        problems=problems,
        wall=time.monotonic() - started,
        history=history,
    )


@pytest.fixture(scope="module")
def matrix(chaos_module: Any, chaos_hooks: Any) -> dict[str, CaseResult]:
    """Run every worker-side case, ``PARALLEL`` at a time."""
    points = {p: ph for p, ph in chaos_hooks.probe_failpoints().items()
              if p not in chaos_hooks.BILLING_POINTS}  # fmt: skip
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        futures = {
            p: pool.submit(_run_case, chaos_module, chaos_hooks, p, ph) for p, ph in points.items()
        }
        results = {p: f.result() for p, f in futures.items()}
        # A point behind a timing (the first install poll finding the install still
        # running) can be missed on an overloaded machine: such a case runs once more
        # with a slower install. A point still not reached fails its test.
        missed = [p for p, r in results.items() if r.marker != [p]]
        retries = {
            p: pool.submit(_run_case, chaos_module, chaos_hooks, p, points[p], install_duration=1.5)
            for p in missed
        }
        results.update({p: f.result() for p, f in retries.items()})
    wall = time.monotonic() - started
    slowest = max(results.values(), key=lambda r: r.wall)
    print(
        f"\ncrash matrix: {len(results)} cases in {wall:.1f} s "
        f"(slowest {slowest.point} {slowest.wall:.1f} s; run again: {missed or 'none'})"
    )
    return results


def test_matrix_covers_every_failpoint(chaos_hooks: Any) -> None:
    reached = set(chaos_hooks.probe_failpoints())
    left_out = set(FAILPOINTS) - reached
    assert left_out == set(NOT_ON_THE_LIFECYCLE), (
        "failpoints neither in the matrix nor explained: "
        f"{sorted(left_out - set(NOT_ON_THE_LIFECYCLE))}; explained but now reached: "
        f"{sorted(set(NOT_ON_THE_LIFECYCLE) - left_out)}"
    )
    assert reached <= set(FAILPOINTS)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_crash_point(worker_crash_point: str, matrix: dict[str, CaseResult]) -> None:
    r = matrix[worker_crash_point]
    detail = f"{r}\n{r.history}"
    # the worker died exactly there (and only once: the marker spans restarts)
    assert r.marker == [worker_crash_point], detail
    # Forked workers report their status through multiprocessing's fork server, which
    # gives 255 when it cannot read the status back (seen once in CI while the status of
    # the os._exit(137) was being collected, and once for a clean worker stopped at the
    # end). The marker above proves where the worker died;
    # test_crash_point_through_the_cli checks the 137 itself with real processes.
    assert r.exits.get(137, 0) + r.exits.get(255, 0) == 1, detail
    assert r.clean_exits.get(137, 0) == 0, detail
    assert not r.problems, detail


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_crash_point_through_the_cli(chaos: Any, chaos_hooks: Any) -> None:
    """The same case with real ``python -m dci6bridge worker`` processes: the command
    arms failpoints from its environment and a crash is exit status 137."""
    point = "after:users.create"
    r = _run_case(chaos, chaos_hooks, point, chaos_hooks.probe_failpoints()[point], cli=True)
    assert r.marker == [point], r
    assert r.exits.get(137) == 1, r
    assert not r.problems, f"{r}\n{r.history}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("point", ["after:store.create_service", "after:store.request"])
def test_billing_side_crash(point: str, chaos: Any, chaos_hooks: Any) -> None:
    """The billing process dies right after recording an order or a request: it
    retries the call, which is then a no-op, and the service converges."""
    world = chaos.world(orders=1, locations=1, servers_per_location=3, install_duration=0.1)
    order = world.orders[0]
    store = open_store(world.store_url)
    try:
        with world.provisioner(store) as worker:
            if point == "after:store.request":
                worker.open(order)
                worker.run_until_idle()
            crashy = world.provisioner(store, failpoints=Failpoints([f"{point}=raise"]))
            if point == "after:store.request":
                call = functools.partial(crashy.suspend, order.service_id, request_id="billing-42")
            else:
                call = functools.partial(crashy.open, order)
            with pytest.raises(FailpointCrash):
                call()
            crashy.close_clients()
            # billing retries the same call after its restart
            if point == "after:store.request":
                worker.suspend(order.service_id, request_id="billing-42")
                target = "suspended"
            else:
                worker.open(order)
                target = "active"
            worker.run_until_idle()
        row = store.get(order.service_id)
        assert row is not None
        assert row.state == target
        applied = [t for t in store.history(order.service_id) if t.to_state == "suspending"]
        assert len(applied) == (1 if target == "suspended" else 0)
        report = world.check(store)
        assert report.ok, report.format(store)
    finally:
        store.close()
