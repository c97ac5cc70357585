"""The long-running worker: :class:`Worker` and its command-line entry point.

``Worker(prov).run_forever()`` calls :meth:`Provisioner.tick` in a loop (in
``concurrency`` threads), runs the reconciler sweep every ``reconcile_every`` seconds and
the store's pruning (:meth:`StatusStore.prune
<dci6bridge.stores.base.StatusStore.prune>`) every ``prune_every`` seconds (each by one
worker of the deployment at a time, through a store singleton) and stops gracefully
on :meth:`Worker.stop`, SIGTERM or SIGINT: the step in progress finishes and its lease is
released, nothing is cut in half.

``python -m dci6bridge worker --store URL --config catalog.toml`` (or :func:`main`) runs
one in a process.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from dci6bridge.errors import ConfigError

from .provisioner import Provisioner, check_number

__all__ = ["Worker", "add_arguments", "main", "run_from_args"]

log = logging.getLogger("dci6bridge.provisioning")

_RECONCILER = "reconciler"
_PRUNER = "pruner"
_RETENTION_S = 72 * 3600.0


class Worker:
    """Drive a :class:`Provisioner` until stopped.

    Args:
        prov: the provisioner (its store is shared with the other workers).
        concurrency: threads calling :meth:`Provisioner.tick`.
        batch: services one tick leases and works on together (their writes share
            transactions: fewer store round trips per service); ``1`` works on one
            service at a time.
        idle_sleep: seconds to wait when nothing is runnable.
        reconcile_every: seconds between reconciler sweeps (``0`` disables them).
        prune_every: seconds between prunings of the store (``0`` disables them):
            request records and delivered events older than ``retention`` go. A pruning
            that hit its batch limit runs again on the next pass.
        retention: seconds request records and delivered events are kept (default
            72 h; a billing request replayed later is decided again like a new one).
        clock: monotonic seconds deciding when the sweep and the pruning are due.
    """

    def __init__(
        self,
        prov: Provisioner,
        *,
        concurrency: int = 1,
        batch: int = 8,
        idle_sleep: float = 1.0,
        reconcile_every: float = 300.0,
        prune_every: float = 3600.0,
        retention: float = _RETENTION_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        problems = check_number("concurrency", concurrency, 1, integer=True)
        problems += check_number("batch", batch, 1, integer=True)
        problems += check_number("idle_sleep", idle_sleep, 0.0)
        problems += check_number("reconcile_every", reconcile_every, 0.0)
        problems += check_number("prune_every", prune_every, 0.0)
        problems += check_number("retention", retention, 0.0)
        if not problems and retention <= 0:
            problems.append(f"retention: must be above 0, got {retention!r}")
        if problems:
            raise ConfigError(problems)
        self.prov = prov
        self.concurrency = concurrency
        self.batch = batch
        self.idle_sleep = float(idle_sleep)
        self.reconcile_every = float(reconcile_every)
        self.prune_every = float(prune_every)
        self.retention = float(retention)
        self._clock = clock
        self._stop = threading.Event()
        # Set by a signal handler, which must not touch the Event: the handler runs in
        # the main thread between two bytecodes, possibly while that thread holds the
        # Event's (non-reentrant) lock inside ``wait``, and ``set`` would deadlock on it.
        self._signalled = False
        self._last_run: dict[str, float] = {}
        self._sweep_lock = threading.Lock()
        #: services worked on since start (all threads)
        self.worked = 0
        self._count_lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or a signal received)."""
        return self._stop.is_set() or self._signalled

    def stop(self) -> None:
        """Ask the worker to stop after the step in progress (from any thread; a signal
        handler uses :meth:`_on_signal` instead)."""
        self._stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag (see __init__); the loops turn it into stop() at their next check,
        # within ``idle_sleep``. Logging takes reentrant locks only.
        self._signalled = True
        log.info("worker %s: signal %d, stopping", self.prov.worker_id, signum)

    def _stopped(self) -> bool:
        if self._signalled:
            self._stop.set()
        return self._stop.is_set()

    def _due(self, job: str, every: float) -> bool:
        """Whether this worker should try ``job`` now (and, if so, note that it did):
        ``every`` seconds after its last try, by the injected clock."""
        if every <= 0:
            return False
        with self._sweep_lock:
            now = self._clock()
            last = self._last_run.get(job)
            if last is not None and now - last < every:
                return False
            self._last_run[job] = now
            return True

    def _periodic(self) -> None:
        self._maybe_reconcile()
        self._maybe_prune()

    def _maybe_prune(self) -> None:
        if not self._due(_PRUNER, self.prune_every):
            return
        prov = self.prov
        try:
            if not prov.store.try_singleton(_PRUNER, prov.worker_id, self.prune_every):
                return
            result = prov.store.prune(
                requests_older_than_s=self.retention, delivered_older_than_s=self.retention
            )
        except Exception:  # a failed pruning must not stop provisioning
            log.exception("store pruning failed")
            return
        if result.requests or result.outbox:
            log.info(
                "pruned %d request records and %d delivered events older than %.0f s",
                result.requests,
                result.outbox,
                self.retention,
            )
        if result.more:
            with self._sweep_lock:  # more is left: go on at the next pass
                self._last_run.pop(_PRUNER, None)

    def _maybe_reconcile(self) -> None:
        if not self._due(_RECONCILER, self.reconcile_every):
            return
        prov = self.prov
        try:
            if prov.store.try_singleton(_RECONCILER, prov.worker_id, self.reconcile_every):
                report = prov.reconcile()
                if not report.clean:
                    log.warning(
                        "reconciler: %d stuck, %d orphan servers, %d reservations released, "
                        "%d errors",
                        len(report.stuck),
                        len(report.orphans),
                        len(report.released_claims),
                        len(report.errors),
                    )
        except Exception:  # a failed sweep must not stop provisioning
            log.exception("reconciler sweep failed")

    def run_once(self) -> int:
        """One pass: the sweep if it is due, then one :meth:`Provisioner.tick` for up
        to ``batch`` services. Returns the number of services worked on."""
        self._periodic()
        worked = self.prov.tick(max_services=self.batch)
        with self._count_lock:
            self.worked += worked
        return worked

    def _loop(self) -> None:
        while not self._stopped():
            self._periodic()
            try:
                worked = self.prov.tick(max_services=self.batch)
            except Exception:  # store down, bug: log, wait, go on
                log.exception("worker tick failed")
                worked = 0
            with self._count_lock:
                self.worked += worked
            if not worked:
                self._stop.wait(self.idle_sleep)

    def run_forever(self) -> None:
        """Work until :meth:`stop`, SIGTERM or SIGINT. Signal handlers are installed only
        when called from the main thread (and restored on return)."""
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        log.info(
            "worker %s: started (concurrency %d, batch %d, store %s)",
            self.prov.worker_id,
            self.concurrency,
            self.batch,
            type(self.prov.store).__name__,
        )
        helpers = [
            threading.Thread(target=self._loop, name=f"dci6bridge-worker-{i}", daemon=True)
            for i in range(1, self.concurrency)
        ]
        try:
            for t in helpers:
                t.start()
            self._loop()
        finally:
            self.stop()
            for t in helpers:
                t.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.info("worker %s: stopped after %d services", self.prov.worker_id, self.worked)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's own options (``--store`` and ``--config`` are added by the caller)."""
    parser.add_argument("--worker-id", help="name of this worker in leases and history")
    parser.add_argument("--once", action="store_true", help="work until idle, then exit")
    parser.add_argument("--concurrency", type=int, default=1, help="threads (default 1)")
    parser.add_argument(
        "--batch",
        type=int,
        default=8,
        help="services a thread works on together, sharing store writes (default 8)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=15.0, help="seconds between install polls"
    )
    parser.add_argument("--lease-ttl", type=float, default=60.0, help="lease seconds")
    parser.add_argument("--idle-sleep", type=float, default=1.0, help="seconds to wait when idle")
    parser.add_argument(
        "--reconcile-every",
        type=float,
        default=300.0,
        help="seconds between reconciler sweeps (0: never)",
    )
    parser.add_argument(
        "--prune-every",
        type=float,
        default=3600.0,
        help="seconds between prunings of old request records and delivered events (0: never)",
    )
    parser.add_argument(
        "--max-attempts", type=int, default=5, help="retries of a step before it fails"
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run a worker for parsed arguments (``store``, ``config`` and :func:`add_arguments`'s
    options). Returns the exit status."""
    from dci6bridge.domain import Catalog
    from dci6bridge.stores import open_store

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    catalog = Catalog.from_toml(args.config)
    store = open_store(args.store)
    try:
        with Provisioner(
            catalog,
            store,
            worker_id=args.worker_id,
            poll_interval=args.poll_interval,
            lease_ttl=args.lease_ttl,
            max_attempts=args.max_attempts,
        ) as prov:
            worker = Worker(
                prov,
                concurrency=args.concurrency,
                batch=args.batch,
                idle_sleep=args.idle_sleep,
                reconcile_every=args.reconcile_every,
                prune_every=args.prune_every,
            )
            if args.once:
                prov.run_until_idle()
            else:
                worker.run_forever()
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dci6bridge.provisioning.worker --store URL --config PATH [...]``."""
    parser = argparse.ArgumentParser(prog="dci6bridge-worker", description=__doc__)
    parser.add_argument("--store", required=True, help="status store URL")
    parser.add_argument("--config", required=True, help="catalog TOML file")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
