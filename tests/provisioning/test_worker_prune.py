"""The Worker prunes the store periodically, one worker of the deployment at a time,
timed by the injected clock (nobody sleeps)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from dci6bridge.domain import Order
from dci6bridge.errors import ConfigError
from dci6bridge.provisioning import Provisioner, Worker
from dci6bridge.testing import FakeDCImanager

HOUR = 3600.0


def desired_seq(prov: Provisioner, sid: str = "S1") -> int:
    row = prov.store.get(sid)
    assert row is not None
    return row.desired_seq


@pytest.fixture
def billed(
    prov: Provisioner,
    new_order: Callable[..., Order],
    drive: Callable[[Provisioner], int],
) -> Provisioner:
    """S1 active, then suspended (request r1) and resumed (r2) by billing."""
    prov.open(new_order("S1"))
    drive(prov)
    prov.suspend("S1", request_id="r1")
    prov.resume("S1", request_id="r2")
    return prov


def replay_is_new(prov: Provisioner) -> bool:
    """Replay billing's r1: ``True`` if the store no longer knew it (decided again)."""
    before = desired_seq(prov)
    prov.suspend("S1", request_id="r1")
    return desired_seq(prov) != before


def test_the_worker_prunes_when_due_and_one_worker_at_a_time(
    billed: Provisioner,
    make_prov: Callable[..., Provisioner],
    fake: FakeDCImanager,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prov = billed
    every = 100 * HOUR  # longer than the 72 h retention, to see the singleton at work
    worker = Worker(prov, reconcile_every=0, prune_every=every, clock=fake.clock.now)
    second = make_prov(worker_id="second")
    other = Worker(second, reconcile_every=0, prune_every=every, clock=fake.clock.now)
    worker.run_once()  # prunes at once (nothing is old yet) and holds the job
    assert prov.store.try_singleton("pruner", "someone-else", 10.0) is False
    fake.advance(80 * HOUR)
    worker.run_once()  # not due again yet
    other.run_once()  # due, but the job is the first worker's until its interval ends
    assert not replay_is_new(prov), "nobody pruned r1 yet"
    fake.advance(21 * HOUR)
    with caplog.at_level(logging.INFO, logger="dci6bridge.provisioning"):
        worker.run_once()
    assert "pruned 2 request records" in caplog.text
    assert replay_is_new(prov), "r1 was pruned, so its replay is a new request"


def test_retention_is_the_workers_and_zero_disables_pruning(
    billed: Provisioner, fake: FakeDCImanager
) -> None:
    prov = billed
    fake.advance(2 * HOUR)
    Worker(prov, reconcile_every=0, prune_every=0, clock=fake.clock.now).run_once()
    assert not replay_is_new(prov)
    Worker(prov, reconcile_every=0, retention=3 * HOUR, clock=fake.clock.now).run_once()
    assert not replay_is_new(prov), "2 h old records are inside a 3 h retention"
    Worker(prov, reconcile_every=0, retention=HOUR, clock=fake.clock.now).run_once()
    assert replay_is_new(prov)


def test_prune_arguments_are_checked(prov: Provisioner) -> None:
    with pytest.raises(ConfigError) as exc:
        Worker(prov, prune_every=-1, retention=0)
    assert any("prune_every" in p and "-1" in p for p in exc.value.problems)
    with pytest.raises(ConfigError, match=r"retention: must be above 0, got 0"):
        Worker(prov, retention=0)
