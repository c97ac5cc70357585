"""``dci6bridge demo``: end to end in a subprocess (output not a terminal), and the
progress display it uses on a terminal."""

from __future__ import annotations

import io
import itertools
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dci6bridge.cli import main
from dci6bridge.cli._progress import STEPS, LineProgress, LiveProgress, Row, make_progress
from dci6bridge.provisioning.states import TRANSITIONS, ServiceState

PROVISIONING = list(STEPS)


def test_progress_steps_are_the_provisioning_path() -> None:
    assert PROVISIONING[0] == "pending"
    assert PROVISIONING[-1] == "active"
    for before, after in itertools.pairwise(PROVISIONING):
        assert ServiceState(after) in TRANSITIONS[ServiceState(before)]


def _demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dci6bridge", "demo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _summary(out: str) -> dict[str, list[str]]:
    table = out[out.index("SERVICE ") :].splitlines()
    rows = {}
    for line in table[2:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


def test_demo_end_to_end(tmp_path: Path) -> None:
    started = time.monotonic()
    result = _demo("--orders", "6", "--seed", "3", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert elapsed < 60
    assert "\x1b[" not in out  # plain lines when stdout is not a terminal
    assert "simulated" in out
    assert "40 simulated minutes" in out

    rows = _summary(out)
    assert sorted(rows) == [f"INV-{n}" for n in range(1001, 1007)]
    assert rows["INV-1001"][5] == "CLOSED"
    assert all(rows[s][5] == "ACTIVE" for s in rows if s != "INV-1001")
    servers = [rows[s][3] for s in rows]
    assert len(set(servers)) == len(servers)  # one server per order
    assert all(re.fullmatch(r"10\.\d+\.\d+\.\d+", rows[s][4]) for s in rows)
    # time to active is the simulated install time plus the steps before it
    assert all(rows[s][6].startswith(("40m", "41m", "42m")) for s in rows)

    for service in rows:
        states = re.findall(rf"\] {service}: (?:\w+ -> )?(\w+)", out)
        assert states[: len(PROVISIONING)] == PROVISIONING, (service, states)
    lifecycle = re.findall(r"\] INV-1001: (\w+ -> \w+)", out)[len(PROVISIONING) - 1 :]
    assert lifecycle == [
        "active -> suspending",
        "suspending -> suspended",
        "suspended -> resuming",
        "resuming -> active",
        "active -> terminating",
        "terminating -> closed",
    ]
    assert "data ports down, IPMI up, power on" in out
    assert "owner none, free again: yes" in out
    assert "all services ended as expected" in out


def test_demo_keeps_a_given_store_and_numbers_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    first = _demo("--orders", "1", "--store", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert list(_summary(first.stdout)) == ["INV-1001"]
    again = _demo("--orders", "2", "--store", url, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert list(_summary(again.stdout)) == ["INV-1002", "INV-1003"]
    assert (tmp_path / "demo.db").exists()


@pytest.mark.parametrize("orders", ["0", "-3", "many", "100000"])
def test_demo_rejects_a_bad_order_count(orders: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--orders", orders])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --orders" in err
    assert "Traceback" not in err


def test_live_progress_redraws_in_place() -> None:
    out = io.StringIO()
    live = LiveProgress(out)
    live.update([Row("INV-1", "E3-64", "pending"), Row("INV-2", "E3-64", "pending")], 0)
    live.update(
        [
            Row("INV-1", "E3-64", "installing_os", "dci-ams", 7, "install 50%", 0.5),
            Row("INV-2", "E3-64", "active", "dci-ams", 8),
        ],
        600,
    )
    text = out.getvalue()
    first, second = text.split("\x1b[3F")  # back up over the 3 lines drawn first
    assert first.count("\n") == 3
    assert second.count("\x1b[2K") == 3
    assert "+10m00s" in second
    assert "[###############.] installing_os" in second
    assert "dci-ams, server 7, install 50%" in second
    assert "[################] active" in second


def test_line_progress_prints_changes_only() -> None:
    out = io.StringIO()
    lines = LineProgress(out)
    lines.update([Row("INV-1", "E3-64", "pending")], 0)  # nothing: changes come alone
    lines.change("INV-1", "", "pending", 0, "E3-64")
    lines.change("INV-1", "claiming_server", "creating_user", 90, "server 7")
    assert out.getvalue().splitlines() == [
        "[+    0s] INV-1: pending (E3-64)",
        "[+ 1m30s] INV-1: claiming_server -> creating_user (server 7)",
    ]


def test_make_progress_follows_the_terminal() -> None:
    assert isinstance(make_progress(io.StringIO()), LineProgress)
    assert isinstance(make_progress(io.StringIO(), live=True), LiveProgress)


def test_demo_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    # `dci6bridge demo | head -1`
    proc = subprocess.Popen(
        [sys.executable, "-m", "dci6bridge", "demo", "--orders", "20"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("dci6bridge demo:")
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err == ""
