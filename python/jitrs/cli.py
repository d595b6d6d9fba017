"""The `jitrs` command line. Each subcommand lives in the module of its job; this file only wires them."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from jitrs.errors import UserError, WriteFailure
from jitrs.eval_cli import eval_command
from jitrs.prepare_cli import prepare_command
from jitrs.sample_cli import sample_command
from jitrs.sweep_cli import sweep_command
from jitrs.toy_cli import toy
from jitrs.train_cli import train_command

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train and sample JiT pixel-diffusion models.",
)
app.command("train")(train_command)
app.command("sample")(sample_command)
app.command("eval")(eval_command)
app.command("sweep")(sweep_command)
app.command("toy")(toy)
app.command("prepare")(prepare_command)


def _fail(message: str, code: int) -> None:
    # The message holds user paths and values: printed as text, never read as markup.
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main() -> None:
    """Console entry point: bad input becomes one line on stderr and exit code 2, never a traceback."""
    try:
        # standalone_mode=False: click hands usage errors to us instead of drawing its multi-line box.
        result = app(standalone_mode=False)
    except WriteFailure as e:
        _fail(e.for_cli(), 1)
    except UserError as e:
        _fail(e.for_cli(), 2)
    except OSError as e:  # a full disk, a read-only or vanished directory, a file that cannot be read
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:
        # Typer vendors click (typer._click), older Typer uses click itself: recognise its usage errors
        # (bad option values, unknown options) and its Ctrl-C by shape rather than by import.
        if type(e).__name__ == "Abort":
            _fail("interrupted", 130)
        exit_code = getattr(e, "exit_code", None)
        if not (hasattr(e, "format_message") and isinstance(exit_code, int)):
            raise
        ctx = getattr(e, "ctx", None)
        where = f"jitrs {ctx.info_name}: " if ctx is not None and ctx.parent is not None else ""
        _fail(where + e.format_message(), exit_code)
    sys.exit(result if isinstance(result, int) else 0)
