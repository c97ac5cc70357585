"""``dci6bridge simulator``: serve a simulated DCImanager 6 on 127.0.0.1 until stopped."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from dci6bridge.errors import ConfigError

__all__ = ["add_parser", "run"]


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def _latency(text: str) -> tuple[float, float]:
    low, sep, high = text.partition("-")
    try:
        pair = (float(low), float(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MS or MIN-MAX milliseconds: {text!r}") from None
    if not 0 <= pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"need 0 <= MIN <= MAX: {text!r}")
    return pair


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    """Add the ``simulator`` subcommand."""
    parser = subparsers.add_parser(
        "simulator",
        help="serve a simulated DCImanager 6 on 127.0.0.1 (for tests and demos)",
        description=(
            "Serve a simulated DCImanager 6 over HTTP on 127.0.0.1 until Ctrl-C or SIGTERM. "
            "Every process that knows the URL shares one simulated installation; "
            "ground truth and faults are at /__simulator__/state and /__simulator__/faults."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (0: any free port)")
    parser.add_argument("--inventory", metavar="FILE", help="JSON inventory file")
    parser.add_argument("--locations", type=int, default=2, help="generated locations (default 2)")
    parser.add_argument(
        "--servers-per-location", type=int, default=20, help="generated servers per location"
    )
    parser.add_argument(
        "--install-seconds", type=_seconds, default=600.0, help="OS install duration (default 600)"
    )
    parser.add_argument(
        "--token-ttl", type=_seconds, default=None, help="session lifetime in seconds"
    )
    parser.add_argument(
        "--fail-503",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability that a request gets 503 (service suspended)",
    )
    parser.add_argument(
        "--latency-ms",
        type=_latency,
        default=None,
        metavar="A-B",
        help="added latency per request, e.g. 1-20",
    )
    parser.add_argument(
        "--lost-response",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability that an effect is applied but its answer is dropped",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for every random fault")
    parser.add_argument("--admin-email", default="admin@example.com", help="administrator email")
    parser.add_argument(
        "--admin-password",
        default=None,
        help="administrator password (default: the simulator's test password)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status."""
    from dci6bridge.testing import DEFAULT_ADMIN_PASSWORD, FakeDCImanager, Faults

    if args.port < 0 or args.port > 65535:
        raise ConfigError(f"--port: must be 0..65535, got {args.port}")
    if args.token_ttl == 0:
        raise ConfigError("--token-ttl: must be positive")
    faults = Faults(
        token_ttl=args.token_ttl,
        unavailable_rate=args.fail_503,
        latency_ms=args.latency_ms,
        lost_response_rate=args.lost_response,
    )
    kwargs: dict[str, Any] = {
        "seed": args.seed,
        "faults": faults,
        "install_duration": args.install_seconds,
        "admin_email": args.admin_email,
        "admin_password": args.admin_password or DEFAULT_ADMIN_PASSWORD,
    }
    if args.inventory:
        fake = FakeDCImanager.from_inventory_file(args.inventory, **kwargs)
    else:
        fake = FakeDCImanager.with_inventory(
            locations=args.locations, servers_per_location=args.servers_per_location, **kwargs
        )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        with fake.serve(args.host, args.port, log=log) as url:
            state = fake.state
            # The default password is a published test value; a chosen one stays hidden.
            shown = "(your --admin-password)" if args.admin_password else DEFAULT_ADMIN_PASSWORD
            print(
                f"DCImanager 6 simulator at {url}: {len(state.servers)} servers, "
                f"admin {fake.admin_email} / {shown}; Ctrl-C to stop",
                flush=True,
            )
            while not stop.wait(0.2):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("simulator stopped", file=sys.stderr, flush=True)
    return 0
