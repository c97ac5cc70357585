"""``dci6bridge simulator`` starts, answers, and stops on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dci6bridge.cli import main
from dci6bridge.testing import SimulatorControl

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "inventory.json"
MAIN = "import sys; from dci6bridge.cli import main; sys.exit(main())"


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", MAIN, "simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert m, line + proc.stderr.read() if proc.stderr else line
    return proc, m.group()


def test_simulator_command_serves_until_sigterm() -> None:
    proc, url = _start(
        "--locations",
        "1",
        "--servers-per-location",
        "3",
        "--install-seconds",
        "0",
        "--token-ttl",
        "60",
        "--seed",
        "4",
        "--latency-ms",
        "0-1",
    )
    try:
        http = httpx.Client(base_url=f"{url}/api/", timeout=5)
        r = http.post(
            "auth/v4/public/token",
            json={"email": "admin@example.com", "password": "simulator-admin-password"},
        )
        assert r.status_code == 201
        assert r.json()["expires_at"] is not None
        http.headers["x-xsrf-token"] = r.json()["token"]
        assert http.get("dci/v3/server").json()["size"] == 3
        state = SimulatorControl(url).state()
        assert state.count("servers.list", 200) == 1
        http.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "GET servers.list -> 200" in err
    assert "simulator stopped" in err


def test_simulator_command_with_inventory_and_faults() -> None:
    proc, url = _start("--inventory", str(EXAMPLE), "--fail-503", "1", "--quiet")
    try:
        r = httpx.get(f"{url}/api/dci/v3/server", timeout=5)
        assert r.status_code == 503
        assert SimulatorControl(url).state().servers.keys() >= {101, 301}
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "servers.list" not in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--fail-503", "2"], "between 0 and 1"),
        (["--latency-ms", "9-1"], "MIN <= MAX"),
        (["--install-seconds", "-1"], ">= 0"),
        (["--token-ttl", "soon"], "not a number"),
    ],
)
def test_bad_options_exit_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulator", *args])
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_missing_inventory_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["simulator", "--port", "0", "--inventory", str(tmp_path / "none.json")])
    assert status == 2
    assert "none.json" in capsys.readouterr().err
