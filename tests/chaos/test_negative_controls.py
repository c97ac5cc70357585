"""Negative controls (T6/T7 mutation controls): the chaos run with a safety mechanism
switched off by its test-only switch must FAIL the invariant checker. A control that
cannot fail would prove nothing about the suites that pass.

* fencing off (``?unsafe_disable_fencing=1`` on the store URL): workers frozen past
  their lease (SIGSTOP ... SIGCONT, every 0.2-0.4 s) wake up and write over their
  successors, which breaks the history chain (I2);
* read-back off (``DCI6BRIDGE_UNSAFE_SKIP_READBACK=1``): after a crash or a lost answer
  right after a non-idempotent call, the call is made again blindly, which leaves
  duplicate users or installs in DCImanager (I4).

Both are the chaos run of ``test_chaos.py`` made smaller and sharper (more stalls, more
lost answers on the non-idempotent calls) so that they fail reliably in a short run.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from dci6bridge.testing._faults import Faults

ORDERS = 60
WORKERS = 6
LEASE_TTL = 1.5


def _stalls(chaos: Any, *, fencing: bool, seed: int = 31) -> Any:
    world = chaos.world(
        orders=ORDERS, install_duration=0.3, faults=Faults(latency_ms=(1.0, 5.0)), seed=seed
    )
    result = chaos.run(
        world,
        workers=WORKERS,
        failpoints=None,
        kill_every=(0.2, 0.4),
        pause=(1, 2 * LEASE_TTL),
        lease_ttl=LEASE_TTL,
        budget=30.0,
        store_url=world.store_url if fencing else f"{world.store_url}?unsafe_disable_fencing=1",
    )
    print(result.summary())
    print(result.report.format(limit=1) if not result.report.ok else "no violation")
    assert result.pauses >= 5
    return result


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_without_fencing_the_checker_finds_lost_transitions(chaos: Any) -> None:
    # Broken history chains (I2) show in nearly every run (10 of 10 seeds locally, 1 to
    # 24 of them per run), but a CI run once had a seed without any: its stalls never
    # froze a worker holding a write its successor then made. Orphan servers (I5) need a
    # stale write to drop a server record at the wrong moment and appear in most runs,
    # not all. So seeds follow each other until both were found, each in some run, and
    # the reconciler's report is checked on the run that had orphans.
    chains_broken = 0
    orphans: set[int] = set()
    reported: set[int] = set()
    for seed in (31, 33, 35, 37, 39):
        result = _stalls(chaos, fencing=False, seed=seed)
        chains_broken += result.report.by_invariant().get("I2", 0)
        if not orphans:
            orphans = {
                int(re.match(r"server (\d+) is owned", v.message).group(1))  # type: ignore[union-attr]
                for v in result.report.violations
                if v.invariant == "I5" and v.service_id is None
            }
            reported = set(result.orphans_reported)
        if chains_broken and orphans:
            break
    assert chains_broken, "fencing off, yet no history violation in 5 runs"
    assert orphans, "fencing off, yet no orphan server in 5 runs"
    # The check runs after the services the sweep handed over were finished, and with
    # stale writes rewriting rows (a service gone back to `pending` after `active`),
    # one of them may record again a server the sweep reported: seen 1 run in 4.
    assert orphans <= reported, (orphans, reported)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_with_fencing_stalled_workers_lose_no_transition(chaos: Any) -> None:
    """The positive side of the control above: the same stalls with fencing on. Every
    history chain stays whole (I2) and nothing is left unsettled (I1). Remote duplicates
    from a stall that lands right before a remote call (the residual risk, see
    ``test_stalls.py``) are printed, not asserted here."""
    result = _stalls(chaos, fencing=True)
    assert result.settled, result.summary()
    chain = [v for v in result.report.violations if v.invariant in ("I1", "I2", "I3")]
    assert not chain, result.report.format()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_without_readback_the_checker_finds_duplicates(chaos: Any) -> None:
    faults = Faults(
        unavailable_rate=0.02,
        unavailable_burst=2,
        lost_response_rate=0.15,
        lost_response_routes=("users.create", "servers.install_os", "servers.set_owner"),
        latency_ms=(1.0, 5.0),
    )
    world = chaos.world(orders=ORDERS, install_duration=0.3, faults=faults, seed=32)
    result = chaos.run(
        world,
        workers=WORKERS,
        failpoints="after:users.create=0.1,after:servers.install_os=0.1,*=0.02",
        # the duplicates appear early; waiting for every broken service to settle
        # (or fail) would only cost time
        budget=20.0,
        extra_env={"DCI6BRIDGE_UNSAFE_SKIP_READBACK": "1"},
    )
    print(result.summary())
    print(result.report.format(limit=1) if not result.report.ok else "no violation")
    duplicates = [
        v
        for v in result.report.violations
        if v.invariant == "I4" and ("remote users" in v.message or "OS installs" in v.message)
    ]
    assert duplicates, f"read-back off, yet no duplicate user or install: {result.summary()}"
