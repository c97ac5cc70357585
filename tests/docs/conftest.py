"""Running the repository's scripts (examples, benchmarks) as their own processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

RunScript = Callable[..., str]


@pytest.fixture
def run_script(tmp_path: Path) -> RunScript:
    """``run_script(path, *args, timeout=120)``: run a Python script in ``tmp_path`` with
    this interpreter; its stdout, once it exited 0 without a traceback."""

    def run(script: Path, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        return result.stdout

    return run
