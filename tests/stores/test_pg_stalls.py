"""A PostgreSQL that stops answering: every wait is bounded, nothing is half-written.

A TCP proxy on 127.0.0.1 sits between the store and the test server. Frozen, it stops
forwarding in both directions but keeps every socket open — what a stalled network, a
dropped NAT entry or a stuck pooler looks like to the client: no error, no FIN, just
silence. It can also freeze at the first client message carrying a marker (``COMMIT``),
either holding that message back or delivering it and losing the answer.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from dci6bridge.errors import ConfigError, StaleState, StoreError
from dci6bridge.stores import PostgresStore, open_store
from dci6bridge.stores.base import Lease

pytestmark = pytest.mark.postgres

import psycopg  # noqa: E402 - the test extra installs it; pg_url fails in CI without it

PASSWORD = "s3cret-Pw"
IO_TIMEOUT = 0.5
# Time past the deadline allowed for the drop and scheduling on a busy 2-core machine.
SLACK = 0.6
_POLL = 0.02  # how often idle proxy threads look at their flags
# The COMMIT statement as it travels (a Parse message: unnamed, then the text); a bare
# b"COMMIT" would match BEGIN's READ COMMITTED.
COMMIT = b"\x00COMMIT\x00"


class FreezableProxy:
    """Forwards TCP connections from a 127.0.0.1 port to ``upstream`` until frozen."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        self._marker: tuple[bytes, bool] | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def freeze(self) -> None:
        """Stop forwarding in both directions; every socket stays open."""
        self._flowing.clear()

    def freeze_at(self, marker: bytes, *, deliver: bool) -> None:
        """Freeze at the first client message containing ``marker``: hold that message
        back (delivered on :meth:`resume`, as a late retransmission would be), or with
        ``deliver`` pass it on and lose the server's answer."""
        self._marker = (marker, deliver)

    def resume(self) -> None:
        """Forward again, starting with whatever was held back."""
        self._marker = None
        self._flowing.set()

    def close(self) -> None:
        """Stop every thread (each looks at the flag every few ms), then the sockets."""
        self._stop.set()
        self._flowing.set()
        for thread in list(self._threads):
            thread.join(timeout=2)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        # Accepts even while frozen: the client's connect succeeds, its startup does not.
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                if not select.select([self._listener], [], [], _POLL)[0]:
                    continue
                client, _ = self._listener.accept()
                server = socket.create_connection(self._upstream, timeout=5)
                with self._lock:
                    self._sockets += [client, server]
                for src, dst, up in ((client, server, True), (server, client, False)):
                    thread = threading.Thread(target=self._pump, args=(src, dst, up), daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while not self._stop.is_set():
                if not self._flowing.wait(_POLL) or not select.select([src], [], [], _POLL)[0]:
                    continue
                if not self._flowing.is_set():  # frozen while waiting: leave it unread
                    continue
                data = src.recv(65536)
                if not data:
                    break
                marker = self._marker
                if up and marker is not None and marker[0] in data:
                    # Frozen before the message goes: the answer cannot slip through.
                    self.freeze()
                    self._marker = None
                    if marker[1]:  # its answer stays unread on the frozen way back
                        dst.sendall(data)
                        continue
                    while not self._flowing.wait(_POLL) and not self._stop.is_set():
                        pass  # held until resume
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # One side gone: pass the close on, as a real network would once it works.
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(pg_url: str) -> Iterator[FreezableProxy]:
    parts = urlsplit(pg_url)
    assert parts.hostname is not None
    assert parts.port is not None
    running = FreezableProxy((parts.hostname, parts.port))
    yield running
    running.close()


@pytest.fixture
def proxied_url(pg_store_url: str, proxy: FreezableProxy) -> str:
    """The test's store URL through the proxy, with a password (the test server trusts
    127.0.0.1, so libpq never sends it) and ``io_timeout``."""
    parts = urlsplit(pg_store_url)
    netloc = f"{parts.username}:{PASSWORD}@127.0.0.1:{proxy.port}"
    query = f"{parts.query}&io_timeout={IO_TIMEOUT}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@pytest.fixture
def store(proxied_url: str) -> Iterator[PostgresStore]:
    opened = open_store(proxied_url)
    assert isinstance(opened, PostgresStore)
    yield opened
    opened.close()


@pytest.fixture
def raw(pg_store_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A direct connection to the test's schema, around the proxy."""
    base, _, query = pg_store_url.partition("?")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{query.split("schema=")[1]}"')
        yield conn


def _leased(store: PostgresStore) -> Lease:
    store.create_service("s", {"plan": "x"}, state="pending", desired="active")
    [lease] = store.acquire("w", 60)
    return lease


def _transition(store: PostgresStore, lease: Lease) -> Any:
    return store.transition(
        lease, expected_state="pending", expected_version=0, new_state="selecting_module"
    )


def _timed(call: Callable[[], Any]) -> tuple[StoreError, float]:
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        call()
    return info.value, time.monotonic() - started


def _assert_clean(error: StoreError, store: PostgresStore, proxy: FreezableProxy) -> None:
    """The message names the server; no password anywhere, the chained errors included."""
    assert f"127.0.0.1:{proxy.port}" in str(error)
    text = " ".join(repr(e) for e in (error, error.__cause__, error.__context__, store))
    assert PASSWORD not in text


def _version_in_db(raw: psycopg.Connection[Any]) -> tuple[int, str, int]:
    row = raw.execute("SELECT version, state FROM services WHERE service_id = 's'").fetchone()
    assert row is not None
    history = raw.execute("SELECT count(*) FROM transitions").fetchone()
    assert history is not None
    return int(row[0]), str(row[1]), int(history[0])


def _backend_pid(store: PostgresStore) -> int:
    return int(store._conns.get().conn.info.backend_pid)


def _wait_gone(raw: psycopg.Connection[Any], pid: int) -> None:
    # The server ends the session once it has sat idle in its transaction for
    # io_timeout (idle_in_transaction_session_timeout); bounded, never a fixed sleep.
    for _ in range(250):
        if not raw.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchall():
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} still there")


def test_a_write_during_a_freeze_fails_within_the_deadline_then_reconnects(
    store: PostgresStore, proxy: FreezableProxy, raw: psycopg.Connection[Any]
) -> None:
    assert store.io_timeout_s == IO_TIMEOUT
    lease = _leased(store)
    pid = _backend_pid(store)
    proxy.freeze()
    error, took = _timed(lambda: _transition(store, lease))
    assert IO_TIMEOUT <= took < IO_TIMEOUT + SLACK
    assert f"io_timeout={IO_TIMEOUT:g} s" in str(error)
    _assert_clean(error, store, proxy)
    assert len(store._conns) == 0  # dropped, not kept in an unknown pipeline state
    assert _version_in_db(raw) == (0, "pending", 0)
    proxy.resume()
    assert store.get("s") == lease.service  # nothing was written
    assert _backend_pid(store) != pid
    assert _transition(store, lease).version == 1  # the lease is still ours
    assert _version_in_db(raw) == (1, "selecting_module", 1)


def test_a_read_during_a_freeze_fails_within_the_deadline(
    store: PostgresStore, proxy: FreezableProxy
) -> None:
    lease = _leased(store)
    proxy.freeze()
    error, took = _timed(lambda: store.get("s"))
    assert took < IO_TIMEOUT + SLACK
    _assert_clean(error, store, proxy)
    proxy.resume()
    assert store.get("s") == lease.service


def test_a_commit_held_back_by_the_freeze_is_rolled_back_by_the_server(
    store: PostgresStore, proxy: FreezableProxy, raw: psycopg.Connection[Any]
) -> None:
    # BEGIN + lock were answered, then the link froze with COMMIT on the wire. The
    # server ends the idle transaction, so even the COMMIT delivered late on resume
    # (a retransmission) finds no transaction to commit.
    lease = _leased(store)
    pid = _backend_pid(store)
    proxy.freeze_at(COMMIT, deliver=False)
    error, took = _timed(lambda: _transition(store, lease))
    assert took < IO_TIMEOUT + SLACK
    assert "unknown" in str(error)
    _assert_clean(error, store, proxy)
    _wait_gone(raw, pid)
    assert _version_in_db(raw) == (0, "pending", 0)
    proxy.resume()
    assert store.get("s") == lease.service
    assert _version_in_db(raw) == (0, "pending", 0)
    assert _transition(store, lease).version == 1


def test_a_commit_whose_answer_is_lost_raises_and_the_retry_reads_it_back(
    store: PostgresStore, proxy: FreezableProxy, raw: psycopg.Connection[Any]
) -> None:
    # COMMIT reached the server and committed; its answer did not come back. The call
    # cannot know and raises; the caller's retry finds the new version instead of
    # applying the write twice.
    lease = _leased(store)
    proxy.freeze_at(COMMIT, deliver=True)
    error, took = _timed(lambda: _transition(store, lease))
    assert took < IO_TIMEOUT + SLACK
    _assert_clean(error, store, proxy)
    assert _version_in_db(raw) == (1, "selecting_module", 1)
    proxy.resume()
    with pytest.raises(StaleState):
        _transition(store, lease)
    stored = store.get("s")
    assert stored is not None
    assert stored.version == 1
    assert _version_in_db(raw) == (1, "selecting_module", 1)


def test_a_freeze_while_setting_up_a_new_connection_fails_within_the_deadline(
    proxied_url: str, proxy: FreezableProxy
) -> None:
    proxy.freeze_at(b"idle_in_transaction_session_timeout", deliver=False)
    error, took = _timed(lambda: open_store(proxied_url))
    assert took < IO_TIMEOUT + SLACK
    assert "cannot set up the connection" in str(error)
    assert PASSWORD not in str(error)
    proxy.resume()
    open_store(proxied_url).close()


def test_a_connect_through_a_frozen_link_fails_after_connect_timeout(
    proxied_url: str, proxy: FreezableProxy
) -> None:
    proxy.freeze()
    # libpq's connect_timeout counts whole seconds, at least 2.
    error, took = _timed(lambda: open_store(proxied_url, connect_timeout_s=0.1))
    assert 1.5 < took < 2 + SLACK + 1
    assert "cannot connect" in str(error)
    assert PASSWORD not in str(error)


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "5", True, None])
@pytest.mark.parametrize("option", ["io_timeout_s", "connect_timeout_s"])
def test_timeouts_must_be_positive_seconds(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"^{option}: .*got {value!r}") as info:
        PostgresStore(f"postgresql://app:{PASSWORD}@127.0.0.1:1/x", **{option: value})
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf", "", "ten"])
def test_a_bad_io_timeout_in_the_url_names_the_option_and_the_value(value: str) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:1/x?io_timeout={value}"
    with pytest.raises(ConfigError, match=f"io_timeout='{value}' is not a positive") as info:
        open_store(url)
    assert PASSWORD not in str(info.value)
