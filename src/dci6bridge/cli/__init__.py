"""The ``dci6bridge`` command: ``main()`` builds the parser from the command modules and
turns every expected failure into one line on stderr and an exit status.

Each command lives in ``dci6bridge/cli/<name>.py`` and defines
``add_parser(subparsers) -> None`` (adds its subparser(s), with help text and
``set_defaults(func=run)``) and ``run(args) -> int``. Exit statuses: 0 success,
1 operational failure (DCImanager unreachable, a store problem, an operation failed),
2 bad input or usage (missing file, invalid catalog, unknown tariff or service),
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from dci6bridge import __version__
from dci6bridge.errors import (
    ConfigError,
    Dci6BridgeError,
    InvalidRequest,
    ServiceNotFound,
    SpecMismatch,
)

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: Command modules, in the order ``dci6bridge --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "check",
    "servers",
    "services",
    "worker",
    "simulator",
)

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Failures caused by what the user typed or configured, rather than by the world.
_BAD_INPUT: tuple[type[BaseException], ...] = (
    ConfigError,
    ServiceNotFound,
    SpecMismatch,
    InvalidRequest,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
)


def _command_modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{name}") for name in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    """The full ``dci6bridge`` argument parser, every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="dci6bridge",
        description=(
            "Sell dedicated servers managed by ISPsystem DCImanager 6: "
            "check modules, list free servers, open and manage services, run workers, "
            "or watch the whole thing work with `dci6bridge demo`."
        ),
        epilog="Run `dci6bridge <command> --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"dci6bridge {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback when a command fails",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.add_parser(subparsers)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        text = f"{len(exc.problems)} problems: " + "; ".join(exc.problems)
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename!s}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _exit_status(exc: BaseException) -> int:
    return EXIT_USAGE if isinstance(exc, _BAD_INPUT) else EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dci6bridge`` command line and return its exit status.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        0 on success, 1 on an operational failure, 2 on bad input or usage,
        130 when interrupted. Failures print one ``dci6bridge: error: ...`` line on
        stderr; ``--debug`` adds the traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        status: int = args.func(args)
    except BrokenPipeError:
        # `dci6bridge status | head`: the reader left, which is not worth a message;
        # point stdout at /dev/null so the interpreter's final flush fails quietly too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("dci6bridge: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (Dci6BridgeError, OSError) as exc:
        if debug:
            traceback.print_exc()
        print(f"dci6bridge: error: {_one_line(exc)}", file=sys.stderr)
        return _exit_status(exc)
    return status
