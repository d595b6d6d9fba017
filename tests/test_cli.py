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


def test_every_option_passes_through_torchrun_unchanged():
    """`torchrun ... -m jitrs CMD --opt` must hand --opt to jitrs: torchrun's argparse takes any argument that
    abbreviates one of its own options (`--n` did: --nnodes, --nproc-per-node, ...)."""
    import contextlib
    import io

    import typer
    from torch.distributed.run import get_args_parser

    from jitrs.cli import app

    parser = get_args_parser()
    commands = typer.main.get_command(app).commands
    checked, refused = 0, []
    for name, command in commands.items():
        for param in command.params:
            for opt in [o for o in param.opts + param.secondary_opts if o.startswith("-")]:
                argv = ["-m", "jitrs", name, opt, *([] if getattr(param, "is_flag", False) else ["1"])]
                try:
                    with contextlib.redirect_stderr(io.StringIO()):
                        passed = parser.parse_args(argv).training_script_args == argv[2:]
                except SystemExit:
                    passed = False
                checked += 1
                if not passed and opt != "--n":  # --n has the aliases -n and --num-samples for torchrun
                    refused.append(f"{name} {opt}")
    assert checked > 50 and not refused, refused
    sample = commands["sample"]
    assert any({"-n", "--num-samples", "--n"} <= set(p.opts) for p in sample.params)
