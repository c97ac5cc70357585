"""Store URLs: :func:`open_store` and the password redaction every message uses."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dci6bridge._validate import show
from dci6bridge.errors import ConfigError

if TYPE_CHECKING:
    from .base import StatusStore

__all__ = ["open_store", "redact_url"]

_USERINFO_PASSWORD = re.compile(r"(?P<head>//[^/@:]*):[^/@]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&]*", re.IGNORECASE)
# libpq key=value strings: password=secret or password = 'se cret'
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>(?<![\w?&])password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s']\S*)", re.IGNORECASE
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# Query options dci6bridge itself understands; other query keys of a postgresql:// URL are
# libpq's (sslmode, connect_timeout, ...) and are passed through untouched.
_FLAG_OPTIONS = frozenset({"unsafe_disable_fencing"})
_TEXT_OPTIONS = {"sqlite": frozenset({"synchronous"}), "postgresql": frozenset({"schema"})}
# Durations in seconds, each with the constructor keyword it sets (libpq's own
# connect_timeout keeps its name, so ours reads like it in a URL).
_SECONDS_OPTIONS = {"postgresql": {"io_timeout": "io_timeout_s"}}


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: in the userinfo, a ``password=``
    query key, or a libpq ``key=value`` string (``host=db password=...``)."""
    text = _USERINFO_PASSWORD.sub(r"\g<head>:***@", url)
    text = _QUERY_PASSWORD.sub(r"\g<head>***", text)
    return _KEYWORD_PASSWORD.sub(r"\g<head>***", text)


def _flag(url: str, key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{redact_url(url)}: query option {key}={show(value)} is not a boolean")


def _seconds(url: str, key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(
            f"{redact_url(url)}: query option {key}={show(value)} is not a positive "
            "number of seconds"
        )
    return seconds


def _split_options(url: str, query: str, kind: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Our options from the query string, and the pairs left for the database driver."""
    ours: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _FLAG_OPTIONS:
            ours[key] = _flag(url, key, value)
        elif key in _TEXT_OPTIONS.get(kind, ()):
            ours[key] = value
        elif key in _SECONDS_OPTIONS.get(kind, {}):
            ours[_SECONDS_OPTIONS[kind][key]] = _seconds(url, key, value)
        elif kind == "postgresql":
            rest.append((key, value))
        else:
            known = sorted(_FLAG_OPTIONS | _TEXT_OPTIONS.get(kind, frozenset()))
            raise ConfigError(
                f"{redact_url(url)}: unknown query option {key!r} (known: {', '.join(known)})"
            )
    return ours, rest


def open_store(url: str, **options: Any) -> StatusStore:
    """Open the status store a URL names.

    * ``memory://`` — :class:`~dci6bridge.stores.MemoryStore` (one process, not kept);
    * ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` —
      :class:`~dci6bridge.stores.SQLiteStore`, the embedded default (one host);
    * ``postgresql://user:pass@host/db`` (or ``postgres://``) —
      :class:`~dci6bridge.stores.PostgresStore`, for many workers on many hosts.

    Keyword ``options`` go to the store's constructor (e.g. ``clock=``,
    ``synchronous="FULL"``, ``schema="billing_a"``). The URL query may carry
    ``synchronous`` (SQLite), ``schema`` and ``io_timeout`` (PostgreSQL; seconds, sets
    ``io_timeout_s``) and the **test-only**
    ``unsafe_disable_fencing=1``, which worker subprocesses inherit with the URL: it makes
    every fenced write skip its lease and version check, so the orchestrator's negative
    control can show that the chaos suite catches a store without fencing. Never set it
    in production.

    Raises:
        ConfigError: unknown scheme or option (the message shows the URL without its
            password).
    """
    raw: object = url  # callers may pass anything; say so clearly instead of crashing
    if not isinstance(raw, str) or "://" not in raw:
        shown = show(redact_url(raw) if isinstance(raw, str) else raw)
        raise ConfigError(
            f"store url: {shown} is not a URL (use memory://, sqlite:///path.db or "
            "postgresql://...)"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from .memory import MemoryStore

        ours, _ = _split_options(url, parts.query, "memory")
        return MemoryStore(**{**ours, **options})
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        ours, _ = _split_options(url, parts.query, "sqlite")
        if parts.netloc:
            raise ConfigError(
                f"{redact_url(url)}: a SQLite URL has no host; use sqlite:///relative.db "
                "or sqlite:////absolute/path.db"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ConfigError(f"{redact_url(url)}: the SQLite URL names no file")
        return SQLiteStore(path, **{**ours, **options})
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        ours, rest = _split_options(url, parts.query, "postgresql")
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
        return PostgresStore(dsn, **{**ours, **options})
    raise ConfigError(
        f"store url: unknown scheme {parts.scheme!r} in {redact_url(url)!r} "
        "(use memory://, sqlite:///path.db or postgresql://...)"
    )
