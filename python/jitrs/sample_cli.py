"""`jitrs sample`: generate N class-balanced images from a checkpoint (PNG folder and/or ADM npz), resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from jitrs.atomic import atomic_write_text
from jitrs.errors import UserError
from jitrs.eval_cli import DINOV2_HELP, INCEPTION_HELP, METRICS_HELP, print_results, warn_if_few


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    """'0,1,207' -> (0, 1, 207); UserError naming --classes on anything else."""
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--classes {text!r}: expected comma-separated class indices such as 0,1,207") from None


def sample_command(
    ckpt: Annotated[
        Path, typer.Option(help="A checkpoint (.pt, .safetensors, official checkpoint-*.pth) or a run dir.")
    ],
    out: Annotated[Path, typer.Option(help="Output directory; rerunning the same command resumes it.")],
    n: Annotated[
        int,
        # --num-samples / -n: under torchrun, whose own parser rejects --n as an abbreviation of its options.
        typer.Option("--n", "-n", "--num-samples", help="Number of images, class-balanced in class order."),
    ] = 50000,
    ema: Annotated[
        str | None,
        typer.Option(
            help="Weights: an EMA by position (1, 2, ...), key (ema2) or decay (0.9996), or none for the raw model; "
            "default EMA 1, or an export's only set."
        ),
    ] = None,
    method: Annotated[str, typer.Option(help="ODE solver: heun or euler.")] = "heun",
    steps: Annotated[
        int | None,
        typer.Option(
            help="Solver steps (50 Heun steps = 99 network evaluations; default: the run's --sample-steps, else 50)."
        ),
    ] = None,
    cfg: Annotated[
        float | None,
        typer.Option(
            help="Guidance scale; default: the official one of a named model, else the run's --sample-cfg, else 1."
        ),
    ] = None,
    interval_min: Annotated[float, typer.Option(help="Guidance applies for interval-min < t < interval-max.")] = 0.1,
    interval_max: Annotated[float, typer.Option(help="Upper end of the guidance interval.")] = 1.0,
    batch_size: Annotated[
        int, typer.Option(help="Images per forward batch (per process); does not change the images.")
    ] = 64,
    seed: Annotated[int, typer.Option(help="Image i's noise depends only on (seed, i).")] = 0,
    classes: Annotated[str | None, typer.Option(help="Sample only these classes, e.g. 0,1,207.")] = None,
    format: Annotated[
        str, typer.Option("--format", help="png (DIR/000000.png ...), npz (ADM format) or both.")
    ] = "png",
    compile: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile (default: on CUDA).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="torch device (default: cuda:LOCAL_RANK if available, else cpu).")
    ] = None,
    eval_ref: Annotated[
        Path | None,
        typer.Option(
            help="Also score the images against these reference statistics as they are made (the pixels written)."
        ),
    ] = None,
    metrics: Annotated[str, typer.Option(help=f"--eval-ref: {METRICS_HELP}")] = "fid,is",
    inception_weights: Annotated[Path | None, typer.Option(help=INCEPTION_HELP)] = None,
    dinov2_weights: Annotated[Path | None, typer.Option(help=DINOV2_HELP)] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="--eval-ref: also write the metrics here.")] = None,
) -> None:
    """Sample images from a JiT checkpoint (torchrun for several GPUs: each process takes its own images)."""
    from jitrs.sample import SampleOptions, sample

    scorer = None
    if eval_ref is not None:
        from jitrs.device import local_rank, pick_device, world_size
        from jitrs.scoring import Scorer

        # Built first: a missing weights file or an unusable reference fails now, not after hours of sampling.
        dev = pick_device(device)
        if world_size() > 1 and dev.type == "cuda":
            dev = pick_device(f"cuda:{local_rank()}")  # the GPU this process samples on, as sample() picks it
        scorer = Scorer(metrics, eval_ref, dev, inception_weights=inception_weights, dinov2_weights=dinov2_weights)
    options = SampleOptions(
        ckpt=ckpt,
        out=out,
        n=n,
        ema=ema,
        method=method,
        steps=steps,
        cfg=cfg,
        interval=(interval_min, interval_max),
        batch_size=batch_size,
        seed=seed,
        classes=parse_classes(classes),
        format=format,
        compile=compile,
        device=device,
    )
    samples = sample(options, scorer=scorer)
    if scorer is not None:
        results = scorer.result()  # on every rank: they combine their sums
        if samples is not None:  # rank 0
            print_results(results)
            warn_if_few(results)
            if json_out is not None:
                atomic_write_text(json_out, json.dumps(results, indent=2) + "\n")
