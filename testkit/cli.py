"""The real `jitrs` command in a fresh process, and what a one-line user error looks like."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jitrs

# This checkout first on the path, whatever the caller's working directory.
PYTHONPATH = str(Path(jitrs.__file__).resolve().parent.parent)


def run_cli(
    *args: str | Path | int | float,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`jitrs ARGS...` with the environment plus `env`, minus the variables named in `unset`."""
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env |= {"PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "jitrs", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (exit code 2, no traceback); AssertionError otherwise."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]
