"""Root and user passwords: strength rules, uniform characters, reproducible with a
seeded generator, few draws from the OS generator."""

from __future__ import annotations

import collections
import random
import string

import pytest

from dci6bridge.errors import ConfigError
from dci6bridge.provisioning.passwords import generate_password

SYMBOLS = "-_.+=@%"
ALPHABET = string.ascii_letters + string.digits + SYMBOLS


@pytest.mark.parametrize("length", [8, 20, 24, 64])
def test_every_class_present_and_only_safe_characters(length: int) -> None:
    for seed in range(200):
        pw = generate_password(random.Random(seed), length).reveal()
        assert len(pw) == length
        assert set(pw) <= set(ALPHABET)
        for cls in (string.ascii_lowercase, string.ascii_uppercase, string.digits, SYMBOLS):
            assert set(pw) & set(cls), (pw, cls)


def test_too_short_is_refused() -> None:
    with pytest.raises(ConfigError, match="length: 7"):
        generate_password(random.Random(0), 7)


def test_reproducible_with_a_seeded_generator() -> None:
    a = [generate_password(random.Random(7), 20).reveal() for _ in range(3)]
    assert len(set(a)) == 1
    assert generate_password(random.Random(8), 20).reveal() != a[0]


def test_characters_are_uniform() -> None:
    """Chi-square over the lower-case letters at one position (a password must hold
    every class, which favours the rarer classes a little: compare within a class)."""
    rng = random.Random(1)
    counts = collections.Counter(generate_password(rng, 20).reveal()[5] for _ in range(30_000))
    letters = [counts[c] for c in string.ascii_lowercase]
    mean = sum(letters) / len(letters)
    chi2 = sum((n - mean) ** 2 / mean for n in letters)
    # 25 degrees of freedom: p = 0.001 at 52.6
    assert chi2 < 52.6, chi2


class CountingRandom(random.Random):
    def __init__(self) -> None:
        super().__init__(3)
        self.draws = 0

    def getrandbits(self, k: int) -> int:
        self.draws += 1
        return super().getrandbits(k)


def test_few_draws_per_password() -> None:
    rng = CountingRandom()
    generate_password(rng, 24)
    assert rng.draws <= 2
