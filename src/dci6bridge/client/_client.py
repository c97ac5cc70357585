"""``Client`` and ``AsyncClient``: the public entry points of the DCImanager 6 client."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Final

from dci6bridge.client._checks import is_number, is_text
from dci6bridge.errors import ConfigError, Dci6BridgeError
from dci6bridge.secret import Secret

from ._converter import parser
from ._core import Call, Core
from ._http import HTTPX_VERSION, AsyncSession, AsyncTransport, SyncSession, SyncTransport
from ._retry import RetryPolicy
from .models import ConnectionCheck, WhoAmI
from .query import Condition, SortKey
from .resources.ips import AsyncIps, Ips
from .resources.locations import AsyncLocations, Locations
from .resources.os_templates import AsyncOsTemplates, OsTemplates
from .resources.servers import AsyncServers, Servers
from .resources.switches import AsyncSwitches, Switches
from .resources.users import AsyncUsers, Users

__all__ = ["AsyncClient", "Client"]

_LOG: Final = logging.getLogger("dci6bridge")
_METHODS: Final = ("GET", "POST", "DELETE")
ParamValue = str | int | float | bool | Condition | SortKey


def _core(
    base_url: str,
    email: str | None,
    password: str | Secret | None,
    token: str | Secret | None,
    api_prefix: str,
    timeout: float,
    retry: RetryPolicy,
    user_agent: str | None,
) -> Core:
    problems = []
    if not is_number(timeout) or timeout <= 0:
        problems.append(f"timeout: {timeout!r} must be a number of seconds above 0")
    given: object = retry  # callers without a type checker may pass anything
    if not isinstance(given, RetryPolicy):
        problems.append(f"retry: {retry!r} is not a RetryPolicy")
    if problems:
        raise ConfigError(problems)
    return Core(
        base_url,
        email=email,
        password=password,
        token=token,
        api_prefix=api_prefix,
        user_agent=user_agent,
        http_version=HTTPX_VERSION,
    )


def _param(name: str, value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, Condition, SortKey)):
        return str(value)
    raise ConfigError(f"params[{name!r}]: {value!r} is not a str, number, bool or Q")


def raw_call(
    method: str, path: str, params: Mapping[str, ParamValue] | None, json: Any
) -> Call[Any]:
    """The escape hatch's request: any path under the API prefix, JSON back."""
    verb = method.upper() if is_text(method) else method
    if verb not in _METHODS:
        raise ConfigError(f"method: {method!r} is not one of {', '.join(_METHODS)}")
    if not is_text(path) or not path.strip("/") or "://" in path:
        raise ConfigError(f"path: {path!r} is not a path under the API prefix")
    pairs = tuple((k, _param(k, v)) for k, v in (params or {}).items())
    if verb == "POST" and json is None:
        json = {}
    return Call(verb, path.lstrip("/"), lambda data: data, pairs, json)


_parse_whoami = parser(WhoAmI)


def whoami_call() -> Call[WhoAmI]:
    """``GET auth/v4/whoami``."""
    return Call.to("auth.whoami", _parse_whoami)


def _check_result(
    whoami: WhoAmI | None, error: Exception | None, latency: float
) -> ConnectionCheck:
    if error is not None:
        return ConnectionCheck(ok=False, user_email=None, latency_s=latency, detail=str(error))
    assert whoami is not None
    return ConnectionCheck(ok=True, user_email=whoami.owner_email, latency_s=latency)


def _describe(client: object, core: Core) -> str:
    """``Client('https://dci.example.com/api/', email='admin@example.com')``; never a secret."""
    who = f"email={core.auth.email!r}" if core.auth.email else "token=***"
    return f"{type(client).__name__}({core.root!r}, {who})"


class Client:
    """Synchronous DCImanager 6 client; thread-safe, one login shared by all threads.

    Args:
        base_url: ``https://dci.example.com`` (no ``/api``; see ``api_prefix``).
        email: an administrator's e-mail; the client logs in, renews before expiry,
            logs in again once on 401 and revokes the session on close.
        password: that administrator's password (``str`` or :class:`~dci6bridge.Secret`).
        token: a pre-issued token instead of credentials (never revoked by the client).
        api_prefix: the prefix of every service path (``/api``; ``""`` for none).
        verify: verify TLS certificates (``True``), not (``False``), or a CA bundle path.
        timeout: seconds for each network operation of one attempt.
        retry: the default :class:`RetryPolicy`; every method takes ``retry=`` too.
        transport: an ``httpx.BaseTransport`` (e.g. ``httpx.MockTransport`` or the
            simulator's ``fake.transport``).
        clock: POSIX-seconds clock for token expiry, deadlines and waits (``time.time``).
        sleep: sleep function for backoff and polling (``time.sleep``).
        user_agent: your application's name, prepended to the User-Agent.

    Resource namespaces: :attr:`servers`, :attr:`users`, :attr:`locations`,
    :attr:`os_templates`, :attr:`ips`, :attr:`switches`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        email: str | None = None,
        password: str | Secret | None = None,
        token: str | Secret | None = None,
        api_prefix: str = "/api",
        verify: bool | str = True,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
        transport: SyncTransport | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        user_agent: str | None = None,
    ) -> None:
        core = _core(base_url, email, password, token, api_prefix, timeout, retry, user_agent)
        self._session = SyncSession(
            core,
            verify=verify,
            timeout=float(timeout),
            transport=transport,
            retry=retry,
            clock=clock,
            sleep=sleep,
            logger=_LOG,
        )
        self.servers = Servers(self._session)
        """Servers: list, get, owner, install, power, ports, wait."""
        self.users = Users(self._session)
        """Users: list, find, create, delete."""
        self.locations = Locations(self._session)
        """Locations."""
        self.os_templates = OsTemplates(self._session)
        """OS templates."""
        self.ips = Ips(self._session)
        """IP addresses and pools."""
        self.switches = Switches(self._session)
        """Switch ports."""

    def __repr__(self) -> str:
        return _describe(self, self._session.core)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Call any route (``path`` relative to the API prefix) with the same auth,
        retries and errors; the decoded JSON answer."""
        return self._session.execute(raw_call(method, path, params, json), retry)

    def whoami(self, *, retry: RetryPolicy | None = None) -> WhoAmI:
        """The session's user."""
        return self._session.execute(whoami_call(), retry)

    def check(self) -> ConnectionCheck:
        """Log in and read ``whoami``; never raises for API or network problems."""
        started = time.perf_counter()
        try:
            who = self.whoami()
        except Dci6BridgeError as exc:
            return _check_result(None, exc, time.perf_counter() - started)
        return _check_result(who, None, time.perf_counter() - started)

    def close(self) -> None:
        """Revoke the session the client opened (by token id) and close connections."""
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """Asynchronous twin of :class:`Client`: the same arguments and namespaces, with
    ``await`` on every call, ``async for`` over ``servers.list()``, and
    :meth:`aclose` / ``async with``. Tasks share one login (an ``asyncio.Lock``).

    ``sleep`` must be an async function (default ``asyncio.sleep``) and ``transport``
    an ``httpx.AsyncBaseTransport``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        email: str | None = None,
        password: str | Secret | None = None,
        token: str | Secret | None = None,
        api_prefix: str = "/api",
        verify: bool | str = True,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
        transport: AsyncTransport | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        user_agent: str | None = None,
    ) -> None:
        core = _core(base_url, email, password, token, api_prefix, timeout, retry, user_agent)
        self._session = AsyncSession(
            core,
            verify=verify,
            timeout=float(timeout),
            transport=transport,
            retry=retry,
            clock=clock,
            sleep=sleep,
            logger=_LOG,
        )
        self.servers = AsyncServers(self._session)
        """Servers: list, get, owner, install, power, ports, wait."""
        self.users = AsyncUsers(self._session)
        """Users: list, find, create, delete."""
        self.locations = AsyncLocations(self._session)
        """Locations."""
        self.os_templates = AsyncOsTemplates(self._session)
        """OS templates."""
        self.ips = AsyncIps(self._session)
        """IP addresses and pools."""
        self.switches = AsyncSwitches(self._session)
        """Switch ports."""

    def __repr__(self) -> str:
        return _describe(self, self._session.core)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Call any route (``path`` relative to the API prefix); the decoded JSON answer."""
        return await self._session.execute(raw_call(method, path, params, json), retry)

    async def whoami(self, *, retry: RetryPolicy | None = None) -> WhoAmI:
        """The session's user."""
        return await self._session.execute(whoami_call(), retry)

    async def check(self) -> ConnectionCheck:
        """Log in and read ``whoami``; never raises for API or network problems."""
        started = time.perf_counter()
        try:
            who = await self.whoami()
        except Dci6BridgeError as exc:
            return _check_result(None, exc, time.perf_counter() - started)
        return _check_result(who, None, time.perf_counter() - started)

    async def aclose(self) -> None:
        """Revoke the session the client opened (by token id) and close connections."""
        await self._session.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
