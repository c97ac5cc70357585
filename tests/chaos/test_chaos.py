"""Chaos runs (T3/T4): worker processes against one served simulator and one store,
SIGKILLed at random, crashing at random failpoints, with 503s, revoked tokens, lost
responses and latency; afterwards invariants I1-I5 must hold.
``test_negative_controls.py`` runs the same nemesis with fencing or read-back switched
off and must fail.

Workers frozen past their lease are left to ``test_negative_controls.py`` (fencing) and
``test_stalls.py``: a freeze that lands between a worker's last lease check and a
non-idempotent call is the known residual risk (a late user creation or install), which
would make this run fail at random rather than point at a regression.

Sized for CI on 2 cores: 6 workers, 300 orders, installs of 0.3 s.
"""

from __future__ import annotations

from typing import Any

import pytest

from dci6bridge.testing._faults import Faults

ORDERS = 300
WORKERS = 6

#: The nemesis on the DCImanager side: 503 episodes, token expiry, answers lost after
#: the effect was applied (on the non-idempotent calls and on reads), latency.
FAULTS = Faults(
    unavailable_rate=0.02,
    unavailable_burst=2,
    lost_response_rate=0.03,
    lost_response_routes=(
        "users.create",
        "servers.set_owner",
        "servers.install_os",
        "servers.get",
    ),
    latency_ms=(1.0, 5.0),
)
TOKEN_TTL = 2.0
#: Every n-th nemesis tick, every DCImanager session is revoked at once.
EXPIRE_EVERY = 5
LEASE_TTL = 2.0


def _run(chaos: Any, store_url: str | None, seed: int) -> None:
    world = chaos.world(
        store_url,
        orders=ORDERS,
        install_duration=0.3,
        faults=FAULTS,
        token_ttl=TOKEN_TTL,
        seed=seed,
    )
    result = chaos.run(
        world,
        workers=WORKERS,
        failpoints="*=0.02",
        kill_every=(0.5, 1.0),
        lease_ttl=LEASE_TTL,
        budget=150.0,
        expire_every=EXPIRE_EVERY,
    )
    print(result.summary())
    print(f"active over time: {result.timeline()}")
    state = world.fake.state
    print(
        f"simulator: {len(state.requests)} requests, "
        f"{sum(1 for r in state.requests if r.status == 503)} x 503, "
        f"{sum(1 for r in state.requests if r.status == 401)} x 401, "
        f"{sum(1 for r in state.requests if r.lost)} lost answers"
    )
    assert result.settled, f"not settled within the budget: {result.summary()}"
    assert result.report.ok, f"{result.summary()}\n{result.log}"
    # the nemesis really struck
    assert result.kills >= 5
    assert result.crashes >= 10
    assert result.revocations >= 1
    assert any(r.lost for r in state.requests)
    assert any(r.status == 503 for r in state.requests)
    assert any(r.status == 401 for r in state.requests)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_sqlite(chaos: Any) -> None:
    _run(chaos, None, seed=20261)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_chaos_postgres(chaos: Any, pg_store_url: str) -> None:
    _run(chaos, pg_store_url, seed=20262)
