"""Login tokens of the simulated auth v4 service: issue, check, revoke."""

from __future__ import annotations

import random
from typing import Any

from ._clock import Clock, format_timestamp
from ._errors import Code, auth_error
from ._records import Token, User

__all__ = ["Sessions"]


class Sessions:
    """Every live token, by value and by id. Values come from a seeded generator."""

    def __init__(self, clock: Clock, rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng
        self._by_value: dict[str, Token] = {}
        self._by_id: dict[int, Token] = {}
        self._last_id = 0

    def issue(self, user: User, expires_at: float | None) -> dict[str, Any]:
        """A new token for ``user``, answered in the login shape."""
        self._last_id += 1
        token = Token(self._last_id, f"{self._rng.getrandbits(96):024X}", user.id, expires_at)
        self._by_value[token.value] = token
        self._by_id[token.id] = token
        return {
            "id": token.id,
            "token": token.value,
            "expires_at": _when(expires_at),
            "confirmed": True,
        }

    def check(self, value: str | None) -> Token:
        """The live token with this value; ``LookupError`` if unknown or expired."""
        token = self._by_value.get(value or "")
        if token is None:
            raise LookupError("no such token")
        if token.expires_at is not None and self._clock.now() >= token.expires_at:
            raise LookupError("expired")
        return token

    def live(self) -> list[int]:
        """Ids of the tokens that still work now (not revoked, not expired), oldest first."""
        now = self._clock.now()
        return [t.id for t in self._by_id.values() if t.expires_at is None or now < t.expires_at]

    def revoke(self, ref: str) -> None:
        """Log out the token whose value or id is ``ref`` (404 if none)."""
        token = self._by_value.get(ref)
        if token is None and ref.isdigit():
            token = self._by_id.get(int(ref))
        if token is None:
            raise auth_error(404, Code.AUTH_NOT_FOUND, "Token not found")
        self._drop(token)

    def revoke_user(self, user_id: int) -> None:
        """Log out every token of one user."""
        for token in [t for t in self._by_id.values() if t.user_id == user_id]:
            self._drop(token)

    def revoke_all(self) -> int:
        """Log out everyone; returns how many tokens there were."""
        count = len(self._by_id)
        self._by_value.clear()
        self._by_id.clear()
        return count

    def _drop(self, token: Token) -> None:
        del self._by_value[token.value]
        del self._by_id[token.id]

    @staticmethod
    def whoami(token: Token, user: User) -> dict[str, Any]:
        """``GET auth/v4/whoami``: the session's owner."""
        return {
            "id": token.id,
            "owner_id": user.id,
            "owner_email": user.email,
            "owner_roles": list(user.roles),
            "expires_at": _when(token.expires_at),
        }


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else format_timestamp(epoch)
