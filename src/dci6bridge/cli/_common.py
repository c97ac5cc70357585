"""Options and output helpers shared by the ``dci6bridge`` commands.

Every command that reads a catalog takes ``--config``, every command that touches the
status store takes ``--store``, every command that prints records takes ``--json``; the
defaults can come from the environment so that a deployment sets them once.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from dci6bridge.errors import ConfigError
from dci6bridge.secret import Secret

if TYPE_CHECKING:
    from dci6bridge.domain import Catalog
    from dci6bridge.provisioning import Provisioner
    from dci6bridge.stores.base import StatusStore

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_STORE",
    "add_config_option",
    "add_json_option",
    "add_store_option",
    "format_cell",
    "format_duration",
    "format_time",
    "jsonable",
    "load_catalog",
    "open_store_url",
    "print_json",
    "provisioner_from_args",
    "render_table",
]

#: ``--config`` default; ``DCI6BRIDGE_CONFIG`` overrides it.
DEFAULT_CONFIG = "dci6bridge.toml"
#: ``--store`` default; ``DCI6BRIDGE_STORE`` overrides it.
DEFAULT_STORE = "sqlite:///dci6bridge.db"


def _env_option(
    parser: argparse.ArgumentParser, flag: str, metavar: str, env: str, default: str, what: str
) -> None:
    # The help names the built-in default, never the environment's value: a store URL
    # from the environment may carry a password.
    parser.add_argument(
        flag,
        metavar=metavar,
        default=os.environ.get(env, default),
        help=f"{what} (default: ${env}, else {default})",
    )


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config PATH``: the catalog TOML file (data centers, modules, tariffs)."""
    _env_option(
        parser,
        "--config",
        "PATH",
        "DCI6BRIDGE_CONFIG",
        DEFAULT_CONFIG,
        "catalog TOML file with data centers, processing modules and tariffs",
    )


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store URL``: the status store (``memory://``, ``sqlite:///``, ``postgresql://``)."""
    _env_option(
        parser,
        "--store",
        "URL",
        "DCI6BRIDGE_STORE",
        DEFAULT_STORE,
        "status store URL: sqlite:///path.db, postgresql://user@host/db or memory://",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output instead of a table."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of a table (for scripts)",
    )


def load_catalog(path: str) -> Catalog:
    """Load the catalog at ``path``; a missing file is a :class:`ConfigError` naming it."""
    from dci6bridge.domain import Catalog

    file = Path(path)
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "no such file"
        raise ConfigError(f"--config: {what}: {path!r}")
    return Catalog.from_toml(file)


def open_store_url(url: str) -> StatusStore:
    """Open the status store at ``url`` (see :func:`dci6bridge.open_store`)."""
    from dci6bridge.stores import open_store

    return open_store(url)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: attrs objects become dicts, enums their values,
    datetimes ISO 8601 strings, secrets ``"***"``."""
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if attrs.has(type(value)):
        return {
            field.name: jsonable(getattr(value, field.name))
            for field in attrs.fields(type(value))
            if field.repr is not False
        }
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def print_json(value: Any, *, out: TextIO | None = None) -> None:
    """Print ``value`` (any mix of attrs objects, enums, mappings) as indented JSON."""
    stream = out or sys.stdout
    json.dump(jsonable(value), stream, indent=2, sort_keys=False, default=str)
    stream.write("\n")


def format_cell(value: Any) -> str:
    """One table cell: ``None`` as ``-``, enums by value, sequences comma-separated."""
    if value is None:
        return "-"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return ", ".join(format_cell(v) for v in value) or "-"
    return str(value)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns (``None`` shows as ``-``)."""
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def format_time(value: float | datetime | None) -> str:
    """A POSIX timestamp or datetime as ``YYYY-MM-DD HH:MM:SS`` UTC (``-`` for ``None``)."""
    if value is None:
        return "-"
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float | None) -> str:
    """``seconds`` as ``1h02m``, ``41m07s`` or ``12s`` (``-`` for ``None``)."""
    if seconds is None:
        return "-"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@contextlib.contextmanager
def provisioner_from_args(args: argparse.Namespace) -> Iterator[Provisioner]:
    """A :class:`~dci6bridge.Provisioner` for ``args.config`` and ``args.store``; the
    store is closed on exit."""
    catalog = load_catalog(args.config)
    from dci6bridge.provisioning import Provisioner

    store = open_store_url(args.store)
    try:
        yield Provisioner(catalog, store=store)
    finally:
        store.close()
