"""The typed DCImanager 6 client: :class:`Client`, :class:`AsyncClient`,
:class:`RetryPolicy` and the query builder :class:`Q`.

Layout: :mod:`._core` (sans-I/O requests, responses, errors, auth state), :mod:`._http`
(the only httpx user: send loops and retries), :mod:`._converter` (the one cattrs
converter), :mod:`._routes` (the route table), :mod:`.models`, :mod:`.query` and
``resources/`` (one module per API area, sync and async classes side by side).
"""

from __future__ import annotations

from ._client import AsyncClient, Client
from ._retry import RetryPolicy
from .query import Q

__all__ = ["AsyncClient", "Client", "Q", "RetryPolicy"]
