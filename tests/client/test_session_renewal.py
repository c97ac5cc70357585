"""After a token renewal (before expiry, or a re-login after 401) the client revokes the
session it replaced, by id and best effort: against the simulator, sync and async."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import dci6bridge as d
from dci6bridge.testing import FakeDCImanager, ManualClock

TTL = 3600.0
LOGIN = "/api/auth/v4/public/token"


class Recorder:
    """The HTTP boundary around the simulator: keeps the token values it hands out
    (to prove none reaches a log) and can break the revocation requests."""

    def __init__(self, fake: FakeDCImanager) -> None:
        self.fake = fake
        self.tokens: list[str] = []
        self.break_revocations = False
        self.transport = httpx.MockTransport(self.handle)
        self.atransport = httpx.MockTransport(self.ahandle)

    def _check(self, request: httpx.Request) -> None:
        if self.break_revocations and request.method == "DELETE":
            raise httpx.ConnectError("connection refused", request=request)

    def _keep(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == LOGIN and response.status_code < 300:
            self.tokens.append(json.loads(response.read())["token"])
        return response

    def handle(self, request: httpx.Request) -> httpx.Response:
        self._check(request)
        return self._keep(request, self.fake.transport.handle_request(request))

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        self._check(request)
        response = await self.fake.transport.handle_async_request(request)
        await response.aread()
        return self._keep(request, response)

    def secrets(self) -> list[str]:
        return [*self.tokens, self.fake.admin_password]


@pytest.fixture
def fake() -> FakeDCImanager:
    return FakeDCImanager.with_inventory(
        locations=1, servers_per_location=2, clock=ManualClock(), token_ttl=TTL
    )


@pytest.fixture
def rec(fake: FakeDCImanager) -> Recorder:
    return Recorder(fake)


def client_for(
    fake: FakeDCImanager, rec: Recorder, clock: Callable[[], float] | None = None
) -> d.Client:
    return d.Client(
        fake.url,
        email=fake.admin_email,
        password=fake.admin_password,
        transport=rec.transport,
        clock=clock or fake.clock.now,
        sleep=fake.advance,
    )


def works(fake: FakeDCImanager, token: str) -> bool:
    """Whether a session token is still accepted (a client that uses only it)."""
    with d.Client(fake.url, token=token, transport=fake.transport) as probe:
        try:
            probe.whoami()
        except d.AuthenticationError:
            return False
    return True


def no_secret_in(caplog: pytest.LogCaptureFixture, rec: Recorder) -> None:
    assert rec.tokens, "the recorder saw the logins"
    for secret in rec.secrets():
        assert secret not in caplog.text


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dci6bridge")


def test_renewal_before_expiry_revokes_the_old_session(
    fake: FakeDCImanager, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    with client_for(fake, rec) as dci:
        dci.whoami()
        assert fake.live_sessions() == (1,)
        fake.advance(TTL - 30)  # inside the client's 60 s margin: it renews first
        dci.whoami()
        assert fake.live_sessions() == (2,)
        assert not works(fake, rec.tokens[0])
        assert works(fake, rec.tokens[1])
        assert fake.state.count("auth.logout", 200) == 1
        dci.whoami()  # no further login or revocation while the token is fresh
        assert len(rec.tokens) == 2
        assert fake.state.count("auth.logout") == 1
    assert fake.live_sessions() == ()  # close() revoked the second one
    no_secret_in(caplog, rec)


def test_relogin_after_401_revokes_the_rejected_session(
    fake: FakeDCImanager, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # The client's clock runs two minutes late: it misses the renewal margin and the
    # simulator rejects the expired token with 401.
    with client_for(fake, rec, clock=lambda: fake.clock.now() - 120) as dci:
        dci.whoami()
        fake.advance(TTL + 1)
        dci.whoami()
        assert fake.state.count("auth.whoami", 401) == 1
        assert fake.live_sessions() == (2,)
        assert fake.state.count("auth.logout", 200) == 1  # the expired one, by id
        assert "DELETE auth/v4/token/1 -> 200" in caplog.text
    no_secret_in(caplog, rec)


def test_a_failed_revocation_never_fails_the_request(
    fake: FakeDCImanager, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    with client_for(fake, rec) as dci:
        dci.whoami()
        rec.break_revocations = True
        fake.advance(TTL - 30)
        dci.whoami()  # renewed; the revocation failed quietly
        assert fake.live_sessions() == (1, 2)
        assert "revoking replaced session 1 failed: ConnectError" in caplog.text
        rec.break_revocations = False
        fake.set_faults(unavailable_routes=["auth.logout"])
        fake.fail_next(1)
        fake.advance(TTL - 30)
        dci.whoami()
        assert "revoking replaced session 2: HTTP 503" in caplog.text
        # both replaced sessions were left to expire on their own: 1 already has
        assert fake.live_sessions() == (2, 3)
    no_secret_in(caplog, rec)


def test_tokens_expired_on_the_server_relogin_and_the_404_is_only_logged(
    fake: FakeDCImanager, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    with client_for(fake, rec) as dci:
        dci.whoami()
        fake.expire_tokens()  # revoked server-side: the revocation answers 404
        dci.whoami()
        assert "revoking replaced session 1: HTTP 404" in caplog.text
        assert fake.live_sessions() == (2,)
    no_secret_in(caplog, rec)


def test_a_pre_issued_token_is_never_revoked(fake: FakeDCImanager, rec: Recorder) -> None:
    with client_for(fake, rec) as issuer:
        issuer.whoami()
        token = rec.tokens[0]
        with d.Client(fake.url, token=token, transport=rec.transport) as dci:
            dci.whoami()
        assert works(fake, token)
    assert fake.state.count("auth.logout") == 1  # the issuer's own close()


def test_async_renewal_revokes_the_old_session(
    fake: FakeDCImanager, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async def sleep(seconds: float) -> None:
        fake.advance(seconds)

    async def run() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with d.AsyncClient(
            fake.url,
            email=fake.admin_email,
            password=fake.admin_password,
            transport=rec.atransport,
            clock=fake.clock.now,
            sleep=sleep,
        ) as dci:
            await dci.whoami()
            fake.advance(TTL - 30)
            # many tasks at once: one renewal, one revocation
            await asyncio.gather(*(dci.whoami() for _ in range(10)))
            seen["live"] = fake.live_sessions()
            fake.expire_tokens()
            await dci.whoami()
            seen["live_after_401"] = fake.live_sessions()
        return seen

    seen = asyncio.run(run())
    assert seen["live"] == (2,)
    assert len(rec.tokens) == 3  # one renewal for the ten tasks, one re-login
    assert not works(fake, rec.tokens[0])
    assert seen["live_after_401"] == (3,)
    assert fake.state.count("auth.logout", 200) == 2  # session 1, then 3 on close
    assert fake.state.count("auth.logout", 404) == 1  # session 2, revoked server-side
    assert fake.live_sessions() == ()
    no_secret_in(caplog, rec)
