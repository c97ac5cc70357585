"""DCImanager users: list, find by email, create, delete (``dci.users``)."""

from __future__ import annotations

from typing import Any

from dci6bridge.client._checks import is_text
from dci6bridge.client._core import Call
from dci6bridge.client._http import AsyncSession, SyncSession
from dci6bridge.client._retry import RetryPolicy
from dci6bridge.client.models import ActionResult, User
from dci6bridge.client.query import Condition, Q
from dci6bridge.errors import ConfigError, ResponseValidationError
from dci6bridge.secret import Secret

from ._common import Paging, aiterate, check_id, iterate, parse_action

__all__ = ["AsyncUsers", "Users", "create_call", "pick_user"]


def users_paging(where: Condition | str | None) -> Paging[User]:
    """Paging plan over the user list."""
    return Paging.of("users.list", User, where=where)


def find_where(email: str) -> Condition:
    """``email EQ '<email>'``."""
    if not is_text(email) or "@" not in email:
        raise ConfigError(f"email: {email!r} is not an email address")
    return Q("email") == email


def pick_user(users: list[User], email: str) -> User | None:
    """The lowest-id user whose email matches (case-insensitively), if any."""
    matching = [u for u in users if u.email.lower() == email.lower()]
    return min(matching, key=lambda u: u.id) if matching else None


def create_call(
    *,
    email: str,
    password: str | Secret,
    full_name: str | None,
    phone_number: str | None,
    role: str,
) -> Call[User]:
    """Create a user; the answer ``{"id"}`` becomes a :class:`User` with what we sent."""
    problems = []
    if not is_text(email) or "@" not in email:
        problems.append(f"email: {email!r} is not an email address")
    if not isinstance(password, Secret) and not is_text(password):
        problems.append("password: must be a non-empty string or Secret")
    for name, value in (("full_name", full_name), ("phone_number", phone_number)):
        if value is not None and not is_text(value, empty=True):
            problems.append(f"{name}: {value!r} is not a string")
    if not is_text(role) or not role.startswith("@"):
        problems.append(f"role: {role!r} is not a role name like '@user'")
    if problems:
        raise ConfigError(problems)
    body: dict[str, Any] = {"email": email, "password": Secret(password).reveal(), "role": role}
    if full_name is not None:
        body["full_name"] = full_name
    if phone_number is not None:
        body["phone_number"] = phone_number

    def parse(data: Any) -> User:
        action = parse_action(data)
        if action.id is None:
            raise ResponseValidationError("user create answer has no id", field="$.id")
        return User(id=action.id, email=email, roles=(role,), full_name=full_name)

    return Call.to("users.create", parse, body=body)


def delete_call(user_id: int) -> Call[ActionResult]:
    """Delete a user (refused while the user owns servers)."""
    return Call.to("users.delete", parse_action, user_id=check_id("user_id", user_id))


class Users:
    """DCImanager users (sync). ``dci.users``."""

    def __init__(self, session: SyncSession) -> None:
        self._s = session

    def list(
        self, where: Condition | str | None = None, *, retry: RetryPolicy | None = None
    ) -> list[User]:
        """All users matching ``where`` (every page)."""
        return list(iterate(self._s, users_paging(where), retry))

    def find(self, email: str, *, retry: RetryPolicy | None = None) -> User | None:
        """The user with this email (lowest id if several), or ``None``."""
        return pick_user(self.list(find_where(email), retry=retry), email)

    def create(
        self,
        *,
        email: str,
        password: str | Secret,
        full_name: str | None = None,
        phone_number: str | None = None,
        role: str = "@user",
        retry: RetryPolicy | None = None,
    ) -> User:
        """Create a user; returns it with the new id."""
        call = create_call(
            email=email,
            password=password,
            full_name=full_name,
            phone_number=phone_number,
            role=role,
        )
        return self._s.execute(call, retry)

    def delete(self, user_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Delete a user (release their servers first)."""
        return self._s.execute(delete_call(user_id), retry)


class AsyncUsers:
    """DCImanager users (async)."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def list(
        self, where: Condition | str | None = None, *, retry: RetryPolicy | None = None
    ) -> list[User]:
        """All users matching ``where`` (every page)."""
        return [u async for u in aiterate(self._s, users_paging(where), retry)]

    async def find(self, email: str, *, retry: RetryPolicy | None = None) -> User | None:
        """The user with this email (lowest id if several), or ``None``."""
        return pick_user(await self.list(find_where(email), retry=retry), email)

    async def create(
        self,
        *,
        email: str,
        password: str | Secret,
        full_name: str | None = None,
        phone_number: str | None = None,
        role: str = "@user",
        retry: RetryPolicy | None = None,
    ) -> User:
        """Create a user; returns it with the new id."""
        call = create_call(
            email=email,
            password=password,
            full_name=full_name,
            phone_number=phone_number,
            role=role,
        )
        return await self._s.execute(call, retry)

    async def delete(self, user_id: int, *, retry: RetryPolicy | None = None) -> ActionResult:
        """Delete a user (release their servers first)."""
        return await self._s.execute(delete_call(user_id), retry)
