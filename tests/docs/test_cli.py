"""The ``dci6bridge`` command line: every subcommand has help, bad input gets one clear
line and a non-zero status, never a traceback."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dci6bridge.cli import build_parser, main

EXPECTED = {
    "demo",
    "check",
    "servers",
    "open",
    "status",
    "suspend",
    "resume",
    "close",
    "reboot",
    "reinstall",
    "retry",
    "tasks",
    "worker",
    "simulator",
}
DEMO_CATALOG = Path(__file__).resolve().parents[2] / "src/dci6bridge/cli/demo_catalog.toml"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_is_registered() -> None:
    assert set(_subcommands()) == EXPECTED


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: dci6bridge {command}")
    assert len(out.splitlines()) > 3


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in EXPECTED:
        assert re.search(rf"\n    {command}\s", out), command


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 2) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == status, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("dci6bridge: error: ")
    assert "Traceback" not in captured.err
    assert "Traceback" not in captured.out
    return lines[0]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("DCI6BRIDGE_DEMO_PASSWORD", "demo-password")
    monkeypatch.setenv("DCI6BRIDGE_CONFIG", str(DEMO_CATALOG))
    monkeypatch.setenv("DCI6BRIDGE_STORE", f"sqlite:///{tmp_path / 'cli.db'}")
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--config", "no-such-catalog.toml"],
        ["servers", "--config", "no-such-catalog.toml"],
        ["check", "--config", "no-such-catalog.toml"],
        ["worker", "--config", "no-such-catalog.toml"],
    ],
)
def test_missing_catalog(argv: list[str], env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(argv, capsys)
    assert "no-such-catalog.toml" in line


def test_catalog_with_a_bad_url(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = env / "bad.toml"
    bad.write_text(DEMO_CATALOG.read_text().replace("https://dci-fra.demo.invalid", "ftp://x"))
    for command in ("servers", "check", "status"):
        line = _fails([command, "--config", str(bad)], capsys)
        assert "modules[2].url" in line
        assert "'ftp://x'" in line


def test_catalog_problems_are_all_on_one_line(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = env / "bad.toml"
    text = DEMO_CATALOG.read_text().replace("https://dci-fra.demo.invalid", "ftp://x")
    bad.write_text(text.replace('"Debian 12", "Ubuntu 22.04"', ""))
    line = _fails(["status", "--config", str(bad)], capsys)
    assert "problems" in line
    assert "modules[2].url" in line
    assert "tariffs[2].os_templates" in line


def test_password_never_shown(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = env / "bad.toml"
    bad.write_text(
        DEMO_CATALOG.read_text()
        .replace('password_env = "DCI6BRIDGE_DEMO_PASSWORD"', 'password = "hunter2-secret"', 1)
        .replace("https://dci-ams.demo.invalid", "nope", 1)
    )
    line = _fails(["status", "--config", str(bad)], capsys)
    assert "hunter2" not in line


def test_unknown_tariff(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(
        [
            "open",
            "--service-id",
            "S-1",
            "--tariff",
            "Gold-999",
            "--os-template",
            "Ubuntu 22.04",
            "--email",
            "jane@example.com",
        ],
        capsys,
    )
    assert "'Gold-999'" in line
    assert "E3-64" in line  # the known tariffs are listed


def test_bad_email(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    order = ["--tariff", "E3-64", "--os-template", "Ubuntu 22.04", "--email", "not-an-email"]
    line = _fails(["open", "--service-id", "S-1", *order], capsys)
    assert "not-an-email" in line


def test_unknown_service(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["status", "NOPE-1"], ["suspend", "NOPE-1"], ["close", "NOPE-1"]):
        line = _fails(argv, capsys)
        assert "NOPE-1" in line


def test_bad_store_url(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(["status", "--store", "mysql://db/x"], capsys)
    assert "mysql://db/x" in line


def test_resolve_needs_a_note(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(["tasks", "--resolve", "1"], capsys)
    assert "--note" in line


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["open", "--tariff", "E3-64"])
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


def test_open_status_suspend_close_round_trip(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    order = ["--tariff", "E3-64", "--os-template", "Ubuntu 22.04", "--email", "jane@example.com"]
    assert main(["open", "--service-id", "INV-1", *order, "--hostname", "web1.example.com"]) == 0
    out = capsys.readouterr().out
    line = _fails(["open", "--service-id", "INV-2", *order, "--recipe", "rm-rf"], capsys)
    assert "'rm-rf'" in line
    assert "INV-1" in out
    assert "in_progress" in out
    # the same order again is harmless; a different order under the same id is refused
    assert main(["open", "--service-id", "INV-1", *order, "--hostname", "web1.example.com"]) == 0
    capsys.readouterr()
    line = _fails(
        ["open", "--service-id", "INV-1", *order, "--hostname", "web2.example.com"], capsys
    )
    assert "INV-1" in line

    assert main(["status"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:2] == ["SERVICE", "STATUS"]
    assert "INV-1" in table
    assert main(["status", "--only", "in_progress"]) == 0
    assert "INV-1" in capsys.readouterr().out
    assert main(["status", "--only", "active"]) == 0
    assert capsys.readouterr().out.strip() == "no services with status active"
    assert main(["status", "INV-1", "--history", "--json"]) == 0
    assert '"service_id": "INV-1"' in capsys.readouterr().out
    assert main(["close", "INV-1"]) == 0
    assert "close requested for INV-1" in capsys.readouterr().out


def test_python_dash_m(env: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dci6bridge", "status", "--config", "missing.toml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("dci6bridge: error: --config")
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "status", "--config", "missing.toml"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1].startswith("dci6bridge: error: ")


def test_servers_against_a_served_simulator(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dci6bridge.testing import FakeDCImanager

    fake = FakeDCImanager.with_inventory(
        locations=2, servers_per_location=6, admin_email="admin@demo.example.com"
    )
    fake.modify_server(1, maintenance_mode=True)  # not free: not counted
    with fake.serve() as url:
        catalog = env / "served.toml"
        text = DEMO_CATALOG.read_text().replace("https://dci-ams.demo.invalid", url)
        catalog.write_text(text.replace("https://dci-fra.demo.invalid", url))
        env_password = {"DCI6BRIDGE_DEMO_PASSWORD": fake.admin_password}
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env_password.items():
                mp.setenv(key, value)
            assert main(["servers", "--config", str(catalog)]) == 0
            table = capsys.readouterr().out.splitlines()
            assert main(["servers", "--config", str(catalog), "--module", "dci-fra", "--json"]) == 0
            as_json = capsys.readouterr().out
    header = table[0].split()
    assert header[:2] == ["MODULE", "DATA"]
    ams = [line.split() for line in table[2:] if line.startswith("dci-ams ")]
    # location 1 has 2 servers of each of the 3 configurations; server 1 is in maintenance
    free = {row[3]: int(row[4]) for row in ams}
    assert free == {
        "E-2146G-64Gb-1920SSD-3840SSD": 2,
        "E3-1230v6-64Gb-2x480SSD": 1,
        "i9-9900K-64Gb-2x1024NVMe": 2,
    }
    assert '"module": "dci-fra"' in as_json
    assert '"module": "dci-ams"' not in as_json


def test_servers_reports_an_unreachable_module(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setattr(time, "sleep", lambda s: None)  # the client's retry backoff
    catalog = env / "down.toml"
    # port 9 (discard) on localhost: nothing listens, the connection is refused at once
    catalog.write_text(
        DEMO_CATALOG.read_text().replace("https://dci-fra.demo.invalid", "http://127.0.0.1:9")
    )
    code = main(["servers", "--config", str(catalog), "--module", "dci-fra"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("dci6bridge: error: module dci-fra: ")
    assert "Traceback" not in captured.err


def test_tasks_list_resolve_and_retry(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import dci6bridge as d
    from dci6bridge.cli.demo import demo_catalog
    from dci6bridge.testing import FakeDCImanager

    # a DCImanager with no servers at all: the order fails and becomes a task
    fake = FakeDCImanager.with_inventory(
        servers_per_location=0, admin_email="admin@demo.example.com", admin_password="demo-pw"
    )
    store = d.open_store(f"sqlite:///{env / 'cli.db'}", clock=fake.clock.now)
    with d.Provisioner(
        demo_catalog("demo-pw"), store, transport=fake.transport, sleep=fake.advance
    ) as prov:
        prov.open(d.Order("T-1", "E3-64", "Debian 12", "ann@example.com"))
        prov.run_until_idle(advance=fake.advance)
    store.close()

    assert main(["tasks", "--department", "Support"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split()[:3] == ["ID", "DEPARTMENT", "SERVICE"]
    task_id = listed[2].split()[0]
    assert "T-1" in listed[2]
    assert "no_free_server" in listed[2]
    assert main(["tasks", "--department", "Billing"]) == 0
    assert capsys.readouterr().out.strip() == "no open tasks for Billing"

    assert main(["status", "T-1"]) == 0
    shown = capsys.readouterr().out
    assert "failed" in shown
    assert "no free server" in shown

    assert main(["retry", "T-1"]) == 0
    assert "retry requested for T-1" in capsys.readouterr().out
    assert main(["tasks", "--resolve", task_id, "--note", "ordered more servers"]) == 0
    assert capsys.readouterr().out.strip() == f"task {task_id} resolved: ordered more servers"
    line = _fails(["tasks", "--resolve", task_id, "--note", "again"], capsys)
    assert "already resolved" in line
    line = _fails(["tasks", "--resolve", "999", "--note", "x"], capsys)
    assert "999" in line
    assert main(["tasks", "--all", "--json"]) == 0
    assert '"resolution": "ordered more servers"' in capsys.readouterr().out


def test_help_never_shows_a_store_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DCI6BRIDGE_STORE", "postgresql://billing:hunter2@db.internal/dci")
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "$DCI6BRIDGE_STORE, else sqlite:///dci6bridge.db" in " ".join(out.split())
