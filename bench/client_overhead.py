"""``servers.get`` through ``Client`` vs raw ``httpx.Client.get`` with the same headers,
against the same local HTTP server (127.0.0.1, stdlib ThreadingHTTPServer in a child
process).

The server answers every GET with one server object in the documented F2 shape (login
answers a token). Both sides reuse one keep-alive connection; runs are interleaved in
batches so machine load affects both alike. Prints both medians and the ratio.
Run: ``python bench/client_overhead.py [--requests N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection

import httpx

import dci6bridge as d

TOKEN = "BENCH0TOKEN0VALUE0123456"
SERVER = {
    "id": 42,
    "name": "srv-1-00042",
    "domain": "srv42.example.net",
    "configuration": "E3-1230v6-64Gb-2x480SSD",
    "location_id": 1,
    "owner_email": None,
    "is_new": False,
    "power_status": "on",
    "state": "active",
    "operation": {"id": 7, "status": "ok", "status_info": {}, "progress_info": [{}]},
    "os_template": {"id": 3, "name": "Ubuntu 22.04", "tags": ["linux"]},
    "hardware_info": {},
    "ip": [
        {"id": 1, "name": "203.0.113.42", "family": "ipv4", "gateway": "203.0.113.1",
         "network": "203.0.113.0/24", "status": "allocated", "status_info": {}},
    ],
    "switch_connection": [
        {"id": k, "switch": 1, "connection_id": 10 + k, "description": f"sw-1/ge-0/0/{k}",
         "admin_status": "up", "oper_status": "up", "do_not_collect_traffic": k == 0,
         "is_ipmi_connection": k == 0}
        for k in range(2)
    ],
}  # fmt: skip
SERVER_BODY = json.dumps(SERVER).encode()
LOGIN_BODY = json.dumps({"id": 1, "token": TOKEN, "expires_at": None}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real DCImanager behind nginx
    # one write per answer and no Nagle delay, or every request waits ~40 ms for an ACK
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, SERVER_BODY)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._send(201, LOGIN_BODY)

    def do_DELETE(self) -> None:
        self._send(200, b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _run_server(port_out: Connection) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.send(server.server_address[1])
    server.serve_forever()


@contextmanager
def serve() -> Iterator[str]:
    """The server runs in its own process so it does not compete for our GIL."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(target=_run_server, args=(sender,), daemon=True)
    process.start()
    try:
        if not receiver.poll(30):
            raise RuntimeError("benchmark server did not start")
        yield f"http://127.0.0.1:{receiver.recv()}"
    finally:
        process.terminate()
        process.join(10)


def per_request(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) per call, over ``n`` calls.

    CPU time counts only this process (the server is a child), so it measures the
    client-side cost and barely moves when other processes load the machine."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved batches each")
    args = parser.parse_args(argv)
    with serve() as url:
        headers = {
            "accept": "application/json",
            "isp-box-instance": "true",
            "cookie": f"ses6={TOKEN}",
            "x-xsrf-token": TOKEN,
        }
        raw = httpx.Client()
        client = d.Client(url, email="bench@example.com", password="bench-password")
        target = f"{url}/api/dci/v3/server/42"

        def raw_get() -> object:
            return raw.get(target, headers=headers)

        def raw_get_json() -> object:
            return raw.get(target, headers=headers).json()

        def client_get() -> object:
            return client.servers.get(42)

        assert client_get() == d.client._converter.structure(SERVER, d.Server)
        for _ in range(50):  # warm both connections and code paths
            raw_get()
            client_get()
        samples: dict[str, list[tuple[float, float]]] = {"raw": [], "json": [], "client": []}
        for _ in range(args.rounds):
            samples["raw"].append(per_request(raw_get, args.requests))
            samples["json"].append(per_request(raw_get_json, args.requests))
            samples["client"].append(per_request(client_get, args.requests))
        client.close()
        raw.close()

    def median(name: str, i: int) -> float:
        return statistics.median(s[i] for s in samples[name])

    def ratio(name: str, i: int) -> float:
        pairs = zip(samples["client"], samples[name], strict=True)
        return statistics.median(c[i] / b[i] for c, b in pairs)

    print(f"{args.rounds} interleaved batches of {args.requests} GETs on 127.0.0.1")
    print("                                   wall us/req   CPU us/req")
    for label, name in (
        ("raw httpx.Client.get", "raw"),
        ("raw httpx.Client.get + .json()", "json"),
        ("Client.servers.get (-> Server)", "client"),
    ):
        print(f"{label:34s} {median(name, 0) * 1e6:10.1f} {median(name, 1) * 1e6:12.1f}")
    print(
        f"ratio Client / raw get (wall, CPU)  : {ratio('raw', 0):5.2f}x {ratio('raw', 1):5.2f}x"
        "   (target <= 1.15x)"
    )
    print(
        f"ratio Client / raw get + .json()    : {ratio('json', 0):5.2f}x {ratio('json', 1):5.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
