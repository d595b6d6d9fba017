"""The `jitrs` command line. Each subcommand lives in the module of its job; this file only wires them."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from jitrs.errors import UserError
from jitrs.eval_cli import eval_command
from jitrs.sample_cli import sample_command

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train and sample JiT pixel-diffusion models.",
)
app.command("sample")(sample_command)
app.command("eval")(eval_command)


def main() -> None:
    """Console entry point: bad input becomes one line on stderr and exit code 2, never a traceback."""
    try:
        app()
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)
