"""Field checks shared by the domain objects and the catalog file loader.

Each check takes the raw value (typed ``Any``: it comes from user code or a TOML file and
may be anything) and returns ``None`` when the value is fine or the text of the problem,
without the path; the caller puts the path in front (``modules[1].url: ...``). Values are
shown with :func:`show`, which shortens long ones. Secrets never pass through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError

__all__ = [
    "Problems",
    "check_bool",
    "check_email",
    "check_hostname",
    "check_int",
    "check_name",
    "check_names",
    "check_ssh_key",
    "check_url",
    "normalise_url",
    "show",
    "to_tuple",
]

# local@domain: no spaces, one "@", a domain of dot-separated non-empty labels. Full RFC 5322
# is not the point; catching a pasted name, a missing "@" or a stray space is.
_EMAIL = re.compile(r"[^@\s]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_SSH_KEY = re.compile(
    "(?:" + "|".join(map(re.escape, _SSH_KEY_TYPES)) + r") [A-Za-z0-9+/]{16,}={0,3}(?: [^\r\n]*)?"
)
_SHOW_MAX = 60


def show(value: Any) -> str:
    """``repr`` of a value, cut to a readable length for error messages."""
    text = repr(value)
    if len(text) > _SHOW_MAX:
        text = text[: _SHOW_MAX - 5] + "...'" if text[0] in "'\"" else text[: _SHOW_MAX - 3] + "..."
    return text


def to_tuple(value: Any) -> Any:
    """attrs converter: lists and other sequences become tuples. A string stays a string
    (so the check can say "a list, not a string") instead of becoming a tuple of letters;
    a mapping stays a mapping instead of becoming its keys."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return value
    return tuple(value)


def check_name(value: Any) -> str | None:
    """A non-empty string without surrounding whitespace."""
    if not isinstance(value, str):
        return f"{show(value)} is not a string"
    if not value.strip():
        return f"{show(value)} is empty"
    if value != value.strip():
        return f"{show(value)} has leading or trailing whitespace"
    return None


def check_names(value: Any, *, if_empty: str | None = None) -> list[tuple[str, str]]:
    """A tuple of distinct names; problems as ``(suffix, text)``, suffix like ``[2]``.
    With ``if_empty``, an empty tuple is a problem and that text says why."""
    if not isinstance(value, tuple):
        what = "a string" if isinstance(value, str) else type(value).__name__
        return [("", f"{show(value)} is {what}, not a list of names")]
    if not value and if_empty is not None:
        return [("", f"() is empty ({if_empty})")]
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        problem = check_name(item)
        if problem is not None:
            problems.append((f"[{i}]", problem))
        elif item in seen:
            problems.append((f"[{i}]", f"{show(item)} is listed twice"))
        else:
            seen.add(item)
    return problems


def check_int(value: Any, *, minimum: int | None = None) -> str | None:
    """An int (not a bool), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{show(value)} is not an integer"
    if minimum is not None and value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        return f"{show(value)} is not {what}"
    return None


def check_bool(value: Any) -> str | None:
    """``True`` or ``False`` (TOML booleans; no truthy strings)."""
    if not isinstance(value, bool):
        return f"{show(value)} is not true or false"
    return None


def check_email(value: Any) -> str | None:
    """Looks like ``someone@example.com``."""
    if not isinstance(value, str):
        return f"{show(value)} is not a string"
    if not _EMAIL.fullmatch(value):
        return f"{show(value)} is not an e-mail address"
    return None


def check_hostname(value: Any) -> str | None:
    """An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens,
    each at most 63 characters, at most 253 in all. A trailing dot is not allowed."""
    if not isinstance(value, str):
        return f"{show(value)} is not a string"
    labels = value.split(".")
    if (
        not value
        or len(value) > 253
        or not all(_HOST_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()  # all-numeric top label: an IP address, not a host name
    ):
        return f"{show(value)} is not a valid host name (RFC 1123)"
    return None


def check_ssh_key(value: Any) -> str | None:
    """One OpenSSH public key line (``ssh-ed25519 AAAA... comment``). A private key is
    refused without echoing it."""
    if not isinstance(value, str):
        return f"{show(value)} is not a string"
    if "PRIVATE KEY" in value:
        return "is a private key (value not shown); give the public key"
    if not _SSH_KEY.fullmatch(value.strip()):
        return f"{show(value)} does not look like an OpenSSH public key"
    return None


def normalise_url(value: Any) -> Any:
    """attrs converter: drop trailing slashes of an http(s) URL; leave anything else as is
    for :func:`check_url` to report."""
    if not isinstance(value, str):
        return value
    scheme, sep, rest = value.strip().partition("://")
    return scheme + sep + rest.rstrip("/")


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))


def check_url(value: Any) -> str | None:
    """An ``http://`` or ``https://`` URL with a host and no credentials, query or fragment."""
    if not isinstance(value, str):
        return f"{show(value)} is not a string"
    try:
        parts = urlsplit(value)
        _port = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError:
        return f"{show(value)} is not an http(s) URL"
    if "@" in parts.netloc:
        # never echo: the part before "@" is a user name and maybe a password
        return (
            f"{show(_without_userinfo(value))} holds credentials; "
            "give them as username and password instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = f" (did you mean 'https://{value}'?)" if "://" not in value and value else ""
        return f"{show(value)} is not an http(s) URL{hint}"
    if parts.query or parts.fragment:
        return f"{show(value)} must not have a query or fragment"
    return None


class Problems:
    """Collects ``path: text`` problems, then raises them as one :class:`ConfigError`."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, problem: str | None) -> None:
        """Record ``problem`` at ``path`` unless it is ``None``."""
        if problem is not None:
            self.items.append(f"{path}: {problem}")

    def extend(self, path: str, problems: Sequence[tuple[str, str]]) -> None:
        """Record ``(suffix, text)`` pairs from :func:`check_names` under ``path``."""
        for suffix, text in problems:
            self.items.append(f"{path}{suffix}: {text}")

    def merge(self, error: ConfigError, *, old_prefix: str, new_prefix: str) -> None:
        """Take over another error's problems, re-rooting their paths."""
        for item in error.problems:
            if item.startswith(old_prefix):
                item = new_prefix + item[len(old_prefix) :]
            self.items.append(item)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        """Raise one :class:`ConfigError` listing everything recorded so far."""
        if self.items:
            raise ConfigError(self.items)
