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


# `jitrs ARGS...` whose process SIGKILLs itself inside the `call`-th call of `module.function` (a writer that
# takes the open file as argument `file_arg`), after writing the start of a zip to it: a kill at a fixed point of
# a write, the worst moment, instead of one that depends on timing.
_KILL_DURING_WRITE = """
import importlib, os, signal, sys
from jitrs.cli import main
module_name, function, call, file_arg, *argv = sys.argv[1:]
module = importlib.import_module(module_name)
real = getattr(module, function)
calls = 0
def write(*args, **kwargs):
    global calls
    calls += 1
    if calls == int(call):
        args[int(file_arg)].write(b"PK\\x03\\x04 torn")
        args[int(file_arg)].flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(module, function, write)
sys.argv = ["jitrs", *argv]
main()
"""


def kill_during_write(target: str, call: int, file_arg: int, *args: str | Path | int) -> list[str]:
    """The command line of `jitrs ARGS` killed during the `call`-th call of `target` ("numpy.savez")."""
    module, _, function = target.rpartition(".")
    return [sys.executable, "-c", _KILL_DURING_WRITE, module, function, str(call), str(file_arg), *map(str, args)]
