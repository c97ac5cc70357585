"""Every benchmark in bench/ still runs: a tiny run of each, as its own process.

The figures of such short runs mean nothing (speed is measured by running the
benchmarks, see docs/benchmarks/); what is checked is that they run to the end, report
what their docstrings promise and that their own checks pass (every order active, every
activation delivered to billing)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

RunScript = Callable[..., str]  # the run_script fixture (conftest.py)

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_every_benchmark_is_run_here() -> None:
    scripts = {p.name for p in BENCH.glob("*.py")}
    assert scripts == {
        "client_overhead.py",
        "parse_servers.py",
        "provision.py",
        "store_advance.py",
        "store_cas.py",
    }


def test_provision(run_script: RunScript, tmp_path: Path, pg_url: str) -> None:
    figures = tmp_path / "figures.json"
    out = run_script(
        BENCH / "provision.py",
        *("--orders", "20", "--rounds", "1", "--chunk", "10", "--workers", "1,2"),
        *("--tick", "4", "--pg-url", pg_url, "--json", str(figures)),
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
    assert set(runs) == {("sqlite", 1), ("sqlite", 2), ("postgresql", 1), ("postgresql", 2)}
    for run in runs.values():
        assert run["orders"] == 20
        assert run["orders_per_s"] > 0
        for base in ("bare", "bare+check"):
            assert run[f"{base}_ms_per_order"] > 0
            assert isinstance(run[f"vs_{base}"], float)
        assert run["lists_per_order"] > 0
        assert 0 <= run["refused"] < 1
    for store in ("sqlite", "postgresql"):
        assert runs[store, 1]["refused"] == 0, "a worker alone is never refused a server"
    assert "against the bare calls' (target <= +25 %)" in out
    assert "postgresql, 2 worker(s), median of 1 round(s)" in out


def test_provision_without_throughput_runs(run_script: RunScript, tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    run_script(
        BENCH / "provision.py",
        *("--stores", "sqlite", "--orders", "10", "--rounds", "1", "--chunk", "5"),
        *("--workers", "", "--json", str(figures)),
    )
    assert json.loads(figures.read_text())["runs"] == []


def test_store_advance(run_script: RunScript, pg_url: str) -> None:
    out = run_script(
        BENCH / "store_advance.py",
        *("--services", "16", "--batch", "4", "--rounds", "1", "--pg-url", pg_url),
    )
    for store in ("memory", "sqlite", "postgresql"):
        assert any(line.startswith(store) for line in out.splitlines()), out


def test_store_cas(run_script: RunScript) -> None:
    out = run_script(
        BENCH / "store_cas.py",
        *("--backend", "sqlite", "--procs", "1", "--seconds", "0.2", "--jobs", "20"),
    )
    assert any(line.split()[:2] == ["sqlite", "1"] for line in out.splitlines()), out


def test_client_overhead(run_script: RunScript) -> None:
    out = run_script(BENCH / "client_overhead.py", "--requests", "20", "--rounds", "2")
    assert "ratio Client / raw get" in out


def test_parse_servers(run_script: RunScript) -> None:
    out = run_script(BENCH / "parse_servers.py", "--servers", "100", "--repeat", "2")
    assert "ratio full / json.loads" in out
