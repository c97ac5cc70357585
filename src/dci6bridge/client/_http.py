"""The only module that imports httpx: send loops, retries, login locking.

:class:`SyncSession` and :class:`AsyncSession` are twins over :class:`_SessionBase`, which
holds every decision; the twins differ only in ``await`` and in their lock type.

The first attempt of a request runs without tenacity (tenacity costs about 20 µs per
call, a tenth of a local round trip); only when it fails in a retryable way does a
tenacity loop take over, replaying that first outcome as its attempt 1 so attempt
numbers, backoff and the deadline stay exact.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import attrs
import httpx
import tenacity

from dci6bridge.errors import APIConnectionError, APITimeoutError, ConfigError, Dci6BridgeError
from dci6bridge.secret import Secret

from ._core import Call, Core
from ._retry import Failure, RetryPolicy

__all__ = ["HTTPX_VERSION", "AsyncSession", "AsyncTransport", "SyncSession", "SyncTransport"]

T = TypeVar("T")
HTTPX_VERSION: Final = httpx.__version__
SyncTransport = httpx.BaseTransport
"""What ``Client(transport=...)`` accepts: e.g. ``httpx.MockTransport``, ``fake.transport``."""
AsyncTransport = httpx.AsyncBaseTransport
"""What ``AsyncClient(transport=...)`` accepts (``httpx.MockTransport`` is both kinds)."""

_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RESPONSE_LOST: Final = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)

# What ``_send`` takes for a session request of our own (logout, revocation).
_SendArgs = tuple[str, str, tuple[()], None, Secret | None, RetryPolicy]


def _failure(exc: BaseException) -> Failure | None:
    if isinstance(exc, _NOT_SENT):
        return Failure.NOT_SENT
    if isinstance(exc, _RESPONSE_LOST):
        return Failure.RESPONSE_LOST
    return None  # e.g. UnsupportedProtocol: a configuration problem, never retried


class _PastDeadline(tenacity.stop.stop_base):
    """Stop when the next backoff would end past the policy's total deadline (measured
    with the injected clock, which tenacity's own ``stop_after_delay`` cannot use)."""

    def __init__(self, clock: Callable[[], float], started: float, deadline: float) -> None:
        self.clock = clock
        self.started = started
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        waited = self.clock() - self.started + (retry_state.upcoming_sleep or 0.0)
        return waited > self.deadline


def _tls(verify: bool | str) -> bool | ssl.SSLContext:
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"verify: CA bundle {verify!r} cannot be loaded ({exc})") from None
    if not isinstance(verify, bool):
        raise ConfigError(f"verify: {verify!r} is not True, False or a CA bundle path")
    return verify


class _SessionBase:
    """Everything both twins share: configuration, decisions, logging."""

    def __init__(
        self,
        core: Core,
        *,
        retry: RetryPolicy,
        clock: Callable[[], float] | None,
        logger: logging.Logger,
    ) -> None:
        self.core = core
        self.retry = retry
        self.clock: Callable[[], float] = clock or time.time
        self.log = logger
        self.closed = False

    def _check_open(self, method: str, path: str) -> None:
        if self.closed:
            raise APIConnectionError("the client is closed", method=method, path=path)

    def _retryable(self, policy: RetryPolicy, method: str, outcome: Any) -> bool:
        if policy.attempts == 1:
            return False
        if isinstance(outcome, httpx.Response):
            return policy.retries_status(method, outcome.status_code)
        failure = _failure(outcome)
        return failure is not None and policy.retries_failure(method, failure)

    def _retrying_kwargs(self, policy: RetryPolicy, attempts: _Attempts) -> dict[str, Any]:
        method, path, clock = attempts.method, attempts.path, self.clock

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if self.log.isEnabledFor(logging.DEBUG):
                self.log.debug(
                    "retrying %s %s after attempt %d in %.3f s",
                    method,
                    path,
                    state.attempt_number,
                    state.upcoming_sleep,
                )

        return {
            "stop": tenacity.stop_after_attempt(policy.attempts)
            | _PastDeadline(clock, attempts.started, policy.deadline),
            "wait": lambda state: policy.delay(state.attempt_number),
            "retry": tenacity.retry_if_exception(lambda exc: self._retryable(policy, method, exc))
            | tenacity.retry_if_result(lambda resp: self._retryable(policy, method, resp)),
            "retry_error_callback": lambda state: state.outcome.result(),  # last answer
            "before_sleep": before_sleep,
        }

    def _log(self, attempts: _Attempts, outcome: object, started: float) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            what = (
                outcome.status_code
                if isinstance(outcome, httpx.Response)
                else type(outcome).__name__
            )
            self.log.debug(
                "%s %s -> %s in %.1f ms (attempt %d)",
                attempts.method,
                attempts.path,
                what,
                (time.perf_counter() - started) * 1000,
                attempts.number,
            )

    @staticmethod
    def _connection_error(exc: httpx.HTTPError, attempts: _Attempts) -> APIConnectionError:
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        return cls(f"{type(exc).__name__}: {exc}", method=attempts.method, path=attempts.path)

    def _login_target(self) -> tuple[Call[None], bytes | None]:
        call = self.core.login_call()
        return call, self.core.encode_body(call.body)

    def _prepare(
        self,
        method: str,
        path: str,
        params: tuple[tuple[str, str], ...],
        content: bytes | None,
        token: Secret | None,
    ) -> _Attempts:
        return _Attempts(
            method,
            path,
            self.core.url(path, params),
            self.core.auth_headers(token, has_body=content is not None),
            content,
            self.clock(),  # the deadline counts from the first attempt
        )

    def _first_is_final(
        self, policy: RetryPolicy, attempts: _Attempts, outcome: httpx.Response | Exception
    ) -> bool:
        """After attempt 1: ``True`` if its answer is final; raises if its failure is;
        else keeps the outcome for the retry loop to replay and returns ``False``."""
        if self._retryable(policy, attempts.method, outcome):
            attempts.first = outcome
            return False
        if isinstance(outcome, httpx.HTTPError):
            raise self._connection_error(outcome, attempts) from None
        return True

    def _logout_args(self) -> _SendArgs | None:
        logout = self.core.logout_call()
        if logout is None:
            return None
        return (logout.method, logout.path, (), None, self.core.auth.token, RetryPolicy.none())

    def _revoke_args(self, token_id: int) -> _SendArgs:
        # Sent with the new token: the replaced one may be expired already (a 401).
        revoke = self.core.revoke_call(token_id)
        return (revoke.method, revoke.path, (), None, self.core.auth.token, RetryPolicy.none())

    def _revoked(self, token_id: int, outcome: httpx.Response | Exception) -> None:
        """Log (DEBUG, no secrets) a revocation of a replaced session that did not work;
        the session then simply expires on its own."""
        if isinstance(outcome, httpx.Response):
            if not 200 <= outcome.status_code < 300:
                self.log.debug(
                    "revoking replaced session %d: HTTP %d", token_id, outcome.status_code
                )
            return
        # Our errors carry no secret; anyone else's text is not ours to vouch for.
        why = str(outcome) if isinstance(outcome, Dci6BridgeError) else type(outcome).__name__
        self.log.debug("revoking replaced session %d failed: %s", token_id, why)


@attrs.define
class _Attempts:
    """One request and its attempts. The first attempt runs outside tenacity; when it
    fails in a retryable way, the tenacity loop replays it as its own attempt 1."""

    method: str
    path: str
    url: str
    headers: dict[str, str] = attrs.field(repr=False)  # holds the token
    content: bytes | None = attrs.field(repr=False)  # may hold a password
    started: float
    number: int = 0
    first: httpx.Response | Exception | None = None

    def replay(self) -> httpx.Response | None:
        """The kept first outcome, once (raised if it was a failure); then ``None``."""
        first, self.first = self.first, None
        if isinstance(first, Exception):
            raise first
        return first


class SyncSession(_SessionBase):
    """Sends requests for :class:`~dci6bridge.Client` (threads share one login)."""

    def __init__(
        self,
        core: Core,
        *,
        verify: bool | str,
        timeout: float,
        transport: httpx.BaseTransport | None,
        retry: RetryPolicy,
        clock: Callable[[], float] | None,
        sleep: Callable[[float], None] | None,
        logger: logging.Logger,
    ) -> None:
        super().__init__(core, retry=retry, clock=clock, logger=logger)
        self.sleep: Callable[[float], None] = sleep or time.sleep
        self._lock = threading.Lock()
        self._http = httpx.Client(
            headers=dict(core.base_headers),
            verify=_tls(verify),
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def execute(self, call: Call[T], retry: RetryPolicy | None = None) -> T:
        """Send ``call`` (logging in first if needed, once more on 401) and parse it."""
        self._check_open(call.method, call.path)
        policy = retry or self.retry
        content = self.core.encode_body(call.body)
        generation, token = self._token(policy)
        resp = self._send(call.method, call.path, call.params, content, token, policy)
        if resp.status_code == 401 and self.core.auth.can_login:
            generation, token = self._relogin(generation, policy)
            resp = self._send(call.method, call.path, call.params, content, token, policy)
        return self.core.finish(call, resp.status_code, resp.content)

    def _token(self, policy: RetryPolicy) -> tuple[int, Secret | None]:
        auth = self.core.auth
        replaced = None
        if auth.needs_login(self.clock()):
            with self._lock:
                if auth.needs_login(self.clock()):
                    replaced = self._login(policy)
        current = auth.generation, auth.token
        self._revoke(replaced)
        return current

    def _relogin(self, generation: int, policy: RetryPolicy) -> tuple[int, Secret | None]:
        auth = self.core.auth
        replaced = None
        with self._lock:
            if auth.generation == generation:  # nobody renewed it since our request
                replaced = self._login(policy)
            current = auth.generation, auth.token
        self._revoke(replaced)
        return current

    def _login(self, policy: RetryPolicy) -> int | None:
        call, content = self._login_target()
        resp = self._send(call.method, call.path, (), content, None, policy)
        return self.core.apply_login(
            resp.status_code, resp.content, call.method, call.path, now=self.clock()
        )

    def _revoke(self, token_id: int | None) -> None:
        """Best effort, outside the login lock: revoke the session a login replaced."""
        if token_id is None:
            return
        outcome: httpx.Response | Exception
        try:
            outcome = self._send(*self._revoke_args(token_id))
        except Exception as exc:  # never fail the caller's request over it
            outcome = exc
        self._revoked(token_id, outcome)

    def _send(
        self,
        method: str,
        path: str,
        params: tuple[tuple[str, str], ...],
        content: bytes | None,
        token: Secret | None,
        policy: RetryPolicy,
    ) -> httpx.Response:
        attempts = self._prepare(method, path, params, content, token)
        outcome: httpx.Response | Exception
        try:
            outcome = self._once(attempts)
        except httpx.HTTPError as exc:
            outcome = exc
        if self._first_is_final(policy, attempts, outcome):
            assert isinstance(outcome, httpx.Response)
            return outcome

        def again() -> httpx.Response:
            first = attempts.replay()
            return first if first is not None else self._once(attempts)

        retrying = tenacity.Retrying(sleep=self.sleep, **self._retrying_kwargs(policy, attempts))
        try:
            result: httpx.Response = retrying(again)
        except httpx.HTTPError as exc:
            raise self._connection_error(exc, attempts) from None
        return result

    def _once(self, attempts: _Attempts) -> httpx.Response:
        attempts.number += 1
        started = time.perf_counter()
        try:
            resp = self._http.request(
                attempts.method, attempts.url, headers=attempts.headers, content=attempts.content
            )
        except httpx.HTTPError as exc:
            self._log(attempts, exc, started)
            raise
        self._log(attempts, resp, started)
        return resp

    def close(self) -> None:
        """Revoke our own session (by token id) and close the connection pool."""
        if self.closed:
            return
        logout = self._logout_args()
        if logout is not None:
            try:
                self._send(*logout)
            except Dci6BridgeError as exc:
                self.log.debug("logout failed: %s", exc)
        self.core.forget_session()
        self.closed = True
        self._http.close()


class AsyncSession(_SessionBase):
    """Sends requests for :class:`~dci6bridge.AsyncClient` (tasks share one login)."""

    def __init__(
        self,
        core: Core,
        *,
        verify: bool | str,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
        retry: RetryPolicy,
        clock: Callable[[], float] | None,
        sleep: Callable[[float], Awaitable[None]] | None,
        logger: logging.Logger,
    ) -> None:
        super().__init__(core, retry=retry, clock=clock, logger=logger)
        self.sleep: Callable[[float], Awaitable[None]] = sleep or asyncio.sleep
        self._lock = asyncio.Lock()
        self._http = httpx.AsyncClient(
            headers=dict(core.base_headers),
            verify=_tls(verify),
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    async def execute(self, call: Call[T], retry: RetryPolicy | None = None) -> T:
        """Send ``call`` (logging in first if needed, once more on 401) and parse it."""
        self._check_open(call.method, call.path)
        policy = retry or self.retry
        content = self.core.encode_body(call.body)
        generation, token = await self._token(policy)
        resp = await self._send(call.method, call.path, call.params, content, token, policy)
        if resp.status_code == 401 and self.core.auth.can_login:
            generation, token = await self._relogin(generation, policy)
            resp = await self._send(call.method, call.path, call.params, content, token, policy)
        return self.core.finish(call, resp.status_code, resp.content)

    async def _token(self, policy: RetryPolicy) -> tuple[int, Secret | None]:
        auth = self.core.auth
        replaced = None
        if auth.needs_login(self.clock()):
            async with self._lock:
                if auth.needs_login(self.clock()):
                    replaced = await self._login(policy)
        current = auth.generation, auth.token
        await self._revoke(replaced)
        return current

    async def _relogin(self, generation: int, policy: RetryPolicy) -> tuple[int, Secret | None]:
        auth = self.core.auth
        replaced = None
        async with self._lock:
            if auth.generation == generation:
                replaced = await self._login(policy)
            current = auth.generation, auth.token
        await self._revoke(replaced)
        return current

    async def _login(self, policy: RetryPolicy) -> int | None:
        call, content = self._login_target()
        resp = await self._send(call.method, call.path, (), content, None, policy)
        return self.core.apply_login(
            resp.status_code, resp.content, call.method, call.path, now=self.clock()
        )

    async def _revoke(self, token_id: int | None) -> None:
        """Best effort, outside the login lock: revoke the session a login replaced."""
        if token_id is None:
            return
        outcome: httpx.Response | Exception
        try:
            outcome = await self._send(*self._revoke_args(token_id))
        except Exception as exc:  # never fail the caller's request over it
            outcome = exc
        self._revoked(token_id, outcome)

    async def _send(
        self,
        method: str,
        path: str,
        params: tuple[tuple[str, str], ...],
        content: bytes | None,
        token: Secret | None,
        policy: RetryPolicy,
    ) -> httpx.Response:
        attempts = self._prepare(method, path, params, content, token)
        outcome: httpx.Response | Exception
        try:
            outcome = await self._once(attempts)
        except httpx.HTTPError as exc:
            outcome = exc
        if self._first_is_final(policy, attempts, outcome):
            assert isinstance(outcome, httpx.Response)
            return outcome

        async def again() -> httpx.Response:
            first = attempts.replay()
            return first if first is not None else await self._once(attempts)

        retrying = tenacity.AsyncRetrying(
            sleep=self.sleep, **self._retrying_kwargs(policy, attempts)
        )
        try:
            result: httpx.Response = await retrying(again)
        except httpx.HTTPError as exc:
            raise self._connection_error(exc, attempts) from None
        return result

    async def _once(self, attempts: _Attempts) -> httpx.Response:
        attempts.number += 1
        started = time.perf_counter()
        try:
            resp = await self._http.request(
                attempts.method, attempts.url, headers=attempts.headers, content=attempts.content
            )
        except httpx.HTTPError as exc:
            self._log(attempts, exc, started)
            raise
        self._log(attempts, resp, started)
        return resp

    async def aclose(self) -> None:
        """Revoke our own session (by token id) and close the connection pool."""
        if self.closed:
            return
        logout = self._logout_args()
        if logout is not None:
            try:
                await self._send(*logout)
            except Dci6BridgeError as exc:
                self.log.debug("logout failed: %s", exc)
        self.core.forget_session()
        self.closed = True
        await self._http.aclose()
