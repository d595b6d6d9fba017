"""`jitrs sweep`: the CFG scale of lowest FID for each EMA of a checkpoint, by a coarse-to-fine search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jitrs.eval_cli import DINOV2_HELP, INCEPTION_HELP, METRICS_HELP


def sweep_command(
    ckpt: Annotated[Path, typer.Option(help="A checkpoint file or a run dir (its newest checkpoint).")],
    ref: Annotated[Path, typer.Option(help="Reference statistics npz (jitrs eval --make-ref) at the model's size.")],
    out: Annotated[Path, typer.Option(help="Directory: points.jsonl (resumable), sweep.json, sweep.png, final/.")],
    n: Annotated[
        int, typer.Option("--n", "-n", "--num-samples", help="Images per evaluated point, class-balanced.")
    ] = 8000,
    cfg: Annotated[str, typer.Option(help="CFG range LO:HI searched (coarse 0.5 grid, then 0.1).")] = "1.0:4.0",
    ema: Annotated[str, typer.Option(help="Weight sets: all (every EMA), or e.g. 1,2 or none (raw model).")] = "all",
    interval_min: Annotated[
        str,
        typer.Option(
            help="Guidance applies for interval-min < t < interval-max; a range LO:HI (e.g. 0.0:0.4) is searched too, "
            "after the CFG (steps 0.1, then 0.05)."
        ),
    ] = "0.1",
    interval_max: Annotated[float, typer.Option(help="Upper end of the guidance interval.")] = 1.0,
    metrics: Annotated[str, typer.Option(help=f"{METRICS_HELP} FID is minimised.")] = "fid,is",
    method: Annotated[str, typer.Option(help="ODE solver: heun or euler.")] = "heun",
    steps: Annotated[int | None, typer.Option(help="Solver steps (default as jitrs sample).")] = None,
    seed: Annotated[int, typer.Option(help="Image i's noise depends only on (seed, i), as in jitrs sample.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per forward batch (per process).")] = 64,
    compile: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile (default: on CUDA).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda:LOCAL_RANK, else cpu).")] = None,
    inception_weights: Annotated[Path | None, typer.Option(help=INCEPTION_HELP)] = None,
    dinov2_weights: Annotated[Path | None, typer.Option(help=DINOV2_HELP)] = None,
    final: Annotated[
        int | None, typer.Option(help="Then sample this many images at the best setting into OUT/final, scored.")
    ] = None,
) -> None:
    """Find the CFG scale of lowest FID per EMA, scoring samples as they are made (torchrun for several GPUs)."""
    from jitrs.sweep import SweepOptions, parse_range, sweep

    sweep(
        SweepOptions(
            ckpt=ckpt,
            ref=ref,
            out=out,
            n=n,
            cfg=parse_range(cfg),
            ema=ema,
            interval_min=parse_range(interval_min, "interval_min"),
            interval_max=interval_max,
            metrics=metrics,
            method=method,
            steps=steps,
            seed=seed,
            batch_size=batch_size,
            compile=compile,
            device=device,
            inception_weights=inception_weights,
            dinov2_weights=dinov2_weights,
            final=final,
        )
    )
