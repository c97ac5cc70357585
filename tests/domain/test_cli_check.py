"""``dci6bridge check --config catalog.toml`` against the simulator."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dci6bridge.cli import check as check_cmd
from dci6bridge.cli import main
from dci6bridge.connect import client_for
from dci6bridge.testing import FakeDCImanager

CATALOG = """
[[data_centers]]
name = "Amsterdam"
location_id = 1

[[data_centers]]
name = "Frankfurt"
location_id = {fra_location}

[[modules]]
name = "dci-ams"
data_center = "Amsterdam"
url = "{url}"
username = "admin@example.com"
password_env = "TEST_DCI_AMS_PASSWORD"
department = "Support"

[[modules]]
name = "dci-fra"
data_center = "Frankfurt"
url = "{url}"
username = "admin@example.com"
password_env = "TEST_DCI_FRA_PASSWORD"
department = "Support"

[[tariffs]]
name = "E3-64"
configuration = "E3-1230v6-64Gb-2x480SSD"
os_templates = ["Debian 12"]
modules = ["dci-ams", "dci-fra"]
"""


@pytest.fixture
def fake() -> FakeDCImanager:
    return FakeDCImanager.with_inventory(locations=2, servers_per_location=3)


@pytest.fixture
def served(fake: FakeDCImanager) -> Iterator[str]:
    with fake.serve() as url:
        yield url


@pytest.fixture
def write_catalog(
    fake: FakeDCImanager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """``write_catalog(url, fra_location=2, fra_password=None)``: a catalog file for two
    modules on ``url``, their passwords set in the environment (the simulator's unless
    ``fra_password`` is given)."""

    def write(url: str, *, fra_location: int = 2, fra_password: str | None = None) -> Path:
        monkeypatch.setenv("TEST_DCI_AMS_PASSWORD", fake.admin_password)
        monkeypatch.setenv("TEST_DCI_FRA_PASSWORD", fra_password or fake.admin_password)
        path = tmp_path / "catalog.toml"
        path.write_text(CATALOG.format(url=url, fra_location=fra_location))
        return path

    return write


def test_all_ok(
    served: str, write_catalog: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--config", str(write_catalog(served))]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "MODULE", "DATA", "CENTER", "URL", "LOGIN", "LOCATION", "FREE", "RESULT",
    ]  # fmt: skip
    ams = lines[2].split()
    assert ams[:4] == ["dci-ams", "Amsterdam", served, "ok"]
    assert ams[6:] == ["1", "ok", "E3-1230v6-64Gb-2x480SSD:", "2", "ok"]
    assert lines[3].split()[0] == "dci-fra"
    assert lines[-1] == "2 module(s) checked: 2 ok, 0 failed"


def test_failing_modules_give_exit_1_and_the_reason(
    fake: FakeDCImanager,
    served: str,
    write_catalog: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_catalog(served, fra_location=7)
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "dci-fra  Frankfurt" in out
    assert "7 MISSING" in out
    assert (
        "dci-fra: problem: location 7 of data center 'Frankfurt' does not exist in "
        "DCImanager (locations: 1, 2)"
    ) in out
    assert out.splitlines()[-1] == "2 module(s) checked: 1 ok, 1 failed"

    path = write_catalog(served, fra_password="wrong-password-123")
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    fra_row = next(line for line in out.splitlines() if line.startswith("dci-fra "))
    assert fra_row.split()[3:] == ["failed", "2", "?", "-", "FAILED"]
    assert "dci-fra: problem: login failed: HTTP 401" in out
    assert "wrong-password-123" not in out
    assert fake.admin_password not in out


def test_json_output(
    served: str, write_catalog: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_catalog(served, fra_location=7)
    assert main(["check", "--config", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    ams, fra = report["modules"]
    assert ams["module"] == "dci-ams"
    assert ams["ok"] is True
    assert ams["user_email"] == "admin@example.com"
    assert ams["free_counts"] == {"E3-1230v6-64Gb-2x480SSD": 2}
    assert fra["location_ok"] is False
    assert fra["problems"] == [
        "location 7 of data center 'Frankfurt' does not exist in DCImanager (locations: 1, 2)"
    ]
    assert main(["check", "--config", str(path), "--json", "--module", "dci-ams"]) == 0
    assert [m["module"] for m in json.loads(capsys.readouterr().out)["modules"]] == ["dci-ams"]


def test_run_with_an_injected_client_factory(
    fake: FakeDCImanager, write_catalog: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    check_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["check", "--config", str(write_catalog(fake.url))])
    assert args.func is check_cmd.run
    status = check_cmd.run(args, client_factory=lambda m: client_for(m, transport=fake.transport))
    assert status == 0
    assert "2 module(s) checked: 2 ok, 0 failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--module", "dci-zrh"], "module: 'dci-zrh' is not in the catalog"),
        (["--timeout", "0"], "--timeout: 0.0 must be above 0"),
    ],
)
def test_bad_arguments_exit_2(
    fake: FakeDCImanager,
    write_catalog: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    path = write_catalog(fake.url)
    assert main(["check", "--config", str(path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_bad_catalog_and_empty_catalog_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_catalog: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_catalog("https://dci.example.com")
    monkeypatch.delenv("TEST_DCI_AMS_PASSWORD")
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "modules[0].password_env: environment variable 'TEST_DCI_AMS_PASSWORD' is not set" in err
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert main(["check", "--config", str(empty)]) == 2
    assert "has no processing modules to check" in capsys.readouterr().err


def test_check_command_in_a_subprocess(served: str, write_catalog: Callable[..., Path]) -> None:
    path = write_catalog(served, fra_location=7)
    env = dict(os.environ)  # holds the passwords write_catalog set
    proc = subprocess.run(
        [sys.executable, "-c", "from dci6bridge.cli import main; raise SystemExit(main())",
         "check", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "dci-ams  Amsterdam" in proc.stdout
    assert "dci-fra: problem: location 7 of data center 'Frankfurt'" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "2 module(s) checked: 1 ok, 1 failed"
