"""Which seeds the simulation suite runs.

* ``DCI6BRIDGE_SIM_SEED=<n>``: replay exactly seed ``n`` (the failure message of a seed
  names it), with the whole trace tail printed;
* ``DCI6BRIDGE_SIM_SEEDS=<count>`` (default :data:`CI_SEEDS`) and
  ``DCI6BRIDGE_SIM_FIRST=<n>`` (default 0): run ``count`` seeds from ``n``, e.g.
  ``DCI6BRIDGE_SIM_SEEDS=5000 pytest tests/simulation -k test_seeds`` for a long local
  run;
* ``DCI6BRIDGE_SIM_PROCESSES=<n>`` (default: 2, at most the CPU count): worker
  processes the seeds are spread over.
"""

from __future__ import annotations

import os

import pytest

from dci6bridge.errors import ConfigError

#: Seeds run on every CI run (0.3-0.5 s each on one core: about 75 s over 2 processes).
CI_SEEDS = 480


def _env_int(name: str, default: int | None) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not an integer") from None


def chosen_seeds() -> list[int]:
    """The seeds of this run, from the environment."""
    one = _env_int("DCI6BRIDGE_SIM_SEED", None)
    if one is not None:
        return [one]
    count = _env_int("DCI6BRIDGE_SIM_SEEDS", CI_SEEDS) or 0
    first = _env_int("DCI6BRIDGE_SIM_FIRST", 0) or 0
    return list(range(first, first + count))


@pytest.fixture
def sim_seeds() -> list[int]:
    """The seeds of this run, from the environment."""
    return chosen_seeds()


@pytest.fixture
def sim_processes() -> int:
    """Worker processes for the seeds."""
    wanted = _env_int("DCI6BRIDGE_SIM_PROCESSES", 2) or 1
    return max(1, min(wanted, os.cpu_count() or 1))
