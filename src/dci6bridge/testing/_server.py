"""The other way in: real HTTP on 127.0.0.1, shared by every process that knows the URL.

Besides the platform's routes the server answers a small control API under
``/__simulator__/`` so a test in another process can read ground truth and change faults:

==========================================  =================================================
``GET  /__simulator__/state``               :class:`SimulatorState` as JSON
``GET  /__simulator__/faults``              the current :class:`Faults` as JSON
``POST /__simulator__/faults``              ``{"field": value, ...}`` changes faults
``POST /__simulator__/advance``             ``{"seconds": s}`` moves the clock forward
``POST /__simulator__/fail_next``           ``{"count": n}``: the next n requests get 503
``POST /__simulator__/expire_tokens``       revokes every session
``GET  /__simulator__/health``              ``{"ok": true}``
==========================================  =================================================
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from dci6bridge.errors import ConfigError

if TYPE_CHECKING:
    from ._app import App
    from ._fake import FakeDCImanager

__all__ = ["CONTROL_PREFIX", "SimulatorServer"]

CONTROL_PREFIX = "/__simulator__/"


class SimulatorServer(ThreadingHTTPServer):
    """A threading HTTP server answering for one :class:`FakeDCImanager`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        fake: FakeDCImanager,
        app: App,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.fake = fake
        self.app = app
        self.log = log
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound socket."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> threading.Thread:
        """Serve in a daemon thread; stop with :meth:`stop`."""
        thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"dci6-simulator-{self.server_address[1]}",
        )
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: SimulatorServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per request on Linux keep-alive connections).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib logs raw paths, which may carry a token (logout by value).
        return

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        body = self._read_body()
        if parts.path.startswith(CONTROL_PREFIX):
            self._control(parts.path[len(CONTROL_PREFIX) :], body)
            return
        fake = self.server.fake
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        reply = self.server.app.handle(self.command, unquote(parts.path), query, headers, body)
        if reply.delay:
            fake.sleep(reply.delay)
        if self.server.log is not None:
            note = " (answer dropped)" if reply.lost else ""
            self.server.log(f"{self.command} {reply.route} -> {reply.status}{note}")
        if reply.lost:
            # The effect happened; the client never hears about it.
            self.close_connection = True
            return
        self._send(reply.status, reply.body)

    def _control(self, action: str, body: bytes) -> None:
        fake = self.server.fake
        try:
            data = json.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise ConfigError("control body: expected a JSON object")
            if self.command == "GET" and action == "state":
                self._send(200, fake.state.to_json())
            elif self.command == "GET" and action == "faults":
                self._send(200, fake.faults.to_json())
            elif self.command == "GET" and action == "health":
                self._send(200, {"ok": True})
            elif self.command == "POST" and action == "faults":
                fake.set_faults(**data)
                self._send(200, fake.faults.to_json())
            elif self.command == "POST" and action == "advance":
                seconds = data.get("seconds")
                if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
                    raise ConfigError(f"seconds: expected a number, got {seconds!r}")
                fake.advance(float(seconds))
                self._send(200, {"now": fake.clock.now()})
            elif self.command == "POST" and action == "fail_next":
                count = data.get("count")
                if not isinstance(count, int) or isinstance(count, bool):
                    raise ConfigError(f"count: expected an integer, got {count!r}")
                fake.fail_next(count)
                self._send(200, {"count": count})
            elif self.command == "POST" and action == "expire_tokens":
                self._send(200, {"expired": fake.expire_tokens()})
            else:
                self._send(404, {"error": f"no control action {self.command} {action!r}"})
        except (ConfigError, ValueError, TypeError) as exc:
            problems = list(exc.problems) if isinstance(exc, ConfigError) else [str(exc)]
            self._send(400, {"error": "; ".join(problems), "problems": problems})
