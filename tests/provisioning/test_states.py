"""The state table: statuses, allowed transitions, and the guide's diagram."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dci6bridge.errors import InvalidRequest
from dci6bridge.provisioning import ServiceState, ServiceStatus
from dci6bridge.provisioning.states import STATUS_OF, TRANSITIONS, check_transition, status_of

S = ServiceState
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "orchestrator.md"


def test_every_state_has_a_status_and_a_row() -> None:
    assert set(STATUS_OF) == set(ServiceState) == set(TRANSITIONS)
    assert status_of("active") is ServiceStatus.ACTIVE
    assert status_of(S.INSTALLING_OS) is ServiceStatus.IN_PROGRESS
    assert status_of("closed") is ServiceStatus.CLOSED


def test_closed_is_terminal_and_everything_else_can_close_or_fail() -> None:
    assert TRANSITIONS[S.CLOSED] == frozenset()
    for state in ServiceState:
        if state not in (S.CLOSED, S.TERMINATING):
            assert S.TERMINATING in TRANSITIONS[state], state
        if state not in (S.CLOSED, S.FAILED):
            assert S.FAILED in TRANSITIONS[state], state


def test_check_transition() -> None:
    check_transition("pending", "selecting_module")
    with pytest.raises(InvalidRequest, match="'closed' -> 'active' is not allowed"):
        check_transition(S.CLOSED, S.ACTIVE)
    with pytest.raises(InvalidRequest, match="allowed"):
        check_transition("active", "installing_os")


def test_the_guide_diagram_matches_the_table() -> None:
    text = GUIDE.read_text()
    block = re.search(r"```mermaid\n(stateDiagram-v2.*?)```", text, re.S)
    assert block is not None
    edges = re.findall(r"^\s*(\w+) --> (\w+)", block.group(1), re.M)
    drawn = {(a, b) for a, b in edges if a != "[*]" and b != "[*]"}
    allowed = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert drawn <= allowed
    # everything but the close and failure edges (described in prose) is drawn
    hidden = {(a, b) for a, b in allowed if b in ("terminating", "failed") or a == "failed"}
    assert allowed - hidden - drawn == set()
