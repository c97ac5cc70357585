"""Replay tests: read-only client calls against recorded DCImanager answers.

By default (``--record-mode=none``) each test replays its cassette from
``cassettes/test_cassettes/`` with the network blocked. ``nox -s record`` re-records them
from the simulator served over real HTTP, or from a real DCImanager when ``DCI6_URL``,
``DCI6_EMAIL`` and ``DCI6_PASSWORD`` are set (``DCI6_VERIFY=0`` for a self-signed
certificate). Recording rewrites every host to ``https://dci.example.test``, drops
cookies and token headers, replaces passwords, tokens and e-mail addresses, and keeps
only ``content-type`` among response headers; :func:`test_no_secret_in_any_cassette`
fails if anything slipped through. See ``docs/recording.md``.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import dci6bridge as d
from dci6bridge.testing import DEFAULT_ADMIN_PASSWORD, FakeDCImanager

pytestmark = [pytest.mark.block_network]

CASSETTES = Path(__file__).parent / "cassettes" / "test_cassettes"
CANONICAL = "https://dci.example.test"
PLACEHOLDER_EMAIL = "admin@example.com"
PLACEHOLDER_PASSWORD = "<password>"
SCRUBBED = "<scrubbed>"
SECRET_KEYS = frozenset({"token", "password", "key", "access_token", "session"})
KEEP_RESPONSE_HEADERS = frozenset({"content-type"})
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
SAFE_EMAIL = re.compile(r"@example\.(?:com|test|net|org)$")


def _real_target() -> tuple[str, str, str] | None:
    url, email, password = (os.environ.get(f"DCI6_{k}", "") for k in ("URL", "EMAIL", "PASSWORD"))
    return (url, email, password) if url and email and password else None


class Scrubber:
    """Rewrites what vcrpy records: one instance per test, so pseudonyms are stable
    within a cassette (the same address always maps to the same placeholder)."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = [s for s in secrets if s]
        self.emails: dict[str, str] = {}
        self.counter = itertools.count(1)

    def _email(self, match: re.Match[str]) -> str:
        email = match.group(0)
        if SAFE_EMAIL.search(email):
            return email
        if email not in self.emails:
            self.emails[email] = f"user{next(self.counter)}@example.com"
        return self.emails[email]

    def text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, SCRUBBED)
        return EMAIL.sub(self._email, text)

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (SCRUBBED if k in SECRET_KEYS and isinstance(v, str) else self.value(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def body(self, raw: bytes | str | None) -> bytes | None:
        if raw is None or raw == b"":
            return raw if raw is None else b""
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            return json.dumps(self.value(json.loads(text))).encode()
        except ValueError:
            return self.text(text).encode()

    def request(self, request: Any) -> Any:
        request = copy.deepcopy(request)
        parts = urlsplit(request.uri)
        canonical = urlsplit(CANONICAL)
        request.uri = urlunsplit(
            (canonical.scheme, canonical.netloc, parts.path, self.text(parts.query), "")
        )
        request.body = self.body(request.body)
        return request

    def response(self, response: dict[str, Any]) -> dict[str, Any]:
        response = copy.deepcopy(response)
        response["headers"] = {
            k: v for k, v in response["headers"].items() if k.lower() in KEEP_RESPONSE_HEADERS
        }
        response["body"]["string"] = self.body(response["body"]["string"]) or b""
        return response


@pytest.fixture
def vcr_config() -> dict[str, Any]:
    real = _real_target()
    secrets = [DEFAULT_ADMIN_PASSWORD] + ([real[2]] if real else [])
    scrubber = Scrubber(secrets)
    return {
        "filter_headers": [
            ("cookie", None),
            ("x-xsrf-token", None),
            ("isp-session", None),
            ("authorization", None),
            ("user-agent", None),
            ("host", None),  # the recorded installation's address
            ("content-length", None),  # bodies are rewritten
        ],
        "before_record_request": scrubber.request,
        "before_record_response": scrubber.response,
        "decode_compressed_response": True,
        "match_on": ["method", "path", "query"],
    }


@pytest.fixture
def dci(record_mode: str) -> Iterator[d.Client]:
    if record_mode == "none":  # replay: the cassette answers, nothing is sent
        client = d.Client(CANONICAL, email=PLACEHOLDER_EMAIL, password=PLACEHOLDER_PASSWORD)
        with client:
            yield client
        return
    real = _real_target()
    if real is not None:
        verify = os.environ.get("DCI6_VERIFY", "1") not in ("0", "false", "no")
        with d.Client(real[0], email=real[1], password=real[2], verify=verify) as client:
            yield client
        return
    fake = FakeDCImanager.with_inventory(locations=2, servers_per_location=3)
    fake.add_user("jane.doe@customer.example.org", "Jane-Pa55word")
    with (
        fake.serve() as url,
        d.Client(url, email=fake.admin_email, password=fake.admin_password) as client,
    ):
        yield client


@pytest.mark.vcr
def test_whoami(dci: d.Client) -> None:
    who = dci.whoami()
    assert who.owner_email
    assert dci.check().ok


@pytest.mark.vcr
def test_locations(dci: d.Client) -> None:
    locations = dci.locations.list()
    assert locations
    assert all(isinstance(loc.id, int) for loc in locations)


@pytest.mark.vcr
def test_servers_list_and_get(dci: d.Client) -> None:
    servers = list(dci.servers.list(page_size=2, limit=4))
    assert servers
    one = dci.servers.get(servers[0].id)
    assert one.id == servers[0].id
    assert one.name == servers[0].name


@pytest.mark.vcr
def test_free_servers_filter(dci: d.Client) -> None:
    free = list(dci.servers.list(where=d.Q.free(), orderby="id asc", limit=10))
    assert all(s.owner_email is None for s in free)


@pytest.mark.vcr
def test_configurations(dci: d.Client) -> None:
    counts = dci.servers.configurations()
    assert all(c.free_server_count >= 0 for c in counts)


@pytest.mark.vcr
def test_users_list(dci: d.Client) -> None:
    users = dci.users.list()
    assert users
    assert all("@" in u.email for u in users)


# ---------------------------------------------------------------- hygiene

SECRET_PATTERNS: list[tuple[str, Callable[[str], bool]]] = [
    ("simulator admin password", lambda t: DEFAULT_ADMIN_PASSWORD in t),
    ("ses6 cookie", lambda t: "ses6=" in t.lower()),
    ("token-looking value", lambda t: re.search(r"\b[0-9A-F]{20,}\b", t) is not None),
    ("key-style token", lambda t: re.search(r"\b\d+-[0-9a-f]{8}-[0-9a-f]{4}-", t) is not None),
    ("x-xsrf-token header", lambda t: "x-xsrf-token" in t.lower()),
    ("cookie header", lambda t: re.search(r"^\s*[Cc]ookie:", t, re.M) is not None),
    ("non-placeholder password", lambda t: re.search(r'"password":\s*"(?!<)', t) is not None),
    ("non-placeholder token", lambda t: re.search(r'"token":\s*"(?!<)', t) is not None),
]


def test_cassettes_exist() -> None:
    names = {p.stem for p in CASSETTES.glob("*.yaml")}
    tests = {n for n in globals() if n.startswith("test_")} - {
        "test_cassettes_exist",
        "test_no_secret_in_any_cassette",
        "test_scrubber_catches_secrets",
    }
    assert tests <= names, f"missing cassettes: {sorted(tests - names)}"


@pytest.mark.parametrize("path", sorted(CASSETTES.glob("*.yaml")), ids=lambda p: p.stem)
def test_no_secret_in_any_cassette(path: Path) -> None:
    text = path.read_text()
    real = _real_target()
    if real is not None:
        assert real[2] not in text
    for what, found in SECRET_PATTERNS:
        assert not found(text), f"{path.name}: {what}"


def test_scrubber_catches_secrets() -> None:
    """The scrubber itself: the hygiene patterns above would fire without it."""
    scrub = Scrubber([DEFAULT_ADMIN_PASSWORD])
    login = json.dumps({"email": "root@real-host.net", "password": DEFAULT_ADMIN_PASSWORD})
    answer = json.dumps({"id": 3, "token": "738584A4E898908DA6C7B0D4", "expires_at": None})
    raw = login + answer
    assert any(found(raw) for _, found in SECRET_PATTERNS)
    cleaned = (scrub.body(login.encode()) or b"").decode() + (
        scrub.body(answer.encode()) or b""
    ).decode()
    assert not any(found(cleaned) for _, found in SECRET_PATTERNS)
    assert "real-host" not in cleaned
    assert "user1@example.com" in cleaned
