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

import httpx
import tenacity

from dci6bridge.errors import APIConnectionError, APITimeoutError, Dci6BridgeError
from dci6bridge.secret import Secret

from ._core import Call, Core
from ._retry import Failure, RetryPolicy

__all__ = ["HTTPX_VERSION", "AsyncSession", "SyncSession", "Transport"]

T = TypeVar("T")
HTTPX_VERSION: Final = httpx.__version__
Transport = httpx.BaseTransport | httpx.AsyncBaseTransport
"""What ``transport=`` accepts: e.g. ``httpx.MockTransport`` or the simulator's."""

_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RESPONSE_LOST: Final = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


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
        return ssl.create_default_context(cafile=verify)
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

    def _retrying_kwargs(
        self, policy: RetryPolicy, method: str, path: str, started: float
    ) -> dict[str, Any]:
        clock = self.clock

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
            | _PastDeadline(clock, started, policy.deadline),
            "wait": lambda state: policy.delay(state.attempt_number),
            "retry": tenacity.retry_if_exception(lambda exc: self._retryable(policy, method, exc))
            | tenacity.retry_if_result(lambda resp: self._retryable(policy, method, resp)),
            "retry_error_callback": lambda state: state.outcome.result(),  # last answer
            "before_sleep": before_sleep,
        }

    def _log(self, method: str, path: str, outcome: object, started: float, attempt: int) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            what = (
                outcome.status_code
                if isinstance(outcome, httpx.Response)
                else type(outcome).__name__
            )
            self.log.debug(
                "%s %s -> %s in %.1f ms (attempt %d)",
                method,
                path,
                what,
                (time.perf_counter() - started) * 1000,
                attempt,
            )

    @staticmethod
    def _connection_error(exc: httpx.HTTPError, method: str, path: str) -> APIConnectionError:
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        return cls(f"{type(exc).__name__}: {exc}", method=method, path=path)

    def _login_target(self) -> tuple[Call[None], bytes | None]:
        call = self.core.login_call()
        return call, self.core.encode_body(call.body)


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
        if auth.needs_login(self.clock()):
            with self._lock:
                if auth.needs_login(self.clock()):
                    self._login(policy)
        return auth.generation, auth.token

    def _relogin(self, generation: int, policy: RetryPolicy) -> tuple[int, Secret | None]:
        auth = self.core.auth
        with self._lock:
            if auth.generation == generation:  # nobody renewed it since our request
                self._login(policy)
            return auth.generation, auth.token

    def _login(self, policy: RetryPolicy) -> None:
        call, content = self._login_target()
        resp = self._send(call.method, call.path, (), content, None, policy)
        self.core.apply_login(resp.status_code, resp.content, call.method, call.path)

    def _send(
        self,
        method: str,
        path: str,
        params: tuple[tuple[str, str], ...],
        content: bytes | None,
        token: Secret | None,
        policy: RetryPolicy,
    ) -> httpx.Response:
        url = self.core.url(path, params)
        headers = self.core.auth_headers(token, has_body=content is not None)
        attempt = 0

        def once() -> httpx.Response:
            nonlocal attempt
            attempt += 1
            started = time.perf_counter()
            try:
                resp = self._http.request(method, url, headers=headers, content=content)
            except httpx.HTTPError as exc:
                self._log(method, path, exc, started, attempt)
                raise
            self._log(method, path, resp, started, attempt)
            return resp

        started = self.clock()  # the deadline counts from the first attempt
        try:
            first = once()
        except httpx.TransportError as exc:
            if not self._retryable(policy, method, exc):
                raise self._connection_error(exc, method, path) from None
            first_exc: httpx.TransportError | None = exc
        else:
            if not self._retryable(policy, method, first):
                return first
            first_exc = None

        def again() -> httpx.Response:
            if attempt == 1 and not replayed:
                replayed.append(True)
                if first_exc is not None:
                    raise first_exc
                return first
            return once()

        replayed: list[bool] = []
        try:
            result: httpx.Response = tenacity.Retrying(
                sleep=self.sleep, **self._retrying_kwargs(policy, method, path, started)
            )(again)
        except httpx.TransportError as exc:
            raise self._connection_error(exc, method, path) from None
        return result

    def close(self) -> None:
        """Revoke our own session (by token id) and close the connection pool."""
        if self.closed:
            return
        logout = self.core.logout_call()
        if logout is not None:
            try:
                self._send(
                    logout.method, logout.path, (), None, self.core.auth.token, RetryPolicy.none()
                )
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
        if auth.needs_login(self.clock()):
            async with self._lock:
                if auth.needs_login(self.clock()):
                    await self._login(policy)
        return auth.generation, auth.token

    async def _relogin(self, generation: int, policy: RetryPolicy) -> tuple[int, Secret | None]:
        auth = self.core.auth
        async with self._lock:
            if auth.generation == generation:
                await self._login(policy)
            return auth.generation, auth.token

    async def _login(self, policy: RetryPolicy) -> None:
        call, content = self._login_target()
        resp = await self._send(call.method, call.path, (), content, None, policy)
        self.core.apply_login(resp.status_code, resp.content, call.method, call.path)

    async def _send(
        self,
        method: str,
        path: str,
        params: tuple[tuple[str, str], ...],
        content: bytes | None,
        token: Secret | None,
        policy: RetryPolicy,
    ) -> httpx.Response:
        url = self.core.url(path, params)
        headers = self.core.auth_headers(token, has_body=content is not None)
        attempt = 0

        async def once() -> httpx.Response:
            nonlocal attempt
            attempt += 1
            started = time.perf_counter()
            try:
                resp = await self._http.request(method, url, headers=headers, content=content)
            except httpx.HTTPError as exc:
                self._log(method, path, exc, started, attempt)
                raise
            self._log(method, path, resp, started, attempt)
            return resp

        started = self.clock()  # the deadline counts from the first attempt
        try:
            first = await once()
        except httpx.TransportError as exc:
            if not self._retryable(policy, method, exc):
                raise self._connection_error(exc, method, path) from None
            first_exc: httpx.TransportError | None = exc
        else:
            if not self._retryable(policy, method, first):
                return first
            first_exc = None

        async def again() -> httpx.Response:
            if attempt == 1 and not replayed:
                replayed.append(True)
                if first_exc is not None:
                    raise first_exc
                return first
            return await once()

        replayed: list[bool] = []
        try:
            result: httpx.Response = await tenacity.AsyncRetrying(
                sleep=self.sleep, **self._retrying_kwargs(policy, method, path, started)
            )(again)
        except httpx.TransportError as exc:
            raise self._connection_error(exc, method, path) from None
        return result

    async def aclose(self) -> None:
        """Revoke our own session (by token id) and close the connection pool."""
        if self.closed:
            return
        logout = self.core.logout_call()
        if logout is not None:
            try:
                await self._send(
                    logout.method, logout.path, (), None, self.core.auth.token, RetryPolicy.none()
                )
            except Dci6BridgeError as exc:
                self.log.debug("logout failed: %s", exc)
        self.core.forget_session()
        self.closed = True
        await self._http.aclose()
