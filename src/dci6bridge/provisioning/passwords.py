"""Root passwords for installed servers, drawn from the orchestrator's injected RNG.

The default RNG is :class:`random.SystemRandom` (the OS's CSPRNG); tests inject a seeded
:class:`random.Random` to make runs reproducible. The password is stored in the service's
step data *before* the install call, so a crash cannot lose the password of a server
that is already being installed with it.
"""

from __future__ import annotations

import random
import string

from dci6bridge.errors import ConfigError
from dci6bridge.secret import Secret

__all__ = ["generate_password"]

_LOWER = string.ascii_lowercase
_UPPER = string.ascii_uppercase
_DIGITS = string.digits
# no quotes, backslashes or shell metacharacters: the password may be typed or pasted
_SYMBOLS = "-_.+=@%"


class _Draws:
    """Uniform indices from a few large draws of ``rng``: the OS generator behind
    :class:`random.SystemRandom` costs a system call per draw, and ``choice`` and
    ``shuffle`` draw once per character."""

    _BITS = 16

    def __init__(self, rng: random.Random, expected: int) -> None:
        self._rng = rng
        self._chunk = max(8, expected)
        self._pool = 0
        self._left = 0

    def below(self, n: int) -> int:
        """A uniform int in ``range(n)`` (``n`` < 2**16), by rejection sampling."""
        limit = (1 << self._BITS) // n * n
        while True:
            if not self._left:
                self._pool = self._rng.getrandbits(self._BITS * self._chunk)
                self._left = self._chunk
            value = self._pool & ((1 << self._BITS) - 1)
            self._pool >>= self._BITS
            self._left -= 1
            if value < limit:
                return value % n


def generate_password(rng: random.Random, length: int = 20) -> Secret:
    """A password of ``length`` characters with at least one lower-case letter, one
    upper-case letter, one digit and one symbol (DCImanager's OS templates, like most
    installers, reject weak root passwords)."""
    if length < 8:
        raise ConfigError(f"length: {length!r} is below 8")
    classes = (_LOWER, _UPPER, _DIGITS, _SYMBOLS)
    alphabet = _LOWER + _UPPER + _DIGITS + _SYMBOLS
    draws = _Draws(rng, 2 * length + 4)
    chars = [c[draws.below(len(c))] for c in classes]
    chars += [alphabet[draws.below(len(alphabet))] for _ in range(length - len(chars))]
    for i in range(len(chars) - 1, 0, -1):  # Fisher-Yates
        j = draws.below(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return Secret("".join(chars))
