"""The command line's contract for bad input: one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def jitrs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jitrs", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("toy", "--out", "x", "--train-steps", "abc"), "--train-steps"),
        (("toy", "--bogus"), "--bogus"),
        (("no-such-command",), "no-such-command"),
    ],
)
def test_usage_errors_are_one_line(args, needle):
    r = jitrs(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and needle in lines[0]
    assert "Traceback" not in r.stderr


def test_help_lists_the_commands_and_exits_zero():
    r = jitrs("--help")
    assert r.returncode == 0
    assert "toy" in r.stdout
