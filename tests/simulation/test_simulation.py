"""T10, deterministic simulation (:mod:`dci6bridge.testing.simulation`): four logical
workers and billing interleaved at every I/O boundary by a seeded scheduler, in virtual
time, with crashes, stalls past the lease, 503s, lost answers, revoked sessions and
failed installs drawn from the seed. Every seed must end with no violation; a seed
replays byte for byte (``DCI6BRIDGE_SIM_SEED=<n>`` reruns one, see ``conftest.py``);
with a safety mechanism switched off the simulation must find a violation."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

from dci6bridge.errors import ConfigError
from dci6bridge.stores import SQLiteStore
from dci6bridge.testing import Faults
from dci6bridge.testing.simulation import (
    FaultPlan,
    SimulationConfig,
    SimulationError,
    SimulationResult,
    run_simulation,
)


@attrs.frozen
class Found:
    """A seed that found a bug, kept as a regression test: while ``fixed`` is false
    the test expects exactly ``violations`` (reported as an expected failure, ``why``)
    and fails once they are gone (set ``fixed``); once fixed, the seed must pass. A
    seed replays the same run only while the orchestrator makes the same calls in the
    same order: a fix changes the run, so the test then checks the seed is clean."""

    seed: int
    config: SimulationConfig
    faults: FaultPlan
    violations: tuple[str, ...]
    why: str
    fixed: bool = False


FOUND: dict[str, Found] = {
    "duplicate-user-across-modules": Found(
        seed=20,
        config=SimulationConfig(
            orders=2, shared_customer_every=1, servers_per_location=1, requests=2, request_gap=0.5
        ),
        faults=FaultPlan(),
        violations=("I4 [SIM-000] 2 remote users with email 'customer1@example.com'",),
        why="the right to create a customer's user is a store singleton per module "
        "(user:<module>:<email>), but modules dci-1 and dci-2 share one DCImanager: two "
        "services of one customer, one in each module, both find no user and create one",
    ),
    "terminating-retry-takes-a-siblings-server": Found(
        seed=5,
        config=SimulationConfig(
            orders=8, shared_customer_every=1, servers_per_location=1, requests=30, request_gap=4.0
        ),
        faults=FaultPlan(crash_at={"after:store.release_server": 0.7}),
        violations=(
            "I3 [SIM-007] server 2 is owned remotely by None, not by the customer",
            "I4 [SIM-007] records user 2, which is not the owner None of server 2",
        ),
        why="a worker closing SIM-001 dies after giving server 2 back (after "
        "release_server, before the move to closed); SIM-007 of the same customer takes "
        "the server and becomes ACTIVE; the next worker re-runs terminating for SIM-001, "
        "sees the server owned by the same e-mail, powers it off and releases its owner: "
        "an ACTIVE service loses its server",
    ),
}

#: Seeds a negative control may need before it must have found a violation.
CONTROL_SEEDS = 10


def _assert_ok(result: SimulationResult) -> None:
    assert result.ok, result.failure_message()


def test_seed(sim_seed: int) -> None:
    result = run_simulation(sim_seed)
    if os.environ.get("DCI6BRIDGE_SIM_SEED"):
        print(result.failure_message(tail=200))
    _assert_ok(result)


@pytest.mark.parametrize("name", sorted(FOUND))
def test_found(name: str) -> None:
    found = FOUND[name]
    result = run_simulation(found.seed, found.config, found.faults)
    if found.fixed:
        _assert_ok(result)
        return
    assert not result.ok, f"{name} passes: fixed? set fixed=True ({found.why})"
    assert len(result.violations) == len(found.violations), result.failure_message()
    got = tuple(
        str(v)[: len(want)] for v, want in zip(result.violations, found.violations, strict=True)
    )
    assert got == found.violations, result.failure_message()
    pytest.xfail(f"{name}: {found.why}")


def test_the_nemesis_strikes_and_billing_races() -> None:
    """Over a few seeds every kind of fault fires and every billing request is made:
    a suite where nothing happens would pass for nothing."""
    total: collections.Counter[str] = collections.Counter()
    for seed in range(1000, 1008):
        result = run_simulation(seed)
        _assert_ok(result)
        total.update(result.counts)
    print(dict(sorted(total.items())))
    for what, least in (
        ("crashes", 10),
        ("stalls", 3),
        ("billing_crashes", 3),
        ("sessions_revoked", 1),
        ("rejected", 5),
        ("replayed", 1),
        ("reopened", 1),
        ("accepted_retry", 1),
        ("final_failed", 1),
        ("final_closed", 3),
        ("final_suspended", 3),
    ):
        assert total[what] >= least, (what, dict(total))
    for action in ("suspend", "resume", "close", "reboot", "reinstall"):
        assert total[f"accepted_{action}"] >= 1, (action, dict(total))
    # more than one worker took part, and workers were replaced after crashes
    assert total["workers_started"] > 8 * 4


def test_a_seed_replays_identically() -> None:
    first, again = run_simulation(7), run_simulation(7)
    assert first.trace == again.trace
    assert first.digest == again.digest
    assert first.counts == again.counts
    other = run_simulation(8)
    assert other.digest != first.digest


def test_a_seed_replays_identically_in_another_process() -> None:
    """Byte for byte, whatever the process's string hashing (set and dict orders)."""
    code = (
        "import logging; logging.disable(logging.CRITICAL);"
        "from dci6bridge.testing.simulation import run_simulation;"
        "print(run_simulation(7).digest)"
    )
    digests = set()
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert digests == {run_simulation(7).digest}


def test_the_trace_records_every_actor_and_fault() -> None:
    result = run_simulation(3)
    actors = {line.split()[2] for line in result.trace}
    assert "billing" in actors
    assert {a.split(".")[0] for a in actors if a.startswith("w")} == {"w1", "w2", "w3", "w4"}
    assert any(" CRASHED at " in line for line in result.trace)
    assert any(" before:servers.install_os" in line for line in result.trace)
    assert any(" after:store.transition:active" in line for line in result.trace)
    assert result.trace[-1].split()[2] == "final"


def _first_failure(config: SimulationConfig, invariant: str) -> tuple[int, SimulationResult]:
    for seed in range(CONTROL_SEEDS):
        result = run_simulation(seed, config)
        if any(v.invariant == invariant for v in result.violations):
            return seed, result
    raise AssertionError(f"no {invariant} violation within {CONTROL_SEEDS} seeds")


def test_without_fencing_the_simulation_finds_lost_transitions() -> None:
    seed, result = _first_failure(SimulationConfig(unsafe_disable_fencing=True), "I2")
    print(f"first I2 violation at seed {seed}:\n{result.failure_message(tail=10)}")
    # the failure names its seed and replays it
    message = result.failure_message()
    assert f"DCI6BRIDGE_SIM_SEED={seed}" in message
    assert "history of SIM-" in message
    assert "trace tail" in message
    again = run_simulation(seed, SimulationConfig(unsafe_disable_fencing=True))
    assert again.digest == result.digest
    assert again.violations == result.violations


def test_without_readback_the_simulation_finds_duplicates() -> None:
    seed, result = _first_failure(SimulationConfig(unsafe_skip_readback=True), "I4")
    print(f"first I4 violation at seed {seed}:\n{result.failure_message(tail=10)}")
    duplicates = [
        v
        for v in result.violations
        if v.invariant == "I4" and ("remote users" in v.message or "OS installs" in v.message)
    ]
    assert duplicates, result.failure_message()


def test_without_faults_only_the_interleaving_varies() -> None:
    result = run_simulation(5, faults=FaultPlan.none())
    _assert_ok(result)
    for what in ("crashes", "stalls", "billing_crashes", "sessions_revoked"):
        assert result.counts.get(what, 0) == 0, (what, result.counts)
    assert not any("CRASHED" in line for line in result.trace)


def test_the_sqlite_store_replays_the_memory_store_run(tmp_path: Path) -> None:
    """The same seed through the SQLite store: same schedule, same outcome (the stores
    decide alike, so every interleaving is the same)."""
    for seed in (11, 12):
        path = tmp_path / f"sim-{seed}.db"
        config = SimulationConfig(store=lambda clock, path=path: SQLiteStore(path, clock=clock))
        on_sqlite = run_simulation(seed, config)
        _assert_ok(on_sqlite)
        assert on_sqlite.digest == run_simulation(seed).digest


def test_bad_settings_name_the_field_and_value() -> None:
    with pytest.raises(ConfigError, match=r"FaultPlan\.crash: 1\.5"):
        FaultPlan(crash=1.5)
    with pytest.raises(ConfigError, match=r"FaultPlan\.stall_leases: 0\.5"):
        FaultPlan(stall_leases=0.5)
    with pytest.raises(ConfigError, match=r"SimulationConfig\.workers: 0 "):
        SimulationConfig(workers=0)
    with pytest.raises(ConfigError, match=r"SimulationConfig\.lease_ttl: 'x'"):
        SimulationConfig(lease_ttl="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"FaultPlan\.crash_at: 'after:nothing' matches no"):
        FaultPlan(crash_at={"after:nothing": 0.5})
    with pytest.raises(ConfigError, match=r"FaultPlan\.crash_at\['before:\*'\]: 2"):
        FaultPlan(crash_at={"before:*": 2})
    with pytest.raises(ConfigError, match=r"seed: '3' is not an int"):
        run_simulation("3")  # type: ignore[arg-type]


def test_a_seed_costs_a_fraction_of_a_second() -> None:
    started = time.perf_counter()
    result = run_simulation(21)
    elapsed = time.perf_counter() - started
    print(f"seed 21: {elapsed:.2f}s, {result.counts['steps']} steps")
    assert elapsed < 5.0


def test_an_actor_blocking_outside_the_simulation_stops_the_run() -> None:
    """A real sleep (here the simulator's in-process latency) would hang the baton: the
    run stops with SimulationError instead."""
    blocking = FaultPlan.none()
    blocking = attrs.evolve(
        blocking, simulator=Faults(latency_ms=(2000.0, 2000.0), latency_in_process=True)
    )
    started = time.perf_counter()
    with pytest.raises(SimulationError, match="blocked outside the simulation"):
        run_simulation(0, SimulationConfig(real_timeout_s=0.2), blocking)
    assert time.perf_counter() - started < 1.5
