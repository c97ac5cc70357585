"""Every benchmark in bench/ still runs: a tiny run of each, as its own process.

The figures of such short runs mean nothing (speed is measured by running the
benchmarks, see docs/benchmarks/); what is checked is that they run to the end, report
what their docstrings promise and that their own checks pass (every order active, every
activation delivered to billing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str, cwd: Path, timeout: float = 180) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def test_every_benchmark_is_run_here() -> None:
    scripts = {p.name for p in BENCH.glob("*.py")}
    assert scripts == {
        "client_overhead.py",
        "parse_servers.py",
        "provision.py",
        "store_advance.py",
        "store_cas.py",
    }


def test_provision(tmp_path: Path, pg_url: str) -> None:
    figures = tmp_path / "figures.json"
    out = _run(
        "provision.py",
        *("--orders", "20", "--rounds", "1", "--chunk", "10", "--workers", "1,2"),
        *("--tick", "4", "--pg-url", pg_url, "--json", str(figures)),
        cwd=tmp_path,
    )
    assert "ticks of 4 services" in out
    got = json.loads(figures.read_text())
    assert got["orders"] == 20
    assert got["tick"] == 4
    for store in ("sqlite", "postgresql"):
        for base in ("bare", "bare+check", "same calls"):
            assert isinstance(got["summary"][store][base]["wall_median"], float)
        assert f"{store}: orchestrator overhead over same calls" in out
    (only,) = got["rounds"]
    for store in ("sqlite", "postgresql"):
        assert 1 <= only["writes"][store] <= 25
    runs = {(r["store"], r["workers"]): r for r in got["runs"]}
    assert set(runs) == {("sqlite", 2), ("postgresql", 2)}
    for run in runs.values():
        assert run["orders"] == 20
        assert run["orders_per_s"] > 0


def test_store_advance(tmp_path: Path, pg_url: str) -> None:
    out = _run(
        "store_advance.py",
        *("--services", "16", "--batch", "4", "--rounds", "1", "--pg-url", pg_url),
        cwd=tmp_path,
    )
    for store in ("memory", "sqlite", "postgresql"):
        assert any(line.startswith(store) for line in out.splitlines()), out


def test_store_cas(tmp_path: Path) -> None:
    out = _run(
        "store_cas.py",
        *("--backend", "sqlite", "--procs", "1", "--seconds", "0.2", "--jobs", "20"),
        cwd=tmp_path,
    )
    assert any(line.split()[:2] == ["sqlite", "1"] for line in out.splitlines()), out


def test_client_overhead(tmp_path: Path) -> None:
    out = _run("client_overhead.py", "--requests", "20", "--rounds", "2", cwd=tmp_path)
    assert "ratio Client / raw get" in out


def test_parse_servers(tmp_path: Path) -> None:
    out = _run("parse_servers.py", "--servers", "100", "--repeat", "2", cwd=tmp_path)
    assert "ratio full / json.loads" in out
