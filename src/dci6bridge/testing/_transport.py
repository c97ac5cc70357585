"""The in-process way in: an httpx transport, sync and async, backed by the simulator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import httpx

from ._app import App, Reply

__all__ = ["FakeTransport"]


class FakeTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers httpx requests from the simulator, without sockets.

    Get one from :attr:`FakeDCImanager.transport` rather than building it.

    Use it as ``httpx.Client(transport=t)`` or ``httpx.AsyncClient(transport=t)``. A
    "lost response" fault raises :class:`httpx.ReadTimeout` *after* the effect was
    applied. Latency is slept (with ``sleep`` / ``async_sleep``) only when
    ``Faults.latency_in_process`` is on.
    """

    def __init__(
        self,
        app: App,
        *,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._app = app
        self._sleep = sleep
        self._async_sleep = async_sleep

    def _dispatch(self, request: httpx.Request, body: bytes) -> Reply:
        query = dict(parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True))
        headers = {k.lower(): v for k, v in request.headers.items()}
        return self._app.handle(request.method, request.url.path, query, headers, body)

    def _sleep_for(self, reply: Reply) -> float:
        if reply.delay and self._app.world.faults.latency_in_process:
            return reply.delay
        return 0.0

    @staticmethod
    def _response(reply: Reply, request: httpx.Request) -> httpx.Response:
        if reply.lost:
            raise httpx.ReadTimeout("simulated: the answer was lost", request=request)
        return httpx.Response(
            reply.status,
            headers={"content-type": "application/json"},
            content=json.dumps(reply.body).encode(),
            request=request,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer a request from a sync :class:`httpx.Client`."""
        reply = self._dispatch(request, request.read())
        delay = self._sleep_for(reply)
        if delay:
            self._sleep(delay)
        return self._response(reply, request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer a request from an :class:`httpx.AsyncClient`."""
        reply = self._dispatch(request, await request.aread())
        delay = self._sleep_for(reply)
        if delay:
            await self._async_sleep(delay)
        return self._response(reply, request)
