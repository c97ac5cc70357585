"""Every example in examples/ runs as its own process against the simulator and exits 0."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

RunScript = Callable[..., str]  # the run_script fixture (conftest.py)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_every_example_is_tested() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == {
        "client_quickstart.py",
        "provision_sqlite.py",
        "workers_postgres.py",
        "task_queue.py",
    }


def test_client_quickstart(run_script: RunScript) -> None:
    out = run_script(EXAMPLES / "client_quickstart.py")
    assert "free servers" in out


def test_provision_sqlite(run_script: RunScript, tmp_path: Path) -> None:
    out = run_script(EXAMPLES / "provision_sqlite.py")
    assert "active" in out
    assert (tmp_path / "dci6bridge-example.db").exists()


def test_task_queue(run_script: RunScript) -> None:
    out = run_script(EXAMPLES / "task_queue.py")
    assert "active" in out


@pytest.mark.postgres
def test_workers_postgres(run_script: RunScript, pg_store_url: str) -> None:
    out = run_script(EXAMPLES / "workers_postgres.py", pg_store_url, "--workers", "3", timeout=180)
    assert "workers stopped with exit codes [0, 0, 0]" in out
    per_worker = re.search(r"state changes per worker: (\{.*\})", out)
    assert per_worker is not None
    # every state change was made by one of the worker processes, and more than one worked
    counts = ast.literal_eval(per_worker.group(1))
    assert set(counts) <= {"worker-1", "worker-2", "worker-3"}
    assert len(counts) >= 2
    assert out.count(": active, server") == 24
