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


def generate_password(rng: random.Random, length: int = 20) -> Secret:
    """A password of ``length`` characters with at least one lower-case letter, one
    upper-case letter, one digit and one symbol (DCImanager's OS templates, like most
    installers, reject weak root passwords)."""
    if length < 8:
        raise ConfigError(f"length: {length!r} is below 8")
    classes = (_LOWER, _UPPER, _DIGITS, _SYMBOLS)
    alphabet = _LOWER + _UPPER + _DIGITS + _SYMBOLS
    chars = [rng.choice(c) for c in classes]
    chars += [rng.choice(alphabet) for _ in range(length - len(chars))]
    rng.shuffle(chars)
    return Secret("".join(chars))
