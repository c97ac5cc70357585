"""Every example in examples/ runs as its own process against the simulator and exits 0."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str, *args: str, cwd: Path, timeout: float = 120) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def test_every_example_is_tested() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == {
        "client_quickstart.py",
        "provision_sqlite.py",
        "workers_postgres.py",
        "task_queue.py",
    }


def test_client_quickstart(tmp_path: Path) -> None:
    out = _run("client_quickstart.py", cwd=tmp_path)
    assert "free servers" in out


def test_provision_sqlite(tmp_path: Path) -> None:
    out = _run("provision_sqlite.py", cwd=tmp_path)
    assert "active" in out
    assert (tmp_path / "dci6bridge-example.db").exists()


def test_task_queue(tmp_path: Path) -> None:
    out = _run("task_queue.py", cwd=tmp_path)
    assert "active" in out


@pytest.mark.postgres
def test_workers_postgres(tmp_path: Path, pg_store_url: str) -> None:
    out = _run("workers_postgres.py", pg_store_url, "--workers", "3", cwd=tmp_path, timeout=180)
    assert "workers stopped with exit codes [0, 0, 0]" in out
    per_worker = re.search(r"state changes per worker: (\{.*\})", out)
    assert per_worker is not None
    # every state change was made by one of the worker processes, and more than one worked
    counts = ast.literal_eval(per_worker.group(1))
    assert set(counts) <= {"worker-1", "worker-2", "worker-3"}
    assert len(counts) >= 2
    assert out.count(": active, server") == 24
