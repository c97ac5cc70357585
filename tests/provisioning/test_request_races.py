"""Billing's requests racing a worker's lease (durability.md T9): a request that comes in
while a worker holds the service, after the worker decided what to write, is never lost.

The worker's store is wrapped so that billing's request lands right before a chosen
write of the worker (the moment the worker computed "runnable" from the old request)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from dci6bridge.domain import Catalog, Order
from dci6bridge.provisioning import Provisioner, ServiceState
from dci6bridge.stores.base import AdvanceRequest, StatusStore
from dci6bridge.testing import FakeDCImanager

from .conftest import INSTALL_S, StoreSpy


class RequestOnce:
    """Run ``request()`` before the first worker write matching ``when`` (a
    :class:`StoreSpy` hook)."""

    def __init__(self, when: Callable[[AdvanceRequest], bool], request: Callable[[], Any]) -> None:
        self._when = when
        self._request = request
        self.fired = False

    def __call__(self, requests: Sequence[AdvanceRequest]) -> None:
        if not self.fired and any(self._when(r) for r in requests):
            self.fired = True
            self._request()


def _moves_to(state: str) -> Callable[[AdvanceRequest], bool]:
    return lambda request: any(m.to == state for m in request.moves)


@pytest.mark.parametrize(
    ("action", "at", "final"),
    [
        # the install finished and the worker writes ACTIVE (not runnable, lease given up)
        ("close", "active", ServiceState.CLOSED),
        ("suspend", "active", ServiceState.SUSPENDED),
        # mid-provisioning writes
        ("close", "assigning_owner", ServiceState.CLOSED),
        ("suspend", "installing_os", ServiceState.SUSPENDED),
    ],
)
def test_a_request_during_the_lease_is_not_lost(
    make_prov: Callable[..., Provisioner],
    catalog: Catalog,
    store: StatusStore,
    fake: FakeDCImanager,
    new_order: Callable[..., Order],
    action: str,
    at: str,
    final: ServiceState,
) -> None:
    billing = make_prov()
    racing = RequestOnce(_moves_to(at), lambda: getattr(billing, action)("S1"))
    worker = make_prov(store=StoreSpy(store, racing), worker_id="racer", on_event=None)
    billing.open(new_order())
    fake.advance(0)
    worker.run_until_idle(advance=fake.clock.advance)
    fake.advance(INSTALL_S)
    worker.run_until_idle(advance=fake.clock.advance)
    assert racing.fired
    svc = worker.get("S1")
    assert svc.state is final, worker.history("S1")
    row = store.get("S1")
    assert row is not None
    assert not row.runnable
    if final is ServiceState.CLOSED:
        assert fake.state.servers_of("jane@example.com") == ()
    else:
        server = fake.state.servers[svc.server_id]
        assert server.owner_email == "jane@example.com"


def test_an_idle_worker_does_not_overwrite_a_new_request(
    make_prov: Callable[..., Provisioner],
    store: StatusStore,
    fake: FakeDCImanager,
    active: Provisioner,
) -> None:
    """An ACTIVE service found runnable (housekeeping) is written not-runnable by an idle
    worker; a suspend arriving just before that write still happens."""
    billing, sid = active, "S1"
    racing = RequestOnce(
        lambda request: request.patch == {"runnable": False}, lambda: billing.suspend(sid)
    )
    worker = make_prov(store=StoreSpy(store, racing), worker_id="racer", on_event=None)
    # make the active service look runnable with nothing to do (a stray wake-up)
    store.request(sid, "wake", "wake", {}, lambda s: {"runnable": True})
    worker.run_until_idle(advance=fake.clock.advance)
    assert racing.fired
    assert worker.get(sid).state is ServiceState.SUSPENDED
