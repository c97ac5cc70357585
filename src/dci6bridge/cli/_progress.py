"""Progress output for long-running commands (the demo): a block of lines redrawn in
place on a terminal, or one plain line per state change when output is a file or pipe.

Both take the same snapshots, so a command does not care where its output goes.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from typing import Protocol, TextIO

import attrs

from dci6bridge.cli._common import format_duration
from dci6bridge.provisioning.states import ServiceState

__all__ = ["LineProgress", "LiveProgress", "Progress", "Row", "make_progress"]

#: The provisioning path, for the bar: ``ServiceState`` lists it first, in order, up to
#: ``active``. Other states show as a full bar plus their name.
_STATES = list(ServiceState)
STEPS: tuple[str, ...] = tuple(s.value for s in _STATES[: _STATES.index(ServiceState.ACTIVE) + 1])
_BAR = 16
# Only these two escape sequences are used, so any VT100-compatible terminal works.
_UP = "\x1b[{n}F"  # cursor to the start of the line n lines up
_CLEAR = "\x1b[2K"  # erase the whole line


@attrs.frozen
class Row:
    """One service as the progress output shows it."""

    service_id: str
    tariff: str
    state: str
    module: str | None = None
    server_id: int | None = None
    detail: str = ""
    #: how far the current step is, 0..1, when known (an OS install in progress)
    step_done: float = 0.0


class Progress(Protocol):
    """Where progress goes: :class:`LiveProgress` or :class:`LineProgress`."""

    def update(self, rows: Sequence[Row], elapsed_s: float) -> None:
        """Show ``rows`` as they are ``elapsed_s`` simulated seconds into the run."""

    def change(self, service_id: str, before: str, after: str, at_s: float, detail: str) -> None:
        """Report one state change ``at_s`` seconds into the run."""

    def note(self, text: str) -> None:
        """Print a line that stays (a phase heading, an action taken)."""

    def finish(self) -> None:
        """Leave the last picture on screen and move below it."""


def _bar(state: str, step_done: float) -> str:
    fraction = min(max(step_done, 0.0), 1.0)
    done = STEPS.index(state) + fraction if state in STEPS else len(STEPS)
    filled = min(_BAR, int(_BAR * (done + 1) / len(STEPS)))
    return "#" * filled + "." * (_BAR - filled)


def _where(row: Row) -> str:
    parts = []
    if row.module:
        parts.append(row.module)
    if row.server_id is not None:
        parts.append(f"server {row.server_id}")
    if row.detail:
        parts.append(row.detail)
    return ", ".join(parts)


class LiveProgress:
    """Redraws one line per service in place (for a terminal)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._drawn = 0

    def _draw(self, lines: Sequence[str]) -> None:
        # a wrapped line would throw off the count of lines to move back up
        width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
        if self._drawn:
            self._out.write(_UP.format(n=self._drawn))
        for line in lines:
            self._out.write(f"{_CLEAR}{line[:width]}\n")
        # a shorter picture must not leave old lines below it
        for _ in range(self._drawn - len(lines)):
            self._out.write(f"{_CLEAR}\n")
        self._drawn = max(len(lines), self._drawn)
        self._out.flush()

    def update(self, rows: Sequence[Row], elapsed_s: float) -> None:
        """Redraw every row, with the simulated clock on top."""
        width = max((len(r.service_id) for r in rows), default=0)
        tw = max((len(r.tariff) for r in rows), default=0)
        lines = [f"simulated time +{format_duration(elapsed_s)}"]
        lines += [
            f"  {r.service_id.ljust(width)}  {r.tariff.ljust(tw)}  [{_bar(r.state, r.step_done)}] "
            f"{r.state.ljust(16)}  {_where(r)}".rstrip()
            for r in rows
        ]
        self._draw(lines)

    def change(self, service_id: str, before: str, after: str, at_s: float, detail: str) -> None:
        """Nothing: the next :meth:`update` shows the new state in place."""

    def note(self, text: str) -> None:
        """Print ``text`` below the picture; the next update starts a fresh picture."""
        self._out.write(f"{text}\n")
        self._out.flush()
        self._drawn = 0

    def finish(self) -> None:
        """Stop redrawing; the picture stays."""
        self._drawn = 0
        self._out.flush()


class LineProgress:
    """Prints one line per state change (for logs, pipes and CI)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def update(self, rows: Sequence[Row], elapsed_s: float) -> None:
        """Nothing: every change was already printed by :meth:`change`."""

    def change(self, service_id: str, before: str, after: str, at_s: float, detail: str) -> None:
        """Print ``[+  2m30s] INV-1001: claiming_server -> creating_user (server 7)``."""
        arrow = f"{before} -> {after}" if before else after
        extra = f" ({detail})" if detail else ""
        self._out.write(f"[+{format_duration(at_s):>6}] {service_id}: {arrow}{extra}\n")
        self._out.flush()

    def note(self, text: str) -> None:
        """Print ``text`` as it is."""
        self._out.write(f"{text}\n")
        self._out.flush()

    def finish(self) -> None:
        """Nothing to tidy up: every line is final."""
        self._out.flush()


def make_progress(out: TextIO | None = None, *, live: bool | None = None) -> Progress:
    """A :class:`LiveProgress` when ``out`` is a terminal (or ``live`` says so), else a
    :class:`LineProgress`."""
    stream = out or sys.stdout
    if live is None:
        live = stream.isatty()
    return LiveProgress(stream) if live else LineProgress(stream)
