"""`jitrs prepare`: convert an ImageFolder or parquet shards into tar shards for `jitrs train --data`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def prepare_command(
    data: Annotated[
        Path, typer.Option(help="The source: an ImageFolder (DATA/<class>/<images>), parquet or tar shards.")
    ],
    out: Annotated[Path, typer.Option(help="Output folder for the shards; rerunning the same command resumes it.")],
    format: Annotated[str, typer.Option("--format", help="Output format: tar (WebDataset-style shards).")] = "tar",
    shard_size: Annotated[int, typer.Option(help="Images per shard.")] = 1000,
    threads: Annotated[int | None, typer.Option(help="Shards written at once (default 4).")] = None,
) -> None:
    """Write a dataset as tar shards (KEY.jpg|png + KEY.cls, classes.txt), each shard renamed into place whole."""
    from jitrs.prepare import prepare

    console = Console(stderr=True, soft_wrap=True)
    progress = Progress(
        TextColumn("writing shards"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )
    task = progress.add_task("prepare", total=None)

    def on_start(images: int, done: int) -> None:
        progress.update(task, total=images, completed=done)
        progress.start()  # once the source is indexed and --out checked: a refusal prints no bar

    try:
        result = prepare(
            data, out, format, shard_size, threads, on_start=on_start, on_image=lambda n: progress.advance(task, n)
        )
    finally:
        progress.stop()
    kept = "" if result.written == result.shards else f" ({result.shards - result.written} already there)"
    console.print(
        f"{result.images} images in {result.shards} shard(s) in {escape(str(out))}: wrote {result.written}{kept}",
        highlight=False,
    )
    if result.skipped:
        console.print(
            f"[yellow]{len(result.skipped)} member(s) of the source left out[/], e.g. "
            f"{escape(result.skipped[0][0])}: {escape(result.skipped[0][1])}",
            highlight=False,
        )
