"""Clients for processing modules: the one place a module's connection settings become a
:class:`~dci6bridge.Client` or :class:`~dci6bridge.AsyncClient`.

Everything above the client layer (the orchestrator, ``dci6bridge check``, the CLI) gets
its clients here, so the URL, the administrator's credentials and the TLS settings of a
module are read in one place. Transport, retry policy, timeout, clock and sleep are
injected by the caller (tests pass the simulator's ``fake.transport``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from .client import AsyncClient, Client, RetryPolicy
from .domain import ProcessingModule
from .errors import ConfigError

__all__ = ["async_client_for", "client_for"]


def _options(
    module: ProcessingModule,
    transport: Any,
    retry: RetryPolicy | None,
    timeout: float | None,
    clock: Callable[[], float] | None,
    sleep: Any,
) -> dict[str, Any]:
    if module.ca_bundle is not None and not os.path.isfile(module.ca_bundle):
        # httpx would say only "No such file or directory", without the path
        raise ConfigError(
            f"ca_bundle: {module.ca_bundle!r} is not a file (CA bundle of module {module.name!r})"
        )
    # Unset options are left out so the client's own defaults apply.
    options: dict[str, Any] = {
        "email": module.username,
        "password": module.password,
        "verify": module.verify,
        "transport": transport,
        "clock": clock,
        "sleep": sleep,
    }
    if retry is not None:
        options["retry"] = retry
    if timeout is not None:
        options["timeout"] = timeout
    return options


def client_for(
    module: ProcessingModule,
    *,
    transport: Any = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Client:
    """A :class:`~dci6bridge.Client` logged in as the module's administrator.

    ``verify`` is the module's CA bundle path if it has one, else its ``verify_tls``.
    ``retry`` and ``timeout`` default to the client's defaults; ``transport``, ``clock``
    and ``sleep`` are passed through (``None``: real network, time and sleep). A
    ``ca_bundle`` that is not a file is a :class:`~dci6bridge.ConfigError`. Use it as a
    context manager so the session is revoked::

        with client_for(catalog.module("dci-ams")) as dci:
            dci.locations.list()
    """
    return Client(module.url, **_options(module, transport, retry, timeout, clock, sleep))


def async_client_for(
    module: ProcessingModule,
    *,
    transport: Any = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncClient:
    """The :class:`~dci6bridge.AsyncClient` twin of :func:`client_for` (``sleep`` is an
    async function; ``transport`` an ``httpx.AsyncBaseTransport``)."""
    return AsyncClient(module.url, **_options(module, transport, retry, timeout, clock, sleep))
