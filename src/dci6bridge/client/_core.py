"""Sans-I/O core of the client: requests, responses, errors and auth state.

Nothing here sends or sleeps. :mod:`._http` asks this module what to send, sends it, and
hands back the status and bytes; this module decides what they mean. Both
:class:`~dci6bridge.Client` and :class:`~dci6bridge.AsyncClient` share it, so the twins
cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar
from urllib.parse import quote

import attrs

from dci6bridge import __version__
from dci6bridge.client._checks import is_text
from dci6bridge.errors import (
    APIStatusError,
    ConfigError,
    ResponseValidationError,
    status_error_class,
)
from dci6bridge.secret import Secret

from ._converter import decode_json, encode_json
from ._routes import route

__all__ = ["AuthState", "Call", "Core", "parse_expires_at"]

T = TypeVar("T")

# Characters left as-is in query values: real DCImanager clients send ' ( ) and , raw,
# and one VM6 client found the platform mishandles them percent-encoded. A literal '+'
# must be encoded (%2B), or the server would read it as a space.
_QUERY_SAFE: Final = "'(),@:"
#: A token is renewed this long before it expires, or a quarter of its lifetime when
#: that is shorter: with a fixed margin, a token living less than the margin would make
#: every request log in again.
_EXPIRY_MARGIN_S: Final = 60.0
_EXPIRY_MARGIN_SHARE: Final = 0.25
_MAX_TEXT: Final = 300
_MIN_SECRET: Final = 4


@attrs.frozen
class Call(Generic[T]):
    """One logical API call: what to send and how to read a 2xx answer.

    ``body`` is never shown in the repr: it may hold a password.
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    params: tuple[tuple[str, str], ...] = ()
    body: Any = attrs.field(default=None, repr=False)

    @classmethod
    def to(
        cls,
        route_name: str,
        parse: Callable[[Any], T],
        *,
        params: Mapping[str, str | None] | None = None,
        body: Any = None,
        **path_params: object,
    ) -> Call[T]:
        """A call to the named route of :data:`~._routes.ROUTES`; ``None`` params dropped."""
        r = route(route_name)
        pairs = tuple((k, v) for k, v in (params or {}).items() if v is not None)
        if r.method == "POST" and body is None:
            body = {}  # the platform expects a JSON object on every action POST
        return cls(r.method, r.format(**path_params), parse, pairs, body)


def parse_expires_at(value: Any) -> float | None:
    """``"YYYY-MM-DD HH:MM:SS"`` (UTC, as the auth service writes it) → POSIX seconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


@attrs.define
class AuthState:
    """Who we are to DCImanager right now. Mutated only under the client's lock.

    ``generation`` counts logins, so a request that got 401 with an old token can tell
    whether another request has already logged in again.
    """

    email: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    token_id: int | None = None
    expires_at: float | None = None
    #: when to log in again before ``expires_at`` (set with it at login)
    renew_at: float | None = None
    generation: int = 0

    @property
    def can_login(self) -> bool:
        """Credentials are known, so a new token can be obtained."""
        return self.email is not None and self.password is not None

    @property
    def owns_session(self) -> bool:
        """The client logged in itself and may revoke the session on close."""
        return self.can_login and self.token_id is not None

    def needs_login(self, now: float) -> bool:
        """No token yet, or (when we can log in) the token expires within the margin."""
        if self.token is None:
            return True
        return self.can_login and self.renew_at is not None and now >= self.renew_at

    def set_expiry(self, expires_at: float | None, now: float) -> None:
        """Record a new token's expiry, seen at local time ``now``, and when to renew it."""
        self.expires_at = expires_at
        if expires_at is None or expires_at <= now:
            # A fresh token that looks expired means our clock runs ahead of the
            # platform's: renewing by it would log in before every request. The 401 a
            # really expired token gets is handled by logging in again.
            self.renew_at = None
            return
        lifetime = expires_at - now
        self.renew_at = expires_at - min(_EXPIRY_MARGIN_S, lifetime * _EXPIRY_MARGIN_SHARE)


def _redact(value: Any, secrets: Sequence[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, "***")
        return value
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    return value


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


class Core:
    """Request building, response reading and auth state for one client."""

    def __init__(
        self,
        base_url: str,
        *,
        email: str | None,
        password: str | Secret | None,
        token: str | Secret | None,
        api_prefix: str,
        user_agent: str | None,
        http_version: str,
    ) -> None:
        problems = []
        if not is_text(base_url) or not base_url.startswith(("http://", "https://")):
            problems.append(f"base_url: {base_url!r} is not an http(s) URL")
        if (email is None) != (password is None):
            problems.append("email and password: give both or neither")
        if email is None and token is None:
            problems.append("credentials: give email and password, or token")
        if email is not None and (not is_text(email) or "@" not in email):
            problems.append(f"email: {email!r} is not an email address")
        for name, secret in (("password", password), ("token", token)):
            if secret is not None and not isinstance(secret, Secret) and not is_text(secret):
                problems.append(f"{name}: must be a non-empty string or Secret")
        if not is_text(api_prefix, empty=True):
            problems.append(f"api_prefix: {api_prefix!r} is not a string")
        if problems:
            raise ConfigError(problems)
        prefix = api_prefix.strip("/")
        self.root = base_url.rstrip("/") + "/" + (prefix + "/" if prefix else "")
        self.auth = AuthState(
            email=email,
            password=None if password is None else Secret(password),
            token=None if token is None else Secret(token),
        )
        agent = f"dci6bridge/{__version__} python/{platform.python_version()} httpx/{http_version}"
        self.base_headers: Mapping[str, str] = {
            "accept": "application/json",
            "isp-box-instance": "true",
            "user-agent": f"{user_agent} {agent}" if user_agent else agent,
        }

    # ------------------------------------------------------------------ requests

    def url(self, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
        """The absolute URL of ``path`` (relative to the API prefix) with its query."""
        url = self.root + path.lstrip("/")
        if params:
            url += "?" + "&".join(
                f"{quote(k, safe='')}={quote(v, safe=_QUERY_SAFE)}" for k, v in params
            )
        return url

    @staticmethod
    def auth_headers(token: Secret | None, *, has_body: bool) -> dict[str, str]:
        """Per-request headers: the token as cookie ``ses6`` and ``x-xsrf-token``."""
        headers: dict[str, str] = {}
        if token is not None:
            value = token.reveal()
            headers["cookie"] = f"ses6={value}"
            headers["x-xsrf-token"] = value
        if has_body:
            headers["content-type"] = "application/json"
        return headers

    @staticmethod
    def encode_body(body: Any) -> bytes | None:
        """The JSON bytes to send, ``None`` for no body."""
        return None if body is None else encode_json(body)

    def secrets(self) -> list[str]:
        """Values that must never appear in an exception: the password and the token.

        Values under four characters are left out: masking them would garble every
        message while hiding next to nothing.
        """
        return [
            s.reveal()
            for s in (self.auth.password, self.auth.token)
            if s is not None and len(s.reveal()) >= _MIN_SECRET
        ]

    # ------------------------------------------------------------------ login

    def login_call(self) -> Call[None]:
        """The login request; :meth:`apply_login` reads its answer."""
        assert self.auth.email is not None
        assert self.auth.password is not None
        body = {"email": self.auth.email, "password": self.auth.password.reveal()}
        return Call.to("auth.login", lambda _data: None, body=body)

    def apply_login(
        self, status: int, content: bytes, method: str, path: str, *, now: float
    ) -> int | None:
        """Store the token of a login answer (200 or 201 with a ``token``, received at
        local time ``now``) or raise.

        Returns the id of the session the new token replaces when this client opened that
        one itself (a renewal before expiry, a re-login after 401), for the caller to
        revoke once the new token is in place; ``None`` otherwise."""
        if not 200 <= status < 300:
            raise self.status_error(status, content, method, path)
        data = self.decode(content, method, path)
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise ResponseValidationError(
                "login answer has no token", method=method, path=path, field="$.token"
            )
        replaced = self.auth.token_id if self.auth.owns_session else None
        self.auth.token = Secret(token)
        self.auth.token_id = _int_or_none(data.get("id"))
        self.auth.set_expiry(parse_expires_at(data.get("expires_at")), now)
        self.auth.generation += 1
        return replaced if replaced != self.auth.token_id else None

    def logout_call(self) -> Call[None] | None:
        """Revoke our own session by its id (never by value: URLs get logged)."""
        if not self.auth.owns_session:
            return None
        return self.revoke_call(self.auth.token_id)

    @staticmethod
    def revoke_call(token_id: int | None) -> Call[None]:
        """Revoke the session ``token_id`` (by id, never by value: URLs get logged)."""
        return Call.to("auth.logout", lambda _data: None, token_id=token_id)

    def forget_session(self) -> None:
        """Drop the token after logout."""
        self.auth.token = None
        self.auth.token_id = None
        self.auth.set_expiry(None, 0.0)

    # ------------------------------------------------------------------ responses

    def decode(self, content: bytes, method: str, path: str) -> Any:
        """The JSON of a 2xx body (an empty body reads as ``{}``)."""
        if not content.strip():
            return {}
        try:
            return decode_json(content)
        except ValueError:
            raise ResponseValidationError(
                "response is not JSON", method=method, path=path, field="$"
            ) from None

    def finish(self, call: Call[T], status: int, content: bytes) -> T:
        """The parsed result of a call, or the error its answer means."""
        if not 200 <= status < 300:
            raise self.status_error(status, content, call.method, call.path)
        data = self.decode(content, call.method, call.path)
        try:
            return call.parse(data)
        except ResponseValidationError as exc:
            raise ResponseValidationError(
                str(exc), method=call.method, path=call.path, field=exc.field, details=exc.details
            ) from None

    def status_error(self, status: int, content: bytes, method: str, path: str) -> APIStatusError:
        """Map a non-2xx answer to the error tree; both platform envelopes understood.

        ``{"error": {"code", "msg", "value"}}`` (dci, ip) and ``{"error": "text", "code",
        "field"}`` (auth v4); anything else keeps a short excerpt of the body as message.
        Known secrets are masked in every attribute.
        """
        secrets = self.secrets()
        body: Any = None
        code = message = value = field = None
        try:
            body = decode_json(content) if content.strip() else None
        except ValueError:
            text = content.decode("utf-8", "replace").strip()
            message = text[:_MAX_TEXT] + ("…" if len(text) > _MAX_TEXT else "")
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict):
                code, message, value = err.get("code"), err.get("msg"), err.get("value")
            elif isinstance(err, str):
                code, message, field = body.get("code"), err, body.get("field")
            elif isinstance(body.get("msg"), str):
                code, message = body.get("code"), body["msg"]
        body = _redact(body, secrets)
        return status_error_class(status)(
            status_code=status,
            method=method,
            path=path,
            error_code=_int_or_none(code),
            message=_redact(str(message), secrets) if message else "",
            value=_redact(value, secrets),
            field=str(field) if field is not None else None,
            body=body,
        )
