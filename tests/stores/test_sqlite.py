"""SQLite-only guarantees: pragmas, BEGIN IMMEDIATE, connections per thread and process."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from dci6bridge.errors import StoreError
from dci6bridge.stores import SQLiteStore
from dci6bridge.stores import sqlite as sqlite_module


def _pragma(store: SQLiteStore, name: str) -> object:
    return next(iter(store._conns.get().execute(f"PRAGMA {name}").fetchone().values()))


def test_every_connection_gets_the_safe_pragmas(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    assert _pragma(store, "journal_mode") == "wal"
    assert _pragma(store, "foreign_keys") == 1
    assert _pragma(store, "busy_timeout") == 30000
    assert _pragma(store, "synchronous") == 1  # NORMAL
    full = SQLiteStore(tmp_path / "s.db", synchronous="full", busy_timeout_s=5)
    assert _pragma(full, "synchronous") == 2  # FULL
    assert _pragma(full, "busy_timeout") == 5000
    store.close()
    full.close()


def test_writes_use_begin_immediate_never_a_deferred_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    seen: list[str] = []
    store._conns.get().set_trace_callback(seen.append)
    store.create_service("s", {}, state="pending", desired="active")
    [lease] = store.acquire("w", 10)
    store.transition(lease, expected_state="pending", expected_version=0, new_state="x")
    store.get("s")
    begins = [s for s in seen if s.upper().startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE"] * 3
    store.close()


def test_a_held_write_lock_surfaces_as_store_error_after_the_busy_timeout(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", busy_timeout_s=0.2)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert store.get("s") is None, "WAL readers are not blocked by a writer"
        with pytest.raises(StoreError, match="locked"):
            store.create_service("s", {}, state="pending", desired="active")
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.create_service("s", {}, state="pending", desired="active")
    store.close()


def test_many_first_openers_of_a_new_database_all_get_in(tmp_path: Path) -> None:
    """16 threads open a store on one new file at once (as the duplicate storm does):
    switching it to WAL needs it alone for a moment and SQLite may answer "locked" at
    once instead of waiting (about 1 run in 100 failed before the store retried)."""
    for run in range(25):
        path = tmp_path / f"new-{run}.db"
        barrier = threading.Barrier(16)
        errors: list[BaseException] = []

        def open_and_write(
            i: int,
            path: Path = path,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                store = SQLiteStore(path)
                store.create_service(f"S{i}", {"i": i}, state="pending", desired="active")
                store.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_and_write, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, (run, errors[:3])
        check = SQLiteStore(path)
        assert len(check.services()) == 16
        check.close()


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        SQLiteStore(path)


def test_one_connection_per_thread_and_dead_threads_are_pruned(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    main = store._conns.get()
    seen: list[sqlite3.Connection] = []
    together = threading.Barrier(3)

    def work(n: int) -> None:
        seen.append(store._conns.get())
        store.create_service(f"t{n}", {}, state="pending", desired="active")
        together.wait(timeout=10)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in seen}) == 3, "three live threads, three connections"
    assert all(c is not main for c in seen)
    assert len(store._conns) == 4
    late = threading.Thread(target=store._conns.get)
    late.start()
    late.join()
    assert len(store._conns) == 2, "connections of finished threads are closed"
    assert [s.service_id for s in store.services()] == ["t0", "t1", "t2"]
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.create_service("parent", {}, state="pending", desired="active")
    parent_conn = store._conns.get()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            fresh = store._conns.get() is not parent_conn
            store.create_service("child", {}, state="pending", desired="active")
            code = 0 if fresh else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    status = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)
    assert status == b"\x00"
    assert [s.service_id for s in store.services()] == ["child", "parent"]
    assert store._conns.get() is parent_conn
    store.close()


def test_network_filesystem_detection(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        "nas:/export /srv/nfs nfs4 rw 0 0\n"
        "//nas/share /srv/smb\\040share cifs rw 0 0\n"
        "tmpfs /srv/nfs/tmp tmpfs rw 0 0\n"
    )
    detect = sqlite_module.network_filesystem
    assert detect("/srv/nfs/db", str(mounts)) == "nfs4"
    assert detect("/srv/nfs", str(mounts)) == "nfs4"
    assert detect("/srv/smb share/x", str(mounts)) == "cifs"
    assert detect("/srv/nfs/tmp/x", str(mounts)) is None, "the deepest mount decides"
    assert detect("/srv/nfsother", str(mounts)) is None
    assert detect("/home", str(mounts)) is None
    assert detect("/home", str(tmp_path / "no-such-file")) is None


def test_a_database_on_a_network_filesystem_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_module, "network_filesystem", lambda path: "nfs4")
    with caplog.at_level(logging.WARNING, logger="dci6bridge.stores"):
        SQLiteStore(tmp_path / "s.db").close()
    assert "nfs4 network filesystem" in caplog.text


def test_a_closed_store_fails_in_every_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    errors: list[BaseException] = []
    ready, closed = threading.Event(), threading.Event()

    def other_thread() -> None:
        store.get("x")  # opens this thread's connection
        ready.set()
        closed.wait(timeout=10)
        try:
            store.get("x")
        except StoreError as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    ready.wait(timeout=10)
    store.close()
    closed.set()
    thread.join()
    assert len(errors) == 1
    assert "closed" in str(errors[0])
