"""The retry policy: which failures are retried, how often and how long.

DCImanager 6 suspends idle services and answers **503** until they wake up; the vendor
says to repeat such requests, POST included (reference §3.3). A connection that failed
before the request left this machine is equally safe to repeat. Anything else that may
have reached DCImanager (a lost response, a 500) is repeated only for GET: a POST whose
answer was lost surfaces as :class:`~dci6bridge.APITimeoutError` /
:class:`~dci6bridge.APIConnectionError` so the caller reads the server back before acting
again.

This module is pure: it decides, :mod:`dci6bridge.client._http` sleeps and sends.
"""

from __future__ import annotations

import enum
import random

import attrs

from dci6bridge.client._checks import is_int, is_number
from dci6bridge.errors import ConfigError

__all__ = ["Failure", "RetryPolicy"]


class Failure(enum.Enum):
    """How an attempt failed, as far as retrying is concerned."""

    NOT_SENT = "not sent"
    """The connection failed before the request was sent (connect error/timeout, pool)."""
    RESPONSE_LOST = "response lost"
    """The request may have reached DCImanager, but no complete answer came back."""


@attrs.frozen
class RetryPolicy:
    """When and how the client repeats a failed request (tenacity does the looping).

    Attributes:
        attempts: total tries per request, the first included (``1`` disables retries).
        initial: the first backoff delay in seconds; it doubles after every attempt...
        max_delay: ...up to this many seconds.
        jitter: randomise each delay within ``[delay/2, delay]`` so many clients that
            failed together do not retry together.
        deadline: seconds after the first attempt started beyond which no new attempt
            starts (and no backoff sleep would end past it).

    Retried: HTTP 503 and connection failures before sending, for every method; other
    5xx and lost responses (read timeout, protocol error, read error) for GET only.
    """

    attempts: int = 10
    initial: float = 0.1
    max_delay: float = 2.0
    jitter: bool = True
    deadline: float = 60.0

    def __attrs_post_init__(self) -> None:
        problems = []
        if not is_int(self.attempts):
            problems.append(f"RetryPolicy.attempts: {self.attempts!r} is not an integer")
        elif self.attempts < 1:
            problems.append(f"RetryPolicy.attempts: {self.attempts!r} must be at least 1")
        for name in ("initial", "max_delay", "deadline"):
            value = getattr(self, name)
            if not is_number(value) or not value > 0:
                problems.append(f"RetryPolicy.{name}: {value!r} must be a number above 0")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries (one attempt)."""
        return cls(attempts=1)

    def retries_status(self, method: str, status_code: int) -> bool:
        """Whether an answer with ``status_code`` to ``method`` is worth another attempt."""
        if status_code == 503:
            return True
        return status_code >= 500 and method == "GET"

    def retries_failure(self, method: str, failure: Failure) -> bool:
        """Whether a transport failure of this kind is worth another attempt."""
        return failure is Failure.NOT_SENT or method == "GET"

    def delay(self, attempt: int) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based)."""
        base: float = min(self.max_delay, self.initial * 2 ** (attempt - 1))
        if self.jitter:
            return random.uniform(base / 2, base)
        return base
