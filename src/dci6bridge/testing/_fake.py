"""``FakeDCImanager``: an in-memory DCImanager 6 for tests, demos and users' suites."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dci6bridge.errors import ConfigError

from ._app import App
from ._clock import Clock, ManualClock
from ._faults import Faults
from ._inventory import DEFAULT_CONFIGURATIONS, DEFAULT_OS_TEMPLATES, Inventory, UserSpec
from ._server import SimulatorServer
from ._state import SimulatorState
from ._transport import FakeTransport
from ._world import USER_ROLE, World

__all__ = ["DEFAULT_ADMIN_PASSWORD", "FakeDCImanager"]

#: The administrator's password unless you choose one (a test value, never a real one).
DEFAULT_ADMIN_PASSWORD = "simulator-admin-password"


class _Keep(enum.Enum):
    KEEP = "keep"


class FakeDCImanager:
    """A simulated DCImanager 6 speaking the routes of the client's route table.

    In-process use goes through :attr:`transport`; :meth:`serve` answers real HTTP on
    127.0.0.1 for other threads and processes. Time comes from ``clock`` (default: a
    :class:`ManualClock` you move with :meth:`advance`; while served, it also follows
    real time). Faults come from ``faults`` and are drawn from generators seeded by
    ``seed``, so a run replays exactly.

    Args:
        inventory: what the world holds at start (default: :meth:`Inventory.preset`).
        clock: anything with ``now() -> float`` epoch seconds.
        seed: seeds every random decision (faults, token values).
        admin_email: the administrator's email.
        admin_password: the administrator's password.
        token_ttl: seconds a login token lives (``None``: forever); same as
            ``Faults.token_ttl``.
        install_duration: seconds an OS install runs before it ends (0: at once).
        power_duration: seconds a power action runs (0: at once).
        faults: the :class:`Faults` to inject.
        api_prefix: where the API lives (``"/api"``, as on the platform).
        unique_user_emails: refuse a second user with the same email (409). The
            platform creates duplicates, so the default is False.
        conditional_owner: refuse (409) to assign a server another user owns; False
            overwrites the owner instead.
        url: the base URL clients use in-process.
        sleep: how injected latency is slept (a real sleep by default).
        async_sleep: the same for the async transport.
    """

    def __init__(
        self,
        *,
        inventory: Inventory | None = None,
        clock: Clock | None = None,
        seed: int = 0,
        admin_email: str = "admin@example.com",
        admin_password: str = DEFAULT_ADMIN_PASSWORD,
        token_ttl: float | None = None,
        install_duration: float = 600.0,
        power_duration: float = 0.0,
        faults: Faults | None = None,
        api_prefix: str = "/api",
        unique_user_emails: bool = False,
        conditional_owner: bool = True,
        url: str = "https://dci.test",
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        problems = []
        if install_duration < 0:
            problems.append(f"install_duration: must be >= 0, got {install_duration!r}")
        if power_duration < 0:
            problems.append(f"power_duration: must be >= 0, got {power_duration!r}")
        if "@" not in admin_email:
            problems.append(f"admin_email: not an email address: {admin_email!r}")
        if not admin_password:
            problems.append("admin_password: must not be empty")
        if problems:
            raise ConfigError(problems)
        faults = faults if faults is not None else Faults()
        if token_ttl is not None:
            faults = faults.evolve({"token_ttl": token_ttl})
        self._own_clock = clock is None
        self._clock: Clock = ManualClock() if clock is None else clock
        self._admin_email = admin_email
        self._admin_password = admin_password
        self.seed = seed
        self.url = url.rstrip("/")
        self.api_prefix = api_prefix
        self._world = World(
            inventory if inventory is not None else Inventory.preset(),
            clock=self._clock,
            seed=seed,
            faults=faults,
            admin_email=admin_email,
            admin_password=admin_password,
            install_duration=install_duration,
            power_duration=power_duration,
            unique_user_emails=unique_user_emails,
            conditional_owner=conditional_owner,
        )
        self._app = App(self._world, api_prefix)
        self.sleep = sleep
        self._transport = FakeTransport(self._app, sleep=sleep, async_sleep=async_sleep)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def with_inventory(
        cls,
        locations: int = 2,
        servers_per_location: int = 20,
        configurations: Sequence[str] = DEFAULT_CONFIGURATIONS,
        os_templates: Sequence[str] = DEFAULT_OS_TEMPLATES,
        ip_pools: int = 1,
        ips_per_pool: int | None = None,
        users: Sequence[UserSpec] = (),
        **kwargs: Any,
    ) -> FakeDCImanager:
        """A simulator with a generated inventory (see :meth:`Inventory.preset`);
        ``kwargs`` go to the constructor."""
        inventory = Inventory.preset(
            locations=locations,
            servers_per_location=servers_per_location,
            configurations=configurations,
            os_templates=os_templates,
            ip_pools=ip_pools,
            ips_per_pool=ips_per_pool,
            users=users,
        )
        return cls(inventory=inventory, **kwargs)

    @classmethod
    def from_inventory_file(cls, path: str | Path, **kwargs: Any) -> FakeDCImanager:
        """A simulator whose inventory is read from a JSON file (see
        :meth:`Inventory.from_json`); ``kwargs`` go to the constructor."""
        return cls(inventory=Inventory.from_file(path), **kwargs)

    # ------------------------------------------------------------------ access

    @property
    def admin_email(self) -> str:
        """The administrator's email (log in with it)."""
        return self._admin_email

    @property
    def admin_password(self) -> str:
        """The administrator's password."""
        return self._admin_password

    @property
    def transport(self) -> FakeTransport:
        """An httpx transport for ``httpx.Client`` and ``httpx.AsyncClient``."""
        return self._transport

    @property
    def clock(self) -> Clock:
        """The simulator's clock."""
        return self._clock

    @property
    def state(self) -> SimulatorState:
        """A snapshot of the ground truth, taken now."""
        with self._world.lock:
            return self._world.snapshot()

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._world.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        if not isinstance(faults, Faults):
            raise TypeError(f"faults: expected Faults, got {type(faults).__name__}")
        with self._world.lock:
            self._world.faults = faults

    def set_faults(self, faults: Faults | None = None, /, **changes: Any) -> Faults:
        """Replace the faults, or change some fields: ``set_faults(unavailable_rate=0.1)``.
        Returns the faults now in force."""
        with self._world.lock:
            base = faults if faults is not None else self._world.faults
            self._world.faults = base.evolve(changes) if changes else base
            return self._world.faults

    # ------------------------------------------------------------------ steering

    def advance(self, seconds: float) -> float:
        """Move the manual clock forward and finish operations whose time has come."""
        advance = getattr(self._clock, "advance", None)
        if advance is None:
            raise TypeError(f"{self._clock!r} cannot be advanced; pass a ManualClock")
        now: float = advance(seconds)
        with self._world.lock:
            self._world.settle()
        return now

    def fail_next(self, count: int) -> None:
        """Answer the next ``count`` requests with 503 ("service suspended"); with
        ``Faults.unavailable_routes`` set, only requests to those routes count."""
        if count < 0:
            raise ConfigError(f"count: must be >= 0, got {count!r}")
        with self._world.lock:
            self._world.unavailable_left += count

    def live_sessions(self) -> tuple[int, ...]:
        """Ids of the login tokens that work now (neither revoked nor expired), oldest
        first: what a client leaves open on the platform."""
        with self._world.lock:
            return tuple(self._world.sessions.live())

    def expire_tokens(self) -> int:
        """Revoke every session now; returns how many there were."""
        with self._world.lock:
            return self._world.sessions.revoke_all()

    def add_user(
        self,
        email: str,
        password: str = "user-password",  # noqa: S107 - a simulator test value
        *,
        roles: Sequence[str] = (USER_ROLE,),
        full_name: str = "",
    ) -> int:
        """Create a user directly (no request logged); returns its id."""
        with self._world.lock:
            return self._world.add_user(email, password, roles, full_name).id

    def modify_server(
        self,
        server_id: int,
        *,
        is_new: bool | None = None,
        maintenance_mode: bool | None = None,
        power_status: str | None = None,
        owner_id: int | _Keep | None = _Keep.KEEP,
    ) -> None:
        """Change a server behind the API's back (an operator in the UI, an outsider).

        ``owner_id=None`` clears the owner; leave it out to keep it.
        """
        with self._world.lock:
            server = self._world.servers.get(server_id)
            if server is None:
                raise ConfigError(f"server_id: no server {server_id!r}")
            if power_status is not None and power_status not in ("on", "off", "unknown"):
                raise ConfigError(f"power_status: must be on, off or unknown, got {power_status!r}")
            if not isinstance(owner_id, _Keep):
                user = None if owner_id is None else self._world.users.get(owner_id)
                if owner_id is not None and user is None:
                    raise ConfigError(f"owner_id: no user {owner_id!r}")
                self._world.put_owner(server, user)
            if is_new is not None:
                server.is_new = is_new
            if maintenance_mode is not None:
                server.maintenance_mode = maintenance_mode
            if power_status is not None:
                server.power_status = power_status
            server.changed()

    # ------------------------------------------------------------------ HTTP

    @contextlib.contextmanager
    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log: Callable[[str], None] | None = None,
    ) -> Iterator[str]:
        """Serve real HTTP in a background thread; yields ``http://127.0.0.1:PORT``.

        Unless you passed your own clock, the manual clock follows real time while
        serving (``advance`` still jumps ahead). ``log`` receives one line per request.
        """
        server = SimulatorServer(self, self._app, host, port, log=log)
        clock = self._clock if self._own_clock else None
        if isinstance(clock, ManualClock):
            clock.follow_real_time(True)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
            if isinstance(clock, ManualClock):
                clock.follow_real_time(False)

    def __repr__(self) -> str:
        return (
            f"FakeDCImanager(url={self.url!r}, servers={len(self._world.servers)}, "
            f"users={len(self._world.users)}, seed={self.seed!r})"
        )
