"""The public surface is pinned: every exported name resolves, and __all__ lists exactly
the lazily exported names (so type checkers and runtime agree)."""

from __future__ import annotations

import dci6bridge


def test_all_matches_lazy_export_table() -> None:
    assert set(dci6bridge.__all__) == {"__version__", *dci6bridge._EXPORTS}
    assert dci6bridge.__all__ == sorted(dci6bridge.__all__)


def test_every_public_name_resolves() -> None:
    for name in dci6bridge.__all__:
        assert getattr(dci6bridge, name) is not None, name
