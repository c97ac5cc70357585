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


_ALPHABET = _LOWER + _UPPER + _DIGITS + _SYMBOLS
# A random byte below the largest multiple of the alphabet's size maps uniformly to a
# character; the others are dropped. ``bytes.translate`` does both in C: the Python-level
# loop it replaces cost more than the install request it guards.
_KEEP = 256 // len(_ALPHABET) * len(_ALPHABET)
_TABLE = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) if b < _KEEP else 0 for b in range(256))
_DROP = bytes(range(_KEEP, 256))
_CLASSES = tuple(frozenset(c) for c in (_LOWER, _UPPER, _DIGITS, _SYMBOLS))


def generate_password(rng: random.Random, length: int = 20) -> Secret:
    """A password of ``length`` characters with at least one lower-case letter, one
    upper-case letter, one digit and one symbol (DCImanager's OS templates, like most
    installers, reject weak root passwords).

    Uniform over all such passwords: uniform characters, and a draw that misses a class
    is drawn again. Random bytes come from a few large draws of ``rng`` (the OS
    generator behind :class:`random.SystemRandom` costs a system call per draw)."""
    if length < 8:
        raise ConfigError(f"length: {length!r} is below 8")
    pool = ""
    while True:
        while len(pool) < length:
            size = 4 * length
            raw = rng.getrandbits(8 * size).to_bytes(size, "little")
            pool += raw.translate(_TABLE, _DROP).decode("ascii")
        candidate, pool = pool[:length], pool[length:]
        chars = set(candidate)
        if all(chars & cls for cls in _CLASSES):
            return Secret(candidate)
